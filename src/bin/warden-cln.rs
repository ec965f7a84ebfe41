//! warden-cln: a Core Lightning stand-in for the demo and the benchmarks. It runs VLS's real
//! `remote_hsmd_socket` as lightningd does (hsmd socket on fd 3) with a loopback bitcoind
//! stand-in, and takes commands on stdin, one per line, answering one line each:
//!
//! ```text
//! init                      -> node <node id>
//! pay <sat> <label>         -> approved | not approved      (a BOLT 11 invoice, payee "demo shop")
//! sign-message <text>       -> signature <hex>
//! quit
//! ```
//! The same label always means the same invoice, so `pay 1500000 7` after an approval retries
//! exactly the payment the admins approved.

use anyhow::{bail, Context};
use clap::Parser;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::{Secp256k1, SecretKey};
use lightning_signer::lightning::types::payment::PaymentSecret;
use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
use std::io::{BufRead, Write};
use vls_protocol::msgs::{self, Message};
use warden::standin::chain::ChainStub;
use warden::standin::proxy::{default_binary, Proxy};

/// Run a CLN stand-in against wardend.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port for the hsmd gRPC service that wardend connects to.
    #[arg(long, default_value_t = 7701)]
    port: u16,
    /// Directory for the proxy's files.
    #[arg(long, default_value = ".")]
    datadir: std::path::PathBuf,
    /// remote_hsmd_socket binary [default: the one scripts/setup.sh installs]
    #[arg(long)]
    proxy: Option<std::path::PathBuf>,
}

fn invoice(sat: u64, label: &str) -> anyhow::Result<String> {
    let secp = Secp256k1::new();
    let payee = SecretKey::from_slice(&sha256::Hash::hash(b"warden demo shop").to_byte_array())?;
    let preimage = sha256::Hash::hash(format!("demo payment {label}").as_bytes());
    Ok(InvoiceBuilder::new(Currency::Regtest)
        .description(format!("demo order {label}"))
        .payment_hash(sha256::Hash::hash(preimage.as_byte_array()))
        .payment_secret(PaymentSecret([3u8; 32]))
        .current_timestamp()
        .expiry_time(std::time::Duration::from_secs(3_600))
        .min_final_cltv_expiry_delta(144)
        .amount_milli_satoshis(sat.checked_mul(1_000).context("amount too large")?)
        .build_signed(|m| secp.sign_ecdsa_recoverable(m, &payee))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let chain = ChainStub::start().await?;
    std::fs::create_dir_all(&args.datadir)?;
    let binary = args.proxy.clone().unwrap_or_else(default_binary);
    let mut proxy = Proxy::spawn(&binary, args.port, &chain.url(), &args.datadir)?;
    println!("ready port={}", args.port);
    std::io::stdout().flush()?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = tokio::task::block_in_place(|| -> anyhow::Result<String> {
            match words.as_slice() {
                ["init"] => match proxy.hsmd.call(warden::standin::hsmd_init_regtest())? {
                    Message::HsmdInitReplyV4(r) => Ok(format!("node {}", hex::encode(r.node_id.0))),
                    other => bail!("unexpected reply {other:?}"),
                },
                ["pay", sat, label] => {
                    let inv = invoice(sat.parse().context("amount in sat")?, label)?;
                    match proxy.hsmd.call(msgs::PreapproveInvoice {
                        invstring: vls_protocol::serde_bolt::WireString(inv.into_bytes()),
                    })? {
                        Message::PreapproveInvoiceReply(r) if r.result => Ok("approved".into()),
                        Message::PreapproveInvoiceReply(_) => Ok("not approved".into()),
                        other => bail!("unexpected reply {other:?}"),
                    }
                }
                ["sign-message", rest @ ..] => match proxy.hsmd.call(msgs::SignMessage {
                    message: vls_protocol::serde_bolt::Octets(rest.join(" ").into_bytes()),
                })? {
                    Message::SignMessageReply(r) => {
                        Ok(format!("signature {}", hex::encode(r.signature.0)))
                    }
                    other => bail!("unexpected reply {other:?}"),
                },
                ["quit"] => Ok("bye".into()),
                _ => bail!("unknown command {line:?}"),
            }
        });
        match reply {
            Ok(r) => println!("{r}"),
            Err(e) => println!("error {e:#}"),
        }
        std::io::stdout().flush()?;
        if words.first() == Some(&"quit") || !proxy.is_running() {
            break;
        }
    }
    Ok(())
}
