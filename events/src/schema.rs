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
    /// Configuration data as the server served it (the exposure configuration's JSON):
    /// weights and thresholds, the same for every device.
    Configuration,
}

/// A field, short (a `const fn` call would not be promoted to the static slice).
macro_rules! f {
    ($name:literal, $kind:ident) => {
        Field {
            name: $name,
            kind: $kind,
        }
    };
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
        // The centre's id and the basis's code, as CaseConfirmed records them.
        EventType::NumberAssigned => &[
            f!("case_id", Id),
            f!("digest", Digest),
            f!("confirmed", Code),
        ],
        EventType::ProcessingNumberRedeemed => &[f!("case_id", Id), f!("digest", Digest)],
        EventType::GuessReserved | EventType::GuessReleased => &[Field {
            name: "window",
            kind: Count,
        }],
        EventType::RefusalsCounted => &[
            f!("from", Time),
            f!("until", Time),
            f!("format", Count),
            f!("attempt_limit", Count),
            f!("nothing_to_submit", Count),
        ],
        EventType::QuotaTaken => &[
            Field {
                name: "centre_id",
                kind: Id,
            },
            Field {
                name: "day",
                kind: Time,
            },
            Field {
                name: "case_id",
                kind: Id,
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
            f!("device_id", Id),
            f!("rolling_start_interval", Time),
            f!("tek", KeyMaterial),
        ],
        EventType::ProximityRecorded => &[
            f!("device_id", Id),
            f!("day", Time),
            f!("scans", Count),
            f!("sightings", Count),
        ],
        EventType::ExposureChecked => &[
            f!("device_id", Id),
            f!("files", Count),
            f!("refused", Count),
            f!("keys", Count),
            f!("matches", Count),
            f!("risk_configuration", Configuration),
        ],
        EventType::ExposureMatched => &[
            f!("device_id", Id),
            f!("day", Time),
            f!("windows", Measurement),
            f!("scan_seconds", Measurement),
            f!("min_attenuation_db", Measurement),
            f!("score", Measurement),
        ],
        EventType::ExposureNotified => &[f!("device_id", Id), f!("day", Time)],
        EventType::GuidanceShown => &[
            f!("device_id", Id),
            f!("screen", Code),
            f!("answer", Code),
            f!("prefecture", Code),
        ],
        EventType::ConsentGiven => &[f!("device_id", Id), f!("model", Code)],
        EventType::ConsentWithdrawn => &[f!("device_id", Id)],
        EventType::RadioSettingsChanged => &[
            f!("device_id", Id),
            f!("bluetooth_on", Code),
            f!("exposure_logging_on", Code),
        ],
        EventType::RecordsExpired => &[f!("device_id", Id), f!("day", Time)],
        EventType::ExportVerified => &[
            f!("device_id", Id),
            f!("file", Digest),
            f!("verdict", Code),
            f!("keys", Count),
        ],
        EventType::RegistrationAttempted => &[
            f!("device_id", Id),
            f!("outcome", Code),
            f!("keys", Count),
            f!("onset", Time),
        ],
        EventType::OperationLogSent => &[f!("device_id", Id), f!("log_id", Id)],
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
        tek: hotaru_protocol::Tek::from_bytes([0x44; 16]),
        rolling_start: hotaru_protocol::EnIntervalNumber(2_642_976),
        rolling_period: 144,
        transmission_risk_level: 4,
        report_type: hotaru_protocol::ReportType::ConfirmedTest,
        days_since_onset: Some(-2),
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
        DomainEvent::NumberAssigned(NumberAssigned {
            case_id,
            digest,
            confirmed: Some(CaseConfirmation {
                centre_id: CentreId(7),
                basis: CaseBasis::SymptomOnset(Day(18_500)),
            }),
        }),
        DomainEvent::GuessReserved(GuessReserved { window: 445_000 }),
        DomainEvent::GuessReleased(GuessReleased { window: 445_000 }),
        DomainEvent::RefusalsCounted(RefusalsCounted {
            from: at,
            until: at.plus_millis(60_000),
            format: 3,
            attempt_limit: 2,
            nothing_to_submit: 1,
        }),
        DomainEvent::QuotaTaken(QuotaTaken {
            centre_id: CentreId(7),
            day: Day(18_500),
            case_id,
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
            tek: Some(Sealed {
                day: Day(18_354),
                nonce: [0x12; 12],
                ciphertext: vec![0x13; 32],
            }),
        }),
        DomainEvent::ProximityRecorded(ProximityRecorded {
            device_id,
            day: Day(18_354),
            scans: 288,
            sightings: 1200,
        }),
        DomainEvent::ExposureChecked(ExposureChecked {
            device_id,
            files: 2,
            refused: 1,
            keys: 1000,
            matches: 5,
            risk_configuration: br#"{"dailyScoreThreshold":1350.0}"#.to_vec(),
        }),
        DomainEvent::ExposureMatched(ExposureMatched {
            device_id,
            day: Day(18_500),
            windows: vec![MatchedWindow {
                report_type: 1,
                days_since_onset: Some(-1),
                scans: vec![ScanRecord {
                    typical_attenuation_db: 52,
                    min_attenuation_db: 48,
                    seconds_since_last_scan: 240,
                }],
            }],
            scan_seconds: 240,
            min_attenuation_db: 48,
            score: 600,
        }),
        DomainEvent::ExposureNotified(ExposureNotified {
            device_id,
            day: Day(18_500),
        }),
        DomainEvent::GuidanceShown(GuidanceShown {
            device_id,
            screen: GuidanceScreen::ConsultationCentres,
            answer: Some(GuidanceAnswer::No),
            prefecture: Some(13),
        }),
        DomainEvent::DemoRecorded(DemoRecorded {
            seq: 42,
            filler: vec![0xaa; 8],
        }),
        DomainEvent::ConsentGiven(ConsentGiven {
            device_id,
            model: 3,
        }),
        DomainEvent::ConsentWithdrawn(ConsentWithdrawn { device_id }),
        DomainEvent::RadioSettingsChanged(RadioSettingsChanged {
            device_id,
            bluetooth_on: false,
            exposure_logging_on: true,
        }),
        DomainEvent::RecordsExpired(RecordsExpired {
            device_id,
            day: Day(18_486),
        }),
        DomainEvent::ExportVerified(ExportVerified {
            device_id,
            file: [0x14; 32],
            verdict: ExportVerdict::BadSignature,
            keys: 0,
        }),
        DomainEvent::RegistrationAttempted(RegistrationAttempted {
            device_id,
            outcome: RegistrationOutcome::Completed { accepted: 3 },
            keys: 3,
            onset: Day(18_498),
        }),
        DomainEvent::OperationLogSent(OperationLogSent {
            device_id,
            log_id: LogId([0x15; 16]),
        }),
    ]
}
