# %post of the ephemera RPM (Amazon Linux 2023): what the .deb's postinst
# does. Enables ephemera.service and ephemera-events.service for the next
# boot, as the systemd RPM macros' %systemd_post does with a preset of
# "enable" (ephemera ships no preset file, so it enables them itself);
# never starts them: provisioning belongs to the instance's first boot.
# polkit picks up the rule by itself; logind reads its drop-in at its next
# start. Without systemd (a build chroot), the links are still made.
if command -v systemctl >/dev/null 2>&1; then
  systemctl --no-reload enable ephemera.service ephemera-events.service >/dev/null 2>&1 || :
  if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
fi
:
