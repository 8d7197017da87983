//! `provision`: discover, probe, plan, then apply the plan step by step,
//! rolling back what this run made if a step fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::config::Config;
use crate::discover::{self, Disk, Inventory, DM_NAME, MD_NAME};
use crate::error::{Error, Result};
use crate::escrow;
use crate::host::Host;
use crate::key::VolumeKey;
use crate::plan::{self, Candidate, Plan, ProvisionPlan};
use crate::probe::{classify, Probe};
use crate::{cmd, luks, md, modules, mount};

/// What `provision` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created { luks_uuid: String, device: PathBuf },
    AlreadyProvisioned,
    NothingToDo,
}

/// How long `provision` waits for the NVMe driver to finish probing.
const NVME_WAIT: Duration = Duration::from_secs(30);

/// How long a second `provision` waits for the first to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Holds `/run/ephemera.lock` so that two runs never interleave. Waits for
/// the other run to release it, bounded by `LOCK_WAIT`.
pub fn lock(host: &Host) -> Result<Flock<File>> {
    let path = host.path("run/ephemera.lock");
    let start = Instant::now();
    let wait = LOCK_WAIT;
    #[cfg(feature = "failpoints")]
    let wait = crate::failpoint::lock_wait(wait);
    let mut warned = false;
    loop {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("opening the lock", &path))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if start.elapsed() > wait {
                    return Err(Error::Busy(format!(
                        "another ephemera run held {} for {} s; giving up",
                        path.display(),
                        wait.as_secs()
                    )));
                }
                if !warned {
                    tracing::info!(
                        "another ephemera run holds {}; waiting for it",
                        path.display()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => return Err(Error::Failed(format!("locking {}: {e}", path.display()))),
        }
    }
}

/// Reads what each disk matching the model holds. Each disk is probed in a
/// thread of its own, so that on an instance with many disks the reads
/// overlap instead of adding up; the result keeps the inventory's order.
pub fn survey(
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

/// Discovery, probing and planning: everything up to the first write.
pub fn make_plan(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    force: bool,
) -> Result<(Inventory, Plan)> {
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
    let candidates = survey(host, &inv, cfg, probe)?;
    for c in &candidates {
        tracing::debug!(device = %c.disk.name, serial = %c.disk.serial, content = ?c.content, busy = c.busy, "candidate");
    }
    for e in plan::excluded(&inv, &candidates) {
        tracing::warn!(device = %e.device, "skipping /dev/{}: {}", e.device, e.reason);
    }
    let p = plan::plan(&inv, &candidates, cfg, force)?;
    Ok((inv, p))
}

/// Logs one finished step with its duration.
fn step<T>(name: &str, device: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    tracing::info!(step = name, device = %device.display(), ms = start.elapsed().as_millis() as u64, "done");
    Ok(out)
}

/// What this run has made so far, so a failure can undo it.
#[derive(Default)]
struct Made {
    md: bool,
    luks_on: Option<PathBuf>,
    dm: bool,
    mounted: Option<PathBuf>,
}

impl Made {
    fn rollback(&self, host: &Host) {
        if let Some(p) = &self.mounted {
            report_rollback("unmount", mount::unmount(p));
        }
        if self.dm {
            report_rollback("close", luks::close());
        }
        if let Some(dev) = &self.luks_on {
            // Our header, just written: erase it so the disks look as they did.
            report_rollback(
                "erase header",
                luks::info(dev).and_then(|i| luks::erase_header(dev, i.data_offset)),
            );
        }
        if self.md {
            report_rollback("stop array", md::stop(host, MD_NAME));
        }
    }
}

fn report_rollback(what: &str, r: Result<()>) {
    match r {
        Ok(()) => tracing::info!("rollback: {what}: done"),
        Err(e) => tracing::error!("rollback: {what}: {e}"),
    }
}

/// The instance id where the platform gives one (EC2 Nitro puts it in the
/// DMI board asset tag), else the hostname.
pub fn host_name(host: &Host) -> String {
    host.attr(&host.path("sys/devices/virtual/dmi/id/board_asset_tag"))
        .filter(|t| t.starts_with("i-"))
        .or_else(|| host.attr(&host.path("proc/sys/kernel/hostname")))
        .unwrap_or_else(|| "unknown".into())
}

pub fn provision(host: &Host, cfg: &Config, probe: &dyn Probe, force: bool) -> Result<Outcome> {
    // Every input is checked before the first write.
    let escrow_key = match &cfg.escrow.public_key {
        Some(p) => Some(escrow::load_public_key(p)?),
        None => None,
    };
    let spec = crate::config::CipherSpec::parse(&cfg.luks.cipher).map_err(Error::Usage)?;
    crate::cipher::check(&spec, cfg.luks.key_bits)?;
    let _lock = lock(host)?;
    crate::failpoint!("after-lock");
    let pending = discover::wait_for_nvme(host, NVME_WAIT);
    if !pending.is_empty() {
        tracing::warn!(
            "NVMe controllers still not ready after {} s, going on without them: {}",
            NVME_WAIT.as_secs(),
            pending.join("; ")
        );
    }
    let (inv, p) = make_plan(host, cfg, probe, force)?;
    let p = match p {
        Plan::AlreadyProvisioned { device, mount } => {
            tracing::info!("{device} is already mounted at {mount}; nothing to do");
            return Ok(Outcome::AlreadyProvisioned);
        }
        Plan::NothingToDo { reason } => {
            tracing::info!("nothing to do: {reason}");
            return Ok(Outcome::NothingToDo);
        }
        Plan::Provision(p) => p,
    };
    for w in &p.warnings {
        tracing::warn!("{w}");
    }
    let mut mods = vec!["dm_mod", "dm_crypt"];
    if p.raid.is_some() {
        mods.extend(["md_mod", "raid0"]);
    }
    modules::ensure(host, &mods)?;
    cleanup(host, &inv, &p)?;

    let mut made = Made::default();
    let result = apply(host, &p, escrow_key.as_ref(), &mut made);
    if let Err(e) = &result {
        tracing::error!("provisioning failed: {e}; rolling back what this run made");
        made.rollback(host);
    }
    result
}

/// Closes and stops what an unfinished run of this boot left behind.
fn cleanup(host: &Host, inv: &Inventory, p: &ProvisionPlan) -> Result<()> {
    if p.cleanup.close_dm {
        if let Some(dm) = &inv.dm {
            step("close leftover mapping", &host.dev(&dm.kname), luks::close)?;
        }
    }
    if p.cleanup.stop_md {
        step("stop leftover array", &host.dev(MD_NAME), || {
            md::stop(host, MD_NAME)
        })?;
    }
    Ok(())
}

fn apply(
    host: &Host,
    p: &ProvisionPlan,
    escrow_key: Option<&rsa::RsaPublicKey>,
    made: &mut Made,
) -> Result<Outcome> {
    let members: Vec<PathBuf> = p.members.iter().map(|m| host.dev(&m.name)).collect();
    for name in &p.wipe {
        let dev = host.dev(name);
        step("erase old signatures", &dev, || {
            cmd::run(
                &format!("erasing old signatures on {}", dev.display()),
                "wipefs",
                &["-a".as_ref(), dev.as_os_str()],
            )
            .map(drop)
        })?;
    }
    crate::failpoint!("after-wipe");
    let base = match &p.raid {
        Some(r) => {
            let dev = step("build RAID0", &host.dev(&r.name), || {
                md::build_raid0(host, &r.name, &members, r.chunk_kib)
            })?;
            made.md = true;
            crate::failpoint!("after-md-build");
            dev
        }
        None => members[0].clone(),
    };

    let key = VolumeKey::generate(p.luks.key_bits)?;
    made.luks_on = Some(base.clone());
    let header = step("format LUKS2", &base, || luks::format(&base, &p.luks, &key))?;
    let uuid = header.uuid.clone();
    crate::failpoint!("after-luks-format");
    let mapped = host.path("dev/mapper").join(DM_NAME);
    step("open LUKS2", &mapped, || {
        header.open(p.luks.discards, p.luks.workqueues, &key)
    })?;
    made.dm = true;
    crate::failpoint!("after-luks-open");

    if let (Some(e), Some(pk)) = (&p.escrow, escrow_key) {
        let env = escrow::seal(
            &key,
            pk,
            escrow::Header {
                host: host_name(host),
                luks_uuid: uuid.clone(),
                cipher: format!("{}-{}", p.luks.cipher, p.luks.mode),
                sector_size: p.luks.sector_size,
                members: p.members.iter().map(|m| m.serial.clone()).collect(),
                raid: p.raid.as_ref().map(|r| escrow::RaidInfo {
                    level: 0,
                    chunk_kib: r.chunk_kib,
                }),
            },
        )?;
        step("write escrow envelope", &e.path, || {
            escrow::write(&env, &e.path)
        })?;
        crate::failpoint!("after-escrow-write");
        if e.console {
            write_console(host, &escrow::console_text(&env)?);
        }
    }
    drop(key);
    tracing::info!("volume key forgotten: it is only in the kernel now");

    step("make ext4", &mapped, || mount::mkfs(&mapped, &p.mkfs))?;
    crate::failpoint!("after-mkfs");
    step("mount", &p.mount.path, || {
        mount::mount(&mapped, &p.mount.path, &p.mount.options)
    })?;
    made.mounted = Some(p.mount.path.clone());
    crate::failpoint!("after-mount");
    tracing::info!(luks_uuid = %uuid, "provisioned {} at {}", mapped.display(), p.mount.path.display());
    Ok(Outcome::Created {
        luks_uuid: uuid,
        device: mapped,
    })
}

/// Best effort: a console that cannot be written is logged, not fatal, as
/// the envelope is in its file already.
fn write_console(host: &Host, text: &str) {
    use std::io::Write;
    let path = host.dev("console");
    let r = File::options()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = r {
        tracing::warn!(
            "could not print the escrow envelope on {}: {e}",
            path.display()
        );
    }
}
