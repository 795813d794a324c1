//! Time as the domain sees it: milliseconds since the Unix epoch, always handed in.

use serde::{Deserialize, Serialize};

/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;
/// Milliseconds in a day (UTC days: the unit of retention, of day keys and of TEKs).
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Milliseconds in a GAEN interval (ENIntervalNumber: ten minutes).
pub const INTERVAL_MS: u64 = 600_000;
/// GAEN intervals in a day: a TEK's rolling period.
pub const INTERVALS_PER_DAY: u32 = (DAY_MS / INTERVAL_MS) as u32;

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
        (self.0 / DAY_MS) as u32
    }

    /// The GAEN interval number (ENIntervalNumber) this instant falls in.
    pub const fn interval(self) -> u32 {
        (self.0 / INTERVAL_MS) as u32
    }

    /// The first millisecond of `day`.
    pub const fn start_of_day(day: u32) -> Self {
        Self(day as u64 * DAY_MS)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_gaen_intervals() {
        assert_eq!(INTERVALS_PER_DAY, 144, "GAEN's rolling period");
        // 2020-09-28T00:10:00Z, the day COCOA 1.1.4 shipped: day 18,533, interval 2,668,753.
        let t = UnixMillis::from_secs(1_601_251_800);
        assert_eq!(t.day(), 18_533);
        assert_eq!(t.interval(), 18_533 * 144 + 1);
        assert_eq!(UnixMillis::start_of_day(18_533).0, 1_601_251_200_000);
        assert_eq!(UnixMillis::start_of_day(t.day()).day(), t.day());
        assert_eq!(UnixMillis(DAY_MS - 1).day(), 0);
        assert_eq!(UnixMillis(INTERVAL_MS - 1).interval(), 0);
    }
}
