//! HSM ECDSA signing latency next to in-process secp256k1 signing, so the cost of keeping the
//! audit key in the HSM is a number, not a guess. Runs against a real SoftHSM2 token created
//! in a temporary directory. `scripts/bench.sh` runs it; figures go to BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};
use lightning_signer::bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use std::process::Command;
use warden::hsm::{Hsm, HsmConfig, PinSource, DEFAULT_MODULE};

fn token() -> (tempfile::TempDir, Hsm) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let ok = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .output()
        .expect("softhsm2-util (scripts/setup.sh installs it)")
        .status
        .success();
    assert!(ok, "softhsm2-util --init-token failed");
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234").unwrap();
    // Single-threaded here, before any PKCS#11 call: the only reader of this variable.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let hsm = Hsm::open(&HsmConfig {
        module: DEFAULT_MODULE.into(),
        token_label: "bench".into(),
        pin: PinSource::File(pin),
        max_sessions: 2,
    })
    .unwrap();
    hsm.init(
        &dir.path().join("data"),
        lightning_signer::bitcoin::Network::Regtest,
    )
    .unwrap();
    (dir, hsm)
}

fn sign(c: &mut Criterion) {
    let (_dir, hsm) = token();
    let mut g = c.benchmark_group("ecdsa_sign_32_byte_digest");
    let mut n = 0u64;
    g.bench_function("softhsm2_pkcs11", |b| {
        b.iter(|| {
            n += 1;
            let mut d = [7u8; 32];
            d[..8].copy_from_slice(&n.to_le_bytes());
            hsm.sign_digest(&d).unwrap()
        })
    });
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&[3u8; 32]).unwrap();
    g.bench_function("secp256k1_in_process", |b| {
        b.iter(|| {
            n += 1;
            let mut d = [7u8; 32];
            d[..8].copy_from_slice(&n.to_le_bytes());
            secp.sign_ecdsa(&Message::from_digest(d), &sk)
        })
    });
    g.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
