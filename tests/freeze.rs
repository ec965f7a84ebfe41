//! The freeze: one admin stops every payment at once, it survives restarts, and lifting it
//! needs the governance quorum; emergency stops declared in the policy freeze by themselves.
//! In-process tests run the real admin API over mutual TLS with SoftHSM and sled; the last one
//! runs a real wardend behind VLS's real proxy.

mod common;

use common::api::{AdminHarness, PAYEE};
use common::cln::{Cln, Payee};
use common::daemon::QUORUM_RULES;
use std::sync::Arc;
use warden::api::proto;
use warden::core::LoadedPolicy;
use warden::policy::PaymentRequest;

fn small(n: u8) -> PaymentRequest {
    PaymentRequest::invoice([n; 32], 10_000_000, PAYEE, None)
}

/// The harness's policy with `rules` appended.
fn with_rules(h: &AdminHarness, rules: &str) -> LoadedPolicy {
    let text = format!("{}\n{rules}", h.core.policy().text);
    LoadedPolicy {
        policy: Arc::new(warden::policy::parse_policy(&text).unwrap_or_else(|e| panic!("{e:?}"))),
        text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admin_freezes_at_once_and_lifting_the_freeze_needs_the_governance_quorum() {
    let h = AdminHarness::start().await;
    assert!(h.core.decide_payment(&small(1), None).approved);
    let mut events = h
        .client("alice")
        .await
        .watch_events(proto::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let f = h
        .client("erin")
        .await
        .freeze(proto::FreezeRequest {
            reason: "suspicious withdrawals".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(f.created);
    assert_eq!(
        (f.by.as_str(), f.reason.as_str()),
        ("erin", "suspicious withdrawals")
    );
    let e = common::daemon::next_event(&mut events, proto::EventKind::Freeze).await;
    assert!(e.message.contains("frozen by erin"), "{}", e.message);
    let answer = h.core.decide_payment(&small(2), None);
    assert!(!answer.approved);
    assert_eq!(answer.tags, vec!["warden-frozen"]);
    assert!(
        answer.reason.contains("suspicious withdrawals"),
        "{}",
        answer.reason
    );
    let status = h
        .client("alice")
        .await
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.frozen.contains("by erin: suspicious withdrawals"),
        "{}",
        status.frozen
    );
    // Freezing again changes nothing: the first freeze stands.
    let again = h
        .client("bob")
        .await
        .freeze(proto::FreezeRequest {
            reason: "me too".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created && again.by == "erin", "{again:?}");
    // A viewer cannot freeze, and a freeze needs a reason.
    let e = h
        .client("auditor")
        .await
        .freeze(proto::FreezeRequest {
            reason: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = h
        .client("alice")
        .await
        .freeze(proto::FreezeRequest {
            reason: " ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("a freeze needs a reason"),
        "{}",
        e.message()
    );

    let u = h
        .client("alice")
        .await
        .unfreeze(proto::UnfreezeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let r = u.request.unwrap();
    assert_eq!(
        (r.kind.as_str(), r.rule_tag.as_str(), r.need),
        ("unfreeze", "governance", 2)
    );
    assert_eq!(r.freeze_by, "erin");
    // One admin cannot keep the signer frozen: refusing the unfreeze needs the quorum too.
    let out = h.sign("carol", &r, true).await.unwrap();
    assert!(
        out.message.contains("1 of 2 needed to refuse it"),
        "{}",
        out.message
    );
    // erin froze it but is outside the governance quorum: her approval does not count.
    let e = h.sign("erin", &r, false).await.unwrap_err();
    assert!(e.message().contains("not in the quorum"), "{}", e.message());
    h.sign("alice", &r, false).await.unwrap();
    assert!(
        !h.core.decide_payment(&small(3), None).approved,
        "one admin cannot lift it"
    );
    let out = h.sign("bob", &r, false).await.unwrap();
    assert!(
        out.message.contains("the freeze is lifted"),
        "{}",
        out.message
    );
    assert!(h.core.frozen().is_none());
    assert!(h.core.decide_payment(&small(4), None).approved);
    // Nothing left to lift.
    let e = h
        .client("alice")
        .await
        .unfreeze(proto::UnfreezeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_refusals_than_the_emergency_stop_allows_freeze_the_signer_by_themselves() {
    let h = AdminHarness::start().await;
    h.core
        .set_policy(with_rules(
            &h,
            "[emergency_stop]\nrefusals = { count = 2, within = \"10m\" }\n",
        ))
        .unwrap();
    let over_cap = |n: u8| PaymentRequest::invoice([n; 32], 6_000_000_000, PAYEE, None);
    for n in 1..=2 {
        assert!(!h.core.decide_payment(&over_cap(n), None).approved);
        assert!(
            h.core.frozen().is_none(),
            "two refusals are within the stop"
        );
    }
    assert!(!h.core.decide_payment(&over_cap(3), None).approved);
    let f = h
        .core
        .frozen()
        .expect("the third refusal within 10m freezes");
    assert_eq!(f.by, "emergency stop refusals");
    assert!(
        f.reason.contains("more than 2 payments refused within 10m"),
        "{}",
        f.reason
    );
    let answer = h.core.decide_payment(&small(9), None);
    assert_eq!(answer.tags, vec!["warden-frozen"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_failure_freezes_the_signer_when_the_policy_says_so_and_not_otherwise() {
    let h = AdminHarness::start().await;
    h.core.set_hsm_health(Err("token removed".into()));
    h.core.set_hsm_health(Ok(()));
    assert!(
        h.core.frozen().is_none(),
        "no [emergency_stop]: an HSM failure only refuses while it lasts"
    );
    h.core
        .set_policy(with_rules(&h, "[emergency_stop]\naudit_failure = true\n"))
        .unwrap();
    h.core.set_hsm_health(Err("token removed".into()));
    h.core.set_hsm_health(Ok(()));
    let f = h.core.frozen().expect("frozen by the stop");
    assert_eq!(f.by, "emergency stop audit_failure");
    assert!(f.reason.contains("token removed"), "{}", f.reason);
    assert_eq!(
        h.core.decide_payment(&small(1), None).tags,
        vec!["warden-frozen"],
        "the HSM is back, the freeze stays"
    );
}

#[test]
fn emergency_stop_errors_name_the_key_and_what_to_write() {
    let admins = "version = 1\n[admins]\nalice = { pubkey = \"02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828\" }\n";
    for (rules, expected) in [
        (
            "[emergency_stop]\nwindow_percent = 150\n",
            "`window_percent` in [emergency_stop] is 150; it must be between 1 and 100",
        ),
        (
            "[emergency_stop]\nrefusals = { count = 0, within = \"1m\" }\n",
            "`count` in `refusals` in [emergency_stop] must be at least 1",
        ),
        (
            "[emergency_stop]\nrefusals = { count = 5 }\n",
            "is missing `within`; write refusals = { count = 20, within = \"10m\" }",
        ),
        (
            "[emergency_stop]\nrefusals = 5\n",
            "`refusals` in [emergency_stop] must be a table",
        ),
        (
            "[emergency_stop]\nfreeze_on_tuesdays = true\n",
            "unknown key `freeze_on_tuesdays` in [emergency_stop]",
        ),
    ] {
        let errors = warden::policy::parse_policy(&format!("{admins}{rules}")).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.line == 5 && e.message.contains(expected)),
            "{rules}: {errors:?}"
        );
    }
}

/// A real wardend behind VLS's real proxy: frozen by one admin, payments are refused answers
/// (the proxy keeps serving and other requests are answered), the freeze survives a restart,
/// and two admins lift it with wardenctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_survives_a_restart_refuses_without_stopping_the_node_and_two_admins_lift_it() {
    let mut cln = Cln::start("freeze", QUORUM_RULES).await;
    cln.init();
    let payee = Payee::new(0x61);
    let ctl = |cln: &Cln, admin: &str, args: &[&str]| {
        let out = tokio::task::block_in_place(|| cln.wardenctl(admin, args));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(tokio::task::block_in_place(
        || cln.preapprove(&payee.invoice(50_000_000, 1))
    ));
    let (code, out, err) = ctl(&cln, "carol", &["freeze", "--reason", "incident 42"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the signer is frozen"), "{out}");
    assert!(!tokio::task::block_in_place(
        || cln.preapprove(&payee.invoice(50_000_000, 2))
    ));
    assert!(
        tokio::task::block_in_place(|| cln.still_serves()),
        "a refusal is an answer: the node keeps its signer"
    );

    cln.stop_wardend();
    cln.start_wardend();
    let (_, out, _) = ctl(&cln, "alice", &["status"]);
    assert!(
        out.contains("FROZEN") && out.contains("by carol: incident 42"),
        "{out}"
    );
    assert!(!tokio::task::block_in_place(
        || cln.preapprove(&payee.invoice(50_000_000, 3))
    ));

    let (code, out, err) = ctl(&cln, "alice", &["unfreeze"]);
    assert_eq!(code, 0, "{err}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("uf-"))
        .unwrap()
        .trim_end_matches(';')
        .to_string();
    let (code, out, _) = ctl(&cln, "bob", &["show", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("lifts        the freeze of") && out.contains("by carol: incident 42"),
        "{out}"
    );
    for admin in ["alice", "bob"] {
        let key = cln.admin_key(admin);
        let (code, _, err) = ctl(&cln, admin, &["approve", &id, "--key", &key]);
        assert_eq!(code, 0, "{admin}: {err}");
    }
    assert!(tokio::task::block_in_place(
        || cln.preapprove(&payee.invoice(50_000_000, 4))
    ));
}

/// A freeze applies to the very next request (the live state changes with the transaction,
/// under the store's writer slot), and a transaction that is discarded takes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_in_a_discarded_transaction_is_taken_back() {
    let h = AdminHarness::start().await;
    let txn = h.core.store().begin().unwrap();
    let (_, created) = h.core.freeze("alice", "staged").unwrap();
    assert!(created);
    assert!(h.core.frozen().is_some(), "frozen as soon as it is applied");
    txn.abort();
    assert!(
        h.core.frozen().is_none(),
        "the discarded freeze is gone from memory"
    );
    assert!(h.core.decide_payment(&small(1), None).approved);
    // Committed, it stays.
    h.core.freeze("alice", "for real").unwrap();
    assert_eq!(h.core.frozen().unwrap().reason, "for real");
}

/// Issue 25, items 11 and 12: admin powers follow the policy in force (a certificate of the
/// CA whose name the policy no longer declares can do nothing), and only such certificates
/// count toward the `auth_failures` emergency stop, never handshakes without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_admins_certificate_has_no_power_and_only_it_trips_the_auth_failure_stop() {
    let h = AdminHarness::start().await;
    // erin is removed from [admins] (and from the one rule naming her), and the stop declared.
    let text = h.core.policy().text;
    let kept: Vec<&str> = text
        .split("# Holds nothing")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("erin ="))
        .collect();
    let text = format!(
        "{}\n[emergency_stop]\nauth_failures = {{ count = 2, within = \"10m\" }}\n",
        kept.join("\n")
    );
    h.core
        .set_policy(LoadedPolicy {
            policy: Arc::new(
                warden::policy::parse_policy(&text).unwrap_or_else(|e| panic!("{e:?}")),
            ),
            text,
        })
        .unwrap();
    // Anyone who can reach the port: five handshakes without a certificate freeze nothing.
    let ca = std::fs::read(&h.pki.ca_cert).unwrap();
    for _ in 0..5 {
        if let Ok(mut c) = h.client_with(None, &ca).await {
            assert!(c.status(proto::StatusRequest {}).await.is_err());
        }
    }
    assert!(
        h.core.frozen().is_none(),
        "unauthenticated traffic froze the signer"
    );
    // erin's certificate still chains to the admin CA, and may do nothing.
    let mut erin = h.client("erin").await;
    let e = erin
        .freeze(proto::FreezeRequest {
            reason: "I was an admin once".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().starts_with(
            "the certificate of erin names no admin of the policy in force ([admins])"
        ),
        "{}",
        e.message()
    );
    let e = erin
        .list_pending(proto::ListPendingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        h.core.frozen().is_none(),
        "two refusals are within the stop"
    );
    let _ = erin.status(proto::StatusRequest {}).await.unwrap_err();
    let f = h
        .core
        .frozen()
        .expect("the third refusal of erin's certificate trips the stop");
    assert_eq!(f.by, "emergency stop auth_failures");
}
