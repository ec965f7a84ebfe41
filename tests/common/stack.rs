//! wardend's parts in one process, as `wardend` builds them at start, over any backend: the
//! store, the audit log on a real SoftHSM key, the core, and the hsmd stream's `Session` around
//! the VLS node built from the HSM-sealed seed. What the commit tests and the simulator drive.

use std::sync::Arc;
use vlsd::grpc::hsmd::{SignerRequest, SignerResponse};
use warden::approval::ApprovalConfig;
use warden::audit::{AuditConfig, AuditLog};
use warden::clock::ManualClock;
use warden::core::{Core, LoadedPolicy};
use warden::hsm::{Hsm, NodeSeed};
use warden::signer::stream::Session;
use warden::signer::{build_handler_on_clock, vls_filter, SignerSettings};
use warden::store::{Backend, Store};

/// The policy wardend starts with, as it chooses it: the one in force in the store's history,
/// or on a new store `first`, recorded as the first version (its admins the first quorum).
fn policy_at_start(store: &Store, first: &LoadedPolicy, now: u64) -> LoadedPolicy {
    use warden::governance::{PolicyHistory, PolicyVersion};
    let network = lightning_signer::bitcoin::Network::Regtest;
    match warden::core::verified_policy_in_force(store, network).unwrap() {
        Some(v) => LoadedPolicy {
            policy: Arc::new(warden::policy::parse_policy_for(&v.text, network).unwrap()),
            text: v.text,
        },
        None => {
            PolicyHistory::new(store)
                .record(PolicyVersion::first(
                    first.policy.hash_hex(),
                    first.text.clone(),
                    now,
                ))
                .unwrap();
            first.clone()
        }
    }
}

/// The store, the core and the session of one wardend over `backend`, under the policy in
/// force (`policy` on a new store).
pub fn build(
    hsm: &Hsm,
    seed: &NodeSeed,
    policy: &LoadedPolicy,
    clock: &ManualClock,
    backend: Arc<dyn Backend>,
) -> (Store, Arc<Core>, Session) {
    build_with(hsm, seed, policy, clock, backend, &Options::default())
}

/// What a long run sets beyond [`build`]'s defaults.
pub struct Options {
    pub approvals: ApprovalConfig,
    pub max_invoices: usize,
    /// VLS on the simulated clock too (invoice expiry, pruning); otherwise the system clock.
    pub vls_on_clock: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            approvals: ApprovalConfig::default(),
            max_invoices: 1_000,
            vls_on_clock: false,
        }
    }
}

/// Warden's manual clock read by VLS, in whole seconds as Warden reads it.
struct VlsClock(ManualClock);

impl lightning_signer::SendSync for VlsClock {}

impl lightning_signer::util::clock::Clock for VlsClock {
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_secs(warden::clock::Clock::now(&self.0))
    }
}

/// [`build`] with `options`.
pub fn build_with(
    hsm: &Hsm,
    seed: &NodeSeed,
    policy: &LoadedPolicy,
    clock: &ManualClock,
    backend: Arc<dyn Backend>,
    options: &Options,
) -> (Store, Arc<Core>, Session) {
    let store = Store::new(backend);
    let policy = &policy_at_start(&store, policy, warden::clock::Clock::now(clock));
    let audit =
        Arc::new(AuditLog::open(&store, Arc::new(hsm.clone()), AuditConfig::default()).unwrap());
    let core = Arc::new(
        Core::open(
            store.clone(),
            policy.clone(),
            options.approvals,
            Arc::new(clock.clone()),
            audit,
            Default::default(),
        )
        .unwrap(),
    );
    let settings = SignerSettings {
        network: lightning_signer::bitcoin::Network::Regtest,
        max_invoices: options.max_invoices,
    };
    let vls_clock: Arc<dyn lightning_signer::util::clock::Clock> = if options.vls_on_clock {
        Arc::new(VlsClock(clock.clone()))
    } else {
        Arc::new(lightning_signer::util::clock::StandardClock())
    };
    let init = build_handler_on_clock(
        core.clone(),
        seed,
        &store,
        settings,
        &vls_filter(&[]),
        vls_clock,
    )
    .unwrap();
    let session = Session::new(&init, core.clone());
    (store, core, session)
}

/// A backend whose syncs wait while its gate is shut: a commit is applied, then held between its
/// apply and its sync for as long as a test (or the simulator) wants.
pub struct GatedSync {
    inner: Arc<dyn Backend>,
    shut: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    begun: std::sync::atomic::AtomicU64,
}

impl GatedSync {
    /// Over `inner`, open.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        GatedSync {
            inner,
            shut: std::sync::Mutex::new(false),
            opened: std::sync::Condvar::new(),
            begun: Default::default(),
        }
    }
    /// Hold every sync from now on.
    pub fn shut(&self) {
        *self.shut.lock().unwrap() = true;
    }
    /// Let the held syncs (and later ones) through.
    pub fn open(&self) {
        *self.shut.lock().unwrap() = false;
        self.opened.notify_all();
    }
    /// Syncs begun so far (held ones included).
    pub fn syncs_begun(&self) -> u64 {
        self.begun.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Backend for GatedSync {
    fn get(
        &self,
        ns: warden::store::Namespace,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, warden::store::StoreError> {
        self.inner.get(ns, key)
    }
    fn scan(
        &self,
        ns: warden::store::Namespace,
        prefix: &[u8],
    ) -> Result<Vec<warden::store::Entry>, warden::store::StoreError> {
        self.inner.scan(ns, prefix)
    }
    fn last(
        &self,
        ns: warden::store::Namespace,
        prefix: &[u8],
    ) -> Result<Option<warden::store::Entry>, warden::store::StoreError> {
        self.inner.last(ns, prefix)
    }
    fn commit(&self, batch: &warden::store::Batch) -> Result<(), warden::store::StoreError> {
        self.apply(batch)?;
        self.sync()
    }
    fn apply(&self, batch: &warden::store::Batch) -> Result<(), warden::store::StoreError> {
        self.inner.apply(batch)
    }
    fn sync(&self) -> Result<(), warden::store::StoreError> {
        let mut shut = self.shut.lock().unwrap();
        self.begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while *shut {
            shut = self.opened.wait(shut).unwrap();
        }
        drop(shut);
        self.inner.sync()
    }
}

/// A SoftHSM token initialised for regtest, its HSM session and the node seed it sealed.
pub fn sealed(label: &str) -> (super::TestToken, Hsm, NodeSeed) {
    let token = super::TestToken::new(label);
    let hsm = token.open();
    let network = lightning_signer::bitcoin::Network::Regtest;
    hsm.init(&token.data_dir, network).unwrap();
    let seed = hsm.load_seed(&token.data_dir, network).unwrap().seed;
    (token, hsm, seed)
}

/// Admins alice, bob and carol with fresh keys, and a policy declaring them followed by `rules`.
pub fn admins_and_policy(
    rules: &str,
) -> (
    Vec<(String, warden::approval::keys::AdminKey)>,
    LoadedPolicy,
) {
    let admins: Vec<(String, warden::approval::keys::AdminKey)> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| (n.to_string(), warden::approval::keys::AdminKey::generate()))
        .collect();
    let mut text = "version = 1\n[admins]\n".to_string();
    for (n, k) in &admins {
        text.push_str(&format!("{n} = {{ pubkey = \"{}\" }}\n", k.public_key()));
    }
    text.push_str(rules);
    let policy = LoadedPolicy {
        policy: Arc::new(warden::policy::parse_policy(&text).unwrap()),
        text,
    };
    (admins, policy)
}

/// A regtest P2WPKH address of key `seed` (nobody in the tests spends from it).
pub fn regtest_address(seed: u8) -> lightning_signer::bitcoin::Address {
    use lightning_signer::bitcoin::secp256k1::{Secp256k1, SecretKey};
    let key = SecretKey::from_slice(&[seed; 32]).unwrap();
    let pk = lightning_signer::bitcoin::CompressedPublicKey(key.public_key(&Secp256k1::new()));
    lightning_signer::bitcoin::Address::p2wpkh(&pk, lightning_signer::bitcoin::Network::Regtest)
}

/// xorshift64*: reproducible choices for the harnesses, not cryptographic ones.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Send `message` as request `id` (a retransmission reuses the number) and return the answer
/// as it would leave for the proxy.
pub fn send(session: &mut Session, id: u64, message: Vec<u8>) -> SignerResponse {
    session
        .handle(SignerRequest {
            request_id: id,
            message,
            context: None,
        })
        .response
}
