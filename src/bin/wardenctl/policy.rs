//! `wardenctl policy …`: check, explain and simulate a policy file before it is proposed.

use anyhow::{bail, Context};
use lightning_signer::bitcoin::Network;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use warden::policy::units::{format_msat, parse_amount, parse_duration};
use warden::policy::{
    evaluate, explain::explain, load_policy_file_for, spend_changes, PaymentRequest, Policy,
    PolicyLoadError, VelocityState, Verdict,
};

/// Monday 2026-11-23 00:00 UTC: the simulator's default start, so weekday rules are predictable.
pub const DEFAULT_SIM_START: u64 = 1_795_392_000;

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file: exit 0 with a one-line summary, or exit 1 with one
    /// FILE:LINE:COL: message line per problem.
    Check {
        /// The policy file.
        file: PathBuf,
        /// The network of the node the policy is for: its addresses must be of it.
        #[arg(long, default_value = "bitcoin", value_parser = parse_network)]
        network: Network,
    },
    /// Say in plain language what a policy file allows.
    Explain {
        /// The policy file.
        file: PathBuf,
        /// The network of the node the policy is for: its addresses must be of it.
        #[arg(long, default_value = "bitcoin", value_parser = parse_network)]
        network: Network,
    },
    /// Replay payments through the policy with a virtual clock and print each decision.
    ///
    /// Each line of the JSONL file is one payment:
    /// {"after": "90s", "kind": "invoice", "amount": "250_000 sat", "payee": "02..."}
    /// or {"at": 1795435200, "kind": "onchain", "outputs": [{"address": "bc1...", "amount": "0.1 btc"}]}.
    /// "at" is Unix seconds; "after" is the time since the previous payment (the first counts
    /// from --start). "kind" is invoice (default), keysend or onchain.
    Simulate {
        /// The policy file.
        file: PathBuf,
        /// JSONL file of payments.
        #[arg(long)]
        payments: PathBuf,
        /// Unix time the simulation starts at [default: Monday 2026-11-23 00:00 UTC]
        #[arg(long, default_value_t = DEFAULT_SIM_START)]
        start: u64,
        /// The network of the node the policy is for: its addresses must be of it.
        #[arg(long, default_value = "bitcoin", value_parser = parse_network)]
        network: Network,
        /// A fleet's policy: replay as this member (its name in [fleet.members]), with only the
        /// rules that apply to it [default: every rule].
        #[arg(long)]
        member: Option<String>,
    },
    /// Propose a policy file to wardend: checked, classified against the policy in force, and
    /// put to the governance quorum (`wardenctl approve ID`; `wardenctl reject ID` vetoes).
    Propose {
        /// The policy file.
        file: PathBuf,
    },
    /// Show what a proposed policy change changes, each change tightening or loosening.
    Diff {
        /// The policy-change request.
        id: String,
    },
    /// The chain of policies that were in force, oldest first.
    History {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_network(s: &str) -> Result<Network, String> {
    s.parse::<Network>()
        .map_err(|_| format!("\"{s}\" is not a network; use bitcoin, testnet, signet or regtest"))
}

/// Exit code for a policy file with problems, distinct from usage errors.
pub const EXIT_INVALID: i32 = 1;

pub fn run(cmd: PolicyCommand) -> anyhow::Result<i32> {
    match cmd {
        PolicyCommand::Check { file, network } => match load(&file, network)? {
            Ok(p) => {
                println!("{}: OK — {}", file.display(), summary(&p));
                Ok(0)
            }
            Err(code) => Ok(code),
        },
        PolicyCommand::Explain { file, network } => match load(&file, network)? {
            Ok(p) => {
                println!("{}", explain(&p));
                Ok(0)
            }
            Err(code) => Ok(code),
        },
        PolicyCommand::Simulate {
            file,
            payments,
            start,
            network,
            member,
        } => match load(&file, network)? {
            Ok(p) => {
                let p = match &member {
                    None => p,
                    Some(m) if p.fleet_member(m).is_some() => p.for_member(m),
                    Some(m) => anyhow::bail!(
                        "--member {m}: the policy's [fleet.members] does not admit \"{m}\"; it lists {}",
                        if p.fleet_members.is_empty() {
                            "none".to_string()
                        } else {
                            p.fleet_members.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                };
                simulate(&p, &payments, start).map(|_| 0)
            }
            Err(code) => Ok(code),
        },
        PolicyCommand::Propose { .. }
        | PolicyCommand::Diff { .. }
        | PolicyCommand::History { .. } => {
            unreachable!("main runs the commands that talk to wardend")
        }
    }
}

/// Load, printing problems in FILE:LINE:COL form; `Err(exit code)` when the file is invalid.
fn load(file: &Path, network: Network) -> anyhow::Result<Result<Policy, i32>> {
    match load_policy_file_for(file, network) {
        Ok(p) => Ok(Ok(p)),
        Err(e @ PolicyLoadError::Invalid { .. }) => {
            let PolicyLoadError::Invalid { errors, .. } = &e else {
                unreachable!()
            };
            eprintln!("{e}");
            eprintln!(
                "{}: {} problem(s); the file was not loaded",
                file.display(),
                errors.len()
            );
            Ok(Err(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

fn summary(p: &Policy) -> String {
    format!(
        "version 1{}, {} admins, {} rules ({} deny, {} allowlist, {} limit, {} time window, {} approval), hash {}",
        p.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default(),
        p.admins.len(),
        p.tags().len(),
        p.deny.len(),
        p.allow.len(),
        p.limits.len(),
        p.time_windows.len(),
        p.approvals.len(),
        p.hash_hex()
    )
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SimPayment {
    at: Option<u64>,
    after: Option<String>,
    kind: Option<String>,
    amount: Option<String>,
    payee: Option<String>,
    payment_hash: Option<String>,
    description: Option<String>,
    outputs: Option<Vec<SimOutput>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SimOutput {
    address: String,
    amount: String,
}

fn to_request(p: &SimPayment, n: usize) -> anyhow::Result<PaymentRequest> {
    let mut hash = [0u8; 32];
    match &p.payment_hash {
        Some(h) => {
            let bytes = hex::decode(h).context("payment_hash is not hex")?;
            if bytes.len() != 32 {
                bail!("payment_hash must be 32 bytes of hex");
            }
            hash.copy_from_slice(&bytes);
        }
        // A distinct hash per line, so each simulated payment is its own request.
        None => hash[..8].copy_from_slice(&(n as u64).to_be_bytes()),
    }
    let amount = |a: &Option<String>| -> anyhow::Result<u64> {
        parse_amount(a.as_deref().context("missing \"amount\"")?)
            .map_err(|e| anyhow::anyhow!("amount {e}"))
    };
    Ok(match p.kind.as_deref().unwrap_or("invoice") {
        "invoice" | "keysend" => {
            let payee = p
                .payee
                .as_deref()
                .context("missing \"payee\" (a node id)")?;
            let pk: lightning_signer::bitcoin::secp256k1::PublicKey =
                payee.parse().context("\"payee\" is not a node id")?;
            let payee = hex::encode(pk.serialize());
            if p.kind.as_deref() == Some("keysend") {
                PaymentRequest::keysend(hash, amount(&p.amount)?, &payee)
            } else {
                PaymentRequest::invoice(hash, amount(&p.amount)?, &payee, p.description.clone())
            }
        }
        "onchain" => {
            let outs = p
                .outputs
                .as_ref()
                .context("an onchain payment needs \"outputs\"")?;
            let mut v = Vec::new();
            for o in outs {
                v.push((
                    o.address.clone(),
                    parse_amount(&o.amount).map_err(|e| anyhow::anyhow!("amount {e}"))?,
                ));
            }
            PaymentRequest::onchain(v)
        }
        other => bail!("unknown kind \"{other}\"; use invoice, keysend or onchain"),
    })
}

fn clock(t: u64) -> String {
    let (wd, m) = warden::policy::eval::weekday_and_minute(t);
    format!(
        "{} {:02}:{:02}:{:02}",
        warden::policy::WEEKDAYS[wd as usize],
        m / 60,
        m % 60,
        t % 60
    )
}

#[derive(Default)]
struct Tally {
    count: u64,
    msat: u128,
}

fn simulate(policy: &Policy, payments: &Path, start: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(payments)
        .with_context(|| format!("cannot read {}", payments.display()))?;
    let mut state = VelocityState::default();
    let mut now = start;
    let mut totals: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut by_tag: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let at = |e: anyhow::Error| anyhow::anyhow!("{}:{}: {e:#}", payments.display(), i + 1);
        let p: SimPayment = serde_json::from_str(line).map_err(|e| at(e.into()))?;
        now = match (p.at, &p.after) {
            (Some(t), None) => t,
            (None, Some(d)) => {
                now + parse_duration(d).map_err(|e| at(anyhow::anyhow!("after {e}")))?
            }
            (None, None) => now,
            (Some(_), Some(_)) => {
                return Err(at(anyhow::anyhow!("give \"at\" or \"after\", not both")))
            }
        };
        n += 1;
        let req = to_request(&p, n).map_err(at)?;
        let d = evaluate(policy, &req, &state, now);
        let verdict = match &d.verdict {
            Verdict::Approve => "approve",
            Verdict::RequireQuorum { .. } => "hold",
            Verdict::Deny { .. } => "deny",
        };
        if d.is_approved() {
            let changes = spend_changes(policy, &req, &state, now);
            state.apply(&changes);
        }
        let t = totals.entry(verdict).or_default();
        t.count += 1;
        t.msat += req.total_msat_wide();
        if !d.is_approved() {
            for tag in &d.tags {
                *by_tag.entry(tag.clone()).or_default() += 1;
            }
        }
        let dest: Vec<String> = req.outputs.iter().map(|(d, _)| d.to_string()).collect();
        println!(
            "#{n:<4} {} UTC  {:>20}  {:<7} [{}]  to {}",
            clock(now),
            format_msat(req.total_msat_wide()),
            verdict,
            d.tags.join(", "),
            dest.join(", ")
        );
        if let Verdict::Deny { reason } = &d.verdict {
            println!("       {reason}");
        }
        for w in &d.warnings {
            println!("       warning: {}", w.reason);
        }
    }
    println!();
    println!("{n} payments");
    for v in ["approve", "hold", "deny"] {
        let t = totals.get(v).map(|t| (t.count, t.msat)).unwrap_or((0, 0));
        println!("  {v:<8} {:>6}  {:>24}", t.0, format_msat(t.1));
    }
    if !by_tag.is_empty() {
        println!("refused or held by rule:");
        for (tag, c) in by_tag {
            println!("  {tag:<28} {c}");
        }
    }
    Ok(())
}
