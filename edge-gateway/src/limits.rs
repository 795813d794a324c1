//! Rate limits at the edge, per source, in memory only.
//!
//! A source is a keyed hash of the client's address: the address itself is never stored,
//! logged or passed on. The key is the day's key derived from one secret that every gateway
//! of a deployment shares (`gateway.source_secret`, by default derived from the digest
//! secret), so one client has one label at every gateway, and no label links a client from
//! one day to the next. An IPv6 client is its /64 (configurable): one subscriber's network,
//! where it may draw a new address for every request. Behind a load balancer the client is
//! the address the trusted proxies name in `X-Forwarded-For`; any other peer's header is
//! ignored. The same label keys the registration's per-source back-off.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use actix_web::HttpRequest;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hotaru_events::UnixMillis;
use ipnet::IpNet;
use ring::rand::SecureRandom;

use crate::ApiError;

/// How the edge labels a request's source.
#[derive(Clone)]
pub struct SourceKeying {
    /// The secret the day keys are derived from; the same on every gateway.
    pub secret: Vec<u8>,
    /// The prefix length that makes one IPv6 source (1-128).
    pub ipv6_prefix: u8,
    /// The peers allowed to name the client in `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
}

impl std::fmt::Debug for SourceKeying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceKeying")
            .field("secret", &hotaru_server::Redacted(self.secret.len()))
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl SourceKeying {
    /// A secret of this process alone (tests, simulations, one gateway): labels mean
    /// nothing to another gateway or after a restart.
    pub fn random() -> Self {
        let mut k = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut k)
            .expect("random source");
        Self {
            secret: k,
            ipv6_prefix: 64,
            trusted_proxies: Vec::new(),
        }
    }

    /// The secret shared by the gateways of a deployment, derived from the digest secret
    /// (which every node has) when no source secret is configured: domain-separated, so
    /// neither reveals the other.
    pub fn derived_secret(digest_secret: &[u8]) -> Vec<u8> {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest_secret);
        ring::hmac::sign(&k, b"hotaru edge source secret v1")
            .as_ref()
            .to_vec()
    }

    /// The client a request comes from: the peer, or, when the peer is a trusted proxy,
    /// the right-most address of `X-Forwarded-For` that is not itself a trusted proxy (a
    /// client can put anything on the left of the list; only what the proxies appended is
    /// theirs). An IPv4 address mapped into IPv6 is the IPv4 address.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        let trusted = |a: IpAddr| self.trusted_proxies.iter().any(|n| n.contains(&a));
        if !trusted(peer) {
            return peer;
        }
        let Some(list) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>().map(canonical) {
                Ok(a) if trusted(a) => client = a,
                Ok(a) => return a,
                // Not an address: what is left of it cannot be trusted either.
                Err(_) => return client,
            }
        }
        client
    }

    /// The bytes that make one source: an IPv4 address, or an IPv6 address cut to its
    /// prefix.
    fn source_bytes(&self, client: IpAddr) -> Vec<u8> {
        match client {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let keep = u32::from(self.ipv6_prefix.clamp(1, 128));
                let masked = bits & (u128::MAX << (128 - keep));
                let mut out = masked.to_be_bytes().to_vec();
                out.push(self.ipv6_prefix);
                out
            }
        }
    }
}

fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

pub struct EdgeLimits {
    keying: SourceKeying,
    /// The key of the day in use, derived from the secret.
    day_key: Mutex<(u32, ring::hmac::Key)>,
    uploads: DefaultKeyedRateLimiter<u64>,
}

impl EdgeLimits {
    /// `per_minute` requests to the write routes per source, with bursts of `burst`,
    /// sources labelled under a key of this process alone ([`SourceKeying::random`]).
    pub fn new(per_minute: u32, burst: u32) -> Arc<Self> {
        Self::with_keying(per_minute, burst, SourceKeying::random())
    }

    #[cfg(test)]
    fn new_keyed(keying: SourceKeying) -> Arc<Self> {
        Self::with_keying(60, 20, keying)
    }

    /// As [`Self::new`], with the deployment's source keying.
    pub fn with_keying(per_minute: u32, burst: u32, keying: SourceKeying) -> Arc<Self> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least 1"))
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"));
        let day_key = Mutex::new((0, day_key(&keying.secret, 0)));
        Arc::new(Self {
            keying,
            day_key,
            uploads: RateLimiter::keyed(quota),
        })
    }

    /// The opaque label of the request's source on the day of `now`.
    pub fn source(&self, req: &HttpRequest, now: UnixMillis) -> Option<u64> {
        let peer = req.peer_addr()?.ip();
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Some(self.label(self.keying.client(peer, forwarded), now.day()))
    }

    /// The label of `client` on `day`: the same at every gateway that shares the secret.
    pub fn label(&self, client: IpAddr, day: u32) -> u64 {
        let bytes = self.keying.source_bytes(client);
        let mut current = self
            .day_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != day {
            *current = (day, day_key(&self.keying.secret, day));
        }
        let tag = ring::hmac::sign(&current.1, &bytes);
        u64::from_le_bytes(tag.as_ref()[..8].try_into().expect("8 bytes"))
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

/// The key that labels sources on `day`.
fn day_key(secret: &[u8], day: u32) -> ring::hmac::Key {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut info = b"hotaru edge source day ".to_vec();
    info.extend_from_slice(&day.to_be_bytes());
    ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        ring::hmac::sign(&k, &info).as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keying(secret: u8, proxies: &[&str]) -> SourceKeying {
        SourceKeying {
            secret: vec![secret; 32],
            ipv6_prefix: 64,
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gateways_that_share_the_secret_give_one_client_one_label_for_the_day() {
        let (a, b) = (
            EdgeLimits::new_keyed(keying(1, &[])),
            EdgeLimits::new_keyed(keying(1, &[])),
        );
        let other = EdgeLimits::new_keyed(keying(2, &[]));
        let c = ip("203.0.113.7");
        assert_eq!(a.label(c, 20_000), b.label(c, 20_000));
        assert_ne!(
            a.label(c, 20_000),
            other.label(c, 20_000),
            "another deployment"
        );
        assert_ne!(a.label(c, 20_000), a.label(c, 20_001), "the next day");
        assert_eq!(a.label(c, 20_000), b.label(c, 20_000), "and back again");
        assert_ne!(a.label(c, 20_000), a.label(ip("203.0.113.8"), 20_000));
    }

    #[test]
    fn an_ipv6_client_is_its_prefix() {
        let l = EdgeLimits::new_keyed(keying(1, &[]));
        let one = l.label(ip("2001:db8:1:2:aaaa::1"), 7);
        assert_eq!(
            one,
            l.label(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), 7),
            "same /64"
        );
        assert_ne!(one, l.label(ip("2001:db8:1:3::1"), 7), "next /64");
        let mut k = keying(1, &[]);
        k.ipv6_prefix = 48;
        let wide = EdgeLimits::new_keyed(k);
        assert_eq!(
            wide.label(ip("2001:db8:1:2::1"), 7),
            wide.label(ip("2001:db8:1:ffff::1"), 7),
            "same /48"
        );
        // An IPv4 client seen through an IPv6 socket is the IPv4 client.
        assert_eq!(
            l.label(l.keying.client(ip("::ffff:198.51.100.4"), None), 7),
            l.label(ip("198.51.100.4"), 7)
        );
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let k = keying(1, &["10.0.0.0/8", "2001:db8:ffff::/48"]);
        // A client talking to the gateway directly cannot pose as another.
        assert_eq!(
            k.client(ip("198.51.100.4"), Some("203.0.113.9")),
            ip("198.51.100.4")
        );
        // Through the load balancer: the client it appended, whatever the client put left.
        assert_eq!(
            k.client(ip("10.1.2.3"), Some("192.0.2.66, 203.0.113.9")),
            ip("203.0.113.9")
        );
        // Through two trusted proxies.
        assert_eq!(
            k.client(ip("10.1.2.3"), Some("203.0.113.9, 10.9.9.9")),
            ip("203.0.113.9")
        );
        assert_eq!(
            k.client(ip("2001:db8:ffff::5"), Some("2001:db8:1::7")),
            ip("2001:db8:1::7")
        );
        // No header, or garbage where the proxies' part should be: the proxy itself.
        assert_eq!(k.client(ip("10.1.2.3"), None), ip("10.1.2.3"));
        assert_eq!(
            k.client(ip("10.1.2.3"), Some("not an address")),
            ip("10.1.2.3")
        );
    }
}
