//! The default backend: sled, with a commit that is durable on Linux.
//!
//! sled 0.34's `flush` writes its log with `pwrite` and `sync_file_range`, which neither commits
//! the file's metadata (its growing size) nor flushes the device's write cache, and writes blob
//! files and renames snapshots without syncing their directory. A commit here therefore goes
//! further: the batch is applied to one tree (sled applies a batch atomically), flushed, and then
//! the log file is `fsync`ed; when the set of files in the database directory or its `blobs`
//! directory changed since the last commit, the new files and the directories are `fsync`ed too.
//!
//! All namespaces share sled's default tree, each under its [`Namespace::prefix`] byte, so one
//! batch covers every namespace a request touches.

use super::disk::{self, clock, fs_io, key, poisoned, Clock};
use super::{Backend, Batch, Entry, Namespace, StoreError, Timing};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// The format this module writes, kept under `Meta/format`.
const FORMAT: u8 = 1;
/// Trees of the layout before one tree held every namespace; migrated on open.
const OLD_TREES: [&str; 5] = ["policy", "approvals", "audit", "vls", "vls-meta"];

fn io(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        detail: e.to_string(),
    }
}

/// sled reports a held file lock as an I/O error whose message names it (its kind is not
/// always `WouldBlock`).
fn is_lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in [dir.to_path_buf(), dir.join("blobs")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            out.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    out
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    disk::sync_dir(dir, "sync the database directory")
}

/// sled in a directory.
pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
    log: File,
    files: Mutex<BTreeSet<PathBuf>>,
    /// Nanoseconds and counts of write, flush, fsync.
    clocks: [Clock; 3],
    /// A batch was applied but could not be made durable: it is visible and may or may not
    /// survive, so nothing more may be committed on top of it until a restart reads what is
    /// really on disk.
    poisoned: std::sync::atomic::AtomicBool,
}

impl SledBackend {
    /// Open (or create) the database in `dir`, migrating the older one-tree-per-module layout.
    ///
    /// sled's background flusher is off: every commit flushes and syncs, and without the thread
    /// the file lock is released as soon as the last handle is dropped. A lock still held (a
    /// previous wardend that is exiting) is retried for up to two seconds, then reported as
    /// another process using the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: dir.display().to_string(),
            detail,
        };
        if super::LocalBackend::in_dir(dir) == Some(super::LocalBackend::Log) {
            return Err(open_err(
                "it holds Warden's state log (store.backend = \"log\"); a sled database opened beside it would start from nothing. Keep store.backend = \"log\" for this data directory".into(),
            ));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(None)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if is_lock_held(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(sled::Error::Io(e)) if is_lock_held(&e) => {
                    return Err(open_err(
                        "another process holds its lock (is another wardend running on this data directory?)".into(),
                    ))
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        };
        let log = File::open(dir.join("db")).map_err(|e| open_err(format!("its log file: {e}")))?;
        let backend = SledBackend {
            db,
            dir: dir.to_path_buf(),
            log,
            files: Mutex::new(BTreeSet::new()),
            clocks: Default::default(),
            poisoned: Default::default(),
        };
        // The directory entries sled just created (conf, db, blobs/) must survive a power cut.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        *backend.files.lock().unwrap_or_else(|p| p.into_inner()) = listing(dir);
        match backend.get(Namespace::Meta, b"format")? {
            Some(v) if v == [FORMAT] => {}
            Some(v) => {
                return Err(open_err(format!(
                    "it has format {v:?}, this wardend reads format {FORMAT}; use the wardend that wrote it"
                )))
            }
            None => backend.migrate()?,
        }
        Ok(backend)
    }

    /// Move the older layout (a tree per module, and a decision log nothing read) into the
    /// namespaces, in one commit, and mark the format.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        let names: Vec<String> = self
            .db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        let mut old = Vec::new();
        for name in OLD_TREES.iter().filter(|n| names.iter().any(|m| m == *n)) {
            let tree = self.db.open_tree(name).map_err(io("open an old tree"))?;
            for kv in tree.iter() {
                let (k, v) = kv.map_err(io("migrate"))?;
                match *name {
                    // velocity buckets were under 'v'; the 'd' decision log is not kept
                    "policy" if k.first() == Some(&b'v') => {
                        batch.put(Namespace::Velocity, k[1..].to_vec(), v.to_vec())
                    }
                    "policy" => {}
                    "approvals" => batch.put(Namespace::Approvals, k.to_vec(), v.to_vec()),
                    "audit" => batch.put(Namespace::Audit, k.to_vec(), v.to_vec()),
                    "vls" => batch.put(Namespace::Vls, k.to_vec(), v.to_vec()),
                    _ if k.as_ref() == b"signer_id" => {
                        batch.put(Namespace::Meta, b"vls-signer-id".to_vec(), v.to_vec())
                    }
                    _ => {}
                }
            }
            old.push(*name);
        }
        batch.put(Namespace::Meta, b"format".to_vec(), vec![FORMAT]);
        self.commit(&batch)?;
        for name in old {
            self.db.drop_tree(name).map_err(io("drop an old tree"))?;
        }
        self.sync_files()
    }

    fn sync_files(&self) -> Result<(), StoreError> {
        clock(&self.clocks[1], || self.db.flush()).map_err(io("flush"))?;
        clock(&self.clocks[2], || self.log.sync_all()).map_err(fs_io("fsync the database log"))?;
        let now = listing(&self.dir);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if *files != now {
            for new in now.difference(&files) {
                if new.is_file() {
                    File::open(new)
                        .and_then(|f| f.sync_all())
                        .map_err(fs_io("fsync a new database file"))?;
                }
            }
            sync_dir(&self.dir.join("blobs")).or_else(|e| {
                if self.dir.join("blobs").exists() {
                    Err(e)
                } else {
                    Ok(())
                }
            })?;
            sync_dir(&self.dir)?;
            *files = now;
        }
        Ok(())
    }
}

impl Backend for SledBackend {
    fn get(&self, ns: Namespace, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(key(ns, k))
            .map_err(io("read"))?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.db
            .scan_prefix(key(ns, prefix))
            .map(|kv| {
                kv.map(|(k, v)| (k[1..].to_vec(), v.to_vec()))
                    .map_err(io("scan"))
            })
            .collect()
    }

    fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .db
            .scan_prefix(key(ns, prefix))
            .next_back()
            .transpose()
            .map_err(io("read the last entry"))?
            .map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.apply(batch)?;
        Backend::sync(self)
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned("commit"));
        }
        let mut b = sled::Batch::default();
        for (ns, k, v) in batch.iter() {
            match v {
                Some(v) => b.insert(key(ns, k), v),
                None => b.remove(key(ns, k)),
            }
        }
        clock(&self.clocks[0], || self.db.apply_batch(b)).map_err(io("write"))
    }

    /// sled's flush writes every batch applied so far, in order, and the `fsync` after it
    /// covers them all: one sync makes a whole group of applied batches durable.
    fn sync(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned("sync"));
        }
        self.sync_files()
            .inspect_err(|_| self.poisoned.store(true, Ordering::SeqCst))
    }

    fn timings(&self) -> Vec<Timing> {
        disk::timings(&["write", "flush", "fsync"], &self.clocks)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_layout_is_migrated_into_namespaces_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let policy = db.open_tree("policy").unwrap();
            policy.insert(b"vbucket", b"16 bytes of data").unwrap();
            policy.insert(b"d\0\0\0\0\0\0\0\x01", b"{}").unwrap();
            db.open_tree("approvals")
                .unwrap()
                .insert(b"rrq-1", b"{}")
                .unwrap();
            db.open_tree("vls-meta")
                .unwrap()
                .insert(b"signer_id", &[7u8; 16])
                .unwrap();
            db.flush().unwrap();
        }
        let b = SledBackend::open(dir.path()).unwrap();
        assert_eq!(
            b.get(Namespace::Velocity, b"bucket").unwrap(),
            Some(b"16 bytes of data".to_vec())
        );
        assert_eq!(
            b.get(Namespace::Approvals, b"rrq-1").unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(
            b.get(Namespace::Meta, b"vls-signer-id").unwrap(),
            Some(vec![7u8; 16])
        );
        assert!(
            b.scan(Namespace::Velocity, b"").unwrap().len() == 1,
            "the decision log is not carried over"
        );
        assert!(!b.db.tree_names().iter().any(|n| n.as_ref() == b"policy"));
        drop(b);
        let b = SledBackend::open(dir.path()).unwrap();
        assert_eq!(
            b.get(Namespace::Meta, b"format").unwrap(),
            Some(vec![FORMAT])
        );
    }

    #[test]
    fn a_database_of_another_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = SledBackend::open(dir.path()).unwrap();
            let mut batch = Batch::default();
            batch.put(Namespace::Meta, b"format".to_vec(), vec![9]);
            b.commit(&batch).unwrap();
        }
        let e = SledBackend::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("format [9]") && e.contains("use the wardend that wrote it"),
            "{e}"
        );
    }
}
