//! Key material: the volume key in locked memory (`key`), and its escrow
//! to RSA public keys (`escrow`, the envelopes and their markers). The
//! unlock pins and escrow shares to come belong here.

pub mod escrow;
pub mod key;
