#!/usr/bin/env bash
# ephemera bench, host side. Boots the QEMU test guest (tests/vm) once per
# measured point (disk count x disk size, sparse images) and, in that one
# boot, times ephemera `provision`, the naive pipeline (bench/naive.sh) and
# the kernel floor (bench/floor.sh), interleaved, from blank disks each time.
# Then it writes the raw figures and a summary as JSON and prints tables.
#
# usage: bench/bench.sh [--ci] [--out FILE] [--binary PATH] [--no-build]
#   --ci        reduced: 1 and 2 disks x 1 GiB and 1 TiB, no throughput; exits 1
#               when ephemera/floor (medians) exceeds $BENCH_CI_MAX_FLOOR_RATIO
#               (default 1.5) at any point
#   --out FILE  JSON output (default bench/results/latest.json; target/bench-ci.json with --ci)
#   --binary P  the ephemera binary to measure (default: cargo build --release)
# env: EPHEMERA_VM_CACHE (default <repo>/target/vm-bench), BENCH_RUNS, BENCH_NAIVE_RUNS,
#      BENCH_TIMEOUT (per boot, s), BENCH_POINTS ("DISKSxGIB ..." to override the list),
#      BENCH_WORK (scratch folder, default <repo>/target/bench-work).
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export EPHEMERA_VM_CACHE=${EPHEMERA_VM_CACHE:-$repo/target/vm-bench}

ci='' out='' binary='' build=1
while (($#)); do
  case $1 in
    --ci) ci=1; shift ;;
    --out) out=${2:?}; shift 2 ;;
    --binary) binary=${2:?}; shift 2 ;;
    --no-build) build=''; shift ;;
    *) echo "usage: $0 [--ci] [--out FILE] [--binary PATH] [--no-build]" >&2; exit 2 ;;
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
else
  points=${BENCH_POINTS:-"1x1 2x1 4x1 8x1 1x16 1x128 1x1024 2x1024 4x1024 8x1024"}
  runs=${BENCH_RUNS:-3} small_runs=${BENCH_RUNS:-7} naive_runs=${BENCH_NAIVE_RUNS:-2} big_naive_runs=${BENCH_NAIVE_RUNS:-1}
  throughput=1
  out=${out:-bench/results/latest.json}
fi
timeout=${BENCH_TIMEOUT:-900}
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
tests/vm/build-guest.sh add-binary "$binary" >&2

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
    jq -c --arg point "$name" --argjson disks "$n" --argjson gib "$gib" \
      '. + {point: $point, disks: $disks, disk_gib: $gib}' >>"$raw"
  grep -q '^bench: clock' "$dir/serial.log" && tr -d '\r' <"$dir/serial.log" | grep '^bench: \(clock\|cpu\|kernel\|versions\)' >"$work/guest-info.txt"
}

for p in $points; do
  n=${p%x*} gib=${p#*x} r=$runs nr=$naive_runs
  if ((gib <= 16)); then r=$small_runs; else nr=$big_naive_runs; fi
  boot_point "d${n}-${gib}g" provision "$n" "$gib" "RUNS=$r" \
    "PIPELINES=\"ephemera naive floor\"" "NAIVE_RUNS=$nr"
done
if [[ -n $throughput ]]; then
  boot_point throughput throughput 2 4 "REPS=${BENCH_REPS:-3}" "MIB=${BENCH_MIB:-64}"
fi

# The machine, for the report, then the summary and the tables.
BENCH_SECONDS=$((SECONDS - t_start)) BENCH_STARTED=$started BENCH_MODE=$([[ -n $ci ]] && echo ci || echo full) \
  BENCH_GUEST_INFO=$work/guest-info.txt bench/summarize.sh "$raw" "$out"
