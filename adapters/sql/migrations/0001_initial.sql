-- crmsync state store, schema version 1.
--
-- One schema for SQLite and PostgreSQL: only TEXT and BIGINT columns. Timestamps shown to people
-- are RFC 3339 UTC text with nanoseconds; timestamps compared in SQL (schedule, leases) are BIGINT
-- nanoseconds since the Unix epoch, so comparisons never depend on a text collation.

-- What this database is and which schema version it holds. A crmsync binary refuses to open a
-- store whose schema_version is newer than the newest it knows.
CREATE TABLE crmsync_meta (
    name TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO crmsync_meta (name, value) VALUES ('application', 'crmsync');
INSERT INTO crmsync_meta (name, value) VALUES ('schema_version', '1');

-- One row per rep: status (SPEC §4), reset epoch, last run and the user-managed grant.
CREATE TABLE reps (
    rep TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    last_success TEXT,
    -- CycleReport as JSON
    last_report TEXT,
    -- ResetRecord as JSON (the full history is in `resets`)
    last_reset TEXT,
    last_error TEXT,
    -- The rep's OAuth refresh token as given (see docs.md: use a secret backend in production).
    grant_token TEXT,
    created_at TEXT NOT NULL
);

-- "provider item X <=> CRM record Y" and what was last synced.
CREATE TABLE links (
    rep TEXT NOT NULL,
    kind TEXT NOT NULL,
    sync_key TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    crm_id TEXT NOT NULL,
    provider_version TEXT NOT NULL,
    crm_version TEXT NOT NULL,
    hash TEXT NOT NULL,
    -- Canon (field -> normalized value) as a JSON object
    snapshot TEXT NOT NULL,
    -- 'linked' or 'suppressed'
    state TEXT NOT NULL,
    -- write-ahead intent of an update in flight (Pending as JSON), NULL when none
    pending TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (rep, kind, sync_key)
);

CREATE TABLE cursors (
    rep TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider_cursor TEXT,
    crm_cursor TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (rep, kind)
);

CREATE TABLE item_errors (
    rep TEXT NOT NULL,
    kind TEXT NOT NULL,
    side TEXT NOT NULL,
    item_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (rep, kind, side, item_id)
);

-- One row per finished cycle (every set_state carrying a report), with its counters summed over
-- both kinds and the full report as JSON.
CREATE TABLE runs (
    id TEXT NOT NULL PRIMARY KEY,
    rep TEXT NOT NULL,
    seq BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    error TEXT,
    created_in_crm BIGINT NOT NULL,
    created_in_provider BIGINT NOT NULL,
    updated_in_crm BIGINT NOT NULL,
    updated_in_provider BIGINT NOT NULL,
    deleted_in_crm BIGINT NOT NULL,
    deleted_in_provider BIGINT NOT NULL,
    linked BIGINT NOT NULL,
    unlinked BIGINT NOT NULL,
    conflicts BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    requests_crm BIGINT NOT NULL,
    requests_provider BIGINT NOT NULL,
    report TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX runs_by_rep ON runs (rep, seq);

-- The audit trail of Reset Sync: who, when, what scope, how many links removed. `epoch` is the
-- rep's epoch after the reset, so it orders a rep's resets.
CREATE TABLE resets (
    rep TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    admin_id TEXT NOT NULL,
    admin_name TEXT NOT NULL,
    scope TEXT NOT NULL,
    at TEXT NOT NULL,
    -- {"contact": n, "event": m}
    links_removed TEXT NOT NULL,
    PRIMARY KEY (rep, epoch)
);

-- The scheduler: when each rep is due and which worker holds it until when.
CREATE TABLE schedule (
    rep TEXT NOT NULL PRIMARY KEY,
    due_ns BIGINT NOT NULL,
    lease_worker TEXT,
    lease_until_ns BIGINT
);
CREATE INDEX schedule_by_due ON schedule (due_ns);
