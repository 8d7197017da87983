#!/usr/bin/env bash
# Cross-builds ephemera for Graviton (aarch64) on a Debian 12 x86-64 machine,
# with Debian's own Rust (no rustup target: its standard library cannot be
# downloaded from here). Debian 12's security suite carries rustc-web (a
# current rustc, kept up to date for the browsers) and its standard library
# for every architecture, libstd-rust-web-dev:arm64 (multiarch), which installs
# beside the amd64 one. The C libraries the -sys crates link come from
# Debian 12 arm64 too, so the binary needs exactly what a Debian 12 arm64
# instance has (glibc 2.36).
#
# usage: arm64.sh toolchain   install and check the cross toolchain (idempotent)
#        arm64.sh build       + cargo build --release for aarch64
#        arm64.sh deb [OUT]   + the .deb (default target/debian/ephemera_arm64.deb),
#                             unpacked in target/arm64/deb-root for the VM tests
#        arm64.sh env         print the environment the build uses (to eval)
# The build goes to target/arm64 (its own target folder: another rustc than
# the host's builds it, and the two must not share build-script outputs).
set -euo pipefail
export LC_ALL=C

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/.." && pwd)
triple=aarch64-unknown-linux-gnu

log() { echo "arm64: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- Host packages for the arm64 build (one apt transaction; to move into
# --- the project's single host-package list when there is one) -------------
# rustc-web, cargo-web           Debian's current Rust (/usr/bin/rustc, cargo)
# libstd-rust-web-dev:arm64      its standard library for aarch64
# gcc-aarch64-linux-gnu          the linker (and the C compiler for cc-using crates)
# libc6-dev:arm64, libcryptsetup-dev:arm64, libblkid-dev:arm64, libtss2-dev:arm64
#                                what the -sys crates link, from Debian 12 arm64
# clang, libclang-dev, pkg-config  bindgen, as for the host build; file checks the result
arm64_host_pkgs=(
  rustc-web cargo-web libstd-rust-web-dev:arm64
  gcc-aarch64-linux-gnu libc6-dev:arm64 libcryptsetup-dev:arm64 libblkid-dev:arm64 libtss2-dev:arm64
  clang libclang-dev pkg-config file
)
# --- end of the arm64 host packages -------------------------------------------

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# A Multi-Arch: same package must have the same version on both
# architectures: when the amd64 one is installed (maybe from backports), ask
# for that version of the arm64 one, or apt would try to downgrade amd64.
with_version() {
  local pkg=$1 base ver
  base=${pkg%:arm64}
  if [[ $pkg == *:arm64 ]] && installed "$base:amd64"; then
    ver=$(dpkg-query -W -f='${Version}' "$base:amd64")
    echo "$pkg=$ver"
  else
    echo "$pkg"
  fi
}

toolchain() {
  local p missing=()
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    ((EUID == 0)) || die "the arm64 architecture is not enabled in dpkg; run as root to enable it"
    log "dpkg --add-architecture arm64"
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  for p in "${arm64_host_pkgs[@]}"; do installed "$p" || missing+=("$(with_version "$p")"); done
  if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing Debian packages: ${missing[*]} (run as root to install them)"
    # The arm64 lists may be missing even though the architecture is enabled.
    apt-cache show libstd-rust-web-dev:arm64 >/dev/null 2>&1 || apt-get update -qq
    log "installing ${missing[*]}"
    # --no-remove: apt may not remove an installed package (a Debian rustc, a
    # backports library) to make room; it says so and fails instead.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}" >&2 ||
      die "apt-get install failed for: ${missing[*]}"
  fi
  # Check what was installed, one line naming the package on failure.
  [[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] || die "/usr/bin/rustc or /usr/bin/cargo missing (package rustc-web, cargo-web)"
  [[ -d /usr/lib/rustlib/$triple/lib ]] || die "no Rust standard library for $triple (package libstd-rust-web-dev:arm64)"
  command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc missing (package gcc-aarch64-linux-gnu)"
  eval "$(print_env)"
  pkg-config --exists libcryptsetup || die "pkg-config finds no arm64 libcryptsetup (package libcryptsetup-dev:arm64)"
  pkg-config --exists blkid || die "pkg-config finds no arm64 blkid (package libblkid-dev:arm64)"
  /usr/bin/rustc --version >&2
}

print_env() {
  cat <<EOF
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR='$repo/target/arm64'
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu=--target=aarch64-linux-gnu
EOF
}

build() {
  toolchain
  eval "$(print_env)"
  cd "$repo"
  log "cargo build --release --target $triple (rustc $(/usr/bin/rustc --version | cut -d' ' -f2))"
  nice /usr/bin/cargo build --locked --release --target "$triple"
  bin=$CARGO_TARGET_DIR/$triple/release/ephemera
  file -b "$bin" | grep -q 'ARM aarch64' || die "$bin is not an aarch64 binary: $(file -b "$bin")"
  log "built $bin"
}

deb() {
  local out=${1:-$repo/target/debian/ephemera_arm64.deb}
  build
  command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
  mkdir -p "$(dirname "$out")" "$repo/target/debian"
  # Its changelog, from CHANGELOG.md, where Cargo.toml's changelog names it.
  "$repo/scripts/changelog.py" deb >"$repo/target/debian/changelog"
  # cargo-deb maps the target/release/ephemera asset to the target's folder
  # and strips with aarch64-linux-gnu-strip.
  cargo deb --no-build --locked --target "$triple" --output "$out"
  dpkg-deb -f "$out" Architecture | grep -qx arm64 || die "$out is not an arm64 package"
  # Unpacked, for the arm64 VM tests: they run the binary the package ships.
  rm -rf "$repo/target/arm64/deb-root"
  dpkg-deb -x "$out" "$repo/target/arm64/deb-root"
  file -b "$repo/target/arm64/deb-root/usr/sbin/ephemera" | grep -q 'ARM aarch64' ||
    die "the package's usr/sbin/ephemera is not an aarch64 binary"
  log "package: $out"
}

case ${1:-} in
  toolchain) toolchain ;;
  build) build ;;
  deb) shift; deb "$@" ;;
  env) print_env ;;
  *) die "usage: $0 toolchain|build|deb [OUT]|env" ;;
esac
