//! Properties of the evaluator that must hold for every input, not just the examples.

use proptest::prelude::*;
use warden::policy::{
    evaluate, parse_policy, spend_changes, PaymentRequest, Policy, VelocityState, Verdict,
};

const PAYEES: [&str; 3] = [
    "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91",
    "02e216c352020a0ed16d88971305ae047200fd8f4b3f0dcd5967cdf499e7efcadc",
    "0200613bf938186802c31ac5edec84ca08cfde5d568abd25fa51d8b5e3cc6a0e82",
];

fn limits_policy(hour_sat: u64, day_sat: u64, hour_count: u64) -> Policy {
    parse_policy(&format!(
        r#"version = 1
[[limit]]
tag = "hourly"
window = "1h"
max_amount = "{hour_sat} sat"
max_count = {hour_count}
[[limit]]
tag = "daily"
window = "24h"
max_amount = "{day_sat} sat"
[[limit]]
tag = "per-dest"
window = "1h"
scope = "each-destination"
max_amount = "{hour_sat} sat"
"#
    ))
    .unwrap()
}

/// Largest approved sum (and count) in any window (t - w, t] over approved (time, amount, payee).
fn max_in_window(approved: &[(u64, u64, usize)], w: u64, payee: Option<usize>) -> (u64, u64) {
    let mut best = (0, 0);
    for &(t, _, _) in approved {
        let (sum, count) = approved
            .iter()
            .filter(|(s, _, p)| *s + w > t && *s <= t && payee.is_none_or(|x| x == *p))
            .fold((0u64, 0u64), |(a, c), (_, v, _)| (a + v, c + 1));
        best = (best.0.max(sum), best.1.max(count));
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn approved_spend_never_exceeds_any_rolling_window_limit(
        hour_sat in 1_000u64..50_000,
        day_factor in 1u64..6,
        hour_count in 1u64..20,
        payments in prop::collection::vec((0u64..7_200, 1u64..20_000, 0usize..3), 1..80),
    ) {
        let day_sat = hour_sat * day_factor;
        let p = limits_policy(hour_sat, day_sat, hour_count);
        let mut state = VelocityState::default();
        let mut now = 1_795_435_200u64;
        let mut approved = Vec::new();
        for (gap, amount_sat, payee) in payments {
            now += gap;
            let req = PaymentRequest::invoice([payee as u8; 32], amount_sat * 1_000, PAYEES[payee], None);
            let d = evaluate(&p, &req, &state, now);
            if d.is_approved() {
                let c = spend_changes(&p, &req, &state, now);
                state.apply(&c);
                approved.push((now, amount_sat, payee));
            }
        }
        let (hour_sum, hour_n) = max_in_window(&approved, 3_600, None);
        prop_assert!(hour_sum <= hour_sat, "hour sum {hour_sum} > {hour_sat}");
        prop_assert!(hour_n <= hour_count, "hour count {hour_n} > {hour_count}");
        let (day_sum, _) = max_in_window(&approved, 86_400, None);
        prop_assert!(day_sum <= day_sat, "day sum {day_sum} > {day_sat}");
        for payee in 0..3 {
            let (s, _) = max_in_window(&approved, 3_600, Some(payee));
            prop_assert!(s <= hour_sat);
        }
    }

    #[test]
    fn a_deny_rule_always_wins(
        amount_sat in 0u64..10_000_000,
        listed in any::<bool>(),
        above_sat in 0u64..10_000_000,
        offset in 0u64..604_800,
        history in 0u64..5_000_000,
    ) {
        let denied = PAYEES[2];
        let allow = if listed { format!("[[allowlist]]\ntag = \"ok\"\npayees = [\"{denied}\"]\n") } else { String::new() };
        let p = parse_policy(&format!(
            r#"version = 1
[admins]
alice = {{ pubkey = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828" }}
{allow}
[[deny]]
tag = "blocked"
payees = ["{denied}"]
[[limit]]
tag = "daily"
window = "24h"
max_amount = "100_000_000 sat"
[[approval]]
tag = "big"
above = "{above_sat} sat"
quorum = {{ need = 1, of = ["alice"] }}
"#
        )).unwrap();
        let now = 1_795_435_200 + offset;
        let mut state = VelocityState::default();
        let prior = PaymentRequest::invoice([9; 32], history * 1_000, PAYEES[0], None);
        state.apply(&spend_changes(&p, &prior, &state, now));
        let d = evaluate(&p, &PaymentRequest::invoice([1; 32], amount_sat * 1_000, denied, None), &state, now);
        prop_assert!(matches!(d.verdict, Verdict::Deny { .. }), "{:?}", d);
        prop_assert_eq!(d.tags.first().map(String::as_str), Some("blocked"));
    }

    /// Splitting a payment into several outputs to the same destinations never turns a
    /// refusal into an approval, nor changes which limits object: per-destination limits judge
    /// what each destination receives in total (an on-chain spend may carry any number of
    /// outputs to one address).
    #[test]
    fn splitting_outputs_to_one_destination_changes_no_decision(
        limit_sat in 1_000u64..100_000,
        outputs in prop::collection::vec((0usize..3, 1u64..60_000), 1..8),
        splits in prop::collection::vec(1usize..5, 8),
        history in prop::collection::vec((0usize..3, 1u64..60_000), 0..5),
    ) {
        const ADDRS: [&str; 3] = [
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
            "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        ];
        let p = parse_policy(&format!(
            r#"version = 1
[[limit]]
tag = "dest-payment"
window = "payment"
scope = "each-destination"
max_amount = "{limit_sat} sat"
[[limit]]
tag = "dest-hourly"
window = "1h"
scope = "each-destination"
max_amount = "{} sat"
"#,
            limit_sat * 3
        ))
        .unwrap();
        let now = 1_795_435_200;
        let mut state = VelocityState::default();
        for (a, sat) in history {
            let prior = PaymentRequest::onchain(vec![(ADDRS[a].into(), sat * 1_000)]);
            if evaluate(&p, &prior, &state, now).is_approved() {
                state.apply(&spend_changes(&p, &prior, &state, now));
            }
        }
        let whole = PaymentRequest::onchain(
            outputs.iter().map(|(a, sat)| (ADDRS[*a].to_string(), sat * 1_000)).collect(),
        );
        // The same amounts, each output cut into up to five pieces.
        let mut pieces = Vec::new();
        for (i, (a, sat)) in outputs.iter().enumerate() {
            let n = splits[i].min(*sat as usize).max(1) as u64;
            let msat = sat * 1_000;
            for k in 0..n {
                let part = msat / n + u64::from(k < msat % n);
                pieces.push((ADDRS[*a].to_string(), part));
            }
        }
        let split = PaymentRequest::onchain(pieces);
        prop_assert_eq!(whole.total_msat_wide(), split.total_msat_wide());
        let (dw, ds) = (evaluate(&p, &whole, &state, now), evaluate(&p, &split, &state, now));
        prop_assert_eq!(dw.is_approved(), ds.is_approved(), "whole {:?} / split {:?}", dw, ds);
        prop_assert_eq!(&dw.tags, &ds.tags);
    }

    /// Whatever the system clock does (steps back, stands still, jumps), decisions are made at
    /// Warden's time, which never goes back, and the approved sum in any window of that time
    /// stays within every limit. Evaluated at the raw clock, a step back would un-count spends.
    #[test]
    fn approved_spend_never_exceeds_any_window_whatever_the_clock_does(
        hour_sat in 1_000u64..50_000,
        steps in prop::collection::vec((-7_200i64..7_200, 1u64..20_000), 1..80),
    ) {
        let p = limits_policy(hour_sat, hour_sat * 3, 1_000);
        let mut guard = warden::clock::ClockGuard::new(0, Some(300));
        let mut state = VelocityState::default();
        let mut wall: i64 = 1_795_435_200;
        let mut last = 0u64;
        let mut approved = Vec::new();
        for (i, (step, amount_sat)) in steps.into_iter().enumerate() {
            wall += step;
            let (now, _) = guard.observe(wall as u64, i as u64);
            prop_assert!(now >= last, "Warden's time went back: {now} < {last}");
            last = now;
            let req = PaymentRequest::invoice([i as u8; 32], amount_sat * 1_000, PAYEES[0], None);
            if evaluate(&p, &req, &state, now).is_approved() {
                state.apply(&spend_changes(&p, &req, &state, now));
                approved.push((now, amount_sat, 0usize));
            }
        }
        let (hour_sum, _) = max_in_window(&approved, 3_600, None);
        prop_assert!(hour_sum <= hour_sat, "hour sum {hour_sum} > {hour_sat}");
        let (day_sum, _) = max_in_window(&approved, 86_400, None);
        prop_assert!(day_sum <= hour_sat * 3, "day sum {day_sum}");
    }
}
