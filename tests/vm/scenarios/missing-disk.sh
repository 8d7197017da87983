# An escrowed volume whose header's disk is missing at the next boot
# (tests/vm.rs, escrowed_volume_with_its_header_disk_missing_is_kept), in
# three boots on two disks, the phase in /scenario/phase:
# 1. provision with escrow, write data, shut down cleanly (a reboot);
# 2. the disk that holds the LUKS header is absent: provision keeps the
#    volume (exit 5) naming the missing serial, status and plan say so, and
#    nothing is opened or written (the host compares the other disk's hash);
# 3. the disk is back: provision keeps it (exit 5), recover reads the data;
#    then, with a second header on the other disk, two kept volumes, each
#    torn down by its LUKS UUID: the record of a kept volume stays until the
#    last is gone.
# The guest's root is new each boot: boots 2 and 3 put boot 1's envelope
# back where a node's root disk keeps it.
. /scenario/lib.sh
phase=$(cat /scenario/phase)
ed=/var/lib/ephemera

if [ "$phase" = 1 ]; then
  run_ephemera provision --config $cfg
  check_eq "boot 1: provision exits 0" "$rc" 0
  check_eq "boot 1: RAID0 over both disks" "$(mdadm --detail /dev/md_ephemera | grep -c 'active sync')" 2
  uuid=$(cryptsetup luksUUID /dev/md_ephemera)
  check "boot 1: no never-mounted marker once mounted" test ! -e $ed/escrow.$uuid.never-mounted
  dd if=/dev/urandom of=$mnt/data bs=1M count=4 2>/dev/null && sync
  echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
  umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
  check "boot 1: clean shutdown" nothing_left
  finish
  exit
fi

esc=/scenario/escrow.json
uuid=$(jq -r .luks_uuid $esc)
header=$(jq -r '.members[0]' $esc)
other=$(jq -r '.members[1]' $esc)
mkdir -p $ed
for f in escrow.json escrow.$uuid.json; do cp $esc $ed/$f && chmod 0400 $ed/$f; done
o=$(dev_of "$other") || exit 1

if [ "$phase" = 2 ]; then
  if dev_of "$header" >/dev/null 2>&1; then fail "boot 2: the header's disk is absent"; else pass "boot 2: the header's disk is absent"; fi
  before=$(dev_sha $o)
  run_ephemera provision --config $cfg
  check_eq "boot 2: provision keeps it: exit 5" "$rc" 5
  check_eq "boot 2: one error line" "$(grep -c '^ephemera: error: kept the encrypted volume' /tmp/eph.err)" 1
  check "boot 2: it names the missing serial" grep -q "the disk that holds its header (serial $header) is missing" /tmp/eph.err
  check "boot 2: it names the member here" grep -q "$o (serial $other)" /tmp/eph.err
  check "boot 2: it gives the discard command" grep -q "ephemera discard --luks-uuid $uuid" /tmp/eph.err
  check_eq "boot 2: not one byte of the member here changed" "$(dev_sha $o)" "$before"
  check "boot 2: nothing open, nothing mounted" nothing_left
  st=$(ephemera --config $cfg status --json)
  echo "$st"
  check "boot 2: status names it, with the missing serial" sh -c "echo '$st' | jq -e '.state == \"earlier\" and .incomplete[0].luks_uuid == \"$uuid\" and .incomplete[0].missing == [\"$header\"]'"
  check "boot 2: plan says it is kept" sh -c "ephemera plan --config $cfg | grep -q '^kept the encrypted volume'"
  run_ephemera provision --config $cfg
  check_eq "boot 2: a second try keeps it too: exit 5" "$rc" 5
  check_eq "boot 2: still not one byte changed" "$(dev_sha $o)" "$before"
  run_ephemera recover --config $cfg --private-key /scenario/priv.pem
  check_eq "boot 2: recover without the header's disk is refused: exit 3" "$rc" 3
  check "boot 2: ... naming the missing serial" grep -q "no NVMe disk has serial \"$header\"" /tmp/eph.err
  check_eq "boot 2: recover changed nothing" "$(dev_sha $o)" "$before"
  finish
  exit
fi

# Boot 3: every member back.
run_ephemera provision --config $cfg
check_eq "boot 3: provision keeps the readable volume: exit 5" "$rc" 5
run_ephemera recover --config $cfg --private-key /scenario/priv.pem
check_eq "boot 3: recover exits 0" "$rc" 0
check_eq "boot 3: recover reads the data back" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
check "boot 3: clean shutdown" nothing_left

# Two kept volumes (the other disk now holds a header of its own): the
# record of a kept volume, /run/ephemera/kept (the watcher's `kept` state),
# stays until teardown --luks-uuid has erased the last of them.
h=$(dev_of "$header") || exit 1
printf 'not-a-secret' | cryptsetup luksFormat -q --type luks2 --label ephemera --subsystem ephemera \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "$o"
uuid2=$(cryptsetup luksUUID "$o")
run_ephemera provision --config $cfg
check_eq "boot 3, two kept volumes: provision keeps them: exit 5" "$rc" 5
check "boot 3: ... the record of a kept volume is written" test -s /run/ephemera/kept
run_ephemera teardown --config $cfg --luks-uuid "$uuid2"
check_eq "boot 3: teardown of one of them: exit 0" "$rc" 0
check "boot 3: ... its header is gone" sh -c "blkid -p $o; test \$? -eq 2"
check_eq "boot 3: ... the other's header is there" "$(cryptsetup luksUUID "$h")" "$uuid"
check "boot 3: ... the record stays: a volume is still kept" test -s /run/ephemera/kept
run_ephemera teardown --config $cfg --luks-uuid "$uuid"
check_eq "boot 3: teardown of the last: exit 0" "$rc" 0
check "boot 3: ... its header is gone" sh -c "blkid -p $h; test \$? -eq 2"
check "boot 3: ... the record is gone" test ! -e /run/ephemera/kept
finish
