//! A fleet member's share of the fleet's room: how members approve side by side under one cap.
//!
//! Under the fleet's lock (one row every member's decision on the fleet's windows takes) the
//! members' commits would follow one another, each holding the lock through its durable commit.
//! Instead, a member that takes the fleet's lock also carves itself a share of what the fleet's
//! windows still allow (a fraction, so every member can have one) and records it in the fleet's
//! database. Its later payments that fit the share lock only the share's row: the member checks
//! every other rule as usual, counts the payment in the share in its own commit, and other
//! members commit meanwhile. A payment that does not fit, needs a quorum, or meets a freeze
//! releases the share and takes the fleet's lock as before.
//!
//! Why the cap still holds: every share counts in every fleet window, whole, as spent now, from
//! the moment it is carved until a member under the fleet's lock settles it (moves what was spent
//! from it into the fleet's buckets, at that later time, so it counts at least as long as it
//! would have). A share is carved only from what the windows allow after every other share, so
//! the fleet's buckets plus every share never exceed any fleet limit, and what members spend
//! is within that. A decision under the fleet's lock that the other shares would refuse settles
//! them first (waiting for a member spending from one to commit), so the cap is reached exactly.
//! A share carved under an earlier policy is not spent from: a tightening applies to every
//! member at its next request, as without shares.

use super::engine::PolicyEngine;
use super::Core;
use crate::policy::{LedgerKey, LimitScope, Mode, Policy, Totals};
use serde::{Deserialize, Serialize};

/// A member's share of the fleet's room, as its row holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The policy version it was carved under (`seq:hash` of the fleet's history, so a policy
    /// put back in force later is another version); under another it is only settled.
    pub policy: String,
    /// When it was carved (Warden's time): it is settled within a tenth of the shortest fleet
    /// window, so what was spent from it is never counted much later than it was spent.
    #[serde(default)]
    pub carved_at: u64,
    /// Msat it allows.
    pub amount_msat: u64,
    /// Payments it allows (`u64::MAX` when no fleet limit counts payments).
    pub count: u64,
    /// Msat approved from it, not yet in the fleet's buckets.
    pub used_msat: u64,
    /// Payments approved from it, not yet in the fleet's buckets.
    pub used_count: u64,
}

impl Grant {
    fn decode(v: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(v).map_err(|e| format!("a fleet share does not decode: {e}"))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a share encodes")
    }

    /// Whether a payment of `amount_msat` at `now` fits what is left of it under policy version
    /// `policy`, before it is `max_age` seconds old.
    pub fn covers(&self, policy: &str, amount_msat: u64, now: u64, max_age: u64) -> bool {
        self.policy == policy
            && now < self.carved_at.saturating_add(max_age)
            && self.used_msat.saturating_add(amount_msat) <= self.amount_msat
            && self.used_count < self.count
    }

    /// What it counts in the fleet's windows while it stands: all of it under the policy in
    /// force (it may still be spent), only what was spent under an earlier one (it will not be).
    fn reserve(&self, policy: &str) -> (u128, u64) {
        if self.policy == policy {
            (u128::from(self.amount_msat), self.count)
        } else {
            (u128::from(self.used_msat), self.used_count)
        }
    }

    fn has_room(&self) -> bool {
        self.amount_msat > self.used_msat && self.count > self.used_count
    }
}

/// How a fleet member decides one request.
#[derive(Debug)]
pub(super) enum FleetMode {
    /// Not on the fleet's windows (a single wardend, a check, or a policy without fleet
    /// windows): the fleet's lock, if any, as before.
    Plain,
    /// Within this member's share, whose row is locked.
    Share(Grant),
    /// Under the fleet's lock, this member's share settled; the other members' shares, locked.
    Locked(Vec<(String, Grant)>),
}

/// Whether `decision` was refused by an enforced limit on a fleet window of `policy`.
pub(super) fn refused_by_fleet_window(decision: &crate::policy::Decision, policy: &Policy) -> bool {
    policy.limits.iter().any(|l| {
        l.scope == LimitScope::Fleet
            && l.window_secs.is_some()
            && l.mode == Mode::Enforce
            && decision.tags.contains(&l.tag)
    })
}

/// How long a share may be spent from: a tenth of the shortest enforced fleet window, at least a
/// minute.
pub(super) fn share_max_age(policy: &Policy) -> u64 {
    policy
        .limits
        .iter()
        .filter(|l| l.scope == LimitScope::Fleet && l.mode == Mode::Enforce)
        .filter_map(|l| l.window_secs)
        .min()
        .map(|w| (w / 10).max(60))
        .unwrap_or(60)
}

/// The most a share can legitimately hold under `policy` with its members: what a carve gives
/// (a fraction of what each enforced fleet window allows). A row above it was not carved.
fn share_bound(policy: &Policy) -> (u64, u64) {
    let members = policy.fleet_members.len().max(1) as u64;
    let (mut amount, mut count) = (u64::MAX, u64::MAX);
    for l in policy.limits.iter().filter(|l| {
        l.scope == LimitScope::Fleet && l.mode == Mode::Enforce && l.window_secs.is_some()
    }) {
        if let Some(max) = l.max_amount_msat {
            amount = amount.min(max / (2 * members));
        }
        if let Some(max) = l.max_count {
            count = count.min(max / (2 * members));
        }
    }
    (amount, count)
}

/// Whether enforced limits of `policy` count on the fleet's windows.
pub(super) fn has_fleet_windows(policy: &Policy) -> bool {
    policy
        .limits
        .iter()
        .any(|l| l.scope == LimitScope::Fleet && l.window_secs.is_some() && l.mode == Mode::Enforce)
}

impl Core {
    /// What every member has spent from its share, as the shares read with `shared` say: the
    /// fleet's windows report it beside their buckets (read in the same snapshot, so a share
    /// settled into the buckets is counted once).
    pub(super) fn note_shares(
        &self,
        engine: &mut PolicyEngine,
        shared: &crate::store::Shared,
    ) -> Result<(), String> {
        let Some(grants) = &shared.grants else {
            return Ok(());
        };
        let mut spent = Totals::default();
        for (_, v) in grants {
            let g = Grant::decode(v)?;
            spent.amount_msat += u128::from(g.used_msat);
            spent.count = spent.count.saturating_add(g.used_count);
        }
        engine.set_fleet_in_shares(spent);
        Ok(())
    }

    /// Before a decision on a fleet member whose policy limits the fleet's windows: to sign,
    /// lock this member's share and keep it if the payment fits it; otherwise (or for a check)
    /// take the fleet's lock, settle this member's share and lock the others'. Either way memory
    /// is brought up to what the other members committed (windows, policy, freeze).
    pub(super) fn enter_fleet(
        &self,
        engine: &mut PolicyEngine,
        sign: bool,
        amount_msat: u64,
    ) -> Result<FleetMode, String> {
        let member = self.fleet_member_name();
        if member.is_none() || !has_fleet_windows(engine.policy()) {
            self.sync_fleet(engine)?;
            return Ok(FleetMode::Plain);
        }
        if !sign {
            // A check counts nothing: under the fleet's lock, every share counted at what was
            // spent from it as committed (all that stands in a payment's way if it is then
            // signed; signing decides exactly), nothing settled, written or waited for.
            self.sync_fleet(engine)?;
            engine.reserve_spent_shares();
            return Ok(FleetMode::Plain);
        }
        if self.store.in_fleet_block() || self.trip_pending() {
            // A transaction that already holds the fleet's lock or a share (an earlier decision
            // in it; a share with a spend staged is not released: the store refuses), or an
            // emergency stop to record: under the fleet's lock, the shares exact.
            self.store.release_grant().map_err(|e| e.to_string())?;
            return self.lock_fleet_shares(engine);
        }
        let now = self.clock.now();
        let hint = self
            .grant_hint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // A share known not to fit is not locked only to be released.
        let worth = match (&hint, self.cached_share_policy()) {
            (Some(g), Some(v)) => g.covers(&v, amount_msat, now, share_max_age(engine.policy())),
            _ => true,
        };
        if worth {
            let (row, shared) = self.store.lock_grant().map_err(|e| e.to_string())?;
            let taken = engine
                .take_shared(&shared)
                .map_err(|e| e.to_string())
                .and_then(|()| self.take_fleet_rows(engine, &shared));
            if let Err(e) = taken {
                self.store.unsync_shared();
                return Err(e);
            }
            let grant = row
                .map(|v| Grant::decode(&v))
                .transpose()?
                .unwrap_or_default();
            // The policy may have moved with the rows just taken.
            let version = self.share_policy()?;
            if grant.covers(&version, amount_msat, now, share_max_age(engine.policy()))
                && self.plausible(&grant, hint.as_ref(), engine.policy())
            {
                return Ok(FleetMode::Share(grant));
            }
            // Remembered to skip the lock next time; a row Warden did not write is not (what
            // this process last wrote stays, and settles at least what it says was spent).
            let ours = hint
                .as_ref()
                .is_none_or(|l| *l == grant || grant == Grant::default());
            if ours && self.plausible_quiet(&grant, engine.policy()) {
                *self.grant_hint.lock().unwrap_or_else(|p| p.into_inner()) = Some(grant);
            }
            self.store.release_grant().map_err(|e| e.to_string())?;
        }
        self.lock_fleet_shares(engine)
    }

    /// Whether this member's share row is one Warden wrote: no larger than a carve can make it,
    /// and (when this process knows what it last committed) that, or settled by another member.
    /// One that is not is not spent from, and is announced.
    fn plausible_quiet(&self, g: &Grant, policy: &Policy) -> bool {
        let (amount, count) = share_bound(policy);
        g.amount_msat <= amount && g.count <= count
    }

    fn plausible(&self, g: &Grant, last: Option<&Grant>, policy: &Policy) -> bool {
        let carved = self.plausible_quiet(g, policy);
        let ours = last.is_none_or(|l| l == g || *g == Grant::default());
        if carved && ours {
            return true;
        }
        let tag = crate::tags::STORE_FAILURE;
        let msg = format!(
            "rule {tag}: this member's share of the fleet's room in the database ({} msat, {} payments, {} msat spent) is not one wardend carved or last wrote; it is not spent from. Check who writes to the fleet's database",
            g.amount_msat, g.count, g.used_msat
        );
        tracing::error!("{msg}");
        self.events.emit(
            self.clock.now(),
            crate::events::EventKind::Freeze,
            "",
            &[tag.to_string()],
            msg,
            0,
        );
        false
    }

    /// The version shares are carved under now, if known without reading (see
    /// [`Core::share_policy`]).
    fn cached_share_policy(&self) -> Option<String> {
        let hash = self.policy().policy.hash_hex();
        self.share_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(h, _)| *h == hash)
            .map(|(_, v)| v.clone())
    }

    /// The version of the fleet's policy in force, `seq:hash`: a share carved under it is spent
    /// from only while it is the one in force, so a policy put back later does not revive old
    /// shares. Read from the history when the policy in memory changed.
    fn share_policy(&self) -> Result<String, String> {
        if let Some(v) = self.cached_share_policy() {
            return Ok(v);
        }
        let hash = self.policy().policy.hash_hex();
        let seq = crate::governance::PolicyHistory::new(&self.store)
            .in_force()
            .map_err(|e| e.to_string())?
            .filter(|v| v.hash == hash)
            .map(|v| v.seq)
            .unwrap_or(0);
        let version = format!("{seq}:{hash}");
        *self.share_version.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((hash, version.clone()));
        Ok(version)
    }

    /// An emergency stop waits to be recorded under the fleet's lock.
    fn trip_pending(&self) -> bool {
        self.pending_trip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Whether approving `amount_msat` now would take a window to the emergency stop's
    /// `window_percent` (its freeze is written under the fleet's lock, so such an approval is
    /// not decided within a share).
    pub(super) fn would_trip_window(
        &self,
        engine: &PolicyEngine,
        amount_msat: u64,
        now: u64,
    ) -> bool {
        let policy = engine.policy();
        let Some(percent) = policy.emergency.window_percent else {
            return false;
        };
        let state = engine.state();
        let percent = u128::from(percent);
        policy.limits.iter().any(|l| {
            let Some(w) = l.window_secs else {
                return false;
            };
            let t = match &l.scope {
                LimitScope::Node => state.totals(&LedgerKey::Node, now, w),
                LimitScope::Fleet => state.spent(&LedgerKey::Fleet, now, w),
                LimitScope::Destinations(_) => {
                    state.totals(&LedgerKey::Group(l.tag.clone()), now, w)
                }
                LimitScope::EachDestination => return false,
            };
            let by_amount = l.max_amount_msat.filter(|m| *m > 0).is_some_and(|m| {
                (t.amount_msat + u128::from(amount_msat)) * 100 >= u128::from(m) * percent
            });
            let by_count = l.max_count.filter(|m| *m > 0).is_some_and(|m| {
                u128::from(t.count.saturating_add(1)) * 100 >= u128::from(m) * percent
            });
            by_amount || by_count
        })
    }

    /// Leave a share for the fleet's lock (a payment the share does not stand for: a quorum, a
    /// refusal to name every rule of, a freeze). Nothing may be staged yet.
    pub(super) fn escalate(&self, engine: &mut PolicyEngine) -> Result<FleetMode, String> {
        self.store.release_grant().map_err(|e| e.to_string())?;
        self.lock_fleet_shares(engine)
    }

    /// Take the fleet's lock, settle this member's share into the fleet's window, and lock
    /// every other member's (counted whole in the fleet's windows).
    fn lock_fleet_shares(&self, engine: &mut PolicyEngine) -> Result<FleetMode, String> {
        self.sync_fleet(engine)?;
        let me = self.fleet_member_name().unwrap_or_default();
        let policy = self.share_policy()?;
        let now = self.clock.now();
        let rows = self.store.lock_grants().map_err(|e| e.to_string())?;
        let (mut reserved, mut spent) = (Totals::default(), Totals::default());
        let mut others = Vec::new();
        for (m, v) in rows {
            let mut g = Grant::decode(&v)?;
            if m == me {
                // What this process last committed from its share, if the row says less (a
                // row rewritten in the database): the larger is settled.
                if let Some(h) = self
                    .grant_hint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .filter(|h| h.policy == g.policy && h.carved_at == g.carved_at)
                {
                    g.used_msat = g.used_msat.max(h.used_msat);
                    g.used_count = g.used_count.max(h.used_count);
                }
                if g != Grant::default() {
                    engine
                        .settle_into_fleet(g.used_msat, g.used_count, now)
                        .map_err(|e| e.to_string())?;
                    self.stage_grant(&me, Grant::default())?;
                }
                continue;
            }
            let (a, c) = g.reserve(&policy);
            reserved.amount_msat += a;
            reserved.count = reserved.count.saturating_add(c);
            spent.amount_msat += u128::from(g.used_msat);
            spent.count = spent.count.saturating_add(g.used_count);
            others.push((m, g));
        }
        engine.set_fleet_shares(reserved, spent);
        Ok(FleetMode::Locked(others))
    }

    /// Under the fleet's lock: settle every other member's share into the fleet's window, so a
    /// payment that fits what they have not spent is decided exactly. Returns whether any had
    /// room left (only then can the decision change).
    pub(super) fn settle_others(
        &self,
        engine: &mut PolicyEngine,
        others: &[(String, Grant)],
    ) -> Result<bool, String> {
        if !others.iter().any(|(_, g)| g.has_room()) {
            return Ok(false);
        }
        let now = self.clock.now();
        for (m, g) in others {
            engine
                .settle_into_fleet(g.used_msat, g.used_count, now)
                .map_err(|e| e.to_string())?;
            self.stage_grant(m, Grant::default())?;
        }
        engine.set_fleet_shares(Totals::default(), Totals::default());
        Ok(true)
    }

    /// Under the fleet's lock, after an approval: carve this member a share of what every
    /// fleet window still allows, a fraction so that each member can hold one.
    pub(super) fn carve_share(&self, engine: &PolicyEngine) -> Result<(), String> {
        let me = self.fleet_member_name().unwrap_or_default();
        let now = self.clock.now();
        let policy = engine.policy();
        let members = policy.fleet_members.len().max(1) as u64;
        let (mut amount, mut count) = (u128::MAX, u64::MAX);
        for l in policy.limits.iter().filter(|l| {
            l.scope == LimitScope::Fleet && l.mode == Mode::Enforce && l.window_secs.is_some()
        }) {
            let t = engine
                .state()
                .totals(&LedgerKey::Fleet, now, l.window_secs.expect("filtered"));
            if let Some(max) = l.max_amount_msat {
                amount = amount
                    .min(u128::from(max).saturating_sub(t.amount_msat) / u128::from(2 * members));
            }
            if let Some(max) = l.max_count {
                count = count.min(max.saturating_sub(t.count) / (2 * members));
            }
        }
        let amount = u64::try_from(amount).unwrap_or(u64::MAX);
        let grant = if amount == 0 || count == 0 || amount == u64::MAX {
            Grant::default()
        } else {
            Grant {
                policy: self.share_policy()?,
                carved_at: now,
                amount_msat: amount,
                count,
                used_msat: 0,
                used_count: 0,
            }
        };
        self.stage_grant(&me, grant)
    }

    /// Within the share, after an approval: count the payment in it.
    pub(super) fn spend_share(&self, mut grant: Grant, amount_msat: u64) -> Result<(), String> {
        let me = self.fleet_member_name().unwrap_or_default();
        grant.used_msat = grant.used_msat.saturating_add(amount_msat);
        grant.used_count = grant.used_count.saturating_add(1);
        self.stage_grant(&me, grant)
    }

    fn stage_grant(&self, member: &str, grant: Grant) -> Result<(), String> {
        self.store
            .put_grant(member, grant.encode())
            .map_err(|e| e.to_string())?;
        if Some(member) == self.fleet_member_name().as_deref() {
            let hint = self.grant_hint.clone();
            self.store.after_apply(move || {
                *hint.lock().unwrap_or_else(|p| p.into_inner()) = Some(grant);
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Grant;

    #[test]
    fn a_share_covers_a_payment_only_under_its_policy_and_within_what_is_left() {
        let g = Grant {
            policy: "p".into(),
            carved_at: 100,
            amount_msat: 1_000,
            count: 2,
            used_msat: 400,
            used_count: 1,
        };
        assert!(g.covers("p", 600, 159, 60));
        assert!(!g.covers("p", 601, 159, 60), "over what is left");
        assert!(
            !g.covers("q", 1, 159, 60),
            "carved under another policy version"
        );
        assert!(
            !g.covers("p", 1, 160, 60),
            "too old: settled, not spent from"
        );
        let spent = Grant {
            used_count: 2,
            ..g.clone()
        };
        assert!(!spent.covers("p", 1, 159, 60), "no payment left");
        assert_eq!(g.reserve("p"), (1_000, 2), "whole, while it may be spent");
        assert_eq!(g.reserve("q"), (400, 1), "what was spent, once it may not");
        assert!(!Grant::default().covers("", 0, 0, 60));
    }
}
