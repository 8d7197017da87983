# Boot 2 of tests/vm.rs escrow_to_three_keys_any_one_or_any_two: boot 1
# escrowed the volume to three keys (a, b, c) with the envelope's threshold.
# - threshold 1: `ephemera recover` with each key alone reads the data back;
# - threshold 2: one key alone is refused (exit 2, naming how many more and
#   which; nothing assembled or open), and each pair reads the data back;
# - then the key the host made by hand from the documentation's blocks
#   (docs/ESCROW.md, /scenario/vk.bin) with the README's steps 2 to 4.
. /scenario/lib.sh
esc=/scenario/escrow.json
want_sha=$(cat /scenario/data.sha256)
t=$(jq '.threshold // 1' $esc)
members=$(for s in $(jq -r '.members[]' $esc); do dev_of "$s"; done | tr '\n' ' ')
close_all() {
  umount $mnt 2>/dev/null
  cryptsetup close ephemera 2>/dev/null
  mdadm --stop /dev/md_ephemera >/dev/null 2>&1
  true
}
recovered() { # recovered LABEL: the data is boot 1's; then everything closed
  check_eq "$1: the data read back is boot 1's" "$(sha256sum $mnt/data 2>/dev/null | cut -d' ' -f1)" "$want_sha"
  close_all
}
keys() { for k in "$@"; do printf -- '--private-key /scenario/%s.key.pem ' "$k"; done; }

if [ "$t" = 1 ]; then
  for k in a b c; do
    # shellcheck disable=SC2046 # the arguments are split on purpose
    run_ephemera --config $cfg recover --escrow $esc $(keys $k)
    check_eq "threshold 1: recover with key $k alone exits 0" "$rc" 0
    recovered "threshold 1, key $k"
  done
else
  before=$(for d in $members; do dev_sha "$d"; done | tr '\n' ' ')
  # shellcheck disable=SC2046
  run_ephemera --config $cfg recover --escrow $esc $(keys a)
  check_eq "threshold 2: key a alone is refused, exit 2" "$rc" 2
  check "... saying how many more keys it needs" grep -q "needs 2 of its 3 recipients' private keys and 1 given" /tmp/eph.err
  check "... and naming the keys that would do" grep -q "give 1 more with --private-key, of: sha256:" /tmp/eph.err
  check "... with nothing assembled or open" nothing_left
  check_eq "... and the disks unchanged" "$(for d in $members; do dev_sha "$d"; done | tr '\n' ' ')" "$before"
  for pair in "a b" "b c" "c a"; do
    # shellcheck disable=SC2046,SC2086
    run_ephemera --config $cfg recover --escrow $esc $(keys $pair)
    check_eq "threshold 2: recover with keys $pair exits 0" "$rc" 0
    recovered "threshold 2, keys $pair"
  done
fi

# By hand: the key from the documentation's blocks, then the README's steps 2-4.
mkdir -p /root/ops && cp $esc /root/ops/escrow.json
(umask 077 && cp /scenario/vk.bin /run/vk.bin)
(umask 022 && cd /root/ops && set -e && . /scenario/runbook-2-4.sh)
check_eq "by hand: the README's steps 2-4 exit 0" "$?" 0
check "by hand: no key file is left" test ! -e /run/vk.bin
check_eq "by hand: the data read back is boot 1's" "$(sha256sum /mnt/recovered/data | cut -d' ' -f1)" "$want_sha"
umount /mnt/recovered
cryptsetup close recovered
finish
