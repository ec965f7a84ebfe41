//! LDK channels closed without the peer's help, signed through Warden: the signatures VLS's
//! client leaves unimplemented (justice, HTLC claims on the counterparty's commitment) are
//! answered by wardend (`warden::ldk::signer`), validated by VLS inside it. Two real LDK nodes on
//! the test's own chain: A signed by wardend, B by LDK's KeysManager.

mod common;

use common::daemon::{Daemon, QUORUM_RULES};
use common::ldk_net::{Fees, Log, WardenSide};
use lightning::chain::channelmonitor::Balance;
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::secp256k1::{ecdsa, Message, Secp256k1};
use lightning_signer::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use lightning_signer::bitcoin::{ScriptBuf, Transaction};
use lightning_signer::lightning;
use lightning_signer::lightning_invoice::Bolt11Invoice;

const SAT: u64 = 1_000;

/// The transactions a node broadcast that spend an output of `spent`.
fn spending(broadcasts: &common::ldk_net::Broadcasts, spent: &Transaction) -> Vec<Transaction> {
    let txid = spent.compute_txid();
    broadcasts
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.input.iter().any(|i| i.previous_output.txid == txid))
        .cloned()
        .collect()
}

/// Every input of `tx` that spends an output of `spent` carries a P2WSH witness with a valid
/// signature over its script and amount by a key the script names; returns how many inputs.
fn assert_p2wsh_inputs_signed(tx: &Transaction, spent: &Transaction) -> usize {
    let secp = Secp256k1::verification_only();
    let mut checked = 0;
    for (i, input) in tx.input.iter().enumerate() {
        if input.previous_output.txid != spent.compute_txid() {
            continue;
        }
        let prev = &spent.output[input.previous_output.vout as usize];
        let witness: Vec<&[u8]> = input.witness.iter().collect();
        assert!(witness.len() >= 2, "input {i} has witness {witness:?}");
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
    net.mine(vec![revoked.clone()]);

    // A's monitor takes every revoked output back, with signatures wardend made and VLS
    // validated (a justice spend to A's own wallet).
    let justice: Vec<Transaction> = spending(&net.a.broadcasts, &revoked);
    assert!(!justice.is_empty(), "A broadcast a justice transaction");
    let signed: usize = justice
        .iter()
        .map(|t| assert_p2wsh_inputs_signed(t, &revoked))
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
    for _ in 0..6 {
        net.mine(vec![]);
    }
    let still: Vec<Balance> = net.a.chain_monitor.get_claimable_balances(&[]);
    assert!(
        still
            .iter()
            .all(|b| !matches!(b, Balance::CounterpartyRevokedOutputClaimable { .. })),
        "no revoked output is left unclaimed: {still:?}"
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

    // A claims the HTLC with its preimage, straight from B's commitment: wardend signs it.
    net.a.manager.claim_funds(preimage);
    net.pump();
    net.mine(vec![]);
    let claims: Vec<Transaction> = spending(&net.a.broadcasts, &commitment);
    assert!(!claims.is_empty(), "A broadcast its HTLC claim");
    let signed: usize = claims
        .iter()
        .map(|t| assert_p2wsh_inputs_signed(t, &commitment))
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
    let channel = net.a.manager.list_channels()[0].clone();
    net.a.broadcasts.0.lock().unwrap().clear();
    net.a
        .manager
        .force_close_broadcasting_latest_txn(&channel.channel_id, &net.b.id, "vanished".into())
        .unwrap();
    let funding = channel.funding_txo.unwrap().into_bitcoin_outpoint();
    let commitment = net
        .a
        .broadcasts
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|t| t.input[0].previous_output == funding)
        .cloned()
        .expect("A broadcast its commitment");
    assert_eq!(
        commitment.output.len(),
        3,
        "to_local, to_remote and the HTLC"
    );
    net.mine(vec![commitment.clone()]);

    // After the HTLC's expiry A times it out with an HTLC-timeout transaction wardend signs.
    let mut timeout = None;
    for _ in 0..200 {
        net.mine(vec![]);
        timeout = spending(&net.a.broadcasts, &commitment).into_iter().next();
        if timeout.is_some() {
            break;
        }
    }
    let timeout = timeout.expect("A broadcast the HTLC's timeout");
    assert!(
        timeout.lock_time.to_consensus_u32() > 0,
        "an HTLC-timeout waits for the HTLC's expiry"
    );
    assert_eq!(assert_p2wsh_inputs_signed(&timeout, &commitment), 1);
    let metrics = side.rt.block_on(d.scrape_metrics());
    for name in ["SignLocalCommitmentTx2", "SignLocalHtlcTx2"] {
        assert!(
            metrics
                .get(&format!(
                    "warden_hsmd_request_seconds_count{{name=\"{name}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
                >= 1.0,
            "wardend signed {name}: {metrics:#?}"
        );
    }
}
