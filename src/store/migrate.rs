//! Copying a stopped node's state from one backend to another, verified record by record.
//!
//! Everything is copied in one commit, so the destination holds all of it or nothing, and only
//! into a destination that holds no state yet (two nodes' states never mix). Afterwards both
//! sides are read back and compared per namespace: the number of records and a SHA-256 over
//! every key and value in key order. The VLS namespace's digest is the VLS state hash an
//! operator can compare with `wardenctl migrate`'s output later.

use super::{Backend, Batch, LocalBackend, Namespace, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use std::path::{Path, PathBuf};

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

/// The state a stopped wardend left in `dir` (its `data_dir/state`), in whichever local backend
/// holds it.
pub fn open_local(dir: &Path) -> Result<Box<dyn Backend>, StoreError> {
    match LocalBackend::in_dir(dir) {
        Some(LocalBackend::Sled) => Ok(Box::new(super::sled::SledBackend::open(dir)?)),
        Some(LocalBackend::Log) => Ok(Box::new(super::log::LogBackend::open(dir)?)),
        None => Err(StoreError::Open {
            path: dir.display().to_string(),
            detail: "it holds no state (neither a sled database nor a state log); point data_dir at the stopped node's data directory".into(),
        }),
    }
}

/// Copy the local state in `dir` (a stopped wardend's `data_dir/state`) into the empty `to`, as
/// [`copy_all`] does.
pub fn from_local(dir: &Path, to: &dyn Backend) -> Result<Vec<Copied>, StoreError> {
    let source = open_local(dir)?;
    copy_all(source.as_ref(), to)
}

/// A sled state moved into the log in place.
#[derive(Debug)]
pub struct InPlace {
    /// Every namespace, as copied and verified.
    pub copied: Vec<Copied>,
    /// Where the sled database now is (kept, never deleted: the operator removes it once the
    /// node has run on the log).
    pub kept: PathBuf,
    /// Whether this call only finished a move an earlier one had made (the copy was in place;
    /// the sled database had not yet been renamed).
    pub finished_earlier: bool,
}

/// Where the log is built beside the sled state before the two trade places.
const BUILDING: &str = "state.migrating";

/// Move the sled state in `data_dir/state` into Warden's append-only log in the same place.
///
/// The log is built and verified in `data_dir/state.migrating`; then the two directories trade
/// places in one atomic `renameat2(RENAME_EXCHANGE)`, so at every instant `data_dir/state`
/// holds a whole state, the sled one or the log, and a wardend started after a crash at any
/// point finds one or the other, never an empty directory that it would take for a new node.
/// The sled database is then renamed to `data_dir/state.sled-<unix time>` and kept. `check`
/// sees the copy, open, before the exchange (the caller verifies the audit chain there); an
/// error from it leaves `data_dir/state` untouched.
pub fn sled_to_log_in_place(
    data_dir: &Path,
    now_unix: u64,
    check: impl FnOnce(&std::sync::Arc<super::log::LogBackend>) -> Result<(), StoreError>,
) -> Result<InPlace, StoreError> {
    let state = data_dir.join("state");
    let building = data_dir.join(BUILDING);
    let kept = data_dir.join(format!("state.sled-{now_unix}"));
    let refuse = |detail: String| StoreError::Io {
        op: "migrate",
        detail,
    };
    if building.exists() {
        match (
            LocalBackend::in_dir(&state),
            LocalBackend::in_dir(&building),
        ) {
            // An earlier move traded the directories and stopped before the rename.
            (Some(LocalBackend::Log), Some(LocalBackend::Sled)) => {
                rename_kept(&building, &kept, data_dir)?;
                let log = super::log::LogBackend::open(&state)?;
                let sled = super::sled::SledBackend::open(&kept)?;
                let copied = verify_alike(&sled, &log)?;
                return Ok(InPlace {
                    copied,
                    kept,
                    finished_earlier: true,
                });
            }
            // An earlier copy that never took the state's place: it was never used.
            (Some(LocalBackend::Sled), Some(LocalBackend::Log) | None) => {
                std::fs::remove_dir_all(&building).map_err(|e| {
                    refuse(format!(
                        "removing the unfinished copy {}: {e}",
                        building.display()
                    ))
                })?;
            }
            (now, there) => {
                return Err(refuse(format!(
                    "{} holds {} and {} holds {}; that is not a move this tool started. Look at both, keep the node's state in {} and remove {}",
                    state.display(),
                    describe(now),
                    building.display(),
                    describe(there),
                    state.display(),
                    building.display()
                )))
            }
        }
    }
    match LocalBackend::in_dir(&state) {
        Some(LocalBackend::Sled) => {}
        Some(LocalBackend::Log) => {
            return Err(refuse(format!(
                "{} already holds the state log; there is nothing to move",
                state.display()
            )))
        }
        None => {
            return Err(refuse(format!(
                "{} holds no sled database; point data_dir at the stopped node's data directory",
                state.display()
            )))
        }
    }
    let copied = {
        // sled's lock refuses while wardend runs.
        let sled = super::sled::SledBackend::open(&state)?;
        let log = std::sync::Arc::new(super::log::LogBackend::open(&building)?);
        let copied = copy_all(&sled, log.as_ref())?;
        check(&log)?;
        copied
    };
    super::disk::sync_dir(&building, "sync the migrated log's directory")?;
    nix::fcntl::renameat2(
        None,
        &building,
        None,
        &state,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|e| {
        refuse(format!(
            "exchanging {} and {} (the file system must support renameat2's RENAME_EXCHANGE): {e}; {} is unchanged",
            building.display(),
            state.display(),
            state.display()
        ))
    })?;
    super::disk::sync_dir(data_dir, "sync the data directory after the exchange")?;
    rename_kept(&building, &kept, data_dir)?;
    Ok(InPlace {
        copied,
        kept,
        finished_earlier: false,
    })
}

fn describe(b: Option<LocalBackend>) -> &'static str {
    match b {
        Some(LocalBackend::Sled) => "a sled database",
        Some(LocalBackend::Log) => "a state log",
        None => "no state",
    }
}

fn rename_kept(from: &Path, to: &Path, parent: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|e| StoreError::Io {
        op: "migrate",
        detail: format!(
            "the state is in the log now, but renaming the sled database {} to {} failed: {e}; rename it by hand and keep it",
            from.display(),
            to.display()
        ),
    })?;
    super::disk::sync_dir(
        parent,
        "sync the data directory after keeping the sled database",
    )
}

/// Both sides agree on every namespace.
fn verify_alike(from: &dyn Backend, to: &dyn Backend) -> Result<Vec<Copied>, StoreError> {
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
    verify_alike(from, to)
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

    /// A stopped sled node's data directory with a few records.
    fn sled_node() -> tempfile::TempDir {
        let data = tempfile::tempdir().unwrap();
        let sled = SledBackend::open(&data.path().join("state")).unwrap();
        let mut batch = Batch::default();
        batch.put(Namespace::Vls, b"node".to_vec(), b"state".to_vec());
        batch.put(Namespace::Audit, b"r1".to_vec(), b"{}".to_vec());
        batch.put(Namespace::Velocity, b"w".to_vec(), vec![7; 40]);
        sled.commit(&batch).unwrap();
        data
    }

    fn kept_dirs(data: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("state.sled-")
            })
            .collect()
    }

    #[test]
    fn sled_moves_into_the_log_in_place_and_is_kept_beside_it() {
        let data = sled_node();
        let before = {
            let sled = SledBackend::open(&data.path().join("state")).unwrap();
            digest(&sled, Namespace::Velocity).unwrap()
        };
        let moved = sled_to_log_in_place(data.path(), 42, |_| Ok(())).unwrap();
        assert!(!moved.finished_earlier);
        assert_eq!(moved.kept, data.path().join("state.sled-42"));
        let state = data.path().join("state");
        assert_eq!(LocalBackend::in_dir(&state), Some(LocalBackend::Log));
        assert_eq!(LocalBackend::in_dir(&moved.kept), Some(LocalBackend::Sled));
        assert!(!data.path().join(BUILDING).exists());
        let log = crate::store::log::LogBackend::open(&state).unwrap();
        assert_eq!(digest(&log, Namespace::Velocity).unwrap(), before);
        assert_eq!(
            log.get(Namespace::Vls, b"node").unwrap(),
            Some(b"state".to_vec())
        );
        drop(log);
        let e = sled_to_log_in_place(data.path(), 43, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already holds the state log; there is nothing to move"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_check_leaves_the_sled_state_where_it_was() {
        let data = sled_node();
        let e = sled_to_log_in_place(data.path(), 42, |_| {
            Err(StoreError::Io {
                op: "migrate",
                detail: "the copied audit chain does not verify".into(),
            })
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not verify"), "{e}");
        assert_eq!(
            LocalBackend::in_dir(&data.path().join("state")),
            Some(LocalBackend::Sled)
        );
        assert!(kept_dirs(data.path()).is_empty());
        // The next run starts the copy again from the sled state.
        let moved = sled_to_log_in_place(data.path(), 44, |_| Ok(())).unwrap();
        assert!(!moved.finished_earlier);
        assert_eq!(moved.copied.iter().map(|c| c.records).sum::<usize>(), 3);
    }

    #[test]
    fn a_move_stopped_after_the_exchange_is_finished_by_the_next_run() {
        let data = sled_node();
        // What a crash between the exchange and the rename leaves: the log in state, sled in
        // state.migrating.
        let building = data.path().join(BUILDING);
        let state = data.path().join("state");
        {
            let sled = SledBackend::open(&state).unwrap();
            let log = crate::store::log::LogBackend::open(&building).unwrap();
            copy_all(&sled, &log).unwrap();
        }
        std::fs::rename(&state, data.path().join("tmp")).unwrap();
        std::fs::rename(&building, &state).unwrap();
        std::fs::rename(data.path().join("tmp"), &building).unwrap();
        let moved = sled_to_log_in_place(data.path(), 45, |_| Ok(())).unwrap();
        assert!(moved.finished_earlier);
        assert_eq!(LocalBackend::in_dir(&state), Some(LocalBackend::Log));
        assert_eq!(
            kept_dirs(data.path()),
            vec![data.path().join("state.sled-45")]
        );
        assert!(!building.exists());
    }

    #[test]
    fn an_unfinished_copy_is_thrown_away_and_made_again() {
        let data = sled_node();
        let building = data.path().join(BUILDING);
        {
            // A copy cut short: a log holding part of the state.
            let log = crate::store::log::LogBackend::open(&building).unwrap();
            let mut batch = Batch::default();
            batch.put(Namespace::Vls, b"node".to_vec(), b"partial".to_vec());
            log.commit(&batch).unwrap();
        }
        let moved = sled_to_log_in_place(data.path(), 46, |_| Ok(())).unwrap();
        assert!(!moved.finished_earlier);
        let log = crate::store::log::LogBackend::open(&data.path().join("state")).unwrap();
        assert_eq!(
            log.get(Namespace::Vls, b"node").unwrap(),
            Some(b"state".to_vec())
        );
    }

    #[test]
    fn a_directory_without_sled_state_is_refused_by_name() {
        let data = tempfile::tempdir().unwrap();
        let e = sled_to_log_in_place(data.path(), 1, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "holds no sled database; point data_dir at the stopped node's data directory"
            ),
            "{e}"
        );
        // Two states this tool never makes side by side: left alone, both named.
        let data = sled_node();
        drop(SledBackend::open(&data.path().join(BUILDING)).unwrap());
        let e = sled_to_log_in_place(data.path(), 1, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds a sled database and")
                && e.contains("that is not a move this tool started"),
            "{e}"
        );
        assert_eq!(
            LocalBackend::in_dir(&data.path().join(BUILDING)),
            Some(LocalBackend::Sled)
        );
    }
}
