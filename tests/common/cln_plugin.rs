//! `warden-cln-plugin` driven exactly as lightningd drives a plugin: a child process speaking
//! JSON-RPC on stdin/stdout (each message followed by a blank line), `getmanifest`, `init` with
//! the options from lightningd's configuration, then hook calls.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct PluginProcess {
    child: Child,
    stdin: ChildStdin,
    from_plugin: mpsc::Receiver<Value>,
    next_id: u64,
    /// The `getmanifest` answer.
    pub manifest: Value,
    /// `log` notifications the plugin sent (what lightningd would write to its log).
    pub logs: Vec<String>,
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options as lightningd passes them in `init`, for a node certificate `cert` in `pki`.
pub fn options(admin_port: u16, pki: &Path, cert: &str) -> Value {
    json!({
        "warden-server": format!("https://localhost:{admin_port}"),
        "warden-ca": pki.join("ca.pem"),
        "warden-cert": pki.join(format!("{cert}.pem")),
        "warden-key": pki.join(format!("{cert}.key")),
        "warden-timeout": 10,
    })
}

impl PluginProcess {
    /// Start the plugin and complete lightningd's handshake with `options`.
    pub fn start(options: Value) -> Self {
        let mut p = Self::spawn();
        p.manifest = p.call("getmanifest", json!({"allow-deprecated-apis": false}));
        let init = p.call(
            "init",
            json!({
                "options": options,
                "configuration": {
                    "lightning-dir": "/tmp/warden-test-lightning",
                    "rpc-file": "lightning-rpc",
                    "startup": true,
                    "network": "regtest",
                    "feature_set": {"init": "", "node": "", "channel": "", "invoice": ""},
                },
            }),
        );
        assert!(
            init.get("disable").is_none(),
            "plugin disabled itself: {init}"
        );
        p
    }

    /// Start the plugin and send `getmanifest` and `init`, returning the process and what
    /// `init` got (an answer, or nothing because the plugin exited).
    pub fn start_expecting_exit(options: Value) -> (Self, Option<std::process::ExitStatus>) {
        let mut p = Self::spawn();
        p.manifest = p.call("getmanifest", json!({}));
        p.send(
            "init",
            json!({
                "options": options,
                "configuration": {
                    "lightning-dir": "/tmp/warden-test-lightning",
                    "rpc-file": "lightning-rpc",
                    "startup": true,
                    "network": "regtest",
                    "feature_set": {},
                },
            }),
        );
        for _ in 0..100 {
            if let Ok(Some(status)) = p.child.try_wait() {
                return (p, Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (p, None)
    }

    fn spawn() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden-cln-plugin"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start warden-cln-plugin");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    if !text.trim().is_empty() {
                        let v: Value = serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("plugin wrote non-JSON {text:?}: {e}"));
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    text.clear();
                } else {
                    text.push_str(&line);
                }
            }
        });
        PluginProcess {
            child,
            stdin,
            from_plugin: rx,
            next_id: 1,
            manifest: Value::Null,
            logs: Vec::new(),
        }
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        write!(self.stdin, "{msg}\n\n").unwrap();
        self.stdin.flush().unwrap();
        id
    }

    /// A request and its result (notifications on the way are kept in `logs`).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        loop {
            let v = self
                .from_plugin
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no answer to {method} from the plugin"));
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("plugin answered {method} with an error: {e}");
                }
                return v["result"].clone();
            }
            if v.get("method").and_then(Value::as_str) == Some("log") {
                self.logs.push(
                    v["params"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    }

    /// lightningd's `rpc_command` hook for `method` with `params`.
    pub fn command(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.call(
            "rpc_command",
            json!({"rpc_command": {"id": id, "method": method, "params": params}}),
        )
    }

    /// lightningd's `openchannel` hook for a peer opening a `sat` channel (`flags` bit 0:
    /// announce), with the fields CLN documents.
    pub fn incoming(&mut self, peer: &str, sat: u64, flags: u64) -> Value {
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
