//! Failpoints for the fault-injection tests (`tests/faults.rs`), compiled
//! only with the cargo feature `failpoints`. Without it, `failpoint!` expands
//! to nothing and this module is empty, so release builds carry no failpoint
//! code at all.
//!
//! `EPHEMERA_FAILPOINT=NAME=ACTION[;NAME=ACTION...]` arms them, where ACTION is
//! - `kill`: SIGKILL this process (a crash at that step boundary);
//! - `abort`: abort(3), SIGABRT, a crash that dumps core where the system
//!   lets it (the core-dump scan in tests/faults.rs);
//! - `error`: fail the step, so `provision` rolls back what it made;
//! - `sleep:MS`: wait MS milliseconds, then go on;
//! - `hang`: print `EPHEMERA-FAILPOINT-HANG NAME` on /dev/console and wait
//!   forever (the host then cuts the power).
//!
//! `EPHEMERA_LOCK_WAIT_MS` bounds the wait for the lock instead of 10 minutes.
//! Every failpoint that is reached prints `EPHEMERA-FAILPOINT NAME` on stderr.

/// Marks a step boundary: `failpoint!("after-mkfs");` in a function that
/// returns `crate::error::Result`.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::host::failpoint::hit($name)?;
    };
}

#[cfg(feature = "failpoints")]
pub use imp::*;

#[cfg(feature = "failpoints")]
mod imp {
    use std::io::Write;
    use std::time::Duration;

    use crate::error::{Error, Result};

    fn action(name: &str) -> Option<String> {
        let spec = std::env::var("EPHEMERA_FAILPOINT").ok()?;
        spec.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    }

    pub fn hit(name: &str) -> Result<()> {
        eprintln!("EPHEMERA-FAILPOINT {name}");
        let Some(act) = action(name) else {
            return Ok(());
        };
        match act.as_str() {
            "kill" => {
                let _ = std::io::stderr().flush();
                // SAFETY: raise(3) has no memory-safety preconditions.
                unsafe { nix::libc::raise(nix::libc::SIGKILL) };
                unreachable!("SIGKILL returned");
            }
            "abort" => {
                let _ = std::io::stderr().flush();
                std::process::abort();
            }
            "error" => Err(Error::Failed(format!("failpoint {name}: injected error"))),
            "hang" => {
                if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
                    let _ = writeln!(c, "EPHEMERA-FAILPOINT-HANG {name}");
                }
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            a => match a.strip_prefix("sleep:").and_then(|ms| ms.parse().ok()) {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    Ok(())
                }
                None => Err(Error::Usage(format!(
                    "EPHEMERA_FAILPOINT: unknown action {act:?} for {name}"
                ))),
            },
        }
    }

    /// The lock wait bound: `EPHEMERA_LOCK_WAIT_MS` when set, else `default`.
    pub fn lock_wait(default: Duration) -> Duration {
        std::env::var("EPHEMERA_LOCK_WAIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(default)
    }
}
