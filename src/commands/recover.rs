//! `recover`: opens a volume from its escrow envelope after the key was
//! lost (a reboot): reassembles the array in the envelope's order, opens it
//! with the decrypted key, mounts it. Never formats anything.
//!
//! On the node (systemd runs ephemera.service), it then starts
//! ephemera.service again, which finds the volume mounted, arms the guard
//! and lets the services that require it start, as at boot. Elsewhere (a
//! rescue system, the test initramfs) it only mounts, where it is told.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::decision::plan::{self, Volume};
use crate::decision::survey::survey;
use crate::error::{Error, Result};
use crate::host::discover::{self, DM_NAME, MD_NAME};
use crate::host::lock::lock;
use crate::host::modules;
use crate::host::probe::{Content, Probe};
use crate::host::Host;
use crate::keys::escrow;
use crate::keys::key::VolumeKey;
use crate::volume::luks;
use crate::volume::md;
use crate::volume::mount;

/// This node's envelope for the one volume of an earlier boot on the disks.
fn envelope_on_node(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<PathBuf> {
    let facts = survey(host, cfg, probe)?;
    let (volumes, incomplete) = match plan::volume(&facts, cfg) {
        Volume::Earlier {
            volumes,
            incomplete,
        } => (volumes, incomplete),
        _ => {
            return Err(Error::Refused(format!(
                "no volume of an earlier boot is on the disks with model {:?} (see `ephemera status`); \
                 give the envelope with --escrow FILE",
                cfg.disks.model
            )))
        }
    };
    // A volume whose header's disk is missing is named too: recovering it
    // then says which member is not there.
    let with: Vec<PathBuf> = volumes
        .into_iter()
        .filter_map(|e| e.envelope)
        .chain(incomplete.into_iter().map(|v| v.envelope))
        .collect();
    match with.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Usage(format!(
            "this node holds no escrow envelope for the volume on the disks (looked for {} and \
             its copies by LUKS UUID); give it with --escrow FILE",
            cfg.escrow.path.display()
        ))),
        _ => Err(Error::Usage(
            "several volumes of earlier boots have envelopes here; choose one with --escrow FILE"
                .into(),
        )),
    }
}

/// On the node, ephemera.service mounts the volume at the `mount.path` of
/// its own config (`unit_cfg`) once `recover` starts it again; a recovery
/// mounted anywhere else would leave the unit failed (`mounted_elsewhere`)
/// and the node unguarded. Refused before anything happens.
pub fn check_mount_for_unit(cfg: &Config, unit_cfg: &Config) -> Result<()> {
    if cfg.mount.path == unit_cfg.mount.path {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "recover would mount at {}, but on this node ephemera.service mounts the volume at \
         mount.path {} (from {}); recover there (drop --mount), or recover off the node",
        cfg.mount.path.display(),
        unit_cfg.mount.path.display(),
        crate::config::DEFAULT_CONFIG_PATH
    )))
}

pub fn recover(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    envelope: Option<&Path>,
    private_keys: &[PathBuf],
) -> Result<()> {
    let on_node = super::on_node(host);
    if on_node {
        let unit_cfg = Config::load(Path::new(crate::config::DEFAULT_CONFIG_PATH), false)?;
        check_mount_for_unit(cfg, &unit_cfg)?;
    }
    let envelope = match envelope {
        Some(p) => p.to_path_buf(),
        None => host.abs(&envelope_on_node(host, cfg, probe)?),
    };
    let text = std::fs::read_to_string(&envelope).map_err(|e| {
        Error::Usage(format!(
            "escrow envelope {}: cannot read: {e}",
            envelope.display()
        ))
    })?;
    let env = escrow::parse(&text, &envelope)?;
    tracing::info!(
        "recovering LUKS UUID {} from {}",
        env.luks_uuid,
        envelope.display()
    );
    {
        let _lock = lock(host)?;
        open_and_mount(
            host,
            cfg,
            probe,
            &Layout::of_envelope(&env),
            || {
                let sks = private_keys
                    .iter()
                    .map(|p| escrow::load_private_key(p))
                    .collect::<Result<Vec<_>>>()?;
                escrow::open(&env, &sks)
            },
            |key| {
                if on_node && cfg.unlock.enabled() {
                    reseal(host, cfg, key, &env);
                }
            },
        )?;
    }
    // The lock is released first: the unit's provision takes it.
    if on_node {
        super::start_unit_and_dependents()?;
    }
    Ok(())
}

/// What recovering a volume needs to know of it, from its envelope or its
/// unlock file (both checked by `escrow::volume_params` when parsed).
pub struct Layout<'a> {
    pub luks_uuid: &'a str,
    /// Member serials in array order; the first holds the LUKS header.
    pub members: &'a [String],
    /// The RAID0 chunk, for several members.
    pub chunk_kib: Option<u32>,
}

impl<'a> Layout<'a> {
    pub fn of_envelope(env: &'a escrow::Envelope) -> Self {
        Layout {
            luks_uuid: &env.luks_uuid,
            members: &env.members,
            chunk_kib: env.raid.as_ref().map(|r| r.chunk_kib),
        }
    }
    pub fn of_sealed(s: &'a crate::keys::unlock::Sealed) -> Self {
        Layout {
            luks_uuid: &s.luks_uuid,
            members: &s.members,
            chunk_kib: s.raid.as_ref().map(|r| r.chunk_kib),
        }
    }
}

/// A recovery on a node with [unlock] binds the key again, to this
/// instance's pins as they are now: after a change that made the old
/// binding fail (a firmware or boot-chain change to the sealed PCRs, a new
/// tang key), the next reboot unlocks again. A failure is logged: the
/// volume is recovered either way.
fn reseal(host: &Host, cfg: &Config, key: &VolumeKey, env: &escrow::Envelope) {
    let h = escrow::Header {
        host: env.host.clone(),
        luks_uuid: env.luks_uuid.clone(),
        cipher: env.cipher.clone(),
        sector_size: env.sector_size,
        members: env.members.clone(),
        raid: env.raid.clone(),
    };
    let reach = crate::node::kms::reach(&cfg.events.endpoint);
    let r = crate::keys::unlock::seal(key, &cfg.unlock, &reach, h)
        .and_then(|s| crate::keys::unlock::store(host, &s, &cfg.escrow.path).map(|()| s.pins));
    match r {
        Ok(pins) => tracing::info!(
            "bound LUKS UUID {} again to {pins}: the next reboot unlocks it",
            env.luks_uuid
        ),
        Err(e) => tracing::error!(
            "recovered, but could not bind LUKS UUID {} to this instance's pins again: {e}",
            env.luks_uuid
        ),
    }
}

/// Checks the members, then asks `key` for the volume key (an escrow
/// private key, or the unlock pins), reassembles the array, opens the volume
/// and mounts it at `mount.path`, then gives the key to `mounted` before
/// it is dropped. Never formats anything; on failure, what it assembled is
/// taken down again. The caller holds the lock.
pub fn open_and_mount(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    env: &Layout,
    key: impl FnOnce() -> Result<VolumeKey>,
    mounted: impl FnOnce(&VolumeKey),
) -> Result<()> {
    let inv = discover::discover(host);
    if inv.dm.is_some() {
        return Err(Error::Refused(format!(
            "/dev/mapper/{DM_NAME} is already open; nothing to recover in this boot"
        )));
    }
    if inv.md.is_some() {
        // An array of ours with nothing open on it: a run of this boot
        // stopped before it opened anything. It keeps no superblock, so
        // stopping it writes nothing.
        md::stop(host, MD_NAME)?;
    }
    let inv = discover::discover(host);
    let members = members_of(host, cfg, probe, &inv, env)?;
    // At boot a kept volume stops provision before it loads any module.
    let mut mods = vec!["dm_mod", "dm_crypt"];
    if env.chunk_kib.is_some() {
        mods.extend(["md_mod", "raid0"]);
    }
    modules::ensure(host, &mods)?;
    let key = key()?;
    let base: PathBuf = match env.chunk_kib {
        Some(chunk_kib) => md::build_raid0(host, MD_NAME, &members, chunk_kib)?,
        None => members[0].clone(),
    };
    let mount_at = &cfg.mount.path;
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
        check_geometry(&base, found.geometry.as_ref(), env)?;
        luks::open(
            &base,
            cfg.luks.discards,
            cfg.luks.workqueues,
            key.as_bytes(),
        )?;
        let mapped = host.path("dev/mapper").join(DM_NAME);
        // The filesystem the volume holds (ext4 or xfs), whatever the
        // config says now; the config's when blkid names neither.
        let fstype = probe
            .signatures(&mapped)
            .ok()
            .into_iter()
            .flatten()
            .find_map(|s| crate::config::FsType::from_blkid(&s.kind))
            .unwrap_or(cfg.filesystem.fstype);
        if let Err(e) = mount::mount(&mapped, mount_at, &cfg.mount.options, fstype) {
            // Nothing was written; the envelope still opens it.
            let _ = luks::close();
            return Err(e);
        }
        tracing::info!("recovered {} at {}", mapped.display(), mount_at.display());
        escrow::mark_mounted(host, &cfg.escrow.path, env.luks_uuid)?;
        mounted(&key);
        Ok(())
    })();
    drop(key);
    if result.is_err() && env.chunk_kib.is_some() {
        let _ = md::stop(host, MD_NAME);
    }
    result
}

/// The geometry the header recorded at format against what the envelope or
/// unlock file says: another member order or chunk would open a wrongly
/// assembled array read-write, though the first member (the LUKS UUID) and
/// the key (its digest) match. Refused before opening; a header written
/// before the geometry was recorded cannot be checked, which is logged.
fn check_geometry(base: &Path, recorded: Option<&luks::Geometry>, env: &Layout) -> Result<()> {
    let Some(g) = recorded else {
        tracing::warn!(
            "the LUKS2 header on {} records no geometry (written by an earlier release): the \
             member order and chunk of the envelope cannot be checked against it",
            base.display()
        );
        return Ok(());
    };
    if g.members == env.members && g.chunk_kib == env.chunk_kib {
        return Ok(());
    }
    let chunk = |c: Option<u32>| c.map_or("no array".into(), |k| format!("a {k} KiB chunk"));
    Err(Error::Refused(format!(
        "the LUKS2 header on {} records members {} with {}, the envelope or unlock file says \
         members {} with {}: refusing to open a wrongly assembled array (nothing was written)",
        base.display(),
        g.members.join(", "),
        chunk(g.chunk_kib),
        env.members.join(", "),
        chunk(env.chunk_kib)
    )))
}

/// The envelope's members, found by serial and checked as provision checks
/// disks: an instance-store disk (`disks.model`), not in use (mounted,
/// swap, held, or open exclusively by another program), holding no
/// signature but, on the first member, ephemera's own header of this very
/// volume. An envelope may come from anywhere, so it names no disk that
/// provision would not have written.
fn members_of(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    inv: &discover::Inventory,
    env: &Layout,
) -> Result<Vec<PathBuf>> {
    let want = cfg.disks.model.trim();
    let mut members = Vec::new();
    for (i, serial) in env.members.iter().enumerate() {
        let d = inv
            .nvme
            .iter()
            .find(|d| &d.serial == serial)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "no NVMe disk has serial {serial:?}, a member in the envelope"
                ))
            })?;
        let name = format!("/dev/{} (serial {serial})", d.name);
        if d.model.trim() != want {
            return Err(Error::Refused(format!(
                "{name} is not an instance-store disk: its model {:?} is not disks.model {want:?}",
                d.model.trim()
            )));
        }
        let dev = host.dev(&d.name);
        let candidate = crate::decision::survey::candidate(host, d, probe)?;
        if let Some(why) = crate::decision::plan::exclusion(&candidate, &[]) {
            return Err(Error::Refused(format!("{name} is in use: {why}")));
        }
        let ours = matches!(&candidate.content,
            Content::Ephemera { luks_uuid } if i == 0 && luks_uuid == env.luks_uuid);
        match &candidate.content {
            Content::Blank if i > 0 => {}
            _ if ours => {}
            Content::Ephemera { luks_uuid } => {
                return Err(Error::Refused(format!(
                "{name} holds ephemera's volume {luks_uuid}, not the envelope's {} as member {i}",
                env.luks_uuid
            )))
            }
            Content::Blank => {
                return Err(Error::Refused(format!(
                    "{name}, the envelope's first member, holds no LUKS header of volume {}",
                    env.luks_uuid
                )))
            }
            Content::Foreign { found } => {
                return Err(Error::Refused(format!(
                    "{name} holds {}: not ephemera's volume {}",
                    found.join(", "),
                    env.luks_uuid
                )))
            }
        }
        members.push(dev);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::probe::Signature;

    /// What libblkid and an exclusive open report, by disk name.
    struct Fake {
        luks: &'static str,
        foreign: &'static str,
        busy: &'static str,
    }

    impl Probe for Fake {
        fn signatures(&self, dev: &Path) -> Result<Vec<Signature>> {
            let name = dev.file_name().unwrap().to_string_lossy();
            let sig = |kind: &str, mark: Option<&str>| Signature {
                kind: kind.into(),
                label: mark.map(Into::into),
                subsystem: mark.map(Into::into),
                uuid: Some("6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d".into()),
            };
            Ok(if name == self.luks {
                vec![sig("crypto_LUKS", Some("ephemera"))]
            } else if name == self.foreign {
                vec![sig("ext4", None)]
            } else {
                vec![]
            })
        }
        fn busy(&self, dev: &Path) -> Result<bool> {
            Ok(dev.file_name().unwrap().to_string_lossy() == self.busy)
        }
    }

    /// The members of a hostile or stale envelope are refused one by one,
    /// naming the disk, before any module, key or ioctl (fixture
    /// earlier-boot-kept: nvme0n1 is the EBS root, nvme1n1 and nvme2n1 the
    /// instance store, serials AWSAAA... and AWSBBB...).
    #[test]
    fn envelope_members_are_checked_as_provision_checks_disks() {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/earlier-boot-kept/root");
        let host = Host::new(&root);
        let inv = discover::discover(&host);
        let text = std::fs::read_to_string(
            root.join("var/lib/ephemera/escrow.6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d.json"),
        )
        .unwrap();
        let env = escrow::parse(&text, Path::new("e.json")).unwrap();
        let cfg = Config::default();
        let ok = Fake {
            luks: "nvme1n1",
            foreign: "",
            busy: "",
        };
        let got = members_of(&host, &cfg, &ok, &inv, &Layout::of_envelope(&env)).unwrap();
        assert_eq!(got, [host.dev("nvme1n1"), host.dev("nvme2n1")]);
        let refused = |env: &escrow::Envelope, probe: &Fake, needle: &str| {
            let e = members_of(&host, &cfg, probe, &inv, &Layout::of_envelope(env)).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_REFUSED, "{e}");
            assert!(e.to_string().contains(needle), "{e} should say {needle:?}");
        };
        // The EBS root volume, named by a hostile envelope.
        let mut ebs = env.clone();
        ebs.members[1] = "vol0a1b2c3d4e5f60718".into();
        refused(
            &ebs,
            &ok,
            "/dev/nvme0n1 (serial vol0a1b2c3d4e5f60718) is not an instance-store disk",
        );
        refused(
            &env,
            &Fake { busy: "nvme2n1", ..ok },
            "/dev/nvme2n1 (serial AWSBBBBBBBBBBBBBBBB) is in use: another program holds it open exclusively",
        );
        refused(
            &env,
            &Fake {
                foreign: "nvme2n1",
                ..ok
            },
            "/dev/nvme2n1 (serial AWSBBBBBBBBBBBBBBBB) holds ext4",
        );
        refused(
            &env,
            &Fake { luks: "", ..ok },
            "the envelope's first member, holds no LUKS header",
        );
        let mut other = env.clone();
        other.luks_uuid = "11111111-2222-3333-4444-555555555555".into();
        refused(&other, &ok, "holds ephemera's volume 6d1c2a8e");
    }

    #[test]
    fn on_the_node_recover_mounts_where_the_unit_does() {
        let at = |p: &str| {
            Config::parse(&format!("[mount]\npath = \"{p}\"\n"), Path::new("t.toml")).unwrap()
        };
        let unit = at("/mnt/ephemeral");
        check_mount_for_unit(&at("/mnt/ephemeral"), &unit).unwrap();
        let e = check_mount_for_unit(&at("/srv/elsewhere"), &unit).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let m = e.to_string();
        assert!(
            m.contains("recover would mount at /srv/elsewhere")
                && m.contains("mount.path /mnt/ephemeral"),
            "{m}"
        );
    }
}
