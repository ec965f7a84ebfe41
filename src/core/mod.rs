//! The decision pipeline shared by the signer and the admin API.
//!
//! [`Core::decide_payment`] is what Warden's `Approve` implementation calls for every payment
//! the node asks about. It never blocks on people and never fails open:
//! - the policy approves → the spend is counted durably, then the answer is "approved";
//! - the policy requires a quorum → "approved" only if the approval store holds a quorum-approved
//!   request for exactly this payment (re-verified, then consumed); otherwise a pending request
//!   is opened (once per payment), an event announces it, and the answer is "not approved";
//! - the policy refuses → "not approved", with the rule tags in the log and the event;
//! - anything fails (database, tampered approval) → "not approved", with the reason logged.
//!
//! Every decision runs inside the request's transaction (see [`crate::store`]): its audit
//! record, the spend it counts, the approval it consumes or opens and the events it raises are
//! durable in one commit, or none of them is. When a decision fails closed part-way, what it had
//! staged is rolled back to the savepoint taken at its start.

pub mod channels;
pub mod check;
pub mod engine;
mod escrow;
pub mod freeze;
pub mod governance;
pub mod health;
pub(crate) mod parsed;
pub mod recovery;
pub mod status;

pub use channels::SignerState;
pub use check::{CheckAnswer, CheckError, CheckOutcome};
pub use engine::PolicyEngine;
pub use freeze::{FreezeError, UnfreezeRequest};
pub use governance::{
    check_policy_anchor, verified_policy_in_force, GovernanceError, HistoryError, Proposal,
};
pub use recovery::RecoveryError;
pub use status::{FleetMemberView, FleetView, NodeConnection, Standing, WindowUse};

use crate::approval::{ApprovalConfig, ApprovalError, ApprovalStore};
use crate::clock::Clock;
use crate::events::{EventBus, EventKind};
use crate::policy::units::format_msat;
use crate::policy::{PaymentRequest, Policy, Verdict};
use crate::store::{Store, StoreError};
use std::sync::{Arc, Mutex, RwLock};

/// Where Warden's time (the high-water mark of every time it used) is kept.
const TIME_HWM: &[u8] = b"time-hwm";

/// A policy with the exact text it was loaded from (what `GetPolicy` returns).
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The validated policy.
    pub policy: Arc<Policy>,
    /// The file text; its SHA-256 is the policy hash.
    pub text: String,
}

/// The policy and freeze of the last committed transaction. The live copies change when a
/// transaction applies its change (under the store's writer slot, so the next request sees
/// it); these change when its batch is applied (still under the slot), and a discarded one puts
/// the live ones back to these. (Not at durability: an abort meanwhile would undo it.)
#[derive(Debug, Clone)]
struct Committed {
    policy: Arc<RwLock<LoadedPolicy>>,
    frozen: Arc<RwLock<Option<crate::recovery::FreezeState>>>,
}

struct WeakCommitted {
    policy: std::sync::Weak<RwLock<LoadedPolicy>>,
    frozen: std::sync::Weak<RwLock<Option<crate::recovery::FreezeState>>>,
}

impl WeakCommitted {
    fn upgrade(&self) -> Option<Committed> {
        Some(Committed {
            policy: self.policy.upgrade()?,
            frozen: self.frozen.upgrade()?,
        })
    }
}

impl Committed {
    fn downgrade(&self) -> WeakCommitted {
        WeakCommitted {
            policy: Arc::downgrade(&self.policy),
            frozen: Arc::downgrade(&self.frozen),
        }
    }

    /// Put the live copies (and the engine's policy) back to these.
    fn restore_into(&self, live: &Committed, engine: &Mutex<PolicyEngine>) {
        // One lock at a time: `set_policy` takes the engine's before the policy's.
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let live_hash = live
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .policy
            .hash;
        if live_hash != policy.policy.hash {
            engine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .with_policy(policy.policy.clone());
            *live.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        }
        *live.frozen.write().unwrap_or_else(|p| p.into_inner()) = self
            .frozen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
    }

    fn set_policy(&self, p: LoadedPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn set_frozen(&self, f: Option<crate::recovery::FreezeState>) {
        *self.frozen.write().unwrap_or_else(|e| e.into_inner()) = f;
    }
}

/// Reads the node's chain height (VLS's chain tracker); `None` once the node is gone.
pub type ChainHeight = Arc<dyn Fn() -> Option<u32> + Send + Sync>;

#[derive(Clone)]
struct ChainSource(ChainHeight);

impl std::fmt::Debug for ChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainSource")
    }
}

/// The policy file on disk, as last read: it is only ever a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyFile {
    /// It loads; its hash.
    Loads([u8; 32]),
    /// It does not load: every problem, as FILE:LINE:COL lines.
    Broken(String),
}

/// Whether a decision is the one that signs (it counts the spend and uses the approval) or a
/// check of what signing would decide (it counts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Sign,
    Check,
}

/// The signer's answer to one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAnswer {
    /// Sign or not.
    pub approved: bool,
    /// The rules that decided.
    pub tags: Vec<String>,
    /// Why not, in a sentence (empty when approved).
    pub reason: String,
    /// The approval request holding the payment, or that approved it.
    pub request_id: Option<String>,
}

impl PaymentAnswer {
    fn refused(tags: Vec<String>, reason: String, request_id: Option<String>) -> Self {
        PaymentAnswer {
            approved: false,
            tags,
            reason,
            request_id,
        }
    }
}

/// Warden's state and decision logic, shared by every front end.
#[derive(Debug)]
pub struct Core {
    store: Store,
    /// Why the HSM cannot sign, while it cannot (set by [`health::watch_hsm`]).
    hsm_fault: Mutex<Option<String>>,
    time: Arc<crate::clock::MonotonicClock>,
    persisted_hwm: Arc<std::sync::atomic::AtomicU64>,
    engine: Arc<Mutex<PolicyEngine>>,
    policy_text: Arc<RwLock<LoadedPolicy>>,
    /// Approval requests.
    pub approvals: ApprovalStore,
    /// The event stream.
    pub events: EventBus,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The node id served, hex.
    pub node_id: RwLock<String>,
    /// (fleet, member) when this wardend serves in a fleet (`fleet.name`, `fleet.member`):
    /// each decision checks that the policy in force still admits the member, under this
    /// node id.
    pub(crate) fleet_member: RwLock<Option<(String, String)>>,
    /// This member's share of the fleet's room as last committed (a hint: the row decides).
    grant_hint: Arc<Mutex<Option<escrow::Grant>>>,
    /// The fleet policy's version shares are carved under, for the policy hash it was read for.
    share_version: Mutex<Option<(String, String)>>,
    /// An emergency stop met while this member held only its share (a freeze is written under
    /// the fleet's lock), or whose freeze could not be written: recorded by the next decision,
    /// which takes that lock; cleared once that decision's commit applied it.
    pending_trip: Arc<Mutex<Option<crate::recovery::Trigger>>>,
    /// Whether the node's hsmd stream is up.
    pub node_connection: RwLock<NodeConnection>,
    audit: Arc<crate::audit::AuditLog>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    windows: crate::alerts::WindowWatch,
    /// Fraction of a window's limit at which a warning event is raised.
    pub window_warn_fraction: RwLock<f64>,
    /// What the policy file on disk holds, if wardend has one.
    policy_file: RwLock<Option<PolicyFile>>,
    /// The freeze in force, as of the last applied transaction (a discarded one restores it
    /// from `committed`).
    frozen: Arc<RwLock<Option<crate::recovery::FreezeState>>>,
    /// The policy and the freeze as last committed: what an aborted transaction restores.
    committed: Committed,
    /// What the policy's emergency stops count.
    emergency: Mutex<crate::recovery::EmergencyWatch>,
    /// The node's chain height, as its chain tracker (fed by the node) knows it.
    chain: RwLock<Option<ChainSource>>,
    /// The channels, as the signer's state holds them.
    channel_list: RwLock<Option<channels::ChannelSource>>,
    /// What the liquidity and closing alerts last saw.
    channel_watch: channels::ChannelWatch,
    /// Invoices a check parsed in full, which the preapproval's screen need not parse again.
    pub(crate) parsed_invoices: parsed::ParsedInvoices,
}

impl Core {
    /// Build the core over an open store.
    ///
    /// The audit log is required: every decision, signature and event is recorded in it, in the
    /// request's own commit, and a decision whose record cannot be written is a refusal.
    pub fn open(
        store: Store,
        policy: LoadedPolicy,
        approvals: ApprovalConfig,
        clock: Arc<dyn Clock>,
        audit: Arc<crate::audit::AuditLog>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, StoreError> {
        // Warden's time never goes back: it starts from the persisted high-water mark, and
        // compacting at open is relative to that mark, not to a system clock that may be far
        // ahead (which would delete history no window had forgotten).
        let hwm = store
            .get(crate::store::Namespace::Meta, TIME_HWM)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let time = Arc::new(crate::clock::MonotonicClock::new(clock, hwm, None));
        let compact_at = if hwm > 0 { hwm } else { time.now() };
        let clock: Arc<dyn Clock> = time.clone();
        let engine = PolicyEngine::open(policy.policy.clone(), store.clone(), compact_at)?;
        let approvals = ApprovalStore::open(&store, approvals)?;
        let frozen = crate::recovery::FreezeStore::new(&store).get()?;
        let engine = Arc::new(Mutex::new(engine));
        let persisted_hwm = Arc::new(std::sync::atomic::AtomicU64::new(hwm));
        let committed = Committed {
            policy: Arc::new(RwLock::new(policy.clone())),
            frozen: Arc::new(RwLock::new(frozen.clone())),
        };
        let live = Committed {
            policy: Arc::new(RwLock::new(policy)),
            frozen: Arc::new(RwLock::new(frozen)),
        };
        let grant_hint: Arc<Mutex<Option<escrow::Grant>>> = Default::default();
        // A discarded or failed transaction restores memory before any other writer begins.
        {
            // The store keeps the handler, which holds the core's parts weakly so they can go.
            let (s, e, a, h) = (
                store.downgrade(),
                Arc::downgrade(&engine),
                Arc::downgrade(&audit),
                Arc::downgrade(&persisted_hwm),
            );
            let (committed, live) = (committed.downgrade(), live.downgrade());
            let hint = Arc::downgrade(&grant_hint);
            store.set_on_abort(move || {
                // What this member's share holds is not known after a failed commit (it may have
                // landed): the row decides next time.
                if let Some(h) = hint.upgrade() {
                    *h.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                if let (Some(s), Some(e), Some(a), Some(h)) =
                    (s.upgrade(), e.upgrade(), a.upgrade(), h.upgrade())
                {
                    restore(&s, &e, &a, &h)?;
                    if let (Some(c), Some(l)) = (committed.upgrade(), live.upgrade()) {
                        c.restore_into(&l, &e);
                    }
                }
                Ok(())
            });
        }
        Ok(Core {
            store,
            hsm_fault: Mutex::new(None),
            time,
            persisted_hwm,
            engine,
            policy_text: live.policy.clone(),
            approvals,
            events: EventBus::recording(audit.clone()),
            clock,
            node_id: RwLock::new(String::new()),
            fleet_member: RwLock::new(None),
            grant_hint,
            share_version: Default::default(),
            pending_trip: Default::default(),
            node_connection: RwLock::new(NodeConnection::NotConfigured),
            audit,
            metrics,
            windows: crate::alerts::WindowWatch::default(),
            window_warn_fraction: RwLock::new(0.8),
            policy_file: RwLock::new(None),
            frozen: live.frozen.clone(),
            committed,
            emergency: Mutex::new(Default::default()),
            channel_list: RwLock::new(None),
            channel_watch: Default::default(),
            chain: RwLock::new(None),
            parsed_invoices: Default::default(),
        })
    }

    fn check_windows(&self, now: u64) {
        let threshold = *self
            .window_warn_fraction
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let usage = self.window_usage(now, false);
        let fractions: Vec<(String, f64)> = usage
            .iter()
            .map(|w| (w.tag.clone(), w.fraction()))
            .collect();
        for (tag, fraction) in &fractions {
            self.note_window(tag, *fraction);
        }
        for (tag, used) in self.windows.crossings(&fractions, threshold) {
            let w = usage.iter().find(|w| w.tag == tag).expect("from usage");
            let msg = format!(
                "window {tag} ({}) is at {:.0} % of its limit: {} of {}",
                crate::policy::units::format_duration(w.window_secs),
                used * 100.0,
                format_msat(w.used_msat),
                w.limit_msat
                    .map(format_msat)
                    .unwrap_or_else(|| format!("{} payments", w.limit_count.unwrap_or(0)))
            );
            self.events.emit(
                now,
                EventKind::LimitWarning,
                "",
                std::slice::from_ref(&tag),
                msg,
                w.used_msat,
            );
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<crate::audit::AuditLog> {
        &self.audit
    }

    /// Write a decision's audit record (unflushed: the decision's own flush covers it).
    fn audit_decision(
        &self,
        intent: Intent,
        now: u64,
        req: &PaymentRequest,
        decision: &crate::policy::Decision,
        extra: serde_json::Value,
    ) -> Result<(), String> {
        let audit = &self.audit;
        let (verdict, reason) = match &decision.verdict {
            Verdict::Approve => ("approve", String::new()),
            Verdict::RequireQuorum { .. } => ("require-quorum", String::new()),
            Verdict::Deny { reason } => ("deny", reason.clone()),
        };
        let data = serde_json::json!({
            "request_digest": hex::encode(req.digest()),
            "kind": req.kind.name(),
            "amount_msat": req.amount_msat(),
            "destinations": req.outputs.iter().map(|(d, v)| serde_json::json!({"destination": d.to_string(), "amount_msat": v})).collect::<Vec<_>>(),
            "verdict": verdict,
            "tags": decision.tags,
            "reason": reason,
            "warnings": decision.warnings.iter().map(|w| w.reason.clone()).collect::<Vec<_>>(),
            "policy_hash": hex::encode(decision.policy_hash),
            "extra": extra,
        });
        let mut data = data;
        if let Some((fleet, member)) = self
            .fleet_member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            // A fleet member's record names the fleet, itself, and the fleet's windows that
            // counted this payment alongside every other member's.
            let windows: Vec<String> = self
                .policy()
                .policy
                .limits
                .iter()
                .filter(|l| l.scope == crate::policy::LimitScope::Fleet)
                .map(|l| l.tag.clone())
                .collect();
            data["fleet"] = serde_json::json!({
                "name": fleet,
                "member": member,
                "windows": windows,
            });
        }
        let kind = match intent {
            Intent::Sign => "decision",
            Intent::Check => "check",
        };
        audit
            .append(now, kind, data)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The state database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bring the in-memory state (velocity windows, audit chain head) back to what the store
    /// holds, after a transaction was discarded or rolled back to a savepoint.
    pub fn reload(&self) {
        // A reload that cannot read (logged inside) leaves memory ahead of the store; the
        // transaction's commit then fails too, and the store's abort handler retries the reload
        // before the next transaction may begin.
        let _ = restore(&self.store, &self.engine, &self.audit, &self.persisted_hwm);
        *self.grant_hint.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.committed.restore_into(
            &Committed {
                policy: self.policy_text.clone(),
                frozen: self.frozen.clone(),
            },
            &self.engine,
        );
    }

    /// Serve as fleet member `member` of `fleet`: its own approvals, its own freeze, and the
    /// rules the fleet's policy applies to it.
    pub fn join_fleet(&self, fleet: String, member: String) {
        self.approvals.set_member(Some(member.clone()));
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_member(Some(member.clone()));
        *self.fleet_member.write().unwrap_or_else(|p| p.into_inner()) = Some((fleet, member));
    }

    /// The policy in force.
    pub fn policy(&self) -> LoadedPolicy {
        self.policy_text
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace the policy in memory; the velocity history carries over. What is in force is
    /// what the governance history says (see [`Core::propose_policy`]); this is for tests and
    /// tools that build a core around a policy of their own.
    pub fn set_policy(&self, policy: LoadedPolicy) -> Result<(), StoreError> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        engine.with_policy(policy.policy.clone());
        let hash = policy.policy.hash_hex();
        self.committed.set_policy(policy.clone());
        *self.policy_text.write().unwrap_or_else(|p| p.into_inner()) = policy;
        drop(engine);
        self.events.emit(
            self.clock.now(),
            EventKind::Policy,
            "",
            &[],
            format!("policy {hash} is now in force"),
            0,
        );
        Ok(())
    }

    /// Where the node's chain height comes from (the signer sets it when it builds the node).
    pub fn set_chain_height(&self, f: ChainHeight) {
        *self.chain.write().unwrap_or_else(|p| p.into_inner()) = Some(ChainSource(f));
    }

    /// The node's chain height, if known.
    pub fn chain_height(&self) -> Option<u32> {
        let f = self
            .chain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        (f.0)()
    }

    /// Why the policy file on disk is not the policy in force (shown by `status`), if it is not:
    /// it does not load, it is a proposal (and in which state), or it is neither.
    pub fn policy_note(&self) -> Option<String> {
        let file = self
            .policy_file
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let in_force = self.policy().policy.hash;
        match file {
            PolicyFile::Broken(e) => Some(format!(
                "the policy file on disk does not load ({e}); the policy in force stays"
            )),
            PolicyFile::Loads(hash) if hash == in_force => None,
            PolicyFile::Loads(hash) => Some(match self.approvals.find_change(&hex::encode(hash)) {
                Ok(Some(r)) => format!(
                    "the policy file on disk ({}) is policy change {} ({}); the policy in force stays until it takes effect",
                    hex::encode(hash),
                    r.id,
                    r.state_at(self.clock.now()).as_str()
                ),
                _ => format!(
                    "the policy file on disk ({}) is not the policy in force and not proposed; the policy in force stays. Propose it with `wardenctl policy propose FILE` or send wardend SIGHUP",
                    hex::encode(hash)
                ),
            }),
        }
    }

    /// What the policy file on disk holds (wardend reads it at start and on SIGHUP); a file
    /// that is not the policy in force is announced (log and event).
    pub fn set_policy_file(&self, file: Option<PolicyFile>) {
        *self.policy_file.write().unwrap_or_else(|p| p.into_inner()) = file;
        if let Some(note) = self.policy_note() {
            tracing::warn!("{note}");
            self.events
                .emit(self.clock.now(), EventKind::Policy, "", &[], note, 0);
        }
    }

    /// Run `f` with the policy engine (for status reports).
    pub fn with_engine<T>(&self, f: impl FnOnce(&PolicyEngine) -> T) -> T {
        f(&self.engine.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decide a payment, durably, without waiting for anyone. See the module docs. Inside a
    /// request's transaction (the hsmd stream) the decision joins it; called on its own, it
    /// commits its own transaction before answering.
    pub fn decide_payment(&self, req: &PaymentRequest, invoice: Option<String>) -> PaymentAnswer {
        self.decide_as(Intent::Sign, req, invoice)
    }

    /// What signing `req` would decide now, without counting it or using an approval: the CLN
    /// plugin's question before lightningd builds an on-chain spend (whose refusal at signing
    /// time would stop the node). A spend that needs a quorum opens its approval request here,
    /// exactly like a held payment; one approved by quorum answers approved and leaves the
    /// approval for the signature that follows. Audited as a `check` record.
    pub fn check_payment(&self, req: &PaymentRequest) -> PaymentAnswer {
        self.decide_as(Intent::Check, req, None)
    }

    fn decide_as(
        &self,
        intent: Intent,
        req: &PaymentRequest,
        invoice: Option<String>,
    ) -> PaymentAnswer {
        self.in_transaction_of(req.amount_msat(), || self.decide_in(intent, req, invoice))
    }

    /// Run `decide` in this thread's open transaction, or in one of its own committed before
    /// the answer is returned; whatever fails is a refusal (fail closed), never an approval.
    fn in_transaction_of(
        &self,
        amount: u64,
        decide: impl FnOnce() -> PaymentAnswer,
    ) -> PaymentAnswer {
        if self.store.in_transaction() {
            return decide();
        }
        let txn = match self.store.begin() {
            Ok(t) => t,
            Err(e) => return self.fail_closed(&format!("no transaction: {e}"), amount),
        };
        let answer = decide();
        match txn.commit() {
            Ok(()) => answer,
            Err(e) => {
                self.reload();
                self.fail_closed(&format!("the decision could not be committed: {e}"), amount)
            }
        }
    }

    /// Whether the HSM can sign, as the watch last found; announced when it changes.
    pub fn set_hsm_health(&self, health: Result<(), String>) {
        let mut fault = self.hsm_fault.lock().unwrap_or_else(|p| p.into_inner());
        let was = fault.clone();
        *fault = health.err();
        let now = fault.clone();
        drop(fault);
        let tag = [crate::tags::HSM_UNAVAILABLE.to_string()];
        match (was, now) {
            (was, Some(e)) if was.as_ref() != Some(&e) => {
                tracing::error!(error = %e, "the HSM cannot sign: refusing payments");
                self.note_audit_failure(&format!("the HSM cannot sign: {e}"));
                // Recorded when the log can still take it (no checkpoint due), logged always.
                self.events.emit(
                    self.clock.now(),
                    EventKind::Hsm,
                    "",
                    &tag,
                    format!("the HSM cannot sign audit checkpoints ({e}); payments are refused until it answers again"),
                    0,
                );
            }
            (Some(_), None) => {
                tracing::info!("the HSM answers again: payments are decided again");
                self.events.emit(
                    self.clock.now(),
                    EventKind::Hsm,
                    "",
                    &[],
                    "the HSM answers again; payments are decided again".into(),
                    0,
                );
            }
            _ => {}
        }
    }

    /// Why the HSM cannot sign, while it cannot.
    pub fn hsm_fault(&self) -> Option<String> {
        self.hsm_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Report forward jumps of the system clock larger than `secs` (wardend sets
    /// `alerts.clock_jump_secs`; tests on a manual clock leave it off).
    pub fn set_max_clock_jump(&self, secs: Option<u64>) {
        self.time.set_max_jump(secs);
    }

    /// Persist Warden's time in the open transaction when it moved, and announce what the clock
    /// guard noticed.
    fn keep_time(&self) {
        use std::sync::atomic::Ordering;
        let hwm = self.time.high_water_mark();
        if hwm > self.persisted_hwm.load(Ordering::Relaxed) {
            match self.store.put(
                crate::store::Namespace::Meta,
                TIME_HWM.to_vec(),
                hwm.to_be_bytes().to_vec(),
            ) {
                Ok(()) => self.persisted_hwm.store(hwm, Ordering::Relaxed),
                Err(e) => tracing::error!(error = %e, "cannot record Warden's time"),
            }
        }
        for e in self.time.take_events() {
            let (tag, msg) = match e {
                crate::clock::ClockEvent::SteppedBack { wall, warden, by } => (
                    crate::tags::CLOCK_STEPPED_BACK,
                    format!(
                        "the system clock reads {} ({by} s before {}, a time Warden already used); Warden keeps deciding at its own time until the clock catches up. Check NTP",
                        crate::clock::format_utc(wall),
                        crate::clock::format_utc(warden)
                    ),
                ),
                crate::clock::ClockEvent::Jumped { by, to } => (
                    crate::tags::CLOCK_JUMPED,
                    format!(
                        "the system clock jumped {by} s further than the time that passed, to {}; windows and expiries now count from it. Check NTP",
                        crate::clock::format_utc(to)
                    ),
                ),
            };
            tracing::warn!(tag, "{msg}");
            self.events.emit(
                self.time.high_water_mark(),
                EventKind::Clock,
                "",
                &[tag.to_string()],
                msg,
                0,
            );
        }
    }

    fn decide_in(
        &self,
        intent: Intent,
        req: &PaymentRequest,
        invoice: Option<String>,
    ) -> PaymentAnswer {
        let started = std::time::Instant::now();
        let savepoint = self.store.savepoint();
        let answer = self.decide_staged(intent, req, invoice);
        self.keep_time();
        self.metrics
            .stage("decide", started.elapsed().as_secs_f64());
        let answer = match answer {
            Err((tag, why)) => {
                // Whatever this decision staged before it failed is not kept.
                self.store.rollback_to(savepoint);
                self.reload();
                self.fail_closed_tag(tag, &why, req.amount_msat())
            }
            Ok(a) => a,
        };
        // Held for a quorum is not a refusal the emergency stop counts (the node retries it),
        // and neither is a check (a question, which a node may ask often).
        if intent == Intent::Sign
            && !answer.approved
            && answer.request_id.is_none()
            && !answer.tags.iter().any(|t| t == crate::tags::FROZEN)
        {
            self.note_refusal(self.clock.now());
        }
        answer
    }

    /// Under the recovery key's sweep: an on-chain spend whose every output is an address of the
    /// recovery destination is approved (audited and announced); `None` for anything else.
    fn sweep_spend(
        &self,
        intent: Intent,
        now: u64,
        req: &PaymentRequest,
    ) -> Result<Option<PaymentAnswer>, (&'static str, String)> {
        let policy = self.policy().policy;
        let Some(dest) = policy
            .recovery
            .as_ref()
            .and_then(|r| r.destination.as_ref())
        else {
            return Ok(None);
        };
        let all_to_destination = !req.outputs.is_empty()
            && req.outputs.iter().all(|(d, _)| match d {
                crate::policy::Destination::Address(a) => dest.addresses.contains(a),
                crate::policy::Destination::Node(_) => false,
            });
        if !all_to_destination {
            return Ok(None);
        }
        // The sweep lets the coins go to the recovery destination, not to miners: its feerate is
        // held to [onchain] max_feerate. Not to max_fee: a wallet of many coins swept at once
        // may pay more, and the admins who could raise it may be the ones who are lost.
        if let Some(fee) = &req.fee {
            if let Some(hit) = crate::policy::feerate_bound(&policy, fee) {
                let hits = vec![hit];
                return self.refuse_by(intent, now, req, hits).map(Some);
            }
        }
        let tag = crate::tags::RECOVERY_SWEEP.to_string();
        let decision = crate::policy::Decision {
            verdict: Verdict::Approve,
            tags: vec![tag.clone()],
            warnings: vec![],
            policy_hash: policy.hash,
        };
        self.audit_decision(intent, now, req, &decision, serde_json::Value::Null)
            .map_err(|e| {
                (
                    crate::tags::AUDIT_FAILURE,
                    format!("the audit record could not be written: {e}"),
                )
            })?;
        if intent == Intent::Sign {
            self.metrics.decision("approve", std::slice::from_ref(&tag));
            self.metrics.approved(req.amount_msat());
            self.events.announce(
                now,
                EventKind::PaymentApproved,
                "",
                std::slice::from_ref(&tag),
                format!(
                    "on-chain spend of {} to the recovery destination approved (recovery sweep)",
                    format_msat(req.amount_msat())
                ),
                req.amount_msat(),
            );
        }
        Ok(Some(PaymentAnswer {
            approved: true,
            tags: vec![tag],
            reason: String::new(),
            request_id: None,
        }))
    }

    /// On a fleet member, inside a transaction: take the fleet's lock and bring memory up to
    /// what every member committed (the shared windows; the policy in force, if the fleet's
    /// history moved; the freeze, if it changed). Nothing to do for a single wardend.
    fn sync_fleet(&self, engine: &mut PolicyEngine) -> Result<(), String> {
        let r = self.sync_fleet_inner(engine);
        if r.is_err() {
            // What was read is not all in memory: the next sync reads every shared row again.
            self.store.unsync_shared();
        }
        r
    }

    fn sync_fleet_inner(&self, engine: &mut PolicyEngine) -> Result<(), String> {
        let shared = engine.sync_shared().map_err(|e| e.to_string())?;
        self.take_fleet_rows(engine, &shared)
    }

    /// The policy and the freeze from the shared rows other members committed (the windows'
    /// rows are the engine's).
    fn take_fleet_rows(
        &self,
        engine: &mut PolicyEngine,
        shared: &crate::store::Shared,
    ) -> Result<(), String> {
        self.note_shares(engine, shared)?;
        let changed = |ns: crate::store::Namespace| shared.rows.iter().any(|(n, _, _)| *n == ns);
        if changed(crate::store::Namespace::Governance) {
            // A policy put back in force is a new version even with the same hash.
            *self.share_version.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.adopt_fleet_policy(engine)?;
        }
        if changed(crate::store::Namespace::Recovery) {
            let freezes = crate::recovery::FreezeStore::new(&self.store);
            let me = self.fleet_member_name();
            if let Some(f) = self.frozen() {
                let kept = freezes
                    .get_at(f.member.as_deref())
                    .map_err(|e| e.to_string())?
                    .map(|k| k.id());
                if kept != Some(f.id()) && !self.lift_is_governed(&f) {
                    // Lifting takes the quorum (or the recovery key after its delay); a row
                    // rewritten in the fleet's database is neither.
                    let tag = crate::tags::FROZEN;
                    let msg = format!(
                        "rule {tag}: the fleet's freeze by {} ({}) reads as lifted in the database, but no unfreeze approved by the governance quorum or the recovery key lifts it; this member stays frozen. Check who writes to the fleet's database",
                        f.by, f.reason
                    );
                    tracing::error!("{msg}");
                    self.events.emit(
                        self.clock.now(),
                        EventKind::Freeze,
                        "",
                        &[tag.to_string()],
                        msg,
                        0,
                    );
                    return Ok(());
                }
            }
            let frozen = freezes
                .in_force_for(me.as_deref())
                .map_err(|e| e.to_string())?;
            if frozen != self.frozen() {
                match &frozen {
                    Some(f) => {
                        tracing::warn!(by = %f.by, reason = %f.reason, member = ?f.member, "frozen by the fleet: payments and on-chain spends are refused")
                    }
                    None => tracing::info!("the fleet's freeze is lifted"),
                }
            }
            self.committed.set_frozen(frozen.clone());
            *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = frozen;
        }
        Ok(())
    }

    /// Whether an unfreeze the governance quorum approved (or a recovery-key unfreeze) lifted
    /// freeze `f`: a consumed request that names it and whose signatures verify under the
    /// policy it was made under.
    fn lift_is_governed(&self, f: &crate::recovery::FreezeState) -> bool {
        let network = self.policy().policy.network;
        let Ok(records) = self.approvals.lifting(f) else {
            return false;
        };
        let Ok(history) = crate::governance::PolicyHistory::new(&self.store).all() else {
            return false;
        };
        records.iter().any(|r| {
            history
                .iter()
                .filter(|v| v.hash == r.policy_hash)
                .filter_map(|v| crate::policy::parse_policy_for(&v.text, network).ok())
                .any(|p| crate::approval::verify_approved_under(r, &p).is_ok())
        })
    }

    /// Another member put a policy in force (the fleet's history is one): run it here too.
    fn adopt_fleet_policy(&self, engine: &mut PolicyEngine) -> Result<(), String> {
        let network = self.policy().policy.network;
        let Some(v) = governance::verified_policy_in_force(&self.store, network)
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        if v.hash == self.policy().policy.hash_hex() {
            return Ok(());
        }
        let policy = crate::policy::parse_policy_for(&v.text, network).map_err(|errors| {
            format!(
                "the fleet's policy in force ({}) does not load in this wardend: {}",
                v.hash,
                errors
                    .first()
                    .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                    .unwrap_or_default()
            )
        })?;
        let loaded = LoadedPolicy {
            policy: Arc::new(policy),
            text: v.text,
        };
        engine.with_policy(loaded.policy.clone());
        self.committed.set_policy(loaded.clone());
        *self.policy_text.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        let msg = format!(
            "policy {} (version {}) is now in force, put in force by the fleet",
            v.hash, v.seq
        );
        tracing::info!("{msg}");
        self.events
            .emit(self.clock.now(), EventKind::Policy, "", &[], msg, 0);
        Ok(())
    }

    /// Why this fleet member may not spend under the policy in force, if it may not.
    fn not_admitted(&self) -> Option<crate::policy::RuleHit> {
        let (_, member) = self
            .fleet_member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let node = self
            .node_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let policy = self.policy().policy;
        let why = admission(&policy, &member, &node)?;
        let tag = crate::tags::FLEET_NOT_MEMBER;
        Some(crate::policy::RuleHit {
            tag: tag.to_string(),
            reason: format!("rule {tag}: {why}; payments and on-chain spends are refused"),
        })
    }

    /// A payment refused because the signer is frozen: audited and announced like any refusal.
    fn refuse_frozen(
        &self,
        intent: Intent,
        now: u64,
        req: &PaymentRequest,
        f: &crate::recovery::FreezeState,
    ) -> Result<PaymentAnswer, (&'static str, String)> {
        let tag = crate::tags::FROZEN;
        let reason = format!(
            "rule {tag}: the signer is frozen since {} by {} ({}); payments and on-chain spends are refused until the governance quorum lifts it",
            crate::clock::format_utc(f.since),
            f.by,
            f.reason
        );
        self.refuse_by(
            intent,
            now,
            req,
            vec![crate::policy::RuleHit {
                tag: tag.to_string(),
                reason,
            }],
        )
    }

    /// A payment refused by rules outside the policy's evaluation (a freeze, the fee bound
    /// under a sweep): audited and announced like any refusal.
    fn refuse_by(
        &self,
        intent: Intent,
        now: u64,
        req: &PaymentRequest,
        hits: Vec<crate::policy::RuleHit>,
    ) -> Result<PaymentAnswer, (&'static str, String)> {
        let (tags, reason) = channels::joined(&hits);
        let decision = crate::policy::Decision {
            verdict: Verdict::Deny {
                reason: reason.clone(),
            },
            tags: tags.clone(),
            warnings: vec![],
            policy_hash: self.policy().policy.hash,
        };
        self.audit_decision(intent, now, req, &decision, serde_json::Value::Null)
            .map_err(|e| {
                (
                    crate::tags::AUDIT_FAILURE,
                    format!("the audit record could not be written: {e}"),
                )
            })?;
        self.metrics.decision("deny", &tags);
        self.events.announce(
            now,
            EventKind::PaymentRefused,
            "",
            &tags,
            reason.clone(),
            req.amount_msat(),
        );
        Ok(PaymentAnswer::refused(tags, reason, None))
    }

    /// The fee bound alone, for a transaction that sends nothing outside the node (its coins
    /// back to its wallet, a closed channel swept home): it is not a payment, so it is not
    /// counted and a freeze does not stop it (moving funds home must work while frozen), but
    /// what it pays to miners is bounded by `[onchain]`. A refusal is audited and announced.
    pub fn judge_fee_only(&self, fee: crate::policy::OnchainFee) -> PaymentAnswer {
        let hits = crate::policy::fee_bound(&self.policy().policy, &fee);
        if hits.is_empty() {
            return PaymentAnswer {
                approved: true,
                tags: vec![],
                reason: String::new(),
                request_id: None,
            };
        }
        let req = PaymentRequest::onchain_with_fee(Vec::new(), fee);
        self.refuse_alone(Intent::Sign, &req, hits)
    }

    /// [`Core::refuse_by`] in a transaction of its own (or the caller's), failing closed when
    /// the refusal cannot be recorded.
    fn refuse_alone(
        &self,
        intent: Intent,
        req: &PaymentRequest,
        hits: Vec<crate::policy::RuleHit>,
    ) -> PaymentAnswer {
        let amount = req.amount_msat();
        self.in_transaction_of(amount, || {
            match self.refuse_by(intent, self.clock.now(), req, hits) {
                Ok(a) => a,
                Err((tag, why)) => self.fail_closed_tag(tag, &why, amount),
            }
        })
    }

    fn decide_staged(
        &self,
        intent: Intent,
        req: &PaymentRequest,
        invoice: Option<String>,
    ) -> Result<PaymentAnswer, (&'static str, String)> {
        use crate::tags::{AUDIT_FAILURE as AUDIT, STORE_FAILURE as STORE};
        if let Some(fault) = self.hsm_fault() {
            return Err((
                crate::tags::HSM_UNAVAILABLE,
                format!("rule {}: the HSM cannot sign audit checkpoints ({fault}); payments are refused until it answers again", crate::tags::HSM_UNAVAILABLE),
            ));
        }
        // A fleet member decides on the fleet's state as of now: its policy and its freeze,
        // and its windows under the fleet's lock until this request commits, or within this
        // member's share of them (see `escrow`).
        let now = self.clock.now();
        let amount = req.amount_msat();
        let fleet_failed = |e: String| {
            (
                STORE,
                format!("rule {STORE}: the fleet's shared state could not be read: {e}"),
            )
        };
        let (mode, within_share) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let mode = self
                .enter_fleet(&mut engine, intent == Intent::Sign, amount)
                .map_err(fleet_failed)?;
            match mode {
                // Only a plain approval is decided within a share; anything else (a freeze, a
                // quorum, a refusal that must name every rule) under the fleet's lock.
                escrow::FleetMode::Share(g) => {
                    let d = engine.evaluate_within_share(req, now);
                    let in_flight = req.kind != crate::policy::PaymentKind::OnChain
                        && !self.in_flight_hits(engine.policy(), amount).is_empty();
                    if self.frozen().is_none()
                        && self.not_admitted().is_none()
                        && matches!(d.verdict, Verdict::Approve)
                        && !in_flight
                        && !self.would_trip_window(&engine, amount, now)
                    {
                        (escrow::FleetMode::Share(g), Some(d))
                    } else {
                        (self.escalate(&mut engine).map_err(fleet_failed)?, None)
                    }
                }
                m => (m, None),
            }
        };
        if !matches!(mode, escrow::FleetMode::Share(_)) {
            // An emergency stop met while only a share was held: the fleet's lock is held now.
            // It stays pending until this transaction's commit applied the freeze.
            let pending = self
                .pending_trip
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(t) = pending {
                *self.pending_trip.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
                self.trip_now(t);
                let slot = self.pending_trip.clone();
                self.store.after_apply(move || {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
                });
            }
        }
        if let Some(f) = self.frozen() {
            if f.sweep && req.kind == crate::policy::PaymentKind::OnChain {
                if let Some(answer) = self.sweep_spend(intent, now, req)? {
                    return Ok(answer);
                }
            }
            return self.refuse_frozen(intent, now, req, &f);
        }
        if let Some(hit) = self.not_admitted() {
            return self.refuse_by(intent, now, req, vec![hit]);
        }
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());

        let policy = engine.policy().clone();
        let mut decision = match within_share {
            Some(d) => d,
            None => engine.evaluate(req, now),
        };
        if let escrow::FleetMode::Locked(others) = &mode {
            // What the other members' shares hold back may be what this payment needs: settle
            // them (they are locked, so what they spent is final) and decide exactly.
            if !decision.is_approved()
                && escrow::refused_by_fleet_window(&decision, &policy)
                && self
                    .settle_others(&mut engine, others)
                    .map_err(fleet_failed)?
            {
                decision = engine.evaluate(req, now);
            }
        }
        if req.kind != crate::policy::PaymentKind::OnChain {
            let hits = self.in_flight_hits(&policy, amount);
            if !hits.is_empty() {
                decision = refused_also_by(decision, &hits);
            }
        }
        let quorum_pending = matches!(decision.verdict, Verdict::RequireQuorum { .. });
        // A decision that may be approved by quorum is audited once its outcome is known.
        if !quorum_pending {
            self.audit_decision(intent, now, req, &decision, serde_json::Value::Null)
                .map_err(|e| (AUDIT, format!("the audit record could not be written: {e}")))?;
        }
        if intent == Intent::Sign {
            let recorded = match &mode {
                escrow::FleetMode::Share(g) if decision.is_approved() => engine
                    .commit_within_share(req, now)
                    .map_err(|e| e.to_string())
                    .and_then(|()| self.spend_share(g.clone(), amount))
                    .map(|()| engine.note_share_spend(amount)),
                escrow::FleetMode::Locked(_) if decision.is_approved() => engine
                    .commit(req, &decision, now)
                    .map_err(|e| e.to_string())
                    .and_then(|()| self.carve_share(&engine)),
                _ => engine
                    .commit(req, &decision, now)
                    .map_err(|e| e.to_string()),
            };
            recorded.map_err(|e| (STORE, format!("the decision could not be recorded: {e}")))?;
        }
        // Warn-mode rules raise warnings; notes on other rules stay in the decision record.
        for w in decision
            .warnings
            .iter()
            .filter(|w| policy.is_warn_rule(&w.tag))
        {
            self.events.announce(
                now,
                EventKind::LimitWarning,
                "",
                std::slice::from_ref(&w.tag),
                w.reason.clone(),
                amount,
            );
        }
        let answer = match decision.verdict {
            Verdict::Approve if intent == Intent::Check => PaymentAnswer {
                approved: true,
                tags: decision.tags,
                reason: String::new(),
                request_id: None,
            },
            Verdict::Approve => {
                self.metrics.decision("approve", &decision.tags);
                self.metrics.approved(amount);
                drop(engine);
                self.check_windows(now);
                self.events.announce(
                    now,
                    EventKind::PaymentApproved,
                    "",
                    &decision.tags,
                    format!("payment of {} approved", format_msat(amount)),
                    amount,
                );
                PaymentAnswer {
                    approved: true,
                    tags: decision.tags,
                    reason: String::new(),
                    request_id: None,
                }
            }
            Verdict::Deny { reason } => {
                self.metrics.decision("deny", &decision.tags);
                self.events.announce(
                    now,
                    EventKind::PaymentRefused,
                    "",
                    &decision.tags,
                    reason.clone(),
                    amount,
                );
                PaymentAnswer::refused(decision.tags, reason, None)
            }
            Verdict::RequireQuorum { ref rule_tag, .. }
                if intent == Intent::Check
                    && req.payment_hash.is_none()
                    && req.kind == crate::policy::PaymentKind::Keysend =>
            {
                // Core Lightning's keysend, checked before it picks its payment hash: an
                // approval would name a hash the next run does not use.
                let reason = format!(
                    "rule {rule_tag}: this keysend needs the admins' approval, and Core Lightning's keysend picks a new payment hash each time it runs, so an approval could never be used; ask the payee for an invoice and pay that (held payments of an invoice are approved with wardenctl approve)"
                );
                self.refuse_held(intent, now, req, &decision, reason, None)?
            }
            Verdict::RequireQuorum { .. } if self.rejected(req).is_some() => {
                // A rejection is a veto: the same payment is not put to the admins again.
                let record = self.rejected(req).expect("checked");
                self.refuse_held(
                    intent,
                    now,
                    req,
                    &decision,
                    rejection_reason(&record),
                    Some(record.id),
                )?
            }
            Verdict::RequireQuorum {
                ref rule_tag,
                ref quorum,
                expiry_secs,
                ..
            } => match match intent {
                Intent::Sign => self.approvals.consume(req, &policy, rule_tag, quorum, now),
                Intent::Check => self
                    .approvals
                    .peek_approved(req, &policy, rule_tag, quorum, now),
            } {
                Ok(Some(record)) if intent == Intent::Check => {
                    let approved = crate::policy::Decision {
                        verdict: Verdict::Approve,
                        tags: decision.tags.clone(),
                        warnings: vec![],
                        policy_hash: decision.policy_hash,
                    };
                    let extra = serde_json::json!({"approved_by_quorum": record.id});
                    self.audit_decision(intent, now, req, &approved, extra)
                        .map_err(|e| {
                            (AUDIT, format!("the audit record could not be written: {e}"))
                        })?;
                    PaymentAnswer {
                        approved: true,
                        tags: decision.tags,
                        reason: String::new(),
                        request_id: Some(record.id),
                    }
                }
                Ok(Some(record)) => {
                    let approved = crate::policy::Decision {
                        verdict: Verdict::Approve,
                        tags: decision.tags.clone(),
                        warnings: vec![],
                        policy_hash: decision.policy_hash,
                    };
                    let extra = serde_json::json!({"approved_by_quorum": record.id, "approvers": record.approvers()});
                    self.audit_decision(intent, now, req, &approved, extra)
                        .map_err(|e| {
                            (AUDIT, format!("the audit record could not be written: {e}"))
                        })?;
                    engine.record_approved_spend(req, now).map_err(|e| {
                        (
                            STORE,
                            format!("the approved spend could not be recorded: {e}"),
                        )
                    })?;
                    self.metrics.decision("approve", &decision.tags);
                    self.metrics.approved(amount);
                    drop(engine);
                    self.check_windows(now);
                    let msg = format!(
                        "payment of {} approved by quorum ({}) under request {}",
                        format_msat(amount),
                        record.approvers().join(", "),
                        record.id
                    );
                    self.events.announce(
                        now,
                        EventKind::PaymentApproved,
                        &record.id,
                        &decision.tags,
                        msg,
                        amount,
                    );
                    PaymentAnswer {
                        approved: true,
                        tags: decision.tags,
                        reason: String::new(),
                        request_id: Some(record.id),
                    }
                }
                Ok(None) => {
                    // A request for this payment made under a policy no longer in force gives
                    // way to a new one; the admins are told why they must sign again.
                    let previous = self.approvals.find(req).ok().flatten().filter(|r| {
                        r.policy_hash != policy.hash_hex()
                            && matches!(
                                r.state_at(now),
                                crate::approval::RequestState::Pending
                                    | crate::approval::RequestState::Approved
                            )
                    });
                    let reuses = self.approvals.find(req).ok().flatten().is_some_and(|r| {
                        r.policy_hash == policy.hash_hex()
                            && matches!(
                                r.state_at(now),
                                crate::approval::RequestState::Pending
                                    | crate::approval::RequestState::Approved
                            )
                    });
                    let max_open = self.approvals.config().max_open;
                    if !reuses {
                        let open = self.approvals.count_open(now).map_err(|e| {
                            (
                                STORE,
                                format!("the approval requests could not be counted: {e}"),
                            )
                        })?;
                        if open >= max_open {
                            return Err((
                                crate::tags::APPROVAL_CAPACITY,
                                format!("rule {}: {open} approval requests are open, the configured limit is {max_open} (approvals.max_open); approve, reject or let some expire before more payments are held", crate::tags::APPROVAL_CAPACITY),
                            ));
                        }
                    }
                    self.audit_decision(intent, now, req, &decision, serde_json::Value::Null)
                        .map_err(|e| {
                            (AUDIT, format!("the audit record could not be written: {e}"))
                        })?;
                    let (record, created) = self
                        .approvals
                        .open_request(
                            req,
                            rule_tag,
                            &decision.tags,
                            quorum,
                            expiry_secs,
                            &policy,
                            invoice,
                            now,
                        )
                        .map_err(|e| {
                            (
                                STORE,
                                format!("the approval request could not be stored: {e}"),
                            )
                        })?;
                    self.metrics.decision("hold", &decision.tags);
                    let mut reason = format!(
                        "rule {rule_tag}: the payment of {} needs {} of [{}] to approve request {} (expires {})",
                        format_msat(amount),
                        quorum.need,
                        quorum.of.join(", "),
                        record.id,
                        crate::clock::format_utc(record.expires_at)
                    );
                    if let Some(old) = previous.filter(|_| created) {
                        reason.push_str(&format!(
                            "; it replaces request {}, made under policy {} which is no longer in force (approvals sign the policy, so they do not carry over)",
                            old.id, old.policy_hash
                        ));
                    }
                    if created {
                        self.events.emit(
                            now,
                            EventKind::RequestCreated,
                            &record.id,
                            &decision.tags,
                            reason.clone(),
                            amount,
                        );
                    }
                    PaymentAnswer::refused(decision.tags.clone(), reason, Some(record.id))
                }
                Err(e) => {
                    if matches!(e, ApprovalError::Tampered { .. }) {
                        tracing::error!(error = %e, "refusing a payment whose approval does not verify");
                    }
                    self.refuse_held(intent, now, req, &decision, e.to_string(), None)?
                }
            },
        };
        Ok(answer)
    }

    /// Refuse a payment the policy would hold, for a reason found on the way (a veto, an
    /// approval that does not verify): audited as a refusal, announced, answered.
    fn refuse_held(
        &self,
        intent: Intent,
        now: u64,
        req: &PaymentRequest,
        decision: &crate::policy::Decision,
        reason: String,
        rejected: Option<String>,
    ) -> Result<PaymentAnswer, (&'static str, String)> {
        // The rejected request whose veto this is, when it is one.
        let extra = match &rejected {
            Some(id) => serde_json::json!({ "rejected_request": id }),
            None => serde_json::Value::Null,
        };
        let request_id = rejected;
        let refused = crate::policy::Decision {
            verdict: Verdict::Deny {
                reason: reason.clone(),
            },
            tags: decision.tags.clone(),
            warnings: vec![],
            policy_hash: decision.policy_hash,
        };
        self.audit_decision(intent, now, req, &refused, extra)
            .map_err(|e| {
                (
                    crate::tags::AUDIT_FAILURE,
                    format!("the audit record could not be written: {e}"),
                )
            })?;
        self.metrics.decision("deny", &decision.tags);
        self.events.announce(
            now,
            EventKind::PaymentRefused,
            request_id.as_deref().unwrap_or(""),
            &decision.tags,
            reason.clone(),
            req.amount_msat(),
        );
        Ok(PaymentAnswer::refused(
            decision.tags.clone(),
            reason,
            request_id,
        ))
    }

    /// The rejected request for exactly this payment, if its newest request was rejected.
    fn rejected(&self, req: &PaymentRequest) -> Option<crate::approval::ApprovalRecord> {
        self.approvals
            .find(req)
            .ok()
            .flatten()
            .filter(|r| r.state == crate::approval::RequestState::Rejected)
    }

    /// An admin's signed decision on a request, with its audit record and event, in one commit:
    /// a signature whose record cannot be written is not kept, and one that is kept is audited.
    pub fn decide_request(
        &self,
        id: &str,
        admin: &str,
        decision: crate::approval::Decision,
        format: crate::approval::SignatureFormat,
        signature: &[u8],
        reason: Option<String>,
    ) -> Result<crate::approval::ApprovalOutcome, ApprovalError> {
        use crate::approval::{Decision, RequestState};
        let now = self.clock.now();
        let policy = self.policy().policy;
        let txn = self.store.begin()?;
        let mut out = self
            .approvals
            .sign(id, admin, decision, format, signature, reason, &policy, now)?;
        let data = serde_json::json!({
            "request_id": out.record.id,
            "admin": admin,
            "decision": decision.as_str(),
            "format": format.as_str(),
            "signature": hex::encode(signature),
            "state": out.record.state.as_str(),
            "amount_msat": out.record.amount_msat(),
            "policy_hash": out.record.policy_hash,
        });
        let kind = match decision {
            Decision::Approve => "approval",
            Decision::Reject => "rejection",
            Decision::Reopen => "reopen",
        };
        if let Err(e) = self.audit.append(now, kind, data) {
            drop(txn);
            self.reload();
            return Err(ApprovalError::Audit(e.to_string()));
        }
        let kind = match (out.decided, out.record.state) {
            (true, RequestState::Approved) => EventKind::RequestApproved,
            (true, RequestState::Rejected) => EventKind::RequestRejected,
            _ => EventKind::RequestSigned,
        };
        if out.decided
            && out.record.state == RequestState::Approved
            && out.record.unfreeze.is_some()
        {
            match self.apply_unfreeze(&out.record, now) {
                Ok(true) => {}
                Ok(false) => {
                    out.message = format!(
                        "quorum reached, but unfreeze request {} names a freeze that is no longer in force (it was lifted some other way); nothing changed: {}",
                        out.record.id,
                        match self.frozen() {
                            Some(f) => format!("the signer stays frozen by {} ({})", f.by, f.reason),
                            None => "the signer is not frozen".into(),
                        }
                    );
                }
                Err(e) => {
                    drop(txn);
                    self.reload();
                    return Err(e);
                }
            }
        }
        // A policy change that waits nothing takes effect with its last signature.
        if out.decided
            && out.record.state == RequestState::Approved
            && out.record.effective_at.is_some_and(|t| t <= now)
        {
            if let Err(e) = self.apply_due_change(now) {
                drop(txn);
                self.reload();
                return Err(e);
            }
        }
        self.events.emit(
            now,
            kind,
            &out.record.id,
            &out.record.tags,
            out.message.clone(),
            out.record.amount_msat(),
        );
        // Every step of a governed request is an alert too (the webhook hears it).
        if out.record.governed() {
            let kind = if out.record.unfreeze.is_some() {
                EventKind::Freeze
            } else if out.record.recovery.is_some() {
                EventKind::Recovery
            } else {
                EventKind::Policy
            };
            self.events.emit(
                now,
                kind,
                &out.record.id,
                &out.record.tags,
                out.message.clone(),
                0,
            );
        }
        if let Err(e) = txn.commit() {
            self.reload();
            return Err(e.into());
        }
        Ok(out)
    }

    /// Work that time makes due, in one commit: requests past their expiry are marked expired
    /// and announced (once each), and an unsigned audit tail older than the checkpoint interval
    /// is signed. wardend runs it every few seconds.
    pub fn sweep(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let txn = self.store.begin()?;
        // On a fleet member: what the other members changed (a policy put in force, a freeze)
        // is taken up here too, between payments.
        let synced = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            self.sync_fleet(&mut engine)
        };
        if let Err(detail) = synced {
            drop(txn);
            return Err(StoreError::Unavailable { detail });
        }
        let expired = match self.approvals.expire_due(now) {
            Ok(e) => e,
            Err(e) => {
                drop(txn);
                return Err(e);
            }
        };
        for r in &expired {
            self.events.emit(
                now,
                EventKind::RequestExpired,
                &r.id,
                &r.tags,
                format!(
                    "request {} expired at {} without its quorum ({} of {} approvals); the payment stays refused",
                    r.id,
                    crate::clock::format_utc(r.expires_at),
                    r.approvers().len(),
                    r.need
                ),
                r.amount_msat(),
            );
        }
        if let Err(e) = self.apply_due_change(now) {
            tracing::error!(error = %e, "cannot put an approved policy change in force");
            drop(txn);
            self.reload();
            return Err(match e {
                ApprovalError::Store(e) => e,
                other => StoreError::Io {
                    op: "apply a policy change",
                    detail: other.to_string(),
                },
            });
        }
        if let Err(e) = self.audit.checkpoint_if_due(now) {
            tracing::error!(error = %e, "cannot sign the audit log's tail");
        }
        match self.approvals.prune(now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                "closed approval requests past their retention were pruned"
            ),
            Err(e) => tracing::error!(error = %e, "cannot prune closed approval requests"),
        }
        self.keep_time();
        let r = txn.commit();
        if r.is_err() {
            self.reload();
        }
        r
    }

    fn fail_closed(&self, why: &str, amount: u64) -> PaymentAnswer {
        self.fail_closed_tag(crate::tags::STORE_FAILURE, why, amount)
    }

    fn fail_closed_tag(&self, tag: &str, why: &str, amount: u64) -> PaymentAnswer {
        let tag = tag.to_string();
        self.metrics.decision("deny", std::slice::from_ref(&tag));
        if tag == crate::tags::AUDIT_FAILURE {
            self.note_audit_failure(why);
            self.events.emit(
                self.clock.now(),
                EventKind::Hsm,
                "",
                std::slice::from_ref(&tag),
                format!("audit or HSM failure: {why}"),
                amount,
            );
        }
        tracing::error!(reason = why, "refusing a payment: fail closed");
        self.events.emit(
            self.clock.now(),
            EventKind::PaymentRefused,
            "",
            std::slice::from_ref(&tag),
            why.to_string(),
            amount,
        );
        PaymentAnswer::refused(vec![tag], why.to_string(), None)
    }
}

/// `decision` refused by `hits` as well (rules outside the policy evaluator's steps, such as the
/// in-flight limits): their tags and sentences come first; an earlier refusal's stay.
fn refused_also_by(
    decision: crate::policy::Decision,
    hits: &[crate::policy::RuleHit],
) -> crate::policy::Decision {
    let (mut tags, mut reason) = channels::joined(hits);
    if let Verdict::Deny { reason: earlier } = &decision.verdict {
        reason = format!("{reason}; {earlier}");
        tags.extend(decision.tags.iter().cloned());
    }
    crate::policy::Decision {
        verdict: Verdict::Deny { reason },
        tags,
        warnings: decision.warnings,
        policy_hash: decision.policy_hash,
    }
}

/// Why a rejected payment stays refused: who rejected it and why, in one sentence.
fn rejection_reason(r: &crate::approval::ApprovalRecord) -> String {
    let who: Vec<String> = r
        .signatures
        .iter()
        .filter(|s| s.decision == crate::approval::Decision::Reject)
        .map(|s| match &s.reason {
            Some(why) => format!("{} (\"{why}\")", s.admin),
            None => s.admin.clone(),
        })
        .collect();
    format!(
        "request {} for this payment was rejected by {}; the payment stays refused and is not put to the admins again unless the quorum re-opens it (wardenctl reopen {})",
        r.id,
        who.join(", "),
        r.id
    )
}

/// In-memory state back to what `store` holds (committed state, plus what this thread's open
/// transaction has staged, when there is one).
fn restore(
    store: &Store,
    engine: &Mutex<PolicyEngine>,
    audit: &crate::audit::AuditLog,
    persisted_hwm: &std::sync::atomic::AtomicU64,
) -> Result<(), String> {
    let stored = store
        .get(crate::store::Namespace::Meta, TIME_HWM)
        .map_err(|e| format!("the clock's high-water mark: {e}"))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    persisted_hwm.store(stored, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = engine.lock().unwrap_or_else(|p| p.into_inner()).reload() {
        tracing::error!(error = %e, "cannot reload the velocity windows");
        return Err(format!("the velocity windows: {e}"));
    }
    if let Err(e) = audit.reload() {
        tracing::error!(error = %e, "cannot reload the audit chain head");
        return Err(format!("the audit chain head: {e}"));
    }
    Ok(())
}

/// Why `policy` does not admit fleet member `member` on node `node_id`, if it does not.
pub fn admission(policy: &crate::policy::Policy, member: &str, node_id: &str) -> Option<String> {
    match policy.fleet_member(member) {
        Some(n) if n.eq_ignore_ascii_case(node_id) => None,
        Some(n) => Some(format!(
            "the policy in force admits fleet member \"{member}\" as node {n}, and this is node {node_id}"
        )),
        None if policy.fleet_members.is_empty() => Some(format!(
            "the policy in force admits no fleet members ([fleet.members]), so fleet member \"{member}\" (node {node_id}) may not spend"
        )),
        None => Some(format!(
            "the policy in force does not admit fleet member \"{member}\" (node {node_id}); its [fleet.members] lists {}",
            policy.fleet_members.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod admission_tests {
    use super::admission;

    #[test]
    fn a_member_is_admitted_only_by_its_name_and_its_node() {
        let a = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436";
        let b = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e";
        let p = |members: &str| {
            crate::policy::parse_policy(&format!("version = 1\n{members}")).unwrap()
        };
        let fleet = p(&format!("[fleet.members]\nnode-a = \"{a}\"\n"));
        assert_eq!(admission(&fleet, "node-a", a), None);
        assert_eq!(admission(&fleet, "node-a", &a.to_ascii_uppercase()), None);
        assert_eq!(
            admission(&fleet, "node-a", b).unwrap(),
            format!("the policy in force admits fleet member \"node-a\" as node {a}, and this is node {b}")
        );
        assert_eq!(
            admission(&fleet, "node-b", b).unwrap(),
            format!("the policy in force does not admit fleet member \"node-b\" (node {b}); its [fleet.members] lists node-a")
        );
        assert!(admission(&p(""), "node-a", a)
            .unwrap()
            .contains("admits no fleet members"));
    }
}
