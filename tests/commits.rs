//! One durable commit per request, and what a crash at any commit leaves behind.
//!
//! The whole signer runs in process over a real SoftHSM token and the real append-only log (the default backend): the VLS node built
//! from the HSM-sealed seed, Warden's approver and core, the audit log, and the stream's
//! [`Session`], which answers hsmd messages exactly as wardend does behind the proxy. The store
//! sits on a [`FaultBackend`], which counts the commits that reach the log and can crash at the
//! k-th one. The scenario: init, a small payment, a large one held for a quorum, two admins
//! approve, the large one retried and approved, and a payment over the daily cap refused.

mod common;

use common::cln::Payee;
use common::TestToken;
use lightning_signer::bitcoin::bip32::Xpub;
use std::sync::Arc;
use vls_protocol::msgs::{self, Message, SerBolt};
use vls_protocol::serde_bolt::WireString;
use vlsd::grpc::hsmd::SignerRequest;
use warden::approval::keys::AdminKey;
use warden::approval::{ApprovalConfig, ApprovalStore, Decision, RequestState, SignatureFormat};
use warden::audit::verify::{verify_store, Finding};

use warden::clock::{Clock, ManualClock};
use warden::core::engine::load_velocity;
use warden::core::{Core, LoadedPolicy};
use warden::hsm::{Hsm, NodeSeed};
use warden::policy::{LedgerKey, PaymentRequest};
use warden::signer::stream::Session;

use common::stack::GatedSync;
use warden::store::fault::FaultBackend;
use warden::store::log::LogBackend;
use warden::store::{Backend, Namespace, Store};

const DAILY_CAP_SAT: u64 = 3_000_000;

struct World {
    _token: TestToken,
    hsm: Hsm,
    seed: NodeSeed,
    admins: Vec<(String, AdminKey)>,
    policy: LoadedPolicy,
    clock: ManualClock,
    payee: Payee,
    invoices: [(String, u64); 4],
}

impl World {
    fn new(label: &str) -> Self {
        let (token, hsm, seed) = common::stack::sealed(label);
        let (admins, policy) = common::stack::admins_and_policy(&format!(
            r#"
[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "{DAILY_CAP_SAT} sat"

[[approval]]
tag = "large-payment-quorum"
above = "1_000_000 sat"
quorum = {{ need = 2, of = ["alice", "bob", "carol"] }}
expiry = "1h"
"#
        ));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let payee = Payee::new(0x31);
        let invoices = [
            (payee.invoice(100_000_000, 1), 100_000_000),
            (payee.invoice(2_000_000_000, 2), 2_000_000_000),
            (payee.invoice(950_000_000, 3), 950_000_000),
            (payee.invoice(1_200_000_000, 4), 1_200_000_000),
        ];
        World {
            _token: token,
            hsm,
            seed,
            admins,
            policy,
            clock: ManualClock::new(now),
            payee,
            invoices,
        }
    }

    fn key(&self, admin: &str) -> &AdminKey {
        &self.admins.iter().find(|(n, _)| n == admin).unwrap().1
    }

    fn request(&self, n: usize) -> PaymentRequest {
        let inv: lightning_signer::lightning_invoice::Bolt11Invoice =
            self.invoices[n].0.parse().unwrap();
        use lightning_signer::bitcoin::hashes::Hash;
        PaymentRequest::invoice(
            inv.payment_hash().to_byte_array(),
            self.invoices[n].1,
            &self.payee.hex(),
            Some(format!("order {}", n + 1)),
        )
    }
}

/// wardend's parts over one backend, as `wardend` builds them at start.
struct Stack {
    store: Store,
    core: Arc<Core>,
    session: Session,
    next_id: u64,
}

impl Stack {
    fn new(w: &World, backend: Arc<dyn Backend>) -> Self {
        let (store, core, session) =
            common::stack::build(&w.hsm, &w.seed, &w.policy, &w.clock, backend);
        Stack {
            store,
            core,
            session,
            next_id: 1,
        }
    }

    fn send(&mut self, message: Vec<u8>) -> Option<Message> {
        let id = self.next_id;
        self.next_id += 1;
        let answered = self.session.handle(SignerRequest {
            request_id: id,
            message,
            context: None,
        });
        if answered.response.is_temporary_failure {
            return None;
        }
        assert!(
            answered.response.error.is_empty(),
            "{:?}",
            answered.response
        );
        Some(msgs::from_vec(answered.response.message).unwrap())
    }

    fn init(&mut self) -> Option<()> {
        self.send(warden_testkit::hsmd_init_regtest().as_vec())
            .map(|_| ())
    }

    /// Init, and the wallet xpub the node derives its coins from.
    fn init_xpub(&mut self) -> Xpub {
        match self.send(warden_testkit::hsmd_init_regtest().as_vec()) {
            Some(Message::HsmdInitReplyV4(r)) => Xpub::decode(&r.bip32.0).unwrap(),
            other => panic!("unexpected init reply {other:?}"),
        }
    }

    /// Send `message` as request `id` (a retransmission reuses the number) and return the
    /// answer as it would leave for the proxy.
    fn send_as(&mut self, id: u64, message: Vec<u8>) -> vlsd::grpc::hsmd::SignerResponse {
        common::stack::send(&mut self.session, id, message)
    }

    fn preapprove(&mut self, invoice: &str) -> Option<bool> {
        let m = msgs::PreapproveInvoice {
            invstring: WireString(invoice.as_bytes().to_vec()),
        };
        match self.send(m.as_vec())? {
            Message::PreapproveInvoiceReply(r) => Some(r.result),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// `None` when the commit failed (the admin sees an error and signs again).
    fn sign(&mut self, w: &World, req: &PaymentRequest, admin: &str, d: Decision) -> Option<()> {
        let record = self.core.approvals.find(req).unwrap().unwrap();
        let sig = w.key(admin).sign_digest(record.digest(d));
        match self
            .core
            .decide_request(&record.id, admin, d, SignatureFormat::Bip340, &sig, None)
        {
            Ok(_) => Some(()),
            Err(warden::approval::ApprovalError::AlreadySigned { .. }) => Some(()),
            Err(warden::approval::ApprovalError::Store(_)) => None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// What the committed state says, checked against every promise a crash must not break.
fn check_committed(w: &World, backend: Arc<dyn Backend>, at: &str) {
    let store = Store::new(backend);
    let held: Vec<usize> = (0..w.invoices.len())
        .filter(|&n| {
            let hash = hex::encode(w.request(n).payment_hash.unwrap());
            store
                .get(Namespace::Vls, format!("warden/inv/{hash}").as_bytes())
                .unwrap()
                .is_some_and(|v| v.len() > 8)
        })
        .collect();
    let windows = load_velocity(&store)
        .unwrap()
        .totals(&LedgerKey::Node, w.clock.now(), 86_400);
    let held_msat: u128 = held.iter().map(|&n| u128::from(w.invoices[n].1)).sum();
    assert_eq!(
        windows.count,
        held.len() as u64,
        "{at}: every payment VLS holds is counted once, and nothing else (held {held:?})"
    );
    assert_eq!(windows.amount_msat, held_msat, "{at}: counted amounts");
    assert!(
        windows.amount_msat <= u128::from(DAILY_CAP_SAT) * 1_000,
        "{at}: the daily cap holds"
    );
    let approvals = ApprovalStore::open(&store, ApprovalConfig::default()).unwrap();
    if let Some(r) = approvals.find(&w.request(1)).unwrap() {
        assert_eq!(
            r.state == RequestState::Consumed,
            held.contains(&1),
            "{at}: the quorum approval is consumed if and only if its payment is held and counted"
        );
    } else {
        assert!(
            !held.contains(&1),
            "{at}: a large payment held without a request"
        );
    }
    let anchor = w.hsm.audit_anchor().unwrap();
    match verify_store(&store, &w.hsm.audit_public_key().unwrap(), anchor.as_ref()).unwrap() {
        Finding::Ok { .. } => {}
        bad => panic!("{at}: the audit chain does not verify: {bad:?}"),
    }
}

/// The scenario's steps; each returns `None` when its request did not commit.
fn step(w: &World, s: &mut Stack, n: usize) -> Option<()> {
    match n {
        0 => s.init(),
        1 => s
            .preapprove(&w.invoices[0].0)
            .map(|ok| assert!(ok, "small payment")),
        2 => s
            .preapprove(&w.invoices[1].0)
            .map(|ok| assert!(!ok, "held for quorum")),
        3 => s.sign(w, &w.request(1), "alice", Decision::Approve),
        4 => s.sign(w, &w.request(1), "bob", Decision::Approve),
        5 => s
            .preapprove(&w.invoices[1].0)
            .map(|ok| assert!(ok, "approved by quorum")),
        6 => s
            .preapprove(&w.invoices[2].0)
            .map(|ok| assert!(!ok, "over the daily cap")),
        _ => unreachable!(),
    }
}
const STEPS: usize = 7;
/// Commits each step makes: init changes no state (the node exists since start), so it writes
/// nothing; every other request is exactly one commit.
const COMMITS: [u64; STEPS] = [0, 1, 1, 1, 1, 1, 1];

#[test]
fn every_request_is_exactly_one_commit() {
    let w = World::new("commits-count");
    let dir = tempfile::tempdir().unwrap();
    let fault = Arc::new(FaultBackend::new(Arc::new(
        LogBackend::open(dir.path()).unwrap(),
    )));
    let mut s = Stack::new(&w, fault.clone());
    let names = [
        "init",
        "small approved",
        "quorum-held",
        "admin approve (1 of 2)",
        "admin approve (quorum)",
        "quorum-approved",
        "refused by daily cap",
    ];
    for (n, name) in names.iter().enumerate() {
        if n == 2 {
            // A rejection is one commit too (checked before the daily cap is near).
            let before = fault.commits();
            assert_eq!(s.preapprove(&w.invoices[3].0), Some(false));
            assert_eq!(fault.commits() - before, 1, "another quorum-held");
            let before = fault.commits();
            s.sign(&w, &w.request(3), "carol", Decision::Reject)
                .unwrap();
            assert_eq!(fault.commits() - before, 1, "admin reject");
            let r = s.core.approvals.find(&w.request(3)).unwrap().unwrap();
            assert_eq!(r.state, RequestState::Rejected);
        }
        let before = fault.commits();
        step(&w, &mut s, n).unwrap_or_else(|| panic!("{name} did not commit"));
        assert_eq!(
            fault.commits() - before,
            COMMITS[n],
            "{name}: commits reaching the store"
        );
    }
    assert!(s.store.commits() >= 9);
}

#[test]
fn a_crash_at_any_commit_loses_nothing_and_counts_nothing_twice() {
    // A token per run: the audit anchor on a token belongs to one log.
    let w = World::new("commits-walk");
    // How many commits the scenario makes without a crash.
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let fault = Arc::new(FaultBackend::new(Arc::new(
            LogBackend::open(dir.path()).unwrap(),
        )));
        let mut s = Stack::new(&w, fault.clone());
        let base = fault.commits();
        for n in 0..STEPS {
            step(&w, &mut s, n).unwrap();
        }
        fault.commits() - base
    };
    assert_eq!(total, COMMITS.iter().sum::<u64>());
    for k in 1..=total {
        let w = World::new(&format!("commits-walk-{k}"));
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LogBackend::open(dir.path()).unwrap());
        let fault = Arc::new(FaultBackend::new(backend.clone()));
        let mut s = Stack::new(&w, fault.clone());
        fault.crash_at(k);
        let mut n = 0;
        let mut crashed_at = None;
        while n < STEPS {
            if step(&w, &mut s, n).is_some() {
                n += 1;
                continue;
            }
            // The process died at this commit; what is on disk must already hold together.
            assert!(fault.crashed(), "k={k}: step {n} failed without the crash");
            assert!(crashed_at.is_none(), "k={k}: one crash per run");
            crashed_at = Some(n);
            drop(s);
            check_committed(&w, backend.clone(), &format!("k={k}, crash in step {n}"));
            // Restart on the same database: the proxy replays init, then the request.
            s = Stack::new(&w, Arc::new(FaultBackend::new(backend.clone())));
            if n > 0 {
                s.init().unwrap();
            }
        }
        let expected = (0..STEPS)
            .find(|&n| COMMITS[..=n].iter().sum::<u64>() >= k)
            .unwrap();
        assert_eq!(
            crashed_at,
            Some(expected),
            "k={k}: the crash hit its request"
        );
        check_committed(&w, backend.clone(), &format!("k={k}, end"));
        let windows = load_velocity(&Store::new(backend.clone())).unwrap().totals(
            &LedgerKey::Node,
            w.clock.now(),
            86_400,
        );
        assert_eq!(
            (windows.count, windows.amount_msat),
            (2, 2_100_000_000),
            "k={k}: the small and the quorum-approved payment, each counted once"
        );
    }
}

/// Issue 25, item 5: a freeze applied but not yet synced is not undone when another
/// transaction is discarded meanwhile (its abort restores memory from the committed copies).
#[test]
fn a_freeze_waiting_for_its_sync_survives_the_abort_of_another_transaction() {
    let w = World::new("freeze-abort");
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(GatedSync::new(Arc::new(
        LogBackend::open(dir.path()).unwrap(),
    )));
    let mut s = Stack::new(&w, gate.clone());
    s.init().unwrap();
    gate.shut();
    let before = gate.syncs_begun();
    let core = s.core.clone();
    let freezer = std::thread::spawn(move || core.freeze("erin", "stolen laptop").unwrap());
    // The freeze is applied and its commit now waits in the sync.
    while gate.syncs_begun() == before {
        std::thread::yield_now();
    }
    assert!(s.core.frozen().is_some(), "frozen for the next request");
    // Another transaction, discarded: memory goes back to what is committed.
    let other = s.store.begin().unwrap();
    other.abort();
    let frozen = s.core.frozen();
    gate.open();
    let (state, created) = freezer.join().unwrap();
    assert!(created);
    assert_eq!(
        frozen.map(|f| f.reason),
        Some(state.reason.clone()),
        "the abort of another transaction did not thaw the freeze"
    );
    assert_eq!(s.preapprove(&w.invoices[0].0), Some(false), "frozen");
    assert!(s.core.frozen().is_some());
}

fn address(seed: u8) -> lightning_signer::bitcoin::Address {
    common::stack::regtest_address(seed)
}

fn daily(s: &Stack, w: &World) -> (u64, u128) {
    let t = s
        .core
        .with_engine(|e| e.state().totals(&LedgerKey::Node, w.clock.now(), 86_400));
    (t.count, t.amount_msat)
}

fn decisions(s: &Stack) -> Vec<serde_json::Value> {
    warden::audit::read_records(&s.store)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "decision")
        .map(|r| r.data)
        .collect()
}

/// Issue 25, item 1: what leaves the wallet is the outside outputs plus the fee. A transaction
/// with one outside output and the rest of the coin as fee (the whole wallet, on a real node)
/// is refused by `[onchain]` with its own tag, and a normal one counts its fee.
#[test]
fn an_onchain_spend_counts_its_fee_and_a_fee_over_the_bound_is_refused_with_its_tag() {
    let w = World::new("onchain-fee");
    let dir = tempfile::tempdir().unwrap();
    let fault = Arc::new(FaultBackend::new(Arc::new(
        LogBackend::open(dir.path()).unwrap(),
    )));
    let mut s = Stack::new(&w, fault.clone());
    let xpub = s.init_xpub();
    // Every on-chain request is one commit, refused or signed.
    let commits = fault.commits();
    let to = address(0x51);
    let drain = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 10_000, 2_880_813);
    let r = s.send_as(100, drain.as_vec());
    assert!(
        !r.error.is_empty() && !r.is_temporary_failure,
        "refused: {r:?}"
    );
    let d = decisions(&s);
    let last = d.last().expect("the refusal is audited");
    assert_eq!(last["verdict"], "deny");
    assert_eq!(last["tags"], serde_json::json!(["warden-onchain-fee"]));
    assert!(
        last["reason"].as_str().unwrap().contains(
            "the transaction pays 2,880,813 sat in fees; [onchain] max_fee is 200,000 sat"
        ),
        "{last}"
    );
    assert_eq!(daily(&s, &w), (0, 0), "nothing counted");

    // A feerate above the bound, even with a small fee: 50,000 sat over ~438 weight units.
    let steep = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 10_000, 50_000);
    let r = s.send_as(101, steep.as_vec());
    assert!(!r.error.is_empty(), "refused: {r:?}");
    let d = decisions(&s);
    let reason = d.last().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("[onchain] max_feerate is 100 sat/vB"),
        "{reason}"
    );
    assert!(!reason.contains("max_fee is"), "{reason}");

    // Within the bound: signed, and the fee is counted with the output.
    let fine = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 10_000, 1_000);
    let r = s.send_as(102, fine.as_vec());
    assert!(r.error.is_empty(), "{r:?}");
    assert_eq!(daily(&s, &w), (1, 11_000_000));
    assert_eq!(
        fault.commits() - commits,
        3,
        "two refusals and a signature, one commit each"
    );
}

/// Issue 25, item 2: a request whose answer was lost is sent again with the same number and
/// bytes; it is answered from its committed decision, counted and audited once. Holds for an
/// approved on-chain spend, one approved by quorum (whose approval is used up), and a refusal.
#[test]
fn a_request_sent_again_is_answered_from_its_committed_decision() {
    let w = World::new("resent");
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LogBackend::open(dir.path()).unwrap());
    let mut s = Stack::new(&w, backend.clone());
    let xpub = s.init_xpub();
    let to = address(0x52);

    let spend = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 20_000, 1_000);
    let first = s.send_as(200, spend.as_vec());
    assert!(first.error.is_empty(), "{first:?}");
    assert_eq!(daily(&s, &w), (1, 21_000_000));
    let audited = decisions(&s).len();
    // wardend restarts (the answer never left) and the proxy sends the request again.
    drop(s);
    let mut s = Stack::new(&w, backend.clone());
    s.init().unwrap();
    let again = s.send_as(200, spend.as_vec());
    assert_eq!(again, first, "the same answer");
    assert_eq!(daily(&s, &w), (1, 21_000_000), "counted once");
    assert_eq!(decisions(&s).len(), audited, "audited once");
    // The same transaction under a new number (an LDK retry, lightningd re-signing after its
    // own restart) is signed again without deciding or counting it again.
    let renumbered = s.send_as(201, spend.as_vec());
    assert!(renumbered.error.is_empty(), "{renumbered:?}");
    assert_eq!(daily(&s, &w), (1, 21_000_000));

    // A refusal sent again is the same refusal, audited once.
    let big = w.invoices[1].0.clone();
    let m = msgs::PreapproveInvoice {
        invstring: WireString(big.as_bytes().to_vec()),
    };
    let held = s.send_as(300, m.as_vec());
    let audited = warden::audit::read_records(&s.store).unwrap().len();
    let again = s.send_as(300, m.as_vec());
    assert_eq!(again, held);
    assert_eq!(
        warden::audit::read_records(&s.store).unwrap().len(),
        audited,
        "nothing decided or audited again"
    );

    // A quorum-approved on-chain spend: its approval is used by the first signature; the
    // retransmission must not find it used and refuse (VLS's fatal path).
    let large = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 1_500_000, 1_000);
    let r = s.send_as(400, large.as_vec());
    assert!(!r.error.is_empty(), "held for the quorum: {r:?}");
    let req = warden::policy::PaymentRequest::onchain(vec![(to.to_string(), 1_500_000_000)]);
    let record = s.core.approvals.find(&req).unwrap().expect("held");
    for admin in ["alice", "bob"] {
        let sig = w.key(admin).sign_digest(record.digest(Decision::Approve));
        s.core
            .decide_request(
                &record.id,
                admin,
                Decision::Approve,
                SignatureFormat::Bip340,
                &sig,
                None,
            )
            .unwrap();
    }
    let signed = s.send_as(401, large.as_vec());
    assert!(signed.error.is_empty(), "approved by quorum: {signed:?}");
    let counted = daily(&s, &w);
    drop(s);
    let mut s = Stack::new(&w, backend);
    s.init().unwrap();
    assert_eq!(s.send_as(401, large.as_vec()), signed);
    assert_eq!(daily(&s, &w), counted);
}

/// A coin's claimed value is pinned when first signed: segwit v0 signatures commit only to
/// their own input's amount, so two requests misstating different inputs could be combined
/// into one transaction whose fee nobody judged (found by an adversarial read of the fee fix).
#[test]
fn a_coin_claimed_at_another_value_than_before_is_refused() {
    let w = World::new("coin-pin");
    let dir = tempfile::tempdir().unwrap();
    let mut s = Stack::new(&w, Arc::new(LogBackend::open(dir.path()).unwrap()));
    let xpub = s.init_xpub();
    let to = address(0x53);
    let first = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 10_000, 1_000);
    let mut misstated = warden_testkit::lightningd::withdrawal_paying(&xpub, &to, 10_000, 1_000);
    let r = s.send_as(500, first.as_vec());
    assert!(r.error.is_empty(), "{r:?}");
    // The same coin, now claimed to hold 1,000 sat more (so the fee looks 1,000 sat larger
    // here, and a signature made over the lower value elsewhere would hide it).
    {
        let psbt = &mut misstated.psbt.0.psbt.inner;
        let coin = psbt.inputs[0].witness_utxo.as_mut().unwrap();
        coin.value = lightning_signer::bitcoin::Amount::from_sat(12_000);
        psbt.unsigned_tx.output[0].value = lightning_signer::bitcoin::Amount::from_sat(9_000);
        // A lying node leaves out the previous transaction that would give it away.
        psbt.inputs[0].non_witness_utxo = None;
    }
    misstated.utxos.0[0].amount = 12_000;
    let r = s.send_as(501, misstated.as_vec());
    assert!(!r.error.is_empty(), "refused: {r:?}");
    let d = decisions(&s);
    let events: Vec<_> = warden::audit::read_records(&s.store)
        .unwrap()
        .into_iter()
        .filter(|r| r.data.to_string().contains("warden-onchain-amount"))
        .collect();
    assert!(
        !events.is_empty(),
        "the refusal is recorded with its tag (decisions: {d:?})"
    );
    assert_eq!(daily(&s, &w), (1, 11_000_000), "only the first counted");
}

/// A check parses an invoice in full; the preapproval of the same text that follows is not
/// parsed again before VLS. Only an invoice the check found whole, with an amount, is spared
/// the screen: an amountless one checked first is still refused by the screen's rule, as a
/// refusal, and a text the check never saw is screened as before.
#[test]
fn a_checked_invoice_skips_a_second_parse_and_an_amountless_one_is_still_screened() {
    let w = World::new("parsed-invoices");
    let dir = tempfile::tempdir().unwrap();
    let mut s = Stack::new(&w, Arc::new(LogBackend::open(dir.path()).unwrap()));
    s.init().unwrap();
    let amountless = {
        use lightning_signer::bitcoin::hashes::{sha256, Hash};
        use lightning_signer::bitcoin::secp256k1::Secp256k1;
        use lightning_signer::lightning_invoice::{Currency, InvoiceBuilder};
        InvoiceBuilder::new(Currency::Regtest)
            .description("tip jar".into())
            .payment_hash(sha256::Hash::hash(b"tip"))
            .payment_secret(lightning_signer::lightning::types::payment::PaymentSecret(
                [1; 32],
            ))
            .current_timestamp()
            .min_final_cltv_expiry_delta(144)
            .build_signed(|m| Secp256k1::new().sign_ecdsa_recoverable(m, &w.payee.secret))
            .unwrap()
            .to_string()
    };
    let checked = s.core.check_invoice(&amountless, "pay").unwrap();
    assert_eq!(checked.outcome, warden_client::check::CheckOutcome::Refused);
    assert_eq!(checked.tags, vec!["warden-invoice-without-amount"]);
    assert_eq!(s.preapprove(&amountless), Some(false));
    let refused = decisions(&s);
    assert!(
        refused.is_empty(),
        "refused by the screen before any decision: {refused:?}"
    );

    let (small, _) = &w.invoices[0];
    assert_eq!(
        s.core.check_invoice(small, "pay").unwrap().outcome,
        warden_client::check::CheckOutcome::Approved
    );
    assert_eq!(s.preapprove(small), Some(true));
    // Never checked: screened, then decided.
    let (other, _) = &w.invoices[2];
    assert_eq!(s.preapprove(other), Some(true));
}
