//! Governed policy changes, as the core runs them. A proposal is checked and classified
//! against the policy in force and opened as an approval request for the governance quorum of
//! the policy in force (never the proposed one's). When the quorum signs, a change that only
//! tightens takes effect in the same commit as the last signature; one that loosens anything
//! waits its delay (any single admin may veto it meanwhile) and then takes effect in the sweep.
//! Taking effect writes the new version to the policy history, consumes the request and audits
//! both in one commit; the in-memory policy changes with it (the next request, which runs after
//! this one, decides under the new policy), and a discarded transaction puts the old one back.

use super::{Core, LoadedPolicy};
use crate::approval::{ApprovalError, ApprovalRecord, ChangeOutcome, PolicyChange};
use crate::events::EventKind;
use crate::governance::{classify, loosens, PolicyHistory, PolicyVersion};
use crate::policy::units::format_duration;
use crate::policy::{parse_policy_for, PolicyError};
use crate::store::StoreError;
use lightning_signer::bitcoin::hashes::Hash;
use std::sync::Arc;

/// Why a proposal was not opened.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    /// The file does not load; every problem is listed.
    #[error("the proposed policy has {} problem(s); the policy in force stays:\n{}", .0.len(), render(.0))]
    Invalid(Vec<PolicyError>),
    /// The file is the policy in force.
    #[error("the proposed policy is the policy in force ({0}); there is nothing to change")]
    Unchanged(String),
    /// The policy in force names nobody who could approve a change.
    #[error("the policy in force has no governance quorum (it declares no admin), so no change can be approved; a policy with admins needs a new data directory")]
    NoQuorum,
    /// The audit record could not be written, so nothing was opened.
    #[error("the audit record of the proposal could not be written ({0}); nothing was proposed. Check the HSM (wardenctl hsm status) and propose again")]
    Audit(String),
    /// The approval store refused.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `LINE:COL: message`, one line per problem (the caller knows the file name).
fn render(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An opened (or already open) proposal.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The policy-change request.
    pub record: ApprovalRecord,
    /// Whether this call opened it.
    pub created: bool,
    /// A sentence for the proposer.
    pub message: String,
}

impl Core {
    /// Propose `text` as the next policy, on behalf of `proposer`. A file that does not load is
    /// refused with every problem (in the error, the log and an event), and the policy in force
    /// stays; a valid one opens a policy-change request (or returns the open one for the same
    /// file), announced on the event stream.
    pub fn propose_policy(&self, text: &str, proposer: &str) -> Result<Proposal, GovernanceError> {
        let now = self.clock.now();
        let current = self.policy();
        let new = match parse_policy_for(text, current.policy.network) {
            Ok(p) => p,
            Err(errors) => {
                let e = GovernanceError::Invalid(errors);
                tracing::warn!(%proposer, "policy proposal refused: {e}");
                self.events.emit(
                    now,
                    EventKind::Policy,
                    "",
                    &[],
                    format!("a policy proposed by {proposer} was refused: {e}"),
                    0,
                );
                return Err(e);
            }
        };
        if new.hash == current.policy.hash {
            return Err(GovernanceError::Unchanged(new.hash_hex()));
        }
        let governance = &current.policy.governance;
        if governance.quorum.need == 0 {
            return Err(GovernanceError::NoQuorum);
        }
        let changes = classify(&current.policy, &new);
        let loosen = loosens(&changes);
        let change = PolicyChange {
            hash: new.hash_hex(),
            text: text.to_string(),
            changes,
            loosens: loosen,
            delay_secs: if loosen {
                governance.loosen_delay_secs
            } else {
                0
            },
            proposer: proposer.to_string(),
        };
        let txn = self.store.begin()?;
        let (record, created) = self
            .approvals
            .open_policy_change(change, &current.policy, now)?;
        let Some(change) = record.change.as_ref() else {
            return Err(GovernanceError::Approval(ApprovalError::Tampered {
                id: record.id.clone(),
                detail: "the policy-change index names a request that is not a policy change"
                    .into(),
            }));
        };
        let effect = if change.loosens {
            format!(
                "it loosens the policy, so once approved it waits {} during which any admin can veto it",
                format_duration(change.delay_secs)
            )
        } else {
            "it only tightens, so it takes effect when the quorum signs".to_string()
        };
        let message = format!(
            "policy change {} to {} ({} change(s)); {effect}; it needs {} of {} by {}",
            record.id,
            change.hash,
            change.changes.len(),
            record.need,
            record.of.join(", "),
            crate::clock::format_utc(record.expires_at)
        );
        if created {
            let data = serde_json::json!({
                "request_id": record.id,
                "proposer": proposer,
                "hash": change.hash,
                "loosens": change.loosens,
                "delay_secs": change.delay_secs,
                "changes": change.changes,
                "policy_hash": record.policy_hash,
            });
            if let Err(e) = self.audit.append(now, "policy-proposal", data) {
                drop(txn);
                self.reload();
                return Err(GovernanceError::Audit(e.to_string()));
            }
            self.events.emit(
                now,
                EventKind::Policy,
                &record.id,
                &record.tags,
                format!("{proposer} proposed {message}"),
                0,
            );
        }
        if let Err(e) = txn.commit() {
            self.reload();
            return Err(e.into());
        }
        Ok(Proposal {
            record,
            created,
            message,
        })
    }

    /// Every policy that was in force, oldest first.
    pub fn policy_history(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        PolicyHistory::new(&self.store).all()
    }

    /// Put the oldest approved change whose delay is over in force, inside the open
    /// transaction. One per transaction: a second one was approved under the policy the first
    /// replaces, so it is void, and the next call (after the swap) finds that out.
    pub(super) fn apply_due_change(&self, now: u64) -> Result<(), ApprovalError> {
        let Some(record) = self.approvals.due_changes(now)?.into_iter().next() else {
            return Ok(());
        };
        let current = self.policy();
        let Some(change) = record.change.clone() else {
            return Ok(());
        };
        let outcome = match self
            .approvals
            .consume_change(&record.id, &current.policy, now)
        {
            Err(e @ ApprovalError::Tampered { .. }) => {
                // Never in force, and never tried again: the admins hear why.
                let r = self.approvals.void_change(&record.id)?;
                tracing::error!(request = %r.id, "an approved policy change does not verify: {e}");
                self.events.emit(
                    now,
                    EventKind::Policy,
                    &r.id,
                    &r.tags,
                    format!("policy change {} does not take effect: {e}", r.id),
                    0,
                );
                return Ok(());
            }
            other => other?,
        };
        match outcome {
            ChangeOutcome::Void(r) => {
                self.events.emit(
                    now,
                    EventKind::Policy,
                    &r.id,
                    &r.tags,
                    format!(
                        "policy change {} is void: it was approved under policy {}, and {} is in force now; propose it again",
                        r.id,
                        r.policy_hash,
                        current.policy.hash_hex()
                    ),
                    0,
                );
                Ok(())
            }
            ChangeOutcome::InForce(r, approvers) => {
                let policy = match parse_policy_for(&change.text, current.policy.network) {
                    Ok(p) => p,
                    Err(errors) => {
                        // It loaded when proposed; a rule this version reads differently must
                        // not slip in half-understood.
                        let r = self.approvals.void_change(&r.id)?;
                        self.events.emit(
                            now,
                            EventKind::Policy,
                            &r.id,
                            &r.tags,
                            format!(
                                "policy change {} does not take effect: the approved file no longer loads:\n{}",
                                r.id,
                                render(&errors)
                            ),
                            0,
                        );
                        return Ok(());
                    }
                };
                self.install_policy(
                    policy,
                    change.text,
                    &r,
                    &approvers,
                    change.changes,
                    &change.proposer,
                    now,
                )?;
                Ok(())
            }
        }
    }

    /// Put `policy` (loaded from `text`) in force, inside the open transaction: the history
    /// version, its audit record and event; the in-memory policy changes once the commit is
    /// durable. `record` is the request that made it (a policy change or a recovery action).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install_policy(
        &self,
        policy: crate::policy::Policy,
        text: String,
        record: &ApprovalRecord,
        approvers: &[String],
        changes: Vec<crate::governance::Change>,
        proposer: &str,
        now: u64,
    ) -> Result<(), ApprovalError> {
        let current = self.policy();
        let hash = policy.hash_hex();
        let anchor_hash = policy.hash;
        let recorded = PolicyHistory::new(&self.store).record(PolicyVersion {
            seq: 0,
            hash: hash.clone(),
            text: text.clone(),
            request_id: Some(record.id.clone()),
            approved_by: approvers.to_vec(),
            proposed_at: record.created_at,
            took_effect_at: now,
            changes,
            proof: serde_json::to_value(record).ok(),
        })?;
        // The HSM remembers the newest version put in force, once it is committed: a history
        // deleted or cut back behind it is refused at the next start.
        self.audit
            .anchor_policy_after_commit(crate::hsm::PolicyAnchor {
                version: recorded.seq,
                hash: anchor_hash,
            });
        let data = serde_json::json!({
            "request_id": record.id,
            "hash": hash,
            "previous": current.policy.hash_hex(),
            "approved_by": approvers,
            "proposer": proposer,
        });
        self.audit
            .append(now, "policy-in-force", data)
            .map_err(|e| ApprovalError::Audit(e.to_string()))?;
        self.events.emit(
            now,
            EventKind::Policy,
            &record.id,
            &record.tags,
            format!(
                "policy {hash} is now in force ({} {}, proposed by {proposer}, approved by {}); it replaces {}",
                record.kind.name(),
                record.id,
                approvers.join(", "),
                current.policy.hash_hex()
            ),
            0,
        );
        let loaded = LoadedPolicy {
            policy: Arc::new(policy),
            text,
        };
        // In force for the next request at once (it runs after this one under the store's
        // writer slot); the committed copy follows when the batch is applied (so an abort of the next
        // transaction, while this one waits for its sync, cannot undo it), and a discarded one puts
        // the old policy back.
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .with_policy(loaded.policy.clone());
        *self.policy_text.write().unwrap_or_else(|p| p.into_inner()) = loaded.clone();
        let committed = self.committed.clone();
        self.store.after_apply(move || committed.set_policy(loaded));
        Ok(())
    }
}

/// Check the policy history against the HSM's policy anchor (and the audit log) before anything
/// is put in force: a history that does not hold the version the token last saw in force was
/// deleted or cut back (an attacker with the database putting an older, once approved, policy
/// back in force, or the file on disk through a "first start"); a state that holds an audit
/// log but no history is not a first start either. The message says what to do.
pub fn check_policy_anchor(
    store: &crate::store::Store,
    anchor: Option<&crate::hsm::PolicyAnchor>,
) -> Result<(), String> {
    let versions = PolicyHistory::new(store).all().map_err(|e| e.to_string())?;
    if let Some(a) = anchor {
        let hash = hex::encode(a.hash);
        if !versions
            .iter()
            .any(|v| v.seq == a.version && v.hash == hash)
        {
            return Err(format!(
                "the policy history in the state database does not hold version {} ({hash}), which this HSM token saw in force: the history was deleted or cut back. Restore the data directory from a backup that reaches it; wardend will not put an older or unapproved policy in force",
                a.version
            ));
        }
    }
    if versions.is_empty() {
        let records = store
            .last(crate::store::Namespace::Audit, b"r")
            .map_err(|e| e.to_string())?;
        if records.is_some() {
            return Err("the state database holds an audit log but no policy history: the history was deleted, and this is not a first start (the file on disk is only ever a proposal). Restore the data directory from a backup".into());
        }
    }
    Ok(())
}

/// Why the policy history in the state database cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[error("the policy history in the state database does not verify at version {seq} ({hash}): {detail}. The database was altered or damaged; restore the data directory from a backup (wardend will not run on a policy nobody approved)")]
pub struct HistoryError {
    /// The version that fails.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// What is wrong.
    pub detail: String,
}

/// The policy in force, after checking the whole history: every version's text hashes to its
/// hash, and every version after the first was approved under the one before it (its
/// governance quorum's signatures, or its recovery key's), verified again from the record
/// stored with it. The first version is trusted as the operator's own.
pub fn verified_policy_in_force(
    store: &crate::store::Store,
    network: lightning_signer::bitcoin::Network,
) -> Result<Option<PolicyVersion>, HistoryError> {
    let versions = PolicyHistory::new(store).all().map_err(|e| HistoryError {
        seq: 0,
        hash: String::new(),
        detail: e.to_string(),
    })?;
    let mut previous: Option<crate::policy::Policy> = None;
    for v in &versions {
        let fail = |detail: String| HistoryError {
            seq: v.seq,
            hash: v.hash.clone(),
            detail,
        };
        let text_hash = hex::encode(
            lightning_signer::bitcoin::hashes::sha256::Hash::hash(v.text.as_bytes())
                .to_byte_array(),
        );
        if text_hash != v.hash {
            return Err(fail(format!("its text hashes to {text_hash}")));
        }
        let policy = parse_policy_for(&v.text, network)
            .map_err(|e| fail(format!("its text does not load:\n{}", render(&e))))?;
        if let Some(prev) = &previous {
            let record: ApprovalRecord = v
                .proof
                .clone()
                .ok_or_else(|| fail("it carries no approval record".into()))
                .and_then(|p| {
                    serde_json::from_value(p)
                        .map_err(|e| fail(format!("its approval record does not decode: {e}")))
                })?;
            let approves_this = match (&record.change, &record.recovery) {
                (Some(c), _) => c.hash == v.hash,
                (_, Some(r)) => r.params_hash == v.hash,
                _ => false,
            };
            if !approves_this {
                return Err(fail(format!(
                    "its approval record {} approves another policy",
                    record.id
                )));
            }
            crate::approval::verify_approved_under(&record, prev)
                .map_err(|e| fail(format!("its approval does not verify: {e}")))?;
        }
        previous = Some(policy);
    }
    Ok(versions.into_iter().last())
}
