//! The scheduled-events parser: never panics; every error is one line; every
//! event it keeps is pending (not canceled or completed) and well formed.
#![no_main]

#[path = "event_check.rs"]
mod event_check;

use ephemera::node::events;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (evs, errs) = events::parse_scheduled(text);
    for e in &evs {
        event_check::check(e);
        assert_eq!(e.source, events::Source::Scheduled);
        let d = e.description.as_deref().unwrap_or("");
        assert!(
            !d.starts_with("[Canceled]") && !d.starts_with("[Completed]"),
            "{e:?}"
        );
    }
    for m in &errs {
        event_check::one_line(m);
    }
});
