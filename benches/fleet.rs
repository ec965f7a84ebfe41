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

/// Seconds spent taking the fleet's lock or a share (waits included), and how many of each.
async fn locks_of(m: &Cln) -> (f64, f64, f64) {
    let lock = step(m, "fleet-lock").await;
    let share = step(m, "fleet-share").await;
    (lock.0 + share.0, lock.1, share.1)
}

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
    // The same load without a fleet: three wardends, each on a database of its own, paying at
    // once on the same machine. What a fleet adds is the difference from this.
    let mut apart = Vec::new();
    for i in 0..3 {
        let mut w = Cln::start_store(
            &format!("bench-apart-{i}"),
            LOAD_RULES,
            &env,
            &[],
            Some(server),
        )
        .await;
        block_in_place(|| w.init());
        apart.push(w);
    }
    let three_apart = at_once(&mut apart, n, 40);
    print("three wardends, no fleet, paying at once", three_apart);
    drop(apart);

    let lock_before = locks_of(&members[0]).await;
    let alone = block_in_place(|| {
        let mut inv = Invoices::new(21);
        timed(n, |_| assert!(preapprove(&mut members[0], inv.next())))
    });
    let lock_after = locks_of(&members[0]).await;
    print("one fleet member paying alone", alone);
    let alone_lock_ms = (lock_after.0 - lock_before.0) * 1e3 / n as f64;

    let mut before = Vec::new();
    for m in &members {
        before.push(locks_of(m).await);
    }
    let all = at_once(&mut members, n, 30);
    print("three members paying at once (every approval)", all);
    let (mut lock_secs, mut fleet_locks, mut share_locks) = (0.0, 0.0, 0.0);
    for (m, b) in members.iter().zip(&before) {
        let a = locks_of(m).await;
        lock_secs += a.0 - b.0;
        fleet_locks += a.1 - b.1;
        share_locks += a.2 - b.2;
    }
    let approvals = (3 * n) as f64;
    let contended_lock_ms = lock_secs * 1e3 / approvals;
    println!(
        "  of {approvals} approvals, {fleet_locks} took the fleet's lock and {share_locks} only their member's share; locks taken: {alone_lock_ms:.3} ms per approval alone, {contended_lock_ms:.3} ms with three at once: {:.3} ms waiting on the shared rows per approval",
        (contended_lock_ms - alone_lock_ms).max(0.0)
    );
    let goal = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "  p50 three members at once / one wardend without a fleet: {:.2}; / three wardends without a fleet at once (the same load): {:.2} (goal <= 1.25: {})",
        all.p50_ms / one.p50_ms,
        all.p50_ms / three_apart.p50_ms,
        goal(all.p50_ms / three_apart.p50_ms <= 1.25)
    );
    println!(
        "  fleet total {:.0}/s: {:.2}x one member alone ({:.0}/s, goal >= 2: {}), {:.2}x one wardend without a fleet ({:.0}/s), {:.2}x three wardends without a fleet ({:.0}/s)",
        all.per_sec,
        all.per_sec / alone.per_sec,
        alone.per_sec,
        goal(all.per_sec / alone.per_sec >= 2.0),
        all.per_sec / one.per_sec,
        one.per_sec,
        all.per_sec / three_apart.per_sec,
        three_apart.per_sec
    );
}

/// `n` approved preapprovals on each of `nodes` at once, one thread per node: every approval's
/// latency, and the rate of all of them together.
fn at_once(nodes: &mut [Cln], n: usize, seed: u8) -> Stats {
    let start = Instant::now();
    let samples: Vec<Vec<Duration>> = block_in_place(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter_mut()
                .enumerate()
                .map(|(i, m)| {
                    s.spawn(move || {
                        let mut inv = Invoices::new(seed + i as u8);
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
    stats(samples.into_iter().flatten().collect(), start.elapsed())
}
