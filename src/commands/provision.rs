//! `provision`: survey, plan, then apply the plan step by step. Each step
//! that makes something pushes its undo on a stack; if a later step fails,
//! the stack is popped in reverse, so the disks look as they did before.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::recover::Layout;
use crate::config::Config;
use crate::decision::plan::{self, Facts, Plan, ProvisionPlan};
use crate::decision::survey::survey;
use crate::error::{Error, Result};
use crate::host::cmd;
use crate::host::discover::{self, DM_NAME, MD_NAME};
use crate::host::lock::lock;
use crate::host::modules;
use crate::host::probe::Probe;
use crate::host::Host;
use crate::keys::escrow;
use crate::keys::key::VolumeKey;
use crate::keys::unlock;
use crate::volume::bind;
use crate::volume::luks;
use crate::volume::md;
use crate::volume::mount;

/// What `provision` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created {
        luks_uuid: String,
        device: PathBuf,
    },
    /// The open volume was mounted again, with its data.
    Remounted,
    /// A volume of an earlier boot was unlocked by its pins and mounted.
    Unlocked,
    AlreadyProvisioned,
    NothingToDo,
}

/// How long `provision` waits for the NVMe driver to finish probing.
pub const NVME_WAIT: Duration = Duration::from_secs(30);

/// The survey and the plan: everything up to the first write.
pub fn make_plan(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    force: bool,
) -> Result<(Facts, Plan)> {
    let facts = survey(host, cfg, probe)?;
    let p = plan::plan(&facts, cfg, force)?;
    Ok((facts, p))
}

/// `ephemera plan`: the survey and the plan, for a person to read. It says
/// it touches nothing, so it never opens a disk exclusively either (an
/// exclusive open, even brief, can make someone else's mount of that disk
/// fail): only sysfs's mounts, holders and swap mark a disk as in use here.
pub fn plan_only(host: &Host, cfg: &Config, probe: &dyn Probe, force: bool) -> Result<Plan> {
    preflight(host, cfg, CipherCheck::Probe)?;
    make_plan(host, cfg, &crate::host::probe::LookOnly(probe), force).map(|(_, p)| p)
}

/// How `preflight` asks about the cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherCheck {
    /// Through the kernel crypto API, as libcryptsetup will (the kernel
    /// may load the cipher's module): `provision` and `plan`.
    Probe,
    /// In the kernel's lists only (`/proc/crypto`, the module lists),
    /// loading nothing: `check`, in an image build.
    Listed,
}

/// Everything `provision` refuses before its first write that needs no
/// disk: the escrow keys, clevis for `[unlock]`, the owners of the
/// envelopes' directory, the cipher. `provision`, `plan` and `check` all
/// call this one function, so that none of them passes what another
/// refuses. Returns the escrow keys.
pub fn preflight(host: &Host, cfg: &Config, cipher: CipherCheck) -> Result<Vec<rsa::RsaPublicKey>> {
    let escrow_keys = escrow::load_public_keys(&cfg.escrow.keys())?;
    if !cfg.unlock.tang.is_empty() {
        cmd::find("clevis").map_err(|_| {
            Error::Usage(
                "config unlock.tang binds a part of the key with clevis, which is not installed \
                 (Debian: apt-get install clevis; the tpm2 and kms pins need no clevis)"
                    .into(),
            )
        })?;
    }
    if !escrow_keys.is_empty() || cfg.unlock.enabled() {
        // An envelope or unlock file goes only below directories root alone
        // can change; refused here, before a disk is touched, not after
        // formatting.
        crate::host::safe_fs::check_existing(&cfg.escrow.path, escrow::HOW.owners)?;
    }
    match cipher {
        CipherCheck::Probe => crate::volume::cipher::check(&cfg.luks.cipher, cfg.luks.key_bits)?,
        CipherCheck::Listed => crate::volume::cipher::check_listed(host, &cfg.luks.cipher)?,
    }
    Ok(escrow_keys)
}

/// Logs one finished step with its duration.
fn step<T>(name: &str, device: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    tracing::info!(step = name, device = %device.display(), ms = start.elapsed().as_millis() as u64, "done");
    Ok(out)
}

/// How to take back one thing this run made.
enum Undo {
    StopArray,
    /// Our header, just written: erase it so the disk looks as it did.
    EraseHeader(PathBuf),
    Close,
    Unmount(PathBuf),
    /// The binds of the volume with this device number: all made by this
    /// run, as the volume is new.
    Unbind(String),
}

/// What this run has made so far, newest last.
#[derive(Default)]
struct Made(Vec<Undo>);

impl Made {
    fn push(&mut self, u: Undo) {
        self.0.push(u);
    }

    /// Undoes everything, newest first.
    fn rollback(self, host: &Host) {
        for u in self.0.into_iter().rev() {
            let (what, r) = match &u {
                Undo::Unmount(p) => ("unmount", mount::unmount(p)),
                Undo::Unbind(devno) => ("unbind", bind::unbind_all(host, devno).map(drop)),
                Undo::Close => ("close", luks::close()),
                Undo::EraseHeader(dev) => (
                    "erase header",
                    luks::info(dev).and_then(|i| luks::erase_header(dev, i.data_offset)),
                ),
                Undo::StopArray => ("stop array", md::stop(host, MD_NAME)),
            };
            match r {
                Ok(()) => tracing::info!("rollback: {what}: done"),
                Err(e) => tracing::error!("rollback: {what}: {e}"),
            }
        }
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
    let escrow_keys = preflight(host, cfg, CipherCheck::Probe)?;
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
    let (facts, p) = make_plan(host, cfg, probe, force)?;
    let p = match p {
        Plan::Provision(p) => p,
        Plan::Unlock {
            volume,
            sealed,
            mount: m,
            binds,
        } => return apply_unlock(host, cfg, probe, &volume, &sealed, &m.path, &binds),
        Plan::AlreadyProvisioned {
            device,
            mount,
            binds,
        } => {
            tracing::info!("{device} is already mounted at {mount}; nothing to do for it");
            return remount(host, cfg, &facts, None, &binds).map(|()| Outcome::AlreadyProvisioned);
        }
        Plan::Remount {
            device,
            mount: m,
            binds,
        } => {
            tracing::info!(
                "{device} (/dev/mapper/{DM_NAME}) is open but not mounted; its key is still in \
                 the kernel: mounting it again"
            );
            return remount(host, cfg, &facts, Some(&m), &binds).map(|()| Outcome::Remounted);
        }
        Plan::NothingToDo { reason } => {
            tracing::info!("nothing to do: {reason}");
            return Ok(Outcome::NothingToDo);
        }
        Plan::Keep {
            volumes,
            incomplete,
        } => return Err(Error::Kept(plan::kept_message(&volumes, &incomplete))),
    };
    if let Some(o) = &p.over {
        tracing::warn!("{}", o.warning());
    }
    for w in &p.warnings {
        tracing::warn!("{w}");
    }
    let mut mods = vec!["dm_mod", "dm_crypt"];
    if p.raid.is_some() {
        mods.extend(["md_mod", "raid0"]);
    }
    modules::ensure(host, &mods)?;
    cleanup(host, &facts, &p)?;

    let mut made = Made::default();
    let result = apply(host, &p, &escrow_keys, &mut made);
    match &result {
        Err(e) => {
            tracing::error!("provisioning failed: {e}; rolling back what this run made");
            made.rollback(host);
        }
        // After the volume is made and the key forgotten, outside what a
        // rollback undoes: the upload is bounded and never fails provision.
        Ok(Outcome::Created { luks_uuid, .. })
            if p.escrow.as_ref().is_some_and(|e| e.store.is_some()) =>
        {
            crate::node::escrow_store::at_provision(host, cfg, luks_uuid);
        }
        Ok(_) => {}
    }
    result
}

/// This boot's open volume: mounted again at `m` when it is not mounted
/// (never closed on failure: the kernel holds the only key), its record
/// marked mounted (a run cut short after its first mount left the mark),
/// and its missing binds made again.
fn remount(
    host: &Host,
    cfg: &Config,
    facts: &Facts,
    m: Option<&plan::MountPlan>,
    binds: &[plan::BindPlan],
) -> Result<()> {
    if let Some(m) = m {
        let mapped = host.path("dev/mapper").join(DM_NAME);
        step("mount", &m.path, || {
            mount::mount(&mapped, &m.path, &m.options, m.fstype)
        })?;
        tracing::info!("remounted {} at {}", mapped.display(), m.path.display());
    }
    if let Some(dm) = &facts.inv.dm {
        escrow::mark_mounted(host, &cfg.escrow.path, &dm.luks_uuid())?;
        bind::ensure_all(host, binds, &dm.devno)?;
    }
    Ok(())
}

/// `ephemera unlock`: asks the pins again for the key of a volume kept at
/// boot. On the node, ephemera.service does it (it is started again, and
/// with it the guard and the services that require it); elsewhere, here.
/// Refused when the plan is not to unlock: this command never makes a
/// volume.
pub fn unlock(host: &Host, cfg: &Config, probe: &dyn Probe) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::Refused(format!(
            "nothing to unlock: {what} (see `ephemera status`)"
        )))
    };
    match plan_only(host, cfg, probe, false)? {
        Plan::Unlock { .. } => {}
        Plan::AlreadyProvisioned { device, mount, .. } => {
            return refuse(format!("{device} is mounted at {mount} already"))
        }
        Plan::Keep { .. } => {
            return refuse(
                "no volume of an earlier boot here has an unlock file, all its members and \
                 [unlock] in the config"
                    .into(),
            )
        }
        _ => return refuse("no volume of an earlier boot is on the disks".into()),
    }
    if super::on_node(host) {
        return super::start_unit_and_dependents();
    }
    let _lock = lock(host)?;
    match make_plan(host, cfg, probe, false)?.1 {
        Plan::Unlock {
            volume,
            sealed,
            mount: m,
            binds,
        } => apply_unlock(host, cfg, probe, &volume, &sealed, &m.path, &binds).map(drop),
        _ => refuse("the disks changed while it looked".into()),
    }
}

fn apply_unlock(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    volume: &plan::Earlier,
    sealed: &Path,
    at: &Path,
    binds: &[plan::BindPlan],
) -> Result<Outcome> {
    unlock_volume(host, cfg, probe, volume, sealed)?;
    let mapped = host.path("dev/mapper").join(DM_NAME);
    let devno = bind::devno_of(&mapped)?;
    bind::ensure_all(host, binds, &devno)?;
    tracing::info!(
        luks_uuid = %volume.luks_uuid,
        "unlocked {} at {}",
        mapped.display(),
        at.display()
    );
    Ok(Outcome::Unlocked)
}

/// Opens a volume of an earlier boot with the key its pins give back
/// (`keys::unlock`), in the order its unlock file gives. When the pins do not
/// give it (tang unreachable, a changed TPM, a threshold not met), the
/// volume is kept as it is (exit 5): nothing was written.
fn unlock_volume(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    volume: &plan::Earlier,
    sealed: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(host.abs(sealed)).map_err(|e| {
        Error::Failed(format!(
            "unlock file {}: cannot read: {e}",
            sealed.display()
        ))
    })?;
    let s = unlock::parse(&text, sealed)?;
    tracing::info!(
        "LUKS UUID {} on /dev/{} is bound to {}: asking for its key (at most {} s)",
        s.luks_uuid,
        volume.disk,
        s.pins,
        cfg.unlock.wait_secs
    );
    let wait = Duration::from_secs(cfg.unlock.wait_secs);
    super::recover::open_and_mount(
        host,
        cfg,
        probe,
        &Layout::of_sealed(&s),
        || {
            let reach = crate::node::kms::reach(&cfg.events.endpoint);
            unlock::open(&s, &reach, wait).map_err(|e| {
                Error::Kept(format!(
                    "{}; its pins did not give its key: {e}",
                    plan::kept_message(std::slice::from_ref(volume), &[])
                ))
            })
        },
        |_| {},
    )
}

/// Closes and stops what an unfinished run of this boot left behind (the
/// plan only asks for it when the mapping holds no file system).
fn cleanup(host: &Host, facts: &Facts, p: &ProvisionPlan) -> Result<()> {
    if p.cleanup.close_dm {
        if let Some(dm) = &facts.inv.dm {
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
    escrow_keys: &[rsa::RsaPublicKey],
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
            made.push(Undo::StopArray);
            crate::failpoint!("after-md-build");
            dev
        }
        None => members[0].clone(),
    };
    let mapped = host.path("dev/mapper").join(DM_NAME);
    let uuid = make_volume(host, p, &base, &mapped, escrow_keys, made)?;

    step(&format!("make {}", p.mkfs.fstype.name()), &mapped, || {
        mount::mkfs(&mapped, &p.mkfs)
    })?;
    crate::failpoint!("after-mkfs");
    step("mount", &p.mount.path, || {
        mount::mount(&mapped, &p.mount.path, &p.mount.options, p.mount.fstype)
    })?;
    made.push(Undo::Unmount(p.mount.path.clone()));
    crate::failpoint!("after-mount");
    record_mounted(host, p, &uuid)?;
    if !p.binds.is_empty() {
        let devno = bind::devno_of(&mapped)?;
        // Pushed first: a bind that fails half way is taken down too.
        made.push(Undo::Unbind(devno.clone()));
        bind::ensure_all(host, &p.binds, &devno)?;
        crate::failpoint!("after-bind");
    }
    tracing::info!(luks_uuid = %uuid, "provisioned {} at {}", mapped.display(), p.mount.path.display());
    Ok(Outcome::Created {
        luks_uuid: uuid,
        device: mapped,
    })
}

/// The volume key's whole life: made here, used to format and open the
/// volume and to seal the escrow envelope, and dropped (zeroized) here, on
/// every path, errors included. After this returns, the key is only in the
/// kernel. Returns the LUKS UUID.
fn make_volume(
    host: &Host,
    p: &ProvisionPlan,
    base: &Path,
    mapped: &Path,
    escrow_keys: &[rsa::RsaPublicKey],
    made: &mut Made,
) -> Result<String> {
    let key = VolumeKey::generate(p.luks.key_bits)?;
    // libcryptsetup opens the device exclusively to format it: that open,
    // not the survey's, is what proves at the moment of writing that nothing
    // else holds the disk (the survey's open is closed by then). A format
    // that fails wrote no header; one that succeeded is undone by erasing it.
    let header = step("format LUKS2", base, || {
        luks::format(base, &p.luks, &geometry(p), key.as_bytes())
    })?;
    made.push(Undo::EraseHeader(base.to_path_buf()));
    let uuid = header.uuid.clone();
    crate::failpoint!("after-luks-format");
    step("open LUKS2", mapped, || {
        header.open(p.luks.discards, p.luks.workqueues, key.as_bytes())
    })?;
    made.push(Undo::Close);
    crate::failpoint!("after-luks-open");

    record_started(host, p, &uuid)?;
    if let Some(e) = p.escrow.as_ref().filter(|_| !escrow_keys.is_empty()) {
        let env = escrow::seal(
            &key,
            escrow_keys,
            e.threshold,
            volume_header(host, p, &uuid),
        )?;
        step("write escrow envelope", &e.path, || {
            // Pending until the store has it: a run cut short before the
            // upload leaves the marker, and the watcher's retry finds it.
            if e.store.is_some() {
                escrow::set_marker(host, &e.path, &uuid, escrow::STORE_PENDING)?;
            }
            escrow::store(host, &env, &e.path)
        })?;
        crate::failpoint!("after-escrow-write");
        if e.console {
            write_console(host, &escrow::console_text(&env)?);
        }
    }
    if let Some(u) = &p.unlock {
        // A binding that fails leaves a working volume that the next boot
        // cannot unlock (kept for escrow, or replaced without it): loud,
        // but the volume is made, as without [unlock].
        let r = step("bind the key to the pins", &u.escrow_path, || {
            let reach = crate::node::kms::reach(&u.imds);
            let sealed = unlock::seal(&key, &u.pins, &reach, volume_header(host, p, &uuid))?;
            unlock::store(host, &sealed, &u.escrow_path)?;
            tracing::info!(
                "bound LUKS UUID {uuid} to {}: the next boot unlocks it in {}",
                sealed.pins,
                unlock::path_for(&u.escrow_path, &uuid).display()
            );
            Ok(())
        });
        if let Err(e) = r {
            tracing::error!(
                "could not bind LUKS UUID {uuid} for unlock at the next boot: {e}; the volume \
                 works, but a reboot does not unlock it"
            );
        }
    }
    drop(key);
    tracing::info!("volume key forgotten: it is only in the kernel now");
    Ok(uuid)
}

/// Before any of the node's record of the new volume `uuid` is written (its
/// envelope, its unlock file): marks it never mounted, until its first
/// mount ([`record_mounted`]). A run cut short before then leaves a volume
/// that never held data, which the next boot must neither keep for ops nor
/// unlock. Nothing when the node keeps no record (no escrow, no `[unlock]`).
pub fn record_started(host: &Host, p: &ProvisionPlan, uuid: &str) -> Result<()> {
    match &p.record {
        Some(dir) => escrow::set_marker(host, dir, uuid, escrow::NEVER_MOUNTED),
        None => Ok(()),
    }
}

/// After the new volume's first mount: from here on it may hold data, and
/// its record says so, whatever keeps it (an envelope, an unlock file, both).
pub fn record_mounted(host: &Host, p: &ProvisionPlan, uuid: &str) -> Result<()> {
    match &p.record {
        Some(dir) => escrow::mark_mounted(host, dir, uuid),
        None => Ok(()),
    }
}

/// How the new volume is assembled, for its header's token.
fn geometry(p: &ProvisionPlan) -> luks::Geometry {
    luks::Geometry {
        members: p.members.iter().map(|m| m.serial.clone()).collect(),
        chunk_kib: p.raid.as_ref().map(|r| r.chunk_kib),
    }
}

/// What the envelope and the unlock file say about the new volume.
pub fn volume_header(host: &Host, p: &ProvisionPlan, uuid: &str) -> escrow::Header {
    escrow::Header {
        host: host_name(host),
        luks_uuid: uuid.to_string(),
        cipher: format!("{}-{}", p.luks.cipher, p.luks.mode),
        sector_size: p.luks.sector_size,
        members: p.members.iter().map(|m| m.serial.clone()).collect(),
        raid: p.raid.as_ref().map(|r| escrow::RaidInfo {
            level: 0,
            chunk_kib: r.chunk_kib,
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::probe::Signature;

    /// Fails the test on any exclusive open.
    struct NoExclusiveOpen;

    impl Probe for NoExclusiveOpen {
        fn signatures(&self, _: &Path) -> Result<Vec<Signature>> {
            Ok(Vec::new())
        }
        fn busy(&self, dev: &Path) -> Result<bool> {
            panic!("ephemera plan opened {} exclusively", dev.display())
        }
    }

    #[test]
    fn plan_never_opens_a_disk_exclusively() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/i3en-24xlarge/root");
        let p = plan_only(
            &Host::new(root),
            &Config::default(),
            &NoExclusiveOpen,
            false,
        )
        .unwrap();
        assert!(matches!(p, Plan::Provision(_)), "{p:?}");
    }
}
