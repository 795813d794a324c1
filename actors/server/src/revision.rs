//! Revision tokens of Google's v1 publish API: after an upload the device gets an
//! encrypted token naming the keys it uploaded; with it (and the same processing number)
//! it may later upload keys it did not have yet, e.g. the key of the day of its upload,
//! without the server taking the old keys twice.
//!
//! The token is sealed with AES-256-GCM under a revision key; the keys rotate (a new
//! effective key per rotation, the older ones still open tokens until they are retired)
//! and live in the side store, so every node opens every node's tokens. Only the servers
//! can read a token; to the device it is opaque. Its plaintext is padded to a fixed size,
//! so its length says nothing about how many keys it names.
//!
//! Token bytes: key id (u32, big-endian) ‖ nonce (12) ‖ AES-GCM(plaintext), base64.
//! Plaintext: version 1 ‖ number digest (32) ‖ case id (16) ‖ count (u8) ‖ count × key
//! (16 bytes key, u32 rolling start, u32 rolling period), zero-padded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hotaru_events::domain::CaseId;
use hotaru_events::{NumberDigest, UnixMillis};
use hotaru_log::{LogError, SideStore};
use hotaru_protocol::random::RandomSource;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const NS: &str = "revision-keys";
const VERSION: u8 = 1;
/// Keys a token can name (30 per upload; a few revisions fit).
pub const MAX_TOKEN_KEYS: usize = 64;
/// Every plaintext is padded to this many key slots.
const SLOTS: usize = MAX_TOKEN_KEYS;
const KEY_BYTES: usize = 24;
const PLAIN_LEN: usize = 1 + 32 + 16 + 1 + SLOTS * KEY_BYTES;
/// The length of every token, before base64.
pub const TOKEN_BYTES: usize = 4 + 12 + PLAIN_LEN + 16;
const AAD: &[u8] = b"hotaru revision token v1";

/// A key the token says the device uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevisableKey {
    pub key_data: [u8; 16],
    pub rolling_start: u32,
    pub rolling_period: u32,
}

/// What a token holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenData {
    pub digest: NumberDigest,
    pub case_id: CaseId,
    pub keys: Vec<RevisableKey>,
}

impl TokenData {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(PLAIN_LEN);
        p.push(VERSION);
        p.extend_from_slice(&self.digest.0);
        p.extend_from_slice(&self.case_id.0);
        let n = self.keys.len().min(MAX_TOKEN_KEYS);
        p.push(n as u8);
        for k in &self.keys[..n] {
            p.extend_from_slice(&k.key_data);
            p.extend_from_slice(&k.rolling_start.to_be_bytes());
            p.extend_from_slice(&k.rolling_period.to_be_bytes());
        }
        p.resize(PLAIN_LEN, 0);
        p
    }

    fn decode(p: &[u8]) -> Option<Self> {
        if p.len() != PLAIN_LEN || p[0] != VERSION {
            return None;
        }
        let digest = NumberDigest(p[1..33].try_into().ok()?);
        let case_id = CaseId(p[33..49].try_into().ok()?);
        let n = usize::from(p[49]);
        if n > MAX_TOKEN_KEYS {
            return None;
        }
        let keys = p[50..50 + n * KEY_BYTES]
            .chunks_exact(KEY_BYTES)
            .map(|c| RevisableKey {
                key_data: c[..16].try_into().expect("16 bytes"),
                rolling_start: u32::from_be_bytes(c[16..20].try_into().expect("4 bytes")),
                rolling_period: u32::from_be_bytes(c[20..24].try_into().expect("4 bytes")),
            })
            .collect();
        Some(Self {
            digest,
            case_id,
            keys,
        })
    }
}

#[derive(Clone, Copy)]
struct KeyRecord {
    created: UnixMillis,
    secret: [u8; 32],
}

impl KeyRecord {
    fn to_bytes(self) -> Vec<u8> {
        let mut v = self.created.0.to_be_bytes().to_vec();
        v.extend_from_slice(&self.secret);
        v
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        (b.len() == 40).then(|| Self {
            created: UnixMillis(u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))),
            secret: b[8..].try_into().expect("32 bytes"),
        })
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.secret).expect("32-byte key"))
    }
}

/// A revision key as `hotaru keys revision list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionKeyInfo {
    pub id: u32,
    pub created: UnixMillis,
    pub effective: bool,
}

/// The revision keys, cached; shared by every clone.
#[derive(Clone)]
pub struct RevisionKeys<S: SideStore> {
    store: S,
    random: Arc<dyn RandomSource>,
    cache: Arc<Mutex<BTreeMap<u32, KeyRecord>>>,
    /// When the cache was read from the store: another node's rotation (and retirement)
    /// is seen within [`CACHE_FOR`].
    loaded: Arc<Mutex<Option<std::time::Instant>>>,
}

/// How long the cached keys are trusted.
const CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

fn key_name(id: u32) -> String {
    format!("{id:010}")
}

impl<S: SideStore> RevisionKeys<S> {
    pub fn new(store: S, random: Arc<dyn RandomSource>) -> Self {
        Self {
            store,
            random,
            cache: Arc::default(),
            loaded: Arc::default(),
        }
    }

    /// Reads every key from the store (another node may have rotated).
    async fn reload(&self) -> Result<(), LogError> {
        let mut all = BTreeMap::new();
        for name in self.store.side_keys(NS).await? {
            let (Ok(id), Some(rec)) = (
                name.parse::<u32>(),
                self.store
                    .side_get(NS, &name)
                    .await?
                    .as_deref()
                    .and_then(KeyRecord::from_bytes),
            ) else {
                continue;
            };
            all.insert(id, rec);
        }
        *self.cache.lock().expect("not poisoned") = all;
        *self.loaded.lock().expect("not poisoned") = Some(std::time::Instant::now());
        Ok(())
    }

    async fn reload_if_stale(&self) -> Result<(), LogError> {
        let stale = self
            .loaded
            .lock()
            .expect("not poisoned")
            .is_none_or(|t| t.elapsed() > CACHE_FOR);
        if stale {
            self.reload().await?;
        }
        Ok(())
    }

    fn newest(&self) -> Option<(u32, KeyRecord)> {
        let c = self.cache.lock().expect("not poisoned");
        c.last_key_value().map(|(id, r)| (*id, *r))
    }

    /// Creates key `id` unless another node did; either way the store holds it after.
    async fn create(&self, id: u32, now: UnixMillis) -> Result<(), LogError> {
        let secret: [u8; 32] = self.random.array();
        let rec = KeyRecord {
            created: now,
            secret,
        };
        self.store
            .side_create(NS, &key_name(id), &rec.to_bytes())
            .await?;
        self.reload().await
    }

    /// The key new tokens are sealed with (the first one is made on first use).
    async fn effective(&self, now: UnixMillis) -> Result<(u32, KeyRecord), LogError> {
        self.reload_if_stale().await?;
        if let Some(k) = self.newest() {
            return Ok(k);
        }
        self.reload().await?;
        if let Some(k) = self.newest() {
            return Ok(k);
        }
        self.create(1, now).await?;
        self.newest()
            .ok_or_else(|| LogError::Backend("the revision key was not stored".into()))
    }

    /// Makes a new effective key, and deletes the keys superseded more than `retire_after_ms`
    /// ago (no token they sealed can still be used). Returns the new key's id.
    pub async fn rotate(&self, now: UnixMillis, retire_after_ms: u64) -> Result<u32, LogError> {
        self.reload().await?;
        let next = self.newest().map_or(1, |(id, _)| id + 1);
        self.create(next, now).await?;
        let all: Vec<(u32, KeyRecord)> = self
            .cache
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(i, r)| (*i, *r))
            .collect();
        for pair in all.windows(2) {
            let (old, successor) = (pair[0].0, pair[1].1);
            if successor.created.0.saturating_add(retire_after_ms) <= now.0 {
                self.store.side_delete(NS, &key_name(old)).await?;
            }
        }
        self.reload().await?;
        Ok(self.newest().map_or(next, |(id, _)| id))
    }

    /// Rotates when the effective key is older than `every_ms`.
    pub async fn rotate_if_due(
        &self,
        now: UnixMillis,
        every_ms: u64,
        retire_after_ms: u64,
    ) -> Result<Option<u32>, LogError> {
        self.reload().await?;
        match self.newest() {
            Some((_, k)) if k.created.0.saturating_add(every_ms) > now.0 => Ok(None),
            _ => self.rotate(now, retire_after_ms).await.map(Some),
        }
    }

    pub async fn list(&self) -> Result<Vec<RevisionKeyInfo>, LogError> {
        self.reload().await?;
        let c = self.cache.lock().expect("not poisoned");
        let newest = c.last_key_value().map(|(id, _)| *id);
        Ok(c.iter()
            .map(|(id, r)| RevisionKeyInfo {
                id: *id,
                created: r.created,
                effective: Some(*id) == newest,
            })
            .collect())
    }

    /// Seals a token under the effective key.
    pub async fn seal(&self, data: &TokenData, now: UnixMillis) -> Result<String, LogError> {
        let (id, key) = self.effective(now).await?;
        let nonce: [u8; 12] = self.random.array();
        let mut buf = data.encode();
        key.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| LogError::Backend("sealing failed".into()))?;
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens a token: `None` when it is malformed, forged, or sealed by a retired key.
    pub async fn open(&self, token: &str) -> Result<Option<TokenData>, LogError> {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return Ok(None);
        };
        if bytes.len() < 4 + 12 + 16 {
            return Ok(None);
        }
        let id = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        let nonce: [u8; 12] = bytes[4..16].try_into().expect("12 bytes");
        self.reload_if_stale().await?;
        let cached = self.cache.lock().expect("not poisoned").get(&id).copied();
        let key = match cached {
            Some(k) => k,
            None => {
                // Perhaps another node rotated since this one last looked.
                self.reload().await?;
                let Some(k) = self.cache.lock().expect("not poisoned").get(&id).copied() else {
                    return Ok(None);
                };
                k
            }
        };
        let mut buf = bytes[16..].to_vec();
        let Ok(plain) = key.aead().open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut buf,
        ) else {
            return Ok(None);
        };
        Ok(TokenData::decode(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotaru_log::SledLog;

    fn os() -> Arc<dyn RandomSource> {
        Arc::new(hotaru_protocol::random::OsRandom::new())
    }

    fn data(n: usize) -> TokenData {
        TokenData {
            digest: NumberDigest([3; 32]),
            case_id: CaseId([4; 16]),
            keys: (0..n)
                .map(|i| RevisableKey {
                    key_data: [i as u8; 16],
                    rolling_start: 2_900_000 + i as u32 * 144,
                    rolling_period: 144,
                })
                .collect(),
        }
    }

    const DAY: u64 = hotaru_events::DAY_MS;

    #[tokio::test]
    async fn tokens_round_trip_and_have_one_size() {
        let dir = tempfile::tempdir().unwrap();
        let keys = RevisionKeys::new(SledLog::open(dir.path()).unwrap(), os());
        let a = keys.seal(&data(1), UnixMillis(DAY)).await.unwrap();
        let b = keys.seal(&data(30), UnixMillis(DAY)).await.unwrap();
        assert_eq!(a.len(), b.len(), "the size says nothing of the count");
        assert_eq!(keys.open(&a).await.unwrap(), Some(data(1)));
        assert_eq!(keys.open(&b).await.unwrap(), Some(data(30)));
        assert_ne!(
            keys.seal(&data(1), UnixMillis(DAY)).await.unwrap(),
            a,
            "a fresh nonce each time"
        );
    }

    #[tokio::test]
    async fn a_forged_or_damaged_token_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let keys = RevisionKeys::new(SledLog::open(dir.path()).unwrap(), os());
        let t = keys.seal(&data(2), UnixMillis(DAY)).await.unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&t)
            .unwrap();
        for i in [0, 3, 4, 15, 16, 40, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            let bad = base64::engine::general_purpose::STANDARD.encode(bad);
            assert_eq!(keys.open(&bad).await.unwrap(), None, "byte {i}");
        }
        for junk in ["", "!!", "AAAA", &t[..t.len() / 2]] {
            assert_eq!(keys.open(junk).await.unwrap(), None, "{junk:?}");
        }
    }

    #[tokio::test]
    async fn rotation_keeps_old_tokens_until_their_key_retires() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledLog::open(dir.path()).unwrap();
        let keys = RevisionKeys::new(store.clone(), os());
        let old = keys.seal(&data(2), UnixMillis(DAY)).await.unwrap();
        assert_eq!(keys.rotate(UnixMillis(2 * DAY), 3 * DAY).await.unwrap(), 2);
        let new = keys.seal(&data(2), UnixMillis(2 * DAY)).await.unwrap();
        assert_ne!(old[..6], new[..6], "sealed under the new key id");
        // Another node (a fresh cache over the same store) opens both.
        let other = RevisionKeys::new(store, os());
        assert!(other.open(&old).await.unwrap().is_some());
        assert!(other.open(&new).await.unwrap().is_some());
        // Not due yet; then due.
        assert_eq!(
            keys.rotate_if_due(UnixMillis(2 * DAY + 1), DAY, 3 * DAY)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            keys.rotate_if_due(UnixMillis(5 * DAY), DAY, 3 * DAY)
                .await
                .unwrap(),
            Some(3)
        );
        // Key 1 was superseded at day 2, three days ago: retired, its tokens dead (on
        // another node once its cache is older than a minute: a fresh one here).
        assert_eq!(keys.open(&old).await.unwrap(), None);
        let fresh = RevisionKeys::new(other.store.clone(), os());
        assert_eq!(fresh.open(&old).await.unwrap(), None);
        assert!(fresh.open(&new).await.unwrap().is_some());
        let listed = keys.list().await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|k| (k.id, k.effective))
                .collect::<Vec<_>>(),
            vec![(2, false), (3, true)]
        );
    }
}
