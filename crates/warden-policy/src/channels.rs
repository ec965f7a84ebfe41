//! Channel and in-flight limits (`[channels]`): pure checks over the channels the signer holds.
//!
//! A signer sees every channel open (it signs the funding), every commitment and every HTLC, so
//! it can hold the node to limits the node itself cannot be trusted with: how large one channel
//! may be, how much capacity may sit in channels (in all, and with one peer: diversification),
//! how many channels there may be, whether private channels are allowed, and how much may be in
//! flight at once. The channels come from VLS's own state, never from the node's word; this
//! module only judges them, so every rule is unit-tested here without a node.

use super::eval::RuleHit;
use super::model::ChannelRules;
use super::units::{format_msat, group_thousands};
use crate::tags;

/// Where a channel is in its life, as VLS's state shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelPhase {
    /// Created, not set up yet (no funding outpoint).
    Stub,
    /// Set up; the funding is not deep enough yet.
    Unconfirmed,
    /// Open and usable.
    Open,
    /// Closing or closed on chain; its funds are being swept.
    Closing,
    /// Set up, but Warden refused to sign its funding: it holds nothing.
    Refused,
}

impl ChannelPhase {
    /// The name shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelPhase::Stub => "stub",
            ChannelPhase::Unconfirmed => "unconfirmed",
            ChannelPhase::Open => "open",
            ChannelPhase::Closing => "closing",
            ChannelPhase::Refused => "refused",
        }
    }

    /// Whether the channel still holds capacity the limits count (not yet closing).
    pub fn counts(self) -> bool {
        matches!(self, ChannelPhase::Unconfirmed | ChannelPhase::Open)
    }
}

/// One channel, from the signer's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelView {
    /// VLS's channel id (hex).
    pub id: String,
    /// The peer's node id (hex), when the channel id carries it (CLN and VLS's LDK client do).
    pub peer: Option<String>,
    /// The funding outpoint, `txid:vout`, once set up.
    pub funding: Option<String>,
    /// Whether this node opened (funded) it.
    pub outbound: bool,
    /// Total capacity, msat.
    pub capacity_msat: u64,
    /// This node's balance (what it could claim now), msat.
    pub local_msat: u64,
    /// The peer's balance, msat: capacity less ours and what is in flight.
    pub remote_msat: u64,
    /// HTLCs this node offered (outgoing payments in flight): how many, and msat.
    pub offered_htlcs: u32,
    /// msat in the offered HTLCs.
    pub offered_msat: u64,
    /// HTLCs offered to this node (incoming): how many.
    pub received_htlcs: u32,
    /// msat in the received HTLCs.
    pub received_msat: u64,
    /// Its phase.
    pub phase: ChannelPhase,
}

/// An outgoing payment VLS saw through: its preimage is known and its HTLCs left the channels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettledPayment {
    /// The payment hash, hex.
    pub payment_hash: String,
    /// What the invoice (or keysend) asked, msat.
    pub invoiced_msat: u64,
    /// What left the channels for it, msat (VLS counts HTLCs in whole sat).
    pub sent_msat: u64,
}

impl SettledPayment {
    /// Routing fees: what left the channels beyond the invoice amount.
    pub fn fee_msat(&self) -> u64 {
        self.sent_msat.saturating_sub(self.invoiced_msat)
    }
}

/// A channel about to be opened (by this node) or accepted (from a peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpen {
    /// The peer's node id, lowercase hex.
    pub peer: String,
    /// The channel's capacity, msat.
    pub capacity_msat: u64,
    /// Whether it is unannounced; `None` when the request does not say (signing time: the
    /// funding transaction does not carry the announce flag).
    pub private: Option<bool>,
    /// Opened by the peer rather than by this node.
    pub incoming: bool,
}

fn hit(tag: &str, reason: String) -> RuleHit {
    RuleHit {
        tag: tag.to_string(),
        reason: format!("rule {tag}: {reason}"),
    }
}

/// Everything `[channels]` objects to in opening `opens` (in order: a command that opens
/// several counts each against the ones before it) next to the channels already held.
/// `skip` names a channel already in `existing` that is the one being opened (at signing time
/// VLS has set it up before it asks), so it is not counted twice.
pub fn check_opens(
    rules: &ChannelRules,
    opens: &[ChannelOpen],
    existing: &[ChannelView],
    skip: &[String],
) -> Vec<RuleHit> {
    let live: Vec<&ChannelView> = existing
        .iter()
        .filter(|c| c.phase.counts() && !skip.contains(&c.id))
        .collect();
    let mut total: u128 = live.iter().map(|c| u128::from(c.capacity_msat)).sum();
    let mut count = live.len() as u64;
    let mut per_peer: Vec<(String, u128)> = Vec::new();
    for c in &live {
        if let Some(p) = &c.peer {
            add_to(&mut per_peer, p, c.capacity_msat);
        }
    }
    let mut hits = Vec::new();
    for open in opens {
        let which = if open.incoming {
            format!("an incoming channel of {}", format_msat(open.capacity_msat))
        } else {
            format!("a channel of {}", format_msat(open.capacity_msat))
        };
        if let Some(max) = rules.max_channel_size_msat {
            if open.capacity_msat > max {
                hits.push(hit(
                    tags::CHANNEL_SIZE,
                    format!(
                        "{which} with {} is larger than the largest allowed, {} (channels.max_channel_size)",
                        short(&open.peer),
                        format_msat(max)
                    ),
                ));
            }
        }
        total += u128::from(open.capacity_msat);
        if let Some(max) = rules.max_total_capacity_msat {
            if total > u128::from(max) {
                hits.push(hit(
                    tags::CHANNEL_TOTAL,
                    format!(
                        "{which} would bring the capacity in channels to {}; the limit is {} (channels.max_total_capacity)",
                        format_msat(total),
                        format_msat(max)
                    ),
                ));
            }
        }
        let with_peer = add_to(&mut per_peer, &open.peer, open.capacity_msat);
        if let Some(max) = rules.max_per_peer_msat {
            if with_peer > u128::from(max) {
                hits.push(hit(
                    tags::CHANNEL_PEER,
                    format!(
                        "{which} would bring the capacity with {} to {}; the limit with one peer is {} (channels.max_per_peer)",
                        short(&open.peer),
                        format_msat(with_peer),
                        format_msat(max)
                    ),
                ));
            }
        }
        count += 1;
        if let Some(max) = rules.max_channels {
            if count > max {
                hits.push(hit(
                    tags::CHANNEL_COUNT,
                    format!(
                        "{which} would be channel number {}; at most {} are allowed (channels.max_channels)",
                        group_thousands(count),
                        group_thousands(max)
                    ),
                ));
            }
        }
        if open.private == Some(true) && !rules.allow_private {
            hits.push(hit(
                tags::CHANNEL_PRIVATE,
                format!(
                    "{which} with {} would be unannounced (private); the policy allows only announced channels (channels.allow_private = false)",
                    short(&open.peer)
                ),
            ));
        }
    }
    hits
}

/// Add `msat` to `peer`'s running sum, returning the new sum.
fn add_to(per_peer: &mut Vec<(String, u128)>, peer: &str, msat: u64) -> u128 {
    match per_peer.iter_mut().find(|(p, _)| p == peer) {
        Some((_, sum)) => {
            *sum += u128::from(msat);
            *sum
        }
        None => {
            per_peer.push((peer.to_string(), u128::from(msat)));
            u128::from(msat)
        }
    }
}

/// A node id shortened for sentences (the full id is in the record).
fn short(peer: &str) -> String {
    if peer.len() > 16 {
        format!("peer {}…", &peer[..16])
    } else {
        format!("peer {peer}")
    }
}

/// What `[channels]` objects to in one more outgoing payment of `amount_msat`, given what is
/// in flight now (the HTLCs this node offered in the channels' current commitments).
pub fn check_in_flight(
    rules: &ChannelRules,
    channels: &[ChannelView],
    amount_msat: u64,
) -> Vec<RuleHit> {
    let htlcs: u64 = channels.iter().map(|c| u64::from(c.offered_htlcs)).sum();
    let msat: u128 = channels.iter().map(|c| u128::from(c.offered_msat)).sum();
    let mut hits = Vec::new();
    if let Some(max) = rules.max_htlcs_in_flight {
        if htlcs >= max {
            hits.push(hit(
                tags::HTLC_COUNT,
                format!(
                    "{} outgoing HTLCs are in flight; at most {} may be at once (channels.max_htlcs_in_flight)",
                    group_thousands(htlcs),
                    group_thousands(max)
                ),
            ));
        }
    }
    if let Some(max) = rules.max_in_flight_msat {
        let after = msat + u128::from(amount_msat);
        if after > u128::from(max) {
            hits.push(hit(
                tags::HTLC_IN_FLIGHT,
                format!(
                    "{} would be in flight with this payment ({} already); the limit is {} (channels.max_in_flight)",
                    format_msat(after),
                    format_msat(msat),
                    format_msat(max)
                ),
            ));
        }
    }
    hits
}

/// Channels whose outbound balance is below `percent` of their capacity (open channels only).
pub fn depleted(channels: &[ChannelView], percent: u8) -> Vec<&ChannelView> {
    channels
        .iter()
        .filter(|c| c.phase == ChannelPhase::Open && c.capacity_msat > 0)
        .filter(|c| {
            u128::from(c.local_msat) * 100 < u128::from(c.capacity_msat) * u128::from(percent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAT: u64 = 1_000;
    const P1: &str = "02aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const P2: &str = "03bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn channel(id: &str, peer: &str, sat: u64, phase: ChannelPhase) -> ChannelView {
        ChannelView {
            id: id.into(),
            peer: Some(peer.into()),
            funding: None,
            outbound: true,
            capacity_msat: sat * SAT,
            local_msat: sat * SAT,
            remote_msat: 0,
            offered_htlcs: 0,
            offered_msat: 0,
            received_htlcs: 0,
            received_msat: 0,
            phase,
        }
    }

    fn open(peer: &str, sat: u64) -> ChannelOpen {
        ChannelOpen {
            peer: peer.into(),
            capacity_msat: sat * SAT,
            private: Some(false),
            incoming: false,
        }
    }

    fn rules() -> ChannelRules {
        ChannelRules {
            max_channel_size_msat: Some(5_000_000 * SAT),
            max_total_capacity_msat: Some(12_000_000 * SAT),
            max_per_peer_msat: Some(8_000_000 * SAT),
            max_channels: Some(3),
            allow_private: false,
            max_htlcs_in_flight: Some(2),
            max_in_flight_msat: Some(300_000 * SAT),
            min_outbound_percent: None,
        }
    }

    fn tags_of(h: &[RuleHit]) -> Vec<&str> {
        h.iter().map(|h| h.tag.as_str()).collect()
    }

    #[test]
    fn an_open_within_every_limit_passes_and_each_limit_names_itself() {
        let existing = [channel("a", P1, 4_000_000, ChannelPhase::Open)];
        assert!(check_opens(&rules(), &[open(P2, 5_000_000)], &existing, &[]).is_empty());

        let hits = check_opens(&rules(), &[open(P2, 5_000_001)], &existing, &[]);
        assert_eq!(tags_of(&hits), vec![tags::CHANNEL_SIZE]);
        assert_eq!(
            hits[0].reason,
            "rule warden-channel-size: a channel of 5,000,001 sat with peer 03bbbbbbbbbbbbbb… is larger than the largest allowed, 5,000,000 sat (channels.max_channel_size)"
        );

        // 4M + 5M with the same peer is over the per-peer 8M.
        let hits = check_opens(&rules(), &[open(P1, 5_000_000)], &existing, &[]);
        assert_eq!(tags_of(&hits), vec![tags::CHANNEL_PEER]);
        assert!(
            hits[0].reason.contains("to 9,000,000 sat"),
            "{}",
            hits[0].reason
        );
    }

    #[test]
    fn total_and_count_include_every_open_of_one_command_and_skip_closing_channels() {
        let existing = [
            channel("a", P1, 4_000_000, ChannelPhase::Open),
            channel("b", P2, 4_000_000, ChannelPhase::Unconfirmed),
            channel("c", P2, 4_000_000, ChannelPhase::Closing),
        ];
        // 8M held (closing one not counted); two more opens of 3M: total 14M > 12M on the
        // second only... and it is the fourth channel.
        let q = "03cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
        let hits = check_opens(
            &rules(),
            &[open(q, 3_000_000), open(q, 3_000_000)],
            &existing,
            &[],
        );
        assert_eq!(
            tags_of(&hits),
            vec![tags::CHANNEL_TOTAL, tags::CHANNEL_COUNT]
        );
        assert!(
            hits[0].reason.contains("to 14,000,000 sat"),
            "{}",
            hits[0].reason
        );
        assert!(
            hits[1].reason.contains("channel number 4; at most 3"),
            "{}",
            hits[1].reason
        );
    }

    #[test]
    fn the_channel_being_signed_is_not_counted_twice() {
        let existing = [
            channel("a", P1, 4_000_000, ChannelPhase::Open),
            channel("new", P1, 4_000_000, ChannelPhase::Unconfirmed),
        ];
        let o = open(P1, 4_000_000);
        assert!(check_opens(
            &rules(),
            std::slice::from_ref(&o),
            &existing,
            &["new".into()]
        )
        .is_empty());
        assert_eq!(
            tags_of(&check_opens(&rules(), &[o], &existing, &[])),
            vec![tags::CHANNEL_PEER]
        );
    }

    #[test]
    fn a_private_channel_is_refused_only_when_known_private_and_not_allowed() {
        let mut o = open(P1, 1_000_000);
        o.private = Some(true);
        let hits = check_opens(&rules(), std::slice::from_ref(&o), &[], &[]);
        assert_eq!(tags_of(&hits), vec![tags::CHANNEL_PRIVATE]);
        o.private = None;
        assert!(check_opens(&rules(), std::slice::from_ref(&o), &[], &[]).is_empty());
        let mut allow = rules();
        allow.allow_private = true;
        o.private = Some(true);
        assert!(check_opens(&allow, &[o], &[], &[]).is_empty());
        // No [channels] at all limits nothing.
        let mut big = open(P1, 1_000_000_000);
        big.private = Some(true);
        assert!(check_opens(&ChannelRules::default(), &[big], &[], &[]).is_empty());
    }

    #[test]
    fn in_flight_limits_count_offered_htlcs_and_their_amount() {
        let mut a = channel("a", P1, 1_000_000, ChannelPhase::Open);
        a.offered_htlcs = 1;
        a.offered_msat = 200_000 * SAT;
        assert!(check_in_flight(&rules(), std::slice::from_ref(&a), 100_000 * SAT).is_empty());
        let hits = check_in_flight(&rules(), std::slice::from_ref(&a), 100_000 * SAT + 1);
        assert_eq!(tags_of(&hits), vec![tags::HTLC_IN_FLIGHT]);
        assert_eq!(
            hits[0].reason,
            "rule warden-htlc-in-flight: 300,000.001 sat would be in flight with this payment (200,000 sat already); the limit is 300,000 sat (channels.max_in_flight)"
        );
        a.offered_htlcs = 2;
        let hits = check_in_flight(&rules(), &[a], 0);
        assert_eq!(tags_of(&hits), vec![tags::HTLC_COUNT]);
        assert!(hits[0]
            .reason
            .starts_with("rule warden-htlc-count: 2 outgoing HTLCs are in flight; at most 2"));
    }

    #[test]
    fn depletion_is_outbound_below_the_percentage_of_capacity() {
        let mut a = channel("a", P1, 1_000_000, ChannelPhase::Open);
        a.local_msat = 99_999 * SAT;
        let mut b = channel("b", P2, 1_000_000, ChannelPhase::Open);
        b.local_msat = 100_000 * SAT;
        let mut c = channel("c", P2, 1_000_000, ChannelPhase::Closing);
        c.local_msat = 0;
        let chans = [a, b, c];
        let low: Vec<&str> = depleted(&chans, 10).iter().map(|c| c.id.as_str()).collect();
        assert_eq!(low, vec!["a"]);
    }
}
