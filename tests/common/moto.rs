//! moto's server (PyPI's moto[server], installed with boto3 by
//! scripts/moto.sh), an AWS emulator: KMS's JSON API with real AES-GCM and
//! the encryption context as authenticated data. It runs on 127.0.0.1 with
//! INITIAL_NO_AUTH_ACTION_COUNT=3, so that after the setup (an IAM user, its
//! policy and its access key, made by boto3: tests/kms_moto.py) every request
//! must be signed by a key moto knows; a socat TLS front with the test CA
//! (`tls_files`) stands before it. Shared by tests/kms.rs and the kms node of
//! tests/system.rs.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ephemera::config::unlock::Kms;

use super::{repo, stdout_of, tls_files};

/// The region of the keys moto makes here.
pub const REGION: &str = "eu-west-1";
/// A bound against hangs, never the assertion.
const READY_BOUND: Duration = Duration::from_secs(120);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's server and its TLS front, stopped on drop.
pub struct Moto {
    pub moto: Child,
    pub front: Option<Child>,
    /// The front's certificate and key.
    pub tls: (PathBuf, PathBuf),
    pub port: u16,
    pub tls_port: u16,
    pub ca: PathBuf,
    pub access_key_id: String,
    pub secret: String,
    pub key1: String,
    pub key2: String,
}

impl Moto {
    pub fn start(dir: &Path) -> Moto {
        let py = PathBuf::from(
            String::from_utf8(stdout_of(
                Command::new(repo().join("scripts/moto.sh")).stderr(Stdio::inherit()),
            ))
            .unwrap()
            .trim(),
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let moto = Command::new(py.parent().unwrap().join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < READY_BOUND, "moto did not listen");
            std::thread::sleep(Duration::from_millis(200));
        }
        let (ca, crt, key) = tls_files(dir);
        let tls_port = free_port();
        let out = stdout_of(
            Command::new(&py)
                .arg(repo().join("tests/kms_moto.py"))
                .arg(format!("http://127.0.0.1:{port}"))
                .args(["setup", REGION]),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        eprintln!("moto ready in {} ms", start.elapsed().as_millis());
        let mut m = Moto {
            moto,
            front: None,
            tls: (crt, key),
            port,
            tls_port,
            ca,
            access_key_id: s("access_key_id"),
            secret: s("secret"),
            key1: s("key1"),
            key2: s("key2"),
        };
        m.start_front();
        m
    }

    /// The TLS front (socat, the test CA's certificate) before moto.
    pub fn start_front(&mut self) {
        let front = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                self.tls_port,
                self.tls.0.display(),
                self.tls.1.display()
            ))
            .arg(format!("TCP:127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.front = Some(front);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.tls_port)).is_err() {
            assert!(
                start.elapsed() < READY_BOUND,
                "the TLS front did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// KMS unreachable: the front stops (moto keeps its keys in memory,
    /// so it is not stopped itself).
    pub fn stop_front(&mut self) {
        if let Some(mut f) = self.front.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        assert!(TcpStream::connect(("127.0.0.1", self.tls_port)).is_err());
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }

    /// What ops do with an unlock file's kms slot (docs/UNLOCK.md's
    /// runbook): boto3 decrypts its ciphertext under its context, with the
    /// node's access key. The slot and the part.
    pub fn ops_decrypt(&self, file: &serde_json::Value) -> (serde_json::Value, Vec<u8>) {
        let slot = file["slots"]
            .as_array()
            .expect("a version 2 unlock file")
            .iter()
            .find(|s| s["pin"] == "kms")
            .expect("a kms slot")
            .clone();
        use std::io::Write as _;
        let py = PathBuf::from(
            String::from_utf8(stdout_of(&mut Command::new(repo().join("scripts/moto.sh"))))
                .unwrap()
                .trim(),
        );
        let mut c = Command::new(py)
            .arg(repo().join("tests/kms_moto.py"))
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args(["decrypt", REGION])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let req = serde_json::json!({"access_key_id": self.access_key_id, "secret": self.secret, "slot": &slot});
        c.stdin
            .take()
            .unwrap()
            .write_all(req.to_string().as_bytes())
            .unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "boto3 could not decrypt the kms part");
        use base64::Engine;
        let part = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8(out.stdout).unwrap().trim())
            .unwrap();
        (slot, part)
    }

    /// The pin's config: `key`, through the TLS front, trusting `ca`.
    pub fn pin(&self, key: &str, ca: &Path) -> Kms {
        Kms {
            key_id: key.into(),
            region: None,
            endpoint: Some(self.endpoint()),
            ca_file: Some(ca.to_path_buf()),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut f) = self.front.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        let _ = self.moto.kill();
        let _ = self.moto.wait();
    }
}

/// The forms of a secret the leak scans look for (raw, hex, base64).
pub fn forms(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw", secret.to_vec()),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_uppercase().into_bytes()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .into_bytes(),
        ),
    ]
}
