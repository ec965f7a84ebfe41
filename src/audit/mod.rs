//! The audit log: one record per security-relevant event, hash-chained, with checkpoints signed
//! by the HSM's secp256k1 key.
//!
//! Each record holds the hash of the one before it, so editing, deleting or reordering any
//! record breaks the chain from that point on; every [`AuditConfig::checkpoint_every`] records
//! (or [`AuditConfig::checkpoint_secs`] seconds) the chain head is signed in the HSM, so even
//! someone who rewrites the whole chain cannot produce checkpoints for it without the token.
//! `wardenctl audit verify` walks the chain and checks every checkpoint against the HSM key.
//!
//! Layout (store namespace `audit`): `r` + seq (u64 BE) → record JSON; `c` + seq → checkpoint
//! JSON. A record is staged in the transaction of the request it records and is durable in the
//! same commit as the state change (fail closed: a decision whose record cannot be written is a
//! refusal, and a record whose request's commit fails is gone with it).

pub mod report;
pub mod verify;

use crate::store::{Namespace, Store, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use lightning_signer::bitcoin::secp256k1::{ecdsa::Signature, PublicKey};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// What signs checkpoints: the HSM in wardend.
pub trait CheckpointSigner: Send + Sync {
    /// A low-S ECDSA signature over `digest`.
    fn sign(&self, digest: &[u8; 32]) -> Result<Signature, String>;
    /// The public key that verifies it.
    fn public_key(&self) -> Result<PublicKey, String>;
    /// The anchor kept where the database cannot roll it back (the HSM token).
    fn anchor(&self) -> Result<Option<crate::hsm::AuditAnchor>, String>;
    /// Move the anchor forward (never back) to a checkpoint that is committed.
    fn advance_anchor(&self, anchor: &crate::hsm::AuditAnchor) -> Result<(), String>;
    /// The newest policy version the token saw in force (see [`crate::hsm::PolicyAnchor`]).
    fn policy_anchor(&self) -> Result<Option<crate::hsm::PolicyAnchor>, String>;
    /// Move the policy anchor forward (never back) to a version that is committed.
    fn advance_policy_anchor(&self, anchor: &crate::hsm::PolicyAnchor) -> Result<(), String>;
}

impl CheckpointSigner for crate::hsm::Hsm {
    fn sign(&self, digest: &[u8; 32]) -> Result<Signature, String> {
        self.sign_digest(digest).map_err(|e| e.to_string())
    }
    fn public_key(&self) -> Result<PublicKey, String> {
        self.audit_public_key().map_err(|e| e.to_string())
    }
    fn anchor(&self) -> Result<Option<crate::hsm::AuditAnchor>, String> {
        self.audit_anchor().map_err(|e| e.to_string())
    }
    fn advance_anchor(&self, anchor: &crate::hsm::AuditAnchor) -> Result<(), String> {
        self.advance_audit_anchor(anchor).map_err(|e| e.to_string())
    }
    fn policy_anchor(&self) -> Result<Option<crate::hsm::PolicyAnchor>, String> {
        crate::hsm::Hsm::policy_anchor(self).map_err(|e| e.to_string())
    }
    fn advance_policy_anchor(&self, anchor: &crate::hsm::PolicyAnchor) -> Result<(), String> {
        crate::hsm::Hsm::advance_policy_anchor(self, anchor).map_err(|e| e.to_string())
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Format version.
    pub v: u8,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Unix time.
    pub time: u64,
    /// What happened: "decision", "approval", "rejection", "start", "stop", "policy", "hsm-error",
    /// "auth-failure", "refusal", …
    pub kind: String,
    /// The event's details (amounts, tags, policy hash, admin signature, …).
    pub data: serde_json::Value,
    /// Hash of the previous record (zeros for the first).
    pub prev: String,
    /// This record's hash: see [`record_hash`].
    pub hash: String,
}

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub v: u8,
    /// The last record covered.
    pub seq: u64,
    /// That record's hash.
    pub head: String,
    /// Unix time of signing.
    pub time: u64,
    /// DER-less compact ECDSA signature (hex) over [`checkpoint_digest`].
    pub signature: String,
    /// The signing key (compressed, hex), for reference; verification uses the HSM's key.
    pub public_key: String,
}

/// `sha256("warden/audit/v1" || seq || time || len(kind) || kind || len(data) || data || prev)`.
pub fn record_hash(
    seq: u64,
    time: u64,
    kind: &str,
    data: &serde_json::Value,
    prev: &[u8; 32],
) -> [u8; 32] {
    let data = serde_json::to_vec(data).unwrap_or_default();
    let mut e = sha256::Hash::engine();
    e.input(b"warden/audit/v1");
    e.input(&seq.to_be_bytes());
    e.input(&time.to_be_bytes());
    e.input(&(kind.len() as u64).to_be_bytes());
    e.input(kind.as_bytes());
    e.input(&(data.len() as u64).to_be_bytes());
    e.input(&data);
    e.input(prev);
    sha256::Hash::from_engine(e).to_byte_array()
}

/// `sha256("warden/audit-checkpoint/v1" || seq || head || time)`.
pub fn checkpoint_digest(seq: u64, head: &[u8; 32], time: u64) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(b"warden/audit-checkpoint/v1");
    e.input(&seq.to_be_bytes());
    e.input(head);
    e.input(&time.to_be_bytes());
    sha256::Hash::from_engine(e).to_byte_array()
}

/// How often to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Records between checkpoints.
    pub checkpoint_every: u64,
    /// Seconds between checkpoints (checked when a record is appended).
    pub checkpoint_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: 100,
            checkpoint_secs: 60,
        }
    }
}

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HSM could not sign a checkpoint.
    #[error("the HSM could not sign an audit checkpoint: {0}")]
    Sign(String),
    /// The log ends before the checkpoint the HSM anchored: truncated or rolled back.
    #[error("the audit log ends at record {log} but the HSM's anchor says record {anchor} was checkpointed: the log was truncated or rolled back. Restore the data directory from a backup that reaches record {anchor}; wardend will not continue a shortened log. To start a new log on this token on purpose, delete the anchor object first (pkcs11-tool --login --delete-object --type data --label warden-audit-anchor)")]
    BehindAnchor {
        /// The log's last record.
        log: u64,
        /// The anchored record.
        anchor: u64,
    },
    /// The record at the anchor, or a record after it, is not what was chained and checkpointed.
    #[error("the audit log does not match the HSM's anchor: {0}. The log was rewritten; restore the data directory from a backup and keep this one for investigation")]
    Rewritten(String),
    /// The HSM could not read or write the anchor.
    #[error("the HSM could not read the audit anchor: {0}")]
    Anchor(String),
    /// A stored record does not decode.
    #[error("audit record {key} does not decode: {detail}")]
    Corrupt {
        /// Which.
        key: String,
        /// Why.
        detail: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    hash: [u8; 32],
    last_checkpoint_seq: u64,
    last_checkpoint_time: u64,
}

/// The append side of the audit log.
pub struct AuditLog {
    store: Store,
    signer: Arc<dyn CheckpointSigner>,
    config: AuditConfig,
    head: Mutex<Head>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// The key of record or checkpoint `seq` (`prefix` b'r' or b'c').
pub fn key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, AuditError> {
    serde_json::from_slice(v).map_err(|e| AuditError::Corrupt {
        key: hex::encode(k),
        detail: e.to_string(),
    })
}

/// Every record, in order.
pub fn read_records(store: &Store) -> Result<Vec<AuditRecord>, AuditError> {
    store
        .scan(Namespace::Audit, b"r")?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

/// Every checkpoint, in order.
pub fn read_checkpoints(store: &Store) -> Result<Vec<Checkpoint>, AuditError> {
    store
        .scan(Namespace::Audit, b"c")?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

fn read_head(store: &Store) -> Result<Head, AuditError> {
    let (seq, hash, time) = match store.last(Namespace::Audit, b"r")? {
        Some((k, v)) => {
            let r: AuditRecord = decode(&k, &v)?;
            let mut h = [0u8; 32];
            hex::decode_to_slice(&r.hash, &mut h).map_err(|e| AuditError::Corrupt {
                key: hex::encode(&k),
                detail: e.to_string(),
            })?;
            (r.seq, h, r.time)
        }
        None => (0, [0u8; 32], 0),
    };
    let (cseq, ctime) = match store.last(Namespace::Audit, b"c")? {
        Some((k, v)) => {
            let c: Checkpoint = decode(&k, &v)?;
            (c.seq, c.time)
        }
        None => (0, time),
    };
    Ok(Head {
        seq,
        hash,
        last_checkpoint_seq: cseq,
        last_checkpoint_time: ctime,
    })
}

/// The log must reach `anchor` with the same head, and chain from there to its end.
fn check_tail(
    store: &Store,
    head: &Head,
    anchor: &crate::hsm::AuditAnchor,
) -> Result<(), AuditError> {
    if head.seq < anchor.seq {
        return Err(AuditError::BehindAnchor {
            log: head.seq,
            anchor: anchor.seq,
        });
    }
    let mut prev: Option<[u8; 32]> = None;
    for seq in anchor.seq..=head.seq {
        let k = key(b'r', seq);
        let Some(v) = store.get(Namespace::Audit, &k)? else {
            return Err(AuditError::Rewritten(format!("record {seq} is missing")));
        };
        let r: AuditRecord = decode(&k, &v)?;
        let mut stated_prev = [0u8; 32];
        hex::decode_to_slice(&r.prev, &mut stated_prev).map_err(|e| AuditError::Corrupt {
            key: hex::encode(k),
            detail: e.to_string(),
        })?;
        if prev.is_some_and(|p| p != stated_prev) {
            return Err(AuditError::Rewritten(format!(
                "record {seq} does not chain to record {}",
                seq - 1
            )));
        }
        let h = record_hash(seq, r.time, &r.kind, &r.data, &stated_prev);
        if seq == anchor.seq && h != anchor.head {
            return Err(AuditError::Rewritten(format!(
                "record {seq} is not the one the anchor checkpointed"
            )));
        }
        if r.hash != hex::encode(h) {
            return Err(AuditError::Rewritten(format!("record {seq} was altered")));
        }
        prev = Some(h);
    }
    Ok(())
}

impl AuditLog {
    /// Open the log in `store`, continuing its chain, after checking it against the HSM's
    /// anchor: the log must reach the anchored checkpoint with the same chain head, and every
    /// record from there on must chain to it. A token without an anchor (a new log, or a log
    /// from before anchors) gets one at the latest checkpoint now.
    pub fn open(
        store: &Store,
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        let head = read_head(store)?;
        match signer.anchor().map_err(AuditError::Anchor)? {
            Some(anchor) if anchor.seq > 0 => check_tail(store, &head, &anchor)?,
            Some(_) => {}
            None => {
                if let Some((k, v)) = store.last(Namespace::Audit, b"c")? {
                    let c: Checkpoint = decode(&k, &v)?;
                    if c.seq == 0 {
                        return Err(AuditError::Rewritten(
                            "a checkpoint claims record 0, which no log has".into(),
                        ));
                    }
                    let mut h = [0u8; 32];
                    hex::decode_to_slice(&c.head, &mut h).map_err(|e| AuditError::Corrupt {
                        key: hex::encode(&k),
                        detail: e.to_string(),
                    })?;
                    signer
                        .advance_anchor(&crate::hsm::AuditAnchor {
                            seq: c.seq,
                            head: h,
                        })
                        .map_err(AuditError::Anchor)?;
                }
            }
        }
        Ok(AuditLog {
            head: Mutex::new(head),
            store: store.clone(),
            signer,
            config,
        })
    }

    /// The store the log is kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Forget what memory holds beyond the committed chain (after a discarded transaction).
    pub fn reload(&self) -> Result<(), AuditError> {
        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = read_head(&self.store)?;
        Ok(())
    }

    fn sign_head(&self, seq: u64, hash: &[u8; 32], time: u64) -> Result<(), AuditError> {
        let sig = self
            .signer
            .sign(&checkpoint_digest(seq, hash, time))
            .map_err(AuditError::Sign)?;
        let pk = self.signer.public_key().map_err(AuditError::Sign)?;
        let c = Checkpoint {
            v: 1,
            seq,
            head: hex::encode(hash),
            time,
            signature: hex::encode(sig.serialize_compact()),
            public_key: hex::encode(pk.serialize()),
        };
        self.store.put(
            Namespace::Audit,
            key(b'c', seq).to_vec(),
            serde_json::to_vec(&c).expect("serializable"),
        )?;
        // The anchor moves only once the checkpoint is committed: a crash before that leaves
        // the anchor behind the log (allowed), never ahead of it.
        let signer = self.signer.clone();
        let anchor = crate::hsm::AuditAnchor { seq, head: *hash };
        self.store.after_commit(move || {
            if let Err(e) = signer.advance_anchor(&anchor) {
                tracing::error!(error = %e, seq, "cannot move the audit anchor on the HSM");
            }
        });
        Ok(())
    }

    /// Append a record to the request's transaction (or to a transaction of its own when no
    /// request is open on this thread), checkpointing when due. The record is durable exactly
    /// when that transaction commits.
    pub fn append(
        &self,
        time: u64,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<u64, AuditError> {
        self.store.write(|| {
            // A record whose checkpoint cannot be signed is not kept either.
            let savepoint = self.store.savepoint();
            let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            let seq = head.seq.saturating_add(1);
            let hash = record_hash(seq, time, kind, &data, &head.hash);
            let record = AuditRecord {
                v: 1,
                seq,
                time,
                kind: kind.to_string(),
                data,
                prev: hex::encode(head.hash),
                hash: hex::encode(hash),
            };
            self.store.put(
                Namespace::Audit,
                key(b'r', seq).to_vec(),
                serde_json::to_vec(&record).expect("serializable"),
            )?;
            let due = seq.saturating_sub(head.last_checkpoint_seq) >= self.config.checkpoint_every
                || time.saturating_sub(head.last_checkpoint_time) >= self.config.checkpoint_secs;
            if due {
                if let Err(e) = self.sign_head(seq, &hash, time) {
                    self.store.rollback_to(savepoint);
                    return Err(e);
                }
            }
            head.seq = seq;
            head.hash = hash;
            if due {
                head.last_checkpoint_seq = seq;
                head.last_checkpoint_time = time;
            }
            Ok(seq)
        })
    }

    /// Sign the head when records are unsigned and the interval has passed since the last
    /// checkpoint: the timer that keeps "at most `checkpoint_secs` unsigned" true when no new
    /// record arrives to trigger it.
    pub fn checkpoint_if_due(&self, time: u64) -> Result<bool, AuditError> {
        let due = {
            let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            head.seq > head.last_checkpoint_seq
                && time.saturating_sub(head.last_checkpoint_time) >= self.config.checkpoint_secs
        };
        if due {
            self.checkpoint(time)?;
        }
        Ok(due)
    }

    /// Sign the current head now (at shutdown, so the last records are covered).
    pub fn checkpoint(&self, time: u64) -> Result<(), AuditError> {
        self.store.write(|| {
            let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            if head.seq == 0 || head.last_checkpoint_seq == head.seq {
                return Ok(());
            }
            let (seq, hash) = (head.seq, head.hash);
            self.sign_head(seq, &hash, time)?;
            head.last_checkpoint_seq = seq;
            head.last_checkpoint_time = time;
            Ok(())
        })
    }

    /// The HSM's policy anchor.
    pub fn policy_anchor(&self) -> Result<Option<crate::hsm::PolicyAnchor>, String> {
        self.signer.policy_anchor()
    }

    /// Move the HSM's policy anchor to `anchor` once the open transaction commits (never
    /// before: an anchor ahead of the database would refuse a state that is merely behind).
    pub fn anchor_policy_after_commit(&self, anchor: crate::hsm::PolicyAnchor) {
        let signer = self.signer.clone();
        self.store.after_commit(move || {
            if let Err(e) = signer.advance_policy_anchor(&anchor) {
                tracing::error!(error = %e, version = anchor.version, "cannot move the policy anchor on the HSM");
            }
        });
    }

    /// Follow the checkpoints another wardend writes to a shared database (a standby's wait):
    /// the newest checkpoint whose signature verifies with this token's audit key moves this
    /// token's anchor to it, so a log later cut back behind it is refused at takeover. A
    /// checkpoint that does not verify is not followed (and is named). Returns the anchored seq.
    pub fn follow_checkpoints(
        store: &Store,
        signer: &dyn CheckpointSigner,
    ) -> Result<Option<u64>, String> {
        use lightning_signer::bitcoin::secp256k1::{Message, Secp256k1};
        let Some((k, v)) = store
            .last(Namespace::Audit, b"c")
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let c: Checkpoint = decode(&k, &v).map_err(|e| e.to_string())?;
        let mut head = [0u8; 32];
        hex::decode_to_slice(&c.head, &mut head).map_err(|e| e.to_string())?;
        let key = signer.public_key()?;
        let signed = hex::decode(&c.signature)
            .ok()
            .and_then(|b| Signature::from_compact(&b).ok())
            .is_some_and(|sig| {
                Secp256k1::verification_only()
                    .verify_ecdsa(
                        &Message::from_digest(checkpoint_digest(c.seq, &head, c.time)),
                        &sig,
                        &key,
                    )
                    .is_ok()
            });
        if !signed {
            return Err(format!(
                "the newest checkpoint (record {}) is not signed by this token's audit key {key}; not followed",
                c.seq
            ));
        }
        signer.advance_anchor(&crate::hsm::AuditAnchor { seq: c.seq, head })?;
        Ok(Some(c.seq))
    }

    /// Records so far.
    pub fn len(&self) -> u64 {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).seq
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
