//! The configuration file: `/etc/ephemera/config.toml` by default.
//!
//! Every key has a default (in the `Default` impls below, and nowhere else),
//! unknown keys are errors, and `Config::validate` rejects bad values with one
//! line that names the key. Validation does no I/O except reading the escrow
//! public key, so a bad config never reaches a disk.

pub mod bind;
#[cfg(test)]
pub(crate) mod keys;
pub mod mount_options;
mod parse;
pub mod paths;
pub mod store;
pub mod unlock;

pub use parse::PLACEHOLDER;

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/ephemera/config.toml";
pub const DEFAULT_MODEL: &str = "Amazon EC2 NVMe Instance Storage";
/// The most escrow keys (recipients) an envelope may have: a share's x is
/// one byte, and the console copy must stay small.
pub const MAX_ESCROW_KEYS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExisting {
    /// A volume from an earlier boot that can still be read (this node holds
    /// an escrow envelope for it) is left untouched and provision exits 5;
    /// one that nothing can read is replaced by a new volume.
    Keep,
    /// A volume from an earlier boot is always replaced by a new one, even
    /// when an escrow envelope could still open it.
    Reformat,
    /// A volume from an earlier boot: refuse (exit 3), whatever it is.
    Fail,
}

impl OnExisting {
    /// As the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            OnExisting::Keep => "keep",
            OnExisting::Reformat => "reformat",
            OnExisting::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub on_existing: OnExisting,
    pub disks: Disks,
    pub raid: Raid,
    pub luks: Luks,
    pub filesystem: Filesystem,
    pub mount: Mount,
    pub escrow: Escrow,
    pub events: Events,
    pub unlock: unlock::Unlock,
    /// `[[bind]]` entries: node directories placed on the volume.
    pub bind: Vec<bind::BindEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Disks {
    /// NVMe controller model to match, compared after trimming spaces.
    pub model: String,
    /// Fewer matching disks than this is an error; 0 makes "none" a no-op.
    pub min_disks: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Raid {
    pub chunk_kib: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Luks {
    /// cryptsetup notation: `cipher-chainmode-ivmode`, parsed once, here.
    pub cipher: CipherSpec,
    pub key_bits: u32,
    pub sector_size: u32,
    /// Pass discards through dm-crypt (off: TRIM patterns leak which blocks are used).
    pub discards: bool,
    /// Use dm-crypt's read and write workqueues. Off by default: on NVMe the
    /// inline path (`no_read_workqueue`, `no_write_workqueue`) is faster.
    pub workqueues: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filesystem {
    pub label: String,
    /// `ext4` (the default) or `xfs`.
    #[serde(rename = "type")]
    pub fstype: FsType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// The kernel's and blkid's name.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// The type blkid found on a device, if it is one ephemera makes.
    pub fn from_blkid(kind: &str) -> Option<FsType> {
        match kind {
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mount {
    /// Kept in normal form (`normal_path`): re-runs compare it with the
    /// kernel's mount table, which has no `//`, `.` or trailing `/`.
    #[serde(deserialize_with = "normal_path_de")]
    pub path: PathBuf,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Escrow {
    /// PEM RSA public key (SPKI or PKCS#1). No key: no escrow.
    pub public_key: Option<PathBuf>,
    /// More recipients' public keys (docs/ESCROW.md): any `threshold` of
    /// all the keys recover the volume.
    pub public_keys: Vec<PathBuf>,
    pub threshold: u32,
    pub path: PathBuf,
    /// Also print the envelope to `/dev/console`.
    pub console: bool,
    /// `[escrow.store]`: also keep each envelope in an S3-compatible bucket.
    pub store: Option<store::Store>,
}

/// The events watcher and `ephemera events` (src/events.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// The instance metadata service: `http://host[:port]`, no path.
    pub endpoint: String,
    /// Seconds between two polls of the watcher.
    pub interval_secs: u64,
    /// The metrics file (textfile-collector format); empty: none.
    pub textfile: PathBuf,
    /// Run once per new event, the event's JSON on stdin. Unset: no hook.
    pub hook: Option<PathBuf>,
    /// The hook is killed after this long.
    pub hook_timeout_secs: u64,
    /// The watcher's record of the events it acted on.
    pub seen_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            on_existing: OnExisting::Keep,
            disks: Disks::default(),
            raid: Raid::default(),
            luks: Luks::default(),
            filesystem: Filesystem::default(),
            mount: Mount::default(),
            escrow: Escrow::default(),
            events: Events::default(),
            unlock: unlock::Unlock::default(),
            bind: Vec::new(),
        }
    }
}

impl Default for Disks {
    fn default() -> Self {
        Disks {
            model: DEFAULT_MODEL.into(),
            min_disks: 1,
        }
    }
}

impl Default for Raid {
    fn default() -> Self {
        Raid { chunk_kib: 256 }
    }
}

impl Default for Luks {
    fn default() -> Self {
        Luks {
            cipher: CipherSpec::parse("twofish-xts-plain64").expect("the default cipher"),
            key_bits: 512,
            sector_size: 4096,
            discards: false,
            workqueues: false,
        }
    }
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            label: "ephemeral".into(),
            fstype: FsType::Ext4,
        }
    }
}

impl Default for Mount {
    fn default() -> Self {
        Mount {
            path: "/mnt/ephemeral".into(),
            options: "noatime".into(),
        }
    }
}

impl Default for Escrow {
    fn default() -> Self {
        Escrow {
            public_key: None,
            public_keys: Vec::new(),
            threshold: 1,
            path: "/var/lib/ephemera/escrow.json".into(),
            console: true,
            store: None,
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            endpoint: "http://169.254.169.254".into(),
            interval_secs: 10,
            textfile: "/var/lib/prometheus/node-exporter/ephemera.prom".into(),
            hook: None,
            hook_timeout_secs: 60,
            seen_file: "/run/ephemera/events-seen.json".into(),
        }
    }
}

/// Command-line values that take precedence over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub model: Option<String>,
    pub mount: Option<PathBuf>,
    pub escrow_key: Option<PathBuf>,
}

impl Config {
    /// Parses TOML text; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        parse::parse(text, origin)
    }

    /// Reads the file at `path`. A missing file at the default path means
    /// "all defaults"; a missing file that was asked for by name is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::Usage(format!("config {}: not UTF-8 text", path.display()))
                })?;
                Config::parse(&text, path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::Usage(format!(
                "config {}: cannot read: {e}",
                path.display()
            ))),
        }
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(m) = &o.model {
            self.disks.model = m.clone();
        }
        if let Some(p) = &o.mount {
            self.mount.path = normal_path(p);
        }
        if let Some(k) = &o.escrow_key {
            self.escrow.public_key = Some(k.clone());
        }
    }

    /// Checks every value that can be checked without touching a disk.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Usage(format!("config {key}: {why}")));
        if self.disks.model.trim().is_empty() {
            return bad("disks.model", "must not be empty".into());
        }
        let c = self.raid.chunk_kib;
        if !c.is_power_of_two() || !(4..=1 << 20).contains(&c) {
            return bad(
                "raid.chunk_kib",
                format!("{c} is not a power of two between 4 and 1048576"),
            );
        }
        if ![128, 256, 384, 512].contains(&self.luks.key_bits) {
            return bad(
                "luks.key_bits",
                format!("{} is not one of 128, 256, 384, 512", self.luks.key_bits),
            );
        }
        let s = self.luks.sector_size;
        if ![512, 1024, 2048, 4096].contains(&s) {
            return bad(
                "luks.sector_size",
                format!("{s} is not one of 512, 1024, 2048, 4096"),
            );
        }
        let label = &self.filesystem.label;
        if label.is_empty() || label.len() > 16 || label.contains(char::is_control) {
            return bad(
                "filesystem.label",
                format!("{label:?} must be 1 to 16 bytes of printable text (an ext4 limit)"),
            );
        }
        if self.filesystem.fstype == FsType::Xfs && (label.len() > 12 || label.contains(' ')) {
            return bad(
                "filesystem.label",
                format!("{label:?} must be at most 12 bytes with no space for xfs"),
            );
        }
        absolute("mount.path", &self.mount.path)?;
        // `..` is refused, not resolved: resolving it lexically is wrong
        // across symlinks, and "/.." would slip past the check for "/".
        if self
            .mount
            .path
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return bad(
                "mount.path",
                format!("{} must not contain `..`", self.mount.path.display()),
            );
        }
        let mount = normal_path(&self.mount.path);
        if mount == Path::new("/") {
            return bad("mount.path", "must not be /".into());
        }
        if let Some(c) = paths::clash(&mount) {
            return bad(
                "mount.path",
                format!(
                    "{}: {} (choose a directory of its own, such as /mnt/ephemeral)",
                    mount.display(),
                    c.describe("a mount")
                ),
            );
        }
        mount_options::MountOptions::parse(&self.mount.options)
            .map_err(|why| Error::Usage(format!("config mount.options: {why}")))?;
        absolute("escrow.path", &self.escrow.path)?;
        if normal_path(&self.escrow.path).starts_with(&mount) {
            return bad(
                "escrow.path",
                format!(
                    "{} is inside mount.path {}: the envelopes and unlock files would be on \
                     the volume they open, out of reach before it is open; keep them on the \
                     root disk (the default is /var/lib/ephemera/escrow.json)",
                    self.escrow.path.display(),
                    mount.display()
                ),
            );
        }
        if let Some(k) = &self.escrow.public_key {
            absolute("escrow.public_key", k)?;
        }
        for k in &self.escrow.public_keys {
            absolute("escrow.public_keys", k)?;
        }
        let keys = self.escrow.keys();
        if keys.len() > MAX_ESCROW_KEYS {
            return bad(
                "escrow.public_keys",
                format!("{} keys are more than {}", keys.len(), MAX_ESCROW_KEYS),
            );
        }
        if let Some(k) = keys
            .iter()
            .enumerate()
            .find_map(|(i, k)| keys[..i].contains(k).then_some(k))
        {
            return bad(
                "escrow.public_keys",
                format!("{} is listed twice", k.display()),
            );
        }
        let t = self.escrow.threshold;
        if keys.is_empty() && t != 1 {
            return bad(
                "escrow.threshold",
                format!(
                    "{t} is set, but there is no escrow key: add the keys \
                     (escrow.public_key, escrow.public_keys) or remove escrow.threshold"
                ),
            );
        }
        if t < 1 || (!keys.is_empty() && t as usize > keys.len()) {
            return bad(
                "escrow.threshold",
                format!(
                    "{t} is not between 1 and the number of escrow keys ({})",
                    keys.len()
                ),
            );
        }
        if let Some(s) = &self.escrow.store {
            if keys.is_empty() {
                return bad(
                    "escrow.store",
                    "is set, but there is no escrow key (escrow.public_key or escrow.public_keys): \
                     no envelope to store"
                        .into(),
                );
            }
            s.validate()?;
        }
        bind::validate(&self.bind, &self.mount.path, &self.escrow.path)?;
        self.unlock.validate()?;
        self.events.validate()
    }
}

impl Escrow {
    /// Every escrow public key: `public_key`, then `public_keys`, in order
    /// (share i of a threshold goes to key i).
    pub fn keys(&self) -> Vec<PathBuf> {
        self.public_key
            .iter()
            .chain(&self.public_keys)
            .cloned()
            .collect()
    }
}

impl Events {
    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Usage(format!("config events.{key}: {why}")));
        let host = self
            .endpoint
            .strip_prefix("http://")
            .map(|h| h.strip_suffix('/').unwrap_or(h))
            .unwrap_or("");
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return bad(
                "endpoint",
                format!(
                    "{:?} is not http://HOST[:PORT] with no path (for example http://169.254.169.254)",
                    self.endpoint
                ),
            );
        }
        if !(1..=3600).contains(&self.interval_secs) {
            return bad(
                "interval_secs",
                format!("{} is not between 1 and 3600", self.interval_secs),
            );
        }
        if !self.textfile.as_os_str().is_empty() {
            absolute("events.textfile", &self.textfile)?;
            if self.textfile.extension().is_none_or(|e| e != "prom") {
                return bad(
                    "textfile",
                    format!(
                        "{} does not end in .prom (node_exporter reads only those)",
                        self.textfile.display()
                    ),
                );
            }
        }
        if let Some(h) = &self.hook {
            absolute("events.hook", h)?;
        }
        absolute("events.seen_file", &self.seen_file)?;
        if !(1..=3600).contains(&self.hook_timeout_secs) {
            return bad(
                "hook_timeout_secs",
                format!("{} is not between 1 and 3600", self.hook_timeout_secs),
            );
        }
        Ok(())
    }
}

/// `p` without repeated `/`, `.` components or a trailing `/`, as the kernel
/// writes mount points: "/mnt//ephemeral/./" is "/mnt/ephemeral". `..` is
/// kept as it is (validate refuses it).
pub fn normal_path(p: &Path) -> PathBuf {
    p.components().collect()
}

fn normal_path_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<PathBuf, D::Error> {
    PathBuf::deserialize(d).map(|p| normal_path(&p))
}

fn absolute(key: &str, p: &Path) -> Result<()> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "config {key}: {} is not an absolute path",
            p.display()
        )))
    }
}

/// A cipher in cryptsetup notation, split the way libcryptsetup wants it and
/// named the way the kernel crypto API knows it. The config file holds it as
/// one string; a bad one fails the parse, with the key and line named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CipherSpec {
    /// `twofish`
    pub cipher: String,
    /// `xts-plain64`
    pub mode: String,
}

impl CipherSpec {
    pub fn parse(s: &str) -> std::result::Result<CipherSpec, String> {
        let ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:".contains(c))
        };
        match s.split_once('-') {
            Some((cipher, mode)) if ok(cipher) && ok(mode) && !cipher.contains(':') => {
                Ok(CipherSpec {
                    cipher: cipher.into(),
                    mode: mode.into(),
                })
            }
            _ => Err(format!(
                "{s:?} is not cryptsetup cipher notation (for example twofish-xts-plain64)"
            )),
        }
    }

    /// `twofish-xts-plain64`, as cryptsetup and the escrow envelope write it.
    pub fn notation(&self) -> String {
        format!("{}-{}", self.cipher, self.mode)
    }

    /// The kernel crypto API name dm-crypt will ask for: `xts(twofish)`.
    pub fn kernel_name(&self) -> String {
        let chain = self.mode.split('-').next().unwrap_or(&self.mode);
        format!("{chain}({})", self.cipher)
    }
}

impl TryFrom<String> for CipherSpec {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<CipherSpec, String> {
        CipherSpec::parse(&s)
    }
}

impl From<CipherSpec> for String {
    fn from(c: CipherSpec) -> String {
        c.notation()
    }
}

#[cfg(test)]
mod tests;
