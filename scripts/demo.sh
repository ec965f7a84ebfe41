#!/usr/bin/env bash
# The README's demo. Installs what is missing, builds, creates a SoftHSM token under
# ./demo-data, initializes Warden's HSM keys and sealed seed, makes an admin PKI and three admin
# keys, and starts wardend with the default policy (its admin keys replaced by the demo's).
# Then a Core Lightning stand-in (VLS's real remote_hsmd_socket, driven over CLN's hsmd wire
# protocol) asks wardend to approve payments:
#   - a small payment is signed;
#   - a large one is held until two admins approve it with wardenctl;
#   - one over the per-payment limit is refused, with the rule that refused it.
# Re-running starts from a fresh ./demo-data.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Installing what is missing"
bash scripts/setup.sh

step "Building wardend, wardenctl and the CLN stand-in"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --locked --workspace --bins
bin="$root/target/debug"
export PATH="$bin:$PATH"

demo="$root/demo-data"
step "Creating a SoftHSM token under $demo"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
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

step "Admin PKI (mutual TLS), three admin approval keys, and the CLN plugin's node certificate"
run wardenctl tls init "$demo/pki" --admins alice,bob,carol,cln-node
policy_src=$(cat policy/default.toml)
for admin in alice bob carol; do
  out=$(wardenctl admin keygen --name "$admin" --out "$demo/$admin.adminkey")
  echo "$out"
  pub=$(echo "$out" | sed -n 's/.*pubkey = "\([0-9a-f]*\)".*/\1/p')
  policy_src=$(echo "$policy_src" | sed "s/^$admin = { pubkey = \"[0-9a-f]*\" }/$admin = { pubkey = \"$pub\" }/")
done
# Loosening the policy waits 24 h by default, and recovery 72 h; seconds here, so the demo can
# show them.
out=$(wardenctl admin keygen --name recovery --out "$demo/recovery.key")
recovery_pub=$(echo "$out" | sed -n 's/.*pubkey = "\([0-9a-f]*\)".*/\1/p')
echo "recovery key (held offline): $demo/recovery.key"
policy_src="$policy_src
[governance]
loosen_delay = \"5s\"

[recovery]
key = { pubkey = \"$recovery_pub\" }
delay = \"5s\""
echo "$policy_src" > "$demo/policy.toml"
run wardenctl policy check "$demo/policy.toml" --network regtest
run wardenctl policy explain "$demo/policy.toml" --network regtest

hsmd_port=17701
admin_port=17443
cat > "$demo/wardend.toml" <<CONF
data_dir = "$demo/data"
network = "regtest"

[hsm]
token_label = "warden-demo"
pin_file = "$demo/pin"

[node]
hsmd_address = "127.0.0.1:$hsmd_port"

[admin]
listen = "127.0.0.1:$admin_port"
tls_cert = "$demo/pki/server.pem"
tls_key = "$demo/pki/server.key"
client_ca = "$demo/pki/ca.pem"
nodes = ["cln-node"]                 # the CLN plugin's certificate: checks and status only

[policy]
file = "$demo/policy.toml"
CONF
echo "configuration: $demo/wardend.toml"

step "wardenctl init: HSM keys and the sealed node seed"
run wardenctl init --config "$demo/wardend.toml"

step "The sealed seed on disk (AES-256-GCM under a non-extractable HSM key)"
ls -l "$demo/data/node-seed.sealed"
od -An -tx1 "$demo/data/node-seed.sealed"
run wardenctl hsm status --config "$demo/wardend.toml"

step "Starting the Core Lightning stand-in (VLS remote_hsmd_socket on fd 3) and wardend"
# The stand-in loads warden-cln-plugin as lightningd does (important-plugin= in its config).
coproc CLN { exec warden-cln --port "$hsmd_port" --datadir "$demo/cln" \
  --plugin "$bin/warden-cln-plugin" --admin-port "$admin_port" --pki "$demo/pki" 2>"$demo/cln.log"; }
pids+=("$CLN_PID")
read -r line <&"${CLN[0]}"; echo "cln: $line"
wardend --config "$demo/wardend.toml" >"$demo/wardend.out" 2>"$demo/wardend.log" &
wardend_pid=$!
pids+=("$wardend_pid")
for _ in $(seq 1 100); do grep -q "admin API on" "$demo/wardend.out" 2>/dev/null && break; sleep 0.1; done
cat "$demo/wardend.out"

admin() {
  local who=$1; shift
  printf '\033[2m$ wardenctl %s   (as %s)\033[0m\n' "$*" "$who"
  WARDENCTL_SERVER="https://localhost:$admin_port" WARDENCTL_CA="$demo/pki/ca.pem" \
  WARDENCTL_CERT="$demo/pki/$who.pem" WARDENCTL_CERT_KEY="$demo/pki/$who.key" WARDENCTL_ADMIN="$who" \
    wardenctl "$@"
}
cln() { echo "$*" >&"${CLN[1]}"; read -r reply <&"${CLN[0]}"; printf 'cln> %-28s -> %s\n' "$*" "$reply"; }

WARDENCTL_SERVER="https://localhost:$admin_port" WARDENCTL_CA="$demo/pki/ca.pem" \
WARDENCTL_CERT="$demo/pki/carol.pem" WARDENCTL_CERT_KEY="$demo/pki/carol.key" \
  wardenctl watch >"$demo/events.log" 2>&1 &
pids+=("$!")
# Give the watcher time to connect, so it sees every event below.
sleep 1

step "CLN initializes its hsmd: the node id comes from the HSM-sealed seed"
cln init

step "A small payment (25,000 sat): signed"
cln pay 25000 1

step "A large payment (1,500,000 sat): held for 2 of 3 admins"
cln pay 1500000 2
admin alice pending
id=$(admin alice pending --json 2>/dev/null | sed -n 's/.*"id": "\(rq-[0-9a-f]*\)".*/\1/p' | head -1)
admin alice show "$id"
admin alice approve "$id" --key "$demo/alice.adminkey"
admin bob approve "$id" --key "$demo/bob.adminkey"
echo "CLN retries the same payment:"
cln pay 1500000 2

step "Another large payment (1,800,000 sat): one admin rejects it, and a rejection is a veto"
cln pay 1800000 4
id=$(admin alice pending --json 2>/dev/null | sed -n 's/.*"id": "\(rq-[0-9a-f]*\)".*/\1/p' | head -1)
admin carol reject "$id" --key "$demo/carol.adminkey" --reason "unknown counterparty"
echo "CLN retries: still refused, and no new request is put to the other admins:"
cln pay 1800000 4
admin alice pending

step "A payment over the per-payment limit (2,500,000 sat): refused, with its rule"
cln pay 2500000 3
sleep 0.5

step "On-chain: the Core Lightning plugin asks wardend before lightningd builds a withdraw"
echo "(hsmd has no 'refused' answer: a refusal at signing time would stop CLN, so the plugin asks first)"
cln withdraw 300000 1
cln withdraw 2500000 2
cln withdraw 1200000 3
id=$(admin alice pending --json 2>/dev/null | sed -n 's/.*"id": "\(rq-[0-9a-f]*\)".*/\1/p' | head -1)
admin alice approve "$id" --key "$demo/alice.adminkey"
admin bob approve "$id" --key "$demo/bob.adminkey"
echo "The operator runs the same withdraw again:"
cln withdraw 1200000 3
echo "A withdraw naming a feerate above the policy's [onchain] max_feerate (default 100 sat/vB):"
cln withdraw 10000 4 2000000perkw

step "Payments through the plugin: the operator at the node reads the rule, not 'invoice was declined'"
cln pay-command 2500000 11
cln pay-command 50000 12

step "Channels: the policy's [channels] limits, checked before lightningd opens or accepts one"
cln setup-channel 4000000 7
cln fundchannel 12000000 8
cln incoming 7000000 7
cln incoming 2000000 9
admin alice channels

step "The HSM token goes away under wardend: payments stop at once, and resume by themselves when it is back"
mv "$demo/tokens" "$demo/tokens-away"
sleep 1
cln pay 30000 5
grep -m1 -o "the HSM cannot sign audit checkpoints ([^;)]*" "$demo/wardend.log" | head -1 || true
mv "$demo/tokens-away" "$demo/tokens"
echo "token back; wardend logs in again by itself (backoff from 250 ms):"
for n in $(seq 6 40); do
  echo "pay 30000 $n" >&"${CLN[1]}"; read -r reply <&"${CLN[0]}"
  if [ "$reply" = "approved" ]; then printf 'cln> %-28s -> %s\n' "pay 30000 $n" "$reply"; break; fi
  sleep 0.5
done

step "Changing the policy: tightening is instant, loosening waits (5 s here) and any admin can veto"
echo "The file on disk is only a proposal; the policy in force is in wardend's database:"
admin alice policy history
sed 's/^max_amount = "2_000_000 sat"/max_amount = "1_500_000 sat"/' "$demo/policy.toml" > "$demo/policy-tighter.toml"
id=$(admin alice policy propose "$demo/policy-tighter.toml" | tee /dev/stderr | grep -o 'pc-[0-9a-f]*' | head -1)
admin alice approve "$id" --key "$demo/alice.adminkey"
admin bob approve "$id" --key "$demo/bob.adminkey"
echo "In force with the second signature; a 1,800,000 sat payment is now over the per-payment cap:"
cln pay 1800000 41
sed 's/^max_amount = "1_500_000 sat"/max_amount = "2_500_000 sat"/' "$demo/policy-tighter.toml" > "$demo/policy-looser.toml"
id=$(admin alice policy propose "$demo/policy-looser.toml" | tee /dev/stderr | grep -o 'pc-[0-9a-f]*' | head -1)
admin bob policy diff "$id"
admin alice approve "$id" --key "$demo/alice.adminkey"
admin carol approve "$id" --key "$demo/carol.adminkey"
echo "Approved, but a loosening waits its delay:"
admin alice status | grep -E "^policy"
sleep 6
echo "Delay over:"
admin alice status | grep -E "^policy"
sed 's/^max_amount = "2_500_000 sat"/max_amount = "3_000_000 sat"/' "$demo/policy-looser.toml" > "$demo/policy-loosest.toml"
id=$(admin alice policy propose "$demo/policy-loosest.toml" | grep -o 'pc-[0-9a-f]*' | head -1)
admin alice approve "$id" --key "$demo/alice.adminkey"
admin bob approve "$id" --key "$demo/bob.adminkey"
echo "carol vetoes it during its delay:"
admin carol reject "$id" --key "$demo/carol.adminkey" --reason "no reason to raise it further"
sleep 6
admin alice policy history

step "Freeze: one admin stops every payment at once; lifting it needs two"
admin carol freeze --reason "demo: suspicious activity"
cln pay 25000 42
admin alice status | grep -E "^FROZEN"
id=$(admin alice unfreeze | tee /dev/stderr | grep -o 'uf-[0-9a-f]*' | head -1)
admin alice approve "$id" --key "$demo/alice.adminkey"
echo "One approval is not enough:"
cln pay 25000 43
admin bob approve "$id" --key "$demo/bob.adminkey"
cln pay 25000 44

step "Break glass: the offline recovery key lifts a freeze the admins cannot, after its delay"
admin carol freeze --reason "demo: the admins' keys are lost"
admin alice recovery start unfreeze --key "$demo/recovery.key"
id=$(admin alice status | grep -o 'rc-[0-9a-f]*' | head -1)
admin alice status | grep -E "^(FROZEN|recovery)" || true
echo "Not before its delay:"
admin alice recovery execute "$id" || true
sleep 11
admin alice recovery execute "$id"
cln pay 25000 45

step "What the admins saw (wardenctl watch)"
cat "$demo/events.log"

step "wardenctl status"
admin carol status

step "Prometheus metrics (excerpt): every request above was one durable commit (data and fsync)"
metrics=$(sed -n 's/^metrics on //p' "$demo/wardend.out")
curl -s "$metrics" 2>/dev/null | grep -E '^warden_(decisions_total|pending_approvals|velocity_used_ratio|audit_chain_length|state_commits|store_step_(seconds|count))' \
  || echo "(see $metrics)"

step "Stopping wardend (it closes the audit log with an HSM-signed checkpoint); the node keeps running"
kill "$wardend_pid"; wait "$wardend_pid" 2>/dev/null || true

step "wardenctl audit verify: the hash chain, every HSM-signed checkpoint, and the anchor on the token"
run wardenctl audit verify --config "$demo/wardend.toml"

step "wardenctl report: this month, from the verified audit log"
run wardenctl report --config "$demo/wardend.toml" --month "$(date -u +%Y-%m)"
wardenctl report --config "$demo/wardend.toml" --month "$(date -u +%Y-%m)" --format html --out "$demo/report.html"
echo "(an HTML version with charts: $demo/report.html)"

step "High availability: the node's state moved to PostgreSQL, with a standby wardend"
# A throwaway PostgreSQL server for the demo (Debian's postgresql package; no system service).
# PostgreSQL will not run as root, so as root its files belong to the postgres user.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir=$(mktemp -d /tmp/warden-demo-pg.XXXXXX)
as_pg=()
( umask 077; od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$pgdir/password" )
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); chown -R postgres "$pgdir"; fi
pg_port=17432
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U warden --pwfile="$pgdir/password" \
  --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pgdir -c synchronous_commit=on" start >/dev/null
pg_stop() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
trap 'cleanup; pg_stop' EXIT
PGPASSWORD=$(cat "$pgdir/password") psql -qX -h 127.0.0.1 -p "$pg_port" -U warden -d postgres -c "CREATE DATABASE warden"
echo "PostgreSQL on 127.0.0.1:$pg_port (password in $pgdir/password, never on a command line)"
export WARDEN_STORE_URL="host=127.0.0.1 port=$pg_port user=warden dbname=warden"
export WARDEN_STORE_PASSWORD_FILE="$pgdir/password"
echo "wardend is stopped, so its state log can be copied and verified:"
run wardenctl migrate --from log --to postgres --config "$demo/wardend.toml"

# Short leases so the demo's failover is quick (the default is 6 s, renewed every 2 s).
export WARDEN_STORE_BACKEND=postgres WARDEN_STORE_LEASE_SECS=3 WARDEN_STORE_RENEW_SECS=1
WARDEN_STORE_HOLDER=signer-a wardend --config "$demo/wardend.toml" >"$demo/wardend-a.out" 2>"$demo/wardend-a.log" &
a_pid=$!; pids+=("$a_pid")
for _ in $(seq 1 100); do grep -q "admin API on" "$demo/wardend-a.out" 2>/dev/null && break; sleep 0.1; done
echo "signer-a: $(head -1 "$demo/wardend-a.out")"
# signer-b: a second member of the HSM cluster (here a copy of the token) and the same sealed
# seed, on the same database and node, with an admin port of its own.
cp -r "$demo/tokens" "$demo/tokens-b"
sed "s|$demo/tokens|$demo/tokens-b|" "$demo/softhsm2.conf" > "$demo/softhsm2-b.conf"
mkdir -p "$demo/data-b"; cp "$demo/data/node-seed.sealed" "$demo/data-b/"
SOFTHSM2_CONF="$demo/softhsm2-b.conf" WARDEN_DATA_DIR="$demo/data-b" WARDEN_STORE_HOLDER=signer-b \
  WARDEN_ADMIN_LISTEN="127.0.0.1:17444" WARDEN_METRICS_LISTEN="127.0.0.1:0" \
  wardend --config "$demo/wardend.toml" >"$demo/wardend-b.out" 2>"$demo/wardend-b.log" &
b_pid=$!; pids+=("$b_pid")
for _ in $(seq 1 100); do grep -q "wardend standby" "$demo/wardend-b.out" 2>/dev/null && break; sleep 0.1; done
echo "signer-b: $(head -1 "$demo/wardend-b.out")"
cln pay 30000 20
admin carol status | grep -E "^(node|role) "

step "signer-a dies (SIGKILL): signer-b takes the lease when it expires and serves the node"
kill -9 "$a_pid"; wait "$a_pid" 2>/dev/null || true
started=$(date +%s%N)
cln pay 30000 21
echo "(answered $(( ($(date +%s%N) - started) / 1000000 )) ms after the kill, by signer-b)"
admin_port=17444
admin carol status | grep -E "^(node|role) "
admin carol pending
b_metrics=$(sed -n 's/^metrics on //p' "$demo/wardend-b.out")
curl -s "$b_metrics" | grep -E '^warden_ha_' || true
kill "$b_pid"; wait "$b_pid" 2>/dev/null || true
echo "The audit chain on PostgreSQL, written by both signers, verifies:"
run wardenctl audit verify --config "$demo/wardend.toml"
unset WARDEN_STORE_BACKEND WARDEN_STORE_URL WARDEN_STORE_PASSWORD_FILE WARDEN_STORE_LEASE_SECS WARDEN_STORE_RENEW_SECS
echo quit >&"${CLN[1]}" || true

step "Several nodes, one treasury: three nodes under one company-wide daily cap"
# Three nodes, each with its own token, its own seed and its own wardend, sharing one
# PostgreSQL database as the fleet "acme".
PGPASSWORD=$(cat "$pgdir/password") psql -qX -h 127.0.0.1 -p "$pg_port" -U warden -d postgres -c "CREATE DATABASE treasury"
fleet_policy="$(cat "$demo/policy.toml")

[[limit]]
tag = \"company-daily\"
scope = \"fleet\"
window = \"24h\"
max_amount = \"1_000_000 sat\"

[fleet.members]"
# wardenctl init reads the configuration, which names the policy file: the members' node ids
# are added once each init has printed its own.
cp "$demo/policy.toml" "$demo/fleet-policy.toml"
declare -A member_port member_admin
n=0
for m in node-a node-b node-c; do
  n=$((n + 1))
  member_port[$m]=$((17800 + n)); member_admin[$m]=$((17810 + n))
  softhsm2-util --init-token --free --label "warden-$m" --so-pin "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" \
    --pin "$(cat "$demo/pin")" >/dev/null
  cat > "$demo/$m.toml" <<CONF
data_dir = "$demo/$m"
network = "regtest"

[hsm]
token_label = "warden-$m"
pin_file = "$demo/pin"

[node]
hsmd_address = "127.0.0.1:${member_port[$m]}"

[admin]
listen = "127.0.0.1:${member_admin[$m]}"
tls_cert = "$demo/pki/server.pem"
tls_key = "$demo/pki/server.key"
client_ca = "$demo/pki/ca.pem"

[metrics]
listen = "127.0.0.1:0"

[policy]
file = "$demo/fleet-policy.toml"

[store]
backend = "postgres"
url = "host=127.0.0.1 port=$pg_port user=warden dbname=treasury"
password_file = "$pgdir/password"

[fleet]
name = "acme"
member = "$m"
CONF
  node_id=$(wardenctl init --config "$demo/$m.toml" | sed -n 's/^  node id: *\([0-9a-f]*\) .*/\1/p')
  echo "$m: its own token and seed, node $node_id"
  fleet_policy="$fleet_policy
$m = \"$node_id\""
done
echo "$fleet_policy" > "$demo/fleet-policy.toml"
run wardenctl policy explain "$demo/fleet-policy.toml" --network regtest
for m in node-a node-b node-c; do
  mkfifo "$demo/$m.in" "$demo/$m.out"
  warden-cln --port "${member_port[$m]}" --datadir "$demo/cln-$m" <"$demo/$m.in" >"$demo/$m.out" 2>"$demo/cln-$m.log" &
  pids+=("$!")
done
exec {a_in}>"$demo/node-a.in" {a_out}<"$demo/node-a.out" \
     {b_in}>"$demo/node-b.in" {b_out}<"$demo/node-b.out" \
     {c_in}>"$demo/node-c.in" {c_out}<"$demo/node-c.out"
declare -A cln_in=([node-a]=$a_in [node-b]=$b_in [node-c]=$c_in) cln_out=([node-a]=$a_out [node-b]=$b_out [node-c]=$c_out)
for m in node-a node-b node-c; do
  read -r line <&"${cln_out[$m]}"
  wardend --config "$demo/$m.toml" >"$demo/wardend-$m.out" 2>"$demo/wardend-$m.log" &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "admin API on" "$demo/wardend-$m.out" 2>/dev/null && break; sleep 0.1; done
done
on() {
  local m=$1; shift
  echo "$*" >&"${cln_in[$m]}"; read -r reply <&"${cln_out[$m]}"
  printf '%s> %-22s -> %s\n' "$m" "$*" "$reply"
}
for m in node-a node-b node-c; do on "$m" init; done
on node-a pay 400000 a1
on node-b pay 400000 b1
echo "node-c's own wardend has approved nothing today, but the company has spent 800,000 sat:"
on node-c pay 400000 c1
echo "  (node-c's wardend: $(grep -a -m1 -o 'rule company-daily: [^[]*' "$demo/wardend-node-c.log" | sed 's/\x1b$//'))"
on node-c pay 200000 c2
on node-a pay 1000 a3
admin_port=${member_admin[node-c]}
admin carol status | grep -E "^(fleet|policy) |company-daily"
echo "The fleet's members, each bound to its node and seed, as any member's admin API lists them:"
admin carol fleet
echo "One admin freezes the whole fleet through node-b; every node's next payment is refused:"
admin_port=${member_admin[node-b]}
admin carol freeze --reason "demo: incident drill"
for m in node-a node-b node-c; do on "$m" pay 1000 "$m-9"; done
echo "The fleet's report: every member's own audit chain verified, added up per member and for the fleet:"
run wardenctl report --fleet --config "$demo/node-c.toml" --month "$(date -u +%Y-%m)"
for m in node-a node-b node-c; do echo quit >&"${cln_in[$m]}"; done

cleanup
pg_stop
trap - EXIT
echo "done. Everything the demo made is in $demo (wardend log: $demo/wardend.log)."
