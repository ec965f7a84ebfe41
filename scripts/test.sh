#!/usr/bin/env bash
# The README's test command: setup, formatting, lints, then the whole test suite against real
# SoftHSM tokens (made per test in temp dirs), the real state log and sled, and real gRPC over TLS.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Two cores: keep parallel jobs to what the machine has.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The test matrix: the end-to-end CLN suite again, with wardend's state on PostgreSQL (a
# throwaway server the harness starts) instead of the local log. Same binary, same tests.
echo "== cargo test --test e2e_cln (state on PostgreSQL)"
WARDEN_TEST_STORE=postgres cargo test --locked --test e2e_cln 2>&1 | tee -a "$log"
status=$(( status | PIPESTATUS[0] ))
# The same end-to-end suite, the durability trace and the crash harness with wardend's state in
# sled (store.backend = "sled"; the rest of the suite runs on the default, Warden's log).
echo "== cargo test --test e2e_cln --test durability --test crash (state in sled)"
WARDEN_TEST_STORE=sled cargo test --locked --test e2e_cln --test durability --test crash 2>&1 | tee -a "$log"
status=$(( status | PIPESTATUS[0] ))
# The Debian package, from the binaries the suite built: contents, lintian, install, run,
# remove (scripts/package.sh --check). It installs system-wide, so it needs root.
echo "== Debian package (scripts/package.sh --debug --check)"
pkg_cmd=(bash scripts/package.sh --debug --check)
[ "$(id -u)" -eq 0 ] || pkg_cmd=(sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME "${pkg_cmd[@]}")
if "${pkg_cmd[@]}" 2>&1 | tee -a "$log"; then
  echo "test result: ok. 1 passed; 0 failed (Debian package)" | tee -a "$log"
else
  echo "test result: FAILED. 0 passed; 1 failed (Debian package)" | tee -a "$log"
  status=1
fi
# The crates users link must package and verify exactly as crates.io would take them (nothing is
# uploaded): warden-ldk is verified against the warden-client just packaged, not the workspace.
echo "== cargo publish --dry-run (warden-policy, warden-client, warden-ldk)"
if cargo publish --locked --dry-run -p warden-policy -p warden-client -p warden-ldk 2>&1 | tee -a "$log" | { grep -v '^ *Compiling' || true; }; then
  echo "test result: ok. 1 passed; 0 failed (publish dry-run)" | tee -a "$log"
else
  echo "test result: FAILED. 0 passed; 1 failed (publish dry-run)" | tee -a "$log"
  status=1
fi
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
