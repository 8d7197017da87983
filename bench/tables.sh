#!/usr/bin/env bash
# Renders a bench result JSON (bench/results/latest.json) as the Markdown
# tables of docs/PERFORMANCE.md.
# usage: bench/tables.sh [RESULT.json]
set -euo pipefail
f=${1:-$(dirname "$0")/results/latest.json}
jq -r '
  def s: if .n == 0 then "-" else "\(.median) (\(.min)-\(.max), n=\(.n))" end;
  "### Provision: seconds from process start to mounted, median (min-max, n)\n",
  "| disks x size | ephemera | naive | floor | ephemera/naive | ephemera/floor |",
  "| --- | --- | --- | --- | --- | --- |",
  (.points[] | "| \(.disks) x \(if .disk_gib >= 1024 then "\(.disk_gib / 1024) TiB" else "\(.disk_gib) GiB" end) | \(.ephemera | s) | \(.naive | s) | \(.floor | s) | \(.ratio_ephemera_naive // "-") | \(.ratio_ephemera_floor // "-") |"),
  "\n### Where the time goes: median seconds per step\n",
  "| disks x size | ephemera | naive | floor |", "| --- | --- | --- | --- |",
  (.points[] | "| \(.disks) x \(.disk_gib) GiB | " +
    ([.ephemera, .naive, .floor] | map(.steps_median // {} | to_entries | map("\(.key) \(.value)") | join(", ")) | join(" | ")) + " |"),
  "\n### Scaling (ratio of medians)\n",
  "| growth | ephemera | floor | naive |", "| --- | --- | --- | --- |",
  (.scaling.size_1g_to_1t[] | "| 1 GiB -> 1 TiB per disk, \(.disks) disk(s) | \(.ephemera) | \(.floor) | \(.naive // "-") |"),
  (.scaling.disks_1_to_8[] | "| 1 -> 8 disks, \(.disk_gib) GiB each | \(.ephemera) | \(.floor) | \(.naive // "-") |"),
  (if (.throughput.configs | length) > 0 then
    "\n### Throughput, EMULATED (QEMU TCG): MB/s and ratio to the raw array\n",
    "| config (cipher:sector:workqueues[:key bits, 512 unless named]) | write MB/s | write / raw | read MB/s | read / raw |",
    "| --- | --- | --- | --- | --- |",
    (.throughput.configs[] | "| \(.config) | \(.write_mbs.median) | \(.write_vs_raw) | \(.read_mbs.median) | \(.read_vs_raw) |")
  else empty end)' "$f"
