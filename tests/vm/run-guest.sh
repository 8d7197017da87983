#!/usr/bin/env bash
# Boot one test VM (QEMU, TCG) on the guest that build-guest.sh made, run a
# scenario in it and exit with the scenario's exit code.
#
# usage: run-guest.sh --scenario DIR --disk IMG:SERIAL [--disk IMG:SERIAL ...]
#                     [--log FILE] [--timeout SECS] [--mem MB] [--monitor SOCKET] [--show]
#   --scenario DIR   packed into the initramfs as /scenario; DIR/run.sh is run by sh
#   --disk IMG:SERIAL  existing raw image, one emulated NVMe controller each, in order
#                    (the guest usually names them nvme0n1, nvme1n1, ...: match by serial)
#   --faulty-disk IMG:SERIAL  like --disk, after all --disk ones, but every write
#                    to it fails with EIO (QEMU blkdebug); reads work
#   --log FILE       serial console log (default: a temp file, kept only on failure)
#   --timeout SECS   bound on the whole run (default 600); exit 124 when hit
#   --mem MB         guest memory (default 1024)
#   --monitor SOCKET QEMU HMP monitor on a unix socket (system_powerdown, device_del
#                    nvmeN: the Nth --disk's controller has id nvmeN, from nvme0)
#   --show           also copy the serial console to stdout as it comes
#   --guestfwd ADDR:PORT=HOSTPORT  a NIC (virtio-net, QEMU user networking with
#                    restrict=on): the guest reaches ADDR:PORT, forwarded by socat to
#                    127.0.0.1:HOSTPORT, and nothing else; repeatable
#   --tpm DIR        a TPM 2.0 (swtpm, its state in DIR: tests/vm/swtpm.sh), and
#                    tpm2-tools in the initramfs
#   --clevis         clevis (its sss and tpm2 pins), jose and bash in the initramfs
# exit: the scenario's exit code (EPHEMERA-VM-EXIT marker), 124 on timeout,
#       125 when the guest died without the marker (panic, crash), 2 on usage errors.
# env:  EPHEMERA_VM_ARCH and EPHEMERA_VM_CACHE (as build-guest.sh; arm64 boots
#       qemu-system-aarch64 -machine virt), EPHEMERA_VM_CPU (default max),
#       EPHEMERA_VM_SMP (default 1), EPHEMERA_VM_APPEND (extra kernel arguments).
set -euo pipefail

export LC_ALL=C
script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/../.." && pwd)
arch=${EPHEMERA_VM_ARCH:-amd64}
case $arch in
  # -cpu max with pauth-impdef: the ARMv8 crypto extensions (aes-xts as on
  # Graviton), and a pointer authentication that TCG computes quickly.
  # no_timer_check: under TCG on a loaded host the x86 kernel's check that
  # the timer reaches the IO-APIC can time out and panic the boot ("IO-APIC +
  # timer doesn't work"); the check proves nothing about emulated hardware.
  amd64) cache=${EPHEMERA_VM_CACHE:-$repo/target/vm} qemu_bin=qemu-system-x86_64
    machine=() cpu=${EPHEMERA_VM_CPU:-max} console=ttyS0 karch=no_timer_check ;;
  arm64) cache=${EPHEMERA_VM_CACHE:-$repo/target/vm-arm64} qemu_bin=qemu-system-aarch64
    machine=(-machine virt) cpu=${EPHEMERA_VM_CPU:-max,pauth-impdef=on} console=ttyAMA0 karch= ;;
  *) echo "run-guest: EPHEMERA_VM_ARCH must be amd64 or arm64, not $arch" >&2; exit 2 ;;
esac

usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$script" >&2
  exit 2
}
die() { echo "run-guest: $*" >&2; exit 2; }

scenario='' log='' timeout=600 mem=1024 monitor='' show='' tpm='' clevis=''
disks=() faulty=() fwds=()
while (($#)); do
  case $1 in
    --scenario) scenario=${2:?}; shift 2 ;;
    --disk) disks+=("${2:?}"); shift 2 ;;
    --faulty-disk) faulty+=("${2:?}"); shift 2 ;;
    --log) log=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --monitor) monitor=${2:?}; shift 2 ;;
    --show) show=1; shift ;;
    --tpm) tpm=${2:?}; shift 2 ;;
    --clevis) clevis=1; shift ;;
    --guestfwd) fwds+=("${2:?}"); shift 2 ;;
    -h | --help) usage ;;
    *) echo "run-guest: unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n $scenario ]] || usage
[[ -f $scenario/run.sh ]] || die "$scenario/run.sh not found"
[[ $timeout =~ ^[0-9]+$ && $mem =~ ^[0-9]+$ ]] || die "--timeout and --mem take numbers"
[[ -f $cache/vmlinuz && -f $cache/base.cpio.gz ]] || die "no guest in $cache: run tests/vm/build-guest.sh"
command -v "$qemu_bin" >/dev/null || die "$qemu_bin missing: run tests/vm/build-guest.sh (installs it)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ephemera-vm.XXXXXX")
keep_log='' qpid='' tpmpid=''
if [[ -z $log ]]; then
  log=$tmp/serial.log
fi
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  # On an interrupt, stop QEMU too (timeout forwards the signal to it).
  [[ -z $qpid ]] || kill "$qpid" 2>/dev/null || true
  [[ -z $tpmpid ]] || kill "$tpmpid" 2>/dev/null || true
  if [[ -n $keep_log && $log == "$tmp/serial.log" ]]; then
    cp "$log" "$tmp.log" && echo "run-guest: serial log kept in $tmp.log" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Scenario archive: DIR's contents under /scenario. Linux unpacks concatenated
# gzip'd cpio archives in order, so base + ephemera (if built) + scenario is one initramfs.
mkdir -p "$tmp/scen/scenario"
cp -a "$scenario/." "$tmp/scen/scenario/"
(cd "$tmp/scen" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 >"$tmp/scenario.cpio.gz"
initrds=("$cache/base.cpio.gz")
[[ -f $cache/ephemera.cpio.gz ]] && initrds+=("$cache/ephemera.cpio.gz")
if [[ -n $tpm ]]; then
  [[ -f $cache/tpm2.cpio.gz ]] || die "no tpm2 archive in $cache: run tests/vm/build-guest.sh"
  initrds+=("$cache/tpm2.cpio.gz")
fi
if [[ -n $clevis ]]; then
  [[ -f $cache/clevis.cpio.gz ]] || die "no clevis archive in $cache: run tests/vm/build-guest.sh"
  initrds+=("$cache/clevis.cpio.gz")
fi
cat "${initrds[@]}" "$tmp/scenario.cpio.gz" >"$tmp/initrd"

# maxcpus of at least 2, even for one vCPU: with maxcpus=1 TCG translates the
# guest's memory barriers to nothing (no other vCPU could see the difference),
# but QEMU's NVMe model reads the driver's shadow doorbells from its own host
# thread. Linux orders "write the doorbell, read the event index" with mb();
# without it a submission can be missed, and that queue then waits for good
# (I/O timeouts, aborts and resets in the guest; one CI boot hung so).
smp=${EPHEMERA_VM_SMP:-1}
[[ $smp =~ ^[1-9][0-9]*$ ]] || die "EPHEMERA_VM_SMP takes a number of vCPUs, not $smp"
# -nodefaults: no NIC, VGA, floppy or CD-ROM to emulate; only what we add.
# cache=writeback: guest flushes reach the host file; after the guest's sync and
# QEMU's exit the data is in the image. discard=unmap keeps sparse images sparse.
qemu=("$qemu_bin" "${machine[@]}" -nodefaults -no-user-config -display none -no-reboot
  -accel tcg -cpu "$cpu" -smp "$smp,maxcpus=$((smp > 2 ? smp : 2))" -m "$mem"
  -kernel "$cache/vmlinuz" -initrd "$tmp/initrd"
  -append "console=$console $karch panic=-1 rdinit=/init loglevel=5 ${EPHEMERA_VM_APPEND:-}"
  -serial "file:$log")
n=0
for disk in "${disks[@]}"; do
  img=${disk%:*} serial=${disk##*:}
  [[ $disk == *:* && -n $serial ]] || die "--disk takes IMG:SERIAL, got $disk"
  [[ -f $img ]] || die "disk image not found: $img"
  # QEMU option values escape commas by doubling them.
  qemu+=(-drive "file=${img//,/,,},if=none,id=n$n,format=raw,cache=writeback,discard=unmap"
    -device "nvme,id=nvme$n,drive=n$n,serial=$serial")
  n=$((n + 1))
done
for disk in "${faulty[@]}"; do
  img=${disk%:*} serial=${disk##*:}
  [[ $disk == *:* && -n $serial ]] || die "--faulty-disk takes IMG:SERIAL, got $disk"
  [[ -f $img && $img != *[\"\\]* ]] || die "disk image not found or unusable: $img"
  qemu+=(-blockdev "{\"driver\":\"raw\",\"node-name\":\"n$n\",\"file\":{\"driver\":\"blkdebug\",\"inject-error\":[{\"event\":\"pwritev\",\"iotype\":\"write\",\"errno\":5,\"once\":false}],\"image\":{\"driver\":\"file\",\"filename\":\"$img\",\"cache\":{\"direct\":false}}}}"
    -device "nvme,id=nvme$n,drive=n$n,serial=$serial")
  n=$((n + 1))
done
[[ -z $monitor ]] || qemu+=(-monitor "unix:$monitor,server=on,wait=off")
if ((${#fwds[@]})); then
  command -v socat >/dev/null || die "socat missing: run scripts/host-tools.sh vm"
  nic=user,restrict=on,model=virtio-net-pci
  for f in "${fwds[@]}"; do
    [[ $f =~ ^([0-9.]+):([0-9]+)=([0-9]+)$ ]] || die "--guestfwd takes ADDR:PORT=HOSTPORT, got $f"
    nic+=",guestfwd=tcp:${BASH_REMATCH[1]}:${BASH_REMATCH[2]}-cmd:socat - TCP:127.0.0.1:${BASH_REMATCH[3]}"
  done
  qemu+=(-nic "$nic")
fi
if [[ -n $tpm ]]; then
  # shellcheck source=tests/vm/swtpm.sh
  . "$repo/tests/vm/swtpm.sh"
  start_swtpm "$tpm" "$tmp" || exit 2
fi

: >"$log"
start=$SECONDS
# timeout sends SIGTERM (QEMU exits cleanly), then SIGKILL 10 s later if needed.
timeout -k 10 "$timeout" "${qemu[@]}" </dev/null >"$tmp/qemu.out" 2>&1 &
qpid=$!
tailpid=
if [[ -n $show ]]; then
  tail -n +1 -f --pid="$qpid" "$log" &
  tailpid=$!
fi
qrc=0
wait "$qpid" || qrc=$?
qpid=
[[ -z $tailpid ]] || wait "$tailpid" || true

if ((qrc == 124)); then
  keep_log=1
  echo "run-guest: timeout after ${timeout}s, QEMU killed; last lines of the serial log:" >&2
  tail -n 30 "$log" >&2
  exit 124
fi
if ((qrc != 0)); then
  echo "run-guest: qemu exited with $qrc:" >&2
  cat "$tmp/qemu.out" >&2
fi
rc=$(tr -d '\r' <"$log" | sed -n 's/.*EPHEMERA-VM-EXIT \([0-9]\{1,3\}\)$/\1/p' | tail -n 1)
if [[ -z $rc ]]; then
  keep_log=1
  echo "run-guest: no EPHEMERA-VM-EXIT marker after $((SECONDS - start))s (guest crashed?); last lines of the serial log:" >&2
  tail -n 30 "$log" >&2
  exit 125
fi
echo "run-guest: scenario exit $rc after $((SECONDS - start))s" >&2
exit "$rc"
