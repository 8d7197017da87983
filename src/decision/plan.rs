//! The plan: what `provision` will do, decided from what the survey found,
//! with no I/O. `ephemera plan` prints it; `commands::provision` applies it.
//!
//! The decision has two halves. First the volume's state ([`Volume`]): what
//! ephemera's own devices and headers are in when it starts. Each state has
//! one action, written next to it and in the README's lifecycle table; a new
//! state is a compile error in [`plan`] until it has one. Then, when a new
//! volume is to be made, which disks it goes on.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, FsType, OnExisting};
use crate::error::{Error, Result};
use crate::host::discover::{Disk, Inventory, DM_NAME, MD_NAME};
use crate::host::probe::{Content, Signature};
use crate::keys::escrow;
pub use crate::volume::bind::BindPlan;
pub use crate::volume::luks::LuksPlan;
pub use crate::volume::mount::MkfsPlan;

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

/// Everything the plan is decided from, gathered by `survey` before any
/// write: the kernel's devices, the candidate disks, what the open mapping
/// holds, and which escrow envelopes this node keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub inv: Inventory,
    pub candidates: Vec<Candidate>,
    /// libblkid's signatures on `/dev/mapper/ephemera`, read when it is open
    /// and not mounted.
    pub mapping: Option<Vec<Signature>>,
    /// Every escrow envelope this node keeps, newest first.
    pub envelopes: Vec<escrow::OnNode>,
    /// Every unlock file (`keys::unlock`) this node keeps, newest first.
    pub sealed: Vec<escrow::OnNode>,
}

impl Facts {
    pub fn envelope(&self, luks_uuid: &str) -> Option<&escrow::OnNode> {
        self.envelopes.iter().find(|e| e.luks_uuid == luks_uuid)
    }
    pub fn unlock_file(&self, luks_uuid: &str) -> Option<&escrow::OnNode> {
        self.sealed.iter().find(|e| e.luks_uuid == luks_uuid)
    }
    /// What this node keeps for each volume: its envelope, else its unlock
    /// file (either can read it), newest first.
    fn kept_files(&self) -> Vec<&escrow::OnNode> {
        let mut all: Vec<&escrow::OnNode> = self.envelopes.iter().collect();
        all.extend(
            self.sealed
                .iter()
                .filter(|s| self.envelope(&s.luks_uuid).is_none()),
        );
        all.sort_by(|a, b| b.created.cmp(&a.created));
        all
    }
}

/// An ephemera header on a disk, not open: left by an earlier boot, or by
/// a run of this boot that stopped before it opened the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Earlier {
    pub luks_uuid: String,
    /// The disk that holds the header (the array's first member).
    pub disk: String,
    pub serial: String,
    /// This node's escrow envelope for it: with one, the data can be read.
    pub envelope: Option<PathBuf>,
    /// This node's unlock file for it: with one, the TPM or tang servers
    /// may give its key back.
    pub sealed: Option<PathBuf>,
    /// Its envelope is marked never mounted: a run was cut short between
    /// the envelope and the first mount, so the volume holds no data.
    pub never_mounted: bool,
    /// Members its envelope lists that are on no disk now (serials).
    pub missing: Vec<String>,
}

impl Earlier {
    /// Its data can still be read: this node holds its envelope or its
    /// unlock file, and it was mounted (so it may hold data).
    fn readable(&self) -> bool {
        (self.envelope.is_some() || self.sealed.is_some()) && !self.never_mounted
    }
}

/// An escrowed volume of an earlier boot whose header is on no disk, while
/// some of its members are here, blank to libblkid (RAID0 ciphertext): the
/// disk that holds the header (the first member) is missing or late. Its
/// data comes back with that disk, so the members here are not written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incomplete {
    pub luks_uuid: String,
    /// Its envelope, else its unlock file.
    pub envelope: PathBuf,
    /// Members here: (kernel name, serial), in array order.
    pub present: Vec<(String, String)>,
    /// Members on no disk now (serials), in array order; the first member,
    /// which holds the header, is always among them.
    pub missing: Vec<String>,
}

/// The state of ephemera's volume when a run starts. One action each:
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Volume {
    /// No mapping open, no ephemera header on a candidate disk.
    /// Action: make a new volume.
    Absent,
    /// Open and mounted at `mount.path`. Action: nothing.
    Mounted { device: String, mount: String },
    /// Open and mounted somewhere else. Action: refuse (exit 3).
    MountedElsewhere { device: String, mount: String },
    /// Open, not mounted, and holding a file system: its key is in the
    /// kernel, so its data is readable. Action: mount it again; never close
    /// it. (An `umount` then a re-run; a soft-reboot.)
    Unmounted { device: String, found: String },
    /// Open, not mounted, with no file system: a run of this boot stopped
    /// between opening and mkfs, so it was never mounted and holds no data.
    /// Action: close it, erase its header and make a new volume.
    Unfinished { device: String, luks_uuid: String },
    /// Headers on disk, not open, or an escrowed volume whose header's disk
    /// is missing while other members are here (`incomplete`). Action: by
    /// `on_existing` and whether an envelope can still open them (see
    /// [`earlier_action`]).
    Earlier {
        volumes: Vec<Earlier>,
        incomplete: Vec<Incomplete>,
    },
}

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

/// Why a disk that matched the model is left alone, if it is.
pub fn exclusion(c: &Candidate, ours: &[String]) -> Option<String> {
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

fn same_uuid(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.replace('-', "").to_ascii_lowercase();
    strip(a) == strip(b)
}

/// The volume's state, read from the facts. Pure.
pub fn volume(f: &Facts, cfg: &Config) -> Volume {
    let mount_path = cfg.mount.path.to_string_lossy();
    if let Some(dm) = &f.inv.dm {
        let device = dm.kname.clone();
        return match (dm.mount(), &f.mapping) {
            (Some(m), _) if m.path == mount_path => Volume::Mounted {
                device,
                mount: m.path.clone(),
            },
            (Some(m), _) => Volume::MountedElsewhere {
                device,
                mount: m.path.clone(),
            },
            (None, Some(sigs)) if !sigs.is_empty() => Volume::Unmounted {
                device,
                found: sigs
                    .iter()
                    .map(Signature::describe)
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            (None, _) => Volume::Unfinished {
                device,
                luks_uuid: dm.luks_uuid_hex(),
            },
        };
    }
    let present = |serial: &str| f.candidates.iter().find(|c| c.disk.serial == serial);
    let missing = |members: &[String]| -> Vec<String> {
        members
            .iter()
            .filter(|m| present(m).is_none())
            .cloned()
            .collect()
    };
    let earlier: Vec<Earlier> = f
        .candidates
        .iter()
        .filter_map(|c| match &c.content {
            Content::Ephemera { luks_uuid } => {
                let env = f.envelope(luks_uuid);
                let sealed = f.unlock_file(luks_uuid);
                let kept = env.or(sealed);
                Some(Earlier {
                    luks_uuid: luks_uuid.clone(),
                    disk: c.disk.name.clone(),
                    serial: c.disk.serial.clone(),
                    envelope: env.map(|e| e.path.clone()),
                    sealed: sealed.map(|e| e.path.clone()),
                    never_mounted: kept.is_some_and(|e| e.never_mounted),
                    missing: kept.map(|e| missing(&e.members)).unwrap_or_default(),
                })
            }
            _ => None,
        })
        .collect();
    let kept = f.kept_files();
    let incomplete: Vec<Incomplete> = kept
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.never_mounted && !e.discarded)
        .filter(|(_, e)| {
            !earlier
                .iter()
                .any(|v| same_uuid(&v.luks_uuid, &e.luks_uuid))
        })
        .filter_map(|(i, e)| {
            let here: Vec<&Candidate> = e.members.iter().filter_map(|m| present(m)).collect();
            let gone = missing(&e.members);
            // The header's disk here without the header, or all here: it
            // was erased on purpose (discard, teardown). None here: a stop
            // and start gave new disks.
            if here.is_empty() || gone.first() != e.members.first() {
                return None;
            }
            // Its members must still hold only its ciphertext: blank, and
            // named by no newer envelope (a later volume reused the disk).
            let newer = &kept[..i];
            let reused = here.iter().any(|c| {
                c.content != Content::Blank
                    || newer
                        .iter()
                        .any(|n| n.created > e.created && n.members.contains(&c.disk.serial))
            });
            (!reused).then(|| Incomplete {
                luks_uuid: e.luks_uuid.clone(),
                envelope: e.path.clone(),
                present: here
                    .iter()
                    .map(|c| (c.disk.name.clone(), c.disk.serial.clone()))
                    .collect(),
                missing: gone,
            })
        })
        .collect();
    if earlier.is_empty() && incomplete.is_empty() {
        Volume::Absent
    } else {
        Volume::Earlier {
            volumes: earlier,
            incomplete,
        }
    }
}

/// One volume of an earlier boot, with an unlock file, all its members
/// here, and mounted once (so it may hold data): the pins may give its key.
/// `on_existing` does not matter: unlocking writes nothing over it.
fn unlockable(volumes: &[Earlier]) -> bool {
    matches!(volumes, [v] if v.sealed.is_some() && v.missing.is_empty() && !v.never_mounted)
}

/// What to do with volumes from an earlier boot: `Ok(None)` keeps them,
/// `Ok(Some(warning))` goes on to make a new volume over them.
fn earlier_action(
    volumes: &[Earlier],
    incomplete: &[Incomplete],
    on_existing: OnExisting,
) -> Result<Option<String>> {
    let named: Vec<String> = volumes
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
        .collect();
    let named = named.join(", ");
    // An incomplete volume has an envelope or unlock file by construction:
    // readable once its header's disk is back.
    let readable: Vec<&PathBuf> = volumes
        .iter()
        .filter(|e| e.readable())
        .filter_map(|e| e.envelope.as_ref().or(e.sealed.as_ref()))
        .chain(incomplete.iter().map(|v| &v.envelope))
        .collect();
    let never_mounted = volumes.iter().any(|e| e.never_mounted);
    match on_existing {
        OnExisting::Fail => Err(Error::Refused(format!(
            "ephemera's volume from an earlier boot is on {named} and on_existing = \"fail\""
        ))),
        OnExisting::Keep if !readable.is_empty() => Ok(None),
        _ if readable.is_empty() && never_mounted => Ok(Some(format!(
            "an earlier ephemera volume on {named} was never mounted (a run was cut short \
             between its escrow envelope and its first mount), so it holds no data; making a new one"
        ))),
        OnExisting::Keep => Ok(Some(format!(
            "an earlier ephemera volume on {named} is unreadable (its key is gone and this node \
             holds no escrow envelope for it); making a new one"
        ))),
        OnExisting::Reformat if !readable.is_empty() => Ok(Some(format!(
            "an earlier ephemera volume on {named} could still be read with what this node keeps \
             for it ({}), but on_existing = \"reformat\": erasing it and making a new one (the envelope \
             is kept)",
            readable
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        OnExisting::Reformat => Ok(Some(format!(
            "an earlier ephemera volume on {named} is unreadable (its key is gone); making a new one"
        ))),
    }
}

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
    let mut warnings = Vec::new();
    // The header of an unfinished run's mapping is erased with the others.
    let mut unfinished_uuid = None;
    match volume(f, cfg) {
        Volume::Absent => {}
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
                 `ephemera teardown` to destroy it",
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
        Volume::Unfinished { luks_uuid, .. } => unfinished_uuid = Some(luks_uuid),
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
            Some(w) => warnings.push(w),
        },
    }

    let excluded = excluded(&f.inv, &f.candidates);
    let mut members = Vec::new();
    let mut wipe = Vec::new();
    let mut foreign = Vec::new();
    for c in &f.candidates {
        if excluded.iter().any(|e| e.device == c.disk.name) {
            continue;
        }
        match &c.content {
            Content::Blank => {}
            Content::Ephemera { luks_uuid } => {
                if unfinished_uuid
                    .as_deref()
                    .is_some_and(|u| !same_uuid(u, luks_uuid))
                {
                    // An unfinished run's mapping is open and another
                    // header is on disk: decide on that one first.
                    return Err(Error::Refused(format!(
                        "/dev/{} holds ephemera's volume {luks_uuid} while an unfinished one is \
                         open; run `ephemera teardown` or reboot",
                        c.disk.name
                    )));
                }
                wipe.push(c.disk.name.clone());
            }
            Content::Foreign { found } => {
                foreign.push(format!("/dev/{} holds {}", c.disk.name, found.join(", ")));
                wipe.push(c.disk.name.clone());
            }
        }
        members.push(c.disk.clone());
    }
    if unfinished_uuid.is_some() {
        warnings.push(format!(
            "/dev/mapper/{DM_NAME} is open with no file system: a run of this boot stopped before \
             mkfs, so it holds no data; closing it and starting over"
        ));
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

    let n = members.len() as u32;
    let bytes = members.iter().map(|m| m.size_bytes).sum();
    if cfg.filesystem.fstype == FsType::Xfs && crate::volume::mount::xfs_too_small(bytes, n > 1) {
        return Err(Error::Refused(format!(
            "refusing to make xfs on {n} disk(s) of {bytes} bytes in all: mkfs.xfs needs at least 300 MiB on one disk and more than 512 MiB on an array; use larger disks, or filesystem.type = \"ext4\""
        )));
    }
    let raid = (n > 1).then(|| RaidPlan {
        name: MD_NAME.to_string(),
        chunk_kib: cfg.raid.chunk_kib,
    });
    let stride = raid.as_ref().map(|r| {
        let stride = (r.chunk_kib * 1024 / FS_BLOCK).max(1);
        (stride, stride * n)
    });
    let spec = &cfg.luks.cipher;
    Ok(Plan::Provision(Box::new(ProvisionPlan {
        excluded,
        cleanup: Cleanup {
            close_dm: f.inv.dm.is_some(),
            stop_md: f.inv.md.is_some(),
        },
        members,
        wipe,
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
        escrow: (!cfg.escrow.keys().is_empty()).then(|| EscrowPlan {
            public_keys: cfg.escrow.keys(),
            threshold: cfg.escrow.threshold,
            path: cfg.escrow.path.clone(),
            console: cfg.escrow.console,
            store: cfg.escrow.store.clone(),
        }),
        unlock: cfg.unlock.enabled().then(|| UnlockPlan {
            pins: cfg.unlock.clone(),
            escrow_path: cfg.escrow.path.clone(),
            imds: cfg.events.endpoint.clone(),
        }),
        binds,
        warnings,
    })))
}

/// The message of a kept volume: which volume, that it can be recovered,
/// and the one command that discards it. On the console and in the journal.
pub fn kept_message(volumes: &[Earlier], incomplete: &[Incomplete]) -> String {
    let mut s = String::from("kept the encrypted volume of an earlier boot, untouched:");
    let discard = |uuid: &str| {
        format!("; to discard it and make a new volume: `ephemera discard --luks-uuid {uuid}`")
    };
    for e in volumes {
        s += &format!(
            " LUKS UUID {} on /dev/{} (serial {})",
            e.luks_uuid, e.disk, e.serial
        );
        match &e.envelope {
            Some(p) if e.readable() => {
                s += &format!(
                    "; its data can be read with the escrow private key: \
                     `ephemera recover --private-key KEY.pem` (envelope {}) opens and mounts it here",
                    p.display()
                )
            }
            Some(_) => s += " (never mounted: it holds no data)",
            None if e.sealed.is_none() => s += " (no escrow envelope on this node)",
            None => {}
        }
        if let (Some(p), true) = (&e.sealed, e.readable()) {
            s += &format!(
                "; it is bound to this instance's pins (unlock file {}): `ephemera unlock` asks \
                 them again (with [unlock] in the config)",
                p.display()
            );
        }
        if !e.missing.is_empty() {
            s += &format!(
                "; its members with serials {} are missing: recover needs them back",
                e.missing.join(", ")
            );
        }
        s += &discard(&e.luks_uuid);
    }
    for v in incomplete {
        let here: Vec<String> = v
            .present
            .iter()
            .map(|(d, serial)| format!("/dev/{d} (serial {serial})"))
            .collect();
        let unlock_file = v
            .envelope
            .to_string_lossy()
            .ends_with(crate::keys::unlock::UNLOCK);
        s += &format!(
            " LUKS UUID {} ({} {}): the disk that holds its header (serial {}) is missing{}; \
             its members here, {}, are left as they are; once every member is back (a late NVMe \
             controller, a reboot), {} opens and mounts it",
            v.luks_uuid,
            if unlock_file {
                "unlock file"
            } else {
                "envelope"
            },
            v.envelope.display(),
            v.missing[0],
            match &v.missing[1..] {
                [] => String::new(),
                more => format!(", and so are the members with serials {}", more.join(", ")),
            },
            here.join(", "),
            if unlock_file {
                "`ephemera unlock`"
            } else {
                "`ephemera recover --private-key KEY.pem`"
            }
        );
        s += &discard(&v.luks_uuid);
    }
    s
}

impl Plan {
    /// The plan in words, one step a line, for `ephemera plan`.
    pub fn describe(&self) -> String {
        match self {
            Plan::AlreadyProvisioned {
                device,
                mount,
                binds,
            } if binds.is_empty() => {
                format!("already provisioned: {device} is mounted at {mount}; nothing to do\n")
            }
            Plan::AlreadyProvisioned {
                device,
                mount,
                binds,
            } => format!(
                "already provisioned: {device} is mounted at {mount}\n{}",
                describe_binds(binds, "bind again where missing:")
            ),
            Plan::Remount {
                device,
                mount,
                binds,
            } => format!(
                "{device} (/dev/mapper/{DM_NAME}) is open but not mounted: its key is still in the kernel\n\
                 mount it again at {} with {}\n{}",
                mount.path.display(),
                mount.options,
                describe_binds(binds, "bind again where missing:")
            ),
            Plan::Keep {
                volumes,
                incomplete,
            } => format!("{}\n", kept_message(volumes, incomplete)),
            Plan::Unlock {
                volume,
                sealed,
                mount,
                binds,
            } => format!(
                "unlock LUKS UUID {} on /dev/{} with its unlock file {} (its pins give the key; \
                 if they do not, keep it)\nreassemble it, open it, mount it at {}\n{}",
                volume.luks_uuid,
                volume.disk,
                sealed.display(),
                mount.path.display(),
                describe_binds(binds, "bind again:")
            ),
            Plan::NothingToDo { reason } => format!("nothing to do: {reason}\n"),
            Plan::Provision(p) => p.describe(),
        }
    }
}

impl ProvisionPlan {
    fn describe(&self) -> String {
        let p = self;
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
            "open it as /dev/mapper/{DM_NAME} (discards {}, workqueues {})\n",
            on_off(p.luks.discards),
            on_off(p.luks.workqueues)
        );
        if let Some(u) = &p.unlock {
            s += &format!(
                "bind the key with clevis to {} of {} (threshold of tpm2 and tang pins) in {}\n",
                u.pins.threshold,
                u.pins.pins(),
                crate::keys::unlock::path_for(&u.escrow_path, "<LUKS UUID>").display()
            );
        }
        if let Some(e) = &p.escrow {
            s += &format!(
                "escrow the key to {} in {} (and a copy named by the LUKS UUID){}\n",
                match (e.public_keys.as_slice(), e.threshold) {
                    ([one], _) => one.display().to_string(),
                    (keys, 1) => format!(
                        "any one of {}",
                        keys.iter()
                            .map(|k| k.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    (keys, t) => format!(
                        "any {t} of {} (Shamir shares)",
                        keys.iter()
                            .map(|k| k.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
                e.path.display(),
                if e.console {
                    " and on /dev/console"
                } else {
                    ""
                }
            );
            if let Some(st) = &e.store {
                s += &format!(
                    "put the envelope in s3://{}/{}<instance id>/<LUKS UUID>.json at {} (once, never overwritten; at most {} s)\n",
                    st.bucket, st.prefix, st.url, st.timeout_secs
                );
            }
        }
        s += &format!(
            "forget the key\nmake {} labelled {:?}",
            p.mkfs.fstype.name(),
            p.mkfs.label
        );
        match (p.mkfs.stride, p.mkfs.fstype) {
            (Some((stride, width)), FsType::Ext4) => {
                s += &format!(" (stride {stride}, stripe_width {width})")
            }
            (Some((stride, width)), FsType::Xfs) => {
                let (su, sw) = crate::volume::mount::xfs_stripe(stride, width);
                s += &format!(" (su {su}k, sw {sw})")
            }
            (None, _) => {}
        }
        match p.mkfs.fstype {
            FsType::Ext4 if crate::volume::mount::ext4_bigalloc(p.mkfs.bytes) => {
                s += &format!(
                    " with {} KiB clusters",
                    crate::volume::mount::EXT4_CLUSTER_KIB
                )
            }
            FsType::Xfs if crate::volume::mount::xfs_log_capped(p.mkfs.bytes) => {
                s += &format!(" with a {} MiB log", crate::volume::mount::XFS_LOG_MIB)
            }
            _ => {}
        }
        s += &format!(
            "\nmount it at {} with {}\n",
            p.mount.path.display(),
            p.mount.options
        );
        s += &describe_binds(
            &p.binds,
            "bind, after copying what the node directory holds onto the volume:",
        );
        s
    }
}

/// One line per bind, or nothing.
fn describe_binds(binds: &[BindPlan], what: &str) -> String {
    let mut s = String::new();
    for b in binds {
        s += &format!(
            "{what} {} on {} (shared)\n",
            b.source.display(),
            b.target.display()
        );
    }
    s
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
