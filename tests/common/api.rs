//! A real wardend admin API on loopback for tests: a demo PKI made with rcgen, a sled store in
//! a temp dir, real admin keys, a manual clock, and the tonic server over mutual TLS 1.3.
#![allow(dead_code)]

use super::TestToken;
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use lightning_signer::bitcoin::sign_message::{signed_msg_hash, MessageSignature};
use lightning_signer::bitcoin::{Address, CompressedPublicKey, Network};
use std::sync::Arc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use warden::api::proto::warden_client::WardenClient;
use warden::api::{tls, ApiConfig};
use warden::approval::keys::AdminKey;
use warden::approval::ApprovalConfig;
use warden::audit::{AuditConfig, AuditLog};
use warden::clock::ManualClock;
use warden::core::{Core, LoadedPolicy};
use warden::policy::{parse_policy, PaymentRequest};
use warden::store::Store;

/// 2026-11-23 12:00 UTC, a Monday.
pub const T0: u64 = 1_795_435_200;
pub const PAYEE: &str = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";

/// A hardware-wallet admin: a key whose address is declared in the policy.
pub struct WalletAdmin {
    pub secret: SecretKey,
    pub p2pkh: String,
    pub p2wpkh: String,
}

impl WalletAdmin {
    pub fn new(seed: u8) -> Self {
        let secret = SecretKey::from_slice(&[seed; 32]).unwrap();
        let pk = secret.public_key(&Secp256k1::new());
        WalletAdmin {
            secret,
            p2pkh: Address::p2pkh(
                lightning_signer::bitcoin::PublicKey::new(pk),
                Network::Bitcoin,
            )
            .to_string(),
            p2wpkh: Address::p2wpkh(&CompressedPublicKey(pk), Network::Bitcoin).to_string(),
        }
    }

    /// Sign `text` exactly as Bitcoin Core's `signmessage` does (compressed key header 31-34).
    pub fn sign_core(&self, text: &str) -> Vec<u8> {
        let secp = Secp256k1::new();
        let msg = Message::from_digest(signed_msg_hash(text).to_byte_array());
        MessageSignature::new(secp.sign_ecdsa_recoverable(&msg, &self.secret), true)
            .serialize()
            .to_vec()
    }

    /// Sign `text` as a BIP 137 segwit wallet does for a P2WPKH address (header 39-42).
    pub fn sign_bip137_p2wpkh(&self, text: &str) -> Vec<u8> {
        let mut sig = self.sign_core(text);
        sig[0] = sig[0] - 31 + 39;
        sig
    }
}

pub struct AdminHarness {
    pub dir: tempfile::TempDir,
    pub token: super::TestToken,
    pub pki: tls::Pki,
    pub core: Arc<Core>,
    pub clock: ManualClock,
    pub addr: std::net::SocketAddr,
    pub keys: Vec<(String, AdminKey)>,
    pub wallet: WalletAdmin,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for AdminHarness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The test policy: 2 of [alice, bob, carol, dave] above 1,000,000 sat; erin is an admin
/// outside the quorum; dave approves from a wallet address.
pub fn policy_text(keys: &[(String, AdminKey)], dave_address: &str, name: &str) -> String {
    let mut admins = String::new();
    for (n, k) in keys {
        admins.push_str(&format!("{n} = {{ pubkey = \"{}\" }}\n", k.public_key()));
    }
    format!(
        r#"version = 1
name = "{name}"
[admins]
{admins}dave = {{ address = "{dave_address}" }}

[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "5_000_000 sat"

[[approval]]
tag = "large-payment-quorum"
above = "1_000_000 sat"
quorum = {{ need = 2, of = ["alice", "bob", "carol", "dave"] }}
expiry = "1h"

# Holds nothing the per-payment cap lets through; there for the test that moves a request
# under another rule in the database.
[[approval]]
tag = "treasury-quorum"
above = "100_000_000 sat"
quorum = {{ need = 1, of = ["erin"] }}
expiry = "1h"
"#
    )
}

impl AdminHarness {
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    pub async fn start_with(tune: impl FnOnce(ApiConfig) -> ApiConfig) -> Self {
        Self::start_full(tune, false).await
    }

    /// `p2pkh_wallet`: declare dave by his P2PKH address instead of P2WPKH.
    pub async fn start_full(tune: impl FnOnce(ApiConfig) -> ApiConfig, p2pkh_wallet: bool) -> Self {
        Self::start_all(tune, p2pkh_wallet, ApprovalConfig::default()).await
    }

    /// With these approval settings (caps, retention).
    pub async fn start_approvals(approvals: ApprovalConfig) -> Self {
        Self::start_all(|c| c, false, approvals).await
    }

    async fn start_all(
        tune: impl FnOnce(ApiConfig) -> ApiConfig,
        p2pkh_wallet: bool,
        approvals: ApprovalConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admins: Vec<String> = ["alice", "bob", "carol", "erin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut cert_holders = admins.clone();
        cert_holders.push("dave".into());
        // Certificates that are not admins': the harness names them a relay, a viewer and
        // a node.
        cert_holders.push("relay".into());
        cert_holders.push("auditor".into());
        cert_holders.push("lightningd".into());
        let pki = tls::init_pki(&dir.path().join("pki"), &cert_holders).unwrap();
        let keys: Vec<(String, AdminKey)> = admins
            .iter()
            .map(|a| (a.clone(), AdminKey::generate()))
            .collect();
        let wallet = WalletAdmin::new(0x42);
        let dave = if p2pkh_wallet {
            wallet.p2pkh.clone()
        } else {
            wallet.p2wpkh.clone()
        };
        let text = policy_text(&keys, &dave, "test");
        let policy = Arc::new(parse_policy(&text).unwrap_or_else(|e| panic!("{e:#?}")));
        let clock = ManualClock::new(T0);
        let store = Store::open(&dir.path().join("state")).unwrap();
        // The audit log is part of the core: its checkpoints are signed by a real SoftHSM key.
        let token = TestToken::new("api");
        let hsm = token.open();
        hsm.init(&token.data_dir, lightning_signer::bitcoin::Network::Regtest)
            .unwrap();
        let audit =
            Arc::new(AuditLog::open(&store, Arc::new(hsm), AuditConfig::default()).unwrap());
        let core = Arc::new(
            Core::open(
                store,
                LoadedPolicy { policy, text },
                approvals,
                Arc::new(clock.clone()),
                audit,
                Default::default(),
            )
            .unwrap(),
        );
        let server_tls =
            tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert).unwrap();
        let config = tune(ApiConfig {
            relays: vec!["relay".into()],
            viewers: vec!["auditor".into()],
            nodes: vec!["lightningd".into()],
            ..ApiConfig::with_tls(server_tls)
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = core.clone();
        tokio::spawn(async move {
            warden::api::serve(c, config, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        AdminHarness {
            dir,
            token,
            pki,
            core,
            clock,
            addr,
            keys,
            wallet,
            shutdown: Some(tx),
        }
    }

    pub fn key(&self, admin: &str) -> &AdminKey {
        &self.keys.iter().find(|(n, _)| n == admin).unwrap().1
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("https://localhost:{}", self.addr.port())).unwrap()
    }

    /// A client authenticated with `admin`'s certificate from the demo PKI.
    pub async fn client(&self, admin: &str) -> WardenClient<Channel> {
        let (_, cert, key) = self
            .pki
            .clients
            .iter()
            .find(|(n, _, _)| n == admin)
            .unwrap();
        self.client_with(
            Some((std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())),
            &std::fs::read(&self.pki.ca_cert).unwrap(),
        )
        .await
        .unwrap()
    }

    pub async fn client_with(
        &self,
        identity: Option<(Vec<u8>, Vec<u8>)>,
        ca: &[u8],
    ) -> Result<WardenClient<Channel>, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = self.endpoint().tls_config(tls)?.connect().await?;
        Ok(WardenClient::new(channel))
    }

    /// `admin`'s BIP-340 signature on `r` (its approve digest, or its reject digest), submitted
    /// over the admin API with `admin`'s certificate.
    pub async fn sign(
        &self,
        admin: &str,
        r: &warden::api::proto::ApprovalRequest,
        reject: bool,
    ) -> Result<warden::api::proto::DecisionResponse, tonic::Status> {
        use warden::api::proto;
        let digest = if reject {
            &r.reject_digest
        } else {
            &r.approval_digest
        };
        let req = proto::DecisionRequest {
            id: r.id.clone(),
            admin: admin.into(),
            format: proto::SignatureFormat::Bip340 as i32,
            signature: self
                .key(admin)
                .sign_digest(digest.as_slice().try_into().unwrap())
                .to_vec(),
            reason: String::new(),
        };
        let mut c = self.client(admin).await;
        if reject {
            c.reject(req).await
        } else {
            c.approve(req).await
        }
        .map(|r| r.into_inner())
    }

    /// Hold a payment of `sat` to PAYEE through the real decision pipeline; returns its request id.
    pub fn hold(&self, sat: u64, n: u8) -> (PaymentRequest, String) {
        let req = PaymentRequest::invoice(
            [n; 32],
            sat * 1_000,
            PAYEE,
            Some(format!("test payment {n}")),
        );
        let answer = self.core.decide_payment(&req, Some("lnbcrt-test".into()));
        assert!(!answer.approved, "{answer:?}");
        let id = answer
            .request_id
            .clone()
            .unwrap_or_else(|| panic!("no request opened: {answer:?}"));
        (req, id)
    }
}
