//! `wardenctl audit …` and `wardenctl report`: read the audit log from the data directory (stop
//! wardend first: the state database admits one process), verify it against the HSM's audit
//! key, export it, report on it.

use anyhow::{bail, Context};
use lightning_signer::bitcoin::secp256k1::PublicKey;
use std::path::PathBuf;
use warden::audit::report::{self, date_start, month_range};
use warden::audit::verify::{verify_anchored, Finding};
use warden::audit::{read_checkpoints, read_records, AuditRecord};
use warden::config::ConfigArgs;

/// Exit code when the audit log does not verify.
pub const EXIT_TAMPERED: i32 = 5;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the hash chain and check every checkpoint signature against the HSM's audit key.
    /// Exit 0 when intact; exit 5 naming the first bad record.
    Verify {
        #[command(flatten)]
        source: Source,
    },
    /// Export records (verified first) for compliance.
    Export {
        #[command(flatten)]
        source: Source,
        /// First day (YYYY-MM-DD, UTC) or Unix time.
        #[arg(long)]
        since: Option<String>,
        /// Day after the last (YYYY-MM-DD, UTC) or Unix time.
        #[arg(long)]
        until: Option<String>,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

/// Where the log is and what key it must verify against.
#[derive(clap::Args, Debug, Clone)]
pub struct Source {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The audit public key (hex) to verify against, instead of reading it from the HSM; for
    /// auditors without access to the token. Compare it with `wardenctl hsm status`.
    #[arg(long)]
    pub audit_key: Option<String>,
}

/// A log read for verification, with the key and (when read from the token) the anchor.
struct Loaded {
    records: Vec<AuditRecord>,
    checkpoints: Vec<warden::audit::Checkpoint>,
    key: PublicKey,
    anchor: Option<warden::hsm::AuditAnchor>,
    anchor_checked: bool,
    /// The text of the policy in force, from the verified policy history (none before wardend
    /// first recorded one).
    policy_in_force: Option<String>,
}

impl Loaded {
    fn verify(&self) -> Finding {
        verify_anchored(
            &self.records,
            &self.checkpoints,
            &self.key,
            self.anchor.as_ref(),
        )
    }
}

/// The state database the configuration names, for reading: the log or sled (wardend stopped,
/// it holds the lock) or PostgreSQL (readable while wardends run; nothing is written).
pub fn open_state(config: &warden::config::Config) -> anyhow::Result<warden::store::Store> {
    Ok(match &config.store {
        warden::config::StoreConfig::Local(backend) => {
            warden::store::Store::open_local(&config.data_dir.join("state"), *backend)
                .context("opening the state database (stop wardend first)")?
        }
        warden::config::StoreConfig::Postgres(settings) => {
            warden::store::Store::new(std::sync::Arc::new(
                warden::store::postgres::PgBackend::open(settings.clone())
                    .context("opening the PostgreSQL state database (store.url)")?,
            ))
        }
    })
}

fn open(source: &Source) -> anyhow::Result<Loaded> {
    let config = source.config.resolve()?;
    let (key, anchor, anchor_checked) = match &source.audit_key {
        Some(hex) => (
            hex.parse::<PublicKey>()
                .context("--audit-key is not a public key")?,
            None,
            false,
        ),
        None => {
            let hsm = warden::hsm::Hsm::open(&config.hsm)?;
            (hsm.audit_public_key()?, hsm.audit_anchor()?, true)
        }
    };
    let store = open_state(&config)?;
    let policy_in_force = warden::core::verified_policy_in_force(&store, config.network)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map(|v| v.text);
    Ok(Loaded {
        records: read_records(&store)?,
        checkpoints: read_checkpoints(&store)?,
        key,
        anchor,
        anchor_checked,
        policy_in_force,
    })
}

fn bound(s: &Option<String>, default: u64) -> anyhow::Result<u64> {
    match s {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(t) => Ok(t),
            Err(_) => date_start(s).map_err(|e| anyhow::anyhow!(e)),
        },
    }
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Verify { source } => {
            let loaded = open(&source)?;
            match loaded.verify() {
                Finding::Ok {
                    records,
                    checkpoints,
                    unsigned_tail,
                } => {
                    let key = loaded.key;
                    println!("audit log OK: {records} records, {checkpoints} checkpoints signed by {key}; {unsigned_tail} records after the last checkpoint");
                    match (loaded.anchor_checked, loaded.anchor) {
                        (true, Some(a)) => println!("it reaches the HSM's anchor (record {})", a.seq),
                        (true, None) => println!("the HSM holds no anchor yet (no checkpoint was anchored)"),
                        (false, _) => println!("the HSM's anchor was not checked (--audit-key): a rolled-back log cannot be told from a short one without the token"),
                    }
                    Ok(0)
                }
                Finding::Bad { seq, problem } => {
                    eprintln!("audit log BROKEN at record {seq}: {problem}");
                    Ok(EXIT_TAMPERED)
                }
            }
        }
        AuditCommand::Export {
            source,
            since,
            until,
            format,
        } => {
            let loaded = open(&source)?;
            if let Finding::Bad { seq, problem } = loaded.verify() {
                bail!("refusing to export a log that does not verify (record {seq}: {problem})");
            }
            let records = loaded.records;
            let (since, until) = (bound(&since, 0)?, bound(&until, u64::MAX)?);
            let selected = records.iter().filter(|r| r.time >= since && r.time < until);
            match format.as_str() {
                "jsonl" => {
                    for r in selected {
                        println!("{}", serde_json::to_string(r)?);
                    }
                }
                "csv" => {
                    println!("seq,time,utc,kind,hash,prev,data");
                    for r in selected {
                        let data = serde_json::to_string(&r.data)?.replace('"', "\"\"");
                        println!(
                            "{},{},{},{},{},{},\"{data}\"",
                            r.seq,
                            r.time,
                            warden::clock::format_utc(r.time),
                            r.kind,
                            r.hash,
                            r.prev
                        );
                    }
                }
                other => bail!("unknown format \"{other}\"; use jsonl or csv"),
            }
            Ok(0)
        }
    }
}

/// `wardenctl report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    source: Source,
    /// The month, YYYY-MM (UTC).
    #[arg(long, conflicts_with_all = ["since", "until"])]
    month: Option<String>,
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    since: Option<String>,
    /// Day after the last, YYYY-MM-DD.
    #[arg(long)]
    until: Option<String>,
    /// table, csv, json or html.
    #[arg(long, default_value = "table")]
    format: String,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// In a fleet: every member's log, each verified, added up for the fleet and per member.
    #[arg(long)]
    fleet: bool,
}

/// A fleet member's name and its audit records.
type MemberLog = (String, Vec<AuditRecord>);

/// Every fleet member's audit records, by member name: this member's own (already verified
/// against its HSM), and each other member's, read from its schema and verified against the
/// audit key its own chain declares (its `start` records).
fn fleet_logs(
    config: &warden::config::Config,
    own: &[AuditRecord],
) -> anyhow::Result<(String, Vec<MemberLog>)> {
    use warden::store::postgres::{FleetMember, PgBackend, PgSettings};
    use warden::store::Backend;
    let not_member = || {
        anyhow::anyhow!("--fleet: this configuration is not a fleet member's; it needs store.backend = \"postgres\" and [fleet] name and member")
    };
    let warden::config::StoreConfig::Postgres(settings) = &config.store else {
        return Err(not_member());
    };
    let me = settings.fleet.clone().ok_or_else(not_member)?;
    let members = PgBackend::open(settings.clone())
        .context("opening the fleet's database (store.url)")?
        .fleet_members()?;
    let mut logs = Vec::new();
    for m in members {
        if m.name == me.member {
            logs.push((m.name, own.to_vec()));
            continue;
        }
        let store = warden::store::Store::new(std::sync::Arc::new(
            PgBackend::open(PgSettings {
                fleet: Some(FleetMember {
                    fleet: me.fleet.clone(),
                    member: m.name.clone(),
                }),
                ..settings.clone()
            })
            .with_context(|| format!("opening member {}'s state", m.name))?,
        ));
        let records = read_records(&store)?;
        let checkpoints = read_checkpoints(&store)?;
        let declared = records
            .iter()
            .find(|r| r.kind == "start")
            .and_then(|r| r.data["audit_key"].as_str())
            .and_then(|k| k.parse::<PublicKey>().ok())
            .with_context(|| format!("member {}'s log declares no audit key", m.name))?;
        if let Finding::Bad { seq, problem } =
            verify_anchored(&records, &checkpoints, &declared, None)
        {
            bail!(
                "refusing to report: member {}'s log does not verify (record {seq}: {problem})",
                m.name
            );
        }
        logs.push((m.name, records));
    }
    Ok((me.fleet, logs))
}

pub fn report(args: ReportArgs) -> anyhow::Result<i32> {
    let loaded = open(&args.source)?;
    if let Finding::Bad { seq, problem } = loaded.verify() {
        bail!("refusing to report from a log that does not verify (record {seq}: {problem})");
    }
    let records = loaded.records;
    let in_force = loaded.policy_in_force;
    let (since, until) = match &args.month {
        Some(m) => month_range(m).map_err(|e| anyhow::anyhow!(e))?,
        None => (bound(&args.since, 0)?, bound(&args.until, u64::MAX)?),
    };
    let config = args.source.config.resolve()?;
    // The limit of the policy in force (what wardend enforces), not of the file on disk, which
    // is only ever a proposal; the file (or the default) only before any policy was recorded.
    let policy = match (&in_force, &config.policy_file) {
        (Some(text), _) => warden::policy::parse_policy_for(text, config.network)
            .map_err(|e| anyhow::anyhow!("the policy in force does not load: {e:?}"))?,
        (None, Some(p)) => warden::policy::load_policy_file_for(p, config.network)?,
        (None, None) => {
            warden::policy::parse_policy_for(warden::policy::DEFAULT_POLICY, config.network)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
        }
    };
    let daily = |scope: warden::policy::LimitScope| {
        policy
            .limits
            .iter()
            .filter(|l| l.window_secs == Some(86_400) && l.scope == scope)
            .filter_map(|l| l.max_amount_msat)
            .min()
    };
    let daily_limit = daily(warden::policy::LimitScope::Node);
    if args.fleet {
        let (fleet, logs) = fleet_logs(&config, &records)?;
        let mut all: Vec<AuditRecord> = logs.iter().flat_map(|(_, r)| r.clone()).collect();
        all.sort_by_key(|r| r.time);
        let total = report::compute(&all, since, until, daily(warden::policy::LimitScope::Fleet));
        let members: Vec<(String, report::Report)> = logs
            .iter()
            .map(|(m, r)| (m.clone(), report::compute(r, since, until, daily_limit)))
            .collect();
        let text = match args.format.as_str() {
            "table" => {
                let mut t = format!(
                    "fleet {fleet}: {} members, every member's log verified (other members' against the audit key their own logs declare; run `wardenctl audit verify` on each member for the check against its HSM)\n\n",
                    members.len()
                );
                t.push_str(&report::render_table(&total));
                t.push_str("\nper member:\n");
                for (m, r) in &members {
                    t.push_str(&format!(
                        "  {m:<24} approved {:>6} ({}), refused {:>6} ({}), held {:>6} ({})\n",
                        r.approved.count,
                        warden::policy::units::format_msat(r.approved.amount_msat),
                        r.refused.count,
                        warden::policy::units::format_msat(r.refused.amount_msat),
                        r.held.count,
                        warden::policy::units::format_msat(r.held.amount_msat),
                    ));
                }
                t
            }
            "json" => {
                serde_json::to_string_pretty(&serde_json::json!({
                    "fleet": fleet,
                    "total": total,
                    "members": members.iter().map(|(m, r)| (m.clone(), serde_json::to_value(r).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                }))? + "\n"
            }
            other => bail!("--fleet reports as table or json, not \"{other}\""),
        };
        match args.out {
            Some(p) => {
                std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?
            }
            None => print!("{text}"),
        }
        return Ok(0);
    }
    let r = report::compute(&records, since, until, daily_limit);
    let text = match args.format.as_str() {
        "table" => report::render_table(&r),
        "csv" => report::render_csv(&r),
        "json" => serde_json::to_string_pretty(&r)? + "\n",
        "html" => report::render_html(&r),
        other => bail!("unknown format \"{other}\"; use table, csv, json or html"),
    };
    match args.out {
        Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(0)
}
