//! The escrow envelope parser, and `open` on what it accepts: never panics;
//! every rejection is a one-line usage error (exit 2).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ephemera::error::{Error, EXIT_USAGE};
use ephemera::escrow;
use libfuzzer_sys::fuzz_target;
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;

/// A throwaway key made for this target only (fuzz_targets/test-only-key.pem).
fn key() -> &'static (RsaPrivateKey, String) {
    static K: OnceLock<(RsaPrivateKey, String)> = OnceLock::new();
    K.get_or_init(|| {
        let sk = RsaPrivateKey::from_pkcs8_pem(include_str!("test-only-key.pem")).unwrap();
        let fp = escrow::fingerprint(&sk.to_public_key()).unwrap();
        (sk, fp)
    })
}

fn one_line_usage(e: &Error) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
    assert_eq!(e.exit_code(), EXIT_USAGE, "{msg}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match escrow::parse(text, Path::new("escrow.json")) {
        Err(e) => one_line_usage(&e),
        Ok(mut env) => {
            // The console form parses back to the same envelope.
            let console = escrow::console_text(&env).unwrap();
            let body = console
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(escrow::parse(&body, Path::new("console")).unwrap(), env);
            // Reach the base64 and RSA-OAEP paths with a recipient that matches.
            let (sk, fp) = key();
            env.recipient.key_fingerprint = fp.clone();
            if let Err(e) = escrow::open(&env, sk) {
                one_line_usage(&e);
            }
        }
    }
});
