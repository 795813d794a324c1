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
