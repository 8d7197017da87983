//! Every file ephemera writes as root goes through here: the escrow
//! envelopes, the watcher's metrics and seen file, the guard's drop-ins,
//! marker and login message.
//!
//! A path is never resolved by the kernel in one go. Its directories are
//! opened one at a time from `/`, each relative to the one before, with
//! `O_DIRECTORY | O_NOFOLLOW`: a symbolic link on the way is refused, never
//! followed (missing directories are made with `mkdirat` in the same walk).
//! The file is then written to a temp file in that directory's descriptor,
//! made with `O_CREAT | O_EXCL | O_NOFOLLOW` under a random name, and
//! renamed over the wanted name with `renameat`. So whoever owns a directory
//! on the way can at most choose which directory the file lands in, never
//! make root write into a file that exists: `O_EXCL` refuses a planted temp
//! file or link, and a rename replaces a link at the final name instead of
//! following it (security review, issue 17, finding 1).
//!
//! [`Owners::Root`] adds the owner chain check, for files whose content or
//! presence matters (the escrow envelopes, the seen file, the guard's
//! drop-ins and marker): every directory from `/` down must be root's and
//! writable by no one else, or the write is refused with one line naming
//! the directory, its owner and its mode. A root-owned sticky directory
//! (`/tmp`, mode 1777) passes: the sticky bit stops others from renaming or
//! removing the entries they do not own, so the next directory, which must
//! itself pass, cannot be swapped.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fsync, symlinkat, unlinkat, UnlinkatFlags};

use crate::error::{Error, Result};

/// Whose directories a file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Anyone's: links are still never followed, which is enough where the
    /// file is public and its absence harmless (the metrics, the login
    /// message).
    Anyone,
    /// Root's alone: every directory from `/` is owned by root and neither
    /// group- nor other-writable (sticky ones aside), else refused.
    Root,
}

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct How {
    pub owners: Owners,
    /// The file's mode, exactly (the umask does not apply).
    pub mode: u32,
    /// fsync the file before the rename and the directory after it, for
    /// what must survive a crash.
    pub durable: bool,
    /// Make missing directories with this mode; `None`: a missing one is an
    /// error (`NotFound`).
    pub dir_mode: Option<u32>,
}

/// A directory reached without following a link, held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens the absolute directory `path` as described in the module's
    /// comment; with `dir_mode`, makes the missing directories.
    pub fn open(path: &Path, owners: Owners, dir_mode: Option<u32>) -> Result<Dir> {
        let mut parts = path.components();
        if parts.next() != Some(Component::RootDir) {
            return Err(Error::Usage(format!(
                "{}: not an absolute path",
                path.display()
            )));
        }
        let mut at = PathBuf::from("/");
        let mut fd = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::io("opening", &at)(e.into()))?;
        check_owner(&fd, &at, owners)?;
        for part in parts {
            let name = match part {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => {
                    return Err(Error::Usage(format!(
                        "{}: \"..\" in a path ephemera writes to",
                        path.display()
                    )))
                }
            };
            at.push(name);
            fd = open_below(&fd, name, &at, dir_mode)?;
            check_owner(&fd, &at, owners)?;
        }
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to `name` in this directory: a new temp file with a
    /// random name, then `renameat` over `name`.
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
        let path = self.entry(name)?;
        let tmp = format!(".{name}.{:016x}.tmp", rand::random::<u64>());
        let result = (|| -> nix::Result<()> {
            let fd = openat(
                &self.fd,
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )?;
            // The mode asked for, whatever the umask.
            fchmod(&fd, Mode::from_bits_truncate(mode))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(bytes).map_err(errno)?;
            if durable {
                f.sync_all().map_err(errno)?;
            }
            renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            if durable {
                fsync(&self.fd)?;
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            Error::io("writing", &path)(e.into())
        })
    }

    /// Makes `name` a symbolic link to `target`, replacing what was there.
    pub fn symlink(&self, name: &str, target: &Path) -> Result<()> {
        let path = self.entry(name)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::io("removing", &path)(e.into())),
        }
        symlinkat(target, &self.fd, name).map_err(|e| Error::io("linking", &path)(e.into()))
    }

    /// Removes the file `name` from this directory, then fsyncs the
    /// directory; `false` when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let path = self.entry(name)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => fsync(&self.fd)
                .map(|()| true)
                .map_err(|e| Error::io("syncing", &self.path)(e.into())),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io("removing", &path)(e.into())),
        }
    }

    fn entry(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(Error::Usage(format!(
                "{}: {name:?} is not a file name",
                self.path.display()
            )));
        }
        Ok(self.path.join(name))
    }
}

/// Removes the file at `path` (a symbolic link itself, never its target);
/// `false` when there was none. For files whose presence is a claim that
/// their removal withdraws (the guard's refusals, the record of a kept
/// volume): nothing is written, so no directory needs checking.
pub fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("removing", path)(e)),
    }
}

/// Writes `bytes` to the absolute `path`, as `how` says (see [`Dir`]).
pub fn write_file(path: &Path, bytes: &[u8], how: How) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::Usage(format!("{}: not a file path", path.display())));
    };
    Dir::open(dir, how.owners, how.dir_mode)?.write(
        &name.to_string_lossy(),
        bytes,
        how.mode,
        how.durable,
    )
}

/// Checks, writing nothing, the directories of the file `path` that exist
/// (for a check before the first write, when the rest are made later). The
/// file itself may exist: it is replaced, never written through.
pub fn check_existing(path: &Path, owners: Owners) -> Result<()> {
    let Some(mut existing) = path.parent() else {
        return Ok(());
    };
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => return Ok(()),
        }
    }
    Dir::open(existing, owners, None).map(|_| ())
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
}

/// Opens (or makes, then opens) the directory `name` below `parent`.
fn open_below(parent: &OwnedFd, name: &OsStr, at: &Path, dir_mode: Option<u32>) -> Result<OwnedFd> {
    match openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) if dir_mode.is_some() => {}
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(not_a_dir(parent, name, at)),
        Err(e) => return Err(Error::io("opening", at)(e.into())),
    }
    let mode = Mode::from_bits_truncate(dir_mode.unwrap_or(0o755));
    let made = match mkdirat(parent, name, mode) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(Error::io("creating", at)(e.into())),
    };
    let fd = openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => not_a_dir(parent, name, at),
        e => Error::io("opening", at)(e.into()),
    })?;
    if made {
        fchmod(&fd, mode).map_err(|e| Error::io("creating", at)(e.into()))?;
    }
    Ok(fd)
}

/// The refusal for an entry on the way that is a link or not a directory.
fn not_a_dir(parent: &OwnedFd, name: &OsStr, at: &Path) -> Error {
    let link = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK);
    if link {
        let target = readlinkat(parent, name).unwrap_or_default();
        Error::Refused(format!(
            "{} is a symbolic link (to {}); ephemera does not follow links on the way to a file it writes as root: name the real directory",
            at.display(),
            Path::new(&target).display()
        ))
    } else {
        Error::io("opening", at)(std::io::Error::from_raw_os_error(Errno::ENOTDIR as i32))
    }
}

/// For [`Owners::Root`]: `fd`'s directory is root's and writable by no one
/// else, or is a root-owned sticky directory.
fn check_owner(fd: &OwnedFd, at: &Path, owners: Owners) -> Result<()> {
    if owners == Owners::Anyone {
        return Ok(());
    }
    let st = fstat(fd).map_err(|e| Error::io("checking", at)(e.into()))?;
    let mode = st.st_mode & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if st.st_uid == 0 && (mode & 0o022 == 0 || sticky) {
        return Ok(());
    }
    let why = if st.st_uid != 0 {
        "not root's"
    } else {
        "writable by others than root"
    };
    Err(Error::Refused(format!(
        "{} is owned by uid {} with mode {mode:04o} ({why}); ephemera writes this file only below directories that root alone can change",
        at.display(),
        st.st_uid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const PUBLIC: How = How {
        owners: Owners::Anyone,
        mode: 0o644,
        durable: false,
        dir_mode: None,
    };
    const SECRET: How = How {
        owners: Owners::Root,
        mode: 0o400,
        durable: true,
        dir_mode: Some(0o700),
    };

    /// A root-owned 0600 file standing for /etc/shadow.
    fn victim(dir: &Path) -> PathBuf {
        let v = dir.join("shadow");
        std::fs::write(&v, "root:secret\n").unwrap();
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o600)).unwrap();
        v
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_link_planted_at_the_old_temp_name_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let dir = t.path().join("textfile");
        std::fs::create_dir(&dir).unwrap();
        // The name the old writer used, with this process's pid.
        let old_tmp = dir.join(format!(".ephemera.prom.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&v, &old_tmp).unwrap();
        let prom = dir.join("ephemera.prom");
        write_file(&prom, b"metrics\n", PUBLIC).unwrap();
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "root:secret\n");
        assert_eq!(std::fs::read_to_string(&prom).unwrap(), "metrics\n");
        assert_eq!(mode(&prom), 0o644);
        // The link is left as it was, and no temp file is left behind.
        assert_eq!(std::fs::read_link(&old_tmp).unwrap(), v);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    }

    #[test]
    fn a_link_at_the_final_name_is_replaced_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let prom = t.path().join("ephemera.prom");
        std::os::unix::fs::symlink(&v, &prom).unwrap();
        write_file(&prom, b"metrics\n", PUBLIC).unwrap();
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "root:secret\n");
        assert!(std::fs::symlink_metadata(&prom).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&prom).unwrap(), "metrics\n");
    }

    #[test]
    fn a_linked_directory_is_refused_in_either_mode_and_named() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let real = t.path().join("etc");
        std::fs::create_dir(&real).unwrap();
        let linked = t.path().join("node-exporter");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        for how in [PUBLIC, SECRET] {
            let e = write_file(&linked.join("shadow"), b"x\n", how).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_REFUSED, "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{} is a symbolic link", linked.display())),
                "{msg}"
            );
            assert!(!msg.contains('\n'));
        }
        // Nothing was written through the link, nor made there.
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "root:secret\n");
    }

    #[test]
    fn the_root_mode_refuses_a_directory_of_another_owner_or_group_writable() {
        let t = tempfile::tempdir().unwrap();
        let theirs = t.path().join("prometheus");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(1234), Some(1234)).unwrap();
        let below = theirs.join("escrow");
        std::fs::create_dir(&below).unwrap();
        let e = write_file(&below.join("escrow.json"), b"{}\n", SECRET).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_REFUSED);
        assert!(
            e.to_string().starts_with(&format!(
                "{} is owned by uid 1234 with mode 0755",
                theirs.display()
            )),
            "{e}"
        );
        assert!(!below.join("escrow.json").exists());
        // The same tree is fine for a public file.
        write_file(&below.join("ephemera.prom"), b"m\n", PUBLIC).unwrap();

        let group = t.path().join("group");
        std::fs::create_dir(&group).unwrap();
        std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = write_file(&group.join("escrow.json"), b"{}\n", SECRET).unwrap_err();
        assert!(
            e.to_string()
                .contains("mode 0775 (writable by others than root)"),
            "{e}"
        );
        // A root-owned sticky directory, like /tmp, is accepted.
        let sticky = t.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        write_file(&sticky.join("escrow.json"), b"{}\n", SECRET).unwrap();
    }

    #[test]
    fn missing_directories_are_made_with_the_mode_asked_and_files_get_theirs() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/escrow.json");
        write_file(&p, b"{}\n", SECRET).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&t.path().join("a/b")), 0o700);
        assert_eq!(mode(&p), 0o400);
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), 0);
        // A re-run replaces the read-only file.
        write_file(&p, b"{\"v\":2}\n", SECRET).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"v\":2}\n");
        // Without dir_mode a missing directory is NotFound.
        let e = write_file(&t.path().join("none/x.prom"), b"", PUBLIC).unwrap_err();
        assert!(
            matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
    }

    #[test]
    fn the_check_before_writing_walks_what_exists() {
        let t = tempfile::tempdir().unwrap();
        check_existing(&t.path().join("var/lib/ephemera/escrow.json"), Owners::Root).unwrap();
        let theirs = t.path().join("var");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(1234), None).unwrap();
        let e = check_existing(&theirs.join("lib/ephemera/escrow.json"), Owners::Root).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_REFUSED, "{e}");
        assert!(!theirs.join("lib").exists());
        // The file there already (a re-run, the next volume): its
        // directory is what is checked.
        let mine = t.path().join("root/escrow.json");
        std::fs::create_dir(mine.parent().unwrap()).unwrap();
        std::fs::write(&mine, "{}").unwrap();
        check_existing(&mine, Owners::Root).unwrap();
    }

    #[test]
    fn symlink_replaces_what_is_there() {
        let t = tempfile::tempdir().unwrap();
        let v = victim(t.path());
        let d = Dir::open(t.path(), Owners::Root, None).unwrap();
        d.symlink("ctrl-alt-del.target", Path::new("/dev/null"))
            .unwrap();
        d.symlink("ctrl-alt-del.target", Path::new("/dev/null"))
            .unwrap();
        assert_eq!(
            std::fs::read_link(t.path().join("ctrl-alt-del.target")).unwrap(),
            Path::new("/dev/null")
        );
        assert!(d.write("../shadow", b"x", 0o644, false).is_err());
        assert!(Dir::open(Path::new("relative"), Owners::Anyone, None).is_err());
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "root:secret\n");
    }
}
