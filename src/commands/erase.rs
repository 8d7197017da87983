//! Erasing on purpose: `teardown` destroys the volume in use, `discard`
//! a volume of an earlier boot that ops chose not to recover.

use std::path::Path;

use crate::config::Config;
use crate::decision::plan::Volume;
use crate::decision::survey::candidates;
use crate::error::{Error, Result};
use crate::host::cmd;
use crate::host::discover::{self, DM_NAME, MD_NAME};
use crate::host::lock::lock;
use crate::host::probe::{Content, Probe};
use crate::host::Host;
use crate::keys::escrow;
use crate::volume::luks;
use crate::volume::md;
use crate::volume::mount;

use super::status::backing;

fn wipe_signatures(dev: &Path, what: &str) -> Result<()> {
    cmd::run(
        &format!("{what} on {}", dev.display()),
        "wipefs",
        &["-a".as_ref(), dev.as_os_str()],
    )
    .map(drop)
}

/// Unmounts, closes, erases the header (the data is then unreadable for
/// good, escrow or not) and stops the array. With nothing open, erases
/// ephemera's headers left on the disks by an earlier boot.
pub fn teardown(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<Vec<String>> {
    let _lock = lock(host)?;
    let inv = discover::discover(host);
    let mut done = Vec::new();
    if let Some(dm) = &inv.dm {
        // The binds first, wherever they are: they hold the filesystem
        // after its unmount.
        for t in crate::volume::bind::unbind_all(host, &dm.devno)? {
            done.push(format!("unmounted the bind {}", t.display()));
        }
        if let Some(m) = dm.mount() {
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
    for c in candidates(host, &inv, cfg, probe)? {
        if matches!(c.content, Content::Ephemera { .. }) && !c.busy && c.disk.holders.is_empty() {
            let dev = host.dev(&c.disk.name);
            wipe_signatures(&dev, "erasing ephemera's old header")?;
            done.push(format!("erased ephemera's old header on {}", dev.display()));
        }
    }
    Ok(done)
}

/// Erases the header of the earlier boot's volume `luks_uuid`, which must
/// not be open. Its data is then unreadable but with its escrow envelope,
/// which is kept. On the node, ephemera.service then starts again and makes
/// a new volume, and the services that require it start; elsewhere the next
/// `provision` does.
pub fn discard(host: &Host, cfg: &Config, probe: &dyn Probe, luks_uuid: &str) -> Result<()> {
    let done = {
        let _lock = lock(host)?;
        erase_earlier(host, cfg, probe, luks_uuid)?
    };
    tracing::info!("{done}");
    // The lock is released first: the unit's provision takes it.
    if super::on_node(host) {
        super::start_unit_and_dependents()?;
    }
    Ok(())
}

fn erase_earlier(host: &Host, cfg: &Config, probe: &dyn Probe, luks_uuid: &str) -> Result<String> {
    let inv = discover::discover(host);
    if let Some(dm) = &inv.dm {
        return Err(Error::Refused(format!(
            "/dev/mapper/{DM_NAME} ({}) is open: discard only erases a volume of an earlier boot; \
             `ephemera teardown` destroys the open one",
            dm.kname
        )));
    }
    if inv.md.is_some() {
        // Ours, with nothing open on it, from a run of this boot that
        // stopped early; no superblock, so stopping it writes nothing.
        md::stop(host, MD_NAME)?;
    }
    let inv = discover::discover(host);
    let found: Vec<_> = candidates(host, &inv, cfg, probe)?
        .into_iter()
        .filter(|c| matches!(&c.content, Content::Ephemera { luks_uuid: u } if u == luks_uuid))
        .collect();
    if found.is_empty() {
        if let Some(done) = discard_incomplete(host, cfg, probe, luks_uuid)? {
            return Ok(done);
        }
    }
    let [c] = found.as_slice() else {
        return Err(Error::Refused(format!(
            "no disk with model {:?} holds ephemera's volume with LUKS UUID {luks_uuid} \
             (see `ephemera status`)",
            cfg.disks.model
        )));
    };
    if c.busy || !c.disk.holders.is_empty() || !c.disk.mounts.is_empty() {
        return Err(Error::Refused(format!(
            "/dev/{} holds LUKS UUID {luks_uuid} but is in use",
            c.disk.name
        )));
    }
    let dev = host.dev(&c.disk.name);
    wipe_signatures(&dev, &format!("discarding LUKS UUID {luks_uuid}"))?;
    Ok(format!(
        "discarded LUKS UUID {luks_uuid}: erased its header on {}; the next provision makes a new volume",
        dev.display()
    ))
}

/// Discards an escrowed volume whose header's disk is missing: nothing is
/// on the members here but ciphertext, so nothing is erased; a marker
/// beside its envelope records the decision, and the next provision uses
/// the members here for a new volume. `None` when `luks_uuid` is not such
/// a volume.
fn discard_incomplete(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    luks_uuid: &str,
) -> Result<Option<String>> {
    let facts = crate::decision::survey::survey(host, cfg, probe)?;
    let Volume::Earlier { incomplete, .. } = crate::decision::plan::volume(&facts, cfg) else {
        return Ok(None);
    };
    let Some(v) = incomplete.iter().find(|v| v.luks_uuid == luks_uuid) else {
        return Ok(None);
    };
    escrow::set_marker(host, &cfg.escrow.path, luks_uuid, escrow::DISCARDED)?;
    Ok(Some(format!(
        "discarded LUKS UUID {luks_uuid}: the disk that holds its header (serial {}) is missing, \
         so nothing was erased; {} records it, and the next provision makes a new volume",
        v.missing[0],
        escrow::marker(&cfg.escrow.path, luks_uuid, escrow::DISCARDED).display()
    )))
}
