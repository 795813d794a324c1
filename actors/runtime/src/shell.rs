//! The one shell every command runs through: load the stream, enrich, decide, stamp,
//! append with the expected version, and decide again on the news when another writer got
//! in first.

use std::future::Future;
use std::sync::Arc;

use hotaru_domain::Aggregate;
use hotaru_events::{Clock, EventId, NewEvent, StreamId, TraceContext, UnixMillis};
use hotaru_log::{Appended, EventLog, ExpectedVersion, LogError};

use crate::{Crashed, IdSource, StateCache, guarded, load_latest};

/// How often a command is decided again after losing a race for its stream. A conflict
/// means another writer appended, so the system as a whole made progress; the bound only
/// stops a command that keeps losing (the hottest stream, a centre's daily quota, takes
/// one append per number the centre issues).
pub const MAX_CONFLICT_RETRIES: usize = 64;

/// Where a command comes from: it becomes the events' causation and correlation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandMeta {
    pub causation_id: Option<EventId>,
    pub correlation_id: Option<EventId>,
    pub trace: Option<TraceContext>,
    /// The time the command was decided at (its events' `occurred_at`); the clock's now
    /// when absent.
    pub at: Option<UnixMillis>,
    /// The later events of the commit are caused by its first (a redemption's keys by the
    /// redemption), instead of all by `causation_id`.
    pub chained: bool,
}

/// Where the first decision's state comes from. A retry always reads the stream afresh.
pub enum Start<'a, A> {
    /// From the log ([`load_latest`]).
    Read,
    /// A stream the caller knows to be new (a fresh random id): the default state at
    /// version 0, without a read. Wrong only if the id is not fresh, which the
    /// expected-version append then refuses.
    New,
    /// A state the caller read already, and its version.
    Known(A, u64),
    /// From a cache of hot streams: a stale entry fails the append (and is forgotten), and
    /// an outcome that appends nothing is answered only from the stream's latest state.
    Cached(&'a StateCache<A>),
}

/// Why a command did not produce events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError<D, E> {
    /// The domain refused the command; nothing was appended.
    #[error(transparent)]
    Domain(D),
    /// The enrich step refused before a command was decided.
    #[error("refused before deciding")]
    Enrich(E),
    /// The log failed (a stream that does not decode is `LogError::Corrupt`; one that kept
    /// changing under the command is `LogError::Contention`).
    #[error(transparent)]
    Log(#[from] LogError),
    /// `decide` panicked; nothing was appended.
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

/// A command's outcome: the state after it, the stream's version, the events appended
/// (none when the command changed nothing) and what the enrich step handed out.
#[derive(Debug)]
pub struct Executed<A, T> {
    pub state: A,
    pub version: u64,
    pub events: Vec<NewEvent>,
    pub appended: Option<Appended>,
    pub extra: T,
}

/// The command shell over a log, with the clock and ids that stamp its events.
#[derive(Clone)]
pub struct Shell<L> {
    log: L,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
}

impl<L: EventLog> Shell<L> {
    pub fn new(log: L, clock: Arc<dyn Clock>, ids: Arc<dyn IdSource>) -> Self {
        Self { log, clock, ids }
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// Runs `command` against the aggregate of `stream`.
    pub async fn execute<A>(
        &self,
        stream: &StreamId,
        start: Start<'_, A>,
        meta: CommandMeta,
        command: A::Command,
    ) -> Result<Executed<A, ()>, ShellError<A::Error, std::convert::Infallible>>
    where
        A: Aggregate,
        A::Command: Clone,
    {
        self.execute_with(stream, start, meta, |_: &A, _| {
            let command = command.clone();
            async move { Ok((command, ())) }
        })
        .await
    }

    /// Runs the command that `enrich` builds from the stream's state and version (reading
    /// what else the decision needs: keys, other streams). `enrich` runs again on every
    /// retry, on the state that won; it may refuse (`ShellError::Enrich`) and may hand out
    /// data with the command (`Executed::extra`).
    pub async fn execute_with<A, E, T, F, Fut>(
        &self,
        stream: &StreamId,
        start: Start<'_, A>,
        meta: CommandMeta,
        mut enrich: F,
    ) -> Result<Executed<A, T>, ShellError<A::Error, E>>
    where
        A: Aggregate,
        F: FnMut(&A, u64) -> Fut,
        Fut: Future<Output = Result<(A::Command, T), E>>,
    {
        let cache = match &start {
            Start::Cached(c) => Some(*c),
            _ => None,
        };
        let mut first = Some(start);
        for _ in 0..=MAX_CONFLICT_RETRIES {
            let (state, version, cached) = match first.take().unwrap_or(Start::Read) {
                Start::Read => {
                    let (s, v) = load_latest::<A, L>(&self.log, stream).await?;
                    (s, v, false)
                }
                Start::New => (A::default(), 0, false),
                Start::Known(s, v) => (s, v, false),
                Start::Cached(c) => c.load(&self.log, stream).await?,
            };
            let (command, extra) = enrich(&state, version).await.map_err(ShellError::Enrich)?;
            let decided = guarded("shell", || state.decide(&command))?;
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                // A refusal or a no-op: from a cached state, answered only when that state
                // is the stream's latest.
                outcome => {
                    if cached
                        && !cache
                            .expect("cached")
                            .is_current(&self.log, stream, version)
                            .await?
                    {
                        continue;
                    }
                    return match outcome {
                        Ok(_) => Ok(Executed {
                            state,
                            version,
                            events: Vec::new(),
                            appended: None,
                            extra,
                        }),
                        Err(e) => Err(ShellError::Domain(e)),
                    };
                }
            };
            let new_events = self.stamp(meta, events);
            match self
                .log
                .append(
                    stream.clone(),
                    ExpectedVersion::Exact(version),
                    new_events.clone(),
                )
                .await
            {
                Ok(appended) => {
                    let mut state = state;
                    for e in &new_events {
                        state.apply(&e.event);
                    }
                    if let Some(c) = cache {
                        c.store(stream, state.clone(), appended.last_version);
                    }
                    return Ok(Executed {
                        state,
                        version: appended.last_version,
                        events: new_events,
                        appended: Some(appended),
                        extra,
                    });
                }
                Err(LogError::Conflict { .. }) => {
                    if let Some(c) = cache {
                        c.forget(stream);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogError::Contention(stream.kind().context()).into())
    }

    /// The events of one decision as they are appended: fresh ids, the command's time,
    /// causation and correlation from `meta`.
    pub fn stamp(
        &self,
        meta: CommandMeta,
        events: Vec<hotaru_events::DomainEvent>,
    ) -> Vec<NewEvent> {
        let now = meta.at.unwrap_or_else(|| self.clock.now());
        let mut first: Option<EventId> = None;
        events
            .into_iter()
            .map(|event| {
                let id = self.ids.next_id(now);
                let causation_id = match first {
                    Some(f) if meta.chained => Some(f),
                    _ => meta.causation_id,
                };
                let chain_root = *first.get_or_insert(id);
                let correlation_id =
                    meta.correlation_id
                        .unwrap_or(if meta.chained { chain_root } else { id });
                NewEvent {
                    event_id: id,
                    occurred_at: now,
                    causation_id,
                    correlation_id,
                    trace: meta.trace,
                    event,
                }
            })
            .collect()
    }
}
