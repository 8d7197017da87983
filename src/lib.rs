//! ephemera: encrypts a cloud instance's ephemeral NVMe disks at first boot.
//!
//! The flow is discover (`discover`, `probe`) -> plan (`plan`, no I/O) ->
//! apply (`apply`); `main.rs` only parses the command line and maps errors
//! to exit codes.

pub mod apply;
pub mod cipher;
pub mod cli;
pub mod cmd;
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
pub mod luks;
pub mod md;
pub mod modules;
pub mod mount;
pub mod ops;
pub mod plan;
pub mod probe;
