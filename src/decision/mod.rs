//! The decision, made before the first write: `survey` gathers the facts
//! (it reads, never writes), `plan` names the volume's state and decides
//! what to do, with no I/O.

pub mod plan;
pub mod survey;
