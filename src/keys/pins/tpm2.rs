//! The `tpm2` pin, native: the pin's part of the key sealed to this
//! instance's TPM 2.0 under a PCR policy, with `tss-esapi` (the Parsec
//! project's binding to tpm2-tss's ESAPI, Apache-2.0; 7.x needs tpm2-tss
//! 2.4.6 or later: Debian 12 ships 3.2.1, Amazon Linux 2023 3.2.x).
//!
//! Why not clevis any more: clevis's tpm2 pin is a bash script around
//! tpm2-tools that took about 6 s of a 7 s binding under emulation, and
//! Amazon Linux 2023 does not ship clevis. Why this layout: ops can unseal
//! with tpm2-tools alone (docs/UNLOCK.md's runbook, run by a test):
//! - the parent is the owner hierarchy's primary made from a fixed template
//!   (ECC NIST P-256, AES-128-CFB, SHA-256, the attributes in [`PRIMARY_ATTRS`],
//!   no unique data), so `tpm2_createprimary -C o -G ecc256:aes128cfb -g
//!   sha256 -a '...'` makes the same key again: it is derived from this
//!   TPM's owner seed, which no other TPM has;
//! - the sealed object is a keyed-hash object whose only authorization is
//!   the policy `TPM2_PolicyPCR(bank: pcrs)`, with `noDA` so that failed
//!   attempts never lock the TPM out;
//! - the unlock file keeps its TPM2B_PUBLIC and TPM2B_PRIVATE as tpm2-tools
//!   writes them (`tpm2_create -u -r`), base64.
//!
//! Refusals: another TPM fails `TPM2_Load` with TPM_RC_INTEGRITY (the
//! parent's key differs), a change of the sealed PCRs fails `TPM2_Unseal`
//! with TPM_RC_POLICY_FAIL. Neither can change by waiting, so they are
//! permanent; a TPM that is busy (RETRY, YIELDED, TESTING, memory) or not
//! there yet is asked again within `wait_secs`.

use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind as Rc;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSlot, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::Failure;

/// The primary's object attributes, as `tpm2_createprimary -a` takes them.
pub const PRIMARY_ATTRS: &str =
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";

/// What the unlock file keeps for the `tpm2` pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// The PCR bank and PCRs of the policy, as the config says them.
    pub pcr_bank: String,
    pub pcrs: String,
    /// TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed object, base64.
    pub public: String,
    pub private: String,
}

/// Where the TPM is: the kernel's resource manager, which lets other
/// programs use the TPM at the same time.
pub const DEVICE: &str = "device:/dev/tpmrm0";

fn hash_alg(bank: &str) -> Result<HashingAlgorithm, String> {
    Ok(match bank {
        "sha1" => HashingAlgorithm::Sha1,
        "sha256" => HashingAlgorithm::Sha256,
        "sha384" => HashingAlgorithm::Sha384,
        "sha512" => HashingAlgorithm::Sha512,
        b => {
            return Err(format!(
                "PCR bank {b:?} is not sha1, sha256, sha384 or sha512"
            ))
        }
    })
}

fn selection(bank: &str, pcrs: &str) -> Result<PcrSelectionList, String> {
    let slots = pcrs
        .split(',')
        .map(|p| {
            p.parse::<u32>()
                .ok()
                .filter(|n| *n <= 23)
                .and_then(|n| PcrSlot::try_from(1u32 << n).ok())
                .ok_or_else(|| format!("PCR {p:?} is not 0 to 23"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionList::builder()
        .with_selection(hash_alg(bank)?, &slots)
        .build()
        .map_err(|e| format!("PCR selection {bank}:{pcrs}: {e}"))
}

/// `bank`:`pcrs` names a PCR selection (parse time).
pub fn selection_ok(bank: &str, pcrs: &str) -> Result<(), String> {
    selection(bank, pcrs).map(drop)
}

/// The TPM's answer as a failure of this pin: permanent when waiting cannot
/// change it.
fn failure(what: &str, e: tss_esapi::Error) -> Failure {
    let permanent = match e {
        tss_esapi::Error::Tss2Error(rc) => matches!(
            rc.kind(),
            Some(
                Rc::Integrity
                    | Rc::PolicyFail
                    | Rc::Value
                    | Rc::Size
                    | Rc::Key
                    | Rc::Attributes
                    | Rc::Hash
                    | Rc::Scheme
                    | Rc::Handle
            )
        ),
        tss_esapi::Error::WrapperError(_) => true,
    };
    let hint = match &e {
        tss_esapi::Error::Tss2Error(rc) => match rc.kind() {
            Some(Rc::Integrity) => " (another TPM: this is not the TPM it was sealed to)",
            Some(Rc::PolicyFail) => " (the sealed PCRs changed)",
            _ => "",
        },
        _ => "",
    };
    Failure {
        permanent,
        why: format!("tpm2: {what}: {e}{hint}"),
    }
}

/// A connection to the TPM at `tcti` (`device:/dev/tpmrm0`, or
/// `swtpm:host=...,port=...` in tests). Its absence may be a driver still
/// loading: retried.
fn connect(tcti: &str) -> Result<Context, Failure> {
    let conf = TctiNameConf::from_str(tcti).map_err(|e| Failure {
        permanent: true,
        why: format!("tpm2: TCTI {tcti:?}: {e}"),
    })?;
    if let TctiNameConf::Device(_) = conf {
        let path = tcti.trim_start_matches("device:");
        if !std::path::Path::new(path).exists() {
            return Err(Failure {
                permanent: false,
                why: format!("tpm2: no TPM at {path} (yet)"),
            });
        }
    }
    Context::new(conf).map_err(|e| Failure {
        permanent: false,
        why: format!("tpm2: connecting to the TPM at {tcti}: {e}"),
    })
}

/// The primary key in the owner hierarchy, from the fixed template.
fn primary(ctx: &mut Context) -> Result<KeyHandle, Failure> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(|e| failure("the primary's attributes", e))?;
    let ecc = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| failure("the primary's parameters", e))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(ecc)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| failure("the primary's template", e))?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
    })
    .map(|r| r.key_handle)
    .map_err(|e| failure("creating the primary key (TPM2_CreatePrimary)", e))
}

/// A policy session (or a trial one) with `TPM2_PolicyPCR` on the current
/// values of `pcrs`.
fn pcr_session(
    ctx: &mut Context,
    trial: bool,
    pcrs: &PcrSelectionList,
) -> Result<PolicySession, Failure> {
    let kind = if trial {
        SessionType::Trial
    } else {
        SessionType::Policy
    };
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(|e| failure("starting a policy session", e))?
        .ok_or_else(|| Failure {
            permanent: false,
            why: "tpm2: the TPM gave no session".into(),
        })?;
    let s = PolicySession::try_from(s).map_err(|e| failure("the policy session", e))?;
    ctx.policy_pcr(s, Digest::default(), pcrs.clone())
        .map_err(|e| failure("TPM2_PolicyPCR", e))?;
    Ok(s)
}

fn tpm2b(bytes: &[u8]) -> String {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn untpm2b(what: &str, b64: &str) -> Result<Vec<u8>, Failure> {
    let bad = |why: &str| Failure {
        permanent: true,
        why: format!("tpm2: the unlock file's {what}: {why}"),
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad("not base64"))?;
    if raw.len() < 2 || u16::from_be_bytes([raw[0], raw[1]]) as usize != raw.len() - 2 {
        return Err(bad("not a TPM2B (its size is wrong)"));
    }
    Ok(raw[2..].to_vec())
}

/// Seals `part` (at most 128 bytes: a share of a 512-bit key is 65) to the
/// TPM at `tcti` under the PCR policy of `bank`:`pcrs`.
pub fn seal(part: &[u8], bank: &str, pcrs: &str, tcti: &str) -> Result<Slot, Failure> {
    let sel = selection(bank, pcrs).map_err(|why| Failure {
        permanent: true,
        why,
    })?;
    let mut ctx = connect(tcti)?;
    let parent = primary(&mut ctx)?;
    let r = (|| {
        let trial = pcr_session(&mut ctx, true, &sel)?;
        let policy = ctx
            .policy_get_digest(trial)
            .map_err(|e| failure("TPM2_PolicyGetDigest", e));
        let _ = ctx.flush_context(ObjectHandle::from(SessionHandleOf(trial)));
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .build()
            .map_err(|e| failure("the sealed object's attributes", e))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy?)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(|e| failure("the sealed object's template", e))?;
        let data =
            SensitiveData::try_from(part.to_vec()).map_err(|e| failure("the part to seal", e))?;
        let made = ctx
            .execute_with_nullauth_session(|c| {
                c.create(parent, public, None, Some(data), None, None)
            })
            .map_err(|e| failure("sealing (TPM2_Create)", e))?;
        let public = made
            .out_public
            .marshall()
            .map_err(|e| failure("encoding the sealed object's public part", e))?;
        Ok(Slot {
            pcr_bank: bank.to_string(),
            pcrs: pcrs.to_string(),
            public: tpm2b(&public),
            private: tpm2b(made.out_private.value()),
        })
    })();
    let _ = ctx.flush_context(parent.into());
    r
}

/// Unseals the part from `s` with the TPM at `tcti`.
pub fn unseal(s: &Slot, tcti: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let sel = selection(&s.pcr_bank, &s.pcrs).map_err(|why| Failure {
        permanent: true,
        why,
    })?;
    let public = Public::unmarshall(&untpm2b("public", &s.public)?)
        .map_err(|e| failure("the unlock file's public part", e))?;
    let private = Private::try_from(untpm2b("private", &s.private)?)
        .map_err(|e| failure("the unlock file's private part", e))?;
    let mut ctx = connect(tcti)?;
    let parent = primary(&mut ctx)?;
    let loaded = ctx
        .execute_with_nullauth_session(|c| c.load(parent, private, public))
        .map_err(|e| failure("loading the sealed object (TPM2_Load)", e));
    let _ = ctx.flush_context(parent.into());
    let object = loaded?;
    let r = (|| {
        let session = pcr_session(&mut ctx, false, &sel)?;
        let out = ctx
            .execute_with_session(Some(AuthSession::PolicySession(session)), |c| {
                c.unseal(object.into())
            })
            .map_err(|e| failure("unsealing (TPM2_Unseal)", e));
        let _ = ctx.flush_context(ObjectHandle::from(SessionHandleOf(session)));
        out.map(|d| Zeroizing::new(d.value().to_vec()))
    })();
    let _ = ctx.flush_context(object.into());
    r
}

/// A policy session's handle, to flush it.
struct SessionHandleOf(PolicySession);

impl From<SessionHandleOf> for ObjectHandle {
    fn from(s: SessionHandleOf) -> ObjectHandle {
        let auth: AuthSession = s.0.into();
        let h: tss_esapi::handles::SessionHandle = auth.into();
        h.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_selections_and_tpm2b() {
        assert!(selection("sha256", "0,4,7").is_ok());
        assert!(selection("sha256", "24").is_err());
        assert!(selection("md5", "7").is_err());
        let b = tpm2b(b"abc");
        assert_eq!(untpm2b("x", &b).unwrap(), b"abc");
        let e = untpm2b("public", "AAU=").unwrap_err();
        assert!(e.permanent && e.why.contains("public"), "{}", e.why);
    }
}
