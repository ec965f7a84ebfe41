//! One LDK node with a channel to each of many peers, every peer on its own in-memory pipe, so
//! each peer's traffic can be driven from its own thread at the same time. LDK then calls the
//! hub's signer from all those threads at once, the way a busy node's peers do; the two-node
//! [`super::ldk_net::Net`] drives everything from one thread.
//!
//! The hub is node A (any [`Keys`], in practice `KeysManagerClient` answered by wardend); the
//! peers are LDK's own `KeysManager` nodes configured to receive. Everything is synchronous, as
//! in `ldk_net`: drive it from plain threads (`std::thread::scope`), never from async tasks.
#![allow(dead_code)]

use super::ldk_net::{keys_manager, receiver_config, spend, Chain, Keys, Node, Pipe};
use lightning::events::Event;
use lightning::ln::channelmanager::{Bolt11InvoiceParameters, PaymentId, Retry};
use lightning::routing::router::RouteParametersConfig;
use lightning::sign::{KeysManager, SignerProvider};
use lightning::types::payment::PaymentHash;
use lightning::util::config::UserConfig;
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::{Amount, Block, Sequence, Transaction, TxOut};
use lightning_signer::lightning;
use lightning_signer::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use warden_ldk::{LdkSignerLink, WalletInput};

/// One peer of the hub and the pipe between them.
pub struct Spoke {
    pub b: Node<KeysManager>,
    a_end: Pipe,
    b_end: Pipe,
}

/// Node A and its peers.
pub struct Hub<A: Keys> {
    pub a: Node<A>,
    pub spokes: Vec<Spoke>,
    pub chain: Chain,
}

/// What each new block is handed to before the nodes see it (wardend's chain tracker).
pub type Feed<'a> = &'a mut dyn FnMut(&Block, u32);

impl<A: Keys> Hub<A> {
    /// A connected to `peers` new receiving nodes (seeds 0x50, 0x51, ...), handshakes done.
    pub fn connect(keys: std::sync::Arc<A>, peers: usize) -> Self {
        let chain = Chain::default();
        let a = Node::new("A", keys, &chain, UserConfig::default());
        let spokes = (0..peers)
            .map(|i| Spoke {
                b: Node::new("B", keys_manager(0x50 + i as u8), &chain, receiver_config()),
                a_end: Pipe::new(),
                b_end: Pipe::new(),
            })
            .collect();
        let hub = Hub { a, spokes, chain };
        for (i, s) in hub.spokes.iter().enumerate() {
            let act_one = hub
                .a
                .peers
                .new_outbound_connection(s.b.id, s.a_end.clone(), None)
                .expect("outbound connection");
            s.b.peers
                .new_inbound_connection(s.b_end.clone(), None)
                .expect("inbound connection");
            s.a_end.outbox.lock().unwrap().extend_from_slice(&act_one);
            hub.pump(i);
        }
        assert_eq!(hub.a.peers.list_peers().len(), peers, "A sees every peer");
        hub
    }

    /// Deliver spoke `i`'s messages both ways and let A and that peer act on them until the
    /// pipe is quiet. Safe to call for different spokes from different threads at once: each
    /// pipe is read by one thread, and LDK's managers take concurrent calls.
    pub fn pump(&self, i: usize) {
        let s = &self.spokes[i];
        for _ in 0..100_000 {
            let mut busy = false;
            let to_b = s.a_end.take();
            if !to_b.is_empty() {
                busy = true;
                s.b.peers
                    .read_event(&mut s.b_end.clone(), &to_b)
                    .expect("B reads A's bytes");
            }
            let to_a = s.b_end.take();
            if !to_a.is_empty() {
                busy = true;
                self.a
                    .peers
                    .read_event(&mut s.a_end.clone(), &to_a)
                    .expect("A reads B's bytes");
            }
            self.a.manager.process_pending_htlc_forwards();
            s.b.manager.process_pending_htlc_forwards();
            self.a.peers.process_events();
            s.b.peers.process_events();
            self.a.collect_events();
            busy |= s.b.collect_events();
            if !busy
                && s.a_end.outbox.lock().unwrap().is_empty()
                && s.b_end.outbox.lock().unwrap().is_empty()
            {
                return;
            }
        }
        panic!("A and peer {i} kept talking for 100,000 rounds");
    }

    fn pump_all(&self) {
        for _ in 0..2 {
            for i in 0..self.spokes.len() {
                self.pump(i);
            }
        }
    }

    /// Wait, pumping spoke `i`, until `node` has an event `pick` accepts (another thread may be
    /// the one that collects A's events).
    fn wait<K: Keys, T>(
        &self,
        i: usize,
        node: &Node<K>,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        for round in 0..20_000 {
            if let Some(t) = node.take_event(&mut pick) {
                return t;
            }
            self.pump(i);
            if round > 100 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        panic!("{what} (peer {i}) did not happen: {:?}", node.events);
    }

    /// Mine a block holding `txs`, hand it to `feed`, connect it to every node.
    pub fn mine(&mut self, txs: Vec<Transaction>, feed: Feed) {
        let height = self.chain.mine(txs);
        let block = self.chain.blocks.last().unwrap().clone();
        feed(&block, height);
        self.a.connect(&block, height);
        for s in &self.spokes {
            s.b.connect(&block, height);
        }
        self.pump_all();
    }

    /// Peer `i` writes an invoice for `amount_msat`.
    pub fn peer_invoice(&self, i: usize, amount_msat: u64, what: &str) -> Bolt11Invoice {
        invoice(&self.spokes[i].b, amount_msat, what)
    }

    /// A writes an invoice for `amount_msat` (signed by A's signer).
    pub fn hub_invoice(&self, amount_msat: u64, what: &str) -> Bolt11Invoice {
        invoice(&self.a, amount_msat, what)
    }

    /// A pays peer `i`'s `invoice` the way an application using Warden does (`preapprove`
    /// first), and the peer claims it; returns when A holds the preimage.
    pub fn hub_pays<E>(
        &self,
        i: usize,
        invoice: &Bolt11Invoice,
        preapprove: impl FnOnce(&Bolt11Invoice) -> Result<(), E>,
    ) -> Result<(), E> {
        preapprove(invoice)?;
        pay(&self.a, invoice);
        self.pump(i);
        self.complete(i, &self.spokes[i].b, &self.a, invoice);
        Ok(())
    }

    /// Peer `i` pays A's `invoice` over its channel and A claims it: on A's side only channel
    /// signing (commitments, revocations) and the claim, no payment approval.
    pub fn peer_pays(&self, i: usize, invoice: &Bolt11Invoice) {
        pay(&self.spokes[i].b, invoice);
        self.pump(i);
        self.complete(i, &self.a, &self.spokes[i].b, invoice);
    }

    /// Pump spoke `i` until neither side of its channel has an HTLC pending: the payment's
    /// commitment dance is over and its balance can be spent again.
    fn settle(&self, i: usize) {
        let peer = self.spokes[i].b.id;
        let a_id = self.a.id;
        for round in 0..20_000 {
            let a_busy = self
                .a
                .manager
                .list_channels_with_counterparty(&peer)
                .iter()
                .any(|c| {
                    !c.pending_outbound_htlcs.is_empty() || !c.pending_inbound_htlcs.is_empty()
                });
            let b_busy = self.spokes[i]
                .b
                .manager
                .list_channels_with_counterparty(&a_id)
                .iter()
                .any(|c| {
                    !c.pending_outbound_htlcs.is_empty() || !c.pending_inbound_htlcs.is_empty()
                });
            if !a_busy && !b_busy {
                return;
            }
            self.pump(i);
            if round > 100 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        panic!("the channel with peer {i} never settled");
    }

    fn complete<R: Keys, P: Keys>(
        &self,
        i: usize,
        receiver: &Node<R>,
        payer: &Node<P>,
        invoice: &Bolt11Invoice,
    ) {
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        let preimage = self.wait(i, receiver, "the payment reaching its payee", |e| match e {
            Event::PaymentClaimable {
                payment_hash,
                purpose,
                ..
            } if *payment_hash == hash => purpose.preimage(),
            _ => None,
        });
        receiver.manager.claim_funds(preimage);
        self.pump(i);
        self.wait(i, payer, "the payer learning the preimage", |e| match e {
            Event::PaymentSent {
                payment_hash,
                payment_preimage,
                ..
            } if *payment_hash == hash => Some(*payment_preimage),
            _ => None,
        });
        self.settle(i);
        // What else the two nodes said about this payment is not needed; keep the lists short.
        for node_events in [&receiver.events, &payer.events] {
            node_events.lock().unwrap().retain(|e| match e {
                Event::PaymentClaimed { payment_hash, .. } => *payment_hash != hash,
                Event::PaymentPathSuccessful { payment_hash, .. } => *payment_hash != Some(hash),
                _ => true,
            });
        }
    }
}

impl Hub<warden_ldk::signer::WardenKeys> {
    /// A opens a `sat` channel to every peer, funded from A's wardend wallet (one faucet output
    /// per channel) and signed by wardend through `link`; returns when every channel is usable.
    pub fn open_channels(&mut self, link: &LdkSignerLink, sat: u64, feed: Feed) {
        let wallet = self.a.keys.get_destination_script([0; 32]).unwrap();
        let coinbase = self.chain.blocks.last().unwrap().txdata[0].clone();
        let mut faucet = spend(&coinbase, 0, wallet.clone(), sat + 2_000);
        faucet.input[0].sequence = Sequence::MAX;
        faucet.output = (0..self.spokes.len())
            .map(|_| TxOut {
                value: Amount::from_sat(sat + 2_000),
                script_pubkey: wallet.clone(),
            })
            .collect();
        self.mine(vec![faucet.clone()], feed);
        let mut fundings = Vec::new();
        for i in 0..self.spokes.len() {
            let peer = self.spokes[i].b.id;
            self.a
                .manager
                .create_channel(peer, sat, 0, i as u128, None, None)
                .unwrap();
            self.pump(i);
            let (temporary, script) =
                self.wait(i, &self.a, "FundingGenerationReady", |e| match e {
                    Event::FundingGenerationReady {
                        temporary_channel_id,
                        output_script,
                        counterparty_node_id,
                        ..
                    } if *counterparty_node_id == peer => {
                        Some((*temporary_channel_id, output_script.clone()))
                    }
                    _ => None,
                });
            let unsigned = spend(&faucet, i as u32, script, sat);
            self.a
                .manager
                .unsafe_manual_funding_transaction_generated(
                    temporary,
                    peer,
                    lightning::chain::transaction::OutPoint {
                        txid: unsigned.compute_txid(),
                        index: 0,
                    },
                )
                .unwrap();
            self.pump(i);
            self.wait(i, &self.a, "FundingTxBroadcastSafe", |e| {
                matches!(e, Event::FundingTxBroadcastSafe { counterparty_node_id, .. } if *counterparty_node_id == peer)
                    .then_some(())
            });
            let input = WalletInput {
                prev_tx: faucet.clone(),
                vout: i as u32,
                keyindex: 1,
            };
            fundings.push(
                link.sign_wallet_spend(&unsigned, &[input])
                    .expect("wardend signs the funding"),
            );
        }
        self.mine(fundings, feed);
        for _ in 0..5 {
            self.mine(vec![], feed);
        }
        for i in 0..self.spokes.len() {
            self.wait(i, &self.spokes[i].b, "ChannelReady at the peer", |e| {
                matches!(e, Event::ChannelReady { .. }).then_some(())
            });
        }
        assert_eq!(
            self.a.manager.list_usable_channels().len(),
            self.spokes.len(),
            "every channel is usable"
        );
        self.a
            .events
            .lock()
            .unwrap()
            .retain(|e| !matches!(e, Event::ChannelReady { .. }));
    }
}

fn invoice<K: Keys>(node: &Node<K>, amount_msat: u64, what: &str) -> Bolt11Invoice {
    node.manager
        .create_bolt11_invoice(Bolt11InvoiceParameters {
            amount_msats: Some(amount_msat),
            description: Bolt11InvoiceDescription::Direct(Description::new(what.into()).unwrap()),
            ..Default::default()
        })
        .unwrap()
}

fn pay<K: Keys>(node: &Node<K>, invoice: &Bolt11Invoice) {
    node.manager
        .pay_for_bolt11_invoice(
            invoice,
            PaymentId(invoice.payment_hash().to_byte_array()),
            None,
            RouteParametersConfig::default(),
            Retry::Attempts(0),
        )
        .expect("LDK accepts the payment");
}
