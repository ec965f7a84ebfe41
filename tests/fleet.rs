//! Several wardends, one treasury: members of a fleet on one real PostgreSQL server share the
//! windows of limits with `scope = "fleet"`, decided under the fleet's lock, each member's own
//! state kept apart in a schema of its own.

mod common;

use common::cln::{Cln, Payee};
use common::daemon::{free_port, Daemon};
use common::pg;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::block_in_place;
use warden::core::PolicyEngine;
use warden::policy::{parse_policy, LedgerKey, PaymentRequest};
use warden::store::postgres::{FleetMember, PgBackend, PgSettings};
use warden::store::{Backend, Namespace, Store, StoreError};

const PAYEE: &str = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
const T0: u64 = 1_795_435_200;
const SAT: u64 = 1_000;

fn member_settings(db: &str, fleet: &str, member: &str) -> PgSettings {
    PgSettings {
        fleet: Some(FleetMember {
            fleet: fleet.into(),
            member: member.into(),
        }),
        ..pg::shared().settings(db, member)
    }
}

/// A member's store, holding its own lease.
fn member(db: &str, fleet: &str, name: &str) -> Store {
    let b = Arc::new(PgBackend::open(member_settings(db, fleet, name)).unwrap());
    assert_eq!(
        b.try_acquire().unwrap(),
        Some(1),
        "each member has a lease of its own: {name} takes its first"
    );
    b.start_renewing();
    Store::new(b)
}

/// A company-wide daily cap of 100,000 sat, and a node's own cap far above it.
fn fleet_policy() -> Arc<warden::policy::Policy> {
    Arc::new(
        parse_policy(
            r#"version = 1
[[limit]]
tag = "company-daily"
scope = "fleet"
window = "24h"
max_amount = "100_000 sat"
[[limit]]
tag = "node-daily"
window = "24h"
max_amount = "1_000_000 sat"
"#,
        )
        .unwrap(),
    )
}

fn pay(member: u8, n: u32, sat: u64) -> PaymentRequest {
    let mut hash = [member; 32];
    hash[..4].copy_from_slice(&n.to_be_bytes());
    PaymentRequest::invoice(hash, sat * SAT, PAYEE, None)
}

/// Decide one payment as the signer does: in a transaction, the fleet's window read under the
/// fleet's lock, committed before the answer counts.
fn decide(engine: &mut PolicyEngine, store: &Store, req: &PaymentRequest, now: u64) -> bool {
    let txn = store.begin().unwrap();
    engine.sync_shared().unwrap();
    let d = engine.decide(req, now).unwrap();
    txn.commit().unwrap();
    d.is_approved()
}

#[test]
fn three_members_paying_at_once_fill_the_fleet_cap_exactly_and_count_each_payment_once() {
    let db = pg::shared().database("fleet_cap");
    let names = ["node-a", "node-b", "node-c"];
    // Every member open and loaded before any pays, then all three start together.
    let members: Vec<(Store, PolicyEngine)> = names
        .iter()
        .map(|name| {
            let store = member(&db, "acme", name);
            let engine = PolicyEngine::open(fleet_policy(), store.clone(), T0).unwrap();
            (store, engine)
        })
        .collect();
    let start = Arc::new(std::sync::Barrier::new(names.len()));
    let handles: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, (store, mut engine))| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut approved = 0u64;
                // 7,000 sat each: 14 fit under 100,000 (98,000), the 15th never does. Each
                // member alone would pay 30 of them; together they race for the same room.
                for n in 0..30u32 {
                    if decide(
                        &mut engine,
                        &store,
                        &pay(i as u8 + 1, n, 7_000),
                        T0 + 60 + u64::from(n),
                    ) {
                        approved += 7_000 * SAT;
                    }
                }
                (
                    approved,
                    engine
                        .state()
                        .totals(&LedgerKey::Node, T0 + 90, 86_400)
                        .amount_msat,
                )
            })
        })
        .collect();
    let results: Vec<(u64, u128)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let approved: u64 = results.iter().map(|r| r.0).sum();
    assert_eq!(
        approved,
        98_000 * SAT,
        "together the members approved exactly what fits under the fleet cap: {results:?}"
    );
    for (i, (mine, node_total)) in results.iter().enumerate() {
        assert_eq!(
            u128::from(*mine),
            *node_total,
            "member {i}'s own window counts its own approvals and nobody else's"
        );
    }
    // What the database holds, as each member reads it from scratch, is every approval once.
    for name in names {
        let store = member(&db, "acme", &format!("{name}-reader"));
        let engine = PolicyEngine::open(fleet_policy(), store, T0 + 120).unwrap();
        assert_eq!(
            engine
                .state()
                .totals(&LedgerKey::Fleet, T0 + 120, 86_400)
                .amount_msat,
            u128::from(approved),
            "the fleet's window holds each approval exactly once"
        );
        assert_eq!(
            engine
                .state()
                .totals(&LedgerKey::Node, T0 + 120, 86_400)
                .amount_msat,
            0,
            "a member's own windows are its own: a new member starts with none"
        );
    }
}

#[test]
fn a_discarded_decision_releases_the_fleet_lock_and_counts_nothing() {
    let db = pg::shared().database("fleet_abort");
    let (a, b) = (member(&db, "acme", "node-a"), member(&db, "acme", "node-b"));
    let mut ea = PolicyEngine::open(fleet_policy(), a.clone(), T0).unwrap();
    let mut eb = PolicyEngine::open(fleet_policy(), b.clone(), T0).unwrap();
    // A decides 60,000 under the lock, then its request is discarded (VLS failed, say).
    let txn = a.begin().unwrap();
    ea.sync_shared().unwrap();
    assert!(ea
        .decide(&pay(1, 0, 60_000), T0 + 60)
        .unwrap()
        .is_approved());
    txn.abort();
    ea.reload().unwrap();
    // B is not kept waiting, and the room A did not use is B's.
    assert!(decide(&mut eb, &b, &pay(2, 0, 90_000), T0 + 61));
    assert!(
        !decide(&mut ea, &a, &pay(1, 1, 20_000), T0 + 62),
        "90,000 + 20,000 is over the fleet cap"
    );
    assert!(
        decide(&mut ea, &a, &pay(1, 2, 10_000), T0 + 63),
        "90,000 + 10,000 is exactly the cap"
    );
    assert_eq!(
        ea.state()
            .totals(&LedgerKey::Fleet, T0 + 64, 86_400)
            .amount_msat,
        100_000 * u128::from(SAT)
    );
}

/// The fleet's cap, and a small daily cap for node-b alone (`members`, named by node id).
fn scoped_policy(every: bool) -> Arc<warden::policy::Policy> {
    let b = "03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd";
    let members = if every {
        String::new()
    } else {
        format!("members = [\"{b}\"]\n")
    };
    Arc::new(
        parse_policy(&format!(
            "version = 1\n[fleet.members]\nnode-a = \"{PAYEE}\"\nnode-b = \"{b}\"\n\
             [[limit]]\ntag = \"company-daily\"\nscope = \"fleet\"\nwindow = \"24h\"\nmax_amount = \"100_000 sat\"\n\
             [[limit]]\ntag = \"b-small\"\nwindow = \"24h\"\nmax_amount = \"10_000 sat\"\n{members}"
        ))
        .unwrap(),
    )
}

#[test]
fn a_rule_scoped_to_one_member_holds_on_that_member_alone() {
    let db = pg::shared().database("fleet_scoped");
    let (a, b) = (member(&db, "acme", "node-a"), member(&db, "acme", "node-b"));
    let mut ea = PolicyEngine::open(scoped_policy(false), a.clone(), T0).unwrap();
    let mut eb = PolicyEngine::open(scoped_policy(false), b.clone(), T0).unwrap();
    ea.set_member(Some("node-a".into()));
    eb.set_member(Some("node-b".into()));
    let tags = |e: &mut PolicyEngine, store: &Store, req: &PaymentRequest, at: u64| {
        let txn = store.begin().unwrap();
        e.sync_shared().unwrap();
        let d = e.decide(req, at).unwrap();
        txn.commit().unwrap();
        (d.is_approved(), d.tags)
    };
    let (ok, t) = tags(&mut ea, &a, &pay(1, 0, 30_000), T0 + 60);
    assert!(ok, "b-small is not node-a's rule: {t:?}");
    let (ok, t) = tags(&mut eb, &b, &pay(2, 0, 30_000), T0 + 61);
    assert!(
        !ok && t == ["b-small"],
        "node-b's own cap holds on node-b: {t:?}"
    );
    assert!(decide(&mut eb, &b, &pay(2, 1, 8_000), T0 + 62));
    // The fleet's window still counts both: 30,000 + 8,000 + 65,000 is over 100,000.
    let (ok, t) = tags(&mut ea, &a, &pay(1, 1, 65_000), T0 + 63);
    assert!(!ok && t == ["company-daily"], "{t:?}");
    // The rule extended to every member (a policy change): node-a's 30,000 is now over it.
    ea.with_policy(scoped_policy(true));
    let (ok, t) = tags(&mut ea, &a, &pay(1, 2, 1_000), T0 + 64);
    assert!(!ok && t == ["b-small"], "{t:?}");
}

#[test]
fn members_keep_their_own_state_apart_and_a_fleet_policy_needs_a_fleet() {
    let db = pg::shared().database("fleet_apart");
    let (a, b) = (member(&db, "acme", "node-a"), member(&db, "acme", "node-b"));
    a.write(|| a.put(Namespace::Meta, b"k".to_vec(), b"a's".to_vec()))
        .unwrap();
    assert_eq!(
        b.get(Namespace::Meta, b"k").unwrap(),
        None,
        "B never sees A's own rows"
    );
    // A single wardend's database (no fleet) cannot hold a fleet's window: refused by name.
    let single = PgBackend::open(pg::shared().settings(&db, "single")).unwrap();
    single.try_acquire().unwrap().unwrap();
    let err = PolicyEngine::open(fleet_policy(), Store::new(Arc::new(single)), T0)
        .expect_err("a fleet policy without a fleet is refused");
    assert!(matches!(err, StoreError::NoFleet), "{err}");
    assert!(
        err.to_string()
            .contains("Configure [fleet] name and member"),
        "the refusal says what to do: {err}"
    );
    let local = tempfile::tempdir().unwrap();
    let err = PolicyEngine::open(fleet_policy(), Store::open(local.path()).unwrap(), T0)
        .expect_err("refused on a local backend too");
    assert!(matches!(err, StoreError::NoFleet), "{err}");
}

#[test]
fn a_member_name_stays_bound_to_its_node_and_seed() {
    let db = pg::shared().database("fleet_join");
    let a = PgBackend::open(member_settings(&db, "acme", "node-a")).unwrap();
    a.join_fleet("02aa", "seed-a", false).unwrap();
    a.join_fleet("02aa", "seed-a", true).unwrap();
    a.join_fleet("02aa", "seed-a", true).unwrap();
    let err = a
        .join_fleet("02ff", "seed-x", false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("member \"node-a\" of fleet \"acme\" is bound to node 02aa"),
        "{err}"
    );
    let b = PgBackend::open(member_settings(&db, "acme", "node-b")).unwrap();
    let err = b
        .join_fleet("02aa", "seed-b", true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node 02aa is already member \"node-a\""),
        "{err}"
    );
    b.join_fleet("02bb", "seed-b", false).unwrap();
    assert_eq!(b.fleet_members().unwrap().len(), 1, "a check binds nothing");
    b.join_fleet("02bb", "seed-b", true).unwrap();
    let members: Vec<_> = b
        .fleet_members()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.node_id))
        .collect();
    assert_eq!(
        members,
        vec![
            ("node-a".into(), "02aa".into()),
            ("node-b".into(), "02bb".into())
        ]
    );
}

const MEMBERS: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Three members of fleet "acme" on a new database (see [`Cln::start_fleet`]).
async fn start_fleet(label: &str, rules: &str) -> (String, Vec<Cln>) {
    Cln::start_fleet(label, rules, &MEMBERS, &[]).await
}

/// The fleet's one policy in the end-to-end tests: a company-wide daily cap, nothing per node.
const COMPANY_CAP: &str = r#"
[[limit]]
tag = "company-daily"
scope = "fleet"
window = "24h"
max_amount = "1_000_000 sat"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_paying_at_once_hold_the_company_cap_exactly_across_a_kill_and_a_failover() {
    let server = pg::shared();
    let (db, mut nodes) = start_fleet("fleet_e2e", COMPANY_CAP).await;
    let fleet = "acme";
    // Node A's wardend is killed and started again; node B's fails over to its standby.
    let mut a_again = nodes[0].daemon.twin("fleet-a2");
    let mut b_standby = nodes[1].daemon.twin("fleet-b2");
    block_in_place(|| b_standby.start_standby());
    let (pid_a, pid_b) = (nodes[0].pid(), nodes[1].pid());

    // Each node asks for 40 payments of 10,000 sat: 1,200,000 sat against a cap of 1,000,000.
    // A's wardend is killed after A's 10th answer, B's after B's 20th: each with payments of
    // its own still to come, while the other nodes keep paying.
    let answered: [AtomicU64; 3] = Default::default();
    let wait_for = |node: usize, n: u64| {
        while answered[node].load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let approved: Vec<u64> = block_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                wait_for(0, 10);
                nix::sys::signal::kill(pid_a, nix::sys::signal::Signal::SIGKILL).unwrap();
                a_again.start_wardend();
                wait_for(1, 20);
                nix::sys::signal::kill(pid_b, nix::sys::signal::Signal::SIGKILL).unwrap();
                b_standby.wait_ready(Duration::from_secs(30));
            });
            let payers: Vec<_> = nodes
                .iter_mut()
                .enumerate()
                .map(|(i, node)| {
                    let answered = &answered[i];
                    s.spawn(move || {
                        let payee = Payee::new(0x50 + i as u8);
                        let mut approved = 0u64;
                        for n in 1..=40 {
                            if node.preapprove(&payee.invoice(10_000 * SAT, n)) {
                                approved += 10_000 * SAT;
                            }
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        approved
                    })
                })
                .collect();
            payers.into_iter().map(|p| p.join().unwrap()).collect()
        })
    });
    let total: u64 = approved.iter().sum();
    assert_eq!(
        total,
        1_000_000 * SAT,
        "the three nodes together were approved exactly up to the company cap: {approved:?}"
    );
    assert!(
        approved.iter().all(|a| *a > 0),
        "every node was paying while the others were: {approved:?}"
    );
    // Every member reads the same window, holding each approval the nodes saw exactly once
    // (a payment answered by a killed wardend and sent again was not counted again).
    let c_window = nodes[2].window("company-daily").await;
    for (who, used) in [
        (
            "A, restarted",
            a_again.window("company-daily").await.used_msat,
        ),
        (
            "B's standby",
            b_standby.window("company-daily").await.used_msat,
        ),
        ("C", c_window.used_msat),
    ] {
        assert_eq!(used, total, "{who} reads the fleet's window");
    }
    assert_eq!(c_window.scope, "fleet");
    for n in nodes.iter_mut() {
        assert!(block_in_place(|| n.still_serves()), "no node was stopped");
    }

    // A fourth wardend, with a seed of its own, that claims to be node A: refused before it
    // even waits as a standby, with what to do.
    let mut outsider = Daemon::prepare_on("fleet-x", COMPANY_CAP, free_port(), Some(server));
    outsider.share_policy_of(&nodes[0].daemon);
    outsider.join(server, &db, fleet, "node-a");
    let out = block_in_place(|| outsider.run_wardend_to_exit());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("member \"node-a\" of fleet \"acme\" is bound to node")
            && err.contains("set fleet.member to this node's own name"),
        "{err}"
    );
    // Under a name of its own that the fleet's policy does not admit: refused, with how to be
    // admitted.
    outsider.join(server, &db, fleet, "node-d");
    let out = block_in_place(|| outsider.run_wardend_to_exit());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the policy in force does not admit fleet member \"node-d\"")
            && err.contains("its [fleet.members] lists node-a, node-b, node-c")
            && err.contains(&format!(
                "adds `node-d = \"{}\"` to [fleet.members]",
                outsider.node_id_from_init
            )),
        "{err}"
    );
    nodes[0].daemon.wardend = None;
    nodes[1].daemon.wardend = None;
}

/// One queue, one policy, one freeze for the fleet, each governed once.
const GOVERNED: &str = r#"
[[limit]]
tag = "company-daily"
scope = "fleet"
window = "24h"
max_amount = "5_000_000 sat"

[[approval]]
tag = "large-payment-quorum"
above = "500_000 sat"
quorum = { need = 2, of = ["alice", "bob", "carol"] }
expiry = "1h"
"#;

/// The id with `prefix` that wardenctl printed in `out` (a policy change, an unfreeze).
fn request_id(out: &str, prefix: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} id in {out}"))
        .trim_end_matches(';')
        .to_string()
}

/// `wardenctl fleet --json` through `d`.
fn fleet_json(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&ctl_ok(d, "carol", &["fleet", "--json"])).unwrap()
}

fn ctl_ok(d: &Daemon, admin: &str, args: &[&str]) -> String {
    let out = d.wardenctl(admin, args);
    assert!(
        out.status.success(),
        "wardenctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_payment_a_tightening_and_a_freeze_are_each_the_fleets_once() {
    let (db, mut nodes) = start_fleet("fleet_gov", GOVERNED).await;
    let payee = Payee::new(0x61);

    // Held on B; the admins see it, with B's name, through A's admin API and approve it there.
    let large = payee.invoice(600_000 * SAT, 1);
    assert!(
        !block_in_place(|| nodes[1].preapprove(&large)),
        "held for the quorum"
    );
    let pending = block_in_place(|| nodes[0].pending());
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["member"], "node-b", "{pending:?}");
    let table = ctl_ok(&nodes[2].daemon, "carol", &["pending"]);
    assert!(
        table.contains("NODE") && table.contains("node-b"),
        "the table names the node too: {table}"
    );
    let id = pending[0]["id"].as_str().unwrap().to_string();
    for admin in ["alice", "bob"] {
        block_in_place(|| nodes[0].approve(admin, &id));
    }
    // C cannot spend B's approval; B pays with it, once.
    assert!(
        !block_in_place(|| nodes[2].preapprove(&large)),
        "another member's approval"
    );
    assert!(
        block_in_place(|| nodes[1].preapprove(&large)),
        "B's approval pays on B"
    );
    // B's decision record names the fleet, B, and the fleet window that counted the payment;
    // it is in B's own audit chain, not in A's, through whose API it was approved.
    let paid = |d: &Daemon| -> Vec<serde_json::Value> {
        d.audit_records("decision")
            .into_iter()
            .filter(|r| r["data"]["verdict"] == "approve")
            .collect()
    };
    let on_b = paid(&nodes[1].daemon);
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(
        on_b[0]["data"]["fleet"],
        serde_json::json!({"name": "acme", "member": "node-b", "windows": ["company-daily"]})
    );
    assert!(paid(&nodes[0].daemon).is_empty(), "A decided nothing");

    // A tightening proposed on C and approved through A is in force on all three at once: the
    // company cap falls to 750,000 sat, of which 600,000 are spent.
    let text = std::fs::read_to_string(&nodes[2].policy).unwrap().replace(
        "max_amount = \"5_000_000 sat\"",
        "max_amount = \"750_000 sat\"",
    );
    let tightened = nodes[2].token.path().join("tightened.toml");
    std::fs::write(&tightened, &text).unwrap();
    let out = ctl_ok(
        &nodes[2].daemon,
        "carol",
        &["policy", "propose", tightened.to_str().unwrap()],
    );
    let change = request_id(&out, "pc-");
    for admin in ["alice", "bob"] {
        block_in_place(|| nodes[0].approve(admin, &change));
    }
    let hash = warden::policy::parse_policy(&text).unwrap().hash_hex();
    for (i, n) in nodes.iter_mut().enumerate() {
        let small = payee.invoice(200_000 * SAT, 10 + i as u64);
        assert!(
            !block_in_place(|| n.preapprove(&small)),
            "{}: 600,000 + 200,000 is over the tightened cap",
            MEMBERS[i]
        );
        assert_eq!(
            n.status().await.policy_hash,
            hash,
            "{} runs the new policy",
            MEMBERS[i]
        );
    }
    assert!(block_in_place(
        || nodes[0].preapprove(&payee.invoice(100_000 * SAT, 20))
    ));

    // One admin freezes the fleet through B: the next request on each node is refused.
    ctl_ok(
        &nodes[1].daemon,
        "carol",
        &["freeze", "--reason", "incident 7"],
    );
    for (i, n) in nodes.iter_mut().enumerate() {
        assert!(
            !block_in_place(|| n.preapprove(&payee.invoice(1_000 * SAT, 30 + i as u64))),
            "{} is frozen from its first request on",
            MEMBERS[i]
        );
        assert!(block_in_place(|| n.still_serves()));
    }
    let status = nodes[2].status().await;
    assert_eq!(
        status.fleet,
        "acme: member node-c of 3 admitted (node-a, node-b, node-c)"
    );
    assert!(
        status.frozen.contains("incident 7"),
        "C, where nobody froze anything, reports the fleet's freeze: {status:?}"
    );

    // Someone with write access to the fleet's database rewrites the freeze as lifted: no
    // member takes it, because no quorum lifted it.
    pg::shared().sql(
        &db,
        "UPDATE \"warden:acme\".warden_fleet SET seq = seq + 1; \
         UPDATE \"warden:acme\".warden_fleet_kv SET value = 'null'::bytea, \
         seq = (SELECT seq FROM \"warden:acme\".warden_fleet) \
         WHERE ns = 82 AND key = 'freeze'::bytea",
    );
    for (i, n) in nodes.iter_mut().enumerate() {
        assert!(
            !block_in_place(|| n.preapprove(&payee.invoice(1_000 * SAT, 40 + i as u64))),
            "{} stays frozen",
            MEMBERS[i]
        );
        assert!(n.status().await.frozen.contains("incident 7"));
    }

    // The quorum lifts it through C, the unfreeze approved through A: every node pays again.
    let out = ctl_ok(&nodes[2].daemon, "alice", &["unfreeze"]);
    let unfreeze = request_id(&out, "uf-");
    for admin in ["alice", "bob"] {
        block_in_place(|| nodes[0].approve(admin, &unfreeze));
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        assert!(
            block_in_place(|| n.preapprove(&payee.invoice(1_000 * SAT, 50 + i as u64))),
            "{} pays again once the quorum lifted the freeze",
            MEMBERS[i]
        );
    }

    // The fleet's report, from C: each member's log verified, added up per member and for the
    // fleet (B 600,000 + 1,000; A 100,000 + 1,000; C 1,000 sat approved).
    let out = nodes[2]
        .token
        .command("wardenctl")
        .args(["report", "--fleet", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let approved = |v: &serde_json::Value| v["approved"]["amount_msat"].as_u64().unwrap();
    assert_eq!(report["fleet"], "acme");
    for (m, sat) in [("node-a", 101_000), ("node-b", 601_000), ("node-c", 1_000)] {
        assert_eq!(approved(&report["members"][m]), sat * SAT, "{m}: {report}");
    }
    assert_eq!(approved(&report["total"]), 703_000 * SAT, "{report}");
    assert_eq!(report["total"]["approved"]["count"], 5);
    assert_eq!(
        report["total"]["daily_limit_msat"],
        750_000 * SAT,
        "the fleet's cap"
    );
    // On a wardend that is not a fleet member, --fleet says what it needs.
    let out = Daemon::prepare("fleet-single", "", free_port())
        .token
        .command("wardenctl")
        .args(["report", "--fleet"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--fleet: this configuration is not a fleet member's"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_member_stuck_holding_the_fleet_lock_is_cut_off_and_the_others_go_on() {
    let db = pg::shared().database("fleet_stuck");
    // Leases of 3 s (the harness's): a member waits at most 1.5 s for the lock, and the server
    // ends a transaction left idle holding it after 3 s.
    let (a, b) = (member(&db, "acme", "node-a"), member(&db, "acme", "node-b"));
    let mut eb = PolicyEngine::open(fleet_policy(), b.clone(), T0).unwrap();
    let stuck = a.begin().unwrap();
    a.sync_shared().unwrap();
    // B cannot take the lock while A sits on it: refused (fail closed), with why.
    let txn = b.begin().unwrap();
    let err = eb.sync_shared().unwrap_err().to_string();
    assert!(
        err.contains("another member held it longer than store.lease_secs / 2"),
        "{err}"
    );
    txn.abort();
    eb.reload().unwrap();
    // Once the server has ended A's transaction, B decides again.
    std::thread::sleep(Duration::from_secs(4));
    assert!(decide(&mut eb, &b, &pay(2, 0, 10_000), T0 + 60));
    // A's own commit cannot land on a lock it lost: nothing of it is written.
    a.put(Namespace::FleetVelocity, b"late".to_vec(), vec![0; 16])
        .unwrap();
    assert!(
        stuck.commit().is_err(),
        "the stuck transaction commits nothing"
    );
    assert_eq!(
        b.read_shared()
            .unwrap()
            .rows
            .iter()
            .filter(|r| r.1 == b"late")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_frozen_alone_stops_only_its_node_until_the_quorum_lifts_it() {
    let (_db, mut nodes) = start_fleet("fleet_one", GOVERNED).await;
    let payee = Payee::new(0x71);
    // Through A, one admin freezes B alone.
    let out = ctl_ok(
        &nodes[0].daemon,
        "carol",
        &[
            "freeze",
            "--member",
            "node-b",
            "--reason",
            "node-b looks compromised",
        ],
    );
    assert!(
        out.contains("fleet member node-b is frozen by carol"),
        "{out}"
    );
    for (i, n) in nodes.iter_mut().enumerate() {
        let ok = block_in_place(|| n.preapprove(&payee.invoice(1_000 * SAT, i as u64)));
        assert_eq!(ok, i != 1, "{}: only node-b is frozen", MEMBERS[i]);
    }
    assert!(
        nodes[1]
            .status()
            .await
            .frozen
            .contains("node-b looks compromised (fleet member node-b alone)"),
        "B reports its freeze"
    );
    assert_eq!(nodes[0].status().await.frozen, "", "A is not frozen");
    let fleet = fleet_json(&nodes[2].daemon);
    let alone: Vec<bool> = fleet["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["frozen_alone"].as_bool().unwrap())
        .collect();
    assert_eq!(alone, [false, true, false], "{fleet}");
    assert_eq!(fleet["frozen"], false);
    // A name the policy does not admit is refused, saying which names it admits.
    let out = nodes[0].wardenctl("carol", &["freeze", "--member", "node-x", "--reason", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("\"node-x\" is not a member the fleet's policy admits; its [fleet.members] lists node-a, node-b, node-c"),
        "{err}"
    );
    // Lifting it takes the quorum: asked for through C, approved through A.
    let out = ctl_ok(
        &nodes[2].daemon,
        "alice",
        &["unfreeze", "--member", "node-b"],
    );
    let id = request_id(&out, "uf-");
    assert!(
        !block_in_place(|| nodes[1].preapprove(&payee.invoice(1_000 * SAT, 10))),
        "still frozen while the request waits for its quorum"
    );
    for admin in ["alice", "bob"] {
        block_in_place(|| nodes[0].approve(admin, &id));
    }
    assert!(
        block_in_place(|| nodes[1].preapprove(&payee.invoice(1_000 * SAT, 11))),
        "node-b pays again"
    );
    assert_eq!(nodes[1].status().await.frozen, "");
}

#[test]
fn a_reload_in_the_middle_of_a_request_keeps_the_fleet_buckets_it_staged() {
    let db = pg::shared().database("fleet_reload");
    let a = member(&db, "acme", "node-a");
    let mut e = PolicyEngine::open(fleet_policy(), a.clone(), T0).unwrap();
    let txn = a.begin().unwrap();
    e.sync_shared().unwrap();
    assert!(e.decide(&pay(1, 0, 30_000), T0 + 60).unwrap().is_approved());
    // A later step of the same request fails and memory is reloaded (as the core does after a
    // rollback to a savepoint): the bucket this request staged is still counted.
    e.reload().unwrap();
    let counted = |e: &PolicyEngine| {
        e.state()
            .totals(&LedgerKey::Fleet, T0 + 61, 86_400)
            .amount_msat
    };
    assert_eq!(counted(&e), u128::from(30_000 * SAT));
    txn.commit().unwrap();
    assert!(
        !decide(&mut e, &a, &pay(1, 1, 80_000), T0 + 62),
        "30,000 + 80,000 is over the fleet cap"
    );
    assert_eq!(counted(&e), u128::from(30_000 * SAT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_by_a_tightening_refuses_from_its_next_request() {
    let (_db, mut nodes) = start_fleet("fleet_removed", GOVERNED).await;
    let payee = Payee::new(0x72);
    assert!(block_in_place(
        || nodes[2].preapprove(&payee.invoice(1_000 * SAT, 1))
    ));
    // wardenctl fleet, through any member, lists the three bound to their own nodes and seeds.
    let fleet = fleet_json(&nodes[1].daemon);
    assert_eq!(fleet["fleet"], "acme");
    for (i, m) in fleet["members"].as_array().unwrap().iter().enumerate() {
        assert_eq!(m["name"], MEMBERS[i]);
        assert_eq!(m["standing"], "serving", "{m}");
        assert_eq!(
            m["node_id"],
            nodes[i].node_id_from_init.to_string().as_str()
        );
        assert_eq!(m["this"], i == 1, "{m}");
        assert_eq!(m["seed_id"].as_str().unwrap().len(), 32, "{m}");
    }
    // The fleet's policy without node-c: a tightening, in force as soon as two admins sign.
    let text = std::fs::read_to_string(&nodes[0].policy).unwrap();
    let without_c: String = text
        .lines()
        .filter(|l| !l.starts_with("node-c = "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without_c, text);
    let path = nodes[0].token.path().join("without-c.toml");
    std::fs::write(&path, &without_c).unwrap();
    let out = ctl_ok(
        &nodes[0].daemon,
        "alice",
        &["policy", "propose", path.to_str().unwrap()],
    );
    assert!(
        out.contains("fleet member node-c"),
        "the change names the member: {out}"
    );
    let change = request_id(&out, "pc-");
    for admin in ["alice", "bob"] {
        block_in_place(|| nodes[1].approve(admin, &change));
    }
    // node-c refuses, with the rule, and keeps serving; the others go on.
    assert!(!block_in_place(
        || nodes[2].preapprove(&payee.invoice(1_000 * SAT, 2))
    ));
    assert!(block_in_place(|| nodes[2].still_serves()));
    assert!(block_in_place(
        || nodes[0].preapprove(&payee.invoice(1_000 * SAT, 3))
    ));
    // The fleet's listing and metrics say so, on every member.
    let fleet = fleet_json(&nodes[0].daemon);
    let standing: Vec<&str> = fleet["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["standing"].as_str().unwrap())
        .collect();
    assert_eq!(standing, ["serving", "serving", "removed"]);
    let table = ctl_ok(&nodes[0].daemon, "carol", &["fleet"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("node-c") && l.contains("removed")),
        "{table}"
    );
    let m = nodes[1].scrape_metrics().await;
    assert_eq!(m["warden_fleet_members{state=\"serving\"}"], 2.0);
    assert_eq!(m["warden_fleet_members{state=\"removed\"}"], 1.0);
    assert_eq!(m["warden_fleet_frozen"], 0.0);
    let last = nodes[2]
        .audit_records("decision")
        .pop()
        .expect("node-c decided");
    assert_eq!(
        last["data"]["tags"],
        serde_json::json!(["warden-fleet-not-member"])
    );
    assert!(
        last["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("the policy in force does not admit fleet member \"node-c\""),
        "{last}"
    );
}

/// A member's whole core on the fleet's database, as wardend builds it: its own SoftHSM token
/// for its audit chain, the fleet's clock, serving as `name`.
struct MemberCore {
    core: Arc<warden::core::Core>,
    _token: common::TestToken,
}

fn member_core(db: &str, name: &str, text: &str, clock: &warden::clock::ManualClock) -> MemberCore {
    let store = member(db, "acme", name);
    let policy = Arc::new(parse_policy(text).unwrap_or_else(|e| panic!("{e:?}")));
    // The first member records the fleet's first policy, as wardend does at its first start.
    let history = warden::governance::PolicyHistory::new(&store);
    if history.in_force().unwrap().is_none() {
        history
            .record(warden::governance::PolicyVersion::first(
                policy.hash_hex(),
                text.to_string(),
                T0,
            ))
            .unwrap();
    }
    let token = common::TestToken::new(&format!("core-{name}"));
    let hsm = token.open();
    hsm.init(&token.data_dir, lightning_signer::bitcoin::Network::Regtest)
        .unwrap();
    let audit =
        Arc::new(warden::audit::AuditLog::open(&store, Arc::new(hsm), Default::default()).unwrap());
    let core = Arc::new(
        warden::core::Core::open(
            store,
            warden::core::LoadedPolicy {
                policy,
                text: text.to_string(),
            },
            Default::default(),
            Arc::new(clock.clone()),
            audit,
            Default::default(),
        )
        .unwrap(),
    );
    core.join_fleet("acme".into(), name.into());
    // The node id the policy admits it as (wardend learns it from the node's seed).
    let node = core.policy().policy.fleet_member(name).unwrap().to_string();
    *core.node_id.write().unwrap() = node;
    MemberCore {
        core,
        _token: token,
    }
}

const NODE_B: &str = "03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd";

/// Admins, the fleet's two members and the fleet's cap; `extra` is appended.
fn core_policy(keys: &[(&str, &warden::approval::keys::AdminKey)], extra: &str) -> String {
    let admins: String = keys
        .iter()
        .map(|(n, k)| format!("{n} = {{ pubkey = \"{}\" }}\n", k.public_key()))
        .collect();
    format!(
        "version = 1\n[admins]\n{admins}\n[fleet.members]\nnode-a = \"{PAYEE}\"\nnode-b = \"{NODE_B}\"\n\n\
         [[limit]]\ntag = \"company-daily\"\nscope = \"fleet\"\nwindow = \"24h\"\nmax_amount = \"100_000 sat\"\n{extra}"
    )
}

#[test]
fn a_recovery_sweep_or_unfreeze_names_the_one_member_it_applies_to() {
    use warden::approval::keys::AdminKey;
    use warden::approval::{Decision, SignatureFormat, RECOVERY_DRAFT_SECS};
    use warden::policy::RecoveryKind;
    let db = pg::shared().database("fleet_recovery");
    let (alice, bob, recovery) = (
        AdminKey::generate(),
        AdminKey::generate(),
        AdminKey::generate(),
    );
    let desc = format!("wpkh({NODE_B})");
    let text = core_policy(
        &[("alice", &alice), ("bob", &bob)],
        &format!(
            "[recovery]\nkey = {{ pubkey = \"{}\" }}\ndelay = \"72h\"\ndestination = \"{desc}\"\n",
            recovery.public_key()
        ),
    );
    let clock = warden::clock::ManualClock::new(T0);
    let a = member_core(&db, "node-a", &text, &clock);
    let b = member_core(&db, "node-b", &text, &clock);
    let (a, b) = (&a.core, &b.core);

    // Only a sweep or an unfreeze names a member, and only one the policy admits.
    let err = a
        .open_recovery(RecoveryKind::Sweep, None, Some("node-x".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"node-x\" is not a member the fleet's policy admits; its [fleet.members] lists node-a, node-b"),
        "{err}"
    );
    let err = a
        .open_recovery(
            RecoveryKind::ReplaceAdmins,
            Some(text.clone()),
            Some("node-b".into()),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("replace-admins changes the fleet's one policy"),
        "{err}"
    );
    let err = a
        .open_recovery(RecoveryKind::Unfreeze, None, Some("node-b".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fleet member node-b is not frozen alone"),
        "{err}"
    );

    // The recovery key signs the member: a sweep of node-b alone is not the fleet's sweep.
    let (fleet_wide, _) = a.open_recovery(RecoveryKind::Sweep, None, None).unwrap();
    let (only_b, _) = a
        .open_recovery(RecoveryKind::Sweep, None, Some("node-b".into()))
        .unwrap();
    let params = |r: &warden::approval::ApprovalRecord| r.recovery.clone().unwrap().params_hash;
    assert_ne!(params(&fleet_wide), params(&only_b));
    assert_ne!(fleet_wide.request_digest, only_b.request_digest);
    assert!(
        only_b
            .description
            .as_deref()
            .unwrap()
            .contains("sweep of fleet member node-b alone"),
        "{only_b:?}"
    );
    let run = |r: &warden::approval::ApprovalRecord, via: &warden::core::Core| {
        let sig = recovery.sign_digest(r.digest(Decision::Approve));
        via.start_recovery(&r.id, SignatureFormat::Bip340, &sig)
            .unwrap();
        clock.advance(RECOVERY_DRAFT_SECS + 72 * 3_600);
        via.execute_recovery(&r.id).unwrap()
    };
    // Started and executed through node-a; node-b alone sweeps.
    let msg = run(&only_b, a);
    assert!(
        msg.contains("fleet member node-b may spend on-chain to the recovery destination"),
        "{msg}"
    );
    let dest = {
        use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
        use std::str::FromStr;
        Descriptor::<DescriptorPublicKey>::from_str(&desc)
            .unwrap()
            .at_derivation_index(0)
            .unwrap()
            .address(a.policy().policy.network)
            .unwrap()
            .to_string()
    };
    let ln = |c: &warden::core::Core, n: u32| {
        c.refresh_shared();
        c.decide_payment(&pay(9, n, 1_000), None)
    };
    let no = ln(b, 0);
    assert_eq!(no.tags, vec!["warden-frozen"], "{no:?}");
    assert!(ln(a, 1).approved, "node-a goes on");
    let sweep = b.decide_payment(&PaymentRequest::onchain(vec![(dest, 50_000_000)]), None);
    assert!(sweep.approved, "{sweep:?}");
    assert_eq!(sweep.tags, vec!["warden-recovery-sweep"]);
    // The recovery key lifts node-b's freeze, and node-b's alone.
    let (unfreeze, _) = a
        .open_recovery(RecoveryKind::Unfreeze, None, Some("node-b".into()))
        .unwrap();
    let msg = run(&unfreeze, a);
    assert!(
        msg.contains("the freeze of fleet member node-b is lifted"),
        "{msg}"
    );
    let again = ln(b, 2);
    assert!(again.approved, "node-b pays again: {again:?}");
}

#[test]
fn an_emergency_stop_watching_the_fleet_window_freezes_every_member() {
    use warden::approval::keys::AdminKey;
    let db = pg::shared().database("fleet_estop");
    let (alice, bob) = (AdminKey::generate(), AdminKey::generate());
    let text = core_policy(
        &[("alice", &alice), ("bob", &bob)],
        "[emergency_stop]\nwindow_percent = 80\n",
    );
    let clock = warden::clock::ManualClock::new(T0);
    let a = member_core(&db, "node-a", &text, &clock);
    let b = member_core(&db, "node-b", &text, &clock);
    let (a, b) = (&a.core, &b.core);
    assert!(a.decide_payment(&pay(1, 0, 50_000), None).approved);
    assert!(a.frozen().is_none(), "50 % of the fleet's window");
    // node-b's 35,000 takes the fleet's window (not node-b's own 35 %) to 85 %: node-b trips
    // the stop, and it stops the whole fleet.
    assert!(b.decide_payment(&pay(2, 0, 35_000), None).approved);
    let f = b.frozen().expect("node-b froze");
    assert_eq!(f.by, "emergency stop window_percent");
    assert!(
        f.reason.contains("window company-daily is at 85 %"),
        "{}",
        f.reason
    );
    assert_eq!(f.member, None, "the whole fleet");
    let no = a.decide_payment(&pay(1, 1, 1_000), None);
    assert_eq!(
        no.tags,
        vec!["warden-frozen"],
        "node-a is stopped too: {no:?}"
    );
}

/// `name`'s count of store step `step` (see `Store::timings`).
fn steps(core: &warden::core::Core, step: &str) -> u64 {
    core.store()
        .timings()
        .iter()
        .find(|t| t.step == step)
        .map(|t| t.count)
        .unwrap_or(0)
}

#[test]
fn members_within_their_shares_commit_without_the_fleet_lock_and_the_cap_still_holds_exactly() {
    use warden::approval::keys::AdminKey;
    let db = pg::shared().database("fleet_shares");
    let (alice, bob) = (AdminKey::generate(), AdminKey::generate());
    // A per-payment fleet limit too: the share stands for the fleet's windows, not for it.
    let text = core_policy(
        &[("alice", &alice), ("bob", &bob)],
        "[[limit]]\ntag = \"company-per-payment\"\nscope = \"fleet\"\nwindow = \"payment\"\nmax_amount = \"50_000 sat\"\n",
    );
    let clock = warden::clock::ManualClock::new(T0);
    let a = member_core(&db, "node-a", &text, &clock);
    let b = member_core(&db, "node-b", &text, &clock);
    let (a, b) = (&a.core, &b.core);
    // A's first payment takes the fleet's lock and carves A a share of the room left.
    assert!(a.decide_payment(&pay(1, 0, 1_000), None).approved);
    let (locks, shares) = (steps(a, "fleet-lock"), steps(a, "fleet-share"));
    // Within the share: no fleet lock at all.
    for n in 1..6 {
        assert!(a.decide_payment(&pay(1, n, 1_000), None).approved);
    }
    assert_eq!(
        steps(a, "fleet-lock"),
        locks,
        "within its share A takes no fleet lock"
    );
    assert_eq!(steps(a, "fleet-share"), shares + 5);
    // Both members at once, 7,000 sat each, on what is left of 100,000 (94,000): exactly 13
    // fit, whatever share each holds when.
    let approved = AtomicU64::new(0);
    std::thread::scope(|s| {
        for (i, m) in [a, b].into_iter().enumerate() {
            let approved = &approved;
            s.spawn(move || {
                for n in 0..12u32 {
                    if m.decide_payment(&pay(10 + i as u8, n, 7_000), None)
                        .approved
                    {
                        approved.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(
        approved.load(Ordering::SeqCst),
        13,
        "6,000 + 13 x 7,000 = 97,000"
    );
    // The last 3,000 sat fit exactly, wherever the room sits (B's share is settled for it),
    // and not one sat more.
    assert!(b.decide_payment(&pay(20, 0, 3_000), None).approved);
    let over = a.decide_payment(&pay(21, 0, 1), None);
    assert!(!over.approved && over.tags == ["company-daily"], "{over:?}");
}

#[test]
fn an_emergency_stop_a_payment_within_a_share_would_meet_freezes_the_fleet_at_once() {
    use warden::approval::keys::AdminKey;
    let db = pg::shared().database("fleet_estop_share");
    let (alice, bob) = (AdminKey::generate(), AdminKey::generate());
    let text = core_policy(
        &[("alice", &alice), ("bob", &bob)],
        "[emergency_stop]\nwindow_percent = 25\n",
    );
    let clock = warden::clock::ManualClock::new(T0);
    let a = member_core(&db, "node-a", &text, &clock);
    let b = member_core(&db, "node-b", &text, &clock);
    let (a, b) = (&a.core, &b.core);
    // 10 %: A carves itself a share (22,500 sat) under the fleet's lock.
    assert!(a.decide_payment(&pay(1, 0, 10_000), None).approved);
    assert!(a.frozen().is_none());
    // 20,000 more fits A's share, and takes the fleet's window to 30 %: decided under the
    // fleet's lock, so the stop's freeze is written with it, not later.
    assert!(a.decide_payment(&pay(1, 1, 20_000), None).approved);
    let f = a.frozen().expect("A froze the fleet with that approval");
    assert_eq!(f.by, "emergency stop window_percent");
    let no = b.decide_payment(&pay(2, 0, 1_000), None);
    assert_eq!(no.tags, vec!["warden-frozen"], "{no:?}");
}

#[test]
fn a_share_with_a_spend_staged_is_not_released_to_another_member() {
    let db = pg::shared().database("fleet_share_release");
    let a = member(&db, "acme", "node-a");
    let txn = a.begin().unwrap();
    a.lock_grant().unwrap();
    a.put_grant("node-a", b"{}".to_vec()).unwrap();
    let err = a.release_grant().unwrap_err().to_string();
    assert!(
        err.contains("this transaction spent from its share; a second decision in it cannot take the fleet's lock"),
        "{err}"
    );
    // Nor can it take the fleet's lock while it holds the share.
    let err = a.lock_fleet().unwrap_err().to_string();
    assert!(
        err.contains("release it before taking the fleet's lock"),
        "{err}"
    );
    drop(txn);
}

#[test]
fn an_emergency_stop_met_outside_a_decision_freezes_the_fleet_at_once() {
    use warden::approval::keys::AdminKey;
    let db = pg::shared().database("fleet_estop_auth");
    let (alice, bob) = (AdminKey::generate(), AdminKey::generate());
    let text = core_policy(
        &[("alice", &alice), ("bob", &bob)],
        "[emergency_stop]\nauth_failures = { count = 2, within = \"10m\" }\n",
    );
    let clock = warden::clock::ManualClock::new(T0);
    let a = member_core(&db, "node-a", &text, &clock);
    let b = member_core(&db, "node-b", &text, &clock);
    let (a, b) = (&a.core, &b.core);
    // A's share is carved and in use: the stop is still written at once, not at A's next
    // decision, because no share is held outside a decision.
    assert!(a.decide_payment(&pay(1, 0, 1_000), None).approved);
    assert!(a.decide_payment(&pay(1, 1, 1_000), None).approved);
    for _ in 0..3 {
        a.note_auth_failure();
    }
    let f = a
        .frozen()
        .expect("the third failure in 10 minutes froze the fleet");
    assert_eq!(f.by, "emergency stop auth_failures");
    let no = b.decide_payment(&pay(2, 0, 1_000), None);
    assert_eq!(no.tags, vec!["warden-frozen"], "{no:?}");
}
