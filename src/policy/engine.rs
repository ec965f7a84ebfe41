//! The policy engine with its state: evaluation plus durable velocity.
//!
//! [`PolicyEngine::decide`] evaluates a payment, and writes the decision record together with
//! the velocity change it causes (for an approval) in one flushed batch before returning. The
//! in-memory state changes only after the write succeeded, so a failed write leaves memory and
//! disk agreeing, and the payment is reported as an error, never approved.

use super::eval::{evaluate, spend_changes, Decision, PaymentKind, PaymentRequest, Verdict};
use super::model::Policy;
use super::velocity::{VelocityState, BUCKET_SECS};
use crate::store::{DecisionRecord, Store, StoreError};
use std::sync::Arc;

/// How many decisions pass between full compactions of every ledger.
const COMPACT_EVERY: u64 = 1_000;

/// A policy, its velocity state, and the store that keeps that state.
#[derive(Debug)]
pub struct PolicyEngine {
    policy: Arc<Policy>,
    state: VelocityState,
    store: Store,
    since_compaction: u64,
}

impl PolicyEngine {
    /// Load the velocity state from the store and compact what no window can count any more.
    pub fn open(policy: Arc<Policy>, store: Store, now: u64) -> Result<Self, StoreError> {
        let state = store.load_velocity()?;
        let mut engine = PolicyEngine {
            policy,
            state,
            store,
            since_compaction: COMPACT_EVERY,
        };
        engine.compact(now)?;
        Ok(engine)
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The velocity state, for status and tests.
    pub fn state(&self) -> &VelocityState {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn horizon(&self) -> u64 {
        self.policy.longest_window_secs() + BUCKET_SECS
    }

    fn compact(&mut self, now: u64) -> Result<(), StoreError> {
        let mut trial = self.state.clone();
        let dropped = trial.compact(now, self.horizon());
        if !dropped.is_empty() {
            let mut record = record_for(None, &self.policy, now, "compaction", &[], None);
            record.destinations = vec![format!("{} buckets dropped", dropped.len())];
            self.store.commit_decision(&mut record, &[], &dropped)?;
        }
        self.state = trial;
        self.since_compaction = 0;
        Ok(())
    }

    /// Evaluate without recording (the first half of [`PolicyEngine::decide`]).
    pub fn evaluate(&self, req: &PaymentRequest, now: u64) -> Decision {
        evaluate(&self.policy, req, &self.state, now)
    }

    /// Record a decision from [`PolicyEngine::evaluate`], durably, counting an approval's spend.
    pub fn commit(
        &mut self,
        req: &PaymentRequest,
        decision: &Decision,
        now: u64,
    ) -> Result<(), StoreError> {
        let changes = if decision.is_approved() {
            spend_changes(&self.policy, req, &self.state, now)
        } else {
            Vec::new()
        };
        let mut record = record_for(
            Some(req),
            &self.policy,
            now,
            "",
            &decision.tags,
            Some(decision),
        );
        self.store.commit_decision(&mut record, &changes, &[])?;
        self.state.apply(&changes);
        self.since_compaction += 1;
        if self.since_compaction >= COMPACT_EVERY {
            self.compact(now)?;
        }
        Ok(())
    }

    /// Decide a payment and make the decision durable. An approval's spend is counted in the
    /// velocity windows in the same write.
    pub fn decide(&mut self, req: &PaymentRequest, now: u64) -> Result<Decision, StoreError> {
        let decision = self.evaluate(req, now);
        self.commit(req, &decision, now)?;
        Ok(decision)
    }

    /// Count a payment that passed by quorum approval (the approval store decides that), in
    /// one durable write with its record.
    pub fn record_approved_spend(
        &mut self,
        req: &PaymentRequest,
        now: u64,
        tags: &[String],
    ) -> Result<(), StoreError> {
        let changes = spend_changes(&self.policy, req, &self.state, now);
        let mut record = record_for(Some(req), &self.policy, now, "approve", tags, None);
        self.store.commit_decision(&mut record, &changes, &[])?;
        self.state.apply(&changes);
        Ok(())
    }
}

fn record_for(
    req: Option<&PaymentRequest>,
    policy: &Policy,
    now: u64,
    verdict: &str,
    tags: &[String],
    decision: Option<&Decision>,
) -> DecisionRecord {
    let (verdict, reason) = match decision.map(|d| &d.verdict) {
        Some(Verdict::Approve) => ("approve".to_string(), None),
        Some(Verdict::RequireQuorum { .. }) => ("require-quorum".to_string(), None),
        Some(Verdict::Deny { reason }) => ("deny".to_string(), Some(reason.clone())),
        None => (verdict.to_string(), None),
    };
    DecisionRecord {
        v: 1,
        seq: 0,
        time: now,
        policy_hash: policy.hash_hex(),
        request_digest: req.map(|r| hex::encode(r.digest())).unwrap_or_default(),
        kind: match req.map(|r| r.kind) {
            Some(PaymentKind::Invoice) => "invoice",
            Some(PaymentKind::Keysend) => "keysend",
            Some(PaymentKind::OnChain) => "onchain",
            None => "maintenance",
        }
        .into(),
        amount_msat: req.map(|r| r.amount_msat()).unwrap_or(0),
        destinations: req
            .map(|r| r.outputs.iter().map(|(d, _)| d.to_string()).collect())
            .unwrap_or_default(),
        verdict,
        tags: tags.to_vec(),
        reason,
        warnings: decision
            .map(|d| d.warnings.iter().map(|w| w.reason.clone()).collect())
            .unwrap_or_default(),
    }
}
