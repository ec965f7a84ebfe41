//! Alerts: events that need a person, and their delivery to a webhook.
//!
//! Alert events travel on the same stream as everything else (`WatchEvents`); this module adds
//! the ones that are about *state* rather than a single request (a velocity window above its
//! warning threshold, the node disconnected for too long) and delivers alert-worthy events to an
//! optional webhook: an HTTP POST of the event as JSON, its body signed with HMAC-SHA256 in the
//! `X-Warden-Signature: sha256=<hex>` header, retried with exponential backoff.

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
    /// `http://host:port/path` (use a local relay or tunnel for TLS endpoints).
    pub url: String,
    /// HMAC key, wiped when dropped.
    pub secret: zeroize::Zeroizing<Vec<u8>>,
    /// Attempts per event.
    pub attempts: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
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

fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are delivered directly; put a TLS relay on loopback for https"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

async fn post_once(host: &str, path: &str, body: &[u8], signature: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Warden-Signature: sha256={signature}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    sock.write_all(body).await.map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut resp))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "the answer is not HTTP".to_string())?;
    Ok(status)
}

impl Webhook {
    /// Deliver one event, retrying on failure or a non-2xx answer.
    pub async fn deliver(&self, e: &Event) -> Result<(), DeliveryError> {
        let (host, path) = split_url(&self.url).map_err(|detail| DeliveryError {
            url: self.url.clone(),
            detail,
        })?;
        let body = serde_json::to_vec(&event_json(e)).expect("serializable");
        let signature = sign_body(&self.secret, &body);
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts.max(1) {
            match post_once(&host, &path, &body, &signature).await {
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
    fn only_http_urls_are_delivered_directly() {
        assert_eq!(
            split_url("http://127.0.0.1:9/hook").unwrap(),
            ("127.0.0.1:9".into(), "/hook".into())
        );
        assert!(split_url("https://example.com")
            .unwrap_err()
            .contains("TLS relay"));
    }
}
