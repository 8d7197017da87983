# The two commands a new user needs, on a fresh Debian 12 machine as root:
#   make demo   boots a VM with emulated NVMe disks and shows ephemera at work
#   make test   runs every test: lint, unit, fixture trees, real kernel in QEMU
# Each installs what it needs (Debian packages, the guest kernel) by itself.

CARGO ?= cargo

.PHONY: all deps build lint unit vm test demo clean-vm

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

test: lint unit vm

demo: build
	tests/vm/demo.sh

clean-vm:
	rm -rf target/vm target/vm-tests target/demo
