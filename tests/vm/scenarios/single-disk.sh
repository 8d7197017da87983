# One disk, no escrow: LUKS goes on the disk itself, no array. ext4, then
# (after ephemera's teardown: refused unasked, then by LUKS UUID, then
# --yes) xfs, in the same boot.
. /scenario/lib.sh
d=$(dev_of EPH-SOLO) || exit 1
# plan is a dry run of provision: a cipher the kernel lacks is refused
# before the disks (exit 2, JSON naming luks.cipher), as provision would;
# `check` finds it missing in the kernel's lists, loading nothing.
{ cat /scenario/ext4.toml; printf '[luks]\ncipher = "rot13-ecb"\n'; } >/tmp/rot13.toml
out=$(ephemera plan --config /tmp/rot13.toml --json 2>/tmp/eph.err); rc=$?
echo "$out"; cat /tmp/eph.err
check_eq "plan, a cipher the kernel lacks: exit 2" "$rc" 2
check "plan --json says why" sh -c "echo '$out' | jq -e '.action == \"refuse\" and .exit_code == 2 and (.reason | contains(\"luks.cipher\"))'"
run_ephemera check --config /tmp/rot13.toml
check_eq "check, a cipher the kernel lacks: exit 2" "$rc" 2
check "check names luks.cipher" grep -q "config luks.cipher: the kernel has no ecb(rot13)" /tmp/eph.err
out=$(ephemera check --config /scenario/ext4.toml 2>/tmp/eph.err); rc=$?
echo "$out"; cat /tmp/eph.err
check_eq "check, the default cipher: exit 0" "$rc" 0
check "check found it in the kernel's lists" sh -c "echo '$out' | grep -q 'luks.cipher: the kernel has xts(twofish)'"
check "nothing made by plan or check" nothing_left
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
  uuid=$(cryptsetup luksUUID "$d")
  head_sha=$(dd if="$d" bs=1M count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
  # Asked for nothing, teardown refuses (exit 2), naming what it would
  # erase, and erases nothing; a LUKS UUID that is not here: exit 3.
  run_ephemera teardown --config $cfg
  check_eq "$fs: teardown without --yes exits 2" "$rc" 2
  check "$fs: it names the volume and its disk" grep -qF "LUKS UUID $uuid on $d (" /tmp/eph.err
  check "$fs: it says how to go ahead" grep -qF -e "--yes" /tmp/eph.err
  run_ephemera teardown --config $cfg --luks-uuid 00000000-0000-4000-8000-000000000000
  check_eq "$fs: teardown of another LUKS UUID exits 3" "$rc" 3
  check "$fs: still open" test -e /dev/mapper/ephemera
  check_eq "$fs: the header untouched" "$(dd if="$d" bs=1M count=16 2>/dev/null | sha256sum | cut -d' ' -f1)" "$head_sha"
  if [ "$fs" = ext4 ]; then
    run_ephemera teardown --config $cfg --luks-uuid "$uuid"
  else
    run_ephemera teardown --config $cfg --yes
  fi
  check_eq "$fs: teardown exits 0" "$rc" 0
  check "$fs: nothing left" nothing_left
  check "$fs: no signature left on the disk" sh -c "blkid -p $d; test \$? -eq 2"
done
finish
