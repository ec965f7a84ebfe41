//! Warden's `Approve`: every payment VLS is asked to preapprove goes through Warden's policy and
//! quorum pipeline ([`Core::decide_payment`]).
//!
//! The `handle_proposed_*` methods are overridden because VLS's defaults take two shortcuts
//! Warden must not take: a payee on VLS's node allowlist is approved without asking the approver
//! at all (Warden keeps that allowlist empty and owns allowlisting in its policy), and the
//! default keysend path hides the payee from the approver. A payment VLS already holds
//! (`has_payment`) is approved again without being counted twice.
//!
//! No method here returns an error for a payment decision: a refusal, a capacity limit or an
//! invoice VLS will not accept are all `Ok(false)`, with their tags in the log and the event
//! stream, because any non-temporary error makes the node's hsmd exit.

use super::node_persist::WardenPersister;
use crate::core::Core;
use crate::events::EventKind;
use crate::policy::PaymentRequest;
use crate::store::{Namespace, Store};
use lightning_signer::bitcoin::bip32::DerivationPath;
use lightning_signer::bitcoin::secp256k1::{PublicKey, SecretKey};
use lightning_signer::bitcoin::{Network, Transaction, TxOut, Txid};
use lightning_signer::invoice::{Invoice, InvoiceAttributes};
use lightning_signer::lightning::types::payment::PaymentHash;
use lightning_signer::node::Node;
use lightning_signer::policy::error::ValidationErrorKind;
use lightning_signer::policy::validator::ValidatorFactory;
use lightning_signer::util::status::Status;
use lightning_signer::SendSync;
use std::sync::Arc;
use vls_protocol_signer::approver::Approve;

use crate::tags::{
    INVOICE_CAPACITY as TAG_CAPACITY, INVOICE_WITHOUT_AMOUNT as TAG_INVOICE_WITHOUT_AMOUNT,
    UNCHECKED_SPEND as TAG_UNCHECKED, VLS_REFUSED as TAG_VLS_REFUSED,
};

/// The approver VLS's handler calls.
pub struct WardenApprover {
    core: Arc<Core>,
    network: Network,
    max_invoices: usize,
    validators: Arc<dyn ValidatorFactory>,
    persister: Arc<WardenPersister>,
}

impl SendSync for WardenApprover {}

impl WardenApprover {
    /// An approver deciding through `core`; `max_invoices` and `validators` must be the ones the
    /// VLS node uses, so that an invoice VLS would refuse is refused before Warden counts it.
    pub fn new(
        core: Arc<Core>,
        network: Network,
        max_invoices: usize,
        validators: Arc<dyn ValidatorFactory>,
        persister: Arc<WardenPersister>,
    ) -> Self {
        WardenApprover {
            core,
            network,
            max_invoices,
            validators,
            persister,
        }
    }

    fn refuse(&self, tag: &str, reason: String, amount_msat: u64) -> Result<bool, Status> {
        tracing::warn!(tag, %reason, "payment refused");
        self.core.events.emit(
            self.core.clock.now(),
            EventKind::PaymentRefused,
            "",
            &[tag.to_string()],
            reason,
            amount_msat,
        );
        Ok(false)
    }

    /// A payment VLS already holds was approved before: approve it again without counting it
    /// twice. `None` when VLS does not hold it.
    fn already_held(
        &self,
        node: &Node,
        hash: &PaymentHash,
        invoice_hash: &[u8; 32],
        what: &str,
        amount_msat: u64,
    ) -> Option<Result<bool, Status>> {
        match node.has_payment(hash, invoice_hash) {
            Ok(true) => Some(Ok(true)),
            Ok(false) => None,
            Err(e) => Some(self.refuse(
                TAG_VLS_REFUSED,
                format!("{what} not accepted: {e}"),
                amount_msat,
            )),
        }
    }

    /// Add an approved payment to VLS, telling the persister which entry is about to be added
    /// so only it is written.
    fn add_to_vls(
        &self,
        hash: PaymentHash,
        what: &str,
        amount_msat: u64,
        add: impl FnOnce() -> Result<bool, Status>,
    ) -> Result<bool, Status> {
        self.persister.expect_payment_added(hash.0);
        let added = add();
        self.persister.clear_hint();
        added.or_else(|e| {
            self.refuse(
                TAG_VLS_REFUSED,
                format!("VLS did not accept the approved {what}: {e}"),
                amount_msat,
            )
        })
    }

    /// The payment Warden's policy decides for an invoice VLS was asked to preapprove (public
    /// for the hsmd fuzz target, which checks it never panics on a hostile invoice).
    pub fn request_for_invoice(invoice: &Invoice) -> PaymentRequest {
        PaymentRequest::invoice(
            invoice.payment_hash().0,
            invoice.amount_milli_satoshis(),
            &hex::encode(invoice.payee_pub_key().serialize()),
            invoice.description(),
        )
    }

    fn invoice_text(invoice: &Invoice) -> Option<String> {
        match invoice {
            Invoice::Bolt11(i) => Some(i.to_string()),
            Invoice::Bolt12(_) => None,
        }
    }
}

/// Where an on-chain spend the policy approved and counted is remembered, by its txid.
fn signed_key(txid: &Txid) -> Vec<u8> {
    format!("onchain-signed/{txid}").into_bytes()
}

fn signed_before(store: &Store, txid: &Txid) -> Result<bool, crate::store::StoreError> {
    Ok(store.get(Namespace::Meta, &signed_key(txid))?.is_some())
}

/// Pin each coin `tx` spends to the value and script the request claims for it, in the open
/// transaction; the reason for a refusal when a coin was pinned to something else.
fn pin_coins(
    store: &Store,
    tx: &Transaction,
    prev_outs: &[TxOut],
) -> Result<Option<String>, crate::store::StoreError> {
    use lightning_signer::bitcoin::hashes::{sha256, Hash};
    for (input, coin) in tx.input.iter().zip(prev_outs) {
        let key = format!("onchain-coin/{}", input.previous_output).into_bytes();
        let mut claim = coin.value.to_sat().to_be_bytes().to_vec();
        claim.extend_from_slice(&sha256::Hash::hash(coin.script_pubkey.as_bytes()).to_byte_array());
        match store.get(Namespace::Meta, &key)? {
            Some(pinned) if pinned != claim => {
                let was = pinned
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                return Ok(Some(format!(
                    "rule {}: coin {} is claimed at {} sat, but an earlier signature request claimed {} sat (or another script) for it; a node that misstates what a coin holds could combine signatures into a transaction whose fee nobody judged",
                    crate::tags::ONCHAIN_AMOUNT,
                    input.previous_output,
                    coin.value.to_sat(),
                    was
                )));
            }
            Some(_) => {}
            None => store.put(Namespace::Meta, key, claim)?,
        }
    }
    Ok(None)
}

thread_local! {
    /// The hsmd message being answered on this thread, as the stream names it.
    static ANSWERING: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

/// Run `f` while answering the hsmd message named `name` (the approver applies `[onchain]` to
/// transactions sending nothing outside only for a withdrawal the node asked for).
pub fn answering<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let before = ANSWERING.with(|a| a.replace(name));
    let out = f();
    ANSWERING.with(|a| a.set(before));
    out
}

/// Whether the message being answered holds a transaction with nothing outside to `[onchain]`:
/// a withdrawal (or an LDK sweep to the wallet) yes; an anchor or HTLC spend of a force close
/// (SignAnchorspend, SignHtlcTxMingle) no.
fn bound_by_onchain_fees() -> bool {
    !ANSWERING.with(|a| matches!(a.get(), "SignAnchorspend" | "SignHtlcTxMingle"))
}

impl Approve for WardenApprover {
    fn approve_invoice(&self, invoice: &Invoice) -> bool {
        self.core
            .decide_payment(
                &Self::request_for_invoice(invoice),
                Self::invoice_text(invoice),
            )
            .approved
    }

    fn approve_keysend(&self, _payment_hash: PaymentHash, _amount_msat: u64) -> bool {
        // Never reached: handle_proposed_keysend below decides with the payee known. Without the
        // payee the policy cannot be applied, so the safe answer is no.
        false
    }

    fn approve_onchain(
        &self,
        tx: &Transaction,
        prev_outs: &[TxOut],
        unknown_indices: &[usize],
    ) -> bool {
        // What leaves the wallet: the outside outputs and the fee.
        match super::fee::onchain_request(tx, prev_outs, unknown_indices, self.network) {
            Ok(req) => self.core.decide_payment(&req, None).approved,
            Err(e) => {
                let _ = self.refuse(
                    TAG_VLS_REFUSED,
                    format!("on-chain spend not accepted: {e}"),
                    0,
                );
                false
            }
        }
    }

    fn handle_proposed_invoice(&self, node: &Arc<Node>, invoice: Invoice) -> Result<bool, Status> {
        let amount = invoice.amount_milli_satoshis();
        // The stream screens these out before VLS; here too, because VLS reads a missing amount
        // as 0 msat, which every limit would let through.
        if matches!(&invoice, Invoice::Bolt11(i) if i.amount_milli_satoshis().is_none()) {
            return self.refuse(
                TAG_INVOICE_WITHOUT_AMOUNT,
                format!("rule {TAG_INVOICE_WITHOUT_AMOUNT}: the invoice has no amount, and the node's preapproval does not say how much it will pay, so no limit or quorum could be applied; ask the payee for an invoice with an amount"),
                amount,
            );
        }
        let (payment_hash, _, invoice_hash) = match Node::payment_state_from_invoice(&invoice) {
            Ok(x) => x,
            Err(e) => {
                return self.refuse(
                    TAG_VLS_REFUSED,
                    format!("invoice not accepted: {e}"),
                    amount,
                )
            }
        };
        if let Some(answer) =
            self.already_held(node, &payment_hash, &invoice_hash, "invoice", amount)
        {
            return answer;
        }
        // VLS's own invoice rules (expiry, clock skew) first: a payment VLS will refuse must not
        // be counted in Warden's velocity windows or held for admins.
        let validator = self
            .validators
            .make_validator(self.network, node.get_id(), None);
        if let Err(e) = validator.validate_invoice(&invoice, node.get_clock().now()) {
            let tag = if e.tag.is_empty() {
                TAG_VLS_REFUSED.to_string()
            } else {
                e.tag.clone()
            };
            return self.refuse(&tag, format!("VLS refuses the invoice: {e}"), amount);
        }
        let live = node.get_state().invoices.len();
        if live >= self.max_invoices {
            return self.refuse(
                TAG_CAPACITY,
                format!(
                    "rule {TAG_CAPACITY}: {live} live invoices, the configured capacity is {} (signer.max_invoices)",
                    self.max_invoices
                ),
                amount,
            );
        }
        if !self.approve_invoice(&invoice) {
            return Ok(false);
        }
        self.add_to_vls(payment_hash, "invoice", amount, || {
            node.add_invoice(invoice)
        })
    }

    fn handle_proposed_keysend(
        &self,
        node: &Arc<Node>,
        payee: PublicKey,
        payment_hash: PaymentHash,
        amount_msat: u64,
    ) -> Result<bool, Status> {
        let now = node.get_clock().now();
        let invoice_hash =
            match Node::payment_state_from_keysend(payee, payment_hash, amount_msat, now) {
                Ok((_, h)) => h,
                Err(e) => {
                    return self.refuse(
                        TAG_VLS_REFUSED,
                        format!("keysend not accepted: {e}"),
                        amount_msat,
                    )
                }
            };
        if let Some(answer) =
            self.already_held(node, &payment_hash, &invoice_hash, "keysend", amount_msat)
        {
            return answer;
        }
        let req =
            PaymentRequest::keysend(payment_hash.0, amount_msat, &hex::encode(payee.serialize()));
        if !self.core.decide_payment(&req, None).approved {
            return Ok(false);
        }
        self.add_to_vls(payment_hash, "keysend", amount_msat, || {
            node.add_keysend(payee, payment_hash, amount_msat)
        })
    }

    fn handle_proposed_onchain(
        &self,
        node: &Arc<Node>,
        tx: &Transaction,
        segwit_flags: &[bool],
        prev_outs: &[TxOut],
        uniclosekeys: &[Option<(SecretKey, Vec<Vec<u8>>)>],
        opaths: &[DerivationPath],
    ) -> Result<bool, Status> {
        let unknown = match node.check_onchain_tx(tx, segwit_flags, prev_outs, uniclosekeys, opaths)
        {
            Ok(()) => Vec::new(),
            Err(ve) => match ve.kind {
                ValidationErrorKind::UnknownDestinations(_, indices) => indices,
                // VLS's own validation failed: its design is to refuse with an error.
                _ => return Err(Status::failed_precondition(ve.to_string())),
            },
        };
        let txid = tx.compute_txid();
        // Segwit v0 signatures commit only to their own input's amount, so a node lying about
        // an input's value in one request and another's in a second could combine the two
        // signatures into one transaction whose fee nobody judged. Every input's claimed
        // coin is pinned the first time it is signed; a request claiming another value (or
        // script) for the same coin is refused.
        match pin_coins(self.core.store(), tx, prev_outs) {
            Ok(None) => {}
            Ok(Some(why)) => return self.refuse(crate::tags::ONCHAIN_AMOUNT, why, 0),
            Err(e) => {
                return self.refuse(
                    crate::tags::STORE_FAILURE,
                    format!("cannot read the coins transaction {txid} spends: {e}"),
                    0,
                )
            }
        }
        // The same transaction (same txid, and its coins pinned as above) asked again under a
        // new request number (an LDK retry after a timeout, lightningd re-signing after a
        // restart) was decided and counted when first signed.
        match signed_before(self.core.store(), &txid) {
            Ok(true) => {
                tracing::info!(%txid, "on-chain spend signed before: signed again without deciding or counting it twice");
                return Ok(true);
            }
            Ok(false) => {}
            Err(e) => {
                return self.refuse(
                    crate::tags::STORE_FAILURE,
                    format!("cannot read whether transaction {txid} was signed before: {e}"),
                    0,
                )
            }
        }
        // A channel funding is checked against [channels] here, when it is signed; the CLN
        // plugin asked the same before lightningd built it. What is refused here stops the
        // node's hsmd (hsmd has no "refused" answer), so it is recorded first.
        let (opens, ids) = super::channels::funded_by(node, tx);
        if !opens.is_empty() {
            let answer = self.core.decide_channel_funding(&opens, &ids);
            if !answer.approved {
                return Ok(false);
            }
        }
        let approved = if unknown.is_empty() {
            // Nothing leaves the node but the fee (its own coins, channels it funds, a closed
            // channel swept home): not a payment, so not counted and not stopped by a freeze
            // (a funding is, above). Bounded by [onchain] when the node asked to withdraw;
            // VLS's own checks (its fee range, and its fee velocity of 1,000,000 sat a day for
            // such transactions) bound it always. Anchor and HTLC spends of a force close are
            // not held to [onchain]: a CPFP child pays for its parent, and refusing it at
            // signing would stop the node while its funds are at stake.
            if bound_by_onchain_fees() {
                match super::fee::fee_of(tx, prev_outs) {
                    Ok(fee) => self.core.judge_fee_only(fee).approved,
                    Err(e) => self.refuse(
                        TAG_VLS_REFUSED,
                        format!("on-chain spend not accepted: {e}"),
                        0,
                    )?,
                }
            } else {
                true
            }
        } else {
            // Outside outputs: the policy judges and counts them and the fee, as one on-chain
            // payment.
            self.approve_onchain(tx, prev_outs, &unknown)
        };
        // The channels count as funded only if the whole transaction is signed.
        if !ids.is_empty() {
            self.core.funding_outcome(&ids, approved);
        }
        if approved && !unknown.is_empty() {
            if let Err(e) = self.core.store().put(
                Namespace::Meta,
                signed_key(&txid),
                self.core.clock.now().to_be_bytes().to_vec(),
            ) {
                // Not recorded, not signed: the decision's commit would be incomplete.
                return self.refuse(
                    crate::tags::STORE_FAILURE,
                    format!("cannot record transaction {txid} as signed: {e}"),
                    0,
                );
            }
        }
        if !approved {
            let why = "an on-chain spend reached the signer without the CLN plugin's check (or the policy changed since) and is refused; VLS's answer stops the node's hsmd";
            tracing::error!(tag = TAG_UNCHECKED, "{why}");
            self.core.events.emit(
                self.core.clock.now(),
                EventKind::PaymentRefused,
                "",
                &[TAG_UNCHECKED.to_string()],
                format!("rule {TAG_UNCHECKED}: {why}"),
                0,
            );
        }
        Ok(approved)
    }
}
