//! A small instance metadata service for the tests, on 127.0.0.1 only.
//!
//! It follows AWS's documented paths, formats and token rules (IMDSv2):
//! - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`
//!   between 1 and 21600 (else 400), and is refused (403) with an
//!   `X-Forwarded-For` header; the token expires after its TTL;
//! - every `/latest/meta-data/...` read needs a live token (else 401);
//! - `events/maintenance/scheduled` is a JSON list (`[]` when empty);
//! - `spot/instance-action` and `events/recommendations/rebalance` are 404
//!   when absent;
//! - `instance-id`, `placement/region`, and the instance role's credentials:
//!   `iam/security-credentials/` lists the role's name, and
//!   `iam/security-credentials/<role>` is its JSON document (Code,
//!   LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration);
//!   all 404 when the scenario has none;
//! - `/latest/dynamic/instance-identity/document`: the instance identity
//!   document (its `accountId`, `instanceId`, `region`), when the scenario
//!   has an account.
//!
//! Tests script it through [`Scenario`]: the documents, a delay, expiring
//! every token. With `dir` set, the documents are read from
//! `DIR/scheduled.json`, `DIR/spot.json` and `DIR/rebalance.json` at each
//! request (a missing spot or rebalance file is a 404), so a shell script
//! in a VM can change them while it runs (`examples/imds_server.rs`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SCHEDULED: &str = "/latest/meta-data/events/maintenance/scheduled";
pub const SPOT: &str = "/latest/meta-data/spot/instance-action";
pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";
pub const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
pub const REGION: &str = "/latest/meta-data/placement/region";
pub const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
pub const IDENTITY: &str = "/latest/dynamic/instance-identity/document";

/// The instance role, as `iam/security-credentials/<name>` gives it.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// AWS always gives one; `None` leaves it out of the document (a store
    /// that refuses session tokens it did not issue, as SeaweedFS does).
    pub token: Option<String>,
}

impl Role {
    /// The document as IMDS writes it (AWS's documented example's fields).
    pub fn document(&self) -> String {
        let token = self
            .token
            .as_ref()
            .map(|t| format!("  \"Token\" : \"{t}\",\n"))
            .unwrap_or_default();
        format!(
            "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-01-01T00:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"{}\",\n  \"SecretAccessKey\" : \"{}\",\n{token}  \"Expiration\" : \"2099-01-01T06:00:00Z\"\n}}",
            self.access_key_id, self.secret_access_key
        )
    }
}

#[derive(Debug)]
pub struct Scenario {
    pub scheduled: String,
    pub spot: Option<String>,
    pub rebalance: Option<String>,
    /// Read the documents from this directory instead.
    pub dir: Option<PathBuf>,
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub role: Option<Role>,
    /// The AWS account, for the identity document.
    pub account: Option<String>,
    /// Wait this long before answering anything.
    pub delay: Duration,
    pub tokens: HashMap<String, Instant>,
    pub next_token: u64,
    /// Counters, for the tests' assertions.
    pub token_puts: usize,
    pub reads: usize,
    pub unauthorized: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            scheduled: "[]".into(),
            spot: None,
            rebalance: None,
            dir: None,
            instance_id: None,
            region: None,
            role: None,
            account: None,
            delay: Duration::ZERO,
            tokens: HashMap::new(),
            next_token: 0,
            token_puts: 0,
            reads: 0,
            unauthorized: 0,
        }
    }
}

impl Scenario {
    /// Every token issued so far stops working, as after IMDS's TTL.
    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
    }
}

pub struct ImdsServer {
    pub port: u16,
    pub scenario: Arc<Mutex<Scenario>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ImdsServer {
    /// Listens on 127.0.0.1, on `port` (0: any free port).
    pub fn start(scenario: Scenario, port: u16) -> ImdsServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let scenario = Arc::new(Mutex::new(scenario));
        let stop = Arc::new(AtomicBool::new(false));
        let (sc, st) = (scenario.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let sc = sc.clone();
                    std::thread::spawn(move || serve(c, &sc));
                }
            }
        });
        ImdsServer {
            port,
            scenario,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Scenario) -> T) -> T {
        f(&mut self.scenario.lock().unwrap())
    }

    /// Stops listening: the port then refuses connections, like a machine
    /// with no IMDS.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(c: &mut TcpStream) -> Option<Request> {
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Request {
        method,
        path,
        headers,
    })
}

fn respond(c: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Other",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nServer: EC2ws\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(body.as_bytes());
}

fn serve(mut c: TcpStream, sc: &Mutex<Scenario>) {
    let Some(req) = read_request(&mut c) else {
        return;
    };
    let delay = sc.lock().unwrap().delay;
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let (status, body) = answer(&req, &mut sc.lock().unwrap());
    respond(&mut c, status, &body);
}

fn answer(req: &Request, s: &mut Scenario) -> (u16, String) {
    if req.path == "/latest/api/token" {
        if req.method != "PUT" {
            return (405, String::new());
        }
        if req.headers.contains_key("x-forwarded-for") {
            return (403, String::new());
        }
        let ttl = req
            .headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.parse::<u64>().ok());
        let Some(ttl @ 1..=21600) = ttl else {
            return (400, String::new());
        };
        s.token_puts += 1;
        s.next_token += 1;
        let token = format!("AQAEA-test-token-{}", s.next_token);
        s.tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        return (200, token);
    }
    if !req.path.starts_with("/latest/meta-data/") && req.path != IDENTITY {
        return (404, String::new());
    }
    if req.method != "GET" {
        return (405, String::new());
    }
    let live = req
        .headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|t| s.tokens.get(t))
        .is_some_and(|exp| Instant::now() < *exp);
    if !live {
        s.unauthorized += 1;
        return (401, String::new());
    }
    s.reads += 1;
    let from_dir = |name: &str| {
        s.dir
            .as_ref()
            .map(|d| std::fs::read_to_string(d.join(name)).ok())
    };
    let doc = match req.path.as_str() {
        SCHEDULED => match from_dir("scheduled.json") {
            Some(d) => Some(d.unwrap_or_else(|| "[]".into())),
            None => Some(s.scheduled.clone()),
        },
        SPOT => from_dir("spot.json").unwrap_or_else(|| s.spot.clone()),
        REBALANCE => from_dir("rebalance.json").unwrap_or_else(|| s.rebalance.clone()),
        INSTANCE_ID => s.instance_id.clone(),
        REGION => s.region.clone(),
        ROLES => s.role.as_ref().map(|r| r.name.clone()),
        IDENTITY => s.account.as_ref().map(|a| {
            serde_json::json!({
                "accountId": a,
                "instanceId": s.instance_id,
                "region": s.region,
                "architecture": "x86_64",
            })
            .to_string()
        }),
        p => s
            .role
            .as_ref()
            .filter(|r| p.strip_prefix(ROLES) == Some(r.name.as_str()))
            .map(Role::document),
    };
    match doc {
        Some(d) => (200, d),
        None => (404, String::new()),
    }
}
