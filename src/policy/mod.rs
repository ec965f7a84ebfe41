//! The policy language: Warden's second layer on top of VLS's Lightning validation.
//!
//! A policy file (TOML, `version = 1`, reference in `policy/README.md`) declares deny lists,
//! allowlists, limits per payment and over rolling windows, time-of-day windows, and approval
//! rules that require a quorum of admins. [`load`] turns a file into a validated [`Policy`] or
//! into every problem it has, with line and column; [`eval::evaluate`] decides a payment as a
//! pure function of the policy, the request, the velocity state and the time.

pub mod channels;
pub mod eval;
pub mod explain;
pub mod load;
pub mod model;
pub mod units;
pub mod velocity;

pub use eval::{
    evaluate, fee_bound, feerate_bound, named_feerate_bound, spend_changes, Decision, OnchainFee,
    PaymentKind, PaymentRequest, RuleHit, Verdict,
};
pub use load::{
    load_policy_file, load_policy_file_for, parse_policy, parse_policy_for, PolicyError,
    PolicyLoadError, DEFAULT_POLICY, KNOWN_KEYS, MAX_POLICY_BYTES, MAX_REPORTED_ERRORS,
};
pub use model::*;
pub use velocity::{Bucket, LedgerKey, Totals, VelocityState};
