//! The crash harness: a real wardend behind VLS's real `remote_hsmd_socket`, driven by a stream
//! of CLN-style requests, killed with SIGKILL at random moments (often a few milliseconds after a
//! request was sent, while it is in flight) and restarted on the same data directory. The proxy
//! retransmits what was in flight, as it does for lightningd.
//!
//! After every restart, and at the end, it checks what the node side saw against wardend's own
//! state: the daily window holds exactly the approvals the node saw (none lost, none twice) and
//! never more than its limit; pending requests survive; every quorum approval is used once; the
//! audit chain verifies (checked while wardend is down, so the database is the one on disk);
//! VLS's state resumes (the node id, and every invoice it approved is approved again without
//! being counted again); the proxy never stops.
//!
//! `scripts/test.sh` runs 10 kills; `scripts/crash.sh N` runs N. The seed is printed, and
//! `WARDEN_CRASH_SEED` replays a run.

mod common;

use common::cln::{Cln, Payee};
use lightning_signer::bitcoin::hashes::{sha256d, Hash};
use lightning_signer::bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use lightning_signer::bitcoin::secp256k1::{Message as SecpMessage, Secp256k1};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use vls_protocol::msgs::{self, Message};

const SAT: u64 = 1_000;
const QUORUM_ABOVE_SAT: u64 = 1_000_000;

/// The daily cap grows with the run, so a long run spends its last kills around the limit
/// instead of refusing everything after the first few.
fn daily_cap_sat(kills: u64) -> u64 {
    600_000 * kills.max(10)
}

fn rules(kills: u64) -> String {
    let daily_cap = daily_cap_sat(kills);
    format!(
        r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "1_500_000 sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "{daily_cap} sat"

[[approval]]
tag = "large-payment-quorum"
above = "{QUORUM_ABOVE_SAT} sat"
quorum = {{ need = 2, of = ["alice", "bob", "carol"] }}
expiry = "1h"
"#
    )
}

use common::stack::Rng;

/// What the node side saw of one invoice.
struct Seen {
    invoice: String,
    amount_msat: u64,
    approved: bool,
    /// How many times the node asked (a retransmission after a kill is not a new ask).
    asks: u32,
}

struct Run {
    rng: Rng,
    invoices: BTreeMap<u64, Seen>,
    next_invoice: u64,
    kills: u64,
    in_flight_kills: u64,
    /// Requests the admins approved, and whether the node has used the approval.
    quorum_approved: BTreeMap<String, u64>,
    pending_seen: BTreeSet<String>,
    node_id: String,
    payee: Payee,
    /// The wallet key the node derives its coins from.
    xpub: lightning_signer::bitcoin::bip32::Xpub,
    /// What the signed on-chain spends took out of the wallet (outputs and fees).
    onchain_msat: u64,
    onchain_signed: u64,
}

impl Run {
    fn expected_used_msat(&self) -> u64 {
        self.invoices
            .values()
            .filter(|s| s.approved)
            .map(|s| s.amount_msat)
            .sum::<u64>()
            + self.onchain_msat
    }
}

/// Send `msg` on the node's root connection while, if `kill_after` is set, wardend is killed
/// that long after the send and started again; the answer arrives after the restart.
fn call_maybe_killing(
    cln: &mut Cln,
    run: &mut Run,
    msg: Req,
    kill_after: Option<Duration>,
) -> Message {
    let Cln { daemon, proxy, .. } = cln;
    let answer = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            match msg {
                Req::Preapprove(invoice) => proxy.hsmd.call(msgs::PreapproveInvoice {
                    invstring: vls_protocol::serde_bolt::WireString(invoice.into_bytes()),
                }),
                Req::SignMessage(text) => proxy.hsmd.call(msgs::SignMessage {
                    message: vls_protocol::serde_bolt::Octets(text),
                }),
                Req::Withdraw(w) => proxy.hsmd.call(*w),
            }
            .unwrap_or_else(|e| panic!("the node side lost its signer: {e}"))
        });
        if let Some(d) = kill_after {
            std::thread::sleep(d);
            let in_flight = !h.is_finished();
            daemon.kill_wardend();
            run.kills += 1;
            run.in_flight_kills += u64::from(in_flight);
            check_at_rest(daemon);
            daemon.start_wardend();
        }
        h.join().expect("the call thread")
    });
    answer
}

/// While wardend is down: the audit chain on disk verifies, anchor included.
fn check_at_rest(daemon: &common::daemon::Daemon) {
    let out = daemon
        .token
        .command("wardenctl")
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the audit chain does not verify after a kill: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A request the harness sends on the node's root connection.
enum Req {
    Preapprove(String),
    SignMessage(Vec<u8>),
    Withdraw(Box<msgs::SignWithdrawal>),
}

fn preapprove_msg(invoice: &str) -> Req {
    Req::Preapprove(invoice.to_string())
}

fn approved(answer: &Message) -> bool {
    match answer {
        Message::PreapproveInvoiceReply(r) => r.result,
        other => panic!("unexpected preapprove reply {other:?}"),
    }
}

fn recover_node_id(text: &[u8], answer: &Message) -> String {
    let Message::SignMessageReply(r) = answer else {
        panic!("unexpected sign-message reply {answer:?}")
    };
    let digest = sha256d::Hash::hash(&[b"Lightning Signed Message:".as_slice(), text].concat())
        .to_byte_array();
    let rs = RecoverableSignature::from_compact(
        &r.signature.0[..64],
        RecoveryId::from_i32(i32::from(r.signature.0[64])).unwrap(),
    )
    .unwrap();
    hex::encode(
        Secp256k1::verification_only()
            .recover_ecdsa(&SecpMessage::from_digest(digest), &rs)
            .unwrap()
            .serialize(),
    )
}

/// wardend's view against the node's, after a restart or at the end.
async fn check_running(cln: &Cln, run: &mut Run) {
    let daily = cln.window("daily-cap").await;
    assert_eq!(
        daily.used_msat,
        run.expected_used_msat(),
        "the daily window must hold exactly the approvals the node saw (kills so far: {})",
        run.kills
    );
    assert!(daily.used_msat <= daily.limit_msat, "{daily:?}");
    let pending: BTreeSet<String> = block_in_place(|| cln.pending())
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for id in &run.pending_seen {
        assert!(
            pending.contains(id) || run.quorum_approved.contains_key(id),
            "pending request {id} was lost"
        );
    }
    run.pending_seen = pending;
}

/// `wardenctl show ID --json` as alice, waiting out the admin API's per-certificate rate limit
/// (a long run checks more requests than one burst allows; the limit itself is tested in
/// `tests/api_abuse.rs`).
fn show_paced(cln: &Cln, id: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = cln.wardenctl("alice", &["show", id, "--json"]);
        let limited = String::from_utf8_lossy(&out.stderr).contains("rate limit reached");
        if !limited || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn approve_as_admins(cln: &Cln, id: &str) {
    for admin in ["alice", "bob"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = cln.wardenctl(admin, &["approve", id, "--key", &cln.admin_key(admin)]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{admin} could not approve {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let kills: u64 = std::env::var("WARDEN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("WARDEN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash harness: {kills} kills, WARDEN_CRASH_SEED={seed}");
    let mut cln = Cln::start("crash", &rules(kills)).await;
    let (node_id, xpub) = block_in_place(|| match cln.call(warden_testkit::hsmd_init_regtest()) {
        Message::HsmdInitReplyV4(r) => (
            hex::encode(r.node_id.0),
            lightning_signer::bitcoin::bip32::Xpub::decode(&r.bip32.0).unwrap(),
        ),
        other => panic!("unexpected init reply {other:?}"),
    });
    let mut run = Run {
        rng: Rng(seed),
        invoices: BTreeMap::new(),
        next_invoice: 0,
        kills: 0,
        in_flight_kills: 0,
        quorum_approved: BTreeMap::new(),
        pending_seen: BTreeSet::new(),
        node_id,
        payee: Payee::new(0x51),
        xpub,
        onchain_msat: 0,
        onchain_signed: 0,
    };
    let started = Instant::now();
    let mut steps = 0u64;
    // Until the kills are done, and at least one of them landed while a request was in flight
    // (a kill lands 0-5 ms after a send: a busy machine can make every one land between
    // requests, so the run goes on, up to five times as many kills, until one does not).
    while run.kills < kills || (run.in_flight_kills == 0 && run.kills < kills * 5) {
        steps += 1;
        // A kill on one step in four, 0 to 5 ms after the request is sent.
        let kill_after =
            (run.rng.below(4) == 0).then(|| Duration::from_micros(run.rng.below(5_000)));
        let killed = kill_after.is_some();
        match run.rng.below(20) {
            // A new payment: mostly small, some held for the quorum, around the daily cap.
            0..=12 => {
                run.next_invoice += 1;
                let n = run.next_invoice;
                let sat = if run.rng.below(6) == 0 {
                    QUORUM_ABOVE_SAT + 1 + run.rng.below(400_000)
                } else {
                    10_000 + run.rng.below(300_000)
                };
                let invoice = run.payee.invoice(sat * SAT, n);
                let answer = block_in_place(|| {
                    call_maybe_killing(&mut cln, &mut run, preapprove_msg(&invoice), kill_after)
                });
                run.invoices.insert(
                    n,
                    Seen {
                        invoice,
                        amount_msat: sat * SAT,
                        approved: approved(&answer),
                        asks: 1,
                    },
                );
            }
            // The node asks again for one it asked before (lightningd does, on retries): an
            // approved one stays approved and is not counted again.
            13..=14 if !run.invoices.is_empty() => {
                let keys: Vec<u64> = run.invoices.keys().copied().collect();
                let n = keys[run.rng.below(keys.len() as u64) as usize];
                let invoice = run.invoices[&n].invoice.clone();
                let answer = block_in_place(|| {
                    call_maybe_killing(&mut cln, &mut run, preapprove_msg(&invoice), kill_after)
                });
                let now = approved(&answer);
                let seen = run.invoices.get_mut(&n).unwrap();
                seen.asks += 1;
                if seen.approved {
                    assert!(
                        now,
                        "invoice {n} was approved, then refused after a restart"
                    );
                }
                seen.approved |= now;
            }
            // Admins approve a held payment; the node asks again and uses the approval.
            15..=16 => {
                let pending = block_in_place(|| cln.pending());
                let Some(req) = pending.as_array().unwrap().first().cloned() else {
                    continue;
                };
                let id = req["id"].as_str().unwrap().to_string();
                let hash = req["payment_hash"].as_str().unwrap().to_string();
                block_in_place(|| approve_as_admins(&cln, &id));
                let (&n, _) = run
                    .invoices
                    .iter()
                    .find(|(_, s)| hex::encode(common::cln::payment_hash_of(&s.invoice).0) == hash)
                    .expect("a held invoice the node asked for");
                let invoice = run.invoices[&n].invoice.clone();
                let answer = block_in_place(|| {
                    call_maybe_killing(&mut cln, &mut run, preapprove_msg(&invoice), kill_after)
                });
                let now = approved(&answer);
                let seen = run.invoices.get_mut(&n).unwrap();
                seen.approved |= now;
                seen.asks += 1;
                *run.quorum_approved.entry(id).or_default() += u64::from(now);
            }
            // An on-chain spend with its fee, while the window has room for it (a refusal of a
            // signature stops the node's proxy, which the plugin prevents in production): a
            // retransmission after a kill is answered from the committed decision, counted once.
            17 => {
                let sat = 10_000 + run.rng.below(200_000);
                let fee = 1_000 + run.rng.below(2_000);
                let cap = daily_cap_sat(kills) * SAT;
                if run.expected_used_msat() + (sat + fee) * SAT > cap {
                    continue;
                }
                let to = {
                    use lightning_signer::bitcoin::secp256k1::SecretKey;
                    let key = SecretKey::from_slice(&[(steps % 200) as u8 + 1; 32]).unwrap();
                    let pk = lightning_signer::bitcoin::CompressedPublicKey(
                        key.public_key(&Secp256k1::new()),
                    );
                    lightning_signer::bitcoin::Address::p2wpkh(
                        &pk,
                        lightning_signer::bitcoin::Network::Regtest,
                    )
                };
                let w = warden_testkit::lightningd::withdrawal_paying(&run.xpub, &to, sat, fee);
                let answer = block_in_place(|| {
                    call_maybe_killing(&mut cln, &mut run, Req::Withdraw(Box::new(w)), kill_after)
                });
                match answer {
                    Message::SignWithdrawalReply(r) => assert!(
                        r.psbt.0.inner.inputs[0].final_script_witness.is_some(),
                        "signed"
                    ),
                    other => panic!("unexpected withdrawal reply {other:?}"),
                }
                run.onchain_msat += (sat + fee) * SAT;
                run.onchain_signed += 1;
            }
            // A message signature: the node id must not change across restarts.
            _ => {
                let text = format!("crash step {steps}").into_bytes();
                let msg = Req::SignMessage(text.clone());
                let answer =
                    block_in_place(|| call_maybe_killing(&mut cln, &mut run, msg, kill_after));
                assert_eq!(recover_node_id(&text, &answer), run.node_id);
            }
        }
        if killed {
            check_running(&cln, &mut run).await;
        }
    }
    // Every approval the node saw is approved again (VLS kept the invoices), and counting
    // them again changed nothing.
    let approved_invoices: Vec<String> = run
        .invoices
        .values()
        .filter(|s| s.approved)
        .map(|s| s.invoice.clone())
        .collect();
    for invoice in &approved_invoices {
        assert!(
            block_in_place(|| cln.preapprove(invoice)),
            "an invoice VLS approved before the kills is no longer approved"
        );
    }
    check_running(&cln, &mut run).await;
    // A quorum approval the node used is consumed, once: the request says so, and the sums
    // above show its payment counted once however often the node asked again.
    for (id, uses) in &run.quorum_approved {
        let out = block_in_place(|| show_paced(&cln, id));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let state = shown["state"].as_str().unwrap().to_string();
        if *uses > 0 {
            assert_eq!(
                state, "consumed",
                "{id} was used by the node but is {state}"
            );
        } else {
            assert_ne!(state, "consumed", "{id} was never used but is consumed");
        }
    }
    assert!(block_in_place(|| cln.still_serves()), "the proxy stopped");
    cln.stop_wardend();
    check_at_rest(&cln.daemon);
    // Every payment the node asked about once was decided (and audited) at most once, however
    // often a kill made the proxy send it again.
    let out = cln
        .daemon
        .token
        .command("wardenctl")
        .args(["audit", "export", "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut decided: BTreeMap<String, u32> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["kind"] == "decision" {
            let d = r["data"]["request_digest"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *decided.entry(d).or_default() += 1;
        }
    }
    let payee = run.payee.hex();
    for s in run.invoices.values().filter(|s| s.asks == 1) {
        let req = warden::policy::PaymentRequest::invoice(
            common::cln::payment_hash_of(&s.invoice).0,
            s.amount_msat,
            &payee,
            None,
        );
        let n = decided
            .get(&hex::encode(req.digest()))
            .copied()
            .unwrap_or(0);
        assert!(
            n <= 1,
            "a payment asked once was decided {n} times (approved: {})",
            s.approved
        );
    }
    let approvals = run.invoices.values().filter(|s| s.approved).count();
    eprintln!(
        "crash harness: {} kills ({} with a request in flight) over {steps} steps in {:.1} s; {} payments, {approvals} approved, {} quorum approvals used, {} on-chain spends signed; daily window {} sat of {}",
        run.kills,
        run.in_flight_kills,
        started.elapsed().as_secs_f64(),
        run.invoices.len(),
        run.quorum_approved.values().filter(|n| **n > 0).count(),
        run.onchain_signed,
        run.expected_used_msat() / SAT,
        daily_cap_sat(kills),
    );
    assert!(
        run.in_flight_kills > 0,
        "no kill landed while a request was in flight; the harness is not testing that"
    );
}
