//! The freeze and the emergency stops, as the core runs them (see [`crate::recovery`]).
//!
//! Freezing is one admin's call, or an emergency stop's, and takes effect with its commit;
//! lifting it is an approval request for the governance quorum, bound to that freeze, and
//! takes effect with the last signature. While frozen, [`Core::decide_payment`] refuses every
//! payment and on-chain spend with `warden-frozen`; nothing else the node asks is affected.

use super::Core;
use crate::approval::{ApprovalError, ApprovalRecord};
use crate::events::EventKind;
use crate::recovery::{FreezeState, FreezeStore, Trigger};
use crate::store::StoreError;
use crate::tags::{EMERGENCY_STOP, FROZEN};

/// Why an unfreeze request was not opened.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// Nothing to lift.
    #[error("the signer is not frozen; there is nothing to lift")]
    NotFrozen,
    /// The member named is not one this fleet's policy admits, or this wardend is not in a
    /// fleet.
    #[error("{0}")]
    NotMember(String),
    /// The policy in force names nobody who could approve.
    #[error("the policy in force has no governance quorum, so the freeze cannot be lifted by admins; use the recovery key")]
    NoQuorum,
    /// The audit record could not be written.
    #[error("the audit record of the request could not be written ({0}); nothing was opened. Check the HSM (wardenctl hsm status) and ask again")]
    Audit(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An opened (or already open) unfreeze request.
#[derive(Debug, Clone)]
pub struct UnfreezeRequest {
    /// The request.
    pub record: ApprovalRecord,
    /// Whether this call opened it.
    pub created: bool,
    /// A sentence for the admin.
    pub message: String,
}

impl Core {
    /// The freeze in force, if the signer is frozen.
    pub fn frozen(&self) -> Option<FreezeState> {
        self.frozen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Freeze the signer on behalf of `by` (an admin), at once: from this call's commit on,
    /// every payment and on-chain spend is refused with `warden-frozen`. Returns the freeze in
    /// force and whether this call made it (a signer already frozen stays frozen as it was).
    pub fn freeze(&self, by: &str, reason: &str) -> Result<(FreezeState, bool), StoreError> {
        self.freeze_as(by, reason, &[FROZEN.to_string()], None)
    }

    /// In a fleet: freeze one member's node alone, on behalf of `by`; the others go on. Its
    /// wardend refuses from its next request on; lifting it takes the governance quorum.
    pub fn freeze_member(
        &self,
        by: &str,
        reason: &str,
        member: &str,
    ) -> Result<(FreezeState, bool), FreezeError> {
        if self.fleet_member_name().is_none() {
            return Err(FreezeError::NotMember(
                "this wardend is not a fleet member: freeze the signer itself (no --member)".into(),
            ));
        }
        let admitted = self.policy().policy.fleet_members.clone();
        if !admitted.contains_key(member) {
            return Err(FreezeError::NotMember(format!(
                "\"{member}\" is not a member the fleet's policy admits; its [fleet.members] lists {}",
                admitted.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(self.freeze_as(by, reason, &[FROZEN.to_string()], Some(member.to_string()))?)
    }

    /// This wardend's name in its fleet, if it is in one.
    pub(super) fn fleet_member_name(&self) -> Option<String> {
        self.fleet_member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, m)| m.clone())
    }

    /// Whether a freeze kept for `member` (`None`: everyone) stops this wardend.
    pub(super) fn stops_here(&self, member: Option<&str>) -> bool {
        member.is_none() || member == self.fleet_member_name().as_deref()
    }

    fn freeze_as(
        &self,
        by: &str,
        reason: &str,
        tags: &[String],
        member: Option<String>,
    ) -> Result<(FreezeState, bool), StoreError> {
        let now = self.clock.now();
        let freezes = FreezeStore::new(&self.store);
        self.store.write(|| {
            if self.store.is_fleet() && self.store.holds_fleet_lock() {
                // Wait for every member deciding within its share to commit: once the freeze is
                // answered, no approval that did not see it lands after it.
                self.store.lock_grants()?;
            }
            if let Some(f) = freezes.get_at(member.as_deref())? {
                return Ok((f, false));
            }
            let mut state = FreezeState::new(now, by, reason)?;
            state.member = member.clone();
            freezes.put(&state)?;
            let data = serde_json::json!({
                "by": by, "reason": reason, "since": now, "freeze_id": hex::encode(state.id()),
                "member": member,
            });
            // The freeze must hold even when the audit log cannot take its record (an audit
            // failure may be the very reason): it is logged and announced either way.
            if let Err(e) = self.audit.append(now, "freeze", data) {
                tracing::error!(error = %e, "the freeze's audit record could not be written; the signer freezes anyway");
            }
            let msg = match &member {
                None => format!(
                    "the signer is frozen by {by}: {reason}. Payments and on-chain spends are refused until the governance quorum lifts it (wardenctl unfreeze)"
                ),
                Some(m) => format!(
                    "fleet member {m} is frozen by {by}: {reason}. Its payments and on-chain spends are refused until the governance quorum lifts it (wardenctl unfreeze --member {m}); the other members go on"
                ),
            };
            tracing::warn!("{msg}");
            self.events.emit(now, EventKind::Freeze, "", tags, msg, 0);
            // Frozen for the next request at once (everyone's freeze wins over a member's); a
            // discarded transaction thaws it again.
            if self.stops_here(member.as_deref()) && (member.is_none() || self.frozen().is_none()) {
                *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = Some(state.clone());
                let (committed, state2) = (self.committed.clone(), state.clone());
                self.store
                    .after_apply(move || committed.set_frozen(Some(state2)));
            }
            Ok((state, true))
        })
    }

    /// The freeze is lifted in the open transaction: in memory at once, committed with it; the
    /// emergency stops count afresh.
    pub(super) fn thaw(&self) {
        // In a fleet, a member's own freeze may still hold after everyone's is lifted (or the
        // other way round): what stays in force is what the open transaction leaves stored.
        let left = FreezeStore::new(&self.store)
            .in_force_for(self.fleet_member_name().as_deref())
            .ok()
            .flatten();
        *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = left.clone();
        *self.emergency.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
        let committed = self.committed.clone();
        self.store.after_apply(move || committed.set_frozen(left));
    }

    /// Put the recovery key's `sweep` in force, in the open transaction: the signer is frozen
    /// (if it was not) and on-chain spends to the recovery destination pass.
    ///
    /// In a fleet, `member` puts one member alone in sweep mode (its own freeze).
    pub(super) fn sweep_mode(&self, member: Option<String>) -> Result<(), StoreError> {
        let now = self.clock.now();
        let freezes = FreezeStore::new(&self.store);
        let mut f = match freezes.get_at(member.as_deref())? {
            Some(f) => f,
            None => {
                let mut f = FreezeState::new(now, "recovery sweep", "the recovery key's sweep")?;
                f.member = member.clone();
                f
            }
        };
        f.sweep = true;
        freezes.put(&f)?;
        // In force here if it stops this wardend and no freeze of everyone is (everyone's
        // freeze wins, as it stops more).
        if self.stops_here(member.as_deref()) && (member.is_none() || freezes.get()?.is_none()) {
            *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
            let committed = self.committed.clone();
            self.store
                .after_apply(move || committed.set_frozen(Some(f)));
        }
        Ok(())
    }

    /// An emergency stop's condition was met: freeze, naming the condition.
    pub(super) fn trip(&self, trigger: Trigger) {
        if self.frozen().is_some() {
            return;
        }
        if self.store.holds_share() {
            // Within a share the fleet's freeze cannot be written: the next decision takes the
            // fleet's lock and records it (see `escrow`).
            tracing::warn!(condition = trigger.condition, "an emergency stop was met within this member's share; the next decision records the freeze");
            *self.pending_trip.lock().unwrap_or_else(|p| p.into_inner()) = Some(trigger);
            return;
        }
        self.trip_now(trigger);
    }

    /// Write an emergency stop's freeze now; one that cannot be written (the database, a
    /// member holding its share past the lock's timeout) is kept for the next decision.
    pub(super) fn trip_now(&self, trigger: Trigger) {
        let by = format!("emergency stop {}", trigger.condition);
        let tags = [EMERGENCY_STOP.to_string(), trigger.condition.to_string()];
        if let Err(e) = self.freeze_as(&by, &trigger.reason, &tags, None) {
            tracing::error!(error = %e, condition = trigger.condition, "an emergency stop could not record its freeze; the next decision tries again");
            *self.pending_trip.lock().unwrap_or_else(|p| p.into_inner()) = Some(trigger);
        }
    }

    /// An admin API authentication failed (the emergency stop `auth_failures` counts them).
    pub fn note_auth_failure(&self) {
        let stops = self.policy().policy.emergency;
        let trigger = self
            .emergency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .auth_failure(self.clock.now(), &stops);
        if let Some(t) = trigger {
            self.trip(t);
        }
    }

    /// A payment was refused (the emergency stop `refusals` counts them).
    pub(super) fn note_refusal(&self, now: u64) {
        let stops = self.policy().policy.emergency;
        let trigger = self
            .emergency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refusal(now, &stops);
        if let Some(t) = trigger {
            self.trip(t);
        }
    }

    /// The audit log or the HSM failed (the emergency stop `audit_failure`).
    pub(super) fn note_audit_failure(&self, detail: &str) {
        let stops = self.policy().policy.emergency;
        let trigger = self
            .emergency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .audit_failure(detail, &stops);
        if let Some(t) = trigger {
            self.trip(t);
        }
    }

    /// A window is at `fraction` of its limit after an approval (`window_percent`).
    pub(super) fn note_window(&self, tag: &str, fraction: f64) {
        let stops = self.policy().policy.emergency;
        let trigger = self
            .emergency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .window(tag, fraction, &stops);
        if let Some(t) = trigger {
            self.trip(t);
        }
    }

    /// Ask the governance quorum to lift the freeze in force, on behalf of `proposer`.
    pub fn request_unfreeze(&self, proposer: &str) -> Result<UnfreezeRequest, FreezeError> {
        // The freeze this wardend enforces: in a fleet, one the database reads as lifted
        // without the quorum is still in force here (see `Core::sync_fleet`), and it is the
        // one the quorum lifts.
        let freeze = match self.frozen() {
            Some(f) => f,
            None => FreezeStore::new(&self.store)
                .get()?
                .ok_or(FreezeError::NotFrozen)?,
        };
        self.request_unfreeze_of(proposer, freeze)
    }

    /// In a fleet: ask the governance quorum to lift the freeze of member `member` alone.
    pub fn request_member_unfreeze(
        &self,
        proposer: &str,
        member: &str,
    ) -> Result<UnfreezeRequest, FreezeError> {
        let freeze = FreezeStore::new(&self.store)
            .get_at(Some(member))?
            .ok_or(FreezeError::NotFrozen)?;
        self.request_unfreeze_of(proposer, freeze)
    }

    fn request_unfreeze_of(
        &self,
        proposer: &str,
        freeze: FreezeState,
    ) -> Result<UnfreezeRequest, FreezeError> {
        let now = self.clock.now();
        let policy = self.policy().policy;
        if policy.governance.quorum.need == 0 {
            return Err(FreezeError::NoQuorum);
        }
        let txn = self.store.begin()?;
        let (record, created) = self.approvals.open_unfreeze(&freeze, &policy, now)?;
        let message = format!(
            "request {} lifts the freeze of {} by {}; it needs {} of {} by {}",
            record.id,
            crate::clock::format_utc(freeze.since),
            freeze.by,
            record.need,
            record.of.join(", "),
            crate::clock::format_utc(record.expires_at)
        );
        if created {
            let data = serde_json::json!({
                "request_id": record.id, "proposer": proposer, "freeze_id": hex::encode(freeze.id()),
            });
            if let Err(e) = self.audit.append(now, "unfreeze-request", data) {
                drop(txn);
                self.reload();
                return Err(FreezeError::Audit(e.to_string()));
            }
            self.events.emit(
                now,
                EventKind::Freeze,
                &record.id,
                &record.tags,
                format!("{proposer} asks to lift the freeze: {message}"),
                0,
            );
        }
        if let Err(e) = txn.commit() {
            self.reload();
            return Err(e.into());
        }
        Ok(UnfreezeRequest {
            record,
            created,
            message,
        })
    }

    /// An unfreeze request reached its quorum: lift the freeze it names, inside the open
    /// transaction, once its signatures verify again. A request for a freeze that is no longer
    /// the one in force is void: `Ok(false)`, nothing changed.
    pub(super) fn apply_unfreeze(
        &self,
        record: &ApprovalRecord,
        now: u64,
    ) -> Result<bool, ApprovalError> {
        let policy = self.policy().policy;
        let (record, approvers) = self.approvals.consume_unfreeze(&record.id, &policy, now)?;
        let freezes = FreezeStore::new(&self.store);
        let target = record.unfreeze.as_ref().map(|f| f.id());
        let at = record.unfreeze.as_ref().and_then(|f| f.member.clone());
        // The freeze in force is the one this wardend enforces (see `request_unfreeze`), or,
        // for another fleet member's, the one kept for it.
        let in_force = match self.frozen() {
            Some(f) if f.id() == target.unwrap_or_default() => Some(f),
            _ => freezes.get_at(at.as_deref())?,
        };
        if in_force.map(|f| f.id()) != target {
            self.events.emit(
                now,
                EventKind::Freeze,
                &record.id,
                &record.tags,
                format!(
                    "unfreeze request {} names a freeze that is no longer in force; nothing changes",
                    record.id
                ),
                0,
            );
            return Ok(false);
        }
        freezes.clear_at(at.as_deref())?;
        let data = serde_json::json!({
            "request_id": record.id, "approved_by": approvers,
            "freeze_id": target.map(hex::encode), "member": at,
        });
        self.audit
            .append(now, "unfreeze", data)
            .map_err(|e| ApprovalError::Audit(e.to_string()))?;
        self.events.emit(
            now,
            EventKind::Freeze,
            &record.id,
            &record.tags,
            format!(
                "the freeze{} is lifted (request {}, approved by {}); payments are decided again",
                at.as_deref()
                    .map(|m| format!(" of fleet member {m}"))
                    .unwrap_or_default(),
                record.id,
                approvers.join(", ")
            ),
            0,
        );
        if self.stops_here(at.as_deref()) {
            self.thaw();
        }
        Ok(true)
    }
}
