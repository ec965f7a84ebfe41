//! Two LDK nodes in one process: real `ChannelManager`s, `ChainMonitor`s and `PeerManager`s
//! (Noise handshake and all), connected by an in-memory byte pipe, on a chain the test builds
//! block by block. Each node is generic over its keys, so one can be signed by wardend
//! (`KeysManagerClient`) and the other by LDK's own `KeysManager`.
//!
//! Everything here is synchronous: LDK calls its signer from whichever thread drives it, and
//! `KeysManagerClient` blocks on wardend. Drive the nodes from a plain thread, never from inside
//! an async task.
#![allow(dead_code)]

use lightning::chain::chaininterface::{BroadcasterInterface, ConfirmationTarget, FeeEstimator};
use lightning::chain::chainmonitor::{ChainMonitor, Persist};
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::{BestBlock, ChannelMonitorUpdateStatus, Filter, Listen};
use lightning::events::{Event, EventsProvider, ReplayEvent};
use lightning::ln::channelmanager::RecipientOnionFields;
use lightning::ln::channelmanager::{Bolt11InvoiceParameters, PaymentId, Retry};
use lightning::ln::channelmanager::{ChainParameters, ChannelManager};
use lightning::ln::peer_handler::{
    IgnoringMessageHandler, MessageHandler, PeerManager, SocketDescriptor,
};
use lightning::ln::types::ChannelId;
use lightning::onion_message::messenger::DefaultMessageRouter;
use lightning::routing::gossip::NetworkGraph;
use lightning::routing::router::DefaultRouter;
use lightning::routing::router::{PaymentParameters, RouteParameters, RouteParametersConfig};
use lightning::routing::scoring::FixedPenaltyScorer;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{
    EntropySource, KeysManager, NodeSigner, OutputSpender, ReceiveAuthKey, Recipient,
    SignerProvider, SpendableOutputDescriptor,
};
use lightning::types::payment::{PaymentHash, PaymentPreimage};
use lightning::util::config::UserConfig;
use lightning::util::logger::{Level, Logger, Record};
use lightning::util::persist::MonitorName;
use lightning_signer::bitcoin::absolute::LockTime;
use lightning_signer::bitcoin::block::{Header, Version as BlockVersion};
use lightning_signer::bitcoin::blockdata::constants::genesis_block;
use lightning_signer::bitcoin::hash_types::TxMerkleNode;
use lightning_signer::bitcoin::hashes::sha256;
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::script::Builder;
use lightning_signer::bitcoin::secp256k1::PublicKey;
use lightning_signer::bitcoin::transaction::Version;
use lightning_signer::bitcoin::{
    Amount, Block, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use lightning_signer::lightning;
use lightning_signer::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vls_protocol_client::KeysManagerClient;
use warden_ldk::signer::WardenKeys;
use warden_ldk::{ChainFeed, LdkSignerLink};

/// What a node's keys must provide for LDK.
pub trait Keys: NodeSigner + SignerProvider + EntropySource + Send + Sync + 'static {}
impl<K: NodeSigner + SignerProvider + EntropySource + Send + Sync + 'static> Keys for K {}

/// LDK's log, printed at warn and above (set WARDEN_TEST_LDK_LOG=trace for everything).
pub struct Log(pub &'static str);

impl Logger for Log {
    fn log(&self, record: Record) {
        let trace = std::env::var("WARDEN_TEST_LDK_LOG").is_ok_and(|v| v == "trace");
        if trace || record.level >= Level::Warn {
            eprintln!("[ldk {}] {} {}", self.0, record.level, record.args);
        }
    }
}

/// Transactions a node asked to broadcast; the test mines them.
#[derive(Default)]
pub struct Broadcasts(pub Mutex<Vec<Transaction>>);

impl Broadcasts {
    /// The broadcast transactions that spend an output of `spent`.
    pub fn spending(&self, spent: &Transaction) -> Vec<Transaction> {
        let txid = spent.compute_txid();
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.input.iter().any(|i| i.previous_output.txid == txid))
            .cloned()
            .collect()
    }
}

impl BroadcasterInterface for Broadcasts {
    fn broadcast_transactions(&self, txs: &[&Transaction]) {
        self.0
            .lock()
            .unwrap()
            .extend(txs.iter().map(|t| (*t).clone()));
    }
}

/// One fee rate for everything: both nodes agree, and it is inside VLS's accepted range.
pub struct Fees;

impl FeeEstimator for Fees {
    fn get_est_sat_per_1000_weight(&self, _: ConfirmationTarget) -> u32 {
        1_000
    }
}

/// Channel monitors kept in memory. The nodes in these tests never restart (wardend does), so
/// completing every update at once is the honest answer.
pub struct MemPersist;

impl<S: EcdsaChannelSigner> Persist<S> for MemPersist {
    fn persist_new_channel(
        &self,
        _: MonitorName,
        _: &ChannelMonitor<S>,
    ) -> ChannelMonitorUpdateStatus {
        ChannelMonitorUpdateStatus::Completed
    }
    fn update_persisted_channel(
        &self,
        _: MonitorName,
        _: Option<&ChannelMonitorUpdate>,
        _: &ChannelMonitor<S>,
    ) -> ChannelMonitorUpdateStatus {
        ChannelMonitorUpdateStatus::Completed
    }
    fn archive_persisted_channel(&self, _: MonitorName) {}
}

/// One end of an in-memory connection: what this node's `PeerManager` sends waits in `outbox`
/// until the pump hands it to the other side's `read_event`.
#[derive(Clone)]
pub struct Pipe {
    id: u64,
    pub(super) outbox: Arc<Mutex<Vec<u8>>>,
    closed: Arc<AtomicBool>,
}

static PIPE_IDS: AtomicU64 = AtomicU64::new(1);

impl Pipe {
    pub(super) fn new() -> Self {
        Pipe {
            id: PIPE_IDS.fetch_add(1, Ordering::Relaxed),
            outbox: Arc::default(),
            closed: Arc::default(),
        }
    }
    pub(super) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.outbox.lock().unwrap())
    }
}

impl PartialEq for Pipe {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for Pipe {}
impl std::hash::Hash for Pipe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl SocketDescriptor for Pipe {
    fn send_data(&mut self, data: &[u8], _continue_read: bool) -> usize {
        if self.closed.load(Ordering::SeqCst) {
            return 0;
        }
        self.outbox.lock().unwrap().extend_from_slice(data);
        data.len()
    }
    fn disconnect_socket(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

type Graph = NetworkGraph<Arc<Log>>;
pub type ChainMon<K> = ChainMonitor<
    <K as SignerProvider>::EcdsaSigner,
    Arc<dyn Filter + Send + Sync>,
    Arc<Broadcasts>,
    Arc<Fees>,
    Arc<Log>,
    Arc<MemPersist>,
    Arc<K>,
>;
type Router<K> = DefaultRouter<
    Arc<Graph>,
    Arc<Log>,
    Arc<K>,
    Arc<Mutex<FixedPenaltyScorer>>,
    (),
    FixedPenaltyScorer,
>;
type MsgRouter<K> = DefaultMessageRouter<Arc<Graph>, Arc<Log>, Arc<K>>;
pub type Manager<K> = ChannelManager<
    Arc<ChainMon<K>>,
    Arc<Broadcasts>,
    Arc<K>,
    Arc<K>,
    Arc<K>,
    Arc<Fees>,
    Arc<Router<K>>,
    Arc<MsgRouter<K>>,
    Arc<Log>,
>;
pub type Peers<K> = PeerManager<
    Pipe,
    Arc<Manager<K>>,
    Arc<IgnoringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<Log>,
    Arc<IgnoringMessageHandler>,
    Arc<K>,
    Arc<IgnoringMessageHandler>,
>;

/// A complete LDK node minus its wallet and disk.
pub struct Node<K: Keys> {
    pub name: &'static str,
    pub keys: Arc<K>,
    pub id: PublicKey,
    pub chain_monitor: Arc<ChainMon<K>>,
    pub manager: Arc<Manager<K>>,
    pub peers: Arc<Peers<K>>,
    pub broadcasts: Arc<Broadcasts>,
    /// Every event the node has emitted, in order; tests look them up and drain them.
    pub events: Mutex<Vec<Event>>,
}

impl<K: Keys> Node<K> {
    /// A node on `chain`'s current tip with `config`.
    pub fn new(name: &'static str, keys: Arc<K>, chain: &Chain, config: UserConfig) -> Self {
        let log = Arc::new(Log(name));
        let broadcasts = Arc::new(Broadcasts::default());
        let fees = Arc::new(Fees);
        let chain_monitor = Arc::new(ChainMonitor::new(
            None,
            broadcasts.clone(),
            log.clone(),
            fees.clone(),
            Arc::new(MemPersist),
            keys.clone(),
            keys.get_peer_storage_key(),
        ));
        let graph = Arc::new(NetworkGraph::new(Network::Regtest, log.clone()));
        let router = Arc::new(DefaultRouter::new(
            graph.clone(),
            log.clone(),
            keys.clone(),
            Arc::new(Mutex::new(FixedPenaltyScorer::with_penalty(0))),
            (),
        ));
        let msg_router = Arc::new(DefaultMessageRouter::new(graph, keys.clone()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let manager = Arc::new(ChannelManager::new(
            fees,
            chain_monitor.clone(),
            broadcasts.clone(),
            router,
            msg_router,
            log.clone(),
            keys.clone(),
            keys.clone(),
            keys.clone(),
            config,
            ChainParameters {
                network: Network::Regtest,
                best_block: chain.tip(),
            },
            now,
        ));
        let ignore = Arc::new(IgnoringMessageHandler {});
        let peers = Arc::new(PeerManager::new(
            MessageHandler {
                chan_handler: manager.clone(),
                route_handler: Arc::clone(&ignore),
                onion_message_handler: Arc::clone(&ignore),
                custom_message_handler: Arc::clone(&ignore),
                send_only_message_handler: ignore,
            },
            now,
            &keys.get_secure_random_bytes(),
            log,
            keys.clone(),
        ));
        let id = keys.get_node_id(Recipient::Node).unwrap();
        Node {
            name,
            keys,
            id,
            chain_monitor,
            manager,
            peers,
            broadcasts,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Collect the manager's and the monitor's events; true if there were any.
    pub(super) fn collect_events(&self) -> bool {
        let before = self.events.lock().unwrap().len();
        let handler = |e: Event| -> Result<(), ReplayEvent> {
            self.events.lock().unwrap().push(e);
            Ok(())
        };
        self.manager.process_pending_events(&handler);
        self.chain_monitor.process_pending_events(&handler);
        self.events.lock().unwrap().len() > before
    }

    /// Remove and return the first event `pick` accepts.
    pub fn take_event<T>(&self, mut pick: impl FnMut(&Event) -> Option<T>) -> Option<T> {
        let mut events = self.events.lock().unwrap();
        let i = events.iter().position(|e| pick(e).is_some())?;
        let e = events.remove(i);
        pick(&e)
    }

    /// Feed a block to the manager and the monitor.
    pub fn connect(&self, block: &Block, height: u32) {
        self.manager.block_connected(block, height);
        self.chain_monitor.block_connected(block, height);
    }
}

/// What [`Net::mine`] calls with each block and its height.
pub type BlockHook = Box<dyn FnMut(&Block, u32)>;

/// Two nodes and the connection between them.
pub struct Net<A: Keys, B: Keys> {
    pub a: Node<A>,
    pub b: Node<B>,
    a_end: Pipe,
    b_end: Pipe,
    pub chain: Chain,
    /// Called with each new block before the nodes see it (e.g. to feed wardend's chain
    /// tracker).
    pub on_block: Option<BlockHook>,
}

impl<A: Keys, B: Keys> Net<A, B> {
    /// Connect `a` to `b` (a dials) and run the handshake to completion.
    pub fn connect(a: Node<A>, b: Node<B>, chain: Chain) -> Self {
        let a_end = Pipe::new();
        let b_end = Pipe::new();
        let act_one = a
            .peers
            .new_outbound_connection(b.id, a_end.clone(), None)
            .expect("outbound connection");
        b.peers
            .new_inbound_connection(b_end.clone(), None)
            .expect("inbound connection");
        a_end.outbox.lock().unwrap().extend_from_slice(&act_one);
        let net = Net {
            a,
            b,
            a_end,
            b_end,
            chain,
            on_block: None,
        };
        net.pump();
        assert_eq!(
            net.a.peers.list_peers().len(),
            1,
            "A sees B after the handshake"
        );
        assert_eq!(
            net.b.peers.list_peers().len(),
            1,
            "B sees A after the handshake"
        );
        net
    }

    /// Deliver messages both ways and let both nodes act on them until neither has anything
    /// more to say.
    pub fn pump(&self) {
        for _ in 0..10_000 {
            let mut busy = false;
            let to_b = self.a_end.take();
            if !to_b.is_empty() {
                busy = true;
                let mut end = self.b_end.clone();
                self.b
                    .peers
                    .read_event(&mut end, &to_b)
                    .expect("B reads A's bytes");
            }
            let to_a = self.b_end.take();
            if !to_a.is_empty() {
                busy = true;
                let mut end = self.a_end.clone();
                self.a
                    .peers
                    .read_event(&mut end, &to_a)
                    .expect("A reads B's bytes");
            }
            self.a.manager.process_pending_htlc_forwards();
            self.b.manager.process_pending_htlc_forwards();
            self.a.peers.process_events();
            self.b.peers.process_events();
            busy |= self.a.collect_events();
            busy |= self.b.collect_events();
            if !busy
                && self.a_end.outbox.lock().unwrap().is_empty()
                && self.b_end.outbox.lock().unwrap().is_empty()
            {
                return;
            }
        }
        panic!("the two nodes kept talking for 10,000 rounds");
    }

    /// Mine a block holding `txs` and connect it to both nodes.
    pub fn mine(&mut self, txs: Vec<Transaction>) {
        let height = self.chain.mine(txs);
        let block = self.chain.blocks.last().unwrap().clone();
        if let Some(hook) = self.on_block.as_mut() {
            hook(&block, height);
        }
        self.a.connect(&block, height);
        self.b.connect(&block, height);
        self.pump();
    }
}

/// A regtest chain from genesis, built by the test.
pub struct Chain {
    pub blocks: Vec<Block>,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            blocks: vec![genesis_block(Network::Regtest)],
        }
    }
}

impl Chain {
    pub fn tip(&self) -> BestBlock {
        BestBlock::new(
            self.blocks.last().unwrap().block_hash(),
            (self.blocks.len() - 1) as u32,
        )
    }

    /// Append a block with a coinbase and `txs`; returns its height.
    pub fn mine(&mut self, txs: Vec<Transaction>) -> u32 {
        let height = self.blocks.len() as u32;
        let prev = self.blocks.last().unwrap().header;
        let coinbase = Transaction {
            version: Version::ONE,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: Builder::new().push_int(height as i64).into_script(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(50 * 100_000_000),
                script_pubkey: ScriptBuf::new_op_return([0u8; 4]),
            }],
        };
        let mut txdata = vec![coinbase];
        txdata.extend(txs);
        let mut block = Block {
            header: Header {
                version: BlockVersion::TWO,
                prev_blockhash: prev.block_hash(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: prev.time + 600,
                bits: prev.bits,
                nonce: 0,
            },
            txdata,
        };
        block.header.merkle_root = block.compute_merkle_root().unwrap();
        // Regtest proof of work (VLS checks it): about two tries.
        while block.header.validate_pow(block.header.target()).is_err() {
            block.header.nonce += 1;
        }
        self.blocks.push(block);
        height
    }
}

/// The node side of Warden for an LDK node: the link's hsmd.Hsmd service on a loopback port
/// (wardend connects to it), and the runtime serving it.
pub struct WardenSide {
    pub rt: tokio::runtime::Runtime,
    pub link: LdkSignerLink,
    pub port: u16,
}

impl WardenSide {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let link = LdkSignerLink::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(link.service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        WardenSide { rt, link, port }
    }

    /// Warden's keys (VLS's KeysManagerClient over the link, with Warden's channel signer):
    /// answered by wardend (blocks until it connects).
    pub fn keys(&self) -> WardenKeys {
        WardenKeys::new(
            KeysManagerClient::new(
                Arc::new(self.link.clone()),
                "regtest".into(),
                None,
                None,
                ReceiveAuthKey([7u8; 32]),
            ),
            self.link.clone(),
        )
    }

    /// A hook for [`Net::on_block`] that hands every block to wardend's chain tracker, as an
    /// LDK node would from `chain::Listen`.
    pub fn chain_feed(&self) -> BlockHook {
        let mut feed = ChainFeed::new(Network::Regtest);
        let link = self.link.clone();
        Box::new(move |block, height| {
            feed.block_connected(&link, block, height)
                .expect("wardend takes the block")
        })
    }
}

impl WardenSide {
    /// Two connected nodes on a fresh chain: A signed by wardend through this side (blocks fed
    /// to wardend's chain tracker), B on LDK's KeysManager configured to receive.
    pub fn net(&self) -> Net<WardenKeys, KeysManager> {
        let chain = Chain::default();
        let a = Node::new("A", Arc::new(self.keys()), &chain, UserConfig::default());
        let b = Node::new("B", keys_manager(0x42), &chain, receiver_config());
        let mut net = Net::connect(a, b, chain);
        net.on_block = Some(self.chain_feed());
        net
    }

    /// A (signed through this side) opens a `sat` channel to B, funded from A's wardend wallet
    /// and signed by wardend after the commitment exchange; returns when both sides are ready.
    pub fn open_channel<B: Keys>(&self, net: &mut Net<WardenKeys, B>, sat: u64) {
        let wallet = net.a.keys.get_destination_script([0; 32]).unwrap();
        let faucet = net.fund_wallet(wallet, sat + 2_000);
        let (temporary, script) = net.request_channel(sat);
        let unsigned = spend(&faucet, 0, script, sat);
        net.commit_funding(temporary, &unsigned);
        let input = warden_ldk::WalletInput {
            prev_tx: faucet,
            vout: 0,
            keyindex: 1,
        };
        let funding = self
            .link
            .sign_wallet_spend(&unsigned, &[input])
            .expect("wardend signs the funding");
        net.confirm_funding(funding);
    }
}

/// LDK's own KeysManager from `seed`.
pub fn keys_manager(seed: u8) -> Arc<KeysManager> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Arc::new(KeysManager::new(
        &[seed; 32],
        now.as_secs(),
        now.subsec_nanos(),
        true,
    ))
}

/// The receiving node's configuration: it accepts a whole channel's worth in flight, so a large
/// payment on a small test channel is limited by policy, not by LDK's default 10 %.
pub fn receiver_config() -> UserConfig {
    let mut config = UserConfig::default();
    config
        .channel_handshake_config
        .max_inbound_htlc_value_in_flight_percent_of_channel = 100;
    config
}

/// An unsigned transaction spending `prev`'s output `vout` (worth `sat` + fee) to `script`.
pub fn spend(prev: &Transaction, vout: u32, script: ScriptBuf, sat: u64) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: prev.compute_txid(),
                vout,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: script,
        }],
    }
}

impl<A: Keys, B: Keys> Net<A, B> {
    /// Mine a transaction paying `sat` to `script` (A's wallet); returns it.
    pub fn fund_wallet(&mut self, script: ScriptBuf, sat: u64) -> Transaction {
        let coinbase = self.chain.blocks.last().unwrap().txdata[0].clone();
        let mut faucet = spend(&coinbase, 0, script, sat);
        faucet.input[0].sequence = Sequence::MAX;
        self.mine(vec![faucet.clone()]);
        faucet
    }

    /// A asks B for a channel of `sat`; returns the temporary channel id and the funding script
    /// from `FundingGenerationReady`.
    pub fn request_channel(&self, sat: u64) -> (ChannelId, ScriptBuf) {
        self.a
            .manager
            .create_channel(self.b.id, sat, 0, 1, None, None)
            .unwrap();
        self.pump();
        self.a
            .take_event(|e| match e {
                Event::FundingGenerationReady {
                    temporary_channel_id,
                    output_script,
                    channel_value_satoshis,
                    ..
                } => {
                    assert_eq!(*channel_value_satoshis, sat);
                    Some((*temporary_channel_id, output_script.clone()))
                }
                _ => None,
            })
            .expect("FundingGenerationReady")
    }

    /// Give A the (unsigned) funding transaction and run the commitment exchange, until LDK
    /// says the funding may be broadcast.
    pub fn commit_funding(&self, temporary_channel_id: ChannelId, unsigned: &Transaction) {
        self.a
            .manager
            .unsafe_manual_funding_transaction_generated(
                temporary_channel_id,
                self.b.id,
                lightning::chain::transaction::OutPoint {
                    txid: unsigned.compute_txid(),
                    index: 0,
                },
            )
            .unwrap();
        self.pump();
        self.a
            .take_event(|e| matches!(e, Event::FundingTxBroadcastSafe { .. }).then_some(()))
            .unwrap_or_else(|| panic!("FundingTxBroadcastSafe: {:?}", self.a.events));
    }

    /// Mine the funding transaction, confirm it six times, and see both sides ready.
    pub fn confirm_funding(&mut self, funding: Transaction) {
        self.mine(vec![funding]);
        for _ in 0..5 {
            self.mine(vec![]);
        }
        self.a
            .take_event(|e| matches!(e, Event::ChannelReady { .. }).then_some(()))
            .expect("A sees the channel ready");
        self.b
            .take_event(|e| matches!(e, Event::ChannelReady { .. }).then_some(()))
            .expect("B sees the channel ready");
        assert_eq!(self.a.manager.list_usable_channels().len(), 1);
    }

    /// B writes an invoice for `amount_msat`.
    pub fn invoice(&self, amount_msat: u64, what: &str) -> Bolt11Invoice {
        self.b
            .manager
            .create_bolt11_invoice(Bolt11InvoiceParameters {
                amount_msats: Some(amount_msat),
                description: Bolt11InvoiceDescription::Direct(
                    Description::new(what.into()).unwrap(),
                ),
                ..Default::default()
            })
            .unwrap()
    }

    /// A pays `invoice` the way an application using Warden does: `preapprove` first (nothing
    /// is sent if it fails), then LDK pays; B claims. Returns the preimage A learned.
    pub fn pay<E>(
        &self,
        invoice: &Bolt11Invoice,
        preapprove: impl FnOnce(&Bolt11Invoice) -> Result<(), E>,
    ) -> Result<PaymentPreimage, E> {
        self.send_and_hold(invoice, preapprove)?;
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        Ok(self.complete(hash, invoice.amount_milli_satoshis().unwrap()))
    }

    /// A pays B `amount_msat` spontaneously (keysend), after `preapprove(payee, hash, amount)`.
    pub fn keysend<E>(
        &self,
        amount_msat: u64,
        preapprove: impl FnOnce(PublicKey, PaymentHash, u64) -> Result<(), E>,
    ) -> Result<PaymentPreimage, E> {
        let preimage = PaymentPreimage(self.a.keys.get_secure_random_bytes());
        let hash = PaymentHash(sha256::Hash::hash(&preimage.0).to_byte_array());
        preapprove(self.b.id, hash, amount_msat)?;
        let route = RouteParameters::from_payment_params_and_value(
            PaymentParameters::for_keysend(self.b.id, 40, false),
            amount_msat,
        );
        self.a
            .manager
            .send_spontaneous_payment(
                Some(preimage),
                RecipientOnionFields::spontaneous_empty(),
                PaymentId(hash.0),
                route,
                Retry::Attempts(0),
            )
            .expect("LDK accepts the keysend");
        self.pump();
        let sent = self.complete(hash, amount_msat);
        assert_eq!(sent, preimage);
        Ok(sent)
    }

    /// A sends `invoice` (after `preapprove`) and B holds the HTLC without claiming it: the
    /// payment stays in flight until [`Net::complete`].
    pub fn send_and_hold<E>(
        &self,
        invoice: &Bolt11Invoice,
        preapprove: impl FnOnce(&Bolt11Invoice) -> Result<(), E>,
    ) -> Result<(), E> {
        preapprove(invoice)?;
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        self.a
            .manager
            .pay_for_bolt11_invoice(
                invoice,
                PaymentId(hash.0),
                None,
                RouteParametersConfig::default(),
                Retry::Attempts(0),
            )
            .expect("LDK accepts the payment");
        self.pump();
        Ok(())
    }

    /// B claims the payment `hash` it was offered; A learns the preimage.
    pub fn complete(&self, hash: PaymentHash, amount: u64) -> PaymentPreimage {
        let preimage = self
            .b
            .take_event(|e| match e {
                Event::PaymentClaimable {
                    payment_hash,
                    purpose,
                    amount_msat,
                    ..
                } if *payment_hash == hash => {
                    assert_eq!(*amount_msat, amount);
                    purpose.preimage()
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("B was not offered {hash}: {:?}", self.b.events));
        self.b.manager.claim_funds(preimage);
        self.pump();
        let sent = self
            .a
            .take_event(|e| match e {
                Event::PaymentSent {
                    payment_hash,
                    payment_preimage,
                    ..
                } if *payment_hash == hash => Some(*payment_preimage),
                _ => None,
            })
            .unwrap_or_else(|| panic!("A's payment {hash} did not complete: {:?}", self.a.events));
        assert_eq!(sent, preimage);
        assert_eq!(
            PaymentHash(sha256::Hash::hash(&sent.0).to_byte_array()),
            hash,
            "the preimage A holds proves the payment"
        );
        sent
    }
}

/// A one-key P2WPKH wallet for a node that is not signed by Warden: funding transactions must
/// carry a witness (LDK checks), so they are signed for real.
pub struct LocalWallet {
    secret: lightning_signer::bitcoin::secp256k1::SecretKey,
    secp:
        lightning_signer::bitcoin::secp256k1::Secp256k1<lightning_signer::bitcoin::secp256k1::All>,
}

impl LocalWallet {
    pub fn new(seed: u8) -> Self {
        LocalWallet {
            secret: lightning_signer::bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32])
                .unwrap(),
            secp: lightning_signer::bitcoin::secp256k1::Secp256k1::new(),
        }
    }

    fn key(&self) -> lightning_signer::bitcoin::CompressedPublicKey {
        lightning_signer::bitcoin::CompressedPublicKey(self.secret.public_key(&self.secp))
    }

    /// Where coins for this wallet go.
    pub fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.key().wpubkey_hash())
    }

    /// Sign input 0 of `tx`, which spends `spent` (an output to [`LocalWallet::script`]).
    pub fn sign(&self, mut tx: Transaction, spent: &TxOut) -> Transaction {
        use lightning_signer::bitcoin::sighash::{EcdsaSighashType, SighashCache};
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &spent.script_pubkey, spent.value, EcdsaSighashType::All)
            .unwrap();
        let sig = self.secp.sign_ecdsa(
            &lightning_signer::bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array()),
            &self.secret,
        );
        let sig = lightning_signer::bitcoin::ecdsa::Signature::sighash_all(sig);
        tx.input[0].witness = Witness::p2wpkh(&sig, &self.key().0);
        tx
    }
}

impl<A: Keys + OutputSpender, B: Keys> Net<A, B> {
    /// A force-closes its channel with B and the commitment it broadcasts is mined; returns it.
    pub fn force_close_a(&mut self) -> Transaction {
        let channel = self.a.manager.list_channels()[0].clone();
        self.a.broadcasts.0.lock().unwrap().clear();
        self.a
            .manager
            .force_close_broadcasting_latest_txn(&channel.channel_id, &self.b.id, "gone".into())
            .unwrap();
        let funding = channel.funding_txo.unwrap().into_bitcoin_outpoint();
        let commitment = self
            .a
            .broadcasts
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.input[0].previous_output == funding)
            .cloned()
            .expect("A broadcast its commitment");
        self.mine(vec![commitment.clone()]);
        commitment
    }

    /// Mine empty blocks (at most `max`) until A broadcasts a spend of `spent`; returns it.
    pub fn mine_until_a_spends(&mut self, spent: &Transaction, max: usize) -> Option<Transaction> {
        for _ in 0..max {
            self.mine(vec![]);
            if let Some(tx) = self.a.broadcasts.spending(spent).into_iter().next() {
                return Some(tx);
            }
        }
        None
    }

    /// Mine until A has been handed every output its closed channels left it
    /// (`Event::SpendableOutputs`) and its monitors have nothing left to claim; then sweep them
    /// all to A's wallet with A's `spend_spendable_outputs` and mine the sweep. LDK may hand
    /// the same output over more than once; it is swept once. Returns the sweep and the outputs
    /// it spends.
    pub fn sweep_a(&mut self) -> (Transaction, Vec<SpendableOutputDescriptor>) {
        let mut outputs: Vec<SpendableOutputDescriptor> = Vec::new();
        for _ in 0..400 {
            while let Some(more) = self.a.take_event(|e| match e {
                Event::SpendableOutputs { outputs, .. } => Some(outputs.clone()),
                _ => None,
            }) {
                for output in more {
                    let outpoint = spent_outpoint(&output);
                    if outputs.iter().all(|o| spent_outpoint(o) != outpoint) {
                        outputs.push(output);
                    }
                }
            }
            if !outputs.is_empty() && self.a.chain_monitor.get_claimable_balances(&[]).is_empty() {
                break;
            }
            self.mine(vec![]);
        }
        let left = self.a.chain_monitor.get_claimable_balances(&[]);
        assert!(
            left.is_empty(),
            "A's monitor has nothing left to claim: {left:?}"
        );
        let wallet = self.a.keys.get_destination_script([0; 32]).unwrap();
        let refs: Vec<&SpendableOutputDescriptor> = outputs.iter().collect();
        let sweep = self
            .a
            .keys
            .spend_spendable_outputs(
                &refs,
                vec![],
                wallet,
                253,
                None,
                &lightning_signer::bitcoin::secp256k1::Secp256k1::new(),
            )
            .expect("A's signer signs the sweep");
        self.mine(vec![sweep.clone()]);
        (sweep, outputs)
    }
}

/// The output a descriptor hands over.
fn spent_outpoint(d: &SpendableOutputDescriptor) -> lightning::chain::transaction::OutPoint {
    match d {
        SpendableOutputDescriptor::StaticOutput { outpoint, .. } => *outpoint,
        SpendableOutputDescriptor::DelayedPaymentOutput(o) => o.outpoint,
        SpendableOutputDescriptor::StaticPaymentOutput(o) => o.outpoint,
    }
}
