//! Key escrow: the volume key encrypted to RSA public keys (RSA-OAEP with
//! SHA-256), in a JSON envelope that standard tools can open:
//! `jq -r .ciphertext | base64 -d | openssl pkeyutl -decrypt ...`.
//!
//! Version 1 has one recipient (`recipient`, `ciphertext`). Version 2 has
//! several (`recipients`, each with its `ciphertext`) and a `threshold`:
//! with 1, each ciphertext is the key itself, so any one private key
//! recovers; with t > 1, the key is split with Shamir's scheme in GF(256)
//! (the `blahaj` crate) into one share per recipient, any t of which give
//! it back and fewer nothing. One key with threshold 1 still writes
//! version 1.

use std::path::{Path, PathBuf};

use base64::Engine;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::host::safe_fs;
use crate::host::Host;
use crate::keys::key::VolumeKey;
use crate::volume::md;

pub const ALG: &str = "RSA-OAEP-256";
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA key the `rsa` crate accepts (its `RsaPublicKey::MAX_SIZE`).
pub const MAX_RSA_BITS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub created: String,
    pub host: String,
    pub luks_uuid: String,
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
    /// Member serials in array order.
    pub members: Vec<String>,
    pub raid: Option<RaidInfo>,
    /// Version 1: its one recipient, and the key encrypted to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    /// Version 2: how many recipients recover together, and one slot each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<Slot>,
}

/// A version 2 recipient: its key and what is encrypted to it (the key
/// with threshold 1, its share of the key above).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub alg: String,
    pub key_fingerprint: String,
    pub ciphertext: String,
}

impl Envelope {
    /// How many recipients must give their part (1 for version 1).
    pub fn threshold(&self) -> u32 {
        self.threshold.unwrap_or(1)
    }
    /// Every recipient as (algorithm, fingerprint, ciphertext), version 1's
    /// one included.
    pub fn slots(&self) -> Vec<(&str, &str, &str)> {
        match (&self.recipient, &self.ciphertext) {
            (Some(r), Some(ct)) => vec![(r.alg.as_str(), r.key_fingerprint.as_str(), ct.as_str())],
            _ => self
                .recipients
                .iter()
                .map(|s| {
                    (
                        s.alg.as_str(),
                        s.key_fingerprint.as_str(),
                        s.ciphertext.as_str(),
                    )
                })
                .collect(),
        }
    }
}

/// The most recipients an envelope may name (`config::MAX_ESCROW_KEYS`).
pub const MAX_RECIPIENTS: usize = crate::config::MAX_ESCROW_KEYS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidInfo {
    pub level: u32,
    pub chunk_kib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub alg: String,
    pub key_fingerprint: String,
}

fn read_pem(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Usage(format!("{what} {}: cannot read: {e}", path.display())))?;
    // A file that is not UTF-8 gives its bytes back in the error: wiped
    // there too, as a private key's bytes must be.
    String::from_utf8(bytes).map(Zeroizing::new).map_err(|e| {
        drop(Zeroizing::new(e.into_bytes()));
        Error::Usage(format!("{what} {}: not a PEM file", path.display()))
    })
}

/// Reads an RSA public key, SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA
/// PUBLIC KEY`), and refuses keys under 2048 or over 4096 bits.
pub fn load_public_key(path: &Path) -> Result<RsaPublicKey> {
    let what = "escrow public key";
    let pem = read_pem(path, what)?;
    let bad = |why: String| Error::Usage(format!("{what} {}: {why}", path.display()));
    if pem.contains(crate::config::PLACEHOLDER) {
        return Err(bad(
            "is the example's placeholder, left in: put your RSA public key there \
             (openssl pkey -in escrow.key.pem -pubout), or remove escrow.public_key to run \
             without escrow"
                .into(),
        ));
    }
    // The rsa crate refuses moduli over 4096 bits as malformed: say so first.
    if let Some(bits) = modulus_bits(&pem).filter(|b| *b > MAX_RSA_BITS) {
        return Err(bad(format!(
            "RSA key is {bits} bits; at most {MAX_RSA_BITS} are supported (use a 2048 to {MAX_RSA_BITS}-bit key)"
        )));
    }
    let key = if pem.contains("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(pem.trim())
            .map_err(|e| bad(format!("malformed PKCS#1 RSA public key: {e}")))?
    } else if pem.contains("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(pem.trim()).map_err(|e| match e {
            rsa::pkcs8::spki::Error::OidUnknown { .. } => {
                bad("not an RSA key (only RSA public keys are supported)".into())
            }
            e => bad(format!("malformed or non-RSA public key: {e}")),
        })?
    } else if pem.contains("PRIVATE KEY-----") {
        return Err(bad(
            "is a private key; give ephemera only the public half (openssl pkey -pubout)".into(),
        ));
    } else {
        return Err(bad(
            "no PEM public key found (expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)".into(),
        ));
    };
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(bad(format!(
            "RSA key is {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    Ok(key)
}

/// The modulus size of a PEM RSA public key (SPKI or PKCS#1), read from its
/// ASN.1 without the rsa crate's size limit; None if it is not one.
fn modulus_bits(pem: &str) -> Option<usize> {
    use rsa::pkcs1::der::Document;
    let (label, doc) = Document::from_pem(pem.trim()).ok()?;
    let spki;
    let pkcs1 = match label {
        "PUBLIC KEY" => {
            spki = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(doc.as_bytes()).ok()?;
            spki.subject_public_key.raw_bytes()
        }
        "RSA PUBLIC KEY" => doc.as_bytes(),
        _ => return None,
    };
    let key = rsa::pkcs1::RsaPublicKey::try_from(pkcs1).ok()?;
    let n = key.modulus.as_bytes();
    Some(n.len() * 8 - n.first()?.leading_zeros() as usize)
}

/// Reads an RSA private key, PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1.
pub fn load_private_key(path: &Path) -> Result<RsaPrivateKey> {
    let what = "private key";
    let pem = read_pem(path, what)?;
    let bad = |why: String| Error::Usage(format!("{what} {}: {why}", path.display()));
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs1_pem(pem.trim())
            .map_err(|e| bad(format!("malformed PKCS#1 RSA private key: {e}")))
    } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| bad(format!("malformed or non-RSA private key: {e}")))
    } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        Err(bad(
            "is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)".into(),
        ))
    } else {
        Err(bad("no PEM RSA private key found".into()))
    }
}

/// Reads every escrow public key, in order, and refuses the same key named
/// twice under two paths (its share would count twice).
pub fn load_public_keys(paths: &[PathBuf]) -> Result<Vec<RsaPublicKey>> {
    let mut keys: Vec<RsaPublicKey> = Vec::new();
    for p in paths {
        let k = load_public_key(p)?;
        if keys.contains(&k) {
            return Err(Error::Usage(format!(
                "escrow public key {}: the same key as another in escrow.public_keys",
                p.display()
            )));
        }
        keys.push(k);
    }
    Ok(keys)
}

/// `sha256:` and the hex SHA-256 of the key's DER SubjectPublicKeyInfo, what
/// `openssl pkey -pubin -outform DER | sha256sum` prints.
pub fn fingerprint(key: &RsaPublicKey) -> Result<String> {
    let der = key
        .to_public_key_der()
        .map_err(|e| Error::Failed(format!("encoding the public key: {e}")))?;
    let digest = Sha256::digest(der.as_bytes());
    Ok(format!("sha256:{}", hex(&digest)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The envelope's fields other than the recipient and the ciphertext.
#[derive(Debug, Clone)]
pub struct Header {
    pub host: String,
    pub luks_uuid: String,
    pub cipher: String,
    pub sector_size: u32,
    pub members: Vec<String>,
    pub raid: Option<RaidInfo>,
}

/// RSA-OAEP-SHA-256 of `plain` to `to`, in base64.
fn encrypt_to(to: &RsaPublicKey, plain: &[u8]) -> Result<String> {
    let ct = to
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), plain)
        .map_err(|e| Error::Failed(format!("encrypting the volume key for escrow: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ct))
}

/// Encrypts the key to the keys `to`, any `threshold` of which recover it
/// (`threshold` between 1 and `to.len()`, checked by the config). The copies
/// this makes, and how long they live (rsa 0.9.10): the OAEP-encoded block
/// and its `BigUint` are `Zeroizing` inside the crate and wiped before
/// `encrypt` returns; the temporaries of the modular exponentiation
/// (num-bigint-dig) are freed unwiped, and the crate's API offers no hook to
/// reach them. With a threshold, blahaj's shares wipe themselves on drop
/// (its `zeroize_memory` feature); the polynomial's coefficients, in its
/// dealer, do not. All of it lives only during this call, in memory that
/// `key::harden_process` keeps out of swap and cores.
pub fn seal(key: &VolumeKey, to: &[RsaPublicKey], threshold: u32, h: Header) -> Result<Envelope> {
    if to.is_empty() || to.len() > MAX_RECIPIENTS || threshold < 1 || threshold as usize > to.len()
    {
        return Err(Error::Failed(format!(
            "escrow to {} keys with threshold {threshold} is not possible",
            to.len()
        )));
    }
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Failed(format!("formatting the time: {e}")))?;
    let mut env = Envelope {
        version: 1,
        created,
        host: h.host,
        luks_uuid: h.luks_uuid,
        cipher: h.cipher,
        key_bits: key.bits(),
        sector_size: h.sector_size,
        members: h.members,
        raid: h.raid,
        recipient: None,
        ciphertext: None,
        threshold: None,
        recipients: Vec::new(),
    };
    if let ([one], 1) = (to, threshold) {
        env.recipient = Some(Recipient {
            alg: ALG.into(),
            key_fingerprint: fingerprint(one)?,
        });
        env.ciphertext = Some(encrypt_to(one, key.as_bytes())?);
        return Ok(env);
    }
    env.version = 2;
    env.threshold = Some(threshold);
    // Part i (share x = i + 1, or the key with threshold 1) goes to key i,
    // in the config's order.
    let parts = crate::keys::shamir::split(key, threshold, to.len());
    for (pk, part) in to.iter().zip(&parts) {
        let ciphertext = encrypt_to(pk, part)?;
        env.recipients.push(Slot {
            alg: ALG.into(),
            key_fingerprint: fingerprint(pk)?,
            ciphertext,
        });
    }
    Ok(env)
}

/// The longest ciphertext: base64 of one block of the largest key (4096 bits).
const MAX_CIPHERTEXT_B64: usize = MAX_RSA_BITS.div_ceil(8).div_ceil(3) * 4;

/// What `recover` hands to the kernel, worked out from an envelope alone: the
/// members to find by serial, the md ioctl values, the LUKS2 header to
/// expect and the key's length. Pure, so the whole envelope-to-ioctl path
/// can be fuzzed (fuzz/fuzz_targets/envelope.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryParams {
    pub serials: Vec<String>,
    pub raid: Option<md::Raid0Geometry>,
    pub luks_uuid: String,
    pub key_bytes: usize,
    pub sector_size: u32,
}

/// Checks every field of an envelope against the values provision can write,
/// and returns what recovery does with it. An envelope may come from
/// anywhere (a console log, a ticket), so nothing in it is trusted.
pub fn recovery_params(env: &Envelope) -> std::result::Result<RecoveryParams, String> {
    match env.version {
        1 if env.recipient.is_some()
            && env.ciphertext.is_some()
            && env.threshold.is_none()
            && env.recipients.is_empty() => {}
        1 => {
            return Err("version 1 has one recipient and one ciphertext, no recipients list".into())
        }
        2 if env.recipient.is_none() && env.ciphertext.is_none() => {
            let n = env.recipients.len();
            let t = env.threshold.unwrap_or(0);
            if !(1..=MAX_RECIPIENTS).contains(&n) {
                return Err(format!("lists {n} recipients, not 1 to {MAX_RECIPIENTS}"));
            }
            if t < 1 || t as usize > n {
                return Err(format!(
                    "threshold {t} is not between 1 and its {n} recipients"
                ));
            }
        }
        2 => return Err("version 2 has recipients, not recipient and ciphertext".into()),
        v => return Err(format!("version {v} is not supported (1 and 2 are)")),
    }
    let slots = env.slots();
    for (i, (alg, fp, ct)) in slots.iter().enumerate() {
        if *alg != ALG {
            return Err(format!(
                "algorithm {:?} is not {ALG}",
                alg.chars().take(32).collect::<String>()
            ));
        }
        if !(fp.len() == 71
            && fp.starts_with("sha256:")
            && fp[7..].bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("a recipient's key_fingerprint is not sha256: and 64 hex digits".into());
        }
        if slots[..i].iter().any(|(_, other, _)| other == fp) {
            return Err(format!("recipient {fp} is listed twice"));
        }
        if ct.trim().len() > MAX_CIPHERTEXT_B64 {
            return Err(format!(
                "ciphertext is longer than a {MAX_RSA_BITS}-bit RSA block ({MAX_CIPHERTEXT_B64} base64 characters)"
            ));
        }
    }
    volume_params(&Volume {
        created: &env.created,
        host: &env.host,
        cipher: &env.cipher,
        luks_uuid: &env.luks_uuid,
        key_bits: env.key_bits,
        sector_size: env.sector_size,
        members: &env.members,
        raid: env.raid.as_ref(),
    })
}

/// What an envelope and an unlock file (`keys::unlock`) both say about the
/// volume: enough to find its members and open it.
pub struct Volume<'a> {
    pub created: &'a str,
    pub host: &'a str,
    pub cipher: &'a str,
    pub luks_uuid: &'a str,
    pub key_bits: u32,
    pub sector_size: u32,
    pub members: &'a [String],
    pub raid: Option<&'a RaidInfo>,
}

/// Checks what a file says about its volume against the values provision
/// can write, and returns what recovery does with it.
pub fn volume_params(env: &Volume) -> std::result::Result<RecoveryParams, String> {
    let text = |what: &str, v: &str, max: usize| {
        if v.len() > max || v.contains(char::is_control) {
            Err(format!("{what} is not up to {max} bytes of printable text"))
        } else {
            Ok(())
        }
    };
    text("created", env.created, 64)?;
    text("host", env.host, 255)?;
    text("cipher", env.cipher, 64)?;
    crate::config::CipherSpec::parse(env.cipher).map_err(|why| format!("cipher: {why}"))?;
    if !is_uuid(env.luks_uuid) {
        return Err(format!("luks_uuid {:?} is not a UUID", env.luks_uuid));
    }
    if ![128, 256, 384, 512].contains(&env.key_bits) {
        return Err(format!(
            "key_bits {} is not one of 128, 256, 384, 512",
            env.key_bits
        ));
    }
    if ![512, 1024, 2048, 4096].contains(&env.sector_size) {
        return Err(format!(
            "sector_size {} is not one of 512, 1024, 2048, 4096",
            env.sector_size
        ));
    }
    if env.members.is_empty() {
        return Err("lists no members".into());
    }
    for (i, m) in env.members.iter().enumerate() {
        // NVMe serials are 20 bytes of printable ASCII, trimmed.
        if m.is_empty() || m.len() > 20 || !m.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "member {i} {m:?} is not an NVMe serial (1 to 20 printable characters)"
            ));
        }
        if env.members[..i].contains(m) {
            return Err(format!("member {m:?} is listed twice"));
        }
    }
    let raid = match (env.raid, env.members.len()) {
        (None, 1) => None,
        (None, _) => return Err("lists several members but no raid".into()),
        (Some(_), 1) => return Err("gives a raid for a single member".into()),
        (Some(r), n) => {
            if r.level != 0 {
                return Err(format!("raid level {} is not RAID0", r.level));
            }
            Some(md::Raid0Geometry::new(n, r.chunk_kib).map_err(|why| format!("raid: {why}"))?)
        }
    };
    Ok(RecoveryParams {
        serials: env.members.to_vec(),
        raid,
        luks_uuid: env.luks_uuid.to_string(),
        key_bytes: env.key_bits as usize / 8,
        sector_size: env.sector_size,
    })
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Parses an envelope and checks every field (`recovery_params`).
pub fn parse(text: &str, origin: &Path) -> Result<Envelope> {
    let bad = |why: String| Error::Usage(format!("escrow envelope {}: {why}", origin.display()));
    let env: Envelope = serde_json::from_str(text.trim()).map_err(|e| bad(e.to_string()))?;
    recovery_params(&env).map_err(bad)?;
    Ok(env)
}

/// Decrypts the envelope's key into locked memory with `keys`: any one of
/// its recipients' with threshold 1, `threshold` of them above (a key that
/// is no recipient's, or too few, is a usage error naming what is missing).
/// rsa 0.9.10 wipes its own decrypted `BigUint` and encoded block; every
/// plaintext `Vec` it returns, key or share, is wrapped in `Zeroizing` at
/// once, and the key is moved into the locked page by `VolumeKey::take`,
/// which wipes the source. The private keys zeroize themselves on drop.
pub fn open(env: &Envelope, keys: &[RsaPrivateKey]) -> Result<VolumeKey> {
    let slots = env.slots();
    let t = env.threshold() as usize;
    let mut parts: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
    for key in keys {
        let fp = fingerprint(&key.to_public_key())?;
        let Some((_, _, ct)) = slots.iter().find(|(_, f, _)| *f == fp) else {
            let all: Vec<&str> = slots.iter().map(|(_, f, _)| *f).collect();
            return Err(Error::Usage(format!(
                "the private key ({fp}) is none of the envelope's recipients ({})",
                all.join(", ")
            )));
        };
        if parts.iter().any(|(f, _)| *f == fp) {
            continue;
        }
        let ct = base64::engine::general_purpose::STANDARD
            .decode(ct.trim())
            .map_err(|e| Error::Usage(format!("escrow envelope ciphertext: {e}")))?;
        let plain = Zeroizing::new(
            key.decrypt(Oaep::new::<Sha256>(), &ct)
                .map_err(|e| Error::Usage(format!("decrypting the escrowed key: {e}")))?,
        );
        parts.push((fp, plain));
        if t == 1 {
            break;
        }
    }
    if parts.len() < t {
        let have: Vec<&str> = parts.iter().map(|(f, _)| f.as_str()).collect();
        let missing: Vec<&str> = slots
            .iter()
            .map(|(_, f, _)| *f)
            .filter(|f| !have.contains(f))
            .collect();
        return Err(Error::Usage(format!(
            "the envelope needs {t} of its {} recipients' private keys and {} given ({}); \
             give {} more with --private-key, of: {}",
            slots.len(),
            parts.len(),
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            },
            t - parts.len(),
            missing.join(", ")
        )));
    }
    let plains: Vec<&[u8]> = parts.iter().map(|(_, p)| p.as_slice()).collect();
    let mut vk =
        crate::keys::shamir::combine(t as u32, &plains[..t], env.key_bits).map_err(|e| {
            Error::Usage(format!(
                "the escrowed key of the envelope's recipients ({}): {e}",
                parts
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    VolumeKey::take(&mut vk)
}

/// How an envelope is written: mode 0400, fsync'ed (file and directory),
/// missing directories made 0700, and only below directories root alone
/// can change. Not for secrecy (the key in it is sealed to the escrow
/// public key) but for integrity: whoever could change a directory on the
/// way could swap or remove the envelope that `recover` trusts.
pub const HOW: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Root,
    mode: 0o400,
    durable: true,
    dir_mode: Some(0o700),
};

/// Writes the envelope atomically (temp file, fsync, rename, fsync of the
/// directory; `safe_fs`) with mode 0400.
pub fn write(env: &Envelope, path: &Path) -> Result<()> {
    let mut json = serde_json::to_string_pretty(env)
        .map_err(|e| Error::Failed(format!("encoding the envelope: {e}")))?;
    json.push('\n');
    safe_fs::write_file(path, json.as_bytes(), HOW)
}

/// Where the envelope of the volume `luks_uuid` is kept besides `path`:
/// `escrow.json` -> `escrow.<LUKS UUID>.json`, in the same directory.
/// `path` names the newest volume's envelope; these copies, one per volume,
/// are never overwritten, and ephemera never deletes them.
pub fn path_for(path: &Path, luks_uuid: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{luks_uuid}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{luks_uuid}"),
    };
    path.with_file_name(name)
}

/// This node's envelope for the volume `luks_uuid`: its copy named by the
/// LUKS UUID (`path_for`), read through the host root; `None` when there is
/// none. `path` itself only names the newest volume's envelope, which has
/// its copy too.
pub fn find_envelope(host: &Host, path: &Path, luks_uuid: &str) -> Option<PathBuf> {
    let own = path_for(path, luks_uuid);
    host.abs(&own).is_file().then_some(own)
}

/// An envelope kept on this node, as the survey reads it: which volume,
/// on which disks, and what the node recorded about that volume since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnNode {
    pub luks_uuid: String,
    /// Its copy named by the LUKS UUID (a node path).
    pub path: PathBuf,
    /// Member serials in array order; the first holds the LUKS header.
    pub members: Vec<String>,
    /// When it was sealed (RFC 3339, as written).
    pub created: String,
    /// Its volume was never mounted: a run was cut short between the
    /// envelope and the first mount, so the volume never held data.
    pub never_mounted: bool,
    /// Ops discarded its volume while its header's disk was missing
    /// (`ephemera discard`): it is not waited for again.
    pub discarded: bool,
}

/// Every envelope copy this node keeps beside `path` (`escrow.<UUID>.json`)
/// that parses, read through the host root, newest first. An unreadable or
/// malformed file is skipped: it cannot open anything.
pub fn on_node(host: &Host, path: &Path) -> Vec<OnNode> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let mut found: Vec<OnNode> = host
        .entries(&host.abs(dir))
        .into_iter()
        .filter_map(|name| {
            let p = dir.join(&name);
            let text = std::fs::read_to_string(host.abs(&p)).ok()?;
            let env = parse(&text, &p).ok()?;
            // Only the copies: `path` itself repeats the newest one.
            (path_for(path, &env.luks_uuid) == p).then(|| OnNode {
                never_mounted: host
                    .abs(&marker(path, &env.luks_uuid, NEVER_MOUNTED))
                    .exists(),
                discarded: host.abs(&marker(path, &env.luks_uuid, DISCARDED)).exists(),
                luks_uuid: env.luks_uuid,
                members: env.members,
                created: env.created,
                path: p,
            })
        })
        .collect();
    found.sort_by(|a, b| b.created.cmp(&a.created));
    found
}

/// Marks a volume whose envelope is written but which was never mounted.
pub const NEVER_MOUNTED: &str = "never-mounted";
/// Marks a volume that ops discarded while its header's disk was missing.
pub const DISCARDED: &str = "discarded";
/// Marks an envelope that `[escrow.store]` does not hold yet: set before
/// the upload, removed once the store has it (`node::escrow_store`), so a
/// retry knows what is left to do.
pub const STORE_PENDING: &str = "store-pending";

/// The marker `what` of the volume `luks_uuid`, beside its envelope:
/// `escrow.json` -> `escrow.<LUKS UUID>.<what>`.
pub fn marker(path: &Path, luks_uuid: &str, what: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.{luks_uuid}.{what}"))
}

/// Writes an empty marker beside the envelopes (through the host root), as
/// envelopes are written.
pub fn set_marker(host: &Host, path: &Path, luks_uuid: &str, what: &str) -> Result<()> {
    safe_fs::write_file(&host.abs(&marker(path, luks_uuid, what)), b"", HOW)
}

/// Removes the never-mounted marker of `luks_uuid`, if there is one: the
/// volume is mounted now, so from here on it may hold data.
pub fn mark_mounted(host: &Host, path: &Path, luks_uuid: &str) -> Result<()> {
    clear_marker(host, path, luks_uuid, NEVER_MOUNTED).map(drop)
}

/// Removes the marker `what` of `luks_uuid` (no link followed); `false`
/// when there was none.
pub fn clear_marker(host: &Host, path: &Path, luks_uuid: &str, what: &str) -> Result<bool> {
    let m = host.abs(&marker(path, luks_uuid, what));
    let (Some(dir), Some(name)) = (m.parent(), m.file_name()) else {
        return Ok(false);
    };
    if !dir.exists() {
        return Ok(false);
    }
    safe_fs::Dir::open(dir, HOW.owners, None)?.remove(&name.to_string_lossy())
}

/// Writes the envelope to `path` and to its copy named by the LUKS UUID,
/// through the host root. The copy goes first: an envelope at `path` always
/// has its copy.
pub fn store(host: &Host, env: &Envelope, path: &Path) -> Result<()> {
    write(env, &host.abs(&path_for(path, &env.luks_uuid)))?;
    write(env, &host.abs(path))
}

/// The envelope as console lines, between markers that ops can grep for.
pub fn console_text(env: &Envelope) -> Result<String> {
    let json = serde_json::to_string(env)
        .map_err(|e| Error::Failed(format!("encoding the envelope: {e}")))?;
    Ok(format!(
        "-----BEGIN EPHEMERA ESCROW-----\n{json}\n-----END EPHEMERA ESCROW-----\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};

    fn keypair(bits: usize) -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).unwrap()
    }

    fn header() -> Header {
        Header {
            host: "i-0123".into(),
            luks_uuid: "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e".into(),
            cipher: "twofish-xts-plain64".into(),
            sector_size: 4096,
            members: vec!["AWS1".into(), "AWS2".into()],
            raid: Some(RaidInfo {
                level: 0,
                chunk_kib: 256,
            }),
        }
    }

    /// What key services decrypt (docs/KEY-SERVICES.md): RSAES-OAEP with
    /// SHA-256 for the hash and for MGF1, no label. openssl, told exactly
    /// that, opens an envelope; told MGF1-SHA-1 (the other common pairing),
    /// it does not.
    #[test]
    fn escrow_is_oaep_sha256_with_mgf1_sha256() {
        let t = tempfile::tempdir().unwrap();
        let sk = keypair(2048);
        let pem = t.path().join("sk.pem");
        std::fs::write(&pem, sk.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let key = VolumeKey::generate(512).unwrap();
        let env = seal(&key, &[sk.to_public_key()], 1, header()).unwrap();
        assert_eq!(env.version, 1);
        assert_eq!(env.recipient.as_ref().unwrap().alg, "RSA-OAEP-256");
        let ct = t.path().join("ct.bin");
        std::fs::write(
            &ct,
            base64::engine::general_purpose::STANDARD
                .decode(env.ciphertext.as_ref().unwrap())
                .unwrap(),
        )
        .unwrap();
        let decrypt = |mgf1: &str| {
            std::process::Command::new("openssl")
                .args(["pkeyutl", "-decrypt", "-inkey"])
                .arg(&pem)
                .arg("-in")
                .arg(&ct)
                .args([
                    "-pkeyopt",
                    "rsa_padding_mode:oaep",
                    "-pkeyopt",
                    "rsa_oaep_md:sha256",
                    "-pkeyopt",
                ])
                .arg(format!("rsa_mgf1_md:{mgf1}"))
                .output()
                .unwrap()
        };
        let good = decrypt("sha256");
        assert!(
            good.status.success(),
            "{}",
            String::from_utf8_lossy(&good.stderr)
        );
        assert_eq!(good.stdout, key.as_bytes());
        assert!(!decrypt("sha1").status.success(), "MGF1-SHA-1 opened it");
    }

    #[test]
    fn envelopes_are_kept_per_luks_uuid() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        let path = Path::new("/var/lib/ephemera/escrow.json");
        assert_eq!(
            path_for(path, "00000000-0000-4000-8000-000000000001"),
            Path::new("/var/lib/ephemera/escrow.00000000-0000-4000-8000-000000000001.json")
        );
        assert_eq!(
            find_envelope(&host, path, "00000000-0000-4000-8000-000000000001"),
            None
        );
        let sk = keypair(2048);
        let key = VolumeKey::generate(512).unwrap();
        let mut env = seal(&key, &[sk.to_public_key()], 1, header()).unwrap();
        env.luks_uuid = "00000000-0000-4000-8000-000000000001".into();
        let real = host.abs(path);
        store(&Host::default(), &env, &real).unwrap();
        assert_eq!(
            find_envelope(&host, path, "00000000-0000-4000-8000-000000000001").as_deref(),
            Some(Path::new(
                "/var/lib/ephemera/escrow.00000000-0000-4000-8000-000000000001.json"
            ))
        );
        // A newer volume: escrow.json names it, u-1's copy stays as it was.
        let first =
            std::fs::read(host.abs(&path_for(path, "00000000-0000-4000-8000-000000000001")))
                .unwrap();
        env.luks_uuid = "00000000-0000-4000-8000-000000000002".into();
        store(&Host::default(), &env, &real).unwrap();
        assert_eq!(
            std::fs::read(host.abs(&path_for(path, "00000000-0000-4000-8000-000000000001")))
                .unwrap(),
            first
        );
        assert!(find_envelope(&host, path, "00000000-0000-4000-8000-000000000002").is_some());
        assert!(find_envelope(&host, path, "00000000-0000-4000-8000-000000000001").is_some());
        // escrow.json alone names no volume: only the copies do.
        std::fs::remove_file(host.abs(&path_for(path, "00000000-0000-4000-8000-000000000002")))
            .unwrap();
        assert_eq!(
            find_envelope(&host, path, "00000000-0000-4000-8000-000000000002"),
            None
        );
        // The survey's view: the copies, newest first, with their markers.
        let older = host.abs(&path_for(path, "00000000-0000-4000-8000-000000000001"));
        let mut old_env = env.clone();
        old_env.luks_uuid = "00000000-0000-4000-8000-000000000001".into();
        old_env.created = "2020-01-01T00:00:00Z".into();
        std::fs::remove_file(&older).unwrap();
        store(&Host::default(), &old_env, &real).unwrap();
        env.luks_uuid = "00000000-0000-4000-8000-000000000004".into();
        store(&Host::default(), &env, &real).unwrap();
        std::fs::write(real.with_file_name("escrow.junk.json"), "not json").unwrap();
        set_marker(&Host::default(), &real, &env.luks_uuid, NEVER_MOUNTED).unwrap();
        let seen = on_node(&host, path);
        let uuids: Vec<&str> = seen.iter().map(|e| e.luks_uuid.as_str()).collect();
        assert_eq!(
            uuids,
            [
                "00000000-0000-4000-8000-000000000004",
                "00000000-0000-4000-8000-000000000001"
            ]
        );
        assert!(seen[0].never_mounted && !seen[1].never_mounted);
        assert_eq!(seen[0].members, env.members);
        mark_mounted(&host, path, &env.luks_uuid).unwrap();
        mark_mounted(&host, path, &env.luks_uuid).unwrap();
        assert!(!on_node(&host, path)[0].never_mounted);
        assert_eq!(
            find_envelope(&host, path, "00000000-0000-4000-8000-000000000003"),
            None
        );
    }

    #[test]
    fn seal_then_open_round_trips_and_file_is_0400() {
        let sk = keypair(2048);
        let mut raw = [0x5au8; 64];
        let vk = VolumeKey::take(&mut raw).unwrap();
        let env = seal(&vk, &[sk.to_public_key()], 1, header()).unwrap();
        assert_eq!(env.key_bits, 512);
        assert!(!env.ciphertext.as_ref().unwrap().contains("WlpaWlpa"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/escrow.json");
        write(&env, &p).unwrap();
        write(&env, &p).unwrap(); // a re-run replaces it
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o400
        );
        let back = parse(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        assert_eq!(back, env);
        let vk2 = open(&back, std::slice::from_ref(&sk)).unwrap();
        assert_eq!(vk2.as_bytes(), &[0x5au8; 64][..]);
        // Someone else's private key is named as the wrong recipient.
        assert!(
            matches!(open(&back, &[keypair(2048)]), Err(Error::Usage(m)) if m.contains("recipient"))
        );
    }

    #[test]
    fn public_key_formats_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let sk = keypair(2048);
        let pk = sk.to_public_key();
        let spki = dir.path().join("spki.pem");
        std::fs::write(&spki, pk.to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
        let pkcs1 = dir.path().join("pkcs1.pem");
        std::fs::write(&pkcs1, pk.to_pkcs1_pem(LineEnding::LF).unwrap()).unwrap();
        assert_eq!(load_public_key(&spki).unwrap(), pk);
        assert_eq!(load_public_key(&pkcs1).unwrap(), pk);

        let small = dir.path().join("small.pem");
        let sk1024 = keypair(1024);
        std::fs::write(
            &small,
            sk1024
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let priv_pem = dir.path().join("priv.pem");
        std::fs::write(
            &priv_pem,
            sk.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        // The cloud-init example's key, as it is shipped.
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/cloud-init/basic.yaml"
        ))
        .unwrap();
        let placeholder = dir.path().join("escrow.pub.pem");
        let block: String = example
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("END PUBLIC KEY"), "{block}");
        std::fs::write(&placeholder, block).unwrap();
        for (p, needle) in [
            (
                placeholder.as_path(),
                "placeholder, left in: put your RSA public key",
            ),
            (small.as_path(), "1024 bits"),
            (priv_pem.as_path(), "private key"),
            (garbage.as_path(), "malformed"),
            (dir.path(), "cannot read"),
            (Path::new("/nonexistent.pem"), "cannot read"),
        ] {
            match load_public_key(p) {
                Err(Error::Usage(m)) => {
                    assert!(m.contains(needle), "{m}");
                    assert!(m.contains(&p.display().to_string()), "{m}");
                }
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        assert_eq!(load_private_key(&priv_pem).unwrap(), sk);
    }

    #[test]
    fn recovery_params_are_what_the_kernel_gets() {
        let sk = keypair(2048);
        let mut raw = [1u8; 64];
        let vk = VolumeKey::take(&mut raw).unwrap();
        let env = seal(&vk, &[sk.to_public_key()], 1, header()).unwrap();
        let p = recovery_params(&env).unwrap();
        assert_eq!(p.serials, env.members);
        assert_eq!(
            p.raid,
            Some(md::Raid0Geometry {
                disks: env.members.len() as i32,
                chunk_bytes: 256 * 1024
            })
        );
        assert_eq!(p.key_bytes, 64);
        // The largest chunk config allows still fits the ioctl's int.
        assert_eq!(
            md::Raid0Geometry::new(2, md::MAX_CHUNK_KIB)
                .unwrap()
                .chunk_bytes,
            1 << 30
        );
    }

    /// A PEM RSA public key with an `bits`-bit modulus, built by hand (the
    /// rsa crate cannot make one over 4096 bits).
    fn big_public_key_pems(bits: usize) -> (String, String) {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let n = body.len();
            let mut v = vec![tag];
            match n {
                0..=127 => v.push(n as u8),
                128..=255 => v.extend([0x81, n as u8]),
                _ => v.extend([0x82, (n >> 8) as u8, n as u8]),
            }
            v.extend(body);
            v
        }
        let mut modulus = vec![0u8; 1 + bits / 8];
        modulus[1] = 0xc3; // top bit set: exactly `bits` bits, after the sign byte
        *modulus.last_mut().unwrap() = 0x01;
        let pkcs1 = tlv(0x30, &[tlv(0x02, &modulus), tlv(0x02, &[1, 0, 1])].concat());
        let alg = tlv(
            0x30,
            &[
                tlv(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let spki = tlv(
            0x30,
            &[alg, tlv(0x03, &[&[0u8][..], &pkcs1].concat())].concat(),
        );
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                lines.join("\n")
            )
        };
        (pem("PUBLIC KEY", &spki), pem("RSA PUBLIC KEY", &pkcs1))
    }

    #[test]
    fn keys_over_4096_bits_are_refused_with_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (spki, pkcs1) = big_public_key_pems(8192);
        for (name, pem) in [("spki.pem", spki), ("pkcs1.pem", pkcs1)] {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            match load_public_key(&p) {
                Err(Error::Usage(m)) => {
                    assert!(m.contains("8192 bits") && m.contains("at most 4096"), "{m}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn damaged_envelopes_are_usage_errors() {
        let p = Path::new("e.json");
        let sk = keypair(2048);
        let mut raw = [1u8; 64];
        let vk = VolumeKey::take(&mut raw).unwrap();
        let good =
            serde_json::to_value(seal(&vk, &[sk.to_public_key()], 1, header()).unwrap()).unwrap();
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            v.to_string()
        };
        let cases = [
            "".to_string(),
            "{".to_string(),
            mutate(&|v| v["version"] = 2.into()),
            mutate(&|v| v["recipient"]["alg"] = "RSA1_5".into()),
            mutate(&|v| v["members"] = serde_json::json!([])),
            mutate(&|v| v["raid"] = serde_json::Value::Null),
            mutate(&|v| v["raid"]["chunk_kib"] = 100.into()),
            // 2^21 KiB and up overflowed the md ioctl's int (chunk_kib * 1024).
            mutate(&|v| v["raid"]["chunk_kib"] = (1u32 << 21).into()),
            mutate(&|v| v["raid"]["chunk_kib"] = (1u32 << 31).into()),
            mutate(&|v| v["raid"]["chunk_kib"] = 2.into()),
            mutate(&|v| v["raid"]["level"] = 5.into()),
            mutate(&|v| v["members"] = serde_json::json!(["EPH-A"])),
            mutate(&|v| v["members"] = serde_json::json!(["EPH-A", "EPH-A"])),
            mutate(&|v| v["members"] = serde_json::json!(["EPH-A", ""])),
            mutate(&|v| v["members"] = serde_json::json!(["EPH-A", "a serial with spaces"])),
            mutate(&|v| v["members"] = serde_json::json!(["EPH-A", "X".repeat(21)])),
            mutate(&|v| v["members"] = (0..65).map(|i| format!("S{i}")).collect()),
            mutate(&|v| v["key_bits"] = 0.into()),
            mutate(&|v| v["key_bits"] = 4294967295u32.into()),
            mutate(&|v| v["sector_size"] = 3.into()),
            mutate(&|v| v["luks_uuid"] = "not-a-uuid".into()),
            mutate(&|v| v["cipher"] = "twofish".into()),
            mutate(&|v| v["host"] = "a\nb".into()),
            mutate(&|v| v["created"] = "x".repeat(65).into()),
            mutate(&|v| v["recipient"]["key_fingerprint"] = "sha256:zz".into()),
            mutate(&|v| v["ciphertext"] = "A".repeat(700).into()),
            mutate(&|v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("luks_uuid")
                    .map(drop)
                    .unwrap_or(())
            }),
        ];
        for c in cases {
            assert!(matches!(parse(&c, p), Err(Error::Usage(_))), "{c}");
        }
        let mut e = parse(&good.to_string(), p).unwrap();
        e.ciphertext = Some("not base64!".into());
        assert!(matches!(
            open(&e, std::slice::from_ref(&sk)),
            Err(Error::Usage(_))
        ));
    }

    /// Version 2: three recipients. With threshold 1 each key alone opens
    /// it; with 2, one key is refused naming how many more and which, any
    /// two open it, and a share of another envelope does not combine.
    #[test]
    fn several_recipients_any_one_or_any_two() {
        let sks: Vec<RsaPrivateKey> = (0..3).map(|_| keypair(2048)).collect();
        let pks: Vec<RsaPublicKey> = sks.iter().map(|k| k.to_public_key()).collect();
        let key = VolumeKey::generate(512).unwrap();
        let any1 = seal(&key, &pks, 1, header()).unwrap();
        assert_eq!(
            (any1.version, any1.threshold(), any1.slots().len()),
            (2, 1, 3)
        );
        for sk in &sks {
            assert_eq!(
                open(&any1, std::slice::from_ref(sk)).unwrap().as_bytes(),
                key.as_bytes()
            );
        }
        let two = seal(&key, &pks, 2, header()).unwrap();
        let text = serde_json::to_string(&two).unwrap();
        let two = parse(&text, Path::new("e.json")).unwrap();
        assert_eq!(two.threshold(), 2);
        let e = open(&two, &sks[..1]).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let m = e.to_string();
        assert!(
            m.contains("needs 2 of its 3 recipients' private keys and 1 given")
                && m.contains("give 1 more")
                && m.contains(&fingerprint(&pks[2]).unwrap()),
            "{m}"
        );
        for pair in [[0, 1], [0, 2], [1, 2], [2, 0]] {
            let given = [sks[pair[0]].clone(), sks[pair[1]].clone()];
            assert_eq!(
                open(&two, &given).unwrap().as_bytes(),
                key.as_bytes(),
                "{pair:?}"
            );
        }
        // The same key twice is one share, not two.
        assert!(open(&two, &[sks[0].clone(), sks[0].clone()]).is_err());
        // A share is no key: each alone decrypts to 65 bytes that are not it.
        let other = seal(&VolumeKey::generate(512).unwrap(), &pks, 2, header()).unwrap();
        let mut mixed = two.clone();
        mixed.recipients[1] = other.recipients[1].clone();
        let wrong = open(&mixed, &[sks[0].clone(), sks[1].clone()]).unwrap();
        assert_ne!(wrong.as_bytes(), key.as_bytes());
        // Hostile version 2 envelopes are refused by parse.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = v.clone();
            f(&mut v);
            v.to_string()
        };
        for c in [
            mutate(&|v| v["threshold"] = 4.into()),
            mutate(&|v| v["threshold"] = 0.into()),
            mutate(&|v| v["threshold"] = serde_json::Value::Null),
            mutate(&|v| v["recipients"] = serde_json::json!([])),
            mutate(&|v| v["recipients"][1] = v["recipients"][0].clone()),
            mutate(&|v| v["recipients"] = (0..17).map(|_| v["recipients"][0].clone()).collect()),
            mutate(&|v| v["recipient"] = serde_json::json!({"alg": ALG, "key_fingerprint": "x"})),
            mutate(&|v| v["version"] = 1.into()),
            mutate(&|v| v["recipients"][0]["alg"] = "RSA1_5".into()),
        ] {
            assert!(
                matches!(parse(&c, Path::new("e.json")), Err(Error::Usage(_))),
                "{c}"
            );
        }
    }

    /// The manual path for a threshold: each holder's `openssl pkeyutl`
    /// gives their share, and scripts/combine-shares.py (standard Python)
    /// gives the key from any two of three, as blahaj split it.
    #[test]
    fn shares_combine_with_the_script() {
        let t = tempfile::tempdir().unwrap();
        let sks: Vec<RsaPrivateKey> = (0..3).map(|_| keypair(2048)).collect();
        let pks: Vec<RsaPublicKey> = sks.iter().map(|k| k.to_public_key()).collect();
        let key = VolumeKey::generate(512).unwrap();
        let env = seal(&key, &pks, 2, header()).unwrap();
        let share = |i: usize| {
            let pem = t.path().join(format!("{i}.pem"));
            std::fs::write(
                &pem,
                sks[i].to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
            )
            .unwrap();
            let ct = t.path().join(format!("{i}.ct"));
            let b64 = &env.recipients[i].ciphertext;
            std::fs::write(
                &ct,
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap();
            let out = std::process::Command::new("openssl")
                .args(["pkeyutl", "-decrypt", "-inkey"])
                .arg(&pem)
                .arg("-in")
                .arg(&ct)
                .args([
                    "-pkeyopt",
                    "rsa_padding_mode:oaep",
                    "-pkeyopt",
                    "rsa_oaep_md:sha256",
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout.len(), 65, "x, then 64 bytes");
            let p = t.path().join(format!("share-{i}.bin"));
            std::fs::write(&p, &out.stdout).unwrap();
            p
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/combine-shares.py");
        let combine = |files: &[&Path]| {
            std::process::Command::new("python3")
                .arg(&script)
                .args(files)
                .output()
                .unwrap()
        };
        let (s0, s1, s2) = (share(0), share(1), share(2));
        for pair in [[&s0, &s1], [&s1, &s2], [&s2, &s0]] {
            let out = combine(&[pair[0].as_path(), pair[1].as_path()]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, key.as_bytes());
        }
        let one = combine(&[s0.as_path()]);
        assert!(
            !one.status.success() && String::from_utf8_lossy(&one.stderr).contains("at least two")
        );
    }

    /// The console copy stays small: a line of JSON, a few KiB with five
    /// 4096-bit recipients, far inside EC2's 64 KiB console window.
    #[test]
    fn envelope_sizes_by_recipients() {
        let key = VolumeKey::generate(512).unwrap();
        let pks: Vec<RsaPublicKey> = (0..5).map(|_| keypair(4096).to_public_key()).collect();
        let mut sizes = Vec::new();
        for (n, t) in [(1, 1), (3, 2), (5, 3)] {
            let env = seal(&key, &pks[..n], t, header()).unwrap();
            let text = console_text(&env).unwrap();
            assert_eq!(
                text.lines().count(),
                3,
                "one line of JSON between the markers"
            );
            sizes.push((n, text.len()));
        }
        eprintln!("console envelope bytes (recipients, bytes): {sizes:?}");
        assert!(sizes.iter().all(|(n, b)| *b < 300 + n * 900), "{sizes:?}");
    }
}
