//! `/run/ephemera.lock`: every command that changes ephemera's devices or
//! disks holds it, so that two runs never interleave.

use std::fs::File;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::host::Host;

/// How long a second run waits for the first to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Holds the lock, waiting for another run to release it, bounded by
/// `LOCK_WAIT`. flock has no timed wait, so the wait polls a non-blocking
/// try every 50 ms; the condition is the lock itself.
pub fn lock(host: &Host) -> Result<Flock<File>> {
    let path = host.path("run/ephemera.lock");
    let start = Instant::now();
    let wait = LOCK_WAIT;
    #[cfg(feature = "failpoints")]
    let wait = crate::host::failpoint::lock_wait(wait);
    let mut warned = false;
    loop {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("opening the lock", &path))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if start.elapsed() > wait {
                    return Err(Error::Busy(format!(
                        "another ephemera run held {} for {} s; giving up",
                        path.display(),
                        wait.as_secs()
                    )));
                }
                if !warned {
                    tracing::info!(
                        "another ephemera run holds {}; waiting for it",
                        path.display()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => return Err(Error::Failed(format!("locking {}: {e}", path.display()))),
        }
    }
}
