#!/usr/bin/env bash
# Installs what Warden needs on a Debian machine, only what is missing, without prompts.
# Safe to run any number of times. Slow builds are cached under ~/.cache/warden, keyed by version.
set -euo pipefail

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_pkg softhsm2 || need_pkgs+=(softhsm2)
have_pkg opensc || need_pkgs+=(opensc)              # pkcs11-tool, for inspecting tokens by hand
have_cmd protoc || need_pkgs+=(protobuf-compiler)   # tonic-build compiles proto/ with it
have_cmd tmux || need_pkgs+=(tmux)                   # the wardenctl top test runs it in a real terminal
have_cmd strace || need_pkgs+=(strace)               # the durability test watches wardend's fsyncs
have_pkg postgresql || need_pkgs+=(postgresql)       # the HA tests start throwaway servers (initdb, pg_ctl)
have_cmd systemd-analyze || need_pkgs+=(systemd)     # a test scores contrib/systemd/wardend.service
have_cmd lintian || need_pkgs+=(lintian)             # the Debian package's test (scripts/package.sh --check)
have_cmd adduser || need_pkgs+=(adduser)             # the package's postinst makes the warden user

if ((${#need_pkgs[@]})); then
  echo "setup: installing ${need_pkgs[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

if have_cmd rustup; then
  for comp in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
  done
fi

# The package starts a cluster as a system service where systemd runs; the tests never use it
# (each starts its own server in a temp dir), so leave it alone but do not depend on it.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "setup: postgresql installed but no initdb under /usr/lib/postgresql/*/bin" >&2; exit 1; }

test -e /usr/lib/softhsm/libsofthsm2.so || { echo "setup: softhsm2 installed but /usr/lib/softhsm/libsofthsm2.so is missing" >&2; exit 1; }

# The real node-side peer for the end-to-end tests and the demo: VLS's remote_hsmd_socket, of the
# same version as the crates Warden links (Cargo.toml pins =1.0.0-rc.1). Built once into a cache
# outside the clone, keyed by version; reused by every later run.
VLS_VERSION="1.0.0-rc.1"
cache="${WARDEN_CACHE:-$HOME/.cache/warden}/vls-$VLS_VERSION"
if [ ! -x "$cache/bin/remote_hsmd_socket" ]; then
  echo "setup: building remote_hsmd_socket $VLS_VERSION into $cache (once; a few minutes)"
  mkdir -p "$cache"
  CARGO_TARGET_DIR="$cache/target" cargo install --locked --quiet vls-proxy --version "=$VLS_VERSION" \
    --bin remote_hsmd_socket --root "$cache" -j "${CARGO_BUILD_JOBS:-2}"
  rm -rf "$cache/target"
fi
test -x "$cache/bin/remote_hsmd_socket"
