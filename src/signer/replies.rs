//! The committed answer to every request that carries a decision, so a retransmission is
//! answered from it instead of being decided again.
//!
//! The proxy (and the LDK link, within one connection's life) keeps each request until it is
//! answered and sends it again, with the same number and bytes, to the next connection. When
//! wardend committed its decision but the answer never left (SIGKILL after the commit, a
//! failover, a dropped connection), deciding it again would count it twice, audit it twice, or
//! refuse it because its quorum approval was already used: VLS's fatal path, which stops
//! lightningd. So the answer of a decision-bearing request (preapprovals and on-chain
//! signatures) is staged in the request's own commit, keyed by its number, with a digest of its
//! bytes; a request with the same number and bytes is answered from it, deciding nothing.
//!
//! Only decision-bearing requests are kept, in a ring of [`RING`] slots (bounded state); an
//! answer older than [`MAX_AGE_SECS`] (Warden's time) is not reused, so a node that restarted
//! and reuses request numbers for new questions is answered anew.

use crate::store::{Namespace, Store, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use vls_protocol::msgs::{self, DeBolt};
use vlsd::grpc::hsmd::{SignerRequest, SignerResponse};

/// Answers kept: far more than a proxy ever has in flight.
pub const RING: u64 = 4_096;
/// How long an answer may be reused: retransmissions follow a restart or failover within
/// seconds to minutes; a node that restarted reuses request numbers for new questions, so an
/// answer is not kept longer than that.
pub const MAX_AGE_SECS: u64 = 600;
/// How far another wardend's clock may run ahead of this one's (after a failover) for its
/// answers to still count as recent.
pub const MAX_SKEW_SECS: u64 = 60;

const PREFIX: &[u8] = b"reply/";

/// Whether `message` (an hsmd message, type first) is one whose answer is a decision.
pub fn carries_decision(message: &[u8]) -> bool {
    let Some(t) = message.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    [
        msgs::PreapproveInvoice::TYPE,
        msgs::PreapproveKeysend::TYPE,
        msgs::SignWithdrawal::TYPE,
        msgs::SignHtlcTxMingle::TYPE,
        msgs::SignAnchorspend::TYPE,
    ]
    .contains(&t)
}

/// What names a request exactly: its bytes and the peer context it came with.
pub fn request_digest(request: &SignerRequest) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(b"warden/request-bytes/v1");
    e.input(&(request.message.len() as u64).to_be_bytes());
    e.input(&request.message);
    if let Some(c) = &request.context {
        e.input(&[1]);
        e.input(&(c.peer_id.len() as u64).to_be_bytes());
        e.input(&c.peer_id);
        e.input(&c.dbid.to_be_bytes());
        e.input(&c.capabilities.to_be_bytes());
    } else {
        e.input(&[0]);
    }
    sha256::Hash::from_engine(e).to_byte_array()
}

fn key(request_id: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&(request_id % RING).to_be_bytes());
    k
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    request_id: u64,
    digest: String,
    at: u64,
    message: String,
    error: String,
}

/// The committed answer to this exact request, if it was answered within [`MAX_AGE_SECS`].
pub fn answered(
    store: &Store,
    request: &SignerRequest,
    now: u64,
) -> Result<Option<SignerResponse>, StoreError> {
    let Some(bytes) = store.get(Namespace::Meta, &key(request.request_id))? else {
        return Ok(None);
    };
    let kept: Kept = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        key: format!("meta/reply/{}", request.request_id % RING),
        detail: e.to_string(),
    })?;
    if kept.request_id != request.request_id
        || kept.digest != hex::encode(request_digest(request))
        || now.saturating_sub(kept.at) > MAX_AGE_SECS
        || kept.at > now.saturating_add(MAX_SKEW_SECS)
    {
        return Ok(None);
    }
    let message = hex::decode(&kept.message).map_err(|e| StoreError::Corrupt {
        key: format!("meta/reply/{}", request.request_id % RING),
        detail: e.to_string(),
    })?;
    Ok(Some(SignerResponse {
        request_id: request.request_id,
        message,
        error: kept.error,
        is_temporary_failure: false,
    }))
}

/// Stage `response` to `request` in the open transaction (a temporary failure is not kept:
/// the node asks again and it is decided then).
pub fn keep(
    store: &Store,
    request_id: u64,
    request_digest: [u8; 32],
    response: &SignerResponse,
    now: u64,
) -> Result<(), StoreError> {
    if response.is_temporary_failure {
        return Ok(());
    }
    let kept = Kept {
        request_id,
        digest: hex::encode(request_digest),
        at: now,
        message: hex::encode(&response.message),
        error: response.error.clone(),
    };
    store.put(
        Namespace::Meta,
        key(request_id),
        serde_json::to_vec(&kept).expect("plain data serializes"),
    )
}
