//! The workspace's crate boundaries, as `cargo tree` resolves them for one crate alone: what a
//! program that links the policy language or the client gets. Neither may bring the daemon's
//! parts (its database, HSM, terminal UI, webhooks, metrics or CLI) into that program.

use std::collections::BTreeSet;

/// Every package `krate` links (normal dependencies, its own features only).
fn links(krate: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "--quiet",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            krate,
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// The daemon's own dependencies, which no library crate may bring.
const DAEMON_ONLY: &[&str] = &[
    "warden",
    "sled",
    "tokio-postgres",
    "cryptoki",
    "ratatui",
    "crossterm",
    "reqwest",
    "prometheus-client",
    "clap",
];

#[test]
fn the_policy_crate_brings_none_of_the_daemon_and_no_runtime() {
    let deps = links("warden-policy");
    assert!(deps.contains("vls-core"), "read from cargo tree: {deps:?}");
    for forbidden in DAEMON_ONLY
        .iter()
        .chain(&["tokio", "tonic", "warden-client"])
    {
        assert!(
            !deps.contains(*forbidden),
            "warden-policy links {forbidden}"
        );
    }
}

#[test]
fn the_client_crate_brings_none_of_the_daemon() {
    let deps = links("warden-client");
    // The approval digest names policy types and hashes with VLS's bitcoin; both are pure.
    for needed in ["tonic", "warden-policy", "vls-core"] {
        assert!(deps.contains(needed), "read from cargo tree: {deps:?}");
    }
    for forbidden in DAEMON_ONLY.iter().chain(&["vlsd", "vls-protocol-signer"]) {
        assert!(
            !deps.contains(*forbidden),
            "warden-client links {forbidden}"
        );
    }
}

#[test]
fn the_ldk_crate_brings_none_of_the_daemon_nor_vls_daemon_crate() {
    let deps = links("warden-ldk");
    for needed in ["lightning", "vls-protocol-client", "tonic", "warden-client"] {
        assert!(deps.contains(needed), "read from cargo tree: {deps:?}");
    }
    // vlsd is VLS's daemon: its CLI, JSON-RPC server, storage and bitcoind clients.
    for forbidden in DAEMON_ONLY.iter().chain(&[
        "vlsd",
        "jsonrpsee",
        "lightning-storage-server",
        "txoo-bitcoind-client",
    ]) {
        assert!(!deps.contains(*forbidden), "warden-ldk links {forbidden}");
    }
}

#[test]
fn the_daemon_links_no_test_kit_and_no_node_side_library() {
    let deps = links("warden");
    assert!(
        deps.contains("warden-policy"),
        "read from cargo tree: {deps:?}"
    );
    for forbidden in ["warden-testkit", "warden-ldk"] {
        assert!(!deps.contains(forbidden), "wardend links {forbidden}");
    }
}

#[test]
fn the_cln_plugin_brings_none_of_the_daemon() {
    let deps = links("warden-cln-plugin");
    for needed in ["cln-plugin", "warden-client"] {
        assert!(deps.contains(needed), "read from cargo tree: {deps:?}");
    }
    for forbidden in DAEMON_ONLY.iter().chain(&["vlsd", "vls-protocol-signer"]) {
        assert!(
            !deps.contains(*forbidden),
            "warden-cln-plugin links {forbidden}"
        );
    }
}
