//! RAID0 through the kernel md driver, by ioctl, the way `mdadm --build`
//! does it: SET_ARRAY_INFO (no superblock), ADD_NEW_DISK per member,
//! RUN_ARRAY. Nothing is written to the members, so nothing of the array
//! survives a reboot. Written by hand because no maintained crate drives md;
//! the structures mirror `<linux/raid/md_u.h>`.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::Host;

const MD_MAJOR: u8 = 9;
const MD_DISK_ACTIVE: i32 = 1;
const MD_DISK_SYNC: i32 = 2;

/// `mdu_array_info_t`
#[repr(C)]
#[derive(Default)]
struct ArrayInfo {
    major_version: i32,
    minor_version: i32,
    patch_version: i32,
    ctime: u32,
    level: i32,
    size: i32,
    nr_disks: i32,
    raid_disks: i32,
    md_minor: i32,
    not_persistent: i32,
    utime: u32,
    state: i32,
    active_disks: i32,
    working_disks: i32,
    failed_disks: i32,
    spare_disks: i32,
    layout: i32,
    chunk_size: i32,
}

/// `mdu_disk_info_t`
#[repr(C)]
#[derive(Default)]
struct DiskInfo {
    number: i32,
    major: i32,
    minor: i32,
    raid_disk: i32,
    state: i32,
}

/// `mdu_param_t` (the kernel ignores its contents for RUN_ARRAY).
#[repr(C)]
#[derive(Default)]
struct Param {
    personality: i32,
    chunk_size: i32,
    max_fault: i32,
}

nix::ioctl_write_ptr!(set_array_info, MD_MAJOR, 0x23, ArrayInfo);
nix::ioctl_write_ptr!(add_new_disk, MD_MAJOR, 0x21, DiskInfo);
nix::ioctl_write_ptr!(run_array, MD_MAJOR, 0x30, Param);
nix::ioctl_none!(stop_array, MD_MAJOR, 0x32);

/// How long to wait for devtmpfs to show a new device node.
const NODE_WAIT: Duration = Duration::from_secs(10);

/// Waits until `path` is a block device node, bounded by `NODE_WAIT`.
pub fn wait_for_node(path: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()) {
            return Ok(());
        }
        if start.elapsed() > NODE_WAIT {
            return Err(Error::Failed(format!(
                "{} did not appear as a block device within {} s",
                path.display(),
                NODE_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The most members an array may have: more than any instance type offers
/// (24 instance-store disks), far below what the ioctls' `int`s can hold.
pub const MAX_MEMBERS: usize = 64;
/// The largest chunk, as config's `raid.chunk_kib` allows: 1 GiB, so the
/// chunk in bytes fits the ioctl's `int`.
pub const MAX_CHUNK_KIB: u32 = 1 << 20;

/// The values SET_ARRAY_INFO gets for a RAID0 array, checked: what both
/// `provision` and `recover` (from an envelope, which may be hostile) hand
/// to the kernel. Pure, so it can be fuzzed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raid0Geometry {
    /// `raid_disks`, `nr_disks`, `active_disks`, `working_disks`.
    pub disks: i32,
    /// `chunk_size`, in bytes: a power of two, 4 KiB to 1 GiB.
    pub chunk_bytes: i32,
}

impl Raid0Geometry {
    pub fn new(members: usize, chunk_kib: u32) -> std::result::Result<Self, String> {
        if !(1..=MAX_MEMBERS).contains(&members) {
            return Err(format!(
                "{members} members: 1 to {MAX_MEMBERS} are supported"
            ));
        }
        if !chunk_kib.is_power_of_two() || !(4..=MAX_CHUNK_KIB).contains(&chunk_kib) {
            return Err(format!(
                "chunk {chunk_kib} KiB is not a power of two between 4 and {MAX_CHUNK_KIB}"
            ));
        }
        let chunk_bytes = chunk_kib
            .checked_mul(1024)
            .and_then(|b| i32::try_from(b).ok())
            .ok_or_else(|| format!("chunk {chunk_kib} KiB does not fit the md ioctl"))?;
        let disks = i32::try_from(members).map_err(|_| format!("{members} members"))?;
        Ok(Raid0Geometry { disks, chunk_bytes })
    }
}

/// Creates the named array `name` (which must start with `md_`) over
/// `members` in that order, and starts it. Returns its device node.
pub fn build_raid0(
    host: &Host,
    name: &str,
    members: &[PathBuf],
    chunk_kib: u32,
) -> Result<PathBuf> {
    let geo = Raid0Geometry::new(members.len(), chunk_kib)
        .map_err(|why| Error::Usage(format!("RAID0 array {name}: {why}")))?;
    let new_array = host.path("sys/module/md_mod/parameters/new_array");
    std::fs::write(&new_array, name).map_err(|e| {
        Error::Failed(format!(
            "creating md array {name} via {}: {e}",
            new_array.display()
        ))
    })?;
    let dev = host.dev(name);
    wait_for_node(&dev)?;
    let md = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map_err(Error::io("opening", &dev))?;
    let fail = |what: String, e: nix::Error| {
        // Leave no half-built array behind.
        // SAFETY: STOP_ARRAY takes no argument.
        let _ = unsafe { stop_array(md.as_raw_fd()) };
        Error::Failed(format!("{what} on {}: {e}", dev.display()))
    };
    let n = geo.disks;
    let info = ArrayInfo {
        level: 0,
        nr_disks: n,
        raid_disks: n,
        md_minor: md
            .metadata()
            .map(|m| nix::sys::stat::minor(m.rdev()) as i32)
            .unwrap_or(0),
        not_persistent: 1,
        active_disks: n,
        working_disks: n,
        chunk_size: geo.chunk_bytes,
        ..Default::default()
    };
    // SAFETY: `info` is a valid mdu_array_info_t for the duration of the call.
    unsafe { set_array_info(md.as_raw_fd(), &info) }
        .map_err(|e| fail("SET_ARRAY_INFO".into(), e))?;
    for (i, m) in members.iter().enumerate() {
        let rdev = std::fs::metadata(m)
            .map_err(Error::io("reading", m))?
            .rdev();
        let disk = DiskInfo {
            number: i as i32,
            raid_disk: i as i32,
            major: nix::sys::stat::major(rdev) as i32,
            minor: nix::sys::stat::minor(rdev) as i32,
            state: (1 << MD_DISK_SYNC) | (1 << MD_DISK_ACTIVE),
        };
        // SAFETY: `disk` is a valid mdu_disk_info_t for the duration of the call.
        unsafe { add_new_disk(md.as_raw_fd(), &disk) }
            .map_err(|e| fail(format!("ADD_NEW_DISK {}", m.display()), e))?;
    }
    // SAFETY: `Param` is a valid mdu_param_t.
    unsafe { run_array(md.as_raw_fd(), &Param::default()) }
        .map_err(|e| fail("RUN_ARRAY".into(), e))?;
    Ok(dev)
}

/// Stops the array `name`; its members are free again.
pub fn stop(host: &Host, name: &str) -> Result<()> {
    let dev = host.dev(name);
    let md = OpenOptions::new()
        .read(true)
        .open(&dev)
        .map_err(Error::io("opening", &dev))?;
    // SAFETY: STOP_ARRAY takes no argument.
    unsafe { stop_array(md.as_raw_fd()) }
        .map_err(|e| Error::Failed(format!("stopping {}: {e}", dev.display())))?;
    Ok(())
}
