# Power loss (tests/faults.rs): each boot first runs provision as the boot
# after a power cut would (expecting success on what the cut left), with the
# config of the cut run (config.toml, its filesystem in /scenario/fs), then,
# unless this is the last boot, runs provision again with cut.toml and a
# failpoint that hangs at /scenario/point; the host cuts the power there
# (QEMU `quit`).
# With escrow: EPH-ROOT, ext4, holds /var/lib/ephemera across the cuts, as
# a node's root disk would.
. /scenario/lib.sh
a=$(dev_of EPH-A) && b=$(dev_of EPH-B) && root=$(dev_of EPH-ROOT) || exit 1
mkdir -p /var/lib/ephemera && mount -t ext4 "$root" /var/lib/ephemera || exit 1
point=$(cat /scenario/point)
boot=$(cat /scenario/boot)
if [ "$boot" != 1 ]; then
  echo "signatures left by the power cut: $(blkid -p -o value -s TYPE $a) / $(blkid -p -o value -s TYPE $b)"
  run_ephemera provision --config $cfg
  check_eq "boot $boot: provision after the power cut exits 0" "$rc" 0
  check_eq "boot $boot: RAID0 over both disks" "$(mdadm --detail /dev/md_ephemera | grep -c 'active sync')" 2
  check_eq "boot $boot: LUKS label" "$(blkid -o value -s LABEL /dev/md_ephemera)" ephemera
  check_eq "boot $boot: $fs mounted" "$(awk -v m=$mnt '$2 == m {print $3}' /proc/mounts)" "$fs"
  if [ "$(cat /scenario/expect-old)" = yes ]; then
    check "boot $boot: the cut run's header was recognised as ephemera's" grep -q "an earlier ephemera volume on" /tmp/eph.err
  fi
  if [ "$(cat /scenario/expect-never-mounted)" = yes ]; then
    check "boot $boot: the cut run's volume was never mounted, so not kept" grep -q "was never mounted (a run was cut short between its escrow envelope and its first mount), so it holds no data; making a new one" /tmp/eph.err
  fi
  new_uuid=$(cryptsetup luksUUID /dev/md_ephemera)
  check "boot $boot: the new volume's envelope, on the root disk" test -s /var/lib/ephemera/escrow.$new_uuid.json
  check "boot $boot: mounted, so not marked never mounted" test ! -e /var/lib/ephemera/escrow.$new_uuid.never-mounted
  echo data >$mnt/data && sync
  check_eq "boot $boot: writable" "$(cat $mnt/data)" data
  umount $mnt
  check "boot $boot: $fs clean by its own checker" fs_clean /dev/mapper/ephemera
  cryptsetup close ephemera && mdadm --stop /dev/md_ephemera
  echo "POWER-RECOVERED boot=$boot"
fi
if [ "$point" = none ]; then
  finish
  exit
fi
echo "EPHEMERA-CHECKS-SO-FAR passed=$passes failed=$fails"
# The host cuts the power when this failpoint prints its marker.
EPHEMERA_FAILPOINT="$point=hang" ephemera provision --config /scenario/cut.toml
echo "not ok - the power was not cut at $point"
finish
