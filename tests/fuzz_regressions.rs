//! Every saved fuzz input (the seed corpus and each input a fuzzer once crashed on) replayed
//! through the same target bodies `fuzz/` runs (`warden_testkit::fuzzing`), on the stable toolchain, so
//! CI checks them without nightly. `scripts/fuzz.sh` adds crashes to `fuzz/regressions/`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no saved inputs for {target}");
}

#[test]
fn policy_file_inputs() {
    replay("policy_file", warden_testkit::fuzzing::policy_file);
}

#[test]
fn admin_request_inputs() {
    replay("admin_request", warden_testkit::fuzzing::admin_request);
}

#[test]
fn hsmd_request_inputs() {
    replay("hsmd_request", warden_testkit::fuzzing::hsmd_request);
}

#[test]
fn sealed_seed_inputs() {
    replay("sealed_seed", warden_testkit::fuzzing::sealed_seed);
}

#[test]
fn audit_record_inputs() {
    replay("audit_record", warden_testkit::fuzzing::audit_record);
}
