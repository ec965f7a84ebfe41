//! # Warden
//!
//! Warden is a remote signer for Lightning nodes that can say no. The node (Core Lightning via
//! vls-proxy's `remote_hsmd_socket`, or an LDK application) holds no keys; `wardend` holds them,
//! validates every request with the Validating Lightning Signer (VLS), and puts a second layer
//! of policy on top: limits, allowlists, time windows, and quorum approvals by admins.
//!
//! ## Where things live
//! - [`policy`]: the policy language, from the `warden-policy` crate (pure: parsing, evaluation,
//!   velocity windows, tags), re-exported with what wardend adds (reading the file).
//! - [`api`]: the admin API wardend serves; its messages and client are the `warden-client`
//!   crate's (`api::proto`), shared with wardenctl, the CLN plugin and the LDK link's check.
//! - [`hsm`]: the PKCS#11 token. It seals the node seed (AES-256-GCM, key non-extractable) and
//!   holds the secp256k1 key that signs audit checkpoints. Start here for key custody.
//! - [`config`]: wardend's configuration file, environment and flags, validated at start.
//! - [`signer`]: the VLS node built from the unsealed seed.
//! - [`fsutil`]: crash-safe file writes used for anything that must not be torn.
//!
//! ## Key custody in one paragraph
//! `wardenctl init` creates the two HSM keys once, draws a 32-byte seed from the OS RNG, seals
//! it in the HSM and writes the sealed blob atomically. `wardend` unseals it at start into a
//! zeroizing buffer. Standard PKCS#11 cannot perform BIP32 or Lightning's per-commitment key
//! derivations, so while wardend runs the seed lives in its memory; `SECURITY.md` explains what
//! that means and what an HSM with BIP32 mechanisms would change.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod approval;
pub mod audit;
pub mod cln_plugin;
pub mod clock;
pub mod config;
pub mod core;
pub mod events;
pub mod fsutil;
pub mod governance;
pub mod hardening;
pub mod hsm;
pub mod metrics;
pub mod policy;
pub mod recovery;
pub mod signer;
pub mod store;
pub use warden_policy::tags;
