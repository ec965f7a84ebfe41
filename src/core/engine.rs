//! The policy engine with its state: pure evaluation (`policy::eval`) plus durable velocity.
//!
//! [`PolicyEngine::commit`] stages an approval's bucket changes in the request's transaction
//! (see [`crate::store`]) and applies them to the in-memory windows at once, so the rest of the
//! request sees them. If the transaction is then discarded, the owner of the request calls
//! [`PolicyEngine::reload`], and memory returns to what is committed. A refusal writes nothing.
//!
//! A limit with `scope = "fleet"` counts in a ledger every member of the fleet shares. Memory
//! holds a copy; before a decision, [`PolicyEngine::sync_shared`] takes the fleet's lock for the
//! request's transaction and brings the copy up to what the other members committed since its
//! last look, so the decision and the bucket it writes are exact, and no other member decides
//! on that ledger until this request commits or is discarded.

use crate::policy::eval::{evaluate, spend_changes, Decision, PaymentRequest};
use crate::policy::model::Policy;
use crate::policy::velocity::{codec, BucketChange, LedgerKey, VelocityState, BUCKET_SECS};
use crate::store::{Namespace, Store, StoreError};
use std::sync::Arc;

/// How many decisions pass between full compactions of every ledger.
const COMPACT_EVERY: u64 = 1_000;

/// The fleet's ledger is kept at least this long, whatever this member's policy's longest
/// window: a member never drops a bucket another member's (longer) window may still count.
const FLEET_HORIZON_SECS: u64 = 35 * 86_400;

/// A policy, its velocity state, and the store that keeps that state.
#[derive(Debug)]
pub struct PolicyEngine {
    /// The rules this wardend runs: in a fleet, the fleet's policy without the rules scoped to
    /// other members.
    policy: Arc<Policy>,
    /// The policy in force, whole: how long history is kept follows every rule, so a rule
    /// later extended to this member counts what was already spent.
    whole: Arc<Policy>,
    /// In a fleet, this member's name.
    member: Option<String>,
    /// A compaction ran without the fleet's lock, so the fleet's ledger waits for a decision
    /// that holds it.
    fleet_compaction_due: bool,
    /// `policy` without its limits on the fleet's windows: what a member spending from its
    /// share of the fleet's room checks (the share stands for those limits).
    within_share: Arc<Policy>,
    state: VelocityState,
    store: Store,
    since_compaction: u64,
}

/// Every velocity bucket committed in `store` for this wardend (not the fleet's).
pub fn load_velocity(store: &Store) -> Result<VelocityState, StoreError> {
    let mut changes = Vec::new();
    for (k, v) in store.scan(Namespace::Velocity, b"")? {
        changes.push(decode(Namespace::Velocity, &k, &v)?);
    }
    let mut state = VelocityState::default();
    state.apply(&changes);
    Ok(state)
}

fn decode(ns: Namespace, k: &[u8], v: &[u8]) -> Result<BucketChange, StoreError> {
    let change = codec::decode_bucket(k, v).map_err(|detail| StoreError::Corrupt {
        key: format!("{}/{}", ns.name(), hex::encode(k)),
        detail: detail.into(),
    })?;
    // A fleet row holds the fleet's ledger and nothing else, and a member's own rows never do.
    if change.0.is_fleet() != ns.is_fleet() {
        return Err(StoreError::Corrupt {
            key: format!("{}/{}", ns.name(), hex::encode(k)),
            detail: "a ledger stored in the wrong namespace".into(),
        });
    }
    Ok(change)
}

/// Where a ledger's buckets are stored: the fleet's rows or this wardend's.
fn namespace_of(key: &LedgerKey) -> Namespace {
    if key.is_fleet() {
        Namespace::FleetVelocity
    } else {
        Namespace::Velocity
    }
}

impl PolicyEngine {
    /// Load the velocity state from the store and compact what no window can count any more.
    pub fn open(policy: Arc<Policy>, store: Store, now: u64) -> Result<Self, StoreError> {
        let state = load_velocity(&store)?;
        let mut engine = PolicyEngine {
            whole: policy.clone(),
            within_share: Arc::new(without_fleet_windows(&policy)),
            policy,
            member: None,
            fleet_compaction_due: false,
            state,
            store,
            since_compaction: COMPACT_EVERY,
        };
        engine.load_shared()?;
        let store = engine.store.clone();
        store.write(|| engine.compact(now))?;
        Ok(engine)
    }

    /// The same windows under another policy (a policy change keeps the history). A policy
    /// that counts across the fleet reads the fleet's ledger at its next decision.
    pub fn with_policy(&mut self, policy: Arc<Policy>) {
        self.policy = match &self.member {
            Some(m) if policy.scopes_members() => Arc::new(policy.for_member(m)),
            _ => policy.clone(),
        };
        self.within_share = Arc::new(without_fleet_windows(&self.policy));
        self.whole = policy;
    }

    /// Evaluate as a member spending from its share of the fleet's room: every rule but the
    /// limits on the fleet's windows, which the share stands for (the caller checks that the
    /// payment fits it).
    pub fn evaluate_within_share(&self, req: &PaymentRequest, now: u64) -> Decision {
        evaluate(&self.within_share, req, &self.state, now)
    }

    /// Record an approval decided within the share: this member's own windows, not the
    /// fleet's (the share's row records it).
    pub fn commit_within_share(
        &mut self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut changes = spend_changes(&self.within_share, req, &self.state, now);
        // A per-payment or warn-only fleet limit left in the view would add a bucket to the
        // fleet's ledger: the share counts the payment instead.
        changes.retain(|(k, _)| !k.is_fleet());
        self.count(changes, now)
    }

    /// Move what was spent from a share (`amount_msat` in `count` payments) into the fleet's
    /// window, as spent at `now` (no earlier than it was: it counts at least as long).
    pub fn settle_into_fleet(
        &mut self,
        amount_msat: u64,
        count: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        if amount_msat == 0 && count == 0 {
            return Ok(());
        }
        let mut bucket = self
            .state
            .ledger(&LedgerKey::Fleet)
            .map(|l| l.bucket_after(now, amount_msat))
            .unwrap_or(crate::policy::Bucket {
                minute: now / BUCKET_SECS,
                amount_msat,
                count: 1,
            });
        bucket.count = bucket.count.saturating_sub(1).saturating_add(count);
        self.count(vec![(LedgerKey::Fleet, bucket)], now)
    }

    /// The shares other members hold, counted in the fleet's windows for decisions, and what
    /// was spent from them, for reports (see `VelocityState::set_fleet_reserved`).
    pub fn set_fleet_shares(
        &mut self,
        reserved: crate::policy::Totals,
        spent: crate::policy::Totals,
    ) {
        self.state.set_fleet_reserved(reserved);
        self.state.set_fleet_in_shares(spent);
    }

    /// What every member spent from its share, as last read (for reports).
    pub fn set_fleet_in_shares(&mut self, spent: crate::policy::Totals) {
        self.state.set_fleet_in_shares(spent);
    }

    /// Count in the fleet's windows, for a decision, what was spent from every share as last
    /// read (a check: nothing is carved or settled).
    pub fn reserve_spent_shares(&mut self) {
        let spent = self.state.fleet_in_shares();
        self.state.set_fleet_reserved(spent);
    }

    /// A payment approved from this member's share (for reports; see `commit_within_share`).
    pub fn note_share_spend(&mut self, amount_msat: u64) {
        self.state.add_fleet_in_shares(amount_msat);
    }

    /// Run the rules as fleet member `member` does (see [`Policy::for_member`]).
    pub fn set_member(&mut self, member: Option<String>) {
        self.member = member;
        self.with_policy(self.whole.clone());
    }

    /// Forget what memory holds beyond the committed state (after a discarded transaction).
    pub fn reload(&mut self) -> Result<(), StoreError> {
        // Built whole before it replaces memory: a reload that fails leaves memory as it was
        // (and the store reloads again before the next transaction).
        let mut state = load_velocity(&self.store)?;
        self.load_shared_into(&mut state)?;
        self.state = state;
        Ok(())
    }

    /// Read the fleet's ledger whole, when the policy counts one.
    fn load_shared(&mut self) -> Result<(), StoreError> {
        let mut state = std::mem::take(&mut self.state);
        let r = self.load_shared_into(&mut state);
        self.state = state;
        r
    }

    /// The fleet's ledger into `state`, as this thread sees it: in a transaction (a reload
    /// mid-request), with the buckets the transaction has staged, which a raw read would miss.
    fn load_shared_into(&self, state: &mut VelocityState) -> Result<(), StoreError> {
        if !self.policy.counts_fleet() && !self.store.is_fleet() {
            return Ok(());
        }
        if !self.store.is_fleet() {
            // Refused by name: a fleet policy needs a fleet's database.
            self.store.read_shared()?;
        }
        let mut changes = Vec::new();
        for (k, v) in self.store.scan(Namespace::FleetVelocity, b"")? {
            changes.push(decode(Namespace::FleetVelocity, &k, &v)?);
        }
        state.apply(&changes);
        Ok(())
    }

    /// Apply the fleet's window rows among `shared` (other rows are not the engine's).
    pub fn take_shared(&mut self, shared: &crate::store::Shared) -> Result<(), StoreError> {
        let mut changes = Vec::new();
        for (ns, k, v) in &shared.rows {
            if *ns == Namespace::FleetVelocity {
                changes.push(decode(*ns, k, v)?);
            }
        }
        self.state.apply(&changes);
        Ok(())
    }

    /// Before a decision: on a fleet member (or under a policy that counts across a fleet,
    /// which only a member can run), take the fleet's lock for this thread's transaction and
    /// bring the fleet's window up to what the other members committed; the rows read are
    /// returned for the rest of memory (policy, freeze). Nothing to do for a single wardend.
    pub fn sync_shared(&mut self) -> Result<crate::store::Shared, StoreError> {
        if !self.policy.counts_fleet() && !self.store.is_fleet() {
            return Ok(crate::store::Shared::default());
        }
        let shared = self.store.sync_shared()?;
        self.take_shared(&shared)?;
        Ok(shared)
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
        self.whole.longest_window_secs() + BUCKET_SECS
    }

    fn compact(&mut self, now: u64) -> Result<(), StoreError> {
        let mut trial = self.state.clone();
        let fleet = trial.ledger(&LedgerKey::Fleet).cloned();
        let mut dropped: Vec<(LedgerKey, u64)> = trial.compact(now, self.horizon());
        if let (Some(fleet), false) = (&fleet, self.store.holds_fleet_lock()) {
            // Deleting the fleet's rows takes the fleet's lock, which a decision within this
            // member's share does not hold: the fleet's ledger waits for the next compaction.
            dropped.retain(|(k, _)| !k.is_fleet());
            let kept: Vec<_> = fleet.buckets().map(|b| (LedgerKey::Fleet, *b)).collect();
            trial.apply(&kept);
            self.fleet_compaction_due = true;
        } else if let Some(mut fleet) = fleet {
            self.fleet_compaction_due = false;
            // The fleet's ledger by the fleet's horizon instead (see FLEET_HORIZON_SECS).
            dropped.retain(|(k, _)| !k.is_fleet());
            let gone = fleet.compact(now, self.horizon().max(FLEET_HORIZON_SECS));
            dropped.extend(gone.into_iter().map(|m| (LedgerKey::Fleet, m)));
            let kept: Vec<_> = fleet.buckets().map(|b| (LedgerKey::Fleet, *b)).collect();
            trial.apply(&kept);
        }
        for (key, minute) in &dropped {
            self.store
                .delete(namespace_of(key), codec::bucket_key(key, *minute))?;
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
                    namespace_of(key),
                    codec::bucket_key(key, b.minute),
                    codec::encode_bucket(b),
                )?;
            }
            self.state.apply(&changes);
            self.since_compaction += 1;
            let fleet_due = self.fleet_compaction_due && self.store.holds_fleet_lock();
            if self.since_compaction >= COMPACT_EVERY || fleet_due {
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

/// `policy` without its limits on the fleet's windows (per-payment fleet limits stay).
fn without_fleet_windows(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    p.limits
        .retain(|l| !(l.scope == crate::policy::LimitScope::Fleet && l.window_secs.is_some()));
    p
}
