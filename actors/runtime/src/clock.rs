//! The injected clock and id source of the runtime.

/// The clocks moved to `hotaru_events::time`, beside the trait; re-exported for callers.
pub use hotaru_events::time::{ManualClock, SystemClock};
use hotaru_events::{EventId, UnixMillis};
use ring::rand::SecureRandom;

/// Where new event ids come from.
pub trait IdSource: Send + Sync + 'static {
    fn next_id(&self, now: UnixMillis) -> EventId;
}

/// UUIDv7 ids with random bits from the operating system's CSPRNG.
pub struct RandomIds(ring::rand::SystemRandom);

impl Default for RandomIds {
    fn default() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

impl IdSource for RandomIds {
    fn next_id(&self, now: UnixMillis) -> EventId {
        let mut random = [0u8; 10];
        self.0
            .fill(&mut random)
            .expect("the OS random source works");
        EventId::new(now, random)
    }
}
