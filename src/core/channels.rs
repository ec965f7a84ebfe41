//! Channels as the signer holds them: the `[channels]` limits at an open (checked by the CLN
//! plugin before lightningd acts, and again when the funding is signed), the in-flight limits
//! at a payment, and the liquidity alerts.
//!
//! The channel list is read from VLS's node state through a closure the signer installs
//! ([`Core::set_signer_state`]), so the core names no VLS type and holds no node.

use super::{Core, Intent, PaymentAnswer};
use crate::events::EventKind;
use crate::policy::channels::{
    check_in_flight, check_opens, depleted, ChannelOpen, ChannelPhase, ChannelView, SettledPayment,
};
use crate::policy::RuleHit;
use crate::store::Namespace;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// An output to look for in the node's wallet: its script and the key paths a PSBT claims for it.
pub type WalletOutput = (
    lightning_signer::bitcoin::ScriptBuf,
    Vec<lightning_signer::bitcoin::bip32::DerivationPath>,
);

/// What the core reads of the signer's state (VLS's channels and payments); the signer
/// implements it over its node, so the core names no VLS type. Empty once the node is gone.
pub trait SignerState: Send + Sync {
    /// Every channel.
    fn channels(&self) -> Vec<ChannelView>;
    /// Outgoing payments seen through.
    fn settled_payments(&self) -> Vec<SettledPayment>;
    /// Which of these outputs the node's own on-chain wallet can spend: by a key path an output
    /// names (checked against its script, never trusted), or by its script alone.
    fn wallet_owns(&self, outputs: &[WalletOutput]) -> Vec<bool>;
    /// Whether the signer holds the payment with this hash approved (an invoice or keysend VLS
    /// accepted): HTLCs for it are valid.
    fn holds_payment(&self, payment_hash: &[u8; 32]) -> bool;
}

#[derive(Clone)]
pub(super) struct ChannelSource(pub(super) Arc<dyn SignerState>);

impl std::fmt::Debug for ChannelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelSource")
    }
}

/// Which channels were depleted when last looked at, so each crossing alerts once.
#[derive(Debug, Default)]
pub(super) struct ChannelWatch {
    depleted: Mutex<HashSet<String>>,
}

impl Core {
    /// Where the channels and payments come from (the signer sets it when it builds the node).
    pub fn set_signer_state(&self, f: Arc<dyn SignerState>) {
        *self.channel_list.write().unwrap_or_else(|p| p.into_inner()) = Some(ChannelSource(f));
    }

    /// Whether the signer holds the payment with this hash approved (no before the node is
    /// built).
    pub fn holds_payment(&self, payment_hash: &[u8; 32]) -> bool {
        let f = self
            .channel_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        f.is_some_and(|f| f.0.holds_payment(payment_hash))
    }

    /// Which of these outputs the node's wallet can spend (none before the node is
    /// built).
    pub fn wallet_owns(&self, outputs: &[WalletOutput]) -> Vec<bool> {
        let f = self
            .channel_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        f.map(|f| f.0.wallet_owns(outputs))
            .unwrap_or_else(|| vec![false; outputs.len()])
    }

    /// Every channel the signer holds, from VLS's state (empty before the node is built). A
    /// channel whose funding Warden refused to sign is `Refused`: this signer never funds it,
    /// so it holds no capacity the limits count (until a later signature approves it).
    pub fn channels(&self) -> Vec<ChannelView> {
        let f = self
            .channel_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut channels = f.map(|f| f.0.channels()).unwrap_or_default();
        for c in channels
            .iter_mut()
            .filter(|c| c.phase == ChannelPhase::Unconfirmed)
        {
            if let Ok(Some(_)) = self.store().get(Namespace::Meta, &refused_key(&c.id)) {
                c.phase = ChannelPhase::Refused;
            }
        }
        channels
    }

    /// What `[channels]` says to opening (or accepting) `opens`: approved, or refused with every
    /// objecting rule. `skip` names channels already set up in VLS that are the ones being
    /// funded (at signing time), so they are not counted twice. A refusal is recorded (audit
    /// and a `channel` event) in the caller's transaction, or in its own.
    pub fn check_channel_opens(
        &self,
        opens: &[ChannelOpen],
        skip: &[String],
        command: &str,
    ) -> PaymentAnswer {
        self.channel_decision(Intent::Check, opens, skip, command)
    }

    /// The same rules when the funding transaction is signed, and the freeze: what reaches here
    /// unchecked and is refused stops a Core Lightning node's hsmd, so the refusal is recorded
    /// (and the channel remembered as refused) before the answer. An approval records nothing:
    /// the caller reports the outcome of the whole transaction with [`Core::funding_outcome`].
    pub fn decide_channel_funding(&self, opens: &[ChannelOpen], skip: &[String]) -> PaymentAnswer {
        let answer = self.channel_decision(Intent::Sign, opens, skip, "funding");
        if !answer.approved {
            self.funding_outcome(skip, false);
        }
        answer
    }

    /// Whether the transaction funding the channels `ids` was signed: a funding Warden refused
    /// (for its channels or for another of its outputs) is remembered, so its channel is shown
    /// `Refused` and not counted; one signed later clears that.
    pub fn funding_outcome(&self, ids: &[String], signed: bool) {
        for id in ids {
            let key = refused_key(id);
            let r = if signed {
                self.store().delete(Namespace::Meta, key)
            } else {
                self.store().put(Namespace::Meta, key, vec![])
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "could not record a refused funding");
            }
        }
    }

    fn channel_decision(
        &self,
        intent: Intent,
        opens: &[ChannelOpen],
        skip: &[String],
        command: &str,
    ) -> PaymentAnswer {
        let amount: u64 = opens
            .iter()
            .map(|o| o.capacity_msat)
            .fold(0, u64::saturating_add);
        // Frozen: no channel is opened, asked about or funded (a funding is an on-chain spend).
        if let Some(f) = self.frozen() {
            let tag = crate::tags::FROZEN.to_string();
            let reason = format!(
                "rule {tag}: the signer is frozen since {} by {} ({}); channel opens are refused until the governance quorum lifts it",
                crate::clock::format_utc(f.since),
                f.by,
                f.reason
            );
            return self.record_channel_refusal(intent, command, vec![tag], reason, amount);
        }
        let policy = self.policy().policy;
        let hits = check_opens(&policy.channels, opens, &self.channels(), skip);
        if hits.is_empty() {
            return PaymentAnswer {
                approved: true,
                tags: Vec::new(),
                reason: String::new(),
                request_id: None,
            };
        }
        let (tags, reason) = joined(&hits);
        self.record_channel_refusal(intent, command, tags, reason, amount)
    }

    fn record_channel_refusal(
        &self,
        intent: Intent,
        command: &str,
        tags: Vec<String>,
        reason: String,
        amount: u64,
    ) -> PaymentAnswer {
        let message = match intent {
            Intent::Check => format!("`{command}` refused before signing: {reason}"),
            Intent::Sign => format!(
                "a channel funding reached the signer unchecked and is refused, which stops the node's hsmd: {reason}"
            ),
        };
        tracing::warn!(%message, "channel open refused");
        self.metrics.decision("deny", &tags);
        // A check is a question: a node asking many of them must not trip an emergency stop.
        let counts = intent == Intent::Sign;
        let record = || {
            self.events.emit(
                self.clock.now(),
                EventKind::Channel,
                "",
                &tags,
                message.clone(),
                amount,
            );
        };
        if self.store().in_transaction() {
            record();
        } else if let Ok(txn) = self.store().begin() {
            record();
            if let Err(e) = txn.commit() {
                tracing::error!(error = %e, "the channel refusal could not be recorded");
            }
        }
        if counts {
            self.note_refusal(self.clock.now());
        }
        PaymentAnswer::refused(tags, reason, None)
    }

    /// The in-flight limits' objections to one more outgoing payment of `amount_msat`.
    pub(super) fn in_flight_hits(
        &self,
        policy: &crate::policy::Policy,
        amount_msat: u64,
    ) -> Vec<RuleHit> {
        let c = &policy.channels;
        if c.max_htlcs_in_flight.is_none() && c.max_in_flight_msat.is_none() {
            return Vec::new();
        }
        check_in_flight(c, &self.channels(), amount_msat)
    }

    /// Alert once when a channel's outbound balance falls below the policy's level, and once
    /// when a channel starts closing. Run by wardend's periodic sweep.
    pub fn watch_channels(&self) {
        // The alerts are audited events: one commit for what one look found.
        let txn = match self.store().begin() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "the channel watch could not start a transaction");
                return;
            }
        };
        self.watch_channels_in();
        if let Err(e) = txn.commit() {
            tracing::error!(error = %e, "the channel alerts could not be recorded");
        }
    }

    fn watch_channels_in(&self) {
        let channels = self.channels();
        let now = self.clock.now();
        if let Some(percent) = self.policy().policy.channels.min_outbound_percent {
            let low = depleted(&channels, percent);
            let ids: HashSet<String> = low.iter().map(|c| c.id.clone()).collect();
            let mut seen = self
                .channel_watch
                .depleted
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for c in low.iter().filter(|c| !seen.contains(&c.id)) {
                self.events.emit(
                    now,
                    EventKind::Channel,
                    "",
                    &[crate::tags::LIQUIDITY_LOW.to_string()],
                    format!(
                        "rule {}: channel {} with {} has {} outbound of {} capacity, below {percent} %",
                        crate::tags::LIQUIDITY_LOW,
                        short_id(&c.id),
                        c.peer.as_deref().map(short_id).unwrap_or_else(|| "an unknown peer".into()),
                        crate::policy::units::format_msat(c.local_msat),
                        crate::policy::units::format_msat(c.capacity_msat),
                    ),
                    c.local_msat,
                );
            }
            *seen = ids;
        }
        // Each channel is recorded (for the report) when first seen open, and once when it
        // starts closing (with an alert), including one that did while wardend was down; a
        // channel first seen closing is recorded opened first, so capacity is never negative.
        for c in channels
            .iter()
            .filter(|c| matches!(c.phase, ChannelPhase::Open | ChannelPhase::Closing))
        {
            let opened = format!("opened/{}", c.id).into_bytes();
            if matches!(self.store().get(Namespace::Meta, &opened), Ok(None)) {
                self.record_channel(now, "open", c, &opened);
            }
            if c.phase != ChannelPhase::Closing {
                continue;
            }
            let closed = format!("closed/{}", c.id).into_bytes();
            if !matches!(self.store().get(Namespace::Meta, &closed), Ok(None)) {
                continue;
            }
            self.record_channel(now, "close", c, &closed);
            self.events.emit(
                now,
                EventKind::Channel,
                "",
                &[crate::tags::CHANNEL_CLOSING.to_string()],
                format!(
                    "channel {} with {} is closing; {} of its {} was ours",
                    short_id(&c.id),
                    c.peer
                        .as_deref()
                        .map(short_id)
                        .unwrap_or_else(|| "an unknown peer".into()),
                    crate::policy::units::format_msat(c.local_msat),
                    crate::policy::units::format_msat(c.capacity_msat),
                ),
                c.local_msat,
            );
        }
        // Outgoing payments seen through: what they cost beyond their invoices (routing fees).
        let settled = self
            .channel_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|s| s.0.settled_payments())
            .unwrap_or_default();
        for p in settled {
            let key = format!("settled/{}", p.payment_hash).into_bytes();
            if !matches!(self.store().get(Namespace::Meta, &key), Ok(None)) {
                continue;
            }
            let data = serde_json::json!({
                "payment_hash": p.payment_hash,
                "amount_msat": p.invoiced_msat,
                "sent_msat": p.sent_msat,
                "fee_msat": p.fee_msat(),
            });
            if let Err(e) = self.audit().append(now, "payment-settled", data) {
                tracing::error!(error = %e, "could not record a settled payment");
                continue;
            }
            if let Err(e) = self.store().put(Namespace::Meta, key, vec![]) {
                tracing::error!(error = %e, "could not remember a settled payment");
            }
        }
    }

    /// An audit record of a channel opened (first seen usable) or closing, for the report,
    /// remembered under `key` so it is written once.
    fn record_channel(&self, now: u64, action: &str, c: &ChannelView, key: &[u8]) {
        let data = serde_json::json!({
            "action": action,
            "channel": c.id,
            "peer": c.peer,
            "outbound": c.outbound,
            "capacity_msat": c.capacity_msat,
            "local_msat": c.local_msat,
        });
        match self.audit().append(now, "channel", data) {
            Ok(_) => {
                if let Err(e) = self.store().put(Namespace::Meta, key.to_vec(), vec![]) {
                    tracing::error!(error = %e, "could not remember a channel record");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not record a channel {action}"),
        }
    }
}

fn refused_key(channel_id: &str) -> Vec<u8> {
    format!("refused-funding/{channel_id}").into_bytes()
}

/// One sentence per rule, and the tags, in order.
pub(super) fn joined(hits: &[RuleHit]) -> (Vec<String>, String) {
    let mut tags: Vec<String> = Vec::new();
    for h in hits {
        if !tags.contains(&h.tag) {
            tags.push(h.tag.clone());
        }
    }
    let reason = hits
        .iter()
        .map(|h| h.reason.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    (tags, reason)
}

fn short_id(id: &str) -> String {
    if id.len() > 16 {
        format!("{}…", &id[..16])
    } else {
        id.to_string()
    }
}
