#!/usr/bin/env bash
# The RPM's install, upgrade and erase, proven in a scratch root (issues 21
# and 26; docs/AL2023.md):
#   rpm --root R --initdb; rpm -ivh --nodeps (AL2023's repositories, which
#   would resolve Requires:, cannot be reached from here); every file with
#   its mode; the scriptlets ran without error (busybox's shell and tools in
#   R, as the scriptlets run chrooted in R), enabled the two units and
#   started nothing (a stand-in systemctl in R records each call, and says
#   ephemera.service is active when R/run/fake-active exists); rpm -V is
#   clean; the config is %config(noreplace).
#   An upgrade (rpm -U to the same files as release 2, scripts/build-rpm.sh)
#   stops, disables and enables nothing, keeps the edited config, restarts
#   only the events watcher (try-restart) and reloads systemd.
#   An erase while the volume is up and guarded (R/run/systemd/system, the
#   guard's marker, ephemera.service active) stops only the events watcher,
#   disables the units, and leaves keep-until-reboot's runtime copies: the
#   binary, the two units running it, the runtimes' and logind's drop-ins,
#   the polkit rule in /etc; it keeps the edited config (config.toml.rpmsave) and
#   /var/lib/ephemera. A new install takes the copies back; an erase with
#   ephemera.service inactive makes none.
#   packer/install.sh's .rpm path, with stand-ins for dnf, rpm, systemctl.
#   The binary is BUILT (the build's output) stripped, of the RPM's
#   architecture; the man page is gzip'd. An aarch64 RPM installs here with
#   --ignorearch: its files and scriptlets (sh) are what is checked.
# usage: check-rpm.sh RPM BUILT
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
pkg=$(readlink -f "${1:?usage: check-rpm.sh RPM BUILT}")
built=$(readlink -f "${2:?usage: check-rpm.sh RPM BUILT}")
scripts/host-tools.sh rpm >&2
fails=0
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

R=$(mktemp -d)
U=$(mktemp -d)
trap 'rm -rf "$R" "$U"' EXIT
# busybox's shell and tools for the scriptlets and keep-until-reboot, and the
# systemctl that records them.
mkdir -p "$R/bin" "$R/usr/bin" "$R/var/log" "$R/var/lib/ephemera" "$R/dev" "$R/tmp"
mknod -m 666 "$R/dev/null" c 1 3
cp "$(command -v busybox)" "$R/bin/busybox"
for a in $(busybox --list); do [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"; done
cat >"$R/usr/bin/systemctl" <<'SH'
#!/bin/sh
echo "systemctl $*" >>/var/log/systemctl.calls
case "$*" in *is-active*ephemera.service*) [ -e /run/fake-active ] ;; esac
SH
chmod 755 "$R/usr/bin/systemctl"
calls() { cat "$R/var/log/systemctl.calls" 2>/dev/null || true; }
# A stop, restart or mask of ephemera.service or the guard: what would take
# the volume's dependents down.
no_stop() { ! grep -Eq "(stop|restart|mask)( .*)? ephemera(-guard)?[.]service" <<<"$(calls)"; }
rpm --root "$R" --initdb
check "rpm -ivh --nodeps installs it, its scriptlets without error" rpm --root "$R" -ivh --nodeps --ignorearch --quiet "$pkg"
name=$(rpm -qp --qf '%{NAME}' "$pkg")
for f in /usr/sbin/ephemera:755 /usr/lib/systemd/system/ephemera.service:644 \
  /usr/lib/systemd/system/ephemera-events.service:644 /usr/lib/systemd/system/ephemera-guard.service:644 \
  /usr/share/polkit-1/rules.d/50-ephemera-guard.rules:644 /usr/lib/systemd/logind.conf.d/ephemera.conf:644 \
  /etc/ephemera/config.toml:644 /usr/share/man/man8/ephemera.8.gz:644 /usr/share/ephemera/combine-shares.py:755 \
  /usr/lib/ephemera/keep-until-reboot:755 /usr/share/licenses/ephemera/LICENSE:644 \
  /usr/lib/systemd/system/{containerd,docker,kubelet,ecs}.service.d/ephemera.conf:644; do
  p=${f%:*} m=${f##*:}
  check "$p is installed with mode $m" test "$(stat -c %a "$R$p" 2>/dev/null)" = "$m"
done
arch=$(rpm -qp --qf '%{ARCH}' "$pkg")
case $arch in
  x86_64) strip=strip machine=x86-64 ;;
  aarch64) strip=aarch64-linux-gnu-strip machine=aarch64 ;;
  *) bad "unknown RPM architecture $arch"; strip=false machine=none ;;
esac
"$strip" --strip-unneeded -o "$U/built" "$built"
check "the binary is the one built, stripped" cmp -s "$R/usr/sbin/ephemera" "$U/built"
check "it is an $machine ELF, stripped ($(file -b "$R/usr/sbin/ephemera" | cut -d, -f1,2))" \
  eval 'file -b "$R/usr/sbin/ephemera" | grep -q "$machine.*, stripped"'
check "the man page is gzip'd and reads as a man page" eval 'gzip -dc "$R/usr/share/man/man8/ephemera.8.gz" | grep -q "^\.TH EPHEMERA 8"'
calls | sed 's/^/# install: /'
check "%post enabled ephemera.service and ephemera-events.service" \
  grep -q "enable ephemera.service ephemera-events.service" <<<"$(calls)"
check "%post started nothing" eval '! grep -Eq "(^| )(start|restart|try-restart|reload-or-restart)( |$)" <<<"$(calls)"'
# --nodeps: the Requires: are not installed here (see the top).
check "rpm -V is clean" test -z "$(rpm --root "$R" -V --nodeps "$name" 2>&1)"
check "the config is %config(noreplace) (file flags cn)" \
  grep -qx "cn /etc/ephemera/config.toml" <(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$pkg" 2>/dev/null)
check "Requires: names AL2023's packages" \
  test "$(rpm -qp --requires "$pkg" 2>/dev/null | grep -Ev '^(rpmlib|/bin/sh|config\()' | awk '{print $1}' | sort | tr '\n' ' ')" = \
  "cryptsetup-libs e2fsprogs glibc kmod libblkid polkit systemd tpm2-tss util-linux-core "
check "Suggests: python3 for combine-shares.py, xfsprogs, clevis" \
  test "$(rpm -qp --suggests "$pkg" 2>/dev/null | sort | tr '\n' ' ')" = "clevis python3 xfsprogs "
# An ops edit (as user-data makes), an envelope; then the node runs: systemd,
# ephemera.service active, the guard on.
echo '# edited' >>"$R/etc/ephemera/config.toml"
echo '{}' >"$R/var/lib/ephemera/escrow.json"
mkdir -p "$R/run/systemd/system" "$R/run/ephemera"
: >"$R/run/fake-active"
echo 'reboot guard on' >"$R/run/ephemera/guard"

# The upgrade: the same files as release 2.
up=$(scripts/build-rpm.sh "$arch" "$built" "$U" 2)
: >"$R/var/log/systemctl.calls"
check "rpm -U to $(basename "$up"), its scriptlets without error" rpm --root "$R" -Uvh --nodeps --ignorearch --quiet "$up"
calls | sed 's/^/# upgrade: /'
check "the upgrade stopped or restarted neither ephemera.service nor the guard" no_stop
check "the upgrade disabled nothing" eval '! grep -q " disable " <<<"$(calls)"'
check "the upgrade enabled nothing again (an operator's disable stays)" eval '! grep -q " enable " <<<"$(calls)"'
check "the upgrade restarted the events watcher if it runs (try-restart), and reloaded systemd" \
  eval 'grep -qx "systemctl try-restart ephemera-events.service" <<<"$(calls)" && grep -q "daemon-reload" <<<"$(calls)"'
check "the upgrade kept the edited config" grep -q '# edited' "$R/etc/ephemera/config.toml"
check "the package is release 2" test "$(rpm --root "$R" -q --qf '%{RELEASE}' "$name")" = 2
check "no runtime copy after an upgrade" test ! -e "$R/run/ephemera/until-reboot"

# The erase, with the volume up and guarded.
: >"$R/var/log/systemctl.calls"
check "rpm -e removes it, its scriptlets without error" rpm --root "$R" -e "$name"
calls | sed 's/^/# erase: /'
check "the package is gone" eval "! rpm --root '$R' -q '$name' >/dev/null"
check "the binary is gone" test ! -e "$R/usr/sbin/ephemera"
check "%preun disabled the units on erase" grep -q "disable ephemera.service ephemera-events.service" <<<"$(calls)"
check "the erase stopped the events watcher" grep -qx "systemctl stop ephemera-events.service" <<<"$(calls)"
check "the erase stopped or restarted neither ephemera.service nor the guard" no_stop
check "%postun reloaded systemd after the files went" eval 'calls | tail -n 1 | grep -q daemon-reload'
K=$R/run/ephemera/until-reboot
check "kept: the binary, as the package had it ($K/ephemera)" cmp -s "$K/ephemera" "$U/built"
for u in ephemera.service ephemera-guard.service; do
  check "kept: /run/systemd/system/$u runs the kept binary, not /usr/sbin/ephemera" \
    eval 'grep -q /run/ephemera/until-reboot/ephemera "$R/run/systemd/system/$u" && ! grep -q /usr/sbin/ephemera "$R/run/systemd/system/$u"'
done
check "kept: the guard's copy takes its polkit rule away when it stops" \
  grep -qx "ExecStopPost=-/bin/rm -f /etc/polkit-1/rules.d/50-ephemera-guard.rules" "$R/run/systemd/system/ephemera-guard.service"
for r in containerd docker kubelet ecs; do
  check "kept: the $r drop-in (Requires=ephemera.service) in /run" \
    grep -qx "Requires=ephemera.service" "$R/run/systemd/system/$r.service.d/ephemera.conf"
done
check "kept: logind's drop-in (PowerKeyIgnoreInhibited) in /run" \
  grep -qx "PowerKeyIgnoreInhibited=yes" "$R/run/systemd/logind.conf.d/ephemera.conf"
check "kept: the guard's polkit rule in /etc/polkit-1/rules.d, marked as the removal's copy" \
  eval 'head -n 1 "$R/etc/polkit-1/rules.d/50-ephemera-guard.rules" | grep -q "Kept by ephemera" &&
    grep -q "polkit.addRule" "$R/etc/polkit-1/rules.d/50-ephemera-guard.rules"'
check "the edited config is kept as config.toml.rpmsave" grep -q '# edited' "$R/etc/ephemera/config.toml.rpmsave"
check "/var/lib/ephemera is left alone" test -s "$R/var/lib/ephemera/escrow.json"

# A new install in the same boot takes the copies back; an erase with
# ephemera.service inactive makes none.
check "a new install after the erase" rpm --root "$R" -ivh --nodeps --ignorearch --quiet "$pkg"
check "... took every runtime copy back" eval '! test -e "$K" && ! test -e "$R/etc/polkit-1/rules.d/50-ephemera-guard.rules" &&
  ! ls "$R"/run/systemd/system/*.service "$R"/run/systemd/*/ephemera.conf "$R"/run/systemd/system/*.d/ephemera.conf >/dev/null 2>&1'
rm -f "$R/run/fake-active"
check "an erase with ephemera.service inactive" rpm --root "$R" -e "$name"
check "... kept nothing in /run" eval '! test -e "$K" && ! ls "$R"/run/systemd/system/*.service >/dev/null 2>&1'

# packer/install.sh's .rpm path (AL2023 cannot run here): its choices, with
# stand-ins for dnf, rpm, systemctl and the installed ephemera that record
# their calls; clevis is not installable, as on AL2023.
B=$(mktemp -d)
trap 'rm -rf "$R" "$U" "$B"' EXIT
for t in dnf rpm systemctl ephemera; do
  cat >"$B/$t" <<SH
#!/bin/sh
echo "$t \$*" >>"$B/calls"
case "$t \$*" in "dnf install -y -q clevis") exit 1 ;; esac
SH
done
chmod 755 "$B"/*
cp "$pkg" "$B/ephemera.rpm"
check "install.sh installs an .rpm with dnf, enables the unit and checks the config" \
  eval 'PATH="$B:$PATH" bash packer/install.sh "$B/ephemera.rpm" >/dev/null 2>&1 &&
    grep -qx "dnf install -y -q $B/ephemera.rpm" "$B/calls" && grep -qx "systemctl enable ephemera.service" "$B/calls" &&
    grep -qx "ephemera check" "$B/calls"'
: >"$B/calls"
check "install.sh with EPHEMERA_UNLOCK=tang and no clevis (AL2023) stops, exit 1, installing nothing" \
  eval '! EPHEMERA_UNLOCK=tang PATH="$B:$PATH" bash packer/install.sh "$B/ephemera.rpm" 2>"$B/err" >/dev/null &&
    grep -q "clevis is not installable here" "$B/err" && ! grep -q "ephemera.rpm\|systemctl" "$B/calls"'
: >"$B/calls"
check "install.sh with EPHEMERA_UNLOCK=1 (the tpm2 and kms pins) installs on AL2023, no clevis asked for" \
  eval 'EPHEMERA_UNLOCK=1 PATH="$B:$PATH" bash packer/install.sh "$B/ephemera.rpm" >/dev/null 2>&1 &&
    grep -qx "dnf install -y -q $B/ephemera.rpm" "$B/calls" && ! grep -q clevis "$B/calls"'
echo "rpm checks: $fails failed"
((fails == 0))
