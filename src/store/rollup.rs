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
            tx.execute(
                "DELETE FROM rollup_computers WHERE upstream_url = ?1",
                [upstream],
            )?;
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
    pub fn rollup_local_computers(&self, upstream: &str) -> Result<Vec<RollupComputer>> {
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
                    .map(|s| {
                        s.split(';')
                            .filter(|g| !g.is_empty())
                            .map(String::from)
                            .collect()
                    })
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
    pub fn rollup_status(
        &self,
        computer_id: &str,
        since: Option<&str>,
    ) -> Result<Vec<RollupStatus>> {
        let mut st = self.conn().prepare_cached(
            "SELECT update_id, state, changed FROM wusp_status \
             WHERE computer_id = ?1 AND (?2 IS NULL OR changed > ?2) ORDER BY changed, update_id",
        )?;
        let rows = st.query_map(rusqlite::params![computer_id, since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
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
            &format!(
                "UPDATE rollup_computers SET {set} WHERE upstream_url = ?1 AND computer_id = ?2"
            ),
            [upstream, computer_id],
        )?;
        Ok(())
    }

    /// The upstream took these computers' details (`true`), or asked for
    /// them again (`NewParent`: `false`).
    pub fn rollup_details_sent(&self, upstream: &str, ids: &[String], sent: bool) -> Result<()> {
        let set = if sent {
            "details_sent = 1"
        } else {
            "details_sent = 0"
        };
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
            Ok(count(
                c.query_row(sql, [], |r| r.get::<_, i64>(0))
                    .during("counting for the rollup")?,
            ))
        };
        const REP: &str =
            "SELECT update_id FROM updates WHERE kind IN ('software', 'driver') AND declined = 0";
        const APPROVED: &str = "EXISTS (SELECT 1 FROM deployments d WHERE d.update_id = u.update_id \
                                AND d.removed = 0 AND d.action = 'install')";
        Ok(ServerCounts {
            updates: one("SELECT COUNT(*) FROM updates")?,
            declined: one("SELECT COUNT(*) FROM updates WHERE declined = 1")?,
            approved: one(&format!(
                "SELECT COUNT(*) FROM updates u WHERE u.declined = 0 AND {APPROVED}"
            ))?,
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

// ---------------------------------------------------------------------------
// USS side: what downstream servers roll up, kept as sites (`store::sites`'
// tables), so a server that reports online shows as a report bundle's
// site does.
// ---------------------------------------------------------------------------

/// A downstream server as it rolls itself up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledServer {
    pub server_id: String,
    pub name: String,
    /// When it rolled up (RFC 3339; the spec's LastRollupTime, its clock).
    pub rollup_time: Option<String>,
}

/// A computer as a downstream server rolls it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledComputer {
    pub server_id: String,
    pub computer_id: String,
    pub last_sync: Option<String>,
    pub last_report: Option<String>,
    /// `None` when the rollup carried no details.
    pub details: Option<RolledDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledDetails {
    pub name: String,
    pub group_id: Option<String>,
    pub os_description: Option<String>,
    pub arch: Option<String>,
}

/// One computer's status as rolled up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledStatus {
    pub computer_id: String,
    pub rollup_number: i32,
    pub full: bool,
    /// (update id, state, changed).
    pub rows: Vec<(String, UpdateState, String)>,
}

impl Store {
    /// The RollupResetGuid this server gives its downstream servers (made
    /// once per store).
    pub fn rollup_reset_guid(&self) -> Result<String> {
        self.config_value_or_init("rollup_reset_guid", || uuid::Uuid::new_v4().to_string())
    }

    /// Rule: a server may roll up when it authorized with this one as a
    /// downstream server (the DSS table) or is a site already.
    pub fn rollup_server_known(&self, server_id: &str) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM downstream_servers WHERE server_id = ?1) \
                 OR EXISTS (SELECT 1 FROM sites WHERE server_id = ?1)",
                [server_id],
                |r| r.get(0),
            )
            .during("reading the downstream servers")
    }

    /// RollupDownstreamServers: each server becomes (or stays) a site whose
    /// source is `rollup`, with this server's groups, reportable updates
    /// and install approvals as its own (a replica's are this server's).
    /// A rollup older than the one stored is ignored (3.1.4.14).
    pub fn rollup_record_servers(&self, servers: &[RolledServer]) -> Result<()> {
        let tx = super::wusp::immediate(self.conn())?;
        let now = super::now_rfc3339();
        for s in servers {
            let stored: Option<String> = tx
                .query_row(
                    "SELECT created FROM sites WHERE server_id = ?1 AND source = 'rollup'",
                    [&s.server_id],
                    |r| r.get(0),
                )
                .optional()?;
            let when = s.rollup_time.clone().unwrap_or_else(|| now.clone());
            if stored.as_deref().is_some_and(|t| t > when.as_str()) {
                continue;
            }
            let anchor = self.anchor()?.to_string();
            tx.execute(
                "INSERT INTO sites (server_id, name, created, anchor, source, content_check, updated) \
                 VALUES (?1, ?2, ?3, ?4, 'rollup', 'none', ?5) ON CONFLICT (server_id) DO UPDATE SET \
                 name = excluded.name, created = excluded.created, anchor = excluded.anchor, \
                 source = excluded.source, content_check = excluded.content_check, updated = excluded.updated",
                rusqlite::params![s.server_id, s.name, when, anchor, now],
            )?;
            for table in [
                "site_groups",
                "site_updates",
                "site_approvals",
                "site_content",
                "site_imports",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE server_id = ?1"),
                    [&s.server_id],
                )?;
            }
            tx.execute(
                "INSERT INTO site_groups (server_id, group_id, name, parent_id) \
                 SELECT ?1, group_id, name, parent_id FROM groups",
                [&s.server_id],
            )?;
            tx.execute(
                "INSERT INTO site_updates (server_id, update_id, title) \
                 SELECT ?1, u.update_id, COALESCE(r.title, '') FROM updates u \
                 JOIN revisions r ON r.rev_id = u.current_rev \
                 WHERE u.kind IN ('software', 'driver') AND u.declined = 0",
                [&s.server_id],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO site_approvals (server_id, update_id, group_id) \
                 SELECT ?1, d.update_id, d.group_id FROM deployments d \
                 JOIN site_updates su ON su.server_id = ?1 AND su.update_id = d.update_id \
                 WHERE d.removed = 0 AND d.action = 'install'",
                [&s.server_id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// RollupComputers: records each computer under its server's site.
    /// Returns the computers whose details are wanted (new here, or moved
    /// from another server, and sent without details: NewParent). A
    /// computer whose stored last sync is newer is left alone (3.1.4.15).
    pub fn rollup_record_computers(&self, computers: &[RolledComputer]) -> Result<Vec<String>> {
        let tx = super::wusp::immediate(self.conn())?;
        let mut wanted = Vec::new();
        for c in computers {
            let stored: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT server_id, last_sync FROM site_computers WHERE computer_id = ?1 \
                     ORDER BY server_id = ?2 DESC LIMIT 1",
                    [&c.computer_id, &c.server_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let moved = stored.as_ref().is_some_and(|(s, _)| *s != c.server_id);
            if let Some((_, Some(t))) = &stored
                && !moved
                && c.last_sync.as_deref().is_none_or(|n| t.as_str() > n)
            {
                continue;
            }
            match &c.details {
                None if stored.is_none() || moved => {
                    wanted.push(c.computer_id.clone());
                }
                None => {
                    tx.execute(
                        "UPDATE site_computers SET last_sync = ?3, last_report = ?4 \
                         WHERE server_id = ?1 AND computer_id = ?2",
                        rusqlite::params![c.server_id, c.computer_id, c.last_sync, c.last_report],
                    )?;
                }
                Some(d) => {
                    if moved {
                        tx.execute(
                            "DELETE FROM site_status WHERE computer_id = ?1",
                            [&c.computer_id],
                        )?;
                        tx.execute(
                            "DELETE FROM site_computers WHERE computer_id = ?1",
                            [&c.computer_id],
                        )?;
                    }
                    tx.execute(
                        "INSERT INTO site_computers (server_id, computer_id, name, group_id, os_description, \
                         arch, last_sync, last_report) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (server_id, computer_id) DO UPDATE SET name = excluded.name, \
                         group_id = excluded.group_id, os_description = excluded.os_description, \
                         arch = excluded.arch, last_sync = excluded.last_sync, last_report = excluded.last_report",
                        rusqlite::params![
                            c.server_id,
                            c.computer_id,
                            d.name,
                            d.group_id.as_deref().unwrap_or(super::UNASSIGNED_COMPUTERS.0),
                            d.os_description,
                            d.arch,
                            c.last_sync,
                            c.last_report
                        ],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(wanted)
    }

    /// GetOutOfSyncComputers: of the computers `server_id` names with the
    /// last rollup number it sent, those whose number here differs (3.1.4.16).
    pub fn rollup_out_of_sync(
        &self,
        server_id: &str,
        numbers: &[(String, i32)],
    ) -> Result<Vec<String>> {
        let mut st = self.conn().prepare_cached(
            "SELECT rollup_number FROM site_computers WHERE server_id = ?1 AND computer_id = ?2",
        )?;
        let mut out = Vec::new();
        for (id, n) in numbers {
            let stored: Option<Option<i64>> =
                st.query_row([server_id, id], |r| r.get(0)).optional()?;
            if let Some(stored) = stored
                && stored != Some(i64::from(*n))
            {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// RollupComputerStatus: per computer of `server_id`'s site, the rollup
    /// number, and its status rows (all replaced by a full rollup; a row
    /// older than the one stored is ignored) (3.1.4.17). Computers not
    /// rolled up first are ignored.
    pub fn rollup_record_status(&self, server_id: &str, list: &[RolledStatus]) -> Result<()> {
        let tx = super::wusp::immediate(self.conn())?;
        for c in list {
            let n = tx.execute(
                "UPDATE site_computers SET rollup_number = ?3 WHERE server_id = ?1 AND computer_id = ?2",
                rusqlite::params![server_id, c.computer_id, c.rollup_number],
            )?;
            if n == 0 {
                continue;
            }
            if c.full {
                tx.execute(
                    "DELETE FROM site_status WHERE server_id = ?1 AND computer_id = ?2",
                    [server_id, &c.computer_id],
                )?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO site_status (server_id, computer_id, update_id, state, changed) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (server_id, computer_id, update_id) \
                 DO UPDATE SET state = excluded.state, changed = excluded.changed \
                 WHERE excluded.changed >= site_status.changed",
            )?;
            for (update, state, changed) in &c.rows {
                st.execute(rusqlite::params![
                    server_id,
                    c.computer_id,
                    update,
                    state.as_str(),
                    changed
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
