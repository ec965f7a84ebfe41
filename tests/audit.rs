//! The audit log against a real SoftHSM token and real sled: every decision recorded and
//! chained, checkpoints signed in the HSM; tampering (edit, delete, reorder, truncate, forged
//! checkpoint) caught at the right record; an audit log that cannot be written refuses payments.

mod common;

use common::TestToken;
use lightning_signer::bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use std::sync::Arc;
use warden::approval::ApprovalConfig;
use warden::audit::verify::{verify_store, Finding};
use warden::audit::{checkpoint_digest, AuditConfig, AuditLog};
use warden::clock::{Clock, ManualClock};
use warden::core::{Core, LoadedPolicy};
use warden::policy::{parse_policy, PaymentRequest};
use warden::store::{Namespace, Store};

const PAYEE: &str = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
const T0: u64 = 1_795_435_200;

struct Setup {
    token: TestToken,
    hsm: warden::hsm::Hsm,
    core: Arc<Core>,
    audit: Arc<AuditLog>,
    store: Store,
    clock: ManualClock,
}

fn setup(label: &str, checkpoint_every: u64) -> Setup {
    setup_timed(label, checkpoint_every, 86_400)
}

fn setup_timed(label: &str, checkpoint_every: u64, checkpoint_secs: u64) -> Setup {
    let token = TestToken::new(label);
    let hsm = token.open();
    hsm.init(&token.data_dir, lightning_signer::bitcoin::Network::Regtest)
        .unwrap();
    let text = "version = 1\n[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"1_000_000 sat\"\n[[limit]]\ntag = \"daily\"\nwindow = \"24h\"\nmax_amount = \"1_000_000 sat\"\n".to_string();
    let policy = Arc::new(parse_policy(&text).unwrap());
    let clock = ManualClock::new(T0);
    let store = Store::open(&token.path().join("state")).unwrap();
    let audit = Arc::new(
        AuditLog::open(
            &store,
            Arc::new(hsm.clone()),
            AuditConfig {
                checkpoint_every,
                checkpoint_secs,
            },
        )
        .unwrap(),
    );
    let core = Arc::new(
        Core::open(
            store.clone(),
            LoadedPolicy { policy, text },
            ApprovalConfig::default(),
            Arc::new(clock.clone()),
            audit.clone(),
            Default::default(),
        )
        .unwrap(),
    );
    Setup {
        token,
        hsm,
        core,
        audit,
        store,
        clock,
    }
}

fn pay(s: &Setup, n: u8, sat: u64) -> warden::core::PaymentAnswer {
    s.clock.advance(10);
    s.core.decide_payment(
        &PaymentRequest::invoice([n; 32], sat * 1_000, PAYEE, None),
        None,
    )
}

/// A log of `n` decisions (and their events) with checkpoints every 3 records.
fn populated(label: &str, n: u8) -> Setup {
    let s = setup(label, 3);
    for i in 0..n {
        pay(&s, i, if i % 3 == 0 { 2_000_000 } else { 1_000 });
    }
    s.audit.checkpoint(s.clock.now()).unwrap();
    s
}

fn finding(s: &Setup) -> Finding {
    verify_store(
        &s.store,
        &s.hsm.audit_public_key().unwrap(),
        s.hsm.audit_anchor().unwrap().as_ref(),
    )
    .unwrap()
}

fn rkey(seq: u64) -> Vec<u8> {
    [&[b'r'][..], &seq.to_be_bytes()].concat()
}

#[test]
fn every_decision_is_recorded_and_the_log_verifies() {
    let s = populated("audit-ok", 6);
    let records = warden::audit::read_records(&s.store).unwrap();
    let decisions: Vec<_> = records.iter().filter(|r| r.kind == "decision").collect();
    assert_eq!(decisions.len(), 6);
    assert_eq!(decisions[0].data["verdict"], "deny");
    assert_eq!(decisions[0].data["tags"][0], "cap");
    assert_eq!(decisions[1].data["verdict"], "approve");
    assert_eq!(decisions[1].data["amount_msat"], 1_000_000);
    // A decision is recorded once, as the decision; its announcement is not a second record.
    assert!(!records
        .iter()
        .any(|r| r.kind == "event" && r.data["event"] == "payment-refused"));
    match finding(&s) {
        Finding::Ok {
            records: n,
            checkpoints,
            unsigned_tail,
        } => {
            assert_eq!(n as usize, records.len());
            assert!(
                checkpoints >= 3,
                "checkpoints every 3 records: {checkpoints}"
            );
            assert_eq!(unsigned_tail, 0);
        }
        bad => panic!("{bad:?}"),
    }
}

#[test]
fn an_edited_record_is_caught_at_that_record() {
    let s = populated("audit-edit", 6);
    let mut r: serde_json::Value =
        serde_json::from_slice(&s.store.get(Namespace::Audit, &rkey(5)).unwrap().unwrap()).unwrap();
    r["data"]["amount_msat"] = serde_json::json!(1);
    s.store.tamper(
        Namespace::Audit,
        &rkey(5),
        Some(&serde_json::to_vec(&r).unwrap()),
    );
    assert_eq!(
        finding(&s),
        Finding::Bad {
            seq: 5,
            problem: "record 5 was altered (its content does not match its hash)".into()
        }
    );
}

#[test]
fn a_deleted_record_is_caught_at_its_position() {
    let s = populated("audit-delete", 6);
    s.store.tamper(Namespace::Audit, &rkey(4), None);
    match finding(&s) {
        Finding::Bad { seq: 4, problem } => assert!(
            problem.contains("record 4 is missing or out of order"),
            "{problem}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reordered_records_are_caught() {
    let s = populated("audit-reorder", 6);
    let (a, b) = (
        s.store.get(Namespace::Audit, &rkey(3)).unwrap().unwrap(),
        s.store.get(Namespace::Audit, &rkey(4)).unwrap().unwrap(),
    );
    s.store.tamper(Namespace::Audit, &rkey(3), Some(&b));
    s.store.tamper(Namespace::Audit, &rkey(4), Some(&a));
    match finding(&s) {
        Finding::Bad { seq: 3, problem } => {
            assert!(problem.contains("found record 4 in its place"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_truncated_log_is_caught_even_with_the_checkpoints_that_covered_the_cut_removed() {
    let s = populated("audit-truncate", 6);
    let last = warden::audit::read_records(&s.store).unwrap().len() as u64;
    for seq in last - 2..=last {
        s.store.tamper(Namespace::Audit, &rkey(seq), None);
    }
    // With the checkpoint that covers the cut still there, the checkpoints catch it.
    match finding(&s) {
        Finding::Bad { problem, .. } => assert!(
            problem.contains("covers a record that is not in the log (truncated?)"),
            "{problem}"
        ),
        other => panic!("{other:?}"),
    }
    // Remove every checkpoint past the cut too: what is left is a valid chain with valid
    // checkpoints, and only the HSM's anchor shows that records were cut.
    for (k, _) in s.store.scan(Namespace::Audit, b"c").unwrap() {
        let seq = u64::from_be_bytes(k[1..].try_into().unwrap());
        if seq > last - 3 {
            s.store.tamper(Namespace::Audit, &k, None);
        }
    }
    match finding(&s) {
        Finding::Bad { seq, problem } => {
            assert_eq!(seq, last - 2);
            assert!(
                problem.contains("records were truncated or the log was rolled back"),
                "{problem}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_checkpoint_signed_by_another_key_is_caught() {
    let s = populated("audit-forge", 6);
    let (k, v) = s
        .store
        .scan(Namespace::Audit, b"c")
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let mut c: warden::audit::Checkpoint = serde_json::from_slice(&v).unwrap();
    let mut head = [0u8; 32];
    hex::decode_to_slice(&c.head, &mut head).unwrap();
    let forger = SecretKey::from_slice(&[9; 32]).unwrap();
    let sig = Secp256k1::new().sign_ecdsa(
        &Message::from_digest(checkpoint_digest(c.seq, &head, c.time)),
        &forger,
    );
    c.signature = hex::encode(sig.serialize_compact());
    s.store
        .tamper(Namespace::Audit, &k, Some(&serde_json::to_vec(&c).unwrap()));
    match finding(&s) {
        Finding::Bad { seq, problem } => {
            assert_eq!(seq, c.seq);
            assert!(
                problem.contains("is not signed by the HSM audit key"),
                "{problem}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn when_the_audit_record_cannot_be_written_the_payment_is_refused() {
    // Checkpoint on every record, then remove the HSM's audit key behind wardend's back: the
    // next audit record cannot be checkpointed, so the decision must fail closed.
    let s = setup("audit-failclosed", 1);
    assert!(pay(&s, 1, 1_000).approved);
    delete_audit_key(&s);
    let answer = pay(&s, 2, 1_000);
    assert!(!answer.approved, "no audit record, no approval: {answer:?}");
    assert_eq!(answer.tags, vec!["warden-audit-failure"]);
    assert!(
        answer
            .reason
            .contains("the audit record could not be written"),
        "{}",
        answer.reason
    );
    // An event raised while the HSM cannot sign is not recorded half-way: its record, whose
    // checkpoint could not be signed, is not committed with anything else.
    let before = warden::audit::read_records(&s.store).unwrap().len();
    let txn = s.store.begin().unwrap();
    s.core.events.emit(
        s.clock.now(),
        warden::events::EventKind::NodeConnection,
        "",
        &[],
        "an event during the outage".into(),
        0,
    );
    s.store
        .put(Namespace::Meta, b"test-other-write".to_vec(), vec![1])
        .unwrap();
    txn.commit().unwrap();
    let after = warden::audit::read_records(&s.store).unwrap();
    assert_eq!(after.len(), before, "no record without its checkpoint");
    assert!(
        !after
            .iter()
            .any(|r| r.data["message"] == "an event during the outage"),
        "the event's record was not committed"
    );
    assert!(
        !after
            .iter()
            .any(|r| r.kind == "event" && r.data["tags"][0] == "warden-audit-failure"),
        "nor the refusal's, made while the HSM could not sign"
    );
    assert!(s
        .store
        .get(Namespace::Meta, b"test-other-write")
        .unwrap()
        .is_some());
    // And the refused payment was not counted.
    let used = s.core.with_engine(|e| {
        e.state()
            .totals(&warden::policy::LedgerKey::Node, s.clock.now(), 86_400)
            .amount_msat
    });
    assert_eq!(used, 1_000_000);
}

#[test]
fn an_unsigned_tail_is_checkpointed_by_the_sweep_within_the_interval_without_new_records() {
    // Checkpoints every 100 records or 60 s: after the first record (signed at once, nothing
    // came before it) two payments leave an unsigned tail that no later record will trigger.
    let s = setup_timed("audit-timer", 100, 60);
    pay(&s, 1, 1_000);
    pay(&s, 2, 1_000);
    let tail = |s: &Setup| match finding(s) {
        Finding::Ok { unsigned_tail, .. } => unsigned_tail,
        bad => panic!("{bad:?}"),
    };
    assert!(
        tail(&s) > 0,
        "the second payment's records are not signed yet"
    );
    let signed_at = warden::audit::read_checkpoints(&s.store)
        .unwrap()
        .last()
        .unwrap()
        .time;
    s.clock.set(signed_at + 59);
    s.core.sweep().unwrap();
    assert!(
        tail(&s) > 0,
        "59 s after the last checkpoint nothing is due"
    );
    s.clock.advance(1);
    s.core.sweep().unwrap();
    assert_eq!(
        tail(&s),
        0,
        "60 s after the last checkpoint the sweep signed the tail"
    );
    let checkpoints = warden::audit::read_checkpoints(&s.store).unwrap();
    assert_eq!(checkpoints.last().unwrap().time, s.clock.now());
}

#[test]
fn a_rollback_to_an_earlier_checkpoint_is_caught_by_the_hsm_anchor_and_wardend_refuses_it() {
    let s = populated("audit-rollback", 9);
    let checkpoints = warden::audit::read_checkpoints(&s.store).unwrap();
    let records = warden::audit::read_records(&s.store).unwrap();
    assert!(checkpoints.len() >= 3, "{checkpoints:?}");
    // The attacker keeps an early checkpoint and deletes every checkpoint and record after it:
    // what remains is a consistent, fully signed, shorter chain.
    let keep = checkpoints[1].seq;
    for c in checkpoints.iter().filter(|c| c.seq > keep) {
        s.store.tamper(
            Namespace::Audit,
            &[&[b'c'][..], &c.seq.to_be_bytes()].concat(),
            None,
        );
    }
    for r in records.iter().filter(|r| r.seq > keep) {
        s.store.tamper(Namespace::Audit, &rkey(r.seq), None);
    }
    let key = s.hsm.audit_public_key().unwrap();
    assert!(
        matches!(
            verify_store(&s.store, &key, None).unwrap(),
            Finding::Ok { .. }
        ),
        "without the anchor the shortened chain verifies: the hole this closes"
    );
    let anchor = s
        .hsm
        .audit_anchor()
        .unwrap()
        .expect("checkpoints move the anchor");
    assert_eq!(
        anchor.seq,
        records.len() as u64,
        "the anchor is at the last checkpoint"
    );
    match finding(&s) {
        Finding::Bad { seq, problem } => {
            assert_eq!(seq, keep + 1);
            assert_eq!(
                problem,
                format!("the log ends at record {keep} but the HSM's anchor says record {} was checkpointed: records were truncated or the log was rolled back", anchor.seq)
            );
        }
        other => panic!("{other:?}"),
    }
    let e = AuditLog::open(&s.store, Arc::new(s.hsm.clone()), AuditConfig::default())
        .expect_err("wardend must not continue a rolled-back log")
        .to_string();
    assert!(
        e.contains(&format!(
            "the audit log ends at record {keep} but the HSM's anchor says record {} was checkpointed",
            anchor.seq
        )) && e.contains("Restore the data directory from a backup"),
        "{e}"
    );
}

#[test]
fn a_rewritten_record_after_the_anchor_stops_wardend_at_open() {
    let s = populated("audit-rewrite-tail", 6);
    let last = warden::audit::read_records(&s.store).unwrap().len() as u64;
    // Rewrite the anchored record itself, keeping the chain internally consistent is not
    // possible without the next records; change its time.
    let mut r: serde_json::Value =
        serde_json::from_slice(&s.store.get(Namespace::Audit, &rkey(last)).unwrap().unwrap())
            .unwrap();
    r["time"] = serde_json::json!(r["time"].as_u64().unwrap() + 1);
    s.store.tamper(
        Namespace::Audit,
        &rkey(last),
        Some(&serde_json::to_vec(&r).unwrap()),
    );
    let e = AuditLog::open(&s.store, Arc::new(s.hsm.clone()), AuditConfig::default())
        .expect_err("a rewritten anchored record is refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "record {last} is not the one the anchor checkpointed"
        )),
        "{e}"
    );
}

#[test]
fn a_clock_stepped_back_neither_moves_warden_back_nor_uncounts_and_is_announced() {
    let s = setup("clock-back", 100);
    let mut events = s.core.events.subscribe();
    assert!(pay(&s, 1, 600_000).approved);
    let used_at = s.clock.now();
    // The system clock steps back two hours.
    s.clock.set(used_at - 7_200);
    let second = pay(&s, 2, 600_000);
    assert!(
        !second.approved,
        "the first payment still counts: {second:?}"
    );
    assert!(
        second
            .reason
            .contains("rule daily: 1,200,000 sat would be spent in the last 24h"),
        "{}",
        second.reason
    );
    let clock_events: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| e.kind == warden::events::EventKind::Clock)
        .collect();
    assert_eq!(clock_events.len(), 1, "announced once: {clock_events:?}");
    assert_eq!(clock_events[0].tags, vec!["warden-clock-stepped-back"]);
    assert!(
        clock_events[0]
            .message
            .contains("Warden keeps deciding at its own time"),
        "{}",
        clock_events[0].message
    );
    // The decision was recorded at Warden's time, not the stepped-back clock.
    let last_decision = warden::audit::read_records(&s.store)
        .unwrap()
        .into_iter()
        .rev()
        .find(|r| r.kind == "decision")
        .unwrap();
    assert!(
        last_decision.time >= used_at,
        "{} < {used_at}",
        last_decision.time
    );
    // A restart on the same database keeps Warden's time.
    let audit = Arc::new(
        AuditLog::open(&s.store, Arc::new(s.hsm.clone()), AuditConfig::default()).unwrap(),
    );
    let core = Core::open(
        s.store.clone(),
        s.core.policy(),
        ApprovalConfig::default(),
        Arc::new(s.clock.clone()),
        audit,
        Default::default(),
    )
    .unwrap();
    assert!(
        core.clock.now() >= used_at,
        "Warden's time survives a restart"
    );
}

/// Remove the HSM's audit key behind wardend's back, as a fault or an operator would.
fn delete_audit_key(s: &Setup) {
    s.token.delete_audit_key();
}

/// The HSM watch wardend runs, probing every 100 ms; stopped when the sender is dropped.
fn watch_hsm(s: &Setup) -> tokio::sync::watch::Sender<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(warden::core::health::watch_hsm(
        s.hsm.clone(),
        s.core.clone(),
        std::time::Duration::from_millis(100),
        stop_rx,
    ));
    stop_tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_closed_under_a_running_core_are_opened_and_logged_in_again_within_a_second() {
    let s = setup("hsm-closed", 100);
    let stop_tx = watch_hsm(&s);
    assert!(tokio::task::block_in_place(|| pay(&s, 1, 1_000)).approved);
    // Every session this process has on the token is closed, as an HSM that restarts does:
    // the pooled sessions are dead and the token is logged out.
    s.token.close_all_sessions();
    assert!(s.hsm.probe().is_err(), "the fault is real");
    let started = std::time::Instant::now();
    while s.hsm.probe().is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "not logged in again a second after the sessions were closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The HSM signs again: a checkpoint, and payments are decided as before.
    s.audit.checkpoint(s.clock.now()).unwrap();
    assert!(tokio::task::block_in_place(|| pay(&s, 2, 1_000)).approved);
    let report = verify_store(&s.store, &s.hsm.audit_public_key().unwrap(), None).unwrap();
    assert!(matches!(report, Finding::Ok { .. }), "{report:?}");
    let _ = stop_tx.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_that_can_no_longer_sign_stops_approvals_within_a_second() {
    // Checkpoints only every 100 records: without the watch, payments would keep passing
    // until the next checkpoint came due.
    let s = setup("hsm-watch", 100);
    let stop_tx = watch_hsm(&s);
    let mut events = s.core.events.subscribe();
    assert!(tokio::task::block_in_place(|| pay(&s, 1, 1_000)).approved);
    tokio::task::block_in_place(|| delete_audit_key(&s));
    let started = std::time::Instant::now();
    let refused = loop {
        let answer = tokio::task::block_in_place(|| pay(&s, 2, 1_000));
        if !answer.approved {
            break answer;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "still approving a second after the HSM lost its key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.tags, vec!["warden-hsm-unavailable"]);
    assert!(
        refused
            .reason
            .contains("the HSM cannot sign audit checkpoints")
            && refused.reason.contains("warden-audit-ecdsa"),
        "{}",
        refused.reason
    );
    let hsm_event = loop {
        let e = events.recv().await.unwrap();
        if e.kind == warden::events::EventKind::Hsm {
            break e;
        }
    };
    assert_eq!(hsm_event.tags, vec!["warden-hsm-unavailable"]);
    let _ = stop_tx.send(true);
}
