//! A plain-language account of what a policy allows, for `wardenctl policy explain`: what a
//! compliance officer signs off on before the file is proposed.

use super::model::*;
use super::units::{format_duration, format_msat};

fn mode_note(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "",
        Mode::Warn => " (warn only: reported, never refused)",
    }
}

fn scope_text(scope: &LimitScope) -> String {
    match scope {
        LimitScope::Node => "all payments together".into(),
        LimitScope::EachDestination => "each destination separately".into(),
        LimitScope::Fleet => "all payments of every member of the fleet together".into(),
        LimitScope::Destinations(set) => {
            format!("payments to {} listed destinations together", set.len())
        }
    }
}

/// The explanation, one line per statement.
pub fn explain(policy: &Policy) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "Policy {}(hash {}), version 1.",
        policy
            .name
            .as_deref()
            .map(|n| format!("\"{n}\" "))
            .unwrap_or_default(),
        policy.hash_hex()
    ));
    out.push(format!(
        "{} admins: {}.",
        policy.admins.len(),
        policy.admins.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    if !policy.fleet_members.is_empty() {
        out.push(format!(
            "A fleet of {} nodes, one policy: {}. Limits with scope \"fleet\" count all of them together; every other rule applies to each node on its own, and a rule that names fleet members applies on those nodes only.",
            policy.fleet_members.len(),
            policy
                .fleet_members
                .iter()
                .map(|(n, id)| format!("{n} ({id})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push("Rules apply in this order: deny lists, limits, time windows, approval rules; a deny list always wins.".into());
    for r in &policy.deny {
        out.push(format!(
            "- [{}] refuses any payment to {} node(s) and {} address(es){}{}.",
            r.tag,
            r.destinations.nodes.len(),
            r.destinations.addresses.len(),
            mode_note(r.mode),
            r.members.note()
        ));
    }
    for l in &policy.limits {
        let what = match (l.max_amount_msat, l.max_count) {
            (Some(a), Some(c)) => format!("at most {} and {c} payments", format_msat(a)),
            (Some(a), None) => format!("at most {}", format_msat(a)),
            (None, Some(c)) => format!("at most {c} payments"),
            (None, None) => "nothing".into(),
        };
        let when = match l.window_secs {
            None => "per payment".into(),
            Some(w) => format!("in any rolling {}", format_duration(w)),
        };
        out.push(format!(
            "- [{}] allows {what} {when}, counting {}{}{}.",
            l.tag,
            scope_text(&l.scope),
            mode_note(l.mode),
            l.members.note()
        ));
    }
    for t in &policy.time_windows {
        let which = t
            .above_msat
            .map(|a| format!("payments above {}", format_msat(a)))
            .unwrap_or_else(|| "all payments".into());
        let days: Vec<&str> = t.days.iter().map(|d| WEEKDAYS[*d as usize]).collect();
        out.push(format!(
            "- [{}] allows {which} only on {} between {:02}:{:02} and {:02}:{:02} UTC{}{}.",
            t.tag,
            days.join(", "),
            t.from_minute / 60,
            t.from_minute % 60,
            t.to_minute / 60,
            t.to_minute % 60,
            mode_note(t.mode),
            t.members.note()
        ));
    }
    for a in &policy.approvals {
        let mut when = Vec::new();
        if let Some(above) = a.above_msat {
            when.push(format!("above {}", format_msat(above)));
        }
        if a.unlisted_destination {
            when.push("to a destination on no allowlist".to_string());
        }
        out.push(format!(
            "- [{}] holds payments {} until {} of {} approve (requests expire after {}){}{}.",
            a.tag,
            when.join(" or "),
            a.quorum.need,
            a.quorum.of.join(", "),
            format_duration(a.expiry_secs),
            mode_note(a.mode),
            a.members.note()
        ));
    }
    for a in &policy.allow {
        out.push(format!(
            "- [{}] lists {} node(s) and {} address(es) as known destinations (limits still apply to them).",
            a.tag,
            a.destinations.nodes.len(),
            a.destinations.addresses.len()
        ));
    }
    out.push("Anything not refused or held above is approved.".into());
    out.extend(channel_lines(&policy.channels));
    let g = &policy.governance;
    let source = if g.quorum_declared {
        "declared in [governance]"
    } else if policy.approvals.iter().any(|a| a.quorum.need > 0) {
        "the largest [[approval]] quorum, as no [governance] quorum is declared"
    } else {
        "every declared admin, as neither [governance] nor [[approval]] names a quorum"
    };
    if g.quorum.need == 0 {
        out.push("Policy changes: none can be approved (no admin is declared); a new policy needs a new data directory.".into());
    } else {
        out.push(format!(
            "Policy changes need {} of {} ({source}); proposals expire after {}. A change that only tightens takes effect when its quorum signs; one that loosens anything waits {} more, and any single admin can veto it meanwhile.",
            g.quorum.need,
            g.quorum.of.join(", "),
            format_duration(g.expiry_secs),
            format_duration(g.loosen_delay_secs),
        ));
    }
    out.join("\n")
}

/// `[channels]` in sentences, one per declared limit; nothing when none is.
fn channel_lines(c: &ChannelRules) -> Vec<String> {
    use crate::tags;
    let mut out = Vec::new();
    let mut line = |tag: &str, text: String| out.push(format!("- [{tag}] {text}."));
    if let Some(m) = c.max_channel_size_msat {
        line(
            tags::CHANNEL_SIZE,
            format!(
                "refuses a channel (opened or accepted) larger than {}",
                format_msat(m)
            ),
        );
    }
    if let Some(m) = c.max_total_capacity_msat {
        line(
            tags::CHANNEL_TOTAL,
            format!(
                "refuses a channel that would bring the capacity in all channels above {}",
                format_msat(m)
            ),
        );
    }
    if let Some(m) = c.max_per_peer_msat {
        line(
            tags::CHANNEL_PEER,
            format!(
                "refuses a channel that would bring the capacity with one peer above {}",
                format_msat(m)
            ),
        );
    }
    if let Some(m) = c.max_channels {
        line(
            tags::CHANNEL_COUNT,
            format!("refuses a channel beyond the {m}th"),
        );
    }
    if !c.allow_private {
        line(
            tags::CHANNEL_PRIVATE,
            "refuses unannounced (private) channels".into(),
        );
    }
    if let Some(m) = c.max_htlcs_in_flight {
        line(
            tags::HTLC_COUNT,
            format!("does not approve a payment while {m} outgoing HTLCs are in flight"),
        );
    }
    if let Some(m) = c.max_in_flight_msat {
        line(
            tags::HTLC_IN_FLIGHT,
            format!(
                "does not approve a payment that would put more than {} in flight",
                format_msat(m)
            ),
        );
    }
    if let Some(p) = c.min_outbound_percent {
        line(
            tags::LIQUIDITY_LOW,
            format!("alerts when a channel's outbound balance falls below {p} % of its capacity"),
        );
    }
    out
}
