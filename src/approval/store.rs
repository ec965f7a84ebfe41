//! Approval requests and their signatures, in the store's `approvals` namespace.
//!
//! Layout: `r` + id → record (JSON, versioned); `g` + request digest → id of the newest request
//! for that exact payment. Every change is staged in the request's transaction (the admin call or
//! the hsmd request that makes it), so a signature, a consumed approval or a new request lands
//! in the same durable commit as its audit record and the spend it allows. Transactions are
//! serialized by the store, so two admins signing at once, or the signer consuming while an
//! admin signs, never lose an update.

use super::verify::{verify_admin_signature, verify_key_signature, SignatureFormat};
use super::{approval_digest, approval_text, ApprovalError, ApprovalFields, Decision, Subject};
use crate::clock::format_utc;
use crate::governance::Change;
use crate::policy::units::format_duration;
use crate::policy::{Destination, PaymentKind, PaymentRequest, Policy, Quorum};
use crate::store::{Namespace, Store, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use serde::{Deserialize, Serialize};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for signatures.
    Pending,
    /// Quorum reached; the payment may proceed once.
    Approved,
    /// Rejected by an admin.
    Rejected,
    /// Not approved in time.
    Expired,
    /// Approved and used by a payment.
    Consumed,
}

impl RequestState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
            RequestState::Expired => "expired",
            RequestState::Consumed => "consumed",
        }
    }
}

/// What a request is about. The payment kinds keep the names stored before policy changes
/// were requests too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// A BOLT 11 invoice.
    #[serde(rename = "invoice")]
    Invoice,
    /// A keysend.
    #[serde(rename = "keysend")]
    Keysend,
    /// An on-chain spend.
    #[serde(rename = "onchain")]
    OnChain,
    /// A new policy file.
    #[serde(rename = "policy-change")]
    PolicyChange,
    /// Lifting the freeze.
    #[serde(rename = "unfreeze")]
    Unfreeze,
    /// A break-glass action of the recovery key.
    #[serde(rename = "recovery")]
    Recovery,
}

impl RequestKind {
    /// The name shown and sent over the API.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Invoice => "invoice",
            RequestKind::Keysend => "keysend",
            RequestKind::OnChain => "onchain",
            RequestKind::PolicyChange => "policy-change",
            RequestKind::Unfreeze => "unfreeze",
            RequestKind::Recovery => "recovery",
        }
    }
}

impl From<PaymentKind> for RequestKind {
    fn from(k: PaymentKind) -> Self {
        match k {
            PaymentKind::Invoice => RequestKind::Invoice,
            PaymentKind::Keysend => RequestKind::Keysend,
            PaymentKind::OnChain => RequestKind::OnChain,
        }
    }
}

/// The proposal a policy-change request carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    /// SHA-256 of `text`, hex.
    pub hash: String,
    /// The proposed file.
    pub text: String,
    /// Every difference from the policy in force when it was proposed, classified.
    pub changes: Vec<Change>,
    /// Whether any change loosens.
    pub loosens: bool,
    /// Seconds it waits after its quorum (0 unless it loosens).
    pub delay_secs: u64,
    /// Who proposed it (an admin's certificate name, or "policy file" for SIGHUP).
    pub proposer: String,
}

/// What became of an approved policy change whose time came.
#[derive(Debug, Clone)]
pub enum ChangeOutcome {
    /// It is in force: the request (consumed) and the admins whose signatures verified.
    InForce(ApprovalRecord, Vec<String>),
    /// It was approved under a policy no longer in force, so it is void (expired).
    Void(ApprovalRecord),
}

/// A recovery action: what the recovery key starts, and when it may be executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryAction {
    /// Which action.
    pub action: crate::policy::RecoveryKind,
    /// replace-admins: the policy to put in force (it changes only admins and quorums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// unfreeze: the freeze it lifts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<crate::recovery::FreezeState>,
    /// SHA-256 of the parameters (the text, or the freeze's id), hex.
    pub params_hash: String,
    /// What a replace-admins changes, classified.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The earliest time it may be executed.
    pub earliest_at: u64,
    /// When the recovery key's signature started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// The node's chain height when it started, where the policy counts blocks too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_height: Option<u32>,
    /// In a fleet: the one member a sweep or an unfreeze applies to (`None`: the whole fleet,
    /// or the one wardend). Covered by `params_hash`, so the recovery key signs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// The rule tag of recovery actions, and the name their starting signature is stored under.
pub const RECOVERY_RULE: &str = "recovery";
/// The signer name of the recovery key's signature.
pub const RECOVERY_KEY: &str = "recovery-key";
/// Seconds a recovery action may wait for the recovery key's signature after it is opened, at
/// most: the window is this or the delay, whichever is shorter. Its earliest execution time is
/// counted from the end of the window, so the admins always have the whole delay after the
/// start is announced.
pub const RECOVERY_DRAFT_SECS: u64 = 600;

/// The signing window of a recovery action with `delay` (see [`RECOVERY_DRAFT_SECS`]).
pub fn recovery_window(delay: u64) -> u64 {
    RECOVERY_DRAFT_SECS.min(delay.max(1))
}

/// The rule tag of policy-change requests: their quorum is `[governance]`'s.
pub const GOVERNANCE_RULE: &str = "governance";

/// One admin's signature, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSignature {
    /// Admin name.
    pub admin: String,
    /// What they decided.
    pub decision: Decision,
    /// How it is signed.
    pub format: SignatureFormat,
    /// The signature, hex.
    pub signature: String,
    /// When it was accepted.
    pub signed_at: u64,
    /// A rejection's reason (not signed).
    pub reason: Option<String>,
}

/// An approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Format version.
    pub v: u8,
    /// `rq-` and 16 hex characters.
    pub id: String,
    /// Stored state; see [`ApprovalRecord::state_at`] for the state at a given time.
    pub state: RequestState,
    /// Invoice, keysend, on-chain, or a policy change.
    pub kind: RequestKind,
    /// Payment hash, hex (empty on-chain).
    pub payment_hash: String,
    /// Destinations and amounts (msat).
    pub outputs: Vec<(Destination, u64)>,
    /// Invoice description.
    pub description: Option<String>,
    /// The BOLT 11 invoice, when known.
    pub invoice: Option<String>,
    /// The approval rule requiring the quorum.
    pub rule_tag: String,
    /// All matching approval rules.
    pub tags: Vec<String>,
    /// Signatures needed (from the policy at creation; re-read from the policy when used).
    pub need: usize,
    /// Admins who may sign.
    pub of: Vec<String>,
    /// Creation time.
    pub created_at: u64,
    /// Expiry time.
    pub expires_at: u64,
    /// Policy hash at creation, hex.
    pub policy_hash: String,
    /// [`PaymentRequest::digest`], hex.
    pub request_digest: String,
    /// Accepted signatures, in order.
    pub signatures: Vec<StoredSignature>,
    /// When a payment used the approval (a policy change: when it took effect).
    pub consumed_at: Option<u64>,
    /// A policy change's proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<PolicyChange>,
    /// When an approved policy change takes effect (unless an admin vetoes it first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<u64>,
    /// The freeze an unfreeze request lifts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfreeze: Option<crate::recovery::FreezeState>,
    /// A recovery action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryAction>,
    /// The fleet member whose node asked for a payment: a fleet's queue is one, and only that
    /// member may use the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(b) = hex::decode(s) {
        if b.len() == 32 {
            out.copy_from_slice(&b);
        }
    }
    out
}

/// The destinations field of the canonical digest.
pub fn payee_field(outputs: &[(Destination, u64)]) -> String {
    outputs
        .iter()
        .map(|(d, v)| format!("{d}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl ApprovalRecord {
    /// Total amount.
    pub fn amount_msat(&self) -> u64 {
        self.outputs
            .iter()
            .fold(0u64, |a, (_, v)| a.saturating_add(*v))
    }

    /// The state at `now`: a pending request past its expiry is expired, and so is an approved
    /// payment nobody used in time. An approved policy change does not expire: it is waiting
    /// for its delay, and only a veto or a change of the policy in force stops it.
    pub fn state_at(&self, now: u64) -> RequestState {
        match self.state {
            RequestState::Pending if now >= self.expires_at => RequestState::Expired,
            RequestState::Approved
                if now >= self.expires_at && self.change.is_none() && self.recovery.is_none() =>
            {
                RequestState::Expired
            }
            s => s,
        }
    }

    /// Whether the governance quorum decides it (a policy change or an unfreeze), or cancels
    /// it (a recovery action).
    pub fn governed(&self) -> bool {
        self.change.is_some() || self.unfreeze.is_some() || self.recovery.is_some()
    }

    /// What the signatures approve.
    pub fn subject(&self) -> Subject {
        if let Some(r) = &self.recovery {
            return Subject::Recovery {
                action: r.action,
                params_hash: hex32(&r.params_hash),
                earliest_at: r.earliest_at,
            };
        }
        if let Some(f) = &self.unfreeze {
            return Subject::Unfreeze {
                freeze_id: f.id(),
                since: f.since,
                by: f.by.clone(),
                reason: f.reason.clone(),
            };
        }
        match &self.change {
            Some(c) => Subject::PolicyChange {
                hash: hex32(&c.hash),
                loosens: c.loosens,
                delay_secs: c.delay_secs,
            },
            None => Subject::Payment {
                payment_hash: hex32(&self.payment_hash),
                amount_msat: self.amount_msat(),
                payee: payee_field(&self.outputs),
            },
        }
    }

    /// The fields signatures cover, from this record.
    pub fn fields(&self) -> ApprovalFields<'_> {
        ApprovalFields {
            id: &self.id,
            subject: self.subject(),
            policy_hash: hex32(&self.policy_hash),
            expires_at: self.expires_at,
            rule_tag: &self.rule_tag,
            need: self.need,
            members: self.of.clone(),
        }
    }

    /// What a BIP-340 admin signs for `decision`.
    pub fn digest(&self, decision: Decision) -> [u8; 32] {
        approval_digest(&self.fields(), decision)
    }

    /// What a hardware-wallet admin signs for `decision`.
    pub fn text(&self, decision: Decision) -> String {
        approval_text(&self.fields(), decision)
    }

    /// Admins who approved.
    pub fn approvers(&self) -> Vec<&str> {
        self.signatures
            .iter()
            .filter(|s| s.decision == Decision::Approve)
            .map(|s| s.admin.as_str())
            .collect()
    }
}

/// Settings for the approval workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// Rejections that reject a request (default 1: any admin can stop a payment).
    pub rejections_needed: usize,
    /// Requests that may be open (pending or approved, unexpired) at once; a payment that would
    /// open one more is refused (`warden-approval-capacity`).
    pub max_open: usize,
    /// Seconds a closed request (consumed, rejected, expired) is kept before the sweep prunes
    /// it; its audit records stay.
    pub retention_secs: u64,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            rejections_needed: 1,
            max_open: 1_000,
            retention_secs: 90 * 86_400,
        }
    }
}

/// The result of a signature.
#[derive(Debug, Clone)]
pub struct ApprovalOutcome {
    /// The request after the signature.
    pub record: ApprovalRecord,
    /// A sentence for the admin.
    pub message: String,
    /// Whether this signature changed the state (to approved or rejected).
    pub decided: bool,
}

/// The approval requests.
#[derive(Debug)]
pub struct ApprovalStore {
    store: Store,
    config: ApprovalConfig,
    /// This wardend's member name in a fleet, if it is one.
    member: std::sync::RwLock<Option<String>>,
}

fn rkey(id: &str) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(id.as_bytes());
    k
}

fn gkey(digest: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![b'g'];
    k.extend_from_slice(digest);
    k
}

/// A fresh request id: `prefix-` and 16 hex characters, unique even for the same subject.
fn draw_id(prefix: &str, digest: &[u8; 32], now: u64) -> Result<String, StoreError> {
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Io {
        op: "draw a request id",
        detail: e.to_string(),
    })?;
    let mut e = sha256::Hash::engine();
    e.input(digest);
    e.input(&now.to_be_bytes());
    e.input(&nonce);
    Ok(format!(
        "{prefix}-{}",
        &hex::encode(sha256::Hash::from_engine(e).to_byte_array())[..16]
    ))
}

/// The index digest of an unfreeze: one open request per freeze.
fn unfreeze_digest(freeze: &crate::recovery::FreezeState) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(b"warden/unfreeze/v1");
    e.input(&freeze.id());
    sha256::Hash::from_engine(e).to_byte_array()
}

/// The index digest of a policy change: one open request per proposed file.
fn change_digest(hash: &str) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(b"warden/policy-change/v1");
    e.input(hash.as_bytes());
    sha256::Hash::from_engine(e).to_byte_array()
}

fn decode(key: &str, v: &[u8]) -> Result<ApprovalRecord, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: format!("approvals/{key}"),
        detail: e.to_string(),
    })
}

impl ApprovalStore {
    /// The approval requests of `store`.
    pub fn open(store: &Store, config: ApprovalConfig) -> Result<Self, StoreError> {
        Ok(ApprovalStore {
            store: store.clone(),
            config,
            member: Default::default(),
        })
    }

    /// Serve as fleet member `member`: payment requests this wardend opens name it, and it
    /// uses no approval another member's node asked for.
    pub fn set_member(&self, member: Option<String>) {
        *self.member.write().unwrap_or_else(|p| p.into_inner()) = member;
    }

    fn member(&self) -> Option<String> {
        self.member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn read(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.store
            .get(Namespace::Approvals, &rkey(id))?
            .map(|v| decode(id, &v))
            .transpose()
    }

    fn write(&self, record: &ApprovalRecord, index: bool) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Io {
            op: "encode approval",
            detail: e.to_string(),
        })?;
        self.store
            .put(Namespace::Approvals, rkey(&record.id), json)?;
        if index {
            self.store.put(
                Namespace::Approvals,
                gkey(&hex32(&record.request_digest)),
                record.id.as_bytes().to_vec(),
            )?;
        }
        Ok(())
    }

    /// One request, in any state.
    pub fn get(&self, id: &str) -> Result<ApprovalRecord, ApprovalError> {
        self.read(id)?
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))
    }

    /// The newest request for exactly this payment, if any.
    pub fn find(&self, req: &PaymentRequest) -> Result<Option<ApprovalRecord>, StoreError> {
        match self.store.get(Namespace::Approvals, &gkey(&req.digest()))? {
            Some(id) => self.read(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Requests still pending at `now`, oldest first.
    pub fn list_pending(&self, now: u64) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan(Namespace::Approvals, b"r")? {
            let r = decode(&String::from_utf8_lossy(&k[1..]), &v)?;
            if r.state_at(now) == RequestState::Pending {
                out.push(r);
            }
        }
        out.sort_by_key(|r| (r.created_at, r.id.clone()));
        Ok(out)
    }

    /// The settings in force.
    pub fn config(&self) -> ApprovalConfig {
        self.config
    }

    /// Requests open at `now` (pending, or approved and not yet used).
    pub fn count_open(&self, now: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for (k, v) in self.store.scan(Namespace::Approvals, b"r")? {
            let r = decode(&String::from_utf8_lossy(&k[1..]), &v)?;
            n += usize::from(matches!(
                r.state_at(now),
                RequestState::Pending | RequestState::Approved
            ));
        }
        Ok(n)
    }

    /// Delete closed requests (consumed, rejected, expired) closed more than the retention
    /// period before `now`, in the open transaction; returns how many. Their audit records
    /// stay. A rejected payment's veto ends with its record: by then its invoice has expired.
    pub fn prune(&self, now: u64) -> Result<usize, StoreError> {
        let horizon = now.saturating_sub(self.config.retention_secs);
        self.store.write(|| {
            let mut n = 0;
            for (k, v) in self.store.scan(Namespace::Approvals, b"r")? {
                let r = decode(&String::from_utf8_lossy(&k[1..]), &v)?;
                let closed_at = match r.state_at(now) {
                    RequestState::Consumed => r.consumed_at.unwrap_or(r.expires_at),
                    RequestState::Rejected => r
                        .signatures
                        .iter()
                        .map(|s| s.signed_at)
                        .max()
                        .unwrap_or(r.created_at),
                    RequestState::Expired => r.expires_at,
                    RequestState::Pending | RequestState::Approved => continue,
                };
                if closed_at >= horizon {
                    continue;
                }
                self.store.delete(Namespace::Approvals, k)?;
                let g = gkey(&hex32(&r.request_digest));
                if self.store.get(Namespace::Approvals, &g)?.as_deref() == Some(r.id.as_bytes()) {
                    self.store.delete(Namespace::Approvals, g)?;
                }
                n += 1;
            }
            Ok(n)
        })
    }

    /// Mark every pending or approved request whose expiry has passed as expired, in the open
    /// transaction (or one of its own), and return them: the caller announces each once.
    pub fn expire_due(&self, now: u64) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.store.write(|| {
            let mut out = Vec::new();
            for (k, v) in self.store.scan(Namespace::Approvals, b"r")? {
                let mut r = decode(&String::from_utf8_lossy(&k[1..]), &v)?;
                if r.state != RequestState::Expired && r.state_at(now) == RequestState::Expired {
                    r.state = RequestState::Expired;
                    self.write(&r, false)?;
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// Hold a payment for a quorum: return the open request for this exact payment, or create
    /// one. The boolean says whether it was created (and so whether to announce it).
    #[allow(clippy::too_many_arguments)]
    pub fn open_request(
        &self,
        req: &PaymentRequest,
        rule_tag: &str,
        tags: &[String],
        quorum: &Quorum,
        expiry_secs: u64,
        policy: &Policy,
        invoice: Option<String>,
        now: u64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        self.store.write(|| {
            if let Some(existing) = self.find(req)? {
                let open = matches!(
                    existing.state_at(now),
                    RequestState::Pending | RequestState::Approved
                );
                if open && existing.policy_hash == policy.hash_hex() {
                    return Ok((existing, false));
                }
            }
            let digest = req.digest();
            let id = draw_id("rq", &digest, now)?;
            let record = ApprovalRecord {
                v: 1,
                id,
                state: RequestState::Pending,
                kind: req.kind.into(),
                payment_hash: req.payment_hash.map(hex::encode).unwrap_or_default(),
                outputs: req.outputs.clone(),
                description: req.description.clone(),
                invoice,
                rule_tag: rule_tag.to_string(),
                tags: tags.to_vec(),
                need: quorum.need,
                of: quorum.of.clone(),
                created_at: now,
                expires_at: now.saturating_add(expiry_secs),
                policy_hash: policy.hash_hex(),
                request_digest: hex::encode(digest),
                signatures: Vec::new(),
                consumed_at: None,
                change: None,
                effective_at: None,
                unfreeze: None,
                recovery: None,
                member: self.member(),
            };
            self.write(&record, true)?;
            Ok((record, true))
        })
    }

    /// Open a request for the governance quorum of `policy` (the policy in force) to approve
    /// `change`, or return the open one for the same file under the same policy in force. The
    /// boolean says whether it was created.
    pub fn open_policy_change(
        &self,
        change: PolicyChange,
        policy: &Policy,
        now: u64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        self.store.write(|| {
            let digest = change_digest(&change.hash);
            if let Some(existing) = self.find_change(&change.hash)? {
                let open = matches!(
                    existing.state_at(now),
                    RequestState::Pending | RequestState::Approved
                );
                if open && existing.policy_hash == policy.hash_hex() {
                    return Ok((existing, false));
                }
            }
            let quorum = &policy.governance.quorum;
            let record = ApprovalRecord {
                v: 1,
                id: draw_id("pc", &digest, now)?,
                state: RequestState::Pending,
                kind: RequestKind::PolicyChange,
                payment_hash: String::new(),
                outputs: Vec::new(),
                description: Some(format!(
                    "policy change to {} proposed by {}",
                    &change.hash[..16.min(change.hash.len())],
                    change.proposer
                )),
                invoice: None,
                rule_tag: GOVERNANCE_RULE.into(),
                tags: vec![GOVERNANCE_RULE.into()],
                need: quorum.need,
                of: quorum.of.clone(),
                created_at: now,
                expires_at: now.saturating_add(policy.governance.expiry_secs),
                policy_hash: policy.hash_hex(),
                request_digest: hex::encode(digest),
                signatures: Vec::new(),
                consumed_at: None,
                change: Some(change),
                effective_at: None,
                unfreeze: None,
                recovery: None,
                member: None,
            };
            self.write(&record, true)?;
            Ok((record, true))
        })
    }

    /// The newest policy-change request for the file with SHA-256 `hash` (hex), if any.
    pub fn find_change(&self, hash: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        match self
            .store
            .get(Namespace::Approvals, &gkey(&change_digest(hash)))?
        {
            Some(id) => self.read(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Open a request for the governance quorum of `policy` to lift `freeze`, or return the
    /// open one for the same freeze.
    pub fn open_unfreeze(
        &self,
        freeze: &crate::recovery::FreezeState,
        policy: &Policy,
        now: u64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        self.store.write(|| {
            let digest = unfreeze_digest(freeze);
            if let Some(id) = self.store.get(Namespace::Approvals, &gkey(&digest))? {
                if let Some(existing) = self.read(&String::from_utf8_lossy(&id))? {
                    if existing.state_at(now) == RequestState::Pending
                        && existing.policy_hash == policy.hash_hex()
                    {
                        return Ok((existing, false));
                    }
                }
            }
            let quorum = &policy.governance.quorum;
            let record = ApprovalRecord {
                v: 1,
                id: draw_id("uf", &digest, now)?,
                state: RequestState::Pending,
                kind: RequestKind::Unfreeze,
                payment_hash: String::new(),
                outputs: Vec::new(),
                description: Some(format!(
                    "lift the freeze of {} by {}: {}",
                    format_utc(freeze.since),
                    freeze.by,
                    freeze.reason
                )),
                invoice: None,
                rule_tag: GOVERNANCE_RULE.into(),
                tags: vec![GOVERNANCE_RULE.into()],
                need: quorum.need,
                of: quorum.of.clone(),
                created_at: now,
                expires_at: now.saturating_add(policy.governance.expiry_secs),
                policy_hash: policy.hash_hex(),
                request_digest: hex::encode(digest),
                signatures: Vec::new(),
                consumed_at: None,
                change: None,
                effective_at: None,
                unfreeze: Some(freeze.clone()),
                recovery: None,
                member: None,
            };
            self.write(&record, true)?;
            Ok((record, true))
        })
    }

    /// Consumed requests that lifted freeze `f`: the quorum's unfreeze, or the recovery key's.
    pub fn lifting(
        &self,
        f: &crate::recovery::FreezeState,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, v) in self.store.scan(Namespace::Approvals, b"r")? {
            let Ok(r) = serde_json::from_slice::<ApprovalRecord>(&v) else {
                continue;
            };
            let names = r.unfreeze.as_ref() == Some(f)
                || r.recovery.as_ref().and_then(|a| a.freeze.as_ref()) == Some(f);
            if names && r.state == RequestState::Consumed {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Use the approved unfreeze request `id`, after verifying its signatures again against
    /// `policy` and its governance quorum; returns the record (consumed) and the approvers.
    pub fn consume_unfreeze(
        &self,
        id: &str,
        policy: &Policy,
        now: u64,
    ) -> Result<(ApprovalRecord, Vec<String>), ApprovalError> {
        self.store.write(|| {
            let mut record = self.get(id)?;
            if record.unfreeze.is_none() || record.state != RequestState::Approved {
                return Err(ApprovalError::NotPending {
                    id: id.into(),
                    state: record.state.as_str().into(),
                });
            }
            let approvers = verify_approved_under(&record, policy)?;
            record.state = RequestState::Consumed;
            record.consumed_at = Some(now);
            self.write(&record, false)?;
            Ok((record, approvers))
        })
    }

    /// Open a recovery action for the recovery key of `policy` to sign (a draft, until it is
    /// signed), or return the open one with the same parameters.
    pub fn open_recovery(
        &self,
        mut action: RecoveryAction,
        policy: &Policy,
        now: u64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        self.store.write(|| {
            let mut e = sha256::Hash::engine();
            e.input(b"warden/recovery/v1");
            e.input(&[action.action.code()]);
            e.input(action.params_hash.as_bytes());
            let digest = sha256::Hash::from_engine(e).to_byte_array();
            if let Some(id) = self.store.get(Namespace::Approvals, &gkey(&digest))? {
                if let Some(existing) = self.read(&String::from_utf8_lossy(&id))? {
                    let open = matches!(
                        existing.state_at(now),
                        RequestState::Pending | RequestState::Approved
                    );
                    if open && existing.policy_hash == policy.hash_hex() {
                        return Ok((existing, false));
                    }
                }
            }
            let delay = policy.recovery.as_ref().map(|r| r.delay_secs).unwrap_or(0);
            let window = recovery_window(delay);
            action.earliest_at = now.saturating_add(window).saturating_add(delay);
            action.started_at = None;
            let quorum = &policy.governance.quorum;
            let record = ApprovalRecord {
                v: 1,
                id: draw_id("rc", &digest, now)?,
                state: RequestState::Pending,
                kind: RequestKind::Recovery,
                payment_hash: String::new(),
                outputs: Vec::new(),
                description: Some(format!(
                    "recovery: {}{}",
                    action.action.as_str(),
                    action
                        .member
                        .as_deref()
                        .map(|m| format!(" of fleet member {m} alone"))
                        .unwrap_or_default()
                )),
                invoice: None,
                rule_tag: RECOVERY_RULE.into(),
                tags: vec![RECOVERY_RULE.into()],
                need: quorum.need,
                of: quorum.of.clone(),
                created_at: now,
                expires_at: now.saturating_add(window),
                policy_hash: policy.hash_hex(),
                request_digest: hex::encode(digest),
                signatures: Vec::new(),
                consumed_at: None,
                change: None,
                effective_at: None,
                unfreeze: None,
                recovery: Some(action),
                member: None,
            };
            self.write(&record, true)?;
            Ok((record, true))
        })
    }

    /// Start the recovery action `id` with the recovery key's signature over its approval
    /// digest (or text), checked against `policy`'s recovery key.
    pub fn start_recovery(
        &self,
        id: &str,
        format: SignatureFormat,
        signature: &[u8],
        policy: &Policy,
        now: u64,
        height: Option<u32>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        self.store.write(|| {
            let mut record = self.get(id)?;
            if record.recovery.is_none() {
                return Err(ApprovalError::NotPending {
                    id: id.into(),
                    state: format!("a {} request, not a recovery action", record.kind.name()),
                });
            }
            match record.state_at(now) {
                RequestState::Pending => {}
                RequestState::Expired => {
                    return Err(ApprovalError::Expired {
                        id: id.into(),
                        at: format_utc(record.expires_at),
                    })
                }
                other => {
                    return Err(ApprovalError::NotPending {
                        id: id.into(),
                        state: other.as_str().into(),
                    })
                }
            }
            if record.policy_hash != policy.hash_hex() {
                return Err(ApprovalError::PolicyChanged {
                    id: id.into(),
                    request_policy: record.policy_hash.clone(),
                    current_policy: policy.hash_hex(),
                });
            }
            let key = &policy
                .recovery
                .as_ref()
                .ok_or_else(|| ApprovalError::UnknownAdmin(RECOVERY_KEY.into()))?
                .key;
            verify_key_signature(
                key,
                RECOVERY_KEY,
                &record.fields(),
                Decision::Approve,
                format,
                signature,
            )?;
            record.signatures.push(StoredSignature {
                admin: RECOVERY_KEY.into(),
                decision: Decision::Approve,
                format,
                signature: hex::encode(signature),
                signed_at: now,
                reason: None,
            });
            record.state = RequestState::Approved;
            if let Some(r) = record.recovery.as_mut() {
                r.started_at = Some(now);
                r.started_height = height;
            }
            self.write(&record, false)?;
            Ok(record)
        })
    }

    /// Use the started recovery action `id` once its time has come: the recovery key's
    /// signature is verified again against `policy` (the policy in force) before it is
    /// consumed. Before its earliest time, or under another policy, it is refused.
    pub fn consume_recovery(
        &self,
        id: &str,
        policy: &Policy,
        now: u64,
        height: Option<u32>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        self.store.write(|| {
            let mut record = self.get(id)?;
            let Some(action) = record.recovery.clone() else {
                return Err(ApprovalError::NotPending {
                    id: id.into(),
                    state: format!("a {} request, not a recovery action", record.kind.name()),
                });
            };
            if record.state != RequestState::Approved {
                return Err(ApprovalError::NotPending {
                    id: id.into(),
                    state: match record.state_at(now) {
                        RequestState::Pending => {
                            "not started (the recovery key has not signed it)".into()
                        }
                        RequestState::Rejected => "cancelled by the admins".into(),
                        other => other.as_str().into(),
                    },
                });
            }
            if now < action.earliest_at {
                return Err(ApprovalError::NotYet {
                    id: id.into(),
                    at: format_utc(action.earliest_at),
                });
            }
            // Where the policy counts blocks, a clock moved forward does not end the delay.
            let blocks = policy.recovery.as_ref().map(|r| r.delay_blocks).unwrap_or(0);
            if blocks > 0 {
                let (Some(start), Some(h)) = (action.started_height, height) else {
                    return Err(ApprovalError::NotYet {
                        id: id.into(),
                        at: format!(
                            "{blocks} blocks after its start, which cannot be counted: no chain height is known (the node must feed blocks)"
                        ),
                    });
                };
                let due = start.saturating_add(blocks);
                if h < due {
                    return Err(ApprovalError::NotYet {
                        id: id.into(),
                        at: format!("block {due} (the node's chain is at {h})"),
                    });
                }
            }
            if record.policy_hash != policy.hash_hex() {
                return Err(ApprovalError::PolicyChanged {
                    id: id.into(),
                    request_policy: record.policy_hash.clone(),
                    current_policy: policy.hash_hex(),
                });
            }
            verify_approved_under(&record, policy).map_err(|e| match e {
                e @ ApprovalError::Tampered { .. } => e,
                other => ApprovalError::Tampered {
                    id: id.into(),
                    detail: format!("the recovery key signature fails: {other}"),
                },
            })?;
            record.state = RequestState::Consumed;
            record.consumed_at = Some(now);
            self.write(&record, false)?;
            Ok(record)
        })
    }

    /// Recovery actions started and not yet executed or cancelled.
    pub fn list_started_recoveries(&self, now: u64) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan(Namespace::Approvals, b"r")? {
            let r = decode(&String::from_utf8_lossy(&k[1..]), &v)?;
            if r.recovery.is_some() && r.state_at(now) == RequestState::Approved {
                out.push(r);
            }
        }
        out.sort_by_key(|r| (r.created_at, r.id.clone()));
        Ok(out)
    }

    /// Approved policy changes whose delay is over at `now`, oldest first.
    pub fn due_changes(&self, now: u64) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan(Namespace::Approvals, b"r")? {
            let r = decode(&String::from_utf8_lossy(&k[1..]), &v)?;
            if r.change.is_some()
                && r.state == RequestState::Approved
                && r.effective_at.is_some_and(|t| t <= now)
            {
                out.push(r);
            }
        }
        out.sort_by_key(|r| (r.effective_at, r.id.clone()));
        Ok(out)
    }

    /// Close the policy change `id` without it taking effect (its signatures no longer verify,
    /// or it no longer loads): marked expired, so no sweep tries it again.
    pub fn void_change(&self, id: &str) -> Result<ApprovalRecord, ApprovalError> {
        self.store.write(|| {
            let mut record = self.get(id)?;
            record.state = RequestState::Expired;
            record.effective_at = None;
            self.write(&record, false)?;
            Ok(record)
        })
    }

    /// Mark the approved policy change `id` as in force, after verifying its signatures again
    /// against `policy` (the policy in force) and its governance quorum; returns the record and
    /// the admins whose signatures verified. A change approved under another policy than the
    /// one in force is void (marked expired) instead.
    pub fn consume_change(
        &self,
        id: &str,
        policy: &Policy,
        now: u64,
    ) -> Result<ChangeOutcome, ApprovalError> {
        self.store.write(|| {
            let mut record = self.get(id)?;
            if record.change.is_none() || record.state != RequestState::Approved {
                return Err(ApprovalError::NotPending {
                    id: id.into(),
                    state: record.state.as_str().into(),
                });
            }
            if record.policy_hash != policy.hash_hex() {
                // Its signatures cover the policy it was proposed under, which is gone.
                record.state = RequestState::Expired;
                record.effective_at = None;
                self.write(&record, false)?;
                return Ok(ChangeOutcome::Void(record));
            }
            // The signatures cover the hash; the text put in force must be what hashes to it.
            let change = record.change.as_ref().expect("checked above");
            let text_hash = hex::encode(sha256::Hash::hash(change.text.as_bytes()).to_byte_array());
            if text_hash != change.hash {
                return Err(ApprovalError::Tampered {
                    id: id.into(),
                    detail: format!(
                        "its stored text hashes to {text_hash}, not to the approved {}",
                        change.hash
                    ),
                });
            }
            let approvers = verify_approved_under(&record, policy)?;
            record.state = RequestState::Consumed;
            record.consumed_at = Some(now);
            self.write(&record, false)?;
            Ok(ChangeOutcome::InForce(record, approvers))
        })
    }

    /// Add an admin's signed decision. Every check is made against `policy` (the policy in
    /// force) before anything is written.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        id: &str,
        admin: &str,
        decision: Decision,
        format: SignatureFormat,
        signature: &[u8],
        reason: Option<String>,
        policy: &Policy,
        now: u64,
    ) -> Result<ApprovalOutcome, ApprovalError> {
        self.store.write(|| {
            let mut record = self.get(id)?;
            let is_change = record.change.is_some();
            let is_recovery = record.recovery.is_some();
            if is_recovery && decision != Decision::Reject {
                return Err(ApprovalError::NotPending {
                    id: id.into(),
                    state: "a recovery action: the recovery key starts it (wardenctl recovery start), and admins can only cancel it (wardenctl recovery cancel)".into(),
                });
            }
            match (decision, record.state_at(now)) {
                // Cancelling a started recovery action, during its delay.
                (Decision::Reject, RequestState::Approved) if is_recovery => {}
                // A veto: any admin may stop an approved policy change until it takes effect.
                (Decision::Reject, RequestState::Approved) if is_change => {}
                (Decision::Reopen, _) if record.governed() => {
                    return Err(ApprovalError::NotRejected {
                        id: id.into(),
                        state: "governed by the quorum (propose or ask again instead)".into(),
                    })
                }
                (Decision::Reopen, RequestState::Rejected) => {}
                (Decision::Reopen, other) => {
                    return Err(ApprovalError::NotRejected {
                        id: id.into(),
                        state: other.as_str().into(),
                    })
                }
                (_, RequestState::Pending) => {}
                (_, RequestState::Expired) => {
                    // The sweep (Core::sweep) records the expiry and announces it, once.
                    return Err(ApprovalError::Expired {
                        id: id.into(),
                        at: format_utc(record.expires_at),
                    });
                }
                (_, other) => {
                    return Err(ApprovalError::NotPending {
                        id: id.into(),
                        state: other.as_str().into(),
                    })
                }
            }
            if record.policy_hash != policy.hash_hex() {
                return Err(ApprovalError::PolicyChanged {
                    id: id.into(),
                    request_policy: record.policy_hash.clone(),
                    current_policy: policy.hash_hex(),
                });
            }
            if !policy.admins.contains_key(admin) {
                return Err(ApprovalError::UnknownAdmin(admin.into()));
            }
            let quorum = rule_quorum(policy, &record)?;
            // Any single admin vetoes a policy change; an unfreeze is refused only by the same
            // quorum that could grant it, so one admin cannot keep the signer frozen.
            let veto = is_change && decision == Decision::Reject;
            if !veto && !quorum.of.iter().any(|a| a == admin) {
                return Err(ApprovalError::NotInQuorum {
                    admin: admin.into(),
                    rule: record.rule_tag.clone(),
                    of: quorum.of.join(", "),
                });
            }
            // A rejecting admin may still join a re-opening; nobody signs the same thing twice.
            // An admin who approved a policy change may still veto it during its delay.
            if record.signatures.iter().any(|s| {
                s.admin == admin
                    && match decision {
                        Decision::Reopen => s.decision == decision,
                        Decision::Reject if is_change => s.decision == decision,
                        _ => true,
                    }
            }) {
                return Err(ApprovalError::AlreadySigned {
                    admin: admin.into(),
                    id: id.into(),
                });
            }
            verify_admin_signature(policy, admin, &record.fields(), decision, format, signature)?;
            record.signatures.push(StoredSignature {
                admin: admin.into(),
                decision,
                format,
                signature: hex::encode(signature),
                signed_at: now,
                reason,
            });
            let count = |d: Decision| {
                let mut who: Vec<&str> = record
                    .signatures
                    .iter()
                    .filter(|s| s.decision == d && quorum.of.contains(&s.admin))
                    .map(|s| s.admin.as_str())
                    .collect();
                who.dedup();
                who.len()
            };
            let approvals = count(Decision::Approve);
            let rejections = count(Decision::Reject);
            let reopenings = count(Decision::Reopen);
            let (decided, message) = if decision == Decision::Reopen {
                if reopenings >= quorum.need {
                    // A fresh start: the old signatures stay in the audit log, and the request
                    // gets the rule's full time again.
                    let expiry = policy
                        .approvals
                        .iter()
                        .find(|r| r.tag == record.rule_tag)
                        .map(|r| r.expiry_secs)
                        .unwrap_or(3_600);
                    record.state = RequestState::Pending;
                    record.signatures.clear();
                    // Strictly later than before, even within the second it was created: the
                    // expiry is in the digest, so what was signed before the re-open (the
                    // approvals and the veto) never verifies for the re-opened request.
                    record.expires_at = now
                        .saturating_add(expiry)
                        .max(record.expires_at.saturating_add(1));
                    (
                        true,
                        format!("quorum reached ({reopenings} of {}): request {id} is re-opened and may be approved again until {}", quorum.need, format_utc(record.expires_at)),
                    )
                } else {
                    (
                        false,
                        format!("{admin} asked to re-open request {id} ({reopenings} of {} needed)", quorum.need),
                    )
                }
            } else if record.unfreeze.is_some() && decision == Decision::Reject {
                if rejections >= quorum.need {
                    record.state = RequestState::Rejected;
                    (
                        true,
                        format!("quorum reached ({rejections} of {}): unfreeze request {id} is refused; the signer stays frozen", quorum.need),
                    )
                } else {
                    (
                        false,
                        format!("{admin} refused unfreeze request {id} ({rejections} of {} needed to refuse it)", quorum.need),
                    )
                }
            } else if is_recovery {
                if rejections >= quorum.need {
                    record.state = RequestState::Rejected;
                    (
                        true,
                        format!("quorum reached ({rejections} of {}): recovery action {id} is cancelled", quorum.need),
                    )
                } else {
                    (
                        false,
                        format!("{admin} asked to cancel recovery action {id} ({rejections} of {} needed)", quorum.need),
                    )
                }
            } else if veto {
                record.state = RequestState::Rejected;
                record.effective_at = None;
                (
                    true,
                    if is_change {
                        format!("policy change {id} vetoed by {admin}; the policy in force stays")
                    } else {
                        format!("unfreeze request {id} rejected by {admin}; the signer stays frozen")
                    },
                )
            } else if !record.governed() && rejections >= self.config.rejections_needed.max(1) {
                record.state = RequestState::Rejected;
                (
                    true,
                    format!("request {id} rejected by {admin}; the payment will be refused"),
                )
            } else if approvals >= quorum.need && is_change {
                let delay = record.change.as_ref().map(|c| c.delay_secs).unwrap_or(0);
                record.state = RequestState::Approved;
                record.effective_at = Some(now.saturating_add(delay));
                (
                    true,
                    if delay == 0 {
                        format!("quorum reached ({approvals} of {}): policy change {id} takes effect now", quorum.need)
                    } else {
                        format!(
                            "quorum reached ({approvals} of {}): policy change {id} loosens the policy and takes effect at {} ({} from now) unless an admin vetoes it",
                            quorum.need,
                            format_utc(now.saturating_add(delay)),
                            format_duration(delay)
                        )
                    },
                )
            } else if approvals >= quorum.need && record.unfreeze.is_some() {
                record.state = RequestState::Approved;
                (
                    true,
                    format!("quorum reached ({approvals} of {}): the freeze is lifted by request {id}", quorum.need),
                )
            } else if approvals >= quorum.need {
                record.state = RequestState::Approved;
                (
                    true,
                    format!("quorum reached ({approvals} of {}): request {id} is approved and the payment may proceed once", quorum.need),
                )
            } else {
                (
                    false,
                    match decision {
                        Decision::Approve => format!("{admin} approved request {id} ({approvals} of {} needed)", quorum.need),
                        Decision::Reject | Decision::Reopen => format!(
                            "{admin} rejected request {id} ({rejections} of {} rejections needed to refuse it)",
                            self.config.rejections_needed
                        ),
                    },
                )
            };
            self.write(&record, false)?;
            Ok(ApprovalOutcome {
                record,
                message,
                decided,
            })
        })
    }

    /// Use the approval of exactly this payment, once. Returns `None` when there is no approved,
    /// unexpired request for it. The stored signatures are verified again, against the live
    /// payment, the policy in force and the rule and quorum (`rule_tag`, `quorum`) that policy's
    /// verdict names for the payment, before the request is marked consumed: a record edited in
    /// the database (its state, a signature, the rule it claims) does not pay.
    pub fn consume(
        &self,
        req: &PaymentRequest,
        policy: &Policy,
        rule_tag: &str,
        quorum: &Quorum,
        now: u64,
    ) -> Result<Option<ApprovalRecord>, ApprovalError> {
        self.approved_for(req, policy, rule_tag, quorum, now, true)
    }

    /// Like [`consume`](Self::consume), verified the same way, but the approval stays usable:
    /// for a check before signing (the CLN plugin's), which must not spend what the signature
    /// that follows it needs.
    pub fn peek_approved(
        &self,
        req: &PaymentRequest,
        policy: &Policy,
        rule_tag: &str,
        quorum: &Quorum,
        now: u64,
    ) -> Result<Option<ApprovalRecord>, ApprovalError> {
        self.approved_for(req, policy, rule_tag, quorum, now, false)
    }

    fn approved_for(
        &self,
        req: &PaymentRequest,
        policy: &Policy,
        rule_tag: &str,
        quorum: &Quorum,
        now: u64,
        take: bool,
    ) -> Result<Option<ApprovalRecord>, ApprovalError> {
        self.store.write(|| {
            let Some(mut record) = self.find(req)? else {
                return Ok(None);
            };
            match record.state_at(now) {
                RequestState::Approved => {}
                _ => return Ok(None),
            }
            if record.member.is_some() && record.member != self.member() {
                // Asked for by another member's node: that member's to use, never this one's.
                return Ok(None);
            }
            if record.policy_hash != policy.hash_hex() {
                // Approved under a policy no longer in force: the signatures cover that policy, so
                // they do not carry over; the caller opens a new request under the policy in force.
                return Ok(None);
            }
            // The fields come from the live payment and the live verdict, not from the stored copy.
            let fields = ApprovalFields {
                id: &record.id,
                subject: Subject::Payment {
                    payment_hash: req.payment_hash.unwrap_or([0; 32]),
                    amount_msat: req.outputs_msat(),
                    payee: payee_field(&req.outputs),
                },
                policy_hash: policy.hash,
                expires_at: record.expires_at,
                rule_tag,
                need: quorum.need,
                members: quorum.of.clone(),
            };
            verify_quorum(&record, policy, &fields, quorum)?;
            if !take {
                return Ok(Some(record));
            }
            record.state = RequestState::Consumed;
            record.consumed_at = Some(now);
            self.write(&record, false)?;
            Ok(Some(record))
        })
    }
}

/// Check that a governed record (a policy change, an unfreeze or a recovery action) was
/// approved under `policy`, the policy in force when it was made: the governance quorum's
/// signatures, or the recovery key's signature, verified again from the stored record. Returns
/// who signed. Used when it takes effect, and at every start for each version of the policy
/// history, so a database edit cannot put a policy in force that nobody approved.
pub fn verify_approved_under(
    record: &ApprovalRecord,
    policy: &Policy,
) -> Result<Vec<String>, ApprovalError> {
    let tampered = |detail: String| ApprovalError::Tampered {
        id: record.id.clone(),
        detail,
    };
    if record.policy_hash != policy.hash_hex() {
        return Err(tampered(format!(
            "it was made under policy {}, not {}",
            record.policy_hash,
            policy.hash_hex()
        )));
    }
    if record.recovery.is_some() {
        let key = &policy
            .recovery
            .as_ref()
            .ok_or_else(|| tampered("that policy has no recovery key".into()))?
            .key;
        let s = record
            .signatures
            .iter()
            .find(|s| s.admin == RECOVERY_KEY && s.decision == Decision::Approve)
            .ok_or_else(|| tampered("no recovery key signature is stored".into()))?;
        let sig = hex::decode(&s.signature)
            .map_err(|_| tampered("the recovery key signature is not hex".into()))?;
        verify_key_signature(
            key,
            RECOVERY_KEY,
            &record.fields(),
            Decision::Approve,
            s.format,
            &sig,
        )?;
        return Ok(vec![RECOVERY_KEY.to_string()]);
    }
    if record.change.is_none() && record.unfreeze.is_none() {
        return Err(tampered(
            "it is not a policy change, an unfreeze or a recovery action".into(),
        ));
    }
    let quorum = policy.governance.quorum.clone();
    let fields = ApprovalFields {
        id: &record.id,
        subject: record.subject(),
        policy_hash: policy.hash,
        expires_at: record.expires_at,
        rule_tag: GOVERNANCE_RULE,
        need: quorum.need,
        members: quorum.of.clone(),
    };
    verify_quorum(record, policy, &fields, &quorum)
}

/// Check that the record's stored approvals verify over `fields` (built from live data, never
/// from the stored copy) by at least `quorum.need` distinct members of `quorum`.
fn verify_quorum(
    record: &ApprovalRecord,
    policy: &Policy,
    fields: &ApprovalFields,
    quorum: &Quorum,
) -> Result<Vec<String>, ApprovalError> {
    let mut valid: Vec<String> = Vec::new();
    for s in record
        .signatures
        .iter()
        .filter(|s| s.decision == Decision::Approve)
    {
        let tampered = |detail: String| ApprovalError::Tampered {
            id: record.id.clone(),
            detail,
        };
        let sig = hex::decode(&s.signature)
            .map_err(|_| tampered(format!("the signature of {} is not hex", s.admin)))?;
        verify_admin_signature(policy, &s.admin, fields, Decision::Approve, s.format, &sig)
            .map_err(|e| tampered(format!("the signature of {} fails: {e}", s.admin)))?;
        if quorum.of.contains(&s.admin) && !valid.contains(&s.admin) {
            valid.push(s.admin.clone());
        }
    }
    if valid.len() < quorum.need {
        return Err(ApprovalError::Tampered {
            id: record.id.clone(),
            detail: format!(
                "the record says approved but only {} of {} required signatures verify",
                valid.len(),
                quorum.need
            ),
        });
    }
    Ok(valid)
}

fn rule_quorum(policy: &Policy, record: &ApprovalRecord) -> Result<Quorum, ApprovalError> {
    if record.governed() {
        return Ok(policy.governance.quorum.clone());
    }
    policy
        .approvals
        .iter()
        .find(|r| r.tag == record.rule_tag)
        .map(|r| r.quorum.clone())
        .ok_or_else(|| ApprovalError::PolicyChanged {
            id: record.id.clone(),
            request_policy: record.policy_hash.clone(),
            current_policy: policy.hash_hex(),
        })
}
