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
    fn add(&mut self, state: &str, n: i64) {
        match state {
            "installed" => self.installed += n,
            "needed" | "downloaded" => self.needed += n,
            "failed" => self.failed += n,
            "not_applicable" => self.not_applicable += n,
            _ => self.unknown += n,
        }
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

/// `sub(g)`: `?1`'s group and every group below it (all groups when `?1`
/// is NULL).
const SUBTREE: &str = "sub(g) AS (SELECT group_id FROM groups WHERE ?1 IS NULL OR group_id = ?1 \
     UNION SELECT c.group_id FROM groups c JOIN sub ON c.parent_id = sub.g)";
/// `above(g)`: `?1`'s group and every group above it (all groups when `?1`
/// is NULL).
const ABOVE: &str = "above(g) AS (SELECT group_id FROM groups WHERE ?1 IS NULL OR group_id = ?1 \
     UNION SELECT p.parent_id FROM groups p JOIN above ON p.group_id = above.g WHERE p.parent_id IS NOT NULL)";
/// `rep(update_id)`: the reportable updates (`?2`: approved only).
const REPORTABLE: &str = "rep(update_id) AS (SELECT u.update_id FROM updates u \
     WHERE u.kind IN ('software', 'driver') AND u.declined = 0 AND (?2 = 0 OR EXISTS ( \
       SELECT 1 FROM deployments d JOIN above ON above.g = d.group_id \
       WHERE d.update_id = u.update_id AND d.removed = 0 AND d.action = 'install')))";

impl Store {
    /// Resolves `group` (name or id) for a report.
    fn report_group(&self, group: Option<&str>) -> Result<Option<String>> {
        group.map(|g| self.group_id(g)).transpose()
    }

    /// `report computers`: each computer of the report with its counts
    /// over the reportable updates, by name.
    pub fn report_computers(&self, group: Option<&str>) -> Result<Vec<ComputerReport>> {
        let group = self.report_group(group)?;
        let reportable: i64 = self
            .conn()
            .query_row(
                &format!("WITH RECURSIVE {ABOVE}, {REPORTABLE} SELECT COUNT(*) FROM rep"),
                rusqlite::params![group, false],
                |r| r.get(0),
            )
            .during("counting the reportable updates")?;
        let mut st = self.conn().prepare(&format!(
            "WITH RECURSIVE {SUBTREE}, {ABOVE}, {REPORTABLE} \
             SELECT c.computer_id, c.name, g.name, c.last_report, s.state, COUNT(s.update_id) \
             FROM computers c JOIN sub ON sub.g = c.group_id JOIN groups g ON g.group_id = c.group_id \
             LEFT JOIN (wusp_status s JOIN rep ON rep.update_id = s.update_id) ON s.computer_id = c.computer_id \
             GROUP BY c.computer_id, s.state ORDER BY c.name COLLATE NOCASE, c.computer_id"
        ))?;
        let mut rows = st.query(rusqlite::params![group, false])?;
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

    /// `report updates`: each reportable update with its counts over the
    /// computers of the report, by title.
    pub fn report_updates(&self, group: Option<&str>, approved: bool) -> Result<Vec<UpdateReport>> {
        let group = self.report_group(group)?;
        let computers: i64 = self
            .conn()
            .query_row(
                &format!(
                    "WITH RECURSIVE {SUBTREE} SELECT COUNT(*) FROM computers c JOIN sub ON sub.g = c.group_id"
                ),
                [&group],
                |r| r.get(0),
            )
            .during("counting the computers of the report")?;
        let mut st = self.conn().prepare(&format!(
            "WITH RECURSIVE {SUBTREE}, {ABOVE}, {REPORTABLE}, \
             mine(computer_id) AS (SELECT c.computer_id FROM computers c JOIN sub ON sub.g = c.group_id) \
             SELECT rep.update_id, r.title, s.state, COUNT(s.computer_id) \
             FROM rep JOIN updates u ON u.update_id = rep.update_id JOIN revisions r ON r.rev_id = u.current_rev \
             LEFT JOIN (wusp_status s JOIN mine ON mine.computer_id = s.computer_id) ON s.update_id = rep.update_id \
             GROUP BY rep.update_id, s.state ORDER BY r.title, rep.update_id"
        ))?;
        let mut rows = st.query(rusqlite::params![group, approved])?;
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
