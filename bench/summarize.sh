#!/usr/bin/env bash
# Summarizes the raw figures of bench/bench.sh (one JSON object a line) into
# the result JSON (medians, spreads, ratios, scaling) and prints the tables
# and the PASS/FAIL line.
# usage: bench/summarize.sh RAW.jsonl OUT.json
# env:   BENCH_MODE (ci: exit 1 on FAIL), BENCH_CI_MAX_FLOOR_RATIO (default 2.0),
#        BENCH_CI_MAX_NAIVE_RATIO (default 0.3),
#        BENCH_SECONDS, BENCH_STARTED, BENCH_GUEST_INFO (set by bench.sh)
# The gate is what emulation measures reliably (docs/PERFORMANCE.md,
# "Targets: which hold"): ephemera at most 0.3x the naive pipeline where it
# ran (0.015-0.054 measured: no Argon2, no journal zeroing), and at most 2x
# the kernel floor at every point (1.25-1.67 measured from boot to boot; a
# regression such as a full-device write or a key derivation doubles it).
# The 1.5x goal is reported, not gated: at 1 GiB the fixed cost puts it at
# 1.4-1.7 from one boot to the next.
set -euo pipefail
export LC_ALL=C
raw=${1:?usage: summarize.sh RAW.jsonl OUT.json}
out=${2:?usage: summarize.sh RAW.jsonl OUT.json}
max_ratio=${BENCH_CI_MAX_FLOOR_RATIO:-2.0}
max_naive=${BENCH_CI_MAX_NAIVE_RATIO:-0.3}
goal=1.5
ci=''
[[ ${BENCH_MODE:-full} == ci ]] && ci=1
started=${BENCH_STARTED:-unknown}
log() { echo "bench: $*" >&2; }

host_json=$(jq -n --arg cpu "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)" \
  --arg nproc "$(nproc)" --arg mem "$(free -g | awk '/^Mem:/ { print $2 " GiB" }')" \
  --arg kernel "$(uname -r)" --arg os "$(. /etc/os-release && echo "$PRETTY_NAME")" \
  --arg qemu "$(qemu-system-x86_64 --version | head -n 1)" \
  --arg guest "$(cat "${BENCH_GUEST_INFO:-/dev/null}" 2>/dev/null)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{cpu: $cpu, cpus: ($nproc | tonumber), memory: $mem, kernel: $kernel, os: $os, qemu: $qemu,
    guest: $guest, guest_vm: "QEMU TCG, 1 vCPU, 2048 MiB, emulated NVMe (cache=writeback)",
    loadavg_at_end: $load}')

jq -s --argjson host "$host_json" --arg started "$started" --arg mode "${BENCH_MODE:-full}" \
  --argjson max "$max_ratio" --argjson maxnaive "$max_naive" --argjson secs "${BENCH_SECONDS:-0}" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r3: if . == null then null else (. * 1000 | round) / 1000 end;
  def div(a; b): if a == null or b == null or b == 0 then null else a / b end;
  def stats: if length == 0 then {n: 0} else {n: length, median: (median | r3), min: (min | r3), max: (max | r3),
    spread_pct: (if length > 1 then (((max - min) / median * 100) | round) else 0 end)} end;
  (map(select(.kind == "provision")) | group_by(.point) | map(
    . as $runs | {point: .[0].point, disks: .[0].disks, disk_gib: .[0].disk_gib, fs: (.[0].fs // "ext4")} +
    (reduce ("ephemera", "ephemera-before", "naive", "floor") as $p ({};
      .[$p] = ($runs | map(select(.pipeline == $p) | .seconds) | stats)
        + {steps_median: ($runs | map(select(.pipeline == $p) | .steps + {"other": (.seconds - ([.steps[]] | add // 0))}) |
            (map(keys_unsorted) | add // [] | unique) as $ks |
            . as $s | reduce $ks[] as $k ({}; .[$k] = ($s | map(.[$k] // empty) | median | r3))),
           io_median_kib: ($runs | map(select(.pipeline == $p) | .io // {}) |
            (map(keys_unsorted) | add // [] | unique) as $ks |
            . as $s | reduce $ks[] as $k ({}; .[$k] = ($s | map(.[$k] // empty) | median)))}))
    | .ratio_ephemera_naive = (div(.ephemera.median; .naive.median) | r3)
    | .ratio_ephemera_floor = (div(.ephemera.median; .floor.median) | r3)
    | .ratio_ephemera_before = (div(.ephemera.median; .["ephemera-before"].median) | r3))
    | sort_by(.fs, .disks, .disk_gib)) as $points
  | (map(select(.kind == "mkfs")) | group_by(.name) | map(
      {name: .[0].name, fs: .[0].fs, args: .[0].args, n: length,
       mkfs_s: (map(.mkfs_s) | stats), mount_s: (map(.mount_s) | stats),
       mkfs_write_kib: (map(.mkfs_write_kib) | median), mkfs_read_kib: (map(.mkfs_read_kib) | median),
       mount_read_kib: (map(.mount_read_kib) | median), mount_write_kib: (map(.mount_write_kib) | median),
       fsck_rc: (map(.fsck_rc // empty) | first), fsck_s: (map(.fsck_s // empty) | first)})) as $mkfs
  | (map(select(.kind == "throughput")) | group_by(.config) | map(
      {config: .[0].config, cipher: .[0].cipher, sector_size: .[0].sector_size,
       workqueues: .[0].workqueues, mib: .[0].mib,
       write_mbs: (map(.write_mbs) | stats), read_mbs: (map(.read_mbs) | stats)})) as $tp
  | ($tp | map(select(.config == "raw")) | .[0]) as $rawtp
  | {schema: 1, mode: $mode, started: $started, duration_s: $secs, host: $host,
     ci_max_ephemera_floor: $max, points: $points,
     mkfs_options: $mkfs,
     scaling: {
       size_1g_to_1t: ($points | map(select(.fs == "ext4")) | group_by(.disks) | map(
         (map(select(.disk_gib == 1)) | .[0]) as $a | (map(select(.disk_gib == 1024)) | .[0]) as $b
         | select($a != null and $b != null)
         | {disks: $a.disks, ephemera: (div($b.ephemera.median; $a.ephemera.median) | r3),
            floor: (div($b.floor.median; $a.floor.median) | r3), naive: (div($b.naive.median; $a.naive.median) | r3)})),
       disks_1_to_8: ($points | map(select(.fs == "ext4")) | group_by(.disk_gib) | map(
         (map(select(.disks == 1)) | .[0]) as $a | (map(select(.disks == 8)) | .[0]) as $b
         | select($a != null and $b != null)
         | {disk_gib: $a.disk_gib, ephemera: (div($b.ephemera.median; $a.ephemera.median) | r3),
            floor: (div($b.floor.median; $a.floor.median) | r3), naive: (div($b.naive.median; $a.naive.median) | r3)}))},
     throughput: {emulated: true,
       note: "software-emulated CPU (QEMU TCG): only ratios inside this one boot mean anything",
       configs: ($tp | map(. + {write_vs_raw: (div(.write_mbs.median; $rawtp.write_mbs.median) | r3),
                               read_vs_raw: (div(.read_mbs.median; $rawtp.read_mbs.median) | r3)}))},
     ci: {pass: ($points | all((.ratio_ephemera_floor == null or .ratio_ephemera_floor <= $max)
                                and (.ratio_ephemera_naive == null or .ratio_ephemera_naive <= $maxnaive))),
          max_ephemera_floor: $max, max_ephemera_naive: $maxnaive,
          worst_ephemera_floor: ($points | map(.ratio_ephemera_floor) | max),
          worst_ephemera_naive: ($points | map(.ratio_ephemera_naive // empty) | max)},
     raw: .}' "$raw" >"$out.tmp"
mv "$out.tmp" "$out"
log "wrote $out"

# Tables.
echo
echo "provision, seconds from process start to mounted (median [min-max], n):"
jq -r 'def s: if .n == 0 then "-" else "\(.median) [\(.min)-\(.max)] n=\(.n)" end;
  .points[] | [("\(.disks) x \(.disk_gib) GiB \(.fs)"), (.ephemera | s), (.naive | s), (.floor | s),
  (.ratio_ephemera_naive // "-"), (.ratio_ephemera_floor // "-")] | @tsv' "$out" |
  (echo -e "point\tephemera\tnaive\tfloor\teph/naive\teph/floor"; cat) | column -t -s $'\t'
echo
echo "ephemera steps (median s):"
jq -r '.points[] | "\(.disks) x \(.disk_gib) GiB \(.fs): " + (.ephemera.steps_median | to_entries | map("\(.key)=\(.value)") | join(", "))' "$out"
if jq -e '.throughput.configs | length > 0' "$out" >/dev/null; then
  echo
  echo "throughput (EMULATED crypto, QEMU TCG: ratios only), MB/s median and ratio to the raw array:"
  jq -r '.throughput.configs[] | [.config, .write_mbs.median, .write_vs_raw, .read_mbs.median, .read_vs_raw] | @tsv' "$out" |
    (echo -e "config\twrite\tw/raw\tread\tr/raw"; cat) | column -t -s $'\t'
fi
if jq -e '.mkfs_options | length > 0' "$out" >/dev/null; then
  echo
  echo "mkfs options (median s; KiB the dm-crypt mapping read/wrote; fsck exit code):"
  jq -r '.mkfs_options[] | [.name, .mkfs_s.median, .mkfs_write_kib, .mount_s.median, .mount_read_kib, .fsck_rc, .fsck_s] | @tsv' "$out" |
    (echo -e "options\tmkfs_s\tmkfs_w_KiB\tmount_s\tmount_r_KiB\tfsck\tfsck_s"; cat) | column -t -s $'\t'
fi
echo
worst=$(jq -r '.ci.worst_ephemera_floor' "$out")
worst_naive=$(jq -r '.ci.worst_ephemera_naive // "-"' "$out")
over_goal=$(jq -r --argjson g "$goal" \
  '[.points[] | select(.ratio_ephemera_floor > $g) | "\(.disks)x\(.disk_gib)GiB=\(.ratio_ephemera_floor)"] | join(", ")' "$out")
[[ -z $over_goal ]] || echo "goal not met (reported, not gated): ephemera/floor > $goal at: $over_goal"
if jq -e '.ci.pass' "$out" >/dev/null; then
  echo "BENCH PASS: ephemera/floor <= $max_ratio at every point (worst $worst), ephemera/naive <= $max_naive where the naive pipeline ran (worst $worst_naive)"
  exit 0
fi
echo "BENCH FAIL: $(jq -r --argjson m "$max_ratio" --argjson n "$max_naive" \
  '[.points[] | (select(.ratio_ephemera_floor > $m) | "\(.disks)x\(.disk_gib)GiB ephemera/floor=\(.ratio_ephemera_floor) > \($m)"),
                (select(.ratio_ephemera_naive != null and .ratio_ephemera_naive > $n) | "\(.disks)x\(.disk_gib)GiB ephemera/naive=\(.ratio_ephemera_naive) > \($n)")] | join(", ")' "$out")"
[[ -n $ci ]] && exit 1
exit 0
