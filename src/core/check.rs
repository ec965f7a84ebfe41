//! Checks before signing: what signing an on-chain spend or funding channels would decide now,
//! counting nothing. The CLN plugin asks through the admin API, an LDK application through its
//! link (a Warden message on the hsmd stream); both come here, so both get the same answer,
//! tags and approval requests.

use super::Core;
use crate::policy::channels::ChannelOpen;
use crate::policy::PaymentRequest;

/// Most outputs or channels one check may name.
pub const MAX_CHECKED: usize = 1_000;

pub use warden_client::check::{CheckAnswer, CheckOutcome};

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
    /// A PSBT that cannot be judged as it is.
    #[error("the PSBT cannot be checked: {0}")]
    Psbt(String),
    /// A payment check that names neither an invoice that parses nor a 32-byte payment hash.
    #[error("the payment cannot be checked: {0}")]
    Payment(String),
}

fn msat(sat: u64) -> Result<u64, CheckError> {
    sat.checked_mul(1_000).ok_or(CheckError::Amount(sat))
}

impl Core {
    /// What signing a spend to `outputs` (address, sat) would decide now; see
    /// [`Core::check_payment`]. `feerate_per_kw` is the feerate the command names, if it names
    /// one: above `[onchain] max_feerate` it is refused here, before lightningd builds it.
    pub fn check_spend(
        &self,
        outputs: &[(String, u64)],
        command: &str,
        feerate_per_kw: Option<u64>,
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
        let req = PaymentRequest::onchain(parsed);
        let answer = match self.named_feerate_refusal(&req, feerate_per_kw) {
            Some(refused) => refused,
            None => self.check_payment(&req),
        };
        tracing::info!(command, approved = answer.approved, tags = ?answer.tags, "spend checked");
        Ok(self.outcome(answer))
    }

    /// A feerate the command names above `[onchain] max_feerate`: refused (audited as a check);
    /// `None` when there is none or it is within the bound.
    fn named_feerate_refusal(
        &self,
        req: &PaymentRequest,
        feerate_per_kw: Option<u64>,
    ) -> Option<super::PaymentAnswer> {
        let hit = crate::policy::named_feerate_bound(&self.policy().policy, feerate_per_kw?)?;
        Some(self.refuse_alone(super::Intent::Check, req, vec![hit]))
    }

    /// What signing this PSBT (`signpsbt`) would decide now: its outputs that leave the wallet
    /// (not the node's wallet by script or key path, and funding no channel the signer holds)
    /// and its fee, from every input's `witness_utxo` (or its previous transaction). Signing
    /// decides again from VLS's own view of each output.
    pub fn check_psbt(&self, psbt: &[u8], command: &str) -> Result<CheckAnswer, CheckError> {
        use lightning_signer::bitcoin::psbt::Psbt;
        let psbt = Psbt::deserialize(psbt)
            .map_err(|e| CheckError::Psbt(format!("it does not parse ({e})")))?;
        let tx = &psbt.unsigned_tx;
        if tx.output.len() > MAX_CHECKED || tx.input.len() > MAX_CHECKED {
            return Err(CheckError::Count(tx.output.len().max(tx.input.len())));
        }
        let mut spent = Vec::with_capacity(tx.input.len());
        for (i, (input, meta)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
            let prev = meta.witness_utxo.clone().or_else(|| {
                meta.non_witness_utxo
                    .as_ref()
                    .filter(|t| t.compute_txid() == input.previous_output.txid)
                    .and_then(|t| t.output.get(input.previous_output.vout as usize).cloned())
            });
            spent.push(prev.ok_or_else(|| {
                CheckError::Psbt(format!(
                    "input {i} carries neither its witness_utxo nor its previous transaction, so its value (and the fee) is unknown"
                ))
            })?);
        }
        let txid = tx.compute_txid().to_string();
        let funding: Vec<usize> = self
            .channels()
            .iter()
            .filter_map(|c| {
                let (t, vout) = c.funding.as_deref()?.split_once(':')?;
                (t == txid).then(|| vout.parse().ok()).flatten()
            })
            .collect();
        // A key path in the PSBT is a claim, checked against the output's script (an RPC user
        // may write any); lightningd adds its change paths only inside signpsbt, after this
        // check, so the change is found by its script too.
        let outputs: Vec<super::channels::WalletOutput> = tx
            .output
            .iter()
            .zip(&psbt.outputs)
            .map(|(o, meta)| {
                let paths = meta
                    .bip32_derivation
                    .values()
                    .map(|(_, p)| p.clone())
                    .chain(meta.tap_key_origins.values().map(|(_, (_, p))| p.clone()))
                    .collect();
                (o.script_pubkey.clone(), paths)
            })
            .collect();
        let owned = self.wallet_owns(&outputs);
        let outside: Vec<usize> = (0..tx.output.len())
            .filter(|i| !funding.contains(i) && !owned.get(*i).copied().unwrap_or(false))
            .collect();
        let network = self.policy().policy.network;
        let req = crate::signer::fee::onchain_request(tx, &spent, &outside, network)
            .map_err(CheckError::Psbt)?;
        let answer = if outside.is_empty() {
            // Nothing leaves but the fee (change, channels funded): only [onchain] applies, as
            // at signing.
            let fee = req.fee.expect("onchain_request sets the fee");
            let hits = crate::policy::fee_bound(&self.policy().policy, &fee);
            if hits.is_empty() {
                super::PaymentAnswer {
                    approved: true,
                    tags: vec![],
                    reason: String::new(),
                    request_id: None,
                }
            } else {
                self.refuse_alone(super::Intent::Check, &req, hits)
            }
        } else {
            self.check_payment(&req)
        };
        tracing::info!(command, approved = answer.approved, tags = ?answer.tags, "PSBT checked");
        Ok(self.outcome(answer))
    }

    /// What preapproving the payment of `invoice` (BOLT 11 or 12, as a payment command names it)
    /// would decide now, counting nothing; see [`Core::check_payment`]. The request is the one
    /// the node's preapproval will make, so an approval given for a held one is the one used.
    pub fn check_invoice(&self, invoice: &str, command: &str) -> Result<CheckAnswer, CheckError> {
        use std::str::FromStr;
        // As lightningd reads it: without a `lightning:` prefix, in lower case.
        let text = invoice.trim().to_ascii_lowercase();
        let text = text.strip_prefix("lightning:").unwrap_or(&text);
        let parsed = lightning_signer::invoice::Invoice::from_str(text).map_err(|e| {
            CheckError::Payment(format!(
                "{invoice:?} is not a BOLT 11 or BOLT 12 invoice ({e:?})"
            ))
        })?;
        let req = crate::signer::approver::WardenApprover::request_for_invoice(&parsed);
        let amountless = matches!(&parsed, lightning_signer::invoice::Invoice::Bolt11(i) if i.amount_milli_satoshis().is_none());
        if !amountless {
            self.parsed_invoices.remember(text);
        }
        let answer = if amountless {
            let tag = crate::tags::INVOICE_WITHOUT_AMOUNT;
            let hit = crate::policy::RuleHit {
                tag: tag.into(),
                reason: format!("rule {tag}: the invoice has no amount, and the node's preapproval does not say how much it will pay, so no limit or quorum could be applied; ask the payee for an invoice with an amount"),
            };
            self.refuse_alone(super::Intent::Check, &req, vec![hit])
        } else {
            self.check_payment(&req)
        };
        tracing::info!(command, approved = answer.approved, tags = ?answer.tags, "payment checked");
        Ok(self.outcome(answer))
    }

    /// What preapproving a keysend of `amount_msat` to `payee` (hex) with `payment_hash` (hex)
    /// would decide now, counting nothing; the same request the preapproval makes.
    pub fn check_keysend(
        &self,
        payee: &str,
        payment_hash: &str,
        amount_msat: u64,
        command: &str,
    ) -> Result<CheckAnswer, CheckError> {
        let hash: [u8; 32] = hex::decode(payment_hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| {
                CheckError::Payment(format!(
                    "{payment_hash:?} is not a 32-byte payment hash in hex"
                ))
            })?;
        self.check_keysend_to(payee, Some(hash), amount_msat, command)
    }

    /// What Core Lightning's `keysend` of `amount_msat` to `payee` (hex) would meet at its
    /// preapproval, counting nothing, before the command picks its payment hash. A keysend that
    /// needs a quorum is refused here rather than held: the approval would name a payment hash,
    /// and the command picks a new one each time it runs, so none could ever be used.
    pub fn check_keysend_unhashed(
        &self,
        payee: &str,
        amount_msat: u64,
        command: &str,
    ) -> Result<CheckAnswer, CheckError> {
        self.check_keysend_to(payee, None, amount_msat, command)
    }

    /// A keysend to `payee` (hex), with its payment hash when the node has chosen it.
    fn check_keysend_to(
        &self,
        payee: &str,
        payment_hash: Option<[u8; 32]>,
        amount_msat: u64,
        command: &str,
    ) -> Result<CheckAnswer, CheckError> {
        let payee = payee.to_ascii_lowercase();
        if payee
            .parse::<lightning_signer::bitcoin::secp256k1::PublicKey>()
            .is_err()
        {
            return Err(CheckError::Peer(payee));
        }
        let mut req = PaymentRequest::keysend([0; 32], amount_msat, &payee);
        req.payment_hash = payment_hash;
        let answer = self.check_payment(&req);
        tracing::info!(command, approved = answer.approved, tags = ?answer.tags, "keysend checked");
        Ok(self.outcome(answer))
    }

    /// A payment command that names only a payment hash (a raw onion): approved when the signer
    /// already holds that payment approved (its HTLCs are valid), refused otherwise, naming the
    /// commands that carry the invoice.
    pub fn check_payment_hash(
        &self,
        payment_hash: &[u8],
        command: &str,
    ) -> Result<CheckAnswer, CheckError> {
        let hash: [u8; 32] = payment_hash.try_into().map_err(|_| {
            CheckError::Payment(format!(
                "a payment hash is 32 bytes; this one is {}",
                payment_hash.len()
            ))
        })?;
        if self.holds_payment(&hash) {
            return Ok(CheckAnswer {
                outcome: CheckOutcome::Approved,
                tags: vec![],
                reason: String::new(),
                request_id: None,
            });
        }
        let tag = crate::tags::PAYMENT_UNCHECKABLE;
        Ok(CheckAnswer {
            outcome: CheckOutcome::Refused,
            tags: vec![tag.to_string()],
            reason: format!(
                "rule {tag}: `{command}` names payment {} without its invoice, and the signer holds no approval for it, so its HTLC would reach the signer unapproved (which stops the node); pay with `pay`, `xpay` or `renepay`, or pass the invoice (`bolt11`, `invstring`)",
                hex::encode(hash)
            ),
            request_id: None,
        })
    }

    /// What `[channels]` says to these opens (peer hex, sat, private?, incoming?), and
    /// `[onchain] max_feerate` to the funding feerate the command names, if any.
    pub fn check_channels(
        &self,
        opens: &[(String, u64, Option<bool>, bool)],
        command: &str,
        feerate_per_kw: Option<u64>,
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
        // The funding's fee, as an on-chain spend with no outside output (what signing judges).
        let funding = PaymentRequest::onchain(Vec::new());
        if let Some(refused) = self.named_feerate_refusal(&funding, feerate_per_kw) {
            return Ok(self.outcome(refused));
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
