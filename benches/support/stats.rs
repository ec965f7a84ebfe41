//! Latency statistics shared by the load benchmarks: p50, p99 and rate of a timed loop.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Percentiles and rate of one measured batch.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_sec: f64,
}

pub fn stats(mut ns: Vec<Duration>, wall: Duration) -> Stats {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)].as_secs_f64() * 1e3;
    Stats {
        n: ns.len(),
        p50_ms: p(0.5),
        p99_ms: p(0.99),
        per_sec: ns.len() as f64 / wall.as_secs_f64(),
    }
}

pub fn timed(n: usize, mut f: impl FnMut(u64)) -> Stats {
    let mut ns = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i as u64);
        ns.push(t.elapsed());
    }
    stats(ns, start.elapsed())
}

pub fn print(label: &str, s: Stats) {
    println!(
        "  {label:<44} n={:<6} p50 {:>7.3} ms  p99 {:>7.3} ms  {:>8.0}/s",
        s.n, s.p50_ms, s.p99_ms, s.per_sec
    );
}
