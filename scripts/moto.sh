#!/usr/bin/env bash
# Prints the path of the venv's python that carries moto's server (an AWS
# emulator: KMS's JSON API with real AES-GCM and the encryption context as
# authenticated data, IAM users and access keys, SigV4 checks) and boto3,
# installing them first when missing: PyPI's moto[server], pinned below, in a
# venv under ${EPHEMERA_TEST_CACHE:-~/.cache/ephemera-tests}/moto-VERSION,
# outside the checkout so that CI's clean checkout reuses it.
#
# The tests start moto themselves (tests/kms.rs, `moto_server` beside this
# python), on a free loopback port with INITIAL_NO_AUTH_ACTION_COUNT so that
# every request after the setup must be signed; this script only installs.
set -euo pipefail
export LC_ALL=C
VERSION=5.2.5
cache=${EPHEMERA_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ephemera-tests}/moto-$VERSION
py=$cache/venv/bin/python3
ready() { [[ -x $cache/venv/bin/moto_server ]] && "$py" -c 'import boto3, moto' 2>/dev/null; }
if ! ready; then
  "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh" keyservices >&2
  mkdir -p "$cache"
  exec 9>"$cache.lock"
  flock 9
  if ! ready; then
    rm -rf "$cache/venv"
    python3 -m venv "$cache/venv" >&2
    "$cache/venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$VERSION" >&2
  fi
fi
"$py" -c 'import moto; print("moto", moto.__version__)' >&2
echo "$py"
