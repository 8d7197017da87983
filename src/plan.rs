//! The plan: what `provision` will do, computed from what discovery and
//! probing found, with no I/O. `ephemera plan` prints it; `apply` runs it.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{CipherSpec, Config, OnExisting};
use crate::discover::{Disk, Inventory, MD_NAME};
use crate::error::{Error, Result};
use crate::probe::Content;

/// A disk that matched the model, with what probing found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub disk: Disk,
    pub content: Content,
    /// An exclusive open failed: something holds the disk.
    pub busy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub device: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Plan {
    /// The volume is already mounted where the config says: change nothing.
    AlreadyProvisioned {
        device: String,
        mount: String,
    },
    /// No usable disk and `min_disks = 0`.
    NothingToDo {
        reason: String,
    },
    Provision(Box<ProvisionPlan>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvisionPlan {
    /// Disks that matched but are left alone, and why.
    pub excluded: Vec<Excluded>,
    /// ephemera's own devices left by an earlier, unfinished run in this
    /// boot: closed or stopped before anything else.
    pub cleanup: Cleanup,
    /// Members in array order.
    pub members: Vec<Disk>,
    /// Members whose old signatures (ephemera's own, or foreign under
    /// `--force`) are erased before the array is made.
    pub wipe: Vec<String>,
    /// `None` for a single disk: LUKS goes on the disk itself.
    pub raid: Option<RaidPlan>,
    pub luks: LuksPlan,
    pub mkfs: MkfsPlan,
    pub mount: MountPlan,
    pub escrow: Option<EscrowPlan>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    pub close_dm: bool,
    pub stop_md: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaidPlan {
    pub name: String,
    pub chunk_kib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LuksPlan {
    pub cipher: String,
    pub mode: String,
    pub key_bits: u32,
    pub sector_size: u32,
    pub discards: bool,
    pub workqueues: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MkfsPlan {
    pub label: String,
    /// ext4 `stride` and `stripe_width`, in 4 KiB blocks, for an array.
    pub stride: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountPlan {
    pub path: PathBuf,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscrowPlan {
    pub public_key: PathBuf,
    pub path: PathBuf,
    pub console: bool,
}

/// ext4's block size under `-T largefile4`.
const FS_BLOCK: u32 = 4096;

/// Why a disk that matched the model is left alone, if it is.
fn exclusion(c: &Candidate, ours: &[String]) -> Option<String> {
    let d = &c.disk;
    let foreign_holders: Vec<&String> = d.holders.iter().filter(|h| !ours.contains(h)).collect();
    if d.read_only {
        Some("it is read-only".into())
    } else if !d.mounts.is_empty() {
        Some(format!("it is mounted at {}", d.mounts.join(", ")))
    } else if d.swap {
        Some("it is active swap".into())
    } else if !foreign_holders.is_empty() {
        let h: Vec<&str> = foreign_holders.iter().map(|s| s.as_str()).collect();
        Some(format!("it is held by {}", h.join(", ")))
    } else if c.busy && d.holders.is_empty() {
        Some("another program holds it open exclusively".into())
    } else if d.size_bytes == 0 {
        Some("it has no capacity".into())
    } else {
        None
    }
}

/// The disks that matched the model but are in use, with the reason.
pub fn excluded(inv: &Inventory, candidates: &[Candidate]) -> Vec<Excluded> {
    // Our own stack from an unfinished run in this boot may hold disks.
    let mut ours: Vec<String> = Vec::new();
    if inv.md.is_some() {
        ours.push(MD_NAME.to_string());
    }
    if let Some(dm) = &inv.dm {
        ours.push(dm.kname.clone());
    }
    candidates
        .iter()
        .filter_map(|c| {
            exclusion(c, &ours).map(|reason| Excluded {
                device: c.disk.name.clone(),
                reason,
            })
        })
        .collect()
}

pub fn plan(inv: &Inventory, candidates: &[Candidate], cfg: &Config, force: bool) -> Result<Plan> {
    let mount_path = cfg.mount.path.to_string_lossy().into_owned();
    if let Some(dm) = &inv.dm {
        match &dm.mount {
            Some(m) if m.path == mount_path => {
                return Ok(Plan::AlreadyProvisioned {
                    device: dm.kname.clone(),
                    mount: m.path.clone(),
                })
            }
            Some(m) => {
                return Err(Error::Refused(format!(
                "ephemera's volume {} is already mounted at {}, not at mount.path {mount_path}; \
                     run `ephemera teardown` first to make a new one",
                dm.kname, m.path
            )))
            }
            None => {}
        }
    }

    let excluded = excluded(inv, candidates);
    let mut warnings = Vec::new();
    let mut members = Vec::new();
    let mut wipe = Vec::new();
    let mut foreign = Vec::new();
    let mut existing = Vec::new();
    for c in candidates {
        if excluded.iter().any(|e| e.device == c.disk.name) {
            continue;
        }
        match &c.content {
            Content::Blank => {}
            Content::Ephemera { luks_uuid } => {
                existing.push(format!("/dev/{} (LUKS UUID {luks_uuid})", c.disk.name));
                wipe.push(c.disk.name.clone());
            }
            Content::Foreign { found } => {
                foreign.push(format!("/dev/{} holds {}", c.disk.name, found.join(", ")));
                wipe.push(c.disk.name.clone());
            }
        }
        members.push(c.disk.clone());
    }

    if !foreign.is_empty() {
        if force {
            warnings.extend(
                foreign
                    .iter()
                    .map(|f| format!("{f}: overwriting it because of --force")),
            );
        } else {
            return Err(Error::Refused(format!(
                "refusing to write any disk: {}; that data is not ephemera's \
                 (erase it yourself, or run with --force to overwrite it)",
                foreign.join("; ")
            )));
        }
    }
    if !existing.is_empty() {
        match cfg.on_existing {
            OnExisting::Fail => {
                return Err(Error::Refused(format!(
                    "ephemera's volume from an earlier boot is on {} and on_existing = \"fail\"",
                    existing.join(", ")
                )))
            }
            OnExisting::Reformat => warnings.push(format!(
                "an earlier ephemera volume on {} is unreadable (its key is gone); making a new one",
                existing.join(", ")
            )),
        }
    }

    let min = cfg.disks.min_disks as usize;
    if members.is_empty() && min == 0 {
        return Ok(Plan::NothingToDo {
            reason: format!(
                "no usable disk with model {:?} and disks.min_disks = 0",
                cfg.disks.model
            ),
        });
    }
    if members.len() < min {
        let seen: Vec<String> = candidates
            .iter()
            .map(|c| format!("/dev/{}", c.disk.name))
            .collect();
        let mut msg = format!(
            "found {} usable disk(s) with model {:?}, disks.min_disks is {min}",
            members.len(),
            cfg.disks.model
        );
        if !seen.is_empty() {
            msg += &format!(" (matched: {})", seen.join(", "));
        }
        for e in &excluded {
            msg += &format!("; /dev/{} skipped: {}", e.device, e.reason);
        }
        return Err(Error::Refused(msg));
    }
    if members
        .iter()
        .any(|m| m.size_bytes != members[0].size_bytes)
    {
        let sizes: Vec<String> = members
            .iter()
            .map(|m| format!("/dev/{} {} bytes", m.name, m.size_bytes))
            .collect();
        return Err(Error::Refused(format!(
            "refusing to stripe disks of unequal size ({}): md RAID0 would need a multi-zone layout",
            sizes.join(", ")
        )));
    }

    let spec = CipherSpec::parse(&cfg.luks.cipher).map_err(Error::Usage)?;
    let n = members.len() as u32;
    let raid = (n > 1).then(|| RaidPlan {
        name: MD_NAME.to_string(),
        chunk_kib: cfg.raid.chunk_kib,
    });
    let stride = raid.as_ref().map(|r| {
        let stride = (r.chunk_kib * 1024 / FS_BLOCK).max(1);
        (stride, stride * n)
    });
    Ok(Plan::Provision(Box::new(ProvisionPlan {
        excluded,
        cleanup: Cleanup {
            close_dm: inv.dm.is_some(),
            stop_md: inv.md.is_some(),
        },
        members,
        wipe,
        raid,
        luks: LuksPlan {
            cipher: spec.cipher,
            mode: spec.mode,
            key_bits: cfg.luks.key_bits,
            sector_size: cfg.luks.sector_size,
            discards: cfg.luks.discards,
            workqueues: cfg.luks.workqueues,
        },
        mkfs: MkfsPlan {
            label: cfg.filesystem.label.clone(),
            stride,
        },
        mount: MountPlan {
            path: cfg.mount.path.clone(),
            options: cfg.mount.options.clone(),
        },
        escrow: cfg.escrow.public_key.as_ref().map(|k| EscrowPlan {
            public_key: k.clone(),
            path: cfg.escrow.path.clone(),
            console: cfg.escrow.console,
        }),
        warnings,
    })))
}

impl Plan {
    /// The plan in words, one step a line, for `ephemera plan`.
    pub fn describe(&self) -> String {
        match self {
            Plan::AlreadyProvisioned { device, mount } => {
                format!("already provisioned: {device} is mounted at {mount}; nothing to do\n")
            }
            Plan::NothingToDo { reason } => format!("nothing to do: {reason}\n"),
            Plan::Provision(p) => {
                let mut s = String::new();
                for e in &p.excluded {
                    s += &format!("skip /dev/{}: {}\n", e.device, e.reason);
                }
                for w in &p.warnings {
                    s += &format!("warning: {w}\n");
                }
                if p.cleanup.close_dm {
                    s += "close the ephemera mapping left by an unfinished run\n";
                }
                if p.cleanup.stop_md {
                    s += &format!("stop /dev/{MD_NAME} left by an unfinished run\n");
                }
                for w in &p.wipe {
                    s += &format!("erase the old signatures on /dev/{w}\n");
                }
                let names: Vec<String> = p
                    .members
                    .iter()
                    .map(|m| format!("/dev/{} ({}, {} bytes)", m.name, m.serial, m.size_bytes))
                    .collect();
                let target = match &p.raid {
                    Some(r) => {
                        s += &format!(
                            "build RAID0 /dev/{} over {} with a {} KiB chunk, no superblock\n",
                            r.name,
                            names.join(", "),
                            r.chunk_kib
                        );
                        format!("/dev/{}", r.name)
                    }
                    None => {
                        s += &format!("use the single disk {}\n", names.join(""));
                        format!("/dev/{}", p.members[0].name)
                    }
                };
                s += &format!(
                    "format LUKS2 on {target}: {}-{}, {}-bit random key, {}-byte sectors, no keyslots\n",
                    p.luks.cipher, p.luks.mode, p.luks.key_bits, p.luks.sector_size
                );
                s += &format!(
                    "open it as /dev/mapper/{} (discards {}, workqueues {})\n",
                    crate::discover::DM_NAME,
                    on_off(p.luks.discards),
                    on_off(p.luks.workqueues)
                );
                if let Some(e) = &p.escrow {
                    s += &format!(
                        "escrow the key to {} in {}{}\n",
                        e.public_key.display(),
                        e.path.display(),
                        if e.console {
                            " and on /dev/console"
                        } else {
                            ""
                        }
                    );
                }
                s += &format!("forget the key\nmake ext4 labelled {:?}", p.mkfs.label);
                if let Some((stride, width)) = p.mkfs.stride {
                    s += &format!(" (stride {stride}, stripe_width {width})");
                }
                s += &format!(
                    "\nmount it at {} with {}\n",
                    p.mount.path.display(),
                    p.mount.options
                );
                s
            }
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
