//! warden-cln-plugin: Core Lightning asks Warden before it builds an on-chain spend or opens a
//! channel, so that a refusal is the command's error and never a signature refused at signing
//! time (which stops the node's hsmd). See the library (`warden_cln_plugin`) for what is asked and README's
//! "Core Lightning plugin" for how lightningd loads it.
//!
//! Load it with `important-plugin=` so that lightningd stops if the plugin does: a node whose
//! plugin is gone would build spends nobody checked.

use anyhow::Context;
use cln_plugin::options::{DefaultIntegerConfigOption, StringConfigOption};
use cln_plugin::{Builder, Plugin};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use warden_client::proto;
use warden_client::proto::warden_client::WardenClient;
use warden_cln_plugin::{self as plug, Answer, Ask};

const SERVER: StringConfigOption = StringConfigOption::new_str_no_default(
    "warden-server",
    "wardend's admin API, e.g. https://warden.internal:7702",
);
const CA: StringConfigOption =
    StringConfigOption::new_str_no_default("warden-ca", "the admin CA certificate (PEM)");
const CERT: StringConfigOption = StringConfigOption::new_str_no_default(
    "warden-cert",
    "this node's client certificate (PEM), named in wardend's admin.nodes",
);
const KEY: StringConfigOption =
    StringConfigOption::new_str_no_default("warden-key", "the client certificate's key (PEM)");
const TIMEOUT: DefaultIntegerConfigOption = DefaultIntegerConfigOption::new_i64_with_default(
    "warden-timeout",
    10,
    "seconds to wait for wardend's answer before refusing the command",
);

#[derive(Clone)]
struct State {
    endpoint: Endpoint,
    client: Arc<Mutex<Option<WardenClient<Channel>>>>,
    /// lightningd's JSON-RPC socket, for the preapprovals the plugin makes the node do.
    rpc: std::path::PathBuf,
    timeout: Duration,
}

fn read(path: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {path}"))
}

impl State {
    /// Ask wardend, connecting on first use and again after a failure.
    async fn check(&self, ask: Ask, command: &str) -> Answer {
        let timeout = self.endpoint.clone();
        let mut guard = self.client.lock().await;
        if guard.is_none() {
            match timeout.connect().await {
                Ok(ch) => *guard = Some(WardenClient::new(ch)),
                Err(e) => return Answer::Unreachable(format!("connecting: {e}")),
            }
        }
        let client = guard.as_mut().expect("connected above");
        let reply = match ask {
            Ask::Spend {
                outputs,
                feerate_per_kw,
            } => {
                client
                    .check_spend(proto::CheckSpendRequest {
                        outputs: outputs
                            .into_iter()
                            .map(|(address, amount_sat)| proto::SpendOutput {
                                address,
                                amount_sat,
                            })
                            .collect(),
                        command: command.to_string(),
                        feerate_per_kw,
                        psbt: Vec::new(),
                    })
                    .await
            }
            Ask::Psbt(psbt) => {
                client
                    .check_spend(proto::CheckSpendRequest {
                        outputs: Vec::new(),
                        command: command.to_string(),
                        feerate_per_kw: None,
                        psbt,
                    })
                    .await
            }
            Ask::Channels {
                opens,
                feerate_per_kw,
            } => {
                client
                    .check_channel_open(proto::CheckChannelOpenRequest {
                        opens: opens
                            .into_iter()
                            .map(|o| proto::ChannelOpenCheck {
                                peer: o.peer,
                                amount_sat: o.amount_sat,
                                private: o.private,
                                incoming: o.incoming,
                            })
                            .collect(),
                        command: command.to_string(),
                        feerate_per_kw,
                    })
                    .await
            }
            Ask::Payment { invoice, .. } => {
                client
                    .check_payment(proto::CheckPaymentRequest {
                        invoice,
                        command: command.to_string(),
                        ..Default::default()
                    })
                    .await
            }
            Ask::PaymentHash(payment_hash) => {
                client
                    .check_payment(proto::CheckPaymentRequest {
                        payment_hash,
                        command: command.to_string(),
                        ..Default::default()
                    })
                    .await
            }
            Ask::Keysend {
                destination,
                amount_msat,
            } => {
                client
                    .check_payment(proto::CheckPaymentRequest {
                        keysend_destination: destination,
                        amount_msat,
                        command: command.to_string(),
                        ..Default::default()
                    })
                    .await
            }
            Ask::Nothing => return Answer::Approved,
            Ask::Refuse { tag, reason } => {
                return Answer::Refused {
                    tags: vec![tag.to_string()],
                    reason,
                }
            }
        };
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                match proto::CheckOutcome::try_from(r.outcome) {
                    Ok(proto::CheckOutcome::Approved) => Answer::Approved,
                    Ok(proto::CheckOutcome::Held) => Answer::Held {
                        tags: r.tags,
                        reason: r.reason,
                        request_id: r.request_id,
                    },
                    _ => Answer::Refused {
                        tags: r.tags,
                        reason: r.reason,
                    },
                }
            }
            // wardend read the command and cannot check it as written (an address of another
            // network, an amount out of range): a refusal with what was wrong.
            Err(status) if status.code() == tonic::Code::InvalidArgument => Answer::Refused {
                tags: vec![warden_policy::tags::SPEND_UNCHECKABLE.to_string()],
                reason: format!(
                    "rule {}: wardend cannot check it as written: {}",
                    warden_policy::tags::SPEND_UNCHECKABLE,
                    status.message()
                ),
            },
            Err(status) => {
                // Reconnect next time: the connection may be what failed.
                *guard = None;
                Answer::Unreachable(format!("{:?}: {}", status.code(), status.message()))
            }
        }
    }
}

async fn rpc_command(p: Plugin<State>, v: Value) -> Result<Value, anyhow::Error> {
    let state = p.state().clone();
    let method = v["rpc_command"]["method"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ask = plug::rpc_command(&v);
    if ask == Ask::Nothing {
        return Ok(serde_json::json!({"result": "continue"}));
    }
    let preapprove = match &ask {
        Ask::Payment {
            invoice,
            preapprove: true,
        } => Some(invoice.clone()),
        _ => None,
    };
    let mut answer = state.check(ask, &method).await;
    if let (Answer::Approved, Some(invoice)) = (&answer, preapprove) {
        // The command does not preapprove: the node does it now, through its hsmd, where
        // wardend decides and counts, so the HTLCs that follow are valid.
        if let Err(why) = preapprove_invoice(&state.rpc, &invoice, state.timeout).await {
            answer = plug::declined(&method, &why);
        }
    }
    if answer != Answer::Approved {
        log::warn!("warden: `{method}` not allowed: {answer:?}");
    }
    Ok(plug::command_reply(&answer))
}

async fn open(p: Plugin<State>, hook: &str, v: Value) -> Result<Value, anyhow::Error> {
    let state = p.state().clone();
    let answer = state.check(plug::incoming_open(hook, &v), hook).await;
    if answer != Answer::Approved {
        log::warn!("warden: incoming channel refused: {answer:?}");
    }
    Ok(plug::open_reply(&answer))
}

/// Ask lightningd to preapprove `invoice` (its `preapproveinvoice` command, which asks the
/// signer): `Err` with lightningd's words when it is declined or cannot be asked.
async fn preapprove_invoice(
    rpc: &std::path::Path,
    invoice: &str,
    within: Duration,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut s = tokio::net::UnixStream::connect(rpc)
            .await
            .map_err(|e| format!("cannot reach lightningd at {}: {e}", rpc.display()))?;
        let req = serde_json::json!({
            "jsonrpc": "2.0",
            "id": "warden_cln_plugin:preapproveinvoice",
            "method": "preapproveinvoice",
            "params": {"bolt11": invoice},
        });
        s.write_all(req.to_string().as_bytes())
            .await
            .map_err(|e| format!("writing to lightningd: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading lightningd's answer: {e}"))?;
            if n == 0 {
                return Err("lightningd closed the connection without an answer".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                return match v.get("error") {
                    None => Ok(()),
                    Some(e) => Err(format!(
                        "{} (code {})",
                        e["message"].as_str().unwrap_or("declined"),
                        e["code"]
                    )),
                };
            }
        }
    };
    tokio::time::timeout(within, call)
        .await
        .unwrap_or_else(|_| Err(format!("lightningd did not answer within {within:?}")))
}

/// lightningd's messages as the plugin library reads them, each `rpc_command` call that
/// repeats a key marked (see [`plug::mark_repeated_keys`]): the library's parser keeps the last
/// of repeated keys, lightningd runs the first.
fn first_keys_stdin() -> tokio::io::DuplexStream {
    use std::io::Read;
    use tokio::io::AsyncWriteExt;
    let (reader, mut writer) = tokio::io::duplex(1 << 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    // A plain thread, not the runtime's blocking pool: the runtime would wait for a read of
    // stdin that never ends when the plugin stops (a missing option at init).
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = match stdin.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let message: Vec<u8> = buf.drain(..end + 2).collect();
                let out = std::str::from_utf8(&message[..end])
                    .ok()
                    .and_then(plug::mark_repeated_keys)
                    .map(|m| format!("{m}\n\n").into_bytes())
                    .unwrap_or(message);
                if tx.send(out).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(buf);
    });
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    reader
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(configured) = Builder::new(first_keys_stdin(), tokio::io::stdout())
        .option(SERVER)
        .option(CA)
        .option(CERT)
        .option(KEY)
        .option(TIMEOUT)
        .hook("rpc_command", rpc_command)
        .hook("openchannel", |p, v| open(p, "openchannel", v))
        .hook("openchannel2", |p, v| open(p, "openchannel2", v))
        .configure()
        .await?
    else {
        return Ok(());
    };
    // Without every option the plugin cannot check anything; exiting (rather than running
    // unchecked) makes lightningd stop when the plugin is loaded as important-plugin.
    let need = |v: Option<String>, name: &str| {
        v.with_context(|| {
            format!("this plugin needs the option {name} (see README, \"Core Lightning plugin\")")
        })
    };
    let server = need(configured.option(&SERVER)?, SERVER.name())?;
    let ca = read(&need(configured.option(&CA)?, CA.name())?, "the admin CA")?;
    let cert = read(
        &need(configured.option(&CERT)?, CERT.name())?,
        "the node certificate",
    )?;
    let key = zeroize::Zeroizing::new(read(
        &need(configured.option(&KEY)?, KEY.name())?,
        "the node certificate's key",
    )?);
    let secs = u64::try_from(configured.option(&TIMEOUT)?)
        .ok()
        .filter(|s| *s > 0)
        .context("the option warden-timeout must be a positive number of seconds")?;
    let url = url_host(&server)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key.as_slice()))
        .domain_name(url);
    let endpoint = Endpoint::from_shared(server.clone())
        .with_context(|| format!("the option warden-server ({server:?}) is not a URL"))?
        .tls_config(tls)
        .context("the plugin's TLS settings")?
        .connect_timeout(Duration::from_secs(secs))
        .timeout(Duration::from_secs(secs));
    let conf = configured.configuration();
    let state = State {
        endpoint,
        client: Arc::new(Mutex::new(None)),
        rpc: std::path::Path::new(&conf.lightning_dir).join(&conf.rpc_file),
        timeout: Duration::from_secs(secs),
    };
    let plugin = configured.start(state).await?;
    plugin.join().await
}

/// The host name the server's certificate must carry.
fn url_host(server: &str) -> anyhow::Result<String> {
    let rest = server.strip_prefix("https://").with_context(|| {
        format!("the option warden-server ({server:?}) must be an https:// URL")
    })?;
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    anyhow::ensure!(
        !host.is_empty(),
        "the option warden-server ({server:?}) has no host"
    );
    Ok(host.to_string())
}
