//! What lightningd sends to sign the spends of a force close back into its wallet, built the way
//! Core Lightning v25.09 builds them (`lightningd/onchain_control.c`, `onchaind_tx_unsigned`):
//! one input (nSequence the delay for a delayed output, 1 for an HTLC output of an anchors
//! channel), one P2TR output to the wallet key at `final_key_idx` with its taproot key origin in
//! the PSBT, a fee of `feerate × weight / 1000` rounded down, where the weight is the unsigned
//! transaction's (with marker and flag) plus `1 + 3 + 73 + wscript`. Core Lightning builds slow
//! sweeps at its 253 sat/kw floor, which is where VLS's own estimate of the weight disagrees.

use lightning_signer::bitcoin::bip32::{ChildNumber, Xpub};
use lightning_signer::bitcoin::psbt::Psbt;
use lightning_signer::bitcoin::secp256k1::Secp256k1;
use lightning_signer::bitcoin::{
    absolute::LockTime, key::UntweakedPublicKey, transaction::Version, Amount, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Witness,
};
use vls_protocol::model::PubKey;
use vls_protocol::msgs;
use vls_protocol::psbt::PsbtWrapper;
use vls_protocol::serde_bolt::Octets;

/// Core Lightning's lowest feerate (`FEERATE_FLOOR`, sat/kw), used for every slow sweep.
pub const FEERATE_FLOOR: u32 = 253;

/// An output of a closed channel that onchaind asks lightningd to spend to the wallet.
#[derive(Debug, Clone)]
pub struct Spendable {
    /// The output being spent (on a commitment or an HTLC transaction).
    pub outpoint: OutPoint,
    /// Its value.
    pub sat: u64,
    /// The script it pays to (P2WSH of this).
    pub wscript: ScriptBuf,
    /// The input's nSequence.
    pub sequence: u32,
    /// The sweep's nLockTime.
    pub locktime: u32,
}

/// The unsigned sweep of `out` to the wallet key `xpub/final_key_idx` at `feerate_per_kw`, and
/// its fee.
pub fn sweep(xpub: &Xpub, final_key_idx: u32, out: &Spendable, feerate_per_kw: u32) -> (Psbt, u64) {
    let secp = Secp256k1::new();
    let child = xpub
        .derive_pub(
            &secp,
            &[ChildNumber::Normal {
                index: final_key_idx,
            }],
        )
        .expect("a normal child of a public key");
    let internal = UntweakedPublicKey::from(child.public_key);
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_consensus(out.locktime),
        input: vec![TxIn {
            previous_output: out.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence(out.sequence),
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(out.sat),
            script_pubkey: ScriptBuf::new_p2tr(&secp, internal, None),
        }],
    };
    // bitcoin_tx_weight adds the marker and flag to a transaction without witnesses.
    let weight = tx.weight().to_wu() + 2 + 1 + 3 + 73 + out.wscript.len() as u64;
    let fee = u64::from(feerate_per_kw) * weight / 1_000;
    tx.output[0].value = Amount::from_sat(out.sat - fee);
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("an unsigned transaction");
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(out.sat),
        script_pubkey: ScriptBuf::new_p2wsh(&out.wscript.wscript_hash()),
    });
    psbt.inputs[0].witness_script = Some(out.wscript.clone());
    psbt.outputs[0].tap_key_origins.insert(
        internal,
        (
            vec![],
            (
                child.fingerprint(),
                vec![ChildNumber::Normal {
                    index: final_key_idx,
                }]
                .into(),
            ),
        ),
    );
    (psbt, fee)
}

/// `hsmd_sign_any_delayed_payment_to_us`: the node's delayed output of its own commitment
/// (`to_local`), or of its own HTLC transaction, after the delay.
pub fn delayed_payment_to_us(
    psbt: Psbt,
    wscript: &ScriptBuf,
    commitment_number: u64,
    peer_id: [u8; 33],
    dbid: u64,
) -> msgs::SignAnyDelayedPaymentToUs {
    msgs::SignAnyDelayedPaymentToUs {
        commitment_number,
        tx: psbt.unsigned_tx.clone().into(),
        psbt: PsbtWrapper::from(psbt).into(),
        wscript: Octets(wscript.to_bytes()),
        input: 0,
        peer_id: PubKey(peer_id),
        dbid,
    }
}

/// `hsmd_sign_any_remote_htlc_to_us`: an HTLC output of the peer's commitment, timed out or
/// fulfilled.
pub fn remote_htlc_to_us(
    psbt: Psbt,
    wscript: &ScriptBuf,
    remote_per_commitment_point: [u8; 33],
    peer_id: [u8; 33],
    dbid: u64,
) -> msgs::SignAnyRemoteHtlcToUs {
    msgs::SignAnyRemoteHtlcToUs {
        remote_per_commitment_point: PubKey(remote_per_commitment_point),
        tx: psbt.unsigned_tx.clone().into(),
        psbt: PsbtWrapper::from(psbt).into(),
        wscript: Octets(wscript.to_bytes()),
        option_anchors: true,
        input: 0,
        peer_id: PubKey(peer_id),
        dbid,
    }
}
