//! LDK's channel signer with nothing left unimplemented: VLS's `SignerClient` for everything it
//! serves, and wardend's own answers for what that client does not implement in 1.0.0-rc.1, the
//! signatures that protect funds when a channel closes without the peer's help:
//! - justice for a revoked commitment's `to_local` output and its HTLC outputs
//!   (`sign_justice_revoked_output`, `sign_justice_revoked_htlc`), through VLS's
//!   `SignAnyPenaltyToUs`;
//! - HTLC outputs on the counterparty's commitment (`sign_counterparty_htlc_transaction`),
//!   through `SignAnyRemoteHtlcToUs`.
//!
//! VLS validates each of them inside wardend (`policy-sweep-*`: the output goes to the node's
//! wallet, version, fee, locktime, sequence). They never reach Warden's approver, so neither a
//! policy limit nor a freeze can stop them: they move funds back to the node's own wallet.
//!
//! The commitment points and secrets are asked here too, so that a refusal or a wardend out of
//! reach is LDK's error (its asynchronous-signer path: call `ChannelManager::signer_unblocked`
//! once wardend is back) instead of the panic of VLS's client; and
//! [`OutputSpender::spend_spendable_outputs`](lightning::sign::OutputSpender) sweeps the outputs
//! of closed channels through VLS's `SignWithdrawal` (every output to the node's wallet, so
//! Warden's policy has nothing to decide) with an error where VLS's client panics.
//!
//! What cannot be served returns LDK's error (LDK retries it on later blocks), never a panic;
//! [`check_config`] refuses the configurations that would ask for it:
//! - the holder's anchor input (VLS's `SignAnchorspend` needs the previous output of every input
//!   of the anchor transaction, which LDK does not give a channel signer): anchor channels are
//!   not supported;
//! - splicing (VLS 1.0.0-rc.1 cannot sign a splice): `new_funding_pubkey` answers the channel's
//!   current funding key, every signature for a spliced funding is refused, and the splice's
//!   shared input gets a signature that verifies against no funding key, so no splice of a
//!   Warden channel can ever confirm and the channel's funds stay in its original funding output.

use crate::{LdkError, LdkSignerLink};
use lightning::ln::chan_utils::{
    get_htlc_redeemscript, get_revokeable_redeemscript, ChannelPublicKeys,
    ChannelTransactionParameters, ClosingTransaction, CommitmentTransaction,
    HTLCOutputInCommitment, HolderCommitmentTransaction, TxCreationKeys,
};
use lightning::ln::msgs::UnsignedChannelAnnouncement;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::SpendableOutputDescriptor;
use lightning::sign::{ChannelSigner, HTLCDescriptor};
use lightning::types::payment::PaymentPreimage;
use lightning::util::config::UserConfig;
use lightning_signer::bitcoin::bip32::{DerivationPath, Fingerprint};
use lightning_signer::bitcoin::psbt::Psbt;
use lightning_signer::bitcoin::secp256k1::ecdsa::Signature;
use lightning_signer::bitcoin::secp256k1::{self, PublicKey, Secp256k1, SecretKey};
use lightning_signer::bitcoin::{Amount, ScriptBuf, Transaction, TxOut, Txid, Witness};
use lightning_signer::channel::ChannelId;
use lightning_signer::lightning;
use lightning_signer::util::INITIAL_COMMITMENT_NUMBER;
use vls_protocol::model::{CloseInfo, DisclosedSecret, PubKey, Utxo};
use vls_protocol::msgs;
use vls_protocol::psbt::PsbtWrapper;
use vls_protocol::serde_bolt::{Octets, WithSize};
use vls_protocol_client::SignerClient;
use vls_protocol_client::Transport;

/// VLS's LDK client names every channel with a zero peer id and the channel's number.
const NO_PEER: [u8; 33] = [0; 33];

/// The wallet path LDK's sweeps pay to (`KeysManagerClient::get_destination_script`: child 1
/// of the wallet key). VLS reads the path from the PSBT's first output and checks the output
/// pays to it.
const SWEEP_PATH: [u32; 1] = [1];

/// A compact ECDSA signature with r = s = 1: a valid encoding that no funding key verifies.
const UNVERIFIABLE: [u8; 64] = {
    let mut sig = [0u8; 64];
    sig[31] = 1;
    sig[63] = 1;
    sig
};

/// Refuse, before LDK negotiates them, the channels Warden's signer cannot sign: anchor channels
/// and splices a peer starts. Check the `UserConfig` handed to `ChannelManager` with it (LDK's
/// default passes); never call `ChannelManager::splice_channel` on a Warden node.
pub fn check_config(config: &UserConfig) -> Result<(), LdkError> {
    let handshake = &config.channel_handshake_config;
    if handshake.negotiate_anchors_zero_fee_htlc_tx
        || handshake.negotiate_anchor_zero_fee_commitments
    {
        return Err(LdkError::Unsupported(
            "channel_handshake_config negotiates anchor channels, whose anchor input VLS signs \
             only knowing every input's previous output, which LDK does not give a channel \
             signer; set negotiate_anchors_zero_fee_htlc_tx and \
             negotiate_anchor_zero_fee_commitments to false (LDK's default)"
                .into(),
        ));
    }
    if !config.reject_inbound_splices {
        return Err(LdkError::Unsupported(
            "reject_inbound_splices is false, but VLS 1.0.0-rc.1 cannot sign a splice; set it to \
             true (LDK's default)"
                .into(),
        ));
    }
    Ok(())
}

/// Refuse a signature for a spliced funding (see the module's doc).
fn unspliced(params: &ChannelTransactionParameters) -> Result<(), ()> {
    match params.splice_parent_funding_txid {
        None => Ok(()),
        Some(parent) => {
            tracing::error!(
                %parent,
                "a spliced channel cannot be signed through Warden: VLS does not support splicing"
            );
            Err(())
        }
    }
}

/// LDK's `EcdsaChannelSigner` for a channel signed by wardend.
#[derive(Clone)]
pub struct WardenChannelSigner {
    inner: SignerClient,
    link: LdkSignerLink,
    dbid: u64,
}

impl WardenChannelSigner {
    /// The signer for the channel VLS's client calls `inner`.
    pub fn new(inner: SignerClient, link: LdkSignerLink) -> Self {
        let dbid = ChannelId::new(&inner.channel_keys_id()).oid();
        WardenChannelSigner { inner, link, dbid }
    }

    /// The keys of the counterparty's commitment at `per_commitment_point`: it is the
    /// broadcaster, this node the countersignatory.
    fn counterparty_keys(
        params: &ChannelTransactionParameters,
        per_commitment_point: &PublicKey,
        secp: &Secp256k1<secp256k1::All>,
    ) -> Result<TxCreationKeys, ()> {
        let theirs = params.counterparty_pubkeys().ok_or(())?;
        Ok(TxCreationKeys::from_channel_static_keys(
            per_commitment_point,
            theirs,
            &params.holder_pubkeys,
            secp,
        ))
    }

    /// `tx` as the PSBT VLS signs from: no witnesses yet, the spent output's amount and script,
    /// and the wallet path of the sweep's destination.
    fn sweep_psbt(
        tx: &Transaction,
        input: usize,
        amount: u64,
        wscript: &ScriptBuf,
        secp: &Secp256k1<secp256k1::All>,
    ) -> Result<(Transaction, Psbt), ()> {
        let mut bare = tx.clone();
        for i in bare.input.iter_mut() {
            i.witness = Witness::new();
        }
        let mut psbt = Psbt::from_unsigned_tx(bare.clone()).map_err(|_| ())?;
        let spent = psbt.inputs.get_mut(input).ok_or(())?;
        spent.witness_utxo = Some(TxOut {
            value: Amount::from_sat(amount),
            script_pubkey: wscript.to_p2wsh(),
        });
        mark_wallet_output(psbt.outputs.first_mut().ok_or(())?, secp);
        Ok((bare, psbt))
    }

    /// VLS's number of the commitment LDK numbers `idx` (LDK counts down from
    /// `INITIAL_COMMITMENT_NUMBER`, VLS up from zero).
    fn vls_number(idx: u64) -> Result<u64, ()> {
        INITIAL_COMMITMENT_NUMBER.checked_sub(idx).ok_or(())
    }

    fn signature(reply: msgs::SignTxReply) -> Result<Signature, ()> {
        Signature::from_compact(&reply.signature.signature.0).map_err(|_| ())
    }

    fn penalty(
        &self,
        tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_key: &SecretKey,
        wscript: ScriptBuf,
        secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let (bare, psbt) = Self::sweep_psbt(tx, input, amount, &wscript, secp)?;
        let reply: msgs::SignTxReply = self
            .link
            .node_request(msgs::SignAnyPenaltyToUs {
                revocation_secret: DisclosedSecret(per_commitment_key.secret_bytes()),
                tx: WithSize(bare),
                psbt: WithSize(PsbtWrapper::from(psbt)),
                wscript: Octets(wscript.to_bytes()),
                input: u32::try_from(input).map_err(|_| ())?,
                peer_id: PubKey(NO_PEER),
                dbid: self.dbid,
            })
            .map_err(|e| tracing::error!(error = %e, "wardend did not sign a justice input"))?;
        Self::signature(reply)
    }
}

impl ChannelSigner for WardenChannelSigner {
    fn get_per_commitment_point(
        &self,
        idx: u64,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<PublicKey, ()> {
        let _ = secp_ctx;
        let reply: msgs::GetPerCommitmentPoint2Reply = self
            .link
            .channel_request(
                self.dbid,
                msgs::GetPerCommitmentPoint2 {
                    commitment_number: Self::vls_number(idx)?,
                },
            )
            .map_err(|e| tracing::error!(error = %e, idx, "wardend gave no commitment point"))?;
        PublicKey::from_slice(&reply.point.0).map_err(|_| ())
    }

    fn release_commitment_secret(&self, idx: u64) -> Result<[u8; 32], ()> {
        // VLS releases a commitment's secret when asked for the point two commitments on.
        let reply: msgs::GetPerCommitmentPointReply = self
            .link
            .channel_request(
                self.dbid,
                msgs::GetPerCommitmentPoint {
                    commitment_number: Self::vls_number(idx)?.checked_add(2).ok_or(())?,
                },
            )
            .map_err(|e| tracing::error!(error = %e, idx, "wardend released no secret"))?;
        match reply.secret {
            Some(secret) => Ok(secret.0),
            None => {
                tracing::error!(idx, "wardend did not release the commitment secret");
                Err(())
            }
        }
    }

    fn validate_holder_commitment(
        &self,
        holder_tx: &HolderCommitmentTransaction,
        outbound_htlc_preimages: Vec<PaymentPreimage>,
    ) -> Result<(), ()> {
        self.inner
            .validate_holder_commitment(holder_tx, outbound_htlc_preimages)
    }

    fn validate_counterparty_revocation(&self, idx: u64, secret: &SecretKey) -> Result<(), ()> {
        self.inner.validate_counterparty_revocation(idx, secret)
    }

    fn pubkeys(&self, secp_ctx: &Secp256k1<secp256k1::All>) -> ChannelPublicKeys {
        self.inner.pubkeys(secp_ctx)
    }

    fn new_funding_pubkey(
        &self,
        splice_parent_funding_txid: Txid,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> PublicKey {
        // LDK asks only when splicing, which check_config keeps off; the trait cannot fail, so
        // the answer is the current key and every signature for the splice is refused.
        tracing::error!(
            parent = %splice_parent_funding_txid,
            "LDK is splicing a Warden channel, which VLS cannot sign: the splice will fail"
        );
        self.inner.pubkeys(secp_ctx).funding_pubkey
    }

    fn channel_keys_id(&self) -> [u8; 32] {
        self.inner.channel_keys_id()
    }
}

impl EcdsaChannelSigner for WardenChannelSigner {
    fn sign_counterparty_commitment(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        commitment_tx: &CommitmentTransaction,
        inbound_htlc_preimages: Vec<PaymentPreimage>,
        outbound_htlc_preimages: Vec<PaymentPreimage>,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<(Signature, Vec<Signature>), ()> {
        unspliced(channel_parameters)?;
        self.inner.sign_counterparty_commitment(
            channel_parameters,
            commitment_tx,
            inbound_htlc_preimages,
            outbound_htlc_preimages,
            secp_ctx,
        )
    }

    fn sign_holder_commitment(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        commitment_tx: &HolderCommitmentTransaction,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        self.inner
            .sign_holder_commitment(channel_parameters, commitment_tx, secp_ctx)
    }

    fn unsafe_sign_holder_commitment(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        commitment_tx: &HolderCommitmentTransaction,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        self.inner
            .unsafe_sign_holder_commitment(channel_parameters, commitment_tx, secp_ctx)
    }

    fn sign_justice_revoked_output(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        justice_tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_key: &SecretKey,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        let point = PublicKey::from_secret_key(secp_ctx, per_commitment_key);
        let keys = Self::counterparty_keys(channel_parameters, &point, secp_ctx)?;
        let wscript = get_revokeable_redeemscript(
            &keys.revocation_key,
            channel_parameters.holder_selected_contest_delay,
            &keys.broadcaster_delayed_payment_key,
        );
        self.penalty(
            justice_tx,
            input,
            amount,
            per_commitment_key,
            wscript,
            secp_ctx,
        )
    }

    fn sign_justice_revoked_htlc(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        justice_tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_key: &SecretKey,
        htlc: &HTLCOutputInCommitment,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        let point = PublicKey::from_secret_key(secp_ctx, per_commitment_key);
        let keys = Self::counterparty_keys(channel_parameters, &point, secp_ctx)?;
        let wscript = get_htlc_redeemscript(htlc, &channel_parameters.channel_type_features, &keys);
        self.penalty(
            justice_tx,
            input,
            amount,
            per_commitment_key,
            wscript,
            secp_ctx,
        )
    }

    fn sign_holder_htlc_transaction(
        &self,
        htlc_tx: &Transaction,
        input: usize,
        htlc_descriptor: &HTLCDescriptor,
        _secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        // VLS's client passes LDK's commitment number (counting down from
        // INITIAL_COMMITMENT_NUMBER) where VLS expects its own (counting up), as its other
        // holder methods convert it; this sends the converted number.
        use vls_protocol::msgs::{DeBolt, SerBolt};
        unspliced(
            &htlc_descriptor
                .channel_derivation_parameters
                .transaction_parameters,
        )?;
        let htlc = &htlc_descriptor.htlc;
        let message = msgs::SignLocalHtlcTx2 {
            tx: WithSize(htlc_tx.clone()),
            input: u32::try_from(input).map_err(|_| ())?,
            per_commitment_number: Self::vls_number(htlc_descriptor.per_commitment_number)?,
            offered: htlc.offered,
            cltv_expiry: htlc.cltv_expiry,
            htlc_amount_msat: htlc.amount_msat,
            payment_hash: vls_protocol::model::Sha256(htlc.payment_hash.0),
        };
        let reply = self
            .link
            .call(self.dbid, PubKey(NO_PEER), message.as_vec())
            .map_err(|e| tracing::error!(error = ?e, "wardend did not sign an HTLC transaction"))?;
        Self::signature(msgs::SignTxReply::from_vec(reply).map_err(|_| ())?)
    }

    fn sign_counterparty_htlc_transaction(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        htlc_tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_point: &PublicKey,
        htlc: &HTLCOutputInCommitment,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        let keys = Self::counterparty_keys(channel_parameters, per_commitment_point, secp_ctx)?;
        let features = &channel_parameters.channel_type_features;
        let wscript = get_htlc_redeemscript(htlc, features, &keys);
        let (bare, psbt) = Self::sweep_psbt(htlc_tx, input, amount, &wscript, secp_ctx)?;
        let reply: msgs::SignTxReply = self
            .link
            .node_request(msgs::SignAnyRemoteHtlcToUs {
                remote_per_commitment_point: PubKey(per_commitment_point.serialize()),
                tx: WithSize(bare),
                psbt: WithSize(PsbtWrapper::from(psbt)),
                wscript: Octets(wscript.to_bytes()),
                option_anchors: features.supports_anchors_zero_fee_htlc_tx(),
                input: u32::try_from(input).map_err(|_| ())?,
                peer_id: PubKey(NO_PEER),
                dbid: self.dbid,
            })
            .map_err(|e| tracing::error!(error = %e, "wardend did not sign an HTLC claim"))?;
        Self::signature(reply)
    }

    fn sign_closing_transaction(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        closing_tx: &ClosingTransaction,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        self.inner
            .sign_closing_transaction(channel_parameters, closing_tx, secp_ctx)
    }

    fn sign_holder_keyed_anchor_input(
        &self,
        _channel_parameters: &ChannelTransactionParameters,
        _anchor_tx: &Transaction,
        _input: usize,
        _secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        // VLS signs an anchor spend only knowing every input's previous output, which LDK does
        // not hand a channel signer: anchor channels are not supported (README).
        tracing::error!(
            "an anchor input cannot be signed through Warden: anchor channels are not supported"
        );
        Err(())
    }

    fn sign_channel_announcement_with_funding_key(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        msg: &UnsignedChannelAnnouncement,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        unspliced(channel_parameters)?;
        self.inner
            .sign_channel_announcement_with_funding_key(channel_parameters, msg, secp_ctx)
    }

    fn sign_splice_shared_input(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        tx: &Transaction,
        input_index: usize,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Signature {
        // Unreachable while the splice's commitments are refused (unspliced); the trait cannot
        // fail, so if LDK ever asks, the answer is a signature no funding key verifies and the
        // splice transaction can never confirm.
        let _ = (channel_parameters, secp_ctx);
        tracing::error!(
            txid = %tx.compute_txid(),
            input_index,
            "a splice's shared input cannot be signed through Warden: the splice will not confirm"
        );
        Signature::from_compact(&UNVERIFIABLE).expect("r = s = 1 is a valid compact signature")
    }
}

/// VLS's `KeysManagerClient` with Warden's channel signer: hand this to LDK as its
/// `NodeSigner`, `SignerProvider`, `EntropySource` and `OutputSpender`.
pub struct WardenKeys {
    inner: vls_protocol_client::KeysManagerClient,
    link: LdkSignerLink,
    /// The last channel number drawn.
    last_channel: std::sync::atomic::AtomicU64,
}

impl WardenKeys {
    /// The keys of the node `link` reaches (as `KeysManagerClient::new` would build them).
    pub fn new(inner: vls_protocol_client::KeysManagerClient, link: LdkSignerLink) -> Self {
        WardenKeys {
            inner,
            link,
            last_channel: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The transaction spending `descriptors` (outputs of closed channels and of the wallet) to
    /// `outputs` and change, signed by wardend. What goes to the node's wallet needs no approval;
    /// any other output is an on-chain payment, decided by Warden's policy.
    fn sweep(
        &self,
        descriptors: &[&SpendableOutputDescriptor],
        outputs: Vec<TxOut>,
        change: ScriptBuf,
        feerate_sat_per_1000_weight: u32,
        locktime: Option<lightning_signer::bitcoin::absolute::LockTime>,
        secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Transaction, LdkError> {
        let mut tx = lightning_signer::util::transaction_utils::create_spending_transaction(
            descriptors,
            outputs,
            change,
            feerate_sat_per_1000_weight,
        )
        .map_err(|e| LdkError::Unsignable(format!("the outputs cannot be swept: {e}")))?;
        tx.lock_time = locktime.unwrap_or(lightning_signer::bitcoin::absolute::LockTime::ZERO);
        let mut psbt = Psbt::from_unsigned_tx(tx.clone())
            .map_err(|e| LdkError::Unsignable(format!("not an unsigned transaction: {e}")))?;
        for (input, d) in psbt.inputs.iter_mut().zip(descriptors) {
            input.witness_utxo = Some(spent_output(d).clone());
        }
        // Outputs to the node's wallet are its own; any other output is a payment.
        let wallet = lightning::sign::SignerProvider::get_destination_script(&self.inner, [0; 32])
            .map_err(|_| LdkError::Unsignable("the wallet's script is unknown".into()))?;
        for (out, txout) in psbt.outputs.iter_mut().zip(&tx.output) {
            if txout.script_pubkey == wallet {
                mark_wallet_output(out, secp);
            }
        }
        let utxos = descriptors.iter().map(|d| sweep_utxo(d)).collect();
        self.link.sign_withdrawal(&tx, psbt, utxos)
    }
}

/// Name the wallet path of an output paying to the sweep destination, so VLS recognises it as
/// the node's own (an output without a path is a payment Warden's policy must approve).
fn mark_wallet_output(
    output: &mut lightning_signer::bitcoin::psbt::Output,
    secp: &Secp256k1<secp256k1::All>,
) {
    // VLS reads only the path; the key beside it is not used.
    let any_key = PublicKey::from_secret_key(
        secp,
        &SecretKey::from_slice(&[1; 32]).expect("1 is a valid secret key"),
    );
    let path = DerivationPath::from(
        SWEEP_PATH
            .iter()
            .map(|i| lightning_signer::bitcoin::bip32::ChildNumber::Normal { index: *i })
            .collect::<Vec<_>>(),
    );
    output
        .bip32_derivation
        .insert(any_key, (Fingerprint::default(), path));
}

/// The channel an output of a closed channel came from, as VLS's LDK client names it.
fn close_info(channel_keys_id: &[u8; 32], point: Option<&PublicKey>, csv: u32) -> CloseInfo {
    CloseInfo {
        channel_id: ChannelId::new(channel_keys_id).oid(),
        peer_id: PubKey(NO_PEER),
        commitment_point: point.map(|p| PubKey(p.serialize())),
        is_anchors: false,
        csv,
    }
}

fn spent_output(d: &SpendableOutputDescriptor) -> &TxOut {
    match d {
        SpendableOutputDescriptor::StaticOutput { output, .. } => output,
        SpendableOutputDescriptor::DelayedPaymentOutput(o) => &o.output,
        SpendableOutputDescriptor::StaticPaymentOutput(o) => &o.output,
    }
}

/// Where VLS finds the key of an output LDK hands back, as VLS's client describes it: the
/// wallet's sweep path for an output to the wallet (a cooperative close), the channel and the
/// commitment point for this node's delayed output of its own commitment, the channel alone
/// for its output on the peer's commitment.
fn sweep_utxo(d: &SpendableOutputDescriptor) -> Utxo {
    let (outpoint, amount, keyindex, close_info) = match d {
        SpendableOutputDescriptor::StaticOutput {
            outpoint, output, ..
        } => (*outpoint, output.value, SWEEP_PATH[0], None),
        SpendableOutputDescriptor::DelayedPaymentOutput(o) => (
            o.outpoint,
            o.output.value,
            0,
            Some(close_info(
                &o.channel_keys_id,
                Some(&o.per_commitment_point),
                u32::from(o.to_self_delay),
            )),
        ),
        SpendableOutputDescriptor::StaticPaymentOutput(o) => (
            o.outpoint,
            o.output.value,
            0,
            Some(close_info(&o.channel_keys_id, None, 0)),
        ),
    };
    Utxo {
        txid: outpoint.txid,
        outnum: u32::from(outpoint.index),
        amount: amount.to_sat(),
        keyindex,
        is_p2sh: false,
        script: Octets::EMPTY,
        close_info,
        is_in_coinbase: false,
    }
}

impl lightning::sign::EntropySource for WardenKeys {
    fn get_secure_random_bytes(&self) -> [u8; 32] {
        // LDK draws these for onion session keys, nonces and ids, all of which the node may
        // know: the operating system's generator serves as well as wardend's, without a round
        // trip (and a commit) per draw, and cannot leave LDK without an answer.
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("the OS random number generator works");
        bytes
    }
}

impl lightning::sign::NodeSigner for WardenKeys {
    fn get_expanded_key(&self) -> lightning::ln::inbound_payment::ExpandedKey {
        self.inner.get_expanded_key()
    }

    fn get_peer_storage_key(&self) -> lightning::sign::PeerStorageKey {
        self.inner.get_peer_storage_key()
    }

    fn get_receive_auth_key(&self) -> lightning::sign::ReceiveAuthKey {
        self.inner.get_receive_auth_key()
    }

    fn get_node_id(&self, recipient: lightning::sign::Recipient) -> Result<PublicKey, ()> {
        match recipient {
            lightning::sign::Recipient::Node => self.inner.get_node_id(recipient),
            // Phantom nodes are not supported: an error, not VLS's panic.
            lightning::sign::Recipient::PhantomNode => Err(()),
        }
    }

    fn ecdh(
        &self,
        recipient: lightning::sign::Recipient,
        other_key: &PublicKey,
        tweak: Option<&secp256k1::Scalar>,
    ) -> Result<secp256k1::ecdh::SharedSecret, ()> {
        if matches!(recipient, lightning::sign::Recipient::PhantomNode) || tweak.is_some() {
            return Err(());
        }
        let reply: msgs::EcdhReply = self
            .link
            .node_request(msgs::Ecdh {
                point: PubKey(other_key.serialize()),
            })
            .map_err(|_| ())?;
        Ok(secp256k1::ecdh::SharedSecret::from_bytes(reply.secret.0))
    }

    fn sign_invoice(
        &self,
        invoice: &lightning_signer::lightning_invoice::RawBolt11Invoice,
        recipient: lightning::sign::Recipient,
    ) -> Result<secp256k1::ecdsa::RecoverableSignature, ()> {
        if matches!(recipient, lightning::sign::Recipient::PhantomNode) {
            return Err(());
        }
        let (hrp, data) = invoice.to_raw();
        let reply: msgs::SignInvoiceReply = self
            .link
            .node_request(msgs::SignInvoice {
                u5bytes: Octets(data.iter().map(|u| u.to_u8()).collect()),
                hrp: Octets(hrp.into_bytes()),
            })
            .map_err(|e| tracing::error!(error = %e, "wardend did not sign the invoice"))?;
        let id = secp256k1::ecdsa::RecoveryId::from_i32(i32::from(reply.signature.0[64]))
            .map_err(|_| ())?;
        secp256k1::ecdsa::RecoverableSignature::from_compact(&reply.signature.0[..64], id)
            .map_err(|_| ())
    }

    fn sign_bolt12_invoice(
        &self,
        invoice: &lightning::offers::invoice::UnsignedBolt12Invoice,
    ) -> Result<secp256k1::schnorr::Signature, ()> {
        use lightning::util::ser::Writeable;
        let reply: msgs::SignBolt12InvoiceReply = self
            .link
            .node_request(msgs::SignBolt12Invoice {
                invoice_bytes: Octets(invoice.encode()),
            })
            .map_err(|e| tracing::error!(error = %e, "wardend did not sign the BOLT 12 invoice"))?;
        secp256k1::schnorr::Signature::from_slice(&reply.signature.0).map_err(|_| ())
    }

    fn sign_gossip_message(
        &self,
        msg: lightning::ln::msgs::UnsignedGossipMessage,
    ) -> Result<Signature, ()> {
        use lightning::util::ser::Writeable;
        let reply: msgs::SignGossipMessageReply = self
            .link
            .node_request(msgs::SignGossipMessage {
                message: Octets(msg.encode()),
            })
            .map_err(|e| tracing::error!(error = %e, "wardend did not sign the gossip message"))?;
        Signature::from_compact(&reply.signature.0).map_err(|_| ())
    }

    fn sign_message(&self, msg: &[u8]) -> Result<String, ()> {
        self.inner.sign_message(msg)
    }
}

impl lightning::sign::SignerProvider for WardenKeys {
    type EcdsaSigner = WardenChannelSigner;

    fn generate_channel_keys_id(&self, _inbound: bool, _user_channel_id: u128) -> [u8; 32] {
        // VLS's client numbers channels from 1 in each process, so an LDK node that restarts
        // would give its next channel the number of one wardend already holds. VLS wants the
        // numbers to grow (it refuses one at or below a channel it has forgotten), so they are
        // the wall clock in microseconds, one more than the last if the clock has not moved:
        // they grow across restarts without state on the node, unless the clock is set back
        // past the previous run's last channel.
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 1))
            .unwrap_or(0);
        let oid =
            match self
                .last_channel
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                    Some(now.max(last + 1))
                }) {
                Ok(last) | Err(last) => now.max(last + 1),
            };
        ChannelId::new_from_oid(oid).ldk_channel_keys_id()
    }

    fn derive_channel_signer(&self, channel_keys_id: [u8; 32]) -> Self::EcdsaSigner {
        WardenChannelSigner::new(
            self.inner.derive_channel_signer(channel_keys_id),
            self.link.clone(),
        )
    }

    fn get_destination_script(&self, channel_keys_id: [u8; 32]) -> Result<ScriptBuf, ()> {
        self.inner.get_destination_script(channel_keys_id)
    }

    fn get_shutdown_scriptpubkey(&self) -> Result<lightning::ln::script::ShutdownScript, ()> {
        self.inner.get_shutdown_scriptpubkey()
    }
}

impl lightning::sign::OutputSpender for WardenKeys {
    fn spend_spendable_outputs(
        &self,
        descriptors: &[&lightning::sign::SpendableOutputDescriptor],
        outputs: Vec<TxOut>,
        change_destination_script: ScriptBuf,
        feerate_sat_per_1000_weight: u32,
        locktime: Option<lightning_signer::bitcoin::absolute::LockTime>,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Transaction, ()> {
        self.sweep(
            descriptors,
            outputs,
            change_destination_script,
            feerate_sat_per_1000_weight,
            locktime,
            secp_ctx,
        )
        .map_err(|e| tracing::error!(error = %e, "the channel outputs were not swept"))
    }
}
