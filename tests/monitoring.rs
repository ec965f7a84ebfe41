//! Metrics, alerts and webhooks from a real wardend serving VLS's remote_hsmd_socket.

mod common;

use common::cln::{Cln, Payee};
use common::daemon::next_event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::block_in_place;
use warden::api::proto::EventKind;

const RULES: &str = r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "1_000_000 sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "2_000_000 sat"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http_and_counters_move() {
    let mut cln = Cln::start("mon-metrics", RULES).await;
    block_in_place(|| cln.init());
    let before = cln.scrape_metrics().await;
    let approved = "warden_decisions_total{outcome=\"approve\",tag=\"per-payment-cap\"}";
    let denied = "warden_decisions_total{outcome=\"deny\",tag=\"per-payment-cap\"}";
    assert_eq!(before.get(approved), None);
    let payee = Payee::new(0x11);
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(500_000_000, 1))
    ));
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(1_500_000_000, 2))
    ));
    let after = cln.scrape_metrics().await;
    assert_eq!(after.get(approved), Some(&1.0), "{after:#?}");
    assert_eq!(after.get(denied), Some(&1.0));
    assert!(after["warden_hsmd_request_seconds_count{name=\"PreapproveInvoice\"}"] >= 2.0);
    assert_eq!(after["warden_node_connected"], 1.0);
    assert!(after["warden_audit_chain_length"] > before["warden_audit_chain_length"]);
    assert_eq!(
        after["warden_velocity_used_ratio{name=\"daily-cap\"}"],
        0.25
    );
    assert_eq!(after["warden_pending_approvals"], 0.0);
    assert!(
        after.contains_key("warden_hsm_operation_seconds_count{name=\"sign\"}"),
        "checkpoints are signed in the HSM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_above_its_threshold_raises_one_warning() {
    let mut cln = Cln::start("mon-window", RULES).await;
    block_in_place(|| cln.init());
    let mut events = cln.watch().await;
    let payee = Payee::new(0x11);
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(900_000_000, 1))
    ));
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(800_000_000, 2))
    ));
    let e = next_event(&mut events, EventKind::LimitWarning).await;
    assert_eq!(e.tags, vec!["daily-cap"]);
    assert_eq!(
        e.message,
        "window daily-cap (24h) is at 85 % of its limit: 1,700,000 sat of 2,000,000 sat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_disconnected_too_long_raises_an_alert() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("wardend.toml");
    std::fs::write(&cfg, "[alerts]\nnode_disconnect_secs = 1\n").unwrap();
    let mut cln = Cln::start_with_env(
        "mon-node",
        RULES,
        &[("WARDEN_CONFIG", cfg.to_str().unwrap())],
    )
    .await;
    block_in_place(|| cln.init());
    let mut events = cln.watch().await;
    cln.proxy.kill();
    let e = next_event(&mut events, EventKind::NodeConnection).await;
    assert!(e.message.contains("disconnected"), "{e:?}");
    let e = loop {
        let e = next_event(&mut events, EventKind::NodeConnection).await;
        if e.tags == vec!["warden-node-disconnected"] {
            break e;
        }
    };
    assert_eq!(
        e.message,
        "the node has been disconnected for more than 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_receives_a_signed_event_and_is_retried_after_a_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(8);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            n += 1;
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            let (head, body) = loop {
                let k = s.read(&mut buf[got..]).await.unwrap();
                got += k;
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                if let Some((h, b)) = text.split_once("\r\n\r\n") {
                    let len: usize = h
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    if b.len() >= len {
                        break (h.to_string(), b[..len].to_string());
                    }
                }
                if k == 0 {
                    panic!("short request");
                }
            };
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let _ = tx.send((head, body)).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret-key\n").unwrap();
    let cfg = dir.path().join("wardend.toml");
    std::fs::write(
        &cfg,
        format!("[alerts]\nwebhook_url = \"http://127.0.0.1:{port}/warden\"\nwebhook_secret_file = \"{}\"\n", secret.display()),
    )
    .unwrap();
    let mut cln = Cln::start_with_env(
        "mon-hook",
        RULES,
        &[("WARDEN_CONFIG", cfg.to_str().unwrap())],
    )
    .await;
    block_in_place(|| cln.init());
    assert!(!block_in_place(
        || cln.preapprove(&Payee::new(0x11).invoice(1_500_000_000, 1))
    ));
    let deadline = std::time::Duration::from_secs(20);
    // The server answered the first delivery with HTTP 500: the same body comes again.
    let (first_head, first_body) = tokio::time::timeout(deadline, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let (_, retried) = tokio::time::timeout(deadline, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_body, retried, "the retry carries the same event");
    assert!(
        first_head.starts_with("POST /warden HTTP/1.1"),
        "{first_head}"
    );
    // Among the deliveries, the refusal, signed with the secret.
    let (head, body) = loop {
        let (h, b) = tokio::time::timeout(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if b.contains("payment-refused") {
            break (h, b);
        }
    };
    let sig = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Warden-Signature: sha256="))
        .expect("signed");
    assert_eq!(
        sig,
        warden::alerts::sign_body(b"s3cret-key", body.as_bytes()),
        "HMAC over the body with the secret"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "payment-refused");
    assert_eq!(v["tags"][0], "per-payment-cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_wardend_promptly_even_with_a_watcher_connected() {
    let mut cln = Cln::start("mon-stop", RULES).await;
    block_in_place(|| cln.init());
    let _events = cln.watch().await;
    let started = std::time::Instant::now();
    block_in_place(|| cln.stop_wardend());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let store = warden::store::Store::open(&cln.token.data_dir.join("state")).unwrap();
    let records = warden::audit::read_records(&store).unwrap();
    assert_eq!(
        records.last().unwrap().kind,
        "stop",
        "the stop was recorded"
    );
}
