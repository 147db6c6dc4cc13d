//! The air gap's ledgers. Connected side: the export ledger (per
//! destination: where its chain stands), the export history (every link
//! exported, so `export --since` can continue after a lost one) and the
//! content already sent per destination. Disconnected side: the import
//! ledger (every bundle applied, per source). The import ledger's row is
//! written by the import's own transaction (`store::import`).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{DbContext, Result};
use crate::store::{Store, now_rfc3339};

/// A destination's row of the export ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLedger {
    pub last_seq: u64,
    pub last_manifest_sha256: String,
    pub last_to_anchor: String,
    /// The last queued trust statement the chain has carried.
    pub last_stmt_seq: i64,
    /// The chain's filters (JSON).
    pub filters: String,
}

/// One exported link of a destination's chain, as `export --since` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLink {
    pub seq: u64,
    pub manifest_sha256: String,
    pub full: bool,
    pub to_anchor: String,
    /// The last trust statement the chain had carried once this link was
    /// exported (unknown for links exported before schema 6).
    pub last_stmt_seq: Option<i64>,
}

/// A row of `exports list`: one bundle exported to a destination.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedLink {
    pub destination: String,
    pub seq: i64,
    pub bundle_id: String,
    pub kind: String,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub manifest_sha256: String,
    pub created: String,
    /// The key id that signed it (unknown for bundles exported before
    /// schema v7 recorded it).
    pub signer: Option<String>,
    /// Its size (`Manifest::payload_bytes`) and the end of its validity
    /// period (both unknown before schema v12).
    pub bytes: Option<u64>,
    pub expires: Option<String>,
}

/// A bundle just exported, for the ledger.
#[derive(Debug, Clone)]
pub struct ExportRecord<'a> {
    pub destination: &'a str,
    pub seq: u64,
    pub bundle_id: &'a str,
    pub manifest_sha256: &'a str,
    pub full: bool,
    pub from_anchor: Option<&'a str>,
    pub to_anchor: &'a str,
    /// The key id that signed it.
    pub signer: String,
    /// The chain's filters (JSON).
    pub filters: &'a str,
    /// SHA-1s of the content files it carries.
    pub sent_sha1: &'a [[u8; 20]],
    /// Its size (`Manifest::payload_bytes`) and the end of its validity
    /// period (the manifest's `expires`).
    pub bytes: u64,
    pub expires: &'a str,
}

/// The ledger rows of an export, written but not committed: the exporter
/// moves the bundle into place, then commits (dropping it rolls back).
pub struct PendingExport<'s> {
    tx: rusqlite::Transaction<'s>,
}

impl PendingExport<'_> {
    pub fn commit(self) -> Result<()> {
        self.tx.commit().during("committing the export ledger")
    }
}

/// The last bundle applied from a source (the import chain's head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLink {
    pub seq: u64,
    pub manifest_sha256: String,
    pub to_anchor: String,
}

/// A row of `imports list`: one bundle applied on this server.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedBundle {
    pub source_server_id: String,
    pub seq: i64,
    pub bundle_id: String,
    pub full: bool,
    pub from_anchor: Option<String>,
    /// Pass this to `export --since` on the source to continue after it.
    pub to_anchor: String,
    pub manifest_sha256: String,
    pub imported: String,
    pub local_anchor: String,
    /// The key id that signed it and its size (`Manifest::payload_bytes`;
    /// both unknown for bundles applied before schema v12).
    pub signer: Option<String>,
    pub bytes: Option<u64>,
    /// The end of its validity period (unknown before schema v12).
    pub expires: Option<String>,
}

/// A bundle being applied, for the import ledger.
#[derive(Debug, Clone)]
pub struct ImportRecord<'a> {
    pub source_server_id: &'a str,
    pub seq: u64,
    pub bundle_id: &'a str,
    pub manifest_sha256: &'a str,
    pub full: bool,
    pub from_anchor: Option<&'a str>,
    pub to_anchor: &'a str,
    /// This server's anchor once the bundle is applied.
    pub local_anchor: &'a str,
    /// The key id that signed it.
    pub signer: &'a str,
    /// Its size (`Manifest::payload_bytes`) and the end of its validity
    /// period (the manifest's `expires`).
    pub bytes: u64,
    pub expires: &'a str,
}

/// Writes the import ledger row inside the import's transaction.
pub(crate) fn record_import(conn: &Connection, r: &ImportRecord<'_>, now: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO import_ledger (source_server_id, seq, bundle_id, manifest_sha256, full, from_anchor, to_anchor, imported, local_anchor, signer, bytes, expires) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            r.source_server_id,
            r.seq as i64,
            r.bundle_id,
            r.manifest_sha256,
            r.full,
            r.from_anchor,
            r.to_anchor,
            now,
            r.local_anchor,
            r.signer,
            r.bytes as i64,
            r.expires
        ],
    )
    .during("writing the import ledger")?;
    Ok(())
}

/// A recorded size: NULL (not recorded) or damaged is unknown.
fn size(v: Option<i64>) -> Option<u64> {
    v.and_then(|n| u64::try_from(n).ok())
}

fn write_export(tx: &Connection, r: &ExportRecord<'_>, now: &str) -> rusqlite::Result<()> {
    let max_stmt: i64 = tx.query_row(
        "SELECT COALESCE(MAX(stmt_seq), 0) FROM trust_statements",
        [],
        |row| row.get(0),
    )?;
    let seq = r.seq as i64;
    tx.execute(
        "INSERT INTO export_ledger (destination, last_seq, last_bundle_id, last_manifest_sha256, last_to_anchor, last_stmt_seq, filters, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (destination) DO UPDATE SET last_seq = excluded.last_seq, \
         last_bundle_id = excluded.last_bundle_id, last_manifest_sha256 = excluded.last_manifest_sha256, \
         last_to_anchor = excluded.last_to_anchor, last_stmt_seq = excluded.last_stmt_seq, filters = excluded.filters, updated = excluded.updated",
        params![r.destination, seq, r.bundle_id, r.manifest_sha256, r.to_anchor, max_stmt, r.filters, now],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO export_history (destination, seq, bundle_id, manifest_sha256, kind, from_anchor, to_anchor, created, signer, last_stmt_seq, bytes, expires) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            r.destination,
            seq,
            r.bundle_id,
            r.manifest_sha256,
            if r.full { "full" } else { "incremental" },
            r.from_anchor,
            r.to_anchor,
            now,
            r.signer,
            max_stmt,
            r.bytes as i64,
            r.expires
        ],
    )?;
    // Links after this one (replaced by a `--since` export) are forgotten.
    tx.execute(
        "DELETE FROM export_history WHERE destination = ?1 AND seq > ?2",
        params![r.destination, seq],
    )?;
    // A full bundle starts the chain again: it carried all content.
    if r.full {
        tx.execute(
            "DELETE FROM export_sent_content WHERE destination = ?1",
            [r.destination],
        )?;
    }
    let mut st = tx
        .prepare("INSERT OR IGNORE INTO export_sent_content (destination, sha1) VALUES (?1, ?2)")?;
    for sha1 in r.sent_sha1 {
        st.execute(params![r.destination, &sha1[..]])?;
    }
    Ok(())
}

impl Store {
    /// The export ledger's row for `destination`, if a bundle went there.
    pub fn export_ledger(&self, destination: &str) -> Result<Option<ExportLedger>> {
        self.conn()
            .query_row(
                "SELECT last_seq, last_manifest_sha256, last_to_anchor, last_stmt_seq, filters \
                 FROM export_ledger WHERE destination = ?1",
                [destination],
                |r| {
                    Ok(ExportLedger {
                        last_seq: r.get::<_, i64>(0)?.max(0) as u64,
                        last_manifest_sha256: r.get(1)?,
                        last_to_anchor: r.get(2)?,
                        last_stmt_seq: r.get(3)?,
                        filters: r.get(4)?,
                    })
                },
            )
            .optional()
            .during("reading the export ledger")
    }

    /// The links exported to `destination`, oldest first.
    pub fn export_links(&self, destination: &str) -> Result<Vec<ExportLink>> {
        let read = || -> rusqlite::Result<Vec<ExportLink>> {
            let mut st = self.conn().prepare(
                "SELECT seq, manifest_sha256, kind, to_anchor, last_stmt_seq FROM export_history \
                 WHERE destination = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map([destination], |r| {
                Ok(ExportLink {
                    seq: r.get::<_, i64>(0)?.max(0) as u64,
                    manifest_sha256: r.get(1)?,
                    full: r.get::<_, String>(2)? == "full",
                    to_anchor: r.get(3)?,
                    last_stmt_seq: r.get(4)?,
                })
            })?;
            rows.collect()
        };
        read().during("reading the export history")
    }

    /// Every bundle exported, per destination and seq (`exports list`).
    pub fn export_history(&self) -> Result<Vec<ExportedLink>> {
        let read = || -> rusqlite::Result<Vec<ExportedLink>> {
            let mut st = self.conn().prepare(
                "SELECT destination, seq, bundle_id, kind, from_anchor, to_anchor, manifest_sha256, created, signer, bytes, expires \
                 FROM export_history ORDER BY destination, seq",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ExportedLink {
                    destination: r.get(0)?,
                    seq: r.get(1)?,
                    bundle_id: r.get(2)?,
                    kind: r.get(3)?,
                    from_anchor: r.get(4)?,
                    to_anchor: r.get(5)?,
                    manifest_sha256: r.get(6)?,
                    created: r.get(7)?,
                    signer: r.get(8)?,
                    bytes: size(r.get(9)?),
                    expires: r.get(10)?,
                })
            })?;
            rows.collect()
        };
        read().during("reading the export history")
    }

    /// Writes an export's ledger rows: the destination's ledger row, its
    /// history link (links after it forgotten), and the content it sent (a
    /// full bundle forgets what was sent before). Committed by the caller
    /// once the bundle is in place.
    pub fn record_export(&mut self, r: &ExportRecord<'_>) -> Result<PendingExport<'_>> {
        let now = now_rfc3339();
        let tx = self
            .conn_mut()
            .transaction()
            .during("writing the export ledger")?;
        write_export(&tx, r, &now).during("writing the export ledger")?;
        Ok(PendingExport { tx })
    }

    /// Per destination, the last queued trust statement its chain carried.
    pub fn statements_sent(&self) -> Result<Vec<(String, i64)>> {
        let read = || -> rusqlite::Result<Vec<(String, i64)>> {
            let mut st = self.conn().prepare(
                "SELECT destination, last_stmt_seq FROM export_ledger ORDER BY destination",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        read().during("reading the export ledger")
    }

    /// (destination, key id) of every key that signed a bundle exported to
    /// a destination (as recorded: a damaged id is the caller's to judge).
    pub fn export_signers(&self) -> Result<Vec<(String, String)>> {
        let read = || -> rusqlite::Result<Vec<(String, String)>> {
            let mut st = self.conn().prepare(
                "SELECT DISTINCT destination, signer FROM export_history WHERE signer IS NOT NULL",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        read().during("reading the export history")
    }

    /// The last bundle applied from `source`, if any.
    pub fn last_import(&self, source: &str) -> Result<Option<ImportLink>> {
        self.conn()
            .query_row(
                "SELECT seq, manifest_sha256, to_anchor FROM import_ledger WHERE source_server_id = ?1 \
                 ORDER BY seq DESC LIMIT 1",
                [source],
                |r| {
                    Ok(ImportLink {
                        seq: r.get::<_, i64>(0)?.max(0) as u64,
                        manifest_sha256: r.get(1)?,
                        to_anchor: r.get(2)?,
                    })
                },
            )
            .optional()
            .during("reading the import ledger")
    }

    /// The manifest digest of the bundle applied from `source` as `seq`.
    pub fn imported_manifest(&self, source: &str, seq: u64) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT manifest_sha256 FROM import_ledger WHERE source_server_id = ?1 AND seq = ?2",
                params![source, seq as i64],
                |r| r.get(0),
            )
            .optional()
            .during("reading the import ledger")
    }

    /// The import ledger, per source and seq (`imports list`).
    pub fn import_ledger(&self) -> Result<Vec<AppliedBundle>> {
        let read = || -> rusqlite::Result<Vec<AppliedBundle>> {
            let mut st = self.conn().prepare(
                "SELECT source_server_id, seq, bundle_id, full, from_anchor, to_anchor, manifest_sha256, imported, local_anchor, signer, bytes, expires \
                 FROM import_ledger ORDER BY source_server_id, seq",
            )?;
            let rows = st.query_map([], |r| {
                Ok(AppliedBundle {
                    source_server_id: r.get(0)?,
                    seq: r.get(1)?,
                    bundle_id: r.get(2)?,
                    full: r.get::<_, i64>(3)? != 0,
                    from_anchor: r.get(4)?,
                    to_anchor: r.get(5)?,
                    manifest_sha256: r.get(6)?,
                    imported: r.get(7)?,
                    local_anchor: r.get(8)?,
                    signer: r.get(9)?,
                    bytes: size(r.get(10)?),
                    expires: r.get(11)?,
                })
            })?;
            rows.collect()
        };
        read().during("reading the import ledger")
    }
}
