//! The record that this boot's provision kept a volume of an earlier boot
//! (exit 5): `/run/ephemera/kept`, holding provision's line. The events
//! watcher cannot look at the disks (its sandbox has no devices), so this
//! is how its `ephemera_volume_state` tells a kept volume, which needs ops,
//! from no volume at all. Under /run: a reboot starts afresh, and the next
//! provision writes it again or clears it; so do `recover`, `unlock` and
//! `discard` once they have dealt with the volume, and `teardown` once no
//! header of an earlier boot is left (`--luks-uuid` may erase one of
//! several).

use crate::error::Result;
use crate::host::safe_fs;
use crate::host::Host;

pub const MARKER: &str = "run/ephemera/kept";

/// Root's alone, as the guard's marker: whoever could write it could make
/// the metrics lie.
const HOW: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Root,
    mode: 0o644,
    durable: false,
    dir_mode: Some(0o755),
};

/// Records provision's line about the kept volume.
pub fn mark(host: &Host, line: &str) -> Result<()> {
    safe_fs::write_file(&host.path(MARKER), format!("{line}\n").as_bytes(), HOW)
}

/// Forgets it; nothing there is fine.
pub fn clear(host: &Host) -> Result<()> {
    safe_fs::remove_file(&host.path(MARKER)).map(drop)
}

pub fn is_marked(host: &Host) -> bool {
    host.path(MARKER).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_then_clear() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        assert!(!is_marked(&host));
        clear(&host).unwrap();
        mark(&host, "kept the encrypted volume of an earlier boot").unwrap();
        assert!(is_marked(&host));
        assert_eq!(
            std::fs::read_to_string(t.path().join(MARKER)).unwrap(),
            "kept the encrypted volume of an earlier boot\n"
        );
        clear(&host).unwrap();
        assert!(!is_marked(&host));
    }
}
