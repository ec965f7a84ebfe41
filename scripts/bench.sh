#!/usr/bin/env bash
# Runs Warden's benchmarks (release build). Figures are published in BENCHMARKS.md with this
# command and the machine they ran on. Extra arguments go to criterion (hsm bench).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

# The comparison signer: VLS's own vlsd, same version as the proxy and the crates, cached like
# remote_hsmd_socket. Only the benchmarks need it.
VLS_VERSION="1.0.0-rc.1"
cache="${WARDEN_CACHE:-$HOME/.cache/warden}/vls-$VLS_VERSION"
if [ ! -x "$cache/bin/vlsd" ]; then
  echo "bench: building vlsd $VLS_VERSION into $cache (once)"
  CARGO_TARGET_DIR="$cache/target-vlsd" cargo install --locked --quiet vlsd --version "=$VLS_VERSION" \
    --bin vlsd --root "$cache" -j "$CARGO_BUILD_JOBS"
  rm -rf "$cache/target-vlsd"
fi
echo "== machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "== benches/hsm.rs (criterion): ECDSA sign, SoftHSM2 vs in-process secp256k1"
cargo bench --locked --bench hsm -- "$@"
echo "== benches/policy.rs: policy decision latency"
cargo bench --locked --bench policy
echo "== benches/signer.rs: the full CLN path, Warden vs vlsd"
cargo bench --locked --bench signer
echo "== benches/ldk.rs: LDK payment round trip, Warden vs LDK's KeysManager; channel messages vs a bare VLS handler"
cargo bench --locked --bench ldk
echo "== benches/load.rs: load shaped like real traffic, one wardend, an LDK node with 16 channels"
cargo bench --locked --bench load
echo "== benches/ha.rs: the log, sled and PostgreSQL through the CLN path, and failover over 10 kills"
cargo bench --locked --bench ha
echo "== benches/fleet.rs: three fleet members on one PostgreSQL paying at once, against one wardend"
cargo bench --locked --bench fleet
echo "== benches/retention.rs: a simulated month at 10,000 payments a day, state and start-up"
cargo bench --locked --bench retention
