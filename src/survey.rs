//! Looking before touching: what the kernel, the disks and the envelope
//! store hold, gathered once into [`Facts`] for `plan` to decide on. This
//! reads sysfs (`discover`), disk contents (`probe`) and envelope files;
//! it writes nothing.

use crate::config::Config;
use crate::discover::{self, Disk, Inventory, DM_NAME};
use crate::error::Result;
use crate::escrow;
use crate::host::Host;
use crate::plan::{self, Candidate, Facts};
use crate::probe::{classify, Content, Probe};

/// Reads what each disk matching the model holds. Each disk is probed in a
/// thread of its own, so that on an instance with many disks the reads
/// overlap instead of adding up; the result keeps the inventory's order.
pub fn candidates(
    host: &Host,
    inv: &Inventory,
    cfg: &Config,
    probe: &dyn Probe,
) -> Result<Vec<Candidate>> {
    let want = cfg.disks.model.trim();
    let one = |d: &Disk| {
        let dev = host.dev(&d.name);
        Ok(Candidate {
            content: classify(&probe.signatures(&dev)?),
            busy: probe.busy(&dev)?,
            disk: d.clone(),
        })
    };
    std::thread::scope(|s| {
        let probes: Vec<_> = inv
            .nvme
            .iter()
            .filter(|d| d.model.trim() == want)
            .map(|d| s.spawn(move || one(d)))
            .collect();
        probes
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Everything up to the first write: discovery, probing, the open
/// mapping's content, and this node's envelopes for the headers found.
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
        Some(dm) if dm.mount.is_none() => {
            Some(probe.signatures(&host.path("dev/mapper").join(DM_NAME))?)
        }
        _ => None,
    };
    let envelopes = candidates
        .iter()
        .filter_map(|c| match &c.content {
            Content::Ephemera { luks_uuid } => {
                escrow::find_envelope(host, &cfg.escrow.path, luks_uuid)
                    .map(|p| (luks_uuid.clone(), p))
            }
            _ => None,
        })
        .collect();
    Ok(Facts {
        inv,
        candidates,
        mapping,
        envelopes,
    })
}
