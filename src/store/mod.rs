//! The only module that touches a database: one seam, one atomic and durable commit per request.
//!
//! Every piece of Warden's state (velocity buckets, approval requests, the audit chain, VLS's
//! node and channel state, metadata) lives in one [`Namespace`] of one [`Backend`]. A request (an
//! hsmd message, an admin call) opens one transaction with [`Store::begin`]; everything the
//! request writes, whichever module writes it, is staged in that transaction and reaches the
//! backend in one [`Backend::commit`], which is atomic and returns only once the data and the
//! file metadata are on stable storage. Nothing is answered before that commit returns.
//!
//! The open transaction belongs to the thread that opened it: writes from that thread are staged
//! in it and its reads see them; other threads read applied state only (never another thread's
//! staged writes), and a second writer waits until the first has applied or aborted. Code that runs both inside a request and on its own
//! (an event at startup, a test calling the policy engine directly) uses [`Store::write`], which
//! joins the transaction open on this thread or, if there is none, commits its own.
//!
//! **Group commit.** A backend may split a commit into [`Backend::apply`] (atomic, visible) and
//! [`Backend::sync`] (everything applied so far reaches stable storage). The store applies a
//! transaction's batch while the writer still holds the transaction slot, so transactions are
//! applied one at a time in the order they ran, then frees the slot and waits for a sync that
//! covers its batch; whichever waiter finds no sync running performs one for everyone applied
//! by then. A transaction's commit, and so its answer, therefore still returns only once its
//! writes are durable, but the next request runs while the previous one's `fsync` is under way,
//! and concurrent requests share one. A later transaction may read state that is applied but
//! not yet durable; it cannot become durable before that state does (syncs cover every earlier
//! apply, in order), and a failed sync fails every transaction not yet durable and every later
//! one. Even a transaction that wrote nothing waits until everything applied before it ended is
//! durable, because its answer may rest on what it read. [`Txn::commit_deferred`] hands the
//! wait to the caller (the hsmd stream sends each answer from another thread once it is due).
//!
//! Backends: [`self::sled::SledBackend`] (the default, embedded), [`postgres::PgBackend`] (shared
//! by an active wardend and its standbys, every commit fenced by a lease) and
//! [`fault::FaultBackend`] (tests: crashes at the k-th commit). The trait is small on purpose, in the style of LDK's
//! `KVStoreSync`: get, scan a prefix, read the last key of a prefix, commit a batch.

mod disk;
pub mod fault;
pub mod log;
pub mod migrate;
pub mod postgres;
pub mod sled;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

/// The namespaces of Warden's state, declared once. The byte is the key prefix on disk; a
/// namespace's byte never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// Velocity buckets of the policy's rolling windows (see `policy::velocity`'s codec).
    Velocity,
    /// Approval requests and their admin signatures (`approval::store`).
    Approvals,
    /// The hash-chained audit log and its HSM-signed checkpoints (`audit`).
    Audit,
    /// VLS's node, channel and chain-tracker state (`signer::persist`).
    Vls,
    /// Format version and identifiers (the VLS signer id).
    Meta,
    /// The policy in force and every earlier one (`governance`).
    Governance,
    /// The freeze and recovery actions (`recovery`).
    Recovery,
    /// Velocity buckets of limits with `scope = "fleet"`: shared by every member of a fleet
    /// (see [`Namespace::is_fleet`]).
    FleetVelocity,
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 8] = [
        Namespace::Velocity,
        Namespace::Approvals,
        Namespace::Audit,
        Namespace::Vls,
        Namespace::Meta,
        Namespace::Governance,
        Namespace::Recovery,
        Namespace::FleetVelocity,
    ];

    /// Whether the namespace exists only in a fleet (the fleet's windows).
    pub fn is_fleet(self) -> bool {
        matches!(self, Namespace::FleetVelocity)
    }

    /// Whether the members of a fleet share the namespace: the fleet's windows, its one
    /// approval queue, its one policy history, its freeze. On a fleet's database every member
    /// reads and writes the same rows, and a transaction that touches them holds the fleet's
    /// lock ([`Store::lock_fleet`]) until it ends. A single wardend keeps them as its own.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            Namespace::FleetVelocity
                | Namespace::Approvals
                | Namespace::Governance
                | Namespace::Recovery
        )
    }

    /// The key prefix on disk.
    pub fn prefix(self) -> u8 {
        match self {
            Namespace::Velocity => b'V',
            Namespace::Approvals => b'A',
            Namespace::Audit => b'L',
            Namespace::Vls => b'S',
            Namespace::Meta => b'M',
            Namespace::Governance => b'G',
            Namespace::Recovery => b'R',
            Namespace::FleetVelocity => b'F',
        }
    }

    /// The name in errors and diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Velocity => "velocity",
            Namespace::Approvals => "approvals",
            Namespace::Audit => "audit",
            Namespace::Vls => "vls",
            Namespace::Meta => "meta",
            Namespace::Governance => "governance",
            Namespace::Recovery => "recovery",
            Namespace::FleetVelocity => "fleet-velocity",
        }
    }
}

/// What went wrong with the state database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the state database in {path}: {detail}. Check that the data directory exists and is writable, and that no other wardend is running on it")]
    Open {
        /// The database directory.
        path: String,
        /// The engine's error.
        detail: String,
    },
    /// A read or write failed.
    #[error("state database {op} failed: {detail}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The engine's error.
        detail: String,
    },
    /// A stored record does not decode: the database was altered or written by another version.
    #[error(
        "state database record {key} is corrupt: {detail}. Restore the data directory from backup"
    )]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A write outside any transaction: a bug in Warden, never an input problem.
    #[error("internal error: a {0} write was attempted outside a transaction")]
    NoTransaction(&'static str),
    /// The thread already holds an open transaction.
    #[error("internal error: a transaction is already open on this thread")]
    Nested,
    /// The database server cannot be reached or did not answer; nothing was committed by the
    /// failed call (a commit whose answer was lost is found, or not, by reading again).
    #[error("the state database cannot be reached: {detail}. Requests are refused as temporary failures until it is back")]
    Unavailable {
        /// The driver's error.
        detail: String,
    },
    /// Another wardend took the lease over: this one may never commit or answer again.
    #[error("this wardend's lease (epoch {epoch}) was taken over by {by}: it commits and answers nothing more and stops; its supervisor starts it again as a standby")]
    Deposed {
        /// The epoch this process held.
        epoch: u64,
        /// Who holds the lease now.
        by: String,
    },
    /// The lease was not renewed in time (the database was unreachable, or the process was
    /// paused): nothing is committed or answered until a renewal succeeds.
    #[error("this wardend's lease (epoch {epoch}) has not been renewed for {since:?}; nothing is committed or answered until a renewal reaches the database")]
    LeaseLapsed {
        /// The epoch this process holds.
        epoch: u64,
        /// Since the last successful renewal.
        since: std::time::Duration,
    },
    /// A write to a shared database by a process that does not hold its lease.
    #[error("this process does not hold the database's lease, so it may not write; wait until it is active (or stop the active wardend first)")]
    NoLease,
    /// The policy counts a limit across a fleet, and this state database holds one wardend's
    /// state only.
    #[error("the policy counts a limit across a fleet (scope = \"fleet\"), but this wardend is not a fleet member: its state is not on a fleet's PostgreSQL database. Configure [fleet] name and member with store.backend = \"postgres\", or give the limit scope = \"node\"")]
    NoFleet,
    /// This wardend may not serve as the fleet member it is configured as.
    #[error("this wardend does not serve as a fleet member: {0}")]
    NotMember(String),
    /// Memory could not be brought back to the committed state after a failed commit.
    #[error("after a failed commit, the state in memory could not be reloaded from the database: {detail}. The request is refused; the reload is tried again at the next one")]
    Unrestored {
        /// Why the reload failed.
        detail: String,
    },
}

/// Which wardend this process is on a database shared for failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the lease; serves nothing.
    Standby,
    /// Holds the lease: the only one that commits and answers.
    Active,
    /// Held the lease and lost it to another wardend: commits and answers nothing, for good.
    Deposed,
}

impl Role {
    /// The name in status, metrics and events.
    pub fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Active => "active",
            Role::Deposed => "deposed",
        }
    }
}

/// The lease as this process holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Active, standby or deposed.
    pub role: Role,
    /// The epoch this process holds or held (0: never held).
    pub epoch: u64,
    /// Since the last successful renewal, by this process's clock.
    pub renewed_ago: Option<std::time::Duration>,
    /// Wardends this one took the lease from that have since said they stopped (at least a
    /// second ago).
    pub predecessors_gone: u64,
}

/// Writes staged for one commit: per namespace and key, the new value or a deletion.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    ops: BTreeMap<(Namespace, Vec<u8>), Option<Vec<u8>>>,
    /// A fleet's database only: members' shares of the fleet's room, by member (see
    /// [`Store::lock_grant`]).
    grants: BTreeMap<String, Vec<u8>>,
}

impl Batch {
    /// Stage `value` under `key`.
    pub fn put(&mut self, ns: Namespace, key: Vec<u8>, value: Vec<u8>) {
        self.ops.insert((ns, key), Some(value));
    }

    /// Stage the removal of `key`.
    pub fn delete(&mut self, ns: Namespace, key: Vec<u8>) {
        self.ops.insert((ns, key), None);
    }

    /// The staged operations, in key order (`None` = delete).
    pub fn iter(&self) -> impl Iterator<Item = (Namespace, &[u8], Option<&[u8]>)> {
        self.ops
            .iter()
            .map(|((ns, k), v)| (*ns, k.as_slice(), v.as_deref()))
    }

    /// Operations staged.
    pub fn len(&self) -> usize {
        self.ops.len() + self.grants.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.grants.is_empty()
    }

    /// Stage member `member`'s share of the fleet's room.
    pub fn put_grant(&mut self, member: &str, value: Vec<u8>) {
        self.grants.insert(member.to_string(), value);
    }

    /// The members' shares staged, by member.
    pub fn grants(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.grants.iter().map(|(m, v)| (m.as_str(), v.as_slice()))
    }

    fn get(&self, ns: Namespace, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        // BTreeMap<(Namespace, Vec<u8>)> cannot be queried with a borrowed slice; the key copy
        // is small next to the database read it saves.
        self.ops.get(&(ns, key.to_vec()))
    }

    fn range<'a>(
        &'a self,
        ns: Namespace,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a {
        self.ops
            .range((ns, prefix.to_vec())..)
            .take_while(move |((n, k), _)| *n == ns && k.starts_with(prefix))
            .map(|((_, k), v)| (k, v))
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A database engine under Warden. Reads see committed state only; [`Backend::commit`] applies a
/// whole batch or nothing and returns only when it is durable (data and file metadata on stable
/// storage).
pub trait Backend: Send + Sync {
    /// The value under `key`.
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// The entry with the greatest key starting with `prefix`.
    fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError>;
    /// Apply `batch` atomically and durably.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Apply `batch` atomically, visible to reads at once; durable only after a later
    /// [`Backend::sync`] returns. An engine without a cheaper split makes it durable here.
    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        self.commit(batch)
    }
    /// Make every batch applied so far durable. Once it fails, no later apply may succeed until
    /// a restart has read what is really on disk.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Bytes the database occupies on disk, where the engine can tell.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
    /// Time spent in each step of committing so far, where the engine measures it.
    fn timings(&self) -> Vec<Timing> {
        Vec::new()
    }
    /// Whether this process may answer now. Checked by every commit (an empty one too, whose
    /// answer may rest on what it read) before its answer may leave: a backend shared by
    /// several wardends refuses once this process's lease has lapsed or been taken over.
    fn fence(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The lease, on a backend shared for failover; `None` on a single-node one.
    fn lease(&self) -> Option<LeaseStatus> {
        None
    }
    /// Whether this is a fleet's database (the shared namespaces are the fleet's).
    fn is_fleet(&self) -> bool {
        false
    }
    /// On a fleet's database: take the fleet's lock for the open transaction (held until its
    /// batch is applied or [`Backend::abandon`]ed) and, with `since`, return the shared rows
    /// written after it (see [`Shared`]). A backend of one wardend's state has no fleet.
    fn lock_shared(&self, since: Option<u64>) -> Result<Shared, StoreError> {
        let _ = since;
        Err(StoreError::NoFleet)
    }
    /// The fleet rows written since `since`, without taking the lock (a start, a reload).
    fn read_shared(&self, since: u64) -> Result<Shared, StoreError> {
        let _ = since;
        Err(StoreError::NoFleet)
    }
    /// The open transaction was discarded: release what [`Backend::lock_shared`] holds.
    fn abandon(&self) {}
    /// On a fleet's database: open the transaction's block by locking this member's share of
    /// the fleet's room (not the fleet's lock: other members decide meanwhile), and read the
    /// shared rows written after `since` in the same round trip. Returns the share, if any.
    fn lock_grant(&self, since: u64) -> Result<(Option<Vec<u8>>, Shared), StoreError> {
        let _ = since;
        Err(StoreError::NoFleet)
    }
    /// On a fleet's database, under the fleet's lock: every member's share, locked (waiting
    /// for a member spending from its share to commit).
    fn lock_grants(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Err(StoreError::NoFleet)
    }
    /// On a fleet's database: the members that have joined, each bound to its node and seed.
    fn fleet_members(&self) -> Result<Vec<MemberRow>, StoreError> {
        Err(StoreError::NoFleet)
    }
}

/// A member of a fleet as the fleet's database binds it: a name to one node and one seed, for
/// good (see `wardenctl fleet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// Its name.
    pub name: String,
    /// The node id it is bound to.
    pub node_id: String,
    /// The id of the sealed seed it is bound to.
    pub seed_id: String,
    /// When it first joined (Unix seconds, the server's clock).
    pub joined_at: u64,
    /// When it last started (Unix seconds).
    pub seen_at: u64,
}

/// The fleet's rows written since a point, and the point they bring the reader to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    /// The fleet's commit count when they were read: pass it as `since` next time.
    pub seq: u64,
    /// (namespace, key, value) of every fleet row written after `since` and still there.
    pub rows: Vec<(Namespace, Vec<u8>, Vec<u8>)>,
    /// Every member's share of the fleet's room, read in the same snapshot as `rows` (`None`
    /// when nothing was read).
    pub grants: Option<Vec<(String, Vec<u8>)>>,
}

/// Total time and count of one step of the backend's commits (for metrics and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The step: "write", "flush" or "fsync" for sled; "write" or "fdatasync" for the log.
    pub step: &'static str,
    /// Nanoseconds spent in it, in total.
    pub nanos: u64,
    /// Times it ran.
    pub count: u64,
}

type Hook = Box<dyn FnOnce() + Send>;

/// Restores in-memory state from the committed state (see [`Store::set_on_abort`]).
type AbortHandler = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Default)]
struct Slot {
    owner: Option<ThreadId>,
    /// The fleet's lock is held by this transaction (a fleet's database only).
    fleet_locked: bool,
    /// This member's share of the fleet's room is locked by this transaction, and the fleet's
    /// lock is not ([`Store::lock_grant`]).
    grant_locked: bool,
    /// The fleet's seq this transaction brought memory to ([`Store::sync_shared`]).
    synced_at: Option<u64>,
    batch: Batch,
    after_apply: Vec<Hook>,
    after_commit: Vec<Hook>,
}

/// How far the applied batches have reached stable storage. Batches are numbered in the order
/// they were applied (under the slot).
#[derive(Default)]
struct Durability {
    /// The number of the last batch applied.
    applied: u64,
    /// Every batch up to this number is durable.
    durable: u64,
    /// A sync is running (its caller will wake the others).
    syncing: bool,
    /// A sync failed: nothing applied after `durable` will ever be.
    failed: Option<StoreError>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    slot: Mutex<Slot>,
    free: Condvar,
    durability: Mutex<Durability>,
    synced: Condvar,
    commits: AtomicU64,
    aborts: AtomicU64,
    on_abort: Mutex<Option<AbortHandler>>,
    restore_pending: std::sync::atomic::AtomicBool,
    /// Threads waiting in [`Store::begin`] for the slot (for tests that order a race).
    waiting: AtomicU64,
    /// The fleet's seq memory is current to (see [`Store::sync_shared`]); 0 after a discarded
    /// transaction, when memory is reloaded whole.
    shared_seq: AtomicU64,
}

/// The backends that keep state in a local directory (`data_dir/state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalBackend {
    /// sled 0.34: two device waits per commit; the default before Warden's log existed.
    Sled,
    /// Warden's append-only log ([`log::LogBackend`]): one device wait per commit, the default.
    Log,
}

impl LocalBackend {
    /// The backend an operator names (`store.backend`), if it is a local one.
    pub fn named(name: &str) -> Option<LocalBackend> {
        match name {
            "sled" => Some(LocalBackend::Sled),
            "log" => Some(LocalBackend::Log),
            _ => None,
        }
    }

    /// Its name, as `store.backend` and `wardenctl migrate --from` spell it.
    pub fn name(self) -> &'static str {
        match self {
            LocalBackend::Sled => "sled",
            LocalBackend::Log => "log",
        }
    }

    /// The backend for `dir` when none is named: the one it already holds, so an upgrade never
    /// starts from an empty state; a new directory gets the log.
    pub fn default_in(dir: &std::path::Path) -> LocalBackend {
        Self::in_dir(dir).unwrap_or(LocalBackend::Log)
    }

    /// What to tell the operator at start about running on this backend, if anything.
    pub fn advice(self) -> Option<&'static str> {
        match self {
            LocalBackend::Sled => Some("state in sled; Warden's append-only log (the default) commits with one device wait instead of two: `wardenctl migrate --from sled --to log` moves it while wardend is stopped"),
            LocalBackend::Log => None,
        }
    }

    /// Which local backend `dir` already holds, by the files each keeps (sled's `conf` and
    /// `db`, the log's `state.log`); `None` for a directory that holds neither, or none at all.
    pub fn in_dir(dir: &std::path::Path) -> Option<LocalBackend> {
        if dir.join("conf").exists() || dir.join("db").exists() {
            Some(LocalBackend::Sled)
        } else if dir.join(self::log::LOG).exists() {
            Some(LocalBackend::Log)
        } else {
            None
        }
    }
}

/// Warden's state: a backend and the transaction open on it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

/// A [`Store`] that does not keep it alive.
#[derive(Clone)]
pub struct WeakStore(std::sync::Weak<Inner>);

impl WeakStore {
    /// The store, while it is alive.
    pub fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

/// The staged writes of a transaction at one moment (see [`Store::savepoint`]).
#[derive(Debug)]
pub struct Savepoint(Batch, usize, usize);

/// An open transaction. [`Txn::commit`] makes everything staged durable; dropping it without
/// committing discards everything staged (the caller then restores its in-memory state from
/// the committed state).
#[must_use = "a transaction that is not committed is discarded"]
pub struct Txn {
    store: Store,
    open: bool,
}

impl Txn {
    /// Commit everything staged since [`Store::begin`], durably, then run the after-commit
    /// hooks (event delivery). On error nothing was made durable.
    pub fn commit(self) -> Result<(), StoreError> {
        self.commit_deferred()?.wait()
    }

    /// Apply everything staged and free the transaction slot for the next writer; the returned
    /// [`Durable`] says when it (and everything applied before it) is on stable storage. Nothing
    /// that depends on this transaction may leave the process before [`Durable::wait`] returns
    /// `Ok`. On error nothing was applied.
    pub fn commit_deferred(mut self) -> Result<Durable, StoreError> {
        self.open = false;
        self.store.finish(true)
    }

    /// Discard everything staged.
    pub fn abort(mut self) {
        self.open = false;
        let _ = self.store.finish(false);
    }
}

/// A committed transaction on its way to stable storage (see [`Txn::commit_deferred`]).
#[must_use = "a commit is durable only once `wait` returns Ok"]
pub struct Durable {
    store: Store,
    upto: u64,
    hooks: Vec<Hook>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("upto", &self.upto)
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Block until the transaction is durable (performing the sync if no other thread is),
    /// then run its after-commit hooks. An error means it never will be: its answer must not
    /// be sent, and the store accepts no more commits until a restart.
    pub fn wait(self) -> Result<(), StoreError> {
        self.store.wait_durable(self.upto)?;
        for hook in self.hooks {
            hook();
        }
        Ok(())
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.open {
            let _ = self.store.finish(false);
        }
    }
}

impl Store {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Store {
            inner: Arc::new(Inner {
                backend,
                slot: Mutex::new(Slot::default()),
                free: Condvar::new(),
                durability: Mutex::new(Durability::default()),
                synced: Condvar::new(),
                commits: AtomicU64::new(0),
                aborts: AtomicU64::new(0),
                on_abort: Mutex::new(None),
                restore_pending: Default::default(),
                waiting: AtomicU64::new(0),
                shared_seq: AtomicU64::new(0),
            }),
        }
    }

    /// Open the local state in `dir`: whichever local backend it already holds, or a new
    /// append-only log (the default) if it holds none.
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        Store::open_local(dir, LocalBackend::default_in(dir))
    }

    /// Open (or create) the local state in `dir` on `backend`.
    pub fn open_local(dir: &std::path::Path, backend: LocalBackend) -> Result<Self, StoreError> {
        match backend {
            LocalBackend::Sled => Store::open_sled(dir),
            LocalBackend::Log => Store::open_log(dir),
        }
    }

    /// Open (or create) a sled database in `dir` ([`sled::SledBackend`]).
    pub fn open_sled(dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Store::new(Arc::new(self::sled::SledBackend::open(dir)?)))
    }

    /// Open (or create) Warden's append-only log in `dir` ([`log::LogBackend`]).
    pub fn open_log(dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Store::new(Arc::new(self::log::LogBackend::open(dir)?)))
    }

    /// A handle that does not keep the store alive (for callbacks the store itself holds).
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// The backend, for a store over the same database (a restart in tests).
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.inner.backend.clone()
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.inner.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open this thread's transaction, waiting while another thread holds one.
    pub fn begin(&self) -> Result<Txn, StoreError> {
        let me = std::thread::current().id();
        let mut slot = self.slot();
        loop {
            match slot.owner {
                None => break,
                Some(o) if o == me => return Err(StoreError::Nested),
                Some(_) => {
                    self.inner.waiting.fetch_add(1, Ordering::SeqCst);
                    slot = self
                        .inner
                        .free
                        .wait(slot)
                        .unwrap_or_else(|p| p.into_inner());
                    self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        slot.owner = Some(me);
        slot.fleet_locked = false;
        slot.grant_locked = false;
        slot.synced_at = None;
        slot.batch = Batch::default();
        slot.after_apply.clear();
        slot.after_commit.clear();
        // A wardend whose lease lapsed or was taken does not even start a request: nothing it
        // computed could be committed or answered.
        if let Err(e) = self.inner.backend.fence() {
            slot.owner = None;
            drop(slot);
            self.inner.free.notify_one();
            return Err(e);
        }
        if self.inner.restore_pending.load(Ordering::SeqCst) {
            // An earlier failed commit left memory ahead of the database and the reload failed
            // (the database was down): reload before anything runs on that memory.
            if let Err(detail) = self.run_abort_handler(slot) {
                let mut slot = self.slot();
                slot.owner = None;
                drop(slot);
                self.inner.free.notify_one();
                return Err(StoreError::Unrestored { detail });
            }
        }
        Ok(Txn {
            store: self.clone(),
            open: true,
        })
    }

    fn finish(&self, commit: bool) -> Result<Durable, StoreError> {
        let mut slot = self.slot();
        let batch = std::mem::take(&mut slot.batch);
        let applied_hooks = std::mem::take(&mut slot.after_apply);
        let hooks = std::mem::take(&mut slot.after_commit);
        // The batch is applied while this thread still owns the slot, so batches are applied in
        // the order their transactions ran and no writer stages on state not yet applied.
        let result = if commit {
            let r = self.inner.backend.fence().and_then(|()| {
                if batch.is_empty() {
                    // Nothing to write: a fleet lock taken for a decision that wrote nothing
                    // is released.
                    self.inner.backend.abandon();
                    Ok(())
                } else {
                    self.inner.backend.apply(&batch)
                }
            });
            match &r {
                Ok(()) => self.inner.commits.fetch_add(1, Ordering::Relaxed),
                Err(_) => {
                    // A fleet lock taken for this batch is not held past its failure.
                    self.inner.backend.abandon();
                    self.inner.aborts.fetch_add(1, Ordering::Relaxed)
                }
            };
            if r.is_ok() {
                // Still the owner: the next writer, and any abort that restores memory from the
                // committed copies, sees them updated.
                for hook in applied_hooks {
                    hook();
                }
            }
            r
        } else {
            self.inner.aborts.fetch_add(1, Ordering::Relaxed);
            self.inner.backend.abandon();
            Ok(())
        };
        let upto = {
            let mut d = self.durability();
            if commit && result.is_ok() && !batch.is_empty() {
                d.applied += 1;
            }
            d.applied
        };
        let failed = !commit || result.is_err();
        if failed {
            // Memory is reloaded whole from what is committed.
            self.inner.shared_seq.store(0, Ordering::SeqCst);
        } else if let Some(at) = slot.synced_at {
            // Memory read every shared row up to `at` under the lock, and this commit wrote the
            // next seq's rows (if it wrote any) from that memory.
            let wrote = batch.iter().any(|(ns, _, _)| ns.is_shared());
            let seq = at + u64::from(wrote && self.inner.backend.is_fleet());
            self.inner.shared_seq.store(seq, Ordering::SeqCst);
        }
        slot.fleet_locked = false;
        slot.grant_locked = false;
        slot.synced_at = None;
        if failed {
            // Memory may be ahead of disk now. Bring it back (the abort handler reads committed
            // state) while this thread still owns the slot, so no other writer runs on it.
            let _ = self.run_abort_handler(slot);
            slot = self.slot();
        }
        slot.owner = None;
        drop(slot);
        self.inner.free.notify_one();
        result.map(|()| Durable {
            store: self.clone(),
            upto,
            hooks: if commit { hooks } else { Vec::new() },
        })
    }

    fn durability(&self) -> MutexGuard<'_, Durability> {
        self.inner
            .durability
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Run the abort handler, if any, with the slot released for its reads (the caller still
    /// owns it: `owner` is unchanged, so no other writer begins). A handler that cannot read
    /// the committed state leaves the reload pending for the next [`Store::begin`].
    fn run_abort_handler(&self, slot: MutexGuard<'_, Slot>) -> Result<(), String> {
        let handler = self
            .inner
            .on_abort
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        drop(slot);
        let r = handler.map_or(Ok(()), |h| h());
        self.inner
            .restore_pending
            .store(r.is_err(), Ordering::SeqCst);
        r
    }

    /// Block until every batch up to `upto` is durable; the first waiter that finds no sync
    /// running performs one for every batch applied by then.
    fn wait_durable(&self, upto: u64) -> Result<(), StoreError> {
        let mut d = self.durability();
        loop {
            if d.durable >= upto {
                return Ok(());
            }
            if let Some(e) = &d.failed {
                return Err(e.clone());
            }
            if d.syncing {
                d = self.inner.synced.wait(d).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            d.syncing = true;
            let target = d.applied;
            drop(d);
            let r = self.inner.backend.sync();
            d = self.durability();
            d.syncing = false;
            match r {
                Ok(()) => d.durable = d.durable.max(target),
                Err(e) => {
                    d.failed = Some(e);
                    drop(d);
                    self.inner.synced.notify_all();
                    // What is in memory may be ahead of what will survive: restore it, as a
                    // writer, before anyone else writes.
                    let slot = self.claim_slot();
                    let _ = self.run_abort_handler(slot);
                    let mut slot = self.slot();
                    slot.owner = None;
                    drop(slot);
                    self.inner.free.notify_one();
                    d = self.durability();
                    continue;
                }
            }
            self.inner.synced.notify_all();
        }
    }

    /// Wait for the transaction slot and take it (no batch is staged in it).
    fn claim_slot(&self) -> MutexGuard<'_, Slot> {
        let me = std::thread::current().id();
        let mut slot = self.slot();
        while slot.owner.is_some() && slot.owner != Some(me) {
            slot = self
                .inner
                .free
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
        slot.owner = Some(me);
        slot
    }

    /// What this thread's transaction has staged so far, to return to with
    /// [`Store::rollback_to`] (a step of a request that fails after staging part of its writes).
    /// Empty outside a transaction.
    pub fn savepoint(&self) -> Savepoint {
        let slot = self.slot();
        if slot.owner == Some(std::thread::current().id()) {
            Savepoint(
                slot.batch.clone(),
                slot.after_apply.len(),
                slot.after_commit.len(),
            )
        } else {
            Savepoint(Batch::default(), 0, 0)
        }
    }

    /// Discard what this thread's transaction staged after `savepoint`, and the after-commit
    /// hooks registered since (their work is gone with it).
    pub fn rollback_to(&self, savepoint: Savepoint) {
        let mut slot = self.slot();
        if slot.owner == Some(std::thread::current().id()) {
            slot.batch = savepoint.0;
            slot.after_apply.truncate(savepoint.1);
            slot.after_commit.truncate(savepoint.2);
        }
    }

    /// What to run when a transaction is discarded or its commit fails, before any other
    /// writer may begin: the owner of in-memory state (the core) restores it from committed
    /// state here. It runs on the aborting thread, which may read the store but not write. An
    /// `Err` (the committed state could not be read) makes the next [`Store::begin`] run it
    /// again, and refuse, until it succeeds.
    pub fn set_on_abort(&self, handler: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        *self
            .inner
            .on_abort
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    /// Whether this thread holds the open transaction.
    pub fn in_transaction(&self) -> bool {
        self.slot().owner == Some(std::thread::current().id())
    }

    /// Run `f` inside this thread's open transaction, or, when there is none, inside a new one
    /// that is committed if `f` succeeds (and discarded if it fails).
    pub fn write<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if self.in_transaction() {
            return f();
        }
        let txn = self.begin()?;
        let out = f()?;
        txn.commit()?;
        Ok(out)
    }

    /// Run `hook` when the open transaction's batch is applied, before any other writer may
    /// begin and before any later abort restores memory (never if it is discarded); at once
    /// when this thread has no open transaction. This is where the owner of in-memory state
    /// moves its *committed* copies: an abort of the next transaction, while this one still
    /// waits for its sync, restores from them, and must not undo this one. `hook` must not
    /// touch the store. (A sync that fails afterwards fails every later commit, so nothing is
    /// ever answered from state that did not become durable.)
    pub fn after_apply(&self, hook: impl FnOnce() + Send + 'static) {
        let me = std::thread::current().id();
        let mut slot = self.slot();
        if slot.owner == Some(me) {
            slot.after_apply.push(Box::new(hook));
        } else {
            drop(slot);
            hook();
        }
    }

    /// Run `hook` once the open transaction commits (never if it is discarded); at once when
    /// this thread has no open transaction.
    pub fn after_commit(&self, hook: impl FnOnce() + Send + 'static) {
        let me = std::thread::current().id();
        let mut slot = self.slot();
        if slot.owner == Some(me) {
            slot.after_commit.push(Box::new(hook));
        } else {
            drop(slot);
            hook();
        }
    }

    fn stage(
        &self,
        ns: Namespace,
        what: &'static str,
        f: impl FnOnce(&mut Batch),
    ) -> Result<(), StoreError> {
        let me = std::thread::current().id();
        let mut slot = self.slot();
        if slot.owner != Some(me) {
            return Err(StoreError::NoTransaction(what));
        }
        if ns.is_shared() {
            slot = self.fleet_lock_in(slot)?;
        }
        f(&mut slot.batch);
        Ok(())
    }

    /// On a fleet's database, take the fleet's lock for the transaction `slot` belongs to,
    /// unless it holds it.
    fn fleet_lock_in<'a>(
        &'a self,
        mut slot: MutexGuard<'a, Slot>,
    ) -> Result<MutexGuard<'a, Slot>, StoreError> {
        if slot.fleet_locked || !self.inner.backend.is_fleet() {
            return Ok(slot);
        }
        if slot.grant_locked {
            // Spending from a share takes no fleet lock; one taken now, while the share's row
            // is held, could wait on a member that waits on that row. The caller releases the
            // share first (Store::release_grant).
            return Err(StoreError::Io {
                op: "take the fleet's lock",
                detail: "this transaction holds its share of the fleet's room; release it before taking the fleet's lock".into(),
            });
        }
        drop(slot);
        self.inner.backend.lock_shared(None)?;
        slot = self.slot();
        slot.fleet_locked = true;
        Ok(slot)
    }

    /// On a fleet's database, take the fleet's lock for this thread's transaction, so what it
    /// reads of the shared namespaces and what it writes on that reading are one step in the
    /// fleet's order (every read or write of a shared namespace in a transaction takes it
    /// anyway). Nothing to do elsewhere.
    pub fn lock_fleet(&self) -> Result<(), StoreError> {
        let slot = self.slot();
        if slot.owner != Some(std::thread::current().id()) {
            return Err(StoreError::NoTransaction("fleet lock"));
        }
        self.fleet_lock_in(slot).map(drop)
    }

    /// A read of a shared namespace inside a transaction on a fleet's database takes the
    /// fleet's lock first: what the transaction then writes rests on what no other member can
    /// change before it commits. Reads outside a transaction (reports) take no lock.
    fn lock_to_read(&self, ns: Namespace) -> Result<(), StoreError> {
        if !ns.is_shared() || !self.inner.backend.is_fleet() {
            return Ok(());
        }
        let slot = self.slot();
        if slot.owner != Some(std::thread::current().id()) || slot.grant_locked {
            // Within a member's share nothing shared is written, so what is read need not stay
            // put until the commit: the committed rows, without the fleet's lock.
            return Ok(());
        }
        self.fleet_lock_in(slot).map(drop)
    }

    /// Whether this thread's transaction holds its share of the fleet's room (and so may not
    /// write the fleet's shared rows).
    pub fn holds_share(&self) -> bool {
        let slot = self.slot();
        slot.owner == Some(std::thread::current().id()) && slot.grant_locked
    }

    /// Whether this thread's transaction already holds the fleet's lock or its share (and so
    /// cannot lock its share now).
    pub fn in_fleet_block(&self) -> bool {
        let slot = self.slot();
        slot.owner == Some(std::thread::current().id()) && (slot.fleet_locked || slot.grant_locked)
    }

    /// Whether this thread's transaction may write the fleet's shared rows: it holds the
    /// fleet's lock, or it is not on a fleet's database (where shared rows are its own).
    pub fn holds_fleet_lock(&self) -> bool {
        if !self.inner.backend.is_fleet() {
            return true;
        }
        let slot = self.slot();
        slot.owner == Some(std::thread::current().id()) && !slot.grant_locked
    }

    /// Whether the shared namespaces are a fleet's.
    pub fn is_fleet(&self) -> bool {
        self.inner.backend.is_fleet()
    }

    /// Stage `value` under `key` in this thread's transaction.
    pub fn put(&self, ns: Namespace, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.stage(ns, ns.name(), |b| b.put(ns, key, value))
    }

    /// Stage the removal of `key` in this thread's transaction.
    pub fn delete(&self, ns: Namespace, key: Vec<u8>) -> Result<(), StoreError> {
        self.stage(ns, ns.name(), |b| b.delete(ns, key))
    }

    /// Take the fleet's lock for this thread's transaction and return the shared rows other
    /// members (or this one, before a reload) committed since memory last took them: the
    /// owner of memory applies them before it decides. Every other member's transaction on
    /// the shared rows waits until this one's batch is applied or it is discarded.
    pub fn sync_shared(&self) -> Result<Shared, StoreError> {
        let me = std::thread::current().id();
        {
            let slot = self.slot();
            if slot.owner != Some(me) {
                return Err(StoreError::NoTransaction("fleet lock"));
            }
            if let Some(at) = slot.synced_at {
                // Synced already, and the lock held since: nothing new can have landed.
                return Ok(Shared {
                    seq: at,
                    rows: Vec::new(),
                    grants: None,
                });
            }
        }
        let since = self.inner.shared_seq.load(Ordering::SeqCst);
        let shared = self.inner.backend.lock_shared(Some(since))?;
        let mut slot = self.slot();
        slot.fleet_locked = true;
        slot.synced_at = Some(shared.seq);
        Ok(shared)
    }

    /// On a fleet's database: lock this member's share of the fleet's room for this thread's
    /// transaction, without the fleet's lock, and return it with the shared rows committed since
    /// memory last took them (as [`Store::sync_shared`] does). A member spending within its
    /// share waits for no other member; one that needs more releases it
    /// ([`Store::release_grant`]) and takes the fleet's lock.
    pub fn lock_grant(&self) -> Result<(Option<Vec<u8>>, Shared), StoreError> {
        {
            let slot = self.slot();
            if slot.owner != Some(std::thread::current().id()) {
                return Err(StoreError::NoTransaction("fleet share"));
            }
            if slot.fleet_locked || slot.grant_locked {
                return Err(StoreError::Io {
                    op: "lock the fleet share",
                    detail: "this transaction already holds the fleet's lock or its share".into(),
                });
            }
        }
        let since = self.inner.shared_seq.load(Ordering::SeqCst);
        let (grant, shared) = self.inner.backend.lock_grant(since)?;
        let mut slot = self.slot();
        slot.grant_locked = true;
        slot.synced_at = Some(shared.seq);
        Ok((grant, shared))
    }

    /// Release the share [`Store::lock_grant`] locked: the transaction then takes the fleet's
    /// lock as any other does. Refused once a spend from the share is staged: the row's lock is
    /// what keeps another member from settling the share without that spend.
    pub fn release_grant(&self) -> Result<(), StoreError> {
        let mut slot = self.slot();
        if slot.owner != Some(std::thread::current().id()) || !slot.grant_locked {
            return Ok(());
        }
        if slot.batch.grants().next().is_some() {
            return Err(StoreError::Io {
                op: "release the fleet share",
                detail: "this transaction spent from its share; a second decision in it cannot take the fleet's lock".into(),
            });
        }
        slot.grant_locked = false;
        // What was read stays in memory (applying it again is harmless); the fleet's lock
        // reads from the same point.
        slot.synced_at = None;
        drop(slot);
        self.inner.backend.abandon();
        Ok(())
    }

    /// Under the fleet's lock (taken if not held): every member's share of the fleet's room,
    /// locked until the transaction ends.
    pub fn lock_grants(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let slot = self.slot();
        if slot.owner != Some(std::thread::current().id()) {
            return Err(StoreError::NoTransaction("fleet shares"));
        }
        let slot = self.fleet_lock_in(slot)?;
        drop(slot);
        let mut rows: BTreeMap<String, Vec<u8>> =
            self.inner.backend.lock_grants()?.into_iter().collect();
        // What this transaction staged is what the shares are now (as `get` reads them).
        let slot = self.slot();
        for (m, v) in slot.batch.grants() {
            rows.insert(m.to_string(), v.to_vec());
        }
        Ok(rows.into_iter().collect())
    }

    /// Stage member `member`'s share of the fleet's room: this member's own under its share's
    /// lock or the fleet's, another member's only under the fleet's lock.
    pub fn put_grant(&self, member: &str, value: Vec<u8>) -> Result<(), StoreError> {
        if !self.inner.backend.is_fleet() {
            return Err(StoreError::NoFleet);
        }
        let mut slot = self.slot();
        if slot.owner != Some(std::thread::current().id()) {
            return Err(StoreError::NoTransaction("fleet share"));
        }
        if !slot.fleet_locked && !slot.grant_locked {
            return Err(StoreError::Io {
                op: "write a fleet share",
                detail: "neither the share nor the fleet's lock is held".into(),
            });
        }
        slot.batch.put_grant(member, value);
        Ok(())
    }

    /// The fleet's members as its database binds them (`NoFleet` outside a fleet).
    pub fn fleet_members(&self) -> Result<Vec<MemberRow>, StoreError> {
        self.inner.backend.fleet_members()
    }

    /// Every shared row, without the lock (to load memory whole).
    pub fn read_shared(&self) -> Result<Shared, StoreError> {
        self.inner.backend.read_shared(0)
    }

    /// The rows [`Store::sync_shared`] returned could not all be taken into memory: forget
    /// that this transaction synced, so the next sync reads every shared row again.
    pub fn unsync_shared(&self) {
        let mut slot = self.slot();
        if slot.owner == Some(std::thread::current().id()) {
            slot.synced_at = None;
        }
        self.inner.shared_seq.store(0, Ordering::SeqCst);
    }

    /// The value under `key`: this thread's staged write if any, else the committed value.
    pub fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.lock_to_read(ns)?;
        {
            let slot = self.slot();
            if slot.owner == Some(std::thread::current().id()) {
                if let Some(staged) = slot.batch.get(ns, key) {
                    return Ok(staged.clone());
                }
            }
        }
        self.inner.backend.get(ns, key)
    }

    /// Every entry under `prefix`, in key order, with this thread's staged writes applied.
    pub fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.lock_to_read(ns)?;
        let committed = self.inner.backend.scan(ns, prefix)?;
        let slot = self.slot();
        if slot.owner != Some(std::thread::current().id()) {
            return Ok(committed);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed.into_iter().collect();
        for (k, v) in slot.batch.range(ns, prefix) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// The entry with the greatest key under `prefix`, with this thread's staged writes applied.
    pub fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.lock_to_read(ns)?;
        let staged = {
            let slot = self.slot();
            if slot.owner == Some(std::thread::current().id()) {
                slot.batch
                    .range(ns, prefix)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            } else {
                Vec::new()
            }
        };
        if staged.iter().all(|(_, v)| v.is_some()) {
            let committed = self.inner.backend.last(ns, prefix)?;
            let top = staged
                .into_iter()
                .next_back()
                .map(|(k, v)| (k, v.expect("checked")));
            return Ok(match (committed, top) {
                (Some(c), Some(s)) => Some(if s.0 >= c.0 { s } else { c }),
                (c, s) => c.or(s),
            });
        }
        // A staged deletion may remove the committed last entry: merge the whole prefix.
        Ok(self.scan(ns, prefix)?.pop())
    }

    /// Transactions committed by this process (empty ones included).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Transactions discarded, or whose commit failed.
    pub fn aborts(&self) -> u64 {
        self.inner.aborts.load(Ordering::Relaxed)
    }

    /// Whether this process may answer now (see [`Backend::fence`]).
    pub fn fence(&self) -> Result<(), StoreError> {
        self.inner.backend.fence()
    }

    /// The lease, on a backend shared for failover.
    pub fn lease(&self) -> Option<LeaseStatus> {
        self.inner.backend.lease()
    }

    /// Bytes on disk, where the backend can tell.
    pub fn size_on_disk(&self) -> Option<u64> {
        self.inner.backend.size_on_disk()
    }

    /// The backend's commit timings.
    pub fn timings(&self) -> Vec<Timing> {
        self.inner.backend.timings()
    }

    /// Threads waiting to begin a transaction while another holds the slot.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn writers_waiting(&self) -> u64 {
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Write `value` under `key` behind Warden's back, as an attacker with the database would.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn tamper(&self, ns: Namespace, key: &[u8], value: Option<&[u8]>) {
        let mut b = Batch::default();
        match value {
            Some(v) => b.put(ns, key.to_vec(), v.to_vec()),
            None => b.delete(ns, key.to_vec()),
        }
        self.inner.backend.commit(&b).expect("tamper commit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn a_transaction_reads_its_own_writes_and_others_see_them_only_after_commit() {
        let (_d, s) = store();
        let txn = s.begin().unwrap();
        s.put(Namespace::Meta, b"k".to_vec(), b"v".to_vec())
            .unwrap();
        assert_eq!(s.get(Namespace::Meta, b"k").unwrap(), Some(b"v".to_vec()));
        let other = s.clone();
        let seen = std::thread::spawn(move || other.get(Namespace::Meta, b"k").unwrap())
            .join()
            .unwrap();
        assert_eq!(seen, None, "another thread must not see uncommitted writes");
        txn.commit().unwrap();
        let other = s.clone();
        let seen = std::thread::spawn(move || other.get(Namespace::Meta, b"k").unwrap())
            .join()
            .unwrap();
        assert_eq!(seen, Some(b"v".to_vec()));
        assert_eq!(s.commits(), 1);
    }

    #[test]
    fn a_dropped_transaction_writes_nothing_and_hooks_do_not_run() {
        let (_d, s) = store();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let _txn = s.begin().unwrap();
            s.put(Namespace::Velocity, b"a".to_vec(), b"1".to_vec())
                .unwrap();
            let ran = ran.clone();
            s.after_commit(move || ran.store(true, Ordering::SeqCst));
        }
        assert_eq!(s.get(Namespace::Velocity, b"a").unwrap(), None);
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(s.aborts(), 1);
    }

    #[test]
    fn writes_outside_a_transaction_are_refused() {
        let (_d, s) = store();
        let e = s
            .put(Namespace::Audit, b"x".to_vec(), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("audit write was attempted outside a transaction"),
            "{e}"
        );
        let _t = s.begin().unwrap();
        assert!(matches!(s.begin(), Err(StoreError::Nested)));
    }

    #[test]
    fn scans_and_last_merge_staged_puts_and_deletes() {
        let (_d, s) = store();
        s.write(|| {
            for k in [b"p1", b"p2", b"p3"] {
                s.put(Namespace::Approvals, k.to_vec(), k.to_vec())?;
            }
            s.put(Namespace::Audit, b"p9".to_vec(), vec![])?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
        let _t = s.begin().unwrap();
        s.delete(Namespace::Approvals, b"p3".to_vec()).unwrap();
        s.put(Namespace::Approvals, b"p0".to_vec(), b"new".to_vec())
            .unwrap();
        let keys: Vec<Vec<u8>> = s
            .scan(Namespace::Approvals, b"p")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"p0".to_vec(), b"p1".to_vec(), b"p2".to_vec()]);
        assert_eq!(
            s.last(Namespace::Approvals, b"p").unwrap().unwrap().0,
            b"p2".to_vec()
        );
        s.put(Namespace::Approvals, b"p5".to_vec(), b"x".to_vec())
            .unwrap();
        assert_eq!(
            s.last(Namespace::Approvals, b"p").unwrap().unwrap().0,
            b"p5".to_vec()
        );
    }

    #[test]
    fn the_abort_handler_runs_before_another_writer_may_begin() {
        let (_d, s) = store();
        let restored = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let restored = restored.clone();
            s.set_on_abort(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                restored.store(true, Ordering::SeqCst);
                Ok(())
            });
        }
        let txn = s.begin().unwrap();
        s.put(Namespace::Meta, b"x".to_vec(), vec![1]).unwrap();
        let (other, seen) = (s.clone(), restored.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _t = other.begin().unwrap();
            seen.load(Ordering::SeqCst)
        });
        drop(txn);
        assert!(
            t.join().unwrap(),
            "the next writer began only after memory was restored"
        );
        assert_eq!(s.get(Namespace::Meta, b"x").unwrap(), None);
    }

    #[test]
    fn memory_that_could_not_be_reloaded_is_reloaded_before_the_next_transaction_begins() {
        let (_d, s) = store();
        // The reload fails once (the database is out of reach), then works.
        let calls = Arc::new(AtomicU64::new(0));
        {
            let calls = calls.clone();
            s.set_on_abort(move || {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err("the database is out of reach".into())
                } else {
                    Ok(())
                }
            });
        }
        let txn = s.begin().unwrap();
        s.put(Namespace::Meta, b"x".to_vec(), vec![1]).unwrap();
        txn.abort();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Nothing may run on memory that is ahead of the database: the next begin reloads first.
        let txn = s.begin().unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "reloaded before the transaction began"
        );
        txn.commit().unwrap();
        let _t = s.begin().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "and only once");
    }

    #[test]
    fn a_transaction_is_refused_while_memory_cannot_be_reloaded() {
        let (_d, s) = store();
        s.set_on_abort(|| Err("the database is out of reach".into()));
        let txn = s.begin().unwrap();
        txn.abort();
        let e = s.begin().err().unwrap().to_string();
        assert!(
            e.contains("could not be reloaded") && e.contains("the database is out of reach"),
            "{e}"
        );
        assert!(
            !s.in_transaction(),
            "the refused begin holds no transaction slot"
        );
    }

    #[test]
    fn rolling_back_to_a_savepoint_drops_the_hooks_registered_since() {
        let (_d, s) = store();
        let ran = Arc::new(AtomicU64::new(0));
        let txn = s.begin().unwrap();
        let r = ran.clone();
        s.after_commit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let sp = s.savepoint();
        let r = ran.clone();
        s.after_commit(move || {
            r.fetch_add(10, Ordering::SeqCst);
        });
        s.put(Namespace::Meta, b"later".to_vec(), vec![]).unwrap();
        s.rollback_to(sp);
        txn.commit().unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "only the hook from before the savepoint"
        );
        assert_eq!(s.get(Namespace::Meta, b"later").unwrap(), None);
    }

    #[test]
    fn a_second_writer_waits_for_the_first_to_commit() {
        let (_d, s) = store();
        let txn = s.begin().unwrap();
        s.put(Namespace::Meta, b"n".to_vec(), b"1".to_vec())
            .unwrap();
        let other = s.clone();
        let t = std::thread::spawn(move || {
            other
                .write(|| {
                    let seen = other.get(Namespace::Meta, b"n")?;
                    other.put(Namespace::Meta, b"n".to_vec(), b"2".to_vec())?;
                    Ok::<_, StoreError>(seen)
                })
                .unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        txn.commit().unwrap();
        assert_eq!(
            t.join().unwrap(),
            Some(b"1".to_vec()),
            "the second writer ran after the first committed"
        );
        assert_eq!(s.get(Namespace::Meta, b"n").unwrap(), Some(b"2".to_vec()));
    }

    /// sled underneath, with a sync that takes `delay`, fails when told to, and records how
    /// many batches had been applied when each sync began.
    struct SlowSync {
        inner: self::sled::SledBackend,
        delay: std::time::Duration,
        applied: AtomicU64,
        syncs: Mutex<Vec<u64>>,
        fail_next: std::sync::atomic::AtomicBool,
        /// While true, a sync waits (after recording itself) until the test opens it.
        shut: Mutex<bool>,
        opened: Condvar,
    }

    impl SlowSync {
        fn shut(&self) {
            *self.shut.lock().unwrap() = true;
        }
        fn open(&self) {
            *self.shut.lock().unwrap() = false;
            self.opened.notify_all();
        }
    }

    impl Backend for SlowSync {
        fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(ns, key)
        }
        fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
            self.inner.scan(ns, prefix)
        }
        fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
            self.inner.last(ns, prefix)
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            self.apply(batch)?;
            self.sync()
        }
        fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
            self.inner.apply(batch)?;
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn sync(&self) -> Result<(), StoreError> {
            self.syncs
                .lock()
                .unwrap()
                .push(self.applied.load(Ordering::SeqCst));
            let mut shut = self.shut.lock().unwrap();
            while *shut {
                shut = self.opened.wait(shut).unwrap();
            }
            drop(shut);
            std::thread::sleep(self.delay);
            if self.fail_next.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Io {
                    op: "sync",
                    detail: "injected".into(),
                });
            }
            Backend::sync(&self.inner)
        }
    }

    fn slow(delay_ms: u64) -> (tempfile::TempDir, Arc<SlowSync>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SlowSync {
            inner: self::sled::SledBackend::open(dir.path()).unwrap(),
            delay: std::time::Duration::from_millis(delay_ms),
            applied: AtomicU64::new(0),
            syncs: Mutex::default(),
            fail_next: Default::default(),
            shut: Mutex::new(false),
            opened: Condvar::new(),
        });
        let store = Store::new(backend.clone());
        (dir, backend, store)
    }

    fn put_one(s: &Store, key: &str) -> Result<(), StoreError> {
        s.write(|| s.put(Namespace::Meta, key.as_bytes().to_vec(), vec![1]))
    }

    #[test]
    fn concurrent_commits_share_a_sync_and_each_returns_only_once_a_sync_covers_it() {
        // The first commit's sync is held open while five more commits apply behind it: they
        // must share one sync (not five), and none may return before a sync covering it ends.
        let (_d, b, s) = slow(0);
        b.shut();
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let commit = |i: u64| {
            let (s, opened) = (s.clone(), opened.clone());
            std::thread::spawn(move || {
                put_one(&s, &format!("k{i}")).unwrap();
                opened.load(Ordering::SeqCst)
            })
        };
        let first = commit(0);
        while b.syncs.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        let rest: Vec<_> = (1..6).map(commit).collect();
        while b.applied.load(Ordering::SeqCst) < 6 {
            std::thread::yield_now();
        }
        // Taking the slot once more waits until the sixth writer has finished its apply.
        s.begin().unwrap().abort();
        opened.store(true, Ordering::SeqCst);
        b.open();
        let returned_after_open: Vec<bool> = std::iter::once(first)
            .chain(rest)
            .map(|t| t.join().unwrap())
            .collect();
        assert!(
            returned_after_open.iter().all(|r| *r),
            "a commit returned while the sync that covers it was held: {returned_after_open:?}"
        );
        assert_eq!(
            *b.syncs.lock().unwrap(),
            vec![1, 6],
            "the five commits applied during the first sync share the second"
        );
    }

    #[test]
    fn a_commit_is_not_acknowledged_before_the_sync_that_covers_it_ends() {
        let (_d, b, s) = slow(80);
        let started = std::time::Instant::now();
        put_one(&s, "a").unwrap();
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(80),
            "commit returned before its sync finished"
        );
        assert_eq!(*b.syncs.lock().unwrap(), vec![1]);
    }

    #[test]
    fn a_transaction_that_wrote_nothing_waits_for_what_it_may_have_read() {
        // The write is applied (visible) and its sync held: a read-only transaction that saw it
        // must not return before that sync ends. Its commit is given half a second to return
        // early; a busy machine can only make the test miss a defect, never fail a correct one.
        let (_d, b, s) = slow(0);
        b.shut();
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || put_one(&s, "seen").unwrap())
        };
        while b.syncs.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let s = s.clone();
            std::thread::spawn(move || {
                let txn = s.begin().unwrap();
                let seen = s.get(Namespace::Meta, b"seen").unwrap();
                txn.commit().unwrap();
                tx.send(seen).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(500))
                .is_err(),
            "the empty commit returned while the write it read was not durable"
        );
        b.open();
        assert_eq!(rx.recv().unwrap(), Some(vec![1]));
        reader.join().unwrap();
        writer.join().unwrap();
    }

    #[test]
    fn a_failed_sync_fails_every_commit_not_yet_durable_and_every_later_one() {
        let (_d, b, s) = slow(10);
        let ran = Arc::new(AtomicU64::new(0));
        let restored = Arc::new(AtomicU64::new(0));
        {
            let restored = restored.clone();
            s.set_on_abort(move || {
                restored.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        }
        b.fail_next.store(true, Ordering::SeqCst);
        let txn = s.begin().unwrap();
        s.put(Namespace::Meta, b"lost".to_vec(), vec![1]).unwrap();
        let r = ran.clone();
        s.after_commit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let e = txn.commit().unwrap_err().to_string();
        assert!(e.contains("injected"), "{e}");
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "hooks of a lost commit never run"
        );
        assert!(
            restored.load(Ordering::SeqCst) >= 1,
            "in-memory state is restored"
        );
        let e = put_one(&s, "later").unwrap_err().to_string();
        assert!(e.contains("injected"), "a later commit fails too: {e}");
    }
}
