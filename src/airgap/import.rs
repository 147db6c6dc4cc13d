//! `import`: verifies a bundle against this server's trust store and chain,
//! then applies it all or nothing.
//!
//! Order of work:
//! 1. Volume 1's header (signature by a trusted key — after applying the
//!    bundle's own signed trust statements to an in-memory view —, sums,
//!    manifest), validity period and chain position. Exactly the same
//!    bundle again is a no-op.
//! 2. The metadata pack and content index, hashed before they are read.
//! 3. One SQLite transaction: trust statements, revisions (each re-parsed;
//!    identity must match its entry name), groups, deployments, declines.
//! 4. Volume by volume (one at a time, so one mount point can be swapped
//!    between media): each header checked. Format 3: the volume's
//!    SHA256SUMS against the content index, then each content file read
//!    once and hashed once (whole files in parallel) while it is staged
//!    into `staging/`: that SHA-256 is the signed one and the update
//!    metadata's (SHA-1 computed too where the metadata has no SHA-256).
//!    Formats 1 and 2: each content pack streamed once, hashed as a whole
//!    while its entries are staged and each file is checked against the
//!    metadata's SHA-1, SHA-256 and size. Either way (defence in depth)
//!    even a validly signed bundle cannot bring content that its metadata
//!    does not vouch for.
//! 5. Only when everything verified: staged content renamed into place,
//!    ledger row written, COMMIT. Any failure before drops the transaction
//!    and the staged files: the store is unchanged.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::airgap::format::{
    self, BundleKind, CONTENT_ENTRY, ContentRecord, HashingReader, Layout, METADATA_PACK, Manifest,
    REVISIONS_DIR, STATE_ENTRY, State, VolumeHeader, read_volume_header,
};
use crate::airgap::verify::{ChainStatus, check_chain};
use crate::error::{Error, IoContext, Result};
use crate::model::metadata::{self, MAX_DOCUMENT_BYTES};
use crate::model::state::StateChanges;
use crate::progress::Progress;
use crate::store::content::{Expected, StageWriter, Staged};
use crate::store::import::ImportTx;
use crate::store::journal;
pub use crate::store::ledgers::AppliedBundle;
use crate::store::ledgers::ImportRecord;
use crate::store::state::StateSource;
use crate::store::trust::TrustChange;
use crate::store::{Added, Mode, Store};
use crate::trust::TrustView;

/// Decompressed metadata may be at most this many times the compressed
/// pack, and never more than `MAX_METADATA_BYTES` (decompression bombs).
pub const MAX_METADATA_RATIO: u64 = 200;
pub const MAX_METADATA_BYTES: u64 = 16 << 30;
pub const MAX_STATE_BYTES: u64 = 512 << 20;

/// Asks for the next medium when volumes share one mount point: called
/// with the volume number and the folder it should appear at; returns false
/// to give up.
pub type MediaPrompt<'a> = &'a dyn Fn(u32, &Path) -> bool;

pub struct ImportOptions<'a> {
    /// Volume folders, in order (one folder for a single-volume bundle or a
    /// bundle folder holding `vol-NNN/`).
    pub layout: Layout,
    pub dry_run: bool,
    /// With `dry_run`: plan even when volumes after the first are not
    /// given (the plan's `volumes_missing` names them).
    pub plan_from_first_volume: bool,
    pub allow_expired: bool,
    pub rebase: bool,
    pub prompt: Option<MediaPrompt<'a>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub revisions_added: u64,
    pub revisions_already_present: u64,
    pub updates_added: u64,
    pub updates_superseded: u64,
    /// Groups, deployments and declines applied.
    #[serde(flatten)]
    pub state: StateChanges,
    pub trust_statements: u64,
    pub content_files: u64,
    pub content_bytes: u64,
    pub content_already_present: u64,
    pub disk_needed: u64,
    pub disk_free: u64,
    /// Volumes of the bundle (dry run: those whose headers were checked are
    /// the others than `volumes_missing`).
    pub volumes: u32,
    /// Dry run with `plan_from_first_volume`: the volumes that were not
    /// given. Every count comes from volume 1 (its metadata pack and
    /// content index); the content of these volumes was not checked.
    pub volumes_missing: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// "imported", "already-imported" or "dry-run".
    pub status: &'static str,
    pub bundle_id: String,
    pub source_server_id: String,
    pub source_name: String,
    pub seq: u64,
    pub kind: BundleKind,
    pub chain: ChainStatus,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub expired_but_allowed: bool,
    pub plan: Plan,
    pub anchor: String,
    pub checks: Vec<String>,
}

fn fail(rule: &'static str, detail: impl Into<String>) -> Error {
    Error::verification(rule, detail)
}

/// What step 1 established about the bundle.
struct Checked {
    /// The folder volume 1 was read from.
    first_dir: PathBuf,
    h1: VolumeHeader,
    /// Dry run with `plan_from_first_volume`: the volumes not given.
    missing: Vec<u32>,
    expired: bool,
    chain: ChainStatus,
}

pub fn import(
    store: &mut Store,
    opts: &ImportOptions<'_>,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    let mut view = TrustView::from_store(store)?;
    let mut checks: Vec<String> = Vec::new();

    // ---- 1. volume 1 header, validity, chain
    let checked = check_bundle(store, opts, &mut view, &mut checks)?;
    let m = &checked.h1.manifest;
    let base = ImportReport {
        status: "imported",
        bundle_id: m.bundle_id.clone(),
        source_server_id: m.source.server_id.clone(),
        source_name: m.source.name.clone(),
        seq: m.seq,
        kind: m.kind,
        chain: checked.chain,
        from_anchor: m.from_anchor.clone(),
        to_anchor: m.to_anchor.clone(),
        expired_but_allowed: checked.expired,
        plan: Plan::default(),
        anchor: store.anchor()?.to_string(),
        checks: Vec::new(),
    };
    if checked.chain == ChainStatus::AlreadyApplied {
        return Ok(ImportReport {
            status: "already-imported",
            checks,
            ..base
        });
    }

    // ---- 2. metadata pack and content index, hashed before use
    let meta_pack = pack_entry(m, METADATA_PACK)?;
    let content_index = if format::has_content_files(m) {
        Index::Files(format::read_file_index(&checked.first_dir, m)?)
    } else {
        Index::Packs(read_content_index(&checked.first_dir, m)?)
    };
    checks.push("metadata pack and content index digests match".into());

    // ---- 3. one transaction
    // A rebase replaces the chain: on a replica (whose deployments all come
    // from upstream) deployments the full bundle does not carry are removed;
    // an autonomous server keeps its own approvals.
    let replace = checked.chain == ChainStatus::Rebase && store.info().mode == Mode::Replica;
    let server_id = store.info().server_id;
    let root = store.root().to_path_buf();
    let tx = store.begin_import()?;
    let mut plan = Plan::default();
    // The bundle's statements were applied to the view (step 1): their
    // changes are this store's.
    tx.apply_trust_changes(view.changes())?;
    plan.trust_statements = view
        .changes()
        .iter()
        .filter(|c| matches!(c, TrustChange::StatementApplied { .. }))
        .count() as u64;
    let state = apply_metadata_pack(
        &tx,
        &checked.first_dir,
        meta_pack,
        &mut plan,
        progress,
        m.counts.revisions,
    )?;
    plan.state += tx.apply_state(&state, replace, StateSource::Import)?;
    crate::failpoint::hit("import-after-metadata");
    checks.push(format!(
        "{} revisions re-parsed; identities match their entries",
        plan.revisions_added + plan.revisions_already_present
    ));

    // ---- content: what is needed, disk space
    let needed = plan_content(&tx, content_index.files(), &mut plan)?;
    plan.disk_needed = plan.content_bytes;
    plan.disk_free = fs4::available_space(&root).unwrap_or(0);
    plan.volumes = m.volumes;
    if opts.dry_run {
        drop(tx);
        let files = match &content_index {
            Index::Files(f) => {
                format::check_volume_files(&checked.h1, 1, f)?;
                Some(f.as_slice())
            }
            Index::Packs(_) => None,
        };
        check_later_headers(
            opts,
            &view,
            &checked.h1,
            &checked.missing,
            files,
            &mut checks,
        )?;
        plan.volumes_missing = checked.missing;
        return Ok(ImportReport {
            status: "dry-run",
            plan,
            checks,
            ..base
        });
    }
    rule_room_for_content(&root, &plan)?;

    // ---- 4. volumes, one at a time
    let staged = match &content_index {
        Index::Packs(index) => read_volumes(
            &tx,
            opts,
            &view,
            &checked,
            index,
            &needed,
            progress,
            &mut checks,
        )?,
        Index::Files(index) => read_volumes_files(
            &tx,
            opts,
            &view,
            &checked,
            index,
            &needed,
            progress,
            &mut checks,
        )?,
    };

    // ---- 5. apply
    let anchor = apply_and_commit(tx, staged, &checked.h1, server_id)?;
    Ok(ImportReport {
        plan,
        checks,
        anchor,
        ..base
    })
}

/// Step 1: the bundle's own trust statements (applied to `view`), volume
/// 1's header, the top level's, the validity period and the chain position.
fn check_bundle(
    store: &Store,
    opts: &ImportOptions<'_>,
    view: &mut TrustView,
    checks: &mut Vec<String>,
) -> Result<Checked> {
    let first_dir = volume_dir(&opts.layout, 1, None, opts.prompt)?;
    let statements = crate::airgap::verify::preload_statements(&first_dir, view, checks)?;
    let h1 = read_volume_header(&first_dir, view, false)?;
    if h1.volume != Some(1) {
        return Err(fail(
            "wrong-volume",
            format!(
                "{} holds volume {:?}, expected volume 1",
                first_dir.display(),
                h1.volume
            ),
        ));
    }
    rule_data_bundle(&h1)?;
    format::check_volume_packs(&h1, 1)?;
    crate::airgap::verify::check_statements_listed(&h1.manifest, &statements)?;
    crate::airgap::verify::check_statements_signed(&h1, &statements)?;
    checks.push(format!(
        "volume 1: signature by trusted key {} valid; files listed exactly",
        h1.signer
    ));
    // A dry run plans for the whole bundle: every volume must be at hand,
    // unless it is told to plan from volume 1 alone.
    let missing = if opts.dry_run {
        dry_run_missing_volumes(opts, h1.manifest.volumes)?
    } else {
        Vec::new()
    };
    // The top level of a multi-volume bundle (for stock tools) must be as
    // signed too, and name the same bundle (it lists every volume's files:
    // not checked when some are missing in a dry run).
    if !missing.is_empty() {
        checks.push(format!(
            "top level and {} not checked: not given",
            volume_list(&missing)
        ));
    } else if let Some(top) = opts.layout.top_with_files() {
        let ht = read_volume_header(top, view, true)?;
        if ht.manifest_sha256 != h1.manifest_sha256 {
            return Err(fail(
                "mixed-volumes",
                format!("{} names another bundle than volume 1", top.display()),
            ));
        }
        checks.push(format!("{}: top-level signature valid", top.display()));
    }
    let m = &h1.manifest;
    let expired =
        format::check_validity_period(m, time::OffsetDateTime::now_utc(), opts.allow_expired)?;
    checks.push(if expired {
        format!("EXPIRED {} (allowed by --allow-expired)", m.expires)
    } else {
        "within validity period".into()
    });
    let chain = check_chain(
        store,
        &store.info().server_id.to_string(),
        m,
        &h1.manifest_sha256,
        opts.rebase,
    )?;
    checks.push(format!(
        "chain: {chain:?} (seq {} from {})",
        m.seq, m.source.name
    ));
    Ok(Checked {
        first_dir,
        h1,
        missing,
        expired,
        chain,
    })
}

/// Rule: this import applies data bundles (full, incremental); a report or
/// snapshot bundle is refused, naming the command that takes it.
fn rule_data_bundle(h: &VolumeHeader) -> Result<()> {
    let m = &h.manifest;
    let command = match m.kind {
        BundleKind::Full | BundleKind::Incremental => return Ok(()),
        BundleKind::Report => {
            "gapsync import (a store imports a site report as a report)".to_string()
        }
        BundleKind::Snapshot => format!(
            "gapsync restore {} --trust KEY.pub --into NEWDIR (a snapshot of server {} is not imported but restored into a new store)",
            h.dir.display(),
            m.source.name
        ),
    };
    Err(fail(
        "wrong-kind",
        format!(
            "{}: bundle {} is a {} bundle, not a data bundle; use {command}",
            h.dir.display(),
            m.bundle_id,
            m.kind
        ),
    ))
}

/// Step 2: the content index (`content.json` of volume 1), hashed before
/// it is read, and its rules.
fn read_content_index(first_dir: &Path, m: &Manifest) -> Result<Vec<ContentRecord>> {
    let cidx_pack = pack_entry(m, CONTENT_ENTRY)?;
    let cidx_bytes = format::read_small(
        &first_dir.join(CONTENT_ENTRY),
        MAX_STATE_BYTES,
        "oversized-file",
    )?;
    check_bytes_digest(first_dir, CONTENT_ENTRY, &cidx_bytes, &cidx_pack.sha256)?;
    let content_index: Vec<ContentRecord> = serde_json::from_slice(&cidx_bytes)
        .map_err(|e| fail("malformed-content-index", format!("{CONTENT_ENTRY}: {e}")))?;
    check_content_index(m, &content_index)?;
    Ok(content_index)
}

/// The content index of either layout.
enum Index {
    /// Versions 1 and 2: content in tar packs.
    Packs(Vec<ContentRecord>),
    /// Version 3: content as files.
    Files(Vec<format::FileRecord>),
}

impl Index {
    /// (SHA-1, size) of every content file.
    fn files(&self) -> Vec<(&str, u64)> {
        match self {
            Index::Packs(v) => v.iter().map(|c| (c.sha1.as_str(), c.size)).collect(),
            Index::Files(v) => v.iter().map(|c| (c.sha1.as_str(), c.size)).collect(),
        }
    }
}

/// The content files of the index that the store does not hold (SHA-1s);
/// counts both kinds in `plan`.
fn plan_content<'i>(
    tx: &ImportTx<'_>,
    content_index: Vec<(&'i str, u64)>,
    plan: &mut Plan,
) -> Result<BTreeSet<&'i str>> {
    let mut needed = BTreeSet::new();
    for (sha1_hex, size) in content_index {
        let sha1 = parse_hex::<20>(sha1_hex, "content sha1")?;
        if tx.holds_content(&sha1)? {
            plan.content_already_present += 1;
        } else {
            plan.content_files += 1;
            plan.content_bytes += size;
            needed.insert(sha1_hex);
        }
    }
    Ok(needed)
}

/// Rule: the store's file system has room for the content the bundle
/// brings (checked before any is written).
fn rule_room_for_content(root: &Path, plan: &Plan) -> Result<()> {
    if plan.disk_needed > plan.disk_free {
        return Err(Error::DiskFull {
            path: root.to_path_buf(),
            what: "the bundle's content".into(),
            need: plan.disk_needed,
            free: plan.disk_free,
        });
    }
    Ok(())
}

/// Step 4: volume by volume, each later header checked, each content pack
/// streamed once; returns the staged (verified) content files.
#[allow(clippy::too_many_arguments)]
fn read_volumes(
    tx: &ImportTx<'_>,
    opts: &ImportOptions<'_>,
    view: &TrustView,
    checked: &Checked,
    content_index: &[ContentRecord],
    needed: &BTreeSet<&str>,
    progress: &dyn Progress,
    checks: &mut Vec<String>,
) -> Result<Vec<Staged>> {
    let h1 = &checked.h1;
    let m = &h1.manifest;
    let mut staged: Vec<Staged> = Vec::new();
    let mut stream = ContentStream::new(content_index, needed);
    progress.phase("content", Some(m.counts.content_bytes), "bytes");
    for v in 1..=m.volumes {
        let h = if v == 1 {
            h1.clone()
        } else {
            let dir = volume_dir(&opts.layout, v, Some(&checked.first_dir), opts.prompt)?;
            let h = read_volume_header(&dir, view, false)?;
            check_volume_matches(&h, h1, v)?;
            format::check_volume_packs(&h, v)?;
            checks.push(format!(
                "volume {v}: signature valid; same bundle; files listed exactly"
            ));
            h
        };
        // Non-content files of this volume (trust statements) were read
        // above; here: the content pack, if any.
        for p in m
            .packs
            .iter()
            .filter(|p| p.volume == v && p.name.starts_with("content-"))
        {
            let path = h.dir.join(&p.name);
            stream.read_pack(tx, &path, p, &mut staged, progress)?;
        }
    }
    stream.finish()?;
    progress.finish();
    checks.push(format!(
        "{} content files verified against the update metadata",
        staged.len()
    ));
    Ok(staged)
}

/// Step 4 (version 3): volume by volume, each later header checked and
/// its SHA256SUMS against the content index; each content file read once
/// and hashed once (SHA-256, which is both the digest SHA256SUMS signs and
/// the update metadata's; SHA-1 too where the metadata gives no SHA-256),
/// whole files in parallel, staged when the store needs them; split files'
/// parts in order, each checked, the file reassembled and checked whole.
#[allow(clippy::too_many_arguments)]
fn read_volumes_files(
    tx: &ImportTx<'_>,
    opts: &ImportOptions<'_>,
    view: &TrustView,
    checked: &Checked,
    index: &[format::FileRecord],
    needed: &BTreeSet<&str>,
    progress: &dyn Progress,
    checks: &mut Vec<String>,
) -> Result<Vec<Staged>> {
    let h1 = &checked.h1;
    let m = &h1.manifest;
    // What each needed file must be, from the update metadata, before any
    // byte is read.
    let mut expected: HashMap<usize, Expected> = HashMap::new();
    for (i, rec) in index.iter().enumerate() {
        if needed.contains(rec.sha1.as_str()) {
            expected.insert(
                i,
                metadata_expectation(tx, &rec.sha1, &rec.sha256, rec.size, &rec.path)?,
            );
        }
    }
    let cs = tx.content();
    let mut staged: Vec<Staged> = Vec::new();
    let mut open: Option<OpenSplit> = None;
    let mut buf = vec![0u8; crate::airgap::files::COPY_BUF];
    progress.phase("content", Some(m.counts.content_bytes), "bytes");
    for v in 1..=m.volumes {
        let h = if v == 1 {
            h1.clone()
        } else {
            let dir = volume_dir(&opts.layout, v, Some(&checked.first_dir), opts.prompt)?;
            let h = read_volume_header(&dir, view, false)?;
            check_volume_matches(&h, h1, v)?;
            format::check_volume_packs(&h, v)?;
            checks.push(format!(
                "volume {v}: signature valid; same bundle; files listed exactly"
            ));
            h
        };
        format::check_volume_files(&h, v, index)?;
        // Whole files, in parallel.
        let jobs: Vec<usize> = index
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parts.len() == 1 && c.parts[0].volume == v)
            .map(|(i, _)| i)
            .collect();
        let done = crate::airgap::files::run_parallel(
            &jobs,
            crate::airgap::files::copy_workers(),
            |&i| stage_whole(cs, &h.dir, &index[i], expected.get(&i), progress),
        )?;
        staged.extend(done.into_iter().flatten());
        // Parts of split files, in index order (at most one file is open).
        for (i, c) in index.iter().enumerate().filter(|(_, c)| c.parts.len() > 1) {
            for (j, p) in c.parts.iter().enumerate().filter(|(_, p)| p.volume == v) {
                if j == 0 {
                    if open.is_some() {
                        return Err(fail(
                            "malformed-content-index",
                            format!("{}: starts before the previous split file ended", c.path),
                        ));
                    }
                    let exp = expected.get(&i);
                    open = Some(OpenSplit {
                        rec: i,
                        stage: exp.map(|_| cs.begin_direct_stage(&c.path)).transpose()?,
                        whole: crate::airgap::files::Hashers::new(
                            exp.is_some_and(|e| e.sha256.is_none()),
                        ),
                    });
                }
                let Some(sp) = open.as_mut().filter(|o| o.rec == i) else {
                    return Err(fail(
                        "malformed-content-index",
                        format!("{}: part {} without its first part", c.path, p.file),
                    ));
                };
                read_part(&h.dir, p, sp, &mut buf, progress)?;
                if j + 1 == c.parts.len()
                    && let Some(sp) = open.take()
                    && let (Some(stage), Some(exp)) = (sp.stage, expected.get(&i))
                {
                    let d = sp.whole.finish();
                    staged.push(
                        stage
                            .finish(exp, &d.sha256, d.sha1.as_ref(), d.size)
                            .map_err(|e| content_error(e, &c.path))?,
                    );
                }
            }
        }
    }
    if open.is_some() {
        return Err(fail("missing-entry", "a split content file did not end"));
    }
    progress.finish();
    checks.push(format!(
        "every content file's SHA-256 matches; {} content files verified against the update metadata",
        staged.len()
    ));
    Ok(staged)
}

/// A split content file being reassembled.
struct OpenSplit {
    rec: usize,
    /// Where it is staged, when the store needs it.
    stage: Option<crate::store::content::DirectStage>,
    /// The whole file's digests (computed only when staged).
    whole: crate::airgap::files::Hashers,
}

/// Rule: a content file (or part) of a version-3 bundle has the SHA-256
/// its volume's signed SHA256SUMS lists (`[hash-mismatch]`, reported first)
/// and the size the content index gives (`[size-mismatch]`). At most one
/// byte more than that size is read.
fn check_read(path: &Path, part: &format::FilePart, sha256: &[u8; 32], size: u64) -> Result<()> {
    let got = hex::encode(sha256);
    if got != part.sha256 {
        return Err(fail(
            "hash-mismatch",
            format!(
                "{}: SHA-256 {got}, SHA256SUMS says {}",
                path.display(),
                part.sha256
            ),
        ));
    }
    if size != part.size {
        return Err(fail(
            "size-mismatch",
            format!(
                "{}: {size} bytes, content index says {}",
                path.display(),
                part.size
            ),
        ));
    }
    Ok(())
}

/// One whole content file: hashed once while staged (when `expected`: the
/// store needs it) or only hashed.
fn stage_whole(
    cs: &crate::store::content::ContentStore,
    dir: &Path,
    rec: &format::FileRecord,
    expected: Option<&Expected>,
    progress: &dyn Progress,
) -> Result<Option<Staged>> {
    use crate::airgap::files::{COPY_BUF, Hashers, copy_hashed};
    let part = &rec.parts[0];
    let path = dir.join(&part.file);
    let mut f = File::open(&path).at(&path)?;
    let mut h = Hashers::new(expected.is_some_and(|e| e.sha256.is_none()));
    let mut stage = expected
        .map(|_| cs.begin_direct_stage(&rec.path))
        .transpose()?;
    let mut buf = vec![0u8; COPY_BUF];
    copy_hashed(
        &mut f,
        stage.as_mut().map(|s| s as &mut dyn io::Write),
        part.size.saturating_add(1),
        &mut [&mut h],
        &mut buf,
        &|n| progress.advance(n),
    )
    .at(&path)?;
    let d = h.finish();
    check_read(&path, part, &d.sha256, d.size)?;
    match (stage, expected) {
        (Some(stage), Some(exp)) => Ok(Some(
            stage
                .finish(exp, &d.sha256, d.sha1.as_ref(), d.size)
                .map_err(|e| content_error(e, &rec.path))?,
        )),
        _ => Ok(None),
    }
}

/// One part of a split content file: checked on its own, and appended to
/// the file being reassembled.
fn read_part(
    dir: &Path,
    part: &format::FilePart,
    sp: &mut OpenSplit,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<()> {
    use crate::airgap::files::{Hashers, copy_hashed};
    let path = dir.join(&part.file);
    let mut f = File::open(&path).at(&path)?;
    let mut h = Hashers::new(false);
    let staging = sp.stage.is_some();
    let out = sp.stage.as_mut().map(|s| s as &mut dyn io::Write);
    let hashers: &mut [&mut Hashers] = if staging {
        &mut [&mut h, &mut sp.whole]
    } else {
        &mut [&mut h]
    };
    copy_hashed(
        &mut f,
        out,
        part.size.saturating_add(1),
        hashers,
        buf,
        &|n| progress.advance(n),
    )
    .at(&path)?;
    let d = h.finish();
    check_read(&path, part, &d.sha256, d.size)
}

/// Step 5: the staged content renamed into place and recorded, the import
/// ledger's row, COMMIT. Returns this server's anchor after the import.
fn apply_and_commit(
    mut tx: ImportTx<'_>,
    staged: Vec<Staged>,
    h1: &VolumeHeader,
    server_id: uuid::Uuid,
) -> Result<String> {
    crate::failpoint::hit("import-before-content-rename");
    // Files placed by this import are removed again if it fails from here
    // on (a crash leaves them as verified orphans that a re-run adopts).
    for s in staged {
        tx.place_content(s)?;
    }
    let local_anchor = journal::Anchor {
        server_id,
        seq: tx.head()?,
    }
    .to_string();
    let m = &h1.manifest;
    tx.record_import(&ImportRecord {
        source_server_id: &m.source.server_id,
        seq: m.seq,
        bundle_id: &m.bundle_id,
        manifest_sha256: &h1.manifest_sha256,
        full: m.kind == BundleKind::Full,
        from_anchor: m.from_anchor.as_deref(),
        to_anchor: &m.to_anchor,
        local_anchor: &local_anchor,
        signer: &h1.signer.to_string(),
        bytes: m.payload_bytes(),
        expires: &m.expires,
    })?;
    crate::failpoint::hit("import-before-commit");
    tx.commit()?;
    Ok(local_anchor)
}

/// The folder of volume `v`: from the layout (by position), or the same
/// mount point again after asking for the next medium.
fn volume_dir(
    layout: &Layout,
    v: u32,
    first: Option<&Path>,
    prompt: Option<MediaPrompt<'_>>,
) -> Result<PathBuf> {
    if let Some(d) = layout.volumes.get(v as usize - 1) {
        return Ok(d.clone());
    }
    // Fewer folders than volumes: the last one is a mount point that is
    // swapped between media.
    let mount = layout
        .volumes
        .last()
        .cloned()
        .or_else(|| first.map(Path::to_path_buf));
    let Some(mount) = mount else {
        return Err(fail("missing-volume", format!("volume {v} was not given")));
    };
    match prompt {
        Some(ask) if ask(v, &mount) => Ok(mount),
        _ => Err(fail(
            "missing-volume",
            format!("volume {v} was not given (pass --volumes DIR for each volume)"),
        )),
    }
}

/// Rule: a dry run plans for the whole bundle, so every volume must be
/// given (in `--volumes` order, or as `vol-NNN/` of the bundle folder); the
/// media are not asked for. Volumes not given are named and refused (a
/// runtime error, exit 1), unless `plan_from_first_volume`: then they are
/// returned, for the plan to say so.
fn dry_run_missing_volumes(opts: &ImportOptions<'_>, total: u32) -> Result<Vec<u32>> {
    let missing: Vec<u32> = (2..=total)
        .filter(|v| {
            !opts
                .layout
                .volumes
                .get(*v as usize - 1)
                .is_some_and(|d| d.is_dir())
        })
        .collect();
    if missing.is_empty() || opts.plan_from_first_volume {
        return Ok(missing);
    }
    Err(Error::VolumesNotGiven {
        missing: volume_list(&missing),
        total,
    })
}

/// A dry run checks the header of every later volume it was given as the
/// import does (signature, same bundle, right volume, files listed
/// exactly), without reading its content pack.
fn check_later_headers(
    opts: &ImportOptions<'_>,
    view: &TrustView,
    h1: &VolumeHeader,
    missing: &[u32],
    files: Option<&[format::FileRecord]>,
    checks: &mut Vec<String>,
) -> Result<()> {
    for v in 2..=h1.manifest.volumes {
        if missing.contains(&v) {
            continue;
        }
        let Some(dir) = opts.layout.volumes.get(v as usize - 1) else {
            continue;
        };
        let h = read_volume_header(dir, view, false)?;
        check_volume_matches(&h, h1, v)?;
        format::check_volume_packs(&h, v)?;
        if let Some(index) = files {
            format::check_volume_files(&h, v, index)?;
        }
        checks.push(format!(
            "volume {v}: signature valid; same bundle; files listed exactly"
        ));
    }
    Ok(())
}

/// `volume 2`, `volumes 2 and 3`, `volumes 2, 3 and 5`.
pub fn volume_list(v: &[u32]) -> String {
    let nums: Vec<String> = v.iter().map(u32::to_string).collect();
    match nums.as_slice() {
        [] => "no volume".into(),
        [one] => format!("volume {one}"),
        [init @ .., last] => format!("volumes {} and {last}", init.join(", ")),
    }
}

fn pack_entry<'m>(m: &'m Manifest, name: &str) -> Result<&'m format::PackEntry> {
    m.packs
        .iter()
        .find(|p| p.name == name && p.volume == 1)
        .ok_or_else(|| {
            fail(
                "missing-file",
                format!("manifest lists no {name} in volume 1"),
            )
        })
}

fn check_bytes_digest(dir: &Path, name: &str, bytes: &[u8], want: &str) -> Result<()> {
    let got = format::sha256_hex(bytes);
    if got != want {
        return Err(fail(
            "hash-mismatch",
            format!(
                "{}/{name}: SHA-256 {got}, manifest says {want}",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Rule: a later volume carries the same manifest as volume 1 and is the
/// volume asked for.
fn check_volume_matches(h: &VolumeHeader, h1: &VolumeHeader, v: u32) -> Result<()> {
    if h.manifest_sha256 != h1.manifest_sha256 {
        return Err(fail(
            "mixed-volumes",
            format!(
                "{} belongs to bundle {} seq {}, not to bundle {}",
                h.dir.display(),
                h.manifest.bundle_id,
                h.manifest.seq,
                h1.manifest.bundle_id
            ),
        ));
    }
    if h.volume != Some(v) {
        return Err(fail(
            "wrong-volume",
            format!(
                "{} holds volume {:?}, expected volume {v}",
                h.dir.display(),
                h.volume
            ),
        ));
    }
    Ok(())
}

/// Rule: the content index is consistent: safe WSUS paths matching the
/// SHA-1, parts that add up, packs that exist, entries not repeated.
fn check_content_index(m: &Manifest, index: &[ContentRecord]) -> Result<()> {
    let packs: BTreeSet<&str> = m.packs.iter().map(|p| p.name.as_str()).collect();
    let mut seen_entries: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut seen_sha1: BTreeSet<&str> = BTreeSet::new();
    for c in index {
        let bad = |why: String| fail("malformed-content-index", format!("{}: {why}", c.path));
        let sha1 = parse_hex::<20>(&c.sha1, "content sha1")?;
        parse_hex::<32>(&c.sha256, "content sha256")?;
        format::check_safe_path(&c.path)?;
        let ext = c.path.rsplit_once('/').map(|(_, n)| n).unwrap_or("");
        let expected = crate::store::content::wsus_rel_path(&sha1, ext);
        if expected != c.path {
            return Err(bad(format!("path should be {expected}")));
        }
        if !seen_sha1.insert(c.sha1.as_str()) {
            return Err(bad("listed twice".into()));
        }
        if c.parts.is_empty() || c.parts.iter().map(|p| p.size).sum::<u64>() != c.size {
            return Err(bad("parts do not add up to the size".into()));
        }
        for p in &c.parts {
            format::check_safe_path(&p.entry)?;
            if !packs.contains(p.pack.as_str())
                || !seen_entries.insert((p.pack.as_str(), p.entry.as_str()))
            {
                return Err(bad(format!(
                    "part {} in {} is unknown or repeated",
                    p.entry, p.pack
                )));
            }
        }
    }
    Ok(())
}

fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let v = hex::decode(s).map_err(|_| {
        fail(
            "malformed-content-index",
            format!("{what} {s:?} is not hex"),
        )
    })?;
    v.try_into().map_err(|_| {
        fail(
            "malformed-content-index",
            format!("{what} {s:?} has the wrong length"),
        )
    })
}

/// Reads the metadata pack: state.json first, then revisions, each re-parsed
/// and inserted into the transaction.
fn apply_metadata_pack(
    tx: &ImportTx<'_>,
    dir: &Path,
    pack: &format::PackEntry,
    plan: &mut Plan,
    progress: &dyn Progress,
    expected_revisions: u64,
) -> Result<State> {
    let path = &dir.join(&pack.name);
    let compressed = pack.size;
    let want_sha256 = pack.sha256.as_str();
    // Read once: hashed while it is decompressed (a medium cannot serve
    // different bytes to a check and to the use). What is inserted before
    // the digest is known stays inside the uncommitted transaction.
    let file = File::open(path).at(path)?;
    let mut hashing = HashingReader::new(io::BufReader::with_capacity(1 << 20, file));
    progress.phase("metadata", Some(expected_revisions), "revisions");
    let result = read_metadata_pack(&mut hashing, compressed, path, &mut |r| {
        let meta = &r.meta;
        let before = tx.current_revision(&meta.id.to_string())?;
        match tx.add_revision(&r.name, &r.xml, &r.sha256, meta)? {
            Added::New(_) => {
                plan.revisions_added += 1;
                if before.is_none() {
                    plan.updates_added += 1;
                }
                for s in &meta.superseded {
                    if tx.update_exists(&s.to_string())? {
                        plan.updates_superseded += 1;
                    }
                }
            }
            Added::AlreadyPresent(_) => plan.revisions_already_present += 1,
        }
        progress.advance(1);
        Ok(())
    });
    progress.finish();
    // Rule: the pack's bytes hash to the manifest's digest (checked before
    // any other finding about its content is reported).
    let drained = hashing.drain();
    let (sha, n) = hashing.finish();
    if sha != want_sha256 || n != compressed {
        return Err(fail(
            "hash-mismatch",
            format!(
                "{}: SHA-256 {sha} ({n} bytes), manifest says {want_sha256} ({compressed} bytes)",
                path.display()
            ),
        ));
    }
    drained.at(path)?;
    let (state, revisions) = result?;
    if revisions != expected_revisions {
        return Err(fail(
            "count-mismatch",
            format!(
                "{}: {revisions} revisions, manifest says {expected_revisions}",
                path.display()
            ),
        ));
    }
    Ok(state)
}

/// One revision of a metadata pack, as the callback of
/// `read_metadata_pack` receives it.
pub struct PackRevision {
    /// The tar entry's name.
    pub name: String,
    /// The verbatim XML.
    pub xml: Vec<u8>,
    /// SHA-256 of `xml`.
    pub sha256: [u8; 32],
    pub meta: metadata::UpdateMetadata,
}

/// The revision callback of `read_metadata_pack`.
pub type RevisionSink<'a> = dyn FnMut(&PackRevision) -> Result<()> + 'a;

/// Revisions read ahead of the callback (a few hundred KiB of XML).
const READ_AHEAD: usize = 64;

/// Streams a metadata pack (zstd-compressed tar) with every rule applied:
/// regular files with safe, unique names; `state.json` first and bounded;
/// then `revisions/<id>-r<rev>.xml`, each bounded, parsed, and named after
/// its identity; decompressed size bounded by ratio and absolute limit.
/// Returns the state and the number of revisions passed to `sink`.
///
/// Reading, decompressing, parsing and hashing run on a thread of their
/// own, at most `READ_AHEAD` revisions ahead of `sink` (an import's
/// SQLite transaction), so two cores share the work. `sink` receives the
/// revisions in pack order, and the error reported is the first in that
/// order: a reading error stops the revisions after it, a `sink` error
/// stops the reading.
pub fn read_metadata_pack<R: Read + Send>(
    reader: R,
    compressed: u64,
    path: &Path,
    sink: &mut RevisionSink<'_>,
) -> Result<(State, u64)> {
    let dec =
        zstd::stream::read::Decoder::new(io::BufReader::with_capacity(1 << 20, reader)).at(path)?;
    let limit = (compressed.saturating_mul(MAX_METADATA_RATIO)).clamp(64 << 20, MAX_METADATA_BYTES);
    let hit = Arc::new(AtomicBool::new(false));
    let limited = LimitedReader {
        inner: dec,
        left: limit,
        path: path.to_path_buf(),
        hit: hit.clone(),
    };
    read_ahead(tar::Archive::new(limited), path, sink).map_err(|e| {
        if hit.load(Ordering::Relaxed) {
            fail("decompression-limit", format!("{}: decompresses to more than {limit} bytes (ratio {MAX_METADATA_RATIO}, cap {MAX_METADATA_BYTES})", path.display()))
        } else {
            e
        }
    })
}

/// `read_entries` on a thread of its own, feeding `sink` on this one
/// through a bounded queue (`read_metadata_pack`).
fn read_ahead<R: Read + Send>(
    archive: tar::Archive<R>,
    path: &Path,
    sink: &mut RevisionSink<'_>,
) -> Result<(State, u64)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<PackRevision>(READ_AHEAD);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            read_entries(archive, path, &mut |r| {
                // Fails only when the sink stopped (its error is reported).
                tx.send(r)
                    .map_err(|_| Error::invalid(path.display().to_string(), "reading stopped"))
            })
        });
        let mut sunk = Ok(());
        for r in rx.iter() {
            if let Err(e) = sink(&r) {
                sunk = Err(e);
                break;
            }
        }
        drop(rx);
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        sunk?;
        read
    })
}

fn read_entries<R: Read>(
    mut archive: tar::Archive<R>,
    path: &Path,
    sink: &mut dyn FnMut(PackRevision) -> Result<()>,
) -> Result<(State, u64)> {
    let mut state: Option<State> = None;
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut revisions = 0u64;
    for entry in archive.entries().at(path)? {
        let mut entry = entry.at(path)?;
        let name = entry_name(&entry, path)?;
        if !names.insert(name.clone()) {
            return Err(fail(
                "duplicate-entry",
                format!("{}: entry {name} appears twice", path.display()),
            ));
        }
        let size = entry.header().size().at(path)?;
        if state.is_none() {
            if name != STATE_ENTRY {
                return Err(fail(
                    "unexpected-entry",
                    format!(
                        "{}: first entry is {name}, expected {STATE_ENTRY}",
                        path.display()
                    ),
                ));
            }
            if size > MAX_STATE_BYTES {
                return Err(fail(
                    "oversized-file",
                    format!("{}: {STATE_ENTRY} is {size} bytes", path.display()),
                ));
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf).at(path)?;
            state = Some(
                serde_json::from_slice(&buf)
                    .map_err(|e| fail("malformed-state", format!("{STATE_ENTRY}: {e}")))?,
            );
            continue;
        }
        let Some(stem) = name
            .strip_prefix(&format!("{REVISIONS_DIR}/"))
            .and_then(|n| n.strip_suffix(".xml"))
        else {
            return Err(fail(
                "unexpected-entry",
                format!("{}: unexpected entry {name}", path.display()),
            ));
        };
        if size > MAX_DOCUMENT_BYTES as u64 {
            return Err(fail(
                "oversized-file",
                format!("{}: {name} is {size} bytes", path.display()),
            ));
        }
        let mut xml = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut xml).at(path)?;
        let meta = metadata::parse(&xml).map_err(|error| Error::Metadata {
            name: format!("{}: {name}", path.display()),
            error,
        })?;
        check_entry_identity(stem, &meta, &name)?;
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &xml);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(sha256.as_ref());
        sink(PackRevision {
            name,
            xml,
            sha256: digest,
            meta,
        })?;
        revisions += 1;
    }
    let state = state.ok_or_else(|| {
        fail(
            "missing-file",
            format!("{}: no {STATE_ENTRY}", path.display()),
        )
    })?;
    Ok((state, revisions))
}

/// For the fuzz target: reads a metadata pack from bytes, discarding what
/// it yields. Returns the number of revisions.
#[doc(hidden)]
pub fn fuzz_read_metadata_pack(data: &[u8]) -> Result<u64> {
    read_metadata_pack(data, data.len() as u64, Path::new("fuzz"), &mut |_| Ok(())).map(|(_, n)| n)
}

/// Rule: a revision entry is named `<update id>-r<revision>.xml` after the
/// identity inside it (lower-case id).
fn check_entry_identity(stem: &str, meta: &metadata::UpdateMetadata, name: &str) -> Result<()> {
    let expected = format!("{}-r{}", meta.id, meta.revision);
    if stem != expected {
        return Err(fail(
            "entry-identity-mismatch",
            format!("{name} holds update {} revision {}", meta.id, meta.revision),
        ));
    }
    Ok(())
}

/// Rule: archive entries are regular files with safe relative names.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>, pack: &Path) -> Result<String> {
    let kind = entry.header().entry_type();
    let raw = entry.path_bytes();
    let name = String::from_utf8_lossy(&raw).into_owned();
    if kind != tar::EntryType::Regular {
        return Err(fail(
            "unexpected-entry-type",
            format!(
                "{}: entry {name:?} is {kind:?}, not a regular file",
                pack.display()
            ),
        ));
    }
    format::check_safe_path(&name).map_err(|_| {
        fail(
            "unsafe-path",
            format!("{}: entry {name:?} has an unsafe name", pack.display()),
        )
    })?;
    Ok(name)
}

/// A reader that fails after `left` bytes (decompression bombs); `hit`
/// tells afterwards that the limit, not the data, ended the read.
struct LimitedReader<R> {
    inner: R,
    left: u64,
    path: PathBuf,
    hit: Arc<AtomicBool>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.hit.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "{}: decompressed data exceeds the limit (decompression bomb?)",
                self.path.display()
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Streams content packs in order, staging the files the store needs.
struct ContentStream<'a> {
    /// (pack, entry) -> (index into content records, part number).
    parts: HashMap<(String, String), (usize, usize)>,
    index: &'a [ContentRecord],
    needed: &'a BTreeSet<&'a str>,
    /// Next expected (record, part) in stream order.
    order: Vec<(usize, usize)>,
    pos: usize,
    current: Option<(usize, Option<StageWriter>)>,
}

impl<'a> ContentStream<'a> {
    fn new(index: &'a [ContentRecord], needed: &'a BTreeSet<&'a str>) -> Self {
        let mut parts = HashMap::new();
        let mut order = Vec::new();
        for (i, c) in index.iter().enumerate() {
            for (j, p) in c.parts.iter().enumerate() {
                parts.insert((p.pack.clone(), p.entry.clone()), (i, j));
                order.push((i, j));
            }
        }
        ContentStream {
            parts,
            index,
            needed,
            order,
            pos: 0,
            current: None,
        }
    }

    fn read_pack(
        &mut self,
        tx: &ImportTx<'_>,
        path: &Path,
        pack: &format::PackEntry,
        staged: &mut Vec<Staged>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let file = File::open(path).at(path)?;
        let mut hashing = HashingReader::new(io::BufReader::with_capacity(1 << 20, file));
        let entries_result: Result<()> = (|| {
            let mut archive = tar::Archive::new(&mut hashing);
            for entry in archive.entries().at(path)? {
                let mut entry = entry.at(path)?;
                let name = entry_name(&entry, path)?;
                let size = entry.header().size().at(path)?;
                // Rule: entries come exactly in the order the index lists them.
                let Some(&(i, j)) = self.parts.get(&(pack.name.clone(), name.clone())) else {
                    return Err(fail(
                        "unexpected-entry",
                        format!(
                            "{}: entry {name} is not in the content index",
                            path.display()
                        ),
                    ));
                };
                if self.order.get(self.pos) != Some(&(i, j)) {
                    return Err(fail(
                        "unexpected-entry",
                        format!("{}: entry {name} is out of order", path.display()),
                    ));
                }
                self.pos += 1;
                let rec = &self.index[i];
                let part = &rec.parts[j];
                if size != part.size {
                    return Err(fail(
                        "size-mismatch",
                        format!(
                            "{}: entry {name} is {size} bytes, index says {}",
                            path.display(),
                            part.size
                        ),
                    ));
                }
                if j == 0 {
                    let writer = if self.needed.contains(rec.sha1.as_str()) {
                        Some(tx.content().begin_stage(&rec.path)?)
                    } else {
                        None
                    };
                    self.current = Some((i, writer));
                }
                match self.current.as_mut() {
                    Some((ci, w)) if *ci == i => match w {
                        Some(w) => {
                            w.copy_from(&mut entry)?;
                        }
                        None => {
                            io::copy(&mut entry, &mut io::sink()).at(path)?;
                        }
                    },
                    _ => {
                        return Err(fail(
                            "unexpected-entry",
                            format!("{}: part {name} without its first part", path.display()),
                        ));
                    }
                }
                progress.advance(size);
                if j + 1 == rec.parts.len()
                    && let Some((_, w)) = self.current.take()
                    && let Some(w) = w
                {
                    let expected = expected_from_metadata(tx, rec)?;
                    staged.push(
                        w.finish(Some(&expected))
                            .map_err(|e| content_error(e, &rec.path))?,
                    );
                }
            }
            Ok(())
        })();
        // The pack's own digest is checked first: a pack damaged on the way
        // is reported as such, whatever its damaged bytes made the reader do.
        let drained = hashing.drain();
        let (sha, n) = hashing.finish();
        if sha != pack.sha256 || n != pack.size {
            return Err(fail(
                "hash-mismatch",
                format!(
                    "{}: SHA-256 {sha} ({n} bytes), manifest says {} ({} bytes)",
                    path.display(),
                    pack.sha256,
                    pack.size
                ),
            ));
        }
        drained.at(path)?;
        entries_result
    }

    /// Rule: every part the index lists arrived.
    fn finish(&self) -> Result<()> {
        if self.pos != self.order.len() {
            return Err(fail(
                "missing-entry",
                format!("{} of {} content parts arrived", self.pos, self.order.len()),
            ));
        }
        Ok(())
    }
}

fn content_error(e: Error, path: &str) -> Error {
    match e {
        Error::DigestMismatch {
            what,
            expected,
            actual,
            ..
        } => fail(
            "content-mismatch",
            format!("content {path}: {what} is {actual}, the update metadata says {expected}"),
        ),
        other => other,
    }
}

/// Rule (defence in depth): a content file is accepted only if update
/// metadata (in this store, including what this bundle adds) lists a file
/// with its SHA-1, and then it must have that metadata's size and SHA-256;
/// the index's own digests must agree with the metadata too.
fn expected_from_metadata(tx: &ImportTx<'_>, rec: &ContentRecord) -> Result<Expected> {
    let e = metadata_expectation(tx, &rec.sha1, &rec.sha256, rec.size, &rec.path)?;
    let index_sha256 = parse_hex::<32>(&rec.sha256, "content sha256")?;
    Ok(Expected {
        sha256: Some(e.sha256.unwrap_or(index_sha256)),
        ..e
    })
}

/// The rule of [`expected_from_metadata`] for one content file of the
/// index: what the update metadata says it must be (its SHA-256 only where
/// the metadata gives one).
fn metadata_expectation(
    tx: &ImportTx<'_>,
    sha1_hex: &str,
    sha256_hex: &str,
    size: u64,
    path: &str,
) -> Result<Expected> {
    let sha1 = parse_hex::<20>(sha1_hex, "content sha1")?;
    let Some(listed) = tx.metadata_file(&sha1)? else {
        return Err(fail(
            "content-not-in-metadata",
            format!("content {path} is not listed by any update's metadata"),
        ));
    };
    let index_sha256 = parse_hex::<32>(sha256_hex, "content sha256")?;
    if listed.sha256.is_some_and(|m| m != index_sha256) || listed.size != size {
        return Err(fail(
            "content-mismatch",
            format!("content {path}: the content index disagrees with the update metadata"),
        ));
    }
    Ok(Expected {
        sha1,
        sha256: listed.sha256,
        size: Some(size),
    })
}

/// The import ledger, per source and seq (`imports list`).
pub fn ledger(store: &Store) -> Result<Vec<AppliedBundle>> {
    store.import_ledger()
}
