//! GAEN key export files: `export.bin` (a 16-byte header, then a protobuf
//! `TemporaryExposureKeyExport`) and `export.sig` (a protobuf `TEKSignatureList` of ECDSA
//! P-256 / SHA-256 signatures over the whole `export.bin`), zipped together.
//!
//! The writer sorts keys by their bytes (the order in which keys arrived must reveal
//! nothing) and splits batches into files of at most [`DEFAULT_MAX_KEYS_PER_FILE`] keys.
//! The reader takes untrusted bytes: every malformed, oversized or hostile input is a typed
//! [`ExportError`], never a panic.

use std::io::{Cursor, Read, Write};

use prost::Message;
use ring::signature;
use serde::{Deserialize, Serialize};

use crate::crypto::{EnIntervalNumber, ROLLING_PERIOD, Tek};
use crate::keys::{DiagnosisKey, ReportType};
use crate::random::Random;

/// The protobuf messages, generated from `proto/export.proto` at build time.
pub mod pb {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/hotaru.gaen.rs"));
}

/// "EK Export v1" right-padded with spaces to 16 bytes.
pub const EXPORT_HEADER: &[u8; 16] = b"EK Export v1    ";
/// ECDSA with SHA-256 (on P-256), the one algorithm GAEN phones accept.
pub const SIGNATURE_ALGORITHM: &str = "1.2.840.10045.4.3.2";
/// The most keys one export file holds unless configured otherwise.
pub const DEFAULT_MAX_KEYS_PER_FILE: usize = 500_000;
pub const EXPORT_BIN: &str = "export.bin";
pub const EXPORT_SIG: &str = "export.sig";

/// Why an export file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("not a readable zip archive: {0}")]
    Zip(String),
    #[error("the archive has no {0}")]
    MissingEntry(&'static str),
    #[error("the archive has {0} entries; an export has 2")]
    TooManyEntries(usize),
    #[error("export.bin does not start with the header \"EK Export v1\"")]
    BadHeader,
    #[error("{file} is not a valid protobuf message: {reason}")]
    BadProtobuf { file: &'static str, reason: String },
    #[error("key {index}: {reason}")]
    BadKey { index: usize, reason: String },
    #[error("{0}")]
    BadField(String),
    #[error("export.sig holds no signature")]
    NoSignature,
    #[error("no signature verifies with the given public keys")]
    BadSignature,
    #[error("not a P-256 public key: {0}")]
    BadPublicKey(String),
    #[error("not a P-256 private key (PKCS#8): {0}")]
    BadPrivateKey(String),
    #[error("too many keys for one file: {0}")]
    TooManyKeys(usize),
}

/// Which key signed an export: phones look the public key up by id and version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignatureInfo {
    pub verification_key_id: String,
    pub verification_key_version: String,
    pub signature_algorithm: String,
}

impl SignatureInfo {
    pub fn new(id: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            verification_key_id: id.into(),
            verification_key_version: version.into(),
            signature_algorithm: SIGNATURE_ALGORITHM.to_owned(),
        }
    }

    fn to_pb(&self) -> pb::SignatureInfo {
        pb::SignatureInfo {
            verification_key_version: Some(self.verification_key_version.clone()),
            verification_key_id: Some(self.verification_key_id.clone()),
            signature_algorithm: Some(self.signature_algorithm.clone()),
        }
    }

    fn from_pb(p: pb::SignatureInfo) -> Self {
        Self {
            verification_key_id: p.verification_key_id.unwrap_or_default(),
            verification_key_version: p.verification_key_version.unwrap_or_default(),
            signature_algorithm: p.signature_algorithm.unwrap_or_default(),
        }
    }
}

/// The content of one `export.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFile {
    /// Arrival window of the keys at the server, unix seconds.
    pub start_timestamp: u64,
    pub end_timestamp: u64,
    pub region: String,
    /// 1-based number of this file in its batch, and the batch's number of files.
    pub batch_num: u32,
    pub batch_size: u32,
    pub signature_infos: Vec<SignatureInfo>,
    pub keys: Vec<DiagnosisKey>,
    pub revised_keys: Vec<DiagnosisKey>,
}

fn key_to_pb(k: &DiagnosisKey) -> pb::TemporaryExposureKey {
    pb::TemporaryExposureKey {
        key_data: Some(k.tek.as_bytes().to_vec()),
        transmission_risk_level: Some(i32::from(k.transmission_risk_level)),
        rolling_start_interval_number: Some(k.rolling_start.0 as i32),
        rolling_period: Some(k.rolling_period as i32),
        report_type: Some(k.report_type.to_proto()),
        days_since_onset_of_symptoms: k.days_since_onset,
    }
}

fn key_from_pb(index: usize, p: pb::TemporaryExposureKey) -> Result<DiagnosisKey, ExportError> {
    let bad = |reason: String| ExportError::BadKey { index, reason };
    let data = p.key_data.ok_or_else(|| bad("no key_data".into()))?;
    let tek: [u8; 16] = data
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("key_data is {} bytes, not 16", data.len())))?;
    let start = p
        .rolling_start_interval_number
        .ok_or_else(|| bad("no rolling_start_interval_number".into()))?;
    let start = u32::try_from(start).map_err(|_| bad(format!("rolling start {start} < 0")))?;
    let period = p.rolling_period.unwrap_or(ROLLING_PERIOD as i32);
    if !(1..=ROLLING_PERIOD as i32).contains(&period) {
        return Err(bad(format!("rolling period {period} is not in 1..=144")));
    }
    let trl = p.transmission_risk_level.unwrap_or(0);
    let trl = u8::try_from(trl)
        .ok()
        .filter(|t| *t <= 8)
        .ok_or_else(|| bad(format!("transmission risk level {trl} is not in 0..=8")))?;
    let rt = p.report_type.unwrap_or(0);
    let report_type =
        ReportType::from_proto(rt).ok_or_else(|| bad(format!("unknown report type {rt}")))?;
    if let Some(d) = p.days_since_onset_of_symptoms
        && !(-14..=14).contains(&d)
    {
        return Err(bad(format!("days since onset {d} is not in -14..=14")));
    }
    Ok(DiagnosisKey {
        tek: Tek::from_bytes(tek),
        rolling_start: EnIntervalNumber(start),
        rolling_period: period as u32,
        transmission_risk_level: trl,
        report_type,
        days_since_onset: p.days_since_onset_of_symptoms,
    })
}

/// Appends `keys`, sorted by key bytes, as repeated field `tag`, reusing one message so that
/// half a million keys cost no allocation each (the same bytes as encoding them in the
/// message).
fn encode_sorted_keys(tag: u32, keys: &[DiagnosisKey], out: &mut Vec<u8>) {
    let mut v: Vec<&DiagnosisKey> = keys.iter().collect();
    v.sort_unstable_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
    let mut m = key_to_pb(v.first().copied().unwrap_or(&PLACEHOLDER));
    for k in v {
        let data = m.key_data.get_or_insert_with(Vec::new);
        data.clear();
        data.extend_from_slice(k.tek.as_bytes());
        m.transmission_risk_level = Some(i32::from(k.transmission_risk_level));
        m.rolling_start_interval_number = Some(k.rolling_start.0 as i32);
        m.rolling_period = Some(k.rolling_period as i32);
        m.report_type = Some(k.report_type.to_proto());
        m.days_since_onset_of_symptoms = k.days_since_onset;
        prost::encoding::message::encode(tag, &m, out);
    }
}

const PLACEHOLDER: DiagnosisKey = DiagnosisKey {
    tek: Tek::from_bytes([0; 16]),
    rolling_start: EnIntervalNumber(0),
    rolling_period: ROLLING_PERIOD,
    transmission_risk_level: 0,
    report_type: ReportType::Unknown,
    days_since_onset: None,
};

impl ExportFile {
    /// The bytes of `export.bin`: the header, then the protobuf, keys sorted by key bytes.
    /// The same file always encodes to the same bytes (the audit re-derives them).
    pub fn encode(&self) -> Vec<u8> {
        let msg = pb::TemporaryExposureKeyExport {
            start_timestamp: Some(self.start_timestamp),
            end_timestamp: Some(self.end_timestamp),
            region: Some(self.region.clone()),
            batch_num: Some(self.batch_num as i32),
            batch_size: Some(self.batch_size as i32),
            signature_infos: self
                .signature_infos
                .iter()
                .map(SignatureInfo::to_pb)
                .collect(),
            keys: Vec::new(),
            revised_keys: Vec::new(),
        };
        // Fields 1-6, then the keys (7), then the revised keys (8): field order as prost
        // writes the whole message.
        let per_key = 40;
        let mut out = Vec::with_capacity(
            16 + msg.encoded_len() + per_key * (self.keys.len() + self.revised_keys.len()),
        );
        out.extend_from_slice(EXPORT_HEADER);
        msg.encode(&mut out).expect("a Vec grows as needed");
        encode_sorted_keys(7, &self.keys, &mut out);
        encode_sorted_keys(8, &self.revised_keys, &mut out);
        out
    }

    /// Parses `export.bin`. Keys keep their order in the file; see [`Self::keys_sorted`].
    pub fn decode(bin: &[u8]) -> Result<Self, ExportError> {
        let body = bin
            .strip_prefix(EXPORT_HEADER.as_slice())
            .ok_or(ExportError::BadHeader)?;
        let msg =
            pb::TemporaryExposureKeyExport::decode(body).map_err(|e| ExportError::BadProtobuf {
                file: EXPORT_BIN,
                reason: e.to_string(),
            })?;
        let batch = |v: Option<i32>, name: &str| {
            u32::try_from(v.unwrap_or(1))
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ExportError::BadField(format!("{name} must be >= 1")))
        };
        let (batch_num, batch_size) = (
            batch(msg.batch_num, "batch_num")?,
            batch(msg.batch_size, "batch_size")?,
        );
        if batch_num > batch_size {
            return Err(ExportError::BadField(format!(
                "batch_num {batch_num} > batch_size {batch_size}"
            )));
        }
        let keys = msg
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| key_from_pb(i, k))
            .collect::<Result<_, _>>()?;
        let revised_keys = msg
            .revised_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| key_from_pb(i, k))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            start_timestamp: msg.start_timestamp.unwrap_or(0),
            end_timestamp: msg.end_timestamp.unwrap_or(0),
            region: msg.region.unwrap_or_default(),
            batch_num,
            batch_size,
            signature_infos: msg
                .signature_infos
                .into_iter()
                .map(SignatureInfo::from_pb)
                .collect(),
            keys,
            revised_keys,
        })
    }

    /// Whether the keys are in key-byte order, as Hotaru writes them.
    pub fn keys_sorted(&self) -> bool {
        self.keys
            .windows(2)
            .all(|w| w[0].tek.as_bytes() <= w[1].tek.as_bytes())
    }
}

/// Splits one batch of keys into export files of at most `max_keys` keys each, numbered
/// 1..=n. Keys are sorted by key bytes first, so which file a key lands in says nothing
/// about when it arrived.
pub fn split_batch(
    start_timestamp: u64,
    end_timestamp: u64,
    region: &str,
    signature_infos: &[SignatureInfo],
    mut keys: Vec<DiagnosisKey>,
    max_keys: usize,
) -> Vec<ExportFile> {
    let max_keys = max_keys.max(1);
    keys.sort_unstable_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
    let chunks: Vec<Vec<DiagnosisKey>> = if keys.is_empty() {
        vec![Vec::new()]
    } else {
        keys.chunks(max_keys).map(<[_]>::to_vec).collect()
    };
    let size = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, keys)| ExportFile {
            start_timestamp,
            end_timestamp,
            region: region.to_owned(),
            batch_num: i as u32 + 1,
            batch_size: size,
            signature_infos: signature_infos.to_vec(),
            keys,
            revised_keys: Vec::new(),
        })
        .collect()
}

/// A signing key with the info phones use to find its public half.
///
/// Signatures are deterministic (RFC 6979): the nonce is derived from the key and the
/// message, so signing needs no random source, the same file signs to the same bytes
/// (a seeded run is reproducible, a rebuilt zip has the same address), and a weak or
/// repeated random source cannot leak the key.
pub struct Signer {
    pub info: SignatureInfo,
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A P-256 key from PKCS#8 DER (what ring, `openssl pkcs8` and [`Self::generate_pkcs8`]
    /// write).
    pub fn from_pkcs8(info: SignatureInfo, pkcs8: &[u8]) -> Result<Self, ExportError> {
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(pkcs8)
            .map_err(|e| ExportError::BadPrivateKey(e.to_string()))?;
        Ok(Self { info, key })
    }

    /// A new P-256 key as PKCS#8 DER, its scalar drawn from `random`.
    pub fn generate_pkcs8(random: &mut dyn Random) -> Vec<u8> {
        use p256::pkcs8::EncodePrivateKey;
        loop {
            let mut scalar = [0u8; 32];
            random.fill(&mut scalar);
            // Zero or not below the group order (about 2^-32 of draws): draw again.
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&scalar) {
                return key
                    .to_pkcs8_der()
                    .expect("a valid key encodes")
                    .as_bytes()
                    .to_vec();
            }
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(
            self.key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        )
    }

    /// The ASN.1 DER ECDSA P-256 / SHA-256 signature of `message` (RFC 6979 nonce).
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }
}

/// A P-256 public key (the uncompressed point, 65 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

/// DER prefix of a SubjectPublicKeyInfo for an id-ecPublicKey on prime256v1, before the
/// 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PublicKey {
    pub fn from_point(point: &[u8]) -> Result<Self, ExportError> {
        if point.len() != 65 || point[0] != 0x04 {
            return Err(ExportError::BadPublicKey(
                "expected a 65-byte uncompressed P-256 point".into(),
            ));
        }
        Ok(Self(point.to_vec()))
    }

    pub fn from_spki_der(der: &[u8]) -> Result<Self, ExportError> {
        der.strip_prefix(P256_SPKI_PREFIX.as_slice())
            .ok_or_else(|| ExportError::BadPublicKey("not a P-256 SubjectPublicKeyInfo".into()))
            .and_then(Self::from_point)
    }

    /// A `-----BEGIN PUBLIC KEY-----` PEM, as health authorities hand to Google and Apple.
    pub fn from_pem(pem_text: &str) -> Result<Self, ExportError> {
        let p = pem::parse(pem_text).map_err(|e| ExportError::BadPublicKey(e.to_string()))?;
        if p.tag() != "PUBLIC KEY" {
            return Err(ExportError::BadPublicKey(format!(
                "PEM block is {:?}, not \"PUBLIC KEY\"",
                p.tag()
            )));
        }
        Self::from_spki_der(p.contents())
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        [P256_SPKI_PREFIX.as_slice(), &self.0].concat()
    }

    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.to_spki_der()))
    }

    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.0)
            .verify(message, der_signature)
            .is_ok()
    }
}

/// One signature of `export.sig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TekSignature {
    pub info: SignatureInfo,
    pub batch_num: u32,
    pub batch_size: u32,
    /// ASN.1 DER ECDSA signature over the whole `export.bin`.
    pub signature: Vec<u8>,
}

/// Signs `export_bin` with every signer (several during a key rotation) and returns the
/// bytes of `export.sig`.
pub fn sign_export(
    export_bin: &[u8],
    batch_num: u32,
    batch_size: u32,
    signers: &[&Signer],
) -> Vec<u8> {
    pb::TekSignatureList {
        signatures: signers
            .iter()
            .map(|s| pb::TekSignature {
                signature_info: Some(s.info.to_pb()),
                batch_num: Some(batch_num as i32),
                batch_size: Some(batch_size as i32),
                signature: Some(s.sign(export_bin)),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Parses `export.sig`.
pub fn decode_signatures(sig: &[u8]) -> Result<Vec<TekSignature>, ExportError> {
    let list = pb::TekSignatureList::decode(sig).map_err(|e| ExportError::BadProtobuf {
        file: EXPORT_SIG,
        reason: e.to_string(),
    })?;
    list.signatures
        .into_iter()
        .map(|s| {
            let n = |v: Option<i32>| u32::try_from(v.unwrap_or(1)).unwrap_or(0);
            Ok(TekSignature {
                info: SignatureInfo::from_pb(s.signature_info.unwrap_or_default()),
                batch_num: n(s.batch_num),
                batch_size: n(s.batch_size),
                signature: s.signature.unwrap_or_default(),
            })
        })
        .collect()
}

/// Zip options that make the same content give the same archive bytes. Deflate level 5:
/// every phone downloads every file, so bytes matter; on a 500,000-key file level 5 is as
/// small as 6 (8.5 MB) in 2/3 of the time, level 4 and below are 8% larger, 9 saves 0.2%.
fn zip_options() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(5))
        .last_modified_time(zip::DateTime::default())
}

/// Writes the zip a phone downloads: `export.bin` and `export.sig`.
pub fn write_zip(export_bin: &[u8], export_sig: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in [(EXPORT_BIN, export_bin), (EXPORT_SIG, export_sig)] {
        z.start_file(name, zip_options())
            .expect("writing to memory");
        z.write_all(data).expect("writing to memory");
    }
    z.finish().expect("writing to memory").into_inner()
}

/// Encodes, signs and zips one export file.
pub fn build_zip(file: &ExportFile, signers: &[&Signer]) -> Vec<u8> {
    let bin = file.encode();
    let sig = sign_export(&bin, file.batch_num, file.batch_size, signers);
    write_zip(&bin, &sig)
}

/// Bounds on what the reader accepts from an untrusted download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// The zip itself.
    pub max_zip_bytes: u64,
    /// `export.bin` uncompressed (500,000 keys take about 15 MB).
    pub max_bin_bytes: u64,
    /// `export.sig` uncompressed.
    pub max_sig_bytes: u64,
    /// Keys in one file.
    pub max_keys: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_zip_bytes: 32 << 20,
            max_bin_bytes: 32 << 20,
            max_sig_bytes: 64 << 10,
            max_keys: DEFAULT_MAX_KEYS_PER_FILE,
        }
    }
}

/// A downloaded export, parsed but not yet trusted: call [`SignedExport::verify`].
#[derive(Clone, Debug)]
pub struct SignedExport {
    pub export_bin: Vec<u8>,
    pub file: ExportFile,
    pub signatures: Vec<TekSignature>,
}

/// A trusted public key and the info that names it.
#[derive(Clone, Debug)]
pub struct VerificationKey {
    pub key_id: String,
    pub key_version: String,
    pub public_key: PublicKey,
}

impl SignedExport {
    /// The signature infos of the signatures that verify with one of `keys` (matched by
    /// key id and version). Fails when none does, or when a verifying signature's batch
    /// numbers disagree with the file's.
    pub fn verify(&self, keys: &[VerificationKey]) -> Result<Vec<SignatureInfo>, ExportError> {
        if self.signatures.is_empty() {
            return Err(ExportError::NoSignature);
        }
        let verified: Vec<SignatureInfo> = self
            .signatures
            .iter()
            .filter(|s| {
                s.info.signature_algorithm == SIGNATURE_ALGORITHM
                    && s.batch_num == self.file.batch_num
                    && s.batch_size == self.file.batch_size
            })
            .filter(|s| {
                keys.iter().any(|k| {
                    k.key_id == s.info.verification_key_id
                        && k.key_version == s.info.verification_key_version
                        && k.public_key.verify(&self.export_bin, &s.signature)
                })
            })
            .map(|s| s.info.clone())
            .collect();
        if verified.is_empty() {
            Err(ExportError::BadSignature)
        } else {
            Ok(verified)
        }
    }

    /// Any signature that verifies with `key`, whatever its id and version say.
    pub fn verify_with(&self, key: &PublicKey) -> Result<SignatureInfo, ExportError> {
        if self.signatures.is_empty() {
            return Err(ExportError::NoSignature);
        }
        self.signatures
            .iter()
            .find(|s| key.verify(&self.export_bin, &s.signature))
            .map(|s| s.info.clone())
            .ok_or(ExportError::BadSignature)
    }
}

fn read_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ExportError> {
    let mut f = match archive.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Err(ExportError::MissingEntry(name)),
        Err(e) => return Err(ExportError::Zip(e.to_string())),
    };
    if f.size() > limit {
        return Err(ExportError::TooLarge {
            what: name,
            size: f.size(),
            limit,
        });
    }
    // The declared size may lie (a zip bomb): never read more than the limit.
    let mut out = Vec::with_capacity(f.size() as usize);
    (&mut f)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| ExportError::Zip(format!("{name}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(ExportError::TooLarge {
            what: name,
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// Reads a downloaded export zip. Checks sizes before decompressing and while
/// decompressing, the header, the protobuf and every key; does not check the signatures
/// (see [`SignedExport::verify`]).
pub fn read_zip(zip_bytes: &[u8], limits: ReadLimits) -> Result<SignedExport, ExportError> {
    if zip_bytes.len() as u64 > limits.max_zip_bytes {
        return Err(ExportError::TooLarge {
            what: "the archive",
            size: zip_bytes.len() as u64,
            limit: limits.max_zip_bytes,
        });
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes))
        .map_err(|e| ExportError::Zip(e.to_string()))?;
    if archive.len() > 2 {
        return Err(ExportError::TooManyEntries(archive.len()));
    }
    let export_bin = read_entry(&mut archive, EXPORT_BIN, limits.max_bin_bytes)?;
    let sig = read_entry(&mut archive, EXPORT_SIG, limits.max_sig_bytes)?;
    let file = ExportFile::decode(&export_bin)?;
    let n = file.keys.len() + file.revised_keys.len();
    if n > limits.max_keys {
        return Err(ExportError::TooManyKeys(n));
    }
    let signatures = decode_signatures(&sig)?;
    Ok(SignedExport {
        export_bin,
        file,
        signatures,
    })
}
