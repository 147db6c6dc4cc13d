//! The bundle format (docs/bundle-format.md, versions 1 to 4): manifest,
//! SHA256SUMS, minisign signature, packs, content index and volumes, and
//! the verification rules every reader applies.
//!
//! Verification follows the style of awslabs/tough: each rule is one
//! function, with the rule it enforces written beside it, returning
//! `Error::Verification { rule, .. }` with a stable rule name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::trust::{KeyId, Minisig, PublicKey};

pub const FORMAT: &str = "gapsync-bundle";
/// The format version of a bundle without `prev_equivalent_sha256`.
pub const VERSION: u32 = 1;
/// The format version of a bundle with `prev_equivalent_sha256` (version 1
/// plus that field; docs/bundle-format.md §16). Writers use it only when
/// the list is not empty, so readers that know only version 1 say
/// `[unsupported-version]` instead of misreading the chain.
pub const VERSION_EQUIVALENTS: u32 = 2;

/// The format version gapsync writes: content travels as files in the
/// WSUS layout (`content/XX/HEX.ext`, split files as `parts/...partNNNN`),
/// each listed in its volume's SHA256SUMS (docs/bundle-format.md §10, §16).
pub const VERSION_FILES: u32 = 3;
/// Version 3 plus the bundle kinds `report` and `snapshot`
/// (docs/bundle-format.md §16): a manifest of those kinds says version 4,
/// and a version-4 manifest is of one of them. Data bundles (full,
/// incremental) are still written as version 3.
pub const VERSION_KINDS: u32 = 4;
/// The newest version this reader knows.
pub const NEWEST_VERSION: u32 = VERSION_KINDS;

/// True for a manifest whose content travels as files (version 3 on; a
/// report carries no content).
pub fn has_content_files(m: &Manifest) -> bool {
    m.version >= VERSION_FILES && m.kind != BundleKind::Report
}

/// True for the bundle kinds of version 4 (`report`, `snapshot`).
pub fn is_version_4_kind(kind: BundleKind) -> bool {
    matches!(kind, BundleKind::Report | BundleKind::Snapshot)
}

/// The version the version-1 writer (kept for tests of the readers of
/// versions 1 and 2) gives a manifest.
pub fn version_for(prev_equivalent_sha256: &[String]) -> u32 {
    if prev_equivalent_sha256.is_empty() {
        VERSION
    } else {
        VERSION_EQUIVALENTS
    }
}
pub const MANIFEST: &str = "manifest.json";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.minisig";
pub const METADATA_PACK: &str = "metadata.tar.zst";
pub const STATE_ENTRY: &str = "state.json";
pub const CONTENT_ENTRY: &str = "content.json";
pub const REVISIONS_DIR: &str = "revisions";
pub const TRUST_DIR: &str = "trust";
/// Version 3: content files stored whole, `content/XX/HEX.ext`.
pub const CONTENT_DIR: &str = "content";
/// Version 3: the parts of split content files, `parts/XX/HEX.ext.partNNNN`.
pub const PARTS_DIR: &str = "parts";
/// Version 3: the largest file a bundle holds (FAT32's limit, 4 GiB - 1):
/// larger content files are always split into parts.
pub const MAX_BUNDLE_FILE: u64 = (4 << 30) - 1;
/// Largest `content.json` read.
pub const MAX_INDEX_BYTES: u64 = 512 << 20;
/// Upper bounds on the small files read whole into memory.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
pub const MAX_SUMS_BYTES: u64 = 16 << 20;
pub const MAX_SIG_BYTES: u64 = 4096;
pub const MAX_STATEMENT_BYTES: u64 = 64 << 10;
/// Tolerated clock difference between exporter and importer.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// `vol-001`, `vol-002`, ...
pub fn volume_dir_name(index: u32) -> String {
    format!("vol-{index:03}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleKind {
    Full,
    Incremental,
    /// A site report (docs/bundle-format.md, "Report bundles").
    Report,
    /// A disaster-recovery snapshot (docs/bundle-format.md, "Snapshot
    /// bundles").
    Snapshot,
}

impl std::fmt::Display for BundleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BundleKind::Full => "full",
            BundleKind::Incremental => "incremental",
            BundleKind::Report => "report",
            BundleKind::Snapshot => "snapshot",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    #[default]
    All,
    Approved,
    None,
}

impl ContentMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(ContentMode::All),
            "approved" => Some(ContentMode::Approved),
            "none" => Some(ContentMode::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub content: ContentMode,
    pub products: Vec<String>,
    pub classifications: Vec<String>,
    pub languages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub server_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub revisions: u64,
    pub groups: u64,
    pub removed_groups: u64,
    pub deployments: u64,
    pub dead_deployments: u64,
    pub declined: u64,
    pub content_files: u64,
    pub content_bytes: u64,
    /// Content the metadata references that the exporter does not hold.
    pub content_missing: u64,
    pub trust_statements: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    pub volume: u32,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub bundle_id: String,
    pub source: Source,
    pub destination: String,
    pub seq: u64,
    pub prev_manifest_sha256: Option<String>,
    /// SHA-256 of the manifests of the other exported links to this
    /// destination that ended at `from_anchor` (written by `export
    /// --since`): equivalent positions, after any of which this bundle
    /// also applies. Omitted when empty, so bundles without it are
    /// byte-identical to those of earlier writers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev_equivalent_sha256: Vec<String>,
    pub kind: BundleKind,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub created: String,
    pub expires: String,
    /// Key id of the signing key (16 hex digits).
    pub signer: String,
    pub filters: Filters,
    pub counts: Counts,
    pub volumes: u32,
    pub packs: Vec<PackEntry>,
    /// Trust statement files, in the order they apply (`trust/NNNN.json`,
    /// each with a `.minisig` beside it), all in volume 1.
    pub trust_statements: Vec<String>,
    /// Kind `report` only: what the report carries (`airgap::report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::model::report::ReportCounts>,
    /// Kind `snapshot` only: what the snapshot holds (`airgap::dr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::airgap::dr::SnapshotInfo>,
}

impl Manifest {
    /// The bytes of the packs and content files the bundle carries: what
    /// its volumes hold apart from their signed headers and trust
    /// statements (a few KiB). Both sides of the gap compute it from the
    /// signed manifest, so the export and import ledgers agree.
    pub fn payload_bytes(&self) -> u64 {
        let packs = self
            .packs
            .iter()
            .fold(0u64, |n, p| n.saturating_add(p.size));
        if has_content_files(self) {
            packs.saturating_add(self.counts.content_bytes)
        } else {
            packs
        }
    }
}

/// `state.json` in the metadata pack: the replicated state of the change.
pub use crate::model::state::{DeploymentRecord, GroupRecord, State};

/// One entry of `content.json`: a content file and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRecord {
    pub sha1: String,
    pub sha256: String,
    pub size: u64,
    /// WSUS path under content/: `XX/HEX.ext`.
    pub path: String,
    pub parts: Vec<PartRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartRecord {
    pub pack: String,
    pub entry: String,
    pub size: u64,
}

/// Version 3: one entry of `content.json`: a content file and the files of
/// the bundle that hold it (one, or its parts in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub sha1: String,
    pub sha256: String,
    pub size: u64,
    /// WSUS path under content/: `XX/HEX.ext`.
    pub path: String,
    pub parts: Vec<FilePart>,
}

/// Version 3: one file of the bundle holding (part of) a content file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePart {
    pub volume: u32,
    /// Path in the volume: `content/<path>` (whole) or
    /// `parts/<path>.partNNNN` (one of several parts).
    pub file: String,
    pub size: u64,
    /// SHA-256 of this file (of the whole content file when it is whole).
    pub sha256: String,
}

/// Version 3: the bundle file of part `i` (1-based) of `n` of the content
/// file at WSUS path `path`.
pub fn part_file_name(path: &str, i: usize, n: usize) -> String {
    if n == 1 {
        format!("{CONTENT_DIR}/{path}")
    } else {
        format!("{PARTS_DIR}/{path}.part{i:04}")
    }
}

/// True for a path of a version-3 content file or part.
pub fn is_content_file(name: &str) -> bool {
    name.starts_with("content/") || name.starts_with("parts/")
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Version 3: reads `content.json` of volume 1 (bounded), checks it has
/// the digest and size the manifest gives (`[hash-mismatch]`) before
/// parsing it, then its rules (`check_file_index`).
pub fn read_file_index(dir: &Path, m: &Manifest) -> Result<Vec<FileRecord>> {
    let pack = m
        .packs
        .iter()
        .find(|p| p.name == CONTENT_ENTRY && p.volume == 1)
        .ok_or_else(|| {
            Error::verification(
                "missing-file",
                format!("manifest lists no {CONTENT_ENTRY} in volume 1"),
            )
        })?;
    let path = dir.join(CONTENT_ENTRY);
    let bytes = read_small(&path, MAX_INDEX_BYTES, "oversized-file")?;
    let got = sha256_hex(&bytes);
    if got != pack.sha256 || bytes.len() as u64 != pack.size {
        return Err(Error::verification(
            "hash-mismatch",
            format!(
                "{}: SHA-256 {got}, manifest says {}",
                path.display(),
                pack.sha256
            ),
        ));
    }
    let index: Vec<FileRecord> = serde_json::from_slice(&bytes).map_err(|e| {
        Error::verification("malformed-content-index", format!("{CONTENT_ENTRY}: {e}"))
    })?;
    check_file_index(m, &index)?;
    Ok(index)
}

/// Rule (version 3, `[malformed-content-index]` unless noted): each record
/// has hex digests, a safe WSUS path (`[unsafe-path]`) that matches its
/// SHA-1, a SHA-1 not seen before, and parts that add up to its size; each
/// part is the file `part_file_name` names, in a volume of the bundle,
/// with a lower-case SHA-256 (the record's own when the file is whole), not
/// empty when there are several; and the parts, record after record, never
/// go back to an earlier volume (so an importer holds at most one split
/// file open at a time).
pub fn check_file_index(m: &Manifest, index: &[FileRecord]) -> Result<()> {
    let mut seen_sha1: BTreeSet<&str> = BTreeSet::new();
    let mut last_volume = 1u32;
    for c in index {
        let bad = |why: String| {
            Error::verification("malformed-content-index", format!("{}: {why}", c.path))
        };
        let sha1: [u8; 20] = hex::decode(&c.sha1)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad(format!("sha1 {:?} is not 40 hex digits", c.sha1)))?;
        if !is_sha256_hex(&c.sha256) {
            return Err(bad(format!(
                "sha256 {:?} is not 64 lower-case hex digits",
                c.sha256
            )));
        }
        check_safe_path(&c.path)?;
        let ext = c.path.rsplit_once('/').map(|(_, n)| n).unwrap_or("");
        let expected = crate::store::content::wsus_rel_path(&sha1, ext);
        if expected != c.path {
            return Err(bad(format!("path should be {expected}")));
        }
        if !seen_sha1.insert(c.sha1.as_str()) {
            return Err(bad("listed twice".into()));
        }
        let n = c.parts.len();
        if n == 0 || c.parts.iter().map(|p| p.size).sum::<u64>() != c.size {
            return Err(bad("parts do not add up to the size".into()));
        }
        for (i, p) in c.parts.iter().enumerate() {
            check_safe_path(&p.file)?;
            if p.file != part_file_name(&c.path, i + 1, n) {
                return Err(bad(format!(
                    "part {} should be named {}",
                    p.file,
                    part_file_name(&c.path, i + 1, n)
                )));
            }
            if p.volume == 0 || p.volume > m.volumes || p.volume < last_volume {
                return Err(bad(format!(
                    "part {} in volume {} (of {}; the previous part is in volume {last_volume})",
                    p.file, p.volume, m.volumes
                )));
            }
            last_volume = p.volume;
            if !is_sha256_hex(&p.sha256) || (n == 1 && p.sha256 != c.sha256) {
                return Err(bad(format!("part {} has a bad sha256", p.file)));
            }
            if n > 1 && p.size == 0 {
                return Err(bad(format!("part {} is empty", p.file)));
            }
        }
    }
    Ok(())
}

/// Rule (version 3): a volume's SHA256SUMS lists exactly the content files
/// and parts `content.json` places in that volume (`[missing-file]`,
/// `[extra-file]`), each with the digest the index gives it
/// (`[hash-mismatch]`).
pub fn check_volume_files(h: &VolumeHeader, volume: u32, index: &[FileRecord]) -> Result<()> {
    let mut expected: BTreeMap<&str, &str> = BTreeMap::new();
    for p in index.iter().flat_map(|c| &c.parts) {
        if p.volume == volume {
            expected.insert(&p.file, &p.sha256);
        }
    }
    for (name, want) in &expected {
        match h.sums.get(*name) {
            None => {
                return Err(Error::verification(
                    "missing-file",
                    format!(
                        "{}/{name} (volume {volume}) is in {CONTENT_ENTRY} but not listed in {SUMS}",
                        h.dir.display()
                    ),
                ));
            }
            Some(d) if d != want => {
                return Err(Error::verification(
                    "hash-mismatch",
                    format!(
                        "{}/{name}: {CONTENT_ENTRY} and {SUMS} disagree",
                        h.dir.display()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    for name in h.sums.keys().filter(|n| is_content_file(n)) {
        if !expected.contains_key(name.as_str()) {
            return Err(Error::verification(
                "extra-file",
                format!(
                    "{}/{name} is not a content file of volume {volume} in {CONTENT_ENTRY}",
                    h.dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The trusted comment of a volume's signature, binding it to one bundle,
/// link of the chain, and volume.
pub fn trusted_comment(m: &Manifest, volume: Option<u32>) -> String {
    let vol = match volume {
        Some(v) => format!("{v}/{}", m.volumes),
        None => format!("top/{}", m.volumes),
    };
    format!(
        "gapsync bundle {} seq {} volume {} source {}",
        m.bundle_id, m.seq, vol, m.source.server_id
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------- SHA256SUMS

/// Formats SHA256SUMS (GNU coreutils format, sorted by path).
pub fn format_sums(entries: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (path, hash) in entries {
        s.push_str(hash);
        s.push_str("  ");
        s.push_str(path);
        s.push('\n');
    }
    s
}

/// Rule: a path in a bundle is relative, uses `/`, has no empty, `.` or
/// `..` component, and only the characters `A-Z a-z 0-9 . _ -`.
pub fn check_safe_path(path: &str) -> Result<()> {
    let ok = !path.is_empty()
        && path.len() <= 200
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::verification(
            "unsafe-path",
            format!("{path:?} is not a safe bundle path"),
        ))
    }
}

/// Rule: SHA256SUMS is lines of `<64 lower-case hex>  <safe path>` (or
/// `*<path>`), each path once, and never lists itself or its signature.
pub fn parse_sums(text: &str, file: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| {
            Error::verification("malformed-sums", format!("{file} line {}: {why}", n + 1))
        };
        if line.is_empty() {
            continue;
        }
        let (hash, rest) = line.split_at_checked(64).ok_or_else(|| bad("too short"))?;
        if !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("digest is not 64 lower-case hex digits"));
        }
        let path = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| bad("expected two spaces after the digest"))?;
        check_safe_path(path)?;
        if path == SUMS || path == SUMS_SIG {
            return Err(bad("lists SHA256SUMS or its signature"));
        }
        if out.insert(path.to_string(), hash.to_string()).is_some() {
            return Err(bad(&format!("{path} listed twice")));
        }
    }
    Ok(out)
}

// ------------------------------------------------------------- I/O helpers

/// Reads a small file whole, refusing files over `limit` bytes.
pub fn read_small(path: &Path, limit: u64, rule: &'static str) -> Result<Vec<u8>> {
    let meta = fs::symlink_metadata(path).map_err(|_| {
        Error::verification("missing-file", format!("{} is missing", path.display()))
    })?;
    if !meta.is_file() {
        return Err(Error::verification(
            "unexpected-file-type",
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.len() > limit {
        return Err(Error::verification(
            rule,
            format!(
                "{} is {} bytes, over the limit of {limit}",
                path.display(),
                meta.len()
            ),
        ));
    }
    fs::read(path).at(path)
}

/// A reader that hashes (SHA-256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Reads the rest of the stream (so the digest covers the whole file).
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes (SHA-256) and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a file (streamed).
pub fn hash_file_sha256(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).at(path)?;
    let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
    r.drain().at(path)?;
    Ok(r.finish())
}

// ------------------------------------------------------------- volumes

/// Where a bundle's volumes are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The bundle directory (for a multi-volume bundle: the folder holding
    /// `vol-NNN/`), when there is one.
    pub top: Option<PathBuf>,
    /// Volume directories in the order given/found (index 0 = first seen).
    pub volumes: Vec<PathBuf>,
}

impl Layout {
    /// A bundle directory: single-volume (files at its top) or multi-volume
    /// (`vol-NNN/` folders; a top-level manifest too).
    pub fn discover(path: &Path) -> Result<Layout> {
        // A bundle folder that is not there is not a failed verification
        // (nothing was checked): a runtime error, like any missing path.
        if !path.is_dir() {
            let why = if path.exists() {
                "not a folder; give the bundle's folder"
            } else {
                "no such bundle folder"
            };
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, why),
            ));
        }
        let mut vols: Vec<PathBuf> = Vec::new();
        for e in fs::read_dir(path).at(path)? {
            let e = e.at(path)?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("vol-") && e.path().is_dir() {
                vols.push(e.path());
            }
        }
        vols.sort();
        if vols.is_empty() {
            Ok(Layout {
                top: None,
                volumes: vec![path.to_path_buf()],
            })
        } else {
            Ok(Layout {
                top: Some(path.to_path_buf()),
                volumes: vols,
            })
        }
    }

    /// The top-level folder of a multi-volume bundle when it holds any file
    /// of its own (then its manifest, SHA256SUMS and signature must all be
    /// present and valid).
    pub fn top_with_files(&self) -> Option<&Path> {
        let top = self.top.as_deref()?;
        let has_files = fs::read_dir(top)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(true))
            })
            .unwrap_or(false);
        has_files.then_some(top)
    }

    /// Volumes given one by one (`--volumes DIR...`).
    pub fn from_volumes(dirs: &[PathBuf]) -> Layout {
        Layout {
            top: None,
            volumes: dirs.to_vec(),
        }
    }
}

/// What the signature and sums of one volume say, once checked.
#[derive(Debug, Clone)]
pub struct VolumeHeader {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_sha256: String,
    pub sums: BTreeMap<String, String>,
    pub signer: KeyId,
    /// Volume number (1-based), or None for the top level of a
    /// multi-volume bundle.
    pub volume: Option<u32>,
}

/// Signature check callback: given the key id named in a signature, return
/// the trusted public key (or the rule that fails).
pub trait KeyLookup {
    fn trusted_key(&self, id: &KeyId) -> Result<PublicKey>;
}

/// Reads and checks one volume's signed header: signature (by a trusted
/// key) over SHA256SUMS, the sums' format, the manifest's digest, the
/// trusted comment, and that the folder holds exactly the listed files.
/// Does not hash the packs (see `verify_files`).
pub fn read_volume_header(dir: &Path, keys: &dyn KeyLookup, top: bool) -> Result<VolumeHeader> {
    let sums_bytes = read_small(&dir.join(SUMS), MAX_SUMS_BYTES, "oversized-file")?;
    let sig_bytes = read_small(&dir.join(SUMS_SIG), MAX_SIG_BYTES, "oversized-file")?;
    let sig_text = std::str::from_utf8(&sig_bytes).map_err(|_| {
        Error::verification(
            "malformed-signature",
            format!("{}/{SUMS_SIG} is not UTF-8", dir.display()),
        )
    })?;
    let sig = Minisig::parse(sig_text)?;
    check_signature_file_canonical(dir, sig_text, &sig)?;
    let key = keys.trusted_key(&sig.key_id())?;
    crate::trust::verify(&key, &sums_bytes, &sig).map_err(|e| match e {
        Error::Verification { rule, detail } => Error::Verification {
            rule,
            detail: format!("{}/{SUMS_SIG}: {detail}", dir.display()),
        },
        other => other,
    })?;
    let sums_text = std::str::from_utf8(&sums_bytes).map_err(|_| {
        Error::verification(
            "malformed-sums",
            format!("{}/{SUMS} is not UTF-8", dir.display()),
        )
    })?;
    let sums = parse_sums(sums_text, &format!("{}/{SUMS}", dir.display()))?;
    check_listed_files_exactly(dir, &sums)?;
    let manifest_bytes = read_small(&dir.join(MANIFEST), MAX_MANIFEST_BYTES, "oversized-file")?;
    let manifest_sha256 = sha256_hex(&manifest_bytes);
    check_manifest_digest(dir, &sums, &manifest_sha256)?;
    let manifest = parse_manifest(&manifest_bytes, dir)?;
    let volume = check_trusted_comment(dir, &manifest, sig.trusted_comment(), top)?;
    check_signer_matches_manifest(dir, &manifest, &sig.key_id())?;
    Ok(VolumeHeader {
        dir: dir.to_path_buf(),
        manifest,
        manifest_bytes,
        manifest_sha256,
        sums,
        signer: sig.key_id(),
        volume,
    })
}

/// Rule: the signature file is exactly what gapsync writes — four lines,
/// the untrusted comment naming the signing key — so that no byte of a
/// bundle, not even the unsigned comment line, can change unnoticed.
fn check_signature_file_canonical(dir: &Path, text: &str, sig: &Minisig) -> Result<()> {
    let lines: Vec<&str> = text.split('\n').collect();
    let expected_comment = format!(
        "untrusted comment: signature from gapsync secret key {}",
        sig.key_id()
    );
    let ok = lines.len() == 5 && lines[4].is_empty() && lines[0] == expected_comment;
    if !ok {
        return Err(Error::verification(
            "malformed-signature",
            format!(
                "{}/{SUMS_SIG} is not a gapsync signature file (4 lines, untrusted comment {expected_comment:?})",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Rule: a volume holds exactly the files its SHA256SUMS lists (plus
/// SHA256SUMS and its signature): nothing missing, nothing extra, only
/// regular files and folders (no links, devices or FIFOs).
fn check_listed_files_exactly(dir: &Path, sums: &BTreeMap<String, String>) -> Result<()> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let e = e.map_err(|e| Error::io(dir, io::Error::other(e.to_string())))?;
        let rel = e
            .path()
            .strip_prefix(dir)
            .map_err(|_| Error::invalid(dir.display().to_string(), "walk left the bundle"))?
            .to_string_lossy()
            .replace('\\', "/");
        let ft = e.file_type();
        if ft.is_dir() {
            continue;
        }
        if !ft.is_file() {
            return Err(Error::verification(
                "unexpected-file-type",
                format!("{}/{rel} is not a regular file", dir.display()),
            ));
        }
        if rel == SUMS || rel == SUMS_SIG {
            continue;
        }
        found.insert(rel);
    }
    for listed in sums.keys() {
        if !found.contains(listed) {
            return Err(Error::verification(
                "missing-file",
                format!("{}/{listed} is listed in {SUMS} but missing", dir.display()),
            ));
        }
    }
    for f in &found {
        if !sums.contains_key(f) {
            return Err(Error::verification(
                "extra-file",
                format!("{}/{f} is not listed in {SUMS}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// Rule: the manifest is covered by the signed SHA256SUMS.
fn check_manifest_digest(dir: &Path, sums: &BTreeMap<String, String>, actual: &str) -> Result<()> {
    match sums.get(MANIFEST) {
        None => Err(Error::verification(
            "missing-file",
            format!("{}/{SUMS} does not list {MANIFEST}", dir.display()),
        )),
        Some(h) if h != actual => Err(Error::verification(
            "hash-mismatch",
            format!(
                "{}/{MANIFEST}: SHA-256 {actual}, {SUMS} says {h}",
                dir.display()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Rule: the format and version are read first and leniently, so that a
/// manifest of a later version (with fields this reader does not know) is
/// reported as such.
fn check_manifest_version(bytes: &[u8], dir: &Path) -> Result<()> {
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
        version: Option<u32>,
    }
    if let Ok(h) = serde_json::from_slice::<Head>(bytes)
        && h.format.as_deref() == Some(FORMAT)
        && let Some(v) = h.version
        && !(VERSION..=NEWEST_VERSION).contains(&v)
    {
        return Err(unsupported_version(dir, v));
    }
    Ok(())
}

fn unsupported_version(dir: &Path, v: u32) -> Error {
    Error::verification(
        "unsupported-version",
        format!(
            "{}/{MANIFEST}: bundle format version {v} (this gapsync reads versions {VERSION} to {NEWEST_VERSION}); upgrade gapsync",
            dir.display()
        ),
    )
}

/// Rule: the manifest is JSON of this format and a version this reader
/// knows, with no unknown fields.
pub fn parse_manifest(bytes: &[u8], dir: &Path) -> Result<Manifest> {
    check_manifest_version(bytes, dir)?;
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
        Error::verification(
            "malformed-manifest",
            format!("{}/{MANIFEST}: {e}", dir.display()),
        )
    })?;
    if m.format != FORMAT {
        return Err(Error::verification(
            "malformed-manifest",
            format!(
                "{}/{MANIFEST}: format {:?} is not {FORMAT}",
                dir.display(),
                m.format
            ),
        ));
    }
    if !(VERSION..=NEWEST_VERSION).contains(&m.version) {
        return Err(unsupported_version(dir, m.version));
    }
    if m.volumes == 0 || m.seq == 0 || (m.seq == 1) != m.prev_manifest_sha256.is_none() {
        return Err(Error::verification(
            "malformed-manifest",
            format!(
                "{}/{MANIFEST}: inconsistent volumes/seq/prev",
                dir.display()
            ),
        ));
    }
    check_kind_version(&m, dir)?;
    if !is_version_4_kind(m.kind) && (m.kind == BundleKind::Full) != m.from_anchor.is_none() {
        return Err(Error::verification(
            "malformed-manifest",
            format!(
                "{}/{MANIFEST}: a full bundle has no from-anchor and an incremental one has one",
                dir.display()
            ),
        ));
    }
    check_equivalents(m.prev_equivalent_sha256.as_slice(), &m, dir)?;
    crate::airgap::dr::check_snapshot_manifest(&m, dir)?;
    for p in &m.packs {
        check_safe_path(&p.name)?;
        if p.volume == 0 || p.volume > m.volumes {
            return Err(Error::verification(
                "malformed-manifest",
                format!("pack {} in volume {} of {}", p.name, p.volume, m.volumes),
            ));
        }
    }
    Ok(m)
}

/// Rule: a manifest of kind `report` or `snapshot` says version 4, and a
/// version-4 manifest is of one of those kinds; the `report` object is
/// present exactly in a report's manifest, the `snapshot` object exactly in
/// a snapshot's.
fn check_kind_version(m: &Manifest, dir: &Path) -> Result<()> {
    let v4_kind = is_version_4_kind(m.kind);
    let report_object = (m.kind == BundleKind::Report) != m.report.is_some();
    let snapshot_object = (m.kind == BundleKind::Snapshot) != m.snapshot.is_some();
    if v4_kind != (m.version == VERSION_KINDS) || report_object || snapshot_object {
        return Err(Error::verification(
            "malformed-manifest",
            format!(
                "{}/{MANIFEST}: a {} bundle in a version {} manifest{}{} (report and snapshot bundles are version {VERSION_KINDS}, and only they)",
                dir.display(),
                m.kind,
                m.version,
                if m.report.is_some() {
                    " with a report object"
                } else {
                    ""
                },
                if m.snapshot.is_some() {
                    " with a snapshot object"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// Rule: `prev_equivalent_sha256` appears in version 2 manifests, and
/// only there (not empty) among versions 1 and 2 (version 3 may carry it
/// or not); only in an incremental bundle with a previous manifest; and
/// lists distinct SHA-256 digests (64 lower-case hex digits), none of them
/// `prev_manifest_sha256`.
fn check_equivalents(list: &[String], m: &Manifest, dir: &Path) -> Result<()> {
    let bad = |why: String| {
        Error::verification(
            "malformed-manifest",
            format!("{}/{MANIFEST}: prev_equivalent_sha256 {why}", dir.display()),
        )
    };
    if m.version < VERSION_FILES && m.version != version_for(list) {
        return Err(bad(format!(
            "{} in a version {} manifest",
            if list.is_empty() {
                "missing"
            } else {
                "present"
            },
            m.version
        )));
    }
    if list.is_empty() {
        return Ok(());
    }
    if m.kind != BundleKind::Incremental || m.prev_manifest_sha256.is_none() {
        return Err(bad("in a bundle that continues no previous link".into()));
    }
    let mut seen = BTreeSet::new();
    for d in list {
        if d.len() != 64
            || !d
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(bad(format!(
                "entry {d:?} is not a SHA-256 in lower-case hex"
            )));
        }
        if Some(d) == m.prev_manifest_sha256.as_ref() || !seen.insert(d) {
            return Err(bad(format!("lists {d} twice")));
        }
    }
    Ok(())
}

/// Rule: the signature's trusted comment names this bundle, link and
/// volume, so a signed volume cannot be passed off as part of another
/// bundle or as another volume of this one.
fn check_trusted_comment(
    dir: &Path,
    m: &Manifest,
    comment: &str,
    top: bool,
) -> Result<Option<u32>> {
    if top {
        if comment == trusted_comment(m, None) {
            return Ok(None);
        }
    } else {
        for v in 1..=m.volumes {
            if comment == trusted_comment(m, Some(v)) {
                return Ok(Some(v));
            }
        }
    }
    Err(Error::verification(
        "signature-comment-mismatch",
        format!(
            "{}/{SUMS_SIG}: trusted comment {comment:?} does not match the manifest",
            dir.display()
        ),
    ))
}

/// Rule: the manifest names the key that signed it.
fn check_signer_matches_manifest(dir: &Path, m: &Manifest, signer: &KeyId) -> Result<()> {
    if m.signer != signer.to_string() {
        return Err(Error::verification(
            "signer-mismatch",
            format!(
                "{}/{MANIFEST}: signer {} but signed by {signer}",
                dir.display(),
                m.signer
            ),
        ));
    }
    Ok(())
}

/// Rule: every pack the manifest puts in this volume is listed in the
/// volume's SHA256SUMS with the same digest, and the volume holds no pack
/// the manifest does not name.
pub fn check_volume_packs(h: &VolumeHeader, volume: u32) -> Result<()> {
    let mut expected: BTreeSet<&str> = BTreeSet::new();
    for p in h.manifest.packs.iter().filter(|p| p.volume == volume) {
        expected.insert(&p.name);
        match h.sums.get(&p.name) {
            None => {
                return Err(Error::verification(
                    "missing-file",
                    format!(
                        "{}/{} (volume {volume}) is not listed in {SUMS}",
                        h.dir.display(),
                        p.name
                    ),
                ));
            }
            Some(d) if *d != p.sha256 => {
                return Err(Error::verification(
                    "hash-mismatch",
                    format!(
                        "{}/{}: manifest and {SUMS} disagree",
                        h.dir.display(),
                        p.name
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    // Version 3 content files are checked against the content index
    // (`check_volume_files`).
    let files = has_content_files(&h.manifest);
    for name in h.sums.keys() {
        let is_trust = volume == 1 && name.starts_with("trust/");
        let is_content = files && is_content_file(name);
        if name != MANIFEST && !is_trust && !is_content && !expected.contains(name.as_str()) {
            return Err(Error::verification(
                "extra-file",
                format!(
                    "{}/{name} is not a pack of volume {volume}",
                    h.dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Rule: every file listed in the volumes' SHA256SUMS has that digest
/// (`[hash-mismatch]`), and packs and content files the size the manifest
/// or content index gives (`[size-mismatch]`). Files are hashed in
/// parallel, each byte once.
pub fn verify_files(
    headers: &[&VolumeHeader],
    index: &[FileRecord],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    struct Job<'a> {
        dir: &'a Path,
        name: &'a str,
        sha256: &'a str,
        size: Option<u64>,
    }
    let mut sizes: BTreeMap<(u32, &str), u64> = BTreeMap::new();
    for h in headers {
        for p in &h.manifest.packs {
            sizes.insert((p.volume, p.name.as_str()), p.size);
        }
    }
    for p in index.iter().flat_map(|c| &c.parts) {
        sizes.insert((p.volume, p.file.as_str()), p.size);
    }
    let mut jobs = Vec::new();
    for h in headers {
        let v = h.volume.unwrap_or(0);
        for (name, want) in &h.sums {
            jobs.push(Job {
                dir: &h.dir,
                name,
                sha256: want,
                size: sizes.get(&(v, name.as_str())).copied(),
            });
        }
    }
    // Largest first, so that one big file does not start last.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.size.unwrap_or(0)));
    crate::airgap::files::run_parallel(&jobs, crate::airgap::files::workers(), |j| {
        let path = j.dir.join(j.name);
        let mut f = File::open(&path).at(&path)?;
        let mut h = crate::airgap::files::Hashers::new(false);
        let mut buf = vec![0u8; crate::airgap::files::COPY_BUF];
        crate::airgap::files::copy_hashed(
            &mut f,
            None,
            u64::MAX,
            &mut [&mut h],
            &mut buf,
            on_bytes,
        )
        .at(&path)?;
        let d = h.finish();
        let got = hex::encode(d.sha256);
        if got != j.sha256 {
            return Err(Error::verification(
                "hash-mismatch",
                format!(
                    "{}: SHA-256 {got}, {SUMS} says {}",
                    path.display(),
                    j.sha256
                ),
            ));
        }
        if let Some(s) = j.size
            && s != d.size
        {
            return Err(Error::verification(
                "size-mismatch",
                format!("{}: {} bytes, the bundle says {s}", path.display(), d.size),
            ));
        }
        Ok(())
    })?;
    Ok(())
}

/// Rule: a bundle is used only between its creation and its expiry, with
/// `CLOCK_SKEW_SECS` of tolerance either side. `allow_expired` is the
/// explicit, loudly reported opt-out for expiry only.
pub fn check_validity_period(
    m: &Manifest,
    now: time::OffsetDateTime,
    allow_expired: bool,
) -> Result<bool> {
    use time::format_description::well_known::Rfc3339;
    let parse = |s: &str, what: &str| {
        time::OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
            Error::verification(
                "malformed-manifest",
                format!("{what} {s:?} is not RFC 3339"),
            )
        })
    };
    let created = parse(&m.created, "created")?;
    let expires = parse(&m.expires, "expires")?;
    let skew = time::Duration::seconds(CLOCK_SKEW_SECS);
    if created > now + skew {
        return Err(Error::verification(
            "not-yet-valid",
            format!(
                "bundle {} was created {} (in the future)",
                m.bundle_id, m.created
            ),
        ));
    }
    if now > expires + skew {
        if allow_expired {
            return Ok(true);
        }
        return Err(Error::verification(
            "expired",
            format!(
                "bundle {} expired {} (re-export it, or pass --allow-expired to override)",
                m.bundle_id, m.expires
            ),
        ));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_trip_and_rules() {
        let mut m = BTreeMap::new();
        m.insert("manifest.json".to_string(), "a".repeat(64));
        m.insert("content-001.tar".to_string(), "b".repeat(64));
        let text = format_sums(&m);
        assert_eq!(parse_sums(&text, "S").unwrap(), m);
        for bad in [
            format!("{}  ../x\n", "a".repeat(64)),
            format!("{}  /etc/passwd\n", "a".repeat(64)),
            format!("{}  a//b\n", "a".repeat(64)),
            format!("{} x\n", "a".repeat(64)),
            format!("{}  x\n", "A".repeat(64)),
            format!("{}  SHA256SUMS\n", "a".repeat(64)),
            format!("{}  x\n{}  x\n", "a".repeat(64), "b".repeat(64)),
            "short\n".to_string(),
        ] {
            assert!(parse_sums(&bad, "S").is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn sums_round_trip_any_safe_paths(
            entries in proptest::collection::btree_map("[a-z0-9]{1,8}(/[a-z0-9._-]{1,12}){0,2}", "[0-9a-f]{64}", 0..20)
        ) {
            let entries: BTreeMap<String, String> = entries
                .into_iter()
                .filter(|(p, _)| check_safe_path(p).is_ok() && p != SUMS && p != SUMS_SIG)
                .collect();
            let text = format_sums(&entries);
            proptest::prop_assert_eq!(parse_sums(&text, "S").unwrap(), entries);
        }

        #[test]
        fn manifest_json_round_trips(seq in 1u64..1000, volumes in 1u32..50, revisions in 0u64..1_000_000, name in "[ -~]{0,40}", equivalents in 0u64..3) {
            let equivalents: Vec<String> = if seq > 1 { (1..=equivalents).map(|i| format!("{i:064x}")).collect() } else { vec![] };
            let m = Manifest {
                format: FORMAT.into(),
                version: version_for(&equivalents),
                bundle_id: "b".into(),
                source: Source { server_id: "s".into(), name },
                destination: "d".into(),
                seq,
                prev_manifest_sha256: (seq > 1).then(|| "0".repeat(64)),
                prev_equivalent_sha256: equivalents,
                kind: if seq > 1 { BundleKind::Incremental } else { BundleKind::Full },
                from_anchor: (seq > 1).then(|| "a".into()),
                to_anchor: "t".into(),
                created: "2026-01-01T00:00:00Z".into(),
                expires: "2026-02-01T00:00:00Z".into(),
                signer: "0000000000000000".into(),
                filters: Filters::default(),
                counts: Counts { revisions, ..Counts::default() },
                volumes,
                packs: vec![PackEntry { volume: volumes, name: "content-001.tar".into(), size: 1, sha256: "0".repeat(64) }],
                trust_statements: vec![],
                report: None,
                snapshot: None,
            };
            let bytes = serde_json::to_vec_pretty(&m).unwrap();
            proptest::prop_assert_eq!(parse_manifest(&bytes, Path::new(".")).unwrap(), m);
        }
    }

    fn manifest(seq: u64) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            bundle_id: "b".into(),
            source: Source {
                server_id: "s".into(),
                name: "n".into(),
            },
            destination: "d".into(),
            seq,
            prev_manifest_sha256: (seq > 1).then(|| "0".repeat(64)),
            prev_equivalent_sha256: vec![],
            kind: if seq > 1 {
                BundleKind::Incremental
            } else {
                BundleKind::Full
            },
            from_anchor: (seq > 1).then(|| "a".into()),
            to_anchor: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            expires: "2026-02-01T00:00:00Z".into(),
            signer: "0000000000000000".into(),
            filters: Filters::default(),
            counts: Counts::default(),
            volumes: 1,
            packs: vec![],
            trust_statements: vec![],
            report: None,
            snapshot: None,
        }
    }

    #[test]
    fn equivalent_links_are_version_2_and_checked() {
        // Without equivalents the manifest is what version-1 writers
        // wrote: no such field, version 1, and such manifests still parse.
        let plain = serde_json::to_vec_pretty(&manifest(3)).unwrap();
        let text = String::from_utf8(plain.clone()).unwrap();
        assert!(!text.contains("prev_equivalent_sha256"), "{text}");
        assert!(text.contains("\"version\": 1,"), "{text}");
        assert_eq!(parse_manifest(&plain, Path::new(".")).unwrap(), manifest(3));
        let mut m = manifest(3);
        m.prev_equivalent_sha256 = vec!["1".repeat(64), "2".repeat(64)];
        m.version = VERSION_EQUIVALENTS;
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(parse_manifest(&bytes, Path::new(".")).unwrap(), m);
        // Version 3 may carry the field or not.
        let mut v3 = m.clone();
        v3.version = VERSION_FILES;
        assert_eq!(
            parse_manifest(&serde_json::to_vec(&v3).unwrap(), Path::new(".")).unwrap(),
            v3
        );
        let mut v3_plain = manifest(3);
        v3_plain.version = VERSION_FILES;
        assert_eq!(
            parse_manifest(&serde_json::to_vec(&v3_plain).unwrap(), Path::new(".")).unwrap(),
            v3_plain
        );
        let mut v5 = m.clone();
        v5.version = NEWEST_VERSION + 1;
        match parse_manifest(&serde_json::to_vec(&v5).unwrap(), Path::new(".")) {
            Err(Error::Verification { rule, .. }) => assert_eq!(rule, "unsupported-version"),
            other => panic!("{other:?}"),
        }
        let rule =
            |m: &Manifest| match parse_manifest(&serde_json::to_vec(m).unwrap(), Path::new(".")) {
                Err(Error::Verification { rule, .. }) => rule,
                other => panic!("expected a refusal, got {other:?}"),
            };
        for bad in [
            vec!["1".repeat(64), "1".repeat(64)],
            vec!["0".repeat(64)],
            vec!["A".repeat(64)],
            vec!["1".repeat(63)],
        ] {
            let mut m = manifest(3);
            m.prev_equivalent_sha256 = bad;
            m.version = VERSION_EQUIVALENTS;
            assert_eq!(rule(&m), "malformed-manifest");
        }
        let mut full = manifest(1);
        full.prev_equivalent_sha256 = vec!["1".repeat(64)];
        full.version = VERSION_EQUIVALENTS;
        assert_eq!(rule(&full), "malformed-manifest");
        // The field belongs to version 2, and version 2 to the field.
        let mut v1 = manifest(3);
        v1.prev_equivalent_sha256 = vec!["1".repeat(64)];
        assert_eq!(rule(&v1), "malformed-manifest");
        let mut v2 = manifest(3);
        v2.version = VERSION_EQUIVALENTS;
        assert_eq!(rule(&v2), "malformed-manifest");
    }

    #[test]
    fn version_4_is_the_kinds_report_and_snapshot() {
        let parse = |m: &Manifest| parse_manifest(&serde_json::to_vec(m).unwrap(), Path::new("."));
        let rule = |m: &Manifest| match parse(m) {
            Err(Error::Verification { rule, .. }) => rule,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let report = |seq: u64| {
            let mut m = manifest(seq);
            m.version = VERSION_KINDS;
            m.kind = BundleKind::Report;
            m.report = Some(crate::model::report::ReportCounts::default());
            m
        };
        assert_eq!(parse(&report(1)).unwrap(), report(1));
        // A report continues its chain from an anchor, or starts it again.
        assert_eq!(parse(&report(2)).unwrap(), report(2));
        let mut again = report(2);
        again.from_anchor = None;
        assert_eq!(parse(&again).unwrap(), again);
        let mut v3 = report(1);
        v3.version = VERSION_FILES;
        assert_eq!(rule(&v3), "malformed-manifest");
        let mut bare = report(1);
        bare.report = None;
        assert_eq!(rule(&bare), "malformed-manifest");
        let mut full4 = manifest(1);
        full4.version = VERSION_KINDS;
        assert_eq!(rule(&full4), "malformed-manifest");
        let mut full_with_report = manifest(1);
        full_with_report.version = VERSION_FILES;
        full_with_report.report = Some(Default::default());
        assert_eq!(rule(&full_with_report), "malformed-manifest");
        let mut snap3 = manifest(1);
        snap3.version = VERSION_FILES;
        snap3.kind = BundleKind::Snapshot;
        assert_eq!(rule(&snap3), "malformed-manifest");
        // A report carries no content files.
        assert!(!has_content_files(&report(1)));
    }

    #[test]
    fn safe_paths() {
        for ok in ["manifest.json", "trust/0001.json", "content-001.tar"] {
            check_safe_path(ok).unwrap();
        }
        for bad in ["", "..", "a/../b", "/a", "a\\b", "a b", "./a", "a/", "é"] {
            assert!(check_safe_path(bad).is_err(), "{bad:?}");
        }
    }
}
