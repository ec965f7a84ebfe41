//! The high-availability backend: PostgreSQL shared by an active wardend and its standbys, with
//! a lease that fences every commit.
//!
//! Every namespace lives in one table (`warden_kv`, keyed by the namespace's byte and the key,
//! compared bytewise as sled compares them). A [`Backend::commit`] is one SQL statement, its own
//! implicit transaction, in one round trip: it locks the lease row `FOR SHARE` and writes the
//! batch only if the lease's epoch is this process's own and unexpired by the server's clock.
//! A commit that gets no answer has its server session ended before anything is read again
//! (see `Shared::settle`), so it cannot land after the store reloaded its memory. PostgreSQL's
//! `synchronous_commit` decides what "durable" means (on: flushed to this server's WAL; with
//! synchronous standbys, on theirs too), and `off` is refused at open. A takeover by another
//! wardend updates the lease row (a new epoch), so it waits for commits in flight and every later
//! commit of the old holder fails inside its own transaction.
//!
//! The database fences what is written; the process fences what is answered. Each renewal
//! records, by `CLOCK_BOOTTIME` (monotonic, and unlike std's `Instant` it keeps counting while
//! the host is suspended), when it was sent; the lease is held locally until
//! that instant plus the lease length minus a margin, which is never later than the server's
//! expiry. [`Backend::fence`] refuses once that deadline has passed, so a wardend that was
//! paused (SIGSTOP, a stalled VM, a long GC-like pause) and wakes up after a standby took over
//! answers nothing, even from memory, before it has renewed. A renewal or a commit that finds
//! another epoch marks this process deposed, for good: it never holds the lease again (the
//! daemon exits and its supervisor starts it again as a standby).
//!
//! The driver is `tokio-postgres` on a runtime of its own (two threads), so the synchronous
//! [`Backend`] calls work from any thread, async or not. Renewals use their own connection, so
//! they never queue behind a commit on the client; a commit stalled on the server still holds
//! the lease row `FOR SHARE`, which a renewal's `UPDATE` waits for (a renewal that times out
//! then may land when that commit ends: the expiry moves later, which delays a takeover but
//! never lets two wardends commit).

use super::{Backend, Batch, Entry, LeaseStatus, MemberRow, Namespace, Role, StoreError, Timing};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Statement};
use zeroize::Zeroizing;

/// The schema migrations, in order: (version, SQL). A released file is never edited; a change is
/// a new version.
pub const MIGRATIONS: &[(i32, &str)] =
    &[(1, include_str!("../../migrations/postgres/0001_state.sql"))];

/// The migrations of a fleet's shared schema (see [`FleetMember`]), in order.
pub const FLEET_MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/fleet/0001_fleet.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/fleet/0002_grants.sql"),
    ),
];

/// A schema's migrations: (version, SQL), in order.
type Migrations = &'static [(i32, &'static str)];

/// Key of the advisory lock that serialises migrations of wardends starting together.
const MIGRATION_LOCK: i64 = 0x7761_7264_656e_0001;

/// How wardend reaches PostgreSQL and how long its lease lasts.
#[derive(Clone)]
pub struct PgSettings {
    /// libpq-style parameters ("host=… user=… dbname=…") or a postgresql:// URL, without a
    /// password.
    pub conninfo: String,
    /// The password, read from a file or the environment.
    pub password: Option<Zeroizing<String>>,
    /// Transport security.
    pub tls: PgTls,
    /// How long a lease lasts without renewal: a standby takes over this long after the active
    /// wardend's last renewal.
    pub lease: Duration,
    /// How often the active wardend renews.
    pub renew: Duration,
    /// This wardend's name in the lease row (host and process by default).
    pub holder: String,
    /// The fleet this wardend is a member of, if any.
    pub fleet: Option<FleetMember>,
}

/// A wardend's place in a fleet: several wardends, one per node, sharing one database.
///
/// Each member's own state (its VLS node, approvals, audit chain, lease) lives in a schema of
/// its own, `"warden:<fleet>:<member>"`, exactly as a single wardend's lives in `public`; what
/// the fleet shares (the windows of limits with `scope = "fleet"`, the member list) lives in
/// `"warden:<fleet>"`. Names are 1 to 24 characters of `a-z`, `0-9` and `-`, so the two never
/// collide and quoting them is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember {
    /// The fleet's name.
    pub fleet: String,
    /// This member's name in it.
    pub member: String,
}

impl FleetMember {
    /// Whether `name` may name a fleet or a member; why not, if not.
    pub fn check_name(name: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > 24 {
            return Err(format!("\"{name}\" must be 1 to 24 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "\"{name}\" may hold only lowercase letters, digits and '-'"
            ));
        }
        Ok(())
    }

    /// The schema of the fleet's shared rows.
    pub fn fleet_schema(&self) -> String {
        format!("\"warden:{}\"", self.fleet)
    }

    /// The schema of this member's own state.
    pub fn member_schema(&self) -> String {
        format!("\"warden:{}:{}\"", self.fleet, self.member)
    }
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("conninfo", &self.conninfo)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls)
            .field("lease", &self.lease)
            .field("renew", &self.renew)
            .field("holder", &self.holder)
            .field("fleet", &self.fleet)
            .finish()
    }
}

impl PartialEq for PgSettings {
    fn eq(&self, o: &Self) -> bool {
        self.conninfo == o.conninfo
            && self.password.as_deref() == o.password.as_deref()
            && self.tls == o.tls
            && self.lease == o.lease
            && self.renew == o.renew
            && self.holder == o.holder
            && self.fleet == o.fleet
    }
}

/// Transport security to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP or a Unix socket (a database on the same host or a private network).
    Disable,
    /// TLS 1.2+ with the server's certificate checked against this CA (PEM).
    Require {
        /// The CA that signed the server's certificate.
        ca_file: PathBuf,
    },
}

/// A moment on `CLOCK_BOOTTIME`. The lease is held locally by this clock, not by std's
/// `Instant` (`CLOCK_MONOTONIC`), because `CLOCK_MONOTONIC` stops while the host is suspended:
/// a host that slept past its lease would wake believing it still held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct BootInstant(Duration);

/// The clock the lease is held by.
const LEASE_CLOCK: nix::time::ClockId = nix::time::ClockId::CLOCK_BOOTTIME;

impl BootInstant {
    fn now() -> Self {
        // CLOCK_BOOTTIME exists on every Linux since 2.6.39; wardend runs nowhere else.
        let t = nix::time::clock_gettime(LEASE_CLOCK).expect("CLOCK_BOOTTIME is readable");
        BootInstant(Duration::from(t))
    }

    fn elapsed(&self) -> Duration {
        Self::now().0.saturating_sub(self.0)
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0 + d)
    }
}

impl std::ops::Sub<Duration> for BootInstant {
    type Output = BootInstant;
    fn sub(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(d))
    }
}

/// A batch's writes as the statements take them: parallel arrays of upserts and deletions.
#[derive(Default)]
struct Rows {
    up_ns: Vec<i16>,
    up_keys: Vec<Vec<u8>>,
    up_vals: Vec<Vec<u8>>,
    del_ns: Vec<i16>,
    del_keys: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, ns: Namespace, k: &[u8], v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.up_ns.push(ns_id(ns));
                self.up_keys.push(k.to_vec());
                self.up_vals.push(v.to_vec());
            }
            None => {
                self.del_ns.push(ns_id(ns));
                self.del_keys.push(k.to_vec());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.up_ns.is_empty() && self.del_ns.is_empty()
    }
}

/// The rows of the `since` statement: the head's seq on every row, a shared row's columns
/// where one was written after the reader's seq (NULL on the one row when none was).
fn shared_rows(rows: Vec<tokio_postgres::Row>) -> Result<super::Shared, StoreError> {
    let mut out = super::Shared {
        grants: Some(Vec::new()),
        ..Default::default()
    };
    for r in rows {
        out.seq = r.get::<_, i64>(0) as u64;
        let ns: Option<i16> = r.get(1);
        let Some(ns) = ns else { continue };
        if ns == -1 {
            // A member's share of the fleet's room (the statement's second half).
            let member = String::from_utf8(r.get(2)).map_err(|_| StoreError::Corrupt {
                key: "warden_fleet_grant member".into(),
                detail: "not UTF-8".into(),
            })?;
            if let Some(g) = out.grants.as_mut() {
                g.push((member, r.get(3)));
            }
            continue;
        }
        let ns = Namespace::ALL
            .into_iter()
            .find(|n| n.is_shared() && ns_id(*n) == ns)
            .ok_or_else(|| StoreError::Corrupt {
                key: format!("warden_fleet_kv ns {ns}"),
                detail: "not a fleet namespace this wardend knows; run the wardend that wrote it"
                    .into(),
            })?;
        out.rows.push((ns, r.get(2), r.get(3)));
    }
    Ok(out)
}

/// The lease as this process sees it.
#[derive(Debug, Default)]
struct LeaseState {
    /// Our epoch while we hold (or held) the lease; 0 before.
    epoch: u64,
    /// Until when we may answer, by our monotonic clock.
    deadline: Option<BootInstant>,
    /// When our last successful renewal was sent.
    renewed: Option<BootInstant>,
    /// Who deposed us, once someone has: permanent.
    deposed: Option<String>,
    /// Earlier holders that said they stopped (see [`LeaseStatus::predecessors_gone`]).
    predecessors_gone: u64,
    /// Given up at a clean stop: never renewed or held again by this process.
    released: bool,
}

type DeposedHook = Box<dyn Fn(&str) + Send + Sync>;

struct Stmts {
    get: Statement,
    scan: Statement,
    last: Statement,
    write: Statement,
    fleet: Option<FleetStmts>,
}

/// The statements on a fleet's shared rows (prepared only on a fleet member's connections).
struct FleetStmts {
    get: Statement,
    scan: Statement,
    last: Statement,
    /// Rows written after a seq, with the seq they bring the reader to: one statement, so one
    /// snapshot (a row and the count that covers it are read together).
    since: Statement,
    /// The fleet's lock: the head row FOR UPDATE, held until the transaction ends.
    lock: Statement,
    /// The shared rows of a batch, written under the member's lease with the head's next seq.
    write: Statement,
    /// This member's share of the fleet's room, locked.
    grant: Statement,
    /// Every member's share, locked (under the fleet's lock).
    grants: Statement,
    /// Shares of a batch, written under the member's lease.
    grant_write: Statement,
}

/// A server session, named so that no later session that reuses its pid is mistaken for it.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    pid: i32,
    /// `backend_start`, exact to the microsecond (text would depend on the session's TimeZone).
    started: std::time::SystemTime,
}

struct Conn {
    client: Client,
    st: Stmts,
    session: Session,
    /// A transaction block is open on this connection: the fleet's lock is held by it (see
    /// [`Backend::lock_shared`]), and the next apply commits it.
    in_txn: bool,
}

struct Shared {
    settings: PgSettings,
    conn: tokio::sync::Mutex<Option<Conn>>,
    lease_conn: tokio::sync::Mutex<Option<Conn>>,
    lease: Mutex<LeaseState>,
    on_deposed: Mutex<Option<DeposedHook>>,
    commit_nanos: AtomicU64,
    commit_count: AtomicU64,
    read_nanos: AtomicU64,
    read_count: AtomicU64,
    /// Time spent taking the fleet's lock (waits on the shared rows included), and how often.
    lock_nanos: AtomicU64,
    lock_count: AtomicU64,
    /// Time spent locking this member's share of the fleet's room, and how often.
    share_nanos: AtomicU64,
    share_count: AtomicU64,
    /// The session of a commit that got no answer, until it is known to be over.
    unsettled: Mutex<Option<Session>>,
    /// Whether the request connection may have a transaction block open (a fast check before
    /// an abort goes to the database to end it).
    txn_open: std::sync::atomic::AtomicBool,
}

/// PostgreSQL under Warden (see the module documentation).
pub struct PgBackend {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

/// The driver's error with what the server said (its `Display` alone says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let c = cause.to_string();
                if !s.contains(&c) {
                    s.push_str(&format!(": {c}"));
                }
                source = cause.source();
            }
            s
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        detail: e.to_string(),
    }
}

/// Whether a server's error is a state it passes through, to wait out: starting up or shutting
/// down (57P01-57P03), out of connections or resources (class 53), a connection failure
/// (class 08), a replica that accepts no writes (25006, a failover in progress), a
/// serialization failure or deadlock (40001, 40P01). Anything else (authentication, a missing
/// database, a statement the server refuses) is an answer to act on.
fn transient(code: &tokio_postgres::error::SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("53")
        || matches!(c, "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01")
}

/// A server's error is an answer (a failed statement), unless it is a state the server passes
/// through ([`transient`]); anything else is the connection.
fn pg_err(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match e.as_db_error() {
        Some(db) if !transient(db.code()) => StoreError::Io {
            op,
            detail: describe(&e),
        },
        _ => unavailable(describe(&e)),
    }
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

fn ns_id(ns: Namespace) -> i16 {
    i16::from(ns.prefix())
}

fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |detail: String| StoreError::Open {
        path: format!("store.ca_file {}", ca_file.display()),
        detail,
    };
    let pem = std::fs::read(ca_file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("it holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn connect(s: &PgSettings) -> Result<Conn, StoreError> {
    let client = connect_raw(s).await?;
    prepare(client, s).await
}

async fn connect_raw(s: &PgSettings) -> Result<Client, StoreError> {
    let mut cfg: tokio_postgres::Config = s.conninfo.parse().map_err(|e| StoreError::Open {
        path: "store.url".into(),
        detail: format!("{e}"),
    })?;
    if let Some(p) = &s.password {
        cfg.password(p.as_bytes());
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(s.lease);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("wardend");
    }
    let client = match &s.tls {
        PgTls::Disable => {
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(pg_err("connect"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "the PostgreSQL connection closed");
                }
            });
            client
        }
        PgTls::Require { ca_file } => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_file)?);
            let (client, conn) = cfg.connect(tls).await.map_err(pg_err("connect"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "the PostgreSQL connection closed");
                }
            });
            client
        }
    };
    Ok(client)
}

async fn prepare(client: Client, settings: &PgSettings) -> Result<Conn, StoreError> {
    let fleet = settings.fleet.as_ref();
    if let Some(f) = fleet {
        // Statements resolve their tables when prepared: the member's schema first, then the
        // fleet's, and nothing else. A member waits at most half a lease for the fleet's lock,
        // and the server ends a member's transaction that sits idle holding it for a lease (a
        // paused or stuck member cannot stop the fleet for longer).
        let lease_ms = settings.lease.as_millis().max(2);
        client
            .batch_execute(&format!(
                "SET search_path TO {}, {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                f.member_schema(),
                f.fleet_schema(),
                lease_ms / 2,
                lease_ms
            ))
            .await
            .map_err(pg_err("connect"))?;
    }
    let prep = |sql: &'static str| {
        let c = &client;
        async move { c.prepare(sql).await.map_err(pg_err("prepare")) }
    };
    let fleet_st = match fleet {
        None => None,
        Some(_) => Some(FleetStmts {
            get: prep("SELECT value FROM warden_fleet_kv WHERE ns = $1 AND key = $2").await?,
            scan: prep("SELECT key, value FROM warden_fleet_kv WHERE ns = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3) ORDER BY key").await?,
            last: prep("SELECT key, value FROM warden_fleet_kv WHERE ns = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3) ORDER BY key DESC LIMIT 1").await?,
            since: prep(
                "SELECT f.seq, k.ns, k.key, k.value FROM warden_fleet f \
                 LEFT JOIN warden_fleet_kv k ON k.seq > $1 WHERE f.id = 1 \
                 UNION ALL SELECT f.seq, (-1)::smallint, convert_to(g.member, 'UTF8'), g.value \
                 FROM warden_fleet f, warden_fleet_grant g WHERE f.id = 1",
            )
            .await?,
            lock: prep("SELECT seq FROM warden_fleet WHERE id = 1 FOR UPDATE").await?,
            // Under the member's lease (as the request's own write checks it), so a deposed
            // member writes no shared row either.
            write: prep(
                "WITH lease AS (
                    SELECT epoch FROM warden_lease
                    WHERE id = 1 AND epoch = $1 AND expires_at > clock_timestamp() FOR SHARE
                ), head AS (
                    UPDATE warden_fleet SET seq = seq + 1
                    WHERE id = 1 AND EXISTS (SELECT 1 FROM lease) RETURNING seq
                ), upserted AS (
                    INSERT INTO warden_fleet_kv (ns, key, value, seq)
                    SELECT u.ns, u.key, u.value, head.seq
                    FROM unnest($2::smallint[], $3::bytea[], $4::bytea[]) AS u(ns, key, value), head
                    ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value, seq = EXCLUDED.seq
                ), deleted AS (
                    DELETE FROM warden_fleet_kv
                    WHERE (ns, key) IN (SELECT * FROM unnest($5::smallint[], $6::bytea[]))
                    AND EXISTS (SELECT 1 FROM head)
                )
                -- Not under this member's lease: fail the statement (and with it the whole
                -- transaction block, the member's own rows included) rather than write nothing
                -- of the fleet's while the member's own rows commit.
                SELECT seq, 1 / (SELECT count(*)::int FROM head) FROM head
                UNION ALL SELECT NULL, 1 / (SELECT count(*)::int FROM head)
                WHERE NOT EXISTS (SELECT 1 FROM head)",
            )
            .await?,
            // This member's share, locked; what changed is read by `since` right after, in a
            // snapshot taken once the lock is granted (a freeze committed while this waited for
            // the row is seen).
            grant: prep("SELECT value FROM warden_fleet_grant WHERE member = $1 FOR UPDATE").await?,
            grants: prep("SELECT member, value FROM warden_fleet_grant ORDER BY member FOR UPDATE")
                .await?,
            grant_write: prep(
                "WITH lease AS (
                    SELECT epoch FROM warden_lease
                    WHERE id = 1 AND epoch = $1 AND expires_at > clock_timestamp() FOR SHARE
                ), upserted AS (
                    INSERT INTO warden_fleet_grant (member, value)
                    SELECT u.member, u.value FROM unnest($2::text[], $3::bytea[]) AS u(member, value)
                    WHERE EXISTS (SELECT 1 FROM lease)
                    ON CONFLICT (member) DO UPDATE SET value = EXCLUDED.value
                )
                -- Not under this member's lease: fail the whole block, as the fleet's write does.
                SELECT 1 / (SELECT count(*)::int FROM lease)",
            )
            .await?,
        }),
    };
    let st = Stmts {
        fleet: fleet_st,
        get: prep("SELECT value FROM warden_kv WHERE ns = $1 AND key = $2").await?,
        scan: prep("SELECT key, value FROM warden_kv WHERE ns = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3) ORDER BY key").await?,
        last: prep("SELECT key, value FROM warden_kv WHERE ns = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3) ORDER BY key DESC LIMIT 1").await?,
        // One implicit transaction: the lease row locked FOR SHARE (a takeover's UPDATE waits
        // for it, and one that committed first is what this reads), and the batch written only
        // if the lease is still this epoch's and unexpired by the server's clock. The request
        // connection never opens a transaction block, so this commits at its Sync, and the
        // driver returns only at the ReadyForQuery that follows the commit (WAL flushed; an
        // error at commit arrives before it).
        write: prep(
            "WITH lease AS (
                SELECT epoch, holder, expires_at > clock_timestamp() AS valid
                FROM warden_lease WHERE id = 1 FOR SHARE
            ), ours AS (
                SELECT 1 FROM lease WHERE epoch = $1 AND valid
            ), upserted AS (
                INSERT INTO warden_kv (ns, key, value)
                SELECT * FROM unnest($2::smallint[], $3::bytea[], $4::bytea[])
                WHERE EXISTS (SELECT 1 FROM ours)
                ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value
            ), deleted AS (
                DELETE FROM warden_kv
                WHERE (ns, key) IN (SELECT * FROM unnest($5::smallint[], $6::bytea[]))
                AND EXISTS (SELECT 1 FROM ours)
            )
            SELECT epoch, holder, valid FROM lease",
        )
        .await?,
    };
    let row = client
        .query_one(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(pg_err("connect"))?;
    let session = Session {
        pid: row.get(0),
        started: row.get(1),
    };
    Ok(Conn {
        client,
        st,
        session,
        in_txn: false,
    })
}

/// Create or bring the schema up to date, refusing one newer than this wardend knows. A fleet
/// member brings two: the fleet's shared schema and its own.
async fn migrate(client: &mut Client, fleet: Option<&FleetMember>) -> Result<i32, StoreError> {
    let tx = client.transaction().await.map_err(pg_err("migrate"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("migrate"))?;
    let targets: Vec<(Option<String>, Migrations)> = match fleet {
        None => vec![(None, MIGRATIONS)],
        Some(f) => vec![
            (Some(f.fleet_schema()), FLEET_MIGRATIONS),
            (Some(f.member_schema()), MIGRATIONS),
        ],
    };
    for (schema, migrations) in targets {
        let what = match &schema {
            Some(s) => format!("the PostgreSQL schema {s}"),
            None => "the PostgreSQL database".to_string(),
        };
        if let Some(schema) = &schema {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}"
            ))
            .await
            .map_err(pg_err("migrate"))?;
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS warden_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_err("migrate"))?;
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM warden_schema", &[])
            .await
            .map_err(pg_err("migrate"))?
            .get(0);
        let latest = migrations.last().map(|m| m.0).unwrap_or(0);
        if current > latest {
            return Err(StoreError::Open {
                path: what,
                detail: format!("its schema is version {current}, this wardend knows up to {latest}; run the wardend that wrote it"),
            });
        }
        for (version, sql) in migrations.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql).await.map_err(pg_err("migrate"))?;
            tx.execute(
                "INSERT INTO warden_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg_err("migrate"))?;
            tracing::info!(version, schema = %what, "PostgreSQL schema migrated");
        }
    }
    tx.commit().await.map_err(pg_err("migrate"))?;
    Ok(MIGRATIONS.last().map(|m| m.0).unwrap_or(0))
}

impl Shared {
    async fn conn<'a>(
        &self,
        slot: &'a tokio::sync::Mutex<Option<Conn>>,
    ) -> Result<tokio::sync::MutexGuard<'a, Option<Conn>>, StoreError> {
        let mut g = slot.lock().await;
        // Renewals never wait for a settlement: the lease must not lapse over one.
        let settle = std::ptr::eq(slot, &self.conn);
        self.ensure(&mut g, settle).await?;
        Ok(g)
    }

    /// (Re)connect if needed; with `settle`, first settle an unfinished commit. Bounded by the
    /// lease length, so a server that stopped answering never holds the request slot longer.
    async fn ensure(&self, g: &mut Option<Conn>, settle: bool) -> Result<(), StoreError> {
        let lease = self.settings.lease;
        match tokio::time::timeout(lease, self.ensure_unbounded(g, settle)).await {
            Ok(r) => r,
            Err(_) => {
                *g = None;
                Err(unavailable(match self.unsettled().filter(|_| settle) {
                    Some(old) => format!(
                        "the session (pid {}) of a commit that did not answer could not be ended within {lease:?}; nothing is read or written on the request connection until it has",
                        old.pid
                    ),
                    None => format!("PostgreSQL did not answer within {lease:?} while connecting"),
                }))
            }
        }
    }

    async fn ensure_unbounded(&self, g: &mut Option<Conn>, settle: bool) -> Result<(), StoreError> {
        if g.as_ref().is_none_or(|c| c.client.is_closed()) {
            *g = None;
            *g = Some(connect(&self.settings).await?);
        }
        if !settle {
            return Ok(());
        }
        if let Some(old) = self.unsettled() {
            let c = g.as_ref().expect("connected");
            self.settle(&c.client, &old).await?;
            self.set_unsettled(None);
        }
        Ok(())
    }

    fn unsettled(&self) -> Option<Session> {
        self.unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_unsettled(&self, session: Option<Session>) {
        *self.unsettled.lock().unwrap_or_else(|p| p.into_inner()) = session;
    }

    /// A commit that did not answer (a timeout, a connection lost) may still be running on the
    /// server, and would land whenever it finishes, after the store has reloaded its memory
    /// from the database. End its session and wait until it is gone, so what is read next is
    /// what the server keeps (a session leaves `pg_stat_activity` only after its transaction
    /// was aborted). A role may end its own sessions; the session's start time tells it from a
    /// later one with the same pid. The wait is bounded by [`Shared::ensure`].
    async fn settle(&self, client: &Client, old: &Session) -> Result<(), StoreError> {
        loop {
            let alive = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2",
                    &[&old.pid, &old.started],
                )
                .await
                .map_err(pg_err("end the session of a commit that did not answer"))?;
            if alive.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run `f` on the request connection; a connection failure drops it, so the next call
    /// reconnects. When `f` writes and got no answer, its session is settled before this
    /// returns, so a caller that reloads after the failure reads what the server keeps.
    async fn with<T>(
        &self,
        writes: bool,
        f: impl for<'c> FnOnce(
            &'c mut Conn,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>,
        >,
    ) -> Result<T, StoreError> {
        let mut g = self.conn(&self.conn).await?;
        let conn = g.as_mut().expect("connected");
        let session = conn.session.clone();
        let r = match tokio::time::timeout(self.settings.lease, f(conn)).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(format!(
                "PostgreSQL did not answer within {:?}",
                self.settings.lease
            ))),
        };
        match r {
            Err(StoreError::Unavailable { detail }) => {
                *g = None;
                if !writes {
                    return Err(StoreError::Unavailable { detail });
                }
                self.set_unsettled(Some(session));
                let settled = match self.ensure(&mut g, true).await {
                    Ok(()) => {
                        "; its session on the server was ended, so it cannot land later".to_string()
                    }
                    Err(e) => format!("; whether it lands is not known yet ({e})"),
                };
                Err(StoreError::Unavailable {
                    detail: detail + &settled,
                })
            }
            r => r,
        }
    }

    /// Whether this process may commit or answer now; our epoch if so.
    fn check_local(&self) -> Result<u64, StoreError> {
        let l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(by) = &l.deposed {
            return Err(StoreError::Deposed {
                epoch: l.epoch,
                by: by.clone(),
            });
        }
        match l.deadline {
            None => Err(StoreError::NoLease),
            Some(d) if BootInstant::now() >= d => Err(StoreError::LeaseLapsed {
                epoch: l.epoch,
                since: l.renewed.map(|r| r.elapsed()).unwrap_or_default(),
            }),
            Some(_) => Ok(l.epoch),
        }
    }

    /// Mark this process deposed (once), say so in the database for the active wardend, and
    /// run the hook.
    async fn deposed(&self, by: String) -> StoreError {
        let (first, epoch) = {
            let mut l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            let first = l.deposed.is_none();
            l.deposed.get_or_insert(by.clone());
            l.deadline = None;
            (first, l.epoch)
        };
        if first {
            tracing::error!(epoch, by = %by, "this wardend's lease was taken over: it commits and answers nothing more");
            let _ = self
                .lease_query(
                    "INSERT INTO warden_deposed (epoch, holder) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING epoch",
                    &[&(epoch as i64), &self.settings.holder],
                )
                .await;
            if let Some(hook) = self
                .on_deposed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                hook(&by);
            }
        }
        StoreError::Deposed { epoch, by }
    }

    fn local_deadline(&self, sent: BootInstant) -> BootInstant {
        let lease = self.settings.lease;
        sent + lease - (lease / 5).min(Duration::from_secs(1))
    }

    async fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let epoch = self.check_local()?;
        let mut own = Rows::default();
        let mut fleet = Rows::default();
        let (grant_members, grant_values): (Vec<String>, Vec<Vec<u8>>) = batch
            .grants()
            .map(|(m, v)| (m.to_string(), v.to_vec()))
            .unzip();
        let in_fleet = self.settings.fleet.is_some();
        for (ns, k, v) in batch.iter() {
            if in_fleet && ns.is_shared() {
                &mut fleet
            } else {
                &mut own
            }
            .push(ns, k, v);
        }
        let started = Instant::now();
        // This transaction took the fleet's lock: whatever it writes must commit on the block
        // that holds it.
        let locked = self.txn_open.load(Ordering::SeqCst);
        let fenced = self
            .with(true, |c| {
                Box::pin(async move {
                    let epoch = epoch as i64;
                    let shared = !fleet.is_empty();
                    let granted = !grant_members.is_empty();
                    if !c.in_txn && (locked || granted || (shared && !fleet.up_ns.is_empty())) {
                        // Shared rows are written only on top of what was read under the
                        // fleet's lock, on the connection that holds it: a lock lost with its
                        // connection must not let stale totals be written.
                        return Err(unavailable(
                            "the connection that held the fleet's lock was lost before the commit; nothing was written",
                        ));
                    }
                    // Deleting expired shared rows needs no lock (nothing is read to write
                    // them), only a transaction of its own with the member's rows.
                    let begin = shared && !c.in_txn;
                    let in_txn = c.in_txn || begin;
                    let client = &c.client;
                    let opened = async {
                        if begin {
                            client.batch_execute("BEGIN").await
                        } else {
                            Ok(())
                        }
                    };
                    let fleet_write = async {
                        match (&c.st.fleet, shared) {
                            (Some(f), true) => {
                                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                                    &epoch,
                                    &fleet.up_ns,
                                    &fleet.up_keys,
                                    &fleet.up_vals,
                                    &fleet.del_ns,
                                    &fleet.del_keys,
                                ];
                                client.query_opt(&f.write, &params).await.map(|_| ()).map_err(|e| {
                                    match e.as_db_error().map(|d| d.code().code()) {
                                        Some("22012") => unavailable(
                                            "this member's lease was not valid when the fleet's rows were to be written; nothing was committed",
                                        ),
                                        _ => pg_err("commit")(e),
                                    }
                                })
                            }
                            _ => Ok(()),
                        }
                    };
                    let grant_write = async {
                        match (&c.st.fleet, granted) {
                            (Some(f), true) => {
                                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                                    [&epoch, &grant_members, &grant_values];
                                client.query_opt(&f.grant_write, &params).await.map(|_| ()).map_err(|e| {
                                    match e.as_db_error().map(|d| d.code().code()) {
                                        Some("22012") => unavailable(
                                            "this member's lease was not valid when its share of the fleet's room was to be written; nothing was committed",
                                        ),
                                        _ => pg_err("commit")(e),
                                    }
                                })
                            }
                            _ => Ok(()),
                        }
                    };
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                        &epoch,
                        &own.up_ns,
                        &own.up_keys,
                        &own.up_vals,
                        &own.del_ns,
                        &own.del_keys,
                    ];
                    let write = client.query_opt(&c.st.write, &params);
                    // The transaction block a fleet lock opened ends here: committed if every
                    // statement in it succeeded, rolled back by the server otherwise. The three
                    // are sent together (one round trip), in order.
                    let end = async {
                        if in_txn {
                            client.batch_execute("COMMIT").await
                        } else {
                            Ok(())
                        }
                    };
                    let (opened, shared_written, grant_written, fence, ended) =
                        futures::join!(opened, fleet_write, grant_write, write, end);
                    c.in_txn = false;
                    opened.map_err(pg_err("commit"))?;
                    shared_written?;
                    grant_written?;
                    let fence = fence.map_err(pg_err("commit"))?;
                    ended.map_err(pg_err("commit"))?;
                    Ok(match fence {
                        None => Err(None),
                        Some(row) => {
                            let (current, holder, valid): (i64, String, bool) =
                                (row.get(0), row.get(1), row.get(2));
                            if current != epoch {
                                Err(Some(format!("{holder} (epoch {current})")))
                            } else if !valid {
                                Err(None)
                            } else {
                                Ok(())
                            }
                        }
                    })
                })
            })
            .await;
        // However it ended, no transaction block is open on the request connection now (the
        // server ended it, or the connection is gone with it).
        self.txn_open.store(false, Ordering::SeqCst);
        let fenced = fenced?;
        self.commit_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        match fenced {
            Ok(()) => Ok(()),
            Err(Some(by)) => Err(self.deposed(by).await),
            Err(None) => {
                // Our epoch, expired by the server's clock: not deposed (nobody took over), but
                // nothing may be committed until a renewal succeeds.
                let mut l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
                l.deadline = Some(BootInstant::now());
                Err(StoreError::LeaseLapsed {
                    epoch,
                    since: l.renewed.map(|r| r.elapsed()).unwrap_or_default(),
                })
            }
        }
    }

    /// Take the fleet's lock (opening a transaction block on the request connection, which the
    /// next apply commits) and, with `since`, read the shared rows written after it.
    async fn lock_shared(&self, since: Option<u64>) -> Result<super::Shared, StoreError> {
        self.check_local()?;
        self.txn_open.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let r = self
            .with(true, move |c| {
                Box::pin(async move {
                    let Some(f) = &c.st.fleet else {
                        return Err(StoreError::NoFleet);
                    };
                    let read = since.is_some();
                    let since = since.unwrap_or(0) as i64;
                    let since: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&since];
                    let client = &c.client;
                    let begin = !c.in_txn;
                    // One round trip: the block opened, the head row locked, then (a new
                    // snapshot, taken once the lock is granted) what changed.
                    let (opened, locked, rows) = futures::join!(
                        async {
                            if begin {
                                client.batch_execute("BEGIN").await
                            } else {
                                Ok(())
                            }
                        },
                        client.query_one(&f.lock, &[]),
                        async {
                            if read {
                                client.query(&f.since, &since).await
                            } else {
                                Ok(Vec::new())
                            }
                        },
                    );
                    let read = opened
                        .and(locked)
                        .and(rows)
                        .map_err(|e| match e.as_db_error().map(|d| d.code().code()) {
                            Some("55P03") => StoreError::Io {
                                op: "take the fleet's lock",
                                detail: "another member held it longer than store.lease_secs / 2 (a member paused or stuck mid-request); the decision is refused, and the server ends that member's transaction".into(),
                            },
                            _ => pg_err("take the fleet's lock")(e),
                        });
                    match read {
                        Ok(rows) => {
                            c.in_txn = true;
                            shared_rows(rows)
                        }
                        Err(e) => {
                            // Nothing was read under the lock: end the block now (whoever
                            // opened it), so the lock is not held until the server's timeout;
                            // the transaction's later shared writes then fail for want of it.
                            if begin || c.in_txn {
                                let _ = c.client.batch_execute("ROLLBACK").await;
                                c.in_txn = false;
                            }
                            Err(e)
                        }
                    }
                })
            })
            .await;
        self.locked(r, started, &self.lock_nanos, &self.lock_count)
    }

    /// Open a transaction block with this member's share of the fleet's room locked (not the
    /// fleet's lock) and read the shared rows written after `since` (see
    /// [`Backend::lock_grant`]).
    async fn lock_grant(&self, since: u64) -> Result<(Option<Vec<u8>>, super::Shared), StoreError> {
        self.check_local()?;
        let member = match &self.settings.fleet {
            Some(f) => f.member.clone(),
            None => return Err(StoreError::NoFleet),
        };
        self.txn_open.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let r = self
            .with(true, move |c| {
                Box::pin(async move {
                    let Some(f) = &c.st.fleet else {
                        return Err(StoreError::NoFleet);
                    };
                    if c.in_txn {
                        return Err(unavailable(
                            "a transaction block is already open on the request connection",
                        ));
                    }
                    let since = since as i64;
                    let client = &c.client;
                    // One round trip: the block opened, the share locked, what changed.
                    let member: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&member];
                    let since: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&since];
                    // READ COMMITTED whatever the server's default: `since` must see what was
                    // committed before the share's row was granted.
                    let (opened, grant, rows) = futures::join!(
                        client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                        client.query_opt(&f.grant, &member),
                        client.query(&f.since, &since),
                    );
                    let read = opened.and(grant).and_then(|g| rows.map(|r| (g, r))).map_err(
                        |e| match e.as_db_error().map(|d| d.code().code()) {
                            Some("55P03") => StoreError::Io {
                                op: "lock this member's share of the fleet's room",
                                detail: "it stayed locked longer than store.lease_secs / 2 (another wardend under this member's name, or a fleet decision stuck mid-request)".into(),
                            },
                            _ => pg_err("lock this member's share of the fleet's room")(e),
                        },
                    );
                    match read {
                        Ok((grant, rows)) => {
                            c.in_txn = true;
                            Ok((grant.map(|r| r.get::<_, Vec<u8>>(0)), shared_rows(rows)?))
                        }
                        Err(e) => {
                            let _ = c.client.batch_execute("ROLLBACK").await;
                            c.in_txn = false;
                            Err(e)
                        }
                    }
                })
            })
            .await;
        self.locked(r, started, &self.share_nanos, &self.share_count)
    }

    /// Every member's share, locked, in the block that holds the fleet's lock.
    async fn lock_grants(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with(true, |c| {
            Box::pin(async move {
                let Some(f) = &c.st.fleet else {
                    return Err(StoreError::NoFleet);
                };
                if !c.in_txn {
                    return Err(unavailable(
                        "the fleet's shares are read only under the fleet's lock, which this connection no longer holds",
                    ));
                }
                let rows = c
                    .client
                    .query(&f.grants, &[])
                    .await
                    .map_err(pg_err("lock the fleet's shares"))?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
        .await
    }

    /// After taking a lock: its time counted under `nanos`/`count`, and no block left open
    /// when it failed.
    fn locked<T>(
        &self,
        r: Result<T, StoreError>,
        started: Instant,
        nanos: &AtomicU64,
        count: &AtomicU64,
    ) -> Result<T, StoreError> {
        nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        count.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.txn_open.store(false, Ordering::SeqCst);
        }
        r
    }

    /// End the transaction block a fleet lock opened, writing nothing.
    async fn abandon(&self) {
        if !self.txn_open.swap(false, Ordering::SeqCst) {
            return;
        }
        let _ = self
            .with(true, |c| {
                Box::pin(async move {
                    if c.in_txn {
                        c.in_txn = false;
                        c.client
                            .batch_execute("ROLLBACK")
                            .await
                            .map_err(pg_err("end the fleet's lock"))?;
                    }
                    Ok(())
                })
            })
            .await;
    }

    async fn lease_query(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let mut g = self.conn(&self.lease_conn).await?;
        let c = g.as_mut().expect("connected");
        let r = match tokio::time::timeout(self.settings.lease, c.client.query_opt(sql, params))
            .await
        {
            Ok(r) => r.map_err(pg_err("lease")),
            Err(_) => Err(unavailable(
                "PostgreSQL did not answer the lease query in time",
            )),
        };
        if matches!(r, Err(StoreError::Unavailable { .. })) {
            *g = None;
        }
        r
    }

    async fn try_acquire(&self) -> Result<Option<u64>, StoreError> {
        {
            let l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(by) = &l.deposed {
                return Err(StoreError::Deposed {
                    epoch: l.epoch,
                    by: by.clone(),
                });
            }
            if l.released {
                return Err(StoreError::NoLease);
            }
        }
        let secs = self.settings.lease.as_secs_f64();
        let sent = BootInstant::now();
        let row = self
            .lease_query(
                "INSERT INTO warden_lease AS l (id, holder, epoch, acquired_at, renewed_at, expires_at) \
                 VALUES (1, $1, 1, clock_timestamp(), clock_timestamp(), clock_timestamp() + make_interval(secs => $2)) \
                 ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, epoch = l.epoch + 1, \
                   acquired_at = EXCLUDED.acquired_at, renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at \
                 WHERE l.expires_at < clock_timestamp() \
                 RETURNING epoch",
                &[&self.settings.holder, &secs],
            )
            .await?;
        Ok(row.map(|r| {
            let epoch = r.get::<_, i64>(0) as u64;
            let mut l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            l.epoch = epoch;
            l.renewed = Some(sent);
            l.deadline = Some(self.local_deadline(sent));
            epoch
        }))
    }

    async fn renew(&self) -> Result<(), StoreError> {
        let epoch = {
            let l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(by) = &l.deposed {
                return Err(StoreError::Deposed {
                    epoch: l.epoch,
                    by: by.clone(),
                });
            }
            if l.epoch == 0 || l.released {
                return Err(StoreError::NoLease);
            }
            l.epoch
        };
        let secs = self.settings.lease.as_secs_f64();
        let sent = BootInstant::now();
        let row = self
            .lease_query(
                "UPDATE warden_lease SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => $2) \
                 WHERE id = 1 AND epoch = $1 RETURNING epoch",
                &[&(epoch as i64), &secs],
            )
            .await?;
        if row.is_some() {
            {
                let mut l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
                if l.deposed.is_none() && !l.released {
                    l.renewed = Some(sent);
                    l.deadline = Some(self.local_deadline(sent));
                }
            }
            if let Ok(Some(r)) = self
                .lease_query(
                    "SELECT count(*) FROM warden_deposed WHERE epoch < $1 AND noticed_at < clock_timestamp() - interval '1 second'",
                    &[&(epoch as i64)],
                )
                .await
            {
                let gone = r.get::<_, i64>(0) as u64;
                self.lease.lock().unwrap_or_else(|p| p.into_inner()).predecessors_gone = gone;
            }
            return Ok(());
        }
        let by = match self.current().await {
            Ok(Some(c)) => format!("{} (epoch {})", c.holder, c.epoch),
            _ => "another wardend".into(),
        };
        Err(self.deposed(by).await)
    }

    async fn current(&self) -> Result<Option<LeaseRow>, StoreError> {
        let row = self
            .lease_query(
                "SELECT holder, epoch, extract(epoch FROM clock_timestamp() - renewed_at)::float8, \
                 extract(epoch FROM expires_at - clock_timestamp())::float8 FROM warden_lease WHERE id = 1",
                &[],
            )
            .await?;
        Ok(row.map(|r| LeaseRow {
            holder: r.get(0),
            epoch: r.get::<_, i64>(1) as u64,
            renewed_ago: Duration::from_secs_f64(r.get::<_, f64>(2).max(0.0)),
            expires_in: r.get::<_, f64>(3),
        }))
    }
}

/// A fleet member as the database lists it.
/// The lease row as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRow {
    /// Who holds (or last held) it.
    pub holder: String,
    /// Its epoch: one more at every takeover.
    pub epoch: u64,
    /// Since its last renewal, by the server's clock.
    pub renewed_ago: Duration,
    /// Seconds until it expires (negative: expired), by the server's clock.
    pub expires_in: f64,
}

impl PgBackend {
    /// Connect, refuse a server that acknowledges commits before they are durable, and create or
    /// migrate the schema. The lease is not taken: call [`PgBackend::acquire`].
    pub fn open(settings: PgSettings) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("cannot start the database runtime: {e}")))?;
        let shared = Arc::new(Shared {
            settings,
            conn: Default::default(),
            lease_conn: Default::default(),
            lease: Default::default(),
            on_deposed: Default::default(),
            commit_nanos: Default::default(),
            commit_count: Default::default(),
            read_nanos: Default::default(),
            read_count: Default::default(),
            lock_nanos: Default::default(),
            lock_count: Default::default(),
            share_nanos: Default::default(),
            share_count: Default::default(),
            unsettled: Default::default(),
            txn_open: Default::default(),
        });
        let backend = PgBackend {
            rt: Some(rt),
            shared,
        };
        let sh = backend.shared.clone();
        backend.run(async move {
            let mut client = connect_raw(&sh.settings).await?;
            let sync: String = client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .map_err(pg_err("open"))?
                .get(0);
            if sync == "off" {
                return Err(StoreError::Open {
                    path: "the PostgreSQL database".into(),
                    detail: "synchronous_commit is off, so a commit is acknowledged before it is durable and a crash of the server could lose signed state; set synchronous_commit = on (or remote_apply) for wardend's role".into(),
                });
            }
            migrate(&mut client, sh.settings.fleet.as_ref()).await?;
            *sh.conn.lock().await = Some(prepare(client, &sh.settings).await?);
            Ok(())
        })?;
        Ok(backend)
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the backend")
            .spawn(async move {
                let _ = tx.send(fut.await);
            });
        rx.recv()
            .unwrap_or_else(|_| Err(unavailable("the database task stopped")))
    }

    /// A read on the request connection, timed from the calling thread (the hand-over to the
    /// runtime is part of what a read costs).
    fn read<T: Send + 'static>(
        &self,
        f: impl for<'c> FnOnce(
                &'c mut Conn,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>,
            > + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let sh = self.shared.clone();
        let r = self.run(async move { sh.with(false, f).await });
        let sh = &self.shared;
        sh.read_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        sh.read_count.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Take the lease if it is free or expired: our new epoch, or `None` while another wardend
    /// holds it.
    pub fn try_acquire(&self) -> Result<Option<u64>, StoreError> {
        let sh = self.shared.clone();
        self.run(async move { sh.try_acquire().await })
    }

    /// Wait as a standby until the lease is ours, polling twice a second (or every renew
    /// interval, if shorter); `waiting` sees the lease row at each poll and can stop the wait by
    /// returning false. A database that cannot be reached is waited out too.
    pub fn acquire(
        &self,
        mut waiting: impl FnMut(Option<&LeaseRow>) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        let poll = self.shared.settings.renew.min(Duration::from_millis(500));
        loop {
            match self.try_acquire() {
                Ok(Some(epoch)) => return Ok(Some(epoch)),
                Ok(None) => {
                    let row = self.current().ok().flatten();
                    if !waiting(row.as_ref()) {
                        return Ok(None);
                    }
                }
                Err(e @ StoreError::Unavailable { .. }) => {
                    tracing::warn!(error = %e, "standby: the database cannot be reached; retrying");
                    if !waiting(None) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
            std::thread::sleep(poll);
        }
    }

    /// Renew our lease now. `Deposed` once another wardend took it.
    pub fn renew(&self) -> Result<(), StoreError> {
        let sh = self.shared.clone();
        self.run(async move { sh.renew().await })
    }

    /// The lease row, as the database holds it now.
    pub fn current(&self) -> Result<Option<LeaseRow>, StoreError> {
        let sh = self.shared.clone();
        self.run(async move { sh.current().await })
    }

    /// Renew every `renew` interval on a thread of its own, until deposed or dropped. A renewal
    /// that cannot reach the database is retried at the next interval; meanwhile the lease
    /// lapses locally on its own.
    pub fn start_renewing(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.shared.settings.renew;
        std::thread::Builder::new()
            .name("store-lease".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(b) = weak.upgrade() else { return };
                match b.renew() {
                    Ok(()) => {}
                    Err(StoreError::Deposed { .. }) | Err(StoreError::NoLease) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot renew the lease; retrying"),
                }
            })
            .expect("spawning the lease thread");
    }

    /// What to do, once, when this process finds it was deposed (wardend exits).
    pub fn on_deposed(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self
            .shared
            .on_deposed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }

    /// Give the lease up at a clean stop, so a standby takes over at once instead of waiting for
    /// it to expire. Nothing is committed by this process afterwards.
    pub fn release(&self) -> Result<(), StoreError> {
        let epoch = {
            let mut l = self.shared.lease.lock().unwrap_or_else(|p| p.into_inner());
            l.deadline = None;
            l.released = true;
            l.epoch
        };
        if epoch == 0 {
            return Ok(());
        }
        let sh = self.shared.clone();
        self.run(async move {
            sh.lease_query(
                "UPDATE warden_lease SET expires_at = clock_timestamp() WHERE id = 1 AND epoch = $1 RETURNING epoch",
                &[&(epoch as i64)],
            )
            .await
            .map(|_| ())
        })
    }

    /// Bind this member's name to its node and seed in the fleet's member list, at its first
    /// start; at every later one, check that the name is still bound to exactly these. A name
    /// bound to another node or seed, or a node or seed already bound to another name, is
    /// refused: a member cannot take another's place in the fleet.
    ///
    /// With `bind` false, only check (a wardend not yet admitted by the policy in force must
    /// not take a name); with `bind` true, also record the binding.
    pub fn join_fleet(&self, node_id: &str, seed_id: &str, bind: bool) -> Result<(), StoreError> {
        let Some(f) = self.shared.settings.fleet.clone() else {
            return Err(StoreError::NoFleet);
        };
        let (node_id, seed_id) = (node_id.to_string(), seed_id.to_string());
        let sh = self.shared.clone();
        self.run(async move {
            sh.with(true, move |c| {
                Box::pin(async move {
                    let joined = if bind {
                        c.client
                            .query_opt(
                                "INSERT INTO warden_member AS m (name, node_id, seed_id) VALUES ($1, $2, $3) \
                                 ON CONFLICT DO NOTHING RETURNING name",
                                &[&f.member, &node_id, &seed_id],
                            )
                            .await
                            .map_err(pg_err("join the fleet"))?
                    } else {
                        None
                    };
                    if joined.is_some() {
                        tracing::info!(fleet = %f.fleet, member = %f.member, node_id = %node_id, "joined the fleet: this member's name is now bound to this node and seed");
                        return Ok(());
                    }
                    let rows = c
                        .client
                        .query(
                            if bind {
                                "UPDATE warden_member SET seen_at = clock_timestamp() \
                                 WHERE name = $1 AND node_id = $2 AND seed_id = $3 RETURNING name"
                            } else {
                                "SELECT name FROM warden_member \
                                 WHERE name = $1 AND node_id = $2 AND seed_id = $3"
                            },
                            &[&f.member, &node_id, &seed_id],
                        )
                        .await
                        .map_err(pg_err("join the fleet"))?;
                    if !rows.is_empty() {
                        return Ok(());
                    }
                    let clash = c
                        .client
                        .query(
                            "SELECT name, node_id, seed_id FROM warden_member \
                             WHERE name = $1 OR node_id = $2 OR seed_id = $3 ORDER BY name",
                            &[&f.member, &node_id, &seed_id],
                        )
                        .await
                        .map_err(pg_err("join the fleet"))?;
                    if !bind && clash.is_empty() {
                        // Not bound yet, and nothing it would clash with.
                        return Ok(());
                    }
                    let mut why = Vec::new();
                    for r in clash {
                        let (name, n, s): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                        if name == f.member {
                            why.push(format!("member \"{name}\" of fleet \"{}\" is bound to node {n} (seed {s}); this wardend's node is {node_id} (seed {seed_id})", f.fleet));
                        } else if n == node_id {
                            why.push(format!("node {n} is already member \"{name}\" of fleet \"{}\"", f.fleet));
                        } else {
                            why.push(format!("seed {s} is already member \"{name}\"'s of fleet \"{}\"", f.fleet));
                        }
                    }
                    Err(StoreError::NotMember(format!(
                        "{}. A member keeps its name, node and seed for good; set fleet.member to this node's own name",
                        why.join("; ")
                    )))
                })
            })
            .await
        })
    }

    /// The settings this backend was opened with.
    pub fn settings(&self) -> &PgSettings {
        &self.shared.settings
    }

    /// Drop both connections (a test of reconnection; an operator never needs it).
    pub fn disconnect(&self) {
        let sh = self.shared.clone();
        let _ = self.run(async move {
            *sh.conn.lock().await = None;
            *sh.lease_conn.lock().await = None;
            Ok(())
        });
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Connections close with the runtime; nothing is committed on the way out. Without
        // waiting: the backend may be dropped on an async thread (wardenctl's), where a blocking
        // shutdown would panic.
        *self
            .shared
            .on_deposed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for PgBackend {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.read(move |c| {
            Box::pin(async move {
                let st = match (&c.st.fleet, ns) {
                    (Some(f), ns) if ns.is_shared() => &f.get,
                    (None, ns) if ns.is_fleet() => return Ok(None),
                    _ => &c.st.get,
                };
                let row = c
                    .client
                    .query_opt(st, &[&ns_id(ns), &key])
                    .await
                    .map_err(pg_err("read"))?;
                Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
            })
        })
    }

    fn scan(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let (prefix, end) = (prefix.to_vec(), prefix_end(prefix));
        self.read(move |c| {
            Box::pin(async move {
                let st = match (&c.st.fleet, ns) {
                    (Some(f), ns) if ns.is_shared() => &f.scan,
                    (None, ns) if ns.is_fleet() => return Ok(Vec::new()),
                    _ => &c.st.scan,
                };
                let rows = c
                    .client
                    .query(st, &[&ns_id(ns), &prefix, &end])
                    .await
                    .map_err(pg_err("scan"))?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
    }

    fn last(&self, ns: Namespace, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let (prefix, end) = (prefix.to_vec(), prefix_end(prefix));
        self.read(move |c| {
            Box::pin(async move {
                let st = match (&c.st.fleet, ns) {
                    (Some(f), ns) if ns.is_shared() => &f.last,
                    (None, ns) if ns.is_fleet() => return Ok(None),
                    _ => &c.st.last,
                };
                let row = c
                    .client
                    .query_opt(st, &[&ns_id(ns), &prefix, &end])
                    .await
                    .map_err(pg_err("read the last entry"))?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            })
        })
    }

    fn is_fleet(&self) -> bool {
        self.shared.settings.fleet.is_some()
    }

    fn lock_shared(&self, since: Option<u64>) -> Result<super::Shared, StoreError> {
        let sh = self.shared.clone();
        self.run(async move { sh.lock_shared(since).await })
    }

    fn lock_grant(&self, since: u64) -> Result<(Option<Vec<u8>>, super::Shared), StoreError> {
        let sh = self.shared.clone();
        self.run(async move { sh.lock_grant(since).await })
    }

    fn lock_grants(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let sh = self.shared.clone();
        self.run(async move { sh.lock_grants().await })
    }

    fn read_shared(&self, since: u64) -> Result<super::Shared, StoreError> {
        self.read(move |c| {
            Box::pin(async move {
                let Some(f) = &c.st.fleet else {
                    return Err(StoreError::NoFleet);
                };
                let rows = c
                    .client
                    .query(&f.since, &[&(since as i64)])
                    .await
                    .map_err(pg_err("read the fleet's rows"))?;
                shared_rows(rows)
            })
        })
    }

    /// The fleet's members as the database lists them.
    fn fleet_members(&self) -> Result<Vec<MemberRow>, StoreError> {
        if self.shared.settings.fleet.is_none() {
            return Err(StoreError::NoFleet);
        }
        self.read(|c| {
            Box::pin(async move {
                let rows = c
                    .client
                    .query(
                        "SELECT name, node_id, seed_id, \
                         extract(epoch FROM joined_at)::float8, extract(epoch FROM seen_at)::float8 \
                         FROM warden_member ORDER BY name",
                        &[],
                    )
                    .await
                    .map_err(pg_err("list the fleet's members"))?;
                Ok(rows
                    .into_iter()
                    .map(|r| MemberRow {
                        name: r.get(0),
                        node_id: r.get(1),
                        seed_id: r.get(2),
                        joined_at: r.get::<_, f64>(3) as u64,
                        seen_at: r.get::<_, f64>(4) as u64,
                    })
                    .collect())
            })
        })
    }

    fn abandon(&self) {
        if !self.shared.txn_open.load(Ordering::SeqCst) {
            return;
        }
        let sh = self.shared.clone();
        let _ = self.run(async move {
            sh.abandon().await;
            Ok(())
        });
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let (sh, batch) = (self.shared.clone(), batch.clone());
        self.run(async move { sh.apply(batch).await })
    }

    fn fence(&self) -> Result<(), StoreError> {
        self.shared.check_local().map(|_| ())
    }

    fn lease(&self) -> Option<LeaseStatus> {
        let l = self.shared.lease.lock().unwrap_or_else(|p| p.into_inner());
        let role = if l.deposed.is_some() {
            Role::Deposed
        } else if l.epoch > 0 {
            Role::Active
        } else {
            Role::Standby
        };
        Some(LeaseStatus {
            role,
            epoch: l.epoch,
            renewed_ago: l.renewed.map(|r| r.elapsed()),
            predecessors_gone: l.predecessors_gone,
        })
    }

    fn timings(&self) -> Vec<Timing> {
        let sh = &self.shared;
        vec![
            Timing {
                step: "commit",
                nanos: sh.commit_nanos.load(Ordering::Relaxed),
                count: sh.commit_count.load(Ordering::Relaxed),
            },
            Timing {
                step: "read",
                nanos: sh.read_nanos.load(Ordering::Relaxed),
                count: sh.read_count.load(Ordering::Relaxed),
            },
            Timing {
                step: "fleet-lock",
                nanos: sh.lock_nanos.load(Ordering::Relaxed),
                count: sh.lock_count.load(Ordering::Relaxed),
            },
            Timing {
                step: "fleet-share",
                nanos: sh.share_nanos.load(Ordering::Relaxed),
                count: sh.share_count.load(Ordering::Relaxed),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_clock_is_the_boot_clock_which_counts_suspended_time() {
        // What the lease reads lies between two readings of CLOCK_BOOTTIME: a clock of another
        // origin (the wall clock, or CLOCK_MONOTONIC on a host that was ever suspended) would
        // not. On a host never suspended, CLOCK_MONOTONIC reads the same as CLOCK_BOOTTIME, and
        // no test can suspend the host; so the clock's identity is held too.
        assert_eq!(LEASE_CLOCK, nix::time::ClockId::CLOCK_BOOTTIME);
        let boot = || Duration::from(nix::time::clock_gettime(LEASE_CLOCK).unwrap());
        let before = boot();
        let read = BootInstant::now();
        let after = boot();
        assert!(
            before <= read.0 && read.0 <= after,
            "{before:?} <= {:?} <= {after:?}",
            read.0
        );
        assert_eq!(
            (read + Duration::from_secs(5)).0,
            read.0 + Duration::from_secs(5)
        );
        assert_eq!((read - read.0).0, Duration::ZERO, "saturates, never wraps");
    }

    #[test]
    fn a_prefix_ends_at_the_next_key_that_does_not_start_with_it() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let s = PgSettings {
            conninfo: "host=db user=warden".into(),
            password: Some(Zeroizing::new("hunter2".into())),
            tls: PgTls::Disable,
            lease: Duration::from_secs(6),
            renew: Duration::from_secs(2),
            holder: "a".into(),
            fleet: None,
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<set>"),
            "{shown}"
        );
    }
}
