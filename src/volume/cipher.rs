//! Asks the running kernel whether it can do a cipher, before any disk is
//! touched, through the kernel crypto API socket (AF_ALG): the same check
//! libcryptsetup makes, but early. Loading a missing cipher module is the
//! kernel's job (it runs modprobe on the bind).

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt::AlgSetKey, AddressFamily, AlgAddr, SockFlag, SockType};

use crate::config::CipherSpec;
use crate::error::{Error, Result};

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
