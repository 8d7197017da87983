#!/usr/bin/env bash
# ephemera bench, host side. Boots the QEMU test guest (tests/vm) once per
# measured point (disk count x disk size, sparse images) and, in that one
# boot, times ephemera `provision`, the naive pipeline (bench/naive.sh) and
# the kernel floor (bench/floor.sh), interleaved, from blank disks each time.
# Then it writes the raw figures and a summary as JSON and prints tables.
#
# usage: bench/bench.sh [--ci | --scale] [--out FILE] [--binary PATH] [--no-build]
#   --ci        reduced: 1 and 2 disks x 1 GiB and 1 TiB, no throughput; exits 1
#               when ephemera/floor (medians) exceeds $BENCH_CI_MAX_FLOOR_RATIO
#               (default 2.0) at any point, or ephemera/naive exceeds
#               $BENCH_CI_MAX_NAIVE_RATIO (default 0.3) where naive ran
#               (bench/summarize.sh says why these bounds)
#   --scale     the largest instance-store shape, 8 x 7.5 TB (8 x 6985 GiB,
#               60 TB), with ext4 and xfs, against 8 x 1 TiB; then one boot
#               that times mkfs and mount with each option set of
#               BENCH_MKFS_OPTS at 60 TB and counts the bytes they read and
#               write (bench/results/scale.json)
#   --out FILE  JSON output (default bench/results/latest.json; target/bench-ci.json with --ci)
#   --binary P  the ephemera binary to measure (default: cargo build --release)
# env: EPHEMERA_VM_CACHE (default <repo>/target/vm-bench), BENCH_RUNS, BENCH_NAIVE_RUNS,
#      BENCH_TIMEOUT (per boot, s), BENCH_POINTS ("DISKSxGIB[:FS] ..." to override the
#      list; FS is ext4, the default, or xfs: ephemera's [filesystem] type and the
#      floor's; "": no points, only the throughput boot or the options boot),
#      BENCH_MKFS_OPTS (--scale: lines "NAME FS MKFS-ARGS...", "" for none),
#      BENCH_BEFORE (another ephemera binary, e.g. main's: timed as the pipeline
#      "ephemera-before", interleaved with the others in each boot),
#      BENCH_WORK (scratch folder, default <repo>/target/bench-work).
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export EPHEMERA_VM_CACHE=${EPHEMERA_VM_CACHE:-$repo/target/vm-bench}

ci='' scale='' out='' binary='' build=1
while (($#)); do
  case $1 in
    --ci) ci=1; shift ;;
    --scale) scale=1; shift ;;
    --out) out=${2:?}; shift 2 ;;
    --binary) binary=${2:?}; shift 2 ;;
    --no-build) build=''; shift ;;
    *) echo "usage: $0 [--ci | --scale] [--out FILE] [--binary PATH] [--no-build]" >&2; exit 2 ;;
  esac
done
log() { echo "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }
((EUID == 0)) || die "run as root (the guest build needs it)"

if [[ -n $ci ]]; then
  # 1 and 2 disks x 1 GiB and 1 TiB. Small points are cheap: more runs
  # there steady the median. The naive pipeline runs once, at 1 GiB only
  # (at 1 TiB it zeroes a 1 GiB journal: minutes under emulation).
  points=${BENCH_POINTS:-"1x1 1x1024 2x1 2x1024"}
  runs=${BENCH_RUNS:-5} small_runs=${BENCH_RUNS:-9} naive_runs=${BENCH_NAIVE_RUNS:-1} big_naive_runs=${BENCH_NAIVE_RUNS:-0}
  throughput=''
  out=${out:-target/bench-ci.json}
elif [[ -n $scale ]]; then
  # 7.5 TB = 6985 GiB (7.50 x 10^12 bytes). The images are sparse: the host
  # holds what mkfs writes (up to 2 GiB per disk set), removed after each boot.
  points=${BENCH_POINTS-"8x1024 8x1024:xfs 8x6985 8x6985:xfs"}
  runs=${BENCH_RUNS:-3} small_runs=$runs naive_runs=0 big_naive_runs=0
  throughput=''
  out=${out:-bench/results/scale.json}
  mkfs_gib=${BENCH_MKFS_GIB:-6985}
else
  points=${BENCH_POINTS-"1x1 2x1 4x1 8x1 1x16 1x128 1x1024 2x1024 4x1024 8x1024"}
  runs=${BENCH_RUNS:-3} small_runs=${BENCH_RUNS:-7} naive_runs=${BENCH_NAIVE_RUNS:-2} big_naive_runs=${BENCH_NAIVE_RUNS:-1}
  throughput=1
  out=${out:-bench/results/latest.json}
fi
timeout=${BENCH_TIMEOUT:-$([[ -n $scale ]] && echo 3600 || echo 900)}
mem=2048

# Tools: the guest build installs QEMU and the guest's tools; jq for the JSON.
scripts/host-tools.sh bench
if [[ -z $binary ]]; then
  if [[ -n $build ]]; then
    scripts/install-deps.sh >&2
    cargo build --release --locked >&2
  fi
  binary=$repo/target/release/ephemera
fi
[[ -x $binary ]] || die "no ephemera binary at $binary"
tests/vm/build-guest.sh >&2
# xfs_repair, for the --scale options boot's check of each xfs it makes.
extra=("$(command -v xfs_repair)") before=''
if [[ -n ${BENCH_BEFORE:-} ]]; then
  [[ -x $BENCH_BEFORE ]] || die "BENCH_BEFORE: no binary at $BENCH_BEFORE"
  mkdir -p target/bench-before
  cp "$BENCH_BEFORE" target/bench-before/ephemera-before
  extra+=("$repo/target/bench-before/ephemera-before") before=' ephemera-before'
fi
tests/vm/build-guest.sh add-binary "$binary" "${extra[@]}" >&2

work=${BENCH_WORK:-$repo/target/bench-work}
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
raw=$work/raw.jsonl
: >"$raw"
started=$(date -u +%FT%TZ)
t_start=$SECONDS

# boot_point NAME MODE DISKS GIB PARAMS...: one VM boot; appends its results to $raw.
boot_point() {
  local name=$1 mode=$2 n=$3 gib=$4 dir i args=() rc=0
  shift 4
  dir=$work/$name
  mkdir -p "$dir/scen"
  cp bench/guest/run.sh bench/naive.sh bench/floor.sh bench/steps.sh "$dir/scen/"
  {
    echo "MODE=$mode"
    printf '%s\n' "$@"
    printf 'SERIALS="'
    for ((i = 0; i < n; i++)); do printf 'BENCH%d ' "$i"; done
    echo '"'
  } >"$dir/scen/params.sh"
  for ((i = 0; i < n; i++)); do
    truncate -s "${gib}G" "$dir/d$i.img"
    args+=(--disk "$dir/d$i.img:BENCH$i")
  done
  log "$name: $n disk(s) x $gib GiB, $mode (load $(cut -d' ' -f1-3 /proc/loadavg))"
  tests/vm/run-guest.sh --scenario "$dir/scen" "${args[@]}" --log "$dir/serial.log" \
    --timeout "$timeout" --mem "$mem" >&2 || rc=$?
  rm -f "$dir"/d*.img
  ((rc == 0)) || die "$name: guest exited $rc; see $dir/serial.log"
  tr -d '\r' <"$dir/serial.log" | sed -n 's/^BENCH-RESULT //p' |
    jq -c --arg point "$name" --argjson disks "$n" --argjson gib "$gib" --arg fs "${fs:-ext4}" \
      '. + {point: $point, disks: $disks, disk_gib: $gib} + (if .kind == "provision" then {fs: $fs} else {} end)' >>"$raw"
  grep -q '^bench: clock' "$dir/serial.log" && tr -d '\r' <"$dir/serial.log" | grep '^bench: \(clock\|cpu\|kernel\|versions\)' >"$work/guest-info.txt"
}

for p in $points; do
  fs=ext4
  [[ $p == *:* ]] && fs=${p#*:} p=${p%%:*}
  [[ $fs == ext4 || $fs == xfs ]] || die "point $p: filesystem $fs is not ext4 or xfs"
  n=${p%x*} gib=${p#*x} r=$runs nr=$naive_runs pipelines="ephemera$before naive floor" name=d${p%x*}-${p#*x}g
  if ((gib <= 16)); then r=$small_runs; else nr=$big_naive_runs; fi
  # The naive pipeline is ext4's (mkfs.ext4 with its defaults).
  [[ $fs == xfs ]] && pipelines="ephemera$before floor" name=$name-xfs
  boot_point "$name" provision "$n" "$gib" "RUNS=$r" "FS=$fs" \
    "PIPELINES=\"$pipelines\"" "NAIVE_RUNS=$nr"
done
# The options study (--scale): ephemera's mkfs options and the candidates,
# each with the kernel's count of what mkfs and mount read and write.
if [[ -n $scale ]]; then
  e='-T largefile4 -m 0 -O ^resize_inode,sparse_super2 -G 256 -E lazy_itable_init=1,lazy_journal_init=1,num_backup_sb=1,nodiscard,stride=64,stripe_width=512'
  # "-4k": ephemera's options below 16 TiB (4 KiB clusters); "-C64k" and
  # "-l512m" are ephemera's at this size; "xfs" is mkfs.xfs's own log size.
  opts=${BENCH_MKFS_OPTS-"ext4-4k ext4 $e
ext4-4k-J128 ext4 ${e/-G 256/-G 256 -J size=128}
ext4-4k-G1024 ext4 ${e/-G 256/-G 1024}
ext4-4k-packed ext4 ${e/nodiscard/nodiscard,packed_meta_blocks=1}
ext4-C16k ext4 ${e/sparse_super2/sparse_super2,bigalloc -C 16k}
ext4-C64k ext4 ${e/sparse_super2/sparse_super2,bigalloc -C 64k}
xfs xfs -K -d su=256k,sw=8
xfs-l512m xfs -K -d su=256k,sw=8 -l size=512m
xfs-l64m xfs -K -d su=256k,sw=8 -l size=64m
xfs-ag110-l512m xfs -K -d su=256k,sw=8,agcount=110 -l size=512m"}
  if [[ -n $opts ]]; then
    boot_point mkfs-options mkfs 8 "$mkfs_gib" "REPS=${BENCH_REPS:-2}" "OPTSETS=\"$opts\""
  fi
fi
if [[ -n $throughput ]]; then
  boot_point throughput throughput 2 4 "REPS=${BENCH_REPS:-3}" "MIB=${BENCH_MIB:-64}"
fi

# The machine, for the report, then the summary and the tables.
BENCH_SECONDS=$((SECONDS - t_start)) BENCH_STARTED=$started BENCH_MODE=$([[ -n $ci ]] && echo ci || { [[ -n $scale ]] && echo scale; } || echo full) \
  BENCH_GUEST_INFO=$work/guest-info.txt bench/summarize.sh "$raw" "$out"
