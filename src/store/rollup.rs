//! What a downstream server keeps to roll its computers and their status up
//! to an upstream (MS-WSUSSS 3.2.4.5, the DSS side of the reporting web
//! service), and what it reads to do so.
//!
//! Per upstream: the upstream's RollupResetGuid last seen (a new one means
//! the upstream forgot: everything is sent again). Per upstream and
//! computer: whether its details were sent (the spec's HasDetailsChanged,
//! inverted), the last status RollupNumber sent, and the newest status
//! change sent (LastStatusRollupTime; NULL: send the full status next), or
//! that the upstream asked to stop hearing of it (`Deleted`).

use rusqlite::OptionalExtension;

use super::Store;
use super::wusp::UpdateState;
use crate::error::{DbContext, Result};

/// A local computer as the rollup sends it, with its rollup bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupComputer {
    pub computer_id: String,
    pub name: String,
    pub group_id: String,
    pub client_groups: Vec<String>,
    pub os_version: Option<String>,
    pub os_description: Option<String>,
    pub arch: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub client_version: Option<String>,
    pub last_sync: Option<String>,
    pub last_report: Option<String>,
    pub details_sent: bool,
    pub rollup_number: i32,
    /// Newest status change sent; `None`: the next status rollup is full.
    pub status_rolled_up: Option<String>,
}

/// A status row to roll up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupStatus {
    pub update_id: String,
    pub state: UpdateState,
    pub changed: String,
}

/// The counts of the server summary gapsync can compute (the others are
/// sent as 0; docs/protocol.md lists which).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounts {
    pub updates: u32,
    pub declined: u32,
    pub approved: u32,
    pub not_approved: u32,
    pub updates_with_client_errors: u32,
    pub updates_needing_files: u32,
    pub updates_needed: u32,
    pub updates_up_to_date: u32,
    pub custom_groups: u32,
    pub computers: u32,
    pub computers_needing: u32,
    pub computers_with_errors: u32,
    pub computers_up_to_date: u32,
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl Store {
    /// Starts a rollup to `upstream` whose RollupResetGuid is `reset`:
    /// when it differs from the one last seen, every computer is sent in
    /// full again. Returns whether it was reset.
    pub fn rollup_begin(&self, upstream: &str, reset: &str) -> Result<bool> {
        let tx = super::wusp::immediate(self.conn())?;
        let seen: Option<String> = tx
            .query_row(
                "SELECT reset_guid FROM rollup_upstream WHERE upstream_url = ?1",
                [upstream],
                |r| r.get(0),
            )
            .optional()
            .during("reading the rollup state")?;
        let reset_now = seen.as_deref() != Some(reset);
        if reset_now {
            tx.execute(
                "INSERT INTO rollup_upstream (upstream_url, reset_guid) VALUES (?1, ?2) \
                 ON CONFLICT (upstream_url) DO UPDATE SET reset_guid = excluded.reset_guid",
                [upstream, reset],
            )?;
            tx.execute("DELETE FROM rollup_computers WHERE upstream_url = ?1", [upstream])?;
        }
        tx.commit()?;
        Ok(reset_now)
    }

    /// When this server last rolled up to `upstream`.
    pub fn rollup_last(&self, upstream: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_rollup FROM rollup_upstream WHERE upstream_url = ?1",
                [upstream],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Records that the servers were rolled up to `upstream` at `when`.
    pub fn rollup_servers_sent(&self, upstream: &str, when: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE rollup_upstream SET last_rollup = ?2 WHERE upstream_url = ?1",
            [upstream, when],
        )?;
        Ok(())
    }

    /// Every local computer the upstream has not asked to forget, with its
    /// bookkeeping for `upstream`, by id.
    pub fn rollup_computers(&self, upstream: &str) -> Result<Vec<RollupComputer>> {
        let mut st = self.conn().prepare(
            "SELECT c.computer_id, c.name, c.group_id, c.client_groups, c.os_version, c.os_description, \
             c.arch, c.manufacturer, c.model, c.client_version, c.last_sync, c.last_report, \
             COALESCE(r.details_sent, 0), COALESCE(r.rollup_number, 0), r.status_rolled_up \
             FROM computers c LEFT JOIN rollup_computers r \
               ON r.upstream_url = ?1 AND r.computer_id = c.computer_id \
             WHERE COALESCE(r.deleted, 0) = 0 ORDER BY c.computer_id",
        )?;
        let rows = st.query_map([upstream], |r| {
            Ok(RollupComputer {
                computer_id: r.get(0)?,
                name: r.get(1)?,
                group_id: r.get(2)?,
                client_groups: r
                    .get::<_, Option<String>>(3)?
                    .map(|s| s.split(';').filter(|g| !g.is_empty()).map(String::from).collect())
                    .unwrap_or_default(),
                os_version: r.get(4)?,
                os_description: r.get(5)?,
                arch: r.get(6)?,
                make: r.get(7)?,
                model: r.get(8)?,
                client_version: r.get(9)?,
                last_sync: r.get(10)?,
                last_report: r.get(11)?,
                details_sent: r.get(12)?,
                rollup_number: r.get(13)?,
                status_rolled_up: r.get(14)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A computer's status rows changed after `since` (all with `None`),
    /// oldest change first.
    pub fn rollup_status(&self, computer_id: &str, since: Option<&str>) -> Result<Vec<RollupStatus>> {
        let mut st = self.conn().prepare_cached(
            "SELECT update_id, state, changed FROM wusp_status \
             WHERE computer_id = ?1 AND (?2 IS NULL OR changed > ?2) ORDER BY changed, update_id",
        )?;
        let rows = st.query_map(rusqlite::params![computer_id, since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (update_id, state, changed) = r?;
            if let Some(state) = UpdateState::parse(&state) {
                out.push(RollupStatus {
                    update_id,
                    state,
                    changed,
                });
            }
        }
        Ok(out)
    }

    /// Sets `set` on the bookkeeping row of a computer, adding the row.
    fn rollup_row(&self, upstream: &str, computer_id: &str, set: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO rollup_computers (upstream_url, computer_id) VALUES (?1, ?2) \
             ON CONFLICT (upstream_url, computer_id) DO NOTHING",
            [upstream, computer_id],
        )?;
        self.conn().execute(
            &format!("UPDATE rollup_computers SET {set} WHERE upstream_url = ?1 AND computer_id = ?2"),
            [upstream, computer_id],
        )?;
        Ok(())
    }

    /// The upstream took these computers' details (`true`), or asked for
    /// them again (`NewParent`: `false`).
    pub fn rollup_details_sent(&self, upstream: &str, ids: &[String], sent: bool) -> Result<()> {
        let set = if sent { "details_sent = 1" } else { "details_sent = 0" };
        for id in ids {
            self.rollup_row(upstream, id, set)?;
        }
        Ok(())
    }

    /// The upstream asked to stop hearing of these computers (`Deleted`).
    pub fn rollup_forget(&self, upstream: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            self.rollup_row(upstream, id, "deleted = 1")?;
        }
        Ok(())
    }

    /// The upstream's status of these computers is out of date: their next
    /// status rollup is full (GetOutOfSyncComputers).
    pub fn rollup_mark_full(&self, upstream: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            self.rollup_row(upstream, id, "status_rolled_up = NULL")?;
        }
        Ok(())
    }

    /// The upstream accepted status rollup `number` of a computer, whose
    /// newest change was `newest` (kept when `None`: nothing changed).
    pub fn rollup_status_sent(
        &self,
        upstream: &str,
        computer_id: &str,
        number: i32,
        newest: Option<&str>,
    ) -> Result<()> {
        self.rollup_row(upstream, computer_id, "deleted = deleted")?;
        self.conn().execute(
            "UPDATE rollup_computers SET rollup_number = ?3, \
             status_rolled_up = COALESCE(?4, status_rolled_up, '') \
             WHERE upstream_url = ?1 AND computer_id = ?2",
            rusqlite::params![upstream, computer_id, number, newest],
        )?;
        Ok(())
    }

    /// The counts of this server's rollup summary, over the reportable
    /// updates of `store::reports` (software and drivers not declined).
    pub fn rollup_server_counts(&self) -> Result<ServerCounts> {
        let c = self.conn();
        let one = |sql: &str| -> Result<u32> {
            Ok(count(c.query_row(sql, [], |r| r.get::<_, i64>(0)).during("counting for the rollup")?))
        };
        const REP: &str = "SELECT update_id FROM updates WHERE kind IN ('software', 'driver') AND declined = 0";
        const APPROVED: &str = "EXISTS (SELECT 1 FROM deployments d WHERE d.update_id = u.update_id \
                                AND d.removed = 0 AND d.action = 'install')";
        Ok(ServerCounts {
            updates: one("SELECT COUNT(*) FROM updates")?,
            declined: one("SELECT COUNT(*) FROM updates WHERE declined = 1")?,
            approved: one(&format!("SELECT COUNT(*) FROM updates u WHERE u.declined = 0 AND {APPROVED}"))?,
            not_approved: one(&format!(
                "SELECT COUNT(*) FROM updates u WHERE u.declined = 0 AND NOT {APPROVED}"
            ))?,
            updates_with_client_errors: one(&format!(
                "SELECT COUNT(DISTINCT update_id) FROM wusp_status WHERE state = 'failed' AND update_id IN ({REP})"
            ))?,
            updates_needing_files: one(
                "SELECT COUNT(DISTINCT r.update_id) FROM files f JOIN revisions r ON r.rev_id = f.rev_id \
                 JOIN updates u ON u.current_rev = r.rev_id \
                 WHERE NOT EXISTS (SELECT 1 FROM content c WHERE c.sha1 = f.sha1)",
            )?,
            updates_needed: one(&format!(
                "SELECT COUNT(DISTINCT update_id) FROM wusp_status WHERE state IN ('needed', 'downloaded') \
                 AND update_id IN ({REP})"
            ))?,
            updates_up_to_date: one(&format!(
                "SELECT COUNT(*) FROM ({REP}) r WHERE EXISTS (SELECT 1 FROM wusp_status s \
                 WHERE s.update_id = r.update_id AND s.state = 'installed') AND NOT EXISTS \
                 (SELECT 1 FROM wusp_status s WHERE s.update_id = r.update_id \
                  AND s.state IN ('needed', 'downloaded', 'failed'))"
            ))?,
            custom_groups: one("SELECT COUNT(*) FROM groups WHERE builtin = 0")?,
            computers: one("SELECT COUNT(*) FROM computers")?,
            computers_needing: one(&format!(
                "SELECT COUNT(DISTINCT computer_id) FROM wusp_status WHERE state IN ('needed', 'downloaded') \
                 AND update_id IN ({REP})"
            ))?,
            computers_with_errors: one(&format!(
                "SELECT COUNT(DISTINCT computer_id) FROM wusp_status WHERE state = 'failed' AND update_id IN ({REP})"
            ))?,
            computers_up_to_date: one(&format!(
                "SELECT COUNT(*) FROM computers c WHERE EXISTS (SELECT 1 FROM wusp_status s \
                 WHERE s.computer_id = c.computer_id) AND NOT EXISTS (SELECT 1 FROM wusp_status s \
                 WHERE s.computer_id = c.computer_id AND s.state IN ('needed', 'downloaded', 'failed') \
                 AND s.update_id IN ({REP}))"
            ))?,
        })
    }
}
