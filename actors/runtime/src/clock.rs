//! The injected clock and id source of the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hotaru_events::{Clock, EventId, UnixMillis};
use ring::rand::SecureRandom;

/// The wall clock. The only place Hotaru reads the system time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(d.as_millis() as u64)
    }
}

/// A clock that moves only when told: tests and simulations run days in seconds.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(t: UnixMillis) -> Self {
        Self(Arc::new(AtomicU64::new(t.0)))
    }

    pub fn advance_millis(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

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
