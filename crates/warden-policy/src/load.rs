//! Loading and validating a policy file.
//!
//! The file is parsed with `toml_edit`, which keeps the position of every key and value, and
//! walked by hand rather than through serde: serde stops at the first problem, and an operator
//! fixing a policy wants every problem at once, each with `FILE:LINE:COL` and a sentence that
//! says what to write instead.

use super::model::*;
use super::units::{format_duration, format_msat, parse_amount, parse_duration};
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::PublicKey;
use lightning_signer::bitcoin::Network;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::str::FromStr;
use toml_edit::{ImDocument, Item, TableLike, Value};

/// Every key the parser accepts, as `section.key`. `policy/README.md` documents exactly these;
/// a test holds the two together.
pub const KNOWN_KEYS: &[&str] = &[
    "version",
    "name",
    "admins",
    "deny",
    "allowlist",
    "limit",
    "approval",
    "time_window",
    "governance",
    "emergency_stop",
    "recovery",
    "channels",
    "onchain",
    "fleet",
    "admins.pubkey",
    "admins.address",
    "deny.tag",
    "deny.mode",
    "deny.payees",
    "deny.addresses",
    "deny.members",
    "allowlist.tag",
    "allowlist.payees",
    "allowlist.addresses",
    "limit.tag",
    "limit.mode",
    "limit.window",
    "limit.max_amount",
    "limit.max_count",
    "limit.scope",
    "limit.payees",
    "limit.addresses",
    "limit.members",
    "approval.tag",
    "approval.mode",
    "approval.above",
    "approval.unlisted_destination",
    "approval.quorum",
    "approval.expiry",
    "approval.members",
    "quorum.need",
    "quorum.of",
    "governance.quorum",
    "governance.loosen_delay",
    "governance.expiry",
    "emergency_stop.refusals",
    "emergency_stop.auth_failures",
    "emergency_stop.audit_failure",
    "emergency_stop.window_percent",
    "fleet.members",
    "channels.max_channel_size",
    "channels.max_total_capacity",
    "channels.max_per_peer",
    "channels.max_channels",
    "channels.allow_private",
    "channels.max_htlcs_in_flight",
    "channels.max_in_flight",
    "channels.min_outbound",
    "onchain.max_fee",
    "onchain.max_feerate",
    "burst.count",
    "burst.within",
    "recovery.key",
    "recovery.delay",
    "recovery.delay_blocks",
    "recovery.actions",
    "recovery.destination",
    "recovery.destination_range",
    "time_window.tag",
    "time_window.mode",
    "time_window.above",
    "time_window.days",
    "time_window.from",
    "time_window.to",
    "time_window.members",
];

/// The embedded default policy (`policy/default.toml`).
pub const DEFAULT_POLICY: &str = include_str!("../default.toml");

/// The longest rolling window a limit may use; velocity history is kept this long.
pub const MAX_WINDOW_SECS: u64 = 7 * 86_400;

/// One problem in a policy file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// The longest an approval request may stay open.
pub const MAX_EXPIRY_SECS: u64 = 30 * 86_400;

/// A compressed public key written as the reference says: 66 hex characters. (The parser
/// behind it also takes 130-character uncompressed keys, which the reference does not allow.)
fn is_compressed_hex(s: &str) -> bool {
    s.len() == 66 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The largest policy file Warden reads; larger ones are refused before parsing.
pub const MAX_POLICY_BYTES: usize = 16 * 1024 * 1024;
/// Problems listed for one file; more are counted in one last line.
pub const MAX_REPORTED_ERRORS: usize = 1_000;

/// Validate policy text for a mainnet node. All problems are returned, sorted by position.
pub fn parse_policy(src: &str) -> Result<Policy, Vec<PolicyError>> {
    parse_policy_for(src, Network::Bitcoin)
}

/// Validate policy text for a node on `network`: every on-chain address in a rule is parsed
/// for that network (an address of another network is an error) and kept in its canonical
/// form, so rules match the node's outputs as scripts, however the address was written.
pub fn parse_policy_for(src: &str, network: Network) -> Result<Policy, Vec<PolicyError>> {
    if src.len() > MAX_POLICY_BYTES {
        return Err(vec![PolicyError {
            line: 1,
            col: 1,
            message: format!(
                "the file is {} bytes; a policy file may be at most {} bytes (16 MiB). Split long lists, or keep them in fewer rules",
                src.len(),
                MAX_POLICY_BYTES
            ),
        }]);
    }
    let mut cx = Cx::new(src, network);
    let doc = match ImDocument::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().trim_end_matches('.').to_string();
            cx.err(e.span(), format!("TOML syntax error: {msg}"));
            return Err(cx.errors);
        }
    };
    let policy = build(&mut cx, doc.as_table());
    if cx.errors.is_empty() {
        let mut policy = policy;
        policy.hash = sha256::Hash::hash(src.as_bytes()).to_byte_array();
        Ok(policy)
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.col));
        cx.errors.dedup();
        if cx.more_errors > 0 {
            let last = cx.errors.last().map(|e| e.line).unwrap_or(1);
            cx.errors.push(PolicyError {
                line: last,
                col: 1,
                message: format!(
                    "{} more problems are not listed (the first {MAX_REPORTED_ERRORS} are); fix these and check again",
                    cx.more_errors
                ),
            });
        }
        Err(cx.errors)
    }
}

struct Cx<'s> {
    src: &'s str,
    errors: Vec<PolicyError>,
    network: Network,
    /// Byte offset of the start of every line, for positions in O(log n).
    line_starts: Vec<usize>,
    /// Problems found beyond [`MAX_REPORTED_ERRORS`]: counted, not listed.
    more_errors: usize,
}

type Span = Option<Range<usize>>;

impl<'s> Cx<'s> {
    fn new(src: &'s str, network: Network) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Cx {
            src,
            errors: Vec::new(),
            network,
            line_starts,
            more_errors: 0,
        }
    }

    fn err(&mut self, span: Span, message: impl Into<String>) {
        if self.errors.len() >= MAX_REPORTED_ERRORS {
            self.more_errors += 1;
            return;
        }
        let (line, col) = self.position(span.map(|r| r.start).unwrap_or(0));
        self.errors.push(PolicyError {
            line,
            col,
            message: message.into(),
        });
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        // Columns count characters; past the first 1,000 bytes of a line they count bytes, so
        // no problem costs more than a bounded scan.
        let prefix = &self.src.as_bytes()[start..offset];
        let col = if prefix.len() <= 1_000 {
            String::from_utf8_lossy(prefix).chars().count()
        } else {
            prefix.len()
        };
        (line, col + 1)
    }
}

/// A table's entries after unknown keys were reported: key -> (key span, item).
struct Fields<'t> {
    map: BTreeMap<String, (Span, &'t Item)>,
    span: Span,
}

fn fields<'t>(
    cx: &mut Cx,
    table: &'t dyn TableLike,
    table_span: Span,
    section: &str,
    what: &str,
) -> Fields<'t> {
    let allowed: Vec<&str> = if section.is_empty() {
        KNOWN_KEYS
            .iter()
            .copied()
            .filter(|k| !k.contains('.'))
            .collect()
    } else {
        KNOWN_KEYS
            .iter()
            .filter_map(|k| k.strip_prefix(section).and_then(|r| r.strip_prefix('.')))
            .collect()
    };
    let mut map = BTreeMap::new();
    for (k, item) in table.iter() {
        let kspan = table
            .key(k)
            .and_then(|key| key.span())
            .or_else(|| item.span());
        if allowed.contains(&k) {
            map.insert(k.to_string(), (kspan, item));
        } else {
            cx.err(
                kspan,
                format!(
                    "unknown key `{k}` in {what}; allowed keys are: {}",
                    allowed.join(", ")
                ),
            );
        }
    }
    Fields {
        map,
        span: table_span,
    }
}

fn item_span(item: &Item) -> Span {
    item.span()
}

impl<'t> Fields<'t> {
    fn item(&self, key: &str) -> Option<(Span, &'t Item)> {
        self.map.get(key).map(|(s, i)| (s.clone(), *i))
    }

    fn string(&self, cx: &mut Cx, key: &str, what: &str, example: &str) -> Option<(String, Span)> {
        let (kspan, item) = self.item(key)?;
        match item.as_value() {
            Some(Value::String(s)) => Some((s.value().clone(), item_span(item).or(kspan))),
            _ => {
                cx.err(
                    item_span(item).or(kspan),
                    format!("`{key}` in {what} must be a string, e.g. {key} = \"{example}\""),
                );
                None
            }
        }
    }

    fn required_string(
        &self,
        cx: &mut Cx,
        key: &str,
        what: &str,
        example: &str,
    ) -> Option<(String, Span)> {
        if self.map.contains_key(key) {
            self.string(cx, key, what, example)
        } else {
            cx.err(
                self.span.clone(),
                format!("{what} is missing `{key}`; add e.g. {key} = \"{example}\""),
            );
            None
        }
    }

    fn integer(&self, cx: &mut Cx, key: &str, what: &str) -> Option<(i64, Span)> {
        let (kspan, item) = self.item(key)?;
        match item.as_value() {
            Some(Value::Integer(i)) => Some((*i.value(), item_span(item).or(kspan))),
            _ => {
                cx.err(
                    item_span(item).or(kspan),
                    format!("`{key}` in {what} must be a whole number"),
                );
                None
            }
        }
    }

    fn boolean(&self, cx: &mut Cx, key: &str, what: &str) -> Option<bool> {
        let (kspan, item) = self.item(key)?;
        match item.as_value() {
            Some(Value::Boolean(b)) => Some(*b.value()),
            _ => {
                cx.err(
                    item_span(item).or(kspan),
                    format!("`{key}` in {what} must be true or false"),
                );
                None
            }
        }
    }

    fn strings(&self, cx: &mut Cx, key: &str, what: &str) -> Vec<(String, Span)> {
        let Some((kspan, item)) = self.item(key) else {
            return Vec::new();
        };
        let Some(Value::Array(arr)) = item.as_value() else {
            cx.err(
                item_span(item).or(kspan),
                format!("`{key}` in {what} must be a list of strings, e.g. {key} = [\"...\"]"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            match v {
                Value::String(s) => out.push((s.value().clone(), v.span())),
                other => cx.err(
                    other.span(),
                    format!("`{key}` in {what} must hold only strings"),
                ),
            }
        }
        out
    }

    fn amount(&self, cx: &mut Cx, key: &str, what: &str) -> Option<(u64, Span)> {
        let (kspan, item) = self.item(key)?;
        match item.as_value() {
            Some(Value::String(s)) => match parse_amount(s.value()) {
                Ok(v) => Some((v, item_span(item))),
                Err(e) => {
                    cx.err(item_span(item).or(kspan), format!("`{key}` in {what}: {e}"));
                    None
                }
            },
            Some(Value::Integer(i)) => {
                let n = i.value();
                let msg = if *n < 0 {
                    format!("`{key}` in {what}: {n} is negative; amounts are zero or more, with a unit, e.g. \"250_000 sat\"")
                } else {
                    format!("`{key}` in {what}: {n} has no unit; write it as a string with a unit, e.g. {key} = \"{n} sat\"")
                };
                cx.err(item_span(item).or(kspan), msg);
                None
            }
            _ => {
                cx.err(
                    item_span(item).or(kspan),
                    format!(
                        "`{key}` in {what} must be an amount with a unit, e.g. \"250_000 sat\""
                    ),
                );
                None
            }
        }
    }

    fn duration(&self, cx: &mut Cx, key: &str, what: &str) -> Option<(u64, Span)> {
        let (kspan, item) = self.item(key)?;
        match item.as_value() {
            Some(Value::String(s)) => match parse_duration(s.value()) {
                Ok(v) => Some((v, item_span(item))),
                Err(e) => {
                    cx.err(item_span(item).or(kspan), format!("`{key}` in {what}: {e}"));
                    None
                }
            },
            _ => {
                cx.err(
                    item_span(item).or(kspan),
                    format!("`{key}` in {what} must be a duration with a unit, e.g. \"1h\""),
                );
                None
            }
        }
    }

    fn mode(&self, cx: &mut Cx, what: &str) -> Mode {
        match self.string(cx, "mode", what, "enforce") {
            None => Mode::Enforce,
            Some((m, span)) => match m.as_str() {
                "enforce" => Mode::Enforce,
                "warn" => Mode::Warn,
                other => {
                    cx.err(span, format!("`mode` in {what}: \"{other}\" is not a mode; use \"enforce\" or \"warn\""));
                    Mode::Enforce
                }
            },
        }
    }
}

struct TagSeen {
    first: HashMap<String, (usize, usize)>,
}

impl TagSeen {
    fn tag(&mut self, cx: &mut Cx, f: &Fields, what: &str) -> String {
        let Some((tag, span)) = f.required_string(cx, "tag", what, "my-rule") else {
            return String::new();
        };
        let valid = !tag.is_empty()
            && tag.len() <= 64
            && tag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !tag.starts_with('-');
        if !valid {
            cx.err(
                span.clone(),
                format!("tag \"{tag}\" in {what} must be 1 to 64 characters of a-z, 0-9 and '-', not starting with '-'"),
            );
        }
        let pos = cx.position(span.as_ref().map(|r| r.start).unwrap_or(0));
        if let Some((l, c)) = self.first.get(&tag) {
            cx.err(span, format!("duplicate tag \"{tag}\" (first used at line {l}, column {c}); every rule needs its own tag"));
        } else {
            self.first.insert(tag.clone(), pos);
        }
        tag
    }
}

fn destinations(cx: &mut Cx, f: &Fields, what: &str) -> DestinationSet {
    let mut set = DestinationSet::default();
    for (p, span) in f.strings(cx, "payees", what) {
        match PublicKey::from_str(&p).ok().filter(|_| is_compressed_hex(&p)) {
            Some(pk) => set.nodes.push(hex::encode(pk.serialize())),
            None => cx.err(span, format!("\"{p}\" in `payees` of {what} is not a node id (66 hex characters, a compressed public key)")),
        }
    }
    for (a, span) in f.strings(cx, "addresses", what) {
        match lightning_signer::bitcoin::Address::from_str(&a) {
            Err(_) => cx.err(
                span,
                format!("\"{a}\" in `addresses` of {what} is not a Bitcoin address"),
            ),
            Ok(unchecked) => match unchecked.require_network(cx.network) {
                // Canonical text (lower-case bech32): one script, one spelling.
                Ok(addr) => set.addresses.push(addr.to_string()),
                Err(_) => cx.err(
                    span,
                    format!(
                        "\"{a}\" in `addresses` of {what} is not an address of the {} network this policy is loaded for; it could never match an output",
                        cx.network
                    ),
                ),
            },
        }
    }
    set.nodes.sort_unstable();
    set.nodes.dedup();
    set.addresses.sort_unstable();
    set.addresses.dedup();
    set
}

/// The tables of an array-of-tables section like `[[limit]]`.
fn sections<'t>(cx: &mut Cx, root: &'t Fields, key: &str) -> Vec<(&'t toml_edit::Table, Span)> {
    let Some((kspan, item)) = root.item(key) else {
        return Vec::new();
    };
    match item.as_array_of_tables() {
        Some(arr) => arr.iter().map(|t| (t, t.span())).collect(),
        None => {
            cx.err(
                kspan,
                format!("`{key}` must be written as [[{key}]] tables, one per rule"),
            );
            Vec::new()
        }
    }
}

fn build(cx: &mut Cx, root_table: &toml_edit::Table) -> Policy {
    let root = fields(cx, root_table, Some(0..0), "", "the top level");

    match root.integer(cx, "version", "the top level") {
        Some((1, _)) => {}
        Some((v, span)) => cx.err(
            span,
            format!("policy version {v} is not supported; this Warden reads version = 1"),
        ),
        None if !root.map.contains_key("version") => {
            cx.err(Some(0..0), "missing `version = 1` at the top of the file")
        }
        None => {}
    }
    let name = root
        .string(cx, "name", "the top level", "treasury")
        .map(|(n, _)| n);

    let mut admins = BTreeMap::new();
    // Every key hash an admin can sign as, and the first admin declared with it.
    let mut identities: HashMap<[u8; 20], String> = HashMap::new();
    if let Some((kspan, item)) = root.item("admins") {
        match item.as_table_like() {
            None => cx.err(
                kspan,
                "`admins` must be a table: [admins] with one entry per admin",
            ),
            Some(t) => {
                for (admin, entry) in t.iter() {
                    let aspan = t.key(admin).and_then(|k| k.span());
                    let what = format!("admin \"{admin}\"");
                    if admin.is_empty()
                        || !admin
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        cx.err(
                            aspan.clone(),
                            format!(
                                "admin name \"{admin}\" must be one or more letters, digits, '-' and '_'"
                            ),
                        );
                    }
                    let Some(et) = entry.as_table_like() else {
                        cx.err(
                            aspan,
                            format!(
                                "{what} must be a table, e.g. {admin} = {{ pubkey = \"02...\" }}"
                            ),
                        );
                        continue;
                    };
                    let key = key_entry(cx, et, aspan.clone(), &what);
                    if let Some(k) = key {
                        let ids = key_identities(&k);
                        if let Some(first) = ids.iter().find_map(|h| identities.get(h)).cloned() {
                            cx.err(
                                aspan.clone(),
                                format!(
                                    "{what} signs with the same key as admin \"{first}\" (the same public key, or an address of it); one person's key may stand for one admin only, or a quorum could be met by one person"
                                ),
                            );
                        }
                        for h in ids {
                            identities.entry(h).or_insert_with(|| admin.to_string());
                        }
                        admins.insert(admin.to_string(), k);
                    } else {
                        // Keep the name known, so quorums naming it are not reported twice.
                        admins
                            .entry(admin.to_string())
                            .or_insert(AdminKey::Address(String::new()));
                    }
                }
            }
        }
    }

    let mut tags = TagSeen {
        first: HashMap::new(),
    };
    let mut policy = Policy {
        name,
        hash: [0; 32],
        admins: BTreeMap::new(),
        deny: Vec::new(),
        allow: Vec::new(),
        limits: Vec::new(),
        time_windows: Vec::new(),
        approvals: Vec::new(),
        governance: Governance::default(),
        emergency: EmergencyStops::default(),
        recovery: None,
        channels: ChannelRules::default(),
        onchain: OnchainFees::default(),
        network: cx.network,
        fleet_members: BTreeMap::new(),
    };
    // First: the rules' `members` name the nodes it admits.
    policy.fleet_members = fleet_members(cx, &root);

    for (t, span) in sections(cx, &root, "deny") {
        let f = fields(cx, t, span.clone(), "deny", "[[deny]]");
        let tag = tags.tag(cx, &f, "[[deny]]");
        let mode = f.mode(cx, "[[deny]]");
        let destinations = destinations(cx, &f, "[[deny]]");
        if destinations.is_empty()
            && !f.map.contains_key("payees")
            && !f.map.contains_key("addresses")
        {
            cx.err(
                span,
                format!("[[deny]] \"{tag}\" lists nothing; add `payees` or `addresses`"),
            );
        }
        let members = members(cx, &f, "[[deny]]", &tag, &policy.fleet_members);
        policy.deny.push(DenyRule {
            tag,
            mode,
            destinations,
            members,
        });
    }

    for (t, span) in sections(cx, &root, "allowlist") {
        let f = fields(cx, t, span.clone(), "allowlist", "[[allowlist]]");
        let tag = tags.tag(cx, &f, "[[allowlist]]");
        let destinations = destinations(cx, &f, "[[allowlist]]");
        if destinations.is_empty()
            && !f.map.contains_key("payees")
            && !f.map.contains_key("addresses")
        {
            cx.err(
                span,
                format!("[[allowlist]] \"{tag}\" lists nothing; add `payees` or `addresses`"),
            );
        }
        policy.allow.push(AllowRule { tag, destinations });
    }

    let mut limit_spans = Vec::new();
    for (t, span) in sections(cx, &root, "limit") {
        let what = "[[limit]]";
        let f = fields(cx, t, span.clone(), "limit", what);
        let tag = tags.tag(cx, &f, what);
        let mode = f.mode(cx, what);
        let window_secs = match f.required_string(cx, "window", what, "24h") {
            Some((w, _)) if w == "payment" => Some(None),
            Some(_) => match f.duration(cx, "window", what) {
                Some((secs, wspan)) if secs % 60 != 0 => {
                    cx.err(wspan, format!("`window` in {what}: windows are counted in whole minutes; use e.g. \"{}m\"", secs / 60 + 1));
                    None
                }
                Some((secs, wspan)) if secs > MAX_WINDOW_SECS => {
                    cx.err(wspan, format!("`window` in {what}: {} is longer than the longest window Warden keeps ({})", format_duration(secs), format_duration(MAX_WINDOW_SECS)));
                    None
                }
                Some((secs, _)) => Some(Some(secs)),
                None => None,
            },
            None => None,
        };
        let max_amount = f.amount(cx, "max_amount", what);
        let max_count = match f.integer(cx, "max_count", what) {
            Some((n, s)) if n < 1 => {
                cx.err(s, format!("`max_count` in {what} must be 1 or more"));
                None
            }
            Some((n, s)) => Some((n as u64, s)),
            None => None,
        };
        if !f.map.contains_key("max_amount") && !f.map.contains_key("max_count") {
            cx.err(
                span.clone(),
                format!("{what} \"{tag}\" limits nothing; add `max_amount` and/or `max_count`"),
            );
        }
        if let (Some(None), Some((_, s))) = (&window_secs, &max_count) {
            cx.err(s.clone(), format!("`max_count` in {what} \"{tag}\": a per-payment limit cannot count payments; give it a rolling `window` such as \"1h\""));
        }
        let listed = destinations(cx, &f, what);
        let scope = match f.string(cx, "scope", what, "node") {
            None if listed.is_empty() => LimitScope::Node,
            None => LimitScope::Destinations(listed),
            Some((s, sspan)) => match (s.as_str(), listed.is_empty()) {
                ("node", true) => LimitScope::Node,
                ("each-destination", true) => LimitScope::EachDestination,
                ("fleet", true) => LimitScope::Fleet,
                ("node" | "each-destination" | "fleet", false) => {
                    cx.err(sspan, format!("{what} \"{tag}\" sets both `scope` and a destination list; a limit with `payees`/`addresses` counts those destinations together, so drop `scope`"));
                    LimitScope::Node
                }
                (other, _) => {
                    cx.err(sspan, format!("`scope` in {what}: \"{other}\" is not a scope; use \"node\", \"each-destination\" or \"fleet\""));
                    LimitScope::Node
                }
            },
        };
        limit_spans.push((
            max_amount.as_ref().and_then(|a| a.1.clone()),
            max_count.as_ref().and_then(|c| c.1.clone()),
        ));
        let members = members(cx, &f, what, &tag, &policy.fleet_members);
        if let (LimitScope::Fleet, Members::Only(_), Some((mspan, _))) =
            (&scope, &members, f.item("members"))
        {
            cx.err(mspan, format!("{what} \"{tag}\" has scope = \"fleet\", which counts every member's payments together; `members` cannot narrow it. Drop `members`, or give each member its own limit (scope = \"node\" with `members`)"));
        }
        policy.limits.push(LimitRule {
            tag,
            mode,
            window_secs: window_secs.flatten(),
            max_amount_msat: max_amount.map(|a| a.0),
            max_count: max_count.map(|c| c.0),
            scope,
            members,
        });
    }
    check_limit_ordering(cx, &policy.limits, &limit_spans);

    for (t, span) in sections(cx, &root, "time_window") {
        let what = "[[time_window]]";
        let f = fields(cx, t, span.clone(), "time_window", what);
        let tag = tags.tag(cx, &f, what);
        let mode = f.mode(cx, what);
        let above_msat = f.amount(cx, "above", what).map(|a| a.0);
        let mut days = Vec::new();
        if f.map.contains_key("days") {
            for (d, dspan) in f.strings(cx, "days", what) {
                match WEEKDAYS.iter().position(|w| *w == d.to_ascii_lowercase()) {
                    Some(i) if !days.contains(&(i as u8)) => days.push(i as u8),
                    Some(_) => cx.err(dspan, format!("\"{d}\" appears twice in `days` of {what}")),
                    None => cx.err(dspan, format!("\"{d}\" in `days` of {what} is not a day; use mon, tue, wed, thu, fri, sat, sun")),
                }
            }
            if days.is_empty() {
                cx.err(
                    span.clone(),
                    format!(
                        "{what} \"{tag}\" allows no day at all; list the days payments are allowed"
                    ),
                );
            }
        } else {
            days = (0..7).collect();
        }
        days.sort_unstable();
        let mut clock = |key: &str| -> Option<u16> {
            let (s, sspan) =
                f.required_string(cx, key, what, if key == "from" { "08:00" } else { "20:00" })?;
            match parse_hhmm(&s) {
                Some(m) => Some(m),
                None => {
                    cx.err(sspan, format!("`{key}` in {what}: \"{s}\" is not a time of day; write HH:MM in UTC, e.g. \"08:00\" (\"24:00\" for the end of the day)"));
                    None
                }
            }
        };
        let from = clock("from");
        let to = clock("to");
        if let (Some(a), Some(b)) = (from, to) {
            if a == b {
                cx.err(
                    span.clone(),
                    format!(
                        "{what} \"{tag}\": `from` and `to` are the same time, which allows nothing"
                    ),
                );
            }
        }
        let members = members(cx, &f, what, &tag, &policy.fleet_members);
        policy.time_windows.push(TimeWindowRule {
            tag,
            mode,
            above_msat,
            days,
            from_minute: from.unwrap_or(0),
            to_minute: to.unwrap_or(0),
            members,
        });
    }

    for (t, span) in sections(cx, &root, "approval") {
        let what = "[[approval]]";
        let f = fields(cx, t, span.clone(), "approval", what);
        let tag = tags.tag(cx, &f, what);
        let mode = f.mode(cx, what);
        let above_msat = f.amount(cx, "above", what).map(|a| a.0);
        let unlisted_destination = f.boolean(cx, "unlisted_destination", what).unwrap_or(false);
        if !f.map.contains_key("above") && !unlisted_destination {
            cx.err(span.clone(), format!("{what} \"{tag}\" never applies; set `above` (an amount) and/or `unlisted_destination = true`"));
        }
        let expiry_secs = match f.duration(cx, "expiry", what) {
            Some((secs, espan)) if !(60..=MAX_EXPIRY_SECS).contains(&secs) => {
                cx.err(
                    espan,
                    format!(
                        "`expiry` in {what} \"{tag}\" is {}; it must be between 1m and 30d",
                        format_duration(secs)
                    ),
                );
                3_600
            }
            Some((secs, _)) => secs,
            None => 3_600,
        };
        let quorum = match f.item("quorum") {
            None => {
                cx.err(span.clone(), format!("{what} \"{tag}\" is missing `quorum`; add quorum = {{ need = 2, of = [\"alice\", \"bob\", \"carol\"] }}"));
                None
            }
            Some((qspan, item)) => match item.as_table_like() {
                None => {
                    cx.err(qspan, format!("`quorum` in {what} must be a table: {{ need = 2, of = [\"alice\", \"bob\"] }}"));
                    None
                }
                Some(qt) => Some(quorum(
                    cx,
                    qt,
                    item_span(item).or(qspan),
                    &format!("the quorum of [[approval]] \"{tag}\""),
                    &admins,
                )),
            },
        };
        let members = members(cx, &f, what, &tag, &policy.fleet_members);
        policy.approvals.push(ApprovalRule {
            tag,
            mode,
            above_msat,
            unlisted_destination,
            quorum: quorum.unwrap_or(Quorum {
                need: 0,
                of: Vec::new(),
            }),
            expiry_secs,
            members,
        });
    }
    policy.governance = governance(cx, &root, &policy.approvals, &admins);
    policy.emergency = emergency_stops(cx, &root);
    policy.recovery = recovery(cx, &root, &identities);
    policy.channels = channel_rules(cx, &root);
    policy.onchain = onchain_fees(cx, &root);
    policy.admins = admins;
    policy
}

/// Default time a loosening change waits after its quorum, during which any admin can veto it.
pub const DEFAULT_LOOSEN_DELAY_SECS: u64 = 86_400;
/// Default time a proposed policy change stays open for signatures.
pub const DEFAULT_PROPOSAL_EXPIRY_SECS: u64 = 86_400;

/// `[governance]`: who approves policy changes, and how long a loosening waits. Without the
/// section (or its `quorum`), the quorum is the largest `[[approval]]` quorum (most signatures
/// needed, then most members); with no approval rule either, every declared admin must sign.
fn governance(
    cx: &mut Cx,
    root: &Fields,
    approvals: &[ApprovalRule],
    admins: &BTreeMap<String, AdminKey>,
) -> Governance {
    let what = "[governance]";
    let mut g = Governance {
        quorum: default_governance_quorum(approvals, admins),
        quorum_declared: false,
        loosen_delay_secs: DEFAULT_LOOSEN_DELAY_SECS,
        expiry_secs: DEFAULT_PROPOSAL_EXPIRY_SECS,
    };
    let Some((kspan, item)) = root.item("governance") else {
        return g;
    };
    let Some(t) = item.as_table_like() else {
        cx.err(kspan, "`governance` must be a table: [governance]");
        return g;
    };
    let f = fields(cx, t, item_span(item).or(kspan), "governance", what);
    if let Some((qspan, q)) = f.item("quorum") {
        match q.as_table_like() {
            None => cx.err(qspan, format!("`quorum` in {what} must be a table: {{ need = 2, of = [\"alice\", \"bob\", \"carol\"] }}")),
            Some(qt) => {
                g.quorum = quorum(cx, qt, item_span(q).or(qspan), "the quorum of [governance]", admins);
                g.quorum_declared = true;
            }
        }
    }
    if let Some((secs, _)) = f.duration(cx, "loosen_delay", what) {
        g.loosen_delay_secs = secs;
    }
    match f.duration(cx, "expiry", what) {
        Some((secs, espan)) if !(60..=MAX_EXPIRY_SECS).contains(&secs) => cx.err(
            espan,
            format!(
                "`expiry` in {what} is {}; it must be between 1m and 30d",
                format_duration(secs)
            ),
        ),
        Some((secs, _)) => g.expiry_secs = secs,
        None => {}
    }
    g
}

/// A key declared as `{ pubkey = "02..." }` or `{ address = "bc1q..." }` (an admin's, or the
/// recovery key); `None` after reporting what is wrong.
fn key_entry(cx: &mut Cx, et: &dyn TableLike, aspan: Span, what: &str) -> Option<AdminKey> {
    let what = what.to_string();
    let f = fields(cx, et, aspan.clone(), "admins", &what);
    let pubkey = f.string(cx, "pubkey", &what, "02...");
    let address = f.string(cx, "address", &what, "bc1q...");
    match (pubkey, address) {
        (Some((pk, span)), None) => match PublicKey::from_str(&pk)
            .ok()
            .filter(|_| is_compressed_hex(&pk))
        {
            Some(k) => Some(AdminKey::PublicKey(k)),
            None => {
                cx.err(span, format!("`pubkey` of {what} is not a compressed secp256k1 public key (66 hex characters)"));
                None
            }
        },
        (None, Some((a, span))) => {
            use lightning_signer::bitcoin::AddressType;
            match lightning_signer::bitcoin::Address::from_str(&a)
                .map(|u| u.assume_checked().address_type())
            {
                Err(_) => {
                    cx.err(
                        span,
                        format!("`address` of {what}: \"{a}\" is not a Bitcoin address"),
                    );
                    None
                }
                // What a hardware wallet signs a message with (BIP137).
                Ok(Some(AddressType::P2pkh | AddressType::P2wpkh | AddressType::P2sh)) => {
                    Some(AdminKey::Address(a))
                }
                Ok(_) => {
                    cx.err(
        span,
        format!("`address` of {what}: \"{a}\" cannot sign a Bitcoin message Warden verifies; use a P2PKH, P2WPKH or P2SH-P2WPKH address of the admin's key, or a `pubkey`"),
                    );
                    None
                }
            }
        }
        (Some(_), Some(_)) => {
            cx.err(
                aspan.clone(),
                format!("{what} has both `pubkey` and `address`; keep one"),
            );
            None
        }
        (None, None) if f.map.is_empty() && !et.is_empty() => None,
        (None, None) => {
            cx.err(
                aspan.clone(),
                format!("{what} needs `pubkey` (secp256k1, hex) or `address` (Bitcoin address)"),
            );
            None
        }
    }
}

/// `[recovery]`: the recovery key, its delay and the actions it may start.
fn recovery(
    cx: &mut Cx,
    root: &Fields,
    identities: &HashMap<[u8; 20], String>,
) -> Option<Recovery> {
    let what = "[recovery]";
    let (kspan, item) = root.item("recovery")?;
    let Some(t) = item.as_table_like() else {
        cx.err(kspan, "`recovery` must be a table: [recovery]");
        return None;
    };
    let span = item_span(item).or(kspan);
    let f = fields(cx, t, span.clone(), "recovery", what);
    let key = match f.item("key") {
        None => {
            cx.err(span.clone(), format!("{what} is missing `key`, the offline recovery key: key = {{ pubkey = \"02...\" }}"));
            None
        }
        Some((kspan, k)) => match k.as_table_like() {
            None => {
                cx.err(
                    kspan,
                    format!("`key` in {what} must be a table: key = {{ pubkey = \"02...\" }}"),
                );
                None
            }
            Some(kt) => {
                let key = key_entry(cx, kt, item_span(k).or(kspan.clone()), "the recovery key");
                if let Some(k) = &key {
                    if let Some(admin) = key_identities(k).iter().find_map(|h| identities.get(h)) {
                        cx.err(kspan, format!("the recovery key is admin \"{admin}\"'s key; break-glass must not be in the hands of one admin: use a key held apart"));
                    }
                }
                key
            }
        },
    };
    let delay_secs = f
        .duration(cx, "delay", what)
        .map(|d| d.0)
        .unwrap_or(72 * 3_600);
    let delay_blocks = match f.integer(cx, "delay_blocks", what) {
        Some((n, _)) if (0..=100_000).contains(&n) => n as u32,
        Some((n, nspan)) => {
            cx.err(
                nspan,
                format!("`delay_blocks` in {what} is {n}; it must be between 0 and 100000"),
            );
            0
        }
        None => 0,
    };
    let actions = if f.map.contains_key("actions") {
        let mut out = Vec::new();
        for (name, nspan) in f.strings(cx, "actions", what) {
            match RecoveryKind::parse(&name) {
                Some(a) if !out.contains(&a) => out.push(a),
                Some(_) => cx.err(nspan, format!("action \"{name}\" is listed twice in {what}")),
                None => cx.err(nspan, format!("unknown recovery action \"{name}\" in {what}; the actions are \"replace-admins\", \"unfreeze\" and \"sweep\"")),
            }
        }
        out
    } else {
        vec![
            RecoveryKind::ReplaceAdmins,
            RecoveryKind::Unfreeze,
            RecoveryKind::Sweep,
        ]
    };
    let range = match f.integer(cx, "destination_range", what) {
        Some((n, _)) if (1..=100_000).contains(&n) => n as u32,
        Some((n, nspan)) => {
            cx.err(
                nspan,
                format!("`destination_range` in {what} is {n}; it must be between 1 and 100000"),
            );
            1_000
        }
        None => 1_000,
    };
    let destination = match f.string(cx, "destination", what, "wsh(multi(2,xpub.../0/*,...))") {
        None => None,
        Some((text, span)) => match recovery_destination(&text, range, cx.network) {
            Ok(d) => Some(d),
            Err(e) => {
                cx.err(span, format!("`destination` in {what}: {e}"));
                None
            }
        },
    };
    if destination.is_none()
        && actions.contains(&RecoveryKind::Sweep)
        && f.map.contains_key("actions")
    {
        cx.err(
            span.clone(),
            format!("{what} allows \"sweep\" but names no `destination` to sweep to"),
        );
    }
    Some(Recovery {
        key: key?,
        delay_secs,
        delay_blocks,
        actions,
        destination,
    })
}

/// Parse and check a recovery destination descriptor for `network`, and derive its addresses.
fn recovery_destination(
    text: &str,
    range: u32,
    network: Network,
) -> Result<RecoveryDestination, String> {
    use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
    use miniscript::ForEachKey;
    let desc = Descriptor::<DescriptorPublicKey>::from_str(text)
        .map_err(|e| format!("not a valid output descriptor ({e})"))?;
    desc.sanity_check()
        .map_err(|e| format!("the descriptor is not sane ({e})"))?;
    if desc.is_multipath() {
        return Err("a multipath descriptor (<0;1>) names several paths; give one".into());
    }
    let want = lightning_signer::bitcoin::NetworkKind::from(network);
    let mut wrong = None;
    desc.for_each_key(|k| {
        if let DescriptorPublicKey::XPub(x) = k {
            if x.xkey.network != want {
                wrong = Some(x.xkey.to_string());
            }
        }
        true
    });
    if let Some(k) = wrong {
        return Err(format!(
            "the extended key {k} is not for the {network} network"
        ));
    }
    let n = if desc.has_wildcard() { range } else { 1 };
    let mut addresses = std::collections::BTreeSet::new();
    for i in 0..n {
        let d = desc
            .at_derivation_index(i)
            .map_err(|e| format!("index {i} cannot be derived ({e})"))?;
        let a = d
            .address(network)
            .map_err(|e| format!("index {i} has no address ({e})"))?;
        addresses.insert(a.to_string());
    }
    Ok(RecoveryDestination {
        descriptor: text.to_string(),
        range: n,
        addresses,
    })
}

/// `[fleet.members]`: member name = node id. A name is what the member's wardend is
/// configured as (`fleet.member`); a node may be admitted under one name only.
/// A rule's `members`: names or node ids of `[fleet.members]`, kept as names.
fn members(
    cx: &mut Cx,
    f: &Fields,
    what: &str,
    tag: &str,
    fleet: &BTreeMap<String, String>,
) -> Members {
    let Some((kspan, item)) = f.item("members") else {
        return Members::All;
    };
    let listed = f.strings(cx, "members", what);
    let admitted = || {
        if fleet.is_empty() {
            "the policy admits no fleet members; list them in [fleet.members] first".to_string()
        } else {
            format!(
                "its [fleet.members] lists {}",
                fleet.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    };
    if listed.is_empty() {
        if matches!(item.as_value(), Some(Value::Array(a)) if a.is_empty()) {
            cx.err(
                item_span(item).or(kspan),
                format!("`members` in {what} \"{tag}\" is empty, so the rule would apply to no node; list member names or node ids, or drop `members` for every member"),
            );
        }
        return Members::All;
    }
    let mut set = std::collections::BTreeSet::new();
    for (m, span) in listed {
        let id = m.to_ascii_lowercase();
        let name = if fleet.contains_key(&m) {
            Some(m.clone())
        } else {
            fleet
                .iter()
                .find(|(_, node)| **node == id)
                .map(|(n, _)| n.clone())
        };
        match name {
            Some(n) if set.insert(n.clone()) => {}
            Some(n) => cx.err(
                span,
                format!("`members` in {what} \"{tag}\" names member {n} twice"),
            ),
            None => cx.err(
                span,
                format!(
                    "`members` in {what} \"{tag}\": \"{m}\" is neither the name nor the node id of a fleet member; {}",
                    admitted()
                ),
            ),
        }
    }
    if set.is_empty() {
        // Every entry was wrong (each reported): keep the rule for every member meanwhile.
        return Members::All;
    }
    Members::Only(set)
}

fn fleet_members(cx: &mut Cx, root: &Fields) -> BTreeMap<String, String> {
    let what = "[fleet]";
    let mut members = BTreeMap::new();
    let Some((kspan, item)) = root.item("fleet") else {
        return members;
    };
    let Some(t) = item.as_table_like() else {
        cx.err(kspan, "`fleet` must be a table: [fleet.members]");
        return members;
    };
    let f = fields(cx, t, item_span(item).or(kspan), "fleet", what);
    let Some((mspan, m)) = f.item("members") else {
        cx.err(
            f.span.clone(),
            "[fleet] lists no members; write [fleet.members] with one line per node, e.g. node-a = \"02...\"",
        );
        return members;
    };
    let Some(mt) = m.as_table_like() else {
        cx.err(
            mspan,
            "`members` in [fleet] must be a table: [fleet.members] with lines like node-a = \"02...\"",
        );
        return members;
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    for (name, entry) in mt.iter() {
        let espan = mt.key(name).and_then(|k| k.span()).or_else(|| entry.span());
        let valid_name = !name.is_empty()
            && name.len() <= 24
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            cx.err(
                espan.clone(),
                format!("fleet member name \"{name}\" must be 1 to 24 characters of a-z, 0-9 and '-' (as the member's wardend names itself in fleet.member)"),
            );
            continue;
        }
        let node = match entry.as_value() {
            Some(Value::String(s)) => s.value().to_ascii_lowercase(),
            _ => {
                cx.err(
                    espan,
                    format!("fleet member \"{name}\" must be a node id, e.g. {name} = \"02...\""),
                );
                continue;
            }
        };
        if PublicKey::from_str(&node).is_err() || !is_compressed_hex(&node) {
            cx.err(
                espan,
                format!("\"{node}\" for fleet member \"{name}\" is not a node id (66 hex characters, a compressed public key)"),
            );
            continue;
        }
        if let Some(first) = seen.get(&node) {
            cx.err(
                espan,
                format!("node {node} is admitted twice, as \"{first}\" and as \"{name}\"; a node is one member"),
            );
            continue;
        }
        seen.insert(node.clone(), name.to_string());
        members.insert(name.to_string(), node);
    }
    members
}

/// `[emergency_stop]`: each condition is off unless declared.
fn emergency_stops(cx: &mut Cx, root: &Fields) -> EmergencyStops {
    let what = "[emergency_stop]";
    let mut e = EmergencyStops::default();
    let Some((kspan, item)) = root.item("emergency_stop") else {
        return e;
    };
    let Some(t) = item.as_table_like() else {
        cx.err(kspan, "`emergency_stop` must be a table: [emergency_stop]");
        return e;
    };
    let f = fields(cx, t, item_span(item).or(kspan), "emergency_stop", what);
    for key in ["refusals", "auth_failures"] {
        let Some((bspan, b)) = f.item(key) else {
            continue;
        };
        let example = format!("{key} = {{ count = 20, within = \"10m\" }}");
        let Some(bt) = b.as_table_like() else {
            cx.err(
                bspan,
                format!("`{key}` in {what} must be a table: {example}"),
            );
            continue;
        };
        let bwhat = format!("`{key}` in {what}");
        let bf = fields(cx, bt, item_span(b).or(bspan.clone()), "burst", &bwhat);
        let count = match bf.integer(cx, "count", &bwhat) {
            Some((n, _)) if n >= 1 => Some(n as u64),
            Some((_, nspan)) => {
                cx.err(nspan, format!("`count` in {bwhat} must be at least 1"));
                None
            }
            None => {
                if !bf.map.contains_key("count") {
                    cx.err(
                        bspan.clone(),
                        format!("{bwhat} is missing `count`; write {example}"),
                    );
                }
                None
            }
        };
        let within = match bf.duration(cx, "within", &bwhat) {
            Some((secs, _)) => Some(secs),
            None => {
                if !bf.map.contains_key("within") {
                    cx.err(
                        bspan,
                        format!("{bwhat} is missing `within`; write {example}"),
                    );
                }
                None
            }
        };
        if let (Some(count), Some(within_secs)) = (count, within) {
            let b = Some(Burst { count, within_secs });
            if key == "refusals" {
                e.refusals = b;
            } else {
                e.auth_failures = b;
            }
        }
    }
    e.audit_failure = f.boolean(cx, "audit_failure", what).unwrap_or(false);
    match f.integer(cx, "window_percent", what) {
        Some((n, _)) if (1..=100).contains(&n) => e.window_percent = Some(n as u8),
        Some((n, nspan)) => cx.err(
            nspan,
            format!("`window_percent` in {what} is {n}; it must be between 1 and 100"),
        ),
        None => {}
    }
    e
}

/// `[channels]`: each limit off unless declared.
fn channel_rules(cx: &mut Cx, root: &Fields) -> ChannelRules {
    let what = "[channels]";
    let mut c = ChannelRules::default();
    let Some((kspan, item)) = root.item("channels") else {
        return c;
    };
    let Some(t) = item.as_table_like() else {
        cx.err(kspan, "`channels` must be a table: [channels]");
        return c;
    };
    let f = fields(cx, t, item_span(item).or(kspan), "channels", what);
    let positive = |cx: &mut Cx, v: Option<(u64, Span)>, key: &str| match v {
        Some((0, span)) => {
            cx.err(
                span,
                format!("`{key}` in {what} is 0, which would refuse everything; remove it to have no limit"),
            );
            None
        }
        v => v.map(|(n, _)| n),
    };
    let a = f.amount(cx, "max_channel_size", what);
    c.max_channel_size_msat = positive(cx, a, "max_channel_size");
    let a = f.amount(cx, "max_total_capacity", what);
    c.max_total_capacity_msat = positive(cx, a, "max_total_capacity");
    let a = f.amount(cx, "max_per_peer", what);
    c.max_per_peer_msat = positive(cx, a, "max_per_peer");
    let a = f.amount(cx, "max_in_flight", what);
    c.max_in_flight_msat = positive(cx, a, "max_in_flight");
    for key in ["max_channels", "max_htlcs_in_flight"] {
        let n = match f.integer(cx, key, what) {
            Some((n, _)) if n >= 1 => Some(n as u64),
            Some((n, span)) => {
                cx.err(
                    span,
                    format!("`{key}` in {what} is {n}; it must be at least 1 (remove it to have no limit)"),
                );
                None
            }
            None => None,
        };
        if key == "max_channels" {
            c.max_channels = n;
        } else {
            c.max_htlcs_in_flight = n;
        }
    }
    c.allow_private = f.boolean(cx, "allow_private", what).unwrap_or(true);
    if let Some((text, span)) = f.string(cx, "min_outbound", what, "10 %") {
        match text.trim().strip_suffix('%').map(|n| n.trim().parse::<u8>()) {
            Some(Ok(n)) if (1..=100).contains(&n) => c.min_outbound_percent = Some(n),
            _ => cx.err(
                span,
                format!("`min_outbound` in {what} is \"{text}\"; write a percentage between 1 and 100, e.g. min_outbound = \"10 %\""),
            ),
        }
    }
    c
}

/// `[onchain]`: the fee bounds; each key left out keeps its default.
fn onchain_fees(cx: &mut Cx, root: &Fields) -> OnchainFees {
    let what = "[onchain]";
    let mut o = OnchainFees::default();
    let Some((kspan, item)) = root.item("onchain") else {
        return o;
    };
    let Some(t) = item.as_table_like() else {
        cx.err(kspan, "`onchain` must be a table: [onchain]");
        return o;
    };
    let f = fields(cx, t, item_span(item).or(kspan), "onchain", what);
    match f.amount(cx, "max_fee", what) {
        Some((0, span)) => cx.err(
            span,
            format!("`max_fee` in {what} is 0, which would refuse every on-chain spend; set the most one transaction may pay, e.g. max_fee = \"50_000 sat\""),
        ),
        Some((v, _)) => o.max_fee_msat = v,
        None => {}
    }
    if let Some((text, span)) = f.string(cx, "max_feerate", what, "100 sat/vB") {
        match super::units::parse_feerate(&text) {
            Ok(0) => cx.err(
                span,
                format!("`max_feerate` in {what} is 0, which would refuse every on-chain spend; e.g. max_feerate = \"100 sat/vB\""),
            ),
            Ok(v) => o.max_feerate_per_kw = v,
            Err(e) => cx.err(span, format!("`max_feerate` in {what}: {e}")),
        }
    }
    o
}

fn default_governance_quorum(
    approvals: &[ApprovalRule],
    admins: &BTreeMap<String, AdminKey>,
) -> Quorum {
    approvals
        .iter()
        .map(|r| &r.quorum)
        .filter(|q| q.need > 0)
        .max_by_key(|q| (q.need, q.of.len()))
        .cloned()
        .unwrap_or_else(|| Quorum {
            need: admins.len(),
            of: admins.keys().cloned().collect(),
        })
}

fn quorum(
    cx: &mut Cx,
    qt: &dyn TableLike,
    span: Span,
    what: &str,
    admins: &BTreeMap<String, AdminKey>,
) -> Quorum {
    let what = what.to_string();
    let f = fields(cx, qt, span.clone(), "quorum", &what);
    if !f.map.contains_key("of") {
        cx.err(
            span.clone(),
            format!("{what} is missing `of`, the admins who may approve"),
        );
    }
    let listed = f.strings(cx, "of", &what);
    let mut of: Vec<String> = Vec::new();
    for (name, nspan) in &listed {
        if !admins.contains_key(name) {
            cx.err(
                nspan.clone(),
                format!(
                    "unknown admin \"{name}\" in {what}; declare it under [admins] or remove it"
                ),
            );
        } else if of.contains(name) {
            cx.err(
                nspan.clone(),
                format!("admin \"{name}\" is listed twice in {what}"),
            );
        } else {
            of.push(name.clone());
        }
    }
    let need = match f.integer(cx, "need", &what) {
        None => {
            if !f.map.contains_key("need") {
                cx.err(
                    span,
                    format!("{what} is missing `need`, the number of approvals required"),
                );
            }
            0
        }
        Some((n, nspan)) if n < 1 => {
            cx.err(nspan, format!("`need` in {what} must be at least 1"));
            0
        }
        Some((n, nspan)) => {
            if listed.is_empty() && f.map.contains_key("of") {
                // A quorum of nobody can never be met: in [governance] it would lock every
                // change for good.
                cx.err(
                    nspan,
                    format!("`of` in {what} lists no admins, so `need` = {n} can never be met; list the admins who may approve"),
                );
            } else if n as usize > listed.len() && !listed.is_empty() {
                cx.err(
                    nspan,
                    format!("`need` in {what} is {n} but only {} admins are listed in `of`; lower `need` or list more admins", listed.len()),
                );
            }
            n as usize
        }
    };
    Quorum { need, of }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    // Strictly two ASCII digits each: `u16::from_str` alone would take "+9".
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if (h < 24 && m < 60) || (h == 24 && m == 0) {
        Some(h * 60 + m)
    } else {
        None
    }
}

/// A shorter window allowing more than a longer one over the same scope is a mistake: the
/// longer one silently caps it. Report it at the shorter limit's value, naming the tightest
/// longer limit. Scopes compare as sets (the order destinations are listed in does not
/// matter), and the check sorts once per scope instead of comparing every pair, so it is
/// O(n log n) in the number of limits.
fn check_limit_ordering(cx: &mut Cx, limits: &[LimitRule], spans: &[(Span, Span)]) {
    let window_name = |w: Option<u64>| {
        w.map(|s| format!("per {}", format_duration(s)))
            .unwrap_or_else(|| "per payment".into())
    };
    let scope_key = |scope: &LimitScope| -> (u8, Vec<String>, Vec<String>) {
        match scope {
            LimitScope::Node => (0, vec![], vec![]),
            LimitScope::EachDestination => (1, vec![], vec![]),
            LimitScope::Fleet => (3, vec![], vec![]),
            LimitScope::Destinations(set) => {
                let mut n = set.nodes.clone();
                n.sort_unstable();
                n.dedup();
                let mut a = set.addresses.clone();
                a.sort_unstable();
                a.dedup();
                (2, n, a)
            }
        }
    };
    let mut groups: HashMap<(u8, Vec<String>, Vec<String>), Vec<usize>> = HashMap::new();
    for (i, l) in limits.iter().enumerate() {
        if l.mode == Mode::Enforce {
            groups.entry(scope_key(&l.scope)).or_default().push(i);
        }
    }
    let mut found: Vec<(Span, String)> = Vec::new();
    for mut order in groups.into_values() {
        let window = |i: usize| limits[i].window_secs.unwrap_or(0);
        // Longest window first; equal windows are never compared with each other.
        order.sort_by_key(|&i| (std::cmp::Reverse(window(i)), i));
        // The tightest amount and count among limits with a strictly longer window.
        let mut amount: Option<(u64, usize)> = None;
        let mut count: Option<(u64, usize)> = None;
        let mut k = 0;
        while k < order.len() {
            let w = window(order[k]);
            let end = k + order[k..].iter().take_while(|&&i| window(i) == w).count();
            for &i in &order[k..end] {
                let a = &limits[i];
                if let (Some(x), Some((y, j))) = (a.max_amount_msat, amount) {
                    if x > y {
                        let b = &limits[j];
                        found.push((
                            spans[i].0.clone(),
                            format!(
                                "limit \"{}\" allows {} {}, more than limit \"{}\" allows {} ({}); a shorter window cannot allow more than a longer one. Lower this `max_amount` or raise \"{}\"",
                                a.tag, format_msat(x), window_name(a.window_secs), b.tag, window_name(b.window_secs), format_msat(y), b.tag
                            ),
                        ));
                    }
                }
                if let (Some(x), Some((y, j)), Some(_)) = (a.max_count, count, a.window_secs) {
                    if x > y {
                        let b = &limits[j];
                        found.push((
                            spans[i].1.clone(),
                            format!(
                                "limit \"{}\" allows {x} payments {}, more than limit \"{}\" allows {} ({y}); lower this `max_count` or raise \"{}\"",
                                a.tag, window_name(a.window_secs), b.tag, window_name(b.window_secs), b.tag
                            ),
                        ));
                    }
                }
            }
            for &i in &order[k..end] {
                let tighter = |best: Option<(u64, usize)>, v: Option<u64>| match (best, v) {
                    (Some((y, j)), Some(x)) if (x, i) < (y, j) => Some((x, i)),
                    (None, Some(x)) => Some((x, i)),
                    (best, _) => best,
                };
                amount = tighter(amount, limits[i].max_amount_msat);
                count = tighter(count, limits[i].max_count);
            }
            k = end;
        }
    }
    for (span, message) in found {
        cx.err(span, message);
    }
}

/// The key hashes an admin key can sign as: HASH160 of the public key, and HASH160 of its
/// P2SH-P2WPKH redeem script; for an address, what its script commits to. Two admins with a
/// hash in common are one key.
fn key_identities(k: &AdminKey) -> Vec<[u8; 20]> {
    use lightning_signer::bitcoin::address::AddressData;
    use lightning_signer::bitcoin::hashes::hash160;
    let with_nested = |h: [u8; 20]| {
        let mut redeem = vec![0x00, 0x14];
        redeem.extend_from_slice(&h);
        vec![h, hash160::Hash::hash(&redeem).to_byte_array()]
    };
    match k {
        // BIP-340 verifies against the x-only key, so the key with either parity prefix (and
        // every address of either) is the same signer.
        AdminKey::PublicKey(pk) => {
            let x = pk.x_only_public_key().0.serialize();
            [0x02u8, 0x03]
                .iter()
                .flat_map(|parity| {
                    let mut compressed = vec![*parity];
                    compressed.extend_from_slice(&x);
                    with_nested(hash160::Hash::hash(&compressed).to_byte_array())
                })
                .collect()
        }
        AdminKey::Address(a) => {
            let Ok(addr) = lightning_signer::bitcoin::Address::from_str(a) else {
                return Vec::new();
            };
            match addr.assume_checked().to_address_data() {
                AddressData::P2pkh { pubkey_hash } => with_nested(pubkey_hash.to_byte_array()),
                AddressData::P2sh { script_hash } => vec![script_hash.to_byte_array()],
                AddressData::Segwit { witness_program } => {
                    let p = witness_program.program().as_bytes();
                    match <[u8; 20]>::try_from(p) {
                        Ok(h) => with_nested(h),
                        Err(_) => vec![hash160::Hash::hash(p).to_byte_array()],
                    }
                }
                _ => Vec::new(),
            }
        }
    }
}
