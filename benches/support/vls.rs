//! Shared by the signer and load benchmarks: invoices to preapprove, and the bare VLS handler
//! whose CPU per request is the floor Warden's is compared with.
#![allow(dead_code)]

use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::{All, Secp256k1, SecretKey};
use lightning_signer::lightning::types::payment::PaymentSecret;
use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
use std::time::Duration;
use vls_protocol::msgs::{self, Message};

/// Signed regtest invoices of 1,000 sat, each with a fresh payment hash (`tag` keeps two
/// streams apart).
pub struct Invoices {
    secp: Secp256k1<All>,
    payee: SecretKey,
    next: u64,
    tag: u8,
}

impl Invoices {
    pub fn new(tag: u8) -> Self {
        Invoices {
            secp: Secp256k1::new(),
            payee: SecretKey::from_slice(&[0x5a; 32]).unwrap(),
            next: 0,
            tag,
        }
    }

    pub fn next(&mut self) -> String {
        self.next += 1;
        let preimage = sha256::Hash::hash(&[&[self.tag][..], &self.next.to_be_bytes()].concat());
        InvoiceBuilder::new(Currency::Regtest)
            .description("load".into())
            .payment_hash(sha256::Hash::hash(preimage.as_byte_array()))
            .payment_secret(PaymentSecret([1u8; 32]))
            .current_timestamp()
            .expiry_time(Duration::from_secs(86_400))
            .min_final_cltv_expiry_delta(144)
            .amount_milli_satoshis(1_000_000)
            .build_signed(|m| self.secp.sign_ecdsa_recoverable(m, &self.payee))
            .unwrap()
            .to_string()
    }
}

/// A bare VLS handler in this process: VLS's own validation, an in-memory persister (nothing
/// durable), VLS's auto-approver, no gRPC, no proxy. CPU seconds this thread spends per approved
/// preapprove of a fresh invoice: the floor Warden's per-request CPU is compared with.
pub fn bare_vls_cpu_per_preapprove(n: usize) -> f64 {
    use lightning_signer::node::NodeServices;
    use lightning_signer::policy::simple_validator::{
        make_simple_policy, OptionizedSimplePolicy, SimpleValidatorFactory,
    };
    use lightning_signer::signer::ClockStartingTimeFactory;
    use lightning_signer::util::clock::StandardClock;
    use vls_protocol::msgs::SerBolt;
    use vls_protocol_signer::handler::{Handler, HandlerBuilder, RootHandler};
    let network = lightning_signer::bitcoin::Network::Regtest;
    let mut policy = make_simple_policy(network, OptionizedSimplePolicy::default());
    policy.max_invoices = n + 10;
    let services = NodeServices {
        validator_factory: std::sync::Arc::new(SimpleValidatorFactory::new_with_policy(policy)),
        starting_time_factory: ClockStartingTimeFactory::new(),
        persister: std::sync::Arc::new(lightning_signer::persist::DummyPersister),
        clock: std::sync::Arc::new(StandardClock()),
        trusted_oracle_pubkeys: vec![],
    };
    let init = HandlerBuilder::new(network, 0, services, [0x42; 32])
        .approver(std::sync::Arc::new(
            vls_protocol_signer::approver::PositiveApprover(),
        ))
        .build()
        .unwrap();
    let mut init = init;
    init.handle(Message::HsmdInit(warden_testkit::hsmd_init_regtest()))
        .unwrap();
    let root: RootHandler = init.into();
    let mut inv = Invoices::new(4);
    let invoices: Vec<String> = (0..n).map(|_| inv.next()).collect();
    let before = super::procfs::stat_cpu_secs("/proc/thread-self/stat");
    for i in invoices {
        let reply = root
            .handle(Message::PreapproveInvoice(msgs::PreapproveInvoice {
                invstring: vls_protocol::serde_bolt::WireString(i.into_bytes()),
            }))
            .unwrap();
        assert_eq!(
            reply.as_vec(),
            msgs::PreapproveInvoiceReply { result: true }.as_vec()
        );
    }
    (super::procfs::stat_cpu_secs("/proc/thread-self/stat") - before) / n as f64
}
