//! Erasing on purpose: `teardown` destroys the volume in use, `discard`
//! a volume of an earlier boot that ops chose not to recover.

use std::path::Path;

use crate::config::Config;
use crate::decision::plan::Volume;
use crate::decision::survey::candidates;
use crate::error::{Error, Result};
use crate::host::cmd;
use crate::host::discover::Inventory;
use crate::host::discover::{self, DM_NAME, MD_NAME};
use crate::host::lock::lock;
use crate::host::probe::{Content, LookOnly, Probe};
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

/// What `teardown` was told to erase: it erases nothing unasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// Neither `--yes` nor `--luks-uuid`: refuse, saying what it would erase.
    Nothing,
    /// `--yes`: everything `Doomed` lists.
    Yes,
    /// `--luks-uuid UUID`: that volume only, open or of an earlier boot.
    LuksUuid(String),
}

/// What `teardown` would erase, read without an exclusive open.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Doomed {
    /// The open volume's LUKS UUID, and a phrase naming it for a person.
    pub open: Option<(String, String)>,
    /// The array, with no volume open on it.
    pub array: Option<String>,
    /// ephemera's headers of earlier boots on disks nothing holds:
    /// (disk, LUKS UUID).
    pub earlier: Vec<(String, String)>,
}

impl Doomed {
    pub fn is_empty(&self) -> bool {
        self.open.is_none() && self.array.is_none() && self.earlier.is_empty()
    }

    /// The LUKS UUIDs of the earlier boots' headers.
    fn earlier_uuids(&self) -> Vec<String> {
        self.earlier.iter().map(|(_, u)| u.clone()).collect()
    }

    /// One phrase: every volume, LUKS UUID and disk it would erase.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.open.iter().map(|(_, p)| p.clone()).collect();
        parts.extend(
            self.array
                .iter()
                .map(|a| format!("the array /dev/{a} (stopped)")),
        );
        parts.extend(self.earlier.iter().map(|(disk, uuid)| {
            format!("the header of an earlier boot's volume, LUKS UUID {uuid}, on /dev/{disk}")
        }));
        parts.join("; ")
    }
}

/// Reads what a `teardown --yes` would erase.
pub fn doomed(host: &Host, inv: &Inventory, cfg: &Config, probe: &dyn Probe) -> Result<Doomed> {
    let mut d = Doomed::default();
    if let Some(dm) = &inv.dm {
        let members = match &inv.md {
            Some(m) => format!(
                "/dev/{} over {}",
                m.name,
                m.members
                    .iter()
                    .map(|n| format!("/dev/{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => backing(inv)
                .map(|b| format!("/dev/{b}"))
                .unwrap_or_default(),
        };
        let mut phrase = format!(
            "the open volume, LUKS UUID {} on {members} (/dev/mapper/{DM_NAME})",
            dm.luks_uuid()
        );
        if let Some(m) = dm.mount() {
            phrase += &format!(", mounted at {}", m.path);
        }
        let binds: Vec<&str> = dm
            .mounts
            .iter()
            .filter(|m| m.root != "/")
            .map(|m| m.path.as_str())
            .collect();
        if !binds.is_empty() {
            phrase += &format!(", bound at {}", binds.join(", "));
        }
        d.open = Some((dm.luks_uuid(), phrase));
    } else if let Some(m) = &inv.md {
        d.array = Some(m.name.clone());
    }
    for c in candidates(host, inv, cfg, &LookOnly(probe))? {
        if let Content::Ephemera { luks_uuid } = &c.content {
            if !c.busy && c.disk.holders.is_empty() {
                d.earlier.push((c.disk.name.clone(), luks_uuid.clone()));
            }
        }
    }
    Ok(d)
}

/// What to erase of `d`: (the open volume and the array, the LUKS UUIDs of
/// earlier boots' headers), or why not.
fn scope(d: &Doomed, confirm: &Confirm) -> Result<(bool, Vec<String>)> {
    match confirm {
        Confirm::Yes => Ok((true, d.earlier_uuids())),
        Confirm::Nothing if d.is_empty() => Ok((false, Vec::new())),
        Confirm::Nothing => Err(Error::Usage(format!(
            "teardown erases for good, even for the escrow key: {}; to go ahead, run it \
             again with --yes, or with --luks-uuid UUID for one volume",
            d.describe()
        ))),
        Confirm::LuksUuid(u) if d.open.as_ref().is_some_and(|(o, _)| o == u) => {
            Ok((true, Vec::new()))
        }
        Confirm::LuksUuid(u) if d.earlier.iter().any(|(_, e)| e == u) => {
            Ok((false, vec![u.clone()]))
        }
        Confirm::LuksUuid(u) => Err(Error::Refused(format!(
            "no volume with LUKS UUID {u} here to tear down; here: {} (see `ephemera status`)",
            if d.is_empty() {
                "nothing of ephemera's".to_string()
            } else {
                d.describe()
            }
        ))),
    }
}

/// What `teardown` did.
#[derive(Debug, Default)]
pub struct TornDown {
    /// One line per thing taken down or erased.
    pub done: Vec<String>,
    /// The LUKS UUIDs of earlier boots' headers still on the disks (not
    /// named by `--luks-uuid`): volumes still kept for ops.
    pub still_kept: Vec<String>,
}

/// Unmounts, closes, erases the header (the data is then unreadable for
/// good, escrow or not) and stops the array; erases ephemera's headers left
/// on the disks by earlier boots. Only what `confirm` names: without
/// `--yes` or the LUKS UUID it refuses (exit 2), naming what it would erase.
pub fn teardown(
    host: &Host,
    cfg: &Config,
    probe: &dyn Probe,
    confirm: &Confirm,
) -> Result<TornDown> {
    let _lock = lock(host)?;
    let inv = discover::discover(host);
    let d = doomed(host, &inv, cfg, probe)?;
    let (open, earlier) = scope(&d, confirm)?;
    let mut t = TornDown::default();
    if d.is_empty() {
        t.done.push("nothing of ephemera's to tear down".into());
    }
    if open {
        t.done.extend(take_down_open(host, &inv)?);
    }
    t.still_kept = d.earlier_uuids();
    if earlier.is_empty() {
        return Ok(t);
    }
    // Headers of earlier boots, on disks nothing holds now (an exclusive
    // open proves it, at last).
    let inv = discover::discover(host);
    for c in candidates(host, &inv, cfg, probe)? {
        let Content::Ephemera { luks_uuid } = &c.content else {
            continue;
        };
        if earlier.contains(luks_uuid) && !c.busy && c.disk.holders.is_empty() {
            let dev = host.dev(&c.disk.name);
            wipe_signatures(&dev, "erasing ephemera's old header")?;
            t.done.push(format!(
                "erased ephemera's old header (LUKS UUID {luks_uuid}) on {}",
                dev.display()
            ));
            t.still_kept.retain(|u| u != luks_uuid);
        }
    }
    Ok(t)
}

/// The open volume: its binds, its mount, the mapping, its header; then
/// the array.
fn take_down_open(host: &Host, inv: &Inventory) -> Result<Vec<String>> {
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
        let base = backing(inv).map(|b| host.dev(&b));
        let header = match &base {
            Some(b) => Some(luks::info(b)?.data_offset),
            None => None,
        };
        luks::close()?;
        done.push(format!("closed /dev/mapper/{DM_NAME}"));
        if let (Some(b), Some(len)) = (base, header) {
            luks::erase_header(&b, len)?;
            done.push(format!(
                "erased the LUKS header (LUKS UUID {}) on {}",
                dm.luks_uuid(),
                b.display()
            ));
        }
    }
    if inv.md.is_some() {
        md::stop(host, MD_NAME)?;
        done.push(format!("stopped /dev/{MD_NAME}"));
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
             `ephemera teardown --yes` destroys the open one",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::probe::Signature;

    /// An ephemera header of `uuid` on disk `on`.
    struct Fake {
        on: &'static str,
        uuid: &'static str,
    }

    impl Probe for Fake {
        fn signatures(&self, dev: &Path) -> Result<Vec<Signature>> {
            Ok(if !self.on.is_empty() && dev.ends_with(self.on) {
                vec![Signature {
                    kind: "crypto_LUKS".into(),
                    label: Some("ephemera".into()),
                    subsystem: Some("ephemera".into()),
                    uuid: Some(self.uuid.into()),
                }]
            } else {
                vec![]
            })
        }
        fn busy(&self, _: &Path) -> Result<bool> {
            panic!("what teardown would erase is read without an exclusive open")
        }
    }

    fn fixture(name: &str, probe: &Fake) -> Doomed {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .join("root");
        let host = Host::new(root);
        let inv = discover::discover(&host);
        doomed(&host, &inv, &Config::default(), probe).unwrap()
    }

    const OPEN: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";
    const EARLIER: &str = "6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d";

    #[test]
    fn teardown_without_yes_names_what_it_would_erase_and_erases_nothing() {
        let open = fixture(
            "already-provisioned",
            &Fake {
                on: "nvme1n1",
                uuid: OPEN,
            },
        );
        // The open volume's own header is held (by md): not an earlier one.
        assert!(open.earlier.is_empty(), "{open:?}");
        let e = scope(&open, &Confirm::Nothing).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let m = e.to_string();
        assert!(
            m.contains(&format!(
                "the open volume, LUKS UUID {OPEN} on /dev/md_ephemera over /dev/nvme1n1, \
                 /dev/nvme2n1 (/dev/mapper/ephemera), mounted at /mnt/ephemeral"
            )) && m.contains("--yes")
                && m.contains("--luks-uuid UUID"),
            "{m}"
        );
        assert_eq!(scope(&open, &Confirm::Yes).unwrap(), (true, vec![]));
        assert_eq!(
            scope(&open, &Confirm::LuksUuid(OPEN.into())).unwrap(),
            (true, vec![])
        );
        let e = scope(&open, &Confirm::LuksUuid(EARLIER.into())).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_REFUSED);
        assert!(e.to_string().contains(OPEN), "{e}");

        let earlier = fixture(
            "earlier-boot-kept",
            &Fake {
                on: "nvme1n1",
                uuid: EARLIER,
            },
        );
        assert_eq!(earlier.earlier, [("nvme1n1".into(), EARLIER.into())]);
        let m = scope(&earlier, &Confirm::Nothing).unwrap_err().to_string();
        assert!(
            m.contains(&format!(
                "the header of an earlier boot's volume, LUKS UUID {EARLIER}, on /dev/nvme1n1"
            )),
            "{m}"
        );
        assert_eq!(
            scope(&earlier, &Confirm::LuksUuid(EARLIER.into())).unwrap(),
            (false, vec![EARLIER.to_string()])
        );
        assert_eq!(
            scope(&earlier, &Confirm::Yes).unwrap(),
            (true, vec![EARLIER.to_string()])
        );
        // Nothing there: nothing to confirm.
        let none = fixture("i3-large", &Fake { on: "", uuid: "" });
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(scope(&none, &Confirm::Nothing).unwrap(), (false, vec![]));
    }
}
