//! Warden's own messages on the hsmd stream, for node-side libraries that share the stream
//! with VLS's protocol (the LDK link): a check before signing, answered by wardend itself and
//! never passed to VLS. They use message types VLS does not define (0xF701, 0xF702); their body
//! is JSON. Core Lightning never sends them (its plugin asks through the admin API).

use crate::core::{CheckAnswer, Core};

pub use warden_client::check::{body, encode, CheckRequest, CHECK_REPLY, CHECK_REQUEST};

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
