//! The domain events of every step in DOMAIN.md, named in the past tense.
//!
//! Each event type has a schema version. A shipped version is never edited: a change adds
//! a new version and an upcaster from the old one in [`crate::codec`], and the bytes of
//! every earlier version stay decodable (see `events/tests/fixtures`).
//!
//! No field anywhere can hold a name, phone number, e-mail, address, IP or location: the
//! fields are ids, digests, counts, codes, key material and times (checked by
//! [`crate::schema`] and its tests).

use serde::{Deserialize, Serialize};

use crate::ids::EventId;
use crate::privacy::NumberDigest;
use crate::time::UnixMillis;

pub use crate::device::*;

/// A random case id (16 bytes), drawn by the server, linked to nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CaseId(pub [u8; 16]);

/// A health centre's numeric account id (assigned by `hotaru keys centre add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CentreId(pub u32);

/// A random device id, only ever seen in the device's own events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceId(pub [u8; 16]);

/// A random operation-log id, the one the user may quote to support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogId(pub [u8; 16]);

/// A batch id: the batch signer's sequence number in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId(pub u64);

/// Days since 1970-01-01 (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Day(pub u32);

/// A two- or three-letter region code in the GAEN export (e.g. "440" for Japan's MCC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionCode(pub [u8; 3]);

/// What a case's infectious period counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseBasis {
    /// Symptomatic: the date symptoms began.
    SymptomOnset(Day),
    /// Asymptomatic: the date the sample was taken.
    Sample(Day),
}

/// Why a redemption was refused; the letters are the app's error screens (DOMAIN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionReason {
    /// A: not exactly the configured number of ASCII digits.
    Format,
    /// B: well-formed but unknown. The user is told only "the number is wrong".
    Unknown,
    /// B: already redeemed. The user is told only "the number is wrong".
    AlreadyUsed,
    /// B: past its validity. The user is told only "the number is wrong".
    Expired,
    /// C: too many failed attempts.
    AttemptLimit,
    /// G: the upload held no keys; no number is consumed.
    NothingToSubmit,
    /// G: the upload held keys, but none passed validation; no number is consumed.
    NoValidKeys,
}

impl RejectionReason {
    /// The app's error letter.
    pub const fn letter(self) -> char {
        match self {
            RejectionReason::Format => 'A',
            RejectionReason::Unknown | RejectionReason::AlreadyUsed | RejectionReason::Expired => {
                'B'
            }
            RejectionReason::AttemptLimit => 'C',
            RejectionReason::NothingToSubmit | RejectionReason::NoValidKeys => 'G',
        }
    }
}

/// A diagnosis key: the protocol's one type, stored field by field by [`stored_key`].
pub use hotaru_protocol::DiagnosisKey;

/// How a diagnosis key is stored, unchanged since schema version 1 (bincode and JSON see
/// these fields): the key's 16 bytes, its first interval and period, the transmission risk,
/// GAEN's report-type number, and the days since onset (`i32::MIN` when unknown, which no
/// key the server stored has been: it always knows them).
pub mod stored_key {
    use hotaru_protocol::{EnIntervalNumber, ReportType, Tek};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::DiagnosisKey;

    const UNKNOWN_ONSET: i32 = i32::MIN;

    #[derive(Serialize, Deserialize)]
    struct Stored {
        key_data: [u8; 16],
        rolling_start_interval: u32,
        rolling_period: u32,
        transmission_risk: u8,
        report_type: u8,
        days_since_onset: i32,
    }

    impl From<&DiagnosisKey> for Stored {
        fn from(k: &DiagnosisKey) -> Self {
            Self {
                key_data: *k.tek.as_bytes(),
                rolling_start_interval: k.rolling_start.0,
                rolling_period: k.rolling_period,
                transmission_risk: k.transmission_risk_level,
                report_type: k.report_type.to_proto() as u8,
                days_since_onset: k.days_since_onset.unwrap_or(UNKNOWN_ONSET),
            }
        }
    }

    impl TryFrom<Stored> for DiagnosisKey {
        type Error = String;

        fn try_from(s: Stored) -> Result<Self, String> {
            Ok(Self {
                tek: Tek::from_bytes(s.key_data),
                rolling_start: EnIntervalNumber(s.rolling_start_interval),
                rolling_period: s.rolling_period,
                transmission_risk_level: s.transmission_risk,
                report_type: ReportType::from_proto(i32::from(s.report_type))
                    .ok_or_else(|| format!("unknown report type {}", s.report_type))?,
                days_since_onset: (s.days_since_onset != UNKNOWN_ONSET)
                    .then_some(s.days_since_onset),
            })
        }
    }

    pub fn serialize<S: Serializer>(k: &DiagnosisKey, s: S) -> Result<S::Ok, S::Error> {
        Stored::from(k).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DiagnosisKey, D::Error> {
        Stored::deserialize(d)?
            .try_into()
            .map_err(serde::de::Error::custom)
    }

    /// A list of keys, each stored as above.
    pub mod vec {
        use super::*;

        pub fn serialize<S: Serializer>(keys: &[DiagnosisKey], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(keys.iter().map(Stored::from))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DiagnosisKey>, D::Error> {
            Vec::<Stored>::deserialize(d)?
                .into_iter()
                .map(|k| k.try_into().map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

/// One export file of a batch, as an auditor re-derives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFileDigest {
    pub batch_num: u32,
    pub key_count: u32,
    pub export_bin_sha256: [u8; 32],
}

/// A signature info of a GAEN export (one per signing key in use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureInfo {
    pub key_version: u32,
    pub key_id: u32,
}

/// A step of the guidance flow, as `GuidanceShown` version 1 recorded it (version 2 has
/// [`GuidanceScreen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuidanceStep {
    AskedSymptoms,
    AskedCloseContacts,
    OfferedTest,
    AdvisedBooking,
    AdvisedWatchHealth,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseConfirmed {
    pub case_id: CaseId,
    pub centre_id: CentreId,
    pub basis: CaseBasis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingNumberIssued {
    pub case_id: CaseId,
    pub centre_id: CentreId,
    pub digest: NumberDigest,
    pub expires_at: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingNumberRedeemed {
    pub case_id: CaseId,
    pub digest: NumberDigest,
}

/// The case's number, recorded on the case's stream after the number's own stream
/// has it: appended at the version the issuer read, so two nodes racing to issue for one
/// case cannot both succeed (the loser's number is never shown and cannot be redeemed,
/// since the case names another).
///
/// Schema version 2 repeats the case's confirmation, so that the case's last commit
/// holds its whole state and a redemption reads that one commit instead of the stream
/// (see `hotaru_domain::Aggregate::restore`); version 1 (see
/// [`legacy::NumberAssignedV1`]) upcasts with `confirmed: None` and is folded as before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberAssigned {
    pub case_id: CaseId,
    pub digest: NumberDigest,
    pub confirmed: Option<CaseConfirmation>,
}

/// What a case's confirmation recorded, beside its id: its centre and its basis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseConfirmation {
    pub centre_id: CentreId,
    pub basis: CaseBasis,
}

/// One of a centre's numbers for one day, taken on the stream `quota.<centre>-<day>`
/// before the number is drawn: the stream's version is the count, and appends are fenced
/// on it, so the daily quota holds across every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaTaken {
    pub centre_id: CentreId,
    pub day: Day,
    pub case_id: CaseId,
}

/// One redemption about to be evaluated, on the stream `guesses.<window>`: the append
/// is a ticket (its version counts the window's evaluations so far, on every node) and the
/// guess is evaluated only while the tickets not given back stay within the global budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessReserved {
    /// The fixed window (`now / window_ms`).
    pub window: u64,
}

/// A ticket given back (`guesses.<window>-back`): its redemption succeeded, or it was
/// refused without being evaluated. What stays out is a failure or still in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessReleased {
    pub window: u64,
}

/// Refusals that evaluated nothing — A (the format), C (the attempt limit), G (nothing
/// to submit) — counted by one node over one interval instead of recorded one event each,
/// so that anonymous traffic neither grows the log nor moves the registration context's
/// head per request. Evaluated guesses (B) stay `ProcessingNumberRejected`, one each: the
/// global failure window is built from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalsCounted {
    /// The interval: from its start, inclusive, to its end, exclusive.
    pub from: UnixMillis,
    pub until: UnixMillis,
    pub format: u32,
    pub attempt_limit: u32,
    pub nothing_to_submit: u32,
}

impl RefusalsCounted {
    /// Every refusal the tally holds.
    pub fn total(&self) -> u64 {
        u64::from(self.format) + u64::from(self.attempt_limit) + u64::from(self.nothing_to_submit)
    }
}

/// Schema version 2: version 1 (see [`legacy::ProcessingNumberRejectedV1`]) carried only
/// the reason, so an auditor could not tell repeated failures on one number apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingNumberRejected {
    /// Absent when the input was not even well-formed (A): nothing is digested then.
    pub digest: Option<NumberDigest>,
    pub reason: RejectionReason,
}

/// Why one uploaded key was dropped (the rest of the upload may still succeed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRejection {
    /// key_data is not 16 bytes.
    KeyLength,
    /// rolling period outside 1..=144.
    RollingPeriod,
    /// rolling start in the future.
    StartsInFuture,
    /// rolling start older than the retention (14 days).
    TooOld,
    /// more than the allowed keys in one upload.
    TooManyKeys,
    /// more keys with this rolling start than allowed (3).
    TooManySameStart,
    /// overlaps a key with another rolling start.
    Overlaps,
    /// transmission risk, report type or days since onset out of range.
    OutOfRange,
    /// the key's day ended before the infectious period began.
    BeforeInfectiousPeriod,
    /// the same key twice in one upload.
    Duplicate,
}

/// One dropped key of an upload: its position in the request and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedKey {
    pub index: u16,
    pub reason: KeyRejection,
}

/// An accepted key and the earliest time it may be published (a key still valid at upload
/// is held until 2 hours after it expires).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedKey {
    #[serde(with = "stored_key")]
    pub key: DiagnosisKey,
    pub release_at: UnixMillis,
}

/// A payload encrypted under the data key of `day` (AES-256-GCM). When the day's key is
/// destroyed at the end of its retention, the payload is unreadable for good, while the
/// bytes (and so the hash chain) stay as they were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub day: Day,
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

/// Keys of an upload: sealed under a day key (what the server writes), or plain (uploads
/// written by schema version 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadedKeys {
    Plain(Vec<UploadedKey>),
    Sealed(Sealed),
}

/// The version of the plaintext sealed in [`UploadedKeys::Sealed`] (ADR 0005): 1 is
/// `versioned::wrap(1, bincode(Vec<UploadedKey>))`; 0, the bincode alone, was written
/// before versions existed and still reads.
pub const SEALED_KEYS_VERSION: u8 = 1;

/// The plaintext sealed for an upload's keys.
pub fn encode_sealed_keys(keys: &[UploadedKey]) -> Vec<u8> {
    let body =
        bincode::serde::encode_to_vec(keys, crate::codec::BINCODE).expect("keys always encode");
    crate::versioned::wrap_vec(SEALED_KEYS_VERSION, body)
}

/// The keys of a sealed upload's plaintext, of any version written.
pub fn decode_sealed_keys(plain: &[u8]) -> Result<Vec<UploadedKey>, String> {
    match crate::versioned::split(plain) {
        (0 | 1, body) => bincode::serde::decode_from_slice(body, crate::codec::BINCODE)
            .map(|(k, _)| k)
            .map_err(|e| e.to_string()),
        (v, _) => Err(format!("sealed keys of unknown version {v}")),
    }
}

/// Schema version 2. Version 1 ([`legacy::DiagnosisKeysUploadedV1`]) held the keys in the
/// clear with no release time, no idempotency key and no record of dropped keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosisKeysUploaded {
    pub case_id: CaseId,
    pub digest: NumberDigest,
    /// SHA-256 of the client's idempotency key: a retry with the same key gets this
    /// upload's answer again.
    pub idempotency: Option<[u8; 32]>,
    pub keys: UploadedKeys,
    /// How many keys were accepted (readable after the keys are shredded).
    pub accepted: u16,
    pub dropped: Vec<DroppedKey>,
}

/// Keys that were held (still valid at upload) became publishable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysReleased {
    pub upload: EventId,
    #[serde(with = "stored_key::vec")]
    pub keys: Vec<DiagnosisKey>,
}

/// Schema version 2: version 1 ([`legacy::BatchSignedV1`]) did not say up to which
/// registration position uploads were read, so a batch's keys could not be re-derived.
///
/// A batch holds every uploaded key of a registration commit at or before
/// `through_position` whose release time is at or before `end`, that no earlier batch held;
/// plus the padding keys derived from `padding_seed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSigned {
    pub batch_id: BatchId,
    pub region: RegionCode,
    /// The previous batch's `end` (release times after it) ...
    pub start: UnixMillis,
    /// ... up to this one's (the time the batch was cut).
    pub end: UnixMillis,
    /// The registration context was read up to this position.
    pub through_position: u64,
    /// Real keys (without padding).
    pub key_count: u32,
    pub padding_count: u32,
    pub files: Vec<ExportFileDigest>,
    pub signature_infos: Vec<SignatureInfo>,
    /// Seed of the padding keys, so an auditor can rebuild them.
    pub padding_seed: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPublished {
    pub batch_id: BatchId,
    /// SHA-256 of each published zip, in file order (the blob store's addresses).
    pub blobs: Vec<[u8; 32]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRotated {
    pub info: SignatureInfo,
    /// The new public key, SubjectPublicKeyInfo DER.
    pub public_key_spki: Vec<u8>,
    pub valid_from: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLogReceived {
    pub log_id: LogId,
    /// The log as the user sent it; stored sealed under a day key (crypto-shredding).
    pub content: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLogDeleted {
    pub log_id: LogId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionExpired {
    /// The day whose data key was destroyed.
    pub day: Day,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureNotified {
    pub device_id: DeviceId,
    pub day: Day,
}

/// A synthetic event for `hotaru log append-demo`, tests and benchmarks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoRecorded {
    pub seq: u64,
    pub filler: Vec<u8>,
}

macro_rules! domain_events {
    ($($variant:ident = $tag:literal, $version:literal;)*) => {
        /// Every domain event, in its current schema version. `Serialize` is for tools that
        /// show events (`hotaru log tail --json`, the audit report); storage goes through
        /// [`crate::codec`].
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        pub enum DomainEvent {
            $($variant($variant),)*
        }

        /// The type of a domain event, with its stable name and tag.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($variant,)*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The stable name, as in logs, NATS headers and the audit report.
            pub const fn name(self) -> &'static str {
                match self { $(EventType::$variant => stringify!($variant),)* }
            }

            /// The stable one-byte tag stored in every record. Never reused.
            pub const fn tag(self) -> u8 {
                match self { $(EventType::$variant => $tag,)* }
            }

            /// The schema version new events of this type are written with.
            pub const fn current_version(self) -> u16 {
                match self { $(EventType::$variant => $version,)* }
            }

            pub fn from_tag(tag: u8) -> Option<Self> {
                match tag { $($tag => Some(EventType::$variant),)* _ => None }
            }

            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|t| t.name() == name)
            }

            /// Whether this is a device agent's event: recorded only in a device's own
            /// log, never in the server's (see [`crate::device`]).
            pub const fn is_device(self) -> bool {
                matches!(
                    self,
                    EventType::TekRolled
                        | EventType::ProximityRecorded
                        | EventType::ExposureChecked
                        | EventType::ExposureMatched
                        | EventType::ExposureNotified
                        | EventType::GuidanceShown
                        | EventType::ConsentGiven
                        | EventType::ConsentWithdrawn
                        | EventType::RadioSettingsChanged
                        | EventType::RecordsExpired
                        | EventType::ExportVerified
                        | EventType::RegistrationAttempted
                        | EventType::OperationLogSent
                )
            }
        }

        impl DomainEvent {
            pub fn event_type(&self) -> EventType {
                match self { $(DomainEvent::$variant(_) => EventType::$variant,)* }
            }

            /// bincode of the current version's struct.
            pub(crate) fn encode_body(&self) -> Result<Vec<u8>, bincode::error::EncodeError> {
                match self {
                    $(DomainEvent::$variant(e) => bincode::serde::encode_to_vec(e, crate::codec::BINCODE),)*
                }
            }

            /// Decodes a body written in the current version of `ty`.
            pub(crate) fn decode_current(ty: EventType, body: &[u8]) -> Result<Self, bincode::error::DecodeError> {
                match ty {
                    $(EventType::$variant => Ok(DomainEvent::$variant(crate::codec::decode_exact(body)?)),)*
                }
            }
        }
    };
}

domain_events! {
    CaseConfirmed = 1, 1;
    ProcessingNumberIssued = 2, 1;
    ProcessingNumberRedeemed = 3, 1;
    ProcessingNumberRejected = 4, 2;
    DiagnosisKeysUploaded = 5, 2;
    KeysReleased = 6, 1;
    BatchSigned = 7, 2;
    BatchPublished = 8, 1;
    SigningKeyRotated = 9, 1;
    OperationLogReceived = 10, 1;
    OperationLogDeleted = 11, 1;
    RetentionExpired = 12, 1;
    TekRolled = 13, 2;
    ProximityRecorded = 14, 2;
    ExposureChecked = 15, 2;
    ExposureMatched = 16, 2;
    ExposureNotified = 17, 1;
    GuidanceShown = 18, 2;
    DemoRecorded = 19, 1;
    ConsentGiven = 20, 1;
    ConsentWithdrawn = 21, 1;
    RadioSettingsChanged = 22, 1;
    RecordsExpired = 23, 1;
    ExportVerified = 24, 1;
    RegistrationAttempted = 25, 1;
    OperationLogSent = 26, 1;
    NumberAssigned = 27, 2;
    QuotaTaken = 28, 1;
    GuessReserved = 29, 1;
    GuessReleased = 30, 1;
    RefusalsCounted = 31, 1;
}

/// Earlier schema versions, kept so that stored bytes stay decodable. Never edited.
pub mod legacy {
    use serde::{Deserialize, Serialize};

    use super::{
        CaseId, DiagnosisKey, DiagnosisKeysUploaded, ProcessingNumberRejected, RejectionReason,
        UploadedKey, UploadedKeys,
    };
    use crate::privacy::NumberDigest;
    use crate::time::UnixMillis;

    /// `BatchSigned` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BatchSignedV1 {
        pub batch_id: super::BatchId,
        pub region: super::RegionCode,
        pub start: UnixMillis,
        pub end: UnixMillis,
        pub key_count: u32,
        pub files: Vec<super::ExportFileDigest>,
        pub signature_infos: Vec<super::SignatureInfo>,
        pub padding_seed: [u8; 32],
    }

    impl From<BatchSignedV1> for super::BatchSigned {
        /// Version 1 recorded neither the read position nor the padding: both unknown.
        fn from(v1: BatchSignedV1) -> Self {
            Self {
                batch_id: v1.batch_id,
                region: v1.region,
                start: v1.start,
                end: v1.end,
                through_position: u64::MAX,
                key_count: v1.key_count,
                padding_count: 0,
                files: v1.files,
                signature_infos: v1.signature_infos,
                padding_seed: v1.padding_seed,
            }
        }
    }

    /// `DiagnosisKeysUploaded` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DiagnosisKeysUploadedV1 {
        pub case_id: CaseId,
        pub digest: NumberDigest,
        #[serde(with = "super::stored_key::vec")]
        pub keys: Vec<DiagnosisKey>,
    }

    impl From<DiagnosisKeysUploadedV1> for DiagnosisKeysUploaded {
        /// Version 1 recorded no release time: its keys count as releasable from the
        /// start of time, which an auditor reads as "no hold was recorded".
        fn from(v1: DiagnosisKeysUploadedV1) -> Self {
            Self {
                case_id: v1.case_id,
                digest: v1.digest,
                idempotency: None,
                accepted: u16::try_from(v1.keys.len()).unwrap_or(u16::MAX),
                keys: UploadedKeys::Plain(
                    v1.keys
                        .into_iter()
                        .map(|key| UploadedKey {
                            key,
                            release_at: UnixMillis(0),
                        })
                        .collect(),
                ),
                dropped: Vec::new(),
            }
        }
    }

    /// `ProcessingNumberRejected` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ProcessingNumberRejectedV1 {
        pub reason: RejectionReason,
    }

    impl From<ProcessingNumberRejectedV1> for ProcessingNumberRejected {
        fn from(v1: ProcessingNumberRejectedV1) -> Self {
            Self {
                digest: None,
                reason: v1.reason,
            }
        }
    }

    /// `NumberAssigned` version 1: the case and its number's digest only.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NumberAssignedV1 {
        pub case_id: CaseId,
        pub digest: NumberDigest,
    }

    impl From<NumberAssignedV1> for super::NumberAssigned {
        fn from(v1: NumberAssignedV1) -> Self {
            Self {
                case_id: v1.case_id,
                digest: v1.digest,
                confirmed: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one key type is stored in the fields the events always had: an unknown onset
    /// round-trips, and stored bytes naming no GAEN report type are refused, not guessed.
    #[test]
    fn a_diagnosis_key_is_stored_field_by_field() {
        let mut key = DiagnosisKey {
            tek: hotaru_protocol::Tek::from_bytes([9; 16]),
            rolling_start: hotaru_protocol::EnIntervalNumber(2_880_000),
            rolling_period: 144,
            transmission_risk_level: 4,
            report_type: hotaru_protocol::ReportType::SelfReport,
            days_since_onset: None,
        };
        let uploaded = UploadedKey {
            key,
            release_at: UnixMillis(5),
        };
        let json = serde_json::to_value(uploaded).unwrap();
        assert_eq!(
            json["key"]["key_data"],
            serde_json::to_value([9u8; 16]).unwrap()
        );
        assert_eq!(json["key"]["rolling_start_interval"], 2_880_000);
        assert_eq!(json["key"]["transmission_risk"], 4);
        assert_eq!(json["key"]["report_type"], 3);
        let bytes = bincode::serde::encode_to_vec(uploaded, crate::codec::BINCODE).unwrap();
        let back: UploadedKey = bincode::serde::decode_from_slice(&bytes, crate::codec::BINCODE)
            .unwrap()
            .0;
        assert_eq!(back, uploaded, "an unknown onset stays unknown");
        key.days_since_onset = Some(-3);
        let mut bad = serde_json::to_value(UploadedKey { key, ..uploaded }).unwrap();
        bad["key"]["report_type"] = 9.into();
        assert!(serde_json::from_value::<UploadedKey>(bad).is_err());
    }

    #[test]
    fn sealed_keys_carry_their_version_and_those_of_before_still_read() {
        let keys = vec![UploadedKey {
            key: DiagnosisKey {
                tek: hotaru_protocol::Tek::from_bytes([7; 16]),
                rolling_start: hotaru_protocol::EnIntervalNumber(2_880_000),
                rolling_period: 144,
                transmission_risk_level: 0,
                report_type: hotaru_protocol::ReportType::ConfirmedTest,
                days_since_onset: Some(2),
            },
            release_at: UnixMillis(1),
        }];
        let now = encode_sealed_keys(&keys);
        assert_eq!(now[..2], [crate::versioned::MARKER, SEALED_KEYS_VERSION]);
        assert_eq!(decode_sealed_keys(&now).unwrap(), keys);
        // Written before versions: the bincode alone.
        let before = bincode::serde::encode_to_vec(&keys, crate::codec::BINCODE).unwrap();
        assert_eq!(decode_sealed_keys(&before).unwrap(), keys);
        // A version from the future is refused, not guessed at.
        let future = crate::versioned::wrap(9, &before);
        assert!(
            decode_sealed_keys(&future)
                .unwrap_err()
                .contains("version 9")
        );
    }
}
