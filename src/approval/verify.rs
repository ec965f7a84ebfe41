//! Checking an admin's signature against the policy's declaration of that admin.

use super::{ApprovalError, ApprovalFields, Decision};
use crate::policy::{AdminKey, Policy};
pub use warden_client::approval::{bitcoin_message_signer_matches, SignatureFormat};

/// Verify `signature` by `admin` over the request described by `fields`, for `decision`.
/// The admin's key comes from `policy`, never from the request or the database.
pub fn verify_admin_signature(
    policy: &Policy,
    admin: &str,
    fields: &ApprovalFields,
    decision: Decision,
    format: SignatureFormat,
    signature: &[u8],
) -> Result<(), ApprovalError> {
    let key = policy
        .admins
        .get(admin)
        .ok_or_else(|| ApprovalError::UnknownAdmin(admin.to_string()))?;
    verify_key_signature(key, admin, fields, decision, format, signature)
}

/// Verify `signature` by `key` (named `admin` in errors) over the request described by
/// `fields`, for `decision`: an admin's key, or the policy's recovery key.
pub fn verify_key_signature(
    key: &AdminKey,
    admin: &str,
    fields: &ApprovalFields,
    decision: Decision,
    format: SignatureFormat,
    signature: &[u8],
) -> Result<(), ApprovalError> {
    Ok(warden_client::approval::verify_key_signature(
        key, admin, fields, decision, format, signature,
    )?)
}
