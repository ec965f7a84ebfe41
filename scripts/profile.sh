#!/usr/bin/env bash
# Where wardend's time goes (issue 29): runs `benches/load.rs` (one wardend signing an LDK node
# with 16 channels: a preapprove stream, then the stream beside 16 paying peers) and samples
# wardend with `perf` for the whole run. Prints the hottest functions (self time), wardend's
# stages (each sample given to the innermost Warden, VLS, sled, gRPC or tokio frame on its stack,
# split into user time and the system calls made on the stage's behalf) and a flame graph.
#
#   scripts/profile.sh [OUT_DIR]      default OUT_DIR: target/profile
#
# The build is the bench's release build with frame pointers and line tables, in its own target
# directory (~/.cache/warden/target-profile), so it never disturbs the normal builds. Needs
# perf (Debian's linux-perf) and permission to sample (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v perf >/dev/null || { echo "profile: perf is missing; apt-get install linux-perf" >&2; exit 1; }
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
out="${1:-target/profile}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
export CARGO_TARGET_DIR="${WARDEN_CACHE:-$HOME/.cache/warden}/target-profile"
export RUSTFLAGS="-C force-frame-pointers=yes"
export CARGO_PROFILE_BENCH_DEBUG=line-tables-only
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only

if pgrep -x wardend >/dev/null; then
  echo "profile: a wardend is already running (pid $(pgrep -x wardend | tr '\n' ' ')); stop it first, the profile must sample only the bench's" >&2
  exit 1
fi
cargo bench --locked --bench load --no-run
cargo bench --locked --bench load > "$out/bench.txt" 2>&1 &
bench=$!
pid=""
for _ in $(seq 1 600); do
  pid=$(pgrep -n -x wardend || true)
  [ -n "$pid" ] && break
  kill -0 "$bench" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$pid" ]; then
  wait "$bench" || true
  echo "profile: the bench never started wardend; its output: $out/bench.txt" >&2
  exit 1
fi
echo "profile: sampling wardend (pid $pid) until it exits"
# Frame-pointer call graphs: cheap enough at 999 Hz for the whole run.
perf record -q -F 999 -g -p "$pid" -o "$out/perf.data" 2>"$out/perf-record.log" || true
wait "$bench"
cat "$out/bench.txt"

echo "== hottest functions, self time (top 30)"
perf report -i "$out/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.7 \
  2>/dev/null | grep -E '^ +[0-9]' | head -30
perf script -i "$out/perf.data" 2>/dev/null > "$out/perf.script"
python3 scripts/profile_stages.py "$out/perf.script" "$out/wardend.folded"
# The flame graph: inferno, built once into the cache like the other tools.
inferno="${WARDEN_CACHE:-$HOME/.cache/warden}/inferno-0.12.3"
if [ ! -x "$inferno/bin/inferno-flamegraph" ]; then
  cargo install --locked --quiet inferno --version 0.12.3 --no-default-features --features cli \
    --root "$inferno"
fi
"$inferno/bin/inferno-flamegraph" --minwidth 0.3 \
  --title "wardend under benches/load.rs (perf, 999 Hz)" "$out/wardend.folded" > "$out/wardend.svg"
echo "flame graph: $out/wardend.svg (folded stacks: $out/wardend.folded)"
