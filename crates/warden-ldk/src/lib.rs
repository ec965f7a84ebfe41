//! # warden-ldk
//!
//! The node side of Warden for LDK applications. An LDK node that links this crate keeps no
//! keys: every signature LDK asks for is made by wardend (keys in a PKCS#11 HSM, VLS's
//! validation, Warden's policy and quorum), and every payment is put to Warden's policy before
//! LDK sends it. Nothing of the daemon is linked: no database, no HSM library, no CLI.
//!
//! ## Where to start
//! 1. [`LdkSignerLink`]: serve [`LdkSignerLink::service`] with `tonic`'s server where wardend's
//!    `node.hsmd_address` points; wardend dials in, exactly as it dials Core Lightning's
//!    `remote_hsmd_socket`. The link is also VLS's `vls_protocol_client::Transport`.
//! 2. [`signer::WardenKeys`]: VLS's `KeysManagerClient` over the link, with Warden's channel
//!    signer; it is LDK's `EntropySource`, `NodeSigner`, `SignerProvider` and `OutputSpender`.
//!    Call [`signer::check_config`] on the `UserConfig` first (no anchors, no splices).
//! 3. [`ChainFeed`]: hand it every block LDK sees, so VLS's chain tracker in wardend follows the
//!    funding and closing transactions.
//! 4. Before paying, opening or spending: [`LdkSignerLink::preapprove_invoice`],
//!    [`LdkSignerLink::preapprove_keysend`], [`LdkSignerLink::check_channel_open`],
//!    [`LdkSignerLink::check_spend`]; to fund a channel, [`LdkSignerLink::sign_wallet_spend`].
//!
//! ## The one picture
//! ```text
//!  LDK (ChannelManager, ChainMonitor, ...)
//!    │ signer traits                 │ before paying / opening / spending
//!    ▼                               ▼
//!  signer::WardenKeys ──────▶ LdkSignerLink ◀──── ChainFeed (blocks + TXOO proofs)
//!                              │ serves hsmd.Hsmd (gRPC, this process)
//!                              ▲
//!                   wardend dials in: policy, quorum, VLS validation, HSM
//! ```
//!
//! ## Modules
//! - this page: [`LdkSignerLink`] (the link, its retransmission and the pre-signing checks),
//!   [`WalletInput`], [`LdkError`];
//! - [`signer`]: LDK's signer traits answered over the link;
//! - `chain` ([`ChainFeed`]): blocks and reorganisations for VLS's chain tracker;
//! - `hsmd`: VLS's link messages (proto/hsmd.proto), compiled here.
//!
//! ## The link
//! The same `hsmd.Hsmd` gRPC service that
//! `remote_hsmd_socket` serves to Core Lightning, served inside the LDK process, and a
//! `vls_protocol_client::Transport` over it. Hand the transport to
//! `vls_protocol_client::KeysManagerClient` and LDK's `NodeSigner`, `SignerProvider`,
//! `EntropySource` and channel signers are all answered by wardend, exactly as for CLN; wardend
//! connects to this service as it does to CLN's proxy.
//!
//! Like the proxy, this side numbers requests, keeps each until it is answered, retransmits the
//! unanswered ones when wardend reconnects, and replays the init message (request id
//! `u64::MAX`) so a restarted wardend negotiates again. The link has no authentication of its
//! own: keep it on loopback or in a tunnel (SECURITY.md).
//!
//! What LDK does not do by itself, the link adds: [`LdkSignerLink::preapprove_invoice`] and
//! [`LdkSignerLink::preapprove_keysend`] (payments go through Warden's policy before LDK sends
//! them), [`LdkSignerLink::sign_wallet_spend`] (channel funding signed by wardend), and
//! [`ChainFeed`] (VLS's chain tracker follows the node's blocks).
//!
//! `Transport` calls block; make them from LDK's threads (or `spawn_blocking`), not from inside
//! an async task.

#![deny(unsafe_code)]
#![warn(missing_docs)]

use lightning_signer::bitcoin::psbt::Psbt;
use lightning_signer::bitcoin::secp256k1::PublicKey;
use lightning_signer::bitcoin::{OutPoint, Transaction, TxOut};
use lightning_signer::lightning::types::payment::PaymentHash;
use lightning_signer::lightning_invoice::Bolt11Invoice;
use warden_client::check::{CheckAnswer, CheckOutcome};
mod chain;
pub mod signer;

pub use chain::{ChainFeed, KEPT_BLOCKS};

use hsmd::hsmd_server::Hsmd;
use hsmd::{HsmRequestContext, PingReply, PingRequest, SignerRequest, SignerResponse};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vls_protocol::model::{PubKey, Utxo};
use vls_protocol::msgs::{self, DeBolt, SerBolt};
use vls_protocol::psbt::StreamedPSBT;
use vls_protocol::serde_bolt::{Array, Octets, WireString};
use vls_protocol_client::{Error as ClientError, Transport};

/// The gRPC service [`LdkSignerLink::service`] returns, for `tonic`'s `Server::add_service`.
pub use hsmd::hsmd_server::HsmdServer;

/// VLS's node-to-signer link (proto/hsmd.proto), compiled here so that an LDK application does
/// not link VLS's daemon crate for five messages.
#[allow(clippy::all, missing_docs)]
mod hsmd {
    tonic::include_proto!("hsmd");
}

/// The message id of `HsmdInit2`, replayed to a reconnecting signer.
const HSMD_INIT2: u16 = 1011;
/// Request id the proxy protocol reserves for the replayed init.
const REPLAYED_INIT: u64 = u64::MAX;

type Reply = std::sync::mpsc::Sender<SignerResponse>;

struct Outstanding {
    request: SignerRequest,
    reply: Reply,
}

#[derive(Default)]
struct Shared {
    next_id: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    init: Option<Vec<u8>>,
    /// Feeds the current signer stream; replaced on each connection.
    stream: Option<mpsc::UnboundedSender<SignerRequest>>,
}

/// The node-side link to wardend.
#[derive(Clone)]
pub struct LdkSignerLink {
    shared: Arc<Mutex<Shared>>,
    timeout: Duration,
}

impl std::fmt::Debug for LdkSignerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdkSignerLink").finish_non_exhaustive()
    }
}

impl Default for LdkSignerLink {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl LdkSignerLink {
    /// A link whose calls give up after `timeout` without an answer.
    pub fn new(timeout: Duration) -> Self {
        LdkSignerLink {
            shared: Arc::new(Mutex::new(Shared::default())),
            timeout,
        }
    }

    /// The tonic service to serve (on loopback) for wardend to connect to.
    pub fn service(&self) -> HsmdServer<LdkSignerLink> {
        HsmdServer::new(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request to wardend, retried while wardend answers "temporary failure".
    fn request(
        &self,
        context: Option<HsmRequestContext>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, LdkError> {
        let mut delay = Duration::from_millis(200);
        let mut last_temporary = String::new();
        for _ in 0..8 {
            let (tx, rx) = std::sync::mpsc::channel();
            let id = {
                let mut s = self.lock();
                let id = s.next_id;
                s.next_id += 1;
                let request = SignerRequest {
                    request_id: id,
                    context: context.clone(),
                    message: message.clone(),
                };
                if let Some(stream) = &s.stream {
                    let _ = stream.send(request.clone());
                }
                s.outstanding.insert(id, Outstanding { request, reply: tx });
                id
            };
            let Ok(resp) = rx.recv_timeout(self.timeout) else {
                // Not answered in time: forget it, so it is not retransmitted later.
                self.lock().outstanding.remove(&id);
                return Err(LdkError::Unanswered(self.timeout));
            };
            if resp.is_temporary_failure {
                tracing::warn!(error = %resp.error, "signer temporary failure; retrying");
                last_temporary = resp.error;
                std::thread::sleep(delay);
                delay *= 2;
                continue;
            }
            if !resp.error.is_empty() {
                tracing::error!(error = %resp.error, "signer refused");
                return Err(LdkError::Signer(resp.error));
            }
            return Ok(resp.message);
        }
        Err(LdkError::Temporary(last_temporary))
    }

    /// A node-level request and its typed reply.
    pub(crate) fn node_request<T: SerBolt, R: DeBolt>(&self, message: T) -> Result<R, LdkError> {
        let reply = self.request(None, message.as_vec())?;
        R::from_vec(reply).map_err(|e| LdkError::BadReply(format!("{e:?}")))
    }

    /// A channel-level request (VLS's LDK client names every channel by `dbid` alone, with a
    /// zero peer id) and its typed reply.
    pub(crate) fn channel_request<T: SerBolt, R: DeBolt>(
        &self,
        dbid: u64,
        message: T,
    ) -> Result<R, LdkError> {
        let context = HsmRequestContext {
            peer_id: vec![0; 33],
            dbid,
            capabilities: 0,
        };
        let reply = self.request(Some(context), message.as_vec())?;
        R::from_vec(reply).map_err(|e| LdkError::BadReply(format!("{e:?}")))
    }

    /// A node-level request whose reply may be one of several messages (or a SignerError).
    fn node_message<T: SerBolt>(&self, message: T) -> Result<msgs::Message, LdkError> {
        let reply = self.request(None, message.as_vec())?;
        msgs::from_vec(reply).map_err(|e| LdkError::BadReply(format!("{e:?}")))
    }

    /// Ask wardend to approve paying `invoice`; call it before
    /// `ChannelManager::pay_for_bolt11_invoice`. LDK itself never asks its signer about a
    /// payment, and VLS refuses to sign a commitment carrying an outgoing HTLC it was not told
    /// about, so skipping this leaves the payment stuck at its first commitment signature
    /// instead of failing cleanly.
    ///
    /// A refusal (a limit, a deny rule, a time window, or a request now held for admin approval)
    /// is [`LdkError::Refused`]: send nothing. Once admins approve a held request, the same call
    /// succeeds. Asking again for an invoice already approved succeeds without counting it twice.
    pub fn preapprove_invoice(&self, invoice: &Bolt11Invoice) -> Result<(), LdkError> {
        let payment_hash = invoice.payment_hash().to_string();
        let amount_msat = invoice.amount_milli_satoshis().unwrap_or(0);
        // The check first, counting nothing, so a refusal carries the rule's sentence and a
        // held payment its request; the preapproval that follows decides and counts.
        let check = self.check(&warden_client::check::CheckRequest::Invoice {
            invoice: invoice.to_string(),
        })?;
        not_approved(check, &payment_hash, amount_msat)?;
        let reply: msgs::PreapproveInvoiceReply = self.node_request(msgs::PreapproveInvoice {
            invstring: WireString(invoice.to_string().into_bytes()),
        })?;
        if reply.result {
            Ok(())
        } else {
            Err(declined(payment_hash, amount_msat))
        }
    }

    /// [`Self::preapprove_invoice`] for a spontaneous (keysend) payment to `payee`.
    pub fn preapprove_keysend(
        &self,
        payee: PublicKey,
        payment_hash: PaymentHash,
        amount_msat: u64,
    ) -> Result<(), LdkError> {
        let hash = hex::encode(payment_hash.0);
        let check = self.check(&warden_client::check::CheckRequest::Keysend {
            payee: hex::encode(payee.serialize()),
            payment_hash: hash.clone(),
            amount_msat,
        })?;
        not_approved(check, &hash, amount_msat)?;
        let reply: msgs::PreapproveKeysendReply = self.node_request(msgs::PreapproveKeysend {
            destination: PubKey(payee.serialize()),
            payment_hash: vls_protocol::model::Sha256(payment_hash.0),
            amount_msat,
        })?;
        if reply.result {
            Ok(())
        } else {
            Err(declined(hash, amount_msat))
        }
    }

    /// Ask wardend what signing a spend to `outputs` (address, sat; not the change) would
    /// decide now, before building the transaction: the same check, tags and approval requests
    /// as Core Lightning's plugin gets. Nothing is counted: the spend is counted when
    /// [`Self::sign_wallet_spend`] signs it. A spend that needs a quorum is `Held` with its
    /// request id (the admins approve it; ask again, then sign); one approved by quorum is
    /// `Approved` and the approval is used by the signature.
    pub fn check_spend(&self, outputs: &[(String, u64)]) -> Result<CheckAnswer, LdkError> {
        self.check(&warden_client::check::CheckRequest::Spend {
            outputs: outputs.to_vec(),
        })
    }

    /// Ask wardend what the policy's `[channels]` limits say to opening a `sat` channel with
    /// `peer` (announced unless `private`), or to accepting one a peer opens (`incoming`):
    /// call it before `ChannelManager::create_channel`, and for an inbound request before
    /// accepting it. The funding is checked again when it is signed.
    pub fn check_channel_open(
        &self,
        peer: PublicKey,
        sat: u64,
        private: bool,
        incoming: bool,
    ) -> Result<CheckAnswer, LdkError> {
        self.check(&warden_client::check::CheckRequest::Channels {
            opens: vec![(hex::encode(peer.serialize()), sat, Some(private), incoming)],
        })
    }

    fn check(&self, req: &warden_client::check::CheckRequest) -> Result<CheckAnswer, LdkError> {
        use warden_client::check::{body, encode, CHECK_REPLY, CHECK_REQUEST};
        let reply = self.request(None, encode(CHECK_REQUEST, req))?;
        let json = body(&reply, CHECK_REPLY)
            .ok_or_else(|| LdkError::BadReply("not a check reply".into()))?;
        let answer: Result<CheckAnswer, String> =
            serde_json::from_slice(json).map_err(|e| LdkError::BadReply(e.to_string()))?;
        answer.map_err(LdkError::Unsignable)
    }

    /// Have wardend sign `tx`, whose inputs all spend the node's own wallet outputs (`inputs`,
    /// one per input, any order). This is how an LDK node funds a channel with Warden: pass the
    /// funding outpoint to `ChannelManager::unsafe_manual_funding_transaction_generated`, wait for
    /// `Event::FundingTxBroadcastSafe`, then sign here and broadcast. VLS signs a funding
    /// transaction only once the channel's first commitment has been countersigned, and treats
    /// an output that is neither a channel's funding output nor the wallet's as a payment that
    /// Warden's on-chain policy must approve.
    pub fn sign_wallet_spend(
        &self,
        tx: &Transaction,
        inputs: &[WalletInput],
    ) -> Result<Transaction, LdkError> {
        let mut psbt = Psbt::from_unsigned_tx(tx.clone())
            .map_err(|e| LdkError::Unsignable(format!("not an unsigned transaction: {e}")))?;
        let mut utxos = Vec::with_capacity(tx.input.len());
        for (i, txin) in tx.input.iter().enumerate() {
            let w = inputs
                .iter()
                .find(|w| w.outpoint() == txin.previous_output)
                .ok_or_else(|| {
                    LdkError::Unsignable(format!(
                        "input {i} spends {}, which is not among the wallet inputs given",
                        txin.previous_output
                    ))
                })?;
            let txout = w.txout().ok_or_else(|| {
                LdkError::Unsignable(format!(
                    "wallet input {} names output {} of a transaction with {} outputs",
                    i,
                    w.vout,
                    w.prev_tx.output.len()
                ))
            })?;
            psbt.inputs[i].witness_utxo = Some(txout.clone());
            psbt.inputs[i].non_witness_utxo = Some(w.prev_tx.clone());
            utxos.push(Utxo {
                txid: txin.previous_output.txid,
                outnum: w.vout,
                amount: txout.value.to_sat(),
                keyindex: w.keyindex,
                is_p2sh: false,
                script: Octets::EMPTY,
                close_info: None,
                is_in_coinbase: false,
            });
        }
        self.sign_withdrawal(tx, psbt, utxos)
    }

    /// `tx` with the witnesses wardend makes for it from `psbt` (its previous outputs) and
    /// `utxos` (where each input's key is): VLS's `SignWithdrawal`, for the wallet and for
    /// outputs of closed channels alike.
    pub(crate) fn sign_withdrawal(
        &self,
        tx: &Transaction,
        psbt: Psbt,
        utxos: Vec<Utxo>,
    ) -> Result<Transaction, LdkError> {
        let reply: msgs::SignWithdrawalReply = self.node_request(msgs::SignWithdrawal {
            utxos: Array(utxos),
            psbt: StreamedPSBT::new(psbt).into(),
        })?;
        let signed = reply.psbt.0.inner;
        let mut out = tx.clone();
        for (i, (txin, pin)) in out.input.iter_mut().zip(signed.inputs).enumerate() {
            txin.witness = pin.final_script_witness.ok_or_else(|| {
                LdkError::BadReply(format!("wardend returned no witness for input {i}"))
            })?;
        }
        Ok(out)
    }
}

/// A wallet output the node wants to spend: the whole transaction that created it (VLS checks
/// its txid, so the amount and the output's segwit-ness cannot be misstated, which is what keeps
/// a funding transaction's id from being malleated), which output, and the BIP32 child index
/// (under the wallet key wardend reports at init) whose key it pays to.
/// `SignerProvider::get_destination_script` of `KeysManagerClient` pays to index 1.
#[derive(Debug, Clone)]
pub struct WalletInput {
    /// The transaction holding the output.
    pub prev_tx: Transaction,
    /// The output's index in it.
    pub vout: u32,
    /// Its key's child index in the node's wallet.
    pub keyindex: u32,
}

impl WalletInput {
    /// The output being spent.
    pub fn outpoint(&self) -> OutPoint {
        OutPoint {
            txid: self.prev_tx.compute_txid(),
            vout: self.vout,
        }
    }

    /// The output's value and script, if `vout` exists.
    pub fn txout(&self) -> Option<&TxOut> {
        self.prev_tx.output.get(self.vout as usize)
    }
}

/// A check's answer as the error a payment call returns when it is not approved.
fn not_approved(check: CheckAnswer, payment_hash: &str, amount_msat: u64) -> Result<(), LdkError> {
    match check.outcome {
        CheckOutcome::Approved => Ok(()),
        CheckOutcome::Held => Err(LdkError::Held {
            payment_hash: payment_hash.to_string(),
            amount_msat,
            reason: check.reason,
            request_id: check.request_id.unwrap_or_default(),
        }),
        CheckOutcome::Refused => Err(LdkError::Refused {
            payment_hash: payment_hash.to_string(),
            amount_msat,
            reason: check.reason,
            tags: check.tags,
        }),
    }
}

/// The preapproval said no after the check said yes (the state moved in between, or VLS
/// refused the invoice itself).
fn declined(payment_hash: String, amount_msat: u64) -> LdkError {
    LdkError::Refused {
        payment_hash,
        amount_msat,
        reason: "the signer declined it when asked to preapprove it (the rule is in wardend's log and events)".into(),
        tags: Vec::new(),
    }
}

/// Why a request from the LDK node to wardend did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LdkError {
    /// Warden's policy or VLS said no; nothing was signed.
    #[error("wardend refused the payment {payment_hash} of {amount_msat} msat: {reason}")]
    Refused {
        /// The payment hash, hex.
        payment_hash: String,
        /// The amount asked for.
        amount_msat: u64,
        /// The rules' sentences (what the operator reads).
        reason: String,
        /// The rules that refused it.
        tags: Vec<String>,
    },
    /// The payment needs an admin quorum: nothing was sent; once the admins approved
    /// `request_id`, the same call succeeds.
    #[error(
        "the payment {payment_hash} of {amount_msat} msat is held for the admins: {reason}; once they approve request {request_id} (wardenctl approve), make the same call again"
    )]
    Held {
        /// The payment hash, hex.
        payment_hash: String,
        /// The amount asked for.
        amount_msat: u64,
        /// Who must approve, in a sentence.
        reason: String,
        /// The approval request.
        request_id: String,
    },
    /// wardend answered with an error (VLS validation or an unapproved on-chain destination).
    #[error("wardend refused the request: {0}")]
    Signer(String),
    /// wardend kept answering "temporary failure".
    #[error("wardend is temporarily unable to sign ({0}); retry later")]
    Temporary(String),
    /// No answer in time: wardend is not connected to this node's hsmd port.
    #[error(
        "no answer from wardend within {0:?}: is wardend running with hsmd.address pointing at \
         this node's hsmd port?"
    )]
    Unanswered(Duration),
    /// wardend's answer did not decode as the reply expected.
    #[error("wardend's reply could not be used: {0}")]
    BadReply(String),
    /// The chain feed cannot bring wardend's chain tracker to the node's tip.
    #[error("chain feed: {0}")]
    Chain(String),
    /// The transaction cannot be signed as asked (the node's mistake, not wardend's).
    #[error("cannot ask wardend to sign this transaction: {0}")]
    Unsignable(String),
    /// The LDK configuration asks for something Warden's signer cannot sign.
    #[error("this LDK configuration is not supported by Warden's signer: {0}")]
    Unsupported(String),
}

impl From<LdkError> for ClientError {
    fn from(e: LdkError) -> Self {
        match e {
            LdkError::Temporary(_) => ClientError::TransportTransient,
            _ => ClientError::Transport,
        }
    }
}

impl Transport for LdkSignerLink {
    fn node_call(&self, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        Ok(self.request(None, message)?)
    }

    fn call(&self, dbid: u64, peer_id: PubKey, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        Ok(self.request(
            Some(HsmRequestContext {
                peer_id: peer_id.0.to_vec(),
                dbid,
                capabilities: 0,
            }),
            message,
        )?)
    }
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<SignerRequest, Status>> + Send>>;

#[tonic::async_trait]
impl Hsmd for LdkSignerLink {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            message: request.into_inner().message,
        }))
    }

    type SignerStreamStream = RequestStream;

    async fn signer_stream(
        &self,
        request: Request<Streaming<SignerResponse>>,
    ) -> Result<Response<RequestStream>, Status> {
        let mut responses = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel::<SignerRequest>();
        {
            let mut s = self.lock();
            // A new signer connection replaces the old one: replay the init, then everything
            // still unanswered, in order.
            if let Some(init) = &s.init {
                let _ = tx.send(SignerRequest {
                    request_id: REPLAYED_INIT,
                    context: None,
                    message: init.clone(),
                });
            }
            for o in s.outstanding.values() {
                let _ = tx.send(o.request.clone());
            }
            s.stream = Some(tx);
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(Ok(resp)) = responses.next().await {
                if resp.request_id == REPLAYED_INIT {
                    continue;
                }
                let waiting = shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .outstanding
                    .remove(&resp.request_id);
                match waiting {
                    Some(o) => {
                        // Cache the init once it has been answered: a reconnecting signer
                        // gets it replayed; one still waiting for its answer is resent as is.
                        let m = &o.request.message;
                        if resp.error.is_empty()
                            && m.len() >= 2
                            && u16::from_be_bytes([m[0], m[1]]) == HSMD_INIT2
                        {
                            shared.lock().unwrap_or_else(|p| p.into_inner()).init = Some(m.clone());
                        }
                        let _ = o.reply.send(resp);
                    }
                    None => tracing::warn!(
                        request = resp.request_id,
                        "answer to an unknown request ignored"
                    ),
                }
            }
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::bitcoin::absolute::LockTime;
    use lightning_signer::bitcoin::transaction::Version;
    use lightning_signer::bitcoin::{Amount, ScriptBuf, Sequence, TxIn, Witness};

    fn tx(spends: OutPoint) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: spends,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::new(),
            }],
        }
    }

    #[test]
    fn an_input_that_is_not_a_wallet_input_is_refused_before_asking_wardend() {
        let prev = tx(OutPoint::null());
        let other = tx(OutPoint {
            txid: prev.compute_txid(),
            vout: 7,
        });
        let link = LdkSignerLink::new(Duration::from_millis(1));
        let wallet = WalletInput {
            prev_tx: prev.clone(),
            vout: 0,
            keyindex: 1,
        };
        let err = link.sign_wallet_spend(&other, &[wallet]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot ask wardend to sign this transaction: input 0 spends {}:7, which is not \
                 among the wallet inputs given",
                prev.compute_txid()
            )
        );
    }

    #[test]
    fn a_wallet_input_naming_a_missing_output_is_refused() {
        let prev = tx(OutPoint::null());
        let spending = tx(OutPoint {
            txid: prev.compute_txid(),
            vout: 3,
        });
        let link = LdkSignerLink::new(Duration::from_millis(1));
        let wallet = WalletInput {
            prev_tx: prev,
            vout: 3,
            keyindex: 1,
        };
        let err = link.sign_wallet_spend(&spending, &[wallet]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot ask wardend to sign this transaction: wallet input 0 names output 3 of a \
             transaction with 1 outputs"
        );
    }

    #[test]
    fn without_wardend_a_request_ends_in_a_timeout_that_says_where_to_look() {
        let link = LdkSignerLink::new(Duration::from_millis(20));
        let err = link
            .preapprove_keysend(
                lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(&[2u8; 33]).unwrap(),
                PaymentHash([1; 32]),
                5_000,
            )
            .unwrap_err();
        assert!(matches!(err, LdkError::Unanswered(_)), "{err:?}");
        assert!(
            err.to_string().contains(
                "is wardend running with hsmd.address pointing at this node's hsmd port?"
            ),
            "{err}"
        );
        assert!(
            link.lock().outstanding.is_empty(),
            "an unanswered request is forgotten"
        );
    }
}
