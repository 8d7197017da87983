//! The one way ephemera runs another program: looked up in fixed system
//! directories (never `$PATH`), a description for the log, and its stderr in
//! the error. `run` gives it an empty stdin. `pipe` is the one exception to
//! "no key goes to a subprocess": clevis, which binds the key to the TPM and
//! tang servers (`keys::unlock`), takes it on a pipe, and gives it back the
//! same way; nothing else is given a key.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

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

/// The most `pipe` reads from a program's stdout: a clevis token with a few
/// pins is some KiB; the buffer is allocated once, so that a key read into
/// it is never copied by a reallocation that would leave it unwiped.
pub const PIPE_MAX: usize = 256 * 1024;

/// Runs `program` with `input` on its stdin and returns its stdout, in a
/// buffer wiped when dropped (it may be a key). It runs in its own process
/// group, killed whole after `timeout` (clevis runs curl, jose and the
/// tpm2 tools below it). `what` says why, for the log and the error.
pub fn pipe<S: AsRef<OsStr>>(
    what: &str,
    program: &str,
    args: &[S],
    input: &[u8],
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>> {
    let path = find(program)?;
    let start = Instant::now();
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Failed(format!("{what}: running {}: {e}", path.display())))?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped stdin"),
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    let mut out = Zeroizing::new(vec![0u8; PIPE_MAX]);
    let (status, n, err_text) = std::thread::scope(|s| {
        // The writer, and the readers of stdout and stderr, each on its
        // own thread: a program may write before it has read all its input.
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let err_reader = s.spawn(move || {
            let mut t = Vec::new();
            let _ = stderr.by_ref().take(64 * 1024).read_to_end(&mut t);
            t
        });
        let buf = &mut out[..];
        let out_reader = s.spawn(move || {
            let mut n = 0;
            while n < buf.len() {
                match stdout.read(&mut buf[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            n
        });
        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(timeout) {
            Ok(st) => st.map_err(|e| format!("waiting for it: {e}")),
            Err(_) => {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = rx.recv();
                Err(format!(
                    "it did not finish within {} s and was killed",
                    timeout.as_secs()
                ))
            }
        };
        // Whatever the program left running in its group holds the pipes
        // open: the readers end once the group is gone.
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let n = out_reader.join().unwrap_or(0);
        let err = err_reader.join().unwrap_or_default();
        (status, n, err)
    });
    let stderr = String::from_utf8_lossy(&err_text)
        .trim()
        .replace('\n', "; ");
    let fail = |why: String| Error::Failed(format!("{what}: {} {why}: {stderr}", path.display()));
    match status {
        Ok(st) if st.success() => {}
        Ok(st) => return Err(fail(format!("failed ({st})"))),
        Err(why) => return Err(fail(why)),
    }
    if n == PIPE_MAX {
        return Err(fail(format!("wrote more than {PIPE_MAX} bytes")));
    }
    out.truncate(n);
    tracing::debug!(program = %path.display(), ms = start.elapsed().as_millis() as u64, "{what}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_gives_stdin_and_takes_stdout() {
        let out = pipe(
            "copying",
            "cat",
            &[] as &[&str],
            b"key bytes",
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(&out[..], b"key bytes");
        let e = pipe(
            "failing",
            "sh",
            &["-c", "echo nope >&2; exit 3"],
            b"",
            Duration::from_secs(30),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("failing") && e.contains("exit status: 3") && e.contains("nope"),
            "{e}"
        );
    }

    /// A program that hangs, and a child it left behind holding stdout,
    /// are killed at the bound: `pipe` returns, it does not hang.
    #[test]
    fn pipe_kills_the_whole_group_at_the_bound() {
        let start = Instant::now();
        let e = pipe(
            "hanging",
            "sh",
            &["-c", "sleep 600 & sleep 600"],
            b"",
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("did not finish within 0 s and was killed"),
            "{e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }
}
