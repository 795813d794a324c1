//! Identifiers: events, streams and the bounded contexts that partition the log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The aggregate id is empty, longer than 64 bytes or holds a character other than
    /// ASCII letters, digits, `-` and `_` (it becomes a NATS subject token).
    #[error("invalid aggregate id {0:?}: use 1-64 ASCII letters, digits, '-' or '_'")]
    InvalidAggregateId(String),
    /// The stream kind is not one Hotaru knows.
    #[error("unknown stream kind {0:?}")]
    UnknownKind(String),
    /// The context is not one Hotaru knows.
    #[error("unknown context {0:?}")]
    UnknownContext(String),
}

/// A unique, time-ordered event id: a UUIDv7 built from a timestamp and random bytes the
/// caller hands in (this crate draws no randomness).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    pub fn new(at: UnixMillis, random: [u8; 10]) -> Self {
        Self(
            *uuid::Builder::from_unix_timestamp_millis(at.0, &random)
                .as_uuid()
                .as_bytes(),
        )
    }

    /// A deterministic id for an effect of `cause`: an actor that re-processes `cause`
    /// after a crash appends the same id again, and the log stores it once.
    pub fn derived(cause: EventId, tag: &str) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&cause.0);
        ctx.update(tag.as_bytes());
        let digest = ctx.finish();
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest.as_ref()[..10]);
        Self::new(cause.timestamp(), random)
    }

    /// The millisecond timestamp the id was built from.
    pub fn timestamp(self) -> UnixMillis {
        let b = self.0;
        UnixMillis(u64::from_be_bytes([
            0, 0, b[0], b[1], b[2], b[3], b[4], b[5],
        ]))
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_uuid().hyphenated().fmt(f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// A bounded context: one partition of the log, with its own positions and its own hash
/// chain. On NATS each context is one JetStream stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Context {
    /// Cases, processing numbers, redemption and key upload (one atomic step).
    Registration,
    /// Batches, the signer's fence, signing keys.
    Distribution,
    /// Operation logs sent on request.
    Support,
    /// Crypto-shredding of expired days.
    Retention,
    /// Events recorded by device agents (simulated or real): only ever in a device's own
    /// log (a phone's store, a fleet's log), never in the server's.
    Device,
    /// Synthetic events of `hotaru log append-demo` and the benchmarks.
    Demo,
}

impl Context {
    pub const ALL: [Context; 6] = [
        Context::Registration,
        Context::Distribution,
        Context::Support,
        Context::Retention,
        Context::Device,
        Context::Demo,
    ];

    /// The contexts of the server's log.
    pub const SERVER: [Context; 5] = [
        Context::Registration,
        Context::Distribution,
        Context::Support,
        Context::Retention,
        Context::Demo,
    ];

    /// The contexts of a device's (or a fleet's) log.
    pub const DEVICE: [Context; 1] = [Context::Device];

    pub const fn is_device(self) -> bool {
        matches!(self, Context::Device)
    }

    /// The lowercase name used in NATS subjects, stream names and the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Context::Registration => "registration",
            Context::Distribution => "distribution",
            Context::Support => "support",
            Context::Retention => "retention",
            Context::Device => "device",
            Context::Demo => "demo",
        }
    }

    pub const fn tag(self) -> u8 {
        match self {
            Context::Registration => 1,
            Context::Distribution => 2,
            Context::Support => 3,
            Context::Retention => 4,
            Context::Device => 5,
            Context::Demo => 6,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.tag() == tag)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| IdError::UnknownContext(s.to_owned()))
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of aggregate a stream belongs to; it fixes the stream's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamKind {
    Case,
    ProcessingNumber,
    Batch,
    Signer,
    SigningKey,
    OperationLog,
    RetentionDay,
    Device,
    Demo,
    /// The day's failed redemptions (`redemptions.<day>`): what the attempt limiter is
    /// rebuilt from.
    Redemptions,
    /// A centre's numbers of one day (`quota.<centre>-<day>`): the fence of its quota.
    Quota,
    /// The redemptions evaluated in one window (`guesses.<window>`) and those given back
    /// (`guesses.<window>-back`): the global attempt budget, shared by every node.
    Guesses,
}

impl StreamKind {
    pub const ALL: [StreamKind; 12] = [
        StreamKind::Case,
        StreamKind::ProcessingNumber,
        StreamKind::Batch,
        StreamKind::Signer,
        StreamKind::SigningKey,
        StreamKind::OperationLog,
        StreamKind::RetentionDay,
        StreamKind::Device,
        StreamKind::Demo,
        StreamKind::Redemptions,
        StreamKind::Quota,
        StreamKind::Guesses,
    ];

    pub const fn context(self) -> Context {
        match self {
            StreamKind::Case
            | StreamKind::ProcessingNumber
            | StreamKind::Redemptions
            | StreamKind::Quota
            | StreamKind::Guesses => Context::Registration,
            StreamKind::Batch | StreamKind::Signer | StreamKind::SigningKey => {
                Context::Distribution
            }
            StreamKind::OperationLog => Context::Support,
            StreamKind::RetentionDay => Context::Retention,
            StreamKind::Device => Context::Device,
            StreamKind::Demo => Context::Demo,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            StreamKind::Case => "case",
            StreamKind::ProcessingNumber => "number",
            StreamKind::Batch => "batch",
            StreamKind::Signer => "signer",
            StreamKind::SigningKey => "signingkey",
            StreamKind::OperationLog => "oplog",
            StreamKind::RetentionDay => "retention",
            StreamKind::Device => "device",
            StreamKind::Demo => "demo",
            StreamKind::Redemptions => "redemptions",
            StreamKind::Quota => "quota",
            StreamKind::Guesses => "guesses",
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| IdError::UnknownKind(s.to_owned()))
    }
}

/// One aggregate's stream: its kind and its id. The id is restricted to characters that
/// are safe in a NATS subject token and in a sled key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamId {
    kind: StreamKind,
    id: String,
}

impl StreamId {
    pub fn new(kind: StreamKind, id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self { kind, id })
        } else {
            Err(IdError::InvalidAggregateId(id))
        }
    }

    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn context(&self) -> Context {
        self.kind.context()
    }

    /// `kind.id`, as in NATS subjects and the command line.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (kind, id) = s
            .split_once('.')
            .ok_or_else(|| IdError::UnknownKind(s.to_owned()))?;
        Self::new(StreamKind::parse(kind)?, id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.name(), self.id)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_time_ordered_and_carry_their_timestamp() {
        let a = EventId::new(UnixMillis(1_700_000_000_000), [0xff; 10]);
        let b = EventId::new(UnixMillis(1_700_000_000_001), [0x00; 10]);
        assert!(a < b);
        assert_eq!(a.timestamp(), UnixMillis(1_700_000_000_000));
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct_per_tag() {
        let cause = EventId::new(UnixMillis(5), [7; 10]);
        assert_eq!(EventId::derived(cause, "x"), EventId::derived(cause, "x"));
        assert_ne!(EventId::derived(cause, "x"), EventId::derived(cause, "y"));
        assert_ne!(EventId::derived(cause, "x"), cause);
    }

    #[test]
    fn stream_ids_refuse_subject_unsafe_characters() {
        for bad in ["", "a.b", "a b", "a*", "a>", "ü", &"x".repeat(65)] {
            assert!(StreamId::new(StreamKind::Case, bad).is_err(), "{bad:?}");
        }
        let s = StreamId::new(StreamKind::ProcessingNumber, "abc-1_2").unwrap();
        assert_eq!(s.to_string(), "number.abc-1_2");
        assert_eq!(StreamId::parse("number.abc-1_2").unwrap(), s);
        assert_eq!(s.context(), Context::Registration);
    }

    #[test]
    fn context_tags_and_names_round_trip() {
        for c in Context::ALL {
            assert_eq!(Context::from_tag(c.tag()), Some(c));
            assert_eq!(Context::parse(c.name()).unwrap(), c);
        }
    }
}
