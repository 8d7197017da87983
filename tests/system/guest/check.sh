#!/bin/bash
# Runs in the full-system test guest (tests/system.rs ships it in the user-data
# as /usr/local/sbin/ephemera-check, started by ephemera-check.service in every
# userspace). Checks the booted system with tools other than ephemera and
# prints TAP-like lines on the serial console:
#   ok - WHAT | not ok - WHAT    one per check
#   FACT NAME VALUE               values the host compares across boots
#   REFUSAL NAME rc=N: MESSAGE    how a refused power action failed
#   EPH-CHECK-END boot=N failed=K
# The instance's life, one kernel boot each (QEMU runs with -no-reboot: a
# reboot ends that run, and the host boots the same disks again):
#   boot 1: the first boot. The volume is made before the data unit. Where
#     systemd has soft-reboot (254+), a soft-reboot: the new userspace must
#     find the volume mounted again with its data. Then every refused action
#     is tried; then the glass is broken and the node reboots.
#   boot 2: a reboot with escrow: ephemera.service keeps the volume (exit 5),
#     the data unit does not start, the disks are as they were. Ops recover it
#     in place with the escrow private key: mounted, guard on, the data unit
#     starts, boot 1's file is there. Break glass, reboot.
#   boot 3: kept again; ops discard it: a new volume, the data unit starts.
#     With UPGRADE_DEB (amd64): the package is upgraded, removed and purged
#     while services that require ephemera.service run (package.sh). Then
#     EPH-READY-FOR-POWERDOWN: the host presses the ACPI power button.
# With MODE=container, a container node's two boots instead (container.sh,
# installed as /usr/local/sbin/ephemera-check-container and sourced here);
# with MODE=unlock, the five boots of a node bound to its TPM and a tang
# server (unlock.sh, as /usr/local/sbin/ephemera-check-unlock).
# Settings: /etc/ephemera-check.env (DATA_DISKS, SAMPLE_UNIT, SAMPLE_FILE, ESCROW_PATH,
# ROOT_PARTUUID, ROOT_FS_UUID, MOUNT, PRIVATE_KEY: the escrow private key, on
# the node for this test only: in production ops bring it in an emergency;
# CONSOLE: the serial console's tty, ttyS0 unless set, ttyAMA0 on arm64).
set -u
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER=cat
# shellcheck disable=SC1091
. /etc/ephemera-check.env
exec </dev/null >"/dev/${CONSOLE:-ttyS0}" 2>&1
MOUNT=${MOUNT:-/mnt/ephemeral}

state=/var/lib/ephemera-check
mkdir -p "$state"
# A kernel boot is counted once; a second start in the same kernel boot is
# the userspace that a soft-reboot started.
boot_id=$(cat /proc/sys/kernel/random/boot_id)
if [[ $(cat "$state/boot_id" 2>/dev/null) == "$boot_id" ]]; then
  boot=$(cat "$state/boots")
  userspace=$(($(cat "$state/userspaces") + 1))
else
  boot=$(($(cat "$state/boots" 2>/dev/null || echo 0) + 1))
  userspace=1
fi
echo "$boot" >"$state/boots"
echo "$boot_id" >"$state/boot_id"
echo "$userspace" >"$state/userspaces"
sync

failed=0
last_out=''
ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; failed=$((failed + 1)); }
check() { # check WHAT CMD...: ok when CMD succeeds
  local what=$1
  shift
  if "$@"; then ok "$what"; else notok "$what"; fi
}
fact() { echo "FACT $1 $2"; }
mono() { systemctl show -P "$2" "$1"; }

echo "EPH-CHECK-BEGIN boot=$boot userspace=$userspace"
fact systemd_version "$(systemctl --version | awk 'NR==1 {print $2}')"
fact kernel "$(uname -r)"
fact machine "$(uname -m)"
fact boot_id "$(cat /proc/sys/kernel/random/boot_id)"

# --- helpers ------------------------------------------------------------------
wait_settled() { # wait_settled UNIT: bounded wait while it is starting
  for _ in $(seq 120); do
    case $(systemctl show -P ActiveState "$1") in activating | inactive) sleep 1 ;; *) return ;; esac
  done
}
journal() { journalctl -b -o cat -u "$1" 2>/dev/null; }

# The volume as a user checks it; sets luks_uuid and backing.
volume_checks() { # volume_checks LABEL
  local src fstype cs md
  src=$(findmnt -n -o SOURCE --mountpoint "$MOUNT" 2>/dev/null)
  fstype=$(findmnt -n -o FSTYPE --mountpoint "$MOUNT" 2>/dev/null)
  check "$1: $MOUNT is mounted from /dev/mapper/ephemera as ext4 (findmnt: $src $fstype)" \
    test "$src" = /dev/mapper/ephemera -a "$fstype" = ext4
  cs=$(cryptsetup status ephemera 2>&1)
  check "$1: cryptsetup status: LUKS2, active" grep -q 'type: *LUKS2' <<<"$cs"
  backing=$(awk '$1 == "device:" {print $2}' <<<"$cs")
  luks_uuid=$(cryptsetup luksUUID "$backing" 2>/dev/null)
  check "$1: LUKS2 header on $backing has no keyslots" \
    test "$(cryptsetup luksDump --dump-json-metadata "$backing" 2>/dev/null | jq '.keyslots | length')" = 0
  if ((DATA_DISKS > 1)); then
    md=$(mdadm --detail "$backing" 2>&1)
    check "$1: mdadm --detail $backing: raid0 over $DATA_DISKS devices" \
      grep -Eq "Raid Level : raid0" <<<"$md"
    check "$1: md array has $DATA_DISKS members" \
      test "$(grep -Ec '^ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +active sync +/dev/nvme' <<<"$md")" = "$DATA_DISKS"
    # The members' serials in the array's order, as mdadm lists them by
    # RaidDevice: what the escrow envelope must record. Which nvmeN each
    # disk becomes is the kernel's probe order, not QEMU's argument order.
    fact md_members "$(awk '/active sync/ {print $4, $NF}' <<<"$md" | sort -n | while read -r _ dev; do
      tr -d ' \n' <"/sys/block/${dev#/dev/}/device/serial"; echo; done | paste -sd,)"
  fi
}

# The data unit ran after the volume was mounted.
data_unit_checks() { # data_unit_checks LABEL
  local mount_unit m_active s_start g_active
  wait_settled "$SAMPLE_UNIT"
  mount_unit=$(systemd-escape -p --suffix=mount "$MOUNT")
  m_active=$(mono "$mount_unit" ActiveEnterTimestampMonotonic)
  s_start=$(mono "$SAMPLE_UNIT" ExecMainStartTimestampMonotonic)
  g_active=$(mono ephemera-guard.service ActiveEnterTimestampMonotonic)
  fact order "mount=$m_active guard_armed=$g_active sample_exec=$s_start"
  # The boot path, in microseconds since the kernel started (TCG: ratios).
  fact boot_path_us "volume_mounted=$m_active guard_armed=$g_active first_dependent=$s_start"
  # The guard unit is active only once `guard hold` said READY=1 under
  # systemd-inhibit: its drop-ins loaded, its marker written, the inhibitor
  # held. ephemera.service waits for that before it is active itself.
  check "$1: the guard was armed before $SAMPLE_UNIT started ($g_active <= $s_start)" \
    test "$g_active" -gt 0 -a "$g_active" -le "$s_start"
  check "$1: $SAMPLE_UNIT ran ($(systemctl show -P ActiveState,Result "$SAMPLE_UNIT" | tr '\n' ' '))" \
    test "$(systemctl show -P Result "$SAMPLE_UNIT")" = success -a "$s_start" -gt 0
  check "$1: $SAMPLE_UNIT started after $mount_unit became active ($s_start >= $m_active)" \
    test "$s_start" -ge "$m_active" -a "$m_active" -gt 0
  check "$1: $SAMPLE_FILE exists and is on the volume" \
    test -s "$SAMPLE_FILE" -a "$(findmnt -n -o TARGET --target "$SAMPLE_FILE")" = "$MOUNT"
}

guard_checks() { # guard_checks LABEL
  local inh
  wait_settled ephemera-guard.service
  check "$1: ephemera-guard.service is active" test "$(systemctl show -P ActiveState ephemera-guard.service)" = active
  inh=$(systemd-inhibit --list --mode=block --no-pager 2>&1)
  echo "$inh" | sed 's/^/# inhibitors: /'
  check "$1: a block inhibitor for shutdown is held" grep -q 'shutdown' <<<"$inh"
}

# A volume of an earlier boot, kept: nothing written, nothing mounted.
kept_checks() { # kept_checks LABEL WANT_UUID
  local first
  wait_settled ephemera.service
  check "$1: ephemera.service failed with exit 5, the volume kept ($(systemctl show -P ActiveState,Result,ExecMainStatus ephemera.service | tr '\n' ' '))" \
    test "$(systemctl show -P ExecMainStatus ephemera.service)" = 5
  check "$1: nothing is mounted at $MOUNT" eval "! findmnt --mountpoint $MOUNT >/dev/null"
  check "$1: no mapping is open" test ! -e /dev/mapper/ephemera
  first=$(for d in /sys/block/nvme*n1; do [[ $(tr -d ' ' <"$d/device/serial") == "$FIRST_SERIAL" ]] && echo "/dev/${d##*/}"; done)
  check "$1: the first member ($first) holds the same LUKS UUID ($2)" \
    test "$(cryptsetup luksUUID "$first" 2>/dev/null)" = "$2"
  check "$1: the escrow envelope is unchanged" \
    test "$(sha256sum <"$ESCROW_PATH")" = "$(cat "$state/escrow.sha")"
  check "$1: the journal names the volume and the discard command" \
    eval "journal ephemera.service | grep -q 'LUKS UUID $2.*ephemera discard --luks-uuid $2'"
  check "$1: $SAMPLE_UNIT did not start ($(systemctl show -P ActiveState,Result "$SAMPLE_UNIT" | tr '\n' ' '))" \
    test "$(systemctl show -P ExecMainStartTimestampMonotonic "$SAMPLE_UNIT")" = 0
  # The shipped drop-in makes containerd require ephemera.service: fail closed.
  check "$1: containerd.service did not start ($(systemctl show -P ActiveState,Result containerd.service | tr '\n' ' '))" \
    test "$(systemctl show -P ExecMainStartTimestampMonotonic containerd.service)" = 0
  check "$1: ephemera status says earlier" \
    test "$(ephemera status --json 2>/dev/null | jq -r '.state + " " + .earlier[0].luks_uuid')" = "earlier $2"
}

# What ops run on a kept volume: it must exit 0, and leave ephemera.service
# active and the volume mounted.
ops_command() { # ops_command NAME CMD...
  local name=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  echo "$out" | sed "s/^/# $name: /"
  check "$name exits 0" test "$rc" = 0
  wait_settled ephemera.service
  check "after $name: ephemera.service is active" test "$(systemctl show -P ActiveState ephemera.service)" = active
  volume_checks "after $name"
}

# The events watcher (issue 10): every boot it is enabled and active and,
# with no IMDS, says so once; on boot 1 it meets the IMDS test server.
events_checks() {
check "ephemera-events.service is enabled and active ($(systemctl is-enabled ephemera-events.service) $(systemctl show -P ActiveState ephemera-events.service))" \
  test "$(systemctl is-enabled ephemera-events.service)-$(systemctl show -P ActiveState ephemera-events.service)" = enabled-active
# The guest has no network, so no IMDS: said once, at info level.
noimds=$(journalctl -b -o cat -u ephemera-events.service | grep -c 'no instance metadata service' || true)
check "the watcher said once that there is no IMDS ($noimds lines)" test "$noimds" = 1
if [[ $boot == 1 && -n ${IMDS_PORT:-} ]]; then
  # The IMDS test server (examples/imds_server.rs, on 127.0.0.1 only) comes on
  # the NoCloud seed volume; it serves the files in /run/imds.
  mkdir -p /run/imds /run/cidata
  mount -o ro /dev/disk/by-label/CIDATA /run/cidata && install -m 755 /run/cidata/imds_server /usr/local/sbin/imds_server
  umount /run/cidata
  cat >/run/imds/scheduled.json <<'JSON'
[{"NotBefore": "21 Jan 2031 09:00:43 GMT", "Code": "system-reboot", "Description": "scheduled reboot",
  "EventId": "instance-event-sysreboot1", "NotAfter": "21 Jan 2031 09:17:23 GMT", "State": "active"},
 {"NotBefore": "22 Jan 2031 09:00:00 GMT", "Code": "instance-stop", "Description": "[Canceled] scheduled stop",
  "EventId": "instance-event-canceled1", "State": "active"}]
JSON
  systemd-run --quiet --unit=imds-test /usr/local/sbin/imds_server "$IMDS_PORT" /run/imds
  cat >/usr/local/sbin/events-hook <<'HOOK'
#!/bin/sh
cat >>/run/events-hook.log
HOOK
  chmod 755 /usr/local/sbin/events-hook
  cat >>/etc/ephemera/config.toml <<TOML

[events]
endpoint = "http://127.0.0.1:$IMDS_PORT"
interval_secs = 2
hook = "/usr/local/sbin/events-hook"
TOML
  systemctl restart ephemera-events.service
  metrics() { curl -s --max-time 5 http://127.0.0.1:9100/metrics; }
  wait_metric() { # wait_metric TEXT: until node_exporter serves it (bounded: 90 s)
    local _
    for _ in $(seq 90); do
      metrics | grep -qF -- "$1" && return 0
      sleep 1
    done
    return 1
  }
  # node_exporter re-emits the series with its labels sorted by name.
  reboot_series='ephemera_event_not_before_seconds{code="system-reboot",data_loss="true",id="instance-event-sysreboot1",source="scheduled"} '
  check "node_exporter serves the scheduled reboot as a data-loss event" wait_metric "$reboot_series"
  m=$(metrics)
  grep '^ephemera_' <<<"$m" | sed 's/^/# metrics: /'
  value=$(grep -F -- "$reboot_series" <<<"$m" | awk '{printf "%d", $2}')
  check "its value is the event's NotBefore ($value)" test "$value" = "$(date -u -d '2031-01-21 09:00:43' +%s)"
  check "node_exporter: the volume is provisioned" grep -qF 'ephemera_volume_state{state="provisioned"} 1' <<<"$m"
  check "node_exporter: IMDS is up" grep -qxF 'ephemera_imds_up 1' <<<"$m"
  check "node_exporter: one pending data-loss event" grep -qxF 'ephemera_events_pending{data_loss="true"} 1' <<<"$m"
  check "node_exporter: a last successful poll" grep -Eq '^ephemera_imds_last_success_timestamp_seconds [1-9]' <<<"$m"
  # node_exporter lists the files it read whole; its scrape_error covers every
  # file in the directory, the package's own collectors' too.
  grep -E '^node_textfile' <<<"$m" | sed 's/^/# metrics: /'
  ls -la /var/lib/prometheus/node-exporter | sed 's/^/# textfile dir: /'
  check "node_exporter read ephemera.prom without error" \
    grep -qF 'node_textfile_mtime_seconds{file="/var/lib/prometheus/node-exporter/ephemera.prom"}' <<<"$m"
  check "the canceled stop is not shown" eval "! grep -q instance-event-canceled1 <<<\"\$m\""
  check "the watcher warned once, saying the data is lost" \
    test "$(journalctl -b -o cat -u ephemera-events.service | grep -c 'system-reboot instance-event-sysreboot1.*THIS DESTROYS THE DATA')" = 1
  check "the hook got the event on stdin" test "$(jq -r .id /run/events-hook.log 2>&1)" = instance-event-sysreboot1
  # A spot interruption arrives; then the watcher restarts: nothing is done twice.
  echo '{"action": "terminate", "time": "2031-01-21T08:58:00Z"}' >/run/imds/spot.json
  check "node_exporter serves the spot interruption" wait_metric 'ephemera_event_not_before_seconds{code="spot-terminate",data_loss="true",id="",source="spot"}'
  systemctl restart ephemera-events.service
  before=$(metrics | grep '^ephemera_imds_last_success' || true)
  for _ in $(seq 60); do
    [[ $(metrics | grep '^ephemera_imds_last_success' || true) != "$before" ]] && break
    sleep 1
  done
  check "the restarted watcher polled again" test "$(metrics | grep '^ephemera_imds_last_success' || true)" != "$before"
  check "the hook ran once per event, across the restart ($(wc -l </run/events-hook.log) runs)" \
    test "$(jq -r .code /run/events-hook.log | tr '\n' ' ')" = "system-reboot spot-terminate "
  check "ephemera events --json, as ops (not root), lists both" \
    test "$(su -l ops -c '/usr/sbin/ephemera events --json' 2>/dev/null | jq -r '[.[].code] | join(" ")')" = "spot-terminate system-reboot"
  check "ephemera status --json carries the events" \
    test "$(ephemera status --json 2>/dev/null | jq '.events | length')" = 2
  fact events_journal "$(journalctl -b -o cat -u ephemera-events.service | tail -n 8 | tr '\n' '|')"
  systemctl stop imds-test.service
fi

}

still_up() { # no shutdown job queued, the manager not stopping
  local jobs
  sleep 2
  jobs=$(systemctl list-jobs --no-legend 2>/dev/null)
  ! grep -Eq '(reboot|halt|kexec|poweroff|shutdown|suspend|hibernate|sleep)\.(target|service)' <<<"$jobs" &&
    [[ $(systemctl is-system-running 2>/dev/null) != stopping ]]
}
refused() { # refused NAME CMD...: must not go through; the system must stay up
  local name=$1 out rc
  shift
  out=$(timeout 60 "$@" 2>&1)
  rc=$?
  last_out=$out
  echo "REFUSAL $name rc=$rc: $(tr '\n' ' ' <<<"$out")"
  # systemd 252's reboot and shutdown print logind's refusal but exit 0: the
  # proof is that the system stays up, and that the command said it failed.
  ((rc != 0)) || echo "# note: $name exited 0"
  if still_up && { ((rc != 0)) || grep -Eqi 'refused|denied|inhibit' <<<"$out"; }; then
    ok "$name is refused"
  else
    notok "$name is refused"
  fi
}

break_glass_and_reboot() {
  local out
  echo "EPH-CHECK-END boot=$boot failed=$failed"
  out=$(ephemera guard release 2>&1)
  echo "# ephemera guard release: rc=$? $out"
  check "after release, ephemera-guard.service is inactive" \
    test "$(systemctl show -P ActiveState ephemera-guard.service)" != active
  check "after release, no block inhibitor is held" eval '! systemd-inhibit --list --mode=block --no-pager 2>&1 | grep -q shutdown'
  echo "EPH-REBOOTING"
  sync
  systemctl reboot
  echo "# systemctl reboot after release: rc=$?"
  sleep infinity
}

# --- the root disk: never touched, every boot ------------------------------------
if [[ $userspace == 1 ]]; then
  rootsrc=$(findmnt -n -o SOURCE /)
  rootdisk=/dev/$(lsblk -n -o PKNAME "$rootsrc" | head -n 1)
  fact root_source "$rootsrc"
  fact root_disk_serial "$(lsblk -n -d -o SERIAL "$rootdisk")"
  check "root is mounted from the EBSROOT disk ($rootdisk)" \
    test "$(lsblk -n -d -o SERIAL "$rootdisk" | tr -d ' ')" = EBSROOT
  check "root partition's PARTUUID is unchanged" \
    test "$(blkid -p -s PART_ENTRY_UUID -o value "$rootsrc")" = "$ROOT_PARTUUID"
  check "root file system's UUID is unchanged" \
    test "$(blkid -p -s UUID -o value "$rootsrc")" = "$ROOT_FS_UUID"
  check "root disk holds only its GPT (wipefs: $(wipefs -n -p "$rootdisk" 2>&1 | awk -F, 'NR>1 {printf "%s ", $4}'))" \
    test "$(wipefs -n -p "$rootdisk" 2>/dev/null | awk -F, 'NR>1 {print $4}' | sort -u | tr '\n' ' ')" = "PMBR gpt "
  check "root disk is not LUKS" eval "! cryptsetup isLuks $rootdisk && ! cryptsetup isLuks $rootsrc"
  check "root disk is held by nothing" test -z "$(ls "/sys/block/${rootdisk#/dev/}/holders")"
  check "root disk is not in the md array" eval "! grep -q '${rootdisk#/dev/}' /proc/mdstat"
fi

# --- a container node (tests/system/guest/container.sh): its own story ----------
if [[ ${MODE:-} == container ]]; then
  # shellcheck source=tests/system/guest/container.sh
  . /usr/local/sbin/ephemera-check-container
  container_story
  sleep infinity
fi

# --- a node that unlocks at boot (tests/system/guest/unlock.sh): its own story ----
if [[ ${MODE:-} == unlock ]]; then
  # shellcheck source=tests/system/guest/unlock.sh
  . /usr/local/sbin/ephemera-check-unlock
  unlock_story
  sleep infinity
fi

# --- boot 1: the first boot -----------------------------------------------------
if [[ $boot == 1 && $userspace == 1 ]]; then
  wait_settled ephemera.service
  check "ephemera.service is active ($(systemctl show -P ActiveState,SubState,Result ephemera.service | tr '\n' ' '))" \
    test "$(systemctl show -P ActiveState ephemera.service)" = active
  check "ephemera.service exited 0" test "$(systemctl show -P ExecMainStatus ephemera.service)" = 0
  # It must run once per boot, after cloud-init wrote its config: a failed
  # first run that something else restarted later is a bug in the ordering.
  starts=$(journal ephemera.service | grep -c '^Starting ephemera.service' || true)
  fails=$(journal ephemera.service | grep -Ec '^Failed to start|Main process exited' || true)
  fact ephemera_journal "$(journalctl -b -o short-monotonic --no-hostname -u ephemera.service 2>/dev/null | tail -n 15 | tr '\n' '|')"
  check "ephemera.service started once this boot and never failed (starts=$starts failures=$fails)" \
    test "$starts" = 1 -a "$fails" = 0
  # ... and after cloud-init wrote /etc/ephemera/config.toml (write_files runs in
  # cloud-init's network stage: cloud-init.service up to 24.2, cloud-init-network.service since).
  e_exec=$(mono ephemera.service ExecMainStartTimestampMonotonic)
  for u in cloud-init.service cloud-init-network.service; do
    [[ $(systemctl show -P LoadState "$u") == loaded ]] || continue
    ci=$(mono "$u" ActiveEnterTimestampMonotonic)
    check "ephemera.service started after $u finished ($e_exec >= $ci)" test "$e_exec" -ge "$ci" -a "$ci" -gt 0
  done
  fact ephemera_after "$(systemctl show -P After ephemera.service)"
  volume_checks "boot 1"
  fact luks_uuid "$luks_uuid"
  fact ext4_uuid "$(blkid -p -s UUID -o value /dev/mapper/ephemera)"
  echo "written in boot 1" >"$MOUNT/check-boot1" && sync
  echo "$luks_uuid" >"$state/luks_uuid.1"
  data_unit_checks "boot 1"
  e_active=$(mono ephemera.service ActiveEnterTimestampMonotonic)
  s_inact=$(mono "$SAMPLE_UNIT" InactiveExitTimestampMonotonic)
  check "$SAMPLE_UNIT left inactive after ephemera.service became active ($s_inact >= $e_active)" \
    test "$s_inact" -ge "$e_active" -a "$e_active" -gt 0
  fact journal_order "$(journalctl -b -o short-monotonic --no-hostname -u ephemera.service -u "$SAMPLE_UNIT" 2>/dev/null | grep -E 'Started|Finished|Starting' | tr '\n' '|')"

  # --- escrow
  check "escrow file $ESCROW_PATH is mode 0400, owned by root ($(stat -c '%a %U' "$ESCROW_PATH" 2>&1))" \
    test "$(stat -c '%a %U' "$ESCROW_PATH")" = "400 root"
  echo "ESCROW-FILE $(jq -c . "$ESCROW_PATH" 2>&1)"
  check "escrow file names this boot's LUKS UUID" grep -q "$luks_uuid" "$ESCROW_PATH"
  copy="${ESCROW_PATH%.json}.$luks_uuid.json"
  check "the envelope's copy named by the LUKS UUID ($copy) is the same" cmp -s "$ESCROW_PATH" "$copy"
  sha256sum <"$ESCROW_PATH" >"$state/escrow.sha"
  jq -r '.members[0]' "$ESCROW_PATH" >"$state/first_serial"
  guard_checks "boot 1"
  fact status_guard "$(ephemera status --json 2>/dev/null | jq -c .guard)"
  events_checks

  # --- soft-reboot: refused like a reboot while guarded (logind checks it
  # with a reboot's polkit actions and inhibitor); once it happens, the
  # kernel stays, and with it the volume's key: the new userspace must find
  # the volume with its data, and guard it again.
  if (($(systemctl --version | awk 'NR==1 {print $2}') >= 254)); then
    refused "root: systemctl soft-reboot" systemctl soft-reboot
    refused "root: systemctl start soft-reboot.target" systemctl start soft-reboot.target
    refused "root: systemctl start systemd-soft-reboot.service" systemctl start systemd-soft-reboot.service
    sha256sum <"$MOUNT/check-boot1" >"$state/data.sha"
    out=$(ephemera guard release 2>&1)
    echo "# ephemera guard release before the soft-reboot: rc=$? $out"
    echo "EPH-SOFT-REBOOT"
    sync
    out=$(timeout 60 systemctl soft-reboot 2>&1)
    echo "SOFTREBOOT rc=$?: $(tr '\n' ' ' <<<"$out")"
    sleep 120
    notok "the soft-reboot did not happen"
  fi
fi
if [[ $boot == 1 && $userspace == 2 ]]; then
  # The new userspace after a soft-reboot.
  wait_settled ephemera.service
  check "after soft-reboot: ephemera.service exited 0" test "$(systemctl show -P ExecMainStatus ephemera.service)" = 0
  # systemd unmounts the volume on the way (ephemera mounts it again), or
  # leaves it mounted (ephemera finds it so): either way, the same volume.
  how=$(journal ephemera.service | grep -Eo 'mounting it again|already mounted' | tail -n 1)
  fact soft_reboot_volume "$how"
  check "after soft-reboot: ephemera found the open volume ($how)" test -n "$how"
  volume_checks "after soft-reboot"
  check "after soft-reboot: the same LUKS UUID" test "$luks_uuid" = "$(cat "$state/luks_uuid.1")"
  check "after soft-reboot: the data written before it" \
    test "$(sha256sum <"$MOUNT/check-boot1" 2>&1)" = "$(cat "$state/data.sha")"
  guard_checks "after soft-reboot"
  fact soft_reboot "kept"
fi
if [[ $boot == 1 ]]; then
  # --- the reboot guard: every way to lose the data is refused.
  check "reboot.target's description names ephemera and the break-glass" \
    eval "systemctl show -P Description reboot.target | grep -q 'ephemera.*ephemera guard release'"
  check "the login message names the guard and the break-glass" grep -q 'ephemera guard release' /run/motd.d/ephemera-guard
  # ops (group sudo, not via sudo) gets a logind session through su's PAM stack.
  refused "ops: systemctl reboot" su -l ops -c 'systemctl reboot'
  # Without the guard's polkit rule, ops (admin through group sudo) would be
  # asked for a password, and could give it; the rule must deny outright.
  check "ops: the reboot is denied, not offered an authentication" \
    eval '! grep -q "Interactive authentication required" <<<"$last_out"'
  refused "ops: systemctl reboot -i" su -l ops -c 'systemctl reboot -i'
  refused "root: systemctl reboot" systemctl reboot
  # What root sees on a terminal (ssh): systemctl lists the inhibitors there.
  refused "root, on a terminal: systemctl reboot" script -q -e -c 'systemctl reboot' /dev/null
  if (($(systemctl --version | awk 'NR==1 {print $2}') >= 256)); then
    check "root's refusal on a terminal names ephemera and the break-glass" \
      eval "grep -q 'ephemera guard release' <<<\"\$last_out\""
  fi
  refused "root: reboot" reboot
  refused "root: shutdown -r now" shutdown -r now
  refused "root: systemctl halt" systemctl halt
  refused "root: systemctl kexec" systemctl kexec
  refused "root: systemctl start kexec.target" systemctl start kexec.target
  # Without swap, logind refuses hibernation for that reason alone: give it
  # enough swap, so that only the guard can refuse.
  swap=/swapfile-check
  if fallocate -l 1G "$swap" && chmod 600 "$swap" && mkswap -q "$swap" && swapon "$swap"; then
    refused "root: systemctl hibernate (with swap)" systemctl hibernate
    refused "root: systemctl hybrid-sleep (with swap)" systemctl hybrid-sleep
    refused "root: systemctl suspend-then-hibernate (with swap)" systemctl suspend-then-hibernate
    swapoff "$swap"
  else
    notok "swap for the hibernate check"
  fi
  rm -f "$swap"
  refused "root: systemctl hibernate" systemctl hibernate
  refused "root: systemctl start hibernate.target" systemctl start hibernate.target
  refused "root: systemctl suspend" systemctl suspend
  refused "root: systemctl start suspend.target" systemctl start suspend.target
  refused "root: systemctl start reboot.target" systemctl start reboot.target
  # logind itself may refuse hibernation here (no resume= without EFI), so
  # the targets are tried directly too: only the guard refuses those.
  refused "root: systemctl start hybrid-sleep.target" systemctl start hybrid-sleep.target
  refused "root: systemctl start suspend-then-hibernate.target" systemctl start suspend-then-hibernate.target
  for svc in systemd-reboot systemd-kexec systemd-halt systemd-suspend systemd-hibernate \
    systemd-hybrid-sleep systemd-suspend-then-hibernate; do
    refused "root: systemctl start $svc.service" systemctl start "$svc.service"
  done
  check "the system is still up after the refused actions ($(systemctl is-system-running))" still_up
  fact failed_units "$(systemctl list-units --failed --plain --no-legend | awk '{printf "%s ", $1}')"
  # The control: with the guard gone, ops' reboot falls back to the default
  # policy (authentication required), so the denial above was the guard's.
  ephemera guard release >/dev/null 2>&1
  out=$(timeout 60 su -l ops -c 'systemctl reboot' 2>&1)
  echo "REFUSAL after release, ops: systemctl reboot rc=$?: $(tr '\n' ' ' <<<"$out")"
  check "after release, ops' reboot falls back to the default policy (authentication)" \
    grep -q "Interactive authentication required" <<<"$out"
  fact status_guard_after_release "$(ephemera status --json 2>/dev/null | jq -c .guard)"
  break_glass_and_reboot
fi

FIRST_SERIAL=$(cat "$state/first_serial")
old_uuid=$(cat "$state/luks_uuid.1")

# --- boot 2: a reboot with escrow: kept, then recovered in place ------------------
if [[ $boot == 2 ]]; then
  events_checks
  kept_checks "boot 2" "$old_uuid"
  # On the node, a recovery mounted elsewhere than the unit's mount.path
  # would leave the unit failed and the node unguarded: refused first.
  out=$(ephemera recover --mount /srv/elsewhere --private-key "$PRIVATE_KEY" 2>&1)
  rc=$?
  echo "$out" | sed "s/^/# recover --mount: /"
  check "recover --mount elsewhere on the node is refused: exit 2 (got $rc)" test "$rc" = 2
  check "... naming the unit's mount.path" grep -q "ephemera.service mounts the volume at mount.path $MOUNT" <<<"$out"
  check "... before anything happens: nothing open, nothing mounted at /srv/elsewhere" \
    sh -c '! test -e /dev/mapper/ephemera && ! grep -q " /srv/elsewhere " /proc/mounts'
  ops_command recover ephemera recover --private-key "$PRIVATE_KEY"
  check "after recover: the same LUKS UUID" test "$luks_uuid" = "$old_uuid"
  check "after recover: boot 1's file is back" test "$(cat "$MOUNT/check-boot1" 2>&1)" = "written in boot 1"
  data_unit_checks "after recover"
  guard_checks "after recover"
  check "after recover: the envelope is unchanged" test "$(sha256sum <"$ESCROW_PATH")" = "$(cat "$state/escrow.sha")"
  fact luks_uuid "$luks_uuid"
  break_glass_and_reboot
fi

# --- boot 3: kept again, then discarded: a new volume --------------------------------
if [[ $boot == 3 ]]; then
  events_checks
  kept_checks "boot 3" "$old_uuid"
  ops_command discard ephemera discard --luks-uuid "$old_uuid"
  fact luks_uuid "$luks_uuid"
  check "after discard: a new LUKS UUID ($luks_uuid, boot 1: $old_uuid)" \
    test -n "$luks_uuid" -a "$luks_uuid" != "$old_uuid"
  check "after discard: boot 1's file is gone (a fresh file system)" test ! -e "$MOUNT/check-boot1"
  check "after discard: escrow.json names the new volume" grep -q "$luks_uuid" "$ESCROW_PATH"
  check "after discard: the discarded volume's envelope copy is kept" test -s "${ESCROW_PATH%.json}.$old_uuid.json"
  data_unit_checks "after discard"
  guard_checks "after discard"
  # The package upgraded, removed and purged under running services
  # (package.sh; the upgrade .deb comes on the seed volume).
  if [[ -n ${UPGRADE_DEB:-} ]]; then
    # shellcheck source=tests/system/guest/package.sh
    . /usr/local/sbin/ephemera-check-package
    package_story
  fi
  echo "EPH-CHECK-END boot=$boot failed=$failed"
  sync
  echo "EPH-READY-FOR-POWERDOWN"
fi
sleep infinity
