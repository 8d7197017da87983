# One disk, no escrow: LUKS goes on the disk itself, no array.
. /scenario/lib.sh
d=$(dev_of EPH-SOLO) || exit 1
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
check "no md array" test ! -e /dev/md_ephemera
check "LUKS2 on the disk itself" cryptsetup isLuks --type luks2 "$d"
check_eq "dm slave is the disk" "$(ls /sys/block/dm-0/slaves)" "${d#/dev/}"
check "mounted" sh -c "grep -q ' $mnt ext4 ' /proc/mounts"
check "no escrow file without a key" test ! -e /var/lib/ephemera/escrow.json
sb=$(dumpe2fs -h /dev/mapper/ephemera 2>/dev/null)
check "no RAID stride on one disk" sh -c "! echo '$sb' | grep -q 'RAID stride'"
st=$(ephemera status --json)
echo "$st"
check "status: one member, raid null" sh -c "echo '$st' | jq -e '(.members|length)==1 and .raid==null and .members[0].serial==\"EPH-SOLO\" and .members[0].device==\"$d\" and .members[0].size_bytes==$(($(cat /sys/block/${d#/dev/}/size) * 512))'"
echo hello >$mnt/hello && sync
check_eq "writes and reads" "$(cat $mnt/hello)" hello
finish
