//! The device's encrypted store: TEKs and scan records at rest, under a data key per day.
//!
//! ```text
//! device key (one per install)      side store "devmaster"/<device>
//!   └ wraps the data key of a day   side store "devkeys"/<device>-<day>
//!       ├ seals the day's TEK       inside the TekRolled event (the device's log)
//!       └ seals the day's records   side store "devrec"/<device>-<day>
//! ```
//!
//! Expiry deletes the day's data key and records: what was sealed under the key, in the
//! log or beside it, is unreadable for good (crypto-shredding, as the server does). There
//! is no export and no backup of any of it. On a phone the device key would live in the OS
//! keystore; here it is a side-store value of the device's own store.
//!
//! The store is any [`SideStore`]: the embedded sled store of a real device, or a fleet's
//! JetStream (its own streams, apart from the server's).

use std::collections::BTreeMap;

use hotaru_events::domain::{Day, DeviceId, Sealed};
use hotaru_log::{LogError, SideStore};
use hotaru_protocol::random::Random;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

const MASTER: &str = "devmaster";
const DAY_KEYS: &str = "devkeys";
const RECORDS: &str = "devrec";
const META: &str = "devmeta";

/// One scan instance that heard one RPI, as stored (encrypted) on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredScan {
    /// Unix seconds of the scan.
    pub at: u64,
    pub rpi: [u8; 16],
    pub aem: [u8; 4],
    /// Mean RSSI of the scan (typical attenuation) and its strongest (minimum attenuation).
    pub rssi_dbm: i8,
    pub peak_rssi_dbm: i8,
    /// The time this scan stands for, at most 300 s.
    pub seconds_since_last_scan: u16,
}

/// Why the vault could not do its work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The store failed: retry later (nothing half-written is read back).
    #[error(transparent)]
    Store(#[from] LogError),
    /// A value does not open under its key: the store is damaged or was tampered with.
    #[error("a sealed value of day {0} does not open")]
    Damaged(u32),
}

/// The encrypted store of one device.
#[derive(Clone)]
pub struct Vault<S> {
    store: S,
    device: String,
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl<S: SideStore> Vault<S> {
    pub fn new(store: S, device_id: DeviceId) -> Self {
        Self {
            store,
            device: hex::encode(device_id.0),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn day_name(&self, day: u32) -> String {
        format!("{}-{day}", self.device)
    }

    async fn master(&self, random: &mut dyn Random) -> Result<[u8; 32], VaultError> {
        if let Some(k) = self.store.side_get(MASTER, &self.device).await? {
            return k.try_into().map_err(|_| VaultError::Damaged(0));
        }
        let mut k = [0u8; 32];
        random.fill(&mut k);
        // Two starts racing agree on one key.
        if !self.store.side_create(MASTER, &self.device, &k).await? {
            return Box::pin(self.master(random)).await;
        }
        Ok(k)
    }

    /// The data key of `day`, created when `create` and missing; `None` once destroyed.
    async fn day_key(
        &self,
        day: u32,
        create: bool,
        random: &mut dyn Random,
    ) -> Result<Option<[u8; 32]>, VaultError> {
        let master = self.master(random).await?;
        let name = self.day_name(day);
        if let Some(wrapped) = self.store.side_get(DAY_KEYS, &name).await? {
            let sealed: Sealed = bincode::serde::decode_from_slice(&wrapped, bincode_cfg())
                .map_err(|_| VaultError::Damaged(day))?
                .0;
            let key = open(&master, &sealed, b"day-key").ok_or(VaultError::Damaged(day))?;
            return key
                .try_into()
                .map(Some)
                .map_err(|_| VaultError::Damaged(day));
        }
        if !create {
            return Ok(None);
        }
        let mut key = [0u8; 32];
        random.fill(&mut key);
        let wrapped = seal(&master, Day(day), &key, b"day-key", random);
        let bytes = bincode::serde::encode_to_vec(&wrapped, bincode_cfg()).expect("encodes");
        self.store.side_put(DAY_KEYS, &name, &bytes).await?;
        Ok(Some(key))
    }

    /// Seals a TEK under its day's key (for the TekRolled event).
    pub async fn seal_tek(
        &self,
        day: u32,
        tek: &[u8; 16],
        random: &mut dyn Random,
    ) -> Result<Sealed, VaultError> {
        let key = self.day_key(day, true, random).await?.expect("created");
        Ok(seal(&key, Day(day), tek, b"tek", random))
    }

    /// Opens a sealed TEK; `None` once its day's key is destroyed.
    pub async fn open_tek(
        &self,
        sealed: &Sealed,
        random: &mut dyn Random,
    ) -> Result<Option<[u8; 16]>, VaultError> {
        let Some(key) = self.day_key(sealed.day.0, false, random).await? else {
            return Ok(None);
        };
        let tek = open(&key, sealed, b"tek").ok_or(VaultError::Damaged(sealed.day.0))?;
        tek.try_into()
            .map(Some)
            .map_err(|_| VaultError::Damaged(sealed.day.0))
    }

    /// The records of `day` (empty when none, or destroyed).
    pub async fn records(
        &self,
        day: u32,
        random: &mut dyn Random,
    ) -> Result<Vec<StoredScan>, VaultError> {
        let Some(bytes) = self.store.side_get(RECORDS, &self.day_name(day)).await? else {
            return Ok(Vec::new());
        };
        let Some(key) = self.day_key(day, false, random).await? else {
            return Ok(Vec::new());
        };
        let sealed: Sealed = bincode::serde::decode_from_slice(&bytes, bincode_cfg())
            .map_err(|_| VaultError::Damaged(day))?
            .0;
        let plain = open(&key, &sealed, b"records").ok_or(VaultError::Damaged(day))?;
        Ok(bincode::serde::decode_from_slice(&plain, bincode_cfg())
            .map_err(|_| VaultError::Damaged(day))?
            .0)
    }

    /// Adds scans to their days' records (re-sealed under a fresh nonce).
    pub async fn add_records(
        &self,
        scans: &[StoredScan],
        random: &mut dyn Random,
    ) -> Result<(), VaultError> {
        let mut by_day: BTreeMap<u32, Vec<StoredScan>> = BTreeMap::new();
        for s in scans {
            by_day.entry((s.at / 86_400) as u32).or_default().push(*s);
        }
        for (day, new) in by_day {
            let mut all = self.records(day, random).await?;
            all.extend(new);
            let key = self.day_key(day, true, random).await?.expect("created");
            let plain = bincode::serde::encode_to_vec(&all, bincode_cfg()).expect("encodes");
            let sealed = seal(&key, Day(day), &plain, b"records", random);
            let bytes = bincode::serde::encode_to_vec(&sealed, bincode_cfg()).expect("encodes");
            self.store
                .side_put(RECORDS, &self.day_name(day), &bytes)
                .await?;
        }
        Ok(())
    }

    /// Days with records: (scans, sightings) of each, for closing and expiry.
    pub async fn stored_days(
        &self,
        random: &mut dyn Random,
    ) -> Result<BTreeMap<u32, (u32, u32)>, VaultError> {
        let prefix = format!("{}-", self.device);
        let mut out = BTreeMap::new();
        for k in self.store.side_keys_prefixed(RECORDS, &prefix).await? {
            let Some(day) = k.strip_prefix(&prefix).and_then(|d| d.parse::<u32>().ok()) else {
                continue;
            };
            let records = self.records(day, random).await?;
            let scans: std::collections::BTreeSet<u64> = records.iter().map(|r| r.at).collect();
            out.insert(day, (scans.len() as u32, records.len() as u32));
        }
        Ok(out)
    }

    /// Destroys the day's data key and records (idempotent: a restart repeats it).
    pub async fn destroy_day(&self, day: u32) -> Result<(), VaultError> {
        let name = self.day_name(day);
        self.store.side_delete(RECORDS, &name).await?;
        self.store.side_delete(DAY_KEYS, &name).await?;
        Ok(())
    }

    /// Destroys everything of this device (consent withdrawn).
    pub async fn destroy_all(&self) -> Result<(), VaultError> {
        let prefix = format!("{}-", self.device);
        for ns in [RECORDS, DAY_KEYS, META] {
            for k in self.store.side_keys_prefixed(ns, &prefix).await? {
                self.store.side_delete(ns, &k).await?;
            }
        }
        self.store.side_delete(MASTER, &self.device).await?;
        Ok(())
    }

    /// Small values of the device's own (the ETag of index.txt).
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self
            .store
            .side_get(META, &format!("{}-{key}", self.device))
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        Ok(self
            .store
            .side_put(META, &format!("{}-{key}", self.device), value)
            .await?)
    }
}

/// AES-256-GCM under `key` with a nonce from `random`; the day and purpose are bound in.
pub fn seal(
    key: &[u8; 32],
    day: Day,
    plain: &[u8],
    purpose: &[u8],
    random: &mut dyn Random,
) -> Sealed {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let mut nonce = [0u8; 12];
    random.fill(&mut nonce);
    let mut buf = plain.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(day, purpose)),
        &mut buf,
    )
    .expect("sealing works");
    Sealed {
        day,
        nonce,
        ciphertext: buf,
    }
}

pub fn open(key: &[u8; 32], sealed: &Sealed, purpose: &[u8]) -> Option<Vec<u8>> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let mut buf = sealed.ciphertext.clone();
    let plain = k
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(aad(sealed.day, purpose)),
            &mut buf,
        )
        .ok()?;
    Some(plain.to_vec())
}

fn aad(day: Day, purpose: &[u8]) -> Vec<u8> {
    let mut a = b"hotaru-device:".to_vec();
    a.extend_from_slice(purpose);
    a.extend_from_slice(&day.0.to_be_bytes());
    a
}
