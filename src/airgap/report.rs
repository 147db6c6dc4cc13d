//! Report bundles (docs/bundle-format.md, "Report bundles"): the way back
//! across the gap.
//!
//! `export --report` (the site): reads the site's state in one read
//! transaction (`Store::read_site_report`: identity, import ledger, content
//! receipt, groups, reportable updates, approvals, computers, status, the
//! events since the last report to the destination) and writes it as
//! `report.json` in a single-volume bundle of kind `report` (format version
//! 4), signed like a data bundle (`export::write_single_volume_headers`),
//! with its own chain per destination (`report_exports`): seq, previous
//! manifest, and from/to anchors that are the site's journal anchors (the
//! from-anchor is the previous report's to-anchor; none on the first
//! report, or with `--full`, which starts the chain again). Like a data
//! export, the bundle is renamed into place inside the transaction that
//! records it.
//!
//! `import` of a report (the upper server): the whole bundle verified as a
//! data bundle is (`verify::verify_bundle`: trust, signature, sums,
//! validity period, every file's digest), then the report's own rules
//! (`rule_*` here, `SiteReport::validate`), then the chain rules of data
//! bundles (`verify::check_chain_in`) against the site report ledger
//! (`site_reports`, per site server id); then applied in one transaction
//! (`Store::apply_site_report`). The same report again is a no-op.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::airgap::export::{self, begin_partial};
use crate::airgap::format::{
    self, BundleKind, Counts, FORMAT, Filters, Layout, MANIFEST, MAX_MANIFEST_BYTES, Manifest,
    PackEntry, Source, VERSION_KINDS,
};
use crate::airgap::verify::{self, ChainLedger, ChainStatus};
use crate::error::{Error, Result};
use crate::model::report::{ContentCheck, ReportCounts, SiteReport};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::content::sync_dir;
use crate::store::ledgers::ImportLink;
use crate::store::sites::{ReportChainRecord, ReportExportRecord, SiteApplied};
use crate::trust::{SecretKey, TrustView};

/// The report's one data file.
pub const REPORT_ENTRY: &str = "report.json";
/// Largest `report.json` read.
pub const MAX_REPORT_BYTES: u64 = 1 << 30;

pub struct ReportExportOptions<'a> {
    pub out: &'a Path,
    pub destination: &'a str,
    /// Start the destination's report chain again (no from-anchor; the
    /// first report's event bound).
    pub full: bool,
    pub check: ContentCheck,
    pub expires: time::Duration,
    pub key: &'a SecretKey,
}

/// What `export --report` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ReportExport {
    pub path: PathBuf,
    pub bundle_id: String,
    pub seq: u64,
    pub kind: BundleKind,
    pub destination: String,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub manifest_sha256: String,
    pub content_check: ContentCheck,
    pub report: ReportCounts,
    pub bytes_written: u64,
}

/// Writes a report bundle (module documentation).
pub fn export_report(
    store: &mut Store,
    opts: &ReportExportOptions<'_>,
    progress: &dyn Progress,
) -> Result<ReportExport> {
    export::check_destination_name(opts.destination)?;
    export::check_expires(opts.expires)?;
    crate::trust::check_export_signer(store, &opts.key.id())?;
    let (mut partial, out_parent) = begin_partial(opts.out)?;
    let last = store.last_report_export(opts.destination)?;
    let continues = last.as_ref().filter(|_| !opts.full);
    let (report, marks) =
        store.read_site_report(continues.map(|l| &l.event_marks), opts.check, progress)?;
    fs::create_dir_all(&partial.path).map_err(|e| Error::io(&partial.path, e))?;
    let bytes = serde_json::to_vec(&report).map_err(|e| Error::invalid("report", e.to_string()))?;
    export::write_file(&partial.path.join(REPORT_ENTRY), &bytes)?;
    let now = time::OffsetDateTime::now_utc();
    let info = store.info().clone();
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: VERSION_KINDS,
        bundle_id: uuid::Uuid::new_v4().to_string(),
        source: Source {
            server_id: info.server_id.to_string(),
            name: info.name.clone(),
        },
        destination: opts.destination.to_string(),
        seq: last.as_ref().map_or(1, |l| l.seq + 1),
        prev_manifest_sha256: last.as_ref().map(|l| l.manifest_sha256.clone()),
        prev_equivalent_sha256: Vec::new(),
        kind: BundleKind::Report,
        from_anchor: continues.map(|l| l.to_anchor.clone()),
        to_anchor: report.anchor.clone(),
        created: export::rfc3339(now)?,
        expires: export::rfc3339(now.checked_add(opts.expires).ok_or_else(|| {
            Error::bad_argument("expiry", "the end of the validity period is out of range")
        })?)?,
        signer: opts.key.public().id.to_string(),
        filters: Filters::default(),
        counts: Counts::default(),
        volumes: 1,
        packs: vec![PackEntry {
            volume: 1,
            name: REPORT_ENTRY.to_string(),
            size: bytes.len() as u64,
            sha256: format::sha256_hex(&bytes),
        }],
        trust_statements: Vec::new(),
        snapshot: None,
        report: Some(report.counts()),
    };
    let (manifest_sha256, bytes_written) =
        export::write_single_volume_headers(&partial.path, &manifest, opts.key)?;
    let signer = manifest.signer.clone();
    let pending = store.record_report_export(&ReportExportRecord {
        destination: opts.destination,
        seq: manifest.seq,
        bundle_id: &manifest.bundle_id,
        manifest_sha256: &manifest_sha256,
        from_anchor: manifest.from_anchor.as_deref(),
        to_anchor: &manifest.to_anchor,
        signer: &signer,
        event_marks: &marks,
    })?;
    fs::rename(&partial.path, opts.out).map_err(|e| Error::io(opts.out, e))?;
    partial.armed = false;
    crate::failpoint::hit("report-export-before-ledger-commit");
    if let Err(e) = pending.commit() {
        let _ = fs::remove_dir_all(opts.out);
        return Err(e);
    }
    sync_dir(&out_parent)?;
    Ok(ReportExport {
        path: opts.out.to_path_buf(),
        bundle_id: manifest.bundle_id,
        seq: manifest.seq,
        kind: BundleKind::Report,
        destination: opts.destination.to_string(),
        from_anchor: manifest.from_anchor,
        to_anchor: manifest.to_anchor,
        manifest_sha256,
        content_check: opts.check,
        report: report.counts(),
        bytes_written,
    })
}

/// The kind a bundle's manifest claims, read without verification: only
/// to choose which import verifies it (a data bundle's or a report's).
/// `None` when the manifest cannot be read.
pub fn peek_kind(layout: &Layout) -> Option<BundleKind> {
    #[derive(Deserialize)]
    struct Head {
        kind: BundleKind,
    }
    let first = layout.volumes.first()?;
    let bytes =
        format::read_small(&first.join(MANIFEST), MAX_MANIFEST_BYTES, "oversized-file").ok()?;
    serde_json::from_slice::<Head>(&bytes).ok().map(|h| h.kind)
}

/// The site report ledger as a chain ledger (per site server id).
struct SiteReports<'a>(&'a Store);

impl ChainLedger for SiteReports<'_> {
    fn applied_manifest(&self, source: &str, seq: u64) -> Result<Option<String>> {
        self.0.site_report_manifest(source, seq)
    }
    fn last_link(&self, source: &str) -> Result<Option<ImportLink>> {
        self.0.last_site_report(source)
    }
}

/// The chain rules of data bundles (replay, gap, fork, own bundle,
/// rebase) on a report, against `store`'s site report ledger.
pub fn check_report_chain(
    store: &Store,
    m: &Manifest,
    manifest_sha256: &str,
    rebase: bool,
) -> Result<ChainStatus> {
    verify::check_chain_in(
        &SiteReports(store),
        &store.info().server_id.to_string(),
        m,
        manifest_sha256,
        rebase,
    )
}

pub struct ReportImportOptions {
    pub layout: Layout,
    pub dry_run: bool,
    pub allow_expired: bool,
    /// Accept a report that starts its chain again (`export --report
    /// --full`) from a site whose chain this store follows.
    pub rebase: bool,
}

/// What importing a report did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct ReportImport {
    /// "imported", "already-imported" or "dry-run".
    pub status: &'static str,
    pub kind: BundleKind,
    pub bundle_id: String,
    pub site: String,
    pub server_id: String,
    pub seq: u64,
    pub chain: ChainStatus,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub expired_but_allowed: bool,
    pub report: ReportCounts,
    /// What applying it changed (zero on a dry run or no-op).
    pub applied: SiteApplied,
    pub checks: Vec<String>,
}

/// Rule: the bundle is a report.
fn rule_is_report(m: &Manifest) -> Result<()> {
    if m.kind != BundleKind::Report {
        return Err(Error::verification(
            "wrong-kind",
            format!(
                "bundle {} is a {} bundle, not a report",
                m.bundle_id, m.kind
            ),
        ));
    }
    Ok(())
}

/// Rule: a report is one volume whose one pack is `report.json`, with no
/// trust statements (a site's keys are trusted by the upper server's
/// administrator, `trust add`).
fn rule_report_shape(m: &Manifest) -> Result<()> {
    let ok = m.volumes == 1
        && m.trust_statements.is_empty()
        && m.packs.len() == 1
        && m.packs[0].name == REPORT_ENTRY
        && m.packs[0].volume == 1;
    if !ok {
        return Err(Error::verification(
            "malformed-manifest",
            format!(
                "report {}: a report is one volume holding {REPORT_ENTRY} alone, with no trust statements",
                m.bundle_id
            ),
        ));
    }
    Ok(())
}

/// Rule: the report is about the server that signed the bundle
/// (`source`), and its counts are the manifest's.
fn rule_report_matches_manifest(m: &Manifest, r: &SiteReport) -> Result<()> {
    if r.server_id != m.source.server_id || r.name != m.source.name {
        return Err(Error::verification(
            "malformed-report",
            format!(
                "{REPORT_ENTRY} reports on {} ({}), but the bundle is from {} ({})",
                r.name, r.server_id, m.source.name, m.source.server_id
            ),
        ));
    }
    if m.report.as_ref() != Some(&r.counts()) {
        return Err(Error::verification(
            "count-mismatch",
            format!(
                "{REPORT_ENTRY} carries {:?}, the manifest says {:?}",
                r.counts(),
                m.report
            ),
        ));
    }
    if r.anchor != m.to_anchor {
        return Err(Error::verification(
            "malformed-report",
            format!(
                "{REPORT_ENTRY} describes anchor {}, the manifest's to-anchor is {}",
                r.anchor, m.to_anchor
            ),
        ));
    }
    Ok(())
}

/// Reads `report.json` (bounded), checks the digest of the bytes read
/// against the manifest's before parsing them.
fn read_report(dir: &Path, m: &Manifest) -> Result<SiteReport> {
    let path = dir.join(REPORT_ENTRY);
    let bytes = format::read_small(&path, MAX_REPORT_BYTES, "oversized-file")?;
    let pack = &m.packs[0];
    let got = format::sha256_hex(&bytes);
    if got != pack.sha256 || bytes.len() as u64 != pack.size {
        return Err(Error::verification(
            "hash-mismatch",
            format!(
                "{}: SHA-256 {got}, the manifest says {}",
                path.display(),
                pack.sha256
            ),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::verification("malformed-report", format!("{}: {e}", path.display())))
}

/// Verifies a report bundle against `store`'s trusted keys and its site
/// report ledger, then applies it in one transaction (module
/// documentation).
pub fn import_report(
    store: &mut Store,
    opts: &ReportImportOptions,
    progress: &dyn Progress,
) -> Result<ReportImport> {
    let mut view = TrustView::from_store(store)?;
    let v = verify::verify_bundle(&opts.layout, &mut view, opts.allow_expired, progress)?;
    let m = &v.manifest;
    rule_is_report(m)?;
    rule_report_shape(m)?;
    let chain = check_report_chain(store, m, &v.manifest_sha256, opts.rebase)?;
    let mut checks = v.checks.clone();
    checks.push(format!(
        "report chain: {chain} (seq {} from {})",
        m.seq, m.source.name
    ));
    let mut out = ReportImport {
        status: "imported",
        kind: BundleKind::Report,
        bundle_id: m.bundle_id.clone(),
        site: m.source.name.clone(),
        server_id: m.source.server_id.clone(),
        seq: m.seq,
        chain,
        from_anchor: m.from_anchor.clone(),
        to_anchor: m.to_anchor.clone(),
        expired_but_allowed: v.expired_but_allowed,
        report: m.report.clone().unwrap_or_default(),
        applied: SiteApplied::default(),
        checks,
    };
    if chain == ChainStatus::AlreadyApplied {
        out.status = "already-imported";
        return Ok(out);
    }
    let dir = v
        .volume_dirs
        .first()
        .ok_or_else(|| Error::verification("missing-volume", "no volume"))?;
    let report = read_report(dir, m)?;
    report.validate()?;
    rule_report_matches_manifest(m, &report)?;
    out.checks.push(format!(
        "{REPORT_ENTRY}: well formed, about its signer's server"
    ));
    if opts.dry_run {
        out.status = "dry-run";
        return Ok(out);
    }
    out.applied = store.apply_site_report(
        &report,
        "media",
        Some(&ReportChainRecord {
            seq: m.seq,
            bundle_id: &m.bundle_id,
            manifest_sha256: &v.manifest_sha256,
            from_anchor: m.from_anchor.as_deref(),
            to_anchor: &m.to_anchor,
        }),
    )?;
    Ok(out)
}
