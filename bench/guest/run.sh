# shellcheck shell=sh
# ephemera bench, guest side (busybox sh, PID 1's child in the test VM).
# Reads /scenario/params.sh:
#   MODE=provision   RUNS, NAIVE_RUNS (<= RUNS), PIPELINES ("ephemera naive floor"), SERIALS,
#                    FS (ext4 or xfs: ephemera's [filesystem] type and the floor's mkfs)
#   MODE=throughput  REPS, MIB, SERIALS
#   MODE=mkfs        REPS, SERIALS, OPTSETS (lines "NAME FS MKFS-ARGS...")
# and prints one "BENCH-RESULT {json}" line per measurement, which the host
# (bench/bench.sh) collects. Before each timed provision run everything is
# torn down and every signature wiped, so each run starts from blank disks.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
cd /scenario || exit 1
. ./params.sh
. ./steps.sh
bench_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
MNT=/mnt/bench

say() { echo "bench: $*"; }
die() { echo "bench: error: $*"; exit 1; }

dev_of() {
  for d in /sys/block/nvme*n1; do
    if [ "$(tr -d ' ' <"$d/device/serial")" = "$1" ]; then echo "/dev/${d##*/}"; return 0; fi
  done
  return 1
}
DEVS=
for s in $SERIALS; do
  d=$(dev_of "$s") || die "no NVMe disk with serial $s"
  DEVS="$DEVS $d"
done
DEVS=${DEVS# }
say "clock: /proc/uptime; disks: $DEVS; cpus: $(grep -c ^processor /proc/cpuinfo)"
say "cpu: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1); flags: $(grep -m1 -o -w 'aes\|avx\|avx2\|vaes' /proc/cpuinfo | sort -u | paste -sd' ')"
say "kernel: $(uname -r); mem: $(sed -n 's/^MemTotal: *//p' /proc/meminfo)"
say "versions: $(cryptsetup --version); $(mdadm --version 2>&1); $(dumpe2fs -V 2>&1 | head -n 1)"

teardown() {
  if grep -q " $MNT " /proc/mounts; then umount "$MNT" || die "umount $MNT"; fi
  for n in ephemera naive floor; do
    [ -e /dev/mapper/$n ] || continue
    cryptsetup close $n 2>/dev/null || dmsetup remove $n || die "closing $n"
  done
  for md in /sys/block/md*; do
    [ -e "$md" ] || continue
    mdadm --stop "/dev/${md##*/}" >/dev/null 2>&1 || mdadm --stop "/dev/md/${md##*/}" >/dev/null 2>&1 ||
      die "stopping ${md##*/}"
  done
  # md deletes a stopped array asynchronously; wait for it to go.
  i=0
  while ls -d /sys/block/md* >/dev/null 2>&1 && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
  ls -d /sys/block/md* >/dev/null 2>&1 && die "md arrays still present: $(ls -d /sys/block/md*)"
  rm -rf /dev/md
  for d in $DEVS; do
    wipefs -a -q "$d" || die "wipefs $d"
    [ -z "$(blkid -p "$d" 2>/dev/null)" ] || die "signature left on $d: $(blkid -p "$d")"
  done
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

FS=${FS:-ext4}

# Checks the result: an $FS file system on a dm-crypt mapping mounted at $MNT.
check_mounted() {
  line=$(grep " $MNT " /proc/mounts) || return 1
  set -- $line
  [ "$3" = "$FS" ] || return 1
  case $1 in /dev/mapper/* | /dev/dm-*) ;; *) return 1 ;; esac
  dmsetup table "${1#/dev/mapper/}" 2>/dev/null | grep -q ' crypt '
}

cat >/run/ephemera.toml <<CFG
[disks]
model = "QEMU NVMe Ctrl"
[mount]
path = "$MNT"
[filesystem]
type = "$FS"
CFG

# dm_stat NAME: /sys/block/dm-N/stat of the mapping NAME (or dm-N); no udev
# here, so /dev/mapper/NAME is a node, not a link to dm-N.
dm_stat() {
  for d in /sys/block/dm-*; do
    if [ "$(cat "$d/dm/name")" = "$1" ] || [ "${d##*/}" = "$1" ]; then cat "$d/stat"; return 0; fi
  done
  die "no mapping $1"
}

# run_pipeline NAME: one timed run from process start to mounted.
run_pipeline() {
  p=$1
  case $p in
    ephemera) set -- ephemera provision --config /run/ephemera.toml ;;
    ephemera-before) set -- ephemera-before provision --config /run/ephemera.toml ;;
    naive) set -- sh ./naive.sh "$MNT" $DEVS ;;
    floor) set -- env FLOOR_FS="$FS" sh ./floor.sh "$MNT" $DEVS ;;
    *) die "unknown pipeline $p" ;;
  esac
  read -r t0 _ </proc/uptime
  BENCH_STEP=1 "$@" >/tmp/out 2>/tmp/err
  rc=$?
  read -r t1 _ </proc/uptime
  secs=$(bench_elapsed "$t0" "$t1")
  sed 's/^/    /' /tmp/err
  [ $rc -eq 0 ] || die "$p exited $rc"
  check_mounted || die "$p: no $FS on dm-crypt at $MNT"
  # KiB the mapping read and wrote from its creation to mounted (the
  # kernel's counts); the floor also reports them for mkfs and for mount.
  dev=$(grep " $MNT " /proc/mounts | cut -d' ' -f1)
  set -- $(dm_stat "${dev##*/}")
  io="\"read_kib\":$(($3 / 2)),\"write_kib\":$(($7 / 2))"
  io=$io$(awk '$1 == "IO" && NF == 4 { printf ",\"%s_read_kib\":%d,\"%s_write_kib\":%d", $2, ($3 - r) / 2, $2, ($4 - w) / 2; r = $3; w = $4 }' /tmp/err)
  # Per-step seconds: STEP lines from the scripts, "done step=... ms=" from ephemera.
  steps=$( {
    awk '$1 == "STEP" && NF == 4 { printf "\"%s\":%.3f\n", $2, $4 - $3 }' /tmp/err
    sed -n 's/.* done step="\([^"]*\)" .* ms=\([0-9]*\).*/\1 \2/p' /tmp/err |
      awk '{ ms = $NF; $NF = ""; sub(/ $/, ""); printf "\"%s\":%.3f\n", $0, ms / 1000 }'
  } | paste -sd, -)
  echo "BENCH-RESULT {\"kind\":\"provision\",\"pipeline\":\"$p\",\"run\":$run,\"seconds\":$secs,\"steps\":{$steps},\"io\":{$io}}"
}

provision_mode() {
  # Warm-up, untimed: loads md, dm-crypt and the cipher modules once, and
  # brings each measured program and its libraries into the page cache, so
  # the first timed run of neither pays for it. (The naive pipeline's
  # cryptsetup shares its libraries with ephemera.)
  teardown
  FLOOR_FS=$FS sh ./floor.sh "$MNT" $DEVS || die "warm-up floor run failed"
  teardown
  ephemera provision --config /run/ephemera.toml >/dev/null 2>/tmp/err ||
    { cat /tmp/err; die "warm-up ephemera run failed"; }
  case " $PIPELINES " in
    *" ephemera-before "*)
      teardown
      ephemera-before provision --config /run/ephemera.toml >/dev/null 2>/tmp/err ||
        { cat /tmp/err; die "warm-up ephemera-before run failed"; }
      ;;
  esac
  run=1
  while [ $run -le "$RUNS" ]; do
    for p in $PIPELINES; do
      # The naive pipeline is slow (Argon2 under emulation): NAIVE_RUNS may cap it.
      [ "$p" = naive ] && [ $run -gt "${NAIVE_RUNS:-$RUNS}" ] && continue
      teardown
      say "run $run $p"
      run_pipeline "$p"
    done
    run=$((run + 1))
  done
  teardown
}

# dd_rate WHAT DD-ARGS...: MB/s (10^6) of one direct-I/O dd of $MIB MiB.
dd_rate() {
  t0=$(bench_now)
  dd "$@" bs=1M count="$MIB" 2>/tmp/dd.err || { cat /tmp/dd.err; die "dd $*"; }
  t1=$(bench_now)
  awk -v a="$t0" -v b="$t1" -v m="$MIB" 'BEGIN { printf "%.2f", m * 1.048576 / (b - a) }'
}

throughput_mode() {
  teardown
  set -- $DEVS
  if [ $# -gt 1 ]; then
    mdadm --build /dev/md/tp --level=0 --raid-devices=$# --chunk=256 "$@" || die "mdadm --build"
    base=/dev/md/tp
  else
    base=$1
  fi
  sectors=$(blockdev --getsz "$base")
  head -c 64 /dev/urandom | hexdump -ve '1/1 "%02x"' >/run/tp.key
  rep=1
  while [ $rep -le "$REPS" ]; do
    # cipher:sector:workqueues[:key bits] (512 unless named: XTS halves it,
    # so 512 is AES-256 and 256 is AES-128).
    for cfg in raw \
      twofish-xts-plain64:4096:off aes-xts-plain64:4096:off \
      twofish-xts-plain64:4096:off:256 aes-xts-plain64:4096:off:256 \
      twofish-xts-plain64:512:off aes-xts-plain64:512:off \
      twofish-xts-plain64:4096:on aes-xts-plain64:4096:on; do
      if [ $cfg = raw ]; then
        dev=$base cipher=none ss=0 wq=none bits=0
      else
        cipher=${cfg%%:*} rest=${cfg#*:} ss=${rest%%:*} wq=${rest#*:} bits=512
        case $wq in *:*) bits=${wq#*:} wq=${wq%%:*} ;; esac
        opts=
        [ "$wq" = off ] && opts="no_read_workqueue no_write_workqueue"
        [ "$ss" != 512 ] && opts="$opts sector_size:$ss"
        opts=${opts# }
        # shellcheck disable=SC2086
        nopt=$(echo $opts | wc -w)
        table="0 $sectors crypt $cipher $(head -c $((bits / 4)) /run/tp.key) 0 $base 0"
        [ "$nopt" -gt 0 ] && table="$table $nopt $opts"
        dmsetup create tp --table "$table" || die "dmsetup create ($cfg)"
        [ -e /dev/mapper/tp ] || dmsetup mknodes tp
        dev=/dev/mapper/tp
        # Which kernel code does the cipher: the xts entries in use.
        [ "$rep" = 1 ] && awk -v cfg="$cfg" '
          /^name/ { n = $3 } /^driver/ { d = $3 } /^priority/ { p = $3 } /^refcnt/ { r = $3 }
          /^$/ { if (n ~ /^xts\(/ && r > 1) print "bench: crypto: " cfg ": " n " driver " d " priority " p; n = "" }' /proc/crypto
      fi
      sync
      echo 3 >/proc/sys/vm/drop_caches
      w=$(dd_rate if=/dev/zero of="$dev" oflag=direct)
      echo 3 >/proc/sys/vm/drop_caches
      r=$(dd_rate if="$dev" of=/dev/null iflag=direct)
      [ $cfg = raw ] || dmsetup remove tp || die "dmsetup remove"
      echo "BENCH-RESULT {\"kind\":\"throughput\",\"config\":\"$cfg\",\"cipher\":\"$cipher\",\"sector_size\":$ss,\"workqueues\":\"$wq\",\"key_bits\":$bits,\"rep\":$rep,\"mib\":$MIB,\"write_mbs\":$w,\"read_mbs\":$r}"
    done
    rep=$((rep + 1))
  done
  rm -f /run/tp.key
  teardown
}

# The kernel's sectors read and written by the floor's mapping so far.
dm_io() {
  set -- $(dm_stat floor)
  echo "$3 $7"
}

# mkfs and mount options at one size: one md array and one twofish-xts
# mapping as the floor makes them, then for each option set, interleaved
# REPS times: mkfs (timed, with the mapping's bytes read and written),
# mount (the same), unmount; on the first rep, the filesystem's own check
# (e2fsck -fn, xfs_repair -n) and the kernel's mount messages.
mkfs_mode() {
  teardown
  set -- $DEVS
  if [ $# -gt 1 ]; then
    mdadm --build /dev/md/floor --level=0 --raid-devices=$# --chunk=256 "$@" >/dev/null || die "mdadm --build"
    base=/dev/md/floor
  else
    base=$1
  fi
  sectors=$(blockdev --getsz "$base")
  say "array: $((sectors / 2 / 1024 / 1024)) GiB"
  dmsetup create floor --table "0 $sectors crypt twofish-xts-plain64 \
$(head -c 64 /dev/urandom | hexdump -ve '1/1 "%02x"') 0 $base 0 3 no_read_workqueue no_write_workqueue sector_size:4096" ||
    die "dmsetup create"
  [ -e /dev/mapper/floor ] || dmsetup mknodes floor
  dev=/dev/mapper/floor
  mkdir -p "$MNT"
  rep=1
  while [ $rep -le "$REPS" ]; do
    while read -r name fs args; do
      [ -n "$name" ] || continue
      wipefs -a -q $dev || die "wipefs"
      sync
      echo 3 >/proc/sys/vm/drop_caches
      set -- $(dm_io)
      r0=$1 w0=$2
      t0=$(bench_now)
      # shellcheck disable=SC2086
      case $fs in
        ext4) mkfs.ext4 -q -F $args $dev ;;
        xfs) mkfs.xfs -q -f $args $dev ;;
      esac >/tmp/mkfs.out 2>&1 || {
        # An option set mkfs refuses at this size is a result, not the end.
        grep -v '^[/<	 ]\|^Usage' /tmp/mkfs.out | sed "s/^/    $name mkfs: /"
        echo "BENCH-RESULT {\"kind\":\"mkfs-refused\",\"name\":\"$name\",\"fs\":\"$fs\",\"args\":\"$args\",\"rep\":$rep}"
        continue
      }
      t1=$(bench_now)
      set -- $(dm_io)
      r1=$1 w1=$2
      echo 3 >/proc/sys/vm/drop_caches
      dmesg -c >/dev/null
      t2=$(bench_now)
      mount -t "$fs" -o noatime $dev "$MNT" || die "$name: mount"
      t3=$(bench_now)
      set -- $(dm_io)
      r2=$1 w2=$2
      umount "$MNT" || die "$name: umount"
      fsck=
      if [ $rep = 1 ]; then
        dmesg | sed "s/^/    $name dmesg: /"
        t4=$(bench_now)
        case $fs in
          ext4) e2fsck -fn $dev >/tmp/fsck.out 2>&1 ;;
          xfs) xfs_repair -n $dev >/tmp/fsck.out 2>&1 ;;
        esac
        rc=$?
        t5=$(bench_now)
        [ $rc = 0 ] || sed "s/^/    $name fsck: /" /tmp/fsck.out
        fsck=",\"fsck_rc\":$rc,\"fsck_s\":$(bench_elapsed "$t4" "$t5")"
      fi
      echo "BENCH-RESULT {\"kind\":\"mkfs\",\"name\":\"$name\",\"fs\":\"$fs\",\"args\":\"$args\",\"rep\":$rep,\"mkfs_s\":$(bench_elapsed "$t0" "$t1"),\"mkfs_read_kib\":$(((r1 - r0) / 2)),\"mkfs_write_kib\":$(((w1 - w0) / 2)),\"mount_s\":$(bench_elapsed "$t2" "$t3"),\"mount_read_kib\":$(((r2 - r1) / 2)),\"mount_write_kib\":$(((w2 - w1) / 2))$fsck}"
    done <<EOF
$OPTSETS
EOF
    rep=$((rep + 1))
  done
  teardown
}

case $MODE in
  provision) provision_mode ;;
  mkfs) mkfs_mode ;;
  throughput) throughput_mode ;;
  *) die "unknown MODE $MODE" ;;
esac
echo "bench: done"
exit 0
