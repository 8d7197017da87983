# tests/escrow_store.rs node_gone_..._rescue_machine, the node: its one way
# out is a virtio NIC (run-guest.sh --guestfwd) that reaches the S3 store
# (weed, 10.0.2.100:8333) and the instance metadata (the IMDS test server,
# 10.0.2.101:80) on the host, and nothing else. Provision with escrow and
# [escrow.store]: the envelope goes to the store (no pending marker, the
# metric says 1); data is written, and its hash and the envelope's printed.
. /scenario/lib.sh
ed=/var/lib/ephemera
# No udev here: the PCI transport and the driver, loaded by hand.
modprobe virtio_pci && modprobe virtio_net
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
check "the node's NIC is up (eth0, 10.0.2.15)" sh -c "ip addr show eth0 | grep -q 10.0.2.15"
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
uuid=$(cryptsetup luksUUID /dev/md_ephemera)
check "the envelope is on the node" test -s $ed/escrow.$uuid.json
check "it is in the store: no store-pending marker" test ! -e $ed/escrow.$uuid.store-pending
check "the journal says where it went" grep -q "ephemera/i-0123456789abcdef0/$uuid.json" /tmp/eph.err
check "the metric says stored" grep -qx "ephemera_escrow_stored 1" /run/ephemera-escrow.prom
dd if=/dev/urandom of=$mnt/data bs=1M count=2 2>/dev/null && sync
echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
echo "LUKS-UUID $uuid"
echo "ENVELOPE-SHA256 $(sha256sum $ed/escrow.$uuid.json | cut -d' ' -f1)"
umount $mnt && cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
check "clean shutdown" nothing_left
finish
