#!/usr/bin/python3
"""Writes a package's changelog from CHANGELOG.md, its one source.

usage: changelog.py deb|rpm [--revision N] > FILE
  deb  Debian's format (make deb gzips it into changelog.Debian.gz)
  rpm  the body of an RPM spec's %changelog
The version is Cargo.toml's; the maintainer, with its address, is
[package.metadata.deb] maintainer, for both formats (the RPM's Packager).

Each `## [X.Y.Z] - DATE` section is an entry for X.Y.Z, revision 1. When
the version built (Cargo.toml's, with --revision) is not such an entry, a
development build, the Unreleased items make a first entry under that
version, distribution UNRELEASED, dated by SOURCE_DATE_EPOCH or else the
last commit. A version older than the newest section is refused (exit 2).
Items are CHANGELOG.md's "- " paragraphs with their markdown links reduced
to their text, wrapped at 76 columns (lintian wants at most 80).
Standard library only (Python 3.11: tomllib).
"""
import datetime
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?\s*$")


def die(msg):
    print(f"changelog.py: {msg}", file=sys.stderr)
    sys.exit(2)


def sections(text):
    """[(name, date or None, [item, ...])] in file order."""
    out = []
    item = None
    for line in text.splitlines():
        m = HEADING.match(line)
        if m:
            out.append((m.group(1), m.group(2), []))
            item = None
        elif not out or line.startswith("#"):
            item = None
        elif line.startswith("- "):
            item = [line[2:].strip()]
            out[-1][2].append(item)
        elif item is not None and line.startswith("  ") and line.strip():
            item.append(line.strip())
        else:
            item = None
    return [(n, d, [plain(" ".join(i)) for i in items]) for n, d, items in out]


def plain(s):
    return re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", s)


def vkey(v):
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        die(f"version {v!r} is not X.Y.Z")


def build_time():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        r = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
                           capture_output=True, text=True)
        epoch = r.stdout.strip() if r.returncode == 0 else ""
    if epoch:
        return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    return datetime.datetime.now(datetime.timezone.utc)


def entries(text, version, revision):
    """[(version-revision, distribution, datetime, items)], newest first."""
    found = sections(text)
    released = [(n, d, i) for n, d, i in found if n != "Unreleased"]
    for n, d, _ in released:
        if d is None:
            die(f"section [{n}] has no date (## [{n}] - YYYY-MM-DD)")
    if released and vkey(version) < vkey(released[0][0]):
        die(f"version {version} is older than CHANGELOG.md's newest section {released[0][0]}")
    out = []
    if not any(n == version for n, _, _ in released) or revision != "1":
        unreleased = next((i for n, _, i in found if n == "Unreleased"), [])
        items = unreleased or ["A development build: CHANGELOG.md's Unreleased section is empty."]
        out.append((f"{version}-{revision}", "UNRELEASED", build_time(), items))
    for n, d, items in released:
        if vkey(n) <= vkey(version):
            when = datetime.datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
            out.append((f"{n}-1", "unstable", when, items or [f"Version {n}."]))
    return out


def wrap(text, first, rest):
    return "\n".join(textwrap.wrap(text, 76, initial_indent=first, subsequent_indent=rest,
                                   break_on_hyphens=False))


def deb(name, maintainer, es):
    out = []
    for ver, dist, when, items in es:
        out.append(f"{name} ({ver}) {dist}; urgency=medium\n")
        out.extend(wrap(i, "  * ", "    ") for i in items)
        out.append(f"\n -- {maintainer}  {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n")
    return "\n".join(out)


def rpm(maintainer, es):
    out = []
    for ver, _, when, items in es:
        out.append(f"* {when.strftime('%a %b %d %Y')} {maintainer} - {ver}")
        # rpmbuild expands macros in %changelog: a literal % is %%.
        out.extend(wrap(i, "- ", "  ").replace("%", "%%") for i in items)
        out.append("")
    return "\n".join(out)


def main():
    args = sys.argv[1:]
    revision = "1"
    if len(args) == 3 and args[1] == "--revision" and args[2].isdigit():
        revision = args[2]
        args = args[:1]
    if len(args) != 1 or args[0] not in ("deb", "rpm"):
        die("usage: changelog.py deb|rpm [--revision N]")
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
    maintainer = cargo["metadata"]["deb"]["maintainer"]
    if not re.fullmatch(r"[^<>]+ <[^<>@\s]+@[^<>@\s]+>", maintainer):
        die(f"[package.metadata.deb] maintainer {maintainer!r} is not 'Name <address>'")
    es = entries((REPO / "CHANGELOG.md").read_text(), cargo["version"], revision)
    sys.stdout.write(deb(cargo["name"], maintainer, es) if args[0] == "deb" else rpm(maintainer, es))


if __name__ == "__main__":
    main()
