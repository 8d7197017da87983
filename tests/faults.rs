//! Fault injection and safety tests on a real kernel (issue 4): bad input,
//! the wrong-disk safety matrix, a crash at every step boundary, rollback,
//! concurrent runs, a key-leak scan, power loss and a disk that disappears.
//!
//! The guest's ephemera must be built with the `failpoints` feature
//! (src/failpoint.rs); `make faults` does that:
//!   cargo test --release --features failpoints --test faults -- --ignored
//! Without the feature this file compiles to nothing.
//!
//! Each test prints its figures as `FIGURE name=value` lines, which
//! docs/RELIABILITY.md reports.
#![cfg(feature = "failpoints")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A unique work folder per test (target/vm-tests is shared with tests/vm.rs).
fn dir(name: &str) -> PathBuf {
    workdir(&format!("faults-{name}"))
}

fn sh(script: &str) {
    run(Command::new("bash").args(["-euo", "pipefail", "-c", script]));
}

/// The size of each blank candidate disk: three of them are above xfs's
/// minimum on an array (512 MiB) once the LUKS header is off.
const BLANK: u64 = 256 * MIB;

/// Three blank disks of `BLANK` bytes, EPH-A to EPH-C, and a fourth,
/// EPH-OTHER, that holds someone's ext4. Returns the ext4 image and all four
/// disks.
fn three_blank_and_a_foreign(d: &Path) -> (PathBuf, Vec<(PathBuf, &'static str)>) {
    let other = image(d, "other", 64 * MIB);
    sh(&format!("mkfs.ext4 -q -F {}", other.display()));
    let mut disks: Vec<(PathBuf, &str)> = ["EPH-A", "EPH-B", "EPH-C"]
        .iter()
        .map(|s| (image(d, s, BLANK), *s))
        .collect();
    disks.push((other.clone(), "EPH-OTHER"));
    (other, disks)
}

fn sh_out(script: &str) -> Vec<u8> {
    stdout_of(Command::new("bash").args(["-euo", "pipefail", "-c", script]))
}

/// `KEY tried=N other=M` from the serial log.
fn result_line(log: &str, key: &str) -> Vec<(String, u32)> {
    let line = log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} line in the log"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("FIGURE {name}={value}");
    let p = repo().join("target/vm-tests/faults-figures.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    writeln!(f, "{name}={value}").unwrap();
}

/// The value after `key ` on the first log line that has it.
fn log_value(log: &str, key: &str) -> String {
    between(log, key, "\n").trim().to_string()
}

// ---------------------------------------------------------------------------
// 1. Bad input, 5. wrong-disk safety matrix: one boot.

/// Keys and PEM files the bad-input table uses, made by openssl as ops would.
fn pem_files(d: &Path) -> Vec<(String, Vec<u8>)> {
    let q = |p: &Path| p.display().to_string();
    let k = d.join("keys");
    std::fs::create_dir_all(&k).unwrap();
    let kd = q(&k);
    sh(&format!(
        "cd {kd}
        openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.key
        openssl pkey -in rsa2048.key -pubout -out spki.pem
        openssl rsa -in rsa2048.key -RSAPublicKey_out -out pkcs1.pem 2>/dev/null
        openssl rsa -in rsa2048.key -traditional -out pkcs1-private.pem 2>/dev/null
        cp rsa2048.key pkcs8-private.pem
        openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key
        openssl pkey -in rsa1024.key -pubout -out rsa1024.pem
        openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key
        openssl pkey -in ec.key -pubout -out ec.pem
        openssl genpkey -quiet -algorithm ED25519 -out ed.key
        openssl pkey -in ed.key -pubout -out ed25519.pem
        openssl req -x509 -new -key rsa2048.key -subj /CN=x -days 1 -out cert.pem 2>/dev/null
        head -c 200 spki.pem > truncated.pem
        sed '2s/^..../!!!!/' spki.pem > garbage.pem
        printf -- '-----BEGIN PUBLIC KEY-----\\n-----END PUBLIC KEY-----\\n' > empty-body.pem
        : > empty.pem
        printf '\\377\\376 not text' > binary.pem
        {{ cat spki.pem; echo trailing junk; }} > trailing.pem
        sed 's/PUBLIC KEY/RSA PUBLIC KEY/' spki.pem > spki-as-pkcs1.pem
        sed 's/RSA PUBLIC KEY/PUBLIC KEY/' pkcs1.pem > pkcs1-as-spki.pem"
    ));
    [
        "spki",
        "pkcs1",
        "pkcs1-private",
        "pkcs8-private",
        "rsa1024",
        "ec",
        "ed25519",
        "cert",
        "truncated",
        "garbage",
        "empty-body",
        "empty",
        "binary",
        "trailing",
        "spki-as-pkcs1",
        "pkcs1-as-spki",
    ]
    .iter()
    .map(|n| {
        (
            format!("key-{n}.pem"),
            std::fs::read(k.join(format!("{n}.pem"))).unwrap(),
        )
    })
    .collect()
}

/// One bad input: its id, the exit code, who runs it, a text the one line
/// must contain, and the config text (None: the arguments say it all).
struct Bad {
    id: &'static str,
    want: u8,
    nobody: bool,
    needle: &'static str,
    config: Option<Vec<u8>>,
    args: Option<String>,
}

fn bad(id: &'static str, needle: &'static str, text: &str) -> Bad {
    Bad {
        id,
        want: 2,
        nobody: false,
        needle,
        config: Some(text.as_bytes().to_vec()),
        args: None,
    }
}

fn q(extra: &str) -> String {
    String::from_utf8(config(extra)).unwrap()
}

fn bad_inputs() -> Vec<Bad> {
    let key = |id: &'static str, needle: &'static str, file: &str| {
        bad(
            id,
            needle,
            &q(&format!(
                "[escrow]\npublic_key = \"/scenario/key-{file}.pem\"\n"
            )),
        )
    };
    let mut v = vec![
        // Every config key, bad values.
        bad(
            "on_existing-value",
            "unknown variant `wipe`",
            "on_existing = \"wipe\"\n",
        ),
        bad(
            "on_existing-type",
            "in-on_existing-type.toml:1",
            "on_existing = 1\n",
        ),
        bad(
            "disks.model-empty",
            "disks.model",
            "[disks]\nmodel = \"\"\n",
        ),
        bad(
            "disks.model-blank",
            "disks.model",
            "[disks]\nmodel = \"   \"\n",
        ),
        bad(
            "disks.model-type",
            "in-disks.model-type.toml:2",
            "[disks]\nmodel = 5\n",
        ),
        bad(
            "disks.min_disks-negative",
            "in-disks.min_disks-negative.toml:3",
            &q("min_disks = -1\n"),
        ),
        bad(
            "disks.min_disks-string",
            "in-disks.min_disks-string.toml:3",
            &q("min_disks = \"two\"\n"),
        ),
        bad(
            "disks.unknown",
            "unknown field `serial`",
            &q("serial = \"x\"\n"),
        ),
        bad(
            "raid.chunk_kib-100",
            "raid.chunk_kib",
            &q("[raid]\nchunk_kib = 100\n"),
        ),
        bad(
            "raid.chunk_kib-2",
            "raid.chunk_kib",
            &q("[raid]\nchunk_kib = 2\n"),
        ),
        bad(
            "raid.chunk_kib-0",
            "raid.chunk_kib",
            &q("[raid]\nchunk_kib = 0\n"),
        ),
        bad(
            "raid.chunk_kib-2GiB",
            "raid.chunk_kib",
            &q("[raid]\nchunk_kib = 2097152\n"),
        ),
        bad(
            "raid.chunk_kib-float",
            "in-raid.chunk_kib-float.toml:4",
            &q("[raid]\nchunk_kib = 256.0\n"),
        ),
        bad(
            "luks.cipher-notation",
            "luks.cipher",
            &q("[luks]\ncipher = \"twofish\"\n"),
        ),
        bad(
            "luks.cipher-space",
            "luks.cipher",
            &q("[luks]\ncipher = \"a b-xts\"\n"),
        ),
        bad(
            "luks.cipher-kernel",
            "luks.cipher: the kernel has no xts(nosuchcipher)",
            &q("[luks]\ncipher = \"nosuchcipher-xts-plain64\"\n"),
        ),
        bad(
            "luks.key_bits-500",
            "luks.key_bits",
            &q("[luks]\nkey_bits = 500\n"),
        ),
        bad(
            "luks.key_bits-1024",
            "luks.key_bits",
            &q("[luks]\nkey_bits = 1024\n"),
        ),
        bad(
            "luks.key_bits-0",
            "luks.key_bits",
            &q("[luks]\nkey_bits = 0\n"),
        ),
        bad(
            "luks.sector_size-1000",
            "luks.sector_size",
            &q("[luks]\nsector_size = 1000\n"),
        ),
        bad(
            "luks.sector_size-8192",
            "luks.sector_size",
            &q("[luks]\nsector_size = 8192\n"),
        ),
        bad(
            "luks.discards-string",
            "in-luks.discards-string.toml:4",
            &q("[luks]\ndiscards = \"yes\"\n"),
        ),
        bad(
            "luks.workqueues-int",
            "in-luks.workqueues-int.toml:4",
            &q("[luks]\nworkqueues = 1\n"),
        ),
        bad(
            "filesystem.label-empty",
            "filesystem.label",
            &q("[filesystem]\nlabel = \"\"\n"),
        ),
        bad(
            "filesystem.label-17",
            "filesystem.label",
            &q("[filesystem]\nlabel = \"seventeen-bytes-x\"\n"),
        ),
        bad(
            "filesystem.label-control",
            "filesystem.label",
            &q("[filesystem]\nlabel = \"a\\tb\"\n"),
        ),
        bad(
            "mount.path-relative",
            "mount.path",
            &q("[mount]\npath = \"mnt\"\n"),
        ),
        bad(
            "mount.path-root",
            "mount.path",
            &q("[mount]\npath = \"/\"\n"),
        ),
        bad(
            "mount.path-empty",
            "mount.path",
            &q("[mount]\npath = \"\"\n"),
        ),
        bad(
            "mount.options-empty-option",
            "mount.options",
            &q("[mount]\noptions = \"noatime,,\"\n"),
        ),
        bad(
            "mount.options-space",
            "mount.options",
            &q("[mount]\noptions = \"noatime, x y\"\n"),
        ),
        bad(
            "escrow.public_key-relative",
            "escrow.public_key",
            &q("[escrow]\npublic_key = \"key.pem\"\n"),
        ),
        bad(
            "escrow.public_key-missing",
            "/nonexistent.pem: cannot read",
            &q("[escrow]\npublic_key = \"/nonexistent.pem\"\n"),
        ),
        bad(
            "escrow.public_key-directory",
            "/scenario: cannot read",
            &q("[escrow]\npublic_key = \"/scenario\"\n"),
        ),
        bad(
            "escrow.path-relative",
            "escrow.path",
            &q("[escrow]\npath = \"escrow.json\"\n"),
        ),
        bad(
            "escrow.console-string",
            "in-escrow.console-string.toml:4",
            &q("[escrow]\nconsole = \"yes\"\n"),
        ),
        bad("unknown-key", "unknown field `bogus`", &q("bogus = 1\n")),
        bad("unknown-table", "unknown field `foo`", &q("[foo]\nx = 1\n")),
        bad("toml-syntax", "in-toml-syntax.toml:1", "[disks\n"),
        bad(
            "toml-duplicate",
            "in-toml-duplicate.toml",
            &q("[disks]\nmin_disks = 1\n"),
        ),
        // PEM files.
        key("pem-pkcs1-private", "is a private key", "pkcs1-private"),
        key("pem-pkcs8-private", "is a private key", "pkcs8-private"),
        key("pem-rsa1024", "1024 bits", "rsa1024"),
        key("pem-ec", "not an RSA key", "ec"),
        key("pem-ed25519", "not an RSA key", "ed25519"),
        key("pem-certificate", "key-cert.pem", "cert"),
        key("pem-truncated", "key-truncated.pem", "truncated"),
        key("pem-garbage", "key-garbage.pem", "garbage"),
        key("pem-empty-body", "key-empty-body.pem", "empty-body"),
        key("pem-empty-file", "key-empty.pem", "empty"),
        key("pem-binary", "key-binary.pem: not a PEM file", "binary"),
        key(
            "pem-spki-labelled-pkcs1",
            "key-spki-as-pkcs1.pem",
            "spki-as-pkcs1",
        ),
        key(
            "pem-pkcs1-labelled-spki",
            "key-pkcs1-as-spki.pem",
            "pkcs1-as-spki",
        ),
    ];
    // Files that are not config files.
    v.push(Bad {
        args: Some("provision --config /scenario".into()),
        config: None,
        ..bad("config-directory", "config /scenario: cannot read", "")
    });
    v.push(Bad {
        args: Some("provision --config /nonexistent.toml".into()),
        config: None,
        ..bad(
            "config-missing",
            "config /nonexistent.toml: cannot read",
            "",
        )
    });
    v.push(Bad {
        config: Some(b"[disks]\nmodel = \"\xff\xfe\"\n".to_vec()),
        ..bad("config-not-utf8", "not UTF-8", "")
    });
    // Unreadable files: root reads anything, so these run as nobody.
    v.push(Bad {
        nobody: true,
        ..bad(
            "config-unreadable",
            "in-config-unreadable.toml: cannot read: Permission denied",
            &q(""),
        )
    });
    v.push(Bad {
        nobody: true,
        ..key(
            "pem-unreadable-as-nobody",
            "key-unreadable.pem: cannot read: Permission denied",
            "unreadable",
        )
    });
    v
}

#[test]
#[ignore = "boots a QEMU VM; run by `make faults`"]
fn bad_input_and_wrong_disk_matrix() {
    let d = dir("matrix");
    let img = |n: &str, mib: u64| image(&d, n, mib * MIB);
    let p = |x: &PathBuf| x.display().to_string();
    let blank = img("blank", 64);
    let root = img("root", 64);
    let mounted = img("mounted", 64);
    let gpt = img("gpt", 64);
    let dos = img("dos", 64);
    let ext4 = img("ext4", 64);
    let xfs = img("xfs", 320);
    let swap = img("swap", 64);
    let md = img("md", 64);
    let luks = img("luks", 64);
    let lukslbl = img("lukslbl", 64);
    sh(&format!(
        "printf 'label: gpt\\n,,L\\n' | sfdisk -q {root}
         truncate -s 60M {d}/p1.img && mkfs.ext4 -q -F -L root {d}/p1.img
         dd if={d}/p1.img of={root} bs=1M seek=1 conv=notrunc,sparse status=none
         mkfs.ext4 -q -F {mounted}
         printf 'label: gpt\\n,,L\\n' | sfdisk -q {gpt}
         printf 'label: dos\\n,,83\\n' | sfdisk -q {dos}
         mkfs.ext4 -q -F {ext4}
         mkfs.xfs -q -f {xfs}
         mkswap -q {swap}
         printf secret > {d}/pass
         cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 {luks} {d}/pass
         cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --label ephemera --subsystem other {lukslbl} {d}/pass",
        root = p(&root),
        d = d.display(),
        mounted = p(&mounted),
        gpt = p(&gpt),
        dos = p(&dos),
        ext4 = p(&ext4),
        xfs = p(&xfs),
        swap = p(&swap),
        luks = p(&luks),
        lukslbl = p(&lukslbl),
    ));
    let kept: Vec<(&str, &PathBuf)> = vec![
        ("EPH-ROOT", &root),
        ("EPH-MOUNTED", &mounted),
        ("EPH-GPT", &gpt),
        ("EPH-DOS", &dos),
        ("EPH-EXT4", &ext4),
        ("EPH-XFS", &xfs),
        ("EPH-SWAP", &swap),
        ("EPH-LUKS", &luks),
        ("EPH-LUKSLBL", &lukslbl),
    ];
    let before: Vec<String> = kept.iter().map(|(_, i)| sha256_file(i)).collect();

    // The bad-input table.
    let mut files: Vec<(String, Vec<u8>)> = pem_files(&d);
    let spki = files
        .iter()
        .find(|(n, _)| n == "key-spki.pem")
        .unwrap()
        .1
        .clone();
    files.push(("key-unreadable.pem".into(), spki));
    let cases = bad_inputs();
    let mut table = String::new();
    for c in &cases {
        let args = match (&c.args, &c.config) {
            (Some(a), _) => a.clone(),
            (None, Some(text)) => {
                let name = format!("in-{}.toml", c.id);
                files.push((name.clone(), text.clone()));
                format!("provision --config /scenario/{name}")
            }
            (None, None) => unreachable!(),
        };
        let user = if c.nobody { "nobody" } else { "root" };
        table += &format!("{}|{}|{user}|{}|{args}\n", c.id, c.want, c.needle);
    }
    // Valid keys of both formats are accepted (`plan` loads the key, writes nothing).
    for k in ["spki", "pkcs1"] {
        let name = format!("in-ok-{k}.toml");
        files.push((
            name.clone(),
            config(&format!(
                "[escrow]\npublic_key = \"/scenario/key-{k}.pem\"\n"
            )),
        ));
        table += &format!("ok-{k}|0|root|-|plan --config /scenario/{name}\n");
    }
    files.push(("cases.txt".into(), table.into_bytes()));
    files.push(("config.toml".into(), config("")));
    files.push(("ebs.toml".into(), b"[disks]\nmin_disks = 1\n".to_vec()));
    let layouts = "EPH-ROOT|0|skipping @: it is mounted at /mnt/root
EPH-MOUNTED|0|skipping @: it is mounted at /mnt/inuse
EPH-GPT|3|@ holds gpt
EPH-DOS|3|@ holds dos
EPH-EXT4|3|@ holds ext4
EPH-XFS|3|@ holds xfs
EPH-SWAP|3|@ holds swap
EPH-MD|3|@ holds linux_raid_member
EPH-LUKS|3|@ holds crypto_LUKS
EPH-LUKSLBL|3|@ holds crypto_LUKS (label \"ephemera\")
EPH-BLANK|3|ignoring @ (serial EPH-BLANK): its model \"QEMU NVMe Ctrl\" is not disks.model \"Amazon EC2 NVMe Instance Storage\"
";
    files.push(("layouts.txt".into(), layouts.as_bytes().to_vec()));

    let files_ref: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let mut disks = vec![(blank.clone(), "EPH-BLANK"), (md.clone(), "EPH-MD")];
    disks.extend(kept.iter().map(|(s, i)| ((*i).clone(), *s)));
    let log = boot(
        &d,
        Scenario {
            name: "boot",
            script: "faults-matrix.sh",
            files: files_ref,
            disks,
        },
    );

    let bad = result_line(&log, "BAD-INPUT-RESULT");
    assert_eq!(bad[0].1 as usize, cases.len() + 2, "every bad input ran");
    assert_eq!(bad[0].1, bad[1].1, "bad inputs rejected cleanly");
    let m = result_line(&log, "MATRIX-RESULT");
    assert_eq!(m[0].1, m[1].1, "layouts refused or skipped as expected");

    // On the host: every layout image is byte-identical.
    let mut identical = 0;
    for ((serial, img), sha) in kept.iter().zip(&before) {
        assert_eq!(
            &sha256_file(img),
            sha,
            "{serial}: {} was written",
            img.display()
        );
        identical += 1;
    }
    // The md superblock was made in the guest: compare with its hash there.
    let md_sha = log_value(&log, "MD-SHA256 ");
    assert_eq!(sha256_file(&md), md_sha, "EPH-MD was written");
    assert_eq!(log_value(&log, "MD-SHA256-AFTER "), md_sha);
    identical += 1;
    // EPH-BLANK under a model that does not match: it was provisioned by the
    // control run, so the guest checked that the model-mismatch run left no signature.
    figure("bad_inputs_tried", bad[0].1);
    figure("bad_inputs_clean", bad[1].1);
    figure("layouts_tried", m[0].1);
    figure("layouts_refused_or_skipped_with_message", m[1].1);
    figure("layout_images_byte_identical_on_host", identical);
}

// ---------------------------------------------------------------------------
// 1. Crash at every step, rollback at every step (ext4, then xfs), 4. concurrent
// runs: one boot.

#[test]
#[ignore = "boots a QEMU VM; run by `make faults`"]
fn crash_rollback_and_lock() {
    let d = dir("crash");
    let (other, disks) = three_blank_and_a_foreign(&d);
    let before = sha256_file(&other);
    let (_, pk) = keypair(&d);
    let base = "min_disks = 3\n[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n";
    let log = boot(
        &d,
        Scenario {
            name: "boot",
            script: "faults-crash.sh",
            files: vec![
                ("ext4.toml", fs_config("ext4", base)),
                ("xfs.toml", fs_config("xfs", base)),
                ("escrow.pub.pem", pk),
            ],
            disks,
        },
    );
    for fs in ["ext4", "xfs"] {
        let crash = result_line(&log, &format!("CRASH-RESULT-{fs}"));
        let rollback = result_line(&log, &format!("ROLLBACK-RESULT-{fs}"));
        assert_eq!(crash[0].1, 8, "{fs}");
        assert_eq!(crash[0].1, crash[1].1, "{fs}");
        assert_eq!(rollback[0].1, 7, "{fs}");
        assert_eq!(rollback[0].1, rollback[1].1, "{fs}");
        figure(&format!("crash_points_tried_{fs}"), crash[0].1);
        figure(&format!("crash_points_recovered_{fs}"), crash[1].1);
        figure(&format!("rollback_points_tried_{fs}"), rollback[0].1);
        figure(&format!("rollback_points_clean_{fs}"), rollback[1].1);
    }
    assert_eq!(
        sha256_file(&other),
        before,
        "EPH-OTHER, not a candidate, was written"
    );
}

/// A bind's node directory swapped for a symlink during its copy onto the
/// volume (faults-bind-swap.sh, security review finding 2): refused, rolled
/// back, nothing of the volume mounted at the stand-in root directory.
#[test]
#[ignore = "boots a QEMU VM; run by `make faults`"]
fn bind_swapped_during_copy_is_refused() {
    let d = dir("bind-swap");
    boot(
        &d,
        Scenario {
            name: "boot",
            script: "faults-bind-swap.sh",
            files: vec![(
                "config.toml",
                config("[[bind]]\npath = \"/srv/app/cache\"\n"),
            )],
            disks: vec![(image(&d, "a", 128 * MIB), "EPH-A")],
        },
    );
}

// ---------------------------------------------------------------------------
// 6. Key-leak scan.

/// One boot of `script` on two 64 MiB disks with escrow to a new key pair
/// and `extra` config (with its run-guest.sh `args`); returns the private
/// key, the disks and the serial log.
fn two_disks_with_escrow(
    d: &Path,
    script: &str,
    extra: &str,
    args: &[&str],
) -> (Vec<u8>, Vec<(PathBuf, &'static str)>, String) {
    let (sk, pk) = keypair(d);
    let disks: Vec<(PathBuf, &'static str)> = ["EPH-A", "EPH-B"]
        .iter()
        .map(|s| (image(d, s, 64 * MIB), *s))
        .collect();
    let log = boot_with(
        d,
        Scenario {
            name: "boot",
            script,
            files: vec![
                (
                    "config.toml",
                    config(&format!(
                        "[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n{extra}"
                    )),
                ),
                ("escrow.pub.pem", pk),
            ],
            disks: disks.clone(),
        },
        args,
    );
    (sk, disks, log)
}

#[test]
#[ignore = "boots a QEMU VM; run by `make faults`"]
fn key_leak_scan() {
    let d = dir("leak");
    // With [unlock] tpm2 (a swtpm): the binding runs during the sampled
    // run, and its part, with threshold 1, is the key itself, so the scan
    // below covers the pin's path too (the unlock file is in the dump).
    let tpm = d.join("tpm").display().to_string();
    let (sk, disks, log) = two_disks_with_escrow(
        &d,
        "faults-leak.sh",
        "[unlock]\ntpm2 = true\n",
        &["--tpm", &tpm],
    );
    // Learn the key as ops would: the console envelope and the private key.
    let envelope = between(
        &log,
        "-----BEGIN EPHEMERA ESCROW-----",
        "-----END EPHEMERA ESCROW-----",
    );
    let env: serde_json::Value = serde_json::from_str(envelope).unwrap();
    assert_eq!(
        env["luks_uuid"].as_str().unwrap(),
        log_value(&log, "LUKS-UUID ")
    );
    let ct = env["ciphertext"].as_str().unwrap().to_string();
    std::fs::write(d.join("ct.b64"), &ct).unwrap();
    let key = sh_out(&format!(
        "cd {} && base64 -d ct.b64 | openssl pkeyutl -decrypt -inkey escrow.key.pem \
         -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256",
        d.display()
    ));
    assert_eq!(key.len(), 64, "a 512-bit key");
    drop(sk);
    // The key is the volume's: the LUKS2 digest accepts it (cryptsetup checks
    // it without activating anything), so the search below looks for the right bytes.
    let first = log_value(&log, "FIRST-MEMBER-SERIAL ");
    let first_img = &disks.iter().find(|(_, s)| *s == first).unwrap().0;
    assert!(
        key_opens(first_img, &key),
        "the escrowed key does not open the volume"
    );

    // The guest's /run, /tmp, /var (with every process's cmdline and environ
    // sampled during the run) and dmesg.
    let dump_b64: String = between(&log, "EPHEMERA-DUMP-BEGIN", "EPHEMERA-DUMP-END")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    std::fs::write(d.join("dump.b64"), dump_b64).unwrap();
    sh(&format!(
        "cd {} && base64 -d dump.b64 | gunzip > dump.tar",
        d.display()
    ));
    let dump = std::fs::read(d.join("dump.tar")).unwrap();

    let forms = key_forms(&key);
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        (
            "serial log".into(),
            std::fs::read(d.join("boot.log")).unwrap(),
        ),
        (
            "/run /tmp /var, cmdlines, environs, dmesg".into(),
            dump.clone(),
        ),
    ];
    for (img, serial) in &disks {
        haystacks.push((format!("disk {serial}"), std::fs::read(img).unwrap()));
    }
    // The search works: it finds what must be there.
    assert!(
        find(&haystacks[0].1, ct.as_bytes()) >= 1,
        "envelope not in the log"
    );
    assert!(
        find(&dump, ct.as_bytes()) >= 1,
        "escrow.json not in the dump"
    );
    assert!(
        find(&dump, b"\"pin\": \"tpm2\"") >= 1,
        "the unlock file (tpm2 pin) not in the dump: the binding did not run"
    );
    assert!(
        find(&dump, b"EPHEMERA_FAILPOINT=after-luks-open") >= 1,
        "no environ sampled"
    );
    assert!(
        find(&dump, b"ephemera\0provision\0--config") >= 1,
        "no cmdline sampled"
    );
    assert!(find(&haystacks[2].1, b"LUKS\xba\xbe") + find(&haystacks[3].1, b"LUKS\xba\xbe") >= 1);

    let mut hits = 0;
    for (what, hay) in &haystacks {
        for (form, needle) in &forms {
            let n = find(hay, needle);
            if n > 0 {
                eprintln!("KEY LEAK: {n} hit(s) of the key ({form}) in {what}");
            }
            hits += n;
        }
    }
    figure("key_leak_places_searched", haystacks.len());
    figure("key_leak_forms_searched", forms.len());
    figure("key_leak_hits", hits);
    assert_eq!(hits, 0, "the volume key leaked");
}

/// Bytes of memory an ELF core carries: the file sizes of its PT_LOAD segments.
fn core_memory_bytes(core: &[u8]) -> u64 {
    assert_eq!(&core[..4], b"\x7fELF", "not an ELF core");
    let u16_at = |o: usize| u16::from_le_bytes(core[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(core[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32::from_le_bytes(core[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| u64_at(ph + 0x20))
        .sum()
}

#[test]
#[ignore = "boots a QEMU VM; run by `make faults`"]
fn crash_cores_hold_no_key() {
    let d = dir("cores");
    let (_sk, _disks, log) = two_disks_with_escrow(&d, "faults-core.sh", "", &[]);
    let b64: String = between(&log, "EPHEMERA-CORES-BEGIN", "EPHEMERA-CORES-END")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let out = d.join("cores");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(d.join("cores.b64"), b64).unwrap();
    sh(&format!(
        "cd {} && base64 -d cores.b64 | gunzip | tar -x -C cores",
        d.display()
    ));
    // The control's core carries its memory: the scan can see what is there.
    let control = std::fs::read(out.join("control.core")).unwrap();
    assert!(
        find(&control, b"EPH-CORE-CONTROL-1EPH-CORE-CONTROL-2") >= 1,
        "the control's marker is not in its core"
    );
    let points = [
        "after-lock",
        "after-wipe",
        "after-md-build",
        "after-luks-format",
        "after-luks-open",
        "after-escrow-write",
        "after-mkfs",
        "after-mount",
    ];
    // Every run crashed at its failpoint (the guest checks the exit status
    // and the last failpoint reached).
    let result = result_line(&log, "CORE-RESULT");
    assert_eq!(result[0], ("crashed".to_string(), 8), "{result:?}");
    // A core that reaches the pipe anyway (none should: PR_SET_DUMPABLE 0
    // stops the dump whatever fs.suid_dumpable says) must carry no process
    // memory, only the kernel's always-dumped vDSO and vvar pages (24 KiB on
    // Debian 12's kernel; a dumpable ephemera's core is about 6 MiB), and no
    // form of the key where the run escrowed it.
    let (mut cores, mut with_key, mut hits, mut memory) = (0, 0, 0, 0);
    for p in points {
        let Ok(core) = std::fs::read(out.join(format!("{p}.core"))) else {
            eprintln!("crash at {p}: no core");
            continue;
        };
        cores += 1;
        let mem = core_memory_bytes(&core);
        eprintln!("core at {p}: {} bytes, {mem} bytes of memory", core.len());
        memory += mem;
        let env_path = out.join(format!("{p}.escrow.json"));
        if let Ok(text) = std::fs::read_to_string(&env_path) {
            let env: serde_json::Value = serde_json::from_str(&text).unwrap();
            std::fs::write(d.join("ct.b64"), env["ciphertext"].as_str().unwrap()).unwrap();
            let key = sh_out(&format!(
                "cd {} && base64 -d ct.b64 | openssl pkeyutl -decrypt -inkey escrow.key.pem \
                 -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256",
                d.display()
            ));
            assert_eq!(key.len(), 64);
            with_key += 1;
            for (form, needle) in key_forms(&key) {
                let n = find(&core, &needle);
                if n > 0 {
                    eprintln!("KEY LEAK: {n} hit(s) of the key ({form}) in the core at {p}");
                }
                hits += n;
            }
        }
    }
    let control_mem = core_memory_bytes(&control);
    figure("core_crashes", points.len());
    figure("core_dumps_written", cores);
    figure("core_dumps_with_known_key", with_key);
    figure("core_key_forms_searched", key_forms(&[0u8; 64]).len());
    figure("core_key_hits", hits);
    figure("core_memory_bytes_total", memory);
    figure("control_core_memory_bytes", control_mem);
    assert!(
        control_mem > 64 * 1024,
        "the control's core carries {control_mem} bytes of memory"
    );
    assert_eq!(hits, 0, "the volume key is in a core dump");
    assert!(
        memory <= cores as u64 * 32 * 1024,
        "ephemera's cores carry {memory} bytes of memory (the control's: {control_mem})"
    );
}

// ---------------------------------------------------------------------------
// 2. Power loss, 3. a disk that disappears or fails: the host acts through
// the QEMU monitor when the guest's serial log shows a marker.

/// Runs `boot_raw` while a watcher waits for `marker` in the serial log and
/// then sends `command` to the QEMU monitor. Returns the exit status, the log,
/// and whether the command was sent.
fn boot_acting(
    d: &Path,
    s: Scenario<'_>,
    extra: &[&str],
    marker: &'static str,
    command: &'static str,
) -> (std::process::ExitStatus, String, bool) {
    let sock = d.join(format!("{}.monitor", s.name));
    let log = d.join(format!("{}.log", s.name));
    let _ = std::fs::remove_file(&log);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watcher = {
        let (sock, log) = (sock.clone(), log.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1200) {
                if rx.try_recv().is_ok() {
                    return false; // QEMU is gone
                }
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(marker) {
                    let mut m = std::os::unix::net::UnixStream::connect(&sock).unwrap();
                    writeln!(m, "{command}").unwrap();
                    m.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(500));
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    let mut args = vec!["--monitor", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (status, text, _) = boot_raw(d, s, &args);
    let _ = tx.send(());
    let sent = watcher.join().unwrap();
    (status, text, sent)
}

fn failed_checks(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("not ok - ")).collect()
}

#[test]
#[ignore = "boots QEMU VMs; run by `make faults`"]
fn power_loss() {
    let d = dir("power");
    // 2 x 512 MiB: above xfs's minimum on an array (512 MiB: mkfs.xfs makes
    // 8 allocation groups, each must hold the 64 MiB log) once the LUKS
    // header is off.
    let mut disks: Vec<(PathBuf, &str)> = ["EPH-A", "EPH-B"]
        .iter()
        .map(|s| (image(&d, s, 512 * MIB), *s))
        .collect();
    // The node's root disk, as far as ephemera writes it: /var/lib/ephemera
    // (envelopes and their markers) on ext4, kept across the cuts. Mounted,
    // so ephemera leaves it alone.
    let root = image(&d, "EPH-ROOT", 64 * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&root));
    disks.push((root, "EPH-ROOT"));
    // With escrow: a cut between the envelope and the first mount leaves a
    // volume that never held data, which the next boot must not keep.
    let (_, pk) = keypair(&d);
    let escrow = "min_disks = 2\n[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n";
    // Where the power is cut in boot N, and the filesystem of that run; the
    // last boot only checks. xfs is cut only where a filesystem exists (the
    // steps before mkfs do not depend on it).
    let points = [
        ("after-md-build", "ext4"),
        ("after-luks-format", "ext4"),
        ("after-mkfs", "ext4"),
        ("after-mount", "ext4"),
        ("after-mkfs", "xfs"),
        ("after-mount", "xfs"),
    ];
    let mut recovered = 0;
    for boot in 1..=points.len() + 1 {
        let (point, fs) = points.get(boot - 1).copied().unwrap_or(("none", "ext4"));
        // The run cut before this boot: this boot's provision uses its config.
        let cut_before = (boot > 1).then(|| points[boot - 2]);
        let before_fs = cut_before.map_or("ext4", |(_, fs)| fs);
        // The cut before this boot left ephemera's header if it came after
        // the format, and its envelope, marked never mounted, if it came
        // after the envelope.
        let expect_old = cut_before.is_some_and(|(p, _)| p != "after-md-build");
        let expect_never_mounted =
            cut_before.is_some_and(|(p, _)| !["after-md-build", "after-luks-format"].contains(&p));
        let name = format!("boot{boot}");
        let s = Scenario {
            name: &name,
            script: "faults-power.sh",
            files: vec![
                ("config.toml", fs_config(before_fs, escrow)),
                ("fs", before_fs.as_bytes().to_vec()),
                // The cut run replaces the volume this boot made (readable,
                // with its envelope), as on_existing = "reformat" does.
                (
                    "cut.toml",
                    [
                        b"on_existing = \"reformat\"\n".to_vec(),
                        fs_config(fs, escrow),
                    ]
                    .concat(),
                ),
                ("escrow.pub.pem", pk.clone()),
                (
                    "expect-never-mounted",
                    if expect_never_mounted {
                        b"yes".to_vec()
                    } else {
                        b"no".to_vec()
                    },
                ),
                ("point", point.as_bytes().to_vec()),
                ("boot", boot.to_string().into_bytes()),
                (
                    "expect-old",
                    if expect_old {
                        b"yes".to_vec()
                    } else {
                        b"no".to_vec()
                    },
                ),
            ],
            disks: disks.clone(),
        };
        let (status, log, cut) = if point == "none" {
            let (st, log, _) = boot_raw(&d, s, &[]);
            (st, log, false)
        } else {
            boot_acting(&d, s, &[], "EPHEMERA-FAILPOINT-HANG", "quit")
        };
        let failed = failed_checks(&log);
        assert!(failed.is_empty(), "boot {boot}: {failed:?}");
        if point == "none" {
            assert!(
                status.success() && log.contains(" failed=0"),
                "last boot: {status}"
            );
        } else {
            assert!(cut, "boot {boot}: the failpoint {point} was never reached");
            assert!(
                log.contains(&format!("EPHEMERA-FAILPOINT-HANG {point}")),
                "boot {boot}: hung elsewhere"
            );
        }
        if boot > 1 {
            assert!(
                log.contains(&format!("POWER-RECOVERED boot={boot}")),
                "boot {boot}"
            );
            recovered += 1;
        }
    }
    figure("power_cuts_tried", points.len());
    figure("power_cuts_recovered", recovered);
}

#[test]
#[ignore = "boots a QEMU VM; run by `make faults`"]
fn disk_disappears_or_fails() {
    let d = dir("disk");
    let (other, disks) = three_blank_and_a_foreign(&d);
    // The same size as the others: ephemera stripes only equal disks.
    let bad = image(&d, "bad", BLANK);
    let before_other = sha256_file(&other);
    let before_b = sha256_file(&disks[1].0);
    let faulty = format!("{}:EPH-BAD", bad.display());
    let (status, log, sent) = boot_acting(
        &d,
        Scenario {
            name: "boot",
            script: "faults-disk.sh",
            files: vec![("config.toml", config("min_disks = 2\n"))],
            disks: disks.clone(),
        },
        &["--faulty-disk", &faulty],
        "EPHEMERA-FAILPOINT after-md-build",
        "device_del nvme1",
    );
    assert!(sent, "the monitor command was never sent");
    let failed = failed_checks(&log);
    assert!(
        status.success() && failed.is_empty() && log.contains(" failed=0"),
        "guest exit {status}, failed checks {failed:?}"
    );
    assert_eq!(sha256_file(&other), before_other, "EPH-OTHER was written");
    assert_eq!(
        sha256_file(&disks[1].0),
        before_b,
        "the removed EPH-B was written"
    );
    for l in log.lines().filter(|l| l.starts_with("ERROR-LINE ")) {
        println!("{l}");
    }
    figure("disk_faults_tried", 2);
    figure("disk_faults_clean", 2);
}
