//! # warden-cln-plugin
//!
//! Core Lightning's plugin for Warden: what it asks wardend before lightningd acts. The plugin
//! runs inside the node's host, so it links the admin API's client (`warden-client`) and the
//! policy's tags, and nothing of the daemon.
//!
//! ## Where to start
//! [`rpc_command`] reads a command lightningd is about to run and returns the [`Ask`] for
//! wardend (or none); [`incoming_open`] does the same for a peer's open; [`command_reply`] and
//! [`open_reply`] turn wardend's [`Answer`] into the hook's reply. The binary
//! (`src/main.rs`) does the I/O: lightningd's plugin protocol and the gRPC call.
//!
//! ## The one picture
//! ```text
//!  lightningd ──rpc_command / openchannel hook──▶ Ask ──gRPC, mTLS──▶ wardend (decides, counts nothing)
//!      ▲                                                                  │
//!      └────────── continue, or the command's error 2100 / 2101 / 2102 / 2103 ◀── Answer
//! ```
//!
//! CLN's hsmd protocol has no "refused" answer for an on-chain signature: a refusal at signing
//! time stops the node's hsmd, and lightningd with it. So the plugin registers CLN's
//! `rpc_command` hook and reads every command that leads to an on-chain signature
//! (`withdraw`, `multiwithdraw`, `txprepare`, `signpsbt`, `fundchannel`, `fundchannel_start`,
//! `multifundchannel`, `openchannel_init`, `close` with a `destination`) and the `openchannel`
//! and `openchannel2` hooks for channels a peer opens, turns them into a question for wardend
//! ([`Ask`]), and turns wardend's answer into the command's JSON-RPC error or a `continue`.
//!
//! This module is the pure part: payload in, question out, answer in, hook reply out; the
//! binary does the I/O. Nothing here counts a spend: wardend counts it when it signs.

use lightning_signer::bitcoin::psbt::Psbt;
use serde_json::{json, Value};
use warden_policy::tags;

/// JSON-RPC error code of a command Warden's policy refuses.
pub const CODE_REFUSED: i64 = 2100;
/// JSON-RPC error code of a command held for an admin quorum: re-run it once approved.
pub const CODE_HELD: i64 = 2101;
/// JSON-RPC error code of a command whose spend cannot be checked as written.
pub const CODE_UNCHECKABLE: i64 = 2102;
/// JSON-RPC error code when wardend cannot be asked: the command is refused (fail closed).
pub const CODE_UNREACHABLE: i64 = 2103;

/// A channel to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAsk {
    /// The peer's node id, lowercase hex.
    pub peer: String,
    /// Capacity, sat.
    pub amount_sat: u64,
    /// Whether it is unannounced, when the command says.
    pub private: Option<bool>,
    /// Opened by the peer.
    pub incoming: bool,
}

/// What to ask wardend about a command or an incoming open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Nothing this plugin guards: let lightningd go on.
    Nothing,
    /// An on-chain spend to these (address, sat) outputs, at the feerate the command names
    /// (sat/kw), if it names a number.
    Spend {
        /// (address, sat).
        outputs: Vec<(String, u64)>,
        /// sat per 1,000 weight units.
        feerate_per_kw: Option<u64>,
    },
    /// A whole PSBT to sign (`signpsbt`): wardend reads what leaves the wallet and the fee.
    Psbt(Vec<u8>),
    /// A payment of an invoice: checked with wardend (for the rule's sentence at the node);
    /// with `preapprove`, the plugin then has the node preapprove it (`preapproveinvoice`),
    /// because the command does not, and its HTLCs would reach the signer unapproved.
    Payment {
        /// BOLT 11 or BOLT 12, as the command names it.
        invoice: String,
        /// Whether the plugin must make the node preapprove it before the command runs.
        preapprove: bool,
    },
    /// A payment command with only a payment hash (a raw onion): approved only if the signer
    /// already holds that payment approved.
    PaymentHash(Vec<u8>),
    /// A `keysend`: it preapproves by itself (where wardend decides and counts); checked first so
    /// a refusal reaches the operator with its rule, not as `keysend was declined`.
    Keysend {
        /// The payee's node id, hex.
        destination: String,
        /// What it pays.
        amount_msat: u64,
    },
    /// Channel opens, at the funding feerate the command names (sat/kw), if a number.
    Channels {
        /// In order.
        opens: Vec<OpenAsk>,
        /// sat per 1,000 weight units.
        feerate_per_kw: Option<u64>,
    },
    /// The plugin refuses by itself: wardend could not check it, and signing it would stop the
    /// node or spend what nobody checked.
    Refuse {
        /// The tag.
        tag: &'static str,
        /// What to do instead.
        reason: String,
    },
}

/// Wardend's answer to a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Signing would approve it.
    Approved,
    /// Held for a quorum: this request waits for the admins.
    Held {
        /// The rule tags.
        tags: Vec<String>,
        /// The sentence, with the request id and who must approve.
        reason: String,
        /// The approval request.
        request_id: String,
    },
    /// Refused by these rules.
    Refused {
        /// The rule tags.
        tags: Vec<String>,
        /// One sentence per rule.
        reason: String,
    },
    /// wardend could not be asked.
    Unreachable(String),
}

/// A command's parameter by name (object form) or position (array form).
fn param<'a>(params: &'a Value, name: &str, position: usize) -> Option<&'a Value> {
    match params {
        Value::Object(m) => m.get(name),
        Value::Array(a) => a.get(position),
        _ => None,
    }
    .filter(|v| !v.is_null())
}

/// An amount as CLN's JSON-RPC takes it: an integer (sat), or a string in `sat`, `msat` or
/// `btc`, or `all`. `Ok(None)` is `all`.
pub fn parse_amount(v: &Value) -> Result<Option<u64>, String> {
    let text = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("amount {n} is not a whole number of sat"))
        }
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => return Err(format!("amount {other} is not an amount")),
    };
    if text == "all" {
        return Ok(None);
    }
    let whole = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("amount {text:?} is not an amount"))
    };
    if let Some(m) = text.strip_suffix("msat") {
        let msat = whole(m)?;
        if msat % 1_000 != 0 {
            return Err(format!(
                "amount {text:?} is not a whole number of sat, which an on-chain output needs"
            ));
        }
        return Ok(Some(msat / 1_000));
    }
    if let Some(b) = text.strip_suffix("btc") {
        let (int, frac) = b.split_once('.').unwrap_or((b, ""));
        if frac.len() > 8 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("amount {text:?} has more than 8 decimals of btc"));
        }
        let sat = whole(int)?
            .checked_mul(100_000_000)
            .and_then(|s| s.checked_add(whole(&format!("{frac:0<8}")).ok()?))
            .ok_or_else(|| format!("amount {text:?} is too large"))?;
        return Ok(Some(sat));
    }
    whole(text.strip_suffix("sat").unwrap_or(&text)).map(Some)
}

fn uncheckable(reason: String) -> Ask {
    Ask::Refuse {
        tag: tags::SPEND_UNCHECKABLE,
        reason: format!("rule {}: {reason}", tags::SPEND_UNCHECKABLE),
    }
}

/// A feerate as lightningd's `feerate` parameters take it, in sat per 1,000 weight units: a
/// number with `perkw`, or with `perkb` or no suffix (per 1,000 virtual bytes, a quarter of
/// that per kw). The named ones (`slow`, `normal`, `urgent`, `12blocks`...) are lightningd's
/// own estimates: `None` here, and the fee is judged from the transaction when it is signed
/// (and at its `signpsbt`).
pub fn parse_feerate(v: Option<&Value>) -> Option<u64> {
    // As lightningd converts (lightningd/feerate.c, bitcoin/feerate.c): per kB rounded up to
    // per kw, and never below the 253 sat/kw floor.
    let per_kw = |perkb: u64| perkb.div_ceil(4).max(253);
    let text = match v? {
        Value::Number(n) => return n.as_u64().map(per_kw),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    if let Some(n) = text.strip_suffix("perkw") {
        return n.trim().parse::<u64>().ok().map(|n| n.max(253));
    }
    let n = text.strip_suffix("perkb").unwrap_or(&text);
    n.trim().parse::<u64>().ok().map(per_kw)
}

/// A `close_to` names where the channel's funds go when it closes; VLS refuses to set up a
/// channel that closes to an outside address, which stops the node, so it is refused here.
fn no_close_to(v: Option<&Value>, command: &str) -> Result<(), Ask> {
    match v {
        None => Ok(()),
        Some(dest) => Err(uncheckable(format!(
            "`{command}` with close_to {dest}: VLS refuses to set up a channel that closes to an outside address, and that refusal stops the node; open without close_to (the channel then closes to the node's wallet) and withdraw afterwards, which Warden checks"
        ))),
    }
}

/// An amount that must be known: `all` cannot be checked before lightningd picks the coins.
fn known_amount(v: Option<&Value>, what: &str, command: &str) -> Result<u64, Ask> {
    let Some(v) = v else {
        return Err(uncheckable(format!(
            "`{command}` without {what} cannot be checked"
        )));
    };
    match parse_amount(v) {
        Ok(Some(sat)) => Ok(sat),
        Ok(None) => Err(uncheckable(format!(
            "`{command}` with {what} \"all\" cannot be checked before lightningd picks the coins; give the amount in sat (listfunds shows what is available)"
        ))),
        Err(e) => Err(uncheckable(format!("`{command}`: {e}"))),
    }
}

/// A node id as commands take it (`id` or `id@host:port`), lowercase.
fn node_id(v: Option<&Value>, command: &str) -> Result<String, Ask> {
    let text = v.and_then(Value::as_str).unwrap_or_default();
    let id = text
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if id.len() == 66 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(uncheckable(format!(
            "`{command}` names the peer {text:?}, which is not a node id"
        )))
    }
}

/// `[{"address": amount}, ...]` as `multiwithdraw` and `txprepare` take their outputs.
fn outputs_list(v: Option<&Value>, command: &str) -> Result<Vec<(String, u64)>, Ask> {
    let Some(Value::Array(items)) = v else {
        return Err(uncheckable(format!(
            "`{command}` without its outputs cannot be checked"
        )));
    };
    let mut out = Vec::new();
    for item in items {
        let Some(map) = item.as_object().filter(|m| m.len() == 1) else {
            return Err(uncheckable(format!(
                "`{command}`: output {item} is not {{\"address\": amount}}"
            )));
        };
        for (address, amount) in map {
            let sat = known_amount(Some(amount), "an output amount", command)?;
            out.push((address.clone(), sat));
        }
    }
    Ok(out)
}

/// A `signpsbt`'s PSBT, base64 as lightningd takes it, as bytes for wardend.
fn psbt_bytes(v: Option<&Value>) -> Result<Vec<u8>, Ask> {
    use base64::Engine;
    let text = v.and_then(Value::as_str).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| uncheckable(format!("`signpsbt`: the PSBT is not base64 ({e})")))?;
    Psbt::deserialize(&bytes)
        .map_err(|e| uncheckable(format!("`signpsbt`: the PSBT does not parse ({e})")))?;
    Ok(bytes)
}

/// The key a hook payload carries when the request it describes repeated a key: lightningd
/// acts on the first of repeated keys, a JSON parser keeps the last, so the plugin would check
/// another command than the one lightningd runs. The plugin's reader marks such payloads
/// ([`mark_repeated_keys`]) and the command is refused.
pub const REPEATED_KEYS: &str = "warden_repeated_keys";

/// One JSON message from lightningd, with every key that appears twice in an object; the
/// value kept is the first, as lightningd's own parser reads it.
struct FirstKeys<'a>(&'a std::cell::RefCell<Vec<String>>);

impl<'de> serde::de::DeserializeSeed<'de> for FirstKeys<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FirstKeys<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(FirstKeys(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(FirstKeys(self.0))?;
            if out.contains_key(&k) {
                self.0.borrow_mut().push(k);
            } else {
                out.insert(k, v);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Read one message lightningd sent the plugin. An `rpc_command` hook call whose command
/// repeats a key comes back rewritten: the first of each repeated key kept (what lightningd
/// runs) and the repeated keys listed under [`REPEATED_KEYS`], so the command is refused.
/// `None`: pass the message on as it is.
pub fn mark_repeated_keys(message: &str) -> Option<String> {
    use serde::de::DeserializeSeed;
    let repeated = std::cell::RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_str(message);
    let mut value = FirstKeys(&repeated).deserialize(&mut de).ok()?;
    let repeated = repeated.into_inner();
    if repeated.is_empty() || value.get("method").and_then(Value::as_str) != Some("rpc_command") {
        return None;
    }
    let cmd = value
        .get_mut("params")
        .and_then(|p| p.get_mut("rpc_command"))
        .and_then(Value::as_object_mut)?;
    cmd.insert(REPEATED_KEYS.to_string(), json!(repeated));
    Some(value.to_string())
}

/// A channel's capacity from its command: our amount plus what we ask the peer to add
/// (`request_amt`, liquidity ads).
fn capacity(amount: Option<&Value>, request: Option<&Value>, command: &str) -> Result<u64, Ask> {
    let ours = known_amount(amount, "an amount", command)?;
    let theirs = match request {
        None => 0,
        Some(v) => known_amount(Some(v), "a request_amt", command)?,
    };
    ours.checked_add(theirs)
        .ok_or_else(|| uncheckable(format!("`{command}`: the amounts overflow")))
}

/// What to ask about an `rpc_command` hook call (`{"rpc_command": {"id", "method", "params"}}`).
///
/// Every call is checked, the inner calls lightningd and its plugins make for a command
/// included: a client chooses its request's id, so an id that looks chained proves nothing,
/// and a check counts nothing (the signature counts). An inner `signpsbt` is checked on its
/// whole PSBT, so the fee lightningd chose is judged before it is signed.
pub fn rpc_command(payload: &Value) -> Ask {
    let cmd = payload.get("rpc_command").unwrap_or(payload);
    let method = cmd
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(keys) = cmd.get(REPEATED_KEYS) {
        return uncheckable(format!(
            "the request repeats the key(s) {keys}; lightningd would run the first and Warden would check the last, so it is refused: send each key once"
        ));
    }
    let params = cmd.get("params").cloned().unwrap_or(Value::Null);
    let p = |name: &str, pos: usize| param(&params, name, pos);
    let result = (|| -> Result<Ask, Ask> {
        Ok(match method {
            "withdraw" => {
                let address = p("destination", 0)
                    .and_then(Value::as_str)
                    .ok_or_else(|| uncheckable("`withdraw` without a destination".into()))?;
                let sat = known_amount(p("satoshi", 1), "an amount", method)?;
                Ask::Spend {
                    outputs: vec![(address.to_string(), sat)],
                    feerate_per_kw: parse_feerate(p("feerate", 2)),
                }
            }
            "multiwithdraw" | "txprepare" => Ask::Spend {
                outputs: outputs_list(p("outputs", 0), method)?,
                feerate_per_kw: parse_feerate(p("feerate", 1)),
            },
            "signpsbt" => Ask::Psbt(psbt_bytes(p("psbt", 0))?),
            "fundchannel" | "fundchannel_start" => {
                // Both take id, amount, feerate, announce first; fundchannel has close_to at 7
                // and request_amt at 8 (after minconf, utxos, push_msat: CLN v25.09's
                // plugins/spender/fundchannel.c), fundchannel_start close_to at 4.
                let (request, close_to) = if method == "fundchannel" {
                    (p("request_amt", 8), p("close_to", 7))
                } else {
                    (None, p("close_to", 4))
                };
                no_close_to(close_to, method)?;
                Ask::Channels {
                    opens: vec![OpenAsk {
                        peer: node_id(p("id", 0), method)?,
                        amount_sat: capacity(p("amount", 1), request, method)?,
                        private: announce(p("announce", 3)),
                        incoming: false,
                    }],
                    feerate_per_kw: parse_feerate(p("feerate", 2)),
                }
            }
            "openchannel_init" => {
                no_close_to(p("close_to", 6), method)?;
                Ask::Channels {
                    opens: vec![OpenAsk {
                        peer: node_id(p("id", 0), method)?,
                        amount_sat: capacity(p("amount", 1), p("request_amt", 7), method)?,
                        private: announce(p("announce", 5)),
                        incoming: false,
                    }],
                    feerate_per_kw: parse_feerate(p("funding_feerate", 4)),
                }
            }
            "multifundchannel" => {
                let Some(Value::Array(dests)) = p("destinations", 0) else {
                    return Err(uncheckable(
                        "`multifundchannel` without its destinations cannot be checked".into(),
                    ));
                };
                let mut opens = Vec::new();
                for d in dests {
                    no_close_to(d.get("close_to").filter(|v| !v.is_null()), method)?;
                    opens.push(OpenAsk {
                        peer: node_id(d.get("id"), method)?,
                        amount_sat: capacity(d.get("amount"), d.get("request_amt"), method)?,
                        private: announce(d.get("announce")),
                        incoming: false,
                    });
                }
                Ask::Channels {
                    opens,
                    feerate_per_kw: parse_feerate(p("feerate", 1)),
                }
            }
            // Payments. `pay` and `xpay` preapprove by themselves (the check gives the operator
            // the rule's sentence); `renepay` and the raw commands do not, so the plugin has
            // the node preapprove the invoice before they send an HTLC. Positions as in Core
            // Lightning v25.09 (plugins/pay.c, xpay/xpay.c, renepay/main.c, lightningd/pay.c).
            "pay" => payment(p("bolt11", 0), false, method)?,
            "xpay" => match p("invstring", 0).and_then(Value::as_str) {
                // An offer or a BIP353 name: xpay fetches the invoice and preapproves it.
                Some(s) if s.to_ascii_lowercase().starts_with("lno") || s.contains('@') => {
                    Ask::Nothing
                }
                _ => payment(p("invstring", 0), false, method)?,
            },
            "renepay" => payment(p("invstring", 0), true, method)?,
            "renesendpay" => payment(p("invoice", 10), true, method)?,
            "keysend" => keysend(p("destination", 0), p("amount_msat", 1), method)?,
            "sendpay" => raw_payment(p("bolt11", 4), p("payment_hash", 1), method)?,
            "sendonion" => raw_payment(p("bolt11", 6), p("payment_hash", 2), method)?,
            "injectpaymentonion" => raw_payment(p("invstring", 8), p("payment_hash", 1), method)?,
            "close" => match p("destination", 2).and_then(Value::as_str) {
                None => Ask::Nothing,
                Some(dest) => uncheckable(format!(
                    "`close` to destination {dest}: VLS signs a mutual close only to the node's own wallet, and refusing it at signing time stops the node; close without a destination, then withdraw (which Warden checks)"
                )),
            },
            _ => Ask::Nothing,
        })
    })();
    result.unwrap_or_else(|refusal| refusal)
}

/// A `keysend`'s payee and amount, as Core Lightning v25.09's keysend plugin reads them
/// (`destination`, `amount_msat` with `param_msat`).
fn keysend(destination: Option<&Value>, amount: Option<&Value>, command: &str) -> Result<Ask, Ask> {
    let refuse = |why: String| Ask::Refuse {
        tag: tags::PAYMENT_UNCHECKABLE,
        reason: format!("rule {}: `{command}` {why}", tags::PAYMENT_UNCHECKABLE),
    };
    let text = destination.and_then(Value::as_str).unwrap_or_default();
    if text.len() != 66 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refuse(format!(
            "names the destination {text:?}, which is not a node id"
        )));
    }
    let amount_msat = match amount.map(parse_msat) {
        Some(Ok(msat)) => msat,
        Some(Err(e)) => return Err(refuse(e)),
        None => return Err(refuse("without amount_msat cannot be checked".into())),
    };
    Ok(Ask::Keysend {
        destination: text.to_ascii_lowercase(),
        amount_msat,
    })
}

/// An amount as lightningd's `param_msat` takes it: an integer (msat), or a string in `msat`,
/// `sat` or `btc`.
pub fn parse_msat(v: &Value) -> Result<u64, String> {
    let text = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .ok_or_else(|| format!("amount {n} is not a whole number of msat"))
        }
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => return Err(format!("amount {other} is not an amount")),
    };
    let bad = || format!("amount {text:?} is not an amount in msat, sat or btc");
    let whole = |s: &str| s.parse::<u64>().map_err(|_| bad());
    if let Some(m) = text.strip_suffix("msat") {
        return whole(m);
    }
    if let Some(b) = text.strip_suffix("btc") {
        let (int, frac) = b.split_once('.').unwrap_or((b, ""));
        if frac.len() > 11 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("amount {text:?} has more than 11 decimals of btc"));
        }
        return whole(int)?
            .checked_mul(100_000_000_000)
            .and_then(|m| m.checked_add(whole(&format!("{frac:0<11}")).ok()?))
            .ok_or_else(|| format!("amount {text:?} is too large"));
    }
    match text.strip_suffix("sat") {
        Some(s) => whole(s)?
            .checked_mul(1_000)
            .ok_or_else(|| format!("amount {text:?} is too large")),
        None => whole(&text),
    }
}

/// A payment command's invoice: what to ask, or a refusal when it names none.
fn payment(invoice: Option<&Value>, preapprove: bool, command: &str) -> Result<Ask, Ask> {
    match invoice.and_then(Value::as_str).map(str::trim) {
        Some(i) if !i.is_empty() => Ok(Ask::Payment {
            invoice: i.to_string(),
            preapprove,
        }),
        _ => Err(Ask::Refuse {
            tag: tags::PAYMENT_UNCHECKABLE,
            reason: format!(
                "rule {}: `{command}` without its invoice cannot be checked; give the invoice",
                tags::PAYMENT_UNCHECKABLE
            ),
        }),
    }
}

/// A raw payment command: its invoice when it carries one (the node then preapproves it), else
/// its payment hash, which the signer must already hold approved (`pay` names the invoice on
/// one part of a payment only; its other parts and retries name the hash).
fn raw_payment(
    invoice: Option<&Value>,
    payment_hash: Option<&Value>,
    command: &str,
) -> Result<Ask, Ask> {
    if invoice
        .and_then(Value::as_str)
        .is_some_and(|i| !i.trim().is_empty())
    {
        return payment(invoice, true, command);
    }
    let hash = payment_hash
        .and_then(Value::as_str)
        .and_then(|h| hex::decode(h).ok())
        .filter(|h| h.len() == 32)
        .ok_or_else(|| Ask::Refuse {
            tag: tags::PAYMENT_UNCHECKABLE,
            reason: format!(
                "rule {}: `{command}` names neither an invoice nor a 32-byte payment hash; pay with `pay`, `xpay` or `renepay`",
                tags::PAYMENT_UNCHECKABLE
            ),
        })?;
    Ok(Ask::PaymentHash(hash))
}

/// `announce` as "private?": a channel is announced unless the command says `announce: false`
/// (CLN's default).
fn announce(v: Option<&Value>) -> Option<bool> {
    Some(!v.and_then(Value::as_bool).unwrap_or(true))
}

/// What to ask about an incoming open (`openchannel` or `openchannel2` hook).
pub fn incoming_open(hook: &str, payload: &Value) -> Ask {
    let Some(open) = payload.get(hook) else {
        return uncheckable(format!("the {hook} hook's payload has no `{hook}` object"));
    };
    let field = if hook == "openchannel2" {
        "their_funding_msat"
    } else {
        "funding_msat"
    };
    let msat = match open.get(field) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim_end_matches("msat").parse().ok(),
        _ => None,
    };
    let Some(msat) = msat else {
        return uncheckable(format!(
            "the {hook} hook's `{field}` is missing or not msat"
        ));
    };
    let peer = match node_id(open.get("id"), hook) {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    let flags = open
        .get("channel_flags")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    Ask::Channels {
        opens: vec![OpenAsk {
            peer,
            amount_sat: msat / 1_000,
            private: Some(flags & 1 == 0),
            incoming: true,
        }],
        feerate_per_kw: None,
    }
}

/// The `rpc_command` hook's reply: `continue`, or the command's JSON-RPC error.
pub fn command_reply(answer: &Answer) -> Value {
    let error = |code: i64, message: &str, tags: &[String], request_id: Option<&str>| {
        json!({"return": {"error": {
            "code": code,
            "message": message,
            "data": {"tags": tags, "request_id": request_id},
        }}})
    };
    match answer {
        Answer::Approved => json!({"result": "continue"}),
        Answer::Held {
            tags,
            reason,
            request_id,
        } => error(
            CODE_HELD,
            &format!("{reason}; run the command again once the admins approved it"),
            tags,
            Some(request_id),
        ),
        Answer::Refused { tags, reason } => {
            let code = if tags
                .iter()
                .any(|t| t == tags::SPEND_UNCHECKABLE || t == tags::PAYMENT_UNCHECKABLE)
            {
                CODE_UNCHECKABLE
            } else {
                CODE_REFUSED
            };
            error(code, reason, tags, None)
        }
        Answer::Unreachable(why) => error(
            CODE_UNREACHABLE,
            &unreachable_reason(why),
            &[tags::SIGNER_UNREACHABLE.to_string()],
            None,
        ),
    }
}

/// The answer when the node's own preapproval of an invoice (which the plugin asked for) was
/// declined: the signer refused it at the point that counts (the rule is in wardend's log and
/// events), or lightningd could not be asked.
pub fn declined(command: &str, why: &str) -> Answer {
    let tag = tags::VLS_REFUSED;
    Answer::Refused {
        tags: vec![tag.to_string()],
        reason: format!(
            "rule {tag}: the node's preapproval of the invoice `{command}` pays was declined ({why}); nothing was sent. wardend's log and events name the rule (wardenctl watch)"
        ),
    }
}

/// The `openchannel`/`openchannel2` hook's reply: `continue`, or `reject` with the reason
/// (which lightningd sends to the peer).
pub fn open_reply(answer: &Answer) -> Value {
    match answer {
        Answer::Approved => json!({"result": "continue"}),
        Answer::Held { reason, .. } | Answer::Refused { reason, .. } => {
            json!({"result": "reject", "error_message": reason})
        }
        Answer::Unreachable(why) => {
            json!({"result": "reject", "error_message": unreachable_reason(why)})
        }
    }
}

fn unreachable_reason(why: &str) -> String {
    format!(
        "rule {}: wardend could not be asked ({why}); nothing is signed unchecked, so the command is refused: check that wardend runs and the plugin's warden-* options",
        tags::SIGNER_UNREACHABLE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::bitcoin::{Address, Network};

    const PEER: &str = "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa";
    const ADDR: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

    fn hook(method: &str, params: Value) -> Value {
        json!({"rpc_command": {"id": 7, "method": method, "params": params}})
    }

    #[test]
    fn amounts_are_read_as_cln_writes_them() {
        assert_eq!(parse_amount(&json!(1500)), Ok(Some(1500)));
        assert_eq!(parse_amount(&json!("1500sat")), Ok(Some(1500)));
        assert_eq!(parse_amount(&json!("1500000msat")), Ok(Some(1500)));
        assert_eq!(parse_amount(&json!("0.015btc")), Ok(Some(1_500_000)));
        assert_eq!(parse_amount(&json!("1btc")), Ok(Some(100_000_000)));
        assert_eq!(parse_amount(&json!("all")), Ok(None));
        assert_eq!(
            parse_amount(&json!("1500500msat")),
            Err("amount \"1500500msat\" is not a whole number of sat, which an on-chain output needs".into())
        );
        assert!(parse_amount(&json!("0.000000001btc"))
            .unwrap_err()
            .contains("8 decimals"));
        assert!(parse_amount(&json!("lots"))
            .unwrap_err()
            .contains("not an amount"));
    }

    #[test]
    fn withdraw_is_read_by_name_and_by_position_and_all_is_refused() {
        let want = Ask::Spend {
            outputs: vec![(ADDR.into(), 25_000)],
            feerate_per_kw: None,
        };
        let named = hook("withdraw", json!({"destination": ADDR, "satoshi": 25_000}));
        assert_eq!(rpc_command(&named), want);
        let positional = hook("withdraw", json!([ADDR, "25000sat", "normal"]));
        assert_eq!(rpc_command(&positional), want);
        let all = hook("withdraw", json!({"destination": ADDR, "satoshi": "all"}));
        match rpc_command(&all) {
            Ask::Refuse { tag, reason } => {
                assert_eq!(tag, tags::SPEND_UNCHECKABLE);
                assert!(reason.contains("give the amount in sat"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Commands the plugin does not guard go on untouched.
        assert_eq!(rpc_command(&hook("getinfo", json!({}))), Ask::Nothing);
        assert_eq!(rpc_command(&hook("close", json!([PEER]))), Ask::Nothing);
    }

    #[test]
    fn multiwithdraw_txprepare_and_channel_commands_name_every_output_and_channel() {
        let outs = json!([{ADDR: 1000}, {"bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf5m0y": "2000sat"}]);
        match rpc_command(&hook("multiwithdraw", json!({"outputs": outs}))) {
            Ask::Spend { outputs: o, .. } => {
                assert_eq!(o.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1000, 2000])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rpc_command(&hook("txprepare", json!([outs]))),
            Ask::Spend { outputs: o, .. } if o.len() == 2
        ));
        let fund = hook(
            "fundchannel",
            json!({"id": format!("{PEER}@127.0.0.1:9735"), "amount": 6_000_000, "announce": false}),
        );
        assert_eq!(
            rpc_command(&fund),
            Ask::Channels {
                opens: vec![OpenAsk {
                    peer: PEER.into(),
                    amount_sat: 6_000_000,
                    private: Some(true),
                    incoming: false
                }],
                feerate_per_kw: None
            }
        );
        let multi = hook(
            "multifundchannel",
            json!({"destinations": [{"id": PEER, "amount": "1000000sat"}, {"id": PEER, "amount": 2000}]}),
        );
        match rpc_command(&multi) {
            Ask::Channels { opens: o, .. } => {
                assert_eq!(o.len(), 2);
                assert_eq!(o[0].private, Some(false));
            }
            other => panic!("{other:?}"),
        }
        let bad = hook("fundchannel", json!({"id": "nobody", "amount": 1}));
        assert!(
            matches!(rpc_command(&bad), Ask::Refuse { reason, .. } if reason.contains("not a node id"))
        );
        let close = hook("close", json!({"id": PEER, "destination": ADDR}));
        assert!(
            matches!(rpc_command(&close), Ask::Refuse { reason, .. } if reason.contains("close without a destination"))
        );
    }

    #[test]
    fn signpsbt_asks_about_the_outputs_that_leave_the_wallet() {
        use base64::Engine;
        use lightning_signer::bitcoin::bip32::{DerivationPath, Fingerprint};
        use lightning_signer::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
        use lightning_signer::bitcoin::{
            absolute::LockTime, transaction::Version, Amount, CompressedPublicKey, OutPoint,
            ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
        };
        let secp = Secp256k1::new();
        let key =
            |b: u8| PublicKey::from_secret_key(&secp, &SecretKey::from_slice(&[b; 32]).unwrap());
        let to = Address::p2wpkh(&CompressedPublicKey(key(1)), Network::Regtest);
        let change = ScriptBuf::new_p2wpkh(&CompressedPublicKey(key(2)).wpubkey_hash());
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![
                TxOut {
                    value: Amount::from_sat(40_000),
                    script_pubkey: to.script_pubkey(),
                },
                TxOut {
                    value: Amount::from_sat(9_000),
                    script_pubkey: change,
                },
            ],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
        // lightningd marks its change output with the wallet key's derivation.
        psbt.outputs[1].bip32_derivation.insert(
            key(2),
            (
                Fingerprint::default(),
                "m/0/7".parse::<DerivationPath>().unwrap(),
            ),
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(psbt.serialize());
        // wardend reads the whole PSBT: its outputs and, from its inputs, the fee.
        assert_eq!(
            rpc_command(&hook("signpsbt", json!({"psbt": b64}))),
            Ask::Psbt(psbt.serialize())
        );
        let garbage = hook("signpsbt", json!(["not a psbt"]));
        assert!(
            matches!(rpc_command(&garbage), Ask::Refuse { reason, .. } if reason.contains("not base64"))
        );
    }

    #[test]
    fn every_call_is_checked_whatever_its_id_says() {
        // Issue 25, item 3: a client chooses its id, so an id shaped like an inner call of a
        // checked command ("x:withdraw#1/y") proves nothing: the command is checked.
        let forged = json!({"rpc_command": {"id": "x:withdraw#1/y", "method": "withdraw", "params": [ADDR, "all"]}});
        assert!(
            matches!(rpc_command(&forged), Ask::Refuse { reason, .. } if reason.contains("\"all\" cannot be checked"))
        );
        let fund = json!({"rpc_command": {"id": "x:fundchannel#1/y", "method": "fundchannel", "params": {"id": PEER, "amount": 10}}});
        assert!(matches!(rpc_command(&fund), Ask::Channels { .. }));
        // A real inner signpsbt is checked on its whole PSBT (its fee included).
        let inner = json!({"rpc_command": {"id": "cli:withdraw#7/spender:signpsbt#9", "method": "signpsbt", "params": {"psbt": "garbage"}}});
        assert!(
            matches!(rpc_command(&inner), Ask::Refuse { reason, .. } if reason.contains("not base64"))
        );
    }

    #[test]
    fn a_request_that_repeats_a_key_is_refused_naming_it() {
        // lightningd runs the first `method`; a JSON parser keeps the last.
        let raw = r#"{"jsonrpc":"2.0","id":4,"method":"rpc_command","params":{"rpc_command":{"id":"cli:x#1","method":"withdraw","params":{"destination":"bcrt1q","satoshi":"all"},"method":"getinfo"}}}"#;
        let marked = mark_repeated_keys(raw).expect("a repeated key is marked");
        let v: Value = serde_json::from_str(&marked).unwrap();
        assert_eq!(
            v["params"]["rpc_command"]["method"], "withdraw",
            "the first kept"
        );
        match rpc_command(&v["params"]) {
            Ask::Refuse { tag, reason } => {
                assert_eq!(tag, tags::SPEND_UNCHECKABLE);
                assert!(
                    reason.contains("repeats the key(s) [\"method\"]"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Without a repeated key, or in another message, nothing changes.
        assert_eq!(
            mark_repeated_keys(
                r#"{"method":"rpc_command","params":{"rpc_command":{"method":"getinfo"}}}"#
            ),
            None
        );
        assert_eq!(
            mark_repeated_keys(r#"{"method":"getmanifest","params":{"a":1,"a":2}}"#),
            None
        );
    }

    #[test]
    fn close_to_at_open_is_refused_before_lightningd_acts() {
        // Issue 25, item 4.
        for cmd in [
            hook(
                "fundchannel",
                json!({"id": PEER, "amount": 100_000, "close_to": ADDR}),
            ),
            hook(
                "fundchannel",
                json!([PEER, 100_000, null, true, null, null, null, ADDR]),
            ),
            hook(
                "fundchannel_start",
                json!([PEER, 100_000, null, true, ADDR]),
            ),
            hook(
                "openchannel_init",
                json!({"id": PEER, "amount": 100_000, "initialpsbt": "", "close_to": ADDR}),
            ),
            hook(
                "multifundchannel",
                json!({"destinations": [{"id": PEER, "amount": 1000}, {"id": PEER, "amount": 1000, "close_to": ADDR}]}),
            ),
        ] {
            match rpc_command(&cmd) {
                Ask::Refuse { tag, reason } => {
                    assert_eq!(tag, tags::SPEND_UNCHECKABLE);
                    assert!(reason.contains("open without close_to"), "{reason}");
                }
                other => panic!("{cmd}: {other:?}"),
            }
        }
    }

    #[test]
    fn payment_commands_are_read_at_core_lightnings_positions() {
        // Issue 26, item 2.
        let inv = "lnbcrt1...";
        let pay = |preapprove| Ask::Payment {
            invoice: inv.into(),
            preapprove,
        };
        assert_eq!(rpc_command(&hook("pay", json!([inv]))), pay(false));
        assert_eq!(
            rpc_command(&hook("xpay", json!({"invstring": inv}))),
            pay(false)
        );
        assert_eq!(rpc_command(&hook("renepay", json!([inv, 1000]))), pay(true));
        let mut renesend = vec![Value::Null; 10];
        renesend.push(json!(inv));
        assert_eq!(
            rpc_command(&hook("renesendpay", json!(renesend))),
            pay(true)
        );
        assert_eq!(
            rpc_command(&hook("sendpay", json!([[], "ab", null, 1000, inv]))),
            pay(true)
        );
        let hash = "11".repeat(32);
        assert_eq!(
            rpc_command(&hook("sendonion", json!(["00", {}, hash]))),
            Ask::PaymentHash(vec![0x11; 32])
        );
        assert_eq!(
            rpc_command(&hook(
                "injectpaymentonion",
                json!(["00", hash, 1, 2, 0, 0, null, null, inv])
            )),
            pay(true)
        );
        assert!(matches!(
            rpc_command(&hook("renepay", json!({}))),
            Ask::Refuse { tag, .. } if tag == tags::PAYMENT_UNCHECKABLE
        ));
        assert!(matches!(
            rpc_command(&hook("sendonion", json!({"onion": "00", "payment_hash": "zz"}))),
            Ask::Refuse { reason, .. } if reason.contains("neither an invoice nor a 32-byte payment hash")
        ));
        // keysend preapproves by itself, with a payment hash chosen inside the command; it is
        // checked by payee and amount (param_msat: a bare number is msat).
        let keysend = |amount_msat| Ask::Keysend {
            destination: PEER.to_string(),
            amount_msat,
        };
        assert_eq!(
            rpc_command(&hook("keysend", json!([PEER, 1000]))),
            keysend(1000)
        );
        assert_eq!(
            rpc_command(&hook(
                "keysend",
                json!({"destination": PEER, "amount_msat": "25sat"})
            )),
            keysend(25_000)
        );
        assert_eq!(
            rpc_command(&hook("keysend", json!([PEER, "0.00000000001btc"]))),
            keysend(1)
        );
        assert!(matches!(
            rpc_command(&hook("keysend", json!(["nobody", 1000]))),
            Ask::Refuse { reason, .. } if reason.contains("`keysend` names the destination \"nobody\", which is not a node id")
        ));
        assert!(matches!(
            rpc_command(&hook("keysend", json!([PEER, "lots"]))),
            Ask::Refuse { reason, .. } if reason.contains("amount \"lots\" is not an amount in msat, sat or btc")
        ));
    }

    #[test]
    fn feerates_are_read_as_lightningd_takes_them() {
        assert_eq!(parse_feerate(Some(&json!("2000000perkw"))), Some(2_000_000));
        assert_eq!(parse_feerate(Some(&json!("10001perkb"))), Some(2_501));
        assert_eq!(parse_feerate(Some(&json!(10000))), Some(2_500));
        assert_eq!(
            parse_feerate(Some(&json!("100perkw"))),
            Some(253),
            "the floor"
        );
        assert_eq!(parse_feerate(Some(&json!("urgent"))), None);
        assert_eq!(parse_feerate(Some(&json!("12blocks"))), None);
        assert_eq!(parse_feerate(None), None);
        let w = hook("withdraw", json!([ADDR, 10_000, "2000000perkw"]));
        assert!(matches!(
            rpc_command(&w),
            Ask::Spend {
                feerate_per_kw: Some(2_000_000),
                ..
            }
        ));
        let f = hook(
            "fundchannel",
            json!({"id": PEER, "amount": 10, "feerate": "7500perkw"}),
        );
        assert!(matches!(
            rpc_command(&f),
            Ask::Channels {
                feerate_per_kw: Some(7_500),
                ..
            }
        ));
    }

    #[test]
    fn a_channel_asking_the_peer_for_liquidity_counts_both_amounts() {
        let fund = hook(
            "fundchannel",
            json!({"id": PEER, "amount": 1_000_000, "request_amt": "500000sat"}),
        );
        assert!(
            matches!(rpc_command(&fund), Ask::Channels { opens: o, .. } if o[0].amount_sat == 1_500_000)
        );
        let positional = hook(
            "fundchannel",
            json!([PEER, 1_000_000, null, true, null, null, null, null, 250_000]),
        );
        assert!(
            matches!(rpc_command(&positional), Ask::Channels { opens: o, .. } if o[0].amount_sat == 1_250_000)
        );
    }

    #[test]
    fn incoming_opens_read_funding_and_the_announce_flag() {
        let v1 = json!({"openchannel": {"id": PEER, "funding_msat": 5_000_000_000u64, "push_msat": 0, "channel_flags": 0}});
        assert_eq!(
            incoming_open("openchannel", &v1),
            Ask::Channels {
                opens: vec![OpenAsk {
                    peer: PEER.into(),
                    amount_sat: 5_000_000,
                    private: Some(true),
                    incoming: true
                }],
                feerate_per_kw: None
            }
        );
        let v2 = json!({"openchannel2": {"id": PEER, "their_funding_msat": "2000000msat", "channel_flags": 1}});
        assert!(
            matches!(incoming_open("openchannel2", &v2), Ask::Channels { opens: o, .. } if o[0].amount_sat == 2_000 && o[0].private == Some(false))
        );
    }

    #[test]
    fn replies_are_continue_or_the_commands_error_with_its_tags() {
        assert_eq!(
            command_reply(&Answer::Approved),
            json!({"result": "continue"})
        );
        let r = command_reply(&Answer::Refused {
            tags: vec!["per-payment-cap".into()],
            reason: "rule per-payment-cap: too much".into(),
        });
        assert_eq!(r["return"]["error"]["code"], CODE_REFUSED);
        assert_eq!(
            r["return"]["error"]["message"],
            "rule per-payment-cap: too much"
        );
        assert_eq!(
            r["return"]["error"]["data"]["tags"],
            json!(["per-payment-cap"])
        );
        let h = command_reply(&Answer::Held {
            tags: vec!["q".into()],
            reason: "needs 2".into(),
            request_id: "r1".into(),
        });
        assert_eq!(h["return"]["error"]["code"], CODE_HELD);
        assert_eq!(h["return"]["error"]["data"]["request_id"], "r1");
        let o = open_reply(&Answer::Refused {
            tags: vec![],
            reason: "too big".into(),
        });
        assert_eq!(o, json!({"result": "reject", "error_message": "too big"}));
        let u = command_reply(&Answer::Unreachable("connection refused".into()));
        assert_eq!(u["return"]["error"]["code"], CODE_UNREACHABLE);
        assert!(u["return"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"));
    }
}
