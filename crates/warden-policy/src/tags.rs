//! Every `warden-*` tag: the rules Warden itself applies outside the policy file. A refusal's tag
//! leads here and to `policy/README.md` ("Warden's own tags") with one grep; the policy file's
//! own rules carry the tags their authors give them, and VLS's rules carry VLS's `policy-…` tags.
//! `tests/policy_files.rs` holds the three together: every tag here is documented there, every
//! documented one is here, and no `"warden-…"` tag is spelled anywhere else in `src/`.

/// The audit record of a decision or signature could not be written (HSM or database): refused.
pub const AUDIT_FAILURE: &str = "warden-audit-failure";
/// The state database could not record or commit a decision: refused, or a temporary failure.
pub const STORE_FAILURE: &str = "warden-store-failure";
/// VLS's invoice table is full (`signer.max_invoices`).
pub const INVOICE_CAPACITY: &str = "warden-invoice-capacity";
/// The invoice in a preapprove request is not a BOLT 11/12 invoice.
pub const INVOICE_UNPARSABLE: &str = "warden-invoice-unparsable";
/// A BOLT 11 invoice without an amount: Warden cannot know what the node will pay.
pub const INVOICE_WITHOUT_AMOUNT: &str = "warden-invoice-without-amount";
/// A keysend whose destination is not a valid public key.
pub const KEYSEND_BAD_DESTINATION: &str = "warden-keysend-bad-destination";
/// The HSM cannot sign (token gone, session lost, audit key missing): payments are refused.
pub const HSM_UNAVAILABLE: &str = "warden-hsm-unavailable";
/// As many approval requests are open as `approvals.max_open` allows.
pub const APPROVAL_CAPACITY: &str = "warden-approval-capacity";
/// An hsmd message Warden could not decode, or of an unknown type: a temporary failure.
pub const MALFORMED_MESSAGE: &str = "warden-malformed-message";
/// VLS panicked while handling a request; the node is rebuilt from committed state.
pub const SIGNER_PANIC: &str = "warden-signer-panic";
/// VLS refused (expired, duplicate or malformed invoice; a channel-level rule without its own tag).
pub const VLS_REFUSED: &str = "warden-vls-refused";
/// The node has been disconnected longer than `alerts.node_disconnect_secs`.
pub const NODE_DISCONNECTED: &str = "warden-node-disconnected";
/// This wardend took over the lease of a database shared for failover (a failover or a start).
pub const TOOK_OVER: &str = "warden-ha-took-over";
/// The system clock read earlier than a time Warden already used; Warden keeps its own time.
pub const CLOCK_STEPPED_BACK: &str = "warden-clock-stepped-back";
/// The system clock moved further than the time that passed (`alerts.clock_jump_secs`).
pub const CLOCK_JUMPED: &str = "warden-clock-jumped";

/// A fleet member whose node the policy in force does not admit (`[fleet.members]`): every
/// payment and on-chain spend is refused.
pub const FLEET_NOT_MEMBER: &str = "warden-fleet-not-member";

/// The signer is frozen (`wardenctl freeze`, or an emergency stop): payments and on-chain spends
/// are refused until the governance quorum lifts it.
pub const FROZEN: &str = "warden-frozen";
/// A condition of the policy's `[emergency_stop]` was met and froze the signer.
pub const EMERGENCY_STOP: &str = "warden-emergency-stop";

/// An on-chain spend approved by the recovery key's `sweep`: every output goes to the policy's
/// recovery destination.
pub const RECOVERY_SWEEP: &str = "warden-recovery-sweep";

/// `[onchain]`: an on-chain transaction's fee above `max_fee`, or its feerate above
/// `max_feerate` (a fee leaves the wallet like an output).
pub const ONCHAIN_FEE: &str = "warden-onchain-fee";
/// A signature request claims another value or script for a coin than an earlier one did (a
/// node lying about amounts, which segwit v0 signatures do not all commit to).
pub const ONCHAIN_AMOUNT: &str = "warden-onchain-amount";

/// `[channels]`: a channel larger than `max_channel_size`.
pub const CHANNEL_SIZE: &str = "warden-channel-size";
/// `[channels]`: capacity across channels above `max_total_capacity`.
pub const CHANNEL_TOTAL: &str = "warden-channel-total";
/// `[channels]`: capacity with one peer above `max_per_peer`.
pub const CHANNEL_PEER: &str = "warden-channel-peer";
/// `[channels]`: more channels than `max_channels`.
pub const CHANNEL_COUNT: &str = "warden-channel-count";
/// `[channels]`: an unannounced channel where `allow_private = false`.
pub const CHANNEL_PRIVATE: &str = "warden-channel-private";
/// `[channels]`: `max_htlcs_in_flight` outgoing HTLCs are already in flight.
pub const HTLC_COUNT: &str = "warden-htlc-count";
/// `[channels]`: the payment would put more than `max_in_flight` in flight.
pub const HTLC_IN_FLIGHT: &str = "warden-htlc-in-flight";
/// `[channels]`: a channel's outbound balance fell below `min_outbound` of its capacity (alert).
pub const LIQUIDITY_LOW: &str = "warden-liquidity-low";
/// A channel VLS holds started closing (alert).
pub const CHANNEL_CLOSING: &str = "warden-channel-closing";
/// The CLN plugin cannot tell what a command would spend (e.g. `all`, a short channel id), so
/// it refuses it rather than let the signer refuse it fatally.
pub const SPEND_UNCHECKABLE: &str = "warden-spend-uncheckable";
/// A payment command that names no invoice and a payment hash the signer holds no approval
/// for (a raw onion): the CLN plugin refuses it, since its HTLC would reach VLS unapproved.
pub const PAYMENT_UNCHECKABLE: &str = "warden-payment-uncheckable";
/// The CLN plugin could not reach wardend to check a command: refused (fail closed).
pub const SIGNER_UNREACHABLE: &str = "warden-signer-unreachable";
/// An on-chain spend or channel funding reached the signer without the plugin's check and was
/// refused there, which stops the node's hsmd: recorded before the answer.
pub const UNCHECKED_SPEND: &str = "warden-unchecked-spend";
/// The node's hsmd init asks for what this signer cannot serve (a wire protocol version outside
/// VLS's range, developer fields): answered with an error naming what is missing.
pub const NODE_INCOMPATIBLE: &str = "warden-node-incompatible";

/// Every tag above, in the order `policy/README.md` lists them.
pub const ALL: [&str; 35] = [
    AUDIT_FAILURE,
    HSM_UNAVAILABLE,
    STORE_FAILURE,
    INVOICE_CAPACITY,
    APPROVAL_CAPACITY,
    INVOICE_UNPARSABLE,
    INVOICE_WITHOUT_AMOUNT,
    KEYSEND_BAD_DESTINATION,
    MALFORMED_MESSAGE,
    SIGNER_PANIC,
    VLS_REFUSED,
    NODE_DISCONNECTED,
    NODE_INCOMPATIBLE,
    TOOK_OVER,
    CLOCK_STEPPED_BACK,
    CLOCK_JUMPED,
    FROZEN,
    FLEET_NOT_MEMBER,
    EMERGENCY_STOP,
    RECOVERY_SWEEP,
    ONCHAIN_FEE,
    ONCHAIN_AMOUNT,
    CHANNEL_SIZE,
    CHANNEL_TOTAL,
    CHANNEL_PEER,
    CHANNEL_COUNT,
    CHANNEL_PRIVATE,
    HTLC_COUNT,
    HTLC_IN_FLIGHT,
    LIQUIDITY_LOW,
    CHANNEL_CLOSING,
    SPEND_UNCHECKABLE,
    PAYMENT_UNCHECKABLE,
    SIGNER_UNREACHABLE,
    UNCHECKED_SPEND,
];

/// The first `policy-…` tag in the text of a VLS error. VLS's handler turns its
/// `ValidationError` (which carries the tag as a field, used wherever Warden holds one) into a
/// status message before it reaches the stream, so there the text is all there is.
pub fn vls_tag_in(error: &str) -> Option<String> {
    let start = error.find("policy-")?;
    let tag: String = error[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    Some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_vls_policy_tag_in_an_error() {
        assert_eq!(
            vls_tag_in("Signing(Status { code: FailedPrecondition, message: \"policy-commitment-htlc-cltv-range: ...\" })").as_deref(),
            Some("policy-commitment-htlc-cltv-range")
        );
        assert_eq!(vls_tag_in("no tag here"), None);
    }
}
