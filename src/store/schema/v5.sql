-- gapsync store schema, version 5: every bundle exported, per destination,
-- so `export --since ANCHOR` can continue the chain from the link that ended
-- at ANCHOR (after bundles were lost on the way).
CREATE TABLE export_history (
    destination     TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    bundle_id       TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    kind            TEXT NOT NULL,
    from_anchor     TEXT,
    to_anchor       TEXT NOT NULL,
    created         TEXT NOT NULL,
    PRIMARY KEY (destination, seq)
) WITHOUT ROWID;
