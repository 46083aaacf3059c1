-- crmsync state store, schema version 2: what the admin console shows.

-- Actions the console refused (an admin lacking a permission), shown in the audit with the
-- resets. `at_ns` orders them.
CREATE TABLE refusals (
    id TEXT NOT NULL PRIMARY KEY,
    at TEXT NOT NULL,
    at_ns BIGINT NOT NULL,
    admin_id TEXT NOT NULL,
    admin_name TEXT NOT NULL,
    action TEXT NOT NULL,
    -- the rep's id, NULL for an action about no rep (sign-in)
    rep TEXT,
    -- 'contacts', 'events' or 'all' for a refused reset, else NULL
    scope TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX refusals_by_time ON refusals (at_ns);

-- "Sync now" asked while the rep's lease was held: the release keeps the rep due at this
-- instant (nanoseconds), so the next cycle follows at once. Cleared when a lease is taken.
ALTER TABLE schedule ADD COLUMN asked_ns BIGINT;

-- `runs` keeps the last 50 cycles of each rep from now on (older rows are deleted as new
-- ones are recorded).

UPDATE crmsync_meta SET value = '2' WHERE name = 'schema_version';
