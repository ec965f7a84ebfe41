#!/usr/bin/env python3
"""wardend's CPU samples (`perf script` text) by stage, and folded stacks for a flame graph.

Each sample belongs to exactly one stage: walking its stack from the leaf towards the root, the
first frame that names a stage decides (so VLS's handler calling Warden's persister counts as the
persister, and SHA-256 inside the audit record counts as the audit). Samples whose stack names no
stage are "other", listed by their leaf.

    profile_stages.py PERF_SCRIPT_TXT FOLDED_OUT
"""
import collections
import re
import sys

# (stage, pattern on a user-space frame's symbol). The walk from the leaf picks the innermost.
STAGES = [
    ("store: sled (apply, flush, its I/O threads)", r"^sled::"),
    ("store: Warden's commit path (batch, sync, file checks)", r"warden::store::"),
    ("audit record (JSON, SHA-256 chain)", r"warden::audit::"),
    ("metrics", r"prometheus_client::|warden::metrics::"),
    ("events and alerts", r"warden::events::|warden::alerts::"),
    ("Warden's persister (VLS state to the batch)", r"warden::signer::(node_persist|persist)::"),
    ("decision: policy evaluation", r"^warden_policy::"),
    ("decision: Warden's core and approvals", r"warden::core::|warden::approval::"),
    ("Warden's approver", r"warden::signer::approver::"),
    ("VLS handler and validation (secp256k1 included)", r"^vls_protocol_signer::|^lightning_signer::|^vls_protocol::|^vls_core::|^lightning::"),
    ("Warden's hsmd stream (framing, replies, sender)", r"warden::signer::(stream|replies|tagged|extension)::"),
    ("gRPC: tonic, h2, hyper, prost", r"^tonic::|^h2::|^hyper::|^hyper_util::|^prost::|^tower::"),
    ("tokio runtime (scheduling, wakeups)", r"^tokio::"),
]
SYSCALL = re.compile(r"__(?:x64|ia32)_sys_(\w+)|__do_sys_(\w+)")
KERNEL_OTHER = re.compile(r"^asm_|irq|softirq|finish_task_switch|schedule")
COMPILED = [(name, re.compile(p)) for name, p in STAGES]


def samples(path):
    """Yield each sample's frames, leaf first, as symbol names."""
    frames = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if frames:
                    yield frames
                frames = []
                continue
            if line[0] not in " \t":
                frames = []  # a sample's header line
                continue
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                continue
            sym = parts[1].rsplit(" (", 1)[0]
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            frames.append(sym)
    if frames:
        yield frames


def demangle_path(sym):
    # Rust v0/legacy symbols as perf prints them: strip generics and the hash suffix.
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    sym = sym.lstrip("<")
    return sym


def main():
    src, folded_out = sys.argv[1], sys.argv[2]
    user = collections.Counter()
    kernel = collections.Counter()
    syscalls = collections.defaultdict(collections.Counter)
    other_leaf = collections.Counter()
    folded = collections.Counter()
    total = 0
    for frames in samples(src):
        total += 1
        names = [demangle_path(s) for s in frames]
        sysname = None
        in_kernel = False
        for n in names:
            m = SYSCALL.search(n)
            if m:
                sysname = m.group(1) or m.group(2)
                in_kernel = True
                break
        if not in_kernel and names and KERNEL_OTHER.search(names[0]):
            in_kernel = True
            sysname = "interrupts and scheduling"
        stage = None
        for n in names:
            for name, rx in COMPILED:
                if rx.search(n):
                    stage = name
                    break
            if stage:
                break
        if stage is None:
            stage = "other"
            if not in_kernel:
                other_leaf[names[0] if names else "?"] += 1
        if in_kernel:
            kernel[stage] += 1
            syscalls[stage][sysname] += 1
        else:
            user[stage] += 1
        folded[";".join(reversed(names))] += 1
    with open(folded_out, "w") as f:
        for stack, n in folded.most_common():
            f.write(f"{stack} {n}\n")
    pct = lambda n: f"{100.0 * n / total:.1f} %"
    print(f"== wardend's CPU by stage ({total} samples; kernel = system calls made on the stage's behalf)")
    print("| stage | total | user | kernel | kernel's top system calls |")
    print("|---|---|---|---|---|")
    order = sorted(
        [name for name, _ in STAGES] + ["other"],
        key=lambda n: -(user[n] + kernel[n]),
    )
    for name in order:
        if user[name] + kernel[name] == 0:
            continue
        top = ", ".join(
            f"{sc} {pct(n)}" for sc, n in syscalls[name].most_common(3)
        )
        print(f"| {name} | {pct(user[name] + kernel[name])} | {pct(user[name])} | {pct(kernel[name])} | {top} |")
    print("== 'other' in user space, by leaf function (top 10)")
    for leaf, n in other_leaf.most_common(10):
        print(f"  {pct(n):>7}  {leaf}")


if __name__ == "__main__":
    main()
