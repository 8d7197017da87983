//! The host: where the system is read from, and the few ways ephemera acts
//! on it below the volume. Every sysfs, procfs and /dev path goes through a
//! [`Host`], so tests point it at a fixture tree instead of `/`.
//! - `discover` reads the block devices and mounts from sysfs and procfs;
//! - `probe` reads what a disk holds (libblkid) and whether it is busy;
//! - `cmd` runs subprocesses, one way; `modules` loads kernel modules;
//! - `lock` keeps runs apart; `safe_fs` writes files as root without
//!   following links; `failpoint` marks step boundaries for the fault tests.

pub mod cmd;
pub mod discover;
pub mod failpoint;
pub mod lock;
pub mod modules;
pub mod probe;
pub mod safe_fs;

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host::new("/")
    }
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// `rel` below the root (`rel` is given without a leading slash).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// An absolute path (from the config) below the root.
    pub fn abs(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    pub fn sys_block(&self) -> PathBuf {
        self.path("sys/block")
    }

    /// The device node of a kernel block device name (devtmpfs names).
    pub fn dev(&self, name: &str) -> PathBuf {
        self.path("dev").join(name)
    }

    /// Reads a sysfs-like attribute, trimmed; `None` when absent or unreadable.
    pub fn attr(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Names of the entries of a directory, sorted; empty when absent.
    pub fn entries(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}
