//! `status`: the volume as the kernel and the disks show it. Reads only.

use serde::Serialize;

use crate::config::Config;
use crate::decision::lifecycle::Action;
use crate::decision::plan::{self, Earlier, Incomplete, Volume};
use crate::decision::reboot::{reboot, Reboot};
use crate::decision::survey::survey;
use crate::error::Result;
use crate::host::discover::{Inventory, DM_NAME};
use crate::host::probe::{LookOnly, Probe};
use crate::host::Host;
use crate::volume::luks::{self, LuksInfo};

#[derive(Debug, Serialize)]
pub struct Status {
    /// `provisioned`: open and mounted at mount.path; `mounted_elsewhere`;
    /// `unmounted`: open, not mounted (provision mounts it again);
    /// `unfinished`: open with no file system; `earlier`: a volume of an
    /// earlier boot on the disks, not open (see `earlier`); `absent`.
    pub state: &'static str,
    /// What `provision` would do now (the lifecycle table's words,
    /// `decision::lifecycle::Action::name`): `new`, `replace_unfinished`,
    /// `replace_never_mounted`, `replace_unreadable`, `replace_reformat`,
    /// `nothing`, `remount`, `unlock`, `keep`, `refuse`.
    pub action: &'static str,
    /// Why provision would refuse, when `action` is `refuse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// What a reboot now does to the volume mounted at `mount.path`: the
    /// next boot's own plan (`decision::reboot`): `unlocks`,
    /// `kept_for_ops`, `lost`, or `no_volume`. The events watcher says the
    /// same.
    pub reboot: Reboot,
    /// Volumes of an earlier boot on the disks, with their envelopes.
    pub earlier: Vec<Earlier>,
    /// Escrowed volumes of an earlier boot whose header's disk is missing.
    pub incomplete: Vec<Incomplete>,
    pub members: Vec<Member>,
    pub raid: Option<RaidStatus>,
    pub luks: Option<LuksInfo>,
    /// Why the open volume's LUKS2 header could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luks_error: Option<String>,
    pub mount: Option<MountStatus>,
    /// The volume's other mounts (binds of its subdirectories): with or
    /// without `mount`, they keep it in use.
    pub binds: Vec<BindStatus>,
    /// The open volume's unlock file ([unlock]): a reboot unlocks it when
    /// its pins answer.
    pub unlock_file: Option<std::path::PathBuf>,
    /// With `[unlock]` in the config and a volume mounted: whether it is
    /// bound to its pins (its unlock file is there), so that a reboot keeps
    /// it. `false` after a binding that failed at provision. `null` without
    /// `[unlock]` or a mounted volume.
    pub unlock_bound: Option<bool>,
    /// The reboot guard is on.
    pub guard: bool,
    /// The guard is on with every refusal in place (its marker and each
    /// drop-in).
    pub guard_armed: bool,
    /// What puts the data at risk now, one line each (also printed by
    /// `status` as `warning:` lines).
    pub warnings: Vec<String>,
    /// Pending maintenance events and interruptions (src/events.rs).
    pub events: Vec<crate::node::events::Event>,
}

#[derive(Debug, Serialize)]
pub struct Member {
    pub device: String,
    pub serial: String,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct RaidStatus {
    pub device: String,
    pub chunk_kib: u32,
}

#[derive(Debug, Serialize)]
pub struct BindStatus {
    pub path: String,
    /// The directory of the volume bound there.
    pub subdir: String,
}

#[derive(Debug, Serialize)]
pub struct MountStatus {
    pub path: String,
    pub fstype: String,
}

/// The device below ephemera's mapping: the array, or the single disk.
pub fn backing(inv: &Inventory) -> Option<String> {
    inv.dm.as_ref().and_then(|dm| dm.slaves.first().cloned())
}

pub fn status(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<Status> {
    let facts = survey(host, cfg, &LookOnly(probe))?;
    let (action, refused) = match plan::plan(&facts, cfg, false) {
        Ok(p) => (p.action().name(), None),
        Err(e) => (Action::Refuse.name(), Some(e.to_string())),
    };
    let reboot = reboot(&facts, cfg);
    let (state, earlier, incomplete) = match plan::volume(&facts, cfg) {
        Volume::Absent => ("absent", vec![], vec![]),
        Volume::Mounted { .. } => ("provisioned", vec![], vec![]),
        Volume::MountedElsewhere { .. } => ("mounted_elsewhere", vec![], vec![]),
        Volume::Unmounted { .. } => ("unmounted", vec![], vec![]),
        Volume::Unfinished { .. } => ("unfinished", vec![], vec![]),
        Volume::Earlier {
            volumes,
            incomplete,
        } => ("earlier", volumes, incomplete),
    };
    let unlock_file = facts
        .inv
        .dm
        .as_ref()
        .and_then(|dm| facts.unlock_file(&dm.luks_uuid()))
        .map(|f| f.path.clone());
    let mounted = facts.inv.dm.as_ref().and_then(|d| d.mount()).is_some();
    let unlock_bound = (cfg.unlock.enabled() && mounted).then_some(unlock_file.is_some());
    let guard_armed = crate::node::guard::armed(host);
    let inv = facts.inv;
    let raid = inv.md.as_ref().map(|m| RaidStatus {
        device: format!("/dev/{}", m.name),
        chunk_kib: m.chunk_kib,
    });
    let member_names: Vec<String> = match (&inv.md, backing(&inv)) {
        (Some(m), _) => m.members.clone(),
        (None, Some(b)) => vec![b],
        (None, None) => vec![],
    };
    let members = member_names
        .iter()
        .map(|n| {
            let d = inv.disk(n);
            Member {
                device: format!("/dev/{n}"),
                serial: d.map(|d| d.serial.clone()).unwrap_or_default(),
                size_bytes: d.map(|d| d.size_bytes).unwrap_or(0),
            }
        })
        .collect();
    // Reported, not fatal: status shows what it can.
    let (luks, luks_error) = match backing(&inv).map(|b| host.dev(&b)) {
        Some(dev) if !dev.exists() => (None, Some(format!("{} is missing", dev.display()))),
        Some(dev) => match luks::info(&dev) {
            Ok(i) => (Some(i), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, None),
    };
    let mount = inv
        .dm
        .as_ref()
        .and_then(|d| d.mount())
        .map(|m| MountStatus {
            path: m.path.clone(),
            fstype: m.fstype.clone(),
        });
    let binds = inv
        .dm
        .iter()
        .flat_map(|d| &d.mounts)
        .filter(|m| m.root != "/")
        .map(|m| BindStatus {
            path: m.path.clone(),
            subdir: m.root.clone(),
        })
        .collect();
    let warnings = risks(unlock_bound, mounted, guard_armed);
    Ok(Status {
        unlock_bound,
        guard_armed,
        warnings,
        unlock_file,
        binds,
        state,
        action,
        refused,
        reboot,
        luks_error,
        earlier,
        incomplete,
        members,
        raid,
        luks,
        mount,
        guard: crate::node::guard::is_on(host),
        events: Vec::new(),
    })
}

/// What puts the data at risk now, one line each: a mounted volume that
/// `[unlock]` should keep across a reboot but is not bound to its pins (its
/// binding failed at provision), or a mounted volume whose reboot guard is
/// not armed (released, or never started).
fn risks(unlock_bound: Option<bool>, mounted: bool, guard_armed: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    if unlock_bound == Some(false) {
        warnings.push(
            "[unlock] is set, but the mounted volume is not bound to its pins (no unlock file; \
             see ephemera.service's journal for the binding that failed): a reboot loses its data \
             (or, with escrow, keeps it for ops)"
                .to_string(),
        );
    }
    if mounted && !guard_armed {
        warnings.push(
            "the volume is mounted and the reboot guard is not armed: a reboot is not refused \
             (`systemctl start ephemera-guard.service` arms it)"
                .to_string(),
        );
    }
    warnings
}

impl Status {
    pub fn describe(&self) -> String {
        let mut s = format!("state: {}\n", self.state);
        s += &format!("provision would: {}", self.action.replace('_', " "));
        if let Some(r) = &self.refused {
            s += &format!(" ({r})");
        }
        s += "\n";
        for e in &self.earlier {
            s += &format!(
                "earlier volume: LUKS UUID {} on /dev/{} (serial {}), {}\n",
                e.luks_uuid,
                e.disk,
                e.serial,
                match (&e.envelope, &e.sealed) {
                    (Some(p), _) => format!("escrow envelope {}", p.display()),
                    (None, Some(_)) => "no escrow envelope on this node".into(),
                    (None, None) => "no escrow envelope or unlock file on this node".into(),
                }
            );
            if let Some(u) = &e.sealed {
                s += &format!("earlier volume: unlock file {}\n", u.display());
            }
        }
        for v in &self.incomplete {
            s += &format!(
                "earlier volume: LUKS UUID {}, kept by {}, its header's disk missing \
                 (missing serials {}; here: {})\n",
                v.luks_uuid,
                v.envelope.display(),
                v.missing.join(", "),
                v.present
                    .iter()
                    .map(|(d, serial)| format!("/dev/{d} serial {serial}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for m in &self.members {
            s += &format!(
                "member: {} serial {} ({} bytes)\n",
                m.device, m.serial, m.size_bytes
            );
        }
        if let Some(r) = &self.raid {
            s += &format!("raid: {} RAID0, {} KiB chunk\n", r.device, r.chunk_kib);
        }
        if let Some(e) = &self.luks_error {
            s += &format!("luks: its header could not be read: {e}\n");
        }
        if let Some(l) = &self.luks {
            s += &format!(
                "luks: {} {} {}-bit, {}-byte sectors, {} keyslots\n",
                l.uuid, l.cipher, l.key_bits, l.sector_size, l.keyslots
            );
        }
        if let Some(m) = &self.mount {
            s += &format!(
                "mount: /dev/mapper/{DM_NAME} on {} ({})\n",
                m.path, m.fstype
            );
        }
        for b in &self.binds {
            s += &format!(
                "bind: {} of /dev/mapper/{DM_NAME} on {}{}\n",
                b.subdir,
                b.path,
                if self.mount.is_none() {
                    " (the volume is in use through it)"
                } else {
                    ""
                }
            );
        }
        if let Some(u) = &self.unlock_file {
            s += &format!("unlock: unlock file {}\n", u.display());
        }
        s += match self.reboot {
            Reboot::Unlocks => "reboot: the next boot unlocks it with its pins and mounts it again (if they do not answer, it is kept for ops)\n",
            Reboot::KeptForOps => "reboot: the next boot keeps it untouched for ops (exit 5: `ephemera recover` with the escrow private key); count it as lost until then\n",
            Reboot::Lost => "reboot: LOSES THE DATA: the next boot cannot open this volume and makes a new one\n",
            Reboot::NoVolume => "",
        };
        s += if self.guard {
            "guard: on (reboot, soft-reboot, halt, kexec, suspend, hibernate refused; `ephemera guard release` to allow)\n"
        } else {
            "guard: off\n"
        };
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::risks;

    #[test]
    fn an_unbound_volume_and_an_unarmed_guard_are_warnings() {
        assert!(risks(None, true, true).is_empty());
        assert!(risks(Some(true), true, true).is_empty());
        // Nothing mounted: nothing at risk.
        assert!(risks(None, false, false).is_empty());
        let w = risks(Some(false), true, true);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("not bound to its pins") && w[0].contains("a reboot loses its data"),
            "{w:?}"
        );
        let w = risks(Some(false), true, false);
        assert_eq!(w.len(), 2);
        assert!(w[1].contains("reboot guard is not armed"), "{w:?}");
    }
}
