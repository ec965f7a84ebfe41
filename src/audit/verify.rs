//! Verifying the audit log: the chain, record by record, and every checkpoint against the HSM's
//! public key. The first problem found is pinpointed by sequence number.

use super::{
    checkpoint_digest, read_checkpoints, read_records, record_hash, AuditError, AuditRecord,
    Checkpoint,
};
use lightning_signer::bitcoin::secp256k1::{ecdsa::Signature, Message, PublicKey, Secp256k1};

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Everything checks out.
    Ok {
        /// Records verified.
        records: u64,
        /// Checkpoints verified.
        checkpoints: u64,
        /// Records after the last checkpoint (hash-chained but not yet signed).
        unsigned_tail: u64,
    },
    /// The first problem.
    Bad {
        /// The record (or checkpoint) where the problem is.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
}

/// Verify records and checkpoints against `key` (the HSM's audit key), and, when the token's
/// anchor is known, that the log reaches it with the same chain head: a log that ends before
/// the anchor was truncated or rolled back, even if every checkpoint still present verifies.
pub fn verify_anchored(
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    key: &PublicKey,
    anchor: Option<&crate::hsm::AuditAnchor>,
) -> Finding {
    let finding = verify(records, checkpoints, key);
    let Some(anchor) = anchor else {
        return finding;
    };
    if !matches!(finding, Finding::Ok { .. }) {
        return finding;
    }
    match records.get(anchor.seq as usize - 1).filter(|_| anchor.seq > 0) {
        None => Finding::Bad {
            seq: records.len() as u64 + 1,
            problem: format!(
                "the log ends at record {} but the HSM's anchor says record {} was checkpointed: records were truncated or the log was rolled back",
                records.len(),
                anchor.seq
            ),
        },
        Some(r) if r.hash != hex::encode(anchor.head) => Finding::Bad {
            seq: anchor.seq,
            problem: format!(
                "record {} is not the one the HSM's anchor checkpointed (its hash differs): the log was rewritten",
                anchor.seq
            ),
        },
        Some(_) => finding,
    }
}

/// Verify records and checkpoints against `key` (the HSM's audit key).
pub fn verify(records: &[AuditRecord], checkpoints: &[Checkpoint], key: &PublicKey) -> Finding {
    let bad = |seq: u64, problem: String| Finding::Bad { seq, problem };
    let mut prev = [0u8; 32];
    let mut hashes = std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let expected_seq = i as u64 + 1;
        if r.seq != expected_seq {
            return bad(
                expected_seq,
                format!("record {expected_seq} is missing or out of order (found record {} in its place)", r.seq),
            );
        }
        if r.prev != hex::encode(prev) {
            return bad(
                r.seq,
                format!(
                    "record {} does not chain to record {} (previous hash differs)",
                    r.seq,
                    r.seq - 1
                ),
            );
        }
        let h = record_hash(r.seq, r.time, &r.kind, &r.data, &prev);
        if r.hash != hex::encode(h) {
            return bad(
                r.seq,
                format!(
                    "record {} was altered (its content does not match its hash)",
                    r.seq
                ),
            );
        }
        hashes.insert(r.seq, h);
        prev = h;
    }
    let secp = Secp256k1::verification_only();
    for c in checkpoints {
        let Some(h) = hashes.get(&c.seq) else {
            return bad(
                c.seq,
                format!(
                    "checkpoint at record {} covers a record that is not in the log (truncated?)",
                    c.seq
                ),
            );
        };
        if c.head != hex::encode(h) {
            return bad(
                c.seq,
                format!(
                    "checkpoint at record {} signs a different chain head",
                    c.seq
                ),
            );
        }
        let sig = hex::decode(&c.signature)
            .ok()
            .and_then(|b| Signature::from_compact(&b).ok());
        let ok = sig
            .map(|s| {
                secp.verify_ecdsa(
                    &Message::from_digest(checkpoint_digest(c.seq, h, c.time)),
                    &s,
                    key,
                )
                .is_ok()
            })
            .unwrap_or(false);
        if !ok {
            return bad(
                c.seq,
                format!(
                    "checkpoint at record {} is not signed by the HSM audit key {key}",
                    c.seq
                ),
            );
        }
    }
    let last_ckpt = checkpoints.iter().map(|c| c.seq).max().unwrap_or(0);
    Finding::Ok {
        records: records.len() as u64,
        checkpoints: checkpoints.len() as u64,
        unsigned_tail: (records.len() as u64).saturating_sub(last_ckpt),
    }
}

/// Read and verify a database's audit log (see [`verify_anchored`]).
pub fn verify_store(
    store: &crate::store::Store,
    key: &PublicKey,
    anchor: Option<&crate::hsm::AuditAnchor>,
) -> Result<Finding, AuditError> {
    Ok(verify_anchored(
        &read_records(store)?,
        &read_checkpoints(store)?,
        key,
        anchor,
    ))
}
