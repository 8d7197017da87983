//! Envelopes off the node (`[escrow.store]`, issue 20): each escrow
//! envelope is also put in an S3-compatible bucket at
//! `<prefix><instance id>/<LUKS UUID>.json`, so that it outlives the node's
//! root disk and its console.
//!
//! - **Signing**: SigV4 by `rusty-s3`, a small, maintained, sans-IO crate:
//!   it only builds signed URLs (query-string SigV4, `UNSIGNED-PAYLOAD`), so
//!   it brings no HTTP client or async runtime of its own (`aws-sigv4` comes
//!   with the AWS SDK's smithy types, several times the code), and it has a
//!   ListObjectsV2 response parser. Its URLs carry the signature and the
//!   session token: they are never logged (messages name the bucket and the
//!   key), and ureq logs a URL's path and query only at trace level, which
//!   ephemera never enables.
//! - **HTTP**: the same ureq as IMDS, with rustls (ring) and webpki-roots:
//!   Mozilla's roots built in, so the node trusts the same CAs on every
//!   image and reads no CA store at boot; S3's certificates chain to them.
//!   A private endpoint's CA goes in `ca_file`, which then replaces the
//!   built-in roots. Proxies come from the usual environment
//!   (`HTTPS_PROXY`, `NO_PROXY`).
//! - **Write once**: the PUT carries `If-None-Match: *`, signed. AWS S3 and
//!   SeaweedFS (tested: tests/escrow_store.rs) answer 412 when the key
//!   exists. The object is then read back: the same bytes are success (a
//!   re-run, or a retry whose first answer was lost), other bytes a loud
//!   error, and nothing is ever overwritten.
//! - **Bounded**: every request's time comes out of one deadline
//!   (`timeout_secs`), IMDS reads included.
//!
//! On the node, the instance role's credentials, the instance id and the
//! region come from IMDSv2 (`node::imds`). A failure never stops
//! provisioning: the envelope stays on the node with a `store-pending`
//! marker beside it, the metric `ephemera_escrow_stored` says 0, and the
//! events watcher retries ([`retry_pending`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::config::store::Store as StoreConfig;
use crate::error::{Error, Result};
use crate::host::safe_fs;
use crate::host::Host;
use crate::keys::escrow;
use crate::node::imds::{Imds, ImdsError};

/// The largest object read back or uploaded: an envelope with 16 recipients
/// of 4096-bit keys is about 13 KB.
pub const MAX_OBJECT: u64 = 256 * 1024;
/// The largest ListObjectsV2 page read (1000 keys of about 100 bytes).
const MAX_LIST_PAGE: u64 = 4 * 1024 * 1024;
/// The most entries a listing keeps (envelopes of a fleet's instances;
/// `--instance` narrows it), and the most pages it reads (S3 gives up to
/// 1000 keys a page): bounds on memory, whatever a store answers.
pub const MAX_LIST_ENTRIES: usize = 200_000;
const MAX_LIST_PAGES: usize = 1_000;
/// How long a signed URL is valid: it is used at once, so only a bound on
/// the clock skew that still works.
const URL_VALIDITY: Duration = Duration::from_secs(300);

pub const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
pub const REGION_PATH: &str = "/latest/meta-data/placement/region";
pub const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// The object key of an envelope: `<prefix><instance id>/<LUKS UUID>.json`.
/// Both parts are checked, so that no answer of IMDS can choose another
/// key (a `/` or `..` in an id would).
pub fn object_key(prefix: &str, instance_id: &str, luks_uuid: &str) -> Result<String, String> {
    check_instance_id(instance_id)?;
    if !escrow::is_uuid(luks_uuid) {
        return Err(format!("{luks_uuid:?} is not a LUKS UUID"));
    }
    Ok(format!("{prefix}{instance_id}/{luks_uuid}.json"))
}

/// An EC2 instance id: `i-` and 8 or 17 lowercase hex digits.
pub fn check_instance_id(id: &str) -> Result<(), String> {
    let hex = id.strip_prefix("i-").unwrap_or("");
    if (hex.len() == 8 || hex.len() == 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not an EC2 instance id (i-0123456789abcdef0)"
        ))
    }
}

/// The instance role's credentials, as IMDS's
/// `iam/security-credentials/<role>` document gives them. Its `Debug`
/// shows the key id only.
pub fn parse_role_credentials(doc: &str) -> Result<Credentials, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Doc {
        code: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
    }
    // serde_json's message quotes no value of the document, only where.
    let d: Doc = serde_json::from_str(doc).map_err(|e| {
        format!("the role's credentials document is not JSON as IMDS writes it: {e}")
    })?;
    if let Some(code) = d.code.as_deref().filter(|c| *c != "Success") {
        return Err(format!(
            "IMDS says the role's credentials are not available (Code {:?})",
            code.chars().take(64).collect::<String>()
        ));
    }
    let (Some(key), Some(secret)) = (d.access_key_id, d.secret_access_key) else {
        return Err("the role's credentials document has no AccessKeyId or SecretAccessKey".into());
    };
    let printable =
        |s: &str| !s.is_empty() && s.len() <= 4096 && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(&key) || !printable(&secret) || d.token.as_deref().is_some_and(|t| !printable(t))
    {
        return Err(
            "the role's credentials document holds a malformed key, secret or token".into(),
        );
    }
    Ok(match d.token {
        Some(token) => Credentials::new_with_token(key, secret, token),
        None => Credentials::new(key, secret),
    })
}

/// The `<Code>` of an S3 error answer, and nothing else of it: an error
/// body such as SignatureDoesNotMatch's quotes the canonical request, which
/// holds the session token.
pub fn error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    let code = &body[start..start + len];
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        .then(|| code.to_string())
}

/// What a write-once PUT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object was made now.
    Created,
    /// The same bytes were there already (a re-run): nothing changed.
    AlreadyThere,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub last_modified: String,
}

/// A client for one bucket, with one set of credentials.
pub struct Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
    /// `https://host/bucket`, for messages.
    at: String,
}

impl Client {
    /// A client for `bucket` at `url` (path-style), signing for `region`;
    /// `ca_file`: the PEM CAs to trust instead of the built-in roots.
    pub fn new(
        url: &str,
        bucket: &str,
        region: &str,
        ca_file: Option<&Path>,
        credentials: Credentials,
    ) -> Result<Client> {
        let endpoint: url::Url = url
            .parse()
            .map_err(|e| Error::Usage(format!("escrow store url {url:?}: {e}")))?;
        let b = Bucket::new(
            endpoint,
            UrlStyle::Path,
            bucket.to_string(),
            region.to_string(),
        )
        .map_err(|e| Error::Usage(format!("escrow store bucket {bucket:?} at {url}: {e}")))?;
        let agent = https_agent(ca_file, "escrow.store.ca_file")?;
        Ok(Client {
            agent,
            bucket: b,
            credentials,
            at: format!("{}/{bucket}", url.trim_end_matches('/')),
        })
    }

    /// Where `key` is, for messages: `https://host/bucket/key`, unsigned.
    pub fn name(&self, key: &str) -> String {
        format!("{}/{key}", self.at)
    }

    /// Puts `bytes` at `key` unless something is there: the same bytes
    /// there already are success, other bytes an error; never overwrites.
    pub fn put_once(&self, key: &str, bytes: &[u8], deadline: Instant) -> Result<Put, String> {
        // Content-MD5, signed: S3 requires it (or another checksum) on a
        // PUT to a bucket with Object Lock retention, and the store then
        // refuses bytes changed on the way.
        let md5 = {
            use base64::Engine;
            use md5::Digest;
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
        };
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        action.headers_mut().insert("if-none-match", "*");
        action.headers_mut().insert("content-md5", md5.clone());
        let url = action.sign(URL_VALIDITY);
        let resp = self
            .agent
            .put(url.as_str())
            .config()
            .timeout_global(Some(remaining(deadline)?))
            .build()
            .header("If-None-Match", "*")
            .header("Content-MD5", &md5)
            .header("Content-Type", "application/json")
            .send(bytes)
            .map_err(|e| self.failed(key, e))?;
        match resp.status().as_u16() {
            200 | 201 => return Ok(Put::Created),
            // 412: the key exists. 409: a concurrent conditional write to it
            // (S3's ConditionalRequestConflict); read what won.
            412 | 409 => {}
            s => return Err(self.refused(key, s, resp)),
        }
        match self.get(key, deadline)? {
            Some(there) if there == bytes => Ok(Put::AlreadyThere),
            Some(there) => Err(format!(
                "{}: ANOTHER OBJECT IS THERE ({} bytes, not the {} bytes of this node's envelope); \
                 it was left as it is, never overwritten: compare it with the envelope on the node",
                self.name(key),
                there.len(),
                bytes.len()
            )),
            None => Err(format!(
                "{}: the store refused the write as if the key existed, but a read finds nothing",
                self.name(key)
            )),
        }
    }

    /// The object at `key`; `None` when there is none.
    pub fn get(&self, key: &str, deadline: Instant) -> Result<Option<Vec<u8>>, String> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(URL_VALIDITY);
        let mut resp = self.call_get(&url, key, deadline)?;
        match resp.status().as_u16() {
            200 => read_body(&mut resp, MAX_OBJECT)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.name(key))),
            404 => Ok(None),
            s => Err(self.refused(key, s, resp)),
        }
    }

    /// Every object whose key starts with `prefix`, in key order; at most
    /// [`MAX_LIST_ENTRIES`] of them in [`MAX_LIST_PAGES`] pages, and a
    /// continuation token seen before is refused (a store that sends tokens
    /// in a circle would otherwise be listed until the deadline, its entries
    /// growing all the while).
    pub fn list(&self, prefix: &str, deadline: Instant) -> Result<Vec<Listed>, String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_LIST_PAGES {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(URL_VALIDITY);
            let mut resp = self.call_get(&url, prefix, deadline)?;
            if resp.status().as_u16() != 200 {
                return Err(self.refused(prefix, resp.status().as_u16(), resp));
            }
            let body = read_body(&mut resp, MAX_LIST_PAGE)
                .map_err(|e| format!("{}: {e}", self.name(prefix)))?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&String::from_utf8_lossy(
                &body,
            ))
            .map_err(|e| format!("{}: not a ListObjectsV2 answer: {e}", self.name(prefix)))?;
            out.extend(page.contents.into_iter().map(|c| Listed {
                key: c.key,
                size: c.size,
                last_modified: c.last_modified,
            }));
            if out.len() > MAX_LIST_ENTRIES {
                return Err(format!(
                    "{}: more than {MAX_LIST_ENTRIES} objects under {prefix:?}; list one \
                     instance's (--instance)",
                    self.at
                ));
            }
            match page.next_continuation_token {
                Some(t) if t.is_empty() => {}
                Some(t) if !seen.insert(t.clone()) => {
                    return Err(format!(
                        "{}: the store sent a continuation token it had sent before: a listing \
                         that would never end",
                        self.at
                    ))
                }
                Some(t) => {
                    token = Some(t);
                    continue;
                }
                None => {}
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            return Ok(out);
        }
        Err(format!(
            "{}: more than {MAX_LIST_PAGES} pages under {prefix:?}; list one instance's (--instance)",
            self.at
        ))
    }

    /// A GET of the signed `url`, within the deadline; `key` names it in
    /// messages (the URL never does).
    fn call_get(
        &self,
        url: &url::Url,
        key: &str,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        self.agent
            .get(url.as_str())
            .config()
            .timeout_global(Some(remaining(deadline)?))
            .build()
            .call()
            .map_err(|e| self.failed(key, e))
    }

    fn failed(&self, key: &str, e: ureq::Error) -> String {
        let why = match e {
            ureq::Error::Timeout(_) => {
                "no answer within the time left (escrow.store.timeout_secs)".to_string()
            }
            // ureq's messages name no URL; its Display of an I/O or TLS error
            // is the cause (refused, unknown issuer, ...).
            e => e.to_string(),
        };
        format!("{}: {why}", self.name(key))
    }

    fn refused(
        &self,
        key: &str,
        status: u16,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> String {
        let body = read_body(&mut resp, 64 * 1024).unwrap_or_default();
        let code = error_code(&String::from_utf8_lossy(&body));
        let hint = match code.as_deref() {
            Some("SignatureDoesNotMatch") => {
                ": the secret key is wrong, or the region (the signature does not match)"
            }
            Some("InvalidAccessKeyId") => {
                ": the store does not know the access key (or its session token)"
            }
            Some("AccessDenied") => ": the bucket policy does not allow it",
            Some("NoSuchBucket") => ": no such bucket",
            Some("RequestTimeTooSkewed") => ": this machine's clock is off",
            _ => "",
        };
        format!(
            "{}: HTTP {status}{}{hint}",
            self.name(key),
            code.map(|c| format!(" {c}")).unwrap_or_default()
        )
    }
}

/// The HTTP client of the key services ([escrow.store], the kms pin):
/// rustls with Mozilla's roots built in, or only the CAs of `ca_file`
/// (`key` names that setting in messages); no redirect (it would carry a
/// signed request to another host); HTTP errors as answers, not errors.
pub fn https_agent(ca_file: Option<&Path>, key: &str) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
    if let Some(ca) = ca_file {
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(load_ca(ca, key)?)));
    }
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .tls_config(tls.build())
        .user_agent(concat!("ephemera/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    remaining_of(deadline, "escrow.store.timeout_secs")
}

/// The time left before `deadline`; once it has passed, an error naming
/// the setting `key` that bounds it.
pub fn remaining_of(deadline: Instant, key: &str) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(format!("out of time ({key})"))
    } else {
        Ok(left)
    }
}

pub fn read_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<Vec<u8>, String> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => format!("answer larger than {limit} bytes"),
            e => e.to_string(),
        })
}

/// The certificates of the PEM file `path` (the setting `key`).
fn load_ca(path: &Path, key: &str) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let bad = |why: String| Error::Usage(format!("{key} {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(e.to_string()))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => {
                return Err(bad(
                    "holds something that is not a certificate (a key?)".into()
                ))
            }
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// What the node learned from IMDS for a key service: its instance id, the
/// region, and the instance role's credentials.
pub struct NodeIdentity {
    pub instance_id: String,
    pub region: String,
    pub credentials: Credentials,
}

/// One IMDS document, trimmed; a 404 or any failure is an error line.
pub fn imds_read(imds: &mut Imds, path: &str) -> Result<String, String> {
    match imds.get(path) {
        Ok(Some(v)) => Ok(v.trim().to_string()),
        Ok(None) => Err(format!("IMDS has no {path} (404)")),
        Err(ImdsError::Unreachable(m) | ImdsError::NoToken(m) | ImdsError::Failed(m)) => {
            Err(format!("IMDS: {m}"))
        }
    }
}

/// The instance id, the region (`region`, else IMDS's) and the role's
/// credentials from IMDSv2 at `endpoint`, within `deadline` (the setting
/// `bound` sets it, for messages).
pub fn node_identity(
    endpoint: &str,
    region: Option<&str>,
    deadline: Instant,
    bound: &str,
) -> Result<NodeIdentity, String> {
    let mut imds = Imds::new(
        endpoint,
        remaining_of(deadline, bound)?.min(crate::node::imds::DEFAULT_TIMEOUT),
    );
    let instance_id = imds_read(&mut imds, INSTANCE_ID_PATH)?;
    check_instance_id(&instance_id).map_err(|e| format!("IMDS {INSTANCE_ID_PATH}: {e}"))?;
    let region = match region {
        Some(r) => r.to_string(),
        None => {
            let r = imds_read(&mut imds, REGION_PATH)?;
            crate::config::store::check_region(&r)
                .map_err(|e| format!("IMDS {REGION_PATH}: {e}"))?;
            r
        }
    };
    remaining_of(deadline, bound)?;
    let roles = imds_read(&mut imds, ROLE_PATH).map_err(|e| {
        format!("{e}: no instance role? the node needs one (for the bucket or the KMS key)")
    })?;
    let role = roles.lines().next().unwrap_or("").trim().to_string();
    if role.is_empty()
        || !role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        return Err(format!("IMDS {ROLE_PATH}: {role:?} is not a role name"));
    }
    remaining_of(deadline, bound)?;
    let doc = imds_read(&mut imds, &format!("{ROLE_PATH}{role}"))?;
    let credentials =
        parse_role_credentials(&doc).map_err(|e| format!("IMDS {ROLE_PATH}{role}: {e}"))?;
    Ok(NodeIdentity {
        instance_id,
        region,
        credentials,
    })
}

/// Reads this node's envelope copy of `luks_uuid` (never through a link),
/// checks it is that volume's envelope, and returns its bytes as written.
fn envelope_bytes(host: &Host, escrow_path: &Path, luks_uuid: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let node_path = escrow::path_for(escrow_path, luks_uuid);
    let p = host.abs(&node_path);
    let mut bytes = Vec::new();
    std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&p)
        .and_then(|f| f.take(MAX_OBJECT + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: cannot read: {e}", node_path.display()))?;
    if bytes.len() as u64 > MAX_OBJECT {
        return Err(format!(
            "{}: larger than {MAX_OBJECT} bytes",
            node_path.display()
        ));
    }
    let env =
        escrow::parse(&String::from_utf8_lossy(&bytes), &node_path).map_err(|e| e.to_string())?;
    if env.luks_uuid != luks_uuid {
        return Err(format!(
            "{}: its luks_uuid is {}, not {luks_uuid}",
            node_path.display(),
            env.luks_uuid
        ));
    }
    Ok(bytes)
}

/// Where the envelope of `luks_uuid` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `https://host/bucket/key`, unsigned.
    pub at: String,
    pub put: Put,
}

/// One upload of this node's envelope of `luks_uuid`, within
/// `store.timeout_secs`, IMDS reads included. The error is one line naming
/// the bucket and key (or what it could not learn) and the cause.
pub fn upload(
    host: &Host,
    imds_endpoint: &str,
    escrow_path: &Path,
    store: &StoreConfig,
    luks_uuid: &str,
) -> Result<Stored, String> {
    let deadline = Instant::now() + Duration::from_secs(store.timeout_secs);
    let bytes = envelope_bytes(host, escrow_path, luks_uuid)?;
    let node = node_identity(
        imds_endpoint,
        store.region.as_deref(),
        deadline,
        "escrow.store.timeout_secs",
    )
    .map_err(|e| format!("{}/{}: {e}", store.url.trim_end_matches('/'), store.bucket))?;
    let key = object_key(&store.prefix, &node.instance_id, luks_uuid)?;
    let client = Client::new(
        &store.url,
        &store.bucket,
        &node.region,
        store.ca_file.as_deref(),
        node.credentials,
    )
    .map_err(|e| e.to_string())?;
    let put = client.put_once(&key, &bytes, deadline)?;
    Ok(Stored {
        at: client.name(&key),
        put,
    })
}

/// The LUKS UUIDs of this node's envelopes that the store does not hold
/// yet (a `store-pending` marker beside them), skipping volumes that were
/// never mounted (a run cut short: they never held data).
pub fn pending(host: &Host, escrow_path: &Path) -> Vec<String> {
    let (Some(dir), Some(stem)) = (escrow_path.parent(), escrow_path.file_stem()) else {
        return Vec::new();
    };
    let head = format!("{}.", stem.to_string_lossy());
    let tail = format!(".{}", escrow::STORE_PENDING);
    let mut out: Vec<String> = host
        .entries(&host.abs(dir))
        .into_iter()
        .filter_map(|name| {
            let uuid = name.strip_prefix(&head)?.strip_suffix(&tail)?;
            escrow::is_uuid(uuid).then(|| uuid.to_string())
        })
        .filter(|u| {
            !host
                .abs(&escrow::marker(escrow_path, u, escrow::NEVER_MOUNTED))
                .exists()
        })
        .collect();
    out.sort();
    out
}

/// The metrics file of the store, beside the events watcher's
/// (`ephemera.prom` -> `ephemera-escrow.prom`). A file of its own: both
/// provision and the watcher write it, and each writer replaces a whole
/// file, so sharing the watcher's would lose one's lines to the other.
pub fn metrics_path(events_textfile: &Path) -> Option<PathBuf> {
    if events_textfile.as_os_str().is_empty() {
        return None;
    }
    let stem = events_textfile.file_stem()?.to_string_lossy();
    Some(events_textfile.with_file_name(format!("{stem}-escrow.prom")))
}

/// The store's metrics text: `ephemera_escrow_stored` is 1 when every
/// envelope of this node is in the store, 0 while one is not.
pub fn render_metrics(pending: usize) -> String {
    format!(
        "# HELP ephemera_escrow_stored 1 when every escrow envelope of this node is in the store ([escrow.store]); 0 while one is not yet.\n\
         # TYPE ephemera_escrow_stored gauge\n\
         ephemera_escrow_stored {}\n\
         # HELP ephemera_escrow_store_pending Escrow envelopes of this node not yet in the store.\n\
         # TYPE ephemera_escrow_store_pending gauge\n\
         ephemera_escrow_store_pending {pending}\n",
        u8::from(pending == 0)
    )
}

/// Writes the store's metrics, if there is a textfile; a failure is a
/// warning (the journal line about the upload is there either way).
pub fn write_metrics(events_textfile: &Path, pending: usize) {
    let Some(path) = metrics_path(events_textfile) else {
        return;
    };
    if let Err(e) = safe_fs::write_file(
        &path,
        render_metrics(pending).as_bytes(),
        crate::node::events::METRICS,
    ) {
        tracing::warn!("escrow store metrics not written: {e}");
    }
}

/// One attempt for `luks_uuid`: the marker is removed on success. Returns
/// the line to log on failure.
pub fn attempt(
    host: &Host,
    cfg: &crate::config::Config,
    store: &StoreConfig,
    luks_uuid: &str,
) -> Result<Stored, String> {
    let s = upload(
        host,
        &cfg.events.endpoint,
        &cfg.escrow.path,
        store,
        luks_uuid,
    )?;
    escrow::clear_marker(host, &cfg.escrow.path, luks_uuid, escrow::STORE_PENDING)
        .map_err(|e| format!("{} is stored, but its marker stays: {e}", s.at))?;
    Ok(s)
}

/// At provision, once the volume is made: puts its envelope in the store
/// (its `store-pending` marker was written with the envelope). Never fails
/// provisioning: a failure is one error line and the metric at 0, and the
/// events watcher retries.
pub fn at_provision(host: &Host, cfg: &crate::config::Config, luks_uuid: &str) {
    let Some(store) = &cfg.escrow.store else {
        return;
    };
    let start = Instant::now();
    match attempt(host, cfg, store, luks_uuid) {
        Ok(s) => tracing::info!(
            ms = start.elapsed().as_millis() as u64,
            "escrow envelope of LUKS UUID {luks_uuid} {} {}",
            match s.put {
                Put::Created => "stored at",
                Put::AlreadyThere => "was already stored, the same, at",
            },
            s.at
        ),
        Err(e) => tracing::error!(
            "escrow envelope of LUKS UUID {luks_uuid} NOT STORED: {e}; it is on this node and the \
             console, and ephemera-events.service retries"
        ),
    }
    write_metrics(&cfg.events.textfile, pending(host, &cfg.escrow.path).len());
}

/// The events watcher's retry: every pending envelope, one attempt each.
/// Returns the errors (one line each) and how many are still pending.
pub fn retry_pending(host: &Host, cfg: &crate::config::Config) -> (Vec<String>, usize) {
    let Some(store) = &cfg.escrow.store else {
        return (Vec::new(), 0);
    };
    let mut errors = Vec::new();
    for uuid in pending(host, &cfg.escrow.path) {
        match attempt(host, cfg, store, &uuid) {
            Ok(s) => tracing::info!(
                "escrow envelope of LUKS UUID {uuid} stored at {} (retry)",
                s.at
            ),
            Err(e) => errors.push(format!(
                "escrow envelope of LUKS UUID {uuid} NOT STORED: {e}"
            )),
        }
    }
    let left = pending(host, &cfg.escrow.path).len();
    write_metrics(&cfg.events.textfile, left);
    (errors, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";

    #[test]
    fn object_keys() {
        assert_eq!(
            object_key("ephemera/", "i-0123456789abcdef0", UUID).unwrap(),
            format!("ephemera/i-0123456789abcdef0/{UUID}.json")
        );
        assert_eq!(
            object_key("", "i-01234567", UUID).unwrap(),
            format!("i-01234567/{UUID}.json")
        );
        for bad in [
            "",
            "i-",
            "i-../../x",
            "i-0123456789ABCDEF0",
            "i-0123/4567",
            "x-01234567",
        ] {
            assert!(object_key("p/", bad, UUID).is_err(), "{bad:?}");
        }
        assert!(object_key("p/", "i-01234567", "../x").is_err());
    }

    #[test]
    fn role_credentials_as_imds_gives_them() {
        // AWS's documented example of iam/security-credentials/<role>.
        let doc = r#"{
          "Code" : "Success",
          "LastUpdated" : "2012-04-26T16:39:16Z",
          "Type" : "AWS-HMAC",
          "AccessKeyId" : "ASIAIOSFODNN7EXAMPLE",
          "SecretAccessKey" : "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
          "Token" : "token",
          "Expiration" : "2017-05-17T15:09:54Z"
        }"#;
        let c = parse_role_credentials(doc).unwrap();
        assert_eq!(c.key(), "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(c.token(), Some("token"));
        assert!(!format!("{c:?}").contains("wJalr"), "{c:?}");
        // The token goes into the signed URL, as S3 wants it.
        let b = Bucket::new(
            "https://s3.eu-west-1.amazonaws.com".parse().unwrap(),
            UrlStyle::Path,
            "fleet-escrow".to_string(),
            "eu-west-1".to_string(),
        )
        .unwrap();
        let url = b
            .put_object(Some(&c), "ephemera/i-01234567/x.json")
            .sign(URL_VALIDITY);
        assert!(
            url.as_str().starts_with(
                "https://s3.eu-west-1.amazonaws.com/fleet-escrow/ephemera/i-01234567/x.json?"
            ),
            "{url}"
        );
        assert!(url.as_str().contains("X-Amz-Security-Token=token"), "{url}");
        assert!(
            url.as_str().contains("%2Feu-west-1%2Fs3%2Faws4_request"),
            "{url}"
        );

        let e = parse_role_credentials(r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"x"}"#)
            .unwrap_err();
        assert!(e.contains("AssumeRoleUnauthorizedAccess"), "{e}");
        for bad in [
            "",
            "{",
            r#"{"Code":"Success"}"#,
            r#"{"AccessKeyId":"a b","SecretAccessKey":"s"}"#,
        ] {
            let e = parse_role_credentials(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn error_answers_give_their_code_and_nothing_else() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>m</Message>\
                    <CanonicalRequest>PUT /b/k X-Amz-Security-Token=SECRET</CanonicalRequest></Error>";
        assert_eq!(error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code("<Error><Code>a<b</Code></Error>"), None);
        assert_eq!(error_code("not xml"), None);
    }

    #[test]
    fn metrics_file_and_text() {
        assert_eq!(
            metrics_path(Path::new("/var/lib/prometheus/node-exporter/ephemera.prom")).unwrap(),
            Path::new("/var/lib/prometheus/node-exporter/ephemera-escrow.prom")
        );
        assert_eq!(metrics_path(Path::new("")), None);
        assert!(render_metrics(0).contains("\nephemera_escrow_stored 1\n"));
        let m = render_metrics(2);
        assert!(
            m.contains("\nephemera_escrow_stored 0\n")
                && m.contains("\nephemera_escrow_store_pending 2\n"),
            "{m}"
        );
    }

    #[test]
    fn pending_markers_are_found_and_never_mounted_ones_skipped() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        let dir = root.path().join("var/lib/ephemera");
        std::fs::create_dir_all(&dir).unwrap();
        let other = "1f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";
        for name in [
            format!("escrow.{UUID}.store-pending"),
            format!("escrow.{other}.store-pending"),
            format!("escrow.{other}.never-mounted"),
            "escrow.not-a-uuid.store-pending".to_string(),
            format!("other.{UUID}.store-pending"),
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(
            pending(&host, Path::new("/var/lib/ephemera/escrow.json")),
            vec![UUID.to_string()]
        );
    }

    /// A store that answers every listing page with a continuation token,
    /// A and B in turn (issue 25): the listing ends at the first token seen
    /// again, with an error, after three pages, not at the deadline with
    /// entries growing all the while.
    #[test]
    fn a_listing_whose_tokens_go_in_a_circle_is_refused() {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pages = Arc::new(AtomicUsize::new(0));
        let served = pages.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let n = served.fetch_add(1, Ordering::SeqCst);
                let token = if n.is_multiple_of(2) { "A" } else { "B" };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult \
                     xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>fleet</Name>\
                     <Prefix>ephemera/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>\
                     <IsTruncated>true</IsTruncated><Contents><Key>ephemera/i-01234567/{n}.json</Key>\
                     <LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag>\
                     <Size>10</Size><StorageClass>STANDARD</StorageClass></Contents>\
                     <NextContinuationToken>{token}</NextContinuationToken></ListBucketResult>"
                );
                let mut w = conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let c = Client::new(
            &format!("http://127.0.0.1:{port}"),
            "fleet",
            "us-east-1",
            None,
            Credentials::new("AKIDOPS", "secret"),
        )
        .unwrap();
        let e = c
            .list("ephemera/", Instant::now() + Duration::from_secs(120))
            .unwrap_err();
        assert!(e.contains("continuation token it had sent before"), "{e}");
        assert_eq!(pages.load(Ordering::SeqCst), 3);
    }
}
