//! The PostgreSQL backend on a real server (started by the harness): the same answers as sled,
//! every commit fenced by the lease, a paused holder that answers nothing, and bad settings
//! refused with what to do.

mod common;

use common::pg;
use std::sync::Arc;
use std::time::Duration;
use warden::store::postgres::PgBackend;
use warden::store::{Backend, Batch, Namespace, Role, Store, StoreError};

fn backend(db: &str, holder: &str) -> PgBackend {
    PgBackend::open(pg::shared().settings(db, holder)).unwrap()
}

/// Why opening with `s` was refused.
fn refusal(s: warden::store::postgres::PgSettings) -> String {
    PgBackend::open(s).err().expect("refused").to_string()
}

fn put(b: &dyn Backend, ns: Namespace, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    batch.put(ns, k.to_vec(), v.to_vec());
    b.commit(&batch)
}

#[test]
fn reads_scans_and_last_answer_as_sled_does_for_the_same_commits() {
    let db = pg::shared().database("same_as_sled");
    let p = backend(&db, "a");
    assert_eq!(p.try_acquire().unwrap(), Some(1));
    let dir = tempfile::tempdir().unwrap();
    let s = warden::store::sled::SledBackend::open(dir.path()).unwrap();
    // Keys that sort differently as text and as bytes, empty values, a prefix ending in 0xff,
    // the same keys in two namespaces, and deletions.
    let keys: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"a\xff".to_vec(),
        b"a\xff\x01".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        vec![0xff, 0xff],
        vec![],
    ];
    for (i, k) in keys.iter().enumerate() {
        let mut batch = Batch::default();
        batch.put(Namespace::Audit, k.clone(), vec![i as u8; i]);
        batch.put(Namespace::Vls, k.clone(), b"v".to_vec());
        if i % 3 == 2 {
            batch.delete(Namespace::Vls, keys[i - 1].clone());
        }
        p.commit(&batch).unwrap();
        s.commit(&batch).unwrap();
    }
    for ns in [Namespace::Audit, Namespace::Vls, Namespace::Meta] {
        for prefix in [&b""[..], b"a", b"a\xff", b"\xff", b"zz"] {
            let want: Vec<_> = s
                .scan(ns, prefix)
                .unwrap()
                .into_iter()
                .filter(|(k, _)| !(ns == Namespace::Meta && k == b"format"))
                .collect();
            assert_eq!(p.scan(ns, prefix).unwrap(), want, "{ns:?} {prefix:?}");
            if ns != Namespace::Meta {
                assert_eq!(p.last(ns, prefix).unwrap(), s.last(ns, prefix).unwrap());
            }
        }
        for k in &keys {
            assert_eq!(p.get(ns, k).unwrap(), s.get(ns, k).unwrap());
        }
    }
}

#[test]
fn a_batch_is_committed_whole_or_not_at_all() {
    let db = pg::shared().database("atomic");
    let p = backend(&db, "a");
    p.try_acquire().unwrap().unwrap();
    put(&p, Namespace::Meta, b"before", b"1").unwrap();
    // A second writer that took the lease in between makes the whole batch fail.
    pg::shared().sql(
        &db,
        "UPDATE warden_lease SET epoch = epoch + 1, holder = 'intruder'",
    );
    let mut batch = Batch::default();
    batch.put(Namespace::Meta, b"one".to_vec(), b"1".to_vec());
    batch.put(Namespace::Audit, b"two".to_vec(), b"2".to_vec());
    batch.delete(Namespace::Meta, b"before".to_vec());
    let e = p.commit(&batch).unwrap_err().to_string();
    assert!(e.contains("taken over by intruder (epoch 2)"), "{e}");
    assert_eq!(p.get(Namespace::Meta, b"one").unwrap(), None);
    assert_eq!(p.get(Namespace::Audit, b"two").unwrap(), None);
    assert_eq!(
        p.get(Namespace::Meta, b"before").unwrap(),
        Some(b"1".to_vec())
    );
}

#[test]
fn one_holder_at_a_time_and_a_deposed_one_never_commits_again() {
    let db = pg::shared().database("fencing");
    let a = backend(&db, "wardend-a");
    let b = backend(&db, "wardend-b");
    assert_eq!(a.try_acquire().unwrap(), Some(1));
    assert_eq!(b.try_acquire().unwrap(), None, "the lease is held");
    put(&a, Namespace::Meta, b"k", b"a").unwrap();
    assert_eq!(b.lease().unwrap().role, Role::Standby);
    // A stops renewing (as if paused); once its lease expires by the server's clock, B takes it.
    let epoch = loop {
        if let Some(e) = b.try_acquire().unwrap() {
            break e;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(epoch, 2);
    // By its own clock A's lease lapsed before B could take it: A refuses without asking.
    let e = put(&a, Namespace::Meta, b"k", b"stale").unwrap_err();
    assert!(matches!(e, StoreError::LeaseLapsed { epoch: 1, .. }), "{e}");
    // Its next renewal finds B's epoch: deposed, for good.
    let e = a.renew().unwrap_err();
    assert!(
        matches!(&e, StoreError::Deposed { epoch: 1, by } if by == "wardend-b (epoch 2)"),
        "{e}"
    );
    let e = put(&a, Namespace::Meta, b"k", b"stale")
        .unwrap_err()
        .to_string();
    assert!(e.contains("taken over by wardend-b (epoch 2)"), "{e}");
    assert!(matches!(a.fence(), Err(StoreError::Deposed { .. })));
    assert_eq!(a.lease().unwrap().role, Role::Deposed);
    assert!(matches!(a.renew(), Err(StoreError::Deposed { .. })));
    assert!(
        matches!(a.try_acquire(), Err(StoreError::Deposed { .. })),
        "a deposed process never holds the lease again"
    );
    put(&b, Namespace::Meta, b"k", b"b").unwrap();
    assert_eq!(b.get(Namespace::Meta, b"k").unwrap(), Some(b"b".to_vec()));
    assert_eq!(b.lease().unwrap().role, Role::Active);
}

#[test]
fn a_holder_that_did_not_renew_in_time_answers_nothing_until_it_renews() {
    let db = pg::shared().database("lapse");
    let a = Arc::new(backend(&db, "a"));
    a.try_acquire().unwrap().unwrap();
    let store = Store::new(a.clone());
    store
        .write(|| store.put(Namespace::Meta, b"x".to_vec(), b"1".to_vec()))
        .unwrap();
    // The lease is 3 s; held locally until 2.4 s after the last renewal was sent. Not renewed
    // (a pause), no request even begins, so nothing is computed from memory and answered.
    // A transaction begun in time, empty, whose answer would rest only on memory:
    let t = store.begin().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let e = t.commit().unwrap_err().to_string();
    assert!(e.contains("has not been renewed"), "{e}");
    let e = store.begin().err().unwrap().to_string();
    assert!(e.contains("has not been renewed"), "{e}");
    assert!(matches!(a.fence(), Err(StoreError::LeaseLapsed { .. })));
    // Nobody took over: a renewal brings it back.
    a.renew().unwrap();
    store
        .write(|| store.put(Namespace::Meta, b"x".to_vec(), b"2".to_vec()))
        .unwrap();
    assert_eq!(a.get(Namespace::Meta, b"x").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn a_commit_that_got_no_answer_is_ended_on_the_server_before_anything_is_read() {
    let server = pg::shared();
    let db = server.database("unanswered");
    // As an operator runs it: wardend's own role, no superuser, owning its database.
    server.sql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE warden_app LOGIN PASSWORD 'app-secret'; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    server.sql(
        "postgres",
        &format!("ALTER DATABASE {db} OWNER TO warden_app"),
    );
    let mut settings = server.settings(&db, "a");
    settings.conninfo.push_str(" user=warden_app");
    settings.password = Some(zeroize::Zeroizing::new("app-secret".into()));
    let a = PgBackend::open(settings).unwrap();
    a.try_acquire().unwrap().unwrap();
    put(&a, Namespace::Meta, b"before", b"1").unwrap();
    // The server takes a minute to write the next row (a stalled disk, a lock held elsewhere):
    // longer than wardend waits (the 3 s lease), so the commit gets no answer while it runs.
    server.sql(
        &db,
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$; \
         CREATE TRIGGER stall BEFORE INSERT ON warden_kv FOR EACH ROW EXECUTE FUNCTION stall()",
    );
    a.renew().unwrap();
    let e = put(&a, Namespace::Meta, b"late", b"1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not answer within 3s"), "{e}");
    assert!(
        e.contains("its session on the server was ended, so it cannot land later"),
        "{e}"
    );
    // Dropping the trigger waits for any write still using it (the stalled one, had its session
    // not been ended, which would then land): it never lands, so a reload after the failure
    // reads what the server keeps.
    server.sql(&db, "DROP TRIGGER stall ON warden_kv");
    assert_eq!(a.get(Namespace::Meta, b"late").unwrap(), None);
    assert_eq!(
        server.sql(&db, "SELECT count(*) FROM warden_kv WHERE key = 'late'"),
        "0"
    );
    // And service resumes once the lease is renewed.
    a.renew().unwrap();
    put(&a, Namespace::Meta, b"after", b"1").unwrap();
    assert_eq!(
        a.get(Namespace::Meta, b"after").unwrap(),
        Some(b"1".to_vec())
    );
}

#[test]
fn without_the_lease_nothing_is_written() {
    let db = pg::shared().database("nolease");
    let a = backend(&db, "a");
    let e = put(&a, Namespace::Meta, b"k", b"v")
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not hold the database's lease"), "{e}");
    assert_eq!(
        a.get(Namespace::Meta, b"k").unwrap(),
        None,
        "reads need no lease"
    );
}

#[test]
fn a_released_lease_is_taken_at_once() {
    let db = pg::shared().database("release");
    let a = backend(&db, "a");
    let b = backend(&db, "b");
    a.try_acquire().unwrap().unwrap();
    a.release().unwrap();
    // Released for good: the renewal thread of a stopping wardend cannot take it back.
    assert!(matches!(a.renew(), Err(StoreError::NoLease)));
    assert!(matches!(a.try_acquire(), Err(StoreError::NoLease)));
    assert!(put(&a, Namespace::Meta, b"k", b"v").is_err());
    assert_eq!(b.try_acquire().unwrap(), Some(2));
    assert!(put(&a, Namespace::Meta, b"k", b"v").is_err());
}

#[test]
fn a_server_that_acknowledges_before_durable_is_refused() {
    let db = pg::shared().database("async_commit");
    pg::shared().sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET synchronous_commit = off"),
    );
    let e = refusal(pg::shared().settings(&db, "a"));
    assert!(
        e.contains("synchronous_commit is off") && e.contains("set synchronous_commit = on"),
        "{e}"
    );
}

#[test]
fn a_schema_newer_than_this_wardend_is_refused() {
    let db = pg::shared().database("newer");
    drop(backend(&db, "a"));
    pg::shared().sql(&db, "INSERT INTO warden_schema (version) VALUES (99)");
    let e = refusal(pg::shared().settings(&db, "a"));
    assert!(
        e.contains("schema is version 99") && e.contains("run the wardend that wrote it"),
        "{e}"
    );
}

#[test]
fn a_wrong_password_and_an_absent_server_say_what_failed() {
    let db = pg::shared().database("badauth");
    let mut s = pg::shared().settings(&db, "a");
    s.password = Some(zeroize::Zeroizing::new("wrong".into()));
    let e = refusal(s);
    assert!(e.contains("password authentication failed"), "{e}");
    let mut s = pg::shared().settings(&db, "a");
    s.conninfo = format!(
        "host=127.0.0.1 port={} user=warden dbname={db}",
        common::daemon::free_port()
    );
    let e = refusal(s);
    assert!(
        e.contains("cannot be reached") && e.contains("temporary failures"),
        "{e}"
    );
}

#[test]
fn migrate_copies_a_sled_state_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = warden::store::sled::SledBackend::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    for i in 0..500u32 {
        batch.put(Namespace::Vls, i.to_be_bytes().to_vec(), vec![7; 40]);
    }
    batch.put(Namespace::Audit, b"rec".to_vec(), b"{}".to_vec());
    s.commit(&batch).unwrap();
    let db = pg::shared().database("migrate");
    let p = backend(&db, "migrate");
    p.try_acquire().unwrap().unwrap();
    let copied = warden::store::migrate::copy_all(&s, &p).unwrap();
    let vls = copied.iter().find(|c| c.ns == Namespace::Vls).unwrap();
    assert_eq!(vls.records, 500);
    assert_eq!(p.scan(Namespace::Vls, b"").unwrap().len(), 500);
    // Twice is refused: the destination holds state now.
    let e = warden::store::migrate::copy_all(&s, &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds state"), "{e}");
}

/// Issue 25, item 9: a state the server passes through (here a database that accepts no
/// writes, as a replica or a server in recovery answers: 25006) is waited out, never a reason
/// to exit: opening reports it as unavailable (wardend retries), and a standby's wait for the
/// lease goes on through it. An authentication error stays an error.
#[test]
fn a_database_passing_through_a_read_only_state_is_waited_out_not_fatal() {
    let server = pg::shared();
    let db = server.database("read_only");
    server.sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
    );
    match PgBackend::open(server.settings(&db, "a")) {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert!(e.to_string().contains("read-only"), "{e}")
        }
        Err(e) => panic!("a read-only database must be waited out, not fatal: {e}"),
        Ok(_) => panic!("a read-only database cannot take the schema"),
    }
    server.sql(
        "postgres",
        &format!("ALTER DATABASE {db} RESET default_transaction_read_only"),
    );
    let b = PgBackend::open(server.settings(&db, "a")).unwrap();
    let standby = PgBackend::open(server.settings(&db, "b")).unwrap();
    // The database turns read-only (a failover to a replica in progress) and every session is
    // cut, so the standby's next poll reconnects into it.
    server.sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
    );
    server.sql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}'"
        ),
    );
    let mut polls = 0;
    let r = standby.acquire(|_| {
        polls += 1;
        polls < 3
    });
    assert!(
        matches!(r, Ok(None)),
        "the standby kept waiting through the read-only state: {r:?}"
    );
    drop(b);
}
