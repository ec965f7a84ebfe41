//! The bodies of the fuzz targets under `fuzz/`, here so that a stable `cargo test`
//! (`tests/fuzz_regressions.rs`) replays every saved input through exactly the code the fuzzer
//! ran, without a nightly toolchain. Each function takes any bytes and panics only when a
//! property Warden promises is broken; an input that merely fails to parse is fine.

use lightning_signer::bitcoin::Network;
use std::sync::OnceLock;
use warden::approval::{verify_admin_signature, ApprovalFields, Decision, SignatureFormat};
use warden::policy::{evaluate, explain::explain, parse_policy_for, Policy, VelocityState};

/// Inputs larger than this are not interesting and only slow the fuzzer down.
const MAX_INPUT: usize = 256 * 1024;

fn default_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        parse_policy_for(warden::policy::DEFAULT_POLICY, Network::Regtest)
            .expect("the embedded default policy loads")
    })
}

/// Any bytes as a policy file: a policy or positioned errors, never a panic. A policy that
/// loads is explained, and the explanation names every rule the file declares.
pub fn policy_file(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_policy_for(text, Network::Regtest) {
        Ok(policy) => {
            let shown = explain(&policy);
            for tag in policy
                .limits
                .iter()
                .map(|r| &r.tag)
                .chain(policy.approvals.iter().map(|r| &r.tag))
                .chain(policy.deny.iter().map(|r| &r.tag))
            {
                assert!(shown.contains(tag.as_str()), "explain omits rule {tag}");
            }
        }
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "a refused file names at least one problem"
            );
            assert!(
                errors.len() <= warden::policy::MAX_REPORTED_ERRORS + 1,
                "{} problems listed",
                errors.len()
            );
            for e in &errors {
                assert!(
                    e.line >= 1 && e.col >= 1,
                    "unpositioned error: {}",
                    e.message
                );
                assert!(!e.message.is_empty());
            }
        }
    }
}

/// Any bytes as an admin's decision request (protobuf), verified as the API does against a
/// real policy's admins (one key, one address): a random signature must never verify.
pub fn admin_request(data: &[u8]) {
    use prost::Message;
    let Ok(req) = warden::api::proto::DecisionRequest::decode(data) else {
        return;
    };
    let policy = default_policy();
    let members: Vec<String> = policy.admins.keys().cloned().collect();
    let fields = ApprovalFields {
        id: &req.id,
        subject: warden::approval::Subject::Payment {
            payment_hash: [7; 32],
            amount_msat: 2_000_000_000,
            payee: "02".repeat(33),
        },
        policy_hash: policy.hash,
        expires_at: 1_800_000_000,
        rule_tag: "large-payment-quorum",
        need: 2,
        members,
    };
    let format = match warden::api::proto::SignatureFormat::try_from(req.format) {
        Ok(warden::api::proto::SignatureFormat::BitcoinMessage) => SignatureFormat::BitcoinMessage,
        _ => SignatureFormat::Bip340,
    };
    for decision in [Decision::Approve, Decision::Reject, Decision::Reopen] {
        let verdict = verify_admin_signature(
            policy,
            &req.admin,
            &fields,
            decision,
            format,
            &req.signature,
        );
        assert!(
            verdict.is_err(),
            "a fuzzed signature verified for {}",
            req.admin
        );
    }
}

/// Any bytes as an hsmd request body, through Warden's path before VLS: decode, the invoice
/// pre-screen, and the payment the approver would hand the policy, evaluated.
pub fn hsmd_request(data: &[u8]) {
    use vls_protocol::msgs::{self, Message};
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(msg) = msgs::from_vec(data.to_vec()) else {
        return;
    };
    if let Some(refused) = warden::signer::stream::screen(1, &msg) {
        assert!(refused.why.contains(refused.tag));
        return;
    }
    if let Message::PreapproveInvoice(m) = &msg {
        // Passed the screen: parsable, and a BOLT 11 invoice has an amount.
        let text = std::str::from_utf8(&m.invstring.0).expect("screened as text");
        let invoice: lightning_signer::invoice::Invoice =
            text.parse().expect("screened as an invoice");
        let req = warden::signer::approver::WardenApprover::request_for_invoice(&invoice);
        let _ = evaluate(
            default_policy(),
            &req,
            &VelocityState::default(),
            1_700_000_000,
        );
    }
}

/// Any bytes as a sealed seed file: parsed or refused with a reason; a parsed blob writes
/// back to exactly the same bytes.
pub fn sealed_seed(data: &[u8]) {
    if let Ok(sealed) = warden::hsm::SealedSeed::from_bytes(data) {
        assert_eq!(sealed.to_bytes(), data, "a sealed seed does not round-trip");
    }
}

/// Any bytes as a stored audit record or checkpoint: decoded or refused, and a decoded record
/// goes through the verifier without a panic, and never verifies as signed: the key is a
/// point nobody knows the discrete logarithm of (BIP 341's NUMS point), so no checkpoint can
/// carry a valid signature by it.
pub fn audit_record(data: &[u8]) {
    use warden::audit::verify::{verify, Finding};
    if data.len() > MAX_INPUT {
        return;
    }
    let key = lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(
        &hex::decode("0250929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")
            .expect("hex"),
    )
    .expect("the NUMS point");
    if let Ok(record) = serde_json::from_slice::<warden::audit::AuditRecord>(data) {
        let _ = verify(&[record], &[], &key);
    }
    if let Ok(checkpoint) = serde_json::from_slice::<warden::audit::Checkpoint>(data) {
        let finding = verify(&[], &[checkpoint], &key);
        assert!(
            !matches!(finding, Finding::Ok { .. }),
            "a checkpoint verified under a key nobody holds: {finding:?}"
        );
    }
}
