#!/usr/bin/env bash
# Installs ephemera into an image: the one install script that Packer runs
# on the build instance (packer/ephemera.pkr.hcl) and that the tests' image
# build runs in the image's chroot (tests/system/build-image.sh), so the
# baking path is the tested path.
#
# usage: [EPHEMERA_UNLOCK=1|tang] install.sh PACKAGE
# PACKAGE is the .deb (Debian 12/13, Ubuntu: apt-get) or the .rpm (Amazon
# Linux 2023: dnf), chosen by its name; either pulls its dependencies, and
# ephemera.service is enabled for the next boot, and `ephemera check` checks
# the config the image carries. Nothing is provisioned now: the instance's
# own first boot does that.
# [unlock] (a reboot that keeps the volume: docs/UNLOCK.md): its tpm2 and kms
# pins are ephemera's own and need only tpm2-tss's libraries, which the
# package requires. EPHEMERA_UNLOCK=1 adds tpm2-tools on Debian, for the
# runbook by hand (Amazon Linux 2023 has none: docs/AL2023.md).
# EPHEMERA_UNLOCK=tang also installs clevis, which the tang pin runs; AL2023's
# repositories carry no clevis: there the script says so and stops, rather
# than bake an image whose tang pin cannot work.
set -euo pipefail
pkg=$(readlink -f "${1:?usage: install.sh PACKAGE (.deb or .rpm)}")
unlock=${EPHEMERA_UNLOCK:-0}
[[ $unlock =~ ^(0|1|tang)$ ]] || { echo "install.sh: EPHEMERA_UNLOCK is 0, 1 or tang, not $unlock" >&2; exit 1; }
die() { echo "install.sh: $*" >&2; exit 1; }

case $pkg in
  *.deb)
    command -v apt-get >/dev/null || die "no apt-get: a .deb installs on Debian and Ubuntu; use the .rpm on Amazon Linux 2023"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh cloud image may have no package lists yet.
    if ! apt-get install -y -qq --no-install-recommends "$pkg"; then
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "$pkg"
    fi
    if [[ $unlock == 1 || $unlock == tang ]]; then
      apt-get install -y -qq --no-install-recommends tpm2-tools
    fi
    if [[ $unlock == tang ]]; then
      apt-get install -y -qq --no-install-recommends clevis
    fi
    version=$(dpkg-query -W -f='${Version}' ephemera)
    ;;
  *.rpm)
    command -v dnf >/dev/null || die "no dnf: the .rpm installs on Amazon Linux 2023; use the .deb on Debian and Ubuntu"
    # The tang pin runs clevis; AL2023's repositories have none. The tpm2
    # and kms pins need nothing more than the package's own requirements.
    if [[ $unlock == tang ]] && ! dnf install -y -q clevis; then
      die "EPHEMERA_UNLOCK=tang: clevis is not installable here (Amazon Linux 2023 has none): the tang pin needs it; use the tpm2 and kms pins, or add a repository that has clevis"
    fi
    dnf install -y -q "$pkg"
    version=$(rpm -q --qf '%{VERSION}-%{RELEASE}' ephemera)
    ;;
  *) die "$pkg: neither a .deb nor an .rpm" ;;
esac
# The package's scripts enable the unit; say it again for images built
# with scripts that could not reach systemd (chroots).
systemctl enable ephemera.service
# The config and what it names (keys, clevis, the cipher in the kernel's
# lists), checked as provision will check them at boot, looking at no disk:
# a bad one fails the build here, not every instance's first boot.
# The package's binary, found as a shell finds it, /usr/sbin included.
eph=$(PATH="$PATH:/usr/sbin:/sbin" command -v ephemera) || die "the package installed no ephemera command"
"$eph" check || die "ephemera check refused the config (above): fix it before baking"
echo "install.sh: ephemera $version installed; ephemera.service runs at the next boot"
