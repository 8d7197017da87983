# One disk, no escrow: LUKS goes on the disk itself, no array. ext4, then
# (after ephemera's teardown) xfs, in the same boot.
. /scenario/lib.sh
d=$(dev_of EPH-SOLO) || exit 1
for fs in ext4 xfs; do
  cfg=/scenario/$fs.toml
  run_ephemera provision --config $cfg
  check_eq "$fs: provision exits 0" "$rc" 0
  check "$fs: no md array" test ! -e /dev/md_ephemera
  check "$fs: LUKS2 on the disk itself" cryptsetup isLuks --type luks2 "$d"
  dm=$(grep -l '^ephemera$' /sys/block/dm-*/dm/name | cut -d/ -f4)
  check_eq "$fs: dm slave is the disk" "$(ls /sys/block/$dm/slaves)" "${d#/dev/}"
  check_eq "$fs on the mapping" "$(blkid -o value -s TYPE /dev/mapper/ephemera)" "$fs"
  check "$fs: mounted" sh -c "grep -q ' $mnt $fs ' /proc/mounts"
  check "$fs: no escrow file without a key" test ! -e /var/lib/ephemera/escrow.json
  check_eq "$fs: no stripe on one disk" "$(stripe_of /dev/mapper/ephemera)" "0 0"
  st=$(ephemera status --json)
  echo "$st"
  check "$fs: status: one member, raid null" sh -c "echo '$st' | jq -e '(.members|length)==1 and .raid==null and .members[0].serial==\"EPH-SOLO\" and .members[0].device==\"$d\" and .members[0].size_bytes==$(($(cat /sys/block/${d#/dev/}/size) * 512)) and .mount.fstype==\"$fs\"'"
  echo hello >$mnt/hello && sync
  check_eq "$fs: writes and reads" "$(cat $mnt/hello)" hello
  umount $mnt
  check "$fs clean by its own checker" fs_clean /dev/mapper/ephemera
  run_ephemera teardown --config $cfg
  check_eq "$fs: teardown exits 0" "$rc" 0
  check "$fs: nothing left" nothing_left
  check "$fs: no signature left on the disk" sh -c "blkid -p $d; test \$? -eq 2"
done
finish
