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
    /// The device key once read (the OS keystore hands it to the app while it runs).
    master: std::sync::Arc<std::sync::OnceLock<[u8; 32]>>,
}

/// The header of a value sealed in the current format: `0xFF` cannot begin the bincode
/// encoding of the earlier format (a varint tag), so both are read.
const FORMAT: [u8; 2] = [0xFF, 1];

/// One stored scan in the current format: seconds into its day (4) ‖ rpi (16) ‖ aem (4) ‖
/// rssi ‖ peak ‖ seconds since the last scan (2), little-endian.
const SCAN_BYTES: usize = 28;
const DAY_S: u64 = 86_400;

impl StoredScan {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((self.at % DAY_S) as u32).to_le_bytes());
        out.extend_from_slice(&self.rpi);
        out.extend_from_slice(&self.aem);
        out.push(self.rssi_dbm as u8);
        out.push(self.peak_rssi_dbm as u8);
        out.extend_from_slice(&self.seconds_since_last_scan.to_le_bytes());
    }

    fn decode(day: u32, b: &[u8; SCAN_BYTES]) -> Self {
        let mut rpi = [0u8; 16];
        rpi.copy_from_slice(&b[4..20]);
        let mut aem = [0u8; 4];
        aem.copy_from_slice(&b[20..24]);
        Self {
            at: u64::from(day) * DAY_S + u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            rpi,
            aem,
            rssi_dbm: b[24] as i8,
            peak_rssi_dbm: b[25] as i8,
            seconds_since_last_scan: u16::from_le_bytes([b[26], b[27]]),
        }
    }
}

/// A sealed value as stored: [`FORMAT`] ‖ nonce ‖ ciphertext (the day is in its name).
fn encode_sealed(s: &Sealed) -> Vec<u8> {
    let mut out = Vec::with_capacity(FORMAT.len() + 12 + s.ciphertext.len());
    out.extend_from_slice(&FORMAT);
    out.extend_from_slice(&s.nonce);
    out.extend_from_slice(&s.ciphertext);
    out
}

/// Reads a sealed value of `day` in either format; `None` when it is neither.
fn decode_sealed(bytes: &[u8], day: u32) -> Option<(Sealed, bool)> {
    if let Some(rest) = bytes.strip_prefix(&FORMAT) {
        let nonce: [u8; 12] = rest.get(..12)?.try_into().ok()?;
        return Some((
            Sealed {
                day: Day(day),
                nonce,
                ciphertext: rest[12..].to_vec(),
            },
            true,
        ));
    }
    let sealed: Sealed = bincode::serde::decode_from_slice(bytes, bincode_cfg())
        .ok()?
        .0;
    (sealed.day.0 == day).then_some((sealed, false))
}

/// The scans of one day, all of which lie in it.
fn encode_scans(scans: &[StoredScan]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scans.len() * SCAN_BYTES);
    for s in scans {
        s.encode_into(&mut out);
    }
    out
}

/// The scans of one day (each is stored as its offset into the day).
fn decode_scans(day: u32, plain: &[u8], current: bool) -> Option<Vec<StoredScan>> {
    if !current {
        return bincode::serde::decode_from_slice(plain, bincode_cfg())
            .ok()
            .map(|d| d.0);
    }
    let chunks = plain.chunks_exact(SCAN_BYTES);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(
        chunks
            .map(|c| StoredScan::decode(day, c.try_into().expect("a whole scan")))
            .collect(),
    )
}

/// The scans of `day` from their stored bytes, opened under the day's key.
fn opened_records(day: u32, key: &[u8; 32], bytes: &[u8]) -> Result<Vec<StoredScan>, VaultError> {
    let (sealed, current) = decode_sealed(bytes, day).ok_or(VaultError::Damaged(day))?;
    let plain = open(key, &sealed, b"records").ok_or(VaultError::Damaged(day))?;
    decode_scans(day, &plain, current).ok_or(VaultError::Damaged(day))
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl<S: SideStore> Vault<S> {
    pub fn new(store: S, device_id: DeviceId) -> Self {
        Self {
            store,
            device: hex::encode(device_id.0),
            master: Default::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn day_name(&self, day: u32) -> String {
        format!("{}-{day}", self.device)
    }

    async fn master(&self, random: &mut dyn Random) -> Result<[u8; 32], VaultError> {
        if let Some(k) = self.master.get() {
            return Ok(*k);
        }
        if let Some(k) = self.store.side_get(MASTER, &self.device).await? {
            let k: [u8; 32] = k.try_into().map_err(|_| VaultError::Damaged(0))?;
            return Ok(*self.master.get_or_init(|| k));
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
            let (sealed, _) = decode_sealed(&wrapped, day).ok_or(VaultError::Damaged(day))?;
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
        self.store
            .side_put(DAY_KEYS, &name, &encode_sealed(&wrapped))
            .await?;
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
        opened_records(day, &key, &bytes)
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
            // One unwrap of the day's key serves the read and the re-seal.
            let key = self.day_key(day, true, random).await?.expect("created");
            let mut all = match self.store.side_get(RECORDS, &self.day_name(day)).await? {
                Some(bytes) => opened_records(day, &key, &bytes)?,
                None => Vec::new(),
            };
            all.extend(new);
            let sealed = seal(&key, Day(day), &encode_scans(&all), b"records", random);
            self.store
                .side_put(RECORDS, &self.day_name(day), &encode_sealed(&sealed))
                .await?;
        }
        Ok(())
    }

    /// Days with records: (scans, sightings) of each, for closing and expiry.
    pub async fn stored_days(
        &self,
        random: &mut dyn Random,
    ) -> Result<BTreeMap<u32, (u32, u32)>, VaultError> {
        self.stored_days_counting(|_| true, random).await
    }

    /// Days with records; only the days `count` names are opened and counted (the others
    /// show (0, 0)): housekeeping counts the days it closes and needs only the names of
    /// the rest.
    pub async fn stored_days_counting(
        &self,
        count: impl Fn(u32) -> bool,
        random: &mut dyn Random,
    ) -> Result<BTreeMap<u32, (u32, u32)>, VaultError> {
        let prefix = format!("{}-", self.device);
        let mut out = BTreeMap::new();
        for k in self.store.side_keys_prefixed(RECORDS, &prefix).await? {
            let Some(day) = k.strip_prefix(&prefix).and_then(|d| d.parse::<u32>().ok()) else {
                continue;
            };
            if !count(day) {
                out.insert(day, (0, 0));
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use hotaru_log::MemoryStore;
    use hotaru_protocol::random::SeededRandom;

    const DAY: u32 = 20_000;

    fn scan(day: u32, second: u64, rpi: u8) -> StoredScan {
        StoredScan {
            at: u64::from(day) * DAY_S + second,
            rpi: [rpi; 16],
            aem: [rpi ^ 0x55; 4],
            rssi_dbm: -70,
            peak_rssi_dbm: -61,
            seconds_since_last_scan: 277,
        }
    }

    fn vault() -> (Vault<MemoryStore>, SeededRandom) {
        (
            Vault::new(MemoryStore::default(), DeviceId([7; 16])),
            SeededRandom::from_u64(1, 2),
        )
    }

    #[tokio::test]
    async fn records_come_back_as_they_went_in_by_day() {
        let (v, mut r) = vault();
        let first = [scan(DAY, 0, 1), scan(DAY, 86_399, 2), scan(DAY + 1, 300, 3)];
        v.add_records(&first, &mut r).await.unwrap();
        v.add_records(&[scan(DAY, 600, 4)], &mut r).await.unwrap();
        assert_eq!(
            v.records(DAY, &mut r).await.unwrap(),
            vec![first[0], first[1], scan(DAY, 600, 4)]
        );
        assert_eq!(v.records(DAY + 1, &mut r).await.unwrap(), vec![first[2]]);
        assert_eq!(v.records(DAY + 2, &mut r).await.unwrap(), vec![]);
        // What is at rest is sealed: no RPI in the clear.
        let stored = v
            .store()
            .side_get(RECORDS, &v.day_name(DAY))
            .await
            .unwrap()
            .unwrap();
        assert!(stored.starts_with(&FORMAT));
        assert!(!stored.windows(16).any(|w| w == [1u8; 16]));
    }

    /// Stores written before the compact format (bincode throughout) still open, and a
    /// day added to is rewritten in the current format with its old records kept.
    #[tokio::test]
    async fn records_of_the_earlier_format_still_open() {
        let (v, mut r) = vault();
        let master = v.master(&mut r).await.unwrap();
        let mut key = [0u8; 32];
        r.fill(&mut key);
        let old = |s: &Sealed| bincode::serde::encode_to_vec(s, bincode_cfg()).unwrap();
        let wrapped = seal(&master, Day(DAY), &key, b"day-key", &mut r);
        let old_scans = vec![scan(DAY, 10, 9), scan(DAY, 310, 8)];
        let plain = bincode::serde::encode_to_vec(&old_scans, bincode_cfg()).unwrap();
        let records = seal(&key, Day(DAY), &plain, b"records", &mut r);
        let s = v.store();
        s.side_put(DAY_KEYS, &v.day_name(DAY), &old(&wrapped))
            .await
            .unwrap();
        s.side_put(RECORDS, &v.day_name(DAY), &old(&records))
            .await
            .unwrap();
        assert_eq!(v.records(DAY, &mut r).await.unwrap(), old_scans);
        v.add_records(&[scan(DAY, 610, 7)], &mut r).await.unwrap();
        let now = s
            .side_get(RECORDS, &v.day_name(DAY))
            .await
            .unwrap()
            .unwrap();
        assert!(now.starts_with(&FORMAT));
        assert_eq!(
            v.records(DAY, &mut r).await.unwrap(),
            vec![old_scans[0], old_scans[1], scan(DAY, 610, 7)]
        );
    }

    #[tokio::test]
    async fn a_damaged_or_misplaced_record_is_refused() {
        let (v, mut r) = vault();
        v.add_records(&[scan(DAY, 0, 1), scan(DAY + 1, 0, 2)], &mut r)
            .await
            .unwrap();
        let s = v.store();
        let mut bytes = s
            .side_get(RECORDS, &v.day_name(DAY))
            .await
            .unwrap()
            .unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        s.side_put(RECORDS, &v.day_name(DAY), &bytes).await.unwrap();
        assert_eq!(v.records(DAY, &mut r).await, Err(VaultError::Damaged(DAY)));
        // Another day's sealed records under this day's name do not open either (the day
        // is bound into the seal).
        let other = s
            .side_get(RECORDS, &v.day_name(DAY + 1))
            .await
            .unwrap()
            .unwrap();
        s.side_put(RECORDS, &v.day_name(DAY), &other).await.unwrap();
        assert_eq!(v.records(DAY, &mut r).await, Err(VaultError::Damaged(DAY)));
    }

    #[tokio::test]
    async fn only_the_days_asked_for_are_counted() {
        let (v, mut r) = vault();
        v.add_records(
            &[scan(DAY, 0, 1), scan(DAY, 0, 2), scan(DAY + 1, 5, 3)],
            &mut r,
        )
        .await
        .unwrap();
        let all = v.stored_days(&mut r).await.unwrap();
        assert_eq!(all, BTreeMap::from([(DAY, (1, 2)), (DAY + 1, (1, 1))]));
        let some = v
            .stored_days_counting(|d| d == DAY + 1, &mut r)
            .await
            .unwrap();
        assert_eq!(some, BTreeMap::from([(DAY, (0, 0)), (DAY + 1, (1, 1))]));
    }
}
