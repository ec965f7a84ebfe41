//! VLS's node and channel state in sled.
//!
//! [`SledKVVStore`] implements VLS's key-version-value store interface on a sled tree, with the
//! same rules as VLS's own stores (a key's version never goes backwards; a re-put at the same
//! version must carry the same value). VLS's `TransactionalKVVStore` buffers a request's writes
//! between `enter` and `commit`; the commit lands here as one sled batch, flushed before the
//! signer's answer is released.

use lightning_signer::persist::Error;
use lightning_signer::SendSync;
use std::collections::HashMap;
use std::sync::Mutex;
use vls_persist::kvv::{KVVStore, KVV};

/// A key-version-value store on a sled tree.
pub struct SledKVVStore {
    db: sled::Db,
    tree: sled::Tree,
    versions: Mutex<HashMap<String, u64>>,
    signer_id: [u8; 16],
    defer_flush: bool,
}

impl SendSync for SledKVVStore {}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("sled: {e}"))
}

fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode(vv: &[u8]) -> (u64, Vec<u8>) {
    let (ver, val) = vv.split_at(8.min(vv.len()));
    let mut b = [0u8; 8];
    b[..ver.len()].copy_from_slice(ver);
    (u64::from_be_bytes(b), val.to_vec())
}

impl SledKVVStore {
    /// Open the `vls` tree of `db`, loading every key's version.
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        let tree = db.open_tree("vls").map_err(io)?;
        let mut versions = HashMap::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(io)?;
            versions.insert(String::from_utf8_lossy(&k).into_owned(), decode(&v).0);
        }
        let meta = db.open_tree("vls-meta").map_err(io)?;
        let signer_id = match meta.get("signer_id").map_err(io)? {
            Some(v) if v.len() == 16 => v.as_ref().try_into().expect("16 bytes"),
            _ => {
                let mut id = [0u8; 16];
                getrandom::getrandom(&mut id).map_err(io)?;
                meta.insert("signer_id", &id).map_err(io)?;
                db.flush().map_err(io)?;
                id
            }
        };
        Ok(SledKVVStore {
            db: db.clone(),
            tree,
            versions: Mutex::new(versions),
            signer_id,
            defer_flush: false,
        })
    }

    /// Leave the flush to the caller, who flushes once per request before answering.
    pub fn deferring_flush(mut self, defer: bool) -> Self {
        self.defer_flush = defer;
        self
    }

    fn check(
        &self,
        versions: &HashMap<String, u64>,
        key: &str,
        version: u64,
        vv: &[u8],
    ) -> Result<(), Error> {
        if let Some(v) = versions.get(key) {
            if version < *v {
                return Err(Error::VersionMismatch);
            }
            if version == *v {
                let existing = self.tree.get(key).map_err(io)?;
                if existing.as_deref() != Some(vv) {
                    return Err(Error::VersionMismatch);
                }
            }
        }
        Ok(())
    }
}

/// Iterator over a prefix's entries.
pub struct Iter(std::vec::IntoIter<KVV>);

impl Iterator for Iter {
    type Item = KVV;
    fn next(&mut self) -> Option<KVV> {
        self.0.next()
    }
}

impl KVVStore for SledKVVStore {
    type Iter = Iter;

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        let version = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|v| v + 1)
            .unwrap_or(0);
        self.put_with_version(key, version, value)
    }

    fn put_with_version(&self, key: &str, version: u64, value: Vec<u8>) -> Result<(), Error> {
        self.put_batch(vec![KVV(key.to_string(), (version, value))])
    }

    fn put_batch(&self, kvvs: Vec<KVV>) -> Result<(), Error> {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        let mut staged: HashMap<String, u64> = HashMap::new();
        for KVV(key, (version, value)) in kvvs {
            let vv = encode(version, &value);
            if let Some(v) = staged.get(&key) {
                if version < *v {
                    return Err(Error::VersionMismatch);
                }
            } else {
                self.check(&versions, &key, version, &vv)?;
            }
            batch.insert(key.as_bytes(), vv);
            staged.insert(key, version);
        }
        self.tree.apply_batch(batch).map_err(io)?;
        // Durable before VLS's commit returns (or, when deferring, before the stream loop
        // answers: it flushes after every request).
        if !self.defer_flush {
            self.db.flush().map_err(io)?;
        }
        versions.extend(staged);
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(self.tree.get(key).map_err(io)?.map(|v| decode(&v)))
    }

    fn get_version(&self, key: &str) -> Result<Option<u64>, Error> {
        Ok(self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied())
    }

    fn get_prefix(&self, prefix: &str) -> Result<Self::Iter, Error> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(io)?;
            out.push(KVV(String::from_utf8_lossy(&k).into_owned(), decode(&v)));
        }
        Ok(Iter(out.into_iter()))
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        self.put(key, Vec::new())
    }

    fn clear_database(&self) -> Result<(), Error> {
        self.tree.clear().map_err(io)?;
        self.db.flush().map_err(io)?;
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    fn reset_versions(&self) -> Result<(), Error> {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(io)?;
            batch.insert(k, encode(0, &decode(&v).1));
        }
        self.tree.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        versions.values_mut().for_each(|v| *v = 0);
        Ok(())
    }

    fn signer_id(&self) -> [u8; 16] {
        self.signer_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_never_go_backwards_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = SledKVVStore::open(&db).unwrap();
        s.put("a", b"1".to_vec()).unwrap();
        s.put("a", b"2".to_vec()).unwrap();
        assert_eq!(s.get("a").unwrap(), Some((1, b"2".to_vec())));
        assert!(matches!(
            s.put_with_version("a", 0, b"x".to_vec()),
            Err(Error::VersionMismatch)
        ));
        assert!(matches!(
            s.put_with_version("a", 1, b"changed".to_vec()),
            Err(Error::VersionMismatch)
        ));
        s.put_with_version("a", 1, b"2".to_vec()).unwrap();
        s.put_batch(vec![
            KVV("b/1".into(), (0, b"x".to_vec())),
            KVV("b/2".into(), (0, b"y".to_vec())),
        ])
        .unwrap();
        let id = s.signer_id();
        drop(s);
        let s = SledKVVStore::open(&db).unwrap();
        assert_eq!(s.get_version("a").unwrap(), Some(1));
        assert_eq!(s.signer_id(), id);
        let keys: Vec<String> = s.get_prefix("b/").unwrap().map(|k| k.0).collect();
        assert_eq!(keys, vec!["b/1", "b/2"]);
    }

    #[test]
    fn a_batch_with_a_stale_version_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = SledKVVStore::open(&db).unwrap();
        s.put("a", b"1".to_vec()).unwrap();
        s.put("a", b"2".to_vec()).unwrap();
        let r = s.put_batch(vec![
            KVV("new".into(), (0, b"n".to_vec())),
            KVV("a".into(), (0, b"old".to_vec())),
        ]);
        assert!(matches!(r, Err(Error::VersionMismatch)));
        assert_eq!(s.get("new").unwrap(), None);
    }
}
