//! wardenctl and wardend as an operator runs them, against a real SoftHSM token.

mod common;

use common::TestToken;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn node_id_line(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("node id:")
                .map(|s| s.trim().split(' ').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no node id in: {stdout}"))
}

#[test]
fn init_then_status_then_wardend_prints_the_same_node_id() {
    let t = TestToken::new("cli-flow");
    let out = t.command("wardenctl").arg("init").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "init failed: {stderr}");
    let node_id = node_id_line(&stdout);
    assert_eq!(node_id.len(), 66, "{stdout}");
    assert!(stdout.contains("sealed seed:"), "{stdout}");

    let out = t
        .command("wardenctl")
        .args(["hsm", "status"])
        .output()
        .unwrap();
    let (status, stderr) = text(&out);
    assert!(out.status.success(), "status failed: {stderr}");
    assert!(status.contains("warden-seed-seal"), "{status}");
    assert!(status.contains("warden-audit-ecdsa"), "{status}");
    assert!(status.contains("sensitive, non-extractable"), "{status}");
    assert!(!status.contains(common::USER_PIN), "{status}");

    let mut child = t
        .command("wardend")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("wardend printed a line").unwrap();
    assert_eq!(
        first,
        format!("wardend ready: node id {node_id} (regtest network)")
    );
    assert!(child.try_wait().unwrap().is_none(), "wardend keeps running");
    // SIGTERM stops it cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM delivered");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "wardend did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "wardend exit: {status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(!logs.contains(common::USER_PIN), "PIN in logs: {logs}");
}

#[test]
fn second_init_fails_with_the_reason_and_keeps_the_seed() {
    let t = TestToken::new("cli-twice");
    t.init();
    let seed_file = t.data_dir.join(warden::hsm::SEALED_SEED_FILE);
    let before = std::fs::read(&seed_file).unwrap();
    let out = t.command("wardenctl").arg("init").output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("a sealed node seed already exists"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&seed_file).unwrap(), before);
}

#[test]
fn wardend_refuses_to_start_on_a_wrong_pin() {
    let t = TestToken::new("cli-pin");
    t.init();
    let out = t
        .command("wardend")
        .env_remove("WARDEN_HSM_PIN_FILE")
        .env("WARDEN_HSM_PIN_ENV", "MY_PIN")
        .env("MY_PIN", "1111")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("rejected the user PIN"), "{stderr}");
    assert!(stderr.contains("environment variable MY_PIN"), "{stderr}");
    assert!(!stderr.contains("1111"), "{stderr}");
}

#[test]
fn wardend_refuses_to_start_without_a_sealed_seed() {
    let t = TestToken::new("cli-noseed");
    let out = t.command("wardend").output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read the sealed node seed"),
        "{stderr}"
    );
}

#[test]
fn the_first_start_of_wardend_needs_a_policy_file_of_the_operator_s_own() {
    let t = TestToken::new("cli-firstpolicy");
    t.init();
    let out = t
        .command("wardend")
        .env_remove("WARDEN_POLICY")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no policy is in force yet and no policy file is configured")
            && stderr.contains("set policy.file (or WARDEN_POLICY)"),
        "{stderr}"
    );
}

#[test]
fn wardend_reports_invalid_configuration_by_key() {
    let t = TestToken::new("cli-config");
    let cfg = t.path().join("wardend.toml");
    std::fs::write(
        &cfg,
        "network = \"bitcoin\"\n[node]\nhsmd_address = \"nowhere\"\n[hsm]\nmax_sessions = 1000\n",
    )
    .unwrap();
    let out = t
        .command("wardend")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("node.hsmd_address: \"nowhere\" is not an IP address and port"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hsm.max_sessions: 1000 is out of range"),
        "{stderr}"
    );

    std::fs::write(&cfg, "[hsm\n").unwrap();
    let out = t
        .command("wardend")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("wardend.toml"), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
}

#[test]
fn wardend_help_documents_every_option() {
    let out = std::process::Command::new(common::bin_path("wardend"))
        .arg("--help")
        .output()
        .unwrap();
    let (help, _) = text(&out);
    assert!(out.status.success());
    for opt in [
        "--config",
        "--data-dir",
        "--network",
        "--hsm-module",
        "--hsm-token",
        "--hsm-pin-file",
        "--hsm-pin-env",
        "--hsm-max-sessions",
        "--hsmd-address",
        "--admin-listen",
        "--metrics-listen",
        "WARDEN_HSM_PIN_FILE",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
    assert!(!help.contains("--pin "), "a PIN must never be a flag");
}

#[test]
fn wardenctl_init_with_an_unknown_token_exits_nonzero_with_the_label() {
    let t = TestToken::new("cli-token");
    let out = t
        .command("wardenctl")
        .arg("init")
        .env("WARDEN_HSM_TOKEN", "ghost")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no token labelled \"ghost\""), "{stderr}");
    assert!(!t.data_dir.join(warden::hsm::SEALED_SEED_FILE).exists());
}

#[test]
fn wardend_serves_the_admin_api_over_mutual_tls() {
    let t = TestToken::new("cli-admin");
    t.init();
    let pki = t.path().join("pki");
    let out = t
        .command("wardenctl")
        .args(["tls", "init"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(out.status.success());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = t
        .command("wardend")
        .env("WARDEN_ADMIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("WARDEN_ADMIN_TLS_CERT", pki.join("server.pem"))
        .env("WARDEN_ADMIN_TLS_KEY", pki.join("server.key"))
        .env("WARDEN_ADMIN_CLIENT_CA", pki.join("ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("wardend ready: node id "), "{ready}");
    let node_id = ready.split(' ').nth(4).unwrap().to_string();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("admin API on 127.0.0.1:{port}")
    );

    let status = t
        .command("wardenctl")
        .arg("status")
        .env("WARDENCTL_SERVER", format!("https://localhost:{port}"))
        .env("WARDENCTL_CA", pki.join("ca.pem"))
        .env("WARDENCTL_CERT", pki.join("alice.pem"))
        .env("WARDENCTL_CERT_KEY", pki.join("alice.key"))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let (stdout, stderr) = text(&status);
    assert!(status.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("node id      {node_id}")),
        "{stdout}"
    );
    let default = warden::policy::parse_policy(warden::policy::DEFAULT_POLICY).unwrap();
    assert!(
        stdout.contains(&format!("policy       default {}", default.hash_hex())),
        "{stdout}"
    );
    assert!(stdout.contains("window       hourly-cap"), "{stdout}");
}

#[test]
fn a_second_wardend_on_the_same_data_directory_is_refused() {
    let t = TestToken::new("cli-second");
    t.init();
    let mut first = t
        .command("wardend")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("wardend ready"));
    let second = t.command("wardend").output().unwrap();
    let (_, stderr) = text(&second);
    let _ = first.kill();
    let _ = first.wait();
    assert!(!second.status.success());
    assert!(
        stderr.contains("is another wardend running on this data directory?"),
        "{stderr}"
    );
}

/// Start wardend on `t`, wait for its ready line, stop it with SIGTERM.
fn start_and_stop(t: &TestToken) {
    let mut child = t
        .command("wardend")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a ready line").unwrap();
    assert!(first.starts_with("wardend ready"), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn wardend_refuses_a_seed_file_that_is_not_the_seed_of_its_state() {
    let t = TestToken::new("cli-seed-swap");
    t.init();
    start_and_stop(&t);
    let path = t.data_dir.join(warden::hsm::SEALED_SEED_FILE);
    let ours = std::fs::read(&path).unwrap();

    // Another instance's blob, sealed by the same token's key: it opens, but it is not ours.
    let hsm = t.open();
    let their_seed = warden::hsm::NodeSeed::new([0x77; 32]);
    let theirs = hsm
        .seal_seed(
            &their_seed,
            &warden::hsm::SeedBinding::for_seed(
                lightning_signer::bitcoin::Network::Regtest,
                &their_seed,
            ),
        )
        .unwrap();
    drop(hsm);
    std::fs::write(&path, theirs.to_bytes()).unwrap();
    let out = t.command("wardend").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("is not the seed this state database was created with"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&hex::encode(theirs.binding.unwrap().seed_id)),
        "{stderr}"
    );

    // The configured network must be the one the seed was sealed for.
    std::fs::write(&path, &ours).unwrap();
    let out = t
        .command("wardend")
        .env("WARDEN_NETWORK", "signet")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is sealed for the regtest network, but this configuration runs on signet"),
        "{stderr}"
    );

    // Its own blob back, it starts.
    start_and_stop(&t);
}
