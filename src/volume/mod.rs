//! The volume's stack, from the disks up: the RAID0 array (`md`, ioctls),
//! LUKS2 (`luks`, libcryptsetup, with the cipher checked against the kernel
//! by `cipher`), the filesystem and its mount (`mount`), and the node
//! directories bound from it (`bind`). Each layer takes what the plan
//! decided as plain values and reads no plan; none holds a key of its own:
//! `luks` is handed the key's bytes by the one function that owns the key.

pub mod bind;
pub mod cipher;
pub mod luks;
pub mod md;
pub mod mount;
