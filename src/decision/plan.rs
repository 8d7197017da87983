//! The plan: what `provision` will do, decided from what the survey found,
//! with no I/O. `ephemera plan` prints it; `commands::provision` applies it.
//!
//! The decision has two halves. First the volume's state
//! ([`super::state::Volume`]): what ephemera's own devices, headers and
//! records are in when it starts. Each state has one action, written next to
//! it and in the lifecycle table ([`super::lifecycle`], rendered in the
//! README); a new state is a compile error in [`plan`] until it has one.
//! Then, when a new volume is to be made, which disks it goes on.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, FsType, OnExisting};
use crate::error::{Error, Result};
use crate::host::discover::{Disk, DM_NAME, MD_NAME};
use crate::host::probe::Content;
pub use crate::volume::bind::BindPlan;
pub use crate::volume::luks::LuksPlan;
pub use crate::volume::mount::MkfsPlan;

pub use super::describe::kept_message;
pub use super::state::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Plan {
    /// The volume is already mounted where the config says: change nothing.
    /// The binds are made again where one is missing (never stacked).
    AlreadyProvisioned {
        device: String,
        mount: String,
        binds: Vec<BindPlan>,
    },
    /// The volume is open but not mounted: mount it again, then its binds.
    Remount {
        device: String,
        mount: MountPlan,
        binds: Vec<BindPlan>,
    },
    /// A volume of an earlier boot that this node bound to its TPM or tang
    /// servers, all its members here: ask the pins for its key, then
    /// reassemble, open, mount and bind it again. If they do not give it,
    /// keep it (exit 5).
    Unlock {
        volume: Earlier,
        sealed: PathBuf,
        mount: MountPlan,
        binds: Vec<BindPlan>,
    },
    /// A readable volume from an earlier boot: leave it as it is, exit 5.
    Keep {
        volumes: Vec<Earlier>,
        incomplete: Vec<Incomplete>,
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
    /// What of ephemera's the new volume replaces, and why that may go.
    pub over: Option<Over>,
    /// ephemera's own devices left by an unfinished run in this boot:
    /// closed or stopped before anything else.
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
    /// `[unlock]`: bind the key to the TPM and tang servers.
    pub unlock: Option<UnlockPlan>,
    /// Node directories bound from the volume once it is mounted.
    pub binds: Vec<BindPlan>,
    /// Where this node keeps its record of the new volume (its envelope,
    /// unlock file and markers): the escrow directory's `escrow.path`, when
    /// `[escrow]` or `[unlock]` is configured. The one field that both
    /// marks the volume never mounted before its record is written and
    /// clears that mark after its first mount.
    pub record: Option<PathBuf>,
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
pub struct MountPlan {
    pub path: PathBuf,
    pub options: String,
    /// The filesystem to mount: the config's for a new volume, what blkid
    /// found on the mapping for one that is open already.
    pub fstype: FsType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnlockPlan {
    pub pins: crate::config::unlock::Unlock,
    /// Beside the envelopes: the unlock file is named from it.
    pub escrow_path: PathBuf,
    /// IMDS (`events.endpoint`): who the instance is, for the kms pin.
    pub imds: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscrowPlan {
    /// The recipients' public keys, in order.
    pub public_keys: Vec<PathBuf>,
    /// How many of them recover the key together.
    pub threshold: u32,
    pub path: PathBuf,
    pub console: bool,
    /// `[escrow.store]`: the envelope is also put in this bucket.
    pub store: Option<crate::config::store::Store>,
}

/// ext4's block size under `-T largefile4`.
const FS_BLOCK: u32 = 4096;

/// What a new volume is made over, and why that may go. One per plan: a
/// run has one volume state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Over {
    /// This boot's run stopped before mkfs: the open mapping holds no file
    /// system, so it never held data.
    Unfinished { luks_uuid: String },
    /// An earlier boot's volume that was never mounted (a run was cut short
    /// between its record and its first mount): it holds no data.
    NeverMounted { volumes: String },
    /// An earlier boot's volume this node keeps no record of (or none that
    /// opens it): its key is gone, so its data is.
    Unreadable { volumes: String },
    /// An earlier boot's volume that this node could still read (`kept`),
    /// erased because `on_existing = "reformat"`.
    Reformat { volumes: String, kept: Vec<PathBuf> },
}

/// One volume of an earlier boot, with an unlock file, all its members
/// here, and mounted once (so it may hold data): the pins may give its key.
/// `on_existing` does not matter: unlocking writes nothing over it.
fn unlockable(volumes: &[Earlier]) -> bool {
    matches!(volumes, [v] if v.sealed.is_some() && v.missing.is_empty() && !v.never_mounted)
}

/// The earlier volumes, named for messages: their disks and LUKS UUIDs.
fn named(volumes: &[Earlier], incomplete: &[Incomplete]) -> String {
    volumes
        .iter()
        .map(|e| format!("/dev/{} (LUKS UUID {})", e.disk, e.luks_uuid))
        .chain(incomplete.iter().map(|v| {
            format!(
                "{} (LUKS UUID {}, its header's disk missing)",
                v.present
                    .iter()
                    .map(|(d, _)| format!("/dev/{d}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                v.luks_uuid
            )
        }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to do with volumes from an earlier boot: `Ok(None)` keeps them,
/// `Ok(Some(over))` goes on to make a new volume over them.
fn earlier_action(
    volumes: &[Earlier],
    incomplete: &[Incomplete],
    on_existing: OnExisting,
) -> Result<Option<Over>> {
    let volumes_named = named(volumes, incomplete);
    // An incomplete volume has an envelope or unlock file by construction:
    // readable once its header's disk is back.
    let readable: Vec<PathBuf> = volumes
        .iter()
        .filter(|e| e.readable())
        .filter_map(|e| e.envelope.as_ref().or(e.sealed.as_ref()))
        .chain(incomplete.iter().map(|v| &v.envelope))
        .cloned()
        .collect();
    let never_mounted = volumes.iter().any(|e| e.never_mounted);
    Ok(Some(match on_existing {
        OnExisting::Fail => {
            return Err(Error::Refused(format!(
                "ephemera's volume from an earlier boot is on {volumes_named} and on_existing = \"fail\""
            )))
        }
        OnExisting::Keep if !readable.is_empty() => return Ok(None),
        _ if readable.is_empty() && never_mounted => Over::NeverMounted {
            volumes: volumes_named,
        },
        OnExisting::Reformat if !readable.is_empty() => Over::Reformat {
            volumes: volumes_named,
            kept: readable,
        },
        OnExisting::Keep | OnExisting::Reformat => Over::Unreadable {
            volumes: volumes_named,
        },
    }))
}

impl Over {
    /// The warning `provision` logs and `plan` prints before the steps.
    pub fn warning(&self) -> String {
        match self {
            Over::Unfinished { .. } => format!(
                "/dev/mapper/{DM_NAME} is open with no file system: a run of this boot stopped \
                 before mkfs, so it holds no data; closing it and starting over"
            ),
            Over::NeverMounted { volumes } => format!(
                "an earlier ephemera volume on {volumes} was never mounted (a run was cut short \
                 between its escrow envelope and its first mount), so it holds no data; making a new one"
            ),
            Over::Unreadable { volumes } => format!(
                "an earlier ephemera volume on {volumes} is unreadable (its key is gone and this node \
                 keeps no escrow envelope or unlock file that opens it); making a new one"
            ),
            Over::Reformat { volumes, kept } => format!(
                "an earlier ephemera volume on {volumes} could still be read with what this node keeps \
                 for it ({}), but on_existing = \"reformat\": erasing it and making a new one (the envelope \
                 is kept)",
                kept.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The plan for the volume's state (the lifecycle table's "provision
/// does"), then, when a new volume is to be made, its disks and steps.
pub fn plan(f: &Facts, cfg: &Config, force: bool) -> Result<Plan> {
    let found_fs = f
        .mapping
        .iter()
        .flatten()
        .find_map(|s| FsType::from_blkid(&s.kind));
    let mount = MountPlan {
        path: cfg.mount.path.clone(),
        options: cfg.mount.options.clone(),
        fstype: found_fs.unwrap_or(cfg.filesystem.fstype),
    };
    let binds = crate::volume::bind::plans(&cfg.bind, &cfg.mount.path);
    let over = match volume(f, cfg) {
        Volume::Absent => None,
        Volume::Mounted { device, mount } => {
            return Ok(Plan::AlreadyProvisioned {
                device,
                mount,
                binds,
            })
        }
        Volume::MountedElsewhere { device, mount } => {
            return Err(Error::Refused(format!(
                "ephemera's volume {device} is already mounted at {mount}, not at mount.path {}; \
                 unmount it first (ephemera then mounts it at mount.path), or run \
                 `ephemera teardown --yes` to destroy it",
                cfg.mount.path.display()
            )))
        }
        Volume::Unmounted { device, .. } => {
            return Ok(Plan::Remount {
                device,
                mount,
                binds,
            })
        }
        Volume::Unfinished { luks_uuid, .. } => Some(Over::Unfinished { luks_uuid }),
        Volume::Earlier {
            volumes,
            incomplete,
        } if cfg.unlock.enabled() && incomplete.is_empty() && unlockable(&volumes) => {
            let volume = volumes.into_iter().next().expect("one volume");
            let sealed = volume.sealed.clone().expect("an unlock file");
            return Ok(Plan::Unlock {
                volume,
                sealed,
                mount,
                binds,
            });
        }
        Volume::Earlier {
            volumes,
            incomplete,
        } => match earlier_action(&volumes, &incomplete, cfg.on_existing)? {
            None => {
                return Ok(Plan::Keep {
                    volumes,
                    incomplete,
                })
            }
            over => over,
        },
    };
    let chosen = members(f, over.as_ref(), force)?;
    if chosen.members.is_empty() && cfg.disks.min_disks == 0 {
        return Ok(Plan::NothingToDo {
            reason: format!(
                "no usable disk with model {:?} and disks.min_disks = 0",
                cfg.disks.model
            ),
        });
    }
    check_members(f, cfg, &chosen)?;
    Ok(Plan::Provision(Box::new(new_volume(
        f, cfg, over, chosen, mount, binds,
    ))))
}

/// The disks a new volume goes on, and what is done to them first.
struct Chosen {
    excluded: Vec<Excluded>,
    /// In array order.
    members: Vec<Disk>,
    /// Members whose old signatures are erased first.
    wipe: Vec<String>,
    warnings: Vec<String>,
}

/// Every candidate not in use, in the inventory's order. Someone else's
/// data on one refuses the whole run, unless `force`.
fn members(f: &Facts, over: Option<&Over>, force: bool) -> Result<Chosen> {
    // The header of an unfinished run's mapping is erased with the others.
    let unfinished_uuid = match over {
        Some(Over::Unfinished { luks_uuid }) => Some(luks_uuid.as_str()),
        _ => None,
    };
    let excluded = excluded(&f.inv, &f.candidates);
    let mut chosen = Chosen {
        excluded,
        members: Vec::new(),
        wipe: Vec::new(),
        warnings: Vec::new(),
    };
    let mut foreign = Vec::new();
    for c in &f.candidates {
        if chosen.excluded.iter().any(|e| e.device == c.disk.name) {
            continue;
        }
        match &c.content {
            Content::Blank => {}
            Content::Ephemera { luks_uuid } => {
                if unfinished_uuid.is_some_and(|u| !same_uuid(u, luks_uuid)) {
                    // An unfinished run's mapping is open and another
                    // header is on disk: decide on that one first.
                    return Err(Error::Refused(format!(
                        "/dev/{} holds ephemera's volume {luks_uuid} while an unfinished one is \
                         open; run `ephemera teardown --yes` or reboot",
                        c.disk.name
                    )));
                }
                chosen.wipe.push(c.disk.name.clone());
            }
            Content::Foreign { found } => {
                foreign.push(format!("/dev/{} holds {}", c.disk.name, found.join(", ")));
                chosen.wipe.push(c.disk.name.clone());
            }
        }
        chosen.members.push(c.disk.clone());
    }
    if foreign.is_empty() {
        Ok(chosen)
    } else if force {
        chosen.warnings.extend(
            foreign
                .iter()
                .map(|f| format!("{f}: overwriting it because of --force")),
        );
        Ok(chosen)
    } else {
        Err(Error::Refused(format!(
            "refusing to write any disk: {}; that data is not ephemera's \
             (erase it yourself, or run with --force to overwrite it)",
            foreign.join("; ")
        )))
    }
}

/// Refuses members that cannot make the volume the config asks for: too
/// few, of unequal size, or too small for xfs.
fn check_members(f: &Facts, cfg: &Config, chosen: &Chosen) -> Result<()> {
    let members = &chosen.members;
    let min = cfg.disks.min_disks as usize;
    if members.len() < min {
        let seen: Vec<String> = f
            .candidates
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
        for e in &chosen.excluded {
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
    let n = members.len() as u32;
    let bytes: u64 = members.iter().map(|m| m.size_bytes).sum();
    if cfg.filesystem.fstype == FsType::Xfs && crate::volume::mount::xfs_too_small(bytes, n > 1) {
        return Err(Error::Refused(format!(
            "refusing to make xfs on {n} disk(s) of {bytes} bytes in all: mkfs.xfs needs at least 300 MiB on one disk and more than 512 MiB on an array; use larger disks, or filesystem.type = \"ext4\""
        )));
    }
    Ok(())
}

/// The steps of a new volume on the chosen disks, from the config.
fn new_volume(
    f: &Facts,
    cfg: &Config,
    over: Option<Over>,
    chosen: Chosen,
    mount: MountPlan,
    binds: Vec<BindPlan>,
) -> ProvisionPlan {
    let n = chosen.members.len() as u32;
    let bytes = chosen.members.iter().map(|m| m.size_bytes).sum();
    let raid = (n > 1).then(|| RaidPlan {
        name: MD_NAME.to_string(),
        chunk_kib: cfg.raid.chunk_kib,
    });
    let stride = raid.as_ref().map(|r| {
        let stride = (r.chunk_kib * 1024 / FS_BLOCK).max(1);
        (stride, stride * n)
    });
    let spec = &cfg.luks.cipher;
    let escrow = (!cfg.escrow.keys().is_empty()).then(|| EscrowPlan {
        public_keys: cfg.escrow.keys(),
        threshold: cfg.escrow.threshold,
        path: cfg.escrow.path.clone(),
        console: cfg.escrow.console,
        store: cfg.escrow.store.clone(),
    });
    let unlock = cfg.unlock.enabled().then(|| UnlockPlan {
        pins: cfg.unlock.clone(),
        escrow_path: cfg.escrow.path.clone(),
        imds: cfg.events.endpoint.clone(),
    });
    ProvisionPlan {
        excluded: chosen.excluded,
        over,
        cleanup: Cleanup {
            close_dm: f.inv.dm.is_some(),
            stop_md: f.inv.md.is_some(),
        },
        members: chosen.members,
        wipe: chosen.wipe,
        raid,
        luks: LuksPlan {
            cipher: spec.cipher.clone(),
            mode: spec.mode.clone(),
            key_bits: cfg.luks.key_bits,
            sector_size: cfg.luks.sector_size,
            discards: cfg.luks.discards,
            workqueues: cfg.luks.workqueues,
        },
        mkfs: MkfsPlan {
            fstype: cfg.filesystem.fstype,
            label: cfg.filesystem.label.clone(),
            stride,
            bytes,
        },
        mount,
        record: (escrow.is_some() || unlock.is_some()).then(|| cfg.escrow.path.clone()),
        escrow,
        unlock,
        binds,
        warnings: chosen.warnings,
    }
}
