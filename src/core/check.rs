//! Checks before signing: what signing an on-chain spend or funding channels would decide now,
//! counting nothing. The CLN plugin asks through the admin API, an LDK application through its
//! link (a Warden message on the hsmd stream); both come here, so both get the same answer,
//! tags and approval requests.

use super::Core;
use crate::policy::channels::ChannelOpen;
use crate::policy::PaymentRequest;

/// Most outputs or channels one check may name.
pub const MAX_CHECKED: usize = 1_000;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    /// Signing would approve it now.
    Approved,
    /// It needs a quorum: the named request waits for the admins; ask again once approved.
    Held,
    /// Refused by the named rules.
    Refused,
}

/// A check's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckAnswer {
    /// What signing would do.
    pub outcome: CheckOutcome,
    /// The rules that decided.
    pub tags: Vec<String>,
    /// Why not, one sentence per rule (empty when approved).
    pub reason: String,
    /// The approval request holding it (or whose veto refuses it).
    pub request_id: Option<String>,
}

/// A check that cannot be asked as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    /// No outputs or channels, or too many.
    #[error("a check names between 1 and {MAX_CHECKED} outputs or channels; this one names {0}")]
    Count(usize),
    /// An address that does not parse for the node's network.
    #[error("output address {address:?} is not a {network} address: {detail}")]
    Address {
        /// As given.
        address: String,
        /// The node's network.
        network: String,
        /// Why.
        detail: String,
    },
    /// A peer that is not a node id.
    #[error("peer {0:?} is not a node id (a compressed public key in hex)")]
    Peer(String),
    /// An amount that overflows msat.
    #[error("amount {0} sat is too large")]
    Amount(u64),
}

fn msat(sat: u64) -> Result<u64, CheckError> {
    sat.checked_mul(1_000).ok_or(CheckError::Amount(sat))
}

impl Core {
    /// What signing a spend to `outputs` (address, sat) would decide now; see
    /// [`Core::check_payment`].
    pub fn check_spend(
        &self,
        outputs: &[(String, u64)],
        command: &str,
    ) -> Result<CheckAnswer, CheckError> {
        if outputs.is_empty() || outputs.len() > MAX_CHECKED {
            return Err(CheckError::Count(outputs.len()));
        }
        let network = self.policy().policy.network;
        let mut parsed = Vec::with_capacity(outputs.len());
        for (address, sat) in outputs {
            let a = address
                .parse::<lightning_signer::bitcoin::Address<_>>()
                .and_then(|a| a.require_network(network))
                .map_err(|e| CheckError::Address {
                    address: address.clone(),
                    network: network.to_string(),
                    detail: e.to_string(),
                })?;
            // The address as VLS's outputs will name it (bech32 in lower case).
            parsed.push((a.to_string(), msat(*sat)?));
        }
        let answer = self.check_payment(&PaymentRequest::onchain(parsed));
        tracing::info!(command, approved = answer.approved, tags = ?answer.tags, "spend checked");
        Ok(self.outcome(answer))
    }

    /// What `[channels]` says to these opens (peer hex, sat, private?, incoming?).
    pub fn check_channels(
        &self,
        opens: &[(String, u64, Option<bool>, bool)],
        command: &str,
    ) -> Result<CheckAnswer, CheckError> {
        if opens.is_empty() || opens.len() > MAX_CHECKED {
            return Err(CheckError::Count(opens.len()));
        }
        let mut checked = Vec::with_capacity(opens.len());
        for (peer, sat, private, incoming) in opens {
            let peer = peer.to_ascii_lowercase();
            if peer
                .parse::<lightning_signer::bitcoin::secp256k1::PublicKey>()
                .is_err()
            {
                return Err(CheckError::Peer(peer));
            }
            checked.push(ChannelOpen {
                peer,
                capacity_msat: msat(*sat)?,
                private: *private,
                incoming: *incoming,
            });
        }
        Ok(self.outcome(self.check_channel_opens(&checked, &[], command)))
    }

    /// Held when the request an answer names waits for the admins (a refusal may name one too:
    /// the rejected request whose veto it is).
    fn outcome(&self, a: super::PaymentAnswer) -> CheckAnswer {
        let pending = |id: &String| {
            self.approvals.get(id).is_ok_and(|r| {
                r.state_at(self.clock.now()) == crate::approval::RequestState::Pending
            })
        };
        let outcome = if a.approved {
            CheckOutcome::Approved
        } else if a.request_id.as_ref().is_some_and(pending) {
            CheckOutcome::Held
        } else {
            CheckOutcome::Refused
        };
        CheckAnswer {
            outcome,
            tags: a.tags,
            reason: a.reason,
            request_id: a.request_id,
        }
    }
}
