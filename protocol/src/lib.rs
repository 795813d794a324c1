//! GAEN, pure: everything the server and the devices must agree on byte for byte.
//! No I/O, no runtime, no clock; time and randomness are handed in.
//!
//! - [`crypto`]: TEKs, RPIs and AEMs (GAEN cryptography specification v1.2).
//! - [`export`]: export files (`export.bin` + `export.sig` in a zip), writer and reader.
//! - [`risk`]: the one risk rule (v2 exposure windows), and COCOA's legacy v1 scoring.
//! - [`matching`]: diagnosis keys against a device's observations.
//! - [`random`]: the injected source of random bytes (OS or seeded).

pub mod crypto;
pub mod export;
pub mod keys;
pub mod matching;
pub mod random;
pub mod risk;

pub use crypto::{Aem, Aemk, EnIntervalNumber, Metadata, Rpi, Rpik, Tek};
pub use keys::{DiagnosisKey, ReportType};
