//! ext4 on the opened volume, and the mount.

use std::path::Path;

use sys_mount::{Mount, MountFlags, UnmountFlags};

use crate::cmd;
use crate::error::{Error, Result};
use crate::plan::MkfsPlan;

/// `mount.options` split into kernel flags and filesystem data. Written by
/// hand because sys-mount takes flags and data apart and no crate parses
/// fstab-style option strings into them.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MountFlags,
    pub data: String,
}

impl MountOptions {
    pub fn parse(s: &str) -> std::result::Result<MountOptions, String> {
        let mut flags = MountFlags::empty();
        let mut data = Vec::new();
        if s.trim().is_empty() {
            return Ok(MountOptions {
                flags,
                data: String::new(),
            });
        }
        for opt in s.split(',') {
            let opt = opt.trim();
            let f = match opt {
                "" => return Err(format!("{s:?} has an empty option")),
                "defaults" | "rw" => MountFlags::empty(),
                "ro" => MountFlags::RDONLY,
                "noatime" => MountFlags::NOATIME,
                "nodiratime" => MountFlags::NODIRATIME,
                "relatime" => MountFlags::RELATIME,
                "strictatime" => MountFlags::STRICTATIME,
                "nosuid" => MountFlags::NOSUID,
                "nodev" => MountFlags::NODEV,
                "noexec" => MountFlags::NOEXEC,
                "sync" => MountFlags::SYNCHRONOUS,
                "dirsync" => MountFlags::DIRSYNC,
                _ if opt.contains(char::is_whitespace) => {
                    return Err(format!("{opt:?} contains white space"))
                }
                _ => {
                    data.push(opt);
                    MountFlags::empty()
                }
            };
            flags |= f;
        }
        Ok(MountOptions {
            flags,
            data: data.join(","),
        })
    }
}

pub fn mkfs(dev: &Path, plan: &MkfsPlan) -> Result<()> {
    let dev_s = dev.to_string_lossy();
    cmd::run(
        &format!("making ext4 on {dev_s}"),
        "mkfs.ext4",
        &mkfs_args(plan, &dev_s),
    )?;
    Ok(())
}

/// `mkfs.ext4`'s arguments. Everything that would grow with the disk is
/// left out, so that making ext4 on 8 TiB writes about as much as on 1 GiB:
/// - `lazy_itable_init`, `lazy_journal_init`: the kernel zeroes inode tables
///   after mount, and the journal is never zeroed. A crash before its first
///   full wrap could replay stale blocks; on ephemera's volume a crash is a
///   reboot, and a reboot loses the key, so the volume is gone anyway;
/// - `^resize_inode`: no reserved descriptor blocks for online growth (up to
///   1024x the size, in every backup group). Instance-store disks never grow;
/// - `sparse_super2`, `num_backup_sb=1`: one backup superblock and
///   descriptor table, in group 1, where `e2fsck -b 32768` looks first,
///   instead of one in every group numbered 0, 1 or a power of 3, 5 or 7;
/// - `-G 256`: block and inode bitmaps and inode tables of 256 groups packed
///   together (as Lustre formats its large targets), so far fewer groups
///   hold metadata whose bitmaps mke2fs must write;
/// - `nodiscard`: the mapping is fresh, and discards are off by default.
///
/// `-T largefile4` (one inode per 4 MiB) and `-m 0` (no blocks reserved for
/// root) suit a data volume of large files that no system service shares.
fn mkfs_args(plan: &MkfsPlan, dev: &str) -> Vec<String> {
    let mut ext = String::from("lazy_itable_init=1,lazy_journal_init=1,num_backup_sb=1,nodiscard");
    if let Some((stride, width)) = plan.stride {
        ext += &format!(",stride={stride},stripe_width={width}");
    }
    [
        "-q",
        "-T",
        "largefile4",
        "-m",
        "0",
        "-O",
        "^resize_inode,sparse_super2",
        "-G",
        "256",
        "-E",
        &ext,
        "-L",
        &plan.label,
        dev,
    ]
    .map(String::from)
    .to_vec()
}

pub fn mount(dev: &Path, path: &Path, options: &str) -> Result<()> {
    let opts = MountOptions::parse(options).map_err(Error::Usage)?;
    std::fs::create_dir_all(path).map_err(Error::io("creating mount point", path))?;
    let mut b = Mount::builder().fstype("ext4").flags(opts.flags);
    if !opts.data.is_empty() {
        b = b.data(&opts.data);
    }
    b.mount(dev, path).map_err(|e| {
        Error::Failed(format!(
            "mounting {} at {}: {e}",
            dev.display(),
            path.display()
        ))
    })?;
    Ok(())
}

pub fn unmount(path: &Path) -> Result<()> {
    sys_mount::unmount(path, UnmountFlags::empty())
        .map_err(|e| Error::Failed(format!("unmounting {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o = MountOptions::parse("noatime,nodev,commit=60,data=writeback").unwrap();
        assert_eq!(o.flags, MountFlags::NOATIME | MountFlags::NODEV);
        assert_eq!(o.data, "commit=60,data=writeback");
        assert_eq!(MountOptions::parse("").unwrap().flags, MountFlags::empty());
        assert!(MountOptions::parse("noatime,,nodev").is_err());
        assert!(MountOptions::parse("no atime").is_err());
    }

    /// The bench's kernel floor must make the same filesystem as ephemera,
    /// or the ratio compares two different jobs.
    #[test]
    fn bench_floor_uses_the_same_mkfs_options() {
        let floor = include_str!("../bench/floor.sh");
        let line = floor
            .lines()
            .skip_while(|l| !l.starts_with("step mkfs mkfs.ext4"))
            .take_while(|l| !l.trim().is_empty())
            .collect::<String>();
        let args = mkfs_args(
            &MkfsPlan {
                label: "ephemeral".into(),
                stride: None,
            },
            "/dev/mapper/floor",
        );
        let ext = args.iter().position(|a| a == "-E").unwrap() + 1;
        for (i, a) in args.iter().enumerate() {
            let want = if i == ext {
                format!("\"{a}$ext\"")
            } else {
                a.clone()
            };
            assert!(
                line.contains(&want),
                "bench/floor.sh lacks {want:?}: {line}"
            );
        }
    }
}
