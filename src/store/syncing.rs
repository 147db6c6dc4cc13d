//! What the downstream role (`sync`, `protocols::wsusss::downstream`)
//! reads from and writes to the store: the state kept per upstream
//! (`upstream_state`: anchors, replica flag, filters), the metadata
//! transaction a sync fills ([`SyncTxn`]), and the content it still lacks.

use rusqlite::{OptionalExtension, Transaction, params};

use super::content::ContentFile;
use super::state::{StateSource, apply_state, deployment_from_row};
use super::{Added, Store};
use crate::error::{Error, Result};
use crate::model::metadata::UpdateMetadata;
use crate::model::state::{DeploymentRecord, State, StateChanges};

/// What this store keeps about one upstream (`upstream_state`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamRecord {
    pub config_anchor: Option<String>,
    pub sync_anchor: Option<String>,
    pub deployment_anchor: Option<String>,
    pub replica: bool,
    /// The sync's filters, as it wrote them (JSON).
    pub filters: String,
}

/// The record of the upstream at `url`, if this store synced from it.
pub fn upstream_record(store: &Store, url: &str) -> Result<Option<UpstreamRecord>> {
    Ok(store
        .conn()
        .query_row(
            "SELECT config_anchor, sync_anchor, deployment_anchor, replica, filters FROM upstream_state WHERE upstream_url = ?1",
            [url],
            |r| {
                Ok(UpstreamRecord {
                    config_anchor: r.get(0)?,
                    sync_anchor: r.get(1)?,
                    deployment_anchor: r.get(2)?,
                    replica: r.get::<_, i64>(3)? != 0,
                    filters: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// A content file the metadata references and the store lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededContent {
    pub sha1: [u8; 20],
    pub sha256: Option<[u8; 32]>,
    pub size: u64,
    pub file_name: String,
}

/// The content files the store lacks, once per SHA-1 (the row with a
/// SHA-256 first): of every revision, or with `approved_only` of the
/// revisions of the approved updates (`store::scope`'s approved-content
/// rule, as export's).
pub fn needed_content(store: &Store, approved_only: bool) -> Result<Vec<NeededContent>> {
    let scope = if approved_only {
        super::scope::fill_approved(store.conn(), false)?;
        "SELECT r.rev_id FROM revisions r JOIN temp.approved a ON a.update_id = r.update_id"
    } else {
        "SELECT rev_id FROM revisions"
    };
    let sql = format!(
        "SELECT f.sha1, f.sha256, f.size, f.file_name FROM files f \
         WHERE f.rev_id IN ({scope}) AND NOT EXISTS (SELECT 1 FROM content c WHERE c.sha1 = f.sha1) \
         ORDER BY f.sha1, f.sha256 IS NULL, f.rev_id, f.ord"
    );
    let mut st = store.conn().prepare(&sql)?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Option<Vec<u8>>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out: Vec<NeededContent> = Vec::new();
    for row in rows {
        let (sha1, sha256, size, file_name) = row?;
        let bad = || Error::Corrupt("a file row's SHA-1 is not 20 bytes".into());
        let sha1: [u8; 20] = sha1.try_into().map_err(|_| bad())?;
        if out.last().is_some_and(|n| n.sha1 == sha1) {
            continue;
        }
        out.push(NeededContent {
            sha1,
            sha256: match sha256 {
                Some(v) => Some(v.try_into().map_err(|_| bad())?),
                None => None,
            },
            size: u64::try_from(size).map_err(|_| bad())?,
            file_name,
        });
    }
    Ok(out)
}

/// One write transaction of a sync: everything in it commits together or
/// not at all (dropped: rolled back).
pub struct SyncTxn<'a> {
    tx: Transaction<'a>,
}

impl<'a> SyncTxn<'a> {
    /// Begins the transaction (the store's writer lock is the caller's).
    pub fn begin(store: &'a mut Store) -> Result<SyncTxn<'a>> {
        Ok(SyncTxn {
            tx: store.conn_mut().transaction()?,
        })
    }

    pub fn commit(self) -> Result<()> {
        Ok(self.tx.commit()?)
    }

    /// Whether the store holds this revision.
    pub fn revision_present(&self, update_id: &str, revision: i32) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM revisions WHERE update_id = ?1 AND revision = ?2")?
            .query_row(params![update_id, revision], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Whether the store holds any revision of this update.
    pub fn update_known(&self, update_id: &str) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM updates WHERE update_id = ?1")?
            .query_row([update_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Whether a stored revision has a secured fragment (false when the
    /// store does not hold it).
    pub fn revision_secured(&self, update_id: &str, revision: i32) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT secured FROM revisions WHERE update_id = ?1 AND revision = ?2")?
            .query_row(params![update_id, revision], |r| {
                Ok(r.get::<_, i64>(0)? != 0)
            })
            .optional()?
            .unwrap_or(false))
    }

    /// Inserts a parsed revision (see `store::insert_revision`).
    pub fn insert_revision(
        &self,
        now: &str,
        name: &str,
        xml: &[u8],
        meta: &UpdateMetadata,
    ) -> Result<Added> {
        super::insert_revision(&self.tx, now, name, xml, meta)
    }

    /// The ids of the categories of one category type, sorted.
    pub fn category_ids(&self, category_type: &str) -> Result<Vec<String>> {
        super::scope::category_ids(&self.tx, category_type)
    }

    /// The ids of the groups that are not built in, sorted.
    pub fn local_group_ids(&self) -> Result<Vec<String>> {
        let mut q = self
            .tx
            .prepare("SELECT group_id FROM groups WHERE builtin = 0 ORDER BY group_id")?;
        let rows = q.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every live deployment: (deployment id, group id).
    pub fn live_deployment_groups(&self) -> Result<Vec<(String, String)>> {
        let mut q = self
            .tx
            .prepare("SELECT deployment_id, group_id FROM deployments WHERE removed = 0")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A live deployment as the record of its removal (`removed` set), if
    /// it exists and is live.
    pub fn removal_of(&self, deployment_id: &str) -> Result<Option<DeploymentRecord>> {
        Ok(self
            .tx
            .query_row(
                "SELECT deployment_id, update_id, revision, group_id, action, admin_name, deadline, go_live, download_priority, is_assigned, \
                 1 AS removed FROM deployments WHERE deployment_id = ?1 AND removed = 0",
                [deployment_id],
                deployment_from_row,
            )
            .optional()?)
    }

    /// Applies an upstream's replicated state (see
    /// `store::state::apply_state`; never a rebase).
    pub fn apply_state(&self, now: &str, state: &State) -> Result<StateChanges> {
        apply_state(&self.tx, now, state, false, StateSource::Sync)
    }

    /// Writes the record of the upstream at `url`, with the sync's time.
    pub fn save_upstream(&self, url: &str, rec: &UpstreamRecord, now: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO upstream_state (upstream_url, config_anchor, sync_anchor, deployment_anchor, replica, filters, last_sync) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (upstream_url) DO UPDATE SET \
             config_anchor = excluded.config_anchor, sync_anchor = excluded.sync_anchor, \
             deployment_anchor = excluded.deployment_anchor, replica = excluded.replica, \
             filters = excluded.filters, last_sync = excluded.last_sync",
            params![
                url,
                rec.config_anchor,
                rec.sync_anchor,
                rec.deployment_anchor,
                rec.replica,
                rec.filters,
                now
            ],
        )?;
        Ok(())
    }

    /// Whether a content file with this SHA-1 is recorded.
    pub fn content_present(&self, sha1: &[u8; 20]) -> Result<bool> {
        super::content_recorded(&self.tx, sha1)
    }

    /// Records a content file that is in place (see
    /// `store::record_content`).
    pub fn record_content(&self, now: &str, file: &ContentFile) -> Result<()> {
        super::record_content(&self.tx, now, file)
    }
}
