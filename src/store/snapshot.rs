//! The consistent read an export works in (`airgap::export`): one read
//! transaction, so every query sees the same state while the bundle is
//! written. It reads a journal range (everything, or what changed after an
//! anchor) within a scope (`store::scope`): the replicated state, the
//! revisions, the queued trust statements and the content still to send to
//! a destination, with each content file's path in the content store.

use std::path::PathBuf;

use rusqlite::{Transaction, params};

use crate::error::{DbContext, Error, Result};
use crate::model::state::{GroupRecord, State};
use crate::store::content::ContentStore;
use crate::store::sites::ReceiptPlan;
use crate::store::state::deployment_from_row;
use crate::store::trust::QueuedRow;
use crate::store::{Store, scope};

/// The journal entries an export carries: after `after` (an incremental
/// bundle) or all (a full one), up to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRange {
    pub after: Option<i64>,
    pub to: i64,
}

/// Which updates' content a bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentScope {
    /// Every update in scope.
    All,
    /// Updates in scope with a live Install deployment, and the updates
    /// their current revision bundles.
    Approved,
}

/// A content file to send, as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentToSend {
    pub sha1: [u8; 20],
    pub rel_path: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Whether update metadata gives the file's SHA-256 (the store's
    /// `sha256` is then that one); otherwise only its SHA-1 is Microsoft's
    /// and the SHA-256 was computed when the file arrived.
    pub metadata_sha256: bool,
}

/// How the content of a bundle was chosen: new (by the export ledger),
/// sent again because a site reported it missing or corrupt, skipped
/// because every site the destination reaches holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContentPlan {
    pub new_files: u64,
    pub new_bytes: u64,
    pub resent_files: u64,
    pub resent_bytes: u64,
    pub skipped_files: u64,
    pub skipped_bytes: u64,
}

/// What [`ExportSnapshot::for_each_revision`] passes each revision to:
/// its update id, revision number and verbatim XML.
pub type RevisionSink<'a> = dyn FnMut(&str, i32, &[u8]) -> Result<()> + 'a;

/// An export's read transaction (see the module documentation); dropped,
/// it ends (there is nothing to commit).
pub struct ExportSnapshot<'s> {
    tx: Transaction<'s>,
    content: &'s ContentStore,
}

impl Store {
    /// Begins an export's read snapshot.
    pub fn export_snapshot(&mut self) -> Result<ExportSnapshot<'_>> {
        let tx = self
            .conn
            .transaction()
            .during("beginning the export's read snapshot")?;
        Ok(ExportSnapshot {
            tx,
            content: &self.content,
        })
    }
}

impl ExportSnapshot<'_> {
    /// The newest journal sequence number.
    pub fn head(&self) -> Result<i64> {
        self.tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
                r.get(0)
            })
            .during("reading the journal")
    }

    /// Whether the journal holds an entry after `seq`.
    pub fn changed_after(&self, seq: i64) -> Result<bool> {
        self.tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM journal WHERE seq > ?1)",
                [seq],
                |r| r.get(0),
            )
            .during("reading the journal")
    }

    /// The queued trust statements after `after`, oldest first.
    pub fn statements_after(&self, after: i64) -> Result<Vec<QueuedRow>> {
        crate::store::trust::statements_after(&self.tx, after)
    }

    /// Selects the updates the filters put in scope ([`scope::fill_scope`]);
    /// every later read is within it.
    pub fn select_scope(
        &self,
        products: &[String],
        classifications: &[String],
        languages: &[String],
    ) -> Result<()> {
        scope::fill_scope(&self.tx, products, classifications, languages)
    }

    /// The replicated state of the range, within the scope: groups (not
    /// the built-in ones), removed groups (incremental only), deployments
    /// live and dead, declined updates.
    pub fn state(&self, range: JournalRange) -> Result<State> {
        let read = || -> rusqlite::Result<State> {
            Ok(State {
                groups: self.groups(range)?,
                removed_groups: self.removed_groups(range)?,
                deployments: self.deployments(range)?,
                declined: self.declined(range)?,
            })
        };
        read().during("reading the replicated state")
    }

    fn groups(&self, range: JournalRange) -> rusqlite::Result<Vec<GroupRecord>> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok(GroupRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                parent_id: r.get(2)?,
            })
        };
        match range.after {
            None => self
                .tx
                .prepare(
                    "SELECT group_id, name, parent_id FROM groups WHERE builtin = 0 ORDER BY seq",
                )?
                .query_map([], row)?
                .collect(),
            Some(after) => self
                .tx
                .prepare(
                    "SELECT group_id, name, parent_id FROM groups WHERE builtin = 0 AND seq > ?1 AND seq <= ?2 ORDER BY seq",
                )?
                .query_map(params![after, range.to], row)?
                .collect(),
        }
    }

    fn removed_groups(&self, range: JournalRange) -> rusqlite::Result<Vec<String>> {
        let Some(after) = range.after else {
            return Ok(Vec::new());
        };
        self.tx
            .prepare(
                "SELECT subject FROM journal WHERE kind = 'group_removed' AND seq > ?1 AND seq <= ?2 ORDER BY seq",
            )?
            .query_map(params![after, range.to], |r| r.get(0))?
            .collect()
    }

    fn deployments(
        &self,
        range: JournalRange,
    ) -> rusqlite::Result<Vec<crate::model::state::DeploymentRecord>> {
        const COLUMNS: &str = "SELECT d.deployment_id, d.update_id, d.revision, d.group_id, d.action, d.admin_name, \
             d.deadline, d.go_live, d.download_priority, d.is_assigned, d.removed \
             FROM deployments d JOIN temp.scope s ON s.update_id = d.update_id";
        match range.after {
            None => self
                .tx
                .prepare(&format!("{COLUMNS} ORDER BY d.last_change_seq"))?
                .query_map([], deployment_from_row)?
                .collect(),
            Some(after) => self
                .tx
                .prepare(&format!(
                    "{COLUMNS} WHERE d.last_change_seq > ?1 AND d.last_change_seq <= ?2 ORDER BY d.last_change_seq"
                ))?
                .query_map(params![after, range.to], deployment_from_row)?
                .collect(),
        }
    }

    fn declined(&self, range: JournalRange) -> rusqlite::Result<Vec<String>> {
        match range.after {
            None => self
                .tx
                .prepare(
                    "SELECT u.update_id FROM updates u JOIN temp.scope s ON s.update_id = u.update_id \
                     WHERE u.declined = 1 ORDER BY u.update_id",
                )?
                .query_map([], |r| r.get(0))?
                .collect(),
            Some(after) => self
                .tx
                .prepare(
                    "SELECT j.subject FROM journal j JOIN temp.scope s ON s.update_id = j.subject \
                     WHERE j.kind = 'update_declined' AND j.seq > ?1 AND j.seq <= ?2 ORDER BY j.seq",
                )?
                .query_map(params![after, range.to], |r| r.get(0))?
                .collect(),
        }
    }

    /// How many revisions of the range are in scope.
    pub fn revision_count(&self, range: JournalRange) -> Result<u64> {
        let n: i64 = match range.after {
            None => self.tx.query_row(
                "SELECT COUNT(*) FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id",
                [],
                |r| r.get(0),
            ),
            Some(after) => self.tx.query_row(
                "SELECT COUNT(*) FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id \
                 WHERE r.seq > ?1 AND r.seq <= ?2",
                params![after, range.to],
                |r| r.get(0),
            ),
        }
        .during("counting the revisions to export")?;
        Ok(n.max(0) as u64)
    }

    /// Passes each revision of the range in scope to `each` (update id,
    /// revision number, verbatim XML): all in `rev_id` order, or the
    /// range's in journal order.
    pub fn for_each_revision(
        &self,
        range: JournalRange,
        each: &mut RevisionSink<'_>,
    ) -> Result<()> {
        const DURING: &str = "reading the revisions to export";
        let sql = match range.after {
            None => {
                "SELECT r.update_id, r.revision, r.xml FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id \
                 ORDER BY r.rev_id"
            }
            Some(_) => {
                "SELECT r.update_id, r.revision, r.xml FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id \
                 WHERE r.seq > ?1 AND r.seq <= ?2 ORDER BY r.seq"
            }
        };
        let mut st = self.tx.prepare(sql).during(DURING)?;
        let mut rows = match range.after {
            None => st.query([]),
            Some(after) => st.query(params![after, range.to]),
        }
        .during(DURING)?;
        while let Some(row) = rows.next().during(DURING)? {
            let id: String = row.get(0).during(DURING)?;
            let rev: i32 = row.get(1).during(DURING)?;
            let xml = row
                .get_ref(2)
                .during(DURING)?
                .as_blob()
                .map_err(|e| Error::Corrupt(format!("revision {id}/{rev}: {e}")))?;
            each(&id, rev, xml)?;
        }
        Ok(())
    }

    /// The content files to send to `destination`, in a stable order, and
    /// how many files the scope references that the store does not hold
    /// (not downloaded yet). Candidates are everything for a full bundle;
    /// for an incremental one only what the range touches (content arrived,
    /// revisions added, approvals changed), so the work is proportional to
    /// the change. Kept: candidates whose update qualifies, that the store
    /// holds, and that were not sent to `destination` before — unless
    /// `resend` (after `--since`, content of the replaced links goes
    /// again); a full bundle starts a new chain and carries all of it.
    ///
    /// With the `receipt` of the sites the destination reaches
    /// (`store::sites`), whatever the export ledger says: content they all
    /// hold is skipped, and content any of them reported missing or corrupt
    /// is a candidate and sent again (if it qualifies and the store holds
    /// it). The plan counts each kind.
    pub fn content_to_send(
        &self,
        destination: &str,
        scope: ContentScope,
        range: JournalRange,
        resend: bool,
        receipt: Option<&ReceiptPlan>,
    ) -> Result<(Vec<ContentToSend>, u64, ContentPlan)> {
        const DURING: &str = "planning the content to send";
        self.select_content_updates(scope).during(DURING)?;
        self.select_candidates(range).during(DURING)?;
        self.select_receipt(receipt).during(DURING)?;
        let mut st = self
            .tx
            .prepare(
                "SELECT c.sha1, c.rel_path, c.size, c.sha256, \
                 EXISTS (SELECT 1 FROM files f2 WHERE f2.sha1 = c.sha1 AND f2.sha256 IS NOT NULL), \
                 (?3 OR NOT EXISTS (SELECT 1 FROM export_sent_content s WHERE s.destination = ?1 AND s.sha1 = c.sha1)), \
                 (SELECT held FROM temp.receipt x WHERE x.sha1 = c.sha1) \
                 FROM temp.cand k JOIN content c ON c.sha1 = k.sha1 \
                 WHERE c.seq <= ?2 \
                 AND EXISTS (SELECT 1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id JOIN temp.content_updates u ON u.update_id = r.update_id WHERE f.sha1 = c.sha1) \
                 ORDER BY c.rel_path",
            )
            .during(DURING)?;
        let full = range.after.is_none() || resend;
        let rows = st
            .query_map(params![destination, range.to, full], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, Option<bool>>(6)?,
                ))
            })
            .during(DURING)?;
        let mut out = Vec::new();
        let mut plan = ContentPlan::default();
        for row in rows {
            let (sha1, rel_path, size, sha256, metadata_sha256, unsent, receipt) =
                row.during(DURING)?;
            let bad = || Error::Corrupt(format!("content row {rel_path} is corrupt"));
            let file = ContentToSend {
                sha1: sha1.try_into().map_err(|_| bad())?,
                rel_path: rel_path.clone(),
                size: u64::try_from(size).map_err(|_| bad())?,
                sha256: sha256.try_into().map_err(|_| bad())?,
                metadata_sha256,
            };
            match receipt {
                Some(true) => {
                    if unsent {
                        plan.skipped_files += 1;
                        plan.skipped_bytes += file.size;
                    }
                    continue;
                }
                Some(false) => {
                    plan.resent_files += 1;
                    plan.resent_bytes += file.size;
                }
                None if unsent => {
                    plan.new_files += 1;
                    plan.new_bytes += file.size;
                }
                None => continue,
            }
            out.push(file);
        }
        let missing: i64 = self
            .tx
            .query_row(
                "SELECT COUNT(*) FROM temp.cand k WHERE NOT EXISTS (SELECT 1 FROM content c WHERE c.sha1 = k.sha1 AND c.seq <= ?1) \
                 AND EXISTS (SELECT 1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id JOIN temp.content_updates u ON u.update_id = r.update_id WHERE f.sha1 = k.sha1)",
                [range.to],
                |r| r.get(0),
            )
            .during(DURING)?;
        Ok((out, missing.max(0) as u64, plan))
    }

    /// Fills `temp.receipt` (`held` 1: every site holds it; 0: a site
    /// reported it missing or corrupt) and adds the latter to the
    /// candidates.
    fn select_receipt(&self, receipt: Option<&ReceiptPlan>) -> rusqlite::Result<()> {
        let conn = &self.tx;
        conn.execute_batch(
            "DROP TABLE IF EXISTS temp.receipt; CREATE TEMP TABLE receipt (sha1 BLOB PRIMARY KEY, held INTEGER NOT NULL) WITHOUT ROWID;",
        )?;
        let Some(r) = receipt else { return Ok(()) };
        let mut st =
            conn.prepare("INSERT OR REPLACE INTO temp.receipt (sha1, held) VALUES (?1, ?2)")?;
        for sha1 in &r.held {
            st.execute(params![&sha1[..], true])?;
        }
        let mut cand = conn.prepare("INSERT OR IGNORE INTO temp.cand (sha1) VALUES (?1)")?;
        for sha1 in &r.resend {
            st.execute(params![&sha1[..], false])?;
            cand.execute([&sha1[..]])?;
        }
        Ok(())
    }

    /// Fills `temp.content_updates`: the updates in scope whose files
    /// qualify.
    fn select_content_updates(&self, scope: ContentScope) -> rusqlite::Result<()> {
        let conn = &self.tx;
        conn.execute_batch(
            "DROP TABLE IF EXISTS temp.content_updates; CREATE TEMP TABLE content_updates (update_id TEXT PRIMARY KEY) WITHOUT ROWID;",
        )?;
        match scope {
            ContentScope::All => {
                conn.execute(
                    "INSERT INTO temp.content_updates SELECT update_id FROM temp.scope",
                    [],
                )?;
            }
            ContentScope::Approved => {
                super::scope::fill_approved(conn, true)?;
                conn.execute(
                    "INSERT INTO temp.content_updates SELECT update_id FROM temp.approved",
                    [],
                )?;
            }
        }
        Ok(())
    }

    /// Fills `temp.cand` with the candidate files' SHA-1s.
    fn select_candidates(&self, range: JournalRange) -> rusqlite::Result<()> {
        let conn = &self.tx;
        conn.execute_batch(
            "DROP TABLE IF EXISTS temp.cand; CREATE TEMP TABLE cand (sha1 BLOB PRIMARY KEY) WITHOUT ROWID;",
        )?;
        let Some(from) = range.after else {
            conn.execute(
                "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id \
                 JOIN temp.content_updates c ON c.update_id = r.update_id",
                [],
            )?;
            return Ok(());
        };
        let to = range.to;
        conn.execute(
            "INSERT OR IGNORE INTO temp.cand SELECT sha1 FROM content WHERE seq > ?1 AND seq <= ?2",
            params![from, to],
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id \
             WHERE r.seq > ?1 AND r.seq <= ?2",
            params![from, to],
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM deployments d \
             JOIN temp.content_updates c ON c.update_id = d.update_id \
             JOIN revisions r ON r.update_id = d.update_id JOIN files f ON f.rev_id = r.rev_id \
             WHERE d.last_change_seq > ?1 AND d.last_change_seq <= ?2",
            params![from, to],
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM deployments d \
             JOIN updates u ON u.update_id = d.update_id JOIN relationships x ON x.rev_id = u.current_rev AND x.rel = 'bundled' \
             JOIN revisions r ON r.update_id = x.target_id JOIN files f ON f.rev_id = r.rev_id \
             WHERE d.last_change_seq > ?1 AND d.last_change_seq <= ?2",
            params![from, to],
        )?;
        Ok(())
    }

    /// Where a content file (by its path in the WSUS layout) lies in the
    /// store's content tree.
    pub fn content_path(&self, rel_path: &str) -> PathBuf {
        self.content.path_of(rel_path)
    }
}
