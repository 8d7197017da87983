# Bad input and the wrong-disk safety matrix (tests/faults.rs).
#
# EPH-BLANK is the one disk ephemera may write. Every other disk holds a
# layout that must never be written; the host compares their image hashes
# before and after. While one layout is under test, the other unmounted
# layouts are held by a dm-linear mapping (which writes nothing), so that
# each layout alone decides the run: a layout ephemera failed to recognise
# would be striped with EPH-BLANK and written.
. /scenario/lib.sh

blank=$(dev_of EPH-BLANK) || exit 1
# Layouts that can be held (not mounted).
holdable="EPH-GPT EPH-DOS EPH-EXT4 EPH-XFS EPH-SWAP EPH-MD EPH-LUKS EPH-LUKSLBL"

# Layouts made in the guest: an md 1.2 superblock (mdadm needs block devices).
md=$(dev_of EPH-MD) || exit 1
mdadm --create /dev/md/foreign --run --metadata=1.2 --level=1 --raid-devices=2 "$md" missing
mdadm --stop /dev/md/foreign
echo "MD-SHA256 $(dev_sha "$md")"

# In use: a root-like disk (GPT, ext4 on partition 1, mounted as nvme0n1p1 is
# at / on EC2) and a whole-disk ext4, both mounted read-only.
root=$(dev_of EPH-ROOT) && inuse=$(dev_of EPH-MOUNTED) || exit 1
mkdir -p /mnt/root /mnt/inuse
mount -o ro,noload "${root}p1" /mnt/root
mount -o ro,noload "$inuse" /mnt/inuse

hold_all_but() {
  local s d
  for s in $holdable; do
    [ "$s" = "$1" ] && continue
    d=$(dev_of "$s")
    dmsetup create "hold-$s" --table "0 $(cat "/sys/block/${d#/dev/}/size") linear $d 0" || fail "hold $s"
  done
}
release_all() {
  local s
  for s in $holdable; do
    dmsetup remove "hold-$s" 2>/dev/null
  done
}
nothing_made() {
  test ! -e /dev/md_ephemera && test ! -e /dev/mapper/ephemera && ! grep -q " $mnt " /proc/mounts
}
# The volume on EPH-BLANK, made by a run that was expected to succeed: undo
# it with cryptsetup and wipefs.
undo_blank() {
  umount $mnt && cryptsetup close ephemera && wipefs -q -a "$blank"
}

# --- Bad input: each case is one line and exit 2, and nothing is made.
echo nobody:x:65534:65534:nobody:/:/bin/sh >>/etc/passwd
# Files only root can read (root reads them anyway: those cases run as nobody).
chmod 0000 /scenario/key-unreadable.pem /scenario/in-config-unreadable.toml
hold_all_but none
blank_sha=$(dev_sha "$blank")
tried=0 clean=0
while IFS='|' read -r id want user needle args; do
  [ -n "$id" ] || continue
  tried=$((tried + 1))
  echo "+ [$id] ($user) ephemera $args"
  if [ "$user" = nobody ]; then
    # shellcheck disable=SC2086 # args are words
    su -s /bin/sh nobody -c "ephemera $args" 2>/tmp/eph.err
    rc=$?
  else
    # shellcheck disable=SC2086
    ephemera $args 2>/tmp/eph.err
    rc=$?
  fi
  cat /tmp/eph.err
  lines=$(wc -l </tmp/eph.err)
  ok=1
  [ "$rc" = "$want" ] || ok=0
  if [ "$want" != 0 ]; then
    [ "$lines" = 1 ] || ok=0
    grep -q '^ephemera: error: ' /tmp/eph.err || ok=0
    grep -qF -- "$needle" /tmp/eph.err || ok=0
  fi
  nothing_made || ok=0
  blkid -p "$blank" >/dev/null 2>&1 && ok=0
  if [ $ok = 1 ]; then
    clean=$((clean + 1))
    pass "bad input $id: exit $rc, one line naming '$needle', nothing made"
  else
    fail "bad input $id: exit $rc (want $want), $lines line(s), want '$needle'"
  fi
done </scenario/cases.txt
echo "BAD-INPUT-RESULT tried=$tried clean=$clean"
check_eq "bad input: blank disk byte-identical" "$(dev_sha "$blank")" "$blank_sha"

# Control: the same setup with a good config does write the blank disk.
run_ephemera provision --config $cfg
check_eq "control: good config provisions the blank disk" "$rc" 0
check_eq "control: LUKS on the blank disk" "$(blkid -p -o value -s TYPE "$blank")" crypto_LUKS
undo_blank

# A disk taken by someone else between the survey and the format (here a
# dm-linear mapping, made while provision waits at a failpoint): the format
# itself proves the disk unused (libcryptsetup opens it O_EXCL), so the run
# fails, writes no header, and leaves the other holder as it was.
(EPHEMERA_FAILPOINT="after-wipe=sleep:6000" ephemera provision --config $cfg 2>/tmp/race.err; echo $? >/tmp/race.rc) &
i=0
until grep -q "EPHEMERA-FAILPOINT after-wipe" /tmp/race.err 2>/dev/null || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
dmsetup create grab --table "0 $(cat "/sys/block/${blank#/dev/}/size") linear $blank 0"
wait
cat /tmp/race.err
check_eq "disk taken before the format: exit 1" "$(cat /tmp/race.rc)" 1
check "disk taken before the format: no header written" sh -c "blkid -p $blank; test \$? -eq 2"
check "disk taken before the format: the other holder is intact" dmsetup info grab
check "disk taken before the format: nothing made" nothing_made
dmsetup remove grab
release_all

# --- The matrix: layout serial | exit | message (with @ for the device).
tried=0 kept=0
while IFS='|' read -r serial want msg; do
  [ -n "$serial" ] || continue
  tried=$((tried + 1))
  dev=$(dev_of "$serial")
  hold_all_but "$serial"
  ok=1
  config=$cfg pre=
  if [ "$serial" = EPH-BLANK ]; then
    config=/scenario/ebs.toml
    pre=$(dev_sha "$blank")
  fi
  run_ephemera provision --config "$config"
  [ -z "$pre" ] || [ "$(dev_sha "$blank")" = "$pre" ] || { echo "EPH-BLANK changed"; ok=0; }
  want_msg=$(echo "$msg" | sed "s|@|$dev|g")
  [ "$rc" = "$want" ] || ok=0
  grep -qF -- "$want_msg" /tmp/eph.err || ok=0
  if [ "$rc" = 0 ]; then
    undo_blank || ok=0
  else
    nothing_made || ok=0
    blkid -p "$blank" >/dev/null 2>&1 && ok=0
  fi
  release_all
  if [ $ok = 1 ]; then
    kept=$((kept + 1))
    pass "layout $serial ($dev): exit $rc, says '$want_msg'"
  else
    fail "layout $serial ($dev): exit $rc (want $want), want '$want_msg'"
  fi
done </scenario/layouts.txt
echo "MATRIX-RESULT tried=$tried kept=$kept"
echo "MD-SHA256-AFTER $(dev_sha "$md")"

umount /mnt/root /mnt/inuse
finish
