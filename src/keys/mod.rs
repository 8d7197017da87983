//! Key material: the volume key in locked memory (`key`), its escrow to RSA
//! public keys (`escrow`, the envelopes and their markers), and its binding
//! to this instance's TPM and tang servers (`unlock`, through clevis).

pub mod escrow;
pub mod key;
pub mod unlock;
