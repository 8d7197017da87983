//! The other subcommands: `status`, `teardown` and `recover`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::apply::{lock, survey};
use crate::config::Config;
use crate::discover::{self, Inventory, DM_NAME, MD_NAME};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::luks::{self, LuksInfo};
use crate::probe::{Content, Probe};
use crate::{cmd, escrow, md, mount};

#[derive(Debug, Serialize)]
pub struct Status {
    /// `provisioned` when the volume is open and mounted, else `absent`.
    pub state: &'static str,
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
fn backing(inv: &Inventory) -> Option<String> {
    inv.dm.as_ref().and_then(|dm| dm.slaves.first().cloned())
}

pub fn status(host: &Host) -> Result<Status> {
    let inv = discover::discover(host);
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
        state: if mount.is_some() {
            "provisioned"
        } else {
            "absent"
        },
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
            "guard: on (reboot, halt, suspend, hibernate refused; `ephemera guard release` to allow)\n"
        } else {
            "guard: off\n"
        };
        s
    }
}

/// Unmounts, closes, erases the header (the data is then unreadable for
/// good, escrow or not) and stops the array. With nothing open, erases
/// ephemera's headers left on the disks by an earlier boot.
pub fn teardown(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<Vec<String>> {
    let _lock = lock(host)?;
    let inv = discover::discover(host);
    let mut done = Vec::new();
    if let Some(dm) = &inv.dm {
        if let Some(m) = &dm.mount {
            mount::unmount(Path::new(&m.path))?;
            done.push(format!("unmounted {}", m.path));
        }
        let base = backing(&inv).map(|b| host.dev(&b));
        let header = match &base {
            Some(b) => Some(luks::info(b)?.data_offset),
            None => None,
        };
        luks::close()?;
        done.push(format!("closed /dev/mapper/{DM_NAME}"));
        if let (Some(b), Some(len)) = (base, header) {
            luks::erase_header(&b, len)?;
            done.push(format!("erased the LUKS header on {}", b.display()));
        }
    }
    if inv.md.is_some() {
        md::stop(host, MD_NAME)?;
        done.push(format!("stopped /dev/{MD_NAME}"));
    }
    // Headers of earlier boots, on disks nothing holds now.
    let inv = discover::discover(host);
    for c in survey(host, &inv, cfg, probe)? {
        if matches!(c.content, Content::Ephemera { .. }) && !c.busy && c.disk.holders.is_empty() {
            let dev = host.dev(&c.disk.name);
            cmd::run(
                &format!("erasing ephemera's old header on {}", dev.display()),
                "wipefs",
                &["-a".as_ref(), dev.as_os_str()],
            )?;
            done.push(format!("erased ephemera's old header on {}", dev.display()));
        }
    }
    Ok(done)
}

/// Opens a volume from its escrow envelope after the key was lost (a
/// reboot): reassembles the array in the envelope's order, opens it with
/// the decrypted key, mounts it. Never formats anything.
pub fn recover(
    host: &Host,
    cfg: &Config,
    envelope: &Path,
    private_key: &Path,
    mount_at: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(envelope).map_err(|e| {
        Error::Usage(format!(
            "escrow envelope {}: cannot read: {e}",
            envelope.display()
        ))
    })?;
    let env = escrow::parse(&text, envelope)?;
    let sk = escrow::load_private_key(private_key)?;
    let key = escrow::open(&env, &sk)?;
    drop(sk);
    let _lock = lock(host)?;
    let inv = discover::discover(host);
    if inv.dm.is_some() || inv.md.is_some() {
        return Err(Error::Refused(format!(
            "ephemera's devices are already active (/dev/mapper/{DM_NAME} or /dev/{MD_NAME}); \
             nothing to recover in this boot"
        )));
    }
    let mut members = Vec::new();
    for serial in &env.members {
        let d = inv
            .nvme
            .iter()
            .find(|d| &d.serial == serial)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "no NVMe disk has serial {serial:?}, a member in the envelope"
                ))
            })?;
        if !d.mounts.is_empty() || !d.holders.is_empty() || d.swap {
            return Err(Error::Refused(format!(
                "/dev/{} (serial {serial}) is in use",
                d.name
            )));
        }
        members.push(host.dev(&d.name));
    }
    let base: PathBuf = match &env.raid {
        Some(r) => md::build_raid0(host, MD_NAME, &members, r.chunk_kib)?,
        None => members[0].clone(),
    };
    let result = (|| {
        let found = luks::info(&base)?;
        if found.uuid != env.luks_uuid {
            return Err(Error::Refused(format!(
                "{} holds LUKS UUID {}, the envelope is for {}",
                base.display(),
                found.uuid,
                env.luks_uuid
            )));
        }
        luks::open(&base, cfg.luks.discards, cfg.luks.workqueues, &key)?;
        let mapped = host.path("dev/mapper").join(DM_NAME);
        if let Err(e) = mount::mount(&mapped, mount_at, &cfg.mount.options) {
            let _ = luks::close();
            return Err(e);
        }
        tracing::info!("recovered {} at {}", mapped.display(), mount_at.display());
        Ok(())
    })();
    if result.is_err() && env.raid.is_some() {
        let _ = md::stop(host, MD_NAME);
    }
    result
}
