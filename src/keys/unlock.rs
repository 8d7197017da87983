//! Unlock without a person (`[unlock]`): the volume key bound to this
//! instance's TPM and/or tang servers with clevis, kept beside the escrow
//! envelopes as an unlock file, `escrow.<LUKS UUID>.unlock.json`:
//!
//! ```json
//! {"version":1,"created":"...","host":"i-...","luks_uuid":"...","cipher":"twofish-xts-plain64",
//!  "key_bits":512,"sector_size":4096,"members":["AWS1..."],"raid":{"level":0,"chunk_kib":256},
//!  "pins":"2 of tpm2, tang http://tang1:7500","clevis":"<clevis JWE, compact form>"}
//! ```
//!
//! `clevis` is clevis's own token, so that ops can open it with Debian's
//! or RHEL's `clevis decrypt` alone: `jq -j .clevis FILE | clevis decrypt`
//! prints the volume key. It is always an `sss` token (one code path, any
//! threshold), whose pins are `tpm2` and `tang`.
//!
//! Why clevis and not tss-esapi plus a tang client written here: clevis is
//! the standard NBDE client (RHEL, Ignition, Debian), its token format is
//! what ops' runbooks already know, and its tpm2 and tang pins are well
//! reviewed. The cost: the key crosses a pipe to `clevis encrypt` at
//! provision and back from `clevis decrypt` at boot (`host::cmd::pipe`).
//! Those are root's own processes, started by ephemera with a clean
//! environment; the pipes are kernel buffers, never files; and clevis
//! passes the plaintext between its own tools through pipes too (`jose jwe
//! enc -I-` and `jose jwe dec`), never through argv or a file. The system
//! test's leak scan checks the root and member disks and the console.

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
    /// What it is bound to, for people (`describe_token` of `clevis`).
    pub pins: String,
    /// clevis's JWE, compact serialization.
    pub clevis: String,
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

/// The clevis `sss` configuration for `u`: `{"t":T,"pins":{...}}`.
pub fn clevis_config(u: &Unlock) -> String {
    let mut pins = serde_json::Map::new();
    if u.tpm2 {
        pins.insert(
            "tpm2".into(),
            serde_json::json!([{ "pcr_bank": u.tpm2_pcr_bank, "pcr_ids": u.tpm2_pcrs }]),
        );
    }
    if !u.tang.is_empty() {
        let tang: Vec<serde_json::Value> = u
            .tang
            .iter()
            .map(|t| serde_json::json!({ "url": t.url, "thp": t.thp }))
            .collect();
        pins.insert("tang".into(), tang.into());
    }
    serde_json::json!({ "t": u.threshold, "pins": pins }).to_string()
}

/// Binds `key` to the pins of `u` with `clevis encrypt sss`, the key on
/// its stdin. Reaches each tang server once (for its advertisement, which
/// must be signed by the pinned key). Bounded by `u.wait_secs`.
pub fn seal(key: &VolumeKey, u: &Unlock, h: escrow::Header) -> Result<Sealed> {
    let cfg = clevis_config(u);
    let out = cmd::pipe(
        "binding the volume key with clevis encrypt sss",
        "clevis",
        &["encrypt", "sss", cfg.as_str()],
        key.as_bytes(),
        Duration::from_secs(u.wait_secs),
    )?;
    let token = String::from_utf8_lossy(&out).trim().to_string();
    let pins = describe_token(&token).map_err(|why| {
        Error::Failed(format!(
            "clevis encrypt gave a token that does not parse: {why}"
        ))
    })?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Failed(format!("formatting the time: {e}")))?;
    Ok(Sealed {
        version: 1,
        created,
        host: h.host,
        luks_uuid: h.luks_uuid,
        cipher: h.cipher,
        key_bits: key.bits(),
        sector_size: h.sector_size,
        members: h.members,
        raid: h.raid,
        pins,
        clevis: token,
    })
}

/// Asks clevis for the key, once every `RETRY` until `wait` has passed:
/// at boot the network and the tang servers may come late. Each attempt is
/// bounded too. Returns the last error when no attempt succeeded.
pub fn open(s: &Sealed, wait: Duration) -> Result<VolumeKey> {
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
            s.clevis.as_bytes(),
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
    if s.version != 1 {
        return Err(bad(format!(
            "version {} is not supported (1 is)",
            s.version
        )));
    }
    escrow::volume_params(&s.volume()).map_err(bad)?;
    let pins = describe_token(&s.clevis).map_err(|why| bad(format!("clevis: {why}")))?;
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
fn protected_header(token: &str) -> std::result::Result<serde_json::Value, String> {
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
    use crate::config::unlock::Tang;

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
    fn the_clevis_config_has_every_pin_and_the_threshold() {
        let u = Unlock {
            tpm2: true,
            tang: vec![Tang {
                url: "http://t:7500".into(),
                thp: "x".repeat(43),
            }],
            threshold: 2,
            ..Unlock::default()
        };
        let v: serde_json::Value = serde_json::from_str(&clevis_config(&u)).unwrap();
        assert_eq!(v["t"], 2);
        assert_eq!(v["pins"]["tpm2"][0]["pcr_ids"], "7");
        assert_eq!(v["pins"]["tpm2"][0]["pcr_bank"], "sha256");
        assert_eq!(v["pins"]["tang"][0]["url"], "http://t:7500");
        assert_eq!(v["pins"]["tang"][0]["thp"], "x".repeat(43));
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
            ("version", serde_json::json!(2), "version 2"),
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
}
