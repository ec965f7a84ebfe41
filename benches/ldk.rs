//! Payment round trip between two LDK nodes in one process, node A signed by Warden versus node
//! A using LDK's own `KeysManager`, in the same run on the same machine.
//!
//! Both runs use the harness of `tests/ldk_node.rs`: real `ChannelManager`s and `PeerManager`s
//! over an in-memory pipe, one 5,000,000 sat channel, node B on LDK's `KeysManager`. With Warden,
//! A is `KeysManagerClient` over `warden_ldk::LdkSignerLink` to a release `wardend` on a SoftHSM
//! token, and each payment is preapproved first (policy evaluated, counted, audited, flushed).
//! One round trip: preapprove (Warden only), `pay_for_bolt11_invoice`, B's claim, until A holds
//! the preimage (`Event::PaymentSent`). Invoices are written by B before the clock starts.
//!
//! Then the time to resolve a force close with one HTLC, blocks mined as fast as the nodes take
//! them: A holds an outgoing HTLC B never settles and force-closes; the clock runs from the
//! force close until A's sweep of its delayed outputs (its balance and the timed-out HTLC) is
//! mined, through the commitment, the HTLC-timeout and the CSV delays, for both signers.
//!
//! `scripts/bench.sh` runs it (`cargo bench --bench ldk`); under `cargo test` it is a short smoke
//! pass.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/replay.rs"]
mod replay;
#[path = "support/stats.rs"]
mod stats;

use common::daemon::{Daemon, LOAD_RULES};
use common::ldk_net::{
    keys_manager, receiver_config, spend, Chain, Keys, LocalWallet, Net, Node, WardenSide,
};
use lightning_signer::lightning::sign::OutputSpender;
use lightning_signer::lightning::util::config::UserConfig;
use stats::{print, timed, Stats};
use std::time::{Duration, Instant};

const CHANNEL_SAT: u64 = 5_000_000;
/// 1,000 sat per payment: hundreds fit in one channel.
const AMOUNT_MSAT: u64 = 1_000_000;

fn measure<A: Keys, B: Keys, E: std::fmt::Debug>(
    net: &Net<A, B>,
    n: usize,
    preapprove: impl Fn(&lightning_signer::lightning_invoice::Bolt11Invoice) -> Result<(), E>,
) -> Stats {
    // Two untimed payments warm both nodes' paths first.
    for i in 0..2 {
        let invoice = net.invoice(AMOUNT_MSAT, &format!("warm-up {i}"));
        net.pay(&invoice, &preapprove).expect("warm-up payment");
    }
    let invoices: Vec<_> = (0..n)
        .map(|i| net.invoice(AMOUNT_MSAT, &format!("payment {i}")))
        .collect();
    timed(n, |i| {
        net.pay(&invoices[i as usize], &preapprove)
            .expect("payment");
    })
}

/// A holds one outgoing HTLC and force-closes; returns the time until its sweep is mined and how
/// many blocks that took.
fn resolve_force_close<A: Keys + OutputSpender, B: Keys, E: std::fmt::Debug>(
    net: &mut Net<A, B>,
    preapprove: impl Fn(&lightning_signer::lightning_invoice::Bolt11Invoice) -> Result<(), E>,
) -> (Duration, usize) {
    let held = net.invoice(100 * AMOUNT_MSAT, "held");
    net.send_and_hold(&held, &preapprove).expect("held payment");
    let start_height = net.chain.blocks.len();
    let start = Instant::now();
    let commitment = net.force_close_a();
    let timeout = net
        .mine_until_a_spends(&commitment, 500)
        .expect("A times the HTLC out");
    net.mine(vec![timeout]);
    let (sweep, outputs) = net.sweep_a();
    assert_eq!(outputs.len(), 2, "A's balance and the HTLC: {outputs:?}");
    assert!(!sweep.input.is_empty());
    (start.elapsed(), net.chain.blocks.len() - start_height)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 500 } else { 5 };
    println!(
        "LDK payment round trip, A -> B over one channel ({})",
        if full { "full" } else { "smoke" }
    );

    // Node A signed by wardend.
    let side = WardenSide::start();
    let mut d = Daemon::prepare("bench-ldk", LOAD_RULES, side.port);
    d.wardend_env = vec![
        ("RUST_LOG".into(), "error".into()),
        ("WARDEN_MAX_INVOICES".into(), "150000".into()),
    ];
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, CHANNEL_SAT);
    let before = side.rt.block_on(d.scrape_metrics());
    let warden = measure(&net, n, |i| side.link.preapprove_invoice(i));
    let after = side.rt.block_on(d.scrape_metrics());
    let warden_close = resolve_force_close(&mut net, |i| side.link.preapprove_invoice(i));
    drop(net);
    // Where Warden's time goes: wardend's own count and time of each request kind, per payment
    // (the two warm-up payments are in the counts too).
    let paid = (n + 2) as f64;
    let mut per_kind: Vec<(String, f64, f64)> = after
        .iter()
        .filter_map(|(k, count)| {
            let name = k
                .strip_prefix("warden_hsmd_request_seconds_count{name=\"")?
                .strip_suffix("\"}")?;
            let sum_key = format!("warden_hsmd_request_seconds_sum{{name=\"{name}\"}}");
            let count_key = k.as_str();
            let count = count - before.get(count_key).copied().unwrap_or(0.0);
            let sum = after[&sum_key] - before.get(&sum_key).copied().unwrap_or(0.0);
            (count > 0.0).then(|| (name.to_string(), count / paid, sum / count * 1e3))
        })
        .collect();
    per_kind.sort_by(|a, b| a.0.cmp(&b.0));
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let commits = delta("warden_state_commits") / paid;
    // sled's device wait is its fsync step, the append-only log's its fdatasync step.
    let fsyncs = (delta(r#"warden_store_step_count{name="fsync"}"#)
        + delta(r#"warden_store_step_count{name="fdatasync"}"#))
        / paid;
    let requests: f64 = per_kind.iter().map(|(_, per, _)| per).sum();

    // Node A with LDK's own KeysManager, funded from a local one-key wallet.
    let chain = Chain::default();
    let a = Node::new("A", keys_manager(0x41), &chain, UserConfig::default());
    let b = Node::new("B", keys_manager(0x42), &chain, receiver_config());
    let mut net = Net::connect(a, b, chain);
    let wallet = LocalWallet::new(0x33);
    let faucet = net.fund_wallet(wallet.script(), CHANNEL_SAT + 2_000);
    let (temporary, script) = net.request_channel(CHANNEL_SAT);
    let unsigned = spend(&faucet, 0, script, CHANNEL_SAT);
    net.commit_funding(temporary, &unsigned);
    net.confirm_funding(wallet.sign(unsigned, &faucet.output[0]));
    let ldk = measure(&net, n, |_| Ok::<(), ()>(()));
    let ldk_close = resolve_force_close(&mut net, |_| Ok::<(), ()>(()));

    println!(
        "same run, same machine, {n} payments of {} sat each:",
        AMOUNT_MSAT / 1000
    );
    print("A signed by wardend (preapprove + pay)", warden);
    print("A with LDK's KeysManager (pay)", ldk);
    println!(
        "  p50 ratio warden/KeysManager: {:.1}",
        warden.p50_ms / ldk.p50_ms
    );
    println!(
        "  wardend per payment: {requests:.2} requests, {commits:.2} durable commits, {fsyncs:.2} fsyncs"
    );
    println!("  wardend's requests per payment (its own time per request, mean):");
    for (name, per_payment, mean_ms) in per_kind {
        println!("    {name:<28} {per_payment:>5.2} x {mean_ms:>6.3} ms");
    }
    println!("force close with one HTLC, resolved (blocks mined at once):");
    for (who, (took, blocks)) in [("wardend", warden_close), ("KeysManager", ldk_close)] {
        println!(
            "  A with {who:<12} {:>8.1} ms over {blocks} blocks ({:.2} ms per block)",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3 / blocks as f64
        );
    }
    println!(
        "  ratio warden/KeysManager: {:.1}",
        warden_close.0.as_secs_f64() / ldk_close.0.as_secs_f64()
    );
    channel_ratio(n);
}

/// Issue 29, item 2: wardend's CPU per request over `n` payments (a preapprove and the channel
/// messages of each), against VLS's bare handler given the same requests. A second wardend, its
/// link behind a relay that keeps every request in order; afterwards the requests are replayed
/// from the first (init, the channel's opening) into a bare handler on wardend's own seed, and
/// the payments' share is timed.
fn channel_ratio(n: usize) {
    let side = WardenSide::start();
    let relay = replay::Relay::start(&side.rt, side.port);
    let mut d = Daemon::prepare("bench-ldk-replay", LOAD_RULES, relay.port);
    d.wardend_env = vec![
        ("RUST_LOG".into(), "error".into()),
        ("WARDEN_MAX_INVOICES".into(), "150000".into()),
    ];
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, CHANNEL_SAT);
    let pid = d.wardend.as_ref().unwrap().id();
    let from = relay.recorded.len();
    let cpu_before = procfs::cpu_secs(pid);
    measure(&net, n, |i| side.link.preapprove_invoice(i));
    let wardend_cpu = procfs::cpu_secs(pid) - cpu_before;
    let requests = relay.recorded.take();
    drop(net);
    d.stop_wardend();
    let hsm = d.token.open();
    let loaded = hsm
        .load_seed(
            &d.token.data_dir,
            lightning_signer::bitcoin::Network::Regtest,
        )
        .unwrap();
    let mut seed = [0u8; 32];
    seed.copy_from_slice(loaded.seed.as_slice());
    let bare = replay::replay_cpu(seed, &requests, from);
    let timed = &requests[from..];
    let answered = replay::kinds(timed);
    let bare_cpu: f64 = bare.values().map(|(c, _)| c).sum();
    let bare_n: usize = bare.values().map(|(_, k)| k).sum();
    println!(
        "CPU over {} payments ({} requests: {}), the same requests replayed:",
        n + 2,
        timed.len(),
        answered
            .iter()
            .map(|(k, c)| format!("{c} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Per payment, so Warden's own messages (its check before the preapproval), which the bare
    // handler has no counterpart for, count as Warden's cost.
    let payments = (n + 2) as f64;
    let per_wardend = wardend_cpu / payments * 1e3;
    let per_bare = bare_cpu / payments * 1e3;
    println!("  per payment: wardend (process, user + system) {per_wardend:.3} ms, bare VLS handler (replayed) {per_bare:.3} ms");
    println!(
        "  ratio wardend/bare: {:.2} (per request: wardend {:.3} ms over {} requests, bare {:.3} ms over {bare_n})",
        per_wardend / per_bare,
        wardend_cpu / timed.len() as f64 * 1e3,
        timed.len(),
        bare_cpu / bare_n.max(1) as f64 * 1e3
    );
    for (k, (cpu, count)) in &bare {
        println!(
            "    bare {k:<28} {count:>5} x {:.3} ms",
            cpu / *count as f64 * 1e3
        );
    }
}
