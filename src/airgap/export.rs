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

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::airgap::format::{
    self, BundleKind, CONTENT_ENTRY, ContentMode, ContentRecord, Counts, Filters, GroupRecord,
    HashingWriter, MANIFEST, METADATA_PACK, Manifest, PackEntry, PartRecord, REVISIONS_DIR,
    STATE_ENTRY, SUMS, SUMS_SIG, Source, State, TRUST_DIR,
};
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::store::content::sync_dir;
use crate::store::journal::Anchor;
use crate::store::{Store, now_rfc3339};
use crate::trust::SecretKey;

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
    pub manifest_sha256: String,
    /// The queued trust statements the bundle carries, in order.
    pub trust_statements: Vec<crate::trust::StatementSummary>,
    /// SHA-1s of the content files the bundle carries (for the ledger).
    #[serde(skip)]
    pub sent_sha1: Vec<[u8; 20]>,
}

struct Ledger {
    last_seq: u64,
    last_manifest_sha256: String,
    last_to_anchor: String,
    last_stmt_seq: i64,
    filters: String,
}

/// One exported link of a destination's chain (`export_history`).
struct Link {
    seq: u64,
    manifest_sha256: String,
    full: bool,
    to_anchor: String,
    /// The last trust statement the chain had carried once this link was
    /// exported (unknown for links exported before schema 6).
    last_stmt_seq: Option<i64>,
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

/// One content file to send.
struct Planned {
    sha1: [u8; 20],
    rel_path: String,
    size: u64,
    sha256: [u8; 32],
}

fn rfc3339(t: time::OffsetDateTime) -> Result<String> {
    t.replace_nanosecond(0)
        .map_err(|e| Error::invalid("time", e.to_string()))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::invalid("time", e.to_string()))
}

fn read_ledger(conn: &rusqlite::Connection, destination: &str) -> Result<Option<Ledger>> {
    Ok(conn
        .query_row(
            "SELECT last_seq, last_manifest_sha256, last_to_anchor, last_stmt_seq, filters FROM export_ledger WHERE destination = ?1",
            [destination],
            |r| {
                Ok(Ledger {
                    last_seq: r.get::<_, i64>(0)? as u64,
                    last_manifest_sha256: r.get(1)?,
                    last_to_anchor: r.get(2)?,
                    last_stmt_seq: r.get(3)?,
                    filters: r.get(4)?,
                })
            },
        )
        .optional()?)
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
    use crate::model::units::{MAX_EXPIRES, MIN_EXPIRES, duration_text};
    check_destination_name(opts.destination)?;
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

/// The content files to send, in a stable order.
fn plan_content(
    conn: &rusqlite::Connection,
    destination: &str,
    mode: ContentMode,
    since: Option<i64>,
    to: i64,
    resend: bool,
) -> Result<(Vec<Planned>, u64)> {
    if mode == ContentMode::None {
        return Ok((Vec::new(), 0));
    }
    // Updates whose files qualify.
    conn.execute_batch("DROP TABLE IF EXISTS temp.content_updates; CREATE TEMP TABLE content_updates (update_id TEXT PRIMARY KEY) WITHOUT ROWID;")?;
    match mode {
        ContentMode::All => {
            conn.execute(
                "INSERT INTO temp.content_updates SELECT update_id FROM temp.scope",
                [],
            )?;
        }
        ContentMode::Approved => {
            conn.execute(
                "INSERT OR IGNORE INTO temp.content_updates SELECT DISTINCT d.update_id FROM deployments d \
                 JOIN temp.scope s ON s.update_id = d.update_id WHERE d.removed = 0 AND d.action = 'install'",
                [],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO temp.content_updates SELECT DISTINCT x.target_id FROM relationships x \
                 JOIN updates u ON u.current_rev = x.rev_id JOIN temp.content_updates c ON c.update_id = u.update_id \
                 WHERE x.rel = 'bundled'",
                [],
            )?;
        }
        ContentMode::None => {}
    }
    // Candidate files: everything for a full bundle; for an incremental one,
    // only what the change touches (content arrived, revisions added,
    // approvals changed), so the work is proportional to the change.
    conn.execute_batch("DROP TABLE IF EXISTS temp.cand; CREATE TEMP TABLE cand (sha1 BLOB PRIMARY KEY) WITHOUT ROWID;")?;
    match since {
        None => {
            conn.execute(
                "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id \
                 JOIN temp.content_updates c ON c.update_id = r.update_id",
                [],
            )?;
        }
        Some(from) => {
            conn.execute("INSERT OR IGNORE INTO temp.cand SELECT sha1 FROM content WHERE seq > ?1 AND seq <= ?2", params![from, to])?;
            conn.execute(
                "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id \
                 WHERE r.seq > ?1 AND r.seq <= ?2",
                params![from, to],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM deployments d \
                 JOIN temp.content_updates c ON c.update_id = d.update_id \
                 JOIN revisions r ON r.update_id = d.update_id JOIN files f ON f.rev_id = r.rev_id \
                 WHERE d.last_change_seq > ?1 AND d.last_change_seq <= ?2",
                params![from, to],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO temp.cand SELECT f.sha1 FROM deployments d \
                 JOIN updates u ON u.update_id = d.update_id JOIN relationships x ON x.rev_id = u.current_rev AND x.rel = 'bundled' \
                 JOIN revisions r ON r.update_id = x.target_id JOIN files f ON f.rev_id = r.rev_id \
                 WHERE d.last_change_seq > ?1 AND d.last_change_seq <= ?2",
                params![from, to],
            )?;
        }
    }
    // Keep candidates that qualify, are held, and were not sent before.
    let mut st = conn.prepare(
        "SELECT c.sha1, c.rel_path, c.size, c.sha256 FROM temp.cand k JOIN content c ON c.sha1 = k.sha1 \
         WHERE c.seq <= ?2 \
         AND EXISTS (SELECT 1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id JOIN temp.content_updates u ON u.update_id = r.update_id WHERE f.sha1 = c.sha1) \
         AND (?3 OR NOT EXISTS (SELECT 1 FROM export_sent_content s WHERE s.destination = ?1 AND s.sha1 = c.sha1)) \
         ORDER BY c.rel_path",
    )?;
    // A full bundle starts a new chain: it carries all content again.
    let full = since.is_none() || resend;
    let rows = st.query_map(params![destination, to, full], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (sha1, rel_path, size, sha256) = row?;
        let bad = || Error::Refused(format!("store content row {rel_path} is corrupt"));
        out.push(Planned {
            sha1: sha1.try_into().map_err(|_| bad())?,
            rel_path: rel_path.clone(),
            size: u64::try_from(size).map_err(|_| bad())?,
            sha256: sha256.try_into().map_err(|_| bad())?,
        });
    }
    // Referenced by the scope but not held (not downloaded yet).
    let missing: i64 = conn.query_row(
        "SELECT COUNT(*) FROM temp.cand k WHERE NOT EXISTS (SELECT 1 FROM content c WHERE c.sha1 = k.sha1 AND c.seq <= ?1) \
         AND EXISTS (SELECT 1 FROM files f JOIN revisions r ON r.rev_id = f.rev_id JOIN temp.content_updates u ON u.update_id = r.update_id WHERE f.sha1 = k.sha1)",
        [to],
        |r| r.get(0),
    )?;
    Ok((out, missing.max(0) as u64))
}

/// Where each content part goes: volume, tar entry name, length.
struct Placement {
    volume: u32,
    entry: String,
    len: u64,
}

fn padded(n: u64) -> u64 {
    n.div_ceil(TAR_BLOCK) * TAR_BLOCK
}

/// Splits content over volumes so that each volume stays within
/// `volume_size` (tar headers, padding and end blocks included). Returns the
/// placements per file and the number of volumes.
fn place_content(
    files: &[Planned],
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
fn content_index(files: &[Planned], placements: &[Vec<Placement>]) -> Result<Vec<u8>> {
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
fn content_index_bound(files: &[Planned]) -> Result<u64> {
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
struct Placed {
    placements: Vec<Vec<Placement>>,
    volumes: u32,
    /// `content.json`.
    index: Vec<u8>,
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
fn place_with_index(files: &[Planned], volume_size: Option<u64>, vol1_used: u64) -> Result<Placed> {
    let Some(cap) = volume_size else {
        let (placements, volumes) = place_content(files, None, 0)?;
        let index = content_index(files, &placements)?;
        return Ok(Placed {
            placements,
            volumes,
            index,
            reserve: 0,
        });
    };
    let attempt = |reserve: u64| -> Result<Placed> {
        check_volume1_fits(cap, vol1_used, reserve)?;
        let (placements, volumes) = place_content(files, Some(cap), vol1_used + reserve)?;
        let index = content_index(files, &placements)?;
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
    let placed = attempt(content_index_bound(files)?)?;
    if placed.index.len() as u64 > placed.reserve {
        return Err(Error::Refused(format!(
            "content index ({} bytes) larger than its bound ({} bytes); report this bug",
            placed.index.len(),
            placed.reserve
        )));
    }
    Ok(placed)
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
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)
}

/// The links exported to `destination`, oldest first.
fn links(conn: &rusqlite::Connection, destination: &str) -> Result<Vec<Link>> {
    let mut st = conn.prepare(
        "SELECT seq, manifest_sha256, kind, to_anchor, last_stmt_seq FROM export_history \
         WHERE destination = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([destination], |r| {
        Ok(Link {
            seq: r.get::<_, i64>(0)?.max(0) as u64,
            manifest_sha256: r.get(1)?,
            full: r.get::<_, String>(2)? == "full",
            to_anchor: r.get(3)?,
            last_stmt_seq: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
    conn: &rusqlite::Connection,
    destination: &str,
    has_chain: bool,
    anchor: &Anchor,
) -> Result<Attach> {
    let anchor = anchor.to_string();
    // Rule: `--since` continues a chain; the importer refuses an
    // incremental bundle before its first full one.
    if !has_chain {
        return Err(Error::Refused(format!(
            "no bundle was exported to {destination:?} yet: its first bundle must be a full one (export without --since)"
        )));
    }
    let links = links(conn, destination)?;
    let Some(newest) = links.iter().rposition(|l| l.to_anchor == anchor) else {
        return Err(Error::Refused(format!(
            "no bundle exported to {destination:?} ended at anchor {anchor}; `gapsync exports list` shows the links, \
             `gapsync imports list` on the disconnected server the last one it applied"
        )));
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
    tx: &rusqlite::Connection,
    destination: &str,
    from: &Anchor,
    statements: usize,
) -> Result<()> {
    let changed: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM journal WHERE seq > ?1)",
        [from.seq],
        |r| r.get(0),
    )?;
    if changed || statements > 0 {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "nothing to export to {destination:?}: no change since {from} and no trust statement queued; \
         pass --allow-empty to write an empty bundle anyway"
    )))
}

/// A `.partial` folder beside `--out` that is removed when dropped (on
/// every error, and on unwinding) unless it was renamed into place.
struct Partial {
    path: PathBuf,
    armed: bool,
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
    if opts.out.exists() {
        return Err(Error::invalid(
            opts.out.display().to_string(),
            "already exists; choose a new bundle path",
        ));
    }
    let out_parent = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out_name = opts
        .out
        .file_name()
        .ok_or_else(|| Error::invalid(opts.out.display().to_string(), "not a folder path"))?
        .to_string_lossy()
        .to_string();
    fs::create_dir_all(out_parent).at(out_parent)?;
    let mut partial = Partial {
        path: out_parent.join(format!(
            ".{out_name}.partial-{}",
            uuid::Uuid::new_v4().simple()
        )),
        armed: true,
    };
    let mut report = export_into(store, opts, &partial.path, progress)?;
    // The ledger rows and the bundle appear together: the rows are
    // written, the folder renamed into place, then the transaction
    // commits; if the commit fails the folder is taken back.
    let tx = record_ledger(store, opts, &report)?;
    fs::rename(&partial.path, opts.out).map_err(|e| Error::io(opts.out, e))?;
    partial.armed = false;
    crate::failpoint::hit("export-before-ledger-commit");
    if let Err(e) = tx.commit() {
        let _ = fs::remove_dir_all(opts.out);
        return Err(e.into());
    }
    sync_dir(out_parent)?;
    report.path = opts.out.to_path_buf();
    Ok(report)
}

fn export_into(
    store: &mut Store,
    opts: &ExportOptions<'_>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let server_id = store.info().server_id;
    let server_name = store.info().name.clone();
    let ledger = read_ledger(store.conn(), opts.destination)?;
    let filters_json = serde_json::to_string(&opts.filters)
        .map_err(|e| Error::invalid("filters", e.to_string()))?;
    // Which kind of bundle, from where.
    let from: Option<Anchor> = if opts.full {
        None
    } else if let Some(a) = &opts.since {
        Some(store.own_anchor(&a.to_string())?)
    } else if let Some(l) = &ledger {
        Some(store.own_anchor(&l.last_to_anchor)?)
    } else {
        None
    };
    if let (Some(_), Some(l)) = (&from, &ledger)
        && l.filters != filters_json
    {
        return Err(Error::Refused(format!(
            "the filters differ from those of the chain to {:?} ({}); export with --full to start over with the new filters",
            opts.destination, l.filters
        )));
    }
    let attach = match (&opts.since, &from) {
        (Some(_), Some(anchor)) => {
            attach_since(store.conn(), opts.destination, ledger.is_some(), anchor)?
        }
        _ => Attach {
            seq: ledger.as_ref().map(|l| l.last_seq + 1).unwrap_or(1),
            prev: ledger.as_ref().map(|l| l.last_manifest_sha256.clone()),
            equivalents: Vec::new(),
            stmt_after: ledger.as_ref().map(|l| l.last_stmt_seq).unwrap_or(0),
        },
    };
    let (seq, prev, last_stmt) = (attach.seq, attach.prev.clone(), attach.stmt_after);

    let tx = store.conn_mut().transaction()?;
    let to_seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
        r.get(0)
    })?;
    let to = Anchor {
        server_id,
        seq: to_seq,
    };
    let from_seq = from.map(|a| a.seq);
    let statements = crate::store::trust::statements_after(&tx, last_stmt)?;
    if let Some(f) = &from
        && !opts.allow_empty
    {
        rule_not_empty(&tx, opts.destination, f, statements.len())?;
    }
    crate::store::scope::fill_scope(
        &tx,
        &opts.filters.products,
        &opts.filters.classifications,
        &opts.filters.languages,
    )?;
    let mut counts = Counts::default();

    // --- state
    let mut state = State::default();
    {
        let (sql, args): (&str, Vec<i64>) = match from_seq {
            None => (
                "SELECT group_id, name, parent_id FROM groups WHERE builtin = 0 ORDER BY seq",
                vec![],
            ),
            Some(f) => (
                "SELECT group_id, name, parent_id FROM groups WHERE builtin = 0 AND seq > ?1 AND seq <= ?2 ORDER BY seq",
                vec![f, to_seq],
            ),
        };
        let mut st = tx.prepare(sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(GroupRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                parent_id: r.get(2)?,
            })
        })?;
        for g in rows {
            state.groups.push(g?);
        }
        if let Some(f) = from_seq {
            let mut st = tx.prepare("SELECT subject FROM journal WHERE kind = 'group_removed' AND seq > ?1 AND seq <= ?2 ORDER BY seq")?;
            for r in st.query_map(params![f, to_seq], |r| r.get(0))? {
                state.removed_groups.push(r?);
            }
        }
        let dsql = format!(
            "SELECT d.deployment_id, d.update_id, d.revision, d.group_id, d.action, d.admin_name, d.deadline, d.go_live, \
             d.download_priority, d.is_assigned, d.removed FROM deployments d JOIN temp.scope s ON s.update_id = d.update_id \
             WHERE {} ORDER BY d.last_change_seq",
            if from_seq.is_some() {
                "d.last_change_seq > ?1 AND d.last_change_seq <= ?2"
            } else {
                "d.last_change_seq <= ?2 OR ?1 IS NULL"
            }
        );
        let mut st = tx.prepare(&dsql)?;
        let rows = st.query_map(
            params![from_seq, to_seq],
            crate::store::state::deployment_from_row,
        )?;
        for d in rows {
            state.deployments.push(d?);
        }
        let decl_sql = match from_seq {
            None => {
                "SELECT u.update_id FROM updates u JOIN temp.scope s ON s.update_id = u.update_id WHERE u.declined = 1 AND (?1 IS NULL OR 1) ORDER BY u.update_id"
            }
            Some(_) => {
                "SELECT j.subject FROM journal j JOIN temp.scope s ON s.update_id = j.subject WHERE j.kind = 'update_declined' AND j.seq > ?1 AND j.seq <= ?2 ORDER BY j.seq"
            }
        };
        let mut st = tx.prepare(decl_sql)?;
        let rows = match from_seq {
            None => st
                .query_map(params![from_seq], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?,
            Some(f) => st
                .query_map(params![f, to_seq], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?,
        };
        state.declined = rows;
    }
    counts.groups = state.groups.len() as u64;
    counts.removed_groups = state.removed_groups.len() as u64;
    counts.deployments = state.deployments.iter().filter(|d| !d.removed).count() as u64;
    counts.dead_deployments = state.deployments.iter().filter(|d| d.removed).count() as u64;
    counts.declined = state.declined.len() as u64;

    // --- content plan
    // After `--since`, content sent in the replaced links is sent again.
    let resend = opts.since.is_some();
    let (content, missing) = plan_content(
        &tx,
        opts.destination,
        opts.filters.content,
        from_seq,
        to_seq,
        resend,
    )?;
    counts.content_missing = missing;
    counts.content_files = content.len() as u64;
    counts.content_bytes = content.iter().map(|c| c.size).sum();

    // --- trust statements
    counts.trust_statements = statements.len() as u64;

    let multi = opts.volume_size.is_some();
    let vol_dir = |v: u32| {
        if multi {
            dir.join(format::volume_dir_name(v))
        } else {
            dir.to_path_buf()
        }
    };
    fs::create_dir_all(vol_dir(1)).at(vol_dir(1))?;
    let mut packs: Vec<PackEntry> = Vec::new();
    let mut trust_files: Vec<String> = Vec::new();
    let mut vol1_used = 0u64;

    // --- trust statement files (volume 1)
    if !statements.is_empty() {
        fs::create_dir_all(vol_dir(1).join(TRUST_DIR)).at(vol_dir(1))?;
        for (i, q) in statements.iter().enumerate() {
            let name = format!("{TRUST_DIR}/{:04}.json", i + 1);
            write_file(&vol_dir(1).join(&name), &q.body)?;
            write_file(
                &vol_dir(1).join(format!("{name}.minisig")),
                q.minisig.as_bytes(),
            )?;
            vol1_used += q.body.len() as u64 + q.minisig.len() as u64;
            trust_files.push(name);
        }
    }

    // --- metadata pack
    let revision_count_sql = match from_seq {
        None => {
            "SELECT COUNT(*) FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id WHERE r.seq <= ?2 OR ?1 IS NULL"
        }
        Some(_) => {
            "SELECT COUNT(*) FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id WHERE r.seq > ?1 AND r.seq <= ?2"
        }
    };
    let n_revisions: i64 =
        tx.query_row(revision_count_sql, params![from_seq, to_seq], |r| r.get(0))?;
    progress.phase("metadata", Some(n_revisions.max(0) as u64), "revisions");
    {
        let path = vol_dir(1).join(METADATA_PACK);
        let file = File::create(&path).at(&path)?;
        let hw = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let enc = zstd::stream::write::Encoder::new(hw, 3).at(&path)?;
        let mut tar = tar::Builder::new(enc);
        let state_json =
            serde_json::to_vec(&state).map_err(|e| Error::invalid("state", e.to_string()))?;
        append_entry(
            &mut tar,
            STATE_ENTRY,
            state_json.len() as u64,
            &mut &state_json[..],
        )?;
        let rsql = match from_seq {
            None => {
                "SELECT r.update_id, r.revision, r.xml FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id WHERE r.seq <= ?2 OR ?1 IS NULL ORDER BY r.rev_id"
            }
            Some(_) => {
                "SELECT r.update_id, r.revision, r.xml FROM revisions r JOIN temp.scope s ON s.update_id = r.update_id WHERE r.seq > ?1 AND r.seq <= ?2 ORDER BY r.seq"
            }
        };
        let mut st = tx.prepare(rsql)?;
        let mut rows = st.query(params![from_seq, to_seq])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let rev: i32 = row.get(1)?;
            let xml = row
                .get_ref(2)?
                .as_blob()
                .map_err(|e| Error::Refused(format!("revision {id}/{rev}: {e}")))?;
            append_entry(
                &mut tar,
                &format!("{REVISIONS_DIR}/{id}-r{rev}.xml"),
                xml.len() as u64,
                &mut &xml[..],
            )?;
            counts.revisions += 1;
            progress.advance(1);
        }
        let enc = tar.into_inner().map_err(|e| Error::io(&path, e))?;
        let hw = enc.finish().at(&path)?;
        let (mut bw, sha, size) = hw.into_parts();
        bw.flush().at(&path)?;
        bw.get_ref().sync_all().at(&path)?;
        packs.push(PackEntry {
            volume: 1,
            name: METADATA_PACK.to_string(),
            size,
            sha256: sha,
        });
        vol1_used += size;
    }
    progress.finish();

    // --- content placement and content.json (volume 1)
    let Placed {
        placements,
        volumes,
        index: cjson,
        ..
    } = place_with_index(&content, opts.volume_size, vol1_used)?;
    if let Some(cap) = opts.volume_size {
        // An estimate first (before the content is written): the manifest
        // lists a pack per volume.
        let estimate = 16 * 1024 + 256 * (volumes as usize + 2) + 128 * trust_files.len();
        check_reserve_holds(cap, volumes, estimate)?;
    }
    write_file(&vol_dir(1).join(CONTENT_ENTRY), &cjson)?;
    packs.push(PackEntry {
        volume: 1,
        name: CONTENT_ENTRY.to_string(),
        size: cjson.len() as u64,
        sha256: format::sha256_hex(&cjson),
    });

    // --- content packs, one per volume, streamed from the store and
    //     re-verified while copied.
    progress.phase("content", Some(counts.content_bytes), "bytes");
    // The tar builder writes into a BufWriter (so std's copy reads the
    // content straight into its 1 MiB buffer), whose flushes feed the
    // pack's SHA-256 in large pieces.
    type PackWriter = BufWriter<HashingWriter<File>>;
    let mut current: Option<(u32, tar::Builder<PackWriter>)> = None;
    let finish_pack =
        |v: u32, tar: tar::Builder<PackWriter>, packs: &mut Vec<PackEntry>| -> Result<()> {
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
        };
    for (f, parts) in content.iter().zip(&placements) {
        let src = store_content_path(dir_of_store(&tx)?, &f.rel_path);
        let file = File::open(&src).at(&src)?;
        let mut reader = crate::store::content::VerifyingReader::new(file);
        for p in parts {
            if current.as_ref().map(|(v, _)| *v) != Some(p.volume) {
                if let Some((v, tar)) = current.take() {
                    finish_pack(v, tar, &mut packs)?;
                }
                let vd = vol_dir(p.volume);
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
        finish_pack(v, tar, &mut packs)?;
    }
    progress.finish();

    // --- manifest, sums and signatures
    let now = time::OffsetDateTime::now_utc();
    let manifest = Manifest {
        format: format::FORMAT.to_string(),
        version: format::version_for(&attach.equivalents),
        bundle_id: uuid::Uuid::new_v4().to_string(),
        source: Source {
            server_id: server_id.to_string(),
            name: server_name,
        },
        destination: opts.destination.to_string(),
        seq,
        prev_manifest_sha256: prev,
        prev_equivalent_sha256: attach.equivalents.clone(),
        kind: if from.is_some() {
            BundleKind::Incremental
        } else {
            BundleKind::Full
        },
        from_anchor: from.map(|a| a.to_string()),
        to_anchor: to.to_string(),
        created: rfc3339(now)?,
        expires: rfc3339(now.checked_add(opts.expires).ok_or_else(|| {
            Error::bad_argument("expiry", "the end of the validity period is out of range")
        })?)?,
        signer: opts.key.public().id.to_string(),
        filters: opts.filters.clone(),
        counts: counts.clone(),
        volumes,
        packs: packs.clone(),
        trust_statements: trust_files.clone(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::invalid("manifest", e.to_string()))?;
    let manifest_sha256 = format::sha256_hex(&manifest_bytes);
    let mut top_sums: BTreeMap<String, String> = BTreeMap::new();
    let mut bytes_written = 0u64;
    for v in 1..=volumes {
        let vd = vol_dir(v);
        fs::create_dir_all(&vd).at(&vd)?;
        write_file(&vd.join(MANIFEST), &manifest_bytes)?;
        let mut sums: BTreeMap<String, String> = BTreeMap::new();
        sums.insert(MANIFEST.to_string(), manifest_sha256.clone());
        for p in packs.iter().filter(|p| p.volume == v) {
            sums.insert(p.name.clone(), p.sha256.clone());
            bytes_written += p.size;
        }
        if v == 1 {
            for t in &trust_files {
                for name in [t.clone(), format!("{t}.minisig")] {
                    let (h, n) = format::hash_file_sha256(&vd.join(&name))?;
                    sums.insert(name, h);
                    bytes_written += n;
                }
            }
        }
        let sums_text = format::format_sums(&sums);
        write_file(&vd.join(SUMS), sums_text.as_bytes())?;
        let comment = format::trusted_comment(&manifest, Some(v));
        let sig = opts.key.sign(sums_text.as_bytes(), &comment)?;
        if let Some(cap) = opts.volume_size {
            check_reserve_holds(
                cap,
                volumes,
                manifest_bytes.len() + sums_text.len() + sig.len(),
            )?;
        }
        write_file(&vd.join(SUMS_SIG), sig.as_bytes())?;
        bytes_written += manifest_bytes.len() as u64 + sums_text.len() as u64 + sig.len() as u64;
        sync_dir(&vd)?;
        if multi {
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
    if multi {
        write_file(&dir.join(MANIFEST), &manifest_bytes)?;
        top_sums.insert(MANIFEST.to_string(), manifest_sha256.clone());
        let sums_text = format::format_sums(&top_sums);
        write_file(&dir.join(SUMS), sums_text.as_bytes())?;
        let sig = opts.key.sign(
            sums_text.as_bytes(),
            &format::trusted_comment(&manifest, None),
        )?;
        write_file(&dir.join(SUMS_SIG), sig.as_bytes())?;
        sync_dir(dir)?;
    }
    drop(tx); // read-only: nothing to commit
    Ok(ExportReport {
        path: dir.to_path_buf(),
        bundle_id: manifest.bundle_id,
        seq,
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
    })
}

fn dir_of_store(tx: &rusqlite::Connection) -> Result<PathBuf> {
    let path: Option<String> = tx.path().map(|p| p.to_string());
    let db = path.ok_or_else(|| Error::Refused("store database has no path".into()))?;
    Ok(Path::new(&db)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

fn store_content_path(root: PathBuf, rel: &str) -> PathBuf {
    let mut p = root.join(crate::store::CONTENT_DIR);
    for part in rel.split('/') {
        p.push(part);
    }
    p
}

/// Records the bundle in the export ledger, with the content it sent and
/// the trust statements it carried.
fn record_ledger<'s>(
    store: &'s mut Store,
    opts: &ExportOptions<'_>,
    r: &ExportReport,
) -> Result<rusqlite::Transaction<'s>> {
    let filters = serde_json::to_string(&opts.filters)
        .map_err(|e| Error::invalid("filters", e.to_string()))?;
    let now = now_rfc3339();
    let tx = store.conn_mut().transaction()?;
    let max_stmt: i64 = tx.query_row(
        "SELECT COALESCE(MAX(stmt_seq), 0) FROM trust_statements",
        [],
        |row| row.get(0),
    )?;
    tx.execute(
        "INSERT INTO export_ledger (destination, last_seq, last_bundle_id, last_manifest_sha256, last_to_anchor, last_stmt_seq, filters, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (destination) DO UPDATE SET last_seq = excluded.last_seq, \
         last_bundle_id = excluded.last_bundle_id, last_manifest_sha256 = excluded.last_manifest_sha256, \
         last_to_anchor = excluded.last_to_anchor, last_stmt_seq = excluded.last_stmt_seq, filters = excluded.filters, updated = excluded.updated",
        params![opts.destination, r.seq as i64, r.bundle_id, r.manifest_sha256, r.to_anchor, max_stmt, filters, now],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO export_history (destination, seq, bundle_id, manifest_sha256, kind, from_anchor, to_anchor, created, signer, last_stmt_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            opts.destination,
            r.seq as i64,
            r.bundle_id,
            r.manifest_sha256,
            if r.kind == BundleKind::Full { "full" } else { "incremental" },
            r.from_anchor,
            r.to_anchor,
            now,
            opts.key.id().to_string(),
            max_stmt
        ],
    )?;
    // Links after this one (replaced by a `--since` export) are forgotten.
    tx.execute(
        "DELETE FROM export_history WHERE destination = ?1 AND seq > ?2",
        params![opts.destination, r.seq as i64],
    )?;
    if r.kind == BundleKind::Full {
        tx.execute(
            "DELETE FROM export_sent_content WHERE destination = ?1",
            [opts.destination],
        )?;
    }
    {
        let mut st = tx.prepare(
            "INSERT OR IGNORE INTO export_sent_content (destination, sha1) VALUES (?1, ?2)",
        )?;
        for sha1 in &r.sent_sha1 {
            st.execute(params![opts.destination, &sha1[..]])?;
        }
    }
    Ok(tx)
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
}

/// Every bundle exported, per destination and seq (the chains).
pub fn history(store: &Store) -> Result<Vec<ExportedLink>> {
    let mut st = store.conn().prepare(
        "SELECT destination, seq, bundle_id, kind, from_anchor, to_anchor, manifest_sha256, created \
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
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(size: u64) -> Planned {
        Planned {
            sha1: [1; 20],
            rel_path: "01/X.cab".into(),
            size,
            sha256: [2; 32],
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

    fn files_of(sizes: &[u64]) -> Vec<Planned> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Planned {
                sha1: [i as u8; 20],
                rel_path: format!("{:02X}/{:040X}.cab", i % 256, i),
                size,
                sha256: [3; 32],
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
        let placed = place_with_index(&files, Some(4 << 20), 300 << 10).unwrap();
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

    proptest::proptest! {
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
            match place_with_index(&files, Some(volume_size), vol1_used) {
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
