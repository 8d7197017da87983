//! The volume's state: what ephemera's own devices, headers and records
//! are in when a run starts, read from the [`Facts`] the survey gathered.
//! Pure: no I/O. Each state has one action ([`super::plan`]); the lifecycle
//! table ([`super::lifecycle`]) says, for each, what happens to the data.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::host::discover::{Disk, DmVolume, Inventory, MD_NAME};
use crate::host::probe::{Content, Signature};
use crate::keys::escrow;

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
    pub fn readable(&self) -> bool {
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

/// Two LUKS UUIDs are the same volume, dashed or not, in any case.
pub fn same_uuid(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.replace('-', "").to_ascii_lowercase();
    strip(a) == strip(b)
}

/// The volume's state, read from the facts. Pure.
pub fn volume(f: &Facts, cfg: &Config) -> Volume {
    if let Some(dm) = &f.inv.dm {
        return open_volume(dm, f.mapping.as_deref(), cfg);
    }
    let earlier = earlier_volumes(f);
    let incomplete = incomplete_volumes(f, &earlier);
    if earlier.is_empty() && incomplete.is_empty() {
        Volume::Absent
    } else {
        Volume::Earlier {
            volumes: earlier,
            incomplete,
        }
    }
}

/// The state of ephemera's open mapping: where it is mounted, or what the
/// mapping holds when it is not (`mapping`: libblkid's signatures on it).
fn open_volume(dm: &DmVolume, mapping: Option<&[Signature]>, cfg: &Config) -> Volume {
    let mount_path = cfg.mount.path.to_string_lossy();
    let device = dm.kname.clone();
    match (dm.mount(), mapping) {
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
    }
}

impl Facts {
    fn present(&self, serial: &str) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.disk.serial == serial)
    }

    /// The serials of `members` that are on no disk now.
    fn missing(&self, members: &[String]) -> Vec<String> {
        members
            .iter()
            .filter(|m| self.present(m).is_none())
            .cloned()
            .collect()
    }
}

/// ephemera's headers on the candidate disks, with what this node keeps
/// for each.
fn earlier_volumes(f: &Facts) -> Vec<Earlier> {
    f.candidates
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
                    missing: kept.map(|e| f.missing(&e.members)).unwrap_or_default(),
                })
            }
            _ => None,
        })
        .collect()
}

/// Volumes this node keeps a record of (an envelope or an unlock file),
/// mounted once and not discarded, whose header is on no disk while some
/// of their members are here, blank: the header's disk is missing or late.
fn incomplete_volumes(f: &Facts, earlier: &[Earlier]) -> Vec<Incomplete> {
    let kept = f.kept_files();
    kept.iter()
        .enumerate()
        .filter(|(_, e)| !e.never_mounted && !e.discarded)
        .filter(|(_, e)| {
            !earlier
                .iter()
                .any(|v| same_uuid(&v.luks_uuid, &e.luks_uuid))
        })
        .filter_map(|(i, e)| {
            let here: Vec<&Candidate> = e.members.iter().filter_map(|m| f.present(m)).collect();
            let gone = f.missing(&e.members);
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
        .collect()
}
