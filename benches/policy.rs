//! Policy decision latency: a realistic policy (20 rules, 50 destinations) over a store holding
//! a full day of history at 10 payments/s (864,000 payments in minute buckets).
//!
//! Reports median, p99 and decisions/s for (a) the pure evaluation and (b) a durable decision:
//! evaluation + one durable commit of the velocity buckets (the log's write and fdatasync).
//! `scripts/bench.sh` runs it (`cargo bench --bench policy`); under `cargo test` it runs a
//! short smoke pass so the code stays working without costing test time.

use std::sync::Arc;
use std::time::Instant;
use warden::core::PolicyEngine;
use warden::policy::velocity::codec;
use warden::policy::{
    evaluate, parse_policy, Bucket, Destination, LedgerKey, PaymentRequest, Policy, VelocityState,
};
use warden::store::{Namespace, Store};

const NOW: u64 = 1_795_435_200; // Monday 12:00 UTC
const DESTINATIONS: usize = 50;

fn payee(i: usize) -> String {
    // Deterministic valid node ids: i*G for i >= 1.
    use lightning_signer::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    hex::encode(
        PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&b).unwrap())
            .serialize(),
    )
}

fn realistic_policy() -> Policy {
    let payees: Vec<String> = (0..DESTINATIONS).map(payee).collect();
    let list = |r: std::ops::Range<usize>| {
        payees[r]
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let src = format!(
        r#"version = 1
name = "bench"
[admins]
alice = {{ pubkey = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828" }}
bob = {{ pubkey = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436" }}
carol = {{ pubkey = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e" }}
[[deny]]
tag = "sanctioned-nodes"
payees = ["{d1}"]
[[deny]]
tag = "sanctioned-addresses"
addresses = ["1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"]
[[allowlist]]
tag = "customers"
payees = [{all}]
[[allowlist]]
tag = "cold"
addresses = ["bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"]
[[limit]]
tag = "per-payment"
window = "payment"
max_amount = "0.05 btc"
[[limit]]
tag = "per-15m"
window = "15m"
max_amount = "0.5 btc"
max_count = 20_000
[[limit]]
tag = "hourly"
window = "1h"
max_amount = "1 btc"
max_count = 50_000
[[limit]]
tag = "daily"
window = "24h"
max_amount = "20 btc"
max_count = 1_000_000
[[limit]]
tag = "daily-watch"
mode = "warn"
window = "24h"
max_amount = "15 btc"
[[limit]]
tag = "per-dest-hourly"
window = "1h"
scope = "each-destination"
max_amount = "0.02 btc"
max_count = 2_000
[[limit]]
tag = "per-dest-daily"
window = "24h"
scope = "each-destination"
max_amount = "0.5 btc"
[[limit]]
tag = "group-a"
window = "24h"
payees = [{ga}]
max_amount = "5 btc"
[[limit]]
tag = "group-b"
window = "24h"
payees = [{gb}]
max_amount = "5 btc"
[[limit]]
tag = "group-c"
window = "1h"
payees = [{gc}]
max_amount = "1 btc"
[[time_window]]
tag = "large-business-hours"
above = "0.01 btc"
days = ["mon", "tue", "wed", "thu", "fri"]
from = "08:00"
to = "20:00"
[[time_window]]
tag = "maintenance-gap"
from = "00:00"
to = "24:00"
[[time_window]]
tag = "weekend-watch"
mode = "warn"
above = "0.001 btc"
days = ["mon", "tue", "wed", "thu", "fri"]
from = "00:00"
to = "24:00"
[[approval]]
tag = "large-quorum"
above = "0.02 btc"
quorum = {{ need = 2, of = ["alice", "bob", "carol"] }}
[[approval]]
tag = "unknown-payee"
unlisted_destination = true
quorum = {{ need = 2, of = ["alice", "bob", "carol"] }}
[[approval]]
tag = "huge-all-three"
above = "0.04 btc"
quorum = {{ need = 3, of = ["alice", "bob", "carol"] }}
"#,
        d1 = payee(999),
        all = list(0..DESTINATIONS),
        ga = list(0..15),
        gb = list(15..30),
        gc = list(30..45),
    );
    let p = parse_policy(&src).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(p.tags().len(), 20, "the realistic policy has 20 rules");
    p
}

/// A day of history at 10 payments/s of 1,000 sat, spread over the 50 destinations.
fn day_of_history(policy: &Policy) -> Vec<(LedgerKey, Bucket)> {
    let mut changes = Vec::new();
    let per_minute = 600u64;
    let first = (NOW - 86_400) / 60;
    for minute in first..NOW / 60 {
        changes.push((
            LedgerKey::Node,
            Bucket {
                minute,
                amount_msat: per_minute * 1_000_000,
                count: per_minute,
            },
        ));
        for d in 0..DESTINATIONS {
            let n = per_minute / DESTINATIONS as u64;
            changes.push((
                LedgerKey::Destination(Destination::Node(payee(d))),
                Bucket {
                    minute,
                    amount_msat: n * 1_000_000,
                    count: n,
                },
            ));
        }
        for l in &policy.limits {
            if let warden::policy::LimitScope::Destinations(set) = &l.scope {
                let n = per_minute * set.len() as u64 / DESTINATIONS as u64;
                changes.push((
                    LedgerKey::Group(l.tag.clone()),
                    Bucket {
                        minute,
                        amount_msat: n * 1_000_000,
                        count: n,
                    },
                ));
            }
        }
    }
    changes
}

fn percentiles(mut ns: Vec<u128>) -> (f64, f64, f64) {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1_000.0;
    let total: u128 = ns.iter().sum();
    (p(0.5), p(0.99), ns.len() as f64 / (total as f64 / 1e9))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_pure, n_durable) = if full { (200_000, 3_000) } else { (200, 20) };
    let policy = Arc::new(realistic_policy());
    let history = day_of_history(&policy);
    let mut state = VelocityState::default();
    state.apply(&history);
    let requests: Vec<PaymentRequest> = (0..1_000)
        .map(|i| {
            PaymentRequest::invoice(
                [(i % 251) as u8; 32],
                500_000 + (i as u64 % 7) * 1_000,
                &payee(i % DESTINATIONS),
                None,
            )
        })
        .collect();

    // Warm up and check the bench measures approvals, not refusals.
    let d = evaluate(&policy, &requests[0], &state, NOW);
    assert!(d.is_approved(), "bench payments must pass: {}", d.summary());

    let mut ns = Vec::with_capacity(n_pure);
    for i in 0..n_pure {
        let req = &requests[i % requests.len()];
        let t = Instant::now();
        let d = evaluate(&policy, req, &state, NOW + (i as u64 % 60));
        ns.push(t.elapsed().as_nanos());
        std::hint::black_box(d);
    }
    let (p50, p99, rate) = percentiles(ns);
    println!("policy/evaluate (pure; 20 rules, 50 destinations, 864,000 payments of history):");
    println!("  n={n_pure}  p50 {p50:.2} µs  p99 {p99:.2} µs  {rate:.0} decisions/s");

    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for chunk in history.chunks(10_000) {
            store
                .write(|| {
                    for (key, b) in chunk {
                        store.put(
                            Namespace::Velocity,
                            codec::bucket_key(key, b.minute),
                            codec::encode_bucket(b),
                        )?;
                    }
                    Ok::<_, warden::store::StoreError>(())
                })
                .unwrap();
        }
    }
    let t_open = Instant::now();
    let mut engine =
        PolicyEngine::open(policy.clone(), Store::open(dir.path()).unwrap(), NOW).unwrap();
    let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
    let mut ns = Vec::with_capacity(n_durable);
    let mut approved = 0;
    for i in 0..n_durable {
        let req = &requests[i % requests.len()];
        let now = NOW + i as u64 / 10; // 10 payments per second
        let t = Instant::now();
        let d = engine.decide(req, now).unwrap();
        ns.push(t.elapsed().as_nanos());
        approved += usize::from(d.is_approved());
    }
    let (p50, p99, rate) = percentiles(ns);
    println!("policy/decide (evaluate + one durable commit: the log's write and fdatasync; same policy and history):");
    println!("  n={n_durable}  approved={approved}  p50 {p50:.1} µs  p99 {p99:.1} µs  {rate:.0} decisions/s");
    println!(
        "  store open with a day of history: {open_ms:.0} ms ({} ledgers)",
        engine.state().len()
    );

    // Loading is linear in the file: files of valid rules and of errors, 1 MB and 10 MB.
    use lightning_signer::bitcoin::hashes::Hash as _;
    for size in [1_000_000usize, 10_000_000] {
        let mut valid = String::from("version = 1\n[[deny]]\ntag = \"big-list\"\npayees = [\n");
        let mut n = 0u32;
        while valid.len() < size {
            let pk = lightning_signer::bitcoin::secp256k1::SecretKey::from_slice(
                &lightning_signer::bitcoin::hashes::sha256::Hash::hash(&n.to_be_bytes())
                    .to_byte_array(),
            )
            .unwrap()
            .public_key(&lightning_signer::bitcoin::secp256k1::Secp256k1::signing_only());
            valid.push_str(&format!("  \"{pk}\",\n"));
            n += 1;
        }
        valid.push_str("]\n");
        let t = Instant::now();
        let p = parse_policy(&valid).unwrap();
        println!(
            "policy/load a {:.1} MB file of valid rules ({} payees in one deny list): {:.0} ms",
            valid.len() as f64 / 1e6,
            p.deny[0].destinations.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut broken = String::from("version = 1\n");
        let mut k = 0;
        while broken.len() < size {
            broken.push_str(&format!(
                "[[limit]]\ntag = \"Bad{k}\"\nwindow = \"1h\"\nmax_amount = \"1 sat\"\n"
            ));
            k += 1;
        }
        let t = Instant::now();
        let errors = parse_policy(&broken).unwrap_err();
        println!(
            "policy/load a {:.1} MB file of {k} broken rules: {:.0} ms ({} problems listed, the rest counted)",
            broken.len() as f64 / 1e6,
            t.elapsed().as_secs_f64() * 1e3,
            errors.len()
        );
    }
}
