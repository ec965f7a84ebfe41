//! A decision is logged as made only once its request's commit is durable. Alone in its test
//! binary: tracing caches a log line's interest per process, and a test thread of the same
//! binary reaching that line first, while this one's subscriber is being installed, can cache it
//! as "nobody listens", so the line would never reach this subscriber.

mod common;

use common::cln::Payee;
use lightning_signer::bitcoin::hashes::Hash;
use std::sync::Arc;
use warden::clock::ManualClock;
use warden::policy::PaymentRequest;
use warden::store::log::LogBackend;

/// A log sink for one thread's tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Issue 25, item 10: a decision is logged as made only once its request's commit is durable;
/// one whose transaction is discarded (a deposed wardend's, a failed commit's) never is.
#[test]
fn a_decision_is_logged_as_made_only_once_it_is_durable() {
    let (_token, hsm, seed) = common::stack::sealed("log-durable");
    let (_admins, policy) = common::stack::admins_and_policy(
        r#"
[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "10_000_000 sat"
"#,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = ManualClock::new(now);
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LogBackend::open(dir.path()).unwrap());
    let (store, core, _session) = common::stack::build(&hsm, &seed, &policy, &clock, backend);
    let payee = Payee::new(0x31);
    let invoice: lightning_signer::lightning_invoice::Bolt11Invoice =
        payee.invoice(100_000_000, 1).parse().unwrap();
    let request = PaymentRequest::invoice(
        invoice.payment_hash().to_byte_array(),
        100_000_000,
        &payee.hex(),
        Some("order 1".into()),
    );
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let txn = store.begin().unwrap();
        assert!(core.decide_payment(&request, None).approved);
        txn.abort();
        assert!(
            !captured.text().contains("approved"),
            "a decision that was never committed was logged: {}",
            captured.text()
        );
        assert!(core.decide_payment(&request, None).approved);
        assert!(
            captured.text().contains("payment of 100,000 sat approved"),
            "{}",
            captured.text()
        );
    });
}
