# Disks that are not ephemera's to write. EPH-FREE1 and EPH-FREE2 are blank,
# EPH-MOUNTED holds ext4 and is mounted (in use), EPH-FOREIGN holds ext4 and
# is not mounted. The host compares image hashes before and after.
. /scenario/lib.sh
f1=$(dev_of EPH-FREE1) && f2=$(dev_of EPH-FREE2) && m=$(dev_of EPH-MOUNTED) && x=$(dev_of EPH-FOREIGN) || exit 1
mkdir -p /mnt/inuse && mount -o ro,noload "$m" /mnt/inuse
before="$(dev_sha "$f1") $(dev_sha "$f2")"

# Bad input: exit 2, one line naming the input, nothing made.
for bad in chunk cipher; do
  run_ephemera provision --config /scenario/bad-$bad.toml
  check_eq "bad $bad: exit 2" "$rc" 2
  check_eq "bad $bad: one line" "$(wc -l </tmp/eph.err)" 1
  cp /tmp/eph.err /tmp/eph.err.$bad
done
check "bad chunk: names the key" grep -q "raid.chunk_kib" /tmp/eph.err.chunk
check "bad cipher: the kernel's answer" grep -q "luks.cipher: the kernel has no xts(nosuchcipher)" /tmp/eph.err.cipher
check "bad input: no array made" test ! -e /dev/md_ephemera

# A foreign signature stops the whole run, and names the disk.
run_ephemera provision --config $cfg
check_eq "foreign signature: exit 3" "$rc" 3
check "names the foreign disk and what it holds" grep -q "$x holds ext4" /tmp/eph.err
check "warns about the mounted disk" grep -q "skipping $m: it is mounted at /mnt/inuse" /tmp/eph.err
check "refusal: no array made" test ! -e /dev/md_ephemera
check "refusal: nothing mapped" test ! -e /dev/mapper/ephemera
check_eq "refusal: free disks unchanged" "$(dev_sha "$f1") $(dev_sha "$f2")" "$before"

# With the foreign disk in use too, the two free disks are provisioned
# and both other disks are left alone.
mkdir -p /mnt/foreign && mount -o ro,noload "$x" /mnt/foreign
run_ephemera provision --config $cfg
check_eq "in-use disks skipped: exit 0" "$rc" 0
got=$(mdadm --detail /dev/md_ephemera | awk '/active sync/ {print $NF}' | sort | tr '\n' ' ')
check_eq "array is the two free disks" "$got" "$(printf '%s\n' "$f1" "$f2" | sort | tr '\n' ' ')"
umount /mnt/inuse /mnt/foreign
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
finish
