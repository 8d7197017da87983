//! `[escrow.store]`: keep each escrow envelope off the node too, in an
//! S3-compatible bucket (docs/ESCROW.md, "The envelope store"). The node
//! puts `<prefix><instance id>/<LUKS UUID>.json` there at provision, once,
//! never overwriting; ops read it back with `ephemera escrow list|get`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_PREFIX: &str = "ephemera/";
pub const DEFAULT_TIMEOUT_SECS: u64 = 20;
/// The most `timeout_secs` may be (the upload is part of provision's run,
/// inside ephemera.service's TimeoutStartSec).
pub const MAX_TIMEOUT_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// The endpoint, `http(s)://host[:port]` with no path, for example
    /// `https://s3.eu-west-1.amazonaws.com`. The bucket goes in the path
    /// (path-style addressing), which every S3-compatible store serves.
    pub url: String,
    pub bucket: String,
    /// Put before `<instance id>/<LUKS UUID>.json`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The SigV4 signing region; unset: this instance's, from IMDS
    /// (`placement/region`).
    #[serde(default)]
    pub region: Option<String>,
    /// PEM CA certificates to trust for `url`, instead of the built-in
    /// (Mozilla) roots: for a private endpoint with its own CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The bound on one upload, IMDS reads included: provisioning never
    /// waits on the store longer than this.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Accept a plain `http://` url. Off by default: over http the signed
    /// requests, with the role's session token, cross the network in clear,
    /// and anyone on the path can answer that the envelope is stored when
    /// it is not (the node then drops its pending marker). For a store on
    /// the same host or a test, never across a network you do not own.
    #[serde(default)]
    pub insecure_http: bool,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl Store {
    pub fn validate(&self) -> Result<()> {
        check_url(&self.url).map_err(|why| bad("url", why))?;
        if self.url.starts_with("http://") && !self.insecure_http {
            return Err(bad(
                "url",
                format!(
                    "{:?} is plain http: the signed requests and the role's session token would \
                     cross the network in clear, and anyone on the path could answer that the \
                     envelope is stored when it is not; use https, or set \
                     escrow.store.insecure_http = true to accept that (a store on this host, a test)",
                    self.url
                ),
            ));
        }
        check_bucket(&self.bucket).map_err(|why| bad("bucket", why))?;
        check_prefix(&self.prefix).map_err(|why| bad("prefix", why))?;
        if let Some(r) = &self.region {
            check_region(r).map_err(|why| bad("region", why))?;
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_absolute() {
                return Err(bad(
                    "ca_file",
                    format!("{} is not an absolute path", ca.display()),
                ));
            }
            if self.url.starts_with("http://") {
                return Err(bad(
                    "ca_file",
                    format!("is set, but url {:?} is plain http", self.url),
                ));
            }
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(bad(
                "timeout_secs",
                format!(
                    "{} is not between 1 and {MAX_TIMEOUT_SECS}",
                    self.timeout_secs
                ),
            ));
        }
        Ok(())
    }
}

fn bad(key: &str, why: String) -> Error {
    Error::Usage(format!("config escrow.store.{key}: {why}"))
}

/// `http(s)://host[:port]`, an optional `/` and nothing else: the bucket
/// and key are put in the path, and a query or user info would be signed
/// into every request without anyone meaning it.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|h| h.strip_suffix('/').unwrap_or(h))
        .unwrap_or("");
    let ok = !host.is_empty()
        && url.len() <= 256
        && !host.starts_with(':')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not http(s)://HOST[:PORT] with no path (for example https://s3.eu-west-1.amazonaws.com)"
        ))
    }
}

/// S3's bucket naming rules: 3 to 63 lowercase letters, digits, `.` and
/// `-`, starting and ending with a letter or digit.
pub fn check_bucket(b: &str) -> std::result::Result<(), String> {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && edge(b.bytes().next())
        && edge(b.bytes().last())
        && !b.contains("..")
    {
        Ok(())
    } else {
        Err(format!(
            "{b:?} is not an S3 bucket name (3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit)"
        ))
    }
}

/// S3's "safe" key characters only, no leading `/` and no `.`/`..`
/// segment: the key is the same on every store and in every policy.
pub fn check_prefix(p: &str) -> std::result::Result<(), String> {
    let safe = |c: u8| c.is_ascii_alphanumeric() || b"!-_.*'()/".contains(&c);
    if p.len() <= 256
        && p.bytes().all(safe)
        && !p.starts_with('/')
        && !p.contains("//")
        && !p.split('/').any(|s| s == "." || s == "..")
    {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a key prefix (at most 256 of A-Z a-z 0-9 ! - _ . * ' ( ) /, no leading '/', no '//', '.' or '..' segment)"
        ))
    }
}

/// A region name: `eu-west-1`, `us-gov-west-1`, or a store's own.
pub fn check_region(r: &str) -> std::result::Result<(), String> {
    if (1..=32).contains(&r.len())
        && r.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "{r:?} is not a region name (for example eu-west-1)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> crate::error::Result<Config> {
        let c = Config::parse(text, Path::new("t.toml"))?;
        c.validate()?;
        Ok(c)
    }

    const KEY: &str = "[escrow]\npublic_key = \"/etc/ephemera/ops.pem\"\n";

    #[test]
    fn the_issue_s_example_parses_with_its_defaults() {
        let c = parse(&format!(
            "{KEY}[escrow.store]\nurl = \"https://s3.eu-west-1.amazonaws.com\"\nbucket = \"fleet-escrow\"\n"
        ))
        .unwrap();
        let s = c.escrow.store.unwrap();
        assert_eq!(s.url, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(s.bucket, "fleet-escrow");
        assert_eq!(s.prefix, "ephemera/");
        assert_eq!(s.region, None);
        assert_eq!(s.ca_file, None);
        assert_eq!(s.timeout_secs, 20);
        assert!(parse("").unwrap().escrow.store.is_none());
    }

    #[test]
    fn every_key_parses() {
        let c = parse(&format!(
            "{KEY}[escrow.store]\nurl = \"https://127.0.0.1:8443/\"\nbucket = \"b.e-1\"\nprefix = \"\"\n\
             region = \"us-east-1\"\nca_file = \"/etc/ephemera/ca.pem\"\ntimeout_secs = 5\n"
        ))
        .unwrap();
        let s = c.escrow.store.unwrap();
        assert_eq!(
            (s.prefix.as_str(), s.region.as_deref(), s.timeout_secs),
            ("", Some("us-east-1"), 5)
        );
        assert_eq!(
            s.ca_file.as_deref(),
            Some(Path::new("/etc/ephemera/ca.pem"))
        );
    }

    #[test]
    fn plain_http_only_with_its_opt_in() {
        let text = |opt: &str| {
            format!(
                "{KEY}[escrow.store]\nurl = \"http://127.0.0.1:8333\"\nbucket = \"fleet\"\n{opt}"
            )
        };
        let e = parse(&text("")).unwrap_err().to_string();
        assert!(e.contains("escrow.store.insecure_http = true"), "{e}");
        let c = parse(&text("insecure_http = true\n")).unwrap();
        assert!(c.escrow.store.unwrap().insecure_http);
        // https needs no opt-in, and the default is off.
        let c = parse(&format!(
            "{KEY}[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"fleet\"\n"
        ))
        .unwrap();
        assert!(!c.escrow.store.unwrap().insecure_http);
    }

    #[test]
    fn bad_values_are_one_line_naming_the_key() {
        let store = |extra: &str| {
            format!(
                "{KEY}[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"fleet\"\n{extra}"
            )
        };
        for (text, key) in [
            (store("url = \"x\""), "t.toml:"),
            (
                format!("{KEY}[escrow.store]\nurl = \"ftp://s3.example\"\nbucket = \"fleet\"\n"),
                "escrow.store.url",
            ),
            (
                format!("{KEY}[escrow.store]\nurl = \"https://s3.example/fleet\"\nbucket = \"fleet\"\n"),
                "escrow.store.url",
            ),
            (
                format!("{KEY}[escrow.store]\nurl = \"https://u:p@s3.example\"\nbucket = \"fleet\"\n"),
                "escrow.store.url",
            ),
            (
                format!("{KEY}[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"Fleet\"\n"),
                "escrow.store.bucket",
            ),
            (
                format!("{KEY}[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"ab\"\n"),
                "escrow.store.bucket",
            ),
            (store("prefix = \"/ephemera/\""), "escrow.store.prefix"),
            (store("prefix = \"a/../b/\""), "escrow.store.prefix"),
            (store("prefix = \"a b/\""), "escrow.store.prefix"),
            (store("region = \"EU west\""), "escrow.store.region"),
            (store("ca_file = \"ca.pem\""), "escrow.store.ca_file"),
            (store("timeout_secs = 0"), "escrow.store.timeout_secs"),
            (store("timeout_secs = 301"), "escrow.store.timeout_secs"),
            (store("endpoint = \"x\""), "endpoint"),
            (
                format!("{KEY}[escrow.store]\nurl = \"http://s3.example\"\nbucket = \"fleet\"\nca_file = \"/ca.pem\"\ninsecure_http = true\n"),
                "escrow.store.ca_file",
            ),
            // Plain http without the opt-in that names its risk (issue 25).
            (
                format!("{KEY}[escrow.store]\nurl = \"http://s3.example\"\nbucket = \"fleet\"\n"),
                "escrow.store.url: \"http://s3.example\" is plain http",
            ),
            (
                "[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"fleet\"\n".into(),
                "escrow.store",
            ),
            (
                format!("{KEY}[escrow.store]\nurl = \"https://s3.example\"\n"),
                "bucket",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{text}");
            let m = e.to_string();
            assert!(m.contains(key) && !m.contains('\n'), "{text}: {m}");
        }
    }
}
