//! The event log: one trait, two real backends.
//!
//! - [`SledLog`]: embedded, one directory, group commit (many appends, one flush).
//! - [`NatsLog`]: NATS JetStream, one stream per [`Context`], for clusters.
//!
//! Both store the same frames (see `hotaru_events::codec`) and pass the same conformance
//! suite (`conformance`, run by `actors/log/tests`). The contract, for every backend:
//!
//! - An append is one atomic commit of one or more events to one stream, at the next
//!   position of the stream's context and the next link of that context's hash chain.
//!   `Ok` means durable: flushed to disk (sled) or acknowledged by JetStream.
//! - Optimistic concurrency: an append with an expected version that is not the stream's
//!   version fails with [`LogError::Conflict`] and stores nothing.
//! - Idempotency: re-appending a commit whose events are already stored returns the first
//!   commit's position with `duplicate: true` and stores nothing (see [`Appended`]).
//! - Reads and subscriptions see only durable commits, in position order; a subscription
//!   catches up from a position and then follows live commits with no gap and no
//!   duplicate at the seam.
//! - Checkpoints: a consumer stores its position together with the state it produced,
//!   in one value, so a restart neither skips nor re-applies a commit.

use std::future::Future;

use futures::stream::BoxStream;
use hotaru_events::{ChainHash, Commit, Context, EncodeError, NewEvent, StreamId};

mod any;
mod nats;
mod side;
mod sled_log;
mod sources;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use any::{AnyLog, Backend};
pub use nats::{NatsConfig, NatsLog, server_addrs, stream_name};
pub use side::{MemoryStore, SideStore};
pub use sled_log::{DEDUP_WINDOW as SLED_DEDUP_WINDOW, SledLog};
pub use sources::{GENERATION as SOURCE_GENERATION, SOURCE_TTL};

/// Whose log this is. A server's log holds the server's contexts only; a device's (a
/// phone's store, a simulated fleet's log) holds the device context only.
///
/// **Invariant:** a device's events never enter the server's log. A server log refuses an
/// append to the device context or of a device event type ([`LogError::OutOfScope`]), and
/// on NATS it neither creates nor reads the device stream; the committee's audit fails when
/// it finds a device event anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogScope {
    #[default]
    Server,
    Device,
}

impl LogScope {
    pub const fn contexts(self) -> &'static [Context] {
        match self {
            LogScope::Server => &Context::SERVER,
            LogScope::Device => &Context::DEVICE,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            LogScope::Server => "server",
            LogScope::Device => "device",
        }
    }

    /// Refuses an append that does not belong in a log of this scope.
    pub fn admit(self, stream: &StreamId, events: &[NewEvent]) -> Result<(), LogError> {
        let device = self == LogScope::Device;
        if stream.context().is_device() != device {
            return Err(LogError::OutOfScope(format!(
                "stream {stream} does not belong in a {} log",
                self.name()
            )));
        }
        if let Some(e) = events
            .iter()
            .find(|e| e.event.event_type().is_device() != device)
        {
            return Err(LogError::OutOfScope(format!(
                "{} does not belong in a {} log",
                e.event.event_type().name(),
                self.name()
            )));
        }
        Ok(())
    }
}

/// What the appender expects the stream's version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check: append at whatever version the stream is.
    Any,
    /// The stream must be at exactly this version (0: the stream must not exist yet).
    Exact(u64),
}

/// The outcome of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The commit's position in its context.
    pub position: u64,
    /// The stream version of the commit's first and last event.
    pub first_version: u64,
    pub last_version: u64,
    /// True when the commit was already stored (a retry): nothing new was written.
    pub duplicate: bool,
}

/// A stored commit as read back: its position, chain hash, raw frame and decoded commit.
#[derive(Clone, Debug)]
pub struct RecordedCommit {
    pub position: u64,
    pub hash: ChainHash,
    /// The frame exactly as stored: what the chain verifier checks.
    pub frame: bytes::Bytes,
    pub commit: Commit,
}

/// A consumer's durable progress: the last position it applied and the state that
/// applying it produced, stored as one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    pub state: Vec<u8>,
}

/// A live feed of commits from a position on.
pub type Subscription = BoxStream<'static, Result<RecordedCommit, LogError>>;

/// Errors of the event log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The stream is not at the expected version: reload the aggregate, decide again.
    #[error("stream {stream} is at version {actual}, expected {expected:?}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// An event id of the append is already stored in a different commit: the caller
    /// reused an id for different content; fix the caller.
    #[error("event id {event_id} is already stored at position {position} of {context}")]
    IdReused {
        event_id: String,
        context: Context,
        position: u64,
    },
    /// The append cannot be encoded (empty or too large): split or fix it.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A stored frame does not decode: the store is damaged; run `hotaru log verify`.
    #[error("corrupt frame at position {position} of {context}: {reason}")]
    Corrupt {
        context: Context,
        position: u64,
        reason: String,
    },
    /// The backend failed (I/O, NATS unreachable, timeout). The append may or may not have
    /// been stored: retry with the same event ids, which is safe.
    #[error("backend: {0}")]
    Backend(String),
    /// Writers kept racing for the same context and this append gave up: retry.
    #[error("contention on {0}: retry")]
    Contention(Context),
    /// The log was shut down.
    #[error("the event log is closed")]
    Closed,
    /// The append belongs in another kind of log (a device event in the server's log, or
    /// a server event in a device's): a wiring mistake; nothing was stored.
    #[error("out of scope: {0}")]
    OutOfScope(String),
}

/// The event log. Implemented by [`SledLog`], [`NatsLog`] and [`AnyLog`].
pub trait EventLog: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` as one atomic commit.
    fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Appended, LogError>> + Send;

    /// Every commit of `stream`, oldest first.
    fn read_stream(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Vec<RecordedCommit>, LogError>> + Send;

    /// The last commit of `stream` (`None` when it has none): one read, however long the
    /// stream is.
    fn last_commit(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<RecordedCommit>, LogError>> + Send;

    /// The version of `stream` (0 when it has no event): at most one read of its last
    /// commit (none on the embedded log, whose index holds it), however long the stream is.
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// Up to `max` commits of `context` from position `from` (inclusive), in order.
    fn read_all(
        &self,
        context: Context,
        from: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedCommit>, LogError>> + Send;

    /// The position of the last durable commit of `context` (0 when empty).
    fn head(&self, context: Context) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// Commits of `context` from `from` on: catch-up, then live. `durable` names the
    /// consumer where the backend keeps server-side consumers (NATS).
    fn subscribe(
        &self,
        context: Context,
        from: u64,
        durable: Option<&str>,
    ) -> impl Future<Output = Result<Subscription, LogError>> + Send;

    fn load_checkpoint(
        &self,
        consumer: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, LogError>> + Send;

    /// Stores the checkpoint durably; `Ok` means it survives a crash.
    fn save_checkpoint(
        &self,
        consumer: &str,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), LogError>> + Send;
}

/// Checks a consumer name: 1-64 ASCII letters, digits, `-` or `_`.
pub(crate) fn check_consumer_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LogError::Backend(format!("invalid consumer name {name:?}")))
    }
}

/// Encodes a checkpoint: encoding byte ‖ position (u64 BE) ‖ state.
pub(crate) fn encode_checkpoint(cp: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + cp.state.len());
    out.push(hotaru_events::ENCODING_BINCODE2);
    out.extend_from_slice(&cp.position.to_be_bytes());
    out.extend_from_slice(&cp.state);
    out
}

pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, LogError> {
    if bytes.len() < 9 || bytes[0] != hotaru_events::ENCODING_BINCODE2 {
        return Err(LogError::Backend("malformed checkpoint".into()));
    }
    let position = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
    Ok(Checkpoint {
        position,
        state: bytes[9..].to_vec(),
    })
}

/// Decodes a stored frame into a [`RecordedCommit`], checking its position.
pub(crate) fn recorded(
    context: Context,
    position: u64,
    frame: bytes::Bytes,
) -> Result<RecordedCommit, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        context,
        position,
        reason,
    };
    let (hash, commit) =
        hotaru_events::Frame::decode(&frame).map_err(|e| corrupt(e.to_string()))?;
    if commit.position != position || commit.context != context {
        return Err(corrupt(format!(
            "frame records {} position {}",
            commit.context, commit.position
        )));
    }
    Ok(RecordedCommit {
        position,
        hash,
        frame,
        commit,
    })
}

/// Whether `events` are exactly the events of `commit` (same ids, same order): then an
/// append of `events` is a retry of `commit`.
pub(crate) fn same_ids(commit: &Commit, events: &[hotaru_events::CommitEvent]) -> bool {
    commit.events.len() == events.len()
        && commit
            .events
            .iter()
            .zip(events)
            .all(|(a, b)| a.event_id == b.event_id)
}
