//! Target groups and computers (MS-WSUSOD 2.5.3.1–2.5.3.2).
//!
//! Groups form a tree under the built-in "All Computers"; "Unassigned
//! Computers" holds computers no group was chosen for. Group names are
//! unique without regard to case. Group changes are replicated state and
//! journaled; computers are local to a server and are not.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::journal::{self, ChangeKind};
use crate::store::{ALL_COMPUTERS, Store, UNASSIGNED_COMPUTERS, now_rfc3339};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub builtin: bool,
    pub computers: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Computer {
    pub id: String,
    pub name: String,
    pub group: String,
    pub added: String,
}

impl Store {
    /// Resolves a group name (case-insensitive) or id to its id.
    pub fn group_id(&self, name: &str) -> Result<String> {
        let found: Option<String> = self
            .conn()
            .query_row(
                "SELECT group_id FROM groups WHERE name = ?1 COLLATE NOCASE OR group_id = lower(?1)",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        found.ok_or_else(|| Error::UnknownGroup(name.to_string()))
    }

    pub fn list_groups(&self) -> Result<Vec<Group>> {
        let mut st = self.conn().prepare(
            "SELECT g.group_id, g.name, p.name, g.builtin, \
             (SELECT COUNT(*) FROM computers c WHERE c.group_id = g.group_id) \
             FROM groups g LEFT JOIN groups p ON p.group_id = g.parent_id \
             ORDER BY g.builtin DESC, g.name COLLATE NOCASE",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Group {
                id: r.get(0)?,
                name: r.get(1)?,
                parent: r.get(2)?,
                builtin: r.get::<_, i64>(3)? != 0,
                computers: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Adds a group under `parent` (default "All Computers").
    pub fn add_group(&mut self, name: &str, parent: Option<&str>) -> Result<Group> {
        let name = name.trim();
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "group name",
                format!("{name:?} must be 1-256 printable characters"),
            ));
        }
        if self.group_id(name).is_ok() {
            return Err(Error::GroupExists(name.to_string()));
        }
        let parent_id = match parent {
            Some(p) => self.group_id(p)?,
            None => ALL_COMPUTERS.0.to_string(),
        };
        if parent_id == UNASSIGNED_COMPUTERS.0 {
            return Err(Error::Refused(
                "groups cannot be created under \"Unassigned Computers\"".into(),
            ));
        }
        let id = Uuid::new_v4().to_string();
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        let seq = journal::record(&tx, ChangeKind::GroupAdded, &id, &now)?;
        tx.execute(
            "INSERT INTO groups (group_id, name, parent_id, builtin, seq) VALUES (?1, ?2, ?3, 0, ?4)",
            params![id, name, parent_id, seq],
        )?;
        tx.commit()?;
        let parent_name: String = self.conn().query_row(
            "SELECT name FROM groups WHERE group_id = ?1",
            [&parent_id],
            |r| r.get(0),
        )?;
        Ok(Group {
            id,
            name: name.to_string(),
            parent: Some(parent_name),
            builtin: false,
            computers: 0,
        })
    }

    /// Removes a group: refused for built-in groups and groups with
    /// subgroups. Its computers move to "Unassigned Computers" and its
    /// deployments are removed (kept as dead deployments), all journaled.
    pub fn remove_group(&mut self, name: &str) -> Result<String> {
        let id = self.group_id(name)?;
        if id == ALL_COMPUTERS.0 || id == UNASSIGNED_COMPUTERS.0 {
            return Err(Error::Refused(format!(
                "group {name:?} is built in and cannot be removed"
            )));
        }
        let children: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM groups WHERE parent_id = ?1",
            [&id],
            |r| r.get(0),
        )?;
        if children > 0 {
            return Err(Error::Refused(format!(
                "group {name:?} has {children} subgroup(s); remove them first"
            )));
        }
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        let dead: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT deployment_id FROM deployments WHERE group_id = ?1 AND removed = 0",
            )?;
            let rows = st.query_map([&id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for d in dead {
            let seq = journal::record(&tx, ChangeKind::DeploymentRemoved, &d, &now)?;
            tx.execute(
                "UPDATE deployments SET removed = 1, last_change_seq = ?2 WHERE deployment_id = ?1",
                params![d, seq],
            )?;
        }
        tx.execute(
            "UPDATE computers SET group_id = ?2 WHERE group_id = ?1",
            params![id, UNASSIGNED_COMPUTERS.0],
        )?;
        journal::record(&tx, ChangeKind::GroupRemoved, &id, &now)?;
        tx.execute("DELETE FROM groups WHERE group_id = ?1", [&id])?;
        tx.commit()?;
        Ok(id)
    }

    /// Adds a computer (to "Unassigned Computers" unless a group is named).
    pub fn add_computer(&mut self, name: &str, group: Option<&str>) -> Result<Computer> {
        let name = name.trim();
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "computer name",
                format!("{name:?} must be 1-256 printable characters"),
            ));
        }
        let group_id = match group {
            Some(g) => self.group_id(g)?,
            None => UNASSIGNED_COMPUTERS.0.to_string(),
        };
        if group_id == ALL_COMPUTERS.0 {
            return Err(Error::Refused(
                "computers belong to a group under \"All Computers\", not to it directly".into(),
            ));
        }
        let exists: Option<String> = self
            .conn()
            .query_row(
                "SELECT computer_id FROM computers WHERE name = ?1 COLLATE NOCASE",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(Error::ComputerExists(name.to_string()));
        }
        let id = Uuid::new_v4().to_string();
        let added = now_rfc3339();
        self.conn().execute(
            "INSERT INTO computers (computer_id, name, group_id, added) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, group_id, added],
        )?;
        let group: String = self.conn().query_row(
            "SELECT name FROM groups WHERE group_id = ?1",
            [&group_id],
            |r| r.get(0),
        )?;
        Ok(Computer {
            id,
            name: name.to_string(),
            group,
            added,
        })
    }

    pub fn list_computers(&self) -> Result<Vec<Computer>> {
        let mut st = self.conn().prepare(
            "SELECT c.computer_id, c.name, g.name, c.added FROM computers c JOIN groups g ON g.group_id = c.group_id \
             ORDER BY c.name COLLATE NOCASE",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Computer {
                id: r.get(0)?,
                name: r.get(1)?,
                group: r.get(2)?,
                added: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
