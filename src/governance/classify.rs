//! Which changes between two policies tighten and which loosen.
//!
//! A change tightens only when it can make the signer refuse or hold more, never less: a lower
//! or new limit, a new deny entry or rule, a removed allowlist entry, a higher quorum, a new or
//! stricter approval rule, a shorter expiry, a new time window, a longer loosening delay, a
//! rule switched from warn to enforce. Everything else loosens, including what is merely
//! different (a changed window, scope, key, time of day, quorum membership, a removed admin):
//! when in doubt the change waits the delay, where any admin can veto it. A change that alters
//! no rule at all (comments, layout, the name) is neutral and applies like a tightening.

use crate::policy::units::{format_duration, format_msat};
use crate::policy::Recovery;
use crate::policy::{
    AllowRule, ApprovalRule, ChannelRules, DenyRule, DestinationSet, EmergencyStops, Governance,
    LimitRule, Members, Mode, Policy, Quorum, TimeWindowRule,
};
use std::collections::BTreeSet;

/// Whether one change can only restrict the signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The signer may refuse or hold more, never less.
    Tightens,
    /// The signer may allow more (or the change is not provably tightening).
    Loosens,
    /// No rule changes (the name, comments, layout).
    Neutral,
}

impl Effect {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Tightens => "tightens",
            Effect::Loosens => "loosens",
            Effect::Neutral => "neutral",
        }
    }
}

/// What part of the policy a change touches: who signs, or what is allowed. The recovery
/// key's `replace-admins` may change only the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum About {
    /// A rule: limits, lists, windows, thresholds, delays, the recovery section.
    #[default]
    Rules,
    /// The admins, their keys, and the membership and size of quorums.
    Admins,
}

/// One difference between the policy in force and a proposal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Its effect.
    pub effect: Effect,
    /// What changed, as a sentence.
    pub what: String,
    /// What it touches.
    #[serde(default)]
    pub about: About,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.effect.as_str(), self.what)
    }
}

/// Whether any of `changes` loosens.
pub fn loosens(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.effect == Effect::Loosens)
}

struct Diff(Vec<Change>, About);

impl Diff {
    fn tight(&mut self, what: String) {
        self.0.push(Change {
            effect: Effect::Tightens,
            what,
            about: self.1,
        });
    }
    fn loose(&mut self, what: String) {
        self.0.push(Change {
            effect: Effect::Loosens,
            what,
            about: self.1,
        });
    }
    /// `smaller_is_tighter`: a lower bound restricts more (limits, expiries); otherwise a
    /// higher one does (quorum need, delays).
    fn bound(
        &mut self,
        what: &str,
        old: Option<u64>,
        new: Option<u64>,
        show: fn(u64) -> String,
        smaller_is_tighter: bool,
    ) {
        let text = |v: Option<u64>| v.map(show).unwrap_or_else(|| "none".into());
        if old == new {
            return;
        }
        let tighter = match (old, new) {
            (None, Some(_)) => smaller_is_tighter,
            (Some(_), None) => !smaller_is_tighter,
            (Some(o), Some(n)) => (n < o) == smaller_is_tighter,
            (None, None) => return,
        };
        let line = format!("{what}: {} -> {}", text(old), text(new));
        if tighter {
            self.tight(line)
        } else {
            self.loose(line)
        }
    }
    fn mode(&mut self, what: &str, old: Mode, new: Mode) {
        match (old, new) {
            (Mode::Warn, Mode::Enforce) => self.tight(format!("{what}: warn -> enforce")),
            (Mode::Enforce, Mode::Warn) => self.loose(format!("{what}: enforce -> warn")),
            _ => {}
        }
    }
    /// Entries added to or removed from a destination set; `added_tightens` for deny lists.
    fn set(
        &mut self,
        what: &str,
        old: &DestinationSet,
        new: &DestinationSet,
        added_tightens: bool,
    ) {
        let count = |a: &DestinationSet, b: &DestinationSet| {
            let (an, bn): (BTreeSet<_>, BTreeSet<_>) =
                (a.nodes.iter().collect(), b.nodes.iter().collect());
            let (aa, ba): (BTreeSet<_>, BTreeSet<_>) =
                (a.addresses.iter().collect(), b.addresses.iter().collect());
            an.difference(&bn).count() + aa.difference(&ba).count()
        };
        let added = count(new, old);
        let removed = count(old, new);
        if added > 0 {
            let line = format!("{what}: {added} destination(s) added");
            if added_tightens {
                self.tight(line)
            } else {
                self.loose(line)
            }
        }
        if removed > 0 {
            let line = format!("{what}: {removed} destination(s) removed");
            if added_tightens {
                self.loose(line)
            } else {
                self.tight(line)
            }
        }
    }
    fn quorum(&mut self, what: &str, old: &Quorum, new: &Quorum) {
        let outer = std::mem::replace(&mut self.1, About::Admins);
        self.quorum_inner(what, old, new);
        self.1 = outer;
    }
    fn quorum_inner(&mut self, what: &str, old: &Quorum, new: &Quorum) {
        self.bound(
            &format!("{what} signatures needed"),
            Some(old.need as u64),
            Some(new.need as u64),
            |v| v.to_string(),
            false,
        );
        let (o, n): (BTreeSet<_>, BTreeSet<_>) = (old.of.iter().collect(), new.of.iter().collect());
        for a in n.difference(&o) {
            self.loose(format!("{what}: {a} may now sign"));
        }
        for a in o.difference(&n) {
            self.loose(format!(
                "{what}: {a} no longer signs (one fewer who can say no)"
            ));
        }
    }
}

/// Every difference between `old` (in force) and `new` (proposed), each classified.
pub fn classify(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut d = Diff(Vec::new(), About::Admins);
    admins(&mut d, old, new);
    d.1 = About::Rules;
    keyed(&mut d, &old.deny, &new.deny, |r| &r.tag, "deny", deny);
    keyed(
        &mut d,
        &old.allow,
        &new.allow,
        |r| &r.tag,
        "allowlist",
        allow,
    );
    keyed(&mut d, &old.limits, &new.limits, |r| &r.tag, "limit", limit);
    keyed(
        &mut d,
        &old.time_windows,
        &new.time_windows,
        |r| &r.tag,
        "time window",
        window,
    );
    approvals(&mut d, &old.approvals, &new.approvals);
    governance(&mut d, &old.governance, &new.governance);
    emergency(&mut d, &old.emergency, &new.emergency);
    recovery(&mut d, old.recovery.as_ref(), new.recovery.as_ref());
    channels(&mut d, &old.channels, &new.channels);
    fleet(&mut d, old, new);
    d.bound(
        "onchain max_fee",
        Some(old.onchain.max_fee_msat),
        Some(new.onchain.max_fee_msat),
        format_msat,
        true,
    );
    d.bound(
        "onchain max_feerate",
        Some(old.onchain.max_feerate_per_kw),
        Some(new.onchain.max_feerate_per_kw),
        crate::policy::units::format_feerate,
        true,
    );
    if old.name != new.name {
        d.0.push(Change {
            effect: Effect::Neutral,
            what: format!("name: {:?} -> {:?}", old.name, new.name),
            about: About::Rules,
        });
    }
    d.0
}

/// A node admitted to the fleet may spend from its treasury: admitting one (or binding a name
/// to another node) loosens; removing one tightens, so a compromised node is put out at once.
fn fleet(d: &mut Diff, old: &Policy, new: &Policy) {
    for (name, node) in &new.fleet_members {
        match old.fleet_members.get(name) {
            None => d.loose(format!("fleet member {name} ({node}) admitted")),
            Some(n) if n != node => d.loose(format!(
                "fleet member {name} moved from node {n} to node {node}"
            )),
            Some(_) => {}
        }
    }
    for (name, node) in &old.fleet_members {
        if !new.fleet_members.contains_key(name) {
            d.tight(format!("fleet member {name} ({node}) removed"));
        }
    }
}

fn admins(d: &mut Diff, old: &Policy, new: &Policy) {
    for (name, key) in &new.admins {
        match old.admins.get(name) {
            None => d.loose(format!("admin {name} added")),
            Some(k) if k != key => d.loose(format!("admin {name}'s key changed")),
            Some(_) => {}
        }
    }
    for name in old.admins.keys().filter(|n| !new.admins.contains_key(*n)) {
        d.loose(format!("admin {name} removed (one fewer who can veto)"));
    }
}

/// Rules matched by tag: a new rule of a restricting kind (deny, limit, time window, approval)
/// tightens and its removal loosens; an allowlist is the other way round. Rules kept under
/// the same tag are compared field by field.
fn keyed<R>(
    d: &mut Diff,
    old: &[R],
    new: &[R],
    tag: fn(&R) -> &String,
    kind: &str,
    compare: fn(&mut Diff, &str, &R, &R),
) {
    let restricting = kind != "allowlist";
    for n in new {
        match old.iter().find(|o| tag(o) == tag(n)) {
            Some(o) => compare(d, &format!("{kind} {}", tag(n)), o, n),
            None if restricting => d.tight(format!("{kind} {} added", tag(n))),
            None => d.loose(format!("{kind} {} added", tag(n))),
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| tag(n) == tag(o))) {
        if restricting {
            d.loose(format!("{kind} {} removed", tag(o)))
        } else {
            d.tight(format!("{kind} {} removed", tag(o)))
        }
    }
}

fn deny(d: &mut Diff, what: &str, o: &DenyRule, n: &DenyRule) {
    d.mode(what, o.mode, n.mode);
    d.set(what, &o.destinations, &n.destinations, true);
    members(d, what, &o.members, &n.members, Diff::tight);
}

/// A restricting rule's `members`: applying on every member it did and more (`more`, which
/// tightens) or on fewer (loosens: the nodes it leaves are no longer held by it).
fn members(d: &mut Diff, what: &str, o: &Members, n: &Members, more: fn(&mut Diff, String)) {
    let label = |m: &Members| match m {
        Members::All => "every member".to_string(),
        Members::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
    };
    let line = format!("{what} members: {} -> {}", label(o), label(n));
    match (o, n) {
        _ if o == n => {}
        (Members::Only(_), Members::All) => more(d, line),
        (Members::Only(a), Members::Only(b)) if b.is_superset(a) => more(d, line),
        _ => d.loose(line),
    }
}

fn allow(d: &mut Diff, what: &str, o: &AllowRule, n: &AllowRule) {
    d.set(what, &o.destinations, &n.destinations, false);
}

fn limit(d: &mut Diff, what: &str, o: &LimitRule, n: &LimitRule) {
    d.mode(what, o.mode, n.mode);
    d.bound(
        &format!("{what} amount"),
        o.max_amount_msat,
        n.max_amount_msat,
        format_msat,
        true,
    );
    d.bound(
        &format!("{what} count"),
        o.max_count,
        n.max_count,
        |v| v.to_string(),
        true,
    );
    if o.window_secs != n.window_secs {
        d.loose(format!(
            "{what} window: {} -> {}",
            o.window_secs
                .map(format_duration)
                .unwrap_or_else(|| "per payment".into()),
            n.window_secs
                .map(format_duration)
                .unwrap_or_else(|| "per payment".into())
        ));
    }
    if o.scope != n.scope {
        d.loose(format!("{what} scope changed"));
    }
    members(d, what, &o.members, &n.members, Diff::tight);
}

fn window(d: &mut Diff, what: &str, o: &TimeWindowRule, n: &TimeWindowRule) {
    d.mode(what, o.mode, n.mode);
    if (o.above_msat, &o.days, o.from_minute, o.to_minute)
        != (n.above_msat, &n.days, n.from_minute, n.to_minute)
    {
        d.loose(format!("{what}: its hours, days or threshold changed"));
    }
    members(d, what, &o.members, &n.members, Diff::tight);
}

/// Whether quorum `a` is at least as hard to reach as `b`: as many signatures, from no one
/// outside `b`'s members.
fn at_least_as_strict(a: &Quorum, b: &Quorum) -> bool {
    a.need >= b.need && a.of.iter().all(|m| b.of.contains(m))
}

/// Approval rules are tried in file order and the first that matches names the quorum, so a
/// rule that matches more payments takes them from the rules after it. Such a change tightens
/// only when its quorum is at least as strict as every later rule's; a reorder loosens.
fn approvals(d: &mut Diff, old: &[ApprovalRule], new: &[ApprovalRule]) {
    let order_old: Vec<&String> = old
        .iter()
        .map(|r| &r.tag)
        .filter(|t| new.iter().any(|n| &n.tag == *t))
        .collect();
    let order_new: Vec<&String> = new
        .iter()
        .map(|r| &r.tag)
        .filter(|t| old.iter().any(|o| &o.tag == *t))
        .collect();
    if order_old != order_new {
        d.loose("approval rules reordered (the first matching rule's quorum decides)".into());
    }
    for (i, n) in new.iter().enumerate() {
        let safe = new[i + 1..]
            .iter()
            .all(|later| at_least_as_strict(&n.quorum, &later.quorum));
        let what = format!("approval rule {}", n.tag);
        match old.iter().find(|o| o.tag == n.tag) {
            Some(o) => approval(d, &what, o, n, safe),
            None if safe => d.tight(format!("{what} added")),
            None => d.loose(format!(
                "{what} added before a rule with a stricter quorum, so it may take payments from it"
            )),
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| n.tag == o.tag)) {
        d.loose(format!("approval rule {} removed", o.tag));
    }
}

fn approval(d: &mut Diff, what: &str, o: &ApprovalRule, n: &ApprovalRule, safe: bool) {
    // Matching more payments tightens only if the rules after it are no stricter.
    let more = |d: &mut Diff, line: String| {
        if safe {
            d.tight(line)
        } else {
            d.loose(format!(
                "{line}, taking payments from a later rule with a stricter quorum"
            ))
        }
    };
    match (o.mode, n.mode) {
        (Mode::Warn, Mode::Enforce) => more(d, format!("{what}: warn -> enforce")),
        (Mode::Enforce, Mode::Warn) => d.loose(format!("{what}: enforce -> warn")),
        _ => {}
    }
    // A lower threshold holds more payments; no threshold (only unlisted destinations) holds
    // fewer than any threshold.
    let above = |r: &ApprovalRule| r.above_msat.unwrap_or(u64::MAX);
    if above(n) < above(o) {
        more(
            d,
            format!(
                "{what} threshold: {} -> {}",
                format_msat(above(o)),
                format_msat(above(n))
            ),
        );
    } else if above(n) > above(o) {
        d.loose(format!(
            "{what} threshold: {} -> {}",
            format_msat(above(o)),
            format_msat(above(n))
        ));
    }
    match (o.unlisted_destination, n.unlisted_destination) {
        (false, true) => more(d, format!("{what}: now also holds unlisted destinations")),
        (true, false) => d.loose(format!("{what}: no longer holds unlisted destinations")),
        _ => {}
    }
    d.quorum(what, &o.quorum, &n.quorum);
    d.bound(
        &format!("{what} expiry"),
        Some(o.expiry_secs),
        Some(n.expiry_secs),
        format_duration,
        true,
    ); // Holding payments on more members takes them from later rules there, as above.
    let more = if safe { Diff::tight } else { Diff::loose };
    members(d, what, &o.members, &n.members, more);
}

fn governance(d: &mut Diff, o: &Governance, n: &Governance) {
    d.quorum("governance quorum", &o.quorum, &n.quorum);
    d.bound(
        "governance loosen_delay",
        Some(o.loosen_delay_secs),
        Some(n.loosen_delay_secs),
        format_duration,
        false,
    );
    d.bound(
        "governance expiry",
        Some(o.expiry_secs),
        Some(n.expiry_secs),
        format_duration,
        true,
    );
}

/// A recovery key is a power over the signer: adding one, changing it, shortening its delay or
/// allowing it more actions loosens; the reverse tightens.
fn recovery(d: &mut Diff, o: Option<&Recovery>, n: Option<&Recovery>) {
    match (o, n) {
        (None, Some(_)) => d.loose("recovery key added".into()),
        (Some(_), None) => d.tight("recovery key removed".into()),
        (Some(o), Some(n)) => {
            if o.key != n.key {
                d.loose("recovery key changed".into());
            }
            d.bound(
                "recovery delay",
                Some(o.delay_secs),
                Some(n.delay_secs),
                format_duration,
                false,
            );
            d.bound(
                "recovery delay_blocks",
                Some(u64::from(o.delay_blocks)),
                Some(u64::from(n.delay_blocks)),
                |v| format!("{v} blocks"),
                false,
            );
            match (&o.destination, &n.destination) {
                (None, Some(_)) => d.loose("recovery destination added".into()),
                (Some(_), None) => d.tight("recovery destination removed".into()),
                (Some(a), Some(b)) if a != b => d.loose("recovery destination changed".into()),
                _ => {}
            }
            for a in n.actions.iter().filter(|a| !o.actions.contains(a)) {
                d.loose(format!("recovery may now {}", a.as_str()));
            }
            for a in o.actions.iter().filter(|a| !n.actions.contains(a)) {
                d.tight(format!("recovery may no longer {}", a.as_str()));
            }
        }
        (None, None) => {}
    }
}

/// A stop that appears tightens (the signer may freeze where it did not), one that goes away
/// loosens, and a changed threshold is judged like a limit.
fn emergency(d: &mut Diff, o: &EmergencyStops, n: &EmergencyStops) {
    for (what, ob, nb) in [
        ("emergency_stop refusals", o.refusals, n.refusals),
        (
            "emergency_stop auth_failures",
            o.auth_failures,
            n.auth_failures,
        ),
    ] {
        match (ob, nb) {
            (None, Some(_)) => d.tight(format!("{what} added")),
            (Some(_), None) => d.loose(format!("{what} removed")),
            (Some(a), Some(b)) if a != b => {
                // Fewer events in a longer window trips sooner; anything else may trip later.
                if b.count <= a.count && b.within_secs >= a.within_secs {
                    d.tight(format!("{what}: trips sooner"))
                } else {
                    d.loose(format!("{what}: may trip later"))
                }
            }
            _ => {}
        }
    }
    match (o.audit_failure, n.audit_failure) {
        (false, true) => d.tight("emergency_stop audit_failure added".into()),
        (true, false) => d.loose("emergency_stop audit_failure removed".into()),
        _ => {}
    }
    let percent = |p: Option<u8>| p.map(u64::from);
    d.bound(
        "emergency_stop window_percent",
        percent(o.window_percent),
        percent(n.window_percent),
        |v| format!("{v} %"),
        true,
    );
}

/// Channel limits are judged like payment limits; allowing private channels loosens, and a
/// liquidity alert changes what is reported, not what is signed.
fn channels(d: &mut Diff, o: &ChannelRules, n: &ChannelRules) {
    let sat = |v: u64| format_msat(v);
    let count = |v: u64| v.to_string();
    for (what, ov, nv, show) in [
        (
            "channels max_channel_size",
            o.max_channel_size_msat,
            n.max_channel_size_msat,
            sat as fn(u64) -> String,
        ),
        (
            "channels max_total_capacity",
            o.max_total_capacity_msat,
            n.max_total_capacity_msat,
            sat,
        ),
        (
            "channels max_per_peer",
            o.max_per_peer_msat,
            n.max_per_peer_msat,
            sat,
        ),
        (
            "channels max_channels",
            o.max_channels,
            n.max_channels,
            count,
        ),
        (
            "channels max_htlcs_in_flight",
            o.max_htlcs_in_flight,
            n.max_htlcs_in_flight,
            count,
        ),
        (
            "channels max_in_flight",
            o.max_in_flight_msat,
            n.max_in_flight_msat,
            sat,
        ),
    ] {
        d.bound(what, ov, nv, show, true);
    }
    match (o.allow_private, n.allow_private) {
        (true, false) => d.tight("channels allow_private: true -> false".into()),
        (false, true) => d.loose("channels allow_private: false -> true".into()),
        _ => {}
    }
    if o.min_outbound_percent != n.min_outbound_percent {
        d.0.push(Change {
            effect: Effect::Neutral,
            what: format!(
                "channels min_outbound: {:?} -> {:?} (an alert only)",
                o.min_outbound_percent, n.min_outbound_percent
            ),
            about: About::Rules,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    const KEYS: &str = r#"
[admins]
alice = { pubkey = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828" }
bob = { pubkey = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436" }
carol = { pubkey = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e" }
"#;

    fn policy(rules: &str) -> Policy {
        parse_policy(&format!("version = 1\n{KEYS}\n{rules}")).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const BASE: &str = r#"
[[limit]]
tag = "daily"
window = "24h"
max_amount = "1000000 sat"

[[approval]]
tag = "large"
above = "100000 sat"
quorum = { need = 2, of = ["alice", "bob", "carol"] }
expiry = "1h"

[[allowlist]]
tag = "known"
payees = ["02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828"]
"#;

    fn effects(new: &str) -> Vec<Effect> {
        classify(&policy(BASE), &policy(new))
            .into_iter()
            .map(|c| c.effect)
            .collect()
    }

    #[test]
    fn a_lower_limit_a_higher_quorum_and_a_shorter_expiry_tighten() {
        let t = BASE
            .replace("1000000 sat", "500000 sat")
            .replace("need = 2", "need = 3")
            .replace("\"1h\"", "\"30m\"");
        let changes = classify(&policy(BASE), &policy(&t));
        // The governance quorum is derived from the approval quorum here, so it rises too.
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(
            changes
                .iter()
                .any(|c| c.what == "governance quorum signatures needed: 2 -> 3"),
            "{changes:?}"
        );
        assert!(
            changes.iter().all(|c| c.effect == Effect::Tightens),
            "{changes:?}"
        );
        assert!(!loosens(&changes));
    }

    #[test]
    fn a_raised_limit_a_lower_quorum_a_new_payee_and_a_removed_rule_each_loosen() {
        for (from, to) in [
            ("1000000 sat", "2000000 sat"),
            ("need = 2", "need = 1"),
            (
                "payees = [\"02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828\"]",
                "payees = [\"02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828\", \"022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e\"]",
            ),
            ("\"1h\"", "\"2h\""),
            ("above = \"100000 sat\"", "above = \"200000 sat\""),
        ] {
            let changed = BASE.replace(from, to);
            assert_ne!(changed, BASE);
            let e = effects(&changed);
            // A lower approval quorum lowers the derived governance quorum as well.
            assert!(
                !e.is_empty() && e.iter().all(|e| *e == Effect::Loosens),
                "{from} -> {to}: {e:?}"
            );
        }
        let without_limit = BASE.replace(
            "[[limit]]\ntag = \"daily\"\nwindow = \"24h\"\nmax_amount = \"1000000 sat\"\n",
            "",
        );
        assert_eq!(effects(&without_limit), vec![Effect::Loosens]);
    }

    #[test]
    fn a_higher_fee_bound_loosens_and_a_lower_one_tightens() {
        // The defaults are 200,000 sat and 100 sat/vB.
        assert_eq!(
            effects(&format!("{BASE}\n[onchain]\nmax_fee = \"500_000 sat\"\n")),
            vec![Effect::Loosens]
        );
        assert_eq!(
            effects(&format!("{BASE}\n[onchain]\nmax_feerate = \"20 sat/vB\"\n")),
            vec![Effect::Tightens]
        );
        let c = classify(
            &policy(BASE),
            &policy(&format!(
                "{BASE}\n[onchain]\nmax_feerate = \"200 sat/vB\"\n"
            )),
        );
        assert_eq!(c[0].what, "onchain max_feerate: 100 sat/vB -> 200 sat/vB");
    }

    #[test]
    fn a_new_deny_entry_and_a_removed_allowlist_entry_tighten() {
        let deny = format!(
            "{BASE}\n[[deny]]\ntag = \"blocked\"\npayees = [\"022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e\"]\n"
        );
        assert_eq!(effects(&deny), vec![Effect::Tightens]);
        let unlisted = BASE.replace(
            "payees = [\"02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828\"]",
            "payees = []",
        );
        assert_eq!(effects(&unlisted), vec![Effect::Tightens]);
    }

    #[test]
    fn a_new_admin_and_a_changed_window_loosen_even_beside_a_tightening() {
        let t = BASE
            .replace("window = \"24h\"", "window = \"1h\"")
            .replace("1000000 sat", "10 sat");
        let changes = classify(&policy(BASE), &policy(&t));
        assert!(
            loosens(&changes),
            "a changed window is not provably tighter: {changes:?}"
        );
        let with_dave = format!(
            "version = 1\n{KEYS}dave = {{ address = \"bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq\" }}\n{BASE}"
        );
        let changes = classify(&policy(BASE), &parse_policy(&with_dave).unwrap());
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].effect, Effect::Loosens);
        assert!(changes[0].what.contains("admin dave added"), "{changes:?}");
    }

    #[test]
    fn a_new_approval_rule_before_a_stricter_one_or_a_reorder_loosens() {
        let strict = r#"
[[approval]]
tag = "large"
above = "100000 sat"
quorum = { need = 3, of = ["alice", "bob", "carol"] }
"#;
        let quick = r#"
[[approval]]
tag = "quick"
above = "50000 sat"
quorum = { need = 1, of = ["alice"] }
"#;
        let old = policy(strict);
        // First in the file: it takes every payment above 100,000 sat from the 3-of-3 rule.
        let before = classify(&old, &policy(&format!("{quick}{strict}")));
        assert!(loosens(&before), "{before:?}");
        // Last: it only holds payments no rule held before.
        let after = classify(&old, &policy(&format!("{strict}{quick}")));
        assert!(
            after
                .iter()
                .any(|c| c.what == "approval rule quick added" && c.effect == Effect::Tightens),
            "{after:?}"
        );
        // Swapping two kept rules changes which quorum decides.
        let two = classify(
            &policy(&format!("{strict}{quick}")),
            &policy(&format!("{quick}{strict}")),
        );
        assert!(two.iter().any(|c| c.what.contains("reordered")), "{two:?}");
        // A weaker first rule that lowers its threshold takes payments from the stricter one.
        let lower = classify(
            &policy(&format!("{quick}{strict}")),
            &policy(&format!(
                "{}{strict}",
                quick.replace("50000 sat", "10000 sat")
            )),
        );
        assert!(loosens(&lower), "{lower:?}");
    }

    #[test]
    fn comments_and_layout_change_nothing_and_the_same_policy_has_no_changes() {
        assert!(classify(&policy(BASE), &policy(BASE)).is_empty());
        let commented = format!("# reviewed 2026-12-01\n{BASE}");
        assert!(classify(&policy(BASE), &policy(&commented)).is_empty());
    }

    #[test]
    fn admitting_a_fleet_member_or_moving_one_loosens_and_removing_one_tightens() {
        let a = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436";
        let b = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e";
        let two = policy(&format!(
            "[fleet.members]\nnode-a = \"{a}\"\nnode-b = \"{b}\"\n"
        ));
        let one = policy(&format!("[fleet.members]\nnode-a = \"{a}\"\n"));
        let moved = policy(&format!("[fleet.members]\nnode-a = \"{b}\"\n"));
        let what = |o: &Policy, n: &Policy| -> Vec<String> {
            classify(o, n).iter().map(|c| c.to_string()).collect()
        };
        assert_eq!(
            what(&one, &two),
            vec![format!("loosens: fleet member node-b ({b}) admitted")]
        );
        assert_eq!(
            what(&two, &one),
            vec![format!("tightens: fleet member node-b ({b}) removed")]
        );
        assert_eq!(
            what(&one, &moved),
            vec![format!(
                "loosens: fleet member node-a moved from node {a} to node {b}"
            )]
        );
    }

    #[test]
    fn a_rule_extended_to_more_fleet_members_tightens_and_narrowed_to_fewer_loosens() {
        let a = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436";
        let b = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e";
        let with = |members: &str| {
            policy(&format!(
                "[fleet.members]\nnode-a = \"{a}\"\nnode-b = \"{b}\"\n\
                 [[limit]]\ntag = \"daily\"\nwindow = \"24h\"\nmax_amount = \"1 btc\"\n{members}\
                 [[approval]]\ntag = \"big\"\nabove = \"0.1 btc\"\nquorum = {{ need = 2, of = [\"alice\", \"bob\"] }}\n{members}"
            ))
        };
        let (every, only_a, both) = (
            with(""),
            with("members = [\"node-a\"]\n"),
            with(&format!("members = [\"node-a\", \"{b}\"]\n")),
        );
        let what = |o: &Policy, n: &Policy| -> Vec<String> {
            classify(o, n).iter().map(|c| c.to_string()).collect()
        };
        assert_eq!(
            what(&every, &only_a),
            vec![
                "loosens: limit daily members: every member -> node-a",
                "loosens: approval rule big members: every member -> node-a"
            ]
        );
        assert_eq!(
            what(&only_a, &both),
            vec![
                "tightens: limit daily members: node-a -> node-a, node-b",
                "tightens: approval rule big members: node-a -> node-a, node-b"
            ]
        );
        assert_eq!(
            what(&only_a, &every),
            vec![
                "tightens: limit daily members: node-a -> every member",
                "tightens: approval rule big members: node-a -> every member"
            ]
        );
        assert!(what(&both, &both).is_empty());
    }
}
