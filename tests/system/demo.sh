#!/usr/bin/env bash
# `make demo`: boots a full Debian 12 system the way an instance of the
# Packer-baked AMI boots: the .deb installed by packer/install.sh, four
# emulated NVMe instance-store disks, and the user-data of
# cloud-init/data-service.yaml (with QEMU's disk model and a fresh escrow
# key). On the console: the boot, ephemera's journal lines, `ephemera
# status`, a reboot refused by the guard; then the ACPI power button (what a
# cloud console's stop sends) powers it off cleanly.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$repo/target/demo-system
deb=$repo/target/debian/ephemera.deb
[[ -f $deb ]] || { echo "demo: $deb missing: run make demo" >&2; exit 1; }

echo "demo: building the Debian 12 image (mmdebstrap; cached after the first run)" >&2
img=$("$repo/tests/system/build-image.sh" bookworm "$deb")

rm -rf "$work" && mkdir -p "$work/seed"
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/escrow.key.pem"
openssl pkey -pubout -in "$work/escrow.key.pem" -out "$work/escrow.pub.pem"

# The shipped example, with QEMU's model, the demo's key and a demo script.
python3 - "$repo/cloud-init/data-service.yaml" "$work/escrow.pub.pem" >"$work/seed/user-data" <<'PY'
import sys
text = open(sys.argv[1]).read()
pem = "".join("      " + l for l in open(sys.argv[2]).read().splitlines(True))
start = text.index("      -----BEGIN PUBLIC KEY-----")
end = text.index("-----END PUBLIC KEY-----\n", start) + len("-----END PUBLIC KEY-----\n")
text = text[:start] + pem + text[end:]
text = text.replace('model = "Amazon EC2 NVMe Instance Storage"', 'model = "QEMU NVMe Ctrl"')
demo = """  - path: /usr/local/sbin/ephemera-demo
    permissions: "0755"
    content: |
      #!/bin/sh
      exec >/dev/console 2>&1
      echo; echo "### journalctl -b -u ephemera -u ephemera-guard"
      journalctl -b -u ephemera -u ephemera-guard --no-pager -o short-monotonic
      echo; echo "### ephemera status"
      ephemera status
      echo; echo "### sample-data.service wrote to the volume"
      cat /mnt/ephemeral/sample-data.txt
      echo; echo "### systemctl reboot (the guard refuses it)"
      systemctl reboot; echo "systemctl reboot: exit $?"
      echo; echo "### still up, $(cut -d' ' -f1 /proc/uptime) s after boot"
      echo "EPHEMERA-DEMO-DONE: pressing the ACPI power button (a cloud console stop)"
"""
text = text.replace("write_files:\n", "write_files:\n" + demo, 1)
text = text.rstrip("\n") + "\n  - [/usr/local/sbin/ephemera-demo]\n"
print(text, end="")
PY
printf 'instance-id: i-0demo0ephemera\nlocal-hostname: ephemera-demo\n' >"$work/seed/meta-data"

disks=()
for i in 0 1 2 3; do
  truncate -s 1G "$work/disk$i.img"
  disks+=(--disk "$work/disk$i.img:AWS0DEMO000000$i")
done
echo "demo: booting (software emulation: a few minutes); console follows" >&2
"$repo/tests/system/run-system.sh" --image "$img" --root "$work/root.qcow2" --seed "$work/seed" \
  "${disks[@]}" --log "$work/serial.log" --monitor "$work/monitor" --timeout 1800 \
  --powerdown-on "EPHEMERA-DEMO-DONE" --show
echo "demo: done; serial log $work/serial.log, escrow private key $work/escrow.key.pem" >&2
