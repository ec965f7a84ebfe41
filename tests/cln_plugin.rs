//! warden-cln-plugin as lightningd runs it (stdin/stdout JSON-RPC: getmanifest, init, hooks with
//! the payloads CLN documents) against a real wardend serving VLS's real remote_hsmd_socket:
//! on-chain spends and channel opens are asked about before lightningd acts, and what reaches
//! the signer unchecked is refused there, recorded first.

mod common;

use common::cln::Cln;
use common::daemon::{next_event, QUORUM_RULES};
use lightning_signer::bitcoin::bip32::Xpub;
use lightning_signer::bitcoin::secp256k1::{Secp256k1, SecretKey};
use lightning_signer::bitcoin::{Address, CompressedPublicKey, Network};
use serde_json::{json, Value};
use std::path::Path;
use tokio::task::block_in_place;
use vls_protocol::msgs::{self, Message};
use warden::api::proto::EventKind;
use warden_testkit::lightningd::{error_of, plugin_options, withdrawal, PluginHost};

fn plugin_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| warden_testkit::workspace_binary("warden-cln-plugin", "warden-cln-plugin"))
}

/// The plugin, started as lightningd starts it, pointed at `port` with the node certificate.
fn plugin(port: u16, pki: &Path) -> PluginHost {
    block_in_place(|| PluginHost::start(plugin_binary(), plugin_options(port, pki, "cln-node")))
        .unwrap()
}

/// Run a hook call off the async runtime.
fn hook(f: impl FnOnce() -> std::io::Result<Value>) -> Value {
    block_in_place(f).unwrap()
}

/// The peer's node id: the public key of secret 0x11..11.
const PEER: &str = "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa";

fn rules() -> String {
    format!(
        "{QUORUM_RULES}
[channels]
max_channel_size = \"8_000_000 sat\"
max_per_peer = \"5_000_000 sat\"
allow_private = false
"
    )
}

/// A regtest address nobody in the test owns.
fn address(seed: u8) -> Address {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[seed; 32]).unwrap();
    let pk = CompressedPublicKey(key.public_key(&secp));
    Address::p2wpkh(&pk, Network::Regtest)
}

/// A wardend whose admin API names the plugin's certificate a node's, serving the proxy.
async fn start(label: &str) -> (Cln, Xpub) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wardend.toml");
    std::fs::write(&config, "[admin]\nnodes = [\"cln-node\"]\n").unwrap();
    let mut cln = Cln::start_with_env(
        label,
        &rules(),
        &[("WARDEN_CONFIG", config.to_str().unwrap())],
    )
    .await;
    // The config file must outlive wardend's start only.
    drop(dir);
    let xpub = block_in_place(|| match cln.call(warden_testkit::hsmd_init_regtest()) {
        Message::HsmdInitReplyV4(r) => Xpub::decode(&r.bip32.0).unwrap(),
        other => panic!("unexpected init reply {other:?}"),
    });
    (cln, xpub)
}

fn signs(cln: &mut Cln, w: msgs::SignWithdrawal) -> bool {
    block_in_place(|| match cln.proxy.hsmd.call(w) {
        Ok(Message::SignWithdrawalReply(r)) => {
            r.psbt.0.inner.inputs[0].final_script_witness.is_some()
        }
        _ => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_are_checked_before_lightningd_builds_them_and_counted_only_when_signed() {
    let (mut cln, xpub) = start("plugin-withdraw").await;
    let mut plugin = plugin(cln.admin_port, &cln.pki);
    let hooks: Vec<&str> = plugin.manifest["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hooks.len(), 3);
    for h in ["rpc_command", "openchannel", "openchannel2"] {
        assert!(hooks.contains(&h), "{hooks:?}");
    }
    let to = address(0x51);

    // (1) Within every limit and below the quorum threshold: lightningd goes on; nothing is
    // counted until wardend signs it.
    let reply = hook(|| {
        plugin.command(
            "withdraw",
            json!({"destination": to.to_string(), "satoshi": 500_000}),
        )
    });
    assert_eq!(reply, json!({"result": "continue"}));
    // lightningd's txprepare plugin carries the withdraw out with inner calls; they are checked
    // too (an id is the client's to choose, so it proves nothing), counting nothing.
    for (method, params) in [
        ("txprepare", json!({"outputs": [{to.to_string(): 500_000}]})),
        ("signpsbt", json!({"psbt": "cHNidP8BAAoCAAAAAAAAAAAAAA=="})),
    ] {
        let reply = hook(|| plugin.inner_command("cli:withdraw#1", method, params));
        assert_eq!(reply, json!({"result": "continue"}), "{method}");
    }
    assert_eq!(cln.window("daily-cap").await.used_msat, 0);
    assert!(signs(&mut cln, withdrawal(&xpub, &to, 500_000)));
    // What left the wallet: the output and the 1,000 sat fee.
    assert_eq!(cln.window("daily-cap").await.used_msat, 501_000_000);

    // (2) Over the per-payment cap (positional parameters, as lightning-cli sends them): the
    // command's JSON-RPC error carries the rule's tag and sentence; the node keeps serving.
    let reply = hook(|| plugin.command("withdraw", json!([to.to_string(), "2500000sat"])));
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["code"], 2100);
    assert_eq!(e["data"]["tags"], json!(["per-payment-cap", "daily-cap"]));
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("rule per-payment-cap: this payment of 2,500,000 sat is above the per-payment limit of 2,000,000 sat"),
        "{message}"
    );
    assert!(block_in_place(|| cln.still_serves()));

    // (2b) Fees (issue 25, item 1): a feerate named above [onchain] max_feerate is refused
    // before lightningd builds anything, and every signpsbt, inner or not, is checked on its
    // whole PSBT: one that pays the coin out as fee is refused with 2100, one whose change goes
    // back to the wallet (lightningd adds no keypath before its own signing) counts only what
    // leaves.
    let reply =
        hook(|| plugin.command("withdraw", json!([to.to_string(), 10_000, "2000000perkw"])));
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["code"], 2100, "{reply}");
    assert_eq!(e["data"]["tags"], json!(["warden-onchain-fee"]));
    assert!(
        e["message"].as_str().unwrap().contains(
            "the command names a feerate of 8,000 sat/vB; [onchain] max_feerate is 100 sat/vB"
        ),
        "{reply}"
    );
    let b64 = |w: msgs::SignWithdrawal| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(w.psbt.0.psbt.inner.serialize())
    };
    let drain = b64(warden_testkit::lightningd::withdrawal_paying(
        &xpub, &to, 10_000, 900_000,
    ));
    for id in [
        "cli:signpsbt#3",
        "cli:withdraw#4/cln:withdraw#5/txprepare:signpsbt#6",
    ] {
        let reply = hook(|| plugin.inner_command(id, "signpsbt", json!({"psbt": drain})));
        let e = error_of(&reply).expect("refused");
        assert_eq!(e["code"], 2100, "{id}: {reply}");
        assert_eq!(e["data"]["tags"], json!(["warden-onchain-fee"]), "{reply}");
    }
    let with_change = {
        use lightning_signer::bitcoin::bip32::ChildNumber;
        use lightning_signer::bitcoin::{Amount, ScriptBuf, TxOut};
        let mut w = withdrawal(&xpub, &to, 100_000);
        let child = xpub
            .derive_pub(&Secp256k1::new(), &[ChildNumber::Normal { index: 5 }])
            .unwrap();
        let change = ScriptBuf::new_p2wpkh(&CompressedPublicKey(child.public_key).wpubkey_hash());
        let psbt = &mut w.psbt.0.psbt.inner;
        psbt.unsigned_tx.output.push(TxOut {
            value: Amount::from_sat(4_000_000),
            script_pubkey: change,
        });
        psbt.outputs.push(Default::default());
        let coin = psbt.inputs[0].witness_utxo.as_mut().unwrap();
        coin.value = Amount::from_sat(4_101_000);
        w
    };
    let reply = hook(|| plugin.command("signpsbt", json!({"psbt": b64(with_change)})));
    assert_eq!(
        reply,
        json!({"result": "continue"}),
        "4,000,000 sat of change is not a spend over the 2,000,000 sat cap"
    );

    // (3) Above the quorum threshold: held like a payment. The request is the same one each time
    // the command is re-run, refused until two admins approved, then lightningd goes on and the
    // signature uses the approval.
    let held = || json!({"destination": to.to_string(), "satoshi": "1200000sat"});
    let reply = hook(|| plugin.command("withdraw", held()));
    let e = error_of(&reply).expect("held");
    assert_eq!(e["code"], 2101, "{reply}");
    assert_eq!(e["data"]["tags"], json!(["large-payment-quorum"]));
    let id = e["data"]["request_id"].as_str().unwrap().to_string();
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("run the command again once the admins approved it"));
    let pending = cln.pending();
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["kind"], "onchain");
    cln.approve("alice", &id);
    let reply = hook(|| plugin.command("withdraw", held()));
    assert_eq!(
        error_of(&reply).expect("still held")["data"]["request_id"],
        id.as_str()
    );
    cln.approve("bob", &id);
    let reply = hook(|| plugin.command("withdraw", held()));
    assert_eq!(reply, json!({"result": "continue"}));
    // Checking again does not use the approval up: the signature does.
    let reply = hook(|| plugin.command("withdraw", held()));
    assert_eq!(reply, json!({"result": "continue"}));
    assert!(signs(&mut cln, withdrawal(&xpub, &to, 1_200_000)));
    assert_eq!(cln.window("daily-cap").await.used_msat, 1_702_000_000);

    // (4) A spend sent to the signer without the plugin's check (a misconfigured or compromised
    // node): VLS's fatal path refuses it, and wardend records why before it answers.
    let mut events = cln.watch().await;
    assert!(!signs(&mut cln, withdrawal(&xpub, &address(0x52), 900_000)));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["daily-cap"]);
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["warden-unchecked-spend"]);
    assert!(
        e.message.contains("without the CLN plugin's check"),
        "{}",
        e.message
    );
    assert_eq!(cln.window("daily-cap").await.used_msat, 1_702_000_000);
    // The record is in the audit log, verified.
    cln.stop_wardend();
    let audit = cln
        .token
        .command("wardenctl")
        .args(["audit", "export"])
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("warden-unchecked-spend"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_opens_and_incoming_channels_are_held_to_the_channel_limits() {
    let (cln, _) = start("plugin-channels").await;
    let mut plugin = plugin(cln.admin_port, &cln.pki);
    let mut events = cln.watch().await;

    // fundchannel above max_channel_size.
    let reply = hook(|| plugin.command("fundchannel", json!({"id": PEER, "amount": 9_000_000})));
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["code"], 2100, "{reply}");
    assert_eq!(
        e["data"]["tags"],
        json!(["warden-channel-size", "warden-channel-peer"])
    );
    assert!(
        e["message"].as_str().unwrap().starts_with("rule warden-channel-size: a channel of 9,000,000 sat with peer 034f355bdcb7cc0a… is larger than the largest allowed, 8,000,000 sat"),
        "{reply}"
    );
    let event = next_event(&mut events, EventKind::Channel).await;
    assert!(
        event
            .message
            .starts_with("`fundchannel` refused before signing"),
        "{}",
        event.message
    );

    // Within the limits, announced: lightningd goes on. Unannounced: refused.
    let reply = hook(|| plugin.command("fundchannel", json!([PEER, "1000000sat"])));
    assert_eq!(reply, json!({"result": "continue"}));
    let reply = hook(|| {
        plugin.command(
            "fundchannel",
            json!({"id": PEER, "amount": 1_000_000, "announce": false}),
        )
    });
    assert_eq!(
        error_of(&reply).unwrap()["data"]["tags"],
        json!(["warden-channel-private"])
    );

    // Two channels in one command count together against the per-peer limit.
    let reply = hook(|| {
        plugin.command(
            "multifundchannel",
            json!({"destinations": [{"id": PEER, "amount": 3_000_000}, {"id": format!("{PEER}@127.0.0.1:9735"), "amount": "3000000sat"}]}),
        )
    });
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["data"]["tags"], json!(["warden-channel-peer"]));
    assert!(
        e["message"].as_str().unwrap().contains("to 6,000,000 sat"),
        "{reply}"
    );

    // A peer opening a channel over the per-peer limit is rejected (lightningd tells the peer
    // why); one within it, announced, goes on.
    let reply = hook(|| plugin.incoming(PEER, 6_000_000, 1));
    assert_eq!(reply["result"], "reject");
    assert!(
        reply["error_message"]
            .as_str()
            .unwrap()
            .starts_with("rule warden-channel-peer: an incoming channel of 6,000,000 sat"),
        "{reply}"
    );
    let reply = hook(|| plugin.incoming(PEER, 2_000_000, 1));
    assert_eq!(reply, json!({"result": "continue"}));
    let reply = hook(|| plugin.incoming(PEER, 2_000_000, 0));
    assert_eq!(reply["result"], "reject");

    // What the plugin cannot check, it refuses with advice rather than let the signer refuse it
    // fatally; commands it does not guard go on untouched.
    let reply = hook(|| {
        plugin.command(
            "withdraw",
            json!({"destination": address(1).to_string(), "satoshi": "all"}),
        )
    });
    let e = error_of(&reply).expect("uncheckable");
    assert_eq!(e["code"], 2102);
    assert_eq!(e["data"]["tags"], json!(["warden-spend-uncheckable"]));
    let reply = hook(|| plugin.command("getinfo", json!({})));
    assert_eq!(reply, json!({"result": "continue"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_fails_closed_and_a_node_certificate_may_check_but_not_read() {
    let (cln, _) = start("plugin-closed").await;
    // wardend not where the plugin looks: every guarded command is refused, the others go on.
    let mut lost = plugin(common::daemon::free_port(), &cln.pki);
    let reply = hook(|| {
        lost.command(
            "withdraw",
            json!({"destination": address(2).to_string(), "satoshi": 1_000}),
        )
    });
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["code"], 2103);
    assert_eq!(e["data"]["tags"], json!(["warden-signer-unreachable"]));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("nothing is signed unchecked"),
        "{reply}"
    );
    assert_eq!(
        hook(|| lost.command("listfunds", json!({}))),
        json!({"result": "continue"})
    );

    // Without its options the plugin exits at init: loaded as important-plugin, lightningd stops.
    let status =
        block_in_place(|| PluginHost::start_expecting_exit(plugin_binary(), json!({}))).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the plugin kept running without options"
    );

    // The node's certificate may ask for checks but not read the signer's channels or requests.
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(cln.pki.join("ca.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(
            std::fs::read(cln.pki.join("cln-node.pem")).unwrap(),
            std::fs::read(cln.pki.join("cln-node.key")).unwrap(),
        ))
        .domain_name("localhost");
    let ch = Endpoint::from_shared(format!("https://localhost:{}", cln.admin_port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut node = warden::api::proto::warden_client::WardenClient::new(ch);
    let err = node
        .list_channels(warden::api::proto::ListChannelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("is a node's (admin.nodes)"),
        "{}",
        err.message()
    );
    let bad = node
        .check_spend(warden::api::proto::CheckSpendRequest {
            outputs: vec![warden::api::proto::SpendOutput {
                address: "tb1qnotregtest".into(),
                amount_sat: 1,
            }],
            command: "withdraw".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("is not a regtest address"),
        "{}",
        bad.message()
    );
}

/// Issue 26, items 2 and 3: every command that starts a payment goes through the plugin. The
/// operator at the node reads the rule's sentence (2100 refused, 2101 held with the request id);
/// commands that do not preapprove by themselves (`renepay`, and the raw `sendpay`, `sendonion`,
/// `injectpaymentonion` with an invoice) get the node's preapproval from the plugin first, so no
/// HTLC of theirs reaches VLS unapproved; a raw command with only a payment hash passes only
/// when the signer holds that payment approved. The hsmd preapproval stays what counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_commands_are_checked_and_preapproved_before_lightningd_sends_an_htlc() {
    let (mut cln, _xpub) = start("plugin-payments").await;
    // lightningd's own hsmd connection answers the node's preapprovals, as it does in CLN.
    let (dummy, _) = std::os::unix::net::UnixStream::pair().unwrap();
    let hsmd = std::mem::replace(
        &mut cln.proxy.hsmd,
        warden_testkit::hsmd::HsmdConn::new(dummy, std::time::Duration::from_secs(1)).unwrap(),
    );
    let hsmd = std::sync::Arc::new(std::sync::Mutex::new(hsmd));
    let dir = tempfile::tempdir().unwrap();
    let node = hsmd.clone();
    let rpc = warden_testkit::lightningd::RpcSocket::serve(dir.path(), move |invoice| {
        matches!(
            node.lock().unwrap().call(msgs::PreapproveInvoice {
                invstring: vls_protocol::serde_bolt::WireString(invoice.as_bytes().to_vec()),
            }),
            Ok(Message::PreapproveInvoiceReply(r)) if r.result
        )
    })
    .unwrap();
    let mut plugin = block_in_place(|| {
        PluginHost::start_in(
            plugin_binary(),
            plugin_options(cln.admin_port, &cln.pki, "cln-node"),
            dir.path(),
        )
    })
    .unwrap();
    let payee = common::cln::Payee::new(0x61);
    let preapprovals = || rpc.calls.lock().unwrap().len();

    // renepay never preapproves: the plugin has the node do it, which counts it, then goes on.
    let small = payee.invoice(50_000_000, 1);
    let reply = hook(|| plugin.command("renepay", json!({"invstring": small})));
    assert_eq!(reply, json!({"result": "continue"}));
    assert_eq!(preapprovals(), 1, "the node preapproved it");
    assert_eq!(cln.window("daily-cap").await.used_msat, 50_000_000);

    // Over the per-payment cap: the operator reads the rule; nothing is preapproved or counted.
    let big = payee.invoice(2_500_000_000, 2);
    for (method, params) in [
        ("renepay", json!([big])),
        ("pay", json!({"bolt11": big})),
        ("xpay", json!({"invstring": big})),
        ("sendpay", json!([[], "00", null, null, big])),
    ] {
        let reply = hook(|| plugin.command(method, params));
        let e = error_of(&reply).unwrap_or_else(|| panic!("{method}: {reply}"));
        assert_eq!(e["code"], 2100, "{method}: {reply}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("rule per-payment-cap: this payment of 2,500,000 sat is above the per-payment limit"),
            "{method}: {reply}"
        );
        assert_eq!(e["data"]["tags"][0], "per-payment-cap");
    }
    assert_eq!(preapprovals(), 1);
    assert_eq!(cln.window("daily-cap").await.used_msat, 50_000_000);

    // keysend preapproves by itself, with a payment hash it picks when it runs; the plugin
    // checks its payee and amount first, so a refusal reads the rule. Above the quorum
    // threshold it is refused, not held (an approval would name a hash the next run does not
    // use), and no approval request is opened.
    let dest = payee.hex();
    let reply = hook(|| plugin.command("keysend", json!([dest, 2_500_000_000u64])));
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["code"], 2100, "{reply}");
    assert_eq!(e["data"]["tags"][0], "per-payment-cap", "{reply}");
    let pending = block_in_place(|| cln.pending());
    let reply = hook(|| {
        plugin.command(
            "keysend",
            json!({"destination": dest, "amount_msat": "1200000sat"}),
        )
    });
    let e = error_of(&reply).expect("refused");
    assert_eq!(e["code"], 2100, "{reply}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("Core Lightning's keysend picks a new payment hash each time it runs"),
        "{reply}"
    );
    assert_eq!(
        block_in_place(|| cln.pending()),
        pending,
        "no request opened"
    );
    let reply = hook(|| plugin.command("keysend", json!([dest, "20000sat"])));
    assert_eq!(reply, json!({"result": "continue"}));
    assert_eq!(
        preapprovals(),
        1,
        "keysend's own preapproval is lightningd's"
    );
    assert_eq!(cln.window("daily-cap").await.used_msat, 50_000_000);

    // Above the quorum threshold: held with its request id and what to do; once two admins
    // approved, the same command goes on (and the node's preapproval uses the approval).
    let large = payee.invoice(1_200_000_000, 3);
    let reply = hook(|| plugin.command("renepay", json!({"invstring": large})));
    let e = error_of(&reply).expect("held");
    assert_eq!(e["code"], 2101, "{reply}");
    let id = e["data"]["request_id"].as_str().unwrap().to_string();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("run the command again once the admins approved it"),
        "{reply}"
    );
    cln.approve("alice", &id);
    cln.approve("bob", &id);
    let reply = hook(|| plugin.command("renepay", json!({"invstring": large})));
    assert_eq!(reply, json!({"result": "continue"}));
    assert_eq!(cln.window("daily-cap").await.used_msat, 1_250_000_000);

    // pay preapproves by itself: the plugin only checks (for the sentence), asking nothing.
    let other = payee.invoice(10_000_000, 4);
    let reply = hook(|| plugin.command("pay", json!([other])));
    assert_eq!(reply, json!({"result": "continue"}));
    assert_eq!(preapprovals(), 2, "pay's own preapproval is lightningd's");

    // Raw onions: pay names the invoice on one part only; a part naming the hash of a payment
    // the signer holds approved goes on, one naming an unknown hash is refused with what to use.
    let approved_hash = hex::encode(common::cln::payment_hash_of(&small).0);
    let reply = hook(|| {
        plugin.command(
            "sendonion",
            json!({"onion": "00", "first_hop": {}, "payment_hash": approved_hash}),
        )
    });
    assert_eq!(reply, json!({"result": "continue"}));
    let unknown = hex::encode([9u8; 32]);
    for (method, params) in [
        (
            "sendonion",
            json!({"onion": "00", "first_hop": {}, "payment_hash": unknown}),
        ),
        ("sendpay", json!({"route": [], "payment_hash": unknown})),
        (
            "injectpaymentonion",
            json!({"onion": "00", "payment_hash": unknown, "amount_msat": 1000, "cltv_expiry": 10, "partid": 0, "groupid": 0}),
        ),
    ] {
        let reply = hook(|| plugin.command(method, params));
        let e = error_of(&reply).unwrap_or_else(|| panic!("{method}: {reply}"));
        assert_eq!(e["code"], 2102, "{method}: {reply}");
        assert_eq!(e["data"]["tags"], json!(["warden-payment-uncheckable"]));
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("pay with `pay`, `xpay` or `renepay`"),
            "{reply}"
        );
    }
    // An offer: xpay fetches its invoice and preapproves that itself.
    let reply = hook(|| {
        plugin.command(
            "xpay",
            json!({"invstring": "lno1qgsqvgnwgcg35z6ee2h3yczraddm72xrfua9uve2rlrm9deu7xyfzrc"}),
        )
    });
    assert_eq!(reply, json!({"result": "continue"}));

    assert_eq!(
        cln.window("daily-cap").await.used_msat,
        1_250_000_000,
        "checks count nothing; only the node's preapprovals did"
    );
    drop(hsmd);
}
