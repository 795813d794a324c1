//! The phone's half of Hotaru: a device agent from consent to guidance.
//!
//! - [`rules`]: the device's rules as plain decide/apply functions over its events.
//! - [`agent`]: the rules with their I/O: the device's own log, its encrypted [`vault`],
//!   the injected clock and RNG, and the gateway's public HTTP API ([`client`]).
//! - [`actor`]: [`DeviceActor`], the actix shell that the fleet and the emulator drive.
//! - [`radio`]: the [`Radio`] trait, the scripted radio of tests and the 0xFD6F payload;
//!   [`ble`] (feature `ble`) is a BlueZ radio.
//!
//! **Architecture Invariant:** a device's events and records stay with the device. They go
//! to the device's own log (a `LogScope::Device` log) and vault; this crate does not link
//! the server's crates and reaches the server only over HTTP, sending what COCOA sends:
//! diagnosis keys with a processing number, chaff, and an operation log the user reviewed.

pub mod actor;
pub mod agent;
#[cfg(feature = "ble")]
pub mod ble;
pub mod client;
pub mod radio;
pub mod reference;
pub mod rules;
pub mod vault;

pub use actor::DeviceActor;
pub use agent::{Agent, AgentConfig, AgentError, CheckReport, Retry, Status};
pub use client::{ClientError, GatewayClient};
pub use radio::{Advertisement, Radio, Scan, ScriptedRadio, Sighting};
pub use rules::{DeviceState, RuleError};
