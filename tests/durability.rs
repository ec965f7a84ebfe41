//! "Durable" means on stable storage, not in the page cache: every approval the node is told
//! about was preceded by an fsync of the state database's log file. Observed from outside, the
//! way an operator would check it: wardend runs under `strace` behind VLS's real
//! `remote_hsmd_socket`, and each fsync's time is compared with when the node side sent the
//! request and received the answer (one clock: CLOCK_REALTIME on this machine).

mod common;

use common::cln::{Cln, Payee};
use common::daemon::QUORUM_RULES;
use tokio::task::block_in_place;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `(start, duration)` of every completed fsync/fdatasync of a file named `name` in `trace`
/// (strace -f -y -ttt -T output: `PID SECS.USECS fsync(FD</path>) = 0 <DUR>`).
fn syncs_of(trace: &str, name: &str) -> Vec<(f64, f64)> {
    trace
        .lines()
        .filter(|l| l.contains("sync(") && l.contains(&format!("/{name}>")) && l.contains(") = 0"))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let _pid = parts.next()?;
            let start: f64 = parts.next()?.parse().ok()?;
            let dur: f64 = l.rsplit('<').next()?.trim_end_matches('>').parse().ok()?;
            Some((start, dur))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_approval_is_preceded_by_an_fsync_of_the_database_log() {
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("wardend.strace");
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-y",
        "-ttt",
        "-T",
        "-e",
        "trace=fsync,fdatasync,sync_file_range",
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([trace.display().to_string()])
    .collect();
    let mut cln = Cln::start_full("durable-fsync", QUORUM_RULES, &[], &wrapper).await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x44);
    let mut answered = Vec::new();
    for n in 1..=5 {
        let invoice = payee.invoice(10_000_000, n);
        let sent = now();
        assert!(block_in_place(|| cln.preapprove(&invoice)), "payment {n}");
        answered.push((sent, now()));
    }
    // strace passes SIGTERM on by detaching; stop wardend itself (strace's only child).
    let strace_pid = cln.wardend.as_ref().unwrap().id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let wardend: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wardend),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = cln.daemon.wardend.take().unwrap().wait();
    let text = std::fs::read_to_string(&trace).unwrap();
    // Warden's append-only log (the default) is `state.log`; sled's (the test matrix's sled leg)
    // is `db`.
    let log = !common::pg::matrix_is_sled();
    let syncs = syncs_of(&text, if log { "state.log" } else { "db" });
    if log {
        // One device wait per commit: the log is only ever fdatasync'ed, nothing else waits.
        let other_waits: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("sync_file_range(")
                    || (l.contains(" fsync(") && l.contains("/state.log>"))
            })
            .collect();
        assert!(
            other_waits.is_empty(),
            "the log waited for the device other than by one fdatasync: {other_waits:?}"
        );
    }
    assert!(
        !syncs.is_empty(),
        "no fsync of the database log at all:\n{text}"
    );
    for (n, (sent, got)) in answered.iter().enumerate() {
        assert!(
            syncs
                .iter()
                .any(|(start, dur)| *start >= *sent && start + dur <= *got),
            "approval {} (sent {sent:.6}, answered {got:.6}) had no completed fsync of the database log in between; fsyncs: {syncs:?}",
            n + 1
        );
    }
}

#[test]
fn the_trace_parser_reads_strace_lines() {
    let t = "4242 1733050000.100000 fsync(9</tmp/x/data/state/db>) = 0 <0.000180>\n\
             4242 1733050000.200000 fsync(10</tmp/x/data/state/conf>) = 0 <0.000100>\n\
             4243 1733050000.300000 fsync(9</tmp/x/data/state/db>) = -1 EIO (Input/output error) <0.000010>\n";
    assert_eq!(syncs_of(t, "db"), vec![(1_733_050_000.1, 0.000_18)]);
}
