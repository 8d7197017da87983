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
    // Lazy inode table and journal init keep mkfs time flat in disk size;
    // nodiscard because the mapping is fresh and discards may be off.
    let mut ext = String::from("lazy_itable_init=1,lazy_journal_init=1,nodiscard");
    if let Some((stride, width)) = plan.stride {
        ext += &format!(",stride={stride},stripe_width={width}");
    }
    let dev_s = dev.to_string_lossy();
    cmd::run(
        &format!("making ext4 on {dev_s}"),
        "mkfs.ext4",
        &[
            "-q",
            "-T",
            "largefile4",
            "-m",
            "0",
            "-E",
            &ext,
            "-L",
            &plan.label,
            &dev_s,
        ],
    )?;
    Ok(())
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
}
