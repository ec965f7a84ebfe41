//! # warden-policy
//!
//! The policy language of Warden, an HSM-backed,
//! validating Lightning signer: what a payment must satisfy, above VLS's Lightning validation,
//! before the signer says yes. This crate is pure: it reads no file, keeps no clock, opens no
//! database. Whoever holds the state (wardend, a test, a back office that wants to know what a
//! policy would decide) hands it in.
//!
//! ## Where to start
//! - [`parse_policy_for`] turns policy text (TOML, `version = 1`; the reference is
//!   `policy/README.md` in the repository) into a validated [`Policy`], or into every problem the
//!   text has, each with its line and column and what to do about it.
//! - [`evaluate`] decides a [`PaymentRequest`] (an invoice, a keysend, an on-chain spend) as a
//!   function of the policy, the [`VelocityState`] of the rolling windows and the time: approve,
//!   deny, or require a quorum of admins. Every [`Decision`] names the rules that made it.
//! - [`velocity`] keeps what was spent per window, in minute buckets, and its compact codec;
//!   [`channels`] judges channel opens and what is in flight; [`explain`] says in sentences what
//!   a policy does; [`tags`] lists the rules Warden applies outside the policy file.
//!
//! ## The one picture
//! ```text
//!  policy text ──parse_policy_for──▶ Policy ─┐
//!                                            ├─ evaluate(policy, request, state, now) ─▶ Decision
//!  PaymentRequest, VelocityState, now ───────┘        (Approve | Deny | RequireQuorum, rule tags)
//!                                                                 │
//!  the caller commits the decision and its VelocityState change ◀─┘  (in one transaction)
//! ```
//! Evaluation never counts anything: the caller applies the change the decision carries, in the
//! same transaction as its record, so a crash cannot count a payment that was not answered.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod channels;
pub mod eval;
pub mod explain;
pub mod load;
pub mod model;
pub mod tags;
pub mod units;
pub mod velocity;

pub use eval::{
    evaluate, fee_bound, feerate_bound, named_feerate_bound, spend_changes, Decision, OnchainFee,
    PaymentKind, PaymentRequest, RuleHit, Verdict,
};
pub use load::{
    parse_policy, parse_policy_for, PolicyError, DEFAULT_POLICY, KNOWN_KEYS, MAX_POLICY_BYTES,
    MAX_REPORTED_ERRORS,
};
pub use model::*;
pub use velocity::{Bucket, LedgerKey, Totals, VelocityState};
