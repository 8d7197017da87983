# Boot 1 of the key-service test (tests/key_services.rs): two disks,
# escrow to the public half of an OpenBao transit key (the host's dev
# server made it; the node needs no network: it encrypts offline). Provision,
# write data, print its hash; the envelope is on the console.
. /scenario/lib.sh
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
check "the envelope names RSA-OAEP-256" sh -c "jq -e '.recipient.alg == \"RSA-OAEP-256\"' /var/lib/ephemera/escrow.json"
head -c 1048576 /dev/urandom >$mnt/data && sync
echo "DATA-SHA256 $(sha256sum $mnt/data | cut -d' ' -f1)"
umount $mnt
finish
