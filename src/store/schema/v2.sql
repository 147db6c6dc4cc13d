-- gapsync store schema, version 2: trust, export and import ledgers.

-- Keys whose signatures this server accepts on bundles.
CREATE TABLE trusted_keys (
    key_id       TEXT PRIMARY KEY,      -- 16 upper-case hex digits (minisign key id)
    public_key   BLOB NOT NULL,         -- 32-byte Ed25519 public key
    label        TEXT NOT NULL,
    added        TEXT NOT NULL,
    added_by     TEXT NOT NULL,         -- 'admin' or the key id of the statement's signer
    revoked      INTEGER NOT NULL DEFAULT 0,
    revoked_at   TEXT,
    revoked_by   TEXT
) WITHOUT ROWID;

-- Signed trust statements (key introduction / revocation) this server has
-- issued as an exporter, carried in the next bundle to each destination.
CREATE TABLE trust_statements (
    stmt_seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    body      BLOB NOT NULL,            -- the statement JSON, verbatim
    minisig   TEXT NOT NULL,            -- its minisign signature
    created   TEXT NOT NULL
);

-- Trust statements applied on import (by content hash), so each applies once.
CREATE TABLE applied_statements (
    body_sha256 BLOB PRIMARY KEY,
    applied     TEXT NOT NULL
) WITHOUT ROWID;

-- One row per destination: where its bundle chain stands.
CREATE TABLE export_ledger (
    destination        TEXT PRIMARY KEY,
    last_seq           INTEGER NOT NULL,
    last_bundle_id     TEXT NOT NULL,
    last_manifest_sha256 TEXT NOT NULL,
    last_to_anchor     TEXT NOT NULL,
    last_stmt_seq      INTEGER NOT NULL DEFAULT 0,
    filters            TEXT NOT NULL,   -- JSON of the filters the chain uses
    updated            TEXT NOT NULL
) WITHOUT ROWID;

-- Content files already sent in a destination's chain.
CREATE TABLE export_sent_content (
    destination TEXT NOT NULL,
    sha1        BLOB NOT NULL,
    PRIMARY KEY (destination, sha1)
) WITHOUT ROWID;

-- Every bundle applied on this server.
CREATE TABLE import_ledger (
    source_server_id  TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    bundle_id         TEXT NOT NULL,
    manifest_sha256   TEXT NOT NULL,
    full              INTEGER NOT NULL,
    from_anchor       TEXT,
    to_anchor         TEXT NOT NULL,
    imported          TEXT NOT NULL,
    local_anchor      TEXT NOT NULL,    -- this server's anchor after the import
    PRIMARY KEY (source_server_id, seq)
) WITHOUT ROWID;
