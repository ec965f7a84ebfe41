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

test -e /usr/lib/softhsm/libsofthsm2.so || { echo "setup: softhsm2 installed but /usr/lib/softhsm/libsofthsm2.so is missing" >&2; exit 1; }
