# [[bind]] entries against symlinks (security review finding 2, issue 17):
# a bind's target, a directory above it, or its subdirectory on the volume
# replaced by a symlink to a root directory (a stand-in for /etc/profile.d),
# an entry under /var/run (a symlink to /run), and a directory above the
# target that an application account owns. Each run is refused (exit 3) in
# one line that names the entry and the component, and nothing of the volume
# is mounted anywhere but at the entry's own path. Then `unbind` and
# `teardown` take down the binds of the volume wherever they are: at a path
# the config no longer names, and one made by hand.
. /scenario/lib.sh
d0=$(dev_of EPH-A) || exit 1
app=/srv/app/cache
standin=/etc/profile.d-standin
# count TARGET: the mounts at TARGET.
count() { awk -v t="$1" '$5 == t' /proc/self/mountinfo | wc -l; }
# binds_of_volume: mount points of the volume's device whose root is a
# subdirectory (binds), read from mountinfo.
binds_of_volume() { awk -v d="$dev" '$3 == d && $4 != "/" { print $5 }' /proc/self/mountinfo | sort | tr '\n' ' '; }
# refused DESC WANT: the last run exited 3, its error in one line (the
# last; no other line says ERROR) that starts with WANT, which names the
# entry and the component.
refused() {
  check_eq "$1: exit 3" "$rc" 3
  local last
  last=$(tail -n 1 /tmp/eph.err)
  case $last in
    "ephemera: error: $2"*) pass "$1: one line naming the entry and the component" ;;
    *) fail "$1: last line '$last', want 'ephemera: error: $2...'" ;;
  esac
  check_eq "$1: no other error line" "$(grep -c ERROR /tmp/eph.err)" 0
}

# A root directory the attacks aim at, and the application's directory.
mkdir -p $standin $app && echo root-only >$standin/marker
chown 1000:1000 $app && echo app-data >$app/data

run_ephemera provision --config $cfg
check_eq "first provision exits 0" "$rc" 0
# findmnt pads the column; mountinfo does not.
dev=$(findmnt -n -o MAJ:MIN --mountpoint $mnt | tr -d ' ')
check "the volume's device number, maj:min" sh -c "echo '$dev' | grep -Eqx '[0-9]+:[0-9]+'"
check_eq "bound once at $app" "$(binds_of_volume)" "$app "
check_eq "the copy keeps the app's owner" "$(stat -c %u $mnt/$app)" 1000

# 1. The target replaced by a symlink at a re-run (the subdirectory is on
# the volume already): the bind must not land on the stand-in.
umount $app
mv $app /srv/app/cache.moved && ln -s $standin $app
run_ephemera provision --config $cfg
refused "symlinked target" "bind $app: $app is a symlink (to $standin)"
check_eq "symlinked target: nothing of the volume at the stand-in" "$(count $standin)" 0
check_eq "symlinked target: no bind of the volume anywhere" "$(binds_of_volume)" ""
check_eq "symlinked target: the stand-in is still root's" "$(stat -c %u $standin)" 0
rm $app && mv /srv/app/cache.moved $app

# 2. A directory above the target is a symlink (to /etc); the entry names
# the app's subdirectory on the volume, which exists.
ln -s /etc /srv/lnk
run_ephemera provision --config /scenario/parent-link.toml
refused "symlinked parent" "bind /srv/lnk/profile.d-standin: /srv/lnk is a symlink (to /etc)"
check_eq "symlinked parent: nothing of the volume at the stand-in" "$(count $standin)" 0
check_eq "symlinked parent: no bind of the volume anywhere" "$(binds_of_volume)" ""

# 3. The subdirectory on the volume replaced by a symlink at a re-run.
mv $mnt/$app $mnt/$app.moved && ln -s $standin $mnt/$app
run_ephemera provision --config $cfg
refused "symlinked subdirectory on the volume" "bind $app: $mnt$app is a symlink (to $standin)"
check_eq "symlinked subdirectory: nothing mounted at $app" "$(count $app)" 0
check_eq "symlinked subdirectory: no bind of the volume anywhere" "$(binds_of_volume)" ""
rm $mnt/$app && mv $mnt/$app.moved $mnt/$app

# 4. An entry under /var/run, a symlink to /run: refused at every run, and
# never a mount in /run (the old code stacked one there per run).
check_eq "/var/run is a symlink in the guest" "$(readlink /var/run)" ../run
for n in 1 2; do
  run_ephemera provision --config /scenario/var-run.toml
  refused "/var/run entry, run $n" "bind /var/run/app: /var/run is a symlink (to ../run)"
done
check_eq "/var/run entry: nothing mounted at /run/app" "$(count /run/app)" 0
check_eq "/var/run entry: no bind of the volume anywhere" "$(binds_of_volume)" ""

# 5. A directory above the target that the application account owns: it
# could swap the target at any time, so the entry is refused.
chown 1000 /srv/app
run_ephemera provision --config $cfg
refused "app-owned parent" "bind $app: /srv/app is not root's alone (owner uid 1000, mode 0755)"
check_eq "app-owned parent: no bind of the volume anywhere" "$(binds_of_volume)" ""
chown 0 /srv/app
chmod 0775 /srv/app
run_ephemera provision --config $cfg
refused "group-writable parent" "bind $app: /srv/app is not root's alone (owner uid 0, mode 0775)"
chmod 0755 /srv/app

# With the path sound again, the bind is made, on the real directory.
run_ephemera provision --config $cfg
check_eq "sound path: exit 0" "$rc" 0
check_eq "sound path: bound once at $app" "$(binds_of_volume)" "$app "
check_eq "sound path: the app's data" "$(cat $app/data)" app-data

# 6. unbind takes down every bind of the volume, wherever it is: the config
# changed between runs (it no longer names $app), and a bind made by hand.
mkdir -p /srv/hand && mount --bind $mnt/srv/app /srv/hand
run_ephemera unbind --config /scenario/other.toml
check_eq "unbind, config changed: exit 0" "$rc" 0
check "unbind names $app" grep -q "unmounted the bind $app" /tmp/eph.err
check "unbind names /srv/hand" grep -q "unmounted the bind /srv/hand" /tmp/eph.err
check_eq "unbind: no bind of the volume anywhere" "$(binds_of_volume)" ""
check "unbind: the volume stays mounted" sh -c "grep -q ' $mnt ext4 ' /proc/mounts"

# 7. teardown, binds at paths the config does not name: all come down and
# the volume closes.
run_ephemera provision --config $cfg
check_eq "bound again: exit 0" "$rc" 0
mount --bind $mnt/srv/app /srv/hand
run_ephemera teardown --config /scenario/other.toml --yes
check_eq "teardown, config changed: exit 0" "$rc" 0
check_eq "teardown: nothing at $app" "$(count $app)" 0
check_eq "teardown: nothing at /srv/hand" "$(count /srv/hand)" 0
check "teardown: nothing left" nothing_left
check_eq "the stand-in holds only its own file" "$(ls -A $standin)" marker
finish
