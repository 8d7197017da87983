#!/usr/bin/env bash
# Boot a full Debian system image (build-image.sh) under QEMU (TCG) the way an
# EC2 instance with instance-store disks boots: the image as an NVMe root disk,
# data disks as more NVMe controllers, cloud-init user-data from a NoCloud seed.
#
# usage: run-system.sh --image DIR --root QCOW2 [--seed DIR] [--disk IMG:SERIAL ...]
#                      [--log FILE] [--monitor SOCKET] [--timeout SECS] [--mem MB]
#                      [--powerdown-on TEXT] [--quit-on TEXT] [--run-on TEXT CMD]
#                      [--tpm DIR] [--tang PORT] [--guestfwd ADDR:PORT=HOSTPORT] [--show]
#   --image DIR        a folder printed by build-image.sh (disk.img, vmlinuz, cmdline); the
#                      kernel boots without an initramfs (the Debian 12 and 13 cloud kernels
#                      have NVMe and ext4 built in; root=PARTUUID= needs no udev), which
#                      saves about 20 s of emulated boot
#   --root QCOW2       the root disk: a qcow2 overlay on DIR/disk.img, created if missing and
#                      reused if present (a second boot on the same root = a reboot)
#   --seed DIR         DIR/user-data and DIR/meta-data, put on a vfat volume labelled
#                      CIDATA (cloud-init's NoCloud), attached as a virtio disk
#                      (without it, no seed: the arm64 image build's stage 2)
#   --disk IMG:SERIAL  a raw image as one more NVMe controller (the instance store)
#   --log FILE         serial console log (appended to; default: a temp file, removed)
#   --monitor SOCKET   QEMU HMP monitor on a unix socket
#   --timeout SECS     bound on the whole run (default 900); exit 124 when hit
#   --powerdown-on TEXT  when TEXT appears in the serial log, press the ACPI power button
#                      (HMP system_powerdown, what an EC2 stop sends) once; QEMU must then
#                      exit within --powerdown-bound SECS (default 300), else exit 5
#   --quit-on TEXT     when TEXT appears in the serial log, stop QEMU (HMP quit)
#   --run-on TEXT CMD  when TEXT appears in the serial log, run CMD (bash -c) on the host
#                      once; the run fails (exit 6) if CMD does
#   --tpm DIR          a TPM 2.0 for the guest: swtpm with its state in DIR (made if
#                      missing; the same DIR on the next boot is the same TPM, a new one
#                      another instance's), tpm-tis on x86-64, tpm-tis-device on arm64
#   --tang PORT        one NIC, QEMU user networking with restrict=on: the guest reaches
#                      nothing but 10.0.2.100:7500, forwarded (guestfwd, one socat per
#                      connection) to 127.0.0.1:PORT on the host, where the test's tang
#                      server listens, or not (tang down: the connection is refused)
#   --guestfwd ADDR:PORT=HOSTPORT  on the same NIC, the guest reaches ADDR:PORT too,
#                      forwarded to 127.0.0.1:HOSTPORT (the kms node: IMDS, KMS); repeatable
#   --show             also copy the serial console to stdout
# The root disk is NVMe serial EBSROOT (controller model "QEMU NVMe Ctrl" like the
# data disks), first on the PCI bus. QEMU runs with -no-reboot: a guest reboot or
# power-off ends this run, and the caller boots again for "the next boot".
# exit: 0 when QEMU exited by itself (guest power-off or reboot), 3 when it was
#       stopped by --quit-on, 5 when the power button did not power off within the
#       bound, 6 when the --run-on command failed, 124 on timeout, 2 on usage
#       errors, else QEMU's status.
# env:  EPHEMERA_SYSTEM_CPU (default max; arm64: max,pauth-impdef=on, the cheap
#       pointer authentication under TCG), EPHEMERA_SYSTEM_SMP (default 1),
#       EPHEMERA_SYSTEM_APPEND (extra kernel arguments), EPHEMERA_VM_ARCH: amd64
#       (default; qemu-system-x86_64 -machine pc) or arm64 (an image built with
#       EPHEMERA_VM_ARCH=arm64: qemu-system-aarch64 -machine virt, no firmware:
#       the kernel boots directly, as on amd64).
set -euo pipefail

export LC_ALL=C
script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/../.." && pwd)

usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$script" >&2
  exit 2
}
die() { echo "run-system: $*" >&2; exit 2; }
say() { echo "run-system: $*" >&2; }

image='' root='' seed='' log='' monitor='' timeout=900 mem=1536 powerdown_on='' powerdown_bound=300 quit_on='' show=''
run_on='' run_cmd='' tpm='' tang=''
fwds=()
disks=()
while (($#)); do
  case $1 in
    --image) image=${2:?}; shift 2 ;;
    --root) root=${2:?}; shift 2 ;;
    --seed) seed=${2:?}; shift 2 ;;
    --disk) disks+=("${2:?}"); shift 2 ;;
    --log) log=${2:?}; shift 2 ;;
    --monitor) monitor=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --powerdown-on) powerdown_on=${2:?}; shift 2 ;;
    --powerdown-bound) powerdown_bound=${2:?}; shift 2 ;;
    --quit-on) quit_on=${2:?}; shift 2 ;;
    --run-on) run_on=${2:?}; run_cmd=${3:?}; shift 3 ;;
    --tpm) tpm=${2:?}; shift 2 ;;
    --tang) tang=${2:?}; shift 2 ;;
    --guestfwd) fwds+=("${2:?}"); shift 2 ;;
    --show) show=1; shift ;;
    -h | --help) usage ;;
    *) echo "run-system: unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n $image && -n $root ]] || usage
case ${EPHEMERA_VM_ARCH:-amd64} in
  # no_timer_check: as in tests/vm/run-guest.sh, the x86 IO-APIC timer check
  # can time out under TCG on a loaded host and panic the boot.
  amd64) qemu_bin=qemu-system-x86_64 machine=pc cpu=${EPHEMERA_SYSTEM_CPU:-max} karch=no_timer_check ;;
  arm64) qemu_bin=qemu-system-aarch64 machine=virt cpu=${EPHEMERA_SYSTEM_CPU:-max,pauth-impdef=on} karch= ;;
  *) die "EPHEMERA_VM_ARCH must be amd64 or arm64, not $EPHEMERA_VM_ARCH" ;;
esac
for f in disk.img vmlinuz cmdline; do
  [[ -f $image/$f ]] || die "$image/$f missing: run tests/system/build-image.sh"
done
[[ -z $seed || (-f $seed/user-data && -f $seed/meta-data) ]] || die "$seed needs user-data and meta-data"
[[ $timeout =~ ^[0-9]+$ && $mem =~ ^[0-9]+$ ]] || die "--timeout and --mem take numbers"
for t in $qemu_bin qemu-img mkfs.vfat mcopy socat; do
  command -v $t >/dev/null || die "$t missing: run tests/system/build-image.sh (installs it)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ephemera-system.XXXXXX")
qpid=''
[[ -n $log ]] || log=$tmp/serial.log
[[ -n $monitor ]] || monitor=$tmp/monitor.sock
# shellcheck disable=SC2317 # called by the EXIT trap
tpmpid=''
cleanup() {
  [[ -z $qpid ]] || kill "$qpid" 2>/dev/null || true
  [[ -z $tpmpid ]] || kill "$tpmpid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ! -f $root ]]; then
  qemu-img create -q -f qcow2 -b "$(readlink -f "$image/disk.img")" -F raw "$root"
fi

# maxcpus of at least 2, even for one vCPU: with maxcpus=1 TCG drops the
# guest's memory barriers, which the NVMe shadow doorbells rely on between
# the guest and QEMU's device thread (see tests/vm/run-guest.sh).
smp=${EPHEMERA_SYSTEM_SMP:-1}
[[ $smp =~ ^[1-9][0-9]*$ ]] || die "EPHEMERA_SYSTEM_SMP takes a number of vCPUs, not $smp"
monarg=$monitor
qemu=("$qemu_bin" -nodefaults -no-user-config -display none -no-reboot
  -machine "$machine" -accel tcg -cpu "$cpu" -smp "$smp,maxcpus=$((smp > 2 ? smp : 2))" -m "$mem"
  -kernel "$image/vmlinuz"
  -append "$(cat "$image/cmdline") $karch panic=-1 ${EPHEMERA_SYSTEM_APPEND:-}"
  -serial "file:$log" -monitor "unix:$monarg,server=on,wait=off"
  -device virtio-rng-pci
  -drive "file=${root//,/,,},if=none,id=root,format=qcow2,cache=writeback,discard=unmap"
  -device "nvme,id=nvmeroot,drive=root,serial=EBSROOT")
if [[ -n $seed ]]; then
  # NoCloud seed: a small vfat volume labelled CIDATA, made without a loop device.
  mkfs.vfat -C -n CIDATA "$tmp/seed.img" 8192 >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/seed.img" "$seed/user-data" "$seed/meta-data" ::
  [[ ! -f $seed/network-config ]] || MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/seed.img" "$seed/network-config" ::
  # A test tool for the guest, if given: the IMDS test server (tests/system.rs).
  [[ ! -f $seed/imds_server ]] || MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/seed.img" "$seed/imds_server" ::
  # The data-service node's upgrade package (tests/system/guest/package.sh).
  [[ ! -f $seed/ephemera_upgrade.deb ]] || MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/seed.img" "$seed/ephemera_upgrade.deb" ::
  # The container-node test's marker: on the seed, never in the user-data (which cloud-init copies to the root disk).
  [[ ! -f $seed/marker ]] || MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/seed.img" "$seed/marker" ::
  qemu+=(-drive "file=$tmp/seed.img,if=none,id=seed,format=raw,readonly=on"
    -device virtio-blk-pci,drive=seed)
fi
if [[ -n $tpm ]]; then
  # shellcheck source=tests/vm/swtpm.sh
  . "$repo/tests/vm/swtpm.sh"
  start_swtpm "$tpm" "$tmp" || exit 2
fi
if [[ -n $tang ]]; then
  [[ $tang =~ ^[0-9]+$ ]] || die "--tang takes a port"
  fwds=("10.0.2.100:7500=$tang" "${fwds[@]}")
fi
if ((${#fwds[@]})); then
  nic=user,restrict=on,model=virtio-net-pci
  for f in "${fwds[@]}"; do
    [[ $f =~ ^([0-9.]+):([0-9]+)=([0-9]+)$ ]] || die "--guestfwd takes ADDR:PORT=HOSTPORT, got $f"
    nic+=",guestfwd=tcp:${BASH_REMATCH[1]}:${BASH_REMATCH[2]}-cmd:socat - TCP:127.0.0.1:${BASH_REMATCH[3]}"
  done
  qemu+=(-nic "$nic")
fi
n=0
for disk in "${disks[@]}"; do
  img=${disk%:*} serial=${disk##*:}
  [[ $disk == *:* && -n $serial ]] || die "--disk takes IMG:SERIAL, got $disk"
  [[ -f $img ]] || die "disk image not found: $img"
  qemu+=(-drive "file=${img//,/,,},if=none,id=n$n,format=raw,cache=writeback,discard=unmap"
    -device "nvme,id=nvme$n,drive=n$n,serial=$serial")
  n=$((n + 1))
done

hmp() { printf '%s\n' "$1" | socat - "UNIX-CONNECT:$monitor" >/dev/null 2>&1; }

touch "$log"
offset=$(stat -c %s "$log") # --log may be shared by several boots: look only at ours
start=$SECONDS
timeout -k 10 "$timeout" "${qemu[@]}" </dev/null >"$tmp/qemu.out" 2>&1 &
qpid=$!
tailpid=''
if [[ -n $show ]]; then
  tail -c +$((offset + 1)) -f --pid="$qpid" "$log" &
  tailpid=$!
fi

# Watch the serial log for the markers while QEMU runs.
pressed='' quit='' stuck='' ran='' runfail=''
ours() { tail -c +$((offset + 1)) "$log" | tr -d '\r'; }
while kill -0 "$qpid" 2>/dev/null; do
  if [[ -n $powerdown_on && -z $pressed ]] && ours | grep -qF -- "$powerdown_on"; then
    pressed=$SECONDS
    say "'$powerdown_on' seen after $((SECONDS - start))s: system_powerdown (ACPI power button)"
    hmp system_powerdown || say "monitor: system_powerdown failed"
  fi
  if [[ -n $pressed && -z $stuck ]] && ((SECONDS - pressed > powerdown_bound)); then
    stuck=1
    say "still running ${powerdown_bound}s after the power button: quit"
    hmp quit || kill "$qpid"
  fi
  if [[ -n $run_on && -z $ran ]] && ours | grep -qF -- "$run_on"; then
    ran=1
    say "'$run_on' seen after $((SECONDS - start))s: running $run_cmd"
    bash -c "$run_cmd" || { runfail=1; say "the --run-on command failed"; }
  fi
  if [[ -n $quit_on && -z $quit ]] && ours | grep -qF -- "$quit_on"; then
    quit=1
    say "'$quit_on' seen after $((SECONDS - start))s: quit"
    hmp quit || kill "$qpid"
  fi
  sleep 1
done
qrc=0
wait "$qpid" || qrc=$?
qpid=''
[[ -z $tailpid ]] || wait "$tailpid" || true

if ((qrc == 124)); then
  say "timeout after ${timeout}s, QEMU killed; last lines of the serial log:"
  ours | tail -n 30 >&2
  exit 124
fi
if ((qrc != 0)); then
  say "qemu exited with $qrc:"
  cat "$tmp/qemu.out" >&2
  exit "$qrc"
fi
if [[ -n $pressed ]]; then
  say "QEMU exited $((SECONDS - pressed))s after the power button, $((SECONDS - start))s after start"
else
  say "QEMU exited after $((SECONDS - start))s"
fi
[[ -z $stuck ]] || exit 5
[[ -z $runfail ]] || exit 6
[[ -z $quit ]] || exit 3
exit 0
