#!/bin/sh
# The kernel floor: the least the kernel must be asked to do for the same
# result as ephemera. An md RAID0 array without a superblock (mdadm --build),
# a dm-crypt mapping made with dmsetup from a random key on tmpfs (no LUKS
# header, no key derivation, no digest), the same mkfs.ext4 options as
# ephemera, and the same mount. Same cipher, key size, sector size, chunk
# and dm-crypt flags as ephemera's defaults.
#
# usage: floor.sh MOUNTPOINT DEV...   (blank disks; one disk gets no array)
# env:   BENCH_STEP=1 prints "STEP <name> <seconds>" for each step on stderr.
set -eu
mnt=$1
shift
[ $# -ge 1 ] || { echo "usage: floor.sh MOUNTPOINT DEV..." >&2; exit 2; }

. "$(dirname "$0")/steps.sh"

chunk_kib=256
n=$#
if [ "$n" -gt 1 ]; then
  step md mdadm --build /dev/md/floor --level=0 --raid-devices="$n" --chunk=$chunk_kib "$@"
  base=/dev/md/floor
  ext=",stride=$((chunk_kib / 4)),stripe_width=$((chunk_kib / 4 * n))"
else
  base=$1
  ext=
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
step mkfs mkfs.ext4 -q -T largefile4 -m 0 -O ^resize_inode,sparse_super2 -G 256 \
  -E "lazy_itable_init=1,lazy_journal_init=1,num_backup_sb=1,nodiscard$ext" -L ephemeral /dev/mapper/floor
mkdir -p "$mnt"
step mount mount -o noatime /dev/mapper/floor "$mnt"
