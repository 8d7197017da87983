//! `ephemera escrow list|get`: ops read the envelope store
//! (`[escrow.store]`, docs/ESCROW.md) with their own credentials, from the
//! usual AWS environment variables, on a machine of their own. What they
//! fetch is the envelope as the node wrote it: `ephemera recover
//! --escrow FILE` or the README's runbook opens it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::store::{self, Store};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::escrow;
use crate::node::escrow_store::{self as es, Client};

/// The store as the command line overrides the config's `[escrow.store]`.
#[derive(Debug, Default, Clone)]
pub struct Where {
    pub url: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `--insecure-http`: accept a plain http url (escrow.store.insecure_http).
    pub insecure_http: bool,
}

/// The bound on each ops command (a listing may take several pages).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The store to read: the config's, with the flags over it; checked as the
/// config is.
fn store(cfg: &Config, w: &Where) -> Result<Store> {
    let base = cfg.escrow.store.clone();
    let need = |what: &str, flag: &str| {
        Error::Usage(format!(
            "no {what}: give {flag} or set escrow.store.{what} in the config"
        ))
    };
    let s = Store {
        url: w
            .url
            .clone()
            .or_else(|| base.as_ref().map(|b| b.url.clone()))
            .ok_or_else(|| need("url", "--url"))?,
        bucket: w
            .bucket
            .clone()
            .or_else(|| base.as_ref().map(|b| b.bucket.clone()))
            .ok_or_else(|| need("bucket", "--bucket"))?,
        prefix: w
            .prefix
            .clone()
            .or_else(|| base.as_ref().map(|b| b.prefix.clone()))
            .unwrap_or_else(|| store::DEFAULT_PREFIX.into()),
        region: w
            .region
            .clone()
            .or_else(|| base.as_ref().and_then(|b| b.region.clone())),
        ca_file: w
            .ca_file
            .clone()
            .or_else(|| base.as_ref().and_then(|b| b.ca_file.clone())),
        timeout_secs: store::DEFAULT_TIMEOUT_SECS,
        insecure_http: w.insecure_http || base.as_ref().is_some_and(|b| b.insecure_http),
    };
    s.validate()?;
    Ok(s)
}

/// Ops' credentials and region, as the AWS CLI reads them from the
/// environment (profiles are not read). The region: `--region`, else
/// AWS_REGION, else AWS_DEFAULT_REGION, else the config's.
fn client(s: &Store, env: &dyn Fn(&str) -> Option<String>) -> Result<Client> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        return Err(Error::Usage(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN \
             for a role's), for example with `eval \"$(aws configure export-credentials --format env)\"`"
                .into(),
        ));
    };
    let region = s
        .region
        .clone()
        .or_else(|| var("AWS_REGION"))
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .ok_or_else(|| Error::Usage("no region: give --region or set AWS_REGION".into()))?;
    store::check_region(&region).map_err(|e| Error::Usage(format!("region: {e}")))?;
    let creds = match var("AWS_SESSION_TOKEN") {
        Some(t) => rusty_s3::Credentials::new_with_token(key, secret, t),
        None => rusty_s3::Credentials::new(key, secret),
    };
    Client::new(&s.url, &s.bucket, &region, s.ca_file.as_deref(), creds)
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// One envelope in the store, as `escrow list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub instance_id: String,
    pub luks_uuid: String,
    pub size: u64,
    pub last_modified: String,
    pub key: String,
}

/// Reads `<prefix><instance id>/<LUKS UUID>.json` out of a key; `None` for
/// an object that is not an envelope ephemera put there.
pub fn entry_of(prefix: &str, l: &es::Listed) -> Option<Entry> {
    let rest = l.key.strip_prefix(prefix)?;
    let (id, file) = rest.split_once('/')?;
    let uuid = file.strip_suffix(".json")?;
    es::object_key(prefix, id, uuid).ok()?;
    Some(Entry {
        instance_id: id.into(),
        luks_uuid: uuid.into(),
        size: l.size,
        last_modified: l.last_modified.clone(),
        key: l.key.clone(),
    })
}

/// `ephemera escrow list [--instance ID]`.
pub fn list(cfg: &Config, w: &Where, instance: Option<&str>) -> Result<Vec<Entry>> {
    let s = store(cfg, w)?;
    if let Some(id) = instance {
        es::check_instance_id(id).map_err(|e| Error::Usage(format!("--instance: {e}")))?;
    }
    let c = client(&s, &env_var)?;
    let prefix = match instance {
        Some(id) => format!("{}{id}/", s.prefix),
        None => s.prefix.clone(),
    };
    let listed = c
        .list(&prefix, Instant::now() + TIMEOUT)
        .map_err(Error::Failed)?;
    Ok(listed
        .iter()
        .filter_map(|l| entry_of(&s.prefix, l))
        .collect())
}

/// The text form of a listing.
pub fn describe(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "no envelopes in the store\n".into();
    }
    entries
        .iter()
        .map(|e| {
            format!(
                "{}  {}  {}  {} bytes\n",
                e.instance_id, e.luks_uuid, e.last_modified, e.size
            )
        })
        .collect()
}

/// `ephemera escrow get --instance ID --luks-uuid U [-o FILE]`: the
/// envelope's bytes, as stored, to FILE (made new, never overwritten, mode
/// 0600) or stdout. It is checked to be an envelope of that volume first.
pub fn get(
    cfg: &Config,
    w: &Where,
    instance: &str,
    luks_uuid: &str,
    out: Option<&Path>,
) -> Result<()> {
    let s = store(cfg, w)?;
    let key = es::object_key(&s.prefix, instance, luks_uuid).map_err(Error::Usage)?;
    let c = client(&s, &env_var)?;
    let bytes = c
        .get(&key, Instant::now() + TIMEOUT)
        .map_err(Error::Failed)?
        .ok_or_else(|| Error::Failed(format!("{}: no such envelope in the store", c.name(&key))))?;
    let env = escrow::parse(&String::from_utf8_lossy(&bytes), Path::new(&c.name(&key)))?;
    if env.luks_uuid != luks_uuid {
        return Err(Error::Failed(format!(
            "{}: the envelope there is for LUKS UUID {}, not {luks_uuid}",
            c.name(&key),
            env.luks_uuid
        )));
    }
    match out {
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(Error::io("creating", p))?;
            f.write_all(&bytes).map_err(Error::io("writing", p))?;
            tracing::info!("{} -> {}", c.name(&key), p.display());
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(Error::io("writing", Path::new("stdout")))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";

    fn listed(key: &str) -> es::Listed {
        es::Listed {
            key: key.into(),
            size: 10,
            last_modified: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn listing_keeps_the_envelopes_only() {
        let e = entry_of(
            "ephemera/",
            &listed(&format!("ephemera/i-01234567/{UUID}.json")),
        )
        .unwrap();
        assert_eq!(
            (e.instance_id.as_str(), e.luks_uuid.as_str()),
            ("i-01234567", UUID)
        );
        for other in [
            format!("ephemera/i-01234567/{UUID}.txt"),
            format!("other/i-01234567/{UUID}.json"),
            format!("ephemera/i-01234567/x/{UUID}.json"),
            "ephemera/i-01234567/".into(),
        ] {
            assert_eq!(entry_of("ephemera/", &listed(&other)), None, "{other}");
        }
    }

    #[test]
    fn no_store_no_credentials_no_region_are_usage_errors() {
        let cfg = Config::default();
        let e = store(&cfg, &Where::default()).unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        let w = Where {
            url: Some("https://s3.example".into()),
            bucket: Some("fleet".into()),
            ..Where::default()
        };
        let s = store(&cfg, &w).unwrap();
        assert_eq!(s.prefix, "ephemera/");
        let none = |_: &str| None;
        let e = client(&s, &none).err().unwrap();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let creds = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIA".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("s".to_string()),
            _ => None,
        };
        let e = client(&s, &creds).err().unwrap();
        assert!(e.to_string().contains("region"), "{e}");
        let bad = Where {
            bucket: Some("Bad_Bucket".into()),
            ..w
        };
        assert!(store(&cfg, &bad)
            .unwrap_err()
            .to_string()
            .contains("escrow.store.bucket"));
    }
}
