#!/usr/bin/env bash
# Build a bootable Debian system image with ephemera's .deb installed by the
# same script Packer uses (packer/install.sh), for the full-boot system tests.
#
# usage: build-image.sh SUITE DEB
#   SUITE  bookworm | trixie
#   DEB    the ephemera .deb (make deb: target/debian/ephemera.deb; for arm64,
#          make deb-arm64: target/debian/ephemera_arm64.deb)
# prints: the image folder, which holds
#   disk.img      raw GPT disk, one ext4 partition (label ephroot, fixed PARTUUID)
#   vmlinuz, initrd.img   taken from the image's own /boot (linux-image-cloud-amd64;
#                 arm64: vmlinuz only, the kernel has NVMe and ext4 built in)
#   cmdline       the kernel arguments that boot it (root=PARTUUID=...)
#   info          suite, kernel, systemd and package versions in the image
# The folder is ${EPHEMERA_SYSTEM_CACHE:-~/.cache/ephemera-tests/system}/SUITE-<hash>
# (arm64: SUITE-arm64-<hash>), the hash covering this script, install.sh, what
# the .deb installs and the package list: a second call with the same inputs,
# from any checkout, only prints the folder (the .deb is the same from any
# checkout of a commit: its binary is built reproducibly, and paths in it are
# relative). The cache lives outside the checkout so that CI's clean checkout
# reuses an image built for the same inputs (the arm64 one takes 20-40 min);
# each SUITE keeps its two most recently used images. Concurrent calls wait on
# a lock.
# env:   EPHEMERA_SYSTEM_CACHE   cache folder
#        EPHEMERA_IMAGE_NO_CLEVIS 1: no clevis in the image (the kms unlock node)
#        EPHEMERA_INSTALL_SH     install script (default <repo>/packer/install.sh)
#        EPHEMERA_MIRROR         Debian mirror (default: the one the host's apt uses)
#        EPHEMERA_VM_ARCH        amd64 (default) or arm64 (Graviton; bookworm only).
#          arm64 without touching the host's binfmt_misc: debootstrap --foreign
#          unpacks the arm64 packages on the host, the disk is written, and an
#          arm64 VM (qemu-system-aarch64, TCG) boots it once with init=/ephemera-stage2
#          to run debootstrap's second stage, packer/install.sh and the same
#          customizations as the amd64 hooks; the VM's console is kept in stage2.log.
# Needs root on Debian 12: installs missing host packages with apt-get. Uses no
# loop device and mounts nothing on the host (mkfs.ext4 -d, sfdisk on a file).
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/../.." && pwd)
cache=${EPHEMERA_SYSTEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ephemera-tests/system}
install_sh=${EPHEMERA_INSTALL_SH:-$repo/packer/install.sh}

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The Debian mirror the host's apt already uses (its main suite, not the
# security or updates ones), so the images come from where apt-get does.
host_mirror() {
  {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null
    sed -n 's/^URIs: *\([^ ]*\).*/\1 main/p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    awk '$1 == "deb" { print $2, $3 }' /etc/apt/sources.list 2>/dev/null || true
  } | awk '$1 ~ /^https?:/ && $1 !~ /security/ && $2 !~ /-(security|updates|backports)$/ {
      sub(/\/$/, "", $1); print $1; exit }' || true
}
mirror=${EPHEMERA_MIRROR:-$(host_mirror)}
[[ -n $mirror ]] || die "no Debian mirror in the host's apt sources; set EPHEMERA_MIRROR"

(($# == 2)) || die "usage: build-image.sh SUITE DEB"
suite=$1 deb=$(readlink -f "$2")
case $suite in bookworm | trixie) ;; *) die "SUITE must be bookworm or trixie, got $suite" ;; esac
[[ -f $deb ]] || die "no .deb at $2 (make deb builds it)"
[[ -f $install_sh ]] || die "no install script at $install_sh"
((EUID == 0)) || die "must run as root (mmdebstrap in root mode, apt-get)"
arch=${EPHEMERA_VM_ARCH:-amd64}
case $arch in
  amd64) name=$suite console=ttyS0 ;;
  arm64) name=$suite-arm64 console=ttyAMA0 ;;
  *) die "EPHEMERA_VM_ARCH must be amd64 or arm64, got $arch" ;;
esac
[[ $arch == amd64 || $suite == bookworm ]] || die "arm64 images: bookworm only"

# What the image holds besides minbase. polkitd is the daemon (pkexec is not
# needed); libpam-systemd gives `ops` a logind session; cloud-init reads NoCloud.
packages=(
  systemd-sysv udev dbus libpam-systemd polkitd
  cloud-init sudo kmod "linux-image-cloud-$arch" initramfs-tools zstd
  e2fsprogs cryptsetup-bin mdadm jq openssl procps util-linux
  openssh-client # ssh-keygen: cloud-init makes host keys, and says "Failed generating key" without it
  libcryptsetup12 libblkid1 ca-certificates
  prometheus-node-exporter curl
  containerd busybox-static # the container-node test: Debian's runtime (ctr), a static binary for its image
  clevis clevis-tpm2 iproute2 # the unlock test: clevis and its tpm2 pin, `ip` for its one NIC
)
# EPHEMERA_IMAGE_NO_CLEVIS=1: an image without clevis (the kms node: its pins
# are ephemera's own), and so a folder of its own (the list is in the hash).
if [[ ${EPHEMERA_IMAGE_NO_CLEVIS:-0} == 1 ]]; then
  mapfile -t packages < <(printf '%s\n' "${packages[@]}" | grep -Evx 'clevis|clevis-tpm2')
fi
# The root file system, fixed so the kernel command line can name it.
ROOT_PARTUUID=6f0e5b1a-3c1d-4e55-9a7e-0e9e0e9e0001
IMG_SIZE=3G

# Host packages (mmdebstrap, QEMU, mtools...): scripts/host-tools.sh, one apt
# transaction and a check of every tool afterwards.
if [[ $arch == arm64 ]]; then "$repo/scripts/host-tools.sh" system system-arm64; else "$repo/scripts/host-tools.sh" system; fi

# The .deb by what it installs (file names, modes, contents, control files),
# not by its bytes: the archive carries mtimes, and a package rebuilt with the
# same files must not cost a new image (the arm64 one takes many minutes).
deb_contents() {
  local d
  d=$(mktemp -d)
  dpkg-deb -R "$deb" "$d"
  # Its documentation (the README) is left out, with the Installed-Size it
  # moves: an image made with another README behaves the same, and a README
  # edit must not cost a new arm64 image.
  sed -i '/^Installed-Size:/d' "$d/DEBIAN/control"
  (cd "$d" && find . -type f ! -path './usr/share/doc/*' -print0 | sort -z | xargs -0 sha256sum &&
    find . ! -path './usr/share/doc/*' -printf '%p %m %l\n' | sort)
  rm -rf "$d"
}

key=$( {
  echo "$name"
  printf '%s\n' "${packages[@]}"
  sha256sum <"$script"
  [[ $arch == amd64 ]] || sha256sum <"$repo/tests/system/arm64-stage2.sh"
  sha256sum <"$install_sh"
  deb_contents | sha256sum
} | sha256sum | cut -c1-16)
out=$cache/$name-$key
mkdir -p "$cache"

exec 9>"$cache/$name.lock"
flock 9
# Keeps the two most recently used images of this SUITE (and arch), this one
# among them: the others were built for inputs no longer in use.
prune() {
  local old n=0
  touch "$out/ok"
  # shellcheck disable=SC2012 # names are ours: SUITE[-arm64]-<16 hex digits>
  for old in $(ls -1dt "$cache/$name"-*/ok 2>/dev/null); do
    old=${old%/ok}
    [[ $old =~ ^$cache/$name-[0-9a-f]{16}$ ]] || continue
    n=$((n + 1))
    ((n <= 2)) || rm -rf "$old"
  done
}
if [[ -f $out/ok ]]; then
  prune
  echo "$out"
  exit 0
fi

start=$SECONDS
rm -rf "$out" "$out.tmp"
mkdir -p "$out.tmp"
tree=$out.tmp/tree

cloudcfg=$out.tmp/99-ephemera-test.cfg
cat >"$cloudcfg" <<'EOF'
# ephemera system tests: NoCloud seed only (a CIDATA volume), no network to wait for.
datasource_list: [ NoCloud, None ]
network: {config: disabled}
# The image has no locales package (minbase): cloud-init's locale module
# would fail to make en_US.UTF-8 and print a red FAILED cloud-config.service
# on the console, a failure that is not ephemera's. The image stays in C.
locale: "false"
EOF
fstab=$out.tmp/fstab
echo "PARTUUID=$ROOT_PARTUUID / ext4 defaults,errors=remount-ro 0 1" >"$fstab"

include=$(
  IFS=,
  echo "${packages[*]}"
)
if [[ $arch == arm64 ]]; then
  # arm64_tree, arm64_stage2: the arm64 image (see EPHEMERA_VM_ARCH above).
  # shellcheck source=tests/system/arm64-stage2.sh
  . "$repo/tests/system/arm64-stage2.sh"
  arm64_tree
else
log "mmdebstrap $suite (${#packages[@]} extra packages)"
# The customize hooks run in the finished tree before mmdebstrap cleans the apt
# lists, so install.sh's apt-get can resolve the .deb's dependencies.
mmdebstrap --mode=root --variant=minbase --include="$include" \
  --aptopt='Acquire::Retries "3"' \
  --customize-hook="copy-in $deb /tmp" \
  --customize-hook="copy-in $install_sh /tmp" \
  --customize-hook="chroot \"\$1\" bash /tmp/$(basename "$install_sh") /tmp/$(basename "$deb")" \
  --customize-hook="rm -f \"\$1/tmp/$(basename "$deb")\" \"\$1/tmp/$(basename "$install_sh")\"" \
  --customize-hook="upload $cloudcfg /etc/cloud/cloud.cfg.d/99-ephemera-test.cfg" \
  --customize-hook="upload $fstab /etc/fstab" \
  --customize-hook='chroot "$1" useradd -m -s /bin/bash -G sudo ops' \
  --customize-hook='echo ephemera-test >"$1/etc/hostname"' \
  --customize-hook='chroot "$1" systemctl mask serial-getty@ttyS0.service' \
  --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" systemd cloud-init polkitd ephemera linux-image-cloud-amd64 >"$1/root/versions"' \
  "$suite" "$tree" "$mirror" >&2

# The kernel and initrd the image installed, for direct kernel boot.
vmlinuz=$(find "$tree/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$tree/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
[[ -n $vmlinuz && -n $initrd ]] || die "no vmlinuz/initrd.img in the image's /boot"
cp "$vmlinuz" "$out.tmp/vmlinuz"
cp "$initrd" "$out.tmp/initrd.img"
{
  echo "suite $suite"
  echo "kernel ${vmlinuz##*/vmlinuz-}"
  cat "$tree/root/versions"
} >"$out.tmp/info"
fi

# GPT with one partition from 1 MiB to the end; ext4 written at that offset
# straight from the tree (mke2fs -d), no loop device, no mount.
img=$out.tmp/disk.img
rm -f "$img"
truncate -s "$IMG_SIZE" "$img"
sfdisk --quiet "$img" <<EOF
label: gpt
start=2048, type=0FC63DAF-8483-4772-8E3D-7D69D8477DE4, uuid=$ROOT_PARTUUID, name=root
EOF
sectors=$(sfdisk --json "$img" | jq '.partitiontable.partitions[0].size')
mke2fs -q -t ext4 -L ephroot -E nodiscard,offset=$((2048 * 512)) -d "$tree" "$img" $((sectors / 2))k
rm -rf "$tree"
echo "root_partuuid $ROOT_PARTUUID" >>"$out.tmp/info"
echo "root_fs_uuid $(blkid -p -O $((2048 * 512)) -s UUID -o value "$img")" >>"$out.tmp/info"
echo "console=$console root=PARTUUID=$ROOT_PARTUUID rw" >"$out.tmp/cmdline"
[[ $arch == amd64 ]] || arm64_stage2

touch "$out.tmp/ok"
mv "$out.tmp" "$out"
prune
log "built $out in $((SECONDS - start))s: $(tr '\n' ' ' <"$out/info")"
echo "$out"
