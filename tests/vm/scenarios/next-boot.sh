# Boot 2 of 2 on the same three disks (ext4 or xfs, as boot 1), the key
# gone (a reboot). The root disk of a real node keeps /var/lib/ephemera:
# this boot puts boot 1's envelope there first, as it would be.
# 1. provision (on_existing = "keep", the default) leaves the volume and
#    its envelope exactly as they were, and exits 5 saying how to recover
#    or discard it;
# 2. the README's runbook with standard tools reads boot 1's data back;
# 2b. a reordered envelope is refused against the header's geometry;
# 3. `ephemera recover` finds the envelope on the node by itself, and
#    mounts the filesystem it finds even with a config that names the other;
# 4. on_existing = "fail" refuses; discard erases the volume on purpose,
#    and the next provision makes a new one;
# 5. on_existing = "reformat" replaces a readable volume, keeping its
#    envelope copy; then teardown.
. /scenario/lib.sh
esc=/scenario/escrow.json
want_sha=$(cat /scenario/data.sha256)
old_uuid=$(jq -r .luks_uuid $esc)
mkdir -p /var/lib/ephemera
# As boot 1 left them: escrow.json and its copy named by the LUKS UUID.
for f in escrow.json escrow.$old_uuid.json; do
  cp $esc /var/lib/ephemera/$f && chmod 0400 /var/lib/ephemera/$f
done
members=$(for s in $(jq -r '.members[]' $esc); do dev_of "$s"; done | tr '\n' ' ')
disks_sha() { for d in $members; do dev_sha "$d"; done | tr '\n' ' '; }

# --- 1. The volume of the earlier boot is kept.
before=$(disks_sha)
env_before=$(sha256sum /var/lib/ephemera/escrow.json | cut -d' ' -f1)
run_ephemera provision --config $cfg
check_eq "provision keeps a readable volume: exit 5" "$rc" 5
check_eq "not one byte of the disks changed" "$(disks_sha)" "$before"
check_eq "the envelope is unchanged" "$(sha256sum /var/lib/ephemera/escrow.json | cut -d' ' -f1)" "$env_before"
check "nothing open, nothing mounted" nothing_left
check "it names the volume's LUKS UUID" grep -q "LUKS UUID $old_uuid" /tmp/eph.err
check "it names the member holding the header" grep -q "serial $(jq -r '.members[0]' $esc)" /tmp/eph.err
check "it gives the recover command" grep -q "ephemera recover --private-key" /tmp/eph.err
check "it gives the one discard command" grep -q "ephemera discard --luks-uuid $old_uuid" /tmp/eph.err
st=$(ephemera --config $cfg status --json)
check "status: earlier, with its envelope" sh -c "echo '$st' | jq -e '.state == \"earlier\" and .earlier[0].luks_uuid == \"$old_uuid\" and .earlier[0].envelope == \"/var/lib/ephemera/escrow.$old_uuid.json\"'"
run_ephemera provision --config $cfg
check_eq "a second try keeps it too: exit 5" "$rc" 5
check_eq "still not one byte changed" "$(disks_sha)" "$before"

# --- 2. The README's runbook, as the README gives it (the host test
# extracted it), with nothing but jq, base64, openssl, mdadm and cryptsetup.
mkdir -p /root/ops && cp $esc /scenario/escrow.key.pem /root/ops/
# busybox's mount (the guest's) tries only the types in /proc/filesystems;
# util-linux's, on a node, asks blkid, and the kernel then loads xfs itself.
grep -qw "$fs" /proc/filesystems || modprobe "$fs"
# The key file's mode, seen just before the runbook shreds it (an ops user
# on the instance must not read it while recovery runs).
shred() { stat -c %a /run/vk.bin >/tmp/vk.mode; command shred "$@"; }
(umask 022 && cd /root/ops && set -e && . /scenario/runbook.sh)
check_eq "runbook exits 0" "$?" 0
unset -f shred
check_eq "runbook's key file is readable by root only" "$(cat /tmp/vk.mode)" 600
check "runbook opens the volume" test -b /dev/mapper/recovered
check "runbook leaves no key file" test ! -e /run/vk.bin
check_eq "runbook reads the data back" "$(sha256sum /mnt/recovered/data | cut -d' ' -f1)" "$want_sha"
umount /mnt/recovered && cryptsetup close recovered && mdadm --stop /dev/md/recovered
rm -f /dev/md/recovered

# --- 2b. An envelope whose member order was changed (member 0, which holds
# the header, left in place, so the LUKS UUID and the key still match):
# recover refuses before it opens anything, against the geometry the header
# recorded at format (issue 25), and writes nothing.
if [ "$(jq '.members | length' $esc)" -ge 3 ]; then
  jq '.members = [.members[0], .members[2], .members[1]] + .members[3:]' $esc >/tmp/tampered.json
  before=$(disks_sha)
  run_ephemera recover --config $cfg --escrow /tmp/tampered.json --private-key /scenario/priv.pem
  check_eq "recover with a reordered envelope: exit 3" "$rc" 3
  check "it says the header records other members" grep -q "refusing to open a wrongly assembled array" /tmp/eph.err
  check "nothing open, nothing mounted after it" nothing_left
  check_eq "not one byte of the disks changed by it" "$(disks_sha)" "$before"
  check "cryptsetup shows the geometry in the header's token" sh -c "cryptsetup luksDump --dump-json-metadata $(dev_of $(jq -r '.members[0]' $esc)) | jq -e '.tokens[] | select(.type == \"ephemera\") | .members == $(jq -c .members $esc)'"
fi

# --- 3. ephemera's own recovery, finding this node's envelope by itself,
# with a config that names the other filesystem type.
run_ephemera recover --config /scenario/other-fs.toml --private-key /scenario/priv.pem
check_eq "recover exits 0" "$rc" 0
check "recover mounts the $fs it finds, whatever the config says" sh -c "grep -q ' $mnt $fs ' /proc/mounts"
check_eq "recover reads the data back" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$want_sha"
check_eq "status after recover" "$(ephemera status --json | jq -r .state)" provisioned
run_ephemera provision --config $cfg
check_eq "provision after recover: nothing to do" "$rc" 0
check "provision after recover says already mounted" grep -q "already mounted" /tmp/eph.err
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
# Mounting read-write (recover) wrote the file system's own metadata.
before=$(disks_sha)

# --- 4. on_existing = "fail" refuses; discard erases on purpose.
printf 'on_existing = "fail"\n' | cat - $cfg >/tmp/fail.toml
run_ephemera provision --config /tmp/fail.toml
check_eq "on_existing = fail: exit 3" "$rc" 3
check_eq "on_existing = fail: nothing changed" "$(disks_sha)" "$before"
run_ephemera discard --config $cfg --luks-uuid 00000000-0000-0000-0000-000000000000
check_eq "discard of a volume that is not there: exit 3" "$rc" 3
check_eq "... and nothing changed" "$(disks_sha)" "$before"
run_ephemera discard --config $cfg --luks-uuid "$old_uuid"
check_eq "discard exits 0" "$rc" 0
first=$(echo $members | cut -d' ' -f1)
check "discard erased the header" sh -c "blkid -p $first; test \$? -eq 2"
check "discard kept the envelope" test -s /var/lib/ephemera/escrow.json
run_ephemera provision --config $cfg
check_eq "provision after discard exits 0" "$rc" 0
new_uuid=$(cryptsetup luksUUID /dev/md_ephemera)
check_ne "a new LUKS UUID" "$new_uuid" "$old_uuid"
check "mounted again" sh -c "grep -q ' $mnt $fs ' /proc/mounts"
check "old data gone" test ! -e $mnt/data
check_eq "escrow.json names the new volume" "$(jq -r .luks_uuid /var/lib/ephemera/escrow.json)" "$new_uuid"
check "the new volume's envelope copy" test -s /var/lib/ephemera/escrow.$new_uuid.json

# --- 5. on_existing = "reformat" replaces even a readable volume.
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
printf 'on_existing = "reformat"\n' | cat - $cfg >/tmp/reformat.toml
copy_sha=$(sha256sum /var/lib/ephemera/escrow.$new_uuid.json | cut -d' ' -f1)
run_ephemera provision --config /tmp/reformat.toml
check_eq "on_existing = reformat: exit 0" "$rc" 0
check "it says the old volume could still be read" grep -q "could still be read" /tmp/eph.err
third_uuid=$(cryptsetup luksUUID /dev/md_ephemera)
check_ne "on_existing = reformat: another LUKS UUID" "$third_uuid" "$new_uuid"
check_eq "the replaced volume's envelope copy is kept as it was" "$(sha256sum /var/lib/ephemera/escrow.$new_uuid.json | cut -d' ' -f1)" "$copy_sha"

# Teardown: unmount, close, erase the header, stop the array.
run_ephemera teardown --config $cfg --yes
check_eq "teardown exits 0" "$rc" 0
check "mapping gone" test ! -e /dev/mapper/ephemera
check "array gone" test ! -e /dev/md_ephemera
check "not mounted" sh -c "! grep -q ' $mnt ' /proc/mounts"
for d in $members; do
  check "no signature left on $d" sh -c "blkid -p $d; test \$? -eq 2"
done
check_eq "status after teardown" "$(ephemera status --json | jq -r .state)" absent
finish
