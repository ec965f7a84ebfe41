//! Deciding one payment: a pure function of the policy, the request, the velocity state and
//! the time. No I/O, no clock reads, so every decision can be replayed and tested exactly.
//!
//! Evaluation order (also in `policy/README.md`):
//! 1. deny rules — a listed destination is refused, whatever else matches (deny wins);
//! 2. limits — per payment, then rolling windows, node-wide, per destination and per group;
//! 3. time windows;
//! 4. approval rules — if any matches, the payment needs a quorum;
//! 5. otherwise the payment is approved.
//!
//! Every enforcing rule that objects in steps 1–3 is named in the refusal, not just the first,
//! so an operator sees everything that would have to change. Rules in `warn` mode never refuse;
//! they are reported as warnings on the decision.

use super::model::*;
use super::units::{format_duration, format_feerate, format_msat};
use super::velocity::{BucketChange, LedgerKey, VelocityState};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};

/// What is being paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentKind {
    /// A BOLT 11 invoice.
    Invoice,
    /// A keysend (spontaneous) payment.
    Keysend,
    /// An on-chain spend.
    OnChain,
}

/// A payment the signer was asked to approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Invoice, keysend or on-chain.
    pub kind: PaymentKind,
    /// The Lightning payment hash; `None` on-chain.
    pub payment_hash: Option<[u8; 32]>,
    /// Where the money goes and how much to each, in msat.
    pub outputs: Vec<(Destination, u64)>,
    /// The invoice description, if any; informational only.
    pub description: Option<String>,
    /// On-chain: the fee the transaction pays, when known (the check of a command that names
    /// no transaction does not know it). It leaves the wallet like an output: limits and
    /// thresholds count it, and `[onchain]` bounds it.
    pub fee: Option<OnchainFee>,
}

/// What an on-chain transaction pays to miners, and the weight it will have once signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnchainFee {
    /// Inputs minus every output, msat.
    pub fee_msat: u64,
    /// The transaction's estimated weight once signed, weight units (at least 1).
    pub weight_wu: u64,
}

impl OnchainFee {
    /// The feerate, sat per 1,000 weight units, rounded up (the highest rate that gives this fee).
    pub fn feerate_per_kw(&self) -> u64 {
        let w = u128::from(self.weight_wu.max(1));
        u64::try_from(u128::from(self.fee_msat).div_ceil(w)).unwrap_or(u64::MAX)
    }
}

impl PaymentKind {
    /// "invoice", "keysend" or "onchain", as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            PaymentKind::Invoice => "invoice",
            PaymentKind::Keysend => "keysend",
            PaymentKind::OnChain => "onchain",
        }
    }
}

impl PaymentRequest {
    /// A BOLT 11 invoice payment to `payee` (node id, hex).
    pub fn invoice(
        payment_hash: [u8; 32],
        amount_msat: u64,
        payee: &str,
        description: Option<String>,
    ) -> Self {
        PaymentRequest {
            kind: PaymentKind::Invoice,
            payment_hash: Some(payment_hash),
            outputs: vec![(Destination::Node(payee.to_ascii_lowercase()), amount_msat)],
            description,
            fee: None,
        }
    }

    /// A keysend payment to `payee`.
    pub fn keysend(payment_hash: [u8; 32], amount_msat: u64, payee: &str) -> Self {
        PaymentRequest {
            kind: PaymentKind::Keysend,
            payment_hash: Some(payment_hash),
            outputs: vec![(Destination::Node(payee.to_ascii_lowercase()), amount_msat)],
            description: None,
            fee: None,
        }
    }

    /// An on-chain spend to these addresses (amounts in msat). The outputs are sorted: a
    /// transaction's output order is the wallet's choice (lightningd shuffles it), so the same
    /// spend checked before signing and signed later must name the same request.
    pub fn onchain(mut outputs: Vec<(String, u64)>) -> Self {
        outputs.sort();
        PaymentRequest {
            kind: PaymentKind::OnChain,
            payment_hash: None,
            outputs: outputs
                .into_iter()
                .map(|(a, v)| (Destination::Address(a), v))
                .collect(),
            description: None,
            fee: None,
        }
    }

    /// An on-chain spend to these addresses that pays `fee` (see [`PaymentRequest::onchain`]).
    pub fn onchain_with_fee(outputs: Vec<(String, u64)>, fee: OnchainFee) -> Self {
        PaymentRequest {
            fee: Some(fee),
            ..Self::onchain(outputs)
        }
    }

    /// The total amount, the fee included, saturating at `u64::MAX` (for records and display).
    pub fn amount_msat(&self) -> u64 {
        u64::try_from(self.total_msat_wide()).unwrap_or(u64::MAX)
    }

    /// What the outputs carry, without the fee, saturating: the amount an approval names (see
    /// [`PaymentRequest::digest`]).
    pub fn outputs_msat(&self) -> u64 {
        self.outputs
            .iter()
            .fold(0u64, |a, (_, v)| a.saturating_add(*v))
    }

    /// Each destination once, in the order it first appears, with the sum of its outputs:
    /// per-destination rules judge what a destination receives, however many outputs carry it.
    pub fn per_destination(&self) -> Vec<(&Destination, u128)> {
        let mut out: Vec<(&Destination, u128)> = Vec::with_capacity(self.outputs.len());
        for (d, v) in &self.outputs {
            match out.iter_mut().find(|(e, _)| *e == d) {
                Some((_, sum)) => *sum += u128::from(*v),
                None => out.push((d, u128::from(*v))),
            }
        }
        out
    }

    /// The exact total leaving the wallet, the fee included: limits compare against this, so no
    /// sum can wrap below a limit.
    pub fn total_msat_wide(&self) -> u128 {
        self.outputs
            .iter()
            .map(|(_, v)| u128::from(*v))
            .sum::<u128>()
            + self.fee.map_or(0, |f| u128::from(f.fee_msat))
    }

    /// A digest that names this exact payment: kind, hash, every destination and amount.
    /// Approvals are bound to it, so an approval for one payment cannot pay another. The fee
    /// is not part of it: the check of a `withdraw` (before lightningd picks the coins) and the
    /// signature that follows must name the same request, and `[onchain]` bounds the fee.
    pub fn digest(&self) -> [u8; 32] {
        let mut e = sha256::Hash::engine();
        e.input(b"warden/request/v1");
        e.input(&[match self.kind {
            PaymentKind::Invoice => 1,
            PaymentKind::Keysend => 2,
            PaymentKind::OnChain => 3,
        }]);
        e.input(&self.payment_hash.unwrap_or([0; 32]));
        e.input(&(self.outputs.len() as u64).to_be_bytes());
        for (d, v) in &self.outputs {
            let (tag, text) = match d {
                Destination::Node(n) => (1u8, n.as_str()),
                Destination::Address(a) => (2u8, a.as_str()),
            };
            e.input(&[tag]);
            e.input(&(text.len() as u64).to_be_bytes());
            e.input(text.as_bytes());
            e.input(&v.to_be_bytes());
        }
        sha256::Hash::from_engine(e).to_byte_array()
    }
}

/// A rule that matched, and why, in a sentence with the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHit {
    /// The rule's tag.
    pub tag: String,
    /// e.g. `rule hourly-cap: 1,250,000 sat would be spent in the last 1h; the limit is 1,000,000 sat`.
    pub reason: String,
}

/// What the policy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sign.
    Approve,
    /// Sign only with a quorum of admin approvals for this exact request.
    RequireQuorum {
        /// [`PaymentRequest::digest`].
        request_digest: [u8; 32],
        /// The approval rule whose quorum applies (the first matching, in file order).
        rule_tag: String,
        /// Who must approve.
        quorum: Quorum,
        /// How long the approval request stays open, in seconds.
        expiry_secs: u64,
    },
    /// Refuse.
    Deny {
        /// Every objection, joined into one sentence per rule.
        reason: String,
    },
}

/// A verdict with the rules that made it, the policy it came from, and any warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Tags of the rules that decided: the objecting rules of a refusal, the matching approval
    /// rules of a quorum requirement, or the limits an approval was checked against.
    pub tags: Vec<String>,
    /// Rules in `warn` mode that matched, and enforcing rules whose match did not change the
    /// verdict (e.g. an approval rule behind a refusal).
    pub warnings: Vec<RuleHit>,
    /// The policy's hash.
    pub policy_hash: [u8; 32],
}

impl Decision {
    /// Whether the verdict is `Approve`.
    pub fn is_approved(&self) -> bool {
        matches!(self.verdict, Verdict::Approve)
    }

    /// A one-line summary for logs and the simulator.
    pub fn summary(&self) -> String {
        match &self.verdict {
            Verdict::Approve => format!("approve [{}]", self.tags.join(", ")),
            Verdict::RequireQuorum { quorum, .. } => format!(
                "require quorum {} of [{}] [{}]",
                quorum.need,
                quorum.of.join(", "),
                self.tags.join(", ")
            ),
            Verdict::Deny { reason } => format!("deny [{}]: {reason}", self.tags.join(", ")),
        }
    }
}

/// Weekday (0 = Monday) and minute of day of a Unix time, in UTC.
pub fn weekday_and_minute(now: u64) -> (u8, u16) {
    let days = now / 86_400;
    (((days + 3) % 7) as u8, ((now % 86_400) / 60) as u16)
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Who a limit counted, for the refusal sentence.
enum Subject<'a> {
    Node,
    Destination(&'a Destination),
    Group,
    Fleet,
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Node => Ok(()),
            Subject::Destination(d) => write!(f, " to {d}"),
            Subject::Group => f.write_str(" to its listed destinations"),
            Subject::Fleet => f.write_str(" by the whole fleet"),
        }
    }
}

fn limit_applies(limit: &LimitRule, req: &PaymentRequest) -> bool {
    match &limit.scope {
        LimitScope::Node | LimitScope::EachDestination | LimitScope::Fleet => true,
        LimitScope::Destinations(set) => req.outputs.iter().any(|(d, _)| set.contains(d)),
    }
}

/// What `[onchain]` objects to in a transaction that pays `fee` (empty: within the bound).
pub fn fee_bound(policy: &Policy, fee: &OnchainFee) -> Vec<RuleHit> {
    let tag = crate::tags::ONCHAIN_FEE;
    let mut hits = Vec::new();
    if fee.fee_msat > policy.onchain.max_fee_msat {
        hits.push(RuleHit {
            tag: tag.to_string(),
            reason: format!(
                "rule {tag}: the transaction pays {} in fees; [onchain] max_fee is {}",
                format_msat(fee.fee_msat),
                format_msat(policy.onchain.max_fee_msat)
            ),
        });
    }
    hits.extend(feerate_bound(policy, fee));
    hits
}

/// What `[onchain] max_feerate` alone objects to in a transaction that pays `fee`.
pub fn feerate_bound(policy: &Policy, fee: &OnchainFee) -> Option<RuleHit> {
    let tag = crate::tags::ONCHAIN_FEE;
    let rate = fee.feerate_per_kw();
    (rate > policy.onchain.max_feerate_per_kw).then(|| RuleHit {
        tag: tag.to_string(),
        reason: format!(
            "rule {tag}: the transaction pays {} ({} of fee over about {} weight units); [onchain] max_feerate is {}",
            format_feerate(rate),
            format_msat(fee.fee_msat),
            fee.weight_wu,
            format_feerate(policy.onchain.max_feerate_per_kw)
        ),
    })
}

/// What `[onchain]` objects to in a feerate a command names before the transaction is built
/// (sat per 1,000 weight units); `None` within the bound.
pub fn named_feerate_bound(policy: &Policy, per_kw: u64) -> Option<RuleHit> {
    let tag = crate::tags::ONCHAIN_FEE;
    (per_kw > policy.onchain.max_feerate_per_kw).then(|| RuleHit {
        tag: tag.to_string(),
        reason: format!(
            "rule {tag}: the command names a feerate of {}; [onchain] max_feerate is {}",
            format_feerate(per_kw),
            format_feerate(policy.onchain.max_feerate_per_kw)
        ),
    })
}

/// Decide a payment. Pure: the same inputs always give the same decision.
pub fn evaluate(
    policy: &Policy,
    req: &PaymentRequest,
    state: &VelocityState,
    now: u64,
) -> Decision {
    let mut objections: Vec<RuleHit> = Vec::new();
    let mut warnings: Vec<RuleHit> = Vec::new();
    // An enforcing rule objects, a warn-mode rule only warns; either way it is named.
    let mut push = |mode: Mode, tag: &str, reason: String, objections: &mut Vec<RuleHit>| {
        let hit = RuleHit {
            tag: tag.to_string(),
            reason,
        };
        match mode {
            Mode::Enforce => objections.push(hit),
            Mode::Warn => warnings.push(hit),
        }
    };
    let total = req.total_msat_wide();

    let destinations = req.per_destination();

    // 0. The fee bound, always in force (`[onchain]`).
    if let Some(fee) = &req.fee {
        objections.extend(fee_bound(policy, fee));
    }

    // 1. Deny rules.
    for rule in &policy.deny {
        for (d, _) in &destinations {
            if rule.destinations.contains(d) {
                let reason = format!("rule {}: {d} is on the deny list", rule.tag);
                push(rule.mode, &rule.tag, reason, &mut objections);
            }
        }
    }

    // 2. Limits.
    let mut applied_limits = Vec::new();
    for limit in &policy.limits {
        if !limit_applies(limit, req) {
            continue;
        }
        applied_limits.push(limit.tag.clone());
        // (who is counted, amount of this payment counted by the limit, ledger); the subject's
        // text is only built when the rule objects, keeping the approval path allocation-light.
        let subjects: Vec<(Subject, u128, LedgerKey)> = match &limit.scope {
            LimitScope::Node => vec![(Subject::Node, total, LedgerKey::Node)],
            LimitScope::Fleet => vec![(Subject::Fleet, total, LedgerKey::Fleet)],
            LimitScope::EachDestination => destinations
                .iter()
                .map(|(d, v)| {
                    (
                        Subject::Destination(d),
                        *v,
                        LedgerKey::Destination((*d).clone()),
                    )
                })
                .collect(),
            LimitScope::Destinations(set) => {
                let amount: u128 = req
                    .outputs
                    .iter()
                    .filter(|(d, _)| set.contains(d))
                    .map(|(_, v)| u128::from(*v))
                    .sum();
                vec![(Subject::Group, amount, LedgerKey::Group(limit.tag.clone()))]
            }
        };
        for (subject, amount, key) in subjects {
            match limit.window_secs {
                None => {
                    if let Some(max) = limit.max_amount_msat {
                        if amount > u128::from(max) {
                            let reason = format!(
                                "rule {}: this payment of {}{subject} is above the per-payment limit of {}",
                                limit.tag,
                                format_msat(amount),
                                format_msat(max)
                            );
                            push(limit.mode, &limit.tag, reason, &mut objections);
                        }
                    }
                }
                Some(window) => {
                    let spent = state.totals(&key, now, window);
                    if let Some(max) = limit.max_amount_msat {
                        let would = spent.amount_msat + amount;
                        if would > u128::from(max) {
                            let reason = format!(
                                "rule {}: {} would be spent{subject} in the last {}; the limit is {}",
                                limit.tag,
                                format_msat(would),
                                format_duration(window),
                                format_msat(max)
                            );
                            push(limit.mode, &limit.tag, reason, &mut objections);
                        }
                    }
                    if let Some(max) = limit.max_count {
                        let would = spent.count.saturating_add(1);
                        if would > max {
                            let reason = format!(
                                "rule {}: this would be payment number {would}{subject} in the last {}; the limit is {max}",
                                limit.tag,
                                format_duration(window)
                            );
                            push(limit.mode, &limit.tag, reason, &mut objections);
                        }
                    }
                }
            }
        }
    }

    // 3. Time windows.
    let (weekday, minute) = weekday_and_minute(now);
    for tw in &policy.time_windows {
        if tw
            .above_msat
            .is_some_and(|above| total <= u128::from(above))
        {
            continue;
        }
        let in_time = if tw.from_minute < tw.to_minute {
            minute >= tw.from_minute && minute < tw.to_minute
        } else {
            minute >= tw.from_minute || minute < tw.to_minute
        };
        if !(in_time && tw.days.contains(&weekday)) {
            let days: Vec<&str> = tw.days.iter().map(|d| WEEKDAYS[*d as usize]).collect();
            let which = tw
                .above_msat
                .map(|a| format!("payments above {}", format_msat(a)))
                .unwrap_or_else(|| "payments".into());
            let reason = format!(
                "rule {}: {which} are allowed only on {} {}-{} UTC; it is {} {} UTC",
                tw.tag,
                days.join(","),
                hhmm(tw.from_minute),
                hhmm(tw.to_minute),
                WEEKDAYS[weekday as usize],
                hhmm(minute)
            );
            push(tw.mode, &tw.tag, reason, &mut objections);
        }
    }

    // 4. Approval rules.
    let listed = req.outputs.iter().all(|(d, _)| policy.is_listed(d));
    let mut quorum_hits: Vec<&ApprovalRule> = Vec::new();
    for rule in &policy.approvals {
        let above = rule.above_msat.is_some_and(|a| total > u128::from(a));
        let unlisted = rule.unlisted_destination && !listed;
        if !(above || unlisted) {
            continue;
        }
        let why = match (above, unlisted) {
            (true, _) => format!(
                "the payment of {} is above {}",
                format_msat(total),
                format_msat(rule.above_msat.unwrap_or(0))
            ),
            _ => "the destination is on no allowlist".to_string(),
        };
        match rule.mode {
            Mode::Enforce => quorum_hits.push(rule),
            Mode::Warn => warnings.push(RuleHit {
                tag: rule.tag.clone(),
                reason: format!(
                    "rule {}: {why}; {} of [{}] would have to approve (warn mode)",
                    rule.tag,
                    rule.quorum.need,
                    rule.quorum.of.join(", ")
                ),
            }),
        }
    }

    let (verdict, tags) = if !objections.is_empty() {
        let mut tags: Vec<String> = Vec::new();
        for o in &objections {
            if !tags.contains(&o.tag) {
                tags.push(o.tag.clone());
            }
        }
        let reason = objections
            .iter()
            .map(|o| o.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        for rule in &quorum_hits {
            warnings.push(RuleHit {
                tag: rule.tag.clone(),
                reason: format!(
                    "rule {}: would also need a quorum, but the payment is refused",
                    rule.tag
                ),
            });
        }
        (Verdict::Deny { reason }, tags)
    } else if let Some(first) = quorum_hits.first() {
        (
            Verdict::RequireQuorum {
                request_digest: req.digest(),
                rule_tag: first.tag.clone(),
                quorum: first.quorum.clone(),
                expiry_secs: first.expiry_secs,
            },
            quorum_hits.iter().map(|r| r.tag.clone()).collect(),
        )
    } else {
        (Verdict::Approve, applied_limits)
    };
    Decision {
        verdict,
        tags,
        warnings,
        policy_hash: policy.hash,
    }
}

/// The bucket changes that spending `req` at `now` makes, without changing the state.
/// Called for approved payments; the store persists them, then the state applies them.
pub fn spend_changes(
    policy: &Policy,
    req: &PaymentRequest,
    state: &VelocityState,
    now: u64,
) -> Vec<BucketChange> {
    let mut changes: Vec<BucketChange> = Vec::new();
    let add = |key: LedgerKey, amount: u64, changes: &mut Vec<BucketChange>| {
        // Several outputs to one destination add up in one bucket.
        if let Some((_, b)) = changes.iter_mut().find(|(k, _)| *k == key) {
            b.amount_msat = b.amount_msat.saturating_add(amount);
            return;
        }
        let bucket = state
            .ledger(&key)
            .map(|l| l.bucket_after(now, amount))
            .unwrap_or(super::velocity::Bucket {
                minute: now / super::velocity::BUCKET_SECS,
                amount_msat: amount,
                count: 1,
            });
        changes.push((key, bucket));
    };
    add(LedgerKey::Node, req.amount_msat(), &mut changes);
    for (d, v) in &req.outputs {
        add(LedgerKey::Destination(d.clone()), *v, &mut changes);
    }
    if policy.counts_fleet() {
        add(LedgerKey::Fleet, req.amount_msat(), &mut changes);
    }
    for limit in &policy.limits {
        if let LimitScope::Destinations(set) = &limit.scope {
            let amount = req
                .outputs
                .iter()
                .filter(|(d, _)| set.contains(d))
                .fold(0u64, |a, (_, v)| a.saturating_add(*v));
            if req.outputs.iter().any(|(d, _)| set.contains(d)) {
                add(LedgerKey::Group(limit.tag.clone()), amount, &mut changes);
            }
        }
    }
    changes
}
