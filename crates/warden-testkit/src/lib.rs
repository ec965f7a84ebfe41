//! # warden-testkit
//!
//! What Warden's tests, benchmarks, fuzz targets and demo share, and what no user links (never
//! published; wardend does not depend on it).
//!
//! ## Where to start
//! - This page and its modules are a **Core Lightning stand-in**: it runs VLS's real
//!   `remote_hsmd_socket` exactly as lightningd does (hsmd socket on fd 3), speaks CLN's hsmd
//!   wire protocol with `vls_protocol::msgs` types (shapes, feerates and order read from Core
//!   Lightning's source), loads plugins as lightningd does, and serves the bitcoind the proxy's
//!   chain follower needs. The `warden-cln` binary drives it from a script (the demo).
//! - [`fuzzing`]: the fuzz targets' bodies, which `fuzz/` and the stable replay test share.
//!
//! ## Modules
//! - [`proxy`]: starting `remote_hsmd_socket` and handing it the hsmd socket;
//! - [`hsmd`]: a connection on the hsmd wire (framing, one request, one reply);
//! - [`lightningd`]: plugin hosting (manifest, init, hooks and commands as lightningd sends them);
//! - [`chain`]: the bitcoind JSON-RPC the proxy's chain follower reads;
//! - [`onchain`]: the force-close sweeps Core Lightning's onchaind has hsmd sign;
//! - [`fuzzing`]: see above;
//! - this page: the regtest init, test keys and a channel set up the way lightningd does.
//!
//! ## The one picture
//! ```text
//!  test / bench / demo ──▶ stand-in (lightningd's side) ──fd 3──▶ remote_hsmd_socket (VLS)
//!                                                                   ▲ gRPC, wardend dials in
//!                                                                 wardend
//! ```

pub mod chain;
pub mod fuzzing;
pub mod hsmd;
pub mod lightningd;
pub mod onchain;
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

/// A public key from `seed` and `k`, for stand-in peers and their basepoints.
pub fn test_key(seed: u64, k: u8) -> [u8; 33] {
    use lightning_signer::bitcoin::hashes::{sha256, Hash};
    use lightning_signer::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(
        sha256::Hash::hash(&[&seed.to_be_bytes()[..], &[k]].concat()).as_byte_array(),
    )
    .expect("a hash is a valid key but with negligible probability");
    PublicKey::from_secret_key(&secp, &sk).serialize()
}

/// A channel of `sat` with `peer` as CLN's openingd sets it up: NewChannel on the root
/// connection, then SetupChannel on the channel's own client connection with the peer's
/// basepoints (derived from `peer_seed`). The channel is set up, its funding not yet signed.
pub fn setup_channel(
    root: &mut hsmd::HsmdConn,
    peer_seed: u64,
    dbid: u64,
    sat: u64,
) -> Result<[u8; 33], hsmd::HsmdError> {
    use lightning_signer::bitcoin::hashes::{sha256, Hash};
    use vls_protocol::model::{Basepoints, PubKey};
    use vls_protocol::msgs::Message;
    use vls_protocol::serde_bolt::Octets;
    let key = |k| test_key(peer_seed, k);
    let peer = key(0);
    let unexpected = |what: &str, m: Message| hsmd::HsmdError::Protocol(format!("{what}: {m:?}"));
    match root.call(msgs::NewChannel {
        peer_id: PubKey(peer),
        dbid,
    })? {
        Message::NewChannelReply(_) => {}
        other => return Err(unexpected("NewChannel", other)),
    }
    let mut client = root.new_client(peer, dbid, 0)?;
    match client.call(msgs::SetupChannel {
        is_outbound: true,
        channel_value: sat,
        push_value: 0,
        funding_txid: lightning_signer::bitcoin::Txid::from_byte_array(
            sha256::Hash::hash(&dbid.to_be_bytes()).to_byte_array(),
        ),
        funding_txout: 0,
        to_self_delay: 144,
        local_shutdown_script: Octets(vec![]),
        local_shutdown_wallet_index: None,
        remote_basepoints: Basepoints {
            revocation: PubKey(key(1)),
            payment: PubKey(key(2)),
            htlc: PubKey(key(3)),
            delayed_payment: PubKey(key(4)),
        },
        remote_funding_pubkey: PubKey(key(5)),
        remote_to_self_delay: 144,
        remote_shutdown_script: Octets(vec![]),
        // option_static_remotekey (bit 12) and option_anchors_zero_fee_htlc_tx (bit 22): VLS
        // refuses the legacy commitment type.
        channel_type: Octets(vec![0x40, 0x10, 0x00]),
    })? {
        Message::SetupChannelReply(_) => {}
        other => return Err(unexpected("SetupChannel", other)),
    }
    Ok(peer)
}

/// The path of binary `name` of workspace package `package`, built first (dev or release, as
/// the calling test was) so that a test never runs a stale one. Cargo tells a test where only
/// its own package's binaries are (`CARGO_BIN_EXE_*`); the plugin and the stand-in are other
/// packages' binaries. Panics, naming the command, when the build fails.
pub fn workspace_binary(package: &str, name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a test binary lives in target/<profile>/deps");
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--locked", "--offline", "--quiet", "-p", package])
        .args(["--bin", name, "--manifest-path", manifest]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building {name}: {cmd:?} failed");
    profile_dir.join(name)
}
