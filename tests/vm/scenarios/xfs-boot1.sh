# Boot 1 of 2, xfs with escrow and a bind: provision, write through the
# bind, then power off with the volume still mounted (an unplanned reboot:
# the xfs log may be dirty, as it would be).
. /scenario/lib.sh
mkdir -p /var/lib/containerd
run_ephemera provision --config $cfg
check_eq "provision exits 0" "$rc" 0
check "xfs mounted" sh -c "grep -q ' $mnt xfs ' /proc/mounts"
dd if=/dev/urandom of=/var/lib/containerd/data bs=1M count=8 2>/dev/null
sync
sha=$(sha256sum /var/lib/containerd/data | cut -d' ' -f1)
echo "DATA-SHA256 $sha"
check_eq "the data is on the volume" "$(sha256sum $mnt/var/lib/containerd/data | cut -d' ' -f1)" "$sha"
finish
