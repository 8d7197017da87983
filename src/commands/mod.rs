//! One module per subcommand group; each reads the system through a `Host`
//! root, decides with `plan` where there is a decision, and acts through the
//! layers below (`md`, `luks`, `mount`, `escrow`, `guard`).

pub mod erase;
pub mod provision;
pub mod recover;
pub mod status;
