//! The `kms` pin's calls to AWS KMS (`keys::pins::kms` keeps the slot and
//! the context): `Encrypt` at provision, `Decrypt` at boot, under the
//! context of this instance (its ARN) and this volume (its LUKS UUID).
//!
//! - Identity: the instance id, region and role credentials come from
//!   IMDSv2 as `[escrow.store]` takes them (`node::escrow_store`); the
//!   account, for the instance's ARN, from the instance identity document.
//! - Signing: `aws-sigv4` (smithy-rs, the AWS SDK's own signer; Apache-2.0),
//!   `sign-http` only: it signs a request built here and sent with ureq,
//!   and brings no HTTP client (1.3.6: what cargo resolves within our
//!   rust-version; 1.6 declares 1.94.1). rusty-s3, already in the tree for the store, signs only
//!   S3 URLs (its service name and payload hash are fixed): it cannot sign
//!   a KMS POST.
//! - HTTP: the store's client (`escrow_store::https_agent`): rustls, the
//!   built-in roots or `ca_file`, no redirects; every request and IMDS read
//!   bounded by the one deadline of the binding or the unlock.
//! - The plaintext answer is read into memory wiped on drop; serde's parse
//!   moves the base64 string out whole (no copy), and it is wiped too. The
//!   signed request carries the session token in a header: it is never
//!   logged (messages name the key and the endpoint only).

use std::time::{Instant, SystemTime};

use base64::Engine;
use zeroize::Zeroizing;

use crate::config::unlock::Kms;
use crate::keys::pins::kms::{context, instance_arn, Slot};
use crate::keys::pins::{Failure, KmsPin};
use crate::node::escrow_store::{self as es, NodeIdentity};

/// AWS KMS as this node reaches it: IMDS at `imds` says who it is.
pub struct Aws {
    pub imds: String,
}

/// The pins as this node reaches them: its TPM, and KMS with IMDS at `imds`.
pub fn reach(imds: &str) -> crate::keys::pins::Reach {
    crate::keys::pins::Reach {
        tcti: crate::keys::pins::tpm2::DEVICE.into(),
        kms: Box::new(Aws { imds: imds.into() }),
    }
}

impl KmsPin for Aws {
    fn seal(
        &self,
        part: &[u8],
        k: &Kms,
        luks_uuid: &str,
        deadline: Instant,
    ) -> Result<Slot, Failure> {
        seal(part, k, luks_uuid, &self.imds, deadline)
    }
    fn unseal(
        &self,
        s: &Slot,
        luks_uuid: &str,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        unseal(s, luks_uuid, &self.imds, deadline)
    }
}

/// The largest answer read (a ciphertext of a 65-byte part is ~250 bytes).
const MAX_ANSWER: u64 = 64 * 1024;
const BOUND: &str = "unlock.wait_secs";
pub const IDENTITY_PATH: &str = "/latest/dynamic/instance-identity/document";

fn retry(why: String) -> Failure {
    Failure {
        permanent: false,
        why: format!("kms: {why}"),
    }
}

/// Who this node is, from IMDS: its identity (`[escrow.store]`'s reader)
/// and its ARN.
fn whoami(
    imds: &str,
    region: Option<&str>,
    deadline: Instant,
) -> Result<(NodeIdentity, String), Failure> {
    let node = es::node_identity(imds, region, deadline, BOUND).map_err(retry)?;
    let mut c = crate::node::imds::Imds::new(
        imds,
        es::remaining_of(deadline, BOUND)
            .map_err(retry)?
            .min(crate::node::imds::DEFAULT_TIMEOUT),
    );
    let doc = es::imds_read(&mut c, IDENTITY_PATH).map_err(retry)?;
    let account = serde_json::from_str::<serde_json::Value>(&doc)
        .ok()
        .and_then(|v| v["accountId"].as_str().map(str::to_string))
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| retry(format!("IMDS {IDENTITY_PATH} has no 12-digit accountId")))?;
    // The ARN's region is the instance's, whatever region the key is in.
    let own_region = match region {
        None => node.region.clone(),
        Some(_) => es::imds_read(&mut c, es::REGION_PATH).map_err(retry)?,
    };
    let arn = instance_arn(&own_region, &account, &node.instance_id);
    Ok((node, arn))
}

/// One KMS call (`TrentService.<action>`), signed for `region`; the answer
/// body on 200, else a failure naming KMS's error type.
fn call(
    k: &Endpoint,
    node: &NodeIdentity,
    action: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let target = format!("TrentService.{action}");
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let c = &node.credentials;
    let identity = aws_credential_types::Credentials::new(
        c.key(),
        c.secret(),
        c.token().map(str::to_string),
        None,
        "imds",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&k.region)
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| retry(format!("signing: {e}")))?
        .into();
    let url = format!("{}/", k.url);
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| retry(format!("signing: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| retry(format!("signing: {e}")))?
        .into_parts();
    let mut req = k
        .agent
        .post(&url)
        .config()
        .timeout_global(Some(es::remaining_of(deadline, BOUND).map_err(retry)?))
        .build();
    for (name, value) in headers {
        req = req.header(name, value);
    }
    for (name, value) in instructions.headers() {
        req = req.header(name, value);
    }
    let mut resp = req
        .send(body)
        .map_err(|e| retry(format!("{action} at {}: {e}", k.url)))?;
    let status = resp.status().as_u16();
    let answer = Zeroizing::new(
        es::read_body(&mut resp, MAX_ANSWER)
            .map_err(|e| retry(format!("{action} at {}: {e}", k.url)))?,
    );
    if status == 200 {
        return Ok(answer);
    }
    // KMS's error answer: {"__type": "...Exception", "message": "..."}; the
    // type alone is quoted (a message may quote the request).
    let kind = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| {
            v["__type"]
                .as_str()
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        })
        .filter(|t| t.len() <= 64 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_default();
    // The ciphertext will never open with this context or key; anything
    // else (a signature, a role, a disabled key, a throttle) may change.
    let permanent = matches!(
        kind.as_str(),
        "InvalidCiphertextException" | "IncorrectKeyException"
    );
    Err(Failure {
        permanent,
        why: format!(
            "kms: {action} of key {} at {}: HTTP {status} {kind}",
            k.key_id, k.url
        ),
    })
}

struct Endpoint {
    agent: ureq::Agent,
    url: String,
    region: String,
    key_id: String,
}

fn endpoint(
    key_id: &str,
    region: &str,
    url: Option<&str>,
    ca: Option<&std::path::Path>,
) -> Result<Endpoint, Failure> {
    let agent = es::https_agent(ca, "unlock.kms.ca_file").map_err(|e| Failure {
        permanent: true,
        why: format!("kms: {e}"),
    })?;
    let url = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if region.starts_with("cn-") => format!("https://kms.{region}.amazonaws.com.cn"),
        None => format!("https://kms.{region}.amazonaws.com"),
    };
    Ok(Endpoint {
        agent,
        url,
        region: region.to_string(),
        key_id: key_id.to_string(),
    })
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Encrypts `part` with the key of `k` under this instance's context for
/// `luks_uuid`, asking IMDS at `imds` who the instance is; within `deadline`.
pub fn seal(
    part: &[u8],
    k: &Kms,
    luks_uuid: &str,
    imds: &str,
    deadline: Instant,
) -> Result<Slot, Failure> {
    let (node, arn) = whoami(imds, k.region.as_deref(), deadline)?;
    let e = endpoint(
        &k.key_id,
        &node.region,
        k.endpoint.as_deref(),
        k.ca_file.as_deref(),
    )?;
    let ctx = context(&arn, luks_uuid);
    let plain = Zeroizing::new(b64().encode(part));
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({
            "KeyId": k.key_id,
            "Plaintext": plain.as_str(),
            "EncryptionContext": ctx,
        }))
        .map_err(|e| retry(e.to_string()))?,
    );
    let answer = call(&e, &node, "Encrypt", &body, deadline)?;
    let v: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|_| retry("Encrypt's answer is not JSON".into()))?;
    let blob = v["CiphertextBlob"]
        .as_str()
        .filter(|c| b64().decode(c).is_ok() && c.len() <= 8192)
        .ok_or_else(|| retry("Encrypt's answer has no CiphertextBlob".into()))?;
    Ok(Slot {
        key_id: v["KeyId"].as_str().unwrap_or(&k.key_id).to_string(),
        region: node.region,
        endpoint: k.endpoint.clone(),
        ca_file: k.ca_file.clone(),
        context: ctx,
        ciphertext: blob.to_string(),
    })
}

/// Decrypts the part of `s` under this instance's context for `luks_uuid`
/// (IMDS at `imds`), within `deadline`.
pub fn unseal(
    s: &Slot,
    luks_uuid: &str,
    imds: &str,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let (node, arn) = whoami(imds, Some(&s.region), deadline)?;
    let e = endpoint(
        &s.key_id,
        &s.region,
        s.endpoint.as_deref(),
        s.ca_file.as_deref(),
    )?;
    let body = serde_json::to_vec(&serde_json::json!({
        "KeyId": s.key_id,
        "CiphertextBlob": s.ciphertext,
        "EncryptionContext": context(&arn, luks_uuid),
    }))
    .map_err(|e| retry(e.to_string()))?;
    let answer = call(&e, &node, "Decrypt", &body, deadline)?;
    let mut v: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|_| retry("Decrypt's answer is not JSON".into()))?;
    let plain = match v["Plaintext"].take() {
        serde_json::Value::String(p) => Zeroizing::new(p),
        _ => return Err(retry("Decrypt's answer has no Plaintext".into())),
    };
    b64()
        .decode(plain.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| retry("Decrypt's Plaintext is not base64".into()))
}
