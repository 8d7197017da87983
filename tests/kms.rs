//! The `kms` unlock pin (issue 27) against moto's KMS (PyPI's moto[server],
//! installed with boto3 by scripts/moto.sh): KMS's JSON API with real
//! AES-GCM and the encryption context as authenticated data. moto runs on
//! 127.0.0.1 with INITIAL_NO_AUTH_ACTION_COUNT=3, so that after the setup
//! (an IAM user, its policy and its access key, made by boto3) every request
//! must be signed by a key moto knows. ephemera reaches it through a TLS
//! front (socat with a test CA, `ca_file`) and learns its credentials,
//! instance id, account and region from the IMDS test server, as on a node.
//!
//! What moto does not check, so neither does this: key policies and grants
//! (stored, not enforced: the policy in docs/UNLOCK.md is documentation), a
//! disabled key (it still decrypts), `Recipient` (attestation).

mod common;
mod imds_server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::moto::{forms, Moto, REGION};
use common::*;
use ephemera::keys::pins::KmsPin;
use ephemera::node::kms::Aws;
use imds_server::{ImdsServer, Role, Scenario as Imds};

const INSTANCE: &str = "i-0123456789abcdef0";
const OTHER_INSTANCE: &str = "i-0fedcba9876543210";
/// moto's default account.
const ACCOUNT: &str = "123456789012";
const UUID: &str = "0f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";
const OTHER_UUID: &str = "1f6c3d0c-2b8e-4b1a-9d3e-5f7a1b2c3d4e";

/// The node's IMDS: this instance, its account and region, and the role's
/// credentials (moto's IAM user's key).
fn imds(m: &Moto, secret: &str) -> ImdsServer {
    ImdsServer::start(
        Imds {
            instance_id: Some(INSTANCE.into()),
            region: Some(REGION.into()),
            account: Some(ACCOUNT.into()),
            role: Some(Role {
                name: "ephemera-node".into(),
                access_key_id: m.access_key_id.clone(),
                secret_access_key: secret.into(),
                token: None,
            }),
            ..Imds::default()
        },
        0,
    )
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[test]
#[ignore = "runs moto (scripts/moto.sh); run by `make vm`"]
fn kms_pin_opens_only_for_its_instance_volume_and_key() {
    let dir = workdir("kms-pin");
    let m = Moto::start(&dir);
    let node = imds(&m, &m.secret);
    let aws = Aws {
        imds: node.endpoint(),
    };
    let part: Vec<u8> = (0u8..65).collect();

    // The right context decrypts.
    let slot = aws
        .seal(&part, &m.pin(&m.key1, &m.ca), UUID, soon())
        .unwrap();
    assert_eq!(slot.key_id, m.key1, "{slot:?}");
    assert_eq!(slot.region, REGION);
    assert_eq!(
        slot.context["instance"],
        format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{INSTANCE}")
    );
    assert_eq!(slot.context["volume"], UUID);
    let back = aws.unseal(&slot, UUID, soon()).unwrap();
    assert_eq!(back.as_slice(), part.as_slice());

    // Another LUKS UUID: refused for good.
    let e = aws.unseal(&slot, OTHER_UUID, soon()).unwrap_err();
    assert!(
        e.permanent && e.why.contains("InvalidCiphertextException"),
        "{e:?}"
    );

    // A wrong key id: Decrypt naming key 2 for key 1's ciphertext is refused.
    let mut wrong = slot.clone();
    wrong.key_id = m.key2.clone();
    let e = aws.unseal(&wrong, UUID, soon()).unwrap_err();
    assert!(e.why.contains("HTTP 400"), "{e:?}");
    eprintln!("wrong key id: {}", e.why);
    // And Encrypt with a key that does not exist.
    let e = aws
        .seal(&part, &m.pin(&format!("{}0", m.key1), &m.ca), UUID, soon())
        .unwrap_err();
    assert!(e.why.contains("NotFoundException"), "{e:?}");

    // Another instance (its IMDS gives another instance id): refused.
    node.with(|s| s.instance_id = Some(OTHER_INSTANCE.into()));
    let e = aws.unseal(&slot, UUID, soon()).unwrap_err();
    assert!(
        e.permanent && e.why.contains("InvalidCiphertextException"),
        "{e:?}"
    );
    node.with(|s| s.instance_id = Some(INSTANCE.into()));
    assert_eq!(
        aws.unseal(&slot, UUID, soon()).unwrap().as_slice(),
        part.as_slice()
    );

    // A wrongly signed request (the role's secret is not moto's): refused,
    // and retried (credentials may rotate), never opened.
    let bad = imds(&m, "not-the-secret");
    let e = Aws {
        imds: bad.endpoint(),
    }
    .unseal(&slot, UUID, soon())
    .unwrap_err();
    assert!(!e.permanent && e.why.contains("HTTP 4"), "{e:?}");
    eprintln!("wrong signature: {}", e.why);

    // A request with no signature, as any client could send it, and one
    // with the node's key id and KMS's scope but a signature of zeros: no
    // plaintext either way. (moto routes a request without an Authorization
    // header by its URL, to its S3 part, which fails it with HTTP 500; the
    // zero signature gets 403.)
    let body = serde_json::json!({
        "KeyId": slot.key_id, "CiphertextBlob": slot.ciphertext, "EncryptionContext": slot.context,
    })
    .to_string();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let date = time::OffsetDateTime::now_utc();
    let ymd = format!(
        "{:04}{:02}{:02}",
        date.year(),
        date.month() as u8,
        date.day()
    );
    let zeros = format!(
        "AWS4-HMAC-SHA256 Credential={}/{ymd}/{REGION}/kms/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
        m.access_key_id,
        "0".repeat(64)
    );
    for auth in [None, Some(zeros.as_str())] {
        let mut req = agent
            .post(&format!("http://127.0.0.1:{}/", m.port))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "TrentService.Decrypt")
            .header("x-amz-date", format!("{ymd}T000000Z"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.send(body.as_bytes()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        eprintln!(
            "signature {}: HTTP {status}",
            if auth.is_some() { "of zeros" } else { "none" }
        );
        assert!(
            status >= 400 && !text.contains("Plaintext"),
            "an unsigned Decrypt got HTTP {status}"
        );
        if auth.is_some() {
            assert_eq!(status, 403, "{text}");
        }
    }

    // TLS: a CA that did not sign the front's certificate is refused, and so
    // are the built-in roots.
    let other_dir = dir.join("other-ca");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other_ca, _, _) = tls_files(&other_dir);
    let e = aws
        .seal(&part, &m.pin(&m.key1, &other_ca), UUID, soon())
        .unwrap_err();
    assert!(!e.permanent && e.why.contains("Encrypt at"), "{e:?}");
    eprintln!("another CA: {}", e.why);
    let mut roots = m.pin(&m.key1, &m.ca);
    roots.ca_file = None;
    assert!(aws.seal(&part, &roots, UUID, soon()).is_err());
}

/// The kms pin, and 2 of {tpm2, kms}, on a real kernel (kms-unlock.sh; x86-64;
/// no clevis in the guest): the guest reaches the IMDS test server and moto's
/// TLS front through guestfwds, and its TPM is a swtpm. Boot 1 times a
/// provision without [unlock], with kms alone, and with 2 of {tpm2, kms}
/// and escrow (kept); boot 2 unlocks by itself (timed); boot 3, KMS
/// unreachable: kept (exit 5, members unchanged) until the host brings KMS
/// back and `ephemera unlock` opens it. Then the key (from the escrow
/// envelope, checked against the header) and the kms part (decrypted by
/// boto3 as ops would, with the slot's context) are searched for in every
/// serial log and both disks: none is there.
#[test]
#[ignore = "runs moto and boots QEMU VMs; run by `make vm`"]
fn kms_and_tpm2_pins_on_a_real_kernel() {
    let dir = workdir("kms-unlock");
    let mut m = Moto::start(&dir);
    let node = imds(&m, &m.secret);
    let (_, pk) = keypair(&dir);
    let disks: Vec<(PathBuf, &str)> = [("a", "EPH-A"), ("b", "EPH-B")]
        .iter()
        .map(|(n, s)| (image(&dir, n, 64 * MIB), *s))
        .collect();
    let base = "[events]\nendpoint = \"http://10.0.2.101\"\ntextfile = \"/run/ephemera.prom\"\n";
    let kms = format!(
        "kms = {{ key_id = \"{}\", endpoint = \"https://10.0.2.102\", ca_file = \"/scenario/ca.pem\" }}\nwait_secs = 10\n",
        m.key1
    );
    let cfg = config(&format!(
        "{base}[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n[unlock]\ntpm2 = true\nthreshold = 2\n{kms}"
    ));
    let tpm = dir.join("tpm").display().to_string();
    let fwd = [
        format!("10.0.2.101:80={}", node.port),
        format!("10.0.2.102:443={}", m.tls_port),
    ];
    let args = ["--tpm", &tpm, "--guestfwd", &fwd[0], "--guestfwd", &fwd[1]];
    let ca_pem = std::fs::read(&m.ca).unwrap();
    let common = || {
        vec![
            ("config.toml", cfg.clone()),
            ("escrow.pub.pem", pk.clone()),
            ("ca.pem", ca_pem.clone()),
        ]
    };
    let mut files = common();
    files.extend([
        ("phase", b"1".to_vec()),
        ("plain.toml", config(base)),
        ("kms.toml", config(&format!("{base}[unlock]\n{kms}"))),
        ("key-id", m.key1.clone().into_bytes()),
    ]);
    let scenario = |name, files| Scenario {
        name,
        script: "kms-unlock.sh",
        files,
        disks: disks.clone(),
    };
    let log1 = boot_with(&dir, scenario("boot1", files), &args);
    let uuid = between(&log1, "LUKS-UUID ", "\n").trim().to_string();
    let sha = between(&log1, "DATA-SHA256 ", "\n").trim().to_string();
    let sealed = between(&log1, "UNLOCK-FILE ", "\n").trim().to_string();
    let file: serde_json::Value = serde_json::from_str(&sealed).unwrap();
    let later = |phase: &str| {
        let mut f = common();
        f.extend([
            ("phase", phase.as_bytes().to_vec()),
            ("luks-uuid", uuid.clone().into_bytes()),
            ("unlock.json", sealed.clone().into_bytes()),
            ("data.sha256", sha.clone().into_bytes()),
        ]);
        f
    };
    let log2 = boot_with(&dir, scenario("boot2", later("2")), &args);
    eprintln!(
        "kms pin timings: {} {}",
        between(&log1, "TIMING ", "\n").trim(),
        between(&log2, "TIMING ", "\n").trim()
    );

    // Boot 3: KMS unreachable; back when the guest asks.
    let hashes = || -> Vec<String> { disks.iter().map(|(p, _)| sha256_file(p)).collect() };
    let before = hashes();
    m.stop_front();
    let log3_path = dir.join("boot3.log");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kept_hashes = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let start = Instant::now();
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && start.elapsed() < Duration::from_secs(1500)
            {
                let text = std::fs::read_to_string(&log3_path).unwrap_or_default();
                if text.contains("EPH-WANT-KMS") {
                    // The members as they are while the volume is kept.
                    let h = hashes();
                    m.start_front();
                    return Some(h);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            None
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            boot_with(&dir, scenario("boot3", later("3")), &args)
        }));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let h = watcher.join().unwrap();
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
        h
    });
    assert_eq!(
        kept_hashes.expect("the guest asked for KMS"),
        before,
        "a member was written while the volume was kept"
    );

    // The leak scan. The key, as ops learn it: the console envelope and the
    // escrow private key; checked against the LUKS2 header.
    let (_, key) = key_from_console(&log1, &dir, |env| {
        let first = envelope_members(env)[0].to_string();
        disks.iter().find(|(_, s)| *s == first).unwrap().0.clone()
    });
    // The kms part, as ops decrypt it (boto3, the slot's context).
    let (slot, part) = m.ops_decrypt(&file);
    assert_eq!(part.len(), 65, "a share of a 512-bit key (x and 64 bytes)");
    let mut needles = key_forms(&key);
    needles.extend(forms(&part));
    let mut places: Vec<PathBuf> = ["boot1", "boot2", "boot3"]
        .iter()
        .map(|b| dir.join(format!("{b}.log")))
        .collect();
    places.extend(disks.iter().map(|(p, _)| p.clone()));
    let (found, hits) = leak_hits(&places, &needles);
    assert!(found.is_empty(), "{found:#?}");
    // The search works: the slot's ciphertext is in boot 1's log.
    assert!(
        find(
            &std::fs::read(&places[0]).unwrap(),
            slot["ciphertext"].as_str().unwrap().as_bytes()
        ) >= 1
    );
    eprintln!(
        "kms: leak scan: {} places, {} forms of the key and the kms part, {hits} hits",
        places.len(),
        needles.len()
    );
}
