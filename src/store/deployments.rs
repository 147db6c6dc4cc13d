//! Approvals ("deployments" of an update revision to a target group) and
//! declines (MS-WSUSOD 2.5.3.3–2.5.3.4; the Deployment table of MS-WSUSSS
//! 3.1.1).
//!
//! Rules:
//! - At most one live deployment per (update, group). Approving again
//!   changes it (new revision, action, deadline) under the same DeploymentID.
//! - Removed deployments stay as dead deployments for downstream servers.
//! - Declining an update removes its live deployments; a declined update
//!   cannot be approved.
//! - A replica server takes approvals only from upstream.

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::state::DeploymentRecord;
use crate::store::journal::{Anchor, ChangeKind};
use crate::store::state;
use crate::store::{Mode, Store, now_rfc3339};

/// MS-WSUSSS deployment actions gapsync offers (Action 0, 1 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Install,
    Uninstall,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Uninstall => "uninstall",
            Action::Block => "block",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "install" => Some(Action::Install),
            "uninstall" => Some(Action::Uninstall),
            "block" => Some(Action::Block),
            _ => None,
        }
    }
    /// The wire value of MS-WSUSSS 3.1.1 (0 install, 1 uninstall, 3 block).
    pub fn wire_value(self) -> i32 {
        match self {
            Action::Install => 0,
            Action::Uninstall => 1,
            Action::Block => 3,
        }
    }
}

/// A row of `deployments list --json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deployment {
    pub deployment_id: String,
    pub update_id: String,
    pub revision: i32,
    /// The group's name; for a removed group the name it had (its id when
    /// this server never knew the name).
    pub group: String,
    pub group_id: String,
    pub action: String,
    pub admin_name: String,
    pub deadline: Option<String>,
    pub go_live: String,
    pub download_priority: i64,
    pub is_assigned: bool,
    /// This server's anchor of the last change (server-local, so not in
    /// the list JSON, which compares equal across replicated servers).
    #[serde(skip_serializing)]
    pub last_changed_anchor: String,
}

#[derive(Debug, Clone)]
pub struct Approval<'a> {
    pub update_id: &'a str,
    pub group: &'a str,
    pub action: Action,
    /// RFC 3339.
    pub deadline: Option<&'a str>,
    pub admin_name: &'a str,
}

/// Rule: deadlines are RFC 3339 timestamps; stored normalised to UTC.
pub fn normalise_deadline(s: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| Error::invalid("deadline", format!("{s:?} is not RFC 3339 ({e})")))?;
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| Error::invalid("deadline", e.to_string()))
}

/// Rule: only software and driver updates are approved or declined;
/// categories and detectoids are catalog structure.
fn refuse_category_or_detectoid(update_id: &str, kind: &str, what: &'static str) -> Result<()> {
    if kind == "category" || kind == "detectoid" {
        return Err(Error::NotSoftware {
            update_id: update_id.to_string(),
            kind: kind.to_string(),
            what,
        });
    }
    Ok(())
}

impl Store {
    pub(crate) fn refuse_on_replica(&self, what: &str) -> Result<()> {
        if self.info().mode == Mode::Replica {
            return Err(Error::ReplicaRefuses {
                what: what.to_string(),
            });
        }
        Ok(())
    }

    /// Approves the current revision of an update for a group (creates or
    /// changes the deployment).
    pub fn approve(&mut self, a: &Approval<'_>) -> Result<Deployment> {
        self.refuse_on_replica("approvals")?;
        let update_id = self.resolve_update(a.update_id)?;
        let group_id = self.group_id(a.group)?;
        let deadline = a.deadline.map(normalise_deadline).transpose()?;
        let (revision, declined, kind): (i32, bool, String) = self.conn().query_row(
            "SELECT r.revision, u.declined, u.kind FROM updates u JOIN revisions r ON r.rev_id = u.current_rev WHERE u.update_id = ?1",
            [&update_id],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?)),
        )?;
        if declined {
            return Err(Error::UpdateDeclined(update_id.to_string()));
        }
        refuse_category_or_detectoid(&update_id, &kind, "approved")?;
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        let (id, kind) = match state::live_deployment(&tx, &update_id, &group_id)? {
            Some(id) => (id, ChangeKind::DeploymentChanged),
            None => (Uuid::new_v4().to_string(), ChangeKind::DeploymentCreated),
        };
        // A change keeps what the deployment had; a new one is assigned
        // with the default download priority (1).
        let old = state::deployment_record(&tx, &id)?;
        let record = DeploymentRecord {
            deployment_id: id.clone(),
            update_id: update_id.clone(),
            revision,
            group_id: group_id.clone(),
            action: a.action.as_str().to_string(),
            admin_name: a.admin_name.to_string(),
            deadline,
            go_live: now.clone(),
            download_priority: old.as_ref().map_or(1, |o| o.download_priority),
            is_assigned: old.as_ref().is_none_or(|o| o.is_assigned),
            removed: false,
        };
        state::write_deployment(&tx, &record, kind, &now)?;
        tx.commit()?;
        self.deployment(&id)?
            .ok_or_else(|| Error::Corrupt(format!("deployment {id} vanished")))
    }

    /// Declines an update: marks it declined and removes its deployments.
    /// Declining an already declined update changes nothing.
    pub fn decline(&mut self, update_id: &str) -> Result<bool> {
        self.refuse_on_replica("declines")?;
        let update_id = self.resolve_update(update_id)?;
        let (declined, kind): (bool, String) = self.conn().query_row(
            "SELECT declined, kind FROM updates WHERE update_id = ?1",
            [&update_id],
            |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)),
        )?;
        refuse_category_or_detectoid(&update_id, &kind, "declined")?;
        if declined {
            return Ok(false);
        }
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        let live: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT deployment_id FROM deployments WHERE update_id = ?1 AND removed = 0",
            )?;
            let rows = st.query_map([&update_id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for d in live {
            state::remove_deployment(&tx, &d, &now)?;
        }
        state::decline_update(&tx, &update_id, &now)?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes the live deployment of an update to a group.
    pub fn unapprove(&mut self, update_id: &str, group: &str) -> Result<String> {
        self.refuse_on_replica("approvals")?;
        let update_id = self.resolve_update(update_id)?;
        let group_id = self.group_id(group)?;
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        let id = state::live_deployment(&tx, &update_id, &group_id)?.ok_or_else(|| {
            Error::NotApproved {
                update_id: update_id.to_string(),
                group: group.to_string(),
            }
        })?;
        state::remove_deployment(&tx, &id, &now)?;
        tx.commit()?;
        Ok(id)
    }

    fn deployment_rows(&self, where_sql: &str, arg: &str) -> Result<Vec<Deployment>> {
        let sql = format!(
            "SELECT d.deployment_id, d.update_id, d.revision, COALESCE(g.name, rg.name, d.group_id), d.group_id, d.action, d.admin_name, d.deadline, \
             d.go_live, d.download_priority, d.is_assigned, d.last_change_seq \
             FROM deployments d LEFT JOIN groups g ON g.group_id = d.group_id \
             LEFT JOIN removed_groups rg ON rg.group_id = d.group_id WHERE {where_sql} \
             ORDER BY d.update_id, 4 COLLATE NOCASE"
        );
        let server_id = self.info().server_id;
        let mut st = self.conn().prepare(&sql)?;
        let rows = st.query_map(
            rusqlite::params_from_iter(std::iter::once(arg).filter(|a| !a.is_empty())),
            |r| {
                Ok(Deployment {
                    deployment_id: r.get(0)?,
                    update_id: r.get(1)?,
                    revision: r.get(2)?,
                    group: r.get(3)?,
                    group_id: r.get(4)?,
                    action: r.get(5)?,
                    admin_name: r.get(6)?,
                    deadline: r.get(7)?,
                    go_live: r.get(8)?,
                    download_priority: r.get(9)?,
                    is_assigned: r.get::<_, i64>(10)? != 0,
                    last_changed_anchor: Anchor {
                        server_id,
                        seq: r.get(11)?,
                    }
                    .to_string(),
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Live deployments.
    pub fn list_deployments(&self) -> Result<Vec<Deployment>> {
        self.deployment_rows("d.removed = 0", "")
    }

    /// Removed ("dead") deployments.
    pub fn list_dead_deployments(&self) -> Result<Vec<Deployment>> {
        self.deployment_rows("d.removed = 1", "")
    }

    pub fn deployment(&self, id: &str) -> Result<Option<Deployment>> {
        Ok(self
            .deployment_rows("d.deployment_id = ?1", id)?
            .into_iter()
            .next())
    }
}
