//! Policy files: the shipped examples load, the reference documents exactly what the parser
//! accepts, and malformed files are reported with exact line:column and a useful message.

use std::collections::BTreeSet;
use warden::policy::{load_policy_file, parse_policy, Members, Mode, KNOWN_KEYS};

const ADMINS: &str = r#"version = 1
[admins]
alice = { pubkey = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828" }
bob = { pubkey = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436" }
carol = { pubkey = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e" }
"#;

/// `ADMINS` takes lines 1-5; rules appended start at line 6.
fn with_admins(rules: &str) -> String {
    format!("{ADMINS}{rules}")
}

/// Assert the exact set of errors: (line, column, text the message must contain).
fn assert_errors(src: &str, expected: &[(usize, usize, &str)]) {
    let errors = parse_policy(src).expect_err("the file must be rejected");
    let got: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
        .collect();
    assert_eq!(errors.len(), expected.len(), "errors: {got:#?}");
    for (e, (line, col, text)) in errors.iter().zip(expected) {
        assert_eq!(
            (e.line, e.col),
            (*line, *col),
            "position of {:?}; all: {got:#?}",
            e.message
        );
        assert!(
            e.message.contains(text),
            "message {:?} lacks {text:?}",
            e.message
        );
    }
}

#[test]
fn every_shipped_policy_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = load_policy_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.tags().is_empty(), "{} has no rules", path.display());
            loaded += 1;
        }
    }
    assert_eq!(loaded, 3, "default, exchange and merchant");
}

#[test]
fn the_default_policy_needs_two_of_three_above_one_million_sat() {
    let p = parse_policy(warden::policy::DEFAULT_POLICY).unwrap();
    let q = &p.approvals[0];
    assert_eq!(q.above_msat, Some(1_000_000_000));
    assert_eq!(q.quorum.need, 2);
    assert_eq!(q.quorum.of, vec!["alice", "bob", "carol"]);
    assert_eq!(q.mode, Mode::Enforce);
}

/// Every `warden-…` tag spelled in `text`.
fn warden_tags(text: &str) -> BTreeSet<String> {
    text.match_indices("warden-")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect::<String>()
        })
        .filter(|t| t.len() > "warden-".len())
        .collect()
}

#[test]
fn warden_tags_are_defined_once_and_documented_in_the_reference() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy/README.md")).unwrap();
    let section = readme
        .split("## Warden's own tags")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("policy/README.md has a section \"Warden's own tags\"");
    let documented = warden_tags(section);
    let defined: BTreeSet<String> = warden::tags::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, defined,
        "policy/README.md vs crates/warden-policy/src/tags.rs"
    );
    // No tag is spelled outside warden-policy's tags.rs: the names below are HSM object labels, a
    // directory and the CLN plugin's lightningd options, not tags.
    let not_tags: BTreeSet<&str> = [
        "warden-audit-ecdsa",
        "warden-seed-seal",
        "warden-audit-anchor",
        "warden-policy-anchor",
        "warden-data",
        "warden-server",
        "warden-ca",
        "warden-cert",
        "warden-key",
        "warden-timeout",
    ]
    .into();
    let mut stack = vec![
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/crates")),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.ends_with("warden-policy/src/tags.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for lit in text.split('"').skip(1).step_by(2) {
                if lit.starts_with("warden-") && lit.len() > "warden-".len() {
                    assert!(
                        not_tags.contains(lit),
                        "{} spells the tag \"{lit}\"; define it in crates/warden-policy/src/tags.rs and document it in policy/README.md",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy/README.md")).unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let parsed: BTreeSet<String> = KNOWN_KEYS.iter().map(|s| s.to_string()).collect();
    let undocumented: Vec<_> = parsed.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&parsed).collect();
    assert!(
        undocumented.is_empty(),
        "keys the parser accepts but policy/README.md does not document: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys policy/README.md documents but the parser rejects: {unknown:?}"
    );
}

#[test]
fn the_policy_hash_is_the_sha256_of_the_file() {
    use lightning_signer::bitcoin::hashes::{sha256, Hash};
    let p = parse_policy(warden::policy::DEFAULT_POLICY).unwrap();
    assert_eq!(
        p.hash,
        sha256::Hash::hash(warden::policy::DEFAULT_POLICY.as_bytes()).to_byte_array()
    );
    let q = parse_policy(&format!("{}\n", warden::policy::DEFAULT_POLICY)).unwrap();
    assert_ne!(p.hash, q.hash, "any byte change is a different policy");
}

#[test]
fn bad_01_toml_syntax_error() {
    assert_errors(
        "version = 1\n[admins\nalice = 1\n",
        &[(2, 8, "TOML syntax error")],
    );
}

#[test]
fn bad_02_missing_version() {
    assert_errors(
        "name = \"x\"\n",
        &[(1, 1, "missing `version = 1` at the top of the file")],
    );
}

#[test]
fn bad_03_unsupported_version() {
    assert_errors(
        "version = 2\n",
        &[(
            1,
            11,
            "policy version 2 is not supported; this Warden reads version = 1",
        )],
    );
}

#[test]
fn bad_04_unknown_top_level_key() {
    assert_errors(
        "version = 1\nlimits = 3\n",
        &[(2, 1, "unknown key `limits` in the top level; allowed keys are: version, name, admins, deny, allowlist, limit, approval, time_window")],
    );
}

#[test]
fn bad_05_unknown_key_in_a_limit() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"1h\"\nmax_amout = \"5 sat\"\n"),
        &[
            (6, 1, "[[limit]] \"cap\" limits nothing; add `max_amount` and/or `max_count`"),
            (9, 1, "unknown key `max_amout` in [[limit]]; allowed keys are: tag, mode, window, max_amount"),
        ],
    );
}

#[test]
fn bad_06_amount_without_unit() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"1h\"\nmax_amount = 5000000\n"),
        &[(9, 14, "`max_amount` in [[limit]]: 5000000 has no unit; write it as a string with a unit, e.g. max_amount = \"5000000 sat\"")],
    );
}

#[test]
fn bad_07_negative_amount() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"-5 sat\"\n"),
        &[(9, 14, "\"-5 sat\" is negative; amounts are zero or more")],
    );
}

#[test]
fn bad_08_unknown_amount_unit() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"5 bits\"\n"),
        &[(9, 14, "unknown unit \"bits\"; use msat, sat or btc")],
    );
}

#[test]
fn bad_09_unknown_admin_in_quorum() {
    assert_errors(
        &with_admins("[[approval]]\ntag = \"big\"\nabove = \"1 btc\"\nquorum = { need = 2, of = [\"alice\", \"dave\"] }\n"),
        &[(9, 37, "unknown admin \"dave\" in the quorum of [[approval]] \"big\"; declare it under [admins] or remove it")],
    );
}

#[test]
fn bad_10_need_above_number_of_admins() {
    assert_errors(
        &with_admins("[[approval]]\ntag = \"big\"\nabove = \"1 btc\"\nquorum = { need = 3, of = [\"alice\", \"bob\"] }\n"),
        &[(9, 19, "`need` in the quorum of [[approval]] \"big\" is 3 but only 2 admins are listed in `of`")],
    );
}

#[test]
fn bad_11_hourly_limit_above_daily_limit() {
    assert_errors(
        &with_admins(
            "[[limit]]\ntag = \"hourly\"\nwindow = \"1h\"\nmax_amount = \"5_000_000 sat\"\n\n[[limit]]\ntag = \"daily\"\nwindow = \"24h\"\nmax_amount = \"2_000_000 sat\"\n",
        ),
        &[(9, 14, "limit \"hourly\" allows 5,000,000 sat per 1h, more than limit \"daily\" allows per 24h (2,000,000 sat)")],
    );
}

#[test]
fn bad_12_duplicate_tags() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_amount = \"5 sat\"\n[[limit]]\ntag = \"cap\"\nwindow = \"1h\"\nmax_amount = \"50 sat\"\n"),
        &[(11, 7, "duplicate tag \"cap\" (first used at line 7, column 7); every rule needs its own tag")],
    );
}

#[test]
fn bad_13_admin_key_not_on_the_curve() {
    assert_errors(
        "version = 1\n[admins]\nmallory = { pubkey = \"02deadbeef\" }\n",
        &[(
            3,
            22,
            "`pubkey` of admin \"mallory\" is not a compressed secp256k1 public key",
        )],
    );
}

#[test]
fn bad_14_time_of_day_not_hh_mm() {
    assert_errors(
        &with_admins("[[time_window]]\ntag = \"hours\"\nfrom = \"8am\"\nto = \"20:00\"\n"),
        &[(8, 8, "\"8am\" is not a time of day; write HH:MM in UTC")],
    );
}

#[test]
fn bad_15_unknown_day() {
    assert_errors(
        &with_admins("[[time_window]]\ntag = \"hours\"\ndays = [\"mon\", \"funday\"]\nfrom = \"08:00\"\nto = \"20:00\"\n"),
        &[(8, 16, "\"funday\" in `days` of [[time_window]] is not a day")],
    );
}

#[test]
fn bad_16_unknown_mode() {
    assert_errors(
        &with_admins("[[deny]]\ntag = \"bad\"\nmode = \"block\"\npayees = []\n"),
        &[(8, 8, "\"block\" is not a mode; use \"enforce\" or \"warn\"")],
    );
}

#[test]
fn bad_17_count_on_a_per_payment_limit() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"payment\"\nmax_count = 5\n"),
        &[(9, 13, "a per-payment limit cannot count payments")],
    );
}

#[test]
fn bad_18_approval_rule_that_never_applies() {
    assert_errors(
        &with_admins("[[approval]]\ntag = \"noop\"\nquorum = { need = 1, of = [\"alice\"] }\n"),
        &[(6, 1, "[[approval]] \"noop\" never applies; set `above` (an amount) and/or `unlisted_destination = true`")],
    );
}

#[test]
fn bad_19_window_not_in_whole_minutes() {
    assert_errors(
        &with_admins("[[limit]]\ntag = \"cap\"\nwindow = \"90s\"\nmax_count = 5\n"),
        &[(
            8,
            10,
            "windows are counted in whole minutes; use e.g. \"2m\"",
        )],
    );
}

#[test]
fn bad_20_every_error_of_a_file_is_reported_at_once_in_order() {
    let src = with_admins(concat!(
        "[[limit]]\n",                               // 6
        "tag = \"Bad Tag\"\n",                       // 7
        "window = \"1h\"\n",                         // 8
        "max_amount = \"1000\"\n",                   // 9
        "colour = \"red\"\n",                        // 10
        "[[approval]]\n",                            // 11
        "tag = \"big\"\n",                           // 12
        "above = \"1 btc\"\n",                       // 13
        "quorum = { need = 0, of = [\"alice\"] }\n", // 14
    ));
    assert_errors(
        &src,
        &[
            (
                7,
                7,
                "tag \"Bad Tag\" in [[limit]] must be 1 to 64 characters",
            ),
            (9, 14, "\"1000\" has no unit"),
            (10, 1, "unknown key `colour` in [[limit]]"),
            (
                14,
                19,
                "`need` in the quorum of [[approval]] \"big\" must be at least 1",
            ),
        ],
    );
}

#[test]
fn bad_21_approval_without_quorum() {
    assert_errors(
        &with_admins("[[approval]]\ntag = \"big\"\nabove = \"1 btc\"\n"),
        &[(6, 1, "[[approval]] \"big\" is missing `quorum`")],
    );
}

#[test]
fn bad_22_payee_that_is_not_a_node_id() {
    assert_errors(
        &with_admins("[[allowlist]]\ntag = \"friends\"\npayees = [\"not-a-node\"]\n"),
        &[(
            8,
            11,
            "\"not-a-node\" in `payees` of [[allowlist]] is not a node id",
        )],
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, b"version = 1\nname = \"\xff\"\n").unwrap();
    let msg = load_policy_file(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:1:1: the file is not UTF-8 text",
            path.display()
        )),
        "{msg}"
    );
}

#[test]
fn bad_23_one_key_as_two_admins_is_refused_naming_both() {
    use lightning_signer::bitcoin::secp256k1::PublicKey;
    use lightning_signer::bitcoin::{Address, CompressedPublicKey, Network};
    use std::str::FromStr;
    let key = |hex: &str| CompressedPublicKey(PublicKey::from_str(hex).unwrap());
    let alice = key("02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828");
    let bob = key("02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436");
    let carol = key("022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e");
    // Alice's key again; Bob's P2WPKH address; Carol's P2PKH address on another network;
    // Alice's nested-segwit address. Every one is a second name for a key already declared.
    let src = with_admins(&format!(
        "dave = {{ pubkey = \"{}\" }}\nerin = {{ address = \"{}\" }}\nfrank = {{ address = \"{}\" }}\ngina = {{ address = \"{}\" }}\n",
        alice.0,
        Address::p2wpkh(&bob, Network::Bitcoin),
        Address::p2pkh(carol, Network::Testnet),
        Address::p2shwpkh(&alice, Network::Bitcoin),
    ));
    assert_errors(
        &src,
        &[
            (
                6,
                1,
                "admin \"dave\" signs with the same key as admin \"alice\"",
            ),
            (
                7,
                1,
                "admin \"erin\" signs with the same key as admin \"bob\"",
            ),
            (
                8,
                1,
                "admin \"frank\" signs with the same key as admin \"carol\"",
            ),
            (
                9,
                1,
                "admin \"gina\" signs with the same key as admin \"alice\"",
            ),
        ],
    );
    // Distinct keys, one of them by address, are fine.
    let other = key("03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd");
    parse_policy(&with_admins(&format!(
        "dave = {{ address = \"{}\" }}\n",
        Address::p2wpkh(&other, Network::Bitcoin)
    )))
    .unwrap();
}

#[test]
fn addresses_are_parsed_for_the_network_and_matched_as_scripts_however_written() {
    use warden::policy::{evaluate, parse_policy_for, PaymentRequest, VelocityState};
    let lower = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    // Upper-case bech32 is the same script: the deny rule must deny the node's output to it.
    let p = parse_policy(&with_admins(&format!(
        "[[deny]]\ntag = \"blocked\"\naddresses = [\"{}\"]\n",
        lower.to_uppercase()
    )))
    .unwrap();
    let spend = PaymentRequest::onchain(vec![(lower.into(), 1_000_000)]);
    let d = evaluate(&p, &spend, &VelocityState::default(), 1_795_435_200);
    assert_eq!(d.tags, vec!["blocked"], "{d:?}");
    // A testnet address in a policy for a mainnet node could never match: refused, with where.
    let testnet = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
    assert_errors(
        &with_admins(&format!(
            "[[deny]]\ntag = \"blocked\"\naddresses = [\"{testnet}\"]\n"
        )),
        &[(
            8,
            14,
            "is not an address of the bitcoin network this policy is loaded for",
        )],
    );
    // The same file for a testnet node loads.
    parse_policy_for(
        &with_admins(&format!(
            "[[deny]]\ntag = \"blocked\"\naddresses = [\"{testnet}\"]\n"
        )),
        lightning_signer::bitcoin::Network::Testnet,
    )
    .unwrap();
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_parsing() {
    let big = format!(
        "version = 1\n# {}\n",
        "x".repeat(warden::policy::MAX_POLICY_BYTES)
    );
    assert_errors(
        &big,
        &[(1, 1, "a policy file may be at most 16777216 bytes (16 MiB)")],
    );
}

#[test]
fn a_file_of_thousands_of_errors_lists_a_thousand_and_counts_the_rest() {
    let mut src = String::from(ADMINS);
    for i in 0..5_000 {
        src.push_str(&format!(
            "[[limit]]\ntag = \"L{i}\"\nwindow = \"1h\"\nmax_amount = \"1 sat\"\n"
        ));
    }
    let errors = parse_policy(&src).expect_err("every tag is invalid");
    assert_eq!(errors.len(), warden::policy::MAX_REPORTED_ERRORS + 1);
    let last = errors.last().unwrap();
    assert_eq!(
        last.message,
        "4000 more problems are not listed (the first 1000 are); fix these and check again"
    );
    assert!(errors[0].message.contains("tag \"L0\""), "{:?}", errors[0]);
}

#[test]
fn limits_over_the_same_destinations_compare_as_sets_whatever_the_order() {
    // The same two payees in a different order are the same scope: the hourly limit allows
    // more than the daily one over them, which the file must not be allowed to say.
    let (a, b) = (
        "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91",
        "02e216c352020a0ed16d88971305ae047200fd8f4b3f0dcd5967cdf499e7efcadc",
    );
    assert_errors(
        &with_admins(&format!(
            "[[limit]]\ntag = \"hourly\"\nwindow = \"1h\"\npayees = [\"{a}\", \"{b}\"]\nmax_amount = \"5_000_000 sat\"\n\n[[limit]]\ntag = \"daily\"\nwindow = \"24h\"\npayees = [\"{b}\", \"{a}\"]\nmax_amount = \"2_000_000 sat\"\n"
        )),
        &[(10, 14, "limit \"hourly\" allows 5,000,000 sat per 1h, more than limit \"daily\" allows per 24h (2,000,000 sat)")],
    );
}

#[test]
fn bad_24_values_are_parsed_strictly_as_documented() {
    let uncompressed = "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";
    assert_errors(
        &format!(
            "version = 1\n[admins]\nalice = {{ pubkey = \"{uncompressed}\" }}\nbob = {{ address = \"bc1pmfr3p9j00pfxjh0zmgp99y8zftmd3s5pmedqhyptwy6lm87hf5sspknck9\" }}\n[[time_window]]\ntag = \"office\"\ndays = [\"mon\"]\nfrom = \"+9:00\"\nto = \"17:00\"\n[[approval]]\ntag = \"q\"\nabove = \"1 sat\"\nquorum = {{ need = 1, of = [\"alice\"] }}\nexpiry = \"31d\"\n"
        ),
        &[
            (3, 20, "`pubkey` of admin \"alice\" is not a compressed secp256k1 public key (66 hex characters)"),
            (4, 19, "cannot sign a Bitcoin message Warden verifies"),
            (8, 8, "from"),
            (14, 10, "`expiry` in [[approval]] \"q\" is 31d; it must be between 1m and 30d"),
        ],
    );
}

/// Issue 25, item 18: BIP-340 verifies against the x-only key, so the same key with the other
/// parity prefix (or an address of it) is the same signer, in `[admins]` and in `[recovery]`.
#[test]
fn bad_25_one_key_with_the_other_parity_prefix_is_the_same_admin() {
    use lightning_signer::bitcoin::secp256k1::PublicKey;
    use lightning_signer::bitcoin::{Address, CompressedPublicKey, Network};
    use std::str::FromStr;
    let flip = |hex: &str| {
        let prefix = if hex.starts_with("02") { "03" } else { "02" };
        format!("{prefix}{}", &hex[2..])
    };
    let alice = "02d74311b32709b0d4d12c808cfc284f715826852b476f6264056bab56911c7828";
    let bob = "02c7710ba1c1b241e450d60cd814109129534559fd714b814baae7ac13849fc436";
    let carol = "022eca5e4c561d3363caee0799404de0b9936b5bd3ba80bee38c006c2dea111a0e";
    let bob_flipped = CompressedPublicKey(PublicKey::from_str(&flip(bob)).unwrap());
    let src = with_admins(&format!(
        "dave = {{ pubkey = \"{}\" }}\nerin = {{ address = \"{}\" }}\n",
        flip(alice),
        Address::p2wpkh(&bob_flipped, Network::Bitcoin),
    ));
    assert_errors(
        &src,
        &[
            (
                6,
                1,
                "admin \"dave\" signs with the same key as admin \"alice\"",
            ),
            (
                7,
                1,
                "admin \"erin\" signs with the same key as admin \"bob\"",
            ),
        ],
    );
    // The recovery key may not be an admin's key under the other prefix either.
    let src = with_admins(&format!(
        "[recovery]\nkey = {{ pubkey = \"{}\" }}\ndelay = \"7d\"\nactions = [\"unfreeze\"]\n",
        flip(carol)
    ));
    assert_errors(&src, &[(7, 1, "the recovery key is admin \"carol\"'s key")]);
}

/// Issue 25, item 19: a quorum of nobody can never be met, and an admin needs a name.
#[test]
fn bad_26_quorums_that_can_never_be_met_and_nameless_admins_are_refused() {
    assert_errors(
        &with_admins(
            "[[approval]]\ntag = \"big\"\nabove = \"1 btc\"\nquorum = { need = 1, of = [] }\n",
        ),
        &[(
            9,
            19,
            "`of` in the quorum of [[approval]] \"big\" lists no admins, so `need` = 1 can never be met",
        )],
    );
    assert_errors(
        &with_admins("[governance]\nquorum = { need = 1, of = [] }\n"),
        &[(
            7,
            19,
            "`of` in the quorum of [governance] lists no admins, so `need` = 1 can never be met",
        )],
    );
    assert_errors(
        &format!(
            "{ADMINS}\"\" = {{ pubkey = \"03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd\" }}\n"
        ),
        &[(6, 1, "admin name \"\" must be one or more letters")],
    );
}

#[test]
fn bad_27_fleet_members_that_are_not_a_name_and_a_node_once() {
    let node = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
    let src = with_admins(&format!(
        "[fleet.members]\nNode_A = \"{node}\"\nnode-b = \"not-a-node\"\nnode-c = \"{node}\"\nnode-d = \"{}\"\n",
        node.to_ascii_uppercase()
    ));
    assert_errors(
        &src,
        &[
            (
                7,
                1,
                "fleet member name \"Node_A\" must be 1 to 24 characters of a-z, 0-9 and '-'",
            ),
            (
                8,
                1,
                "\"not-a-node\" for fleet member \"node-b\" is not a node id",
            ),
            (
                10,
                1,
                &format!("node {node} is admitted twice, as \"node-c\" and as \"node-d\""),
            ),
        ],
    );
    let errors = parse_policy(&with_admins("[fleet]\n")).expect_err("no members");
    assert!(
        errors[0]
            .message
            .contains("[fleet] lists no members; write [fleet.members]"),
        "{errors:?}"
    );
    let p = parse_policy(&with_admins(&format!(
        "[fleet.members]\nnode-c = \"{}\"\n",
        node.to_ascii_uppercase()
    )))
    .unwrap();
    assert_eq!(
        p.fleet_member("node-c"),
        Some(node),
        "node ids are kept lowercase"
    );
    assert_eq!(p.fleet_member("node-a"), None);
}

/// Issue 30, item 2: a rule scoped to fleet members names each by its name or its node id, and
/// only members the policy admits; a fleet-wide window cannot be narrowed.
#[test]
fn bad_28_rule_members_that_the_fleet_does_not_admit() {
    let a = "02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91";
    let b = "03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd";
    let fleet = format!("[fleet.members]\nnode-a = \"{a}\"\nnode-b = \"{b}\"\n");
    let src = with_admins(&format!(
        "{fleet}[[limit]]\ntag = \"b-daily\"\nwindow = \"24h\"\nmax_amount = \"1 btc\"\nmembers = [\"node-z\", \"node-b\", \"{}\"]\n\
         [[limit]]\ntag = \"company\"\nscope = \"fleet\"\nwindow = \"24h\"\nmax_amount = \"2 btc\"\nmembers = [\"node-a\"]\n\
         [[deny]]\ntag = \"d\"\npayees = [\"{a}\"]\nmembers = []\n",
        b.to_ascii_uppercase()
    ));
    assert_errors(
        &src,
        &[
            (
                13,
                12,
                "`members` in [[limit]] \"b-daily\": \"node-z\" is neither the name nor the node id of a fleet member; its [fleet.members] lists node-a, node-b",
            ),
            (13, 32, "`members` in [[limit]] \"b-daily\" names member node-b twice"),
            (
                19,
                1,
                "[[limit]] \"company\" has scope = \"fleet\", which counts every member's payments together; `members` cannot narrow it",
            ),
            (
                23,
                11,
                "`members` in [[deny]] \"d\" is empty, so the rule would apply to no node",
            ),
        ],
    );
    assert_errors(
        &with_admins("[[deny]]\ntag = \"d\"\npayees = [\"02b17c7b516ae61e935910cdb721d7c55a8c9fc695f611362c54ef8db269a9bf91\"]\nmembers = [\"node-a\"]\n"),
        &[(
            9,
            12,
            "\"node-a\" is neither the name nor the node id of a fleet member; the policy admits no fleet members; list them in [fleet.members] first",
        )],
    );
    // By name or by node id (any case), kept as names; each member runs only its own rules,
    // and `policy explain` says which members a rule applies to.
    let p = parse_policy(&with_admins(&format!(
        "{fleet}[[limit]]\ntag = \"b-daily\"\nwindow = \"24h\"\nmax_amount = \"1 btc\"\nmembers = [\"{}\"]\n\
         [[approval]]\ntag = \"big\"\nabove = \"0.5 btc\"\nquorum = {{ need = 2, of = [\"alice\", \"bob\", \"carol\"] }}\nmembers = [\"node-a\", \"node-b\"]\n",
        b.to_ascii_uppercase()
    )))
    .unwrap();
    assert_eq!(
        p.limits[0].members,
        Members::Only(["node-b".to_string()].into())
    );
    assert!(p.scopes_members());
    assert!(p.for_member("node-a").limits.is_empty());
    assert_eq!(p.for_member("node-b").limits, p.limits);
    assert_eq!(p.for_member("node-a").approvals, p.approvals);
    assert_eq!(p.for_member("node-a").hash, p.hash);
    let text = warden::policy::explain::explain(&p);
    assert!(
        text.contains("counting all payments together (fleet member node-b only)."),
        "{text}"
    );
    assert!(
        text.contains("(fleet members node-a, node-b only)."),
        "{text}"
    );
}
