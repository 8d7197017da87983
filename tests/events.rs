//! `ephemera events`, the watcher, the metrics and the hook, against the
//! loopback IMDS test server (tests/imds_server).

mod imds_server;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ephemera::host::Host;
use ephemera::node::events::{self, Hook, Source, Watcher};
use ephemera::node::imds::{Imds, TOKEN_TTL_SECS};
use imds_server::{ImdsServer, Scenario};
use serde_json::Value;

const REBOOT: &str = r#"{"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot",
  "Description": "scheduled reboot", "EventId": "instance-event-0d59937288b749b32",
  "NotAfter": "21 Jan 2019 09:17:23 GMT", "State": "active",
  "NotBeforeDeadline": "31 Jan 2019 09:00:43 GMT"}"#;
const MAINTENANCE: &str = r#"{"NotBefore": "22 Jan 2019 10:00:00 GMT", "Code": "system-maintenance",
  "Description": "scheduled maintenance", "EventId": "instance-event-aaa",
  "NotAfter": "22 Jan 2019 12:00:00 GMT", "State": "active"}"#;
const CANCELED: &str = r#"{"NotBefore": "23 Jan 2019 10:00:00 GMT", "Code": "instance-stop",
  "Description": "[Canceled] scheduled stop", "EventId": "instance-event-bbb", "State": "active"}"#;
const COMPLETED: &str = r#"{"NotBefore": "24 Jan 2019 10:00:00 GMT", "Code": "instance-retirement",
  "Description": "[Completed] retirement", "EventId": "instance-event-ccc", "State": "completed"}"#;
const SPOT: &str = r#"{"action": "terminate", "time": "2019-01-21T08:59:00Z"}"#;
const REBALANCE: &str = r#"{"noticeTime": "2019-01-21T08:50:00Z"}"#;

fn list(items: &[&str]) -> String {
    format!("[{}]", items.join(","))
}

fn server(scheduled: &[&str], spot: Option<&str>, rebalance: Option<&str>) -> ImdsServer {
    ImdsServer::start(
        Scenario {
            scheduled: list(scheduled),
            spot: spot.map(str::to_string),
            rebalance: rebalance.map(str::to_string),
            ..Scenario::default()
        },
        0,
    )
}

fn config(dir: &Path, endpoint: &str, extra: &str) -> PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(
        &p,
        format!(
            "[events]\nendpoint = \"{endpoint}\"\ntextfile = \"{}\"\nseen_file = \"{}\"\n{extra}",
            dir.join("ephemera.prom").display(),
            dir.join("seen.json").display()
        ),
    )
    .unwrap();
    p
}

fn ephemera(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ephemera"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn each_event_kind_in_json_and_for_a_person() {
    let srv = server(
        &[REBOOT, MAINTENANCE, CANCELED, COMPLETED],
        Some(SPOT),
        Some(REBALANCE),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &srv.endpoint(), "");
    let out = ephemera(&cfg, &["events", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String, bool, String, Option<String>)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_string(),
                e["not_before"].as_str().unwrap().to_string(),
                e["data_loss"].as_bool().unwrap(),
                e["source"].as_str().unwrap().to_string(),
                e["id"].as_str().map(str::to_string),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (
                s("rebalance"),
                s("2019-01-21T08:50:00Z"),
                false,
                s("rebalance"),
                None
            ),
            (
                s("spot-terminate"),
                s("2019-01-21T08:59:00Z"),
                true,
                s("spot"),
                None
            ),
            (
                s("system-reboot"),
                s("2019-01-21T09:00:43Z"),
                true,
                s("scheduled"),
                Some(s("instance-event-0d59937288b749b32"))
            ),
            (
                s("system-maintenance"),
                s("2019-01-22T10:00:00Z"),
                false,
                s("scheduled"),
                Some(s("instance-event-aaa"))
            ),
        ],
        "canceled and completed events are left out"
    );
    let out = ephemera(&cfg, &["events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("system-reboot") && l.contains("DATA LOSS")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("system-maintenance") && l.contains("data kept")),
        "{text}"
    );
}

#[test]
fn no_events_and_no_imds() {
    let mut srv = server(&[CANCELED], None, None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &srv.endpoint(), "");
    let out = ephemera(&cfg, &["events", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    let out = ephemera(&cfg, &["events"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no pending events\n");
    assert_eq!(stderr(&out), "", "nothing to say when IMDS answers");

    // Nothing listening: one quiet line, an empty list, exit 0.
    srv.stop();
    let out = ephemera(&cfg, &["events", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no instance metadata service"), "{err}");
}

#[test]
fn garbage_is_one_line_each_and_exit_1() {
    let huge = format!("[{}]", vec![REBOOT; 400].join(","));
    assert!(huge.len() > 64 * 1024);
    let cases: [(String, Option<&str>, &str); 4] = [
        ("[{\"Code\": ".into(), None, "not a JSON list"),
        (
            list(&[&REBOOT.replace("21 Jan 2019 09:00:43 GMT", "2019-01-21T09:00:43Z")]),
            None,
            "NotBefore",
        ),
        (huge, None, "larger than 65536 bytes"),
        (
            "[]".into(),
            Some("<html>hello</html>"),
            "spot instance-action",
        ),
    ];
    for (scheduled, spot, needle) in cases {
        let srv = ImdsServer::start(
            Scenario {
                scheduled,
                spot: spot.map(str::to_string),
                ..Scenario::default()
            },
            0,
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &srv.endpoint(), "");
        let out = ephemera(&cfg, &["events", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{needle}: {}", stderr(&out));
        let err = stderr(&out);
        let warn: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warn.len(), 1, "{needle}: {err}");
        assert!(warn[0].contains(needle), "{needle}: {err}");
        assert!(
            err.lines()
                .last()
                .unwrap()
                .starts_with("ephemera: error: IMDS"),
            "{err}"
        );
        // What could be read is still printed: valid JSON.
        serde_json::from_slice::<Value>(&out.stdout).unwrap();
    }
}

#[test]
fn server_follows_the_token_rules() {
    let srv = server(&[], None, None);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = |p: &str| format!("{}{p}", srv.endpoint());
    let put = |ttl: Option<&str>| {
        let mut r = agent.put(url("/latest/api/token"));
        if let Some(t) = ttl {
            r = r.header("X-aws-ec2-metadata-token-ttl-seconds", t);
        }
        let mut resp = r.send_empty().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    for bad in [None, Some("0"), Some("21601"), Some("ten")] {
        assert_eq!(put(bad).0, 400, "ttl {bad:?}");
    }
    assert_eq!(put(Some("1")).0, 200);
    let (status, token) = put(Some(&TOKEN_TTL_SECS.to_string()));
    assert_eq!(status, 200);
    let get = |path: &str, token: Option<&str>| {
        let mut r = agent.get(url(path));
        if let Some(t) = token {
            r = r.header("X-aws-ec2-metadata-token", t);
        }
        r.call().unwrap().status().as_u16()
    };
    assert_eq!(get(imds_server::SCHEDULED, None), 401);
    assert_eq!(get(imds_server::SCHEDULED, Some("forged")), 401);
    assert_eq!(get(imds_server::SCHEDULED, Some(&token)), 200);
    assert_eq!(get(imds_server::SPOT, Some(&token)), 404);
    assert_eq!(get(imds_server::REBALANCE, Some(&token)), 404);
    srv.with(|s| s.expire_tokens());
    assert_eq!(get(imds_server::SCHEDULED, Some(&token)), 401);
}

fn watcher(srv: &ImdsServer, dir: &Path, hook: Option<Hook>, timeout: Duration) -> Watcher {
    Watcher::new(
        Imds::new(&srv.endpoint(), timeout),
        Host::new(dir.join("root")),
        Some(dir.join("ephemera.prom")),
        hook,
        dir.join("seen.json"),
    )
}

#[test]
fn token_expires_between_polls() {
    let srv = server(&[REBOOT], None, None);
    let dir = tempfile::tempdir().unwrap();
    let mut w = watcher(&srv, dir.path(), None, Duration::from_secs(2));
    assert_eq!(w.tick().new_events.len(), 1);
    assert_eq!(srv.with(|s| (s.token_puts, s.unauthorized)), (1, 0));
    // Polls reuse the token.
    w.tick();
    assert_eq!(srv.with(|s| s.token_puts), 1);
    srv.with(|s| s.expire_tokens());
    let t = w.tick();
    assert!(t.new_events.is_empty(), "the same event is not new");
    // One 401, one new token, and the poll read every document.
    assert_eq!(srv.with(|s| (s.token_puts, s.unauthorized)), (2, 1));
    let m = std::fs::read_to_string(dir.path().join("ephemera.prom")).unwrap();
    assert!(m.contains("ephemera_imds_up 1\n"), "{m}");
}

fn hook_script(dir: &Path, body: &str) -> Hook {
    let p = dir.join("hook.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    Hook {
        program: p,
        timeout: Duration::from_secs(5),
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn hook_runs_once_per_event_with_the_event_on_stdin() {
    let srv = server(&[REBOOT], None, None);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let hook = hook_script(
        dir.path(),
        &format!(
            "{{ cat; echo \"env $EPHEMERA_EVENT_CODE $EPHEMERA_EVENT_DATA_LOSS\"; }} >> {}",
            log.display()
        ),
    );
    let mut w = watcher(&srv, dir.path(), Some(hook.clone()), Duration::from_secs(2));
    w.tick();
    w.tick();
    let got = lines(&log);
    assert_eq!(got.len(), 2, "{got:?}");
    let ev: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(ev["code"], "system-reboot");
    assert_eq!(ev["id"], "instance-event-0d59937288b749b32");
    assert_eq!(ev["data_loss"], true);
    assert_eq!(ev["source"], "scheduled");
    assert_eq!(ev["not_before"], "2019-01-21T09:00:43Z");
    assert_eq!(got[1], "env system-reboot true");

    // A spot action arrives: the hook runs for it alone.
    srv.with(|s| s.spot = Some(SPOT.into()));
    let t = w.tick();
    assert_eq!(t.new_events.len(), 1);
    assert_eq!(t.new_events[0].source, Source::Spot);
    assert_eq!(lines(&log).len(), 4);

    // A restarted watcher remembers (seen.json) and runs nothing again.
    drop(w);
    let mut w = watcher(&srv, dir.path(), Some(hook), Duration::from_secs(2));
    assert!(w.tick().new_events.is_empty());
    assert_eq!(lines(&log).len(), 4);
}

#[test]
fn a_failing_or_hanging_hook_is_logged_and_not_retried() {
    let srv = server(&[REBOOT, MAINTENANCE], None, None);
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let hook = hook_script(
        dir.path(),
        &format!("echo x >> {}; exit 3", count.display()),
    );
    let mut w = watcher(&srv, dir.path(), Some(hook), Duration::from_secs(2));
    let t = w.tick();
    assert_eq!((t.new_events.len(), t.hook_failures), (2, 2));
    for _ in 0..3 {
        assert_eq!(w.tick().hook_failures, 0);
    }
    assert_eq!(lines(&count).len(), 2, "one run per event, no retries");

    // A hook that never ends is killed at its timeout, with its children.
    let dir = tempfile::tempdir().unwrap();
    let mut hook = hook_script(dir.path(), "sleep 300 & sleep 300");
    hook.timeout = Duration::from_secs(1);
    let mut w = watcher(&srv, dir.path(), Some(hook), Duration::from_secs(2));
    let start = Instant::now();
    let t = w.tick();
    assert_eq!(t.hook_failures, 2);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn slow_down_and_garbage_run_no_hook() {
    let srv = server(&[REBOOT], None, None);
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let hook = hook_script(dir.path(), &format!("echo x >> {}", count.display()));
    let mut w = watcher(&srv, dir.path(), Some(hook), Duration::from_millis(400));
    let prom = dir.path().join("ephemera.prom");

    // Slow: every answer comes after the client's bound.
    srv.with(|s| s.delay = Duration::from_secs(1));
    let start = Instant::now();
    assert!(w.tick().new_events.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(
        m.contains("ephemera_imds_up 0\n")
            && m.contains("ephemera_imds_last_success_timestamp_seconds 0\n"),
        "{m}"
    );

    // Garbage: nothing read, nothing run.
    srv.with(|s| {
        s.delay = Duration::ZERO;
        s.scheduled = "[{\"Code\": \"system-reboot\", \"NotBefore\": \"tomorrow\"}]".into();
        s.spot = Some("{{{".into());
    });
    for _ in 0..3 {
        assert!(w.tick().new_events.is_empty());
    }
    assert!(lines(&count).is_empty());

    // Good again: the event is acted on once.
    srv.with(|s| {
        s.scheduled = list(&[REBOOT]);
        s.spot = None;
    });
    assert_eq!(w.tick().new_events.len(), 1);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(m.contains("ephemera_imds_up 1\n"), "{m}");
    assert!(
        !m.contains("ephemera_imds_last_success_timestamp_seconds 0\n"),
        "{m}"
    );

    // Down: the last good events stay in the metrics, IMDS is marked down.
    drop(srv);
    assert!(w.tick().new_events.is_empty());
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(m.contains("ephemera_imds_up 0\n"), "{m}");
    assert!(
        m.contains("ephemera_events_pending{data_loss=\"true\"} 1\n"),
        "{m}"
    );
    assert_eq!(lines(&count).len(), 1);
}

#[test]
fn metrics_file_is_replaced_whole_and_readable() {
    let srv = server(&[REBOOT, MAINTENANCE], Some(SPOT), None);
    let dir = tempfile::tempdir().unwrap();
    let mut w = watcher(&srv, dir.path(), None, Duration::from_secs(2));
    w.tick();
    let prom = dir.path().join("ephemera.prom");
    let m = std::fs::read_to_string(&prom).unwrap();
    let series: Vec<&str> = m.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        series
            .iter()
            .filter(|l| l.starts_with("ephemera_event_not_before_seconds{"))
            .count(),
        3,
        "{m}"
    );
    assert!(m.contains("ephemera_event_not_before_seconds{code=\"spot-terminate\",source=\"spot\",id=\"\",data_loss=\"true\"} 1548061140\n"), "{m}");
    assert!(
        m.contains("ephemera_events_pending{data_loss=\"true\"} 2\n"),
        "{m}"
    );
    assert!(
        m.contains("ephemera_events_pending{data_loss=\"false\"} 1\n"),
        "{m}"
    );
    // No fixture volume under the host root: absent.
    assert!(
        m.contains("ephemera_volume_state{state=\"absent\"} 1\n"),
        "{m}"
    );
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // The spot action is withdrawn: its series goes, and no temp file is left.
    srv.with(|s| s.spot = None);
    w.tick();
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(!m.contains("spot-terminate"), "{m}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prom"))
        .collect();
    assert_eq!(names, vec!["ephemera.prom".to_string()]);
}

/// `ephemera events --watch` with its stderr in DIR/stderr.
fn spawn_watcher(cfg: &Path, dir: &Path) -> std::process::Child {
    let errf = std::fs::File::create(dir.join("stderr")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ephemera"))
        .arg("--config")
        .arg(cfg)
        .args(["events", "--watch"])
        .stderr(errf)
        .spawn()
        .unwrap()
}

/// Waits until the server has answered `n` document reads; 30 s is a bound
/// against a hang, not the assertion.
fn wait_reads(srv: &ImdsServer, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while srv.with(|s| s.reads) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    srv.with(|s| s.reads) >= n
}

#[test]
fn the_watch_command_warns_once_and_runs_the_hook() {
    let srv = server(&[REBOOT], None, None);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let hook = hook_script(dir.path(), &format!("cat >> {}", log.display()));
    let cfg = config(
        dir.path(),
        &srv.endpoint(),
        &format!("interval_secs = 1\nhook = \"{}\"\n", hook.program.display()),
    );
    let mut child = spawn_watcher(&cfg, dir.path());
    // Three polls after the first (3 reads each).
    let polled = wait_reads(&srv, 12);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(polled, "the watcher did not poll 4 times");
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("system-reboot") && warnings[0].contains("THIS DESTROYS THE DATA"),
        "{err}"
    );
    assert_eq!(lines(&log).len(), 1);
    assert!(std::fs::read_to_string(dir.path().join("seen.json"))
        .unwrap()
        .contains("instance-event-0d59937288b749b32"));
    assert!(dir.path().join("ephemera.prom").exists());
}

#[test]
fn status_json_carries_the_events() {
    let srv = server(&[REBOOT], None, None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &srv.endpoint(), "");
    let out = ephemera(&cfg, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ev = v["events"].as_array().unwrap();
    assert_eq!(ev.len(), 1, "{v}");
    assert_eq!(ev[0]["code"], "system-reboot");
    assert_eq!(
        events::data_loss(Source::Scheduled, "system-reboot"),
        ev[0]["data_loss"]
    );
}

#[test]
fn the_watcher_logs_a_bad_document_once_and_its_recovery_once() {
    let srv = ImdsServer::start(
        Scenario {
            scheduled: "[{\"Code\": \"system-reboot\", \"NotBefore\": \"tomorrow\"}]".into(),
            ..Scenario::default()
        },
        0,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &srv.endpoint(), "interval_secs = 1\n");
    let mut child = spawn_watcher(&cfg, dir.path());
    // Each poll reads 3 documents: 4 bad polls, then 3 good ones.
    let bad_polls_done = wait_reads(&srv, 12);
    srv.with(|s| s.scheduled = "[]".into());
    let reads = srv.with(|s| s.reads);
    let good_polls_done = wait_reads(&srv, reads + 9);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        bad_polls_done && good_polls_done,
        "the watcher did not poll"
    );
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let bad: Vec<&str> = err.lines().filter(|l| l.contains("NotBefore")).collect();
    assert_eq!(bad.len(), 1, "{err}");
    assert!(
        bad[0].contains("WARN") && bad[0].contains("element 0"),
        "{err}"
    );
    assert_eq!(err.matches("IMDS answers").count(), 1, "{err}");
    assert!(!err.contains("THIS DESTROYS"), "{err}");
}

/// Security review, issue 17, finding 1. Debian gives /var/lib/prometheus,
/// the textfile directory's parent, to the `prometheus` account (uid 1234
/// here). That account plants a link at the watcher's old, predictable temp
/// name (`.ephemera.prom.tmp.<pid>`), then swaps the directory for a link:
/// the root-only file the links point to is never written, nor anything
/// made in the linked directory, and the refusal is logged once.
#[test]
fn the_watcher_follows_no_link_planted_by_the_owner_of_the_textfile_parent() {
    let srv = server(&[REBOOT], None, None);
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow");
    std::fs::write(&shadow, "root:secret\n").unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    let prometheus = dir.path().join("prometheus");
    std::fs::create_dir(&prometheus).unwrap();
    std::os::unix::fs::chown(&prometheus, Some(1234), Some(1234)).unwrap();
    let textdir = prometheus.join("node-exporter");
    std::fs::create_dir(&textdir).unwrap();
    let prom = textdir.join("ephemera.prom");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[events]\nendpoint = \"{}\"\ntextfile = \"{}\"\nseen_file = \"{}\"\ninterval_secs = 1\n",
            srv.endpoint(),
            prom.display(),
            dir.path().join("seen.json").display()
        ),
    )
    .unwrap();
    let mut child = spawn_watcher(&cfg, dir.path());
    let planted = textdir.join(format!(".ephemera.prom.tmp.{}", child.id()));
    std::os::unix::fs::symlink(&shadow, &planted).unwrap();
    // Three polls after the link is there (3 reads each).
    let reads = srv.with(|s| s.reads);
    let polled = wait_reads(&srv, reads + 9);
    let shadow_after_temp_link = std::fs::read_to_string(&shadow).unwrap();
    let prom_meta = std::fs::symlink_metadata(&prom);
    // The directory swapped for a link to a root-only one.
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(&textdir, prometheus.join("old")).unwrap();
    std::os::unix::fs::symlink(&etc, &textdir).unwrap();
    let reads = srv.with(|s| s.reads);
    let polled_again = wait_reads(&srv, reads + 9);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(polled && polled_again, "the watcher did not poll");

    assert_eq!(shadow_after_temp_link, "root:secret\n");
    let prom_meta = prom_meta.unwrap();
    assert!(prom_meta.is_file());
    assert_eq!(prom_meta.permissions().mode() & 0o777, 0o644);
    // The planted link is left as it was (moved with the directory).
    let planted_now = prometheus.join("old").join(planted.file_name().unwrap());
    assert_eq!(std::fs::read_link(planted_now).unwrap(), shadow);

    assert_eq!(std::fs::read_to_string(&shadow).unwrap(), "root:secret\n");
    let made: Vec<_> = std::fs::read_dir(&etc).unwrap().collect();
    assert!(made.is_empty(), "{made:?}");
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let refused: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("symbolic link"))
        .collect();
    assert_eq!(refused.len(), 1, "{err}");
    assert!(
        refused[0].contains("WARN")
            && refused[0].contains(&format!("{} is a symbolic link", textdir.display())),
        "{err}"
    );
}

/// A reboot is no loss only where the next boot would unlock the mounted
/// volume (issue 25): `[unlock]` in the config, and an unlock file of this
/// volume that parses and is not marked never mounted. The watcher's metrics
/// and warning say so at each poll. The node is the `already-provisioned`
/// fixture tree (a volume of LUKS UUID 0f6c3d0c-... mounted over RAID0 of
/// nvme1n1 and nvme2n1); a spot action still loses the data.
#[test]
fn the_watcher_counts_a_reboot_as_kept_only_when_the_next_boot_unlocks() {
    let srv = server(&[REBOOT], Some(SPOT), None);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/already-provisioned/root");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(&root)
        .status()
        .unwrap()
        .success());
    let cfg: ephemera::config::Config =
        toml::from_str("[unlock]\ntpm2 = true\n").expect("an [unlock] config");
    let prom = dir.path().join("ephemera.prom");
    let reboot_series = |m: &str, loss: &str| {
        m.contains(&format!(
            "ephemera_event_not_before_seconds{{code=\"system-reboot\",source=\"scheduled\",id=\"instance-event-0d59937288b749b32\",data_loss=\"{loss}\"}}"
        ))
    };

    // A watcher started afresh (no events seen yet), its first poll, and
    // the reboot event in it.
    let first_poll = |cfg: &ephemera::config::Config| {
        let _ = std::fs::remove_file(dir.path().join("seen.json"));
        let mut w = watcher(&srv, dir.path(), None, Duration::from_secs(2)).with_config(cfg);
        let t = w.tick();
        let reboot = t
            .new_events
            .iter()
            .find(|e| e.code == "system-reboot")
            .cloned();
        (w, t, reboot.expect("the reboot event"))
    };
    let pending =
        |loss: &str, n: usize| format!("ephemera_events_pending{{data_loss=\"{loss}\"}} {n}\n");

    // [unlock] set, but this volume has no unlock file (a binding that
    // failed): a reboot still loses the data.
    let (mut w, _, reboot) = first_poll(&cfg);
    assert!(reboot.data_loss && !reboot.kept_by_unlock);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(
        reboot_series(&m, "true") && m.contains(&pending("true", 2)),
        "{m}"
    );

    // A file by its name that opens nothing (`{}`): still a loss, at the
    // next poll and for a watcher started now.
    let records = root.join("var/lib/ephemera");
    let sealed = records.join(format!("escrow.{UUID}.unlock.json"));
    std::fs::create_dir_all(&records).unwrap();
    std::fs::write(&sealed, "{}").unwrap();
    w.tick();
    assert!(reboot_series(
        &std::fs::read_to_string(&prom).unwrap(),
        "true"
    ));
    assert!(first_poll(&cfg).2.data_loss);

    // Its unlock file, as provision writes it: the next poll counts the
    // reboot as kept.
    std::fs::write(&sealed, unlock_file()).unwrap();
    w.tick();
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(reboot_series(&m, "false"), "{m}");
    assert!(
        m.contains(&pending("true", 1)) && m.contains(&pending("false", 1)),
        "{m}"
    );

    // A watcher started now warns with the reason; the spot action is
    // still a loss.
    let (_, t, reboot) = first_poll(&cfg);
    assert!(!reboot.data_loss && reboot.kept_by_unlock);
    assert!(
        reboot.warning().contains("opens again at the next boot"),
        "{}",
        reboot.warning()
    );
    assert!(t
        .new_events
        .iter()
        .any(|e| e.code == "spot-terminate" && e.data_loss));

    // Marked never mounted (the record of a run cut short before its first
    // mount, which the next boot formats over): a loss.
    let marker = records.join(format!("escrow.{UUID}.never-mounted"));
    std::fs::write(&marker, "").unwrap();
    assert!(first_poll(&cfg).2.data_loss);
    std::fs::remove_file(&marker).unwrap();
    assert!(!first_poll(&cfg).2.data_loss);

    // Without [unlock] in the config, the file alone changes nothing.
    let (_, _, reboot) = first_poll(&ephemera::config::Config::default());
    assert!(reboot.data_loss);
}

/// The watcher's metrics for what puts the data at risk: a mounted volume
/// not bound to its `[unlock]` pins (a binding that failed at provision),
/// a guard not armed, and a volume of an earlier boot that this boot's
/// provision kept for ops, which is not `absent`.
#[test]
fn the_watcher_reports_binding_guard_and_kept_volume() {
    let srv = server(&[], None, None);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let copied = Command::new("cp")
        .args([
            "-a",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/already-provisioned/root"
            ),
        ])
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    let host = Host::new(&root);
    let cfg: ephemera::config::Config = toml::from_str("[unlock]\ntpm2 = true\n").unwrap();
    let mut w = watcher(&srv, dir.path(), None, Duration::from_secs(2)).with_config(&cfg);
    let mut metrics = || {
        w.tick();
        std::fs::read_to_string(dir.path().join("ephemera.prom")).unwrap()
    };
    let m = metrics();
    assert!(
        m.contains("ephemera_volume_state{state=\"provisioned\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("ephemera_unlock_bound 0\n"), "{m}");
    assert!(m.contains("ephemera_guard_armed 0\n"), "{m}");
    // Bound (its unlock file), and the guard armed as `ephemera guard on` arms it.
    let sealed =
        root.join("var/lib/ephemera/escrow.0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e.unlock.json");
    std::fs::create_dir_all(sealed.parent().unwrap()).unwrap();
    std::fs::write(&sealed, "{}").unwrap();
    assert!(ephemera::node::guard::install(&host).unwrap());
    let m = metrics();
    assert!(
        m.contains("ephemera_unlock_bound 1\n") && m.contains("ephemera_guard_armed 1\n"),
        "{m}"
    );
    // One refusal gone: not armed.
    std::fs::remove_file(root.join("run/systemd/system/reboot.target.d/50-ephemera-guard.conf"))
        .unwrap();
    assert!(metrics().contains("ephemera_guard_armed 0\n"));

    // No volume open, and this boot's provision kept one: `kept`, not `absent`.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let bare_host = Host::new(&bare);
    let mut w = Watcher::new(
        Imds::new(&srv.endpoint(), Duration::from_secs(2)),
        bare_host.clone(),
        Some(dir.path().join("bare.prom")),
        None,
        dir.path().join("bare-seen.json"),
    )
    .with_config(&cfg);
    let mut metrics = || {
        w.tick();
        std::fs::read_to_string(dir.path().join("bare.prom")).unwrap()
    };
    assert!(metrics().contains("ephemera_volume_state{state=\"absent\"} 1\n"));
    ephemera::node::kept::mark(&bare_host, "kept the encrypted volume of an earlier boot").unwrap();
    let m = metrics();
    assert!(
        m.contains("ephemera_volume_state{state=\"kept\"} 1\n")
            && m.contains("ephemera_volume_state{state=\"absent\"} 0\n"),
        "{m}"
    );
    // Not mounted: bound or not is no question.
    assert!(!m.contains("ephemera_unlock_bound"), "{m}");
    ephemera::node::kept::clear(&bare_host).unwrap();
    assert!(metrics().contains("ephemera_volume_state{state=\"absent\"} 1\n"));
}

/// The LUKS UUID of the `already-provisioned` fixture's mapping.
const UUID: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";

/// An unlock file for the `already-provisioned` volume as provision writes
/// it: the fixtures' well-formed clevis token (an sss pin over one tpm2
/// pin; planning reads which volume, never the ciphertext), its members the
/// fixture's disks in array order.
fn unlock_file() -> String {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/earlier-boot-unlock/root/var/lib/ephemera/escrow.6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d.unlock.json",
    );
    std::fs::read_to_string(fixture)
        .unwrap()
        .replace("6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d", UUID)
}

/// Pending envelope uploads never hold up the event polls (issue 25): six
/// envelopes wait for a store (`[escrow.store]`) that takes connections and
/// never answers, each try bounded by 300 s (the most allowed). The
/// watcher's poll still reports the spot notice while the retry is blocked
/// on the store, and reports no retry round: it did not wait for one. When
/// the retry ran inside the poll, this poll took 6 x 300 s.
#[test]
fn a_store_that_never_answers_does_not_delay_a_spot_notice() {
    use ephemera::keys::escrow;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let srv = ImdsServer::start(
        Scenario {
            spot: Some(SPOT.into()),
            instance_id: Some("i-0123456789abcdef0".into()),
            region: Some("us-east-1".into()),
            role: Some(imds_server::Role {
                name: "ephemera-node".into(),
                access_key_id: "AKIDNODE".into(),
                secret_access_key: "node-secret".into(),
                token: Some("token".into()),
            }),
            ..Scenario::default()
        },
        0,
    );
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(dir.path().join("root"));
    let escrow_path = Path::new("/var/lib/ephemera/escrow.json");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/earlier-boot-kept/root/var/lib/ephemera/escrow.6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d.json",
    );
    let text = std::fs::read_to_string(fixture).unwrap();
    for i in 0..6 {
        let uuid = format!("6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5{i}");
        let env = escrow::parse(
            &text.replace("6d1c2a8e-3b4f-4e5a-9c7d-0e1f2a3b4c5d", &uuid),
            escrow_path,
        )
        .unwrap();
        escrow::store(&host, &env, escrow_path).unwrap();
        escrow::set_marker(&host, escrow_path, &uuid, escrow::STORE_PENDING).unwrap();
    }
    // The store: takes each connection, keeps it, never answers.
    let store = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = store.local_addr().unwrap().port();
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in store.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(c);
        }
    });
    let mut cfg = ephemera::config::Config::default();
    cfg.escrow.path = escrow_path.to_path_buf();
    cfg.escrow.store = Some(ephemera::config::store::Store {
        url: format!("https://127.0.0.1:{port}"),
        bucket: "fleet-escrow".into(),
        prefix: "ephemera/".into(),
        region: None,
        ca_file: None,
        timeout_secs: 300,
        insecure_http: false,
    });
    cfg.events.endpoint = srv.endpoint();
    cfg.events.textfile = dir.path().join("escrow.prom");
    let mut w = watcher(&srv, dir.path(), None, Duration::from_secs(2))
        .with_escrow_store(cfg, Duration::from_secs(60));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(w.tick());
    });

    // The retry is blocked on the store: it has taken a connection.
    let start = Instant::now();
    while taken.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the retry never reached the store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A bound against a hang, far below one try's 300 s.
    let t = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the poll waited on a store that never answers");
    assert!(
        t.new_events.iter().any(|e| e.code == "spot-terminate"),
        "{:?}",
        t.new_events
    );
    assert_eq!(t.escrow_pending, None, "a retry round ended: {t:?}");
    // The envelopes are still pending: nothing counted them as stored.
    let pending = std::fs::read_dir(host.abs(Path::new("/var/lib/ephemera")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".store-pending")
        })
        .count();
    assert_eq!(pending, 6);
}
