//! What the two backends on the local disk (sled and Warden's log) share: one key space with a
//! namespace byte in front, I/O errors named by their step, directory syncs, the clocks behind
//! their commit timings, and the answer once a commit could not be made durable.

use super::{Namespace, StoreError, Timing};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// `k` in namespace `ns`: its prefix byte, then the key.
pub(super) fn key(ns: Namespace, k: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + k.len());
    out.push(ns.prefix());
    out.extend_from_slice(k);
    out
}

/// An I/O error at step `op`.
pub(super) fn fs_io(op: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        detail: e.to_string(),
    }
}

/// `fsync` the directory `dir`, so the entries made in it survive a power cut.
pub(super) fn sync_dir(dir: &Path, op: &'static str) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fs_io(op))
}

/// What every commit answers once one could not be made durable.
pub(super) fn poisoned(op: &'static str) -> StoreError {
    StoreError::Io {
        op,
        detail: "an earlier commit could not be made durable; restart wardend so it reads what is really on disk (check the disk and its logs first)".into(),
    }
}

/// Total nanoseconds and count of one commit step.
pub(super) type Clock = (AtomicU64, AtomicU64);

/// Run `f`, adding its time and one run to `c`.
pub(super) fn clock<T>(c: &Clock, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    c.0.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    c.1.fetch_add(1, Ordering::Relaxed);
    out
}

/// The timings of `steps`, read from their clocks.
pub(super) fn timings(steps: &[&'static str], clocks: &[Clock]) -> Vec<Timing> {
    steps
        .iter()
        .zip(clocks)
        .map(|(step, (n, c))| Timing {
            step,
            nanos: n.load(Ordering::Relaxed),
            count: c.load(Ordering::Relaxed),
        })
        .collect()
}
