-- gapsync store schema, version 7: Windows Update Agent clients (MS-WUSP).
-- Computers that call in, their events and per-update status, and what the
-- client protocol needs per revision. All of it is local to this store:
-- bundles carry none of it.

-- A computer that registered through RegisterComputer: WUA's client id
-- (lower-case GUID; NULL for a computer only added by the administrator)
-- and what it said about itself. Names are no longer unique (re-imaged
-- and cloned machines share them); `computers add` still refuses a
-- duplicate.
ALTER TABLE computers ADD COLUMN client_id TEXT;
ALTER TABLE computers ADD COLUMN dns_name TEXT;
ALTER TABLE computers ADD COLUMN os_version TEXT;       -- major.minor.build
ALTER TABLE computers ADD COLUMN os_description TEXT;
ALTER TABLE computers ADD COLUMN arch TEXT;
ALTER TABLE computers ADD COLUMN manufacturer TEXT;
ALTER TABLE computers ADD COLUMN model TEXT;
ALTER TABLE computers ADD COLUMN client_version TEXT;
ALTER TABLE computers ADD COLUMN registered TEXT;
ALTER TABLE computers ADD COLUMN last_sync TEXT;        -- last contact with a valid cookie
ALTER TABLE computers ADD COLUMN last_report TEXT;      -- last ReportEventBatch
ALTER TABLE computers ADD COLUMN client_groups TEXT;    -- client-side targeting: group ids, ';'-joined
CREATE UNIQUE INDEX computers_client ON computers (client_id) WHERE client_id IS NOT NULL;
DROP INDEX computers_name;
CREATE INDEX computers_name ON computers (name COLLATE NOCASE);

-- Events of ReportEventBatch, one per (computer, EventInstanceID): a
-- redelivered event is not stored twice. `arrival` orders them (the
-- client's TimeAtTarget is the same for a whole batch).
CREATE TABLE wusp_events (
    computer_id    TEXT NOT NULL REFERENCES computers (computer_id),
    instance_id    TEXT NOT NULL,
    arrival        INTEGER NOT NULL,
    time_at_target TEXT NOT NULL,
    namespace_id   INTEGER NOT NULL,
    event_id       INTEGER NOT NULL,
    source_id      INTEGER NOT NULL,
    update_id      TEXT,                -- NULL for the zero GUID
    revision       INTEGER,
    hresult        INTEGER NOT NULL,
    app_name       TEXT,
    replacement    TEXT NOT NULL,       -- JSON list of strings
    misc           TEXT NOT NULL,       -- JSON list of "Key=Value"
    received       TEXT NOT NULL,
    PRIMARY KEY (computer_id, instance_id)
) WITHOUT ROWID;
CREATE INDEX wusp_events_arrival ON wusp_events (computer_id, arrival);

-- Status of each update on each computer, as derived from the events
-- (docs/protocol.md, MS-WUSP status rules). No row: unknown.
CREATE TABLE wusp_status (
    computer_id TEXT NOT NULL REFERENCES computers (computer_id),
    update_id   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('installed', 'needed', 'downloaded', 'failed', 'not_applicable')),
    changed     TEXT NOT NULL,
    PRIMARY KEY (computer_id, update_id)
) WITHOUT ROWID;

-- Per revision: `Properties/@ExplicitlyDeployable` (decides the client
-- action of an unapproved update). Filled by `serve` for revisions it has
-- not yet seen.
CREATE TABLE wusp_revisions (
    rev_id                INTEGER PRIMARY KEY REFERENCES revisions (rev_id),
    explicitly_deployable INTEGER NOT NULL
);
