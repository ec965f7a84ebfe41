#!/usr/bin/env bash
# The README's test command: setup, formatting, lints, then the whole test suite against real
# SoftHSM tokens (made per test in temp dirs), real sled and real gRPC over TLS.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Two cores: keep parallel jobs to what the machine has.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
cargo test --locked --doc
