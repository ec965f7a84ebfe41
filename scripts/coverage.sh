#!/usr/bin/env bash
# What the simulator alone runs of Warden's code: builds the simulator with LLVM's coverage
# instrumentation on Warden's own crates only (a rustc wrapper adds -C instrument-coverage for
# them; dependencies build as usual), runs SEEDS seeds, and prints line and region coverage per
# file of core/, approval/, governance/, recovery/, store/ and the policy crate. Region coverage
# is the nearest stable Rust gets to branch coverage (-Z coverage-options=branch needs nightly).
#   scripts/coverage.sh [SEEDS]    (default 300, the suite's short run)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-300}"
bash scripts/setup.sh
rustup component list --installed 2>/dev/null | grep -q '^llvm-tools' || rustup component add llvm-tools
tools=$(dirname "$(find "$(rustc --print sysroot)" -name llvm-profdata -type f | head -1)")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/wrap" <<'WRAP'
#!/usr/bin/env bash
case " $* " in
  *" --crate-name warden "*|*" --crate-name warden_policy "*|*" --crate-name warden_client "*|*" --crate-name simulate "*)
    exec "$@" -C instrument-coverage ;;
esac
exec "$@"
WRAP
chmod +x "$work/wrap"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TARGET_DIR="${HOME}/.cache/warden/target-coverage"
RUSTC_WRAPPER="$work/wrap" LLVM_PROFILE_FILE="$work/sim-%p-%m.profraw" WARDEN_SIM_SEEDS="$seeds" \
  cargo test --locked --test simulate -- --nocapture 2>&1 | grep -E "simulator:|seed [0-9]+:|test result"
"$tools/llvm-profdata" merge -sparse "$work"/*.profraw -o "$work/merged.profdata"
bin=$(ls -t "$CARGO_TARGET_DIR"/debug/deps/simulate-* | grep -v '\.d$' | head -1)
"$tools/llvm-cov" report "$bin" --instr-profile "$work/merged.profdata" \
  --ignore-filename-regex '(\.cargo|rustc|/tests/)' 2>/dev/null \
  | grep -E "src/(core|approval|governance|recovery|store)/|warden-policy/src/" \
  | awk '{ f = $1; sub(".*/(src|crates)/", "", f); printf "%-32s lines %7s  regions %7s\n", f, $10, $4 }'
