//! Matching diagnosis keys against what a device heard.
//!
//! For each key: one HKDF (its RPIK), its RPIs for the whole rolling period in one
//! pipelined AES batch, and a lookup of each RPI among the observed ones. The lookup
//! first tests a small bitmap (a few KiB, in L1) indexed by a keyed multiply of the
//! RPI's first 8 bytes, and only on a hit the exact hash map, so almost all of the
//! 144 lookups per key cost a multiply, a shift and one load. Keys with no match never
//! touch the AEM key.
//!
//! A match counts only when the observation's time is within ±2 hours
//! ([`DEFAULT_TOLERANCE_INTERVALS`]) of the interval whose RPI it is: an RPI replayed
//! later by someone else does not match.

use std::collections::HashMap;
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use crate::crypto::{Aem, EnIntervalNumber, Metadata, ROLLING_PERIOD, Rpi};
use crate::keys::DiagnosisKey;
use crate::risk::{ExposureWindow, ScanInstance};

/// ±12 intervals of 10 minutes: ±2 hours between a key's interval and the scan.
pub const DEFAULT_TOLERANCE_INTERVALS: u32 = 12;
/// GAEN exposure windows span at most 30 minutes.
pub const WINDOW_SECONDS: u64 = 30 * 60;

/// One advertisement a device heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub rpi: Rpi,
    pub aem: Aem,
    /// When it was heard, unix seconds (device clock).
    pub at: u64,
    /// Received signal strength, dBm. Attenuation = transmit power (from the decrypted
    /// AEM) − RSSI, so it can only be known once the key is.
    pub rssi_dbm: i8,
    /// The strongest RSSI of the scan (GAEN's minimum attenuation); `rssi_dbm` is the
    /// scan's mean (its typical attenuation).
    pub peak_rssi_dbm: i8,
    /// The time this scan stands for (GAEN's secondsSinceLastScan).
    pub seconds_since_last_scan: u16,
}

/// An observation that belongs to a diagnosis key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// Index into the keys passed to [`Matcher::match_keys`].
    pub key: usize,
    /// Index into the matcher's observations.
    pub observation: usize,
    pub interval: EnIntervalNumber,
    pub metadata: Metadata,
    /// Typical attenuation of the scan (transmit power − mean RSSI).
    pub attenuation_db: u8,
    /// Minimum attenuation of the scan (transmit power − peak RSSI).
    pub min_attenuation_db: u8,
}

/// A device's observations, indexed for matching.
pub struct Matcher {
    observations: Vec<Observation>,
    exact: HashMap<[u8; 16], Vec<u32>, foldhash::quality::RandomState>,
    filter: Vec<u64>,
    filter_shift: u32,
    filter_key: u64,
    tolerance: u32,
}

fn prefix(b: &[u8; 16]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

impl Matcher {
    pub fn new(observations: Vec<Observation>) -> Self {
        Self::with_tolerance(observations, DEFAULT_TOLERANCE_INTERVALS)
    }

    pub fn with_tolerance(observations: Vec<Observation>, tolerance_intervals: u32) -> Self {
        let state = foldhash::quality::RandomState::default();
        // A per-matcher secret multiplier: someone broadcasting crafted RPIs cannot aim
        // them at one bit of the filter.
        let filter_key = state.hash_one(0x4854_5255u64) | 1;
        // About 64 bits per observation (a 1-2% false-positive rate), at least 2^12, at most
        // 2^24 bits.
        let bits = (observations.len().max(1) * 64)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 24);
        let mut filter = vec![0u64; bits / 64];
        let filter_shift = 64 - bits.trailing_zeros();
        let mut exact: HashMap<[u8; 16], Vec<u32>, _> =
            HashMap::with_capacity_and_hasher(observations.len(), state);
        for (i, o) in observations.iter().enumerate() {
            let bit = prefix(&o.rpi.0).wrapping_mul(filter_key) >> filter_shift;
            filter[(bit / 64) as usize] |= 1 << (bit % 64);
            exact.entry(o.rpi.0).or_default().push(i as u32);
        }
        Self {
            observations,
            exact,
            filter,
            filter_shift,
            filter_key,
            tolerance: tolerance_intervals,
        }
    }

    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// Bit i of the result is set when RPI i may have been heard. Branch-free, so the
    /// loads of all the RPIs overlap.
    #[inline]
    fn maybe_heard(&self, blocks: &[aes::Block]) -> [u64; 3] {
        let mut hits = [0u64; 3];
        let words = self.filter.len() - 1; // a power of two minus one: no bounds check
        for (chunk, hit) in blocks.chunks(64).zip(&mut hits) {
            // One register per 64 RPIs: no store-to-load chain through `hits`.
            let mut m = 0u64;
            for (j, b) in chunk.iter().enumerate() {
                let bit = prefix(b.as_ref()).wrapping_mul(self.filter_key) >> self.filter_shift;
                let word = self.filter[(bit >> 6) as usize & words];
                m |= ((word >> (bit & 63)) & 1) << j;
            }
            *hit = m;
        }
        hits
    }

    /// The matches of `keys[i]` for i in `range`, reported with index `i`.
    fn match_range(&self, keys: &[DiagnosisKey], offset: usize, out: &mut Vec<Match>) {
        let mut blocks = [aes::Block::default(); ROLLING_PERIOD as usize];
        for (k, key) in keys.iter().enumerate() {
            let period = key.rolling_period.clamp(1, ROLLING_PERIOD) as usize;
            let rpik = key.tek.rpik();
            rpik.rpis_into(key.rolling_start, &mut blocks[..period]);
            let mut aemk = None;
            let hits = self.maybe_heard(&blocks[..period]);
            let candidates = hits.into_iter().enumerate().flat_map(|(w, mut m)| {
                std::iter::from_fn(move || {
                    (m != 0).then(|| {
                        let i = w * 64 + m.trailing_zeros() as usize;
                        m &= m - 1;
                        i
                    })
                })
            });
            for i in candidates {
                let rpi: &[u8; 16] = blocks[i].as_ref();
                let Some(list) = self.exact.get(rpi) else {
                    continue;
                };
                let interval = EnIntervalNumber(key.rolling_start.0.wrapping_add(i as u32));
                for &oi in list {
                    let o = &self.observations[oi as usize];
                    let heard = EnIntervalNumber::from_unix_seconds(o.at);
                    if heard.0.abs_diff(interval.0) > self.tolerance {
                        continue;
                    }
                    let aemk = aemk.get_or_insert_with(|| key.tek.aemk());
                    out.push(self.matched(offset + k, oi as usize, interval, o, aemk));
                }
            }
        }
    }

    /// Every match of `keys` against the observations, in key order.
    pub fn match_keys(&self, keys: &[DiagnosisKey]) -> Vec<Match> {
        let mut out = Vec::new();
        self.match_range(keys, 0, &mut out);
        out
    }

    /// The same as [`Self::match_keys`], split over `threads` threads (same result, same
    /// order).
    pub fn match_keys_parallel(&self, keys: &[DiagnosisKey], threads: usize) -> Vec<Match> {
        let threads = threads.clamp(1, keys.len().max(1));
        if threads == 1 {
            return self.match_keys(keys);
        }
        let chunk = keys.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .chunks(chunk)
                .enumerate()
                .map(|(n, part)| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        self.match_range(part, n * chunk, &mut out);
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("matching does not panic"))
                .collect()
        })
    }

    /// Groups matches into exposure windows: per key, scans in time order, a new window
    /// whenever the current one would span more than 30 minutes.
    pub fn exposure_windows(
        &self,
        keys: &[DiagnosisKey],
        matches: &[Match],
    ) -> Vec<ExposureWindow> {
        let mut by_key: Vec<(usize, u64, ScanInstance)> = matches
            .iter()
            .map(|m| {
                let o = &self.observations[m.observation];
                (
                    m.key,
                    o.at,
                    ScanInstance {
                        typical_attenuation_db: m.attenuation_db,
                        min_attenuation_db: m.min_attenuation_db,
                        seconds_since_last_scan: u32::from(o.seconds_since_last_scan),
                    },
                )
            })
            .collect();
        by_key.sort_by_key(|(k, at, _)| (*k, *at));
        let mut windows = Vec::new();
        let mut current: Option<(usize, u64, ExposureWindow)> = None;
        for (k, at, scan) in by_key {
            match &mut current {
                Some((ck, start, w)) if *ck == k && at - *start < WINDOW_SECONDS => {
                    w.scans.push(scan);
                }
                _ => {
                    if let Some((_, _, w)) = current.take() {
                        windows.push(w);
                    }
                    let key = &keys[k];
                    current = Some((
                        k,
                        at,
                        ExposureWindow {
                            day: (at / 86_400) as u32,
                            report_type: key.report_type,
                            days_since_onset: key.days_since_onset,
                            scans: vec![scan],
                        },
                    ));
                }
            }
        }
        windows.extend(current.map(|(_, _, w)| w));
        windows
    }
}

/// Every RPI of a set of diagnosis keys, derived once: RPI → (key, interval). A fleet of
/// simulated phones shares one per batch of keys, read-only, so that each phone looks up
/// its own observations instead of deriving every key's 144 RPIs again;
/// [`Matcher::match_indexed`] then gives exactly what [`Matcher::match_keys`] gives.
pub struct KeyIndex {
    /// RPI → (index of the key, offset of the interval in its rolling period).
    rpis: HashMap<[u8; 16], Vec<(u32, u8)>, foldhash::quality::RandomState>,
    keys: usize,
}

impl KeyIndex {
    pub fn build(keys: &[DiagnosisKey]) -> Self {
        let mut rpis: HashMap<[u8; 16], Vec<(u32, u8)>, _> = HashMap::with_capacity_and_hasher(
            keys.len() * ROLLING_PERIOD as usize,
            foldhash::quality::RandomState::default(),
        );
        let mut blocks = [aes::Block::default(); ROLLING_PERIOD as usize];
        for (k, key) in keys.iter().enumerate() {
            let period = key.rolling_period.clamp(1, ROLLING_PERIOD) as usize;
            key.tek
                .rpik()
                .rpis_into(key.rolling_start, &mut blocks[..period]);
            for (i, b) in blocks[..period].iter().enumerate() {
                let rpi: &[u8; 16] = b.as_ref();
                rpis.entry(*rpi).or_default().push((k as u32, i as u8));
            }
        }
        Self {
            rpis,
            keys: keys.len(),
        }
    }

    /// Whether any key of the index derives `rpi`.
    pub fn contains(&self, rpi: &[u8; 16]) -> bool {
        self.rpis.contains_key(rpi)
    }

    /// How many keys it was built from.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Approximate heap size, bytes.
    pub fn heap_bytes(&self) -> usize {
        self.rpis.capacity() * (16 + 24 + 8) + self.rpis.len() * 8
    }
}

impl Matcher {
    /// The same matches as [`Self::match_keys`] (same order), found by looking each
    /// observation up in `index`, which must have been built from `keys`.
    ///
    /// # Panics
    /// When `index` was built from a different number of keys.
    pub fn match_indexed(&self, keys: &[DiagnosisKey], index: &KeyIndex) -> Vec<Match> {
        assert_eq!(index.keys, keys.len(), "the index belongs to other keys");
        let mut found: Vec<(u32, u8, u32)> = Vec::new();
        for (oi, o) in self.observations.iter().enumerate() {
            if let Some(list) = index.rpis.get(&o.rpi.0) {
                found.extend(list.iter().map(|&(k, i)| (k, i, oi as u32)));
            }
        }
        // match_keys's order: key, then interval, then observation.
        found.sort_unstable();
        let mut out = Vec::with_capacity(found.len());
        let mut aemk: Option<(u32, crate::crypto::Aemk)> = None;
        for (k, i, oi) in found {
            let key = &keys[k as usize];
            let interval = EnIntervalNumber(key.rolling_start.0.wrapping_add(u32::from(i)));
            let o = &self.observations[oi as usize];
            let heard = EnIntervalNumber::from_unix_seconds(o.at);
            if heard.0.abs_diff(interval.0) > self.tolerance {
                continue;
            }
            if aemk.as_ref().is_none_or(|(kk, _)| *kk != k) {
                aemk = Some((k, key.tek.aemk()));
            }
            let (_, a) = aemk.as_ref().expect("set above");
            out.push(self.matched(k as usize, oi as usize, interval, o, a));
        }
        out
    }

    fn matched(
        &self,
        key: usize,
        observation: usize,
        interval: EnIntervalNumber,
        o: &Observation,
        aemk: &crate::crypto::Aemk,
    ) -> Match {
        let metadata = aemk.decrypt(&o.rpi, &o.aem);
        let tx = i16::from(metadata.tx_power_dbm());
        let attenuation = (tx - i16::from(o.rssi_dbm)).clamp(0, 255);
        let min_attenuation = (tx - i16::from(o.peak_rssi_dbm.max(o.rssi_dbm))).clamp(0, 255);
        Match {
            key,
            observation,
            interval,
            metadata,
            attenuation_db: attenuation as u8,
            min_attenuation_db: min_attenuation as u8,
        }
    }
}

/// The floor the matcher is measured against: the RPIK and the RPIs of every key, and
/// nothing else. Returns a value derived from every RPI so none can be optimised away.
pub fn derivation_floor(keys: &[DiagnosisKey]) -> u64 {
    let mut blocks = [aes::Block::default(); ROLLING_PERIOD as usize];
    let mut acc = 0u64;
    for key in keys {
        let period = key.rolling_period.clamp(1, ROLLING_PERIOD) as usize;
        key.tek
            .rpik()
            .rpis_into(key.rolling_start, &mut blocks[..period]);
        for b in &blocks[..period] {
            acc ^= prefix(b.as_ref());
        }
    }
    acc
}
