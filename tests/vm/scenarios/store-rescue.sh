# tests/escrow_store.rs node_gone_..._rescue_machine, the rescue machine:
# the node and its root disk are gone; ops fetched the envelope from the
# store (`ephemera escrow get`, /scenario/escrow.json) and run the README's
# runbook with standard tools on a machine that has the member disks.
. /scenario/lib.sh
mkdir -p /root/ops && cp /scenario/escrow.json /scenario/escrow.key.pem /root/ops/
check "no envelope on this machine but the fetched one" test ! -e /var/lib/ephemera
(umask 022 && cd /root/ops && set -e && . /scenario/runbook.sh)
check_eq "the README's runbook exits 0" "$?" 0
check "it leaves no key file" test ! -e /run/vk.bin
check_eq "the data read back is the node's" "$(sha256sum /mnt/recovered/data | cut -d' ' -f1)" "$(cat /scenario/data.sha256)"
umount /mnt/recovered && cryptsetup close recovered && mdadm --stop /dev/md/recovered
finish
