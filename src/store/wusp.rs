//! What the MS-WUSP server (`protocols::wusp`) reads and writes: the
//! catalog as clients see it, the client protocol's settings and cookie
//! keys, computers that call in, their events and per-update status.
//!
//! Rules:
//! - Computers, events and status are local to this store (bundles carry
//!   none of them).
//! - A computer is identified by WUA's client id; a first registration
//!   adopts a computer the administrator added under the same name that
//!   has no client id yet.
//! - Events are stored once per (computer, EventInstanceID) and at most
//!   `bound` per computer (the oldest go first).
//! - A report (events and the status they give) is one transaction.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::Result;
use crate::store::{Store, UNASSIGNED_COMPUTERS, now_rfc3339};

/// `config` key: the cookie keys (JSON list of `{id, key}`, key in hex).
pub const COOKIE_KEYS: &str = "wusp.cookie_keys";
/// `config` key: the time the client configuration last changed (GetConfig
/// `LastChange`).
pub const CONFIG_LAST_CHANGE: &str = "wusp.config_last_change";
/// `config` key: `server` or `client` targeting.
pub const TARGETING: &str = "wusp.targeting";

/// Where a computer's target group comes from (MS-WUSP 3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Targeting {
    /// The administrator assigns groups (`computers move`); the default.
    Server,
    /// Clients name their groups (GetAuthorizationCookie `targetGroupName`).
    Client,
}

impl Targeting {
    pub fn as_str(self) -> &'static str {
        match self {
            Targeting::Server => "server",
            Targeting::Client => "client",
        }
    }
    pub fn parse(s: &str) -> Option<Targeting> {
        match s {
            "server" => Some(Targeting::Server),
            "client" => Some(Targeting::Client),
            _ => None,
        }
    }
}

/// The current revision of one update, as the client protocol needs it.
#[derive(Debug, Clone)]
pub struct CatalogRow {
    pub update_id: String,
    pub kind: String,
    pub category_type: Option<String>,
    pub rev_id: i64,
    pub revision: i32,
    pub declined: bool,
    pub publication_state: Option<String>,
    /// `Properties/@ExplicitlyDeployable` (None: not yet recorded).
    pub explicitly_deployable: Option<bool>,
    /// When the revision arrived (journal time, RFC 3339).
    pub arrived: String,
    /// The journal sequence it arrived at.
    pub seq: i64,
}

/// One prerequisite or bundle relationship of a current revision.
#[derive(Debug, Clone)]
pub struct RelationRow {
    pub rev_id: i64,
    /// `prerequisite` or `bundled`.
    pub rel: String,
    pub grp: i64,
    pub target_id: String,
}

/// A live deployment, as the client protocol needs it.
#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub deployment_id: String,
    pub update_id: String,
    pub group_id: String,
    pub action: String,
    pub deadline: Option<String>,
    pub go_live: String,
    pub is_assigned: bool,
    pub last_change_seq: i64,
    /// Journal time of the last change (RFC 3339).
    pub last_change_at: String,
}

/// Everything the client protocol's catalog is built from, read in one
/// transaction.
#[derive(Debug, Clone, Default)]
pub struct CatalogRows {
    /// The journal sequence the rows are as of (`content_arrived` aside).
    pub generation: i64,
    pub updates: Vec<CatalogRow>,
    pub relations: Vec<RelationRow>,
    pub deployments: Vec<DeploymentRow>,
    /// (update id, journal seq) of the last deployment change or decline
    /// of each update that has had one.
    pub changed: Vec<(String, i64)>,
    /// (group id, parent id).
    pub groups: Vec<(String, Option<String>)>,
}

/// A computer as a client call sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientComputer {
    pub computer_id: String,
    pub name: String,
    pub group_id: String,
    /// Client-side targeting: the groups the client named (ids).
    pub client_groups: Vec<String>,
}

/// What RegisterComputer says about a computer.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub client_id: String,
    pub dns_name: String,
    pub os_version: Option<String>,
    pub os_description: Option<String>,
    pub arch: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub client_version: Option<String>,
}

/// One reported event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub instance_id: String,
    pub time_at_target: String,
    pub namespace_id: i64,
    pub event_id: i64,
    pub source_id: i64,
    pub update_id: Option<String>,
    pub revision: Option<i64>,
    pub hresult: i64,
    pub app_name: Option<String>,
    pub replacement: Vec<String>,
    pub misc: Vec<String>,
}

/// A status of one update on one computer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Installed,
    Needed,
    Downloaded,
    Failed,
    NotApplicable,
}

impl UpdateState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Installed => "installed",
            UpdateState::Needed => "needed",
            UpdateState::Downloaded => "downloaded",
            UpdateState::Failed => "failed",
            UpdateState::NotApplicable => "not_applicable",
        }
    }
    pub fn parse(s: &str) -> Option<UpdateState> {
        [
            UpdateState::Installed,
            UpdateState::Needed,
            UpdateState::Downloaded,
            UpdateState::Failed,
            UpdateState::NotApplicable,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A change of status a report makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    /// A full snapshot (event 156): these rows replace all of the computer's.
    Snapshot(Vec<(String, UpdateState)>),
    /// One update's state.
    Set(String, UpdateState),
}

impl Store {
    /// A `config` value.
    pub fn config_value(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM config WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The value of `key`, set to `init()` first when it has none (the
    /// first writer wins when several race).
    pub fn config_value_or_init(&self, key: &str, init: impl FnOnce() -> String) -> Result<String> {
        if let Some(v) = self.config_value(key)? {
            return Ok(v);
        }
        self.conn().execute(
            "INSERT OR IGNORE INTO config (key, value) VALUES (?1, ?2)",
            params![key, init()],
        )?;
        Ok(self.config_value(key)?.unwrap_or_default())
    }

    /// Sets a `config` value.
    pub fn set_config_value(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The store's targeting mode (server unless set).
    pub fn targeting(&self) -> Result<Targeting> {
        Ok(self
            .config_value(TARGETING)?
            .and_then(|v| Targeting::parse(&v))
            .unwrap_or(Targeting::Server))
    }

    /// Sets the targeting mode; the client configuration changes with it
    /// (clients get ConfigChanged and fetch it again).
    pub fn set_targeting(&self, t: Targeting) -> Result<()> {
        let tx = immediate(self.conn())?;
        tx.execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![TARGETING, t.as_str()],
        )?;
        tx.execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![CONFIG_LAST_CHANGE, now_millis().to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The journal sequence clients' views are built on: the newest entry
    /// that is not `content_arrived` (content changes nothing a client
    /// is told).
    pub fn wusp_generation(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq FROM journal WHERE kind <> 'content_arrived' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Current revisions whose `ExplicitlyDeployable` is not yet recorded.
    pub fn wusp_unrecorded_revisions(&self) -> Result<Vec<i64>> {
        let mut st = self.conn().prepare(
            "SELECT u.current_rev FROM updates u LEFT JOIN wusp_revisions w ON w.rev_id = u.current_rev \
             WHERE w.rev_id IS NULL",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records `ExplicitlyDeployable` of revisions (one transaction).
    pub fn wusp_record_revisions(&self, rows: &[(i64, bool)]) -> Result<()> {
        let tx = immediate(self.conn())?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO wusp_revisions (rev_id, explicitly_deployable) VALUES (?1, ?2)",
            )?;
            for (rev, ed) in rows {
                st.execute(params![rev, ed])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The catalog rows of the client protocol, as of one moment.
    pub fn wusp_catalog_rows(&self) -> Result<CatalogRows> {
        let tx = self.conn().unchecked_transaction()?;
        let generation: i64 = tx
            .query_row(
                "SELECT seq FROM journal WHERE kind <> 'content_arrived' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let mut out = CatalogRows {
            generation,
            ..CatalogRows::default()
        };
        {
            let mut st = tx.prepare(
                "SELECT u.update_id, u.kind, u.category_type, r.rev_id, r.revision, u.declined, \
                 r.publication_state, w.explicitly_deployable, COALESCE(j.at, ''), r.seq \
                 FROM updates u JOIN revisions r ON r.rev_id = u.current_rev \
                 LEFT JOIN wusp_revisions w ON w.rev_id = r.rev_id \
                 LEFT JOIN journal j ON j.seq = r.seq ORDER BY r.rev_id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(CatalogRow {
                    update_id: r.get(0)?,
                    kind: r.get(1)?,
                    category_type: r.get(2)?,
                    rev_id: r.get(3)?,
                    revision: r.get(4)?,
                    declined: r.get::<_, i64>(5)? != 0,
                    publication_state: r.get(6)?,
                    explicitly_deployable: r.get::<_, Option<i64>>(7)?.map(|v| v != 0),
                    arrived: r.get(8)?,
                    seq: r.get(9)?,
                })
            })?;
            out.updates = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        {
            let mut st = tx.prepare(
                "SELECT rel.rev_id, rel.rel, rel.grp, rel.target_id FROM relationships rel \
                 JOIN updates u ON u.current_rev = rel.rev_id WHERE rel.rel IN ('prerequisite', 'bundled')",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RelationRow {
                    rev_id: r.get(0)?,
                    rel: r.get(1)?,
                    grp: r.get(2)?,
                    target_id: r.get(3)?,
                })
            })?;
            out.relations = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        {
            let mut st = tx.prepare(
                "SELECT d.deployment_id, d.update_id, d.group_id, d.action, d.deadline, d.go_live, \
                 d.is_assigned, d.last_change_seq, COALESCE(j.at, '') FROM deployments d \
                 LEFT JOIN journal j ON j.seq = d.last_change_seq WHERE d.removed = 0",
            )?;
            let rows = st.query_map([], |r| {
                Ok(DeploymentRow {
                    deployment_id: r.get(0)?,
                    update_id: r.get(1)?,
                    group_id: r.get(2)?,
                    action: r.get(3)?,
                    deadline: r.get(4)?,
                    go_live: r.get(5)?,
                    is_assigned: r.get::<_, i64>(6)? != 0,
                    last_change_seq: r.get(7)?,
                    last_change_at: r.get(8)?,
                })
            })?;
            out.deployments = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        {
            let mut st = tx.prepare(
                "SELECT update_id, MAX(s) FROM ( \
                   SELECT update_id, last_change_seq AS s FROM deployments \
                   UNION ALL SELECT subject AS update_id, seq AS s FROM journal WHERE kind = 'update_declined' \
                 ) GROUP BY update_id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            out.changed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        {
            let mut st = tx.prepare("SELECT group_id, parent_id FROM groups")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            out.groups = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// (SHA-1, file name) of each file of a revision, in document order.
    pub fn wusp_files_of(&self, rev_id: i64) -> Result<Vec<(Vec<u8>, String)>> {
        let mut st = self
            .conn()
            .prepare_cached("SELECT sha1, file_name FROM files WHERE rev_id = ?1 ORDER BY ord")?;
        let rows = st.query_map([rev_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The name of some file with this SHA-1, if any revision names one.
    pub fn wusp_file_name(&self, sha1: &[u8]) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT file_name FROM files WHERE sha1 = ?1 LIMIT 1")?
            .query_row([sha1], |r| r.get(0))
            .optional()?)
    }

    /// The group ids whose names match `names` (case-insensitively);
    /// unknown names are left out.
    pub fn wusp_group_ids(&self, names: &[String]) -> Result<Vec<String>> {
        let mut st = self
            .conn()
            .prepare_cached("SELECT group_id FROM groups WHERE name = ?1 COLLATE NOCASE")?;
        let mut out = Vec::new();
        for n in names {
            if let Some(id) = st.query_row([n], |r| r.get::<_, String>(0)).optional()?
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The computer with this client id.
    pub fn wusp_computer(&self, client_id: &str) -> Result<Option<ClientComputer>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT computer_id, name, group_id, client_groups FROM computers WHERE client_id = ?1",
            )?
            .query_row([client_id], |r| {
                Ok(ClientComputer {
                    computer_id: r.get(0)?,
                    name: r.get(1)?,
                    group_id: r.get(2)?,
                    client_groups: split_groups(r.get::<_, Option<String>>(3)?),
                })
            })
            .optional()?)
    }

    /// Records a registration: updates the computer with this client id,
    /// else adopts an administrator-added computer of the same name
    /// without a client id, else adds one to Unassigned Computers.
    pub fn wusp_register(&self, reg: &Registration) -> Result<ClientComputer> {
        let tx = immediate(self.conn())?;
        let now = now_rfc3339();
        let name = if reg.dns_name.trim().is_empty() {
            reg.client_id.clone()
        } else {
            reg.dns_name.trim().to_string()
        };
        let existing: Option<String> = tx
            .query_row(
                "SELECT computer_id FROM computers WHERE client_id = ?1",
                [&reg.client_id],
                |r| r.get(0),
            )
            .optional()?;
        let adopt: Option<String> = match existing {
            Some(_) => None,
            None => tx
                .query_row(
                    "SELECT computer_id FROM computers WHERE client_id IS NULL AND name = ?1 COLLATE NOCASE \
                     ORDER BY added LIMIT 1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()?,
        };
        let computer_id = match existing.or(adopt) {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO computers (computer_id, name, group_id, added, client_id) VALUES (?1, ?2, ?3, ?4, ?1)",
                    params![reg.client_id, name, UNASSIGNED_COMPUTERS.0, now],
                )?;
                reg.client_id.clone()
            }
        };
        tx.execute(
            "UPDATE computers SET client_id = ?2, name = ?3, dns_name = ?4, os_version = ?5, os_description = ?6, \
             arch = ?7, manufacturer = ?8, model = ?9, client_version = ?10, registered = ?11, last_sync = ?11 \
             WHERE computer_id = ?1",
            params![
                computer_id,
                reg.client_id,
                name,
                reg.dns_name,
                reg.os_version,
                reg.os_description,
                reg.arch,
                reg.manufacturer,
                reg.model,
                reg.client_version,
                now
            ],
        )?;
        tx.commit()?;
        self.wusp_computer(&reg.client_id)?
            .ok_or_else(|| crate::error::Error::Corrupt("the registered computer vanished".into()))
    }

    /// Records the client-side targeting groups a client named.
    pub fn wusp_set_client_groups(&self, client_id: &str, group_ids: &[String]) -> Result<()> {
        self.conn().execute(
            "UPDATE computers SET client_groups = ?2 WHERE client_id = ?1",
            params![client_id, group_ids.join(";")],
        )?;
        Ok(())
    }

    /// Notes a contact with a valid cookie.
    pub fn wusp_touch(&self, computer_id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE computers SET last_sync = ?2 WHERE computer_id = ?1",
            params![computer_id, now_rfc3339()],
        )?;
        Ok(())
    }

    /// Stores a batch of events of a computer (new EventInstanceIDs only;
    /// at most `bound` kept per computer) and the status changes `derive`
    /// computes from which events were new, in one transaction. Returns how
    /// many events were new.
    pub fn wusp_report(
        &self,
        computer_id: &str,
        events: &[EventRow],
        bound: usize,
        derive: impl FnOnce(&[bool]) -> Vec<StatusChange>,
    ) -> Result<usize> {
        let tx = immediate(self.conn())?;
        let now = now_rfc3339();
        let mut arrival: i64 = tx.query_row(
            "SELECT COALESCE(MAX(arrival), 0) FROM wusp_events WHERE computer_id = ?1",
            [computer_id],
            |r| r.get(0),
        )?;
        let mut fresh = Vec::with_capacity(events.len());
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO wusp_events (computer_id, instance_id, arrival, time_at_target, namespace_id, \
                 event_id, source_id, update_id, revision, hresult, app_name, replacement, misc, received) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for e in events {
                arrival += 1;
                let n = st.execute(params![
                    computer_id,
                    e.instance_id,
                    arrival,
                    e.time_at_target,
                    e.namespace_id,
                    e.event_id,
                    e.source_id,
                    e.update_id,
                    e.revision,
                    e.hresult,
                    e.app_name,
                    serde_json::to_string(&e.replacement).unwrap_or_default(),
                    serde_json::to_string(&e.misc).unwrap_or_default(),
                    now
                ])?;
                fresh.push(n == 1);
            }
        }
        let bound = i64::try_from(bound.max(1)).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM wusp_events WHERE computer_id = ?1 AND arrival <= \
             (SELECT arrival FROM wusp_events WHERE computer_id = ?1 ORDER BY arrival DESC LIMIT 1 OFFSET ?2)",
            params![computer_id, bound],
        )?;
        for change in derive(&fresh) {
            match change {
                StatusChange::Snapshot(rows) => {
                    tx.execute(
                        "DELETE FROM wusp_status WHERE computer_id = ?1",
                        [computer_id],
                    )?;
                    let mut st = tx.prepare_cached(
                        "INSERT OR REPLACE INTO wusp_status (computer_id, update_id, state, changed) VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    for (u, s) in rows {
                        st.execute(params![computer_id, u, s.as_str(), now])?;
                    }
                }
                StatusChange::Set(u, s) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO wusp_status (computer_id, update_id, state, changed) VALUES (?1, ?2, ?3, ?4)",
                        params![computer_id, u, s.as_str(), now],
                    )?;
                }
            }
        }
        tx.execute(
            "UPDATE computers SET last_report = ?2, last_sync = ?2 WHERE computer_id = ?1",
            params![computer_id, now],
        )?;
        tx.commit()?;
        Ok(fresh.iter().filter(|f| **f).count())
    }

    /// The stored status of every update of a computer.
    pub fn wusp_status_of(&self, computer_id: &str) -> Result<Vec<(String, UpdateState)>> {
        let mut st = self.conn().prepare_cached(
            "SELECT update_id, state FROM wusp_status WHERE computer_id = ?1 ORDER BY update_id",
        )?;
        let rows = st.query_map([computer_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (u, s) = r?;
            if let Some(s) = UpdateState::parse(&s) {
                out.push((u, s));
            }
        }
        Ok(out)
    }

    /// The stored events of a computer, oldest first.
    pub fn wusp_events_of(&self, computer_id: &str) -> Result<Vec<EventRow>> {
        let mut st = self.conn().prepare_cached(
            "SELECT instance_id, time_at_target, namespace_id, event_id, source_id, update_id, revision, hresult, \
             app_name, replacement, misc FROM wusp_events WHERE computer_id = ?1 ORDER BY arrival",
        )?;
        let rows = st.query_map([computer_id], |r| {
            Ok(EventRow {
                instance_id: r.get(0)?,
                time_at_target: r.get(1)?,
                namespace_id: r.get(2)?,
                event_id: r.get(3)?,
                source_id: r.get(4)?,
                update_id: r.get(5)?,
                revision: r.get(6)?,
                hresult: r.get(7)?,
                app_name: r.get(8)?,
                replacement: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
                misc: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

fn split_groups(s: Option<String>) -> Vec<String> {
    s.map(|s| {
        s.split(';')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Milliseconds since the unix epoch.
pub fn now_millis() -> i64 {
    let t = time::OffsetDateTime::now_utc();
    t.unix_timestamp() * 1000 + i64::from(t.millisecond())
}

/// A write transaction that takes the write lock at BEGIN (IMMEDIATE):
/// these transactions read before they write, and a deferred one would
/// fail at once with SQLITE_BUSY when another connection wrote in between,
/// where an immediate one waits its turn under the busy timeout.
pub(crate) fn immediate(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Mode;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::init(&d.path().join("s"), "t", Mode::Autonomous).unwrap();
        (d, s)
    }

    fn event(id: &str, event_id: i64) -> EventRow {
        EventRow {
            instance_id: id.into(),
            time_at_target: "2026-10-04T15:20:47.397Z".into(),
            namespace_id: 1,
            event_id,
            source_id: 101,
            update_id: None,
            revision: None,
            hresult: 0,
            app_name: None,
            replacement: vec![],
            misc: vec!["B=3".into()],
        }
    }

    #[test]
    fn registration_adopts_a_named_computer_and_updates_its_own() {
        let (_d, mut s) = store();
        let added = s.add_computer("ws-1", None).unwrap();
        let reg = Registration {
            client_id: "e1da06a3-5601-43c9-bac3-52d5db701494".into(),
            dns_name: "WS-1".into(),
            arch: Some("AMD64".into()),
            ..Registration::default()
        };
        let c = s.wusp_register(&reg).unwrap();
        assert_eq!(c.computer_id, added.id);
        assert_eq!(s.wusp_register(&reg).unwrap().computer_id, added.id);
        // Another client of the same name is another computer.
        let other = Registration {
            client_id: "00000000-0000-0000-0000-000000000001".into(),
            ..reg.clone()
        };
        let o = s.wusp_register(&other).unwrap();
        assert_eq!(o.computer_id, other.client_id);
        assert_eq!(o.group_id, UNASSIGNED_COMPUTERS.0);
        assert_eq!(s.list_computers().unwrap().len(), 2);
        assert_eq!(s.wusp_computer("nope").unwrap(), None);
    }

    #[test]
    fn events_are_stored_once_and_bounded() {
        let (_d, s) = store();
        let c = s
            .wusp_register(&Registration {
                client_id: "c".into(),
                dns_name: "c".into(),
                ..Registration::default()
            })
            .unwrap();
        let batch = [event("a", 147), event("b", 156), event("a", 147)];
        let mut seen = Vec::new();
        let n = s
            .wusp_report(&c.computer_id, &batch, 3, |f| {
                seen = f.to_vec();
                vec![StatusChange::Set("u".into(), UpdateState::Needed)]
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, [true, true, false]);
        let again = s
            .wusp_report(&c.computer_id, &batch[..1], 3, |_| vec![])
            .unwrap();
        assert_eq!(again, 0);
        s.wusp_report(&c.computer_id, &[event("c", 1), event("d", 2)], 3, |_| {
            vec![StatusChange::Snapshot(vec![(
                "v".into(),
                UpdateState::Installed,
            )])]
        })
        .unwrap();
        let ids: Vec<_> = s
            .wusp_events_of(&c.computer_id)
            .unwrap()
            .into_iter()
            .map(|e| e.instance_id)
            .collect();
        assert_eq!(ids, ["b", "c", "d"]);
        assert_eq!(
            s.wusp_status_of(&c.computer_id).unwrap(),
            [("v".to_string(), UpdateState::Installed)]
        );
    }

    #[test]
    fn targeting_defaults_to_server_and_changes_the_configuration() {
        let (_d, s) = store();
        assert_eq!(s.targeting().unwrap(), Targeting::Server);
        let before = s.config_value(CONFIG_LAST_CHANGE).unwrap();
        s.set_targeting(Targeting::Client).unwrap();
        assert_eq!(s.targeting().unwrap(), Targeting::Client);
        assert_ne!(s.config_value(CONFIG_LAST_CHANGE).unwrap(), before);
        assert_eq!(s.config_value_or_init("k", || "1".into()).unwrap(), "1");
        assert_eq!(s.config_value_or_init("k", || "2".into()).unwrap(), "1");
    }
}
