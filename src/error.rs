//! Errors by layer, each mapped to one documented exit code.
//!
//! The exit codes are part of ephemera's contract (README, "Exit codes"):
//! scripts and the systemd unit tell "fix your input" from "refused to touch
//! a disk" from "something failed while running".

use std::path::{Path, PathBuf};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// A step failed while running; what this run made has been rolled back.
pub const EXIT_FAILED: u8 = 1;
/// Bad input: command line, config file, key file. Nothing was touched.
pub const EXIT_USAGE: u8 = 2;
/// Refused for safety: a disk is not ours to write, or the disks cannot make
/// the volume asked for. Nothing was touched.
pub const EXIT_REFUSED: u8 = 3;
/// Another ephemera run held the lock for longer than the wait bound.
pub const EXIT_BUSY: u8 = 4;
/// A volume from an earlier boot that can still be read (an escrow envelope
/// for it is on this node) was found and left untouched: nothing was written
/// or mounted. Services that require ephemera.service do not start. Ops
/// recover it (`ephemera recover`) or discard it (`ephemera discard`).
pub const EXIT_KEPT: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input (config, command line, key files).
    #[error("{}", one_line(.0))]
    Usage(String),
    /// A safety refusal: names the disk and what was found on it.
    #[error("{}", one_line(.0))]
    Refused(String),
    /// Another run holds the lock.
    #[error("{}", one_line(.0))]
    Busy(String),
    /// A readable volume from an earlier boot was kept, untouched.
    #[error("{}", one_line(.0))]
    Kept(String),
    /// An I/O error with the file or device it concerned.
    #[error("{what} {}: {}", one_line(&path.display().to_string()), one_line(&source.to_string()))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any other failure while applying the plan.
    #[error("{}", one_line(.0))]
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Refused(_) => EXIT_REFUSED,
            Error::Busy(_) => EXIT_BUSY,
            Error::Kept(_) => EXIT_KEPT,
            Error::Io { .. } | Error::Failed(_) => EXIT_FAILED,
        }
    }

    /// Wraps an I/O error with what was being done and the path it concerned.
    pub fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `s` with its control characters escaped (`\n`, `\r`, `\u{1b}`), so that
/// every error prints as one line whatever the paths and values it quotes
/// hold: a config value with a newline in it cannot split the message or
/// write terminal escapes. Borrowed when there is nothing to escape.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}
