# Sourced by check.sh (MODE=unlock in /etc/ephemera-check.env); uses its
# helpers (check, ok, notok, fact, mono, journal, wait_settled, volume_checks,
# data_unit_checks, guard_checks, ops_command, break_glass_and_reboot) and its
# variables (boot, state, MOUNT, SAMPLE_UNIT, ESCROW_PATH, PRIVATE_KEY).
# A data node whose volume is bound to 2 of {its TPM (swtpm on the host), a
# tang server (on the host's loopback, reached at 10.0.2.100:7500 and nowhere
# else)}, the user-data being the shipped cloud-init/unlock.yaml (with escrow):
#   boot 1: provisioned and bound: the unlock file, mode 0400, names both
#     pins; docs/UNLOCK.md's runbook (tpm2-tools for the tpm2 part, clevis
#     for the tang part, combine-shares.py) gives a key that cryptsetup
#     accepts for the volume (the manual path). Data is written, then the
#     kernel panics (sysrq c).
#   boot 2 (same TPM, tang up): unlocked with no one acting: the same LUKS
#     UUID and data, the data unit started after the mount, the guard on.
#     Glass broken, reboot; the host stops tang.
#   boot 3 (same TPM, tang down): kept, exit 5, the data unit not started,
#     the members' hashes as the host saw them after boot 2. EPH-WANT-TANG:
#     the host starts tang; `ephemera unlock` opens it: data back, data unit
#     started, guard on. Glass broken, reboot.
#   boot 4 (another instance's TPM, tang up): kept, exit 5; `ephemera
#     unlock` fails again; the escrow key still recovers it, and the recovery
#     binds it again to this TPM (new slots that the runbook opens here).
#     Glass broken, reboot.
#   boot 5 (a stop and start: blank instance-store disks, the same root
#     disk): a new volume, the old unlock file not used; then the power button.
# UNLOCK_STORY=short (one pin: tests/system.rs debian12_unlock_one_pin_*):
# boots 1 and 2 as above; with the tpm2 pin alone, the power button after
# boot 2; with the tang pin alone (UNLOCK_TANG=1), boot 3 as above, then the
# power button.
# Settings besides check.sh's: UNLOCK_PINS (what the unlock file must say),
# TANG_THP (the tang server's thumbprint, for the timing of a tang-only token).
# The runbook is docs/UNLOCK.md's version 2 block, at UNLOCK_RUNBOOK.

unlock_file() { echo "${ESCROW_PATH%.json}.$1.unlock.json"; }
# runbook_opens UUID DEVICE: the runbook's key (in /run/vk.bin) is the
# volume's, as cryptsetup checks it against the LUKS2 digest; then wiped.
runbook_opens() {
  sed "s|<LUKS UUID>|$1|" "${UNLOCK_RUNBOOK:-/usr/local/sbin/ephemera-unlock-runbook}" >/run/runbook.sh &&
    sh -e /run/runbook.sh &&
    cryptsetup open --test-passphrase --type luks2 --key-size 512 --volume-key-file /run/vk.bin "$2"
  local rc=$?
  rm -f /run/vk.bin /run/runbook.sh
  return $rc
}
short() { [[ ${UNLOCK_STORY:-full} == short ]]; }
power_down() {
  echo "EPH-CHECK-END boot=$boot failed=$failed"
  sync
  echo "EPH-READY-FOR-POWERDOWN"
  sleep infinity
}

# Unlocked or provisioned: the unit active, the volume mounted, the guard on.
up_checks() { # up_checks LABEL
  wait_settled ephemera.service
  check "$1: ephemera.service is active and exited 0 ($(systemctl show -P ActiveState,ExecMainStatus ephemera.service | tr '\n' ' '))" \
    test "$(systemctl show -P ActiveState ephemera.service) $(systemctl show -P ExecMainStatus ephemera.service)" = "active 0"
  volume_checks "$1"
  data_unit_checks "$1"
  guard_checks "$1"
}

# Kept: nothing mounted, nothing open, the data unit not started.
kept_unlock_checks() { # kept_unlock_checks LABEL UUID
  wait_settled ephemera.service
  check "$1: ephemera.service failed with exit 5, the volume kept ($(systemctl show -P ActiveState,ExecMainStatus ephemera.service | tr '\n' ' '))" \
    test "$(systemctl show -P ExecMainStatus ephemera.service)" = 5
  check "$1: nothing is mounted at $MOUNT" eval "! findmnt --mountpoint $MOUNT >/dev/null"
  check "$1: no mapping is open" test ! -e /dev/mapper/ephemera
  check "$1: no md array is assembled" eval "! grep -q '^md' /proc/mdstat"
  check "$1: the journal says its pins did not give its key" \
    eval "journal ephemera.service | grep -q 'LUKS UUID $2.*its pins did not give its key'"
  check "$1: $SAMPLE_UNIT did not start" \
    test "$(systemctl show -P ExecMainStartTimestampMonotonic "$SAMPLE_UNIT")" = 0
  check "$1: ephemera status says earlier, with its unlock file" \
    test "$(ephemera status --json 2>/dev/null | jq -r '.state + " " + .earlier[0].luks_uuid + " " + .earlier[0].sealed')" = "earlier $2 $(unlock_file "$2")"
}

# sha256 of each instance-store disk, by serial, in serial order.
member_hashes() {
  local d
  for d in /sys/block/nvme*n1; do
    [[ $(tr -d ' ' <"$d/device/serial") == EBSROOT ]] && continue
    echo "$(tr -d ' ' <"$d/device/serial")=$(sha256sum <"/dev/${d##*/}" | cut -c1-16)"
  done | sort | paste -sd,
}

data_sha() { sha256sum <"$MOUNT/check-boot1" 2>/dev/null | cut -d' ' -f1; }

# UNLOCK_STORY=kms (tests/system.rs debian12_unlock_kms): a node whose image
# has no clevis, bound to the kms pin alone (moto's KMS behind a TLS front at
# 10.0.2.102:443, the IMDS test server at 10.0.2.101:80, both on the host):
#   boot 1: bound (version 2, the kms pin, no clevis on the node); data; a
#     kernel panic;
#   boot 2: unlocked with no one acting; glass broken, reboot; the host stops
#     the TLS front;
#   boot 3 (KMS unreachable): kept, exit 5, the data unit not started, the
#     members' hashes as after boot 2; EPH-WANT-KMS: the host starts the
#     front; `ephemera unlock` opens it; glass broken, reboot;
#   boot 4 (a stop and start): a new volume, the old unlock file unused; then
#     the power button.
kms_story() {
  local uuid old kms_up
  if [[ $boot == 1 ]]; then
    up_checks "boot 1"
    fact luks_uuid "$luks_uuid"
    echo "$luks_uuid" >"$state/luks_uuid.1"
    f=$(unlock_file "$luks_uuid")
    check "boot 1: no clevis on this node" eval "! command -v clevis"
    check "boot 1: the unlock file $f is root's, mode 0400" test "$(stat -c '%a %U' "$f" 2>&1)" = "400 root"
    check "boot 1: version 2, the kms pin ($(jq -r .pins "$f" 2>&1))" test "$(jq -r '.version|tostring' "$f") $(jq -r .pins "$f")" = "2 $UNLOCK_PINS"
    check "boot 1: its context names this instance and volume" \
      test "$(jq -r '.slots[] | select(.pin == "kms") | .context.instance + " " + .context.volume' "$f")" = "$KMS_INSTANCE_ARN $luks_uuid"
    fact unlock_file "$(jq -c . "$f")"
    head -c 4096 /dev/urandom | base64 >"$MOUNT/check-boot1"
    sync
    data_sha >"$state/data.sha"
    echo "EPH-CHECK-END boot=$boot failed=$failed"
    echo "EPH-PANIC"
    sync
    echo c >/proc/sysrq-trigger
    sleep infinity
  fi
  uuid=$(cat "$state/luks_uuid.1")
  if [[ $boot == 2 ]]; then
    up_checks "boot 2 (after a kernel panic)"
    check "boot 2: the same LUKS UUID ($luks_uuid)" test "$luks_uuid" = "$uuid"
    check "boot 2: boot 1's data is there, unchanged" test "$(data_sha)" = "$(cat "$state/data.sha")"
    check "boot 2: the journal says KMS gave its part" eval "journal ephemera.service | grep -q 'kms .* gave its part'"
    fact luks_uuid "$luks_uuid"
    fact unlock_journal "$(journalctl -b -o short-monotonic --no-hostname -u ephemera.service | grep -E 'asking for its key|gave its part|unlocked' | tr '\n' '|')"
    break_glass_and_reboot
  fi
  if [[ $boot == 3 ]]; then
    kept_unlock_checks "boot 3 (KMS unreachable)" "$uuid"
    fact member_hashes "$(member_hashes)"
    echo "EPH-WANT-KMS"
    kms_up=
    for _ in $(seq 120); do
      curl -s -o /dev/null --max-time 5 --cacert /etc/ephemera/kms-ca.pem https://10.0.2.102/ && { kms_up=1; break; }
      sleep 1
    done
    check "boot 3: KMS answers again" test -n "$kms_up"
    ops_command unlock ephemera unlock
    fact luks_uuid "$luks_uuid"
    check "after unlock: the same LUKS UUID" test "$luks_uuid" = "$uuid"
    check "after unlock: boot 1's data is there, unchanged" test "$(data_sha)" = "$(cat "$state/data.sha")"
    data_unit_checks "after unlock"
    guard_checks "after unlock"
    break_glass_and_reboot
  fi
  if [[ $boot == 4 ]]; then
    up_checks "boot 4"
    old=$(cat "$state/luks_uuid.1")
    check "boot 4: a new LUKS UUID ($luks_uuid, boot 1: $old)" test -n "$luks_uuid" -a "$luks_uuid" != "$old"
    check "boot 4: ephemera never asked the pins (the old unlock file is not used)" \
      eval "! journal ephemera.service | grep -q 'asking for its key'"
    check "boot 4: the new volume is bound too ($(unlock_file "$luks_uuid"))" test -s "$(unlock_file "$luks_uuid")"
    check "boot 4: the old unlock file is kept" test -s "$(unlock_file "$old")"
    fact luks_uuid "$luks_uuid"
    power_down
  fi
}

unlock_story() {
  local uuid f out rc tang_up
  if [[ ${UNLOCK_STORY:-full} == kms ]]; then kms_story; return; fi
  if [[ $boot == 5 ]]; then
    # A stop and start: blank disks, so a new volume; the old file unused.
    up_checks "boot 5"
    old=$(cat "$state/luks_uuid.1")
    check "boot 5: a new LUKS UUID ($luks_uuid, boot 1: $old)" test -n "$luks_uuid" -a "$luks_uuid" != "$old"
    check "boot 5: ephemera never asked the pins (the old unlock file is not used)" \
      eval "! journal ephemera.service | grep -q 'asking for its key'"
    check "boot 5: the new volume is bound too ($(unlock_file "$luks_uuid"))" test -s "$(unlock_file "$luks_uuid")"
    check "boot 5: the old unlock file is kept, as envelopes are" test -s "$(unlock_file "$old")"
    fact luks_uuid "$luks_uuid"
    echo "EPH-CHECK-END boot=$boot failed=$failed"
    sync
    echo "EPH-READY-FOR-POWERDOWN"
    sleep infinity
  fi
  if [[ $boot == 1 ]]; then
    up_checks "boot 1"
    fact luks_uuid "$luks_uuid"
    echo "$luks_uuid" >"$state/luks_uuid.1"
    f=$(unlock_file "$luks_uuid")
    check "boot 1: the unlock file $f is root's, mode 0400" test "$(stat -c '%a %U' "$f" 2>&1)" = "400 root"
    check "boot 1: it names the pins ($(jq -r .pins "$f" 2>&1))" test "$(jq -r .pins "$f")" = "$UNLOCK_PINS"
    check "boot 1: ephemera status shows it" \
      test "$(ephemera status --json 2>/dev/null | jq -r .unlock_file)" = "$f"
    # The manual path: the runbook's standard tools give the key, cryptsetup
    # alone checks it against the LUKS2 digest (nothing activated).
    check "boot 1: docs/UNLOCK.md's runbook gives the key cryptsetup accepts for $backing" \
      runbook_opens "$luks_uuid" "$backing"
    # What clevis's pins cost at boot (docs/PERFORMANCE.md, beside the native
    # figures): clevis decrypt of one-pin tokens of a dummy secret.
    ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1 || echo "# timing: $* failed"; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
    if ! short; then
      echo dummy | clevis encrypt tpm2 '{"pcr_bank":"sha256","pcr_ids":"7"}' >/run/t-tpm2.jwe 2>/dev/null
      echo dummy | clevis encrypt tang "{\"url\":\"http://10.0.2.100:7500\",\"thp\":\"$TANG_THP\"}" >/run/t-tang.jwe 2>/dev/null
      fact unlock_ms "clevis-tpm2=$(ms sh -c 'clevis decrypt </run/t-tpm2.jwe') clevis-tang=$(ms sh -c 'clevis decrypt </run/t-tang.jwe')"
    fi
    head -c 4096 /dev/urandom | base64 >"$MOUNT/check-boot1"
    sync
    data_sha >"$state/data.sha"
    fact data_sha "$(cat "$state/data.sha")"
    echo "EPH-CHECK-END boot=$boot failed=$failed"
    echo "EPH-PANIC"
    sync
    echo c >/proc/sysrq-trigger
    sleep infinity
  fi
  uuid=$(cat "$state/luks_uuid.1")
  if [[ $boot == 2 ]]; then
    up_checks "boot 2 (after a kernel panic)"
    check "boot 2: the same LUKS UUID ($luks_uuid)" test "$luks_uuid" = "$uuid"
    check "boot 2: boot 1's data is there, unchanged" test "$(data_sha)" = "$(cat "$state/data.sha")"
    fact luks_uuid "$luks_uuid"
    check "boot 2: the journal says it was unlocked" eval "journal ephemera.service | grep -q 'unlocked /dev/mapper/ephemera at $MOUNT'"
    fact unlock_journal "$(journalctl -b -o short-monotonic --no-hostname -u ephemera.service | grep -E 'asking for its key|unlocked' | tr '\n' '|')"
    if short && [[ ${UNLOCK_TANG:-1} == 0 ]]; then power_down; fi
    break_glass_and_reboot
  fi
  if [[ $boot == 3 ]]; then
    kept_unlock_checks "boot 3 (tang down)" "$uuid"
    fact member_hashes "$(member_hashes)"
    echo "EPH-WANT-TANG"
    tang_up=
    for _ in $(seq 120); do
      curl -sf -o /dev/null --max-time 5 http://10.0.2.100:7500/adv && { tang_up=1; break; }
      sleep 1
    done
    check "boot 3: tang answers again" test -n "$tang_up"
    ops_command unlock ephemera unlock
    fact luks_uuid "$luks_uuid"
    check "after unlock: the same LUKS UUID" test "$luks_uuid" = "$uuid"
    check "after unlock: boot 1's data is there, unchanged" test "$(data_sha)" = "$(cat "$state/data.sha")"
    data_unit_checks "after unlock"
    guard_checks "after unlock"
    if short; then power_down; fi
    break_glass_and_reboot
  fi
  if [[ $boot == 4 ]]; then
    kept_unlock_checks "boot 4 (another TPM)" "$uuid"
    out=$(ephemera unlock 2>&1)
    rc=$?
    echo "$out" | sed 's/^/# unlock: /'
    check "boot 4: ephemera unlock fails again, nothing mounted (rc=$rc)" \
      eval "test $rc != 0 && ! findmnt --mountpoint $MOUNT >/dev/null"
    f=$(unlock_file "$uuid")
    old_token=$(jq -c .slots "$f" | sha256sum)
    ops_command recover ephemera recover --private-key "$PRIVATE_KEY"
    fact luks_uuid "$luks_uuid"
    check "after recover: the same LUKS UUID" test "$luks_uuid" = "$uuid"
    check "after recover: boot 1's data is there, unchanged" test "$(data_sha)" = "$(cat "$state/data.sha")"
    data_unit_checks "after recover"
    guard_checks "after recover"
    # Recovered on a node with [unlock]: bound again, to this TPM.
    check "after recover: the unlock file holds new slots" test "$(jq -c .slots "$f" | sha256sum)" != "$old_token"
    check "after recover: the runbook opens them with this TPM and tang (cryptsetup)" \
      runbook_opens "$uuid" "$backing"
    break_glass_and_reboot
  fi
}
