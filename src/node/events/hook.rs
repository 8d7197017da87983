//! The hook: a program run once per new event, the event's JSON on stdin,
//! with a timeout after which its process group is killed.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Event;
use crate::error::Result;

/// The hook: a program run once for each new event, the event's JSON on stdin.
#[derive(Debug, Clone)]
pub struct Hook {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl Hook {
    /// Runs the hook for `e` and waits for it, at most `timeout`; then its
    /// process group is killed. Its stdout and stderr are the watcher's (the
    /// journal). Not `cmd::run`: that one gives an empty stdin and looks the
    /// program up by name, where the hook is a path and reads the event.
    pub fn run(&self, e: &Event) -> Result<(), String> {
        let json = serde_json::to_string(e).map_err(|err| format!("encoding the event: {err}"))?;
        let start = Instant::now();
        let mut child = Command::new(&self.program)
            .stdin(Stdio::piped())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("EPHEMERA_EVENT_CODE", &e.code)
            .env("EPHEMERA_EVENT_SOURCE", e.source.name())
            .env("EPHEMERA_EVENT_ID", e.id.as_deref().unwrap_or(""))
            .env("EPHEMERA_EVENT_NOT_BEFORE", &e.not_before)
            .env("EPHEMERA_EVENT_DATA_LOSS", e.data_loss.to_string())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|err| format!("cannot run {}: {err}", self.program.display()))?;
        let pid = child.id() as i32;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its stdin is fine (EPIPE is ignored);
            // the event is one line, well under a pipe's buffer.
            let _ = stdin.write_all(format!("{json}\n").as_bytes());
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(self.timeout) {
            Ok(s) => s.map_err(|err| format!("waiting for {}: {err}", self.program.display()))?,
            Err(_) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = rx.recv();
                return Err(format!(
                    "{} did not finish within {} s and was killed",
                    self.program.display(),
                    self.timeout.as_secs()
                ));
            }
        };
        if status.success() {
            tracing::info!(
                hook = %self.program.display(),
                ms = start.elapsed().as_millis() as u64,
                "hook done for event {}",
                e.key()
            );
            Ok(())
        } else {
            Err(format!("{} failed ({status})", self.program.display()))
        }
    }
}
