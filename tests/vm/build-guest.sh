#!/usr/bin/env bash
# Build the pieces of the QEMU test guest into a cache folder:
#   vmlinuz, modules/ (Debian 12 cloud kernel, unpacked, depmod'ed),
#   base.cpio.gz      (busybox initramfs + storage tools + kernel modules + /init),
#   ephemera.cpio.gz  (only with `add-binary`: extra binaries + libs that base lacks),
#   tpm2.cpio.gz      (tpm2-tools and the TPM device transport: the manual path of the
#                      native tpm2 pin; added by run-guest.sh --tpm only),
#   clevis.cpio.gz    (clevis with its sss and tpm2 pins, jose, bash, tpm2-tools: what
#                      unlock files of version 1 run; run-guest.sh --clevis).
# Linux unpacks concatenated gzip'd cpio archives as one initramfs; run-guest.sh
# boots base + ephemera (+ tpm2 + clevis) + a per-run scenario archive.
#
# usage: build-guest.sh                   build/refresh kernel and base (idempotent)
#        build-guest.sh add-binary BIN... also write ephemera.cpio.gz with each BIN
#                                         as /usr/sbin/<basename BIN>
# env:   EPHEMERA_VM_ARCH        amd64 (default) or arm64 (Graviton: Debian 12's arm64
#                                cloud kernel, and the guest's tools taken from a
#                                Debian 12 arm64 tree that mmdebstrap extracts)
#        EPHEMERA_VM_CACHE       cache folder (default <repo>/target/vm, target/vm-arm64)
#        EPHEMERA_VM_KERNEL_PKG  kernel package (default: what linux-image-cloud-ARCH
#                                depends on in the apt lists)
# Needs root on Debian 12: installs missing host packages with apt-get.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/../.." && pwd)
arch=${EPHEMERA_VM_ARCH:-amd64}
case $arch in
  amd64) cache=${EPHEMERA_VM_CACHE:-$repo/target/vm} ;;
  arm64) cache=${EPHEMERA_VM_CACHE:-$repo/target/vm-arm64} ;;
  *) echo "build-guest: EPHEMERA_VM_ARCH must be amd64 or arm64, not $arch" >&2; exit 1 ;;
esac

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

apt_updated=
apt_update_once() {
  [[ -n $apt_updated ]] && return
  log "apt-get update"
  apt-get update -qq >&2
  apt_updated=1
}

# Host packages (the tools copied into the guest, QEMU): scripts/host-tools.sh,
# one apt transaction and a check of every tool afterwards.
# An arm64 guest also needs the group vm-arm64 (QEMU for aarch64, mmdebstrap
# for the arm64 tree, binutils that read and strip aarch64 binaries).
ensure_host_tools() {
  if [[ $arch == arm64 ]]; then "$repo/scripts/host-tools.sh" vm vm-arm64; else "$repo/scripts/host-tools.sh" vm; fi
}

# The kernel package to boot: the current Debian 12 cloud kernel unless overridden.
kernel_pkg() {
  local pkg=${EPHEMERA_VM_KERNEL_PKG:-}
  if [[ -z $pkg ]]; then
    pkg=$(apt-cache depends "linux-image-cloud-$arch:$arch" 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { sub(/:.*/, "", $2); print $2; exit }')
    if [[ -z $pkg ]]; then
      apt_update_once # apt lists missing or stale on a fresh machine
      pkg=$(apt-cache depends "linux-image-cloud-$arch:$arch" |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { sub(/:.*/, "", $2); print $2; exit }')
    fi
  fi
  [[ -n $pkg ]] || die "cannot find the cloud kernel package (apt-cache depends linux-image-cloud-$arch:$arch)"
  echo "$pkg"
}

# Unpack vmlinuz + modules without installing the kernel on the host.
build_kernel() {
  local pkg=$1 kver=${1#linux-image-} version stamp tmp
  version=$(apt-cache show --no-all-versions "$pkg:$arch" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
  stamp="$pkg $version"
  if [[ -f $cache/vmlinuz && -f $cache/kernel.stamp && $(cat "$cache/kernel.stamp") == "$stamp" ]]; then
    return
  fi
  log "fetching $pkg $version"
  tmp=$(mktemp -d "$cache/kernel.tmp.XXXXXX")
  # Sandbox user root: _apt cannot write into root's temp folders.
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg:$arch" >&2)
  dpkg -x "$tmp"/*.deb "$tmp/x"
  [[ -d $tmp/x/lib/modules/$kver ]] || die "no lib/modules/$kver in $pkg"
  depmod -b "$tmp/x" "$kver"
  rm -rf "$cache/modules" "$cache/vmlinuz"
  mkdir -p "$cache/modules/lib"
  mv "$tmp/x/lib/modules" "$cache/modules/lib/"
  mv "$tmp/x/boot/vmlinuz-$kver" "$cache/vmlinuz"
  rm -rf "$tmp"
  echo "$kver" >"$cache/kernel-version"
  echo "$stamp" >"$cache/kernel.stamp"
}

# Copy a host file into the guest tree at the same absolute path. Symlinks are
# recreated as symlinks and their targets copied too (libfoo.so.1 -> libfoo.so.1.2.3,
# /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...). The guest tree has
# merged /usr (lib -> usr/lib, ...), so /lib/x and /usr/lib/x land in one place.
copy_host_file() {
  local root=$1 path=$2 link target
  [[ -e $root$path || -L $root$path ]] && return
  mkdir -p "$root$(dirname "$path")"
  if [[ -L $path ]]; then
    link=$(readlink "$path")
    ln -s "$link" "$root$path"
    case $link in
      /*) target=$link ;;
      *) target=$(dirname "$path")/$link ;;
    esac
    copy_host_file "$root" "$target"
  else
    cp "$path" "$root$path"
  fi
}

# Libraries ldd names for a binary (with the ELF interpreter); none for static ones.
elf_libs() {
  local out
  if ! out=$(ldd "$1" 2>&1); then
    [[ $out == *"not a dynamic executable"* ]] && return 0
    die "ldd $1: $out"
  fi
  [[ $out != *"not found"* ]] || die "ldd $1: missing libraries: $out"
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}

# Copy a binary and its libraries, skipping what already exists in the guest tree
# (or in $skip_root, the base tree, when packing the extra archive).
copy_binary() {
  local root=$1 bin=$2 dest=$3 skip_root=${4:-} lib
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$bin" "$root$dest"
  chmod 0755 "$root$dest"
  if [[ $arch == arm64 ]]; then
    copy_cross_libs "$root" "$bin" "$skip_root"
    return
  fi
  while read -r lib; do
    [[ -n $skip_root && (-e $skip_root$lib || -L $skip_root$lib) ]] && continue
    copy_host_file "$root" "$lib"
  done < <(elf_libs "$bin")
}

# --- arm64 guests: tools and libraries from a Debian 12 arm64 tree -----------
# ldd cannot run aarch64 binaries here, so their libraries are found by name
# (readelf's NEEDED entries) in the tree mmdebstrap extracted, recursively, and
# copied to the guest's /usr/lib/aarch64-linux-gnu (with the ELF interpreter).
sysroot=$cache/sysroot
sysroot_pkgs=(busybox-static cryptsetup-bin mdadm dmsetup util-linux fdisk e2fsprogs
  xfsprogs openssl jq kmod coreutils attr acl libc6
  clevis clevis-tpm2 tpm2-tools libtss2-tcti-device0 jose bash
  libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-sys1 libtss2-tctildr0)

build_sysroot() {
  local stamp
  # Inputs: the package list and the candidate arm64 versions in the apt lists.
  stamp=$( {
    echo "${sysroot_pkgs[*]}"
    apt-cache show --no-all-versions "${sysroot_pkgs[@]/%/:arm64}" 2>/dev/null |
      awk '/^(Package|Version):/ { print $2 }'
  } | sha256sum | cut -d' ' -f1)
  if [[ -d $sysroot && -f $cache/sysroot.stamp && $(cat "$cache/sysroot.stamp") == "$stamp" ]]; then
    return
  fi
  log "extracting a Debian 12 arm64 tree (${sysroot_pkgs[*]})"
  rm -rf "$sysroot" "$sysroot.tmp"
  mmdebstrap --quiet --architectures=arm64 --variant=extract \
    --include="$(IFS=,; echo "${sysroot_pkgs[*]}")" \
    bookworm "$sysroot.tmp" >&2 || die "mmdebstrap could not extract the arm64 tree"
  mv "$sysroot.tmp" "$sysroot"
  echo "$stamp" >"$cache/sysroot.stamp"
}

# A path inside the sysroot with its symlinks followed inside the sysroot.
sysroot_path() {
  local p=$sysroot$1 link n=0
  while [[ -L $p ]] && ((n++ < 40)); do
    link=$(readlink "$p")
    case $link in
      /*) p=$sysroot$link ;;
      *) p=$(dirname "$p")/$link ;;
    esac
  done
  echo "$p"
}

# The sysroot file of a tool (as `command -v` finds it on the host).
sysroot_tool() {
  local d
  for d in /usr/sbin /usr/bin /sbin /bin; do
    [[ -e $sysroot$d/$1 ]] && { sysroot_path "$d/$1"; return; }
  done
  die "$1 not in the arm64 tree ($sysroot)"
}

copy_cross_libs() { # ROOT BIN SKIP_ROOT
  local root=$1 skip_root=$3 todo=("$2") f lib src dest d
  local -A seen=()
  while ((${#todo[@]})); do
    f=${todo[0]}
    todo=("${todo[@]:1}")
    while read -r lib; do
      [[ -n ${seen[$lib]:-} ]] && continue
      seen[$lib]=1
      if [[ $lib == ld-linux-aarch64.so.1 ]]; then
        dest=/usr/lib/ld-linux-aarch64.so.1 # the interpreter, /lib/... in the guest
        src=$(sysroot_path /lib/ld-linux-aarch64.so.1)
      else
        dest=/usr/lib/aarch64-linux-gnu/$lib
        src=
        for d in /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do
          [[ -e $sysroot$d/$lib ]] && { src=$(sysroot_path "$d/$lib"); break; }
        done
        [[ -n $src ]] || die "$f needs $lib, which is not in the arm64 tree"
      fi
      [[ -n $skip_root && -e $skip_root$dest ]] && continue
      if [[ ! -e $root$dest ]]; then
        mkdir -p "$root$(dirname "$dest")"
        cp "$src" "$root$dest"
      fi
      todo+=("$src")
    done < <(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
      readelf -l "$f" 2>/dev/null | sed -n 's/.*interpreter: .*\/\(ld-linux-aarch64.so.1\)\]/\1/p')
  done
}
# --- end of the arm64 guest tools ---------------------------------------------

pack_cpio() { # pack_cpio DIR OUT
  (cd "$1" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0) | gzip -6 >"$2.tmp"
  mv "$2.tmp" "$2"
}

write_init() {
  cat >"$1" <<'EOF'
#!/bin/sh
# PID 1 of the ephemera test guest: set up the basics, run /scenario/run.sh,
# report its exit code on the serial console and power off (QEMU then exits).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# What udev or systemd would make: bash's process substitution (clevis)
# needs /dev/fd, and tools read a key from /dev/stdin.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
exec </dev/console >/dev/console 2>&1
ln -sf /proc/self/mounts /etc/mtab
echo 1 >/proc/sys/kernel/sysrq
hostname ephemera-vm
echo EPHEMERA-VM-BOOTED
echo "EPHEMERA-VM-ARCH $(uname -m)"
if [ -f /scenario/run.sh ]; then
  cd /scenario && sh /scenario/run.sh </dev/null
  rc=$?
  cd /
  echo "EPHEMERA-VM-EXIT $rc"
else
  echo "EPHEMERA-VM: /scenario/run.sh is missing"
fi
sync
echo o >/proc/sysrq-trigger
# Power-off is asynchronous; never let PID 1 exit (that would panic).
while :; do sleep 1; done
EOF
  chmod 0755 "$1"
}

# Module folders the guest needs: md/raid0, dm-crypt, ciphers (generic + x86), their
# helpers, and xfs (ext4 is built in). Every extra MB costs boot time: the kernel
# unpacks the initramfs at roughly 15-20 MB/s under TCG.
# virtio-net, and only it of the network drivers, for the tests that give
# the guest a NIC (run-guest.sh --guestfwd).
module_dirs=(kernel/crypto kernel/arch/x86/crypto kernel/lib kernel/block kernel/fs/xfs
  kernel/drivers/md kernel/drivers/block kernel/drivers/nvme kernel/drivers/char
  kernel/drivers/virtio kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko
  kernel/net/core/failover.ko)
# arm64: its ciphers (aes-ce: the ARMv8 crypto extensions), and dax, which the
# arm64 cloud kernel builds as a module that dm-mod needs.
[[ $arch == amd64 ]] || module_dirs=("${module_dirs[@]/kernel\/arch\/x86\/crypto/kernel/arch/arm64/crypto}" kernel/drivers/dax)

build_base() {
  local kver inputs root tool path
  kver=$(cat "$cache/kernel-version")
  # Inputs: this script, the kernel, and the versions of the host packages copied in.
  inputs=$( {
    sha256sum "$script"
    cat "$cache/kernel.stamp"
    [[ $arch == amd64 ]] || cat "$cache/sysroot.stamp"
    dpkg-query -W -f='${Package} ${Version}\n' busybox-static busybox kmod cryptsetup-bin \
      libcryptsetup12 mdadm dmsetup util-linux fdisk e2fsprogs xfsprogs openssl jq libc6 \
      coreutils attr acl \
      2>/dev/null || true
  } | sha256sum | cut -d' ' -f1)
  if [[ -f $cache/base.cpio.gz && -f $cache/base.stamp && $(cat "$cache/base.stamp") == "$inputs" ]]; then
    return
  fi
  log "building base.cpio.gz for $kver"
  # An extra archive packed against the old base may lack libraries: make the
  # caller run add-binary again rather than boot a stale binary.
  rm -f "$cache/ephemera.cpio.gz"
  root=$cache/base-root
  rm -rf "$root"
  mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,run,tmp,mnt,root,var,scenario}
  ln -s usr/bin "$root/bin"
  ln -s usr/sbin "$root/sbin"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  ln -s ../run "$root/var/run"
  # The kernel opens /dev/console for PID 1 before /init can mount devtmpfs.
  mknod -m 0600 "$root/dev/console" c 5 1

  # Real tools, at their host paths, with their libraries.
  for tool in cryptsetup mdadm dmsetup blkid wipefs mkswap findmnt lsblk sfdisk \
    mke2fs dumpe2fs e2fsck mkfs.xfs openssl jq kmod cp getfattr setfattr getfacl setfacl xfs_db xfs_repair; do
    if [[ $arch == arm64 ]]; then
      path=$(sysroot_tool "$tool")
      tool=${path#"$sysroot"}
      copy_binary "$root" "$path" "/usr${tool#/usr}"
      continue
    fi
    path=$(command -v "$tool")
    copy_binary "$root" "$path" "$(readlink -f "$path")"
  done
  # mke2fs picks the fs type from its name; kmod acts by name too. The kernel
  # runs /sbin/modprobe to load ciphers (twofish, xts, ecb): busybox's is not enough
  # for the real modprobe semantics, so use kmod's.
  for tool in mkfs.ext4 mkfs.ext3 mkfs.ext2; do ln -s mke2fs "$root/usr/sbin/$tool"; done
  ln -s e2fsck "$root/usr/sbin/fsck.ext4"
  for tool in modprobe insmod rmmod lsmod modinfo depmod; do ln -s ../bin/kmod "$root/usr/sbin/$tool"; done
  cp /etc/mke2fs.conf "$root/etc/"

  # Busybox for everything else (sh, mount, grep, dd, timeout, sha256sum...).
  path=$(command -v busybox)
  if [[ $arch == arm64 ]]; then
    copy_binary "$root" "$(sysroot_tool busybox)" /usr/bin/busybox
  else
    copy_binary "$root" "$path" /usr/bin/busybox
  fi
  # The applet list from the host's busybox (the same Debian 12 build, any architecture).
  while read -r tool; do
    tool=/${tool#/}
    [[ -e $root$tool || -L $root$tool ]] && continue
    mkdir -p "$root$(dirname "$tool")"
    ln -s /usr/bin/busybox "$root$tool"
  done < <("$path" --list-full)

  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  : >"$root/etc/fstab"
  write_init "$root/init"

  # Kernel modules: the folders above, the builtin lists, and a fresh depmod.
  mkdir -p "$root/lib/modules/$kver"
  cp "$cache/modules/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$root/lib/modules/$kver/"
  for path in "${module_dirs[@]}"; do
    [[ -e $cache/modules/lib/modules/$kver/$path ]] || continue
    mkdir -p "$root/lib/modules/$kver/$(dirname "$path")"
    cp -a "$cache/modules/lib/modules/$kver/$path" "$root/lib/modules/$kver/$path"
  done
  depmod -b "$root" "$kver"
  for path in dm-crypt raid0 md-mod twofish_generic xts ecb xfs virtio_net; do
    modprobe -d "$root" -S "$kver" --show-depends "$path" >/dev/null ||
      die "module $path missing from the guest tree"
  done

  pack_cpio "$root" "$cache/base.cpio.gz"
  echo "$inputs" >"$cache/base.stamp"
  log "base.cpio.gz: $(du -h "$cache/base.cpio.gz" | cut -f1)"
}

# Directories that base has as symlinks (lib -> usr/lib) must not become real
# directories in an extra archive, or they would shadow base's symlinks.
merge_usr() { # merge_usr ROOT
  local d
  for d in bin sbin lib lib64; do
    if [[ -d $1/$d && ! -L $1/$d ]]; then
      mkdir -p "$1/usr/$d"
      cp -a "$1/$d/." "$1/usr/$d/"
      rm -rf "${1:?}/$d"
    fi
  done
}

# The TPM's device transport: tpm2-tss loads it with dlopen (libtss2-tctildr),
# so ldd cannot see it: it is named. Copied into ROOT with its libraries.
copy_tcti_device() { # ROOT SKIP_ROOT
  local libdir path
  if [[ $arch == arm64 ]]; then
    libdir=/usr/lib/aarch64-linux-gnu
    path=$(sysroot_path "$libdir/libtss2-tcti-device.so.0")
  else
    libdir=/usr/lib/x86_64-linux-gnu
    path=$(readlink -f "$libdir/libtss2-tcti-device.so.0")
  fi
  copy_binary "$1" "$path" "$libdir/libtss2-tcti-device.so.0" "$2"
}

# Packs the tools named in $2... (from the host, or the arm64 tree) with their
# libraries into ARCHIVE $1 (base's files left out); tpm2 brings its tpm2_X links.
pack_tools() { # ARCHIVE TOOL...
  local out=$1 root=$cache/${1%.cpio.gz}-root inputs tool path link
  shift
  inputs=$( {
    cat "$cache/base.stamp"
    sha256sum "$script"
    echo "$*"
    if [[ $arch == amd64 ]]; then dpkg-query -W -f='${Package} ${Version}\n' clevis clevis-tpm2 tpm2-tools jose bash libtss2-tcti-device0; fi
  } | sha256sum | cut -d' ' -f1)
  if [[ -f $cache/$out && -f $cache/$out.stamp && $(cat "$cache/$out.stamp") == "$inputs" ]]; then
    return
  fi
  rm -rf "$root"
  mkdir -p "$root"
  for tool in "$@"; do
    if [[ $arch == arm64 ]]; then path=$(sysroot_tool "$tool"); else path=$(command -v "$tool"); fi
    copy_binary "$root" "$path" "/usr/bin/$tool" "$cache/base-root"
  done
  copy_tcti_device "$root" "$cache/base-root"
  if [[ " $* " == *" tpm2 "* ]]; then
    # tpm2-tools is one binary; each tpm2_X is a link to it, as in the package.
    while read -r link; do
      ln -s tpm2 "$root/usr/bin/${link##*/}"
    done < <(if [[ $arch == arm64 ]]; then find "$sysroot/usr/bin" -name 'tpm2_*'; else find /usr/bin -name 'tpm2_*'; fi)
  fi
  merge_usr "$root"
  pack_cpio "$root" "$cache/$out"
  echo "$inputs" >"$cache/$out.stamp"
  log "$out: $(du -h "$cache/$out" | cut -f1)"
}

# tpm2-tools alone: the manual path of the native tpm2 pin, and PCR changes.
build_tpm2() { pack_tools tpm2.cpio.gz tpm2; }
# clevis with its sss and tpm2 pins and what they run (bash: its scripts; tpm2-tools:
# its tpm2 pin, for unlock files of version 1).
build_clevis() {
  pack_tools clevis.cpio.gz clevis clevis-encrypt-sss clevis-decrypt-sss clevis-encrypt-tpm2 \
    clevis-decrypt-tpm2 clevis-decrypt jose bash tpm2
}

add_binaries() {
  local root=$cache/extra-root bin
  rm -rf "$root"
  mkdir -p "$root"
  for bin in "$@"; do
    [[ -f $bin && -x $bin ]] || die "not an executable file: $bin"
    copy_binary "$root" "$bin" "/usr/sbin/$(basename "$bin")" "$cache/base-root"
    # The native tpm2 pin (tss-esapi) loads the TPM's transport with dlopen.
    if readelf -d "$bin" 2>/dev/null | grep -q 'libtss2-tctildr'; then
      copy_tcti_device "$root" "$cache/base-root"
    fi
    # Debug info only slows the boot (the kernel unpacks the initramfs at ~15-20 MB/s
    # under TCG); the symbol table stays, so backtraces keep function names.
    if [[ $arch == arm64 ]]; then
      aarch64-linux-gnu-strip --strip-debug "$root/usr/sbin/$(basename "$bin")"
    elif command -v strip >/dev/null; then strip --strip-debug "$root/usr/sbin/$(basename "$bin")"; fi
  done
  merge_usr "$root"
  pack_cpio "$root" "$cache/ephemera.cpio.gz"
  log "ephemera.cpio.gz: $(du -h "$cache/ephemera.cpio.gz" | cut -f1) ($*)"
}

main() {
  local pkg
  ((EUID == 0)) || die "run as root (mknod, apt-get)"
  mkdir -p "$cache"
  ensure_host_tools
  pkg=$(kernel_pkg)
  build_kernel "$pkg"
  [[ $arch == amd64 ]] || build_sysroot
  build_base
  build_tpm2
  build_clevis
  case ${1:-} in
    "") ;;
    add-binary)
      shift
      (($#)) || die "usage: $0 add-binary BIN..."
      add_binaries "$@"
      ;;
    *) die "usage: $0 [add-binary BIN...]" ;;
  esac
}

main "$@"
