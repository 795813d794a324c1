//! GAEN cryptography, specification v1.2: TEKs, rolling proximity identifiers (RPIs) and
//! associated encrypted metadata (AEM).
//!
//! ```text
//! RPIK = HKDF-SHA256(TEK, salt = none, info = "EN-RPIK", 16)
//! RPI  = AES-128(RPIK, "EN-RPI" ‖ 0x000000000000 ‖ ENIN as u32 LE)
//! AEMK = HKDF-SHA256(TEK, salt = none, info = "EN-AEMK", 16)
//! AEM  = AES-128-CTR(AEMK, IV = RPI, metadata)
//! ```

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use serde::{Deserialize, Serialize};

/// Seconds in one ENIntervalNumber.
pub const INTERVAL_SECONDS: u64 = 600;
/// Intervals a TEK is valid for (one day).
pub const ROLLING_PERIOD: u32 = 144;
/// Metadata version byte of GAEN 1.0 (major 01, minor 00).
pub const METADATA_VERSION_1_0: u8 = 0x40;

/// A 10-minute interval since the Unix epoch: unix seconds / 600.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnIntervalNumber(pub u32);

impl EnIntervalNumber {
    pub fn from_unix_seconds(seconds: u64) -> Self {
        // u32 intervals last until the year 83,000; saturate rather than wrap.
        Self(u32::try_from(seconds / INTERVAL_SECONDS).unwrap_or(u32::MAX))
    }

    pub fn unix_seconds(self) -> u64 {
        u64::from(self.0) * INTERVAL_SECONDS
    }

    /// The first interval of the day (UTC) this interval is in, where a TEK's validity
    /// starts.
    pub fn day_start(self) -> Self {
        Self(self.0 - self.0 % ROLLING_PERIOD)
    }

    /// Days since the Unix epoch (UTC).
    pub fn day(self) -> u32 {
        self.0 / ROLLING_PERIOD
    }
}

/// A Temporary Exposure Key: 16 random bytes, valid for one rolling period.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tek([u8; 16]);

impl fmt::Debug for Tek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A TEK of a person not yet diagnosed is a secret: never in a log line.
        f.write_str("Tek(..)")
    }
}

impl Tek {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// A new TEK from the random source handed in (the OS's CSPRNG in production).
    /// A fresh TEK from `random` (the OS in production, a seed in tests and fleets).
    pub fn generate(random: &mut dyn crate::random::Random) -> Self {
        let mut b = [0; 16];
        random.fill(&mut b);
        Self(b)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn rpik(&self) -> Rpik {
        Rpik::from_bytes(hkdf16(&self.0, b"EN-RPIK"))
    }

    pub fn aemk(&self) -> Aemk {
        Aemk::from_bytes(hkdf16(&self.0, b"EN-AEMK"))
    }
}

/// HKDF-SHA256 (RFC 5869) with no salt, 16 bytes of output, specialised for a 16-byte
/// input key and a short info: 6 SHA-256 compressions, with the HMAC states of the
/// (constant) empty salt computed once. Tested against ring's HKDF.
fn hkdf16(ikm: &[u8; 16], info: &[u8]) -> [u8; 16] {
    debug_assert!(info.len() <= 54);
    let salt = &*NO_SALT;
    // PRK = HMAC(salt, ikm)
    let mut inner = salt.inner;
    compress(&mut inner, &final_block(ikm, 64));
    let mut outer = salt.outer;
    compress(&mut outer, &final_block(&be_bytes(&inner), 64));
    let prk = be_bytes(&outer);
    // OKM = T(1) = HMAC(PRK, info ‖ 0x01), first 16 bytes
    let key = HmacStates::new(&prk);
    let mut msg = [0u8; 55];
    msg[..info.len()].copy_from_slice(info);
    msg[info.len()] = 1;
    let mut inner = key.inner;
    compress(&mut inner, &final_block(&msg[..=info.len()], 64));
    let mut outer = key.outer;
    compress(&mut outer, &final_block(&be_bytes(&inner), 64));
    be_bytes(&outer)[..16].try_into().expect("16 of 32 bytes")
}

const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The SHA-256 states after an HMAC key's ipad and opad blocks.
struct HmacStates {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacStates {
    fn new(key: &[u8]) -> Self {
        debug_assert!(key.len() <= 64);
        let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let (mut inner, mut outer) = (SHA256_IV, SHA256_IV);
        compress(&mut inner, &ipad);
        compress(&mut outer, &opad);
        Self { inner, outer }
    }
}

static NO_SALT: std::sync::LazyLock<HmacStates> = std::sync::LazyLock::new(|| HmacStates::new(&[]));

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    use sha2::digest::generic_array::GenericArray;
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// The last (only) block of a message of `prefix_len` bytes already hashed plus `data`
/// (at most 55 bytes), with SHA-256 padding.
fn final_block(data: &[u8], prefix_len: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..data.len()].copy_from_slice(data);
    b[data.len()] = 0x80;
    b[56..].copy_from_slice(&((prefix_len + data.len() as u64) * 8).to_be_bytes());
    b
}

fn be_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// A rolling proximity identifier: what a phone broadcasts for 10 minutes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rpi(pub [u8; 16]);

impl fmt::Debug for Rpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rpi({})", hex::encode(self.0))
    }
}

/// Associated encrypted metadata: 4 bytes broadcast next to the RPI.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aem(pub [u8; 4]);

impl fmt::Debug for Aem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aem({})", hex::encode(self.0))
    }
}

/// The metadata an AEM carries: version byte and transmit power (dBm); bytes 2 and 3
/// are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metadata(pub [u8; 4]);

impl Metadata {
    pub fn v1_0(tx_power_dbm: i8) -> Self {
        Self([METADATA_VERSION_1_0, tx_power_dbm.to_le_bytes()[0], 0, 0])
    }

    /// The major version (the top two bits); GAEN 1.x is major 1.
    pub fn major_version(self) -> u8 {
        self.0[0] >> 6
    }

    pub fn tx_power_dbm(self) -> i8 {
        i8::from_le_bytes([self.0[1]])
    }
}

/// "EN-RPI" followed by 10 zero bytes, as a little-endian integer.
const PADDED_DATA_PREFIX: u128 = u128::from_le_bytes(*b"EN-RPI\0\0\0\0\0\0\0\0\0\0");

/// The plaintext block of interval `enin`: "EN-RPI" ‖ 6 zero bytes ‖ ENIN LE. Built as one
/// integer: byte-wise copies here cost more than the AES itself.
#[inline]
fn padded_data(enin: u32) -> aes::Block {
    (PADDED_DATA_PREFIX | (u128::from(enin) << 96))
        .to_le_bytes()
        .into()
}

/// The expanded RPI key of one TEK.
#[derive(Clone)]
pub struct Rpik(Aes128);

impl Rpik {
    pub fn from_bytes(key: [u8; 16]) -> Self {
        Self(Aes128::new(&key.into()))
    }

    pub fn rpi(&self, interval: EnIntervalNumber) -> Rpi {
        let mut b = padded_data(interval.0);
        self.0.encrypt_block(&mut b);
        Rpi(b.into())
    }

    /// The RPIs of `out.len()` consecutive intervals from `first`, encrypted as one
    /// pipelined batch (AES-NI runs several blocks at once).
    pub fn rpis_into(&self, first: EnIntervalNumber, out: &mut [aes::Block]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = padded_data(first.0.wrapping_add(i as u32));
        }
        self.0.encrypt_blocks(out);
    }

    /// The RPIs of `count` consecutive intervals from `first`.
    pub fn rpis(&self, first: EnIntervalNumber, count: u32) -> Vec<Rpi> {
        let mut blocks = vec![aes::Block::default(); count as usize];
        self.rpis_into(first, &mut blocks);
        blocks.into_iter().map(|b| Rpi(b.into())).collect()
    }
}

/// The AEM key of one TEK, with its AES key schedule expanded once.
///
/// AES-128-CTR over a 4-byte message with the RPI as the initial counter block uses one
/// keystream block, AES(AEMK, RPI): the AEM is its first four bytes XOR the metadata.
/// Expanding the key once per TEK instead of once per AEM cut a 20,000-phone fleet's
/// advertising phase by about 12 % (docs/PERFORMANCE.md; the vectors below still hold).
#[derive(Clone)]
pub struct Aemk {
    key: [u8; 16],
    cipher: Aes128,
}

impl Aemk {
    pub fn from_bytes(key: [u8; 16]) -> Self {
        Self {
            key,
            cipher: Aes128::new(&key.into()),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.key
    }

    fn apply(&self, rpi: &Rpi, data: &mut [u8; 4]) {
        let mut block: aes::Block = rpi.0.into();
        self.cipher.encrypt_block(&mut block);
        for (d, k) in data.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
    }

    pub fn encrypt(&self, rpi: &Rpi, metadata: Metadata) -> Aem {
        let mut d = metadata.0;
        self.apply(rpi, &mut d);
        Aem(d)
    }

    pub fn decrypt(&self, rpi: &Rpi, aem: &Aem) -> Metadata {
        let mut d = aem.0;
        self.apply(rpi, &mut d);
        Metadata(d)
    }
}

impl fmt::Debug for Rpik {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rpik(..)")
    }
}

impl fmt::Debug for Aemk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aemk(..)")
    }
}

#[cfg(test)]
mod tests {
    //! The test vectors of the GAEN cryptography specification v1.2, every one.

    use super::*;

    fn h16(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    const TEK: &str = "75c734c6dd1a782de7a965da5eb93125";

    #[test]
    fn interval_number_of_the_vector_time() {
        let enin = EnIntervalNumber::from_unix_seconds(1_585_785_600);
        assert_eq!(enin, EnIntervalNumber(2_642_976));
        assert_eq!(enin.day_start(), enin);
        assert_eq!(enin.unix_seconds(), 1_585_785_600);
        assert_eq!(
            EnIntervalNumber::from_unix_seconds(1_585_785_600 + 599).0,
            2_642_976
        );
        assert_eq!(
            EnIntervalNumber::from_unix_seconds(1_585_785_600 + 600).0,
            2_642_977
        );
    }

    #[test]
    fn key_derivation_vectors() {
        let tek = Tek::from_bytes(h16(TEK));
        assert_eq!(
            hkdf16(tek.as_bytes(), b"EN-RPIK"),
            h16("185ad91db69ec7dd048960f1f3ba6175")
        );
        assert_eq!(
            tek.aemk().as_bytes(),
            &h16("d57c46af7a1d83965b9bed8bd152936a")
        );
    }

    /// The specialised HKDF agrees with ring's on many keys, for both infos.
    #[test]
    fn hkdf_agrees_with_ring() {
        use ring::hkdf;
        struct Len16;
        impl hkdf::KeyType for Len16 {
            fn len(&self) -> usize {
                16
            }
        }
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]);
        let mut ikm = [0u8; 16];
        for i in 0u32..2000 {
            ikm[..4].copy_from_slice(&i.to_le_bytes());
            ikm[7 + (i % 9) as usize] ^= i as u8;
            for info in [
                b"EN-RPIK".as_slice(),
                b"EN-AEMK",
                b"",
                b"a longer info string of 40 bytes.......",
            ] {
                let mut want = [0u8; 16];
                salt.extract(&ikm)
                    .expand(&[info], Len16)
                    .unwrap()
                    .fill(&mut want)
                    .unwrap();
                assert_eq!(hkdf16(&ikm, info), want, "ikm {ikm:02x?} info {info:?}");
            }
        }
    }

    #[test]
    fn metadata_vector() {
        let m = Metadata::v1_0(8);
        assert_eq!(m.0, [0x40, 0x08, 0x00, 0x00]);
        assert_eq!(m.major_version(), 1);
        assert_eq!(m.tx_power_dbm(), 8);
        assert_eq!(Metadata::v1_0(-12).tx_power_dbm(), -12);
    }

    #[test]
    fn rpi_and_aem_vectors() {
        let tek = Tek::from_bytes(h16(TEK));
        let (rpik, aemk) = (tek.rpik(), tek.aemk());
        let start = 2_642_976;
        let vectors = [
            (0, "8be6cd371c5c891604bfbe49df845096", "72033874"),
            (1, "3c9a1de5dd6b02afa7fded7b570b3e56", "c29211b1"),
            (2, "243ffe9a3b08bded3094bac8630bb8ad", "6adfad03"),
            (143, "f431b62ecf443102ce4ed0407de54bd4", "1215e57e"),
        ];
        let all = rpik.rpis(EnIntervalNumber(start), ROLLING_PERIOD);
        let meta = Metadata([0x40, 0x08, 0x00, 0x00]);
        for (i, rpi_hex, aem_hex) in vectors {
            let enin = EnIntervalNumber(start + i);
            let rpi = rpik.rpi(enin);
            assert_eq!(hex::encode(rpi.0), rpi_hex, "RPI of interval {i}");
            assert_eq!(all[i as usize], rpi, "pipelined RPI of interval {i}");
            let aem = aemk.encrypt(&rpi, meta);
            assert_eq!(hex::encode(aem.0), aem_hex, "AEM of interval {i}");
            assert_eq!(aemk.decrypt(&rpi, &aem), meta);
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let tek = Tek::from_bytes(h16(TEK));
        assert_eq!(format!("{tek:?}"), "Tek(..)");
        assert_eq!(format!("{:?}", tek.rpik()), "Rpik(..)");
        assert_eq!(format!("{:?}", tek.aemk()), "Aemk(..)");
    }

    #[test]
    fn generated_keys_come_from_the_source() {
        let mut os = crate::random::OsRandom::new();
        let a = Tek::generate(&mut os);
        let b = Tek::generate(&mut os);
        assert_ne!(a, b);
    }
}
