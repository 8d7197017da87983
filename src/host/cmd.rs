//! The one way ephemera runs another program: looked up in fixed system
//! directories (never `$PATH`), empty stdin, a description for the log, and
//! its stderr in the error. No key ever goes to a subprocess.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};

const DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Finds `name` in the fixed system directories.
pub fn find(name: &str) -> Result<PathBuf> {
    DIRS.iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Failed(format!(
                "{name} not found in {}; install it (Debian: e2fsprogs or kmod)",
                DIRS.join(", ")
            ))
        })
}

/// Runs `program` with `args`; `what` says why, for the log and the error.
pub fn run<S: AsRef<OsStr>>(what: &str, program: &str, args: &[S]) -> Result<String> {
    let path = find(program)?;
    let start = Instant::now();
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Failed(format!("{what}: running {}: {e}", path.display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "{what}: {} failed ({}): {stderr}",
            path.display(),
            out.status
        )));
    }
    tracing::debug!(program = %path.display(), ms = start.elapsed().as_millis() as u64, "{what}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
