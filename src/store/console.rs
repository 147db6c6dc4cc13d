//! What the administration console (`crate::console`) reads, and its one
//! setting (the password hash). The console's actions (approve, unapprove,
//! decline) go through the same [`Store`] writers as the command line.
//!
//! Rules:
//! - Lists are paged here, in SQL (`LIMIT`/`OFFSET` with a total), so a
//!   page of a 100k-update store reads one page of rows.
//! - Compliance counts, per group, each (computer of the group, update
//!   approved for install for the group or a group above it) pair by the
//!   computer's stored status for the update; no status row is `unknown`.

use rusqlite::{OptionalExtension, params_from_iter};
use serde::Serialize;

use crate::error::Result;
use crate::store::Store;
use crate::store::reports::StatusCounts;

/// `config` key: the console password, an Argon2id PHC string.
pub const PASSWORD_HASH: &str = "console.password_hash";

/// Which approval state the update list is filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApprovalFilter {
    #[default]
    Any,
    /// At least one live deployment.
    Approved,
    /// No live deployment and not declined.
    Unapproved,
    Declined,
}

/// A search of the update list (`updates` page).
#[derive(Debug, Clone, Default)]
pub struct UpdateQuery {
    /// An update id, or text found in a title (any language) or in `KB` +
    /// the KB number (`KB5001234`, `5001234`, `KB50`), ASCII case ignored.
    pub text: String,
    /// `software`, `driver`, `category`, `detectoid`; None: software and
    /// drivers.
    pub kind: Option<String>,
    pub product: Option<String>,
    pub classification: Option<String>,
    pub approval: ApprovalFilter,
    /// A computer status (`needed`, `failed`, ...): updates that at least
    /// one computer reported in it.
    pub status: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// A row of the update list.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateRow {
    pub id: String,
    pub revision: i32,
    pub kind: String,
    pub title: String,
    pub kb_article: Option<String>,
    pub creation_date: Option<String>,
    pub declined: bool,
    /// Live deployments (groups it is approved for).
    pub approvals: i64,
}

/// One page of the update list and how many rows match in all.
#[derive(Debug, Clone, Serialize)]
pub struct UpdatePage {
    pub total: u64,
    pub rows: Vec<UpdateRow>,
}

/// A computer in a listing, with its status counts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ComputerRow {
    pub id: String,
    pub name: String,
    pub group: String,
    pub group_id: String,
    pub os: Option<String>,
    pub last_sync: Option<String>,
    pub last_report: Option<String>,
    pub added: String,
    pub counts: StatusCounts,
}

/// Compliance of one site (its latest report or rollup): the sums of its
/// computers' `report computers` counts.
#[derive(Debug, Clone, Serialize)]
pub struct SiteCompliance {
    pub server_id: String,
    pub site: String,
    pub last_report: String,
    pub computers: i64,
    pub counts: StatusCounts,
}

/// Compliance of one group: its computers and those of its subgroups
/// (All Computers covers every computer), each against the approvals of
/// its own group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupCompliance {
    pub group_id: String,
    pub group: String,
    /// Computers in the group and its subgroups.
    pub computers: i64,
    /// Updates approved for install for the group or one of its subgroups
    /// (an approval for a group above applies too).
    pub approved_updates: i64,
    pub counts: StatusCounts,
}

/// A trusted key as the overview shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub key_id: String,
    pub label: String,
    pub added: String,
    pub revoked: bool,
}

/// One destination's chain as the overview shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChainRow {
    pub destination: String,
    pub last_seq: i64,
    pub last_to_anchor: String,
    pub updated: String,
    /// Journal entries after the chain's last bundle (what the next
    /// incremental bundle would carry), when the anchor is this server's.
    pub changes_behind: Option<i64>,
    /// The sites whose latest report says they applied a bundle of this
    /// chain, by name.
    pub sites: Vec<SiteApplied>,
    /// The end of the last bundle's validity period (unknown for bundles
    /// exported before schema v12).
    pub last_expires: Option<String>,
}

/// Where a site stands on a destination's chain, by its latest report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SiteApplied {
    pub site: String,
    /// The seq of the last bundle of the chain the site applied.
    pub seq: i64,
    /// Bundles exported to the destination after it.
    pub behind: i64,
}

/// Sync times: the last sync from an upstream server (MS-WSUSSS, this
/// server as a downstream) and the last sync a downstream server made from
/// this one.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyncTimes {
    /// (upstream URL, when).
    pub from_upstream: Option<(String, String)>,
    /// (downstream server id or name, when).
    pub by_downstream: Option<(String, String)>,
}

/// An event of a computer, newest first, with the update's title.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    pub time_at_target: String,
    pub event_id: i64,
    pub update_id: Option<String>,
    pub title: Option<String>,
    pub hresult: i64,
}

/// A computer's status of one update, with its title.
#[derive(Debug, Clone, Serialize)]
pub struct StatusLine {
    pub update_id: String,
    pub title: Option<String>,
    pub state: String,
    pub changed: String,
}

/// Escapes `%`, `_` and `\` for `LIKE ... ESCAPE '\'`.
fn like_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The updates approved for install for each group, its own approvals and
/// those of the groups above it: `approved(g, update_id)`, a CTE after
/// [`GROUP_ANCESTORS`].
const APPROVED: &str = "approved(g, update_id) AS ( \
    SELECT DISTINCT anc.g, d.update_id FROM deployments d JOIN anc ON anc.a = d.group_id \
    WHERE d.removed = 0 AND d.action = 'install')";

/// Computers per group, its subgroups' included: `(group_id, n)`.
const SUBTREE_COMPUTERS: &str =
    "SELECT anc.a, COUNT(*) FROM computers c JOIN anc ON anc.g = c.group_id GROUP BY anc.a";

/// Ancestors-or-self of every group: `(g, a)` rows, as a CTE prefix.
const GROUP_ANCESTORS: &str = "WITH RECURSIVE anc(g, a) AS ( \
    SELECT group_id, group_id FROM groups \
    UNION SELECT anc.g, p.parent_id FROM anc JOIN groups p ON p.group_id = anc.a WHERE p.parent_id IS NOT NULL) ";

impl Store {
    /// The console password hash (a PHC string), if one was set.
    pub fn console_password_hash(&self) -> Result<Option<String>> {
        self.config_value(PASSWORD_HASH)
    }

    /// Sets the console password hash (a PHC string).
    pub fn set_console_password_hash(&self, phc: &str) -> Result<()> {
        self.set_config_value(PASSWORD_HASH, phc)
    }

    /// One page of the update list, by update id.
    pub fn search_updates(&self, q: &UpdateQuery) -> Result<UpdatePage> {
        let mut wh = String::new();
        let mut args: Vec<String> = Vec::new();
        let arg = |args: &mut Vec<String>, v: String| -> String {
            args.push(v);
            format!("?{}", args.len())
        };
        // `kind` is tested apart: the count reads it from its index, the
        // page tests it per row (`+u.kind`), so that the page walks
        // `updates` in id order and stops at its last row.
        let kind = match &q.kind {
            Some(k) => format!("u.kind = {}", arg(&mut args, k.clone())),
            None => "u.kind IN ('software', 'driver')".to_string(),
        };
        // Text is searched in `update_search` (one narrow row per update:
        // its titles in every language and `KB` + its KB number), never in
        // `revisions`, whose rows carry the verbatim XML. It is read first,
        // in id order, and `updates` looked up for its matches.
        let mut from = "updates u";
        let mut order = "u.update_id";
        let text = q.text.trim();
        if !text.is_empty() {
            if let Some(id) = crate::store::canonical_guid(text) {
                let p = arg(&mut args, id);
                wh.push_str(&format!(" AND u.update_id = {p}"));
            } else {
                from = "update_search t CROSS JOIN updates u ON u.update_id = t.update_id";
                order = "t.update_id";
                let p = arg(&mut args, like_pattern(text));
                wh.push_str(&format!(" AND t.text LIKE {p} ESCAPE '\\'"));
            }
        }
        for cat in [&q.product, &q.classification].into_iter().flatten() {
            let p = arg(&mut args, cat.clone());
            wh.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM relationships x WHERE x.rev_id = u.current_rev AND x.rel = 'prerequisite' AND x.target_id = {p})"
            ));
        }
        let live = "EXISTS (SELECT 1 FROM deployments d WHERE d.update_id = u.update_id AND d.removed = 0)";
        match q.approval {
            ApprovalFilter::Any => {}
            ApprovalFilter::Approved => wh.push_str(&format!(" AND {live}")),
            ApprovalFilter::Unapproved => {
                wh.push_str(&format!(" AND u.declined = 0 AND NOT {live}"))
            }
            ApprovalFilter::Declined => wh.push_str(" AND u.declined = 1"),
        }
        if let Some(s) = &q.status {
            let p = arg(&mut args, s.clone());
            wh.push_str(&format!(
                " AND u.update_id IN (SELECT s.update_id FROM wusp_status s WHERE s.state = {p})"
            ));
        }
        let total: i64 = self.conn().query_row(
            &format!("SELECT COUNT(*) FROM {from} WHERE {kind}{wh}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        // The page is picked from `updates` alone (in update id order, its
        // primary key; with a text, from `update_search` in the same
        // order), then only its rows are joined to their revisions.
        let sql = format!(
            "SELECT p.update_id, r.revision, r.kind, r.title, r.kb_article, r.creation_date, p.declined, \
             (SELECT COUNT(*) FROM deployments d WHERE d.update_id = p.update_id AND d.removed = 0) FROM ( \
             SELECT u.update_id, u.current_rev, u.declined FROM {from} WHERE +{kind}{wh} ORDER BY {order} LIMIT {} OFFSET {}) p \
             JOIN revisions r ON r.rev_id = p.current_rev ORDER BY p.update_id",
            q.limit.min(1000),
            q.offset
        );
        let mut st = self.conn().prepare(&sql)?;
        let rows = st.query_map(params_from_iter(args.iter()), |r| {
            Ok(UpdateRow {
                id: r.get(0)?,
                revision: r.get(1)?,
                kind: r.get(2)?,
                title: r.get(3)?,
                kb_article: r.get(4)?,
                creation_date: r.get(5)?,
                declined: r.get::<_, i64>(6)? != 0,
                approvals: r.get(7)?,
            })
        })?;
        Ok(UpdatePage {
            total: u64::try_from(total).unwrap_or(0),
            rows: rows.collect::<rusqlite::Result<Vec<_>>>()?,
        })
    }

    /// Category updates of one category type (`Product`,
    /// `UpdateClassification`): (id, title), by title.
    pub fn categories_of_type(&self, category_type: &str) -> Result<Vec<(String, String)>> {
        let mut st = self.conn().prepare_cached(
            "SELECT u.update_id, r.title FROM updates u JOIN revisions r ON r.rev_id = u.current_rev \
             WHERE u.kind = 'category' AND u.category_type = ?1 ORDER BY r.title, u.update_id",
        )?;
        let rows = st.query_map([category_type], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Titles of updates (current revisions) by id; unknown ids are left out.
    pub fn update_title(&self, update_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT r.title FROM updates u JOIN revisions r ON r.rev_id = u.current_rev WHERE u.update_id = ?1",
                [update_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// How many computers reported each status for one update.
    pub fn update_state_counts(&self, update_id: &str) -> Result<StatusCounts> {
        let mut st = self.conn().prepare_cached(
            "SELECT state, COUNT(*) FROM wusp_status WHERE update_id = ?1 GROUP BY state",
        )?;
        let rows = st.query_map([update_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut c = StatusCounts::default();
        for row in rows {
            let (s, n) = row?;
            c.add(&s, n);
        }
        let computers: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM computers", [], |r| r.get(0))?;
        c.unknown += (computers - c.total()).max(0);
        Ok(c)
    }

    /// How many computers each group holds, its subgroups' included (groups
    /// without any are left out).
    pub fn group_computer_counts(&self) -> Result<std::collections::HashMap<String, i64>> {
        let mut st = self
            .conn()
            .prepare(&format!("{GROUP_ANCESTORS} {SUBTREE_COMPUTERS}"))?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Computers (of one group and its subgroups, or all), by name, with
    /// status counts.
    pub fn computer_rows(&self, group_id: Option<&str>) -> Result<Vec<ComputerRow>> {
        let mut st = self.conn().prepare(&format!(
            "{GROUP_ANCESTORS} SELECT c.computer_id, c.name, g.name, c.group_id, c.os_description, c.last_sync, c.last_report, c.added \
             FROM computers c JOIN groups g ON g.group_id = c.group_id \
             WHERE ?1 IS NULL OR c.group_id IN (SELECT anc.g FROM anc WHERE anc.a = ?1) \
             ORDER BY c.name COLLATE NOCASE, c.computer_id"
        ))?;
        let rows = st.query_map([group_id], |r| {
            Ok(ComputerRow {
                id: r.get(0)?,
                name: r.get(1)?,
                group: r.get(2)?,
                group_id: r.get(3)?,
                os: r.get(4)?,
                last_sync: r.get(5)?,
                last_report: r.get(6)?,
                added: r.get(7)?,
                counts: StatusCounts::default(),
            })
        })?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        // Each stored status, classified by `store::reports`' rule (a
        // per-computer index read: `report computers`' reportable-update
        // join costs about a second per page on a 100k-update catalog).
        let mut st = self.conn().prepare_cached(
            "SELECT state, COUNT(*) FROM wusp_status WHERE computer_id = ?1 GROUP BY state",
        )?;
        for c in &mut out {
            let rows = st.query_map([&c.id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (s, n) = row?;
                c.counts.add(&s, n);
            }
        }
        Ok(out)
    }

    /// One computer, or None.
    pub fn computer_row(&self, computer_id: &str) -> Result<Option<ComputerRow>> {
        let all = self.computer_rows(None)?;
        Ok(all.into_iter().find(|c| c.id == computer_id))
    }

    /// A computer's stored status per update, needed and failed first.
    pub fn computer_status_lines(&self, computer_id: &str) -> Result<Vec<StatusLine>> {
        let mut st = self.conn().prepare(
            "SELECT s.update_id, r.title, s.state, s.changed FROM wusp_status s \
             LEFT JOIN updates u ON u.update_id = s.update_id LEFT JOIN revisions r ON r.rev_id = u.current_rev \
             WHERE s.computer_id = ?1 \
             ORDER BY CASE s.state WHEN 'failed' THEN 0 WHEN 'needed' THEN 1 WHEN 'downloaded' THEN 2 ELSE 3 END, r.title",
        )?;
        let rows = st.query_map([computer_id], |r| {
            Ok(StatusLine {
                update_id: r.get(0)?,
                title: r.get(1)?,
                state: r.get(2)?,
                changed: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A computer's most recent events (at most `limit`), newest first.
    pub fn computer_events(&self, computer_id: &str, limit: u32) -> Result<Vec<EventLine>> {
        let mut st = self.conn().prepare(
            "SELECT e.time_at_target, e.event_id, e.update_id, r.title, e.hresult FROM wusp_events e \
             LEFT JOIN updates u ON u.update_id = e.update_id LEFT JOIN revisions r ON r.rev_id = u.current_rev \
             WHERE e.computer_id = ?1 ORDER BY e.arrival DESC LIMIT ?2",
        )?;
        let rows = st.query_map(rusqlite::params![computer_id, limit], |r| {
            Ok(EventLine {
                time_at_target: r.get(0)?,
                event_id: r.get(1)?,
                update_id: r.get(2)?,
                title: r.get(3)?,
                hresult: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Compliance per site (sites of `store::sites`), by name.
    pub fn site_compliance(&self) -> Result<Vec<SiteCompliance>> {
        Ok(self
            .sites_list()?
            .into_iter()
            .map(|site| SiteCompliance {
                server_id: site.server_id,
                site: site.site,
                last_report: site.last_report,
                computers: site.computers,
                counts: site.counts,
            })
            .collect())
    }

    /// Compliance per group (see the module rules), groups by name.
    pub fn group_compliance(&self) -> Result<Vec<GroupCompliance>> {
        let mut out = Vec::new();
        let mut st = self.conn().prepare(&format!(
            "{GROUP_ANCESTORS}, {APPROVED} SELECT g.group_id, g.name, \
             (SELECT COUNT(*) FROM computers c JOIN anc sub ON sub.g = c.group_id WHERE sub.a = g.group_id), \
             (SELECT COUNT(DISTINCT ap.update_id) FROM approved ap JOIN anc sub ON sub.g = ap.g WHERE sub.a = g.group_id) \
             FROM groups g ORDER BY g.name COLLATE NOCASE"
        ))?;
        let rows = st.query_map([], |r| {
            Ok(GroupCompliance {
                group_id: r.get(0)?,
                group: r.get(1)?,
                computers: r.get(2)?,
                approved_updates: r.get(3)?,
                counts: StatusCounts::default(),
            })
        })?;
        for row in rows {
            out.push(row?);
        }
        let mut st = self.conn().prepare(&format!(
            "{GROUP_ANCESTORS}, {APPROVED} \
             SELECT COALESCE(s.state, 'unknown'), COUNT(*) FROM computers c \
             JOIN anc sub ON sub.g = c.group_id AND sub.a = ?1 \
             JOIN approved a ON a.g = c.group_id \
             LEFT JOIN wusp_status s ON s.computer_id = c.computer_id AND s.update_id = a.update_id \
             GROUP BY 1"
        ))?;
        for g in &mut out {
            let rows = st.query_map([&g.group_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (s, n) = row?;
                g.counts.add(&s, n);
            }
        }
        Ok(out)
    }

    /// Trusted keys, revoked ones included.
    pub fn trusted_key_rows(&self) -> Result<Vec<KeyRow>> {
        let mut st = self.conn().prepare(
            "SELECT key_id, label, added, revoked FROM trusted_keys ORDER BY added, key_id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(KeyRow {
                key_id: r.get(0)?,
                label: r.get(1)?,
                added: r.get(2)?,
                revoked: r.get::<_, i64>(3)? != 0,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Each export destination's chain and how far it is behind.
    pub fn chain_rows(&self) -> Result<Vec<ChainRow>> {
        let mut st = self.conn().prepare(
            "SELECT l.destination, l.last_seq, l.last_to_anchor, l.updated, h.expires FROM export_ledger l \
             LEFT JOIN export_history h ON h.destination = l.destination AND h.seq = l.last_seq \
             ORDER BY l.destination",
        )?;
        let rows = st.query_map([], |r| {
            Ok(ChainRow {
                destination: r.get(0)?,
                last_seq: r.get(1)?,
                last_to_anchor: r.get(2)?,
                updated: r.get(3)?,
                changes_behind: None,
                sites: Vec::new(),
                last_expires: r.get(4)?,
            })
        })?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        // Where each site stands on this server's chains (store::sites).
        let mut st = self.conn().prepare(&format!(
            "SELECT h.destination, s.name, h.seq, \
             (SELECT MAX(h2.seq) FROM export_history h2 WHERE h2.destination = h.destination) - h.seq \
             FROM sites s, {} ORDER BY s.name COLLATE NOCASE, s.server_id",
            crate::store::sites::SITE_POSITION
        ))?;
        let applied = st.query_map([self.info().server_id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                SiteApplied {
                    site: r.get(1)?,
                    seq: r.get(2)?,
                    behind: r.get(3)?,
                },
            ))
        })?;
        for a in applied {
            let (destination, site) = a?;
            if let Some(c) = out.iter_mut().find(|c| c.destination == destination) {
                c.sites.push(site);
            }
        }
        for c in &mut out {
            if let Ok(a) = self.own_anchor(&c.last_to_anchor) {
                c.changes_behind = Some(self.conn().query_row(
                    "SELECT COUNT(*) FROM journal WHERE seq > ?1",
                    [a.seq],
                    |r| r.get(0),
                )?);
            }
        }
        Ok(out)
    }

    /// The last syncs over MS-WSUSSS, both ways.
    pub fn sync_times(&self) -> Result<SyncTimes> {
        let newest = |sql: &str| -> Result<Option<(String, String)>> {
            Ok(self
                .conn()
                .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        };
        Ok(SyncTimes {
            from_upstream: newest(
                "SELECT upstream_url, last_sync FROM upstream_state WHERE last_sync IS NOT NULL \
                 ORDER BY last_sync DESC LIMIT 1",
            )?,
            by_downstream: newest(
                "SELECT COALESCE(fqdn, server_id), last_sync FROM downstream_servers WHERE last_sync IS NOT NULL \
                 ORDER BY last_sync DESC LIMIT 1",
            )?,
        })
    }

    /// Files of approved updates' current revisions whose content has not
    /// arrived.
    pub fn approved_content_missing(&self) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(DISTINCT f.sha1) FROM deployments d JOIN updates u ON u.update_id = d.update_id \
             JOIN files f ON f.rev_id = u.current_rev \
             WHERE d.removed = 0 AND NOT EXISTS (SELECT 1 FROM content c WHERE c.sha1 = f.sha1)",
            [],
            |r| r.get(0),
        )?)
    }

    /// The time of the newest journal entry (by sequence) of the kinds given
    /// (RFC 3339).
    pub fn last_journal_time(&self, kinds: &[&str]) -> Result<Option<String>> {
        let marks = (1..=kinds.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(self
            .conn()
            .query_row(
                // The newest by sequence: read backwards from the end of the
                // journal to the first entry of these kinds.
                &format!(
                    "SELECT at FROM journal WHERE kind IN ({marks}) ORDER BY seq DESC LIMIT 1"
                ),
                params_from_iter(kinds.iter()),
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deployments::{Action, Approval};

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    fn store_with(updates: u64) -> (tempfile::TempDir, Store) {
        crate::seed::generate::test_store(updates)
    }

    fn doc(id: &str, revision: i32, title_en: &str, title_de: &str, kb: &str) -> String {
        format!(
            "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\">\
             <upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"{revision}\" />\
             <upd:Properties UpdateType=\"Software\" DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" CreationDate=\"2026-10-01T00:00:00.000Z\">\
             <upd:KBArticleID>{kb}</upd:KBArticleID></upd:Properties>\
             <upd:LocalizedPropertiesCollection>\
             <upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{title_en}</upd:Title></upd:LocalizedProperties>\
             <upd:LocalizedProperties><upd:Language>de</upd:Language><upd:Title>{title_de}</upd:Title></upd:LocalizedProperties>\
             </upd:LocalizedPropertiesCollection></upd:Update>"
        )
    }

    /// The text search: title substrings in any language, KB numbers with
    /// or without `KB`, ids; always the current revision's text.
    #[test]
    fn search_by_title_kb_and_current_revision() {
        let (_d, mut s) = store_with(20);
        const A: &str = "0b0c0d0e-0000-4000-8000-00000000000a";
        const B: &str = "0b0c0d0e-0000-4000-8000-00000000000b";
        let mut batch = s.catalog_batch().unwrap();
        let a1 = doc(
            A,
            100,
            "Zebra Update for Widgets",
            "Zebra-Aktualisierung",
            "5034441",
        );
        batch.add_revision("a1", a1.as_bytes()).unwrap();
        let b1 = doc(
            B,
            100,
            "Quokka 100% Rollup",
            "Quokka Sammelupdate",
            "5099001",
        );
        batch.add_revision("b1", b1.as_bytes()).unwrap();
        batch.commit().unwrap();
        let find = |s: &Store, text: &str| -> Vec<String> {
            let mut ids: Vec<String> = s
                .search_updates(&UpdateQuery {
                    text: text.into(),
                    limit: 100,
                    ..UpdateQuery::default()
                })
                .unwrap()
                .rows
                .into_iter()
                .map(|r| r.id)
                .filter(|id| id == A || id == B)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(find(&s, "zebra update"), [A]);
        assert_eq!(find(&s, "Aktualisierung"), [A], "German title");
        assert_eq!(find(&s, "KB5034441"), [A]);
        assert_eq!(find(&s, "kb5034441"), [A]);
        assert_eq!(find(&s, "5099001"), [B]);
        assert_eq!(find(&s, "KB50"), [A, B], "a KB prefix");
        assert_eq!(find(&s, "100%"), [B], "% is literal");
        assert_eq!(find(&s, "1_0"), Vec::<String>::new(), "_ is literal");
        assert_eq!(find(&s, &B.to_uppercase()), [B]);
        // A newer revision replaces the searched text; an older one does not.
        let mut batch = s.catalog_batch().unwrap();
        let a2 = doc(
            A,
            200,
            "Yak Update for Widgets",
            "Yak-Aktualisierung",
            "5034442",
        );
        batch.add_revision("a2", a2.as_bytes()).unwrap();
        let b0 = doc(B, 50, "Old Wombat", "Alter Wombat", "4000001");
        batch.add_revision("b0", b0.as_bytes()).unwrap();
        batch.commit().unwrap();
        assert_eq!(find(&s, "Zebra"), Vec::<String>::new());
        assert_eq!(find(&s, "KB5034441"), Vec::<String>::new());
        assert_eq!(find(&s, "yak update"), [A]);
        assert_eq!(find(&s, "KB5034442"), [A]);
        assert_eq!(find(&s, "Wombat"), Vec::<String>::new());
        assert_eq!(find(&s, "Quokka"), [B]);
    }

    /// A store of schema v10 (no search table) gets its search rows when it
    /// is migrated (to v12 since).
    #[test]
    fn migration_to_v11_fills_the_search_table() {
        let (d, s) = store_with(30);
        let before = s
            .search_updates(&UpdateQuery {
                text: "KB".into(),
                limit: 1000,
                ..UpdateQuery::default()
            })
            .unwrap();
        assert!(before.total > 0);
        s.conn()
            .execute_batch(
                "DROP TABLE check_runs; ALTER TABLE export_history DROP COLUMN bytes; \
                 ALTER TABLE export_history DROP COLUMN expires; ALTER TABLE import_ledger DROP COLUMN expires; \
                 ALTER TABLE import_ledger DROP COLUMN bytes; ALTER TABLE import_ledger DROP COLUMN signer; \
                 DROP TABLE update_search; \
                 CREATE INDEX localized_title ON localized (title); \
                 CREATE INDEX revisions_kb ON revisions (kb_article); \
                 PRAGMA user_version = 10;",
            )
            .unwrap();
        drop(s);
        let s = Store::open(&d.path().join("s")).unwrap();
        let after = s
            .search_updates(&UpdateQuery {
                text: "KB".into(),
                limit: 1000,
                ..UpdateQuery::default()
            })
            .unwrap();
        assert_eq!(after.total, before.total);
        let ids = |p: &UpdatePage| p.rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&after), ids(&before));
    }

    #[test]
    fn sync_times_are_the_newest_each_way() {
        let (_d, s) = store_with(1);
        assert_eq!(s.sync_times().unwrap(), SyncTimes::default());
        s.conn()
            .execute_batch(
                "INSERT INTO upstream_state (upstream_url, last_sync) VALUES \
                 ('https://a', '2026-01-02T00:00:00Z'), ('https://b', '2026-01-03T00:00:00Z'), ('https://c', NULL); \
                 INSERT INTO downstream_servers (server_id, fqdn, first_seen, last_sync) VALUES \
                 ('d1', NULL, '2026-01-01T00:00:00Z', '2026-01-05T00:00:00Z'), \
                 ('d2', 'dss.example', '2026-01-01T00:00:00Z', '2026-01-04T00:00:00Z');",
            )
            .unwrap();
        let t = s.sync_times().unwrap();
        assert_eq!(
            t.from_upstream,
            Some(("https://b".into(), "2026-01-03T00:00:00Z".into()))
        );
        assert_eq!(
            t.by_downstream,
            Some(("d1".into(), "2026-01-05T00:00:00Z".into()))
        );
    }

    #[test]
    fn search_pages_and_filters() {
        let (_d, mut s) = store_with(60);
        let all = s
            .search_updates(&UpdateQuery {
                limit: 10,
                ..UpdateQuery::default()
            })
            .unwrap();
        assert_eq!(all.rows.len(), 10);
        assert!(all.total >= 60, "{}", all.total);
        let second = s
            .search_updates(&UpdateQuery {
                limit: 10,
                offset: 10,
                ..UpdateQuery::default()
            })
            .unwrap();
        assert_ne!(all.rows[0].id, second.rows[0].id);
        // By id, then approval state.
        let id = all.rows[3].id.clone();
        let one = s
            .search_updates(&UpdateQuery {
                text: id.to_uppercase(),
                limit: 10,
                ..UpdateQuery::default()
            })
            .unwrap();
        assert_eq!((one.total, one.rows[0].id.as_str()), (1, id.as_str()));
        s.add_group("Pilot", None).unwrap();
        s.add_computer("ws-1", Some("Pilot")).unwrap();
        s.approve(&Approval {
            update_id: &id,
            group: "Pilot",
            action: Action::Install,
            deadline: None,
            admin_name: "t",
        })
        .unwrap();
        let approved = s
            .search_updates(&UpdateQuery {
                approval: ApprovalFilter::Approved,
                limit: 10,
                ..UpdateQuery::default()
            })
            .unwrap();
        assert_eq!(approved.total, 1);
        assert_eq!(approved.rows[0].approvals, 1);
        let c = s.group_compliance().unwrap();
        let pilot = c.iter().find(|g| g.group == "Pilot").unwrap();
        assert_eq!(
            (
                pilot.computers,
                pilot.approved_updates,
                pilot.counts.unknown
            ),
            (1, 1, 1)
        );
        // All Computers covers its subgroups: Pilot's computer and the
        // update approved for it.
        let all_computers = c.iter().find(|g| g.group == "All Computers").unwrap();
        assert_eq!(
            (
                all_computers.computers,
                all_computers.approved_updates,
                all_computers.counts.unknown
            ),
            (1, 1, 1)
        );
        let counts = s.group_computer_counts().unwrap();
        assert_eq!(counts.get(crate::store::ALL_COMPUTERS.0), Some(&1));
        assert_eq!(counts.get(&pilot.group_id), Some(&1));
        let in_all = s
            .computer_rows(Some(crate::store::ALL_COMPUTERS.0))
            .unwrap();
        assert_eq!(in_all.len(), 1);
    }
}
