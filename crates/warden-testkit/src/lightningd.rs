//! lightningd's side of the plugin protocol, for driving `warden-cln-plugin` exactly as Core
//! Lightning does: a child process speaking JSON-RPC on stdin/stdout (each message followed by
//! a blank line), `getmanifest`, `init` with the options from lightningd's configuration, then
//! hook calls with the payloads CLN documents. Also the `SignWithdrawal` lightningd sends for a
//! `withdraw`, so a stand-in can sign what the plugin let through.

use lightning_signer::bitcoin::bip32::{ChildNumber, Xpub};
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::psbt::Psbt;
use lightning_signer::bitcoin::secp256k1::Secp256k1;
use lightning_signer::bitcoin::{
    absolute::LockTime, transaction::Version, Address, Amount, CompressedPublicKey, OutPoint,
    ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use vls_protocol::model::Utxo;
use vls_protocol::msgs;
use vls_protocol::psbt::StreamedPSBT;
use vls_protocol::serde_bolt::{Array, Octets};

/// A plugin process and lightningd's end of its pipes.
pub struct PluginHost {
    child: Child,
    stdin: ChildStdin,
    from_plugin: mpsc::Receiver<Value>,
    next_id: u64,
    /// The `getmanifest` answer.
    pub manifest: Value,
    /// `log` notifications the plugin sent (what lightningd would write to its log).
    pub logs: Vec<String>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broken(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

/// lightningd's JSON-RPC socket (`lightning-rpc` in its directory) as a plugin reaches it:
/// `preapproveinvoice` answered as lightningd does (`{}`, or error 213 "invoice was declined")
/// from what `preapprove` (the node's hsmd) says; every call is recorded.
pub struct RpcSocket {
    /// Every call received, in order.
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl RpcSocket {
    /// Serve in `dir`.
    pub fn serve(
        dir: &Path,
        preapprove: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        use std::io::Read;
        let listener = std::os::unix::net::UnixListener::bind(dir.join("lightning-rpc"))?;
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (seen, preapprove) = (calls.clone(), std::sync::Arc::new(preapprove));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (seen, preapprove) = (seen.clone(), preapprove.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let req = loop {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            break v;
                        }
                    };
                    seen.lock().unwrap().push(req.clone());
                    let answer = match req["method"].as_str() {
                        Some("preapproveinvoice") => {
                            let bolt11 = req["params"]["bolt11"].as_str().unwrap_or_default();
                            if preapprove(bolt11) {
                                json!({"jsonrpc": "2.0", "id": req["id"], "result": {}})
                            } else {
                                json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 213, "message": "invoice was declined"}})
                            }
                        }
                        _ => {
                            json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": "unknown command"}})
                        }
                    };
                    let _ = conn.write_all(format!("{answer}\n\n").as_bytes());
                });
            }
        });
        Ok(RpcSocket { calls })
    }
}

/// The plugin's options as lightningd passes them in `init`, for wardend's admin API on
/// `admin_port` and the client certificate `cert` (`cert.pem`, `cert.key`) in `pki`.
pub fn plugin_options(admin_port: u16, pki: &Path, cert: &str) -> Value {
    json!({
        "warden-server": format!("https://localhost:{admin_port}"),
        "warden-ca": pki.join("ca.pem"),
        "warden-cert": pki.join(format!("{cert}.pem")),
        "warden-key": pki.join(format!("{cert}.key")),
        "warden-timeout": 10,
    })
}

fn configuration() -> Value {
    configuration_in(Path::new("/tmp/warden-standin-lightning"))
}

/// lightningd's configuration as `init` passes it, for a lightning directory `dir` (whose
/// `lightning-rpc` is lightningd's JSON-RPC socket).
fn configuration_in(dir: &Path) -> Value {
    json!({
        "lightning-dir": dir,
        "rpc-file": "lightning-rpc",
        "startup": true,
        "network": "regtest",
        "feature_set": {"init": "", "node": "", "channel": "", "invoice": ""},
    })
}

impl PluginHost {
    /// Start the plugin at `binary` and complete lightningd's handshake with `options`.
    pub fn start(binary: &Path, options: Value) -> std::io::Result<Self> {
        Self::start_in(binary, options, Path::new("/tmp/warden-standin-lightning"))
    }

    /// [`PluginHost::start`] with lightningd's directory `dir` (where an [`RpcSocket`] serves).
    pub fn start_in(binary: &Path, options: Value, dir: &Path) -> std::io::Result<Self> {
        let mut p = Self::spawn(binary)?;
        p.manifest = p.call("getmanifest", json!({"allow-deprecated-apis": false}))?;
        let init = p.call(
            "init",
            json!({"options": options, "configuration": configuration_in(dir)}),
        )?;
        if let Some(why) = init.get("disable") {
            return Err(broken(format!("the plugin disabled itself: {why}")));
        }
        Ok(p)
    }

    /// Send `getmanifest` and `init` with `options` and wait up to 5 s for the plugin to exit
    /// (what a plugin that cannot work must do); `None` if it is still running.
    pub fn start_expecting_exit(
        binary: &Path,
        options: Value,
    ) -> std::io::Result<Option<ExitStatus>> {
        let mut p = Self::spawn(binary)?;
        p.manifest = p.call("getmanifest", json!({}))?;
        p.send(
            "init",
            json!({"options": options, "configuration": configuration()}),
        )?;
        for _ in 0..100 {
            if let Some(status) = p.child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    fn spawn(binary: &Path) -> std::io::Result<Self> {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| broken(format!("starting {}: {e}", binary.display())))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() {
                    text.push_str(&line);
                    continue;
                }
                if text.trim().is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    break;
                };
                text.clear();
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Ok(PluginHost {
            child,
            stdin,
            from_plugin: rx,
            next_id: 1,
            manifest: Value::Null,
            logs: Vec::new(),
        })
    }

    fn send(&mut self, method: &str, params: Value) -> std::io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        write!(self.stdin, "{msg}\n\n")?;
        self.stdin.flush()?;
        Ok(id)
    }

    /// A request and its result (notifications on the way are kept in `logs`).
    pub fn call(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        let id = self.send(method, params)?;
        loop {
            let v = self
                .from_plugin
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| broken(format!("no answer to {method} from the plugin")))?;
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(e) = v.get("error") {
                    return Err(broken(format!("the plugin answered {method} with {e}")));
                }
                return Ok(v["result"].clone());
            }
            if v.get("method").and_then(Value::as_str) == Some("log") {
                self.logs
                    .push(v["params"]["message"].as_str().unwrap_or_default().into());
            }
        }
    }

    /// lightningd's `rpc_command` hook for `method` with `params`, as `lightning-cli` sends it
    /// (id `cli:METHOD#N`).
    pub fn command(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        let id = format!("cli:{method}#{}", self.next_id);
        self.command_with_id(&id, method, params)
    }

    /// The hook for a command lightningd (or its spender plugin) issues while carrying out the
    /// command `parent` (its chained id, `cli:withdraw#3/spender:signpsbt#4`).
    pub fn inner_command(
        &mut self,
        parent: &str,
        method: &str,
        params: Value,
    ) -> std::io::Result<Value> {
        let id = format!("{parent}/spender:{method}#{}", self.next_id);
        self.command_with_id(&id, method, params)
    }

    fn command_with_id(&mut self, id: &str, method: &str, params: Value) -> std::io::Result<Value> {
        self.call(
            "rpc_command",
            json!({"rpc_command": {"id": id, "method": method, "params": params}}),
        )
    }

    /// lightningd's `openchannel` hook for a peer opening a `sat` channel (`flags` bit 0:
    /// announce), with the fields CLN documents.
    pub fn incoming(&mut self, peer: &str, sat: u64, flags: u64) -> std::io::Result<Value> {
        self.call(
            "openchannel",
            json!({"openchannel": {
                "id": peer,
                "funding_msat": sat * 1_000,
                "push_msat": 0,
                "dust_limit_msat": 546_000,
                "max_htlc_value_in_flight_msat": 18_446_744_073_709_551_615u64,
                "channel_reserve_msat": 1_000_000,
                "htlc_minimum_msat": 0,
                "feerate_per_kw": 7_500,
                "to_self_delay": 5,
                "max_accepted_htlcs": 483,
                "channel_flags": flags,
            }}),
        )
    }
}

/// The JSON-RPC error of a hook reply, if the command is refused or held.
pub fn error_of(reply: &Value) -> Option<&Value> {
    reply.get("return").and_then(|r| r.get("error"))
}

/// The `SignWithdrawal` lightningd sends for a `withdraw` of `sat` to `to`: one wallet coin (at
/// BIP32 child 1 of the wallet key `xpub` from `HsmdInit`, as CLN derives its wallet) spent to
/// `to`, no change, 1,000 sat of fee.
pub fn withdrawal(xpub: &Xpub, to: &Address, sat: u64) -> msgs::SignWithdrawal {
    withdrawal_paying(xpub, to, sat, 1_000)
}

/// [`withdrawal`] from a coin of `sat + fee_sat`: everything not sent to `to` is fee.
pub fn withdrawal_paying(
    xpub: &Xpub,
    to: &Address,
    sat: u64,
    fee_sat: u64,
) -> msgs::SignWithdrawal {
    let secp = Secp256k1::new();
    let child = xpub
        .derive_pub(&secp, &[ChildNumber::Normal { index: 1 }])
        .expect("a normal child of a public key");
    let wallet = ScriptBuf::new_p2wpkh(&CompressedPublicKey(child.public_key).wpubkey_hash());
    let input = |txid, sequence| TxIn {
        previous_output: OutPoint { txid, vout: 0 },
        script_sig: ScriptBuf::new(),
        sequence,
        witness: Witness::new(),
    };
    let coin = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![input(Txid::from_byte_array([7; 32]), Sequence::MAX)],
        output: vec![TxOut {
            value: Amount::from_sat(sat + fee_sat),
            script_pubkey: wallet,
        }],
    };
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![input(coin.compute_txid(), Sequence::ENABLE_RBF_NO_LOCKTIME)],
        output: vec![TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: to.script_pubkey(),
        }],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("an unsigned transaction");
    psbt.inputs[0].witness_utxo = Some(coin.output[0].clone());
    psbt.inputs[0].non_witness_utxo = Some(coin.clone());
    msgs::SignWithdrawal {
        utxos: Array(vec![Utxo {
            txid: coin.compute_txid(),
            outnum: 0,
            amount: sat + fee_sat,
            keyindex: 1,
            is_p2sh: false,
            script: Octets::EMPTY,
            close_info: None,
            is_in_coinbase: false,
        }]),
        psbt: StreamedPSBT::new(psbt).into(),
    }
}
