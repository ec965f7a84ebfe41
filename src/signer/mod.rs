//! The signer: a VLS node built from the HSM-unsealed seed, gated by Warden's approver, serving
//! the node through the hsmd gRPC stream.
//!
//! VLS's Lightning validation is always on: the validator is built here, from VLS's enforcing
//! default policy, with no switch (environment or configuration) that makes it permissive.
//! Warden changes only two VLS settings: the invoice capacity (`max_invoices`, so enterprise
//! volume fits) and VLS's own node-wide velocity control, which is left unlimited because
//! Warden's policy owns limits.

pub mod approver;
pub mod channels;
pub mod extension;
pub mod fee;
pub mod node_persist;
pub mod persist;
pub mod replies;
pub mod stream;
mod tagged;

use crate::core::Core;
use crate::hsm::NodeSeed;
use approver::WardenApprover;
use lightning_signer::bitcoin::secp256k1::{PublicKey, Secp256k1};
use lightning_signer::bitcoin::Network;
use lightning_signer::node::NodeServices;
use lightning_signer::persist::Persist;
use lightning_signer::policy::simple_validator::{make_simple_policy, OptionizedSimplePolicy};
use lightning_signer::policy::validator::ValidatorFactory;
use lightning_signer::signer::derive::{key_derive, KeyDerivationStyle};
use lightning_signer::signer::ClockStartingTimeFactory;
use lightning_signer::util::clock::StandardClock;
use lightning_signer::util::velocity::VelocityControlSpec;
use std::sync::Arc;
use vls_protocol_signer::handler::{HandlerBuilder, InitHandler};
use zeroize::Zeroize;

/// The Lightning node id that a seed gives on `network`, CLN-style.
pub fn node_id(seed: &NodeSeed, network: Network) -> PublicKey {
    let secp = Secp256k1::new();
    let (node_id, secret) =
        key_derive(KeyDerivationStyle::Native, network).node_keys(seed.as_slice(), &secp);
    let mut secret = secret;
    secret.non_secure_erase();
    node_id
}

/// Settings of the VLS node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerSettings {
    /// Bitcoin network.
    pub network: Network,
    /// Live invoices VLS may hold (VLS's own default is 1,000).
    pub max_invoices: usize,
}

/// VLS policy filter rules from the configuration, merged after VLS's defaults.
pub fn vls_filter(
    rules: &[crate::config::VlsFilter],
) -> lightning_signer::policy::filter::PolicyFilter {
    use lightning_signer::policy::filter::{FilterResult, FilterRule, PolicyFilter};
    PolicyFilter {
        rules: rules
            .iter()
            .map(|r| FilterRule {
                tag: r.tag.clone(),
                is_prefix: r.prefix,
                action: if r.warn {
                    FilterResult::Warn
                } else {
                    FilterResult::Error
                },
            })
            .collect(),
    }
}

/// Why the signer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The VLS state database failed.
    #[error("the VLS state database failed: {0}")]
    Persist(String),
    /// VLS refused to build or restore the node.
    #[error("VLS could not build the node: {0}")]
    Build(String),
    /// The sealed seed is not the one this state database was created with.
    #[error("the sealed seed (seed id {found}) is not the seed this state database was created with (seed id {stored}): the seed file was replaced, or the data directory belongs to another instance. Restore this instance's node-seed.sealed; Warden will not sign over another seed's state")]
    OtherSeed {
        /// Seed id recorded in the state.
        stored: String,
        /// Seed id of the blob found.
        found: String,
    },
    /// The stored node is not the one the sealed seed gives.
    #[error("the VLS state in the data directory belongs to node {stored}, but the sealed seed gives node {expected}; point data_dir at this seed's state")]
    WrongNode {
        /// Node id in the state.
        stored: String,
        /// Node id from the seed.
        expected: String,
    },
}

/// The Meta key under which the state database records the seed id it was created with.
const SEED_ID_KEY: &[u8] = b"seed-id";

/// Tie this state database to the sealed seed's id: recorded on the first start, compared on
/// every later one. A blob swapped in from another instance (same token, same key) would
/// otherwise open fine and sign over state that is not its own.
pub fn bind_seed(
    store: &crate::store::Store,
    binding: &crate::hsm::SeedBinding,
) -> Result<(), SignerError> {
    use crate::store::Namespace;
    let persist = |e: crate::store::StoreError| SignerError::Persist(e.to_string());
    match store.get(Namespace::Meta, SEED_ID_KEY).map_err(persist)? {
        None => store
            .write(|| {
                store.put(
                    Namespace::Meta,
                    SEED_ID_KEY.to_vec(),
                    binding.seed_id.to_vec(),
                )
            })
            .map_err(persist),
        Some(stored) if stored == binding.seed_id => Ok(()),
        Some(stored) => Err(SignerError::OtherSeed {
            stored: hex::encode(stored),
            found: binding.seed_id_hex(),
        }),
    }
}

/// The lowest feerate VLS accepts (sat/kw), below its default of 253: Core Lightning builds
/// slow sweeps of a force close at its 253 sat/kw floor over the signed weight, while VLS
/// 1.0.0-rc.1 estimates a sweep's signed weight as the unsigned weight plus 220 (a to_local
/// witness weighs about 157), and so reads such a sweep as paying about 224 sat/kw and refuses
/// it, fatally for the node. 200 covers that estimation error with room for lightningd's
/// rounding; VLS's upper bounds (feerate, and the fee velocity) are unchanged.
pub const VLS_MIN_FEERATE_PER_KW: u32 = 200;

/// VLS's policy as Warden configures it: VLS's defaults for the network, Warden's invoice
/// capacity, no velocity limit of VLS's own (Warden's policy owns the limits), the filters the
/// operator named, and [`VLS_MIN_FEERATE_PER_KW`].
fn vls_policy(
    settings: SignerSettings,
    filter: &lightning_signer::policy::filter::PolicyFilter,
) -> lightning_signer::policy::simple_validator::SimplePolicy {
    let mut policy = make_simple_policy(settings.network, OptionizedSimplePolicy::default());
    policy.max_invoices = settings.max_invoices;
    policy.filter.merge(filter.clone());
    policy.global_velocity_control = VelocityControlSpec::UNLIMITED;
    policy.min_feerate_per_kw = VLS_MIN_FEERATE_PER_KW;
    policy
}

/// Build (or restore) the VLS node and its init handler. The seed is copied into VLS, which
/// keeps it for the life of the node; Warden's own copy is wiped here.
pub fn build_handler(
    core: Arc<Core>,
    seed: &NodeSeed,
    store: &crate::store::Store,
    settings: SignerSettings,
    filter: &lightning_signer::policy::filter::PolicyFilter,
) -> Result<InitHandler, SignerError> {
    build_handler_on_clock(
        core,
        seed,
        store,
        settings,
        filter,
        Arc::new(StandardClock()),
    )
}

/// [`build_handler`] with VLS reading `clock` (invoice expiry, pruning), so a simulation can run
/// VLS and Warden on one simulated time; wardend runs VLS on the system clock.
pub fn build_handler_on_clock(
    core: Arc<Core>,
    seed: &NodeSeed,
    store: &crate::store::Store,
    settings: SignerSettings,
    filter: &lightning_signer::policy::filter::PolicyFilter,
    clock: Arc<dyn lightning_signer::util::clock::Clock>,
) -> Result<InitHandler, SignerError> {
    let store =
        persist::VlsKvvStore::open(store).map_err(|e| SignerError::Persist(format!("{e:?}")))?;
    let warden_persister = Arc::new(node_persist::WardenPersister::new(store));
    let persister: Arc<dyn Persist> = warden_persister.clone();
    let policy = vls_policy(settings, filter);
    let validator_factory: Arc<dyn ValidatorFactory> = Arc::new(tagged::TaggedFactory::new(policy));
    let services = NodeServices {
        validator_factory: validator_factory.clone(),
        starting_time_factory: ClockStartingTimeFactory::new(),
        persister: persister.clone(),
        clock,
        trusted_oracle_pubkeys: vec![],
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes.copy_from_slice(seed.as_slice());
    let expected = node_id(seed, settings.network);
    persister
        .enter()
        .map_err(|e| SignerError::Persist(format!("{e:?}")))?;
    let built = HandlerBuilder::new(settings.network, 0, services, seed_bytes)
        .approver(Arc::new(WardenApprover::new(
            core.clone(),
            settings.network,
            settings.max_invoices,
            validator_factory,
            warden_persister,
        )))
        .build();
    seed_bytes.zeroize();
    let init = match built {
        Ok(h) => h,
        Err(e) => {
            let _ = persister.commit();
            return Err(SignerError::Build(format!("{e:?}")));
        }
    };
    // Warden owns allowlisting: VLS's allowlist stays empty so no payee skips the policy.
    let node = init.node().clone();
    // Recovery delays may count blocks: the height is the node's chain tracker's, held weakly
    // (the node holds the core through its approver).
    let weak = Arc::downgrade(&node);
    core.set_chain_height(Arc::new(move || {
        weak.upgrade().map(|n| n.get_chain_height())
    }));
    core.set_signer_state(Arc::new(channels::NodeView::new(Arc::downgrade(&node))));
    if node.allowlist().map(|l| !l.is_empty()).unwrap_or(false) {
        node.set_allowlist(&[])
            .map_err(|e| SignerError::Build(format!("clearing the VLS allowlist: {e:?}")))?;
    }
    persister
        .commit()
        .map_err(|e| SignerError::Persist(format!("{e:?}")))?;
    if node.get_id() != expected {
        return Err(SignerError::WrongNode {
            stored: node.get_id().to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(init)
}

#[cfg(test)]
mod tests {
    /// Issue 26, item 1: the sweep of a force close that Core Lightning builds at its floor is
    /// within VLS's range as Warden configures it; the upper bound is VLS's own.
    #[test]
    fn a_sweep_at_core_lightnings_floor_is_within_vls_range_and_the_maximum_stays() {
        use lightning_signer::bitcoin::Network;
        let settings = super::SignerSettings {
            network: Network::Bitcoin,
            max_invoices: 1_000,
        };
        let p = super::vls_policy(settings, &Default::default());
        // A to_local sweep as Core Lightning v25.09 builds it: one input (nSequence the
        // delay), one P2TR output to the wallet; 376 weight units unsigned, 529 signed.
        let (unsigned, signed) = (376u64, 529u64);
        let fee = 253 * signed / 1_000;
        // VLS 1.0.0-rc.1: the unsigned weight plus 220, and the highest rate giving this fee.
        let vls_rate = (fee * 1_000).div_ceil(unsigned + 220);
        assert!(
            vls_rate < 253,
            "the estimation error this guards: {vls_rate}"
        );
        assert!(
            vls_rate >= u64::from(p.min_feerate_per_kw),
            "{vls_rate} < {}",
            p.min_feerate_per_kw
        );
        let default = lightning_signer::policy::simple_validator::make_default_simple_policy(
            Network::Bitcoin,
        );
        assert_eq!(p.max_feerate_per_kw, default.max_feerate_per_kw);
        assert_eq!(
            p.fee_velocity_control.limit_msat,
            default.fee_velocity_control.limit_msat
        );
    }

    use super::*;

    #[test]
    fn node_id_is_deterministic_and_seed_dependent() {
        let a = NodeSeed::new([1u8; 32]);
        let b = NodeSeed::new([2u8; 32]);
        assert_eq!(node_id(&a, Network::Regtest), node_id(&a, Network::Regtest));
        assert_ne!(node_id(&a, Network::Regtest), node_id(&b, Network::Regtest));
    }
}
