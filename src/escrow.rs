//! Key escrow: the volume key encrypted to an RSA public key (RSA-OAEP with
//! SHA-256), in a JSON envelope that standard tools can open:
//! `jq -r .ciphertext | base64 -d | openssl pkeyutl -decrypt ...`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
use crate::host::Host;
use crate::key::VolumeKey;

pub const ALG: &str = "RSA-OAEP-256";
pub const MIN_RSA_BITS: usize = 2048;

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
    pub recipient: Recipient,
    pub ciphertext: String,
}

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
    String::from_utf8(bytes)
        .map(Zeroizing::new)
        .map_err(|_| Error::Usage(format!("{what} {}: not a PEM file", path.display())))
}

/// Reads an RSA public key, SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA
/// PUBLIC KEY`), and refuses keys under 2048 bits.
pub fn load_public_key(path: &Path) -> Result<RsaPublicKey> {
    let what = "escrow public key";
    let pem = read_pem(path, what)?;
    let bad = |why: String| Error::Usage(format!("{what} {}: {why}", path.display()));
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
pub struct Header {
    pub host: String,
    pub luks_uuid: String,
    pub cipher: String,
    pub sector_size: u32,
    pub members: Vec<String>,
    pub raid: Option<RaidInfo>,
}

pub fn seal(key: &VolumeKey, to: &RsaPublicKey, h: Header) -> Result<Envelope> {
    let ct = to
        .encrypt(
            &mut rand::rngs::OsRng,
            Oaep::new::<Sha256>(),
            key.as_bytes(),
        )
        .map_err(|e| Error::Failed(format!("encrypting the volume key for escrow: {e}")))?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Failed(format!("formatting the time: {e}")))?;
    Ok(Envelope {
        version: 1,
        created,
        host: h.host,
        luks_uuid: h.luks_uuid,
        cipher: h.cipher,
        key_bits: key.bits(),
        sector_size: h.sector_size,
        members: h.members,
        raid: h.raid,
        recipient: Recipient {
            alg: ALG.into(),
            key_fingerprint: fingerprint(to)?,
        },
        ciphertext: base64::engine::general_purpose::STANDARD.encode(ct),
    })
}

/// Parses an envelope and checks what `recover` relies on.
pub fn parse(text: &str, origin: &Path) -> Result<Envelope> {
    let bad = |why: String| Error::Usage(format!("escrow envelope {}: {why}", origin.display()));
    let env: Envelope = serde_json::from_str(text.trim()).map_err(|e| bad(e.to_string()))?;
    if env.version != 1 {
        return Err(bad(format!(
            "version {} is not supported (1 is)",
            env.version
        )));
    }
    if env.recipient.alg != ALG {
        return Err(bad(format!(
            "algorithm {:?} is not {ALG}",
            env.recipient.alg
        )));
    }
    if env.members.is_empty() {
        return Err(bad("lists no members".into()));
    }
    if env.members.len() > 1 && env.raid.is_none() {
        return Err(bad("lists several members but no raid".into()));
    }
    if let Some(r) = &env.raid {
        if r.level != 0 || !r.chunk_kib.is_power_of_two() {
            return Err(bad(format!(
                "raid level {} chunk {} KiB is not RAID0 with a power-of-two chunk",
                r.level, r.chunk_kib
            )));
        }
    }
    Ok(env)
}

/// Decrypts the envelope's key into locked memory.
pub fn open(env: &Envelope, key: &RsaPrivateKey) -> Result<VolumeKey> {
    let fp = fingerprint(&key.to_public_key())?;
    if fp != env.recipient.key_fingerprint {
        return Err(Error::Usage(format!(
            "the private key ({fp}) is not the envelope's recipient ({})",
            env.recipient.key_fingerprint
        )));
    }
    let ct = base64::engine::general_purpose::STANDARD
        .decode(env.ciphertext.trim())
        .map_err(|e| Error::Usage(format!("escrow envelope ciphertext: {e}")))?;
    let mut vk = Zeroizing::new(
        key.decrypt(Oaep::new::<Sha256>(), &ct)
            .map_err(|e| Error::Usage(format!("decrypting the escrowed key: {e}")))?,
    );
    if vk.len() * 8 != env.key_bits as usize {
        return Err(Error::Usage(format!(
            "the escrowed key is {} bits, the envelope says {}",
            vk.len() * 8,
            env.key_bits
        )));
    }
    VolumeKey::take(&mut vk)
}

/// Writes the envelope atomically (temp file, fsync, rename, fsync of the
/// directory) with mode 0400.
pub fn write(env: &Envelope, path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Failed(format!("{} has no directory", path.display())))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut json = serde_json::to_string_pretty(env)
        .map_err(|e| Error::Failed(format!("encoding the envelope: {e}")))?;
    json.push('\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("writing the escrow envelope", path)(e)
    })
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

/// This node's envelope for the volume `luks_uuid`: its own copy, or
/// `path` when that names this volume (envelopes written before the copies
/// existed). Reads through the host root; `None` when there is none.
pub fn find_envelope(host: &Host, path: &Path, luks_uuid: &str) -> Option<PathBuf> {
    let own = path_for(path, luks_uuid);
    if host.abs(&own).is_file() {
        return Some(own);
    }
    let text = std::fs::read_to_string(host.abs(path)).ok()?;
    let env = parse(&text, path).ok()?;
    (env.luks_uuid == luks_uuid).then(|| path.to_path_buf())
}

/// Writes the envelope to `path` and to its copy named by the LUKS UUID.
/// The copy goes first: an envelope at `path` always has its copy.
pub fn store(env: &Envelope, path: &Path) -> Result<()> {
    write(env, &path_for(path, &env.luks_uuid))?;
    write(env, path)
}

/// The envelope as console lines, between markers that ops can grep for.
pub fn console_text(env: &Envelope) -> Result<String> {
    let json = serde_json::to_string(env)
        .map_err(|e| Error::Failed(format!("encoding the envelope: {e}")))?;
    Ok(format!(
        "-----BEGIN EPHEMERA ESCROW-----\n{json}\n-----END EPHEMERA ESCROW-----\n"
    ))
}

use std::os::unix::fs::DirBuilderExt;

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
            luks_uuid: "u".into(),
            cipher: "twofish-xts-plain64".into(),
            sector_size: 4096,
            members: vec!["AWS1".into(), "AWS2".into()],
            raid: Some(RaidInfo {
                level: 0,
                chunk_kib: 256,
            }),
        }
    }

    #[test]
    fn envelopes_are_kept_per_luks_uuid() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        let path = Path::new("/var/lib/ephemera/escrow.json");
        assert_eq!(
            path_for(path, "u-1"),
            Path::new("/var/lib/ephemera/escrow.u-1.json")
        );
        assert_eq!(find_envelope(&host, path, "u-1"), None);
        let sk = keypair(2048);
        let key = VolumeKey::generate(512).unwrap();
        let mut env = seal(&key, &sk.to_public_key(), header()).unwrap();
        env.luks_uuid = "u-1".into();
        let real = host.abs(path);
        store(&env, &real).unwrap();
        assert_eq!(
            find_envelope(&host, path, "u-1").as_deref(),
            Some(Path::new("/var/lib/ephemera/escrow.u-1.json"))
        );
        // A newer volume: escrow.json names it, u-1's copy stays as it was.
        let first = std::fs::read(host.abs(&path_for(path, "u-1"))).unwrap();
        env.luks_uuid = "u-2".into();
        store(&env, &real).unwrap();
        assert_eq!(
            std::fs::read(host.abs(&path_for(path, "u-1"))).unwrap(),
            first
        );
        assert!(find_envelope(&host, path, "u-2").is_some());
        assert!(find_envelope(&host, path, "u-1").is_some());
        // An envelope written before the copies existed: escrow.json alone.
        std::fs::remove_file(host.abs(&path_for(path, "u-2"))).unwrap();
        assert_eq!(find_envelope(&host, path, "u-2").as_deref(), Some(path));
        assert_eq!(find_envelope(&host, path, "u-3"), None);
    }

    #[test]
    fn seal_then_open_round_trips_and_file_is_0400() {
        let sk = keypair(2048);
        let mut raw = [0x5au8; 64];
        let vk = VolumeKey::take(&mut raw).unwrap();
        let env = seal(&vk, &sk.to_public_key(), header()).unwrap();
        assert_eq!(env.key_bits, 512);
        assert!(!env.ciphertext.contains("WlpaWlpa"));
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
        let vk2 = open(&back, &sk).unwrap();
        assert_eq!(vk2.as_bytes(), &[0x5au8; 64][..]);
        // Someone else's private key is named as the wrong recipient.
        assert!(
            matches!(open(&back, &keypair(2048)), Err(Error::Usage(m)) if m.contains("recipient"))
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
        for (p, needle) in [
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
    fn damaged_envelopes_are_usage_errors() {
        let p = Path::new("e.json");
        let sk = keypair(2048);
        let mut raw = [1u8; 64];
        let vk = VolumeKey::take(&mut raw).unwrap();
        let good = serde_json::to_value(seal(&vk, &sk.to_public_key(), header()).unwrap()).unwrap();
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
        e.ciphertext = "not base64!".into();
        assert!(matches!(open(&e, &sk), Err(Error::Usage(_))));
    }
}
