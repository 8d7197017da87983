# shellcheck shell=sh
# Sourced by naive.sh, floor.sh and the guest driver (busybox sh).
# The clock is /proc/uptime (10 ms resolution; busybox date has no %N), read
# with the shell's own `read`, so timing forks nothing and costs the timed
# scripts next to nothing.
# step NAME CMD...: runs CMD; with BENCH_STEP=1 prints "STEP NAME T0 T1"
# (uptime seconds before and after) on stderr, for the driver to subtract.
bench_now() {
  read -r _up _idle </proc/uptime
  echo "$_up"
}
step() {
  _name=$1
  shift
  if [ "${BENCH_STEP:-}" = 1 ]; then
    read -r _t0 _idle </proc/uptime
    "$@"
    read -r _t1 _idle </proc/uptime
    echo "STEP $_name $_t0 $_t1" >&2
  else
    "$@"
  fi
}
