//! What an on-chain transaction takes out of the wallet: its outside outputs and its fee.
//!
//! VLS 1.0.0-rc.1 returns "unknown destinations" before its own fee check, so a transaction
//! with one outside output is never fee-checked by VLS: a fee of the whole wallet passed as a
//! 10,000 sat payment. Warden judges and counts what leaves: every output that is not the
//! node's own, plus the fee (inputs minus every output), bounded by the policy's `[onchain]`.

use crate::policy::{OnchainFee, PaymentRequest};
use lightning_signer::bitcoin::{Address, Network, Script, Transaction, TxOut};

/// The witness of one input once signed, by the script it spends (weight units). An
/// underestimate only makes the feerate look higher, so the bound errs on the side of no.
fn witness_weight(spent: &Script) -> u64 {
    if spent.is_p2tr() {
        // Element count, length, 64-byte Schnorr signature.
        1 + 1 + 64
    } else if spent.is_p2sh() {
        // P2SH-P2WPKH: the 23-byte scriptSig pushing the redeem script counts four times.
        4 * 23 + 108
    } else {
        // P2WPKH (element count, DER signature with sighash, compressed key); the least any
        // other segwit spend needs.
        1 + 1 + 72 + 1 + 33
    }
}

/// The transaction's weight once its inputs are signed: the unsigned weight, the segwit marker
/// and flag, and each input's witness.
pub fn estimated_signed_weight(tx: &Transaction, prev_outs: &[TxOut]) -> u64 {
    let unsigned = tx.weight().to_wu();
    let has_witness = tx.input.iter().any(|i| !i.witness.is_empty());
    let mut weight = if has_witness { unsigned } else { unsigned + 2 };
    for (input, spent) in tx.input.iter().zip(prev_outs) {
        if input.witness.is_empty() {
            weight += witness_weight(&spent.script_pubkey);
        }
    }
    weight.max(1)
}

/// The fee `tx` pays: the inputs (`prev_outs`, one per input) minus every output.
pub fn fee_of(tx: &Transaction, prev_outs: &[TxOut]) -> Result<OnchainFee, String> {
    if prev_outs.len() != tx.input.len() {
        return Err(format!(
            "the transaction has {} inputs but {} spent outputs were given",
            tx.input.len(),
            prev_outs.len()
        ));
    }
    fn sum(outs: &[TxOut]) -> Option<u64> {
        outs.iter()
            .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()))
    }
    let inputs = sum(prev_outs).ok_or("the inputs' values overflow")?;
    let outputs = sum(&tx.output).ok_or("the outputs' values overflow")?;
    let fee_sat = inputs.checked_sub(outputs).ok_or_else(|| {
        format!("the outputs ({outputs} sat) exceed the inputs ({inputs} sat); no valid transaction does")
    })?;
    Ok(OnchainFee {
        fee_msat: fee_sat
            .checked_mul(1_000)
            .ok_or("the fee overflows in msat")?,
        weight_wu: estimated_signed_weight(tx, prev_outs),
    })
}

/// An output's destination as the policy names it: its address, or its script in hex.
pub fn destination(out: &TxOut, network: Network) -> String {
    Address::from_script(&out.script_pubkey, network)
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("script {}", hex::encode(out.script_pubkey.as_bytes())))
}

/// The payment a transaction makes: the outputs at `outside` (indices of the outputs that are
/// not the node's own) and the fee. What the policy judges and counts is exactly what leaves
/// the wallet: inputs minus the node's own outputs.
pub fn onchain_request(
    tx: &Transaction,
    prev_outs: &[TxOut],
    outside: &[usize],
    network: Network,
) -> Result<PaymentRequest, String> {
    let fee = fee_of(tx, prev_outs)?;
    let mut outputs = Vec::with_capacity(outside.len());
    for &i in outside {
        let o = tx
            .output
            .get(i)
            .ok_or_else(|| format!("output {i} is not in the transaction"))?;
        outputs.push((
            destination(o, network),
            o.value.to_sat().saturating_mul(1_000),
        ));
    }
    Ok(PaymentRequest::onchain_with_fee(outputs, fee))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::bitcoin::absolute::LockTime;
    use lightning_signer::bitcoin::hashes::Hash;
    use lightning_signer::bitcoin::transaction::Version;
    use lightning_signer::bitcoin::{
        Amount, OutPoint, ScriptBuf, Sequence, TxIn, Txid, WPubkeyHash, Witness,
    };
    use proptest::prelude::*;

    fn p2wpkh(n: u8) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([n; 20]))
    }

    fn tx(inputs: usize, outputs: &[u64]) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: (0..inputs)
                .map(|i| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([i as u8; 32]),
                        vout: 0,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs
                .iter()
                .enumerate()
                .map(|(i, v)| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: p2wpkh(i as u8),
                })
                .collect(),
        }
    }

    fn coins(values: &[u64]) -> Vec<TxOut> {
        values
            .iter()
            .map(|v| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: p2wpkh(0xee),
            })
            .collect()
    }

    #[test]
    fn the_whole_wallet_paid_as_fee_is_counted_with_the_output() {
        // The attack seen on a real node: 94,890,813 sat in, one 10,000 sat output out.
        let t = tx(1, &[10_000]);
        let req = onchain_request(&t, &coins(&[94_890_813]), &[0], Network::Regtest).unwrap();
        assert_eq!(req.fee.unwrap().fee_msat, 94_880_813_000);
        assert_eq!(req.total_msat_wide(), 94_890_813_000);
    }

    #[test]
    fn a_one_input_p2wpkh_spend_weighs_what_bitcoin_core_says() {
        // 1 P2WPKH input, 1 P2WPKH output: 110 vbytes (437-438 weight units) once signed with
        // a 72-byte signature.
        let t = tx(1, &[10_000]);
        let w = estimated_signed_weight(&t, &coins(&[20_000]));
        assert_eq!(w, 438, "unsigned {} + 2 + 108", t.weight().to_wu());
    }

    #[test]
    fn outputs_above_the_inputs_are_an_error_naming_both_sums() {
        let e = fee_of(&tx(1, &[10_000]), &coins(&[9_000])).unwrap_err();
        assert_eq!(
            e,
            "the outputs (10000 sat) exceed the inputs (9000 sat); no valid transaction does"
        );
        let e = fee_of(&tx(2, &[10_000]), &coins(&[9_000])).unwrap_err();
        assert!(e.contains("2 inputs but 1 spent outputs"), "{e}");
    }

    proptest! {
        /// What is counted equals the inputs minus the node's own outputs.
        #[test]
        fn the_value_counted_is_the_inputs_minus_the_wallets_outputs(
            ins in proptest::collection::vec(1u64..5_000_000_000, 1..6),
            outs in proptest::collection::vec((0u64..1_000_000_000, any::<bool>()), 0..8),
        ) {
            let input_sum: u64 = ins.iter().sum();
            let output_sum: u64 = outs.iter().map(|(v, _)| v).sum();
            prop_assume!(output_sum <= input_sum);
            let values: Vec<u64> = outs.iter().map(|(v, _)| *v).collect();
            let t = tx(ins.len(), &values);
            let outside: Vec<usize> = outs.iter().enumerate().filter(|(_, (_, o))| *o).map(|(i, _)| i).collect();
            let own: u64 = outs.iter().filter(|(_, o)| !*o).map(|(v, _)| v).sum();
            let req = onchain_request(&t, &coins(&ins), &outside, Network::Regtest).unwrap();
            prop_assert_eq!(req.total_msat_wide(), u128::from(input_sum - own) * 1_000);
        }
    }
}
