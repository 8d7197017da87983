//! `[unlock]`: an opt-in to keep the volume across a reboot, with no key at
//! rest. The volume key is split (`keys::pins`) among this instance's TPM,
//! an AWS KMS key and tang servers; the next boot unlocks it when
//! `threshold` of those pins give their part back.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most `wait_secs` may be: ephemera.service's TimeoutStartSec
/// outlasts it with every other wait of a run (a test checks the unit).
pub const MAX_WAIT_SECS: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Unlock {
    /// Seal to this instance's TPM 2.0 (NitroTPM on EC2).
    pub tpm2: bool,
    /// The PCRs the TPM seal is bound to (clevis `pcr_ids`), in `tpm2_pcr_bank`.
    pub tpm2_pcrs: String,
    pub tpm2_pcr_bank: String,
    /// An AWS KMS key that encrypts this pin's part under an encryption
    /// context naming this instance and this volume.
    pub kms: Option<Kms>,
    /// tang servers, each pinned by its advertisement's thumbprint.
    pub tang: Vec<Tang>,
    /// How many pins must agree (clevis sss `t`).
    pub threshold: u32,
    /// The bound on one boot's unlock, retries included: the network and
    /// the tang servers have this long to answer.
    pub wait_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tang {
    /// `http://host[:port]` (tang speaks plain HTTP; its replies are
    /// themselves bound to the pinned key).
    pub url: String,
    /// The thumbprint of the server's advertisement signing key
    /// (`tang-show-keys`, or `jose jwk thp`). Required: without it, a
    /// binding trusts whatever answers at `url` at provision.
    pub thp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kms {
    /// The key: its id, its ARN, or an alias (`alias/NAME` or its ARN).
    pub key_id: String,
    /// The key's region; default: this instance's (IMDS).
    pub region: Option<String>,
    /// `https://HOST[:PORT]`: a VPC or FIPS endpoint, or a test's; default
    /// `https://kms.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// PEM CAs to trust for `endpoint` instead of the built-in roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Kms {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let id = &self.key_id;
        let id_ok = (1..=2048).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/:.".contains(&b));
        if !id_ok {
            return Err((
                "key_id",
                format!("{id:?} is not a KMS key id, key ARN or alias (alias/NAME)"),
            ));
        }
        if let Some(r) = &self.region {
            crate::config::store::check_region(r).map_err(|e| ("region", e))?;
        }
        if let Some(e) = &self.endpoint {
            let host = e
                .strip_prefix("https://")
                .map(|h| h.strip_suffix('/').unwrap_or(h))
                .unwrap_or("");
            if host.is_empty()
                || e.len() > 256
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            {
                return Err((
                    "endpoint",
                    format!(
                        "{e:?} is not https://HOST[:PORT] with no path (KMS is reached over TLS only)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The checks of `[unlock] kms`, as one line naming the key.
pub fn check_kms(k: &Kms) -> std::result::Result<(), String> {
    k.validate()
        .map_err(|(key, why)| format!("kms.{key}: {why}"))
}

impl Tang {
    /// The url and the thumbprint: `Err((key, why))`.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let host = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .map(|h| h.strip_suffix('/').unwrap_or(h))
            .unwrap_or("");
        if host.is_empty()
            || self.url.len() > 256
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        {
            return Err((
                "url",
                format!("{:?} is not http://HOST[:PORT] with no path", self.url),
            ));
        }
        // A SHA-1 to SHA-512 thumbprint in base64url: 27 to 86 characters.
        if !(27..=86).contains(&self.thp.len())
            || !self
                .thp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                "thp",
                format!(
                    "{:?} is not a key thumbprint (base64url, as `tang-show-keys` prints it); \
                     it is required, so that the binding trusts only that server",
                    self.thp
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Unlock {
    fn default() -> Self {
        Unlock {
            tpm2: false,
            tpm2_pcrs: "7".into(),
            tpm2_pcr_bank: "sha256".into(),
            kms: None,
            tang: Vec::new(),
            threshold: 1,
            wait_secs: 60,
        }
    }
}

impl Unlock {
    /// Any pin is set: volumes are bound, and unlocked at the next boot.
    pub fn enabled(&self) -> bool {
        self.pins() > 0
    }

    /// How many pins there are.
    pub fn pins(&self) -> u32 {
        u32::from(self.tpm2) + u32::from(self.kms.is_some()) + self.tang.len() as u32
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Usage(format!("config unlock.{key}: {why}")));
        let d = Unlock::default();
        // A setting that only a pin uses, set with no pin: whoever wrote it
        // believes reboots keep the data, and they would not. The default
        // values pass (the shipped config file writes every key).
        let tpm2_only = [
            ("tpm2_pcrs", self.tpm2_pcrs != d.tpm2_pcrs),
            ("tpm2_pcr_bank", self.tpm2_pcr_bank != d.tpm2_pcr_bank),
        ];
        let any_pin = [
            ("threshold", self.threshold != d.threshold),
            ("wait_secs", self.wait_secs != d.wait_secs),
        ];
        if !self.enabled() {
            if let Some((k, _)) = any_pin.iter().chain(&tpm2_only).find(|(_, set)| *set) {
                return bad(
                    k,
                    format!(
                        "is set, but [unlock] has no pin, so nothing is bound and a reboot \
                         loses the data: set unlock.tpm2 = true, unlock.kms or unlock.tang, or remove \
                         unlock.{k}"
                    ),
                );
            }
            return Ok(());
        }
        if !self.tpm2 {
            if let Some((k, _)) = tpm2_only.iter().find(|(_, set)| *set) {
                return bad(
                    k,
                    format!("is set, but unlock.tpm2 is not true: set it, or remove unlock.{k}"),
                );
            }
        }
        if self.threshold < 1 || self.threshold > self.pins() {
            return bad(
                "threshold",
                format!(
                    "{} is not between 1 and the number of pins ({}: tpm2 counts one, kms one, each tang server one)",
                    self.threshold,
                    self.pins()
                ),
            );
        }
        let pcrs_ok = !self.tpm2_pcrs.is_empty()
            && self
                .tpm2_pcrs
                .split(',')
                .all(|p| p.parse::<u8>().is_ok_and(|n| n <= 23) && !p.starts_with('+'));
        if !pcrs_ok {
            return bad(
                "tpm2_pcrs",
                format!(
                    "{:?} is not a comma-separated list of PCR numbers 0 to 23 (for example \"7\" or \"0,4,7\")",
                    self.tpm2_pcrs
                ),
            );
        }
        if !["sha1", "sha256", "sha384", "sha512"].contains(&self.tpm2_pcr_bank.as_str()) {
            return bad(
                "tpm2_pcr_bank",
                format!(
                    "{:?} is not one of sha1, sha256, sha384, sha512",
                    self.tpm2_pcr_bank
                ),
            );
        }
        if let Some(k) = &self.kms {
            k.validate()
                .or_else(|(key, why)| bad(&format!("kms.{key}"), why))?;
        }
        for (i, t) in self.tang.iter().enumerate() {
            t.validate()
                .or_else(|(key, why)| bad(&format!("tang[{i}].{key}"), why))?;
        }
        if !(1..=MAX_WAIT_SECS).contains(&self.wait_secs) {
            return bad(
                "wait_secs",
                format!("{} is not between 1 and {MAX_WAIT_SECS}", self.wait_secs),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const THP: &str = "DWnbBv9Ul6YVKNFdV5Mun_pRTkfIMXcxwH1NDbVBDq0";

    fn parse(text: &str) -> Result<Config> {
        let c = Config::parse(text, Path::new("t.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn the_issue_s_example_parses_and_counts_its_pins() {
        let c = parse(&format!(
            "[unlock]\ntpm2 = true\ntang = [ {{ url = \"http://tang1.internal:7500\", thp = \"{THP}\" }} ]\nthreshold = 2\n"
        ))
        .unwrap();
        assert!(c.unlock.enabled());
        assert_eq!((c.unlock.pins(), c.unlock.threshold), (2, 2));
        assert_eq!(c.unlock.tpm2_pcrs, "7");
        assert!(!Config::default().unlock.enabled());
        let c = parse(
            "[unlock]\ntpm2 = true\nkms = { key_id = \"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\" }\nthreshold = 2\n",
        )
        .unwrap();
        assert_eq!((c.unlock.pins(), c.unlock.threshold), (2, 2));
        assert_eq!(c.unlock.kms.unwrap().region, None);
    }

    #[test]
    fn bad_values_are_one_line_naming_the_key() {
        for (text, key) in [
            ("[unlock]\ntpm2 = true\nthreshold = 2\n", "unlock.threshold"),
            ("[unlock]\ntpm2 = true\nthreshold = 0\n", "unlock.threshold"),
            (
                "[unlock]\ntpm2 = true\ntpm2_pcrs = \"7,24\"\n",
                "unlock.tpm2_pcrs",
            ),
            (
                "[unlock]\ntpm2 = true\ntpm2_pcrs = \"\"\n",
                "unlock.tpm2_pcrs",
            ),
            (
                "[unlock]\ntpm2 = true\ntpm2_pcr_bank = \"md5\"\n",
                "unlock.tpm2_pcr_bank",
            ),
            ("[unlock]\ntpm2 = true\nwait_secs = 0\n", "unlock.wait_secs"),
            (
                &format!("[unlock]\ntang = [ {{ url = \"ftp://x\", thp = \"{THP}\" }} ]\n"),
                "unlock.tang[0].url",
            ),
            (
                &format!("[unlock]\ntang = [ {{ url = \"http://a b\", thp = \"{THP}\" }} ]\n"),
                "unlock.tang[0].url",
            ),
            (
                "[unlock]\ntang = [ { url = \"http://t:7500\", thp = \"short\" } ]\n",
                "unlock.tang[0].thp",
            ),
            (
                "[unlock]\nkms = { key_id = \"a key\" }\n",
                "unlock.kms.key_id",
            ),
            (
                "[unlock]\nkms = { key_id = \"alias/eph\", region = \"EU\" }\n",
                "unlock.kms.region",
            ),
            (
                "[unlock]\nkms = { key_id = \"alias/eph\", endpoint = \"http://kms:80\" }\n",
                "unlock.kms.endpoint",
            ),
            (
                "[unlock]\nkms = { key_id = \"alias/eph\" }\ntpm2 = true\nthreshold = 3\n",
                "unlock.threshold",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
            let m = e.to_string();
            assert!(m.contains(key) && !m.contains('\n'), "{text}: {m}");
        }
        // Set with no pin, or for the TPM without it.
        for (text, key) in [
            ("[unlock]\nthreshold = 5\nwait_secs = 0\n", "unlock.threshold"),
            ("[unlock]\nwait_secs = 600\n", "unlock.wait_secs"),
            ("[unlock]\ntpm2 = false\ntpm2_pcrs = \"0,7\"\n", "unlock.tpm2_pcrs"),
            ("[unlock]\ntang = []\ntpm2_pcr_bank = \"sha1\"\n", "unlock.tpm2_pcr_bank"),
            (
                &format!(
                    "[unlock]\ntang = [ {{ url = \"http://t:7500\", thp = \"{THP}\" }} ]\ntpm2_pcrs = \"0\"\n"
                ),
                "unlock.tpm2_pcrs: is set, but unlock.tpm2 is not true",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
            let m = e.to_string();
            assert!(m.contains(key) && !m.contains('\n'), "{text}: {m}");
        }
        // The defaults, written out with no pin (as examples/config.toml
        // does), are no setting.
        parse("[unlock]\ntpm2 = false\ntpm2_pcrs = \"7\"\ntpm2_pcr_bank = \"sha256\"\nthreshold = 1\nwait_secs = 60\n").unwrap();
        // The cloud-init example's thumbprint, left as it is.
        let e = parse(
            "[unlock]\ntang = [ { url = \"http://t:7500\", thp = \"REPLACE-WITH-THE-TANG-THUMBPRINT\" } ]\n",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let m = e.to_string();
        assert!(
            m.starts_with("config unlock.tang[0].thp: ")
                && m.contains("placeholder, left in")
                && m.contains("tang-show-keys"),
            "{m}"
        );
        // No thp at all: a parse error naming the field.
        let e = parse("[unlock]\ntang = [ { url = \"http://t:7500\" } ]\n").unwrap_err();
        assert!(e.to_string().contains("thp"), "{e}");
    }
}
