//! The reboot guard: while the volume is mounted, a reboot, halt, kexec,
//! suspend or hibernate would lose its data (the key does not survive), so
//! they are refused; a power-off, which is how a cloud stop arrives (the
//! ACPI power button), still goes through. A soft-reboot is refused like a
//! reboot (see `REFUSED_UNITS`), though a forced one loses nothing.
//!
//! Three layers, each for a case the others miss (see docs in README):
//! - runtime drop-ins that set `RefuseManualStart=yes` on the reboot and
//!   sleep targets and their services, which systemd enforces for every
//!   caller, root included, on every systemd version (root skips inhibitors
//!   before systemd 256), with a description that names ephemera, and a
//!   login message in /run/motd.d;
//! - a logind block inhibitor (`systemd-inhibit` in ephemera-guard.service),
//!   whose reason systemctl shows to the operator;
//! - a polkit rule that denies logind's reboot, power-off, halt, suspend and
//!   hibernate actions to unprivileged subjects while the marker exists.
//!
//! `ephemera guard release` (= `systemctl stop ephemera-guard.service`)
//! removes all three.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::host::cmd;
use crate::host::discover::{self, DM_NAME};
use crate::host::safe_fs;
use crate::host::Host;

pub const UNIT: &str = "ephemera-guard.service";
/// The marker the polkit rule tests for.
pub const MARKER: &str = "run/ephemera/guard";
const DROPIN: &str = "50-ephemera-guard.conf";

/// Units whose start is refused while the guard is on: the targets, and
/// the services behind them, which root could otherwise start directly.
/// Not poweroff: the cloud's stop is an ACPI power button press, which must
/// keep working. soft-reboot is refused too, although it loses nothing (it
/// keeps the kernel and the key in it; ephemera.service mounts the volume
/// again afterwards): logind checks a soft-reboot with a reboot's polkit
/// actions and inhibitor, so the guard could not let one through without the
/// other, and one rule for every restart is the one people can predict.
pub const REFUSED_UNITS: &[&str] = &[
    "soft-reboot.target",
    "systemd-soft-reboot.service",
    "reboot.target",
    "kexec.target",
    "halt.target",
    "sleep.target",
    "suspend.target",
    "hibernate.target",
    "hybrid-sleep.target",
    "suspend-then-hibernate.target",
    "systemd-reboot.service",
    "systemd-kexec.service",
    "systemd-halt.service",
    "systemd-suspend.service",
    "systemd-hibernate.service",
    "systemd-hybrid-sleep.service",
    "systemd-suspend-then-hibernate.service",
];

/// What a refusal names. systemd's own refusal message on systemd 252
/// ("may be requested by dependency only") cannot say more, so the name
/// and the break-glass are where root looks next: the unit's description
/// (`systemctl status reboot.target`), the login message and the journal.
const WHY: &str = "the encrypted volume's key is gone after a reboot, and its data with it";
const BREAK_GLASS: &str = "sudo ephemera guard release";

fn dropin_text(unit: &str) -> String {
    format!(
        "# Written by ephemera guard on; removed by ephemera guard off.\n\
         # The encrypted volume's key is gone after a reboot, and its data with it.\n\
         # Break glass: {BREAK_GLASS}\n\
         [Unit]\n\
         Description={unit}: REFUSED by the ephemera reboot guard ({WHY}; break glass: {BREAK_GLASS})\n\
         RefuseManualStart=yes\n"
    )
}

/// The login message (pam_motd reads /run/motd.d).
const MOTD: &str = "run/motd.d/ephemera-guard";

fn motd_text() -> String {
    format!(
        "ephemera reboot guard ON: reboot, soft-reboot, halt, kexec, suspend and hibernate\n\
         are refused, because {WHY}. A power-off (a stop from the cloud console) still works.\n\
         Break glass: {BREAK_GLASS}\n"
    )
}

fn units_dir(host: &Host) -> PathBuf {
    host.path("run/systemd/system")
}

fn dropin(host: &Host, target: &str) -> PathBuf {
    units_dir(host).join(format!("{target}.d")).join(DROPIN)
}

pub fn is_on(host: &Host) -> bool {
    host.path(MARKER).exists()
}

/// The guard is on and every refusal `install` writes is in place: its
/// marker (read by the polkit rule) and each drop-in. (logind's inhibitor,
/// the third layer, is held by the guard unit's process, which the marker
/// outlives only until its ExecStopPost.)
pub fn armed(host: &Host) -> bool {
    is_on(host) && REFUSED_UNITS.iter().all(|t| dropin(host, t).is_file())
}

/// Is ephemera's volume mounted now, whole or through a bind? A bind left
/// after `umount` of mount.path still writes to the volume (a container
/// runtime's directory), so it is guarded as the whole mount is.
pub fn volume_mounted(host: &Host) -> bool {
    discover::discover(host).dm.is_some_and(|d| d.in_use())
}

/// How the drop-ins and the marker are written (`safe_fs`): only below
/// directories root alone can change, since whoever could change them could
/// remove the guard; 0644 in 0755 directories, as systemd and polkitd read
/// them.
const RUNTIME: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Root,
    mode: 0o644,
    durable: false,
    dir_mode: Some(0o755),
};

/// The login message is public text: whoever owns /run/motd.d could hide it
/// anyway, and with no link followed cannot turn the write elsewhere.
const MOTD_HOW: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Anyone,
    ..RUNTIME
};

/// Writes the marker and the drop-ins (no reload). Returns false, writing
/// nothing, when there is no mounted volume to guard.
pub fn install(host: &Host) -> Result<bool> {
    if !volume_mounted(host) {
        return Ok(false);
    }
    for t in REFUSED_UNITS {
        safe_fs::write_file(&dropin(host, t), dropin_text(t).as_bytes(), RUNTIME)?;
    }
    // Ctrl-Alt-Del starts reboot.target from inside systemd, past
    // RefuseManualStart: mask it for the runtime.
    safe_fs::Dir::open(&units_dir(host), RUNTIME.owners, RUNTIME.dir_mode)?
        .symlink("ctrl-alt-del.target", Path::new("/dev/null"))?;
    safe_fs::write_file(&host.path(MARKER), b"reboot guard on\n", RUNTIME)?;
    safe_fs::write_file(&host.path(MOTD), motd_text().as_bytes(), MOTD_HOW)?;
    Ok(true)
}

/// Removes what `install` wrote; true when something was there.
pub fn uninstall(host: &Host) -> Result<bool> {
    let mut removed = false;
    let mut rm = |p: &Path| -> Result<()> {
        removed |= safe_fs::remove_file(p)?;
        Ok(())
    };
    for t in REFUSED_UNITS {
        let p = dropin(host, t);
        rm(&p)?;
        let _ = std::fs::remove_dir(p.parent().expect("drop-in dir"));
    }
    let cad = units_dir(host).join("ctrl-alt-del.target");
    if std::fs::read_link(&cad).is_ok_and(|t| t == Path::new("/dev/null")) {
        rm(&cad)?;
    }
    rm(&host.path(MOTD))?;
    rm(&host.path(MARKER))?;
    Ok(removed)
}

/// systemd is PID 1. (Not sd_booted's /run/systemd/system test: `install`
/// creates that directory for its drop-ins.)
pub fn systemd_runs(host: &Host) -> bool {
    host.attr(&host.path("proc/1/comm")).as_deref() == Some("systemd")
}

/// Makes systemd read the drop-ins; nothing to do where systemd does not
/// run (a rescue shell, the test initramfs).
fn daemon_reload(host: &Host) -> Result<()> {
    if !systemd_runs(host) {
        return Ok(());
    }
    cmd::run("reloading systemd", "systemctl", &["daemon-reload"]).map(drop)
}

/// `ephemera guard on`, the unit's ExecStartPre.
pub fn on(host: &Host) -> Result<()> {
    if install(host)? {
        daemon_reload(host)?;
        tracing::info!(
            "reboot guard on: reboot, soft-reboot, halt, kexec, suspend and hibernate are refused while /dev/mapper/{DM_NAME} is mounted; \
             power-off (a cloud stop) still works; break glass with `ephemera guard release`"
        );
    } else {
        tracing::info!("no ephemera volume is mounted; nothing to guard");
    }
    Ok(())
}

/// `ephemera guard off`, the unit's ExecStopPost.
pub fn off(host: &Host) -> Result<()> {
    if uninstall(host)? {
        // A reload while the system shuts down is needless: the drop-ins
        // are gone with /run anyway.
        let state = cmd::run(
            "asking systemd's state",
            "systemctl",
            &["is-system-running"],
        )
        .unwrap_or_else(|e| e.to_string());
        if !state.contains("stopping") {
            daemon_reload(host)?;
        }
        tracing::info!("reboot guard off: reboot and shutdown work normally");
    }
    Ok(())
}

/// `ephemera guard hold`, the unit's main process (under systemd-inhibit):
/// tells systemd the guard is armed, then returns when the volume is no
/// longer mounted, waiting on the kernel's mount-table change notification,
/// not on a timer.
///
/// It runs under `systemd-inhibit`, which takes logind's inhibitor before it
/// starts this program: so when it runs, all three parts are in force (the
/// marker and drop-ins written and loaded by `guard on`, the inhibitor
/// held), and its READY=1 makes the guard unit active only then.
/// ephemera.service starts the unit from its ExecStartPost and waits for
/// that, so no unit ordered after ephemera.service starts unguarded.
pub fn hold(host: &Host) -> Result<()> {
    // Ready also when there is nothing to guard: the start then succeeds
    // and the unit ends at once.
    notify_ready();
    if !is_on(host) {
        return Ok(());
    }
    let path = host.path("proc/self/mountinfo");
    let mut f = std::fs::File::open(&path).map_err(Error::io("opening", &path))?;
    while volume_mounted(host) {
        // mountinfo signals POLLPRI|POLLERR when the mount table changes;
        // reading it to the end re-arms the notification.
        let mut sink = Vec::new();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(Error::io("reading", &path))?;
        f.read_to_end(&mut sink)
            .map_err(Error::io("reading", &path))?;
        let mut fds = [PollFd::new(
            f.as_fd(),
            PollFlags::POLLPRI | PollFlags::POLLERR,
        )];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Failed(format!("waiting on {}: {e}", path.display()))),
        }
    }
    tracing::info!("/dev/mapper/{DM_NAME} is no longer mounted; releasing the reboot guard");
    Ok(())
}

/// Sends READY=1 to systemd's notification socket when one is given
/// (`$NOTIFY_SOCKET`, the guard unit's `Type=notify`); nothing otherwise.
/// Written here with std's datagram socket: the protocol is one datagram,
/// and the `sd-notify` crate would add a dependency for these lines.
fn notify_ready() {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_ready_to(&socket) {
            tracing::warn!("could not tell systemd the guard is armed: {e}");
        }
    }
}

/// READY=1 to the socket `socket` (a path, or `@name` in the abstract
/// namespace).
fn notify_ready_to(socket: &std::ffi::OsStr) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(socket))?,
    };
    UnixDatagram::unbound()?
        .send_to_addr(b"READY=1", &addr)
        .map(drop)
}

/// `ephemera guard release`: the break-glass.
pub fn release(host: &Host) -> Result<()> {
    if systemd_runs(host) {
        cmd::run(&format!("stopping {UNIT}"), "systemctl", &["stop", UNIT])?;
    }
    // Also when the unit was not running (or systemd is absent).
    off(host)?;
    eprintln!(
        "ephemera: reboot guard released. Reboot and shutdown work normally again; \
         after a reboot the volume's data is gone (its key is not kept)."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("sys/block/dm-0/dm")).unwrap();
        std::fs::write(r.join("sys/block/dm-0/dm/name"), "ephemera\n").unwrap();
        std::fs::write(r.join("sys/block/dm-0/dev"), "253:0\n").unwrap();
        std::fs::create_dir_all(r.join("proc/self")).unwrap();
        std::fs::write(
            r.join("proc/self/mountinfo"),
            "40 1 253:0 / /mnt/ephemeral rw,noatime - ext4 /dev/mapper/ephemera rw\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn install_and_uninstall_round_trip() {
        let t = mounted_tree();
        let host = Host::new(t.path());
        assert!(!is_on(&host));
        assert!(install(&host).unwrap());
        assert!(is_on(&host));
        for unit in [
            "reboot.target",
            "systemd-reboot.service",
            "hybrid-sleep.target",
        ] {
            let text = std::fs::read_to_string(dropin(&host, unit)).unwrap();
            assert!(text.contains("RefuseManualStart=yes"), "{unit}: {text}");
            let desc = text
                .lines()
                .find(|l| l.starts_with("Description="))
                .unwrap();
            assert!(
                desc.contains(unit)
                    && desc.contains("ephemera")
                    && desc.contains("ephemera guard release"),
                "{unit}: {desc}"
            );
        }
        assert!(dropin(&host, "soft-reboot.target").exists());
        let motd = std::fs::read_to_string(t.path().join(MOTD)).unwrap();
        assert!(motd.contains("ephemera guard release"), "{motd}");
        assert!(
            !dropin(&host, "poweroff.target").exists(),
            "power-off must stay allowed"
        );
        let cad = t.path().join("run/systemd/system/ctrl-alt-del.target");
        assert_eq!(std::fs::read_link(&cad).unwrap(), Path::new("/dev/null"));
        assert!(uninstall(&host).unwrap());
        assert!(!is_on(&host));
        assert!(!dropin(&host, "reboot.target").exists());
        assert!(!dropin(&host, "systemd-kexec.service").exists());
        assert!(!t.path().join(MOTD).exists());
        assert!(!cad.exists());
        assert!(!uninstall(&host).unwrap());
    }

    #[test]
    fn nothing_mounted_nothing_guarded() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        assert!(!install(&host).unwrap());
        assert!(!t.path().join("run").exists());
    }

    /// `umount /mnt/ephemeral` on a container node leaves the binds, and the
    /// runtime writes on through them: still guarded (fixture
    /// open-unmounted-binds shows the same table).
    #[test]
    fn a_bind_alone_keeps_the_volume_guarded() {
        let t = mounted_tree();
        std::fs::write(
            t.path().join("proc/self/mountinfo"),
            "41 1 253:0 /var/lib/containerd /var/lib/containerd rw shared:1 - ext4 /dev/mapper/ephemera rw\n\
             42 1 8:1 / /srv rw - ext4 /dev/sda1 rw\n",
        )
        .unwrap();
        let host = Host::new(t.path());
        assert!(volume_mounted(&host));
        assert!(install(&host).unwrap());
        assert!(is_on(&host));
    }

    /// What systemd reads on the unit's notification socket.
    #[test]
    fn ready_reaches_systemd_s_socket() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("notify");
        let systemd = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_ready_to(path.as_os_str()).unwrap();
        let name = format!("@ephemera-test-{}", std::process::id());
        let abstract_ = std::os::unix::net::UnixDatagram::bind_addr(
            &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(&name[1..]).unwrap(),
        )
        .unwrap();
        notify_ready_to(std::ffi::OsStr::new(&name)).unwrap();
        let mut buf = [0u8; 32];
        for s in [&systemd, &abstract_] {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1");
        }
    }

    #[test]
    fn hold_returns_at_once_without_the_marker() {
        let t = mounted_tree();
        hold(&Host::new(t.path())).unwrap();
    }
}
