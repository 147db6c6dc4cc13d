//! Reports over what Windows clients told this store (MS-WSUSOD's Monitor
//! Update Installation use case): status counts per computer and per
//! update, and the stored events. Read-only; the status rows themselves
//! are written by `store::wusp` from the clients' reports.
//!
//! The rules of a report, each in one place:
//! - **Reportable updates**: updates of kind software or driver that are
//!   not declined (categories and detectoids have no install status).
//!   With `approved`, only those approved for install for a group of the
//!   report (with `group`: that group or a group above it, whose approvals
//!   apply to it; without: any group).
//! - **Computers of a report**: all, or with `group` the computers of that
//!   group and of every group below it.
//! - **Sources**: this store's own computers and status, or a site's
//!   (`ReportSource::Site`: its reported computers, status, groups,
//!   reportable updates and approvals, `store::sites`), counted by these
//!   same rules. A roll-up (a store with sites, no site named) lists
//!   `report computers` rows of this store and every site, and sums
//!   `report updates` counts per update over them.
//! - **Counts**: a computer × update pair counts once, by its stored
//!   status: `installed`; `needed` (also `downloaded`: present but not yet
//!   installed); `failed`; `not_applicable`; `unknown` when the computer
//!   never reported a status for the update.

use rusqlite::OptionalExtension;
use serde::Serialize;

use super::Store;
use crate::error::{DbContext, Error, Result};

/// Counts of computer × update pairs by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub installed: i64,
    pub needed: i64,
    pub failed: i64,
    pub not_applicable: i64,
    pub unknown: i64,
}

impl StatusCounts {
    /// Adds `n` pairs in the stored state `state` (the module's counting
    /// rule).
    pub(crate) fn add(&mut self, state: &str, n: i64) {
        match state {
            "installed" => self.installed += n,
            "needed" | "downloaded" => self.needed += n,
            "failed" => self.failed += n,
            "not_applicable" => self.not_applicable += n,
            _ => self.unknown += n,
        }
    }

    /// Adds another set of counts.
    pub fn add_all(&mut self, o: &StatusCounts) {
        self.installed += o.installed;
        self.needed += o.needed;
        self.failed += o.failed;
        self.not_applicable += o.not_applicable;
        self.unknown += o.unknown;
    }

    /// Every pair counted, status or not.
    pub fn total(&self) -> i64 {
        self.known() + self.unknown
    }

    /// Pairs with a stored status.
    fn known(&self) -> i64 {
        self.installed + self.needed + self.failed + self.not_applicable
    }
}

/// One row of `report computers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputerReport {
    pub computer_id: String,
    pub name: String,
    pub group: String,
    #[serde(flatten)]
    pub counts: StatusCounts,
    pub last_report: Option<String>,
}

/// One row of `report updates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    pub update_id: String,
    pub title: String,
    #[serde(flatten)]
    pub counts: StatusCounts,
}

/// One stored event, with the computer it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventListing {
    pub computer_id: String,
    pub computer: String,
    /// When this store received it (RFC 3339, UTC).
    pub received: String,
    /// The client's own clock when it sent the batch.
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

/// Whose computers and status a report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource<'a> {
    /// This store's own (`computers`, `wusp_status`, its catalog,
    /// groups and approvals).
    Local,
    /// A site's latest report (`store::sites`), by the site's server id:
    /// its computers, status, groups, reportable updates and approvals.
    Site(&'a str),
}

/// This store's reportable updates, `upd(update_id, title)` (the first
/// rule of the module documentation).
pub(crate) const LOCAL_UPDATES: &str = "upd(update_id, title) AS (SELECT u.update_id, r.title FROM updates u \
     JOIN revisions r ON r.rev_id = u.current_rev WHERE u.kind IN ('software', 'driver') AND u.declined = 0)";
/// This store's live install approvals, `appr(update_id, group_id)`.
pub(crate) const LOCAL_APPROVALS: &str = "appr(update_id, group_id) AS (SELECT update_id, group_id \
     FROM deployments WHERE removed = 0 AND action = 'install')";

/// The tables a report reads, as the CTEs `grp`, `comp`, `stat`, `upd`
/// and `appr`; `?3` is the site's server id (NULL for `Local`).
fn source_ctes(source: ReportSource<'_>) -> String {
    match source {
        ReportSource::Local => format!(
            "grp(group_id, parent_id, name) AS (SELECT group_id, parent_id, name FROM groups WHERE ?3 IS NULL), \
             comp(computer_id, name, group_id, last_report) AS (SELECT computer_id, name, group_id, last_report FROM computers), \
             stat(computer_id, update_id, state) AS (SELECT computer_id, update_id, state FROM wusp_status), \
             {LOCAL_UPDATES}, {LOCAL_APPROVALS}"
        ),
        ReportSource::Site(_) => "grp(group_id, parent_id, name) AS (SELECT group_id, parent_id, name FROM site_groups WHERE server_id = ?3), \
             comp(computer_id, name, group_id, last_report) AS (SELECT computer_id, name, group_id, last_report FROM site_computers WHERE server_id = ?3), \
             stat(computer_id, update_id, state) AS (SELECT computer_id, update_id, state FROM site_status WHERE server_id = ?3), \
             upd(update_id, title) AS (SELECT update_id, title FROM site_updates WHERE server_id = ?3), \
             appr(update_id, group_id) AS (SELECT update_id, group_id FROM site_approvals WHERE server_id = ?3)"
            .to_string(),
    }
}

fn site_param<'a>(source: ReportSource<'a>) -> Option<&'a str> {
    match source {
        ReportSource::Local => None,
        ReportSource::Site(id) => Some(id),
    }
}

/// `sub(g)`: `?1`'s group and every group below it (all groups when `?1`
/// is NULL).
const SUBTREE: &str = "sub(g) AS (SELECT group_id FROM grp WHERE ?1 IS NULL OR group_id = ?1 \
     UNION SELECT c.group_id FROM grp c JOIN sub ON c.parent_id = sub.g)";
/// `above(g)`: `?1`'s group and every group above it (all groups when `?1`
/// is NULL).
const ABOVE: &str = "above(g) AS (SELECT group_id FROM grp WHERE ?1 IS NULL OR group_id = ?1 \
     UNION SELECT p.parent_id FROM grp p JOIN above ON p.group_id = above.g WHERE p.parent_id IS NOT NULL)";
/// `rep(update_id, title)`: the reportable updates (`?2`: approved only).
const REPORTABLE: &str = "rep(update_id, title) AS (SELECT upd.update_id, upd.title FROM upd \
     WHERE ?2 = 0 OR EXISTS ( \
       SELECT 1 FROM appr JOIN above ON above.g = appr.group_id WHERE appr.update_id = upd.update_id))";

/// One row of a roll-up of `report computers` over this store and its
/// sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteComputerReport {
    /// The site's name (this store's own name for its own computers).
    pub site: String,
    #[serde(flatten)]
    pub row: ComputerReport,
}

/// One row of a roll-up of `report updates`: per update, the sums of the
/// counts of every source that reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollupUpdateReport {
    pub update_id: String,
    pub title: String,
    #[serde(flatten)]
    pub counts: StatusCounts,
    /// How many sources (this store, each site) report the update.
    pub sites: i64,
}

impl Store {
    /// Resolves `group` (name or id) for a report of `source`.
    fn report_group(
        &self,
        source: ReportSource<'_>,
        group: Option<&str>,
    ) -> Result<Option<String>> {
        let Some(g) = group else { return Ok(None) };
        match source {
            ReportSource::Local => self.group_id(g).map(Some),
            ReportSource::Site(id) => self
                .conn()
                .query_row(
                    "SELECT group_id FROM site_groups WHERE server_id = ?1 AND (name = ?2 COLLATE NOCASE OR group_id = lower(?2))",
                    rusqlite::params![id, g],
                    |r| r.get(0),
                )
                .optional()
                .during("reading the site's groups")?
                .map(Some)
                .ok_or_else(|| Error::UnknownGroup(g.to_string())),
        }
    }

    /// `report computers`: each computer of the report with its counts
    /// over the reportable updates, by name.
    pub fn report_computers(&self, group: Option<&str>) -> Result<Vec<ComputerReport>> {
        self.report_computers_of(ReportSource::Local, group)
    }

    /// `report updates`: each reportable update with its counts over the
    /// computers of the report, by title.
    pub fn report_updates(&self, group: Option<&str>, approved: bool) -> Result<Vec<UpdateReport>> {
        self.report_updates_of(ReportSource::Local, group, approved)
    }

    /// [`Store::report_computers`] over `source`'s computers and status.
    pub fn report_computers_of(
        &self,
        source: ReportSource<'_>,
        group: Option<&str>,
    ) -> Result<Vec<ComputerReport>> {
        let group = self.report_group(source, group)?;
        let site = site_param(source);
        let ctes = source_ctes(source);
        let reportable: i64 = self
            .conn()
            .query_row(
                &format!("WITH RECURSIVE {ctes}, {ABOVE}, {REPORTABLE} SELECT COUNT(*) FROM rep"),
                rusqlite::params![group, false, site],
                |r| r.get(0),
            )
            .during("counting the reportable updates")?;
        // The counts are grouped first, then joined to the computers (a
        // join of each computer to the status rows is computers x rows).
        let mut st = self.conn().prepare(&format!(
            "WITH RECURSIVE {ctes}, {SUBTREE}, {ABOVE}, {REPORTABLE}, \
             cnt(computer_id, state, n) AS (SELECT s.computer_id, s.state, COUNT(*) \
               FROM stat s JOIN rep ON rep.update_id = s.update_id GROUP BY s.computer_id, s.state) \
             SELECT c.computer_id, c.name, g.name, c.last_report, k.state, k.n \
             FROM comp c JOIN sub ON sub.g = c.group_id JOIN grp g ON g.group_id = c.group_id \
             LEFT JOIN cnt k ON k.computer_id = c.computer_id \
             ORDER BY c.name COLLATE NOCASE, c.computer_id, k.state"
        ))?;
        let mut rows = st.query(rusqlite::params![group, false, site])?;
        let mut out: Vec<ComputerReport> = Vec::new();
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if out.last().is_none_or(|c| c.computer_id != id) {
                out.push(ComputerReport {
                    computer_id: id,
                    name: r.get(1)?,
                    group: r.get(2)?,
                    counts: StatusCounts::default(),
                    last_report: r.get(3)?,
                });
            }
            if let (Some(state), Some(c)) = (r.get::<_, Option<String>>(4)?, out.last_mut()) {
                c.counts.add(&state, r.get(5)?);
            }
        }
        for c in &mut out {
            c.counts.unknown = (reportable - c.counts.known()).max(0);
        }
        Ok(out)
    }

    /// [`Store::report_updates`] over `source`'s computers and status.
    pub fn report_updates_of(
        &self,
        source: ReportSource<'_>,
        group: Option<&str>,
        approved: bool,
    ) -> Result<Vec<UpdateReport>> {
        let group = self.report_group(source, group)?;
        let site = site_param(source);
        let ctes = source_ctes(source);
        let computers: i64 = self
            .conn()
            .query_row(
                &format!(
                    "WITH RECURSIVE {ctes}, {SUBTREE} SELECT COUNT(*) FROM comp c JOIN sub ON sub.g = c.group_id"
                ),
                rusqlite::params![group, approved, site],
                |r| r.get(0),
            )
            .during("counting the computers of the report")?;
        let mut st = self.conn().prepare(&format!(
            "WITH RECURSIVE {ctes}, {SUBTREE}, {ABOVE}, {REPORTABLE}, \
             mine(computer_id) AS (SELECT c.computer_id FROM comp c JOIN sub ON sub.g = c.group_id), \
             cnt(update_id, state, n) AS (SELECT s.update_id, s.state, COUNT(*) \
               FROM stat s JOIN mine ON mine.computer_id = s.computer_id GROUP BY s.update_id, s.state) \
             SELECT rep.update_id, rep.title, k.state, k.n \
             FROM rep LEFT JOIN cnt k ON k.update_id = rep.update_id \
             ORDER BY rep.title, rep.update_id, k.state"
        ))?;
        let mut rows = st.query(rusqlite::params![group, approved, site])?;
        let mut out: Vec<UpdateReport> = Vec::new();
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if out.last().is_none_or(|u| u.update_id != id) {
                out.push(UpdateReport {
                    update_id: id,
                    title: r.get(1)?,
                    counts: StatusCounts::default(),
                });
            }
            if let (Some(state), Some(u)) = (r.get::<_, Option<String>>(2)?, out.last_mut()) {
                u.counts.add(&state, r.get(3)?);
            }
        }
        for u in &mut out {
            u.counts.unknown = (computers - u.counts.known()).max(0);
        }
        Ok(out)
    }

    /// The sources of a roll-up: this store (named by its server name) and
    /// each site. With `group`, the sources that have such a group (none:
    /// unknown group).
    fn rollup_sources(&self, group: Option<&str>) -> Result<Vec<(String, Option<String>)>> {
        let mut all: Vec<(String, Option<String>)> = vec![(self.info().name.clone(), None)];
        for (id, name) in self.site_names()? {
            all.push((name, Some(id)));
        }
        let Some(g) = group else { return Ok(all) };
        let mut out = Vec::new();
        for (name, id) in all {
            let source = id
                .as_deref()
                .map_or(ReportSource::Local, ReportSource::Site);
            match self.report_group(source, Some(g)) {
                Ok(_) => out.push((name, id)),
                Err(Error::UnknownGroup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Err(Error::UnknownGroup(g.to_string()));
        }
        Ok(out)
    }

    /// `report computers` on a store with sites: the rows of this store
    /// and of every site, each with its source's name.
    pub fn rollup_computers(&self, group: Option<&str>) -> Result<Vec<SiteComputerReport>> {
        let mut out = Vec::new();
        for (name, id) in self.rollup_sources(group)? {
            let source = id
                .as_deref()
                .map_or(ReportSource::Local, ReportSource::Site);
            for row in self.report_computers_of(source, group)? {
                out.push(SiteComputerReport {
                    site: name.clone(),
                    row,
                });
            }
        }
        Ok(out)
    }

    /// `report updates` on a store with sites: per update, the sums of the
    /// counts of this store and every site that reports it, by title.
    pub fn rollup_updates(
        &self,
        group: Option<&str>,
        approved: bool,
    ) -> Result<Vec<RollupUpdateReport>> {
        let mut by_id: std::collections::BTreeMap<String, RollupUpdateReport> =
            std::collections::BTreeMap::new();
        for (_, id) in self.rollup_sources(group)? {
            let source = id
                .as_deref()
                .map_or(ReportSource::Local, ReportSource::Site);
            for u in self.report_updates_of(source, group, approved)? {
                let e = by_id
                    .entry(u.update_id.clone())
                    .or_insert_with(|| RollupUpdateReport {
                        update_id: u.update_id.clone(),
                        title: u.title.clone(),
                        counts: StatusCounts::default(),
                        sites: 0,
                    });
                e.counts.installed += u.counts.installed;
                e.counts.needed += u.counts.needed;
                e.counts.failed += u.counts.failed;
                e.counts.not_applicable += u.counts.not_applicable;
                e.counts.unknown += u.counts.unknown;
                e.sites += 1;
            }
        }
        let mut out: Vec<RollupUpdateReport> = by_id.into_values().collect();
        out.sort_by(|a, b| a.title.cmp(&b.title).then(a.update_id.cmp(&b.update_id)));
        Ok(out)
    }

    /// `events list`: stored events, oldest first; of one computer (id, or
    /// a name that names exactly one computer) and/or received at or after
    /// `since` (RFC 3339).
    pub fn list_events(
        &self,
        computer: Option<&str>,
        since: Option<time::OffsetDateTime>,
    ) -> Result<Vec<EventListing>> {
        let computer = computer.map(|c| self.computer_id(c)).transpose()?;
        let since = since.map(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        });
        let mut st = self.conn().prepare(
            "SELECT e.computer_id, c.name, e.received, e.time_at_target, e.namespace_id, e.event_id, e.source_id, \
             e.update_id, e.revision, e.hresult, e.app_name, e.replacement, e.misc \
             FROM wusp_events e JOIN computers c ON c.computer_id = e.computer_id \
             WHERE (?1 IS NULL OR e.computer_id = ?1) AND (?2 IS NULL OR e.received >= ?2) \
             ORDER BY e.received, c.name COLLATE NOCASE, e.computer_id, e.arrival",
        )?;
        let rows = st.query_map(rusqlite::params![computer, since], |r| {
            let list = |i: usize| -> rusqlite::Result<Vec<String>> {
                Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or_default())
            };
            Ok(EventListing {
                computer_id: r.get(0)?,
                computer: r.get(1)?,
                received: r.get(2)?,
                time_at_target: r.get(3)?,
                namespace_id: r.get(4)?,
                event_id: r.get(5)?,
                source_id: r.get(6)?,
                update_id: r.get(7)?,
                revision: r.get(8)?,
                hresult: r.get(9)?,
                app_name: r.get(10)?,
                replacement: list(11)?,
                misc: list(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A computer's id from its id or its name (case-insensitive); a name
    /// several computers share is refused, naming their ids.
    pub fn computer_id(&self, name_or_id: &str) -> Result<String> {
        let by_id: Option<String> = self
            .conn()
            .query_row(
                "SELECT computer_id FROM computers WHERE computer_id = lower(?1)",
                [name_or_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = by_id {
            return Ok(id);
        }
        let mut st = self.conn().prepare_cached(
            "SELECT computer_id FROM computers WHERE name = ?1 COLLATE NOCASE ORDER BY computer_id",
        )?;
        let ids = st
            .query_map([name_or_id], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::UnknownComputer(name_or_id.to_string())),
            many => Err(Error::AmbiguousComputer {
                name: name_or_id.to_string(),
                ids: many.join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloaded_counts_as_needed_and_unknown_fills_the_rest() {
        let mut c = StatusCounts::default();
        for (s, n) in [
            ("installed", 2),
            ("downloaded", 1),
            ("needed", 1),
            ("failed", 1),
            ("not_applicable", 3),
        ] {
            c.add(s, n);
        }
        assert_eq!(c.needed, 2);
        assert_eq!(c.known(), 8);
        assert_eq!(c.unknown, 0);
    }
}
