//! # warden-client
//!
//! What a program needs to talk to wardend, Warden's signer daemon, without linking the daemon:
//! an admin tool, the Core Lightning plugin, a node-side library, an exchange's back office.
//!
//! ## Where to start
//! - [`proto`]: the admin API (gRPC over mutual TLS, `proto/warden.proto`): its messages and
//!   the generated client, `proto::warden_client::WardenClient` (the daemon serves the same
//!   service from the same definitions).
//! - [`approval`]: what an admin signs (the canonical approval digest, version 2, and the text
//!   a hardware wallet signs), [`approval::sign_bip340`], and the verification wardend itself
//!   runs against the key the policy declares.
//! - [`check`]: the question a node-side library asks on the hsmd stream before it builds a
//!   transaction or pays ("what would signing this decide now?"), and wardend's answer.
//!
//! ## The one picture
//! ```text
//!  wardenctl, the CLN plugin, a back office ──proto (gRPC, mTLS)──▶ wardend's admin API
//!     an admin's approval: approval::sign_bip340 ──(in the request)──▶ verified by wardend
//!  an LDK node (warden's LDK link)          ──check (hsmd stream)──▶ wardend's signer
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod approval;

/// The admin API's messages and client, generated from `proto/warden.proto`.
// Generated code: its doc comments are the proto file's, written for protobuf readers.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod proto {
    tonic::include_proto!("warden.v1");
}

/// A check before signing, as a node-side library asks it on the hsmd stream: Warden's own
/// messages, with types VLS does not define (0xF701, 0xF702) and a JSON body. Core Lightning
/// never sends them (its plugin asks through the admin API).
pub mod check {
    /// What a check found.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum CheckOutcome {
        /// Signing would approve it now.
        Approved,
        /// It needs a quorum: the named request waits for the admins; ask again once approved.
        Held,
        /// Refused by the named rules.
        Refused,
    }

    /// A check's answer.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct CheckAnswer {
        /// What signing would do.
        pub outcome: CheckOutcome,
        /// The rules that decided.
        pub tags: Vec<String>,
        /// Why not, one sentence per rule (empty when approved).
        pub reason: String,
        /// The approval request holding it (or whose veto refuses it).
        pub request_id: Option<String>,
    }

    /// A check: [`CheckRequest`] as JSON after the type.
    pub const CHECK_REQUEST: u16 = 0xF701;
    /// Its answer: `Result<CheckAnswer, String>` as JSON after the type.
    pub const CHECK_REPLY: u16 = 0xF702;

    /// What the node asks before it builds a transaction.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum CheckRequest {
        /// An on-chain spend to (address, sat) outputs.
        Spend {
            /// Outputs that leave the wallet.
            outputs: Vec<(String, u64)>,
        },
        /// Channels to open or accept: (peer hex, sat, private?, incoming?).
        Channels {
            /// In order.
            opens: Vec<(String, u64, Option<bool>, bool)>,
        },
        /// A payment of a BOLT 11/12 invoice, before the node preapproves it.
        Invoice {
            /// As the node pays it.
            invoice: String,
        },
        /// A keysend, before the node preapproves it.
        Keysend {
            /// The payee's node id, hex.
            payee: String,
            /// The payment hash, hex.
            payment_hash: String,
            /// msat.
            amount_msat: u64,
        },
    }

    /// `message` as a typed Warden message.
    pub fn encode<T: serde::Serialize>(message_type: u16, body: &T) -> Vec<u8> {
        let mut out = message_type.to_be_bytes().to_vec();
        out.extend(serde_json::to_vec(body).expect("plain data serializes"));
        out
    }

    /// The body of a Warden message of `message_type`, if `bytes` is one.
    pub fn body(bytes: &[u8], message_type: u16) -> Option<&[u8]> {
        (bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == message_type)
            .then(|| &bytes[2..])
    }
}
