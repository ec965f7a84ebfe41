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
//! What cannot be served returns LDK's error (LDK retries it on later blocks), never a panic:
//! the holder's anchor input (VLS's `SignAnchorspend` needs the previous output of every input
//! of the anchor transaction, which LDK does not give a channel signer), so anchor channels are
//! not supported.

use super::LdkSignerLink;
use lightning::ln::chan_utils::{
    get_htlc_redeemscript, get_revokeable_redeemscript, ChannelPublicKeys,
    ChannelTransactionParameters, ClosingTransaction, CommitmentTransaction,
    HTLCOutputInCommitment, HolderCommitmentTransaction, TxCreationKeys,
};
use lightning::ln::msgs::UnsignedChannelAnnouncement;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{ChannelSigner, HTLCDescriptor};
use lightning::types::payment::PaymentPreimage;
use lightning_signer::bitcoin::bip32::{DerivationPath, Fingerprint};
use lightning_signer::bitcoin::psbt::Psbt;
use lightning_signer::bitcoin::secp256k1::ecdsa::Signature;
use lightning_signer::bitcoin::secp256k1::{self, PublicKey, Secp256k1, SecretKey};
use lightning_signer::bitcoin::{Amount, ScriptBuf, Transaction, TxOut, Txid, Witness};
use lightning_signer::channel::ChannelId;
use lightning_signer::lightning;
use vls_protocol::model::{DisclosedSecret, PubKey};
use vls_protocol::msgs;
use vls_protocol::psbt::PsbtWrapper;
use vls_protocol::serde_bolt::{Octets, WithSize};
use vls_protocol_client::SignerClient;

/// VLS's LDK client names every channel with a zero peer id and the channel's number.
const NO_PEER: [u8; 33] = [0; 33];

/// The wallet path LDK's sweeps pay to (`KeysManagerClient::get_destination_script`: child 1
/// of the wallet key). VLS reads the path from the PSBT's first output and checks the output
/// pays to it.
const SWEEP_PATH: [u32; 1] = [1];

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
        // VLS reads only the path; the key beside it is not used.
        let any_key =
            PublicKey::from_secret_key(secp, &SecretKey::from_slice(&[1; 32]).map_err(|_| ())?);
        let path = DerivationPath::from(
            SWEEP_PATH
                .iter()
                .map(|i| lightning_signer::bitcoin::bip32::ChildNumber::Normal { index: *i })
                .collect::<Vec<_>>(),
        );
        psbt.outputs
            .first_mut()
            .ok_or(())?
            .bip32_derivation
            .insert(any_key, (Fingerprint::default(), path));
        Ok((bare, psbt))
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
        self.inner.get_per_commitment_point(idx, secp_ctx)
    }

    fn release_commitment_secret(&self, idx: u64) -> Result<[u8; 32], ()> {
        self.inner.release_commitment_secret(idx)
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
        // Splicing: LDK asks only for a channel it splices, which Warden's LDK nodes do not
        // (README). VLS 1.0.0-rc.1 does not support it.
        self.inner
            .new_funding_pubkey(splice_parent_funding_txid, secp_ctx)
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
        self.inner
            .sign_holder_commitment(channel_parameters, commitment_tx, secp_ctx)
    }

    fn unsafe_sign_holder_commitment(
        &self,
        channel_parameters: &ChannelTransactionParameters,
        commitment_tx: &HolderCommitmentTransaction,
        secp_ctx: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
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
        use vls_protocol_client::Transport;
        let htlc = &htlc_descriptor.htlc;
        let message = msgs::SignLocalHtlcTx2 {
            tx: WithSize(htlc_tx.clone()),
            input: u32::try_from(input).map_err(|_| ())?,
            per_commitment_number: lightning_signer::util::INITIAL_COMMITMENT_NUMBER
                .checked_sub(htlc_descriptor.per_commitment_number)
                .ok_or(())?,
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
        // Splicing: see new_funding_pubkey.
        self.inner
            .sign_splice_shared_input(channel_parameters, tx, input_index, secp_ctx)
    }
}

/// VLS's `KeysManagerClient` with Warden's channel signer: hand this to LDK as its
/// `NodeSigner`, `SignerProvider`, `EntropySource` and `OutputSpender`.
pub struct WardenKeys {
    inner: vls_protocol_client::KeysManagerClient,
    link: LdkSignerLink,
}

impl WardenKeys {
    /// The keys of the node `link` reaches (as `KeysManagerClient::new` would build them).
    pub fn new(inner: vls_protocol_client::KeysManagerClient, link: LdkSignerLink) -> Self {
        WardenKeys { inner, link }
    }
}

impl lightning::sign::EntropySource for WardenKeys {
    fn get_secure_random_bytes(&self) -> [u8; 32] {
        self.inner.get_secure_random_bytes()
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
        self.inner.sign_invoice(invoice, recipient)
    }

    fn sign_bolt12_invoice(
        &self,
        invoice: &lightning::offers::invoice::UnsignedBolt12Invoice,
    ) -> Result<secp256k1::schnorr::Signature, ()> {
        self.inner.sign_bolt12_invoice(invoice)
    }

    fn sign_gossip_message(
        &self,
        msg: lightning::ln::msgs::UnsignedGossipMessage,
    ) -> Result<Signature, ()> {
        self.inner.sign_gossip_message(msg)
    }

    fn sign_message(&self, msg: &[u8]) -> Result<String, ()> {
        self.inner.sign_message(msg)
    }
}

impl lightning::sign::SignerProvider for WardenKeys {
    type EcdsaSigner = WardenChannelSigner;

    fn generate_channel_keys_id(&self, inbound: bool, user_channel_id: u128) -> [u8; 32] {
        self.inner
            .generate_channel_keys_id(inbound, user_channel_id)
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
        self.inner.spend_spendable_outputs(
            descriptors,
            outputs,
            change_destination_script,
            feerate_sat_per_1000_weight,
            locktime,
            secp_ctx,
        )
    }
}
