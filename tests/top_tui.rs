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

    let socket = format!("warden-top-{}", std::process::id());
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
        if screen.contains(&id) && screen.contains("daily-cap") {
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
}
