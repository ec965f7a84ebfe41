#!/usr/bin/env bash
# Fuzz every target under fuzz/ for a bounded time (cargo-fuzz, libFuzzer, nightly toolchain).
#   scripts/fuzz.sh [seconds-per-target] [target ...]     (default 60 s, every target)
# The working corpus grows under fuzz/corpus/ (not committed), seeded from fuzz/seeds/. An input
# that crashes a target is copied to fuzz/regressions/TARGET/, which tests/fuzz_regressions.rs
# replays on stable in scripts/test.sh: commit it with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(policy_file admin_request hsmd_request sealed_seed audit_record)
fi
bash scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
FUZZ_VERSION=0.12.0
fuzz_root="$HOME/.cache/warden/cargo-fuzz-$FUZZ_VERSION"
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz $FUZZ_VERSION into $fuzz_root (once)"
  cargo install --locked --quiet cargo-fuzz --version "=$FUZZ_VERSION" --root "$fuzz_root"
fi
export PATH="$fuzz_root/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/regressions/$t"
  cp -n "fuzz/seeds/$t/"* "fuzz/corpus/$t/" 2>/dev/null || true
  echo "== fuzz $t for ${seconds}s"
  if cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" \
      -rss_limit_mb=2048 -max_len=65536 2>"fuzz/artifacts/$t.log"; then
    grep -E "^Done|#[0-9]+.*DONE" "fuzz/artifacts/$t.log" | tail -1 || true
  else
    status=1
    echo "fuzz: $t found a failing input:"
    grep -E "panicked|ERROR|SUMMARY" "fuzz/artifacts/$t.log" | head -5
    for f in "fuzz/artifacts/$t/"*; do
      [ -f "$f" ] && cp "$f" "fuzz/regressions/$t/" && echo "  saved $(basename "$f") to fuzz/regressions/$t/"
    done
  fi
done
exit "$status"
