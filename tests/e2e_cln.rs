//! End to end against real VLS code: CLN's hsmd wire protocol through VLS's own
//! remote_hsmd_socket (hsmd socket on fd 3) to a real wardend on a per-test SoftHSM token.
//! Invoices are real BOLT 11 invoices signed by a test payee key.

mod common;

use common::cln::{Cln, Payee};
use common::daemon::{next_event, QUORUM_RULES};
use lightning_signer::bitcoin::hashes::{sha256d, Hash};
use lightning_signer::bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use lightning_signer::bitcoin::secp256k1::{Message as SecpMessage, Secp256k1};
use tokio::task::block_in_place;
use vls_protocol::msgs::{self, Message};
use warden::api::proto::EventKind;

const SAT: u64 = 1_000;

/// [`QUORUM_RULES`] with `listed` on an allowlist.
fn rules(listed: &Payee) -> String {
    format!(
        "[[allowlist]]\ntag = \"trusted-suppliers\"\npayees = [\"{}\"]\n{QUORUM_RULES}",
        listed.hex()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsmd_init_returns_the_node_id_of_the_hsm_sealed_seed() {
    let mut cln = Cln::start("e2e-init", &rules(&Payee::new(0x22))).await;
    let node_id = block_in_place(|| cln.init());
    assert_eq!(node_id, cln.node_id_from_init);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_payment_waits_for_two_admins_across_a_wardend_crash() {
    let mut cln = Cln::start("e2e-quorum", &rules(&Payee::new(0x22))).await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);

    // (a) small: approved.
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(10_000 * SAT, 1))
    ));

    // (b) above the quorum threshold: not approved, and a pending request appears.
    let large = payee.invoice(1_500_000 * SAT, 2);
    assert!(!block_in_place(|| cln.preapprove(&large)));
    let pending = block_in_place(|| cln.pending());
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    let id = pending[0]["id"].as_str().unwrap().to_string();
    assert_eq!(pending[0]["amount_msat"], 1_500_000 * SAT);
    assert_eq!(pending[0]["rule_tag"], "large-payment-quorum");
    // Asking again does not open a second request.
    assert!(!block_in_place(|| cln.preapprove(&large)));
    assert_eq!(
        block_in_place(|| cln.pending()).as_array().unwrap().len(),
        1
    );

    // wardend crashes; the proxy (and so CLN) keeps running and wardend comes back.
    cln.kill_wardend();
    assert!(
        cln.proxy.is_running(),
        "the proxy survives the signer's crash"
    );
    cln.start_wardend();
    let pending = block_in_place(|| cln.pending());
    assert_eq!(
        pending[0]["id"],
        id.as_str(),
        "the pending request survived the restart"
    );
    let daily = cln.window("daily-cap").await;
    assert_eq!(
        daily.used_msat,
        10_000 * SAT,
        "the velocity window survived the restart"
    );

    // Two admins approve with wardenctl; the same preapprove now passes.
    for admin in ["alice", "bob"] {
        block_in_place(|| cln.approve(admin, &id));
    }
    assert!(
        block_in_place(|| cln.preapprove(&large)),
        "approved after the quorum"
    );
    assert!(block_in_place(|| cln.still_serves()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_over_the_daily_limit_is_refused_with_its_tag() {
    let mut cln = Cln::start("e2e-daily", &rules(&Payee::new(0x22))).await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(1_000_000 * SAT, 1))
    ));
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(999_000 * SAT, 2))
    ));
    let mut events = cln.watch().await;
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(2_000 * SAT, 3))
    ));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["daily-cap"]);
    assert_eq!(
        e.message,
        "rule daily-cap: 2,001,000 sat would be spent in the last 24h; the limit is 2,000,000 sat"
    );
    assert!(block_in_place(|| cln.still_serves()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_payee_above_the_per_payment_limit_is_still_refused() {
    let listed = Payee::new(0x22);
    let mut cln = Cln::start("e2e-allow", &rules(&listed)).await;
    block_in_place(|| cln.init());
    let mut events = cln.watch().await;
    assert!(!block_in_place(
        || cln.preapprove(&listed.invoice(2_500_000 * SAT, 1))
    ));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert!(e.tags.contains(&"per-payment-cap".to_string()), "{e:?}");
    assert!(block_in_place(|| cln.still_serves()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_message_and_sign_invoice_recover_to_the_node_id() {
    let mut cln = Cln::start("e2e-sign", &rules(&Payee::new(0x22))).await;
    let node_id = block_in_place(|| cln.init());
    let secp = Secp256k1::verification_only();
    let recover = |sig: &[u8; 65], digest: [u8; 32]| {
        let rs = RecoverableSignature::from_compact(
            &sig[..64],
            RecoveryId::from_i32(i32::from(sig[64])).unwrap(),
        )
        .unwrap();
        hex::encode(
            secp.recover_ecdsa(&SecpMessage::from_digest(digest), &rs)
                .unwrap()
                .serialize(),
        )
    };

    let text = b"warden end-to-end".to_vec();
    let reply = block_in_place(|| {
        cln.call(msgs::SignMessage {
            message: vls_protocol::serde_bolt::Octets(text.clone()),
        })
    });
    let Message::SignMessageReply(r) = reply else {
        panic!("{reply:?}")
    };
    let digest = sha256d::Hash::hash(&[b"Lightning Signed Message:".as_slice(), &text].concat())
        .to_byte_array();
    assert_eq!(recover(&r.signature.0, digest), node_id);

    // An invoice for our own node, signed by the node through VLS. CLN sends the invoice's
    // data part as 5-bit values and its human-readable part; take both from a BOLT 11 string.
    let template = Payee::new(0x44).invoice(50_000 * SAT, 9);
    let parsed: lightning_signer::lightning_invoice::Bolt11Invoice = template.parse().unwrap();
    let signable = parsed
        .clone()
        .into_signed_raw()
        .raw_invoice()
        .signable_hash();
    let (hrp_text, rest) = template.rsplit_once('1').unwrap();
    const CHARSET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    // Drop the 104 characters of signature and the 6 of checksum.
    let data = &rest[..rest.len() - 104 - 6];
    let u5bytes: Vec<u8> = data
        .chars()
        .map(|c| CHARSET.find(c).unwrap() as u8)
        .collect();
    let hrp = hrp_text.as_bytes().to_vec();
    let reply = block_in_place(|| {
        cln.call(msgs::SignInvoice {
            u5bytes: vls_protocol::serde_bolt::Octets(u5bytes),
            hrp: vls_protocol::serde_bolt::Octets(hrp),
        })
    });
    let Message::SignInvoiceReply(r) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(recover(&r.signature.0, signable), node_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_peer_request_is_served() {
    let mut cln = Cln::start("e2e-peer", &rules(&Payee::new(0x22))).await;
    block_in_place(|| cln.init());
    let peer = Payee::new(0x33).node_id.serialize();
    let reply = block_in_place(|| {
        cln.call(msgs::NewChannel {
            peer_id: vls_protocol::model::PubKey(peer),
            dbid: 7,
        })
    });
    assert!(matches!(reply, Message::NewChannelReply(_)), "{reply:?}");
    let mut channel = block_in_place(|| cln.proxy.hsmd.new_client(peer, 7, 0)).unwrap();
    let reply = block_in_place(|| {
        channel.call(msgs::GetPerCommitmentPoint {
            commitment_number: 0,
        })
    })
    .unwrap();
    let Message::GetPerCommitmentPointReply(r) = reply else {
        panic!("{reply:?}")
    };
    lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(&r.point.0)
        .expect("a valid per-commitment point");
    assert!(block_in_place(|| cln.still_serves()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_answers_and_the_proxy_keeps_serving() {
    let mut cln = Cln::start("e2e-refusals", &rules(&Payee::new(0x22))).await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);
    // An unparsable invoice: not approved, not an error.
    assert!(!block_in_place(|| cln.preapprove("lnbcrt1garbage")));
    assert!(
        block_in_place(|| cln.still_serves()),
        "an unparsable invoice must not stop the node"
    );
    // An expired invoice.
    let expired = {
        use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
        let secp = Secp256k1::new();
        InvoiceBuilder::new(Currency::Regtest)
            .description("old".into())
            .payment_hash(lightning_signer::bitcoin::hashes::sha256::Hash::hash(
                b"old",
            ))
            .payment_secret(lightning_signer::lightning::types::payment::PaymentSecret(
                [1u8; 32],
            ))
            .duration_since_epoch(std::time::Duration::from_secs(1_600_000_000))
            .expiry_time(std::time::Duration::from_secs(60))
            .min_final_cltv_expiry_delta(144)
            .amount_milli_satoshis(1_000 * SAT)
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &payee.secret))
            .unwrap()
            .to_string()
    };
    let mut events = cln.watch().await;
    assert!(!block_in_place(|| cln.preapprove(&expired)));
    assert!(
        block_in_place(|| cln.still_serves()),
        "an expired invoice must not stop the node"
    );
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(
        e.tags,
        vec!["policy-invoice-not-expired"],
        "VLS's own rule tag: {e:?}"
    );
    let daily = cln.window("daily-cap").await;
    assert_eq!(
        daily.used_msat, 0,
        "a payment VLS refuses is not counted against the limits"
    );
    // Quorum, limit: refused, still running.
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(1_500_000 * SAT, 5))
    ));
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(3_000_000 * SAT, 6))
    ));
    assert!(block_in_place(|| cln.still_serves()));
    // And the node still gets service.
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(1_000 * SAT, 7))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_invoice_capacity_the_answer_is_a_tagged_refusal() {
    let mut cln = Cln::start_with_env(
        "e2e-capacity",
        &rules(&Payee::new(0x22)),
        &[("WARDEN_MAX_INVOICES", "2")],
    )
    .await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(1_000 * SAT, 1))
    ));
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(1_000 * SAT, 2))
    ));
    let mut events = cln.watch().await;
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(1_000 * SAT, 3))
    ));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["warden-invoice-capacity"]);
    assert!(
        e.message
            .contains("2 live invoices, the configured capacity is 2"),
        "{e:?}"
    );
    assert!(
        block_in_place(|| cln.still_serves()),
        "capacity is a refusal, never an error"
    );
    // An invoice already held is still approved at capacity.
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(1_000 * SAT, 1))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_invoices_survive_a_restart_and_are_not_counted_twice() {
    let mut cln = Cln::start("e2e-persist", &rules(&Payee::new(0x22))).await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);
    let invoices: Vec<String> = (1..=5).map(|n| payee.invoice(100_000 * SAT, n)).collect();
    for inv in &invoices {
        assert!(block_in_place(|| cln.preapprove(inv)));
    }
    cln.kill_wardend();
    cln.start_wardend();
    assert_eq!(cln.window("daily-cap").await.used_msat, 500_000 * SAT);
    // VLS restored every invoice from Warden's per-entry state: asking again is approved by
    // VLS's own record of the payment, and nothing is counted a second time.
    for inv in &invoices {
        assert!(block_in_place(|| cln.preapprove(inv)));
    }
    let after = cln.window("daily-cap").await;
    assert_eq!(after.used_msat, 500_000 * SAT);
    assert_eq!(after.used_count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rules_and_time_windows_refuse_without_stopping_the_node() {
    let denied = Payee::new(0x66);
    // A one-hour window that does not contain the current UTC hour (wardend uses the real clock).
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3_600)
        % 24;
    let (from, to) = ((hour + 2) % 24, (hour + 3) % 24);
    let rules = format!(
        r#"
[[deny]]
tag = "blocked-payee"
payees = ["{}"]

[[time_window]]
tag = "office-hours"
above = "100_000 sat"
from = "{from:02}:00"
to = "{to:02}:00"
"#,
        denied.hex()
    );
    let mut cln = Cln::start("e2e-deny-time", &rules).await;
    block_in_place(|| cln.init());
    let mut events = cln.watch().await;
    assert!(!block_in_place(
        || cln.preapprove(&denied.invoice(1_000 * SAT, 1))
    ));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["blocked-payee"]);
    assert!(
        block_in_place(|| cln.still_serves()),
        "a deny rule must not stop the node"
    );
    let payee = Payee::new(0x11);
    assert!(!block_in_place(
        || cln.preapprove(&payee.invoice(200_000 * SAT, 2))
    ));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["office-hours"]);
    assert!(
        block_in_place(|| cln.still_serves()),
        "a time window must not stop the node"
    );
    assert!(
        block_in_place(|| cln.preapprove(&payee.invoice(50_000 * SAT, 3))),
        "small payments any time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amountless_invoice_and_a_keysend_to_a_non_key_are_tagged_refusals_and_the_node_keeps_service(
) {
    let mut cln = Cln::start("e2e-prescreen", &rules(&Payee::new(0x22))).await;
    block_in_place(|| cln.init());
    let payee = Payee::new(0x11);
    let mut events = cln.watch().await;
    let amountless = {
        use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
        let secp = Secp256k1::new();
        InvoiceBuilder::new(Currency::Regtest)
            .description("tip jar".into())
            .payment_hash(lightning_signer::bitcoin::hashes::sha256::Hash::hash(
                b"tip",
            ))
            .payment_secret(lightning_signer::lightning::types::payment::PaymentSecret(
                [1u8; 32],
            ))
            .current_timestamp()
            .min_final_cltv_expiry_delta(144)
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &payee.secret))
            .unwrap()
            .to_string()
    };
    assert!(!block_in_place(|| cln.preapprove(&amountless)));
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["warden-invoice-without-amount"]);
    assert!(
        e.message.contains(
            "has no amount, and CLN's preapprove does not say how much the node will pay"
        ),
        "{}",
        e.message
    );
    let reply = block_in_place(|| {
        cln.call(msgs::PreapproveKeysend {
            destination: vls_protocol::model::PubKey([5u8; 33]),
            payment_hash: vls_protocol::model::Sha256([9u8; 32]),
            amount_msat: 1_000 * SAT,
        })
    });
    match reply {
        Message::PreapproveKeysendReply(r) => assert!(!r.result),
        other => panic!("{other:?}"),
    }
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["warden-keysend-bad-destination"]);
    assert!(
        e.message.contains("is not a valid public key"),
        "{}",
        e.message
    );
    // The proxy kept serving: the next request gets its answer (not just a live process).
    assert!(block_in_place(
        || cln.preapprove(&payee.invoice(1_000 * SAT, 8))
    ));
    let daily = cln.window("daily-cap").await;
    assert_eq!(
        daily.used_msat,
        1_000 * SAT,
        "only the good payment is counted"
    );
}

/// What a sweep's signature verifies against: the sighash of input 0 of `psbt` under `wscript`.
fn sweep_sighash(
    psbt: &lightning_signer::bitcoin::psbt::Psbt,
    wscript: &lightning_signer::bitcoin::Script,
) -> SecpMessage {
    use lightning_signer::bitcoin::sighash::{EcdsaSighashType, SighashCache};
    let amount = psbt.inputs[0].witness_utxo.as_ref().unwrap().value;
    let hash = SighashCache::new(&psbt.unsigned_tx)
        .p2wsh_signature_hash(0, wscript, amount, EcdsaSighashType::All)
        .unwrap();
    SecpMessage::from_digest(hash.to_byte_array())
}

/// Issue 26, item 1: after a force close, lightningd sweeps the node's delayed output (of its
/// commitment, and of its HTLC transactions) and the HTLC outputs of the peer's commitment back
/// to the wallet at Core Lightning's floor feerate, in exactly Core Lightning's shape. Each is
/// signed by the key the output pays to. A sweep far above VLS's maximum feerate is refused, and
/// the refusal is announced with VLS's rule tag before the answer goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_close_sweeps_at_core_lightnings_floor_are_signed_and_one_far_above_the_maximum_is_a_tagged_refusal(
) {
    use lightning_signer::bitcoin::bip32::Xpub;
    use lightning_signer::bitcoin::secp256k1::{ecdsa::Signature, PublicKey};
    use lightning_signer::bitcoin::{OutPoint, Txid};
    use lightning_signer::lightning::ln::chan_utils::{
        get_htlc_redeemscript, get_revokeable_redeemscript, HTLCOutputInCommitment, TxCreationKeys,
    };
    use lightning_signer::lightning::ln::channel_keys::{
        DelayedPaymentBasepoint, DelayedPaymentKey, HtlcBasepoint, HtlcKey, RevocationBasepoint,
        RevocationKey,
    };
    use lightning_signer::lightning::types::features::ChannelTypeFeatures;
    use lightning_signer::lightning::types::payment::PaymentHash;
    use warden_testkit::onchain::{self, Spendable, FEERATE_FLOOR};
    use warden_testkit::{setup_channel, test_key};

    let mut cln = Cln::start("e2e-sweeps", &rules(&Payee::new(0x22))).await;
    let xpub = block_in_place(|| match cln.call(warden_testkit::hsmd_init_regtest()) {
        Message::HsmdInitReplyV4(r) => Xpub::decode(&r.bip32.0).unwrap(),
        other => panic!("{other:?}"),
    });
    let (peer_seed, dbid, delay) = (41u64, 9u64, 144u16);
    let peer =
        block_in_place(|| setup_channel(&mut cln.proxy.hsmd, peer_seed, dbid, 1_000_000)).unwrap();
    let secp = Secp256k1::new();
    let key = |b: [u8; 33]| PublicKey::from_slice(&b).unwrap();
    let ours = block_in_place(|| {
        match cln.call(msgs::GetChannelBasepoints {
            node_id: vls_protocol::model::PubKey(peer),
            dbid,
        }) {
            Message::GetChannelBasepointsReply(r) => r.basepoints,
            other => panic!("{other:?}"),
        }
    });
    let point = block_in_place(|| {
        let mut channel = cln.proxy.hsmd.new_client(peer, dbid, 0).unwrap();
        match channel
            .call(msgs::GetPerCommitmentPoint {
                commitment_number: 0,
            })
            .unwrap()
        {
            Message::GetPerCommitmentPointReply(r) => key(r.point.0),
            other => panic!("{other:?}"),
        }
    });
    // The node's delayed output of its commitment 0: the revokeable script with the keys of
    // that commitment, as onchaind hands it to lightningd.
    let delayed_key = DelayedPaymentKey::from_basepoint(
        &secp,
        &DelayedPaymentBasepoint(key(ours.delayed_payment.0)),
        &point,
    );
    let to_local = get_revokeable_redeemscript(
        &RevocationKey::from_basepoint(
            &secp,
            &RevocationBasepoint(key(test_key(peer_seed, 1))),
            &point,
        ),
        delay,
        &delayed_key,
    );
    let delayed = |txid: u8, sat| Spendable {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([txid; 32]),
            vout: 1,
        },
        sat,
        wscript: to_local.clone(),
        sequence: u32::from(delay),
        locktime: 0,
    };
    let sign_delayed = |cln: &mut Cln, out: &Spendable, feerate| {
        let (psbt, fee) = onchain::sweep(&xpub, 3, out, feerate);
        let sighash = sweep_sighash(&psbt, &out.wscript);
        let msg = onchain::delayed_payment_to_us(psbt.clone(), &out.wscript, 0, peer, dbid);
        (cln.proxy.hsmd.call(msg), sighash, psbt, fee)
    };
    let signed_by = |reply: Message, sighash: &SecpMessage, signer: &PublicKey| match reply {
        Message::SignTxReply(r) => {
            let sig = Signature::from_compact(&r.signature.signature.0).unwrap();
            secp.verify_ecdsa(sighash, &sig, signer).is_ok()
        }
        other => panic!("not signed: {other:?}"),
    };

    // The to_local sweep at the floor: VLS's default minimum would read it as under 253.
    let to_local_out = delayed(0xc1, 600_000);
    let (reply, sighash, psbt, fee) =
        block_in_place(|| sign_delayed(&mut cln, &to_local_out, FEERATE_FLOOR));
    let vls_estimate = fee * 1_000 / (psbt.unsigned_tx.weight().to_wu() + 220);
    assert!(
        vls_estimate < u64::from(FEERATE_FLOOR),
        "the sweep is at the edge this guards: VLS estimates {vls_estimate} sat/kw"
    );
    assert!(
        signed_by(reply.unwrap(), &sighash, &delayed_key.to_public_key()),
        "the to_local sweep at the floor is signed by the delayed key"
    );

    // The delayed output of the node's HTLC-timeout transaction: the same script and message.
    let (reply, sighash, _, _) =
        block_in_place(|| sign_delayed(&mut cln, &delayed(0xc2, 45_000), FEERATE_FLOOR));
    assert!(signed_by(
        reply.unwrap(),
        &sighash,
        &delayed_key.to_public_key()
    ));

    // An HTLC the node offered, on the peer's commitment, timed out: swept with nLockTime the
    // expiry and nSequence 1 (anchors).
    let remote_point = key(test_key(peer_seed, 9));
    let keys = TxCreationKeys::derive_new(
        &secp,
        &remote_point,
        &DelayedPaymentBasepoint(key(test_key(peer_seed, 4))),
        &HtlcBasepoint(key(test_key(peer_seed, 3))),
        &RevocationBasepoint(key(ours.revocation.0)),
        &HtlcBasepoint(key(ours.htlc.0)),
    );
    let htlc = HTLCOutputInCommitment {
        offered: false,
        amount_msat: 70_000_000,
        cltv_expiry: 150,
        payment_hash: PaymentHash([5; 32]),
        transaction_output_index: Some(2),
    };
    let wscript = get_htlc_redeemscript(
        &htlc,
        &ChannelTypeFeatures::anchors_zero_htlc_fee_and_dependencies(),
        &keys,
    );
    let expired = Spendable {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([0xc3; 32]),
            vout: 2,
        },
        sat: 70_000,
        wscript: wscript.clone(),
        sequence: 1,
        locktime: htlc.cltv_expiry,
    };
    let (psbt, _) = onchain::sweep(&xpub, 3, &expired, FEERATE_FLOOR);
    let sighash = sweep_sighash(&psbt, &wscript);
    let reply = block_in_place(|| {
        cln.proxy.hsmd.call(onchain::remote_htlc_to_us(
            psbt,
            &wscript,
            remote_point.serialize(),
            peer,
            dbid,
        ))
    });
    let htlc_key = HtlcKey::from_basepoint(&secp, &HtlcBasepoint(key(ours.htlc.0)), &remote_point);
    assert!(
        signed_by(reply.unwrap(), &sighash, &htlc_key.to_public_key()),
        "the expired HTLC's sweep at the floor is signed by the node's HTLC key"
    );
    assert!(block_in_place(|| cln.still_serves()));

    // Far above VLS's maximum (333,333 sat/kw on regtest): refused, with its tag announced.
    let mut events = cln.watch().await;
    let (reply, _, _, fee) = block_in_place(|| sign_delayed(&mut cln, &to_local_out, 600_000));
    assert!(
        fee > 300_000,
        "most of the output would go to miners: {fee}"
    );
    assert!(
        !matches!(reply, Ok(Message::SignTxReply(_))),
        "a sweep far above the maximum is not signed: {reply:?}"
    );
    let e = next_event(&mut events, EventKind::PaymentRefused).await;
    assert_eq!(e.tags, vec!["policy-sweep-fee-range"], "{e:?}");
    assert!(e.message.contains("feerate above maximum"), "{e:?}");
}

/// Issue 26, item 4: a node whose hsmd init asks for what this signer cannot serve (here a wire
/// protocol newer than VLS's) gets an answer naming what is missing, the operator an event and a
/// log line with it, and wardend keeps running, instead of VLS's assertion panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsmd_init_this_signer_cannot_serve_is_named_in_an_event_and_wardend_keeps_running() {
    let mut cln = Cln::start("e2e-init-incompatible", &rules(&Payee::new(0x22))).await;
    let mut events = cln.watch().await;
    let mut init = warden_testkit::hsmd_init_regtest();
    init.hsm_wire_min_version = 7;
    init.hsm_wire_max_version = 8;
    let reply = block_in_place(|| cln.proxy.hsmd.call(init));
    assert!(
        !matches!(reply, Ok(Message::HsmdInitReplyV4(_))),
        "not served: {reply:?}"
    );
    // (The connection itself is a NodeConnection event too, untagged.)
    let e = loop {
        let e = next_event(&mut events, EventKind::NodeConnection).await;
        if !e.tags.is_empty() {
            break e;
        }
    };
    assert_eq!(e.tags, vec!["warden-node-incompatible"], "{e:?}");
    assert!(
        e.message
            .contains("the node speaks hsmd wire protocol versions 7 to 8")
            && e.message.contains("speaks 2 to 6"),
        "{e:?}"
    );
    // wardend still answers its operators.
    assert!(!cln.status().await.node_id.is_empty());
}

#[test]
fn an_hsmd_init_with_developer_fields_is_named_field_by_field() {
    assert_eq!(
        warden::signer::stream::unservable_init(&Message::HsmdInit(
            warden_testkit::hsmd_init_regtest()
        )),
        None,
        "lightningd's regtest init is served"
    );
    let mut init = warden_testkit::hsmd_init_regtest();
    init.dev_privkey = Some(vls_protocol::model::DevPrivKey([1; 32]));
    init.dev_channel_secrets_shaseed = Some(vls_protocol::model::Sha256([2; 32]));
    let why = warden::signer::stream::unservable_init(&Message::HsmdInit(init)).unwrap();
    assert!(
        why.contains("(dev_force_privkey, dev_force_channel_secrets_shaseed)")
            && why.contains("without its --dev-force-* options"),
        "{why}"
    );
}
