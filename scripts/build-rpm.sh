#!/usr/bin/env bash
# Builds the ephemera RPM for Amazon Linux 2023 with rpmbuild (Debian's rpm
# package) from dist/rpm/ephemera.spec (why rpmbuild: the spec's header).
#   - stages the files the .deb ships, from Cargo.toml's
#     [package.metadata.deb] assets (one list for both packages), without
#     the Debian-only ones (copyright, lintian overrides), with the binary
#     stripped by the architecture's strip and the man page gzip'd, and
#     LICENSE as the %license file;
#   - appends the %changelog written from CHANGELOG.md (scripts/changelog.py);
#   - rpmbuild -bb --target ARCH, reproducible from the last commit's time
#     (SOURCE_DATE_EPOCH), into OUTDIR as ephemera-VERSION-RELEASE.ARCH.rpm.
# usage: build-rpm.sh ARCH BINARY OUTDIR [RELEASE]
#   ARCH     x86_64 | aarch64
#   BINARY   the built ephemera for ARCH (not stripped yet)
#   RELEASE  1 unless given (2 makes the package the upgrade checks use)
# prints: the RPM's path
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
repo=$PWD
(($# == 3 || $# == 4)) || { echo "usage: build-rpm.sh ARCH BINARY OUTDIR [RELEASE]" >&2; exit 2; }
arch=$1 bin=$(readlink -f "$2") out=$3 release=${4:-1}
case $arch in
  x86_64) strip=strip ;;
  aarch64) strip=aarch64-linux-gnu-strip ;;
  *) echo "build-rpm.sh: ARCH must be x86_64 or aarch64, got $arch" >&2; exit 2 ;;
esac
[[ -f $bin ]] || { echo "build-rpm.sh: no binary at $2" >&2; exit 1; }
scripts/host-tools.sh rpm >&2

work=$repo/target/rpm/build-$arch-$release
rm -rf "$work"
stage=$work/stage
mkdir -p "$stage" "$work/top" "$out"

# The .deb's assets: SOURCE DEST MODE lines (DEST without its leading /; a
# DEST ending in / takes the source's name; sources may be globs).
/usr/bin/python3 - >"$work/assets" <<'PY'
import tomllib
deb = tomllib.load(open("Cargo.toml", "rb"))["package"]["metadata"]["deb"]
for src, dest, mode in deb["assets"]:
    print(src, dest, mode)
PY
while read -r src dest mode; do
  case $dest in
    usr/share/doc/ephemera/copyright | usr/share/lintian/*) continue ;; # Debian's own
  esac
  for f in $src; do
    [[ $f == target/release/ephemera ]] && f=$bin
    d=$dest
    [[ $d == */ ]] && d=$d$(basename "$f")
    install -D -m "$mode" "$f" "$stage/$d"
  done
done <"$work/assets"
"$strip" --strip-unneeded "$stage/usr/sbin/ephemera"
gzip -9n "$stage/usr/share/man/man8/ephemera.8"
install -D -m 644 LICENSE "$stage/usr/share/licenses/ephemera/LICENSE"

version=$(/usr/bin/python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["version"])')
packager=$(/usr/bin/python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["metadata"]["deb"]["maintainer"])')
{
  cat dist/rpm/ephemera.spec
  scripts/changelog.py rpm --revision "$release"
} >"$work/ephemera.spec"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# Every file's time is the commit's (Debian's rpm 4.18 does not clamp the
# staged files' times by itself here), so that one commit makes one RPM.
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rpmbuild -bb --quiet --target "$arch" \
  --define "_topdir $work/top" \
  --define "_rpmdir $(readlink -f "$out")" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "pkg_version $version" \
  --define "pkg_release $release" \
  --define "pkg_packager $packager" \
  --define "stage $stage" \
  "$work/ephemera.spec" >&2
rpm=$(readlink -f "$out")/ephemera-$version-$release.$arch.rpm
[[ -f $rpm ]] || { echo "build-rpm.sh: rpmbuild made no $rpm" >&2; exit 1; }
rm -rf "$work"
echo "$rpm"
