//! The VM harness shared by the real-kernel test files: builds the guest
//! once per test process, boots scenarios from tests/vm/scenarios with
//! emulated NVMe disks, and returns the serial log.
#![allow(dead_code)] // each test file uses a different part

pub mod moto;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;
/// A bound against hangs, far above a normal run; never the assertion.
const BOOT_TIMEOUT_S: &str = "1500";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?}: {st}");
}

/// Runs `cmd` and returns its stdout; panics, with its stderr, unless it
/// exits 0.
pub fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds the guest (cached) and packs the ephemera binary this test run
/// was built with, once per test process.
pub fn guest() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let build = repo().join("tests/vm/build-guest.sh");
        run(&mut Command::new(&build));
        run(Command::new(&build).arg("add-binary").arg(binary()));
    });
}

/// The ephemera binary the guest runs: the one this test run was built with,
/// or, for a guest of another architecture (EPHEMERA_VM_ARCH=arm64), the
/// cross-built one that EPHEMERA_VM_BINARY names (`make vm-arm64` sets both).
fn binary() -> PathBuf {
    match std::env::var_os("EPHEMERA_VM_BINARY") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_ephemera")),
    }
}

/// A clean work folder for one test, kept after a failure for inspection.
pub fn workdir(name: &str) -> PathBuf {
    let tests = match std::env::var("EPHEMERA_VM_ARCH").as_deref() {
        Ok("arm64") => "target/vm-tests-arm64",
        _ => "target/vm-tests",
    };
    let d = repo().join(tests).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The serials an escrow envelope lists as the array's members, in its
/// order; empty when it lists none.
pub fn envelope_members(env: &serde_json::Value) -> Vec<&str> {
    env["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default()
}

/// A sparse raw image.
pub fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(format!("{name}.img"));
    std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
    p
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Scenario<'a> {
    pub name: &'a str,
    pub script: &'a str,
    pub files: Vec<(&'a str, Vec<u8>)>,
    pub disks: Vec<(PathBuf, &'a str)>,
}

/// Boots one VM on the scenario, with `extra` arguments for run-guest.sh
/// (for example `--monitor SOCKET`); returns its exit status and serial log.
pub fn boot_raw(
    dir: &Path,
    s: Scenario<'_>,
    extra: &[&str],
) -> (std::process::ExitStatus, String, PathBuf) {
    guest();
    let sdir = dir.join(format!("{}-scenario", s.name));
    let _ = std::fs::remove_dir_all(&sdir);
    std::fs::create_dir_all(&sdir).unwrap();
    let scen = repo().join("tests/vm/scenarios");
    std::fs::copy(scen.join("lib.sh"), sdir.join("lib.sh")).unwrap();
    std::fs::copy(scen.join(s.script), sdir.join("run.sh")).unwrap();
    for (name, content) in &s.files {
        std::fs::write(sdir.join(name), content).unwrap();
    }
    let log = dir.join(format!("{}.log", s.name));
    let mut cmd = Command::new(repo().join("tests/vm/run-guest.sh"));
    cmd.arg("--scenario")
        .arg(&sdir)
        .arg("--log")
        .arg(&log)
        .arg("--timeout")
        .arg(BOOT_TIMEOUT_S)
        .args(extra);
    for (img, serial) in &s.disks {
        cmd.arg("--disk").arg(format!("{}:{serial}", img.display()));
    }
    let status = cmd.status().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // The guest's kernel is of the architecture asked for (the init prints
    // `uname -m`), so an arm64 run cannot pass on an x86-64 guest.
    if text.contains("EPHEMERA-VM-BOOTED") {
        let want = match std::env::var("EPHEMERA_VM_ARCH").as_deref() {
            Ok("arm64") => "EPHEMERA-VM-ARCH aarch64",
            _ => "EPHEMERA-VM-ARCH x86_64",
        };
        assert!(text.contains(want), "{}: no `{want}` line", log.display());
    }
    (status, text, log)
}

/// Boots one VM on the scenario; returns the serial log. Panics, with the
/// log's tail, unless the guest ran its checks and all passed.
pub fn boot(dir: &Path, s: Scenario<'_>) -> String {
    boot_with(dir, s, &[])
}

/// `boot`, with `extra` arguments for run-guest.sh (for example `--tpm DIR`).
pub fn boot_with(dir: &Path, s: Scenario<'_>, extra: &[&str]) -> String {
    let name = s.name.to_string();
    let (status, text, log) = boot_raw(dir, s, extra);
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("not ok - "))
        .collect();
    assert!(
        status.success() && failed.is_empty() && text.contains(" failed=0"),
        "{name}: guest exit {status}, failed checks {failed:?}; log {}:\n{}",
        log.display(),
        tail.join("\n")
    );
    text
}

pub fn config(extra: &str) -> Vec<u8> {
    format!("[disks]\nmodel = \"QEMU NVMe Ctrl\"\n{extra}").into_bytes()
}

/// The config for filesystem `fs` (`ext4` or `xfs`), with `extra` (keys of
/// `[disks]` first, then tables; ending in a newline): ext4 as the default
/// (no `[filesystem]` table), xfs asked for.
pub fn fs_config(fs: &str, extra: &str) -> Vec<u8> {
    match fs {
        "ext4" => config(extra),
        _ => config(&format!("{extra}[filesystem]\ntype = \"{fs}\"\n")),
    }
}

/// An RSA key pair made by openssl, as ops would make it.
pub fn keypair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let sk = dir.join("escrow.key.pem");
    let pk = dir.join("escrow.pub.pem");
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-quiet",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&sk));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&sk)
        .arg("-out")
        .arg(&pk));
    (std::fs::read(sk).unwrap(), std::fs::read(pk).unwrap())
}

/// The text between two marker lines of the serial log.
pub fn between<'a>(log: &'a str, begin: &str, end: &str) -> &'a str {
    let start = log
        .find(begin)
        .unwrap_or_else(|| panic!("{begin} not in the log"))
        + begin.len();
    let len = log[start..]
        .find(end)
        .unwrap_or_else(|| panic!("{end} not in the log"));
    log[start..start + len].trim()
}

/// How many times `needle` is in `hay` (the key-leak scans).
pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    let first = needle[0];
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => break,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    hits += 1;
                }
                i += 1;
            }
        }
    }
    hits
}

/// The key-leak scan's forms of a 64-byte key.
pub fn key_forms(key: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw", key.to_vec()),
        ("raw first half", key[..32].to_vec()),
        ("raw second half", key[32..].to_vec()),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_uppercase().into_bytes()),
        ("base64", b64.clone().into_bytes()),
        (
            "base64 unpadded",
            b64.trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("base64url", b64url.into_bytes()),
    ]
}

/// The `nth` (from 0) ```sh block after `heading` in the repository's file
/// `doc`: the runbooks the tests run as the documentation gives them.
pub fn doc_block(doc: &str, heading: &str, nth: usize) -> String {
    let text = std::fs::read_to_string(repo().join(doc)).unwrap();
    let mut rest = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{heading:?} not in {doc}"))..];
    for _ in 0..nth {
        rest = &rest[rest.find("```sh").unwrap() + 5..];
        rest = &rest[rest.find("```").unwrap() + 3..];
    }
    between(rest, "```sh", "```").to_string()
}

/// Steps 2 to 4 of the README's escrow recovery runbook, as the README gives them.
pub fn readme_runbook_steps_2_to_4() -> String {
    let block = doc_block("README.md", "## Escrow recovery runbook", 0);
    block[block.find("# 2.").expect("step 2 in the runbook")..].to_string()
}

/// Runs a documentation block with bash (-euo pipefail) in `dir`, with
/// `env`; panics with its stderr if it fails.
pub fn run_block(block: &str, dir: &Path, env: &[(&str, &str)]) {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "in {}: {block}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `key` (a 512-bit volume key) opens the LUKS2 volume whose header
/// is on `disk`, as cryptsetup checks it against the header's digest with
/// nothing activated. The key goes to cryptsetup on a pipe, never a file.
pub fn key_opens(disk: &Path, key: &[u8]) -> bool {
    use std::io::Write as _;
    let mut c = Command::new("cryptsetup")
        .args([
            "open",
            "--test-passphrase",
            "--type",
            "luks2",
            "--key-size",
            "512",
            "--volume-key-file",
            "/dev/stdin",
        ])
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(key).unwrap();
    c.wait().unwrap().success()
}

/// A self-signed CA and a server certificate for 127.0.0.1 (and 10.0.2.102)
/// it signed.
pub fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key, crt, key) = (
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ephemera test CA",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca)
        .stderr(Stdio::null()));
    let csr = dir.join("server.csr");
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(Stdio::null()));
    let ext = dir.join("san.ext");
    std::fs::write(
        &ext,
        // 10.0.2.102: where a test guest reaches a TLS front (tests/kms.rs).
        "subjectAltName=IP:127.0.0.1,IP:10.0.2.102\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null()));
    (ca, crt, key)
}

/// The volume key as ops learn it from a console log: the escrow envelope
/// between its markers (one recipient), decrypted by openssl with
/// `dir/escrow.key.pem`, and checked against the LUKS2 header on `header`
/// (a function of the envelope: the image of its first member). Returns the
/// envelope and the key.
pub fn key_from_console(
    log: &str,
    dir: &Path,
    header: impl Fn(&serde_json::Value) -> PathBuf,
) -> (serde_json::Value, Vec<u8>) {
    let envelope = between(
        log,
        "-----BEGIN EPHEMERA ESCROW-----",
        "-----END EPHEMERA ESCROW-----",
    );
    let env: serde_json::Value = serde_json::from_str(envelope).unwrap();
    std::fs::write(dir.join("ct.b64"), env["ciphertext"].as_str().unwrap()).unwrap();
    let key = stdout_of(Command::new("sh").arg("-c").arg(format!(
        "cd {} && base64 -d ct.b64 | openssl pkeyutl -decrypt -inkey escrow.key.pem \
         -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256",
        dir.display()
    )));
    assert_eq!(key.len(), 64, "a 512-bit key from the envelope");
    assert!(
        key_opens(&header(&env), &key),
        "the envelope's key does not open the volume"
    );
    (env, key)
}

/// The leak scan: each needle (a form of a secret) in each place; one line
/// per place and form found, and the total of hits.
pub fn leak_hits(places: &[PathBuf], needles: &[(&str, Vec<u8>)]) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut hits = 0;
    for p in places {
        let hay = std::fs::read(p).unwrap();
        for (form, needle) in needles {
            let n = find(&hay, needle);
            if n > 0 {
                found.push(format!("LEAK: {n} hit(s) of {form} in {}", p.display()));
            }
            hits += n;
        }
    }
    (found, hits)
}
