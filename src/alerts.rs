//! Alerts: events that need a person, and their delivery to a webhook.
//!
//! Alert events travel on the same stream as everything else (`WatchEvents`); this module adds
//! the ones that are about *state* rather than a single request (a velocity window above its
//! warning threshold, the node disconnected for too long) and delivers alert-worthy events to an
//! optional webhook: an HTTPS POST of the event as JSON (reqwest on rustls; plain HTTP only to a
//! loopback relay), its body signed with HMAC-SHA256 in the `X-Warden-Signature: sha256=<hex>`
//! header, retried with exponential backoff. The receiver's certificate is checked against
//! Mozilla's roots, or only against the CA the configuration pins.

use crate::events::{Event, EventKind};
use lightning_signer::bitcoin::hashes::{hmac, sha256, Hash, HashEngine};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// Which events are alerts (and so go to the webhook).
pub fn is_alert(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::PaymentRefused
            | EventKind::LimitWarning
            | EventKind::Hsm
            | EventKind::NodeConnection
            | EventKind::AuthFailure
            | EventKind::Clock
            | EventKind::RequestCreated
            | EventKind::Policy
            | EventKind::Freeze
            | EventKind::Recovery
            | EventKind::Channel
            | EventKind::Role
    )
}

/// Tracks which windows are above their warning threshold, so each crossing alerts once.
#[derive(Debug, Default)]
pub struct WindowWatch {
    above: Mutex<HashSet<String>>,
}

impl WindowWatch {
    /// Given each window's used fraction, return the tags that just crossed `threshold`
    /// upward. A window that falls back below can alert again later.
    pub fn crossings(&self, usage: &[(String, f64)], threshold: f64) -> Vec<(String, f64)> {
        let mut above = self.above.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (tag, used) in usage {
            if *used >= threshold {
                if above.insert(tag.clone()) {
                    out.push((tag.clone(), *used));
                }
            } else {
                above.remove(tag);
            }
        }
        out
    }
}

/// The HMAC-SHA256 of `body` under `secret`, hex: what `X-Warden-Signature` carries.
pub fn sign_body(secret: &[u8], body: &[u8]) -> String {
    let mut e = hmac::HmacEngine::<sha256::Hash>::new(secret);
    e.input(body);
    hex::encode(hmac::Hmac::<sha256::Hash>::from_engine(e).to_byte_array())
}

/// The JSON body of an event.
pub fn event_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "time": e.time,
        "kind": e.kind.name(),
        "request_id": e.request_id,
        "tags": e.tags,
        "message": e.message,
        "amount_msat": e.amount_msat,
    })
}

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `https://host[:port]/path`, or `http://` to a loopback address.
    pub url: String,
    /// HMAC key, wiped when dropped.
    pub secret: zeroize::Zeroizing<Vec<u8>>,
    /// Attempts per event.
    pub attempts: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
    client: reqwest::Client,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[error("webhook {url}: {detail}")]
pub struct DeliveryError {
    /// The URL.
    pub url: String,
    /// What went wrong on the last attempt.
    pub detail: String,
}

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not one Warden delivers to.
    #[error("alerts.webhook_url: {0}")]
    Url(String),
    /// The pinned CA file cannot be used.
    #[error("alerts.webhook_ca_file: {path}: {detail}")]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("webhook client: {0}")]
    Client(String),
}

/// Check a webhook URL: HTTPS anywhere, plain HTTP only to this host (a relay), because an
/// alert says what the signer refused, for how much and why.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if !loopback {
                return Err(format!(
                    "\"{url}\": plain http:// is delivered only to a loopback address (a relay on this host); use https:// for {}",
                    parsed.host_str().unwrap_or("that host")
                ));
            }
        }
        other => {
            return Err(format!(
                "\"{url}\": {other}:// is not delivered; use https://"
            ))
        }
    }
    if parsed.host().is_none() {
        return Err(format!("\"{url}\" names no host"));
    }
    Ok(parsed)
}

/// Every cause of `e`, outermost first: reqwest's own message hides the TLS or socket error.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

impl Webhook {
    /// A webhook for `url`, trusting only the CA in `ca_file` when given (PEM), else
    /// Mozilla's root store.
    pub fn new(
        url: &str,
        secret: zeroize::Zeroizing<Vec<u8>>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, WebhookError> {
        check_url(url).map_err(WebhookError::Url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(url.starts_with("https://"))
            .use_rustls_tls();
        if let Some(path) = ca_file {
            let ca_err = |detail: String| WebhookError::Ca {
                path: path.to_path_buf(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ca_err(format!("not a PEM certificate bundle ({e})")))?;
            if certs.is_empty() {
                return Err(ca_err("holds no certificate".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| WebhookError::Client(chain(&e)))?;
        Ok(Webhook {
            url: url.to_string(),
            secret,
            attempts: 5,
            backoff: Duration::from_millis(500),
            client,
        })
    }

    async fn post_once(&self, body: &[u8], signature: &str) -> Result<u16, String> {
        let resp = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Warden-Signature", format!("sha256={signature}"))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| chain(&e))?;
        Ok(resp.status().as_u16())
    }

    /// Deliver one event, retrying on failure or a non-2xx answer.
    pub async fn deliver(&self, e: &Event) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&event_json(e)).expect("serializable");
        let signature = sign_body(&self.secret, &body);
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts.max(1) {
            match self.post_once(&body, &signature).await {
                Ok(s) if (200..300).contains(&s) => return Ok(()),
                Ok(s) => last = format!("HTTP {s} on attempt {attempt}"),
                Err(err) => last = format!("{err} on attempt {attempt}"),
            }
            if attempt < self.attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(DeliveryError {
            url: self.url.clone(),
            detail: last,
        })
    }

    /// Deliver every alert event from `core`'s stream until the stream ends.
    pub async fn run(self, mut events: tokio::sync::broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(e) if is_alert(e.kind) => {
                    if let Err(err) = self.deliver(&e).await {
                        tracing::error!(error = %err, "alert not delivered");
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "webhook fell behind")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}

/// Raise a `NodeConnection` alert when the node has been disconnected for longer than
/// `threshold`; once per disconnection. Runs until `shutdown` changes.
pub async fn watch_node(
    connected: impl Fn() -> bool,
    alert: impl Fn(String),
    threshold: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut since: Option<std::time::Instant> = None;
    let mut alerted = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1).min(threshold)) => {},
            _ = shutdown.changed() => break,
        }
        if connected() {
            since = None;
            alerted = false;
            continue;
        }
        let start = *since.get_or_insert_with(std::time::Instant::now);
        if !alerted && start.elapsed() >= threshold {
            alerted = true;
            alert(format!(
                "the node has been disconnected for more than {} s",
                threshold.as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_events_are_alerts_and_approvals_are_not() {
        assert!(is_alert(EventKind::Channel));
        assert!(is_alert(EventKind::Role), "a takeover reaches the webhook");
        assert!(is_alert(EventKind::Freeze));
        assert!(!is_alert(EventKind::PaymentApproved));
        assert!(!is_alert(EventKind::RequestSigned));
    }

    #[test]
    fn a_window_alerts_once_per_crossing() {
        let w = WindowWatch::default();
        let u = |x: f64| vec![("daily-cap".to_string(), x)];
        assert!(w.crossings(&u(0.5), 0.8).is_empty());
        assert_eq!(w.crossings(&u(0.85), 0.8).len(), 1);
        assert!(
            w.crossings(&u(0.9), 0.8).is_empty(),
            "still above: no repeat"
        );
        assert!(w.crossings(&u(0.1), 0.8).is_empty());
        assert_eq!(
            w.crossings(&u(0.95), 0.8).len(),
            1,
            "a new crossing alerts again"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            sign_body(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn https_anywhere_and_plain_http_only_to_loopback() {
        assert!(check_url("https://alerts.example.com/warden").is_ok());
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("http://[::1]:9/hook").is_ok());
        assert!(check_url("http://localhost:9/hook").is_ok());
        let e = check_url("http://alerts.example.com/hook").unwrap_err();
        assert!(
            e.contains("plain http:// is delivered only to a loopback address")
                && e.contains("use https:// for alerts.example.com"),
            "{e}"
        );
        let e = check_url("ftp://example.com/x").unwrap_err();
        assert!(e.contains("ftp:// is not delivered"), "{e}");
        let e = check_url("not a url").unwrap_err();
        assert!(e.contains("is not a URL"), "{e}");
    }
}
