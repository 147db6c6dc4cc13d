//! `export`: writes the store's replicated state (or what changed since an
//! anchor) as a signed bundle, per docs/bundle-format.md.
//!
//! The export runs under the store's writer lock inside one read
//! transaction, so the bundle is a consistent snapshot; it is written to a
//! `.partial` folder beside `--out` and renamed into place only when
//! complete and signed, inside the transaction that records it in the
//! export ledger (per destination): a failed export leaves neither the
//! bundle nor a ledger trace, so the next one repeats it. (A crash between
//! the rename and the commit can leave a complete bundle the ledger does not
//! know; exporting again makes another bundle with the same seq, and the
//! importer takes whichever arrives first and refuses the other as a fork.)
//!
//! Steps (`export_into`):
//! 1. Where the bundle attaches to the destination's chain: full or
//!    incremental, its seq, the link it follows (`chain_position`).
//! 2. One read snapshot (`store::snapshot`): the journal head, the queued
//!    trust statements, the scope, the state and the content to send
//!    (`read_snapshot`).
//! 3. Volume 1: the trust statement files, the metadata pack, the content
//!    placement over volumes (and the space `content.json` needs).
//! 4. The content files, copied from the content store in parallel, each
//!    byte read and hashed once and checked against the store's record
//!    (`write_content_files`); then `content.json`. (Format 1, kept for
//!    tests of its reader: one tar pack per volume.)
//! 5. The manifest, SHA256SUMS and signature of every volume (and of the
//!    top level of a multi-volume bundle).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::airgap::format::{
    self, BundleKind, CONTENT_ENTRY, ContentMode, ContentRecord, Counts, Filters, HashingWriter,
    MANIFEST, METADATA_PACK, Manifest, PackEntry, PartRecord, REVISIONS_DIR, STATE_ENTRY, SUMS,
    SUMS_SIG, Source, State, TRUST_DIR,
};
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::content::sync_dir;
use crate::store::journal::Anchor;
use crate::store::ledgers::{ExportLink, ExportRecord};
use crate::store::sites::ReceiptPlan;
use crate::store::snapshot::{ContentScope, ContentToSend, ExportSnapshot, JournalRange};

pub use crate::store::snapshot::ContentPlan;
use crate::store::trust::QueuedRow;
use crate::trust::SecretKey;

pub use crate::store::ledgers::ExportedLink;

pub use crate::model::units::{MIN_PART, MIN_VOLUME_SIZE, VOLUME_RESERVE};
const TAR_BLOCK: u64 = 512;
const TAR_END: u64 = 1024;

pub struct ExportOptions<'a> {
    pub out: &'a Path,
    pub destination: &'a str,
    pub full: bool,
    /// Continue from the exported link(s) that ended at this anchor (after
    /// bundles were lost on the way) instead of the chain's last link.
    pub since: Option<Anchor>,
    /// Write an incremental bundle even when it has nothing to carry.
    pub allow_empty: bool,
    pub filters: Filters,
    /// Split into volumes of at most this many bytes (at least
    /// [`MIN_VOLUME_SIZE`]).
    pub volume_size: Option<u64>,
    /// Validity period, within [`crate::model::units::MIN_EXPIRES`] and
    /// [`crate::model::units::MAX_EXPIRES`].
    pub expires: time::Duration,
    pub key: &'a SecretKey,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub bundle_id: String,
    pub seq: u64,
    pub kind: BundleKind,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub destination: String,
    pub volumes: u32,
    pub counts: Counts,
    pub bytes_written: u64,
    /// The packs and content files it carries (`Manifest::payload_bytes`:
    /// the size both ledgers record).
    pub payload_bytes: u64,
    /// The end of its validity period (RFC 3339).
    pub expires: String,
    pub manifest_sha256: String,
    /// The queued trust statements the bundle carries, in order.
    pub trust_statements: Vec<crate::trust::StatementSummary>,
    /// SHA-1s of the content files the bundle carries (for the ledger).
    #[serde(skip)]
    pub sent_sha1: Vec<[u8; 20]>,
    /// How the content was chosen (new, re-sent, skipped: receipts).
    pub content_plan: ContentPlan,
    /// The sites whose latest receipts the content follows.
    pub receipt_sites: Vec<String>,
}

/// Where a new bundle attaches to its destination's chain.
struct Attach {
    seq: u64,
    prev: Option<String>,
    /// Manifests of the other links that ended at the `--since` anchor.
    equivalents: Vec<String>,
    /// Trust statements after this one travel.
    stmt_after: i64,
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> Result<String> {
    t.replace_nanosecond(0)
        .map_err(|e| Error::invalid("time", e.to_string()))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::invalid("time", e.to_string()))
}

/// Rule: a destination name is 1-128 characters, none of them a control
/// character.
pub fn check_destination_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(Error::bad_argument(
            "destination",
            format!("{name:?} must be 1-128 printable characters"),
        ));
    }
    Ok(())
}

/// Rule: the options are in range before any work (the command line checks
/// the same while parsing; this guards other callers).
fn check_options(opts: &ExportOptions<'_>) -> Result<()> {
    check_destination_name(opts.destination)?;
    check_expires(opts.expires)?;
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

/// Rule: the validity period is within the range `--expires` takes.
pub(crate) fn check_expires(expires: time::Duration) -> Result<()> {
    use crate::model::units::{MAX_EXPIRES, MIN_EXPIRES, duration_text};
    if expires < MIN_EXPIRES || expires > MAX_EXPIRES {
        return Err(Error::bad_argument(
            "expiry",
            format!(
                "{} s is out of range: allowed between {} and {}",
                expires.whole_seconds(),
                duration_text(MIN_EXPIRES),
                duration_text(MAX_EXPIRES)
            ),
        ));
    }
    Ok(())
}

/// Where each content part goes: volume, tar entry name, length.
pub(crate) struct Placement {
    pub(crate) volume: u32,
    pub(crate) entry: String,
    pub(crate) len: u64,
}

fn padded(n: u64) -> u64 {
    n.div_ceil(TAR_BLOCK) * TAR_BLOCK
}

/// Splits content over volumes so that each volume stays within
/// `volume_size` (tar headers, padding and end blocks included). Returns the
/// placements per file and the number of volumes.
fn place_content(
    files: &[ContentToSend],
    volume_size: Option<u64>,
    first_volume_used: u64,
) -> Result<(Vec<Vec<Placement>>, u32)> {
    let Some(cap) = volume_size else {
        let all = files
            .iter()
            .map(|f| {
                vec![Placement {
                    volume: 1,
                    entry: f.rel_path.clone(),
                    len: f.size,
                }]
            })
            .collect();
        return Ok((all, 1));
    };
    let cap = cap.saturating_sub(VOLUME_RESERVE);
    let mut volume = 1u32;
    let mut used = first_volume_used;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let mut parts = Vec::new();
        let mut remaining = f.size;
        loop {
            let space = cap.saturating_sub(used + TAR_END + TAR_BLOCK) / TAR_BLOCK * TAR_BLOCK;
            let fits_whole = remaining <= space;
            if !fits_whole && (space < MIN_PART || space == 0) {
                if used == 0 {
                    return Err(Error::invalid(
                        "volume size",
                        format!("{} is too small to hold any content", cap + VOLUME_RESERVE),
                    ));
                }
                volume += 1;
                used = 0;
                continue;
            }
            let len = remaining.min(space);
            parts.push(Placement {
                volume,
                entry: String::new(),
                len,
            });
            used += TAR_BLOCK + padded(len);
            remaining -= len;
            if remaining == 0 {
                break;
            }
        }
        let n = parts.len();
        for (i, p) in parts.iter_mut().enumerate() {
            p.entry = if n == 1 {
                f.rel_path.clone()
            } else {
                format!("{}.part{:04}", f.rel_path, i + 1)
            };
        }
        out.push(parts);
    }
    Ok((out, volume))
}

/// `content.json` for a placement.
fn content_index(files: &[ContentToSend], placements: &[Vec<Placement>]) -> Result<Vec<u8>> {
    let index: Vec<ContentRecord> = files
        .iter()
        .zip(placements)
        .map(|(f, parts)| ContentRecord {
            sha1: hex::encode_upper(f.sha1),
            sha256: hex::encode(f.sha256),
            size: f.size,
            path: f.rel_path.clone(),
            parts: parts
                .iter()
                .map(|p| PartRecord {
                    pack: content_pack_name(p.volume),
                    entry: p.entry.clone(),
                    size: p.len,
                })
                .collect(),
        })
        .collect();
    serde_json::to_vec(&index).map_err(|e| Error::invalid("content index", e.to_string()))
}

/// An upper bound on the size of `content.json` for any placement of
/// `files`: every part but a file's last is at least [`MIN_PART`] (so a
/// file has at most `size / MIN_PART + 1` parts), and each part record is
/// bounded by one with the longest pack name, entry suffix and size.
fn content_index_bound(files: &[ContentToSend]) -> Result<u64> {
    let mut total: u64 = 2; // [ ]
    for f in files {
        let record = ContentRecord {
            sha1: "0".repeat(40),
            sha256: "0".repeat(64),
            size: f.size,
            path: f.rel_path.clone(),
            parts: Vec::new(),
        };
        let part = PartRecord {
            pack: content_pack_name(u32::MAX),
            entry: format!("{}.part{}", f.rel_path, u64::MAX),
            size: u64::MAX,
        };
        let record_len = serde_json::to_vec(&record)
            .map_err(|e| Error::invalid("content index", e.to_string()))?
            .len() as u64;
        let part_len = serde_json::to_vec(&part)
            .map_err(|e| Error::invalid("content index", e.to_string()))?
            .len() as u64;
        let parts = f.size / MIN_PART + 1;
        // Each part record and the comma before it; each record's comma.
        total += record_len + parts * (part_len + 1) + 1;
    }
    Ok(total)
}

/// Content placed over volumes, with its index.
pub(crate) struct Placed {
    pub(crate) placements: Vec<Vec<Placement>>,
    pub(crate) volumes: u32,
    /// `content.json`.
    pub(crate) index: Vec<u8>,
    /// Bytes volume 1 kept for `content.json` when placing (0 without
    /// volumes); `index` never exceeds it.
    reserve: u64,
}

/// Places the content over volumes and builds the content index
/// (`content.json`, in volume 1) so that its size stays within the space
/// the placement left for it. The index's size depends on the placement
/// (how many parts each file is split into) and the placement on the space
/// kept for the index, so the reservation is found by iteration: start from
/// an estimate, place, serialise, and if the index outgrew the reservation
/// place again with a larger one (a round or two reach a fixed point). If
/// it has not after [`PLACEMENT_ROUNDS`], the provable bound of
/// [`content_index_bound`] is reserved, which always holds.
pub(crate) fn place_with_index(
    files: &[ContentToSend],
    volume_size: Option<u64>,
    vol1_used: u64,
    layout: ContentLayout,
) -> Result<Placed> {
    let place = |cap: Option<u64>, used: u64| match layout {
        ContentLayout::Packs => place_content(files, cap, used),
        ContentLayout::Files => place_files(files, cap, used),
    };
    let index = |placements: &[Vec<Placement>]| match layout {
        ContentLayout::Packs => content_index(files, placements),
        ContentLayout::Files => file_index(files, placements, None),
    };
    let Some(cap) = volume_size else {
        let (placements, volumes) = place(None, 0)?;
        let index = index(&placements)?;
        return Ok(Placed {
            placements,
            volumes,
            index,
            reserve: 0,
        });
    };
    let attempt = |reserve: u64| -> Result<Placed> {
        check_volume1_fits(cap, vol1_used, reserve)?;
        let (placements, volumes) = place(Some(cap), vol1_used + reserve)?;
        let index = index(&placements)?;
        Ok(Placed {
            placements,
            volumes,
            index,
            reserve,
        })
    };
    let mut reserve = 512 + files.len() as u64 * 400;
    for _ in 0..PLACEMENT_ROUNDS {
        let placed = attempt(reserve)?;
        let len = placed.index.len() as u64;
        if len <= reserve {
            return Ok(placed);
        }
        // Some slack so that a small growth does not need another round.
        reserve = len + len / 64 + 512;
    }
    let bound = match layout {
        ContentLayout::Packs => content_index_bound(files)?,
        ContentLayout::Files => file_index_bound(files)?,
    };
    let placed = attempt(bound)?;
    if placed.index.len() as u64 > placed.reserve {
        return Err(Error::invalid(
            "content index",
            format!(
                "{} bytes, larger than its bound ({} bytes); report this bug",
                placed.index.len(),
                placed.reserve
            ),
        ));
    }
    Ok(placed)
}

/// How content travels: in tar packs (format versions 1 and 2, written
/// only for tests of their readers) or as files (version 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentLayout {
    Packs,
    Files,
}

static WRITE_FORMAT_1: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes this process's exports write format version 1 (2 with
/// equivalent links): content in tar packs, as gapsync wrote before
/// version 3. Kept only so that tests can make bundles for the readers of
/// those versions (bundles already on media); the binary arms it from
/// `GAPSYNC_TEST_BUNDLE_FORMAT=1`.
#[doc(hidden)]
pub fn write_format_1_for_tests(on: bool) {
    WRITE_FORMAT_1.store(on, std::sync::atomic::Ordering::SeqCst);
}

fn content_layout() -> ContentLayout {
    if WRITE_FORMAT_1.load(std::sync::atomic::Ordering::SeqCst) {
        ContentLayout::Packs
    } else {
        ContentLayout::Files
    }
}

/// Length of a file's line in SHA256SUMS.
fn sums_line_len(name: &str) -> u64 {
    64 + 2 + name.len() as u64 + 1
}

/// Version 3: splits content into bundle files so that each volume stays
/// within `volume_size` (with the files' SHA256SUMS lines), and no file is
/// larger than [`format::MAX_BUNDLE_FILE`] (FAT32). Each part is charged
/// the line of its longest possible name (`parts/...partNNNN`).
fn place_files(
    files: &[ContentToSend],
    volume_size: Option<u64>,
    first_volume_used: u64,
) -> Result<(Vec<Vec<Placement>>, u32)> {
    let cap = volume_size.map(|v| v.saturating_sub(VOLUME_RESERVE));
    let mut volume = 1u32;
    let mut used = if cap.is_some() { first_volume_used } else { 0 };
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let mut parts: Vec<Placement> = Vec::new();
        let mut remaining = f.size;
        loop {
            let line = sums_line_len(&format::part_file_name(&f.rel_path, parts.len() + 1, 2));
            let want = remaining.min(format::MAX_BUNDLE_FILE);
            let space = match cap {
                None => u64::MAX,
                Some(c) => c.saturating_sub(used.saturating_add(line)),
            };
            let len = if want <= space {
                want
            } else if space >= MIN_PART {
                space
            } else {
                if used == 0 {
                    return Err(Error::invalid(
                        "volume size",
                        format!(
                            "{} is too small to hold any content",
                            cap.unwrap_or(0) + VOLUME_RESERVE
                        ),
                    ));
                }
                volume += 1;
                used = 0;
                continue;
            };
            parts.push(Placement {
                volume,
                entry: String::new(),
                len,
            });
            used += len + line;
            remaining -= len;
            if remaining == 0 {
                break;
            }
        }
        let n = parts.len();
        for (i, p) in parts.iter_mut().enumerate() {
            p.entry = format::part_file_name(&f.rel_path, i + 1, n);
        }
        out.push(parts);
    }
    Ok((out, volume))
}

/// Version 3: `content.json` for a placement. Parts of split files get
/// their digests once copied (`digests`); before that, zeros of the same
/// length stand in (so the index's size is known when placing).
pub(crate) fn file_index(
    files: &[ContentToSend],
    placements: &[Vec<Placement>],
    digests: Option<&[Vec<[u8; 32]>]>,
) -> Result<Vec<u8>> {
    let index: Vec<format::FileRecord> = files
        .iter()
        .zip(placements)
        .enumerate()
        .map(|(i, (f, parts))| format::FileRecord {
            sha1: hex::encode_upper(f.sha1),
            sha256: hex::encode(f.sha256),
            size: f.size,
            path: f.rel_path.clone(),
            parts: parts
                .iter()
                .enumerate()
                .map(|(j, p)| format::FilePart {
                    volume: p.volume,
                    file: p.entry.clone(),
                    size: p.len,
                    sha256: match (parts.len(), digests) {
                        (1, _) => hex::encode(f.sha256),
                        (_, Some(d)) => d
                            .get(i)
                            .and_then(|d| d.get(j))
                            .map(hex::encode)
                            .unwrap_or_else(|| "0".repeat(64)),
                        (_, None) => "0".repeat(64),
                    },
                })
                .collect(),
        })
        .collect();
    serde_json::to_vec(&index).map_err(|e| Error::invalid("content index", e.to_string()))
}

/// Version 3: an upper bound on the size of `content.json` for any
/// placement (as [`content_index_bound`]).
fn file_index_bound(files: &[ContentToSend]) -> Result<u64> {
    let mut total: u64 = 2;
    for f in files {
        let record = format::FileRecord {
            sha1: "0".repeat(40),
            sha256: "0".repeat(64),
            size: f.size,
            path: f.rel_path.clone(),
            parts: Vec::new(),
        };
        let part = format::FilePart {
            volume: u32::MAX,
            file: format!("{}/{}.part{}", format::PARTS_DIR, f.rel_path, u64::MAX),
            size: u64::MAX,
            sha256: "0".repeat(64),
        };
        let record_len = serde_json::to_vec(&record)
            .map_err(|e| Error::invalid("content index", e.to_string()))?
            .len() as u64;
        let part_len = serde_json::to_vec(&part)
            .map_err(|e| Error::invalid("content index", e.to_string()))?
            .len() as u64;
        total += record_len + (f.size / MIN_PART + 1) * (part_len + 1) + 1;
    }
    Ok(total)
}

/// Rule: each volume's manifest, SHA256SUMS and signature fit in the
/// space every volume keeps for them ([`VOLUME_RESERVE`]); the manifest
/// grows with the number of volumes.
fn check_reserve_holds(cap: u64, volumes: u32, need: usize) -> Result<()> {
    if need as u64 > VOLUME_RESERVE {
        return Err(Error::bad_argument(
            "volume size",
            format!(
                "{} makes {volumes} volumes, whose manifest and sums ({need} bytes) do not fit the {VOLUME_RESERVE} bytes \
                 each volume keeps for them; choose a larger --volume-size",
                crate::model::units::human_bytes(cap)
            ),
        ));
    }
    Ok(())
}

/// Rounds of placement before the provable bound is reserved instead.
const PLACEMENT_ROUNDS: usize = 8;

/// Rule: volume 1 holds the trust statements, the metadata pack and the
/// content index, with the volume reserve to spare.
fn check_volume1_fits(cap: u64, vol1_used: u64, index_reserve: u64) -> Result<()> {
    let need = vol1_used
        .saturating_add(index_reserve)
        .saturating_add(VOLUME_RESERVE);
    if need > cap {
        return Err(Error::bad_argument(
            "volume size",
            format!(
                "{} ({cap} bytes) cannot hold volume 1: the metadata and content index need {need} bytes \
                 with the {}-byte reserve; choose a larger --volume-size",
                crate::model::units::human_bytes(cap),
                VOLUME_RESERVE
            ),
        ));
    }
    Ok(())
}

fn content_pack_name(volume: u32) -> String {
    format!("content-{volume:03}.tar")
}

/// Appends a file (or a slice of it) to a tar as a regular entry.
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    len: u64,
    reader: &mut dyn io::Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, io::Read::take(reader, len))
        .map_err(|e| Error::io(name, e))
}

/// Writes a file durably (temp name, fsync, rename).
pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)
}

/// `export --since ANCHOR`: where the new link attaches (docs/bundle-format.md
/// §13.3). Links that ended at ANCHOR are equivalent positions (the same
/// state; the ones after the first carried no change, at most trust
/// statements), and the exporter cannot know which of them the importer
/// applied last. So the new link follows the newest of them
/// (`prev_manifest_sha256`) and names the others (`prev_equivalent_sha256`):
/// the importer accepts it after any of them. The run of equivalent links
/// stops at a full bundle (a full bundle starts a new chain, perhaps with
/// other filters). Trust statements carried by the equivalent links after
/// the first and by the replaced links travel again (applying a statement
/// twice is a no-op).
fn attach_since(
    store: &Store,
    destination: &str,
    has_chain: bool,
    anchor: &Anchor,
) -> Result<Attach> {
    let anchor = anchor.to_string();
    // Rule: `--since` continues a chain; the importer refuses an
    // incremental bundle before its first full one.
    if !has_chain {
        return Err(Error::NoChain {
            destination: destination.to_string(),
        });
    }
    let links: Vec<ExportLink> = store.export_links(destination)?;
    let Some(newest) = links.iter().rposition(|l| l.to_anchor == anchor) else {
        return Err(Error::UnknownLink {
            destination: destination.to_string(),
            anchor,
        });
    };
    let mut first = newest;
    while !links[first].full && first > 0 && links[first - 1].to_anchor == anchor {
        first -= 1;
    }
    let equivalents = links[first..newest]
        .iter()
        .map(|l| l.manifest_sha256.clone())
        .collect();
    Ok(Attach {
        seq: links[newest].seq + 1,
        prev: Some(links[newest].manifest_sha256.clone()),
        equivalents,
        // Unknown for links older than schema 6: carry every statement.
        stmt_after: links[first].last_stmt_seq.unwrap_or(0),
    })
}

/// Rule: an incremental bundle carries something: a journal change after
/// its from-anchor or a trust statement. An empty link would only lengthen
/// the chain (and, lost, confuse `--since`); `--allow-empty` makes one
/// anyway. Full bundles are never empty in this sense.
fn rule_not_empty(
    snap: &ExportSnapshot<'_>,
    destination: &str,
    from: &Anchor,
    statements: usize,
) -> Result<()> {
    if statements > 0 || snap.changed_after(from.seq)? {
        return Ok(());
    }
    Err(Error::NothingToExport {
        destination: destination.to_string(),
        since: from.to_string(),
    })
}

/// Rule: an incremental bundle keeps its chain's filters (a full one
/// starts the chain again with new ones).
fn rule_same_filters(destination: &str, chain_filters: &str, filters: &str) -> Result<()> {
    if chain_filters != filters {
        return Err(Error::ChainFilterMismatch {
            destination: destination.to_string(),
            chain_filters: chain_filters.to_string(),
        });
    }
    Ok(())
}

/// A `.partial` folder beside `--out` that is removed when dropped (on
/// every error, and on unwinding) unless it was renamed into place.
pub(crate) struct Partial {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

/// Rule: `out` does not exist yet. Returns the `.partial` folder beside it
/// (not created) and `out`'s parent folder (created).
pub(crate) fn begin_partial(out: &Path) -> Result<(Partial, PathBuf)> {
    if out.exists() {
        return Err(Error::invalid(
            out.display().to_string(),
            "already exists; choose a new bundle path",
        ));
    }
    let out_parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let out_name = out
        .file_name()
        .ok_or_else(|| Error::invalid(out.display().to_string(), "not a folder path"))?
        .to_string_lossy()
        .to_string();
    fs::create_dir_all(&out_parent).at(&out_parent)?;
    let partial = Partial {
        path: out_parent.join(format!(
            ".{out_name}.partial-{}",
            uuid::Uuid::new_v4().simple()
        )),
        armed: true,
    };
    Ok((partial, out_parent))
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

pub fn export(
    store: &mut Store,
    opts: &ExportOptions<'_>,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    check_options(opts)?;
    crate::trust::check_export_signer(store, &opts.key.id())?;
    let (mut partial, out_parent) = begin_partial(opts.out)?;
    let out_parent = out_parent.as_path();
    let mut report = export_into(store, opts, &partial.path, progress)?;
    // The ledger rows and the bundle appear together: the rows are
    // written, the folder renamed into place, then the transaction
    // commits; if the commit fails the folder is taken back.
    let filters = filters_json(&opts.filters)?;
    let pending = store.record_export(&ExportRecord {
        destination: opts.destination,
        seq: report.seq,
        bundle_id: &report.bundle_id,
        manifest_sha256: &report.manifest_sha256,
        full: report.kind == BundleKind::Full,
        from_anchor: report.from_anchor.as_deref(),
        to_anchor: &report.to_anchor,
        signer: opts.key.id().to_string(),
        filters: &filters,
        sent_sha1: &report.sent_sha1,
        bytes: report.payload_bytes,
        expires: &report.expires,
    })?;
    fs::rename(&partial.path, opts.out).map_err(|e| Error::io(opts.out, e))?;
    partial.armed = false;
    crate::failpoint::hit("export-before-ledger-commit");
    if let Err(e) = pending.commit() {
        let _ = fs::remove_dir_all(opts.out);
        return Err(e);
    }
    sync_dir(out_parent)?;
    report.path = opts.out.to_path_buf();
    Ok(report)
}

/// The filters as the ledger records a chain's.
fn filters_json(filters: &Filters) -> Result<String> {
    serde_json::to_string(filters).map_err(|e| Error::invalid("filters", e.to_string()))
}

/// Where the bundle stands in its destination's chain (step 1).
struct ChainPosition {
    /// The anchor an incremental bundle starts after (`None`: full).
    from: Option<Anchor>,
    attach: Attach,
}

/// Step 1: full or incremental (and from where), and where the bundle
/// attaches: after the chain's last link, or after the links that ended
/// at `--since`.
fn chain_position(store: &Store, opts: &ExportOptions<'_>) -> Result<ChainPosition> {
    let ledger = store.export_ledger(opts.destination)?;
    let from: Option<Anchor> = if opts.full {
        None
    } else if let Some(a) = &opts.since {
        Some(store.own_anchor(&a.to_string())?)
    } else if let Some(l) = &ledger {
        Some(store.own_anchor(&l.last_to_anchor)?)
    } else {
        None
    };
    if let (Some(_), Some(l)) = (&from, &ledger) {
        rule_same_filters(opts.destination, &l.filters, &filters_json(&opts.filters)?)?;
    }
    let attach = match (&opts.since, &from) {
        (Some(_), Some(anchor)) => attach_since(store, opts.destination, ledger.is_some(), anchor)?,
        _ => Attach {
            seq: ledger.as_ref().map(|l| l.last_seq + 1).unwrap_or(1),
            prev: ledger.as_ref().map(|l| l.last_manifest_sha256.clone()),
            equivalents: Vec::new(),
            stmt_after: ledger.as_ref().map(|l| l.last_stmt_seq).unwrap_or(0),
        },
    };
    Ok(ChainPosition { from, attach })
}

/// What the read snapshot gave (step 2).
struct Contents {
    to: Anchor,
    range: JournalRange,
    statements: Vec<QueuedRow>,
    state: State,
    content: Vec<ContentToSend>,
    counts: Counts,
    /// How the content was chosen (receipts).
    plan: ContentPlan,
}

/// Step 2: the journal head, the trust statements that travel, the rule
/// that an incremental bundle is not empty, the scope, the state and the
/// content to send.
fn read_snapshot(
    snap: &ExportSnapshot<'_>,
    opts: &ExportOptions<'_>,
    position: &ChainPosition,
    server_id: uuid::Uuid,
    receipt: Option<&ReceiptPlan>,
) -> Result<Contents> {
    let to = Anchor {
        server_id,
        seq: snap.head()?,
    };
    let range = JournalRange {
        after: position.from.map(|a| a.seq),
        to: to.seq,
    };
    let statements = snap.statements_after(position.attach.stmt_after)?;
    let not_empty = match &position.from {
        Some(f) if !opts.allow_empty => rule_not_empty(snap, opts.destination, f, statements.len()),
        _ => Ok(()),
    };
    snap.select_scope(
        &opts.filters.products,
        &opts.filters.classifications,
        &opts.filters.languages,
    )?;
    let state = snap.state(range)?;
    let mut counts = Counts {
        groups: state.groups.len() as u64,
        removed_groups: state.removed_groups.len() as u64,
        deployments: state.deployments.iter().filter(|d| !d.removed).count() as u64,
        dead_deployments: state.deployments.iter().filter(|d| d.removed).count() as u64,
        declined: state.declined.len() as u64,
        trust_statements: statements.len() as u64,
        ..Counts::default()
    };
    // After `--since`, content sent in the replaced links is sent again.
    let resend = opts.since.is_some();
    let scope = match opts.filters.content {
        ContentMode::None => None,
        ContentMode::All => Some(ContentScope::All),
        ContentMode::Approved => Some(ContentScope::Approved),
    };
    let (content, missing, plan) = match scope {
        None => (Vec::new(), 0, ContentPlan::default()),
        Some(scope) => snap.content_to_send(opts.destination, scope, range, resend, receipt)?,
    };
    // Content a site reported missing or corrupt is something to carry.
    if plan.resent_files == 0 {
        not_empty?;
    }
    counts.content_missing = missing;
    counts.content_files = content.len() as u64;
    counts.content_bytes = content.iter().map(|c| c.size).sum();
    Ok(Contents {
        to,
        range,
        statements,
        state,
        content,
        counts,
        plan,
    })
}

/// The folders of a bundle's volumes: the bundle folder itself, or
/// `vol-NNN/` in it when split into volumes.
pub(crate) struct VolumeDirs<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) multi: bool,
}

impl VolumeDirs<'_> {
    pub(crate) fn of(&self, v: u32) -> PathBuf {
        if self.multi {
            self.dir.join(format::volume_dir_name(v))
        } else {
            self.dir.to_path_buf()
        }
    }
}

fn export_into(
    store: &mut Store,
    opts: &ExportOptions<'_>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let server_id = store.info().server_id;
    let server_name = store.info().name.clone();
    // ---- 1. chain position (and the receipts of the sites it reaches)
    let position = chain_position(store, opts)?;
    let receipt = store.receipt_for(opts.destination)?;

    // ---- 2. one read snapshot
    let snap = store.export_snapshot()?;
    let Contents {
        to,
        range,
        statements,
        state,
        content,
        mut counts,
        plan,
    } = read_snapshot(&snap, opts, &position, server_id, receipt.as_ref())?;

    // ---- 3. volume 1: trust statements, metadata, content index
    let vols = VolumeDirs {
        dir,
        multi: opts.volume_size.is_some(),
    };
    fs::create_dir_all(vols.of(1)).at(vols.of(1))?;
    let (trust_files, mut vol1_used) = write_statement_files(&vols.of(1), &statements)?;
    let mut packs: Vec<PackEntry> = Vec::new();
    let meta = write_metadata_pack(&snap, range, &state, &vols.of(1), &mut counts, progress)?;
    vol1_used += meta.size;
    packs.push(meta);
    let layout = content_layout();
    let Placed {
        placements,
        volumes,
        index: cjson,
        ..
    } = place_with_index(&content, opts.volume_size, vol1_used, layout)?;
    if let Some(cap) = opts.volume_size {
        // An estimate first (before the content is written): the manifest
        // lists a pack per volume.
        let estimate = 16 * 1024 + 256 * (volumes as usize + 2) + 128 * trust_files.len();
        check_reserve_holds(cap, volumes, estimate)?;
    }
    let mut files: VolumeFiles = BTreeMap::new();
    let cjson = match layout {
        ContentLayout::Packs => {
            write_file(&vols.of(1).join(CONTENT_ENTRY), &cjson)?;
            // ---- 4. content packs
            progress.phase("content", Some(counts.content_bytes), "bytes");
            write_content_packs(&snap, &content, &placements, &vols, &mut packs, progress)?;
            progress.finish();
            cjson
        }
        ContentLayout::Files => {
            // ---- 4. content files, then their index (which carries the
            // digests of split files' parts)
            progress.phase("content", Some(counts.content_bytes), "bytes");
            let sources: Vec<PathBuf> = content
                .iter()
                .map(|f| snap.content_path(&f.rel_path))
                .collect();
            let digests = write_content_files(&sources, &content, &placements, &vols, progress)?;
            progress.finish();
            let cjson2 = file_index(&content, &placements, Some(&digests))?;
            if cjson2.len() != cjson.len() {
                return Err(Error::invalid(
                    "content index",
                    "its size changed once the digests were known; report this bug",
                ));
            }
            write_file(&vols.of(1).join(CONTENT_ENTRY), &cjson2)?;
            for (parts, d) in placements.iter().zip(&digests) {
                for (p, d) in parts.iter().zip(d) {
                    files.entry(p.volume).or_default().push((
                        p.entry.clone(),
                        hex::encode(d),
                        p.len,
                    ));
                }
            }
            cjson2
        }
    };
    // content.json is listed right after the metadata pack.
    packs.insert(
        1,
        PackEntry {
            volume: 1,
            name: CONTENT_ENTRY.to_string(),
            size: cjson.len() as u64,
            sha256: format::sha256_hex(&cjson),
        },
    );
    drop(snap); // read-only: nothing to commit

    // ---- 5. manifest, sums and signatures
    let manifest = build_manifest(
        opts,
        Source {
            server_id: server_id.to_string(),
            name: server_name,
        },
        position,
        to,
        &counts,
        volumes,
        packs,
        trust_files,
        layout,
    )?;
    let (manifest_sha256, bytes_written) =
        write_signed_headers(&vols, &manifest, &files, opts.key, opts.volume_size)?;
    Ok(ExportReport {
        path: dir.to_path_buf(),
        payload_bytes: manifest.payload_bytes(),
        expires: manifest.expires.clone(),
        bundle_id: manifest.bundle_id,
        seq: manifest.seq,
        kind: manifest.kind,
        from_anchor: manifest.from_anchor,
        to_anchor: manifest.to_anchor,
        destination: opts.destination.to_string(),
        volumes,
        counts,
        bytes_written,
        manifest_sha256,
        trust_statements: statements
            .iter()
            .map(|q| crate::trust::StatementSummary::from_body(q.seq, &q.body))
            .collect::<Result<_>>()?,
        sent_sha1: content.iter().map(|c| c.sha1).collect(),
        content_plan: plan,
        receipt_sites: receipt.map(|r| r.sites).unwrap_or_default(),
    })
}

/// What `export --dry-run` shows: where the bundle would attach, what it
/// would carry, and how its content was chosen (receipts).
#[derive(Debug, Clone, Serialize)]
pub struct ExportPlan {
    pub destination: String,
    pub seq: u64,
    pub kind: BundleKind,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub counts: Counts,
    pub content_plan: ContentPlan,
    /// The sites whose latest receipts the plan follows (module
    /// documentation of `store::sites`).
    pub receipt_sites: Vec<String>,
    /// Nothing to carry: `export` would refuse this incremental bundle
    /// unless `--allow-empty`.
    pub empty: bool,
}

/// Steps 1 and 2 of an export, writing nothing (`export --dry-run`).
/// (The revisions counted are those in scope in the journal range.)
pub fn plan(store: &mut Store, opts: &ExportOptions<'_>) -> Result<ExportPlan> {
    check_options(opts)?;
    let server_id = store.info().server_id;
    let position = chain_position(store, opts)?;
    let receipt = store.receipt_for(opts.destination)?;
    let snap = store.export_snapshot()?;
    // The plan is shown even when the export would be refused as empty.
    let planned = ExportOptions {
        allow_empty: true,
        filters: opts.filters.clone(),
        ..*opts
    };
    let c = read_snapshot(&snap, &planned, &position, server_id, receipt.as_ref())?;
    let empty = match &position.from {
        Some(f) if !opts.allow_empty && c.plan.resent_files == 0 => {
            rule_not_empty(&snap, opts.destination, f, c.statements.len()).is_err()
        }
        _ => false,
    };
    let mut counts = c.counts;
    counts.revisions = snap.revision_count(c.range)?;
    drop(snap);
    Ok(ExportPlan {
        destination: opts.destination.to_string(),
        seq: position.attach.seq,
        kind: if position.from.is_some() {
            BundleKind::Incremental
        } else {
            BundleKind::Full
        },
        from_anchor: position.from.map(|a| a.to_string()),
        to_anchor: c.to.to_string(),
        counts,
        content_plan: c.plan,
        receipt_sites: receipt.map(|r| r.sites).unwrap_or_default(),
        empty,
    })
}

/// Step 5: the manifest of the bundle written.
#[allow(clippy::too_many_arguments)]
fn build_manifest(
    opts: &ExportOptions<'_>,
    source: Source,
    position: ChainPosition,
    to: Anchor,
    counts: &Counts,
    volumes: u32,
    packs: Vec<PackEntry>,
    trust_files: Vec<String>,
    layout: ContentLayout,
) -> Result<Manifest> {
    let now = time::OffsetDateTime::now_utc();
    let Attach {
        seq,
        prev,
        equivalents,
        ..
    } = position.attach;
    Ok(Manifest {
        format: format::FORMAT.to_string(),
        version: match layout {
            ContentLayout::Packs => format::version_for(&equivalents),
            ContentLayout::Files => format::VERSION_FILES,
        },
        bundle_id: uuid::Uuid::new_v4().to_string(),
        source,
        destination: opts.destination.to_string(),
        seq,
        prev_manifest_sha256: prev,
        prev_equivalent_sha256: equivalents,
        kind: if position.from.is_some() {
            BundleKind::Incremental
        } else {
            BundleKind::Full
        },
        from_anchor: position.from.map(|a| a.to_string()),
        to_anchor: to.to_string(),
        created: rfc3339(now)?,
        expires: rfc3339(now.checked_add(opts.expires).ok_or_else(|| {
            Error::bad_argument("expiry", "the end of the validity period is out of range")
        })?)?,
        signer: opts.key.public().id.to_string(),
        filters: opts.filters.clone(),
        counts: counts.clone(),
        volumes,
        packs,
        trust_statements: trust_files,
        report: None,
        snapshot: None,
    })
}

/// Step 3: the queued trust statements as `trust/NNNN.json` with their
/// `.minisig` (volume 1). Returns their names and the bytes written.
fn write_statement_files(vol1: &Path, statements: &[QueuedRow]) -> Result<(Vec<String>, u64)> {
    let mut names = Vec::new();
    let mut used = 0u64;
    if statements.is_empty() {
        return Ok((names, used));
    }
    fs::create_dir_all(vol1.join(TRUST_DIR)).at(vol1)?;
    for (i, q) in statements.iter().enumerate() {
        let name = format!("{TRUST_DIR}/{:04}.json", i + 1);
        write_file(&vol1.join(&name), &q.body)?;
        write_file(&vol1.join(format!("{name}.minisig")), q.minisig.as_bytes())?;
        used += q.body.len() as u64 + q.minisig.len() as u64;
        names.push(name);
    }
    Ok((names, used))
}

/// Step 3: the metadata pack (zstd tar: `state.json`, then the verbatim
/// revisions of the range in scope), fsynced. Counts the revisions.
fn write_metadata_pack(
    snap: &ExportSnapshot<'_>,
    range: JournalRange,
    state: &State,
    vol1: &Path,
    counts: &mut Counts,
    progress: &dyn Progress,
) -> Result<PackEntry> {
    progress.phase("metadata", Some(snap.revision_count(range)?), "revisions");
    let path = vol1.join(METADATA_PACK);
    let file = File::create(&path).at(&path)?;
    let hw = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let enc = zstd::stream::write::Encoder::new(hw, 3).at(&path)?;
    let mut tar = tar::Builder::new(enc);
    let state_json =
        serde_json::to_vec(state).map_err(|e| Error::invalid("state", e.to_string()))?;
    append_entry(
        &mut tar,
        STATE_ENTRY,
        state_json.len() as u64,
        &mut &state_json[..],
    )?;
    snap.for_each_revision(range, &mut |id, rev, xml| {
        append_entry(
            &mut tar,
            &format!("{REVISIONS_DIR}/{id}-r{rev}.xml"),
            xml.len() as u64,
            &mut &xml[..],
        )?;
        counts.revisions += 1;
        progress.advance(1);
        Ok(())
    })?;
    let enc = tar.into_inner().map_err(|e| Error::io(&path, e))?;
    let hw = enc.finish().at(&path)?;
    let (mut bw, sha, size) = hw.into_parts();
    bw.flush().at(&path)?;
    bw.get_ref().sync_all().at(&path)?;
    progress.finish();
    Ok(PackEntry {
        volume: 1,
        name: METADATA_PACK.to_string(),
        size,
        sha256: sha,
    })
}

/// The tar builder writes into a BufWriter (so std's copy reads the
/// content straight into its 1 MiB buffer), whose flushes feed the pack's
/// SHA-256 in large pieces.
type PackWriter = BufWriter<HashingWriter<File>>;

/// Ends a content pack: flushed, fsynced, listed in `packs`.
fn finish_pack(v: u32, tar: tar::Builder<PackWriter>, packs: &mut Vec<PackEntry>) -> Result<()> {
    let name = content_pack_name(v);
    let bw = tar.into_inner().map_err(|e| Error::io(&name, e))?;
    let hw = bw
        .into_inner()
        .map_err(|e| Error::io(&name, e.into_error()))?;
    let (file, sha, size) = hw.into_parts();
    file.sync_all().at(&name)?;
    packs.push(PackEntry {
        volume: v,
        name,
        size,
        sha256: sha,
    });
    Ok(())
}

/// Step 4: the content packs, one per volume, each file streamed from the
/// content store into its parts and re-verified while copied.
fn write_content_packs(
    snap: &ExportSnapshot<'_>,
    content: &[ContentToSend],
    placements: &[Vec<Placement>],
    vols: &VolumeDirs<'_>,
    packs: &mut Vec<PackEntry>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut current: Option<(u32, tar::Builder<PackWriter>)> = None;
    for (f, parts) in content.iter().zip(placements) {
        let src = snap.content_path(&f.rel_path);
        let file = File::open(&src).at(&src)?;
        let mut reader = crate::store::content::VerifyingReader::new(file);
        for p in parts {
            if current.as_ref().map(|(v, _)| *v) != Some(p.volume) {
                if let Some((v, tar)) = current.take() {
                    finish_pack(v, tar, packs)?;
                }
                let vd = vols.of(p.volume);
                fs::create_dir_all(&vd).at(&vd)?;
                let path = vd.join(content_pack_name(p.volume));
                let file = File::create(&path).at(&path)?;
                current = Some((
                    p.volume,
                    tar::Builder::new(BufWriter::with_capacity(1 << 20, HashingWriter::new(file))),
                ));
            }
            if let Some((_, tar)) = current.as_mut() {
                append_entry(tar, &p.entry, p.len, &mut reader)?;
            }
            progress.advance(p.len);
        }
        // Rule: the exporter never sends bytes that differ from what its
        // store recorded (a corrupted store file stops the export).
        reader.check(&src, &f.sha1, f.size)?;
    }
    if let Some((v, tar)) = current.take() {
        finish_pack(v, tar, packs)?;
    }
    Ok(())
}

/// The manifest, SHA256SUMS and signature of a single-volume bundle whose
/// packs (and trust statement files) are written in `dir` (a report
/// bundle). Returns the manifest's digest and the bytes the bundle holds.
pub(crate) fn write_single_volume_headers(
    dir: &Path,
    manifest: &Manifest,
    key: &SecretKey,
) -> Result<(String, u64)> {
    let vols = VolumeDirs { dir, multi: false };
    write_signed_headers(&vols, manifest, &BTreeMap::new(), key, None)
}

/// Step 5: every volume's manifest, SHA256SUMS and signature (within the
/// volume reserve), and the top level's of a multi-volume bundle. Returns
/// the manifest's digest and the bytes the bundle holds.
pub(crate) fn write_signed_headers(
    vols: &VolumeDirs<'_>,
    manifest: &Manifest,
    files: &VolumeFiles,
    key: &SecretKey,
    volume_size: Option<u64>,
) -> Result<(String, u64)> {
    let manifest_bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::invalid("manifest", e.to_string()))?;
    let manifest_sha256 = format::sha256_hex(&manifest_bytes);
    let mut top_sums: BTreeMap<String, String> = BTreeMap::new();
    let mut bytes_written = 0u64;
    for v in 1..=manifest.volumes {
        let vd = vols.of(v);
        fs::create_dir_all(&vd).at(&vd)?;
        write_file(&vd.join(MANIFEST), &manifest_bytes)?;
        let mut sums: BTreeMap<String, String> = BTreeMap::new();
        sums.insert(MANIFEST.to_string(), manifest_sha256.clone());
        for p in manifest.packs.iter().filter(|p| p.volume == v) {
            sums.insert(p.name.clone(), p.sha256.clone());
            bytes_written += p.size;
        }
        // Content files are placed with their lines in SHA256SUMS counted;
        // the reserve holds the rest.
        let mut content_lines = 0u64;
        for (name, sha, size) in files.get(&v).into_iter().flatten() {
            sums.insert(name.clone(), sha.clone());
            bytes_written += size;
            content_lines += sums_line_len(name);
        }
        if v == 1 {
            for t in &manifest.trust_statements {
                for name in [t.clone(), format!("{t}.minisig")] {
                    let (h, n) = format::hash_file_sha256(&vd.join(&name))?;
                    sums.insert(name, h);
                    bytes_written += n;
                }
            }
        }
        let sums_text = format::format_sums(&sums);
        check_sums_size(&vd, sums_text.len())?;
        write_file(&vd.join(SUMS), sums_text.as_bytes())?;
        let comment = format::trusted_comment(manifest, Some(v));
        let sig = key.sign(sums_text.as_bytes(), &comment)?;
        if let Some(cap) = volume_size {
            check_reserve_holds(
                cap,
                manifest.volumes,
                manifest_bytes.len() + sums_text.len() - content_lines as usize + sig.len(),
            )?;
        }
        write_file(&vd.join(SUMS_SIG), sig.as_bytes())?;
        bytes_written += manifest_bytes.len() as u64 + sums_text.len() as u64 + sig.len() as u64;
        sync_dir(&vd)?;
        if vols.multi {
            let vname = format::volume_dir_name(v);
            for (p, h) in sums {
                top_sums.insert(format!("{vname}/{p}"), h);
            }
            top_sums.insert(
                format!("{vname}/{SUMS}"),
                format::sha256_hex(sums_text.as_bytes()),
            );
            top_sums.insert(
                format!("{vname}/{SUMS_SIG}"),
                format::sha256_hex(sig.as_bytes()),
            );
        }
    }
    if vols.multi {
        let dir = vols.dir;
        write_file(&dir.join(MANIFEST), &manifest_bytes)?;
        top_sums.insert(MANIFEST.to_string(), manifest_sha256.clone());
        let sums_text = format::format_sums(&top_sums);
        check_sums_size(dir, sums_text.len())?;
        write_file(&dir.join(SUMS), sums_text.as_bytes())?;
        let sig = key.sign(
            sums_text.as_bytes(),
            &format::trusted_comment(manifest, None),
        )?;
        write_file(&dir.join(SUMS_SIG), sig.as_bytes())?;
        sync_dir(dir)?;
    }
    Ok((manifest_sha256, bytes_written))
}

/// Rule: a SHA256SUMS stays within what readers accept
/// ([`format::MAX_SUMS_BYTES`]); it grows by a line per content file.
fn check_sums_size(dir: &Path, len: usize) -> Result<()> {
    if len as u64 > format::MAX_SUMS_BYTES {
        return Err(Error::bad_argument(
            "volume size",
            format!(
                "{}: SHA256SUMS would be {len} bytes, over the {} bytes readers accept (too many content files \
                 for one volume); export with a smaller --volume-size",
                dir.display(),
                format::MAX_SUMS_BYTES
            ),
        ));
    }
    Ok(())
}

/// Version 3: the content files (and parts) of each volume: path, SHA-256
/// (hex), size.
pub(crate) type VolumeFiles = BTreeMap<u32, Vec<(String, String, u64)>>;

/// Step 4 (version 3): every content file copied from the content store
/// into its bundle file(s), files in parallel, each byte read once and
/// hashed once (SHA-256; SHA-1 too when the update metadata gives no
/// SHA-256), each file's writeback started as soon as it is written; then
/// every file fsynced, then the folders. `sources[i]` is where
/// `content[i]` lies. Returns each part's SHA-256, per file.
pub(crate) fn write_content_files(
    sources: &[PathBuf],
    content: &[ContentToSend],
    placements: &[Vec<Placement>],
    vols: &VolumeDirs<'_>,
    progress: &dyn Progress,
) -> Result<Vec<Vec<[u8; 32]>>> {
    let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    for parts in placements {
        for p in parts {
            let dest = vols.of(p.volume).join(&p.entry);
            if let Some(d) = dest.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
    }
    for d in &dirs {
        fs::create_dir_all(d).at(d)?;
    }
    let jobs: Vec<(usize, &PathBuf)> = sources.iter().enumerate().collect();
    let digests = crate::airgap::files::run_parallel(
        &jobs,
        crate::airgap::files::copy_workers(),
        |(i, src)| copy_content_file(src, &content[*i], &placements[*i], vols, progress),
    )?;
    // Most of the files' pages are on disk by now: their writeback ran
    // while later files were hashed.
    let written: Vec<PathBuf> = placements
        .iter()
        .flatten()
        .map(|p| vols.of(p.volume).join(&p.entry))
        .collect();
    crate::airgap::files::sync_files(&written)?;
    // The folders the files were created in, then theirs.
    let mut parents: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    for d in &dirs {
        sync_dir(d)?;
        if let Some(p) = d.parent() {
            parents.insert(p.to_path_buf());
        }
    }
    for d in &parents {
        sync_dir(d)?;
    }
    Ok(digests)
}

/// Copies one stored content file into its bundle file(s) and checks it
/// is what the store recorded (so a corrupted store file stops the
/// export): its size and SHA-256 (the update metadata's where it gives
/// one), and its SHA-1 where the metadata gives no SHA-256.
fn copy_content_file(
    src: &Path,
    f: &ContentToSend,
    parts: &[Placement],
    vols: &VolumeDirs<'_>,
    progress: &dyn Progress,
) -> Result<Vec<[u8; 32]>> {
    use crate::airgap::files::{COPY_BUF, Hashers, copy_hashed};
    let mut input = File::open(src).at(src)?;
    let mut whole = Hashers::new(!f.metadata_sha256);
    let mut buf = vec![0u8; COPY_BUF];
    let split = parts.len() > 1;
    let mut digests = Vec::with_capacity(parts.len());
    let on_bytes = |n: u64| progress.advance(n);
    for p in parts {
        let dest = vols.of(p.volume).join(&p.entry);
        let mut out = File::create(&dest).at(&dest)?;
        let mut part = Hashers::new(false);
        let hashers: &mut [&mut Hashers] = if split {
            &mut [&mut whole, &mut part]
        } else {
            &mut [&mut whole]
        };
        copy_hashed(
            &mut input,
            Some(&mut out),
            p.len,
            hashers,
            &mut buf,
            &on_bytes,
        )
        .at(src)?;
        crate::airgap::files::start_writeback(&out);
        if split {
            digests.push(part.finish().sha256);
        }
    }
    // Rule: the exporter never sends bytes that differ from what its store
    // recorded.
    let longer = loop {
        match io::Read::read(&mut input, &mut buf[..1]) {
            Ok(n) => break n > 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(src, e)),
        }
    };
    let d = whole.finish();
    let size = if longer { d.size + 1 } else { d.size };
    crate::store::content::verify_against(
        &src.display().to_string(),
        &crate::store::content::Expected {
            sha1: f.sha1,
            sha256: Some(f.sha256),
            size: Some(f.size),
        },
        &d.sha1.unwrap_or(f.sha1),
        &d.sha256,
        size,
    )?;
    if !split {
        digests.push(d.sha256);
    }
    Ok(digests)
}

/// Every bundle exported, per destination and seq (the chains).
pub fn history(store: &Store) -> Result<Vec<ExportedLink>> {
    store.export_history()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(size: u64) -> ContentToSend {
        ContentToSend {
            sha1: [1; 20],
            rel_path: "01/X.cab".into(),
            size,
            sha256: [2; 32],
            metadata_sha256: true,
        }
    }

    #[test]
    fn placement_respects_volume_size_and_splits_big_files() {
        let vol = 8u64 << 20;
        let files = vec![planned(3 << 20), planned(20 << 20), planned(100)];
        let (pl, n) = place_content(&files, Some(vol), 0).unwrap();
        let mut per_volume: BTreeMap<u32, u64> = BTreeMap::new();
        for parts in &pl {
            for p in parts {
                *per_volume.entry(p.volume).or_default() += TAR_BLOCK + padded(p.len);
            }
        }
        for used in per_volume.values() {
            assert!(used + TAR_END + VOLUME_RESERVE <= vol, "{used}");
        }
        assert!(
            pl[1].len() >= 3,
            "a 20 MiB file is split over 8 MiB volumes"
        );
        assert_eq!(pl[1].iter().map(|p| p.len).sum::<u64>(), 20 << 20);
        assert!(pl[1][0].entry.ends_with(".part0001"));
        assert_eq!(pl[0][0].entry, "01/X.cab");
        assert_eq!(n, per_volume.len() as u32);
        assert!(place_content(&files, Some(VOLUME_RESERVE + 1000), 0).is_err());
    }

    /// The bytes each volume holds besides its manifest, sums and
    /// signature: volume 1 the statements and metadata (`vol1_used`) and
    /// the reservation for `content.json`; every volume its content pack.
    fn volume_usage(placed: &Placed, vol1_used: u64) -> BTreeMap<u32, u64> {
        let mut used: BTreeMap<u32, u64> = BTreeMap::new();
        used.insert(1, vol1_used + placed.reserve);
        let mut packs: BTreeMap<u32, u64> = BTreeMap::new();
        for parts in &placed.placements {
            for p in parts {
                *packs.entry(p.volume).or_default() += TAR_BLOCK + padded(p.len);
            }
        }
        for (v, bytes) in packs {
            *used.entry(v).or_default() += bytes + TAR_END;
        }
        used
    }

    fn files_of(sizes: &[u64]) -> Vec<ContentToSend> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ContentToSend {
                sha1: [i as u8; 20],
                rel_path: format!("{:02X}/{:040X}.cab", i % 256, i),
                size,
                sha256: [3; 32],
                metadata_sha256: true,
            })
            .collect()
    }

    /// Files of 5-8 MiB over `--volume-size 4M` (as in issue 9's example):
    /// every file is split into two or three parts, and the old reservation
    /// of 400 bytes a file did not hold.
    #[test]
    fn the_index_of_files_split_into_many_parts_fits_its_reservation() {
        let sizes: Vec<u64> = (0..12u64).map(|i| (5 << 20) + i * 300_007).collect();
        let files = files_of(&sizes);
        let placed =
            place_with_index(&files, Some(4 << 20), 300 << 10, ContentLayout::Packs).unwrap();
        assert!(placed.index.len() as u64 <= placed.reserve);
        assert!(
            placed.index.len() > 512 + 12 * 400,
            "the old reservation would not hold: {}",
            placed.index.len()
        );
        for (v, used) in volume_usage(&placed, 300 << 10) {
            assert!(used + VOLUME_RESERVE <= 4 << 20, "volume {v}: {used}");
        }
    }

    /// Version 3: what each volume holds besides its manifest, signature
    /// and the non-content lines of its SHA256SUMS: volume 1 `vol1_used`
    /// and the index reservation; every volume its content files and their
    /// SHA256SUMS lines.
    fn volume_usage_files(placed: &Placed, vol1_used: u64) -> BTreeMap<u32, u64> {
        let mut used: BTreeMap<u32, u64> = BTreeMap::new();
        used.insert(1, vol1_used + placed.reserve);
        for parts in &placed.placements {
            for p in parts {
                *used.entry(p.volume).or_default() += p.len + sums_line_len(&p.entry);
            }
        }
        used
    }

    /// FAT32 holds no file of 4 GiB or more: a larger content file is
    /// split into parts under `parts/` even without volumes; a smaller one
    /// stays whole under `content/`.
    #[test]
    fn files_over_4_gib_are_split_for_fat32() {
        let files = files_of(&[9 << 30, 100]);
        let (pl, n) = place_files(&files, None, 0).unwrap();
        assert_eq!(n, 1);
        assert_eq!(pl[0].len(), 3);
        assert!(pl[0].iter().all(|p| p.len <= format::MAX_BUNDLE_FILE));
        assert_eq!(pl[0].iter().map(|p| p.len).sum::<u64>(), 9 << 30);
        assert_eq!(
            pl[0][2].entry,
            format!("parts/{}.part0003", files[0].rel_path)
        );
        assert_eq!(pl[1].len(), 1);
        assert_eq!(pl[1][0].entry, format!("content/{}", files[1].rel_path));
        // Within volumes too.
        let (pl, _) = place_files(&files, Some(6 << 30), 0).unwrap();
        assert!(pl[0].iter().all(|p| p.len <= format::MAX_BUNDLE_FILE));
    }

    proptest::proptest! {
        /// Version 3, whatever the file sizes and the volume size: the
        /// index fits the space kept for it and its bound, every volume
        /// stays within the volume size (SHA256SUMS lines and reserve
        /// included), every file's parts add up to it, and the parts never
        /// go back to an earlier volume.
        #[test]
        fn files_placement_always_fits(
            sizes in proptest::collection::vec(
                proptest::prop_oneof![0u64..4096, 0u64..(3 << 20), 0u64..(64 << 20)],
                0..150,
            ),
            volume_size in MIN_VOLUME_SIZE..(48u64 << 20),
            vol1_used in 0u64..(256 << 10),
        ) {
            let files = files_of(&sizes);
            match place_with_index(&files, Some(volume_size), vol1_used, ContentLayout::Files) {
                Ok(placed) => {
                    proptest::prop_assert!(placed.index.len() as u64 <= placed.reserve);
                    proptest::prop_assert!(placed.index.len() as u64 <= file_index_bound(&files).unwrap());
                    let usage = volume_usage_files(&placed, vol1_used);
                    for (v, used) in &usage {
                        proptest::prop_assert!(
                            used + VOLUME_RESERVE <= volume_size,
                            "volume {} holds {} of {}", v, used + VOLUME_RESERVE, volume_size
                        );
                    }
                    proptest::prop_assert_eq!(usage.keys().last().copied(), Some(placed.volumes));
                    let mut last = 1;
                    for (f, parts) in files.iter().zip(&placed.placements) {
                        proptest::prop_assert_eq!(parts.iter().map(|p| p.len).sum::<u64>(), f.size);
                        for p in parts {
                            proptest::prop_assert!(p.volume >= last);
                            last = p.volume;
                        }
                    }
                    // The index with the real digests has the same length.
                    let digests: Vec<Vec<[u8; 32]>> = placed.placements.iter().map(|p| vec![[7; 32]; p.len()]).collect();
                    proptest::prop_assert_eq!(
                        file_index(&files, &placed.placements, Some(&digests)).unwrap().len(),
                        placed.index.len()
                    );
                }
                Err(e) => proptest::prop_assert!(e.to_string().contains("cannot hold volume 1"), "{}", e),
            }
        }

        /// Whatever the file sizes and the volume size: the index fits the
        /// space kept for it, every volume stays within the volume size
        /// (its reserve included), every file's parts add up to it, and the
        /// provable bound is above the real index.
        #[test]
        fn reservation_always_holds_and_every_volume_fits(
            sizes in proptest::collection::vec(
                proptest::prop_oneof![0u64..4096, 0u64..(3 << 20), 0u64..(64 << 20)],
                0..150,
            ),
            volume_size in MIN_VOLUME_SIZE..(48u64 << 20),
            vol1_used in 0u64..(256 << 10),
        ) {
            let files = files_of(&sizes);
            match place_with_index(&files, Some(volume_size), vol1_used, ContentLayout::Packs) {
                Ok(placed) => {
                    proptest::prop_assert!(placed.index.len() as u64 <= placed.reserve);
                    proptest::prop_assert!(placed.index.len() as u64 <= content_index_bound(&files).unwrap());
                    let usage = volume_usage(&placed, vol1_used);
                    for (v, used) in &usage {
                        proptest::prop_assert!(
                            used + VOLUME_RESERVE <= volume_size,
                            "volume {} holds {} of {}", v, used + VOLUME_RESERVE, volume_size
                        );
                    }
                    proptest::prop_assert_eq!(usage.keys().last().copied(), Some(placed.volumes));
                    for (f, parts) in files.iter().zip(&placed.placements) {
                        proptest::prop_assert_eq!(parts.iter().map(|p| p.len).sum::<u64>(), f.size);
                    }
                }
                // Only a volume 1 too small for the index is refused.
                Err(e) => proptest::prop_assert!(e.to_string().contains("cannot hold volume 1"), "{}", e),
            }
        }
    }
}
