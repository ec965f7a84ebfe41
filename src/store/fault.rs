//! A backend that crashes on purpose, for tests that replay every crash point.
//!
//! [`FaultBackend`] passes everything to the backend under it and counts commits. Armed with
//! [`FaultBackend::crash_at`]`(k)`, the k-th commit does not reach the backend and returns an
//! error, and every commit after it fails too: the process is as good as dead, and everything it
//! had not committed is gone. A test then "restarts" by building a fresh stack over
//! [`FaultBackend::inner`], which holds exactly what was committed before the crash.

use super::{Backend, Batch, Entry, Namespace, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A backend whose k-th commit crashes.
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    commits: AtomicU64,
    crash_at: AtomicU64,
    crashed: AtomicBool,
}

impl FaultBackend {
    /// Over `inner`, disarmed.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        FaultBackend {
            inner,
            commits: AtomicU64::new(0),
            crash_at: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
        }
    }

    /// Crash at the `k`-th commit from now (1 = the next one); 0 disarms.
    pub fn crash_at(&self, k: u64) {
        let base = self.commits.load(Ordering::SeqCst);
        self.crash_at
            .store(if k == 0 { 0 } else { base + k }, Ordering::SeqCst);
    }

    /// Commits attempted so far (the crashed one included).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Whether the crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// The backend under this one: what survives the crash.
    pub fn inner(&self) -> Arc<dyn Backend> {
        self.inner.clone()
    }
}

impl Backend for FaultBackend {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(ns, key)
    }

    fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(ns, prefix)
    }

    fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.inner.last(ns, prefix)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.crash_at.load(Ordering::SeqCst);
        if self.crashed() || (at != 0 && n >= at) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(StoreError::Io {
                op: "commit",
                detail: format!("injected crash at commit {n}"),
            });
        }
        self.inner.commit(batch)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.inner.size_on_disk()
    }

    fn fence(&self) -> Result<(), StoreError> {
        self.inner.fence()
    }

    fn is_fleet(&self) -> bool {
        self.inner.is_fleet()
    }

    fn lock_shared(&self, since: Option<u64>) -> Result<super::Shared, StoreError> {
        self.inner.lock_shared(since)
    }

    fn read_shared(&self, since: u64) -> Result<super::Shared, StoreError> {
        self.inner.read_shared(since)
    }

    fn abandon(&self) {
        self.inner.abandon()
    }

    fn lease(&self) -> Option<super::LeaseStatus> {
        self.inner.lease()
    }

    fn timings(&self) -> Vec<super::Timing> {
        self.inner.timings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn the_kth_commit_and_every_later_one_fail_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sled: Arc<dyn Backend> =
            Arc::new(crate::store::sled::SledBackend::open(dir.path()).unwrap());
        let fault = Arc::new(FaultBackend::new(sled.clone()));
        let s = Store::new(fault.clone());
        fault.crash_at(2);
        let put = |k: &[u8]| s.write(|| s.put(Namespace::Meta, k.to_vec(), b"v".to_vec()));
        put(b"one").unwrap();
        let e = put(b"two").unwrap_err().to_string();
        assert!(e.contains("injected crash at commit 2"), "{e}");
        assert!(put(b"three").is_err());
        assert!(fault.crashed());
        let after = Store::new(fault.inner());
        assert!(after.get(Namespace::Meta, b"one").unwrap().is_some());
        assert!(after.get(Namespace::Meta, b"two").unwrap().is_none());
        assert!(after.get(Namespace::Meta, b"three").unwrap().is_none());
    }
}
