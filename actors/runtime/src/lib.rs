//! The actor runtime: actix actors that consume the event log and run aggregates.
//!
//! - [`ProjectionActor`] follows one context of the log and folds it into a state; it
//!   stores the position it reached together with that state, in one checkpoint value,
//!   so a restart neither skips nor re-applies a commit.
//! - [`AggregateActor`] is the thin shell around a `hotaru_domain::Aggregate`: load the
//!   stream, decide, append with the expected version, answer.
//! - Both are supervised: a panic in a handler answers the in-flight message with
//!   [`Crashed`], stops the actor and lets its `Supervisor` start it afresh with the same
//!   mailbox. The process keeps running. The contract is in `docs/runtime-semantics.md`.
//! - [`Arbiters`] spreads actors over one arbiter (thread) per core. Actors start only from
//!   an actix context: `Actor::start` outside a System panics.

mod aggregate;
mod arbiters;
mod clock;
mod crash;
mod projection;
mod state_cache;

pub use aggregate::{AggregateActor, CommandMeta, Execute, ExecuteError};
pub use arbiters::Arbiters;
pub use clock::{IdSource, ManualClock, RandomIds, SystemClock};
pub use crash::crash_point;
pub use projection::{GetProjection, Projection, ProjectionActor, ProjectionSnapshot};
pub use state_cache::{StateCache, fold, load_latest};

/// A handler panicked while processing the message; the actor was restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the actor crashed while handling the message and was restarted")]
pub struct Crashed;

/// Runs `f`, turning a panic into [`Crashed`] (the panic message is logged).
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, Crashed> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(actor = what, panic = %msg, "handler panicked; restarting the actor");
        Crashed
    })
}
