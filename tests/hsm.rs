//! Key custody against real SoftHSM2 tokens: init, seal/unseal, tamper detection, low-S
//! signatures, and every error an operator can run into.

mod common;

use common::TestToken;
use lightning_signer::bitcoin::secp256k1::{Message, Secp256k1};
use lightning_signer::bitcoin::Network;
use std::collections::BTreeSet;
use warden::hsm::{sealed, HsmError, PinSource, SealedSeed, SEALED_SEED_FILE};

fn files_in(dir: &std::path::Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

#[test]
fn init_seals_a_seed_that_unseals_to_the_same_node_id() {
    let t = TestToken::new("init-roundtrip");
    let hsm = t.open();
    let report = hsm.init(&t.data_dir, Network::Regtest).unwrap();
    assert_eq!(report.sealed_seed_path, t.data_dir.join(SEALED_SEED_FILE));
    let blob = std::fs::read(&report.sealed_seed_path).unwrap();
    assert_eq!(blob.len(), sealed::BLOB_LEN);
    assert_eq!(
        files_in(&t.data_dir),
        BTreeSet::from([SEALED_SEED_FILE.to_string()])
    );

    let seed1 = hsm.load_seed(&t.data_dir, Network::Regtest).unwrap().seed;
    let seed2 = hsm.load_seed(&t.data_dir, Network::Regtest).unwrap().seed;
    assert_eq!(seed1.as_slice(), seed2.as_slice());
    assert_ne!(
        seed1.as_slice(),
        &[0u8; 32],
        "the seed must be random, not zeros"
    );
    // The plaintext seed is not in the blob.
    assert!(!blob.windows(32).any(|w| w == seed1.as_slice()));
    assert_eq!(
        warden::signer::node_id(&seed1, Network::Regtest),
        warden::signer::node_id(&seed2, Network::Regtest)
    );

    // A new process (a new login) opens the same seed.
    drop(hsm);
    let again = t.open();
    assert_eq!(
        again
            .load_seed(&t.data_dir, Network::Regtest)
            .unwrap()
            .seed
            .as_slice(),
        seed1.as_slice()
    );
}

#[test]
fn two_sealings_of_one_seed_differ_and_both_open() {
    let t = TestToken::new("reseal");
    let hsm = t.open();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let seed = warden::hsm::NodeSeed::new([0x5a; 32]);
    let binding = warden::hsm::SeedBinding::for_seed(Network::Regtest, &seed);
    let a = hsm.seal_seed(&seed, &binding).unwrap();
    let b = hsm.seal_seed(&seed, &binding).unwrap();
    assert_ne!(a.iv, b.iv, "every sealing uses a fresh IV");
    assert_ne!(a.ciphertext_and_tag, b.ciphertext_and_tag);
    let p = std::path::Path::new("x");
    assert_eq!(hsm.unseal_seed(&a, p).unwrap().as_slice(), seed.as_slice());
    assert_eq!(hsm.unseal_seed(&b, p).unwrap().as_slice(), seed.as_slice());
}

#[test]
fn every_flipped_byte_of_the_sealed_seed_is_detected() {
    let t = TestToken::new("tamper");
    let hsm = t.open();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let path = t.data_dir.join(SEALED_SEED_FILE);
    let good = std::fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let err = hsm.load_seed(&t.data_dir, Network::Regtest).unwrap_err();
        match i {
            0..=3 => assert!(err.to_string().contains("bad magic"), "byte {i}: {err}"),
            4 => assert!(
                err.to_string()
                    .contains("format version 3 is not supported"),
                "byte {i}: {err}"
            ),
            5 => {
                // regtest (3) became signet (2): named before the HSM is asked ...
                assert!(
                    matches!(
                        err,
                        HsmError::SealedSeedWrongNetwork {
                            sealed_for: Network::Signet,
                            configured: Network::Regtest,
                            ..
                        }
                    ),
                    "byte {i}: {err}"
                );
                // ... and a node configured for the edited network cannot open it either.
                let err = hsm.load_seed(&t.data_dir, Network::Signet).unwrap_err();
                assert!(
                    matches!(err, HsmError::SealedSeedTampered { .. }),
                    "byte {i} opened for signet: {err}"
                );
            }
            _ => assert!(
                matches!(err, HsmError::SealedSeedTampered { .. }),
                "byte {i}: {err}"
            ),
        }
    }
    std::fs::write(&path, &good).unwrap();
    hsm.load_seed(&t.data_dir, Network::Regtest).unwrap();
}

#[test]
fn a_seed_sealed_for_one_network_is_refused_on_another() {
    let t = TestToken::new("seed-network");
    let hsm = t.open();
    let report = hsm.init(&t.data_dir, Network::Testnet).unwrap();
    assert_eq!(report.binding.network, Network::Testnet);
    let msg = hsm
        .load_seed(&t.data_dir, Network::Bitcoin)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("is sealed for the testnet network, but this configuration runs on bitcoin"),
        "{msg}"
    );
    assert!(msg.contains("fix `network` in the configuration"), "{msg}");
    let loaded = hsm.load_seed(&t.data_dir, Network::Testnet).unwrap();
    assert_eq!(loaded.binding, report.binding);
    assert!(!loaded.legacy);
}

#[test]
fn a_format_1_seed_opens_with_its_own_id_and_is_rewritten_bound_to_its_network() {
    let t = TestToken::new("seed-upgrade");
    let hsm = t.open();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let path = t.data_dir.join(SEALED_SEED_FILE);
    let original = hsm.load_seed(&t.data_dir, Network::Regtest).unwrap();
    let legacy = hsm.seal_seed_v1(&original.seed).unwrap();
    std::fs::write(&path, legacy.to_bytes()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), sealed::LEGACY_BLOB_LEN);

    // Read, it opens bound to the configured network and the seed's own id, and the file is
    // left alone until it is upgraded.
    let upgraded = hsm.load_seed(&t.data_dir, Network::Signet).unwrap();
    assert!(upgraded.legacy);
    assert_eq!(upgraded.seed.as_slice(), original.seed.as_slice());
    assert_eq!(upgraded.binding.network, Network::Signet);
    assert_eq!(
        upgraded.binding.seed_id, original.binding.seed_id,
        "the id is the seed's own, so the state that recorded it accepts the upgraded file"
    );
    assert_eq!(std::fs::read(&path).unwrap().len(), sealed::LEGACY_BLOB_LEN);
    assert!(hsm.upgrade_seed(&t.data_dir, &upgraded).unwrap());
    let blob = std::fs::read(&path).unwrap();
    assert_eq!(blob.len(), sealed::BLOB_LEN);
    assert_eq!(blob[4], sealed::FORMAT_VERSION);
    assert_eq!(
        SealedSeed::from_bytes(&blob).unwrap().binding,
        Some(upgraded.binding)
    );
    // From now on it is bound: the same id again, and another network is refused.
    let again = hsm.load_seed(&t.data_dir, Network::Signet).unwrap();
    assert!(!again.legacy);
    assert!(
        !hsm.upgrade_seed(&t.data_dir, &again).unwrap(),
        "nothing to do"
    );
    assert_eq!(again.binding, upgraded.binding);
    assert_eq!(again.seed.as_slice(), original.seed.as_slice());
    assert!(matches!(
        hsm.load_seed(&t.data_dir, Network::Regtest).unwrap_err(),
        HsmError::SealedSeedWrongNetwork { .. }
    ));
    assert_eq!(
        files_in(&t.data_dir),
        BTreeSet::from([SEALED_SEED_FILE.to_string()]),
        "no temporary file is left behind"
    );
}

#[test]
fn tampered_truncated_and_foreign_blobs_give_clear_errors() {
    let t = TestToken::new("blob-errors");
    let hsm = t.open();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let path = t.data_dir.join(SEALED_SEED_FILE);
    let good = std::fs::read(&path).unwrap();

    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    std::fs::write(&path, &bad).unwrap();
    let msg = hsm
        .load_seed(&t.data_dir, Network::Regtest)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("failed authentication: it was altered"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    std::fs::write(&path, &good[..30]).unwrap();
    let msg = hsm
        .load_seed(&t.data_dir, Network::Regtest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("is malformed: truncated: 30 bytes"), "{msg}");

    let mut v9 = good.clone();
    v9[4] = 9;
    std::fs::write(&path, &v9).unwrap();
    let msg = hsm
        .load_seed(&t.data_dir, Network::Regtest)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("format version 9 is not supported by this build"),
        "{msg}"
    );

    std::fs::remove_file(&path).unwrap();
    let msg = hsm
        .load_seed(&t.data_dir, Network::Regtest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot read the sealed node seed"), "{msg}");
    assert!(msg.contains("Run `wardenctl init`"), "{msg}");

    // A blob sealed by another token's key does not open here.
    let other = TestToken::new("blob-other");
    let other_hsm = other.open();
    other_hsm.init(&other.data_dir, Network::Regtest).unwrap();
    let foreign = std::fs::read(other.data_dir.join(SEALED_SEED_FILE)).unwrap();
    let sealed = SealedSeed::from_bytes(&foreign).unwrap();
    let err = hsm.unseal_seed(&sealed, &path).unwrap_err();
    assert!(matches!(err, HsmError::SealedSeedTampered { .. }), "{err}");
}

#[test]
fn hsm_signatures_are_low_s_and_verify_with_secp256k1() {
    let t = TestToken::new("ecdsa");
    let hsm = t.open();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let pk = hsm.audit_public_key().unwrap();
    let secp = Secp256k1::verification_only();
    let half_order =
        hex::decode("7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0").unwrap();
    for i in 0u8..64 {
        let digest = lightning_signer::bitcoin::hashes::sha256::Hash::hash(&[i]);
        let digest: [u8; 32] = digest.to_byte_array();
        let sig = hsm.sign_digest(&digest).unwrap();
        let compact = sig.serialize_compact();
        assert!(compact[32..] <= half_order[..], "signature {i} is high-S");
        secp.verify_ecdsa(&Message::from_digest(digest), &sig, &pk)
            .unwrap();
        // And not over some other digest.
        let mut other = digest;
        other[0] ^= 1;
        assert!(secp
            .verify_ecdsa(&Message::from_digest(other), &sig, &pk)
            .is_err());
    }
}

use lightning_signer::bitcoin::hashes::Hash as _;

#[test]
fn the_session_pool_serves_concurrent_signers() {
    let t = TestToken::new("pool");
    let mut cfg = t.hsm_config();
    cfg.max_sessions = 2;
    let hsm = t.open_with(&cfg).unwrap();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let pk = hsm.audit_public_key().unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|n| {
            let hsm = hsm.clone();
            std::thread::spawn(move || {
                let secp = Secp256k1::verification_only();
                for i in 0..10u8 {
                    let digest = [n.wrapping_mul(31).wrapping_add(i); 32];
                    let sig = hsm.sign_digest(&digest).unwrap();
                    secp.verify_ecdsa(&Message::from_digest(digest), &sig, &pk)
                        .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    // Eight signers shared the bound: the pool opened exactly two sessions and reused them.
    assert_eq!(
        hsm.open_sessions(),
        2,
        "sessions opened for 80 signatures by 8 threads"
    );
}

#[test]
fn wrong_pin_is_refused_with_a_message_naming_the_source() {
    let t = TestToken::new("wrong-pin");
    let bad = t.path().join("bad-pin");
    std::fs::write(&bad, "0000").unwrap();
    let mut cfg = t.hsm_config();
    cfg.pin = PinSource::File(bad.clone());
    let msg = t.open_with(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("rejected the user PIN for token \"wrong-pin\""),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("PIN file {}", bad.display())),
        "{msg}"
    );
    assert!(
        !msg.contains("0000"),
        "the PIN must not appear in the message: {msg}"
    );
}

#[test]
fn missing_module_is_named_with_the_fix() {
    let t = TestToken::new("no-module");
    let mut cfg = t.hsm_config();
    cfg.module = t.path().join("nope/libvendor-pkcs11.so");
    let msg = t.open_with(&cfg).unwrap_err().to_string();
    assert!(msg.contains("cannot load the PKCS#11 module at"), "{msg}");
    assert!(msg.contains("libvendor-pkcs11.so"), "{msg}");
    assert!(msg.contains("set hsm.module"), "{msg}");

    // A file that is not a shared library at all.
    let junk = t.path().join("junk.so");
    std::fs::write(&junk, b"not an ELF").unwrap();
    cfg.module = junk;
    let msg = t.open_with(&cfg).unwrap_err().to_string();
    assert!(msg.contains("cannot load the PKCS#11 module at"), "{msg}");
}

#[test]
fn unknown_token_label_lists_the_tokens_present() {
    let t = TestToken::new("present-one");
    let mut cfg = t.hsm_config();
    cfg.token_label = "absent".into();
    let msg = t.open_with(&cfg).unwrap_err().to_string();
    assert!(msg.contains("no token labelled \"absent\""), "{msg}");
    assert!(msg.contains("tokens present: \"present-one\""), "{msg}");
}

#[test]
fn using_a_token_without_keys_says_to_run_init() {
    let t = TestToken::new("no-keys");
    let hsm = t.open();
    let msg = hsm.sign_digest(&[1u8; 32]).unwrap_err().to_string();
    assert!(
        msg.contains("the key \"warden-audit-ecdsa\" is missing from token \"no-keys\""),
        "{msg}"
    );
    assert!(msg.contains("wardenctl init"), "{msg}");
    let msg = hsm
        .seal_seed(
            &warden::hsm::NodeSeed::new([1; 32]),
            &warden::hsm::SeedBinding::for_seed(
                Network::Regtest,
                &warden::hsm::NodeSeed::new([1; 32]),
            ),
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("\"warden-seed-seal\" is missing"), "{msg}");
}

#[test]
fn a_second_init_refuses_and_changes_nothing() {
    let t = TestToken::new("init-twice");
    let hsm = t.open();
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let before = std::fs::read(t.data_dir.join(SEALED_SEED_FILE)).unwrap();
    let pk = hsm.audit_public_key().unwrap();

    // Same data dir: the seed file is protected.
    let msg = hsm
        .init(&t.data_dir, Network::Regtest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("a sealed node seed already exists"), "{msg}");
    // Fresh data dir, same token: the keys are protected.
    let other_dir = t.path().join("data2");
    let msg = hsm
        .init(&other_dir, Network::Regtest)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("already holds Warden keys (warden-seed-seal, warden-audit-ecdsa)"),
        "{msg}"
    );
    assert!(msg.contains("refusing to overwrite"), "{msg}");
    assert!(
        files_in(&other_dir).is_empty(),
        "no partial file: {:?}",
        files_in(&other_dir)
    );

    assert_eq!(
        std::fs::read(t.data_dir.join(SEALED_SEED_FILE)).unwrap(),
        before
    );
    assert_eq!(hsm.audit_public_key().unwrap(), pk);
    hsm.load_seed(&t.data_dir, Network::Regtest).unwrap();
}

#[test]
fn an_unwritable_data_dir_fails_before_any_key_is_created() {
    let t = TestToken::new("readonly-dir");
    let hsm = t.open();
    // A path under a regular file can never be created, even by root.
    let blocker = t.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let dir = blocker.join("data");
    let msg = hsm.init(&dir, Network::Regtest).unwrap_err().to_string();
    assert!(msg.contains("the data directory"), "{msg}");
    assert!(msg.contains("is not writable"), "{msg}");
    let status = hsm.status().unwrap();
    assert!(
        status.keys.is_empty(),
        "a failed init must leave no keys: {:?}",
        status.keys
    );
    // And the token is still usable for a proper init.
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
}

#[test]
fn status_lists_protected_keys_and_no_secret() {
    let t = TestToken::new("status");
    let hsm = t.open();
    assert!(hsm.status().unwrap().keys.is_empty());
    let report = hsm.init(&t.data_dir, Network::Regtest).unwrap();
    let status = hsm.status().unwrap();
    assert_eq!(status.token_label, "status");
    assert!(status.library.contains("SoftHSM"), "{}", status.library);
    let labels: Vec<_> = status
        .keys
        .iter()
        .map(|k| (k.label.as_str(), k.kind, k.protected))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("warden-seed-seal", "AES-256", true),
            ("warden-audit-ecdsa", "secp256k1", true)
        ]
    );
    assert_eq!(
        status.keys[1].public_key.as_deref(),
        Some(report.audit_public_key.to_string().as_str())
    );
    let seed = hsm.load_seed(&t.data_dir, Network::Regtest).unwrap().seed;
    let rendered = format!("{status:?} {}", serde_json::to_string(&status).unwrap());
    assert!(!rendered.contains(&hex::encode(seed.as_slice())));
    assert!(!rendered.contains(common::USER_PIN));
}

#[test]
fn a_pin_from_the_environment_is_removed_from_it_once_read_and_still_logs_in_again() {
    let t = TestToken::new("pin-env");
    let var = "WARDEN_TEST_PIN_ENV_REMOVED";
    let mut cfg = t.hsm_config();
    cfg.pin = PinSource::Env(var.into());
    // The environment is changed under the harness's lock, as open_with reads it.
    {
        let _g = common::INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var(var, common::USER_PIN);
    }
    let hsm = t.open_with(&cfg).unwrap();
    assert!(
        std::env::var(var).is_err(),
        "the PIN is no longer in the process environment"
    );
    hsm.init(&t.data_dir, Network::Regtest).unwrap();
    // The watch's recovery path logs in again from the PIN held in zeroizing memory.
    hsm.relogin().unwrap();
    hsm.probe().unwrap();
    hsm.sign_digest(&[3u8; 32]).unwrap();
}
