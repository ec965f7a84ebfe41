//! The admin API: tonic over mutual TLS 1.3 (see [`tls`]), bounded message sizes, a rate limit
//! per client certificate, and authentication failures counted and announced.
//!
//! Being connected authorizes nothing by itself: approvals and rejections carry admin
//! signatures that [`crate::approval`] verifies against the policy.

// tonic's handlers return `Result<_, tonic::Status>`; helpers speak the same type.
#![allow(clippy::result_large_err)]

pub mod accept;
pub mod limits;
pub mod tls;

/// The admin API's messages, server and client, generated from `proto/warden.proto` in the
/// `warden-client` crate.
pub use warden_client::proto;

use crate::approval::{ApprovalError, ApprovalRecord, Decision, RequestState, SignatureFormat};
use crate::core::{Core, FreezeError, GovernanceError, RecoveryError};
use crate::events::{Event, EventKind};
use crate::policy::units::format_duration;
use crate::policy::RecoveryKind;
use futures::Stream;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use limits::{AuthFailures, RateLimiter};
use proto::warden_server::{Warden, WardenServer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Admin API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// TLS; `None` only for the explicit loopback development mode.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Sustained requests per minute per client certificate.
    pub rate_per_minute: u32,
    /// Burst per client certificate.
    pub burst: u32,
    /// Largest request or response message, bytes.
    pub max_message_bytes: usize,
    /// Seconds between the aggregated audit records of failed handshakes.
    pub auth_audit_secs: u64,
    /// Certificate names (CN) that may read but not sign.
    pub viewers: Vec<String>,
    /// Certificate names (CN) that may submit any admin's signature.
    pub relays: Vec<String>,
    /// Certificate names (CN) of Lightning nodes (the CLN plugin): status only.
    pub nodes: Vec<String>,
    /// Connections open at once, authenticated or not.
    pub max_connections: usize,
    /// Connections one client certificate may hold open at once.
    pub max_connections_per_certificate: usize,
}

/// What a client certificate may do. Any certificate chained to the admin CA is an admin's
/// own unless the configuration names it a viewer or a relay; the role narrows what it may
/// do, on top of the signatures that authorize approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The admin named in the certificate: reads, and submits its own signatures only.
    Admin(String),
    /// Reads only (an auditor, a dashboard).
    Viewer(String),
    /// Submits any admin's signature (hardware-wallet admins, an approval service).
    Relay(String),
    /// A Lightning node's own client (the CLN plugin): asks for status, never reads requests,
    /// events or the policy and never signs. A node that is compromised must learn nothing
    /// from the signer that guards it and approve nothing.
    Node(String),
    /// No certificate: the loopback development mode without TLS.
    Development,
}

impl ApiConfig {
    /// Defaults: 120 requests a minute with a burst of 30, 64 KiB messages.
    pub fn with_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        ApiConfig {
            tls: Some(tls),
            rate_per_minute: 120,
            burst: 30,
            max_message_bytes: 64 * 1024,
            auth_audit_secs: AUTH_AUDIT_SECS,
            viewers: Vec::new(),
            relays: Vec::new(),
            nodes: Vec::new(),
            max_connections: accept::MAX_CONNECTIONS,
            max_connections_per_certificate: accept::MAX_CONNECTIONS_PER_CERTIFICATE,
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AdminService {
    core: Arc<Core>,
    limiter: Arc<RateLimiter>,
    auth: Arc<AuthFailures>,
    viewers: Arc<Vec<String>>,
    relays: Arc<Vec<String>>,
    nodes: Arc<Vec<String>>,
    // With TLS, a request without a client certificate is refused, never taken for the
    // loopback development mode.
    tls: bool,
}

/// A check's answer on the wire.
fn check_response(a: crate::core::CheckAnswer) -> proto::CheckResponse {
    use crate::core::CheckOutcome as O;
    let outcome = match a.outcome {
        O::Approved => proto::CheckOutcome::Approved,
        O::Held => proto::CheckOutcome::Held,
        O::Refused => proto::CheckOutcome::Refused,
    };
    proto::CheckResponse {
        outcome: outcome as i32,
        tags: a.tags,
        reason: a.reason,
        request_id: a.request_id.unwrap_or_default(),
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

fn recovery_status(e: RecoveryError) -> Status {
    match e {
        RecoveryError::Approval(e) => to_status(e),
        RecoveryError::Store(e) => Status::unavailable(e.to_string()),
        RecoveryError::Audit(_) => Status::unavailable(e.to_string()),
        RecoveryError::NoDestination
        | RecoveryError::NoChain
        | RecoveryError::NoRecoveryKey
        | RecoveryError::NotFrozen
        | RecoveryError::MemberNotFrozen(_)
        | RecoveryError::NotAllowed(..) => Status::failed_precondition(e.to_string()),
        RecoveryError::Invalid(_) | RecoveryError::ChangesRules(_) | RecoveryError::Member(_) => {
            Status::invalid_argument(e.to_string())
        }
    }
}

fn to_status(e: ApprovalError) -> Status {
    let msg = e.to_string();
    match e {
        ApprovalError::NotFound(_) => Status::not_found(msg),
        ApprovalError::NotPending { .. }
        | ApprovalError::NotRejected { .. }
        | ApprovalError::Expired { .. }
        | ApprovalError::PolicyChanged { .. }
        | ApprovalError::NotYet { .. }
        | ApprovalError::AlreadySigned { .. } => Status::failed_precondition(msg),
        ApprovalError::UnknownAdmin(_)
        | ApprovalError::NotInQuorum { .. }
        | ApprovalError::Signature(_) => Status::permission_denied(msg),
        ApprovalError::Tampered { .. } => Status::data_loss(msg),
        ApprovalError::Store(_) | ApprovalError::Audit(_) => Status::unavailable(msg),
    }
}

fn state_proto(s: RequestState) -> proto::RequestState {
    match s {
        RequestState::Pending => proto::RequestState::Pending,
        RequestState::Approved => proto::RequestState::Approved,
        RequestState::Rejected => proto::RequestState::Rejected,
        RequestState::Expired => proto::RequestState::Expired,
        RequestState::Consumed => proto::RequestState::Consumed,
    }
}

fn format_proto(f: SignatureFormat) -> proto::SignatureFormat {
    match f {
        SignatureFormat::Bip340 => proto::SignatureFormat::Bip340,
        SignatureFormat::BitcoinMessage => proto::SignatureFormat::BitcoinMessage,
    }
}

/// A record as the API shows it, with its state at `now` and what admins must sign.
pub fn record_proto(r: &ApprovalRecord, now: u64) -> proto::ApprovalRequest {
    let rec = r.recovery.as_ref();
    // The freeze an unfreeze request (or a recovery unfreeze) lifts.
    let freeze = r.unfreeze.as_ref().or(rec.and_then(|a| a.freeze.as_ref()));
    proto::ApprovalRequest {
        id: r.id.clone(),
        state: state_proto(r.state_at(now)) as i32,
        kind: r.kind.name().to_string(),
        payment_hash: hex::decode(&r.payment_hash).unwrap_or_default(),
        amount_msat: r.amount_msat(),
        destinations: r.outputs.iter().map(|(d, _)| d.to_string()).collect(),
        description: r.description.clone().unwrap_or_default(),
        rule_tag: r.rule_tag.clone(),
        tags: r.tags.clone(),
        need: r.need as u32,
        of: r.of.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        policy_hash: r.policy_hash.clone(),
        request_digest: hex::decode(&r.request_digest).unwrap_or_default(),
        signatures: r
            .signatures
            .iter()
            .map(|s| proto::AdminSignature {
                admin: s.admin.clone(),
                decision: s.decision.as_str().into(),
                format: format_proto(s.format) as i32,
                signature: hex::decode(&s.signature).unwrap_or_default(),
                signed_at: s.signed_at,
                reason: s.reason.clone().unwrap_or_default(),
            })
            .collect(),
        // Never returned: a BOLT 11 invoice carries the payment secret.
        invoice: String::new(),
        approval_digest: r.digest(Decision::Approve).to_vec(),
        approval_text: r.text(Decision::Approve),
        reject_digest: r.digest(Decision::Reject).to_vec(),
        reject_text: r.text(Decision::Reject),
        reopen_digest: r.digest(Decision::Reopen).to_vec(),
        reopen_text: r.text(Decision::Reopen),
        output_amounts_msat: r.outputs.iter().map(|(_, v)| *v).collect(),
        policy_change_text: r
            .change
            .as_ref()
            .map(|c| c.text.clone())
            .unwrap_or_default(),
        policy_change_hash: r
            .change
            .as_ref()
            .and_then(|c| hex::decode(&c.hash).ok())
            .unwrap_or_default(),
        policy_changes: r
            .change
            .iter()
            .flat_map(|c| c.changes.iter())
            .chain(rec.iter().flat_map(|a| a.changes.iter()))
            .map(|ch| ch.to_string())
            .collect(),
        loosens: r.change.as_ref().is_some_and(|c| c.loosens),
        delay_secs: r.change.as_ref().map(|c| c.delay_secs).unwrap_or(0),
        effective_at: r.effective_at.unwrap_or(0),
        member: r.member.clone().unwrap_or_default(),
        recovery_member: rec.and_then(|a| a.member.clone()).unwrap_or_default(),
        proposer: r
            .change
            .as_ref()
            .map(|c| c.proposer.clone())
            .unwrap_or_default(),
        freeze_id: freeze.map(|f| f.id().to_vec()).unwrap_or_default(),
        freeze_since: freeze.map(|f| f.since).unwrap_or(0),
        freeze_by: freeze.map(|f| f.by.clone()).unwrap_or_default(),
        freeze_reason: freeze.map(|f| f.reason.clone()).unwrap_or_default(),
        freeze_nonce: freeze.map(|f| f.nonce.clone()).unwrap_or_default(),
        recovery_action: rec
            .map(|a| a.action.as_str().to_string())
            .unwrap_or_default(),
        recovery_params_hash: rec
            .and_then(|a| hex::decode(&a.params_hash).ok())
            .unwrap_or_default(),
        recovery_earliest_at: rec.map(|a| a.earliest_at).unwrap_or(0),
        recovery_text: rec.and_then(|a| a.text.clone()).unwrap_or_default(),
        recovery_started_at: rec.and_then(|a| a.started_at).unwrap_or(0),
    }
}

/// An event as the API shows it.
pub fn event_proto(e: &Event) -> proto::Event {
    let kind = match e.kind {
        EventKind::RequestCreated => proto::EventKind::RequestCreated,
        EventKind::RequestSigned => proto::EventKind::RequestSigned,
        EventKind::RequestApproved => proto::EventKind::RequestApproved,
        EventKind::RequestRejected => proto::EventKind::RequestRejected,
        EventKind::RequestExpired => proto::EventKind::RequestExpired,
        EventKind::PaymentApproved => proto::EventKind::PaymentApproved,
        EventKind::PaymentRefused => proto::EventKind::PaymentRefused,
        EventKind::LimitWarning => proto::EventKind::LimitWarning,
        EventKind::Hsm => proto::EventKind::Hsm,
        EventKind::NodeConnection => proto::EventKind::NodeConnection,
        EventKind::AuthFailure => proto::EventKind::AuthFailure,
        EventKind::Policy => proto::EventKind::Policy,
        EventKind::Clock => proto::EventKind::Clock,
        EventKind::Freeze => proto::EventKind::Freeze,
        EventKind::Recovery => proto::EventKind::Recovery,
        EventKind::Channel => proto::EventKind::Channel,
        EventKind::Role => proto::EventKind::Role,
    };
    proto::Event {
        seq: e.seq,
        time: e.time,
        kind: kind as i32,
        request_id: e.request_id.clone(),
        tags: e.tags.clone(),
        message: e.message.clone(),
        amount_msat: e.amount_msat,
    }
}

impl AdminService {
    /// A service over `core`.
    pub fn new(core: Arc<Core>, config: &ApiConfig) -> Self {
        AdminService {
            core,
            limiter: Arc::new(RateLimiter::new(config.rate_per_minute, config.burst)),
            auth: Arc::new(AuthFailures::default()),
            viewers: Arc::new(config.viewers.clone()),
            relays: Arc::new(config.relays.clone()),
            nodes: Arc::new(config.nodes.clone()),
            tls: config.tls.is_some(),
        }
    }

    /// Handshake failures are counted here.
    pub fn auth_failures(&self) -> Arc<AuthFailures> {
        self.auth.clone()
    }

    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let client = req
            .peer_certs()
            .and_then(|certs| {
                certs
                    .first()
                    .map(|c| sha256::Hash::hash(c.as_ref()).to_byte_array())
            })
            .unwrap_or([0u8; 32]);
        if self.limiter.admit(client) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(
                "rate limit reached for this client certificate; wait and retry (admin.rate_per_minute, admin.burst)",
            ))
        }
    }

    /// Run a check off the runtime (it commits); a check that cannot be asked as written is an
    /// invalid argument, naming what was wrong.
    async fn checked(
        &self,
        check: impl FnOnce(&Core) -> Result<crate::core::CheckAnswer, crate::core::CheckError>
            + Send
            + 'static,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let core = self.core.clone();
        let answer = tokio::task::spawn_blocking(move || check(&core))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(check_response(answer)))
    }

    /// The role of the certificate a request came with.
    pub fn role<T>(&self, req: &Request<T>) -> Result<Role, Status> {
        let Some(certs) = req.peer_certs() else {
            if self.tls {
                return Err(Status::permission_denied(
                    "no client certificate reached the admin API; connect with an admin certificate (wardenctl tls)",
                ));
            }
            return Ok(Role::Development);
        };
        let cn = certs
            .first()
            .and_then(|c| common_name(c.as_ref()))
            .ok_or_else(|| {
                Status::permission_denied(
                    "the client certificate has no subject common name; issue it with wardenctl tls init",
                )
            })?;
        Ok(if self.viewers.contains(&cn) {
            Role::Viewer(cn)
        } else if self.nodes.contains(&cn) {
            Role::Node(cn)
        } else if self.relays.contains(&cn) {
            Role::Relay(cn)
        } else if self.core.policy().policy.admins.contains_key(&cn) {
            Role::Admin(cn)
        } else {
            // Admin powers follow the policy in force: a certificate of the CA whose name the
            // policy does not declare (an admin removed by a change or by replace-admins, a
            // client never listed) has none of them. It authenticated with the admin CA, so it
            // counts toward the emergency stop `auth_failures`.
            self.core.note_auth_failure();
            return Err(Status::permission_denied(format!(
                "the certificate of {cn} names no admin of the policy in force ([admins]) and is not listed in admin.viewers, admin.nodes or admin.relays, so it may do nothing here; a removed admin's certificate keeps no power (revoke it at the CA), and a new admin is added by a governed policy change"
            )));
        })
    }

    /// Whether `role` may submit `admin`'s signature.
    fn may_sign_for(role: &Role, admin: &str) -> Result<(), Status> {
        match role {
            Role::Admin(cn) if cn == admin => Ok(()),
            Role::Admin(cn) => Err(Status::permission_denied(format!(
                "the certificate of {cn} may submit only {cn}'s own signatures, not {admin}'s; a relay certificate (admin.relays) may submit others'"
            ))),
            Role::Viewer(cn) => Err(Status::permission_denied(format!(
                "the certificate of {cn} is a viewer's (admin.viewers): it may read, not sign"
            ))),
            Role::Node(cn) => Err(Status::permission_denied(format!(
                "the certificate of {cn} is a node's (admin.nodes): it may ask for status, not sign"
            ))),
            Role::Relay(_) | Role::Development => Ok(()),
        }
    }

    /// The admin a request comes from, for what only an admin's own certificate may do.
    fn admin_name<T>(&self, req: &Request<T>, what: &str) -> Result<String, Status> {
        match self.role(req)? {
            Role::Admin(cn) => Ok(cn),
            Role::Development => Ok("development".to_string()),
            Role::Viewer(cn) | Role::Node(cn) | Role::Relay(cn) => Err(Status::permission_denied(
                format!("the certificate of {cn} is not an admin's: only admins {what}"),
            )),
        }
    }

    /// Who may carry the recovery key's requests: an admin's or a relay's certificate. The
    /// authority is the recovery key's signature, checked by wardend; the certificate only
    /// says the request comes from inside.
    fn may_act_for_recovery<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.role(req)? {
            Role::Admin(_) | Role::Relay(_) | Role::Development => Ok(()),
            Role::Viewer(cn) | Role::Node(cn) => Err(Status::permission_denied(format!(
                "the certificate of {cn} may not carry recovery actions; use an admin's or a relay's"
            ))),
        }
    }

    /// Who may ask what signing would decide: anyone but a viewer (a check may open an
    /// approval request, which is a write).
    fn may_check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.role(req)? {
            Role::Viewer(cn) => Err(Status::permission_denied(format!(
                "the certificate of {cn} is a viewer's (admin.viewers): it may not ask for checks, which can open approval requests"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuse a node's certificate what only people may read: requests, events, the policy.
    fn may_read<T>(&self, req: &Request<T>, what: &str) -> Result<(), Status> {
        match self.role(req)? {
            Role::Node(cn) => Err(Status::permission_denied(format!(
                "the certificate of {cn} is a node's (admin.nodes): it may ask for status, not read {what}"
            ))),
            _ => Ok(()),
        }
    }

    fn decide_as(
        &self,
        request: Request<proto::DecisionRequest>,
        decision: Decision,
    ) -> Result<Response<proto::DecisionResponse>, Status> {
        self.admit(&request)?;
        let role = self.role(&request)?;
        let req = request.into_inner();
        Self::may_sign_for(&role, &req.admin)?;
        self.decide(req, decision)
    }

    fn decide(
        &self,
        req: proto::DecisionRequest,
        decision: Decision,
    ) -> Result<Response<proto::DecisionResponse>, Status> {
        let format = match proto::SignatureFormat::try_from(req.format) {
            Ok(proto::SignatureFormat::Bip340) => SignatureFormat::Bip340,
            Ok(proto::SignatureFormat::BitcoinMessage) => SignatureFormat::BitcoinMessage,
            _ => {
                return Err(Status::invalid_argument(
                    "format must be BIP340 or BITCOIN_MESSAGE",
                ))
            }
        };
        if req.id.is_empty() || req.admin.is_empty() || req.signature.is_empty() {
            return Err(Status::invalid_argument(
                "id, admin and signature are required",
            ));
        }
        if req.reason.len() > 1_000 {
            return Err(Status::invalid_argument("reason is limited to 1,000 bytes"));
        }
        let now = self.core.clock.now();
        let reason = (!req.reason.is_empty()).then(|| req.reason.clone());
        let out = self
            .core
            .decide_request(
                &req.id,
                &req.admin,
                decision,
                format,
                &req.signature,
                reason,
            )
            .map_err(to_status)?;
        Ok(Response::new(proto::DecisionResponse {
            request: Some(record_proto(&out.record, now)),
            message: out.message,
        }))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Warden for AdminService {
    async fn list_pending(
        &self,
        request: Request<proto::ListPendingRequest>,
    ) -> Result<Response<proto::ListPendingResponse>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "approval requests")?;
        let now = self.core.clock.now();
        let req = request.into_inner();
        let size = match req.page_size {
            0 => 100,
            n => (n as usize).min(1_000),
        };
        let list = self
            .core
            .approvals
            .list_pending(now)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Pages follow the list's order (creation time, then id); the token is the last id.
        let start = if req.page_token.is_empty() {
            0
        } else {
            match list.iter().position(|r| r.id == req.page_token) {
                Some(i) => i + 1,
                None => {
                    return Err(Status::invalid_argument(format!(
                        "page_token {} names no pending request (it may have been decided since); list again from the first page",
                        req.page_token
                    )))
                }
            }
        };
        let page: Vec<_> = list.iter().skip(start).take(size).collect();
        let next_page_token = if start + page.len() < list.len() {
            page.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListPendingResponse {
            requests: page.iter().map(|r| record_proto(r, now)).collect(),
            next_page_token,
        }))
    }

    async fn get_request(
        &self,
        request: Request<proto::GetRequestRequest>,
    ) -> Result<Response<proto::ApprovalRequest>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "approval requests")?;
        let id = request.into_inner().id;
        let r = self.core.approvals.get(&id).map_err(to_status)?;
        Ok(Response::new(record_proto(&r, self.core.clock.now())))
    }

    async fn approve(
        &self,
        request: Request<proto::DecisionRequest>,
    ) -> Result<Response<proto::DecisionResponse>, Status> {
        self.decide_as(request, Decision::Approve)
    }

    async fn reject(
        &self,
        request: Request<proto::DecisionRequest>,
    ) -> Result<Response<proto::DecisionResponse>, Status> {
        self.decide_as(request, Decision::Reject)
    }

    async fn reopen(
        &self,
        request: Request<proto::DecisionRequest>,
    ) -> Result<Response<proto::DecisionResponse>, Status> {
        self.decide_as(request, Decision::Reopen)
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "events")?;
        use tokio_stream::StreamExt;
        let rx = self.core.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|item| match item {
            Ok(e) => Ok(event_proto(&e)),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Ok(proto::Event {
                    message: format!("this watcher fell behind and missed {n} events"),
                    ..Default::default()
                })
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.admit(&request)?;
        let role = self.role(&request)?;
        let now = self.core.clock.now();
        let lease = self.core.store().lease();
        if let Role::Node(_) = role {
            // A node learns that the signer is up, for which node, whether it is frozen and
            // which wardend serves it: not the windows, the freeze's reason, recovery actions
            // or pending requests (a compromised node must learn nothing that helps it).
            return Ok(Response::new(proto::StatusResponse {
                node_id: self
                    .core
                    .node_id
                    .read()
                    .map(|s| s.clone())
                    .unwrap_or_default(),
                node_connection: self.core.connection().as_str().to_string(),
                time: now,
                ha_role: lease
                    .as_ref()
                    .map(|l| l.role.name().to_string())
                    .unwrap_or_default(),
                ha_epoch: lease.as_ref().map(|l| l.epoch).unwrap_or(0),
                frozen: if self.core.frozen().is_some() {
                    "frozen".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }));
        }
        let loaded = self.core.policy();
        self.core.refresh_shared();
        let windows = self
            .core
            .window_usage(now, true)
            .into_iter()
            .map(|w| proto::WindowUsage {
                tag: w.tag,
                window: format_duration(w.window_secs),
                scope: w.scope.into(),
                used_msat: w.used_msat,
                limit_msat: w.limit_msat.unwrap_or(0),
                used_count: w.used_count,
                limit_count: w.limit_count.unwrap_or(0),
            })
            .collect();
        let pending = self
            .core
            .approvals
            .list_pending(now)
            .map_err(|e| Status::unavailable(e.to_string()))?
            .len() as u32;
        Ok(Response::new(proto::StatusResponse {
            node_id: self
                .core
                .node_id
                .read()
                .map(|s| s.clone())
                .unwrap_or_default(),
            policy_hash: loaded.policy.hash_hex(),
            policy_name: loaded.policy.name.clone().unwrap_or_default(),
            windows,
            pending,
            node_connection: self.core.connection().as_str().to_string(),
            time: now,
            auth_failures: self.auth.total(),
            policy_note: self.core.policy_note().unwrap_or_default(),
            recovery: self.core.recovery_lines(now),
            fleet: self.core.fleet_line(),
            ha_role: lease
                .as_ref()
                .map(|l| l.role.name().to_string())
                .unwrap_or_default(),
            ha_epoch: lease.as_ref().map(|l| l.epoch).unwrap_or(0),
            ha_lease_age_ms: lease
                .as_ref()
                .and_then(|l| l.renewed_ago)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            frozen: self
                .core
                .frozen()
                .map(|f| {
                    let whom = match (&f.member, self.core.fleet_line().is_empty()) {
                        (Some(m), _) => format!(" (fleet member {m} alone)"),
                        (None, false) => " (the whole fleet)".to_string(),
                        (None, true) => String::new(),
                    };
                    format!(
                        "since {} by {}: {}{whom}",
                        crate::clock::format_utc(f.since),
                        f.by,
                        f.reason
                    )
                })
                .unwrap_or_default(),
        }))
    }

    async fn get_policy(
        &self,
        request: Request<proto::GetPolicyRequest>,
    ) -> Result<Response<proto::GetPolicyResponse>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "the policy")?;
        let loaded = self.core.policy();
        Ok(Response::new(proto::GetPolicyResponse {
            policy_hash: loaded.policy.hash_hex(),
            name: loaded.policy.name.clone().unwrap_or_default(),
            text: loaded.text,
        }))
    }

    async fn propose_policy(
        &self,
        request: Request<proto::ProposePolicyRequest>,
    ) -> Result<Response<proto::ProposePolicyResponse>, Status> {
        self.admit(&request)?;
        let proposer = self.admin_name(&request, "propose policy changes")?;
        let text = request.into_inner().text;
        let now = self.core.clock.now();
        let core = self.core.clone();
        let p = tokio::task::spawn_blocking(move || core.propose_policy(&text, &proposer))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                GovernanceError::Invalid(_)
                | GovernanceError::Unchanged(_)
                | GovernanceError::NoQuorum => Status::invalid_argument(e.to_string()),
                GovernanceError::Approval(e) => to_status(e),
                other => Status::unavailable(other.to_string()),
            })?;
        Ok(Response::new(proto::ProposePolicyResponse {
            request: Some(record_proto(&p.record, now)),
            created: p.created,
            message: p.message,
        }))
    }

    async fn freeze(
        &self,
        request: Request<proto::FreezeRequest>,
    ) -> Result<Response<proto::FreezeResponse>, Status> {
        self.admit(&request)?;
        let by = self.admin_name(&request, "freeze the signer")?;
        let proto::FreezeRequest { reason, member } = request.into_inner();
        if reason.trim().is_empty() || reason.len() > 1_000 {
            return Err(Status::invalid_argument(
                "a freeze needs a reason (at most 1,000 bytes): wardenctl freeze --reason \"...\"",
            ));
        }
        let core = self.core.clone();
        let (f, created) = tokio::task::spawn_blocking(move || {
            if member.is_empty() {
                core.freeze(&by, &reason).map_err(FreezeError::from)
            } else {
                core.freeze_member(&by, &reason, &member)
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            FreezeError::NotMember(_) => Status::invalid_argument(e.to_string()),
            other => Status::unavailable(other.to_string()),
        })?;
        let message = if created {
            match &f.member {
                None => "the signer is frozen: payments and on-chain spends are refused until the governance quorum lifts it (wardenctl unfreeze)".to_string(),
                Some(m) => format!("fleet member {m} is frozen by {}: its payments and on-chain spends are refused until the governance quorum lifts it (wardenctl unfreeze --member {m}); the other members go on", f.by),
            }
        } else {
            format!(
                "the signer was already frozen since {} by {}: {}",
                crate::clock::format_utc(f.since),
                f.by,
                f.reason
            )
        };
        Ok(Response::new(proto::FreezeResponse {
            created,
            since: f.since,
            by: f.by,
            reason: f.reason,
            message,
        }))
    }

    async fn unfreeze(
        &self,
        request: Request<proto::UnfreezeRequest>,
    ) -> Result<Response<proto::UnfreezeResponse>, Status> {
        self.admit(&request)?;
        let by = self.admin_name(&request, "ask to lift the freeze")?;
        let member = request.into_inner().member;
        let now = self.core.clock.now();
        let core = self.core.clone();
        let u = tokio::task::spawn_blocking(move || {
            if member.is_empty() {
                core.request_unfreeze(&by)
            } else {
                core.request_member_unfreeze(&by, &member)
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            FreezeError::NotFrozen | FreezeError::NoQuorum => {
                Status::failed_precondition(e.to_string())
            }
            other => Status::unavailable(other.to_string()),
        })?;
        Ok(Response::new(proto::UnfreezeResponse {
            request: Some(record_proto(&u.record, now)),
            created: u.created,
            message: u.message,
        }))
    }

    async fn open_recovery(
        &self,
        request: Request<proto::OpenRecoveryRequest>,
    ) -> Result<Response<proto::ApprovalRequest>, Status> {
        self.admit(&request)?;
        self.may_act_for_recovery(&request)?;
        let req = request.into_inner();
        let action = RecoveryKind::parse(&req.action).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown recovery action \"{}\"; the actions are \"replace-admins\", \"unfreeze\" and \"sweep\"",
                req.action
            ))
        })?;
        let text = (!req.policy_text.is_empty()).then_some(req.policy_text);
        let member = (!req.member.is_empty()).then_some(req.member);
        let now = self.core.clock.now();
        let core = self.core.clone();
        let (record, _) =
            tokio::task::spawn_blocking(move || core.open_recovery(action, text, member))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(recovery_status)?;
        Ok(Response::new(record_proto(&record, now)))
    }

    async fn start_recovery(
        &self,
        request: Request<proto::DecisionRequest>,
    ) -> Result<Response<proto::DecisionResponse>, Status> {
        self.admit(&request)?;
        self.may_act_for_recovery(&request)?;
        let req = request.into_inner();
        let format = match proto::SignatureFormat::try_from(req.format) {
            Ok(proto::SignatureFormat::Bip340) => SignatureFormat::Bip340,
            Ok(proto::SignatureFormat::BitcoinMessage) => SignatureFormat::BitcoinMessage,
            _ => {
                return Err(Status::invalid_argument(
                    "format must be BIP340 or BITCOIN_MESSAGE",
                ))
            }
        };
        let now = self.core.clock.now();
        let core = self.core.clone();
        let record = tokio::task::spawn_blocking(move || {
            core.start_recovery(&req.id, format, &req.signature)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(recovery_status)?;
        let earliest = record.recovery.as_ref().map(|a| a.earliest_at).unwrap_or(0);
        Ok(Response::new(proto::DecisionResponse {
            message: format!(
                "recovery action {} started; executable from {} unless the admins' quorum cancels it",
                record.id,
                crate::clock::format_utc(earliest)
            ),
            request: Some(record_proto(&record, now)),
        }))
    }

    async fn execute_recovery(
        &self,
        request: Request<proto::ExecuteRecoveryRequest>,
    ) -> Result<Response<proto::ExecuteRecoveryResponse>, Status> {
        self.admit(&request)?;
        self.may_act_for_recovery(&request)?;
        let id = request.into_inner().id;
        let core = self.core.clone();
        let message = tokio::task::spawn_blocking(move || core.execute_recovery(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(recovery_status)?;
        Ok(Response::new(proto::ExecuteRecoveryResponse { message }))
    }

    async fn check_spend(
        &self,
        request: Request<proto::CheckSpendRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        self.admit(&request)?;
        self.may_check(&request)?;
        let req = request.into_inner();
        let outputs: Vec<(String, u64)> = req
            .outputs
            .into_iter()
            .map(|o| (o.address, o.amount_sat))
            .collect();
        self.checked(move |core| {
            if req.psbt.is_empty() {
                core.check_spend(&outputs, &req.command, req.feerate_per_kw)
            } else if outputs.is_empty() {
                core.check_psbt(&req.psbt, &req.command)
            } else {
                Err(crate::core::CheckError::Psbt(
                    "a check names either its outputs or a PSBT, not both".into(),
                ))
            }
        })
        .await
    }

    async fn check_payment(
        &self,
        request: Request<proto::CheckPaymentRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        self.admit(&request)?;
        self.may_check(&request)?;
        let req = request.into_inner();
        self.checked(move |core| {
            if !req.invoice.is_empty() {
                core.check_invoice(&req.invoice, &req.command)
            } else if !req.keysend_destination.is_empty() {
                core.check_keysend_unhashed(&req.keysend_destination, req.amount_msat, &req.command)
            } else {
                core.check_payment_hash(&req.payment_hash, &req.command)
            }
        })
        .await
    }

    async fn check_channel_open(
        &self,
        request: Request<proto::CheckChannelOpenRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        self.admit(&request)?;
        self.may_check(&request)?;
        let req = request.into_inner();
        let opens: Vec<_> = req
            .opens
            .into_iter()
            .map(|o| (o.peer, o.amount_sat, o.private, o.incoming))
            .collect();
        self.checked(move |core| core.check_channels(&opens, &req.command, req.feerate_per_kw))
            .await
    }

    async fn list_channels(
        &self,
        request: Request<proto::ListChannelsRequest>,
    ) -> Result<Response<proto::ListChannelsResponse>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "the channels")?;
        let core = self.core.clone();
        let channels = tokio::task::spawn_blocking(move || core.channels())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|c| proto::Channel {
                id: c.id,
                peer: c.peer.unwrap_or_default(),
                funding: c.funding.unwrap_or_default(),
                outbound: c.outbound,
                capacity_msat: c.capacity_msat,
                local_msat: c.local_msat,
                remote_msat: c.remote_msat,
                offered_htlcs: c.offered_htlcs,
                offered_msat: c.offered_msat,
                received_htlcs: c.received_htlcs,
                received_msat: c.received_msat,
                state: c.phase.as_str().to_string(),
            })
            .collect();
        Ok(Response::new(proto::ListChannelsResponse { channels }))
    }

    async fn list_fleet(
        &self,
        request: Request<proto::ListFleetRequest>,
    ) -> Result<Response<proto::ListFleetResponse>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "the fleet")?;
        let core = self.core.clone();
        let view = tokio::task::spawn_blocking(move || {
            core.refresh_shared();
            core.fleet()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::unavailable(e.to_string()))?
        .ok_or_else(|| {
            Status::failed_precondition(
                "this wardend is not a fleet member; a fleet needs store.backend = \"postgres\" and [fleet] name and member",
            )
        })?;
        Ok(Response::new(proto::ListFleetResponse {
            fleet: view.name,
            frozen: view.frozen,
            members: view
                .members
                .into_iter()
                .map(|m| proto::FleetMember {
                    name: m.name,
                    node_id: m.node_id,
                    seed_id: m.seed_id.unwrap_or_default(),
                    joined_at: m.joined_at.unwrap_or(0),
                    seen_at: m.seen_at.unwrap_or(0),
                    standing: m.standing.as_str().into(),
                    frozen_alone: m.frozen_alone,
                    this: m.this,
                })
                .collect(),
        }))
    }

    async fn policy_history(
        &self,
        request: Request<proto::PolicyHistoryRequest>,
    ) -> Result<Response<proto::PolicyHistoryResponse>, Status> {
        self.admit(&request)?;
        self.may_read(&request, "the policy history")?;
        let versions = self
            .core
            .policy_history()
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_iter()
            .map(|v| proto::PolicyVersion {
                seq: v.seq,
                hash: v.hash,
                request_id: v.request_id.unwrap_or_default(),
                approved_by: v.approved_by,
                proposed_at: v.proposed_at,
                took_effect_at: v.took_effect_at,
                changes: v.changes.iter().map(|c| c.to_string()).collect(),
            })
            .collect();
        Ok(Response::new(proto::PolicyHistoryResponse { versions }))
    }
}

/// Serve the admin API on `listener` until `shutdown` resolves. TLS handshakes run in their own
/// tasks (with a 10 s limit), so a slow or hostile client never holds up the others; every
/// failed handshake is counted and repeated failures are announced.
pub async fn serve(
    core: Arc<Core>,
    config: ApiConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = AdminService::new(core.clone(), &config);
    let auth = service.auth_failures();
    let svc = WardenServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes.max(1 << 20));
    let server = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(32)
        .timeout(Duration::from_secs(30))
        // A peer that vanished stops holding its connection's slot.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(svc);
    match config.tls {
        None => {
            tracing::warn!(addr = ?listener.local_addr().ok(), "admin API serving WITHOUT TLS (loopback development mode)");
            server
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<
                    accept::Slotted<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
                    std::io::Error,
                >,
            >(64);
            let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
            let in_progress = accept::PerSource::new(accept::MAX_HANDSHAKES_PER_SOURCE);
            let per_certificate = accept::PerSource::new(config.max_connections_per_certificate);
            // Handshakes cost CPU before anyone is authenticated: a bounded number at once, and
            // a bounded rate per source address.
            let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
            // Failed handshakes spend a source's budget; a source that spent it is dropped at
            // once, before any TLS work, until its budget refills. Clients that authenticate
            // spend nothing.
            let per_source = Arc::new(RateLimiter::new(FAILURES_PER_MINUTE, FAILURE_BURST));
            let auth_audit_secs = config.auth_audit_secs;
            let auditor = {
                let (core, auth) = (core.clone(), auth.clone());
                tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(Duration::from_secs(auth_audit_secs.max(1)));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let (core, auth) = (core.clone(), auth.clone());
                        let _ =
                            tokio::task::spawn_blocking(move || audit_auth_failures(&core, &auth))
                                .await;
                    }
                })
            };
            let (audit_core, audit_auth) = (core.clone(), auth.clone());
            let accept_loop = tokio::spawn(async move {
                loop {
                    let (tcp, peer) = match listener.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin API accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let source =
                        sha256::Hash::hash(accept::source_of(peer.ip()).as_bytes()).to_byte_array();
                    if !per_source.has_token(source) {
                        failed(
                            &core,
                            &auth,
                            peer,
                            "dropped: too many failed handshakes from this address",
                        );
                        continue;
                    }
                    let Ok(slot) = connections.clone().try_acquire_owned() else {
                        failed(&core, &auth, peer, "too many connections open");
                        continue;
                    };
                    let Some(counted) = in_progress.begin(source) else {
                        failed(
                            &core,
                            &auth,
                            peer,
                            "too many handshakes in progress from this address",
                        );
                        continue;
                    };
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        failed(&core, &auth, peer, "too many handshakes in progress");
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    let auth = auth.clone();
                    let core = core.clone();
                    let per_source = per_source.clone();
                    let per_certificate = per_certificate.clone();
                    tokio::spawn(async move {
                        let outcome =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await;
                        drop((permit, counted));
                        match outcome {
                            Ok(Ok(tls)) => {
                                let cn = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| common_name(c.as_ref()));
                                let counted = match &cn {
                                    Some(cn) => {
                                        let key = sha256::Hash::hash(cn.as_bytes()).to_byte_array();
                                        match per_certificate.begin(key) {
                                            Some(c) => Some(c),
                                            None => {
                                                failed(
                                                    &core,
                                                    &auth,
                                                    peer,
                                                    &format!("too many connections open for the certificate of {cn}"),
                                                );
                                                return;
                                            }
                                        }
                                    }
                                    None => None,
                                };
                                let _ = tx.send(Ok(accept::Slotted::new(tls, slot, counted))).await;
                            }
                            Ok(Err(e)) => {
                                per_source.admit(source);
                                failed(&core, &auth, peer, &e.to_string());
                            }
                            Err(_) => {
                                per_source.admit(source);
                                failed(&core, &auth, peer, "handshake timed out")
                            }
                        }
                    });
                }
            });
            let result = server
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                    shutdown,
                )
                .await;
            accept_loop.abort();
            auditor.abort();
            audit_auth_failures(&audit_core, &audit_auth);
            result
        }
    }
}

/// A connection refused before any call: counted, logged and audited. It does not count toward
/// `[emergency_stop] auth_failures`, which only the quorum lifts: anyone who can reach the port
/// can fail a handshake, with no certificate or with any certificate at all (an expired one is
/// refused before its issuer is even looked at), and a legitimate client can reconnect past its
/// connection limit. Only a certificate the admin CA issued, refused for what it names, counts
/// (see [`AdminService::role`]).
fn failed(core: &Core, auth: &AuthFailures, peer: SocketAddr, detail: &str) {
    core.metrics.auth_failure();
    auth.record(
        &accept::source_of(peer.ip()),
        detail,
        &core.events,
        core.clock.now(),
    );
}

/// TLS handshakes in progress at once; more are dropped (and counted as failures).
pub const MAX_CONCURRENT_HANDSHAKES: usize = 64;
/// Failed handshakes per minute from one address, sustained, before its connections are
/// dropped unanswered.
pub const FAILURES_PER_MINUTE: u32 = 60;
/// Failed handshakes from one address at once before [`FAILURES_PER_MINUTE`] applies.
pub const FAILURE_BURST: u32 = 20;

/// Seconds between the aggregated audit records of authentication failures.
pub const AUTH_AUDIT_SECS: u64 = 60;

/// Write the failures counted since the last call as one audit record (nothing when there
/// were none). The admin API calls it every [`ApiConfig::auth_audit_secs`] and when it stops.
pub fn audit_auth_failures(core: &Core, auth: &AuthFailures) {
    let drained = auth.drain();
    if drained.is_empty() {
        return;
    }
    let total: u64 = drained.values().map(|s| s.count).sum();
    let data = serde_json::json!({"failures": total, "by_source": &drained});
    if let Err(e) = core.audit().append(core.clock.now(), "auth-failures", data) {
        tracing::error!(error = %e, "could not audit authentication failures; keeping the counts for the next interval");
        auth.restore(drained);
    }
}
