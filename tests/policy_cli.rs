//! `wardenctl policy check | explain | simulate` as an operator runs them.

use std::process::Command;

fn wardenctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardenctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn policy_path(name: &str) -> String {
    format!("{}/policy/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_a_good_file_with_a_one_line_summary() {
    let path = policy_path("default.toml");
    let (code, out, err) = wardenctl(&["policy", "check", &path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "{path}: OK — version 1 \"default\", 3 admins, 4 rules"
        )),
        "{out}"
    );
    let p = warden::policy::load_policy_file(std::path::Path::new(&path)).unwrap();
    assert!(
        out.contains(&p.hash_hex()),
        "the summary names the policy hash: {out}"
    );
}

#[test]
fn check_rejects_a_broken_file_with_file_line_col_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "version = 1\n[admins]\nalice = { pubkey = \"02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828\" }\n[[approval]]\ntag = \"big\"\nabove = \"1 btc\"\nquorum = { need = 2, of = [\"alice\", \"zed\"] }\n[[limit]]\ntag = \"cap\"\nwindow = \"1h\"\nmax_amount = 5000000\n",
    )
    .unwrap();
    let p = path.display().to_string();
    let (code, out, err) = wardenctl(&["policy", "check", &p]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], format!("{p}:7:37: unknown admin \"zed\" in the quorum of [[approval]] \"big\"; declare it under [admins] or remove it"));
    assert!(
        lines[1].starts_with(&format!(
            "{p}:11:14: `max_amount` in [[limit]]: 5000000 has no unit"
        )),
        "{err}"
    );
    assert_eq!(
        lines[2],
        format!("{p}: 2 problem(s); the file was not loaded")
    );
}

#[test]
fn check_of_a_missing_file_fails_naming_it() {
    let (code, _, err) = wardenctl(&["policy", "check", "/nonexistent/p.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/p.toml: cannot read the policy file"),
        "{err}"
    );
}

#[test]
fn explain_describes_each_rule_by_tag() {
    let (code, out, err) = wardenctl(&["policy", "explain", &policy_path("exchange.toml")]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "- [sanctioned-destinations] refuses any payment to 1 node(s) and 1 address(es).",
        "- [per-destination-hourly] allows at most 10,000,000 sat and 20 payments in any rolling 1h, counting each destination separately.",
        "- [daily-cap-watch] allows at most 1,500,000,000 sat in any rolling 24h, counting all payments together (warn only: reported, never refused).",
        "- [large-withdrawal-quorum] holds payments above 2,000,000 sat until 2 of alice, bob, carol, dave approve (requests expire after 30m).",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn explain_names_every_channel_limit_by_its_tag() {
    let (code, out, err) = wardenctl(&["policy", "explain", &policy_path("default.toml")]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "- [warden-channel-size] refuses a channel (opened or accepted) larger than 10,000,000 sat.",
        "- [warden-channel-total] refuses a channel that would bring the capacity in all channels above 100,000,000 sat.",
        "- [warden-channel-peer] refuses a channel that would bring the capacity with one peer above 10,000,000 sat.",
        "- [warden-channel-count] refuses a channel beyond the 50th.",
        "- [warden-htlc-count] does not approve a payment while 100 outgoing HTLCs are in flight.",
        "- [warden-liquidity-low] alerts when a channel's outbound balance falls below 10 % of its capacity.",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Private channels are allowed in the default policy, so that rule is not listed.
    assert!(!out.contains("warden-channel-private"), "{out}");
}

#[test]
fn simulate_replays_with_a_virtual_clock_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let payee = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
    let mut lines = Vec::new();
    // Three payments of 1,000,000 sat a minute apart: the default's per-payment cap allows
    // them, the quorum threshold (above 1,000,000) does not trigger, and the hourly cap
    // (5,000,000) is reached on the sixth.
    for _ in 0..6 {
        lines.push(format!(
            "{{\"after\": \"1m\", \"amount\": \"1_000_000 sat\", \"payee\": \"{payee}\"}}"
        ));
    }
    lines.push(format!(
        "{{\"after\": \"1m\", \"amount\": \"1_500_000 sat\", \"payee\": \"{payee}\"}}"
    ));
    lines.push(format!(
        "{{\"after\": \"2h\", \"amount\": \"1_500_000 sat\", \"payee\": \"{payee}\"}}"
    ));
    let file = dir.path().join("p.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = wardenctl(&[
        "policy",
        "simulate",
        &policy_path("default.toml"),
        "--payments",
        &file.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let decisions: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(decisions.len(), 8, "{out}");
    assert!(
        decisions[4].contains("approve") && decisions[4].contains("mon 00:05:00 UTC"),
        "{out}"
    );
    assert!(decisions[5].contains("deny    [hourly-cap]"), "{out}");
    assert!(out.contains("rule hourly-cap: 6,000,000 sat would be spent in the last 1h; the limit is 5,000,000 sat"), "{out}");
    assert!(
        decisions[6].contains("deny"),
        "still over the hourly cap: {out}"
    );
    assert!(
        decisions[7].contains("hold    [large-payment-quorum]"),
        "{out}"
    );
    let total = |verdict: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(verdict))
            .unwrap_or_else(|| panic!("{out}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(total("approve "), ["approve", "5", "5,000,000", "sat"]);
    assert_eq!(total("hold "), ["hold", "1", "1,500,000", "sat"]);
    assert_eq!(total("deny "), ["deny", "2", "2,500,000", "sat"]);
}

#[test]
fn simulate_reports_a_bad_line_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.jsonl");
    std::fs::write(&file, "{\"amount\": \"5 sat\", \"payee\": \"02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91\"}\n{\"amount\": \"5\", \"payee\": \"x\"}\n").unwrap();
    let (code, _, err) = wardenctl(&[
        "policy",
        "simulate",
        &policy_path("default.toml"),
        "--payments",
        &file.display().to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("p.jsonl:2: \"payee\" is not a node id"),
        "{err}"
    );
}

#[test]
fn simulate_replays_a_fleet_policy_as_one_member() {
    let dir = tempfile::tempdir().unwrap();
    let payee = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
    let node_b = "03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd";
    let policy = dir.path().join("fleet.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[fleet.members]\nnode-a = \"{payee}\"\nnode-b = \"{node_b}\"\n\
             [[limit]]\ntag = \"b-small\"\nwindow = \"24h\"\nmax_amount = \"10_000 sat\"\nmembers = [\"node-b\"]\n"
        ),
    )
    .unwrap();
    let file = dir.path().join("p.jsonl");
    std::fs::write(
        &file,
        format!("{{\"amount\": \"20_000 sat\", \"payee\": \"{payee}\"}}\n"),
    )
    .unwrap();
    let run = |member: &str| {
        wardenctl(&[
            "policy",
            "simulate",
            &policy.display().to_string(),
            "--payments",
            &file.display().to_string(),
            "--member",
            member,
        ])
    };
    let (code, out, err) = run("node-a");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with('#') && l.contains("approve")),
        "{out}"
    );
    let (code, out, err) = run("node-b");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deny    [b-small]"), "{out}");
    let (code, _, err) = run("node-x");
    assert_ne!(code, 0);
    assert!(
        err.contains("--member node-x: the policy's [fleet.members] does not admit \"node-x\"; it lists node-a, node-b"),
        "{err}"
    );
}
