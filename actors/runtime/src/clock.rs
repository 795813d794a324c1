//! The injected clock and id source of the runtime.

/// The clocks moved to `hotaru_events::time`, beside the trait; re-exported for callers.
pub use hotaru_events::time::{ManualClock, SystemClock};
use hotaru_events::{EventId, UnixMillis};
use std::sync::Arc;

use hotaru_protocol::random::{OsRandom, RandomSource};

/// Where new event ids, and every other random byte of a node, come from.
pub trait IdSource: Send + Sync + 'static {
    fn next_id(&self, now: UnixMillis) -> EventId;

    /// The random source the ids are drawn from, for every other random byte the node
    /// draws (numbers, keys, nonces, padding): one injected source, seeded in tests.
    fn random(&self) -> Arc<dyn RandomSource>;
}

/// UUIDv7 ids whose random bits come from the node's random source (the operating
/// system's CSPRNG by default; a seeded one in tests).
pub struct RandomIds(Arc<dyn RandomSource>);

impl RandomIds {
    pub fn new(random: Arc<dyn RandomSource>) -> Self {
        Self(random)
    }
}

impl Default for RandomIds {
    fn default() -> Self {
        Self(Arc::new(OsRandom::new()))
    }
}

impl IdSource for RandomIds {
    fn next_id(&self, now: UnixMillis) -> EventId {
        EventId::new(now, self.0.array())
    }

    fn random(&self) -> Arc<dyn RandomSource> {
        self.0.clone()
    }
}
