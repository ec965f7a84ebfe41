//! Time, passed in. Everything that depends on time (windows, expiry, time-of-day rules) takes
//! a [`Clock`], so tests run on a fixed clock and never sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A source of Unix time in seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now)))
    }

    /// Move forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// Set the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub use warden_policy::units::format_utc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(10);
        assert_eq!(c.now(), 10);
        c.advance(5);
        assert_eq!(c.now(), 15);
        c.set(1);
        assert_eq!(c.now(), 1);
    }
}

/// What the clock guard noticed about the system clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockEvent {
    /// The system clock read `wall`, behind Warden's time `warden` by `by` seconds. Warden keeps
    /// deciding at its own time until the system clock catches up.
    SteppedBack {
        /// What the system clock read.
        wall: u64,
        /// Warden's time, which decisions keep using.
        warden: u64,
        /// Seconds behind.
        by: u64,
    },
    /// The system clock moved `by` seconds more than the time that passed (monotonic clock).
    Jumped {
        /// Seconds beyond the elapsed time.
        by: u64,
        /// The new time.
        to: u64,
    },
}

/// Warden's notion of now, as pure logic: it never goes backwards (a high-water mark, which the
/// core persists), and it notices steps back and forward jumps of the system clock. `mono` is a
/// monotonic reading in seconds (time since the process started), which the wall clock is
/// compared against to tell a jump from elapsed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockGuard {
    hwm: u64,
    last: Option<(u64, u64)>,
    max_jump: Option<u64>,
    behind: bool,
}

impl ClockGuard {
    /// A guard starting from the persisted high-water mark `hwm` (0 for none); forward jumps
    /// larger than `max_jump` seconds are reported (never, with `None`).
    pub fn new(hwm: u64, max_jump: Option<u64>) -> Self {
        ClockGuard {
            hwm,
            last: None,
            max_jump,
            behind: false,
        }
    }

    /// Warden's time for a reading of the wall clock, and what, if anything, to report.
    pub fn observe(&mut self, wall: u64, mono: u64) -> (u64, Option<ClockEvent>) {
        let mut event = None;
        if let (Some((last_wall, last_mono)), Some(max)) = (self.last, self.max_jump) {
            let elapsed = mono.saturating_sub(last_mono);
            let moved = wall.saturating_sub(last_wall);
            if moved > elapsed.saturating_add(max) {
                event = Some(ClockEvent::Jumped {
                    by: moved - elapsed,
                    to: wall,
                });
            }
        }
        self.last = Some((wall, mono));
        if wall < self.hwm {
            if !self.behind {
                self.behind = true;
                event = Some(ClockEvent::SteppedBack {
                    wall,
                    warden: self.hwm,
                    by: self.hwm - wall,
                });
            }
        } else {
            self.behind = false;
            self.hwm = wall;
        }
        (self.hwm, event)
    }

    /// The high-water mark: the latest time Warden has used.
    pub fn high_water_mark(&self) -> u64 {
        self.hwm
    }
}

/// A [`Clock`] over another that never goes backwards and notices jumps ([`ClockGuard`]); the
/// core wraps its clock in one, persists the high-water mark with every decision, and turns what
/// it notices into events.
#[derive(Debug)]
pub struct MonotonicClock {
    wall: Arc<dyn Clock>,
    started: std::time::Instant,
    guard: std::sync::Mutex<ClockGuard>,
    noticed: std::sync::Mutex<Vec<ClockEvent>>,
}

impl MonotonicClock {
    /// Over `wall`, from the persisted high-water mark `hwm`.
    pub fn new(wall: Arc<dyn Clock>, hwm: u64, max_jump: Option<u64>) -> Self {
        MonotonicClock {
            wall,
            started: std::time::Instant::now(),
            guard: std::sync::Mutex::new(ClockGuard::new(hwm, max_jump)),
            noticed: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Report forward jumps larger than `secs` from now on.
    pub fn set_max_jump(&self, secs: Option<u64>) {
        self.guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max_jump = secs;
    }

    /// The latest time handed out.
    pub fn high_water_mark(&self) -> u64 {
        self.guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .high_water_mark()
    }

    /// What was noticed since the last call.
    pub fn take_events(&self) -> Vec<ClockEvent> {
        std::mem::take(&mut *self.noticed.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> u64 {
        let wall = self.wall.now();
        let (now, event) = self
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(wall, self.started.elapsed().as_secs());
        if let Some(e) = event {
            self.noticed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e);
        }
        now
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn time_never_goes_back_and_a_step_back_is_reported_once() {
        let mut g = ClockGuard::new(1_000, None);
        assert_eq!(g.observe(1_010, 10), (1_010, None));
        assert_eq!(
            g.observe(900, 11),
            (
                1_010,
                Some(ClockEvent::SteppedBack {
                    wall: 900,
                    warden: 1_010,
                    by: 110
                })
            )
        );
        assert_eq!(g.observe(950, 12), (1_010, None), "reported once per step");
        assert_eq!(g.observe(1_011, 13), (1_011, None), "caught up");
        assert_eq!(g.observe(1_000, 14).0, 1_011);
        assert!(g.observe(1_000, 14).1.is_none());
    }

    #[test]
    fn a_forward_jump_beyond_the_elapsed_time_is_reported() {
        let mut g = ClockGuard::new(0, Some(300));
        g.observe(10_000, 0);
        assert_eq!(
            g.observe(10_400, 100),
            (10_400, None),
            "within 300 s of the elapsed 100 s"
        );
        assert_eq!(
            g.observe(20_000, 110),
            (
                20_000,
                Some(ClockEvent::Jumped {
                    by: 9_590,
                    to: 20_000
                })
            )
        );
    }
}
