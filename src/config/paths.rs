//! The node's directories that ephemera's volume must leave alone: where
//! `mount.path` may not be, and what a `[[bind]]` may not be or hide. One
//! list for both, each entry with the reason a message gives.

use std::path::Path;

/// Trees that neither the volume nor a bind may be or be inside: the
/// system itself, or the kernel's. Each with why.
pub const SYSTEM: &[(&str, &str)] = &[
    ("/etc", "the system's configuration"),
    ("/usr", "the system's programs"),
    ("/bin", "the system's programs"),
    ("/sbin", "the system's programs"),
    ("/lib", "the system's libraries"),
    ("/lib32", "the system's libraries"),
    ("/lib64", "the system's libraries"),
    ("/libx32", "the system's libraries"),
    ("/boot", "the kernel and boot loader files"),
    ("/dev", "the kernel's device filesystem"),
    ("/proc", "the kernel's process filesystem"),
    ("/sys", "the kernel's sysfs"),
    // ephemera's own lock and the watcher's record are there too.
    ("/run", "systemd's and ephemera's runtime state"),
];

/// Directories that must stay on the root disk: neither the volume nor a
/// bind may be one or hide one (be above it). Inside them is fine
/// (`/var/lib/containerd` is inside `/var`). Each with why.
pub const KEPT: &[(&str, &str)] = &[
    ("/var/lib/dpkg", "the package database (Debian)"),
    ("/var/lib/apt", "the package lists (Debian)"),
    ("/var/cache/apt", "the package cache (Debian)"),
    ("/var/lib/rpm", "the package database (Amazon Linux)"),
    ("/var/lib/dnf", "the package manager's state (Amazon Linux)"),
    ("/var/lib/systemd", "systemd's state (timers, random seed)"),
    ("/var/lib/cloud", "cloud-init's record of this instance"),
    ("/var/log/journal", "the journal"),
    (
        "/var/lib/ephemera",
        "ephemera's envelopes and unlock files, read before the volume is open",
    ),
    ("/root", "root's home and its ssh keys"),
    ("/home", "the users' homes and their ssh keys"),
    (
        "/tmp",
        "a world-writable sticky directory; the volume's root is not",
    ),
    (
        "/var/tmp",
        "a world-writable sticky directory; the volume's root is not",
    ),
];

/// Why `p` may not hold the volume or a bind, if it may not: `Inside` one
/// of `SYSTEM`, or it would `Hide` one of `SYSTEM` or `KEPT`. `p` is
/// absolute, without `..`, and not `/` (checked before).
pub enum Clash {
    Inside(&'static str, &'static str),
    Hide(&'static str, &'static str),
}

pub fn clash(p: &Path) -> Option<Clash> {
    if let Some((s, why)) = SYSTEM.iter().find(|(s, _)| p.starts_with(s)) {
        return Some(Clash::Inside(s, why));
    }
    SYSTEM
        .iter()
        .chain(KEPT)
        .find(|(k, _)| Path::new(k).starts_with(p))
        .map(|(k, why)| Clash::Hide(k, why))
}

impl Clash {
    /// One phrase for a message; `what` is "a bind" or "a mount".
    pub fn describe(&self, what: &str) -> String {
        match self {
            Clash::Inside(s, why) => {
                format!("{s} is a system directory ({why}); it stays on the root disk")
            }
            Clash::Hide(k, why) => {
                format!("{what} there would hide {k} ({why}), which stays on the root disk")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_absolute_and_apart() {
        for (p, _) in SYSTEM.iter().chain(KEPT) {
            assert!(p.starts_with('/') && !p.ends_with('/'), "{p}");
        }
        // No KEPT entry inside a SYSTEM tree: it would never be reached.
        for (k, _) in KEPT {
            assert!(
                SYSTEM.iter().all(|(s, _)| !Path::new(k).starts_with(s)),
                "{k}"
            );
        }
    }

    #[test]
    fn inside_and_above_are_told_apart() {
        assert!(matches!(
            clash(Path::new("/etc/x")),
            Some(Clash::Inside("/etc", _))
        ));
        assert!(matches!(
            clash(Path::new("/var")),
            Some(Clash::Hide("/var/lib/dpkg", _))
        ));
        assert!(matches!(
            clash(Path::new("/tmp")),
            Some(Clash::Hide("/tmp", _))
        ));
        for ok in [
            "/mnt/ephemeral",
            "/var/lib/containerd",
            "/srv/data",
            "/home/x",
            "/tmp/x",
        ] {
            assert!(clash(Path::new(ok)).is_none(), "{ok}");
        }
    }
}
