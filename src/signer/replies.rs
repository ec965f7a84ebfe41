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
//! Only decision-bearing requests are kept, in a ring of [`RING`] slots (bounded state), however
//! long ago they were answered: a retransmission may follow a long outage, and Warden's clock
//! may jump meanwhile (an age limit let the seeded simulator find a request answered "no",
//! then "yes" when sent again after a clock jump). A node that restarted numbers its requests
//! from 0 again; only the same number with the very same bytes gets the kept answer, which for
//! a payment is the answer it got (an approval VLS still holds, or a refusal the next ask,
//! under a new number, decides anew).

use crate::store::{Namespace, Store, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use vls_protocol::msgs::{self, DeBolt};
use vlsd::grpc::hsmd::{SignerRequest, SignerResponse};

/// Answers kept: far more than a proxy ever has in flight.
pub const RING: u64 = 4_096;

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

/// The committed answer to this exact request, if it was answered.
pub fn answered(
    store: &Store,
    request: &SignerRequest,
) -> Result<Option<SignerResponse>, StoreError> {
    let Some(bytes) = store.get(Namespace::Meta, &key(request.request_id))? else {
        return Ok(None);
    };
    let kept: Kept = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        key: format!("meta/reply/{}", request.request_id % RING),
        detail: e.to_string(),
    })?;
    if kept.request_id != request.request_id || kept.digest != hex::encode(request_digest(request))
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
