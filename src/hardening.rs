//! Keeping the process's memory, where the node seed and every key VLS derives from it live, out
//! of core dumps, out of other processes' reach, and out of swap.
//!
//! The seed is unsealed into a zeroizing buffer, but VLS derives and keeps its keys on its own
//! heap, so protecting one buffer would protect little: the protections are process-wide. At
//! start, before the seed is unsealed, wardend
//! - sets the core-dump size limit to zero (a crash writes no image of its memory),
//! - marks itself not dumpable (`PR_SET_DUMPABLE` 0: no core dump even if the limit is raised
//!   again, and `/proc/PID/mem` and ptrace are closed to other processes of the same user),
//! - locks all its memory, present and future, into RAM (`mlockall`), so no page of it is ever
//!   written to swap. Only when it may lock without limit (root's `CAP_IPC_LOCK`, or
//!   `LimitMEMLOCK=infinity` as `contrib/systemd/wardend.service` sets): under a finite limit a
//!   growing process would fail its allocations, so it warns instead.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What was put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Core dumps are off (limit zero and not dumpable).
    pub no_core_dumps: bool,
    /// All memory is locked into RAM; otherwise why not.
    pub memory_locked: Result<(), String>,
}

/// Apply the protections to this process (see the module documentation).
pub fn protect_process() -> Hardening {
    let limit = setrlimit(Resource::RLIMIT_CORE, 0, 0).is_ok();
    let dumpable = nix::sys::prctl::set_dumpable(false).is_ok();
    let unlimited = nix::unistd::Uid::effective().is_root()
        || getrlimit(Resource::RLIMIT_MEMLOCK).is_ok_and(|(soft, _)| soft == RLIM_INFINITY);
    let memory_locked = if unlimited {
        use nix::sys::mman::{mlockall, MlockAllFlags};
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
            .map_err(|e| format!("mlockall failed: {e}"))
    } else {
        Err("the memory-lock limit is finite (set LimitMEMLOCK=infinity in the unit, as contrib/systemd/wardend.service does)".into())
    };
    Hardening {
        no_core_dumps: limit && dumpable,
        memory_locked,
    }
}
