//! A projection: one context of the log folded into a state, checkpointed with it.

use std::time::Duration;

use actix::prelude::*;
use hotaru_events::Context as LogContext;
use hotaru_log::{Checkpoint, EventLog, LogError, RecordedCommit};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::guarded;

/// A read model: how commits change a state. Pure; the actor does the I/O.
pub trait Projection: Unpin + 'static {
    type State: Default + Clone + Serialize + DeserializeOwned + Send + Unpin + 'static;

    /// The version of `State`'s encoding in the checkpoint (ADR 0005). Change it with the
    /// state's shape: a checkpoint of another version is set aside and the projection
    /// rebuilds from the start of its context. (Version 0, checkpoints of before, counts
    /// as version 1.)
    const STATE_VERSION: u8 = 1;

    /// The consumer name: the checkpoint's key (1-64 of `A-Za-z0-9_-`).
    fn name(&self) -> &str;

    fn context(&self) -> LogContext;

    fn apply(&self, state: &mut Self::State, commit: &RecordedCommit);
}

/// The state and the position it reflects.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionSnapshot<S> {
    pub position: u64,
    pub state: S,
}

/// Asks a projection for its current state.
pub struct GetProjection<S>(std::marker::PhantomData<S>);

impl<S> Default for GetProjection<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<S: 'static> Message for GetProjection<S> {
    type Result = ProjectionSnapshot<S>;
}

/// The position and state a checkpoint resumes from; `None` when it is of another state
/// version (the projection rebuilds from the start); an error when it is of this version
/// but does not decode (a corrupt checkpoint is not silently replaced).
fn resume_from<P: Projection>(
    name: &str,
    cp: Checkpoint,
) -> Result<Option<(u64, P::State)>, LogError> {
    match hotaru_events::versioned::split(&cp.state) {
        (v, body) if v == P::STATE_VERSION || (v == 0 && P::STATE_VERSION == 1) => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(state, _)| Some((cp.position, state)))
                .map_err(|e| {
                    LogError::Backend(format!("the checkpoint of {name} does not decode: {e}"))
                })
        }
        (v, _) => {
            tracing::info!(
                projection = name,
                stored = v,
                current = P::STATE_VERSION,
                "checkpoint of another state version: rebuilding from the start"
            );
            Ok(None)
        }
    }
}

/// Runs a [`Projection`] against a log.
pub struct ProjectionActor<P: Projection, L: EventLog> {
    projection: P,
    log: L,
    /// Commits applied since the last checkpoint; saved when it reaches `every`, on a
    /// timer and on stop.
    dirty: u64,
    every: u64,
    position: u64,
    state: P::State,
}

impl<P: Projection, L: EventLog + Unpin> ProjectionActor<P, L> {
    pub fn new(projection: P, log: L) -> Self {
        Self {
            projection,
            log,
            dirty: 0,
            every: 256,
            position: 0,
            state: P::State::default(),
        }
    }

    /// Checkpoint after this many commits (default 256).
    pub fn checkpoint_every(mut self, n: u64) -> Self {
        self.every = n.max(1);
        self
    }

    fn encode_state(&self) -> Vec<u8> {
        let body = bincode::serde::encode_to_vec(&self.state, bincode::config::standard())
            .expect("state encodes");
        hotaru_events::versioned::wrap_vec(P::STATE_VERSION, body)
    }

    /// Saves position and state as one value; the actor handles nothing else meanwhile.
    fn save(&mut self, ctx: &mut Context<Self>) {
        if self.dirty == 0 {
            return;
        }
        let cp = Checkpoint {
            position: self.position,
            state: self.encode_state(),
        };
        let log = self.log.clone();
        let name = self.projection.name().to_owned();
        self.dirty = 0;
        ctx.wait(
            async move { log.save_checkpoint(&name, &cp).await }
                .into_actor(self)
                .map(|r, act, ctx| {
                    if let Err(e) = r {
                        tracing::error!(projection = act.projection.name(), error = %e, "checkpoint failed; restarting");
                        ctx.stop();
                    }
                }),
        );
    }
}

impl<P: Projection, L: EventLog + Unpin> Actor for ProjectionActor<P, L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let log = self.log.clone();
        let name = self.projection.name().to_owned();
        let context = self.projection.context();
        ctx.wait(
            async move {
                let resume = match log.load_checkpoint(&name).await? {
                    Some(cp) => resume_from::<P>(&name, cp)?,
                    None => None,
                };
                let from = resume.as_ref().map_or(0, |(p, _)| *p) + 1;
                let sub = log.subscribe(context, from, Some(&name)).await?;
                Ok::<_, LogError>((resume, sub))
            }
            .into_actor(self)
            .map(|r, act, ctx| match r {
                Ok((resume, sub)) => {
                    if let Some((position, state)) = resume {
                        act.state = state;
                        act.position = position;
                    }
                    ctx.add_stream(sub);
                }
                Err(e) => {
                    tracing::error!(projection = act.projection.name(), error = %e, "cannot resume; restarting");
                    ctx.run_later(Duration::from_millis(500), |_, ctx| ctx.stop());
                }
            }),
        );
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.save(ctx));
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        self.save(ctx);
        Running::Stop
    }
}

impl<P: Projection, L: EventLog + Unpin> Supervised for ProjectionActor<P, L> {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Forget what was applied since the checkpoint: `started` reloads it.
        self.state = P::State::default();
        self.position = 0;
        self.dirty = 0;
    }
}

impl<P: Projection, L: EventLog + Unpin> StreamHandler<Result<RecordedCommit, LogError>>
    for ProjectionActor<P, L>
{
    fn handle(&mut self, item: Result<RecordedCommit, LogError>, ctx: &mut Context<Self>) {
        let commit = match item {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(projection = self.projection.name(), error = %e, "subscription failed; restarting");
                ctx.stop();
                return;
            }
        };
        if commit.position <= self.position {
            return; // already reflected in the state
        }
        let (projection, state) = (&self.projection, &mut self.state);
        if guarded(projection.name(), || projection.apply(state, &commit)).is_err() {
            // The state may be half-updated: drop it; the restart reloads the checkpoint.
            self.dirty = 0;
            ctx.stop();
            return;
        }
        self.position = commit.position;
        self.dirty += 1;
        if self.dirty >= self.every {
            self.save(ctx);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(
            projection = self.projection.name(),
            "subscription ended; restarting"
        );
        ctx.stop();
    }
}

impl<P: Projection, L: EventLog + Unpin> Handler<GetProjection<P::State>>
    for ProjectionActor<P, L>
{
    type Result = MessageResult<GetProjection<P::State>>;

    fn handle(&mut self, _: GetProjection<P::State>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ProjectionSnapshot {
            position: self.position,
            state: self.state.clone(),
        })
    }
}
