//! The `kms` unlock pin (issue 27) against moto's KMS (PyPI's moto[server],
//! installed with boto3 by scripts/moto.sh): KMS's JSON API with real
//! AES-GCM and the encryption context as authenticated data. moto runs on
//! 127.0.0.1 with INITIAL_NO_AUTH_ACTION_COUNT=3, so that after the setup
//! (an IAM user, its policy and its access key, made by boto3) every request
//! must be signed by a key moto knows. ephemera reaches it through a TLS
//! front (socat with a test CA, `ca_file`) and learns its credentials,
//! instance id, account and region from the IMDS test server, as on a node.
//!
//! What moto does not check, so neither does this: key policies and grants
//! (stored, not enforced: the policy in docs/UNLOCK.md is documentation), a
//! disabled key (it still decrypts), `Recipient` (attestation).

mod common;
mod imds_server;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ephemera::config::unlock::Kms;
use ephemera::keys::pins::KmsPin;
use ephemera::node::kms::Aws;
use imds_server::{ImdsServer, Role, Scenario};

const REGION: &str = "eu-west-1";
const INSTANCE: &str = "i-0123456789abcdef0";
const OTHER_INSTANCE: &str = "i-0fedcba9876543210";
/// moto's default account.
const ACCOUNT: &str = "123456789012";
const UUID: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";
const OTHER_UUID: &str = "1f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";
/// A bound against hangs, never the assertion.
const READY_BOUND: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's server and its TLS front, stopped on drop.
struct Moto {
    moto: Child,
    front: Child,
    port: u16,
    tls_port: u16,
    ca: PathBuf,
    access_key_id: String,
    secret: String,
    key1: String,
    key2: String,
}

impl Moto {
    fn start(dir: &Path) -> Moto {
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
        let front = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                crt.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(
                start.elapsed() < READY_BOUND,
                "the TLS front did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = stdout_of(
            Command::new(&py)
                .arg(repo().join("tests/kms_moto.py"))
                .arg(format!("http://127.0.0.1:{port}"))
                .args(["setup", REGION]),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        eprintln!("moto ready in {} ms", start.elapsed().as_millis());
        Moto {
            moto,
            front,
            port,
            tls_port,
            ca,
            access_key_id: s("access_key_id"),
            secret: s("secret"),
            key1: s("key1"),
            key2: s("key2"),
        }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }

    /// The pin's config: `key`, through the TLS front, trusting `ca`.
    fn pin(&self, key: &str, ca: &Path) -> Kms {
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
        for c in [&mut self.moto, &mut self.front] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The node's IMDS: this instance, its account and region, and the role's
/// credentials (moto's IAM user's key).
fn imds(m: &Moto, secret: &str) -> ImdsServer {
    ImdsServer::start(
        Scenario {
            instance_id: Some(INSTANCE.into()),
            region: Some(REGION.into()),
            account: Some(ACCOUNT.into()),
            role: Some(Role {
                name: "ephemera-node".into(),
                access_key_id: m.access_key_id.clone(),
                secret_access_key: secret.into(),
                token: None,
            }),
            ..Scenario::default()
        },
        0,
    )
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[test]
#[ignore = "runs moto (scripts/moto.sh); run by `make vm`"]
fn kms_pin_opens_only_for_its_instance_volume_and_key() {
    let dir = workdir("kms-pin");
    let m = Moto::start(&dir);
    let node = imds(&m, &m.secret);
    let aws = Aws {
        imds: node.endpoint(),
    };
    let part: Vec<u8> = (0u8..65).collect();

    // The right context decrypts.
    let slot = aws
        .seal(&part, &m.pin(&m.key1, &m.ca), UUID, soon())
        .unwrap();
    assert_eq!(slot.key_id, m.key1, "{slot:?}");
    assert_eq!(slot.region, REGION);
    assert_eq!(
        slot.context["instance"],
        format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{INSTANCE}")
    );
    assert_eq!(slot.context["volume"], UUID);
    let back = aws.unseal(&slot, UUID, soon()).unwrap();
    assert_eq!(back.as_slice(), part.as_slice());

    // Another LUKS UUID: refused for good.
    let e = aws.unseal(&slot, OTHER_UUID, soon()).unwrap_err();
    assert!(
        e.permanent && e.why.contains("InvalidCiphertextException"),
        "{e:?}"
    );

    // A wrong key id: Decrypt naming key 2 for key 1's ciphertext is refused.
    let mut wrong = slot.clone();
    wrong.key_id = m.key2.clone();
    let e = aws.unseal(&wrong, UUID, soon()).unwrap_err();
    assert!(e.why.contains("HTTP 400"), "{e:?}");
    eprintln!("wrong key id: {}", e.why);
    // And Encrypt with a key that does not exist.
    let e = aws
        .seal(&part, &m.pin(&format!("{}0", m.key1), &m.ca), UUID, soon())
        .unwrap_err();
    assert!(e.why.contains("NotFoundException"), "{e:?}");

    // Another instance (its IMDS gives another instance id): refused.
    node.with(|s| s.instance_id = Some(OTHER_INSTANCE.into()));
    let e = aws.unseal(&slot, UUID, soon()).unwrap_err();
    assert!(
        e.permanent && e.why.contains("InvalidCiphertextException"),
        "{e:?}"
    );
    node.with(|s| s.instance_id = Some(INSTANCE.into()));
    assert_eq!(
        aws.unseal(&slot, UUID, soon()).unwrap().as_slice(),
        part.as_slice()
    );

    // A wrongly signed request (the role's secret is not moto's): refused,
    // and retried (credentials may rotate), never opened.
    let bad = imds(&m, "not-the-secret");
    let e = Aws {
        imds: bad.endpoint(),
    }
    .unseal(&slot, UUID, soon())
    .unwrap_err();
    assert!(!e.permanent && e.why.contains("HTTP 4"), "{e:?}");
    eprintln!("wrong signature: {}", e.why);

    // A request with no signature, as any client could send it, and one
    // with the node's key id and KMS's scope but a signature of zeros: no
    // plaintext either way. (moto routes a request without an Authorization
    // header by its URL, to its S3 part, which fails it with HTTP 500; the
    // zero signature gets 403.)
    let body = serde_json::json!({
        "KeyId": slot.key_id, "CiphertextBlob": slot.ciphertext, "EncryptionContext": slot.context,
    })
    .to_string();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let date = time::OffsetDateTime::now_utc();
    let ymd = format!(
        "{:04}{:02}{:02}",
        date.year(),
        date.month() as u8,
        date.day()
    );
    let zeros = format!(
        "AWS4-HMAC-SHA256 Credential={}/{ymd}/{REGION}/kms/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
        m.access_key_id,
        "0".repeat(64)
    );
    for auth in [None, Some(zeros.as_str())] {
        let mut req = agent
            .post(&format!("http://127.0.0.1:{}/", m.port))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "TrentService.Decrypt")
            .header("x-amz-date", format!("{ymd}T000000Z"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.send(body.as_bytes()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        eprintln!(
            "signature {}: HTTP {status}",
            if auth.is_some() { "of zeros" } else { "none" }
        );
        assert!(
            status >= 400 && !text.contains("Plaintext"),
            "an unsigned Decrypt got HTTP {status}"
        );
        if auth.is_some() {
            assert_eq!(status, 403, "{text}");
        }
    }

    // TLS: a CA that did not sign the front's certificate is refused, and so
    // are the built-in roots.
    let other_dir = dir.join("other-ca");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other_ca, _, _) = tls_files(&other_dir);
    let e = aws
        .seal(&part, &m.pin(&m.key1, &other_ca), UUID, soon())
        .unwrap_err();
    assert!(!e.permanent && e.why.contains("Encrypt at"), "{e:?}");
    eprintln!("another CA: {}", e.why);
    let mut roots = m.pin(&m.key1, &m.ca);
    roots.ca_file = None;
    assert!(aws.seal(&part, &roots, UUID, soon()).is_err());
}
