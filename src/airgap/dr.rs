//! Disaster-recovery snapshots (docs/bundle-format.md "Snapshot bundles",
//! docs/reliability.md "Disaster recovery"): `snapshot` writes a whole
//! store, local state included, as a signed bundle of kind `snapshot`
//! (format version 4); `restore` verifies one, with the chain of its
//! bases, and rebuilds the store from it: same server id, revision ids,
//! anchors, computers, ledgers, keys.
//!
//! `snapshot` (`snapshot_into`):
//! 1. The base (`--base`, an incremental snapshot): its signed header, by
//!    the snapshot's key, of this server.
//! 2. A consistent copy of the database (`VACUUM INTO`: one read
//!    transaction, so a running `serve` and writers go on) into the
//!    `.partial` folder, and read back from the copy: the journal head,
//!    the content it records (with a base: recorded after the base's
//!    anchor), counts. Database and content list are the same state:
//!    content files are in place before the row recording them commits,
//!    and are never removed.
//! 3. The database pack (`gapsync.db.zst`): the copy streamed through
//!    zstd, hashed before and after compression; the copy removed.
//! 4. The content files as in a version-3 data bundle (`airgap::export`'s
//!    placement over volumes and parallel copy, checked against the
//!    store's record), then `content.json`.
//! 5. Manifest, SHA256SUMS and signature of every volume; the folder
//!    renamed into place.
//!
//! `restore` (`restore`):
//! 1. NEWDIR is absent or an empty folder, and not inside a store.
//! 2. Every snapshot given: signed headers (by a `--trust` key), kind,
//!    validity period, content index; then the chain rules (each
//!    incremental snapshot names its base by manifest digest), and the
//!    chain's content set is the newest snapshot's.
//! 3. A temporary sibling folder `.NEWDIR.restore-UUID`, locked while it is
//!    built: the database decompressed (both digests checked), every
//!    content file copied from the chain, each byte read once and hashed
//!    (the SHA-256 of each bundle file; the SHA-1 and SHA-256 of each
//!    content file), everything fsynced.
//! 4. The restored database opened as a writer opens a store (WAL; an
//!    older schema upgraded): its server id and journal head are the
//!    manifest's, its content rows exactly the chain's files.
//! 5. Renamed into place, the parent folder fsynced. A crash at any
//!    moment leaves nothing at NEWDIR or the complete store; the
//!    temporary folder it leaves behind is removed by the next restore
//!    into NEWDIR.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::airgap::export::{
    ContentLayout, Partial, Placed, VolumeDirs, VolumeFiles, file_index, place_with_index, rfc3339,
    write_content_files, write_file, write_signed_headers,
};
use crate::airgap::files::{COPY_BUF, Hashers, copy_hashed, run_parallel};
use crate::airgap::format::{
    self, BundleKind, CONTENT_ENTRY, FileRecord, Filters, HashingReader, HashingWriter, Layout,
    MANIFEST, Manifest, PackEntry, Source,
};
use crate::airgap::verify::verify_headers;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::store::content::sync_dir;
use crate::store::journal::Anchor;
use crate::store::{CONTENT_DIR, DB_FILE, STAGING_DIR, Store};
use crate::trust::{PublicKey, SecretKey, TrustView};

/// The database pack of a snapshot (volume 1).
pub const DATABASE_PACK: &str = "gapsync.db.zst";
/// The `destination` of every snapshot manifest.
pub const SNAPSHOT_DESTINATION: &str = "snapshot";
/// The temporary copy of the database, in the `.partial` folder (removed
/// before the bundle is signed).
const DATABASE_COPY: &str = ".database-copy";
/// zstd level of the database pack.
const ZSTD_LEVEL: i32 = 3;

/// The manifest's `snapshot` object: what only a snapshot says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    /// The database's schema version (SQLite `user_version`).
    pub schema_version: i64,
    /// Size and SHA-256 (lower-case hex) of the database the pack
    /// decompresses to.
    pub database_size: u64,
    pub database_sha256: String,
    /// Content files the store held, in this snapshot and its bases, and
    /// their bytes.
    pub store_content_files: u64,
    pub store_content_bytes: u64,
    /// SHA-256 of that set: the SHA-1s in upper-case hex, sorted, each
    /// followed by a line feed (`store::dr::content_set_digest`).
    pub content_set_sha256: String,
    /// Computers the store knew.
    pub computers: u64,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Rule (`[malformed-manifest]`): a snapshot manifest, and only one, has
/// the `snapshot` object; its destination is `snapshot`; an incremental
/// snapshot names its base's manifest and anchor (`prev_manifest_sha256`,
/// `from_anchor`), a full one neither; it carries no trust statement and
/// no equivalent links; its packs are the database pack and
/// `content.json`, in volume 1; its digests are lower-case hex.
pub fn check_snapshot_manifest(m: &Manifest, dir: &Path) -> Result<()> {
    let bad = |why: &str| {
        Error::verification(
            "malformed-manifest",
            format!("{}/{MANIFEST}: {why}", dir.display()),
        )
    };
    let is = m.kind == BundleKind::Snapshot;
    let Some(s) = &m.snapshot else {
        if is {
            return Err(bad("a snapshot bundle without its \"snapshot\" object"));
        }
        return Ok(());
    };
    if !is {
        return Err(bad(&format!(
            "a \"snapshot\" object in a {} bundle",
            m.kind
        )));
    }
    if m.destination != SNAPSHOT_DESTINATION {
        return Err(bad(&format!(
            "a snapshot's destination is {SNAPSHOT_DESTINATION:?}, not {:?}",
            m.destination
        )));
    }
    if m.from_anchor.is_some() != m.prev_manifest_sha256.is_some() {
        return Err(bad(
            "an incremental snapshot names its base's manifest and anchor, a full one neither",
        ));
    }
    if !m.trust_statements.is_empty() || !m.prev_equivalent_sha256.is_empty() {
        return Err(bad(
            "a snapshot carries no trust statements and no equivalent links",
        ));
    }
    let packs: Vec<(&str, u32)> = m
        .packs
        .iter()
        .map(|p| (p.name.as_str(), p.volume))
        .collect();
    if packs != [(DATABASE_PACK, 1), (CONTENT_ENTRY, 1)] {
        return Err(bad(&format!(
            "a snapshot's packs are {DATABASE_PACK} and {CONTENT_ENTRY} in volume 1, not {packs:?}"
        )));
    }
    if !is_hex64(&s.database_sha256) || !is_hex64(&s.content_set_sha256) {
        return Err(bad("a snapshot digest is not 64 lower-case hex digits"));
    }
    Ok(())
}

/// Rule (`[wrong-kind]`): `restore` and `snapshot --base` take snapshot
/// bundles only.
fn rule_is_snapshot(m: &Manifest, dir: &Path) -> Result<()> {
    if m.kind != BundleKind::Snapshot {
        return Err(Error::verification(
            "wrong-kind",
            format!(
                "{}/{MANIFEST}: bundle {} is a {} bundle, not a snapshot; import it with `gapsync import`",
                dir.display(),
                m.bundle_id,
                m.kind
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------- snapshot

pub struct SnapshotOptions<'a> {
    pub out: &'a Path,
    /// The previous snapshot: write only the content it does not hold.
    pub base: Option<&'a Path>,
    /// Split into volumes of at most this many bytes.
    pub volume_size: Option<u64>,
    /// Validity period (within the format's 1 minute to 3650 days).
    pub expires: time::Duration,
    pub key: &'a SecretKey,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    pub path: PathBuf,
    pub bundle_id: String,
    pub seq: u64,
    pub incremental: bool,
    /// An incremental snapshot's base (its manifest's SHA-256).
    pub base_manifest_sha256: Option<String>,
    pub server_id: String,
    pub server_name: String,
    pub to_anchor: String,
    pub volumes: u32,
    /// The database, and its pack.
    pub database_bytes: u64,
    pub database_pack_bytes: u64,
    pub computers: u64,
    /// Content files (and bytes) this snapshot carries.
    pub content_files: u64,
    pub content_bytes: u64,
    /// Content files (and bytes) the store held.
    pub store_content_files: u64,
    pub store_content_bytes: u64,
    pub bytes_written: u64,
    pub manifest_sha256: String,
}

/// Rule: the options are in range before any work (the command line
/// checks the same while parsing).
fn check_snapshot_options(opts: &SnapshotOptions<'_>) -> Result<()> {
    use crate::model::units::{MAX_EXPIRES, MIN_EXPIRES, MIN_VOLUME_SIZE, duration_text};
    if opts.expires < MIN_EXPIRES || opts.expires > MAX_EXPIRES {
        return Err(Error::bad_argument(
            "expiry",
            format!(
                "{} s is out of range: allowed between {} and {}",
                opts.expires.whole_seconds(),
                duration_text(MIN_EXPIRES),
                duration_text(MAX_EXPIRES)
            ),
        ));
    }
    if let Some(v) = opts.volume_size
        && v < MIN_VOLUME_SIZE
    {
        return Err(Error::bad_argument(
            "volume size",
            format!("{v} bytes is below the minimum of {MIN_VOLUME_SIZE} bytes"),
        ));
    }
    Ok(())
}

/// The previous snapshot an incremental one builds on.
struct Base {
    dir: PathBuf,
    manifest: Manifest,
    manifest_sha256: String,
    /// The journal sequence number of its anchor: it holds the content
    /// recorded up to there.
    after: i64,
}

/// Step 1: the base's signed header (by the snapshot's key: the base is
/// verified whole when restored), its kind and server.
fn read_base(dir: &Path, key: &SecretKey, store: &Store) -> Result<Base> {
    let layout = Layout::discover(dir)?;
    let mut view = TrustView::from_keys(&[key.public()])?;
    let headers = verify_headers(&layout, &mut view, &mut Vec::new())?;
    let h1 = headers
        .iter()
        .find(|h| h.volume == Some(1))
        .ok_or_else(|| Error::verification("missing-volume", "no volume 1"))?;
    let m = h1.manifest.clone();
    rule_is_snapshot(&m, &h1.dir)?;
    rule_base_of_this_server(&m, &h1.dir, &store.info().server_id.to_string())?;
    let anchor: Anchor = m.to_anchor.parse()?;
    Ok(Base {
        dir: dir.to_path_buf(),
        manifest: m,
        manifest_sha256: h1.manifest_sha256.clone(),
        after: anchor.seq,
    })
}

/// Rule (`[snapshot-base-mismatch]`): an incremental snapshot's base is a
/// snapshot of this server.
fn rule_base_of_this_server(m: &Manifest, dir: &Path, server_id: &str) -> Result<()> {
    if !m.source.server_id.eq_ignore_ascii_case(server_id) {
        return Err(Error::verification(
            "snapshot-base-mismatch",
            format!(
                "{}/{MANIFEST}: snapshot of server {} ({}), not of this server ({server_id})",
                dir.display(),
                m.source.name,
                m.source.server_id
            ),
        ));
    }
    Ok(())
}

/// Rule (`[snapshot-base-mismatch]`): the store holds, up to the base's
/// anchor, exactly the content the base's chain holds (the same content
/// set digest) and has not gone back before that anchor: a base of another
/// history of this server (a store restored from an older snapshot and
/// changed since) would leave content out.
fn rule_base_is_this_history(b: &Base, facts: &crate::store::dr::CopyFacts) -> Result<()> {
    let want = b
        .manifest
        .snapshot
        .as_ref()
        .map(|s| s.content_set_sha256.as_str())
        .unwrap_or_default();
    let got = facts.content_set_sha256_upto.as_deref().unwrap_or_default();
    if b.after > facts.head || want != got {
        return Err(Error::verification(
            "snapshot-base-mismatch",
            format!(
                "{}/{MANIFEST}: this store's content up to the base's anchor {} is not the base's (another history of this server); write a full snapshot",
                b.dir.display(),
                b.manifest.to_anchor
            ),
        ));
    }
    Ok(())
}

/// `snapshot`: the whole store as a signed snapshot bundle at `opts.out`
/// (see the module documentation). Runs on any handle of the store,
/// read-only included: it takes no lock and blocks nothing.
pub fn snapshot(
    store: &Store,
    opts: &SnapshotOptions<'_>,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    check_snapshot_options(opts)?;
    if opts.out.exists() {
        return Err(Error::invalid(
            opts.out.display().to_string(),
            "already exists; choose a new snapshot folder",
        ));
    }
    let base = opts
        .base
        .map(|b| read_base(b, opts.key, store))
        .transpose()?;
    let (parent, name) = parent_and_name(opts.out)?;
    fs::create_dir_all(&parent).at(&parent)?;
    let mut partial = Partial {
        path: parent.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple())),
        armed: true,
    };
    fs::create_dir_all(&partial.path).at(&partial.path)?;
    let mut report = snapshot_into(store, opts, base.as_ref(), &partial.path, progress)?;
    fs::rename(&partial.path, opts.out).map_err(|e| Error::io(opts.out, e))?;
    partial.armed = false;
    sync_dir(&parent)?;
    report.path = opts.out.to_path_buf();
    Ok(report)
}

/// A folder path's parent (`.` for a bare name) and last component.
fn parent_and_name(path: &Path) -> Result<(PathBuf, String)> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(path.display().to_string(), "not a folder path"))?
        .to_string_lossy()
        .to_string();
    Ok((parent, name))
}

fn snapshot_into(
    store: &Store,
    opts: &SnapshotOptions<'_>,
    base: Option<&Base>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let vols = VolumeDirs {
        dir,
        multi: opts.volume_size.is_some(),
    };
    let vol1 = vols.of(1);
    fs::create_dir_all(&vol1).at(&vol1)?;

    // ---- 2. the database copy, and what it records
    let copy = dir.join(DATABASE_COPY);
    store.copy_database(&copy)?;
    let facts = crate::store::dr::read_copy(&copy, base.map(|b| b.after))?;
    if let Some(b) = base {
        rule_base_is_this_history(b, &facts)?;
    }

    // ---- 3. the database pack
    let copy_size = fs::metadata(&copy).at(&copy)?.len();
    progress.phase("database", Some(copy_size), "bytes");
    let (db_pack, db_size, db_sha256) =
        compress_database(&copy, &vol1.join(DATABASE_PACK), progress)?;
    fs::remove_file(&copy).at(&copy)?;
    progress.finish();

    // ---- 4. content files, then their index
    let content = facts.content;
    let Placed {
        placements,
        volumes,
        index,
        ..
    } = place_with_index(
        &content,
        opts.volume_size,
        db_pack.size,
        ContentLayout::Files,
    )?;
    let content_bytes: u64 = content.iter().map(|c| c.size).sum();
    progress.phase("content", Some(content_bytes), "bytes");
    let sources: Vec<PathBuf> = content
        .iter()
        .map(|f| store.content().path_of(&f.rel_path))
        .collect();
    let digests = write_content_files(&sources, &content, &placements, &vols, progress)?;
    progress.finish();
    let cjson = file_index(&content, &placements, Some(&digests))?;
    if cjson.len() != index.len() {
        return Err(Error::invalid(
            "content index",
            "its size changed once the digests were known; report this bug",
        ));
    }
    write_file(&vol1.join(CONTENT_ENTRY), &cjson)?;
    let mut files: VolumeFiles = BTreeMap::new();
    for (parts, d) in placements.iter().zip(&digests) {
        for (p, d) in parts.iter().zip(d) {
            files
                .entry(p.volume)
                .or_default()
                .push((p.entry.clone(), hex::encode(d), p.len));
        }
    }
    let db_pack_size = db_pack.size;
    let packs = vec![
        db_pack,
        PackEntry {
            volume: 1,
            name: CONTENT_ENTRY.to_string(),
            size: cjson.len() as u64,
            sha256: format::sha256_hex(&cjson),
        },
    ];

    // ---- 5. manifest, sums and signatures
    let server_id = store.info().server_id;
    let to_anchor = Anchor {
        server_id,
        seq: facts.head,
    }
    .to_string();
    let now = time::OffsetDateTime::now_utc();
    let counts = format::Counts {
        content_files: content.len() as u64,
        content_bytes,
        ..facts.counts.clone()
    };
    let manifest = Manifest {
        format: format::FORMAT.to_string(),
        version: format::VERSION_KINDS,
        bundle_id: uuid::Uuid::new_v4().to_string(),
        source: Source {
            server_id: server_id.to_string(),
            name: facts.name.clone(),
        },
        destination: SNAPSHOT_DESTINATION.to_string(),
        seq: base.map(|b| b.manifest.seq + 1).unwrap_or(1),
        prev_manifest_sha256: base.map(|b| b.manifest_sha256.clone()),
        prev_equivalent_sha256: Vec::new(),
        kind: BundleKind::Snapshot,
        from_anchor: base.map(|b| b.manifest.to_anchor.clone()),
        to_anchor: to_anchor.clone(),
        created: rfc3339(now)?,
        expires: rfc3339(now.checked_add(opts.expires).ok_or_else(|| {
            Error::bad_argument("expiry", "the end of the validity period is out of range")
        })?)?,
        signer: opts.key.public().id.to_string(),
        filters: Filters::default(),
        counts,
        volumes,
        packs,
        trust_statements: Vec::new(),
        report: None,
        snapshot: Some(SnapshotInfo {
            schema_version: facts.schema_version,
            database_size: db_size,
            database_sha256: db_sha256,
            store_content_files: facts.content_files,
            store_content_bytes: facts.content_bytes,
            content_set_sha256: facts.content_set_sha256.clone(),
            computers: facts.computers,
        }),
    };
    let (manifest_sha256, bytes_written) =
        write_signed_headers(&vols, &manifest, &files, opts.key, opts.volume_size)?;
    Ok(SnapshotReport {
        path: dir.to_path_buf(),
        bundle_id: manifest.bundle_id,
        seq: manifest.seq,
        incremental: base.is_some(),
        base_manifest_sha256: manifest.prev_manifest_sha256,
        server_id: server_id.to_string(),
        server_name: facts.name,
        to_anchor,
        volumes,
        database_bytes: db_size,
        database_pack_bytes: db_pack_size,
        computers: facts.computers,
        content_files: content.len() as u64,
        content_bytes,
        store_content_files: facts.content_files,
        store_content_bytes: facts.content_bytes,
        bytes_written,
        manifest_sha256,
    })
}

/// Step 3: the database copy streamed through zstd into the pack, hashed
/// on both sides, fsynced. Returns the pack's entry and the database's
/// size and SHA-256.
fn compress_database(
    copy: &Path,
    pack: &Path,
    progress: &dyn Progress,
) -> Result<(PackEntry, u64, String)> {
    let input = File::open(copy).at(copy)?;
    let mut reader = HashingReader::new(BufReader::with_capacity(COPY_BUF, input));
    let out = File::create(pack).at(pack)?;
    let hw = HashingWriter::new(BufWriter::with_capacity(COPY_BUF, out));
    let mut enc = zstd::stream::write::Encoder::new(hw, ZSTD_LEVEL).at(pack)?;
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(copy, e)),
        };
        enc.write_all(&buf[..n]).at(pack)?;
        progress.advance(n as u64);
    }
    let hw = enc.finish().at(pack)?;
    let (mut bw, sha256, size) = hw.into_parts();
    bw.flush().at(pack)?;
    bw.get_ref().sync_all().at(pack)?;
    let (db_sha256, db_size) = reader.finish();
    Ok((
        PackEntry {
            volume: 1,
            name: DATABASE_PACK.to_string(),
            size,
            sha256,
        },
        db_size,
        db_sha256,
    ))
}

// ------------------------------------------------------------- restore

pub struct RestoreOptions<'a> {
    /// The snapshot to restore (the newest of its chain).
    pub snapshot: &'a Path,
    /// Its bases, when it is incremental (any order).
    pub bases: &'a [PathBuf],
    /// The keys whose snapshots are accepted.
    pub trust: &'a [PublicKey],
    /// The store folder to create: absent or empty.
    pub into: &'a Path,
    pub allow_expired: bool,
}

/// One snapshot of the chain restored.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    pub path: PathBuf,
    pub bundle_id: String,
    pub seq: u64,
    pub created: String,
    pub manifest_sha256: String,
    pub content_files: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub path: PathBuf,
    pub server_id: String,
    pub server_name: String,
    /// The restored store's anchor (the snapshot's `to_anchor`).
    pub anchor: String,
    /// The snapshots restored from, oldest first.
    pub chain: Vec<ChainLink>,
    pub database_bytes: u64,
    pub computers: u64,
    pub content_files: u64,
    pub content_bytes: u64,
    pub expired_but_allowed: bool,
    /// The checks that passed, in order.
    pub checks: Vec<String>,
}

/// A snapshot whose headers, kind, validity and content index were
/// checked.
struct Checked {
    /// The folder given.
    path: PathBuf,
    manifest: Manifest,
    manifest_sha256: String,
    info: SnapshotInfo,
    /// Volume folders by number.
    volumes: BTreeMap<u32, PathBuf>,
    index: Vec<FileRecord>,
    expired: bool,
}

/// Step 2, per snapshot: signed headers of every volume (by a trusted
/// key), the kind, the validity period, the content index and each
/// volume's content files against it. Hashes nothing else (step 3 does,
/// as it copies).
fn check_snapshot(
    dir: &Path,
    trust: &[PublicKey],
    allow_expired: bool,
    checks: &mut Vec<String>,
) -> Result<Checked> {
    let layout = Layout::discover(dir)?;
    let mut view = TrustView::from_keys(trust)?;
    let headers = verify_headers(&layout, &mut view, checks)?;
    let h1 = headers
        .iter()
        .find(|h| h.volume == Some(1))
        .ok_or_else(|| Error::verification("missing-volume", "no volume 1"))?;
    let m = h1.manifest.clone();
    rule_is_snapshot(&m, &h1.dir)?;
    let info = m.snapshot.clone().ok_or_else(|| {
        Error::verification(
            "malformed-manifest",
            format!("{}/{MANIFEST}: no \"snapshot\" object", h1.dir.display()),
        )
    })?;
    let expired =
        format::check_validity_period(&m, time::OffsetDateTime::now_utc(), allow_expired)?;
    let index = format::read_file_index(&h1.dir, &m)?;
    let mut volumes = BTreeMap::new();
    for h in headers.iter() {
        if let Some(v) = h.volume {
            format::check_volume_files(h, v, &index)?;
            volumes.insert(v, h.dir.clone());
        }
    }
    checks.push(format!(
        "{}: snapshot {} seq {} of {} ({}); {}; content index of {} file(s)",
        dir.display(),
        m.bundle_id,
        m.seq,
        m.source.name,
        m.source.server_id,
        if expired {
            format!("EXPIRED {} (allowed by --allow-expired)", m.expires)
        } else {
            "within its validity period".to_string()
        },
        index.len()
    ));
    Ok(Checked {
        path: dir.to_path_buf(),
        manifest_sha256: h1.manifest_sha256.clone(),
        manifest: m,
        info,
        volumes,
        index,
        expired,
    })
}

/// The manifest file of a checked snapshot (named in chain failures).
fn manifest_file(c: &Checked) -> String {
    c.volumes
        .get(&1)
        .unwrap_or(&c.path)
        .join(MANIFEST)
        .display()
        .to_string()
}

/// Rule (chain): the snapshots given form one chain ending at the newest.
/// Each incremental snapshot names its base by manifest digest
/// (`prev_manifest_sha256`): that base must be among those given
/// (`[snapshot-base-missing]`) and be of the same server, with the seq
/// before it and the anchor it starts from (`[snapshot-base-mismatch]`);
/// every base given is in the chain (`[snapshot-base-mismatch]`). Returns
/// the chain, oldest (a full snapshot) first.
fn order_chain(newest: Checked, mut pool: Vec<Checked>) -> Result<Vec<Checked>> {
    let mut chain = vec![newest];
    while let Some(cur) = chain.last() {
        let Some(prev) = cur.manifest.prev_manifest_sha256.clone() else {
            break;
        };
        let Some(pos) = pool.iter().position(|b| b.manifest_sha256 == prev) else {
            if pool.is_empty() {
                return Err(Error::verification(
                    "snapshot-base-missing",
                    format!(
                        "{}: snapshot {} (seq {}) is incremental: its base is the snapshot whose manifest has SHA-256 {prev} (seq {}), which was not given; give it with --base DIR",
                        manifest_file(cur),
                        cur.manifest.bundle_id,
                        cur.manifest.seq,
                        cur.manifest.seq.saturating_sub(1)
                    ),
                ));
            }
            let given: Vec<String> = pool
                .iter()
                .map(|b| format!("{} has {}", manifest_file(b), b.manifest_sha256))
                .collect();
            return Err(Error::verification(
                "snapshot-base-mismatch",
                format!(
                    "{}: snapshot {} (seq {}) names base manifest SHA-256 {prev}, and no base given is it ({})",
                    manifest_file(cur),
                    cur.manifest.bundle_id,
                    cur.manifest.seq,
                    given.join("; ")
                ),
            ));
        };
        let base = pool.remove(pos);
        rule_base_links(cur, &base)?;
        chain.push(base);
    }
    if let Some(extra) = pool.first() {
        return Err(Error::verification(
            "snapshot-base-mismatch",
            format!(
                "{}: snapshot {} is not a base in the chain of {}",
                manifest_file(extra),
                extra.manifest.bundle_id,
                chain
                    .first()
                    .map(|c| c.path.display().to_string())
                    .unwrap_or_default()
            ),
        ));
    }
    chain.reverse();
    Ok(chain)
}

/// Rule (`[snapshot-base-mismatch]`): a base whose manifest digest an
/// incremental snapshot names is of the same server, has the seq before
/// it, and ends at the anchor it starts from.
fn rule_base_links(cur: &Checked, base: &Checked) -> Result<()> {
    let (m, b) = (&cur.manifest, &base.manifest);
    let ok = m.source.server_id.eq_ignore_ascii_case(&b.source.server_id)
        && b.seq + 1 == m.seq
        && m.from_anchor.as_deref() == Some(b.to_anchor.as_str());
    if !ok {
        return Err(Error::verification(
            "snapshot-base-mismatch",
            format!(
                "{}: base seq {} of {} ending at {} does not precede snapshot seq {} of {} starting at {}",
                manifest_file(base),
                b.seq,
                b.source.server_id,
                b.to_anchor,
                m.seq,
                m.source.server_id,
                m.from_anchor.as_deref().unwrap_or("-")
            ),
        ));
    }
    Ok(())
}

/// A content file to restore: its record and the volumes of its snapshot.
struct ContentJob<'a> {
    rec: &'a FileRecord,
    volumes: &'a BTreeMap<u32, PathBuf>,
}

/// The chain's content files by upper-case SHA-1.
/// Rule (`[malformed-content-index]`): a content file is in one snapshot
/// of the chain only (an incremental snapshot carries only what its bases
/// do not hold).
fn chain_content(chain: &[Checked]) -> Result<BTreeMap<String, ContentJob<'_>>> {
    let mut out: BTreeMap<String, ContentJob<'_>> = BTreeMap::new();
    for c in chain {
        for rec in &c.index {
            let key = rec.sha1.to_ascii_uppercase();
            if out.contains_key(&key) {
                return Err(Error::verification(
                    "malformed-content-index",
                    format!(
                        "{}: content file {} is also in a base of snapshot {}",
                        manifest_file(c),
                        rec.path,
                        c.manifest.bundle_id
                    ),
                ));
            }
            out.insert(
                key,
                ContentJob {
                    rec,
                    volumes: &c.volumes,
                },
            );
        }
    }
    Ok(out)
}

/// Rule (`[snapshot-content-mismatch]`): the chain holds exactly the
/// content set the newest snapshot's store held (its
/// `content_set_sha256`).
fn rule_content_set(newest: &Checked, content: &BTreeMap<String, ContentJob<'_>>) -> Result<()> {
    let got = crate::store::dr::content_set_digest(content.keys().map(String::as_str));
    if got != newest.info.content_set_sha256 {
        return Err(Error::verification(
            "snapshot-content-mismatch",
            format!(
                "{}: the chain holds {} content file(s) whose set is not the one the snapshot's store held ({} file(s)); a base is missing or of another chain",
                manifest_file(newest),
                content.len(),
                newest.info.store_content_files
            ),
        ));
    }
    Ok(())
}

/// Rule: the restore target does not exist or is an empty folder, and is
/// not inside a store (as `init`'s).
fn check_target(into: &Path) -> Result<()> {
    match fs::symlink_metadata(into) {
        Ok(m) if m.is_dir() => {
            if fs::read_dir(into).at(into)?.next().is_some() {
                return Err(Error::invalid(
                    into.display().to_string(),
                    "is not empty; restore into a new or empty folder",
                ));
            }
        }
        Ok(_) => return Err(Error::NotADirectory(into.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(into, e)),
    }
    crate::store::dr::check_restore_target(into)
}

/// Removes the temporary folders an interrupted restore into `name` left
/// in `parent`; refuses while one is locked (a restore running).
fn remove_stale_builds(parent: &Path, name: &str, into: &Path) -> Result<()> {
    let prefix = format!(".{name}.restore-");
    let Ok(rd) = fs::read_dir(parent) else {
        return Ok(());
    };
    for e in rd {
        let e = e.at(parent)?;
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(&prefix)
            || !e.file_type().at(&path)?.is_dir()
        {
            continue;
        }
        match crate::store::dr::lock_folder(&path) {
            Ok(lock) => {
                drop(lock);
                fs::remove_dir_all(&path).at(&path)?;
            }
            Err(Error::Locked { .. }) => {
                return Err(Error::invalid(
                    into.display().to_string(),
                    format!(
                        "another restore into it is running ({} is locked)",
                        path.display()
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `restore`: verifies a snapshot (and its bases) and rebuilds the store
/// at `opts.into` (see the module documentation).
pub fn restore(opts: &RestoreOptions<'_>, progress: &dyn Progress) -> Result<RestoreReport> {
    // ---- 1. the target
    check_target(opts.into)?;
    let (parent, name) = parent_and_name(opts.into)?;

    // ---- 2. every snapshot, the chain, the content set
    let mut checks = Vec::new();
    let newest = check_snapshot(opts.snapshot, opts.trust, opts.allow_expired, &mut checks)?;
    let bases = opts
        .bases
        .iter()
        .map(|b| check_snapshot(b, opts.trust, opts.allow_expired, &mut checks))
        .collect::<Result<Vec<_>>>()?;
    let chain = order_chain(newest, bases)?;
    let Some(newest) = chain.last() else {
        return Err(Error::verification("missing-volume", "no snapshot"));
    };
    checks.push(format!(
        "chain of {} snapshot(s): each incremental one follows its base",
        chain.len()
    ));
    let content = chain_content(&chain)?;
    rule_content_set(newest, &content)?;
    checks.push(format!(
        "the chain holds the {} content file(s) the store held",
        content.len()
    ));
    let content_bytes: u64 = content.values().map(|j| j.rec.size).sum();
    fs::create_dir_all(&parent).at(&parent)?;
    crate::store::content::check_free_space(
        &parent,
        newest.info.database_size.saturating_add(content_bytes),
        "the restored store",
    )?;

    // ---- 3. the temporary folder: database, content
    remove_stale_builds(&parent, &name, opts.into)?;
    let tmp = parent.join(format!(".{name}.restore-{}", uuid::Uuid::new_v4().simple()));
    let mut guard = Partial {
        path: tmp.clone(),
        armed: true,
    };
    fs::create_dir_all(&tmp).at(&tmp)?;
    let lock = crate::store::dr::lock_folder(&tmp)?;
    for sub in [CONTENT_DIR, STAGING_DIR] {
        fs::create_dir_all(tmp.join(sub)).at(tmp.join(sub))?;
    }
    progress.phase("database", Some(newest.info.database_size), "bytes");
    restore_database(newest, &tmp.join(DB_FILE), progress)?;
    progress.finish();
    checks.push("database pack and database digests match".into());
    crate::failpoint::hit("restore-after-database");
    progress.phase("content", Some(content_bytes), "bytes");
    restore_content(&content, &tmp.join(CONTENT_DIR), progress)?;
    progress.finish();
    checks.push(format!(
        "every content file's SHA-256 (and SHA-1) matches; {} restored",
        content.len()
    ));

    // ---- 4. the restored database
    let facts = crate::store::dr::open_restored(&tmp)?;
    rule_restored_identity(newest, &facts)?;
    rule_restored_content(newest, &facts, &content)?;
    checks.push(
        "the restored database has the snapshot's server id and anchor and records exactly its content"
            .into(),
    );
    sync_dir(&tmp.join(STAGING_DIR))?;
    sync_dir(&tmp)?;
    drop(lock);

    // ---- 5. into place
    crate::failpoint::hit("restore-before-rename");
    move_into_place(&tmp, opts.into)?;
    guard.armed = false;
    sync_dir(&parent)?;
    Ok(RestoreReport {
        path: opts.into.to_path_buf(),
        server_id: facts.server_id,
        server_name: facts.name,
        anchor: newest.manifest.to_anchor.clone(),
        chain: chain
            .iter()
            .map(|c| ChainLink {
                path: c.path.clone(),
                bundle_id: c.manifest.bundle_id.clone(),
                seq: c.manifest.seq,
                created: c.manifest.created.clone(),
                manifest_sha256: c.manifest_sha256.clone(),
                content_files: c.index.len() as u64,
            })
            .collect(),
        database_bytes: newest.info.database_size,
        computers: newest.info.computers,
        content_files: content.len() as u64,
        content_bytes,
        expired_but_allowed: chain.iter().any(|c| c.expired),
        checks,
    })
}

/// Step 5: the built folder takes NEWDIR's place (on Unix a rename over an
/// empty folder replaces it at once; elsewhere the empty folder is removed
/// first).
fn move_into_place(tmp: &Path, into: &Path) -> Result<()> {
    #[cfg(not(unix))]
    {
        if into.is_dir() {
            fs::remove_dir(into).at(into)?;
        }
    }
    fs::rename(tmp, into).map_err(|e| Error::io(into, e))
}

/// Step 3: the newest snapshot's database pack decompressed into `to`
/// (at most one byte more than the manifest's size), fsynced. Rules
/// (`[hash-mismatch]`): the pack has the SHA-256 and size its signed
/// manifest gives (checked first, over every byte of the pack), and
/// decompresses to the database size and SHA-256 of the `snapshot`
/// object; a signed pack that zstd cannot read is `[malformed-pack]`.
fn restore_database(c: &Checked, to: &Path, progress: &dyn Progress) -> Result<()> {
    let pack = c
        .manifest
        .packs
        .iter()
        .find(|p| p.name == DATABASE_PACK)
        .ok_or_else(|| {
            Error::verification(
                "missing-file",
                format!("{}: no {DATABASE_PACK}", manifest_file(c)),
            )
        })?;
    let dir = c.volumes.get(&1).unwrap_or(&c.path);
    let path = dir.join(DATABASE_PACK);
    let file = File::open(&path).at(&path)?;
    let mut hr = HashingReader::new(BufReader::with_capacity(COPY_BUF, file));
    let out = File::create(to).at(to)?;
    let mut hw = HashingWriter::new(BufWriter::with_capacity(COPY_BUF, out));
    let limit = c.info.database_size.saturating_add(1);
    let decoded: std::result::Result<(), io::Error> = {
        let mut buf = vec![0u8; COPY_BUF];
        match zstd::stream::read::Decoder::new(&mut hr) {
            Err(e) => Err(e),
            Ok(mut dec) => loop {
                let room = limit.saturating_sub(hw.count()).min(COPY_BUF as u64) as usize;
                if room == 0 {
                    break Ok(());
                }
                let n = match dec.read(&mut buf[..room]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(e),
                };
                hw.write_all(&buf[..n]).at(to)?;
                progress.advance(n as u64);
            },
        }
    };
    hr.drain().at(&path)?;
    let (got, size) = hr.finish();
    if got != pack.sha256 || size != pack.size {
        return Err(Error::verification(
            "hash-mismatch",
            format!(
                "{}: SHA-256 {got} ({size} bytes), the manifest says {} ({} bytes)",
                path.display(),
                pack.sha256,
                pack.size
            ),
        ));
    }
    decoded.map_err(|e| {
        Error::verification(
            "malformed-pack",
            format!("{}: not a zstd stream: {e}", path.display()),
        )
    })?;
    let (mut bw, db_sha256, db_size) = hw.into_parts();
    bw.flush().at(to)?;
    bw.get_ref().sync_all().at(to)?;
    if db_sha256 != c.info.database_sha256 || db_size != c.info.database_size {
        return Err(Error::verification(
            "hash-mismatch",
            format!(
                "{}: decompresses to {db_size} bytes with SHA-256 {db_sha256}; the manifest says {} bytes, {}",
                path.display(),
                c.info.database_size,
                c.info.database_sha256
            ),
        ));
    }
    Ok(())
}

/// Step 3: every content file of the chain copied into `root` (files in
/// parallel), then the folders fsynced.
fn restore_content(
    content: &BTreeMap<String, ContentJob<'_>>,
    root: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let jobs: Vec<&ContentJob<'_>> = content.values().collect();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for j in &jobs {
        if let Some(d) = root.join(&j.rec.path).parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in &dirs {
        fs::create_dir_all(d).at(d)?;
    }
    run_parallel(&jobs, crate::airgap::files::copy_workers(), |j| {
        restore_file(j, root, progress)?;
        crate::failpoint::hit("restore-mid-content");
        Ok(())
    })?;
    for d in &dirs {
        sync_dir(d)?;
    }
    sync_dir(root)
}

/// One content file, from its bundle file or parts: each part read once,
/// hashed, written, fsynced. Rules: each bundle file has the SHA-256 its
/// signed SHA256SUMS lists and the size the content index gives
/// (`[hash-mismatch]`, `[size-mismatch]`; at most one byte more is read);
/// the whole file has the record's size, SHA-256 and SHA-1 (its name)
/// (`[hash-mismatch]`).
fn restore_file(j: &ContentJob<'_>, root: &Path, progress: &dyn Progress) -> Result<()> {
    let rec = j.rec;
    let dest = root.join(&rec.path);
    let mut out = File::create(&dest).at(&dest)?;
    let mut whole = Hashers::new(true);
    let mut buf = vec![0u8; COPY_BUF];
    for p in &rec.parts {
        let dir = j.volumes.get(&p.volume).ok_or_else(|| {
            Error::verification(
                "missing-volume",
                format!("{}: volume {} is missing", rec.path, p.volume),
            )
        })?;
        let path = dir.join(&p.file);
        let mut f = File::open(&path).at(&path)?;
        let mut part = Hashers::new(false);
        copy_hashed(
            &mut f,
            Some(&mut out),
            p.size.saturating_add(1),
            &mut [&mut part, &mut whole],
            &mut buf,
            &|n| progress.advance(n),
        )
        .at(&path)?;
        let d = part.finish();
        let got = hex::encode(d.sha256);
        if got != p.sha256 {
            return Err(Error::verification(
                "hash-mismatch",
                format!(
                    "{}: SHA-256 {got}, SHA256SUMS says {}",
                    path.display(),
                    p.sha256
                ),
            ));
        }
        if d.size != p.size {
            return Err(Error::verification(
                "size-mismatch",
                format!(
                    "{}: {} bytes, the content index says {}",
                    path.display(),
                    d.size,
                    p.size
                ),
            ));
        }
    }
    out.sync_all().at(&dest)?;
    let d = whole.finish();
    let sha1 = d.sha1.map(hex::encode_upper).unwrap_or_default();
    if d.size != rec.size
        || hex::encode(d.sha256) != rec.sha256
        || !sha1.eq_ignore_ascii_case(&rec.sha1)
    {
        return Err(Error::verification(
            "hash-mismatch",
            format!(
                "content file {}: {} bytes, SHA-1 {sha1}, SHA-256 {}; the content index says {} bytes, {}, {}",
                rec.path,
                d.size,
                hex::encode(d.sha256),
                rec.size,
                rec.sha1,
                rec.sha256
            ),
        ));
    }
    Ok(())
}

/// Rule (`[snapshot-database-mismatch]`): the restored database is the
/// server the manifest names, at the manifest's anchor.
fn rule_restored_identity(c: &Checked, facts: &crate::store::dr::RestoredFacts) -> Result<()> {
    let anchor = crate::store::journal::parse_server_id(&facts.server_id).map(|server_id| {
        Anchor {
            server_id,
            seq: facts.head,
        }
        .to_string()
    });
    if !facts
        .server_id
        .eq_ignore_ascii_case(&c.manifest.source.server_id)
        || anchor.as_deref() != Some(c.manifest.to_anchor.as_str())
    {
        return Err(Error::verification(
            "snapshot-database-mismatch",
            format!(
                "{}: the database is server {} at {}, the manifest says {} at {}",
                manifest_file(c),
                facts.server_id,
                anchor.as_deref().unwrap_or("-"),
                c.manifest.source.server_id,
                c.manifest.to_anchor
            ),
        ));
    }
    Ok(())
}

/// Rule (`[snapshot-content-mismatch]`): the restored database records
/// exactly the chain's content files, each with its SHA-256, size and
/// path.
fn rule_restored_content(
    c: &Checked,
    facts: &crate::store::dr::RestoredFacts,
    content: &BTreeMap<String, ContentJob<'_>>,
) -> Result<()> {
    for row in &facts.content {
        let ok = content.get(&row.sha1).is_some_and(|j| {
            j.rec.sha256 == row.sha256 && j.rec.size == row.size && j.rec.path == row.rel_path
        });
        if !ok {
            return Err(Error::verification(
                "snapshot-content-mismatch",
                format!(
                    "{}: the database records content file {} that the chain does not hold as recorded",
                    manifest_file(c),
                    row.rel_path
                ),
            ));
        }
    }
    if facts.content.len() != content.len() {
        return Err(Error::verification(
            "snapshot-content-mismatch",
            format!(
                "{}: the chain holds {} content file(s), the database records {}",
                manifest_file(c),
                content.len(),
                facts.content.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_manifest() -> Manifest {
        Manifest {
            format: format::FORMAT.into(),
            version: format::VERSION_KINDS,
            bundle_id: "b".into(),
            source: Source {
                server_id: "s".into(),
                name: "n".into(),
            },
            destination: SNAPSHOT_DESTINATION.into(),
            seq: 1,
            prev_manifest_sha256: None,
            prev_equivalent_sha256: vec![],
            kind: BundleKind::Snapshot,
            from_anchor: None,
            to_anchor: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            expires: "2036-01-01T00:00:00Z".into(),
            signer: "0000000000000000".into(),
            filters: Filters::default(),
            counts: format::Counts::default(),
            volumes: 1,
            packs: vec![
                PackEntry {
                    volume: 1,
                    name: DATABASE_PACK.into(),
                    size: 1,
                    sha256: "0".repeat(64),
                },
                PackEntry {
                    volume: 1,
                    name: CONTENT_ENTRY.into(),
                    size: 2,
                    sha256: "1".repeat(64),
                },
            ],
            trust_statements: vec![],
            report: None,
            snapshot: Some(SnapshotInfo {
                schema_version: 8,
                database_size: 4096,
                database_sha256: "2".repeat(64),
                store_content_files: 0,
                store_content_bytes: 0,
                content_set_sha256: "3".repeat(64),
                computers: 0,
            }),
        }
    }

    fn rule(m: &Manifest) -> &'static str {
        match format::parse_manifest(&serde_json::to_vec(m).unwrap(), Path::new(".")) {
            Err(Error::Verification { rule, .. }) => rule,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn snapshot_manifests_round_trip_and_their_rules_hold() {
        let m = snapshot_manifest();
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(format::parse_manifest(&bytes, Path::new(".")).unwrap(), m);
        let mut inc = m.clone();
        inc.seq = 2;
        inc.prev_manifest_sha256 = Some("4".repeat(64));
        inc.from_anchor = Some("a".into());
        format::parse_manifest(&serde_json::to_vec(&inc).unwrap(), Path::new(".")).unwrap();

        let mut v3 = m.clone();
        v3.version = format::VERSION_FILES;
        assert_eq!(rule(&v3), "malformed-manifest");
        let mut no_info = m.clone();
        no_info.snapshot = None;
        assert_eq!(rule(&no_info), "malformed-manifest");
        let mut data = m.clone();
        data.kind = BundleKind::Full;
        data.version = format::VERSION_FILES;
        assert_eq!(rule(&data), "malformed-manifest");
        let mut dest = m.clone();
        dest.destination = "plant".into();
        assert_eq!(rule(&dest), "malformed-manifest");
        let mut half = inc.clone();
        half.from_anchor = None;
        assert_eq!(rule(&half), "malformed-manifest");
        let mut packs = m.clone();
        packs.packs.swap(0, 1);
        assert_eq!(rule(&packs), "malformed-manifest");
        let mut trust = m.clone();
        trust.trust_statements = vec!["trust/0001.json".into()];
        assert_eq!(rule(&trust), "malformed-manifest");
        let mut digest = m.clone();
        if let Some(s) = digest.snapshot.as_mut() {
            s.database_sha256 = "A".repeat(64);
        }
        assert_eq!(rule(&digest), "malformed-manifest");
        // A data bundle may not say version 4.
        let mut v4_data = m;
        v4_data.kind = BundleKind::Full;
        v4_data.snapshot = None;
        assert_eq!(rule(&v4_data), "malformed-manifest");
    }

    #[test]
    fn the_content_set_digest_is_over_sorted_upper_case_lines() {
        let d = crate::store::dr::content_set_digest(["0A", "FF"].into_iter());
        assert_eq!(d, format::sha256_hex(b"0A\nFF\n"));
        assert_eq!(
            crate::store::dr::content_set_digest(std::iter::empty()),
            format::sha256_hex(b"")
        );
    }
}
