//! Hotaru's domain logic as plain functions.
//!
//! Every aggregate is `decide` (command + state -> events or an error) and `apply`
//! (state + event -> state). All business rules live in `decide`; `apply` only records,
//! so replaying the log rebuilds exactly the same state. Actors (`hotaru-actors`) are thin
//! shells: load, decide, append, apply.
//!
//! **Architecture Invariant:** this crate is pure: no I/O, no clock, no randomness. The
//! time a rule needs arrives inside the command, from the shell's injected clock.

use hotaru_events::DomainEvent;

pub mod case;
pub mod export;
pub mod limiter;
pub mod number;
pub mod personal;
pub mod policy;
pub mod refusals;
pub mod sealing;
pub mod testing;
pub mod upload;

/// An aggregate: the state of one stream and the rules that guard it.
pub trait Aggregate: Default + Clone + Send + 'static {
    type Command: Send + 'static;
    type Error: std::error::Error + Clone + Send + 'static;

    /// Checks the command against the state and returns the events that record it.
    fn decide(&self, command: &Self::Command) -> Result<Vec<DomainEvent>, Self::Error>;

    /// Folds one recorded event into the state. Never fails, never decides.
    fn apply(&mut self, event: &DomainEvent);

    /// The state a stream's last event gives on its own, when that event repeats the whole
    /// state (a snapshot event); `None` otherwise. It must equal the fold of the stream
    /// that ends with it: a load may then read the stream's last commit instead of all of
    /// it (`hotaru_actors::load_latest`).
    fn restore(_last: &DomainEvent) -> Option<Self> {
        None
    }

    /// Whether [`Aggregate::restore`] can ever answer: a load of an aggregate that cannot
    /// reads its stream at once, without looking at the last commit first.
    const RESTORES: bool = false;

    /// The state after `events`, from the default.
    fn replay<'a>(events: impl IntoIterator<Item = &'a DomainEvent>) -> Self {
        let mut state = Self::default();
        for e in events {
            state.apply(e);
        }
        state
    }
}
