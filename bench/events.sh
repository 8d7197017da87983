#!/usr/bin/env bash
# The cost of the events watcher (`ephemera events --watch`), on the host,
# against the IMDS test server on 127.0.0.1 (examples/imds_server.rs), next to
# what a user would run instead: a shell loop with curl.
#
# usage: bench/events.sh [SECONDS]   (default 60; the watcher polls every second)
# prints one line per figure:
#   EVENTS rss_kib=... hwm_kib=...           the watcher's resident memory
#   EVENTS cpu_ms_per_poll=...                user+system CPU per poll
#   EVENTS switches_per_poll=...              voluntary+involuntary context switches per poll
#   EVENTS wakeups_per_hour_at_10s=...        switches per poll x 360 (the default interval)
#   CURL cpu_ms_per_poll=... max_rss_kib=...  one poll as 4 curl calls (token + 3 documents)
# Builds release binaries with cargo; needs curl and /usr/bin/time. Writes only
# under a temp folder. Figures vary with the host's load: run it on an idle one.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
port=${EPHEMERA_BENCH_IMDS_PORT:-18169}

cargo build --locked --release --quiet --bin ephemera --example imds_server
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/imds"
cat >"$tmp/imds/scheduled.json" <<'EOF'
[{"NotBefore": "21 Jan 2031 09:00:43 GMT", "Code": "system-reboot", "Description": "scheduled reboot",
  "EventId": "instance-event-bench", "NotAfter": "21 Jan 2031 09:17:23 GMT", "State": "active"}]
EOF
target/release/examples/imds_server "$port" "$tmp/imds" >"$tmp/imds.log" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$tmp/imds.log" && break; sleep 0.1; done
grep -q listening "$tmp/imds.log" || { echo "events.sh: the IMDS test server did not start" >&2; exit 1; }

cat >"$tmp/config.toml" <<EOF
[events]
endpoint = "http://127.0.0.1:$port"
interval_secs = 1
textfile = "$tmp/ephemera.prom"
seen_file = "$tmp/seen.json"
EOF
target/release/ephemera --config "$tmp/config.toml" events --watch 2>"$tmp/watch.log" &
wpid=$!
pids+=("$wpid")

last_success() { sed -n 's/^ephemera_imds_last_success_timestamp_seconds //p' "$tmp/ephemera.prom" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$wpid/stat"; }
switches() { awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s}' /proc/"$wpid"/task/*/status; }

# Warm up: the first poll (token, first warning) is not the steady state.
for _ in $(seq 100); do [[ $(last_success) != 0 ]] && break; sleep 0.1; done
sleep 2
t0=$(last_success) c0=$(cpu_ticks) s0=$(switches)
sleep "$secs"
t1=$(last_success) c1=$(cpu_ticks) s1=$(switches)
polls=$((t1 - t0))
((polls > 0)) || { echo "events.sh: the watcher did not poll" >&2; exit 1; }
hz=$(getconf CLK_TCK)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$wpid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$wpid/status")
echo "EVENTS polls=$polls seconds=$secs threads=$(ls /proc/$wpid/task | wc -l)"
echo "EVENTS rss_kib=$rss hwm_kib=$hwm"
awk -v c=$((c1 - c0)) -v hz="$hz" -v p="$polls" 'BEGIN {printf "EVENTS cpu_ms_per_poll=%.2f\n", c * 1000 / hz / p}'
awk -v s=$((s1 - s0)) -v p="$polls" 'BEGIN {printf "EVENTS switches_per_poll=%.1f\nEVENTS wakeups_per_hour_at_10s=%.0f\n", s / p, s / p * 360}'

# The alternative: a shell loop that polls with curl (token + 3 documents).
cat >"$tmp/curl-poll.sh" <<EOF
#!/bin/sh
base=http://127.0.0.1:$port
t=\$(curl -s -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" \$base/latest/api/token)
for p in events/maintenance/scheduled spot/instance-action events/recommendations/rebalance; do
  curl -s -H "X-aws-ec2-metadata-token: \$t" \$base/latest/meta-data/\$p >/dev/null
done
EOF
chmod +x "$tmp/curl-poll.sh"
n=50
/usr/bin/time -f "%U %S %M" -o "$tmp/curl.time" sh -c "for i in \$(seq $n); do $tmp/curl-poll.sh; done"
read -r u s m <"$tmp/curl.time"
awk -v u="$u" -v s="$s" -v n="$n" -v m="$m" 'BEGIN {printf "CURL cpu_ms_per_poll=%.2f max_rss_kib=%d\n", (u + s) * 1000 / n, m}'
