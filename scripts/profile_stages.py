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

# (stage, pattern on a frame's symbol). Order matters only between patterns that can match the
# same frame; the walk from the leaf picks the innermost stage.
STAGES = [
    ("sync: fsync / fdatasync / sync_file_range (CPU part)", r"sys_fsync|sys_fdatasync|sys_sync_file_range|do_fsync|vfs_fsync"),
    ("store: sled apply and flush", r"^sled::"),
    ("store: Warden's commit path", r"warden::store::"),
    ("audit record (JSON, SHA-256 chain)", r"warden::audit::"),
    ("metrics", r"prometheus_client::|warden::metrics::"),
    ("events and alerts", r"warden::events::|warden::alerts::"),
    ("Warden's persister (VLS state to the batch)", r"warden::signer::(node_persist|persist)::"),
    ("decision: policy evaluation", r"^warden_policy::"),
    ("decision: Warden's core", r"warden::core::|warden::approval::"),
    ("Warden's approver", r"warden::signer::approver::"),
    ("VLS handler and validation", r"^vls_protocol_signer::|^lightning_signer::|^vls_protocol::|^vls_core::"),
    ("Warden's hsmd stream (framing, replies)", r"warden::signer::(stream|replies|tagged|extension)::"),
    ("gRPC: tonic, h2, hyper, prost", r"^tonic::|^h2::|^hyper::|^hyper_util::|^prost::|^tower::"),
    ("tokio runtime", r"^tokio::"),
    ("kernel: network and scheduling", r"tcp_|sock_|__sys_sendmsg|__sys_recvmsg|sys_sendto|sys_recvfrom|ep_poll|schedule|futex"),
]
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
    by_stage = collections.Counter()
    other_leaf = collections.Counter()
    folded = collections.Counter()
    total = 0
    for frames in samples(src):
        total += 1
        names = [demangle_path(s) for s in frames]
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
            other_leaf[names[0] if names else "?"] += 1
        by_stage[stage] += 1
        folded[";".join(reversed(names))] += 1
    with open(folded_out, "w") as f:
        for stack, n in folded.most_common():
            f.write(f"{stack} {n}\n")
    print(f"== wardend's CPU by stage ({total} samples)")
    print("| stage | share of wardend's CPU |")
    print("|---|---|")
    for name, _ in STAGES + [("other", None)]:
        if by_stage[name]:
            print(f"| {name} | {100.0 * by_stage[name] / total:.1f} % |")
    print("== 'other' by leaf function (top 10)")
    for leaf, n in other_leaf.most_common(10):
        print(f"  {100.0 * n / total:5.1f} %  {leaf}")


if __name__ == "__main__":
    main()
