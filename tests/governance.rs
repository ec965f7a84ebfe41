//! Governed policy changes: the policy in force is the one the governance quorum last approved.
//! A tightening takes effect when the quorum signs; a loosening waits its delay, during which
//! any single admin can veto it; the quorum is the policy in force's, never the proposal's;
//! a broken file changes nothing. In-process tests run the real admin API over mutual TLS,
//! SoftHSM and sled with a virtual clock; the last test runs a real wardend across restarts and
//! SIGHUP, with a delay of seconds.

mod common;

use common::api::{policy_text, AdminHarness, T0};
use common::daemon::{Daemon, QUORUM_RULES};
use lightning_signer::bitcoin::hashes::Hash;
use warden::api::proto;
use warden::approval::keys::AdminKey;

/// The harness's policy with the per-payment cap changed to `cap` (e.g. "4_000_000 sat").
fn with_cap(h: &AdminHarness, cap: &str) -> String {
    h.core.policy().text.replace(
        "max_amount = \"5_000_000 sat\"",
        &format!("max_amount = \"{cap}\""),
    )
}

async fn propose(h: &AdminHarness, admin: &str, text: &str) -> proto::ApprovalRequest {
    h.client(admin)
        .await
        .propose_policy(proto::ProposePolicyRequest { text: text.into() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .request
        .unwrap()
}

async fn status_hash(h: &AdminHarness) -> String {
    h.client("alice")
        .await
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .policy_hash
}

async fn get(h: &AdminHarness, id: &str) -> proto::ApprovalRequest {
    h.client("alice")
        .await
        .get_request(proto::GetRequestRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tightening_takes_effect_when_the_quorum_signs_and_one_admin_alone_cannot() {
    let h = AdminHarness::start().await;
    let before = status_hash(&h).await;
    let text = with_cap(&h, "4_000_000 sat");
    let r = propose(&h, "alice", &text).await;
    assert_eq!(r.kind, "policy-change");
    assert!(!r.loosens, "{:?}", r.policy_changes);
    assert_eq!(r.delay_secs, 0);
    assert_eq!(r.rule_tag, "governance");
    assert_eq!(
        (r.need, r.of.len()),
        (2, 4),
        "the largest approval quorum governs"
    );
    assert_eq!(
        r.policy_changes,
        vec!["tightens: limit per-payment-cap amount: 5,000,000 sat -> 4,000,000 sat"]
    );
    assert_eq!(r.proposer, "alice");

    let out = h.sign("alice", &r, false).await.unwrap();
    assert!(out.message.contains("1 of 2"), "{}", out.message);
    assert_eq!(
        status_hash(&h).await,
        before,
        "one admin alone changes nothing"
    );

    let out = h.sign("bob", &r, false).await.unwrap();
    assert!(out.message.contains("takes effect now"), "{}", out.message);
    let after = status_hash(&h).await;
    assert_eq!(after, hex::encode(&r.policy_change_hash));
    assert_eq!(
        get(&h, &r.id).await.state,
        proto::RequestState::Consumed as i32
    );
    let history = h.core.policy_history().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.hash, after);
    assert_eq!(last.approved_by, vec!["alice", "bob"]);
    assert_eq!(last.request_id.as_deref(), Some(r.id.as_str()));

    // The new limit decides payments now: 4,500,000 sat is over it.
    let req =
        warden::policy::PaymentRequest::invoice([9; 32], 4_500_000_000, common::api::PAYEE, None);
    let answer = h.core.decide_payment(&req, None);
    assert!(!answer.approved);
    assert_eq!(answer.tags, vec!["per-payment-cap"], "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loosening_waits_its_delay_and_a_clock_step_back_reopens_no_expired_proposal() {
    let h = AdminHarness::start().await;
    let before = status_hash(&h).await;
    let r = propose(&h, "carol", &with_cap(&h, "9_000_000 sat")).await;
    assert!(r.loosens);
    assert_eq!(r.delay_secs, 86_400, "the default loosen_delay");
    h.sign("alice", &r, false).await.unwrap();
    let out = h.sign("bob", &r, false).await.unwrap();
    assert!(
        out.message.contains("unless an admin vetoes it"),
        "{}",
        out.message
    );
    let approved = get(&h, &r.id).await;
    assert_eq!(approved.state, proto::RequestState::Approved as i32);
    assert_eq!(approved.effective_at, T0 + 86_400);

    h.clock.advance(86_399);
    h.core.sweep().unwrap();
    assert_eq!(
        status_hash(&h).await,
        before,
        "not before the delay is over"
    );
    h.clock.set(T0 + 86_400);
    h.core.sweep().unwrap();
    assert_eq!(status_hash(&h).await, hex::encode(&r.policy_change_hash));
    assert_eq!(
        get(&h, &r.id).await.state,
        proto::RequestState::Consumed as i32
    );

    // A proposal left to expire stays expired when the system clock is stepped back to before
    // its expiry: Warden's time (a persisted high-water mark) does not follow the clock back,
    // so its signatures are refused. (A clock that followed it would re-open the proposal.)
    let text = h.core.policy().text.replace(
        "max_amount = \"9_000_000 sat\"",
        "max_amount = \"8_000_000 sat\"",
    );
    let late = propose(&h, "carol", &text).await;
    h.clock.set(T0 + 86_400 + 86_401);
    // (No sweep: the stored state is still pending; only the time says it expired.)
    assert_eq!(
        get(&h, &late.id).await.state,
        proto::RequestState::Expired as i32
    );
    h.clock.set(T0 + 86_400);
    assert_eq!(
        get(&h, &late.id).await.state,
        proto::RequestState::Expired as i32,
        "stepped back, the clock re-opened an expired proposal"
    );
    let e = h.sign("alice", &late, false).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_single_admin_vetoes_a_loosening_during_its_delay_even_one_who_approved_it() {
    let h = AdminHarness::start().await;
    let before = status_hash(&h).await;
    let r = propose(&h, "alice", &with_cap(&h, "9_000_000 sat")).await;
    h.sign("alice", &r, false).await.unwrap();
    h.sign("bob", &r, false).await.unwrap();
    h.clock.advance(3_600);
    let approved = get(&h, &r.id).await;
    let out = h.sign("alice", &approved, true).await.unwrap();
    assert!(out.message.contains("vetoed by alice"), "{}", out.message);
    assert_eq!(
        get(&h, &r.id).await.state,
        proto::RequestState::Rejected as i32
    );
    h.clock.advance(86_400);
    h.core.sweep().unwrap();
    assert_eq!(
        status_hash(&h).await,
        before,
        "a vetoed change never takes effect"
    );

    // erin is in no quorum that governs policy, yet any admin may veto.
    let r = propose(&h, "alice", &with_cap(&h, "8_000_000 sat")).await;
    h.sign("alice", &r, false).await.unwrap();
    h.sign("carol", &r, false).await.unwrap();
    let approved = get(&h, &r.id).await;
    let out = h.sign("erin", &approved, true).await.unwrap();
    assert!(out.message.contains("vetoed by erin"), "{}", out.message);
    // Approving needs the governance quorum: erin's approval does not count.
    let r = propose(&h, "alice", &with_cap(&h, "7_000_000 sat")).await;
    let e = h.sign("erin", &r, false).await.unwrap_err();
    assert!(
        e.message().contains("not in the quorum of rule governance"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_only_in_the_proposed_file_cannot_approve_it() {
    let h = AdminHarness::start().await;
    let frank = AdminKey::generate();
    let text = with_cap(&h, "4_000_000 sat").replace(
        "[admins]\n",
        &format!(
            "[admins]\nfrank = {{ pubkey = \"{}\" }}\n",
            frank.public_key()
        ),
    );
    let r = propose(&h, "alice", &text).await;
    assert!(
        r.policy_changes
            .iter()
            .any(|c| c == "loosens: admin frank added"),
        "{:?}",
        r.policy_changes
    );
    // The relay may submit anyone's signature; frank's is refused all the same.
    let e = h
        .client("relay")
        .await
        .approve(proto::DecisionRequest {
            id: r.id.clone(),
            admin: "frank".into(),
            format: proto::SignatureFormat::Bip340 as i32,
            signature: frank
                .sign_digest(r.approval_digest.as_slice().try_into().unwrap())
                .to_vec(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("admin \"frank\" is not declared in the policy's [admins]"),
        "{}",
        e.message()
    );
    assert_eq!(get(&h, &r.id).await.signatures.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_proposal_is_refused_with_every_line_and_column_and_the_policy_stays() {
    let h = AdminHarness::start().await;
    let before = status_hash(&h).await;
    let mut events = h
        .client("alice")
        .await
        .watch_events(proto::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let broken =
        with_cap(&h, "4_000_000 sat").replace("window = \"payment\"", "window = \"fortnight\"");
    let e = h
        .client("alice")
        .await
        .propose_policy(proto::ProposePolicyRequest {
            text: broken.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let line = broken
        .lines()
        .position(|l| l.contains("fortnight"))
        .unwrap()
        + 1;
    assert!(
        e.message().contains("the policy in force stays")
            && e.message().contains(&format!("\n{line}:10: `window`")),
        "{}",
        e.message()
    );
    let ev = common::daemon::next_event(&mut events, proto::EventKind::Policy).await;
    assert!(
        ev.message.contains(&format!("{line}:10:")),
        "{}",
        ev.message
    );
    assert_eq!(status_hash(&h).await, before);
    assert!(h.core.approvals.list_pending(T0).unwrap().is_empty());

    let e = h
        .client("alice")
        .await
        .propose_policy(proto::ProposePolicyRequest {
            text: h.core.policy().text,
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("is the policy in force"),
        "{}",
        e.message()
    );
    let e = h
        .client("auditor")
        .await
        .propose_policy(proto::ProposePolicyRequest { text: broken })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_approved_under_a_policy_no_longer_in_force_is_void() {
    let h = AdminHarness::start().await;
    let loosen = propose(&h, "alice", &with_cap(&h, "9_000_000 sat")).await;
    h.sign("alice", &loosen, false).await.unwrap();
    h.sign("bob", &loosen, false).await.unwrap();
    // Meanwhile a tightening takes effect: the loosening's signatures cover the old policy.
    let tighten = propose(&h, "carol", &with_cap(&h, "4_000_000 sat")).await;
    h.sign("carol", &tighten, false).await.unwrap();
    h.sign("alice", &tighten, false).await.unwrap();
    let tightened = status_hash(&h).await;
    assert_eq!(tightened, hex::encode(&tighten.policy_change_hash));
    h.clock.advance(86_400);
    h.core.sweep().unwrap();
    assert_eq!(
        status_hash(&h).await,
        tightened,
        "the void loosening never applies"
    );
    assert_eq!(
        get(&h, &loosen.id).await.state,
        proto::RequestState::Expired as i32
    );
    let _ = policy_text;
}

/// A real wardend: the first start records the file as the policy in force; later the file on
/// disk is only a proposal; a restart keeps an approved loosening and its timer; SIGHUP
/// proposes the file; a broken file is reported and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wardend_keeps_the_policy_in_force_and_a_change_s_timer_across_restarts() {
    let rules = format!("{QUORUM_RULES}\n[governance]\nloosen_delay = \"6s\"\n");
    let mut d = Daemon::prepare("governance", &rules, common::daemon::free_port());
    // Every step of the change reaches the webhook, as well as the event stream.
    let mut hook = common::hook::Receiver::start(None, vec![]).await;
    let cfg = d.token.path().join("alerts.toml");
    let secret = d.token.path().join("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:{}/warden\"\nwebhook_secret_file = \"{}\"\n",
            hook.port,
            secret.display()
        ),
    )
    .unwrap();
    d.wardend_env = vec![("WARDEN_CONFIG".into(), cfg.display().to_string())];
    d.start_wardend();
    let status = |d: &Daemon| {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                d.admin_client()
                    .await
                    .status(proto::StatusRequest {})
                    .await
                    .unwrap()
                    .into_inner()
            })
        })
    };
    let first = status(&d);
    assert!(first.policy_note.is_empty(), "{}", first.policy_note);
    let ctl = |d: &Daemon, admin: &str, args: &[&str]| {
        let out = tokio::task::block_in_place(|| d.wardenctl(admin, args));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A raised cap written to the file and a restart: the policy in force stays.
    let original = std::fs::read_to_string(&d.policy).unwrap();
    let raised = original.replace(
        "tag = \"daily-cap\"\nwindow = \"24h\"\nmax_amount = \"2_000_000 sat\"",
        "tag = \"daily-cap\"\nwindow = \"24h\"\nmax_amount = \"3_000_000 sat\"",
    );
    assert_ne!(raised, original);
    std::fs::write(&d.policy, &raised).unwrap();
    d.stop_wardend();
    d.start_wardend();
    let s = status(&d);
    assert_eq!(
        s.policy_hash, first.policy_hash,
        "the file on disk is not the truth"
    );
    assert!(
        s.policy_note
            .contains("not the policy in force and not proposed"),
        "{}",
        s.policy_note
    );

    let (code, out, err) = ctl(
        &d,
        "alice",
        &["policy", "propose", d.policy.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("LOOSENS: takes effect 6s after the quorum"),
        "{out}"
    );
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("pc-"))
        .unwrap()
        .to_string();
    let (code, out, _) = ctl(&d, "bob", &["policy", "diff", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains(
            "change       loosens: limit daily-cap amount: 2,000,000 sat -> 3,000,000 sat"
        ),
        "{out}"
    );
    for admin in ["alice", "bob"] {
        let key = d.admin_key(admin);
        let (code, _, err) = ctl(&d, admin, &["approve", &id, "--key", &key]);
        assert_eq!(code, 0, "{admin}: {err}");
    }
    // Killed before the delay is over, started again: the request and its timer are there.
    d.kill_wardend();
    d.start_wardend();
    let (code, out, _) = ctl(&d, "alice", &["show", &id, "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "approved");
    assert!(shown["effective_at"].as_u64().unwrap() > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let s = status(&d);
        if s.policy_hash != first.policy_hash {
            assert!(
                s.policy_note.is_empty(),
                "the file is in force now: {}",
                s.policy_note
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the loosening never took effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut steps = vec![
        "alice proposed policy change",
        "alice approved request",
        "loosens the policy and takes effect at",
        "is now in force",
    ];
    for _ in 0..200 {
        if steps.is_empty() {
            break;
        }
        let body = hook.next(20).await.body;
        steps.retain(|s| !(body.contains(s) && body.contains("\"policy\"")));
    }
    assert!(steps.is_empty(), "not delivered to the webhook: {steps:?}");
    let (code, out, _) = ctl(&d, "alice", &["policy", "history"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("(the first policy)")
            && out.contains(&format!("({id}, approved by alice, bob)  <- in force")),
        "{out}"
    );

    // SIGHUP with a broken file: reported with its line and column, nothing changes.
    let before = status(&d).policy_hash;
    std::fs::write(&d.policy, raised.replace("window = \"24h\"", "window = 24")).unwrap();
    let pid = d.wardend.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let note = loop {
        let s = status(&d);
        if s.policy_note.contains("does not load") {
            break s.policy_note;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP was not acted on: {}",
            s.policy_note
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        note.contains("policy.toml:") && note.contains("`window`"),
        "{note}"
    );
    assert_eq!(status(&d).policy_hash, before);
    d.stop_wardend();
}

/// Someone with the state database cannot put a policy in force: every start verifies the
/// history, each version against the one before it, from the approval stored with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_written_into_the_history_behind_wardends_back_does_not_verify() {
    use warden::governance::{PolicyHistory, PolicyVersion};
    use warden::store::Namespace;
    let h = AdminHarness::start().await;
    let first = h.core.policy();
    // What wardend's first start records.
    PolicyHistory::new(h.core.store())
        .record(PolicyVersion::first(
            first.policy.hash_hex(),
            first.text.clone(),
            T0,
        ))
        .unwrap();
    let r = propose(&h, "alice", &with_cap(&h, "4_000_000 sat")).await;
    h.sign("alice", &r, false).await.unwrap();
    h.sign("bob", &r, false).await.unwrap();
    let network = first.policy.network;
    let verified = warden::core::verified_policy_in_force(h.core.store(), network)
        .unwrap()
        .unwrap();
    assert_eq!(verified.hash, hex::encode(&r.policy_change_hash));

    let key = |seq: u64| {
        let mut k = vec![b'v'];
        k.extend_from_slice(&seq.to_be_bytes());
        k
    };
    let stored = h
        .core
        .store()
        .get(Namespace::Governance, &key(2))
        .unwrap()
        .unwrap();
    let good: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    // 1. Another text (with its own, matching hash) under the same approval.
    let open_text = with_cap(&h, "4_000_000 sat").replace("4_000_000 sat", "900_000_000 sat");
    let mut forged = good.clone();
    forged["text"] = open_text.clone().into();
    forged["hash"] = hex::encode(
        lightning_signer::bitcoin::hashes::sha256::Hash::hash(open_text.as_bytes()).to_byte_array(),
    )
    .into();
    h.core.store().tamper(
        Namespace::Governance,
        &key(2),
        Some(&serde_json::to_vec(&forged).unwrap()),
    );
    let e = warden::core::verified_policy_in_force(h.core.store(), network)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not verify at version 2") && e.contains("approves another policy"),
        "{e}"
    );
    // 2. The right text, but a signature that is not the admins'.
    let mut forged = good.clone();
    let sig = forged["proof"]["signatures"][0]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = format!("{}{}", if &sig[..1] == "0" { "1" } else { "0" }, &sig[1..]);
    forged["proof"]["signatures"][0]["signature"] = flipped.into();
    h.core.store().tamper(
        Namespace::Governance,
        &key(2),
        Some(&serde_json::to_vec(&forged).unwrap()),
    );
    let e = warden::core::verified_policy_in_force(h.core.store(), network)
        .unwrap_err()
        .to_string();
    assert!(e.contains("its approval does not verify"), "{e}");
    // 3. No approval at all.
    let mut forged = good;
    forged.as_object_mut().unwrap().remove("proof");
    h.core.store().tamper(
        Namespace::Governance,
        &key(2),
        Some(&serde_json::to_vec(&forged).unwrap()),
    );
    let e = warden::core::verified_policy_in_force(h.core.store(), network)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("carries no approval record") && e.contains("restore the data directory"),
        "{e}"
    );
}

/// Issue 25, item 6: with write access to the state, deleting the policy history must not make
/// the next start a "first start" that records the file on disk (here a loosening nobody
/// approved) as the policy in force: the HSM remembers the version it last saw in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_policy_history_never_makes_a_first_start() {
    let mut d = common::daemon::Daemon::prepare(
        "history-deleted",
        common::daemon::QUORUM_RULES,
        common::daemon::free_port(),
    );
    d.start_wardend();
    d.stop_wardend();
    {
        let store = warden::store::Store::open(&d.token.data_dir.join("state")).unwrap();
        let history = store
            .scan(warden::store::Namespace::Governance, b"")
            .unwrap();
        assert!(!history.is_empty(), "the first start recorded the policy");
        for (k, _) in history {
            store.tamper(warden::store::Namespace::Governance, &k, None);
        }
    }
    let loosened = std::fs::read_to_string(&d.policy)
        .unwrap()
        .replace("2_000_000 sat", "20_000_000 sat");
    std::fs::write(&d.policy, loosened).unwrap();
    let out = tokio::task::block_in_place(|| d.run_wardend_to_exit());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wardend started: {err}");
    assert!(
        err.contains("the policy history in the state database does not hold version 1"),
        "{err}"
    );
}

/// Issue 25, item 6: a history cut back to an older version (once approved, so it verifies) is
/// refused too: the HSM anchored the newer one when it was put in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_history_cut_back_behind_the_hsm_s_anchor_is_refused() {
    let h = AdminHarness::start().await;
    let r = propose(&h, "alice", &with_cap(&h, "4_000_000 sat")).await;
    h.sign("alice", &r, false).await.unwrap();
    h.sign("bob", &r, false).await.unwrap();
    let store = h.core.store().clone();
    let v = warden::governance::PolicyHistory::new(&store)
        .in_force()
        .unwrap()
        .expect("the tightening is in force");
    let anchor = h.core.audit().policy_anchor().unwrap();
    assert_eq!(
        anchor.map(|a| a.version),
        Some(v.seq),
        "anchored once committed"
    );
    warden::core::check_policy_anchor(&store, anchor.as_ref()).unwrap();
    let mut key = vec![b'v'];
    key.extend_from_slice(&v.seq.to_be_bytes());
    store.tamper(warden::store::Namespace::Governance, &key, None);
    let e = warden::core::check_policy_anchor(&store, anchor.as_ref()).unwrap_err();
    assert!(
        e.contains(&format!("does not hold version {}", v.seq)) && e.contains("cut back"),
        "{e}"
    );
}
