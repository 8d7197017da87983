//! A client for the EC2 instance metadata service, IMDSv2 only.
//!
//! The HTTP client is ureq with its default features off: plain HTTP over
//! std's `TcpStream`, no TLS, no async runtime, no gzip. IMDS is plain
//! `http://169.254.169.254`, so TLS would be dead weight; ureq still gives us
//! a maintained HTTP/1.1 parser (status line, headers, chunked bodies), per
//! phase timeouts and a body size limit, which a hand-written client over
//! `TcpStream` would have to get right again and test on its own.
//!
//! Every request is bounded: the connection by `timeout / 2`, the whole
//! exchange by `timeout`, the body by [`MAX_BODY`] bytes. The proxy
//! environment (`http_proxy`) is ignored: IMDS is link-local and a proxy
//! would answer for another machine, if at all.

use std::time::{Duration, Instant};

/// The token request: `PUT` with [`TTL_HEADER`].
pub const TOKEN_PATH: &str = "/latest/api/token";
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// The longest TTL IMDS grants (6 hours); one token serves many polls.
pub const TOKEN_TTL_SECS: u64 = 21600;
/// A token is renewed this long before IMDS would let it expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// The largest answer read; IMDS event documents are a few hundred bytes.
pub const MAX_BODY: u64 = 64 * 1024;
/// The bound on one request (connect, send, answer) in production.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImdsError {
    /// Nothing answers at the endpoint: not on EC2, or the metadata service
    /// is turned off for this instance.
    Unreachable(String),
    /// No session token: every read would fail the same way.
    NoToken(String),
    /// Something answered, but not as IMDS does.
    Failed(String),
}

impl std::fmt::Display for ImdsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImdsError::Unreachable(m) | ImdsError::NoToken(m) | ImdsError::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

pub struct Imds {
    endpoint: String,
    timeout: Duration,
    agent: ureq::Agent,
    token: Option<Token>,
    /// Token requests made, for tests and the benchmark.
    pub token_requests: u64,
}

impl Imds {
    /// `endpoint` is `http://host[:port]` with no path
    /// (`config::Events::endpoint`, validated there).
    pub fn new(endpoint: &str, timeout: Duration) -> Imds {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .max_idle_connections(0)
            .timeout_connect(Some(timeout / 2))
            .timeout_global(Some(timeout))
            .user_agent(concat!("ephemera/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Imds {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            timeout,
            agent,
            token: None,
            token_requests: 0,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Reads `path` (`/latest/meta-data/...`). `Ok(None)` is a 404: the
    /// document does not exist now (no spot action, no recommendation).
    /// A refused or expired token (401) is renewed and the read retried once.
    pub fn get(&mut self, path: &str) -> Result<Option<String>, ImdsError> {
        let mut retried = false;
        loop {
            let token = self.token()?;
            let url = format!("{}{path}", self.endpoint);
            let resp = self
                .agent
                .get(&url)
                .header(TOKEN_HEADER, &token)
                .call()
                .map_err(|e| self.classify(&url, e))?;
            match resp.status().as_u16() {
                200 => return self.body(&url, resp).map(Some),
                404 => return Ok(None),
                401 if !retried => {
                    tracing::debug!(url, "token refused (401); getting a new one");
                    self.token = None;
                    retried = true;
                }
                401 => {
                    return Err(ImdsError::Failed(format!(
                        "{url}: a fresh token was refused too (401)"
                    )))
                }
                s => return Err(ImdsError::Failed(format!("{url}: HTTP status {s}"))),
            }
        }
    }

    fn token(&mut self) -> Result<String, ImdsError> {
        if let Some(t) = &self.token {
            if Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        self.token = None;
        self.token_requests += 1;
        let url = format!("{}{TOKEN_PATH}", self.endpoint);
        let asked = Instant::now();
        let resp = self
            .agent
            .put(&url)
            .header(TTL_HEADER, TOKEN_TTL_SECS.to_string())
            .send_empty()
            .map_err(|e| match self.classify(&url, e) {
                ImdsError::Failed(m) => ImdsError::NoToken(m),
                e => e,
            })?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            // AWS's answer when the metadata service is turned off for the instance.
            403 => {
                return Err(ImdsError::Unreachable(format!(
                    "{url}: token request forbidden (403)"
                )))
            }
            s => {
                return Err(ImdsError::NoToken(format!(
                    "{url}: token request answered HTTP status {s}"
                )))
            }
        }
        let value = self
            .body(&url, resp)
            .map_err(|e| match e {
                ImdsError::Failed(m) => ImdsError::NoToken(m),
                e => e,
            })?
            .trim()
            .to_string();
        // A token goes into a header: printable ASCII only, and not empty.
        if value.is_empty() || value.len() > 1024 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ImdsError::NoToken(format!(
                "{url}: the token answer is not a token ({} bytes)",
                value.len()
            )));
        }
        let lifetime = Duration::from_secs(TOKEN_TTL_SECS).saturating_sub(TOKEN_MARGIN);
        self.token = Some(Token {
            value: value.clone(),
            renew_at: asked + lifetime,
        });
        Ok(value)
    }

    fn body(
        &self,
        url: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<String, ImdsError> {
        resp.body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    ImdsError::Failed(format!("{url}: answer larger than {MAX_BODY} bytes"))
                }
                e => self.classify(url, e),
            })
    }

    fn classify(&self, url: &str, e: ureq::Error) -> ImdsError {
        use std::io::ErrorKind as K;
        let unreachable = |why: String| ImdsError::Unreachable(format!("{url}: {why}"));
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => unreachable(
                format!("no connection within {} ms", (self.timeout / 2).as_millis()),
            ),
            ureq::Error::Timeout(_) => ImdsError::Failed(format!(
                "{url}: no answer within {} ms",
                self.timeout.as_millis()
            )),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    K::ConnectionRefused
                        | K::NetworkUnreachable
                        | K::HostUnreachable
                        | K::AddrNotAvailable
                ) =>
            {
                unreachable(io.to_string())
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => unreachable(e.to_string()),
            e => ImdsError::Failed(format!("{url}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_unreachable() {
        // Bind, learn the port, close: connecting now is refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = Imds::new(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_millis(500),
        );
        assert_eq!(c.endpoint(), format!("http://127.0.0.1:{port}"));
        match c.get("/latest/meta-data/spot/instance-action") {
            Err(ImdsError::Unreachable(m)) => assert!(m.contains(&port.to_string()), "{m}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
    }
}
