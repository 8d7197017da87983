# A crash (SIGKILL) at every step boundary of provision, then a second run in
# the same boot; an injected error at every step boundary (rollback): both
# with ext4 (config.toml), then with xfs (xfs.toml); and concurrent runs (the
# lock), with ext4. EPH-A..C are the candidates, EPH-OTHER holds
# ext4 and is mounted, so ephemera must leave it alone: the host compares its
# image hash. Failpoints: src/failpoint.rs (test builds only).
. /scenario/lib.sh

a=$(dev_of EPH-A) && b=$(dev_of EPH-B) && c=$(dev_of EPH-C) && other=$(dev_of EPH-OTHER) || exit 1
order=$(printf '%s\n' "$a" "$b" "$c" | sort -V | tr '\n' ' ')
mkdir -p /mnt/other && mount -o ro,noload "$other" /mnt/other
esc=/var/lib/ephemera/escrow.json

count() { ls /sys/block | grep -c "^$1" ; }
# Undo a good volume with the standard tools, as a stop and start would:
# the instance store comes back blank. (After a mere reboot, the volume and
# its envelope would be kept, which next-boot.sh covers.)
undo() {
  umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera && wipefs -q -a $a $b $c
}
# The volume as a user checks it, with tools other than ephemera. Prints
# what is wrong and returns non-zero if anything is.
volume_ok() {
  local bad=0 detail dump got
  detail=$(mdadm --detail /dev/md_ephemera 2>&1)
  echo "$detail" | grep -q 'Raid Level : raid0' || { echo "not raid0"; bad=1; }
  got=$(echo "$detail" | awk '/active sync/ {print $NF}' | tr '\n' ' ')
  [ "$got" = "$order" ] || { echo "members '$got' want '$order'"; bad=1; }
  [ "$(count md)" = 1 ] || { echo "$(count md) md devices"; bad=1; }
  [ "$(count dm-)" = 1 ] || { echo "$(count dm-) dm devices"; bad=1; }
  [ "$(dmsetup ls | awk '{print $1}')" = ephemera ] || { echo "dm: $(dmsetup ls)"; bad=1; }
  dump=$(cryptsetup luksDump /dev/md_ephemera 2>&1)
  echo "$dump" | grep -Eq '^Label:[[:space:]]+ephemera$' || { echo "no ephemera label"; bad=1; }
  echo "$dump" | sed -n '/^Keyslots:/,/^Tokens:/p' | grep -q ': luks2' && { echo "a keyslot"; bad=1; }
  dmsetup table --showkeys ephemera | awk '{print $5}' | grep -q '^:64:logon:' || { echo "dm key not in keyring"; bad=1; }
  [ "$(blkid -o value -s TYPE /dev/mapper/ephemera)" = "$fs" ] || { echo "no $fs"; bad=1; }
  [ "$(grep -c " $mnt $fs " /proc/mounts)" = 1 ] || { echo "not mounted once at $mnt"; bad=1; }
  [ "$(jq -r .luks_uuid $esc)" = "$(cryptsetup luksUUID /dev/md_ephemera)" ] || { echo "escrow UUID is stale"; bad=1; }
  [ "$(stat -c %a $esc)" = 400 ] || { echo "escrow mode $(stat -c %a $esc)"; bad=1; }
  echo data >$mnt/probe && sync && [ "$(cat $mnt/probe)" = data ] || { echo "cannot write data"; bad=1; }
  grep -q " /mnt/other " /proc/mounts || { echo "EPH-OTHER no longer mounted"; bad=1; }
  return $bad
}

for fs in ext4 xfs; do
  cfg=/scenario/$fs.toml
  # --- 1. SIGKILL at each step boundary, then provision again.
  tried=0 recovered=0
  for p in after-lock after-wipe after-md-build after-luks-format after-luks-open after-escrow-write after-mkfs after-mount; do
    tried=$((tried + 1))
    echo "+ crash at $p"
    EPHEMERA_FAILPOINT="$p=kill" ephemera provision --config $cfg 2>/tmp/crash.err
    crc=$?
    cat /tmp/crash.err
    last=$(grep EPHEMERA-FAILPOINT /tmp/crash.err | tail -n 1)
    run_ephemera provision --config $cfg
    if [ "$crc" = 137 ] && [ "$last" = "EPHEMERA-FAILPOINT $p" ] && [ "$rc" = 0 ] && volume_ok >/tmp/why 2>&1; then
      recovered=$((recovered + 1))
      pass "$fs: killed at $p (exit $crc), the next run recovered"
    else
      fail "$fs: killed at $p: crash exit $crc (last '$last'), next run exit $rc"
      sed 's/^/    /' /tmp/why
    fi
    undo
    check "$fs: after $p: nothing left once undone" nothing_left
  done
  echo "CRASH-RESULT-$fs tried=$tried recovered=$recovered"

  # --- 2. An error at each step boundary: exit 1, everything this run made undone.
  tried=0 clean=0
  for p in after-wipe after-md-build after-luks-format after-luks-open after-escrow-write after-mkfs after-mount; do
    tried=$((tried + 1))
    EPHEMERA_FAILPOINT="$p=error" run_ephemera provision --config $cfg
    sigs=$(for d in $a $b $c; do blkid -p -o value -s TYPE "$d"; done | tr '\n' ' ')
    if [ "$rc" = 1 ] && [ "$(tail -n 1 /tmp/eph.err)" = "ephemera: error: failpoint $p: injected error" ] &&
      ! grep -q 'ERROR rollback' /tmp/eph.err && nothing_left && [ -z "$sigs" ]; then
      clean=$((clean + 1))
      pass "$fs: error at $p: exit 1, rolled back, no device or signature left"
    else
      fail "$fs: error at $p: exit $rc, signatures '$sigs', md $(count md), dm $(count dm-)"
    fi
    # Leave the next case a clean slate even after a failure.
    umount $mnt 2>/dev/null; cryptsetup close ephemera 2>/dev/null; mdadm --stop /dev/md_ephemera 2>/dev/null
  done
  echo "ROLLBACK-RESULT-$fs tried=$tried clean=$clean"
done
fs=ext4 cfg=/scenario/ext4.toml

# --- 3. Concurrent runs.
# a) B starts while A is in the middle (array built): B waits for the lock,
#    then finds the volume mounted. Both exit 0; one volume.
# Each wait below looks for the new run's own line: its err file is removed
# first, so that a line left by an earlier run cannot end the wait early.
rm -f /tmp/a.err /tmp/b.err
(EPHEMERA_FAILPOINT="after-md-build=sleep:4000" ephemera provision --config $cfg 2>/tmp/a.err; echo $? >/tmp/a.rc) &
i=0
until grep -q "EPHEMERA-FAILPOINT after-md-build" /tmp/a.err 2>/dev/null || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
(ephemera provision --config $cfg 2>/tmp/b.err; echo $? >/tmp/b.rc) &
wait
cat /tmp/a.err /tmp/b.err
check_eq "concurrent: first run exits 0" "$(cat /tmp/a.rc)" 0
check_eq "concurrent: second run exits 0" "$(cat /tmp/b.rc)" 0
check "concurrent: second run waited for the lock" grep -q "another ephemera run holds /run/ephemera.lock; waiting for it" /tmp/b.err
check "concurrent: second run found the volume made" grep -q "already mounted" /tmp/b.err
check "concurrent: one volume" volume_ok

# b) B gives up after its lock wait (10 minutes in production, 1 s here): exit 4.
rm -f /tmp/a.err /tmp/b.err
(EPHEMERA_FAILPOINT="after-lock=sleep:15000" ephemera provision --config $cfg 2>/tmp/a.err; echo $? >/tmp/a.rc) &
i=0
until grep -q "EPHEMERA-FAILPOINT after-lock" /tmp/a.err 2>/dev/null || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
EPHEMERA_LOCK_WAIT_MS=1000 run_ephemera provision --config $cfg
wait
check_eq "lock timeout: exit 4" "$rc" 4
check_eq "lock timeout: one line" "$(tail -n 1 /tmp/eph.err)" "ephemera: error: another ephemera run held /run/ephemera.lock for 1 s; giving up"
check_eq "lock timeout: the holder exits 0" "$(cat /tmp/a.rc)" 0
check "lock timeout: one volume" volume_ok
undo

# c) Two runs started together on blank-ish disks: one makes the volume, the other waits.
(ephemera provision --config $cfg 2>/tmp/a.err; echo $? >/tmp/a.rc) &
(ephemera provision --config $cfg 2>/tmp/b.err; echo $? >/tmp/b.rc) &
wait
cat /tmp/a.err /tmp/b.err
check_eq "simultaneous: exit codes" "$(cat /tmp/a.rc) $(cat /tmp/b.rc)" "0 0"
check_eq "simultaneous: one run made it, the other found it" "$(cat /tmp/a.err /tmp/b.err | grep -c 'already mounted')" 1
check "simultaneous: one volume" volume_ok
undo
check "nothing left at the end" nothing_left
umount /mnt/other
finish
