//! Store work off the async threads: the store is synchronous SQLite, so
//! every request that reads it runs on tokio's blocking pool, bounded here.
//!
//! - **Admission**: at most `workers + queue` requests hold or wait for a
//!   store worker. One more is refused at once ([`Busy`]: the server answers
//!   503 with `Retry-After`) instead of queueing without end.
//! - **Workers**: at most `workers` run at once, each with a [`Store`]
//!   checked out of a pool of open handles and returned afterwards. A
//!   handle is a SQLite connection (WAL: readers never block each other nor
//!   the writer); opening one per request would cost a file open, schema
//!   checks and pragmas each time, and a cold page cache. The pool never
//!   holds more handles than workers, each with a small page cache, so
//!   memory stays bounded whatever the number of clients.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::store::Store;

/// Page cache of one pooled store handle, KiB (the CLI's handles use
/// 32 MiB; the server has several).
const POOL_CACHE_KIB: i64 = 8 * 1024;
/// How long a handle waits for an importer's write lock before giving up
/// on a bookkeeping write.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The queue for store workers is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy;

/// Why store work produced no answer.
#[derive(Debug)]
pub(crate) enum WorkError {
    Busy,
    /// The store could not be opened, or the work panicked.
    Failed(String),
}

pub(crate) struct StorePool {
    root: PathBuf,
    admit: Arc<Semaphore>,
    run: Arc<Semaphore>,
    idle: Mutex<Vec<Store>>,
}

/// A place in the queue for a store worker.
pub(crate) struct Ticket(#[allow(dead_code)] OwnedSemaphorePermit);

impl StorePool {
    pub(crate) fn new(root: PathBuf, workers: usize, queue: usize) -> StorePool {
        StorePool {
            root,
            admit: Arc::new(Semaphore::new(workers.saturating_add(queue))),
            run: Arc::new(Semaphore::new(workers)),
            idle: Mutex::new(Vec::with_capacity(workers)),
        }
    }

    /// A place in the queue, or [`Busy`] when it is full.
    pub(crate) fn admit(&self) -> std::result::Result<Ticket, Busy> {
        self.admit
            .clone()
            .try_acquire_owned()
            .map(Ticket)
            .map_err(|_| Busy)
    }

    /// Runs `work` with a store handle on the blocking pool, once a worker
    /// is free.
    pub(crate) async fn run<T, F>(
        self: &Arc<Self>,
        ticket: Ticket,
        work: F,
    ) -> std::result::Result<T, WorkError>
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .run
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| WorkError::Busy)?;
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _held = (ticket, permit);
            let store = pool.checkout()?;
            let out = work(&store);
            pool.checkin(store);
            Ok::<T, Error>(out)
        })
        .await;
        match joined {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(WorkError::Failed(e.to_string())),
            Err(e) => Err(WorkError::Failed(format!("store work failed: {e}"))),
        }
    }

    fn checkout(&self) -> Result<Store> {
        if let Some(s) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(s);
        }
        let store = Store::open(&self.root)?;
        crate::store::serving::tune_pooled_handle(&store, BUSY_TIMEOUT, POOL_CACHE_KIB)?;
        Ok(store)
    }

    fn checkin(&self, store: Store) {
        if let Ok(mut v) = self.idle.lock() {
            v.push(store);
        }
    }

    /// Open handles waiting in the pool (for tests).
    #[cfg(test)]
    fn idle_handles(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_bounded_and_handles_are_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        Store::init(&root, "t", crate::store::Mode::Autonomous).unwrap();
        let pool = Arc::new(StorePool::new(root, 2, 1));
        let a = pool.admit().unwrap();
        let b = pool.admit().unwrap();
        let c = pool.admit().unwrap();
        assert_eq!(
            pool.admit().err(),
            Some(Busy),
            "2 workers + 1 queued, then busy"
        );
        drop(c);
        let c = pool.admit().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (x, y, z) = tokio::join!(
                pool.run(a, |s| s.info().name.clone()),
                pool.run(b, |s| s.info().name.clone()),
                pool.run(c, |s| s.info().name.clone()),
            );
            for r in [x, y, z] {
                assert_eq!(r.unwrap(), "t");
            }
        });
        assert!(pool.idle_handles() <= 2, "never more handles than workers");
        assert!(pool.admit().is_ok(), "tickets are returned");
        let t = pool.admit().unwrap();
        let r = rt.block_on(pool.run(t, |_| -> u8 { panic!("boom") }));
        assert!(matches!(r, Err(WorkError::Failed(_))));
    }
}
