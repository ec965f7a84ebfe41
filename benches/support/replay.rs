//! Channel messages replayed into a bare VLS handler (issue 29, item 2): the floor wardend's CPU
//! per request is compared with, for the same requests.
//!
//! [`Relay`] sits between wardend and the node's signer link (wardend dials it as it dials the
//! node) and passes both directions through unchanged, keeping every request the node sent in
//! order. [`replay_cpu`] then feeds those requests, from the first, into a VLS handler built in
//! this process from wardend's own seed (VLS's validation with Warden's VLS settings, VLS's
//! positive approver, no persister, no gRPC) and returns the CPU this thread spent on the ones
//! from `timed_from` on, by message kind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vls_protocol::model::PubKey;
use vls_protocol::msgs::{self, Message};
use vlsd::grpc::hsmd::hsmd_client::HsmdClient;
use vlsd::grpc::hsmd::hsmd_server::{Hsmd, HsmdServer};
use vlsd::grpc::hsmd::{PingReply, PingRequest, SignerRequest, SignerResponse};

/// Requests as the node sent them, answered or not.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<SignerRequest>>>);

impl Recorded {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn take(&self) -> Vec<SignerRequest> {
        self.0.lock().unwrap().clone()
    }
}

struct RelayService {
    upstream: u16,
    recorded: Recorded,
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<SignerRequest, Status>> + Send>>;

#[tonic::async_trait]
impl Hsmd for RelayService {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            message: request.into_inner().message,
        }))
    }

    type SignerStreamStream = RequestStream;

    async fn signer_stream(
        &self,
        request: Request<Streaming<SignerResponse>>,
    ) -> Result<Response<RequestStream>, Status> {
        let mut from_wardend = request.into_inner();
        let mut client = HsmdClient::connect(format!("http://127.0.0.1:{}", self.upstream))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SignerResponse>();
        tokio::spawn(async move {
            while let Some(Ok(r)) = from_wardend.next().await {
                if tx.send(r).is_err() {
                    break;
                }
            }
        });
        let upstream = client
            .signer_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let recorded = self.recorded.clone();
        // tonic's Status is the stream's error type, however large clippy finds it.
        #[allow(clippy::result_large_err)]
        let out = upstream.map(move |r| {
            // The client lives as long as the stream it opened.
            let _ = &client;
            if let Ok(req) = &r {
                recorded.0.lock().unwrap().push(req.clone());
            }
            r
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// A relay on a port of its own in front of the link listening on `upstream`.
pub struct Relay {
    pub port: u16,
    pub recorded: Recorded,
}

impl Relay {
    pub fn start(rt: &tokio::runtime::Runtime, upstream: u16) -> Relay {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let recorded = Recorded::default();
        let service = RelayService {
            upstream,
            recorded: recorded.clone(),
        };
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(HsmdServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Relay { port, recorded }
    }
}

/// This thread's CPU seconds, to the nanosecond (`/proc`'s ticks are 10 ms, longer than most
/// requests).
fn thread_cpu() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9
}

/// CPU seconds and count per message kind.
pub type ByKind = BTreeMap<String, (f64, usize)>;

fn kind(message: &[u8]) -> String {
    match msgs::from_vec(message.to_vec()) {
        Ok(m) => {
            let name = format!("{m:?}");
            name.split(['(', ' ', '{'])
                .next()
                .unwrap_or("?")
                .to_string()
        }
        Err(_) => "unknown".into(),
    }
}

/// The message kind of each request, for counting what wardend answered.
pub fn kinds(requests: &[SignerRequest]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry(kind(&r.message)).or_default() += 1;
    }
    out
}

/// Feed `requests` in order into a bare handler on `seed`; CPU per kind of those from
/// `timed_from` on. Warden's own messages (its extension range), which VLS does not know, are
/// skipped and not counted. Panics if VLS refuses one the node sent (the replay would diverge).
pub fn replay_cpu(seed: [u8; 32], requests: &[SignerRequest], timed_from: usize) -> ByKind {
    use lightning_signer::node::NodeServices;
    use lightning_signer::policy::simple_validator::{
        make_simple_policy, OptionizedSimplePolicy, SimpleValidatorFactory,
    };
    use lightning_signer::signer::ClockStartingTimeFactory;
    use lightning_signer::util::clock::StandardClock;
    use lightning_signer::util::velocity::VelocityControlSpec;
    use vls_protocol_signer::handler::{Handler, HandlerBuilder, RootHandler};
    let network = lightning_signer::bitcoin::Network::Regtest;
    // VLS's policy as wardend configures it (src/signer/mod.rs, vls_policy).
    let mut policy = make_simple_policy(network, OptionizedSimplePolicy::default());
    policy.max_invoices = 150_000;
    policy.global_velocity_control = VelocityControlSpec::UNLIMITED;
    policy.min_feerate_per_kw = warden::signer::VLS_MIN_FEERATE_PER_KW;
    let services = NodeServices {
        validator_factory: Arc::new(SimpleValidatorFactory::new_with_policy(policy)),
        starting_time_factory: ClockStartingTimeFactory::new(),
        persister: Arc::new(lightning_signer::persist::DummyPersister),
        clock: Arc::new(StandardClock()),
        trusted_oracle_pubkeys: vec![],
    };
    let mut init = Some(
        HandlerBuilder::new(network, 0, services, seed)
            .approver(Arc::new(vls_protocol_signer::approver::PositiveApprover()))
            .build()
            .unwrap(),
    );
    let mut root: Option<RootHandler> = None;
    let mut out = ByKind::new();
    for (i, r) in requests.iter().enumerate() {
        let Ok(message) = msgs::from_vec(r.message.clone()) else {
            continue;
        };
        // Warden's own messages, and the init the link replays to each new connection.
        if matches!(message, Message::Unknown(_)) || (root.is_some() && r.request_id == u64::MAX) {
            continue;
        }
        let name = kind(&r.message);
        let before = thread_cpu();
        match &root {
            None => {
                let handler = init.as_mut().expect("the init handler until init is done");
                let (done, _) = handler
                    .handle(message)
                    .unwrap_or_else(|e| panic!("request {i} ({name}): {e:?}"));
                if done {
                    root = init.take().map(Into::<RootHandler>::into);
                }
            }
            Some(root) => {
                let reply = match r.context.as_ref().filter(|c| c.dbid > 0) {
                    Some(ctx) => {
                        let peer: [u8; 33] = ctx.peer_id.as_slice().try_into().unwrap();
                        root.for_new_client(ctx.dbid, PubKey(peer), ctx.dbid)
                            .handle(message)
                    }
                    None => root.handle(message),
                };
                reply.unwrap_or_else(|e| panic!("request {i} ({name}): {e:?}"));
            }
        }
        if i >= timed_from {
            let e = out.entry(name).or_default();
            e.0 += thread_cpu() - before;
            e.1 += 1;
        }
    }
    out
}
