# Boot 2 of 2 on the xfs volume of boot 1, the key gone: the README's
# runbook reads the data back; `ephemera recover` mounts the xfs found on
# the volume even with a config that says ext4, and the provision after it
# (what ephemera.service runs on a node) binds the node directory again.
. /scenario/lib.sh
esc=/scenario/escrow.json
want_sha=$(cat /scenario/data.sha256)
mkdir -p /var/lib/ephemera /var/lib/containerd
cp $esc /var/lib/ephemera/escrow.json && chmod 0400 /var/lib/ephemera/escrow.json

run_ephemera provision --config $cfg
check_eq "provision keeps the readable volume: exit 5" "$rc" 5

# busybox's mount (the guest's) tries only the types in /proc/filesystems;
# util-linux's, on a node, asks blkid, and the kernel then loads xfs itself.
modprobe xfs
mkdir -p /root/ops && cp $esc /scenario/escrow.key.pem /root/ops/
(cd /root/ops && set -e && . /scenario/runbook.sh)
check_eq "runbook exits 0" "$?" 0
check "runbook mounts xfs" sh -c "grep -q ' /mnt/recovered xfs ' /proc/mounts"
check_eq "runbook reads the data back" "$(sha256sum /mnt/recovered/var/lib/containerd/data | cut -d' ' -f1)" "$want_sha"
umount /mnt/recovered; cryptsetup close recovered; mdadm --stop /dev/md/recovered
rm -f /dev/md/recovered

run_ephemera recover --config /scenario/ext4.toml --private-key /scenario/priv.pem
check_eq "recover exits 0" "$rc" 0
check "recover mounts the xfs it finds, config type ext4" sh -c "grep -q ' $mnt xfs ' /proc/mounts"
check_eq "recover reads the data back" "$(sha256sum $mnt/var/lib/containerd/data | cut -d' ' -f1)" "$want_sha"
run_ephemera provision --config $cfg
check_eq "provision after recover exits 0" "$rc" 0
check_eq "the bind is back" "$(findmnt -n -o FSROOT --mountpoint /var/lib/containerd)" /var/lib/containerd
check_eq "the data through the bind" "$(sha256sum /var/lib/containerd/data | cut -d' ' -f1)" "$want_sha"
run_ephemera teardown --config $cfg
check_eq "teardown exits 0" "$rc" 0
check "nothing left" nothing_left
finish
