//! The unlock file parser (versions 1 and 2) and the clevis token reader (keys::unlock): never
//! panics; every rejection is one line, a usage error (exit 2); every file
//! it accepts names a volume recovery can reassemble, and pins that its
//! token says.
#![no_main]

use std::path::Path;

use ephemera::error::EXIT_USAGE;
use ephemera::keys::{escrow, pins, unlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(m) = unlock::describe_token(text.trim()) {
        assert!(!m.contains(char::is_control), "{m:?}");
    }
    match unlock::parse(text, Path::new("u.json")) {
        Ok(s) => {
            match &s.clevis {
                Some(token) => {
                    assert_eq!(
                        unlock::describe_token(token).as_deref(),
                        Ok(s.pins.as_str())
                    );
                    assert!(token.len() <= unlock::MAX_TOKEN);
                }
                None => {
                    let t = s.threshold.expect("version 2 has a threshold");
                    assert!(t >= 1 && t as usize <= s.slots.len());
                    assert_eq!(pins::describe(t, &s.slots), s.pins);
                }
            }
            let p = escrow::volume_params(&s.volume())
                .expect("an accepted file names a volume recovery can reassemble");
            assert_eq!(p.serials, s.members);
        }
        Err(e) => {
            assert_eq!(e.exit_code(), EXIT_USAGE, "{e}");
            assert!(!e.to_string().contains(char::is_control), "{e}");
        }
    }
});
