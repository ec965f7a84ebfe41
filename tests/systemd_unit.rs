//! The shipped systemd unit: hardened as the README says, and scored by systemd itself.

use std::process::Command;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/systemd/wardend.service"
);

#[test]
fn the_unit_is_hardened_and_systemd_scores_its_exposure_at_most_2() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    for directive in [
        "User=warden",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "LimitCORE=0",
        "LimitMEMLOCK=infinity",
        "ReadWritePaths=/var/lib/warden",
        "ReadOnlyPaths=/etc/warden/hsm-pin /etc/warden/pg-password",
        "CapabilityBoundingSet=\n",
        "Restart=always",
    ] {
        assert!(text.contains(directive), "the unit lacks {directive:?}");
    }
    // systemd-analyze wants the file under a unit name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardend.service");
    std::fs::copy(UNIT, &path).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd, installed by scripts/setup.sh)");
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for wardend.service"))
        .unwrap_or_else(|| {
            panic!(
                "no score in: {report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.0, "exposure {score} (README says 1.4): {line}");
}
