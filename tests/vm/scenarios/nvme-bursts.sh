#!/bin/sh
# The test harness's own guard: the emulated NVMe disks lose no command under
# bursts of queued I/O (tests/vm/run-guest.sh says why they could: TCG drops
# the guest's barriers when maxcpus is 1). For /scenario/seconds, three
# processes per disk write and read 4 MiB with O_DIRECT, which the kernel
# splits into many commands queued at once, and one more writes through the
# page cache and fsyncs. Any "I/O n QID n timeout" in the kernel log is a
# command the emulated controller never saw or never completed.
. /scenario/lib.sh

secs=$(cat /scenario/seconds)
lost='QID [0-9]* timeout' # the kernel's line for a command that timed out
end=$(($(cut -d. -f1 /proc/uptime) + secs))
pids=
for d in /dev/nvme0n1 /dev/nvme1n1; do
  for p in 0 1 2; do
    (while :; do
      dd if=/dev/zero of="$d" bs=1M count=4 seek=$((p * 16)) oflag=direct 2>/dev/null
      dd if="$d" of=/dev/null bs=1M count=4 skip=$((p * 16 + 4)) iflag=direct 2>/dev/null
      echo x
    done) >"/tmp/bursts.$p.${d##*/}" &
    pids="$pids $!"
  done
  (while :; do
    dd if=/dev/zero of="$d" bs=64k count=64 seek=1024 conv=fsync 2>/dev/null
    echo x
  done) >"/tmp/bursts.w.${d##*/}" &
  pids="$pids $!"
done
# A lost command shows once the kernel's I/O timeout (30 s) runs out: stop then.
while [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ] && ! dmesg | grep -q "$lost"; do
  sleep 2
done
# shellcheck disable=SC2086 # one pid per word
kill $pids 2>/dev/null
wait 2>/dev/null
rounds=$(cat /tmp/bursts.* | wc -l)
echo "bursts: $rounds rounds of dd in $secs s"
check "no NVMe command timed out under bursts" sh -c "! dmesg | grep '$lost'"
check "the bursts ran" test "$rounds" -gt 0
finish
