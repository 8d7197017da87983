//! Scheduled maintenance, spot interruptions and rebalance recommendations,
//! read from IMDS, and what they do to this node's data.
//!
//! Pure parts first (the three document parsers, the data-loss table, the
//! metrics text), then the I/O: one poll of IMDS, and the watcher that warns,
//! writes the metrics and runs the hook once per new event. None of this runs
//! during `provision`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::error::{Error, Result};
use crate::host::safe_fs;
use crate::host::Host;
use crate::node::imds::{Imds, ImdsError};

pub const SCHEDULED_PATH: &str = "/latest/meta-data/events/maintenance/scheduled";
pub const SPOT_PATH: &str = "/latest/meta-data/spot/instance-action";
pub const REBALANCE_PATH: &str = "/latest/meta-data/events/recommendations/rebalance";

/// At most this many keys are kept (the oldest go first).
const SEEN_MAX: usize = 4096;
/// At most this many new events are acted on (warned about, hooked) per
/// poll; more wait for the next poll. A bound on hook runs, whatever IMDS says.
pub const NEW_PER_POLL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Scheduled,
    Spot,
    Rebalance,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Scheduled => "scheduled",
            Source::Spot => "spot",
            Source::Rebalance => "rebalance",
        }
    }
}

/// One pending event, as `ephemera events --json` prints it and the hook
/// reads it on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The provider's code; `spot-<action>` for a spot action, `rebalance`
    /// for a rebalance recommendation.
    pub code: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC, where the provider gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    pub data_loss: bool,
    pub source: Source,
    /// The provider's event id, where it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `not_before` in seconds since the epoch, for the metrics.
    #[serde(skip)]
    pub not_before_unix: i64,
}

impl Event {
    /// What identifies the event across polls: the provider's id, else the
    /// code and time (a spot action or a recommendation has no id).
    pub fn key(&self) -> String {
        match &self.id {
            Some(id) => format!("{}:{id}", self.source.name()),
            None => format!("{}:{}@{}", self.source.name(), self.code, self.not_before),
        }
    }

    /// The one warning line logged the first time the event is seen.
    pub fn warning(&self) -> String {
        let id = self
            .id
            .as_deref()
            .map(|i| format!(" {i}"))
            .unwrap_or_default();
        let what = match (self.source, self.data_loss) {
            (Source::Rebalance, _) => {
                "a spot interruption may follow; no data is lost yet".to_string()
            }
            (_, true) => "THIS DESTROYS THE DATA on this node's encrypted volume (its key is gone after it); move the data's replicas away, or replace the node, before then".to_string(),
            (_, false) => "the volume and its data are kept".to_string(),
        };
        format!(
            "{} event {}{id} not before {}: {what}",
            self.source.name(),
            self.code,
            self.not_before
        )
    }
}

/// The data-loss table (README, "Events and data loss"). A code not listed
/// is taken as losing data: an event we do not know could be a stop or a
/// reboot, and a false alarm costs less than a lost replica.
pub fn data_loss(source: Source, code: &str) -> bool {
    match source {
        Source::Spot => true,
        Source::Rebalance => false,
        Source::Scheduled => !matches!(code, "system-maintenance"),
    }
}

/// Codes and ids go into log lines and metric labels: short, and nothing
/// but what AWS uses.
fn token_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses the scheduled events' date form, `21 Jan 2019 09:00:43 GMT`.
pub fn parse_imds_date(s: &str) -> Result<OffsetDateTime, String> {
    let bad = || format!("{s:?} is not a date like \"21 Jan 2019 09:00:43 GMT\"");
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, hms, zone] = parts[..] else {
        return Err(bad());
    };
    if !matches!(zone, "GMT" | "UTC") {
        return Err(bad());
    }
    let num = |t: &str, max_len: usize| -> Result<u32, String> {
        if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)
    .ok_or_else(bad)?;
    let month = Month::try_from(month as u8 + 1).map_err(|_| bad())?;
    let year = num(year, 4)? as i32;
    let date = Date::from_calendar_date(year, month, num(day, 2)? as u8).map_err(|_| bad())?;
    let [h, m, sec] = hms.split(':').collect::<Vec<_>>()[..] else {
        return Err(bad());
    };
    let time = Time::from_hms(num(h, 2)? as u8, num(m, 2)? as u8, num(sec, 2)? as u8)
        .map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| format!("{s:?} is not an RFC 3339 time"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawScheduled {
    code: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    not_before: String,
    #[serde(default)]
    not_after: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The scheduled events document: a JSON list. Canceled and completed events
/// (by `State`, or a `[Canceled]` / `[Completed]` description) are not
/// pending and are left out. A malformed element is an error of its own;
/// the others are still returned.
pub fn parse_scheduled(text: &str) -> (Vec<Event>, Vec<String>) {
    let list: Vec<serde_json::Value> = match serde_json::from_str(text) {
        Ok(l) => l,
        Err(e) => {
            return (
                vec![],
                vec![format!("scheduled events: not a JSON list: {e}")],
            )
        }
    };
    let mut events = vec![];
    let mut errors = vec![];
    for (i, v) in list.into_iter().enumerate() {
        match scheduled_one(v) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => {}
            Err(why) => errors.push(format!("scheduled events: element {i}: {why}")),
        }
    }
    (events, errors)
}

fn scheduled_one(v: serde_json::Value) -> Result<Option<Event>, String> {
    let raw: RawScheduled = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let state = raw.state.as_deref().unwrap_or("").to_ascii_lowercase();
    let desc = one_line(raw.description.as_deref().unwrap_or(""), 256);
    if matches!(state.as_str(), "canceled" | "cancelled" | "completed")
        || desc.starts_with("[Canceled]")
        || desc.starts_with("[Completed]")
    {
        return Ok(None);
    }
    if !token_ok(&raw.code, 64) {
        return Err(format!(
            "Code {:?} is not an event code",
            one_line(&raw.code, 64)
        ));
    }
    let id = match raw.event_id.as_deref() {
        None | Some("") => None,
        Some(i) if token_ok(i, 128) => Some(i.to_string()),
        Some(i) => return Err(format!("EventId {:?} is not an event id", one_line(i, 64))),
    };
    let nb = parse_imds_date(&raw.not_before).map_err(|e| format!("NotBefore {e}"))?;
    let not_after = match raw.not_after.as_deref() {
        None | Some("") => None,
        Some(s) => Some(rfc3339(
            parse_imds_date(s).map_err(|e| format!("NotAfter {e}"))?,
        )),
    };
    Ok(Some(Event {
        data_loss: data_loss(Source::Scheduled, &raw.code),
        code: raw.code,
        not_before: rfc3339(nb),
        not_after,
        source: Source::Scheduled,
        id,
        description: Some(desc).filter(|d| !d.is_empty()),
        not_before_unix: nb.unix_timestamp(),
    }))
}

#[derive(Deserialize)]
struct RawSpot {
    action: String,
    time: String,
}

/// The spot instance-action document: `{"action": ..., "time": RFC 3339}`.
/// Every action loses the instance store, an unknown one too.
pub fn parse_spot(text: &str) -> Result<Event, String> {
    let raw: RawSpot =
        serde_json::from_str(text).map_err(|e| format!("spot instance-action: {e}"))?;
    if !token_ok(&raw.action, 32) {
        return Err(format!(
            "spot instance-action: action {:?} is not an action",
            one_line(&raw.action, 32)
        ));
    }
    let t = parse_rfc3339(&raw.time).map_err(|e| format!("spot instance-action: time {e}"))?;
    let code = format!("spot-{}", raw.action);
    Ok(Event {
        data_loss: data_loss(Source::Spot, &code),
        code,
        not_before: rfc3339(t),
        not_after: None,
        source: Source::Spot,
        id: None,
        description: None,
        not_before_unix: t.unix_timestamp(),
    })
}

#[derive(Deserialize)]
struct RawRebalance {
    #[serde(rename = "noticeTime")]
    notice_time: String,
}

/// The rebalance recommendation: `{"noticeTime": RFC 3339}`.
pub fn parse_rebalance(text: &str) -> Result<Event, String> {
    let raw: RawRebalance =
        serde_json::from_str(text).map_err(|e| format!("rebalance recommendation: {e}"))?;
    let t = parse_rfc3339(&raw.notice_time)
        .map_err(|e| format!("rebalance recommendation: noticeTime {e}"))?;
    Ok(Event {
        code: "rebalance".into(),
        not_before: rfc3339(t),
        not_after: None,
        data_loss: data_loss(Source::Rebalance, "rebalance"),
        source: Source::Rebalance,
        id: None,
        description: None,
        not_before_unix: t.unix_timestamp(),
    })
}

/// What one poll of IMDS found.
#[derive(Debug, Default)]
pub struct Poll {
    /// The pending events of the documents that were read, soonest first.
    pub events: Vec<Event>,
    /// One line per document (or element) that could not be read.
    pub errors: Vec<String>,
    /// Set when nothing answers at the endpoint; then nothing else is tried.
    pub unreachable: Option<String>,
    /// Which documents were read (for keeping the last good events of the others).
    pub read: Vec<Source>,
}

impl Poll {
    pub fn ok(&self) -> bool {
        self.unreachable.is_none() && self.errors.is_empty()
    }
}

/// Reads the three documents once.
pub fn poll(imds: &mut Imds) -> Poll {
    let mut p = Poll::default();
    let docs: [(Source, &str); 3] = [
        (Source::Scheduled, SCHEDULED_PATH),
        (Source::Spot, SPOT_PATH),
        (Source::Rebalance, REBALANCE_PATH),
    ];
    for (source, path) in docs {
        let body = match imds.get(path) {
            Ok(b) => b,
            Err(ImdsError::Unreachable(why)) => {
                p.unreachable = Some(why);
                return p;
            }
            Err(ImdsError::NoToken(why)) => {
                p.errors.push(why);
                return p;
            }
            Err(ImdsError::Failed(why)) => {
                p.errors.push(why);
                continue;
            }
        };
        let before = p.errors.len();
        match (source, body) {
            // No scheduled events is `[]`; a 404 means the same.
            (_, None) => {}
            (Source::Scheduled, Some(b)) => {
                let (ev, errs) = parse_scheduled(&b);
                p.events.extend(ev);
                p.errors.extend(errs);
            }
            (Source::Spot, Some(b)) => match parse_spot(&b) {
                Ok(e) => p.events.push(e),
                Err(e) => p.errors.push(e),
            },
            (Source::Rebalance, Some(b)) => match parse_rebalance(&b) {
                Ok(e) => p.events.push(e),
                Err(e) => p.errors.push(e),
            },
        }
        if p.errors.len() == before {
            p.read.push(source);
        }
    }
    sort(&mut p.events);
    p
}

fn sort(events: &mut [Event]) {
    events.sort_by(|a, b| {
        (a.not_before_unix, a.source, &a.code, &a.id).cmp(&(
            b.not_before_unix,
            b.source,
            &b.code,
            &b.id,
        ))
    });
}

/// For `ephemera events` and `status`: the pending events, with problems
/// logged (no IMDS at all: one info line).
pub fn pending(endpoint: &str) -> (Vec<Event>, Poll) {
    let mut imds = Imds::new(endpoint, crate::node::imds::DEFAULT_TIMEOUT);
    let p = poll(&mut imds);
    if let Some(why) = &p.unreachable {
        tracing::info!(
            "no instance metadata service ({why}): not on EC2, or IMDS is off; no events"
        );
    }
    for e in &p.errors {
        tracing::warn!("IMDS: {e}");
    }
    (p.events.clone(), p)
}

/// `ephemera events [--json | --watch]`. Without `--watch`: prints the
/// pending events; exits 0 when every document was read or nothing answers
/// (not on EC2: one info line), 1 when IMDS answered but a document could
/// not be read (what could be read is printed first).
pub fn command(cfg: &crate::config::Events, host: &Host, json: bool, watch: bool) -> Result<()> {
    if watch {
        let textfile = Some(cfg.textfile.clone()).filter(|p| !p.as_os_str().is_empty());
        let hook = cfg.hook.clone().map(|program| Hook {
            program,
            timeout: Duration::from_secs(cfg.hook_timeout_secs),
        });
        let imds = Imds::new(&cfg.endpoint, crate::node::imds::DEFAULT_TIMEOUT);
        Watcher::new(imds, host.clone(), textfile, hook, cfg.seen_file.clone())
            .run(Duration::from_secs(cfg.interval_secs));
    }
    let (events, p) = pending(&cfg.endpoint);
    if json {
        let text = serde_json::to_string_pretty(&events)
            .map_err(|e| Error::Failed(format!("encoding JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", describe(&events));
    }
    if p.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "IMDS: {} of its event documents could not be read (see above)",
            p.errors.len()
        )))
    }
}

/// The human form of `ephemera events`.
pub fn describe(events: &[Event]) -> String {
    if events.is_empty() {
        return "no pending events\n".into();
    }
    let mut s = String::new();
    for e in events {
        s += &format!(
            "{}  {:<20} {:<9} {:<9} {}{}\n",
            e.not_before,
            e.code,
            if e.data_loss {
                "DATA LOSS"
            } else {
                "data kept"
            },
            e.source.name(),
            e.id.as_deref().unwrap_or("-"),
            e.description
                .as_deref()
                .map(|d| format!("  {d}"))
                .unwrap_or_default(),
        );
    }
    s
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the metrics file says, besides the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The last poll read every document.
    pub imds_up: bool,
    /// Seconds since the epoch of the last poll that read every document.
    pub last_success: Option<i64>,
    /// ephemera's volume as the kernel shows it (`VOLUME_STATES`).
    pub volume_state: &'static str,
}

/// The volume's states the watcher reports, from the kernel alone: it reads
/// no disk, so a kept volume of an earlier boot shows as `absent` here
/// (`ephemera status` names it).
pub const VOLUME_STATES: [&str; 3] = ["provisioned", "unmounted", "absent"];

/// `provisioned` (open and mounted), `unmounted` (open, not mounted) or
/// `absent` (nothing open).
pub fn volume_state(inv: &crate::host::discover::Inventory) -> &'static str {
    match &inv.dm {
        Some(d) if d.mount.is_some() => "provisioned",
        Some(_) => "unmounted",
        None => "absent",
    }
}

/// The textfile-collector text (README, "Metrics").
pub fn render_metrics(events: &[Event], h: &Health) -> String {
    let mut s = String::new();
    s += "# HELP ephemera_event_not_before_seconds A pending event for this instance; the value is its not-before time.\n";
    s += "# TYPE ephemera_event_not_before_seconds gauge\n";
    for e in events {
        s += &format!(
            "ephemera_event_not_before_seconds{{code=\"{}\",source=\"{}\",id=\"{}\",data_loss=\"{}\"}} {}\n",
            label(&e.code),
            e.source.name(),
            label(e.id.as_deref().unwrap_or("")),
            e.data_loss,
            e.not_before_unix
        );
    }
    s += "# HELP ephemera_events_pending Pending events, by whether they lose the volume's data.\n";
    s += "# TYPE ephemera_events_pending gauge\n";
    for loss in [true, false] {
        let n = events.iter().filter(|e| e.data_loss == loss).count();
        s += &format!("ephemera_events_pending{{data_loss=\"{loss}\"}} {n}\n");
    }
    s += "# HELP ephemera_volume_state The encrypted volume's state: 1 for the state it is in.\n";
    s += "# TYPE ephemera_volume_state gauge\n";
    for state in VOLUME_STATES {
        s += &format!(
            "ephemera_volume_state{{state=\"{state}\"}} {}\n",
            u8::from(state == h.volume_state)
        );
    }
    s += "# HELP ephemera_imds_up 1 when the last poll read every IMDS document.\n";
    s += "# TYPE ephemera_imds_up gauge\n";
    s += &format!("ephemera_imds_up {}\n", u8::from(h.imds_up));
    s += "# HELP ephemera_imds_last_success_timestamp_seconds When a poll last read every IMDS document (0: never).\n";
    s += "# TYPE ephemera_imds_last_success_timestamp_seconds gauge\n";
    s += &format!(
        "ephemera_imds_last_success_timestamp_seconds {}\n",
        h.last_success.unwrap_or(0)
    );
    s
}

/// How the metrics are written (`safe_fs`): mode 0644, no fsync (they are
/// rewritten every poll; an fsync every 10 s would be a disk write every
/// 10 s for nothing), into a directory that must exist, whoever owns the
/// ones above it. Debian's prometheus-node-exporter gives /var/lib/prometheus
/// to the `prometheus` account (its postinst), so a refusal of non-root
/// owners would refuse the default layout. It is not needed: no link on the
/// way is followed and the file is made new (`O_EXCL`, random name) then
/// renamed, so that account can at most make the watcher write its metrics,
/// public anyway, as a new root-owned 0644 file in a directory of its
/// choosing; never into a file that exists (security review, issue 17).
pub const METRICS: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Anyone,
    mode: 0o644,
    durable: false,
    dir_mode: None,
};

/// How the seen file is written: it decides whether a hook runs again, so
/// only below directories root alone can change (the default, /run/ephemera,
/// is made 0755 when missing), fsync'ed, mode 0600.
pub const SEEN: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Root,
    mode: 0o600,
    durable: true,
    dir_mode: Some(0o755),
};

/// The hook: a program run once for each new event, the event's JSON on stdin.
#[derive(Debug, Clone)]
pub struct Hook {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl Hook {
    /// Runs the hook for `e` and waits for it, at most `timeout`; then its
    /// process group is killed. Its stdout and stderr are the watcher's (the
    /// journal). Not `cmd::run`: that one gives an empty stdin and looks the
    /// program up by name, where the hook is a path and reads the event.
    pub fn run(&self, e: &Event) -> Result<(), String> {
        let json = serde_json::to_string(e).map_err(|err| format!("encoding the event: {err}"))?;
        let start = Instant::now();
        let mut child = Command::new(&self.program)
            .stdin(Stdio::piped())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("EPHEMERA_EVENT_CODE", &e.code)
            .env("EPHEMERA_EVENT_SOURCE", e.source.name())
            .env("EPHEMERA_EVENT_ID", e.id.as_deref().unwrap_or(""))
            .env("EPHEMERA_EVENT_NOT_BEFORE", &e.not_before)
            .env("EPHEMERA_EVENT_DATA_LOSS", e.data_loss.to_string())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|err| format!("cannot run {}: {err}", self.program.display()))?;
        let pid = child.id() as i32;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its stdin is fine (EPIPE is ignored);
            // the event is one line, well under a pipe's buffer.
            let _ = stdin.write_all(format!("{json}\n").as_bytes());
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(self.timeout) {
            Ok(s) => s.map_err(|err| format!("waiting for {}: {err}", self.program.display()))?,
            Err(_) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = rx.recv();
                return Err(format!(
                    "{} did not finish within {} s and was killed",
                    self.program.display(),
                    self.timeout.as_secs()
                ));
            }
        };
        if status.success() {
            tracing::info!(
                hook = %self.program.display(),
                ms = start.elapsed().as_millis() as u64,
                "hook done for event {}",
                e.key()
            );
            Ok(())
        } else {
            Err(format!("{} failed ({status})", self.program.display()))
        }
    }
}

/// The keys of the events already acted on, with when (seconds since the
/// epoch), persisted in `events.seen_file`. Its default is under /run: a
/// restart of the watcher does not act twice, a reboot (which ends this
/// volume anyway, so the next one is a new replica) starts afresh, and
/// nothing of it is baked into an image.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen(BTreeMap<String, i64>);

impl Seen {
    fn load(path: &Path) -> Seen {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: unreadable ({e}); starting with no events seen",
                    path.display()
                );
                Seen::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::default(),
            Err(e) => {
                tracing::warn!("{}: {e}; starting with no events seen", path.display());
                Seen::default()
            }
        }
    }

    fn insert(&mut self, key: String, now: i64) {
        self.0.insert(key, now);
        while self.0.len() > SEEN_MAX {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(k, t)| (**t, (*k).clone()))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.0.remove(&k),
                None => break,
            };
        }
    }
}

/// What one watcher tick did, for the tests and the benchmark.
#[derive(Debug, Default)]
pub struct Tick {
    pub new_events: Vec<Event>,
    pub hook_failures: usize,
}

/// The watcher: `ephemera events --watch`, run by ephemera-events.service.
pub struct Watcher {
    imds: Imds,
    host: Host,
    textfile: Option<PathBuf>,
    hook: Option<Hook>,
    seen_path: PathBuf,
    seen: Seen,
    /// The last good events of each document.
    last: BTreeMap<Source, Vec<Event>>,
    last_success: Option<i64>,
    /// What was last logged about IMDS's health, so that a state is logged
    /// once when it begins, not at every poll.
    logged: Option<String>,
    /// What stops the metrics, as last logged.
    textfile_logged: Option<String>,
}

impl Watcher {
    pub fn new(
        imds: Imds,
        host: Host,
        textfile: Option<PathBuf>,
        hook: Option<Hook>,
        seen_path: PathBuf,
    ) -> Watcher {
        let seen = Seen::load(&seen_path);
        Watcher {
            imds,
            host,
            textfile,
            hook,
            seen_path,
            seen,
            last: BTreeMap::new(),
            last_success: None,
            logged: None,
            textfile_logged: None,
        }
    }

    pub fn imds(&self) -> &Imds {
        &self.imds
    }

    /// One poll: log a change in IMDS's health, warn about and hook each
    /// new event, write the metrics.
    pub fn tick(&mut self) -> Tick {
        let p = poll(&mut self.imds);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.log_health(&p);
        if p.ok() {
            self.last_success = Some(now);
        }
        for s in &p.read {
            self.last.insert(
                *s,
                p.events
                    .iter()
                    .filter(|e| e.source == *s)
                    .cloned()
                    .collect(),
            );
        }
        let mut events: Vec<Event> = self.last.values().flatten().cloned().collect();
        sort(&mut events);
        let fresh: Vec<Event> = events
            .iter()
            .filter(|e| !self.seen.0.contains_key(&e.key()))
            .take(NEW_PER_POLL)
            .cloned()
            .collect();
        let mut tick = Tick::default();
        if !fresh.is_empty() {
            for e in &fresh {
                tracing::warn!("{}", e.warning());
                self.seen.insert(e.key(), now);
            }
            // Saved before the hook runs: a crash in the hook never runs it twice.
            self.save_seen();
            for e in &fresh {
                if let Some(h) = &self.hook {
                    if let Err(why) = h.run(e) {
                        tracing::error!("hook for event {}: {why}; not retried", e.key());
                        tick.hook_failures += 1;
                    }
                }
            }
        }
        self.write_metrics(&events, p.ok());
        tick.new_events = fresh;
        tick
    }

    fn log_health(&mut self, p: &Poll) {
        let state = match (&p.unreachable, p.errors.is_empty()) {
            (Some(why), _) => format!("no instance metadata service ({why}): not on EC2, or IMDS is off; polling on quietly"),
            (None, false) => format!("IMDS: {}", p.errors.join("; ")),
            (None, true) => "IMDS answers".to_string(),
        };
        if self.logged.as_deref() == Some(state.as_str()) {
            return;
        }
        match (&p.unreachable, p.errors.is_empty()) {
            (Some(_), _) => tracing::info!("{state}"),
            (None, false) => tracing::warn!("{state}"),
            // The first good poll after a bad one; a good start is not news.
            (None, true) if self.logged.is_some() => tracing::info!("{state}"),
            (None, true) => {}
        }
        self.logged = Some(state);
    }

    fn save_seen(&self) {
        let text = serde_json::to_string(&self.seen).unwrap_or_default();
        if let Err(e) = safe_fs::write_file(&self.seen_path, text.as_bytes(), SEEN) {
            tracing::warn!("{e}; a restart of the watcher would act on these events again");
        }
    }

    /// Writes the metrics; what stops it is logged once, when it begins
    /// (a missing directory at info, anything else as a warning), not at
    /// every poll.
    fn write_metrics(&mut self, events: &[Event], imds_up: bool) {
        let Some(path) = &self.textfile else { return };
        let health = Health {
            imds_up,
            last_success: self.last_success,
            volume_state: volume_state(&crate::host::discover::discover(&self.host)),
        };
        let problem = match safe_fs::write_file(path, render_metrics(events, &health).as_bytes(), METRICS) {
            Ok(()) => None,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Some((
                false,
                format!(
                    "{} does not exist (is prometheus-node-exporter installed?); no metrics written until it does",
                    path.parent().unwrap_or(Path::new("/")).display()
                ),
            )),
            Err(e) => Some((true, format!("no metrics written: {e}"))),
        };
        if problem.as_ref().map(|p| &p.1) != self.textfile_logged.as_ref() {
            match &problem {
                Some((true, m)) => tracing::warn!("{m}"),
                Some((false, m)) => tracing::info!("{m}"),
                None => {}
            }
        }
        self.textfile_logged = problem.map(|p| p.1);
    }

    /// Polls every `interval`, forever (until systemd stops the service).
    pub fn run(&mut self, interval: Duration) -> ! {
        tracing::info!(
            endpoint = self.imds.endpoint(),
            interval_s = interval.as_secs(),
            textfile = %self.textfile.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
            hook = %self.hook.as_ref().map(|h| h.program.display().to_string()).unwrap_or_else(|| "none".into()),
            "watching for maintenance events and interruptions"
        );
        loop {
            self.tick();
            // The poll period itself, not a wait for a condition.
            std::thread::sleep(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example, with a canceled and a completed event added.
    const SCHEDULED: &str = r#"[
      {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot",
       "Description": "scheduled reboot", "EventId": "instance-event-0d59937288b749b32",
       "NotAfter": "21 Jan 2019 09:17:23 GMT", "State": "active",
       "NotBeforeDeadline": "31 Jan 2019 09:00:43 GMT"},
      {"NotBefore": "1 Feb 2019 10:00:00 GMT", "Code": "system-maintenance",
       "Description": "[Canceled] scheduled maintenance", "EventId": "instance-event-1",
       "NotAfter": "1 Feb 2019 12:00:00 GMT", "State": "active"},
      {"NotBefore": "2 Feb 2019 10:00:00 GMT", "Code": "instance-stop",
       "Description": "scheduled stop", "EventId": "instance-event-2", "State": "completed"},
      {"NotBefore": "3 Feb 2019 10:00:00 GMT", "Code": "instance-retirement",
       "Description": "[Completed] retirement", "EventId": "instance-event-3"}
    ]"#;

    #[test]
    fn scheduled_keeps_pending_events_only() {
        let (ev, errs) = parse_scheduled(SCHEDULED);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ev.len(), 1, "{ev:?}");
        let e = &ev[0];
        assert_eq!(e.code, "system-reboot");
        assert_eq!(e.not_before, "2019-01-21T09:00:43Z");
        assert_eq!(e.not_after.as_deref(), Some("2019-01-21T09:17:23Z"));
        assert_eq!(e.id.as_deref(), Some("instance-event-0d59937288b749b32"));
        assert_eq!(e.not_before_unix, 1548061243);
        assert!(e.data_loss);
        assert_eq!(e.source, Source::Scheduled);
    }

    #[test]
    fn the_data_loss_table() {
        for code in [
            "system-reboot",
            "instance-reboot",
            "instance-stop",
            "instance-retirement",
            "some-future-code",
        ] {
            assert!(data_loss(Source::Scheduled, code), "{code}");
        }
        assert!(!data_loss(Source::Scheduled, "system-maintenance"));
        assert!(!data_loss(Source::Rebalance, "rebalance"));
        for a in ["terminate", "stop", "hibernate", "something-new"] {
            let e = parse_spot(&format!(
                r#"{{"action":"{a}","time":"2017-09-18T08:22:00Z"}}"#
            ))
            .unwrap();
            assert_eq!(e.code, format!("spot-{a}"));
            assert!(e.data_loss, "{a}");
        }
    }

    #[test]
    fn dates() {
        let t = parse_imds_date("21 Jan 2019 09:00:43 GMT").unwrap();
        assert_eq!(rfc3339(t), "2019-01-21T09:00:43Z");
        assert_eq!(
            rfc3339(parse_imds_date("01 Feb 2019 00:00:00 GMT").unwrap()),
            "2019-02-01T00:00:00Z"
        );
        for bad in [
            "2019-01-21T09:00:43Z",
            "21 Jan 2019 09:00:43",
            "21 Jan 2019 09:00:43 CET",
            "32 Jan 2019 09:00:43 GMT",
            "21 January 2019 09:00:43 GMT",
            "21 Jan 2019 25:00:43 GMT",
            "21 Jan 2019 09:00 GMT",
            "21 Jan +019 09:00:43 GMT",
            "",
        ] {
            assert!(parse_imds_date(bad).is_err(), "{bad:?} parsed");
        }
        // A scheduled event with a wrong date is an error naming the field,
        // and the good events beside it are kept.
        let (ev, errs) = parse_scheduled(
            r#"[{"Code":"instance-stop","NotBefore":"2019-01-21T09:00:43Z","EventId":"a"},
                {"Code":"instance-reboot","NotBefore":"5 Mar 2024 10:00:00 GMT","EventId":"b"}]"#,
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].code, "instance-reboot");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("element 0") && errs[0].contains("NotBefore"),
            "{errs:?}"
        );
    }

    #[test]
    fn spot_and_rebalance() {
        let e = parse_spot(r#"{"action": "stop", "time": "2017-09-18T08:22:00+02:00"}"#).unwrap();
        assert_eq!(e.not_before, "2017-09-18T06:22:00Z");
        assert_eq!(e.source, Source::Spot);
        assert!(e.id.is_none());
        let r = parse_rebalance(r#"{"noticeTime": "2020-10-27T08:22:00Z"}"#).unwrap();
        assert_eq!((r.code.as_str(), r.data_loss), ("rebalance", false));
        assert_eq!(r.not_before, "2020-10-27T08:22:00Z");
        for bad in [
            "",
            "{",
            "[]",
            r#"{"action":"terminate"}"#,
            r#"{"action":"terminate","time":"21 Jan 2019 09:00:43 GMT"}"#,
            r#"{"action":"ter minate","time":"2017-09-18T08:22:00Z"}"#,
        ] {
            let err = parse_spot(bad).unwrap_err();
            assert!(
                err.starts_with("spot instance-action") && !err.contains('\n'),
                "{err}"
            );
        }
        assert!(parse_rebalance(r#"{"noticeTime":"soon"}"#).is_err());
    }

    #[test]
    fn garbage_scheduled_documents_are_one_line_errors() {
        for bad in [
            "",
            "{",
            "{}",
            "null",
            "[1]",
            r#"[{"Code":"x"}]"#,
            "[{\"Code\":\"a\nb\",\"NotBefore\":\"21 Jan 2019 09:00:43 GMT\"}]",
        ] {
            let (ev, errs) = parse_scheduled(bad);
            assert!(ev.is_empty(), "{bad:?}");
            assert_eq!(errs.len(), 1, "{bad:?}: {errs:?}");
            assert!(!errs[0].contains('\n'), "{errs:?}");
        }
        assert_eq!(parse_scheduled("[]"), (vec![], vec![]));
    }

    #[test]
    fn metrics_text() {
        let (ev, _) = parse_scheduled(SCHEDULED);
        let m = render_metrics(
            &ev,
            &Health {
                imds_up: true,
                last_success: Some(1700000000),
                volume_state: "provisioned",
            },
        );
        assert!(m.contains("ephemera_event_not_before_seconds{code=\"system-reboot\",source=\"scheduled\",id=\"instance-event-0d59937288b749b32\",data_loss=\"true\"} 1548061243\n"), "{m}");
        assert!(m.contains("ephemera_events_pending{data_loss=\"true\"} 1\n"));
        assert!(m.contains("ephemera_events_pending{data_loss=\"false\"} 0\n"));
        assert!(m.contains("ephemera_volume_state{state=\"provisioned\"} 1\n"));
        assert!(m.contains("ephemera_volume_state{state=\"absent\"} 0\n"));
        assert!(m.contains("ephemera_volume_state{state=\"unmounted\"} 0\n"));
        assert!(m.contains("ephemera_imds_up 1\n"));
        assert!(m.contains("ephemera_imds_last_success_timestamp_seconds 1700000000\n"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn seen_keeps_the_newest() {
        let mut s = Seen::default();
        for i in 0..(SEEN_MAX as i64 + 10) {
            s.insert(format!("k{i}"), i);
        }
        assert_eq!(s.0.len(), SEEN_MAX);
        assert!(!s.0.contains_key("k0") && s.0.contains_key(&format!("k{}", SEEN_MAX + 9)));
    }
}
