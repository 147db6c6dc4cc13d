//! The content store: update files laid out as WSUS serves them,
//! `content/<last two hex digits of the SHA-1>/<SHA-1 HEX><extension>`.
//!
//! Invariants:
//! - A file under `content/` is complete and was verified: it is written to
//!   `staging/` first (streamed, hashed while copied, never held whole in
//!   memory), checked against the expected SHA-1/SHA-256/size, fsynced, and
//!   only then renamed into place (and the directory fsynced).
//! - Staged files that are dropped without being committed are removed; a
//!   crash leaves at most `*.part` files in `staging/`, never a partial file
//!   under `content/`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::failpoint;

/// Copy buffer: large enough to keep syscalls rare, small enough to stay flat.
const BUF_SIZE: usize = 1 << 20;

/// What the metadata says a content file must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha1: [u8; 20],
    pub sha256: Option<[u8; 32]>,
    pub size: Option<u64>,
}

/// A verified file in the content store (or staged for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFile {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    pub size: u64,
    /// Path relative to `content/`, with `/` separators: `XX/HEX.ext`.
    pub rel_path: String,
}

/// A file written and verified in `staging/`, not yet visible.
#[derive(Debug)]
pub struct Staged {
    pub file: ContentFile,
    temp: PathBuf,
    committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A staged file being written piece by piece (see `begin_stage`). Dropped
/// before `finish`, it removes its temp file.
pub struct StageWriter {
    name: String,
    out: Option<io::BufWriter<File>>,
    temp: PathBuf,
    hasher: Option<ParallelHasher>,
    size: u64,
    buf: Vec<u8>,
}

impl StageWriter {
    /// Appends everything `reader` yields, hashing while copying.
    pub fn copy_from(&mut self, reader: &mut dyn Read) -> Result<u64> {
        let Some(out) = self.out.as_mut() else {
            return Err(Error::invalid(&self.name, "staged file already finished"));
        };
        let mut n = 0u64;
        loop {
            let k = match reader.read(&mut self.buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.name, e)),
            };
            let chunk = &self.buf[..k];
            if let Some(h) = self.hasher.as_mut() {
                h.update(chunk);
            }
            out.write_all(chunk).at(&self.temp)?;
            n += k as u64;
        }
        self.size += n;
        Ok(n)
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes, verifies against `expected` (when given) and fsyncs.
    pub fn finish(mut self, expected: Option<&Expected>) -> Result<Staged> {
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::invalid(&self.name, "staged file already finished"))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.temp, e.into_error()))?;
        let hasher = self
            .hasher
            .take()
            .ok_or_else(|| Error::invalid(&self.name, "staged file already finished"))?;
        let (sha1, sha256, _) = hasher.finish().at(&self.temp)?;
        // From here on the temp file belongs to `staged` (removed on drop).
        let staged = Staged {
            file: ContentFile {
                sha1,
                sha256,
                size: self.size,
                rel_path: wsus_rel_path(&sha1, &self.name),
            },
            temp: std::mem::take(&mut self.temp),
            committed: false,
        };
        if let Some(expected) = expected {
            verify_against(&self.name, expected, &sha1, &sha256, self.size)?;
        }
        file.sync_all().at(&staged.temp)?;
        Ok(staged)
    }
}

impl Drop for StageWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            self.out.take();
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A file being written into `staging/` by a caller that hashes the
/// bytes itself, once, as it writes them (bundle import, format 3). Writes
/// go straight to the file (callers write in large pieces). Dropped before
/// `finish`, it removes its temp file.
pub struct DirectStage {
    name: String,
    file: Option<File>,
    temp: PathBuf,
}

impl Write for DirectStage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("staged file already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DirectStage {
    /// Checks the digests the caller computed over the bytes it wrote
    /// against `expected` and fsyncs. `sha1` may be left uncomputed only
    /// when `expected` carries a SHA-256 (the metadata binds that SHA-256
    /// to its SHA-1, so a match proves both).
    pub fn finish(
        mut self,
        expected: &Expected,
        sha256: &[u8; 32],
        sha1: Option<&[u8; 20]>,
        size: u64,
    ) -> Result<Staged> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::invalid(&self.name, "staged file already finished"))?;
        let sha1 = match (sha1, expected.sha256) {
            (Some(s), _) => *s,
            (None, Some(_)) => expected.sha1,
            (None, None) => {
                return Err(Error::invalid(
                    &self.name,
                    "neither SHA-1 nor a SHA-256 to check it against",
                ));
            }
        };
        let staged = Staged {
            file: ContentFile {
                sha1,
                sha256: *sha256,
                size,
                rel_path: wsus_rel_path(&sha1, &self.name),
            },
            temp: std::mem::take(&mut self.temp),
            committed: false,
        };
        verify_against(&self.name, expected, &sha1, sha256, size)?;
        file.sync_all().at(&staged.temp)?;
        Ok(staged)
    }
}

impl Drop for DirectStage {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.temp);
        }
    }
}

pub struct ContentStore {
    root: PathBuf,
    staging: PathBuf,
}

/// Rule: a command that brings content checks, before it writes any, that
/// the file system of `dir` has `needed` bytes free; refused otherwise,
/// naming what needs the space, how much, and how much is free. (An
/// unknown free space is not a refusal.)
pub fn check_free_space(dir: &Path, needed: u64, what: &str) -> Result<()> {
    let free = fs4::available_space(dir).unwrap_or(u64::MAX);
    if needed > free {
        return Err(Error::DiskFull {
            path: dir.to_path_buf(),
            what: what.to_string(),
            need: needed,
            free,
        });
    }
    Ok(())
}

/// Upper-case hex, as WSUS names content files.
pub fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// The extension WSUS keeps: the original file's, lower-cased, limited to
/// ASCII alphanumerics (anything else is dropped, so a hostile name cannot
/// reach outside the content tree).
pub fn sanitized_extension(file_name: &str) -> String {
    match Path::new(file_name).extension().and_then(|e| e.to_str()) {
        Some(ext)
            if !ext.is_empty()
                && ext.len() <= 16
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            format!(".{}", ext.to_ascii_lowercase())
        }
        _ => String::new(),
    }
}

/// `XX/HEX.ext` for a SHA-1 and an original file name.
pub fn wsus_rel_path(sha1: &[u8; 20], file_name: &str) -> String {
    let hex = hex_upper(sha1);
    format!("{}/{}{}", &hex[38..], hex, sanitized_extension(file_name))
}

/// Copies `reader` to `out`, hashing SHA-1 and SHA-256 on the way.
pub fn copy_hashing(
    reader: &mut dyn Read,
    out: &mut dyn Write,
) -> io::Result<([u8; 20], [u8; 32], u64)> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut s1 = Sha1::new();
    let mut s256 = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..k];
        s1.update(chunk);
        s256.update(chunk);
        out.write_all(chunk)?;
        n += k as u64;
    }
    Ok((s1.finalize().into(), s256.finalize().into(), n))
}

/// Hashes a whole file (streamed).
pub fn hash_file(path: &Path) -> Result<([u8; 20], [u8; 32], u64)> {
    let mut f = File::open(path).at(path)?;
    copy_hashing(&mut f, &mut io::sink()).at(path)
}

/// fsyncs a directory so a rename in it is durable (a no-op off unix).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

impl ContentStore {
    pub fn new(root: PathBuf, staging: PathBuf) -> Self {
        ContentStore { root, staging }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Absolute path of a stored file.
    pub fn path_of(&self, rel_path: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in rel_path.split('/') {
            p.push(part);
        }
        p
    }

    /// Streams locally produced content (nothing to check it against yet)
    /// into `staging/`, computing its digests; the caller writes them into
    /// the metadata it then creates.
    pub fn stage_computed(&self, reader: &mut dyn Read, name: &str) -> Result<Staged> {
        self.stage_inner(reader, name, None)
    }

    /// Streams `reader` into `staging/`, hashing while copying, then checks
    /// the digests and size against `expected`. `name` is used in errors and
    /// for the extension. Nothing is visible under `content/` yet.
    pub fn stage(&self, reader: &mut dyn Read, name: &str, expected: &Expected) -> Result<Staged> {
        self.stage_inner(reader, name, Some(expected))
    }

    fn stage_inner(
        &self,
        reader: &mut dyn Read,
        name: &str,
        expected: Option<&Expected>,
    ) -> Result<Staged> {
        let mut w = self.begin_stage(name)?;
        w.copy_from(reader)?;
        w.finish(expected)
    }

    /// Starts a staged file that is fed in pieces (a content file split
    /// across bundle volumes): `copy_from` each piece, then `finish`.
    pub fn begin_stage(&self, name: &str) -> Result<StageWriter> {
        let temp = self
            .staging
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let out = File::create(&temp).at(&temp)?;
        Ok(StageWriter {
            name: name.to_string(),
            out: Some(io::BufWriter::with_capacity(BUF_SIZE, out)),
            temp,
            hasher: Some(ParallelHasher::new()),
            size: 0,
            buf: vec![0u8; BUF_SIZE],
        })
    }

    /// Starts a staged file whose bytes the caller hashes (see
    /// [`DirectStage`]).
    pub fn begin_direct_stage(&self, name: &str) -> Result<DirectStage> {
        let temp = self
            .staging
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = File::create(&temp).at(&temp)?;
        Ok(DirectStage {
            name: name.to_string(),
            file: Some(file),
            temp,
        })
    }

    /// Makes a staged file visible: rename into place, fsync the directory.
    /// If the same file is already there it is kept and the staged copy
    /// dropped.
    pub fn commit(&self, mut staged: Staged) -> Result<ContentFile> {
        let dest = self.path_of(&staged.file.rel_path);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        failpoint::hit("content-before-rename");
        fs::rename(&staged.temp, &dest).at(&dest)?;
        staged.committed = true;
        sync_dir(&dir)?;
        Ok(staged.file.clone())
    }

    /// Checks a file already under `content/` (re-hashes it).
    pub fn verify_stored(&self, file: &ContentFile) -> Result<()> {
        let path = self.path_of(&file.rel_path);
        let (sha1, sha256, size) = hash_file(&path)?;
        verify_against(
            &path.display().to_string(),
            &Expected {
                sha1: file.sha1,
                sha256: Some(file.sha256),
                size: Some(file.size),
            },
            &sha1,
            &sha256,
            size,
        )
    }
}

/// Rule: a content file is accepted only if its size, SHA-1 and (when the
/// metadata carries one) SHA-256 equal what the update metadata says.
pub fn verify_against(
    name: &str,
    expected: &Expected,
    sha1: &[u8; 20],
    sha256: &[u8; 32],
    size: u64,
) -> Result<()> {
    if let Some(want) = expected.size
        && want != size
    {
        return Err(Error::DigestMismatch {
            name: name.to_string(),
            what: "size",
            expected: want.to_string(),
            actual: size.to_string(),
        });
    }
    if &expected.sha1 != sha1 {
        return Err(Error::DigestMismatch {
            name: name.to_string(),
            what: "SHA-1",
            expected: hex_upper(&expected.sha1),
            actual: hex_upper(sha1),
        });
    }
    if let Some(want) = &expected.sha256
        && want != sha256
    {
        return Err(Error::DigestMismatch {
            name: name.to_string(),
            what: "SHA-256",
            expected: hex::encode(want),
            actual: hex::encode(sha256),
        });
    }
    Ok(())
}

/// Computes SHA-1 and SHA-256 on a second thread while the caller moves
/// the bytes (read, write, other hashes) on its own: on two cores this
/// halves the CPU time on the copy path. Bytes are gathered into 1 MiB
/// chunks; at most a handful of chunks exist at once (bounded channel,
/// recycled buffers), so memory stays flat.
pub struct ParallelHasher {
    current: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<([u8; 20], [u8; 32])>>,
    size: u64,
}

const HASH_CHUNK: usize = 1 << 20;

impl Default for ParallelHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ParallelHasher {
    pub fn new() -> Self {
        Self::with_sha256(true)
    }

    /// SHA-1 only (the SHA-256 returned is all zeros): for re-checking a
    /// stored file whose name is its SHA-1.
    pub fn sha1_only() -> Self {
        Self::with_sha256(false)
    }

    fn with_sha256(sha256: bool) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = std::thread::spawn(move || {
            let mut s1 = Sha1::new();
            let mut s256 = Sha256::new();
            for buf in rx {
                s1.update(&buf);
                if sha256 {
                    s256.update(&buf);
                }
                let _ = back_tx.send(buf);
            }
            let d256: [u8; 32] = if sha256 {
                s256.finalize().into()
            } else {
                [0u8; 32]
            };
            (s1.finalize().into(), d256)
        });
        ParallelHasher {
            current: Vec::with_capacity(HASH_CHUNK),
            tx: Some(tx),
            back,
            worker: Some(worker),
            size: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let room = HASH_CHUNK - self.current.len();
            let take = room.min(data.len());
            self.current.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.current.len() == HASH_CHUNK {
                self.flush_chunk();
            }
        }
    }

    fn flush_chunk(&mut self) {
        let next = match self.back.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(HASH_CHUNK),
        };
        let full = std::mem::replace(&mut self.current, next);
        if let Some(tx) = &self.tx {
            // The worker only stops when `tx` is dropped, so this cannot fail
            // unless it panicked; `finish` reports that.
            let _ = tx.send(full);
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Waits for the worker and returns (SHA-1, SHA-256, size).
    pub fn finish(mut self) -> io::Result<([u8; 20], [u8; 32], u64)> {
        if !self.current.is_empty() {
            self.flush_chunk();
        }
        self.tx.take();
        let worker = self
            .worker
            .take()
            .ok_or_else(|| io::Error::other("hasher already finished"))?;
        let (a, b) = worker
            .join()
            .map_err(|_| io::Error::other("hashing thread failed"))?;
        Ok((a, b, self.size))
    }
}

impl Drop for ParallelHasher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A reader that computes the SHA-1 and size of what passes through (on a
/// second thread), to check a stored file while it is copied elsewhere.
/// SHA-1 (the file's name) catches any damage since the file was stored,
/// when its SHA-256 was verified; the copy's own SHA-256 is computed by its
/// writer, so one SHA-256 pass per byte is saved.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: ParallelHasher,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R) -> Self {
        VerifyingReader {
            inner,
            hasher: ParallelHasher::sha1_only(),
        }
    }

    /// Rule: the bytes read have the recorded size and SHA-1.
    pub fn check(self, path: &Path, sha1: &[u8; 20], size: u64) -> Result<()> {
        let (got1, got256, n) = self.hasher.finish().at(path)?;
        verify_against(
            &path.display().to_string(),
            &Expected {
                sha1: *sha1,
                sha256: None,
                size: Some(size),
            },
            &got1,
            &got256,
            n,
        )
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(data: &[u8]) -> ([u8; 20], [u8; 32]) {
        (Sha1::digest(data).into(), Sha256::digest(data).into())
    }

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("content");
        let staging = dir.path().join("staging");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&staging).unwrap();
        (dir, ContentStore::new(root, staging))
    }

    #[test]
    fn layout_is_wsus_layout() {
        let sha1 = [0xab; 20];
        let p = wsus_rel_path(&sha1, "Windows10.0-KB123-x64.MSU");
        assert_eq!(p, format!("AB/{}.msu", "AB".repeat(20)));
        assert_eq!(sanitized_extension("a/../../etc"), "");
        assert_eq!(sanitized_extension("x.c\u{0}b"), "");
        assert_eq!(sanitized_extension("noext"), "");
    }

    #[test]
    fn stage_then_commit_places_verified_file() {
        let (_d, cs) = store();
        let data = vec![7u8; 3 * BUF_SIZE + 17];
        let (sha1, sha256) = digests(&data);
        let exp = Expected {
            sha1,
            sha256: Some(sha256),
            size: Some(data.len() as u64),
        };
        let staged = cs.stage(&mut &data[..], "f.cab", &exp).unwrap();
        let rel = staged.file.rel_path.clone();
        assert!(!cs.path_of(&rel).exists(), "not visible before commit");
        let f = cs.commit(staged).unwrap();
        assert_eq!(fs::read(cs.path_of(&f.rel_path)).unwrap(), data);
        cs.verify_stored(&f).unwrap();
        assert_eq!(fs::read_dir(cs.staging()).unwrap().count(), 0);
    }

    #[test]
    fn mismatch_is_rejected_and_leaves_nothing() {
        let (_d, cs) = store();
        let data = b"hello".to_vec();
        let (sha1, sha256) = digests(&data);
        let mut bad256 = sha256;
        bad256[0] ^= 1;
        for exp in [
            Expected {
                sha1: [0; 20],
                sha256: None,
                size: None,
            },
            Expected {
                sha1,
                sha256: Some(bad256),
                size: None,
            },
            Expected {
                sha1,
                sha256: None,
                size: Some(6),
            },
        ] {
            let err = cs.stage(&mut &data[..], "x.exe", &exp).unwrap_err();
            assert!(err.is_verification(), "{err}");
            assert!(err.to_string().contains("x.exe"), "{err}");
        }
        assert_eq!(fs::read_dir(cs.staging()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(cs.root()).unwrap().count(), 0);
    }

    #[test]
    fn dropped_stage_is_removed() {
        let (_d, cs) = store();
        let data = b"abc".to_vec();
        let (sha1, _) = digests(&data);
        let exp = Expected {
            sha1,
            sha256: None,
            size: None,
        };
        let staged = cs.stage(&mut &data[..], "a.cab", &exp).unwrap();
        assert_eq!(fs::read_dir(cs.staging()).unwrap().count(), 1);
        drop(staged);
        assert_eq!(fs::read_dir(cs.staging()).unwrap().count(), 0);
    }
}
