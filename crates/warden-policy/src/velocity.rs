//! Rolling-window spend counters.
//!
//! Spending is counted in one-minute buckets. A window of W seconds at time `now` counts every
//! bucket that ends after `now - W`, so a payment stays counted for up to one minute longer than
//! its window, never shorter: the approved sum in any rolling window can never exceed the limit
//! (the property tests in this module's tests check exactly that). Bucketing keeps the state
//! bounded (at most `window / 60` buckets per ledger) and a window sum cheap.

use super::model::Destination;
use std::collections::{HashMap, VecDeque};

/// Width of a bucket in seconds.
pub const BUCKET_SECS: u64 = 60;

/// One minute of spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// Msat approved in this minute.
    pub amount_msat: u64,
    /// Payments approved in this minute.
    pub count: u64,
}

/// The buckets of one counter, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    buckets: VecDeque<Bucket>,
}

/// Which counter a ledger is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LedgerKey {
    /// Everything the node spends.
    Node,
    /// One destination.
    Destination(Destination),
    /// The destinations of one listed-destination limit, counted together (by rule tag).
    Group(String),
    /// Everything every member of the fleet spends: the one ledger members share.
    Fleet,
}

impl LedgerKey {
    /// Whether the ledger is shared by the members of a fleet (stored with the fleet's rows).
    pub fn is_fleet(&self) -> bool {
        matches!(self, LedgerKey::Fleet)
    }
}

/// Sum and count over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Msat; wide, so that a sum of buckets can never wrap or saturate below a limit.
    pub amount_msat: u128,
    /// Payments.
    pub count: u64,
}

impl Ledger {
    /// What was spent in the window of `window_secs` ending at `now`.
    pub fn totals(&self, now: u64, window_secs: u64) -> Totals {
        let start = now.saturating_sub(window_secs);
        // A bucket counts while its end ((minute + 1) * 60) is after `start`.
        let first_minute = start / BUCKET_SECS;
        let from = self.buckets.partition_point(|b| b.minute < first_minute);
        let mut t = Totals::default();
        // Buckets after `now` count too: they can only exist if the clock went back, and a
        // spend must never stop counting because of that.
        for b in self.buckets.range(from..) {
            t.amount_msat += u128::from(b.amount_msat);
            t.count = t.count.saturating_add(b.count);
        }
        t
    }

    /// The bucket for `now` after adding a payment, without changing the ledger.
    pub fn bucket_after(&self, now: u64, amount_msat: u64) -> Bucket {
        let minute = now / BUCKET_SECS;
        let current = self
            .buckets
            .binary_search_by_key(&minute, |b| b.minute)
            .ok()
            .map(|i| self.buckets[i])
            .unwrap_or(Bucket {
                minute,
                amount_msat: 0,
                count: 0,
            });
        Bucket {
            minute,
            amount_msat: current.amount_msat.saturating_add(amount_msat),
            count: current.count.saturating_add(1),
        }
    }

    /// Put a bucket in place (insert or replace), keeping order.
    pub fn set(&mut self, bucket: Bucket) {
        match self
            .buckets
            .binary_search_by_key(&bucket.minute, |b| b.minute)
        {
            Ok(i) => self.buckets[i] = bucket,
            Err(i) => self.buckets.insert(i, bucket),
        }
    }

    /// Drop buckets that no window of `horizon_secs` can count at `now`; returns their minutes.
    pub fn compact(&mut self, now: u64, horizon_secs: u64) -> Vec<u64> {
        let first_minute = now.saturating_sub(horizon_secs) / BUCKET_SECS;
        let mut dropped = Vec::new();
        while let Some(b) = self.buckets.front() {
            if b.minute >= first_minute {
                break;
            }
            dropped.push(b.minute);
            self.buckets.pop_front();
        }
        dropped
    }

    /// The buckets, oldest first.
    pub fn buckets(&self) -> impl Iterator<Item = &Bucket> {
        self.buckets.iter()
    }

    /// Whether the ledger holds nothing.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// All counters. Held in memory; persisted bucket by bucket through [`codec`] by the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VelocityState {
    ledgers: HashMap<LedgerKey, Ledger>,
    /// Counted in the fleet's ledger over every window on top of its buckets: the shares of the
    /// fleet's room other members hold (and may spend without the fleet's lock), as this
    /// member last read them.
    fleet_reserved: Totals,
    /// What was spent from those shares (this member's own included), as this member knows it:
    /// what the fleet's windows report beyond their buckets (`spent`).
    fleet_in_shares: Totals,
}

/// A change to persist: the new value of one bucket.
pub type BucketChange = (LedgerKey, Bucket);

impl VelocityState {
    /// The ledger for `key`, empty if none.
    pub fn ledger(&self, key: &LedgerKey) -> Option<&Ledger> {
        self.ledgers.get(key)
    }

    /// Totals of a ledger over a window; zero for a ledger never written.
    pub fn totals(&self, key: &LedgerKey, now: u64, window_secs: u64) -> Totals {
        self.with_fleet(key, now, window_secs, self.fleet_reserved)
    }

    /// A ledger's totals, the fleet's with `extra` on top.
    fn with_fleet(&self, key: &LedgerKey, now: u64, window_secs: u64, extra: Totals) -> Totals {
        let mut t = self
            .ledgers
            .get(key)
            .map(|l| l.totals(now, window_secs))
            .unwrap_or_default();
        if *key == LedgerKey::Fleet {
            t.amount_msat += extra.amount_msat;
            t.count = t.count.saturating_add(extra.count);
        }
        t
    }

    /// What the fleet's ledger counts in every window beyond its buckets (see
    /// `fleet_reserved`).
    pub fn set_fleet_reserved(&mut self, reserved: Totals) {
        self.fleet_reserved = reserved;
    }

    /// The fleet's reserve now.
    pub fn fleet_reserved(&self) -> Totals {
        self.fleet_reserved
    }

    /// What was spent from members' shares of the fleet's room beyond the fleet's buckets, as
    /// known here (see `spent`).
    pub fn set_fleet_in_shares(&mut self, spent: Totals) {
        self.fleet_in_shares = spent;
    }

    /// What was spent from members' shares, as known here.
    pub fn fleet_in_shares(&self) -> Totals {
        self.fleet_in_shares
    }

    /// A payment of `amount_msat` approved from this member's share.
    pub fn add_fleet_in_shares(&mut self, amount_msat: u64) {
        self.fleet_in_shares.amount_msat += u128::from(amount_msat);
        self.fleet_in_shares.count = self.fleet_in_shares.count.saturating_add(1);
    }

    /// What was spent in a window, for reports and alerts: for the fleet's ledger, its buckets
    /// and what is known spent from shares, not the shares' whole room (which `totals` counts,
    /// for decisions).
    pub fn spent(&self, key: &LedgerKey, now: u64, window_secs: u64) -> Totals {
        self.with_fleet(key, now, window_secs, self.fleet_in_shares)
    }

    /// Apply bucket changes (after they were persisted).
    pub fn apply(&mut self, changes: &[BucketChange]) {
        for (key, bucket) in changes {
            self.ledgers.entry(key.clone()).or_default().set(*bucket);
        }
    }

    /// Compact every ledger; returns the (ledger, minute) pairs dropped, for the store to delete.
    pub fn compact(&mut self, now: u64, horizon_secs: u64) -> Vec<(LedgerKey, u64)> {
        let mut dropped = Vec::new();
        for (key, ledger) in self.ledgers.iter_mut() {
            dropped.extend(
                ledger
                    .compact(now, horizon_secs)
                    .into_iter()
                    .map(|m| (key.clone(), m)),
            );
        }
        self.ledgers.retain(|_, l| !l.is_empty());
        dropped
    }

    /// Every ledger, for persistence checks and reports.
    pub fn ledgers(&self) -> impl Iterator<Item = (&LedgerKey, &Ledger)> {
        self.ledgers.iter()
    }

    /// Number of ledgers held.
    pub fn len(&self) -> usize {
        self.ledgers.len()
    }

    /// Whether no ledger is held.
    pub fn is_empty(&self) -> bool {
        self.ledgers.is_empty()
    }
}

/// The on-disk codec of velocity buckets: key = ledger key + minute (u64 BE), value = amount msat
/// (u64 BE) + count (u64 BE). Pure, so the store stays ignorant of policy types and the policy
/// ignorant of the store.
pub mod codec {
    use super::{Bucket, BucketChange, LedgerKey};
    use crate::model::Destination;

    /// Encode a ledger key; the inverse of [`decode_ledger_key`].
    pub fn encode_ledger_key(key: &LedgerKey, out: &mut Vec<u8>) {
        let (tag, text): (u8, &str) = match key {
            LedgerKey::Node => (0, ""),
            LedgerKey::Destination(Destination::Node(n)) => (1, n),
            LedgerKey::Destination(Destination::Address(a)) => (2, a),
            LedgerKey::Group(g) => (3, g),
            LedgerKey::Fleet => (4, ""),
        };
        out.push(tag);
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    /// Decode a ledger key from the front of `b`; returns it and the rest.
    pub fn decode_ledger_key(b: &[u8]) -> Option<(LedgerKey, &[u8])> {
        let (&tag, rest) = b.split_first()?;
        if rest.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        if rest.len() < len {
            return None;
        }
        let text = std::str::from_utf8(&rest[..len]).ok()?.to_string();
        let key = match tag {
            0 if len == 0 => LedgerKey::Node,
            1 => LedgerKey::Destination(Destination::Node(text)),
            2 => LedgerKey::Destination(Destination::Address(text)),
            3 => LedgerKey::Group(text),
            4 if len == 0 => LedgerKey::Fleet,
            _ => return None,
        };
        Some((key, &rest[len..]))
    }

    /// The key of one ledger's bucket.
    pub fn bucket_key(key: &LedgerKey, minute: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(16);
        encode_ledger_key(key, &mut k);
        k.extend_from_slice(&minute.to_be_bytes());
        k
    }

    /// A bucket's value.
    pub fn encode_bucket(b: &Bucket) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&b.amount_msat.to_be_bytes());
        v.extend_from_slice(&b.count.to_be_bytes());
        v
    }

    /// A stored bucket back, or what is wrong with it.
    pub fn decode_bucket(k: &[u8], v: &[u8]) -> Result<BucketChange, &'static str> {
        let (key, rest) = decode_ledger_key(k).ok_or("bad ledger key")?;
        let minute = u64::from_be_bytes(rest.try_into().map_err(|_| "bad minute")?);
        if v.len() != 16 {
            return Err("bucket value is not 16 bytes");
        }
        let amount_msat = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let count = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
        Ok((
            key,
            Bucket {
                minute,
                amount_msat,
                count,
            },
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ledger_keys_and_buckets_round_trip() {
            for key in [
                LedgerKey::Node,
                LedgerKey::Destination(Destination::Node("02ab".into())),
                LedgerKey::Destination(Destination::Address("bc1qxyz".into())),
                LedgerKey::Group("supplier-daily".into()),
                LedgerKey::Fleet,
            ] {
                let mut b = Vec::new();
                encode_ledger_key(&key, &mut b);
                b.extend_from_slice(&[9, 9]);
                let (back, rest) = decode_ledger_key(&b).unwrap();
                assert_eq!(back, key);
                assert_eq!(rest, &[9, 9]);
                let bucket = Bucket {
                    minute: 7,
                    amount_msat: 1_000,
                    count: 2,
                };
                let (k2, b2) =
                    decode_bucket(&bucket_key(&key, 7), &encode_bucket(&bucket)).unwrap();
                assert_eq!((k2, b2), (key, bucket));
            }
            assert!(decode_ledger_key(&[7, 0, 0]).is_none());
            assert!(decode_ledger_key(&[1, 0, 5, b'a']).is_none());
            assert_eq!(
                decode_bucket(&bucket_key(&LedgerKey::Node, 1), &[0; 15]),
                Err("bucket value is not 16 bytes")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_buckets_that_end_inside_it() {
        let mut l = Ledger::default();
        l.set(l.bucket_after(0, 5)); // minute 0
        l.set(l.bucket_after(59, 7)); // minute 0 again
        l.set(l.bucket_after(3_600, 11)); // minute 60
                                          // At 59 the bucket of minute 60 is in the future: it can only be there because the
                                          // clock went back, and it still counts.
        assert_eq!(
            l.totals(59, 3_600),
            Totals {
                amount_msat: 23,
                count: 3
            }
        );
        // At 3,659 the window starts at 59: minute 0 ends at 60 > 59, still counted.
        assert_eq!(l.totals(3_659, 3_600).amount_msat, 23);
        // At 3,660 minute 0 has ended before the window's start.
        assert_eq!(l.totals(3_660, 3_600).amount_msat, 11);
    }

    #[test]
    fn compaction_drops_only_what_no_window_counts() {
        let mut l = Ledger::default();
        for m in 0..10u64 {
            l.set(l.bucket_after(m * 60, 1));
        }
        let dropped = l.compact(600, 300);
        assert_eq!(dropped, vec![0, 1, 2, 3, 4]);
        assert_eq!(l.totals(600, 300).count, 5);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut l = Ledger::default();
        l.set(l.bucket_after(0, u64::MAX));
        l.set(l.bucket_after(1, u64::MAX));
        assert_eq!(l.bucket_after(1, 1).amount_msat, u64::MAX);
        assert_eq!(l.totals(1, 60).amount_msat, u128::from(u64::MAX));
    }
}
