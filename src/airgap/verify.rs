//! Bundle verification: who signed it (trust), whether every byte is what
//! was signed, whether it is within its validity period, and where it
//! stands in a store's chain. Used by `verify` (no store needed) and by
//! `import` (which then applies what it verified).
//!
//! Each rule is one function with the rule beside it; failures are
//! `Error::Verification` with a stable rule name (exit code 3).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::airgap::format::{
    self, BundleKind, KeyLookup, Layout, MAX_STATEMENT_BYTES, Manifest, VolumeHeader,
    check_volume_packs, read_small, read_volume_header,
};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::ledgers::ImportLink;
use crate::trust::{KeyId, PublicKey, TrustView};

/// Rule: only signatures by a known, unrevoked key are accepted (the
/// trust view's [`TrustView::require_trusted`]).
impl KeyLookup for TrustView {
    fn trusted_key(&self, id: &KeyId) -> Result<PublicKey> {
        self.require_trusted(id)
    }
}

/// Names the statement file in a failed rule's detail.
fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::Verification { rule, detail } => Error::Verification {
            rule,
            detail: format!("{name}: {detail}"),
        },
        other => other,
    }
}

/// What a verification found, for `verify --json` and import's plan.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub bundle_id: String,
    pub source_server_id: String,
    pub source_name: String,
    pub destination: String,
    pub seq: u64,
    pub kind: BundleKind,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub created: String,
    pub expires: String,
    pub signer: String,
    pub volumes: u32,
    pub manifest_sha256: String,
    pub expired_but_allowed: bool,
    /// The checks that passed, in order.
    pub checks: Vec<String>,
    #[serde(skip)]
    pub manifest: Manifest,
    #[serde(skip)]
    pub volume_dirs: Vec<PathBuf>,
}

/// Reads the trust statements that ride in a volume (`trust/NNNN.json`
/// with `.minisig` beside each, in name order) into `view`. They are signed
/// on their own by keys already trusted, so they are checked before the
/// bundle's signature (which may be by the key they introduce); the signed
/// manifest must then list exactly these (`check_statements_listed`).
pub fn preload_statements(
    dir: &Path,
    view: &mut TrustView,
    checks: &mut Vec<String>,
) -> Result<Vec<(String, Vec<u8>, String)>> {
    let tdir = dir.join(format::TRUST_DIR);
    let mut names: Vec<String> = Vec::new();
    if tdir.is_dir() {
        for e in std::fs::read_dir(&tdir).map_err(|e| Error::io(&tdir, e))? {
            let e = e.map_err(|e| Error::io(&tdir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                names.push(format!("{}/{name}", format::TRUST_DIR));
            }
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        format::check_safe_path(&name)?;
        let body = read_small(&dir.join(&name), MAX_STATEMENT_BYTES, "oversized-file")?;
        let sig_bytes = read_small(
            &dir.join(format!("{name}.minisig")),
            format::MAX_SIG_BYTES,
            "oversized-file",
        )?;
        let sig_text = String::from_utf8(sig_bytes).map_err(|_| {
            Error::verification(
                "malformed-signature",
                format!("{name}.minisig is not UTF-8"),
            )
        })?;
        // Applied to the view only: nothing is written to any store.
        view.apply_statement(&body, &sig_text)
            .map_err(|e| rename(e, &name))?;
        checks.push(format!(
            "trust statement {name}: signed by a trusted key, applied"
        ));
        out.push((name, body, sig_text));
    }
    Ok(out)
}

/// Rule: the trust statement files are the ones the signed SHA256SUMS of
/// volume 1 lists, byte for byte (a statement signed by a trusted key but
/// swapped in on the media — say, an old one — is refused).
pub fn check_statements_signed(
    h: &VolumeHeader,
    found: &[(String, Vec<u8>, String)],
) -> Result<()> {
    for (name, body, sig) in found {
        for (file, bytes) in [
            (name.clone(), body.as_slice()),
            (format!("{name}.minisig"), sig.as_bytes()),
        ] {
            let got = format::sha256_hex(bytes);
            match h.sums.get(&file) {
                Some(want) if *want == got => {}
                Some(want) => {
                    return Err(Error::verification(
                        "hash-mismatch",
                        format!(
                            "{}/{file}: SHA-256 {got}, SHA256SUMS says {want}",
                            h.dir.display()
                        ),
                    ));
                }
                None => {
                    return Err(Error::verification(
                        "extra-file",
                        format!("{}/{file} is not listed in SHA256SUMS", h.dir.display()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Rule: the signed manifest lists exactly the trust statements found.
pub fn check_statements_listed(m: &Manifest, found: &[(String, Vec<u8>, String)]) -> Result<()> {
    let names: Vec<&str> = found.iter().map(|(n, _, _)| n.as_str()).collect();
    if names
        != m.trust_statements
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    {
        return Err(Error::verification(
            "trust-statements-mismatch",
            format!(
                "volume holds trust statements {names:?}, the manifest lists {:?}",
                m.trust_statements
            ),
        ));
    }
    Ok(())
}

/// Verifies volume headers (signature, sums, manifest, file lists) of all
/// volumes and their consistency. Packs are not hashed here.
pub fn verify_headers(
    layout: &Layout,
    view: &mut TrustView,
    checks: &mut Vec<String>,
) -> Result<Vec<VolumeHeader>> {
    let first = layout
        .volumes
        .first()
        .ok_or_else(|| Error::verification("missing-volume", "no volume given"))?;
    // Trust statements ride in volume 1 (checked against the manifest once
    // its signature is verified).
    let statements = preload_statements(first, view, checks)?;
    let mut headers: Vec<VolumeHeader> = Vec::new();
    if let Some(top) = layout.top_with_files() {
        let h = read_volume_header(top, view, true)?;
        checks.push(format!(
            "{}: signature by {} valid; SHA256SUMS lists exactly the files present",
            top.display(),
            h.signer
        ));
        headers.push(h);
    }
    for (i, dir) in layout.volumes.iter().enumerate() {
        let h = read_volume_header(dir, view, false)?;
        let v = h.volume.unwrap_or(0);
        check_volume_position(dir, v, i as u32 + 1)?;
        check_volume_packs(&h, v)?;
        checks.push(format!(
            "{} (volume {v}/{}): signature by {} valid; SHA256SUMS lists exactly the files present",
            dir.display(),
            h.manifest.volumes,
            h.signer
        ));
        headers.push(h);
    }
    check_same_bundle(&headers)?;
    check_all_volumes_present(&headers)?;
    if let Some(h) = headers.iter().find(|h| h.volume == Some(1)) {
        check_statements_listed(&h.manifest, &statements)?;
    }
    checks.push("all volumes belong to the same bundle and none is missing".into());
    Ok(headers)
}

/// Rule: volumes are given (or named `vol-NNN`) in their order: the i-th
/// folder holds volume i.
fn check_volume_position(dir: &Path, holds: u32, position: u32) -> Result<()> {
    if holds != position {
        return Err(Error::verification(
            "wrong-volume",
            format!(
                "{} holds volume {holds} but is in position {position}",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Rule: every volume (and the top level) carries the same manifest: no
/// volume of another bundle, even of the same exporter, is mixed in.
fn check_same_bundle(headers: &[VolumeHeader]) -> Result<()> {
    if let Some(first) = headers.first() {
        for h in headers {
            if h.manifest_sha256 != first.manifest_sha256 {
                return Err(Error::verification(
                    "mixed-volumes",
                    format!(
                        "{} belongs to bundle {} seq {}, not to bundle {} seq {}",
                        h.dir.display(),
                        h.manifest.bundle_id,
                        h.manifest.seq,
                        first.manifest.bundle_id,
                        first.manifest.seq
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Rule: each volume 1..=n is present exactly once.
fn check_all_volumes_present(headers: &[VolumeHeader]) -> Result<()> {
    let Some(first) = headers.first() else {
        return Err(Error::verification("missing-volume", "no volume"));
    };
    let n = first.manifest.volumes;
    let mut seen = vec![false; n as usize + 1];
    for h in headers {
        if let Some(v) = h.volume {
            let slot = seen
                .get_mut(v as usize)
                .ok_or_else(|| Error::verification("missing-volume", "volume out of range"))?;
            if *slot {
                return Err(Error::verification(
                    "duplicate-volume",
                    format!("volume {v} given twice ({})", h.dir.display()),
                ));
            }
            *slot = true;
        }
    }
    for (v, present) in seen.iter().enumerate().skip(1) {
        if !present {
            return Err(Error::verification(
                "missing-volume",
                format!(
                    "volume {v} of {n} of bundle {} is missing",
                    first.manifest.bundle_id
                ),
            ));
        }
    }
    Ok(())
}

/// Full verification of a bundle: headers, validity period, every file's
/// digest. Needs no store.
pub fn verify_bundle(
    layout: &Layout,
    view: &mut TrustView,
    allow_expired: bool,
    progress: &dyn Progress,
) -> Result<Verified> {
    let mut checks = Vec::new();
    let headers = verify_headers(layout, view, &mut checks)?;
    let h0 = headers
        .first()
        .ok_or_else(|| Error::verification("missing-volume", "no volume"))?;
    let m = h0.manifest.clone();
    let expired =
        format::check_validity_period(&m, time::OffsetDateTime::now_utc(), allow_expired)?;
    checks.push(if expired {
        format!(
            "EXPIRED on {} — accepted only because --allow-expired was given",
            m.expires
        )
    } else {
        format!(
            "within its validity period (created {}, expires {})",
            m.created, m.expires
        )
    });
    let volumes: Vec<&VolumeHeader> = headers.iter().filter(|h| h.volume.is_some()).collect();
    // Version 3: the content index, and each volume's content files
    // against it.
    let index = match volumes.iter().find(|h| h.volume == Some(1)) {
        Some(h1) if format::has_content_files(&m) => {
            let index = format::read_file_index(&h1.dir, &m)?;
            for h in &volumes {
                format::check_volume_files(h, h.volume.unwrap_or(0), &index)?;
            }
            checks.push(format!(
                "content index of {} content file(s); every volume lists exactly the content files it places there",
                index.len()
            ));
            index
        }
        _ => Vec::new(),
    };
    let total: u64 = volumes
        .iter()
        .flat_map(|h| {
            let v = h.volume;
            m.packs
                .iter()
                .filter(move |p| Some(p.volume) == v)
                .map(|p| p.size)
        })
        .sum::<u64>()
        + index.iter().map(|c| c.size).sum::<u64>();
    progress.phase("verify", Some(total), "bytes");
    format::verify_files(&volumes, &index, &|n| progress.advance(n))?;
    for h in &volumes {
        checks.push(format!(
            "{}: every file's SHA-256 and size match",
            h.dir.display()
        ));
    }
    progress.finish();
    Ok(Verified {
        bundle_id: m.bundle_id.clone(),
        source_server_id: m.source.server_id.clone(),
        source_name: m.source.name.clone(),
        destination: m.destination.clone(),
        seq: m.seq,
        kind: m.kind,
        from_anchor: m.from_anchor.clone(),
        to_anchor: m.to_anchor.clone(),
        created: m.created.clone(),
        expires: m.expires.clone(),
        signer: m.signer.clone(),
        volumes: m.volumes,
        manifest_sha256: h0.manifest_sha256.clone(),
        expired_but_allowed: expired,
        checks,
        manifest: m,
        volume_dirs: headers
            .iter()
            .filter(|h| h.volume.is_some())
            .map(|h| h.dir.clone())
            .collect(),
    })
}

// ------------------------------------------------------------- the chain

/// Where a bundle stands in a store's import chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainStatus {
    /// First bundle from this source (a full one).
    First,
    /// The next link of the chain.
    Next,
    /// A full bundle replacing the chain (`--rebase`).
    Rebase,
    /// Exactly this bundle was imported before: nothing to do.
    AlreadyApplied,
}

impl std::fmt::Display for ChainStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainStatus::First => "the first link from its source",
            ChainStatus::Next => "the next link of the chain",
            ChainStatus::Rebase => "a full bundle replacing the chain",
            ChainStatus::AlreadyApplied => "already applied",
        })
    }
}

/// The ledger a chain is checked against: per source, the links applied.
/// A store's import ledger for data bundles; its site report ledger for
/// report bundles (`store::sites::ReportLedger`).
pub trait ChainLedger {
    /// The manifest digest of the link applied from `source` as `seq`.
    fn applied_manifest(&self, source: &str, seq: u64) -> Result<Option<String>>;
    /// The last link applied from `source`.
    fn last_link(&self, source: &str) -> Result<Option<ImportLink>>;
}

impl ChainLedger for Store {
    fn applied_manifest(&self, source: &str, seq: u64) -> Result<Option<String>> {
        self.imported_manifest(source, seq)
    }
    fn last_link(&self, source: &str) -> Result<Option<ImportLink>> {
        self.last_import(source)
    }
}

/// Applies the chain rules in order against `store`'s import ledger; the
/// first that fails names itself.
pub fn check_chain(
    store: &Store,
    this_server: &str,
    m: &Manifest,
    manifest_sha256: &str,
    rebase: bool,
) -> Result<ChainStatus> {
    check_chain_in(store, this_server, m, manifest_sha256, rebase)
}

/// The chain rules against any [`ChainLedger`]. A link that starts a
/// chain has no from-anchor (a full bundle; a report that starts its
/// chain).
pub fn check_chain_in(
    ledger: &dyn ChainLedger,
    this_server: &str,
    m: &Manifest,
    manifest_sha256: &str,
    rebase: bool,
) -> Result<ChainStatus> {
    rule_not_own_bundle(this_server, m)?;
    let same_seq = ledger.applied_manifest(&m.source.server_id, m.seq)?;
    if rule_already_applied(same_seq.as_deref(), manifest_sha256) {
        return Ok(ChainStatus::AlreadyApplied);
    }
    let last = ledger.last_link(&m.source.server_id)?;
    rule_no_fork(m, same_seq.as_deref(), manifest_sha256)?;
    rule_no_replay(m, last.as_ref())?;
    match last {
        None => {
            rule_first_is_full(m)?;
            Ok(ChainStatus::First)
        }
        Some(l) => {
            if m.from_anchor.is_none() {
                rule_rebase_is_explicit(m, rebase)?;
                return Ok(ChainStatus::Rebase);
            }
            rule_no_gap(m, &l)?;
            rule_links_to_previous(m, &l)?;
            Ok(ChainStatus::Next)
        }
    }
}

/// Rule: a server does not import its own bundles.
fn rule_not_own_bundle(this_server: &str, m: &Manifest) -> Result<()> {
    if m.source.server_id == this_server {
        return Err(Error::verification(
            "own-bundle",
            format!("bundle {} was exported by this server", m.bundle_id),
        ));
    }
    Ok(())
}

/// Rule: importing exactly the same bundle again is a no-op (`applied` is
/// the manifest digest of the bundle applied with this seq from this
/// source, if any).
fn rule_already_applied(applied: Option<&str>, sha: &str) -> bool {
    applied == Some(sha)
}

/// Rule (fork): a bundle with the sequence number of an applied bundle but
/// a different manifest is a fork of the chain.
fn rule_no_fork(m: &Manifest, applied: Option<&str>, sha: &str) -> Result<()> {
    if let Some(other) = applied
        && other != sha
    {
        return Err(Error::verification(
            "fork",
            format!(
                "bundle {} claims seq {} from {}, but a different bundle with that seq was applied (manifest {other})",
                m.bundle_id, m.seq, m.source.name
            ),
        ));
    }
    Ok(())
}

/// Rule (replay): a bundle at or below the last applied sequence from its
/// source is refused.
fn rule_no_replay(m: &Manifest, last: Option<&ImportLink>) -> Result<()> {
    if let Some(l) = last
        && m.seq <= l.seq
    {
        return Err(Error::verification(
            "replay",
            format!(
                "bundle {} has seq {}, but seq {} from {} is already applied",
                m.bundle_id, m.seq, l.seq, m.source.name
            ),
        ));
    }
    Ok(())
}

/// Rule: the first bundle from a source starts a chain (a full one, or a
/// report with no from-anchor).
fn rule_first_is_full(m: &Manifest) -> Result<()> {
    if m.from_anchor.is_some() {
        return Err(Error::verification(
            "gap",
            format!(
                "bundle {} continues from anchor {} but nothing from {} has been imported yet; import its full bundle first",
                m.bundle_id,
                m.from_anchor.as_deref().unwrap_or("-"),
                m.source.name
            ),
        ));
    }
    Ok(())
}

/// Rule: a full bundle onto a store that already follows a chain from the
/// same source needs an explicit `--rebase`.
fn rule_rebase_is_explicit(m: &Manifest, rebase: bool) -> Result<()> {
    if !rebase {
        return Err(Error::verification(
            "rebase-required",
            format!(
                "bundle {} is a full bundle but this store already follows a chain from {}; pass --rebase to replace it",
                m.bundle_id, m.source.name
            ),
        ));
    }
    Ok(())
}

/// True when the bundle names the last applied manifest among the links
/// equivalent to its previous one (`prev_equivalent_sha256`, written by
/// `export --since`: other links that ended at its from-anchor).
fn follows_equivalent(m: &Manifest, l: &ImportLink) -> bool {
    m.prev_equivalent_sha256.contains(&l.manifest_sha256)
}

/// Rule (gap): an incremental bundle starts where the last applied one
/// ended (its from-anchor) and is the very next link (seq + 1); or, when it
/// follows the last applied link as an equivalent one, any later seq (the
/// links in between ended at the same anchor, and this one replaces them).
fn rule_no_gap(m: &Manifest, l: &ImportLink) -> Result<()> {
    let next = m.seq == l.seq + 1 || (follows_equivalent(m, l) && m.seq > l.seq);
    if !next || m.from_anchor.as_deref() != Some(l.to_anchor.as_str()) {
        return Err(Error::verification(
            "gap",
            format!(
                "bundle {} (seq {}, from {}) does not follow the last applied link (seq {}, to {}); import the missing bundles first",
                m.bundle_id,
                m.seq,
                m.from_anchor.as_deref().unwrap_or("-"),
                l.seq,
                l.to_anchor
            ),
        ));
    }
    Ok(())
}

/// Rule (fork): an incremental bundle names the manifest of the last
/// applied link as its previous one, or among the links equivalent to its
/// previous one.
fn rule_links_to_previous(m: &Manifest, l: &ImportLink) -> Result<()> {
    if m.prev_manifest_sha256.as_deref() != Some(l.manifest_sha256.as_str())
        && !follows_equivalent(m, l)
    {
        return Err(Error::verification(
            "fork",
            format!(
                "bundle {} names previous manifest {}, but the applied one is {}",
                m.bundle_id,
                m.prev_manifest_sha256.as_deref().unwrap_or("(none)"),
                l.manifest_sha256
            ),
        ));
    }
    Ok(())
}
