//! warden-cln: a Core Lightning stand-in for the demo and the benchmarks. It runs VLS's real
//! `remote_hsmd_socket` as lightningd does (hsmd socket on fd 3) with a loopback bitcoind
//! stand-in, and takes commands on stdin, one per line, answering one line each:
//!
//! ```text
//! init                      -> node <node id>
//! pay <sat> <label>         -> approved | not approved      (a BOLT 11 invoice, payee "demo shop")
//! sign-message <text>       -> signature <hex>
//! withdraw <sat> <n> [feerate] -> signed | refused ... | held ... (to demo address n; needs --plugin)
//! pay-command <sat> <label> -> continue: approved | refused ... | held ... (the operator's `pay`,
//!                              through the plugin first, then lightningd's own preapproval)
//! fundchannel <sat> <n>     -> continue | refused ...            (with demo peer n; needs --plugin)
//! incoming <sat> <n>        -> continue | reject ...             (demo peer n opens to us)
//! setup-channel <sat> <n>   -> channel <peer>                    (NewChannel + SetupChannel)
//! quit
//! ```
//! With `--plugin`, the stand-in loads `warden-cln-plugin` as lightningd does (getmanifest,
//! init with its options) and puts every `withdraw`, `fundchannel` and incoming open through its
//! hooks first; a `withdraw` the plugin lets through is then signed (`SignWithdrawal`) by wardend.
//! The same label always means the same invoice, so `pay 1500000 7` after an approval retries
//! exactly the payment the admins approved.

use anyhow::{bail, Context};
use clap::Parser;
use lightning_signer::bitcoin::bip32::Xpub;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::{Secp256k1, SecretKey};
use lightning_signer::lightning::types::payment::PaymentSecret;
use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
use std::io::{BufRead, Write};
use vls_protocol::msgs::{self, Message};
use warden_testkit::chain::ChainStub;
use warden_testkit::lightningd::{plugin_options, withdrawal, PluginHost};
use warden_testkit::proxy::{default_binary, Proxy};

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
    /// warden-cln-plugin binary to load as lightningd would.
    #[arg(long)]
    plugin: Option<std::path::PathBuf>,
    /// The plugin's warden-server port (wardend's admin API on localhost).
    #[arg(long, default_value_t = 7443)]
    admin_port: u16,
    /// Directory with ca.pem and the plugin's client certificate (cln-node.pem, cln-node.key).
    #[arg(long, default_value = "pki")]
    pki: std::path::PathBuf,
}

/// Demo address `n` (a regtest P2WPKH nobody in the demo owns).
fn demo_address(n: u64) -> lightning_signer::bitcoin::Address {
    let pk = lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(
        &warden_testkit::test_key(n, 9),
    )
    .expect("a valid key");
    lightning_signer::bitcoin::Address::p2wpkh(
        &lightning_signer::bitcoin::CompressedPublicKey(pk),
        lightning_signer::bitcoin::Network::Regtest,
    )
}

/// A hook's reply in a line: `continue`, or the error's code, tags and message.
fn hook_line(reply: &serde_json::Value) -> String {
    if let Some(e) = warden_testkit::lightningd::error_of(reply) {
        let verdict = match e["code"].as_i64() {
            Some(warden_cln_plugin::CODE_HELD) => "held",
            _ => "refused",
        };
        return format!(
            "{verdict} (error {}, {}): {}",
            e["code"],
            e["data"]["tags"],
            e["message"].as_str().unwrap_or_default()
        );
    }
    match reply["result"].as_str() {
        Some("reject") => format!(
            "reject: {}",
            reply["error_message"].as_str().unwrap_or_default()
        ),
        Some(r) => r.to_string(),
        None => reply.to_string(),
    }
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
    let mut plugin = match &args.plugin {
        Some(p) => Some(PluginHost::start(
            p,
            plugin_options(args.admin_port, &args.pki, "cln-node"),
        )?),
        None => None,
    };
    let mut wallet: Option<Xpub> = None;
    let mut dbid = 100;
    println!("ready port={}", args.port);
    std::io::stdout().flush()?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = tokio::task::block_in_place(|| -> anyhow::Result<String> {
            match words.as_slice() {
                ["init"] => match proxy.hsmd.call(warden_testkit::hsmd_init_regtest())? {
                    Message::HsmdInitReplyV4(r) => {
                        wallet = Some(Xpub::decode(&r.bip32.0)?);
                        Ok(format!("node {}", hex::encode(r.node_id.0)))
                    }
                    other => bail!("unexpected reply {other:?}"),
                },
                ["withdraw", sat, n, rest @ ..] if rest.len() <= 1 => {
                    let sat: u64 = sat.parse().context("amount in sat")?;
                    let to = demo_address(n.parse().context("address number")?);
                    let plugin = plugin.as_mut().context("withdraw needs --plugin")?;
                    let mut params =
                        serde_json::json!({"destination": to.to_string(), "satoshi": sat});
                    if let [feerate] = rest {
                        params["feerate"] = serde_json::json!(feerate);
                    }
                    let reply = plugin.command("withdraw", params)?;
                    if reply["result"] != "continue" {
                        return Ok(hook_line(&reply));
                    }
                    let xpub = wallet.as_ref().context("init first")?;
                    match proxy.hsmd.call(withdrawal(xpub, &to, sat))? {
                        Message::SignWithdrawalReply(_) => {
                            Ok(format!("continue: signed {sat} sat to {to}"))
                        }
                        other => bail!("unexpected reply {other:?}"),
                    }
                }
                ["fundchannel", sat, n] => {
                    let peer = hex::encode(warden_testkit::test_key(n.parse()?, 0));
                    let plugin = plugin.as_mut().context("fundchannel needs --plugin")?;
                    let amount: u64 = sat.parse().context("amount in sat")?;
                    let reply = plugin.command(
                        "fundchannel",
                        serde_json::json!({"id": peer, "amount": amount}),
                    )?;
                    Ok(hook_line(&reply))
                }
                ["incoming", sat, n] => {
                    let peer = hex::encode(warden_testkit::test_key(n.parse()?, 0));
                    let plugin = plugin.as_mut().context("incoming needs --plugin")?;
                    let reply = plugin.incoming(&peer, sat.parse().context("amount in sat")?, 1)?;
                    Ok(hook_line(&reply))
                }
                ["setup-channel", sat, n] => {
                    dbid += 1;
                    let peer = warden_testkit::setup_channel(
                        &mut proxy.hsmd,
                        n.parse().context("peer number")?,
                        dbid,
                        sat.parse().context("amount in sat")?,
                    )?;
                    Ok(format!("channel with {}", hex::encode(peer)))
                }
                ["pay-command", sat, label] => {
                    let inv = invoice(sat.parse().context("amount in sat")?, label)?;
                    let plugin = plugin.as_mut().context("pay-command needs --plugin")?;
                    let reply = plugin.command("pay", serde_json::json!({"bolt11": inv}))?;
                    if reply["result"] != "continue" {
                        return Ok(hook_line(&reply));
                    }
                    // lightningd's pay preapproves by itself, where wardend decides and counts.
                    match proxy.hsmd.call(msgs::PreapproveInvoice {
                        invstring: vls_protocol::serde_bolt::WireString(inv.into_bytes()),
                    })? {
                        Message::PreapproveInvoiceReply(r) if r.result => {
                            Ok("continue: approved".into())
                        }
                        Message::PreapproveInvoiceReply(_) => Ok("continue: not approved".into()),
                        other => bail!("unexpected reply {other:?}"),
                    }
                }
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
