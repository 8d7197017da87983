//! The one way ephemera runs another program: looked up in fixed system
//! directories (never `$PATH`), a description for the log, and its stderr in
//! the error. `run` gives it an empty stdin. `pipe` is the one exception to
//! "no key goes to a subprocess": clevis, which binds the key to the TPM and
//! tang servers (`keys::unlock`), takes it on a pipe, and gives it back the
//! same way; nothing else is given a key.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
/// it is never copied by a reallocation that would leave it unwiped. Filled,
/// the program's output is refused.
pub const PIPE_MAX: usize = 256 * 1024;

/// Runs `program` with `input` on its stdin and returns its stdout, in a
/// buffer wiped when dropped (it may be a key). `what` says why, for the log
/// and the error. The bound is hard:
/// - the program runs in its own process group, with every descriptor it
///   would inherit beyond stdin, stdout and stderr closed at exec;
/// - its pipes and its exit are polled against one deadline, so a
///   descendant that left the group (`setsid`) and still holds stdout open
///   cannot make `pipe` wait: what the program wrote before it exited is its
///   output;
/// - at the deadline, or once the program has exited, the group is killed
///   (clevis runs curl, jose and the tpm2 tools below it) before the program
///   is reaped, so its group id cannot have been reused by then.
pub fn pipe<S: AsRef<OsStr>>(
    what: &str,
    program: &str,
    args: &[S],
    input: &[u8],
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>> {
    let path = find(program)?;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/")
        .process_group(0);
    // SAFETY: between fork and exec, only async-signal-safe calls: one
    // syscall, then fcntl(2) in a bounded loop.
    unsafe { cmd.pre_exec(cloexec_from_3) };
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("{what}: running {}: {e}", path.display())))?;
    let fail = |why: String, stderr: &[u8]| {
        let stderr = String::from_utf8_lossy(stderr).trim().replace('\n', "; ");
        Error::Failed(format!("{what}: {} {why}: {stderr}", path.display()))
    };
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let exited = pidfd(child.id());
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = Stream::new(child.stdout.take().expect("piped stdout").into(), PIPE_MAX);
    let mut stderr = Stream::new(child.stderr.take().expect("piped stderr").into(), 64 * 1024);
    let watched = std::thread::scope(|s| {
        // The writer on its own thread: a program may write before it has
        // read all its input. It ends when the input is written (a key or a
        // token of a few KiB, below a pipe's 64 KiB), or with EPIPE once the
        // group is killed.
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let watched = exited.and_then(|e| watch(&e, &mut stdout, &mut stderr, deadline));
        // The leader has exited or is still running, not reaped: the group
        // id is still its own. Whatever it left in the group goes now, and
        // with it the writer's reader (before the scope waits for the writer).
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        watched
    });
    let status = child.wait();
    let status = match (watched, status) {
        (Err(e), _) => return Err(fail(e, &stderr.buf)),
        (Ok(false), _) => {
            return Err(fail(
                format!(
                    "did not finish within {} s and was killed",
                    timeout.as_secs()
                ),
                &stderr.buf,
            ))
        }
        (Ok(true), Err(e)) => return Err(fail(format!("waiting for it: {e}"), &stderr.buf)),
        (Ok(true), Ok(st)) => st,
    };
    if !status.success() {
        return Err(fail(format!("failed ({status})"), &stderr.buf));
    }
    if stdout.full() {
        return Err(fail(
            format!("wrote more than {PIPE_MAX} bytes"),
            &stderr.buf,
        ));
    }
    let mut out = stdout.buf;
    out.truncate(stdout.len);
    tracing::debug!(program = %path.display(), ms = start.elapsed().as_millis() as u64, "{what}");
    Ok(out)
}

/// Marks every descriptor from 3 up close-on-exec, in a forked child before
/// exec (async-signal-safe): `close_range(2)` with CLOSE_RANGE_CLOEXEC
/// (Linux 5.11), else fcntl(2) on each descriptor below the limit. Marked,
/// not closed: the standard library's own exec-error pipe is among them.
fn cloexec_from_3() -> std::io::Result<()> {
    // SAFETY: a plain syscall with integer arguments.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // SAFETY: sysconf and fcntl on integer descriptors; an unused one fails
    // with EBADF, which is ignored.
    let max = unsafe { nix::libc::sysconf(nix::libc::_SC_OPEN_MAX) }.clamp(3, 65536) as i32;
    for fd in 3..max {
        unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// A descriptor that becomes readable when the process `pid` exits
/// (`pidfd_open(2)`, Linux 5.3), before it is reaped.
fn pidfd(pid: u32) -> std::result::Result<OwnedFd, String> {
    // SAFETY: a plain syscall; on success it returns a new descriptor we own.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One of the program's output pipes, read without blocking into a buffer
/// allocated once (a key read into it is never copied by a reallocation).
struct Stream {
    fd: OwnedFd,
    buf: Zeroizing<Vec<u8>>,
    len: usize,
    open: bool,
}

impl Stream {
    fn new(fd: OwnedFd, max: usize) -> Stream {
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        Stream {
            fd,
            buf: Zeroizing::new(vec![0u8; max]),
            len: 0,
            open: true,
        }
    }

    fn full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Reads what is there now; closed at end of file, or when full.
    fn drain(&mut self) {
        while self.open {
            if self.full() {
                self.open = false;
                break;
            }
            match nix::unistd::read(&self.fd, &mut self.buf[self.len..]) {
                Ok(0) => self.open = false,
                Ok(k) => self.len += k,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }
}

/// Reads both pipes until the program exits and its pipes are at end of
/// file, or until the deadline: `Ok(true)` when it exited in time (what it
/// wrote before then is read; a descendant that still holds a pipe is not
/// waited for), `Ok(false)` at the deadline.
fn watch(
    exited: &OwnedFd,
    out: &mut Stream,
    err: &mut Stream,
    deadline: Instant,
) -> std::result::Result<bool, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            out.drain();
            err.drain();
            return Ok(false);
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(exited.as_fd(), PollFlags::POLLIN)];
        for s in [&*out, &*err].into_iter().filter(|s| s.open) {
            fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("polling its pipes: {e}")),
        }
        let gone = fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
        out.drain();
        err.drain();
        if gone {
            return Ok(true);
        }
    }
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

    /// A descendant that leaves the group (`setsid`) and keeps stdout open
    /// does not hold `pipe` past its bound (issue 25; before, `pipe` read
    /// until end of file and waited for it). It is killed by pid here.
    #[test]
    fn a_descendant_outside_the_group_does_not_hold_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "setsid sh -c 'echo $$ > {0}; exec sleep 600' & \
             while [ ! -s {0} ]; do sleep 0.01; done; sleep 600",
            pidfile.display()
        );
        let start = Instant::now();
        let e = pipe(
            "holding",
            "sh",
            &["-c", script.as_str()],
            b"",
            Duration::from_millis(500),
        )
        .unwrap_err()
        .to_string();
        let took = start.elapsed();
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        assert!(e.contains("was killed"), "{e}");
        // A bound against a hang: the descendant holds stdout for 600 s.
        assert!(took < Duration::from_secs(60), "{took:?}");
    }

    /// The same when the program itself exits at once: its output is what
    /// it wrote before it exited.
    #[test]
    fn output_is_what_the_program_wrote_before_it_exited() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "setsid sh -c 'echo $$ > {0}; exec sleep 600' & \
             while [ ! -s {0} ]; do sleep 0.01; done; printf done",
            pidfile.display()
        );
        let start = Instant::now();
        let out = pipe(
            "exiting",
            "sh",
            &["-c", script.as_str()],
            b"",
            Duration::from_secs(300),
        );
        let took = start.elapsed();
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        assert_eq!(&out.unwrap()[..], b"done");
        // A bound against a hang: the descendant holds stdout for 600 s.
        assert!(took < Duration::from_secs(60), "{took:?}");
    }

    /// A descriptor ephemera holds open without close-on-exec (as a C
    /// library may open one) is not inherited by the program.
    #[test]
    fn the_program_inherits_no_descriptor_beyond_its_three() {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open("/proc/self/status").unwrap();
        // Clear close-on-exec, as a descriptor opened without O_CLOEXEC.
        nix::fcntl::fcntl(
            &f,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
        let fd = f.as_raw_fd();
        let out = pipe(
            "listing",
            "sh",
            &["-c", "ls /proc/$$/fd"],
            b"",
            Duration::from_secs(30),
        )
        .unwrap();
        let open: Vec<String> = String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(
            !open.contains(&fd.to_string()),
            "fd {fd} inherited: {open:?}"
        );
        assert!(open.contains(&"0".to_string()), "{open:?}");
    }
}
