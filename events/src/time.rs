//! Time as the domain sees it: milliseconds since the Unix epoch, always handed in.

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs * 1000)
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The day number since the epoch (UTC), the unit of retention and of GAEN keys.
    pub const fn day(self) -> u32 {
        (self.0 / 86_400_000) as u32
    }

    pub const fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// The only source of "now" in Hotaru. Production code gets a system clock from the
/// runtime crate; tests and simulations get a manual one and can run days in seconds.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// The wall clock: the only place Hotaru reads the system time. It lives here, beside the
/// trait, so that device agents and the server inject the same types; nothing in this
/// crate calls it.
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

/// A clock that moves only when told: tests and simulations run days in seconds. Clones
/// share one time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl ManualClock {
    pub fn at(t: UnixMillis) -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(t.0)))
    }

    pub fn advance_millis(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
