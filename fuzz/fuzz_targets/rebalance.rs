//! The rebalance-recommendation parser: never panics, errors are one line,
//! and a recommendation is a warning, never a data loss.
#![no_main]

#[path = "event_check.rs"]
mod event_check;

use ephemera::node::events;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match events::parse_rebalance(text) {
        Ok(e) => {
            event_check::check(&e);
            assert!(e.code == "rebalance" && !e.data_loss, "{e:?}");
        }
        Err(m) => event_check::one_line(&m),
    }
});
