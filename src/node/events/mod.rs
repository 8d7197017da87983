//! Scheduled maintenance, spot interruptions and rebalance recommendations,
//! read from IMDS, and what they do to this node's data.
//!
//! Pure parts first (the three document parsers, the data-loss table, the
//! metrics text), then the I/O: one poll of IMDS, and the watcher that warns,
//! writes the metrics and runs the hook once per new event. None of this runs
//! during `provision`.
//!
//! The module by seam: `documents` (the parsers), `metrics` (the textfile),
//! `hook`, `watch` (the watcher); here, what an event is, one poll, and the
//! `events` command.

mod documents;
mod hook;
mod metrics;
mod watch;

pub use documents::*;
pub use hook::Hook;
pub use metrics::*;
pub use watch::*;

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::node::imds::{Imds, ImdsError};

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
    /// A reboot on a node whose volume unlocks at the next boot (`[unlock]`,
    /// its unlock file there): not a loss. Only written when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept_by_unlock: bool,
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
            (_, false) if self.kept_by_unlock => "the volume is bound to this instance's pins ([unlock]) and opens again at the next boot; if they do not answer then, it is kept for ops, not lost".to_string(),
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

/// A reboot, of the instance or of its host: the instance store stays,
/// only the key in the kernel goes.
pub fn is_reboot(source: Source, code: &str) -> bool {
    source == Source::Scheduled && matches!(code, "system-reboot" | "instance-reboot")
}

/// On a node whose volume unlocks at the next boot (`reboot_keeps`), a
/// reboot is no loss: its events say so. Stops, retirements and spot
/// actions still lose the instance store. Pure.
pub fn with_unlock(events: &mut [Event], reboot_keeps: bool) {
    for e in events.iter_mut().filter(|e| is_reboot(e.source, &e.code)) {
        e.kept_by_unlock = reboot_keeps;
        e.data_loss = !reboot_keeps;
    }
}

/// Whether a reboot keeps this node's data: the next boot's own decision
/// ([`crate::decision::reboot`]) on the facts as the kernel (`inv`) and the
/// node's records show them now, this boot's mapping taken away, is to
/// unlock the volume mounted at `mount.path`. Anything else is a loss: a
/// new volume, a refusal, or a volume kept for ops. No disk is opened.
pub fn reboot_keeps_data(
    host: &Host,
    inv: &crate::host::discover::Inventory,
    cfg: &crate::config::Config,
) -> bool {
    let facts = crate::decision::survey::kernel_and_records(host, cfg, inv.clone());
    !crate::decision::reboot::reboot(&facts, cfg).data_loss()
}

/// The pending events of this node (`ephemera events`, `status`): as
/// [`pending`], with its reboots judged by [`reboot_keeps_data`].
pub fn for_node(host: &Host, cfg: &crate::config::Config) -> (Vec<Event>, Poll) {
    let (mut events, p) = pending(&cfg.events.endpoint);
    let keeps = reboot_keeps_data(host, &crate::host::discover::discover(host), cfg);
    with_unlock(&mut events, keeps);
    (events, p)
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

/// The least time between two retries of the envelope uploads that failed.
pub const ESCROW_RETRY_SECS: u64 = 60;

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
pub fn command(config: &crate::config::Config, host: &Host, json: bool, watch: bool) -> Result<()> {
    let cfg = &config.events;
    if watch {
        let textfile = Some(cfg.textfile.clone()).filter(|p| !p.as_os_str().is_empty());
        let hook = cfg.hook.clone().map(|program| Hook {
            program,
            timeout: Duration::from_secs(cfg.hook_timeout_secs),
        });
        let imds = Imds::new(&cfg.endpoint, crate::node::imds::DEFAULT_TIMEOUT);
        Watcher::new(imds, host.clone(), textfile, hook, cfg.seen_file.clone())
            .with_config(config)
            .with_escrow_store(
                config.clone(),
                Duration::from_secs(cfg.interval_secs.max(ESCROW_RETRY_SECS)),
            )
            .run(Duration::from_secs(cfg.interval_secs));
    }
    let (events, p) = for_node(host, config);
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
            } else if e.kept_by_unlock {
                "unlocks"
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

#[cfg(test)]
mod tests {
    use super::documents::rfc3339;
    use super::metrics::label;
    use super::watch::{Seen, SEEN_MAX};
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
        // An offset that takes the time out of the years RFC 3339 can write
        // in UTC is an error, not an event with a malformed time (found by
        // the spot fuzz target in CI).
        for t in ["0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"] {
            let e = parse_spot(&format!(r#"{{"action":"stop","time":"{t}"}}"#)).unwrap_err();
            assert!(e.contains(t), "{e}");
            assert!(parse_rebalance(&format!(r#"{{"noticeTime":"{t}"}}"#)).is_err());
        }
        let e = parse_spot(r#"{"action":"stop","time":"0000-01-01T00:01:00+00:01"}"#).unwrap();
        assert_eq!(e.not_before, "0000-01-01T00:00:00Z");
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
                guard_armed: true,
                unlock_bound: Some(false),
            },
        );
        assert!(m.contains("ephemera_event_not_before_seconds{code=\"system-reboot\",source=\"scheduled\",id=\"instance-event-0d59937288b749b32\",data_loss=\"true\"} 1548061243\n"), "{m}");
        assert!(m.contains("ephemera_events_pending{data_loss=\"true\"} 1\n"));
        assert!(m.contains("ephemera_events_pending{data_loss=\"false\"} 0\n"));
        assert!(m.contains("ephemera_volume_state{state=\"provisioned\"} 1\n"));
        assert!(m.contains("ephemera_volume_state{state=\"absent\"} 0\n"));
        assert!(m.contains("ephemera_volume_state{state=\"unmounted\"} 0\n"));
        assert!(m.contains("ephemera_volume_state{state=\"kept\"} 0\n"));
        assert!(m.contains("ephemera_guard_armed 1\n"));
        assert!(m.contains("ephemera_unlock_bound 0\n"));
        // Without [unlock] (or a mounted volume), no such series at all.
        let m = render_metrics(
            &ev,
            &Health {
                imds_up: true,
                last_success: Some(1700000000),
                volume_state: "kept",
                guard_armed: false,
                unlock_bound: None,
            },
        );
        assert!(m.contains("ephemera_volume_state{state=\"kept\"} 1\n"));
        assert!(m.contains("ephemera_guard_armed 0\n"));
        assert!(!m.contains("ephemera_unlock_bound"), "{m}");
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
    #[test]
    fn with_unlock_a_reboot_is_no_loss_and_nothing_else_changes() {
        let scheduled = r#"[
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot", "EventId": "a"},
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "instance-reboot", "EventId": "b"},
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "instance-stop", "EventId": "c"},
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "instance-retirement", "EventId": "d"},
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-maintenance", "EventId": "e"}]"#;
        let (mut ev, errors) = parse_scheduled(scheduled);
        assert!(errors.is_empty(), "{errors:?}");
        ev.push(parse_spot(r#"{"action": "stop", "time": "2019-01-21T08:59:00Z"}"#).unwrap());
        let loss = |ev: &[Event]| -> Vec<(String, bool, bool)> {
            ev.iter()
                .map(|e| (e.code.clone(), e.data_loss, e.kept_by_unlock))
                .collect()
        };
        let before = loss(&ev);
        with_unlock(&mut ev, false);
        assert_eq!(loss(&ev), before, "no unlock: the table as it is");
        with_unlock(&mut ev, true);
        let s = |c: &str, l, k| (c.to_string(), l, k);
        assert_eq!(
            loss(&ev),
            vec![
                s("system-reboot", false, true),
                s("instance-reboot", false, true),
                s("instance-stop", true, false),
                s("instance-retirement", true, false),
                s("system-maintenance", false, false),
                s("spot-stop", true, false),
            ]
        );
        assert!(
            ev[0].warning().contains("opens again at the next boot"),
            "{}",
            ev[0].warning()
        );
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json[0]["kept_by_unlock"], true);
        assert!(
            json[2].get("kept_by_unlock").is_none(),
            "written only when true"
        );
        assert!(
            describe(&ev[..1]).contains(" unlocks "),
            "{}",
            describe(&ev[..1])
        );
        // The volume's unlock file goes (a new volume after a stop and start):
        // a reboot loses the data again.
        with_unlock(&mut ev, false);
        assert_eq!(loss(&ev), before);
    }
}
