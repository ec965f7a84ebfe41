//! The policy engine with its state: pure evaluation (`policy::eval`) plus durable velocity.
//!
//! [`PolicyEngine::commit`] stages an approval's bucket changes in the request's transaction
//! (see [`crate::store`]) and applies them to the in-memory windows at once, so the rest of the
//! request sees them. If the transaction is then discarded, the owner of the request calls
//! [`PolicyEngine::reload`], and memory returns to what is committed. A refusal writes nothing.

use crate::policy::eval::{evaluate, spend_changes, Decision, PaymentRequest};
use crate::policy::model::Policy;
use crate::policy::velocity::{codec, BucketChange, LedgerKey, VelocityState, BUCKET_SECS};
use crate::store::{Namespace, Store, StoreError};
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

/// Every velocity bucket committed in `store`.
pub fn load_velocity(store: &Store) -> Result<VelocityState, StoreError> {
    let mut changes = Vec::new();
    for (k, v) in store.scan(Namespace::Velocity, b"")? {
        changes.push(
            codec::decode_bucket(&k, &v).map_err(|detail| StoreError::Corrupt {
                key: format!("velocity/{}", hex::encode(&k)),
                detail: detail.into(),
            })?,
        );
    }
    let mut state = VelocityState::default();
    state.apply(&changes);
    Ok(state)
}

impl PolicyEngine {
    /// Load the velocity state from the store and compact what no window can count any more.
    pub fn open(policy: Arc<Policy>, store: Store, now: u64) -> Result<Self, StoreError> {
        let state = load_velocity(&store)?;
        let mut engine = PolicyEngine {
            policy,
            state,
            store,
            since_compaction: COMPACT_EVERY,
        };
        let store = engine.store.clone();
        store.write(|| engine.compact(now))?;
        Ok(engine)
    }

    /// The same windows under another policy (a policy change keeps the history).
    pub fn with_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// Forget what memory holds beyond the committed state (after a discarded transaction).
    pub fn reload(&mut self) -> Result<(), StoreError> {
        self.state = load_velocity(&self.store)?;
        Ok(())
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The velocity state, for status and tests.
    pub fn state(&self) -> &VelocityState {
        &self.state
    }

    fn horizon(&self) -> u64 {
        self.policy.longest_window_secs() + BUCKET_SECS
    }

    fn compact(&mut self, now: u64) -> Result<(), StoreError> {
        let mut trial = self.state.clone();
        let dropped: Vec<(LedgerKey, u64)> = trial.compact(now, self.horizon());
        for (key, minute) in &dropped {
            self.store
                .delete(Namespace::Velocity, codec::bucket_key(key, *minute))?;
        }
        self.state = trial;
        self.since_compaction = 0;
        Ok(())
    }

    /// Evaluate without recording (the first half of [`PolicyEngine::decide`]).
    pub fn evaluate(&self, req: &PaymentRequest, now: u64) -> Decision {
        evaluate(&self.policy, req, &self.state, now)
    }

    fn count(&mut self, changes: Vec<BucketChange>, now: u64) -> Result<(), StoreError> {
        let store = self.store.clone();
        store.write(|| {
            for (key, b) in &changes {
                store.put(
                    Namespace::Velocity,
                    codec::bucket_key(key, b.minute),
                    codec::encode_bucket(b),
                )?;
            }
            self.state.apply(&changes);
            self.since_compaction += 1;
            if self.since_compaction >= COMPACT_EVERY {
                self.compact(now)?;
            }
            Ok(())
        })
    }

    /// Record a decision from [`PolicyEngine::evaluate`]: an approval's spend is counted in the
    /// request's transaction; a refusal or a hold writes nothing.
    pub fn commit(
        &mut self,
        req: &PaymentRequest,
        decision: &Decision,
        now: u64,
    ) -> Result<(), StoreError> {
        if !decision.is_approved() {
            return Ok(());
        }
        let changes = spend_changes(&self.policy, req, &self.state, now);
        self.count(changes, now)
    }

    /// Decide a payment and record it (see [`PolicyEngine::commit`]).
    pub fn decide(&mut self, req: &PaymentRequest, now: u64) -> Result<Decision, StoreError> {
        let decision = self.evaluate(req, now);
        self.commit(req, &decision, now)?;
        Ok(decision)
    }

    /// Count a payment that passed by quorum approval (the approval store decides that).
    pub fn record_approved_spend(
        &mut self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<(), StoreError> {
        let changes = spend_changes(&self.policy, req, &self.state, now);
        self.count(changes, now)
    }
}
