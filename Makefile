# The two commands a new user needs, on a fresh Debian 12 machine as root:
#   make demo   boots a VM with emulated NVMe disks and shows ephemera at work
#   make test   runs the tests CI runs: lint, unit, fixture trees, real kernel
#               in QEMU (x86-64, and arm64 with the arm64 .deb's binary), the
#               shipped files, the four packages (lintian, rpmlint, the RPMs'
#               install), faults, full-system boots (x86-64), fuzzing, audit
# Each installs what it needs (Debian packages, the guest kernel) by itself.
# make test-all adds what CI leaves out for time (docs/TESTING.md): the
# arm64 full-system boot, whose image takes 13-40 min to build on a fresh
# machine.

CARGO ?= cargo

.PHONY: all deps build lint links unit vm test test-all demo demo-quick deb dist-check clean-vm host-tools-proof

all: build

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --release --locked

lint: deps
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Every relative link and anchor in README.md, docs/ and tests/system/README.md
# resolves (scripts/check-links.py; its self-test first). Seconds, Python 3 only.
links:
	scripts/check-links.py --self-test
	scripts/check-links.py

# Unit tests and sysfs fixture trees: seconds, no root needed beyond deps.
unit: deps
	$(CARGO) test --locked

# The README's commands need nothing installed by hand: scripts/host-tools.sh
# run in a fresh Debian 12 chroot (mmdebstrap) that carries a backports
# qemu-utils, as on the machine where `make demo` once failed; then the arm64
# cross toolchain (scripts/arm64.sh toolchain) in the same chroot, which must
# remove nothing (12.5 min uncached on a loaded host). In `make test-all`:
# CI's own run is on such a machine (its qemu-utils from backports), where
# every install of `make test` goes through the same --no-remove step.
host-tools-proof:
	scripts/test-host-tools.sh

# Real-kernel tests: each boots QEMU (TCG) with emulated NVMe disks. The core
# scenarios (three disks with escrow across a reboot, a single disk) run with
# ext4 and with xfs: one script each, the filesystem passed to the guest.
# tests/key_services.rs: recovery through a real OpenBao transit key.
# tests/escrow_store.rs: envelopes off the node, in a real S3 store (SeaweedFS).
# tests/kms.rs: the kms unlock pin against moto (signatures checked, a TLS front).
vm: deps
	tests/vm/build-guest.sh
	$(CARGO) test --locked --release --test vm --test key_services --test escrow_store --test kms -- --ignored --test-threads=2

# The packages' checks (dist-check, rpm-check, package-lint) come before
# faults, whose failpoints build replaces target/release/ephemera.
test: lint links unit vm arm64 dist-check rpm-check package-lint faults system fuzz-ci audit

# Everything: `make test`, then the host tools' proof in a fresh chroot, the
# arm64 NVMe burst test, the arm64 full-system boot, the container nodes, the
# Debian 13 data-service node, the one-pin and kms unlock nodes, and fuzzing
# at 300 s a target.
test-all: test host-tools-proof vm-arm64-bursts system-arm64 system-extra fuzz-long

# The RPMs for Amazon Linux 2023, x86-64 and arm64 (issue 21, docs/AL2023.md):
# scripts/build-rpm.sh stages the .deb's files (Cargo.toml's assets, the
# binary stripped, the man page gzip'd) and runs Debian's rpmbuild on
# dist/rpm/ephemera.spec, its %changelog from CHANGELOG.md, into
# target/rpm/ephemera-VERSION-1.ARCH.rpm: 3 s each once the binaries are
# built. rpm-check installs each in a scratch root with Debian's rpm, then
# upgrades it to release 2 and erases it, its scriptlets' systemctl calls
# recorded (scripts/check-rpm.sh).
.PHONY: rpm rpm-arm64 rpm-check
ARM64_BUILT = target/arm64/aarch64-unknown-linux-gnu/release/ephemera
# rpm takes the binary that `make deb` built: cargo-deb's build and a plain
# `cargo build` differ in environment (ring's build script reruns on
# CARGO_MANIFEST_DIR), and each rebuilds after the other (85 s here).
rpm: deb
	scripts/build-rpm.sh x86_64 target/release/ephemera target/rpm
rpm-arm64: build-arm64
	scripts/build-rpm.sh aarch64 $(ARM64_BUILT) target/rpm
rpm-check: rpm rpm-arm64
	scripts/check-rpm.sh target/rpm/ephemera-*-1.x86_64.rpm target/release/ephemera
	scripts/check-rpm.sh target/rpm/ephemera-*-1.aarch64.rpm $(ARM64_BUILT)

# The four packages as their distributions judge them (issue 28): lintian
# on both .debs, rpmlint on both RPMs, failing on any finding that the
# packages' own overrides (dist/debian/lintian-overrides,
# dist/rpm/ephemera.rpmlintrc) do not explain; their changelogs are
# CHANGELOG.md's; a .deb and the RPM of its architecture ship the same
# files (scripts/check-packages.sh; seconds once they are built).
.PHONY: package-lint
package-lint: deb deb-arm64 rpm rpm-arm64
	scripts/check-packages.sh target/debian/ephemera.deb target/debian/ephemera_arm64.deb \
	  target/rpm/ephemera-*-1.x86_64.rpm target/rpm/ephemera-*-1.aarch64.rpm

# The main job on an emulated instance: a full Debian 12 system booted from
# the baked image. demo-quick: the same job in a minimal initramfs (~2 min).
demo: deb
	tests/system/demo.sh

demo-quick: build
	tests/vm/demo.sh

# The Debian package (cargo-deb, installed from crates.io when missing),
# with its changelog written from CHANGELOG.md (scripts/changelog.py).
# deb-upgrade, after `make deb`: the binary `make deb` built, packaged as
# revision 2 (0.1.0-2, cargo-deb's variant "upgrade"), the newer package
# that the full-system test upgrades to. No build of its own, so that
# nothing can come between the two packages' binaries.
.PHONY: deb-tool deb-upgrade
deb-tool: deps
	command -v cargo-deb >/dev/null || $(CARGO) install --locked cargo-deb
deb: deb-tool
	mkdir -p target/debian
	scripts/changelog.py deb >target/debian/changelog
	$(CARGO) deb --locked --output target/debian/ephemera.deb
deb-upgrade: deb-tool
	mkdir -p target/debian
	scripts/changelog.py deb --revision 2 >target/debian/changelog-upgrade
	$(CARGO) deb --locked --no-build --variant upgrade --output target/debian/ephemera_upgrade.deb

# --- Graviton (arm64), issue 12: cross-built with Debian 12's rustc-web and its
# arm64 standard library (scripts/arm64.sh installs them); tested on Debian 12's
# arm64 cloud kernel under qemu-system-aarch64 (TCG).
.PHONY: build-arm64 deb-arm64
build-arm64:
	scripts/arm64.sh build

deb-arm64:
	scripts/arm64.sh deb target/debian/ephemera_arm64.deb

# The real-kernel suite (tests/vm.rs) on Debian 12's arm64 cloud kernel,
# with the binary the arm64 .deb ships: the same scenarios and checks as `make vm`.
ARM64_BIN = $(CURDIR)/target/arm64/deb-root/usr/sbin/ephemera
.PHONY: vm-arm64 arm64
# The NVMe burst test (150 s of queued I/O, the guard against QEMU's NVMe
# model missing doorbells under TCG) runs on x86-64 in `make vm`; its arm64
# run is `make vm-arm64-bursts`, in `make test-all`, for CI's time.
vm-arm64: deps deb-arm64
	EPHEMERA_VM_ARCH=arm64 tests/vm/build-guest.sh
	EPHEMERA_VM_ARCH=arm64 EPHEMERA_VM_BINARY=$(ARM64_BIN) \
	  $(CARGO) test --locked --release --test vm -- --ignored --test-threads=2 --skip nvme_bursts_lose_no_command
.PHONY: vm-arm64-bursts
vm-arm64-bursts: deps deb-arm64
	EPHEMERA_VM_ARCH=arm64 tests/vm/build-guest.sh
	EPHEMERA_VM_ARCH=arm64 EPHEMERA_VM_BINARY=$(ARM64_BIN) \
	  $(CARGO) test --locked --release --test vm -- --ignored --exact nvme_bursts_lose_no_command

# One full-system boot on arm64 (tests/system.rs arm64_debian12_boot1): a
# Debian 12 arm64 image with the arm64 .deb installed by packer/install.sh,
# built without binfmt_misc (debootstrap --foreign on the host, the second
# stage in an arm64 VM; cached in ~/.cache/ephemera-tests/system), booted under
# qemu-system-aarch64 -machine virt: the volume, the guard's refusals, the
# break-glass and the reboot.
.PHONY: system-arm64
system-arm64: deps deb-arm64
	$(CARGO) test --locked --release --test system -- --ignored --exact arm64_debian12_boot1

# What `make test` runs for arm64: the package and the real-kernel suite
# above; `make test-all` adds the one full-system boot. Not on arm64: the
# fault tests, boots 2 and 3 of the full-system story, and the benchmark
# (x86-64 only).
arm64: deb-arm64 vm-arm64

# The .deb's contents and units, the polkit rule, cloud-init examples, Packer.
dist-check: deb
	scripts/check-dist.sh target/debian/ephemera.deb

clean-vm:
	rm -rf target/vm target/vm-tests target/demo

# Benchmark in the QEMU guest: ephemera vs the naive pipeline vs the kernel
# floor (bench/), scaling with disk count and size, emulated throughput ratios.
# bench: the full run (~19 min on an idle host), writes bench/results/latest.json.
# bench-ci: 2 sizes x 2 disk counts (~4 min); fails when ephemera/floor > 1.5.
# bench-scale: the largest instance-store shape, 8 x 7.5 TB (60 TB) against
# 8 x 1 TiB, ext4 and xfs, and mkfs/mount option candidates at 60 TB with the
# bytes they write (sparse images, at most ~2.5 GiB on the host at a time;
# writes bench/results/scale.json). Not in `make bench` nor in CI: on a
# loaded host, 12 min for the four points and 15-25 min for the options boot
# (its xfs sets zero up to 2 GiB of log each, through emulated twofish).
.PHONY: bench bench-ci bench-scale
bench:
	bench/bench.sh

bench-ci:
	bench/bench.sh --ci

bench-scale:
	bench/bench.sh --scale

# Full-system tests (tests/system.rs, tests/system/): Debian 12 and 13 images
# built with mmdebstrap, the .deb installed by packer/install.sh, booted in
# QEMU (TCG). A data-service node (cloud-init/data-service.yaml, escrow):
# three boots each (reboot guard and break-glass, kept and recovered, kept and
# discarded, then the ACPI power button). A container node
# (cloud-init/kubernetes-containerd.yaml, Debian's containerd): two boots each
# (import and run, the marker on the volume and on no disk image; a new volume
# after the reboot, then the power button). A node with [unlock] (Debian 12,
# swtpm and tang: five boots). Images are cached in ~/.cache/ephemera-tests/system.
# The arm64 boot is `make system-arm64`'s; the container nodes (Debian 12
# and 13), the Debian 13 data-service node and the one-pin
# unlock nodes (tpm2 alone, tang alone), and the kms nodes (an image without
# clevis, moto and the IMDS test server on the host: kms alone, 2 of {tpm2,
# kms}) are `make system-extra`'s (CI leaves them out for time; `make
# test-all` runs them).
.PHONY: system system-extra
system: deps
	$(CARGO) test --locked --release --test system -- --ignored --test-threads=2 --skip arm64_ --skip debian13_ --skip debian12_unlock_one_pin --skip debian12_unlock_kms --skip debian12_container_node
system-extra: deps
	$(CARGO) test --locked --release --test system -- --ignored --test-threads=2 debian13_ debian12_unlock_one_pin debian12_unlock_kms debian12_container_node

# --- Reliability and security (issue 4; figures in docs/RELIABILITY.md) ------
# Real-kernel fault tests (tests/faults.rs): bad input, the wrong-disk matrix,
# a crash and an error at every step (ext4, then xfs, in one boot), concurrent
# runs, a key-leak scan, power loss (xfs cut after mkfs and after mount too), a
# disk that disappears or fails. The guest's ephemera is built with the
# test-only `failpoints` feature (src/failpoint.rs), never in a release build.
.PHONY: faults fuzz-ci audit reliability
faults: deps
	tests/vm/build-guest.sh
	$(CARGO) clippy --locked --all-targets --features failpoints -- -D warnings
	$(CARGO) test --locked --release --features failpoints --test faults -- --ignored --test-threads=2

# Bounded fuzzing of the config, escrow-envelope, unlock-file, events and sysfs parsers from the
# committed corpora in fuzz/corpus (FUZZ_SECONDS per target): 15 s each in
# `make test` (CI), 300 s each in `make fuzz-long` (`make test-all`).
FUZZ_SECONDS ?= 15
fuzz-ci:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/ci.sh
.PHONY: fuzz-long
fuzz-long:
	FUZZ_SECONDS=300 fuzz/ci.sh

# Dependency audit with cargo-deny (deny.toml), offline: bans, licenses and
# sources, and advisories against the RustSec snapshot in ../shared/advisory-db/
# (scripts/audit.sh prints its date; any advisory not ignored with a written
# reason fails, and a control run checks each ignore still matches).
audit:
	scripts/audit.sh

reliability: faults fuzz-ci audit
