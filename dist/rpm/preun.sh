# %preun of the ephemera RPM: on erase ($1 = 0), not on upgrade, disable
# the units (as %systemd_preun), without stopping them: a stop would unmount
# the volume under the running services and drop the reboot guard.
if [ "$1" = 0 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl --no-reload disable ephemera.service ephemera-events.service >/dev/null 2>&1 || :
fi
:
