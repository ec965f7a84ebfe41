#!/usr/bin/env bash
# The seeded simulator for long runs (tests/simulate.rs): the whole signer in one process, one
# seed per run, random interleavings of payments, retransmissions, on-chain spends, approvals,
# freezes, clock jumps, crashes and failed commits, checked against a reference model after
# every step. A failing seed prints the line that replays it.
#   scripts/simulate.sh [SEEDS] [FIRST]   SEEDS seeds from FIRST (defaults 5000 and 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-5000}"
first="${2:-1000}"
bash scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
WARDEN_SIM_SEEDS="$seeds" WARDEN_SIM_FIRST="$first" \
  cargo test --locked --test simulate -- --nocapture 2>&1 \
  | grep -E "simulator:|seed [0-9]+:|replay:|^test |panicked|test result"
