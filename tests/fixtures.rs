//! Fixture trees: sysfs and procfs as real EC2 instance types show them,
//! run through discovery and planning, compared with the expected plan.
//! Each case is a folder under tests/fixtures: `root/` (the tree, with
//! escrow envelopes under `root/var/lib/ephemera` where a case has some),
//! `probe.json` (what libblkid and an exclusive open would report per
//! disk, and on `ephemera`, the open mapping), `config.toml` (optional) and
//! `expected.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ephemera::config::Config;
use ephemera::decision::plan::plan;
use ephemera::decision::survey::survey;
use ephemera::error::Result;
use ephemera::host::probe::{Probe, Signature};
use ephemera::host::Host;

#[derive(Default, serde::Deserialize)]
struct FakeProbe {
    #[serde(default)]
    signatures: BTreeMap<String, Vec<Signature>>,
    #[serde(default)]
    busy: Vec<String>,
}

fn name(dev: &Path) -> String {
    dev.file_name().unwrap().to_string_lossy().into_owned()
}

impl Probe for FakeProbe {
    fn signatures(&self, dev: &Path) -> Result<Vec<Signature>> {
        Ok(self.signatures.get(&name(dev)).cloned().unwrap_or_default())
    }
    fn busy(&self, dev: &Path) -> Result<bool> {
        Ok(self.busy.contains(&name(dev)))
    }
}

fn run_case(dir: &Path) -> String {
    run_case_with(dir, false)
}

fn run_case_with(dir: &Path, force: bool) -> String {
    let cfg_path = dir.join("config.toml");
    let cfg = if cfg_path.exists() {
        Config::load(&cfg_path, true).unwrap()
    } else {
        Config::default()
    };
    cfg.validate().unwrap();
    plan_with(dir, &cfg, force)
}

fn plan_with(dir: &Path, cfg: &Config, force: bool) -> String {
    let probe: FakeProbe = match std::fs::read_to_string(dir.join("probe.json")) {
        Ok(t) => serde_json::from_str(&t).unwrap(),
        Err(_) => FakeProbe::default(),
    };
    let host = Host::new(dir.join("root"));
    let result = survey(&host, cfg, &probe).and_then(|f| plan(&f, cfg, force));
    match result {
        Ok(p) => p.describe(),
        Err(e) => format!("error (exit {}): {e}\n", e.exit_code()),
    }
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("root").is_dir())
            .collect();
    v.sort();
    v
}

#[test]
fn plans_match_expected() {
    let cases = cases();
    assert!(cases.len() >= 10, "fixture cases missing: {cases:?}");
    let mut failures = Vec::new();
    for dir in &cases {
        let got = run_case(dir);
        let expected_path = dir.join("expected.txt");
        if std::env::var_os("EPHEMERA_BLESS").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_root_disk_is_never_a_member() {
    for dir in cases() {
        for force in [false, true] {
            let out = run_case_with(&dir, force);
            assert!(!out.contains("/dev/nvme0n1 ("), "{}: {out}", dir.display());
        }
    }
    // Where the root disk is instance storage itself (the model filter keeps
    // it, and the probe reports nothing), the in-use logic alone skips it and
    // the free disk is used.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/instance-store-root");
    for force in [false, true] {
        let out = run_case_with(&dir, force);
        assert!(
            out.contains("skip /dev/nvme0n1: it is mounted at /"),
            "{out}"
        );
        assert!(
            out.contains("use the single disk /dev/nvme1n1 (AWS1A2B3C4D5E6F7A8B9"),
            "{out}"
        );
    }
}

#[test]
fn a_trailing_slash_in_mount_path_keeps_re_runs_a_no_op() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/already-provisioned");
    for path in ["/mnt/ephemeral/", "/mnt//ephemeral", "/mnt/./ephemeral/"] {
        let cfg = Config::parse(
            &format!("[mount]\npath = \"{path}\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(plan_with(&dir, &cfg, false), run_case(&dir), "{path}");
    }
}

#[test]
fn force_overwrites_foreign_disks_but_not_disks_in_use() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = run_case_with(&fixtures.join("foreign-signature"), true);
    assert!(
        out.contains(
            "warning: /dev/nvme2n1 holds ext4 (label \"data\"): overwriting it because of --force"
        ),
        "{out}"
    );
    assert!(
        out.contains("erase the old signatures on /dev/nvme2n1"),
        "{out}"
    );
    assert!(
        out.contains("build RAID0 /dev/md_ephemera over /dev/nvme1n1"),
        "{out}"
    );
    // --force never reaches a disk that is in use.
    let out = run_case_with(&fixtures.join("in-use"), true);
    assert_eq!(out, run_case(&fixtures.join("in-use")));
    assert!(out.contains("use the single disk /dev/nvme5n1"), "{out}");
}

/// Every state of the volume (`plan::Volume`) has a fixture case, so each
/// state's action is pinned by an expected plan.
#[test]
fn every_volume_state_has_a_case() {
    let mut seen = std::collections::BTreeSet::new();
    for dir in cases() {
        let probe: FakeProbe = std::fs::read_to_string(dir.join("probe.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or_default();
        let cfg = match std::fs::read_to_string(dir.join("config.toml")) {
            Ok(t) => Config::parse(&t, &dir).unwrap(),
            Err(_) => Config::default(),
        };
        let host = Host::new(dir.join("root"));
        let facts = survey(&host, &cfg, &probe).unwrap();
        let v = serde_json::to_value(ephemera::decision::plan::volume(&facts, &cfg)).unwrap();
        seen.insert(v["state"].as_str().unwrap().to_string());
    }
    let all = [
        "absent",
        "mounted",
        "mounted_elsewhere",
        "unmounted",
        "unfinished",
        "earlier",
    ];
    let missing: Vec<&str> = all.into_iter().filter(|s| !seen.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "no fixture for {missing:?}; seen {seen:?}"
    );
}
