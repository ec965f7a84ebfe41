//! The connection to the node: wardend dials the `hsmd.Hsmd` gRPC service that vls-proxy's
//! `remote_hsmd_socket` (or the LDK node-side library) serves, opens `SignerStream`, and answers
//! every `SignerRequest` with exactly one `SignerResponse`, the way VLS's `vlsd` does: the init
//! handler until negotiation completes, then the root handler; `for_new_client` for requests
//! whose context names a peer and dbid. Every request is one transaction of the store
//! ([`Session::handle`]): VLS's writes, Warden's decision, the velocity change, the approval
//! consumed or opened and every audit record of the request are committed, durably, in one
//! commit before the answer is sent; if that commit fails the answer is a temporary failure and
//! the in-memory node is rebuilt from what is committed. The loop handles requests one at a time
//! (every decision sees every earlier one) but does not wait for each commit's `fsync`: it hands
//! the answer and its [`Durable`] to a sender thread, which sends each answer, in order, once it
//! is durable, while the loop already handles the next request; commits that arrive together
//! share one sync (group commit, see `store`). On disconnect it reconnects with backoff and
//! answers the proxy's replayed init with a fresh init handler.
//!
//! What Warden adds to vlsd's loop:
//! - preapprove messages whose invoice cannot be parsed are answered *not approved* here,
//!   because VLS's handler would turn them into a fatal error that stops the node;
//! - a malformed or unknown message is a temporary failure, never a fatal one;
//! - a refusal by VLS's own validation is recorded (log and event, with its rule tag) before the
//!   error is sent.

use crate::core::{Core, NodeConnection};
use crate::events::EventKind;
use crate::store::Durable;
use crate::tags::{
    vls_tag_in, INVOICE_UNPARSABLE as TAG_UNPARSABLE_INVOICE,
    INVOICE_WITHOUT_AMOUNT as TAG_INVOICE_WITHOUT_AMOUNT,
    KEYSEND_BAD_DESTINATION as TAG_KEYSEND_BAD_DESTINATION, MALFORMED_MESSAGE as TAG_MALFORMED,
    NODE_INCOMPATIBLE as TAG_NODE_INCOMPATIBLE, SIGNER_PANIC as TAG_PANIC,
    STORE_FAILURE as TAG_STORE_FAILURE, VLS_REFUSED as TAG_VLS_REFUSED,
};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use vls_protocol::msgs::{self, Message, SerBolt};
use vls_protocol_signer::handler::{Error as HandlerError, Handler, InitHandler, RootHandler};
use vls_protocol_signer::vls_protocol::model::PubKey;
use vlsd::grpc::hsmd::hsmd_client::HsmdClient;
use vlsd::grpc::hsmd::{PingRequest, SignerRequest, SignerResponse};

/// Rebuilds the node from its last committed state, after VLS panicked mid-request.
pub type Rebuild = Arc<dyn Fn() -> Result<InitHandler, String> + Send + Sync>;

enum Phase {
    Init(InitHandler),
    Root(RootHandler),
}

fn response(request_id: u64, message: Vec<u8>) -> SignerResponse {
    SignerResponse {
        request_id,
        message,
        error: String::new(),
        is_temporary_failure: false,
    }
}

fn temporary(request_id: u64, error: String) -> SignerResponse {
    SignerResponse {
        request_id,
        message: vec![],
        error,
        is_temporary_failure: true,
    }
}

/// An answer, whether negotiation completed with it, and whether the request's transaction must
/// be discarded (VLS's own state could not be staged).
type Reply = (SignerResponse, bool, bool);

/// Refuse a message Warden cannot decode: a temporary failure, never a fatal answer.
fn malformed(core: &Core, id: u64, what: String) -> Reply {
    let why = format!("rule {TAG_MALFORMED}: request {id} {what}; answered as a temporary failure");
    tracing::error!("{why}");
    core.events.emit(
        core.clock.now(),
        EventKind::PaymentRefused,
        "",
        &[TAG_MALFORMED.into()],
        why.clone(),
        0,
    );
    (temporary(id, why), false, false)
}

/// A request Warden answers *not approved* before VLS sees it.
pub struct Screened {
    /// The refusal's tag.
    pub tag: &'static str,
    /// Why, as a sentence.
    pub why: String,
    /// The encoded reply (`result: false`).
    pub reply: Vec<u8>,
}

/// The pure part of `prescreen`: which requests are refused before VLS, and why.
pub fn screen(id: u64, msg: &Message) -> Option<Screened> {
    let (tag, why, reply) = match msg {
        Message::PreapproveInvoice(m) => {
            let invoice = std::str::from_utf8(&m.invstring.0)
                .ok()
                .and_then(|s| lightning_signer::invoice::Invoice::from_str(s).ok());
            let reply = msgs::PreapproveInvoiceReply { result: false }.as_vec();
            match invoice {
                None => (
                    TAG_UNPARSABLE_INVOICE,
                    format!("rule {TAG_UNPARSABLE_INVOICE}: the invoice in preapprove request {id} is not a valid BOLT 11/12 invoice"),
                    reply,
                ),
                Some(lightning_signer::invoice::Invoice::Bolt11(i))
                    if i.amount_milli_satoshis().is_none() =>
                {
                    (
                        TAG_INVOICE_WITHOUT_AMOUNT,
                        format!("rule {TAG_INVOICE_WITHOUT_AMOUNT}: the invoice in preapprove request {id} has no amount, and CLN's preapprove does not say how much the node will pay, so no limit or quorum could be applied; ask the payee for an invoice with an amount"),
                        reply,
                    )
                }
                Some(_) => return None,
            }
        }
        Message::PreapproveKeysend(m)
            if lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(&m.destination.0)
                .is_err() =>
        {
            (
                TAG_KEYSEND_BAD_DESTINATION,
                format!("rule {TAG_KEYSEND_BAD_DESTINATION}: the destination of keysend preapprove request {id} ({}) is not a valid public key", hex::encode(m.destination.0)),
                msgs::PreapproveKeysendReply { result: false }.as_vec(),
            )
        }
        _ => return None,
    };
    Some(Screened { tag, why, reply })
}

/// What the node's hsmd init asks for that this signer cannot serve, as a sentence naming it and
/// what to do; `None` when the init can be served. VLS checks the same things with `assert!` or
/// a bare protocol error, which tells the operator nothing.
pub fn unservable_init(msg: &Message) -> Option<String> {
    let Message::HsmdInit(m) = msg else {
        return None;
    };
    let (lowest, highest) = (
        msgs::MIN_PROTOCOL_VERSION,
        msgs::DEFAULT_MAX_PROTOCOL_VERSION,
    );
    if m.hsm_wire_min_version > highest || m.hsm_wire_max_version < lowest {
        return Some(format!(
            "the node speaks hsmd wire protocol versions {} to {}, and this signer (VLS 1.0.0-rc.1) \
             speaks {lowest} to {highest}: run a Core Lightning version README.md lists as working \
             (v25.09, v25.12)",
            m.hsm_wire_min_version, m.hsm_wire_max_version
        ));
    }
    let dev: Vec<&str> = [
        ("dev_force_privkey", m.dev_privkey.is_some()),
        ("dev_force_bip32_seed", m.dev_bip32_seed.is_some()),
        ("dev_force_channel_secrets", m.dev_channel_secrets.is_some()),
        (
            "dev_force_channel_secrets_shaseed",
            m.dev_channel_secrets_shaseed.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if !dev.is_empty() {
        return Some(format!(
            "the node's hsmd init carries developer fields ({}), which would replace keys held in \
             the HSM: start lightningd without its --dev-force-* options",
            dev.join(", ")
        ));
    }
    None
}

/// Payments Warden refuses before VLS sees them, because VLS would turn them into a fatal error
/// (unparsable invoice, a keysend to something that is not a public key) or because Warden
/// cannot judge them (an invoice without an amount: CLN's preapprove does not carry the amount
/// the node will pay, so no limit or quorum could apply). Each is *not approved* with its tag.
fn prescreen(core: &Core, id: u64, msg: &Message) -> Option<SignerResponse> {
    if let Message::PreapproveInvoice(m) = msg {
        if core.parsed_invoices.known(&m.invstring.0) {
            // The check before it parsed this very text, with an amount: `screen` would pass it.
            return None;
        }
    }
    let Screened { tag, why, reply } = screen(id, msg)?;
    tracing::warn!("{why}");
    core.events.emit(
        core.clock.now(),
        EventKind::PaymentRefused,
        "",
        &[tag.into()],
        why,
        0,
    );
    Some(response(id, reply))
}

/// An hsmd message. VLS 1.0.0-rc.1 gives message type 20 to both CLN's `SignRemoteHtlcTx` and
/// LDK's `SignLocalHtlcTx2` (the holder's HTLC transaction on a force close), and its reader
/// always decodes the first: an LDK node's HTLC-timeout could never be signed. A type-20 body
/// that is not a `SignRemoteHtlcTx` is read as the LDK message, which the handler serves.
fn decode(bytes: Vec<u8>) -> Result<Message, vls_protocol::Error> {
    use vls_protocol::msgs::DeBolt;
    let is_type_20 = bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == 20;
    match msgs::from_vec(bytes.clone()) {
        Err(_) if is_type_20 => {
            msgs::SignLocalHtlcTx2::from_vec(bytes).map(Message::SignLocalHtlcTx2)
        }
        other => other,
    }
}

/// Answer one request, timing it. Blocking: VLS and the stores are synchronous.
fn answer(phase: &mut Phase, core: &Core, request: SignerRequest) -> Reply {
    let started = std::time::Instant::now();
    let id = request.request_id;
    if let Some(body) = super::extension::body(&request.message, super::extension::CHECK_REQUEST) {
        let reply = super::extension::answer_check(core, body);
        core.metrics
            .hsmd_request("WardenCheck", started.elapsed().as_secs_f64());
        return (response(id, reply), false, false);
    }
    let msg = match decode(request.message) {
        Ok(Message::Unknown(u)) => {
            return malformed(
                core,
                id,
                format!("has unknown message type {}", u.message_type),
            )
        }
        Ok(m) => m,
        Err(e) => return malformed(core, id, format!("could not be decoded ({e:?})")),
    };
    let name = msg.inner().name();
    let out = super::approver::answering(name, || {
        answer_message(phase, core, id, request.context, msg)
    });
    core.metrics
        .hsmd_request(name, started.elapsed().as_secs_f64());
    out
}

fn answer_message(
    phase: &mut Phase,
    core: &Core,
    id: u64,
    context: Option<vlsd::grpc::hsmd::HsmRequestContext>,
    msg: Message,
) -> Reply {
    if let Some(refusal) = prescreen(core, id, &msg) {
        return (refusal, false, false);
    }
    let name = msg.inner().name();
    if let Some(why) = unservable_init(&msg) {
        tracing::error!(tag = TAG_NODE_INCOMPATIBLE, "{why}");
        core.events.emit(
            core.clock.now(),
            EventKind::NodeConnection,
            "",
            &[TAG_NODE_INCOMPATIBLE.into()],
            why.clone(),
            0,
        );
        let response = SignerResponse {
            request_id: id,
            message: vec![],
            error: why,
            is_temporary_failure: false,
        };
        return (response, false, false);
    }
    let wire_versions = match &msg {
        Message::HsmdInit(m) => Some((m.hsm_wire_min_version, m.hsm_wire_max_version)),
        _ => None,
    };
    let result: Result<(Option<Vec<u8>>, bool), HandlerError> = match phase {
        Phase::Init(init) => {
            let persister = init.node().get_persister();
            if let Err(e) = persister.enter() {
                return (
                    temporary(id, format!("cannot start the state transaction: {e:?}")),
                    false,
                    true,
                );
            }
            let r = init.handle(msg);
            if let Err(e) = persister.commit() {
                return (
                    temporary(id, format!("cannot commit state: {e:?}")),
                    false,
                    true,
                );
            }
            if let (Ok(_), Some((lowest, highest))) = (&r, wire_versions) {
                let served = highest.min(msgs::DEFAULT_MAX_PROTOCOL_VERSION);
                tracing::info!(
                    "node init: the node speaks hsmd wire versions {lowest} to {highest}, served at \
                     {served}; this signer does not offer splice signing, so Core Lightning v26.04 \
                     and later stop at start with \"splicing needs HSM capable of signing splices!\" \
                     (README.md, versions)"
                );
            }
            r.map(|(done, reply)| (reply.map(|r| r.as_vec()), done))
        }
        Phase::Root(root) => {
            let persister = root.node().get_persister();
            if let Err(e) = persister.enter() {
                return (
                    temporary(id, format!("cannot start the state transaction: {e:?}")),
                    false,
                    true,
                );
            }
            let r = match context.as_ref().filter(|c| c.dbid > 0) {
                Some(ctx) => match <[u8; 33]>::try_from(ctx.peer_id.as_slice()) {
                    Ok(peer) => root
                        .for_new_client(ctx.dbid, PubKey(peer), ctx.dbid)
                        .handle(msg),
                    Err(_) => Err(HandlerError::Temporary(
                        lightning_signer::util::status::Status::invalid_argument(
                            "peer id in the request context is not 33 bytes",
                        ),
                    )),
                },
                None => root.handle(msg),
            };
            if matches!(r, Err(HandlerError::Temporary(_))) {
                // VLS guarantees a temporary error left no mutation; commit the empty transaction.
                let _ = persister.commit();
            } else if let Err(e) = persister.commit() {
                return (
                    temporary(id, format!("cannot commit state: {e:?}")),
                    false,
                    true,
                );
            }
            r.map(|reply| (Some(reply.as_vec()), false))
        }
    };
    match result {
        Ok((Some(bytes), done)) => (response(id, bytes), done, false),
        Ok((None, done)) => (response(id, vec![]), done, false),
        Err(HandlerError::Temporary(status)) => {
            tracing::warn!(
                request = id,
                message = name,
                "temporary failure: {}",
                status.message()
            );
            (temporary(id, status.message().to_string()), false, false)
        }
        Err(e) => {
            let text = format!("{e:?}");
            let tag = vls_tag_in(&text).unwrap_or_else(|| TAG_VLS_REFUSED.to_string());
            let why = format!("VLS refused {name} (request {id}): {text}");
            tracing::error!(%tag, "{why}");
            core.events.emit(
                core.clock.now(),
                EventKind::PaymentRefused,
                "",
                &[tag],
                why,
                0,
            );
            (
                SignerResponse {
                    request_id: id,
                    message: vec![],
                    error: text,
                    is_temporary_failure: false,
                },
                false,
                false,
            )
        }
    }
}

/// One request answered by a [`Session`].
#[derive(Debug)]
pub struct Answered {
    /// What to send back.
    pub response: SignerResponse,
    /// The in-memory node may be ahead of the committed state (VLS panicked, or the commit
    /// failed): rebuild it from the store and restart the connection before the next request.
    pub broken: bool,
}

/// The node side of one connection: the handler phase and the core, answering each request in
/// one transaction. Synchronous; the stream loop runs it off the async runtime.
pub struct Session {
    phase: Phase,
    core: Arc<Core>,
}

impl Session {
    /// A session starting with a fresh init handler (the proxy replays its init on connect).
    pub fn new(init: &InitHandler, core: Arc<Core>) -> Self {
        let mut fresh = init.clone();
        fresh.reset();
        Session {
            phase: Phase::Init(fresh),
            core,
        }
    }

    /// Answer one request: open the request's transaction, let VLS and Warden's approver handle
    /// it, commit durably, and only then return the answer.
    pub fn handle(&mut self, request: SignerRequest) -> Answered {
        let (answered, durable) = self.handle_deferred(request);
        match durable {
            Some(d) => due(&self.core, answered, d),
            None => answered,
        }
    }

    /// [`Session::handle`] up to the commit's durability: the request's writes are applied and
    /// the session is ready for the next request, but the answer may leave the process only
    /// once [`due`] has seen the [`Durable`] through (the stream loop does that on its sender
    /// thread, so the next request runs while this one's `fsync` is under way). `None`: the
    /// answer is already final (a failure, nothing to wait for).
    pub fn handle_deferred(&mut self, request: SignerRequest) -> (Answered, Option<Durable>) {
        let id = request.request_id;
        let core = self.core.clone();
        let txn = match core.store().begin() {
            Ok(t) => t,
            Err(e) => {
                return (
                    Answered {
                        response: temporary(id, format!("cannot open the state transaction: {e}")),
                        broken: false,
                    },
                    None,
                )
            }
        };
        // A decision-bearing request sent again (its answer was lost) is answered from its
        // committed decision: nothing is decided, counted or audited twice.
        let kept = matches!(self.phase, Phase::Root(_))
            && super::replies::carries_decision(&request.message);
        let request_digest = kept.then(|| super::replies::request_digest(&request));
        if kept {
            match super::replies::answered(core.store(), &request) {
                Ok(Some(response)) => {
                    tracing::info!(
                        request = id,
                        "request sent again: answered from its committed decision"
                    );
                    // Nothing is written, but the answer waits until everything applied so far
                    // (the first answer's commit among it) is durable.
                    return match txn.commit_deferred() {
                        Ok(d) => (
                            Answered {
                                response,
                                broken: false,
                            },
                            Some(d),
                        ),
                        Err(e) => (uncommitted(id, &e.to_string()), None),
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    txn.abort();
                    return (
                        Answered {
                            response: temporary(
                                id,
                                format!("cannot read the request's earlier answer: {e}"),
                            ),
                            broken: false,
                        },
                        None,
                    );
                }
            }
        }
        let phase = &mut self.phase;
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer(phase, &core, request)
        }));
        core.metrics.stage("vls", started.elapsed().as_secs_f64());
        let (resp, done, discard) = match outcome {
            Ok(r) => r,
            Err(_) => {
                txn.abort();
                core.reload();
                let why = format!("rule {TAG_PANIC}: VLS panicked on request {id}; the node is restored from its last committed state");
                tracing::error!("{why}");
                core.events.emit(
                    core.clock.now(),
                    EventKind::PaymentRefused,
                    "",
                    &[TAG_PANIC.into()],
                    why.clone(),
                    0,
                );
                return (
                    Answered {
                        response: temporary(id, why),
                        broken: true,
                    },
                    None,
                );
            }
        };
        if let (Some(d), false) = (request_digest, discard) {
            if let Err(e) = super::replies::keep(core.store(), id, d, &resp, core.clock.now()) {
                txn.abort();
                core.reload();
                return (uncommitted(id, &e.to_string()), None);
            }
        }
        let started = std::time::Instant::now();
        let committed = if discard {
            txn.abort();
            Err("VLS's state could not be staged".to_string())
        } else {
            txn.commit_deferred().map_err(|e| e.to_string())
        };
        core.metrics
            .stage("commit", started.elapsed().as_secs_f64());
        let durable = match committed {
            Ok(d) => d,
            Err(e) => {
                core.reload();
                return (uncommitted(id, &e), None);
            }
        };
        if done {
            if let Phase::Init(i) = &self.phase {
                self.phase = Phase::Root(i.clone().into());
                tracing::info!("negotiation complete; serving the node");
            }
        }
        (
            Answered {
                response: resp,
                broken: false,
            },
            Some(durable),
        )
    }
}

/// The answer to a request whose writes could not be committed: a temporary failure, and the
/// connection restarts on a node rebuilt from what is committed.
fn uncommitted(id: u64, error: &str) -> Answered {
    let why = format!("rule {TAG_STORE_FAILURE}: request {id} could not be committed ({error}); answered as a temporary failure, and the node is restored from its last committed state");
    tracing::error!("{why}");
    Answered {
        response: temporary(id, why),
        broken: true,
    }
}

/// Wait until the request behind `answered` is durable; then its answer may be sent. If it
/// never will be, the answer becomes a temporary failure and the node must be rebuilt (the
/// store has already restored Warden's own state, under its writer slot).
pub fn due(core: &Core, answered: Answered, durable: Durable) -> Answered {
    let started = std::time::Instant::now();
    let r = durable.wait();
    core.metrics
        .stage("durable", started.elapsed().as_secs_f64());
    match r {
        Ok(()) => answered,
        Err(e) => uncommitted(answered.response.request_id, &e.to_string()),
    }
}

fn set_connection(core: &Core, state: NodeConnection, detail: String) {
    let mut c = core
        .node_connection
        .write()
        .unwrap_or_else(|p| p.into_inner());
    if *c != state {
        *c = state;
        drop(c);
        core.events.emit(
            core.clock.now(),
            EventKind::NodeConnection,
            "",
            &[],
            detail,
            0,
        );
    }
}

/// Serve the node at `uri` until `shutdown` is set, reconnecting with backoff.
///
/// If VLS panics while handling a request, the request gets a temporary failure, the in-memory
/// node is discarded and `rebuild` restores it from the last committed state, and the
/// connection is restarted so the proxy replays its init: Warden never signs with state that a
/// half-finished request may have changed.
///
/// On a database shared for failover only the current lease holder talks to the node: the
/// proxy hands a request to whichever connection it has and retransmits unanswered ones to a
/// new connection, so a request answered on two connections would stop it. A wardend whose
/// lease lapsed (a pause, the database out of reach) or was taken therefore sends nothing
/// more, not even a temporary failure, closes its connection, and opens a new one only once
/// its lease is current again (a deposed one never); what it left unanswered the proxy
/// retransmits to the next connection. The active wardend reconnects once when the wardend it
/// deposed says it is gone, so requests the proxy handed that one's connection while it was
/// paused are retransmitted too.
pub async fn run(
    mut init: InitHandler,
    core: Arc<Core>,
    uri: String,
    mut shutdown: watch::Receiver<bool>,
    rebuild: Rebuild,
) {
    let mut backoff = Duration::from_millis(200);
    // The node in memory is ahead of the committed state: rebuild before serving again.
    let mut stale = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        match may_connect(&core) {
            Some(true) => {}
            Some(false) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = shutdown.changed() => break,
                }
            }
            None => {
                tracing::error!("this wardend was deposed: it never connects to the node again");
                return;
            }
        }
        if stale {
            match rebuilt(&mut init, &rebuild, &core) {
                Rebuilt::Fresh => stale = false,
                Rebuilt::Stop => return,
                Rebuilt::Hold => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        let connected = tokio::select! {
            c = connect(&uri) => c,
            _ = shutdown.changed() => break,
        };
        let mut client = match connected {
            Ok(c) => c,
            Err(e) => {
                set_connection(
                    &core,
                    NodeConnection::Disconnected,
                    format!("cannot reach the node's hsmd service at {uri}: {e}"),
                );
                tracing::debug!(%uri, error = %e, "node not reachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let (tx, rx) = mpsc::channel::<SignerResponse>(16);
        let mut requests = match client.signer_stream(ReceiverStream::new(rx)).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                set_connection(
                    &core,
                    NodeConnection::Disconnected,
                    format!("the node refused the signer stream: {e}"),
                );
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        set_connection(
            &core,
            NodeConnection::Connected,
            format!("connected to the node at {uri}"),
        );
        let predecessors = gone_predecessors(&core);
        let mut session = Session::new(&init, core.clone());
        // Answers leave from the sender, in order, each once its request is durable; the loop
        // meanwhile handles the next request (group commit). `lost` says a queued request never
        // became durable (the node must be rebuilt) or the lease stopped being current.
        let (queue, mut queued) = mpsc::unbounded_channel::<(Answered, Option<Durable>)>();
        let lost = Arc::new(tokio::sync::Notify::new());
        let sender = {
            let (tx, core, lost) = (tx.clone(), core.clone(), lost.clone());
            tokio::task::spawn_blocking(move || {
                let mut gone = false;
                while let Some((answered, durable)) = queued.blocking_recv() {
                    let answered = match durable {
                        Some(d) => due(&core, answered, d),
                        None => answered,
                    };
                    if answered.broken {
                        lost.notify_one();
                    }
                    if !gone && may_connect(&core) != Some(true) {
                        // Checked as the answer leaves: after a pause this process may no
                        // longer be the one the node should hear from.
                        tracing::warn!("the lease is not current: answers are held back and the connection closes; the node gets them from the active wardend");
                        gone = true;
                        lost.notify_one();
                    }
                    let fatal = !answered.response.error.is_empty()
                        && !answered.response.is_temporary_failure;
                    // With the node gone, keep draining: every queued commit still becomes
                    // durable (or fails) and runs its hooks; only the sending stops.
                    if gone || tx.blocking_send(answered.response).is_err() {
                        gone = true;
                        continue;
                    }
                    if fatal {
                        // The proxy shuts down on a fatal error; expect the stream to end.
                        tracing::warn!(
                            "sent an error answer; CLN's hsmd stops on it, an LDK node gets an error"
                        );
                    }
                }
            })
        };
        drop(tx);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let next = tokio::select! {
                n = requests.next() => n,
                _ = shutdown.changed() => None,
                _ = lost.notified() => {
                    stale = true;
                    None
                }
                _ = tick.tick() => {
                    if may_connect(&core) != Some(true) {
                        // Lapsed or deposed while idle: close, so the node's proxy hands its
                        // requests to the active wardend's connection.
                        stale = true;
                        None
                    } else if gone_predecessors(&core) > predecessors {
                        tracing::info!("the wardend this one deposed is gone: reconnecting, so the node retransmits what it had handed that one");
                        None
                    } else {
                        continue;
                    }
                }
            };
            let Some(Ok(request)) = next else { break };
            if may_connect(&core) != Some(true) {
                // Not even a temporary failure: the request is the active wardend's to answer.
                stale = true;
                break;
            }
            let (answered, durable) =
                tokio::task::block_in_place(|| session.handle_deferred(request));
            let broken = answered.broken;
            if let Err(mpsc::error::SendError((answered, Some(durable)))) =
                queue.send((answered, durable))
            {
                // The sender is gone with the connection; the commit still completes here.
                let _ = due(&core, answered, durable);
                break;
            }
            // A broken node is rebuilt (before the next connection) whether or not the answer
            // reaches the node.
            if broken {
                stale = true;
                break;
            }
        }
        drop(queue);
        let _ = sender.await;
        set_connection(
            &core,
            NodeConnection::Disconnected,
            format!("the node at {uri} disconnected"),
        );
        if *shutdown.borrow() {
            break;
        }
    }
}

/// How many wardends this one deposed have said they are gone (0 on a single-node database).
fn gone_predecessors(core: &Core) -> u64 {
    core.store()
        .lease()
        .map(|l| l.predecessors_gone)
        .unwrap_or(0)
}

/// What became of the node after a request left it ahead of the committed state.
enum Rebuilt {
    /// Rebuilt from the committed state: reconnect and serve.
    Fresh,
    /// It cannot be: the signer stops (it must not sign with state it cannot trust).
    Stop,
    /// On a database shared for failover, not now: the lease is not current or the state
    /// cannot be read (the database is out of reach). Tried again before the next connection;
    /// meanwhile the node's requests wait in its proxy.
    Hold,
}

/// Replace `init` with a node rebuilt from the committed state.
fn rebuilt(init: &mut InitHandler, rebuild: &Rebuild, core: &Core) -> Rebuilt {
    let shared = core.store().lease().is_some();
    if shared {
        if let Err(e) = core.store().fence() {
            tracing::warn!(error = %e, "the node is not rebuilt while the lease is not current; requests are temporary failures meanwhile");
            return Rebuilt::Hold;
        }
    }
    match tokio::task::block_in_place(|| rebuild()) {
        Ok(fresh) => {
            *init = fresh;
            Rebuilt::Fresh
        }
        Err(e) if shared => {
            tracing::warn!(error = %e, "cannot restore the node from the shared database yet; requests are temporary failures meanwhile");
            Rebuilt::Hold
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot restore the node; stopping the signer");
            Rebuilt::Stop
        }
    }
}

/// Whether this wardend may open a stream to the node now: always on a single-node database;
/// on a shared one only while its lease is current. `None`: deposed, never again.
fn may_connect(core: &Core) -> Option<bool> {
    match core.store().lease() {
        None => Some(true),
        Some(l) if l.role == crate::store::Role::Deposed => None,
        Some(_) => Some(core.store().fence().is_ok()),
    }
}

async fn connect(uri: &str) -> Result<HsmdClient<tonic::transport::Channel>, String> {
    let mut client = HsmdClient::connect(uri.to_string())
        .await
        .map_err(|e| e.to_string())?;
    client
        .ping(PingRequest {
            message: "warden".into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}
