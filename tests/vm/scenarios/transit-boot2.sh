# Boot 2 of the key-service test: the key comes from OpenBao's transit
# decrypt (docs/KEY-SERVICES.md, run by the host test against its real `bao`
# dev server, which the guest cannot reach), at /run/vk.bin as the README's
# runbook step 1 leaves it. Steps 2 to 4 of the README's runbook, as the
# README gives them, then read the data back.
. /scenario/lib.sh
want_sha=$(cat /scenario/data.sha256)
mkdir -p /root/ops && cp /scenario/escrow.json /root/ops/
(umask 077 && cp /scenario/vk.bin /run/vk.bin)
(umask 022 && cd /root/ops && set -e && . /scenario/runbook-2-4.sh)
check_eq "runbook steps 2-4 exit 0" "$?" 0
check "the volume is open" test -b /dev/mapper/recovered
check "no key file is left" test ! -e /run/vk.bin
check_eq "the data read back is boot 1's" "$(sha256sum /mnt/recovered/data | cut -d' ' -f1)" "$want_sha"
umount /mnt/recovered
cryptsetup close recovered
finish
