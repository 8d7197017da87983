#!/usr/bin/env bash
# Renders a bench result JSON (bench/results/latest.json, scale.json) as the
# Markdown tables of docs/PERFORMANCE.md.
# usage: bench/tables.sh [RESULT.json]
set -euo pipefail
f=${1:-$(dirname "$0")/results/latest.json}
jq -r '
  def s: if .n == 0 then "-" else "\(.median) (\(.min)-\(.max), n=\(.n))" end;
  def size: if .disk_gib >= 1024 and .disk_gib % 1024 == 0 then "\(.disk_gib / 1024) TiB" else "\(.disk_gib) GiB" end;
  def point_label: "\(.disks) x \(size)\(if .fs == "xfs" then " xfs" else "" end)";
  def mib: if . == null then "-" else "\(. / 1024 * 10 | round / 10)" end;
  "### Provision: seconds from process start to mounted, median (min-max, n)\n",
  "| disks x size | ephemera | naive | floor | ephemera/naive | ephemera/floor |",
  "| --- | --- | --- | --- | --- | --- |",
  (.points[] | "| \(point_label) | \(.ephemera | s) | \(.naive | s) | \(.floor | s) | \(.ratio_ephemera_naive // "-") | \(.ratio_ephemera_floor // "-") |"),
  (if any(.points[]; (.["ephemera-before"].n // 0) > 0) then
    "\n### ephemera against an earlier build (BENCH_BEFORE), same boots\n",
    "| disks x size | ephemera | ephemera-before | ephemera/before |", "| --- | --- | --- | --- |",
    (.points[] | select((.["ephemera-before"].n // 0) > 0) |
      "| \(point_label) | \(.ephemera | s) | \(.["ephemera-before"] | s) | \(.ratio_ephemera_before) |")
  else empty end),
  "\n### Where the time goes: median seconds per step\n",
  "| disks x size | ephemera | naive | floor |", "| --- | --- | --- | --- |",
  (.points[] | "| \(point_label) | " +
    ([.ephemera, .naive, .floor] | map(.steps_median // {} | to_entries | map("\(.key) \(.value)") | join(", ")) | join(" | ")) + " |"),
  (if any(.points[]; (.floor.io_median_kib // {}) | has("mkfs_write_kib")) then
    "\n### Bytes through the dm-crypt mapping (the kernel'"'"'s counts, /sys/block/dm-N/stat), MiB, median\n",
    "| disks x size | ephemera written | ephemera read | floor: mkfs written | floor: mount read |",
    "| --- | --- | --- | --- | --- |",
    (.points[] | "| \(point_label) | \(.ephemera.io_median_kib.write_kib | mib) | \(.ephemera.io_median_kib.read_kib | mib) | \(.floor.io_median_kib.mkfs_write_kib | mib) | \(.floor.io_median_kib.mount_read_kib | mib) |")
  else empty end),
  (if (.scaling.size_1g_to_1t | length) + (.scaling.disks_1_to_8 | length) > 0 then
    "\n### Scaling (ratio of medians)\n",
    "| growth | ephemera | floor | naive |", "| --- | --- | --- | --- |",
    (.scaling.size_1g_to_1t[] | "| 1 GiB -> 1 TiB per disk, \(.disks) disk(s) | \(.ephemera) | \(.floor) | \(.naive // "-") |"),
    (.scaling.disks_1_to_8[] | "| 1 -> 8 disks, \(.disk_gib) GiB each | \(.ephemera) | \(.floor) | \(.naive // "-") |")
  else empty end),
  (if (.mkfs_options // [] | length) > 0 then
    "\n### mkfs and mount options: median seconds, MiB through the mapping, check\n",
    "| options | mkfs s | mkfs wrote MiB | mount s | mount read MiB | fsck (exit, s) |",
    "| --- | --- | --- | --- | --- | --- |",
    (.mkfs_options[] | "| \(.name) | \(.mkfs_s | s) | \(.mkfs_write_kib | mib) | \(.mount_s | s) | \(.mount_read_kib | mib) | \(.fsck_rc // "-"), \(.fsck_s // "-") |")
  else empty end),
  (if (.throughput.configs | length) > 0 then
    "\n### Throughput, EMULATED (QEMU TCG): MB/s and ratio to the raw array\n",
    "| config (cipher:sector:workqueues[:key bits, 512 unless named]) | write MB/s | write / raw | read MB/s | read / raw |",
    "| --- | --- | --- | --- | --- |",
    (.throughput.configs[] | "| \(.config) | \(.write_mbs.median) | \(.write_vs_raw) | \(.read_mbs.median) | \(.read_vs_raw) |")
  else empty end)' "$f"
