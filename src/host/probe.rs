//! What is on a disk, and whether someone else holds it open.
//!
//! This is the only place that reads disk contents before ephemera decides to
//! write. Signatures come from libblkid, the same prober `blkid` and `wipefs`
//! use, with every chain enabled, so whatever they would report stops us.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libblkid_rs::{BlkidProbe, BlkidProbeRet, BlkidSublks, BlkidSublksFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The LUKS2 label and subsystem that mark a volume as ephemera's own.
pub const LUKS_LABEL: &str = "ephemera";
pub const LUKS_SUBSYSTEM: &str = "ephemera";

/// One signature libblkid found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Signature {
    /// `TYPE` (filesystem, raid, crypto) or `PTTYPE` (partition table).
    pub kind: String,
    pub label: Option<String>,
    pub subsystem: Option<String>,
    pub uuid: Option<String>,
}

impl Signature {
    pub fn is_ephemera_luks(&self) -> bool {
        self.kind == "crypto_LUKS"
            && self.label.as_deref() == Some(LUKS_LABEL)
            && self.subsystem.as_deref() == Some(LUKS_SUBSYSTEM)
    }

    pub fn describe(&self) -> String {
        match &self.label {
            Some(l) if !l.is_empty() => format!("{} (label {l:?})", self.kind),
            _ => self.kind.clone(),
        }
    }
}

/// What a disk holds, as far as ephemera's decision goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// No signature at all.
    Blank,
    /// ephemera's own LUKS2 header, from an earlier boot or run.
    Ephemera { luks_uuid: String },
    /// Anything else: someone's data.
    Foreign { found: Vec<String> },
}

pub fn classify(sigs: &[Signature]) -> Content {
    match sigs {
        [] => Content::Blank,
        [s] if s.is_ephemera_luks() => Content::Ephemera {
            luks_uuid: s.uuid.clone().unwrap_or_default(),
        },
        _ => Content::Foreign {
            found: sigs.iter().map(Signature::describe).collect(),
        },
    }
}

/// Reads a disk's contents and tests whether it is busy. A trait so that
/// plans can be tested against fixture trees without block devices.
pub trait Probe {
    fn signatures(&self, dev: &Path) -> Result<Vec<Signature>>;
    /// True when an exclusive open fails with EBUSY: someone (a mount, a
    /// device-mapper or md stack, another program) holds the disk.
    fn busy(&self, dev: &Path) -> Result<bool>;
}

/// The real prober: libblkid and `open(O_EXCL)`.
pub struct Blkid;

/// Reads signatures through another prober, and never opens a disk
/// exclusively: for the commands that only look (`status`, `plan`), which
/// may run at any time, where an exclusive open, even brief, could make
/// someone else's mount of that disk fail. A disk held that way shows as
/// not busy; the mounts, holders and swap that sysfs shows still exclude it.
pub struct LookOnly<'a>(pub &'a dyn Probe);

impl Probe for LookOnly<'_> {
    fn signatures(&self, dev: &Path) -> Result<Vec<Signature>> {
        self.0.signatures(dev)
    }
    fn busy(&self, _: &Path) -> Result<bool> {
        Ok(false)
    }
}

impl Probe for Blkid {
    fn signatures(&self, dev: &Path) -> Result<Vec<Signature>> {
        let fail = |e: libblkid_rs::BlkidErr| {
            Error::Failed(format!("probing {} with libblkid: {e}", dev.display()))
        };
        let mut p = BlkidProbe::new_from_filename(dev).map_err(fail)?;
        p.enable_superblocks(true).map_err(fail)?;
        p.set_superblock_flags(BlkidSublksFlags::new(vec![
            BlkidSublks::Type,
            BlkidSublks::Label,
            BlkidSublks::Uuid,
            BlkidSublks::Magic,
            // A damaged superblock is still someone's data.
            BlkidSublks::Badcsum,
        ]))
        .map_err(fail)?;
        p.enable_partitions(true).map_err(fail)?;
        let mut out = Vec::new();
        // Each call returns the next signature, as `wipefs` lists them all.
        while let BlkidProbeRet::Success = p.do_probe().map_err(fail)? {
            let get = |k: &str| {
                p.lookup_value(k)
                    .ok()
                    .map(|v| v.trim_end_matches('\0').to_string())
            };
            let kind = get("TYPE").or_else(|| get("PTTYPE"));
            out.push(Signature {
                kind: kind.unwrap_or_else(|| "unknown signature".into()),
                label: get("LABEL"),
                subsystem: get("SUBSYSTEM"),
                uuid: get("UUID"),
            });
        }
        Ok(out)
    }

    fn busy(&self, dev: &Path) -> Result<bool> {
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_EXCL)
            .open(dev)
        {
            Ok(_) => Ok(false),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => Ok(true),
            Err(e) => Err(Error::io("opening", dev)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(kind: &str, label: Option<&str>, subsystem: Option<&str>) -> Signature {
        Signature {
            kind: kind.into(),
            label: label.map(Into::into),
            subsystem: subsystem.map(Into::into),
            uuid: Some("u".into()),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&[]), Content::Blank);
        assert_eq!(
            classify(&[sig("crypto_LUKS", Some("ephemera"), Some("ephemera"))]),
            Content::Ephemera {
                luks_uuid: "u".into()
            }
        );
        // Someone else's LUKS, even one that borrows our label.
        for s in [
            sig("crypto_LUKS", None, None),
            sig("crypto_LUKS", Some("ephemera"), None),
            sig("ext4", Some("ephemera"), Some("ephemera")),
            sig("gpt", None, None),
            sig("linux_raid_member", None, None),
        ] {
            assert!(
                matches!(classify(std::slice::from_ref(&s)), Content::Foreign { .. }),
                "{s:?}"
            );
        }
        // Ours plus anything else is not ours.
        let two = [
            sig("crypto_LUKS", Some("ephemera"), Some("ephemera")),
            sig("dos", None, None),
        ];
        assert_eq!(
            classify(&two),
            Content::Foreign {
                found: vec!["crypto_LUKS (label \"ephemera\")".into(), "dos".into()]
            }
        );
    }
}
