//! The admin API under abuse: over a thousand malformed or unauthorised requests against a real
//! server (mutual TLS on loopback, real certificates): no client certificate, a certificate from
//! another CA, an expired certificate from the admin CA, bytes that are not TLS, a flood of
//! handshakes that never finish, oversized messages, random bytes as protobuf, approvals with
//! wrong signatures, unknown ids. Every one is refused with the right status; a real admin is
//! served throughout; nothing in the store changes but the aggregated record of the failed
//! handshakes; memory stays bounded.
//!
//! Each kind of unauthenticated client comes from its own loopback address (127.0.0.N), so the
//! per-address budget of failed handshakes that one kind spends does not hide the next kind's
//! refusal reason, and never touches the admins' address (127.0.0.1).

mod common;

use common::api::AdminHarness;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use warden::api::proto;
use warden::store::Namespace;

const NO_CERT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FOREIGN_CA: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const EXPIRED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
const NOT_TLS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
const FLOOD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

async fn connect_from(src: IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn pem_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .unwrap()
}

fn pem_key(pem: &[u8]) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut &pem[..]).unwrap().unwrap()
}

/// A TLS client that trusts the admin CA and presents `identity` (certificate and key PEM).
fn client_config(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(pem_certs(cert), pem_key(key))
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Whether a TLS client from `src` is served: it completes its handshake, sends HTTP/2's
/// preface, and reads the server's first frame. A refused client reads an alert or nothing.
async fn served(src: IpAddr, to: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let tcp = connect_from(src, to).await;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(Ok(mut tls)) =
        tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await
    else {
        return false;
    };
    if tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// A client certificate for "alice" issued by the harness's own admin CA, expired in 2021.
fn expired_alice(h: &AdminHarness) -> (String, String) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let pki_dir = h.pki.ca_cert.parent().unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(pki_dir.join("ca.key")).unwrap()).unwrap();
    // The same subject and key as the CA on disk: what it issues chains to it.
    let ca = warden::api::tls::admin_ca_params().unwrap();
    let issuer = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "alice");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = p.signed_by(&key, &issuer, &ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Everything in the namespaces an abuser must not be able to touch.
fn snapshot(h: &AdminHarness) -> Vec<(Namespace, Vec<warden::store::Entry>)> {
    [Namespace::Velocity, Namespace::Approvals, Namespace::Vls]
        .into_iter()
        .map(|ns| (ns, h.core.store().scan(ns, b"").unwrap()))
        .collect()
}

/// Raw bytes as a gRPC message body: what a client that does not speak protobuf sends.
#[derive(Default, Clone)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

async fn raw_channel(h: &AdminHarness, admin: &str) -> tonic::transport::Channel {
    let (_, cert, key) = h.pki.clients.iter().find(|(n, _, _)| n == admin).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&h.pki.ca_cert).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .domain_name("localhost");
    tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", h.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// xorshift64*, for reproducible garbage.
struct Garbage(u64);

impl Garbage {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_requests_are_refused_and_the_admins_keep_being_served() {
    // Rate limits per certificate high enough that the refusals below are the requests' own,
    // and failed handshakes audited every second so the test can read their reasons.
    let h = AdminHarness::start_with(|c| warden::api::ApiConfig {
        rate_per_minute: 100_000,
        burst: 10_000,
        auth_audit_secs: 1,
        ..c
    })
    .await;
    let (_, id) = h.hold(2_000_000, 61);
    let mut alice = h.client("alice").await;
    let digest = alice
        .get_request(proto::GetRequestRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .approval_digest;
    let before = snapshot(&h);
    let audit_before = warden::audit::read_records(h.core.store()).unwrap().len();
    let rss_before = rss_kib();
    let ca = std::fs::read(&h.pki.ca_cert).unwrap();
    let mut garbage = Garbage(0x9e37_79b9_7f4a_7c15);
    let mut sent = 0u32;

    // A flood of connections that never say anything, held open throughout.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(connect_from(FLOOD, h.addr).await);
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The admins are served while it lasts.
    assert_eq!(
        alice
            .list_pending(proto::ListPendingRequest::default())
            .await
            .unwrap()
            .into_inner()
            .requests
            .len(),
        1
    );
    let fresh_admin = client_config(
        &ca,
        Some((
            &std::fs::read(&h.pki.clients.iter().find(|c| c.0 == "bob").unwrap().1).unwrap(),
            &std::fs::read(&h.pki.clients.iter().find(|c| c.0 == "bob").unwrap().2).unwrap(),
        )),
    );
    assert!(
        served(IpAddr::V4(Ipv4Addr::LOCALHOST), h.addr, fresh_admin.clone()).await,
        "a new admin connection is refused during the flood"
    );

    // Unauthenticated TLS clients: each kind from its own address.
    let other_dir = tempfile::tempdir().unwrap();
    let other = warden::api::tls::init_pki(other_dir.path(), &["alice".into()]).unwrap();
    let foreign = client_config(
        &ca,
        Some((
            &std::fs::read(&other.clients[0].1).unwrap(),
            &std::fs::read(&other.clients[0].2).unwrap(),
        )),
    );
    let (expired_cert, expired_key) = expired_alice(&h);
    let expired = client_config(&ca, Some((expired_cert.as_bytes(), expired_key.as_bytes())));
    let no_cert = client_config(&ca, None);
    for (src, config, n) in [
        (NO_CERT, no_cert, 100),
        (FOREIGN_CA, foreign, 100),
        (EXPIRED, expired, 50),
    ] {
        for i in 0..n {
            assert!(
                !served(src, h.addr, config.clone()).await,
                "client {i} from {src} was served"
            );
            sent += 1;
        }
    }
    // Bytes that are not TLS at all.
    for _ in 0..100 {
        let mut tcp = connect_from(NOT_TLS, h.addr).await;
        let _ = tcp.write_all(&garbage.bytes(512)).await;
        let mut buf = [0u8; 64];
        let answer = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        // Nothing, or a TLS alert record (content type 21): never anything a client could use.
        if let Ok(Ok(n)) = answer {
            assert!(
                n == 0 || buf[0] == 0x15,
                "non-TLS bytes got {n} bytes back starting {:#04x}",
                buf[0]
            );
        }
        sent += 1;
    }

    // Authenticated, but hostile: oversized messages.
    for _ in 0..100 {
        let mut req = common_approve(&id, "alice", &[0u8; 64]);
        req.reason = "x".repeat(100 * 1024);
        let err = alice.reject(req).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        sent += 1;
    }
    // Random bytes as the protobuf body of every kind of call.
    let mut grpc = tonic::client::Grpc::new(raw_channel(&h, "alice").await);
    for i in 0..200 {
        let path = ["Approve", "Reject", "Reopen", "GetRequest"][i % 4];
        grpc.ready().await.unwrap();
        let body = garbage.bytes(1 + i * 7 % 300);
        let out = grpc
            .unary(
                tonic::Request::new(body),
                tonic::codegen::http::uri::PathAndQuery::try_from(format!(
                    "/warden.v1.Warden/{path}"
                ))
                .unwrap(),
                Raw,
            )
            .await;
        let err = out.expect_err("random bytes were answered with success");
        assert!(
            matches!(
                err.code(),
                Code::Internal | Code::NotFound | Code::PermissionDenied | Code::InvalidArgument
            ),
            "{path}: {err:?}"
        );
        sent += 1;
    }
    // Valid-looking approvals with wrong signatures, and unknown ids.
    for i in 0..200u32 {
        let mut sig = garbage.bytes(64);
        sig[0] = i as u8;
        let err = alice
            .approve(common_approve(&id, "alice", &sig))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("signature"), "{}", err.message());
        sent += 1;
    }
    for i in 0..100 {
        let unknown = format!("req-{i:04}-does-not-exist");
        let err = alice
            .get_request(proto::GetRequestRequest {
                id: unknown.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = alice
            .approve(common_approve(&unknown, "alice", &[1u8; 64]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        sent += 2;
    }
    assert!(sent >= 1_000, "{sent} requests");

    // Still served, with the flood still open.
    assert!(served(IpAddr::V4(Ipv4Addr::LOCALHOST), h.addr, fresh_admin).await);
    drop(flood);

    // Nothing an abuser sent changed the state; the handshake failures are in the audit log as
    // aggregated records (one per second at most), with each address's reason.
    assert!(snapshot(&h) == before, "the store changed under abuse");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let records = warden::audit::read_records(h.core.store()).unwrap();
    let added: Vec<_> = records[audit_before..].iter().collect();
    assert!(
        added.iter().all(|r| r.kind == "auth-failures"
            || (r.kind == "event" && r.data["event"] == "auth-failure")),
        "{:?}",
        added.iter().map(|r| (&r.kind, &r.data)).collect::<Vec<_>>()
    );
    assert!(
        !added.is_empty() && added.len() <= 40,
        "{} records",
        added.len()
    );
    // Each source's reasons, over every aggregated record.
    let reasons = |src: IpAddr| -> String {
        let mut all = std::collections::BTreeMap::<String, u64>::new();
        for r in &added {
            if let Some(m) = r.data["by_source"][src.to_string()]["reasons"].as_object() {
                for (k, v) in m {
                    *all.entry(k.clone()).or_default() += v.as_u64().unwrap();
                }
            }
        }
        assert!(!all.is_empty(), "no audited failure from {src}");
        format!("{all:?}")
    };
    let (no_cert, foreign, expired, not_tls, flood) = (
        reasons(NO_CERT),
        reasons(FOREIGN_CA),
        reasons(EXPIRED),
        reasons(NOT_TLS),
        reasons(FLOOD),
    );
    eprintln!("no cert: {no_cert}\nforeign: {foreign}\nexpired: {expired}\nnot TLS: {not_tls}\nflood: {flood}");
    assert!(
        no_cert.contains("NoCertificatesPresented") || no_cert.contains("no certificate"),
        "{no_cert}"
    );
    // The other CA has the same name, so its certificates fail on the CA's signature.
    assert!(
        foreign.contains("BadSignature") || foreign.contains("UnknownIssuer"),
        "{foreign}"
    );
    assert!(expired.contains("certificate expired"), "{expired}");
    assert!(not_tls.contains("corrupt message"), "{not_tls}");
    for r in [&no_cert, &foreign, &expired, &not_tls] {
        assert!(
            r.contains("dropped: too many failed handshakes from this address"),
            "an address that keeps failing is dropped before TLS: {r}"
        );
    }
    assert!(
        flood.contains("too many handshakes in progress from this address"),
        "{flood}"
    );
    let rss_after = rss_kib();
    eprintln!("RSS {rss_before} KiB before, {rss_after} KiB after {sent} hostile requests");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // And the real admins still decide: two approvals reach the quorum.
    for admin in ["alice", "bob"] {
        let out = h
            .client(admin)
            .await
            .approve(common_approve(
                &id,
                admin,
                &h.key(admin)
                    .sign_digest(digest.as_slice().try_into().unwrap()),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(out.message.contains("approved"), "{}", out.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_cannot_hold_every_connection_and_the_total_is_bounded() {
    let h = AdminHarness::start_with(|c| warden::api::ApiConfig {
        max_connections: 6,
        max_connections_per_certificate: 3,
        ..c
    })
    .await;
    async fn held(
        h: &AdminHarness,
        admin: &str,
    ) -> warden::api::proto::warden_client::WardenClient<tonic::transport::Channel> {
        let mut c = h.client(admin).await;
        c.status(proto::StatusRequest {}).await.unwrap();
        c
    }
    async fn refused(h: &AdminHarness, admin: &str) -> bool {
        // A fresh connection each time (the harness's client never shares one).
        tokio::time::timeout(Duration::from_secs(10), async {
            let (_, cert, key) = h.pki.clients.iter().find(|(n, _, _)| n == admin).unwrap();
            let c = h
                .client_with(
                    Some((std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())),
                    &std::fs::read(&h.pki.ca_cert).unwrap(),
                )
                .await;
            match c {
                Err(_) => true,
                Ok(mut c) => c.status(proto::StatusRequest {}).await.is_err(),
            }
        })
        .await
        .unwrap_or(true)
    }
    // Alice holds three connections: her fourth is refused, bob is still served.
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(held(&h, "alice").await);
    }
    assert!(
        refused(&h, "alice").await,
        "a fourth connection for one certificate"
    );
    let mut bob = Vec::new();
    for _ in 0..3 {
        bob.push(held(&h, "bob").await);
    }
    // Six open: the total is reached, and carol waits for a slot.
    assert!(refused(&h, "carol").await, "a seventh connection in all");
    alice.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut carol = h.client("carol").await;
    carol.status(proto::StatusRequest {}).await.unwrap();
    drop(bob);
}

fn common_approve(id: &str, admin: &str, signature: &[u8]) -> proto::DecisionRequest {
    proto::DecisionRequest {
        id: id.into(),
        admin: admin.into(),
        format: proto::SignatureFormat::Bip340 as i32,
        signature: signature.to_vec(),
        reason: String::new(),
    }
}
