#!/usr/bin/env python3
"""Check the relative links of the Markdown documentation.

    scripts/check-links.py [FILE.md ...]   check these (default: README.md,
                                           docs/*.md, tests/system/README.md)
    scripts/check-links.py --self-test     check the checker on a temp tree

Every `[text](path)`, `[text](path#anchor)` and `[text](#anchor)` outside
fenced code blocks and inline code must name a file or directory that exists
(relative to the file that links), and its anchor must match a heading of the
target, by GitHub's rule: lower case, punctuation dropped except '-' and '_'
(backticks too), each space a '-', and a repeated heading gets -1, -2, ...
http(s) and mailto links are not checked. One line per broken link,
FILE:LINE: LINK: why; exit 1 if there is any.
"""

import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def lines_outside_fences(text):
    """(line number, line) for each line not inside a ``` or ~~~ block."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if m:
            if fence is None:
                fence = m.group(1)
                continue
            if m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
                continue
        if fence is None:
            yield n, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        seen = {}
        found = set()
        for _, line in lines_outside_fences(text):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        for m in re.finditer(r"<a\s+(?:name|id)=\"([^\"]+)\"", text):
            found.add(m.group(1))
        _anchors[path] = found
    return _anchors[path]


def check_file(path, shown):
    """Broken links of one file, as 'FILE:LINE: LINK: why' lines."""
    broken = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in lines_outside_fences(text):
        line = CODE_SPAN.sub(lambda m: "code", line)
        for m in LINK.finditer(line):
            link = m.group(1)
            if not link or re.match(r"^(https?:|mailto:)", link, re.I):
                continue
            if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I):
                continue  # another scheme: not a relative link
            target, _, anchor = link.partition("#")
            if target:
                full = os.path.normpath(os.path.join(os.path.dirname(path), target))
                if not os.path.exists(full):
                    broken.append(f"{shown}:{n}: {link}: no such file {target}")
                    continue
            else:
                full = path
            if anchor:
                if not full.endswith(".md") or os.path.isdir(full):
                    broken.append(f"{shown}:{n}: {link}: anchor on a file that is not Markdown")
                elif anchor not in anchors(full):
                    broken.append(f"{shown}:{n}: {link}: no heading #{anchor} in {target or shown}")
    return broken


def default_files():
    files = ["README.md"]
    files += sorted(
        os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")
    )
    files.append(os.path.join("tests", "system", "README.md"))
    return files


def run(base, files):
    broken = []
    for f in files:
        full = os.path.join(base, f)
        if not os.path.exists(full):
            broken.append(f"{f}: no such file")
            continue
        broken += check_file(full, f)
    return broken


def self_test():
    """A good and a broken link of each kind, and what must be skipped."""
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "docs"))
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write(
                "# Top\n\n## The `volume`'s states, (short)\n\n## Logs\n\n## Logs\n\n"
                "[ok](#the-volumes-states-short) [ok](docs/B.md) [ok](docs/B.md#a_b-c)\n"
                "[ok](#logs-1) [ok](docs/) [ok](https://example.com/x#nope) [ok](mailto:a@b)\n"
                "[bad](#nope)\n"
                "[bad](docs/C.md)\n"
                "[bad](docs/B.md#top)\n"
                "`[skipped](inline-code.md)`\n"
                "```sh\n# Not a heading\n[skipped](fenced.md)\n```\n"
                "[bad](#not-a-heading)\n"
            )
        with open(os.path.join(d, "docs", "B.md"), "w") as f:
            f.write("# A_B: c\n\n[ok](../README.md#logs) [bad](../README.md#log)\n")
        got = run(d, ["README.md", "docs/B.md"])
        want = [
            "README.md:11: #nope: no heading #nope in README.md",
            "README.md:12: docs/C.md: no such file docs/C.md",
            "README.md:13: docs/B.md#top: no heading #top in docs/B.md",
            "README.md:19: #not-a-heading: no heading #not-a-heading in README.md",
            "docs/B.md:3: ../README.md#log: no heading #log in ../README.md",
        ]
        if got != want:
            print("check-links self-test FAILED", file=sys.stderr)
            print("  want:\n    " + "\n    ".join(want), file=sys.stderr)
            print("  got:\n    " + "\n    ".join(got), file=sys.stderr)
            return 1
        print(f"check-links self-test: ok ({len(want)} broken links found, the rest passed or skipped)")
        return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    files = argv[1:] or default_files()
    broken = run(ROOT if not argv[1:] else os.getcwd(), files)
    for b in broken:
        print(b)
    sys.stdout.flush()
    if broken:
        print(f"check-links: {len(broken)} broken link(s)", file=sys.stderr)
        return 1
    print(f"check-links: {len(files)} files, every relative link and anchor resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
