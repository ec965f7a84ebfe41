//! What an admin signs, and how wardend checks it: the canonical approval digest (version 2),
//! the text a hardware wallet signs, BIP-340 signing, and verification against the key the
//! policy declares. wardend verifies with exactly this code, so a back office that builds its
//! own approver and signs with [`sign_bip340`] signs what wardend will accept.
//!
//! An approval is a signature, not a session. Each admin holds a secp256k1 key (or a Bitcoin
//! address, for hardware wallets) declared in the policy; wardend verifies every signature
//! itself, when it is submitted and again when the payment finally uses it. A compromised relay
//! or database can therefore delay or drop approvals but never forge one: the signatures cover
//! the request id, the payment, the rule and quorum that govern it, the policy hash, the expiry
//! and the decision, and the keys come from the policy in force, not from the database.
//!
//! ## The canonical approval digest (version 2)
//! ```text
//! sha256( "warden/approval/v2"
//!       || u8(subject kind)                     -- 1 = payment, 2 = policy change,
//!                                               -- 3 = unfreeze, 4 = recovery
//!       || u32be(len(id)) || id
//!       || u32be(len(subject)) || subject       -- payment: payment_hash (32 bytes; zeros
//!                                               --   on-chain) || u64be(amount_msat)
//!                                               --   || u32be(len(payee)) || payee
//!                                               -- policy change: new policy hash (32
//!                                               --   bytes, the SHA-256 of its text)
//!                                               --   || u8(loosens: 0 or 1)
//!                                               --   || u64be(delay after the quorum, s)
//!                                               -- unfreeze: the freeze's id (32 bytes:
//!                                               --   sha256("warden/freeze/v1" || u64be
//!                                               --   since || u32be len || by || u32be
//!                                               --   len || reason || u32be len ||
//!                                               --   nonce))
//!                                               -- recovery: u8(action: 1 replace-admins,
//!                                               --   3 sweep,
//!                                               --   2 unfreeze) || sha256(parameters)
//!                                               --   || u64be(earliest execution time)
//!       || u32be(len(rule_tag)) || rule_tag     -- the approval rule holding the payment;
//!                                               --   "governance" for a policy change
//!                                               --   and an unfreeze; "recovery" for a
//!                                               --   recovery action
//!       || u32be(need) || u32be(n)              -- its quorum: need of n members,
//!       || n × (u32be(len(member)) || member)   --   members sorted by name
//!       || policy_hash                          (32 bytes, the policy in force)
//!       || u64be(expires_at)                    (Unix seconds)
//!       || u32be(len(decision)) || decision )   -- "approve", "reject" or "reopen"
//! ```
//! `payee` is the request's destinations as `node <id>` / `address <addr>`, each followed by
//! `=<msat>`, joined by `,`. A policy change's digest covers the proposed file through its hash
//! (a client shows the text and checks that it hashes to it). Admins with a public key sign
//! this digest with BIP-340 Schnorr. Admins with an address sign [`approval_text`] (which
//! contains the digest) as a Bitcoin signed message. When a held payment is retried, the
//! signatures are checked against the digest built from the live payment and the rule and
//! quorum the policy in force names for it, so a request moved under another rule in the
//! database verifies under none. (Version 1 had no subject kind, rule or quorum; wardend
//! accepts only version 2.)

use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use lightning_signer::bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use lightning_signer::bitcoin::secp256k1::{schnorr, Keypair, Message, Secp256k1};
use lightning_signer::bitcoin::sign_message::signed_msg_hash;
use lightning_signer::bitcoin::{Address, CompressedPublicKey, PublicKey, ScriptBuf};
use std::str::FromStr;
use warden_policy::units::{format_duration, format_msat, format_utc};
use warden_policy::{AdminKey, RecoveryKind};

/// An admin's decision on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let the payment proceed.
    Approve,
    /// Refuse it.
    Reject,
    /// Put a rejected request to the admins again (needs the rule's quorum).
    Reopen,
}

impl Decision {
    /// "approve" or "reject", as signed.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Reopen => "reopen",
        }
    }
}

/// What a request asks the admins to allow: the subject part of the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A payment.
    Payment {
        /// Payment hash (zeros on-chain).
        payment_hash: [u8; 32],
        /// Total amount.
        amount_msat: u64,
        /// Destinations with amounts, see the module docs.
        payee: String,
    },
    /// A new policy file.
    PolicyChange {
        /// SHA-256 of the proposed text.
        hash: [u8; 32],
        /// Whether any of its changes loosens (then it waits `delay_secs` after the quorum).
        loosens: bool,
        /// Seconds between the quorum and the change taking effect.
        delay_secs: u64,
    },
    /// A break-glass action started by the recovery key.
    Recovery {
        /// Which action.
        action: RecoveryKind,
        /// SHA-256 of its parameters (replace-admins: the new policy's text; unfreeze: the
        /// freeze's id).
        params_hash: [u8; 32],
        /// The earliest time it may be executed.
        earliest_at: u64,
    },
    /// Lifting one freeze.
    Unfreeze {
        /// The freeze's id (wardend's `FreezeState::id`), which covers the rest.
        freeze_id: [u8; 32],
        /// When it froze.
        since: u64,
        /// Who froze it.
        by: String,
        /// Why.
        reason: String,
    },
}

impl Subject {
    fn kind(&self) -> u8 {
        match self {
            Subject::Payment { .. } => 1,
            Subject::PolicyChange { .. } => 2,
            Subject::Unfreeze { .. } => 3,
            Subject::Recovery { .. } => 4,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Subject::Payment {
                payment_hash,
                amount_msat,
                payee,
            } => {
                let mut b = Vec::with_capacity(44 + payee.len());
                b.extend_from_slice(payment_hash);
                b.extend_from_slice(&amount_msat.to_be_bytes());
                b.extend_from_slice(&(payee.len() as u32).to_be_bytes());
                b.extend_from_slice(payee.as_bytes());
                b
            }
            Subject::PolicyChange {
                hash,
                loosens,
                delay_secs,
            } => {
                let mut b = Vec::with_capacity(41);
                b.extend_from_slice(hash);
                b.push(u8::from(*loosens));
                b.extend_from_slice(&delay_secs.to_be_bytes());
                b
            }
            Subject::Unfreeze { freeze_id, .. } => freeze_id.to_vec(),
            Subject::Recovery {
                action,
                params_hash,
                earliest_at,
            } => {
                let mut b = Vec::with_capacity(41);
                b.push(action.code());
                b.extend_from_slice(params_hash);
                b.extend_from_slice(&earliest_at.to_be_bytes());
                b
            }
        }
    }

    /// The subject's lines of [`approval_text`].
    fn text(&self) -> String {
        match self {
            Subject::Payment {
                payment_hash,
                amount_msat,
                payee,
            } => format!(
                "amount: {} ({} msat)\npayee: {}\npayment hash: {}",
                format_msat(*amount_msat),
                amount_msat,
                payee,
                hex::encode(payment_hash)
            ),
            Subject::PolicyChange {
                hash,
                loosens,
                delay_secs,
            } => format!(
                "change: the policy becomes {}\neffect: {}",
                hex::encode(hash),
                if *loosens {
                    format!(
                        "loosens; takes effect {} after the quorum, unless an admin vetoes it",
                        format_duration(*delay_secs)
                    )
                } else {
                    "tightens only; takes effect when the quorum signs".to_string()
                }
            ),
            Subject::Unfreeze {
                freeze_id,
                since,
                by,
                reason,
            } => format!(
                "action: lift the freeze {} of {} by {by} (\"{reason}\"); payments resume when the quorum signs",
                hex::encode(freeze_id),
                format_utc(*since)
            ),
            Subject::Recovery {
                action,
                params_hash,
                earliest_at,
            } => format!(
                "recovery: {} with parameters {}\nexecutable: from {} ({earliest_at}), unless the admins' quorum cancels it first",
                action.as_str(),
                hex::encode(params_hash),
                format_utc(*earliest_at)
            ),
        }
    }
}

/// The fields an approval signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalFields<'a> {
    /// Request id.
    pub id: &'a str,
    /// What is approved.
    pub subject: Subject,
    /// The policy in force when the request was made.
    pub policy_hash: [u8; 32],
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// The approval rule whose quorum governs the request ("governance" for a policy change).
    pub rule_tag: &'a str,
    /// Signatures that rule needs.
    pub need: usize,
    /// The admins who may sign, in any order (the digest sorts them).
    pub members: Vec<String>,
}

/// The digest an admin signs (BIP-340) for `decision`.
pub fn approval_digest(f: &ApprovalFields, decision: Decision) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(b"warden/approval/v2");
    let var = |e: &mut sha256::HashEngine, b: &[u8]| {
        e.input(&(b.len() as u32).to_be_bytes());
        e.input(b);
    };
    e.input(&[f.subject.kind()]);
    var(&mut e, f.id.as_bytes());
    var(&mut e, &f.subject.bytes());
    var(&mut e, f.rule_tag.as_bytes());
    let mut members: Vec<&str> = f.members.iter().map(String::as_str).collect();
    members.sort_unstable();
    e.input(&(f.need as u32).to_be_bytes());
    e.input(&(members.len() as u32).to_be_bytes());
    for m in members {
        var(&mut e, m.as_bytes());
    }
    e.input(&f.policy_hash);
    e.input(&f.expires_at.to_be_bytes());
    var(&mut e, decision.as_str().as_bytes());
    sha256::Hash::from_engine(e).to_byte_array()
}

/// The human-readable text a hardware-wallet admin signs as a Bitcoin message. It shows what
/// the admin is approving and ends with the digest, so the text and the digest cannot disagree.
pub fn approval_text(f: &ApprovalFields, decision: Decision) -> String {
    format!(
        "Warden approval\ndecision: {}\nrequest: {}\n{}\nrule: {} ({} of {})\nexpires: {} ({})\npolicy: {}\ndigest: {}",
        decision.as_str(),
        f.id,
        f.subject.text(),
        f.rule_tag,
        f.need,
        {
            let mut m = f.members.clone();
            m.sort_unstable();
            m.join(", ")
        },
        format_utc(f.expires_at),
        f.expires_at,
        hex::encode(f.policy_hash),
        hex::encode(approval_digest(f, decision))
    )
}

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

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature does not verify.
    #[error("the {format} signature from admin \"{admin}\" does not verify over request {id}'s {decision} digest: it was made for another request or decision, or with another key")]
    BadSignature {
        /// The admin.
        admin: String,
        /// The request.
        id: String,
        /// The format used.
        format: &'static str,
        /// The decision.
        decision: &'static str,
    },
    /// The format does not match how the admin is declared.
    #[error(
        "admin \"{admin}\" is declared with {declared}, so approvals from them must be {expected}"
    )]
    WrongFormat {
        /// The admin.
        admin: String,
        /// "a public key" or "an address".
        declared: &'static str,
        /// The format expected.
        expected: &'static str,
    },
}

/// An admin's BIP-340 signature over `decision` on the request `fields` describes: what
/// `wardenctl approve` sends, for an admin declared with `pubkey`.
pub fn sign_bip340(keypair: &Keypair, fields: &ApprovalFields, decision: Decision) -> [u8; 64] {
    let digest = approval_digest(fields, decision);
    Secp256k1::signing_only()
        .sign_schnorr(&Message::from_digest(digest), keypair)
        .serialize()
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
) -> Result<(), SignatureError> {
    let bad = || SignatureError::BadSignature {
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
        (AdminKey::PublicKey(_), _) => Err(SignatureError::WrongFormat {
            admin: admin.into(),
            declared: "a public key",
            expected: "BIP-340 signatures",
        }),
        (AdminKey::Address(_), _) => Err(SignatureError::WrongFormat {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ApprovalFields<'static> {
        ApprovalFields {
            id: "rq-0123456789abcdef",
            subject: Subject::Payment {
                payment_hash: [7; 32],
                amount_msat: 1_500_000_000,
                payee: "node 02ab=1500000000".into(),
            },
            policy_hash: [9; 32],
            expires_at: 1_795_438_800,
            rule_tag: "large-payment-quorum",
            need: 2,
            members: vec!["alice".into(), "bob".into(), "carol".into()],
        }
    }

    #[test]
    fn every_field_and_the_decision_change_the_digest() {
        let base = approval_digest(&fields(), Decision::Approve);
        assert_ne!(base, approval_digest(&fields(), Decision::Reject));
        let mut variants = Vec::new();
        let mut f = fields();
        f.id = "rq-other";
        variants.push(f);
        for change in 0..3 {
            let mut f = fields();
            if let Subject::Payment {
                payment_hash,
                amount_msat,
                payee,
            } = &mut f.subject
            {
                match change {
                    0 => payment_hash[0] = 0,
                    1 => *amount_msat += 1,
                    _ => payee.push('0'),
                }
            }
            variants.push(f);
        }
        let mut f = fields();
        f.policy_hash[31] = 0;
        variants.push(f);
        let mut f = fields();
        f.expires_at += 1;
        variants.push(f);
        let mut f = fields();
        f.rule_tag = "small-quorum";
        variants.push(f);
        let mut f = fields();
        f.need = 1;
        variants.push(f);
        let mut f = fields();
        f.members.pop();
        variants.push(f);
        // The members are a set: their order does not change what is signed.
        let mut f = fields();
        f.members.reverse();
        assert_eq!(approval_digest(&f, Decision::Approve), base);
        for v in variants {
            assert_ne!(approval_digest(&v, Decision::Approve), base, "{v:?}");
        }
    }

    #[test]
    fn a_policy_change_digest_covers_its_hash_its_class_and_its_delay() {
        let change = |hash: u8, loosens: bool, delay_secs: u64| ApprovalFields {
            subject: Subject::PolicyChange {
                hash: [hash; 32],
                loosens,
                delay_secs,
            },
            rule_tag: "governance",
            ..fields()
        };
        let base = approval_digest(&change(1, true, 60), Decision::Approve);
        for other in [
            change(2, true, 60),
            change(1, false, 60),
            change(1, true, 61),
        ] {
            assert_ne!(
                approval_digest(&other, Decision::Approve),
                base,
                "{other:?}"
            );
        }
        assert_ne!(approval_digest(&fields(), Decision::Approve), base);
        let t = approval_text(&change(1, true, 86_400), Decision::Reject);
        assert!(
            t.contains(&format!("change: the policy becomes {}\neffect: loosens; takes effect 24h after the quorum, unless an admin vetoes it", hex::encode([1u8; 32]))),
            "{t}"
        );
        let t = approval_text(&change(1, false, 0), Decision::Approve);
        assert!(
            t.contains("effect: tightens only; takes effect when the quorum signs"),
            "{t}"
        );
    }

    #[test]
    fn the_text_shows_the_payment_and_ends_with_the_digest() {
        let t = approval_text(&fields(), Decision::Approve);
        assert!(t.contains("decision: approve\nrequest: rq-0123456789abcdef\namount: 1,500,000 sat (1500000000 msat)"), "{t}");
        assert!(
            t.contains("expires: 2026-11-23 13:00:00 UTC (1795438800)"),
            "{t}"
        );
        assert!(t.ends_with(&format!(
            "digest: {}",
            hex::encode(approval_digest(&fields(), Decision::Approve))
        )));
    }

    #[test]
    fn a_bip340_signature_verifies_only_for_the_key_and_decision_it_was_made_for() {
        let secp = Secp256k1::new();
        let alice = Keypair::from_seckey_slice(&secp, &[1; 32]).unwrap();
        let mallory = Keypair::from_seckey_slice(&secp, &[2; 32]).unwrap();
        let declared = AdminKey::PublicKey(alice.public_key());
        let sig = sign_bip340(&alice, &fields(), Decision::Approve);
        let verify = |key: &AdminKey, decision, sig: &[u8]| {
            verify_key_signature(
                key,
                "alice",
                &fields(),
                decision,
                SignatureFormat::Bip340,
                sig,
            )
        };
        assert_eq!(verify(&declared, Decision::Approve, &sig), Ok(()));
        let err = verify(&declared, Decision::Reject, &sig).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the BIP-340 signature from admin \"alice\" does not verify over request \
             rq-0123456789abcdef's reject digest: it was made for another request or decision, \
             or with another key"
        );
        let forged = sign_bip340(&mallory, &fields(), Decision::Approve);
        assert!(matches!(
            verify(&declared, Decision::Approve, &forged),
            Err(SignatureError::BadSignature { .. })
        ));
        let by_address = AdminKey::Address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into());
        assert_eq!(
            verify(&by_address, Decision::Approve, &sig)
                .unwrap_err()
                .to_string(),
            "admin \"alice\" is declared with an address, so approvals from them must be \
             Bitcoin signed messages"
        );
    }
}
