#!/usr/bin/env bash
# The crash harness for long runs: N SIGKILLs of a real wardend behind the real proxy, at random
# moments, each followed by a restart and the harness's checks (tests/crash.rs).
#   scripts/crash.sh [N]            N kills (default 100)
#   WARDEN_CRASH_SEED=S scripts/crash.sh N   replay the run a seed printed
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-100}"
bash scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
WARDEN_CRASH_KILLS="$kills" cargo test --test crash -- --nocapture 2>&1 \
  | grep -E "crash harness|^test |panicked|assert|left|right|test result"
