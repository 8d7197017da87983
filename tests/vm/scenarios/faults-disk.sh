# A member that disappears during provisioning, and a member whose writes
# fail (tests/faults.rs). EPH-A..C are candidates, EPH-OTHER holds ext4 and
# is mounted (the host checks its hash). Part 1: the host removes EPH-B's
# controller (QEMU device_del) while ephemera waits after building the array.
# Part 2: EPH-BAD (every write fails with EIO) joins the candidates.
. /scenario/lib.sh
a=$(dev_of EPH-A) && b=$(dev_of EPH-B) && c=$(dev_of EPH-C) && other=$(dev_of EPH-OTHER) || exit 1
mkdir -p /mnt/other && mount -o ro,noload "$other" /mnt/other

# --- 1. EPH-B disappears after the array is built, before LUKS is written.
# The bad disk is hidden (held) for this part.
bad=$(dev_of EPH-BAD) || exit 1
dmsetup create hold-bad --table "0 $(cat /sys/block/${bad#/dev/}/size) linear $bad 0"
echo "+ ephemera provision (EPH-B will be removed)"
(EPHEMERA_FAILPOINT="after-md-build=sleep:20000" ephemera provision --config $cfg; echo $? >/tmp/rc) 2>&1 | tee /tmp/eph.err
check_eq "disk removed: exit 1" "$(cat /tmp/rc)" 1
check_eq "disk removed: one error line" "$(grep -c '^ephemera: error: ' /tmp/eph.err)" 1
if dev_of EPH-B >/dev/null 2>&1; then gone=no; else gone=yes; fi
check_eq "disk removed: EPH-B is gone" "$gone" yes
sed -n 's/^ephemera: error: /ERROR-LINE disk-removed: /p' /tmp/eph.err
check "disk removed: nothing left (array, mapping, mount)" nothing_left hold-
check "disk removed: no LUKS header left on EPH-A" sh -c "! blkid -p $a"
check "disk removed: no LUKS header left on EPH-C" sh -c "! blkid -p $c"
# What is left still provisions (min_disks = 2).
run_ephemera provision --config $cfg
check_eq "disk removed: the next run uses the two left" "$rc" 0
check_eq "disk removed: two members" "$(mdadm --detail /dev/md_ephemera | grep -c 'active sync')" 2
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
wipefs -q -a "$a" "$c"
dmsetup remove hold-bad

# --- 2. EPH-BAD fails every write.
run_ephemera provision --config $cfg
check_eq "write errors: exit 1" "$rc" 1
check_eq "write errors: one error line" "$(grep -c '^ephemera: error: ' /tmp/eph.err)" 1
sed -n 's/^ephemera: error: /ERROR-LINE write-errors: /p' /tmp/eph.err
check "write errors: nothing left (array, mapping, mount)" nothing_left hold-
check "write errors: no LUKS header left on EPH-A" sh -c "! blkid -p $a"
check "write errors: no LUKS header left on EPH-C" sh -c "! blkid -p $c"
check "EPH-OTHER still mounted" grep -q " /mnt/other " /proc/mounts
umount /mnt/other
finish
