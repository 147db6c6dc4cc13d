-- gapsync store schema, version 1. Applied by store::migrate; never edit a
-- released version: add a new migration instead.

CREATE TABLE server (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    server_id   TEXT NOT NULL,      -- GUID, lower case (MS-WSUSOD 2.8.3)
    name        TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('autonomous', 'replica')),
    created     TEXT NOT NULL
);

CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The change journal: seq is the rowid, so "after seq N" is a range scan.
CREATE TABLE journal (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      TEXT NOT NULL
);

-- One row per update revision; rev_id is the stable compact revision id.
CREATE TABLE revisions (
    rev_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    update_id         TEXT NOT NULL,   -- GUID, lower case
    revision          INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    category_type     TEXT,
    title             TEXT NOT NULL,
    kb_article        TEXT,
    creation_date     TEXT,
    publication_state TEXT,
    eula_id           TEXT,
    secured           INTEGER NOT NULL,
    default_language  TEXT,
    xml               BLOB NOT NULL,   -- verbatim original bytes
    xml_sha256        BLOB NOT NULL,
    seq               INTEGER NOT NULL,
    UNIQUE (update_id, revision)
);
CREATE INDEX revisions_seq ON revisions (seq);

-- One row per update: its current (newest) revision and decline state.
CREATE TABLE updates (
    update_id     TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    category_type TEXT,
    current_rev   INTEGER NOT NULL REFERENCES revisions (rev_id),
    declined      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX updates_kind ON updates (kind, category_type);

CREATE TABLE localized (
    rev_id      INTEGER NOT NULL REFERENCES revisions (rev_id),
    language    TEXT NOT NULL,
    title       TEXT NOT NULL,
    description TEXT,
    PRIMARY KEY (rev_id, language)
) WITHOUT ROWID;

-- rel: 'prerequisite' (grp 0 for required ones, n > 0 for the n-th
-- AtLeastOne), 'bundled', 'superseded'.
CREATE TABLE relationships (
    rev_id          INTEGER NOT NULL REFERENCES revisions (rev_id),
    rel             TEXT NOT NULL,
    grp             INTEGER NOT NULL,
    is_category     INTEGER NOT NULL,
    target_id       TEXT NOT NULL,
    target_revision INTEGER
);
CREATE INDEX relationships_rev ON relationships (rev_id);
CREATE INDEX relationships_target ON relationships (target_id, rel);

CREATE TABLE files (
    rev_id        INTEGER NOT NULL REFERENCES revisions (rev_id),
    ord           INTEGER NOT NULL,
    file_name     TEXT NOT NULL,
    size          INTEGER NOT NULL,
    modified      TEXT,
    sha1          BLOB NOT NULL,
    sha256        BLOB,
    patching_type TEXT,
    encrypted     INTEGER NOT NULL,
    PRIMARY KEY (rev_id, ord)
) WITHOUT ROWID;
CREATE INDEX files_sha1 ON files (sha1);

-- Content files present under content/ (each complete and verified).
CREATE TABLE content (
    sha1     BLOB PRIMARY KEY,
    sha256   BLOB NOT NULL,
    size     INTEGER NOT NULL,
    rel_path TEXT NOT NULL,
    seq      INTEGER NOT NULL
);

CREATE TABLE groups (
    group_id  TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    parent_id TEXT REFERENCES groups (group_id),
    builtin   INTEGER NOT NULL,
    seq       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX groups_name ON groups (name COLLATE NOCASE);

CREATE TABLE computers (
    computer_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    group_id    TEXT NOT NULL REFERENCES groups (group_id),
    added       TEXT NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX computers_name ON computers (name COLLATE NOCASE);

-- The Deployment table of MS-WSUSSS 3.1.1; removed rows stay as "dead
-- deployments" so downstream servers learn of the removal.
CREATE TABLE deployments (
    deployment_id     TEXT PRIMARY KEY,
    update_id         TEXT NOT NULL,
    revision          INTEGER NOT NULL,
    group_id          TEXT NOT NULL,
    action            TEXT NOT NULL CHECK (action IN ('install', 'uninstall', 'block')),
    admin_name        TEXT NOT NULL,
    deadline          TEXT,
    go_live           TEXT NOT NULL,
    download_priority INTEGER NOT NULL,
    is_assigned       INTEGER NOT NULL,
    last_change_seq   INTEGER NOT NULL,
    removed           INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE UNIQUE INDEX deployments_live ON deployments (update_id, group_id) WHERE removed = 0;
CREATE INDEX deployments_seq ON deployments (last_change_seq);
