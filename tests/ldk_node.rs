//! LDK nodes signed by a real wardend through the node-side library (`warden_ldk`): VLS's own
//! `KeysManagerClient` (LDK's NodeSigner/SignerProvider/EntropySource) over the hsmd gRPC link.
//!
//! The two-node test runs real LDK `ChannelManager`s talking through their `PeerManager`s over
//! an in-memory pipe, on a chain the test mines: node A is signed by wardend (SoftHSM-sealed
//! seed, VLS validation on), node B by LDK's own `KeysManager`.

mod common;

use common::daemon::{next_event, Daemon, QUORUM_RULES};
use common::ldk_net::{spend, WardenSide};
use lightning::ln::channelmanager::{PaymentId, Retry};
use lightning::routing::router::RouteParametersConfig;
use lightning::sign::{ChannelSigner, NodeSigner, Recipient, SignerProvider};
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::{self, ecdsa, Secp256k1};
use lightning_signer::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use lightning_signer::bitcoin::{ScriptBuf, Transaction, TxOut};
use lightning_signer::lightning;
use lightning_signer::lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder};
use std::sync::Arc;
use warden::api::proto::EventKind;
use warden_ldk::{LdkError, WalletInput};

const SAT: u64 = 1_000;

#[test]
fn keys_manager_client_is_answered_by_wardend() {
    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-keys", QUORUM_RULES, side.port);
    d.start_wardend();
    let keys = Arc::new(side.keys());

    // The node id LDK sees is the one derived from the HSM-sealed seed.
    let got = keys.get_node_id(Recipient::Node).unwrap();
    assert_eq!(got.to_string(), d.node_id_from_init);

    // LDK's NodeSigner signs an invoice for this node; the signature recovers to the node id.
    let raw = InvoiceBuilder::new(Currency::Regtest)
        .description("ldk incoming".into())
        .payment_hash(sha256::Hash::hash(b"ldk preimage"))
        .payment_secret(lightning::types::payment::PaymentSecret([5u8; 32]))
        .current_timestamp()
        .min_final_cltv_expiry_delta(144)
        .amount_milli_satoshis(25_000_000)
        .build_raw()
        .unwrap();
    let signable = raw.signable_hash();
    let sig = keys.sign_invoice(&raw, Recipient::Node).unwrap();
    let recovered = Secp256k1::verification_only()
        .recover_ecdsa(&secp256k1::Message::from_digest(signable), &sig)
        .unwrap();
    assert_eq!(recovered, got);

    // A channel signer: NewChannel and GetChannelBasepoints go to wardend; each channel has its
    // own keys.
    let id_a = keys.generate_channel_keys_id(false, 1);
    let id_b = keys.generate_channel_keys_id(false, 2);
    assert_ne!(id_a, id_b);
    let pubkeys_a = keys.derive_channel_signer(id_a).pubkeys(&Secp256k1::new());
    let pubkeys_b = keys.derive_channel_signer(id_b).pubkeys(&Secp256k1::new());
    assert_ne!(pubkeys_a.funding_pubkey, pubkeys_b.funding_pubkey);

    // wardend restarts: the link replays the init and LDK keeps being served, with the same keys.
    d.kill_wardend();
    d.start_wardend();
    let again = keys.derive_channel_signer(id_a).pubkeys(&Secp256k1::new());
    assert_eq!(
        again.funding_pubkey, pubkeys_a.funding_pubkey,
        "the same channel keys after a restart"
    );
}

/// Check a P2WPKH input's signature against the output it spends.
fn assert_p2wpkh_signed(tx: &Transaction, input: usize, spent: &TxOut) {
    let w = &tx.input[input].witness;
    assert_eq!(w.len(), 2, "a P2WPKH witness is signature and key");
    let pubkey = secp256k1::PublicKey::from_slice(&w[1]).unwrap();
    let key = lightning_signer::bitcoin::CompressedPublicKey(pubkey);
    assert_eq!(
        ScriptBuf::new_p2wpkh(&key.wpubkey_hash()),
        spent.script_pubkey,
        "signed with the wallet key the output pays to"
    );
    let sig = &w[0];
    assert_eq!(*sig.last().unwrap(), EcdsaSighashType::All as u8);
    let sighash = SighashCache::new(tx)
        .p2wpkh_signature_hash(
            input,
            &spent.script_pubkey,
            spent.value,
            EcdsaSighashType::All,
        )
        .unwrap();
    Secp256k1::verification_only()
        .verify_ecdsa(
            &secp256k1::Message::from_digest(sighash.to_byte_array()),
            &ecdsa::Signature::from_der(&sig[..sig.len() - 1]).unwrap(),
            &pubkey,
        )
        .expect("the funding input's signature is valid");
}

#[test]
fn two_ldk_nodes_open_a_channel_and_pay_with_wardend_signing_one_of_them() {
    const CHANNEL_SAT: u64 = 5_000_000;
    const FEE_SAT: u64 = 2_000;
    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-two-nodes", QUORUM_RULES, side.port);
    d.start_wardend();

    let mut net = side.net();
    assert_eq!(
        net.a.id.to_string(),
        d.node_id_from_init,
        "node A's identity is the HSM-sealed seed's"
    );

    // A's wallet receives coins on the address wardend's wallet key gives LDK; A opens a
    // channel to B, funded from them.
    let wallet_script = net.a.keys.get_destination_script([0; 32]).unwrap();
    let faucet = net.fund_wallet(wallet_script, CHANNEL_SAT + FEE_SAT);
    let (temporary_channel_id, funding_script) = net.request_channel(CHANNEL_SAT);
    let wallet_input = WalletInput {
        prev_tx: faucet.clone(),
        vout: 0,
        keyindex: 1,
    };
    let unsigned = spend(&faucet, 0, funding_script, CHANNEL_SAT);

    // Before the commitment exchange VLS knows no channel with this funding output, so the
    // transaction is an on-chain payment of 5,000,000 sat to an unknown script: Warden's policy
    // refuses it, naming both rules it breaks, and nothing is signed. Funds never go into a
    // channel A could not close.
    let mut events = side.rt.block_on(d.watch());
    let early = side
        .link
        .sign_wallet_spend(&unsigned, std::slice::from_ref(&wallet_input));
    match &early {
        Err(LdkError::Signer(text)) => assert!(text.contains("unapproved destination"), "{text}"),
        other => panic!("funding signed before the commitment exchange: {other:?}"),
    }
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::PaymentRefused));
    assert_eq!(e.tags, vec!["per-payment-cap", "daily-cap"]);

    // After it, wardend signs the funding transaction; it is mined and confirmed six times.
    net.commit_funding(temporary_channel_id, &unsigned);
    let funding = side
        .link
        .sign_wallet_spend(&unsigned, std::slice::from_ref(&wallet_input))
        .expect("wardend signs the funding transaction");
    assert_eq!(funding.compute_txid(), unsigned.compute_txid());
    assert_p2wpkh_signed(&funding, 0, &faucet.output[0]);
    net.confirm_funding(funding);
    let capacity_before = net.a.manager.list_usable_channels()[0].outbound_capacity_msat;
    let preapprove = |i: &Bolt11Invoice| side.link.preapprove_invoice(i);

    // (1) Below the quorum threshold: approved by wardend, paid, preimage returned.
    let small = net.invoice(200_000 * SAT, "small");
    net.pay(&small, preapprove)
        .expect("a small payment succeeds");

    // (2) Above the threshold: refused, no HTLC leaves A, and a request waits for admins.
    let large = net.invoice(1_500_000 * SAT, "large");
    let capacity = net.a.manager.list_usable_channels()[0].outbound_capacity_msat;
    // The application reads why, and which request the admins must approve (issue 26, item 3).
    let held_id = match net.pay(&large, preapprove) {
        Err(LdkError::Held {
            amount_msat,
            payment_hash,
            reason,
            request_id,
        }) => {
            assert_eq!(amount_msat, 1_500_000 * SAT);
            assert_eq!(payment_hash, large.payment_hash().to_string());
            assert!(
                reason.starts_with("rule large-payment-quorum: the payment of 1,500,000 sat needs 2 of [alice, bob, carol]"),
                "{reason}"
            );
            request_id
        }
        other => panic!("a large payment before approval: {other:?}"),
    };
    net.pump();
    let channel = &net.a.manager.list_usable_channels()[0];
    assert!(
        channel.pending_outbound_htlcs.is_empty(),
        "no HTLC was sent"
    );
    assert_eq!(channel.outbound_capacity_msat, capacity);
    let pending = d.pending();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["rule_tag"], "large-payment-quorum");
    assert_eq!(pending[0]["amount_msat"], 1_500_000 * SAT);
    let id = pending[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, held_id, "the request the error named");
    for admin in ["alice", "bob"] {
        d.approve(admin, &id);
    }
    net.pay(&large, preapprove)
        .expect("the retry after two approvals succeeds");

    // (3) Over the daily limit (1,700,000 sat spent, 2,000,000 allowed): refused by its rule.
    let mut events = side.rt.block_on(d.watch());
    let over = net.invoice(400_000 * SAT, "over the day");
    let refused = net
        .pay(&over, preapprove)
        .expect_err("over the daily limit");
    match &refused {
        LdkError::Refused { reason, tags, .. } => {
            assert_eq!(tags, &vec!["daily-cap".to_string()]);
            assert_eq!(
                reason,
                "rule daily-cap: 2,100,000 sat would be spent in the last 24h; the limit is 2,000,000 sat"
            );
        }
        other => panic!("{other:?}"),
    }
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::PaymentRefused));
    assert_eq!(e.tags, vec!["daily-cap"]);
    assert_eq!(
        e.message,
        "rule daily-cap: 2,100,000 sat would be spent in the last 24h; the limit is 2,000,000 sat"
    );

    // Every commitment A signed went through wardend (and so through VLS's validation).
    let metrics = side.rt.block_on(d.scrape_metrics());
    for message in [
        "SignRemoteCommitmentTx2",
        "ValidateCommitmentTx2",
        "ValidateRevocation",
        "SignWithdrawal",
    ] {
        let key = format!("warden_hsmd_request_seconds_count{{name=\"{message}\"}}");
        assert!(
            metrics.get(&key).copied().unwrap_or(0.0) >= 1.0,
            "wardend answered {message} {key} in {metrics:#?}"
        );
    }

    // (4) wardend restarts between payments: the channel resumes and the next payment succeeds.
    d.stop_wardend();
    d.start_wardend();
    let after_restart = net.invoice(100_000 * SAT, "after restart");
    net.pay(&after_restart, preapprove)
        .expect("a payment after wardend restarted");

    // (5) A keysend reaches Warden's approver as a keysend approval under the same rules:
    // 150,000 sat fits the day, a second one of 100,000 sat does not.
    let keysend = |payee, hash, amount| side.link.preapprove_keysend(payee, hash, amount);
    net.keysend(150_000 * SAT, keysend)
        .expect("a keysend within the limits succeeds");
    let mut events = side.rt.block_on(d.watch());
    let refused = net
        .keysend(100_000 * SAT, keysend)
        .expect_err("a keysend over the daily limit");
    assert!(
        matches!(refused, LdkError::Refused { amount_msat, .. } if amount_msat == 100_000 * SAT)
    );
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::PaymentRefused));
    assert_eq!(e.tags, vec!["daily-cap"]);

    let channel = &net.a.manager.list_usable_channels()[0];
    assert_eq!(
        capacity_before - channel.outbound_capacity_msat,
        1_950_000 * SAT,
        "A paid 200,000 + 1,500,000 + 100,000 + 150,000 sat"
    );
    assert!(channel.pending_outbound_htlcs.is_empty());
    assert_eq!(
        side.rt.block_on(d.window("daily-cap")).used_msat,
        1_950_000 * SAT
    );
}

#[test]
fn a_payment_sent_without_asking_warden_is_never_signed() {
    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-unasked", QUORUM_RULES, side.port);
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, 5_000_000);

    // A buggy or compromised node skips preapprove_invoice and hands LDK the invoice directly.
    // VLS inside wardend refuses to sign a commitment carrying an HTLC nobody approved, so B
    // never gets a commitment it can claim against and A never learns a preimage.
    let invoice = net.invoice(50_000 * SAT, "never asked");
    let mut events = side.rt.block_on(d.watch());
    net.a
        .manager
        .pay_for_bolt11_invoice(
            &invoice,
            PaymentId(invoice.payment_hash().to_byte_array()),
            None,
            RouteParametersConfig::default(),
            Retry::Attempts(0),
        )
        .expect("LDK itself accepts the payment");
    net.pump();
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::PaymentRefused));
    assert_eq!(
        e.tags,
        vec!["policy-commitment-htlc-routing-balance"],
        "{e:?}"
    );
    let hash = invoice.payment_hash().to_string();
    assert!(
        e.message.contains("unbalanced payments") && e.message.contains(&hash),
        "{}",
        e.message
    );
    assert!(
        net.b
            .events
            .lock()
            .unwrap()
            .iter()
            .all(|e| !matches!(e, lightning::events::Event::PaymentClaimable { .. })),
        "B was never offered the payment"
    );
    assert!(
        net.a
            .events
            .lock()
            .unwrap()
            .iter()
            .all(|e| !matches!(e, lightning::events::Event::PaymentSent { .. })),
        "A holds no preimage"
    );
    assert_eq!(
        side.rt.block_on(d.window("daily-cap")).used_msat,
        0,
        "nothing was counted as spent"
    );
}

#[test]
fn the_chain_feed_follows_blocks_a_reorganisation_and_a_restart() {
    use lightning_signer::bitcoin::{absolute::LockTime, transaction::Version, Network};
    use warden_ldk::ChainFeed;

    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-reorg", QUORUM_RULES, side.port);
    d.start_wardend();
    let _keys = side.keys(); // the node is initialised in wardend
    let link = &side.link;
    let mut chain = common::ldk_net::Chain::default();
    let mut feed = ChainFeed::new(Network::Regtest);
    for _ in 0..3 {
        let height = chain.mine(vec![]);
        feed.block_connected(link, chain.blocks.last().unwrap(), height)
            .unwrap();
    }
    assert_eq!(
        feed.wardend_tip(link).unwrap(),
        (3, chain.blocks[3].block_hash())
    );

    // The chain reorganises from height 1: two blocks are taken back from wardend's tracker,
    // and a longer branch (different blocks: they carry a transaction) replaces them.
    feed.blocks_disconnected(link, 1).unwrap();
    assert_eq!(
        feed.wardend_tip(link).unwrap(),
        (1, chain.blocks[1].block_hash())
    );
    let old_tip = chain.blocks[3].block_hash();
    chain.blocks.truncate(2);
    for n in 0..3u8 {
        let marker = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![lightning_signer::bitcoin::TxIn {
                previous_output: lightning_signer::bitcoin::OutPoint {
                    // Distinct outpoints: the branch's blocks differ from the old ones.
                    txid: old_tip.to_raw_hash().into(),
                    vout: n as u32,
                },
                ..Default::default()
            }],
            output: vec![TxOut {
                value: lightning_signer::bitcoin::Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::new_op_return([n]),
            }],
        };
        let height = chain.mine(vec![marker]);
        feed.block_connected(link, chain.blocks.last().unwrap(), height)
            .unwrap();
    }
    assert_ne!(chain.blocks[3].block_hash(), old_tip);
    assert_eq!(
        feed.wardend_tip(link).unwrap(),
        (4, chain.blocks[4].block_hash())
    );

    // A block that does not extend the tip is refused by the feed; wardend is not touched.
    let stale = chain.blocks[2].clone();
    let err = feed.block_connected(link, &stale, 5).unwrap_err();
    assert!(
        err.to_string()
            .contains("call blocks_disconnected with the fork point first"),
        "{err}"
    );
    assert_eq!(feed.wardend_tip(link).unwrap().0, 4);

    // wardend restarts from its persisted tracker and keeps following.
    d.kill_wardend();
    d.start_wardend();
    assert_eq!(
        feed.wardend_tip(link).unwrap(),
        (4, chain.blocks[4].block_hash())
    );
    let height = chain.mine(vec![]);
    feed.block_connected(link, chain.blocks.last().unwrap(), height)
        .unwrap();
    assert_eq!(
        feed.wardend_tip(link).unwrap(),
        (5, chain.blocks[5].block_hash())
    );
}

#[test]
fn channel_opens_stop_at_the_capacity_limit_and_wardenctl_channels_matches_ldks_balances() {
    use warden::core::CheckOutcome;
    let side = WardenSide::start();
    let rules = format!(
        "{QUORUM_RULES}\n[channels]\nmax_total_capacity = \"9_000_000 sat\"\nmax_htlcs_in_flight = 1\nmin_outbound = \"95 %\"\n"
    );
    let mut d = Daemon::prepare("ldk-channels", &rules, side.port);
    d.start_wardend();
    let mut net = side.net();
    let b = net.b.id;

    // The LDK application asks before it opens: the first channel fits.
    let ok = side
        .link
        .check_channel_open(b, 5_000_000, false, false)
        .unwrap();
    assert_eq!(ok.outcome, CheckOutcome::Approved, "{ok:?}");

    // Frozen, the signer opens nothing: the check refuses, and so does the funding signature
    // of a channel LDK set up anyway. Once the quorum lifts the freeze, the same funding signs.
    let out = d.wardenctl("carol", &["freeze", "--reason", "incident 7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frozen = side
        .link
        .check_channel_open(b, 5_000_000, false, false)
        .unwrap();
    assert_eq!(frozen.outcome, CheckOutcome::Refused);
    assert_eq!(frozen.tags, vec!["warden-frozen"]);
    let mut events = side.rt.block_on(d.watch());
    let wallet = net.a.keys.get_destination_script([0; 32]).unwrap();
    let faucet = net.fund_wallet(wallet, 5_002_000);
    let (temporary, script) = net.request_channel(5_000_000);
    let unsigned = spend(&faucet, 0, script, 5_000_000);
    net.commit_funding(temporary, &unsigned);
    let coin = WalletInput {
        prev_tx: faucet,
        vout: 0,
        keyindex: 1,
    };
    side.link
        .sign_wallet_spend(&unsigned, std::slice::from_ref(&coin))
        .expect_err("a frozen signer funds no channel");
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::Channel));
    assert_eq!(e.tags, vec!["warden-frozen"]);
    let out = d.wardenctl("alice", &["unfreeze"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let id = text
        .split_whitespace()
        .find(|w| w.starts_with("uf-"))
        .unwrap_or_else(|| panic!("{text}"))
        .trim_end_matches(';')
        .to_string();
    for admin in ["alice", "bob"] {
        d.approve(admin, &id);
    }
    let funding = side
        .link
        .sign_wallet_spend(&unsigned, &[coin])
        .expect("the same funding signs once the freeze is lifted");
    net.confirm_funding(funding);

    // The next one of 5,000,000 sat would bring the capacity to 10,000,000: refused with its
    // tag; 4,000,000 would fit.
    let no = side
        .link
        .check_channel_open(b, 5_000_000, false, false)
        .unwrap();
    assert_eq!(no.outcome, CheckOutcome::Refused);
    assert_eq!(no.tags, vec!["warden-channel-total"]);
    assert!(
        no.reason.contains(
            "would bring the capacity in channels to 10,000,000 sat; the limit is 9,000,000 sat"
        ),
        "{}",
        no.reason
    );
    let fits = side
        .link
        .check_channel_open(b, 4_000_000, false, false)
        .unwrap();
    assert_eq!(fits.outcome, CheckOutcome::Approved);

    // Opened anyway, without asking: the funding is refused when wardend is asked to sign it,
    // recorded first, and the refused channel does not use up the capacity.
    let mut events = side.rt.block_on(d.watch());
    let wallet = net.a.keys.get_destination_script([0; 32]).unwrap();
    let faucet = net.fund_wallet(wallet, 5_002_000);
    let (temporary, script) = net.request_channel(5_000_000);
    let unsigned = spend(&faucet, 0, script, 5_000_000);
    net.commit_funding(temporary, &unsigned);
    let input = WalletInput {
        prev_tx: faucet,
        vout: 0,
        keyindex: 1,
    };
    let refused = side
        .link
        .sign_wallet_spend(&unsigned, &[input])
        .expect_err("the funding over the capacity limit is not signed");
    assert!(matches!(refused, LdkError::Signer(_)), "{refused:?}");
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::Channel));
    assert_eq!(e.tags, vec!["warden-channel-total"]);
    assert!(
        e.message.contains("reached the signer unchecked"),
        "{}",
        e.message
    );
    let fits = side
        .link
        .check_channel_open(b, 4_000_000, false, false)
        .unwrap();
    assert_eq!(fits.outcome, CheckOutcome::Approved, "{fits:?}");

    // A wallet spend is asked about the same way: over the per-payment cap refused, above the
    // quorum threshold held until two admins approve; nothing is counted by asking.
    let to = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".to_string();
    let over = side.link.check_spend(&[(to.clone(), 3_000_000)]).unwrap();
    assert_eq!(over.outcome, CheckOutcome::Refused);
    assert_eq!(over.tags, vec!["per-payment-cap", "daily-cap"]);
    let held = side.link.check_spend(&[(to.clone(), 1_500_000)]).unwrap();
    assert_eq!(held.outcome, CheckOutcome::Held, "{held:?}");
    let id = held.request_id.clone().unwrap();
    for admin in ["alice", "bob"] {
        d.approve(admin, &id);
    }
    let approved = side.link.check_spend(&[(to.clone(), 1_500_000)]).unwrap();
    assert_eq!(approved.outcome, CheckOutcome::Approved);
    assert_eq!(approved.request_id.as_deref(), Some(id.as_str()));
    assert_eq!(side.rt.block_on(d.window("daily-cap")).used_msat, 0);
    let bad = side.link.check_spend(&[("tb1qnot".into(), 1)]).unwrap_err();
    assert!(
        bad.to_string().contains("is not a regtest address"),
        "{bad}"
    );

    // Payments move the balance; wardenctl channels shows what LDK itself holds.
    let preapprove = |i: &Bolt11Invoice| side.link.preapprove_invoice(i);
    let inv = net.invoice(300_000 * SAT, "liquidity 1");
    net.pay(&inv, preapprove)
        .expect("a payment within the limits");

    // One payment in flight (B holds the HTLC) is all max_htlcs_in_flight allows: the next is
    // not approved, with its tag, until the first settles.
    let held = net.invoice(150_000 * SAT, "liquidity 2");
    net.send_and_hold(&held, preapprove).unwrap();
    let channels = |d: &Daemon| -> serde_json::Value {
        let out = d.wardenctl("alice", &["channels", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let rows = channels(&d);
    let in_flight = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "open")
        .unwrap();
    assert_eq!(in_flight["offered_htlcs"], 1, "{rows:#}");
    assert_eq!(in_flight["offered_msat"], 150_000 * SAT);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "refused"),
        "the channel whose funding was refused is shown as such: {rows:#}"
    );
    let mut events = side.rt.block_on(d.watch());
    let third = net.invoice(10_000 * SAT, "liquidity 3");
    let refused = side
        .link
        .preapprove_invoice(&third)
        .expect_err("one HTLC is in flight already");
    assert!(matches!(refused, LdkError::Refused { .. }), "{refused:?}");
    let e = side
        .rt
        .block_on(next_event(&mut events, EventKind::PaymentRefused));
    assert_eq!(e.tags, vec!["warden-htlc-count"]);
    assert_eq!(
        e.message,
        "rule warden-htlc-count: 1 outgoing HTLCs are in flight; at most 1 may be at once (channels.max_htlcs_in_flight)"
    );
    net.complete(
        lightning::types::payment::PaymentHash(held.payment_hash().to_byte_array()),
        150_000 * SAT,
    );
    side.link
        .preapprove_invoice(&third)
        .expect("approved once the first payment settled");

    let out = d.wardenctl("alice", &["channels", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let open: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "open")
        .collect();
    assert_eq!(open.len(), 1, "{rows:#}");
    let ldk = &net.a.manager.list_usable_channels()[0];
    let funding = ldk.funding_txo.unwrap();
    let row = open[0];
    assert_eq!(
        row["funding"],
        format!("{}:{}", funding.txid, funding.index).as_str()
    );
    // VLS's LDK client does not tell the signer a channel's peer (CLN's channel ids carry it).
    assert_eq!(row["peer"], "");
    assert_eq!(row["capacity_msat"], ldk.channel_value_satoshis * SAT);
    // Ours before the commitment fee (which A, the funder, pays when the channel closes): LDK's
    // claimable amount plus that fee.
    let monitor = net.a.chain_monitor.get_monitor(ldk.channel_id).unwrap();
    let ldk_local: u64 = monitor
        .get_claimable_balances()
        .iter()
        .map(|b| match b {
            lightning::chain::channelmonitor::Balance::ClaimableOnChannelClose {
                balance_candidates,
                ..
            } => {
                let last = balance_candidates.last().unwrap();
                last.amount_satoshis + last.transaction_fee_satoshis
            }
            other => panic!("an open channel's balance is {other:?}"),
        })
        .sum();
    assert_eq!(
        ldk_local,
        5_000_000 - 450_000,
        "A paid 300,000 and 150,000 sat"
    );
    assert_eq!(row["local_msat"], ldk_local * SAT, "{row:#}");
    assert_eq!(row["offered_htlcs"], 0);
    assert_eq!(row["received_htlcs"], 0);
    let table = d.wardenctl("alice", &["channels"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("open") && text.contains("5,000,000"),
        "{text}"
    );
    // A wardend outside a fleet says so, and what makes one.
    let out = d.wardenctl("alice", &["fleet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("this wardend is not a fleet member; a fleet needs store.backend = \"postgres\" and [fleet] name and member"),
        "{err}"
    );

    // Below 95 % outbound after 450,000 of 5,000,000 sat: the liquidity alert (from wardend's
    // periodic look, every 5 s), once.
    let mut events = side.rt.block_on(d.watch());
    let low = side
        .rt
        .block_on(next_event(&mut events, EventKind::Channel));
    assert_eq!(low.tags, vec!["warden-liquidity-low"]);
    assert!(
        low.message
            .contains("has 4,550,000 sat outbound of 5,000,000 sat capacity, below 95 %"),
        "{}",
        low.message
    );

    // The same view in Prometheus.
    let metrics = side.rt.block_on(d.scrape_metrics());
    assert_eq!(
        metrics.get(r#"warden_channels{state="open"}"#).copied(),
        Some(1.0),
        "{metrics:#?}"
    );
    assert_eq!(
        metrics.get("warden_channels_local_msat").copied(),
        Some((ldk_local * SAT) as f64)
    );
    // The Grafana dashboard shipped in grafana/ queries only metrics wardend exports.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../grafana/warden-dashboard.json")).unwrap();
    let exported: std::collections::BTreeSet<&str> = metrics
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("warden_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(name.as_str()),
                    "the dashboard queries {name}, which wardend does not export: {exported:?}"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 13, "{queried}");

    // A cooperative close: VLS signs the closing transaction and wardend alerts that the
    // channel is closing, with what of it was ours.
    net.a
        .manager
        .close_channel(&ldk.channel_id, &b)
        .expect("LDK starts the close");
    net.pump();
    let closing = side
        .rt
        .block_on(next_event(&mut events, EventKind::Channel));
    assert_eq!(closing.tags, vec!["warden-channel-closing"]);
    assert!(
        closing.message.contains("is closing"),
        "{}",
        closing.message
    );

    // The month's report has the channel section: the open and the close, from the audit log.
    d.stop_wardend();
    let month = &warden::clock::format_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )[..7];
    let out = d
        .token
        .command("wardenctl")
        .args(["report", "--month", month, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["channels_opened"]["count"], 1, "{r:#}");
    assert_eq!(r["channels_opened"]["amount_msat"], 5_000_000 * SAT);
    assert_eq!(r["channels_closed"]["count"], 1);
    assert_eq!(r["channels_closed"]["amount_msat"], 5_000_000 * SAT);
    // The second channel's funding was refused: it never held capacity.
    let capacity = r["capacity_by_day"].as_object().unwrap();
    assert!(
        capacity
            .values()
            .all(|v| v.as_u64().unwrap() <= 5_000_000 * SAT),
        "{r:#}"
    );
}
