//! Checking an admin's signature against the policy's declaration of that admin.

use super::{approval_digest, approval_text, ApprovalError, ApprovalFields, Decision};
use crate::policy::{AdminKey, Policy};
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use lightning_signer::bitcoin::secp256k1::{schnorr, Message, Secp256k1};
use lightning_signer::bitcoin::sign_message::signed_msg_hash;
use lightning_signer::bitcoin::{Address, CompressedPublicKey, PublicKey, ScriptBuf};
use std::str::FromStr;

/// How an approval is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// BIP-340 Schnorr over the approval digest, by an admin declared with `pubkey`.
    Bip340,
    /// A Bitcoin signed message over the approval text, by an admin declared with `address`.
    BitcoinMessage,
}

impl SignatureFormat {
    /// Its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureFormat::Bip340 => "BIP-340",
            SignatureFormat::BitcoinMessage => "Bitcoin signed-message",
        }
    }
}

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

/// Verify `signature` by `key` (named `signer` in errors) over the request described by
/// `fields`, for `decision`: an admin's key, or the policy's recovery key.
pub fn verify_key_signature(
    key: &AdminKey,
    admin: &str,
    fields: &ApprovalFields,
    decision: Decision,
    format: SignatureFormat,
    signature: &[u8],
) -> Result<(), ApprovalError> {
    let bad = || ApprovalError::BadSignature {
        admin: admin.to_string(),
        id: fields.id.to_string(),
        format: format.as_str(),
        decision: decision.as_str(),
    };
    let secp = Secp256k1::verification_only();
    match (key, format) {
        (AdminKey::PublicKey(pk), SignatureFormat::Bip340) => {
            let sig = schnorr::Signature::from_slice(signature).map_err(|_| bad())?;
            let msg = Message::from_digest(approval_digest(fields, decision));
            secp.verify_schnorr(&sig, &msg, &pk.x_only_public_key().0)
                .map_err(|_| bad())
        }
        (AdminKey::Address(addr), SignatureFormat::BitcoinMessage) => {
            let hash = signed_msg_hash(&approval_text(fields, decision));
            if bitcoin_message_signer_matches(signature, hash.to_byte_array(), addr) {
                Ok(())
            } else {
                Err(bad())
            }
        }
        (AdminKey::PublicKey(_), _) => Err(ApprovalError::WrongFormat {
            admin: admin.into(),
            declared: "a public key",
            expected: "BIP-340 signatures",
        }),
        (AdminKey::Address(_), _) => Err(ApprovalError::WrongFormat {
            admin: admin.into(),
            declared: "an address",
            expected: "Bitcoin signed messages",
        }),
    }
}

/// Whether a 65-byte Bitcoin signed-message signature over `msg_hash` was made by the key
/// behind `address`. Accepts the header bytes of Bitcoin Core (27–34) and of BIP 137 segwit
/// wallets (35–42), and P2PKH, P2WPKH and P2SH-P2WPKH addresses: the recovered key must produce
/// exactly the address's script.
pub fn bitcoin_message_signer_matches(signature: &[u8], msg_hash: [u8; 32], address: &str) -> bool {
    let Ok(address) = Address::from_str(address) else {
        return false;
    };
    let target = address.assume_checked().script_pubkey();
    let [header, compact @ ..] = signature else {
        return false;
    };
    if signature.len() != 65 || !(27..=42).contains(header) {
        return false;
    }
    let recid = i32::from((header - 27) & 0x03);
    let compressed = *header >= 31;
    let Ok(recid) = RecoveryId::from_i32(recid) else {
        return false;
    };
    let Ok(sig) = RecoverableSignature::from_compact(compact, recid) else {
        return false;
    };
    let secp = Secp256k1::verification_only();
    let Ok(inner) = secp.recover_ecdsa(&Message::from_digest(msg_hash), &sig) else {
        return false;
    };
    let pubkey = PublicKey { inner, compressed };
    let mut candidates = vec![ScriptBuf::new_p2pkh(&pubkey.pubkey_hash())];
    if compressed {
        let wpkh = CompressedPublicKey(inner).wpubkey_hash();
        let p2wpkh = ScriptBuf::new_p2wpkh(&wpkh);
        candidates.push(ScriptBuf::new_p2sh(&p2wpkh.script_hash()));
        candidates.push(p2wpkh);
    }
    candidates.contains(&target)
}
