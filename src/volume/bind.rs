//! Bind mounts: node directories (`/var/lib/containerd`, `/var/lib/kubelet`,
//! `/var/log/pods`...) placed on the encrypted volume.
//!
//! The config lists them as `[[bind]]` entries ([`BindEntry`]); [`validate`]
//! refuses bad ones before anything is written; the plan turns them into
//! [`BindPlan`]s (pure); [`ensure`] makes one on a mounted volume, and
//! [`unbind_all`] takes them down, newest first.
//!
//! At provision, a node directory's existing content (an AMI may hold
//! pre-pulled images there) is copied onto the volume by GNU `cp -a` into a
//! staging directory, then renamed into place, so a copy cut short is
//! never bound and is made again on the next run. `cp -a` is coreutils'
//! (Essential on Debian), keeps owners, modes, timestamps, hard links within
//! the tree, xattrs, POSIX ACLs and SELinux labels, and is what an operator
//! would run by hand; no Rust crate copies all of those (fs_extra and
//! copy_dir drop hard links and xattrs). The copy runs once per volume: a
//! subdirectory that is already on the volume holds the runtime's data and
//! is bound as it is.
//!
//! `mount(2)` follows symlinks, and [`validate`]'s checks are lexical, so
//! both ends of a bind are opened by [`walk`] without following any, with
//! every directory above them root's alone, and the bind is made between
//! the two descriptors: the checked path is the real one. [`unbind_all`]
//! takes down every bind of the volume's device, wherever it is.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use serde::Serialize;

use crate::config::bind::{BindEntry, STAGING};
use crate::error::{Error, Result};
use crate::host::discover::{mount_table, MountEntry};
use crate::host::Host;

/// What one bind does: `source` (on the volume) is bound on `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindPlan {
    pub target: PathBuf,
    /// `mount.path` joined with the entry's subdirectory.
    pub source: PathBuf,
    /// The subdirectory, relative to the volume's root.
    pub subdir: PathBuf,
}

/// The binds of the config, in config order, on a volume mounted at `mount`.
pub fn plans(entries: &[BindEntry], mount: &Path) -> Vec<BindPlan> {
    entries
        .iter()
        .map(|e| {
            let subdir = e.subdir();
            BindPlan {
                target: e.path.clone(),
                source: mount.join(&subdir),
                subdir,
            }
        })
        .collect()
}

/// Whether [`ensure`] made the bind or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Bound now; `copied` when the node directory's content was copied.
    Bound {
        copied: bool,
    },
    AlreadyBound,
}

/// The mount entries at `target` (a node path, as mountinfo writes it),
/// topmost last.
fn mounts_at(host: &Host, target: &Path) -> Vec<MountEntry> {
    mount_table(host)
        .into_iter()
        .filter(|m| Path::new(&m.path) == target)
        .collect()
}

/// How [`walk`] treats the directories on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Every directory above the last must be root's and writable by root
    /// alone; a missing one ends the walk (`None`).
    Trusted,
    /// As `Trusted`, and a missing directory is made (root's, 0755).
    Make,
    /// No symlink, and nothing else checked: to find a mount to take down
    /// wherever it is.
    NoSymlink,
}

/// A directory opened by [`walk`]: an `O_PATH` descriptor and its status.
struct Dir {
    fd: OwnedFd,
    stat: FileStat,
}

impl Dir {
    /// A path to this very directory, wherever it is now: the kernel
    /// follows a `/proc/self/fd` link to the open file, never by name.
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The `maj:min` of the file system it is on.
    fn devno(&self) -> String {
        devno_string(self.stat.st_dev)
    }
}

/// Why a directory above a bind cannot be trusted, if it cannot: anyone
/// but root who may write in it could swap what is below it (for a symlink
/// to `/etc/profile.d`, or another directory) between ephemera's checks and
/// the mount, or at a later run.
fn untrusted(dir: &Path, uid: u32, mode: u32) -> Option<String> {
    (uid != 0 || mode & 0o022 != 0).then(|| {
        format!(
            "{} is not root's alone (owner uid {uid}, mode {:04o}); every directory above a \
             bind must belong to root and be writable by root alone",
            dir.display(),
            mode & 0o7777
        )
    })
}

/// Opens the directory `path` (absolute, as the config writes it) one
/// component at a time from the root, each with `O_PATH|O_NOFOLLOW`: a
/// symlink anywhere on the way is refused, so the directory opened is the
/// one at `path` itself, the path that [`validate`] checked, and its
/// descriptor keeps naming it. With [`Walk::Trusted`] and [`Walk::Make`],
/// each directory above the last must also be root's alone ([`untrusted`]);
/// the last may belong to anyone (a node directory, `postgres`'s data):
/// its owner cannot replace it, only the owner of its parent can. `what`
/// names the bind in the one-line refusals (exit 3).
fn walk(host: &Host, what: &str, path: &Path, how: Walk) -> Result<Option<Dir>> {
    let refuse = |why: String| Error::Refused(format!("{what}: {why}"));
    let root = host.abs(Path::new("/"));
    let fd = nix::fcntl::open(
        &root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening", &root)(e.into()))?;
    let stat = fstat(&fd).map_err(|e| Error::io("reading", &root)(e.into()))?;
    let mut dir = Dir { fd, stat };
    let mut at = PathBuf::from("/");
    for name in path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n),
        _ => None,
    }) {
        // `dir` is above what is opened next; the root is where trust starts.
        if at != Path::new("/") && how != Walk::NoSymlink {
            if let Some(why) = untrusted(&at, dir.stat.st_uid, dir.stat.st_mode) {
                return Err(refuse(why));
            }
        }
        let child = at.join(name);
        let fd = loop {
            match openat(
                &dir.fd,
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => break fd,
                Err(Errno::ENOENT) if how == Walk::Make => {
                    match mkdirat(&dir.fd, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => continue,
                        Err(e) => return Err(Error::io("creating", &child)(e.into())),
                    }
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(Error::io("opening", &child)(e.into())),
            }
        };
        let stat = fstat(&fd).map_err(|e| Error::io("reading", &child)(e.into()))?;
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => {}
            SFlag::S_IFLNK => {
                let to = readlinkat(&dir.fd, name)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(refuse(format!(
                    "{} is a symlink (to {to}); ephemera follows no symlink in a bind's path",
                    child.display()
                )));
            }
            _ => {
                return Err(refuse(format!(
                    "{} is not a directory (mode {:o})",
                    child.display(),
                    stat.st_mode
                )))
            }
        }
        dir = Dir { fd, stat };
        at = child;
    }
    Ok(Some(dir))
}

/// [`walk`] with [`Walk::Make`]: the directory, made if missing.
fn make_dir(host: &Host, what: &str, path: &Path) -> Result<Dir> {
    walk(host, what, path, Walk::Make)?
        .ok_or_else(|| Error::Failed(format!("{what}: {} was not made", path.display())))
}

/// Makes one bind on the volume (device number `devno`, `maj:min`) mounted
/// at its source's root: creates the subdirectory (copying the node
/// directory's content into it first), binds it on the target and makes
/// the bind shared. A bind already in place is left as it is, so a re-run
/// never stacks a second mount.
///
/// Both ends are opened by [`walk`], without following a symlink, and the
/// mount is made between the two descriptors (`/proc/self/fd/N`), so the
/// bind lands on the directory at the configured path and nowhere else,
/// and its source is the volume's own subdirectory.
pub fn ensure(host: &Host, b: &BindPlan, devno: &str) -> Result<Made> {
    let what = format!("bind {}", b.target.display());
    let want_root = Path::new("/").join(&b.subdir);
    if let Some(top) = mounts_at(host, &b.target).last() {
        if top.devno == devno && Path::new(&top.root) == want_root {
            return Ok(Made::AlreadyBound);
        }
        return Err(Error::Refused(format!(
            "{what}: something else is mounted there ({} of device {}, root {}); \
             ephemera does not mount over it",
            top.fstype, top.devno, top.root
        )));
    }
    let volume_path = volume_of(b, &b.source);
    let volume = walk(host, &what, &volume_path, Walk::Trusted)?
        .filter(|v| v.devno() == devno)
        .ok_or_else(|| {
            Error::Failed(format!(
                "{what}: the volume ({devno}) is not mounted at {}",
                volume_path.display()
            ))
        })?;
    let mut copied = false;
    let source = match walk(host, &what, &b.source, Walk::Trusted)? {
        Some(s) => s,
        None => {
            copied = copy_in(host, b, &what)?;
            walk(host, &what, &b.source, Walk::Trusted)?.ok_or_else(|| {
                Error::Failed(format!("{what}: {} is missing", b.source.display()))
            })?
        }
    };
    if source.devno() != devno {
        return Err(Error::Refused(format!(
            "{what}: {} is on device {}, not on the volume ({devno})",
            b.source.display(),
            source.devno()
        )));
    }
    let target = make_dir(host, &what, &b.target)?;
    // The volume's own mount shared first (systemd makes every mount shared;
    // a host without it may not), so that the bind joins its peer group: a
    // mount made inside the bind (a pod volume) is seen at the same place
    // under the volume's subdirectory too, and the other way round.
    nix::mount::mount(
        None::<&str>,
        &volume.proc_path(),
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| Error::Failed(format!("making {} shared: {e}", volume_path.display())))?;
    nix::mount::mount(
        Some(&source.proc_path()),
        &target.proc_path(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::Failed(format!(
            "binding {} on {}: {e}",
            b.source.display(),
            b.target.display()
        ))
    })?;
    // `target` names the directory under the bind; the bind itself is what
    // the configured path opens now.
    let bound = walk(host, &what, &b.target, Walk::Trusted)?
        .filter(|t| (t.stat.st_dev, t.stat.st_ino) == (source.stat.st_dev, source.stat.st_ino))
        .ok_or_else(|| Error::Failed(format!("{what}: the bind is not at its path")))?;
    // Container runtimes mount inside their directories (overlay rootfs,
    // pod volumes) and need those mounts seen across namespaces.
    nix::mount::mount(
        None::<&str>,
        &bound.proc_path(),
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::Failed(format!("making {} shared: {e}", b.target.display())))?;
    Ok(Made::Bound { copied })
}

/// The volume's mount point: `source` (the bind's source) without the
/// subdirectory.
fn volume_of(b: &BindPlan, source: &Path) -> PathBuf {
    source
        .ancestors()
        .nth(b.subdir.components().count())
        .expect("the source is the volume joined with the subdir")
        .to_path_buf()
}

/// Fills the volume's subdirectory from the node directory: copied into
/// a staging directory (root's, 0700: nothing but ephemera puts anything
/// there), then renamed into place. Returns whether there was a node
/// directory to copy.
fn copy_in(host: &Host, b: &BindPlan, what: &str) -> Result<bool> {
    let staging_path = volume_of(b, &b.source).join(STAGING);
    let staging_dir = make_dir(host, what, &staging_path)?;
    let private = staging_dir.proc_path();
    std::os::unix::fs::chown(&private, Some(0), Some(0))
        .map_err(Error::io("making root the owner of", &staging_path))?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("making private", &staging_path))?;
    let name = b.subdir.to_string_lossy().replace('/', "%");
    let staging = staging_path.join(&name);
    // A copy cut short by an earlier run: it was never bound. (A symlink
    // there is removed, not followed.)
    if std::fs::symlink_metadata(private.join(&name)).is_ok() {
        std::fs::remove_dir_all(private.join(&name))
            .map_err(Error::io("removing a partial copy", &staging))?;
    }
    let copied = match walk(host, what, &b.target, Walk::Trusted)? {
        Some(_) => {
            crate::failpoint!("before-bind-copy");
            let (from, to) = (host.abs(&b.target), host.abs(&staging));
            crate::host::cmd::run(
                &format!("copying {} onto the volume", b.target.display()),
                "cp",
                &[
                    "-a".as_ref(),
                    "-T".as_ref(),
                    "--".as_ref(),
                    from.as_os_str(),
                    to.as_os_str(),
                ],
            )?;
            // `cp -a` copies a symlink as a symlink: had the node directory
            // been replaced by one since the walk, the copy is that symlink.
            let copy = fstatat(&staging_dir.fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| Error::io("reading", &staging)(e.into()))?;
            if copy.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() {
                std::fs::remove_file(private.join(&name))
                    .map_err(Error::io("removing", &staging))?;
                return Err(Error::Refused(format!(
                    "{what}: the copy of {} is not a directory (mode {:o}): the node directory \
                     was replaced while it was copied; nothing was bound",
                    b.target.display(),
                    copy.st_mode
                )));
            }
            true
        }
        None => {
            make_dir(host, what, &b.target)?;
            mkdirat(
                &staging_dir.fd,
                name.as_str(),
                Mode::from_bits_truncate(0o755),
            )
            .map_err(|e| Error::io("creating", &staging)(e.into()))?;
            false
        }
    };
    let (Some(parent), Some(last)) = (b.source.parent(), b.source.file_name()) else {
        return Err(Error::Failed(format!("{what}: no subdirectory")));
    };
    let parent = make_dir(host, what, parent)?;
    renameat(&staging_dir.fd, name.as_str(), &parent.fd, last)
        .map_err(|e| Error::io("moving the copy into place", &b.source)(e.into()))?;
    Ok(copied)
}

/// Makes every bind of the plan, in order, logging each.
pub fn ensure_all(host: &Host, binds: &[BindPlan], devno: &str) -> Result<()> {
    for b in binds {
        let start = std::time::Instant::now();
        match ensure(host, b, devno)? {
            Made::AlreadyBound => {
                tracing::info!("{} is already bound from the volume", b.target.display())
            }
            Made::Bound { copied } => tracing::info!(
                step = "bind",
                ms = start.elapsed().as_millis() as u64,
                "bound {} on {} (shared){}",
                b.source.display(),
                b.target.display(),
                if copied {
                    ", with the node directory's content copied first"
                } else {
                    ""
                }
            ),
        }
    }
    Ok(())
}

/// The newest mount strictly inside `target` (a node path), if any.
fn newest_inside(host: &Host, target: &Path) -> Option<PathBuf> {
    mount_table(host)
        .into_iter()
        .map(|m| PathBuf::from(m.path))
        .rev()
        .find(|p| p != target && p.starts_with(target))
}

/// The bind of the volume `devno` to take down next, with whether
/// something else is mounted over it: the newest mount of the volume whose
/// root is a subdirectory (the volume's own mount has root `/`; every bind
/// ephemera makes is of a subdirectory), wherever it is, the configured
/// targets or not, except those at a path in `left`.
fn next_bind<'a>(
    table: &'a [MountEntry],
    devno: &str,
    left: &[String],
) -> Option<(&'a MountEntry, bool)> {
    let i = table
        .iter()
        .rposition(|m| m.devno == devno && m.root != "/" && !left.contains(&m.path))?;
    let covered = table[i + 1..].iter().any(|o| o.path == table[i].path);
    Some((&table[i], covered))
}

/// Unmounts what is mounted at `path` (a node path, from mountinfo)
/// without following a symlink: its parent is opened by [`walk`] and the
/// mount point named in it, with `UMOUNT_NOFOLLOW`, so a symlink planted on
/// the way cannot send the unmount to another mount.
fn unmount_at(host: &Host, path: &Path, failed: impl FnOnce(Errno) -> Error) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(failed(Errno::EINVAL));
    };
    let what = format!("unmounting {}", path.display());
    let Some(dir) = walk(host, &what, parent, Walk::NoSymlink)? else {
        return Err(failed(Errno::ENOENT));
    };
    nix::mount::umount2(&dir.proc_path().join(name), MntFlags::UMOUNT_NOFOLLOW).map_err(failed)
}

/// Unmounts every bind of the volume `devno`, newest first, wherever it
/// is: at the configured targets, at those of an earlier config, or where
/// a symlink once sent one. A bind with something else mounted over it is
/// left alone. The mounts a runtime left inside a bind (kubelet's pod
/// volumes, overlay rootfs) come down first, newest first, as systemd would
/// take them down at power-off: the runtimes have stopped before this runs
/// (dist/systemd/runtime-after-ephemera.conf). One still in use fails the
/// unbind with a line that names it. Returns the binds unmounted.
pub fn unbind_all(host: &Host, devno: &str) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    let mut left = Vec::new();
    loop {
        let table = mount_table(host);
        let Some((bind, covered)) = next_bind(&table, devno, &left) else {
            break;
        };
        let target = PathBuf::from(&bind.path);
        if covered {
            tracing::warn!(
                "the bind {} is left in place: something else is mounted over it",
                target.display()
            );
            left.push(bind.path.clone());
            continue;
        }
        while let Some(sub) = newest_inside(host, &target) {
            unmount_at(host, &sub, |e| {
                Error::Failed(format!(
                    "unmounting {}, mounted inside the bind {}: {e}; stop what uses it \
                     (a container runtime) and run again",
                    sub.display(),
                    target.display()
                ))
            })?;
            tracing::info!(
                "unmounted {}, mounted inside the bind {}",
                sub.display(),
                target.display()
            );
        }
        unmount_at(host, &target, |e| {
            Error::Failed(format!("unmounting the bind {}: {e}", target.display()))
        })?;
        done.push(target);
    }
    Ok(done)
}

/// Unmounts every bind of ephemera's volume, if it is open.
pub fn unbind_volume(host: &Host) -> Result<Vec<PathBuf>> {
    match crate::host::discover::discover(host).dm {
        Some(dm) => unbind_all(host, &dm.devno),
        None => Ok(Vec::new()),
    }
}

/// The `maj:min` of a block device node.
pub fn devno_of(dev: &Path) -> Result<String> {
    let m = std::fs::metadata(dev).map_err(Error::io("reading", dev))?;
    Ok(devno_string(m.rdev()))
}

/// A device number as mountinfo and sysfs write it, `maj:min`.
fn devno_string(dev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bind::entry as e;

    #[test]
    fn default_subdir_is_the_path_without_its_root() {
        let p = plans(&[e("/var/lib/kubelet", None)], Path::new("/mnt/eph"));
        assert_eq!(p[0].subdir, Path::new("var/lib/kubelet"));
        assert_eq!(p[0].source, Path::new("/mnt/eph/var/lib/kubelet"));
        let p = plans(&[e("/srv/x", Some("x/y"))], Path::new("/m"));
        assert_eq!(p[0].source, Path::new("/m/x/y"));
    }

    /// A node's mounts read through a fixture root.
    #[test]
    fn a_bind_already_in_place_is_found_and_a_foreign_mount_refused() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        let b = &plans(
            &[e("/var/lib/containerd", None)],
            Path::new("/mnt/ephemeral"),
        )[0];
        let mi = |text: &str| {
            std::fs::write(root.path().join("proc/self/mountinfo"), text).unwrap();
        };
        mi("30 1 254:0 / /mnt/ephemeral rw,noatime shared:1 - ext4 /dev/mapper/ephemera rw\n\
            31 1 254:0 /var/lib/containerd /var/lib/containerd rw shared:1 - ext4 /dev/mapper/ephemera rw\n");
        assert_eq!(ensure(&host, b, "254:0").unwrap(), Made::AlreadyBound);
        // A bind of another directory of the volume is not ours to keep.
        mi("31 1 254:0 /other /var/lib/containerd rw - ext4 /dev/mapper/ephemera rw\n");
        assert!(ensure(&host, b, "254:0").is_err());
        mi("31 1 8:1 / /var/lib/containerd rw - xfs /dev/sdb1 rw\n");
        let m = ensure(&host, b, "254:0").unwrap_err().to_string();
        assert!(m.contains("something else is mounted there"), "{m}");
    }

    /// A directory above a bind must be root's and writable by root alone;
    /// the sticky bit does not make a shared directory (`/tmp`) trusted.
    #[test]
    fn directories_above_a_bind_are_root_s_alone() {
        let d = Path::new("/srv/app");
        assert_eq!(untrusted(d, 0, 0o40755), None);
        assert_eq!(untrusted(d, 0, 0o40711), None);
        for (uid, mode) in [(1000, 0o40755), (0, 0o40775), (0, 0o41777), (0, 0o40757)] {
            let m = untrusted(d, uid, mode).expect("trusted");
            assert!(m.starts_with("/srv/app is not root's alone"), "{m}");
            assert!(
                m.contains(&format!("owner uid {uid}, mode {:04o}", mode & 0o7777)),
                "{m}"
            );
        }
    }

    /// The walk refuses a symlink, wherever it is on the path, and a file,
    /// naming the component; it never creates anything but with `Make`.
    #[test]
    fn the_walk_follows_no_symlink() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        let r = root.path();
        std::fs::create_dir_all(r.join("real/a/b")).unwrap();
        std::os::unix::fs::symlink("real", r.join("link")).unwrap();
        std::os::unix::fs::symlink("/real/a", r.join("real/a/up")).unwrap();
        std::fs::write(r.join("real/a/file"), "").unwrap();
        let refused = |path: &str, how| match walk(&host, "bind /x", Path::new(path), how) {
            Err(Error::Refused(m)) => m,
            other => panic!("{path}: {:?}", other.map(|d| d.map(|d| d.stat.st_ino))),
        };
        let m = refused("/link", Walk::Trusted);
        assert_eq!(
            m,
            "bind /x: /link is a symlink (to real); ephemera follows no symlink in a bind's path"
        );
        assert!(refused("/link/a/b", Walk::Trusted).contains("/link is a symlink"));
        let m = refused("/real/a/up/b", Walk::NoSymlink);
        assert!(m.contains("/real/a/up is a symlink (to /real/a)"), "{m}");
        let m = refused("/real/a/file", Walk::NoSymlink);
        assert!(m.contains("/real/a/file is not a directory"), "{m}");
        let b = walk(&host, "bind /x", Path::new("/real/a/b"), Walk::NoSymlink)
            .unwrap()
            .unwrap();
        let meta = std::fs::metadata(r.join("real/a/b")).unwrap();
        assert_eq!(b.stat.st_ino, meta.ino());
        assert!(
            walk(&host, "bind /x", Path::new("/real/a/new"), Walk::NoSymlink)
                .unwrap()
                .is_none()
        );
        assert!(!r.join("real/a/new").exists());
    }

    /// Every bind of the volume is found, newest first, wherever it is (a
    /// path no entry names any more, one a symlink sent it to); the volume's
    /// own mount and other devices' mounts are not binds.
    #[test]
    fn unbind_finds_every_bind_of_the_volume() {
        let table = crate::host::discover::parse_mountinfo(
            "30 1 254:0 / /mnt/ephemeral rw shared:1 - ext4 /dev/mapper/ephemera rw\n\
             31 1 254:0 /var/lib/containerd /var/lib/containerd rw shared:1 - ext4 /dev/mapper/ephemera rw\n\
             32 1 254:0 /srv/old /srv/old rw shared:1 - ext4 /dev/mapper/ephemera rw\n\
             33 1 254:0 /srv/app/cache /etc/profile.d-standin rw shared:1 - ext4 /dev/mapper/ephemera rw\n\
             34 1 8:1 / /srv/other rw - xfs /dev/sdb1 rw\n\
             35 1 0:50 / /srv/old rw - tmpfs tmpfs rw\n",
        );
        let mut left = Vec::new();
        let mut seen = Vec::new();
        while let Some((m, covered)) = next_bind(&table, "254:0", &left) {
            seen.push((m.path.as_str(), covered));
            left.push(m.path.clone());
        }
        assert_eq!(
            seen,
            [
                ("/etc/profile.d-standin", false),
                ("/srv/old", true),
                ("/var/lib/containerd", false)
            ]
        );
        assert!(next_bind(&table, "254:1", &[]).is_none());
    }

    /// What a runtime left inside a bind is found newest first, and only
    /// what is strictly inside it.
    #[test]
    fn mounts_inside_a_bind_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        let mi = |text: &str| {
            std::fs::write(root.path().join("proc/self/mountinfo"), text).unwrap();
        };
        let k = Path::new("/var/lib/kubelet");
        mi("31 1 254:0 /var/lib/kubelet /var/lib/kubelet rw shared:1 - xfs /dev/mapper/ephemera rw\n\
            40 31 0:50 / /var/lib/kubelet/pods/a rw shared:2 - tmpfs tmpfs rw\n\
            41 1 0:51 / /var/lib/kubeletx rw - tmpfs tmpfs rw\n\
            42 31 0:52 / /var/lib/kubelet/pods/b\\040c rw shared:3 - tmpfs tmpfs rw\n");
        assert_eq!(
            newest_inside(&host, k),
            Some(PathBuf::from("/var/lib/kubelet/pods/b c"))
        );
        mi("31 1 254:0 /var/lib/kubelet /var/lib/kubelet rw shared:1 - xfs /dev/mapper/ephemera rw\n\
            41 1 0:51 / /var/lib/kubeletx rw - tmpfs tmpfs rw\n");
        assert_eq!(newest_inside(&host, k), None);
    }

    /// The ephemera config that each shipped cloud-init example writes
    /// parses and validates (cloud-init's own schema is checked by
    /// scripts/check-dist.sh).
    #[test]
    fn cloud_init_examples_hold_valid_configs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cloud-init");
        let mut binds = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let Some(at) = text.find("path: /etc/ephemera/config.toml") else {
                continue;
            };
            let toml: String = text[at..]
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("content: |"))
                .skip(1)
                .take_while(|l| l.is_empty() || l.starts_with("      "))
                .map(|l| format!("{}\n", l.get(6..).unwrap_or("")))
                .collect();
            // A placeholder left in is refused, saying so; replaced, the
            // rest is valid.
            let placeholder = "REPLACE-WITH-THE-TANG-THUMBPRINT";
            if toml.contains(placeholder) {
                let e = crate::config::Config::parse(&toml, &f).unwrap_err();
                assert!(e.to_string().contains("placeholder, left in"), "{e}");
            }
            let toml = toml.replace(placeholder, "DWnbBv9Ul6YVKNFdV5Mun_pRTkfIMXcxwH1NDbVBDq0");
            let c = crate::config::Config::parse(&toml, &f).unwrap();
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            binds += c.bind.len();
        }
        assert!(binds >= 6, "the examples should show the usual binds");
    }
}
