//! An LDK node signed by a real wardend through the node-side library (`warden::ldk`):
//! VLS's own `KeysManagerClient` (LDK's NodeSigner/SignerProvider) over the hsmd gRPC link.
//! This covers the node id, invoice signing, channel signers and a wardend restart; the
//! two-node channel test of issue 8 builds on it.

mod common;

use common::TestToken;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::Secp256k1;
use lightning_signer::lightning::sign::{
    ChannelSigner, NodeSigner, ReceiveAuthKey, Recipient, SignerProvider,
};
use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
use std::process::{Child, Stdio};
use std::sync::Arc;
use vls_protocol_client::KeysManagerClient;
use warden::ldk::LdkSignerLink;

/// wardend, killed when the test ends, also when it fails.
struct Wardend(Child);

impl Drop for Wardend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_wardend(t: &TestToken, port: u16) -> Wardend {
    Wardend(
        t.command("wardend")
            .env("WARDEN_HSMD_ADDRESS", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_manager_client_is_answered_by_wardend() {
    let t = TestToken::new("ldk-keys");
    let node_id = t.init();

    let link = LdkSignerLink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(link.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let wardend = start_wardend(&t, port);

    let transport: Arc<dyn vls_protocol_client::Transport> = Arc::new(link.clone());
    let keys = tokio::task::spawn_blocking({
        let transport = transport.clone();
        move || {
            KeysManagerClient::new(
                transport,
                "regtest".into(),
                None,
                None,
                ReceiveAuthKey([7u8; 32]),
            )
        }
    })
    .await
    .unwrap();
    let keys = Arc::new(keys);

    // The node id LDK sees is the one derived from the HSM-sealed seed.
    let got = keys.get_node_id(Recipient::Node).unwrap();
    assert_eq!(got.to_string(), node_id);

    // LDK's NodeSigner signs an invoice for this node; the signature recovers to the node id.
    let raw = InvoiceBuilder::new(Currency::Regtest)
        .description("ldk incoming".into())
        .payment_hash(sha256::Hash::hash(b"ldk preimage"))
        .payment_secret(lightning_signer::lightning::types::payment::PaymentSecret(
            [5u8; 32],
        ))
        .current_timestamp()
        .min_final_cltv_expiry_delta(144)
        .amount_milli_satoshis(25_000_000)
        .build_raw()
        .unwrap();
    let signable = raw.signable_hash();
    let k = keys.clone();
    let sig = tokio::task::spawn_blocking(move || k.sign_invoice(&raw, Recipient::Node))
        .await
        .unwrap()
        .unwrap();
    let recovered = Secp256k1::verification_only()
        .recover_ecdsa(
            &lightning_signer::bitcoin::secp256k1::Message::from_digest(signable),
            &sig,
        )
        .unwrap();
    assert_eq!(recovered, got);

    // A channel signer: NewChannel and GetChannelBasepoints go to wardend, the per-channel
    // calls carry the channel's dbid in their context.
    let k = keys.clone();
    let (id_a, pubkeys_a, id_b, pubkeys_b) = tokio::task::spawn_blocking(move || {
        let a = k.generate_channel_keys_id(false, 1);
        let b = k.generate_channel_keys_id(false, 2);
        let sa = k.derive_channel_signer(a);
        let sb = k.derive_channel_signer(b);
        (
            a,
            sa.pubkeys(&Secp256k1::new()),
            b,
            sb.pubkeys(&Secp256k1::new()),
        )
    })
    .await
    .unwrap();
    assert_ne!(id_a, id_b);
    assert_ne!(
        pubkeys_a.funding_pubkey, pubkeys_b.funding_pubkey,
        "each channel has its own keys"
    );

    // wardend restarts: the link replays the init and LDK keeps being served, with the same keys.
    drop(wardend);
    let _wardend = start_wardend(&t, port);
    let k = keys.clone();
    let again = tokio::task::spawn_blocking(move || {
        k.derive_channel_signer(id_a).pubkeys(&Secp256k1::new())
    })
    .await
    .unwrap();
    assert_eq!(
        again.funding_pubkey, pubkeys_a.funding_pubkey,
        "the same channel keys after a restart"
    );
}
