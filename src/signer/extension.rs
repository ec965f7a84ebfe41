//! Warden's own messages on the hsmd stream, for node-side libraries that share the stream
//! with VLS's protocol (the LDK link): a check before signing, answered by wardend itself and
//! never passed to VLS. They use message types VLS does not define (0xF701, 0xF702); their body
//! is JSON. Core Lightning never sends them (its plugin asks through the admin API).

use crate::core::{CheckAnswer, Core};

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

/// Answer a check request's body (inside the request's transaction: a held spend's approval
/// request is committed with it).
pub fn answer_check(core: &Core, body: &[u8]) -> Vec<u8> {
    let answer: Result<CheckAnswer, String> = match serde_json::from_slice::<CheckRequest>(body) {
        Err(e) => Err(format!("the check request does not parse: {e}")),
        Ok(CheckRequest::Spend { outputs }) => core
            .check_spend(&outputs, "ldk", None)
            .map_err(|e| e.to_string()),
        Ok(CheckRequest::Channels { opens }) => core
            .check_channels(&opens, "ldk", None)
            .map_err(|e| e.to_string()),
        Ok(CheckRequest::Invoice { invoice }) => core
            .check_invoice(&invoice, "ldk")
            .map_err(|e| e.to_string()),
        Ok(CheckRequest::Keysend {
            payee,
            payment_hash,
            amount_msat,
        }) => core
            .check_keysend(&payee, &payment_hash, amount_msat, "ldk")
            .map_err(|e| e.to_string()),
    };
    encode(CHECK_REPLY, &answer)
}
