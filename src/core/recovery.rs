//! Timelocked recovery, as the core runs it. The policy names a recovery key held offline and a
//! delay. An action (replace-admins, unfreeze) is opened, signed by the recovery key, and then
//! announced at once; it becomes executable only after the delay, measured in Warden's time
//! (which never goes back), and any admin quorum may cancel it meanwhile. Executing it re-checks
//! the recovery key's signature against the policy in force and performs the action in one
//! commit.

use super::Core;
use crate::approval::{
    ApprovalError, ApprovalRecord, RecoveryAction, SignatureFormat, RECOVERY_KEY,
};
use crate::events::EventKind;
use crate::governance::{classify, About};
use crate::policy::{parse_policy_for, RecoveryKind};
use crate::recovery::FreezeStore;
use crate::store::StoreError;
use lightning_signer::bitcoin::hashes::{sha256, Hash};

/// Why a recovery action could not be opened, started or executed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The policy in force names no recovery key.
    #[error("the policy in force has no [recovery] section, so there is no recovery key; declare one with a governed policy change")]
    NoRecoveryKey,
    /// The policy does not allow this action.
    #[error("the policy's [recovery] does not allow \"{0}\"; its actions are: {1}")]
    NotAllowed(&'static str, String),
    /// replace-admins needs a policy that loads.
    #[error("the new policy for replace-admins does not load:\n{0}")]
    Invalid(String),
    /// replace-admins may change admins and quorums only.
    #[error("replace-admins may change only the admins and their quorums; this policy also changes: {0}. Propose rule changes with wardenctl policy propose")]
    ChangesRules(String),
    /// sweep without a destination.
    #[error("the policy's [recovery] names no `destination`, so there is nowhere to sweep to")]
    NoDestination,
    /// The policy counts blocks, and no chain height is known.
    #[error("the policy's recovery delay counts blocks (recovery.delay_blocks), but wardend knows no chain height yet; connect the node (it feeds blocks) and start again")]
    NoChain,
    /// unfreeze with nothing frozen.
    #[error("the signer is not frozen; there is nothing to unfreeze")]
    NotFrozen,
    /// unfreeze of one member that is not frozen alone.
    #[error("fleet member {0} is not frozen alone; there is nothing to unfreeze for it (a freeze of the whole fleet is lifted without --member)")]
    MemberNotFrozen(String),
    /// A member named where none can be, or one the policy does not admit.
    #[error("{0}")]
    Member(String),
    /// The audit record could not be written.
    #[error("the audit record could not be written ({0}); nothing changed. Check the HSM (wardenctl hsm status) and try again")]
    Audit(String),
    /// The approval store refused.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Core {
    /// Started recovery actions not yet executed or cancelled, one line each (for `status`).
    pub fn recovery_lines(&self, now: u64) -> Vec<String> {
        self.approvals
            .list_started_recoveries(now)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let a = r.recovery.as_ref()?;
                Some(format!(
                    "{} {} started {}, executable from {}{}",
                    r.id,
                    a.action.as_str(),
                    crate::clock::format_utc(a.started_at.unwrap_or(0)),
                    crate::clock::format_utc(a.earliest_at),
                    if now >= a.earliest_at {
                        " (executable now)"
                    } else {
                        ""
                    }
                ))
            })
            .collect()
    }

    /// Open `action` for the recovery key to sign (replace-admins carries the new policy's
    /// `text`). Nothing is announced until the key signs it.
    ///
    /// In a fleet, a sweep or an unfreeze applies to the whole fleet, or with `member` to that
    /// one member alone (its own freeze); replace-admins changes the fleet's one policy.
    pub fn open_recovery(
        &self,
        action: RecoveryKind,
        text: Option<String>,
        member: Option<String>,
    ) -> Result<(ApprovalRecord, bool), RecoveryError> {
        let now = self.clock.now();
        let current = self.policy();
        let recovery = current
            .policy
            .recovery
            .as_ref()
            .ok_or(RecoveryError::NoRecoveryKey)?;
        if !recovery.actions.contains(&action) {
            let allowed: Vec<&str> = recovery.actions.iter().map(|a| a.as_str()).collect();
            return Err(RecoveryError::NotAllowed(
                action.as_str(),
                allowed.join(", "),
            ));
        }
        if let Some(m) = &member {
            self.recovery_member(action, m, &current.policy)?;
        }
        let params = match action {
            RecoveryKind::ReplaceAdmins => {
                let text = text.unwrap_or_default();
                let new = parse_policy_for(&text, current.policy.network).map_err(|errors| {
                    RecoveryError::Invalid(
                        errors
                            .iter()
                            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    )
                })?;
                let changes = classify(&current.policy, &new);
                let rules: Vec<String> = changes
                    .iter()
                    .filter(|c| c.about == About::Rules)
                    .map(|c| c.to_string())
                    .collect();
                if !rules.is_empty() {
                    return Err(RecoveryError::ChangesRules(rules.join("; ")));
                }
                RecoveryAction {
                    action,
                    params_hash: new.hash_hex(),
                    text: Some(text),
                    freeze: None,
                    changes,
                    earliest_at: 0,
                    started_at: None,
                    started_height: None,
                    member: None,
                }
            }
            RecoveryKind::Sweep => {
                let dest = recovery
                    .destination
                    .as_ref()
                    .ok_or(RecoveryError::NoDestination)?;
                RecoveryAction {
                    action,
                    params_hash: with_member(
                        sha256::Hash::hash(dest.descriptor.as_bytes()).to_byte_array(),
                        member.as_deref(),
                    ),
                    text: Some(dest.descriptor.clone()),
                    freeze: None,
                    changes: Vec::new(),
                    earliest_at: 0,
                    started_at: None,
                    started_height: None,
                    member: member.clone(),
                }
            }
            RecoveryKind::Unfreeze => {
                let freeze = FreezeStore::new(&self.store)
                    .get_at(member.as_deref())?
                    .ok_or_else(|| match &member {
                        Some(m) => RecoveryError::MemberNotFrozen(m.clone()),
                        None => RecoveryError::NotFrozen,
                    })?;
                RecoveryAction {
                    action,
                    params_hash: with_member(freeze.id(), member.as_deref()),
                    text: None,
                    freeze: Some(freeze),
                    changes: Vec::new(),
                    earliest_at: 0,
                    started_at: None,
                    started_height: None,
                    member: member.clone(),
                }
            }
        };
        Ok(self.approvals.open_recovery(params, &current.policy, now)?)
    }

    /// The recovery key's signature over an opened action: it starts, and is announced at
    /// once (event, webhook, `status`), so the admins have the whole delay to react.
    pub fn start_recovery(
        &self,
        id: &str,
        format: SignatureFormat,
        signature: &[u8],
    ) -> Result<ApprovalRecord, RecoveryError> {
        let now = self.clock.now();
        let policy = self.policy().policy;
        let txn = self.store.begin()?;
        let counts_blocks = policy.recovery.as_ref().is_some_and(|r| r.delay_blocks > 0);
        let height = self.chain_height();
        if counts_blocks && height.is_none() {
            return Err(RecoveryError::NoChain);
        }
        let record = self
            .approvals
            .start_recovery(id, format, signature, &policy, now, height)?;
        let action = record.recovery.as_ref().expect("a recovery action");
        let data = serde_json::json!({
            "request_id": record.id,
            "action": action.action.as_str(),
            "params_hash": action.params_hash,
            "member": action.member,
            "earliest_at": action.earliest_at,
            "signature": hex::encode(signature),
        });
        if let Err(e) = self.audit.append(now, "recovery-start", data) {
            drop(txn);
            self.reload();
            return Err(RecoveryError::Audit(e.to_string()));
        }
        self.events.emit(
            now,
            EventKind::Recovery,
            &record.id,
            &record.tags,
            format!(
                "RECOVERY STARTED: the recovery key started {}{} ({}); it becomes executable at {} unless {} of {} cancel it (wardenctl recovery cancel {})",
                action.action.as_str(),
                action
                    .member
                    .as_deref()
                    .map(|m| format!(" of fleet member {m} alone"))
                    .unwrap_or_default(),
                record.id,
                crate::clock::format_utc(action.earliest_at),
                record.need,
                record.of.join(", "),
                record.id
            ),
            0,
        );
        if let Err(e) = txn.commit() {
            self.reload();
            return Err(e.into());
        }
        Ok(record)
    }

    /// Execute a started recovery action whose delay is over, in one commit.
    pub fn execute_recovery(&self, id: &str) -> Result<String, RecoveryError> {
        let now = self.clock.now();
        let txn = self.store.begin()?;
        // Read under the transaction slot: a governed change committed while this call waited
        // for it is the policy the action is checked against.
        let current = self.policy();
        let result = self.execute_in(id, &current.policy, now);
        let message = match result {
            Ok(m) => m,
            Err(e) => {
                drop(txn);
                self.reload();
                return Err(e);
            }
        };
        if let Err(e) = txn.commit() {
            self.reload();
            return Err(e.into());
        }
        Ok(message)
    }

    fn execute_in(
        &self,
        id: &str,
        policy: &crate::policy::Policy,
        now: u64,
    ) -> Result<String, RecoveryError> {
        let record = self
            .approvals
            .consume_recovery(id, policy, now, self.chain_height())?;
        let action = record.recovery.clone().expect("a recovery action");
        let approvers = vec![RECOVERY_KEY.to_string()];
        let message = match action.action {
            RecoveryKind::ReplaceAdmins => {
                let text = action.text.clone().unwrap_or_default();
                if hex::encode(sha256::Hash::hash(text.as_bytes()).to_byte_array())
                    != action.params_hash
                {
                    return Err(ApprovalError::Tampered {
                        id: id.into(),
                        detail: "the stored policy does not hash to what the recovery key signed"
                            .into(),
                    }
                    .into());
                }
                let new = parse_policy_for(&text, policy.network).map_err(|_| {
                    RecoveryError::Invalid("the stored policy no longer loads".into())
                })?;
                let hash = new.hash_hex();
                self.install_policy(
                    new,
                    text,
                    &record,
                    &approvers,
                    action.changes.clone(),
                    RECOVERY_KEY,
                    now,
                )?;
                format!("recovery {id} executed: policy {hash} with the new admins is in force")
            }
            RecoveryKind::Sweep => {
                let dest = policy
                    .recovery
                    .as_ref()
                    .and_then(|r| r.destination.as_ref())
                    .ok_or(RecoveryError::NoDestination)?;
                let signed = with_member(
                    sha256::Hash::hash(dest.descriptor.as_bytes()).to_byte_array(),
                    action.member.as_deref(),
                );
                if action.text.as_deref() != Some(dest.descriptor.as_str())
                    || signed != action.params_hash
                {
                    return Err(ApprovalError::Tampered {
                        id: id.into(),
                        detail: "the destination or member signed is not what is stored".into(),
                    }
                    .into());
                }
                if let Some(m) = &action.member {
                    self.recovery_member(action.action, m, policy)?;
                }
                self.sweep_mode(action.member.clone())?;
                match &action.member {
                    None => format!(
                        "recovery {id} executed: on-chain spends to the recovery destination are allowed, and nothing else"
                    ),
                    Some(m) => format!(
                        "recovery {id} executed: fleet member {m} may spend on-chain to the recovery destination, and nothing else; the other members go on"
                    ),
                }
            }
            RecoveryKind::Unfreeze => {
                let freezes = FreezeStore::new(&self.store);
                let at = action.member.as_deref();
                if freezes.get_at(at)?.map(|f| with_member(f.id(), at))
                    != Some(action.params_hash.clone())
                {
                    return Err(match at {
                        Some(m) => RecoveryError::MemberNotFrozen(m.to_string()),
                        None => RecoveryError::NotFrozen,
                    });
                }
                freezes.clear_at(at)?;
                if self.stops_here(at) {
                    self.thaw();
                }
                match at {
                    None => format!(
                        "recovery {id} executed: the freeze is lifted; payments are decided again"
                    ),
                    Some(m) => format!(
                        "recovery {id} executed: the freeze of fleet member {m} is lifted; its payments are decided again"
                    ),
                }
            }
        };
        let data = serde_json::json!({
            "request_id": record.id,
            "action": action.action.as_str(),
            "params_hash": action.params_hash,
            "member": action.member,
        });
        self.audit
            .append(now, "recovery-execute", data)
            .map_err(|e| RecoveryError::Audit(e.to_string()))?;
        self.events.emit(
            now,
            EventKind::Recovery,
            &record.id,
            &record.tags,
            message.clone(),
            0,
        );
        Ok(message)
    }
}

impl Core {
    /// Whether recovery `action` may name fleet member `member`: only a sweep or an unfreeze,
    /// only in a fleet, only a member the policy admits.
    fn recovery_member(
        &self,
        action: RecoveryKind,
        member: &str,
        policy: &crate::policy::Policy,
    ) -> Result<(), RecoveryError> {
        if action == RecoveryKind::ReplaceAdmins {
            return Err(RecoveryError::Member(
                "replace-admins changes the fleet's one policy, so it applies to every member; open it without a member".into(),
            ));
        }
        if self.fleet_member_name().is_none() {
            return Err(RecoveryError::Member(
                "this wardend is not a fleet member: a recovery action here applies to it (no member)".into(),
            ));
        }
        if !policy.fleet_members.contains_key(member) {
            return Err(RecoveryError::Member(format!(
                "\"{member}\" is not a member the fleet's policy admits; its [fleet.members] lists {}",
                policy.fleet_members.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }
}

/// A recovery action's parameters hash, hex (see [`crate::recovery::params_for`]).
fn with_member(params: [u8; 32], member: Option<&str>) -> String {
    hex::encode(crate::recovery::params_for(params, member))
}
