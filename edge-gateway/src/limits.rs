//! Rate limits at the edge, per source, in memory only.
//!
//! A source is a keyed hash of the peer address under a random key drawn at start: the
//! address itself is never stored, logged or passed on, and the hash means nothing after a
//! restart. The same key labels the source for the registration's per-source back-off.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use actix_web::HttpRequest;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ring::rand::SecureRandom;

use crate::ApiError;

pub struct EdgeLimits {
    key: ring::hmac::Key,
    uploads: DefaultKeyedRateLimiter<u64>,
}

impl EdgeLimits {
    /// `per_minute` requests to the write routes per source, with bursts of `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Arc<Self> {
        let mut k = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut k)
            .expect("random source");
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least 1"))
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"));
        Arc::new(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k),
            uploads: RateLimiter::keyed(quota),
        })
    }

    /// The opaque label of the request's source.
    pub fn source(&self, req: &HttpRequest) -> Option<u64> {
        let ip: IpAddr = req.peer_addr()?.ip();
        let tag = match ip {
            IpAddr::V4(a) => ring::hmac::sign(&self.key, &a.octets()),
            IpAddr::V6(a) => ring::hmac::sign(&self.key, &a.octets()),
        };
        Some(u64::from_le_bytes(
            tag.as_ref()[..8].try_into().expect("8 bytes"),
        ))
    }

    /// Admits a write request from `source`, or answers 429.
    pub fn admit(&self, source: Option<u64>) -> Result<(), ApiError> {
        let Some(s) = source else { return Ok(()) };
        self.uploads.check_key(&s).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError {
                retry_after: Some(wait.as_secs().max(1)),
                ..ApiError::new(429, "RATE_LIMITED", "too many requests; slow down")
            }
        })?;
        // Keep memory bounded: forget sources whose buckets are full again.
        if self.uploads.len() > 100_000 {
            self.uploads.retain_recent();
        }
        Ok(())
    }
}
