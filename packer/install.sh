#!/usr/bin/env bash
# Installs ephemera into an image: the one install script that Packer runs
# on the build instance (packer/ephemera.pkr.hcl) and that the tests' image
# build runs in the image's chroot (tests/system/build-image.sh), so the
# baking path is the tested path.
#
# usage: [EPHEMERA_UNLOCK=1] install.sh EPHEMERA.deb
# Debian 12/13 and Ubuntu: installs the .deb with apt-get (pulling its
# dependencies) and enables ephemera.service for the next boot. Nothing is
# provisioned now: the instance's own first boot does that.
# EPHEMERA_UNLOCK=1 also installs clevis and its tpm2 pin, for [unlock]
# (a reboot that keeps the volume: docs/UNLOCK.md).
set -euo pipefail
deb=$(readlink -f "${1:?usage: install.sh EPHEMERA.deb}")
export DEBIAN_FRONTEND=noninteractive

if ! command -v apt-get >/dev/null; then
  echo "install.sh: no apt-get: this script installs the .deb on Debian and Ubuntu only" >&2
  exit 1
fi
# A fresh cloud image may have no package lists yet.
if ! apt-get install -y -qq --no-install-recommends "$deb"; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$deb"
fi
if [[ ${EPHEMERA_UNLOCK:-0} == 1 ]]; then
  apt-get install -y -qq --no-install-recommends clevis clevis-tpm2
fi
# The package's postinst enables the unit; say it again for images built
# with maintainer scripts that could not reach systemd (chroots).
systemctl enable ephemera.service
echo "install.sh: ephemera $(dpkg-query -W -f='${Version}' ephemera) installed; ephemera.service runs at the next boot"
