#!/usr/bin/env bash
# The RPM's install, proven in a scratch root (issue 21; docs/AL2023.md):
#   rpm --root R --initdb; rpm -ivh --nodeps (AL2023's repositories, which
#   would resolve Requires:, cannot be reached from here); every file with
#   its mode; the scriptlets ran without error, enabled the two units and
#   started nothing (a stand-in systemctl in R records each call, as the
#   scriptlets run chrooted in R); rpm -V is clean; the config is
#   %config(noreplace); rpm -e removes the package, saves the edited config
#   (config.toml.rpmsave) and leaves /var/lib/ephemera alone; and
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
trap 'rm -rf "$R"' EXIT
# A shell for the scriptlets, and the systemctl that records them.
mkdir -p "$R/bin" "$R/usr/bin" "$R/var/log" "$R/var/lib/ephemera" "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
cp "$(command -v busybox)" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
cat >"$R/usr/bin/systemctl" <<'SH'
#!/bin/sh
echo "systemctl $*" >>/var/log/systemctl.calls
SH
chmod 755 "$R/usr/bin/systemctl"
rpm --root "$R" --initdb
check "rpm -ivh --nodeps installs it, its scriptlets without error" rpm --root "$R" -ivh --nodeps --ignorearch --quiet "$pkg"
name=$(rpm -qp --qf '%{NAME}' "$pkg")
for f in /usr/sbin/ephemera:755 /usr/lib/systemd/system/ephemera.service:644 \
  /usr/lib/systemd/system/ephemera-events.service:644 /usr/lib/systemd/system/ephemera-guard.service:644 \
  /usr/share/polkit-1/rules.d/50-ephemera-guard.rules:644 /usr/lib/systemd/logind.conf.d/ephemera.conf:644 \
  /etc/ephemera/config.toml:644 /usr/share/man/man8/ephemera.8.gz:644 /usr/share/ephemera/combine-shares.py:755 \
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
"$strip" --strip-unneeded -o "$R/built" "$built"
check "the binary is the one built, stripped" cmp -s "$R/usr/sbin/ephemera" "$R/built"
check "it is an $machine ELF, stripped ($(file -b "$R/usr/sbin/ephemera" | cut -d, -f1,2))" \
  eval 'file -b "$R/usr/sbin/ephemera" | grep -q "$machine.*, stripped"'
check "the man page is gzip'd and reads as a man page" eval 'gzip -dc "$R/usr/share/man/man8/ephemera.8.gz" | grep -q "^\.TH EPHEMERA 8"'
rm -f "$R/built"
calls=$(cat "$R/var/log/systemctl.calls" 2>/dev/null || true)
echo "$calls" | sed 's/^/# /'
check "%post enabled ephemera.service and ephemera-events.service" \
  grep -q "enable ephemera.service ephemera-events.service" <<<"$calls"
check "%post started nothing" eval '! grep -Eq "(^| )(start|restart|reload-or-restart)( |$)" <<<"$calls"'
# --nodeps: the Requires: are not installed here (see the top).
check "rpm -V is clean" test -z "$(rpm --root "$R" -V --nodeps "$name" 2>&1)"
check "the config is %config(noreplace) (file flags cn)" \
  grep -qx "cn /etc/ephemera/config.toml" <(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$pkg" 2>/dev/null)
check "Requires: names AL2023's packages" \
  test "$(rpm -qp --requires "$pkg" 2>/dev/null | grep -Ev '^(rpmlib|/bin/sh|config\()' | awk '{print $1}' | sort | tr '\n' ' ')" = \
  "cryptsetup-libs e2fsprogs glibc kmod libblkid polkit systemd tpm2-tss util-linux-core "
# An ops edit (as user-data makes), and an envelope, before the erase.
echo '# edited' >>"$R/etc/ephemera/config.toml"
echo '{}' >"$R/var/lib/ephemera/escrow.json"
: >"$R/var/log/systemctl.calls"
check "rpm -e removes it, its scriptlets without error" rpm --root "$R" -e "$name"
check "the package is gone" eval "! rpm --root '$R' -q '$name' >/dev/null"
check "the binary is gone" test ! -e "$R/usr/sbin/ephemera"
check "%preun disabled the units on erase" grep -q "disable ephemera.service ephemera-events.service" "$R/var/log/systemctl.calls"
check "the edited config is kept as config.toml.rpmsave" grep -q '# edited' "$R/etc/ephemera/config.toml.rpmsave"
check "/var/lib/ephemera is left alone" test -s "$R/var/lib/ephemera/escrow.json"

# packer/install.sh's .rpm path (AL2023 cannot run here): its choices, with
# stand-ins for dnf, rpm and systemctl that record their calls; clevis is
# not installable, as on AL2023.
B=$(mktemp -d)
trap 'rm -rf "$R" "$B"' EXIT
for t in dnf rpm systemctl; do
  cat >"$B/$t" <<SH
#!/bin/sh
echo "$t \$*" >>"$B/calls"
case "$t \$*" in "dnf install -y -q clevis") exit 1 ;; esac
SH
done
chmod 755 "$B"/*
cp "$pkg" "$B/ephemera.rpm"
check "install.sh installs an .rpm with dnf and enables the unit" \
  eval 'PATH="$B:$PATH" bash packer/install.sh "$B/ephemera.rpm" >/dev/null 2>&1 &&
    grep -qx "dnf install -y -q $B/ephemera.rpm" "$B/calls" && grep -qx "systemctl enable ephemera.service" "$B/calls"'
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
