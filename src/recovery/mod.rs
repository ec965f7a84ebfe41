//! Emergency controls: the freeze, and the conditions that freeze the signer by themselves.
//!
//! A freeze stops every new payment and on-chain spend at once: the core refuses them with
//! `warden-frozen` (an answer, never a fatal error on the payment path). Any single admin can
//! freeze; an emergency stop declared in the policy (`[emergency_stop]`) freezes by itself when
//! its condition is met, naming itself in the reason. The freeze is kept in the state database
//! (namespace `recovery`, key `freeze`), so it survives restarts; lifting it needs the
//! governance quorum (an approval request of subject "unfreeze", bound to this very freeze by
//! its id). Channel operations that protect funds never pass through the payment approver, so
//! VLS keeps signing them while frozen.

use crate::policy::units::format_duration;
use crate::policy::EmergencyStops;
use crate::store::{Namespace, Store, StoreError};
use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

const FREEZE_KEY: &[u8] = b"freeze";

/// The signer is frozen: since when, by whom, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeState {
    /// When it froze (Warden's time).
    pub since: u64,
    /// An admin's name, or `emergency stop <condition>`.
    pub by: String,
    /// Why, as given or as the condition states it.
    pub reason: String,
    /// Random, hex: two freezes never share an id, even by the same hand in the same second.
    #[serde(default)]
    pub nonce: String,
    /// The recovery key's `sweep` is in force: on-chain spends to the recovery destination
    /// pass, and nothing else does.
    #[serde(default)]
    pub sweep: bool,
    /// In a fleet: the one member this freeze stops (`None`: the whole fleet, or the one
    /// wardend that is not in a fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

impl FreezeState {
    /// The freeze's id, which an unfreeze request signs: it lifts this freeze and no other
    /// (`sha256("warden/freeze/v1" || u64be since || (u32be len || bytes) of by, reason and
    /// nonce)`).
    pub fn id(&self) -> [u8; 32] {
        let mut e = sha256::Hash::engine();
        e.input(b"warden/freeze/v1");
        e.input(&self.since.to_be_bytes());
        for s in [&self.by, &self.reason, &self.nonce] {
            e.input(&(s.len() as u32).to_be_bytes());
            e.input(s.as_bytes());
        }
        sha256::Hash::from_engine(e).to_byte_array()
    }

    /// A freeze at `since` by `by`, with a fresh nonce.
    pub fn new(since: u64, by: &str, reason: &str) -> Result<Self, StoreError> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Io {
            op: "draw a freeze nonce",
            detail: e.to_string(),
        })?;
        Ok(FreezeState {
            since,
            by: by.to_string(),
            reason: reason.to_string(),
            nonce: hex::encode(nonce),
            sweep: false,
            member: None,
        })
    }
}

/// The freeze as stored: read and written in the open transaction (or one of its own).
#[derive(Debug, Clone)]
pub struct FreezeStore {
    store: Store,
}

impl FreezeStore {
    /// The freeze kept in `store`.
    pub fn new(store: &Store) -> Self {
        FreezeStore {
            store: store.clone(),
        }
    }

    /// The freeze in force for everyone (the whole fleet, or the one wardend), if any.
    pub fn get(&self) -> Result<Option<FreezeState>, StoreError> {
        self.get_at(None)
    }

    /// Where the freeze of `member` (`None`: everyone) is kept.
    fn key(member: Option<&str>) -> Vec<u8> {
        match member {
            None => FREEZE_KEY.to_vec(),
            Some(m) => [FREEZE_KEY, b"/", m.as_bytes()].concat(),
        }
    }

    /// The freeze in force for everyone and, with `member`, the one on that fleet member
    /// alone: the first that exists (everyone's wins, as it stops more).
    pub fn in_force_for(&self, member: Option<&str>) -> Result<Option<FreezeState>, StoreError> {
        match (self.get()?, member) {
            (Some(f), _) => Ok(Some(f)),
            (None, Some(m)) => self.get_at(Some(m)),
            (None, None) => Ok(None),
        }
    }

    /// The freeze kept for `member` (`None`: everyone's), if any.
    pub fn get_at(&self, member: Option<&str>) -> Result<Option<FreezeState>, StoreError> {
        self.store
            .get(Namespace::Recovery, &Self::key(member))?
            .map(|v| {
                serde_json::from_slice::<Option<FreezeState>>(&v).map_err(|e| StoreError::Corrupt {
                    key: "recovery/freeze".into(),
                    detail: e.to_string(),
                })
            })
            .transpose()
            .map(Option::flatten)
    }

    /// Freeze (staged in the open transaction, or committed on its own).
    pub fn put(&self, state: &FreezeState) -> Result<(), StoreError> {
        let json = serde_json::to_vec(state).map_err(|e| StoreError::Io {
            op: "encode the freeze",
            detail: e.to_string(),
        })?;
        self.store.write(|| {
            self.store.put(
                Namespace::Recovery,
                Self::key(state.member.as_deref()),
                json,
            )
        })
    }

    /// Lift the freeze. Written as a `null` freeze rather than deleted: the other members of
    /// a fleet learn what changed from the rows written since their last look, and a deleted
    /// row is not one.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.clear_at(None)
    }

    /// Lift the freeze kept for `member` (`None`: everyone's), as [`FreezeStore::clear`] does.
    pub fn clear_at(&self, member: Option<&str>) -> Result<(), StoreError> {
        self.store.write(|| {
            self.store
                .put(Namespace::Recovery, Self::key(member), b"null".to_vec())
        })
    }
}

/// A recovery action's parameters: their hash as is for the whole fleet (or one wardend), or
/// bound to the one fleet member the action applies to, so the recovery key's signature covers
/// the member, and wardenctl checks what it shows against what is signed.
pub fn params_for(params: [u8; 32], member: Option<&str>) -> [u8; 32] {
    match member {
        None => params,
        Some(m) => {
            let mut e = sha256::Hash::engine();
            e.input(b"warden/recovery-member/v1");
            e.input(&params);
            e.input(m.as_bytes());
            sha256::Hash::from_engine(e).to_byte_array()
        }
    }
}

/// A condition of `[emergency_stop]` that was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The condition's name: "refusals", "auth_failures", "audit_failure", "window_percent".
    pub condition: &'static str,
    /// What happened, against the policy's threshold.
    pub reason: String,
}

/// Counts what the emergency stops watch, in sliding windows. Pure: the caller passes the time
/// and the policy's conditions, and freezes on a trigger.
#[derive(Debug, Default)]
pub struct EmergencyWatch {
    refusals: VecDeque<u64>,
    auth_failures: VecDeque<u64>,
}

fn burst(
    times: &mut VecDeque<u64>,
    now: u64,
    limit: Option<crate::policy::Burst>,
    condition: &'static str,
    what: &str,
) -> Option<Trigger> {
    let Some(b) = limit else {
        times.clear();
        return None;
    };
    times.push_back(now);
    while times
        .front()
        .is_some_and(|t| now.saturating_sub(*t) >= b.within_secs)
    {
        times.pop_front();
    }
    // Never more than the threshold plus one kept: memory stays bounded under a flood.
    while times.len() as u64 > b.count + 1 {
        times.pop_front();
    }
    // Not cleared on a trip: if the freeze's transaction is lost, the next event trips again.
    // Lifting the freeze starts the count afresh.
    (times.len() as u64 > b.count).then(|| {
        let n = times.len();
        Trigger {
            condition,
            reason: format!(
                "more than {} {what} within {} ({n} counted; [emergency_stop] {condition} = {{ count = {}, within = \"{}\" }})",
                b.count,
                format_duration(b.within_secs),
                b.count,
                format_duration(b.within_secs)
            ),
        }
    })
}

impl EmergencyWatch {
    /// A payment was refused at `now`.
    pub fn refusal(&mut self, now: u64, stops: &EmergencyStops) -> Option<Trigger> {
        burst(
            &mut self.refusals,
            now,
            stops.refusals,
            "refusals",
            "payments refused",
        )
    }

    /// An admin API authentication failed at `now`.
    pub fn auth_failure(&mut self, now: u64, stops: &EmergencyStops) -> Option<Trigger> {
        burst(
            &mut self.auth_failures,
            now,
            stops.auth_failures,
            "auth_failures",
            "admin API authentication failures",
        )
    }

    /// The audit log or the HSM failed.
    pub fn audit_failure(&mut self, detail: &str, stops: &EmergencyStops) -> Option<Trigger> {
        stops.audit_failure.then(|| Trigger {
            condition: "audit_failure",
            reason: format!(
                "an audit or HSM failure ({detail}); [emergency_stop] audit_failure = true"
            ),
        })
    }

    /// A window's use after an approval: `fraction` of its limit.
    pub fn window(&mut self, tag: &str, fraction: f64, stops: &EmergencyStops) -> Option<Trigger> {
        let percent = stops.window_percent?;
        (fraction * 100.0 >= f64::from(percent)).then(|| Trigger {
            condition: "window_percent",
            reason: format!(
                "window {tag} is at {:.0} % of its limit; [emergency_stop] window_percent = {percent}",
                fraction * 100.0
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Burst;

    fn stops() -> EmergencyStops {
        EmergencyStops {
            refusals: Some(Burst {
                count: 3,
                within_secs: 60,
            }),
            auth_failures: None,
            audit_failure: true,
            window_percent: Some(90),
        }
    }

    #[test]
    fn more_refusals_than_the_count_within_the_window_trip_and_older_ones_do_not_count() {
        let mut w = EmergencyWatch::default();
        let s = stops();
        for t in [0, 10, 20] {
            assert_eq!(w.refusal(t, &s), None);
        }
        // The first refusal is 60 s old at t = 60: it no longer counts.
        assert_eq!(w.refusal(60, &s), None);
        let t = w.refusal(61, &s).expect("4 refusals within 60 s");
        assert_eq!(t.condition, "refusals");
        assert!(
            t.reason.contains("more than 3 payments refused within 1m"),
            "{}",
            t.reason
        );
        assert!(
            w.refusal(62, &s).is_some(),
            "still over: a freeze lost with its transaction trips again"
        );
    }

    #[test]
    fn conditions_the_policy_does_not_declare_never_trip() {
        let mut w = EmergencyWatch::default();
        let none = EmergencyStops::default();
        for t in 0..1_000 {
            assert_eq!(w.refusal(t, &none), None);
            assert_eq!(w.auth_failure(t, &none), None);
        }
        assert_eq!(w.audit_failure("token removed", &none), None);
        assert_eq!(w.window("daily", 1.0, &none), None);
        let s = stops();
        assert!(w
            .audit_failure("token removed", &s)
            .unwrap()
            .reason
            .contains("token removed"));
        assert_eq!(w.window("daily", 0.89, &s), None);
        assert_eq!(
            w.window("daily", 0.9, &s).unwrap().condition,
            "window_percent"
        );
    }

    #[test]
    fn a_freeze_id_covers_when_who_and_why() {
        let f = FreezeState::new(1, "alice", "incident").unwrap();
        assert_ne!(
            FreezeState::new(1, "alice", "incident").unwrap().id(),
            f.id(),
            "the same hand, second and reason is still another freeze"
        );
        let mut g = f.clone();
        g.since = 2;
        let mut h = f.clone();
        h.by = "bob".into();
        let mut i = f.clone();
        i.reason = "other".into();
        for other in [g, h, i] {
            assert_ne!(other.id(), f.id());
        }
    }
}
