//! The lifecycle table (`ephemera::decision::lifecycle::TABLE`) as the
//! specification of every combination (issue 25): for each class of
//! configuration users write (escrow none, one key or 2 of 3; unlock none,
//! tpm2, tang, kms, 2 of tpm2 + tang or 2 of tpm2 + kms; `on_existing` keep,
//! reformat or fail; binds or none; ext4 or xfs) and each state a node can be
//! in at boot, a
//! node is built as a fixture tree: sysfs and procfs as the kernel shows
//! them, what libblkid would read on each disk, and the node's records
//! (envelopes, unlock files, markers) written by the code provision uses,
//! step by step. Then:
//! - `plan` gives the row's action, with the class's filesystem and binds;
//! - `status` says the same action, and the state an operator expects;
//! - on the node after its first provision, the events watcher's claim for a
//!   reboot (`reboot_keeps_data`), and `status`'s, agree with the plan the
//!   rebooted node's tree gets, and with the table's reboot row;
//! - every state has a row for every class, and every row is used;
//! - README's lifecycle table is the table, rendered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use ephemera::commands::{provision, status};
use ephemera::config::{Config, FsType, OnExisting};
use ephemera::decision::lifecycle::{self, Action, Class, Data, Escrow, Pins, State, Step};
use ephemera::decision::plan::{plan, Plan, ProvisionPlan};
use ephemera::decision::reboot::Reboot;
use ephemera::decision::survey::survey;
use ephemera::error::Result;
use ephemera::host::discover::discover;
use ephemera::host::probe::{Probe, Signature};
use ephemera::host::Host;
use ephemera::keys::key::VolumeKey;
use ephemera::keys::{escrow, pins as unlock_pins, unlock};
use ephemera::node::events::reboot_keeps_data;
use rsa::RsaPublicKey;

const EBS: &str = "Amazon Elastic Block Store";
const STORE: &str = "Amazon EC2 NVMe Instance Storage";
const SIZE: u64 = 1900 * 1_000_000_000;
/// The volume of the first provision.
const UUID: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";
const A: &str = "AWSAAAAAAAAAAAAAAAA";
const B: &str = "AWSBBBBBBBBBBBBBBBB";
const MOUNT: &str = "/mnt/ephemeral";
const ESCROW_PATH: &str = "/var/lib/ephemera/escrow.json";
const KMS_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const BINDS: [(&str, &str); 2] = [
    ("/var/lib/containerd", "/var/lib/containerd"),
    ("/var/log/pods", "/pod-logs"),
];

/// The config a user writes for the class.
fn config_text(c: &Class) -> String {
    let mut s = format!("on_existing = \"{}\"\n", c.on_existing.name());
    s += &format!("[filesystem]\ntype = \"{}\"\n", c.fs.name());
    let keys = match c.escrow {
        Escrow::None => 0,
        Escrow::One => 1,
        Escrow::TwoOfThree => 3,
    };
    if keys > 0 {
        let list: Vec<String> = (1..=keys)
            .map(|i| format!("\"/etc/ephemera/escrow-{i}.pub.pem\""))
            .collect();
        s += &format!(
            "[escrow]\npublic_keys = [{}]\nthreshold = {}\n",
            list.join(", "),
            if keys == 3 { 2 } else { 1 }
        );
    }
    let tang = "[[unlock.tang]]\nurl = \"http://tang.internal:7500\"\nthp = \"Dl6hnE3gq1Mu5tdCTzGaFk0yDgpMrNrl2NI39QmzNmE\"\n";
    let kms = format!("kms = {{ key_id = \"{KMS_KEY}\" }}\n");
    s += match c.pins {
        Pins::None => String::new(),
        Pins::Tpm2 => "[unlock]\ntpm2 = true\n".into(),
        Pins::Tang => format!("[unlock]\n{tang}"),
        Pins::Kms => format!("[unlock]\n{kms}"),
        Pins::Tpm2AndTang => format!("[unlock]\ntpm2 = true\nthreshold = 2\n{tang}"),
        Pins::KmsAndTpm2 => format!("[unlock]\ntpm2 = true\nthreshold = 2\n{kms}"),
    }
    .as_str();
    if c.binds {
        s += "[[bind]]\npath = \"/var/lib/containerd\"\n\n[[bind]]\npath = \"/var/log/pods\"\nsubdir = \"pod-logs\"\n";
    }
    s
}

fn config(c: &Class) -> Config {
    let cfg = Config::parse(&config_text(c), Path::new("lifecycle.toml"))
        .unwrap_or_else(|e| panic!("{c:?}: {e}\n{}", config_text(c)));
    cfg.validate()
        .unwrap_or_else(|e| panic!("{c:?}: {e}\n{}", config_text(c)));
    cfg
}

/// What libblkid reads: per disk, and on `ephemera` (the open mapping).
#[derive(Default, Clone)]
struct FakeProbe(BTreeMap<String, Vec<Signature>>);

impl Probe for FakeProbe {
    fn signatures(&self, dev: &Path) -> Result<Vec<Signature>> {
        let name = dev.file_name().unwrap().to_string_lossy();
        Ok(self.0.get(name.as_ref()).cloned().unwrap_or_default())
    }
    fn busy(&self, _: &Path) -> Result<bool> {
        Ok(false)
    }
}

fn sig(kind: &str, label: &str, subsystem: Option<&str>, uuid: Option<&str>) -> Signature {
    Signature {
        kind: kind.into(),
        label: Some(label.into()),
        subsystem: subsystem.map(Into::into),
        uuid: uuid.map(Into::into),
    }
}

/// ephemera's LUKS2 header of the first provision's volume.
fn header() -> Vec<Signature> {
    vec![sig("crypto_LUKS", "ephemera", Some("ephemera"), Some(UUID))]
}

#[derive(Clone)]
struct Disk {
    serial: &'static str,
    content: Vec<Signature>,
}

fn blank(serial: &'static str) -> Disk {
    Disk {
        serial,
        content: Vec::new(),
    }
}

/// This boot's volume, open: RAID0 over the first two disks, mapped.
struct Open {
    mounted_at: Option<&'static str>,
    /// What the mapping holds: its file system, or nothing (before mkfs).
    fs: Option<FsType>,
    /// The binds of `[[bind]]`, mounted.
    binds: bool,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes sysfs and procfs for an EBS root disk, `disks` (nvme1n1 on), and
/// the open volume if any, as the kernel shows them (tests/fixtures'
/// make-fixtures.py writes the committed trees the same way).
fn kernel(root: &Path, disks: &[Disk], open: Option<&Open>) -> FakeProbe {
    let mut probe = FakeProbe::default();
    let block = root.join("sys/block");
    let disk = |i: usize, model: &str, serial: &str, holders: &[&str]| {
        let base = block.join(format!("nvme{i}n1"));
        write(&base.join("dev"), &format!("259:{}\n", i * 16));
        write(&base.join("size"), &format!("{}\n", SIZE / 512));
        write(&base.join("ro"), "0\n");
        write(&base.join("device/model"), &format!("{model:<40}\n"));
        write(&base.join("device/serial"), &format!("{serial:<20}\n"));
        std::fs::create_dir_all(base.join("holders")).unwrap();
        for h in holders {
            write(&base.join("holders").join(h), "");
        }
    };
    disk(0, EBS, "vol0a1b2c3d4e5f60718", &[]);
    for p in [1, 15] {
        let part = block.join(format!("nvme0n1/nvme0n1p{p}"));
        write(&part.join("partition"), &format!("{p}\n"));
        write(&part.join("dev"), &format!("259:{p}\n"));
    }
    let mut mounts = vec![
        "22 1 0:21 / /proc rw,nosuid - proc proc rw".to_string(),
        "30 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw".to_string(),
        "31 1 259:15 / /boot/efi rw,relatime shared:1 - vfat /dev/nvme0n1p15 rw".to_string(),
    ];
    for (i, d) in disks.iter().enumerate() {
        let holders: &[&str] = if open.is_some() && i < 2 {
            &["md_ephemera"]
        } else {
            &[]
        };
        disk(i + 1, STORE, d.serial, holders);
        probe
            .0
            .insert(format!("nvme{}n1", i + 1), d.content.clone());
    }
    if let Some(o) = open {
        let md = block.join("md_ephemera");
        write(&md.join("dev"), "9:512\n");
        write(&md.join("md/chunk_size"), "262144\n");
        write(&md.join("md/level"), "raid0\n");
        for (i, m) in ["nvme1n1", "nvme2n1"].iter().enumerate() {
            std::fs::create_dir_all(md.join(format!("md/dev-{m}"))).unwrap();
            std::os::unix::fs::symlink(format!("dev-{m}"), md.join(format!("md/rd{i}"))).unwrap();
            write(&md.join("slaves").join(m), "");
        }
        write(&md.join("holders/dm-0"), "");
        let dm = block.join("dm-0");
        write(&dm.join("dev"), "253:0\n");
        write(&dm.join("dm/name"), "ephemera\n");
        write(
            &dm.join("dm/uuid"),
            &format!("CRYPT-LUKS2-{}-ephemera\n", UUID.replace('-', "")),
        );
        write(&dm.join("slaves/md_ephemera"), "");
        let fs = o.fs.map(FsType::name).unwrap_or("ext4");
        if let Some(at) = o.mounted_at {
            mounts.push(format!(
                "40 1 253:0 / {at} rw,noatime shared:2 - {fs} /dev/mapper/ephemera rw"
            ));
            if o.binds {
                for (i, (path, subdir)) in BINDS.iter().enumerate() {
                    mounts.push(format!(
                        "{} 1 253:0 {subdir} {path} rw,noatime shared:2 - {fs} /dev/mapper/ephemera rw",
                        41 + i
                    ));
                }
            }
        }
        if let Some(f) = o.fs {
            probe.0.insert(
                "ephemera".into(),
                vec![sig(
                    f.name(),
                    "ephemeral",
                    None,
                    Some("11112222-3333-4444-5555-666677778888"),
                )],
            );
        }
    }
    write(
        &root.join("proc/self/mountinfo"),
        &(mounts.join("\n") + "\n"),
    );
    write(
        &root.join("proc/swaps"),
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    );
    probe
}

/// The escrow recipients: three RSA keys, made once.
fn recipients() -> &'static [RsaPublicKey] {
    static KEYS: OnceLock<Vec<RsaPublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::thread_rng();
        (0..3)
            .map(|_| {
                rsa::RsaPrivateKey::new(&mut rng, 2048)
                    .unwrap()
                    .to_public_key()
            })
            .collect()
    })
}

/// The slots of a version 2 unlock file for the class's pins, as
/// `pins::seal` writes them, well formed (planning reads which volume a file
/// is for and that it parses, never its sealed parts).
fn slots(pins: Pins) -> Vec<unlock_pins::Slot> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let tpm2 = unlock_pins::Slot::Tpm2(unlock_pins::tpm2::Slot {
        pcr_bank: "sha256".into(),
        pcrs: "7".into(),
        public: b64(&[1; 96]),
        private: b64(&[2; 160]),
    });
    let tang = unlock_pins::Slot::Tang(unlock_pins::tang::Slot {
        url: "http://tang.internal:7500".into(),
        clevis: tang_token(),
    });
    let mut context = serde_json::Map::new();
    context.insert(
        "instance".into(),
        "arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0".into(),
    );
    context.insert("volume".into(), UUID.into());
    let kms = unlock_pins::Slot::Kms(unlock_pins::kms::Slot {
        key_id: KMS_KEY.into(),
        region: "us-east-1".into(),
        endpoint: None,
        ca_file: None,
        context,
        ciphertext: b64(&[3; 184]),
    });
    match pins {
        Pins::None => Vec::new(),
        Pins::Tpm2 => vec![tpm2],
        Pins::Tang => vec![tang],
        Pins::Kms => vec![kms],
        Pins::Tpm2AndTang => vec![tpm2, tang],
        Pins::KmsAndTpm2 => vec![tpm2, kms],
    }
}

/// A clevis tang token, well formed, for a tang slot.
fn tang_token() -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let clevis = serde_json::json!({"pin": "tang", "tang": {"url": "http://tang.internal:7500"}});
    format!(
        "{}..aXY.Y3Q.dGFn",
        b64(serde_json::json!({"alg": "ECDH-ES", "enc": "A256GCM", "clevis": clevis}))
    )
}

/// How far the first provision got: the node's records after `upto`
/// (`None`: all the way, mounted).
fn records(host: &Host, c: &Class, p: &ProvisionPlan, upto: Option<Step>) {
    let before = |s: Step| upto.is_some_and(|u| (u as u8) < (s as u8));
    if before(Step::AfterRecord) {
        return;
    }
    provision::record_started(host, p, UUID).unwrap();
    let h = provision::volume_header(host, p, UUID);
    if let Some(e) = &p.escrow {
        let key = VolumeKey::generate(512).unwrap();
        let to = &recipients()[..e.public_keys.len()];
        let env = escrow::seal(&key, to, e.threshold, h.clone()).unwrap();
        escrow::store(host, &env, &e.path).unwrap();
    }
    if let Some(u) = &p.unlock {
        // A version 2 file, as provision writes it now; a version 1 file
        // (clevis's token, from the release before) plans alike.
        let slots = slots(c.pins);
        let sealed = unlock::Sealed {
            version: 2,
            created: "2026-12-01T00:00:00Z".into(),
            host: h.host.clone(),
            luks_uuid: UUID.into(),
            cipher: h.cipher.clone(),
            key_bits: p.luks.key_bits,
            sector_size: h.sector_size,
            members: h.members.clone(),
            raid: h.raid.clone(),
            pins: unlock_pins::describe(u.pins.threshold, &slots),
            clevis: None,
            threshold: Some(u.pins.threshold),
            slots,
        };
        unlock::store(host, &sealed, &u.escrow_path).unwrap();
    }
    if upto.is_some() {
        return;
    }
    provision::record_mounted(host, p, UUID).unwrap();
}

/// The records of the first provision up to `upto`, copied into `root`:
/// written once per escrow, pins and phase by [`records`] (every write is
/// fsync'ed), then copied.
fn copy_records(c: &Class, p: &ProvisionPlan, upto: Option<Step>, root: &Path) {
    type Key = (String, u8);
    static MADE: OnceLock<Mutex<BTreeMap<Key, tempfile::TempDir>>> = OnceLock::new();
    let phase = match upto {
        None => 2,
        Some(s) if (s as u8) >= (Step::AfterRecord as u8) => 1,
        Some(_) => 0,
    };
    let key = (format!("{:?}-{:?}", c.escrow, c.pins), phase);
    let mut made = MADE.get_or_init(Default::default).lock().unwrap();
    let template = made.entry(key).or_insert_with(|| {
        let t = tmpdir();
        records(&Host::new(t.path()), c, p, upto);
        t
    });
    copy_tree(template.path(), root);
}

fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            let mode = e.metadata().unwrap().permissions().mode();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A node in `state`, for class `c`: its host root, its probe. Built once
/// for the classes whose nodes are the same: `on_existing` is only in the
/// config; the filesystem and binds show only in an open volume.
fn node(dir: &Path, c: &Class, state: State) -> (Host, FakeProbe) {
    static BUILT: OnceLock<Mutex<BTreeMap<PathBuf, FakeProbe>>> = OnceLock::new();
    let open = matches!(
        state,
        State::Rerun | State::Unmounted | State::MountedElsewhere | State::OpenUnfinished
    );
    let name = match open {
        true => format!(
            "{:?}-{:?}-{:?}-{}-{state:?}",
            c.escrow, c.pins, c.fs, c.binds
        ),
        false => format!("{:?}-{:?}-{state:?}", c.escrow, c.pins),
    };
    let root = dir.join(name.replace([' ', '(', ')'], ""));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(probe) = built.get(&root) {
        return (Host::new(&root), probe.clone());
    }
    let (host, probe) = build_node(&root, c, state);
    built.insert(root, probe.clone());
    (host, probe)
}

fn build_node(root: &Path, c: &Class, state: State) -> (Host, FakeProbe) {
    let host = Host::new(root);
    let cfg = config(c);
    // The first provision's plan, on blank disks: its records are what
    // the steps below write, as provision writes them.
    let first = kernel(root, &[blank(A), blank(B)], None);
    let p = match plan(&survey(&host, &cfg, &first).unwrap(), &cfg, false) {
        Ok(Plan::Provision(p)) => p,
        other => panic!("{c:?}: first boot planned {other:?}"),
    };
    std::fs::remove_dir_all(root.join("sys")).unwrap();
    std::fs::remove_dir_all(root.join("proc")).unwrap();
    let ours = || Disk {
        serial: A,
        content: header(),
    };
    let open = |mounted_at, fs| Open {
        mounted_at,
        fs,
        binds: c.binds,
    };
    let (disks, kernel_open, upto) = match state {
        State::FirstBoot => (vec![blank(A), blank(B)], None, Some(Step::AfterWipe)),
        State::Rerun => (
            vec![ours(), blank(B)],
            Some(open(Some(MOUNT), Some(c.fs))),
            None,
        ),
        State::Unmounted => (vec![ours(), blank(B)], Some(open(None, Some(c.fs))), None),
        State::MountedElsewhere => (
            vec![ours(), blank(B)],
            Some(open(Some("/srv/elsewhere"), Some(c.fs))),
            None,
        ),
        State::OpenUnfinished => (
            vec![ours(), blank(B)],
            Some(open(None, None)),
            Some(Step::AfterRecord),
        ),
        State::Reboot | State::RebootPinsDown | State::Discarded => {
            let first = if state == State::Discarded {
                blank(A)
            } else {
                ours()
            };
            (vec![first, blank(B)], None, None)
        }
        State::StopStart => (
            vec![blank("AWSCCCCCCCCCCCCCCCC"), blank("AWSDDDDDDDDDDDDDDDD")],
            None,
            None,
        ),
        State::HeaderDiskMissing | State::DiscardedMissing => (vec![blank(B)], None, None),
        State::OtherMemberMissing => (vec![ours()], None, None),
        State::ForeignDiskAdded => (
            vec![
                ours(),
                blank(B),
                Disk {
                    serial: "AWSEEEEEEEEEEEEEEEE",
                    content: vec![sig(
                        "ext4",
                        "data",
                        None,
                        Some("aaaa0000-1111-2222-3333-444455556666"),
                    )],
                },
            ],
            None,
            None,
        ),
        State::PowerCut(s) => {
            let disks = if (s as u8) < (Step::AfterLuksFormat as u8) {
                vec![blank(A), blank(B)]
            } else {
                vec![ours(), blank(B)]
            };
            (disks, None, Some(s))
        }
    };
    copy_records(c, &p, upto, root);
    if state == State::DiscardedMissing && c.record() {
        // What `ephemera discard` leaves for a kept volume whose header's
        // disk is missing (commands::erase).
        escrow::set_marker(&host, Path::new(ESCROW_PATH), UUID, escrow::DISCARDED).unwrap();
    }
    let probe = kernel(root, &disks, kernel_open.as_ref());
    (host, probe)
}

/// `status --json`'s `.state` an operator expects for the node.
fn status_state(c: &Class, state: State) -> &'static str {
    match state {
        State::Rerun => "provisioned",
        State::Unmounted => "unmounted",
        State::MountedElsewhere => "mounted_elsewhere",
        State::OpenUnfinished => "unfinished",
        State::Reboot
        | State::RebootPinsDown
        | State::OtherMemberMissing
        | State::ForeignDiskAdded => "earlier",
        State::PowerCut(s) if (s as u8) >= (Step::AfterLuksFormat as u8) => "earlier",
        // Its record waits for the header's disk.
        State::HeaderDiskMissing if c.record() => "earlier",
        _ => "absent",
    }
}

fn tmpdir() -> tempfile::TempDir {
    // Below the target directory, which root alone can change: the
    // records are written as provision writes them (safe_fs refuses a
    // directory others can write, as a shared /tmp is).
    tempfile::TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn every_state_of_every_class_follows_the_table() {
    let dir = tmpdir();
    let mut used = vec![0usize; lifecycle::TABLE.len()];
    let mut failures = Vec::new();
    let classes = Class::all();
    let states = State::all();
    assert_eq!(classes.len(), 216);
    for c in &classes {
        let cfg = config(c);
        for &state in &states {
            let row = lifecycle::expected(c, state)
                .unwrap_or_else(|| panic!("no row for {state:?} with {c:?}"));
            used[lifecycle::TABLE
                .iter()
                .position(|r| std::ptr::eq(r, row))
                .unwrap()] += 1;
            let (host, probe) = node(dir.path(), c, state);
            let got = survey(&host, &cfg, &probe).and_then(|f| plan(&f, &cfg, false));
            let mut fail = |what: String| failures.push(format!("{state:?} {c:?}: {what}"));
            match (&got, row.action) {
                (Err(e), Action::Refuse) if e.exit_code() == 3 => {}
                (Ok(p), want) if p.action() == want => check_details(p, c, &mut fail),
                (got, want) => fail(format!("plan {got:?}, the table says {want:?}")),
            }
            let s = status::status(&host, &cfg, &probe).unwrap();
            if s.action != row.action.name() {
                fail(format!(
                    "status says {}, the table {:?}",
                    s.action, row.action
                ));
            }
            if s.state != status_state(c, state) {
                fail(format!("status state {}", s.state));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let unused: Vec<&str> = lifecycle::TABLE
        .iter()
        .zip(&used)
        .filter(|(_, n)| **n == 0)
        .map(|(r, _)| r.label)
        .collect();
    assert!(unused.is_empty(), "rows no combination reaches: {unused:?}");
}

/// What the plan does with the class's filesystem and binds.
fn check_details(p: &Plan, c: &Class, fail: &mut dyn FnMut(String)) {
    let n = if c.binds { BINDS.len() } else { 0 };
    match p {
        Plan::Provision(p) => {
            if p.mkfs.fstype != c.fs || p.binds.len() != n {
                fail(format!(
                    "made {:?} with {} binds",
                    p.mkfs.fstype,
                    p.binds.len()
                ));
            }
            if p.record.is_some() != c.record() {
                fail(format!("record {:?}", p.record));
            }
        }
        Plan::Remount { mount, binds, .. } => {
            if mount.fstype != c.fs || binds.len() != n {
                fail(format!(
                    "remounts {:?} with {} binds",
                    mount.fstype,
                    binds.len()
                ));
            }
        }
        Plan::Unlock { binds, .. } | Plan::AlreadyProvisioned { binds, .. } => {
            if binds.len() != n {
                fail(format!("{} binds", binds.len()));
            }
        }
        Plan::Keep { .. } | Plan::NothingToDo { .. } => {}
    }
}

/// On the node after its first provision, what the events watcher and
/// `status` say a reboot does is what the rebooted node's tree plans, and
/// what the table's reboot row says.
#[test]
fn the_reboot_claim_is_the_next_boots_plan() {
    let dir = tmpdir();
    let mut failures = Vec::new();
    for c in Class::all() {
        let cfg = config(&c);
        let (host, probe) = node(dir.path(), &c, State::Rerun);
        let claim = reboot_keeps_data(&host, &discover(&host), &cfg);
        let (next, next_probe) = node(dir.path(), &c, State::Reboot);
        let next_plan = survey(&next, &cfg, &next_probe).and_then(|f| plan(&f, &cfg, false));
        let unlocks = matches!(next_plan, Ok(Plan::Unlock { .. }));
        let row = lifecycle::expected(&c, State::Reboot).unwrap();
        let s = status::status(&host, &cfg, &probe).unwrap();
        let status_says = match row.data {
            Data::Mounted => Reboot::Unlocks,
            Data::KeptForOps => Reboot::KeptForOps,
            _ => Reboot::Lost,
        };
        if claim != unlocks || claim != lifecycle::reboot_keeps_data(&c) || s.reboot != status_says
        {
            failures.push(format!(
                "{c:?}: the watcher says kept {claim}, the next boot plans {:?}, the table says {:?}, status {:?}",
                next_plan.map(|p| p.action()),
                row.action,
                s.reboot
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const BEGIN: &str = "<!-- lifecycle table: src/decision/lifecycle.rs rendered; tests/lifecycle.rs checks it (EPHEMERA_BLESS=1 rewrites it) -->\n";
const END: &str = "<!-- end of the lifecycle table -->\n";

/// README's lifecycle table is the table in code, rendered.
#[test]
fn the_readme_table_is_the_table_in_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        panic!("README.md has no lifecycle table between {BEGIN:?} and {END:?}");
    };
    let want = lifecycle::markdown();
    let got = &text[a + BEGIN.len()..b];
    if got != want && std::env::var_os("EPHEMERA_BLESS").is_some() {
        let new = format!("{}{want}{}", &text[..a + BEGIN.len()], &text[b..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        got, want,
        "README.md's lifecycle table differs from src/decision/lifecycle.rs (EPHEMERA_BLESS=1 cargo test --test lifecycle rewrites it)"
    );
}

/// The classes cover what the issue asks, and on_existing's three values.
#[test]
fn the_classes_are_every_combination() {
    let all = Class::all();
    for c in &all {
        assert_eq!(all.iter().filter(|d| *d == c).count(), 1);
    }
    assert!(all.iter().any(|c| c.on_existing == OnExisting::Fail
        && c.pins == Pins::Tpm2AndTang
        && c.escrow == Escrow::TwoOfThree
        && c.binds
        && c.fs == FsType::Xfs));
}

/// Every test a row names is there: `vm NAME` in tests/vm.rs, `faults
/// NAME` in tests/faults.rs, `system NAME` in tests/system.rs, `kms NAME` in
/// tests/kms.rs (a name
/// ending in `...` is a prefix), `fixture NAME` under tests/fixtures.
#[test]
fn every_test_the_table_names_exists() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = |f: &str| std::fs::read_to_string(here.join("tests").join(f)).unwrap();
    let suites = [
        ("vm", source("vm.rs")),
        ("faults", source("faults.rs")),
        ("system", source("system.rs")),
        ("kms", source("kms.rs")),
    ];
    let mut missing = Vec::new();
    for r in lifecycle::TABLE {
        // "vm `a` (...); system `b`, `c`": each name after its suite's word.
        let mut suite = "";
        for (i, part) in r.shown_by.split('`').enumerate() {
            if i % 2 == 0 {
                for word in part.split(|c: char| !c.is_ascii_alphanumeric()) {
                    if ["vm", "faults", "system", "fixture", "kms"].contains(&word) {
                        suite = word;
                    }
                }
                continue;
            }
            let found = match suite {
                "fixture" => here.join("tests/fixtures").join(part).is_dir(),
                _ => suites.iter().any(|(s, text)| {
                    *s == suite
                        && match part.strip_suffix("...") {
                            Some(prefix) => text.contains(&format!("fn {prefix}")),
                            None => text.contains(&format!("fn {part}()")),
                        }
                }),
            };
            if !found {
                missing.push(format!("{suite} `{part}` (row {:?})", r.label));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:?}");
}
