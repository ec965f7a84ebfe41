//! The evaluator rule by rule, with fixed clocks: each test names the behaviour it checks.

use warden::policy::{
    evaluate, parse_policy, spend_changes, PaymentRequest, Policy, VelocityState, Verdict,
};

const PAYEE: &str = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
const OTHER: &str = "02e216c352020a0ed16d88971305ae047200fd8f4b3f0dcd5967cdf499e7efcadc";
const SANCTIONED: &str = "0200613bf938186802c31ac5edec84ca08cfde5d568abd25fa51d8b5e3cc6a0e82";
/// 2026-11-23 (a Monday) 12:00 UTC.
const MONDAY_NOON: u64 = 1_795_435_200;
const SAT: u64 = 1_000;

fn policy(rules: &str) -> Policy {
    let src = format!(
        r#"version = 1
[admins]
alice = {{ pubkey = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828" }}
bob = {{ pubkey = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436" }}
carol = {{ pubkey = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e" }}
{rules}"#
    );
    parse_policy(&src).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn pay(amount_sat: u64, payee: &str, n: u8) -> PaymentRequest {
    PaymentRequest::invoice([n; 32], amount_sat * SAT, payee, None)
}

/// Approve-and-count helper: evaluates and, on approval, applies the spend.
fn run(
    p: &Policy,
    s: &mut VelocityState,
    req: &PaymentRequest,
    now: u64,
) -> warden::policy::Decision {
    let d = evaluate(p, req, s, now);
    if d.is_approved() {
        let changes = spend_changes(p, req, s, now);
        s.apply(&changes);
    }
    d
}

fn deny_reason(d: &warden::policy::Decision) -> &str {
    match &d.verdict {
        Verdict::Deny { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_payment_within_every_limit_is_approved_under_the_limits_that_applied() {
    let p = policy("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"1000 sat\"\n");
    let d = evaluate(
        &p,
        &pay(1000, PAYEE, 1),
        &VelocityState::default(),
        MONDAY_NOON,
    );
    assert_eq!(d.verdict, Verdict::Approve);
    assert_eq!(d.tags, vec!["cap"]);
    assert_eq!(d.policy_hash, p.hash);
}

#[test]
fn per_payment_limit_refuses_one_msat_over_with_the_numbers() {
    let p = policy("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"1000 sat\"\n");
    let req = PaymentRequest::invoice([1; 32], 1_000_001, PAYEE, None);
    let d = evaluate(&p, &req, &VelocityState::default(), MONDAY_NOON);
    assert_eq!(d.tags, vec!["cap"]);
    assert_eq!(
        deny_reason(&d),
        "rule cap: this payment of 1,000.001 sat is above the per-payment limit of 1,000 sat"
    );
}

#[test]
fn hourly_cap_counts_the_last_hour_and_forgets_after_it() {
    let p = policy(
        "[[limit]]\ntag = \"hourly-cap\"\nwindow = \"1h\"\nmax_amount = \"1_000_000 sat\"\n",
    );
    let mut s = VelocityState::default();
    assert!(run(&p, &mut s, &pay(750_000, PAYEE, 1), MONDAY_NOON).is_approved());
    let d = run(&p, &mut s, &pay(500_000, PAYEE, 2), MONDAY_NOON + 600);
    assert_eq!(
        deny_reason(&d),
        "rule hourly-cap: 1,250,000 sat would be spent in the last 1h; the limit is 1,000,000 sat"
    );
    // One hour and one bucket later the first payment no longer counts.
    assert!(run(
        &p,
        &mut s,
        &pay(500_000, PAYEE, 3),
        MONDAY_NOON + 3_600 + 60
    )
    .is_approved());
}

#[test]
fn count_limit_refuses_the_payment_after_the_last_allowed_one() {
    let p = policy("[[limit]]\ntag = \"hourly-count\"\nwindow = \"1h\"\nmax_count = 3\n");
    let mut s = VelocityState::default();
    for i in 0..3u8 {
        assert!(run(&p, &mut s, &pay(1, PAYEE, i), MONDAY_NOON + u64::from(i)).is_approved());
    }
    let d = run(&p, &mut s, &pay(1, PAYEE, 9), MONDAY_NOON + 10);
    assert_eq!(
        deny_reason(&d),
        "rule hourly-count: this would be payment number 4 in the last 1h; the limit is 3"
    );
}

#[test]
fn each_destination_limit_counts_destinations_separately() {
    let p = policy("[[limit]]\ntag = \"per-dest\"\nwindow = \"24h\"\nscope = \"each-destination\"\nmax_amount = \"100 sat\"\n");
    let mut s = VelocityState::default();
    assert!(run(&p, &mut s, &pay(100, PAYEE, 1), MONDAY_NOON).is_approved());
    assert!(run(&p, &mut s, &pay(100, OTHER, 2), MONDAY_NOON).is_approved());
    let d = run(&p, &mut s, &pay(1, PAYEE, 3), MONDAY_NOON);
    assert!(
        deny_reason(&d).contains(&format!("would be spent to node {PAYEE} in the last 24h")),
        "{d:?}"
    );
}

#[test]
fn listed_destination_limit_counts_only_its_destinations_together() {
    let p = policy(&format!(
        "[[limit]]\ntag = \"supplier\"\nwindow = \"24h\"\npayees = [\"{PAYEE}\", \"{OTHER}\"]\nmax_amount = \"100 sat\"\n"
    ));
    let mut s = VelocityState::default();
    assert!(run(&p, &mut s, &pay(60, PAYEE, 1), MONDAY_NOON).is_approved());
    // A payee outside the group is not limited by it at all.
    let d = run(&p, &mut s, &pay(1_000, SANCTIONED, 2), MONDAY_NOON);
    assert!(d.is_approved() && d.tags.is_empty(), "{d:?}");
    let d = run(&p, &mut s, &pay(60, OTHER, 3), MONDAY_NOON);
    assert!(
        deny_reason(&d).contains("120 sat would be spent to its listed destinations"),
        "{d:?}"
    );
}

#[test]
fn deny_wins_over_allowlist_and_over_quorum() {
    let p = policy(&format!(
        "[[allowlist]]\ntag = \"friends\"\npayees = [\"{SANCTIONED}\"]\n[[deny]]\ntag = \"sanctioned\"\npayees = [\"{SANCTIONED}\"]\n[[approval]]\ntag = \"big\"\nabove = \"10 sat\"\nquorum = {{ need = 2, of = [\"alice\", \"bob\"] }}\n"
    ));
    let d = evaluate(
        &p,
        &pay(100, SANCTIONED, 1),
        &VelocityState::default(),
        MONDAY_NOON,
    );
    assert_eq!(d.tags, vec!["sanctioned"]);
    assert_eq!(
        deny_reason(&d),
        format!("rule sanctioned: node {SANCTIONED} is on the deny list")
    );
    assert!(
        d.warnings.iter().any(|w| w.tag == "big"),
        "the quorum rule is noted: {:?}",
        d.warnings
    );
}

#[test]
fn limits_apply_to_allowlisted_payees() {
    let p = policy(&format!(
        "[[allowlist]]\ntag = \"friends\"\npayees = [\"{PAYEE}\"]\n[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"10 sat\"\n"
    ));
    let d = evaluate(
        &p,
        &pay(11, PAYEE, 1),
        &VelocityState::default(),
        MONDAY_NOON,
    );
    assert_eq!(d.tags, vec!["cap"]);
}

#[test]
fn a_payment_above_the_threshold_requires_the_quorum_bound_to_its_digest() {
    let p = policy("[[approval]]\ntag = \"big\"\nabove = \"1_000_000 sat\"\nquorum = { need = 2, of = [\"alice\", \"bob\", \"carol\"] }\nexpiry = \"30m\"\n");
    let s = VelocityState::default();
    assert!(
        evaluate(&p, &pay(1_000_000, PAYEE, 1), &s, MONDAY_NOON).is_approved(),
        "at the threshold: approved"
    );
    let req = pay(1_000_001, PAYEE, 1);
    let d = evaluate(&p, &req, &s, MONDAY_NOON);
    match d.verdict {
        Verdict::RequireQuorum {
            request_digest,
            rule_tag,
            quorum,
            expiry_secs,
        } => {
            // The digest names this payment and no other: the same payment built anew gives
            // it, and a different hash, amount, payee or kind does not.
            assert_eq!(request_digest, pay(1_000_001, PAYEE, 1).digest());
            for other in [
                pay(1_000_001, PAYEE, 2),
                pay(1_000_002, PAYEE, 1),
                pay(1_000_001, OTHER, 1),
                PaymentRequest::keysend([1; 32], 1_000_001 * SAT, PAYEE),
            ] {
                assert_ne!(request_digest, other.digest(), "{other:?}");
            }
            assert_eq!(rule_tag, "big");
            assert_eq!((quorum.need, quorum.of.len()), (2, 3));
            assert_eq!(expiry_secs, 1_800);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.tags, vec!["big"]);
}

#[test]
fn an_unlisted_destination_requires_a_quorum_and_a_listed_one_does_not() {
    let p = policy(&format!(
        "[[allowlist]]\ntag = \"friends\"\npayees = [\"{PAYEE}\"]\n[[approval]]\ntag = \"unknown\"\nunlisted_destination = true\nquorum = {{ need = 1, of = [\"alice\"] }}\n"
    ));
    let s = VelocityState::default();
    assert!(evaluate(&p, &pay(5, PAYEE, 1), &s, MONDAY_NOON).is_approved());
    assert!(matches!(
        evaluate(&p, &pay(5, OTHER, 1), &s, MONDAY_NOON).verdict,
        Verdict::RequireQuorum { .. }
    ));
}

#[test]
fn time_window_refuses_outside_business_hours_and_weekends() {
    let p = policy("[[time_window]]\ntag = \"hours\"\nabove = \"100 sat\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nfrom = \"08:00\"\nto = \"20:00\"\n");
    let s = VelocityState::default();
    assert!(evaluate(&p, &pay(500, PAYEE, 1), &s, MONDAY_NOON).is_approved());
    assert!(
        evaluate(&p, &pay(50, PAYEE, 1), &s, MONDAY_NOON + 10 * 3600).is_approved(),
        "small payments any time"
    );
    let late = evaluate(
        &p,
        &pay(500, PAYEE, 1),
        &s,
        MONDAY_NOON + 8 * 3600 + 14 * 60,
    );
    assert_eq!(
        deny_reason(&late),
        "rule hours: payments above 100 sat are allowed only on mon,tue,wed,thu,fri 08:00-20:00 UTC; it is mon 20:14 UTC"
    );
    let saturday = evaluate(&p, &pay(500, PAYEE, 1), &s, MONDAY_NOON + 5 * 86_400);
    assert!(
        deny_reason(&saturday).ends_with("it is sat 12:00 UTC"),
        "{saturday:?}"
    );
}

#[test]
fn a_time_window_may_run_past_midnight() {
    let p = policy("[[time_window]]\ntag = \"night\"\nfrom = \"22:00\"\nto = \"02:00\"\n");
    let s = VelocityState::default();
    let midnight = MONDAY_NOON + 12 * 3600;
    assert!(evaluate(&p, &pay(1, PAYEE, 1), &s, midnight + 3600).is_approved());
    assert!(evaluate(&p, &pay(1, PAYEE, 1), &s, midnight - 1800).is_approved());
    assert!(!evaluate(&p, &pay(1, PAYEE, 1), &s, MONDAY_NOON).is_approved());
}

#[test]
fn warn_mode_rules_report_but_never_refuse() {
    let p = policy("[[limit]]\ntag = \"soft-cap\"\nmode = \"warn\"\nwindow = \"payment\"\nmax_amount = \"10 sat\"\n[[approval]]\ntag = \"soft-quorum\"\nmode = \"warn\"\nabove = \"10 sat\"\nquorum = { need = 2, of = [\"alice\", \"bob\"] }\n");
    let d = evaluate(
        &p,
        &pay(11, PAYEE, 1),
        &VelocityState::default(),
        MONDAY_NOON,
    );
    assert_eq!(d.verdict, Verdict::Approve);
    let tags: Vec<_> = d.warnings.iter().map(|w| w.tag.as_str()).collect();
    assert_eq!(tags, vec!["soft-cap", "soft-quorum"]);
    assert!(d.warnings[0]
        .reason
        .contains("above the per-payment limit of 10 sat"));
}

#[test]
fn every_objecting_rule_is_named_in_a_refusal() {
    let p = policy(&format!(
        "[[deny]]\ntag = \"blocked\"\npayees = [\"{PAYEE}\"]\n[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"10 sat\"\n"
    ));
    let d = evaluate(
        &p,
        &pay(11, PAYEE, 1),
        &VelocityState::default(),
        MONDAY_NOON,
    );
    assert_eq!(d.tags, vec!["blocked", "cap"]);
    assert_eq!(deny_reason(&d).matches("rule ").count(), 2);
}

#[test]
fn onchain_spends_are_limited_per_address_and_in_total() {
    let addr = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    let p = policy(
        "[[deny]]\ntag = \"bad-addr\"\naddresses = [\"1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2\"]\n[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"1000 sat\"\n"
    );
    let ok = PaymentRequest::onchain(vec![
        (addr.into(), 600 * SAT),
        (
            "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh".into(),
            400 * SAT,
        ),
    ]);
    assert!(evaluate(&p, &ok, &VelocityState::default(), MONDAY_NOON).is_approved());
    let over = PaymentRequest::onchain(vec![(addr.into(), 600 * SAT), (addr.into(), 401 * SAT)]);
    assert_eq!(
        evaluate(&p, &over, &VelocityState::default(), MONDAY_NOON).tags,
        vec!["cap"]
    );
    let bad = PaymentRequest::onchain(vec![("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2".into(), 1)]);
    assert_eq!(
        evaluate(&p, &bad, &VelocityState::default(), MONDAY_NOON).tags,
        vec!["bad-addr"]
    );
}

#[test]
fn amounts_at_the_extremes_saturate_and_are_refused() {
    let p = policy("[[limit]]\ntag = \"daily\"\nwindow = \"24h\"\nmax_amount = \"18446744073709551615 msat\"\n");
    let mut s = VelocityState::default();
    let huge = PaymentRequest::invoice([1; 32], u64::MAX, PAYEE, None);
    assert!(
        run(&p, &mut s, &huge, MONDAY_NOON).is_approved(),
        "exactly the limit"
    );
    let one_more = PaymentRequest::invoice([2; 32], 1, PAYEE, None);
    let d = run(&p, &mut s, &one_more, MONDAY_NOON);
    assert!(
        deny_reason(&d).contains("18,446,744,073,709,551.616 sat would be spent"),
        "{d:?}"
    );
    // Outputs whose sum passes u64::MAX are compared exactly, not wrapped or clamped.
    let p = policy("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"18446744073709551615 msat\"\n");
    let onchain = PaymentRequest::onchain(vec![
        (
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".into(),
            u64::MAX
        );
        3
    ]);
    assert_eq!(onchain.amount_msat(), u64::MAX);
    let d = evaluate(&p, &onchain, &VelocityState::default(), MONDAY_NOON);
    assert!(
        deny_reason(&d).contains("55,340,232,221,128,654.845 sat"),
        "{d:?}"
    );
}

#[test]
fn digests_differ_for_any_change_of_payment() {
    let base = pay(10, PAYEE, 1);
    let mut seen = std::collections::HashSet::new();
    for r in [
        base.clone(),
        pay(11, PAYEE, 1),
        pay(10, OTHER, 1),
        pay(10, PAYEE, 2),
        PaymentRequest::keysend([1; 32], 10 * SAT, PAYEE),
    ] {
        assert!(seen.insert(r.digest()), "duplicate digest for {r:?}");
    }
    assert_eq!(base.digest(), pay(10, PAYEE, 1).digest());
}

#[test]
fn per_destination_limits_sum_every_output_to_one_destination() {
    // Three outputs of 0.09 BTC to one address: 0.27 BTC to that destination, which both the
    // per-payment and the hourly per-destination limit of 0.1 BTC must see (not 0.09 three times).
    let addr = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    let p = policy(
        "[[limit]]\ntag = \"dest-payment\"\nwindow = \"payment\"\nscope = \"each-destination\"\nmax_amount = \"0.1 btc\"\n[[limit]]\ntag = \"dest-hourly\"\nwindow = \"1h\"\nscope = \"each-destination\"\nmax_amount = \"0.1 btc\"\n",
    );
    let split = PaymentRequest::onchain(vec![(addr.into(), 9_000_000 * SAT); 3]);
    let d = evaluate(&p, &split, &VelocityState::default(), MONDAY_NOON);
    assert_eq!(d.tags, vec!["dest-payment", "dest-hourly"], "{d:?}");
    let reason = deny_reason(&d);
    assert!(
        reason.contains(&format!(
            "rule dest-payment: this payment of 27,000,000 sat to address {addr} is above the per-payment limit of 10,000,000 sat"
        )),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "rule dest-hourly: 27,000,000 sat would be spent to address {addr} in the last 1h"
        )),
        "{reason}"
    );
    assert_eq!(
        reason.matches("rule dest-hourly").count(),
        1,
        "named once: {reason}"
    );
    // Within the limit when summed, the same split passes and is counted as one payment.
    let ok = PaymentRequest::onchain(vec![(addr.into(), 3_000_000 * SAT); 3]);
    let mut s = VelocityState::default();
    assert!(run(&p, &mut s, &ok, MONDAY_NOON).is_approved());
    let t = s.totals(
        &warden::policy::LedgerKey::Destination(warden::policy::Destination::Address(addr.into())),
        MONDAY_NOON,
        3_600,
    );
    assert_eq!((t.amount_msat, t.count), (9_000_000_000, 1));
}
