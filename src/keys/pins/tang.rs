//! The `tang` pin, through clevis: `clevis encrypt tang` of the pin's part,
//! `clevis decrypt` of its token. clevis is needed only when a tang server
//! is configured (the config check says so, naming clevis). Why clevis
//! still: a tang client is JOSE and the ECMR exchange, which clevis and
//! jose do well and which Debian and RHEL review; writing them here would
//! duplicate that for one pin, and `clevis decrypt` stays the manual path.
//!
//! The part crosses a pipe to clevis and back (`host::cmd::pipe`, never
//! argv, a file or the environment), and clevis passes it between its own
//! tools through pipes too. Those processes' memory is not locked: with
//! `[unlock]`, run the node without swap (docs/UNLOCK.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Failure;
use crate::config::unlock::Tang;
use crate::host::cmd;

/// What the unlock file keeps for one `tang` pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// The server, for people and messages; the token names it too.
    pub url: String,
    /// clevis's JWE of the part, compact form.
    pub clevis: String,
}

/// Binds `part` to the tang server `t` (its advertisement must be signed
/// by the key of thumbprint `t.thp`), within `bound`.
pub fn seal(part: &[u8], t: &Tang, bound: Duration) -> Result<Slot, Failure> {
    let cfg = serde_json::json!({ "url": t.url, "thp": t.thp }).to_string();
    let out = cmd::pipe(
        &format!("binding a part of the key to tang {}", t.url),
        "clevis",
        &["encrypt", "tang", cfg.as_str()],
        part,
        bound,
    )
    .map_err(|e| Failure {
        permanent: false,
        why: format!("tang {}: {e}", t.url),
    })?;
    Ok(Slot {
        url: t.url.clone(),
        clevis: String::from_utf8_lossy(&out).trim().to_string(),
    })
}

/// Asks the tang server for the part, once, within `bound`. A failure is
/// never permanent: the network and the server may come back.
pub fn unseal(s: &Slot, bound: Duration) -> Result<Zeroizing<Vec<u8>>, Failure> {
    cmd::pipe(
        &format!("asking tang {} with clevis decrypt", s.url),
        "clevis",
        &["decrypt"],
        s.clevis.as_bytes(),
        bound,
    )
    .map_err(|e| Failure {
        permanent: false,
        why: format!("tang {}: {e}", s.url),
    })
}

/// The token is a clevis tang JWE naming the slot's URL.
pub fn check(s: &Slot) -> Result<(), String> {
    let h = crate::keys::unlock::protected_header(&s.clevis)?;
    let pin = h.pointer("/clevis/pin").and_then(|p| p.as_str());
    let url = h.pointer("/clevis/tang/url").and_then(|u| u.as_str());
    if pin != Some("tang") || url != Some(s.url.as_str()) {
        return Err(format!(
            "its clevis token is not a tang pin for {:?}",
            s.url.chars().take(256).collect::<String>()
        ));
    }
    Ok(())
}
