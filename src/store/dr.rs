//! The SQL of disaster-recovery snapshots (`airgap::dr`): the consistent
//! copy of the database (`VACUUM INTO`: one read transaction, so writers
//! and readers go on), what is read back from that copy (identity, journal
//! head, the content it records, counts), and what a restored database is
//! read for before it is moved into place.

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use super::{Access, SCHEMA_VERSION, Store};
use crate::airgap::format::Counts;
use crate::error::{DbContext, Error, Result};
use crate::store::snapshot::ContentToSend;

/// What the copy of the database says (one state: the copy's).
#[derive(Debug, Clone)]
pub struct CopyFacts {
    pub server_id: String,
    pub name: String,
    pub schema_version: i64,
    /// The journal's newest sequence number.
    pub head: i64,
    /// The content recorded after the `after` given to [`read_copy`] (all
    /// without one), by path.
    pub content: Vec<ContentToSend>,
    /// Every content file the copy records, and their bytes.
    pub content_files: u64,
    pub content_bytes: u64,
    /// [`content_set_digest`] of every content file the copy records.
    pub content_set_sha256: String,
    /// [`content_set_digest`] of the content recorded up to `after`.
    pub content_set_sha256_upto: Option<String>,
    pub computers: u64,
    /// Revisions, groups, deployments, declines; the content counts are
    /// left to the caller.
    pub counts: Counts,
}

/// The digest of a set of content files (docs/bundle-format.md, "Snapshot
/// bundles"): SHA-256 over their SHA-1s in upper-case hex, sorted, each
/// followed by a line feed.
pub fn content_set_digest<'a>(sha1s_sorted: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for s in sha1s_sorted {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

impl Store {
    /// Writes a consistent copy of the database to `to` (a path that does
    /// not exist) with `VACUUM INTO`: it reads in one read transaction, so
    /// the copy is one state of the store, and in WAL mode it blocks no
    /// writer and no reader. Works on a read-only handle.
    pub fn copy_database(&self, to: &Path) -> Result<()> {
        let target = to.to_str().ok_or_else(|| {
            Error::invalid(
                to.display().to_string(),
                "the snapshot's temporary database path is not valid UTF-8",
            )
        })?;
        self.conn()
            .execute("VACUUM INTO ?1", [target])
            .during("copying the database (VACUUM INTO)")?;
        Ok(())
    }
}

/// Reads the facts of the database copy at `path` (made by
/// [`Store::copy_database`]), after switching it to rollback-journal mode
/// (so it is one file). `after`: the journal sequence number whose content
/// an incremental snapshot's base holds.
pub fn read_copy(path: &Path, after: Option<i64>) -> Result<CopyFacts> {
    const DURING: &str = "reading the snapshot's database copy";
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .during(DURING)?;
    conn.pragma_update(None, "journal_mode", "DELETE")
        .during(DURING)?;
    let (server_id, name): (String, String) = conn
        .query_row("SELECT server_id, name FROM server", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .during(DURING)?;
    let schema_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .during(DURING)?;
    let one = |sql: &str| -> Result<u64> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .during(DURING)
            .map(|n| n.max(0) as u64)
    };
    let head = one("SELECT COALESCE(MAX(seq), 0) FROM journal")? as i64;
    let counts = Counts {
        revisions: one("SELECT COUNT(*) FROM revisions")?,
        groups: one("SELECT COUNT(*) FROM groups")?,
        removed_groups: one("SELECT COUNT(*) FROM removed_groups")?,
        deployments: one("SELECT COUNT(*) FROM deployments WHERE removed = 0")?,
        dead_deployments: one("SELECT COUNT(*) FROM deployments WHERE removed <> 0")?,
        declined: one("SELECT COUNT(*) FROM updates WHERE declined <> 0")?,
        content_missing: one(
            "SELECT COUNT(DISTINCT f.sha1) FROM files f WHERE NOT EXISTS (SELECT 1 FROM content c WHERE c.sha1 = f.sha1)",
        )?,
        ..Counts::default()
    };
    let computers = one("SELECT COUNT(*) FROM computers")?;
    // The content set, in SHA-1 order (a BLOB sorts as its bytes, as the
    // upper-case hex does).
    let mut all: Vec<(String, i64, u64)> = Vec::new();
    {
        let mut st = conn
            .prepare("SELECT hex(sha1), seq, size FROM content ORDER BY sha1")
            .during(DURING)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .during(DURING)?;
        for row in rows {
            let (sha1, seq, size) = row.during(DURING)?;
            all.push((sha1, seq, size.max(0) as u64));
        }
    }
    let content_set_sha256 = content_set_digest(all.iter().map(|(s, _, _)| s.as_str()));
    let content_set_sha256_upto = after.map(|a| {
        content_set_digest(
            all.iter()
                .filter(|(_, seq, _)| *seq <= a)
                .map(|(s, _, _)| s.as_str()),
        )
    });
    let content_files = all.len() as u64;
    let content_bytes = all.iter().map(|(_, _, n)| n).sum();
    drop(all);
    let mut content = Vec::new();
    {
        let mut st = conn
            .prepare(
                "SELECT c.sha1, c.rel_path, c.size, c.sha256, \
                 EXISTS (SELECT 1 FROM files f WHERE f.sha1 = c.sha1 AND f.sha256 IS NOT NULL) \
                 FROM content c WHERE c.seq > ?1 ORDER BY c.rel_path",
            )
            .during(DURING)?;
        let rows = st
            .query_map([after.unwrap_or(i64::MIN)], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .during(DURING)?;
        for row in rows {
            let (sha1, rel_path, size, sha256, metadata_sha256) = row.during(DURING)?;
            let bad = || Error::Corrupt(format!("content row {rel_path} is corrupt"));
            content.push(ContentToSend {
                sha1: sha1.try_into().map_err(|_| bad())?,
                rel_path: rel_path.clone(),
                size: u64::try_from(size).map_err(|_| bad())?,
                sha256: sha256.try_into().map_err(|_| bad())?,
                metadata_sha256,
            });
        }
    }
    Ok(CopyFacts {
        server_id,
        name,
        schema_version,
        head,
        content,
        content_files,
        content_bytes,
        content_set_sha256,
        content_set_sha256_upto,
        computers,
        counts,
    })
}

/// Rule (as `init`'s): a store is not restored inside another store's
/// folder.
pub fn check_restore_target(dir: &Path) -> Result<()> {
    super::check_not_nested(dir)
}

/// Takes the writer lock of a folder being built into a store (a restore's
/// temporary folder): held while it is built, so a second restore knows it
/// is not debris.
pub fn lock_folder(dir: &Path) -> Result<File> {
    super::acquire_lock(dir)
}

/// A content row of a restored database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredContent {
    /// Upper-case hex.
    pub sha1: String,
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
    pub rel_path: String,
}

/// What a restored database says about itself.
#[derive(Debug, Clone)]
pub struct RestoredFacts {
    pub server_id: String,
    pub name: String,
    pub head: i64,
    pub content: Vec<RestoredContent>,
}

/// Opens the database just restored into `dir` as a writer opens a store
/// (WAL mode, its files kept; a database of an older schema upgraded),
/// without the writer lock (its caller holds the folder's), and reads its
/// identity, journal head and content rows.
pub fn open_restored(dir: &Path) -> Result<RestoredFacts> {
    const DURING: &str = "reading the restored database";
    let mut conn = super::connect(dir, Access::Writer)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            path: dir.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            why: "schema version 0".into(),
        });
    }
    if version < SCHEMA_VERSION {
        super::migrate(&mut conn, version)?;
    }
    let (server_id, name): (String, String) = conn
        .query_row("SELECT server_id, name FROM server", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .during(DURING)?;
    let head: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
            r.get(0)
        })
        .during(DURING)?;
    let mut content = Vec::new();
    {
        let mut st = conn
            .prepare(
                "SELECT hex(sha1), lower(hex(sha256)), size, rel_path FROM content ORDER BY sha1",
            )
            .during(DURING)?;
        let rows = st
            .query_map([], |r| {
                Ok(RestoredContent {
                    sha1: r.get(0)?,
                    sha256: r.get(1)?,
                    size: r.get::<_, i64>(2)?.max(0) as u64,
                    rel_path: r.get(3)?,
                })
            })
            .during(DURING)?;
        for row in rows {
            content.push(row.during(DURING)?);
        }
    }
    Ok(RestoredFacts {
        server_id,
        name,
        head,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Mode;

    #[test]
    fn the_copy_is_the_store_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let store = Store::init(&dir, "s", Mode::Autonomous).unwrap();
        let id = store.info().server_id.to_string();
        drop(store);
        // A read-only handle copies (the snapshot takes no lock).
        let reader = Store::open_read_only(&dir).unwrap();
        let copy = tmp.path().join("copy.db");
        reader.copy_database(&copy).unwrap();
        // The target must be new.
        assert!(reader.copy_database(&copy).is_err());
        let facts = read_copy(&copy, Some(0)).unwrap();
        assert_eq!(facts.server_id, id);
        assert_eq!(facts.name, "s");
        assert_eq!(facts.schema_version, SCHEMA_VERSION);
        assert_eq!(facts.head, 0);
        assert!(facts.content.is_empty());
        assert_eq!(facts.counts.groups, 2, "the built-in groups");
        let empty = content_set_digest(std::iter::empty());
        assert_eq!(facts.content_set_sha256, empty);
        assert_eq!(
            facts.content_set_sha256_upto.as_deref(),
            Some(empty.as_str())
        );
        // Restored into a folder of its own, it opens as that store.
        let into = tmp.path().join("r");
        std::fs::create_dir_all(&into).unwrap();
        std::fs::copy(&copy, into.join(super::super::DB_FILE)).unwrap();
        let r = open_restored(&into).unwrap();
        assert_eq!((r.server_id.as_str(), r.head), (id.as_str(), 0));
        assert!(r.content.is_empty());
        drop(reader);
        Store::open_writer(&into).unwrap();
    }
}
