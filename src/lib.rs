//! # Warden
//!
//! Warden is a remote signer for Lightning nodes that can say no. The node (Core Lightning via
//! vls-proxy's `remote_hsmd_socket`, or an LDK application) holds no keys; `wardend` holds them,
//! validates every request with the Validating Lightning Signer (VLS), and puts a second layer
//! of policy on top: limits, allowlists, time windows, and quorum approvals by admins.
//!
//! This crate is the daemon (`wardend`) and the admin CLI (`wardenctl`); the CLN plugin
//! (`warden-cln-plugin`) is its own crate on `warden-client`. What other programs link lives
//! in its own crates: `warden-policy` (the language), `warden-client` (the admin API, the approval digest and
//! signing), `warden-ldk` (the LDK node side); `warden-testkit` holds the tests' Core Lightning
//! stand-in and is never published.
//!
//! ## Where to start
//! A request from the node arrives in [`signer`] (the hsmd stream), is decided in [`core`]
//! under the [`policy`] in force, and its writes, decision and audit records are committed once
//! in [`store`] before the answer leaves. Admins reach [`core`] through [`api`].
//!
//! ## The one picture
//! ```text
//!  node (CLN proxy / LDK link) ──hsmd stream──▶ signer ──▶ core ──▶ store (one commit)
//!  admins (wardenctl, plugin)  ──gRPC, mTLS───▶ api ────────┘  │
//!                                               approval, governance, recovery, audit
//!                                                       hsm (seed, audit key)
//! ```
//!
//! ## Modules
//! - [`signer`]: the VLS node built from the unsealed seed, the hsmd stream to the node, the
//!   approver that puts payments and spends to Warden's policy.
//! - [`core`]: the decision pipeline shared by the signer and the admin API: one request, one
//!   decision, one commit.
//! - [`policy`]: the `warden-policy` crate, re-exported, plus reading the policy file.
//! - [`approval`]: quorum requests and their signatures in the store (the digest is
//!   `warden-client`'s).
//! - [`governance`]: the policy in force and its governed history (proposals, delays, vetoes).
//! - [`recovery`]: freezes, emergency-stop conditions and timelocked recovery actions.
//! - [`audit`]: the hash-chained log and its HSM-signed checkpoints.
//! - [`store`]: the only module that names a database (sled, PostgreSQL): one durable commit
//!   per request.
//! - [`hsm`]: the PKCS#11 token. It seals the node seed (AES-256-GCM, key non-extractable) and
//!   holds the secp256k1 key that signs audit checkpoints. Start here for key custody.
//! - [`api`]: the admin API wardend serves (gRPC over mutual TLS); its messages and client are
//!   `warden-client`'s.
//! - [`config`]: wardend's configuration file, environment and flags, validated at start.
//! - [`clock`]: Warden's time, passed in, never going backwards.
//! - [`events`], [`alerts`], [`metrics`]: what admins watch, what needs a person (webhooks),
//!   and Prometheus.
//! - [`hardening`]: keeping the process's memory (where the seed lives) out of swap and core
//!   dumps.
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
