# Sourced by check.sh (installed as /usr/local/sbin/ephemera-check-package);
# uses its helpers (check, ok, notok, fact, mono, wait_settled,
# volume_checks, guard_checks, refused) and its variables (MOUNT, ESCROW_PATH,
# luks_uuid, last_out).
# The package's life on a running node (issue 26), last in boot 3 of the
# data-service node, before the power button:
#   - two services that require ephemera.service run: data-writer.service,
#     ordered by a drop-in as the README orders Elasticsearch, writing to
#     the volume every second, and containerd, through the package's own
#     drop-in;
#   - an upgrade, `apt-get install` of the same binary packaged as a newer
#     version (UPGRADE_DEB on the seed volume, version UPGRADE_VERSION);
#   - `apt-get remove`, then `apt-get purge`.
# After each: both services are the same processes, active since the same
# moment (MainPID, ActiveEnterTimestampMonotonic), data-writer still
# writes, ephemera.service is still active since the same moment, and
# /var/lib/ephemera is as it was; after the upgrade and the removal also
# the volume (findmnt, cryptsetup, mdadm), and the guard, the same process,
# holding its inhibitor, refusing a reboot to ops (polkit's denial, not an
# offer to authenticate) and to root (its drop-ins); after the purge, the
# guard and its polkit rule. Then, with the package gone, the break-glass
# (`systemctl stop ephemera-guard.service`) releases every layer (ops is
# asked to authenticate: the default policy is back), and a start arms
# them all again, for the power button that follows.

# "PID since" for UNIT: what must not change.
identity() { echo "$(systemctl show -P MainPID "$1") $(mono "$1" ActiveEnterTimestampMonotonic)"; }

# The services: the same processes, writing. $1 names the step.
services_kept() {
  local u n
  for u in data-writer.service containerd.service ephemera-guard.service ephemera.service; do
    check "$1: $u is active, the same process since the same moment ($(identity "$u"))" \
      test "$(systemctl show -P ActiveState "$u")-$(identity "$u")" = "active-${ident[$u]}"
  done
  n=$(wc -l <"$MOUNT/data-writer.log")
  sleep 2
  check "$1: data-writer.service still writes to the volume ($n, then $(wc -l <"$MOUNT/data-writer.log") lines)" \
    test "$(wc -l <"$MOUNT/data-writer.log")" -gt "$n"
  check "$1: /var/lib/ephemera is as it was" test "$(ls_escrow)" = "$escrow_before"
}

# Everything after a step that could have stopped something: the services,
# the volume as cryptsetup and mdadm show it, the guard's three layers.
still_running() {
  services_kept "$1"
  volume_checks "$1"
  check "$1: the same volume (LUKS UUID $luks_uuid)" test "$luks_uuid" = "$(cat "$state/luks_uuid.3")"
  guard_checks "$1"
  refused "$1: ops: systemctl reboot" su -l ops -c 'systemctl reboot'
  check "$1: ops' reboot is denied by the guard's polkit rule, not offered an authentication" \
    eval '! grep -q "Interactive authentication required" <<<"$last_out"'
  refused "$1: root: systemctl reboot" systemctl reboot
}
ls_escrow() { (cd /var/lib/ephemera && find . -type f -exec sha256sum {} + | sort); }

apt_step() { # apt_step NAME ARGS...: apt-get, its output on the console, exit 0
  local name=$1 out rc t=$SECONDS
  shift
  out=$(DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" 2>&1)
  rc=$?
  echo "$out" | sed "s/^/# $name: /"
  fact "apt_${name}_seconds" "$((SECONDS - t))"
  check "apt-get $* exits 0" test "$rc" = 0
}

package_story() {
  local deb=/run/ephemera-upgrade/$UPGRADE_DEB events_pid u
  declare -gA ident
  echo "$luks_uuid" >"$state/luks_uuid.3"
  cat >/etc/systemd/system/data-writer.service <<EOF
[Unit]
Description=A data service writing to the ephemera volume (system test)
[Service]
ExecStart=/bin/sh -c 'while :; do date +%%s.%%N >>$MOUNT/data-writer.log; sleep 1; done'
EOF
  # The README's drop-in ("Ordering a data service").
  mkdir -p /etc/systemd/system/data-writer.service.d
  printf '[Unit]\nRequires=ephemera.service\nAfter=ephemera.service\n' >/etc/systemd/system/data-writer.service.d/ephemera.conf
  systemctl daemon-reload
  check "data-writer.service starts" systemctl start data-writer.service
  check "containerd.service starts" systemctl start containerd.service
  for u in data-writer.service containerd.service; do
    check "$u requires ephemera.service ($(systemctl show -P DropInPaths "$u"))" \
      eval "systemctl show -P Requires $u | grep -qw ephemera.service"
  done
  for u in data-writer.service containerd.service ephemera-guard.service ephemera.service; do
    ident[$u]=$(identity "$u")
  done
  # ephemera.service is a oneshot: no process, only its moment.
  escrow_before=$(ls_escrow)
  fact package_before "$(dpkg-query -W -f='${Version} ${Status}' ephemera)"

  # --- upgrade
  mkdir -p /run/cidata /run/ephemera-upgrade
  mount -o ro /dev/disk/by-label/CIDATA /run/cidata && cp "/run/cidata/$UPGRADE_DEB" "$deb"
  umount /run/cidata
  events_pid=$(systemctl show -P MainPID ephemera-events.service)
  # (No --no-download: apt 2.6 then fails on a local .deb, "Pathname to
  # install is not absolute"; nothing is downloaded anyway, the guest has no
  # network.)
  apt_step upgrade install -o Dpkg::Options::=--force-confold "$deb"
  check "ephemera is now version $UPGRADE_VERSION ($(dpkg-query -W -f='${Version}' ephemera))" \
    test "$(dpkg-query -W -f='${Version}' ephemera)" = "$UPGRADE_VERSION"
  still_running "after the upgrade"
  check "after the upgrade: ephemera.service and ephemera-events.service are still enabled" \
    test "$(systemctl is-enabled ephemera.service ephemera-events.service | tr '\n' ' ')" = "enabled enabled "
  check "after the upgrade: the events watcher runs the new binary (restarted: PID $events_pid, now $(systemctl show -P MainPID ephemera-events.service))" \
    test "$(systemctl show -P ActiveState ephemera-events.service)" = active -a "$(systemctl show -P MainPID ephemera-events.service)" != "$events_pid"

  # --- removal
  apt_step remove remove ephemera
  check "after the removal: dpkg says removed, config files kept ($(dpkg-query -W -f='${Status}' ephemera))" \
    test "$(dpkg-query -W -f='${Status}' ephemera)" = "deinstall ok config-files"
  check "after the removal: /usr/sbin/ephemera is gone" test ! -e /usr/sbin/ephemera
  check "after the removal: the events watcher stopped" \
    test "$(systemctl show -P ActiveState ephemera-events.service)" != active
  for u in ephemera.service ephemera-guard.service; do
    check "after the removal: $u comes from the removal's runtime copy ($(systemctl show -P FragmentPath "$u"))" \
      test "$(systemctl show -P FragmentPath "$u")" = "/run/systemd/system/$u"
  done
  still_running "after the removal"

  # --- purge
  apt_step purge purge ephemera
  check "after the purge: dpkg knows no ephemera ($(dpkg-query -W -f='${Status}' ephemera 2>&1))" \
    eval "! dpkg-query -W -f='\${Status}' ephemera 2>/dev/null | grep -q installed"
  check "after the purge: the conffile /etc/ephemera/config.toml is gone" test ! -e /etc/ephemera/config.toml
  # A purge removes files and the units' enablement only: the services,
  # /var/lib/ephemera, and the guard's polkit rule while it is on.
  services_kept "after the purge"
  guard_checks "after the purge"
  check "after the purge: the guard's polkit rule is still in /etc/polkit-1/rules.d" \
    grep -q polkit.addRule /etc/polkit-1/rules.d/50-ephemera-guard.rules

  # --- the break-glass with the package gone, then the guard armed again
  systemctl stop ephemera-guard.service
  check "package gone, break glass: the guard is inactive" \
    test "$(systemctl show -P ActiveState ephemera-guard.service)" != active
  check "... no block inhibitor is held" eval '! systemd-inhibit --list --mode=block --no-pager 2>&1 | grep -q shutdown'
  check "... reboot.target is no longer refused (RefuseManualStart=$(systemctl show -P RefuseManualStart reboot.target))" \
    test "$(systemctl show -P RefuseManualStart reboot.target)" = no
  check "... the marker and the polkit rule's copy are gone" \
    test ! -e /run/ephemera/guard -a ! -e /etc/polkit-1/rules.d/50-ephemera-guard.rules
  out=$(timeout 60 su -l ops -c 'systemctl reboot' 2>&1)
  echo "REFUSAL package gone, guard released, ops: systemctl reboot rc=$?: $(tr '\n' ' ' <<<"$out")"
  check "... ops' reboot falls back to the default policy (authentication)" \
    grep -q "Interactive authentication required" <<<"$out"
  check "... data-writer.service still runs" test "$(systemctl show -P ActiveState data-writer.service)" = active
  check "package gone: systemctl start ephemera-guard.service arms the guard again" systemctl start ephemera-guard.service
  ident[ephemera-guard.service]=$(identity ephemera-guard.service)
  still_running "guard armed again"
  fact package_after "$(dpkg-query -W -f='${Status}' ephemera 2>&1 | tr '\n' ' ')"
}
