#!/usr/bin/env bash
# Runs Warden's benchmarks (release build). Figures are published in BENCHMARKS.md with this
# command and the machine they ran on. Extra arguments go to criterion (hsm bench).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
echo "== machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "== benches/hsm.rs (criterion): ECDSA sign, SoftHSM2 vs in-process secp256k1"
cargo bench --locked --bench hsm -- "$@"
echo "== benches/policy.rs: policy decision latency"
cargo bench --locked --bench policy
