//! The shell around an aggregate: load, decide, append, answer.

use std::marker::PhantomData;
use std::sync::Arc;

use actix::prelude::*;
use hotaru_domain::Aggregate;
use hotaru_events::{Clock, EventId, NewEvent, StreamId, TraceContext};
use hotaru_log::{Appended, EventLog, ExpectedVersion, LogError};

use crate::{Crashed, IdSource, guarded};

/// How often a command is decided again after losing a race for the stream.
const MAX_CONFLICT_RETRIES: usize = 3;

/// Where a command comes from: it becomes the events' causation and correlation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandMeta {
    pub causation_id: Option<EventId>,
    pub correlation_id: Option<EventId>,
    pub trace: Option<TraceContext>,
}

/// Runs `command` against the aggregate of `stream`.
pub struct Execute<A: Aggregate> {
    pub stream: StreamId,
    pub command: A::Command,
    pub meta: CommandMeta,
}

/// Why a command did not produce events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The domain refused the command; nothing was appended.
    #[error(transparent)]
    Domain(E),
    /// The log failed; see [`LogError`] for what the caller does.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stored event of the stream does not decode.
    #[error("stream {0} holds an event that does not decode: {1}")]
    Corrupt(StreamId, String),
    /// `decide` panicked; nothing was appended and the actor was restarted.
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<Appended, ExecuteError<A::Error>>;
}

/// The shell of aggregate `A`: stateless between commands (it reloads the stream each
/// time), so a restart loses nothing. Commands run one at a time, in arrival order.
pub struct AggregateActor<A: Aggregate, L: EventLog> {
    log: L,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    _aggregate: PhantomData<A>,
}

impl<A: Aggregate, L: EventLog> AggregateActor<A, L> {
    pub fn new(log: L, clock: Arc<dyn Clock>, ids: Arc<dyn IdSource>) -> Self {
        Self {
            log,
            clock,
            ids,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate + Unpin, L: EventLog + Unpin> Actor for AggregateActor<A, L> {
    type Context = Context<Self>;
}

impl<A: Aggregate + Unpin, L: EventLog + Unpin> Supervised for AggregateActor<A, L> {}

async fn run<A: Aggregate, L: EventLog>(
    log: L,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    msg: Execute<A>,
) -> Result<Appended, ExecuteError<A::Error>> {
    let mut attempt = 0;
    loop {
        // The stream's state as every shell loads it: from its last commit when that
        // restores the whole state, else folded from the stream.
        let (state, version) = match crate::load_latest::<A, L>(&log, &msg.stream).await {
            Ok(loaded) => loaded,
            Err(LogError::Corrupt { reason, .. }) => {
                return Err(ExecuteError::Corrupt(msg.stream.clone(), reason));
            }
            Err(e) => return Err(e.into()),
        };
        let events =
            guarded("aggregate", || state.decide(&msg.command))?.map_err(ExecuteError::Domain)?;
        let now = clock.now();
        let new_events: Vec<NewEvent> = events
            .into_iter()
            .map(|event| {
                let id = ids.next_id(now);
                NewEvent {
                    event_id: id,
                    occurred_at: now,
                    causation_id: msg.meta.causation_id,
                    correlation_id: msg.meta.correlation_id.unwrap_or(id),
                    trace: msg.meta.trace,
                    event,
                }
            })
            .collect();
        if new_events.is_empty() {
            return Ok(Appended {
                position: 0,
                first_version: version,
                last_version: version,
                duplicate: true,
            });
        }
        match log
            .append(
                msg.stream.clone(),
                ExpectedVersion::Exact(version),
                new_events,
            )
            .await
        {
            Err(LogError::Conflict { .. }) if attempt < MAX_CONFLICT_RETRIES => attempt += 1,
            other => return Ok(other?),
        }
    }
}

impl<A: Aggregate + Unpin, L: EventLog + Unpin> Handler<Execute<A>> for AggregateActor<A, L> {
    type Result = AtomicResponse<Self, Result<Appended, ExecuteError<A::Error>>>;

    fn handle(&mut self, msg: Execute<A>, _: &mut Context<Self>) -> Self::Result {
        let fut = run(self.log.clone(), self.clock.clone(), self.ids.clone(), msg);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|r, _, ctx| {
            if matches!(r, Err(ExecuteError::Crashed(_))) {
                ctx.stop();
            }
            r
        })))
    }
}
