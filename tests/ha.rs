//! High availability on PostgreSQL, end to end: two wardends for one node behind VLS's real
//! `remote_hsmd_socket`, sharing a database on the harness's PostgreSQL server. The active one
//! is killed under load, paused past its lease, and has its database restarted under it.

mod common;

use common::cln::{Cln, Payee};
use common::daemon::{Daemon, QUORUM_RULES};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const SAT: u64 = 1000;

/// `wardenctl audit verify` on the shared database, with this token's HSM key and anchor.
fn audit_verifies(d: &Daemon) -> String {
    let out = d
        .token
        .command("wardenctl")
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The proxy's log, as it wrote it to its stdout.
fn proxy_log(d: &Daemon) -> String {
    let dir = d.token.path().join("proxy");
    let mut out = String::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name().to_string_lossy() == "proxy.out" {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// The node asks wardend to preapprove `invoice` (on another thread) while `meanwhile` acts on
/// wardend; the node's answer and what `meanwhile` returned.
fn preapprove_meanwhile<T>(
    cln: &mut Cln,
    invoice: String,
    meanwhile: impl FnOnce(&mut Daemon) -> T,
) -> (
    Result<vls_protocol::msgs::Message, warden_testkit::hsmd::HsmdError>,
    T,
) {
    block_in_place(|| {
        std::thread::scope(|s| {
            let hsmd = &mut cln.proxy.hsmd;
            let call = s.spawn(move || {
                hsmd.call(vls_protocol::msgs::PreapproveInvoice {
                    invstring: vls_protocol::serde_bolt::WireString(invoice.into_bytes()),
                })
            });
            let t = meanwhile(&mut cln.daemon);
            (call.join().unwrap(), t)
        })
    })
}

fn exit_status(d: &mut Daemon, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    let child = d.wardend.as_mut().expect("wardend runs");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_killed_active_under_load_and_nothing_is_lost_or_counted_twice() {
    let payee = Payee::new(0x31);
    let mut cln = Cln::start_on_postgres("ha-kill", QUORUM_RULES, &[]).await;
    let xpub = block_in_place(|| match cln.call(warden_testkit::hsmd_init_regtest()) {
        vls_protocol::msgs::Message::HsmdInitReplyV4(r) => {
            lightning_signer::bitcoin::bip32::Xpub::decode(&r.bip32.0).unwrap()
        }
        other => panic!("unexpected init reply {other:?}"),
    });
    let mut standby = cln.daemon.twin("ha-kill-b");
    block_in_place(|| standby.start_standby());
    assert_eq!(
        standby.scrape_standby_role().await,
        ("standby".to_string(), 1.0),
        "the standby reports its role and the active one's epoch"
    );

    // A payment above the quorum threshold, approved by two admins on the active wardend.
    let large = payee.invoice(1_200_000 * SAT, 1);
    assert!(!block_in_place(|| cln.preapprove(&large)));
    let id = block_in_place(|| cln.pending())[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for admin in ["alice", "bob"] {
        block_in_place(|| cln.approve(admin, &id));
    }

    // A stream of small payments; the active wardend is killed while it runs.
    let active = cln.daemon.wardend.take().unwrap();
    let killer = std::thread::spawn(move || {
        let mut active = active;
        std::thread::sleep(Duration::from_millis(100));
        let killed = Instant::now();
        active.kill().unwrap();
        active.wait().unwrap();
        killed
    });
    let mut approved = 0u64;
    let mut slowest = Duration::ZERO;
    let mut answered_at = Vec::new();
    for n in 2..=61 {
        let t = Instant::now();
        // One request in twelve is an on-chain spend of 9,000 sat paying 1,000 sat of fee: it
        // too is answered once, from its committed decision if the proxy sends it again.
        let ok = if n % 12 == 0 {
            let to = lightning_signer::bitcoin::Address::p2wpkh(
                &lightning_signer::bitcoin::CompressedPublicKey(
                    lightning_signer::bitcoin::secp256k1::SecretKey::from_slice(&[n as u8; 32])
                        .unwrap()
                        .public_key(&lightning_signer::bitcoin::secp256k1::Secp256k1::new()),
                ),
                lightning_signer::bitcoin::Network::Regtest,
            );
            let w = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 9_000, 1_000);
            matches!(
                block_in_place(|| cln.call(w)),
                vls_protocol::msgs::Message::SignWithdrawalReply(_)
            )
        } else {
            block_in_place(|| cln.preapprove(&payee.invoice(10_000 * SAT, n)))
        };
        if ok {
            approved += 10_000 * SAT;
        }
        slowest = slowest.max(t.elapsed());
        answered_at.push(Instant::now());
    }
    let killed = killer.join().unwrap();
    let takeover = block_in_place(|| standby.wait_ready(Duration::from_secs(20)));
    let first_after = answered_at
        .iter()
        .find(|a| **a > killed)
        .map(|a| a.duration_since(killed));
    eprintln!("failover: the slowest answer took {slowest:?}; first answer {first_after:?} after the kill; the standby was ready {takeover:?} after the stream");
    assert!(
        slowest < Duration::from_secs(10),
        "every request was answered within the failover time ({slowest:?})"
    );

    // The quorum approval survived the failover: the large payment passes on the new active.
    assert!(
        block_in_place(|| cln.preapprove(&large)),
        "the approval made on the old active is used on the new one"
    );
    approved += 1_200_000 * SAT;
    assert_eq!(
        approved,
        1_800_000 * SAT,
        "every payment of the stream was approved"
    );
    // Up to the daily cap (2,000,000 sat) and no further, on the new active.
    for n in 62..=71 {
        if block_in_place(|| cln.preapprove(&payee.invoice(40_000 * SAT, n))) {
            approved += 40_000 * SAT;
        }
    }
    let daily = standby.window("daily-cap").await;
    assert_eq!(
        approved,
        2_000_000 * SAT,
        "no window exceeded, none under-used: {approved} msat approved"
    );
    assert_eq!(
        daily.used_msat, approved,
        "every approval the node saw is counted exactly once across both wardends"
    );
    assert!(block_in_place(|| cln.still_serves()));

    // One chain across both writers, each start with its own epoch.
    let starts = standby.audit_records("start");
    let epochs: Vec<_> = starts
        .iter()
        .map(|r| r["data"]["lease_epoch"].clone())
        .collect();
    assert_eq!(
        epochs,
        vec![serde_json::json!(1), serde_json::json!(2)],
        "{starts:?}"
    );
    // Each takeover is an event (an alert, so the webhook gets it), recorded in the audit log.
    let took_over: Vec<String> = standby
        .audit_records("event")
        .iter()
        .map(|r| r["data"].to_string())
        .filter(|d| d.contains("warden-ha-took-over"))
        .collect();
    assert_eq!(took_over.len(), 2, "{took_over:?}");
    assert!(
        took_over[1].contains("at epoch 2") && took_over[1].contains("(epoch 1)"),
        "the second names its epoch and the holder it took over from: {took_over:?}"
    );
    let verified = audit_verifies(&standby);
    assert!(verified.contains("audit log OK"), "{verified}");
    let status = standby.wardenctl("alice", &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["ha_role"], "active");
    assert_eq!(status["ha_epoch"], 2);
    cln.daemon.wardend = None;
    drop(standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_signs_and_commits_nothing_once_deposed_and_exits_when_it_wakes() {
    let payee = Payee::new(0x32);
    let mut cln = Cln::start_on_postgres("ha-stop", QUORUM_RULES, &[]).await;
    block_in_place(|| cln.init());
    let mut standby = cln.daemon.twin("ha-stop-b");
    block_in_place(|| standby.start_standby());
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(100_000 * SAT, 1))
    ));

    // Paused past its lease (2 s): the standby takes over.
    let active = cln.daemon.pid();
    nix::sys::signal::kill(active, nix::sys::signal::Signal::SIGSTOP).unwrap();
    block_in_place(|| standby.wait_ready(Duration::from_secs(20)));
    // The new active wardend has its own connection to the node ...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if standby.status().await.node_connection == "connected" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new active wardend never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... but the proxy hands a new request to the paused one's, still open. It wakes, finds
    // its lease gone, sends nothing (not even a temporary failure: the request is the new
    // active's to answer), closes its connection, says so in the database, and exits 75; the
    // new active wardend reconnects and the proxy retransmits the request to it.
    let invoice = payee.invoice(200_000 * SAT, 2);
    let (answer, exit) = preapprove_meanwhile(&mut cln, invoice, |d| {
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(active, nix::sys::signal::Signal::SIGCONT).unwrap();
        exit_status(d, Duration::from_secs(15))
    });
    assert_eq!(
        exit,
        Some(75),
        "the deposed wardend exits with EX_TEMPFAIL for its supervisor to restart as a standby"
    );
    match answer.expect("the request was answered") {
        vls_protocol::msgs::Message::PreapproveInvoiceReply(r) => {
            assert!(r.result, "approved, by the new active wardend")
        }
        other => panic!("unexpected reply {other:?}"),
    }
    let daily = standby.window("daily-cap").await;
    assert_eq!(
        daily.used_msat,
        300_000 * SAT,
        "each payment counted once: nothing committed by the paused wardend after it lost the lease"
    );
    let after = block_in_place(|| {
        cln.proxy.hsmd.call(vls_protocol::msgs::SignMessage {
            message: vls_protocol::serde_bolt::Octets(b"still serving?".to_vec()),
        })
    });
    assert!(
        matches!(after, Ok(vls_protocol::msgs::Message::SignMessageReply(_))),
        "the node is still served, by the new active wardend: {after:?}\n{}",
        proxy_log(&cln.daemon)
    );
    let verified = audit_verifies(&standby);
    assert!(verified.contains("audit log OK"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_wardend_means_temporary_failures_then_service_resumes() {
    let server: &'static common::pg::PgServer =
        Box::leak(Box::new(common::pg::PgServer::private()));
    let payee = Payee::new(0x33);
    let mut cln = Cln::start_on_server("ha-pgrestart", QUORUM_RULES, server).await;
    block_in_place(|| cln.init());
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(100_000 * SAT, 1))
    ));

    server.stop();
    let invoice = payee.invoice(150_000 * SAT, 2);
    let (answer, running) = preapprove_meanwhile(&mut cln, invoice, |d| {
        std::thread::sleep(Duration::from_secs(3));
        let running = exit_status(d, Duration::from_millis(10)).is_none();
        server.start();
        running
    });
    assert!(running, "wardend keeps running while its database is down");
    assert!(cln.proxy.is_running(), "and so does the node's proxy");
    match answer.expect("answered once the database was back") {
        vls_protocol::msgs::Message::PreapproveInvoiceReply(r) => assert!(r.result),
        other => panic!("unexpected reply {other:?}"),
    }
    let daily = cln.window("daily-cap").await;
    assert_eq!(
        daily.used_msat,
        250_000 * SAT,
        "nothing lost, nothing counted twice"
    );
    assert!(block_in_place(|| cln.still_serves()));
    let verified = audit_verifies(&cln.daemon);
    assert!(verified.contains("audit log OK"), "{verified}");
}

/// The database the daemon's state is on (its `dbname`).
fn database_of(d: &Daemon) -> String {
    let url = d
        .token
        .store_env
        .iter()
        .find(|(k, _)| k == "WARDEN_STORE_URL")
        .map(|(_, v)| v.clone())
        .expect("a PostgreSQL state");
    url.split_whitespace()
        .find_map(|p| p.strip_prefix("dbname="))
        .expect("dbname in the URL")
        .to_string()
}

/// The record `wardenctl audit verify` says the token's anchor is at.
fn anchored_at(d: &Daemon) -> u64 {
    audit_verifies(d)
        .split("it reaches the HSM's anchor (record ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Issue 25, item 7: each host checks the log against its own token's anchor, so a log cut back
/// to a standby's older anchor used to pass on the standby's host after a failover. A waiting
/// standby now moves its token's anchor up to every checkpoint the active one signs; a log cut
/// back behind it is refused when the standby takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_behind_the_actives_checkpoints_is_refused_by_the_standby_that_takes_over() {
    let payee = Payee::new(0x34);
    let mut cln = Cln::start_on_postgres("ha-cut", QUORUM_RULES, &[]).await;
    block_in_place(|| cln.init());
    let mut standby = cln.daemon.twin("ha-cut-b");
    block_in_place(|| standby.start_standby());
    let before = anchored_at(&standby);
    // Enough decisions for the active wardend to checkpoint (every 100 records).
    let mut n = 0u64;
    while block_in_place(|| anchored_at(&cln.daemon)) < 100 {
        for _ in 0..20 {
            n += 1;
            assert!(block_in_place(
                || cln.preapprove(&payee.invoice(1_000 * SAT, n))
            ));
        }
        assert!(n < 400, "no checkpoint after {n} payments");
    }
    let checkpointed = block_in_place(|| anchored_at(&cln.daemon));
    let deadline = Instant::now() + Duration::from_secs(60);
    while block_in_place(|| anchored_at(&standby)) < checkpointed {
        assert!(
            Instant::now() < deadline,
            "the standby never followed the active's checkpoint {checkpointed} (it had {before})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Someone with the database cuts the log back to its first records, then the active dies.
    let db = database_of(&cln.daemon);
    let ns = i16::from(warden::store::Namespace::Audit.prefix());
    common::pg::shared().sql(
        &db,
        &format!(
            "DELETE FROM warden_kv WHERE ns = {ns} AND ((key >= '\\x720000000000000006'::bytea AND key < '\\x73'::bytea) OR (key >= '\\x630000000000000006'::bytea AND key < '\\x64'::bytea))"
        ),
    );
    cln.daemon.kill_wardend();
    let status = block_in_place(|| exit_status(&mut standby, Duration::from_secs(60)));
    assert!(
        matches!(status, Some(code) if code != 0 && code != 75),
        "the standby took over a log cut back behind the checkpoints it saw: {status:?}"
    );
}
