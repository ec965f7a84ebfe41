//! The policy engine over a real sled database: approvals are durable, the velocity windows
//! survive a restart exactly, and old buckets are compacted away.

use std::sync::Arc;
use warden::core::engine::load_velocity;
use warden::core::PolicyEngine;
use warden::policy::{parse_policy, LedgerKey, PaymentRequest, Verdict};
use warden::store::Store;

const PAYEE: &str = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
const T0: u64 = 1_795_435_200;

fn policy() -> Arc<warden::policy::Policy> {
    Arc::new(
        parse_policy(
            r#"version = 1
[[limit]]
tag = "hourly-cap"
window = "1h"
max_amount = "1_000_000 sat"
[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "3_000_000 sat"
"#,
        )
        .unwrap(),
    )
}

fn pay(n: u8, sat: u64) -> PaymentRequest {
    PaymentRequest::invoice([n; 32], sat * 1_000, PAYEE, None)
}

#[test]
fn velocity_windows_survive_a_restart_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let mut e = PolicyEngine::open(policy(), Store::open(dir.path()).unwrap(), T0).unwrap();
        for i in 0..5u8 {
            let d = e.decide(&pay(i, 150_000), T0 + u64::from(i) * 90).unwrap();
            assert!(d.is_approved(), "{d:?}");
        }
        e.state().clone()
    };
    let mut e = PolicyEngine::open(policy(), Store::open(dir.path()).unwrap(), T0 + 500).unwrap();
    assert_eq!(
        e.state(),
        &before,
        "the reopened state is the same, bucket for bucket"
    );
    assert_eq!(
        e.state()
            .totals(&LedgerKey::Node, T0 + 500, 3_600)
            .amount_msat,
        750_000_000
    );
    // 750,000 spent this hour: 300,000 more is refused by the same rule as before the restart.
    let d = e.decide(&pay(9, 300_000), T0 + 600).unwrap();
    match d.verdict {
        Verdict::Deny { reason } => assert_eq!(
            reason,
            "rule hourly-cap: 1,050,000 sat would be spent in the last 1h; the limit is 1,000,000 sat"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_approval_is_one_commit_and_a_refusal_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut e = PolicyEngine::open(policy(), store.clone(), T0).unwrap();
    let before = store.commits();
    assert!(e.decide(&pay(1, 900_000), T0).unwrap().is_approved());
    assert_eq!(
        store.commits(),
        before + 1,
        "the approval's buckets are one commit"
    );
    let d = e.decide(&pay(2, 200_000), T0 + 1).unwrap();
    assert_eq!(d.tags, vec!["hourly-cap"]);
    assert_eq!(store.commits(), before + 1, "a refusal commits nothing");
    assert_eq!(
        load_velocity(&store)
            .unwrap()
            .totals(&LedgerKey::Node, T0 + 1, 3_600)
            .amount_msat,
        900_000_000
    );
}

#[test]
fn refusals_do_not_count_against_the_windows() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = PolicyEngine::open(policy(), Store::open(dir.path()).unwrap(), T0).unwrap();
    assert!(!e.decide(&pay(1, 2_000_000), T0).unwrap().is_approved());
    assert_eq!(e.state().totals(&LedgerKey::Node, T0, 3_600).amount_msat, 0);
    assert!(e.decide(&pay(2, 1_000_000), T0).unwrap().is_approved());
}

#[test]
fn old_buckets_are_compacted_on_disk_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut e = PolicyEngine::open(policy(), Store::open(dir.path()).unwrap(), T0).unwrap();
        for i in 0..10u8 {
            e.decide(&pay(i, 1_000), T0 + u64::from(i) * 60).unwrap();
        }
        assert!(e.state().len() >= 2);
    }
    // Two days later nothing is countable: opening compacts it all away, durably.
    let later = T0 + 2 * 86_400;
    {
        let e = PolicyEngine::open(policy(), Store::open(dir.path()).unwrap(), later).unwrap();
        assert!(e.state().is_empty(), "{:?}", e.state());
    }
    let reloaded = load_velocity(&Store::open(dir.path()).unwrap()).unwrap();
    assert!(
        reloaded.is_empty(),
        "compaction reached the disk: {reloaded:?}"
    );
}

#[test]
fn a_second_open_while_the_first_is_live_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let msg = Store::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("cannot open the state database in"), "{msg}");
    assert!(
        msg.contains("is another wardend running on this data directory?"),
        "{msg}"
    );
}
