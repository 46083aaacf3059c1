-- crmsync state store, schema version 3: verified and undoable resets, held deletes.

-- Whether the reset can still be undone (1 until the first cycle after it starts), the result of
-- the first complete cycle after it (Verification as JSON) and who undid it (Actor as JSON).
ALTER TABLE resets ADD COLUMN undoable BIGINT NOT NULL DEFAULT 0;
ALTER TABLE resets ADD COLUMN verification TEXT;
ALTER TABLE resets ADD COLUMN undone TEXT;

-- What each rep's last reset removed (ResetUndo as JSON: links, cursors, item errors, held
-- deletes, the state before it), kept while the reset can be undone.
CREATE TABLE reset_undo (
    rep TEXT NOT NULL PRIMARY KEY,
    epoch BIGINT NOT NULL,
    saved TEXT NOT NULL
);

-- Delete Safety's quarantine: deletes a cycle held, waiting for an admin's verdict.
CREATE TABLE held_deletes (
    rep TEXT NOT NULL,
    kind TEXT NOT NULL,
    sync_key TEXT NOT NULL,
    -- the side whose record the delete would remove, and that record's id
    side TEXT NOT NULL,
    item_id TEXT NOT NULL,
    label TEXT NOT NULL,
    since TEXT NOT NULL,
    -- 'held', 'approved' or 'discarded'
    verdict TEXT NOT NULL,
    PRIMARY KEY (rep, kind, sync_key)
);

UPDATE crmsync_meta SET value = '3' WHERE name = 'schema_version';
