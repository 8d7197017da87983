# Sourced by check.sh (MODE=container in /etc/ephemera-check.env); uses its
# helpers (check, ok, notok, fact, mono, wait_settled, volume_checks,
# guard_checks, break_glass_and_reboot) and its variables (boot, state, MOUNT).
# A Kubernetes node with Debian's containerd, the user-data being the shipped
# cloud-init/kubernetes-containerd.yaml (no escrow):
#   boot 1: ephemera provisions and binds; containerd starts after it, its root
#     on the volume; an image made here from busybox is imported from a
#     tarball (no registry) and a container writes the marker into its
#     writable layer and into a volume under /var/lib/kubelet. The bytes are
#     found in the files under the binds' subdirectories on the volume and in
#     the blocks read from /dev/mapper/ephemera. Then the guard is released
#     and the node reboots.
#   boot 2: no escrow, so a new volume: a new LUKS UUID, containerd active on
#     it, boot 1's image and container gone; import and run again; a
#     container is left running, then EPH-READY-FOR-POWERDOWN: the host
#     presses the ACPI power button.
# The marker comes on the NoCloud seed volume (file `marker`, never in the
# user-data, which cloud-init copies to the root disk); it is read from there
# into the container and never printed: the host searches the disk images for
# it after the VM stops. Only its SHA-256 is printed (FACT marker_sha256).

IMAGE_REF=localhost/ephemera-test:1
# The [[bind]] paths of the example, and their default subdirectories.
BIND_PATHS="/var/lib/containerd /var/lib/kubelet /var/log/pods"
VOLDIR=/var/lib/kubelet/pods/ephemera-test/volumes/data
seed=/run/cidata
marker=$seed/marker

# An OCI image archive with one uncompressed layer: busybox-static and the
# applets the test runs. Written under /run (tmpfs).
make_image() { # make_image OUT.tar
  local d arch layer config manifest
  d=$(mktemp -d /run/oci.XXXXXX)
  mkdir -p "$d/rootfs/bin" "$d/blobs/sha256"
  cp /bin/busybox "$d/rootfs/bin/busybox"
  for a in sh cat sleep sync; do ln -s busybox "$d/rootfs/bin/$a"; done
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$d/rootfs" -cf "$d/layer.tar" .
  arch=$(dpkg --print-architecture)
  blob() { # blob FILE: moves it into blobs/, prints its digest
    local h
    h=$(sha256sum <"$1" | cut -d' ' -f1)
    mv "$1" "$d/blobs/sha256/$h"
    echo "$h"
  }
  size() { stat -c %s "$d/blobs/sha256/$1"; }
  layer=$(blob "$d/layer.tar")
  printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$layer" >"$d/config.json"
  config=$(blob "$d/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$(size "$config")" "$layer" "$(size "$layer")" >"$d/manifest.json"
  manifest=$(blob "$d/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"1"}}]}' \
    "$manifest" "$(size "$manifest")" "$arch" "$IMAGE_REF" >"$d/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  tar -C "$d" -cf "$1" oci-layout index.json blobs
  rm -rf "$d"
}

# Whether the marker is in the blocks of FILE, read from /dev/mapper/ephemera
# (O_DIRECT, not the page cache) at the extents filefrag reports.
marker_on_dm() { # marker_on_dm FILE
  local bs ext start len
  bs=$(stat -f -c %S "$1")
  ext=$(filefrag -v -b"$bs" "$1" | awk '$1 ~ /^[0-9]+:$/ { sub(/\.\./, "", $4); sub(/:/, "", $6); print $4, $6 }')
  [[ -n $ext ]] || return 1
  while read -r start len; do
    dd if=/dev/mapper/ephemera bs="$bs" skip="$start" count="$len" iflag=direct status=none |
      grep -qaF -f "$marker" && return 0
  done <<<"$ext"
  return 1
}

# ephemera, the binds, containerd's order and root: every boot.
node_checks() { # node_checks LABEL
  local p want src prop e_active c_start
  wait_settled ephemera.service
  check "$1: ephemera.service is active and exited 0 ($(systemctl show -P ActiveState ephemera.service) $(systemctl show -P ExecMainStatus ephemera.service))" \
    test "$(systemctl show -P ActiveState ephemera.service) $(systemctl show -P ExecMainStatus ephemera.service)" = "active 0"
  volume_checks "$1"
  for p in $BIND_PATHS; do
    want="/dev/mapper/ephemera[/${p#/}]"
    src=$(findmnt -n -o SOURCE --mountpoint "$p")
    prop=$(findmnt -n -o PROPAGATION --mountpoint "$p")
    check "$1: $p is bound from the volume's ${p#/}, shared (findmnt: $src $prop)" \
      test "$src" = "$want" -a "$prop" = shared
  done
  wait_settled containerd.service
  check "$1: containerd.service is active ($(systemctl show -P ActiveState,SubState containerd.service | tr '\n' ' '))" \
    test "$(systemctl show -P ActiveState containerd.service)" = active
  e_active=$(mono ephemera.service ActiveEnterTimestampMonotonic)
  c_start=$(mono containerd.service ExecMainStartTimestampMonotonic)
  fact container_order "ephemera_active=$e_active containerd_exec=$c_start"
  check "$1: containerd started after ephemera.service became active ($c_start >= $e_active)" \
    test "$c_start" -ge "$e_active" -a "$e_active" -gt 0
  # containerd's root as it reports it, and where that lands.
  root=$(containerd config dump 2>/dev/null | awk -F' = ' '$1 == "root" { gsub(/"/, "", $2); print $2 }')
  check "$1: containerd's root ($root) is /var/lib/containerd, on the volume (findmnt: $(findmnt -n -o SOURCE --target "$root"))" \
    test "$root" = /var/lib/containerd -a "$(findmnt -n -o SOURCE --target "$root")" = "/dev/mapper/ephemera[/var/lib/containerd]"
}

# Import the image from a tarball and run a container that writes the marker
# into its writable layer and into a volume (a directory under /var/lib/kubelet).
import_and_run() { # import_and_run LABEL NAME
  local out rc layer_file snap
  make_image /run/ephemera-test-image.tar
  out=$(ctr images import /run/ephemera-test-image.tar 2>&1)
  rc=$?
  echo "$out" | sed 's/^/# ctr images import: /'
  check "$1: ctr images import exits 0 and lists $IMAGE_REF" \
    eval "test $rc = 0 && ctr images ls -q | grep -qxF $IMAGE_REF"
  mkdir -p "$VOLDIR"
  out=$(ctr run --mount "type=bind,src=$seed,dst=/seed,options=rbind:ro" \
    --mount "type=bind,src=$VOLDIR,dst=/data,options=rbind:rw" "$IMAGE_REF" "$2" \
    /bin/sh -c 'cat /seed/marker >/layer-marker && cat /seed/marker >/data/volume-marker && sync && echo container-ran' 2>&1)
  rc=$?
  check "$1: ctr run $2 exits 0 (rc=$rc: $(tr '\n' ' ' <<<"$out"))" test "$rc" = 0 -a "$out" = container-ran
  sync
  # The writable layer: the container's snapshot, under containerd's root.
  layer_file=$(find /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots -path '*/fs/layer-marker' 2>/dev/null | head -n 1)
  snap=${layer_file#/var/lib/containerd/}
  fact layer_file "$layer_file"
  check "$1: the writable layer's file is under the bind's subdirectory on the volume ($MOUNT/var/lib/containerd/$snap)" \
    cmp -s "$marker" "$MOUNT/var/lib/containerd/$snap"
  check "$1: the volume's file is under the bind's subdirectory on the volume ($MOUNT${VOLDIR})" \
    cmp -s "$marker" "$MOUNT$VOLDIR/volume-marker"
  check "$1: the writable layer's bytes are in /dev/mapper/ephemera's blocks of that file" \
    marker_on_dm "$MOUNT/var/lib/containerd/$snap"
  check "$1: the volume's bytes are in /dev/mapper/ephemera's blocks of that file" \
    marker_on_dm "$MOUNT$VOLDIR/volume-marker"
}

container_story() {
  mkdir -p "$seed"
  mountpoint -q "$seed" || mount -o ro /dev/disk/by-label/CIDATA "$seed"
  check "the marker is on the seed volume" test -s "$marker"
  fact marker_sha256 "$(sha256sum <"$marker" | cut -d' ' -f1)"
  node_checks "boot $boot"
  fact luks_uuid "$luks_uuid"
  if [[ $boot == 1 ]]; then
    echo "$luks_uuid" >"$state/luks_uuid.1"
    guard_checks "boot 1"
    import_and_run "boot 1" ephemera-test-1
    umount "$seed"
    break_glass_and_reboot
  fi
  # boot 2: a reboot without escrow: a new volume.
  old_uuid=$(cat "$state/luks_uuid.1")
  check "boot 2: a new LUKS UUID ($luks_uuid, boot 1: $old_uuid)" test -n "$luks_uuid" -a "$luks_uuid" != "$old_uuid"
  check "boot 2: no member holds boot 1's LUKS UUID" \
    eval "! for d in /dev/nvme*n1; do cryptsetup luksUUID \$d 2>/dev/null; done | grep -qxF $old_uuid"
  check "boot 2: boot 1's image is gone ($(ctr images ls -q | tr '\n' ' '))" test -z "$(ctr images ls -q)"
  check "boot 2: boot 1's container is gone ($(ctr containers ls -q | tr '\n' ' '))" test -z "$(ctr containers ls -q)"
  check "boot 2: boot 1's volume file is gone" test ! -e "$VOLDIR/volume-marker"
  guard_checks "boot 2"
  import_and_run "boot 2" ephemera-test-2
  # A running container at the power button, as on a node in use. containerd
  # (KillMode=process) leaves it running when it stops; its rootfs, in its
  # own mount namespace, keeps the volume's file system in use until
  # systemd-shutdown's SIGTERM ends it. It exits on SIGTERM (as PID 1 it
  # must trap it: a bare `sleep` would wait for the SIGKILL, 90 s later).
  ctr run -d "$IMAGE_REF" ephemera-sleeper /bin/sh -c 'trap "exit 0" TERM; sleep 100000 & wait' >/dev/null 2>&1
  check "boot 2: a container left running ($(ctr tasks ls 2>&1 | tr '\n' ' '))" \
    eval "ctr tasks ls 2>/dev/null | grep -q 'ephemera-sleeper.*RUNNING'"
  umount "$seed"
  echo "EPH-CHECK-END boot=$boot failed=$failed"
  sync
  echo "EPH-READY-FOR-POWERDOWN"
}
