//! What the upstream role (the MS-WSUSSS USS, `protocols::wsusss::upstream`)
//! reads from the store, and the little it writes: the cookie secret in
//! `config` and the downstream server table (`downstream_servers`).
//!
//! A call that reads several things reads them in one [`Snapshot`] (a
//! read transaction: one consistent point of the journal).

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, Transaction, params};

use super::Store;
use super::deployments::Action;
use super::journal::Anchor;
use super::scope::{CategoryPick, pick_by_categories};
use crate::error::{Error, Result};

/// A target group as GetDeployments lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedGroup {
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    pub builtin: bool,
}

/// A deployment as GetDeployments lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedDeployment {
    pub deployment_id: String,
    pub update_id: String,
    pub revision: i32,
    pub group_id: String,
    /// The wire value of the action (MS-WSUSSS 2.2.4.5; 0 when unknown).
    pub action: i32,
    pub admin_name: String,
    pub deadline: Option<String>,
    pub go_live: String,
    pub download_priority: i64,
    pub is_assigned: bool,
}

/// One read snapshot of the store.
pub struct Snapshot<'a> {
    tx: Transaction<'a>,
    store: &'a Store,
}

impl<'a> Snapshot<'a> {
    /// Starts a read snapshot (it ends when dropped).
    pub fn begin(store: &'a Store) -> Result<Snapshot<'a>> {
        Ok(Snapshot {
            tx: store.conn().unchecked_transaction()?,
            store,
        })
    }

    /// The store's anchor at this snapshot.
    pub fn anchor(&self) -> Result<Anchor> {
        self.store.anchor()
    }

    /// [`Store::own_anchor`] at this snapshot.
    pub fn own_anchor(&self, text: &str) -> Result<Anchor> {
        self.store.own_anchor(text)
    }

    /// The revisions GetRevisionIdList returns, oldest first, all with
    /// `seq <= head`:
    /// - `get_config`: every revision of a category (company, product
    ///   family, product, classification) or detectoid added after `since`;
    /// - otherwise, with neither categories nor classifications: every
    ///   software and driver revision added after `since`;
    /// - with only one of the two lists: none (the spec: both are needed
    ///   "for the filter to work"; Windows WSUS answers the same);
    /// - with both: the revisions of the updates `store::scope` picks.
    ///   Such an update's revisions are all returned when one matching
    ///   (category, classification) pair has a `Delta` false; otherwise
    ///   only those added after `since`.
    pub fn revision_list(
        &self,
        get_config: bool,
        categories: &[CategoryPick],
        classifications: &[CategoryPick],
        since: i64,
        head: i64,
    ) -> Result<Vec<(String, i32)>> {
        let collect = |sql: &str| -> Result<Vec<(String, i32)>> {
            let mut st = self.tx.prepare_cached(sql)?;
            let rows = st.query_map(params![since, head], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        };
        if get_config {
            return collect(
                "SELECT r.update_id, r.revision FROM revisions r JOIN updates u ON u.update_id = r.update_id \
                 WHERE u.kind IN ('category', 'detectoid') AND r.seq > ?1 AND r.seq <= ?2 ORDER BY r.seq",
            );
        }
        match (categories.is_empty(), classifications.is_empty()) {
            (true, true) => {
                return collect(
                    "SELECT r.update_id, r.revision FROM revisions r JOIN updates u ON u.update_id = r.update_id \
                     WHERE u.kind IN ('software', 'driver') AND r.seq > ?1 AND r.seq <= ?2 ORDER BY r.seq",
                );
            }
            (false, false) => {}
            _ => return Ok(Vec::new()),
        }
        pick_by_categories(&self.tx, Some(categories), Some(classifications))?;
        collect(
            "SELECT r.update_id, r.revision FROM temp.picked s JOIN revisions r ON r.update_id = s.update_id \
             WHERE r.seq <= ?2 AND (s.delta_only = 0 OR r.seq > ?1) ORDER BY r.seq",
        )
    }

    /// A revision's key and stored document, if the store holds it.
    pub fn revision_document(
        &self,
        update_id: &str,
        revision: i32,
    ) -> Result<Option<(i64, Vec<u8>)>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT rev_id, xml FROM revisions WHERE update_id = ?1 AND revision = ?2",
            )?
            .query_row(params![update_id, revision], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// A revision's key, if the store holds it.
    pub fn revision_key(&self, update_id: &str, revision: i32) -> Result<Option<i64>> {
        Ok(self
            .tx
            .prepare_cached("SELECT rev_id FROM revisions WHERE update_id = ?1 AND revision = ?2")?
            .query_row(params![update_id, revision], |r| r.get(0))
            .optional()?)
    }

    /// A revision's files: (file name, SHA-1), in document order.
    pub fn revision_files(&self, rev_id: i64) -> Result<Vec<(String, [u8; 20])>> {
        let mut st = self
            .tx
            .prepare_cached("SELECT file_name, sha1 FROM files WHERE rev_id = ?1 ORDER BY ord")?;
        let rows = st.query_map([rev_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, sha1) = row?;
            let sha1: [u8; 20] = sha1.try_into().map_err(|_| {
                Error::Corrupt(format!("revision {rev_id}: a file's SHA-1 is not 20 bytes"))
            })?;
            out.push((name, sha1));
        }
        Ok(out)
    }

    /// Every target group, parents before their children (built-in groups
    /// first, then by name).
    pub fn groups_parents_first(&self) -> Result<Vec<ServedGroup>> {
        let mut st = self.tx.prepare(
            "SELECT group_id, parent_id, name, builtin FROM groups ORDER BY builtin DESC, name COLLATE NOCASE, group_id",
        )?;
        let mut rest: Vec<ServedGroup> = st
            .query_map([], |r| {
                Ok(ServedGroup {
                    id: r.get(0)?,
                    parent: r.get(1)?,
                    name: r.get(2)?,
                    builtin: r.get::<_, i64>(3)? != 0,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: Vec<ServedGroup> = Vec::with_capacity(rest.len());
        let mut placed: BTreeSet<String> = BTreeSet::new();
        while !rest.is_empty() {
            let before = rest.len();
            let (ready, waiting): (Vec<ServedGroup>, Vec<ServedGroup>) = rest
                .into_iter()
                .partition(|g| g.parent.as_ref().is_none_or(|p| placed.contains(p)));
            for g in ready {
                placed.insert(g.id.clone());
                out.push(g);
            }
            rest = waiting;
            if rest.len() == before {
                // A parent that is not a group: keep them, in the stored order.
                out.extend(rest);
                break;
            }
        }
        Ok(out)
    }

    /// Deployments whose last change is in `(from, to]`: live ones, or the
    /// removed ones when `removed`.
    pub fn deployments_changed(
        &self,
        from: i64,
        to: i64,
        removed: bool,
    ) -> Result<Vec<ServedDeployment>> {
        let mut st = self.tx.prepare_cached(
            "SELECT deployment_id, update_id, revision, group_id, action, admin_name, deadline, go_live, \
             download_priority, is_assigned FROM deployments \
             WHERE removed = ?3 AND last_change_seq > ?1 AND last_change_seq <= ?2 ORDER BY last_change_seq",
        )?;
        let rows = st.query_map(params![from, to, removed], |r| {
            Ok(ServedDeployment {
                deployment_id: r.get(0)?,
                update_id: r.get(1)?,
                revision: r.get(2)?,
                group_id: r.get(3)?,
                action: Action::parse(&r.get::<_, String>(4)?)
                    .map(Action::wire_value)
                    .unwrap_or(0),
                admin_name: r.get(5)?,
                deadline: r.get(6)?,
                go_live: r.get(7)?,
                download_priority: r.get(8)?,
                is_assigned: r.get::<_, i64>(9)? != 0,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every declined update, by id.
    pub fn declined_updates(&self) -> Result<Vec<String>> {
        let mut st = self
            .tx
            .prepare("SELECT update_id FROM updates WHERE declined = 1 ORDER BY update_id")?;
        Ok(st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?)
    }

    /// The EULAs of the revisions live deployments approve (approving
    /// accepts them), by id.
    pub fn approved_eulas(&self) -> Result<Vec<String>> {
        let mut st = self.tx.prepare(
            "SELECT DISTINCT r.eula_id FROM deployments d JOIN revisions r \
             ON r.update_id = d.update_id AND r.revision = d.revision \
             WHERE d.removed = 0 AND r.eula_id IS NOT NULL ORDER BY r.eula_id",
        )?;
        Ok(st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?)
    }
}

/// Whether some revision's metadata names a file with this SHA-1.
pub fn file_digest_known(store: &Store, sha1: &[u8; 20]) -> Result<bool> {
    Ok(store
        .conn()
        .prepare_cached("SELECT 1 FROM files WHERE sha1 = ?1 LIMIT 1")?
        .query_row([&sha1[..]], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The `config` value of `key`, set to `value` first when there is none.
pub fn config_value_or_insert(store: &Store, key: &str, value: &str) -> Result<String> {
    store.conn().execute(
        "INSERT OR IGNORE INTO config (key, value) VALUES (?1, ?2)",
        params![key, value],
    )?;
    Ok(store
        .conn()
        .query_row("SELECT value FROM config WHERE key = ?1", [key], |r| {
            r.get(0)
        })?)
}

/// Records a downstream server (by id, with its FQDN) in the DSS table.
pub fn record_downstream_server(store: &Store, dss: &str, fqdn: &str) -> Result<()> {
    store.conn().execute(
        "INSERT INTO downstream_servers (server_id, fqdn, first_seen) VALUES (?1, ?2, ?3) \
         ON CONFLICT (server_id) DO UPDATE SET fqdn = excluded.fqdn",
        params![dss, fqdn, super::now_rfc3339()],
    )?;
    Ok(())
}

/// Records a downstream server's last sync time and the anchor it was
/// handed.
pub fn record_downstream_sync(store: &Store, dss: &str, anchor: &Anchor) -> Result<()> {
    store.conn().execute(
        "UPDATE downstream_servers SET last_sync = ?2, last_anchor = ?3 WHERE server_id = ?1",
        params![dss, super::now_rfc3339(), anchor.to_string()],
    )?;
    Ok(())
}

/// Records that a downstream server is a replica.
pub fn record_downstream_replica(store: &Store, dss: &str) -> Result<()> {
    store.conn().execute(
        "UPDATE downstream_servers SET replica = 1 WHERE server_id = ?1",
        [dss],
    )?;
    Ok(())
}

/// Tunes a store handle a server keeps open: how long a bookkeeping write
/// waits for another writer's lock, and the handle's page cache (KiB).
pub fn tune_pooled_handle(
    store: &Store,
    busy_timeout: std::time::Duration,
    cache_kib: i64,
) -> Result<()> {
    let conn = store.conn();
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(())
}
