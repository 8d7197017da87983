//! What a reboot now would do to this boot's volume, answered by the same
//! decision the next boot makes: the facts as they are, with what the
//! kernel forgets at a reboot taken away, planned by [`plan`]. The events
//! watcher tells the fleet whether a scheduled reboot loses the data from
//! this; `status` says it too. Pure: no I/O.
//!
//! Only an `unlock` plan keeps the data available across the reboot. A
//! `keep` plan keeps it for ops (exit 5: readable with the escrow private
//! key, or with `ephemera unlock` once the pins answer), which a fleet must
//! still treat as a loss of the replica; anything else loses it.

use serde::Serialize;

use crate::config::Config;
use crate::host::discover::Inventory;
use crate::host::probe::Content;

use super::plan::{plan, Plan};
use super::state::{volume, Facts, Volume};

/// What a reboot now does to this boot's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reboot {
    /// The next boot unlocks it with its pins, and mounts it again.
    Unlocks,
    /// The next boot keeps it, untouched, for ops (exit 5): the escrow
    /// private key reads it, or `ephemera unlock` once the pins answer.
    KeptForOps,
    /// The next boot makes a new volume over it, or refuses to run: its
    /// data is gone with the key in the kernel.
    Lost,
    /// No volume is mounted at `mount.path`: nothing of this boot to lose.
    NoVolume,
}

impl Reboot {
    /// A reboot loses the data, as the fleet must count it: anything but
    /// an unlock at the next boot.
    pub fn data_loss(self) -> bool {
        self != Reboot::Unlocks
    }

    pub fn name(self) -> &'static str {
        match self {
            Reboot::Unlocks => "unlocks",
            Reboot::KeptForOps => "kept_for_ops",
            Reboot::Lost => "lost",
            Reboot::NoVolume => "no_volume",
        }
    }
}

/// The devices of the open volume from the array's first member up:
/// member kernel names in array order (one for a single disk).
fn members(inv: &Inventory) -> Vec<String> {
    match (&inv.md, &inv.dm) {
        (Some(md), _) => md.members.clone(),
        (None, Some(dm)) => dm.slaves.clone(),
        (None, None) => Vec::new(),
    }
}

/// The facts the next boot would see. The kernel forgets the mapping and
/// the array (ephemera's arrays keep no superblock); the disks keep what
/// they hold: the array's first member (or the single disk) the volume's
/// LUKS2 header, the other members its ciphertext, blank to libblkid; the
/// node's records (envelopes, unlock files, markers) stay on the root disk.
/// The members' content comes from the kernel's view, not from reading the
/// disks; other disks keep what `f` says they hold (the events watcher,
/// which may not open a disk, takes them as blank).
pub fn after_reboot(f: &Facts) -> Facts {
    let mut next = f.clone();
    let ours: Vec<String> = f
        .inv
        .md
        .iter()
        .map(|m| m.name.clone())
        .chain(f.inv.dm.iter().map(|d| d.kname.clone()))
        .collect();
    let members = members(&f.inv);
    let uuid = f.inv.dm.as_ref().map(|d| d.luks_uuid());
    next.inv.md = None;
    next.inv.dm = None;
    next.mapping = None;
    for d in &mut next.inv.nvme {
        d.holders.retain(|h| !ours.contains(h));
    }
    for c in &mut next.candidates {
        c.disk.holders.retain(|h| !ours.contains(h));
        match members.iter().position(|m| *m == c.disk.name) {
            Some(0) => {
                c.content = Content::Ephemera {
                    luks_uuid: uuid.clone().unwrap_or_default(),
                };
                c.busy = false;
            }
            Some(_) => {
                c.content = Content::Blank;
                c.busy = false;
            }
            None => {}
        }
    }
    next
}

/// What a reboot now does to the volume mounted at `mount.path`: the
/// next boot's plan ([`after_reboot`], then [`plan`]), with the config as
/// it is now.
pub fn reboot(f: &Facts, cfg: &Config) -> Reboot {
    if !matches!(volume(f, cfg), Volume::Mounted { .. }) {
        return Reboot::NoVolume;
    }
    match plan(&after_reboot(f), cfg, false) {
        Ok(Plan::Unlock { .. }) => Reboot::Unlocks,
        Ok(Plan::Keep { .. }) => Reboot::KeptForOps,
        _ => Reboot::Lost,
    }
}
