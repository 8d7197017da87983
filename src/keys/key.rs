//! The volume key in memory that is locked (never swapped), excluded from
//! core dumps, and zeroized when dropped, on every path, errors included.
//!
//! Written by hand over nix's mmap/mlock/madvise: the crates that offer such
//! buffers either pull in libsodium or are unmaintained, and this is small.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};
use rand::RngCore;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// One private page holds the key; keys are at most 512 bits.
const PAGE: usize = 4096;
pub const MAX_KEY_BYTES: usize = 64;

pub struct VolumeKey {
    page: NonNull<std::ffi::c_void>,
    len: usize,
}

impl VolumeKey {
    fn alloc(len: usize) -> Result<VolumeKey> {
        if len == 0 || len > MAX_KEY_BYTES {
            return Err(Error::Failed(format!(
                "a {len}-byte volume key is not supported"
            )));
        }
        let fail =
            |what: &str, e: nix::Error| Error::Failed(format!("{what} for the volume key: {e}"));
        // SAFETY: a fresh private anonymous mapping, owned by the returned value.
        let page = unsafe {
            mman::mmap_anonymous(
                None,
                NonZeroUsize::new(PAGE).expect("page size"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| fail("mmap", e))?;
        let key = VolumeKey { page, len };
        // SAFETY: `page` is our mapping of PAGE bytes.
        unsafe { mman::mlock(page, PAGE) }.map_err(|e| fail("mlock", e))?;
        // SAFETY: as above; DONTDUMP keeps the page out of core dumps.
        unsafe { mman::madvise(page, PAGE, MmapAdvise::MADV_DONTDUMP) }
            .map_err(|e| fail("madvise(MADV_DONTDUMP)", e))?;
        Ok(key)
    }

    /// A new key of `bits` from the OS CSPRNG (getrandom).
    pub fn generate(bits: u32) -> Result<VolumeKey> {
        let mut key = VolumeKey::alloc(bits as usize / 8)?;
        rand::rngs::OsRng
            .try_fill_bytes(key.as_mut())
            .map_err(|e| Error::Failed(format!("reading the OS random generator: {e}")))?;
        Ok(key)
    }

    /// Moves `bytes` into locked memory and zeroizes the source.
    pub fn take(bytes: &mut [u8]) -> Result<VolumeKey> {
        let key = VolumeKey::alloc(bytes.len());
        let mut key = match key {
            Ok(k) => k,
            Err(e) => {
                bytes.zeroize();
                return Err(e);
            }
        };
        key.as_mut().copy_from_slice(bytes);
        bytes.zeroize();
        Ok(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the page is ours, mapped and at least `len` bytes long.
        unsafe { std::slice::from_raw_parts(self.page.as_ptr().cast::<u8>(), self.len) }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.page.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn bits(&self) -> u32 {
        (self.len * 8) as u32
    }
}

impl Drop for VolumeKey {
    fn drop(&mut self) {
        self.as_mut().zeroize();
        // SAFETY: unlocking and unmapping our own mapping, never used again.
        unsafe {
            let _ = mman::munlock(self.page, PAGE);
            let _ = mman::munmap(self.page, PAGE);
        }
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VolumeKey({} bits, redacted)", self.bits())
    }
}

/// Hardens this process for as long as a key may be in memory (called before
/// the key is made or decrypted, by `provision` and `recover`). Layers, each
/// covering the case the one before does not:
/// - `PR_SET_DUMPABLE` 0: no core at all, whatever `fs.suid_dumpable` says
///   (that sysctl is the value the kernel gives `dumpable` on a credential
///   change; it does not override an explicit 0: the core-dump fault test
///   sees no core with `fs.suid_dumpable=2` and a piped `core_pattern`); also
///   no ptrace by non-root and `/proc/PID/mem` closed to others;
/// - should `dumpable` ever be reset (a credential change in a later
///   version or a library): `RLIMIT_CORE` 0 stops a core file, and
///   `/proc/self/coredump_filter` 0 leaves a core piped to a handler (the
///   kernel ignores `RLIMIT_CORE` for pipes) with no anonymous or file
///   memory, so none of the key's copies: libcryptsetup's, in its ordinary
///   heap while a context is open, nor the `rsa` crate's temporaries, which
///   its API gives no way to wipe;
/// - `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: no page of the
///   process, those copies included, is ever written to swap. ONFAULT locks
///   pages as they are touched, so thread stacks are not filled in up
///   front. Child processes (mkfs) are not locked: mlockall is not inherited.
pub fn harden_process() -> Result<()> {
    let fail = |what: &str, e: std::io::Error| Error::Failed(format!("{what}: {e}"));
    // Before PR_SET_DUMPABLE: once the process is not dumpable, its /proc
    // files belong to root, and a run as another user could not write this.
    std::fs::write("/proc/self/coredump_filter", "0")
        .map_err(|e| fail("writing 0 to /proc/self/coredump_filter", e))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| Error::Failed(format!("prctl(PR_SET_DUMPABLE, 0): {e}")))?;
    let zero = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(fail(
            "setrlimit(RLIMIT_CORE, 0)",
            std::io::Error::last_os_error(),
        ));
    }
    let flags = nix::libc::MCL_CURRENT | nix::libc::MCL_FUTURE;
    // SAFETY: mlockall takes flags only.
    let mut rc = unsafe { nix::libc::mlockall(flags | nix::libc::MCL_ONFAULT) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(nix::libc::EINVAL) {
        // Kernels before 4.4 lack MCL_ONFAULT: lock everything up front.
        // SAFETY: as above.
        rc = unsafe { nix::libc::mlockall(flags) };
    }
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Root (CAP_IPC_LOCK) is not bound by RLIMIT_MEMLOCK: a failure there
        // is unexpected, so stop. Another user is (the whole address space
        // is counted), and cannot provision or recover anyway: its run ends
        // at the first privileged step, with its own error. The key's own
        // page is still locked (VolumeKey).
        // SAFETY: geteuid has no preconditions.
        if unsafe { nix::libc::geteuid() } == 0 {
            return Err(fail("mlockall", e));
        }
        tracing::debug!("mlockall: {e} (not root: RLIMIT_MEMLOCK applies)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_sized() {
        let a = VolumeKey::generate(512).unwrap();
        let b = VolumeKey::generate(512).unwrap();
        assert_eq!(a.as_bytes().len(), 64);
        assert_eq!(a.bits(), 512);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), &[0u8; 64][..]);
    }

    #[test]
    fn take_zeroizes_the_source() {
        let mut src = [7u8; 32];
        let k = VolumeKey::take(&mut src).unwrap();
        assert_eq!(src, [0u8; 32]);
        assert_eq!(k.as_bytes(), &[7u8; 32][..]);
    }

    #[test]
    fn debug_output_redacts() {
        let mut src = [0xabu8; 32];
        let k = VolumeKey::take(&mut src).unwrap();
        let s = format!("{k:?}");
        assert_eq!(s, "VolumeKey(256 bits, redacted)");
    }

    #[test]
    fn too_long_keys_refused() {
        assert!(VolumeKey::generate(1024).is_err());
    }
}
