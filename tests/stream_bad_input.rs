//! wardend against a node that misbehaves on the hsmd stream: garbage, truncated and unknown
//! messages, input that makes VLS panic, and a node that drops the connection mid-request.
//! A fake `hsmd.Hsmd` server (the service remote_hsmd_socket serves) plays the node, so every
//! byte wardend receives is under the test's control. wardend is a real process on SoftHSM.

mod common;

use common::TestToken;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vls_protocol::msgs::{self, Message, SerBolt};
use vlsd::grpc::hsmd::hsmd_server::{Hsmd, HsmdServer};
use vlsd::grpc::hsmd::{PingReply, PingRequest, SignerRequest, SignerResponse};

/// One signer connection as the test sees it.
struct Conn {
    requests: mpsc::Sender<SignerRequest>,
    responses: mpsc::Receiver<SignerResponse>,
}

struct FakeNode {
    conns: mpsc::Sender<Conn>,
}

#[tonic::async_trait]
impl Hsmd for FakeNode {
    async fn ping(&self, r: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            message: r.into_inner().message,
        }))
    }

    type SignerStreamStream = Pin<Box<dyn Stream<Item = Result<SignerRequest, Status>> + Send>>;

    async fn signer_stream(
        &self,
        r: Request<Streaming<SignerResponse>>,
    ) -> Result<Response<Self::SignerStreamStream>, Status> {
        let mut incoming = r.into_inner();
        let (req_tx, req_rx) = mpsc::channel::<SignerRequest>(8);
        let (resp_tx, resp_rx) = mpsc::channel::<SignerResponse>(8);
        tokio::spawn(async move {
            while let Some(Ok(resp)) = incoming.next().await {
                if resp_tx.send(resp).await.is_err() {
                    break;
                }
            }
        });
        let _ = self
            .conns
            .send(Conn {
                requests: req_tx,
                responses: resp_rx,
            })
            .await;
        Ok(Response::new(Box::pin(ReceiverStream::new(req_rx).map(Ok))))
    }
}

impl Conn {
    async fn ask(&mut self, request_id: u64, message: Vec<u8>) -> SignerResponse {
        self.requests
            .send(SignerRequest {
                request_id,
                context: None,
                message,
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.responses.recv())
            .await
            .expect("wardend answers")
            .expect("stream open")
    }
}

async fn next_conn(conns: &mut mpsc::Receiver<Conn>) -> Conn {
    tokio::time::timeout(Duration::from_secs(20), conns.recv())
        .await
        .expect("wardend connects")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_stream_is_never_fatal_and_wardend_keeps_serving() {
    let t = TestToken::new("stream-bad");
    t.init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (conn_tx, mut conns) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HsmdServer::new(FakeNode { conns: conn_tx }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut wardend = t
        .command("wardend")
        .env("WARDEN_HSMD_ADDRESS", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut c = next_conn(&mut conns).await;
    let init = c.ask(0, warden_testkit::hsmd_init_regtest().as_vec()).await;
    assert!(init.error.is_empty(), "{init:?}");
    assert!(matches!(
        msgs::from_vec(init.message).unwrap(),
        Message::HsmdInitReplyV4(_)
    ));

    // Garbage.
    let r = c.ask(1, vec![0xde, 0xad, 0xbe, 0xef, 0x01]).await;
    assert!(r.is_temporary_failure, "{r:?}");
    assert!(r.error.contains("warden-malformed-message"), "{r:?}");
    // A SignMessage whose length prefix promises more than is there.
    let mut truncated = msgs::SignMessage {
        message: vls_protocol::serde_bolt::Octets(vec![1; 40]),
    }
    .as_vec();
    truncated.truncate(10);
    let r = c.ask(2, truncated).await;
    assert!(
        r.is_temporary_failure && r.error.contains("could not be decoded"),
        "{r:?}"
    );
    // An unknown message type.
    let r = c.ask(3, vec![0xff, 0xf0, 1, 2, 3]).await;
    assert!(r.is_temporary_failure, "{r:?}");
    assert!(
        r.error.contains("unknown message type") || r.error.contains("could not be decoded"),
        "{r:?}"
    );
    // The stream still works.
    let r = c
        .ask(
            4,
            msgs::SignMessage {
                message: vls_protocol::serde_bolt::Octets(b"still here".to_vec()),
            }
            .as_vec(),
        )
        .await;
    assert!(r.error.is_empty() && !r.message.is_empty(), "{r:?}");

    // Input on which VLS itself panics (an invoice hrp that is not UTF-8): a temporary failure,
    // then wardend restores the node from disk and reconnects.
    let r = c
        .ask(
            5,
            msgs::SignInvoice {
                u5bytes: vls_protocol::serde_bolt::Octets(vec![1, 2, 3]),
                hrp: vls_protocol::serde_bolt::Octets(vec![0xff, 0xfe]),
            }
            .as_vec(),
        )
        .await;
    assert!(r.is_temporary_failure, "{r:?}");
    assert!(r.error.contains("warden-signer-panic"), "{r:?}");
    let mut c = next_conn(&mut conns).await;
    // The proxy replays its cached init with request id u64::MAX.
    let init = c
        .ask(u64::MAX, warden_testkit::hsmd_init_regtest().as_vec())
        .await;
    assert!(init.error.is_empty(), "{init:?}");
    let r = c
        .ask(
            6,
            msgs::SignMessage {
                message: vls_protocol::serde_bolt::Octets(b"after panic".to_vec()),
            }
            .as_vec(),
        )
        .await;
    assert!(r.error.is_empty(), "{r:?}");

    // The node drops the connection with a request outstanding: wardend reconnects.
    c.requests
        .send(SignerRequest {
            request_id: 7,
            context: None,
            message: msgs::SignMessage {
                message: vls_protocol::serde_bolt::Octets(b"x".to_vec()),
            }
            .as_vec(),
        })
        .await
        .unwrap();
    drop(c);
    let mut c = next_conn(&mut conns).await;
    let init = c
        .ask(u64::MAX, warden_testkit::hsmd_init_regtest().as_vec())
        .await;
    assert!(init.error.is_empty(), "{init:?}");
    assert!(
        wardend.try_wait().unwrap().is_none(),
        "wardend is still running"
    );
    let _ = wardend.kill();
    let _ = wardend.wait();
}
