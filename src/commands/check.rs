//! `check`: the config and what it names, without looking at a disk, for
//! an image build (packer/install.sh) or a person before a rollout. The
//! same refusals as `provision` before its first write (`preflight`), the
//! cipher looked up in the kernel's lists instead of loaded; and the files
//! that only the watcher and the store upload read later, which fail
//! quietly at run time otherwise.

use std::os::unix::fs::PermissionsExt;

use super::provision::{preflight, CipherCheck};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::keys::escrow;

/// What was checked, one line each, for a person; an error (exit 2) for
/// the first thing that is not right.
pub fn check(host: &Host, cfg: &Config) -> Result<Vec<String>> {
    let keys = preflight(host, cfg, CipherCheck::Listed)?;
    let mut out = Vec::new();
    out.push(if keys.is_empty() {
        "escrow: none (the key is forgotten; a reboot loses the data unless [unlock] keeps it)"
            .to_string()
    } else {
        let prints = keys
            .iter()
            .map(escrow::fingerprint)
            .collect::<Result<Vec<_>>>()?;
        format!(
            "escrow: {} of {} key(s), each readable: {}",
            cfg.escrow.threshold,
            keys.len(),
            prints.join(", ")
        )
    });
    out.push(if cfg.unlock.enabled() {
        format!(
            "unlock: {} of {} pin(s) (tpm2: {}, kms: {}, tang: {}){}",
            cfg.unlock.threshold,
            cfg.unlock.pins(),
            cfg.unlock.tpm2,
            cfg.unlock
                .kms
                .as_ref()
                .map_or("none", |k| k.key_id.as_str()),
            cfg.unlock.tang.len(),
            if cfg.unlock.tang.is_empty() {
                ""
            } else {
                "; clevis is installed"
            }
        )
    } else {
        "unlock: off".into()
    });
    let kernel = cfg.luks.cipher.kernel_name();
    out.push(match crate::volume::cipher::listed(host, &cfg.luks.cipher) {
        Some(_) => format!("luks.cipher: the kernel has {kernel} or its modules"),
        None => format!("luks.cipher: cannot tell here whether the kernel has {kernel}; provision asks it before any write"),
    });
    let cas = [
        (
            "escrow.store.ca_file",
            cfg.escrow.store.as_ref().and_then(|s| s.ca_file.as_ref()),
        ),
        (
            "unlock.kms.ca_file",
            cfg.unlock.kms.as_ref().and_then(|k| k.ca_file.as_ref()),
        ),
    ];
    for (key, ca) in cas {
        let Some(ca) = ca else { continue };
        let text = std::fs::read_to_string(host.abs(ca)).map_err(|e| {
            Error::Usage(format!("config {key}: {}: cannot read: {e}", ca.display()))
        })?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Usage(format!(
                "config {key}: {} holds no PEM certificate",
                ca.display()
            )));
        }
        out.push(format!("{key}: {} holds certificates", ca.display()));
    }
    if let Some(hook) = &cfg.events.hook {
        let meta = std::fs::metadata(host.abs(hook))
            .map_err(|e| Error::Usage(format!("config events.hook: {}: {e}", hook.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(Error::Usage(format!(
                "config events.hook: {} is not an executable file",
                hook.display()
            )));
        }
        out.push(format!("events.hook: {} is executable", hook.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        let c = Config::parse(text, Path::new("t.toml")).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn check_refuses_what_provision_refuses_and_names_the_key() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        // All defaults: good, and it says what it could not tell.
        let lines = check(&host, &Config::default()).unwrap();
        assert!(lines.iter().any(|l| l == "escrow: none (the key is forgotten; a reboot loses the data unless [unlock] keeps it)"), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("luks.cipher: cannot tell here")),
            "{lines:?}"
        );
        let refused = |c: &Config, needle: &str| {
            let e = check(&host, c).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
            assert!(e.to_string().contains(needle), "{e} should say {needle}");
        };
        // A key that is not there (provision's own refusal).
        refused(
            &cfg("[escrow]\npublic_key = \"/nonexistent/escrow.pub.pem\"\n"),
            "/nonexistent/escrow.pub.pem: cannot read",
        );
        // The cipher, where the kernel's lists can be read and lack it.
        let w = |p: &str, text: &str| {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("proc/crypto", "name         : aes\n");
        w("proc/sys/kernel/osrelease", "6.1.0\n");
        w(
            "lib/modules/6.1.0/modules.alias",
            "alias crypto-xts xts\nalias crypto-twofish twofish_generic\n",
        );
        refused(
            &cfg("[luks]\ncipher = \"rot13-xts-plain64\"\n"),
            "config luks.cipher: the kernel has no xts(rot13)",
        );
        // What only the watcher and the upload read later.
        refused(
            &cfg("[events]\nhook = \"/nonexistent-hook\"\n"),
            "config events.hook: /nonexistent-hook",
        );
        w("hook", "#!/bin/sh\n");
        refused(
            &cfg("[events]\nhook = \"/hook\"\n"),
            "config events.hook: /hook is not an executable file",
        );
        std::fs::set_permissions(
            t.path().join("hook"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let lines = check(&host, &cfg("[events]\nhook = \"/hook\"\n")).unwrap();
        assert!(
            lines.contains(&"events.hook: /hook is executable".to_string()),
            "{lines:?}"
        );
        // The kms pin: no clevis asked for (the line says none), its CA
        // file read as the store's is.
        let kms = "[unlock]\nkms = { key_id = \"alias/eph\", ca_file = \"/kms-ca.pem\" }\n";
        refused(
            &cfg(kms),
            "config unlock.kms.ca_file: /kms-ca.pem: cannot read",
        );
        w(
            "kms-ca.pem",
            "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n",
        );
        let lines = check(&host, &cfg(kms)).unwrap();
        assert!(
            lines.contains(
                &"unlock: 1 of 1 pin(s) (tpm2: false, kms: alias/eph, tang: 0)".to_string()
            ) && lines.contains(&"unlock.kms.ca_file: /kms-ca.pem holds certificates".to_string()),
            "{lines:?}"
        );
    }
    /// Every optional table at once, as a fleet's config writes them:
    /// escrow with its store, two pins, a hook and a bind. Each file is
    /// checked and named; a bad one among the rest is still the one refused.
    #[test]
    fn check_with_every_optional_table_at_once() {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        let w = |p: &str, text: &str| std::fs::write(t.path().join(p), text).unwrap();
        let sk = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = sk
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        w("escrow.pub.pem", &pem);
        let ca = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n";
        w("store-ca.pem", ca);
        w("kms-ca.pem", ca);
        w("hook", "#!/bin/sh\n");
        std::fs::set_permissions(
            t.path().join("hook"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // The escrow keys are read where the path says, not below the
        // host's root (preflight, as provision reads them).
        let key = t.path().join("escrow.pub.pem");
        let text = format!(
            "[escrow]\npublic_key = {:?}\n\
                    [escrow.store]\nurl = \"https://s3.example\"\nbucket = \"fleet\"\n\
                    ca_file = \"/store-ca.pem\"\n\
                    [unlock]\ntpm2 = true\nthreshold = 2\n\
                    kms = {{ key_id = \"alias/eph\", ca_file = \"/kms-ca.pem\" }}\n\
                    [events]\nhook = \"/hook\"\n\
                    [[bind]]\npath = \"/var/lib/containerd\"\n",
            key.display()
        );
        let lines = check(&host, &cfg(&text)).unwrap();
        let print = escrow::fingerprint(&sk.to_public_key()).unwrap();
        for want in [
            format!("escrow: 1 of 1 key(s), each readable: {print}"),
            "unlock: 2 of 2 pin(s) (tpm2: true, kms: alias/eph, tang: 0)".into(),
            "escrow.store.ca_file: /store-ca.pem holds certificates".into(),
            "unlock.kms.ca_file: /kms-ca.pem holds certificates".into(),
            "events.hook: /hook is executable".into(),
        ] {
            assert!(lines.contains(&want), "{want:?} not in {lines:?}");
        }
        w("store-ca.pem", "not a certificate\n");
        let e = check(&host, &cfg(&text)).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert_eq!(
            e.to_string(),
            "config escrow.store.ca_file: /store-ca.pem holds no PEM certificate"
        );
    }
}
