//! The `kms` pin: the pin's part of the key encrypted by an AWS KMS key
//! (`Encrypt` at provision, `Decrypt` at boot) under an encryption context
//! that names this instance and this volume:
//! `{"instance": "arn:aws:ec2:REGION:ACCOUNT:instance/i-...", "volume": "<LUKS UUID>"}`.
//! KMS binds the context to the ciphertext (authenticated data): another
//! instance or another volume cannot decrypt it, even with the file, and a
//! key policy can allow a node's role only its own instance's context
//! (docs/UNLOCK.md). At boot the context is made again from IMDS and the
//! volume's header, never read from the unlock file.
//!
//! - Identity: the instance id, region and role credentials come from
//!   IMDSv2 as `[escrow.store]` takes them (`node::escrow_store`); the
//!   account, for the instance's ARN, from the instance identity document.
//! - Signing: `aws-sigv4` (smithy-rs, the AWS SDK's own signer; Apache-2.0),
//!   `sign-http` only: it signs a request we build and send with ureq, and
//!   brings no HTTP client. rusty-s3, already in the tree for the store,
//!   signs only S3 URLs (its service name and payload hash are fixed), so
//!   it cannot sign a KMS POST.
//! - HTTP: the store's client (`escrow_store::https_agent`): rustls, the
//!   built-in roots or `ca_file`, no redirects; every request bounded by
//!   the one deadline of the binding or the unlock.
//! - The plaintext answer: read into memory that is wiped on drop; serde's
//!   parse moves the base64 string out whole, and it is wiped too.

use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::unlock::Kms;

/// What the unlock file keeps for the `kms` pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// The key as KMS named it in its answer (its ARN).
    pub key_id: String,
    pub region: String,
    /// Only when the config gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The context it was encrypted under, for people and the runbook
    /// (the boot makes its own from IMDS and the volume).
    pub context: serde_json::Map<String, serde_json::Value>,
    /// KMS's CiphertextBlob, base64.
    pub ciphertext: String,
}

/// The instance's ARN: its partition from the region, its account from the
/// identity document.
pub fn instance_arn(region: &str, account: &str, instance_id: &str) -> String {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    format!("arn:{partition}:ec2:{region}:{account}:instance/{instance_id}")
}

/// The encryption context of this instance's volume `luks_uuid`.
pub fn context(instance_arn: &str, luks_uuid: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("instance".into(), instance_arn.into());
    m.insert("volume".into(), luks_uuid.into());
    m
}

/// The slot's fields are what ephemera writes.
pub fn check(s: &Slot) -> Result<(), String> {
    let k = Kms {
        key_id: s.key_id.clone(),
        region: Some(s.region.clone()),
        endpoint: s.endpoint.clone(),
        ca_file: s.ca_file.clone(),
    };
    crate::config::unlock::check_kms(&k)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    if s.ciphertext.len() > 8192 || b64.decode(&s.ciphertext).is_err() {
        return Err("its kms ciphertext is not base64 of at most 8 KiB".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_contexts() {
        assert_eq!(
            instance_arn("eu-west-1", "111122223333", "i-0123456789abcdef0"),
            "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0"
        );
        assert!(instance_arn("cn-north-1", "1", "i-1").starts_with("arn:aws-cn:"));
        assert!(instance_arn("us-gov-west-1", "1", "i-1").starts_with("arn:aws-us-gov:"));
        let c = context("arn:x", "u");
        assert_eq!(
            serde_json::Value::Object(c).to_string(),
            r#"{"instance":"arn:x","volume":"u"}"#
        );
    }
}
