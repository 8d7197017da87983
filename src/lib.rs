//! ephemera: encrypts a cloud instance's ephemeral NVMe disks at first boot.
//!
//! The map, top down:
//! - `main.rs` parses the command line (`cli`) and maps errors to exit codes
//!   (`error`).
//! - `commands`: one module per subcommand group: `provision`, `status`,
//!   `recover`, `erase` (`teardown`, `discard`); the guard's subcommands are
//!   in `guard`.
//! - The decision, without I/O: `survey` gathers the facts, `plan` names the
//!   volume's state and decides what to do; `config` is the input.
//! - The layers that act: `discover` (sysfs), `probe` (libblkid), `md`
//!   (RAID0 ioctls), `luks` (libcryptsetup), `key` (the key in locked
//!   memory), `escrow` (RSA envelopes), `mount` (mkfs, mount), `guard`
//!   (reboot guard), `bind` (node directories bound from the volume), `cipher`, `modules`, `lock`, `cmd` (subprocesses),
//!   `host` (the root everything is read through), `safe_fs` (every file
//!   written as root: no link followed, owners checked), `failpoint` (tests).

pub mod bind;
pub mod cipher;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod config;
pub mod discover;
pub mod error;
pub mod escrow;
pub mod events;
pub mod failpoint;
pub mod guard;
pub mod host;
pub mod imds;
pub mod key;
pub mod lock;
pub mod luks;
pub mod md;
pub mod modules;
pub mod mount;
pub mod plan;
pub mod probe;
pub mod safe_fs;
pub mod survey;
