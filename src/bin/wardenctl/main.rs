//! wardenctl: the operator's and admins' command line.

mod policy;

use anyhow::Context;
use clap::{Parser, Subcommand};
use warden::config::ConfigArgs;
use warden::hsm::Hsm;

/// Administer a Warden signer: set up its HSM keys, inspect them, and check policy files.
///
/// Exit codes: 0 success, 1 failure (the message says why; for `policy check`, the file has
/// problems), 2 usage error.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the HSM keys and the sealed node seed (once per token and data directory).
    Init {
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

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Policy { command } => policy::run(command),
        Command::Init { config } => {
            let config = config.resolve()?;
            let hsm = Hsm::open(&config.hsm)?;
            let report = hsm.init(&config.data_dir)?;
            let seed = hsm
                .load_seed(&config.data_dir)
                .context("re-reading the sealed seed")?;
            let node_id = warden::signer::node_id(&seed, config.network);
            drop(seed);
            println!("initialized token \"{}\"", config.hsm.token_label);
            println!("  sealed seed:  {}", report.sealed_seed_path.display());
            println!("  audit key:    {}", report.audit_public_key);
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
