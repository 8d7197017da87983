# tests/kms.rs kms_and_tpm2_pins_on_a_real_kernel: the kms pin, and 2 of
# {tpm2, kms}, in the real-kernel guest (no clevis). Its one way out is a
# virtio NIC (run-guest.sh --guestfwd) to the IMDS test server (10.0.2.101:80)
# and moto's KMS behind a TLS front with a test CA (10.0.2.102:443); its TPM
# a swtpm (--tpm). The phase is in /scenario/phase:
# 1. provisions, each timed (docs/PERFORMANCE.md), taken down and wiped but
#    the last: without [unlock]; with the kms pin alone; with 2 of {tpm2,
#    kms} and escrow, which stays: version 2, both pins named; data written;
# 2. the same TPM, KMS up: unlocked by itself (timed), the same data;
# 3. KMS unreachable (the host stopped the front): kept, exit 5, nothing
#    open; then the guest asks for KMS (EPH-WANT-KMS) and `ephemera unlock`
#    opens the volume once KMS is back: the same data.
. /scenario/lib.sh
phase=$(cat /scenario/phase)
ed=/var/lib/ephemera
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
modprobe virtio_pci && modprobe virtio_net
modprobe tpm_tis 2>/dev/null
i=0
while { [ ! -e /sys/class/net/eth0 ] || [ ! -c /dev/tpmrm0 ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
check "boot $phase: the NIC is up and the TPM is there" test -c /dev/tpmrm0
check "boot $phase: no clevis in this guest" sh -c '! command -v clevis'
# Takes down and wipes what provision made (a new first boot on the disks).
wipe() {
  run_ephemera teardown --yes --config "$1"
  check_eq "boot 1: teardown of the $1 volume exits 0" "$rc" 0
  for s in EPH-A EPH-B; do wipefs -qa "$(dev_of $s)" && dd if=/dev/zero of="$(dev_of $s)" bs=1M count=20 2>/dev/null; done
  rm -rf $ed
}

if [ "$phase" = 1 ]; then
  t0=$(now_ms); run_ephemera provision --config /scenario/plain.toml; t1=$(now_ms)
  check_eq "boot 1: provision without [unlock] exits 0" "$rc" 0
  wipe /scenario/plain.toml
  t2=$(now_ms); run_ephemera provision --config /scenario/kms.toml; t3=$(now_ms)
  check_eq "boot 1: provision with [unlock] kms exits 0" "$rc" 0
  u=$(cryptsetup luksUUID /dev/md_ephemera)
  check_eq "boot 1: kms alone: the pins" "$(jq -r .pins $ed/escrow.$u.unlock.json)" "1 of kms $(cat /scenario/key-id)"
  check "boot 1: kms alone: the context names the volume" \
    test "$(jq -r '.slots[0].context.volume' $ed/escrow.$u.unlock.json)" = "$u"
  wipe /scenario/kms.toml
  t4=$(now_ms); run_ephemera provision --config $cfg; t5=$(now_ms)
  check_eq "boot 1: provision with 2 of {tpm2, kms} exits 0" "$rc" 0
  echo "TIMING provision_plain_ms=$((t1 - t0)) provision_kms_ms=$((t3 - t2)) provision_tpm2_kms_ms=$((t5 - t4))"
  uuid=$(cryptsetup luksUUID /dev/md_ephemera)
  f=$ed/escrow.$uuid.unlock.json
  check_eq "boot 1: the unlock file is mode 0400" "$(stat -c %a "$f")" 400
  check_eq "boot 1: 2 of {tpm2, kms}" "$(jq -r .pins "$f")" "2 of tpm2, kms $(cat /scenario/key-id)"
  dd if=/dev/urandom of=$mnt/data bs=1M count=2 2>/dev/null && sync
  echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
  echo "LUKS-UUID $uuid"
  echo "UNLOCK-FILE $(jq -c . "$f")"
  umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
  check "boot 1: clean shutdown" nothing_left
  finish
  exit
fi

uuid=$(cat /scenario/luks-uuid)
mkdir -p $ed
cp /scenario/unlock.json $ed/escrow.$uuid.unlock.json && chmod 0400 $ed/escrow.$uuid.unlock.json
t0=$(now_ms); run_ephemera provision --config $cfg; t1=$(now_ms)
if [ "$phase" = 2 ]; then
  echo "TIMING unlock_tpm2_kms_ms=$((t1 - t0))"
  check_eq "boot 2: provision exits 0 (unlocked by the TPM and KMS)" "$rc" 0
  check_eq "boot 2: the same LUKS UUID" "$(cryptsetup luksUUID /dev/md_ephemera)" "$uuid"
  check_eq "boot 2: the data is boot 1's" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
else
  check_eq "boot 3 (KMS unreachable): provision keeps the volume, exit 5" "$rc" 5
  check "boot 3: it says the kms pin did not answer" grep -q "kms: Decrypt" /tmp/eph.err
  check "boot 3: nothing assembled, open or mounted" nothing_left
  echo "EPH-WANT-KMS"
  i=0
  while [ $i -lt 20 ]; do
    run_ephemera unlock --config $cfg
    [ "$rc" = 0 ] && break
    sleep 2
    i=$((i + 1))
  done
  check_eq "boot 3: ephemera unlock opens it once KMS is back" "$rc" 0
  check_eq "boot 3: the same LUKS UUID" "$(cryptsetup luksUUID /dev/md_ephemera)" "$uuid"
  check_eq "boot 3: the data is boot 1's" "$(sha256sum $mnt/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
fi
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
check "boot $phase: clean shutdown" nothing_left
finish
