//! `wardenctl top` in a real pseudo-terminal (tmux), against a real wardend with a held payment.

mod common;

use common::cln::{Cln, Payee};
use std::process::Command;
use tokio::task::block_in_place;

const RULES: &str = r#"
[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "5_000_000 sat"

[[approval]]
tag = "large-payment-quorum"
above = "1_000_000 sat"
quorum = { need = 2, of = ["alice", "bob", "carol"] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_windows_and_a_pending_request() {
    let mut cln = Cln::start("top-tui", RULES).await;
    top_shows(&mut cln, &[], &[], |_| {}).await;
}

/// A freeze and a started recovery action are on the header of `top`, where admins look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_a_freeze_and_a_started_recovery_action() {
    let recovery = warden::approval::keys::AdminKey::generate();
    let rules = format!(
        "{RULES}\n[recovery]\nkey = {{ pubkey = \"{}\" }}\ndelay = \"72h\"\n",
        recovery.public_key()
    );
    let mut cln = Cln::start("top-tui-recovery", &rules).await;
    let keyfile = cln.token.path().join("recovery.key");
    recovery.save(&keyfile).unwrap();
    // After the payments top_shows makes (a frozen signer would refuse them).
    let freeze_and_break_glass = move |cln: &Cln| {
        let out = cln.wardenctl("carol", &["freeze", "--reason", "incident 7"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cln.wardenctl(
            "alice",
            &[
                "recovery",
                "start",
                "unfreeze",
                "--key",
                keyfile.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    top_shows(
        &mut cln,
        &["FROZEN since", "by carol: incident 7", "RECOVERY rc-"],
        &["unfreeze started"],
        freeze_and_break_glass,
    )
    .await;
}

/// Run `top` in tmux and check the screen: the windows and a pending request always, and
/// `header` and `more` when given; `before_top` runs after the payments, before `top` starts.
async fn top_shows(cln: &mut Cln, header: &[&str], more: &[&str], before_top: impl FnOnce(&Cln)) {
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(250_000_000, 1))
    ));
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(1_500_000_000, 2))
    ));
    let id = block_in_place(|| cln.pending())[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    block_in_place(|| before_top(cln));
    let socket = format!("warden-top-{}-{}", std::process::id(), header.len());
    let env = |k: &str, v: String| format!("{k}={v}");
    let status = Command::new("tmux")
        .args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "150",
            "-y",
            "45",
        ])
        .args([
            "-e",
            &env(
                "WARDENCTL_SERVER",
                format!("https://localhost:{}", cln.admin_port),
            ),
        ])
        .args([
            "-e",
            &env("WARDENCTL_CA", cln.pki.join("ca.pem").display().to_string()),
        ])
        .args([
            "-e",
            &env(
                "WARDENCTL_CERT",
                cln.pki.join("alice.pem").display().to_string(),
            ),
        ])
        .args([
            "-e",
            &env(
                "WARDENCTL_CERT_KEY",
                cln.pki.join("alice.key").display().to_string(),
            ),
        ])
        .arg(format!("{} top", env!("CARGO_BIN_EXE_wardenctl")))
        .status()
        .expect("tmux is installed by scripts/setup.sh");
    assert!(status.success());
    let capture = || {
        let out = Command::new("tmux")
            .args(["-L", &socket, "capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut screen = String::new();
    for _ in 0..100 {
        screen = capture();
        if screen.contains(&id)
            && screen.contains("daily-cap")
            && header.iter().chain(more).all(|h| screen.contains(h))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = Command::new("tmux")
        .args(["-L", &socket, "send-keys", "-t", "top", "q"])
        .status();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .status();
    assert!(
        screen.contains(&id),
        "the pending request is on screen:\n{screen}"
    );
    assert!(screen.contains("1,500,000 sat"), "{screen}");
    assert!(screen.contains("large-payment-quorum"), "{screen}");
    assert!(
        screen.contains("daily-cap"),
        "the window gauge is on screen:\n{screen}"
    );
    assert!(
        screen.contains("250,000 sat of 5,000,000 sat (5 %)"),
        "{screen}"
    );
    assert!(screen.contains("[connected]"), "{screen}");
    for h in header.iter().chain(more) {
        assert!(screen.contains(h), "{h} is on screen:\n{screen}");
    }
}
