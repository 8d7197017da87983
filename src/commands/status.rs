//! `status`: the volume as the kernel and the disks show it. Reads only.

use serde::Serialize;

use crate::config::Config;
use crate::discover::{Inventory, DM_NAME};
use crate::error::Result;
use crate::host::Host;
use crate::luks::{self, LuksInfo};
use crate::plan::{self, Earlier, Volume};
use crate::probe::Probe;
use crate::survey::survey;

#[derive(Debug, Serialize)]
pub struct Status {
    /// `provisioned`: open and mounted at mount.path; `mounted_elsewhere`;
    /// `unmounted`: open, not mounted (provision mounts it again);
    /// `unfinished`: open with no file system; `earlier`: a volume of an
    /// earlier boot on the disks, not open (see `earlier`); `absent`.
    pub state: &'static str,
    /// Volumes of an earlier boot on the disks, with their envelopes.
    pub earlier: Vec<Earlier>,
    pub members: Vec<Member>,
    pub raid: Option<RaidStatus>,
    pub luks: Option<LuksInfo>,
    pub mount: Option<MountStatus>,
    /// The reboot guard is on.
    pub guard: bool,
    /// Pending maintenance events and interruptions (src/events.rs).
    pub events: Vec<crate::events::Event>,
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
pub struct MountStatus {
    pub path: String,
    pub fstype: String,
}

/// The device below ephemera's mapping: the array, or the single disk.
pub fn backing(inv: &Inventory) -> Option<String> {
    inv.dm.as_ref().and_then(|dm| dm.slaves.first().cloned())
}

/// Reads signatures through the real prober, and never opens a disk
/// exclusively: `status` may run at any time, and an exclusive open, even
/// brief, could make someone else's mount of that disk fail.
struct Signatures<'a>(&'a dyn Probe);

impl Probe for Signatures<'_> {
    fn signatures(&self, dev: &std::path::Path) -> Result<Vec<crate::probe::Signature>> {
        self.0.signatures(dev)
    }
    fn busy(&self, _: &std::path::Path) -> Result<bool> {
        Ok(false)
    }
}

pub fn status(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<Status> {
    let facts = survey(host, cfg, &Signatures(probe))?;
    let (state, earlier) = match plan::volume(&facts, cfg) {
        Volume::Absent => ("absent", vec![]),
        Volume::Mounted { .. } => ("provisioned", vec![]),
        Volume::MountedElsewhere { .. } => ("mounted_elsewhere", vec![]),
        Volume::Unmounted { .. } => ("unmounted", vec![]),
        Volume::Unfinished { .. } => ("unfinished", vec![]),
        Volume::Earlier { volumes } => ("earlier", volumes),
    };
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
    let luks = match backing(&inv) {
        Some(b) => Some(luks::info(&host.dev(&b))?),
        None => None,
    };
    let mount = inv
        .dm
        .as_ref()
        .and_then(|d| d.mount.as_ref())
        .map(|m| MountStatus {
            path: m.path.clone(),
            fstype: m.fstype.clone(),
        });
    Ok(Status {
        state,
        earlier,
        members,
        raid,
        luks,
        mount,
        guard: crate::guard::is_on(host),
        events: Vec::new(),
    })
}

impl Status {
    pub fn describe(&self) -> String {
        let mut s = format!("state: {}\n", self.state);
        for e in &self.earlier {
            s += &format!(
                "earlier volume: LUKS UUID {} on /dev/{} (serial {}), {}\n",
                e.luks_uuid,
                e.disk,
                e.serial,
                match &e.envelope {
                    Some(p) => format!("escrow envelope {}", p.display()),
                    None => "no escrow envelope on this node".into(),
                }
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
        s += if self.guard {
            "guard: on (reboot, soft-reboot, halt, kexec, suspend, hibernate refused; `ephemera guard release` to allow)\n"
        } else {
            "guard: off\n"
        };
        s
    }
}
