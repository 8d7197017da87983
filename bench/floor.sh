#!/bin/sh
# The kernel floor: the least the kernel must be asked to do for the same
# result as ephemera. An md RAID0 array without a superblock (mdadm --build),
# a dm-crypt mapping made with dmsetup from a random key on tmpfs (no LUKS
# header, no key derivation, no digest), the same mkfs.ext4 or mkfs.xfs
# options as ephemera, and the same mount. Same cipher, key size, sector
# size, chunk and dm-crypt flags as ephemera's defaults.
#
# usage: floor.sh MOUNTPOINT DEV...   (blank disks; one disk gets no array)
# env:   FLOOR_FS=ext4 (default) or xfs, as ephemera's `[filesystem] type`.
#        BENCH_STEP=1 prints "STEP <name> <seconds>" for each step on stderr,
#        and "IO <step> <sectors read> <sectors written>" of the dm-crypt
#        mapping after mkfs and mount (the kernel's counts, /sys/block/dm-N/stat).
set -eu
mnt=$1
shift
[ $# -ge 1 ] || { echo "usage: floor.sh MOUNTPOINT DEV..." >&2; exit 2; }

. "$(dirname "$0")/steps.sh"

fs=${FLOOR_FS:-ext4}
chunk_kib=256
n=$#
ext= xfs_d=
if [ "$n" -gt 1 ]; then
  step md mdadm --build /dev/md/floor --level=0 --raid-devices="$n" --chunk=$chunk_kib "$@"
  base=/dev/md/floor
  ext=",stride=$((chunk_kib / 4)),stripe_width=$((chunk_kib / 4 * n))"
  xfs_d="-d su=${chunk_kib}k,sw=$n"
else
  base=$1
fi
# 512-bit random key, only on tmpfs (/run), and only for the dmsetup call.
umask 077
head -c 64 /dev/urandom >/run/floor.key
sectors=$(blockdev --getsz "$base")
step dmsetup dmsetup create floor --table "0 $sectors crypt twofish-xts-plain64 \
$(hexdump -ve '1/1 "%02x"' /run/floor.key) 0 $base 0 3 no_read_workqueue no_write_workqueue sector_size:4096"
rm -f /run/floor.key
# Without udev, dmsetup leaves /dev/mapper/NAME to the caller.
[ -e /dev/mapper/floor ] || dmsetup mknodes floor
# Options that depend on the size, as ephemera picks them (src/mount.rs):
# 64 KiB ext4 clusters from 16 TiB, a 512 MiB xfs log from 1 TiB.
bytes=$(blockdev --getsize64 "$base")
bigalloc= big= xfs_l=
if [ "$bytes" -ge 17592186044416 ]; then bigalloc=,bigalloc big="-C 64k"; fi
if [ "$bytes" -ge 1099511627776 ]; then xfs_l="-l size=512m"; fi
# io STEP: the mapping's sectors read and written so far (fields 3 and 7).
io() {
  [ "${BENCH_STEP:-}" = 1 ] || return 0
  _io=$1
  for _d in /sys/block/dm-*; do
    [ "$(cat "$_d/dm/name")" = floor ] || continue
    # shellcheck disable=SC2046 # the stat line's fields, split on purpose
    set -- $(cat "$_d/stat")
    echo "IO $_io $3 $7" >&2
  done
}
case $fs in
ext4)
  # shellcheck disable=SC2086 # $big is "-C 64k" or nothing
  step mkfs mkfs.ext4 -q -T largefile4 -m 0 $big -O ^resize_inode,sparse_super2$bigalloc -G 256 \
    -E "lazy_itable_init=1,lazy_journal_init=1,num_backup_sb=1,nodiscard$ext" -L ephemeral /dev/mapper/floor
  ;;
xfs)
  # shellcheck disable=SC2086 # "-d su=...,sw=...", "-l size=..." or nothing
  step mkfs mkfs.xfs -q -K -L ephemeral $xfs_d $xfs_l /dev/mapper/floor
  ;;
*) echo "floor.sh: FLOOR_FS must be ext4 or xfs, not $fs" >&2; exit 2 ;;
esac
io mkfs
mkdir -p "$mnt"
step mount mount -t "$fs" -o noatime /dev/mapper/floor "$mnt"
io mount
