//! wardend: the signer daemon. It logs into the HSM, unseals the node seed into zeroizing
//! memory, and serves the node. Configuration comes from a TOML file, the environment
//! (WARDEN_*), and flags, in rising order of precedence; the HSM PIN is never a flag.

use anyhow::Context;
use clap::Parser;
use warden::config::ConfigArgs;
use warden::hsm::Hsm;

/// Warden's signer daemon: an HSM-backed, validating Lightning signer.
///
/// Every option can also be set in the configuration file (see README.md, "Configuration")
/// or through the environment variable shown beside it.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Log filter, e.g. "info" or "warden=debug" (also RUST_LOG)
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let config = args.config.resolve()?;
    let hsm = Hsm::open(&config.hsm)?;
    let seed = hsm.load_seed(&config.data_dir)?;
    let node_id = warden::signer::node_id(&seed, config.network);
    drop(seed);
    let audit_key = hsm.audit_public_key()?;
    tracing::info!(%node_id, network = %config.network, audit_key = %audit_key, "wardend started on the sealed seed");
    println!(
        "wardend ready: node id {node_id} ({} network)",
        config.network
    );
    wait_for_shutdown().await;
    tracing::info!("wardend stopping");
    Ok(())
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
