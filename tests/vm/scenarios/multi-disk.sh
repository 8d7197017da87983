# Boot 1 of 2 on three disks, for ext4 or xfs (/scenario/fs): provision
# with escrow, check everything with tools other than ephemera, write data,
# re-run, then shut down cleanly (umount, fsck, close, stop) as a reboot would.
. /scenario/lib.sh

d0=$(dev_of EPH-A) && d1=$(dev_of EPH-B) && d2=$(dev_of EPH-C) || exit 1
# ephemera stripes in kernel-name order.
order=$(printf '%s\n' "$d0" "$d1" "$d2" | sort -V | tr '\n' ' ')

run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
# libcryptsetup's expected note on the 4 KiB keyslots area is no warning.
check "no expected libcryptsetup note in the log" sh -c "! grep -q 'keyslots area (4096 bytes)' /tmp/eph.err"
check "no WARN line in the log" sh -c "! grep -q ' WARN ' /tmp/eph.err"

detail=$(mdadm --detail /dev/md_ephemera)
echo "$detail"
check "array is RAID0" sh -c "echo '$detail' | grep -q 'Raid Level : raid0'"
check "array has 3 devices" sh -c "echo '$detail' | grep -q 'Raid Devices : 3'"
check "array chunk is 256K" sh -c "echo '$detail' | grep -q 'Chunk Size : 256K'"
check_eq "array keeps no superblock" "$(cat /sys/block/md_ephemera/md/metadata_version)" none
got_order=$(echo "$detail" | awk '/active sync/ {print $NF}' | tr '\n' ' ')
check_eq "members in kernel-name order" "$got_order" "$order"
check "no md superblock on a member" sh -c "! mdadm --examine $d1"

dump=$(cryptsetup luksDump /dev/md_ephemera)
echo "$dump"
check "LUKS2 header" sh -c "echo '$dump' | grep -Eq '^Version:[[:space:]]+2$'"
check "cipher twofish-xts-plain64" sh -c "echo '$dump' | grep -q 'cipher: twofish-xts-plain64'"
check "4096-byte sectors" sh -c "echo '$dump' | grep -q 'sector: 4096 \[bytes\]'"
check "token records the key size" sh -c "echo '$dump' | grep -Eq '^[[:space:]]+0: ephemera$'"
check "label marks it as ephemera's" sh -c "echo '$dump' | grep -Eq '^Label:[[:space:]]+ephemera$'"
check "subsystem marks it as ephemera's" sh -c "echo '$dump' | grep -Eq '^Subsystem:[[:space:]]+ephemera$'"
check "no keyslots" sh -c "! echo '$dump' | sed -n '/^Keyslots:/,/^Tokens:/p' | grep -q ': luks2'"

table=$(dmsetup table --showkeys ephemera)
echo "$table"
key_field=$(echo "$table" | awk '{print $5}')
check "dm table shows a keyring reference, not the key" sh -c "echo '$key_field' | grep -q '^:64:logon:'"
check "no_read_workqueue on" sh -c "echo '$table' | grep -q no_read_workqueue"
check "no_write_workqueue on" sh -c "echo '$table' | grep -q no_write_workqueue"
check "discards off" sh -c "! echo '$table' | grep -q allow_discards"

check_eq "$fs on the mapping" "$(blkid -o value -s TYPE /dev/mapper/ephemera)" "$fs"
check_eq "filesystem label" "$(blkid -o value -s LABEL /dev/mapper/ephemera)" ephemeral
check "mounted at $mnt with noatime" sh -c "grep ' $mnt $fs ' /proc/mounts | grep -q noatime"
# 256 KiB chunk over 3 members, in 4 KiB blocks.
check_eq "$fs stripe unit and width" "$(stripe_of /dev/mapper/ephemera)" "64 192"
if [ "$fs" = ext4 ]; then
  sb=$(dumpe2fs -h /dev/mapper/ephemera 2>/dev/null)
  check "no reserved blocks" sh -c "echo '$sb' | grep -q 'Reserved block count: *0$'"
  check "no resize inode, sparse_super2" sh -c "echo '$sb' | grep '^Filesystem features:' | grep -v resize_inode | grep -q sparse_super2"
  check "one backup superblock, in group 1" sh -c "echo '$sb' | grep -q 'Backup block groups: *1 *$'"
  check "flex_bg of 256 groups" sh -c "echo '$sb' | grep -q 'Flex block group size: *256$'"
fi

esc=/var/lib/ephemera/escrow.json
check_eq "escrow file mode 0400" "$(stat -c %a $esc)" 400
uuid=$(cryptsetup luksUUID /dev/md_ephemera)
check_eq "envelope names the LUKS UUID" "$(jq -r .luks_uuid $esc)" "$uuid"
want_serials=$(for d in $order; do tr -d ' \n' <"/sys/block/${d#/dev/}/device/serial"; echo; done | tr '\n' ' ')
check_eq "envelope members in array order" "$(jq -r '.members[]' $esc | tr '\n' ' ')" "$want_serials"
check_eq "envelope raid" "$(jq -c .raid $esc)" '{"level":0,"chunk_kib":256}'
check_eq "envelope version, cipher, key, sector" "$(jq -r '[.version,.cipher,.key_bits,.sector_size,.recipient.alg]|join(" ")' $esc)" "1 twofish-xts-plain64 512 4096 RSA-OAEP-256"
fp="sha256:$(openssl pkey -pubin -in /scenario/escrow.pub.pem -outform DER | sha256sum | cut -d' ' -f1)"
check_eq "envelope fingerprint is openssl's" "$(jq -r .recipient.key_fingerprint $esc)" "$fp"

st=$(ephemera status --json)
echo "$st"
check "status: provisioned, 3 members, chunk, keyslots" sh -c "echo '$st' | jq -e '.state==\"provisioned\" and (.members|length)==3 and .raid.chunk_kib==256 and .raid.device==\"/dev/md_ephemera\" and .luks.keyslots==0 and .luks.key_bits==512 and .luks.sector_size==4096 and .luks.cipher==\"twofish-xts-plain64\" and .mount.path==\"$mnt\" and .mount.fstype==\"$fs\"'"
check_eq "status: LUKS UUID" "$(echo "$st" | jq -r .luks.uuid)" "$uuid"
check_eq "status: member serials in order" "$(echo "$st" | jq -r '.members[].serial' | tr '\n' ' ')" "$want_serials"

dd if=/dev/urandom of=$mnt/data bs=1M count=8 2>/dev/null
sync
sha=$(sha256sum $mnt/data | cut -d' ' -f1)
echo "DATA-SHA256 $sha"

# A second run in the same boot changes nothing.
run_ephemera provision --config $cfg
check_eq "re-run exits 0" "$rc" 0
check "re-run says nothing to do" grep -q "already mounted" /tmp/eph.err
check_eq "re-run keeps the LUKS UUID" "$(cryptsetup luksUUID /dev/md_ephemera)" "$uuid"
check_eq "re-run keeps the data" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$sha"
check "plan says already provisioned" sh -c "ephemera plan --config $cfg | grep -q 'already provisioned'"

check "envelope copy named by the LUKS UUID" cmp $esc /var/lib/ephemera/escrow.$uuid.json
check_eq "envelope copy mode 0400" "$(stat -c %a /var/lib/ephemera/escrow.$uuid.json)" 400

# `umount`, then a re-run: the volume is open and its key is in the kernel,
# so it is mounted again with the same data (closing it would lose them).
dm_before=$(cat /sys/block/dm-0/dev)
umount $mnt
check_eq "status after umount: unmounted" "$(ephemera status --json | jq -r .state)" unmounted
check "plan after umount: mount it again" sh -c "ephemera plan --config $cfg | grep -q 'mount it again'"
run_ephemera provision --config $cfg
check_eq "re-run after umount exits 0" "$rc" 0
check "re-run after umount says it mounts again" grep -q "mounting it again" /tmp/eph.err
check "mounted again at $mnt" sh -c "grep -q ' $mnt $fs ' /proc/mounts"
check_eq "the same mapping, never closed" "$(cat /sys/block/dm-0/dev)" "$dm_before"
check_eq "the same LUKS UUID" "$(cryptsetup luksUUID /dev/md_ephemera)" "$uuid"
check_eq "the same data" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$sha"
check_eq "the envelope is unchanged" "$(jq -r .luks_uuid $esc)" "$uuid"

# The break-glass works whatever the config holds; provision refuses it.
printf 'bogus = 1\n' >/tmp/broken.toml
mkdir -p /run/ephemera && echo on >/run/ephemera/guard
run_ephemera --config /tmp/broken.toml guard release
check_eq "guard release with a broken config exits 0" "$rc" 0
check "guard release removed the marker" test ! -e /run/ephemera/guard
run_ephemera --config /tmp/broken.toml guard off
check_eq "guard off with a broken config exits 0" "$rc" 0
run_ephemera --config /tmp/broken.toml provision
check_eq "provision with a broken config exits 2" "$rc" 2
check "status with a broken config still reports" sh -c "ephemera --config /tmp/broken.toml status --json | jq -e '.state == \"provisioned\"'"

# A clean shutdown: what a reboot does. The key is gone with it.
umount $mnt
check "$fs clean by its own checker" fs_clean /dev/mapper/ephemera
cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
check "clean shutdown" nothing_left
finish
