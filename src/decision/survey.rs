//! Looking before touching: what the kernel, the disks and the envelope
//! store hold, gathered once into [`Facts`] for `plan` to decide on. This
//! reads sysfs (`discover`), disk contents (`probe`) and envelope files;
//! it writes nothing.

use crate::config::Config;
use crate::decision::plan::{self, Candidate, Facts};
use crate::error::Result;
use crate::host::discover::{self, Disk, Inventory, DM_NAME};
use crate::host::probe::{classify, Probe};
use crate::host::Host;
use crate::keys::{escrow, unlock};

/// Reads what each disk matching the model holds, in the inventory's
/// order. A plain loop: each disk costs a few KiB of reads and one open,
/// and an instance has at most 24 of them.
pub fn candidates(
    host: &Host,
    inv: &Inventory,
    cfg: &Config,
    probe: &dyn Probe,
) -> Result<Vec<Candidate>> {
    let want = cfg.disks.model.trim();
    inv.nvme
        .iter()
        .filter(|d| d.model.trim() == want)
        .map(|d| candidate(host, d, probe))
        .collect()
}

/// What one disk holds, and whether something holds it open.
pub fn candidate(host: &Host, d: &Disk, probe: &dyn Probe) -> Result<Candidate> {
    let dev = host.dev(&d.name);
    Ok(Candidate {
        content: classify(&probe.signatures(&dev)?),
        busy: probe.busy(&dev)?,
        disk: d.clone(),
    })
}

/// Everything up to the first write: discovery, probing, the open
/// mapping's content, and the escrow envelopes and unlock files this node
/// keeps.
pub fn survey(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<Facts> {
    let inv = discover::discover(host);
    for d in inv
        .nvme
        .iter()
        .filter(|d| d.model.trim() != cfg.disks.model.trim())
    {
        tracing::info!(
            "ignoring /dev/{} (serial {}): its model {:?} is not disks.model {:?}",
            d.name,
            d.serial,
            d.model.trim(),
            cfg.disks.model.trim()
        );
    }
    let candidates = candidates(host, &inv, cfg, probe)?;
    for c in &candidates {
        tracing::debug!(device = %c.disk.name, serial = %c.disk.serial, content = ?c.content, busy = c.busy, "candidate");
    }
    for e in plan::excluded(&inv, &candidates) {
        tracing::warn!(device = %e.device, "skipping /dev/{}: {}", e.device, e.reason);
    }
    let mapping = match &inv.dm {
        Some(dm) if dm.mount().is_none() => {
            Some(probe.signatures(&host.path("dev/mapper").join(DM_NAME))?)
        }
        _ => None,
    };
    let envelopes = escrow::on_node(host, &cfg.escrow.path);
    let sealed = unlock::on_node(host, &cfg.escrow.path);
    Ok(Facts {
        inv,
        candidates,
        mapping,
        envelopes,
        sealed,
    })
}

/// What the kernel and this node's records say, without reading or opening
/// a disk: every disk of the model taken as blank and not busy. For the
/// events watcher, whose sandbox has no disks (`PrivateDevices=yes`), to ask
/// what a reboot does ([`super::reboot::reboot`]): that reads the members'
/// content from the kernel's view of the open volume, not from the disks.
pub fn kernel_and_records(host: &Host, cfg: &Config, inv: Inventory) -> Facts {
    let want = cfg.disks.model.trim();
    let candidates = inv
        .nvme
        .iter()
        .filter(|d| d.model.trim() == want)
        .map(|d| Candidate {
            disk: d.clone(),
            content: crate::host::probe::Content::Blank,
            busy: false,
        })
        .collect();
    Facts {
        candidates,
        mapping: None,
        envelopes: escrow::on_node(host, &cfg.escrow.path),
        sealed: unlock::on_node(host, &cfg.escrow.path),
        inv,
    }
}
