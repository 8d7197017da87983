# Key-leak scan, guest side (tests/faults.rs does the search on the host):
# provision with escrow and [unlock] tpm2 while sampling every process's cmdline and environ,
# then dump /run, /tmp, /var and dmesg to the console for the host to search
# for the volume key. Also: the process is not dumpable (no core file on
# SIGSEGV, while a control process does leave one), the dm table shows a
# keyring reference, and the envelope file is 0400.
. /scenario/lib.sh
a=$(dev_of EPH-A) && b=$(dev_of EPH-B) || exit 1
# The config binds to the TPM too ([unlock] tpm2, a swtpm): wait for it, 10 s.
i=0
while [ ! -c /dev/tpmrm0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
esc=/var/lib/ephemera/escrow.json

# Every process's cmdline and environ, sampled until told to stop.
(
  while [ ! -e /tmp/stop-sampler ]; do
    for p in /proc/[0-9]*; do
      cat "$p/cmdline" "$p/environ" 2>/dev/null
      echo
    done >>/run/procsnap
  done
) &
sampler=$!

# Not dumpable: SIGABRT mid-run leaves no core file; a control process does.
# (Not SIGSEGV: Rust's runtime catches a SIGSEGV sent by kill(2) and goes on.)
mkdir -p /tmp/cores
echo '/tmp/cores/core.%e.%p' >/proc/sys/kernel/core_pattern
ulimit -c unlimited
sleep 60 &
ctl=$!
sleep 1
kill -ABRT $ctl
wait $ctl 2>/dev/null
ls -l /tmp/cores
check "control: a dumpable process leaves a core file" sh -c 'ls /tmp/cores | grep -q "^core\."'
rm -f /tmp/cores/*
(EPHEMERA_FAILPOINT="after-luks-open=sleep:30000" ephemera provision --config $cfg 2>/tmp/a.err; echo $? >/tmp/a.rc) &
job=$!
i=0
until grep -q "EPHEMERA-FAILPOINT after-luks-open" /tmp/a.err 2>/dev/null || [ $i -ge 900 ]; do sleep 0.1; i=$((i + 1)); done
pid=$(pidof ephemera)
check "ephemera is running with the key in memory" test -n "$pid"
kill -ABRT $pid
wait $job
cat /tmp/a.err
check_eq "SIGABRT ended the run" "$(cat /tmp/a.rc)" 134
check_eq "ephemera leaves no core file" "$(ls /tmp/cores)" ""
ulimit -c 0

# The run that the host scans for: it cleans up the killed run's devices.
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
table=$(dmsetup table --showkeys ephemera)
echo "DM-TABLE $table"
check "dm table shows a keyring reference, not the key" sh -c "echo '$table' | awk '{print \$5}' | grep -q '^:64:logon:cryptsetup:'"
check_eq "escrow file mode 0400" "$(stat -c %a $esc)" 400
check_eq "escrow file owned by root" "$(stat -c %u:%g $esc)" 0:0
echo "LUKS-UUID $(cryptsetup luksUUID /dev/md_ephemera)"
first=$(mdadm --detail /dev/md_ephemera | awk '/active sync/ {print $NF; exit}')
echo "FIRST-MEMBER-SERIAL $(tr -d ' ' <"/sys/block/${first#/dev/}/device/serial")"
echo data >$mnt/data
sync

touch /tmp/stop-sampler
wait $sampler
check "sampler saw ephemera's command line" grep -q "provision" /run/procsnap
dmesg >/tmp/dmesg.txt
echo EPHEMERA-DUMP-BEGIN
tar -c -f - /run /tmp /var 2>/dev/null | gzip | base64
echo EPHEMERA-DUMP-END
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
finish
