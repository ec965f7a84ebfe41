//! A fleet on one PostgreSQL server, through the full CLN path (CLN stand-in → VLS's
//! remote_hsmd_socket → wardend on SoftHSM, every decision durable), in one run on one machine:
//!
//! - one wardend on PostgreSQL, not in a fleet: approved-preapprove latency and rate, one client
//!   asking one at a time (the baseline);
//! - one member of a fleet paying alone, under a company-wide cap (`scope = "fleet"`) far above
//!   what the run spends: what the fleet's lock and shared window cost with nobody else waiting;
//! - three members paying at once, one client each: latency of every approval, the fleet's
//!   total rate, and the time each decision spent taking the fleet's lock (the waits on the
//!   shared rows), from wardend's own metrics.
//!
//! `scripts/bench.sh` runs it (`cargo bench --bench fleet`); under `cargo test` it is a short
//! smoke pass.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/stats.rs"]
mod stats;
#[path = "support/vls.rs"]
mod vls;

use common::cln::Cln;
use common::daemon::LOAD_RULES;
use stats::{print, stats, timed, Stats};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use vls::Invoices;
use vls_protocol::msgs::{self, Message};

/// The load policy plus a company-wide cap no run reaches: every payment is counted in the
/// fleet's window, and approved.
const FLEET_RULES: &str = r#"
[[limit]]
tag = "company-daily"
scope = "fleet"
window = "24h"
max_amount = "1_000_000 btc"
"#;

fn preapprove(cln: &mut Cln, invoice: String) -> bool {
    match cln.proxy.hsmd.call(msgs::PreapproveInvoice {
        invstring: vls_protocol::serde_bolt::WireString(invoice.into_bytes()),
    }) {
        Ok(Message::PreapproveInvoiceReply(r)) => r.result,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Seconds and count of one store step, from a wardend's metrics.
async fn step(cln: &Cln, name: &str) -> (f64, f64) {
    let m = cln.daemon.scrape_metrics().await;
    let get = |k: String| m.get(&k).copied().unwrap_or(0.0);
    (
        get(format!("warden_store_step_seconds{{name=\"{name}\"}}")),
        get(format!("warden_store_step_count{{name=\"{name}\"}}")),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 2_000 } else { 20 };
    println!(
        "A fleet of three on one PostgreSQL server ({})",
        if full { "full" } else { "smoke" }
    );
    let env = [("RUST_LOG", "error")];
    let server = common::pg::shared();
    let mut single = Cln::start_store("bench-single", LOAD_RULES, &env, &[], Some(server)).await;
    block_in_place(|| single.init());
    let rules = format!("{LOAD_RULES}{FLEET_RULES}");
    let (_db, mut members) =
        Cln::start_fleet("bench_fleet", &rules, &["node-a", "node-b", "node-c"], &env).await;

    println!("same run, same server, same machine:");
    let one = block_in_place(|| {
        let mut inv = Invoices::new(20);
        timed(n, |_| assert!(preapprove(&mut single, inv.next())))
    });
    print("one wardend, no fleet, approved preapprove", one);
    drop(single);

    let lock_before = step(&members[0], "fleet-lock").await;
    let alone = block_in_place(|| {
        let mut inv = Invoices::new(21);
        timed(n, |_| assert!(preapprove(&mut members[0], inv.next())))
    });
    let lock_after = step(&members[0], "fleet-lock").await;
    print("one fleet member paying alone", alone);
    let alone_lock_ms =
        (lock_after.0 - lock_before.0) * 1e3 / (lock_after.1 - lock_before.1).max(1.0);

    let mut before = Vec::new();
    for m in &members {
        before.push(step(m, "fleet-lock").await);
    }
    let start = Instant::now();
    let samples: Vec<Vec<Duration>> = block_in_place(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = members
                .iter_mut()
                .enumerate()
                .map(|(i, m)| {
                    s.spawn(move || {
                        let mut inv = Invoices::new(30 + i as u8);
                        let mut ns = Vec::with_capacity(n);
                        for _ in 0..n {
                            let t = Instant::now();
                            assert!(preapprove(m, inv.next()));
                            ns.push(t.elapsed());
                        }
                        ns
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    let wall = start.elapsed();
    let all: Stats = stats(samples.into_iter().flatten().collect(), wall);
    print("three members paying at once (every approval)", all);
    let (mut lock_secs, mut locks) = (0.0, 0.0);
    for (m, b) in members.iter().zip(&before) {
        let a = step(m, "fleet-lock").await;
        lock_secs += a.0 - b.0;
        locks += a.1 - b.1;
    }
    let contended_lock_ms = lock_secs * 1e3 / locks.max(1.0);
    println!(
        "  taking the fleet's lock: {alone_lock_ms:.3} ms per decision alone (one round trip), {contended_lock_ms:.3} ms with three at once: {:.3} ms waiting on the shared rows per approval",
        (contended_lock_ms - alone_lock_ms).max(0.0)
    );
    println!(
        "  p50 three at once / one wardend without a fleet: {:.2} (goal <= 1.25: {}); fleet total {:.0}/s vs one wardend {:.0}/s: {:.2}x (goal >= 2: {}); vs one member alone {:.0}/s: {:.2}x",
        all.p50_ms / one.p50_ms,
        if all.p50_ms / one.p50_ms <= 1.25 { "met" } else { "not met" },
        all.per_sec,
        one.per_sec,
        all.per_sec / one.per_sec,
        if all.per_sec / one.per_sec >= 2.0 { "met" } else { "not met" },
        alone.per_sec,
        all.per_sec / alone.per_sec
    );
}
