#!/usr/bin/env bash
# The Debian package: wardend, wardenctl and warden-cln-plugin in /usr/bin, the hardened unit,
# an example configuration and the default policy under /etc/warden (conffiles), a `warden`
# system user and /var/lib/warden (0700) made at install and kept on remove and on purge.
#   scripts/package.sh            release build -> target/debian/warden_VERSION_ARCH.deb
#   scripts/package.sh --debug    the debug build's binaries (what the suite already built)
#   scripts/package.sh --check    also: lintian (no errors), install it, run the binaries and
#                                 systemd-analyze verify on the installed unit, remove it, and
#                                 check that the state directory stayed. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
check=false
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --check) check=true ;;
    *) echo "usage: scripts/package.sh [--debug] [--check]" >&2; exit 2 ;;
  esac
done

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# Who built the package, as Debian's tools name a packager (DEBFULLNAME, DEBEMAIL).
maintainer="${DEBFULLNAME:-Warden packager} <${DEBEMAIL:-packager@example.org}>"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
bins=(wardend wardenctl warden-cln-plugin)
build=(cargo build --locked --quiet -p warden -p warden-cln-plugin)
[ "$profile" = release ] && build+=(--release)
for b in "${bins[@]}"; do build+=(--bin "$b"); done
"${build[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/warden"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
  "$root/etc/warden" "$root/usr/share/doc/warden"
for b in "${bins[@]}"; do
  install -m 0755 "target/$profile/$b" "$root/usr/bin/$b"
  strip --strip-unneeded "$root/usr/bin/$b"
done
sed 's#/usr/local/bin/wardend#/usr/bin/wardend#' contrib/systemd/wardend.service \
  > "$root/lib/systemd/system/wardend.service"
chmod 0644 "$root/lib/systemd/system/wardend.service"
install -m 0644 contrib/debian/wardend.toml "$root/etc/warden/wardend.toml"
install -m 0644 crates/warden-policy/default.toml "$root/etc/warden/policy.toml"
install -m 0644 README.md SECURITY.md "$root/usr/share/doc/warden/"
install -m 0644 contrib/debian/copyright "$root/usr/share/doc/warden/copyright"
{
  echo "warden ($version) unstable; urgency=medium"
  echo
  echo "  * Built from the Warden source tree by scripts/package.sh."
  echo
  echo " -- $maintainer  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$root/usr/share/doc/warden/changelog.gz"
chmod 0644 "$root/usr/share/doc/warden/changelog.gz"

printf '%s\n' /etc/warden/wardend.toml /etc/warden/policy.toml > "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
  install -m 0755 "contrib/debian/$s" "$root/DEBIAN/$s"
done
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: warden
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_kb
Depends: libc6, adduser, softhsm2 | opensc-pkcs11
Section: net
Priority: optional
Description: HSM-backed, validating Lightning signer with quorum approvals
 wardend holds a Lightning node's keys, sealed in a PKCS#11 HSM, validates every
 signature with VLS, and applies a declarative policy (limits, allowlists, time
 windows) with 2-of-3 admin approvals above a threshold. wardenctl is its admin
 tool; warden-cln-plugin lets Core Lightning ask before it acts.
EOF

mkdir -p target/debian
deb="target/debian/warden_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "package: $deb"

$check || exit 0

# --- the package's own test ---------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || { echo "package --check installs the package: run it as root" >&2; exit 1; }
fail() { echo "package check: $*" >&2; exit 1; }

contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/wardend ./usr/bin/wardenctl ./usr/bin/warden-cln-plugin \
  ./lib/systemd/system/wardend.service ./etc/warden/wardend.toml ./etc/warden/policy.toml \
  ./usr/share/doc/warden/copyright; do
  grep -q " $f\$" <<<"$contents" || fail "$f is not in the package"
done
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = "$(printf '%s\n' /etc/warden/wardend.toml /etc/warden/policy.toml)" ] \
  || fail "the conffiles are not the configuration and the policy"

lintian_out=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
echo "$lintian_out" | sed 's/^/lintian: /'
if grep -q '^E: ' <<<"$lintian_out"; then fail "lintian reports errors"; fi

# Install over whatever an earlier run left, then use what was installed.
dpkg --purge warden >/dev/null 2>&1 || true
dpkg -i "$deb" >/dev/null || fail "dpkg -i failed"
getent passwd warden >/dev/null || fail "no warden user after install"
[ "$(stat -c '%a %U' /var/lib/warden)" = "700 warden" ] || fail "/var/lib/warden is not 0700 warden"
/usr/bin/wardend --version | grep -q "$version" || fail "wardend --version"
/usr/bin/wardenctl --help >/dev/null || fail "wardenctl --help"
systemd-analyze verify /lib/systemd/system/wardend.service || fail "systemd-analyze verify"

# An edited configuration survives a reinstall (a conffile is never overwritten).
echo "# edited by the operator" >> /etc/warden/wardend.toml
dpkg -i "$deb" >/dev/null || fail "reinstalling failed"
grep -q "edited by the operator" /etc/warden/wardend.toml || fail "a reinstall overwrote the edited configuration"

# State is money: remove and purge keep it, and say so.
touch /var/lib/warden/sealed-seed
dpkg -r warden >/dev/null || fail "dpkg -r failed"
[ -e /var/lib/warden/sealed-seed ] || fail "removing the package deleted /var/lib/warden"
purge_out=$(dpkg --purge warden 2>&1) || fail "dpkg --purge failed"
[ -e /var/lib/warden/sealed-seed ] || fail "purging the package deleted /var/lib/warden"
grep -q "/var/lib/warden is kept" <<<"$purge_out" || fail "purge did not say that /var/lib/warden is kept: $purge_out"
rm -rf /var/lib/warden
echo "package check: ok"
