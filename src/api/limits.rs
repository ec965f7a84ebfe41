//! Abuse limits for the admin API: a token bucket per client certificate, a bound on
//! handshakes per source address, and a watch on failed TLS handshakes. Failures are counted
//! per source and written to the audit log as one aggregated record per interval, never one
//! record per attempt: a client without credentials cannot grow the state by knocking. Rate
//! limiting uses the monotonic clock (it is about load, not about policy time).

use crate::events::{EventBus, EventKind};
use std::collections::{BTreeMap, HashMap, VecDeque};
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

    /// Whether `client`'s bucket has a token, without taking it.
    pub fn has_token(&self, client: [u8; 32]) -> bool {
        let now = Instant::now();
        let b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match b.get(&client) {
            None => true,
            Some((tokens, at)) => {
                tokens + now.duration_since(*at).as_secs_f64() * self.per_minute / 60.0 >= 1.0
            }
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

/// Counts failed handshakes; announces repeated failures (at most once a minute) and keeps
/// per-source counts until [`AuthFailures::drain`] takes them for the audit log.
#[derive(Debug, Default)]
pub struct AuthFailures {
    total: AtomicU64,
    recent: Mutex<(VecDeque<Instant>, Option<Instant>)>,
    by_source: Mutex<BTreeMap<String, SourceFailures>>,
}

/// Sources counted separately per interval; beyond this many, failures are counted under
/// [`OTHER_SOURCES`] (bounded memory and a bounded audit record).
pub const MAX_SOURCES: usize = 256;
/// The source name that collects failures beyond [`MAX_SOURCES`].
pub const OTHER_SOURCES: &str = "other sources";

/// One source's failures in an interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceFailures {
    /// Failed handshakes.
    pub count: u64,
    /// What the last one said.
    pub last_detail: String,
    /// How many failed for each reason, the first [`MAX_REASONS`] distinct reasons by name: a
    /// source that first presented an expired certificate and was then dropped for failing
    /// too often shows both, not only the last.
    pub reasons: BTreeMap<String, u64>,
}

/// Distinct reasons kept per source and interval; more are counted under [`OTHER_REASONS`].
pub const MAX_REASONS: usize = 8;
/// The reason that collects failures beyond [`MAX_REASONS`].
pub const OTHER_REASONS: &str = "other reasons";

impl SourceFailures {
    fn add(&mut self, detail: &str, n: u64) {
        self.count += n;
        self.last_detail = detail.chars().take(200).collect();
        let reason =
            if self.reasons.contains_key(&self.last_detail) || self.reasons.len() < MAX_REASONS {
                self.last_detail.clone()
            } else {
                OTHER_REASONS.to_string()
            };
        *self.reasons.entry(reason).or_default() += n;
    }
}

/// Whether a source's `n`-th failure of an interval is written to the text log.
fn logged(n: u64) -> bool {
    let mut p = 1;
    while p < n {
        p = p.saturating_mul(10);
    }
    p == n
}

/// Failures within [`WINDOW`] that make an alert.
pub const THRESHOLD: usize = 5;
/// The window for [`THRESHOLD`].
pub const WINDOW: Duration = Duration::from_secs(60);

impl AuthFailures {
    /// Record a failure from `peer`; emits an event when failures repeat.
    pub fn record(&self, peer: &str, detail: &str, events: &EventBus, now_unix: u64) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let from_source = {
            // The source is the address without the port: one client, many connections.
            let source = peer
                .parse::<std::net::SocketAddr>()
                .map(|a| super::accept::source_of(a.ip()))
                .unwrap_or_else(|_| peer.to_string());
            let mut by = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
            let key = if by.contains_key(&source) || by.len() < MAX_SOURCES {
                source
            } else {
                OTHER_SOURCES.to_string()
            };
            let e = by.entry(key).or_default();
            e.add(detail, 1);
            e.count
        };
        // The text log, like the audit log, must not grow by a line per knock: a source's 1st,
        // 10th, 100th, … failure of the interval is logged, the rest only counted.
        if logged(from_source) {
            tracing::warn!(%peer, %detail, total, from_source, "admin API authentication failure");
        }
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

    /// The per-source counts since the last drain, and start counting afresh.
    pub fn drain(&self) -> BTreeMap<String, SourceFailures> {
        std::mem::take(&mut *self.by_source.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put drained counts back (their audit record could not be written), merged with what
    /// arrived since, so the next interval's record still holds them.
    pub fn restore(&self, drained: BTreeMap<String, SourceFailures>) {
        let mut by = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        for (source, f) in drained {
            let key = if by.contains_key(&source) || by.len() < MAX_SOURCES {
                source
            } else {
                OTHER_SOURCES.to_string()
            };
            let e = by.entry(key).or_default();
            let newer = std::mem::take(&mut e.last_detail);
            for (reason, n) in &f.reasons {
                e.add(reason, *n);
            }
            // The last detail is the newest one: what arrived since the drain, if anything.
            e.last_detail = if newer.is_empty() {
                f.last_detail
            } else {
                newer
            };
        }
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

    #[test]
    fn failures_are_aggregated_per_source_and_bounded() {
        let bus = EventBus::default();
        let f = AuthFailures::default();
        for i in 0..1_000 {
            f.record(&format!("10.0.0.1:{i}"), "no certificate", &bus, 0);
        }
        for i in 0..(MAX_SOURCES + 50) {
            f.record(
                &format!("10.1.{}.{}:1", i / 256, i % 256),
                "bad CA",
                &bus,
                0,
            );
        }
        let drained = f.drain();
        assert_eq!(
            drained.len(),
            MAX_SOURCES + 1,
            "bounded, with one entry for the rest"
        );
        assert_eq!(
            drained["10.0.0.1"].count, 1_000,
            "one source, many ports: one entry"
        );
        assert_eq!(drained[OTHER_SOURCES].count, 51);
        assert!(f.drain().is_empty(), "drained");
        assert_eq!(f.total(), 1_000 + MAX_SOURCES as u64 + 50);
        // Counts whose record could not be written come back, merged with newer ones.
        f.record("10.0.0.1:9", "no certificate", &bus, 0);
        f.restore(drained);
        let again = f.drain();
        assert_eq!(again["10.0.0.1"].count, 1_001);
        assert_eq!(again["10.0.0.1"].reasons["no certificate"], 1_001);
        assert_eq!(again[OTHER_SOURCES].count, 51);
    }

    #[test]
    fn a_knocking_source_is_logged_at_powers_of_ten_only() {
        let logged_at: Vec<u64> = (1..=12_000).filter(|n| logged(*n)).collect();
        assert_eq!(logged_at, vec![1, 10, 100, 1_000, 10_000]);
    }

    #[test]
    fn each_source_keeps_a_bounded_count_per_reason() {
        let bus = EventBus::default();
        let f = AuthFailures::default();
        f.record("10.0.0.2:1", "certificate expired", &bus, 0);
        for _ in 0..5 {
            f.record("10.0.0.2:2", "dropped: too many failed handshakes", &bus, 0);
        }
        for i in 0..20 {
            f.record("10.0.0.2:3", &format!("odd reason {i}"), &bus, 0);
        }
        let s = &f.drain()["10.0.0.2"];
        assert_eq!(s.count, 26);
        assert_eq!(
            s.reasons["certificate expired"], 1,
            "the first reason is not lost"
        );
        assert_eq!(s.reasons["dropped: too many failed handshakes"], 5);
        assert_eq!(s.reasons.len(), MAX_REASONS + 1);
        assert_eq!(s.reasons[OTHER_REASONS], 14);
        assert_eq!(s.last_detail, "odd reason 19");
    }
}
