# Sourced by tests/vm/run-guest.sh and tests/system/run-system.sh: a TPM 2.0
# for the guest, Debian's swtpm with its state in a folder (the same folder on
# the next boot is the same TPM; a new one is another instance's).
#
# start_swtpm STATE_DIR SOCKET_DIR: starts swtpm, sets $tpmpid (the caller's
# cleanup kills it) and appends its QEMU arguments to the array $qemu:
# tpm-tis on x86-64, tpm-tis-device on the arm64 virt machine.
# shellcheck shell=bash
start_swtpm() {
  local state=$1 sock=$2/swtpm.sock dev
  command -v swtpm >/dev/null || { echo "swtpm missing: run scripts/host-tools.sh vm" >&2; return 2; }
  mkdir -p "$state"
  # The socket goes in the run's temp folder: a unix socket path is short.
  swtpm socket --tpm2 --tpmstate dir="$state" --ctrl type=unixio,path="$sock" \
    --flags not-need-init,startup-clear --log file="$state/swtpm.log" &
  tpmpid=$!
  # Wait for the named condition (the socket), bounded at 10 s.
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
  [[ -S $sock ]] || { echo "swtpm did not make its socket ($state/swtpm.log)" >&2; return 2; }
  case ${EPHEMERA_VM_ARCH:-amd64} in amd64) dev=tpm-tis ;; arm64) dev=tpm-tis-device ;; esac
  qemu+=(-chardev "socket,id=chrtpm,path=$sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
    -device "$dev,tpmdev=tpm0")
}
