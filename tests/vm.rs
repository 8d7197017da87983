//! Real-kernel tests: each boots the Debian cloud kernel under QEMU with
//! emulated NVMe disks (tests/vm/run-guest.sh), runs a scenario script from
//! tests/vm/scenarios in the guest, and checks the results with tools other
//! than ephemera, in the guest (mdadm, cryptsetup, dmsetup, blkid, openssl,
//! jq) and on the host (sha256 of the disk images).
//!
//! They take minutes and need QEMU, so they are `#[ignore]`d in a plain
//! `cargo test`; `make test` runs them with `--ignored`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// A bound against hangs, far above a normal run; never the assertion.
const BOOT_TIMEOUT_S: &str = "1500";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?}: {st}");
}

/// Builds the guest (cached) and packs the ephemera binary this test run
/// was built with, once per test process.
fn guest() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let build = repo().join("tests/vm/build-guest.sh");
        run(&mut Command::new(&build));
        run(Command::new(&build)
            .arg("add-binary")
            .arg(env!("CARGO_BIN_EXE_ephemera")));
    });
}

/// A clean work folder for one test, kept after a failure for inspection.
fn workdir(name: &str) -> PathBuf {
    let d = repo().join("target/vm-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A sparse raw image.
fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(format!("{name}.img"));
    std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
    p
}

fn sha256_file(p: &Path) -> String {
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

struct Scenario<'a> {
    name: &'a str,
    script: &'a str,
    files: Vec<(&'a str, Vec<u8>)>,
    disks: Vec<(PathBuf, &'a str)>,
}

/// Boots one VM on the scenario; returns the serial log. Panics, with the
/// log's tail, unless the guest ran every check and all passed.
fn boot(dir: &Path, s: Scenario<'_>) -> String {
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
        .arg(BOOT_TIMEOUT_S);
    for (img, serial) in &s.disks {
        cmd.arg("--disk").arg(format!("{}:{serial}", img.display()));
    }
    let status = cmd.status().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
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
        "{}: guest exit {status}, failed checks {failed:?}; log {}:\n{}",
        s.name,
        log.display(),
        tail.join("\n")
    );
    text
}

fn config(extra: &str) -> Vec<u8> {
    format!("[disks]\nmodel = \"QEMU NVMe Ctrl\"\n{extra}").into_bytes()
}

/// An RSA key pair made by openssl, as ops would make it.
fn keypair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
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
fn between<'a>(log: &'a str, begin: &str, end: &str) -> &'a str {
    let start = log
        .find(begin)
        .unwrap_or_else(|| panic!("{begin} not in the log"))
        + begin.len();
    let len = log[start..]
        .find(end)
        .unwrap_or_else(|| panic!("{end} not in the log"));
    log[start..start + len].trim()
}

/// The shell block of the README's escrow recovery runbook.
fn readme_runbook() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Escrow recovery runbook")
        .expect("runbook section")..];
    between(section, "```sh", "```").to_string()
}

#[test]
#[ignore = "boots QEMU VMs; run by `make test`"]
fn three_disks_escrow_recover_next_boot_teardown() {
    let dir = workdir("three-disks");
    let disks: Vec<(PathBuf, &str)> = [("a", "EPH-A"), ("b", "EPH-B"), ("c", "EPH-C")]
        .iter()
        .map(|(n, s)| (image(&dir, n, 256 * MIB), *s))
        .collect();
    let (sk, pk) = keypair(&dir);
    let cfg = config("[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n");

    let log = boot(
        &dir,
        Scenario {
            name: "boot1",
            script: "multi-disk.sh",
            files: vec![("config.toml", cfg.clone()), ("escrow.pub.pem", pk.clone())],
            disks: disks.clone(),
        },
    );
    // Ops read the envelope from the console when the instance is unreachable.
    let envelope = between(
        &log,
        "-----BEGIN EPHEMERA ESCROW-----",
        "-----END EPHEMERA ESCROW-----",
    );
    let env: serde_json::Value = serde_json::from_str(envelope).expect("console envelope is JSON");
    assert_eq!(
        env["members"],
        serde_json::json!(["EPH-A", "EPH-B", "EPH-C"])
    );
    let sha = between(&log, "DATA-SHA256 ", "\n").to_string();

    boot(
        &dir,
        Scenario {
            name: "boot2",
            script: "next-boot.sh",
            files: vec![
                ("config.toml", cfg),
                ("escrow.pub.pem", pk),
                ("escrow.json", envelope.as_bytes().to_vec()),
                ("priv.pem", sk.clone()),
                ("escrow.key.pem", sk),
                ("runbook.sh", readme_runbook().into_bytes()),
                ("data.sha256", sha.into_bytes()),
            ],
            disks,
        },
    );
}

#[test]
#[ignore = "boots a QEMU VM; run by `make test`"]
fn single_disk() {
    let dir = workdir("single-disk");
    boot(
        &dir,
        Scenario {
            name: "boot",
            script: "single-disk.sh",
            files: vec![("config.toml", config(""))],
            disks: vec![(image(&dir, "solo", 256 * MIB), "EPH-SOLO")],
        },
    );
}

#[test]
#[ignore = "boots a QEMU VM; run by `make test`"]
fn disks_not_ours_stay_byte_identical() {
    let dir = workdir("safety");
    let free1 = image(&dir, "free1", 128 * MIB);
    let free2 = image(&dir, "free2", 128 * MIB);
    let mounted = image(&dir, "mounted", 128 * MIB);
    let foreign = image(&dir, "foreign", 128 * MIB);
    for img in [&mounted, &foreign] {
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(img));
    }
    let before = [sha256_file(&mounted), sha256_file(&foreign)];
    boot(
        &dir,
        Scenario {
            name: "boot",
            script: "safety.sh",
            files: vec![
                ("config.toml", config("")),
                ("bad-chunk.toml", config("[raid]\nchunk_kib = 100\n")),
                (
                    "bad-cipher.toml",
                    config("[luks]\ncipher = \"nosuchcipher-xts-plain64\"\n"),
                ),
            ],
            disks: vec![
                (free1.clone(), "EPH-FREE1"),
                (free2, "EPH-FREE2"),
                (mounted.clone(), "EPH-MOUNTED"),
                (foreign.clone(), "EPH-FOREIGN"),
            ],
        },
    );
    assert_eq!(
        sha256_file(&mounted),
        before[0],
        "the mounted disk was written"
    );
    assert_eq!(
        sha256_file(&foreign),
        before[1],
        "the foreign disk was written"
    );
    // And the free disks were really provisioned (a LUKS2 header on the first member).
    let mut head = vec![0u8; 6];
    std::fs::File::open(&free1)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let mut head2 = vec![0u8; 6];
    std::fs::File::open(dir.join("free2.img"))
        .unwrap()
        .read_exact(&mut head2)
        .unwrap();
    assert!(
        head == b"LUKS\xba\xbe" || head2 == b"LUKS\xba\xbe",
        "no LUKS header on the free disks"
    );
}
