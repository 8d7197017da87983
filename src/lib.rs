//! ephemera: encrypts a cloud instance's ephemeral NVMe disks at first boot.
//!
//! The map, top down; a layer imports only the layers below it
//! (`tests/layers.rs` fails on an import that reaches up, or a circle):
//! - `main.rs` parses the command line (`cli`) and maps errors to exit codes
//!   (`error`).
//! - [`commands`]: one module per subcommand group: `provision`, `status`,
//!   `check`, `recover`, `erase` (`teardown`, `discard`); the guard's subcommands are
//!   in `node::guard`.
//! - [`node`]: around the volume: the reboot guard, IMDS, the events
//!   watcher, which asks the decision what a reboot would do.
//! - [`decision`]: `survey` gathers the facts, `plan` names the volume's
//!   state and decides what to do, without I/O; `reboot` asks the same of
//!   the next boot; `lifecycle` is the table they are checked against.
//! - [`keys`]: the volume key in locked memory, and its escrow.
//! - [`volume`]: the stack from the disks up: `md`, `luks`, `mount`, `bind`.
//! - [`host`]: where everything is read from (`Host`), discovery, probing,
//!   subprocesses, the lock, safe file writes, failpoints.
//! - [`config`]: the input, plain data and its validation; it imports
//!   nothing but `error`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod decision;
pub mod error;
pub mod host;
pub mod keys;
pub mod node;
pub mod volume;
