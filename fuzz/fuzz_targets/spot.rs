//! The spot instance-action parser: never panics, errors are one line, and
//! every action it accepts is a `spot-` code that loses data.
#![no_main]

#[path = "event_check.rs"]
mod event_check;

use ephemera::node::events;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match events::parse_spot(text) {
        Ok(e) => {
            event_check::check(&e);
            assert!(e.code.starts_with("spot-") && e.data_loss, "{e:?}");
        }
        Err(m) => event_check::one_line(&m),
    }
});
