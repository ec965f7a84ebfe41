//! Feeding the chain to wardend from an LDK node.
//!
//! VLS refuses to sign a channel's second commitment until it has seen the funding transaction
//! buried in the chain, and it watches channel outputs for spends; it learns the chain only from
//! blocks the node side sends it, each with a TXOO proof (compact spend filter plus SPV proof of
//! the transactions it watches). CLN's proxy does this with vls-frontend's chain follower polling
//! bitcoind; an LDK node already receives every block (`chain::Listen`), so it hands them to a
//! [`ChainFeed`] too.
//!
//! Reorganisations go through [`ChainFeed::blocks_disconnected`]: each block above the fork
//! point is taken back from VLS's tracker with a proof over what VLS watched in it.
//!
//! The proofs are attested by a key this feed draws at start. wardend accepts them because no
//! trusted TXOO oracle is configured, exactly as with CLN's proxy: the node is trusted for chain
//! data, and VLS still checks proof of work, header linkage, the SPV proofs and the filters.

use crate::{LdkError, LdkSignerLink};
use lightning_signer::bitcoin::block::Header;
use lightning_signer::bitcoin::consensus::serialize;
use lightning_signer::bitcoin::hash_types::FilterHeader;
use lightning_signer::bitcoin::hashes::Hash;
use lightning_signer::bitcoin::key::Keypair;
use lightning_signer::bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_signer::bitcoin::{Block, BlockHash, Network, OutPoint, Txid};
use lightning_signer::txoo::filter::BlockSpendFilter;
use lightning_signer::txoo::proof::TxoProof;
use lightning_signer::txoo::util::sign_attestation;
use lightning_signer::txoo::Attestation;
use std::collections::VecDeque;
use vls_protocol::msgs::{self, DebugTxoProof, Message};
use vls_protocol::serde_bolt::{LargeOctets, Octets};

/// How many recent blocks the feed keeps to catch a restarted wardend up.
pub const KEPT_BLOCKS: usize = 288;
/// Blocks go to wardend in chunks of this size when a proof needs the whole block.
const CHUNK: usize = 8192;

struct Fed {
    height: u32,
    header: Header,
    filter_header: FilterHeader,
    block: Option<Block>,
}

/// Sends the node's blocks to wardend's VLS chain tracker.
pub struct ChainFeed {
    recent: VecDeque<Fed>,
    oracle: Keypair,
    secp: Secp256k1<All>,
}

impl std::fmt::Debug for ChainFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainFeed")
            .field("tip", &self.recent.back().map(|b| b.height))
            .finish_non_exhaustive()
    }
}

impl ChainFeed {
    /// A feed starting at `network`'s genesis block, where VLS's tracker starts (regtest,
    /// signet and testnet nodes; mainnet trackers start at a checkpoint, see
    /// [`ChainFeed::from_checkpoint`]).
    pub fn new(network: Network) -> Self {
        let genesis = lightning_signer::bitcoin::blockdata::constants::genesis_block(network);
        Self::from_checkpoint(0, genesis.header, FilterHeader::all_zeros())
    }

    /// A feed whose first known block is `header` at `height` with BIP158-style spend-filter
    /// header `filter_header` (VLS's checkpoint for the network).
    pub fn from_checkpoint(height: u32, header: Header, filter_header: FilterHeader) -> Self {
        let secp = Secp256k1::new();
        let mut secret = [0u8; 32];
        loop {
            getrandom::getrandom(&mut secret).expect("the OS random number generator works");
            if let Ok(key) = SecretKey::from_slice(&secret) {
                let oracle = Keypair::from_secret_key(&secp, &key);
                zeroize::Zeroize::zeroize(&mut secret);
                let mut recent = VecDeque::new();
                recent.push_back(Fed {
                    height,
                    header,
                    filter_header,
                    block: None,
                });
                return ChainFeed {
                    recent,
                    oracle,
                    secp,
                };
            }
        }
    }

    /// The height of the last block the feed holds.
    pub fn height(&self) -> u32 {
        self.recent.back().expect("never empty").height
    }

    /// Record `block`, connected at `height` on top of the last one, and bring wardend up to it.
    /// Call it from `chain::Listen::block_connected` (or wherever the node learns of blocks).
    pub fn block_connected(
        &mut self,
        link: &LdkSignerLink,
        block: &Block,
        height: u32,
    ) -> Result<(), LdkError> {
        let last = self.recent.back().expect("never empty");
        if height != last.height + 1 || block.header.prev_blockhash != last.header.block_hash() {
            return Err(LdkError::Chain(format!(
                "block {} at height {height} does not extend the feed's tip {} at height {}; \
                 after a reorganisation call blocks_disconnected with the fork point first",
                block.block_hash(),
                last.header.block_hash(),
                last.height
            )));
        }
        let filter_header = BlockSpendFilter::from_block(block).filter_header(&last.filter_header);
        self.recent.push_back(Fed {
            height,
            header: block.header,
            filter_header,
            block: Some(block.clone()),
        });
        while self.recent.len() > KEPT_BLOCKS {
            self.recent.pop_front();
        }
        self.sync(link)
    }

    /// Send wardend every block it has not seen yet, from its own tip on. Needed after wardend
    /// restarted from an older state; [`ChainFeed::block_connected`] calls it.
    pub fn sync(&self, link: &LdkSignerLink) -> Result<(), LdkError> {
        let (tip_height, tip_hash) = self.wardend_tip(link)?;
        let Some(start) = self
            .recent
            .iter()
            .position(|b| b.height == tip_height && b.header.block_hash() == tip_hash)
        else {
            return Err(LdkError::Chain(format!(
                "wardend's chain tip {tip_hash} at height {tip_height} is not among the last \
                 {} blocks this feed holds (heights {}..={}); if the node's chain reorganised, \
                 call blocks_disconnected first, else start the feed from a checkpoint at or \
                 below wardend's tip",
                self.recent.len(),
                self.recent.front().expect("never empty").height,
                self.height()
            )));
        };
        for i in start + 1..self.recent.len() {
            self.add_block(link, &self.recent[i - 1].filter_header, &self.recent[i])?;
        }
        Ok(())
    }

    /// Take back every block above `height` (the fork point), newest first, from the feed and
    /// from wardend's chain tracker. Call it from `chain::Listen::blocks_disconnected` before
    /// connecting the new branch. VLS keeps the last 100 blocks it can take back.
    pub fn blocks_disconnected(
        &mut self,
        link: &LdkSignerLink,
        height: u32,
    ) -> Result<(), LdkError> {
        let base = self.recent.front().expect("never empty").height;
        if height < base {
            return Err(LdkError::Chain(format!(
                "cannot go back to height {height}: the feed holds blocks from {base} on"
            )));
        }
        // Bring wardend to the feed's tip first, so both take back the same blocks.
        self.sync(link)?;
        while self.height() > height {
            let fed = self.recent.pop_back().expect("above the base");
            let parent = self.recent.back().expect("the base stays");
            let (txids, outpoints) = match link.node_message(msgs::ReverseWatches {})? {
                Message::ReverseWatchesReply(r) => (r.txids.0, r.outpoints.0),
                other => return Err(unexpected("ReverseWatches", &other)),
            };
            let proof = self.prove(link, &parent.filter_header, &fed, &outpoints, &txids)?;
            match link.node_message(msgs::RemoveBlock {
                unspent_proof: Some(LargeOctets(serialize(&proof))),
                prev_block_header: parent.header,
                prev_filter_header: parent.filter_header,
            })? {
                Message::RemoveBlockReply(_) => {}
                other => {
                    self.recent.push_back(fed);
                    return Err(unexpected("RemoveBlock", &other));
                }
            }
        }
        Ok(())
    }

    /// wardend's chain tip: its height and block hash.
    pub fn wardend_tip(&self, link: &LdkSignerLink) -> Result<(u32, BlockHash), LdkError> {
        match link.node_message(msgs::TipInfo {})? {
            Message::TipInfoReply(r) => Ok((r.height, r.block_hash)),
            other => Err(unexpected("TipInfo", &other)),
        }
    }

    /// A TXOO proof for `fed` over the watched outpoints and txids, attested by this feed; a
    /// filter false positive needs the whole block, which is streamed to wardend first.
    fn prove(
        &self,
        link: &LdkSignerLink,
        prev_filter_header: &FilterHeader,
        fed: &Fed,
        outpoints: &[OutPoint],
        txids: &[Txid],
    ) -> Result<TxoProof, LdkError> {
        let block = fed.block.as_ref().ok_or_else(|| {
            LdkError::Chain(format!("the feed no longer holds block {}", fed.height))
        })?;
        let attestation = sign_attestation(
            Attestation {
                block_hash: block.block_hash(),
                block_height: fed.height,
                filter_header: fed.filter_header,
                time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            },
            &self.oracle,
            &self.secp,
        );
        let oracle = PublicKey::from_keypair(&self.oracle);
        let proof = TxoProof::prove(
            vec![(oracle, attestation)],
            prev_filter_header,
            block,
            fed.height,
            outpoints,
            txids,
        );
        let (proof, whole) = proof.take_block();
        if let Some(whole) = whole {
            let hash: BlockHash = whole.block_hash();
            let bytes = serialize(&whole);
            let mut offset = 0u32;
            for chunk in bytes.chunks(CHUNK) {
                match link.node_message(msgs::BlockChunk {
                    hash,
                    offset,
                    content: Octets(chunk.to_vec()),
                })? {
                    Message::BlockChunkReply(_) => {}
                    other => return Err(unexpected("BlockChunk", &other)),
                }
                offset += chunk.len() as u32;
            }
        }
        Ok(proof)
    }

    fn add_block(
        &self,
        link: &LdkSignerLink,
        prev_filter_header: &FilterHeader,
        fed: &Fed,
    ) -> Result<(), LdkError> {
        let (txids, outpoints) = match link.node_message(msgs::ForwardWatches {})? {
            Message::ForwardWatchesReply(r) => (r.txids.0, r.outpoints.0),
            other => return Err(unexpected("ForwardWatches", &other)),
        };
        let proof = self.prove(link, prev_filter_header, fed, &outpoints, &txids)?;
        match link.node_message(msgs::AddBlock {
            header: Octets(serialize(&fed.header)),
            unspent_proof: Some(DebugTxoProof(proof)),
        })? {
            Message::AddBlockReply(_) => Ok(()),
            Message::SignerError(e) => Err(LdkError::Chain(format!(
                "wardend did not take block {} at height {}: {} (code {})",
                fed.header.block_hash(),
                fed.height,
                String::from_utf8_lossy(&e.message.0),
                e.code
            ))),
            other => Err(unexpected("AddBlock", &other)),
        }
    }
}

fn unexpected(asked: &str, got: &Message) -> LdkError {
    LdkError::BadReply(format!("{asked} was answered with {got:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::bitcoin::blockdata::constants::genesis_block;
    use std::time::Duration;

    #[test]
    fn a_block_that_does_not_extend_the_tip_is_refused_with_both_hashes() {
        let mut feed = ChainFeed::new(Network::Regtest);
        let link = LdkSignerLink::new(Duration::from_millis(1));
        // The genesis block again, at height 1: it does not extend genesis.
        let genesis = genesis_block(Network::Regtest);
        let err = feed.block_connected(&link, &genesis, 1).unwrap_err();
        let hash = genesis.block_hash();
        assert_eq!(
            err.to_string(),
            format!(
                "chain feed: block {hash} at height 1 does not extend the feed's tip {hash} at \
                 height 0; after a reorganisation call blocks_disconnected with the fork point \
                 first"
            )
        );
        assert_eq!(feed.height(), 0, "the refused block is not kept");
    }
}
