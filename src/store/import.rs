//! The one write transaction a bundle import applies (`airgap::import`):
//! the trust statements' changes, the revisions (re-parsed by the caller),
//! the replicated state (groups, deployments, declines), the content files
//! it moves into place with their rows, and the import ledger's row.
//! Nothing is visible until [`ImportTx::commit`]; dropped before, the
//! transaction rolls back and the content files it moved into place are
//! removed again (a crash leaves them as verified orphans that a re-run
//! adopts).

use std::path::PathBuf;

use rusqlite::{OptionalExtension, Transaction};

use crate::error::{DbContext, Error, Result};
use crate::model::metadata::UpdateMetadata;
use crate::model::state::{State, StateChanges};
use crate::store::content::{ContentStore, Staged};
use crate::store::ledgers::ImportRecord;
use crate::store::state::StateSource;
use crate::store::trust::TrustChange;
use crate::store::{
    Added, CONTENT_DIR, STAGING_DIR, Store, insert_revision_digested, now_rfc3339, record_content,
};

/// What update metadata says of a content file (by its SHA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataFile {
    pub size: u64,
    /// `None` when no metadata that lists the file gives its SHA-256.
    pub sha256: Option<[u8; 32]>,
}

/// Content files moved into place by an import that has not committed.
struct PlacedFiles {
    paths: Vec<PathBuf>,
}

impl Drop for PlacedFiles {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An import's transaction (see the module documentation).
pub struct ImportTx<'s> {
    // Dropped in this order: placed files first, then the transaction.
    placed: PlacedFiles,
    tx: Transaction<'s>,
    now: String,
    content: ContentStore,
}

impl Store {
    /// Begins an import's transaction.
    pub fn begin_import(&mut self) -> Result<ImportTx<'_>> {
        let root = self.root().to_path_buf();
        let tx = self
            .conn_mut()
            .transaction()
            .during("beginning the import")?;
        Ok(ImportTx {
            placed: PlacedFiles { paths: Vec::new() },
            tx,
            now: now_rfc3339(),
            content: ContentStore::new(root.join(CONTENT_DIR), root.join(STAGING_DIR)),
        })
    }
}

impl ImportTx<'_> {
    /// The time every row of this import records.
    pub fn now(&self) -> &str {
        &self.now
    }

    /// Applies the bundle's replicated state (groups, deployments,
    /// declines): [`crate::store::state::apply_state`] inside this
    /// transaction.
    pub fn apply_state(
        &self,
        state: &State,
        replace: bool,
        source: StateSource,
    ) -> Result<StateChanges> {
        crate::store::state::apply_state(&self.tx, &self.now, state, replace, source)
    }

    /// Writes the changes the bundle's trust statements made to a view of
    /// this store's trust.
    pub fn apply_trust_changes(&self, changes: &[TrustChange]) -> Result<()> {
        crate::store::trust::write_changes(&self.tx, changes)
    }

    /// The revision number of an update's current revision, if the update
    /// is known.
    pub fn current_revision(&self, update_id: &str) -> Result<Option<i32>> {
        self.tx
            .prepare_cached(
                "SELECT r.revision FROM updates u JOIN revisions r ON r.rev_id = u.current_rev WHERE u.update_id = ?1",
            )
            .and_then(|mut st| st.query_row([update_id], |r| r.get(0)).optional())
            .during("reading an update's current revision")
    }

    /// Whether the update is known.
    pub fn update_exists(&self, update_id: &str) -> Result<bool> {
        self.tx
            .prepare_cached("SELECT 1 FROM updates WHERE update_id = ?1")
            .and_then(|mut st| st.query_row([update_id], |_| Ok(())).optional())
            .map(|r| r.is_some())
            .during("looking up an update")
    }

    /// Adds one revision (already parsed from `xml`, whose SHA-256 is
    /// `digest`); `name` is used in errors.
    pub fn add_revision(
        &self,
        name: &str,
        xml: &[u8],
        digest: &[u8; 32],
        meta: &UpdateMetadata,
    ) -> Result<Added> {
        insert_revision_digested(&self.tx, &self.now, name, xml, digest, meta)
    }

    /// Whether a content file with this SHA-1 is stored.
    pub fn has_content(&self, sha1: &[u8; 20]) -> Result<bool> {
        self.tx
            .prepare_cached("SELECT 1 FROM content WHERE sha1 = ?1")
            .and_then(|mut st| st.query_row([&sha1[..]], |_| Ok(())).optional())
            .map(|r| r.is_some())
            .during("looking up a content file")
    }

    /// Whether a content file with this SHA-1 is stored and its file is
    /// in place with the recorded size (a recorded file that is missing or
    /// of another size is brought again by an import that carries it: a
    /// site's receipt asks for it).
    pub fn holds_content(&self, sha1: &[u8; 20]) -> Result<bool> {
        let row: Option<(String, i64)> = self
            .tx
            .prepare_cached("SELECT rel_path, size FROM content WHERE sha1 = ?1")
            .and_then(|mut st| {
                st.query_row([&sha1[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .during("looking up a content file")?;
        Ok(row.is_some_and(|(rel_path, size)| {
            std::fs::metadata(self.content.path_of(&rel_path))
                .is_ok_and(|m| m.is_file() && i64::try_from(m.len()) == Ok(size))
        }))
    }

    /// What update metadata (in this store, with what this import added)
    /// says of the content file with this SHA-1; `None` when no metadata
    /// lists it. A listing with a SHA-256 is preferred.
    pub fn metadata_file(&self, sha1: &[u8; 20]) -> Result<Option<MetadataFile>> {
        let row: Option<(i64, Option<Vec<u8>>)> = self
            .tx
            .prepare_cached(
                "SELECT size, sha256 FROM files WHERE sha1 = ?1 ORDER BY sha256 IS NULL LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([&sha1[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .during("looking up a file of update metadata")?;
        let Some((size, sha256)) = row else {
            return Ok(None);
        };
        let corrupt = || {
            Error::Corrupt(format!(
                "the files row of content {} is corrupt",
                crate::store::content::hex_upper(sha1)
            ))
        };
        Ok(Some(MetadataFile {
            size: u64::try_from(size).map_err(|_| corrupt())?,
            sha256: sha256
                .map(|v| <[u8; 32]>::try_from(v).map_err(|_| corrupt()))
                .transpose()?,
        }))
    }

    /// The content store the import stages into.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Moves a staged (verified) content file into place and records it;
    /// it is removed again if the import does not commit.
    pub fn place_content(&mut self, staged: Staged) -> Result<()> {
        let f = self.content.commit(staged)?;
        self.placed.paths.push(self.content.path_of(&f.rel_path));
        if self.has_content(&f.sha1)? {
            // A recorded file brought again (`holds_content`): its row
            // stays as it is.
            return Ok(());
        }
        record_content(&self.tx, &self.now, &f)
    }

    /// The newest journal sequence number, with this import's changes.
    pub fn head(&self) -> Result<i64> {
        self.tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
                r.get(0)
            })
            .during("reading the journal")
    }

    /// Writes the import ledger's row for the bundle.
    pub fn record_import(&self, r: &ImportRecord<'_>) -> Result<()> {
        crate::store::ledgers::record_import(&self.tx, r, &self.now)
    }

    /// Commits everything; the placed content stays.
    pub fn commit(self) -> Result<()> {
        let ImportTx { mut placed, tx, .. } = self;
        tx.commit().during("committing the import")?;
        placed.paths.clear();
        Ok(())
    }
}
