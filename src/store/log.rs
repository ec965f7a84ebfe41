//! An append-only log: the single-node backend whose commit waits for the device once.
//!
//! sled 0.34 commits in two device waits (its flush ends with `sync_file_range(WAIT_AFTER)` on
//! its I/O thread pool, then Warden's `fsync`), and the profile (BENCHMARKS.md, issue 29) puts
//! two thirds of wardend's CPU in it. Warden's state is small and every read is a key or a
//! prefix, so it can live in memory with the log as the only thing on disk:
//! - `apply` encodes the batch, adds it to the pending batches and applies it to the in-memory
//!   map, under one lock, so the log's order is the map's order;
//! - `sync` writes every pending batch as one numbered *group* (a frame per batch, then an end
//!   marker) with one `pwrite` at the log's end, waits once with `fdatasync` (the data and the
//!   size needed to read it back), then answers;
//! - on open, groups are read back in order and each is applied only once its end marker is
//!   read. A group that is incomplete, or damaged, at the end of the file was cut by a crash
//!   and never acknowledged: it is dropped whole and the file cut there. Damage followed by an
//!   intact *later* group is different: that later group was written only after the damaged one
//!   was synced, so the damaged state had been acknowledged. wardend then refuses to start
//!   rather than roll the signer's state back;
//! - when the log is four times what is live (and at least [`COMPACT_AT`]), the next sync writes
//!   the live state to a new file, syncs it, renames it over the log and syncs the directory.
//!
//! File: a 16-byte format header and a 16-byte random salt, then frames: `"wlF1" || u64le group
//! || u32le len || sha256(salt || group || len || payload) || payload`. Payload: `u32le ops || ops × (u8 1 = put | 2 = delete || u32le
//! klen || key || [u32le vlen || value])`, keys carrying their namespace's prefix byte; a
//! payload with no operations ends its group.

use super::disk::{self, clock, fs_io, key, poisoned, Clock};
use super::{Backend, Batch, Entry, Namespace, StoreError, Timing};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

/// The first bytes of the log file: what it is and the format version. A 16-byte random salt
/// follows, drawn for each file and covered by every frame's hash, so bytes a peer or a payer
/// managed to get into a stored value can never pass for a frame of this file.
const MAGIC: &[u8; 16] = b"Warden-log v1\n\0\0";
type Salt = [u8; 16];
const FILE_HEADER: usize = 16 + 16;
/// The largest frame payload written: a batch or a compaction is split into frames of this
/// size at most (a group applies all its frames or none, so splitting keeps it atomic).
const CHUNK: usize = 16 << 20;
/// The log's file name in the state directory.
pub(crate) const LOG: &str = "state.log";
/// A compaction in progress; removed at open if a crash left it.
const LOG_NEW: &str = "state.log.new";
/// Held with `flock` while this process has the directory.
const LOCK: &str = "lock";
/// A log shorter than this is never compacted.
pub const COMPACT_AT: u64 = 64 << 20;
/// Largest record read back; a length above it is a torn or corrupt frame.
const MAX_RECORD: u32 = 1 << 30;
/// Every frame starts with these bytes, so a damaged log can be searched for whole frames.
const FRAME_MAGIC: &[u8; 4] = b"wlF1";
const HEADER: usize = 4 + 8 + 4 + 32;

const PUT: u8 = 1;
const DELETE: u8 = 2;

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    disk::sync_dir(dir, "sync the state directory")
}

/// Every key of namespace `ns` that starts with `prefix`, as a map range.
fn prefix_range(ns: Namespace, prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = key(ns, prefix);
    // The first key past the prefix: drop trailing 0xff bytes and add one to the last. The
    // namespace byte is a letter, so there is always one to increment.
    let mut end = start.clone();
    while end.last() == Some(&0xff) {
        end.pop();
    }
    let last = end.last_mut().expect("the namespace byte is never 0xff");
    *last += 1;
    (Bound::Included(start), Bound::Excluded(end))
}

fn frame_hash(salt: &Salt, group: [u8; 8], len: [u8; 4], payload: &[u8]) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(salt);
    e.input(&group);
    e.input(&len);
    e.input(payload);
    sha256::Hash::from_engine(e).to_byte_array()
}

/// One batch's operations as frame payloads of at most [`CHUNK`] bytes (more than one only for
/// a batch that large), or the size of an operation too large for any frame.
fn encode<'a>(
    ops: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<Vec<Vec<u8>>, usize> {
    let mut chunks = Vec::new();
    let mut out = vec![0u8; 4];
    let mut n = 0u32;
    for (k, v) in ops {
        let size = 1 + 4 + k.len() + v.map_or(0, |v| 4 + v.len());
        if size + 4 > MAX_RECORD as usize {
            return Err(size);
        }
        if n > 0 && out.len() + size > CHUNK {
            out[..4].copy_from_slice(&n.to_le_bytes());
            chunks.push(std::mem::replace(&mut out, vec![0u8; 4]));
            n = 0;
        }
        n += 1;
        out.push(if v.is_some() { PUT } else { DELETE });
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    if n > 0 {
        out[..4].copy_from_slice(&n.to_le_bytes());
        chunks.push(out);
    }
    Ok(chunks)
}

/// The payload of a group's end marker: no operations.
const MARKER: [u8; 4] = [0; 4];

/// Append `payload` framed as part of sync group `group` to `out`.
fn frame(out: &mut Vec<u8>, salt: &Salt, group: u64, payload: &[u8]) {
    let group = group.to_le_bytes();
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&group);
    out.extend_from_slice(&len);
    out.extend_from_slice(&frame_hash(salt, group, len, payload));
    out.extend_from_slice(payload);
}

/// The operations of one payload, or `None` if it does not decode.
type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn decode(payload: &[u8]) -> Option<Ops> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = payload.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let u32le = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("four bytes"));
    let n = u32le(take(4)?);
    let mut ops = Vec::new();
    for _ in 0..n {
        let tag = take(1)?[0];
        let klen = u32le(take(4)?) as usize;
        let k = take(klen)?.to_vec();
        match tag {
            PUT => {
                let vlen = u32le(take(4)?) as usize;
                ops.push((k, Some(take(vlen)?.to_vec())));
            }
            DELETE => ops.push((k, None)),
            _ => return None,
        }
    }
    (at == payload.len()).then_some(ops)
}

/// What reading a log back found.
struct Replayed {
    salt: Salt,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Where the last whole group ends.
    end: u64,
    /// Whole groups read.
    groups: u64,
}

/// The whole frame at `at`, or `None` if there is none.
fn frame_at<'a>(bytes: &'a [u8], salt: &Salt, at: usize) -> Option<Frame<'a>> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    if &header[..4] != FRAME_MAGIC {
        return None;
    }
    let group: [u8; 8] = header[4..12].try_into().expect("eight bytes");
    let len_bytes: [u8; 4] = header[12..16].try_into().expect("four bytes");
    let len = u32::from_le_bytes(len_bytes);
    if !(4..=MAX_RECORD).contains(&len) {
        return None;
    }
    let end = at + HEADER + len as usize;
    let payload = bytes.get(at + HEADER..end)?;
    (frame_hash(salt, group, len_bytes, payload) == header[16..]).then_some(Frame {
        group: u64::from_le_bytes(group),
        payload,
        end,
    })
}

/// A whole frame read back.
struct Frame<'a> {
    group: u64,
    payload: &'a [u8],
    end: usize,
}

/// Whether any whole frame at or after byte `from` belongs to a group after `torn`. Groups are
/// written one after another, each only once the one before it was synced, so a later group on
/// disk means group `torn` had been synced: its damage is corruption, not a write cut by a crash.
fn later_group_on_disk(bytes: &[u8], salt: &Salt, from: usize, torn: u64) -> bool {
    let mut at = from;
    while let Some(found) = bytes
        .get(at..)
        .and_then(|rest| rest.windows(4).position(|w| w == FRAME_MAGIC))
    {
        let start = at + found;
        match frame_at(bytes, salt, start) {
            Some(f) if f.group > torn => return true,
            Some(f) => at = f.end,
            None => at = start + 1,
        }
    }
    false
}

fn replay(bytes: &[u8]) -> Result<Replayed, String> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(format!(
            "{LOG} does not start with Warden's log header; it was not written by this wardend"
        ));
    }
    let Some(salt) = bytes
        .get(MAGIC.len()..FILE_HEADER)
        .map(|s| Salt::try_from(s).expect("sixteen bytes"))
    else {
        return Err(format!("{LOG} ends inside its header"));
    };
    let mut map = BTreeMap::new();
    let mut at = FILE_HEADER;
    // Groups are numbered from 1. The operations of the group being read are applied only once
    // its end marker is read, so a group cut by a crash is dropped whole, like the answers that
    // never left.
    let mut group: Ops = Vec::new();
    let mut group_start = at;
    let mut done = 0u64;
    while let Some(f) = frame_at(bytes, &salt, at) {
        if f.group != done + 1 {
            break;
        }
        let Some(ops) = decode(f.payload) else {
            // The hash matched, so these bytes were written as they are: not a torn write.
            return Err(format!(
                "the record at byte {at} of {LOG} has a valid hash but does not decode"
            ));
        };
        at = f.end;
        if ops.is_empty() {
            for (k, v) in group.drain(..) {
                match v {
                    Some(v) => map.insert(k, v),
                    None => map.remove(&k),
                };
            }
            group_start = at;
            done += 1;
        } else {
            group.extend(ops);
        }
    }
    if group_start < bytes.len() && later_group_on_disk(bytes, &salt, group_start, done + 1) {
        return Err(format!(
            "{LOG} is damaged at byte {group_start} (group {}) and a later group is intact: the damage is in state that had been made durable, not a write cut by a crash. wardend will not start on a log missing acknowledged state; restore the data directory from backup",
            done + 1
        ));
    }
    Ok(Replayed {
        salt,
        map,
        end: group_start as u64,
        groups: done,
    })
}

struct Writer {
    file: File,
    /// Where the next group goes: the end of every durable group.
    end: u64,
    /// The next group's number.
    group: u64,
    /// This file's salt.
    salt: Salt,
    /// No compaction before the log reaches this size (pushed on after a failed one).
    compact_from: u64,
}

/// A new log file's first bytes, with a fresh salt.
fn new_header() -> (Vec<u8>, Salt) {
    let mut salt = Salt::default();
    getrandom::getrandom(&mut salt).expect("the OS random number generator works");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&salt);
    (bytes, salt)
}

/// Put `bytes` in place as the log: written to [`LOG_NEW`] and synced, then renamed over
/// [`LOG`]. Returns the new file; the caller syncs the directory. Nothing is left behind on
/// failure, and the old log stays as it was.
fn install(dir: &Path, bytes: &[u8], mode: Option<std::fs::Permissions>) -> std::io::Result<File> {
    let new = dir.join(LOG_NEW);
    let written = (|| {
        let f = File::create(&new)?;
        if let Some(mode) = mode {
            f.set_permissions(mode)?;
        }
        f.write_all_at(bytes, 0)?;
        f.sync_data()?;
        std::fs::rename(&new, dir.join(LOG))?;
        Ok(f)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&new);
    }
    written
}

/// The log in a directory, and the state it holds, in memory.
pub struct LogBackend {
    dir: PathBuf,
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Payloads of the batches applied and not yet written, in order.
    pending: Mutex<Vec<Vec<u8>>>,
    writer: Mutex<Writer>,
    poisoned: AtomicBool,
    /// Bytes of keys and values live in the map (for the compaction rule).
    live: AtomicU64,
    /// (nanoseconds, count) of write, fdatasync.
    clocks: [Clock; 2],
    /// The durable end of the log, readable without waiting for a sync in progress.
    size: AtomicU64,
    /// The `flock` on [`LOCK`], held while this backend lives.
    _lock: File,
}

// nix 0.29 deprecates `flock` for its `Flock` wrapper, which would take the File; the lock is
// released when the file is closed either way.
#[allow(deprecated)]
fn lock_dir(dir: &Path, open_err: &dyn Fn(String) -> StoreError) -> Result<File, StoreError> {
    use nix::fcntl::{flock, FlockArg};
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
        .map_err(|e| open_err(format!("its lock file: {e}")))?;
    // A previous wardend that is exiting may still hold it for a moment.
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match flock(file.as_raw_fd(), FlockArg::LockExclusiveNonblock) {
            Ok(()) => return Ok(file),
            Err(nix::errno::Errno::EWOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(nix::errno::Errno::EWOULDBLOCK) => {
                return Err(open_err(
                    "another process holds its lock (is another wardend running on this data directory?)".into(),
                ))
            }
            Err(e) => return Err(open_err(format!("locking it: {e}"))),
        }
    }
}

impl LogBackend {
    /// Open (or create) the log in `dir`, reading it back into memory. A record cut by a crash
    /// at the end is dropped and the file cut there (it was never acknowledged).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: dir.display().to_string(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        if super::LocalBackend::in_dir(dir) == Some(super::LocalBackend::Sled) {
            return Err(open_err(
                "it holds a sled database (store.backend = \"sled\"); a log opened beside it would start from nothing. Keep store.backend = \"sled\" for this data directory, or move its state into the log with `wardenctl migrate --from sled --to log` while wardend is stopped".into(),
            ));
        }
        let lock = lock_dir(dir, &open_err)?;
        let path = dir.join(LOG);
        match std::fs::remove_file(dir.join(LOG_NEW)) {
            Ok(()) => sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(format!("removing an unfinished compaction: {e}"))),
        }
        if !path.exists() {
            // Created whole or not at all: a crash part way leaves only LOG_NEW, removed above
            // on the next open.
            install(dir, &new_header().0, None)
                .map_err(|e| open_err(format!("creating {LOG}: {e}")))?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| open_err(format!("{LOG}: {e}")))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| open_err(format!("reading {LOG}: {e}")))?;
        let replayed = replay(&bytes).map_err(open_err)?;
        if replayed.end < bytes.len() as u64 {
            // Kept beside the log for whoever investigates: a crash explains it, a disk fault
            // in the last group would too.
            let kept = dir.join(format!("{LOG}.cut-at-{}", replayed.end));
            std::fs::write(&kept, &bytes[replayed.end as usize..])
                .map_err(|e| open_err(format!("keeping the torn end of {LOG}: {e}")))?;
            tracing::warn!(
                dropped = bytes.len() as u64 - replayed.end,
                at = replayed.end,
                kept = %kept.display(),
                "the state log ends in a group cut by a crash (never acknowledged); cutting it off"
            );
            file.set_len(replayed.end)
                .and_then(|()| file.sync_data())
                .map_err(|e| open_err(format!("cutting the torn end of {LOG}: {e}")))?;
        }
        let live = replayed
            .map
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        Ok(LogBackend {
            dir: dir.to_path_buf(),
            map: RwLock::new(replayed.map),
            pending: Mutex::default(),
            writer: Mutex::new(Writer {
                file,
                end: replayed.end,
                group: replayed.groups + 1,
                salt: replayed.salt,
                compact_from: COMPACT_AT,
            }),
            size: AtomicU64::new(replayed.end),
            poisoned: AtomicBool::new(false),
            live: AtomicU64::new(live),
            clocks: Default::default(),
            _lock: lock,
        })
    }

    /// Write the live state to a new log and put it in place of the old one. Called with the
    /// writer held and nothing pending, so the map is exactly what is durable. Before the
    /// rename a failure leaves the old log in force and is only reported; after it, the new
    /// file is the log, and a directory that cannot be synced stops every later commit (the
    /// rename might not survive a power cut, and with it what is committed next).
    fn compact(&self, w: &mut Writer) -> Result<(), StoreError> {
        let (mut bytes, salt) = new_header();
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            let payloads = encode(map.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice()))))
                .map_err(|size| StoreError::Io {
                    op: "compact the state log",
                    detail: format!("an entry of {size} bytes is larger than a frame"),
                })?;
            for payload in &payloads {
                frame(&mut bytes, &salt, 1, payload);
            }
            frame(&mut bytes, &salt, 1, &MARKER);
        }
        let mode = std::fs::metadata(self.dir.join(LOG))
            .ok()
            .map(|m| m.permissions());
        let f = install(&self.dir, &bytes, mode).map_err(fs_io("compact the state log"))?;
        w.file = f;
        w.end = bytes.len() as u64;
        w.group = 2;
        w.salt = salt;
        self.size.store(w.end, Ordering::SeqCst);
        sync_dir(&self.dir).inspect_err(|_| self.poisoned.store(true, Ordering::SeqCst))
    }
}

impl Backend for LogBackend {
    fn get(&self, ns: Namespace, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(&key(ns, k)).cloned())
    }

    fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .range(prefix_range(ns, prefix))
            .map(|(k, v)| (k[1..].to_vec(), v.clone()))
            .collect())
    }

    fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .range(prefix_range(ns, prefix))
            .next_back()
            .map(|(k, v)| (k[1..].to_vec(), v.clone())))
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.apply(batch)?;
        Backend::sync(self)
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned("commit"));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let keyed: Vec<(Vec<u8>, Option<&[u8]>)> =
            batch.iter().map(|(ns, k, v)| (key(ns, k), v)).collect();
        let payloads =
            encode(keyed.iter().map(|(k, v)| (k.as_slice(), *v))).map_err(|size| {
                StoreError::Io {
                    op: "commit",
                    detail: format!(
                        "an entry of {size} bytes is larger than the state log's largest frame; nothing of this request was written"
                    ),
                }
            })?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(payloads);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in keyed {
            let old = match v {
                Some(v) => map.insert(k.clone(), v.to_vec()),
                None => map.remove(&k),
            };
            if let Some(old) = old {
                self.live
                    .fetch_sub((k.len() + old.len()) as u64, Ordering::Relaxed);
            }
            if let Some(v) = v {
                self.live
                    .fetch_add((k.len() + v.len()) as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// One `pwrite` of every record applied so far and one `fdatasync`: a whole group of
    /// applied batches made durable by one device wait.
    fn sync(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned("sync"));
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // A sync that failed while this one waited may have taken this caller's batches.
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned("sync"));
        }
        let payloads = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if payloads.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(
            payloads.iter().map(|p| HEADER + p.len()).sum::<usize>() + HEADER + MARKER.len(),
        );
        for payload in &payloads {
            frame(&mut bytes, &w.salt, w.group, payload);
        }
        // The group's end: replay applies a group only once it reads this marker.
        frame(&mut bytes, &w.salt, w.group, &MARKER);
        let written = clock(&self.clocks[0], || w.file.write_all_at(&bytes, w.end))
            .map_err(fs_io("write the state log"))
            .and_then(|()| {
                clock(&self.clocks[1], || w.file.sync_data())
                    .map_err(fs_io("fdatasync the state log"))
            });
        if let Err(e) = written {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(e);
        }
        w.end += bytes.len() as u64;
        w.group += 1;
        self.size.store(w.end, Ordering::SeqCst);
        let live = self.live.load(Ordering::Relaxed);
        if w.end >= w.compact_from && w.end > 4 * live.max(1) {
            // Applies wait while the live state is written: nothing may be pending, or the
            // new file would hold records the old one has not made durable yet.
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                if let Err(e) = self.compact(&mut w) {
                    // This group is durable either way. Before the rename the old log stays in
                    // force and the next try waits for another COMPACT_AT of growth; after it,
                    // compact() has stopped later commits.
                    w.compact_from = w.end + COMPACT_AT;
                    tracing::warn!(error = %e, "state log compaction failed");
                }
            }
        }
        Ok(())
    }

    fn timings(&self) -> Vec<Timing> {
        disk::timings(&["write", "fdatasync"], &self.clocks)
    }

    fn size_on_disk(&self) -> Option<u64> {
        Some(self.size.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(ns: Namespace, k: &str, v: &str) -> Batch {
        let mut b = Batch::default();
        b.put(ns, k.as_bytes().to_vec(), v.as_bytes().to_vec());
        b
    }

    #[test]
    fn what_was_synced_is_read_back_after_a_reopen_and_deletes_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = LogBackend::open(dir.path()).unwrap();
            b.commit(&put(Namespace::Approvals, "rq-1", "one")).unwrap();
            b.commit(&put(Namespace::Approvals, "rq-2", "two")).unwrap();
            b.commit(&put(Namespace::Audit, "rq-1", "other namespace"))
                .unwrap();
            let mut del = Batch::default();
            del.delete(Namespace::Approvals, b"rq-1".to_vec());
            b.commit(&del).unwrap();
        }
        let b = LogBackend::open(dir.path()).unwrap();
        assert_eq!(b.get(Namespace::Approvals, b"rq-1").unwrap(), None);
        assert_eq!(
            b.scan(Namespace::Approvals, b"rq-").unwrap(),
            vec![(b"rq-2".to_vec(), b"two".to_vec())]
        );
        assert_eq!(
            b.last(Namespace::Audit, b"").unwrap(),
            Some((b"rq-1".to_vec(), b"other namespace".to_vec()))
        );
    }

    #[test]
    fn a_prefix_scan_stops_at_the_prefix_even_after_0xff_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let b = LogBackend::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        for k in [&b"a\xff"[..], b"a\xff\xff", b"a\xff\x00", b"b", b"a"] {
            batch.put(Namespace::Audit, k.to_vec(), k.to_vec());
        }
        batch.put(
            Namespace::Governance,
            b"a".to_vec(),
            b"other namespace".to_vec(),
        );
        b.commit(&batch).unwrap();
        let keys: Vec<Vec<u8>> = b
            .scan(Namespace::Audit, b"a\xff")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![
                b"a\xff".to_vec(),
                b"a\xff\x00".to_vec(),
                b"a\xff\xff".to_vec()
            ]
        );
        assert_eq!(
            b.last(Namespace::Audit, b"").unwrap().unwrap().0,
            b"b".to_vec()
        );
        assert_eq!(b.scan(Namespace::Audit, b"").unwrap().len(), 5);
    }

    #[test]
    fn an_applied_batch_is_visible_at_once_and_lost_without_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = LogBackend::open(dir.path()).unwrap();
            b.commit(&put(Namespace::Meta, "kept", "1")).unwrap();
            b.apply(&put(Namespace::Meta, "applied only", "2")).unwrap();
            assert!(b.get(Namespace::Meta, b"applied only").unwrap().is_some());
        }
        let b = LogBackend::open(dir.path()).unwrap();
        assert!(b.get(Namespace::Meta, b"kept").unwrap().is_some());
        assert_eq!(b.get(Namespace::Meta, b"applied only").unwrap(), None);
    }

    #[test]
    fn a_group_cut_anywhere_by_a_crash_is_dropped_whole_and_the_file_cut_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        let first_end;
        {
            let b = LogBackend::open(dir.path()).unwrap();
            b.commit(&put(Namespace::Meta, "a", "first")).unwrap();
            first_end = std::fs::metadata(&path).unwrap().len() as usize;
            // Two batches in one group (one sync), as group commit writes them.
            b.apply(&put(Namespace::Meta, "b", "second")).unwrap();
            b.apply(&put(Namespace::Meta, "c", "third")).unwrap();
            b.sync().unwrap();
        }
        let whole = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], what: &str| {
            std::fs::write(&path, bytes).unwrap();
            let b = LogBackend::open(dir.path()).unwrap();
            assert_eq!(
                b.get(Namespace::Meta, b"a").unwrap(),
                Some(b"first".to_vec()),
                "{what}"
            );
            assert_eq!(b.get(Namespace::Meta, b"b").unwrap(), None, "{what}");
            assert_eq!(b.get(Namespace::Meta, b"c").unwrap(), None, "{what}");
            drop(b);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                first_end,
                "{what}"
            );
        };
        for cut in first_end + 1..whole.len() {
            check(&whole[..cut], &format!("cut at {cut}"));
        }
        // A power cut can lose any page of the last write and keep the ones after it: the
        // group's first frame lost, its second and its end marker on disk.
        let mut hole = whole.clone();
        hole[first_end..first_end + HEADER].fill(0);
        check(&hole, "the last group's first frame lost");
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        check(&flipped, "the last group's marker damaged");
    }

    #[test]
    fn a_batch_larger_than_a_frame_is_split_and_still_applied_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        let before;
        {
            let b = LogBackend::open(dir.path()).unwrap();
            before = std::fs::metadata(&path).unwrap().len() as usize;
            let mut batch = Batch::default();
            for k in 0..3u8 {
                batch.put(Namespace::Vls, vec![k], vec![k; CHUNK / 2 + 1]);
            }
            b.commit(&batch).unwrap();
        }
        let whole = std::fs::read(&path).unwrap();
        let frames = whole.windows(4).filter(|w| *w == FRAME_MAGIC).count();
        assert!(
            frames >= 3,
            "{frames} frames for 3 half-chunk entries and a marker"
        );
        let b = LogBackend::open(dir.path()).unwrap();
        assert_eq!(b.scan(Namespace::Vls, b"").unwrap().len(), 3);
        drop(b);
        // Cut after the first frame: no entry of the batch survives.
        let cut = before + HEADER + CHUNK / 2 + 20;
        std::fs::write(&path, &whole[..cut]).unwrap();
        let b = LogBackend::open(dir.path()).unwrap();
        assert!(b.scan(Namespace::Vls, b"").unwrap().is_empty());
        assert!(dir.path().join(format!("{LOG}.cut-at-{before}")).exists());
    }

    #[test]
    fn a_frame_from_another_log_file_is_never_taken_for_one_of_this_file() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [&a, &b] {
            let log = LogBackend::open(dir.path()).unwrap();
            log.commit(&put(Namespace::Meta, "first", "1")).unwrap();
            if dir.path() == b.path() {
                log.commit(&put(Namespace::Meta, "second", "from b"))
                    .unwrap();
            }
        }
        // b's second group (group 2, framed exactly as a's next group would be) appended to a.
        let a_bytes = std::fs::read(a.path().join(LOG)).unwrap();
        let b_bytes = std::fs::read(b.path().join(LOG)).unwrap();
        let first_group_len = a_bytes.len();
        let mut spliced = a_bytes.clone();
        spliced.extend_from_slice(&b_bytes[first_group_len..]);
        std::fs::write(a.path().join(LOG), &spliced).unwrap();
        let log = LogBackend::open(a.path()).unwrap();
        assert_eq!(log.get(Namespace::Meta, b"second").unwrap(), None);
        assert_eq!(
            std::fs::metadata(a.path().join(LOG)).unwrap().len() as usize,
            first_group_len
        );
    }

    #[test]
    fn damage_before_an_intact_later_group_is_refused_not_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        let first_end;
        {
            let b = LogBackend::open(dir.path()).unwrap();
            b.commit(&put(Namespace::Meta, "a", "first")).unwrap();
            first_end = std::fs::metadata(&path).unwrap().len() as usize;
            b.commit(&put(Namespace::Meta, "b", "second, acknowledged"))
                .unwrap();
            b.commit(&put(Namespace::Meta, "c", "third, acknowledged"))
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // A byte of group 2's frame rots on disk; group 3 is intact after it.
        bytes[first_end + HEADER + 6] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = LogBackend::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "state.log is damaged at byte {first_end} (group 2) and a later group is intact"
            )),
            "{e}"
        );
        // Nothing was cut: the operator can still restore or inspect it.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_sync_that_fails_stops_every_later_commit_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let b = LogBackend::open(dir.path()).unwrap();
        b.commit(&put(Namespace::Meta, "a", "durable")).unwrap();
        // The device refuses the write: the log's handle can no longer write.
        b.writer.lock().unwrap().file = File::open(dir.path().join(LOG)).unwrap();
        let e = b.commit(&put(Namespace::Meta, "b", "lost")).unwrap_err();
        assert!(e.to_string().contains("write the state log failed"), "{e}");
        let later = b.commit(&put(Namespace::Meta, "c", "refused")).unwrap_err();
        assert!(
            later
                .to_string()
                .contains("an earlier commit could not be made durable; restart wardend"),
            "{later}"
        );
        drop(b);
        let b = LogBackend::open(dir.path()).unwrap();
        assert!(b.get(Namespace::Meta, b"a").unwrap().is_some());
        assert_eq!(b.get(Namespace::Meta, b"b").unwrap(), None);
        assert_eq!(b.get(Namespace::Meta, b"c").unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_warden_log_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG), b"sled or something else").unwrap();
        let e = LogBackend::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("state.log does not start with Warden's log header"),
            "{e}"
        );
    }

    #[test]
    fn a_sled_directory_is_refused_and_a_log_directory_refused_by_sled() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::store::sled::SledBackend::open(dir.path()).unwrap());
        let e = LogBackend::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("it holds a sled database"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        drop(LogBackend::open(dir.path()).unwrap());
        let e = crate::store::sled::SledBackend::open(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("it holds Warden's state log"), "{e}");
    }

    #[test]
    fn a_second_process_on_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = LogBackend::open(dir.path()).unwrap();
        let e = LogBackend::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("another process holds its lock"), "{e}");
    }

    #[test]
    fn compaction_keeps_exactly_the_live_state_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let value = vec![7u8; 64 << 10];
        {
            let b = LogBackend::open(dir.path()).unwrap();
            // Overwrite one key until the log passes COMPACT_AT: live stays 64 KiB.
            let rounds = (COMPACT_AT / value.len() as u64) + 2;
            for round in 0..rounds {
                let mut batch = Batch::default();
                let mut v = value.clone();
                v[0] = round as u8;
                batch.put(Namespace::Vls, b"node".to_vec(), v);
                batch.put(
                    Namespace::Meta,
                    b"round".to_vec(),
                    round.to_le_bytes().to_vec(),
                );
                b.commit(&batch).unwrap();
            }
            let size = b.size_on_disk().unwrap();
            assert!(size < COMPACT_AT, "compacted to {size} bytes");
        }
        let b = LogBackend::open(dir.path()).unwrap();
        let rounds = (COMPACT_AT / value.len() as u64) + 2;
        assert_eq!(
            b.get(Namespace::Meta, b"round").unwrap(),
            Some((rounds - 1).to_le_bytes().to_vec())
        );
        assert_eq!(
            b.get(Namespace::Vls, b"node").unwrap().unwrap()[0],
            (rounds - 1) as u8
        );
        assert!(!dir.path().join(LOG_NEW).exists());
    }

    #[test]
    fn a_compaction_cut_by_a_crash_leaves_the_old_log_in_force() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = LogBackend::open(dir.path()).unwrap();
            b.commit(&put(Namespace::Meta, "a", "kept")).unwrap();
        }
        std::fs::write(dir.path().join(LOG_NEW), b"half a compaction").unwrap();
        let b = LogBackend::open(dir.path()).unwrap();
        assert_eq!(
            b.get(Namespace::Meta, b"a").unwrap(),
            Some(b"kept".to_vec())
        );
        assert!(!dir.path().join(LOG_NEW).exists());
    }
}
