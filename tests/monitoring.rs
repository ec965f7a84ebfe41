//! Metrics, alerts and webhooks from a real wardend serving VLS's remote_hsmd_socket.

mod common;

use common::cln::{Cln, Payee};
use common::daemon::next_event;
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
    // A real HTTP server on loopback (the one place plain http:// is delivered to) that answers
    // the first delivery with HTTP 500.
    let mut hook = common::hook::Receiver::start(None, vec![500]).await;
    let port = hook.port;
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
    // The server answered the first delivery with HTTP 500: the same body comes again.
    let first = hook.next(20).await;
    let retried = hook.next(20).await;
    assert_eq!(first.body, retried.body, "the retry carries the same event");
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/warden")
    );
    // Among the deliveries, the refusal, signed with the secret.
    let delivery = loop {
        let d = hook.next(20).await;
        if d.body.contains("payment-refused") {
            break d;
        }
    };
    assert_eq!(
        delivery.signature().expect("signed"),
        warden::alerts::sign_body(b"s3cret-key", delivery.body.as_bytes()),
        "HMAC over the body with the secret"
    );
    let body = delivery.body;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "payment-refused");
    assert_eq!(v["tags"][0], "per-payment-cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_delivered_over_https_to_its_pinned_ca_and_never_to_another() {
    // The receiver's own PKI: a CA and a certificate for localhost.
    let dir = tempfile::tempdir().unwrap();
    let pki = warden::api::tls::init_pki(&dir.path().join("hook-pki"), &[]).unwrap();
    let mut hook =
        common::hook::Receiver::start(Some((&pki.server_cert, &pki.server_key)), vec![]).await;
    let url = format!("https://localhost:{}/alerts", hook.port);
    let secret = || zeroize::Zeroizing::new(b"k3y".to_vec());
    let e = warden::events::EventBus::default().announce(
        1_795_435_200,
        warden::events::EventKind::Hsm,
        "",
        &["warden-hsm-unavailable".into()],
        "the HSM cannot sign".into(),
        0,
    );

    // Pinned to the receiver's CA: delivered, signed.
    let pinned = warden::alerts::Webhook::new(&url, secret(), Some(&pki.ca_cert)).unwrap();
    pinned.deliver(&e).await.unwrap();
    let d = hook.next(10).await;
    assert_eq!((d.method.as_str(), d.path.as_str()), ("POST", "/alerts"));
    assert_eq!(
        d.signature().unwrap(),
        warden::alerts::sign_body(b"k3y", d.body.as_bytes())
    );
    assert!(d.body.contains("the HSM cannot sign"), "{}", d.body);

    // Pinned to another CA, or trusting only Mozilla's roots: nothing is sent.
    let other = warden::api::tls::init_pki(&dir.path().join("other-pki"), &[]).unwrap();
    for ca in [Some(other.ca_cert.as_path()), None] {
        let mut hook_other = warden::alerts::Webhook::new(&url, secret(), ca).unwrap();
        hook_other.attempts = 1;
        let err = hook_other.deliver(&e).await.unwrap_err();
        assert!(
            err.detail.contains("invalid peer certificate"),
            "{ca:?}: {}",
            err.detail
        );
    }
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            hook.deliveries.recv()
        )
        .await
        .is_err(),
        "a webhook that does not trust the receiver sent it the event"
    );

    // A bad pinned CA file is named.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = warden::alerts::Webhook::new(&url, secret(), Some(&junk))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("alerts.webhook_ca_file: "), "{err}");
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
