//! The server's rules as data: every limit of the registration flow, with COCOA's defaults.

use serde::{Deserialize, Serialize};

/// Milliseconds in an hour and a day (one definition, in `hotaru_events::time`).
pub use hotaru_events::{DAY_MS, HOUR_MS};

/// The registration flow's limits (`[registration]` in the server's TOML configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationPolicy {
    /// Digits of a processing number.
    pub number_length: usize,
    /// How long a number stays redeemable. COCOA's SMS backlog once made 1-hour numbers
    /// expire before they arrived: 24 hours by default.
    pub number_validity_ms: u64,
    /// Numbers one health centre may issue per day.
    pub daily_quota_per_centre: u32,
    /// Keys one upload may carry.
    pub max_keys_per_upload: usize,
    /// Keys with the same rolling start one upload may carry.
    pub max_keys_same_start: usize,
    /// Oldest key accepted, in days before the upload.
    pub max_key_age_days: u32,
    /// Keys whose day ended before (onset or sample date − this many days) are not
    /// published (the seed's infectious-period rule).
    pub infectious_days_before: u32,
    /// A key still valid at upload is held until this long after it expires.
    pub hold_after_expiry_ms: u64,
    /// Transmission risk the server assigns to confirmed-test keys (never 0: see
    /// `hotaru_protocol::risk::legacy`).
    pub transmission_risk: u8,
    /// How long after a number's expiry a device may add keys with its revision token
    /// (Google's v1 publish API).
    pub revision_window_ms: u64,
    /// How often the revision-token key rotates.
    pub revision_key_rotation_ms: u64,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            number_length: 8,
            number_validity_ms: DAY_MS,
            daily_quota_per_centre: 1_000,
            max_keys_per_upload: 30,
            max_keys_same_start: 3,
            max_key_age_days: 14,
            infectious_days_before: 2,
            hold_after_expiry_ms: 2 * HOUR_MS,
            transmission_risk: 4,
            revision_window_ms: 2 * DAY_MS,
            revision_key_rotation_ms: DAY_MS,
        }
    }
}

impl RegistrationPolicy {
    /// After this long a superseded revision key can open no usable token: it is deleted.
    pub fn revision_key_retirement_ms(&self) -> u64 {
        self.number_validity_ms + self.revision_window_ms
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if !(6..=16).contains(&self.number_length) {
            return Err(format!(
                "number_length {} is not in 6..=16",
                self.number_length
            ));
        }
        if self.number_validity_ms < HOUR_MS {
            return Err("number_validity must be at least an hour".into());
        }
        if !(1..=8).contains(&self.transmission_risk) {
            return Err("transmission_risk must be in 1..=8 (0 silences Android v1)".into());
        }
        if self.max_keys_per_upload == 0 || self.max_keys_same_start == 0 {
            return Err("key limits must be at least 1".into());
        }
        if self.revision_key_rotation_ms < HOUR_MS {
            return Err("revision_key_rotation must be at least an hour".into());
        }
        Ok(())
    }
}
