//! Core Lightning's side, for end-to-end tests: VLS's real remote_hsmd_socket with the hsmd
//! socket on fd 3, a bitcoind stand-in, and a real wardend ([`Daemon`]) on a per-test SoftHSM token.
#![allow(dead_code)]

use super::daemon::Daemon;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lightning_signer::lightning::types::payment::{PaymentHash, PaymentSecret};
use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
use vls_protocol::msgs::{self, Message};
use warden_testkit::chain::ChainStub;
use warden_testkit::proxy::{default_binary, Proxy};

use super::daemon::free_port;

/// A payee whose key signs the BOLT 11 invoices the node is asked to pay.
pub struct Payee {
    pub secret: SecretKey,
    pub node_id: PublicKey,
    /// Every invoice carries this timestamp, so asking for the same `n` twice gives the same
    /// invoice even across a second boundary (VLS refuses a second invoice for a payment hash).
    issued: std::time::SystemTime,
}

impl Payee {
    pub fn new(seed: u8) -> Self {
        let secret = SecretKey::from_slice(&[seed; 32]).unwrap();
        Payee {
            node_id: secret.public_key(&Secp256k1::new()),
            secret,
            issued: std::time::SystemTime::now(),
        }
    }

    pub fn hex(&self) -> String {
        hex::encode(self.node_id.serialize())
    }

    /// A real, signed regtest invoice for `amount_msat`, unique per `n` and the same each time.
    pub fn invoice(&self, amount_msat: u64, n: u64) -> String {
        self.invoice_at(amount_msat, n, self.issued, None)
    }

    /// [`Payee::invoice`] issued at `issued`, expiring `expiry` after it (BOLT 11's default of
    /// an hour when `None`).
    pub fn invoice_at(
        &self,
        amount_msat: u64,
        n: u64,
        issued: std::time::SystemTime,
        expiry: Option<std::time::Duration>,
    ) -> String {
        let preimage =
            sha256::Hash::hash(&[&self.node_id.serialize()[..], &n.to_be_bytes()].concat());
        let hash = sha256::Hash::hash(preimage.as_byte_array());
        let secp = Secp256k1::new();
        let builder = InvoiceBuilder::new(Currency::Regtest)
            .description(format!("order {n}"))
            .payment_hash(hash)
            .payment_secret(PaymentSecret([7u8; 32]))
            .timestamp(issued)
            .min_final_cltv_expiry_delta(144)
            .amount_milli_satoshis(amount_msat);
        let builder = match expiry {
            Some(e) => builder.expiry_time(e),
            None => builder,
        };
        builder
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &self.secret))
            .unwrap()
            .to_string()
    }
}

pub fn payment_hash_of(invoice: &str) -> PaymentHash {
    let inv: lightning_signer::lightning_invoice::Bolt11Invoice = invoice.parse().unwrap();
    PaymentHash(inv.payment_hash().to_byte_array())
}

/// Core Lightning's side (VLS's remote_hsmd_socket and a bitcoind stand-in) with its wardend.
/// Derefs to the [`Daemon`] for wardend's lifecycle and the admin tools.
pub struct Cln {
    pub daemon: Daemon,
    pub chain: ChainStub,
    pub proxy: Proxy,
}

impl std::ops::Deref for Cln {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Cln {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl Cln {
    /// `policy_rules` are appended to a policy declaring admins alice, bob and carol.
    pub async fn start(label: &str, policy_rules: &str) -> Self {
        Self::start_with_env(label, policy_rules, &[]).await
    }

    pub async fn start_with_env(label: &str, policy_rules: &str, env: &[(&str, &str)]) -> Self {
        Self::start_full(label, policy_rules, env, &[]).await
    }

    /// wardend under `wrapper` (a program and its arguments, e.g. strace).
    pub async fn start_full(
        label: &str,
        policy_rules: &str,
        env: &[(&str, &str)],
        wrapper: &[String],
    ) -> Self {
        let server = super::pg::matrix_is_postgres().then(super::pg::shared);
        Self::start_store(label, policy_rules, env, wrapper, server).await
    }

    /// wardend with its state on the harness's PostgreSQL server, whatever the test matrix says.
    pub async fn start_on_postgres(label: &str, policy_rules: &str, env: &[(&str, &str)]) -> Self {
        Self::start_store(label, policy_rules, env, &[], Some(super::pg::shared())).await
    }

    /// wardend with its state on `server` (a test's private one).
    pub async fn start_on_server(
        label: &str,
        policy_rules: &str,
        server: &super::pg::PgServer,
    ) -> Self {
        Self::start_store(label, policy_rules, &[], &[], Some(server)).await
    }

    /// wardend under `wrapper`, its state on `server` (a database of its own) or, with `None`,
    /// in sled.
    pub async fn start_store(
        label: &str,
        policy_rules: &str,
        env: &[(&str, &str)],
        wrapper: &[String],
        server: Option<&super::pg::PgServer>,
    ) -> Self {
        let mut daemon = Daemon::prepare_on(label, policy_rules, free_port(), server);
        daemon.wardend_wrapper = wrapper.to_vec();
        Self::start_prepared(daemon, env).await
    }

    /// Members `members` of fleet "acme" on a new database of the harness's PostgreSQL: a
    /// token, a seed, a proxy and a chain stand-in each, and one policy of `rules` that admits
    /// every member's node, run by all of them (alice, bob and carol as admins); `env` is extra
    /// environment for each wardend. Returns the database's name and the nodes, initialized.
    pub async fn start_fleet(
        label: &str,
        rules: &str,
        members: &[&str],
        env: &[(&str, &str)],
    ) -> (String, Vec<Cln>) {
        let server = super::pg::shared();
        let db = server.database(label);
        let mut daemons: Vec<Daemon> = members
            .iter()
            .map(|m| {
                let mut d =
                    Daemon::prepare_on(&format!("{label}-{m}"), rules, free_port(), Some(server));
                d.join(server, &db, "acme", m);
                d
            })
            .collect();
        let admitted: String = members
            .iter()
            .zip(&daemons)
            .map(|(m, d)| format!("{m} = \"{}\"\n", d.node_id_from_init))
            .collect();
        let mut policy = std::fs::read_to_string(&daemons[0].policy).unwrap();
        policy.push_str(&format!("\n[fleet.members]\n{admitted}"));
        std::fs::write(&daemons[0].policy, policy).unwrap();
        let (first, rest) = daemons.split_at_mut(1);
        for d in rest {
            d.share_policy_of(&first[0]);
        }
        let mut nodes = Vec::new();
        for d in daemons {
            nodes.push(Self::start_prepared(d, env).await);
        }
        for n in nodes.iter_mut() {
            let id = tokio::task::block_in_place(|| n.init());
            assert_eq!(id, n.node_id_from_init);
        }
        (db, nodes)
    }

    /// Serve `daemon`'s node: a proxy and a chain stand-in, then wardend.
    pub async fn start_prepared(mut daemon: Daemon, env: &[(&str, &str)]) -> Self {
        let chain = ChainStub::start().await.unwrap();
        let proxy_dir = daemon.token.path().join("proxy");
        std::fs::create_dir_all(&proxy_dir).unwrap();
        let proxy = Proxy::spawn(
            &default_binary(),
            daemon.hsmd_port,
            &chain.url(),
            &proxy_dir,
        )
        .unwrap();
        daemon.wardend_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        daemon.start_wardend();
        Cln {
            daemon,
            chain,
            proxy,
        }
    }

    /// Run a blocking hsmd call off the async runtime.
    pub fn call<T: vls_protocol::msgs::DeBolt + lightning_signer::bitcoin::consensus::Encodable>(
        &mut self,
        msg: T,
    ) -> Message {
        self.proxy
            .hsmd
            .call(msg)
            .unwrap_or_else(|e| panic!("hsmd call failed: {e}"))
    }

    pub fn init(&mut self) -> String {
        match self.call(warden_testkit::hsmd_init_regtest()) {
            Message::HsmdInitReplyV4(r) => hex::encode(r.node_id.0),
            other => panic!("unexpected init reply {other:?}"),
        }
    }

    /// Whether the proxy still serves the node: one more request gets its answer. A running
    /// process alone proves nothing, because the proxy shuts down asynchronously after a fatal
    /// answer.
    pub fn still_serves(&mut self) -> bool {
        matches!(
            self.proxy.hsmd.call(msgs::SignMessage {
                message: vls_protocol::serde_bolt::Octets(b"still serving?".to_vec()),
            }),
            Ok(Message::SignMessageReply(_))
        )
    }

    pub fn preapprove(&mut self, invoice: &str) -> bool {
        match self.call(msgs::PreapproveInvoice {
            invstring: vls_protocol::serde_bolt::WireString(invoice.as_bytes().to_vec()),
        }) {
            Message::PreapproveInvoiceReply(r) => r.result,
            other => panic!("unexpected preapprove reply {other:?}"),
        }
    }
}
