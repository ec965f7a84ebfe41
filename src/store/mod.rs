//! Warden's state in sled.
//!
//! Every decision and the state change it causes are written as one atomic batch and flushed
//! to disk before the decision is returned: a crash after the answer leaves the velocity
//! windows exactly as the answer assumed, and a crash before it leaves nothing half-written.
//!
//! Layout of the `policy` tree (keys sort in time order within a prefix):
//! - `v` + ledger key + minute (u64 BE) → amount msat (u64 BE) + count (u64 BE)
//! - `d` + sequence (u64 BE) → a decision record (JSON, versioned)

use crate::policy::model::Destination;
use crate::policy::velocity::{Bucket, BucketChange, LedgerKey, VelocityState};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What went wrong with the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the directory.
    #[error("cannot open the state database in {path}: {detail}. Check that the data directory exists and is writable, and that no other wardend is running on it")]
    Open {
        /// The database directory.
        path: String,
        /// sled's error.
        detail: String,
    },
    /// A read or write failed.
    #[error("state database {op} failed: {detail}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// sled's error.
        detail: String,
    },
    /// A stored record does not decode: the database was altered or written by another version.
    #[error(
        "state database record {key} is corrupt: {detail}. Restore the data directory from backup"
    )]
    Corrupt {
        /// The key, in hex.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

fn io(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        detail: e.to_string(),
    }
}

/// A decision as recorded, for audit, reports and the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Record format version.
    pub v: u8,
    /// Sequence number, assigned by the store.
    pub seq: u64,
    /// Unix time of the decision.
    pub time: u64,
    /// Policy hash, hex.
    pub policy_hash: String,
    /// Request digest, hex.
    pub request_digest: String,
    /// "invoice", "keysend" or "onchain".
    pub kind: String,
    /// Total msat.
    pub amount_msat: u64,
    /// Destinations, as "node <id>" / "address <addr>".
    pub destinations: Vec<String>,
    /// "approve", "require-quorum" or "deny".
    pub verdict: String,
    /// Deciding rule tags.
    pub tags: Vec<String>,
    /// The refusal reason, if any.
    pub reason: Option<String>,
    /// Warnings (warn-mode rules), as sentences.
    pub warnings: Vec<String>,
}

/// The state database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    policy: sled::Tree,
    defer_flush: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// sled reports a held file lock as an I/O error whose message names it (its kind is not
/// always `WouldBlock`).
fn is_lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

const V: u8 = b'v';
const D: u8 = b'd';

/// Encode a ledger key; the inverse of [`decode_ledger_key`].
pub fn encode_ledger_key(key: &LedgerKey, out: &mut Vec<u8>) {
    let (tag, text): (u8, &str) = match key {
        LedgerKey::Node => (0, ""),
        LedgerKey::Destination(Destination::Node(n)) => (1, n),
        LedgerKey::Destination(Destination::Address(a)) => (2, a),
        LedgerKey::Group(g) => (3, g),
    };
    out.push(tag);
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Decode a ledger key from the front of `b`; returns it and the rest.
pub fn decode_ledger_key(b: &[u8]) -> Option<(LedgerKey, &[u8])> {
    let (&tag, rest) = b.split_first()?;
    if rest.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < len {
        return None;
    }
    let text = std::str::from_utf8(&rest[..len]).ok()?.to_string();
    let key = match tag {
        0 if len == 0 => LedgerKey::Node,
        1 => LedgerKey::Destination(Destination::Node(text)),
        2 => LedgerKey::Destination(Destination::Address(text)),
        3 => LedgerKey::Group(text),
        _ => return None,
    };
    Some((key, &rest[len..]))
}

fn bucket_key(key: &LedgerKey, minute: u64) -> Vec<u8> {
    let mut k = vec![V];
    encode_ledger_key(key, &mut k);
    k.extend_from_slice(&minute.to_be_bytes());
    k
}

impl Store {
    /// Open (or create) the database in `dir`.
    ///
    /// sled's background flusher is off: Warden flushes explicitly before every answer, and
    /// without the thread the file lock is released as soon as the last handle is dropped. A
    /// lock still held (a previous wardend that is exiting) is retried for up to two seconds,
    /// then reported as another process using the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
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
                    return Err(StoreError::Open {
                        path: dir.display().to_string(),
                        detail: "another process holds its lock (is another wardend running on this data directory?)"
                            .into(),
                    })
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        path: dir.display().to_string(),
                        detail: e.to_string(),
                    })
                }
            }
        };
        let policy = db.open_tree("policy").map_err(io("open tree"))?;
        Ok(Store {
            db,
            policy,
            defer_flush: Default::default(),
        })
    }

    /// Leave flushing decisions to the caller, who flushes once per request before answering
    /// (the signer's stream loop does): a decision, VLS's state change and the audit record of
    /// one request then cost one fsync instead of three.
    pub fn defer_flush(&self, defer: bool) {
        self.defer_flush
            .store(defer, std::sync::atomic::Ordering::Relaxed);
    }

    /// Flush everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io("flush"))
    }

    /// The underlying database, for the modules that keep their own trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Load every velocity bucket.
    pub fn load_velocity(&self) -> Result<VelocityState, StoreError> {
        let mut state = VelocityState::default();
        let mut changes = Vec::new();
        for kv in self.policy.scan_prefix([V]) {
            let (k, v) = kv.map_err(io("scan velocity"))?;
            let corrupt = |detail: &str| StoreError::Corrupt {
                key: hex::encode(&k),
                detail: detail.into(),
            };
            let (key, rest) =
                decode_ledger_key(&k[1..]).ok_or_else(|| corrupt("bad ledger key"))?;
            let minute = u64::from_be_bytes(rest.try_into().map_err(|_| corrupt("bad minute"))?);
            if v.len() != 16 {
                return Err(corrupt("bucket value is not 16 bytes"));
            }
            let amount_msat = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            let count = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
            changes.push((
                key,
                Bucket {
                    minute,
                    amount_msat,
                    count,
                },
            ));
        }
        state.apply(&changes);
        Ok(state)
    }

    /// Write a decision, its bucket changes and the buckets dropped by compaction as one
    /// atomic batch, and flush it to disk. Returns the record's sequence number.
    pub fn commit_decision(
        &self,
        record: &mut DecisionRecord,
        changes: &[BucketChange],
        dropped: &[(LedgerKey, u64)],
    ) -> Result<u64, StoreError> {
        let seq = self.db.generate_id().map_err(io("generate id"))?;
        record.seq = seq;
        let mut batch = sled::Batch::default();
        for (key, b) in changes {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&b.amount_msat.to_be_bytes());
            v.extend_from_slice(&b.count.to_be_bytes());
            batch.insert(bucket_key(key, b.minute), v);
        }
        for (key, minute) in dropped {
            batch.remove(bucket_key(key, *minute));
        }
        let mut k = vec![D];
        k.extend_from_slice(&seq.to_be_bytes());
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Io {
            op: "encode decision",
            detail: e.to_string(),
        })?;
        batch.insert(k, json);
        self.policy
            .apply_batch(batch)
            .map_err(io("write decision"))?;
        if !self.defer_flush.load(std::sync::atomic::Ordering::Relaxed) {
            self.db.flush().map_err(io("flush"))?;
        }
        Ok(seq)
    }

    /// Every recorded decision, oldest first.
    pub fn decisions(&self) -> Result<Vec<DecisionRecord>, StoreError> {
        self.policy
            .scan_prefix([D])
            .map(|kv| {
                let (k, v) = kv.map_err(io("scan decisions"))?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: hex::encode(&k),
                    detail: e.to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_keys_round_trip() {
        for key in [
            LedgerKey::Node,
            LedgerKey::Destination(Destination::Node("02ab".into())),
            LedgerKey::Destination(Destination::Address("bc1qxyz".into())),
            LedgerKey::Group("supplier-daily".into()),
        ] {
            let mut b = Vec::new();
            encode_ledger_key(&key, &mut b);
            b.extend_from_slice(&[9, 9]);
            let (back, rest) = decode_ledger_key(&b).unwrap();
            assert_eq!(back, key);
            assert_eq!(rest, &[9, 9]);
        }
        assert!(decode_ledger_key(&[7, 0, 0]).is_none());
        assert!(decode_ledger_key(&[1, 0, 5, b'a']).is_none());
    }
}
