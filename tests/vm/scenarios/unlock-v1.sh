# tests/vm.rs unlock_file_of_version_1_still_unlocks: the fixture's disk
# (tests/vm/unlock-v1), its unlock file of version 1 (clevis's sss token) put
# back where the node's root disk keeps it, and clevis in the guest.
# same:  that instance's TPM: today's ephemera unlocks it, the same data;
# other: another TPM: kept, exit 5, at once (clevis's tpm2 pin refused for
#        good: not retried until wait_secs, which is 60 s here).
. /scenario/lib.sh
phase=$(cat /scenario/phase)
ed=/var/lib/ephemera
uuid=$(cat /scenario/luks-uuid)
modprobe tpm_tis 2>/dev/null
i=0
while [ ! -c /dev/tpmrm0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p $ed
cp /scenario/unlock.json $ed/escrow.$uuid.unlock.json && chmod 0400 $ed/escrow.$uuid.unlock.json
t0=$(cut -d. -f1 /proc/uptime)
run_ephemera provision --config $cfg
t1=$(cut -d. -f1 /proc/uptime)
if [ "$phase" = same ]; then
  check_eq "version 1 file, same TPM: provision exits 0 (unlocked)" "$rc" 0
  check_eq "the same LUKS UUID" "$(cryptsetup luksUUID "$(dev_of EPH-V1)")" "$uuid"
  check_eq "the data written by the release that made the file" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
  umount $mnt && cryptsetup close ephemera
  check "clean shutdown" nothing_left
else
  check_eq "version 1 file, another TPM: kept, exit 5" "$rc" 5
  check "the TPM's refusal for good is said" grep -q "the TPM refused for good: not asked again" /tmp/eph.err
  check "no second attempt" sh -c "! grep -q 'attempt 1:' /tmp/eph.err"
  echo "kept after $((t1 - t0)) s (wait_secs 60)"
  check "nothing assembled, open or mounted" nothing_left
fi
finish
