//! Abuse limits for the admin API: a token bucket per client certificate, and a watch on
//! failed TLS handshakes. Rate limiting uses the monotonic clock (it is about load, not about
//! policy time).

use crate::events::{EventBus, EventKind};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per minute with a burst, per client certificate.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    burst: f64,
    buckets: Mutex<HashMap<[u8; 32], (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` sustained, `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_minute: f64::from(per_minute.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request from `client`'s bucket; false when it is empty.
    pub fn admit(&self, client: [u8; 32]) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 10_000 {
            // Bounded memory: forget clients whose buckets are full again.
            let full = self.burst;
            let per_sec = self.per_minute / 60.0;
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < full
            });
        }
        let (tokens, at) = b.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_minute / 60.0)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts failed handshakes; announces repeated failures (at most once a minute).
#[derive(Debug, Default)]
pub struct AuthFailures {
    total: AtomicU64,
    recent: Mutex<(VecDeque<Instant>, Option<Instant>)>,
}

/// Failures within [`WINDOW`] that make an alert.
pub const THRESHOLD: usize = 5;
/// The window for [`THRESHOLD`].
pub const WINDOW: Duration = Duration::from_secs(60);

impl AuthFailures {
    /// Record a failure from `peer`; emits an event when failures repeat.
    pub fn record(&self, peer: &str, detail: &str, events: &EventBus, now_unix: u64) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(%peer, %detail, total, "admin API authentication failure");
        let now = Instant::now();
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.0.push_back(now);
        while r.0.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            r.0.pop_front();
        }
        let quiet = r.1.is_none_or(|last| now.duration_since(last) > WINDOW);
        if r.0.len() >= THRESHOLD && quiet {
            r.1 = Some(now);
            events.emit(
                now_unix,
                EventKind::AuthFailure,
                "",
                &[],
                format!("{} failed admin API handshakes in the last minute (latest from {peer}: {detail})", r.0.len()),
                0,
            );
        }
    }

    /// Failures since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_per_client() {
        let l = RateLimiter::new(60, 5);
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!((0..10).filter(|_| l.admit(a)).count(), 5);
        assert!(l.admit(b), "another client has its own bucket");
    }

    #[test]
    fn repeated_failures_emit_one_event() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        let f = AuthFailures::default();
        for _ in 0..THRESHOLD + 3 {
            f.record("127.0.0.1:1", "no certificate", &bus, 0);
        }
        assert_eq!(f.total(), (THRESHOLD + 3) as u64);
        let e = rx.try_recv().unwrap();
        assert_eq!(e.kind, EventKind::AuthFailure);
        assert!(rx.try_recv().is_err(), "one alert per minute");
    }
}
