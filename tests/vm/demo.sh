#!/usr/bin/env bash
# `make demo`: boots the test guest with four emulated NVMe "instance-store"
# disks, runs `ephemera plan`, `provision` (with escrow) and `status`, and
# prints what the kernel then shows. Run by `make demo` after a release build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$repo/target/demo
bin=$repo/target/release/ephemera
[[ -x $bin ]] || { echo "demo: $bin missing: run make demo" >&2; exit 1; }

"$repo/tests/vm/build-guest.sh"
"$repo/tests/vm/build-guest.sh" add-binary "$bin"

rm -rf "$work" && mkdir -p "$work/scenario"
cp "$repo/tests/vm/scenarios/demo.sh" "$work/scenario/run.sh"
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/escrow.key.pem"
openssl pkey -pubout -in "$work/escrow.key.pem" -out "$work/scenario/escrow.pub.pem"
cat >"$work/scenario/config.toml" <<'TOML'
# QEMU's NVMe controllers report this model; on EC2 the default,
# "Amazon EC2 NVMe Instance Storage", is what you want.
[disks]
model = "QEMU NVMe Ctrl"

[escrow]
public_key = "/scenario/escrow.pub.pem"
TOML
disks=()
for i in 0 1 2 3; do
  truncate -s 1G "$work/disk$i.img"
  disks+=(--disk "$work/disk$i.img:AWS0DEMO000000$i")
done
echo "demo: booting a VM with 4 emulated NVMe disks (software emulation: about a minute)" >&2
"$repo/tests/vm/run-guest.sh" --show --scenario "$work/scenario" --log "$work/serial.log" "${disks[@]}" --timeout 900
echo "demo: done; the serial log is $work/serial.log, the escrow private key $work/escrow.key.pem" >&2
