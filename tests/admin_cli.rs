//! `wardenctl` as admins run it, against a real admin API over mutual TLS on loopback.

mod common;

use common::api::{AdminHarness, PAYEE};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn wardenctl(h: &AdminHarness, admin: &str, args: &[&str]) -> Command {
    let (_, cert, key) = h.pki.clients.iter().find(|(n, _, _)| n == admin).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_wardenctl"));
    c.args(args)
        .env(
            "WARDENCTL_SERVER",
            format!("https://localhost:{}", h.addr.port()),
        )
        .env("WARDENCTL_CA", &h.pki.ca_cert)
        .env("WARDENCTL_CERT", cert)
        .env("WARDENCTL_CERT_KEY", key)
        .env("WARDENCTL_ADMIN", admin);
    c
}

async fn run(mut c: Command) -> (i32, String, String) {
    let out: Output = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_approve_a_held_payment_with_wardenctl() {
    let h = AdminHarness::start().await;
    let (req, id) = h.hold(1_500_000, 1);
    let keyfile = |name: &str| {
        let p = h.dir.path().join(format!("{name}.adminkey"));
        if !p.exists() {
            std::fs::write(&p, format!("{}\n", hex_secret(h.key(name)))).unwrap();
        }
        p.display().to_string()
    };

    let (code, out, err) = run(wardenctl(&h, "alice", &["pending"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&id) && out.contains("1,500,000 sat") && out.contains("0/2"),
        "{out}"
    );

    let (code, out, _) = run(wardenctl(&h, "alice", &["pending", "--json"])).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["amount_msat"], 1_500_000_000u64);

    let (code, out, _) = run(wardenctl(&h, "alice", &["show", &id])).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("payee        node {PAYEE}")), "{out}");
    assert!(out.contains("description  test payment 1"), "{out}");
    assert!(
        out.contains("rule         large-payment-quorum (needs 2 of alice, bob, carol, dave)"),
        "{out}"
    );

    let (code, out, err) = run(wardenctl(
        &h,
        "alice",
        &["approve", &id, "--key", &keyfile("alice")],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("alice approved request {id} (1 of 2 needed)")
    );

    // Alice again: refused by the daemon, exit code 3.
    let (code, _, err) = run(wardenctl(
        &h,
        "alice",
        &["approve", &id, "--key", &keyfile("alice")],
    ))
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("has already signed"), "{err}");

    let (code, out, err) = run(wardenctl(
        &h,
        "bob",
        &["approve", &id, "--key", &keyfile("bob")],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("quorum reached (2 of 2)"), "{out}");

    let (code, out, _) = run(wardenctl(&h, "carol", &["show", &id])).await;
    assert_eq!(code, 0);
    assert!(out.contains("state        approved"), "{out}");
    assert!(
        out.contains("  alice approves at") && out.contains("  bob approves at"),
        "{out}"
    );
    assert!(h.core.decide_payment(&req, None).approved);

    let (code, out, _) = run(wardenctl(&h, "carol", &["status"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("pending      0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_admin_approves_with_the_printed_message() {
    let h = AdminHarness::start().await;
    let (_, id) = h.hold(2_000_000, 2);
    let (code, text, _) = run(wardenctl(&h, "alice", &["show", &id, "--message"])).await;
    assert_eq!(code, 0);
    let text = text.strip_suffix('\n').unwrap();
    assert!(
        text.starts_with("Warden approval\ndecision: approve\nrequest: "),
        "{text}"
    );
    let sig = h.wallet.sign_bip137_p2wpkh(text);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
    let (code, out, err) = run(wardenctl(
        &h,
        "dave",
        &["approve", &id, "--signature", &b64],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("dave approved request {id} (1 of 2 needed)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_request_and_unreachable_daemon_have_their_own_exit_codes() {
    let h = AdminHarness::start().await;
    let (code, _, err) = run(wardenctl(&h, "alice", &["show", "rq-nope"])).await;
    assert_eq!(code, 3);
    assert!(err.contains("no approval request with id rq-nope"), "{err}");
    let mut c = wardenctl(&h, "alice", &["pending"]);
    c.env("WARDENCTL_SERVER", "https://localhost:1");
    let (code, _, err) = run(c).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("cannot reach wardend at https://localhost:1"),
        "{err}"
    );
}

#[test]
fn keygen_and_tls_init_write_private_keys_0600_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");
    let out = Command::new(env!("CARGO_BIN_EXE_wardenctl"))
        .args(["admin", "keygen", "--name", "alice", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let k = warden::approval::keys::AdminKey::load(&key).unwrap();
    assert!(
        stdout.contains(&format!("alice = {{ pubkey = \"{}\" }}", k.public_key())),
        "{stdout}"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = Command::new(env!("CARGO_BIN_EXE_wardenctl"))
        .args(["admin", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite an admin key"));

    let pki = dir.path().join("pki");
    let out = Command::new(env!("CARGO_BIN_EXE_wardenctl"))
        .args(["tls", "init"])
        .arg(&pki)
        .args(["--admins", "alice,bob"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.key", "server.key", "alice.key", "bob.key"] {
        assert_eq!(
            std::fs::metadata(pki.join(f)).unwrap().permissions().mode() & 0o777,
            0o600,
            "{f}"
        );
    }
    for f in ["ca.pem", "server.pem", "alice.pem", "bob.pem"] {
        assert!(pki.join(f).is_file(), "{f}");
    }
}

fn hex_secret(k: &warden::approval::keys::AdminKey) -> String {
    // The test harness keeps keys in memory; write them the way `admin keygen` does.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    k.save(&p).unwrap();
    std::fs::read_to_string(p).unwrap().trim().to_string()
}
