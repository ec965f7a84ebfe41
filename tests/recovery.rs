//! Timelocked recovery: the policy's offline recovery key starts a break-glass action that is
//! announced at once and becomes executable only after the delay; the admins' quorum can cancel
//! it meanwhile; a clock step back does not shorten the delay. Real admin API over mutual TLS,
//! SoftHSM, sled, and a virtual clock.

mod common;

use common::api::{AdminHarness, T0};
use std::sync::Arc;
use warden::api::proto;
use warden::approval::keys::AdminKey;
use warden::approval::RECOVERY_DRAFT_SECS;
use warden::core::LoadedPolicy;

const DELAY: u64 = 72 * 3_600;

/// The harness's policy with a `[recovery]` section for `key`.
fn with_recovery(h: &AdminHarness, key: &AdminKey) -> String {
    format!(
        "{}\n[recovery]\nkey = {{ pubkey = \"{}\" }}\ndelay = \"72h\"\n",
        h.core.policy().text,
        key.public_key()
    )
}

fn install(h: &AdminHarness, text: &str) {
    h.core
        .set_policy(LoadedPolicy {
            policy: Arc::new(
                warden::policy::parse_policy(text).unwrap_or_else(|e| panic!("{e:?}")),
            ),
            text: text.to_string(),
        })
        .unwrap();
}

async fn open(
    h: &AdminHarness,
    action: &str,
    text: &str,
) -> Result<proto::ApprovalRequest, tonic::Status> {
    h.client("relay")
        .await
        .open_recovery(proto::OpenRecoveryRequest {
            action: action.into(),
            policy_text: text.into(),
            member: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn start(
    h: &AdminHarness,
    r: &proto::ApprovalRequest,
    key: &AdminKey,
) -> Result<proto::DecisionResponse, tonic::Status> {
    h.client("relay")
        .await
        .start_recovery(proto::DecisionRequest {
            id: r.id.clone(),
            admin: "recovery-key".into(),
            format: proto::SignatureFormat::Bip340 as i32,
            signature: key
                .sign_digest(r.approval_digest.as_slice().try_into().unwrap())
                .to_vec(),
            reason: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn execute(h: &AdminHarness, id: &str) -> Result<String, tonic::Status> {
    h.client("alice")
        .await
        .execute_recovery(proto::ExecuteRecoveryRequest { id: id.into() })
        .await
        .map(|r| r.into_inner().message)
}

async fn cancel(h: &AdminHarness, admin: &str, id: &str) -> Result<String, tonic::Status> {
    let r = h
        .client(admin)
        .await
        .get_request(proto::GetRequestRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    h.client(admin)
        .await
        .reject(proto::DecisionRequest {
            id: id.into(),
            admin: admin.into(),
            format: proto::SignatureFormat::Bip340 as i32,
            signature: h
                .key(admin)
                .sign_digest(r.reject_digest.as_slice().try_into().unwrap())
                .to_vec(),
            reason: "not us".into(),
        })
        .await
        .map(|r| r.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_admins_waits_its_delay_and_then_the_new_admins_sign() {
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    let text = with_recovery(&h, &recovery);
    install(&h, &text);
    let mut events = h
        .client("alice")
        .await
        .watch_events(proto::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // alice lost her key: the new policy gives her a new one and changes nothing else.
    let alice2 = AdminKey::generate();
    let old_alice = h.key("alice").public_key().to_string();
    let new_text = text.replace(&old_alice, &alice2.public_key().to_string());
    let r = open(&h, "replace-admins", &new_text).await.unwrap();
    assert_eq!(r.kind, "recovery");
    assert_eq!(r.recovery_earliest_at, T0 + RECOVERY_DRAFT_SECS + DELAY);
    assert_eq!(r.policy_changes, vec!["loosens: admin alice's key changed"]);
    let out = start(&h, &r, &recovery).await.unwrap();
    assert!(out.message.contains("started"), "{}", out.message);
    let e = common::daemon::next_event(&mut events, proto::EventKind::Recovery).await;
    assert!(
        e.message.contains("RECOVERY STARTED") && e.message.contains(&r.id),
        "{}",
        e.message
    );
    let status = h
        .client("bob")
        .await
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.recovery.iter().any(|l| l.contains(&r.id)),
        "{:?}",
        status.recovery
    );

    let e = execute(&h, &r.id).await.unwrap_err();
    assert!(
        e.message().contains("is not executable before"),
        "{}",
        e.message()
    );
    h.clock.set(T0 + RECOVERY_DRAFT_SECS + DELAY - 1);
    assert!(execute(&h, &r.id).await.is_err(), "one second early");
    h.clock.set(T0 + RECOVERY_DRAFT_SECS + DELAY);
    let msg = execute(&h, &r.id).await.unwrap();
    assert!(msg.contains("with the new admins is in force"), "{msg}");
    assert_eq!(h.core.policy().text, new_text);
    assert_eq!(
        h.core.policy_history().unwrap().last().unwrap().approved_by,
        vec!["recovery-key"]
    );
    assert!(execute(&h, &r.id).await.is_err(), "an action executes once");

    // A held payment: alice's old key no longer counts, her new one does.
    let (_, id) = h.hold(1_500_000, 7);
    let req = h
        .client("alice")
        .await
        .get_request(proto::GetRequestRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let digest: [u8; 32] = req.approval_digest.as_slice().try_into().unwrap();
    let approve = |sig: Vec<u8>| proto::DecisionRequest {
        id: id.clone(),
        admin: "alice".into(),
        format: proto::SignatureFormat::Bip340 as i32,
        signature: sig,
        reason: String::new(),
    };
    let e = h
        .client("alice")
        .await
        .approve(approve(h.key("alice").sign_digest(digest).to_vec()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    h.client("alice")
        .await
        .approve(approve(alice2.sign_digest(digest).to_vec()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admins_quorum_cancels_a_started_action_and_one_admin_alone_cannot() {
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    let text = with_recovery(&h, &recovery);
    install(&h, &text);
    let new_text = text.replace(
        &h.key("bob").public_key().to_string(),
        &AdminKey::generate().public_key().to_string(),
    );
    let r = open(&h, "replace-admins", &new_text).await.unwrap();
    start(&h, &r, &recovery).await.unwrap();
    let m = cancel(&h, "alice", &r.id).await.unwrap();
    assert!(m.contains("1 of 2 needed"), "{m}");
    // erin is no member of the governance quorum: her cancellation does not count.
    assert!(cancel(&h, "erin", &r.id).await.is_err());
    let m = cancel(&h, "carol", &r.id).await.unwrap();
    assert!(m.contains("is cancelled"), "{m}");
    h.clock.advance(RECOVERY_DRAFT_SECS + DELAY + 1);
    let e = execute(&h, &r.id).await.unwrap_err();
    assert!(
        e.message().contains("cancelled by the admins"),
        "{}",
        e.message()
    );
    assert_eq!(h.core.policy().text, text, "the policy in force stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_admins_may_change_no_rule_and_only_the_recovery_key_starts_an_action() {
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    let text = with_recovery(&h, &recovery);
    install(&h, &text);
    let raised = text.replace(
        "max_amount = \"5_000_000 sat\"",
        "max_amount = \"50_000_000 sat\"",
    );
    let e = open(&h, "replace-admins", &raised).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("may change only the admins and their quorums")
            && e.message().contains("per-payment-cap"),
        "{}",
        e.message()
    );
    let new_text = text.replace(
        &h.key("carol").public_key().to_string(),
        &AdminKey::generate().public_key().to_string(),
    );
    let r = open(&h, "replace-admins", &new_text).await.unwrap();
    // An admin's key is not the recovery key.
    let e = start(&h, &r, h.key("alice")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("recovery-key"), "{}", e.message());
    // Admins cannot approve a recovery action into being.
    let e = h
        .client("alice")
        .await
        .approve(proto::DecisionRequest {
            id: r.id.clone(),
            admin: "alice".into(),
            format: proto::SignatureFormat::Bip340 as i32,
            signature: h
                .key("alice")
                .sign_digest(r.approval_digest.as_slice().try_into().unwrap())
                .to_vec(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("the recovery key starts it"),
        "{}",
        e.message()
    );
    // No [recovery]: nothing to start.
    let plain = AdminHarness::start().await;
    let e = open(&plain, "unfreeze", "").await.unwrap_err();
    assert!(
        e.message().contains("no [recovery] section"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_key_lifts_a_freeze_after_the_delay() {
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    install(&h, &with_recovery(&h, &recovery));
    h.core.freeze("erin", "rogue admin").unwrap();
    let r = open(&h, "unfreeze", "").await.unwrap();
    assert_eq!(r.freeze_by, "erin");
    start(&h, &r, &recovery).await.unwrap();
    assert!(execute(&h, &r.id).await.is_err());
    assert!(h.core.frozen().is_some());
    h.clock.advance(RECOVERY_DRAFT_SECS + DELAY);
    let msg = execute(&h, &r.id).await.unwrap();
    assert!(msg.contains("the freeze is lifted"), "{msg}");
    assert!(h.core.frozen().is_none());
}

/// Issue 25, item 17: an unfreeze request that reaches its quorum after its freeze was lifted
/// some other way (here by the recovery key) and a new freeze made says nothing changed and
/// that the signer stays frozen, instead of "the freeze is lifted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfreeze_for_a_freeze_lifted_another_way_says_nothing_changed() {
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    install(&h, &with_recovery(&h, &recovery));
    h.core.freeze("erin", "rogue admin").unwrap();
    let r = open(&h, "unfreeze", "").await.unwrap();
    start(&h, &r, &recovery).await.unwrap();
    h.clock.advance(RECOVERY_DRAFT_SECS + DELAY);
    // The admins ask the quorum to lift erin's freeze too; the recovery key's action, due
    // now, lifts it first.
    let asked = h
        .client("alice")
        .await
        .unfreeze(proto::UnfreezeRequest::default())
        .await
        .unwrap()
        .into_inner();
    execute(&h, &r.id).await.unwrap();
    h.core.freeze("bob", "second thoughts").unwrap();
    let request = asked.request.expect("the unfreeze request");
    let mut last = String::new();
    for admin in ["alice", "bob"] {
        if let Ok(out) = h.sign(admin, &request, false).await {
            last = out.message;
        }
    }
    assert!(
        last.contains("nothing changed") && last.contains("stays frozen by bob"),
        "{last}"
    );
    assert!(!last.contains("the freeze is lifted"), "{last}");
    assert_eq!(h.core.frozen().map(|f| f.by), Some("bob".to_string()));
}

/// Issue 25, item 8: a recovery action is checked against the policy in force inside its own
/// transaction. Here a policy change is committed while the execution waits for the store's
/// slot: the execution must see it (and, as the action was signed under the policy before,
/// refuse), not the policy it would have read before it waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_action_is_checked_against_the_policy_committed_while_it_waited() {
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    let text = with_recovery(&h, &recovery);
    install(&h, &text);
    h.core.freeze("erin", "rogue admin").unwrap();
    let r = open(&h, "unfreeze", "").await.unwrap();
    start(&h, &r, &recovery).await.unwrap();
    h.clock.advance(RECOVERY_DRAFT_SECS + DELAY);
    let store = h.core.store().clone();
    let held = store.begin().unwrap();
    let (core, id) = (h.core.clone(), r.id.clone());
    let executing = std::thread::spawn(move || core.execute_recovery(&id));
    while store.writers_waiting() == 0 {
        std::thread::yield_now();
    }
    // The execution waits for the slot; the policy in force changes meanwhile.
    let changed = format!("{text}\n# changed while the recovery waited\n");
    h.core
        .set_policy(LoadedPolicy {
            policy: Arc::new(warden::policy::parse_policy(&changed).unwrap()),
            text: changed,
        })
        .unwrap();
    held.commit().unwrap();
    let e = executing.join().unwrap().unwrap_err().to_string();
    assert!(e.contains("policy"), "{e}");
    assert!(h.core.frozen().is_some(), "nothing was executed");
}

#[test]
fn a_recovery_key_that_is_an_admin_s_is_refused() {
    let admin = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828";
    let text = format!(
        "version = 1\n[admins]\nalice = {{ pubkey = \"{admin}\" }}\n\n[recovery]\nkey = {{ pubkey = \"{admin}\" }}\nactions = [\"sweep-everything\"]\n"
    );
    let errors = warden::policy::parse_policy(&text).unwrap_err();
    let all: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
        .collect();
    assert!(
        all.iter()
            .any(|e| e.starts_with("6:1:") && e.contains("admin \"alice\"'s key")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|e| e.starts_with("7:12:")
            && e.contains("unknown recovery action \"sweep-everything\"")),
        "{all:?}"
    );
}

/// Where the policy counts blocks too, a clock moved forward does not end the delay: the node's
/// chain must have moved on by `delay_blocks` since the start as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_delay_blocks_the_chain_must_move_on_as_well_as_the_clock() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    let text = format!("{}delay_blocks = 3\n", with_recovery(&h, &recovery));
    install(&h, &text);
    h.core.freeze("erin", "rogue admin").unwrap();
    let r = open(&h, "unfreeze", "").await.unwrap();
    // No chain height known: nothing could count the blocks, so it does not start.
    let e = start(&h, &r, &recovery).await.unwrap_err();
    assert!(e.message().contains("counts blocks"), "{}", e.message());
    let height = Arc::new(AtomicU32::new(100));
    let hh = height.clone();
    h.core
        .set_chain_height(Arc::new(move || Some(hh.load(Ordering::SeqCst))));
    start(&h, &r, &recovery).await.unwrap();
    // The clock jumps far ahead; the chain has not moved.
    h.clock.advance(30 * 86_400);
    let e = execute(&h, &r.id).await.unwrap_err();
    assert!(
        e.message()
            .contains("block 103 (the node's chain is at 100)"),
        "{}",
        e.message()
    );
    height.store(102, Ordering::SeqCst);
    assert!(execute(&h, &r.id).await.is_err());
    height.store(103, Ordering::SeqCst);
    execute(&h, &r.id).await.unwrap();
    assert!(h.core.frozen().is_none());
}

fn xpub(seed: u8, network: lightning_signer::bitcoin::NetworkKind) -> String {
    use lightning_signer::bitcoin::bip32::{Xpriv, Xpub};
    let secp = lightning_signer::bitcoin::secp256k1::Secp256k1::new();
    let xprv = Xpriv::new_master(network, &[seed; 32]).unwrap();
    Xpub::from_priv(&secp, &xprv).to_string()
}

fn derived(descriptor: &str, i: u32) -> String {
    use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
    use std::str::FromStr;
    Descriptor::<DescriptorPublicKey>::from_str(descriptor)
        .unwrap()
        .at_derivation_index(i)
        .unwrap()
        .address(lightning_signer::bitcoin::Network::Bitcoin)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_allows_on_chain_spends_to_the_recovery_destination_and_nothing_else() {
    use warden::policy::PaymentRequest;
    let h = AdminHarness::start().await;
    let recovery = AdminKey::generate();
    let desc = format!(
        "wpkh({}/0/*)",
        xpub(7, lightning_signer::bitcoin::NetworkKind::Main)
    );
    let text = format!(
        "{}destination = \"{desc}\"\ndestination_range = 10\n",
        with_recovery(&h, &recovery)
    );
    install(&h, &text);
    let r = open(&h, "sweep", "").await.unwrap();
    assert_eq!(
        r.recovery_text, desc,
        "the key signs the destination it sweeps to"
    );
    start(&h, &r, &recovery).await.unwrap();
    h.clock.advance(RECOVERY_DRAFT_SECS + DELAY);
    let msg = execute(&h, &r.id).await.unwrap();
    assert!(
        msg.contains("to the recovery destination are allowed"),
        "{msg}"
    );
    let spend = |outputs: Vec<(String, u64)>| {
        h.core
            .decide_payment(&PaymentRequest::onchain(outputs), None)
    };
    let ok = spend(vec![(derived(&desc, 5), 900_000_000_000)]);
    assert!(ok.approved, "{ok:?}");
    assert_eq!(ok.tags, vec!["warden-recovery-sweep"]);
    for outputs in [
        // Beyond destination_range.
        vec![(derived(&desc, 10), 1_000)],
        // Another address.
        vec![(
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".to_string(),
            1_000,
        )],
        // One output to the destination is not enough.
        vec![
            (derived(&desc, 1), 1_000),
            (
                "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".to_string(),
                1_000,
            ),
        ],
    ] {
        let no = spend(outputs.clone());
        assert!(!no.approved, "{outputs:?}");
        assert_eq!(no.tags, vec!["warden-frozen"]);
    }
    // A Lightning payment is no on-chain spend to the destination.
    let ln = h.core.decide_payment(
        &PaymentRequest::invoice([3; 32], 1_000_000, common::api::PAYEE, None),
        None,
    );
    assert_eq!(ln.tags, vec!["warden-frozen"]);
}

#[test]
fn a_recovery_destination_is_checked_by_miniscript() {
    let admins = "version = 1\n[admins]\nalice = { pubkey = \"02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828\" }\n\n[recovery]\nkey = { pubkey = \"02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436\" }\n";
    let testnet = format!(
        "wpkh({}/0/*)",
        xpub(1, lightning_signer::bitcoin::NetworkKind::Test)
    );
    for (line, expected) in [
        (
            "destination = \"wsh(nonsense)\"".to_string(),
            "not a valid output descriptor",
        ),
        (
            format!("destination = \"{testnet}\""),
            "is not for the bitcoin network",
        ),
        (
            "actions = [\"sweep\"]".to_string(),
            "allows \"sweep\" but names no `destination`",
        ),
    ] {
        let errors = warden::policy::parse_policy(&format!("{admins}{line}\n")).unwrap_err();
        assert!(
            errors.iter().any(|e| e.message.contains(expected)),
            "{line}: {errors:?}"
        );
    }
    let ok = format!(
        "{admins}destination = \"wpkh({}/0/*)\"\n",
        xpub(1, lightning_signer::bitcoin::NetworkKind::Main)
    );
    let p = warden::policy::parse_policy(&ok).unwrap();
    assert_eq!(
        p.recovery.unwrap().destination.unwrap().addresses.len(),
        1_000
    );
}

/// A recovery key held in a hardware wallet: declared by its address, it signs the action's
/// text as a Bitcoin message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_wallet_recovery_key_signs_the_action_s_text() {
    let h = AdminHarness::start().await;
    let wallet = common::api::WalletAdmin::new(0x43);
    let text = format!(
        "{}\n[recovery]\nkey = {{ address = \"{}\" }}\ndelay = \"1h\"\n",
        h.core.policy().text,
        wallet.p2wpkh
    );
    install(&h, &text);
    h.core.freeze("erin", "rogue admin").unwrap();
    let r = open(&h, "unfreeze", "").await.unwrap();
    assert!(
        r.approval_text.contains("recovery: unfreeze")
            && r.approval_text.contains("executable: from"),
        "{}",
        r.approval_text
    );
    let signed = |sig: Vec<u8>| proto::DecisionRequest {
        id: r.id.clone(),
        admin: "recovery-key".into(),
        format: proto::SignatureFormat::BitcoinMessage as i32,
        signature: sig,
        reason: String::new(),
    };
    // A signature over other text does not start it.
    let e = h
        .client("relay")
        .await
        .start_recovery(signed(wallet.sign_core("something else")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    h.client("relay")
        .await
        .start_recovery(signed(wallet.sign_core(&r.approval_text)))
        .await
        .unwrap();
    h.clock.advance(3_600 + 600);
    execute(&h, &r.id).await.unwrap();
    assert!(h.core.frozen().is_none());
}
