//! The config parser and validator: never panics, and every error is one
//! line (the contract for bad input: exit 2 with one line naming it).
#![no_main]

use std::path::Path;

use ephemera::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let r = Config::parse(text, Path::new("/etc/ephemera/config.toml")).and_then(|c| {
        c.validate()?;
        Ok(c)
    });
    match r {
        Ok(c) => {
            // What validates round-trips through TOML unchanged.
            let again = toml::to_string(&c).expect("a valid config serialises");
            let back = Config::parse(&again, Path::new("again.toml")).expect("re-parses");
            assert_eq!(back, c);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.contains(char::is_control),
                "error is not one line of text: {msg:?}"
            );
            assert_eq!(e.exit_code(), ephemera::error::EXIT_USAGE);
        }
    }
});
