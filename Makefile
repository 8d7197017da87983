# The two commands a new user needs, on a fresh Debian 12 machine as root:
#   make demo   boots a VM with emulated NVMe disks and shows ephemera at work
#   make test   runs every test: lint, unit, fixture trees, real kernel in QEMU
# Each installs what it needs (Debian packages, the guest kernel) by itself.

CARGO ?= cargo

.PHONY: all deps build lint unit vm test demo deb dist-check clean-vm

all: build

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --release --locked

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Unit tests and sysfs fixture trees: seconds, no root needed beyond deps.
unit: deps
	$(CARGO) test --locked

# Real-kernel tests: each boots QEMU (TCG) with emulated NVMe disks.
vm: deps
	tests/vm/build-guest.sh
	$(CARGO) test --locked --release --test vm -- --ignored --test-threads=2

test: lint unit vm dist-check

demo: build
	tests/vm/demo.sh

# The Debian package (cargo-deb, installed from crates.io when missing).
deb: deps
	command -v cargo-deb >/dev/null || $(CARGO) install --locked cargo-deb
	$(CARGO) deb --locked --output target/debian/ephemera.deb

# The .deb's contents and units, the polkit rule, cloud-init examples, Packer.
dist-check: deb
	scripts/check-dist.sh target/debian/ephemera.deb

clean-vm:
	rm -rf target/vm target/vm-tests target/demo

# Benchmark in the QEMU guest: ephemera vs the naive pipeline vs the kernel
# floor (bench/), scaling with disk count and size, emulated throughput ratios.
# bench: the full run (~25 min), writes bench/results/latest.json.
# bench-ci: 2 sizes x 2 disk counts (~6 min); fails when ephemera/floor > 1.5.
.PHONY: bench bench-ci
bench:
	bench/bench.sh

bench-ci:
	bench/bench.sh --ci
