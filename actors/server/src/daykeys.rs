//! Per-day key material, the heart of crypto-shredding (docs/adr/0003-retention.md).
//!
//! Each UTC day has 64 random bytes in the side store (`daykeys/d<day>`): a 32-byte digest
//! salt and a 32-byte data key.
//! - Number digests of numbers issued that day are HMAC-SHA256 under a key derived from the
//!   server secret (configuration) *and* the day's salt. Once the salt is destroyed, nobody,
//!   not even the operator with the secret, can tell which of the 10^8 numbers a stored
//!   digest was.
//! - Uploaded keys are sealed (AES-256-GCM) under the day's data key. Once it is destroyed,
//!   the ciphertext in the immutable log is noise; its hash chain is untouched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hotaru_domain::sealing::{DAY_KEYS as NS, day_key_name as name, open_sealed};
use hotaru_events::domain::{Day, Sealed};
use hotaru_events::{DigestKey, NumberDigest};
use hotaru_log::{LogError, SideStore};
use hotaru_protocol::random::RandomSource;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// One day's keys.
pub struct DayMaterial {
    day: Day,
    digest: DigestKey,
    data: LessSafeKey,
    random: Arc<dyn RandomSource>,
}

impl DayMaterial {
    fn from_bytes(
        secret: &[u8],
        day: Day,
        bytes: &[u8],
        random: Arc<dyn RandomSource>,
    ) -> Option<Self> {
        if bytes.len() != 64 {
            return None;
        }
        let mut msg = b"hotaru number digest v1".to_vec();
        msg.extend_from_slice(&day.0.to_be_bytes());
        msg.extend_from_slice(&bytes[..32]);
        let k = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), &msg);
        Some(Self {
            day,
            digest: DigestKey::new(k.as_ref())?,
            data: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes[32..]).ok()?),
            random,
        })
    }

    pub fn day(&self) -> Day {
        self.day
    }

    pub fn digest(&self, number: &str) -> NumberDigest {
        NumberDigest::compute(&self.digest, number)
    }

    /// Encrypts `plain` under the day's data key; the day is bound as associated data.
    pub fn seal(&self, plain: &[u8]) -> Sealed {
        let nonce: [u8; 12] = self.random.array();
        let mut buf = plain.to_vec();
        self.data
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.day.0.to_be_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of a small buffer");
        Sealed {
            day: self.day,
            nonce,
            ciphertext: buf,
        }
    }

    pub fn open(&self, sealed: &Sealed) -> Option<Vec<u8>> {
        if sealed.day != self.day {
            return None;
        }
        open_sealed(&self.data, sealed)
    }
}

/// The day keys of one server, cached.
#[derive(Clone)]
pub struct DayKeys<S> {
    store: S,
    secret: Arc<[u8]>,
    random: Arc<dyn RandomSource>,
    cache: Arc<Mutex<HashMap<u32, Arc<DayMaterial>>>>,
}

impl<S: SideStore> DayKeys<S> {
    /// `secret`: the configured digest secret, at least 32 bytes. `random`: the node's
    /// source, for new days' keys and sealing nonces.
    pub fn new(store: S, secret: &[u8], random: Arc<dyn RandomSource>) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the digest secret must be at least 32 bytes".into());
        }
        Ok(Self {
            store,
            secret: secret.into(),
            random,
            cache: Arc::default(),
        })
    }

    fn cached(&self, day: Day) -> Option<Arc<DayMaterial>> {
        self.cache
            .lock()
            .expect("not poisoned")
            .get(&day.0)
            .cloned()
    }

    /// The day's keys, creating them if the day has none yet (every node agrees on one).
    pub async fn get_or_create(&self, day: Day) -> Result<Arc<DayMaterial>, LogError> {
        if let Some(m) = self.cached(day) {
            return Ok(m);
        }
        let fresh: [u8; 64] = self.random.array();
        self.store.side_create(NS, &name(day), &fresh).await?;
        self.get(day)
            .await?
            .ok_or_else(|| LogError::Backend(format!("day key {} vanished", day.0)))
    }

    /// The day's keys, or `None` when they were destroyed (or never made).
    pub async fn get(&self, day: Day) -> Result<Option<Arc<DayMaterial>>, LogError> {
        if let Some(m) = self.cached(day) {
            return Ok(Some(m));
        }
        let Some(bytes) = self.store.side_get(NS, &name(day)).await? else {
            return Ok(None);
        };
        let m = DayMaterial::from_bytes(&self.secret, day, &bytes, self.random.clone())
            .ok_or_else(|| LogError::Backend(format!("day key {} is malformed", day.0)))?;
        let m = Arc::new(m);
        self.cache
            .lock()
            .expect("not poisoned")
            .insert(day.0, m.clone());
        Ok(Some(m))
    }

    /// Destroys the day's keys, everywhere this server can reach.
    pub async fn destroy(&self, day: Day) -> Result<(), LogError> {
        self.cache.lock().expect("not poisoned").remove(&day.0);
        self.store.side_delete(NS, &name(day)).await
    }

    /// Days that still have keys.
    pub async fn days(&self) -> Result<Vec<Day>, LogError> {
        Ok(self
            .store
            .side_keys(NS)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix('d')?.parse().ok().map(Day))
            .collect())
    }

    /// Forgets cached keys (another node may have destroyed them).
    pub fn forget_cache(&self) {
        self.cache.lock().expect("not poisoned").clear();
    }
}
