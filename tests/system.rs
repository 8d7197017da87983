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
//! discarded, a new volume before the data unit; on amd64 the package is then
//! upgraded (the same binary as revision 2, on the seed), removed and purged
//! while services that require ephemera.service run, which must stay the same
//! processes, with the volume mounted and the guard refusing reboots
//! (tests/system/guest/package.sh); then the ACPI power button must power off
//! cleanly. The step-by-step story is in
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
mod imds_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

/// A bound against hangs for one boot, far above a normal run (about 2 min).
const BOOT_TIMEOUT_S: &str = "1200";
/// run-system.sh's arguments for a last boot: the power button once the
/// guest says EPH-READY-FOR-POWERDOWN, and QEMU must exit within 300 s (else
/// run-system.sh exits 5).
const POWER_BUTTON: [&str; 4] = [
    "--powerdown-on",
    "EPH-READY-FOR-POWERDOWN",
    "--powerdown-bound",
    "300",
];
/// The instance-store disks: serials as EC2 shows them.
const DATA_DISKS: [&str; 3] = ["AWS11111111", "AWS22222222", "AWS33333333"];
/// The model the shipped examples match; QEMU's controllers report another.
const EC2_MODEL: &str = "Amazon EC2 NVMe Instance Storage";
const QEMU_MODEL: &str = "QEMU NVMe Ctrl";
const ESCROW_PATH: &str = "/var/lib/ephemera/escrow.json";

/// The .deb, built once per test process with `make deb`.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    make_deb(&DEB, "deb", "ephemera.deb")
}

/// The arm64 .deb, built once per test process with `make deb-arm64`
/// (cross-built with Debian's rustc-web, scripts/arm64.sh).
fn deb_arm64() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    make_deb(&DEB, "deb-arm64", "ephemera_arm64.deb")
}

/// `make TARGET` once per test process; the package it leaves in
/// target/debian/FILE.
fn make_deb(cell: &'static OnceLock<PathBuf>, target: &str, file: &str) -> &'static Path {
    cell.get_or_init(|| {
        let t = Instant::now();
        run(Command::new("make").arg("-C").arg(repo()).arg(target));
        let deb = repo().join("target/debian").join(file);
        assert!(deb.is_file(), "make {target} made no {}", deb.display());
        eprintln!("system: make {target} in {:?}", t.elapsed());
        deb
    })
}

/// The same binary as the .deb, packaged as revision 2 (`make deb-upgrade`,
/// after `make deb`): the newer version the data-service node upgrades to.
/// Its version, and the check that both packages carry one binary.
fn deb_upgrade() -> &'static (PathBuf, String) {
    static DEB: OnceLock<(PathBuf, String)> = OnceLock::new();
    DEB.get_or_init(|| {
        let base = deb();
        run(Command::new("make")
            .arg("-C")
            .arg(repo())
            .arg("deb-upgrade"));
        let up = repo().join("target/debian/ephemera_upgrade.deb");
        let field = |deb: &Path, f: &str| {
            let out = stdout_of(Command::new("dpkg-deb").arg("-f").arg(deb).arg(f));
            String::from_utf8(out).unwrap().trim().to_string()
        };
        let binary = |deb: &Path| {
            stdout_of(Command::new("sh").arg("-c").arg(format!(
                "dpkg-deb --fsys-tarfile '{}' | tar -xO ./usr/sbin/ephemera | sha256sum",
                deb.display()
            )))
        };
        assert_eq!(
            binary(base),
            binary(&up),
            "the upgrade .deb's binary is not the .deb's"
        );
        let (v0, v1) = (field(base, "Version"), field(&up, "Version"));
        let newer = Command::new("dpkg")
            .args(["--compare-versions", &v1, "gt", &v0])
            .status()
            .unwrap();
        assert!(
            newer.success(),
            "upgrade version {v1} is not newer than {v0}"
        );
        (up, v1)
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

/// The shipped example user-data, adapted to QEMU: the disk model and, where
/// given, the escrow public key are the only changes.
fn example_user_data(name: &str, escrow_pub: Option<&str>) -> String {
    let path = repo().join("cloud-init").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.contains(EC2_MODEL),
        "{name} does not set the model {EC2_MODEL:?}"
    );
    let text = text.replace(EC2_MODEL, QEMU_MODEL);
    match escrow_pub {
        Some(pem) => replace_pem(&text, pem),
        None => text,
    }
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

/// A file the test part writes in the guest: path, mode, content.
type GuestFile<'a> = (&'a str, &'a str, &'a [u8]);

/// The test part: check.sh and its unit, its settings (the common ones, then
/// `env`: one `NAME=value` a line) and `files`.
fn test_user_data(img: &Image, env: &str, files: &[GuestFile]) -> String {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let check = std::fs::read(repo().join("tests/system/guest/check.sh")).unwrap();
    // arm64: the console is the PL011 (ttyAMA0).
    let arch_env = match img.arch() {
        "arm64" => "CONSOLE=ttyAMA0\n",
        _ => "",
    };
    let env = format!(
        "DATA_DISKS={}\nROOT_PARTUUID={}\nROOT_FS_UUID={}\nMOUNT=/mnt/ephemeral\n{arch_env}{env}",
        DATA_DISKS.len(),
        img.fact("root_partuuid"),
        img.fact("root_fs_uuid"),
    );
    let unit = "[Unit]\nDescription=ephemera system test checks\n\
        After=cloud-final.service ephemera.service ephemera-guard.service sample-data.service multi-user.target\n\
        [Service]\nType=exec\nExecStart=/usr/local/sbin/ephemera-check\n\
        [Install]\nWantedBy=multi-user.target\n";
    let files = [
        ("/usr/local/sbin/ephemera-check", "0755", &check[..]),
        ("/etc/ephemera-check.env", "0644", env.as_bytes()),
        (
            "/etc/systemd/system/ephemera-check.service",
            "0644",
            unit.as_bytes(),
        ),
    ]
    .iter()
    .chain(files)
    .map(|(path, mode, content)| {
        format!(
            "  - path: {path}\n    permissions: '{mode}'\n    encoding: b64\n    content: {}\n",
            b64(content)
        )
    })
    .collect::<String>();
    format!(
        "#cloud-config\n\
         merge_how:\n - name: list\n   settings: [append]\n - name: dict\n   settings: [no_replace, recurse_list]\n\
         write_files:\n{files}\
         runcmd:\n\
         \x20 - [systemctl, daemon-reload]\n\
         \x20 - [systemctl, enable, ephemera-check.service]\n\
         \x20 - [systemctl, start, --no-block, ephemera-check.service]\n",
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
    /// The boot ended in a reboot; without it there is no next boot to run.
    fn rebooted(&self, problems: &[String], boot: u32) {
        assert!(
            self.log.contains("reboot: Restarting system"),
            "boot {boot} did not end in a reboot, so there is no boot {}; problems: {problems:#?}; last lines of {}:\n{}",
            boot + 1,
            self.path.display(),
            self.tail()
        );
    }
    /// The power button (an EC2 stop) powered off cleanly despite the guard:
    /// nothing left busy on the way (the binds, the volume, its mapping).
    fn powered_off_cleanly(&self, problems: &mut Vec<String>) {
        self.expect(
            problems,
            "the power button powered off",
            "reboot: Power down",
        );
        self.expect(
            problems,
            "systemd shut down cleanly",
            "systemd-shutdown[1]: Syncing filesystems and block devices",
        );
        // systemd-shutdown's last pass: the volume's mapping and array are
        // gone (its first pass says the array is busy while the mapping on
        // it is still open; that is its order, not a failure).
        self.expect(
            problems,
            "systemd-shutdown detached everything",
            "All filesystems, swaps, loop devices, MD devices and DM devices detached.",
        );
        // What systemd and systemd-shutdown print when an unmount or a
        // device's detach fails, after the button was pressed.
        let after = self
            .log
            .rfind("EPH-READY-FOR-POWERDOWN")
            .map_or("", |i| &self.log[i..]);
        for bad in [
            "target is busy",
            "Failed unmounting",
            "Failed to unmount",
            "Could not unmount",
            "Could not detach",
            "Failed to finalize",
            "Unable to finalize",
            "ephemera: error",
        ] {
            for l in after.lines().filter(|l| l.contains(bad)) {
                problems.push(format!("at power-off: {l:?} in {}", self.path.display()));
            }
        }
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

/// A new instance on IMG for the test NAME: its folder (target/vm-tests/NAME)
/// with the instance-store disks, and the NoCloud seed folder with its
/// meta-data; the caller adds the user-data.
fn instance(img: &Image, name: &str) -> (PathBuf, PathBuf) {
    eprintln!("system: {name}: {}", img.info.trim().replace('\n', "; "));
    let dir = workdir(name);
    for serial in DATA_DISKS {
        image(&dir, serial, 1024 * MIB);
    }
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        format!("instance-id: i-ephemera-{name}\nlocal-hostname: ephemera-{name}\n"),
    )
    .unwrap();
    (dir, seed)
}

/// The end of a test NAME: the versions and each boot's time (a problem for
/// each boot that panicked) on stderr and, with the refused actions and the
/// problems, in DIR/summary.txt; then no problem may be left.
fn finish(
    name: &str,
    img: &Image,
    dir: &Path,
    boots: &[&Boot],
    start: Instant,
    refusals: &[String],
    mut problems: Vec<String>,
) {
    let mut times = format!(
        "systemd {}, kernel {}",
        boots[0].fact("systemd_version"),
        boots[0].fact("kernel")
    );
    for (i, b) in boots.iter().enumerate() {
        if b.log.contains("Kernel panic") {
            problems.push(format!("{} panicked", b.path.display()));
        }
        times += &format!(", boot {} {:?}", i + 1, b.elapsed);
    }
    times += &format!(", total {:?}", start.elapsed());
    eprintln!("system: {name}: {times}");
    let refused: String = refusals.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(
        dir.join("summary.txt"),
        format!(
            "{}\n{times}\n{refused}problems: {problems:#?}\n",
            img.info.trim()
        ),
    )
    .unwrap();
    assert!(problems.is_empty(), "{name}: {problems:#?}");
}

/// The data-service node's user-data: the shipped cloud-init/data-service.yaml
/// with a test escrow key, and the test part; on amd64 the IMDS test server
/// comes on the seed (on arm64 it does not: it is an x86-64 program).
fn data_service_seed(img: &Image, dir: &Path, seed: &Path) {
    let (sk, pk) = keypair(dir);
    let pk = String::from_utf8(pk).unwrap();
    let mut env = format!(
        "SAMPLE_UNIT=sample-data.service\nSAMPLE_FILE={}\nESCROW_PATH={ESCROW_PATH}\n\
         PRIVATE_KEY={PRIVATE_KEY}\n",
        sample_file()
    );
    let package_sh = std::fs::read(repo().join("tests/system/guest/package.sh")).unwrap();
    let mut files: Vec<GuestFile> = vec![(PRIVATE_KEY, "0600", &sk)];
    if img.arch() == "amd64" {
        let imds = seed.join("imds_server");
        std::fs::copy(imds_server(), &imds).unwrap();
        run(Command::new("strip").arg(&imds));
        env += "IMDS_PORT=8169\n";
        // Boot 3's package story (tests/system/guest/package.sh).
        let (up, version) = deb_upgrade();
        std::fs::copy(up, seed.join("ephemera_upgrade.deb")).unwrap();
        env += &format!("UPGRADE_DEB=ephemera_upgrade.deb\nUPGRADE_VERSION={version}\n");
        files.push((
            "/usr/local/sbin/ephemera-check-package",
            "0644",
            &package_sh,
        ));
    }
    let user_data = multipart(&[
        example_user_data("data-service.yaml", Some(&pk)),
        test_user_data(img, &env, &files),
    ]);
    std::fs::write(seed.join("user-data"), user_data).unwrap();
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
    // The envelope lists the members in the array's order, as mdadm shows
    // it in the guest; they are the data disks, whichever nvmeN each became.
    let members = envelope_members(&console);
    if members.join(",") != b1.fact("md_members") {
        problems.push(format!(
            "envelope members {} are not the array's, {} (mdadm --detail)",
            console["members"],
            b1.fact("md_members")
        ));
    }
    let mut sorted = members.clone();
    sorted.sort();
    if sorted != DATA_DISKS {
        problems.push(format!(
            "envelope members {} are not the data disks",
            console["members"]
        ));
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
    let (dir, seed) = instance(&img, &format!("system-{suite}"));
    data_service_seed(&img, &dir, &seed);

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
    b1.rebooted(&problems, 1);

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
    b2.rebooted(&problems, 2);

    // Boot 3: kept again, discarded, a new volume; then the power button,
    // which must power off within 300 s (run-system.sh exits 5 otherwise).
    let b3 = boot(&dir, &img, "boot3", &POWER_BUTTON);
    b3.checks(&mut problems, 3);
    let luks3 = b3.fact("luks_uuid");
    if luks3.is_empty() || luks3 == luks1 {
        problems.push(format!("boot 3 LUKS UUID {luks3} vs boot 1 {luks1}"));
    }
    b3.powered_off_cleanly(&mut problems);
    finish(suite, &img, &dir, &[&b1, &b2, &b3], t, &refusals, problems);
}

/// How often an exact string is in a file, as `grep -c -F` counts it (the
/// lines holding it; grep cuts binary data at NUL bytes, so a disk image of
/// zeros is no one long line).
fn grep_count(needle_file: &Path, file: &Path) -> u64 {
    let out = Command::new("grep")
        .arg("-c")
        .arg("-F")
        .arg("-f")
        .arg(needle_file)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "grep {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The marker must be in none of the VM's disks: the root disk (its qcow2
/// overlay converted to raw, so that its data is searched as the guest saw
/// it) and the instance-store members (only ciphertext).
fn marker_absent(dir: &Path, marker: &Path, after: &str, problems: &mut Vec<String>) {
    let raw = dir.join("root.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(dir.join("root.qcow2"))
        .arg(&raw));
    let mut disks = vec![raw.clone()];
    disks.extend(DATA_DISKS.iter().map(|s| dir.join(format!("{s}.img"))));
    for d in &disks {
        let n = grep_count(marker, d);
        eprintln!(
            "system: after {after}: the marker {n} times in {}",
            d.display()
        );
        if n != 0 {
            problems.push(format!(
                "after {after}: the marker is {n} times in {}",
                d.display()
            ));
        }
    }
    std::fs::remove_file(raw).unwrap();
}

/// A Kubernetes node with Debian's containerd: the user-data is the shipped
/// cloud-init/kubernetes-containerd.yaml (the QEMU disk model, no escrow) and
/// the test part in MODE=container (tests/system/guest/container.sh). Boot 1:
/// ephemera binds containerd's, kubelet's and the pod logs' directories;
/// containerd starts after it; an image imported from a tarball runs a
/// container that writes a marker into its writable layer and a volume; the
/// guest finds it in the files on the volume and in the dm device's blocks.
/// After the VM stops, the host finds it in none of the disk images. Boot 2
/// (guard released, no escrow): a new volume, containerd on it, the old image
/// gone, import and run again; then the power button, with a container
/// running, must power off with nothing busy.
fn container_node(suite: &str) {
    let t = Instant::now();
    let img = system_image(suite);
    let (dir, seed) = instance(&img, &format!("container-{suite}"));
    // The marker, random per run, reaches the guest on the seed volume only.
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let marker_text = format!("ephemera-marker-{hex}");
    let marker = seed.join("marker");
    std::fs::write(&marker, &marker_text).unwrap();
    // The control: the search finds the marker in binary data like a disk's.
    let control = dir.join("control.img");
    let mut data = vec![0u8; 8 * MIB as usize];
    data.extend_from_slice(&bytes);
    data.extend_from_slice(marker_text.as_bytes());
    data.extend(vec![0u8; 8 * MIB as usize]);
    std::fs::write(&control, data).unwrap();
    assert_eq!(
        grep_count(&marker, &control),
        1,
        "the search does not find the marker in {}",
        control.display()
    );
    std::fs::remove_file(&control).unwrap();

    let container = std::fs::read(repo().join("tests/system/guest/container.sh")).unwrap();
    let user_data = multipart(&[
        example_user_data("kubernetes-containerd.yaml", None),
        test_user_data(
            &img,
            "MODE=container\n",
            &[(
                "/usr/local/sbin/ephemera-check-container",
                "0644",
                &container,
            )],
        ),
    ]);
    std::fs::write(seed.join("user-data"), user_data).unwrap();
    let marker_sha = sha256_file(&marker);

    let mut problems = Vec::new();
    let b1 = boot(&dir, &img, "boot1", &[]);
    b1.checks(&mut problems, 1);
    if b1.fact("marker_sha256") != marker_sha {
        problems.push(format!(
            "boot 1 read the marker {} vs {marker_sha}",
            b1.fact("marker_sha256")
        ));
    }
    marker_absent(&dir, &marker, "boot 1", &mut problems);
    b1.rebooted(&problems, 1);

    let b2 = boot(&dir, &img, "boot2", &POWER_BUTTON);
    b2.checks(&mut problems, 2);
    if b2.fact("luks_uuid") == b1.fact("luks_uuid") {
        problems.push(format!(
            "boot 2 has boot 1's LUKS UUID {}",
            b1.fact("luks_uuid")
        ));
    }
    b2.powered_off_cleanly(&mut problems);
    // The running container ended at systemd-shutdown's SIGTERM, releasing
    // the volume: no process had to be killed.
    if let Some(l) = b2
        .log
        .lines()
        .find(|l| l.contains("Sending SIGKILL to PID"))
    {
        problems.push(format!("at power-off, a process needed a SIGKILL: {l:?}"));
    }
    marker_absent(&dir, &marker, "boot 2", &mut problems);
    finish(
        &format!("{suite} container node"),
        &img,
        &dir,
        &[&b1, &b2],
        t,
        &[],
        problems,
    );
}

#[test]
#[ignore = "builds Debian images and boots them in QEMU; run by `make system`"]
fn debian12_container_node() {
    container_node("bookworm");
}

#[test]
#[ignore = "builds Debian images and boots them in QEMU; run by `make system`"]
fn debian13_container_node() {
    container_node("trixie");
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
    let (dir, seed) = instance(&img, "system-arm64-bookworm");
    data_service_seed(&img, &dir, &seed);
    let b1 = boot(&dir, &img, "boot1", &[]);
    let refusals = b1.lines_with("REFUSAL ");
    let mut problems = Vec::new();
    boot1_checks(&b1, &img, &mut problems);
    finish("arm64", &img, &dir, &[&b1], t, &refusals, problems);
}

/// The unlock test's instance-store disks.
const UNLOCK_DISK: u64 = 256 * MIB;

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The instance-store disks' hashes as the guest's `member_hashes` prints
/// them: `SERIAL=<16 hex digits>`, in serial order.
fn member_hashes(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = DATA_DISKS
        .iter()
        .map(|s| format!("{s}={}", &sha256_file(&dir.join(format!("{s}.img")))[..16]))
        .collect();
    v.sort();
    v
}

/// The test's tang server: Debian's tangd behind socat on the host's
/// loopback (one tangd per connection), its keys made here. Started and
/// stopped by shell commands, so that run-system.sh can start it during a
/// boot (`--run-on`); its pid is in a file.
struct Tang {
    dir: PathBuf,
    port: u16,
    /// The thumbprint of its signing key, as clevis pins it.
    thp: String,
}

impl Tang {
    fn new(dir: &Path) -> Tang {
        let dir = dir.join("tang");
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        run(Command::new("/usr/libexec/tangd-keygen").arg(&keys));
        // The signing key is the one whose alg is ES512 (the other is the
        // exchange key, ECMR).
        let mut thp = None;
        for e in std::fs::read_dir(&keys).unwrap() {
            let jwk = e.unwrap().path();
            let text = std::fs::read_to_string(&jwk).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["alg"] == "ES512" {
                let out = Command::new("jose")
                    .args(["jwk", "thp", "-i"])
                    .arg(&jwk)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "jose jwk thp");
                thp = Some(String::from_utf8(out.stdout).unwrap().trim().to_string());
            }
        }
        // A free port on the loopback, as the kernel picks it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Tang {
            dir,
            port,
            thp: thp.expect("tangd-keygen made a signing key"),
        }
    }
    fn start_cmd(&self) -> String {
        format!(
            "setsid socat TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr,fork EXEC:'/usr/libexec/tangd {k}' \
             </dev/null >/dev/null 2>&1 & echo $! >{pid}; \
             for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:{p}/adv && exit 0; sleep 0.1; done; exit 1",
            p = self.port,
            k = self.dir.join("keys").display(),
            pid = self.dir.join("pid").display()
        )
    }
    fn start(&self) {
        run(Command::new("bash").arg("-c").arg(self.start_cmd()));
    }
    fn stop(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            let _ = std::fs::remove_file(self.dir.join("pid"));
        }
        // Stopped: the port refuses connections.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "tang still answers on port {}",
            self.port
        );
    }
}

impl Drop for Tang {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// A data node whose volume is bound to 2 of {its TPM, a tang server}
/// (issue 19), the user-data being the shipped cloud-init/unlock.yaml with
/// escrow, and the story in tests/system/guest/unlock.sh: boot 1 binds and
/// ends in a kernel panic; boot 2 unlocks with no one acting; boot 3, with
/// tang down, keeps the volume (its disks unchanged) until tang comes back
/// and `ephemera unlock`; boot 4, on another TPM, keeps it, and the escrow
/// key recovers it; boot 5, a stop and start, makes a new volume without
/// using the old unlock file. Then the volume key, learnt from the escrow
/// envelope, is searched for in every console log and disk.
/// A node for the unlock tests: its instance (256 MiB disks: the guest
/// hashes them whole), its tang server, its escrow key pair, and the
/// user-data: cloud-init/unlock.yaml with the tang server's URL and
/// thumbprint, `wait_secs = 20`, `edit` applied to it, the test part
/// (MODE=unlock, `story`, `pins` as the unlock file must say them) and the
/// NIC's address.
struct UnlockNode {
    img: Image,
    dir: PathBuf,
    tang: Tang,
}

fn unlock_setup(
    suite: &str,
    name: &str,
    edit: impl Fn(String) -> String,
    pins: &str,
    story: &str,
) -> UnlockNode {
    let img = system_image(suite);
    let (dir, seed) = instance(&img, name);
    for serial in DATA_DISKS {
        image(&dir, serial, UNLOCK_DISK);
    }
    let tang = Tang::new(&dir);
    let (sk, pk) = keypair(&dir);
    let example = example_user_data("unlock.yaml", Some(&String::from_utf8(pk).unwrap()))
        .replace("http://tang.internal:7500", "http://10.0.2.100:7500")
        .replace("REPLACE-WITH-THE-TANG-THUMBPRINT", &tang.thp)
        .replace("threshold = 2\n", "threshold = 2\n      wait_secs = 20\n");
    assert!(example.contains(&tang.thp) && example.contains("wait_secs = 20"));
    let example = edit(example);
    let unlock_sh = std::fs::read(repo().join("tests/system/guest/unlock.sh")).unwrap();
    let runbook = doc_block(
        "docs/UNLOCK.md",
        "### Version 2 (ephemera's own threshold)",
        0,
    );
    let env = format!(
        "MODE=unlock\nUNLOCK_STORY={story}\nUNLOCK_TANG={}\nSAMPLE_UNIT=sample-data.service\n\
         SAMPLE_FILE={}\nESCROW_PATH={ESCROW_PATH}\nPRIVATE_KEY={PRIVATE_KEY}\n\
         UNLOCK_PINS='{pins}'\nTANG_THP={}\n",
        u8::from(pins.contains("tang")),
        sample_file(),
        tang.thp
    );
    // The NIC's address, every boot before ephemera.service (cloud-init's
    // bootcmd runs in cloud-init.service): as on EC2, the network is up
    // before ephemera runs; here with no DHCP and no route but the link.
    let net = "#cloud-config\nbootcmd:\n  - [sh, -c, 'for i in $(seq 100); do n=$(ls /sys/class/net | grep -vx lo | head -n 1); \
               [ -n \"$n\" ] && break; sleep 0.2; done; ip link set \"$n\" up && ip addr replace 10.0.2.15/24 dev \"$n\"']\n";
    let user_data = multipart(&[
        example,
        test_user_data(
            &img,
            &env,
            &[
                (PRIVATE_KEY, "0600", &sk),
                ("/usr/local/sbin/ephemera-check-unlock", "0644", &unlock_sh),
                (
                    "/usr/local/sbin/ephemera-unlock-runbook",
                    "0644",
                    runbook.as_bytes(),
                ),
            ],
        ),
        net.to_string(),
    ]);
    std::fs::write(seed.join("user-data"), user_data).unwrap();
    UnlockNode { img, dir, tang }
}

fn unlock_node(suite: &str) {
    let t = Instant::now();
    let name = format!("unlock-{suite}");
    let UnlockNode { img, dir, tang } = unlock_setup(
        suite,
        &name,
        |e| e,
        "2 of tpm2, tang http://10.0.2.100:7500",
        "full",
    );
    let tpm_a = dir.join("tpm-a");
    let tpm_b = dir.join("tpm-b");
    let port = tang.port.to_string();
    let with = |tpm: &Path| -> Vec<String> {
        vec![
            "--tpm".into(),
            tpm.display().to_string(),
            "--tang".into(),
            port.clone(),
        ]
    };
    let args = |v: &[String]| v.to_vec();
    let mut problems = Vec::new();

    // Boot 1: provision and bind; data; a kernel panic.
    tang.start();
    let a = args(&with(&tpm_a));
    let mut b1 = boot(&dir, &img, "boot1", &strs(&a));
    b1.checks(&mut problems, 1);
    b1.expect(&mut problems, "boot 1 ended in a kernel panic", "EPH-PANIC");
    b1.expect(
        &mut problems,
        "the kernel panicked on sysrq c",
        "Kernel panic - not syncing: sysrq triggered crash",
    );
    // `finish` counts panics as problems: this one was asked for.
    b1.log = b1.log.replace(
        "Kernel panic - not syncing: sysrq",
        "sysrq-c panic (asked for):",
    );
    let luks1 = b1.fact("luks_uuid");

    // Boot 2: unlocked by its pins, no one acting.
    let b2 = boot(&dir, &img, "boot2", &strs(&a));
    b2.checks(&mut problems, 2);
    b2.rebooted(&problems, 2);

    // Boot 3: tang down: kept, its members untouched, until tang comes back.
    tang.stop();
    let hashes = member_hashes(&dir);
    let mut a3 = a.clone();
    a3.extend(["--run-on".into(), "EPH-WANT-TANG".into(), tang.start_cmd()]);
    let b3 = boot(&dir, &img, "boot3", &strs(&a3));
    b3.checks(&mut problems, 3);
    if b3.fact("member_hashes") != hashes.join(",") {
        problems.push(format!(
            "boot 3 (kept) members {} vs after boot 2 {}",
            b3.fact("member_hashes"),
            hashes.join(",")
        ));
    }
    b3.rebooted(&problems, 3);

    // Boot 4: another instance's TPM (a fresh swtpm state): kept; escrow.
    let b = args(&with(&tpm_b));
    let b4 = boot(&dir, &img, "boot4", &strs(&b));
    b4.checks(&mut problems, 4);
    b4.rebooted(&problems, 4);

    // Boot 5: a stop and start: new blank instance-store disks.
    for serial in DATA_DISKS {
        let img_path = dir.join(format!("{serial}.img"));
        std::fs::rename(&img_path, dir.join(format!("old-{serial}.img"))).unwrap();
        image(&dir, serial, UNLOCK_DISK);
    }
    let mut a5 = b.clone();
    a5.extend(POWER_BUTTON.iter().map(|x| x.to_string()));
    let b5 = boot(&dir, &img, "boot5", &strs(&a5));
    b5.checks(&mut problems, 5);
    b5.powered_off_cleanly(&mut problems);
    for (b, n) in [(&b2, 2), (&b3, 3), (&b4, 4)] {
        if b.fact("luks_uuid") != luks1 {
            problems.push(format!(
                "boot {n} LUKS UUID {} vs boot 1 {luks1}",
                b.fact("luks_uuid")
            ));
        }
    }

    // The leak scan: the key, learnt as ops would (the console envelope and
    // the private key), checked against the LUKS2 digest, then searched for.
    let (env, key) = key_from_console(&b1.log, &dir, |env| {
        dir.join(format!("old-{}.img", envelope_members(env)[0]))
    });
    let ct = env["ciphertext"].as_str().unwrap().to_string();
    let raw = dir.join("root.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(dir.join("root.qcow2"))
        .arg(&raw));
    let mut places: Vec<PathBuf> = vec![raw.clone()];
    for b in [&b1, &b2, &b3, &b4, &b5] {
        places.push(b.path.clone());
    }
    for serial in DATA_DISKS {
        places.push(dir.join(format!("old-{serial}.img")));
        places.push(dir.join(format!("{serial}.img")));
    }
    let root_bytes = std::fs::read(&raw).unwrap();
    // The search works: the envelope and the unlock file's token are on the
    // root disk.
    assert!(
        find(&root_bytes, ct.as_bytes()) >= 1,
        "the envelope is not on the root disk"
    );
    drop(root_bytes);
    let forms = key_forms(&key);
    let (found, hits) = leak_hits(&places, &forms);
    problems.extend(found);
    eprintln!(
        "system: {name}: key-leak scan: {} places, {} forms, {hits} hits",
        places.len(),
        forms.len()
    );
    std::fs::remove_file(raw).unwrap();
    drop(tang);
    finish(
        &name,
        &img,
        &dir,
        &[&b1, &b2, &b3, &b4, &b5],
        t,
        &[],
        problems,
    );
}

#[test]
#[ignore = "builds Debian images and boots them in QEMU with swtpm and tang; run by `make system`"]
fn debian12_unlock_with_tpm_and_tang() {
    unlock_node("bookworm");
}

/// `[unlock]` with one pin (issue 19's "tpm2 alone" and "tang alone"), the
/// story UNLOCK_STORY=short of tests/system/guest/unlock.sh: boot 1 binds,
/// checks the manual path, writes data and panics; boot 2 unlocks with no
/// one acting (same LUKS UUID, data, data unit, guard). With tang alone,
/// tang is then stopped: boot 3 keeps the volume, its disks unchanged, until
/// tang is back and `ephemera unlock`. Then the power button.
fn unlock_one_pin(suite: &str, pin: &str) {
    let t = Instant::now();
    let name = format!("unlock-{pin}-{suite}");
    let (edit, pins): (fn(String) -> String, &str) = match pin {
        "tpm2" => (
            |e| {
                e.replace(
                    "      tang = [ { url = \"http://10.0.2.100:7500\"",
                    "      # tang = [ { url = \"http://10.0.2.100:7500\"",
                )
                .replace("threshold = 2\n", "threshold = 1\n")
            },
            "1 of tpm2",
        ),
        _ => (
            |e| {
                e.replace("tpm2 = true\n", "tpm2 = false\n")
                    .replace("threshold = 2\n", "threshold = 1\n")
            },
            "1 of tang http://10.0.2.100:7500",
        ),
    };
    let UnlockNode { img, dir, tang } = unlock_setup(suite, &name, edit, pins, "short");
    let mut args = vec!["--tpm".to_string(), dir.join("tpm").display().to_string()];
    args.extend(["--tang".to_string(), tang.port.to_string()]);
    let mut problems = Vec::new();
    tang.start();
    let mut b1 = boot(&dir, &img, "boot1", &strs(&args));
    b1.checks(&mut problems, 1);
    b1.expect(&mut problems, "boot 1 ended in a kernel panic", "EPH-PANIC");
    b1.log = b1.log.replace(
        "Kernel panic - not syncing: sysrq",
        "sysrq-c panic (asked for):",
    );
    let luks1 = b1.fact("luks_uuid");
    let mut last = args.clone();
    if pin == "tpm2" {
        last.extend(POWER_BUTTON.iter().map(|x| x.to_string()));
    }
    let b2 = boot(&dir, &img, "boot2", &strs(&last));
    b2.checks(&mut problems, 2);
    if b2.fact("luks_uuid") != luks1 {
        problems.push(format!(
            "boot 2 LUKS UUID {} vs boot 1 {luks1}",
            b2.fact("luks_uuid")
        ));
    }
    let mut boots = vec![b1, b2];
    if pin == "tpm2" {
        boots[1].powered_off_cleanly(&mut problems);
    } else {
        boots[1].rebooted(&problems, 2);
        tang.stop();
        let hashes = member_hashes(&dir);
        let mut a3 = args.clone();
        a3.extend(["--run-on".into(), "EPH-WANT-TANG".into(), tang.start_cmd()]);
        a3.extend(POWER_BUTTON.iter().map(|x| x.to_string()));
        let b3 = boot(&dir, &img, "boot3", &strs(&a3));
        b3.checks(&mut problems, 3);
        if b3.fact("member_hashes") != hashes.join(",") {
            problems.push(format!(
                "boot 3 (kept) members {} vs after boot 2 {}",
                b3.fact("member_hashes"),
                hashes.join(",")
            ));
        }
        if b3.fact("luks_uuid") != luks1 {
            problems.push(format!(
                "boot 3 LUKS UUID {} vs boot 1 {luks1}",
                b3.fact("luks_uuid")
            ));
        }
        b3.powered_off_cleanly(&mut problems);
        boots.push(b3);
    }
    drop(tang);
    let refs: Vec<&Boot> = boots.iter().collect();
    finish(&name, &img, &dir, &refs, t, &[], problems);
}

#[test]
#[ignore = "boots Debian 12 in QEMU with swtpm; run by `make system-extra`"]
fn debian12_unlock_one_pin_tpm2() {
    unlock_one_pin("bookworm", "tpm2");
}

#[test]
#[ignore = "boots Debian 12 in QEMU with tang; run by `make system-extra`"]
fn debian12_unlock_one_pin_tang() {
    unlock_one_pin("bookworm", "tang");
}

/// A node with `[unlock] kms` (issue 27), on a Debian 12 image with **no
/// clevis** (`EPHEMERA_IMAGE_NO_CLEVIS=1`): the user-data is the shipped
/// cloud-init/unlock.yaml with its pins replaced by the kms pin (and, with
/// `tpm`, 2 of {tpm2, kms}), escrow kept; its one NIC reaches the IMDS test
/// server (10.0.2.101:80, on the host, with the role's credentials, the
/// instance id and account) and moto's KMS behind a TLS front with a test
/// CA (10.0.2.102:443), through guestfwds. The story is
/// tests/system/guest/unlock.sh's `kms_story`: boot 1 binds and panics; boot
/// 2 unlocks with no one acting; boot 3, KMS unreachable, keeps the volume
/// (its disks unchanged) until KMS is back and `ephemera unlock`; boot 4, a
/// stop and start, makes a new volume. Then the key (from the escrow
/// envelope, checked against the header) and the kms part (decrypted by
/// boto3 as ops would) are searched for in every console log, the root disk
/// and every member disk: none is there.
fn kms_node(suite: &str, tpm: bool) {
    use common::moto::{forms, Moto, REGION};
    const INSTANCE: &str = "i-0123456789abcdef0";
    const ACCOUNT: &str = "123456789012";
    let t = Instant::now();
    let name = format!("unlock-kms{}-{suite}", if tpm { "-tpm2" } else { "" });
    let img = {
        let out = Command::new(repo().join("tests/system/build-image.sh"))
            .arg(suite)
            .arg(deb())
            .env("EPHEMERA_IMAGE_NO_CLEVIS", "1")
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "build-image.sh {suite} (no clevis)");
        let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let info = std::fs::read_to_string(dir.join("info")).unwrap();
        Image { dir, info }
    };
    let (dir, seed) = instance(&img, &name);
    for serial in DATA_DISKS {
        image(&dir, serial, UNLOCK_DISK);
    }
    let mut m = Moto::start(&dir);
    let imds = imds_server::ImdsServer::start(
        imds_server::Scenario {
            instance_id: Some(INSTANCE.into()),
            region: Some(REGION.into()),
            account: Some(ACCOUNT.into()),
            role: Some(imds_server::Role {
                name: "ephemera-node".into(),
                access_key_id: m.access_key_id.clone(),
                secret_access_key: m.secret.clone(),
                token: None,
            }),
            ..imds_server::Scenario::default()
        },
        0,
    );
    let (sk, pk) = keypair(&dir);
    let pins = format!(
        "      kms = {{ key_id = \"{}\", endpoint = \"https://10.0.2.102\", ca_file = \"/etc/ephemera/kms-ca.pem\" }}\n{}      wait_secs = 20\n\n      [events]\n      endpoint = \"http://10.0.2.101\"\n",
        m.key1,
        if tpm { "      tpm2 = true\n      threshold = 2\n" } else { "" }
    );
    let example = example_user_data("unlock.yaml", Some(&String::from_utf8(pk).unwrap()));
    let start = example
        .find("      tpm2 = true\n")
        .expect("the example's pins");
    let end = example
        .find("      threshold = 2\n")
        .expect("the example's threshold")
        + "      threshold = 2\n".len();
    let example = format!("{}{pins}{}", &example[..start], &example[end..]);
    let want_pins = if tpm {
        format!("2 of tpm2, kms {}", m.key1)
    } else {
        format!("1 of kms {}", m.key1)
    };
    let unlock_sh = std::fs::read(repo().join("tests/system/guest/unlock.sh")).unwrap();
    let ca = std::fs::read(&m.ca).unwrap();
    let env = format!(
        "MODE=unlock\nUNLOCK_STORY=kms\nSAMPLE_UNIT=sample-data.service\nSAMPLE_FILE={}\n\
         ESCROW_PATH={ESCROW_PATH}\nPRIVATE_KEY={PRIVATE_KEY}\nUNLOCK_PINS='{want_pins}'\n\
         KMS_INSTANCE_ARN=arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{INSTANCE}\n",
        sample_file()
    );
    let net = "#cloud-config\nbootcmd:\n  - [sh, -c, 'for i in $(seq 100); do n=$(ls /sys/class/net | grep -vx lo | head -n 1); \
               [ -n \"$n\" ] && break; sleep 0.2; done; ip link set \"$n\" up && ip addr replace 10.0.2.15/24 dev \"$n\"']\n";
    let user_data = multipart(&[
        example,
        test_user_data(
            &img,
            &env,
            &[
                (PRIVATE_KEY, "0600", &sk),
                ("/usr/local/sbin/ephemera-check-unlock", "0644", &unlock_sh),
                ("/etc/ephemera/kms-ca.pem", "0644", &ca),
            ],
        ),
        net.to_string(),
    ]);
    std::fs::write(seed.join("user-data"), user_data).unwrap();

    let mut args = vec![
        "--guestfwd".to_string(),
        format!("10.0.2.101:80={}", imds.port),
        "--guestfwd".to_string(),
        format!("10.0.2.102:443={}", m.tls_port),
    ];
    if tpm {
        args.extend(["--tpm".to_string(), dir.join("tpm").display().to_string()]);
    }
    let mut problems = Vec::new();
    let mut b1 = boot(&dir, &img, "boot1", &strs(&args));
    b1.checks(&mut problems, 1);
    b1.expect(&mut problems, "boot 1 ended in a kernel panic", "EPH-PANIC");
    b1.log = b1.log.replace(
        "Kernel panic - not syncing: sysrq",
        "sysrq-c panic (asked for):",
    );
    let luks1 = b1.fact("luks_uuid");
    let b2 = boot(&dir, &img, "boot2", &strs(&args));
    b2.checks(&mut problems, 2);
    b2.rebooted(&problems, 2);

    // Boot 3: KMS unreachable (the front stopped; moto keeps its keys), back
    // when the guest asks for it.
    m.stop_front();
    let hashes = member_hashes(&dir);
    let log3 = dir.join("boot3.log");
    let done = std::sync::atomic::AtomicBool::new(false);
    let b3 = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if std::fs::read_to_string(&log3)
                    .unwrap_or_default()
                    .contains("EPH-WANT-KMS")
                {
                    m.start_front();
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let b = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            boot(&dir, &img, "boot3", &strs(&args))
        }));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        b
    })
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
    b3.checks(&mut problems, 3);
    if b3.fact("member_hashes") != hashes.join(",") {
        problems.push(format!(
            "boot 3 (kept) members {} vs after boot 2 {}",
            b3.fact("member_hashes"),
            hashes.join(",")
        ));
    }
    b3.rebooted(&problems, 3);

    // Boot 4: a stop and start: blank instance-store disks.
    for serial in DATA_DISKS {
        let p = dir.join(format!("{serial}.img"));
        std::fs::rename(&p, dir.join(format!("old-{serial}.img"))).unwrap();
        image(&dir, serial, UNLOCK_DISK);
    }
    let mut a4 = args.clone();
    a4.extend(POWER_BUTTON.iter().map(|x| x.to_string()));
    let b4 = boot(&dir, &img, "boot4", &strs(&a4));
    b4.checks(&mut problems, 4);
    b4.powered_off_cleanly(&mut problems);
    for (b, n) in [(&b2, 2), (&b3, 3)] {
        if b.fact("luks_uuid") != luks1 {
            problems.push(format!(
                "boot {n} LUKS UUID {} vs boot 1 {luks1}",
                b.fact("luks_uuid")
            ));
        }
    }

    // The leak scan: the key as ops learn it (the console envelope and the
    // private key), checked against the header; the kms part as ops decrypt
    // it (boto3, the slot of the unlock file boot 1 printed).
    let (_, key) = key_from_console(&b1.log, &dir, |env| {
        dir.join(format!("old-{}.img", envelope_members(env)[0]))
    });
    let file: serde_json::Value = serde_json::from_str(&b1.fact("unlock_file")).unwrap();
    let (slot, part) = m.ops_decrypt(&file);
    let raw = dir.join("root.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(dir.join("root.qcow2"))
        .arg(&raw));
    let mut places: Vec<PathBuf> = vec![raw.clone()];
    places.extend([&b1, &b2, &b3, &b4].iter().map(|b| b.path.clone()));
    for serial in DATA_DISKS {
        places.push(dir.join(format!("old-{serial}.img")));
        places.push(dir.join(format!("{serial}.img")));
    }
    assert!(
        find(
            &std::fs::read(&raw).unwrap(),
            slot["ciphertext"].as_str().unwrap().as_bytes()
        ) >= 1,
        "the unlock file is not on the root disk: the scan would find nothing"
    );
    let mut needles = key_forms(&key);
    needles.extend(forms(&part));
    let (found, hits) = leak_hits(&places, &needles);
    problems.extend(found);
    eprintln!(
        "system: {name}: leak scan: {} places, {} forms of the key and the kms part, {hits} hits",
        places.len(),
        needles.len()
    );
    std::fs::remove_file(raw).unwrap();
    drop(imds);
    finish(&name, &img, &dir, &[&b1, &b2, &b3, &b4], t, &[], problems);
}

#[test]
#[ignore = "builds a Debian 12 image without clevis, runs moto; run by `make system-extra`"]
fn debian12_unlock_kms() {
    kms_node("bookworm", false);
}

#[test]
#[ignore = "builds a Debian 12 image without clevis, runs moto and swtpm; run by `make system-extra`"]
fn debian12_unlock_kms_and_tpm2() {
    kms_node("bookworm", true);
}
