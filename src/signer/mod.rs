//! The signer: a VLS node built from the unsealed seed.
//!
//! This module grows into the hsmd stream client and Warden's `Approve` implementation; for now
//! it holds the one derivation every part needs, the node id, computed exactly as VLS computes it
//! for Core Lightning (native key derivation), so what Warden prints is what CLN will announce.

use crate::hsm::NodeSeed;
use lightning_signer::bitcoin::secp256k1::{PublicKey, Secp256k1};
use lightning_signer::bitcoin::Network;
use lightning_signer::signer::derive::{key_derive, KeyDerivationStyle};

/// The Lightning node id that a seed gives on `network`, CLN-style.
pub fn node_id(seed: &NodeSeed, network: Network) -> PublicKey {
    let secp = Secp256k1::new();
    let (node_id, secret) =
        key_derive(KeyDerivationStyle::Native, network).node_keys(seed.as_slice(), &secp);
    let mut secret = secret;
    secret.non_secure_erase();
    node_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_deterministic_and_seed_dependent() {
        let a = NodeSeed::new([1u8; 32]);
        let b = NodeSeed::new([2u8; 32]);
        assert_eq!(node_id(&a, Network::Regtest), node_id(&a, Network::Regtest));
        assert_ne!(node_id(&a, Network::Regtest), node_id(&b, Network::Regtest));
    }
}
