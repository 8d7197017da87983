# Boot 1 of the escrow tests with two disks: escrow to the keys the config
# names (tests/key_services.rs: the public half of an OpenBao transit key,
# which the node uses offline; tests/vm.rs: three keys, threshold 1 or 2).
# Provision, write data, print its hash; the envelope is on the console.
. /scenario/lib.sh
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
check "every recipient is RSA-OAEP-256" sh -c "jq -e '[.recipient.alg // empty, .recipients[]?.alg] | length > 0 and all(. == \"RSA-OAEP-256\")' /var/lib/ephemera/escrow.json"
head -c 1048576 /dev/urandom >$mnt/data && sync
echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
umount $mnt
finish
