//! Full-system tests: a Debian 12 and a Debian 13 image, built with
//! mmdebstrap and ephemera's .deb installed by packer/install.sh
//! (tests/system/build-image.sh), boot under QEMU like an EC2 instance: the
//! image on an NVMe root disk, three NVMe instance-store disks, and
//! cloud-init user-data from a NoCloud seed (tests/system/run-system.sh).
//! The user-data is the shipped example cloud-init/data-service.yaml, with
//! the disk model and escrow key set for QEMU, plus a test part that installs
//! tests/system/guest/check.sh as a unit run on every boot.
//!
//! Boot 1 checks the volume, the root disk, the data unit's order, the escrow
//! envelope; the events watcher (against the IMDS test server in the guest,
//! its metrics as prometheus-node-exporter serves them, its hook); on Debian
//! 13, a soft-reboot (refused while guarded; after the break-glass the volume
//! comes back mounted with its data); and that reboot, halt, kexec, suspend,
//! hibernate, hybrid-sleep, suspend-then-hibernate and their services are
//! refused; then it breaks the glass and reboots. Boot 2 (same disks): the
//! escrowed volume is kept untouched (exit 5, the data unit does not start),
//! then recovered in place with the private key (mounted, guard on, data unit
//! started, boot 1's file back); break glass, reboot. Boot 3: kept again,
//! discarded, a new volume before the data unit; then the ACPI power button
//! must power off cleanly. The step-by-step story is in
//! tests/system/guest/check.sh.
//!
//! On arm64 (Graviton), one boot: a Debian 12 arm64 image with the arm64
//! .deb (built on this x86-64 host, its packages configured in an arm64 VM:
//! tests/system/arm64-stage2.sh) boots under qemu-system-aarch64 -machine
//! virt and runs boot 1 above (no IMDS test server: it is an x86-64 program).
//!
//! Checks use tools other than ephemera: systemctl, findmnt, cryptsetup,
//! mdadm, blkid, wipefs, systemd-inhibit in the guest; the serial log and
//! QEMU's exit on the host. They take minutes, so they are `#[ignore]`d;
//! `make system` runs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

/// A bound against hangs for one boot, far above a normal run (about 2 min).
const BOOT_TIMEOUT_S: &str = "1200";
/// The instance-store disks: serials as EC2 shows them.
const DATA_DISKS: [&str; 3] = ["AWS11111111", "AWS22222222", "AWS33333333"];
/// The model the shipped examples match; QEMU's controllers report another.
const EC2_MODEL: &str = "Amazon EC2 NVMe Instance Storage";
const QEMU_MODEL: &str = "QEMU NVMe Ctrl";
const ESCROW_PATH: &str = "/var/lib/ephemera/escrow.json";

/// The .deb, built once per test process with `make deb`.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let t = Instant::now();
        run(Command::new("make").arg("-C").arg(repo()).arg("deb"));
        let deb = repo().join("target/debian/ephemera.deb");
        assert!(deb.is_file(), "make deb made no {}", deb.display());
        eprintln!("system: make deb in {:?}", t.elapsed());
        deb
    })
}

/// The arm64 .deb, built once per test process with `make deb-arm64`
/// (cross-built with Debian's rustc-web, scripts/arm64.sh).
fn deb_arm64() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let t = Instant::now();
        run(Command::new("make").arg("-C").arg(repo()).arg("deb-arm64"));
        let deb = repo().join("target/debian/ephemera_arm64.deb");
        assert!(deb.is_file(), "make deb-arm64 made no {}", deb.display());
        eprintln!("system: make deb-arm64 in {:?}", t.elapsed());
        deb
    })
}

/// The IMDS test server as a program (examples/imds_server.rs), built once
/// per test process; the guest gets it on the NoCloud seed volume.
fn imds_server() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo).current_dir(repo()).args([
            "build",
            "--locked",
            "--release",
            "--example",
            "imds_server",
        ]));
        repo().join("target/release/examples/imds_server")
    })
}

struct Image {
    dir: PathBuf,
    info: String,
}

impl Image {
    fn fact(&self, name: &str) -> String {
        self.info
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in the image info"))
            .trim()
            .to_string()
    }
    /// The Debian architecture: amd64 unless the image info says otherwise.
    fn arch(&self) -> &str {
        self.info
            .lines()
            .find_map(|l| l.strip_prefix("arch "))
            .unwrap_or("amd64")
    }
}

/// The system image of SUITE (cached by build-image.sh).
fn system_image(suite: &str) -> Image {
    build_image(suite, "amd64", deb())
}

/// The system image of SUITE for ARCH with the .deb DEB.
fn build_image(suite: &str, arch: &str, deb: &Path) -> Image {
    let t = Instant::now();
    let out = Command::new(repo().join("tests/system/build-image.sh"))
        .arg(suite)
        .arg(deb)
        .env("EPHEMERA_VM_ARCH", arch)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-image.sh {suite} ({arch}): {}",
        out.status
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let info = std::fs::read_to_string(dir.join("info")).unwrap();
    eprintln!(
        "system: {suite} {arch} image {} in {:?}",
        dir.display(),
        t.elapsed()
    );
    Image { dir, info }
}

/// The shipped example user-data, adapted to QEMU: the disk model and the
/// escrow public key are the only changes.
fn example_user_data(name: &str, escrow_pub: &str) -> String {
    let path = repo().join("cloud-init").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.contains(EC2_MODEL),
        "{name} does not set the model {EC2_MODEL:?}"
    );
    let text = text.replace(EC2_MODEL, QEMU_MODEL);
    replace_pem(&text, escrow_pub)
}

/// Replaces the PEM public key block in the user-data with `pem`, at the
/// same indentation.
fn replace_pem(text: &str, pem: &str) -> String {
    let begin = "-----BEGIN PUBLIC KEY-----";
    let end = "-----END PUBLIC KEY-----";
    let Some(b) = text.find(begin) else {
        panic!("the example user-data holds no {begin} block");
    };
    let e = text[b..].find(end).expect("END PUBLIC KEY") + b + end.len();
    let line_start = text[..b].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..b];
    let body: Vec<String> = pem
        .trim()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.to_string()
            } else {
                format!("{indent}{l}")
            }
        })
        .collect();
    format!("{}{}{}", &text[..b], body.join("\n"), &text[e..])
}

/// The test's own cloud-config part: the check script, its unit and its
/// settings; merged into the example's lists (write_files, runcmd).
/// The escrow private key, on the test node only so that the check script
/// can play ops recovering the volume; in production ops keep it offline.
const PRIVATE_KEY: &str = "/root/escrow.key.pem";

fn test_user_data(img: &Image, private_key: &[u8]) -> String {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let check = std::fs::read(repo().join("tests/system/guest/check.sh")).unwrap();
    // arm64: the console is the PL011 (ttyAMA0), and no IMDS test server
    // (an x86-64 program) comes on the seed.
    let arch_env = match img.arch() {
        "arm64" => "CONSOLE=ttyAMA0\n",
        _ => "IMDS_PORT=8169\n",
    };
    let env = format!(
        "DATA_DISKS={}\nSAMPLE_UNIT=sample-data.service\nSAMPLE_FILE={}\nESCROW_PATH={ESCROW_PATH}\n\
         ROOT_PARTUUID={}\nROOT_FS_UUID={}\nMOUNT=/mnt/ephemeral\nPRIVATE_KEY={PRIVATE_KEY}\n{arch_env}",
        DATA_DISKS.len(),
        sample_file(),
        img.fact("root_partuuid"),
        img.fact("root_fs_uuid"),
    );
    let unit = "[Unit]\nDescription=ephemera system test checks\n\
        After=cloud-final.service ephemera.service ephemera-guard.service sample-data.service multi-user.target\n\
        [Service]\nType=exec\nExecStart=/usr/local/sbin/ephemera-check\n\
        [Install]\nWantedBy=multi-user.target\n";
    format!(
        "#cloud-config\n\
         merge_how:\n - name: list\n   settings: [append]\n - name: dict\n   settings: [no_replace, recurse_list]\n\
         write_files:\n\
         \x20 - path: /usr/local/sbin/ephemera-check\n    permissions: '0755'\n    encoding: b64\n    content: {}\n\
         \x20 - path: /etc/ephemera-check.env\n    encoding: b64\n    content: {}\n\
         \x20 - path: /etc/systemd/system/ephemera-check.service\n    encoding: b64\n    content: {}\n\
         \x20 - path: {PRIVATE_KEY}\n    permissions: '0600'\n    encoding: b64\n    content: {}\n\
         runcmd:\n\
         \x20 - [systemctl, daemon-reload]\n\
         \x20 - [systemctl, enable, ephemera-check.service]\n\
         \x20 - [systemctl, start, --no-block, ephemera-check.service]\n",
        b64(&check),
        b64(env.as_bytes()),
        b64(unit.as_bytes()),
        b64(private_key),
    )
}

/// Where the example's sample data unit writes (read from the example).
fn sample_file() -> String {
    let text = std::fs::read_to_string(repo().join("cloud-init/data-service.yaml")).unwrap();
    let i = text
        .find("/mnt/ephemeral/")
        .expect("data-service.yaml writes under /mnt/ephemeral/");
    let rest = &text[i..];
    let n = rest
        .find(|c: char| c.is_whitespace() || "'\";)".contains(c))
        .unwrap_or(rest.len());
    rest[..n].to_string()
}

/// Cloud-init's multi-part user-data: the example first, the test part merged in.
fn multipart(parts: &[String]) -> String {
    let boundary = "==ephemera-system-test==";
    let mut s =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    for p in parts {
        s += &format!(
            "--{boundary}\nContent-Type: text/cloud-config; charset=\"us-ascii\"\nMIME-Version: 1.0\n\
             Content-Transfer-Encoding: 7bit\n\n{p}\n"
        );
    }
    s += &format!("--{boundary}--\n");
    s
}

struct Boot {
    log: String,
    path: PathBuf,
    elapsed: Duration,
}

impl Boot {
    fn tail(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
    /// A problem when `text` is not in the log.
    fn expect(&self, problems: &mut Vec<String>, what: &str, text: &str) {
        if !self.log.contains(text) {
            problems.push(format!("{what}: {text:?} not in {}", self.path.display()));
        }
    }
    /// Every FACT NAME line's value.
    fn fact(&self, name: &str) -> String {
        let p = format!("FACT {name} ");
        self.log
            .lines()
            .find_map(|l| l.find(&p).map(|i| l[i + p.len()..].trim().to_string()))
            .unwrap_or_else(|| panic!("FACT {name} not in {}", self.path.display()))
    }
    fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.log
            .lines()
            .filter_map(|l| l.find(prefix).map(|i| l[i..].trim_end().to_string()))
            .collect()
    }
    /// The guest's failed checks, as problems.
    fn checks(&self, problems: &mut Vec<String>, boot: u32) {
        self.expect(
            problems,
            "the check script ran to its end",
            &format!("EPH-CHECK-END boot={boot}"),
        );
        let failed = self.lines_with("not ok - ");
        let passed = self.lines_with("ok - ").len() - failed.len();
        eprintln!(
            "system: boot {boot}: {passed} checks passed, {} failed",
            failed.len()
        );
        for f in failed {
            problems.push(format!("boot {boot}: {f} ({})", self.path.display()));
        }
    }
}

fn boot(dir: &Path, img: &Image, name: &str, extra: &[&str]) -> Boot {
    let path = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(repo().join("tests/system/run-system.sh"));
    cmd.arg("--image")
        .arg(&img.dir)
        .arg("--root")
        .arg(dir.join("root.qcow2"))
        .arg("--seed")
        .arg(dir.join("seed"))
        .arg("--log")
        .arg(&path)
        .arg("--monitor")
        .arg(dir.join(format!("{name}.monitor")))
        .arg("--timeout")
        .arg(BOOT_TIMEOUT_S)
        .args(extra)
        .env("EPHEMERA_VM_ARCH", img.arch());
    for serial in DATA_DISKS {
        cmd.arg("--disk").arg(format!(
            "{}:{serial}",
            dir.join(format!("{serial}.img")).display()
        ));
    }
    let t = Instant::now();
    let status = cmd.status().unwrap();
    let elapsed = t.elapsed();
    let log = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .replace('\r', "");
    let b = Boot { log, path, elapsed };
    assert!(
        status.success(),
        "{name}: run-system.sh {status}; last lines:\n{}",
        b.tail()
    );
    eprintln!("system: {name} ran {elapsed:?}");
    b
}

/// A fresh test folder NAME for IMG: the instance-store disks, the escrow
/// key pair and the NoCloud seed (user-data, meta-data, the IMDS test server
/// on amd64).
fn instance(name: &str, img: &Image) -> PathBuf {
    eprintln!("system: {name}: {}", img.info.trim().replace('\n', "; "));
    let dir = workdir(name);
    for serial in DATA_DISKS {
        image(&dir, serial, 1024 * MIB);
    }
    let (sk, pk) = keypair(&dir);
    let pk = String::from_utf8(pk).unwrap();
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    if img.arch() == "amd64" {
        let imds = seed.join("imds_server");
        std::fs::copy(imds_server(), &imds).unwrap();
        run(Command::new("strip").arg(&imds));
    }
    let user_data = multipart(&[
        example_user_data("data-service.yaml", &pk),
        test_user_data(img, &sk),
    ]);
    std::fs::write(seed.join("user-data"), user_data).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        format!("instance-id: i-ephemera-{name}\nlocal-hostname: ephemera-{name}\n"),
    )
    .unwrap();
    dir
}

/// Boot 1's host-side checks: the guest's checks, the architecture, the
/// escrow envelope on the console and in its file, the reboot after the
/// break-glass. Returns the LUKS UUID.
fn boot1_checks(b1: &Boot, img: &Image, problems: &mut Vec<String>) -> String {
    b1.checks(problems, 1);
    let machine = match img.arch() {
        "arm64" => "aarch64",
        _ => "x86_64",
    };
    if b1.fact("machine") != machine {
        problems.push(format!(
            "uname -m says {}, not {machine}",
            b1.fact("machine")
        ));
    }
    // The envelope on the console is the one in the file.
    let console: serde_json::Value = serde_json::from_str(between(
        &b1.log,
        "-----BEGIN EPHEMERA ESCROW-----",
        "-----END EPHEMERA ESCROW-----",
    ))
    .expect("console envelope is JSON");
    let file_line = b1
        .lines_with("ESCROW-FILE ")
        .pop()
        .expect("ESCROW-FILE line");
    let file: serde_json::Value =
        serde_json::from_str(file_line.trim_start_matches("ESCROW-FILE "))
            .expect("escrow file is JSON");
    if console != file {
        problems.push(format!("the console envelope differs from {ESCROW_PATH}"));
    }
    if console["members"] != serde_json::json!(DATA_DISKS) {
        problems.push(format!("envelope members {}", console["members"]));
    }
    if console["luks_uuid"] != serde_json::json!(b1.fact("luks_uuid")) {
        problems.push(format!("envelope luks_uuid {}", console["luks_uuid"]));
    }
    b1.expect(
        problems,
        "the reboot after break-glass went through",
        "EPH-REBOOTING",
    );
    b1.expect(
        problems,
        "the kernel restarted",
        "reboot: Restarting system",
    );
    b1.fact("luks_uuid")
}

fn full_boot(suite: &str) {
    let t = Instant::now();
    let img = system_image(suite);
    let dir = instance(&format!("system-{suite}"), &img);

    // Boot 1: first boot of the instance. The check script breaks the glass and
    // reboots at the end; QEMU runs with -no-reboot, so the reboot ends the run.
    let b1 = boot(&dir, &img, "boot1", &[]);
    // How each refused action failed, kept for the record (summary.txt).
    let refusals = b1.lines_with("REFUSAL ");
    for r in &refusals {
        eprintln!("system: {suite}: {r}");
    }
    // Every problem is collected, so that one run of both boots shows them all.
    let mut problems = Vec::new();
    let luks1 = boot1_checks(&b1, &img, &mut problems);
    assert!(
        b1.log.contains("reboot: Restarting system"),
        "boot 1 did not end in a reboot, so there is no boot 2; problems: {problems:#?}; last lines of {}:\n{}",
        b1.path.display(),
        b1.tail()
    );

    // Boot 1 on a systemd with soft-reboot: the volume came back in the new userspace.
    let systemd: u32 = b1.fact("systemd_version").parse().unwrap_or(0);
    if systemd >= 254 {
        b1.expect(
            &mut problems,
            "a soft-reboot happened",
            "EPH-CHECK-BEGIN boot=1 userspace=2",
        );
    }

    // Boot 2: the same root and instance-store disks (a reboot keeps them).
    // The volume is kept (escrow), then recovered in place; then a reboot.
    let b2 = boot(&dir, &img, "boot2", &[]);
    b2.checks(&mut problems, 2);
    if b2.fact("luks_uuid") != luks1 {
        problems.push(format!(
            "boot 2 recovered LUKS UUID {} vs boot 1 {luks1}",
            b2.fact("luks_uuid")
        ));
    }
    b2.expect(
        &mut problems,
        "the kept volume said so on the console",
        &format!("ephemera discard --luks-uuid {luks1}"),
    );
    assert!(
        b2.log.contains("reboot: Restarting system"),
        "boot 2 did not end in a reboot, so there is no boot 3; problems: {problems:#?}; last lines of {}:\n{}",
        b2.path.display(),
        b2.tail()
    );

    // Boot 3: kept again, discarded, a new volume; then the power button,
    // which must power off within 300 s (run-system.sh exits 5 otherwise).
    let b3 = boot(
        &dir,
        &img,
        "boot3",
        &[
            "--powerdown-on",
            "EPH-READY-FOR-POWERDOWN",
            "--powerdown-bound",
            "300",
        ],
    );
    b3.checks(&mut problems, 3);
    let luks3 = b3.fact("luks_uuid");
    if luks3.is_empty() || luks3 == luks1 {
        problems.push(format!("boot 3 LUKS UUID {luks3} vs boot 1 {luks1}"));
    }
    // The power button (an EC2 stop) powers off cleanly despite the guard.
    b3.expect(
        &mut problems,
        "the power button powered off",
        "reboot: Power down",
    );
    b3.expect(
        &mut problems,
        "systemd shut down cleanly",
        "systemd-shutdown[1]: Syncing filesystems and block devices",
    );
    for b in [&b2, &b3] {
        if b.log.contains("Kernel panic") {
            problems.push(format!("{} panicked", b.path.display()));
        }
    }
    let times = format!(
        "systemd {}, kernel {}, boot 1 {:?}, boot 2 {:?}, boot 3 {:?}, total {:?}",
        b1.fact("systemd_version"),
        b1.fact("kernel"),
        b1.elapsed,
        b2.elapsed,
        b3.elapsed,
        t.elapsed()
    );
    eprintln!("system: {suite}: {times}");
    std::fs::write(
        dir.join("summary.txt"),
        format!(
            "{}\n{times}\n{}\nproblems: {problems:#?}\n",
            img.info.trim(),
            refusals.join("\n")
        ),
    )
    .unwrap();
    assert!(problems.is_empty(), "{suite}: {problems:#?}");
}

#[test]
#[ignore = "builds Debian images and boots them in QEMU; run by `make system`"]
fn debian12_full_boot() {
    full_boot("bookworm");
}

#[test]
#[ignore = "builds Debian images and boots them in QEMU; run by `make system`"]
fn debian13_full_boot() {
    full_boot("trixie");
}

/// Graviton: boot 1 of a Debian 12 arm64 instance with the arm64 .deb, under
/// qemu-system-aarch64 -machine virt: the volume, the guard's refusals (the
/// same list as on amd64), the break-glass and the reboot that then goes
/// through. One boot: TCG emulation of arm64 is slow, and boots 2 and 3
/// exercise no arm64-specific code.
#[test]
#[ignore = "builds a Debian arm64 image and boots it in QEMU; run by `make system-arm64`"]
fn arm64_debian12_boot1() {
    let t = Instant::now();
    let img = build_image("bookworm", "arm64", deb_arm64());
    let dir = instance("system-arm64-bookworm", &img);
    let b1 = boot(&dir, &img, "boot1", &[]);
    let refusals = b1.lines_with("REFUSAL ");
    let mut problems = Vec::new();
    boot1_checks(&b1, &img, &mut problems);
    if b1.log.contains("Kernel panic") {
        problems.push(format!("{} panicked", b1.path.display()));
    }
    let times = format!(
        "systemd {}, kernel {}, machine {}, boot 1 {:?}, total {:?}",
        b1.fact("systemd_version"),
        b1.fact("kernel"),
        b1.fact("machine"),
        b1.elapsed,
        t.elapsed()
    );
    eprintln!("system: arm64: {times}");
    std::fs::write(
        dir.join("summary.txt"),
        format!(
            "{}\n{times}\n{}\nproblems: {problems:#?}\n",
            img.info.trim(),
            refusals.join("\n")
        ),
    )
    .unwrap();
    assert!(problems.is_empty(), "arm64: {problems:#?}");
}
