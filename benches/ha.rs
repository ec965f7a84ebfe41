//! The three state backends through the full CLN path (CLN stand-in → VLS's remote_hsmd_socket
//! → wardend on SoftHSM, policy evaluated, every decision durable), in the same run on the same
//! machine:
//!
//! - approved-preapprove latency (p50, p99) and the sustained rate of one client asking one at a
//!   time, on Warden's append-only log (the default), on sled, and on a local PostgreSQL server
//!   (`synchronous_commit = on`, `fsync = on`);
//! - failover: two wardends on one database, the active one SIGKILLed while a client keeps
//!   asking; the time from the kill to the first approval the node gets from the standby, over
//!   10 kills (each killed wardend comes back as the next standby).
//!
//! `scripts/bench.sh` runs it (`cargo bench --bench ha`); under `cargo test` it is a short smoke
//! pass (a few approvals, two kills).

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
use stats::{print, timed};
use std::time::{Duration, Instant};
use vls::Invoices;
use vls_protocol::msgs::{self, Message};

/// wardend's defaults (store.lease_secs, store.renew_secs).
const LEASE_SECS: &str = "6";
const RENEW_SECS: &str = "2";

fn preapprove(cln: &mut Cln, invoice: String) -> bool {
    match cln.proxy.hsmd.call(msgs::PreapproveInvoice {
        invstring: vls_protocol::serde_bolt::WireString(invoice.into_bytes()),
    }) {
        Ok(Message::PreapproveInvoiceReply(r)) => r.result,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, kills) = if full { (2_000, 10) } else { (20, 2) };
    println!(
        "State backends: the log, sled and PostgreSQL, and failover ({})",
        if full { "full" } else { "smoke" }
    );
    // wardend's default lease, so the failover measured is the one an operator gets.
    let env = [
        ("RUST_LOG", "error"),
        ("WARDEN_STORE_LEASE_SECS", LEASE_SECS),
        ("WARDEN_STORE_RENEW_SECS", RENEW_SECS),
    ];
    let mut log = Cln::start_store("bench-log", LOAD_RULES, &env, &[], None).await;
    let sled_env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("WARDEN_STORE_BACKEND", "sled")])
        .collect();
    let mut sled = Cln::start_store("bench-sled", LOAD_RULES, &sled_env, &[], None).await;
    let server = common::pg::shared();
    let mut pg = Cln::start_store("bench-pg", LOAD_RULES, &env, &[], Some(server)).await;
    tokio::task::block_in_place(|| {
        log.init();
        sled.init();
        pg.init();
    });
    let before = pg.daemon.scrape_metrics().await;
    tokio::task::block_in_place(|| {
        println!("same run, same proxy, same machine, one client asking one at a time:");
        let mut inv = Invoices::new(10);
        let l = timed(n, |_| assert!(preapprove(&mut log, inv.next())));
        print("log        approved preapprove", l);
        let mut inv = Invoices::new(11);
        let s = timed(n, |_| assert!(preapprove(&mut sled, inv.next())));
        print("sled       approved preapprove", s);
        let mut inv = Invoices::new(12);
        let p = timed(n, |_| assert!(preapprove(&mut pg, inv.next())));
        print("postgres   approved preapprove", p);
        let after = tokio::runtime::Handle::current().block_on(pg.daemon.scrape_metrics());
        for step in ["commit", "read"] {
            let (secs, count) = (
                format!("warden_store_step_seconds{{name=\"{step}\"}}"),
                format!("warden_store_step_count{{name=\"{step}\"}}"),
            );
            let d = |k: &str| after[k] - before.get(k).copied().unwrap_or(0.0);
            println!(
                "  postgres per approval: {:.2} {step}s, {:.3} ms in them ({:.3} ms each)",
                d(&count) / n as f64,
                d(&secs) * 1e3 / n as f64,
                d(&secs) * 1e3 / d(&count).max(1.0)
            );
        }
        println!(
            "  p50 ratio log/sled: {:.2}; postgres/log: {:.2}; postgres/sled: {:.2}; goal p50 <= 2 ms and >= 500/s on PostgreSQL: {}",
            l.p50_ms / s.p50_ms,
            p.p50_ms / l.p50_ms,
            p.p50_ms / s.p50_ms,
            if p.p50_ms <= 2.0 && p.per_sec >= 500.0 {
                "met"
            } else {
                "not met"
            }
        );
    });
    drop(sled);
    drop(log);

    // Failover: a second wardend for the same node on the same database.
    let mut standby = pg.daemon.twin("bench-pg-b");
    tokio::task::block_in_place(|| standby.start_standby());
    let mut inv = Invoices::new(13);
    let mut times = Vec::new();
    for k in 0..kills {
        tokio::task::block_in_place(|| {
            assert!(preapprove(&mut pg, inv.next()));
            // At a different moment of the renewal cycle each time (the rounds themselves run
            // in step with it): a kill lands anywhere from just after a renewal to just before.
            std::thread::sleep(Duration::from_millis((k as u64 * 737) % 2_000));
            let killed = Instant::now();
            pg.daemon.kill_wardend();
            // The node keeps asking; its proxy holds the request until a signer answers.
            assert!(preapprove(&mut pg, inv.next()));
            let took = killed.elapsed();
            times.push(took);
            standby.wait_ready(Duration::from_secs(30));
            // The killed one comes back as the standby of the next round.
            pg.daemon.start_standby();
            std::mem::swap(&mut pg.daemon, &mut standby);
            println!(
                "  kill {}: first approval {:.0} ms after the kill",
                k + 1,
                took.as_secs_f64() * 1e3
            );
        });
    }
    times.sort();
    println!(
        "failover over {kills} kills (lease {LEASE_SECS} s, renewal every {RENEW_SECS} s): median {:.0} ms, max {:.0} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
}
