//! A Core Lightning stand-in, for the end-to-end tests, the demo and the benchmarks: it runs
//! VLS's real `remote_hsmd_socket` exactly as lightningd does (hsmd socket on fd 3), speaks
//! CLN's hsmd wire protocol with `vls_protocol::msgs` types, and serves the bitcoind the proxy's
//! chain follower needs. Nothing here is used by wardend itself.

pub mod chain;
pub mod hsmd;
pub mod lightningd;
pub mod proxy;

use lightning_signer::bitcoin::constants::genesis_block;
use lightning_signer::bitcoin::Network;
use vls_protocol::model::Bip32KeyVersion;
use vls_protocol::msgs;

/// The `HsmdInit` lightningd sends on regtest.
pub fn hsmd_init_regtest() -> msgs::HsmdInit {
    msgs::HsmdInit {
        key_version: Bip32KeyVersion {
            pubkey_version: 0x043587cf,
            privkey_version: 0x04358394,
        },
        chain_params: genesis_block(Network::Regtest).block_hash(),
        encryption_key: None,
        dev_privkey: None,
        dev_bip32_seed: None,
        dev_channel_secrets: None,
        dev_channel_secrets_shaseed: None,
        hsm_wire_min_version: 4,
        hsm_wire_max_version: 6,
    }
}
