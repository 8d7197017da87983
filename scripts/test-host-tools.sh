#!/usr/bin/env bash
# CI proof that the README's commands need nothing installed by hand (issue 11):
# a fresh Debian 12 (minbase, made with mmdebstrap) that, like the machine
# where `make demo` failed, already carries qemu-utils from bookworm-backports.
# In it, as root:
#   1. control: the old step (`apt-get install --no-install-recommends
#      qemu-system-x86`, simulated) removes qemu-utils or fails: the chroot
#      reproduces the defect;
#   2. scripts/host-tools.sh all: installs every host package in one transaction
#      (the packages' linters, lintian and rpmlint, among them), removing none;
#   3. scripts/host-tools.sh --check all, then each QEMU tool runs and
#      qemu-utils is still installed, at qemu-system-x86's version;
#   4. with socat removed, --check fails with one line naming it and its package;
#   5. scripts/arm64.sh toolchain (the Graviton cross toolchain: dpkg's arm64
#      architecture, Debian's rustc-web from the security suite, multiarch
#      libraries version-matched to the amd64 ones) installs and checks, and
#      removes nothing: every package installed before it still is, at its version.
# The chroot tarball is cached by its inputs in target/host-tools-proof/; the
# packages host-tools.sh fetches are cached there too. Mounts happen in a
# private mount namespace (unshare) and vanish with it.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/.." && pwd)
cache=$repo/target/host-tools-proof
log() { echo "test-host-tools: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
((EUID == 0)) || die "must run as root (mmdebstrap, chroot)"

"$repo/scripts/host-tools.sh" system # mmdebstrap on this host
mirror=${EPHEMERA_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
key=$( {
  echo "$suite $mirror"
  sed -n '/^# --- chroot ---/,/^# --- end ---/p' "$script"
} | sha256sum | cut -c1-16)
tarball=$cache/$suite-bpo-qemu-utils-$key.tar
mkdir -p "$cache/archives/partial"

start=$SECONDS
if [[ ! -f $tarball ]]; then
  log "mmdebstrap $suite with qemu-utils from $suite-backports (cached as $tarball)"
  # --- chroot ---
  mmdebstrap --mode=root --format=tar --variant=minbase --aptopt='Acquire::Retries "3"' \
    --customize-hook='chroot "$1" apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils' \
    --customize-hook='chroot "$1" dpkg-query -W qemu-utils' \
    "$suite" "$tarball.tmp" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $mirror $suite-backports main" \
    "deb ${mirror%/debian}/debian-security $suite-security main" >&2
  # --- end ---
  mv "$tarball.tmp" "$tarball"
fi

root=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
tar -xf "$tarball" -C "$root"
mkdir -p "$root/tmp/ephemera"
cp "$repo/scripts/host-tools.sh" "$repo/scripts/arm64.sh" "$root/tmp/ephemera/"
cp /etc/resolv.conf "$root/etc/resolv.conf"

unshare --mount --propagation private bash -euo pipefail -s "$root" "$cache/archives" <<'EOF'
root=$1 archives=$2
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind "$archives" "$root/var/cache/apt/archives"
inroot() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
before=$(inroot dpkg-query -W -f='${Version}' qemu-utils)
echo "test-host-tools: the chroot has qemu-utils $before" >&2
[[ $before == *~bpo* ]] || { echo "test-host-tools: FAIL: qemu-utils $before is not from backports" >&2; exit 1; }

# 1. Control: the step build-image.sh used to run would remove qemu-utils.
inroot apt-get update -qq
# (On this mirror apt either removes qemu-utils or gives up; both leave
# qemu-img or qemu-system-x86_64 missing.)
if ! out=$(inroot apt-get -s install -y --no-install-recommends qemu-system-x86 2>&1) ||
  grep -q '^Remv qemu-utils ' <<<"$out"; then
  echo "test-host-tools: control: the old step fails here: $(grep -E '^(E:|Remv)' <<<"$out" | head -n 1)" >&2
else
  echo "test-host-tools: FAIL: control: the old step works here, so this chroot does not show the defect" >&2
  exit 1
fi

# 2. The host-tool step, as the README's commands run it: it removes no
# package (qemu-utils may change version: it is brought to qemu-system-x86's).
inroot dpkg-query -W -f='${Package}:${Architecture}\n' | sort >"$root/tmp/pkgs-before"
inroot /tmp/ephemera/host-tools.sh all
inroot dpkg-query -W -f='${Package}:${Architecture}\n' | sort >"$root/tmp/pkgs-after"
gone=$(comm -23 "$root/tmp/pkgs-before" "$root/tmp/pkgs-after")
[[ -z $gone ]] || { echo "test-host-tools: FAIL: host-tools.sh all removed: $gone" >&2; exit 1; }
echo "test-host-tools: host-tools.sh all: $(($(wc -l <"$root/tmp/pkgs-after") - $(wc -l <"$root/tmp/pkgs-before"))) packages added, none removed; $(inroot lintian --version), rpmlint $(inroot rpmlint --version)" >&2

# 3. Every tool there; QEMU's halves at one version, qemu-utils kept.
inroot /tmp/ephemera/host-tools.sh --check all
inroot qemu-img --version | head -n 1 >&2
inroot qemu-system-x86_64 --version | head -n 1 >&2
after=$(inroot dpkg-query -W -f='${Version}' qemu-utils)
sys=$(inroot dpkg-query -W -f='${Version}' qemu-system-x86)
[[ $after == "$sys" ]] || { echo "test-host-tools: FAIL: qemu-utils $after, qemu-system-x86 $sys" >&2; exit 1; }
echo "test-host-tools: qemu-utils $after and qemu-system-x86 $sys" >&2

# 4. A tool that goes missing: one line naming the tool and its package.
inroot dpkg -r socat >/dev/null 2>&1
if msg=$(inroot /tmp/ephemera/host-tools.sh --check system 2>&1); then
  echo "test-host-tools: FAIL: --check passed without socat" >&2; exit 1
fi
[[ $(wc -l <<<"$msg") == 1 && $msg == *"socat missing: install the Debian package socat"* ]] ||
  { echo "test-host-tools: FAIL: --check without socat said: $msg" >&2; exit 1; }
echo "test-host-tools: without socat: $msg" >&2

# 5. The arm64 cross toolchain, as `make deb-arm64` installs it.
inroot dpkg-query -W -f='${Package}:${Architecture} ${Version}\n' | sort >"$root/tmp/before"
inroot /tmp/ephemera/arm64.sh toolchain
inroot dpkg-query -W -f='${Package}:${Architecture} ${Version}\n' | sort >"$root/tmp/after"
gone=$(comm -23 "$root/tmp/before" "$root/tmp/after")
[[ -z $gone ]] || { echo "test-host-tools: FAIL: arm64.sh toolchain removed or changed: $gone" >&2; exit 1; }
echo "test-host-tools: arm64.sh toolchain: $(inroot /usr/bin/rustc --version), $(($(wc -l <"$root/tmp/after") - $(wc -l <"$root/tmp/before"))) packages added, none removed" >&2
EOF
log "PASS: a fresh $suite with a backports qemu-utils got every host tool from scripts/host-tools.sh ($((SECONDS - start)) s)"
