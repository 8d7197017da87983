#!/bin/sh
# The naive pipeline, as a user would type it with cryptsetup's and mdadm's
# defaults: mdadm --create (1.2 superblock), luksFormat with the default
# PBKDF (Argon2id, ~2 s target), luksOpen (runs the KDF again), mkfs.ext4 -T
# largefile4 with its defaults (journal zeroed, not lazy), mount.
# Only the data path is matched to ephemera's, so that the comparison is
# about setup and not about the cipher: twofish-xts-plain64, 512-bit key,
# 4096-byte sectors. Everything else is cryptsetup's default.
#
# usage: naive.sh MOUNTPOINT DEV...   (blank disks; one disk gets no array)
# env:   BENCH_STEP=1 prints "STEP <name> <seconds>" for each step on stderr.
set -eu
mnt=$1
shift
[ $# -ge 1 ] || { echo "usage: naive.sh MOUNTPOINT DEV..." >&2; exit 2; }

. "$(dirname "$0")/steps.sh"

if [ $# -gt 1 ]; then
  step md mdadm --create /dev/md/naive --run --quiet --level=0 --raid-devices=$# "$@"
  base=/dev/md/naive
else
  base=$1
fi
# A throwaway passphrase: the naive user still needs one for luksFormat.
head -c 32 /dev/urandom >/run/naive.pass
step luksFormat cryptsetup luksFormat -q --type luks2 --cipher twofish-xts-plain64 \
  --key-size 512 --sector-size 4096 --key-file /run/naive.pass "$base"
step luksOpen cryptsetup luksOpen --key-file /run/naive.pass "$base" naive
rm -f /run/naive.pass
step mkfs mkfs.ext4 -q -T largefile4 /dev/mapper/naive
mkdir -p "$mnt"
step mount mount /dev/mapper/naive "$mnt"
