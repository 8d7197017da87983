# [[bind]] entries, xfs and aes-xts-plain64, on two disks: bad entries refused before any
# write; the node directories' content copied onto the volume with owner,
# mode, hard links, xattrs and ACLs; binds shared; a re-run stacks nothing;
# a mount made inside a bind after provisioning (kubelet's pod volumes) is
# seen under the volume's subdirectory too, and the other way round (the
# bind and the volume are peers); after an unmount (binds and volume, or the
# volume alone) a re-run mounts and binds again; `ephemera unbind` and
# `teardown` take the binds down, with the mounts a runtime left inside them.
. /scenario/lib.sh
d0=$(dev_of EPH-A) && d1=$(dev_of EPH-B) || exit 1
c=/var/lib/containerd
# count TARGET: the mounts at TARGET.
count() { awk -v t="$1" '$5 == t' /proc/self/mountinfo | wc -l; }

for bad in bad-etc bad-overlap bad-inside; do
  run_ephemera provision --config /scenario/$bad.toml
  check_eq "$bad: exit 2" "$rc" 2
  check_eq "$bad: one line" "$(wc -l </tmp/eph.err)" 1
  check "$bad: names the entry" grep -q 'config bind\[' /tmp/eph.err
done
check "bad entries: no LUKS written" sh -c "! cryptsetup isLuks $d0 && ! cryptsetup isLuks $d1"
check_eq "bad entries: nothing created at the node" "$(ls -d $c /var/log/pods 2>/dev/null)" ""

# What an AMI may hold before the first boot.
mkdir -p $c/sub
echo image >$c/sub/blob
ln $c/sub/blob $c/link
# The guest root is tmpfs, which keeps trusted.* xattrs (user.* only from 6.6).
check "xattr set on the node" setfattr -n trusted.ephemera -v marker $c/sub/blob
setfacl -m u:1234:rx $c/sub
chown 1234:5678 $c/sub/blob
chmod 0711 $c
echo root-disk >$c/root-only

run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
check "cipher aes-xts-plain64" sh -c "cryptsetup status ephemera | grep -Eq 'cipher: +aes-xts-plain64'"
check_eq "xfs on the volume" "$(blkid -o value -s TYPE /dev/mapper/ephemera)" xfs
geo=$(xfs_db -r -c 'sb 0' -c 'p unit' -c 'p width' /dev/mapper/ephemera)
echo "$geo"
# 256 KiB chunk over 2 members, in 4 KiB blocks.
check_eq "xfs stripe unit and width" "$(echo $geo)" "unit = 64 width = 128"
check_eq "one mount at $c" "$(count $c)" 1
check_eq "one mount at /var/log/pods" "$(count /var/log/pods)" 1
fm=$(findmnt -n -o SOURCE,FSROOT,PROPAGATION --mountpoint $c)
echo "$fm"
check "bind of the volume's var/lib/containerd, shared" sh -c "echo '$fm' | grep -Eq '^/dev/mapper/ephemera(\[.*\])? +/var/lib/containerd +shared'"
check_eq "pod logs in their own subdir" "$(findmnt -n -o FSROOT --mountpoint /var/log/pods)" /pod-logs
v=$mnt/var/lib/containerd
check_eq "content copied" "$(cat $v/sub/blob)" image
check_eq "hard link kept" "$(stat -c %i $v/link)" "$(stat -c %i $v/sub/blob)"
check_eq "link count 2" "$(stat -c %h $v/sub/blob)" 2
check_eq "xattr kept" "$(getfattr --only-values -n trusted.ephemera $v/sub/blob)" marker
check "ACL kept" sh -c "getfacl -c $v/sub | grep -q '^user:1234:r-x'"
check_eq "owner kept" "$(stat -c %u:%g $v/sub/blob)" 1234:5678
check_eq "mode of the directory kept" "$(stat -c %a $c)" 711
check_eq "the node path is the volume" "$(stat -c %d $c/sub/blob)" "$(stat -c %d $mnt)"
check_eq "no staging left" "$(ls -A $mnt/.ephemera-staging)" ""
echo new >$c/new && echo log >/var/log/pods/p.log && sync
check_eq "writes land on the volume" "$(cat $v/new $mnt/pod-logs/p.log)" "new
log"

# Propagation, as kubelet mounts a pod volume under /var/lib/kubelet/pods.
mkdir -p $c/pods/x $c/pods/y
mount -t tmpfs pod-x $c/pods/x && echo x >$c/pods/x/f
check_eq "a mount inside the bind shows under the volume's subdir" "$(findmnt -n -o SOURCE --mountpoint $v/pods/x)" pod-x
check_eq "... with its files" "$(cat $v/pods/x/f)" x
mount -t tmpfs pod-y $v/pods/y
check_eq "a mount under the volume's subdir shows in the bind" "$(findmnt -n -o SOURCE --mountpoint $c/pods/y)" pod-y
umount $c/pods/x && umount $c/pods/y
check_eq "their unmounts propagate too" "$(count $v/pods/x)$(count $v/pods/y)" 00

run_ephemera provision --config $cfg
check_eq "re-run exits 0" "$rc" 0
check_eq "re-run: still one mount at $c" "$(count $c)" 1
check_eq "re-run: still one mount at /var/log/pods" "$(count /var/log/pods)" 1

umount /var/log/pods && umount $c && umount $mnt
check_eq "unmounted: the node directory shows the root disk" "$(cat $c/root-only)" root-disk
run_ephemera provision --config $cfg
check_eq "after umount: exit 0" "$rc" 0
check "after umount: remounted" sh -c "grep -q ' $mnt xfs ' /proc/mounts"
check_eq "after umount: bound again, once" "$(count $c)" 1
check_eq "after umount: the data is back" "$(cat $c/new)" new
check_eq "after umount: xattr still there" "$(getfattr --only-values -n trusted.ephemera $c/sub/blob)" marker

umount $mnt
# The binds still write to the volume: the guard and status count them.
st=$(ephemera --config $cfg status --json)
check "volume unmounted, binds kept: status lists the binds" sh -c "echo '$st' | jq -e '.mount == null and ([.binds[].path] | index(\"$c\")) != null and ([.binds[].path] | index(\"/var/log/pods\")) != null'"
run_ephemera guard on
check_eq "volume unmounted, binds kept: guard on exits 0" "$rc" 0
check "volume unmounted, binds kept: the guard is armed" test -e /run/ephemera/guard
ephemera guard hold &
hold=$!
sleep 2
check "volume unmounted, binds kept: guard hold keeps holding" kill -0 $hold
kill $hold 2>/dev/null
wait $hold 2>/dev/null
ephemera guard off
run_ephemera provision --config $cfg
check_eq "volume unmounted, binds kept: exit 0" "$rc" 0
check "volume unmounted, binds kept: remounted" sh -c "grep -q ' $mnt xfs ' /proc/mounts"
check_eq "volume unmounted, binds kept: one mount at $c" "$(count $c)" 1

# A runtime stopped, its pod volume left mounted inside the bind.
mount -t tmpfs pod-z $c/pods/x
run_ephemera unbind --config $cfg
check_eq "unbind with a mount inside a bind exits 0" "$rc" 0
check "unbind says it took that mount down" grep -q "unmounted $c/pods/x, mounted inside the bind $c" /tmp/eph.err
check_eq "unbind: nothing at $c/pods/x" "$(count $c/pods/x)" 0
check_eq "unbind: nothing at $c" "$(count $c)" 0
check_eq "unbind: nothing at /var/log/pods" "$(count /var/log/pods)" 0
check "unbind: the volume stays mounted" sh -c "grep -q ' $mnt xfs ' /proc/mounts"

run_ephemera provision --config $cfg
check_eq "AlreadyProvisioned binds again" "$(count $c)" 1
mount -t tmpfs pod-w $c/pods/x
check_eq "bound again: peers again" "$(findmnt -n -o SOURCE --mountpoint $v/pods/x)" pod-w
# The same pod volume in use: unbind refuses in one line, naming it.
cd $c/pods/x
run_ephemera unbind --config $cfg
cd /
check_eq "a mount in use inside a bind: unbind exits 1" "$rc" 1
check_eq "... in one line, naming it" "$(grep -c ERROR /tmp/eph.err) $(tail -n 1 /tmp/eph.err)" "0 ephemera: error: unmounting $c/pods/x, mounted inside the bind $c: EBUSY: Device or resource busy; stop what uses it (a container runtime) and run again"
check_eq "... that bind stays" "$(count $c)" 1
run_ephemera teardown --config $cfg --yes
check_eq "teardown with binds and a mount inside one exits 0" "$rc" 0
check_eq "teardown: nothing at $c/pods/x" "$(count $c/pods/x)" 0
check_eq "teardown: nothing at $v/pods/x" "$(count $v/pods/x)" 0
check_eq "teardown: nothing at $c" "$(count $c)" 0
check "teardown: nothing left" nothing_left
finish
