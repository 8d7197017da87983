#!/usr/bin/env bash
# `make audit`: cargo-deny over deny.toml, offline. Bans, licenses and sources
# need only crates.io's index; advisories are checked against the RustSec
# advisory-database snapshot in ../shared/advisory-db/ (nothing is fetched).
#
# - The snapshot is unpacked into target/advisory-dbs/ under the folder name
#   cargo-deny derives from the database URL (deny.toml: db-path, db-urls).
# - Its commit and date are printed: a clean result is only as new as that.
# - Any advisory (vulnerability, unmaintained, unsound, yanked) fails the run
#   unless deny.toml ignores it by id WITH a written reason; an ignore without
#   one fails too.
# - A control run with deny.toml's ignores removed must report every ignored
#   id: the database is really consulted, and each ignore still matches.
# env: EPHEMERA_ADVISORY_DB  the snapshot (default ../shared/advisory-db/rustsec-advisory-db.tar.gz)
# exit: 0 clean, 1 an advisory or a check failed
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { echo "audit: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

snapshot=${EPHEMERA_ADVISORY_DB:-$repo/../shared/advisory-db/rustsec-advisory-db.tar.gz}
[[ -f $snapshot ]] || die "no advisory-database snapshot at $snapshot (set EPHEMERA_ADVISORY_DB); advisories NOT CHECKED"
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny

# The folder cargo-deny looks for, for db-urls = ["https://github.com/rustsec/advisory-db"].
dbs=$repo/target/advisory-dbs
db=$dbs/advisory-db-3157b0e258782691
sum=$(sha256sum <"$snapshot" | cut -d' ' -f1)
if [[ ! -f $db.sha256 || $(cat "$db.sha256") != "$sum" ]]; then
  rm -rf "$db" "$dbs/unpack"
  mkdir -p "$dbs/unpack"
  tar -xzf "$snapshot" -C "$dbs/unpack"
  [[ -d $dbs/unpack/advisory-db/.git ]] || die "$snapshot does not unpack to advisory-db/ (a git clone)"
  mv "$dbs/unpack/advisory-db" "$db"
  rmdir "$dbs/unpack"
  echo "$sum" >"$db.sha256"
fi
commit=$(git -C "$db" log -1 --format=%H)
date=$(git -C "$db" log -1 --format=%cs)
log "advisories: RustSec advisory-db snapshot $commit of $date (offline, $snapshot)"

# Every ignore carries a reason.
python3 - deny.toml <<'PY' || exit 1
import sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
bad = [e if isinstance(e, str) else e.get("id", "?")
       for e in cfg.get("advisories", {}).get("ignore", [])
       if isinstance(e, str) or not str(e.get("reason", "")).strip()]
if bad:
    print(f"audit: FAIL: deny.toml ignores {', '.join(bad)} without a reason", file=sys.stderr)
    sys.exit(1)
PY

cargo deny --offline --locked check advisories bans licenses sources ||
  die "cargo-deny found problems (above); advisories as of $date"

# Control: without the ignores, each ignored advisory must be reported.
ids=$(python3 -c 'import tomllib,sys; print(" ".join(e["id"] for e in tomllib.load(open("deny.toml","rb"))["advisories"].get("ignore", [])))')
if [[ -n $ids ]]; then
  control=$repo/target/advisory-dbs/deny-no-ignores.toml
  python3 - deny.toml "$control" "$dbs" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"(?ms)^ignore = \[.*?^\]\n", "ignore = []\n", text)
# db-path is relative to the config file's folder: make it absolute.
text = text.replace('db-path = "target/advisory-dbs"', 'db-path = "%s"' % sys.argv[3])
open(sys.argv[2], "w").write(text)
PY
  out=$(cargo deny --offline --locked --config "$control" check advisories 2>&1 || true)
  for id in $ids; do
    grep -q "$id" <<<"$out" || die "control: $id is ignored in deny.toml but no longer reported; drop the ignore or check the database"
  done
  log "control: with no ignores, cargo-deny reports $ids (the database is consulted)"
fi
log "ok: bans, licenses, sources; advisories clean as of $date (ignored with reasons: ${ids:-none})"
