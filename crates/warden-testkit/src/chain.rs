//! A loopback bitcoind stand-in for `remote_hsmd_socket`.
//!
//! `remote_hsmd_socket` starts a chain follower that aborts the process unless a bitcoind
//! answers; the follower authenticates with the user:password in `BITCOIND_RPC_URL`. This
//! responder serves a regtest chain holding only the genesis block, which is all the follower
//! needs, and answers exactly these JSON-RPC calls (anything else is a "method not found"
//! error, logged):
//! - `getblockchaininfo` → chain "regtest", blocks 0, bestblockhash = genesis;
//! - `getblockhash h` → the genesis hash for 0, error -8 (height out of range) otherwise;
//! - `getblockheader hash` → the genesis header (version, merkleroot, time, nonce, bits,
//!   chainwork, height); error -5 for another hash;
//! - `getblock hash 0` → the genesis block, hex;
//! - `gettxout txid n` → null (unknown output).

use base64::Engine as _;
use lightning_signer::bitcoin::consensus::encode::serialize_hex;
use lightning_signer::bitcoin::constants::genesis_block;
use lightning_signer::bitcoin::Network;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A running responder.
#[derive(Debug)]
pub struct ChainStub {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The user name it accepts.
    pub user: String,
    /// The password it accepts.
    pub password: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChainStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChainStub {
    /// `BITCOIND_RPC_URL` for remote_hsmd_socket, credentials included.
    pub fn url(&self) -> String {
        format!("http://{}:{}@{}", self.user, self.password, self.addr)
    }

    /// Start on an ephemeral loopback port, with random credentials.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut pw = [0u8; 12];
        getrandom::getrandom(&mut pw).map_err(std::io::Error::other)?;
        let user = "warden".to_string();
        let password = hex::encode(pw);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let expected = expected.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(sock, &expected).await;
                });
            }
        });
        Ok(ChainStub {
            addr,
            user,
            password,
            task,
        })
    }
}

async fn serve_connection(sock: tokio::net::TcpStream, expected_auth: &str) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut content_length = 0usize;
        let mut auth_ok = false;
        let mut line = String::new();
        // Request line, then headers.
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = v.trim().parse().unwrap_or(0),
                    "authorization" => auth_ok = v.trim() == expected_auth,
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        r.read_exact(&mut body).await?;
        let (status, payload) = if !auth_ok {
            ("401 Unauthorized", String::new())
        } else {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            ("200 OK", answer(&req).to_string())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(payload.as_bytes()).await?;
        w.flush().await?;
    }
}

fn answer(req: &Value) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    let genesis = genesis_block(Network::Regtest);
    let hash = genesis.block_hash().to_string();
    let ok = |result: Value| json!({"result": result, "error": null, "id": id});
    let err = |code: i64, message: &str| json!({"result": null, "error": {"code": code, "message": message}, "id": id});
    match method {
        "getblockchaininfo" => {
            ok(json!({"chain": "regtest", "blocks": 0, "headers": 0, "bestblockhash": hash}))
        }
        "getblockhash" => match params.get(0).and_then(Value::as_u64) {
            Some(0) => ok(json!(hash)),
            _ => err(-8, "Block height out of range"),
        },
        "getblockheader" => {
            if params.get(0).and_then(Value::as_str) == Some(hash.as_str()) {
                let h = genesis.header;
                ok(json!({
                    "hash": hash,
                    "height": 0,
                    "version": h.version.to_consensus(),
                    "merkleroot": h.merkle_root.to_string(),
                    "time": h.time,
                    "nonce": h.nonce,
                    "bits": format!("{:08x}", h.bits.to_consensus()),
                    "chainwork": hex::encode(h.work().to_be_bytes()),
                }))
            } else {
                err(-5, "Block not found")
            }
        }
        "getblock" => {
            if params.get(0).and_then(Value::as_str) == Some(hash.as_str()) {
                ok(json!(serialize_hex(&genesis)))
            } else {
                err(-5, "Block not found")
            }
        }
        "gettxout" => ok(Value::Null),
        other => {
            tracing::warn!(method = other, "bitcoind stand-in: method not found");
            err(-32601, "Method not found")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_follower_calls_for_the_genesis_block() {
        let g = genesis_block(Network::Regtest).block_hash().to_string();
        let r = answer(&json!({"method": "getblockhash", "params": [0], "id": 1}));
        assert_eq!(r["result"], json!(g));
        let r = answer(&json!({"method": "getblockhash", "params": [1], "id": 2}));
        assert_eq!(r["error"]["code"], json!(-8));
        let r = answer(&json!({"method": "getblockheader", "params": [g], "id": 3}));
        assert_eq!(r["result"]["height"], json!(0));
        assert_eq!(r["result"]["bits"], json!("207fffff"));
        let r = answer(&json!({"method": "nope", "id": 4}));
        assert_eq!(r["error"]["code"], json!(-32601));
    }
}
