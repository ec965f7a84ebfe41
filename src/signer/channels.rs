//! The channel list from VLS's own state: what the liquidity view, the metrics and the
//! `[channels]` limits read. Balances are the ones VLS validated in the current commitments
//! (the lower of ours in the holder's and the counterparty's), never the node's word.

use crate::policy::channels::{ChannelOpen, ChannelPhase, ChannelView, SettledPayment};
use lightning_signer::bitcoin::Transaction;
use lightning_signer::channel::{ChannelBase, ChannelSlot};
use lightning_signer::node::Node;
use std::sync::{Arc, Mutex};

/// The peer, when the channel id carries it: CLN's ids are the peer's node id (33 bytes)
/// followed by the node's channel number (8 bytes). VLS's LDK client sends zeros for the peer
/// (LDK derives a channel's signer before it knows the peer), so an LDK channel's peer is
/// unknown to the signer.
fn peer_of(id: &[u8]) -> Option<String> {
    (id.len() == 41 && id[..33].iter().any(|b| *b != 0)).then(|| hex::encode(&id[..33]))
}

/// Every channel `node` holds. Follows VLS's lock order (the channel table is released before
/// any channel is locked), so it can run beside the signer loop.
pub fn channel_views(node: &Node) -> Vec<ChannelView> {
    let slots: Vec<(Vec<u8>, Arc<Mutex<ChannelSlot>>)> = node
        .get_channels()
        .iter()
        .map(|(id, slot)| (id.as_slice().to_vec(), Arc::clone(slot)))
        .collect();
    slots
        .into_iter()
        .map(|(id, slot)| {
            let slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            view(&id, &slot)
        })
        .collect()
}

fn view(id: &[u8], slot: &ChannelSlot) -> ChannelView {
    let mut v = ChannelView {
        id: hex::encode(id),
        peer: peer_of(id),
        funding: None,
        outbound: false,
        capacity_msat: 0,
        local_msat: 0,
        remote_msat: 0,
        offered_htlcs: 0,
        offered_msat: 0,
        received_htlcs: 0,
        received_msat: 0,
        phase: ChannelPhase::Stub,
    };
    let ChannelSlot::Ready(chan) = slot else {
        return v;
    };
    let b = chan.balance();
    let msat = |sat: u64| sat.saturating_mul(1_000);
    v.funding = Some(chan.setup.funding_outpoint.to_string());
    v.outbound = chan.setup.is_outbound;
    v.capacity_msat = msat(chan.setup.channel_value_sat);
    v.phase = if chan.enforcement_state.channel_closed || b.closing_count > 0 {
        ChannelPhase::Closing
    } else if b.channel_count > 0 {
        ChannelPhase::Open
    } else {
        ChannelPhase::Unconfirmed
    };
    v.local_msat = msat(b.claimable.max(b.sweeping));
    if b.channel_count + b.unconfirmed_count + b.closing_count == 0 {
        // No commitment exchanged yet (VLS reports no balance then): the channel holds what
        // its setup says, the funder's capacity less what it pushes.
        let push = chan.setup.push_value_msat;
        v.local_msat = if chan.setup.is_outbound {
            v.capacity_msat.saturating_sub(push)
        } else {
            push
        };
    }
    v.offered_htlcs = b.offered_htlc_count;
    v.offered_msat = msat(b.offered_htlc);
    v.received_htlcs = b.received_htlc_count;
    v.received_msat = msat(b.received_htlc);
    v.remote_msat = v
        .capacity_msat
        .saturating_sub(v.local_msat)
        .saturating_sub(v.offered_msat)
        .saturating_sub(v.received_msat);
    debug_assert!(chan.is_ready());
    v
}

/// The channels `tx` funds: outputs that are the funding outpoint of a channel VLS has set up.
/// Returns each as an open to check and the channel ids (already in the list) it stands for.
pub fn funded_by(node: &Node, tx: &Transaction) -> (Vec<ChannelOpen>, Vec<String>) {
    let txid = tx.compute_txid();
    let mut opens = Vec::new();
    let mut ids = Vec::new();
    for c in channel_views(node) {
        let Some(funding) = &c.funding else { continue };
        let Some((t, vout)) = funding.split_once(':') else {
            continue;
        };
        let funds =
            t == txid.to_string() && vout.parse::<usize>().is_ok_and(|i| i < tx.output.len());
        // Every channel the transaction funds, whoever opened it: a dual-funded channel a peer
        // opened is checked with its whole capacity when this node adds to its funding.
        if funds {
            opens.push(ChannelOpen {
                peer: c.peer.clone().unwrap_or_default(),
                capacity_msat: c.capacity_msat,
                // The funding transaction does not say whether the channel will be announced.
                private: None,
                incoming: !c.outbound,
            });
            ids.push(c.id.clone());
        }
    }
    (opens, ids)
}

/// Outgoing payments whose preimage VLS knows and whose HTLCs were in this node's commitments:
/// what each invoice asked and what left the channels for it. VLS keeps the last in-flight
/// amount of a payment after its HTLCs are removed, so a settled payment still shows it.
pub fn settled_payments(node: &Node) -> Vec<SettledPayment> {
    let state = node.get_state();
    state
        .payments
        .iter()
        .filter(|(_, p)| p.is_fulfilled() && !p.is_no_outgoing())
        .filter_map(|(hash, p)| {
            let invoice = state.invoices.get(hash)?;
            let (_, out_sat) = p.incoming_outgoing();
            Some(SettledPayment {
                payment_hash: hex::encode(hash.0),
                invoiced_msat: invoice.amount_msat,
                sent_msat: out_sat.saturating_mul(1_000),
            })
        })
        .collect()
}

/// The signer's state as the core reads it, held weakly (the node holds the core through its
/// approver).
pub struct NodeView {
    node: std::sync::Weak<Node>,
    wallet: std::sync::Mutex<WalletScripts>,
}

impl NodeView {
    /// A view of `node`.
    pub fn new(node: std::sync::Weak<Node>) -> Self {
        NodeView {
            node,
            wallet: Default::default(),
        }
    }
}

/// The scripts of the node's on-chain wallet as Core Lightning derives them (one non-hardened
/// step below the wallet xpub VLS gives lightningd, each key as P2WPKH, P2SH-P2WPKH and
/// P2TR, as VLS's `can_spend` reads them). A PSBT lightningd is asked to sign carries no key
/// path on its change yet (lightningd adds them inside `signpsbt`, after the plugin's check),
/// so the check finds the change by its script: keys are derived up to [`WALLET_GAP`] past the
/// highest one matched (at least [`WALLET_FIRST`]), once, and kept.
#[derive(Default)]
struct WalletScripts {
    scripts: std::collections::HashMap<lightning_signer::bitcoin::ScriptBuf, u32>,
    derived: u32,
    highest: u32,
}

/// Keys derived before any is matched.
pub const WALLET_FIRST: u32 = 10_000;
/// Keys derived past the highest one matched.
pub const WALLET_GAP: u32 = 2_000;

impl WalletScripts {
    fn derive_to(&mut self, node: &Node, upto: u32) {
        use lightning_signer::bitcoin::bip32::ChildNumber;
        use lightning_signer::bitcoin::key::UntweakedPublicKey;
        use lightning_signer::bitcoin::secp256k1::Secp256k1;
        use lightning_signer::bitcoin::{Address, CompressedPublicKey};
        use lightning_signer::wallet::Wallet;
        let secp = Secp256k1::verification_only();
        let xpub = node.get_account_extended_pubkey();
        let network = node.network();
        while self.derived < upto {
            let i = self.derived;
            self.derived += 1;
            let Ok(child) = xpub.derive_pub(&secp, &[ChildNumber::Normal { index: i }]) else {
                continue;
            };
            let pk = CompressedPublicKey(child.public_key);
            let untweaked = UntweakedPublicKey::from(child.public_key);
            for a in [
                Address::p2wpkh(&pk, network),
                Address::p2shwpkh(&pk, network),
                Address::p2tr(&secp, untweaked, None, network),
            ] {
                self.scripts.insert(a.script_pubkey(), i);
            }
        }
    }

    fn is_ours(&mut self, node: &Node, script: &lightning_signer::bitcoin::Script) -> bool {
        let upto = WALLET_FIRST.max(self.highest.saturating_add(WALLET_GAP));
        if self.derived < upto {
            self.derive_to(node, upto);
        }
        match self.scripts.get(script) {
            Some(&i) => {
                self.highest = self.highest.max(i);
                true
            }
            None => false,
        }
    }
}

impl crate::core::SignerState for NodeView {
    fn holds_payment(&self, payment_hash: &[u8; 32]) -> bool {
        use lightning_signer::lightning::types::payment::PaymentHash;
        self.node.upgrade().is_some_and(|n| {
            let state = n.get_state();
            let hash = PaymentHash(*payment_hash);
            state.invoices.contains_key(&hash) || state.payments.contains_key(&hash)
        })
    }

    fn wallet_owns(&self, outputs: &[crate::core::channels::WalletOutput]) -> Vec<bool> {
        use lightning_signer::wallet::Wallet;
        let Some(node) = self.node.upgrade() else {
            return vec![false; outputs.len()];
        };
        let mut wallet = self.wallet.lock().unwrap_or_else(|p| p.into_inner());
        outputs
            .iter()
            .map(|(script, paths)| {
                paths
                    .iter()
                    .any(|p| node.can_spend(p, script).unwrap_or(false))
                    || wallet.is_ours(&node, script)
            })
            .collect()
    }

    fn channels(&self) -> Vec<ChannelView> {
        self.node
            .upgrade()
            .map(|n| channel_views(&n))
            .unwrap_or_default()
    }

    fn settled_payments(&self) -> Vec<SettledPayment> {
        self.node
            .upgrade()
            .map(|n| settled_payments(&n))
            .unwrap_or_default()
    }
}
