//! Simulated fleets: a population in a BLE world, with ground truth, whose phones are
//! the device crate's agents on shard actors, driving Hotaru's gateway over HTTP (the
//! in-process server of `hotaru sim`, or a running cluster). docs/SIMULATION.md
//! documents the world and its sources.

pub mod epidemic;
pub mod figures;
pub mod population;
pub mod report;
pub mod shard;
pub mod sim;
pub mod source;
pub mod world;

pub use figures::Figures;
pub use sim::{CloseContact, SimConfig, Target, run};
