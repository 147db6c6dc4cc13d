-- gapsync store schema, version 10: rolling computers and their status up
-- to an upstream (MS-WSUSSS 3.2.4.5, DSS side). Local: bundles carry none
-- of it.

-- Per upstream: the RollupResetGuid it last gave and when this server last
-- rolled up to it.
CREATE TABLE rollup_upstream (
    upstream_url TEXT PRIMARY KEY,
    reset_guid   TEXT NOT NULL,
    last_rollup  TEXT
) WITHOUT ROWID;

-- Per upstream and computer: details sent (the spec's HasDetailsChanged,
-- inverted), the last status RollupNumber sent, the newest status change
-- sent (NULL: the next status rollup is full), and whether the upstream
-- asked to stop hearing of the computer (ChangedComputer Deleted).
CREATE TABLE rollup_computers (
    upstream_url     TEXT NOT NULL,
    computer_id      TEXT NOT NULL,
    details_sent     INTEGER NOT NULL DEFAULT 0,
    rollup_number    INTEGER NOT NULL DEFAULT 0,
    status_rolled_up TEXT,
    deleted          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (upstream_url, computer_id)
) WITHOUT ROWID;

-- USS side: the last status RollupNumber a downstream server sent for each
-- computer of its site (GetOutOfSyncComputers compares it).
ALTER TABLE site_computers ADD COLUMN rollup_number INTEGER;
