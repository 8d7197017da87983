# Shared by the guest scenarios (busybox sh). Each check prints a TAP-like
# "ok - ..." or "not ok - ..." line; `finish` prints the totals the host
# test reads and fails the scenario if any check failed.
passes=0
fails=0
cfg=/scenario/config.toml
mnt=/mnt/ephemeral
# The filesystem the scenario's config asks for (the host test passes it;
# the same scenario runs for ext4 and xfs).
fs=$(cat /scenario/fs 2>/dev/null || echo ext4)

pass() { passes=$((passes + 1)); echo "ok - $1"; }
fail() { fails=$((fails + 1)); echo "not ok - $1"; }

# check DESCRIPTION COMMAND...: passes when COMMAND exits 0.
check() {
  local desc=$1
  shift
  if "$@" >/tmp/check.out 2>&1; then pass "$desc"; else fail "$desc" && sed 's/^/    /' /tmp/check.out; fi
}

# check_eq DESCRIPTION GOT WANT
check_eq() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi
}

# check_ne DESCRIPTION GOT UNWANTED: GOT must be set and differ.
check_ne() {
  if [ -n "$2" ] && [ "$2" != "$3" ]; then pass "$1"; else fail "$1: got '$2', not wanted '$3'"; fi
}

# The device node of the NVMe disk with serial $1 (the kernel may name
# controllers in any order).
dev_of() {
  local d
  for d in /sys/block/nvme*n1; do
    if [ "$(tr -d ' ' <"$d/device/serial")" = "$1" ]; then
      echo "/dev/${d##*/}"
      return 0
    fi
  done
  echo "no NVMe disk with serial $1" >&2
  return 1
}

# run_ephemera ARGS...: runs ephemera, keeps its stderr in /tmp/eph.err
# (and on the console), sets $rc.
run_ephemera() {
  echo "+ ephemera $*"
  ephemera "$@" 2>/tmp/eph.err
  rc=$?
  cat /tmp/eph.err
}

# sha256 of a whole block device.
dev_sha() { sha256sum "$1" | cut -d' ' -f1; }

# nothing_left [PREFIX]: no md array, no dm device (but those named PREFIX*,
# which the scenario made itself) and nothing mounted at $mnt. The kernel
# removes a stopped md device from a workqueue, so this allows it up to 5 s.
nothing_left() {
  local i=0 dms
  while [ $i -lt 50 ]; do
    dms=$(dmsetup ls | grep -v 'No devices')
    [ -z "${1:-}" ] || dms=$(echo "$dms" | grep -v "^$1")
    if ! ls /sys/block | grep -q '^md' && [ -z "$dms" ] && ! grep -q " $mnt " /proc/mounts; then
      [ $i = 0 ] || echo "(nothing left after $i x 0.1 s)"
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  echo "left: $(ls /sys/block | grep '^md' | tr '\n' ' ')$(echo "$dms" | tr '\n' ' ')$(grep " $mnt " /proc/mounts)"
  return 1
}

# stripe_of DEV: the stripe unit and width the filesystem on DEV records,
# in its blocks, read with the filesystem's own tools ("0 0": none).
stripe_of() {
  case $(blkid -o value -s TYPE "$1") in
    ext4) dumpe2fs -h "$1" 2>/dev/null | awk -F: '
        /^RAID stride:/ { u = $2 + 0 } /^RAID stripe width:/ { w = $2 + 0 }
        END { print u + 0, w + 0 }' ;;
    xfs) xfs_db -r -c 'sb 0' -c 'p unit' -c 'p width' "$1" | awk '{ v[NR] = $3 } END { print v[1] + 0, v[2] + 0 }' ;;
    *) echo "no ext4 or xfs on $1" ;;
  esac
}

# fs_clean DEV: the filesystem's own checker, read-only, finds nothing
# to repair (DEV unmounted).
fs_clean() {
  case $(blkid -o value -s TYPE "$1") in
    ext4) e2fsck -fn "$1" ;;
    xfs) xfs_repair -n "$1" ;;
    *) echo "no ext4 or xfs on $1"; return 1 ;;
  esac
}

finish() {
  echo "EPHEMERA-CHECKS passed=$passes failed=$fails"
  [ "$fails" -eq 0 ]
}
