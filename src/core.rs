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

use crate::approval::{ApprovalConfig, ApprovalError, ApprovalStore};
use crate::clock::Clock;
use crate::events::{EventBus, EventKind};
use crate::policy::units::format_msat;
use crate::policy::{PaymentRequest, Policy, PolicyEngine, Verdict};
use crate::store::{Store, StoreError};
use std::sync::{Arc, Mutex, RwLock};

/// A policy with the exact text it was loaded from (what `GetPolicy` returns).
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The validated policy.
    pub policy: Arc<Policy>,
    /// The file text; its SHA-256 is the policy hash.
    pub text: String,
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
    engine: Mutex<PolicyEngine>,
    policy_text: RwLock<LoadedPolicy>,
    /// Approval requests.
    pub approvals: ApprovalStore,
    /// The event stream.
    pub events: EventBus,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The node id served, hex.
    pub node_id: RwLock<String>,
    /// "connected", "disconnected" or "not configured".
    pub node_connection: RwLock<String>,
    audit: std::sync::OnceLock<Arc<crate::audit::AuditLog>>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    windows: crate::alerts::WindowWatch,
    /// Fraction of a window's limit at which a warning event is raised.
    pub window_warn_fraction: RwLock<f64>,
}

/// One rolling window's use, for status, metrics and alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowUse {
    /// The limit's tag.
    pub tag: String,
    /// Window length, seconds.
    pub window_secs: u64,
    /// "node", "listed destinations" or "busiest destination".
    pub scope: &'static str,
    /// Msat used.
    pub used_msat: u64,
    /// The amount limit, if any.
    pub limit_msat: Option<u64>,
    /// Payments counted.
    pub used_count: u64,
    /// The count limit, if any.
    pub limit_count: Option<u64>,
}

impl WindowUse {
    /// The larger of the amount and count fractions used.
    pub fn fraction(&self) -> f64 {
        let a = self
            .limit_msat
            .filter(|l| *l > 0)
            .map(|l| self.used_msat as f64 / l as f64)
            .unwrap_or(0.0);
        let c = self
            .limit_count
            .filter(|l| *l > 0)
            .map(|l| self.used_count as f64 / l as f64)
            .unwrap_or(0.0);
        a.max(c)
    }
}

impl Core {
    /// Build the core over an open store.
    pub fn open(
        store: Store,
        policy: LoadedPolicy,
        approvals: ApprovalConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let engine = PolicyEngine::open(policy.policy.clone(), store.clone(), clock.now())?;
        let approvals = ApprovalStore::open(&store, approvals)?;
        Ok(Core {
            engine: Mutex::new(engine),
            policy_text: RwLock::new(policy),
            approvals,
            events: EventBus::default(),
            clock,
            node_id: RwLock::new(String::new()),
            node_connection: RwLock::new("not configured".into()),
            audit: std::sync::OnceLock::new(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            windows: crate::alerts::WindowWatch::default(),
            window_warn_fraction: RwLock::new(0.8),
        })
    }

    /// Record decisions and events in `audit` from now on. Decisions are then fail-closed: a
    /// decision whose audit record cannot be written is a refusal.
    pub fn attach_audit(&self, audit: Arc<crate::audit::AuditLog>) {
        self.events.attach_audit(audit.clone());
        let _ = self.audit.set(audit);
    }

    /// Every rolling window's use at `now`. With `all_destinations`, per-destination limits
    /// report their busiest destination (a scan of every destination ledger).
    pub fn window_usage(&self, now: u64, all_destinations: bool) -> Vec<WindowUse> {
        use crate::policy::{LedgerKey, LimitScope};
        self.with_engine(|engine| {
            let state = engine.state();
            engine
                .policy()
                .limits
                .iter()
                .filter_map(|l| {
                    let w = l.window_secs?;
                    let (scope, totals) = match &l.scope {
                        LimitScope::Node => ("node", state.totals(&LedgerKey::Node, now, w)),
                        LimitScope::Destinations(_) => (
                            "listed destinations",
                            state.totals(&LedgerKey::Group(l.tag.clone()), now, w),
                        ),
                        LimitScope::EachDestination if all_destinations => (
                            "busiest destination",
                            state
                                .ledgers()
                                .filter(|(k, _)| matches!(k, LedgerKey::Destination(_)))
                                .map(|(_, ledger)| ledger.totals(now, w))
                                .max_by_key(|t| t.amount_msat)
                                .unwrap_or_default(),
                        ),
                        LimitScope::EachDestination => return None,
                    };
                    Some(WindowUse {
                        tag: l.tag.clone(),
                        window_secs: w,
                        scope,
                        used_msat: u64::try_from(totals.amount_msat).unwrap_or(u64::MAX),
                        limit_msat: l.max_amount_msat,
                        used_count: totals.count,
                        limit_count: l.max_count,
                    })
                })
                .collect()
        })
    }

    /// The Prometheus exposition, with current gauges.
    pub fn render_metrics(&self) -> String {
        let now = self.clock.now();
        let pending = self
            .approvals
            .list_pending(now)
            .map(|l| l.len() as u64)
            .unwrap_or(0);
        let connected = self
            .node_connection
            .read()
            .map(|c| *c == "connected")
            .unwrap_or(false);
        let audit = self.audit.get().map(|a| a.len()).unwrap_or(0);
        let usage: Vec<(String, f64)> = self
            .window_usage(now, true)
            .iter()
            .map(|w| (w.tag.clone(), w.fraction()))
            .collect();
        self.metrics.render(pending, connected, audit, &usage)
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

    /// The audit log, when attached.
    pub fn audit(&self) -> Option<&Arc<crate::audit::AuditLog>> {
        self.audit.get()
    }

    /// Write a decision's audit record (unflushed: the decision's own flush covers it).
    fn audit_decision(
        &self,
        now: u64,
        req: &PaymentRequest,
        decision: &crate::policy::Decision,
        extra: serde_json::Value,
    ) -> Result<(), String> {
        let Some(audit) = self.audit.get() else {
            return Ok(());
        };
        let (verdict, reason) = match &decision.verdict {
            Verdict::Approve => ("approve", String::new()),
            Verdict::RequireQuorum { .. } => ("require-quorum", String::new()),
            Verdict::Deny { reason } => ("deny", reason.clone()),
        };
        let data = serde_json::json!({
            "request_digest": hex::encode(req.digest()),
            "kind": format!("{:?}", req.kind).to_lowercase(),
            "amount_msat": req.amount_msat(),
            "destinations": req.outputs.iter().map(|(d, v)| serde_json::json!({"destination": d.to_string(), "amount_msat": v})).collect::<Vec<_>>(),
            "verdict": verdict,
            "tags": decision.tags,
            "reason": reason,
            "warnings": decision.warnings.iter().map(|w| w.reason.clone()).collect::<Vec<_>>(),
            "policy_hash": hex::encode(decision.policy_hash),
            "extra": extra,
        });
        audit
            .append(now, "decision", data, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Flush the state database (see [`crate::store::Store::defer_flush`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.with_engine(|e| e.store().flush())
    }

    /// Let the caller flush once per request instead of flushing every decision.
    pub fn defer_flush(&self, defer: bool) {
        self.with_engine(|e| e.store().defer_flush(defer));
    }

    /// The policy in force.
    pub fn policy(&self) -> LoadedPolicy {
        self.policy_text
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace the policy in force. Governance (quorum-signed policy changes) calls this once a
    /// new file is approved; the velocity history carries over.
    pub fn set_policy(&self, policy: LoadedPolicy) -> Result<(), StoreError> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let store = engine.store().clone();
        *engine = PolicyEngine::open(policy.policy.clone(), store, self.clock.now())?;
        let hash = policy.policy.hash_hex();
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

    /// Run `f` with the policy engine (for status reports).
    pub fn with_engine<T>(&self, f: impl FnOnce(&PolicyEngine) -> T) -> T {
        f(&self.engine.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decide a payment, durably, without waiting for anyone. See the module docs.
    pub fn decide_payment(&self, req: &PaymentRequest, invoice: Option<String>) -> PaymentAnswer {
        let now = self.clock.now();
        let amount = req.amount_msat();
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let policy = engine.policy().clone();
        let decision = engine.evaluate(req, now);
        // Fail closed: no audit record, no approval. The record is flushed with the decision.
        if let Err(e) = self.audit_decision(now, req, &decision, serde_json::Value::Null) {
            return self.fail_closed_tag(
                "warden-audit-failure",
                &format!("the audit record could not be written: {e}"),
                amount,
            );
        }
        if let Err(e) = engine.commit(req, &decision, now) {
            return self.fail_closed(&format!("the decision could not be recorded: {e}"), amount);
        }
        // Warn-mode rules raise warnings; notes on other rules stay in the decision record.
        for w in decision
            .warnings
            .iter()
            .filter(|w| policy.is_warn_rule(&w.tag))
        {
            self.events.emit(
                now,
                EventKind::LimitWarning,
                "",
                std::slice::from_ref(&w.tag),
                w.reason.clone(),
                amount,
            );
        }
        match decision.verdict {
            Verdict::Approve => {
                self.metrics.decision("approve", &decision.tags);
                drop(engine);
                self.check_windows(now);
                self.events.emit(
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
                self.events.emit(
                    now,
                    EventKind::PaymentRefused,
                    "",
                    &decision.tags,
                    reason.clone(),
                    amount,
                );
                PaymentAnswer::refused(decision.tags, reason, None)
            }
            Verdict::RequireQuorum {
                rule_tag,
                quorum,
                expiry_secs,
                ..
            } => match self.approvals.consume(req, &policy, now) {
                Ok(Some(record)) => {
                    let approved = crate::policy::Decision {
                        verdict: Verdict::Approve,
                        tags: decision.tags.clone(),
                        warnings: vec![],
                        policy_hash: decision.policy_hash,
                    };
                    let extra = serde_json::json!({"approved_by_quorum": record.id, "approvers": record.approvers()});
                    if let Err(e) = self.audit_decision(now, req, &approved, extra) {
                        return self.fail_closed_tag(
                            "warden-audit-failure",
                            &format!("the audit record could not be written: {e}"),
                            amount,
                        );
                    }
                    if let Err(e) = engine.record_approved_spend(req, now, &decision.tags) {
                        return self.fail_closed(
                            &format!("the approved spend could not be recorded: {e}"),
                            amount,
                        );
                    }
                    self.metrics.decision("approve", &decision.tags);
                    drop(engine);
                    self.check_windows(now);
                    let msg = format!(
                        "payment of {} approved by quorum ({}) under request {}",
                        format_msat(amount),
                        record.approvers().join(", "),
                        record.id
                    );
                    self.events.emit(
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
                    self.metrics.decision("hold", &decision.tags);
                    match self.approvals.open_request(
                        req,
                        &rule_tag,
                        &decision.tags,
                        &quorum,
                        expiry_secs,
                        &policy,
                        invoice,
                        now,
                    ) {
                        Ok((record, created)) => {
                            let reason = format!(
                                "rule {rule_tag}: the payment of {} needs {} of [{}] to approve request {} (expires {})",
                                format_msat(amount),
                                quorum.need,
                                quorum.of.join(", "),
                                record.id,
                                crate::clock::format_utc(record.expires_at)
                            );
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
                            PaymentAnswer::refused(decision.tags, reason, Some(record.id))
                        }
                        Err(e) => self.fail_closed(
                            &format!("the approval request could not be stored: {e}"),
                            amount,
                        ),
                    }
                }
                Err(e) => {
                    if matches!(e, ApprovalError::Tampered { .. }) {
                        tracing::error!(error = %e, "refusing a payment whose approval does not verify");
                    }
                    self.events.emit(
                        now,
                        EventKind::PaymentRefused,
                        "",
                        &decision.tags,
                        e.to_string(),
                        amount,
                    );
                    PaymentAnswer::refused(decision.tags, e.to_string(), None)
                }
            },
        }
    }

    fn fail_closed(&self, why: &str, amount: u64) -> PaymentAnswer {
        self.fail_closed_tag("warden-store-failure", why, amount)
    }

    fn fail_closed_tag(&self, tag: &str, why: &str, amount: u64) -> PaymentAnswer {
        let tag = tag.to_string();
        self.metrics.decision("deny", std::slice::from_ref(&tag));
        if tag == "warden-audit-failure" {
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
