//! The schema of every event type, as data: field names and what kind of value each
//! holds. The audit reads it to show that no field can hold personal data; the tests
//! check it against the real structs so it cannot drift.
//!
//! There is deliberately no kind for free text: a field that could hold a name, phone
//! number, e-mail, address, IP or location has no kind to be declared with.

use crate::domain::*;
use crate::ids::EventId;
use crate::privacy::NumberDigest;
use crate::time::UnixMillis;

/// What a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A random identifier (case, device, log, event) or a numeric account id.
    Id,
    /// A keyed or plain digest (processing number digest, SHA-256 of a file).
    Digest,
    /// A point in time or a day number.
    Time,
    /// A count or sequence number.
    Count,
    /// A closed set of codes (reasons, guidance steps, region code, case basis).
    Code,
    /// GAEN key material and its metadata (TEKs, RPIs, AEMs, public keys).
    KeyMaterial,
    /// Measurements from BLE scans (attenuation, scored seconds).
    Measurement,
    /// The user's operation log, sealed under a day key; scanned for personal data at
    /// upload (the gateway issue).
    SealedContent,
    /// Synthetic bytes of demo events.
    Filler,
}

/// Words no field name may contain (split on `_`): names, contact details, addresses,
/// locations, hosts, device addresses, birth dates.
pub const FORBIDDEN_FIELD_WORDS: [&str; 14] = [
    "name", "phone", "tel", "mail", "address", "addr", "ip", "location", "lat", "lon", "gps",
    "host", "mac", "birth",
];

/// One field of an event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldKind,
}

use FieldKind::*;

/// The fields of `t`, in declaration order.
pub fn fields(t: EventType) -> &'static [Field] {
    match t {
        EventType::CaseConfirmed => &[
            Field {
                name: "case_id",
                kind: Id,
            },
            Field {
                name: "centre_id",
                kind: Id,
            },
            Field {
                name: "basis",
                kind: Code,
            },
        ],
        EventType::ProcessingNumberIssued => &[
            Field {
                name: "case_id",
                kind: Id,
            },
            Field {
                name: "centre_id",
                kind: Id,
            },
            Field {
                name: "digest",
                kind: Digest,
            },
            Field {
                name: "expires_at",
                kind: Time,
            },
        ],
        EventType::ProcessingNumberRedeemed => &[
            Field {
                name: "case_id",
                kind: Id,
            },
            Field {
                name: "digest",
                kind: Digest,
            },
        ],
        EventType::ProcessingNumberRejected => &[
            Field {
                name: "digest",
                kind: Digest,
            },
            Field {
                name: "reason",
                kind: Code,
            },
        ],
        EventType::DiagnosisKeysUploaded => &[
            Field {
                name: "case_id",
                kind: Id,
            },
            Field {
                name: "digest",
                kind: Digest,
            },
            Field {
                name: "idempotency",
                kind: Digest,
            },
            Field {
                name: "keys",
                kind: KeyMaterial,
            },
            Field {
                name: "accepted",
                kind: Count,
            },
            Field {
                name: "dropped",
                kind: Code,
            },
        ],
        EventType::KeysReleased => &[
            Field {
                name: "upload",
                kind: Id,
            },
            Field {
                name: "keys",
                kind: KeyMaterial,
            },
        ],
        EventType::BatchSigned => &[
            Field {
                name: "batch_id",
                kind: Count,
            },
            Field {
                name: "region",
                kind: Code,
            },
            Field {
                name: "start",
                kind: Time,
            },
            Field {
                name: "end",
                kind: Time,
            },
            Field {
                name: "through_position",
                kind: Count,
            },
            Field {
                name: "key_count",
                kind: Count,
            },
            Field {
                name: "padding_count",
                kind: Count,
            },
            Field {
                name: "files",
                kind: Digest,
            },
            Field {
                name: "signature_infos",
                kind: KeyMaterial,
            },
            Field {
                name: "padding_seed",
                kind: KeyMaterial,
            },
        ],
        EventType::BatchPublished => &[
            Field {
                name: "batch_id",
                kind: Count,
            },
            Field {
                name: "blobs",
                kind: Digest,
            },
        ],
        EventType::SigningKeyRotated => &[
            Field {
                name: "info",
                kind: KeyMaterial,
            },
            Field {
                name: "public_key_spki",
                kind: KeyMaterial,
            },
            Field {
                name: "valid_from",
                kind: Time,
            },
        ],
        EventType::OperationLogReceived => &[
            Field {
                name: "log_id",
                kind: Id,
            },
            Field {
                name: "content",
                kind: SealedContent,
            },
        ],
        EventType::OperationLogDeleted => &[Field {
            name: "log_id",
            kind: Id,
        }],
        EventType::RetentionExpired => &[Field {
            name: "day",
            kind: Time,
        }],
        EventType::TekRolled => &[
            Field {
                name: "device_id",
                kind: Id,
            },
            Field {
                name: "rolling_start_interval",
                kind: Time,
            },
        ],
        EventType::ProximityRecorded => &[
            Field {
                name: "device_id",
                kind: Id,
            },
            Field {
                name: "rpi",
                kind: KeyMaterial,
            },
            Field {
                name: "aem",
                kind: KeyMaterial,
            },
            Field {
                name: "interval",
                kind: Time,
            },
            Field {
                name: "attenuation_db",
                kind: Measurement,
            },
        ],
        EventType::ExposureChecked => &[
            Field {
                name: "device_id",
                kind: Id,
            },
            Field {
                name: "batch_id",
                kind: Count,
            },
            Field {
                name: "keys_checked",
                kind: Count,
            },
        ],
        EventType::ExposureMatched => &[
            Field {
                name: "device_id",
                kind: Id,
            },
            Field {
                name: "day",
                kind: Time,
            },
            Field {
                name: "weighted_seconds",
                kind: Measurement,
            },
            Field {
                name: "scan_seconds",
                kind: Measurement,
            },
        ],
        EventType::ExposureNotified => &[
            Field {
                name: "device_id",
                kind: Id,
            },
            Field {
                name: "day",
                kind: Time,
            },
        ],
        EventType::GuidanceShown => &[
            Field {
                name: "device_id",
                kind: Id,
            },
            Field {
                name: "step",
                kind: Code,
            },
        ],
        EventType::DemoRecorded => &[
            Field {
                name: "seq",
                kind: Count,
            },
            Field {
                name: "filler",
                kind: Filler,
            },
        ],
    }
}

/// One sample of every event type, with fixed values: for fixtures, tests and the audit's
/// self-check.
pub fn samples() -> Vec<DomainEvent> {
    let case_id = CaseId([0x11; 16]);
    let digest = NumberDigest([0x22; 32]);
    let device_id = DeviceId([0x33; 16]);
    let key = DiagnosisKey {
        key_data: [0x44; 16],
        rolling_start_interval: 2_642_976,
        rolling_period: 144,
        transmission_risk: 4,
        report_type: 1,
        days_since_onset: -2,
    };
    let at = UnixMillis(1_600_000_000_000);
    vec![
        DomainEvent::CaseConfirmed(CaseConfirmed {
            case_id,
            centre_id: CentreId(7),
            basis: CaseBasis::SymptomOnset(Day(18_500)),
        }),
        DomainEvent::ProcessingNumberIssued(ProcessingNumberIssued {
            case_id,
            centre_id: CentreId(7),
            digest,
            expires_at: at,
        }),
        DomainEvent::ProcessingNumberRedeemed(ProcessingNumberRedeemed { case_id, digest }),
        DomainEvent::ProcessingNumberRejected(ProcessingNumberRejected {
            digest: Some(digest),
            reason: RejectionReason::AlreadyUsed,
        }),
        DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
            case_id,
            digest,
            idempotency: Some([0x55; 32]),
            keys: UploadedKeys::Sealed(Sealed {
                day: Day(18_500),
                nonce: [0x66; 12],
                ciphertext: vec![0x77; 48],
            }),
            accepted: 1,
            dropped: vec![DroppedKey {
                index: 1,
                reason: KeyRejection::BeforeInfectiousPeriod,
            }],
        }),
        DomainEvent::KeysReleased(KeysReleased {
            upload: EventId::new(at, [5; 10]),
            keys: vec![key],
        }),
        DomainEvent::BatchSigned(BatchSigned {
            batch_id: BatchId(3),
            region: RegionCode(*b"440"),
            start: at,
            end: at.plus_millis(4 * 3_600_000),
            through_position: 77,
            key_count: 1000,
            padding_count: 0,
            files: vec![ExportFileDigest {
                batch_num: 1,
                key_count: 1000,
                export_bin_sha256: [0x55; 32],
            }],
            signature_infos: vec![SignatureInfo {
                key_version: 1,
                key_id: 440,
            }],
            padding_seed: [0x66; 32],
        }),
        DomainEvent::BatchPublished(BatchPublished {
            batch_id: BatchId(3),
            blobs: vec![[0x77; 32]],
        }),
        DomainEvent::SigningKeyRotated(SigningKeyRotated {
            info: SignatureInfo {
                key_version: 2,
                key_id: 440,
            },
            public_key_spki: vec![0x30, 0x59, 0x30, 0x13],
            valid_from: at,
        }),
        DomainEvent::OperationLogReceived(OperationLogReceived {
            log_id: LogId([0x88; 16]),
            content: b"checked exposures: ok".to_vec(),
        }),
        DomainEvent::OperationLogDeleted(OperationLogDeleted {
            log_id: LogId([0x88; 16]),
        }),
        DomainEvent::RetentionExpired(RetentionExpired { day: Day(18_486) }),
        DomainEvent::TekRolled(TekRolled {
            device_id,
            rolling_start_interval: 2_642_976,
        }),
        DomainEvent::ProximityRecorded(ProximityRecorded {
            device_id,
            rpi: [0x99; 16],
            aem: [1, 2, 3, 4],
            interval: 2_642_977,
            attenuation_db: 55,
        }),
        DomainEvent::ExposureChecked(ExposureChecked {
            device_id,
            batch_id: BatchId(3),
            keys_checked: 1000,
        }),
        DomainEvent::ExposureMatched(ExposureMatched {
            device_id,
            day: Day(18_500),
            weighted_seconds: 1500,
            scan_seconds: 960,
        }),
        DomainEvent::ExposureNotified(ExposureNotified {
            device_id,
            day: Day(18_500),
        }),
        DomainEvent::GuidanceShown(GuidanceShown {
            device_id,
            step: GuidanceStep::AskedSymptoms,
        }),
        DomainEvent::DemoRecorded(DemoRecorded {
            seq: 42,
            filler: vec![0xaa; 8],
        }),
    ]
}
