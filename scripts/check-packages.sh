#!/usr/bin/env bash
# The packages as their distributions judge them (issue 28): each .deb
# through Debian's lintian, each RPM through Debian's rpmlint (bookworm's
# 2.116 and 2.4, from scripts/host-tools.sh pkglint). Fails on:
#   - any lintian error or warning that the .deb's own overrides file
#     (dist/debian/lintian-overrides, shipped as
#     /usr/share/lintian/overrides/ephemera) does not override, and on an
#     override that no longer matches (unused-override, mismatched-override);
#   - any rpmlint error or warning not filtered by dist/rpm/ephemera.rpmlintrc
#     (with dist/rpm/rpmlint.toml: Fedora's man page compression), and on a
#     filter that no longer matches (rpmlint's unused-rpmlintrc-filter);
#   - a changelog that is not CHANGELOG.md's (scripts/changelog.py), or
#     whose first entry is not the package's version;
#   - a .deb and an RPM of one architecture that install different files
#     (beside the ones each distribution wants: the .deb's copyright and
#     lintian overrides, the RPM's licence file).
# Informational lintian tags are printed, not judged.
# usage: check-packages.sh PACKAGE...   (.deb and .rpm files)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
(($#)) || { echo "usage: check-packages.sh PACKAGE..." >&2; exit 2; }
scripts/host-tools.sh pkglint rpm >&2
fails=0
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The files a package installs, one path a line, directories left out.
deb_files() { dpkg-deb -c "$1" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' | sort; }
rpm_files() { rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$1" 2>/dev/null | awk '$1 !~ /^d/ { print $2 }' | sort; }

lint_deb() {
  local deb=$1 name out judged overridden version
  name=$(basename "$deb")
  # As root lintian says it should not run as root; it still checks.
  out=$(lintian -I --show-overrides --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true)
  echo "$out" | sed "s|^|# lintian $name: |"
  judged=$(grep -E '^[EW]: |: (unused|mismatched)-override' <<<"$out" || true)
  overridden=$(grep -c '^O: ' <<<"$out" || true)
  if [[ -z $judged ]]; then
    ok "lintian $name: no error, no warning, no stale override ($overridden overridden, $(grep -c '^I: ' <<<"$out" || true) informational)"
  else
    bad "lintian $name: $(tr '\n' ';' <<<"$judged")"
  fi
  version=$(dpkg-deb -f "$deb" Version)
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/ephemera/changelog.Debian.gz | gzip -dc >"$tmp/changelog"
  if [[ $(head -n 1 "$tmp/changelog") == "ephemera ($version) "* ]]; then
    ok "$name: changelog.Debian.gz starts at the package's version $version"
  else
    bad "$name: changelog.Debian.gz starts with '$(head -n 1 "$tmp/changelog")', not version $version"
  fi
  if cmp -s "$tmp/changelog" <(scripts/changelog.py deb --revision "${version##*-}"); then
    ok "$name: changelog.Debian.gz is CHANGELOG.md's (scripts/changelog.py deb)"
  else
    bad "$name: changelog.Debian.gz differs from scripts/changelog.py deb: $(diff "$tmp/changelog" <(scripts/changelog.py deb --revision "${version##*-}") | head -n 3 | tr '\n' ' ')"
  fi
}

lint_rpm() {
  local pkg=$1 name out judged vr
  name=$(basename "$pkg")
  out=$(rpmlint -c dist/rpm/rpmlint.toml -r dist/rpm/ephemera.rpmlintrc "$pkg" 2>&1 || true)
  echo "$out" | sed "s|^|# rpmlint $name: |"
  judged=$(grep -E '^[^ ]+: [EW]: ' <<<"$out" || true)
  if [[ -z $judged ]] && grep -q ' 0 errors, 0 warnings' <<<"$out"; then
    ok "rpmlint $name: no error, no warning ($(grep -c addFilter dist/rpm/ephemera.rpmlintrc) filters, each used)"
  else
    bad "rpmlint $name: $(tr '\n' ';' <<<"${judged:-$(tail -n 1 <<<"$out")}")"
  fi
  vr=$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$pkg" 2>/dev/null)
  # rpm prints the entries with blank lines of its own between them.
  rpm -qp --changelog "$pkg" 2>/dev/null | grep -v '^ *$' >"$tmp/rpm-changelog"
  scripts/changelog.py rpm --revision "${vr##*-}" | sed 's/%%/%/g' | grep -v '^ *$' >"$tmp/want"
  if cmp -s "$tmp/rpm-changelog" "$tmp/want" && [[ $(head -n 1 "$tmp/want") == *" - $vr" ]]; then
    ok "$name: %changelog is CHANGELOG.md's (scripts/changelog.py rpm), first entry $vr"
  else
    bad "$name: %changelog differs from scripts/changelog.py rpm, or starts elsewhere than $vr: $(diff "$tmp/rpm-changelog" "$tmp/want" | head -n 3 | tr '\n' ' ')"
  fi
  if [[ $(rpm -qp --qf '%{PACKAGER}' "$pkg" 2>/dev/null) == *"<"*@*">" ]]; then
    ok "$name: Packager has a contact address"
  else
    bad "$name: Packager '$(rpm -qp --qf '%{PACKAGER}' "$pkg" 2>/dev/null)' has no contact address"
  fi
}

declare -A deb_of rpm_of
for p in "$@"; do
  case $p in
    *.deb)
      lint_deb "$p"
      deb_of[$(dpkg-deb -f "$p" Architecture)]=$p
      ;;
    *.rpm)
      lint_rpm "$p"
      rpm_of[$(rpm -qp --qf '%{ARCH}' "$p" 2>/dev/null)]=$p
      ;;
    *) bad "$p: neither a .deb nor an .rpm" ;;
  esac
done

# One list of files for both packages (Cargo.toml's assets; build-rpm.sh).
for pair in amd64:x86_64 arm64:aarch64; do
  d=${deb_of[${pair%:*}]:-} r=${rpm_of[${pair#*:}]:-}
  [[ -n $d && -n $r ]] || continue
  deb_files "$d" | grep -Ev '^/usr/share/(doc/ephemera/(copyright|changelog\.Debian\.gz)|lintian/overrides/ephemera)$' >"$tmp/deb.list"
  rpm_files "$r" | grep -Ev '^/usr/share/licenses/ephemera/LICENSE$' >"$tmp/rpm.list"
  if cmp -s "$tmp/deb.list" "$tmp/rpm.list"; then
    ok "$(basename "$d") and $(basename "$r") install the same $(wc -l <"$tmp/deb.list") files"
  else
    bad "$(basename "$d") and $(basename "$r") differ: $(diff "$tmp/deb.list" "$tmp/rpm.list" | grep '^[<>]' | tr '\n' ' ')"
  fi
done

echo "package checks: $fails failed"
((fails == 0))
