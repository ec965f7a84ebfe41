//! VLS's node and channel state in the store's `vls` namespace.
//!
//! [`VlsKvvStore`] implements VLS's key-version-value store interface with the same rules as
//! VLS's own stores (a key's version never goes backwards; a re-put at the same version must
//! carry the same value). VLS's `TransactionalKVVStore` buffers a request's writes between
//! `enter` and `commit`; its commit stages them here, in the request's transaction, so they
//! become durable in the one commit that also holds Warden's decision and audit record.
//!
//! Every entry is also held in memory, loaded once at open and updated as writes are staged:
//! VLS's transactional layer reads a key's current value before each write, and those reads,
//! with `get`, `get_prefix` and the version checks, are answered from memory, never from the
//! database. On a database across the network that saves a round trip per key, and a database
//! that goes away in the middle of a request cannot fail a VLS write (VLS panics when its
//! persister fails). Memory is ahead of the database only while a request's transaction is
//! open; when it is discarded or its commit fails, the stream rebuilds the node, and this
//! store with it, from what was committed.
//!
//! A deletion (VLS writes an empty value) removes the key: what VLS forgets (invoices past their
//! retention, closed channels' stubs) leaves nothing behind on disk. VLS's stores keep such
//! tombstones for replication to a cloud store, which Warden does not use.

use crate::store::{Namespace, Store, StoreError};
use lightning_signer::persist::Error;
use lightning_signer::SendSync;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use vls_persist::kvv::{KVVStore, KVV};

/// VLS's key-version-value store on Warden's store.
pub struct VlsKvvStore {
    store: Store,
    /// Every key's encoded version and value, as staged.
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
    signer_id: [u8; 16],
}

impl SendSync for VlsKvvStore {}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("state database: {e}"))
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

const SIGNER_ID: &[u8] = b"vls-signer-id";

impl VlsKvvStore {
    /// Over `store`, loading every key's version.
    pub fn open(store: &Store) -> Result<Self, Error> {
        let mut entries = BTreeMap::new();
        for (k, v) in store.scan(Namespace::Vls, b"").map_err(io)? {
            entries.insert(String::from_utf8_lossy(&k).into_owned(), v);
        }
        let signer_id = match store.get(Namespace::Meta, SIGNER_ID).map_err(io)? {
            Some(v) if v.len() == 16 => v.as_slice().try_into().expect("16 bytes"),
            _ => {
                let mut id = [0u8; 16];
                getrandom::getrandom(&mut id).map_err(io)?;
                store
                    .write(|| store.put(Namespace::Meta, SIGNER_ID.to_vec(), id.to_vec()))
                    .map_err(io)?;
                id
            }
        };
        Ok(VlsKvvStore {
            store: store.clone(),
            entries: Mutex::new(entries),
            signer_id,
        })
    }

    fn check(
        entries: &BTreeMap<String, Vec<u8>>,
        key: &str,
        version: u64,
        vv: &[u8],
    ) -> Result<(), Error> {
        if let Some(existing) = entries.get(key) {
            let v = decode(existing).0;
            if version < v || (version == v && existing.as_slice() != vv) {
                return Err(Error::VersionMismatch);
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

impl KVVStore for VlsKvvStore {
    type Iter = Iter;

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        let version = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|vv| decode(vv).0 + 1)
            .unwrap_or(0);
        self.put_with_version(key, version, value)
    }

    fn put_with_version(&self, key: &str, version: u64, value: Vec<u8>) -> Result<(), Error> {
        self.put_batch(vec![KVV(key.to_string(), (version, value))])
    }

    fn put_batch(&self, kvvs: Vec<KVV>) -> Result<(), Error> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut staged: Vec<(String, u64, Vec<u8>)> = Vec::with_capacity(kvvs.len());
        let mut seen: HashMap<String, u64> = HashMap::new();
        for KVV(key, (version, value)) in kvvs {
            let vv = encode(version, &value);
            if let Some(v) = seen.get(&key) {
                if version < *v {
                    return Err(Error::VersionMismatch);
                }
            } else {
                Self::check(&entries, &key, version, &vv)?;
            }
            seen.insert(key.clone(), version);
            staged.push((key, version, vv));
        }
        // Checked in full before anything is staged: a stale version writes nothing.
        self.store
            .write(|| {
                for (key, _, vv) in &staged {
                    if vv.len() == 8 {
                        self.store.delete(Namespace::Vls, key.as_bytes().to_vec())?;
                    } else {
                        self.store
                            .put(Namespace::Vls, key.as_bytes().to_vec(), vv.clone())?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .map_err(io)?;
        for (key, _, vv) in staged {
            if vv.len() == 8 {
                entries.remove(&key);
            } else {
                entries.insert(key, vv);
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|vv| decode(vv)))
    }

    fn get_version(&self, key: &str) -> Result<Option<u64>, Error> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|vv| decode(vv).0))
    }

    fn get_prefix(&self, prefix: &str) -> Result<Self::Iter, Error> {
        let out = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, vv)| KVV(k.clone(), decode(vv)))
            .collect::<Vec<_>>();
        Ok(Iter(out.into_iter()))
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        self.put(key, Vec::new())
    }

    fn clear_database(&self) -> Result<(), Error> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.store
            .write(|| {
                for k in entries.keys() {
                    self.store.delete(Namespace::Vls, k.as_bytes().to_vec())?;
                }
                Ok::<_, StoreError>(())
            })
            .map_err(io)?;
        entries.clear();
        Ok(())
    }

    fn reset_versions(&self) -> Result<(), Error> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let reset: BTreeMap<String, Vec<u8>> = entries
            .iter()
            .map(|(k, vv)| (k.clone(), encode(0, &decode(vv).1)))
            .collect();
        self.store
            .write(|| {
                for (k, vv) in &reset {
                    self.store
                        .put(Namespace::Vls, k.as_bytes().to_vec(), vv.clone())?;
                }
                Ok::<_, StoreError>(())
            })
            .map_err(io)?;
        *entries = reset;
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
        let db = Store::open(dir.path()).unwrap();
        let s = VlsKvvStore::open(&db).unwrap();
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
        let s = VlsKvvStore::open(&db).unwrap();
        assert_eq!(s.get_version("a").unwrap(), Some(1));
        assert_eq!(s.signer_id(), id);
        let keys: Vec<String> = s.get_prefix("b/").unwrap().map(|k| k.0).collect();
        assert_eq!(keys, vec!["b/1", "b/2"]);
    }

    #[test]
    fn reads_and_version_checks_are_answered_from_memory_not_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(dir.path()).unwrap();
        let s = VlsKvvStore::open(&db).unwrap();
        s.put("n/1", b"mine".to_vec()).unwrap();
        // Changed behind its back, as only another writer could: this store does not look.
        db.tamper(Namespace::Vls, b"n/1", Some(&encode(7, b"theirs")));
        assert_eq!(s.get("n/1").unwrap(), Some((0, b"mine".to_vec())));
        assert_eq!(s.get_version("n/1").unwrap(), Some(0));
        let listed: Vec<_> = s.get_prefix("n/").unwrap().map(|k| k.1).collect();
        assert_eq!(listed, vec![(0, b"mine".to_vec())]);
        // A store opened now (the rebuild after a failed commit) reads the database.
        let fresh = VlsKvvStore::open(&db).unwrap();
        assert_eq!(fresh.get("n/1").unwrap(), Some((7, b"theirs".to_vec())));
        // The re-put check compares with memory too: the same version and value pass.
        s.put_with_version("n/1", 0, b"mine".to_vec()).unwrap();
    }

    #[test]
    fn a_batch_with_a_stale_version_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(dir.path()).unwrap();
        let s = VlsKvvStore::open(&db).unwrap();
        s.put("a", b"1".to_vec()).unwrap();
        s.put("a", b"2".to_vec()).unwrap();
        let r = s.put_batch(vec![
            KVV("new".into(), (0, b"n".to_vec())),
            KVV("a".into(), (0, b"old".to_vec())),
        ]);
        assert!(matches!(r, Err(Error::VersionMismatch)));
        assert_eq!(s.get("new").unwrap(), None);
    }

    #[test]
    fn a_deleted_key_leaves_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(dir.path()).unwrap();
        let s = VlsKvvStore::open(&db).unwrap();
        s.put("warden/inv/aa", b"invoice".to_vec()).unwrap();
        s.delete("warden/inv/aa").unwrap();
        assert_eq!(s.get("warden/inv/aa").unwrap(), None);
        assert_eq!(s.get_version("warden/inv/aa").unwrap(), None);
        assert!(db.scan(Namespace::Vls, b"warden/inv/").unwrap().is_empty());
        assert_eq!(s.get_prefix("warden/").unwrap().count(), 0);
        // Put again after the delete: a fresh key.
        s.put("warden/inv/aa", b"again".to_vec()).unwrap();
        assert_eq!(
            s.get("warden/inv/aa").unwrap(),
            Some((0, b"again".to_vec()))
        );
    }
}
