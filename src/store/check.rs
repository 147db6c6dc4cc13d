//! `check`: the store's self-examination. Each rule is one function; each
//! finding names what is wrong. `repair` fixes only what is safe to fix
//! (removing staging leftovers), and says what it did.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{DbContext, Error, Result};
use crate::model::units::count;
use crate::progress::Progress;
use crate::store::content::{self, ContentFile};
use crate::store::{CONTENT_DIR, STAGING_DIR, Store};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Problems: the store is not in the state its invariants promise.
    pub problems: Vec<Finding>,
    /// Harmless observations (e.g. verified content files without a row,
    /// left by an interrupted add or import and adopted by the next one).
    pub notes: Vec<Finding>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
    pub revisions_checked: u64,
    pub content_files_checked: u64,
    pub content_bytes_checked: u64,
}

impl CheckReport {
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, rule: &'static str, detail: impl Into<String>) {
        self.problems.push(Finding {
            rule,
            detail: detail.into(),
        });
    }
}

/// How many recorded checks `record` keeps.
const KEEP_CHECK_RUNS: i64 = 20;

/// A finding as recorded in the store and read back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordedFinding {
    pub rule: String,
    pub detail: String,
}

/// A completed check as `record` kept it (the console's overview).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordedCheck {
    pub at: String,
    pub repair: bool,
    pub revisions_checked: u64,
    pub content_files_checked: u64,
    pub content_bytes_checked: u64,
    pub problems: Vec<RecordedFinding>,
    pub notes: Vec<RecordedFinding>,
}

/// Records a completed check (its findings, what it examined, when), so
/// that the store shows it later without re-hashing every content file;
/// keeps the last `KEEP_CHECK_RUNS`. A bookkeeping write: it needs write
/// access to the database, not the writer lock (`Store::open` suffices).
pub fn record(store: &Store, r: &CheckReport, repair: bool) -> Result<()> {
    let findings = |v: &[Finding]| {
        serde_json::to_string(v).map_err(|e| Error::invalid("check findings", e.to_string()))
    };
    let (problems, notes) = (findings(&r.problems)?, findings(&r.notes)?);
    let write = || -> rusqlite::Result<()> {
        let c = store.conn();
        c.execute(
            "INSERT INTO check_runs (at, repair, revisions, content_files, content_bytes, problems, notes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                crate::store::now_rfc3339(),
                repair,
                r.revisions_checked as i64,
                r.content_files_checked as i64,
                r.content_bytes_checked as i64,
                problems,
                notes
            ],
        )?;
        c.execute(
            "DELETE FROM check_runs WHERE id <= (SELECT MAX(id) FROM check_runs) - ?1",
            [KEEP_CHECK_RUNS],
        )?;
        Ok(())
    };
    write().during("recording the check")
}

/// The last check `record` kept, if any.
pub fn last_recorded(store: &Store) -> Result<Option<RecordedCheck>> {
    let row = store
        .conn()
        .query_row(
            "SELECT at, repair, revisions, content_files, content_bytes, problems, notes \
             FROM check_runs ORDER BY id DESC LIMIT 1",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, bool>(1)?,
                    [row.get::<_, i64>(2)?, row.get(3)?, row.get(4)?],
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                ))
            },
        )
        .optional()
        .during("reading the last check")?;
    let Some((at, repair, [revisions, files, bytes], problems, notes)) = row else {
        return Ok(None);
    };
    let findings = |json: &str| -> Result<Vec<RecordedFinding>> {
        serde_json::from_str(json)
            .map_err(|e| Error::Corrupt(format!("check run of {at}: findings: {e}")))
    };
    Ok(Some(RecordedCheck {
        repair,
        revisions_checked: revisions.max(0) as u64,
        content_files_checked: files.max(0) as u64,
        content_bytes_checked: bytes.max(0) as u64,
        problems: findings(&problems)?,
        notes: findings(&notes)?,
        at,
    }))
}

pub fn check(store: &Store, repair: bool, progress: &dyn Progress) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    rule_sqlite_integrity(store, &mut r)?;
    rule_journal_consistent(store, &mut r)?;
    rule_current_revision_is_newest(store, &mut r)?;
    rule_revisions_parse(store, &mut r)?;
    rule_content_files_intact(store, &mut r, progress)?;
    for p in store.staging_cleaned() {
        r.repaired
            .push(format!("removed staging leftover {}", p.display()));
    }
    rule_no_staging_leftovers(store, &mut r, repair)?;
    rule_import_ledger_chains(store, &mut r)?;
    Ok(r)
}

/// Rule: SQLite's own integrity and foreign-key checks pass.
fn rule_sqlite_integrity(store: &Store, r: &mut CheckReport) -> Result<()> {
    let mut st = store.conn().prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = st
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows != ["ok"] {
        r.problem("sqlite-integrity", rows.join("; "));
    }
    let mut st = store.conn().prepare("PRAGMA foreign_key_check")?;
    let n = st.query_map([], |_| Ok(()))?.count();
    if n > 0 {
        r.problem(
            "sqlite-foreign-keys",
            format!("{} reference missing rows", count(n as u64, "row")),
        );
    }
    Ok(())
}

/// Rule: every revision, content file and deployment change has its
/// journal entry, and no entry is ahead of the journal's head.
fn rule_journal_consistent(store: &Store, r: &mut CheckReport) -> Result<()> {
    // (rule, rows that break it, what a row is, what is wrong with it)
    const CHECKS: [(&str, &str, &str, &str); 4] = [
        (
            "journal-revisions",
            "SELECT COUNT(*) FROM revisions v LEFT JOIN journal j ON j.seq = v.seq \
             WHERE j.seq IS NULL OR j.kind <> 'revision_added' OR j.subject <> v.update_id || '/' || v.revision",
            "revision",
            "without their journal entry",
        ),
        (
            "journal-content",
            "SELECT COUNT(*) FROM content k LEFT JOIN journal j ON j.seq = k.seq \
             WHERE j.seq IS NULL OR j.kind <> 'content_arrived' OR j.subject <> upper(hex(k.sha1))",
            "content file",
            "without their journal entry",
        ),
        (
            "journal-deployments",
            "SELECT COUNT(*) FROM deployments d LEFT JOIN journal j ON j.seq = d.last_change_seq \
             WHERE j.seq IS NULL OR j.kind NOT LIKE 'deployment_%' OR j.subject <> d.deployment_id",
            "deployment",
            "whose last change is not journaled",
        ),
        (
            "journal-kinds",
            "SELECT COUNT(*) FROM journal WHERE kind NOT IN ('revision_added','group_added','group_removed',\
             'deployment_created','deployment_changed','deployment_removed','update_declined','content_arrived')",
            "journal entry",
            "of unknown kind",
        ),
    ];
    for (rule, sql, noun, wrong) in CHECKS {
        let n: i64 = store.conn().query_row(sql, [], |row| row.get(0))?;
        if n > 0 {
            r.problem(rule, format!("{} {wrong}", count(n as u64, noun)));
        }
    }
    Ok(())
}

/// Rule: each update's current revision is its newest stored revision.
fn rule_current_revision_is_newest(store: &Store, r: &mut CheckReport) -> Result<()> {
    let n: i64 = store.conn().query_row(
        "SELECT COUNT(*) FROM updates u JOIN revisions c ON c.rev_id = u.current_rev \
         WHERE c.update_id <> u.update_id OR c.revision <> (SELECT MAX(revision) FROM revisions v WHERE v.update_id = u.update_id)",
        [],
        |row| row.get(0),
    )?;
    if n > 0 {
        r.problem(
            "current-revision",
            format!(
                "{} whose current revision is not the newest",
                count(n as u64, "update")
            ),
        );
    }
    Ok(())
}

/// Rule: every stored XML still parses and carries the identity it is
/// stored under, and its digest matches the recorded one.
fn rule_revisions_parse(store: &Store, r: &mut CheckReport) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut st = store
        .conn()
        .prepare("SELECT rev_id, update_id, revision, xml, xml_sha256 FROM revisions")?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let rev_id: i64 = row.get(0)?;
        let id: String = row.get(1)?;
        let rev: i32 = row.get(2)?;
        let xml = row
            .get_ref(3)?
            .as_blob()
            .map_err(|e| Error::Corrupt(format!("revision {rev_id} ({id}/{rev}): {e}")))?;
        let digest: Vec<u8> = row.get(4)?;
        r.revisions_checked += 1;
        if Sha256::digest(xml).as_slice() != digest.as_slice() {
            r.problem(
                "revision-digest",
                format!("revision {rev_id} ({id}/{rev}): XML does not match its recorded SHA-256"),
            );
            continue;
        }
        match crate::model::metadata::parse(xml) {
            Ok(m) if m.id.to_string() == id && m.revision == rev => {}
            Ok(m) => r.problem(
                "revision-identity",
                format!(
                    "revision {rev_id} is stored as {id}/{rev} but holds {}/{}",
                    m.id, m.revision
                ),
            ),
            Err(e) => r.problem(
                "revision-parse",
                format!("revision {rev_id} ({id}/{rev}): {e}"),
            ),
        }
    }
    Ok(())
}

/// Rule: every content file the store records is present with its size,
/// SHA-1 and SHA-256; files under content/ without a row are noted when
/// they verify (their name is their SHA-1) and are problems otherwise.
fn rule_content_files_intact(
    store: &Store,
    r: &mut CheckReport,
    progress: &dyn Progress,
) -> Result<()> {
    let files: Vec<ContentFile> = {
        let mut st = store
            .conn()
            .prepare("SELECT sha1, sha256, size, rel_path FROM content ORDER BY rel_path")?;
        let rows = st.query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (a, b, size, rel_path) = row?;
            match (a.try_into(), b.try_into(), u64::try_from(size)) {
                (Ok(sha1), Ok(sha256), Ok(size)) => out.push(ContentFile {
                    sha1,
                    sha256,
                    size,
                    rel_path,
                }),
                _ => r.problem(
                    "content-row",
                    format!("content row {rel_path} is malformed"),
                ),
            }
        }
        out
    };
    let total: u64 = files.iter().map(|f| f.size).sum();
    progress.phase("check", Some(total), "bytes");
    let mut known: BTreeSet<String> = BTreeSet::new();
    for f in &files {
        known.insert(f.rel_path.clone());
        let path = store.content().path_of(&f.rel_path);
        if !path.is_file() {
            r.problem(
                "content-missing",
                format!("{CONTENT_DIR}/{} is missing", f.rel_path),
            );
            continue;
        }
        match store.content().verify_stored(f) {
            Ok(()) => {}
            Err(e) => r.problem("content-corrupt", e.to_string()),
        }
        r.content_files_checked += 1;
        r.content_bytes_checked += f.size;
        progress.advance(f.size);
    }
    progress.finish();
    let root = store.root().join(CONTENT_DIR);
    for e in walkdir::WalkDir::new(&root).min_depth(1) {
        let e = e.map_err(|e| Error::io(&root, std::io::Error::other(e.to_string())))?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(&root)
            .unwrap_or(e.path())
            .to_string_lossy()
            .replace('\\', "/");
        if known.contains(&rel) {
            continue;
        }
        let (sha1, _, _) = content::hash_file(e.path())?;
        let name_ok = rel
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(&content::hex_upper(&sha1)));
        if name_ok {
            r.notes.push(Finding { rule: "content-orphan", detail: format!("{CONTENT_DIR}/{rel} is complete but not recorded (left by an interrupted add or import; the next one adopts it)") });
        } else {
            r.problem("content-stray", format!("{CONTENT_DIR}/{rel} is not a recorded content file and its bytes do not match its name"));
        }
    }
    Ok(())
}

/// Rule: leftovers in staging/ are noted (and removed with `--repair`). (Writers
/// hold the lock; a reader cannot tell live staging from leftovers, so
/// this runs only when the lock is free, which `check` ensures by taking
/// it for `--repair`.)
fn rule_no_staging_leftovers(store: &Store, r: &mut CheckReport, repair: bool) -> Result<()> {
    let dir = store.root().join(STAGING_DIR);
    let leftovers = staging_files(&dir)?;
    if leftovers.is_empty() {
        return Ok(());
    }
    if repair {
        for p in &leftovers {
            fs::remove_file(p).map_err(|e| Error::io(p, e))?;
            r.repaired
                .push(format!("removed staging leftover {}", p.display()));
        }
    } else {
        // Leftovers of an interrupted writer are not corruption: nothing
        // refers to them, and the next writer (or --repair) removes them.
        for p in leftovers {
            r.notes.push(Finding {
                rule: "staging-leftover",
                detail: format!("{} (left by an interrupted writer; the next writer or check --repair removes it)", p.display()),
            });
        }
    }
    Ok(())
}

pub(crate) fn staging_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    if dir.is_dir() {
        for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Rule: per source, applied bundles form a chain: each incremental link
/// starts at the previous link's to-anchor (its seq is higher; it is not
/// always the next one: a bundle made by `export --since` may replace lost
/// links that ended at the same anchor).
fn rule_import_ledger_chains(store: &Store, r: &mut CheckReport) -> Result<()> {
    let mut st = store
        .conn()
        .prepare("SELECT source_server_id, seq, full, from_anchor, to_anchor FROM import_ledger ORDER BY source_server_id, seq")?;
    let rows = st.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, bool>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, String>(4)?,
        ))
    })?;
    let mut prev: Option<(String, i64, String)> = None;
    for row in rows {
        let (src, seq, full, from, to) = row?;
        if let Some((psrc, pseq, pto)) = &prev
            && *psrc == src
            && !full
            && (seq <= *pseq || from.as_deref() != Some(pto.as_str()))
        {
            r.problem(
                "import-ledger",
                format!("bundle seq {seq} from {src} does not continue seq {pseq}"),
            );
        }
        if prev.as_ref().is_none_or(|(p, _, _)| *p != src) && !full {
            r.problem(
                "import-ledger",
                format!("the first bundle recorded from {src} (seq {seq}) is not a full one"),
            );
        }
        prev = Some((src, seq, to));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Mode;

    fn report(problem: Option<&'static str>, files: u64) -> CheckReport {
        let mut r = CheckReport {
            revisions_checked: 3,
            content_files_checked: files,
            content_bytes_checked: files * 10,
            ..CheckReport::default()
        };
        if let Some(rule) = problem {
            r.problem(rule, format!("{rule}: one bad file"));
        }
        r.notes.push(Finding {
            rule: "content-orphan",
            detail: "content/AB/AB.cab".into(),
        });
        r
    }

    #[test]
    fn the_last_recorded_check_is_read_back_and_old_ones_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::init(&tmp.path().join("s"), "t", Mode::Autonomous).unwrap();
        assert_eq!(last_recorded(&store).unwrap(), None);
        for i in 0..(KEEP_CHECK_RUNS as u64 + 5) {
            record(&store, &report(None, i), false).unwrap();
        }
        record(&store, &report(Some("content-corrupt"), 7), true).unwrap();
        let last = last_recorded(&store).unwrap().expect("a recorded check");
        assert!(last.repair);
        assert_eq!(
            (
                last.revisions_checked,
                last.content_files_checked,
                last.content_bytes_checked
            ),
            (3, 7, 70)
        );
        assert_eq!(
            last.problems,
            vec![RecordedFinding {
                rule: "content-corrupt".into(),
                detail: "content-corrupt: one bad file".into()
            }]
        );
        assert_eq!(last.notes.len(), 1);
        assert_eq!(last.notes[0].rule, "content-orphan");
        let kept: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM check_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, KEEP_CHECK_RUNS);
    }

    #[test]
    fn a_damaged_record_is_reported_not_panicked_on() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::init(&tmp.path().join("s"), "t", Mode::Autonomous).unwrap();
        record(&store, &report(None, 1), false).unwrap();
        store
            .conn()
            .execute("UPDATE check_runs SET problems = '[{'", [])
            .unwrap();
        let e = last_recorded(&store).unwrap_err().to_string();
        assert!(e.contains("check run of") && e.contains("findings"), "{e}");
    }
}
