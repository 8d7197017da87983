//! Asks the running kernel whether it can do a cipher, before any disk is
//! touched, through the kernel crypto API socket (AF_ALG): the same check
//! libcryptsetup makes, but early. Loading a missing cipher module is the
//! kernel's job (it runs modprobe on the bind).

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt::AlgSetKey, AddressFamily, AlgAddr, SockFlag, SockType};

use crate::config::CipherSpec;
use crate::error::{Error, Result};
use crate::host::Host;

pub fn check(spec: &CipherSpec, key_bits: u32) -> Result<()> {
    let name = spec.kernel_name();
    let sock = match socket::socket(
        AddressFamily::Alg,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(s) => s,
        Err(e) => {
            // Without AF_ALG libcryptsetup reports the cipher itself, before
            // the header is written.
            tracing::warn!("cannot ask the kernel about {name} (AF_ALG: {e}); libcryptsetup will");
            return Ok(());
        }
    };
    let unavailable = |e: Errno| {
        Error::Usage(format!(
            "config luks.cipher: the kernel has no {name} for {}-{} ({e})",
            spec.cipher, spec.mode
        ))
    };
    socket::bind(sock.as_raw_fd(), &AlgAddr::new("skcipher", &name)).map_err(unavailable)?;
    // An all-zero key of the configured length: not a secret, only a test
    // that the cipher takes keys of that size.
    let probe_key = vec![0u8; key_bits as usize / 8];
    socket::setsockopt(&sock, AlgSetKey::default(), &probe_key).map_err(|e| {
        Error::Usage(format!(
            "config luks.key_bits: {name} does not take a {key_bits}-bit key ({e})"
        ))
    })?;
    Ok(())
}

/// What the kernel's lists say of a cipher, loading nothing: `Some(true)`
/// when it has it or can load it, `Some(false)` when neither list has it,
/// `None` when the lists cannot be read (a chroot without /proc, a
/// container without the kernel's modules).
pub fn listed(host: &Host, spec: &CipherSpec) -> Option<bool> {
    let crypto = std::fs::read_to_string(host.path("proc/crypto")).ok()?;
    let names: Vec<&str> = crypto
        .lines()
        .filter_map(|l| l.strip_prefix("name"))
        .filter_map(|l| l.split_once(':'))
        .map(|(_, n)| n.trim())
        .collect();
    if names.contains(&spec.kernel_name().as_str()) {
        return Some(true);
    }
    let release = host.attr(&host.path("proc/sys/kernel/osrelease"))?;
    let modules = host.path("lib/modules").join(release.trim());
    let alias = std::fs::read_to_string(modules.join("modules.alias")).ok()?;
    // Built-in modules' aliases: NUL-separated `module.alias=crypto-xts`.
    let builtin = std::fs::read(modules.join("modules.builtin.modinfo")).unwrap_or_default();
    let builtin = String::from_utf8_lossy(&builtin);
    let loadable = |alg: &str| {
        let want = format!("crypto-{alg}");
        alias
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
            || builtin
                .split('\0')
                .any(|e| e.split_once(".alias=").is_some_and(|(_, a)| a == want))
    };
    // The block cipher registers under its own name (`twofish`); a chaining
    // template (`xts`) only under the names it has made (`xts(aes)`).
    let chain = spec.kernel_name();
    let chain = chain.split('(').next().unwrap_or_default();
    let has_cipher = names.contains(&spec.cipher.as_str()) || loadable(&spec.cipher);
    let has_chain = names.iter().any(|n| n.starts_with(&format!("{chain}("))) || loadable(chain);
    Some(has_cipher && has_chain)
}

/// `listed` as a config check: refused when the lists say no; passed when
/// they cannot be read (provision probes the kernel at boot).
pub fn check_listed(host: &Host, spec: &CipherSpec) -> Result<()> {
    match listed(host, spec) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::Usage(format!(
            "config luks.cipher: the kernel has no {} for {} in /proc/crypto or its modules",
            spec.kernel_name(),
            spec.notation()
        ))),
        // `check` says so in its report; provision asks the kernel.
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with /proc/crypto, the release, and the module lists.
    fn root(crypto: &str, alias: &str, builtin: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let w = |p: &str, text: &str| {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("proc/crypto", crypto);
        w("proc/sys/kernel/osrelease", "6.1.0-57-cloud-amd64\n");
        let m = "lib/modules/6.1.0-57-cloud-amd64";
        w(&format!("{m}/modules.alias"), alias);
        w(&format!("{m}/modules.builtin.modinfo"), builtin);
        t
    }

    const AES_ONLY: &str = "name         : aes\ndriver       : aes-aesni\n\nname         : xts(aes)\ndriver       : xts-aes-aesni\n";

    #[test]
    fn the_lists_tell_a_cipher_the_kernel_can_load_from_one_it_cannot() {
        let spec = |s: &str| CipherSpec::parse(s).unwrap();
        // Instantiated already.
        let t = root(AES_ONLY, "", "");
        let host = Host::new(t.path());
        assert_eq!(listed(&host, &spec("aes-xts-plain64")), Some(true));
        // twofish neither registered nor a module: refused, named.
        assert_eq!(listed(&host, &spec("twofish-xts-plain64")), Some(false));
        let e = check_listed(&host, &spec("twofish-xts-plain64")).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert!(
            e.to_string()
                .contains("luks.cipher: the kernel has no xts(twofish)"),
            "{e}"
        );
        // A module (Debian's cloud kernel: twofish_generic, and xts built in).
        let t = root(
            "name         : aes\n",
            "alias crypto-twofish twofish_generic\nalias twofish twofish_generic\n",
            "xts.file=crypto/xts\0xts.alias=crypto-xts\0",
        );
        let host = Host::new(t.path());
        assert_eq!(listed(&host, &spec("twofish-xts-plain64")), Some(true));
        assert_eq!(listed(&host, &spec("rot13-ecb")), Some(false));
        // No /proc: cannot tell, and check does not refuse.
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        assert_eq!(listed(&host, &spec("twofish-xts-plain64")), None);
        check_listed(&host, &spec("twofish-xts-plain64")).unwrap();
    }
}
