//! Quorum approvals over the real admin API: mutual TLS 1.3 on loopback, sled in a temp dir,
//! real admin keys (BIP-340) and real Bitcoin signed messages.

mod common;

use common::api::{AdminHarness, PAYEE};
use tonic::Code;
use warden::api::proto::{self, DecisionRequest, SignatureFormat};
use warden::approval::keys::AdminKey;
use warden::clock::Clock;
use warden::policy::PaymentRequest;
use warden::store::Namespace;

fn approve_req(id: &str, admin: &str, key: &AdminKey, digest: &[u8]) -> DecisionRequest {
    DecisionRequest {
        id: id.into(),
        admin: admin.into(),
        format: SignatureFormat::Bip340 as i32,
        signature: key.sign_digest(digest.try_into().unwrap()).to_vec(),
        reason: String::new(),
    }
}

/// Each of `admins` approves `id` over `digest` with its own key and certificate.
async fn approve_all(h: &AdminHarness, id: &str, admins: &[&str], digest: &[u8]) {
    for admin in admins {
        h.client(admin)
            .await
            .approve(approve_req(id, admin, h.key(admin), digest))
            .await
            .unwrap_or_else(|e| panic!("{admin} approves {id}: {e}"));
    }
}

async fn pending(h: &AdminHarness, id: &str) -> proto::ApprovalRequest {
    h.client("alice")
        .await
        .get_request(proto::GetRequestRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn two_admins_approve_then_the_payment_passes_exactly_once() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(1_500_000, 1);
    let r = pending(&h, &id).await;
    assert_eq!(r.state, proto::RequestState::Pending as i32);
    assert_eq!((r.need, r.amount_msat), (2, 1_500_000_000));
    assert_eq!(r.destinations, vec![format!("node {PAYEE}")]);
    assert_eq!(r.rule_tag, "large-payment-quorum");
    assert_eq!(
        r.invoice, "",
        "an invoice carries its payment secret: never returned"
    );

    let out = h
        .client("alice")
        .await
        .approve(approve_req(
            &id,
            "alice",
            h.key("alice"),
            &r.approval_digest,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        out.message,
        format!("alice approved request {id} (1 of 2 needed)")
    );
    assert!(
        !h.core.decide_payment(&req, None).approved,
        "one approval is not a quorum"
    );

    let out = h
        .client("bob")
        .await
        .approve(approve_req(&id, "bob", h.key("bob"), &r.approval_digest))
        .await
        .unwrap()
        .into_inner();
    assert!(
        out.message.starts_with("quorum reached (2 of 2)"),
        "{}",
        out.message
    );
    assert_eq!(
        out.request.unwrap().state,
        proto::RequestState::Approved as i32
    );

    let answer = h.core.decide_payment(&req, None);
    assert!(answer.approved, "{answer:?}");
    assert_eq!(answer.request_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        pending(&h, &id).await.state,
        proto::RequestState::Consumed as i32
    );

    // A consumed approval cannot pay twice: the same payment is held again, under a new request.
    let again = h.core.decide_payment(&req, None);
    assert!(!again.approved);
    assert_ne!(again.request_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn the_same_admin_twice_leaves_the_request_pending() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 2);
    let digest = pending(&h, &id).await.approval_digest;
    let mut c = h.client("alice").await;
    c.approve(approve_req(&id, "alice", h.key("alice"), &digest))
        .await
        .unwrap();
    let err = c
        .approve(approve_req(&id, "alice", h.key("alice"), &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!("admin \"alice\" has already signed request {id}; the same admin cannot count twice: another admin must sign")
    );
    assert_eq!(
        pending(&h, &id).await.state,
        proto::RequestState::Pending as i32
    );
}

#[tokio::test]
async fn a_third_partys_key_is_refused() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 3);
    let digest = pending(&h, &id).await.approval_digest;
    let mallory = AdminKey::generate();
    let mut c = h.client("alice").await;
    // Mallory's key claiming to be alice: the signature does not verify under alice's key.
    let err = c
        .approve(approve_req(&id, "alice", &mallory, &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("signature from admin \"alice\" does not verify"),
        "{}",
        err.message()
    );
    // Mallory as herself (through a relay, which may submit anyone's): not an admin.
    let mut c = h.client("relay").await;
    let err = c
        .approve(approve_req(&id, "mallory", &mallory, &digest))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "admin \"mallory\" is not declared in the policy's [admins]; only declared admins can sign"
    );
    // Erin is an admin, but not in this rule's quorum.
    let err = c
        .approve(approve_req(&id, "erin", h.key("erin"), &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("not in the quorum of rule large-payment-quorum (alice, bob, carol, dave)"),
        "{}",
        err.message()
    );
    assert!(pending(&h, &id).await.signatures.is_empty());
}

#[tokio::test]
async fn a_malformed_or_wrong_signature_is_refused() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 4);
    let mut c = h.client("bob").await;
    let mut req = approve_req(&id, "bob", h.key("bob"), &[0u8; 32]);
    let err = c.approve(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    req.signature = vec![7u8; 64];
    assert_eq!(
        c.approve(req.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    req.signature = vec![1, 2, 3];
    assert_eq!(
        c.approve(req.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    req.format = 0;
    let err = c.approve(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "format must be BIP340 or BITCOIN_MESSAGE");
}

#[tokio::test]
async fn an_expired_request_cannot_be_approved() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_000_000, 5);
    let digest = pending(&h, &id).await.approval_digest;
    h.clock.advance(3_600);
    let err = h
        .client("alice")
        .await
        .approve(approve_req(&id, "alice", h.key("alice"), &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), format!("request {id} expired at 2026-11-23 13:00:00 UTC; the payment must be retried to open a new request"));
    assert_eq!(
        pending(&h, &id).await.state,
        proto::RequestState::Expired as i32
    );
    // The retried payment opens a fresh request.
    let answer = h.core.decide_payment(&req, None);
    assert_ne!(answer.request_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn an_approval_after_the_policy_changed_is_refused() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 6);
    let digest = pending(&h, &id).await.approval_digest;
    let text = common::api::policy_text(&h.keys, &h.wallet.p2wpkh, "changed");
    let policy = std::sync::Arc::new(warden::policy::parse_policy(&text).unwrap());
    let new_hash = policy.hash_hex();
    h.core
        .set_policy(warden::core::LoadedPolicy { policy, text })
        .unwrap();
    let err = h
        .client("alice")
        .await
        .approve(approve_req(&id, "alice", h.key("alice"), &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains(&format!("but policy {new_hash} is now in force")),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn an_approval_replayed_for_another_request_is_refused() {
    let h = AdminHarness::start().await;
    let (_, a) = h.hold(2_000_000, 7);
    let (_, b) = h.hold(2_000_000, 8);
    let digest_a = pending(&h, &a).await.approval_digest;
    let mut c = h.client("alice").await;
    let mut signed_for_a = approve_req(&a, "alice", h.key("alice"), &digest_a);
    signed_for_a.id = b.clone();
    let err = c.approve(signed_for_a).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains(&format!("over request {b}'s approve digest")),
        "{}",
        err.message()
    );
    // A rejection signature cannot be used as an approval either.
    let r = pending(&h, &a).await;
    let mut reject_as_approve = approve_req(&a, "alice", h.key("alice"), &r.reject_digest);
    reject_as_approve.id = a.clone();
    assert_eq!(
        c.approve(reject_as_approve).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn one_rejection_rejects_and_the_payment_stays_refused() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_000_000, 9);
    let r = pending(&h, &id).await;
    let mut c = h.client("carol").await;
    let mut rej = approve_req(&id, "carol", h.key("carol"), &r.reject_digest);
    rej.reason = "unknown counterparty".into();
    let out = c.reject(rej).await.unwrap().into_inner();
    assert_eq!(
        out.message,
        format!("request {id} rejected by carol; the payment will be refused")
    );
    let err = h
        .client("relay")
        .await
        .approve(approve_req(
            &id,
            "alice",
            h.key("alice"),
            &r.approval_digest,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        format!("request {id} is rejected; there is nothing left to sign")
    );
    // The node asks again: still refused, naming the rejection, and no fresh request for two
    // other admins to approve (a rejection is a veto, not a reset).
    for _ in 0..2 {
        let again = h.core.decide_payment(&req, None);
        assert!(!again.approved);
        assert_eq!(again.request_id.as_deref(), Some(id.as_str()));
        assert_eq!(
            again.reason,
            format!("request {id} for this payment was rejected by carol (\"unknown counterparty\"); the payment stays refused and is not put to the admins again unless the quorum re-opens it (wardenctl reopen {id})")
        );
    }
    assert!(
        pending(&h, &id).await.state == proto::RequestState::Rejected as i32,
        "the request stays rejected"
    );
    let open = h
        .client("alice")
        .await
        .list_pending(proto::ListPendingRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(open.is_empty(), "no new request was opened: {open:?}");
}

#[tokio::test]
async fn a_bitcoin_signed_message_from_the_declared_address_counts() {
    for (p2pkh, label) in [(false, "BIP137 P2WPKH"), (true, "Bitcoin Core P2PKH")] {
        let h = AdminHarness::start_full(|c| c, p2pkh).await;
        let (req, id) = h.hold(3_000_000, 10);
        let r = pending(&h, &id).await;
        let sig = if p2pkh {
            h.wallet.sign_core(&r.approval_text)
        } else {
            h.wallet.sign_bip137_p2wpkh(&r.approval_text)
        };
        // The wallet admin submits through its own certificate (or a relay's).
        let mut c = h.client("dave").await;
        let msg = |signature: Vec<u8>| DecisionRequest {
            id: id.clone(),
            admin: "dave".into(),
            format: SignatureFormat::BitcoinMessage as i32,
            signature,
            reason: String::new(),
        };
        // Another wallet's signature over the right text: refused.
        let other = common::api::WalletAdmin::new(0x43);
        let err = c
            .approve(msg(other.sign_core(&r.approval_text)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{label}");
        // The right wallet over different text: refused.
        let err = c
            .approve(msg(h.wallet.sign_core(&r.reject_text)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{label}");
        // A BIP-340 signature from an address admin: the wrong format, named.
        let err = c
            .approve(approve_req(&id, "dave", h.key("alice"), &r.approval_digest))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("declared with an address"),
            "{}",
            err.message()
        );

        let out = c.approve(msg(sig)).await.unwrap().into_inner();
        assert_eq!(
            out.message,
            format!("dave approved request {id} (1 of 2 needed)"),
            "{label}"
        );
        h.client("alice")
            .await
            .approve(approve_req(
                &id,
                "alice",
                h.key("alice"),
                &r.approval_digest,
            ))
            .await
            .unwrap();
        assert!(
            h.core.decide_payment(&req, None).approved,
            "{label}: the wallet approval counts toward the quorum"
        );
    }
}

#[tokio::test]
async fn a_burst_from_one_certificate_is_rate_limited_and_others_are_not() {
    let h = AdminHarness::start_with(|mut c| {
        c.rate_per_minute = 60;
        c.burst = 50;
        c
    })
    .await;
    let alice = h.client("alice").await;
    let results = futures::future::join_all((0..2_000).map(|_| {
        let mut c = alice.clone();
        async move { c.status(proto::StatusRequest {}).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert!(
        (50..=52).contains(&ok),
        "the burst of 50 (plus refill) passes: {ok}"
    );
    assert_eq!(
        ok + limited,
        2_000,
        "every other request is RESOURCE_EXHAUSTED"
    );
    let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        err.message()
            .contains("rate limit reached for this client certificate"),
        "{}",
        err.message()
    );
    // Bob has his own budget.
    h.client("bob")
        .await
        .status(proto::StatusRequest {})
        .await
        .unwrap();
}

/// Why a Status call with this client identity was not answered (`None`: it was answered).
/// A refused connection counts as a refusal.
async fn status_refusal(
    h: &AdminHarness,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    ca: &[u8],
) -> Option<tonic::Status> {
    match h.client_with(identity, ca).await {
        Ok(mut c) => c.status(proto::StatusRequest {}).await.err(),
        Err(_) => Some(tonic::Status::unavailable("connect refused")),
    }
}

#[tokio::test]
async fn clients_without_a_valid_certificate_are_refused_at_the_handshake() {
    let h = AdminHarness::start().await;
    let ca = std::fs::read(&h.pki.ca_cert).unwrap();
    // No certificate.
    let no_cert = status_refusal(&h, None, &ca).await;
    assert!(
        no_cert.is_some(),
        "a client without a certificate must not be served"
    );
    // A self-signed certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    let cert = p.self_signed(&key).unwrap();
    let self_signed = status_refusal(
        &h,
        Some((cert.pem().into_bytes(), key.serialize_pem().into_bytes())),
        &ca,
    )
    .await;
    assert!(
        self_signed.is_some(),
        "a self-signed certificate must be refused"
    );
    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let other_pki = warden::api::tls::init_pki(other.path(), &["alice".into()]).unwrap();
    let (_, c, k) = &other_pki.clients[0];
    let foreign = status_refusal(
        &h,
        Some((std::fs::read(c).unwrap(), std::fs::read(k).unwrap())),
        &ca,
    )
    .await;
    assert!(
        foreign.is_some(),
        "a certificate from an unknown CA must be refused"
    );
    // The failures were counted, and a valid client still gets through.
    let status = h
        .client("alice")
        .await
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.auth_failures >= 3, "{status:?}");
}

#[tokio::test]
async fn watch_events_delivers_a_new_pending_request() {
    let h = AdminHarness::start().await;
    let mut stream = h
        .client("carol")
        .await
        .watch_events(proto::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The server subscribed before it answered the call, so this event is delivered.
    let (_, id) = h.hold(4_000_000, 11);
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let e = stream.message().await.unwrap().unwrap();
            if e.kind == proto::EventKind::RequestCreated as i32 {
                return e;
            }
        }
    })
    .await
    .expect("the event arrives");
    assert_eq!(event.request_id, id);
    assert_eq!(event.tags, vec!["large-payment-quorum"]);
    assert_eq!(event.amount_msat, 4_000_000_000);
    assert!(
        event
            .message
            .contains("needs 2 of [alice, bob, carol, dave]"),
        "{}",
        event.message
    );
}

#[tokio::test]
async fn a_stored_signature_tampered_in_the_database_is_detected_at_use() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_500_000, 12);
    let digest = pending(&h, &id).await.approval_digest;
    h.client("alice")
        .await
        .approve(approve_req(&id, "alice", h.key("alice"), &digest))
        .await
        .unwrap();
    h.client("bob")
        .await
        .approve(approve_req(&id, "bob", h.key("bob"), &digest))
        .await
        .unwrap();
    // Play a compromised database: flip one hex digit of bob's stored signature.
    let store = h.core.store();
    let key = [b"r".as_slice(), id.as_bytes()].concat();
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get(Namespace::Approvals, &key).unwrap().unwrap()).unwrap();
    let sig = record["signatures"][1]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { '1' } else { '0' },
        &sig[1..]
    );
    record["signatures"][1]["signature"] = serde_json::Value::String(flipped);
    store.tamper(
        Namespace::Approvals,
        &key,
        Some(&serde_json::to_vec(&record).unwrap()),
    );
    let answer = h.core.decide_payment(&req, None);
    assert!(!answer.approved);
    assert!(
        answer.reason.contains(&format!(
            "the stored approvals of request {id} do not verify"
        )),
        "{}",
        answer.reason
    );
    assert!(
        answer.reason.contains("the signature of bob fails"),
        "{}",
        answer.reason
    );
}

#[tokio::test]
async fn a_database_cannot_forge_approval_by_editing_the_state() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_500_000, 13);
    let store = h.core.store();
    let key = [b"r".as_slice(), id.as_bytes()].concat();
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get(Namespace::Approvals, &key).unwrap().unwrap()).unwrap();
    record["state"] = serde_json::Value::String("approved".into());
    store.tamper(
        Namespace::Approvals,
        &key,
        Some(&serde_json::to_vec(&record).unwrap()),
    );
    let answer = h.core.decide_payment(&req, None);
    assert!(!answer.approved);
    assert!(
        answer
            .reason
            .contains("only 0 of 2 required signatures verify"),
        "{}",
        answer.reason
    );
}

#[tokio::test]
async fn status_and_policy_report_what_is_in_force() {
    let h = AdminHarness::start().await;
    h.hold(2_000_000, 14);
    let mut c = h.client("alice").await;
    let s = c
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let p = c
        .get_policy(proto::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.pending, 1);
    assert_eq!(s.policy_hash, p.policy_hash);
    assert_eq!(p.policy_hash, h.core.policy().policy.hash_hex());
    assert_eq!(p.text, h.core.policy().text);
    assert_eq!(s.policy_name, "test");
    let list = c
        .list_pending(proto::ListPendingRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.requests.len(), 1);
}

#[tokio::test]
async fn an_expired_request_is_marked_and_announced_once_by_the_sweep() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_500_000, 21);
    let mut events = h.core.events.subscribe();
    h.clock.advance(3_599);
    h.core.sweep().unwrap();
    assert!(events.try_recv().is_err(), "not expired one second early");
    h.clock.advance(1);
    h.core.sweep().unwrap();
    let e = events.try_recv().unwrap();
    assert_eq!(e.kind, warden::events::EventKind::RequestExpired);
    assert_eq!(e.request_id, id);
    assert!(
        e.message
            .contains("expired at 2026-11-23 13:00:00 UTC without its quorum (0 of 2 approvals)"),
        "{}",
        e.message
    );
    assert_eq!(
        h.core.approvals.get(&id).unwrap().state,
        warden::approval::RequestState::Expired
    );
    h.core.sweep().unwrap();
    assert!(events.try_recv().is_err(), "announced once");
    // The payment stays refused; asking again opens a new request.
    let again = h.core.decide_payment(&req, None);
    assert!(!again.approved);
    assert_ne!(again.request_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn failed_handshakes_are_audited_in_aggregate_and_a_knocking_address_is_dropped() {
    let h = AdminHarness::start_with(|c| warden::api::ApiConfig {
        auth_audit_secs: 1,
        ..c
    })
    .await;
    let ca = std::fs::read(&h.pki.ca_cert).unwrap();
    let before = warden::audit::read_records(h.core.store()).unwrap().len();
    let attempts = 40;
    for _ in 0..attempts {
        assert!(status_refusal(&h, None, &ca).await.is_some());
    }
    // Within a few seconds one aggregated record (or two, if the interval ticked mid-way)
    // holds every attempt; not one record per attempt.
    let mut counted = 0;
    let mut records = Vec::new();
    for _ in 0..50 {
        records = warden::audit::read_records(h.core.store())
            .unwrap()
            .into_iter()
            .skip(before)
            .filter(|r| r.kind == "auth-failures")
            .collect::<Vec<_>>();
        counted = records
            .iter()
            .map(|r| r.data["failures"].as_u64().unwrap())
            .sum::<u64>();
        if counted >= attempts {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counted, attempts, "every attempt counted: {records:?}");
    assert!(records.len() <= 2, "aggregated: {} records", records.len());
    let all = warden::audit::read_records(h.core.store()).unwrap();
    assert!(
        all.len() - before <= 4,
        "the log grew by {} records for {attempts} failed handshakes",
        all.len() - before
    );
    // After its budget of failures the address is dropped before any TLS work.
    let dropped = records
        .iter()
        .filter_map(|r| r.data["by_source"]["127.0.0.1"]["last_detail"].as_str())
        .any(|d| d.contains("dropped: too many failed handshakes from this address"));
    assert!(dropped, "{records:?}");
}

#[tokio::test]
async fn a_request_moved_under_a_weaker_rule_in_the_database_does_not_pay() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_500_000, 31);
    // With write access to the database and one admin key (erin's), move the request from
    // "2 of alice, bob, carol, dave" to the policy's "1 of erin" rule, and let erin approve it.
    let store = h.core.store();
    let key = [b"r".as_slice(), id.as_bytes()].concat();
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get(Namespace::Approvals, &key).unwrap().unwrap()).unwrap();
    record["rule_tag"] = "treasury-quorum".into();
    record["need"] = 1.into();
    record["of"] = serde_json::json!(["erin"]);
    store.tamper(
        Namespace::Approvals,
        &key,
        Some(&serde_json::to_vec(&record).unwrap()),
    );
    let digest = pending(&h, &id).await.approval_digest;
    let out = h
        .client("erin")
        .await
        .approve(approve_req(&id, "erin", h.key("erin"), &digest))
        .await
        .unwrap()
        .into_inner();
    assert!(out.message.contains("quorum reached"), "{}", out.message);
    // The live policy holds this payment under large-payment-quorum: erin's signature is over
    // another rule and quorum, so it does not count, and the payment is refused.
    let answer = h.core.decide_payment(&req, None);
    assert!(!answer.approved, "{answer:?}");
    assert!(
        answer.reason.contains("the signature of erin fails"),
        "{}",
        answer.reason
    );
    let used = h.core.with_engine(|e| {
        e.state()
            .totals(&warden::policy::LedgerKey::Node, h.clock.now(), 86_400)
            .amount_msat
    });
    assert_eq!(used, 0, "nothing counted");
}

#[tokio::test]
async fn an_approved_request_under_an_old_policy_gives_way_to_a_new_request() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_000_000, 41);
    let digest = pending(&h, &id).await.approval_digest;
    approve_all(&h, &id, &["alice", "bob"], &digest).await;
    let text = common::api::policy_text(&h.keys, &h.wallet.p2wpkh, "changed");
    let policy = std::sync::Arc::new(warden::policy::parse_policy(&text).unwrap());
    let old_hash = h.core.policy().policy.hash_hex();
    h.core
        .set_policy(warden::core::LoadedPolicy { policy, text })
        .unwrap();
    // The node retries: not paid on the old approvals, but a new request the admins can sign.
    let answer = h.core.decide_payment(&req, None);
    assert!(!answer.approved);
    let new_id = answer.request_id.clone().unwrap();
    assert_ne!(new_id, id);
    assert!(
        answer.reason.contains(&format!(
            "it replaces request {id}, made under policy {old_hash} which is no longer in force"
        )),
        "{}",
        answer.reason
    );
    let digest = pending(&h, &new_id).await.approval_digest;
    approve_all(&h, &new_id, &["alice", "carol"], &digest).await;
    assert!(
        h.core.decide_payment(&req, None).approved,
        "paid once, under the new policy"
    );
    assert!(!h.core.decide_payment(&req, None).approved, "and only once");
}

#[tokio::test]
async fn open_requests_are_capped_listed_by_page_and_pruned_after_their_retention() {
    let h = AdminHarness::start_approvals(warden::approval::ApprovalConfig {
        max_open: 3,
        retention_secs: 86_400,
        ..Default::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3u8 {
        ids.push(h.hold(2_000_000, 50 + n).1);
    }
    // The fourth distinct held payment is refused at the cap, with its tag; the same payment
    // asked again still finds its own request.
    let fourth = PaymentRequest::invoice([60; 32], 2_000_000_000, PAYEE, None);
    let answer = h.core.decide_payment(&fourth, None);
    assert!(!answer.approved);
    assert_eq!(answer.tags, vec!["warden-approval-capacity"]);
    assert!(
        answer.reason.contains(
            "3 approval requests are open, the configured limit is 3 (approvals.max_open)"
        ),
        "{}",
        answer.reason
    );
    let again = h.core.decide_payment(
        &PaymentRequest::invoice(
            [50; 32],
            2_000_000_000,
            PAYEE,
            Some("test payment 50".into()),
        ),
        None,
    );
    assert_eq!(again.request_id.as_deref(), Some(ids[0].as_str()));
    // Pages of two: the three requests, in order, then no token.
    let mut c = h.client("alice").await;
    let first = c
        .list_pending(proto::ListPendingRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.requests.len(), 2);
    assert_eq!(first.next_page_token, first.requests[1].id);
    let second = c
        .list_pending(proto::ListPendingRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.requests.len(), 1);
    assert!(second.next_page_token.is_empty());
    let mut listed: Vec<String> = first
        .requests
        .iter()
        .chain(&second.requests)
        .map(|r| r.id.clone())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let bad = c
        .list_pending(proto::ListPendingRequest {
            page_size: 2,
            page_token: "rq-nonexistent".into(),
        })
        .await
        .unwrap_err();
    assert!(
        bad.message().contains("list again from the first page"),
        "{}",
        bad.message()
    );
    // They expire after an hour; a day after that they are pruned, and the cap frees up.
    h.clock.advance(3_601);
    h.core.sweep().unwrap();
    assert!(
        h.core.approvals.get(&ids[0]).is_ok(),
        "expired, kept for the retention period"
    );
    h.clock.advance(86_400);
    h.core.sweep().unwrap();
    for id in &ids {
        assert!(
            matches!(
                h.core.approvals.get(id),
                Err(warden::approval::ApprovalError::NotFound(_))
            ),
            "{id} pruned"
        );
    }
    let records = warden::audit::read_records(h.core.store()).unwrap();
    assert!(
        records.iter().any(|r| r.kind == "event"
            && r.data["event"] == "request-created"
            && r.data["request_id"] == ids[0].as_str()),
        "the audit records of a pruned request stay"
    );
    let answer = h.core.decide_payment(&fourth, None);
    assert!(answer.request_id.is_some(), "the cap freed up: {answer:?}");
}

#[tokio::test]
async fn the_quorum_can_reopen_a_rejected_request_and_then_it_pays_once() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(2_000_000, 71);
    let r = pending(&h, &id).await;
    h.client("carol")
        .await
        .reject(approve_req(&id, "carol", h.key("carol"), &r.reject_digest))
        .await
        .unwrap();
    assert!(h
        .core
        .decide_payment(&req, None)
        .reason
        .contains("wardenctl reopen"));
    // Re-opening a request that is not rejected is refused.
    let (_, other) = h.hold(2_000_000, 72);
    let o = pending(&h, &other).await;
    let err = h
        .client("alice")
        .await
        .reopen(approve_req(
            &other,
            "alice",
            h.key("alice"),
            &o.reopen_digest,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        format!("request {other} is pending; only a rejected request can be re-opened")
    );
    // The rule's quorum (2) re-opens it; carol, who rejected it, may be one of them.
    let rejected = h
        .client("alice")
        .await
        .get_request(proto::GetRequestRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let first = h
        .client("alice")
        .await
        .reopen(approve_req(
            &id,
            "alice",
            h.key("alice"),
            &rejected.reopen_digest,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.message,
        format!("alice asked to re-open request {id} (1 of 2 needed)")
    );
    assert!(
        !h.core.decide_payment(&req, None).approved,
        "still refused until the quorum"
    );
    let second = h
        .client("carol")
        .await
        .reopen(approve_req(
            &id,
            "carol",
            h.key("carol"),
            &rejected.reopen_digest,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        second
            .message
            .contains("is re-opened and may be approved again"),
        "{}",
        second.message
    );
    let reopened = pending(&h, &id).await;
    assert_eq!(reopened.state, proto::RequestState::Pending as i32);
    assert!(reopened.signatures.is_empty());
    // Re-opened within the second it was created (the clock has not moved): still a new
    // digest, so an approval (or a veto) signed before the re-open does not verify for it.
    assert_ne!(reopened.approval_digest, r.approval_digest);
    assert_ne!(reopened.reject_digest, r.reject_digest);
    let stale = h
        .client("alice")
        .await
        .approve(approve_req(
            &id,
            "alice",
            h.key("alice"),
            &r.approval_digest,
        ))
        .await
        .unwrap_err();
    assert!(
        stale.message().contains("does not verify"),
        "{}",
        stale.message()
    );
    approve_all(&h, &id, &["alice", "bob"], &reopened.approval_digest).await;
    assert!(h.core.decide_payment(&req, None).approved);
    let kinds: Vec<String> = warden::audit::read_records(h.core.store())
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "reopen").count(),
        2,
        "each reopen signature is audited"
    );
}

#[tokio::test]
async fn a_certificate_signs_only_as_its_admin_unless_it_is_a_relay_and_a_viewer_only_reads() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 81);
    let digest = pending(&h, &id).await.approval_digest;
    // Alice's certificate carrying bob's (valid) signature: refused, nothing recorded.
    let err = h
        .client("alice")
        .await
        .approve(approve_req(&id, "bob", h.key("bob"), &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "the certificate of alice may submit only alice's own signatures, not bob's; a relay certificate (admin.relays) may submit others'"
    );
    assert!(pending(&h, &id).await.signatures.is_empty());
    // A viewer reads, and may not sign even its own way.
    let mut viewer = h.client("auditor").await;
    let listed = viewer
        .list_pending(proto::ListPendingRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.requests.len(), 1);
    let err = viewer
        .approve(approve_req(&id, "bob", h.key("bob"), &digest))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "the certificate of auditor is a viewer's (admin.viewers): it may read, not sign"
    );
    // A relay may submit any admin's signature.
    let out = h
        .client("relay")
        .await
        .approve(approve_req(&id, "bob", h.key("bob"), &digest))
        .await
        .unwrap()
        .into_inner();
    assert!(out.message.contains("bob approved"), "{}", out.message);
}

#[tokio::test]
async fn a_node_certificate_asks_for_status_and_reads_or_signs_nothing() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 85);
    let digest = pending(&h, &id).await.approval_digest;
    let mut node = h.client("lightningd").await;
    h.client("erin")
        .await
        .freeze(proto::FreezeRequest {
            reason: "suspected theft".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = node
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Issue 25, item 15: a node learns that the signer is up and frozen, nothing more: not
    // the pending requests, the windows, the freeze's reason or the recovery actions.
    assert_eq!(status.pending, 0);
    assert!(status.windows.is_empty(), "{:?}", status.windows);
    assert_eq!(status.frozen, "frozen");
    assert!(status.recovery.is_empty());
    assert!(status.policy_hash.is_empty());
    let admin_view = h
        .client("alice")
        .await
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admin_view.pending, 1);
    assert!(admin_view.frozen.contains("suspected theft"));
    let denied = |e: tonic::Status, what: &str| {
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(
            e.message(),
            format!("the certificate of lightningd is a node's (admin.nodes): it may ask for status, not {what}")
        );
    };
    denied(
        node.list_pending(proto::ListPendingRequest::default())
            .await
            .unwrap_err(),
        "read approval requests",
    );
    denied(
        node.get_request(proto::GetRequestRequest { id: id.clone() })
            .await
            .unwrap_err(),
        "read approval requests",
    );
    denied(
        node.get_policy(proto::GetPolicyRequest::default())
            .await
            .unwrap_err(),
        "read the policy",
    );
    denied(
        node.watch_events(proto::WatchEventsRequest::default())
            .await
            .unwrap_err(),
        "read events",
    );
    // Not even a valid admin signature passes through a node's certificate.
    denied(
        node.approve(approve_req(&id, "alice", h.key("alice"), &digest))
            .await
            .unwrap_err(),
        "sign",
    );
    assert!(pending(&h, &id).await.signatures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_whose_audit_record_cannot_be_written_is_not_kept() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 91);
    let digest = pending(&h, &id).await.approval_digest;
    // The next audit record is due a checkpoint (a minute has passed), and the HSM's audit key
    // is gone: the record cannot be written, so neither may the signature be.
    h.clock.advance(61);
    tokio::task::block_in_place(|| h.token.delete_audit_key());
    let err = h
        .client("alice")
        .await
        .approve(approve_req(&id, "alice", h.key("alice"), &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("the audit record of this signature could not be written"),
        "{}",
        err.message()
    );
    assert!(
        pending(&h, &id).await.signatures.is_empty(),
        "the signature was not stored"
    );
}
