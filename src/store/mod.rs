//! The server store: a directory holding an embedded SQLite database
//! (`gapsync.db`, WAL), the content tree (`content/`), a staging area
//! (`staging/`) and a writer lock (`gapsync.lock`).
//!
//! Invariants:
//! - The database carries `PRAGMA application_id = 0x47415053` ("GAPS") and
//!   `PRAGMA user_version` = schema version; anything else is refused.
//! - Every change to replicated state and its journal entry commit in one
//!   transaction (see `journal`).
//! - Only one writer at a time: writers hold an exclusive OS file lock on
//!   `gapsync.lock` for as long as the `Store` lives.
//! - A revision's XML never changes: the same (id, revision) with other bytes
//!   is refused.

pub mod check;
pub mod console;
pub mod content;
pub mod deployments;
pub mod dr;
pub mod groups;
pub mod import;
pub mod journal;
pub mod ledgers;
pub mod reports;
pub mod rollup;
pub mod scope;
pub mod serving;
pub mod sites;
pub mod snapshot;
pub mod state;
pub mod syncing;
pub mod trust;
pub mod wusp;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{DbContext, Error, IoContext, Result};
use crate::model::metadata::{self, Prerequisite, UpdateKind, UpdateMetadata};
use crate::store::content::{ContentFile, ContentStore, Staged};
use crate::store::journal::{Anchor, Change, ChangeKind};

pub const DB_FILE: &str = "gapsync.db";
pub const LOCK_FILE: &str = "gapsync.lock";
pub const CONTENT_DIR: &str = "content";
pub const STAGING_DIR: &str = "staging";
/// "GAPS": marks a SQLite file as a gapsync store.
pub const APPLICATION_ID: i64 = 0x4741_5053;

/// Schema migrations; index + 1 is the version each one produces.
const MIGRATIONS: &[&str] = &[
    include_str!("schema/v1.sql"),
    include_str!("schema/v2.sql"),
    include_str!("schema/v3.sql"),
    include_str!("schema/v4.sql"),
    include_str!("schema/v5.sql"),
    include_str!("schema/v6.sql"),
    include_str!("schema/v7.sql"),
    include_str!("schema/v8.sql"),
    include_str!("schema/v9.sql"),
    include_str!("schema/v10.sql"),
    include_str!("schema/v11.sql"),
    include_str!("schema/v12.sql"),
];
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Well-known target groups every WSUS server has (MS-WSUSOD 2.5.3).
pub const ALL_COMPUTERS: (&str, &str) = ("a0a08746-4dbe-4a37-9adf-9e7652c0b421", "All Computers");
pub const UNASSIGNED_COMPUTERS: (&str, &str) = (
    "b73ca6ed-5727-47f3-84de-015e03f6a88a",
    "Unassigned Computers",
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Approvals are made locally.
    Autonomous,
    /// Groups and approvals come from upstream (sync or bundle).
    Replica,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Autonomous => "autonomous",
            Mode::Replica => "replica",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "autonomous" => Some(Mode::Autonomous),
            "replica" => Some(Mode::Replica),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub server_id: Uuid,
    pub name: String,
    pub mode: Mode,
    pub created: String,
}

/// `status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub server_id: String,
    pub name: String,
    pub mode: Mode,
    pub schema_version: i64,
    pub updates: UpdateCounts,
    pub revisions: i64,
    pub declined: i64,
    pub groups: i64,
    pub computers: i64,
    pub deployments: i64,
    pub content_files: i64,
    pub content_bytes: i64,
    pub anchor: String,
    pub trusted_keys: i64,
    pub bundles_imported: i64,
    pub export_destinations: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateCounts {
    pub total: i64,
    pub software: i64,
    pub driver: i64,
    pub category: i64,
    pub detectoid: i64,
}

/// A row of `updates list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UpdateSummary {
    pub id: String,
    pub revision: i32,
    /// Server-local compact id (see `updates show`); not in the list JSON,
    /// which is meant to compare equal across replicated servers.
    #[serde(skip_serializing)]
    pub revision_id: i64,
    pub kind: String,
    pub category_type: Option<String>,
    pub title: String,
    pub kb_article: Option<String>,
    pub creation_date: Option<String>,
    pub declined: bool,
}

/// What `add_revision` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New(i64),
    AlreadyPresent(i64),
}

pub struct Store {
    root: PathBuf,
    conn: Connection,
    info: ServerInfo,
    content: ContentStore,
    _lock: Option<File>,
    /// Staging leftovers a writer removed when it opened the store.
    staging_cleaned: Vec<PathBuf>,
}

impl Drop for Store {
    /// A writer leaves the WAL empty (checkpointed, truncated to zero
    /// bytes; the file stays for readers who may not create it): whoever
    /// opens the store next would otherwise re-read all of it, checksums
    /// included (WAL recovery), on every command: after a full import of a
    /// 100k-update catalog that is about 500 MB and 0.4 s per open. Busy
    /// (another connection reads): left to the next writer.
    fn drop(&mut self) {
        if self._lock.is_some() {
            let _ = self
                .conn
                .busy_timeout(std::time::Duration::from_millis(100));
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 32 MiB of page cache: large batches stop spilling to disk.
    conn.pragma_update(None, "cache_size", -32768)?;
    // Statement journals (kept for a statement that may fail halfway inside
    // a larger transaction: one row's pages) stay in memory instead of
    // temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A long-lived writer (serve) keeps its WAL near this size: it is cut
    // back to it whenever a checkpoint lets the log start over.
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
    persist_wal(conn);
    Ok(())
}

/// Settings of a read-only connection (nothing that writes).
fn configure_read_only(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -32768)?;
    Ok(())
}

/// Keeps `gapsync.db-wal` and `gapsync.db-shm` in place when the last
/// connection closes (SQLITE_FCNTL_PERSIST_WAL). A user who may read but
/// not write the store can open a WAL database read-only only while those
/// two files exist (SQLite 3.22+: it cannot create them in a folder it may
/// not write); without this, every clean close of a writer deletes them.
fn persist_wal(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: `conn.handle()` is the live connection's sqlite3 pointer for
    // the duration of the call; "main" is a NUL-terminated C string; the
    // PERSIST_WAL file control reads and writes exactly one c_int through
    // the pointer, which points at `on`.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        )
    };
    // Not fatal: without it readers who cannot write need the files made
    // again by the next writer (`open_read_only` says so).
    let _ = rc;
}

/// What a folder holds, judged from the first bytes of `gapsync.db`
/// without opening it with SQLite (which could create files beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No `gapsync.db`.
    Empty,
    /// A gapsync store (or one whose header is still in its WAL: SQLite
    /// decides when it is opened).
    Store,
    /// `gapsync.db` is something else; the text says what.
    Foreign(String),
}

/// Rule: a folder holds a gapsync store when its `gapsync.db` is a SQLite
/// database whose header carries gapsync's application id ("GAPS", bytes
/// 68-71). A database whose header has no application id yet but has a
/// non-empty WAL beside it may be a store whose header was not
/// checkpointed; it is left to SQLite to tell.
pub(crate) fn probe(dir: &Path) -> Result<Probe> {
    use std::io::Read;
    let db = dir.join(DB_FILE);
    let meta = match fs::metadata(&db) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Empty),
        Err(e) => return Err(Error::io(db, e)),
    };
    if !meta.is_file() {
        return Ok(Probe::Foreign(format!("{DB_FILE} is not a file")));
    }
    let mut header = Vec::with_capacity(100);
    File::open(&db)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .at(&db)?;
    let wal_pending = fs::metadata(dir.join(format!("{DB_FILE}-wal"))).is_ok_and(|m| m.len() > 0);
    if header.is_empty() {
        return Ok(if wal_pending {
            Probe::Store
        } else {
            Probe::Foreign(format!("{DB_FILE} is empty"))
        });
    }
    if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
        return Ok(Probe::Foreign(format!(
            "{DB_FILE} is not a SQLite database"
        )));
    }
    let app_id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    if i64::from(app_id) == APPLICATION_ID || (app_id == 0 && wal_pending) {
        return Ok(Probe::Store);
    }
    Ok(Probe::Foreign(format!(
        "{DB_FILE} is not a gapsync database: a SQLite database of another application (application_id {app_id:#010x})"
    )))
}

/// How deep below a folder `init` looks for a store before refusing to
/// create one around it.
pub const NESTED_STORE_DEPTH: usize = 4;

/// Rule: stores do not nest. A store inside another's folder puts its files
/// into the other's `content/` or `staging/` (which `check` of the outer one
/// then reports for ever), and a store around another does the same from
/// the outside. `init DIR` is refused when DIR or any folder above it holds
/// a store, or when a store lies up to `NESTED_STORE_DEPTH` folder levels
/// below DIR.
fn check_not_nested(dir: &Path) -> Result<()> {
    let abs = std::path::absolute(dir).at(dir)?;
    // The nearest folder that exists, with symbolic links resolved.
    let mut existing = abs.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => return Ok(()),
        }
    }
    let real = existing.canonicalize().at(existing)?;
    for anc in real.ancestors() {
        if anc == real && existing == abs {
            continue; // DIR itself: `init` says "already holds a store"
        }
        if probe(anc).is_ok_and(|p| p == Probe::Store) {
            return Err(Error::InsideAStore {
                path: dir.to_path_buf(),
                store: anc.to_path_buf(),
            });
        }
    }
    if existing != abs {
        return Ok(()); // DIR does not exist yet: nothing below it
    }
    let walk = walkdir::WalkDir::new(&real)
        .min_depth(1)
        .max_depth(NESTED_STORE_DEPTH)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.file_type().is_dir());
    for e in walk.flatten() {
        if probe(e.path()).is_ok_and(|p| p == Probe::Store) {
            return Err(Error::HoldsAStore {
                path: dir.to_path_buf(),
                store: e.path().to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Takes the exclusive writer lock (creating `gapsync.lock` if needed).
/// Called only on a folder known to hold a store.
fn acquire_lock(root: &Path) -> Result<File> {
    let path = root.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                Error::NotWritable {
                    path: root.to_path_buf(),
                    why: format!("{LOCK_FILE}: {e}"),
                }
            }
            _ => Error::io(&path, e),
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: root.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read-only database; nothing created or changed.
    ReadOnly,
    /// Read-write database without the writer lock (readers that keep
    /// bookkeeping, such as `serve`).
    Shared,
    /// Read-write with the exclusive writer lock.
    Writer,
}

/// Opens `gapsync.db` of a folder `probe` found to hold a store, and checks
/// its application id.
fn connect(dir: &Path, access: Access) -> Result<Connection> {
    use rusqlite::OpenFlags;
    let not_a_store = |why: String| Error::NotAStore {
        path: dir.to_path_buf(),
        why,
    };
    let flags = match access {
        Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        Access::Shared | Access::Writer => OpenFlags::SQLITE_OPEN_READ_WRITE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(dir.join(DB_FILE), flags)
        .map_err(|e| not_a_store(e.to_string()))?;
    let app_id: i64 = match conn.pragma_query_value(None, "application_id", |r| r.get(0)) {
        Ok(v) => v,
        Err(e) if access == Access::ReadOnly && is_cant_open(&e) => {
            return Err(Error::NoWalFiles {
                path: dir.to_path_buf(),
                why: e.to_string(),
            });
        }
        Err(e) => {
            return Err(not_a_store(format!(
                "{DB_FILE} is not a SQLite database: {e}"
            )));
        }
    };
    if app_id != APPLICATION_ID {
        return Err(not_a_store(format!("{DB_FILE} is not a gapsync database")));
    }
    match access {
        Access::ReadOnly => configure_read_only(&conn)?,
        Access::Shared | Access::Writer => configure(&conn)?,
    }
    Ok(conn)
}

/// Whether SQLite could not open (or create) a file it needs.
fn is_cant_open(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
    )
}

/// Applies the migrations after `version` in one transaction.
fn migrate(conn: &mut Connection, version: i64) -> Result<()> {
    let tx = conn.transaction()?;
    for m in &MIGRATIONS[version as usize..] {
        tx.execute_batch(m)?;
    }
    if version < 4 {
        backfill_languages(&tx)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// A read-only open of a store of an older schema: the upgrade writes, so
/// it is done on a connection of its own under the writer lock, or
/// refused with what to do when this user may not write the store.
fn migrate_for_reader(dir: &Path, version: i64) -> Result<()> {
    let refuse = |why: String| Error::UpgradeNeedsWriter {
        path: dir.to_path_buf(),
        found: version,
        why,
    };
    let _lock = match acquire_lock(dir) {
        Ok(l) => l,
        Err(Error::NotWritable { why, .. }) => return Err(refuse(why)),
        Err(e) => return Err(e),
    };
    let mut conn = connect(dir, Access::Writer)?;
    let now: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if now >= SCHEMA_VERSION {
        return Ok(()); // upgraded meanwhile
    }
    match migrate(&mut conn, now) {
        Err(Error::Db(e)) if is_cant_open(&e) => Err(refuse(e.to_string())),
        r => r,
    }
}

impl Store {
    /// Creates a new store in `dir` (which may exist but must not hold a
    /// store) with a fresh server id.
    pub fn init(dir: &Path, name: &str, mode: Mode) -> Result<Store> {
        if name.trim().is_empty() {
            return Err(Error::invalid("server name", "must not be empty"));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotADirectory(dir.to_path_buf()));
        }
        match if dir.is_dir() {
            probe(dir)?
        } else {
            Probe::Empty
        } {
            Probe::Empty => {}
            Probe::Store => {
                return Err(Error::AlreadyAStore {
                    path: dir.to_path_buf(),
                });
            }
            Probe::Foreign(why) => {
                return Err(Error::ForeignDatabase {
                    path: dir.to_path_buf(),
                    why,
                });
            }
        }
        check_not_nested(dir)?;
        let db_path = dir.join(DB_FILE);
        fs::create_dir_all(dir).at(dir)?;
        for sub in [CONTENT_DIR, STAGING_DIR] {
            fs::create_dir_all(dir.join(sub)).at(dir.join(sub))?;
        }
        let lock = acquire_lock(dir)?;
        let mut conn = Connection::open(&db_path)?;
        configure(&conn)?;
        let tx = conn.transaction()?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        for m in MIGRATIONS {
            tx.execute_batch(m)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let info = ServerInfo {
            server_id: Uuid::new_v4(),
            name: name.to_string(),
            mode,
            created: now_rfc3339(),
        };
        tx.execute(
            "INSERT INTO server (singleton, server_id, name, mode, created) VALUES (1, ?1, ?2, ?3, ?4)",
            params![info.server_id.to_string(), info.name, mode.as_str(), info.created],
        )?;
        for (id, gname) in [ALL_COMPUTERS, UNASSIGNED_COMPUTERS] {
            let parent = (id == UNASSIGNED_COMPUTERS.0).then_some(ALL_COMPUTERS.0);
            tx.execute(
                "INSERT INTO groups (group_id, name, parent_id, builtin, seq) VALUES (?1, ?2, ?3, 1, 0)",
                params![id, gname, parent],
            )?;
        }
        tx.commit()?;
        Ok(Store {
            root: dir.to_path_buf(),
            content: ContentStore::new(dir.join(CONTENT_DIR), dir.join(STAGING_DIR)),
            conn,
            info,
            _lock: Some(lock),
            staging_cleaned: Vec::new(),
        })
    }

    /// Opens an existing store without the writer lock, for reading and
    /// the bookkeeping writes of `serve` (SQLite gives readers a
    /// consistent snapshot per query).
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_inner(dir, Access::Shared)
    }

    /// Opens an existing store read-only: the database is opened read-only
    /// and nothing in the folder is created or changed, so a user who may
    /// read but not write the store can run every reading command. (A store
    /// of an older schema is upgraded first, which needs write access.)
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        Self::open_inner(dir, Access::ReadOnly)
    }

    /// Opens an existing store for writing: takes the exclusive writer lock
    /// and applies pending schema migrations.
    pub fn open_writer(dir: &Path) -> Result<Store> {
        Self::open_inner(dir, Access::Writer)
    }

    fn open_inner(dir: &Path, access: Access) -> Result<Store> {
        let not_a_store = |why: &str| Error::NotAStore {
            path: dir.to_path_buf(),
            why: why.to_string(),
        };
        // The folder is checked before anything is created in it.
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_store("not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_a_store("no such directory"));
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        match probe(dir)? {
            Probe::Store => {}
            Probe::Empty => return Err(not_a_store(&format!("no {DB_FILE}"))),
            Probe::Foreign(why) => return Err(not_a_store(&why)),
        }
        let lock = if access == Access::Writer {
            Some(acquire_lock(dir)?)
        } else {
            None
        };
        let mut conn = connect(dir, access)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path: dir.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            return Err(not_a_store("schema version 0"));
        }
        if version < SCHEMA_VERSION {
            match access {
                Access::Writer => migrate(&mut conn, version)?,
                Access::Shared => {
                    // Migrations write: a reader takes the writer lock just for them.
                    let _migration_lock = acquire_lock(dir)?;
                    migrate(&mut conn, version)?;
                }
                Access::ReadOnly => {
                    drop(conn);
                    migrate_for_reader(dir, version)?;
                    conn = connect(dir, access)?;
                }
            }
        }
        let info = conn
            .query_row(
                "SELECT server_id, name, mode, created FROM server",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| not_a_store("no server identity"))?;
        let info = ServerInfo {
            server_id: Uuid::parse_str(&info.0).map_err(|_| not_a_store("bad server id"))?,
            name: info.1,
            mode: Mode::parse(&info.2).ok_or_else(|| not_a_store("bad mode"))?,
            created: info.3,
        };
        // A writer holds the lock, so nothing else is staging: whatever is
        // in staging/ was left by an interrupted writer and is removed.
        let mut staging_cleaned = Vec::new();
        if lock.is_some() {
            for p in crate::store::check::staging_files(&dir.join(STAGING_DIR))? {
                fs::remove_file(&p).at(&p)?;
                staging_cleaned.push(p);
            }
        }
        Ok(Store {
            root: dir.to_path_buf(),
            content: ContentStore::new(dir.join(CONTENT_DIR), dir.join(STAGING_DIR)),
            conn,
            info,
            _lock: lock,
            staging_cleaned,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Staging leftovers removed when this writer opened the store.
    pub fn staging_cleaned(&self) -> &[PathBuf] {
        &self.staging_cleaned
    }
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }
    pub fn content(&self) -> &ContentStore {
        &self.content
    }
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The anchor of the newest journal entry (sequence 0 when empty).
    pub fn anchor(&self) -> Result<Anchor> {
        let seq: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
                    r.get(0)
                })?;
        Ok(Anchor {
            server_id: self.info.server_id,
            seq,
        })
    }

    /// Parses an anchor and checks it belongs to this server and is not
    /// ahead of its journal.
    pub fn own_anchor(&self, anchor: &str) -> Result<Anchor> {
        let a: Anchor = anchor.parse()?;
        if a.server_id != self.info.server_id {
            return Err(Error::ForeignAnchor {
                anchor: anchor.to_string(),
                other: a.server_id.to_string(),
                this: self.info.server_id.to_string(),
            });
        }
        let head = self.anchor()?;
        if a.seq > head.seq {
            return Err(Error::BadAnchor {
                anchor: anchor.to_string(),
                why: format!("ahead of this server's journal (head is {})", head.seq),
            });
        }
        Ok(a)
    }

    /// Every change after `anchor`, oldest first (a primary-key range scan).
    pub fn changes_since(&self, anchor: &Anchor) -> Result<Vec<Change>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, kind, subject, at FROM journal WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = st.query_map([anchor.seq], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, kind, subject, at) = row?;
            let kind = ChangeKind::parse(&kind).ok_or_else(|| {
                Error::Corrupt(format!("journal entry {seq} has unknown kind {kind:?}"))
            })?;
            out.push(Change {
                seq,
                kind,
                subject,
                at,
            });
        }
        Ok(out)
    }

    pub fn status(&self) -> Result<Status> {
        let c = &self.conn;
        let one = |sql: &str| -> Result<i64> { Ok(c.query_row(sql, [], |r| r.get(0))?) };
        let mut counts = UpdateCounts::default();
        {
            let mut st = c.prepare("SELECT kind, COUNT(*) FROM updates GROUP BY kind")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (k, n) = row?;
                counts.total += n;
                match UpdateKind::parse(&k) {
                    Some(UpdateKind::Software) => counts.software = n,
                    Some(UpdateKind::Driver) => counts.driver = n,
                    Some(UpdateKind::Category) => counts.category = n,
                    Some(UpdateKind::Detectoid) => counts.detectoid = n,
                    None => {}
                }
            }
        }
        Ok(Status {
            server_id: self.info.server_id.to_string(),
            name: self.info.name.clone(),
            mode: self.info.mode,
            schema_version: SCHEMA_VERSION,
            updates: counts,
            revisions: one("SELECT COUNT(*) FROM revisions")?,
            declined: one("SELECT COUNT(*) FROM updates WHERE declined = 1")?,
            groups: one("SELECT COUNT(*) FROM groups")?,
            computers: one("SELECT COUNT(*) FROM computers")?,
            deployments: one("SELECT COUNT(*) FROM deployments WHERE removed = 0")?,
            content_files: one("SELECT COUNT(*) FROM content")?,
            content_bytes: one("SELECT COALESCE(SUM(size), 0) FROM content")?,
            anchor: self.anchor()?.to_string(),
            trusted_keys: one("SELECT COUNT(*) FROM trusted_keys WHERE revoked = 0")?,
            bundles_imported: one("SELECT COUNT(*) FROM import_ledger")?,
            export_destinations: one("SELECT COUNT(*) FROM export_ledger")?,
        })
    }

    /// Starts a batch of catalog changes (revisions and content) that commit
    /// together in one transaction.
    pub fn catalog_batch(&mut self) -> Result<CatalogBatch<'_>> {
        let now = now_rfc3339();
        let content = ContentStore::new(self.root.join(CONTENT_DIR), self.root.join(STAGING_DIR));
        let tx = self.conn.transaction()?;
        Ok(CatalogBatch {
            tx,
            now,
            content,
            pending: Vec::new(),
        })
    }

    /// Resolves an update id given by a user (any case, with or without
    /// braces) to its canonical lower-case form, if the update is known.
    pub fn resolve_update(&self, id: &str) -> Result<String> {
        let canon =
            canonical_guid(id).ok_or_else(|| Error::UnknownUpdate(format!("{id} (not a GUID)")))?;
        let found: Option<String> = self
            .conn
            .query_row(
                "SELECT update_id FROM updates WHERE update_id = ?1",
                [&canon],
                |r| r.get(0),
            )
            .optional()?;
        found.ok_or(Error::UnknownUpdate(canon))
    }

    /// `updates list`, filtered. Product and classification filters match
    /// the `AtLeastOne IsCategory` prerequisites of the current revision.
    pub fn list_updates(&self, filter: &UpdateFilter) -> Result<Vec<UpdateSummary>> {
        let mut sql = String::from(
            "SELECT u.update_id, r.revision, r.rev_id, r.kind, r.category_type, r.title, r.kb_article, r.creation_date, u.declined \
             FROM updates u JOIN revisions r ON r.rev_id = u.current_rev WHERE 1=1",
        );
        let mut args: Vec<String> = Vec::new();
        if let Some(k) = filter.kind {
            args.push(k.as_str().to_string());
            sql.push_str(&format!(" AND u.kind = ?{}", args.len()));
        }
        for cat in [&filter.product, &filter.classification]
            .into_iter()
            .flatten()
        {
            args.push(cat.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM relationships x WHERE x.rev_id = u.current_rev AND x.rel = 'prerequisite' AND x.target_id = ?{})",
                args.len()
            ));
        }
        sql.push_str(" ORDER BY u.update_id");
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(UpdateSummary {
                id: r.get(0)?,
                revision: r.get(1)?,
                revision_id: r.get(2)?,
                kind: r.get(3)?,
                category_type: r.get(4)?,
                title: r.get(5)?,
                kb_article: r.get(6)?,
                creation_date: r.get(7)?,
                declined: r.get::<_, i64>(8)? != 0,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Of `ids` (canonical GUIDs), those that are not category updates in
    /// this store, in the order given: a product or classification filter
    /// naming one matches no update.
    pub fn unknown_categories(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM updates WHERE update_id = ?1 AND kind = 'category'")?;
        let mut out = Vec::new();
        for id in ids {
            if st.query_row([id], |_| Ok(())).optional()?.is_none() {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// All revisions of one update, oldest first: (rev_id, revision).
    pub fn revisions_of(&self, update_id: &str) -> Result<Vec<(i64, i32)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT rev_id, revision FROM revisions WHERE update_id = ?1 ORDER BY revision",
        )?;
        let rows = st.query_map([update_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The verbatim XML of a revision.
    pub fn revision_xml(&self, rev_id: i64) -> Result<Vec<u8>> {
        Ok(self.conn.query_row(
            "SELECT xml FROM revisions WHERE rev_id = ?1",
            [rev_id],
            |r| r.get(0),
        )?)
    }

    /// Updates whose current revision supersedes `update_id`.
    pub fn superseded_by(&self, update_id: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT u.update_id FROM relationships x JOIN updates u ON u.current_rev = x.rev_id \
             WHERE x.target_id = ?1 AND x.rel = 'superseded' ORDER BY u.update_id",
        )?;
        let rows = st.query_map([update_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A stored content file by SHA-1.
    pub fn content_file(&self, sha1: &[u8; 20]) -> Result<Option<ContentFile>> {
        Ok(self
            .conn
            .query_row(
                "SELECT sha1, sha256, size, rel_path FROM content WHERE sha1 = ?1",
                [&sha1[..]],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?
            .and_then(|(a, b, size, rel_path)| {
                Some(ContentFile {
                    sha1: a.try_into().ok()?,
                    sha256: b.try_into().ok()?,
                    size: u64::try_from(size).ok()?,
                    rel_path,
                })
            }))
    }
}

#[derive(Debug, Clone, Default)]
pub struct UpdateFilter {
    pub kind: Option<UpdateKind>,
    pub product: Option<String>,
    pub classification: Option<String>,
}

/// A set of catalog changes committed in one transaction: revisions and the
/// content files they reference. Content is staged first and only moved into
/// place at `commit`, right before the database commits, so a failure at any
/// point leaves the old state (at most orphaned, verified content files,
/// which a later add adopts).
pub struct CatalogBatch<'a> {
    tx: rusqlite::Transaction<'a>,
    now: String,
    content: ContentStore,
    pending: Vec<Staged>,
}

impl CatalogBatch<'_> {
    /// Adds one revision from its verbatim XML. `name` (a file or entry name)
    /// is used in errors.
    pub fn add_revision(&mut self, name: &str, xml: &[u8]) -> Result<Added> {
        let meta = metadata::parse(xml).map_err(|error| Error::Metadata {
            name: name.to_string(),
            error,
        })?;
        self.add_parsed(name, xml, &meta)
    }

    /// Adds one revision already parsed from `xml`.
    pub fn add_parsed(&mut self, name: &str, xml: &[u8], meta: &UpdateMetadata) -> Result<Added> {
        insert_revision(&self.tx, &self.now, name, xml, meta)
    }

    /// Whether a content file with this SHA-1 is already stored.
    pub fn has_content(&self, sha1: &[u8; 20]) -> Result<bool> {
        content_recorded(&self.tx, sha1)
    }

    /// Queues a staged (already verified) content file for this batch.
    pub fn add_content(&mut self, staged: Staged) {
        self.pending.push(staged);
    }

    /// The content store the batch stages into.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Moves staged content into place, records it, and commits.
    pub fn commit(mut self) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        let pending = std::mem::take(&mut self.pending);
        for staged in pending {
            let sha1 = staged.file.sha1;
            if self.has_content(&sha1)? {
                continue; // dropping `staged` removes the temp file
            }
            let f = self.content.commit(staged)?;
            record_content(&self.tx, &self.now, &f)?;
            report.content_files += 1;
            report.content_bytes += f.size;
        }
        crate::failpoint::hit("catalog-before-commit");
        self.tx.commit()?;
        Ok(report)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BatchReport {
    pub content_files: u64,
    pub content_bytes: u64,
}

/// `updates show`: the current revision's metadata (re-read from its
/// verbatim XML, the source of truth) with the store's view of it.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateDetail {
    pub id: String,
    pub revision: i32,
    pub revision_id: i64,
    pub kind: String,
    pub category_type: Option<String>,
    pub title: String,
    pub declined: bool,
    /// Every stored revision: (revision id, revision number).
    pub revisions: Vec<RevisionEntry>,
    pub superseded_by: Vec<String>,
    pub metadata: UpdateMetadata,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevisionEntry {
    pub revision_id: i64,
    pub revision: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    pub file_name: String,
    pub size: u64,
    pub sha1: String,
    pub sha256: Option<String>,
    /// Where the file is under `content/`, when it has arrived.
    pub content_path: Option<String>,
}

impl Store {
    pub fn update_detail(&self, id: &str) -> Result<UpdateDetail> {
        let update_id = self.resolve_update(id)?;
        let (rev_id, declined): (i64, bool) = self.conn.query_row(
            "SELECT current_rev, declined FROM updates WHERE update_id = ?1",
            [&update_id],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)),
        )?;
        let xml = self.revision_xml(rev_id)?;
        let meta = metadata::parse(&xml).map_err(|error| Error::Metadata {
            name: format!("stored revision {rev_id} of {update_id}"),
            error,
        })?;
        let mut files = Vec::new();
        for f in &meta.files {
            files.push(FileEntry {
                file_name: f.file_name.clone(),
                size: f.size,
                sha1: hex::encode_upper(f.sha1),
                sha256: f.sha256.map(hex::encode),
                content_path: self
                    .content_file(&f.sha1)?
                    .map(|c| format!("{CONTENT_DIR}/{}", c.rel_path)),
            });
        }
        Ok(UpdateDetail {
            id: update_id.clone(),
            revision: meta.revision,
            revision_id: rev_id,
            kind: meta.kind.as_str().to_string(),
            category_type: meta.category_type.map(|c| c.as_str().to_string()),
            title: meta.title("en").unwrap_or("").to_string(),
            declined,
            revisions: self
                .revisions_of(&update_id)?
                .into_iter()
                .map(|(revision_id, revision)| RevisionEntry {
                    revision_id,
                    revision,
                })
                .collect(),
            superseded_by: self.superseded_by(&update_id)?,
            metadata: meta,
            files,
        })
    }
}

/// Inserts one revision (and its indexed fields and journal entry) inside
/// the caller's transaction. The same (id, revision) with the same bytes is
/// `AlreadyPresent`; with other bytes it is refused. Steps:
/// 1. the same (id, revision) already stored: present, or a conflict;
/// 2. the journal entry and the `revisions` row (verbatim XML, digest);
/// 3. its indexed fields: localized properties, relationships
///    (prerequisites, bundled, superseded), files, languages;
/// 4. the update's current revision: the newest one;
/// 5. the update's search text, when this revision became current.
pub(crate) fn insert_revision(
    tx: &Connection,
    now: &str,
    name: &str,
    xml: &[u8],
    meta: &UpdateMetadata,
) -> Result<Added> {
    insert_revision_digested(tx, now, name, xml, &Sha256::digest(xml).into(), meta)
}

/// [`insert_revision`] with the XML's SHA-256 computed by the caller (an
/// import hashes each document on its reading thread).
pub(crate) fn insert_revision_digested(
    tx: &Connection,
    now: &str,
    name: &str,
    xml: &[u8],
    digest: &[u8; 32],
    meta: &UpdateMetadata,
) -> Result<Added> {
    let id = meta.id.to_string();
    // 1.
    if let Some(rev_id) = stored_revision(tx, name, meta, digest)? {
        return Ok(Added::AlreadyPresent(rev_id));
    }
    // 2.
    let subject = format!("{id}/{}", meta.revision);
    let seq = journal::record(tx, ChangeKind::RevisionAdded, &subject, now)?;
    let rev_id = insert_revision_row(tx, meta, xml, digest, seq).during("adding a revision")?;
    // 3.
    insert_localized(tx, rev_id, meta).during("adding a revision's localized properties")?;
    insert_relationships(tx, rev_id, meta).during("adding a revision's relationships")?;
    insert_files(tx, rev_id, name, meta)?;
    insert_languages(tx, rev_id, meta).during("adding a revision's languages")?;
    // 4. The newest revision is current.
    tx.prepare_cached(
        "INSERT INTO updates (update_id, kind, category_type, current_rev) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (update_id) DO UPDATE SET kind = excluded.kind, category_type = excluded.category_type, \
         current_rev = excluded.current_rev \
         WHERE (SELECT revision FROM revisions WHERE rev_id = updates.current_rev) < ?5",
    )
    .and_then(|mut st| {
        st.execute(params![
            id,
            meta.kind.as_str(),
            meta.category_type.map(|c| c.as_str()),
            rev_id,
            meta.revision
        ])
    })
    .during("updating an update's current revision")?;
    // 5.
    tx.prepare_cached(SEARCH_TEXT)
        .and_then(|mut st| st.execute(params![id, rev_id]))
        .during("updating an update's search text")?;
    Ok(Added::New(rev_id))
}

/// Step 5 of [`insert_revision`]: the searched text of update `?1` when
/// revision `?2` is its current one (its titles in every language, one per
/// line, then `KB` and its KB number), the console's search reads it. The
/// migration to schema v11 fills the table with the same expression.
const SEARCH_TEXT: &str = "INSERT OR REPLACE INTO update_search (update_id, text) \
    SELECT u.update_id, \
    COALESCE((SELECT group_concat(l.title, char(10)) FROM localized l WHERE l.rev_id = u.current_rev), '') \
    || COALESCE(char(10) || 'KB' || (SELECT r.kb_article FROM revisions r WHERE r.rev_id = u.current_rev), '') \
    FROM updates u WHERE u.update_id = ?1 AND u.current_rev = ?2";

/// Step 1 of [`insert_revision`]: the `rev_id` of the same (id, revision)
/// stored with the same bytes; refused when stored with other bytes.
fn stored_revision(
    tx: &Connection,
    name: &str,
    meta: &UpdateMetadata,
    digest: &[u8; 32],
) -> Result<Option<i64>> {
    let id = meta.id.to_string();
    let existing: Option<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT rev_id, xml_sha256 FROM revisions WHERE update_id = ?1 AND revision = ?2",
        )
        .and_then(|mut st| {
            st.query_row(params![id, meta.revision], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .during("looking up a revision")?;
    match existing {
        None => Ok(None),
        Some((rev_id, old)) if old == digest => Ok(Some(rev_id)),
        Some(_) => Err(Error::RevisionConflict {
            name: name.to_string(),
            id,
            revision: meta.revision,
        }),
    }
}

/// Step 2 of [`insert_revision`]: the `revisions` row; returns its `rev_id`.
fn insert_revision_row(
    tx: &Connection,
    meta: &UpdateMetadata,
    xml: &[u8],
    digest: &[u8; 32],
    seq: i64,
) -> rusqlite::Result<i64> {
    let title = meta.title("en").unwrap_or("").to_string();
    tx.prepare_cached(
        "INSERT INTO revisions (update_id, revision, kind, category_type, title, kb_article, creation_date, \
         publication_state, eula_id, secured, default_language, xml, xml_sha256, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        meta.id.to_string(),
        meta.revision,
        meta.kind.as_str(),
        meta.category_type.map(|c| c.as_str()),
        title,
        meta.kb_article_id,
        meta.creation_date,
        meta.publication_state,
        meta.eula_id.map(|e| e.to_string()),
        meta.secured_fragment,
        meta.default_language,
        xml,
        &digest[..],
        seq
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Step 3 of [`insert_revision`]: localized titles and descriptions.
fn insert_localized(tx: &Connection, rev_id: i64, meta: &UpdateMetadata) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR REPLACE INTO localized (rev_id, language, title, description) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for l in &meta.localized {
        st.execute(params![
            rev_id,
            l.language.to_ascii_lowercase(),
            l.title,
            l.description
        ])?;
    }
    Ok(())
}

/// Step 3 of [`insert_revision`]: prerequisites (each `AtLeastOne` a
/// group of its own), bundled and superseded updates.
fn insert_relationships(
    tx: &Connection,
    rev_id: i64,
    meta: &UpdateMetadata,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO relationships (rev_id, rel, grp, is_category, target_id, target_revision) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut grp = 0i64;
    for p in &meta.prerequisites {
        match p {
            Prerequisite::Required(t) => {
                st.execute(params![
                    rev_id,
                    "prerequisite",
                    0,
                    false,
                    t.to_string(),
                    None::<i32>
                ])?;
            }
            Prerequisite::AtLeastOne { is_category, ids } => {
                grp += 1;
                for t in ids {
                    st.execute(params![
                        rev_id,
                        "prerequisite",
                        grp,
                        is_category,
                        t.to_string(),
                        None::<i32>
                    ])?;
                }
            }
        }
    }
    for b in &meta.bundled {
        st.execute(params![
            rev_id,
            "bundled",
            0,
            false,
            b.id.to_string(),
            b.revision
        ])?;
    }
    for s in &meta.superseded {
        st.execute(params![
            rev_id,
            "superseded",
            0,
            false,
            s.to_string(),
            None::<i32>
        ])?;
    }
    Ok(())
}

/// Step 3 of [`insert_revision`]: the files, in document order.
fn insert_files(tx: &Connection, rev_id: i64, name: &str, meta: &UpdateMetadata) -> Result<()> {
    const DURING: &str = "adding a revision's files";
    let mut st = tx
        .prepare_cached(
            "INSERT INTO files (rev_id, ord, file_name, size, modified, sha1, sha256, patching_type, encrypted) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .during(DURING)?;
    for (ord, f) in meta.files.iter().enumerate() {
        let size =
            i64::try_from(f.size).map_err(|_| Error::invalid(name, "file size too large"))?;
        st.execute(params![
            rev_id,
            ord as i64,
            f.file_name,
            size,
            f.modified,
            &f.sha1[..],
            f.sha256.as_ref().map(|d| &d[..]),
            f.patching_type,
            f.is_encrypted
        ])
        .during(DURING)?;
    }
    Ok(())
}

/// Step 3 of [`insert_revision`]: the languages the revision is for.
fn insert_languages(tx: &Connection, rev_id: i64, meta: &UpdateMetadata) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO revision_languages (rev_id, language) VALUES (?1, ?2)",
    )?;
    for l in &meta.languages {
        st.execute(params![rev_id, l])?;
    }
    Ok(())
}

/// Whether the content table records the file with this SHA-1.
pub(crate) fn content_recorded(conn: &Connection, sha1: &[u8; 20]) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM content WHERE sha1 = ?1")?
        .query_row([&sha1[..]], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Records a content file that is in place under `content/`, with its
/// journal entry, inside the caller's transaction.
pub(crate) fn record_content(tx: &Connection, now: &str, f: &ContentFile) -> Result<()> {
    let seq = journal::record(
        tx,
        ChangeKind::ContentArrived,
        &crate::store::content::hex_upper(&f.sha1),
        now,
    )?;
    let size = i64::try_from(f.size).map_err(|_| Error::invalid("content size", "too large"))?;
    tx.prepare_cached(
        "INSERT INTO content (sha1, sha256, size, rel_path, seq) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![&f.sha1[..], &f.sha256[..], size, f.rel_path, seq])?;
    Ok(())
}

/// A GUID in canonical lower-case form (any case, with or without
/// braces), or None when `s` is not a GUID.
pub fn canonical_guid(s: &str) -> Option<String> {
    Uuid::parse_str(s.trim().trim_start_matches('{').trim_end_matches('}'))
        .ok()
        .map(|u| u.to_string())
}

/// Fills `revision_languages` for revisions stored before schema 4, from
/// their verbatim XML.
fn backfill_languages(tx: &Connection) -> Result<()> {
    let rows: Vec<(i64, Vec<u8>)> = {
        let mut st = tx.prepare("SELECT rev_id, xml FROM revisions")?;
        let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        it.collect::<rusqlite::Result<_>>()?
    };
    let mut st =
        tx.prepare("INSERT OR IGNORE INTO revision_languages (rev_id, language) VALUES (?1, ?2)")?;
    for (rev_id, xml) in rows {
        if let Ok(m) = metadata::parse(&xml) {
            for l in &m.languages {
                st.execute(params![rev_id, l])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store created at schema version 1 (as gapsync 0.1 made it).
    fn v1_store(dir: &Path) {
        fs::create_dir_all(dir.join(CONTENT_DIR)).unwrap();
        fs::create_dir_all(dir.join(STAGING_DIR)).unwrap();
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO server VALUES (1, '5b5c0b4e-0000-4000-8000-000000000001', 'old', 'autonomous', '2026-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }

    #[test]
    fn old_schemas_are_migrated_on_open() {
        for access in [Access::ReadOnly, Access::Shared, Access::Writer] {
            let tmp = tempfile::tempdir().unwrap();
            v1_store(tmp.path());
            let store = Store::open_inner(tmp.path(), access).unwrap();
            let v: i64 = store
                .conn()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            // Tables of later versions exist, data of earlier ones is kept.
            let n: i64 = store
                .conn()
                .query_row("SELECT COUNT(*) FROM trusted_keys", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0);
            assert_eq!(store.info().name, "old");
        }
    }

    /// A writer leaves the WAL file in place (readers who may not create
    /// it need it) but empty, so the next open does not re-read it.
    #[test]
    fn a_writer_leaves_an_empty_wal_behind() {
        let (tmp, s) = crate::seed::generate::test_store(200);
        let root = tmp.path().join("s");
        let wal = root.join(format!("{DB_FILE}-wal"));
        assert!(fs::metadata(&wal).unwrap().len() > 0);
        drop(s);
        assert_eq!(fs::metadata(&wal).unwrap().len(), 0);
        assert!(root.join(format!("{DB_FILE}-shm")).exists());
        // A reader's close leaves it alone, and the data is all there.
        let r = Store::open_read_only(&root).unwrap();
        assert!(r.status().unwrap().updates.total >= 200);
    }

    #[test]
    fn canonical_guids() {
        assert_eq!(
            canonical_guid("A0A08746-4DBE-4A37-9ADF-9E7652C0B421").as_deref(),
            Some(ALL_COMPUTERS.0)
        );
        assert_eq!(canonical_guid("nope"), None);
    }
}
