//! Quorum approvals: a payment held by an approval rule pays only after enough admins have
//! *signed* it.
//!
//! An approval is a signature, not a session. Each admin holds a secp256k1 key (or a Bitcoin
//! address, for hardware wallets) declared in the policy; wardend verifies every signature
//! itself, when it is submitted and again when the payment finally uses it. A compromised relay
//! or database can therefore delay or drop approvals but never forge one: the signatures cover
//! the request id, the payment, the rule and quorum that govern it, the policy hash, the expiry
//! and the decision, and the keys come from the policy in force, not from the database.
//!
//! The canonical approval digest (version 2), the text a hardware wallet signs and signature
//! verification are `warden_client::approval`'s, shared with wardenctl and any other approver;
//! this module keeps the requests, their states and the signatures in the store.

pub mod keys;
mod store;
mod verify;

pub use store::{
    payee_field, verify_approved_under, ApprovalConfig, ApprovalOutcome, ApprovalRecord,
    ApprovalStore, ChangeOutcome, PolicyChange, RecoveryAction, RequestKind, RequestState,
    StoredSignature, GOVERNANCE_RULE, RECOVERY_DRAFT_SECS, RECOVERY_KEY, RECOVERY_RULE,
};
pub use verify::{
    bitcoin_message_signer_matches, verify_admin_signature, verify_key_signature, SignatureFormat,
};

use crate::store::StoreError;
pub use warden_client::approval::{
    approval_digest, approval_text, ApprovalFields, Decision, SignatureError, Subject,
};

/// Why an approval was not accepted, or a held payment may not proceed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such request.
    #[error("no approval request with id {0}; list open requests with `wardenctl pending`")]
    NotFound(String),
    /// The request is no longer pending.
    #[error("request {id} is {state}; there is nothing left to sign")]
    NotPending {
        /// The request.
        id: String,
        /// Its state.
        state: String,
    },
    /// A recovery action's delay is not over.
    #[error("recovery action {id} is not executable before {at}; the admins may still cancel it")]
    NotYet {
        /// The request.
        id: String,
        /// When it becomes executable, formatted.
        at: String,
    },
    /// The request expired.
    #[error("request {id} expired at {at}; the payment must be retried to open a new request")]
    Expired {
        /// The request.
        id: String,
        /// When it expired, formatted.
        at: String,
    },
    /// The policy changed since the request was made.
    #[error("request {id} was made under policy {request_policy}, but policy {current_policy} is now in force; approvals are bound to their policy: retry the payment to open a new request")]
    PolicyChanged {
        /// The request.
        id: String,
        /// The request's policy hash.
        request_policy: String,
        /// The current policy hash.
        current_policy: String,
    },
    /// The admin is not in the policy.
    #[error(
        "admin \"{0}\" is not declared in the policy's [admins]; only declared admins can sign"
    )]
    UnknownAdmin(String),
    /// The admin is declared but not in this rule's quorum.
    #[error("admin \"{admin}\" is not in the quorum of rule {rule} ({of}); their signature cannot count")]
    NotInQuorum {
        /// The admin.
        admin: String,
        /// The approval rule.
        rule: String,
        /// Who is in its quorum.
        of: String,
    },
    /// The admin signed this request before.
    #[error("admin \"{admin}\" has already signed request {id}; the same admin cannot count twice: another admin must sign")]
    AlreadySigned {
        /// The admin.
        admin: String,
        /// The request.
        id: String,
    },
    /// The signature does not verify, or is not in the form the admin is declared with.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Stored data no longer verifies: the database was changed behind Warden's back.
    #[error("the stored approvals of request {id} do not verify ({detail}); the approval database was altered. The payment is refused")]
    Tampered {
        /// The request.
        id: String,
        /// What failed.
        detail: String,
    },
    /// Only a rejected request can be re-opened.
    #[error("request {id} is {state}; only a rejected request can be re-opened")]
    NotRejected {
        /// The request.
        id: String,
        /// Its state.
        state: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signature's audit record could not be written, so the signature was not kept.
    #[error("the audit record of this signature could not be written ({0}); nothing was recorded. Check the HSM (wardenctl hsm status) and sign again")]
    Audit(String),
}
