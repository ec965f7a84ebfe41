//! Copying a stopped node's state from one backend to another, verified record by record.
//!
//! Everything is copied in one commit, so the destination holds all of it or nothing, and only
//! into a destination that holds no state yet (two nodes' states never mix). Afterwards both
//! sides are read back and compared per namespace: the number of records and a SHA-256 over
//! every key and value in key order. The VLS namespace's digest is the VLS state hash an
//! operator can compare with `wardenctl migrate`'s output later.

use super::{Backend, Batch, Namespace, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};

/// One namespace, as copied and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The namespace.
    pub ns: Namespace,
    /// Records in it (the same on both sides).
    pub records: usize,
    /// SHA-256 over its keys and values in key order (the same on both sides).
    pub digest: [u8; 32],
}

/// A namespace's records, without the backend's own format marker (sled's `Meta/format`), which
/// is not state and is not copied.
fn state(backend: &dyn Backend, ns: Namespace) -> Result<Vec<super::Entry>, StoreError> {
    let mut entries = backend.scan(ns, b"")?;
    if ns == Namespace::Meta {
        entries.retain(|(k, _)| k.as_slice() != b"format");
    }
    Ok(entries)
}

/// Records and digest of one namespace of `backend`.
pub fn digest(backend: &dyn Backend, ns: Namespace) -> Result<(usize, [u8; 32]), StoreError> {
    let entries = state(backend, ns)?;
    let mut engine = sha256::Hash::engine();
    for (k, v) in &entries {
        // Lengths first, so no two different listings hash alike.
        engine.input(&(k.len() as u64).to_be_bytes());
        engine.input(k);
        engine.input(&(v.len() as u64).to_be_bytes());
        engine.input(v);
    }
    Ok((
        entries.len(),
        sha256::Hash::from_engine(engine).to_byte_array(),
    ))
}

/// Copy the sled state in `dir` (a stopped wardend's `data_dir/state`) into the empty `to`, as
/// [`copy_all`] does.
pub fn from_sled(dir: &std::path::Path, to: &dyn Backend) -> Result<Vec<Copied>, StoreError> {
    if !dir.join("db").is_file() {
        return Err(StoreError::Open {
            path: dir.display().to_string(),
            detail: "it holds no sled state database; point data_dir at the stopped node's data directory".into(),
        });
    }
    let source = super::sled::SledBackend::open(dir)?;
    copy_all(&source, to)
}

/// Copy every namespace of `from` into the empty `to` in one commit, then verify both sides
/// agree on every namespace.
pub fn copy_all(from: &dyn Backend, to: &dyn Backend) -> Result<Vec<Copied>, StoreError> {
    let refuse = |detail: String| StoreError::Io {
        op: "migrate",
        detail,
    };
    for ns in Namespace::ALL {
        let there = state(to, ns)?.len();
        if there > 0 {
            return Err(refuse(format!(
                "the destination already holds state ({there} {} records); migrate into an empty database, never over another node's state",
                ns.name()
            )));
        }
    }
    let mut batch = Batch::default();
    for ns in Namespace::ALL {
        for (k, v) in state(from, ns)? {
            batch.put(ns, k, v);
        }
    }
    to.commit(&batch)?;
    let mut out = Vec::new();
    for ns in Namespace::ALL {
        let (n, d) = digest(from, ns)?;
        let (m, e) = digest(to, ns)?;
        if (n, d) != (m, e) {
            return Err(StoreError::Corrupt {
                key: ns.name().into(),
                detail: format!(
                    "after the copy the source holds {n} records (digest {}) and the destination {m} (digest {})",
                    hex::encode(d),
                    hex::encode(e)
                ),
            });
        }
        out.push(Copied {
            ns,
            records: n,
            digest: d,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::SledBackend;

    fn sled() -> (tempfile::TempDir, SledBackend) {
        let d = tempfile::tempdir().unwrap();
        let b = SledBackend::open(d.path()).unwrap();
        (d, b)
    }

    #[test]
    fn every_record_is_copied_and_both_sides_digest_alike() {
        let (_a, from) = sled();
        let (_b, to) = sled();
        let mut batch = Batch::default();
        batch.put(Namespace::Vls, b"node".to_vec(), b"state".to_vec());
        batch.put(Namespace::Audit, b"r1".to_vec(), b"{}".to_vec());
        batch.put(Namespace::Audit, b"r2".to_vec(), vec![0xff; 3]);
        from.commit(&batch).unwrap();
        let copied = copy_all(&from, &to).unwrap();
        let audit = copied.iter().find(|c| c.ns == Namespace::Audit).unwrap();
        assert_eq!(audit.records, 2);
        assert_eq!(
            to.get(Namespace::Audit, b"r2").unwrap(),
            Some(vec![0xff; 3])
        );
        assert_eq!(
            digest(&to, Namespace::Vls).unwrap(),
            digest(&from, Namespace::Vls).unwrap()
        );
        // The digest sees a changed value.
        let mut change = Batch::default();
        change.put(Namespace::Vls, b"node".to_vec(), b"other".to_vec());
        to.commit(&change).unwrap();
        assert_ne!(
            digest(&to, Namespace::Vls).unwrap(),
            digest(&from, Namespace::Vls).unwrap()
        );
    }

    #[test]
    fn a_destination_that_holds_state_is_refused_and_left_alone() {
        let (_a, from) = sled();
        let (_b, to) = sled();
        let mut batch = Batch::default();
        batch.put(Namespace::Velocity, b"x".to_vec(), b"1".to_vec());
        to.commit(&batch).unwrap();
        let mut src = Batch::default();
        src.put(Namespace::Vls, b"node".to_vec(), b"state".to_vec());
        from.commit(&src).unwrap();
        let e = copy_all(&from, &to).unwrap_err().to_string();
        assert!(
            e.contains("already holds state") && e.contains("velocity"),
            "{e}"
        );
        assert_eq!(to.get(Namespace::Vls, b"node").unwrap(), None);
    }
}
