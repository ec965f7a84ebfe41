//! wardenctl: the operator's and admins' command line.

mod admin;
mod audit;
mod governance;
mod migrate;
mod policy;
mod top;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use warden::config::ConfigArgs;
use warden::hsm::Hsm;

/// Administer a Warden signer: set up its HSM keys, check policy files, and approve or reject
/// held payments.
///
/// Exit codes: 0 success; 1 failure (the message says why; for `policy check`, the file has
/// problems); 2 usage error; 3 wardend refused the request (signature, quorum, state, rate
/// limit); 4 wardend could not be reached; 5 the audit log does not verify.
///
/// Admin commands connect with mutual TLS: --server, --ca, --cert, --cert-key and --admin, or
/// WARDENCTL_* variables, or a --profile TOML file with the same keys (and admin_key).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: admin::Conn,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the HSM keys and the sealed node seed (once per token and data directory).
    Init {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Copy a stopped node's state to another backend, verified afterwards (record counts and
    /// digests per namespace, the VLS state hash, the audit chain against the HSM's key and
    /// anchor): `--from sled --to log` moves data_dir's sled state into the append-only log in
    /// place (the sled database kept beside it); `--from sled|log --to postgres` copies it into
    /// the empty PostgreSQL database named by store.url.
    Migrate {
        /// Where the state is now: sled or log.
        #[arg(long)]
        from: String,
        /// Where it goes: log or postgres.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Inspect the HSM.
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
    /// Check, explain and simulate policy files.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Create the admin API's demo PKI: a CA, a server certificate for localhost and one client
    /// certificate per admin (private keys 0600).
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Manage an admin's approval key.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// List payments waiting for approval.
    Pending {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one request: amount, payee, description, the rule that holds it, who has signed.
    Show {
        /// Request id (rq-...).
        id: String,
        /// Print the exact text a hardware wallet signs (Bitcoin signed message).
        #[arg(long)]
        message: bool,
        /// With --message: the text for rejecting instead of approving.
        #[arg(long, requires = "message")]
        reject: bool,
        /// With --message: the text for re-opening a rejected request.
        #[arg(long, requires = "message", conflicts_with = "reject")]
        reopen: bool,
        /// Print JSON.
        #[arg(long, conflicts_with = "message")]
        json: bool,
    },
    /// Approve a request: sign it with your key (--key) or submit a wallet signature (--signature).
    Approve {
        /// Request id.
        id: String,
        /// Your admin key file (from `admin keygen`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// A base64 Bitcoin signed-message signature over `show ID --message`.
        #[arg(long, conflicts_with = "key")]
        signature: Option<String>,
    },
    /// Reject a request (one rejection refuses the payment by default).
    Reject {
        /// Request id.
        id: String,
        /// Your admin key file.
        #[arg(long)]
        key: Option<PathBuf>,
        /// A base64 Bitcoin signed-message signature over the reject text.
        #[arg(long, conflicts_with = "key")]
        signature: Option<String>,
        /// Why, for the other admins.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-open a rejected request: once the rule's quorum has signed, it can be approved again.
    Reopen {
        /// Request id.
        id: String,
        /// Your admin key file.
        #[arg(long)]
        key: Option<PathBuf>,
        /// A base64 Bitcoin signed-message signature over `show ID --message --reopen`.
        #[arg(long, conflicts_with = "key")]
        signature: Option<String>,
    },
    /// Verify and export the audit log (stop wardend first).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Report on a month (or range) from the verified audit log: table, csv, json or html.
    Report(audit::ReportArgs),
    /// Follow live events until interrupted.
    Watch,
    /// A live terminal view: connection, velocity windows, pending approvals, last decisions.
    Top,
    /// Every channel from the signer's own state: peer, capacity, local and remote balance,
    /// HTLCs in flight, state (what VLS validated, not what the node says).
    Channels {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// In a fleet: its members, the node and seed each is bound to, whether the policy in
    /// force admits it, and whether it is frozen alone.
    Fleet {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The signer's state: node, policy, velocity windows, pending approvals.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Freeze the signer now (any single admin): every payment and on-chain spend is refused
    /// until the governance quorum lifts it. Channel operations that protect funds still sign.
    Freeze {
        /// Why (shown to the other admins and kept in the audit log).
        #[arg(long)]
        reason: String,
        /// In a fleet: freeze this one member's node alone (default: the whole fleet).
        #[arg(long)]
        member: Option<String>,
    },
    /// Ask the governance quorum to lift the freeze: prints the request its admins approve
    /// with `wardenctl approve ID`.
    Unfreeze {
        /// In a fleet: lift the freeze of this one member (default: the freeze in force on the
        /// wardend asked).
        #[arg(long)]
        member: Option<String>,
    },
    /// Timelocked recovery with the policy's offline recovery key.
    Recovery {
        #[command(subcommand)]
        command: RecoveryCommand,
    },
}

#[derive(Subcommand, Debug)]
enum RecoveryCommand {
    /// Start a break-glass action signed by the recovery key: replace-admins (with --policy,
    /// a policy that changes only admins and quorums) or unfreeze. It is announced at once and
    /// becomes executable after the policy's recovery delay.
    Start {
        /// "replace-admins", "unfreeze" or "sweep".
        action: String,
        /// replace-admins: the policy file with the new admins.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// In a fleet: sweep or unfreeze this one member alone (default: the whole fleet).
        #[arg(long)]
        member: Option<String>,
        /// The recovery key file (BIP-340).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Or a Bitcoin signed message over the action's text, base64 (a hardware wallet).
        #[arg(long)]
        signature: Option<String>,
        /// With --signature: the id of the action opened before (wardenctl recovery open).
        #[arg(long)]
        id: Option<String>,
    },
    /// Open an action without signing it, to sign its text on a hardware wallet.
    Open {
        /// "replace-admins", "unfreeze" or "sweep".
        action: String,
        /// replace-admins: the policy file with the new admins.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// In a fleet: sweep or unfreeze this one member alone (default: the whole fleet).
        #[arg(long)]
        member: Option<String>,
    },
    /// Cancel a started action (an admin's signature; the governance quorum cancels it).
    Cancel {
        /// The recovery action.
        id: String,
        /// Your approval key file (BIP-340).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Or a Bitcoin signed message, base64.
        #[arg(long)]
        signature: Option<String>,
    },
    /// Execute a started action whose delay is over.
    Execute {
        /// The recovery action.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TlsCommand {
    /// Write ca.pem, server.pem/.key and NAME.pem/.key per admin into DIR.
    Init {
        /// Directory to create.
        dir: PathBuf,
        /// Admin names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "alice,bob,carol")]
        admins: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an approval key (0600) and print the line for the policy's `[admins]`.
    Keygen {
        /// File to write; never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// The admin's name, for the printed policy line.
        #[arg(long, default_value = "NAME")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum HsmCommand {
    /// Show the module, the token, and Warden's keys with their public keys. Prints no secret.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(admin::exit_code(&e));
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let conn = cli.conn;
    match cli.command {
        Command::Policy { command } => match command {
            policy::PolicyCommand::Propose { file } => governance::propose(&conn, &file).await,
            policy::PolicyCommand::Diff { id } => governance::diff(&conn, &id).await,
            policy::PolicyCommand::History { json } => governance::history(&conn, json).await,
            other => policy::run(other),
        },
        Command::Tls {
            command: TlsCommand::Init { dir, admins },
        } => {
            let pki = warden::api::tls::init_pki(&dir, &admins)?;
            println!("CA certificate:     {}", pki.ca_cert.display());
            println!(
                "server certificate: {} (key {})",
                pki.server_cert.display(),
                pki.server_key.display()
            );
            for (admin, cert, key) in &pki.clients {
                println!(
                    "admin {admin:<12} {} (key {})",
                    cert.display(),
                    key.display()
                );
            }
            Ok(0)
        }
        Command::Admin {
            command: AdminCommand::Keygen { out, name },
        } => {
            let key = warden::approval::keys::AdminKey::generate();
            key.save(&out)?;
            println!("wrote {} (mode 600); keep it secret", out.display());
            println!("add to the policy's [admins]:");
            println!("{name} = {{ pubkey = \"{}\" }}", key.public_key());
            Ok(0)
        }
        Command::Pending { json } => admin::pending(&conn, json).await.map(|_| 0),
        Command::Show {
            id,
            message,
            reject,
            reopen,
            json,
        } => admin::show(
            &conn,
            &id,
            message,
            if reopen {
                warden::approval::Decision::Reopen
            } else if reject {
                warden::approval::Decision::Reject
            } else {
                warden::approval::Decision::Approve
            },
            json,
        )
        .await
        .map(|_| 0),
        Command::Approve { id, key, signature } => admin::decide(
            &conn,
            &id,
            warden::approval::Decision::Approve,
            key,
            signature,
            None,
        )
        .await
        .map(|_| 0),
        Command::Reject {
            id,
            key,
            signature,
            reason,
        } => admin::decide(
            &conn,
            &id,
            warden::approval::Decision::Reject,
            key,
            signature,
            reason,
        )
        .await
        .map(|_| 0),
        Command::Reopen { id, key, signature } => admin::decide(
            &conn,
            &id,
            warden::approval::Decision::Reopen,
            key,
            signature,
            None,
        )
        .await
        .map(|_| 0),
        Command::Audit { command } => audit::run(command),
        Command::Report(args) => audit::report(args),
        Command::Watch => admin::watch(&conn).await.map(|_| 0),
        Command::Top => top::run(&conn).await.map(|_| 0),
        Command::Status { json } => admin::status(&conn, json).await.map(|_| 0),
        Command::Channels { json } => admin::channels(&conn, json).await.map(|_| 0),
        Command::Fleet { json } => admin::fleet(&conn, json).await.map(|_| 0),
        Command::Freeze { reason, member } => {
            governance::freeze(&conn, &reason, member.as_deref()).await
        }
        Command::Unfreeze { member } => governance::unfreeze(&conn, member.as_deref()).await,
        Command::Recovery { command } => match command {
            RecoveryCommand::Open {
                action,
                policy,
                member,
            } => governance::recovery_open(&conn, &action, policy.as_deref(), member.as_deref())
                .await
                .map(|_| 0),
            RecoveryCommand::Start {
                action,
                policy,
                member,
                key,
                signature,
                id,
            } => {
                governance::recovery_start(
                    &conn,
                    &action,
                    policy.as_deref(),
                    member.as_deref(),
                    key.as_deref(),
                    signature,
                    id,
                )
                .await
            }
            RecoveryCommand::Cancel { id, key, signature } => admin::decide(
                &conn,
                &id,
                warden::approval::Decision::Reject,
                key,
                signature,
                Some("recovery cancelled".into()),
            )
            .await
            .map(|_| 0),
            RecoveryCommand::Execute { id } => governance::recovery_execute(&conn, &id).await,
        },
        Command::Migrate { from, to, config } => migrate::run(&from, &to, &config),
        Command::Init { config } => {
            let config = config.resolve()?;
            let hsm = Hsm::open(&config.hsm)?;
            let report = hsm.init(&config.data_dir, config.network)?;
            let loaded = hsm
                .load_seed(&config.data_dir, config.network)
                .context("re-reading the sealed seed")?;
            let node_id = warden::signer::node_id(&loaded.seed, config.network);
            drop(loaded);
            println!("initialized token \"{}\"", config.hsm.token_label);
            println!("  sealed seed:  {}", report.sealed_seed_path.display());
            println!("  audit key:    {}", report.audit_public_key);
            println!("  seed id:      {}", report.binding.seed_id_hex());
            println!("  node id:      {node_id} ({} network)", config.network);
            Ok(0)
        }
        Command::Hsm {
            command: HsmCommand::Status { config, json },
        } => {
            let config = config.resolve()?;
            let hsm = Hsm::open(&config.hsm)?;
            let status = hsm.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(0);
            }
            println!("module:  {}", status.module.display());
            println!("library: {}", status.library);
            println!(
                "token:   \"{}\" — {}",
                status.token_label, status.token_model
            );
            if status.keys.is_empty() {
                println!("keys:    none (run `wardenctl init`)");
            }
            for k in &status.keys {
                println!(
                    "key:     {:<20} {:<10} {}{}",
                    k.label,
                    k.kind,
                    if k.protected {
                        "sensitive, non-extractable"
                    } else {
                        "WARNING: extractable or not sensitive"
                    },
                    k.public_key
                        .as_deref()
                        .map(|p| format!(", public key {p}"))
                        .unwrap_or_default()
                );
            }
            Ok(0)
        }
    }
}
