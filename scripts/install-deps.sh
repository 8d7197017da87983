#!/usr/bin/env bash
# Installs, on Debian 12, the packages needed to build ephemera (the C
# libraries its -sys crates bind, and libclang for bindgen) and to run its
# host-side tests, through scripts/host-tools.sh (the one place that installs
# and checks host packages). Idempotent: installs only what is missing.
set -euo pipefail
export LC_ALL=C

"$(dirname "${BASH_SOURCE[0]}")/host-tools.sh" build

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; ephemera needs Rust 1.87 or newer (rustup)" >&2
  exit 1
fi
