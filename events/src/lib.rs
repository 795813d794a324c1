//! Hotaru's event model: the envelope every event travels in, the domain events of every
//! step, their versioned encoding and the hash chain over stored commits.
//!
//! **Architecture Invariant:** this crate is pure. It does no I/O, reads no clock and draws
//! no randomness: time and random bytes are handed in by the caller, so replaying the log
//! rebuilds exactly the same values. (It defines the clocks callers inject,
//! [`SystemClock`] and [`ManualClock`], so that the device's rules need no actor runtime;
//! nothing in it calls them.)
//!
//! The unit of storage is a [`Commit`]: one atomic append of one or more events to one
//! stream. A commit has one global position in its [`Context`] and one link in that
//! context's hash chain.

pub mod chain;
pub mod codec;
pub mod device;
pub mod domain;
pub mod envelope;
pub mod ids;
pub mod privacy;
pub mod schema;
pub mod time;
pub mod versioned;

pub use chain::{ChainError, ChainHash, ChainVerifier};
pub use codec::{
    Commit, CommitEvent, CommitHead, DecodeError, ENCODING_BINCODE2, EncodeError, Frame,
};
pub use domain::{DomainEvent, EventType};
pub use envelope::{Envelope, NewEvent, TraceContext};
pub use ids::{Context, EventId, IdError, StreamId, StreamKind};
pub use privacy::{DigestKey, NumberDigest};
pub use time::{
    Clock, DAY_MS, HOUR_MS, INTERVAL_MS, INTERVALS_PER_DAY, ManualClock, SystemClock, UnixMillis,
};
