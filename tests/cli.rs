//! The command line as a script or an image build drives it, on this
//! machine: `plan --json` always prints JSON, `check` exits 0 or 2 with the
//! line provision would give. A model no disk here has keeps the disks out
//! of it (the refusal for too few disks is the point of one case).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn ephemera(dir: &Path, config: &str, args: &[&str]) -> Output {
    let p = dir.join("config.toml");
    std::fs::write(&p, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ephemera"))
        .arg("--config")
        .arg(&p)
        .args(args)
        .output()
        .unwrap()
}

const NO_DISK: &str = "[disks]\nmodel = \"no disk has this model\"\n";

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn plan_json_prints_json_when_it_refuses_too() {
    let t = tempfile::tempdir().unwrap();
    // `plan --json` with `config`: exits `code`, its body a refusal whose
    // reason says `why`.
    let refused = |config: &str, code: u64, why: &str| {
        let out = ephemera(t.path(), config, &["plan", "--json"]);
        assert_eq!(out.status.code(), Some(code as i32), "{config}");
        let v = json(&out);
        assert_eq!(
            (v["action"].as_str(), v["exit_code"].as_u64()),
            (Some("refuse"), Some(code))
        );
        assert!(
            v["reason"].as_str().unwrap().contains(why),
            "{v} should say {why}"
        );
    };
    // No disks: exit 3, the reason in the body.
    refused(
        NO_DISK,
        3,
        "found 0 usable disk(s) with model \"no disk has this model\"",
    );
    // A bad config: exit 2, the key named.
    refused(
        &format!("{NO_DISK}min_disks = \"2\"\n"),
        2,
        "disks.min_disks: invalid type",
    );
    // A key that is not there: refused as provision refuses it, before the disks.
    refused(
        &format!("{NO_DISK}min_disks = 0\n[escrow]\npublic_key = \"/nonexistent.pem\"\n"),
        2,
        "/nonexistent.pem: cannot read",
    );
    // Nothing to do: the plan, exit 0.
    let out = ephemera(
        t.path(),
        &format!("{NO_DISK}min_disks = 0\n"),
        &["plan", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["action"], "nothing_to_do");
}

#[test]
fn check_exits_0_or_2_with_the_line_provision_gives() {
    let t = tempfile::tempdir().unwrap();
    let out = ephemera(t.path(), NO_DISK, &["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("unlock: off") && stdout.ends_with(": good\n"),
        "{stdout}"
    );
    for (config, needle) in [
        (
            "[escrow]\nthreshold = 2\n",
            "ephemera: error: config escrow.threshold: 2 is set, but there is no escrow key",
        ),
        (
            "[escrow]\npublic_key = \"/nonexistent.pem\"\n",
            "ephemera: error: escrow public key /nonexistent.pem: cannot read",
        ),
        (
            "[mount]\npath = \"/var\"\n",
            "ephemera: error: config mount.path: /var: a mount there would hide /var/lib/dpkg",
        ),
    ] {
        let out = ephemera(t.path(), config, &["check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(needle), "{config}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.contains("error")).count(),
            1,
            "{stderr}"
        );
    }
}
