# tests/vm.rs tpm2_unlock_across_a_reboot_and_kept_on_another_tpm: the native
# tpm2 pin (tss-esapi, no clevis in this guest), four boots on two disks, the
# phase in /scenario/phase, the TPM a swtpm on the host (run-guest.sh --tpm:
# tpm-tis on x86-64, tpm-tis-device on arm64):
# 1. a config with tang is refused (exit 2, naming clevis, nothing written);
#    a provision without [unlock] (timed, then taken down and wiped), then
#    one with [unlock] tpm2: the unlock file, mode 0400, version 2, names the
#    tpm2 pin; docs/UNLOCK.md's runbook with tpm2-tools alone gives a key
#    cryptsetup accepts; data is written, then a clean shutdown;
# 2. the same TPM: provision unlocks the volume by itself (timed): the same
#    LUKS UUID, the same data;
# 3. another instance's TPM (a fresh swtpm state): kept, exit 5, at once
#    (the TPM's refusal is permanent: not asked again), nothing open;
# 4. the same TPM as 1 and 2, PCR 7 extended first (as a change of the
#    Secure Boot state would): kept, exit 5, at once, nothing open.
# The host compares the member hashes around boots 3 and 4. No [escrow]:
# the unlock file is the node's only record of the volume (issue 25: a
# never-mounted marker left by boot 1 once made boot 2 format over it). The
# guest's root is new each boot: later boots put back boot 1's whole
# /var/lib/ephemera (unlock file and markers, modes kept), as a node's root
# disk keeps it.
. /scenario/lib.sh
phase=$(cat /scenario/phase)
ed=/var/lib/ephemera
# Milliseconds since boot, from /proc/uptime (busybox's date has no %N).
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# The TPM's device: built into the x86-64 cloud kernel, a module on arm64
# (the virt machine describes it in the device tree). Wait for the node, 10 s.
modprobe tpm_tis 2>/dev/null
i=0
while [ ! -c /dev/tpmrm0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "boot $phase: the TPM is there (/dev/tpmrm0)" test -c /dev/tpmrm0
check "boot $phase: no clevis in this guest" sh -c '! command -v clevis'

if [ "$phase" = 1 ]; then
  # tang still runs clevis: without it, a config with tang is refused before
  # any disk is touched, naming clevis.
  run_ephemera provision --config /scenario/tang.toml
  check_eq "boot 1: [unlock] tang with no clevis installed: exit 2" "$rc" 2
  check "boot 1: ... the message names clevis and unlock.tang" grep -q "unlock.tang .*clevis, which is not installed" /tmp/eph.err
  check "boot 1: ... nothing made" nothing_left
  check "boot 1: ... no header written" sh -c "! cryptsetup isLuks $(dev_of EPH-A) && ! cryptsetup isLuks $(dev_of EPH-B)"
  t0=$(now_ms)
  run_ephemera provision --config /scenario/plain.toml
  t1=$(now_ms)
  check_eq "boot 1: provision without [unlock] exits 0" "$rc" 0
  run_ephemera teardown --yes --config /scenario/plain.toml
  check_eq "boot 1: teardown exits 0" "$rc" 0
  for s in EPH-A EPH-B; do wipefs -qa "$(dev_of $s)" && dd if=/dev/zero of="$(dev_of $s)" bs=1M count=20 2>/dev/null; done
  rm -rf $ed
  t2=$(now_ms)
  run_ephemera provision --config $cfg
  t3=$(now_ms)
  check_eq "boot 1: provision with [unlock] tpm2 exits 0" "$rc" 0
  echo "TIMING provision_plain_ms=$((t1 - t0)) provision_unlock_ms=$((t3 - t2))"
  uuid=$(cryptsetup luksUUID /dev/md_ephemera)
  f=$ed/escrow.$uuid.unlock.json
  check_eq "boot 1: the unlock file is mode 0400" "$(stat -c %a "$f")" 400
  check_eq "boot 1: version 2" "$(jq -r .version "$f")" 2
  check_eq "boot 1: it names the tpm2 pin" "$(jq -r .pins "$f")" "1 of tpm2"
  check "boot 1: the runbook's tpm2-tools give a key cryptsetup accepts" \
    sh -c "sed 's|<LUKS UUID>|$uuid|' /scenario/runbook.sh >/tmp/runbook.sh && sh -e /tmp/runbook.sh && cryptsetup open --test-passphrase --type luks2 --key-size 512 --volume-key-file /run/vk.bin /dev/md_ephemera"
  rm -f /run/vk.bin
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
if [ "$phase" = 4 ]; then
  check "boot 4: PCR 7 extended (tpm2_pcrextend)" \
    tpm2_pcrextend 7:sha256=0000000000000000000000000000000000000000000000000000000000000001
fi
t0=$(now_ms)
run_ephemera provision --config $cfg
t1=$(now_ms)

case $phase in
2)
  echo "TIMING unlock_ms=$((t1 - t0))"
  check_eq "boot 2: provision exits 0 (unlocked)" "$rc" 0
  check "boot 2: it says it unlocked the volume" grep -q "unlocked /dev/mapper/ephemera at $mnt" /tmp/eph.err
  check_eq "boot 2: the same LUKS UUID" "$(cryptsetup luksUUID /dev/md_ephemera)" "$uuid"
  check_eq "boot 2: the data is boot 1's" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
  check_eq "boot 2: RAID0 over both disks" "$(mdadm --detail /dev/md_ephemera | grep -c 'active sync')" 2
  umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
  check "boot 2: clean shutdown" nothing_left
  ;;
3)
  check_eq "boot 3 (another TPM): provision keeps the volume, exit 5" "$rc" 5
  check "boot 3: it says its pins did not give its key" grep -q "its pins did not give its key" /tmp/eph.err
  check "boot 3: ... because this is not the TPM it was sealed to (TPM_RC_INTEGRITY)" grep -q "another TPM" /tmp/eph.err
  check "boot 3: ... a refusal for good, not asked again" grep -q "refused for good" /tmp/eph.err
  check "boot 3: nothing assembled, open or mounted" nothing_left
  ;;
4)
  check_eq "boot 4 (PCR 7 changed): provision keeps the volume, exit 5" "$rc" 5
  check "boot 4: ... because the sealed PCRs changed (TPM_RC_POLICY_FAIL)" grep -q "the sealed PCRs changed" /tmp/eph.err
  check "boot 4: ... a refusal for good, not asked again" grep -q "refused for good" /tmp/eph.err
  check "boot 4: nothing assembled, open or mounted" nothing_left
  ;;
esac
finish
