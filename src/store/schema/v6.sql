-- gapsync store schema, version 6.

-- On each exported link:
-- - the key that signed it, so `trust statement` knows which keys a
--   destination is known to accept (docs/security.md §4.8);
-- - the last trust statement the chain had carried once it was exported,
--   so that `export --since` carries again the statements of the links it
--   replaces.
-- Both are NULL for links exported before (then every statement travels
-- again, and the signer is unknown).
ALTER TABLE export_history ADD COLUMN signer TEXT;
ALTER TABLE export_history ADD COLUMN last_stmt_seq INTEGER;

-- The names of removed groups, so that removed ("dead") deployments to
-- them still name their group.
CREATE TABLE removed_groups (
    group_id TEXT PRIMARY KEY,          -- GUID, lower case
    name     TEXT NOT NULL,             -- its name when it was removed
    removed  TEXT NOT NULL
) WITHOUT ROWID;
