//! The node around the volume: the reboot guard (`guard`), the instance
//! metadata service (`imds`), the maintenance events the watcher warns
//! of, with its metrics and hook (`events`), and the escrow envelopes'
//! store off the node (`escrow_store`), the record of a kept volume
//! (`kept`), and AWS KMS for the `kms` unlock pin (`kms`).

pub mod escrow_store;
pub mod events;
pub mod guard;
pub mod imds;
pub mod kept;
pub mod kms;
