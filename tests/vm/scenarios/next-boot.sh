# Boot 2 of 2 on the same three disks, the key gone: the escrow runbook
# with standard tools, then `ephemera recover`, then a fresh provision
# (on_existing = "reformat"), then teardown.
. /scenario/lib.sh
esc=/scenario/escrow.json
want_sha=$(cat /scenario/data.sha256)

# The README's runbook, as the README gives it (the host test extracted it),
# with nothing but jq, base64, openssl, mdadm and cryptsetup.
mkdir -p /root/ops && cp $esc /scenario/escrow.key.pem /root/ops/
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

# ephemera's own recovery path.
run_ephemera recover --config $cfg --escrow $esc --private-key /scenario/priv.pem
check_eq "recover exits 0" "$rc" 0
check_eq "recover reads the data back" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$want_sha"
check_eq "status after recover" "$(ephemera status --json | jq -r .state)" provisioned
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera

# The next boot: ephemera's old header is found and a new volume made.
old_uuid=$(jq -r .luks_uuid $esc)
run_ephemera provision --config $cfg
check_eq "provision on the next boot exits 0" "$rc" 0
check "it says it reformats" grep -q "making a new one" /tmp/eph.err
new_uuid=$(cryptsetup luksUUID /dev/md_ephemera)
check_ne "new LUKS UUID" "$new_uuid" "$old_uuid"
check "mounted again" sh -c "grep -q ' $mnt ext4 ' /proc/mounts"
check "old data gone" test ! -e $mnt/data
check_eq "new envelope for the new volume" "$(jq -r .luks_uuid /var/lib/ephemera/escrow.json)" "$new_uuid"

# Teardown: unmount, close, erase the header, stop the array.
run_ephemera teardown --config $cfg
check_eq "teardown exits 0" "$rc" 0
check "mapping gone" test ! -e /dev/mapper/ephemera
check "array gone" test ! -e /dev/md_ephemera
check "not mounted" sh -c "! grep -q ' $mnt ' /proc/mounts"
for s in $(jq -r '.members[]' $esc); do
  d=$(dev_of "$s")
  check "no signature left on $d" sh -c "blkid -p $d; test \$? -eq 2"
done
check_eq "status after teardown" "$(ephemera status --json | jq -r .state)" absent
finish
