//! The content files of a format-3 bundle (docs/bundle-format.md §10):
//! copied and hashed once, files in parallel on every core.
//!
//! Each byte is read once and hashed once (SHA-256, plus SHA-1 only where
//! the caller needs it) on the worker that copies it; the copy moves in
//! large pieces through one buffer per worker, so memory stays flat
//! whatever the file sizes. Work that only hashes runs one worker per core
//! ([`workers`]); work that also writes runs two ([`copy_workers`]), so that
//! while one worker waits for the disk (a throttled `write`, an fsync) the
//! other keeps the core hashing. `copy_file_range` and reflinks are not used:
//! the bytes must pass through the hash anyway, so an in-kernel copy would
//! add a second read of every byte instead of saving one.

use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha1::Sha1;
use sha2::Digest;

use crate::error::Result;

/// Bytes moved per read: large enough to keep syscalls rare.
pub const COPY_BUF: usize = 1 << 20;
/// At most this many hashing workers (memory: one [`COPY_BUF`] each).
pub const MAX_WORKERS: usize = 8;

/// Workers for work that reads and hashes: the cores available, at most
/// [`MAX_WORKERS`].
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS)
}

/// Workers for work that also writes and fsyncs: two per core (at most
/// 2 × [`MAX_WORKERS`]). On the development machine this took a 2 GiB
/// import from a median of 12.3 s to 10.7 s (docs/performance.md).
pub fn copy_workers() -> usize {
    2 * workers()
}

/// Runs `f` over `items` on `workers` threads and returns the results in
/// item order. On failure, no new item is started and the error of the
/// lowest-numbered failed item is returned: every item before it was
/// started, so this is the error a sequential run would have reported.
pub fn run_parallel<T, R, F>(items: &[T], workers: usize, f: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync,
{
    let n = workers.min(items.len());
    if n <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<R>)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut v) = results.lock() {
                        v.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Starts writing `file`'s dirty pages to disk and returns without waiting
/// (Linux: `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere nothing), so
/// the disk writes one file while the worker hashes the next. It makes
/// nothing durable: the caller fsyncs the file later ([`sync_files`]).
pub fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `file` is an open descriptor for the whole call, which
        // only schedules writeback of its pages. A failure is left to the
        // fsync that follows, which reports it.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// fsyncs each file (reopened for writing, which Windows needs to flush;
/// nothing is truncated), files in parallel.
pub fn sync_files(paths: &[std::path::PathBuf]) -> Result<()> {
    use crate::error::IoContext;
    run_parallel(paths, copy_workers(), |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|f| f.sync_all())
            .at(p)
    })?;
    Ok(())
}

/// What one pass over a file computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub sha256: [u8; 32],
    /// Computed only when asked for.
    pub sha1: Option<[u8; 20]>,
    pub size: u64,
}

/// Hashers for one stream: SHA-256 always (ring's, whose assembly uses
/// SHA-NI or AVX2 where the CPU has them), SHA-1 when asked.
pub struct Hashers {
    sha256: ring::digest::Context,
    sha1: Option<Sha1>,
    size: u64,
}

impl Hashers {
    pub fn new(with_sha1: bool) -> Self {
        Hashers {
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            sha1: with_sha1.then(Sha1::new),
            size: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(s) = self.sha1.as_mut() {
            s.update(data);
        }
        self.size += data.len() as u64;
    }

    pub fn finish(self) -> Digests {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(self.sha256.finish().as_ref());
        Digests {
            sha256,
            sha1: self.sha1.map(|s| s.finalize().into()),
            size: self.size,
        }
    }
}

/// Copies at most `limit` bytes of `reader` into `out` (or nowhere),
/// feeding each piece to every hasher in `hashers` and reporting its
/// length to `on_bytes`. Returns the bytes copied.
pub fn copy_hashed(
    reader: &mut dyn Read,
    mut out: Option<&mut dyn Write>,
    limit: u64,
    hashers: &mut [&mut Hashers],
    buf: &mut [u8],
    on_bytes: &dyn Fn(u64),
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < limit {
        let want = (limit - done).min(buf.len() as u64) as usize;
        let k = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..k];
        for h in hashers.iter_mut() {
            h.update(chunk);
        }
        if let Some(o) = out.as_mut() {
            o.write_all(chunk)?;
        }
        done += k as u64;
        on_bytes(k as u64);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use sha2::Sha256;

    #[test]
    fn parallel_results_keep_their_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..200).collect();
        let out = run_parallel(&items, 4, |i| Ok(i * 2)).unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = run_parallel(&items, 4, |i| {
            if *i >= 50 {
                Err(Error::verification("hash-mismatch", format!("item {i}")))
            } else {
                Ok(*i)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("item 50"), "{err}");
        assert!(
            run_parallel(&Vec::<u32>::new(), 4, |i| Ok(*i))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn copy_hashes_once_and_respects_the_limit() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let mut h = Hashers::new(true);
        let mut buf = vec![0u8; 4096];
        let n = copy_hashed(
            &mut &data[..],
            Some(&mut out),
            1_000_000,
            &mut [&mut h],
            &mut buf,
            &|_| {},
        )
        .unwrap();
        assert_eq!(n, 1_000_000);
        assert_eq!(out, &data[..1_000_000]);
        let d = h.finish();
        assert_eq!(
            d.sha256,
            <[u8; 32]>::from(Sha256::digest(&data[..1_000_000]))
        );
        assert_eq!(d.sha1, Some(Sha1::digest(&data[..1_000_000]).into()));
        assert_eq!(Hashers::new(false).finish().sha1, None);
    }
}
