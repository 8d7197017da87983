//! The escrow envelope parser (versions 1 and 2), the values `recover`
//! hands to the md ioctls and libcryptsetup (escrow::recovery_params,
//! md::Raid0Geometry), and `open` on what it accepts: never panics; every rejection is a one-line
//! usage error (exit 2); every accepted envelope gives in-range ioctl values.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ephemera::error::{Error, EXIT_USAGE};
use ephemera::keys::escrow;
use ephemera::volume::md;
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
    assert!(
        !msg.contains(char::is_control),
        "error is not one line of text: {msg:?}"
    );
    assert_eq!(e.exit_code(), EXIT_USAGE, "{msg}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match escrow::parse(text, Path::new("escrow.json")) {
        Err(e) => one_line_usage(&e),
        Ok(mut env) => {
            // The whole envelope-to-ioctl path: what parse accepts gives
            // values the kernel can take, with no overflow on the way.
            let p = escrow::recovery_params(&env).expect("parse accepted it");
            assert!((1..=md::MAX_MEMBERS).contains(&p.serials.len()));
            assert!([16, 32, 48, 64].contains(&p.key_bytes), "{}", p.key_bytes);
            assert!([512, 1024, 2048, 4096].contains(&p.sector_size));
            match p.raid {
                None => assert_eq!(p.serials.len(), 1),
                Some(g) => {
                    assert_eq!(g.disks as usize, p.serials.len());
                    assert!(g.disks >= 2);
                    assert!(g.chunk_bytes >= 4096 && g.chunk_bytes <= 1 << 30);
                    assert!((g.chunk_bytes as u32).is_power_of_two());
                    assert_eq!(
                        g.chunk_bytes as u64,
                        env.raid.as_ref().unwrap().chunk_kib as u64 * 1024
                    );
                }
            }
            // The console form parses back to the same envelope.
            let console = escrow::console_text(&env).unwrap();
            let body = console
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(escrow::parse(&body, Path::new("console")).unwrap(), env);
            // Reach the base64, RSA-OAEP and share paths with a recipient
            // that matches (version 1's one, or version 2's first).
            let (sk, fp) = key();
            match (&mut env.recipient, env.recipients.first_mut()) {
                (Some(r), _) => r.key_fingerprint = fp.clone(),
                (None, Some(s)) => s.key_fingerprint = fp.clone(),
                (None, None) => unreachable!("parse accepted an envelope with no recipient"),
            }
            if let Err(e) = escrow::open(&env, std::slice::from_ref(sk)) {
                one_line_usage(&e);
            }
        }
    }
});
