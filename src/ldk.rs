//! The node side for LDK applications: the same `hsmd.Hsmd` gRPC service that
//! `remote_hsmd_socket` serves to Core Lightning, served inside the LDK process, and a
//! `vls_protocol_client::Transport` over it. Hand the transport to
//! `vls_protocol_client::KeysManagerClient` and LDK's `NodeSigner`, `SignerProvider`,
//! `EntropySource` and channel signers are all answered by wardend, exactly as for CLN; wardend
//! connects to this service as it does to CLN's proxy.
//!
//! Like the proxy, this side numbers requests, keeps each until it is answered, retransmits the
//! unanswered ones when wardend reconnects, and replays the init message (request id
//! `u64::MAX`) so a restarted wardend negotiates again. The link has no authentication of its
//! own: keep it on loopback or in a tunnel (SECURITY.md).
//!
//! `Transport` calls block; make them from LDK's threads (or `spawn_blocking`), not from inside
//! an async task.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vls_protocol::model::PubKey;
use vls_protocol_client::{Error as ClientError, Transport};
use vlsd::grpc::hsmd::hsmd_server::{Hsmd, HsmdServer};
use vlsd::grpc::hsmd::{HsmRequestContext, PingReply, PingRequest, SignerRequest, SignerResponse};

/// The message id of `HsmdInit2`, replayed to a reconnecting signer.
const HSMD_INIT2: u16 = 1011;
/// Request id the proxy protocol reserves for the replayed init.
const REPLAYED_INIT: u64 = u64::MAX;

type Reply = std::sync::mpsc::Sender<SignerResponse>;

struct Outstanding {
    request: SignerRequest,
    reply: Reply,
}

#[derive(Default)]
struct Shared {
    next_id: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    init: Option<Vec<u8>>,
    /// Feeds the current signer stream; replaced on each connection.
    stream: Option<mpsc::UnboundedSender<SignerRequest>>,
}

/// The node-side link to wardend.
#[derive(Clone)]
pub struct LdkSignerLink {
    shared: Arc<Mutex<Shared>>,
    timeout: Duration,
}

impl std::fmt::Debug for LdkSignerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdkSignerLink").finish_non_exhaustive()
    }
}

impl Default for LdkSignerLink {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl LdkSignerLink {
    /// A link whose calls give up after `timeout` without an answer.
    pub fn new(timeout: Duration) -> Self {
        LdkSignerLink {
            shared: Arc::new(Mutex::new(Shared::default())),
            timeout,
        }
    }

    /// The tonic service to serve (on loopback) for wardend to connect to.
    pub fn service(&self) -> HsmdServer<LdkSignerLink> {
        HsmdServer::new(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(
        &self,
        context: Option<HsmRequestContext>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut delay = Duration::from_millis(200);
        for _ in 0..8 {
            let (tx, rx) = std::sync::mpsc::channel();
            let id = {
                let mut s = self.lock();
                let id = s.next_id;
                s.next_id += 1;
                let request = SignerRequest {
                    request_id: id,
                    context: context.clone(),
                    message: message.clone(),
                };
                if let Some(stream) = &s.stream {
                    let _ = stream.send(request.clone());
                }
                s.outstanding.insert(id, Outstanding { request, reply: tx });
                id
            };
            let Ok(resp) = rx.recv_timeout(self.timeout) else {
                // Not answered in time: forget it, so it is not retransmitted later.
                self.lock().outstanding.remove(&id);
                return Err(ClientError::Transport);
            };
            if resp.is_temporary_failure {
                tracing::warn!(error = %resp.error, "signer temporary failure; retrying");
                std::thread::sleep(delay);
                delay *= 2;
                continue;
            }
            if !resp.error.is_empty() {
                tracing::error!(error = %resp.error, "signer refused");
                return Err(ClientError::Transport);
            }
            return Ok(resp.message);
        }
        Err(ClientError::TransportTransient)
    }
}

impl Transport for LdkSignerLink {
    fn node_call(&self, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.request(None, message)
    }

    fn call(&self, dbid: u64, peer_id: PubKey, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.request(
            Some(HsmRequestContext {
                peer_id: peer_id.0.to_vec(),
                dbid,
                capabilities: 0,
            }),
            message,
        )
    }
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<SignerRequest, Status>> + Send>>;

#[tonic::async_trait]
impl Hsmd for LdkSignerLink {
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
        let mut responses = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel::<SignerRequest>();
        {
            let mut s = self.lock();
            // A new signer connection replaces the old one: replay the init, then everything
            // still unanswered, in order.
            if let Some(init) = &s.init {
                let _ = tx.send(SignerRequest {
                    request_id: REPLAYED_INIT,
                    context: None,
                    message: init.clone(),
                });
            }
            for o in s.outstanding.values() {
                let _ = tx.send(o.request.clone());
            }
            s.stream = Some(tx);
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(Ok(resp)) = responses.next().await {
                if resp.request_id == REPLAYED_INIT {
                    continue;
                }
                let waiting = shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .outstanding
                    .remove(&resp.request_id);
                match waiting {
                    Some(o) => {
                        // Cache the init once it has been answered: a reconnecting signer
                        // gets it replayed; one still waiting for its answer is resent as is.
                        let m = &o.request.message;
                        if resp.error.is_empty()
                            && m.len() >= 2
                            && u16::from_be_bytes([m[0], m[1]]) == HSMD_INIT2
                        {
                            shared.lock().unwrap_or_else(|p| p.into_inner()).init = Some(m.clone());
                        }
                        let _ = o.reply.send(resp);
                    }
                    None => tracing::warn!(
                        request = resp.request_id,
                        "answer to an unknown request ignored"
                    ),
                }
            }
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}
