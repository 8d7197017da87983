#!/usr/bin/env bash
# Installs, on Debian 12, the packages needed to build ephemera (the C
# libraries its -sys crates bind, and libclang for bindgen) and to run its
# host-side tests. The VM guest's own packages are installed by
# tests/vm/build-guest.sh. Idempotent: installs only what is missing.
set -euo pipefail
export LC_ALL=C

pkgs=(
  pkg-config clang libclang-dev       # bindgen, for libcryptsetup-rs and libblkid-rs
  libcryptsetup-dev libblkid-dev      # the libraries ephemera links
  e2fsprogs openssl                   # the tests make filesystems and RSA keys with them
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if ((EUID != 0)); then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; ephemera needs Rust 1.87 or newer (rustup)" >&2
  exit 1
fi
