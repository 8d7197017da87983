//! The config's parse and validation, through `Config::parse` and
//! `Config::validate` as the commands call them.

use super::*;

fn parse(t: &str) -> Result<Config> {
    let c = Config::parse(t, Path::new("test.toml"))?;
    c.validate()?;
    Ok(c)
}

fn usage_msg(t: &str) -> String {
    match parse(t) {
        Err(Error::Usage(m)) => m,
        other => panic!("expected a usage error for {t:?}, got {other:?}"),
    }
}

#[test]
fn an_error_quoting_a_control_character_is_still_one_line() {
    // Found by fuzz/config: a path with a newline in it split the message.
    let e = parse("[escrow]\npath = \"a\\nb\\r\\u001b[31m\"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config escrow.path: a\\nb\\r\\u{1b}[31m is not an absolute path"
    );
    assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
}

#[test]
fn empty_file_is_all_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.luks.cipher.notation(), "twofish-xts-plain64");
    assert_eq!(c.on_existing, OnExisting::Keep);
    assert_eq!(c.raid.chunk_kib, 256);
    assert_eq!(c.mount.path, Path::new("/mnt/ephemeral"));
    assert_eq!(c.disks.min_disks, 1);
    assert!(c.escrow.console);
}

#[test]
fn every_key_parses() {
    let c = parse(
        r#"
        on_existing = "fail"
        [disks]
        model = "QEMU NVMe Ctrl"
        min_disks = 0
        [raid]
        chunk_kib = 512
        [luks]
        cipher = "aes-xts-plain64"
        key_bits = 256
        sector_size = 512
        discards = true
        workqueues = true
        [filesystem]
        label = "data"
        [mount]
        path = "/data"
        options = "noatime,nodev"
        [escrow]
        public_key = "/etc/ephemera/escrow.pem"
        path = "/root/escrow.json"
        console = false
        [events]
        endpoint = "http://127.0.0.1:8169/"
        interval_secs = 5
        textfile = ""
        hook = "/usr/local/sbin/drain"
        hook_timeout_secs = 30
        seen_file = "/var/lib/ephemera/seen.json"
        "#,
    )
    .unwrap();
    assert_eq!(c.on_existing, OnExisting::Fail);
    assert_eq!(c.disks.model, "QEMU NVMe Ctrl");
    assert_eq!(c.raid.chunk_kib, 512);
    assert_eq!(c.luks.key_bits, 256);
    assert!(c.luks.discards && c.luks.workqueues);
    assert_eq!(
        c.escrow.public_key.as_deref(),
        Some(Path::new("/etc/ephemera/escrow.pem"))
    );
    assert!(!c.escrow.console);
    assert_eq!(c.events.endpoint, "http://127.0.0.1:8169/");
    assert_eq!(c.events.interval_secs, 5);
    assert_eq!(c.events.textfile, Path::new(""));
    assert_eq!(
        c.events.hook.as_deref(),
        Some(Path::new("/usr/local/sbin/drain"))
    );
    assert_eq!(c.events.hook_timeout_secs, 30);
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        ("bogus = 1", "bogus"),
        ("[raid]\nchunk = 4", "chunk"),
        ("[raid]\nchunk_kib = 100", "raid.chunk_kib"),
        ("[raid]\nchunk_kib = 2", "raid.chunk_kib"),
        ("[raid]\nchunk_kib = -4", "test.toml:2"),
        ("[luks]\ncipher = \"twofish\"", "luks.cipher"),
        ("[luks]\ncipher = \"a b-xts\"", "luks.cipher"),
        ("[luks]\nkey_bits = 500", "luks.key_bits"),
        ("[luks]\nsector_size = 1000", "luks.sector_size"),
        ("[luks]\ndiscards = \"yes\"", "test.toml:2"),
        ("on_existing = \"wipe\"", "test.toml:1"),
        ("[mount]\npath = \"mnt\"", "mount.path"),
        ("[mount]\npath = \"/\"", "mount.path"),
        ("[mount]\npath = \"//\"", "mount.path"),
        ("[mount]\npath = \"/..\"", "mount.path"),
        ("[mount]\npath = \"/mnt/..\"", "mount.path"),
        ("[mount]\npath = \"/mnt/../ephemeral\"", "mount.path"),
        ("[mount]\noptions = \"noatime,,\"", "mount.options"),
        ("[escrow]\npublic_key = \"key.pem\"", "escrow.public_key"),
        ("[escrow]\npublic_keys = [\"a.pem\"]", "escrow.public_keys"),
        (
            "[escrow]\npublic_keys = [\"/a.pem\", \"/a.pem\"]",
            "escrow.public_keys",
        ),
        (
            "[escrow]\npublic_keys = [\"/a.pem\", \"/b.pem\"]\nthreshold = 3",
            "escrow.threshold",
        ),
        (
            "[escrow]\npublic_key = \"/a.pem\"\npublic_keys = [\"/b.pem\"]\nthreshold = 0",
            "escrow.threshold",
        ),
        ("[escrow]\npath = \"escrow.json\"", "escrow.path"),
        (
            "[filesystem]\nlabel = \"a-label-that-is-too-long\"",
            "filesystem.label",
        ),
        ("[disks]\nmodel = \"  \"", "disks.model"),
        (
            "[events]\nendpoint = \"https://169.254.169.254\"",
            "events.endpoint",
        ),
        (
            "[events]\nendpoint = \"http://h/latest\"",
            "events.endpoint",
        ),
        ("[events]\nendpoint = \"http://\"", "events.endpoint"),
        ("[events]\ninterval_secs = 0", "events.interval_secs"),
        ("[events]\ninterval_secs = 3601", "events.interval_secs"),
        ("[events]\ntextfile = \"ephemera.prom\"", "events.textfile"),
        (
            "[events]\ntextfile = \"/var/lib/x/ephemera.txt\"",
            "events.textfile",
        ),
        ("[events]\nhook = \"drain.sh\"", "events.hook"),
        (
            "[events]\nhook_timeout_secs = 0",
            "events.hook_timeout_secs",
        ),
        ("[events]\npoll = 5", "poll"),
        ("[events]\nseen_file = \"seen.json\"", "events.seen_file"),
        ("[disks", "test.toml:1"),
        ("[[bind]]\npath = \"/etc\"", "bind[0]"),
        ("[filesystem]\ntype = \"btrfs\"", "test.toml:2"),
        (
            "[filesystem]\ntype = \"xfs\"\nlabel = \"thirteen-char\"",
            "filesystem.label",
        ),
        ("[[bind]]\npath = \"/srv\"\nsub = 1", "sub"),
        ("[[bind]]\nsubdir = \"x\"", "path"),
    ];
    for (text, needle) in cases {
        let m = usage_msg(text);
        assert!(m.contains(needle), "{text:?}: {m:?} should name {needle}");
        assert!(
            !m.contains('\n'),
            "{text:?}: message is not one line: {m:?}"
        );
    }
}

#[test]
fn mount_paths_are_kept_in_normal_form() {
    for p in ["/mnt/ephemeral/", "/mnt//ephemeral", "/mnt/./ephemeral/."] {
        let c = parse(&format!("[mount]\npath = \"{p}\"")).unwrap();
        assert_eq!(c.mount.path.as_os_str(), "/mnt/ephemeral", "{p}");
        let mut c = Config::default();
        c.apply(&Overrides {
            model: None,
            mount: Some(p.into()),
            escrow_key: None,
        });
        assert_eq!(c.mount.path.as_os_str(), "/mnt/ephemeral", "--mount {p}");
    }
}

#[test]
fn overrides_win() {
    let mut c = Config::default();
    c.apply(&Overrides {
        model: Some("QEMU NVMe Ctrl".into()),
        mount: Some("/data".into()),
        escrow_key: Some("/k.pem".into()),
    });
    assert_eq!(c.disks.model, "QEMU NVMe Ctrl");
    assert_eq!(c.mount.path, Path::new("/data"));
    assert_eq!(c.escrow.public_key.as_deref(), Some(Path::new("/k.pem")));
}

#[test]
fn missing_default_file_is_defaults_but_named_file_is_error() {
    let p = Path::new("/nonexistent/ephemera.toml");
    assert_eq!(Config::load(p, false).unwrap(), Config::default());
    assert!(matches!(Config::load(p, true), Err(Error::Usage(_))));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Config::load(dir.path(), true),
        Err(Error::Usage(_))
    ));
}

#[test]
fn example_config_is_the_defaults() {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml"));
    let c = Config::load(p, true).unwrap();
    c.validate().unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn cipher_names() {
    let c = CipherSpec::parse("twofish-xts-plain64").unwrap();
    assert_eq!(
        (c.cipher.as_str(), c.mode.as_str()),
        ("twofish", "xts-plain64")
    );
    assert_eq!(c.kernel_name(), "xts(twofish)");
    let c = CipherSpec::parse("aes-cbc-essiv:sha256").unwrap();
    assert_eq!(c.kernel_name(), "cbc(aes)");
}

/// A value of another type than the key takes.
fn wrong(v: &toml::Value) -> toml::Value {
    match v {
        toml::Value::Integer(_) => "7".into(),
        toml::Value::Boolean(_) => "yes".into(),
        _ => 7.into(),
    }
}

#[test]
fn a_wrongly_typed_value_names_its_key() {
    let all = keys::all();
    assert!(all.len() >= 42, "{} keys: {all:?}", all.len());
    for k in &all {
        let mut t = keys::sample();
        let v = keys::get_mut(&mut t, &k.at);
        *v = wrong(v);
        let text = toml::to_string(&t).unwrap();
        let e = Config::parse(&text, Path::new("t.toml")).unwrap_err();
        let m = e.to_string();
        let name = keys::error_name(&k.at);
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{m}");
        assert!(
            m.starts_with("config t.toml:") && m.contains(&format!(" {name}: ")),
            "{}: {m:?} should name {name}",
            k.name
        );
        assert!(!m.contains('\n'), "{m:?}");
    }
}

#[test]
fn a_list_of_tables_written_as_one_table_says_so() {
    for (text, key) in [
        ("[bind]\npath = \"/var/lib/containerd\"\n", "bind"),
        (
            "[unlock]\ntpm2 = true\n[unlock.tang]\nurl = \"http://t:7500\"\n",
            "unlock.tang",
        ),
    ] {
        let m = usage_msg(text);
        assert!(
            m.contains(&format!("{key}: invalid type: map"))
                && m.contains(&format!("write [[{key}]] before each entry, not [{key}]")),
            "{m}"
        );
    }
}

#[test]
fn the_volume_stays_off_the_system_s_directories() {
    for (path, why) in [
        (
            "/etc",
            "/etc is a system directory (the system's configuration)",
        ),
        ("/usr", "/usr is a system directory"),
        ("/usr/local/data", "/usr is a system directory"),
        (
            "/proc",
            "/proc is a system directory (the kernel's process filesystem)",
        ),
        ("/sys", "/sys is a system directory"),
        ("/dev/shm", "/dev is a system directory"),
        ("/boot", "/boot is a system directory"),
        ("/run", "/run is a system directory"),
        ("/run/ephemera", "/run is a system directory"),
        ("/lib64", "/lib64 is a system directory"),
        (
            "/var",
            "would hide /var/lib/dpkg (the package database (Debian))",
        ),
        ("/var/lib", "would hide /var/lib/dpkg"),
        ("/var/log", "would hide /var/log/journal"),
        ("/var/lib/ephemera", "would hide /var/lib/ephemera"),
        ("/var/lib/rpm", "would hide /var/lib/rpm"),
        ("/root", "would hide /root (root's home and its ssh keys)"),
        ("/home", "would hide /home"),
        ("/tmp", "would hide /tmp"),
        ("/var/tmp", "would hide /var/tmp"),
    ] {
        let m = usage_msg(&format!("[mount]\npath = \"{path}\"\n"));
        assert!(
            m.starts_with(&format!("config mount.path: {path}: ")) && m.contains(why),
            "{path}: {m}"
        );
        // The command line's --mount is checked the same way.
        let mut c = Config::default();
        c.apply(&Overrides {
            mount: Some(path.into()),
            ..Overrides::default()
        });
        assert!(c.validate().is_err(), "--mount {path}");
    }
    for ok in [
        "/mnt/ephemeral",
        "/data",
        "/srv/data",
        "/var/lib/containerd",
        "/home/data",
        "/opt/x",
    ] {
        parse(&format!("[mount]\npath = \"{ok}\"\n")).unwrap();
    }
}

#[test]
fn the_envelopes_stay_off_the_volume() {
    for (mount, escrow) in [
        ("/data", "/data/escrow.json"),
        ("/data", "/data/ephemera/escrow.json"),
        ("/mnt/ephemeral", "/mnt//ephemeral/./escrow.json"),
    ] {
        let m = usage_msg(&format!(
            "[mount]\npath = \"{mount}\"\n[escrow]\npath = \"{escrow}\"\n"
        ));
        assert!(
            m.starts_with(&format!(
                "config escrow.path: {escrow} is inside mount.path {mount}"
            )),
            "{m}"
        );
    }
    parse("[mount]\npath = \"/data\"\n[escrow]\npath = \"/var/lib/ephemera/escrow.json\"\n")
        .unwrap();
    parse("[mount]\npath = \"/dat\"\n[escrow]\npath = \"/data/escrow.json\"\n").unwrap();
}

#[test]
fn an_escrow_threshold_needs_keys() {
    let m = usage_msg("[escrow]\nthreshold = 2\n");
    assert!(
        m.starts_with("config escrow.threshold: 2 is set, but there is no escrow key"),
        "{m}"
    );
    // 1, the default, written out with no key: no setting.
    parse("[escrow]\nthreshold = 1\n").unwrap();
    // A key given on the command line counts.
    let mut c = Config::parse("[escrow]\nthreshold = 2\n", Path::new("t.toml")).unwrap();
    c.apply(&Overrides {
        escrow_key: Some("/k.pem".into()),
        ..Overrides::default()
    });
    let m = c.validate().unwrap_err().to_string();
    assert!(
        m.contains("not between 1 and the number of escrow keys (1)"),
        "{m}"
    );
}

#[test]
fn a_placeholder_left_in_is_refused_by_its_key() {
    let m = usage_msg(
        "[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"REPLACE-WITH-YOUR-BUCKET\"\n",
    );
    assert!(
        m.starts_with("config escrow.store.bucket: \"REPLACE-WITH-YOUR-BUCKET\" is the example's placeholder, left in"),
        "{m}"
    );
}

/// The rows `| \`key\` | default | ... |` of docs/CONFIG.md's "Every key".
fn reference_rows() -> Vec<(String, String)> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap();
    let section = doc.split("\n## Every key\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.strip_prefix("| `")?.splitn(3, " | ").collect();
            Some((
                cells[0].strip_suffix('`')?.to_string(),
                cells[1].to_string(),
            ))
        })
        .collect()
}

/// The man page's CONFIGURATION entries, `key = value` or `key (unset)`,
/// as the reader sees them.
fn man_entries() -> Vec<String> {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ephemera.8")).unwrap();
    let section = man.split("\n.SH CONFIGURATION\n").nth(1).unwrap();
    let section = section.split("\n.SH ").next().unwrap();
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| {
            w[1].replace("\\-", "-")
                .replace("\\fB", "")
                .replace("\\fR", "")
        })
        .collect()
}

#[test]
fn the_reference_lists_every_key() {
    let rows = reference_rows();
    let man = man_entries();
    let all = keys::all();
    let names = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    assert_eq!(
        names(rows.iter().map(|(k, _)| k.clone()).collect()),
        names(all.iter().map(|k| k.name.clone()).collect()),
        "docs/CONFIG.md's table against the keys the code accepts"
    );
    assert_eq!(man.len(), all.len(), "the man page: {man:?}");
    for k in &all {
        let (_, cell) = rows.iter().find(|(n, _)| *n == k.name).unwrap();
        let (doc, man_entry) = match &k.default {
            keys::Default::Value(v) => (format!("`{v}`"), format!("{} = {v}", k.name)),
            keys::Default::Unset => ("unset".into(), format!("{} (unset)", k.name)),
            keys::Default::Required => ("required".into(), format!("{} (required)", k.name)),
        };
        assert_eq!(*cell, doc, "docs/CONFIG.md, the default of {}", k.name);
        assert!(
            man.contains(&man_entry),
            "dist/ephemera.8 lacks {man_entry:?}"
        );
    }
    // The directories the volume leaves alone, each with its reason.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap();
    let dirs = doc
        .split("## Directories the volume leaves alone")
        .nth(1)
        .unwrap();
    for (p, _) in paths::SYSTEM.iter().chain(paths::KEPT) {
        assert!(dirs.contains(&format!("`{p}`")), "docs/CONFIG.md lacks {p}");
    }
}
