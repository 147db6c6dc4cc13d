-- gapsync store schema, version 6: the names of removed groups, so that
-- removed ("dead") deployments to them still name their group.

CREATE TABLE removed_groups (
    group_id TEXT PRIMARY KEY,          -- GUID, lower case
    name     TEXT NOT NULL,             -- its name when it was removed
    removed  TEXT NOT NULL
) WITHOUT ROWID;
