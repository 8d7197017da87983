//! The three IMDS documents (scheduled maintenance, spot interruption,
//! rebalance recommendation) and their parsers: pure, fuzzed.

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::{data_loss, Event, Source};
use crate::error::Result;

pub const SCHEDULED_PATH: &str = "/latest/meta-data/events/maintenance/scheduled";
pub const SPOT_PATH: &str = "/latest/meta-data/spot/instance-action";
pub const REBALANCE_PATH: &str = "/latest/meta-data/events/recommendations/rebalance";

/// Codes and ids go into log lines and metric labels: short, and nothing
/// but what AWS uses.
fn token_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(super) fn rfc3339(t: OffsetDateTime) -> String {
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

/// An RFC 3339 time, taken to UTC. A time whose UTC form falls outside the
/// years 0000-9999 (`0000-01-01T00:00:00+01:00`) is refused here, because
/// it could not be written back as RFC 3339 in UTC.
fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(UtcOffset::UTC))
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time"))
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
        kept_by_unlock: false,
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
        kept_by_unlock: false,
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
        kept_by_unlock: false,
        source: Source::Rebalance,
        id: None,
        description: None,
        not_before_unix: t.unix_timestamp(),
    })
}
