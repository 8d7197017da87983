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

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::discover::{mount_table, MountEntry};
use crate::error::{Error, Result};
use crate::host::Host;

/// One `[[bind]]` entry of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindEntry {
    /// The directory on the node (the bind target), absolute.
    pub path: PathBuf,
    /// Its directory on the volume, relative to `mount.path`; by default
    /// `path` without its leading `/` (`/var/lib/containerd` is
    /// `var/lib/containerd` on the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<PathBuf>,
}

impl BindEntry {
    pub fn subdir(&self) -> PathBuf {
        match &self.subdir {
            Some(s) => s.clone(),
            None => self.path.strip_prefix("/").unwrap_or(&self.path).into(),
        }
    }
}

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

/// Directories that no bind may be, be inside, or hide: the system itself.
const SYSTEM: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
    "/proc", "/sys", "/run",
];
/// Directories that no bind may be or hide (a bind inside them is fine:
/// `/var/lib/containerd` is inside `/var`).
const KEPT: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/systemd",
    "/var/lib/cloud",
    "/var/log/journal",
    "/var/cache/apt",
    "/root",
    "/tmp",
    "/var/tmp",
];

/// Checks the entries against each other and against the rest of the
/// config, with no I/O. One line per problem, naming the entry.
pub fn validate(entries: &[BindEntry], mount: &Path, escrow: &Path) -> Result<()> {
    let bad = |i: usize, e: &BindEntry, why: String| {
        Err(Error::Usage(format!(
            "config bind[{i}] (path = {:?}): {why}",
            e.path.display().to_string()
        )))
    };
    for (i, e) in entries.iter().enumerate() {
        let p = &e.path;
        if !p.is_absolute() {
            return bad(i, e, "path is not an absolute path".into());
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return bad(i, e, "path must not contain \"..\"".into());
        }
        if p == Path::new("/") {
            return bad(i, e, "path must not be /".into());
        }
        if let Some(s) = SYSTEM.iter().map(Path::new).find(|s| p.starts_with(s)) {
            return bad(
                i,
                e,
                format!(
                    "{} is a system directory; it stays on the root disk",
                    s.display()
                ),
            );
        }
        if let Some(k) = SYSTEM
            .iter()
            .chain(KEPT)
            .map(Path::new)
            .find(|k| k.starts_with(p))
        {
            return bad(
                i,
                e,
                format!(
                    "a bind there would hide {}, which stays on the root disk",
                    k.display()
                ),
            );
        }
        if p.starts_with(mount) {
            return bad(
                i,
                e,
                format!("path is inside the volume (mount.path {})", mount.display()),
            );
        }
        if mount.starts_with(p) {
            return bad(
                i,
                e,
                format!(
                    "a bind there would hide the volume's mount.path {}",
                    mount.display()
                ),
            );
        }
        if escrow.starts_with(p) {
            return bad(
                i,
                e,
                format!(
                    "a bind there would hide the escrow envelope {}",
                    escrow.display()
                ),
            );
        }
        let s = e.subdir();
        let plain = s.components().all(|c| matches!(c, Component::Normal(_)))
            && s.components().next().is_some();
        if !plain {
            return bad(
                i,
                e,
                format!(
                    "subdir {:?} must be a relative path on the volume, without \"..\"",
                    s.display().to_string()
                ),
            );
        }
        if s.starts_with("lost+found") || s.starts_with(STAGING) {
            return bad(
                i,
                e,
                format!(
                    "subdir {} is kept for the filesystem or ephemera",
                    s.display()
                ),
            );
        }
        for (j, o) in entries.iter().enumerate().take(i) {
            if p.starts_with(&o.path) || o.path.starts_with(p) {
                return bad(
                    i,
                    e,
                    format!(
                        "overlaps bind[{j}] (path = {:?}); list only the outer directory",
                        o.path.display().to_string()
                    ),
                );
            }
            let os = o.subdir();
            if s.starts_with(&os) || os.starts_with(&s) {
                return bad(
                    i,
                    e,
                    format!(
                        "its subdir {} overlaps bind[{j}]'s subdir {} on the volume",
                        s.display(),
                        os.display()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Where copies are made before they are renamed into place.
const STAGING: &str = ".ephemera-staging";

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

/// Makes one bind on the volume (device number `devno`, `maj:min`) mounted
/// at its source's root: creates the subdirectory (copying the node
/// directory's content into it first), binds it on the target and makes
/// the bind shared. A bind already in place is left as it is, so a re-run
/// never stacks a second mount.
pub fn ensure(host: &Host, b: &BindPlan, devno: &str) -> Result<Made> {
    let target = host.abs(&b.target);
    let want_root = Path::new("/").join(&b.subdir);
    if let Some(top) = mounts_at(host, &b.target).last() {
        if top.devno == devno && Path::new(&top.root) == want_root {
            return Ok(Made::AlreadyBound);
        }
        return Err(Error::Refused(format!(
            "bind {}: something else is mounted there ({} of device {}, root {}); \
             ephemera does not mount over it",
            b.target.display(),
            top.fstype,
            top.devno,
            top.root
        )));
    }
    let source = host.abs(&b.source);
    let mut copied = false;
    if !source.exists() {
        copied = copy_in(b, &target, &source)?;
    }
    // The volume's own mount shared first (systemd makes every mount shared;
    // a host without it may not), so that the bind joins its peer group: a
    // mount made inside the bind (a pod volume) is seen at the same place
    // under the volume's subdirectory too, and the other way round.
    let volume = volume_of(b, &source);
    nix::mount::mount(
        None::<&str>,
        &volume,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| Error::Failed(format!("making {} shared: {e}", volume.display())))?;
    nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::Failed(format!(
            "binding {} on {}: {e}",
            source.display(),
            target.display()
        ))
    })?;
    // Container runtimes mount inside their directories (overlay rootfs,
    // pod volumes) and need those mounts seen across namespaces.
    nix::mount::mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::Failed(format!("making {} shared: {e}", target.display())))?;
    Ok(Made::Bound { copied })
}

/// The volume's mount point: `source` (the bind's source, under `host`)
/// without the subdirectory.
fn volume_of(b: &BindPlan, source: &Path) -> PathBuf {
    source
        .ancestors()
        .nth(b.subdir.components().count())
        .expect("the source is the volume joined with the subdir")
        .to_path_buf()
}

/// Fills the volume's subdirectory from the node directory: copied into
/// a staging directory, then renamed into place. Returns whether there was a
/// node directory to copy.
fn copy_in(b: &BindPlan, target: &Path, source: &Path) -> Result<bool> {
    let staging_dir = volume_of(b, source).join(STAGING);
    let staging = staging_dir.join(b.subdir.to_string_lossy().replace('/', "%"));
    // A copy cut short by an earlier run: it was never bound.
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(Error::io("removing a partial copy", &staging))?;
    }
    std::fs::create_dir_all(&staging_dir).map_err(Error::io("creating", &staging_dir))?;
    let copied = match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            crate::cmd::run(
                &format!("copying {} onto the volume", b.target.display()),
                "cp",
                &[
                    "-a".as_ref(),
                    "-T".as_ref(),
                    "--".as_ref(),
                    target.as_os_str(),
                    staging.as_os_str(),
                ],
            )?;
            true
        }
        Ok(m) => {
            return Err(Error::Refused(format!(
                "bind {}: it is not a directory (mode {:o})",
                b.target.display(),
                m.mode()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(Error::io("creating bind target", target))?;
            std::fs::create_dir(&staging).map_err(Error::io("creating", &staging))?;
            false
        }
        Err(e) => return Err(Error::io("reading bind target", target)(e)),
    };
    if let Some(parent) = source.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    }
    std::fs::rename(&staging, source).map_err(Error::io("moving the copy into place", source))?;
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

/// Unmounts the binds of the volume `devno`, last first. A target where
/// something else is mounted is left alone. The mounts a runtime left inside
/// a bind (kubelet's pod volumes, overlay rootfs) come down first, newest
/// first, as systemd would take them down at power-off: the runtimes have
/// stopped before this runs (dist/systemd/runtime-after-ephemera.conf). One
/// still in use fails the unbind with a line that names it. Returns the
/// targets unmounted.
pub fn unbind_all(host: &Host, binds: &[BindPlan], devno: &str) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for b in binds.iter().rev() {
        let target = host.abs(&b.target);
        let want_root = Path::new("/").join(&b.subdir);
        // A stacked mount (made by hand) is taken down one layer at a time.
        while let Some(top) = mounts_at(host, &b.target).last().cloned() {
            if top.devno != devno || Path::new(&top.root) != want_root {
                break;
            }
            while let Some(sub) = newest_inside(host, &b.target) {
                nix::mount::umount2(&host.abs(&sub), MntFlags::empty()).map_err(|e| {
                    Error::Failed(format!(
                        "unmounting {}, mounted inside the bind {}: {e}; stop what uses it \
                         (a container runtime) and run again",
                        sub.display(),
                        b.target.display()
                    ))
                })?;
                tracing::info!(
                    "unmounted {}, mounted inside the bind {}",
                    sub.display(),
                    b.target.display()
                );
            }
            nix::mount::umount2(&target, MntFlags::empty()).map_err(|e| {
                Error::Failed(format!("unmounting the bind {}: {e}", target.display()))
            })?;
            done.push(b.target.clone());
        }
    }
    Ok(done)
}

/// Unmounts the configured binds of ephemera's volume, if it is open.
pub fn unbind_configured(host: &Host, cfg: &crate::config::Config) -> Result<Vec<PathBuf>> {
    match crate::discover::discover(host).dm {
        Some(dm) => unbind_all(host, &plans(&cfg.bind, &cfg.mount.path), &dm.devno),
        None => Ok(Vec::new()),
    }
}

/// The `maj:min` of a block device node.
pub fn devno_of(dev: &Path) -> Result<String> {
    let m = std::fs::metadata(dev).map_err(Error::io("reading", dev))?;
    let rdev = m.rdev();
    Ok(format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, subdir: Option<&str>) -> BindEntry {
        BindEntry {
            path: path.into(),
            subdir: subdir.map(PathBuf::from),
        }
    }

    fn check(entries: &[BindEntry]) -> std::result::Result<(), String> {
        validate(
            entries,
            Path::new("/mnt/ephemeral"),
            Path::new("/var/lib/ephemera/escrow.json"),
        )
        .map_err(|e| match e {
            Error::Usage(m) => m,
            other => panic!("not a usage error: {other:?}"),
        })
    }

    #[test]
    fn the_usual_sets_pass() {
        check(&[
            e("/var/lib/containerd", None),
            e("/var/lib/kubelet", None),
            e("/var/log/pods", None),
            e("/var/lib/docker", Some("docker")),
            e("/var/lib/ecs/data", None),
        ])
        .unwrap();
        check(&[]).unwrap();
    }

    #[test]
    fn default_subdir_is_the_path_without_its_root() {
        let p = plans(&[e("/var/lib/kubelet", None)], Path::new("/mnt/eph"));
        assert_eq!(p[0].subdir, Path::new("var/lib/kubelet"));
        assert_eq!(p[0].source, Path::new("/mnt/eph/var/lib/kubelet"));
        let p = plans(&[e("/srv/x", Some("x/y"))], Path::new("/m"));
        assert_eq!(p[0].source, Path::new("/m/x/y"));
    }

    #[test]
    fn bad_entries_are_refused_with_one_line_each() {
        let cases: &[(&[BindEntry], &str)] = &[
            (&[e("var/lib/containerd", None)], "not an absolute path"),
            (&[e("/", None)], "must not be /"),
            (&[e("/etc", None)], "system directory"),
            (&[e("/etc/kubernetes", None)], "/etc is a system directory"),
            (&[e("/usr/local", None)], "/usr is a system directory"),
            (&[e("/var", None)], "would hide /var/lib/dpkg"),
            (&[e("/var/lib", None)], "would hide /var/lib/dpkg"),
            (&[e("/var/log", None)], "would hide /var/log/journal"),
            (&[e("/mnt/ephemeral/x", None)], "inside the volume"),
            (&[e("/mnt/ephemeral", None)], "inside the volume"),
            (&[e("/mnt", None)], "hide the volume"),
            (&[e("/var/lib/ephemera", None)], "escrow envelope"),
            (&[e("/srv/../etc", None)], "\"..\""),
            (&[e("/srv/a", Some("/abs"))], "subdir"),
            (&[e("/srv/a", Some("../up"))], "subdir"),
            (&[e("/srv/a", Some(""))], "subdir"),
            (&[e("/srv/a", Some("lost+found"))], "lost+found"),
            (
                &[
                    e("/var/lib/kubelet", None),
                    e("/var/lib/kubelet/pods", None),
                ],
                "overlaps bind[0]",
            ),
            (
                &[
                    e("/var/lib/kubelet/pods", None),
                    e("/var/lib/kubelet", None),
                ],
                "overlaps bind[0]",
            ),
            (&[e("/srv/a", None), e("/srv/a/", None)], "overlaps bind[0]"),
            (
                &[e("/srv/a", Some("d")), e("/srv/b", Some("d/e"))],
                "subdir d/e overlaps",
            ),
        ];
        for (entries, needle) in cases {
            let m = check(entries).expect_err(&format!("{entries:?} passed"));
            assert!(
                m.contains(needle),
                "{entries:?}: {m:?} should say {needle:?}"
            );
            assert!(m.starts_with("config bind["), "{m:?}");
            assert!(!m.contains('\n'), "{m:?}");
        }
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
            let c = crate::config::Config::parse(&toml, &f).unwrap();
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            binds += c.bind.len();
        }
        assert!(binds >= 6, "the examples should show the usual binds");
    }
}
