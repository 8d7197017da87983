//! Key material: the volume key in locked memory (`key`), its escrow to RSA
//! public keys (`escrow`, the envelopes and their markers), Shamir's
//! sharing of it (`shamir`), and its binding to this instance's pins
//! (`pins`: TPM, KMS, tang) in the unlock file (`unlock`).

pub mod escrow;
pub mod key;
pub mod pins;
pub mod shamir;
pub mod unlock;
