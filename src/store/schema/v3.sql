-- gapsync store schema, version 3: server-server sync (MS-WSUSSS).

-- Downstream servers that synced from this one (USS role).
CREATE TABLE downstream_servers (
    server_id   TEXT PRIMARY KEY,       -- the DSS's id (GUID, lower case)
    fqdn        TEXT,
    replica     INTEGER NOT NULL DEFAULT 0,
    first_seen  TEXT NOT NULL,
    last_sync   TEXT,
    last_anchor TEXT                    -- the last sync anchor handed to it
) WITHOUT ROWID;

-- Where this server stands with each upstream it syncs from (DSS role).
CREATE TABLE upstream_state (
    upstream_url       TEXT PRIMARY KEY,
    upstream_server_id TEXT,            -- as learnt from the upstream, if it tells
    config_anchor      TEXT,
    sync_anchor        TEXT,
    deployment_anchor  TEXT,
    replica            INTEGER NOT NULL DEFAULT 0,
    filters            TEXT NOT NULL DEFAULT '{}',
    last_sync          TEXT
) WITHOUT ROWID;
