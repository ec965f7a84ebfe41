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
//! and failed commits; and (on every seed but the regressions found before they existed)
//! governed policy changes that tighten or loosen the daily cap, vetoes of a loosening in its
//! delay, the periodic sweep that puts a loosening in force, the recovery key's unfreeze started,
//! cancelled and executed, and the HSM's token going away and coming back. After every step the reference model, written apart from the code it
//! checks (its own window arithmetic, its own record of approvals, freezes and what was signed),
//! must agree with what the signer holds in memory and on disk:
//! - what left the wallet in the last 24 hours (payments, on-chain outputs and fees) is within
//!   the daily cap, and is what the model counted, in memory and in the database alike;
//! - nothing was approved while frozen, and the freeze in memory is the one on disk;
//! - every quorum approval was used at most once;
//! - the policy in force (in memory and in the database's history) is the last one the quorum
//!   approved: a tightening from its last signature, a loosening only after its delay in
//!   Warden's own time and never once vetoed; every approval was within the cap in force;
//! - a recovery action runs only after its delay and never once cancelled;
//! - nothing is approved while the HSM is known to be gone;
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
use warden::store::log::LogBackend;
use warden::store::sled::SledBackend;
use warden::store::{Backend, Store};

const SAT: u64 = 1_000;
const DAILY_CAP_SAT: u64 = 3_000_000;
const PER_PAYMENT_SAT: u64 = 1_500_000;
const QUORUM_ABOVE_SAT: u64 = 1_000_000;
const MAX_FEE_SAT: u64 = 200_000;
const DAY: u64 = 86_400;
const STEPS: u32 = 60;
/// The daily caps the governed changes move between.
const CAPS_SAT: [u64; 3] = [2_000_000, DAILY_CAP_SAT, 4_000_000];
const LOOSEN_DELAY: u64 = 6 * 3_600;
const RECOVERY_DELAY: u64 = 2 * 3_600;

/// Seeds that once found a defect: run on every run.
const REGRESSIONS: &[u64] = &[
    // A request answered "no", then "yes" when the proxy sent it again after a clock jump past
    // the age limit the kept answers had.
    70,
];

/// Regression seeds found before the governance, recovery and HSM steps existed: they replay
/// exactly the steps that found them, so those steps are not drawn for them.
const BEFORE_GOVERNANCE: &[u64] = &[70];

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
    /// The latest clock reading: Warden's own time is at most this.
    high_water: u64,
    /// The hash of the policy in force, and each known policy's daily cap (msat).
    in_force: String,
    caps: BTreeMap<String, u64>,
    /// A loosening approved by the quorum and not yet in force.
    loosening: Option<Loosening>,
    /// The recovery key's started unfreeze.
    recovery: Option<RecoveryRun>,
    hsm_down: bool,
}

/// What the model knows of an approved loosening: it may be in force once Warden's time is at
/// least `earliest` (its quorum cannot have come before the clock read at the approval), and
/// must be after a sweep at a clock reading of `certain` or later.
struct Loosening {
    id: String,
    hash: String,
    earliest: u64,
    certain: u64,
    vetoed: bool,
}

struct RecoveryRun {
    id: String,
    /// The action may run once Warden's time is at least this.
    earliest: u64,
    cancelled: bool,
}

impl Model {
    /// What counts at `now`: the signer keeps minute buckets, and a spend stays in a 24-hour
    /// window until 24 hours after the end of its minute.
    fn cap_msat(&self) -> u128 {
        u128::from(self.caps[&self.in_force])
    }

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
    /// A policy with another daily cap, proposed and signed by the governance quorum.
    Propose,
    /// An admin's veto of a loosening in its delay.
    Veto,
    /// wardend's periodic sweep (expiries, loosenings whose delay is over).
    Sweep,
    /// The recovery key starts an unfreeze.
    RecoveryStart,
    RecoveryExecute,
    /// The admins' quorum cancels the started recovery action.
    RecoveryCancel,
    /// The HSM's token goes away; wardend's health probe finds it.
    HsmFault,
    /// The token is back; wardend logs in again.
    HsmBack,
}

struct World {
    token: TestToken,
    recovery_key: AdminKey,
    hsm: Hsm,
    seed: NodeSeed,
    admins: Vec<(String, AdminKey)>,
    policy: LoadedPolicy,
    clock: ManualClock,
    payee: Payee,
    backing: Backing,
}

/// Which backend a seed runs on.
#[derive(Clone, Copy)]
enum On {
    Log,
    Sled,
    Postgres,
}

/// What the state lives on.
enum Backing {
    /// The log or sled in a directory (kept while the world lives).
    Local {
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
    fn new(label: &str, on: On) -> Self {
        let (token, hsm, seed) = common::stack::sealed(label);
        let (admins, _) = common::stack::admins_and_policy("");
        let recovery_key = AdminKey::generate();
        let text = policy_text(&admins, &recovery_key, DAILY_CAP_SAT);
        let policy = LoadedPolicy {
            policy: Arc::new(warden::policy::parse_policy(&text).unwrap()),
            text,
        };
        let local = |open: fn(&std::path::Path) -> Arc<dyn Backend>| {
            let dir = tempfile::tempdir().unwrap();
            Backing::Local {
                backend: open(dir.path()),
                _dir: dir,
            }
        };
        let backing = match on {
            On::Postgres => Backing::Postgres {
                db: common::pg::shared().database(label),
                holders: std::cell::Cell::new(0),
            },
            On::Log => local(|d| Arc::new(LogBackend::open(d).unwrap())),
            On::Sled => local(|d| Arc::new(SledBackend::open(d).unwrap())),
        };
        World {
            token,
            recovery_key,
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
            Backing::Local { backend, .. } => (backend.clone(), None),
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

    /// The token directory SoftHSM reads, and where it goes while the HSM is "gone".
    fn token_dirs(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let d = self.token.dir.path();
        (d.join("tokens"), d.join("tokens.gone"))
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

/// The simulator's policy with a daily cap of `cap_sat`: the admins, the limits, the quorum, a
/// loosening delay and the recovery key's unfreeze.
fn policy_text(admins: &[(String, AdminKey)], recovery: &AdminKey, cap_sat: u64) -> String {
    let mut text = "version = 1\n[admins]\n".to_string();
    for (n, k) in admins {
        text.push_str(&format!("{n} = {{ pubkey = \"{}\" }}\n", k.public_key()));
    }
    text.push_str(&format!(
        r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "{PER_PAYMENT_SAT} sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "{cap_sat} sat"

[[approval]]
tag = "large-payment-quorum"
above = "{QUORUM_ABOVE_SAT} sat"
quorum = {{ need = 2, of = ["alice", "bob", "carol"] }}
expiry = "1h"

[governance]
loosen_delay = "{}h"

[recovery]
key = {{ pubkey = "{}" }}
delay = "{}h"
actions = ["unfreeze"]
"#,
        LOOSEN_DELAY / 3_600,
        recovery.public_key(),
        RECOVERY_DELAY / 3_600,
    ));
    text
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
    /// What the governance, recovery and HSM steps achieved (a step may find nothing to do).
    effects: BTreeMap<&'static str, u32>,
    /// Whether this seed checks PSBTs as the plugin does (one seed in ten: the first check of a
    /// node derives its wallet's scripts, about a second in a debug build).
    checks_psbt: bool,
    /// Draws the governance, recovery and HSM steps (`None` for the older regression seeds),
    /// apart from `rng` so that the other steps are drawn as before.
    more: Option<Rng>,
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
        if self.m.hsm_down {
            // wardend does not start without its HSM: the operator brings it back first.
            self.hsm_back()?;
        }
        self.s = self.w.start();
        let id = self.id();
        let r = self
            .s
            .send(id, warden_testkit::hsmd_init_regtest().as_vec());
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
            if approved && self.m.hsm_down && !self.m.approved.contains(&n) {
                return Err(format!("invoice {n} approved while the HSM was gone"));
            }
            if !approved && self.m.hsm_down {
                self.effect("refused while the HSM was gone");
            }
            if approved && self.m.approved.insert(n) {
                self.m.spent.push((now, msat));
                self.within_cap(&format!("invoice {n}"))?;
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
        let more = self.more.as_mut().and_then(|r| match r.below(40) {
            0 | 1 => Some(Op::Propose),
            2 => Some(Op::Veto),
            3 | 4 => Some(Op::Sweep),
            5 => Some(Op::RecoveryStart),
            6 | 7 => Some(Op::RecoveryExecute),
            8 => Some(Op::RecoveryCancel),
            9 => Some(Op::HsmFault),
            10 | 11 => Some(Op::HsmBack),
            _ => None,
        });
        let op = match more {
            Some(op) => op,
            None => self.draw(),
        };
        *self.ops.entry(op).or_default() += 1;
        self.run_op(op, step)?;
        self.m.high_water = self.m.high_water.max(self.w.clock.now());
        self.check(step)
    }

    /// One of the steps every seed draws, from `rng`.
    fn draw(&mut self) -> Op {
        match self.rng.below(110) {
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
        }
    }

    fn run_op(&mut self, op: Op, step: u32) -> Result<(), Broken> {
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
                let w = warden_testkit::lightningd::withdrawal_paying(&self.xpub, &to, sat, fee);
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
                    if self.m.hsm_down {
                        return Err("an on-chain spend was signed while the HSM was gone".into());
                    }
                    if op == Op::OnChainOverFee {
                        return Err(format!("a fee of {fee} sat was signed over max_fee"));
                    }
                    if self.m.signed.insert(message.clone()) {
                        self.m.spent.push((now, (sat + fee) * SAT));
                        self.within_cap("an on-chain spend")?;
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
                if let Some(record) = pending
                    .into_iter()
                    .find(|r| r.unfreeze.is_none() && r.change.is_none() && r.recovery.is_none())
                {
                    self.sign_by(&record.id, &["alice", "bob"], Decision::Approve);
                }
            }
            Op::Freeze => {
                if self.s.core.freeze("carol", "simulated alarm").is_ok() {
                    self.m.frozen = true;
                }
            }
            Op::Unfreeze => {
                if let Ok(u) = self.s.core.request_unfreeze("alice") {
                    if self.sign_by(&u.record.id, &["alice", "bob"], Decision::Approve) {
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
            Op::Propose => self.propose()?,
            Op::Veto => self.veto(),
            Op::Sweep => self.sweep()?,
            Op::RecoveryStart => self.recovery_start()?,
            Op::RecoveryExecute => self.recovery_execute()?,
            Op::RecoveryCancel => self.recovery_cancel(),
            Op::HsmFault => self.hsm_fault()?,
            Op::HsmBack => self.hsm_back()?,
        }
        Ok(())
    }

    /// After a new approval counted in the model: the day's total is within the cap in force.
    fn within_cap(&self, what: &str) -> Result<(), Broken> {
        let day = self.m.within_day(self.now());
        if day > self.m.cap_msat() {
            return Err(format!(
                "{what} approved with {day} msat in the last day, over the cap in force ({} msat)",
                self.m.cap_msat()
            ));
        }
        Ok(())
    }

    /// Each of `admins` signs request `id` with `decision` (every one tries, whatever the
    /// others' answers); whether every signature was taken.
    fn sign_by(&self, id: &str, admins: &[&str], decision: Decision) -> bool {
        let Ok(record) = self.s.core.approvals.get(id) else {
            return false;
        };
        let taken = admins
            .iter()
            .filter(|admin| {
                let sig = self.w.key(admin).sign_digest(record.digest(decision));
                self.s
                    .core
                    .decide_request(id, admin, decision, SignatureFormat::Bip340, &sig, None)
                    .is_ok()
            })
            .count();
        taken == admins.len()
    }

    /// A policy with another daily cap, proposed by alice and signed by alice and bob.
    fn propose(&mut self) -> Result<(), Broken> {
        if self.m.hsm_down || self.m.loosening.is_some() {
            return Ok(());
        }
        let current = self.m.caps[&self.m.in_force];
        let others: Vec<u64> = CAPS_SAT
            .iter()
            .map(|c| c * SAT)
            .filter(|c| *c != current)
            .collect();
        let cap = others[self.rng_more() as usize % others.len()];
        let text = policy_text(&self.w.admins, &self.w.recovery_key, cap / SAT);
        let proposal = self
            .s
            .core
            .propose_policy(&text, "alice")
            .map_err(|e| format!("a valid proposal was refused: {e}"))?;
        let hash = proposal.record.change.as_ref().unwrap().hash.clone();
        self.m.caps.insert(hash.clone(), cap);
        let (clock, high) = (
            self.w.clock.now(),
            self.m.high_water.max(self.w.clock.now()),
        );
        if !self.sign_by(&proposal.record.id, &["alice", "bob"], Decision::Approve) {
            return Err(format!(
                "the quorum's signatures on policy change {} were not taken",
                proposal.record.id
            ));
        }
        if cap < current {
            // A tightening is in force from the last signature.
            self.effect("tightened");
            self.m.in_force = hash;
        } else {
            self.m.loosening = Some(Loosening {
                id: proposal.record.id,
                hash,
                earliest: clock + LOOSEN_DELAY,
                certain: high + LOOSEN_DELAY,
                vetoed: false,
            });
        }
        Ok(())
    }

    fn veto(&mut self) {
        if self.m.hsm_down {
            return;
        }
        let Some(id) = self
            .m
            .loosening
            .as_ref()
            .filter(|l| !l.vetoed)
            .map(|l| l.id.clone())
        else {
            return;
        };
        if self.sign_by(&id, &["carol"], Decision::Reject) {
            self.effect("loosening vetoed");
            self.m.loosening.as_mut().unwrap().vetoed = true;
        }
    }

    /// wardend's sweep; a loosening comes into force only after its delay, and must once the
    /// clock is certainly past it.
    fn sweep(&mut self) -> Result<(), Broken> {
        if self.m.hsm_down {
            return Ok(());
        }
        let _ = self.s.core.sweep();
        let now_hash = self.s.core.policy().policy.hash_hex();
        let clock = self.w.clock.now();
        if let Some(l) = &self.m.loosening {
            if now_hash == l.hash {
                if l.vetoed {
                    return Err(format!("loosening {} came into force after a veto", l.id));
                }
                if self.m.high_water.max(clock) < l.earliest {
                    return Err(format!(
                        "loosening {} came into force before its delay ({} < {})",
                        l.id,
                        self.m.high_water.max(clock),
                        l.earliest
                    ));
                }
                self.effect("loosened after the delay");
                self.m.in_force = now_hash;
                self.m.loosening = None;
            } else if !l.vetoed && clock >= l.certain {
                return Err(format!(
                    "loosening {} is not in force after its delay (clock {clock} >= {})",
                    l.id, l.certain
                ));
            } else if l.vetoed {
                self.m.loosening = None;
            }
        }
        Ok(())
    }

    /// The recovery key starts an unfreeze of the freeze in force.
    fn recovery_start(&mut self) -> Result<(), Broken> {
        if self.m.hsm_down || !self.m.frozen || self.m.recovery.is_some() {
            return Ok(());
        }
        let (record, _) = self
            .s
            .core
            .open_recovery(warden::policy::RecoveryKind::Unfreeze, None, None)
            .map_err(|e| format!("opening the recovery key's unfreeze: {e}"))?;
        let sig = self
            .w
            .recovery_key
            .sign_digest(record.digest(Decision::Approve));
        let earliest = self.w.clock.now() + RECOVERY_DELAY.min(600) + RECOVERY_DELAY;
        self.s
            .core
            .start_recovery(&record.id, SignatureFormat::Bip340, &sig)
            .map_err(|e| format!("starting the recovery key's unfreeze: {e}"))?;
        self.effect("recovery started");
        self.m.recovery = Some(RecoveryRun {
            id: record.id,
            earliest,
            cancelled: false,
        });
        Ok(())
    }

    fn recovery_execute(&mut self) -> Result<(), Broken> {
        let Some(r) = &self.m.recovery else {
            return Ok(());
        };
        if self.m.hsm_down {
            return Ok(());
        }
        if self.s.core.execute_recovery(&r.id).is_ok() {
            if r.cancelled {
                return Err(format!(
                    "recovery action {} ran after it was cancelled",
                    r.id
                ));
            }
            let warden_time_at_most = self.m.high_water.max(self.w.clock.now());
            if warden_time_at_most < r.earliest {
                return Err(format!(
                    "recovery action {} ran before its delay ({warden_time_at_most} < {})",
                    r.id, r.earliest
                ));
            }
            self.effect("recovery executed");
            self.m.frozen = false;
            self.m.recovery = None;
        }
        Ok(())
    }

    fn recovery_cancel(&mut self) {
        if self.m.hsm_down {
            return;
        }
        if let Some(id) = self.m.recovery.as_ref().map(|r| r.id.clone()) {
            if self.sign_by(&id, &["alice", "carol"], Decision::Reject) {
                self.effect("recovery cancelled");
                self.m.recovery.as_mut().unwrap().cancelled = true;
            }
        }
    }

    /// The token directory goes away under the running signer; the health probe finds it.
    fn hsm_fault(&mut self) -> Result<(), Broken> {
        if self.m.hsm_down {
            return Ok(());
        }
        let (dir, gone) = self.w.token_dirs();
        std::fs::rename(&dir, &gone).map_err(|e| e.to_string())?;
        match self.w.hsm.probe() {
            Ok(()) => return Err("the HSM probe passed with its token gone".into()),
            Err(e) => self.s.core.set_hsm_health(Err(e.to_string())),
        }
        self.effect("HSM gone");
        self.m.hsm_down = true;
        Ok(())
    }

    /// The token is back; wardend logs in again and its probe passes.
    fn hsm_back(&mut self) -> Result<(), Broken> {
        if !self.m.hsm_down {
            return Ok(());
        }
        let (dir, gone) = self.w.token_dirs();
        std::fs::rename(&gone, &dir).map_err(|e| e.to_string())?;
        self.w
            .hsm
            .relogin()
            .map_err(|e| format!("logging in again once the token is back: {e}"))?;
        self.w
            .hsm
            .probe()
            .map_err(|e| format!("the probe once the token is back: {e}"))?;
        self.s.core.set_hsm_health(Ok(()));
        self.m.hsm_down = false;
        Ok(())
    }

    fn effect(&mut self, what: &'static str) {
        *self.effects.entry(what).or_default() += 1;
    }

    fn rng_more(&mut self) -> u64 {
        self.more.as_mut().map(|r| r.next()).unwrap_or(0)
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
        if disk > u128::from(CAPS_SAT[2] * SAT) {
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
        let memory_policy = self.s.core.policy().policy.hash_hex();
        let disk_policy = warden::core::verified_policy_in_force(
            &self.s.store,
            lightning_signer::bitcoin::Network::Regtest,
        )
        .map_err(|e| format!("step {step}: the policy history: {e}"))?
        .map(|v| v.hash)
        .unwrap_or_default();
        if memory_policy != disk_policy || disk_policy != self.m.in_force {
            return Err(format!(
                "step {step}: the policy in force in memory is {memory_policy}, in the database {disk_policy}, in the model {}",
                self.m.in_force
            ));
        }
        if let Some((id, n)) = self.m.quorum_used.iter().find(|(_, n)| **n > 1) {
            return Err(format!("step {step}: quorum approval {id} used {n} times"));
        }
        if step % 10 == 9 && !self.m.hsm_down {
            let key = self.w.hsm.audit_public_key().map_err(|e| e.to_string())?;
            match warden::audit::verify::verify_store(&self.s.store, &key, None) {
                Ok(warden::audit::verify::Finding::Ok { .. }) => {}
                other => return Err(format!("step {step}: the audit chain: {other:?}")),
            }
        }
        Ok(())
    }
}

/// Run one seed; the coverage of its steps and what they achieved, or what broke.
type Coverage = (BTreeMap<Op, u32>, BTreeMap<&'static str, u32>);

fn run_seed(seed: u64) -> Result<Coverage, Broken> {
    // One seed in ten keeps its state on PostgreSQL, where every restart is a takeover; three
    // in ten on sled; the rest on the log, the default.
    let on = match seed % 10 {
        5 => On::Postgres,
        1 | 3 | 7 => On::Sled,
        _ => On::Log,
    };
    let w = World::new(&format!("sim-{seed}"), on);
    let mut s = w.start();
    let xpub = match msgs::from_vec(
        s.send(1, warden_testkit::hsmd_init_regtest().as_vec())
            .message,
    ) {
        Ok(Message::HsmdInitReplyV4(r)) => Xpub::decode(&r.bip32.0).unwrap(),
        other => panic!("unexpected init reply {other:?}"),
    };
    let initial = w.policy.policy.hash_hex();
    let mut run = Run {
        w,
        s,
        m: Model {
            in_force: initial.clone(),
            caps: BTreeMap::from([(initial, DAILY_CAP_SAT * SAT)]),
            ..Model::default()
        },
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        xpub,
        next_id: 1,
        invoices: BTreeMap::new(),
        last: None,
        ops: BTreeMap::new(),
        effects: BTreeMap::new(),
        checks_psbt: seed % 10 == 0,
        more: (!BEFORE_GOVERNANCE.contains(&seed))
            .then(|| Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1)),
    };
    for step in 0..STEPS {
        run.step(step)?;
    }
    Ok((run.ops, run.effects))
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
    let mut achieved: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in REGRESSIONS.iter().copied().chain(first..first + seeds) {
        match run_seed(seed) {
            Ok((ops, effects)) => {
                for (op, n) in ops {
                    *coverage.entry(op).or_default() += n;
                }
                for (what, n) in effects {
                    *achieved.entry(what).or_default() += n;
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
        "simulator: {} seeds ({} regression) x {STEPS} steps in {:.1} s; steps by kind: {coverage:?}; achieved: {achieved:?}",
        seeds + REGRESSIONS.len() as u64,
        REGRESSIONS.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
