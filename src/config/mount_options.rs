//! `mount.options`, read into what mount(2) takes.

use sys_mount::MountFlags;

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
