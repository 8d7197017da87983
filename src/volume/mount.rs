//! The filesystem on the opened volume (ext4 or xfs), and the mount.

use std::path::Path;

use serde::Serialize;
use sys_mount::{Mount, UnmountFlags};

use crate::config::mount_options::MountOptions;
use crate::config::FsType;
use crate::error::{Error, Result};
use crate::host::cmd;

/// How the filesystem is made, as the plan decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MkfsPlan {
    pub fstype: FsType,
    pub label: String,
    /// ext4 `stride` and `stripe_width`, in 4 KiB blocks, for an array.
    pub stride: Option<(u32, u32)>,
    /// The volume's size in bytes, about: the members' total (RAID0). Picks
    /// the options that keep mkfs and mount short at large sizes
    /// (`mount::mkfs_args`, `mount::mkfs_xfs_args`).
    pub bytes: u64,
}

pub fn mkfs(dev: &Path, plan: &MkfsPlan) -> Result<()> {
    let dev_s = dev.to_string_lossy();
    match plan.fstype {
        FsType::Ext4 => cmd::run(
            &format!("making ext4 on {dev_s}"),
            "mkfs.ext4",
            &mkfs_args(plan, &dev_s),
        )?,
        FsType::Xfs => cmd::run(
            &format!("making xfs on {dev_s}"),
            "mkfs.xfs",
            &mkfs_xfs_args(plan, &dev_s),
        )?,
    };
    Ok(())
}

/// xfs's stripe unit (KiB) and width (members) from ext4's stride and
/// stripe width in 4 KiB blocks: the array's chunk and member count.
pub fn xfs_stripe(stride: u32, width: u32) -> (u32, u32) {
    (stride * 4, width / stride.max(1))
}

/// From this volume size on, ext4 is made with `bigalloc` and clusters of
/// `EXT4_CLUSTER_KIB`: 16 TiB, where 4 KiB clusters would make 131072
/// block groups (128 MiB each), twice the 8 TiB count.
pub const EXT4_BIGALLOC_FROM: u64 = 16 << 40;
/// 16 blocks: the largest cluster mke2fs 1.47 does not call experimental.
pub const EXT4_CLUSTER_KIB: u32 = 64;
/// From this volume size on, xfs gets a log of `XFS_LOG_MIB`: 1 TiB, where
/// mkfs.xfs's own choice (size / 2048, up to 2 GiB) reaches that size.
pub const XFS_LOG_FROM: u64 = 1 << 40;
pub const XFS_LOG_MIB: u32 = 512;

/// The smallest volumes mkfs.xfs makes (xfsprogs 6.1): 300 MiB on one
/// disk ("Filesystem must be larger than 300MB"), and more than 512 MiB on
/// an array, where the stripe geometry makes it want allocation groups
/// that each hold its 64 MiB minimum log ("Log size must be at least
/// 64MB"). The unit tests below check both against the host's mkfs.xfs.
pub const XFS_MIN_SINGLE: u64 = 300 << 20;
pub const XFS_MAX_TOO_SMALL_ARRAY: u64 = 512 << 20;

/// Whether mkfs.xfs is sure to refuse a volume of at most `bytes`, striped
/// or not. `bytes` is the members' total, more than the filesystem gets
/// (md and LUKS2 headers), so a volume just above the bounds may still be
/// refused by mkfs.xfs, after the LUKS format, and be rolled back.
pub fn xfs_too_small(bytes: u64, striped: bool) -> bool {
    if striped {
        bytes <= XFS_MAX_TOO_SMALL_ARRAY
    } else {
        bytes < XFS_MIN_SINGLE
    }
}

pub fn ext4_bigalloc(bytes: u64) -> bool {
    bytes >= EXT4_BIGALLOC_FROM
}

pub fn xfs_log_capped(bytes: u64) -> bool {
    bytes >= XFS_LOG_FROM
}

/// `mkfs.xfs`'s arguments. xfs makes inodes on demand and does not
/// zero its data area, so there is nothing lazy to ask for; what is asked:
/// - `-K`: no discard of the whole device at mkfs (the mapping is fresh,
///   and discards are off by default, as for ext4);
/// - `-d su=,sw=`: allocation aligned to the array's chunk and width
///   (mkfs.xfs cannot see the geometry through dm-crypt on md);
/// - no `-f`: a mapping opened with a new key holds no signature, and
///   mkfs.xfs refuses one it finds rather than overwrite it;
/// - `-l size=512m` from 1 TiB on: mkfs.xfs zeroes its whole log, and
///   would size it at 1/2048 of the volume up to 2 GiB: 2 GiB from 4 TiB
///   on, all of it encrypted on the boot path (nearly all that mkfs
///   writes). 512 MiB is what mkfs.xfs gives 1 TiB, eight times its
///   64 MiB minimum; a larger log only lets more metadata changes wait
///   in it (docs/PERFORMANCE.md, "60 TB").
///
/// The other defaults stay (crc, finobt, reflink, the AG count): the
/// filesystem is a normal one that xfs_repair and the EKS AMI's know.
fn mkfs_xfs_args(plan: &MkfsPlan, dev: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-q", "-K", "-L", &plan.label].map(String::from).to_vec();
    if let Some((stride, width)) = plan.stride {
        let (su, sw) = xfs_stripe(stride, width);
        a.push("-d".into());
        a.push(format!("su={su}k,sw={sw}"));
    }
    if xfs_log_capped(plan.bytes) {
        a.push("-l".into());
        a.push(format!("size={XFS_LOG_MIB}m"));
    }
    a.push(dev.into());
    a
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
/// - `nodiscard`: the mapping is fresh, and discards are off by default;
/// - `bigalloc`, `-C 64k` from 16 TiB on: one group descriptor per 128 MiB
///   is 447 000 of them at 60 TB (28 MiB, and a backup), which mkfs
///   writes and mount reads and checks. Clusters of 64 KiB make groups of
///   2 GiB, 16 times fewer. The cost: a file takes whole clusters, so each
///   small file or directory holds 64 KiB (a million of them, 64 GB: 0.4 %
///   of 16 TiB). Below 16 TiB the group count stays at most twice that of
///   8 TiB, and small files keep 4 KiB blocks (docs/PERFORMANCE.md, "60 TB").
///
/// `-T largefile4` (one inode per 4 MiB) and `-m 0` (no blocks reserved for
/// root) suit a data volume of large files that no system service shares.
fn mkfs_args(plan: &MkfsPlan, dev: &str) -> Vec<String> {
    let mut ext = String::from("lazy_itable_init=1,lazy_journal_init=1,num_backup_sb=1,nodiscard");
    if let Some((stride, width)) = plan.stride {
        ext += &format!(",stride={stride},stripe_width={width}");
    }
    let mut features = String::from("^resize_inode,sparse_super2");
    let mut a: Vec<String> = ["-q", "-T", "largefile4", "-m", "0"]
        .map(String::from)
        .to_vec();
    if ext4_bigalloc(plan.bytes) {
        features += ",bigalloc";
        a.push("-C".into());
        a.push(format!("{EXT4_CLUSTER_KIB}k"));
    }
    a.extend(
        [
            "-O",
            &features,
            "-G",
            "256",
            "-E",
            &ext,
            "-L",
            &plan.label,
            dev,
        ]
        .map(String::from),
    );
    a
}

pub fn mount(dev: &Path, path: &Path, options: &str, fstype: FsType) -> Result<()> {
    let opts = MountOptions::parse(options).map_err(Error::Usage)?;
    std::fs::create_dir_all(path).map_err(Error::io("creating mount point", path))?;
    let mut b = Mount::builder().fstype(fstype.name()).flags(opts.flags);
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
    fn xfs_is_aligned_to_the_array() {
        let p = MkfsPlan {
            fstype: FsType::Xfs,
            label: "ephemeral".into(),
            // 256 KiB chunk over 8 members, in 4 KiB blocks.
            stride: Some((64, 512)),
            bytes: 8 << 30,
        };
        let a = mkfs_xfs_args(&p, "/dev/mapper/ephemera");
        assert_eq!(
            a,
            [
                "-q",
                "-K",
                "-L",
                "ephemeral",
                "-d",
                "su=256k,sw=8",
                "/dev/mapper/ephemera"
            ]
        );
        let one = mkfs_xfs_args(&MkfsPlan { stride: None, ..p }, "/dev/x");
        assert!(!one.contains(&"-d".to_string()));
    }

    /// From 1 TiB on, the log is 512 MiB (mkfs.xfs would make up to 2 GiB
    /// and zero all of it); below, mkfs.xfs's own, smaller, choice.
    #[test]
    fn xfs_log_stops_growing_at_1_tib() {
        let plan = |bytes| MkfsPlan {
            fstype: FsType::Xfs,
            label: "l".into(),
            stride: Some((64, 512)),
            bytes,
        };
        let sixty_tb = mkfs_xfs_args(&plan(8 * 7_500_000_000_000), "/dev/x");
        assert_eq!(sixty_tb[6..], ["-l", "size=512m", "/dev/x"]);
        assert_eq!(mkfs_xfs_args(&plan(1 << 40), "/dev/x")[6..], sixty_tb[6..]);
        assert!(!mkfs_xfs_args(&plan((1 << 40) - 1), "/dev/x").contains(&"-l".to_string()));
    }

    /// The minimums `plan` refuses below are mkfs.xfs's own: it is run, with
    /// ephemera's arguments and `-N` (print, write nothing), on sparse files
    /// of the size at each bound and one step past it. `-s size=4096` stands
    /// in for the 4 KiB sectors of the LUKS2 mapping that a file lacks.
    #[test]
    fn xfs_minimums_are_those_of_mkfs_xfs() {
        let dir = tempfile::tempdir().unwrap();
        let makes = |bytes: u64, stride: Option<(u32, u32)>| {
            let img = dir.path().join("img");
            std::fs::File::create(&img).unwrap().set_len(bytes).unwrap();
            let plan = MkfsPlan {
                fstype: FsType::Xfs,
                label: "ephemeral".into(),
                stride,
                bytes,
            };
            let mut args = mkfs_xfs_args(&plan, img.to_str().unwrap());
            args.splice(0..0, ["-N", "-s", "size=4096"].map(String::from));
            let out = std::process::Command::new("mkfs.xfs")
                .args(&args)
                .output()
                .expect("mkfs.xfs (xfsprogs; scripts/host-tools.sh build installs it)");
            out.status.success()
        };
        let step = 4096;
        assert!(makes(XFS_MIN_SINGLE, None));
        assert!(!makes(XFS_MIN_SINGLE - step, None));
        assert!(!xfs_too_small(XFS_MIN_SINGLE, false));
        assert!(xfs_too_small(XFS_MIN_SINGLE - step, false));
        // 2 and 8 members, a 256 KiB chunk (stride 64 blocks).
        for n in [2, 8] {
            let stride = Some((64, 64 * n));
            assert!(!makes(XFS_MAX_TOO_SMALL_ARRAY, stride), "{n} members");
            assert!(
                makes(XFS_MAX_TOO_SMALL_ARRAY + (1 << 20), stride),
                "{n} members"
            );
        }
        assert!(xfs_too_small(XFS_MAX_TOO_SMALL_ARRAY, true));
        assert!(!xfs_too_small(XFS_MAX_TOO_SMALL_ARRAY + 1, true));
    }

    /// From 16 TiB on, ext4 has 64 KiB clusters (16 times fewer block
    /// groups); below, 4 KiB blocks and no bigalloc.
    #[test]
    fn ext4_bigalloc_from_16_tib() {
        let plan = |bytes| MkfsPlan {
            fstype: FsType::Ext4,
            label: "l".into(),
            stride: None,
            bytes,
        };
        let big = mkfs_args(&plan(8 * 7_500_000_000_000), "/dev/x");
        let at = big.iter().position(|a| a == "-C").unwrap();
        assert_eq!(big[at + 1], "64k");
        let features = big.iter().position(|a| a == "-O").unwrap() + 1;
        assert_eq!(big[features], "^resize_inode,sparse_super2,bigalloc");
        assert_eq!(mkfs_args(&plan(16 << 40), "/dev/x"), big);
        let small = mkfs_args(&plan((16 << 40) - 1), "/dev/x");
        assert!(!small.contains(&"-C".to_string()));
        assert!(!small.iter().any(|a| a.contains("bigalloc")));
    }

    /// The bench's kernel floor must make the same filesystem as ephemera,
    /// or the ratio compares two different jobs: the same mkfs.ext4 and
    /// mkfs.xfs arguments, and the same sizes at which they change.
    #[test]
    fn bench_floor_uses_the_same_mkfs_options() {
        let floor = include_str!("../../bench/floor.sh");
        let command = |start: &str| {
            floor
                .lines()
                .map(str::trim)
                .skip_while(|l| !l.starts_with(start))
                .take_while(|l| !l.is_empty() && *l != ";;")
                .collect::<String>()
        };
        // floor.sh adds the stripe, and the size-dependent options, in
        // variables: $ext to -E, $big (-C, bigalloc) and $xfs_d, $xfs_l.
        let plan = |fstype| MkfsPlan {
            fstype,
            label: "ephemeral".into(),
            stride: None,
            bytes: 1 << 30,
        };
        let line = command("step mkfs mkfs.ext4");
        let args = mkfs_args(&plan(FsType::Ext4), "/dev/mapper/floor");
        let ext = args.iter().position(|a| a == "-E").unwrap() + 1;
        let features = args.iter().position(|a| a == "-O").unwrap() + 1;
        for (i, a) in args.iter().enumerate() {
            let want = match i {
                _ if i == ext => format!("\"{a}$ext\""),
                _ if i == features => format!("{a}$bigalloc"),
                _ => a.clone(),
            };
            assert!(
                line.contains(&want),
                "bench/floor.sh lacks {want:?}: {line}"
            );
        }
        assert!(line.contains("$big "), "{line}");
        let line = command("step mkfs mkfs.xfs");
        for a in mkfs_xfs_args(&plan(FsType::Xfs), "/dev/mapper/floor") {
            assert!(line.contains(&a), "bench/floor.sh lacks {a:?}: {line}");
        }
        assert!(line.contains("$xfs_d $xfs_l "), "{line}");
        for want in [
            format!("if [ \"$bytes\" -ge {EXT4_BIGALLOC_FROM} ]"),
            format!("bigalloc=,bigalloc big=\"-C {EXT4_CLUSTER_KIB}k\""),
            format!("if [ \"$bytes\" -ge {XFS_LOG_FROM} ]"),
            format!("xfs_l=\"-l size={XFS_LOG_MIB}m\""),
        ] {
            assert!(floor.contains(&want), "bench/floor.sh lacks {want:?}");
        }
    }
}
