//! One durable commit per request, and what a crash at any commit leaves behind.
//!
//! The whole signer runs in process over a real SoftHSM token and real sled: the VLS node built
//! from the HSM-sealed seed, Warden's approver and core, the audit log, and the stream's
//! [`Session`], which answers hsmd messages exactly as wardend does behind the proxy. The store
//! sits on a [`FaultBackend`], which counts the commits that reach sled and can crash at the
//! k-th one. The scenario: init, a small payment, a large one held for a quorum, two admins
//! approve, the large one retried and approved, and a payment over the daily cap refused.

mod common;

use common::cln::Payee;
use common::TestToken;
use std::sync::Arc;
use vls_protocol::msgs::{self, Message, SerBolt};
use vls_protocol::serde_bolt::WireString;
use vlsd::grpc::hsmd::SignerRequest;
use warden::approval::keys::AdminKey;
use warden::approval::{ApprovalConfig, ApprovalStore, Decision, RequestState, SignatureFormat};
use warden::audit::verify::{verify_store, Finding};
use warden::audit::{AuditConfig, AuditLog};
use warden::clock::{Clock, ManualClock};
use warden::core::engine::load_velocity;
use warden::core::{Core, LoadedPolicy};
use warden::hsm::{Hsm, NodeSeed};
use warden::policy::{parse_policy, LedgerKey, PaymentRequest};
use warden::signer::stream::Session;
use warden::signer::{build_handler, vls_filter, SignerSettings};
use warden::store::fault::FaultBackend;
use warden::store::sled::SledBackend;
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
        let token = TestToken::new(label);
        let hsm = token.open();
        hsm.init(&token.data_dir, lightning_signer::bitcoin::Network::Regtest)
            .unwrap();
        let seed = hsm
            .load_seed(&token.data_dir, lightning_signer::bitcoin::Network::Regtest)
            .unwrap()
            .seed;
        let admins: Vec<(String, AdminKey)> = ["alice", "bob", "carol"]
            .iter()
            .map(|n| (n.to_string(), AdminKey::generate()))
            .collect();
        let mut text = "version = 1\n[admins]\n".to_string();
        for (n, k) in &admins {
            text.push_str(&format!("{n} = {{ pubkey = \"{}\" }}\n", k.public_key()));
        }
        text.push_str(&format!(
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
        let policy = LoadedPolicy {
            policy: Arc::new(parse_policy(&text).unwrap()),
            text,
        };
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
        let store = Store::new(backend);
        let audit = Arc::new(
            AuditLog::open(&store, Arc::new(w.hsm.clone()), AuditConfig::default()).unwrap(),
        );
        let core = Arc::new(
            Core::open(
                store.clone(),
                w.policy.clone(),
                ApprovalConfig::default(),
                Arc::new(w.clock.clone()),
                audit,
                Default::default(),
            )
            .unwrap(),
        );
        let settings = SignerSettings {
            network: lightning_signer::bitcoin::Network::Regtest,
            max_invoices: 1_000,
        };
        let init =
            build_handler(core.clone(), &w.seed, &store, settings, &vls_filter(&[])).unwrap();
        let session = Session::new(&init, core.clone());
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
        self.send(warden::standin::hsmd_init_regtest().as_vec())
            .map(|_| ())
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
        SledBackend::open(dir.path()).unwrap(),
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
            "{name}: commits reaching sled"
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
            SledBackend::open(dir.path()).unwrap(),
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
        let sled: Arc<dyn Backend> = Arc::new(SledBackend::open(dir.path()).unwrap());
        let fault = Arc::new(FaultBackend::new(sled.clone()));
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
            check_committed(&w, sled.clone(), &format!("k={k}, crash in step {n}"));
            // Restart on the same database: the proxy replays init, then the request.
            s = Stack::new(&w, Arc::new(FaultBackend::new(sled.clone())));
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
        check_committed(&w, sled.clone(), &format!("k={k}, end"));
        let windows = load_velocity(&Store::new(sled.clone())).unwrap().totals(
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
