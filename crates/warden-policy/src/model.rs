//! The policy as Warden holds it after loading: validated, amounts in msat, durations in
//! seconds, admin names resolved. Nothing here can be half-valid: [`super::load`] builds it
//! only when the whole file checks out.

use lightning_signer::bitcoin::secp256k1::PublicKey;
use std::collections::BTreeMap;

/// Whether a rule refuses or only reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The rule refuses (or requires quorum) when it matches.
    Enforce,
    /// The rule logs and emits an event when it matches, and lets the payment through; for
    /// rolling a new rule out safely.
    Warn,
}

/// How an admin proves an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKey {
    /// A secp256k1 public key; approvals are BIP-340 signatures by it.
    PublicKey(PublicKey),
    /// A Bitcoin address; approvals are Bitcoin signed messages (hardware wallets).
    Address(String),
}

/// A destination a rule can name: a Lightning payee or an on-chain address.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// A payee's node id, compressed public key in lowercase hex.
    Node(String),
    /// An on-chain address, as written.
    Address(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Node(n) => write!(f, "node {n}"),
            Destination::Address(a) => write!(f, "address {a}"),
        }
    }
}

/// A set of destinations, as allowlists and deny lists hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationSet {
    /// Payee node ids, sorted and without duplicates (the loader makes them so; [`contains`]
    /// searches them in O(log n), so a long deny list costs a payment nothing noticeable).
    ///
    /// [`contains`]: DestinationSet::contains
    pub nodes: Vec<String>,
    /// On-chain addresses, sorted and without duplicates.
    pub addresses: Vec<String>,
}

impl DestinationSet {
    /// Whether `d` is in the set.
    pub fn contains(&self, d: &Destination) -> bool {
        match d {
            Destination::Node(n) => self.nodes.binary_search(n).is_ok(),
            Destination::Address(a) => self.addresses.binary_search(a).is_ok(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.addresses.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `[[deny]]`: destinations that are always refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyRule {
    /// Rule tag.
    pub tag: String,
    /// Enforce or warn.
    pub mode: Mode,
    /// The destinations refused.
    pub destinations: DestinationSet,
    /// The fleet members it applies to.
    pub members: Members,
}

/// Which members of a fleet a rule applies to: `members = [...]` in the rule, by name or node
/// id (kept as names). Without it, every member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Members {
    /// Every member (and the one wardend outside a fleet).
    #[default]
    All,
    /// These members only, by name.
    Only(std::collections::BTreeSet<String>),
}

impl Members {
    /// Whether the rule applies on `member` (`None`: a wardend outside a fleet, where every
    /// rule applies: a restriction an operator wrote for some nodes is never dropped because
    /// the wardend running it is not a fleet member).
    pub fn applies_to(&self, member: Option<&str>) -> bool {
        match (self, member) {
            (Members::All, _) | (_, None) => true,
            (Members::Only(set), Some(m)) => set.contains(m),
        }
    }

    /// " (fleet members a, b only)", or nothing for every member.
    pub fn note(&self) -> String {
        match self {
            Members::All => String::new(),
            Members::Only(set) => format!(
                " (fleet member{} {} only)",
                if set.len() == 1 { "" } else { "s" },
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// `[[allowlist]]`: known destinations. Being listed never bypasses a limit or a deny rule;
/// it only spares the payment the "unlisted destination" approval rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// Rule tag.
    pub tag: String,
    /// The destinations listed.
    pub destinations: DestinationSet,
}

/// What a limit counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitScope {
    /// All payments of the node together.
    Node,
    /// Each destination separately, every destination.
    EachDestination,
    /// Only payments to these destinations, counted together.
    Destinations(DestinationSet),
    /// All payments of every member of the fleet together, in one window the members share
    /// (`scope = "fleet"`).
    Fleet,
}

/// `[[limit]]`: a cap per payment or over a rolling window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// Rule tag.
    pub tag: String,
    /// Enforce or warn.
    pub mode: Mode,
    /// `None` for a per-payment limit; otherwise the rolling window in seconds.
    pub window_secs: Option<u64>,
    /// Most msat in one payment (per-payment) or in the window.
    pub max_amount_msat: Option<u64>,
    /// Most payments in the window.
    pub max_count: Option<u64>,
    /// What the limit counts.
    pub scope: LimitScope,
    /// The fleet members it applies to.
    pub members: Members,
}

/// `quorum = { need = 2, of = [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quorum {
    /// Signatures needed.
    pub need: usize,
    /// Admin names that may sign.
    pub of: Vec<String>,
}

/// `[[approval]]`: when admins must approve a payment first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    /// Rule tag.
    pub tag: String,
    /// Enforce or warn.
    pub mode: Mode,
    /// Matches payments strictly above this amount.
    pub above_msat: Option<u64>,
    /// Matches payments to a destination on no allowlist.
    pub unlisted_destination: bool,
    /// Who must approve.
    pub quorum: Quorum,
    /// How long an approval request stays valid, in seconds.
    pub expiry_secs: u64,
    /// The fleet members it applies to.
    pub members: Members,
}

/// Days of the week, Monday first.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `[[time_window]]`: when payments (above an amount) may be made, in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindowRule {
    /// Rule tag.
    pub tag: String,
    /// Enforce or warn.
    pub mode: Mode,
    /// The rule applies to payments strictly above this amount (all payments if `None`).
    pub above_msat: Option<u64>,
    /// Allowed days, indexes into [`WEEKDAYS`].
    pub days: Vec<u8>,
    /// Start of the allowed time, minutes after midnight UTC.
    pub from_minute: u16,
    /// End of the allowed time (exclusive), minutes after midnight UTC. Earlier than `from`
    /// means the window runs past midnight.
    pub to_minute: u16,
    /// The fleet members it applies to.
    pub members: Members,
}

/// A whole, validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Optional human name.
    pub name: Option<String>,
    /// SHA-256 of the file's bytes: what governance signs and every decision carries.
    pub hash: [u8; 32],
    /// Admins by name.
    pub admins: BTreeMap<String, AdminKey>,
    /// Deny rules, in file order.
    pub deny: Vec<DenyRule>,
    /// Allowlists, in file order.
    pub allow: Vec<AllowRule>,
    /// Limits, in file order.
    pub limits: Vec<LimitRule>,
    /// Time windows, in file order.
    pub time_windows: Vec<TimeWindowRule>,
    /// Approval rules, in file order.
    pub approvals: Vec<ApprovalRule>,
    /// Who approves changes to this policy (`[governance]`).
    pub governance: Governance,
    /// Conditions that freeze the signer by themselves (`[emergency_stop]`).
    pub emergency: EmergencyStops,
    /// The break-glass key and its delay (`[recovery]`), if the policy names one.
    pub recovery: Option<Recovery>,
    /// Limits on channels and on what is in flight in them (`[channels]`).
    pub channels: ChannelRules,
    /// Bounds on the fee an on-chain transaction pays (`[onchain]`), always in force.
    pub onchain: OnchainFees,
    /// The network the file was validated for (its addresses are that network's).
    pub network: lightning_signer::bitcoin::Network,
    /// `[fleet.members]`: the nodes admitted to the fleet this policy governs, member name to
    /// node id (66 hex characters). Empty for a policy of one node.
    pub fleet_members: BTreeMap<String, String>,
}

/// `[channels]`: what channels the node may open or accept, and how much may be in flight.
/// Each limit is off unless declared; private channels are allowed unless forbidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRules {
    /// Largest capacity of one channel, msat.
    pub max_channel_size_msat: Option<u64>,
    /// Most capacity across every channel not closing, msat.
    pub max_total_capacity_msat: Option<u64>,
    /// Most capacity with one peer, msat (diversification).
    pub max_per_peer_msat: Option<u64>,
    /// Most channels not closing.
    pub max_channels: Option<u64>,
    /// Whether unannounced (private) channels may be opened or accepted.
    pub allow_private: bool,
    /// Most outgoing HTLCs in flight at once, across channels.
    pub max_htlcs_in_flight: Option<u64>,
    /// Most msat in outgoing HTLCs at once, across channels.
    pub max_in_flight_msat: Option<u64>,
    /// An alert when a channel's outbound balance falls below this percentage of its capacity.
    pub min_outbound_percent: Option<u8>,
}

impl Default for ChannelRules {
    fn default() -> Self {
        ChannelRules {
            max_channel_size_msat: None,
            max_total_capacity_msat: None,
            max_per_peer_msat: None,
            max_channels: None,
            allow_private: true,
            max_htlcs_in_flight: None,
            max_in_flight_msat: None,
            min_outbound_percent: None,
        }
    }
}

/// `[onchain]`: the most an on-chain transaction may pay in fees. Always in force, with safe
/// defaults: VLS 1.0.0-rc.1 skips its own fee check when a transaction has an outside output,
/// and a fee is value leaving the wallet like any output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnchainFees {
    /// Most fee one transaction may pay, msat.
    pub max_fee_msat: u64,
    /// Highest feerate, sat per 1,000 weight units (sat/kw; 1 sat/vB = 250 sat/kw).
    pub max_feerate_per_kw: u64,
}

/// `[onchain] max_fee` when the file does not set it: 200,000 sat.
pub const DEFAULT_MAX_FEE_MSAT: u64 = 200_000_000;
/// `[onchain] max_feerate` when the file does not set it: 100 sat/vB, VLS's own mainnet maximum.
pub const DEFAULT_MAX_FEERATE_PER_KW: u64 = 25_000;

impl Default for OnchainFees {
    fn default() -> Self {
        OnchainFees {
            max_fee_msat: DEFAULT_MAX_FEE_MSAT,
            max_feerate_per_kw: DEFAULT_MAX_FEERATE_PER_KW,
        }
    }
}

/// A break-glass action the recovery key may start.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryKind {
    /// Install a new admin set and quorums (a policy that changes nothing else).
    ReplaceAdmins,
    /// Lift the freeze in force.
    Unfreeze,
    /// Allow on-chain spends to the recovery destination, and nothing else.
    Sweep,
}

impl RecoveryKind {
    /// The name in files, commands and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryKind::ReplaceAdmins => "replace-admins",
            RecoveryKind::Unfreeze => "unfreeze",
            RecoveryKind::Sweep => "sweep",
        }
    }

    /// The byte of this action in the approval digest.
    pub fn code(self) -> u8 {
        match self {
            RecoveryKind::ReplaceAdmins => 1,
            RecoveryKind::Unfreeze => 2,
            RecoveryKind::Sweep => 3,
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "replace-admins" => Some(RecoveryKind::ReplaceAdmins),
            "unfreeze" => Some(RecoveryKind::Unfreeze),
            "sweep" => Some(RecoveryKind::Sweep),
            _ => None,
        }
    }
}

/// `[recovery]`: a key held offline that can start a break-glass action, which becomes
/// executable only after `delay_secs` (any admin quorum may cancel it meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The recovery key (BIP-340 public key, or an address for a hardware wallet).
    pub key: AdminKey,
    /// Seconds between the start and the earliest execution.
    pub delay_secs: u64,
    /// Blocks that must also pass (counted by the node's chain tracker, which the node feeds);
    /// 0 = time only.
    pub delay_blocks: u32,
    /// The actions it may start.
    pub actions: Vec<RecoveryKind>,
    /// Where `sweep` lets on-chain funds go.
    pub destination: Option<RecoveryDestination>,
}

/// The recovery destination: an output descriptor and the addresses it derives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryDestination {
    /// The descriptor, as written.
    pub descriptor: String,
    /// Indices derived (0..range) when it has a wildcard; 1 otherwise.
    pub range: u32,
    /// Every address it derives in that range, for the node's network.
    pub addresses: std::collections::BTreeSet<String>,
}

/// More than `count` events within `within_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Events tolerated in the window; one more trips.
    pub count: u64,
    /// The sliding window, seconds.
    pub within_secs: u64,
}

/// `[emergency_stop]`: conditions that freeze the signer by themselves. None is set unless the
/// policy declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmergencyStops {
    /// More than this many payments refused in the window.
    pub refusals: Option<Burst>,
    /// More than this many admin API authentication failures in the window.
    pub auth_failures: Option<Burst>,
    /// Any audit or HSM failure.
    pub audit_failure: bool,
    /// A velocity window at or above this percentage of its limit after an approval.
    pub window_percent: Option<u8>,
}

/// Who may change the policy, and how long a loosening change waits (`[governance]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Governance {
    /// The quorum that approves a policy change: the one of the policy in force, never the
    /// proposed one's.
    pub quorum: Quorum,
    /// Whether the file declared the quorum (otherwise it is derived; `explain` says from what).
    pub quorum_declared: bool,
    /// Seconds a change that loosens anything waits after its quorum; any admin may veto it
    /// meanwhile.
    pub loosen_delay_secs: u64,
    /// Seconds a proposal stays open for signatures.
    pub expiry_secs: u64,
}

impl Policy {
    /// The policy hash in hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// Whether `d` is on any allowlist.
    pub fn is_listed(&self, d: &Destination) -> bool {
        self.allow.iter().any(|a| a.destinations.contains(d))
    }

    /// Whether `tag` names a rule in `warn` mode (whose matches are reported as warnings).
    pub fn is_warn_rule(&self, tag: &str) -> bool {
        let warn = |m: Mode| m == Mode::Warn;
        self.deny.iter().any(|r| r.tag == tag && warn(r.mode))
            || self.limits.iter().any(|r| r.tag == tag && warn(r.mode))
            || self
                .time_windows
                .iter()
                .any(|r| r.tag == tag && warn(r.mode))
            || self.approvals.iter().any(|r| r.tag == tag && warn(r.mode))
    }

    /// The rules as fleet member `member` runs them: those scoped to other members left out
    /// (the hash stays the fleet's policy's).
    pub fn for_member(&self, member: &str) -> Policy {
        let on = |m: &Members| m.applies_to(Some(member));
        let mut p = self.clone();
        p.deny.retain(|r| on(&r.members));
        p.limits.retain(|r| on(&r.members));
        p.time_windows.retain(|r| on(&r.members));
        p.approvals.retain(|r| on(&r.members));
        p
    }

    /// Whether any rule applies to some fleet members only.
    pub fn scopes_members(&self) -> bool {
        let scoped = |m: &Members| *m != Members::All;
        self.deny.iter().any(|r| scoped(&r.members))
            || self.limits.iter().any(|r| scoped(&r.members))
            || self.time_windows.iter().any(|r| scoped(&r.members))
            || self.approvals.iter().any(|r| scoped(&r.members))
    }

    /// The member `name` is admitted as, if it is: its node id.
    pub fn fleet_member(&self, name: &str) -> Option<&str> {
        self.fleet_members.get(name).map(String::as_str)
    }

    /// Whether a limit counts across the fleet (`scope = "fleet"`): each decision then reads the
    /// fleet's shared window, under the fleet's lock, and only a fleet member can decide.
    pub fn counts_fleet(&self) -> bool {
        self.limits.iter().any(|l| l.scope == LimitScope::Fleet)
    }

    /// The longest rolling window, which bounds how much velocity history must be kept.
    pub fn longest_window_secs(&self) -> u64 {
        self.limits
            .iter()
            .filter_map(|l| l.window_secs)
            .max()
            .unwrap_or(0)
    }

    /// Every rule tag, in file order.
    pub fn tags(&self) -> Vec<&str> {
        self.deny
            .iter()
            .map(|r| r.tag.as_str())
            .chain(self.allow.iter().map(|r| r.tag.as_str()))
            .chain(self.limits.iter().map(|r| r.tag.as_str()))
            .chain(self.time_windows.iter().map(|r| r.tag.as_str()))
            .chain(self.approvals.iter().map(|r| r.tag.as_str()))
            .collect()
    }
}
