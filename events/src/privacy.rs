//! Types that make privacy mistakes hard.
//!
//! A processing number never enters an event: events carry only a [`NumberDigest`], an
//! HMAC-SHA256 of the number under a server secret. There is no type in this crate that
//! can hold a clear number, a name, a phone number, an address or a location.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The server secret that keys number digests. Not serialisable, not printable.
pub struct DigestKey(ring::hmac::Key);

impl DigestKey {
    /// Builds the key from at least 32 secret bytes (from configuration).
    pub fn new(secret: &[u8]) -> Option<Self> {
        (secret.len() >= 32).then(|| Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)))
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

/// HMAC-SHA256(server secret, processing number): what events and stores hold instead of
/// the number. Without the secret it cannot be reversed by trying all 10^8 numbers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NumberDigest(pub [u8; 32]);

impl NumberDigest {
    pub fn compute(key: &DigestKey, number: &str) -> Self {
        let tag = ring::hmac::sign(&key.0, number.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Self(out)
    }

    /// A short, non-reversible label for logs and aggregate ids.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Debug for NumberDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NumberDigest({}..)", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_the_secret_and_hides_the_number() {
        let k1 = DigestKey::new(&[1; 32]).unwrap();
        let k2 = DigestKey::new(&[2; 32]).unwrap();
        let a = NumberDigest::compute(&k1, "12345678");
        assert_eq!(a, NumberDigest::compute(&k1, "12345678"));
        assert_ne!(a, NumberDigest::compute(&k2, "12345678"));
        assert_ne!(a, NumberDigest::compute(&k1, "12345679"));
        assert!(!format!("{a:?}").contains("12345678"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(DigestKey::new(&[0; 31]).is_none());
    }
}
