# `make demo`: four emulated instance-store disks, escrow on.
cfg=/scenario/config.toml
show() { echo; echo "### $*"; "$@"; }

show cat $cfg
show ephemera plan --config $cfg
show ephemera provision --config $cfg || exit 1
show ephemera status --config $cfg
show ephemera status --config $cfg --json
show cat /proc/mdstat
echo; echo "### the dm table holds a keyring reference, not the key"
dmsetup table --showkeys ephemera
show df -h /mnt/ephemeral
show ls -l /var/lib/ephemera/escrow.json
echo; echo "### a second run changes nothing"
ephemera provision --config $cfg
true
