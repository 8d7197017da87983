//! The node around the volume: the reboot guard (`guard`), the instance
//! metadata service (`imds`), and the maintenance events the watcher warns
//! of, with its metrics and hook (`events`).

pub mod events;
pub mod guard;
pub mod imds;
