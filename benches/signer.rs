//! Load through the full path: CLN stand-in → VLS's remote_hsmd_socket → signer, for Warden
//! (wardend on SoftHSM, policy evaluated and every decision durable) and for VLS's own vlsd (its
//! permissive approver, VLS_AUTOAPPROVE=1) behind the same proxy, in the same run.
//!
//! Reports SignMessage and approved-preapprove latency (p50, p99) and preapprovals per second,
//! then the scale curve: approval latency at 10, 1,000, 10,000 and 100,000 live invoices for
//! Warden, and how far vlsd gets; where one approval's time goes (wardend's own stage metrics);
//! the state on disk per approval; and the quorum-approved path (held, two admins approve with
//! wardenctl, the retry timed). `scripts/bench.sh` runs it (`cargo bench --bench signer`); under
//! `cargo test` it runs a short smoke pass on Warden only.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/stats.rs"]
mod stats;
#[path = "support/vls.rs"]
mod vls;

use common::cln::Cln;
use common::daemon::{free_port, Daemon, LOAD_RULES};
use procfs::{cpu_secs, rss_mib};
use stats::{print, timed};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vls::{bare_vls_cpu_per_preapprove, Invoices};
use vls_protocol::msgs::{self, Message};
use warden_testkit::chain::ChainStub;
use warden_testkit::proxy::{default_binary, Proxy};

fn preapprove(proxy: &mut Proxy, invoice: String) -> Result<bool, String> {
    match proxy.hsmd.call(msgs::PreapproveInvoice {
        invstring: vls_protocol::serde_bolt::WireString(invoice.into_bytes()),
    }) {
        Ok(Message::PreapproveInvoiceReply(r)) => Ok(r.result),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn sign_message(proxy: &mut Proxy, n: u64) {
    match proxy.hsmd.call(msgs::SignMessage {
        message: vls_protocol::serde_bolt::Octets(n.to_be_bytes().to_vec()),
    }) {
        Ok(Message::SignMessageReply(_)) => {}
        other => panic!("SignMessage failed: {other:?}"),
    }
}

fn scrape(d: &Daemon) -> HashMap<String, f64> {
    tokio::runtime::Handle::current().block_on(d.scrape_metrics())
}

/// Mean milliseconds per observation of a histogram (`_sum` / `_count`) between two scrapes.
fn mean_ms(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    let d = |suffix: &str| {
        let k = name.replacen('{', &format!("{suffix}{{"), 1);
        after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
    };
    let n = d("_count");
    if n == 0.0 {
        0.0
    } else {
        d("_sum") / n * 1e3
    }
}

/// Mean milliseconds per run of a store step between two scrapes.
fn step_ms(before: &HashMap<String, f64>, after: &HashMap<String, f64>, step: &str) -> f64 {
    let d = |m: &str| {
        let k = format!("warden_{m}{{name=\"{step}\"}}");
        after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
    };
    let n = d("store_step_count");
    if n == 0.0 {
        0.0
    } else {
        d("store_step_seconds") / n * 1e3
    }
}

/// Bytes the files under `dir` occupy on disk (allocated blocks) and by length.
fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut out = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.0 += m.blocks() * 512;
                out.1 += m.len();
            }
        }
    }
    out
}

fn breakdown(before: &HashMap<String, f64>, after: &HashMap<String, f64>, client_ms: f64) {
    let handle = mean_ms(
        before,
        after,
        "warden_hsmd_request_seconds{name=\"PreapproveInvoice\"}",
    );
    let vls = mean_ms(before, after, "warden_request_stage_seconds{name=\"vls\"}");
    let decide = mean_ms(
        before,
        after,
        "warden_request_stage_seconds{name=\"decide\"}",
    );
    let commit = mean_ms(
        before,
        after,
        "warden_request_stage_seconds{name=\"commit\"}",
    );
    println!("  where one approved preapprove's time goes (means, wardend's own metrics):");
    println!("    node side sees (p50)                          {client_ms:>7.3} ms");
    println!(
        "    VLS handler, Warden's decision excluded        {:>7.3} ms",
        vls - decide
    );
    println!("    Warden's decision (policy, approvals, audit)   {decide:>7.3} ms");
    println!("    the one commit                                 {commit:>7.3} ms");
    for step in ["write", "flush", "fsync", "fdatasync"] {
        println!(
            "      {step:<8}                                     {:>7.3} ms",
            step_ms(before, after, step)
        );
    }
    println!(
        "    proxy and gRPC hops (the rest)                 {:>7.3} ms",
        (client_ms - vls - commit).max(0.0)
    );
    println!("    (wardend's handling of the message in all: {handle:.3} ms)");
}

struct Vlsd {
    _chain: ChainStub,
    proxy: Proxy,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Vlsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_vlsd(binary: &std::path::Path) -> Vlsd {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainStub::start().await.unwrap();
    let port = free_port();
    let mut proxy = Proxy::spawn(&default_binary(), port, &chain.url(), dir.path()).unwrap();
    let data = dir.path().join("vlsd");
    std::fs::create_dir_all(data.join("regtest")).unwrap();
    let child = Command::new(binary)
        .args([
            "--network",
            "regtest",
            "--connect",
            &format!("http://127.0.0.1:{port}"),
        ])
        .arg("--datadir")
        .arg(&data)
        .env("VLS_AUTOAPPROVE", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match proxy
        .hsmd
        .call(warden_testkit::hsmd_init_regtest())
        .unwrap()
    {
        Message::HsmdInitReplyV4(_) => {}
        other => panic!("vlsd init: {other:?}"),
    }
    Vlsd {
        _chain: chain,
        proxy,
        child,
        _dir: dir,
    }
}

/// Restart wardend and report how long until it is ready and until the node's next request is
/// answered, and its memory (now and at its peak).
fn startup(cln: &mut Cln, what: &str) {
    cln.stop_wardend();
    let t = Instant::now();
    cln.start_wardend();
    let ready = t.elapsed();
    sign_message(&mut cln.proxy, 0);
    let answered = t.elapsed();
    let (rss, peak) = rss_mib(cln.wardend.as_ref().unwrap().id());
    println!(
        "  wardend start on {what}: ready in {:.2} s, first answer after {:.2} s; RSS {:.0} MiB (peak {:.0} MiB)",
        ready.as_secs_f64(),
        answered.as_secs_f64(),
        rss,
        peak,
    );
}

/// `n` channels as CLN's openingd sets them up (NewChannel, then SetupChannel on the
/// channel's own connection).
fn setup_channels(proxy: &mut Proxy, n: u64) {
    for i in 1..=n {
        warden_testkit::setup_channel(&mut proxy.hsmd, i, 10_000 + i, 1_000_000)
            .unwrap_or_else(|e| panic!("channel {i}: {e}"));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_sign, n_pre, levels): (usize, usize, Vec<usize>) = if full {
        (2_000, 2_000, vec![10, 1_000, 10_000, 100_000])
    } else {
        (20, 20, vec![10])
    };
    let per_level = if full { 500 } else { 10 };

    println!(
        "signer load through CLN stand-in -> remote_hsmd_socket -> signer ({})",
        if full { "full" } else { "smoke" }
    );
    let mut cln = Cln::start_with_env(
        "bench-warden",
        LOAD_RULES,
        &[("WARDEN_MAX_INVOICES", "150000"), ("RUST_LOG", "error")],
    )
    .await;
    tokio::task::block_in_place(|| cln.init());
    let mut inv = Invoices::new(1);

    let vlsd_binary = default_binary().with_file_name("vlsd");
    let mut vlsd = if full && vlsd_binary.is_file() {
        Some(start_vlsd(&vlsd_binary).await)
    } else {
        None
    };
    let mut vinv = Invoices::new(2);

    tokio::task::block_in_place(|| {
        println!("same run, same proxy build, same machine:");
        let w_sign = timed(n_sign, |i| sign_message(&mut cln.proxy, i));
        print("warden SignMessage", w_sign);
        let v_sign = vlsd
            .as_mut()
            .map(|v| timed(n_sign, |i| sign_message(&mut v.proxy, i)));
        if let Some(v) = v_sign {
            print("vlsd   SignMessage", v);
            println!(
                "  SignMessage p50 ratio warden/vlsd: {:.2}",
                w_sign.p50_ms / v.p50_ms
            );
        }
        // vlsd holds at most 1,000 invoices: stay below for the head-to-head comparison.
        let head = n_pre.min(900);
        let invoices: Vec<String> = (0..head).map(|_| inv.next()).collect();
        let mut it = invoices.into_iter();
        let before = scrape(&cln);
        let w_pid = cln.wardend.as_ref().unwrap().id();
        let w_cpu0 = cpu_secs(w_pid);
        let w_pre = timed(head, |_| {
            assert_eq!(preapprove(&mut cln.proxy, it.next().unwrap()), Ok(true))
        });
        let w_cpu = (cpu_secs(w_pid) - w_cpu0) / head as f64;
        let after = scrape(&cln);
        print("warden approved preapprove (policy + durable)", w_pre);
        breakdown(&before, &after, w_pre.p50_ms);
        if let Some(v) = vlsd.as_mut() {
            let invoices: Vec<String> = (0..head).map(|_| vinv.next()).collect();
            let mut it = invoices.into_iter();
            let v_pid = v.child.id();
            let v_cpu0 = cpu_secs(v_pid);
            let v_pre = timed(head, |_| {
                assert_eq!(preapprove(&mut v.proxy, it.next().unwrap()), Ok(true))
            });
            let v_cpu = (cpu_secs(v_pid) - v_cpu0) / head as f64;
            print("vlsd   approved preapprove (auto-approve)", v_pre);
            println!(
                "  preapprove p50 ratio warden/vlsd: {:.2}",
                w_pre.p50_ms / v_pre.p50_ms
            );
            println!(
                "  signer CPU per approved preapprove: warden {:.3} ms, vlsd {:.3} ms (ratio {:.2}; the signer process only, user + system)",
                w_cpu * 1e3,
                v_cpu * 1e3,
                w_cpu / v_cpu
            );
        }
        {
            let bare = bare_vls_cpu_per_preapprove(head);
            println!(
                "  CPU per approved preapprove, bare VLS handler in process (no persistence, no gRPC): {:.3} ms; warden/bare {:.2}",
                bare * 1e3,
                w_cpu / bare
            );
        }

        println!("scale curve (approval latency at N live invoices):");
        let mut live = head;
        let fill_start = Instant::now();
        let mut filled = 0usize;
        for level in &levels {
            while live < *level {
                let i = inv.next();
                assert_eq!(
                    preapprove(&mut cln.proxy, i),
                    Ok(true),
                    "warden at {live} invoices"
                );
                live += 1;
                filled += 1;
            }
            let invoices: Vec<String> = (0..per_level).map(|_| inv.next()).collect();
            let mut it = invoices.into_iter();
            let s = timed(per_level, |_| {
                assert_eq!(preapprove(&mut cln.proxy, it.next().unwrap()), Ok(true))
            });
            live += per_level;
            print(&format!("warden at {level:>6} live invoices"), s);
        }
        let fill = fill_start.elapsed();
        if filled > 0 {
            println!(
                "  warden sustained: {filled} approved preapprovals (plus the timed ones) in {:.1} s = {:.0}/s, every decision durable",
                fill.as_secs_f64(),
                (filled + per_level * levels.len()) as f64 / fill.as_secs_f64()
            );
        }
        let approvals = live as u64;
        let (allocated, length) = disk_usage(&cln.token.data_dir.join("state"));
        println!(
            "  state on disk after {approvals} approvals: {:.1} MB allocated ({:.0} bytes/approval), {:.1} MB by file length",
            allocated as f64 / 1e6,
            allocated as f64 / approvals as f64,
            length as f64 / 1e6
        );
        // Start-up at scale: wardend stopped and started again on the state it now holds.
        startup(&mut cln, &format!("{live} live invoices"));
        let channels = if full { 1_000 } else { 5 };
        let t = Instant::now();
        setup_channels(&mut cln.proxy, channels);
        println!(
            "  {channels} channels set up (NewChannel + SetupChannel) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        startup(
            &mut cln,
            &format!("{live} live invoices and {channels} channels"),
        );
        if let Some(v) = vlsd.as_mut() {
            let mut vlive = head;
            'levels: for level in &levels {
                while vlive < *level {
                    match preapprove(&mut v.proxy, vinv.next()) {
                        Ok(true) => vlive += 1,
                        other => {
                            println!("  vlsd stops at {vlive} live invoices: {other:?}; proxy running: {}", v.proxy.is_running());
                            break 'levels;
                        }
                    }
                }
                let invoices: Vec<String> = (0..per_level).map(|_| vinv.next()).collect();
                let mut ok = true;
                let mut approved = 0usize;
                let mut it = invoices.into_iter();
                let s = timed(per_level, |_| {
                    if ok {
                        ok = preapprove(&mut v.proxy, it.next().unwrap()) == Ok(true);
                        approved += usize::from(ok);
                    }
                });
                if !ok {
                    std::thread::sleep(Duration::from_millis(500));
                    println!(
                        "  vlsd stops at {} live invoices (the next preapprove fails); proxy running afterwards: {}",
                        vlive + approved,
                        v.proxy.is_running()
                    );
                    break;
                }
                vlive += per_level;
                print(&format!("vlsd   at {level:>6} live invoices"), s);
            }
        } else if full {
            println!(
                "  (vlsd not installed at {}; scripts/bench.sh builds it)",
                vlsd_binary.display()
            );
        }
    });

    // The quorum path: held, two admins approve with wardenctl, the retry is approved.
    let quorum_rules = format!(
        "{LOAD_RULES}\n[[approval]]\ntag = \"bench-quorum\"\nabove = \"500 sat\"\nquorum = {{ need = 2, of = [\"alice\", \"bob\", \"carol\"] }}\nexpiry = \"1h\"\n"
    );
    // Two admins sign every held payment: lift the per-certificate rate limit for the run.
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("wardend.toml");
    std::fs::write(
        &conf,
        "[admin]\nrate_per_minute = 1000000\nburst = 100000\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let mut q = Cln::start_with_env(
        "bench-quorum",
        &quorum_rules,
        &[("RUST_LOG", "error"), ("WARDEN_CONFIG", conf.as_str())],
    )
    .await;
    tokio::task::block_in_place(|| {
        q.init();
        let n = if full { 200 } else { 3 };
        let mut qinv = Invoices::new(3);
        let invoices: Vec<String> = (0..n).map(|_| qinv.next()).collect();
        let mut it = invoices.iter();
        let held = timed(n, |_| {
            assert_eq!(
                preapprove(&mut q.proxy, it.next().unwrap().clone()),
                Ok(false)
            )
        });
        print("warden quorum-held preapprove (request opened)", held);
        let pending = q.pending();
        let ids: Vec<String> = pending
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), n);
        for id in &ids {
            for admin in ["alice", "bob"] {
                let out = q.wardenctl(admin, &["approve", id, "--key", &q.admin_key(admin)]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let before = scrape(&q);
        let mut it = invoices.iter();
        let approved = timed(n, |_| {
            assert_eq!(
                preapprove(&mut q.proxy, it.next().unwrap().clone()),
                Ok(true)
            )
        });
        let after = scrape(&q);
        print("warden quorum-approved preapprove (consumed)", approved);
        println!(
            "  commits per quorum-approved preapprove: {:.2}",
            (after["warden_state_commits"] - before["warden_state_commits"]) / n as f64
        );
    });
}
