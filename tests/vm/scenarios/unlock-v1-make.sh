# Makes the version 1 unlock-file fixture (tests/fixtures/unlock-v1/), once,
# with the release that wrote version 1 (main at fb4c572, clevis's sss token):
# one disk, [unlock] tpm2, a file of data; prints the unlock file and the
# data's hash. tests/vm.rs `unlock_file_of_version_1_still_unlocks` boots on
# what this left (the disk image, the swtpm state) with today's ephemera.
. /scenario/lib.sh
modprobe tpm_tis 2>/dev/null
i=0
while [ ! -c /dev/tpmrm0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
uuid=$(cryptsetup luksUUID /dev/nvme0n1)
f=/var/lib/ephemera/escrow.$uuid.unlock.json
check_eq "a version 1 file" "$(jq .version "$f")" 1
echo "fixture data of the version 1 unlock file" >$mnt/data
sync
echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
echo "UNLOCK-FILE $(jq -c . "$f")"
umount $mnt && cryptsetup close ephemera
finish
