//! wardend keeps the memory that holds the seed and VLS's keys out of swap and core dumps.

mod common;

use common::daemon::{Daemon, QUORUM_RULES};

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
        .to_string()
}

#[test]
fn a_running_wardend_has_its_memory_locked_and_writes_no_core_dump() {
    let mut d = Daemon::prepare("harden", QUORUM_RULES, common::daemon::free_port());
    d.start_wardend();
    let pid = d.wardend.as_ref().unwrap().id();
    let core = proc_field(pid, "limits", "Max core file size");
    assert!(
        core.split_whitespace().filter(|w| *w == "0").count() == 2,
        "soft and hard core limits are 0: {core}"
    );
    // VmLck: the locked memory, in kB; all of it is locked, the seed's pages with the rest.
    let locked: u64 = proc_field(pid, "status", "VmLck:")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let resident: u64 = proc_field(pid, "status", "VmRSS:")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        locked > 0 && locked >= resident / 2,
        "locked {locked} kB of {resident} kB resident"
    );
}
