//! Hotaru's server: the registration flow, batch signing and distribution, retention.
//!
//! Each service is a shell around the pure rules of `hotaru-domain` and the formats of
//! `hotaru-protocol`: it loads streams, reads the injected clock, draws randomness, and
//! appends with the expected version. All of it runs on either event-log backend.

pub mod daykeys;
pub mod registration;

pub use daykeys::{DayKeys, DayMaterial};
pub use registration::{IssuedNumber, PublishAnswer, Redemption, Registration, RegistrationError};
pub mod batch;
pub mod signing;

pub use batch::{BatchError, BatchOutcome, BatchPolicy, Distribution};
pub mod actors;
pub mod commands;
pub mod node;
pub mod retention;
pub mod revision;

pub use node::{GatewayConfig, Node, ServerConfig};
pub mod credentials;
pub mod support;

/// What `Debug` shows of a secret (a processing number, a revision token, a log's content):
/// that it is there and its length, never what it is.
#[derive(Clone, Copy)]
pub struct Redacted(pub usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}
