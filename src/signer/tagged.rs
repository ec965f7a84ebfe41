//! VLS's validator, with every refusal's rule tag kept in its text.
//!
//! VLS's validation errors carry their tag (`policy-sweep-fee-range`, …) as a field, but the
//! handler turns them into a status message that keeps only the sentence, so by the time a
//! refusal reaches the stream the rule that made it is gone. Wrapping the validator puts the tag
//! at the front of the sentence, where the stream finds it for the log line and the event: an
//! operator reads which of VLS's rules refused, not a generic `warden-vls-refused`. Every method
//! delegates to VLS's own validator; nothing is decided here.

use lightning_signer::bitcoin::bip32::DerivationPath;
use lightning_signer::bitcoin::block::Header as BlockHeader;
use lightning_signer::bitcoin::hash_types::FilterHeader;
use lightning_signer::bitcoin::secp256k1::{PublicKey, SecretKey};
use lightning_signer::bitcoin::sighash::{EcdsaSighashType, SegwitV0Sighash};
use lightning_signer::bitcoin::{BlockHash, Network, OutPoint, ScriptBuf, Transaction};
use lightning_signer::channel::{ChannelId, ChannelSetup, ChannelSlot};
use lightning_signer::invoice::Invoice;
use lightning_signer::lightning::ln::chan_utils::{
    ClosingTransaction, HTLCOutputInCommitment, TxCreationKeys,
};
use lightning_signer::lightning::offers::invoice::UnsignedBolt12Invoice;
use lightning_signer::policy::error::ValidationError;
use lightning_signer::policy::filter::PolicyFilter;
use lightning_signer::policy::onchain_validator::{OnchainPolicy, OnchainValidatorFactory};
use lightning_signer::policy::simple_validator::{SimplePolicy, SimpleValidatorFactory};
use lightning_signer::policy::validator::{
    ChainState, CommitmentSignatures, EnforcementState, Validator, ValidatorFactory,
};
use lightning_signer::policy::Policy;
use lightning_signer::signer::vls_channel_signer::VlsChannelSigner;
use lightning_signer::tx::tx::{CommitmentInfo, CommitmentInfo2};
use lightning_signer::txoo::proof::TxoProof;
use lightning_signer::util::velocity::VelocityControlSpec;
use lightning_signer::wallet::Wallet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Makes [`Tagged`] validators around the validators VLS's on-chain validator factory makes.
pub struct TaggedFactory {
    inner: Arc<dyn ValidatorFactory>,
    filter: PolicyFilter,
}

impl TaggedFactory {
    /// Around `OnchainValidatorFactory::new_with_simple_factory` of `policy`, as VLS builds it.
    pub fn new(policy: SimplePolicy) -> Self {
        let filter = policy.filter.clone();
        TaggedFactory {
            inner: Arc::new(OnchainValidatorFactory::new_with_simple_factory(
                SimpleValidatorFactory::new_with_policy(policy),
            )),
            filter,
        }
    }
}

impl ValidatorFactory for TaggedFactory {
    fn make_validator(
        &self,
        network: Network,
        node_id: PublicKey,
        channel_id: Option<ChannelId>,
    ) -> Arc<dyn Validator> {
        // VLS's trait hands out `Arc<dyn Validator>` (its own factories do the same); a
        // validator is not shared across threads.
        #[allow(clippy::arc_with_non_send_sync)]
        Arc::new(Tagged {
            inner: self.inner.make_validator(network, node_id, channel_id),
            policy: TaggedPolicy(OnchainPolicy {
                filter: self.filter.clone(),
                min_funding_depth: ONCHAIN_MIN_FUNDING_DEPTH,
            }),
        })
    }

    fn policy(&self, network: Network) -> Box<dyn Policy> {
        self.inner.policy(network)
    }
}

/// VLS's validator; its refusals name their tag in their text.
struct Tagged {
    inner: Arc<dyn Validator>,
    policy: TaggedPolicy,
}

/// What VLS's `OnchainValidatorFactory` gives its validators' policy (`make_onchain_policy`).
const ONCHAIN_MIN_FUNDING_DEPTH: u16 = 1;

/// The validator's own policy, whose errors name their tag too: VLS raises some refusals through
/// it directly (the unbalanced-payments check of a commitment, `policy-commitment-htlc-routing-
/// balance`, is one), not through a validator method. VLS's on-chain validator keeps its policy
/// private and a validator cannot be shared across threads, so this is the same policy built the
/// same way (the filter and depth `OnchainValidatorFactory` gives it); a test checks that it
/// answers as the wrapped validator's does.
struct TaggedPolicy(OnchainPolicy);

impl Policy for TaggedPolicy {
    fn policy_error(&self, tag: String, msg: String) -> Result<(), ValidationError> {
        self.0.policy_error(tag, msg).map_err(tagged)
    }

    fn temporary_policy_error(&self, tag: String, msg: String) -> Result<(), ValidationError> {
        self.0.temporary_policy_error(tag, msg).map_err(tagged)
    }

    fn policy_log(&self, tag: String, msg: String) {
        self.0.policy_log(tag, msg)
    }

    fn global_velocity_control(&self) -> VelocityControlSpec {
        self.0.global_velocity_control()
    }

    fn max_channels(&self) -> usize {
        self.0.max_channels()
    }

    fn max_invoices(&self) -> usize {
        self.0.max_invoices()
    }

    fn fee_velocity_control(&self) -> VelocityControlSpec {
        self.0.fee_velocity_control()
    }
}

/// `e` with its tag at the front of its sentence (once).
fn tagged(e: ValidationError) -> ValidationError {
    let text: String = e.clone().into();
    if e.tag.is_empty() || text.contains(&e.tag) {
        return e;
    }
    let tag = e.tag.clone();
    e.prepend_msg(format!("{tag}: "))
}

impl Validator for Tagged {
    fn validate_setup_channel(
        &self,
        wallet: &dyn Wallet,
        setup: &ChannelSetup,
        holder_shutdown_key_path: &DerivationPath,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_setup_channel(wallet, setup, holder_shutdown_key_path)
            .map_err(tagged)
    }

    fn validate_channel_value(&self, setup: &ChannelSetup) -> Result<(), ValidationError> {
        self.inner.validate_channel_value(setup).map_err(tagged)
    }

    fn validate_onchain_tx(
        &self,
        wallet: &dyn Wallet,
        channels: Vec<Option<Arc<Mutex<ChannelSlot>>>>,
        tx: &Transaction,
        segwit_flags: &[bool],
        values_sat: &[u64],
        opaths: &[DerivationPath],
        weight_lower_bound: usize,
    ) -> Result<u64, ValidationError> {
        self.inner
            .validate_onchain_tx(
                wallet,
                channels,
                tx,
                segwit_flags,
                values_sat,
                opaths,
                weight_lower_bound,
            )
            .map_err(tagged)
    }

    fn decode_commitment_tx(
        &self,
        keys: &VlsChannelSigner,
        setup: &ChannelSetup,
        is_counterparty: bool,
        tx: &Transaction,
        output_witscripts: &[Vec<u8>],
    ) -> Result<CommitmentInfo, ValidationError> {
        self.inner
            .decode_commitment_tx(keys, setup, is_counterparty, tx, output_witscripts)
            .map_err(tagged)
    }

    fn validate_counterparty_commitment_tx(
        &self,
        estate: &EnforcementState,
        commit_num: u64,
        commitment_point: &PublicKey,
        setup: &ChannelSetup,
        cstate: &ChainState,
        info2: &CommitmentInfo2,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_counterparty_commitment_tx(
                estate,
                commit_num,
                commitment_point,
                setup,
                cstate,
                info2,
            )
            .map_err(tagged)
    }

    fn validate_holder_commitment_tx(
        &self,
        estate: &EnforcementState,
        commit_num: u64,
        commitment_point: &PublicKey,
        setup: &ChannelSetup,
        cstate: &ChainState,
        info2: &CommitmentInfo2,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_holder_commitment_tx(
                estate,
                commit_num,
                commitment_point,
                setup,
                cstate,
                info2,
            )
            .map_err(tagged)
    }

    fn validate_counterparty_revocation(
        &self,
        state: &EnforcementState,
        revoke_num: u64,
        commitment_secret: &SecretKey,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_counterparty_revocation(state, revoke_num, commitment_secret)
            .map_err(tagged)
    }

    fn decode_and_validate_htlc_tx(
        &self,
        is_counterparty: bool,
        setup: &ChannelSetup,
        txkeys: &TxCreationKeys,
        tx: &Transaction,
        redeemscript: &ScriptBuf,
        htlc_amount_sat: u64,
        output_witscript: &ScriptBuf,
    ) -> Result<
        (
            u32,
            HTLCOutputInCommitment,
            SegwitV0Sighash,
            EcdsaSighashType,
        ),
        ValidationError,
    > {
        self.inner
            .decode_and_validate_htlc_tx(
                is_counterparty,
                setup,
                txkeys,
                tx,
                redeemscript,
                htlc_amount_sat,
                output_witscript,
            )
            .map_err(tagged)
    }

    fn validate_htlc_tx(
        &self,
        setup: &ChannelSetup,
        cstate: &ChainState,
        is_counterparty: bool,
        htlc: &HTLCOutputInCommitment,
        feerate_per_kw: u32,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_htlc_tx(setup, cstate, is_counterparty, htlc, feerate_per_kw)
            .map_err(tagged)
    }

    fn decode_and_validate_mutual_close_tx(
        &self,
        wallet: &dyn Wallet,
        setup: &ChannelSetup,
        state: &EnforcementState,
        tx: &Transaction,
        opaths: &[DerivationPath],
    ) -> Result<ClosingTransaction, ValidationError> {
        self.inner
            .decode_and_validate_mutual_close_tx(wallet, setup, state, tx, opaths)
            .map_err(tagged)
    }

    fn validate_mutual_close_tx(
        &self,
        wallet: &dyn Wallet,
        setup: &ChannelSetup,
        state: &EnforcementState,
        to_holder_value_sat: u64,
        to_counterparty_value_sat: u64,
        holder_shutdown_script: &Option<ScriptBuf>,
        counterparty_shutdown_script: &Option<ScriptBuf>,
        holder_wallet_path_hint: &DerivationPath,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_mutual_close_tx(
                wallet,
                setup,
                state,
                to_holder_value_sat,
                to_counterparty_value_sat,
                holder_shutdown_script,
                counterparty_shutdown_script,
                holder_wallet_path_hint,
            )
            .map_err(tagged)
    }

    fn validate_delayed_sweep(
        &self,
        wallet: &dyn Wallet,
        setup: &ChannelSetup,
        cstate: &ChainState,
        tx: &Transaction,
        input: usize,
        amount_sat: u64,
        key_path: &DerivationPath,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_delayed_sweep(wallet, setup, cstate, tx, input, amount_sat, key_path)
            .map_err(tagged)
    }

    fn validate_counterparty_htlc_sweep(
        &self,
        wallet: &dyn Wallet,
        setup: &ChannelSetup,
        cstate: &ChainState,
        tx: &Transaction,
        redeemscript: &ScriptBuf,
        input: usize,
        amount_sat: u64,
        key_path: &DerivationPath,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_counterparty_htlc_sweep(
                wallet,
                setup,
                cstate,
                tx,
                redeemscript,
                input,
                amount_sat,
                key_path,
            )
            .map_err(tagged)
    }

    fn validate_justice_sweep(
        &self,
        wallet: &dyn Wallet,
        setup: &ChannelSetup,
        cstate: &ChainState,
        tx: &Transaction,
        input: usize,
        amount_sat: u64,
        key_path: &DerivationPath,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_justice_sweep(wallet, setup, cstate, tx, input, amount_sat, key_path)
            .map_err(tagged)
    }

    fn validate_payment_balance(
        &self,
        incoming_msat: u64,
        outgoing_msat: u64,
        invoiced_amount_msat: Option<u64>,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_payment_balance(incoming_msat, outgoing_msat, invoiced_amount_msat)
            .map_err(tagged)
    }

    fn validate_payment_cltv(
        &self,
        incoming_cltv: u32,
        outgoing_cltv: u32,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_payment_cltv(incoming_cltv, outgoing_cltv)
            .map_err(tagged)
    }

    fn enforce_balance(&self) -> bool {
        self.inner.enforce_balance()
    }

    fn minimum_initial_balance(&self, holder_value_msat: u64) -> u64 {
        self.inner.minimum_initial_balance(holder_value_msat)
    }

    fn is_ready(&self, cstate: &ChainState) -> bool {
        self.inner.is_ready(cstate)
    }

    fn policy(&self) -> Box<&dyn Policy> {
        Box::new(&self.policy)
    }

    fn set_next_holder_commit_num(
        &self,
        estate: &mut EnforcementState,
        num: u64,
        current_commitment_info: CommitmentInfo2,
        counterparty_signatures: CommitmentSignatures,
    ) -> Result<(), ValidationError> {
        self.inner
            .set_next_holder_commit_num(
                estate,
                num,
                current_commitment_info,
                counterparty_signatures,
            )
            .map_err(tagged)
    }

    fn get_current_holder_commitment_info(
        &self,
        estate: &mut EnforcementState,
        commitment_number: u64,
    ) -> Result<CommitmentInfo2, ValidationError> {
        self.inner
            .get_current_holder_commitment_info(estate, commitment_number)
            .map_err(tagged)
    }

    fn set_next_counterparty_commit_num(
        &self,
        estate: &mut EnforcementState,
        num: u64,
        current_point: PublicKey,
        current_commitment_info: CommitmentInfo2,
    ) -> Result<(), ValidationError> {
        self.inner
            .set_next_counterparty_commit_num(estate, num, current_point, current_commitment_info)
            .map_err(tagged)
    }

    fn set_next_counterparty_revoke_num(
        &self,
        estate: &mut EnforcementState,
        num: u64,
    ) -> Result<(), ValidationError> {
        self.inner
            .set_next_counterparty_revoke_num(estate, num)
            .map_err(tagged)
    }

    fn validate_block(
        &self,
        proof: &TxoProof,
        height: u32,
        header: &BlockHeader,
        external_block_hash: Option<&BlockHash>,
        prev_filter_header: &FilterHeader,
        outpoint_watches: &[OutPoint],
        trusted_oracle_pubkeys: &Vec<PublicKey>,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_block(
                proof,
                height,
                header,
                external_block_hash,
                prev_filter_header,
                outpoint_watches,
                trusted_oracle_pubkeys,
            )
            .map_err(tagged)
    }

    fn validate_invoice(&self, invoice: &Invoice, now: Duration) -> Result<(), ValidationError> {
        self.inner.validate_invoice(invoice, now).map_err(tagged)
    }

    fn validate_bolt12_invoice_unsigned(
        &self,
        invoice: &UnsignedBolt12Invoice,
        now: Duration,
        bolt12_pubkey: PublicKey,
    ) -> Result<(), ValidationError> {
        self.inner
            .validate_bolt12_invoice_unsigned(invoice, now, bolt12_pubkey)
            .map_err(tagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::policy::simple_validator::make_default_simple_policy;

    fn validators() -> (Arc<dyn Validator>, Arc<dyn Validator>) {
        let mut policy = make_default_simple_policy(Network::Regtest);
        policy.filter = PolicyFilter::new_permissive();
        let key = PublicKey::from_slice(&warden_testkit::test_key(1, 0)).unwrap();
        let vls = OnchainValidatorFactory::new_with_simple_factory(
            SimpleValidatorFactory::new_with_policy(policy.clone()),
        )
        .make_validator(Network::Regtest, key, None);
        let ours = TaggedFactory::new(policy).make_validator(Network::Regtest, key, None);
        (vls, ours)
    }

    /// The wrapper's policy answers as VLS's on-chain validator's does.
    #[test]
    fn the_policy_is_the_one_vls_gives_its_validator() {
        let (vls, ours) = validators();
        let (a, b) = (vls.policy(), ours.policy());
        assert_eq!(
            format!("{:?}", a.global_velocity_control()),
            format!("{:?}", b.global_velocity_control())
        );
        assert_eq!(
            format!("{:?}", a.fee_velocity_control()),
            format!("{:?}", b.fee_velocity_control())
        );
        assert_eq!(a.max_channels(), b.max_channels());
        assert_eq!(a.max_invoices(), b.max_invoices());
        // The permissive filter turns every error into a warning, in both.
        for tag in ["policy-commitment-htlc-routing-balance", "policy-other"] {
            assert!(a.policy_error(tag.into(), "m".into()).is_ok());
            assert!(b.policy_error(tag.into(), "m".into()).is_ok());
        }
    }

    /// A refusal raised through the policy itself (as VLS's payment balance check does).
    #[test]
    fn a_refusal_through_the_policy_names_its_tag() {
        let key = PublicKey::from_slice(&warden_testkit::test_key(1, 0)).unwrap();
        let v = TaggedFactory::new(make_default_simple_policy(Network::Regtest)).make_validator(
            Network::Regtest,
            key,
            None,
        );
        let text: String = v
            .policy()
            .policy_error(
                "policy-commitment-htlc-routing-balance".into(),
                "unbalanced payments".into(),
            )
            .unwrap_err()
            .into();
        assert_eq!(
            text,
            "policy failure: policy-commitment-htlc-routing-balance: unbalanced payments"
        );
    }

    /// A refusal made by VLS's own validator (its CLTV rule), through the wrapper.
    #[test]
    fn a_refusal_names_its_tag_once() {
        let key = PublicKey::from_slice(&warden_testkit::test_key(1, 0)).unwrap();
        let v = TaggedFactory::new(make_default_simple_policy(Network::Regtest)).make_validator(
            Network::Regtest,
            key,
            None,
        );
        let text: String = v.validate_payment_cltv(100, 200).unwrap_err().into();
        assert!(
            text.starts_with("policy failure: policy-routing-cltv-delta: "),
            "{text}"
        );
        let again: String = tagged(v.validate_payment_cltv(100, 200).unwrap_err()).into();
        assert_eq!(
            again.matches("policy-routing-cltv-delta").count(),
            1,
            "{again}"
        );
    }
}
