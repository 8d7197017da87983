# shellcheck shell=bash
# The arm64 half of tests/system/build-image.sh (EPHEMERA_VM_ARCH=arm64),
# sourced by it: its variables (suite, mirror, include, deb, install_sh,
# cloudcfg, fstab, tree, out, repo) and log/die are set there.
#
# An x86-64 host cannot run arm64 maintainer scripts without qemu-user
# registered in binfmt_misc, a change to the whole host. Instead:
#   arm64_tree    on the host: debootstrap --foreign unpacks the arm64 packages
#                 (nothing is run), and the files the amd64 hooks upload and the
#                 stage-2 script go into the tree; the disk is then written from
#                 it like the amd64 one (mke2fs -d).
#   arm64_stage2  boots that disk once in qemu-system-aarch64 (TCG, via
#                 run-system.sh) with init=/ephemera-stage2, which runs
#                 debootstrap --second-stage, packer/install.sh and the amd64
#                 hooks' chroot steps, prints the versions and powers off.
#                 The VM wrote a qcow2 overlay; it is committed into disk.img.

arm64_tree() {
  local kdeb kpkg
  log "debootstrap --foreign --arch=arm64 $suite (${#packages[@]} extra packages; unpacked only)"
  # debootstrap resolves dependencies by name only, not through versioned
  # Provides: python3-cryptography needs python3-cffi-backend's
  # python3-cffi-backend-api-*, which mmdebstrap's apt finds and debootstrap does not.
  debootstrap --foreign --arch=arm64 --variant=minbase --include="$include,python3-cffi-backend" \
    "$suite" "$tree" "$mirror" >&2 || die "debootstrap --foreign failed (see $tree/debootstrap/debootstrap.log)"
  # debootstrap leaves /proc a symlink to the host's; the VM mounts its own.
  if [[ -L $tree/proc ]]; then rm "$tree/proc" && mkdir -m 555 "$tree/proc"; fi
  # The kernel is configured in stage 2 too; stage 2 boots its vmlinuz,
  # taken from its .deb (NVMe, ext4 and the PL011 console are built in).
  kdeb=$(find "$tree/var/cache/apt/archives" -name 'linux-image-[0-9]*-cloud-arm64_*_arm64.deb' | sort -V | tail -n 1)
  [[ -n $kdeb ]] || die "no linux-image-*-cloud-arm64 .deb among debootstrap's downloads"
  dpkg-deb --fsys-tarfile "$kdeb" | tar -x -O --wildcards './boot/vmlinuz-*' >"$out.tmp/vmlinuz"
  [[ -s $out.tmp/vmlinuz ]] || die "no boot/vmlinuz-* in $kdeb"
  kpkg=$(dpkg-deb -f "$kdeb" Package)
  {
    echo "suite $suite"
    echo "arch arm64"
    echo "kernel ${kpkg#linux-image-}"
  } >"$out.tmp/info"
  # What the amd64 hooks upload; the hooks' chroot steps run in stage 2.
  install -D -m 644 "$cloudcfg" "$tree/etc/cloud/cloud.cfg.d/99-ephemera-test.cfg"
  install -m 644 "$fstab" "$tree/etc/fstab"
  install -m 644 "$deb" "$tree/tmp/$(basename "$deb")"
  install -m 644 "$install_sh" "$tree/tmp/$(basename "$install_sh")"
  cat >"$tree/ephemera-stage2" <<EOF
#!/bin/sh
# PID 1 of the one arm64 boot that finishes the image (tests/system/arm64-stage2.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
mounts() {
  mountpoint -q /proc || mount -t proc proc /proc
  mountpoint -q /sys || mount -t sysfs sysfs /sys
  mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
}
mounts
exec </dev/null >/dev/ttyAMA0 2>&1
off() { sync; echo o >/proc/sysrq-trigger; sleep 60; }
run() { echo "EPH-STAGE2 \$*"; "\$@" || { echo "EPH-STAGE2-FAILED rc=\$?: \$*"; off; }; }
run /debootstrap/debootstrap --second-stage
mounts # debootstrap unmounts /proc and /sys when it ends
run bash /tmp/$(basename "$install_sh") /tmp/$(basename "$deb")
run useradd -m -s /bin/bash -G sudo ops
echo ephemera-test >/etc/hostname
run systemctl mask serial-getty@ttyAMA0.service
echo EPH-VERSIONS-BEGIN
dpkg-query -W -f='\${Package} \${Version}\n' systemd cloud-init polkitd ephemera linux-image-cloud-arm64
echo EPH-VERSIONS-END
apt-get clean
rm -f /etc/resolv.conf /tmp/$(basename "$install_sh") /tmp/$(basename "$deb") /ephemera-stage2
sync
mount -o remount,ro /
echo EPH-STAGE2-OK
off
EOF
  chmod 755 "$tree/ephemera-stage2"
}

arm64_stage2() {
  local slog=$out.tmp/stage2.log t=$SECONDS rc=0
  log "arm64 VM: debootstrap --second-stage and packer/install.sh (console: $slog)"
  EPHEMERA_VM_ARCH=arm64 EPHEMERA_SYSTEM_APPEND="init=/ephemera-stage2" \
    EPHEMERA_SYSTEM_SMP=${EPHEMERA_SYSTEM_SMP:-2} \
    "$repo/tests/system/run-system.sh" --image "$out.tmp" --root "$out.tmp/stage2.qcow2" \
    --log "$slog" --timeout 3600 --mem 2048 || rc=$?
  if ((rc != 0)) || ! tr -d '\r' <"$slog" | grep -qx EPH-STAGE2-OK; then
    tr -d '\r' <"$slog" | grep -v '^EPH-STAGE2 ' | tail -n 40 >&2
    die "the arm64 stage 2 did not finish (run-system.sh rc=$rc; console: $slog)"
  fi
  qemu-img commit -q "$out.tmp/stage2.qcow2"
  rm -f "$out.tmp/stage2.qcow2"
  tr -d '\r' <"$slog" | sed -n '/^EPH-VERSIONS-BEGIN$/,/^EPH-VERSIONS-END$/p' | grep -v '^EPH-' >>"$out.tmp/info"
  grep -q '^ephemera ' "$out.tmp/info" || die "ephemera is not installed in the arm64 image (console: $slog)"
  log "arm64 stage 2 took $((SECONDS - t))s"
}
