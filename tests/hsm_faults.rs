//! The HSM failing under a running wardend, with real SoftHSM tokens, VLS's real
//! `remote_hsmd_socket` as the node side, and wardend as its own process: approvals stop within
//! a second of the fault, wardend keeps running and keeps answering, and it gets back to the
//! token by itself, with backoff, when the token is back.

mod common;

use common::cln::{Cln, Payee};
use common::daemon::{next_event, QUORUM_RULES};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use warden::api::proto::EventKind;

const SAT: u64 = 1_000;

/// Ask preapprovals of fresh small invoices (well under every limit) until one is answered
/// `want`; how long that took.
fn pay_until(cln: &mut Cln, payee: &Payee, n: &mut u64, want: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        *n += 1;
        let answer = cln.preapprove(&payee.invoice(10_000 * SAT, *n));
        if answer == want {
            let took = started.elapsed();
            assert!(
                took < within,
                "the {want} answer came after {took:?}, not within {within:?}"
            );
            return took;
        }
        assert!(
            started.elapsed() < within,
            "no {} answer within {within:?}",
            if want { "approved" } else { "refused" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn still_running(cln: &mut Cln) -> bool {
    cln.daemon
        .wardend
        .as_mut()
        .expect("wardend started")
        .try_wait()
        .unwrap()
        .is_none()
}

fn metric(m: &std::collections::HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_removed_under_wardend_stops_approvals_within_a_second_and_its_return_resumes_them()
{
    let mut cln = Cln::start("fault-removed", QUORUM_RULES).await;
    let mut events = cln.watch().await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x41);
    let mut n = 0;
    block_in_place(|| pay_until(&mut cln, &payee, &mut n, true, Duration::from_secs(5)));

    let tokens = cln.token.path().join("tokens");
    let away = cln.token.path().join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    let took =
        block_in_place(|| pay_until(&mut cln, &payee, &mut n, false, Duration::from_secs(1)));
    eprintln!("first refusal {took:?} after the token directory went away");
    let fault = next_event(&mut events, EventKind::Hsm).await;
    assert_eq!(fault.tags, vec!["warden-hsm-unavailable"]);
    assert!(
        fault.message.contains("the HSM cannot sign")
            && fault.message.contains("shows none of Warden's keys")
            && fault.message.contains("do not run `wardenctl init`"),
        "{}",
        fault.message
    );
    assert!(
        metric(
            &cln.scrape_metrics().await,
            "warden_hsm_errors_total{name=\"probe\"}"
        ) >= 1.0
    );
    // A refusal is an answer: the node side is served, and wardend has not exited.
    assert!(block_in_place(|| cln.still_serves()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(10_000 * SAT, 999))
    ));
    assert!(
        still_running(&mut cln),
        "wardend exited while the token was away"
    );

    std::fs::rename(&away, &tokens).unwrap();
    let took =
        block_in_place(|| pay_until(&mut cln, &payee, &mut n, true, Duration::from_secs(40)));
    eprintln!("approving again {took:?} after the token directory came back");
    let back = loop {
        let e = next_event(&mut events, EventKind::Hsm).await;
        if e.tags.is_empty() {
            break e;
        }
    };
    assert!(
        back.message.contains("the HSM answers again"),
        "{}",
        back.message
    );
    assert!(
        metric(
            &cln.scrape_metrics().await,
            "warden_hsm_operation_seconds_count{name=\"login\"}"
        ) >= 1.0
    );
    assert!(still_running(&mut cln));
    assert!(block_in_place(|| cln.still_serves()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_changed_under_wardend_is_offered_once_and_the_new_pin_in_its_file_is_picked_up() {
    let mut cln = Cln::start("fault-pin", QUORUM_RULES).await;
    let mut events = cln.watch().await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x42);
    let mut n = 0;
    block_in_place(|| pay_until(&mut cln, &payee, &mut n, true, Duration::from_secs(5)));

    // The PIN is changed on the token from outside (wardend's logged-in sessions live on) ...
    let new_pin = "5151-new";
    cln.token.change_pin(common::USER_PIN, new_pin);
    // ... then the token goes away and comes back, so wardend must log in again.
    let tokens = cln.token.path().join("tokens");
    let away = cln.token.path().join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    block_in_place(|| pay_until(&mut cln, &payee, &mut n, false, Duration::from_secs(1)));
    std::fs::rename(&away, &tokens).unwrap();

    // Logins are retried with backoff, so the events may be more than next_event's 10 s apart
    // on a busy machine: read the stream directly, within the whole 40 s.
    let refused = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let e = events.message().await.unwrap().expect("event stream open");
            if e.kind == EventKind::Hsm as i32 && e.message.contains("refused the PIN") {
                return e;
            }
        }
    })
    .await
    .expect("an event naming the refused PIN");
    assert_eq!(refused.tags, vec!["warden-hsm-unavailable"]);
    assert!(
        refused.message.contains(&format!(
            "write the token's current PIN to {}",
            cln.token.pin_file.display()
        )),
        "{}",
        refused.message
    );
    assert!(
        !refused.message.contains(common::USER_PIN),
        "{}",
        refused.message
    );
    // The refused PIN is not offered again, however long the token stays unusable: a real HSM
    // locks its PIN after a few failures.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = cln.scrape_metrics().await;
    assert_eq!(
        metric(&m, "warden_hsm_errors_total{name=\"login\"}"),
        1.0,
        "{m:?}"
    );
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(10_000 * SAT, 999))
    ));
    assert!(still_running(&mut cln));

    // The operator writes the new PIN where wardend reads it; wardend logs in by itself.
    std::fs::write(&cln.token.pin_file, format!("{new_pin}\n")).unwrap();
    let took =
        block_in_place(|| pay_until(&mut cln, &payee, &mut n, true, Duration::from_secs(40)));
    eprintln!("approving again {took:?} after the new PIN was written");
    assert!(still_running(&mut cln));
}
