-- gapsync store schema, version 9: the way back across the gap. A site
-- exports signed reports (its own chain per destination); the server above
-- it keeps each site's reported state (docs/bundle-format.md, "Report
-- bundles"; `store::sites`).

-- Site side: every report exported, per destination (the report chain).
-- `event_marks`: JSON object computer id -> the arrival of the last event
-- of that computer the report carried (the next report starts after it).
CREATE TABLE report_exports (
    destination     TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    bundle_id       TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    from_anchor     TEXT,
    to_anchor       TEXT NOT NULL,
    created         TEXT NOT NULL,
    signer          TEXT NOT NULL,
    event_marks     TEXT NOT NULL,
    PRIMARY KEY (destination, seq)
) WITHOUT ROWID;

-- Upper side: one row per site, keyed by the site's server id.
-- `source`: how its last report came (`media`: a report bundle).
CREATE TABLE sites (
    server_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created     TEXT NOT NULL,      -- when the site read the state reported last
    anchor      TEXT NOT NULL,      -- the site's journal anchor then
    source      TEXT NOT NULL,
    content_check TEXT NOT NULL,    -- size | digest
    updated     TEXT NOT NULL       -- when this server applied it
) WITHOUT ROWID;

-- The report chain per site (the report bundles' import ledger).
CREATE TABLE site_reports (
    server_id       TEXT NOT NULL REFERENCES sites (server_id),
    seq             INTEGER NOT NULL,
    bundle_id       TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    from_anchor     TEXT,
    to_anchor       TEXT NOT NULL,
    imported        TEXT NOT NULL,
    PRIMARY KEY (server_id, seq)
) WITHOUT ROWID;

-- The site's latest report, replaced as a whole by each report.
CREATE TABLE site_imports (
    server_id        TEXT NOT NULL REFERENCES sites (server_id),
    source_server_id TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    bundle_id        TEXT NOT NULL,
    manifest_sha256  TEXT NOT NULL,
    full             INTEGER NOT NULL,
    from_anchor      TEXT,
    to_anchor        TEXT NOT NULL,
    imported         TEXT NOT NULL,
    PRIMARY KEY (server_id, source_server_id, seq)
) WITHOUT ROWID;
CREATE INDEX site_imports_manifest ON site_imports (manifest_sha256);

CREATE TABLE site_content (
    server_id TEXT NOT NULL REFERENCES sites (server_id),
    sha1      BLOB NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('held', 'missing', 'corrupt')),
    PRIMARY KEY (server_id, sha1)
) WITHOUT ROWID;

CREATE TABLE site_groups (
    server_id TEXT NOT NULL REFERENCES sites (server_id),
    group_id  TEXT NOT NULL,
    name      TEXT NOT NULL,
    parent_id TEXT,
    PRIMARY KEY (server_id, group_id)
) WITHOUT ROWID;

CREATE TABLE site_updates (
    server_id TEXT NOT NULL REFERENCES sites (server_id),
    update_id TEXT NOT NULL,
    title     TEXT NOT NULL,
    PRIMARY KEY (server_id, update_id)
) WITHOUT ROWID;

CREATE TABLE site_approvals (
    server_id TEXT NOT NULL REFERENCES sites (server_id),
    update_id TEXT NOT NULL,
    group_id  TEXT NOT NULL,
    PRIMARY KEY (server_id, update_id, group_id)
) WITHOUT ROWID;

CREATE TABLE site_computers (
    server_id      TEXT NOT NULL REFERENCES sites (server_id),
    computer_id    TEXT NOT NULL,
    name           TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    os_description TEXT,
    arch           TEXT,
    last_sync      TEXT,
    last_report    TEXT,
    PRIMARY KEY (server_id, computer_id)
) WITHOUT ROWID;

CREATE TABLE site_status (
    server_id   TEXT NOT NULL REFERENCES sites (server_id),
    computer_id TEXT NOT NULL,
    update_id   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('installed', 'needed', 'downloaded', 'failed', 'not_applicable')),
    changed     TEXT NOT NULL,
    PRIMARY KEY (server_id, computer_id, update_id)
) WITHOUT ROWID;

-- Events accumulate across reports (once per computer and
-- EventInstanceID), at most `model::report::SITE_EVENTS_KEPT` per computer.
CREATE TABLE site_events (
    server_id      TEXT NOT NULL REFERENCES sites (server_id),
    computer_id    TEXT NOT NULL,
    instance_id    TEXT NOT NULL,
    arrival        INTEGER NOT NULL,
    time_at_target TEXT NOT NULL,
    namespace_id   INTEGER NOT NULL,
    event_id       INTEGER NOT NULL,
    source_id      INTEGER NOT NULL,
    update_id      TEXT,
    revision       INTEGER,
    hresult        INTEGER NOT NULL,
    app_name       TEXT,
    replacement    TEXT NOT NULL,
    misc           TEXT NOT NULL,
    received       TEXT NOT NULL,
    PRIMARY KEY (server_id, computer_id, instance_id)
) WITHOUT ROWID;
