# Core dumps, guest side (tests/faults.rs scans them on the host): with
# fs.suid_dumpable=2 (what systemd-coredump's sysctl file and apport set),
# provision crashes with SIGABRT at every failpoint. Two core patterns:
# - a file (/tmp/cores/file.%e.%p): no core file may appear (RLIMIT_CORE 0);
# - a pipe to a helper that saves whatever the kernel sends (the kernel
#   ignores RLIMIT_CORE for pipes, as for systemd-coredump and apport): the
#   host searches each core for the volume key, learned from the envelope
#   where the run got as far as writing one.
# A control process with a marker in its memory shows that the cores carry
# memory when a process allows it.
. /scenario/lib.sh
a=$(dev_of EPH-A) && b=$(dev_of EPH-B) || exit 1
esc=/var/lib/ephemera/escrow.json
mkdir -p /tmp/cores /tmp/out
echo 2 >/proc/sys/fs/suid_dumpable
check_eq "fs.suid_dumpable is 2" "$(cat /proc/sys/fs/suid_dumpable)" 2
ulimit -c unlimited
cat >/tmp/save-core <<'EOF'
#!/bin/sh
cat >"/tmp/cores/pipe.$1.core"
EOF
chmod 0755 /tmp/save-core

clean_slate() {
  umount $mnt 2>/dev/null
  cryptsetup close ephemera 2>/dev/null
  mdadm --stop /dev/md_ephemera 2>/dev/null
  nothing_left >/dev/null
  wipefs -q -a "$a" "$b"
  rm -f $esc
}

# 1. A file core pattern: the crash leaves no core file.
echo '/tmp/cores/file.%e.%p' >/proc/sys/kernel/core_pattern
EPHEMERA_FAILPOINT="after-luks-open=abort" ephemera provision --config $cfg 2>/tmp/crash.err
crc=$?
check_eq "file pattern: SIGABRT at after-luks-open" "$crc" 134
check_eq "file pattern: no core file (RLIMIT_CORE 0)" "$(ls /tmp/cores)" ""
clean_slate

# 2. A pipe: the kernel hands every core to the helper.
echo '|/tmp/save-core %p' >/proc/sys/kernel/core_pattern
sh -c 'marker=$(printf "EPH-CORE-CONTROL-%s" 1 2 3); kill -ABRT $$; echo "$marker"'
for i in 1 2 3 4 5 6 7 8 9 10; do ls /tmp/cores | grep -q . && break; sleep 0.2; done
mv /tmp/cores/pipe.*.core /tmp/out/control.core 2>/dev/null
check "control: a dumpable process's core reaches the pipe" test -s /tmp/out/control.core
crashed=0 cores=0
for p in after-lock after-wipe after-md-build after-luks-format after-luks-open after-escrow-write after-mkfs after-mount; do
  EPHEMERA_FAILPOINT="$p=abort" ephemera provision --config $cfg 2>/tmp/crash.err
  crc=$?
  [ "$crc" = 134 ] && [ "$(grep EPHEMERA-FAILPOINT /tmp/crash.err | tail -n 1)" = "EPHEMERA-FAILPOINT $p" ] &&
    crashed=$((crashed + 1))
  for i in 1 2 3 4 5 6 7 8 9 10; do ls /tmp/cores | grep -q . && break; sleep 0.2; done
  if mv /tmp/cores/pipe.*.core "/tmp/out/$p.core" 2>/dev/null; then
    cores=$((cores + 1))
    echo "core at $p: $(wc -c <"/tmp/out/$p.core") bytes"
  fi
  [ -f $esc ] && cp $esc "/tmp/out/$p.escrow.json"
  clean_slate
done
check_eq "every run crashed at its failpoint" "$crashed" 8
echo "CORE-RESULT crashed=$crashed cores=$cores"
echo EPHEMERA-CORES-BEGIN
tar -c -f - -C /tmp/out . | gzip | base64
echo EPHEMERA-CORES-END
finish
