#!/usr/bin/env bash
# The README's demo: installs what is missing, builds, creates a SoftHSM token under
# ./demo-data, initializes Warden's keys and sealed seed, and starts wardend on it.
# Re-running starts from a fresh ./demo-data.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installing what is missing"
bash scripts/setup.sh

step "Building wardend and wardenctl"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --locked --bins
bin="$root/target/debug"

demo="$root/demo-data"
step "Creating a SoftHSM token under $demo"
rm -rf "$demo"
mkdir -p "$demo/tokens"
chmod 700 "$demo"
cat > "$demo/softhsm2.conf" <<CONF
directories.tokendir = $demo/tokens
objectstore.backend = file
log.level = ERROR
CONF
export SOFTHSM2_CONF="$demo/softhsm2.conf"
# A random PIN in a 0600 file: the PIN is never a flag and never printed.
umask 077
od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$demo/pin"
so_pin=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
softhsm2-util --init-token --free --label warden-demo --so-pin "$so_pin" --pin "$(cat "$demo/pin")" >/dev/null
unset so_pin
echo "token \"warden-demo\" created; user PIN in $demo/pin (mode 600)"

cat > "$demo/wardend.toml" <<CONF
data_dir = "$demo/data"
network = "regtest"

[hsm]
token_label = "warden-demo"
pin_file = "$demo/pin"
CONF
echo "configuration: $demo/wardend.toml"
cat "$demo/wardend.toml"

step "wardenctl init: HSM keys and the sealed node seed"
"$bin/wardenctl" init --config "$demo/wardend.toml"

step "The sealed seed on disk (AES-256-GCM under a non-extractable HSM key)"
ls -l "$demo/data/node-seed.sealed"
od -An -tx1 "$demo/data/node-seed.sealed"

step "wardenctl hsm status"
"$bin/wardenctl" hsm status --config "$demo/wardend.toml"

step "Starting wardend on the sealed seed"
log="$demo/wardend.log"
"$bin/wardend" --config "$demo/wardend.toml" >"$demo/wardend.out" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "wardend ready" "$demo/wardend.out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "wardend exited:"; cat "$log"; exit 1; }
  sleep 0.1
done
cat "$demo/wardend.out"
echo "(logs in $log)"
grep -q "wardend ready" "$demo/wardend.out"

step "Stopping wardend"
kill $pid
wait $pid || true
trap - EXIT
echo "done. Everything the demo made is in $demo."
