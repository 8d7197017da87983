//! Unlock without a person (`[unlock]`): the volume key bound to this
//! instance's pins, kept beside the escrow envelopes as an unlock file,
//! `escrow.<LUKS UUID>.unlock.json`. Two versions:
//!
//! - **2** (written now): ephemera's own threshold (`keys::pins`): the key
//!   split with Shamir's scheme, one part per pin (`tpm2` sealed natively,
//!   `kms`, `tang` through clevis), any `threshold` of which give it back:
//!
//! ```json
//! {"version":2,"created":"...","host":"i-...","luks_uuid":"...","cipher":"twofish-xts-plain64",
//!  "key_bits":512,"sector_size":4096,"members":["AWS1..."],"raid":{"level":0,"chunk_kib":256},
//!  "pins":"2 of tpm2, kms arn:...","threshold":2,
//!  "slots":[{"pin":"tpm2","pcr_bank":"sha256","pcrs":"7","public":"...","private":"..."},
//!           {"pin":"kms","key_id":"arn:...","region":"...","context":{...},"ciphertext":"..."}]}
//! ```
//!
//! - **1** (written by earlier releases, still unlocked): clevis's `sss`
//!   token in `clevis`, opened by `clevis decrypt` (`jq -j .clevis FILE |
//!   clevis decrypt` prints the key), whose pins are `tpm2` and `tang`.
//!   The key crosses a pipe from `clevis decrypt` (`host::cmd::pipe`),
//!   never argv or a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::unlock::Unlock;
use crate::error::{Error, Result};
use crate::host::cmd;
use crate::host::safe_fs;
use crate::host::Host;
use crate::keys::escrow::{self, RaidInfo};
use crate::keys::key::VolumeKey;
use crate::keys::pins::{self, Reach};

/// The unlock file's marker name beside the envelopes.
pub const UNLOCK: &str = "unlock.json";
/// The longest token accepted (a few pins make a few KiB).
pub const MAX_TOKEN: usize = 64 * 1024;
/// One `clevis decrypt` at most this long (a tang server that takes the
/// connection and never answers); `wait_secs` bounds the whole unlock.
const ATTEMPT: Duration = Duration::from_secs(20);
/// Between two attempts: the network may still be coming up.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub version: u32,
    pub created: String,
    pub host: String,
    pub luks_uuid: String,
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
    /// Member serials in array order; the first holds the LUKS header.
    pub members: Vec<String>,
    pub raid: Option<RaidInfo>,
    /// What it is bound to, for people (version 1: `describe_token` of
    /// `clevis`; version 2: `pins::describe`).
    pub pins: String,
    /// Version 1: clevis's JWE, compact serialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clevis: Option<String>,
    /// Version 2: how many pins must give their part, and one slot each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<pins::Slot>,
}

impl Sealed {
    /// What it says about its volume, as the envelope says it.
    pub fn volume(&self) -> escrow::Volume<'_> {
        escrow::Volume {
            created: &self.created,
            host: &self.host,
            cipher: &self.cipher,
            luks_uuid: &self.luks_uuid,
            key_bits: self.key_bits,
            sector_size: self.sector_size,
            members: &self.members,
            raid: self.raid.as_ref(),
        }
    }
}

/// Where the unlock file of `luks_uuid` is: beside the envelopes, named
/// like their markers (`escrow.json` -> `escrow.<LUKS UUID>.unlock.json`).
pub fn path_for(escrow_path: &Path, luks_uuid: &str) -> PathBuf {
    escrow::marker(escrow_path, luks_uuid, UNLOCK)
}

/// Binds `key` to the pins of `u` (`pins::seal`): an unlock file of
/// version 2. Bounded by `u.wait_secs`.
pub fn seal(key: &VolumeKey, u: &Unlock, reach: &Reach, h: escrow::Header) -> Result<Sealed> {
    let slots = pins::seal(key, u, &h.luks_uuid, reach)?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Failed(format!("formatting the time: {e}")))?;
    Ok(Sealed {
        version: 2,
        created,
        host: h.host,
        luks_uuid: h.luks_uuid,
        cipher: h.cipher,
        key_bits: key.bits(),
        sector_size: h.sector_size,
        members: h.members,
        raid: h.raid,
        pins: pins::describe(u.threshold, &slots),
        clevis: None,
        threshold: Some(u.threshold),
        slots,
    })
}

/// The key from the file's pins, within `wait`: version 2 by ephemera's
/// own threshold, version 1 by `clevis decrypt`.
pub fn open(s: &Sealed, reach: &Reach, wait: Duration) -> Result<VolumeKey> {
    match (&s.clevis, s.threshold) {
        (None, Some(t)) => pins::open(t, &s.slots, &s.luks_uuid, s.key_bits, reach, wait),
        (Some(token), _) => open_clevis(s, token, wait),
        (None, None) => Err(Error::Failed(format!(
            "unlock file of LUKS UUID {} has neither a clevis token nor pins",
            s.luks_uuid
        ))),
    }
}

/// Whether clevis's failure is a TPM's refusal that waiting cannot change
/// (another TPM: TPM_RC_INTEGRITY at tpm2_load; changed PCRs:
/// TPM_RC_POLICY_FAIL at tpm2_unseal), for a token whose every pin is a
/// TPM's: then no other pin could still answer.
pub fn clevis_refused_for_good(pins: &str, error: &str) -> bool {
    let only_tpm = pins
        .split_once(" of ")
        .is_some_and(|(_, p)| p.split(", ").all(|p| p == "tpm2"));
    let tpm_said = [
        "integrity check failed",
        "TPM_RC_INTEGRITY",
        "policy check failed",
        "TPM_RC_POLICY_FAIL",
    ]
    .iter()
    .any(|m| error.contains(m));
    only_tpm && tpm_said
}

/// Asks clevis for the key, once every `RETRY` until `wait` has passed:
/// at boot the network and the tang servers may come late. Each attempt is
/// bounded too. Returns the last error when no attempt succeeded.
fn open_clevis(s: &Sealed, token: &str, wait: Duration) -> Result<VolumeKey> {
    let deadline = Instant::now() + wait;
    let mut attempt = 0;
    let mut previous: Option<String> = None;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let bound = ATTEMPT.min(left.max(Duration::from_secs(1)));
        let r = cmd::pipe(
            &format!(
                "unlocking LUKS UUID {} with clevis decrypt ({})",
                s.luks_uuid, s.pins
            ),
            "clevis",
            &["decrypt"],
            token.as_bytes(),
            bound,
        );
        match r {
            Ok(mut out) => {
                if out.len() != s.key_bits as usize / 8 {
                    return Err(Error::Failed(format!(
                        "clevis decrypt gave {} bytes, not the {}-bit key of LUKS UUID {}",
                        out.len(),
                        s.key_bits,
                        s.luks_uuid
                    )));
                }
                tracing::info!(
                    "unlocked LUKS UUID {} ({}) on attempt {attempt}",
                    s.luks_uuid,
                    s.pins
                );
                return VolumeKey::take(&mut out[..]);
            }
            Err(e) if clevis_refused_for_good(&s.pins, &e.to_string()) => {
                return Err(Error::Failed(format!(
                    "{e} (the TPM refused for good: not asked again)"
                )));
            }
            Err(e) if Instant::now() + RETRY >= deadline => {
                // A last attempt cut short by the deadline (killed) tells
                // less than the one before it, which had its whole bound.
                let why = match previous {
                    Some(p) if bound < ATTEMPT => format!("{p}; then the last attempt: {e}"),
                    _ => e.to_string(),
                };
                return Err(Error::Failed(format!(
                    "{why} (gave up after {attempt} attempts in {} s, unlock.wait_secs)",
                    wait.as_secs()
                )));
            }
            Err(e) => {
                tracing::warn!(
                    "attempt {attempt}: {e}; trying again in {} s",
                    RETRY.as_secs()
                );
                previous = Some(e.to_string());
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Parses an unlock file and checks every field, the token's shape too.
pub fn parse(text: &str, origin: &Path) -> Result<Sealed> {
    let bad = |why: String| Error::Usage(format!("unlock file {}: {why}", origin.display()));
    if text.len() > 2 * MAX_TOKEN {
        return Err(bad(format!("longer than {} bytes", 2 * MAX_TOKEN)));
    }
    let s: Sealed = serde_json::from_str(text.trim()).map_err(|e| bad(e.to_string()))?;
    escrow::volume_params(&s.volume()).map_err(bad)?;
    let pins = match (s.version, &s.clevis, s.threshold) {
        (1, Some(token), None) if s.slots.is_empty() => {
            describe_token(token).map_err(|why| bad(format!("clevis: {why}")))?
        }
        (2, None, Some(t)) => {
            if s.slots.is_empty() || s.slots.len() > 16 || t < 1 || t as usize > s.slots.len() {
                return Err(bad(format!("threshold {t} of {} pins", s.slots.len())));
            }
            for slot in &s.slots {
                slot.check().map_err(bad)?;
            }
            pins::describe(t, &s.slots)
        }
        (1 | 2, ..) => {
            return Err(bad(format!(
                "version {} with the fields of another version",
                s.version
            )))
        }
        (v, ..) => return Err(bad(format!("version {v} is not supported (1 and 2 are)"))),
    };
    if pins != s.pins {
        return Err(bad(format!(
            "pins {:?} are not what its token says ({pins:?})",
            s.pins
        )));
    }
    Ok(s)
}

/// Writes the unlock file (mode 0400, `safe_fs`, as envelopes are).
pub fn store(host: &Host, s: &Sealed, escrow_path: &Path) -> Result<()> {
    let mut json = serde_json::to_string_pretty(s)
        .map_err(|e| Error::Failed(format!("encoding the unlock file: {e}")))?;
    json.push('\n');
    safe_fs::write_file(
        &host.abs(&path_for(escrow_path, &s.luks_uuid)),
        json.as_bytes(),
        escrow::HOW,
    )
}

/// Every unlock file beside the envelopes that parses, read through the
/// host root, as the survey reads envelopes (`escrow::on_node`).
pub fn on_node(host: &Host, escrow_path: &Path) -> Vec<escrow::OnNode> {
    let Some(dir) = escrow_path.parent() else {
        return Vec::new();
    };
    let mut found: Vec<escrow::OnNode> = host
        .entries(&host.abs(dir))
        .into_iter()
        .filter(|name| name.ends_with(UNLOCK))
        .filter_map(|name| {
            let p = dir.join(&name);
            let text = std::fs::read_to_string(host.abs(&p)).ok()?;
            let s = parse(&text, &p).ok()?;
            (path_for(escrow_path, &s.luks_uuid) == p).then(|| escrow::OnNode {
                never_mounted: host
                    .abs(&escrow::marker(
                        escrow_path,
                        &s.luks_uuid,
                        escrow::NEVER_MOUNTED,
                    ))
                    .exists(),
                discarded: host
                    .abs(&escrow::marker(
                        escrow_path,
                        &s.luks_uuid,
                        escrow::DISCARDED,
                    ))
                    .exists(),
                luks_uuid: s.luks_uuid,
                members: s.members,
                created: s.created,
                path: p,
            })
        })
        .collect();
    found.sort_by(|a, b| b.created.cmp(&a.created));
    found
}

/// What a clevis token is bound to, for people: `2 of tpm2, tang URL`.
/// Checks its shape on the way: five base64url parts, a protected header
/// that is a JSON object naming the `sss` pin, a threshold within its
/// pins, and inner tokens of the `tpm2` or `tang` pin (one level deep).
pub fn describe_token(token: &str) -> std::result::Result<String, String> {
    let header = protected_header(token)?;
    let sss = header
        .pointer("/clevis/sss")
        .filter(|_| header.pointer("/clevis/pin").and_then(|p| p.as_str()) == Some("sss"))
        .ok_or("its pin is not sss")?;
    let t = sss
        .get("t")
        .and_then(|t| t.as_u64())
        .ok_or("sss has no threshold t")?;
    let inner = sss
        .get("jwe")
        .and_then(|j| j.as_array())
        .ok_or("sss has no jwe list")?;
    if t < 1 || t > inner.len() as u64 || inner.len() > 16 {
        return Err(format!("sss threshold {t} of {} pins", inner.len()));
    }
    let mut pins = Vec::new();
    for j in inner {
        let j = j.as_str().ok_or("an sss pin is not a string")?;
        let h = protected_header(j)?;
        let pin = h
            .pointer("/clevis/pin")
            .and_then(|p| p.as_str())
            .unwrap_or_default();
        pins.push(match pin {
            "tpm2" => "tpm2".to_string(),
            "tang" => {
                let url = h
                    .pointer("/clevis/tang/url")
                    .and_then(|u| u.as_str())
                    .ok_or("a tang pin names no url")?;
                if url.len() > 256 || url.contains(|c: char| c.is_control() || c == ',') {
                    return Err("a tang pin's url is not one line up to 256 bytes".into());
                }
                format!("tang {url}")
            }
            other => {
                return Err(format!(
                    "pin {:?} is not tpm2 or tang",
                    other.chars().take(16).collect::<String>()
                ))
            }
        });
    }
    Ok(format!("{t} of {}", pins.join(", ")))
}

/// The protected header of a compact JWE, as JSON.
pub fn protected_header(token: &str) -> std::result::Result<serde_json::Value, String> {
    if token.len() > MAX_TOKEN {
        return Err(format!("longer than {MAX_TOKEN} bytes"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let b64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.len() != 5 || !parts.iter().all(|p| b64url(p)) {
        return Err("not a JWE in compact form (five base64url parts)".into());
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| "its protected header is not base64url")?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| "its protected header is not JSON")?;
    if !v.is_object() {
        return Err("its protected header is not a JSON object".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with clevis's header layout (the parts after the header are
    /// not read by `describe_token`).
    fn token(t: u64, inner: &[serde_json::Value]) -> String {
        let jwe: Vec<String> = inner
            .iter()
            .map(|h| format!("{}.a.b.c.d", b64(h)))
            .collect();
        let h = serde_json::json!({"alg":"dir","enc":"A256GCM","clevis":{"pin":"sss","sss":{"t":t,"jwe":jwe}}});
        format!("{}..iv.ct.tag", b64(&h))
    }

    #[test]
    fn tokens_are_described_by_their_pins() {
        let tpm = serde_json::json!({"clevis":{"pin":"tpm2","tpm2":{}}});
        let tang = serde_json::json!({"clevis":{"pin":"tang","tang":{"url":"http://t:7500"}}});
        assert_eq!(
            describe_token(&token(2, &[tpm.clone(), tang.clone()])).unwrap(),
            "2 of tpm2, tang http://t:7500"
        );
        for (bad, why) in [
            (token(3, &[tpm.clone(), tang.clone()]), "threshold 3 of 2"),
            (token(0, std::slice::from_ref(&tpm)), "threshold 0"),
            (
                token(1, &[serde_json::json!({"clevis":{"pin":"sss"}})]),
                "not tpm2 or tang",
            ),
            ("a.b.c".into(), "compact form"),
            ("e30.a.b.c.d".into(), "its pin is not sss"),
            ("bm90IGpzb24.a.b.c.d".into(), "not JSON"),
        ] {
            let e = describe_token(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn unlock_files_parse_only_whole() {
        let tpm = serde_json::json!({"clevis":{"pin":"tpm2","tpm2":{}}});
        let good = serde_json::json!({
            "version":1,"created":"2026-12-05T00:00:00Z","host":"i-1","luks_uuid":"6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d",
            "cipher":"twofish-xts-plain64","key_bits":512,"sector_size":4096,"members":["AWS1","AWS2"],
            "raid":{"level":0,"chunk_kib":256},"pins":"1 of tpm2","clevis":token(1, &[tpm])
        });
        parse(&good.to_string(), Path::new("u.json")).unwrap();
        for (field, value, why) in [
            (
                "pins",
                serde_json::json!("1 of tang"),
                "are not what its token says",
            ),
            ("members", serde_json::json!([]), "lists no members"),
            ("raid", serde_json::Value::Null, "no raid"),
            ("clevis", serde_json::json!("x"), "clevis: not a JWE"),
            ("version", serde_json::json!(2), "version 2 with the fields"),
            (
                "version",
                serde_json::json!(3),
                "version 3 is not supported",
            ),
        ] {
            let mut v = good.clone();
            v[field] = value;
            let e = parse(&v.to_string(), Path::new("u.json"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("unlock file u.json") && e.contains(why),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn files_written_by_the_real_kernel_suite_parse() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (file, version, pins) in [
            ("tests/vm/unlock-v1/unlock.json", 1, "1 of tpm2"),
            ("fuzz/corpus/unlock/version-2-tpm2.json", 2, "1 of tpm2"),
            (
                "fuzz/corpus/unlock/version-2-tpm2-kms.json",
                2,
                "2 of tpm2, kms arn:aws:kms:",
            ),
        ] {
            let p = repo.join(file);
            let s = parse(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
            assert_eq!(s.version, version, "{file}");
            assert!(s.pins.starts_with(pins), "{file}: {}", s.pins);
            assert_eq!(s.clevis.is_some(), version == 1, "{file}");
        }
    }
}
