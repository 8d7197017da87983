//! LUKS2 through libcryptsetup: format with zero keyslots, activate by
//! volume key (kept in the kernel keyring, not in the dm table), read the
//! header back for `status`, close, and erase the header.
//!
//! The key comes in as the bytes of the caller's `keys::key::VolumeKey`
//! (locked memory, wiped on drop), lent for the call: libcryptsetup takes
//! it by pointer, and nothing here copies or keeps it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf};
use libcryptsetup_rs::consts::vals::{
    CryptKdf, CryptLogLevel, EncryptionFormat, KeyslotInfo, KeyslotsSize, MetadataSize,
};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, Either,
    TokenInput,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::discover::DM_NAME;
use crate::host::probe::{LUKS_LABEL, LUKS_SUBSYSTEM};

/// The LUKS2 token type that records ephemera's volume parameters.
pub const TOKEN_TYPE: &str = "ephemera";

fn lib_err(what: String) -> impl FnOnce(libcryptsetup_rs::LibcryptErr) -> Error {
    move |e| Error::Failed(format!("{what}: {e}"))
}

/// libcryptsetup messages that every run of ephemera causes on purpose, and
/// that are therefore not news: "WARNING: keyslots area (4096 bytes) is very
/// small, ..." follows from `format`'s 4 KiB keyslots area (no keyslot is
/// ever added). Shown at debug level only, so the boot log has no warning
/// that is not one.
const EXPECTED_MESSAGES: &[&str] = &["WARNING: keyslots area (4096 bytes) is very small"];

/// The level a libcryptsetup message is logged at: errors as errors, its
/// warnings (normal messages starting `WARNING:`) as warnings, the expected
/// messages above and the verbose/debug ones at debug, the rest as info.
fn log_level(level: CryptLogLevel, msg: &str) -> tracing::Level {
    match level {
        CryptLogLevel::Error => tracing::Level::ERROR,
        CryptLogLevel::Normal if EXPECTED_MESSAGES.iter().any(|m| msg.starts_with(m)) => {
            tracing::Level::DEBUG
        }
        CryptLogLevel::Normal if msg.starts_with("WARNING") => tracing::Level::WARN,
        CryptLogLevel::Normal => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

fn forward_log(level: CryptLogLevel, msg: &str, _: Option<&mut ()>) {
    let msg = msg.trim_end();
    match log_level(level, msg) {
        tracing::Level::ERROR => tracing::error!(target: "libcryptsetup", "{msg}"),
        tracing::Level::WARN => tracing::warn!(target: "libcryptsetup", "{msg}"),
        tracing::Level::INFO => tracing::info!(target: "libcryptsetup", "{msg}"),
        _ => tracing::debug!(target: "libcryptsetup", "{msg}"),
    }
}
libcryptsetup_rs::c_logging_callback!(log_callback, (), forward_log);

/// The LUKS2 volume as the plan decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LuksPlan {
    pub cipher: String,
    pub mode: String,
    pub key_bits: u32,
    pub sector_size: u32,
    pub discards: bool,
    pub workqueues: bool,
}

/// Sends libcryptsetup's own messages into ephemera's log.
pub fn forward_logs() {
    libcryptsetup_rs::set_log_callback::<()>(Some(log_callback), None);
}

fn activation_flags(discards: bool, workqueues: bool) -> CryptActivate {
    let mut f = CryptActivate::empty();
    if discards {
        f |= CryptActivate::ALLOW_DISCARDS;
    }
    if !workqueues {
        f |= CryptActivate::NO_READ_WORKQUEUE | CryptActivate::NO_WRITE_WORKQUEUE;
    }
    f
}

/// A LUKS2 header just written, with the libcryptsetup context that wrote
/// it: opening through it uses the header in memory instead of reading and
/// verifying it back from the disk.
pub struct Formatted {
    cd: CryptDevice,
    dev: PathBuf,
    pub uuid: String,
}

impl Formatted {
    /// Opens the new volume, as `open` does.
    pub fn open(mut self, discards: bool, workqueues: bool, key: &[u8]) -> Result<()> {
        activate(&mut self.cd, &self.dev, discards, workqueues, key)
    }
}

/// How the volume's members are assembled: recorded in the header's
/// ephemera token at format, and compared with what an envelope or an
/// unlock file says before a volume is opened. The LUKS UUID and the key's
/// digest check only the first member; a tampered or mistaken member order
/// or chunk would open a wrongly assembled array read-write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// Member serials in array order.
    pub members: Vec<String>,
    /// The RAID0 chunk; `None` for a single disk.
    pub chunk_kib: Option<u32>,
}

/// Formats `dev` and returns the new header, its token recording the key
/// size and `geometry`. No keyslot is made: the only copies of the key are
/// the caller's and, after `open`, the kernel's.
pub fn format(dev: &Path, p: &LuksPlan, geometry: &Geometry, key: &[u8]) -> Result<Formatted> {
    let d = dev.display();
    let mut cd = CryptInit::init(dev).map_err(lib_err(format!("opening {d} for LUKS2")))?;
    // No keyslots will ever be added, so the keyslots area can be one 4 KiB
    // block instead of the default 16 MiB, which libcryptsetup would zero
    // on every format: that wipe was most of the format's time.
    let keyslots = KeyslotsSize::try_from(4096).map_err(lib_err("keyslots size".into()))?;
    cd.settings_handle()
        .set_metadata_size(MetadataSize::Kb16, keyslots)
        .map_err(lib_err(format!("setting the LUKS2 metadata size on {d}")))?;
    // The header keeps a PBKDF2 digest of the volume key, so that open can
    // refuse a wrong key. The key is random (128 bits or more), so iterations
    // add nothing against guessing it. By default libcryptsetup benchmarks
    // PBKDF2 first to size the digest at 125 ms (seconds under emulation,
    // most of format's time), and every open pays the 125 ms again.
    // NO_BENCHMARK takes libcryptsetup's minimum, 1000 iterations, as
    // `cryptsetup --pbkdf-force-iterations 1000` would. No keyslot uses this
    // PBKDF: there are none.
    let pbkdf = CryptPbkdfType {
        type_: CryptKdf::Pbkdf2,
        hash: Some("sha256".into()),
        time_ms: 0,
        iterations: 1000,
        max_memory_kb: 0,
        parallel_threads: 0,
        flags: CryptPbkdf::NO_BENCHMARK,
    };
    let params = CryptParamsLuks2 {
        pbkdf: Some(pbkdf),
        integrity: None,
        integrity_params: None,
        data_alignment: 0,
        data_device: None,
        sector_size: p.sector_size,
        label: Some(LUKS_LABEL.into()),
        subsystem: Some(LUKS_SUBSYSTEM.into()),
    };
    let mut params_ref: CryptParamsLuks2Ref<'_> = (&params)
        .try_into()
        .map_err(lib_err("LUKS2 parameters".into()))?;
    cd.context_handle()
        .format(
            EncryptionFormat::Luks2,
            (&p.cipher, &p.mode),
            None,
            Either::Left(key),
            Some(&mut params_ref),
        )
        .map_err(lib_err(format!(
            "formatting LUKS2 ({}-{}, {}-bit key, {}-byte sectors) on {d}",
            p.cipher, p.mode, p.key_bits, p.sector_size
        )))?;
    // LUKS2 keeps the key size only in keyslots, and there are none: a
    // token records it, for `status` and for ops reading `luksDump`, with
    // the geometry the volume is assembled with.
    let token = serde_json::json!({
        "type": TOKEN_TYPE,
        "keyslots": [],
        "key_bits": p.key_bits,
        "members": geometry.members,
        "chunk_kib": geometry.chunk_kib,
    });
    cd.token_handle()
        .json_set(TokenInput::AddToken(&token))
        .map_err(lib_err(format!("writing the {TOKEN_TYPE} token on {d}")))?;
    let uuid = cd
        .status_handle()
        .get_uuid()
        .map_err(lib_err(format!("reading the LUKS UUID of {d}")))?;
    let uuid = uuid.to_string();
    Ok(Formatted {
        cd,
        dev: dev.to_path_buf(),
        uuid,
    })
}

/// Opens the LUKS2 volume on `dev` as `/dev/mapper/ephemera` with `key`,
/// which libcryptsetup checks against the header's digest.
/// `discards` and `workqueues` are `luks.discards` and `luks.workqueues`.
pub fn open(dev: &Path, discards: bool, workqueues: bool, key: &[u8]) -> Result<()> {
    activate(&mut load(dev)?, dev, discards, workqueues, key)
}

fn activate(
    cd: &mut CryptDevice,
    dev: &Path,
    discards: bool,
    workqueues: bool,
    key: &[u8],
) -> Result<()> {
    let d = dev.display();
    // The key goes to the kernel keyring, so the dm table shows a key
    // reference, not the key.
    cd.context_handle()
        .volume_key_keyring(true)
        .map_err(lib_err(
            "enabling the kernel keyring for the volume key".into(),
        ))?;
    cd.activate_handle()
        .activate_by_volume_key(
            Some(DM_NAME),
            Some(key),
            activation_flags(discards, workqueues),
        )
        .map_err(lib_err(format!("opening {d} as /dev/mapper/{DM_NAME}")))?;
    Ok(())
}

fn load(dev: &Path) -> Result<CryptDevice> {
    let d = dev.display();
    let mut cd = CryptInit::init(dev).map_err(lib_err(format!("opening {d}")))?;
    cd.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .map_err(lib_err(format!("reading the LUKS2 header on {d}")))?;
    Ok(cd)
}

pub fn close() -> Result<()> {
    let mut cd = CryptInit::init_by_name_and_header(DM_NAME, None)
        .map_err(lib_err(format!("finding /dev/mapper/{DM_NAME}")))?;
    cd.activate_handle()
        .deactivate(DM_NAME, CryptDeactivate::empty())
        .map_err(lib_err(format!("closing /dev/mapper/{DM_NAME}")))
}

/// What `status` reports of the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LuksInfo {
    pub uuid: String,
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
    pub keyslots: u32,
    /// Header size: the data starts here, in bytes.
    #[serde(skip)]
    pub data_offset: u64,
    /// The geometry recorded at format; `None` in a header written by a
    /// release before it was recorded.
    #[serde(skip)]
    pub geometry: Option<Geometry>,
}

pub fn info(dev: &Path) -> Result<LuksInfo> {
    let mut cd = load(dev)?;
    let mut st = cd.status_handle();
    let cipher = format!(
        "{}-{}",
        st.get_cipher()
            .map_err(lib_err("reading the cipher".into()))?,
        st.get_cipher_mode()
            .map_err(lib_err("reading the cipher mode".into()))?
    );
    let uuid = st.get_uuid().map_err(lib_err("reading the UUID".into()))?;
    let data_offset = st.get_data_offset() * 512;
    let sector_size = libcryptsetup_rs::get_sector_size(Some(&mut cd)) as u32;
    let token = (0..32)
        .filter_map(|t| cd.token_handle().json_get(t).ok())
        .find(|j| j["type"] == TOKEN_TYPE);
    let key_bits = token
        .as_ref()
        .and_then(|j| j["key_bits"].as_u64())
        .unwrap_or(0) as u32;
    let geometry = token
        .filter(|j| j.get("members").is_some())
        .and_then(|j| serde_json::from_value::<Geometry>(j).ok());
    let mut keyslots = 0;
    for slot in 0..32 {
        if let Ok(KeyslotInfo::Active | KeyslotInfo::ActiveLast | KeyslotInfo::Unbound) =
            cd.keyslot_handle().status(slot)
        {
            keyslots += 1;
        }
    }
    Ok(LuksInfo {
        uuid: uuid.to_string(),
        cipher,
        key_bits,
        sector_size,
        keyslots,
        data_offset,
        geometry,
    })
}

/// Overwrites the LUKS2 header area (both header copies) on `dev` with
/// zeros. With the header gone and no key anywhere, the data is shredded.
pub fn erase_header(dev: &Path, header_bytes: u64) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(dev)
        .map_err(Error::io("opening for header erase", dev))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = header_bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])
            .map_err(Error::io("erasing the LUKS header on", dev))?;
        left -= n as u64;
    }
    f.sync_all().map_err(Error::io("syncing", dev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn expected_messages_are_not_warnings_but_real_ones_are() {
        let small = "WARNING: keyslots area (4096 bytes) is very small, available LUKS2 keyslot count is very limited.";
        assert_eq!(log_level(CryptLogLevel::Normal, small), Level::DEBUG);
        // Another size is not what ephemera asked for: still a warning.
        let other = "WARNING: keyslots area (8192 bytes) is very small, available LUKS2 keyslot count is very limited.";
        assert_eq!(log_level(CryptLogLevel::Normal, other), Level::WARN);
        assert_eq!(
            log_level(
                CryptLogLevel::Normal,
                "WARNING: Locking directory /run/cryptsetup is missing!"
            ),
            Level::WARN
        );
        assert_eq!(log_level(CryptLogLevel::Error, small), Level::ERROR);
        assert_eq!(
            log_level(CryptLogLevel::Normal, "Command successful."),
            Level::INFO
        );
        assert_eq!(log_level(CryptLogLevel::Debug, "anything"), Level::DEBUG);
    }

    /// The geometry goes into the header's token at format, and comes back
    /// from it; cryptsetup, not ephemera, shows it in the header's JSON.
    #[test]
    fn the_header_records_the_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("member0.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let plan = LuksPlan {
            cipher: "aes".into(),
            mode: "xts-plain64".into(),
            key_bits: 512,
            sector_size: 4096,
            discards: false,
            workqueues: false,
        };
        let g = Geometry {
            members: vec!["AWS-A".into(), "AWS-B".into(), "AWS-C".into()],
            chunk_kib: Some(256),
        };
        let key = [7u8; 64];
        drop(format(&img, &plan, &g, &key).unwrap());
        assert_eq!(info(&img).unwrap().geometry, Some(g));
        let out = std::process::Command::new("cryptsetup")
            .args(["luksDump", "--dump-json-metadata"])
            .arg(&img)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let token = &json["tokens"]["0"];
        assert_eq!(token["type"], TOKEN_TYPE, "{json}");
        assert_eq!(
            token["members"],
            serde_json::json!(["AWS-A", "AWS-B", "AWS-C"])
        );
        assert_eq!(token["chunk_kib"], 256);
    }
}
