//! LDK channels closed without the peer's help, signed through Warden: the signatures VLS's
//! client leaves unimplemented (justice, HTLC claims on the counterparty's commitment) are
//! answered by wardend (`warden_ldk::signer`), validated by VLS inside it. Two real LDK nodes on
//! the test's own chain: A signed by wardend, B by LDK's KeysManager. In each, wardend is killed
//! in the middle of the resolution and restarted while A's requests wait; the claims still
//! confirm, and A sweeps what the channel left it into its wallet (`spend_spendable_outputs`,
//! signed by wardend), checked by summing the outputs.

mod common;

use common::daemon::{Daemon, QUORUM_RULES};
use common::ldk_net::{Fees, Log, Net, WardenSide};
use lightning::sign::{KeysManager, OutputSpender, SpendableOutputDescriptor};
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::secp256k1::{ecdsa, Message, Secp256k1};
use lightning_signer::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use lightning_signer::bitcoin::{ScriptBuf, Transaction};
use lightning_signer::lightning;
use lightning_signer::lightning_invoice::Bolt11Invoice;
use std::time::Duration;
use warden_ldk::signer::WardenKeys;

const SAT: u64 = 1_000;

/// Kill wardend (a crash) and start it again after a pause, while the test goes on asking: A's
/// requests wait in the link and are answered by the new process. Join the handle to get the
/// daemon back.
fn crash_and_restart(mut d: Daemon) -> std::thread::JoinHandle<Daemon> {
    d.kill_wardend();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        d.start_wardend();
        d
    })
}

/// [`Net::sweep_a`], checking that wardend signed every input and paid only A's wallet.
fn sweep_to_wallet(net: &mut Net<WardenKeys, KeysManager>, spent: &[&Transaction]) -> Transaction {
    let (sweep, outputs) = net.sweep_a();
    let wallet =
        lightning::sign::SignerProvider::get_destination_script(&*net.a.keys, [0; 32]).unwrap();
    assert_eq!(sweep.input.len(), outputs.len(), "one input per output");
    assert_eq!(
        assert_inputs_signed(&sweep, spent),
        outputs.len(),
        "every swept input is signed: {outputs:?}"
    );
    assert!(sweep.output.iter().all(|o| o.script_pubkey == wallet));
    sweep
}

fn sat_out(txs: &[&Transaction]) -> u64 {
    txs.iter()
        .flat_map(|t| t.output.iter())
        .map(|o| o.value.to_sat())
        .sum()
}

/// Every input of `tx` that spends an output of one of `spent` carries a witness with a valid
/// signature (sighash ALL) over its amount by the key its output names: the key of a P2WPKH
/// output, a key of a P2WSH output's script; returns how many inputs.
fn assert_inputs_signed(tx: &Transaction, spent: &[&Transaction]) -> usize {
    let secp = Secp256k1::verification_only();
    let mut checked = 0;
    for (i, input) in tx.input.iter().enumerate() {
        let Some(from) = spent
            .iter()
            .find(|s| s.compute_txid() == input.previous_output.txid)
        else {
            continue;
        };
        let prev = &from.output[input.previous_output.vout as usize];
        let witness: Vec<&[u8]> = input.witness.iter().collect();
        assert!(witness.len() >= 2, "input {i} has witness {witness:?}");
        if prev.script_pubkey.is_p2wpkh() {
            let key = lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(witness[1])
                .expect("a P2WPKH witness ends with its key");
            let compressed = lightning_signer::bitcoin::CompressedPublicKey(key);
            assert_eq!(
                prev.script_pubkey,
                ScriptBuf::new_p2wpkh(&compressed.wpubkey_hash()),
                "input {i} spends its key's output"
            );
            let sighash = SighashCache::new(tx)
                .p2wpkh_signature_hash(i, &prev.script_pubkey, prev.value, EcdsaSighashType::All)
                .unwrap();
            let (flag, der) = witness[0].split_last().unwrap();
            assert_eq!(*flag, EcdsaSighashType::All as u8);
            let sig = ecdsa::Signature::from_der(der).unwrap();
            secp.verify_ecdsa(&Message::from_digest(sighash.to_byte_array()), &sig, &key)
                .unwrap_or_else(|e| panic!("input {i}'s signature: {e}"));
            checked += 1;
            continue;
        }
        let script = ScriptBuf::from_bytes(witness.last().unwrap().to_vec());
        assert_eq!(
            prev.script_pubkey,
            script.to_p2wsh(),
            "input {i} spends its script"
        );
        let sighash = SighashCache::new(tx)
            .p2wsh_signature_hash(i, &script, prev.value, EcdsaSighashType::All)
            .unwrap();
        let msg = Message::from_digest(sighash.to_byte_array());
        let keys: Vec<_> = script
            .instructions()
            .filter_map(|ins| ins.ok()?.push_bytes().map(|b| b.as_bytes().to_vec()))
            .filter_map(|b| lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(&b).ok())
            .collect();
        // Some element of the witness is a signature (sighash ALL) over this input by a key of
        // its script: the revocation key of a justice spend, this node's HTLC key of a claim.
        let verified = witness[..witness.len() - 1].iter().any(|w| {
            let Some((flag, der)) = w.split_last() else {
                return false;
            };
            *flag == EcdsaSighashType::All as u8
                && ecdsa::Signature::from_der(der).is_ok_and(|sig| {
                    keys.iter()
                        .any(|k| secp.verify_ecdsa(&msg, &sig, k).is_ok())
                })
        });
        assert!(
            verified,
            "input {i}'s signature verifies against a key of its script"
        );
        checked += 1;
    }
    checked
}

#[test]
fn the_cheater_pays_a_revoked_commitment_is_swept_by_justice_signed_through_a_frozen_wardend() {
    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-justice", QUORUM_RULES, side.port);
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, 1_000_000);
    let preapprove = |i: &Bolt11Invoice| side.link.preapprove_invoice(i);

    // A pays B; B keeps a copy of its commitment at that state (B's balance on it).
    let first = net.invoice(300_000 * SAT, "first");
    net.pay(&first, preapprove).unwrap();
    let channel = net.b.manager.list_channels()[0].clone();
    let old = (*net.b.chain_monitor.get_monitor(channel.channel_id).unwrap()).clone();
    // A pays again: that commitment is revoked.
    let second = net.invoice(100_000 * SAT, "second");
    net.pay(&second, preapprove).unwrap();

    // Even frozen, the signer signs what protects funds.
    let out = d.wardenctl("carol", &["freeze", "--reason", "incident 9"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // B broadcasts the revoked commitment and it confirms.
    net.b.broadcasts.0.lock().unwrap().clear();
    old.broadcast_latest_holder_commitment_txn(&&*net.b.broadcasts, &&Fees, &&Log("B old"));
    let revoked = net.b.broadcasts.0.lock().unwrap()[0].clone();
    assert_eq!(
        revoked.input[0].previous_output,
        channel.funding_txo.unwrap().into_bitcoin_outpoint(),
        "B broadcast a commitment"
    );
    net.a.broadcasts.0.lock().unwrap().clear();
    // wardend crashes as the revoked commitment confirms; A's requests wait for the new process,
    // which is still frozen.
    let restarted = crash_and_restart(d);
    let asked = std::time::Instant::now();
    net.mine(vec![revoked.clone()]);
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "A's requests waited for the restarted wardend"
    );
    let d = restarted.join().unwrap();

    // A's monitor takes every revoked output back, with signatures wardend made and VLS
    // validated (a justice spend to A's own wallet).
    let justice: Vec<Transaction> = net.a.broadcasts.spending(&revoked);
    assert!(!justice.is_empty(), "A broadcast a justice transaction");
    let signed: usize = justice
        .iter()
        .map(|t| assert_inputs_signed(t, &[&revoked]))
        .sum();
    assert_eq!(signed, 1, "B's to_local output is claimed");
    let metrics = side.rt.block_on(d.scrape_metrics());
    assert!(
        metrics
            .get(r#"warden_hsmd_request_seconds_count{name="SignAnyPenaltyToUs"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "wardend signed the justice input: {metrics:#?}"
    );

    // What B tried to take comes back to A's wallet: B's 300,000 sat of that state, less the
    // justice fee (A's own 700,000 sat pay to A's key on the commitment itself).
    let wallet =
        lightning::sign::SignerProvider::get_destination_script(&*net.a.keys, [0; 32]).unwrap();
    let swept: u64 = justice
        .iter()
        .flat_map(|t| t.output.iter())
        .inspect(|o| assert_eq!(o.script_pubkey, wallet, "justice pays to A's wallet"))
        .map(|o| o.value.to_sat())
        .sum();
    assert!(
        (300_000 - 10_000..300_000).contains(&swept),
        "A swept what B tried to take: {swept} sat"
    );
    net.mine(justice.clone());

    // A sweeps the justice output and its own output of the revoked commitment into its wallet
    // (wardend, still frozen, signs it: every output is the node's): A holds the whole channel.
    let mut spent = vec![&revoked];
    spent.extend(justice.iter());
    let sweep = sweep_to_wallet(&mut net, &spent);
    let held = sat_out(&[&sweep]);
    assert!(
        (1_000_000 - 20_000..1_000_000).contains(&held),
        "A holds the channel's whole value less fees: {held} sat"
    );
    let status = d.wardenctl("carol", &["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("FROZEN"),
        "wardend stayed frozen throughout: {}",
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
fn when_the_peer_force_closes_a_claims_its_incoming_htlc_on_the_peers_commitment() {
    use lightning::events::Event;
    use lightning::ln::channelmanager::{Bolt11InvoiceParameters, PaymentId, Retry};
    use lightning::routing::router::RouteParametersConfig;
    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-htlc-claim", QUORUM_RULES, side.port);
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, 1_000_000);
    let preapprove = |i: &Bolt11Invoice| side.link.preapprove_invoice(i);
    let first = net.invoice(400_000 * SAT, "to B");
    net.pay(&first, preapprove).unwrap();

    // B pays A 50,000 sat; A has the preimage but has not claimed when B force-closes.
    let invoice = net
        .a
        .manager
        .create_bolt11_invoice(Bolt11InvoiceParameters {
            amount_msats: Some(50_000 * SAT),
            ..Default::default()
        })
        .unwrap();
    net.b
        .manager
        .pay_for_bolt11_invoice(
            &invoice,
            PaymentId(invoice.payment_hash().to_byte_array()),
            None,
            RouteParametersConfig::default(),
            Retry::Attempts(0),
        )
        .unwrap();
    net.pump();
    let preimage = net
        .a
        .take_event(|e| match e {
            Event::PaymentClaimable { purpose, .. } => purpose.preimage(),
            _ => None,
        })
        .expect("A is offered the HTLC");
    let channel = net.a.manager.list_channels()[0].clone();
    net.b.broadcasts.0.lock().unwrap().clear();
    net.b
        .manager
        .force_close_broadcasting_latest_txn(&channel.channel_id, &net.a.id, "gone".into())
        .unwrap();
    let commitment = net.b.broadcasts.0.lock().unwrap()[0].clone();
    assert_eq!(
        commitment.output.len(),
        3,
        "to_local, to_remote and the HTLC"
    );
    net.a.broadcasts.0.lock().unwrap().clear();
    net.mine(vec![commitment.clone()]);

    // A claims the HTLC with its preimage, straight from B's commitment: wardend signs it,
    // after a crash and restart in between.
    let restarted = crash_and_restart(d);
    let asked = std::time::Instant::now();
    net.a.manager.claim_funds(preimage);
    net.pump();
    net.mine(vec![]);
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "A's requests waited for the restarted wardend"
    );
    let d = restarted.join().unwrap();
    let claims: Vec<Transaction> = net.a.broadcasts.spending(&commitment);
    assert!(!claims.is_empty(), "A broadcast its HTLC claim");
    let signed: usize = claims
        .iter()
        .map(|t| assert_inputs_signed(t, &[&commitment]))
        .sum();
    assert!(signed >= 1, "the HTLC output is claimed");
    let preimage_in_witness = claims.iter().any(|t| {
        t.input
            .iter()
            .any(|i| i.witness.iter().any(|w| w == preimage.0.as_slice()))
    });
    assert!(preimage_in_witness, "the claim reveals the preimage");
    let metrics = side.rt.block_on(d.scrape_metrics());
    assert!(
        metrics
            .get(r#"warden_hsmd_request_seconds_count{name="SignAnyRemoteHtlcToUs"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "wardend signed the claim: {metrics:#?}"
    );

    // The claim confirms, and A sweeps it and its own output of B's commitment: its 600,000 sat
    // and the 50,000 sat HTLC, less fees.
    let claim = claims.last().unwrap().clone();
    net.mine(vec![claim.clone()]);
    let sweep = sweep_to_wallet(&mut net, &[&commitment, &claim]);
    let held = sat_out(&[&sweep]);
    assert!(
        (650_000 - 20_000..650_000).contains(&held),
        "A holds its balance and the HTLC less fees: {held} sat"
    );
}

#[test]
fn when_the_peer_vanishes_a_force_closes_and_times_its_htlc_out() {
    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-vanish", QUORUM_RULES, side.port);
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, 1_000_000);
    let preapprove = |i: &Bolt11Invoice| side.link.preapprove_invoice(i);
    let first = net.invoice(200_000 * SAT, "first");
    net.pay(&first, preapprove).unwrap();
    // An outgoing HTLC B never settles.
    let held = net.invoice(100_000 * SAT, "never settled");
    net.send_and_hold(&held, preapprove).unwrap();

    // A force-closes: wardend signs A's commitment.
    let commitment = net.force_close_a();
    assert_eq!(
        commitment.output.len(),
        3,
        "to_local, to_remote and the HTLC"
    );
    let metrics = side.rt.block_on(d.scrape_metrics());
    assert!(
        metrics
            .get(r#"warden_hsmd_request_seconds_count{name="SignLocalCommitmentTx2"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "wardend signed A's commitment: {metrics:#?}"
    );

    // After the HTLC's expiry A times it out with an HTLC-timeout transaction wardend signs,
    // wardend having crashed and restarted on the way.
    let restarted = crash_and_restart(d);
    let timeout = net.mine_until_a_spends(&commitment, 200);
    let d = restarted.join().unwrap();
    let timeout = timeout.expect("A broadcast the HTLC's timeout");
    assert!(
        timeout.lock_time.to_consensus_u32() > 0,
        "an HTLC-timeout waits for the HTLC's expiry"
    );
    assert_eq!(assert_inputs_signed(&timeout, &[&commitment]), 1);
    let metrics = side.rt.block_on(d.scrape_metrics());
    assert!(
        metrics
            .get(r#"warden_hsmd_request_seconds_count{name="SignLocalHtlcTx2"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "the restarted wardend signed the HTLC-timeout: {metrics:#?}"
    );

    // After the delay on A's own outputs, A sweeps its balance and the HTLC's value back.
    net.mine(vec![timeout.clone()]);
    let sweep = sweep_to_wallet(&mut net, &[&commitment, &timeout]);
    let held = sat_out(&[&sweep]);
    assert!(
        (800_000 - 20_000..800_000).contains(&held),
        "A holds its balance and the timed-out HTLC less fees: {held} sat"
    );
}

/// Every method of LDK's signer traits, called on Warden's keys and on a channel signer: each
/// answers (through wardend, or with a stated refusal) and none panics, where VLS's client
/// reaches `todo!()` (justice, HTLC claims on the peer's commitment, the anchor input,
/// splicing), `unimplemented!()` (phantom nodes, tweaked ECDH) or `expect` on a refusal
/// (commitment secrets, sweeps, invoices, gossip).
#[test]
fn every_signer_trait_method_answers_through_warden_without_a_panic() {
    use lightning::ln::chan_utils::{
        make_funding_redeemscript, ChannelTransactionParameters, ClosingTransaction,
        CommitmentTransaction, CounterpartyChannelTransactionParameters, HTLCOutputInCommitment,
        HolderCommitmentTransaction,
    };
    use lightning::ln::channel_keys::RevocationKey;
    use lightning::ln::channelmanager::Bolt11InvoiceParameters;
    use lightning::ln::msgs::{
        UnsignedChannelAnnouncement, UnsignedGossipMessage, UnsignedNodeAnnouncement,
    };
    use lightning::routing::gossip::{NodeAlias, NodeId};
    use lightning::sign::ecdsa::EcdsaChannelSigner;
    use lightning::sign::{
        ChannelDerivationParameters, ChannelSigner, DelayedPaymentOutputDescriptor, EntropySource,
        HTLCDescriptor, NodeSigner, Recipient, SignerProvider,
    };
    use lightning::types::features::{ChannelFeatures, ChannelTypeFeatures, NodeFeatures};
    use lightning::types::payment::PaymentHash;
    use lightning::util::config::UserConfig;
    use lightning::util::ser::Writeable;
    use lightning_signer::bitcoin::hashes::sha256d;
    use lightning_signer::bitcoin::secp256k1::{Scalar, SecretKey};
    use lightning_signer::bitcoin::{
        absolute::LockTime, constants::ChainHash, transaction::Version, Amount, Network, OutPoint,
        Sequence, TxIn, TxOut, Txid, Witness,
    };
    use lightning_signer::util::INITIAL_COMMITMENT_NUMBER as FIRST;

    /// `call`'s answer; a panic fails the test naming the method.
    fn answered<T>(method: &str, call: impl FnOnce() -> T) -> T {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
            .unwrap_or_else(|_| panic!("{method} panicked"))
    }

    let side = WardenSide::start();
    let mut d = Daemon::prepare("ldk-walk", QUORUM_RULES, side.port);
    d.start_wardend();
    let mut net = side.net();
    side.open_channel(&mut net, 1_000_000);
    let secp = Secp256k1::new();
    let keys: &WardenKeys = &net.a.keys;

    // The configuration: LDK's default negotiates no anchors and refuses inbound splices, so it
    // is what Warden's nodes run; the channel just opened is not an anchor channel.
    warden_ldk::signer::check_config(&UserConfig::default()).expect("LDK's default is supported");
    let channel_type = net.a.manager.list_channels()[0]
        .channel_type
        .clone()
        .unwrap();
    assert!(!channel_type.supports_anchors_zero_fee_htlc_tx());
    let mut anchors = UserConfig::default();
    anchors
        .channel_handshake_config
        .negotiate_anchors_zero_fee_htlc_tx = true;
    let err = warden_ldk::signer::check_config(&anchors)
        .unwrap_err()
        .to_string();
    assert!(err.contains("negotiate_anchors_zero_fee_htlc_tx"), "{err}");
    let splices = UserConfig {
        reject_inbound_splices: false,
        ..Default::default()
    };
    let err = warden_ldk::signer::check_config(&splices)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reject_inbound_splices"), "{err}");

    // EntropySource.
    let r1 = answered("get_secure_random_bytes", || keys.get_secure_random_bytes());
    assert_ne!(r1, keys.get_secure_random_bytes());

    // NodeSigner.
    let id = answered("get_node_id", || keys.get_node_id(Recipient::Node)).unwrap();
    assert_eq!(id, net.a.id);
    assert!(answered("get_node_id(phantom)", || keys
        .get_node_id(Recipient::PhantomNode))
    .is_err());
    let expanded = answered("get_expanded_key", || keys.get_expanded_key());
    assert!(expanded == keys.get_expanded_key());
    answered("get_peer_storage_key", || keys.get_peer_storage_key());
    answered("get_receive_auth_key", || keys.get_receive_auth_key());
    let shared = answered("ecdh", || keys.ecdh(Recipient::Node, &net.b.id, None)).unwrap();
    let theirs = net.b.keys.ecdh(Recipient::Node, &net.a.id, None).unwrap();
    assert_eq!(
        shared.secret_bytes(),
        theirs.secret_bytes(),
        "ECDH agrees with B"
    );
    let tweak = Scalar::from_be_bytes([1; 32]).unwrap();
    assert!(answered("ecdh(tweak)", || keys.ecdh(
        Recipient::Node,
        &net.b.id,
        Some(&tweak)
    ))
    .is_err());
    assert!(answered("ecdh(phantom)", || keys.ecdh(
        Recipient::PhantomNode,
        &net.b.id,
        None
    ))
    .is_err());
    let invoice = net
        .a
        .manager
        .create_bolt11_invoice(Bolt11InvoiceParameters {
            amount_msats: Some(1_000),
            ..Default::default()
        })
        .unwrap();
    let raw = invoice.into_signed_raw().raw_invoice().clone();
    let sig = answered("sign_invoice", || keys.sign_invoice(&raw, Recipient::Node)).unwrap();
    let signer_of = secp
        .recover_ecdsa(&Message::from_digest(raw.signable_hash()), &sig)
        .unwrap();
    assert_eq!(signer_of, id, "the invoice is signed by the node key");
    assert!(answered("sign_invoice(phantom)", || keys
        .sign_invoice(&raw, Recipient::PhantomNode))
    .is_err());
    // VLS signs a BOLT 12 invoice only under its own BOLT 12 key, not the node key (LDK's
    // ChannelManager signs its invoices with keys derived from the expanded key, without the
    // signer): one under the node key is refused, as LDK's error where VLS's client panics.
    let bolt12 = unsigned_bolt12_invoice(keys, id, &secp);
    assert!(answered("sign_bolt12_invoice", || keys.sign_bolt12_invoice(&bolt12)).is_err());
    let announcement = UnsignedNodeAnnouncement {
        features: NodeFeatures::empty(),
        timestamp: 1,
        node_id: NodeId::from_pubkey(&id),
        rgb: [0; 3],
        alias: NodeAlias([0; 32]),
        addresses: vec![],
        excess_address_data: vec![],
        excess_data: vec![],
    };
    let sig = answered("sign_gossip_message", || {
        keys.sign_gossip_message(UnsignedGossipMessage::NodeAnnouncement(&announcement))
    })
    .unwrap();
    let digest = sha256d::Hash::hash(&announcement.encode()).to_byte_array();
    secp.verify_ecdsa(&Message::from_digest(digest), &sig, &id)
        .expect("the node announcement is signed by the node key");
    let signed = answered("sign_message", || keys.sign_message(b"warden")).unwrap();
    assert!(!signed.is_empty());

    // SignerProvider. Channel numbers grow with the clock, not from 1 in each process as VLS's
    // client counts (which would give a restarted node's first channel the number of one
    // wardend already holds): a fresh WardenKeys, as after a restart, numbers above this one.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let keys_id = answered("generate_channel_keys_id", || {
        keys.generate_channel_keys_id(false, 9)
    });
    let number = lightning_signer::channel::ChannelId::new(&keys_id).oid();
    assert!(
        number >= before,
        "channel number {number} follows the clock"
    );
    let next =
        lightning_signer::channel::ChannelId::new(&keys.generate_channel_keys_id(false, 9)).oid();
    assert!(next > number, "numbers grow: {next} after {number}");
    let signer = answered("derive_channel_signer", || {
        keys.derive_channel_signer(keys_id)
    });
    let wallet = answered("get_destination_script", || {
        keys.get_destination_script(keys_id)
    })
    .unwrap();
    let shutdown = answered("get_shutdown_scriptpubkey", || {
        keys.get_shutdown_scriptpubkey()
    })
    .unwrap();
    assert_eq!(shutdown.into_inner(), wallet);

    // ChannelSigner, on a channel wardend has created and B's keys for the other side.
    let ours = answered("pubkeys", || signer.pubkeys(&secp));
    assert_eq!(
        answered("channel_keys_id", || signer.channel_keys_id()),
        keys_id
    );
    let point = answered("get_per_commitment_point", || {
        signer.get_per_commitment_point(FIRST, &secp)
    })
    .unwrap();
    assert!(
        answered("release_commitment_secret", || signer
            .release_commitment_secret(FIRST))
        .is_err(),
        "no commitment of the new channel is revoked yet"
    );
    assert!(answered("validate_counterparty_revocation", || {
        signer.validate_counterparty_revocation(FIRST, &SecretKey::from_slice(&[1; 32]).unwrap())
    })
    .is_err());
    let parent = Txid::from_byte_array([3; 32]);
    assert_eq!(
        answered("new_funding_pubkey", || signer
            .new_funding_pubkey(parent, &secp)),
        ours.funding_pubkey,
        "no new key: the splice is refused"
    );
    let b_signer = net
        .b
        .keys
        .derive_channel_signer(net.b.keys.generate_channel_keys_id(true, 9));
    let theirs = b_signer.pubkeys(&secp);
    let their_point = b_signer.get_per_commitment_point(FIRST, &secp).unwrap();
    let funding = OutPoint {
        txid: Txid::from_byte_array([4; 32]),
        vout: 0,
    };
    let params = ChannelTransactionParameters {
        holder_pubkeys: ours.clone(),
        holder_selected_contest_delay: 144,
        is_outbound_from_holder: true,
        counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
            pubkeys: theirs.clone(),
            selected_contest_delay: 144,
        }),
        funding_outpoint: Some(lightning::chain::transaction::OutPoint {
            txid: funding.txid,
            index: 0,
        }),
        splice_parent_funding_txid: None,
        channel_type_features: ChannelTypeFeatures::only_static_remote_key(),
        channel_value_satoshis: 1_000_000,
    };
    let any_sig = secp.sign_ecdsa(
        &Message::from_digest([5; 32]),
        &SecretKey::from_slice(&[6; 32]).unwrap(),
    );
    let holder = HolderCommitmentTransaction::new(
        CommitmentTransaction::new(
            FIRST,
            &point,
            990_000,
            0,
            253,
            vec![],
            &params.as_holder_broadcastable(),
            &secp,
        ),
        any_sig,
        vec![],
        &ours.funding_pubkey,
        &theirs.funding_pubkey,
    );
    answered("validate_holder_commitment", || {
        signer.validate_holder_commitment(&holder, vec![])
    })
    .ok();

    // EcdsaChannelSigner.
    let counterparty = CommitmentTransaction::new(
        FIRST,
        &their_point,
        0,
        990_000,
        253,
        vec![],
        &params.as_counterparty_broadcastable(),
        &secp,
    );
    answered("sign_counterparty_commitment", || {
        signer.sign_counterparty_commitment(&params, &counterparty, vec![], vec![], &secp)
    })
    .ok();
    let mut spliced = params.clone();
    spliced.splice_parent_funding_txid = Some(parent);
    assert!(
        answered("sign_counterparty_commitment(spliced)", || {
            signer.sign_counterparty_commitment(&spliced, &counterparty, vec![], vec![], &secp)
        })
        .is_err(),
        "a spliced funding is never signed"
    );
    answered("sign_holder_commitment", || {
        signer.sign_holder_commitment(&params, &holder, &secp)
    })
    .ok();
    answered("unsafe_sign_holder_commitment", || {
        signer.unsafe_sign_holder_commitment(&params, &holder, &secp)
    })
    .ok();
    let spend = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([7; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(9_000),
            script_pubkey: wallet.clone(),
        }],
    };
    // The sweeps are validated by VLS: one paying anywhere but A's wallet is refused. (A
    // revocation secret nobody revealed yields a key that guards nothing, so VLS signs a sweep
    // to the wallet with it; only the destination matters.)
    let mut stolen = spend.clone();
    stolen.output[0].script_pubkey = net.b.keys.get_destination_script([0; 32]).unwrap();
    let secret = SecretKey::from_slice(&[8; 32]).unwrap();
    assert!(answered("sign_justice_revoked_output", || {
        signer.sign_justice_revoked_output(&params, &stolen, 0, 10_000, &secret, &secp)
    })
    .is_err());
    answered("sign_justice_revoked_output(to the wallet)", || {
        signer.sign_justice_revoked_output(&params, &spend, 0, 10_000, &secret, &secp)
    })
    .ok();
    let htlc = HTLCOutputInCommitment {
        offered: true,
        amount_msat: 10_000_000,
        cltv_expiry: 500,
        payment_hash: PaymentHash([2; 32]),
        transaction_output_index: Some(0),
    };
    assert!(answered("sign_justice_revoked_htlc", || {
        signer.sign_justice_revoked_htlc(&params, &stolen, 0, 10_000, &secret, &htlc, &secp)
    })
    .is_err());
    let descriptor = HTLCDescriptor {
        channel_derivation_parameters: ChannelDerivationParameters {
            value_satoshis: 1_000_000,
            keys_id,
            transaction_parameters: params.clone(),
        },
        commitment_txid: Txid::from_byte_array([7; 32]),
        per_commitment_number: FIRST,
        per_commitment_point: point,
        feerate_per_kw: 253,
        htlc: htlc.clone(),
        preimage: None,
        counterparty_sig: any_sig,
    };
    answered("sign_holder_htlc_transaction", || {
        signer.sign_holder_htlc_transaction(&spend, 0, &descriptor, &secp)
    })
    .ok();
    assert!(answered("sign_counterparty_htlc_transaction", || {
        signer.sign_counterparty_htlc_transaction(
            &params,
            &stolen,
            0,
            10_000,
            &their_point,
            &htlc,
            &secp,
        )
    })
    .is_err());
    let closing =
        ClosingTransaction::new(500_000, 490_000, wallet.clone(), wallet.clone(), funding);
    answered("sign_closing_transaction", || {
        signer.sign_closing_transaction(&params, &closing, &secp)
    })
    .ok();
    assert!(
        answered("sign_holder_keyed_anchor_input", || {
            signer.sign_holder_keyed_anchor_input(&params, &spend, 0, &secp)
        })
        .is_err(),
        "anchor channels are not supported"
    );
    let channel_announcement = UnsignedChannelAnnouncement {
        features: ChannelFeatures::empty(),
        chain_hash: ChainHash::using_genesis_block(Network::Regtest),
        short_channel_id: 1,
        node_id_1: NodeId::from_pubkey(&id),
        node_id_2: NodeId::from_pubkey(&net.b.id),
        bitcoin_key_1: NodeId::from_pubkey(&ours.funding_pubkey),
        bitcoin_key_2: NodeId::from_pubkey(&theirs.funding_pubkey),
        excess_data: vec![],
    };
    answered("sign_channel_announcement_with_funding_key", || {
        signer.sign_channel_announcement_with_funding_key(&params, &channel_announcement, &secp)
    })
    .ok();
    let sig = answered("sign_splice_shared_input", || {
        signer.sign_splice_shared_input(&spliced, &spend, 0, &secp)
    });
    let script = make_funding_redeemscript(&ours.funding_pubkey, &theirs.funding_pubkey);
    let sighash = SighashCache::new(&spend)
        .p2wsh_signature_hash(
            0,
            &script,
            Amount::from_sat(1_000_000),
            EcdsaSighashType::All,
        )
        .unwrap();
    assert!(
        secp.verify_ecdsa(
            &Message::from_digest(sighash.to_byte_array()),
            &sig,
            &ours.funding_pubkey
        )
        .is_err(),
        "a splice's shared input never carries a valid signature"
    );

    // wardend is still serving, and the node's real channel still pays.
    let preapprove = |i: &Bolt11Invoice| side.link.preapprove_invoice(i);
    net.pay(&net.invoice(1_000 * SAT, "after the walk"), preapprove)
        .unwrap();

    // OutputSpender, with the signer frozen: a sweep into A's wallet is signed (VLS checks the
    // key it spends with and that the output is the wallet's; Warden's approver finds no other
    // destination, so there is nothing for the policy or the freeze to decide); the same sweep
    // paying B is an on-chain payment, which the frozen signer refuses: LDK's error, where
    // VLS's client panics.
    let out = d.wardenctl("carol", &["freeze", "--reason", "walk"]);
    assert!(out.status.success());
    let delayed = SpendableOutputDescriptor::DelayedPaymentOutput(DelayedPaymentOutputDescriptor {
        outpoint: lightning::chain::transaction::OutPoint {
            txid: Txid::from_byte_array([7; 32]),
            index: 0,
        },
        per_commitment_point: point,
        to_self_delay: 144,
        output: TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: script.to_p2wsh(),
        },
        revocation_pubkey: RevocationKey(their_point),
        channel_keys_id: keys_id,
        channel_value_satoshis: 1_000_000,
        channel_transaction_parameters: None,
    });
    let swept = answered("spend_spendable_outputs", || {
        keys.spend_spendable_outputs(&[&delayed], vec![], wallet.clone(), 253, None, &secp)
    })
    .expect("a sweep to the wallet is signed while frozen");
    assert_eq!(swept.output.len(), 1);
    assert_eq!(swept.output[0].script_pubkey, wallet);
    let to_b = net.b.keys.get_destination_script([0; 32]).unwrap();
    assert!(answered("spend_spendable_outputs(to B)", || {
        keys.spend_spendable_outputs(&[&delayed], vec![], to_b.clone(), 253, None, &secp)
    })
    .is_err());
    drop(d);
}

/// An invoice for a BOLT 12 refund, to be signed under `signing`.
fn unsigned_bolt12_invoice(
    keys: &WardenKeys,
    signing: lightning_signer::bitcoin::secp256k1::PublicKey,
    secp: &Secp256k1<lightning_signer::bitcoin::secp256k1::All>,
) -> lightning::offers::invoice::UnsignedBolt12Invoice {
    use lightning::blinded_path::payment::{
        BlindedPaymentPath, Bolt12RefundContext, PaymentConstraints, PaymentContext,
        UnauthenticatedReceiveTlvs,
    };
    use lightning::offers::nonce::Nonce;
    use lightning::offers::refund::RefundBuilder;
    use lightning::sign::NodeSigner;
    use lightning::types::payment::{PaymentHash, PaymentSecret};
    let payer = lightning_signer::bitcoin::secp256k1::PublicKey::from_secret_key(
        secp,
        &lightning_signer::bitcoin::secp256k1::SecretKey::from_slice(&[9; 32]).unwrap(),
    );
    let refund = RefundBuilder::new(vec![1; 32], payer, 5_000)
        .unwrap()
        .build()
        .unwrap();
    let tlvs = UnauthenticatedReceiveTlvs {
        payment_secret: PaymentSecret([1; 32]),
        payment_constraints: PaymentConstraints {
            max_cltv_expiry: 1_000,
            htlc_minimum_msat: 1,
        },
        payment_context: PaymentContext::Bolt12Refund(Bolt12RefundContext {}),
    }
    .authenticate(Nonce::from_entropy_source(keys), &keys.get_expanded_key());
    let path = BlindedPaymentPath::one_hop(signing, tlvs, 18, keys, secp).unwrap();
    refund
        .respond_with_no_std(
            vec![path],
            PaymentHash([1; 32]),
            signing,
            Duration::from_secs(1_700_000_000),
        )
        .unwrap()
        .build()
        .unwrap()
}
