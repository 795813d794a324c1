//! The runtime the server's actix actors run on: how a command reaches the log, and how a
//! read model follows it.
//!
//! - [`projection`]: a read model of one context resumes from its checkpoint, applies the
//!   commits after it, and saves the position it reached together with its state, in one
//!   checkpoint value, so a restart neither skips nor re-applies a commit.
//! - [`Shell`] is the one way a command reaches the log: load the stream of a
//!   `hotaru_domain::Aggregate`, enrich, decide, append with the expected version, decide
//!   again on the news after a conflict (one retry bound for every stream).
//! - A panic in `decide` answers [`Crashed`] and appends nothing. The contract is in
//!   `docs/runtime-semantics.md`.
//! - [`Arbiters`] spreads actors over one arbiter (thread) per core. Actors start only from
//!   an actix context: `Actor::start` outside a System panics.

mod arbiters;
mod clock;
mod crash;
pub mod projection;
mod shell;
mod state_cache;

pub use arbiters::Arbiters;
pub use clock::{IdSource, ManualClock, RandomIds, SystemClock};
pub use crash::crash_point;
pub use projection::{Projection, ProjectionSnapshot};
pub use shell::{CommandMeta, Executed, MAX_CONFLICT_RETRIES, Shell, ShellError, Start};
pub use state_cache::{StateCache, fold, load_latest};

/// A command's `decide` panicked; nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the command's decision panicked; nothing was appended")]
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
