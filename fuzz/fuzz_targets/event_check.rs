//! What every event a parser accepts must hold, whatever the input.

use ephemera::node::events::{self, Event, Health};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn check(e: &Event) {
    // not_before is RFC 3339 in UTC and agrees with the metrics' value.
    assert!(e.not_before.ends_with('Z'), "{e:?}");
    let t = OffsetDateTime::parse(&e.not_before, &Rfc3339).expect("not_before is RFC 3339");
    assert_eq!(t.unix_timestamp(), e.not_before_unix, "{e:?}");
    if let Some(a) = &e.not_after {
        OffsetDateTime::parse(a, &Rfc3339).expect("not_after is RFC 3339");
    }
    // Codes and ids are plain tokens: safe in a log line and a label.
    for s in std::iter::once(&e.code).chain(e.id.as_ref()) {
        assert!(
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
            "{s:?}"
        );
    }
    assert_eq!(e.data_loss, events::data_loss(e.source, &e.code), "{e:?}");
    assert!(!e.warning().contains(char::is_control), "{e:?}");
    let json = serde_json::to_string(e).unwrap();
    assert!(!json.contains('\n'));
    // One series per event, each line `name{labels} value` or a comment.
    let m = events::render_metrics(
        std::slice::from_ref(e),
        &Health {
            imds_up: true,
            last_success: None,
            volume_state: "absent",
            guard_armed: false,
            unlock_bound: None,
        },
    );
    let series = m
        .lines()
        .filter(|l| l.starts_with("ephemera_event_not_before_seconds{"))
        .count();
    assert_eq!(series, 1, "{m}");
}

pub fn one_line(msg: &str) {
    assert!(
        !msg.contains(char::is_control),
        "error is not one line of text: {msg:?}"
    );
}
