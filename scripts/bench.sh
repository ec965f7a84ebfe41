#!/usr/bin/env bash
# Runs Warden's benchmarks. Figures are published in BENCHMARKS.md with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo bench --locked --bench hsm -- "$@"
