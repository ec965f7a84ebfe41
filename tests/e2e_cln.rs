//! End to end against real VLS code: CLN's hsmd wire protocol through VLS's own
//! remote_hsmd_socket (hsmd socket on fd 3) to a real wardend on a per-test SoftHSM token.

mod common;

use common::cln::{Cln, Payee};

const RULES: &str = r#"
[[allowlist]]
tag = "trusted-suppliers"
payees = ["PAYEE_LISTED"]

[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "2_000_000 sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "2_000_000 sat"

[[approval]]
tag = "large-payment-quorum"
above = "1_000_000 sat"
quorum = { need = 2, of = ["alice", "bob", "carol"] }
expiry = "1h"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsmd_init_returns_the_node_id_of_the_hsm_sealed_seed() {
    let listed = Payee::new(0x22);
    let mut cln = Cln::start("e2e-init", &RULES.replace("PAYEE_LISTED", &listed.hex())).await;
    let node_id = tokio::task::block_in_place(|| cln.init());
    assert_eq!(node_id, cln.node_id_from_init);
    let payee = Payee::new(0x11);
    let small = payee.invoice(10_000_000, 1);
    assert!(
        tokio::task::block_in_place(|| cln.preapprove(&small)),
        "a small payment is approved"
    );
    assert!(cln.proxy.is_running());
}
