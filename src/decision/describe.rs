//! The plan in words: `ephemera plan`'s output, and the message of a kept
//! volume on the console and in the journal.

use crate::config::FsType;
use crate::host::discover::{DM_NAME, MD_NAME};

use super::plan::{BindPlan, EscrowPlan, MkfsPlan, Plan, ProvisionPlan};
use super::state::{Earlier, Incomplete};

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
        if let Some(o) = &p.over {
            s += &format!("warning: {}\n", o.warning());
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
            s += &describe_escrow(e);
        }
        s += "forget the key\n";
        s += &describe_mkfs(&p.mkfs);
        s += &format!(
            "mount it at {} with {}\n",
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

/// The escrow step: to whom, where, and the store.
fn describe_escrow(e: &EscrowPlan) -> String {
    let keys = || {
        e.public_keys
            .iter()
            .map(|k| k.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "escrow the key to {} in {} (and a copy named by the LUKS UUID){}\n",
        match (e.public_keys.as_slice(), e.threshold) {
            ([one], _) => one.display().to_string(),
            (_, 1) => format!("any one of {}", keys()),
            (_, t) => format!("any {t} of {} (Shamir shares)", keys()),
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
    s
}

/// The mkfs step: the filesystem, its label, its stripe geometry, and
/// what changes at large sizes.
fn describe_mkfs(m: &MkfsPlan) -> String {
    let mut s = format!("make {} labelled {:?}", m.fstype.name(), m.label);
    match (m.stride, m.fstype) {
        (Some((stride, width)), FsType::Ext4) => {
            s += &format!(" (stride {stride}, stripe_width {width})")
        }
        (Some((stride, width)), FsType::Xfs) => {
            let (su, sw) = crate::volume::mount::xfs_stripe(stride, width);
            s += &format!(" (su {su}k, sw {sw})")
        }
        (None, _) => {}
    }
    match m.fstype {
        FsType::Ext4 if crate::volume::mount::ext4_bigalloc(m.bytes) => {
            s += &format!(
                " with {} KiB clusters",
                crate::volume::mount::EXT4_CLUSTER_KIB
            )
        }
        FsType::Xfs if crate::volume::mount::xfs_log_capped(m.bytes) => {
            s += &format!(" with a {} MiB log", crate::volume::mount::XFS_LOG_MIB)
        }
        _ => {}
    }
    s + "\n"
}
