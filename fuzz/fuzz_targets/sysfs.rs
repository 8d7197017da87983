//! sysfs and procfs parsing: mountinfo, /proc/swaps, kernel-name ordering,
//! and discovery + planning over a small fake /sys and /proc tree whose
//! attribute files hold the fuzzer's bytes. Never panics.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ephemera::config::Config;
use ephemera::decision::plan::{self, Candidate, Facts};
use ephemera::host::discover::{self, natural_key, parse_mountinfo, parse_swaps};
use ephemera::host::probe::{Content, Signature};
use ephemera::host::Host;
use ephemera::keys::escrow;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static PathBuf {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("ephemera-fuzz-sysfs-{}", std::process::id()))
    })
}

fn write(rel: &str, content: &str) {
    let p = root().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_mountinfo(&text);
    let _ = parse_swaps(&text);
    let _ = natural_key(&text);

    // Fields separated by '|': model, serial, size, ro, dev, mountinfo,
    // swaps, md chunk_size, md level, dm name, the first disk's ephemera
    // LUKS UUID, a signature on the open mapping, an envelope's UUID, its
    // members, created, never mounted, discarded; an unlock file's UUID,
    // created, and [unlock] tpm2 on or off.
    let f: Vec<&str> = text.split('|').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let _ = std::fs::remove_dir_all(root());
    for n in ["nvme0n1", "nvme1n1"] {
        let d = format!("sys/block/{n}");
        write(&format!("{d}/device/model"), get(0));
        write(&format!("{d}/device/serial"), get(1));
        write(&format!("{d}/size"), get(2));
        write(&format!("{d}/ro"), get(3));
        write(&format!("{d}/dev"), get(4));
        write(&format!("{d}/{n}p1/partition"), "1");
        write(&format!("{d}/{n}p1/dev"), get(4));
        std::fs::create_dir_all(root().join(format!("{d}/holders"))).unwrap();
    }
    write("proc/self/mountinfo", get(5));
    write("proc/swaps", get(6));
    write("sys/block/md_ephemera/md/chunk_size", get(7));
    write("sys/block/md_ephemera/md/level", get(8));
    write("sys/block/dm-0/dm/name", get(9));
    write("sys/block/dm-0/dev", get(4));

    let host = Host::new(root());
    let inv = discover::discover(&host);
    let mut cfg = Config::default();
    cfg.disks.model = get(0).trim().to_string();
    if cfg.disks.model.is_empty() {
        cfg.disks.model = "m".into();
    }
    let candidates: Vec<Candidate> = inv
        .nvme
        .iter()
        .enumerate()
        .map(|(i, d)| Candidate {
            disk: d.clone(),
            content: if i == 0 && !get(10).is_empty() {
                Content::Ephemera {
                    luks_uuid: get(10).into(),
                }
            } else {
                Content::Blank
            },
            busy: false,
        })
        .collect();
    let facts = Facts {
        inv,
        candidates,
        mapping: (!get(11).is_empty()).then(|| {
            vec![Signature {
                kind: get(11).into(),
                ..Signature::default()
            }]
        }),
        // An envelope on the node: its members drawn from the input (the
        // disks' serial, or others), so the missing-disk rules are reached.
        envelopes: vec![escrow::OnNode {
            luks_uuid: get(12).into(),
            path: PathBuf::from("/e.json"),
            members: get(13).split(',').map(String::from).collect(),
            created: get(14).into(),
            never_mounted: get(15).len() % 2 == 1,
            discarded: get(16).len() % 2 == 1,
        }],
        // An unlock file for the volume named by the input, with the same
        // members: the unlock and keep rules are reached.
        sealed: (!get(17).is_empty())
            .then(|| escrow::OnNode {
                luks_uuid: get(17).into(),
                path: PathBuf::from("/e.unlock.json"),
                members: get(13).split(',').map(String::from).collect(),
                created: get(18).into(),
                never_mounted: get(15).len() % 3 == 1,
                discarded: false,
            })
            .into_iter()
            .collect(),
    };
    cfg.unlock.tpm2 = get(19).len() % 2 == 1;
    let _ = plan::volume(&facts, &cfg);
    if let Ok(p) = plan::plan(&facts, &cfg, false) {
        let _ = p.describe();
    }
});
