//! Bounded state (issue 29, item 4): a simulated month of a busy node, the whole signer in one
//! process (as `tests/commits.rs` builds it) on the default backend, Warden's append-only log,
//! with Warden and VLS on one simulated clock.
//!
//! 10,000 payments a day for 30 days, each a fresh invoice that expires 6 days after it is
//! issued, so VLS holds it 7 days (the expiry plus VLS's fixed day) before pruning it. One
//! payment in 100 is over the quorum threshold: it is held, never approved, expires after a day
//! and is pruned with the other closed requests after `approvals.retention_days = 7`. Every
//! simulated 10 minutes the node asks for VLS's heartbeat, as the proxy's chain follower does
//! every minute on mainnet (VLS prunes invoices then), and Warden's sweep runs (wardend's runs
//! every 5 s; only time makes its work due). At each day's end the bench prints the log's size on disk and the
//! live state per namespace; at days 1, 7, 8, 15 and 30 it restarts the signer over the log and
//! times the start (the log read back, the audit chain's head, VLS's node restored, the init
//! answered).
//!
//! `scripts/bench.sh` runs it (`cargo bench --bench retention`). Under `cargo test` it runs 10
//! days of 150 payments with the same retention; either way it fails if VLS does not let go of
//! invoices past the retention or the state other than the audit log grows after it. The audit
//! log's bytes per approval are printed against the issue's goal (400), not asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cln::Payee;
use common::stack::{build_with, sealed, send, Options};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vls_protocol::msgs::{self, Message, SerBolt};
use vls_protocol::serde_bolt::WireString;
use warden::approval::ApprovalConfig;
use warden::clock::ManualClock;
use warden::signer::stream::Session;
use warden::store::log::LogBackend;
use warden::store::{Namespace, Store};

const DAY: u64 = 86_400;
const RETENTION_DAYS: u64 = 7;
/// VLS prunes an invoice a day after it expires: 6 + 1 = the 7-day retention.
const INVOICE_EXPIRY: Duration = Duration::from_secs(6 * DAY);
const HELD_EVERY: u64 = 100;

const RULES: &str = r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "100_000 sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "1_000_000_000 sat"

[[approval]]
tag = "large-payment-quorum"
above = "50_000 sat"
quorum = { need = 2, of = ["alice", "bob", "carol"] }
"#;

struct Signer {
    store: Store,
    core: Arc<warden::core::Core>,
    session: Session,
    next_id: u64,
    /// The log read back; Warden's core and VLS's node built over it; the init answered.
    started_ms: [f64; 3],
}

struct Node {
    /// Kept alive: the SoftHSM token lives in its directory.
    _token: common::TestToken,
    hsm: warden::hsm::Hsm,
    seed: warden::hsm::NodeSeed,
    policy: warden::core::LoadedPolicy,
    clock: ManualClock,
    dir: tempfile::TempDir,
}

impl Node {
    fn options() -> Options {
        Options {
            approvals: ApprovalConfig {
                retention_secs: RETENTION_DAYS * DAY,
                ..ApprovalConfig::default()
            },
            max_invoices: 150_000,
            vls_on_clock: true,
        }
    }

    /// A signer over what the log holds, initialised as the proxy does first.
    fn start(&self) -> Signer {
        let t = Instant::now();
        let backend = Arc::new(LogBackend::open(&self.dir.path().join("state")).unwrap());
        let opened = t.elapsed();
        let (store, core, mut session) = build_with(
            &self.hsm,
            &self.seed,
            &self.policy,
            &self.clock,
            backend,
            &Self::options(),
        );
        let built = t.elapsed();
        match msgs::from_vec(
            send(
                &mut session,
                1,
                warden_testkit::hsmd_init_regtest().as_vec(),
            )
            .message,
        ) {
            Ok(Message::HsmdInitReplyV4(_)) => {}
            other => panic!("unexpected init reply {other:?}"),
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Signer {
            store,
            core,
            session,
            next_id: 2,
            started_ms: [ms(opened), ms(built - opened), ms(t.elapsed() - built)],
        }
    }
}

impl Signer {
    fn call(&mut self, message: Vec<u8>) -> Vec<u8> {
        self.next_id += 1;
        let r = send(&mut self.session, self.next_id, message);
        assert!(r.error.is_empty(), "signer error: {}", r.error);
        r.message
    }

    fn preapprove(&mut self, invoice: &str) -> bool {
        let reply = self.call(
            msgs::PreapproveInvoice {
                invstring: WireString(invoice.as_bytes().to_vec()),
            }
            .as_vec(),
        );
        match msgs::from_vec(reply) {
            Ok(Message::PreapproveInvoiceReply(r)) => r.result,
            other => panic!("unexpected preapprove reply {other:?}"),
        }
    }

    fn heartbeat(&mut self) {
        match msgs::from_vec(self.call(msgs::GetHeartbeat {}.as_vec())) {
            Ok(Message::GetHeartbeatReply(_)) => {}
            other => panic!("unexpected heartbeat reply {other:?}"),
        }
    }

    /// Records and bytes (keys and values) per namespace.
    fn live(&self) -> BTreeMap<&'static str, (usize, u64)> {
        Namespace::ALL
            .iter()
            .map(|ns| {
                let entries = self.store.scan(*ns, b"").unwrap();
                let bytes = entries
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum();
                (ns.name(), (entries.len(), bytes))
            })
            .collect()
    }
}

struct Day {
    day: u64,
    approvals: u64,
    live: BTreeMap<&'static str, (usize, u64)>,
    file: u64,
    heartbeat_ms: f64,
    startup_ms: Option<(f64, [f64; 3])>,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (days, per_day) = if full { (30, 10_000) } else { (10, 150) };
    // The proxy asks every minute on mainnet; every 10 minutes here (every hour in the smoke
    // pass) prunes the same invoices in fewer, larger steps.
    let beat_every = if full { 600 } else { 3_600 };
    let (token, hsm, seed) = sealed("retention");
    let (_admins, policy) = common::stack::admins_and_policy(RULES);
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let node = Node {
        _token: token,
        hsm,
        seed,
        policy,
        clock: ManualClock::new(start),
        dir: tempfile::tempdir().unwrap(),
    };
    let mut s = node.start();
    let payee = Payee::new(0x52);
    let mut report: Vec<Day> = Vec::new();
    let (mut approvals, mut held, mut n) = (0u64, 0u64, 0u64);
    println!(
        "A simulated month: {per_day} payments a day for {days} days, invoices held by VLS {RETENTION_DAYS} days, closed approval requests kept {RETENTION_DAYS} days, on the log"
    );
    let run = Instant::now();
    for day in 1..=days {
        let day_start = start + (day - 1) * DAY;
        let mut next_beat = day_start + beat_every;
        let (mut beat_secs, mut beats) = (0f64, 0u64);
        for i in 0..per_day {
            let at = day_start + i * DAY / per_day;
            while next_beat <= at {
                node.clock.set(next_beat);
                let t = Instant::now();
                s.heartbeat();
                beat_secs += t.elapsed().as_secs_f64();
                beats += 1;
                s.core.sweep().unwrap();
                next_beat += beat_every;
            }
            node.clock.set(at);
            n += 1;
            let large = n % HELD_EVERY == 0;
            let amount_msat = if large { 60_000_000 } else { 1_000_000 };
            let invoice = payee.invoice_at(
                amount_msat,
                n,
                UNIX_EPOCH + Duration::from_secs(at),
                Some(INVOICE_EXPIRY),
            );
            let approved = s.preapprove(&invoice);
            assert_eq!(approved, !large, "payment {n} on day {day}");
            if large {
                held += 1;
            } else {
                approvals += 1;
            }
        }
        node.clock.set(day_start + DAY);
        s.heartbeat();
        s.core.sweep().unwrap();
        let live = s.live();
        let file = std::fs::metadata(node.dir.path().join("state/state.log"))
            .unwrap()
            .len();
        let startup_ms = if [1, 7, 8, 15, 30].contains(&day) {
            drop(s);
            let t = Instant::now();
            s = node.start();
            Some((t.elapsed().as_secs_f64() * 1e3, s.started_ms))
        } else {
            None
        };
        let d = Day {
            day,
            approvals,
            live,
            file,
            heartbeat_ms: beat_secs * 1e3 / beats.max(1) as f64,
            startup_ms,
        };
        print_day(&d);
        report.push(d);
    }
    let elapsed = run.elapsed().as_secs_f64();
    println!(
        "{} payments ({approvals} approved, {held} held) in {elapsed:.0} s",
        approvals + held
    );
    summarize(&report, per_day);
}

fn print_day(d: &Day) {
    let mut parts = Vec::new();
    for (ns, (count, bytes)) in &d.live {
        if *count > 0 {
            parts.push(format!("{ns} {count}/{:.1} MB", *bytes as f64 / 1e6));
        }
    }
    println!(
        "  day {:>2}: {:>7} approved, log file {:>7.1} MB, live {}; heartbeat {:.2} ms{}",
        d.day,
        d.approvals,
        d.file as f64 / 1e6,
        parts.join(", "),
        d.heartbeat_ms,
        d.startup_ms
            .map(|(ms, [read, built, init])| format!(
                "; start-up {ms:.0} ms (log read {read:.0}, core and VLS node built {built:.0}, init {init:.0})"
            ))
            .unwrap_or_default()
    );
}

/// Everything but the audit log must stop growing once the retention has passed.
fn summarize(report: &[Day], per_day: u64) {
    let without_audit = |d: &Day| -> u64 {
        d.live
            .iter()
            .filter(|(ns, _)| **ns != Namespace::Audit.name())
            .map(|(_, (_, b))| *b)
            .sum()
    };
    let settled = &report[RETENTION_DAYS as usize];
    let last = report.last().unwrap();
    let audit = |d: &Day| d.live[Namespace::Audit.name()].1;
    let audit_per_approval =
        (audit(last) - audit(settled)) as f64 / (last.approvals - settled.approvals) as f64;
    let state_growth = without_audit(last) as f64 / without_audit(settled) as f64;
    let vls_invoices = |d: &Day| d.live[Namespace::Vls.name()].0;
    println!(
        "after the retention (day {} to day {}): state without the audit log {:.1} MB -> {:.1} MB ({state_growth:.3}x), VLS records {} -> {}; audit log {audit_per_approval:.0} bytes per approval (goal 400)",
        settled.day,
        last.day,
        without_audit(settled) as f64 / 1e6,
        without_audit(last) as f64 / 1e6,
        vls_invoices(settled),
        vls_invoices(last),
    );
    let total = last.file as f64 / last.approvals as f64;
    println!(
        "log file {:.1} MB after {} approvals: {total:.0} bytes per approval (compaction runs past 4x the live state)",
        last.file as f64 / 1e6,
        last.approvals
    );
    let startups: Vec<String> = report
        .iter()
        .filter_map(|d| {
            d.startup_ms
                .map(|(ms, _)| format!("day {} {ms:.0} ms", d.day))
        })
        .collect();
    println!("start-up: {}", startups.join(", "));
    // VLS holds about RETENTION_DAYS days of invoices (a day's worth either side of the cut).
    let invoices_held = vls_invoices(last) as u64;
    assert!(
        invoices_held <= (RETENTION_DAYS + 1) * per_day + 20,
        "VLS holds {invoices_held} records after {} days: invoices are not pruned",
        last.day
    );
    assert!(
        state_growth < 1.10,
        "the state without the audit log grew {state_growth:.3}x after the retention"
    );
}
