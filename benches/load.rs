//! Load shaped like real traffic (issue 13, item 5), on one wardend signing one LDK node with a
//! channel to each of 16 peers (`tests/common/ldk_hub.rs`: real `ChannelManager`s and
//! `PeerManager`s, every peer driven by its own thread, so LDK calls the signer from 16 threads
//! at once, as a node with busy peers does):
//!
//! - (a) the preapprove stream alone: one thread asking preapprovals one at a time, the way
//!   lightningd asks its own;
//! - (c) payments in flight on 16 channels at once: each peer's thread has A preapprove and pay
//!   that peer, one payment after another;
//! - (b) the preapprove stream of (a) while 16 peers pay A at once: on A's side the peers'
//!   traffic is channel signing only (commitments, revocations, the claims).
//!
//! Each phase reports the durable signer requests wardend answered per second (its own
//! counters), how many requests shared one `fsync` (group commit), wardend's CPU per request and
//! memory, and client-side latency p50/p99 per message type. The bare VLS handler's CPU per
//! preapprove (in this process, no gRPC, nothing durable) is measured in the same run and
//! compared with wardend's in (a). `scripts/bench.sh` runs it (`cargo bench --bench load`);
//! under `cargo test` it is a short smoke pass (one payment per channel each way).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/stats.rs"]
mod stats;
#[path = "support/vls.rs"]
mod vls;

use common::daemon::{Daemon, LOAD_RULES};
use common::ldk_hub::Hub;
use common::ldk_net::WardenSide;
use lightning_signer::lightning::sign::ReceiveAuthKey;
use procfs::{cpu_secs, rss_mib};
use stats::{print, stats, Stats};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vls_protocol::model::PubKey;
use vls_protocol_client::{Error as ClientError, KeysManagerClient, Transport};
use warden_ldk::LdkSignerLink;

const PEERS: usize = 16;
const CHANNEL_SAT: u64 = 1_000_000;
/// What A pays each peer per payment in (c), and each peer pays A back in (b): after (c) every
/// peer holds more than its channel reserve (1 %) plus what it pays back.
const OUT_MSAT: u64 = 20_000_000;
const BACK_MSAT: u64 = 1_000_000;

/// The link to wardend, timing every call LDK's signer client makes, by message type.
struct Timed {
    link: LdkSignerLink,
    calls: Mutex<HashMap<u16, Vec<Duration>>>,
    names: Mutex<HashMap<u16, &'static str>>,
}

impl Timed {
    fn time(
        &self,
        message: Vec<u8>,
        f: impl FnOnce(Vec<u8>) -> Result<Vec<u8>, ClientError>,
    ) -> Result<Vec<u8>, ClientError> {
        let kind = u16::from_be_bytes([message[0], message[1]]);
        self.names.lock().unwrap().entry(kind).or_insert_with(|| {
            vls_protocol::msgs::from_vec(message.clone())
                .map(|m| m.inner().name())
                .unwrap_or("undecodable")
        });
        let t = Instant::now();
        let out = f(message);
        self.calls
            .lock()
            .unwrap()
            .entry(kind)
            .or_default()
            .push(t.elapsed());
        out
    }

    /// The calls timed since the last take, by message name.
    fn take(&self) -> BTreeMap<&'static str, Vec<Duration>> {
        let names = self.names.lock().unwrap();
        std::mem::take(&mut *self.calls.lock().unwrap())
            .into_iter()
            .map(|(k, v)| (names[&k], v))
            .collect()
    }
}

impl Transport for Timed {
    fn node_call(&self, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.time(message, |m| self.link.node_call(m))
    }

    fn call(&self, dbid: u64, peer_id: PubKey, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.time(message, |m| self.link.call(dbid, peer_id, m))
    }
}

/// wardend's counters and CPU at one moment.
struct Snapshot {
    at: Instant,
    metrics: HashMap<String, f64>,
    cpu: f64,
}

fn snapshot(side: &WardenSide, d: &Daemon) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        metrics: side.rt.block_on(d.scrape_metrics()),
        cpu: cpu_secs(d.wardend.as_ref().unwrap().id()),
    }
}

/// Requests wardend answered (each after its commit), commits that wrote something, and
/// `fsync`s, between two snapshots.
fn counted(a: &Snapshot, b: &Snapshot) -> (f64, f64, f64) {
    let sum = |s: &Snapshot, pick: &dyn Fn(&str) -> bool| -> f64 {
        s.metrics
            .iter()
            .filter(|(k, _)| pick(k))
            .map(|(_, v)| v)
            .sum()
    };
    let requests = |k: &str| k.starts_with("warden_hsmd_request_seconds_count{");
    let writes = |k: &str| k == "warden_store_step_count{name=\"write\"}";
    // sled's commit ends in an fsync, the append-only log's in an fdatasync: the device waits.
    let fsyncs = |k: &str| {
        k == "warden_store_step_count{name=\"fsync\"}"
            || k == "warden_store_step_count{name=\"fdatasync\"}"
    };
    (
        sum(b, &requests) - sum(a, &requests),
        sum(b, &writes) - sum(a, &writes),
        sum(b, &fsyncs) - sum(a, &fsyncs),
    )
}

/// One phase's report; returns wardend's CPU milliseconds per request.
fn report(
    label: &str,
    d: &Daemon,
    a: &Snapshot,
    b: &Snapshot,
    client: BTreeMap<&str, Vec<Duration>>,
) -> f64 {
    let (requests, writes, fsyncs) = counted(a, b);
    let wall = b.at - a.at;
    let cpu_ms = (b.cpu - a.cpu) / requests * 1e3;
    let (rss, peak) = rss_mib(d.wardend.as_ref().unwrap().id());
    println!("{label}");
    println!(
        "  wardend: {requests:.0} durable requests in {:.2} s = {:.0}/s ({writes:.0} wrote state, in {fsyncs:.0} fsyncs); CPU {cpu_ms:.3} ms per request; RSS {rss:.0} MiB (peak {peak:.0})",
        wall.as_secs_f64(),
        requests / wall.as_secs_f64(),
    );
    for (name, times) in client {
        print(&format!("{name} (as the node sees it)"), stats(times, wall));
    }
    cpu_ms
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (pre_n, per_peer) = if full { (2_000, 40) } else { (10, 1) };
    println!(
        "Load on one wardend signing an LDK node with {PEERS} channels ({})",
        if full { "full" } else { "smoke" }
    );

    let side = WardenSide::start();
    let mut d = Daemon::prepare("bench-load", LOAD_RULES, side.port);
    d.wardend_env = vec![
        ("RUST_LOG".into(), "error".into()),
        ("WARDEN_MAX_INVOICES".into(), "150000".into()),
    ];
    d.start_wardend();
    let timed = Arc::new(Timed {
        link: side.link.clone(),
        calls: Mutex::default(),
        names: Mutex::default(),
    });
    let keys = warden_ldk::signer::WardenKeys::new(
        KeysManagerClient::new(
            timed.clone(),
            "regtest".into(),
            None,
            None,
            ReceiveAuthKey([7u8; 32]),
        ),
        side.link.clone(),
    );
    let t = Instant::now();
    let mut hub = Hub::connect(Arc::new(keys), PEERS);
    let mut feed = side.chain_feed();
    hub.open_channels(&side.link, CHANNEL_SAT, &mut feed);
    println!(
        "  {PEERS} channels of {CHANNEL_SAT} sat opened and confirmed in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Every invoice is written before a clock starts (A's are signed by wardend).
    let preapprovals: Vec<_> = (0..2 * pre_n)
        .map(|k| hub.peer_invoice(0, BACK_MSAT, &format!("preapprove only {k}")))
        .collect();
    let outgoing: Vec<Vec<_>> = (0..PEERS)
        .map(|i| {
            (0..per_peer)
                .map(|k| hub.peer_invoice(i, OUT_MSAT, &format!("A pays {i}/{k}")))
                .collect()
        })
        .collect();
    let incoming: Vec<Vec<_>> = (0..PEERS)
        .map(|i| {
            (0..per_peer)
                .map(|k| hub.hub_invoice(BACK_MSAT, &format!("{i} pays A {k}")))
                .collect()
        })
        .collect();
    timed.take();

    // (a) The preapprove stream alone.
    let s0 = snapshot(&side, &d);
    let mut times = Vec::with_capacity(pre_n);
    for invoice in &preapprovals[..pre_n] {
        let t = Instant::now();
        side.link.preapprove_invoice(invoice).expect("approved");
        times.push(t.elapsed());
    }
    let s1 = snapshot(&side, &d);
    let mut client = timed.take();
    client.insert("PreapproveInvoice", times);
    let cpu_a = report("(a) the preapprove stream alone", &d, &s0, &s1, client);

    // (c) 16 channels with a payment in flight on each, A paying.
    let s0 = snapshot(&side, &d);
    let payments: Vec<Duration> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..PEERS)
            .map(|i| {
                let hub = &hub;
                let link = &side.link;
                let invoices = &outgoing[i];
                scope.spawn(move || {
                    invoices
                        .iter()
                        .map(|invoice| {
                            let t = Instant::now();
                            hub.hub_pays(i, invoice, |inv| link.preapprove_invoice(inv))
                                .expect("approved");
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let s1 = snapshot(&side, &d);
    let wall = s1.at - s0.at;
    report(
        &format!(
            "(c) A pays on {PEERS} channels at once ({} payments, preapprove + pay each)",
            PEERS * per_peer
        ),
        &d,
        &s0,
        &s1,
        timed.take(),
    );
    let pay: Stats = stats(payments, wall);
    print("whole payment (preapprove, pay, claimed)", pay);

    // (b) The preapprove stream while 16 peers pay A at once.
    let s0 = snapshot(&side, &d);
    let done = AtomicBool::new(false);
    let (pre_times, back_times) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let mut times = Vec::new();
            for invoice in &preapprovals[pre_n..] {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let t = Instant::now();
                side.link.preapprove_invoice(invoice).expect("approved");
                times.push(t.elapsed());
            }
            times
        });
        let peers: Vec<_> = (0..PEERS)
            .map(|i| {
                let hub = &hub;
                let invoices = &incoming[i];
                scope.spawn(move || {
                    invoices
                        .iter()
                        .map(|invoice| {
                            let t = Instant::now();
                            hub.peer_pays(i, invoice);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let back: Vec<Duration> = peers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        (stream.join().unwrap(), back)
    });
    let s1 = snapshot(&side, &d);
    let wall = s1.at - s0.at;
    let mut client = timed.take();
    client.insert("PreapproveInvoice", pre_times);
    report(
        &format!(
            "(b) the preapprove stream while {PEERS} peers pay A at once ({} payments)",
            PEERS * per_peer
        ),
        &d,
        &s0,
        &s1,
        client,
    );
    print(
        "whole incoming payment (paid, claimed)",
        stats(back_times, wall),
    );

    let bare = vls::bare_vls_cpu_per_preapprove(pre_n) * 1e3;
    println!(
        "CPU per preapprove, same run: wardend {cpu_a:.3} ms in (a), bare VLS handler {bare:.3} ms: ratio {:.2}",
        cpu_a / bare
    );
}
