//! A seeded simulation of the whole signer, checked against a small reference model after every
//! step (FoundationDB's simulation testing, TigerBeetle's VOPR, at Warden's scale).
//!
//! One process, one seed: the VLS node on a SoftHSM-sealed seed, Warden's approver, core,
//! approvals, freeze and audit log, over a store whose commits the simulator makes fail and whose
//! process it "crashes" (everything in memory dropped, the stack rebuilt on what was committed).
//! Each step is drawn from the seed: new payments, the proxy sending a request again, the node
//! asking again under a new number, on-chain spends with random fees (some far over the bound),
//! the CLN plugin's checks each followed by the signature they precede, admins approving held
//! payments, freezes and quorum unfreezes, clock jumps both ways, crashes
//! and failed commits. After every step the reference model, written apart from the code it
//! checks (its own window arithmetic, its own record of approvals, freezes and what was signed),
//! must agree with what the signer holds in memory and on disk:
//! - what left the wallet in the last 24 hours (payments, on-chain outputs and fees) is within
//!   the daily cap, and is what the model counted, in memory and in the database alike;
//! - nothing was approved while frozen, and the freeze in memory is the one on disk;
//! - every quorum approval was used at most once;
//! - a request sent again got the answer it got the first time;
//! - the audit chain verifies.
//!
//! `WARDEN_SIM_SEEDS` (default 300, about a minute) seeds are run from `WARDEN_SIM_FIRST`
//! (default 1), plus every regression seed; `scripts/simulate.sh SEEDS` runs many. A failing
//! seed prints the line that replays it. The same seed makes the same choices; the keys and the
//! invoices' timestamps are drawn anew each run, and decide nothing the invariants look at.

mod common;

use common::cln::Payee;
use common::TestToken;
use lightning_signer::bitcoin::bip32::Xpub;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use vls_protocol::msgs::{self, Message, SerBolt};
use vls_protocol::serde_bolt::WireString;
use vlsd::grpc::hsmd::SignerResponse;
use warden::approval::keys::AdminKey;
use warden::approval::{Decision, SignatureFormat};
use warden::clock::{Clock, ManualClock};
use warden::core::engine::load_velocity;
use warden::core::{Core, LoadedPolicy};
use warden::hsm::{Hsm, NodeSeed};
use warden::policy::{LedgerKey, PaymentRequest};
use warden::signer::stream::Session;
use warden::store::fault::FaultBackend;
use warden::store::sled::SledBackend;
use warden::store::{Backend, Store};

const SAT: u64 = 1_000;
const DAILY_CAP_SAT: u64 = 3_000_000;
const PER_PAYMENT_SAT: u64 = 1_500_000;
const QUORUM_ABOVE_SAT: u64 = 1_000_000;
const MAX_FEE_SAT: u64 = 200_000;
const DAY: u64 = 86_400;
const STEPS: u32 = 60;

/// Seeds that once found a defect: run on every run.
const REGRESSIONS: &[u64] = &[
    // A request answered "no", then "yes" when the proxy sent it again after a clock jump past
    // the age limit the kept answers had.
    70,
];

use common::stack::Rng;

/// What the reference model knows, kept apart from the signer's own records.
#[derive(Default)]
struct Model {
    /// (Warden's time, msat) of everything that left the wallet, as the model counts it.
    spent: Vec<(u64, u64)>,
    /// Invoices (by number) the signer approved.
    approved: BTreeSet<u64>,
    /// On-chain spends (by their message bytes) the signer signed.
    signed: BTreeSet<Vec<u8>>,
    frozen: bool,
    /// Quorum requests and how often a payment used each.
    quorum_used: BTreeMap<String, u32>,
}

impl Model {
    /// What counts at `now`: the signer keeps minute buckets, and a spend stays in a 24-hour
    /// window until 24 hours after the end of its minute.
    fn within_day(&self, now: u64) -> u128 {
        let start = now.saturating_sub(DAY);
        self.spent
            .iter()
            .filter(|(t, _)| (t / 60 + 1) * 60 > start && *t <= now)
            .map(|(_, v)| u128::from(*v))
            .sum()
    }
}

/// The kinds of step, for the coverage table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Pay,
    SendAgain,
    AskAgain,
    OnChain,
    OnChainOverFee,
    Approve,
    Freeze,
    Unfreeze,
    ClockForward,
    ClockBack,
    Crash,
    CommitFailure,
    /// A freeze whose commit waits for its sync while another transaction is discarded.
    FreezeDuringAnAbort,
    /// The CLN plugin's check of a payment, then the node's preapproval it precedes.
    CheckedPay,
    /// The plugin's check of a `signpsbt`, then the signature it precedes.
    CheckedOnChain,
    /// On PostgreSQL, a restart: a new holder takes the lease over, and the one it replaced,
    /// still running, must answer nothing.
    Takeover,
}

struct World {
    _token: TestToken,
    hsm: Hsm,
    seed: NodeSeed,
    admins: Vec<(String, AdminKey)>,
    policy: LoadedPolicy,
    clock: ManualClock,
    payee: Payee,
    backing: Backing,
}

/// What the state lives on.
enum Backing {
    /// sled in a directory (kept while the world lives).
    Sled {
        backend: Arc<dyn Backend>,
        _dir: tempfile::TempDir,
    },
    /// A database of the seed's own on the harness's PostgreSQL server; each start is a new
    /// holder taking the lease over.
    Postgres {
        db: String,
        holders: std::cell::Cell<u32>,
    },
}

struct Signer {
    /// The lease, on PostgreSQL.
    pg: Option<Arc<warden::store::postgres::PgBackend>>,
    fault: Arc<FaultBackend>,
    gate: Arc<common::stack::GatedSync>,
    store: Store,
    core: Arc<Core>,
    session: Session,
}

impl World {
    fn new(label: &str, postgres: bool) -> Self {
        let (token, hsm, seed) = common::stack::sealed(label);
        let (admins, policy) = common::stack::admins_and_policy(&format!(
            r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "{PER_PAYMENT_SAT} sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "{DAILY_CAP_SAT} sat"

[[approval]]
tag = "large-payment-quorum"
above = "{QUORUM_ABOVE_SAT} sat"
quorum = {{ need = 2, of = ["alice", "bob", "carol"] }}
expiry = "1h"
"#
        ));
        let backing = if postgres {
            Backing::Postgres {
                db: common::pg::shared().database(label),
                holders: std::cell::Cell::new(0),
            }
        } else {
            let dir = tempfile::tempdir().unwrap();
            Backing::Sled {
                backend: Arc::new(SledBackend::open(dir.path()).unwrap()),
                _dir: dir,
            }
        };
        World {
            _token: token,
            hsm,
            seed,
            admins,
            policy,
            clock: ManualClock::new(1_800_000_000),
            payee: Payee::new(0x71),
            backing,
        }
    }

    /// A wardend over what is committed (a start, or a restart after a crash).
    fn start(&self) -> Signer {
        // The store applies through the gate, which the simulator can hold between a commit's
        // apply and its sync; under it, the backend whose next commit it can make fail.
        let (under, pg): (Arc<dyn Backend>, _) = match &self.backing {
            Backing::Sled { backend, .. } => (backend.clone(), None),
            Backing::Postgres { db, holders } => {
                holders.set(holders.get() + 1);
                let mut settings =
                    common::pg::shared().settings(db, &format!("holder-{}", holders.get()));
                settings.lease = std::time::Duration::from_secs(1);
                settings.renew = std::time::Duration::from_millis(200);
                let pg = Arc::new(warden::store::postgres::PgBackend::open(settings).unwrap());
                pg.acquire(|_| true)
                    .unwrap()
                    .expect("the lease, the last holder having given it up");
                pg.start_renewing();
                (pg.clone() as Arc<dyn Backend>, Some(pg))
            }
        };
        let fault = Arc::new(FaultBackend::new(under));
        let gate = Arc::new(common::stack::GatedSync::new(fault.clone()));
        let (store, core, session) = common::stack::build(
            &self.hsm,
            &self.seed,
            &self.policy,
            &self.clock,
            gate.clone(),
        );
        Signer {
            pg,
            fault,
            gate,
            store,
            core,
            session,
        }
    }

    fn key(&self, admin: &str) -> &AdminKey {
        &self.admins.iter().find(|(n, _)| n == admin).unwrap().1
    }
}

impl Signer {
    fn send(&mut self, id: u64, message: Vec<u8>) -> SignerResponse {
        common::stack::send(&mut self.session, id, message)
    }
}

/// The address of on-chain destination `n`.
fn address(n: u64) -> lightning_signer::bitcoin::Address {
    common::stack::regtest_address((n % 250) as u8 + 1)
}

/// The node's `preapprove_invoice` of `invoice`, as lightningd sends it before a payment.
fn preapprove_message(invoice: &str) -> Vec<u8> {
    msgs::PreapproveInvoice {
        invstring: WireString(invoice.as_bytes().to_vec()),
    }
    .as_vec()
}

fn preapprove_answer(r: &SignerResponse) -> Option<bool> {
    if r.is_temporary_failure {
        return None;
    }
    match msgs::from_vec(r.message.clone()) {
        Ok(Message::PreapproveInvoiceReply(a)) => Some(a.result),
        other => panic!("unexpected preapprove answer {other:?} ({r:?})"),
    }
}

/// A violated invariant, with the step that showed it.
type Broken = String;

/// The plugin's check and the signature right after it agree: approved means signed (a refusal
/// there would be VLS's fatal path), held or refused means not. `None`: a temporary failure.
fn agrees(
    check: &warden::core::CheckAnswer,
    signed: Option<bool>,
    what: &str,
) -> Result<(), Broken> {
    use warden::core::CheckOutcome;
    match (check.outcome, signed) {
        (_, None) => Ok(()),
        (CheckOutcome::Approved, Some(true)) => Ok(()),
        (CheckOutcome::Held | CheckOutcome::Refused, Some(false)) => Ok(()),
        (outcome, Some(signed)) => Err(format!(
            "{what}: the check said {outcome:?} ({}), the signature that followed {}",
            check.reason,
            if signed { "was made" } else { "was refused" }
        )),
    }
}

struct Run {
    w: World,
    s: Signer,
    m: Model,
    rng: Rng,
    xpub: Xpub,
    next_id: u64,
    /// Invoice number -> (invoice, msat).
    invoices: BTreeMap<u64, (String, u64)>,
    /// The last decision-bearing request sent and its answer.
    last: Option<(u64, Vec<u8>, SignerResponse)>,
    ops: BTreeMap<Op, u32>,
    /// Whether this seed checks PSBTs as the plugin does (one seed in ten: the first check of a
    /// node derives its wallet's scripts, about a second in a debug build).
    checks_psbt: bool,
}

impl Run {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn now(&self) -> u64 {
        self.s.core.clock.now()
    }

    fn restart(&mut self) -> Result<(), Broken> {
        if let Some(pg) = &self.s.pg {
            // On PostgreSQL another holder takes over. The one it replaces may still be running
            // (paused, partitioned): once it has lost the lease it commits and approves nothing.
            pg.release().map_err(|e| e.to_string())?;
            *self.ops.entry(Op::Takeover).or_default() += 1;
            let n = self.invoices.len() as u64 + 1;
            let invoice = self.w.payee.invoice(30_000 * SAT, n);
            self.invoices.insert(n, (invoice.clone(), 30_000 * SAT));
            let id = self.id();
            let r = self.s.send(id, preapprove_message(&invoice));
            if preapprove_answer(&r).is_some() {
                return Err(format!("a wardend that lost its lease answered {r:?}"));
            }
        }
        self.s = self.w.start();
        let id = self.id();
        let r = self
            .s
            .send(id, warden::standin::hsmd_init_regtest().as_vec());
        assert!(r.error.is_empty(), "init after a restart: {r:?}");
        Ok(())
    }

    /// A payment of invoice `n`, asked under request `id`; counted in the model if newly
    /// approved. `Err` when approved while frozen.
    fn ask(&mut self, n: u64) -> Result<(), Broken> {
        let (invoice, msat) = self.invoices[&n].clone();
        let message = preapprove_message(&invoice);
        let id = self.id();
        let r = self.s.send(id, message.clone());
        let now = self.now();
        if let Some(approved) = preapprove_answer(&r) {
            // A payment approved before the freeze is approved again without being counted
            // (VLS holds it: lightningd's retries of it are not new spends); a new one is not.
            if approved && self.m.frozen && !self.m.approved.contains(&n) {
                return Err(format!("invoice {n} approved while frozen"));
            }
            if approved && self.m.approved.insert(n) {
                self.m.spent.push((now, msat));
                let req = self.request(n);
                if let Ok(Some(record)) = self.s.core.approvals.find(&req) {
                    if record.state == warden::approval::RequestState::Consumed {
                        *self.m.quorum_used.entry(record.id).or_default() += 1;
                    }
                }
            }
        }
        self.last = Some((id, message, r));
        Ok(())
    }

    fn request(&self, n: u64) -> PaymentRequest {
        let (invoice, msat) = &self.invoices[&n];
        PaymentRequest::invoice(
            common::cln::payment_hash_of(invoice).0,
            *msat,
            &self.w.payee.hex(),
            None,
        )
    }

    fn step(&mut self, step: u32) -> Result<(), Broken> {
        let op = match self.rng.below(110) {
            100..=104 => Op::CheckedPay,
            105..=109 if self.checks_psbt => Op::CheckedOnChain,
            105..=109 => Op::OnChain,
            0..=27 => Op::Pay,
            28..=35 => Op::SendAgain,
            36..=43 => Op::AskAgain,
            44..=53 => Op::OnChain,
            54..=57 => Op::OnChainOverFee,
            58..=65 => Op::Approve,
            66..=69 => Op::Freeze,
            70..=75 => Op::Unfreeze,
            76..=83 => Op::ClockForward,
            84..=87 => Op::ClockBack,
            88..=92 => Op::Crash,
            93..=96 => Op::CommitFailure,
            _ => Op::FreezeDuringAnAbort,
        };
        *self.ops.entry(op).or_default() += 1;
        match op {
            Op::Pay | Op::CheckedPay => {
                let n = self.invoices.len() as u64 + 1;
                let sat = if self.rng.below(5) == 0 {
                    QUORUM_ABOVE_SAT + 1 + self.rng.below(400_000)
                } else {
                    10_000 + self.rng.below(400_000)
                };
                let invoice = self.w.payee.invoice(sat * SAT, n);
                self.invoices.insert(n, (invoice.clone(), sat * SAT));
                let checked = (op == Op::CheckedPay)
                    .then(|| self.s.core.check_invoice(&invoice, "pay"))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                self.ask(n)?;
                if let (Some(check), Some((_, _, r))) = (checked, &self.last) {
                    agrees(&check, preapprove_answer(r), &format!("invoice {n}"))?;
                }
            }
            Op::SendAgain => {
                if let Some((id, message, first)) = self.last.clone() {
                    let again = self.s.send(id, message);
                    if !first.is_temporary_failure && again != first {
                        return Err(format!(
                            "request {id} sent again got {again:?}, the first time {first:?}"
                        ));
                    }
                }
            }
            Op::AskAgain => {
                if !self.invoices.is_empty() {
                    let n = 1 + self.rng.below(self.invoices.len() as u64);
                    let was = self.m.approved.contains(&n);
                    self.ask(n)?;
                    if was {
                        if let Some((_, _, r)) = &self.last {
                            if preapprove_answer(r) == Some(false) {
                                return Err(format!("invoice {n}, approved, was refused later"));
                            }
                        }
                    }
                }
            }
            Op::OnChain | Op::OnChainOverFee | Op::CheckedOnChain => {
                let sat = 5_000 + self.rng.below(300_000);
                let fee = if op == Op::OnChainOverFee {
                    MAX_FEE_SAT + 1 + self.rng.below(5_000_000)
                } else {
                    200 + self.rng.below(20_000)
                };
                let to = address(u64::from(step) + 7 * self.rng.below(30));
                let w = warden::standin::lightningd::withdrawal_paying(&self.xpub, &to, sat, fee);
                let checked = (op == Op::CheckedOnChain)
                    .then(|| {
                        self.s
                            .core
                            .check_psbt(&w.psbt.0.psbt.inner.serialize(), "signpsbt")
                    })
                    .transpose()
                    .map_err(|e| e.to_string())?;
                let message = w.as_vec();
                let id = self.id();
                let r = self.s.send(id, message.clone());
                if let Some(check) = &checked {
                    let signed = (!r.is_temporary_failure).then_some(r.error.is_empty());
                    agrees(check, signed, "an on-chain spend")?;
                }
                let now = self.now();
                if !r.is_temporary_failure && r.error.is_empty() {
                    if self.m.frozen {
                        return Err("an on-chain spend was signed while frozen".into());
                    }
                    if op == Op::OnChainOverFee {
                        return Err(format!("a fee of {fee} sat was signed over max_fee"));
                    }
                    if self.m.signed.insert(message.clone()) {
                        self.m.spent.push((now, (sat + fee) * SAT));
                    }
                }
                self.last = Some((id, message, r));
            }
            Op::Approve => {
                let pending = self
                    .s
                    .core
                    .approvals
                    .list_pending(self.now())
                    .unwrap_or_default();
                if let Some(record) = pending.into_iter().find(|r| r.unfreeze.is_none()) {
                    for admin in ["alice", "bob"] {
                        let sig = self
                            .w
                            .key(admin)
                            .sign_digest(record.digest(Decision::Approve));
                        let _ = self.s.core.decide_request(
                            &record.id,
                            admin,
                            Decision::Approve,
                            SignatureFormat::Bip340,
                            &sig,
                            None,
                        );
                    }
                }
            }
            Op::Freeze => {
                if self.s.core.freeze("carol", "simulated alarm").is_ok() {
                    self.m.frozen = true;
                }
            }
            Op::Unfreeze => {
                if let Ok(u) = self.s.core.request_unfreeze("alice") {
                    let mut approvals = 0;
                    for admin in ["alice", "bob"] {
                        let sig = self
                            .w
                            .key(admin)
                            .sign_digest(u.record.digest(Decision::Approve));
                        if self
                            .s
                            .core
                            .decide_request(
                                &u.record.id,
                                admin,
                                Decision::Approve,
                                SignatureFormat::Bip340,
                                &sig,
                                None,
                            )
                            .is_ok()
                        {
                            approvals += 1;
                        }
                    }
                    if approvals == 2 {
                        self.m.frozen = false;
                    }
                }
            }
            Op::ClockForward => {
                let by = 60 + self.rng.below(30 * 3_600);
                self.w.clock.advance(by);
            }
            Op::ClockBack => {
                let by = 60 + self.rng.below(2 * 3_600);
                self.w.clock.set(self.w.clock.now().saturating_sub(by));
            }
            Op::Crash => self.restart()?,
            // Counted by `restart`, never drawn.
            Op::Takeover => {}
            Op::FreezeDuringAnAbort => {
                if !self.m.frozen {
                    self.s.gate.shut();
                    let before = self.s.gate.syncs_begun();
                    let core = self.s.core.clone();
                    let freezing =
                        std::thread::spawn(move || core.freeze("carol", "alarm").is_ok());
                    while self.s.gate.syncs_begun() == before {
                        std::thread::yield_now();
                    }
                    // Meanwhile another transaction is discarded (an admin's request that
                    // failed): memory is restored from what is committed.
                    self.s.store.begin().unwrap().abort();
                    self.s.gate.open();
                    if freezing.join().unwrap() {
                        self.m.frozen = true;
                    }
                }
            }
            Op::CommitFailure => {
                self.s.fault.crash_at(1);
                let n = self.invoices.len() as u64 + 1;
                let invoice = self.w.payee.invoice(20_000 * SAT, n);
                self.invoices.insert(n, (invoice, 20_000 * SAT));
                // The commit fails: a temporary failure, nothing counted; the process is as good
                // as dead and restarts on what was committed.
                let (inv, _) = self.invoices[&n].clone();
                let id = self.id();
                let r = self.s.send(id, preapprove_message(&inv));
                if !r.is_temporary_failure {
                    return Err(format!("a failed commit was answered {r:?}"));
                }
                self.restart()?;
            }
        }
        self.check(step)
    }

    /// Every invariant, against memory and the database.
    fn check(&self, step: u32) -> Result<(), Broken> {
        let now = self.now();
        let memory = self
            .s
            .core
            .with_engine(|e| e.state().totals(&LedgerKey::Node, now, DAY))
            .amount_msat;
        let disk = load_velocity(&self.s.store)
            .map_err(|e| e.to_string())?
            .totals(&LedgerKey::Node, now, DAY)
            .amount_msat;
        let model = self.m.within_day(now);
        if memory != disk {
            return Err(format!(
                "step {step}: memory counts {memory} msat, the database {disk}"
            ));
        }
        if disk != model {
            return Err(format!(
                "step {step}: the signer counts {disk} msat in the last day, the model {model}"
            ));
        }
        if disk > u128::from(DAILY_CAP_SAT * SAT) {
            return Err(format!(
                "step {step}: {disk} msat left in a day, over the cap"
            ));
        }
        let frozen_disk = warden::recovery::FreezeStore::new(&self.s.store)
            .get()
            .map_err(|e| e.to_string())?
            .is_some();
        if self.s.core.frozen().is_some() != frozen_disk || frozen_disk != self.m.frozen {
            return Err(format!(
                "step {step}: frozen in memory {}, on disk {frozen_disk}, in the model {}",
                self.s.core.frozen().is_some(),
                self.m.frozen
            ));
        }
        if let Some((id, n)) = self.m.quorum_used.iter().find(|(_, n)| **n > 1) {
            return Err(format!("step {step}: quorum approval {id} used {n} times"));
        }
        if step % 10 == 9 {
            let key = self.w.hsm.audit_public_key().map_err(|e| e.to_string())?;
            match warden::audit::verify::verify_store(&self.s.store, &key, None) {
                Ok(warden::audit::verify::Finding::Ok { .. }) => {}
                other => return Err(format!("step {step}: the audit chain: {other:?}")),
            }
        }
        Ok(())
    }
}

/// Run one seed; the coverage of its steps, or what broke.
fn run_seed(seed: u64) -> Result<BTreeMap<Op, u32>, Broken> {
    // One seed in ten keeps its state on PostgreSQL, where every restart is a takeover.
    let w = World::new(&format!("sim-{seed}"), seed % 10 == 5);
    let mut s = w.start();
    let xpub = match msgs::from_vec(
        s.send(1, warden::standin::hsmd_init_regtest().as_vec())
            .message,
    ) {
        Ok(Message::HsmdInitReplyV4(r)) => Xpub::decode(&r.bip32.0).unwrap(),
        other => panic!("unexpected init reply {other:?}"),
    };
    let mut run = Run {
        w,
        s,
        m: Model::default(),
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        xpub,
        next_id: 1,
        invoices: BTreeMap::new(),
        last: None,
        ops: BTreeMap::new(),
        checks_psbt: seed % 10 == 0,
    };
    for step in 0..STEPS {
        run.step(step)?;
    }
    Ok(run.ops)
}

#[test]
fn the_simulator_finds_no_broken_promise() {
    let seeds: u64 = std::env::var("WARDEN_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let first: u64 = std::env::var("WARDEN_SIM_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let started = std::time::Instant::now();
    let mut coverage: BTreeMap<Op, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in REGRESSIONS.iter().copied().chain(first..first + seeds) {
        match run_seed(seed) {
            Ok(ops) => {
                for (op, n) in ops {
                    *coverage.entry(op).or_default() += n;
                }
            }
            Err(why) => {
                eprintln!(
                    "seed {seed}: {why}\n  replay: WARDEN_SIM_FIRST={seed} WARDEN_SIM_SEEDS=1 cargo test --test simulate -- --nocapture"
                );
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "simulator: {} seeds ({} regression) x {STEPS} steps in {:.1} s; steps by kind: {coverage:?}",
        seeds + REGRESSIONS.len() as u64,
        REGRESSIONS.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
