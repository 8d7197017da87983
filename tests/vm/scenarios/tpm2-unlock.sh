# tests/vm.rs tpm2_unlock_across_a_reboot_and_kept_on_another_tpm, in three
# boots on two disks, the phase in /scenario/phase, the TPM a swtpm on the
# host (run-guest.sh --tpm: tpm-tis on x86-64, tpm-tis-device on arm64):
# 1. provision with [unlock] tpm2: the unlock file, mode 0400, names the
#    tpm2 pin; `clevis decrypt` of its token alone gives a key cryptsetup
#    accepts (the manual path); data is written, then a clean shutdown;
# 2. the same TPM: provision unlocks the volume by itself: the same LUKS
#    UUID, the same data, nothing else asked for;
# 3. another instance's TPM (a fresh swtpm state): provision keeps the
#    volume, exit 5, nothing open (the host compares the member hashes).
# No [escrow]: the unlock file is the node's only record of the volume (issue
# 25: a never-mounted marker left by boot 1 once made boot 2 format over it).
# The guest's root is new each boot: boots 2 and 3 put back boot 1's whole
# /var/lib/ephemera (unlock file and markers, modes kept), as a node's root
# disk keeps it.
. /scenario/lib.sh
phase=$(cat /scenario/phase)
ed=/var/lib/ephemera

# The TPM's device: built into the x86-64 cloud kernel, a module on arm64
# (the virt machine describes it in the device tree). Wait for the node, 10 s.
modprobe tpm_tis 2>/dev/null
i=0
while [ ! -c /dev/tpmrm0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "boot $phase: the TPM is there (/dev/tpmrm0)" test -c /dev/tpmrm0

if [ "$phase" = 1 ]; then
  run_ephemera provision --config $cfg
  check_eq "boot 1: provision exits 0" "$rc" 0
  uuid=$(cryptsetup luksUUID /dev/md_ephemera)
  f=$ed/escrow.$uuid.unlock.json
  check_eq "boot 1: the unlock file is mode 0400" "$(stat -c %a "$f")" 400
  check_eq "boot 1: it names the tpm2 pin" "$(jq -r .pins "$f")" "1 of tpm2"
  check "boot 1: clevis decrypt of its token gives a key cryptsetup accepts" \
    sh -c "jq -j .clevis $f | clevis decrypt | cryptsetup open --test-passphrase --type luks2 --key-size 512 --volume-key-file /dev/stdin /dev/md_ephemera"
  check "boot 1: the key is in no keyslot" sh -c "! cryptsetup luksDump /dev/md_ephemera | grep -q '^  [0-9]*: luks2'"
  dd if=/dev/urandom of=$mnt/data bs=1M count=2 2>/dev/null && sync
  echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
  echo "LUKS-UUID $uuid"
  echo "UNLOCK-FILE $(jq -c . "$f")"
  check "boot 1: no escrow envelope (none configured)" sh -c "! ls $ed | grep -v '[.]unlock[.]json\$' | grep -q '[.]json\$'"
  echo "NODE-STATE $(tar -C /var/lib -cz ephemera | base64 -w0)"
  umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
  check "boot 1: clean shutdown" nothing_left
  finish
  exit
fi

uuid=$(cat /scenario/luks-uuid)
mkdir -p /var/lib && base64 -d /scenario/node-state | tar -C /var/lib -xz
check "boot $phase: boot 1's unlock file is back" test -f $ed/escrow.$uuid.unlock.json
echo "boot $phase: /var/lib/ephemera holds: $(ls $ed | tr '\n' ' ')"
run_ephemera provision --config $cfg

if [ "$phase" = 2 ]; then
  check_eq "boot 2: provision exits 0 (unlocked)" "$rc" 0
  check "boot 2: it says it unlocked the volume" grep -q "unlocked /dev/mapper/ephemera at $mnt" /tmp/eph.err
  check_eq "boot 2: the same LUKS UUID" "$(cryptsetup luksUUID /dev/md_ephemera)" "$uuid"
  check_eq "boot 2: the data is boot 1's" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
  check_eq "boot 2: RAID0 over both disks" "$(mdadm --detail /dev/md_ephemera | grep -c 'active sync')" 2
  umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
  check "boot 2: clean shutdown" nothing_left
else
  check_eq "boot 3 (another TPM): provision keeps the volume, exit 5" "$rc" 5
  check "boot 3: it says its pins did not give its key" grep -q "its pins did not give its key" /tmp/eph.err
  check "boot 3: ... because this TPM refused the sealed key (tpm2_load)" grep -q "integrity check failed" /tmp/eph.err
  check "boot 3: nothing assembled, open or mounted" nothing_left
fi
finish
