//! Sites: the way back across the gap (docs/bundle-format.md, "Report
//! bundles").
//!
//! Site side: [`Store::read_site_report`] reads the state a report carries
//! (a `model::report::SiteReport`) in one read transaction, and the report
//! chain per destination (`report_exports`) is kept by
//! [`Store::record_report_export`].
//!
//! Upper side: [`Store::apply_site_report`] applies one `SiteReport` all
//! or nothing, whichever way it came (a report bundle adds its chain row,
//! [`ReportChainRecord`]; an online rollup would pass none): the site's row
//! and its imports, receipt, groups, reportable updates, approvals,
//! computers and status are replaced by the report's; events accumulate
//! (once per computer and EventInstanceID, at most
//! `model::report::SITE_EVENTS_KEPT` per computer). `sites list`, the
//! receipt an export to a destination follows ([`Store::receipt_for`]) and
//! the per-site reports (`store::reports` with `ReportSource::Site`) read
//! them.
//!
//! **Which site a destination's chain reaches**: a site's latest applied
//! bundle from this server (its reported import ledger, source = this
//! server's id, highest seq) is looked up by manifest digest in this
//! server's export history; the destination of that link is the site's
//! destination, and `bundles_behind` is that destination's last exported
//! seq minus the link's seq. A site that applied nothing from this server,
//! or whose last applied link this server's history does not hold, has no
//! destination (and `bundles_behind` is null). [`SITE_POSITION`] is that
//! rule in SQL, the one place `sites list`, the receipts and the console
//! read it from.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::error::{DbContext, Error, Result};
use crate::model::report::{
    ApprovalRow, ComputerRow, ContentCheck, EventRow, FIRST_REPORT_EVENTS, GroupRow, ImportedLink,
    REPORT_EVENTS, Receipt, SITE_EVENTS_KEPT, SiteReport, StatusRow, UpdateRow,
};
use crate::progress::Progress;
use crate::store::content::{ContentFile, hex_upper};
use crate::store::ledgers::ImportLink;
use crate::store::{Store, now_rfc3339};

/// Per computer, the arrival of the last event a report carried.
pub type EventMarks = BTreeMap<String, i64>;

/// The last report exported to a destination (the site's report chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLink {
    pub seq: u64,
    pub manifest_sha256: String,
    pub to_anchor: String,
    pub event_marks: EventMarks,
}

/// A report just exported, for the site's report chain.
#[derive(Debug, Clone)]
pub struct ReportExportRecord<'a> {
    pub destination: &'a str,
    pub seq: u64,
    pub bundle_id: &'a str,
    pub manifest_sha256: &'a str,
    pub from_anchor: Option<&'a str>,
    pub to_anchor: &'a str,
    pub signer: &'a str,
    pub event_marks: &'a EventMarks,
}

/// The report chain row, written but not committed: the exporter moves the
/// bundle into place, then commits (dropping it rolls back).
pub struct PendingReport<'s> {
    tx: Transaction<'s>,
}

impl PendingReport<'_> {
    pub fn commit(self) -> Result<()> {
        self.tx.commit().during("committing the report chain")
    }
}

/// A report bundle being applied: its link of the site's report chain.
#[derive(Debug, Clone)]
pub struct ReportChainRecord<'a> {
    pub seq: u64,
    pub bundle_id: &'a str,
    pub manifest_sha256: &'a str,
    pub from_anchor: Option<&'a str>,
    pub to_anchor: &'a str,
}

/// What applying a report changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SiteApplied {
    /// True when the site was not known before.
    pub new_site: bool,
    pub computers: u64,
    pub status: u64,
    /// Events not stored before.
    pub events_added: u64,
}

/// A row of `sites list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SiteRow {
    pub site: String,
    pub server_id: String,
    /// When the site read the state of its last report.
    pub last_report: String,
    /// The to-anchor of the last bundle from this server the site applied.
    pub applied_anchor: Option<String>,
    /// Bundles exported on the site's destination chain after the last one
    /// it applied (module documentation).
    pub bundles_behind: Option<i64>,
    pub computers: i64,
    /// Computer × update pairs over the site's reportable updates
    /// (`store::reports` counting rules).
    pub needed: i64,
    pub failed: i64,
    pub installed: i64,
    /// Every count (the console's per-site compliance).
    #[serde(skip)]
    pub counts: crate::store::reports::StatusCounts,
}

/// What the latest receipts of the sites a destination reaches say
/// (module documentation): content every such site holds, and content any
/// of them reported missing or corrupt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptPlan {
    /// The sites' names.
    pub sites: Vec<String>,
    pub held: BTreeSet<[u8; 20]>,
    pub resend: BTreeSet<[u8; 20]>,
}

fn parse_sha1(hex_text: &str) -> Option<[u8; 20]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

impl Store {
    // ------------------------------------------------------------ site side

    /// The last report exported to `destination`, if any.
    pub fn last_report_export(&self, destination: &str) -> Result<Option<ReportLink>> {
        let row: Option<(i64, String, String, String)> = self
            .conn()
            .query_row(
                "SELECT seq, manifest_sha256, to_anchor, event_marks FROM report_exports \
                 WHERE destination = ?1 ORDER BY seq DESC LIMIT 1",
                [destination],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .during("reading the report chain")?;
        row.map(|(seq, manifest_sha256, to_anchor, marks)| {
            let event_marks = serde_json::from_str(&marks).map_err(|e| {
                Error::Corrupt(format!(
                    "report chain to {destination:?}: event marks of seq {seq}: {e}"
                ))
            })?;
            Ok(ReportLink {
                seq: seq.max(0) as u64,
                manifest_sha256,
                to_anchor,
                event_marks,
            })
        })
        .transpose()
    }

    /// Writes the report chain row of a report just written; committed by
    /// the caller once the bundle is in place.
    pub fn record_report_export(
        &mut self,
        r: &ReportExportRecord<'_>,
    ) -> Result<PendingReport<'_>> {
        let now = now_rfc3339();
        let marks = serde_json::to_string(r.event_marks)
            .map_err(|e| Error::invalid("event marks", e.to_string()))?;
        let tx = self
            .conn_mut()
            .transaction()
            .during("writing the report chain")?;
        tx.execute(
            "INSERT OR REPLACE INTO report_exports (destination, seq, bundle_id, manifest_sha256, from_anchor, \
             to_anchor, created, signer, event_marks) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.destination,
                r.seq as i64,
                r.bundle_id,
                r.manifest_sha256,
                r.from_anchor,
                r.to_anchor,
                now,
                r.signer,
                marks
            ],
        )
        .during("writing the report chain")?;
        Ok(PendingReport { tx })
    }

    /// Reads the state a report carries, in one read transaction: identity,
    /// journal anchor, import ledger, groups, reportable updates, approvals,
    /// computers, status, and events (after `marks`, per computer, at most
    /// `REPORT_EVENTS` each; with no marks, the first report's
    /// `FIRST_REPORT_EVENTS` most recent each); then the content receipt
    /// (`check`: size, or digests too). Returns the report and the marks
    /// the next report starts after.
    pub fn read_site_report(
        &mut self,
        marks: Option<&EventMarks>,
        check: ContentCheck,
        progress: &dyn Progress,
    ) -> Result<(SiteReport, EventMarks)> {
        let info = self.info().clone();
        let content = crate::store::content::ContentStore::new(
            self.content().root().to_path_buf(),
            self.content().staging().to_path_buf(),
        );
        let tx = self
            .conn_mut()
            .transaction()
            .during("beginning the report's read snapshot")?;
        let during = "reading the site's state for its report";
        let head: i64 = tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
                r.get(0)
            })
            .during(during)?;
        let anchor = crate::model::anchor::Anchor {
            server_id: info.server_id,
            seq: head,
        };
        let imports = read_imports(&tx).during(during)?;
        let groups = collect(
            &tx,
            "SELECT group_id, name, parent_id FROM groups ORDER BY group_id",
            |r| {
                Ok(GroupRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    parent_id: r.get(2)?,
                })
            },
        )
        .during(during)?;
        let updates = collect(
            &tx,
            &format!(
                "WITH {} SELECT update_id, title FROM upd ORDER BY update_id",
                crate::store::reports::LOCAL_UPDATES
            ),
            |r| {
                Ok(UpdateRow {
                    update_id: r.get(0)?,
                    title: r.get(1)?,
                })
            },
        )
        .during(during)?;
        let approvals = collect(
            &tx,
            &format!(
                "WITH {}, {} SELECT DISTINCT appr.update_id, appr.group_id FROM appr JOIN upd ON upd.update_id = appr.update_id \
                 ORDER BY appr.update_id, appr.group_id",
                crate::store::reports::LOCAL_UPDATES,
                crate::store::reports::LOCAL_APPROVALS
            ),
            |r| {
                Ok(ApprovalRow {
                    update_id: r.get(0)?,
                    group_id: r.get(1)?,
                })
            },
        )
        .during(during)?;
        let computers = collect(
            &tx,
            "SELECT computer_id, name, group_id, os_description, arch, last_sync, last_report FROM computers \
             ORDER BY computer_id",
            |r| {
                Ok(ComputerRow {
                    computer_id: r.get(0)?,
                    name: r.get(1)?,
                    group_id: r.get(2)?,
                    os_description: r.get(3)?,
                    arch: r.get(4)?,
                    last_sync: r.get(5)?,
                    last_report: r.get(6)?,
                })
            },
        )
        .during(during)?;
        let status = collect(
            &tx,
            "SELECT computer_id, update_id, state, changed FROM wusp_status ORDER BY computer_id, update_id",
            |r| {
                Ok(StatusRow {
                    computer_id: r.get(0)?,
                    update_id: r.get(1)?,
                    state: r.get(2)?,
                    changed: r.get(3)?,
                })
            },
        )
        .during(during)?;
        let mut new_marks = marks.cloned().unwrap_or_default();
        let mut events = Vec::new();
        {
            let mut st = tx
                .prepare(
                    "SELECT instance_id, arrival, time_at_target, namespace_id, event_id, source_id, update_id, \
                     revision, hresult, app_name, replacement, misc, received FROM wusp_events \
                     WHERE computer_id = ?1 AND arrival > ?2 ORDER BY arrival DESC LIMIT ?3",
                )
                .during(during)?;
            let limit = i64::try_from(if marks.is_some() {
                REPORT_EVENTS
            } else {
                FIRST_REPORT_EVENTS
            })
            .unwrap_or(i64::MAX);
            for c in &computers {
                let after = new_marks.get(&c.computer_id).copied().unwrap_or(i64::MIN);
                let rows = st
                    .query_map(params![c.computer_id, after, limit], |r| {
                        let list = |i: usize| -> rusqlite::Result<Vec<String>> {
                            Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or_default())
                        };
                        Ok(EventRow {
                            computer_id: c.computer_id.clone(),
                            instance_id: r.get(0)?,
                            arrival: r.get(1)?,
                            time_at_target: r.get(2)?,
                            namespace_id: r.get(3)?,
                            event_id: r.get(4)?,
                            source_id: r.get(5)?,
                            update_id: r.get(6)?,
                            revision: r.get(7)?,
                            hresult: r.get(8)?,
                            app_name: r.get(9)?,
                            replacement: list(10)?,
                            misc: list(11)?,
                            received: r.get(12)?,
                        })
                    })
                    .during(during)?;
                let mut mine = rows.collect::<rusqlite::Result<Vec<_>>>().during(during)?;
                mine.reverse();
                if let Some(last) = mine.last() {
                    new_marks.insert(c.computer_id.clone(), last.arrival);
                }
                events.extend(mine);
            }
        }
        let files = read_content_rows(&tx).during(during)?;
        drop(tx); // read-only: nothing to commit
        let receipt = content_receipt(&content, &files, check, progress);
        let report = SiteReport {
            server_id: info.server_id.to_string(),
            name: info.name.clone(),
            created: now_rfc3339(),
            anchor: anchor.to_string(),
            imports,
            receipt,
            groups,
            updates,
            approvals,
            computers,
            status,
            events,
        };
        Ok((report, new_marks))
    }

    // ----------------------------------------------------------- upper side

    /// The manifest digest of the report applied from `site` as `seq`.
    pub fn site_report_manifest(&self, site: &str, seq: u64) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT manifest_sha256 FROM site_reports WHERE server_id = ?1 AND seq = ?2",
                params![site, seq as i64],
                |r| r.get(0),
            )
            .optional()
            .during("reading the site report ledger")
    }

    /// The last report applied from `site`, if any.
    pub fn last_site_report(&self, site: &str) -> Result<Option<ImportLink>> {
        self.conn()
            .query_row(
                "SELECT seq, manifest_sha256, to_anchor FROM site_reports WHERE server_id = ?1 \
                 ORDER BY seq DESC LIMIT 1",
                [site],
                |r| {
                    Ok(ImportLink {
                        seq: r.get::<_, i64>(0)?.max(0) as u64,
                        manifest_sha256: r.get(1)?,
                        to_anchor: r.get(2)?,
                    })
                },
            )
            .optional()
            .during("reading the site report ledger")
    }

    /// Applies a site's report in one transaction (module documentation).
    /// `source` says how it came (`media`, ...); `link`, for a report
    /// bundle, is its row of the site's report chain. The report must have
    /// passed `SiteReport::validate`.
    pub fn apply_site_report(
        &mut self,
        report: &SiteReport,
        source: &str,
        link: Option<&ReportChainRecord<'_>>,
    ) -> Result<SiteApplied> {
        let now = now_rfc3339();
        let tx =
            rusqlite::Transaction::new(self.conn_mut(), rusqlite::TransactionBehavior::Immediate)
                .during("beginning the site report's transaction")?;
        let applied =
            write_site(&tx, report, source, link, &now).during("applying the site report")?;
        crate::failpoint::hit("report-import-before-commit");
        tx.commit().during("committing the site report")?;
        Ok(applied)
    }

    /// Whether this store holds any site.
    pub fn has_sites(&self) -> Result<bool> {
        self.conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM sites)", [], |r| r.get(0))
            .during("reading the sites")
    }

    /// A site's server id from its server id or its name (case-insensitive);
    /// a name several sites share is refused, naming their ids.
    pub fn site_id(&self, name_or_id: &str) -> Result<String> {
        let mut st = self
            .conn()
            .prepare_cached(
                "SELECT server_id FROM sites WHERE server_id = lower(?1) \
                 UNION SELECT server_id FROM sites WHERE name = ?1 COLLATE NOCASE ORDER BY 1",
            )
            .during("reading the sites")?;
        let ids = st
            .query_map([name_or_id], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .during("reading the sites")?;
        if ids.iter().any(|i| i.eq_ignore_ascii_case(name_or_id)) {
            return Ok(name_or_id.to_ascii_lowercase());
        }
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::UnknownSite(name_or_id.to_string())),
            many => Err(Error::AmbiguousSite {
                name: name_or_id.to_string(),
                ids: many.join(", "),
            }),
        }
    }

    /// The sites (server id, name), by name.
    pub fn site_names(&self) -> Result<Vec<(String, String)>> {
        collect(
            self.conn(),
            "SELECT server_id, name FROM sites ORDER BY name COLLATE NOCASE, server_id",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .during("reading the sites")
    }

    /// `sites list`: each site with its last report, where its chain from
    /// this server stands, and its status counts.
    pub fn sites_list(&self) -> Result<Vec<SiteRow>> {
        let me = self.info().server_id.to_string();
        let rows = collect_with(
            self.conn(),
            &format!(
                "SELECT s.server_id, s.name, s.created, \
                 (SELECT i.to_anchor FROM site_imports i WHERE i.server_id = s.server_id AND i.source_server_id = ?1 \
                  ORDER BY i.seq DESC LIMIT 1), \
                 (SELECT (SELECT MAX(h2.seq) FROM export_history h2 WHERE h2.destination = h.destination) - h.seq \
                  FROM {SITE_POSITION} LIMIT 1), \
                 (SELECT COUNT(*) FROM site_computers c WHERE c.server_id = s.server_id) \
                 FROM sites s ORDER BY s.name COLLATE NOCASE, s.server_id"
            ),
            [&me],
            |r| {
                Ok(SiteRow {
                    server_id: r.get(0)?,
                    site: r.get(1)?,
                    last_report: r.get(2)?,
                    applied_anchor: r.get(3)?,
                    bundles_behind: r.get(4)?,
                    computers: r.get(5)?,
                    needed: 0,
                    failed: 0,
                    installed: 0,
                    counts: Default::default(),
                })
            },
        )
        .during("reading the sites")?;
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            let source = crate::store::reports::ReportSource::Site(&row.server_id);
            for c in self.report_computers_of(source, None)? {
                row.counts.add_all(&c.counts);
            }
            row.needed = row.counts.needed;
            row.failed = row.counts.failed;
            row.installed = row.counts.installed;
            out.push(row);
        }
        Ok(out)
    }

    /// The receipts an export to `destination` follows (module
    /// documentation); `None` when no site is known to apply that chain.
    pub fn receipt_for(&self, destination: &str) -> Result<Option<ReceiptPlan>> {
        let me = self.info().server_id.to_string();
        let sites: Vec<(String, String)> = collect_with(
            self.conn(),
            &format!(
                "SELECT s.server_id, s.name FROM sites s, {SITE_POSITION} AND h.destination = ?2 \
                 GROUP BY s.server_id ORDER BY s.name"
            ),
            params![me, destination],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .during("reading the sites' receipts")?;
        if sites.is_empty() {
            return Ok(None);
        }
        let mut plan = ReceiptPlan::default();
        let mut st = self
            .conn()
            .prepare("SELECT sha1, state FROM site_content WHERE server_id = ?1")
            .during("reading the sites' receipts")?;
        for (i, (id, name)) in sites.iter().enumerate() {
            let rows = st
                .query_map([id], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .during("reading the sites' receipts")?;
            let mut held = BTreeSet::new();
            for (sha1, state) in rows {
                let Ok(sha1) = <[u8; 20]>::try_from(sha1.as_slice()) else {
                    return Err(Error::Corrupt(format!(
                        "site {name}: a receipt row is corrupt"
                    )));
                };
                if state == "held" {
                    held.insert(sha1);
                } else {
                    plan.resend.insert(sha1);
                }
            }
            plan.held = if i == 0 {
                held
            } else {
                plan.held.intersection(&held).copied().collect()
            };
            plan.sites.push(name.clone());
        }
        Ok(Some(plan))
    }
}

/// Where a site stands on this server's chains (module documentation), as
/// the tail of a `FROM` clause: after `FROM sites s, ` (or inside a
/// subquery where `s` is a site row) it joins `i`, the site's latest
/// applied bundle from server `?1`, to `h`, that bundle's row in the export
/// history. Written with a correlated subquery, which SQLite answers from
/// the `site_imports` index per site: as a derived table joined to `sites`
/// the same rule made `/compliance` twice as slow at 100k updates.
pub(crate) const SITE_POSITION: &str = "site_imports i JOIN export_history h ON h.manifest_sha256 = i.manifest_sha256 \
     WHERE i.server_id = s.server_id AND i.source_server_id = ?1 AND i.seq = \
     (SELECT MAX(seq) FROM site_imports WHERE server_id = s.server_id AND source_server_id = ?1)";

/// Rows of `sql` (no parameters) mapped by `f`.
fn collect<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    collect_with(conn, sql, [], f)
}

/// Rows of `sql` with `params` mapped by `f`.
fn collect_with<T, P: rusqlite::Params>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut st = conn.prepare(sql)?;
    let rows = st.query_map(params, f)?;
    rows.collect()
}

fn read_imports(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<ImportedLink>> {
    collect(
        conn,
        "SELECT source_server_id, seq, bundle_id, manifest_sha256, full, from_anchor, to_anchor, imported \
         FROM import_ledger ORDER BY source_server_id, seq",
        |r| {
            Ok(ImportedLink {
                source_server_id: r.get(0)?,
                seq: r.get::<_, i64>(1)?.max(0) as u64,
                bundle_id: r.get(2)?,
                manifest_sha256: r.get(3)?,
                full: r.get::<_, i64>(4)? != 0,
                from_anchor: r.get(5)?,
                to_anchor: r.get(6)?,
                imported: r.get(7)?,
            })
        },
    )
}

/// The content rows (a malformed row is reported corrupt by the receipt).
fn read_content_rows(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<Vec<(Vec<u8>, Option<ContentFile>)>> {
    collect(
        conn,
        "SELECT sha1, sha256, size, rel_path FROM content ORDER BY rel_path",
        |r| {
            let sha1: Vec<u8> = r.get(0)?;
            let sha256: Vec<u8> = r.get(1)?;
            let size: i64 = r.get(2)?;
            let rel_path: String = r.get(3)?;
            let file = match (
                <[u8; 20]>::try_from(sha1.as_slice()),
                <[u8; 32]>::try_from(sha256.as_slice()),
                u64::try_from(size),
            ) {
                (Ok(sha1), Ok(sha256), Ok(size)) => Some(ContentFile {
                    sha1,
                    sha256,
                    size,
                    rel_path,
                }),
                _ => None,
            };
            Ok((sha1, file))
        },
    )
}

/// The content receipt: each recorded content file held (present with its
/// size; with `Digest`, its SHA-1 and SHA-256 too), missing (no file) or
/// corrupt (another size or digest, or a malformed row).
fn content_receipt(
    content: &crate::store::content::ContentStore,
    files: &[(Vec<u8>, Option<ContentFile>)],
    check: ContentCheck,
    progress: &dyn Progress,
) -> Receipt {
    let mut r = Receipt {
        check,
        held: Vec::new(),
        missing: Vec::new(),
        corrupt: Vec::new(),
    };
    let total: u64 = files
        .iter()
        .filter_map(|(_, f)| f.as_ref().map(|f| f.size))
        .sum();
    progress.phase(
        "receipt",
        Some(if check == ContentCheck::Digest {
            total
        } else {
            files.len() as u64
        }),
        if check == ContentCheck::Digest {
            "bytes"
        } else {
            "files"
        },
    );
    for (sha1, file) in files {
        let name = hex_upper(sha1);
        let Some(f) = file else {
            if sha1.len() == 20 {
                r.corrupt.push(name);
            }
            continue;
        };
        let path = content.path_of(&f.rel_path);
        let meta = std::fs::symlink_metadata(&path);
        let state = match meta {
            Err(_) => &mut r.missing,
            Ok(m) if !m.is_file() => &mut r.missing,
            Ok(m) if m.len() != f.size => &mut r.corrupt,
            Ok(_) if check == ContentCheck::Digest => {
                if content.verify_stored(f).is_ok() {
                    &mut r.held
                } else {
                    &mut r.corrupt
                }
            }
            Ok(_) => &mut r.held,
        };
        state.push(name);
        progress.advance(if check == ContentCheck::Digest {
            f.size
        } else {
            1
        });
    }
    progress.finish();
    r.held.sort();
    r.missing.sort();
    r.corrupt.sort();
    r
}

/// Writes a site's report (see [`Store::apply_site_report`]).
fn write_site(
    tx: &Transaction<'_>,
    r: &SiteReport,
    source: &str,
    link: Option<&ReportChainRecord<'_>>,
    now: &str,
) -> rusqlite::Result<SiteApplied> {
    let id = r.server_id.as_str();
    let known: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sites WHERE server_id = ?1)",
        [id],
        |row| row.get(0),
    )?;
    let check = match r.receipt.check {
        ContentCheck::Size => "size",
        ContentCheck::Digest => "digest",
    };
    tx.execute(
        "INSERT INTO sites (server_id, name, created, anchor, source, content_check, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (server_id) DO UPDATE SET name = excluded.name, \
         created = excluded.created, anchor = excluded.anchor, source = excluded.source, \
         content_check = excluded.content_check, updated = excluded.updated",
        params![id, r.name, r.created, r.anchor, source, check, now],
    )?;
    for table in [
        "site_imports",
        "site_content",
        "site_groups",
        "site_updates",
        "site_approvals",
        "site_computers",
        "site_status",
    ] {
        tx.execute(&format!("DELETE FROM {table} WHERE server_id = ?1"), [id])?;
    }
    {
        let mut st = tx.prepare(
            "INSERT INTO site_imports (server_id, source_server_id, seq, bundle_id, manifest_sha256, full, \
             from_anchor, to_anchor, imported) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for i in &r.imports {
            st.execute(params![
                id,
                i.source_server_id,
                i.seq as i64,
                i.bundle_id,
                i.manifest_sha256,
                i.full,
                i.from_anchor,
                i.to_anchor,
                i.imported
            ])?;
        }
    }
    {
        let mut st = tx.prepare(
            "INSERT OR REPLACE INTO site_content (server_id, sha1, state) VALUES (?1, ?2, ?3)",
        )?;
        for (list, state) in [
            (&r.receipt.held, "held"),
            (&r.receipt.missing, "missing"),
            (&r.receipt.corrupt, "corrupt"),
        ] {
            for sha1 in list {
                if let Some(b) = parse_sha1(sha1) {
                    st.execute(params![id, &b[..], state])?;
                }
            }
        }
    }
    {
        let mut st = tx.prepare(
            "INSERT INTO site_groups (server_id, group_id, name, parent_id) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for g in &r.groups {
            st.execute(params![id, g.id, g.name, g.parent_id])?;
        }
        let mut st = tx.prepare(
            "INSERT INTO site_updates (server_id, update_id, title) VALUES (?1, ?2, ?3)",
        )?;
        for u in &r.updates {
            st.execute(params![id, u.update_id, u.title])?;
        }
        let mut st = tx.prepare(
            "INSERT OR IGNORE INTO site_approvals (server_id, update_id, group_id) VALUES (?1, ?2, ?3)",
        )?;
        for a in &r.approvals {
            st.execute(params![id, a.update_id, a.group_id])?;
        }
        let mut st = tx.prepare(
            "INSERT INTO site_computers (server_id, computer_id, name, group_id, os_description, arch, \
             last_sync, last_report) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for c in &r.computers {
            st.execute(params![
                id,
                c.computer_id,
                c.name,
                c.group_id,
                c.os_description,
                c.arch,
                c.last_sync,
                c.last_report
            ])?;
        }
        let mut st = tx.prepare(
            "INSERT INTO site_status (server_id, computer_id, update_id, state, changed) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for s in &r.status {
            st.execute(params![id, s.computer_id, s.update_id, s.state, s.changed])?;
        }
    }
    // Events of computers no longer reported go with them.
    tx.execute(
        "DELETE FROM site_events WHERE server_id = ?1 AND computer_id NOT IN \
         (SELECT computer_id FROM site_computers WHERE server_id = ?1)",
        [id],
    )?;
    let mut events_added = 0u64;
    {
        let mut st = tx.prepare(
            "INSERT OR IGNORE INTO site_events (server_id, computer_id, instance_id, arrival, time_at_target, \
             namespace_id, event_id, source_id, update_id, revision, hresult, app_name, replacement, misc, received) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        for e in &r.events {
            let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
            events_added += st.execute(params![
                id,
                e.computer_id,
                e.instance_id,
                e.arrival,
                e.time_at_target,
                e.namespace_id,
                e.event_id,
                e.source_id,
                e.update_id,
                e.revision,
                e.hresult,
                e.app_name,
                list(&e.replacement),
                list(&e.misc),
                e.received
            ])? as u64;
        }
        let mut prune = tx.prepare(
            "DELETE FROM site_events WHERE server_id = ?1 AND computer_id = ?2 AND arrival <= \
             (SELECT arrival FROM site_events WHERE server_id = ?1 AND computer_id = ?2 \
              ORDER BY arrival DESC LIMIT 1 OFFSET ?3)",
        )?;
        let touched: BTreeSet<&str> = r.events.iter().map(|e| e.computer_id.as_str()).collect();
        for c in touched {
            prune.execute(params![id, c, SITE_EVENTS_KEPT as i64])?;
        }
    }
    if let Some(l) = link {
        tx.execute(
            "INSERT INTO site_reports (server_id, seq, bundle_id, manifest_sha256, from_anchor, to_anchor, imported) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                l.seq as i64,
                l.bundle_id,
                l.manifest_sha256,
                l.from_anchor,
                l.to_anchor,
                now
            ],
        )?;
    }
    Ok(SiteApplied {
        new_site: !known,
        computers: r.computers.len() as u64,
        status: r.status.len() as u64,
        events_added,
    })
}
