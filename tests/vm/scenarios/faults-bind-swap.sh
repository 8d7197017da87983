# A bind's node directory swapped for a symlink while ephemera copies it onto
# the volume (security review finding 2): the failpoint before-bind-copy
# holds the first provision between the check of the node directory and
# `cp -a`, and the scenario (root here, for an account that could write in
# the directory above, which ephemera now refuses) replaces the directory
# with a symlink to a root directory. `cp -a` copies the symlink itself; the
# run must refuse it (exit 3, one line naming the entry), roll back, and
# leave nothing of the volume mounted, at the stand-in or anywhere.
. /scenario/lib.sh
app=/srv/app/cache
standin=/etc/profile.d-standin
count() { awk -v t="$1" '$5 == t' /proc/self/mountinfo | wc -l; }

mkdir -p $standin $app && echo root-only >$standin/marker
chown 1000:1000 $app && echo app-data >$app/data

rm -f /tmp/a.err
(EPHEMERA_FAILPOINT="before-bind-copy=sleep:8000" ephemera provision --config $cfg 2>/tmp/a.err; echo $? >/tmp/a.rc) &
i=0
until grep -q "EPHEMERA-FAILPOINT before-bind-copy" /tmp/a.err 2>/dev/null || [ $i -ge 1200 ]; do sleep 0.1; i=$((i + 1)); done
check "the run reached the copy" grep -q "EPHEMERA-FAILPOINT before-bind-copy" /tmp/a.err
# The volume is mounted now; its device number, for the checks below.
# findmnt pads the column; mountinfo does not.
dev=$(findmnt -n -o MAJ:MIN --mountpoint $mnt | tr -d ' ')
check "the volume's device number, maj:min" sh -c "echo '$dev' | grep -Eqx '[0-9]+:[0-9]+'"
mv $app /srv/app/cache.moved && ln -s $standin $app
wait
cat /tmp/a.err
check_eq "swap during the copy: exit 3" "$(cat /tmp/a.rc)" 3
last=$(tail -n 1 /tmp/a.err)
case $last in
  "ephemera: error: bind $app: the copy of $app is not a directory"*) pass "swap during the copy: one line naming the entry" ;;
  *) fail "swap during the copy: last line '$last'" ;;
esac
check_eq "swap during the copy: nothing at the stand-in" "$(count $standin)" 0
check_eq "swap during the copy: no mount of the volume's device" "$(awk -v d="$dev" '$3 == d' /proc/self/mountinfo | wc -l)" 0
check "swap during the copy: rolled back, nothing left" nothing_left
check_eq "the stand-in is still root's" "$(stat -c %u $standin)" 0
check_eq "the stand-in holds only its own file" "$(ls -A $standin)" marker
check_eq "the moved directory is untouched" "$(cat /srv/app/cache.moved/data)" app-data
finish
