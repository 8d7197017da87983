//! The decision, made before the first write: `survey` gathers the facts
//! (it reads, never writes), `state` names the volume's state, `plan`
//! decides what to do, with no I/O; `describe` puts the plan in words.
//! `reboot` asks the same decision what the next boot would do, for the
//! events watcher and `status`; `lifecycle` is the table that says, state
//! by state and configuration by configuration, what must happen to the data.

pub mod describe;
pub mod lifecycle;
pub mod plan;
pub mod reboot;
pub mod state;
pub mod survey;
