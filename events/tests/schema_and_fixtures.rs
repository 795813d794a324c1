//! Schema versions stay decodable, and the schema leaves no room for personal data.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hotaru_events::NumberDigest;
use hotaru_events::codec::{ENCODING_BINCODE2, decode_payload, encode_legacy_payload};
use hotaru_events::domain::legacy::{
    DiagnosisKeysUploadedV1, NumberAssignedV1, ProcessingNumberRejectedV1,
};
use hotaru_events::domain::{
    CaseId, DiagnosisKey, DiagnosisKeysUploaded, NumberAssigned, ProcessingNumberRejected,
    RejectionReason, UploadedKey, UploadedKeys,
};
use hotaru_events::schema::{fields, samples};
use hotaru_events::{CommitEvent, DomainEvent, EventId, EventType, NewEvent, UnixMillis};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture_name(t: EventType, version: u16) -> String {
    format!("{}.v{}.bin", t.name(), version)
}

/// Writes the fixture of each current schema version that has none yet (never
/// overwrites: shipped bytes are history). Run with HOTARU_BLESS_FIXTURES=1 after adding a
/// schema version.
fn bless_missing() {
    for ev in samples() {
        let t = ev.event_type();
        let path = fixtures().join(fixture_name(t, t.current_version()));
        if !path.exists() {
            let ne = NewEvent::new(EventId::new(UnixMillis(0), [0; 10]), UnixMillis(0), ev);
            std::fs::write(&path, CommitEvent::plain(&ne).unwrap().payload).unwrap();
        }
    }
    let v1 = fixtures().join(fixture_name(EventType::ProcessingNumberRejected, 1));
    if !v1.exists() {
        let old = ProcessingNumberRejectedV1 {
            reason: RejectionReason::Unknown,
        };
        std::fs::write(v1, encode_legacy_payload(&old)).unwrap();
    }
}

#[test]
fn every_current_schema_version_has_a_fixture_that_decodes_to_its_sample() {
    if std::env::var_os("HOTARU_BLESS_FIXTURES").is_some() {
        bless_missing();
    }
    for ev in samples() {
        let t = ev.event_type();
        let path = fixtures().join(fixture_name(t, t.current_version()));
        let bytes = std::fs::read(&path).unwrap_or_else(|_| {
            panic!(
                "missing fixture {}: run with HOTARU_BLESS_FIXTURES=1",
                path.display()
            )
        });
        assert_eq!(bytes[0], ENCODING_BINCODE2);
        let decoded = decode_payload(t, t.current_version(), &bytes).unwrap();
        assert_eq!(decoded, ev, "{}", t.name());
    }
}

#[test]
fn stored_version_one_rejections_still_decode() {
    let t = EventType::ProcessingNumberRejected;
    let bytes = std::fs::read(fixtures().join(fixture_name(t, 1))).unwrap();
    assert_eq!(
        decode_payload(t, 1, &bytes).unwrap(),
        DomainEvent::ProcessingNumberRejected(ProcessingNumberRejected {
            digest: None,
            reason: RejectionReason::Unknown
        })
    );
}

/// Version 1 assignments (no confirmation repeated) decode with `confirmed: None`: the
/// fixture was written by version 1 from the same sample case and digest.
#[test]
fn stored_version_one_assignments_still_decode() {
    let t = EventType::NumberAssigned;
    let bytes = std::fs::read(fixtures().join(fixture_name(t, 1))).unwrap();
    let Some(DomainEvent::NumberAssigned(current)) =
        samples().into_iter().find(|e| e.event_type() == t)
    else {
        panic!("a sample of {}", t.name());
    };
    let v1 = NumberAssignedV1 {
        case_id: current.case_id,
        digest: current.digest,
    };
    let upcast = DomainEvent::NumberAssigned(NumberAssigned {
        confirmed: None,
        ..current
    });
    assert_v1_fixture_upcasts(t, &bytes, &v1, upcast);
}

/// The fixture of version 1 is `v1`'s encoding and decodes to `expected`.
fn assert_v1_fixture_upcasts<T: serde::Serialize>(
    t: EventType,
    bytes: &[u8],
    v1: &T,
    expected: DomainEvent,
) {
    assert_eq!(
        bytes,
        encode_legacy_payload(v1),
        "the v1 fixture is v1's encoding"
    );
    assert_eq!(decode_payload(t, 1, bytes).unwrap(), expected);
}

fn v1_key() -> DiagnosisKey {
    DiagnosisKey {
        tek: hotaru_protocol::Tek::from_bytes([0x44; 16]),
        rolling_start: hotaru_protocol::EnIntervalNumber(2_642_976),
        rolling_period: 144,
        transmission_risk_level: 4,
        report_type: hotaru_protocol::ReportType::ConfirmedTest,
        days_since_onset: Some(-2),
    }
}

/// Version 1 uploads (plain keys, no release time) still decode, as plain keys that
/// record no hold. The bytes were written by version 1 of the struct.
#[test]
fn stored_version_one_uploads_still_decode() {
    let t = EventType::DiagnosisKeysUploaded;
    let path = fixtures().join(fixture_name(t, 1));
    let bytes = std::fs::read(&path).unwrap();
    let v1 = DiagnosisKeysUploadedV1 {
        case_id: CaseId([0x11; 16]),
        digest: NumberDigest([0x22; 32]),
        keys: vec![v1_key()],
    };
    assert_v1_fixture_upcasts(
        t,
        &bytes,
        &v1,
        DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
            case_id: CaseId([0x11; 16]),
            digest: NumberDigest([0x22; 32]),
            idempotency: None,
            keys: UploadedKeys::Plain(vec![UploadedKey {
                key: v1_key(),
                release_at: UnixMillis(0),
            }]),
            accepted: 1,
            dropped: vec![],
        }),
    );
}

#[test]
fn there_is_one_sample_per_event_type() {
    let seen: BTreeSet<_> = samples().iter().map(|e| e.event_type()).collect();
    assert_eq!(seen.len(), EventType::ALL.len());
    let tags: BTreeSet<_> = EventType::ALL.iter().map(|t| t.tag()).collect();
    assert_eq!(
        tags.len(),
        EventType::ALL.len(),
        "event type tags are unique"
    );
}

#[test]
fn the_declared_schema_matches_the_structs() {
    for ev in samples() {
        let t = ev.event_type();
        let json = serde_json::to_value(&ev).unwrap();
        let body = &json[t.name()];
        let actual: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut declared: Vec<&str> = fields(t).iter().map(|f| f.name).collect();
        let mut actual_sorted = actual.clone();
        actual_sorted.sort();
        declared.sort();
        assert_eq!(actual_sorted, declared, "{}", t.name());
    }
}

#[test]
fn no_field_is_named_for_personal_data() {
    const FORBIDDEN: [&str; 14] = hotaru_events::schema::FORBIDDEN_FIELD_WORDS;
    let mut names = BTreeSet::new();
    for ev in samples() {
        collect_keys(&serde_json::to_value(&ev).unwrap(), &mut names);
    }
    for name in &names {
        let words: Vec<&str> = name.split('_').collect();
        for bad in FORBIDDEN {
            assert!(
                !words.contains(&bad),
                "field {name} looks like personal data ({bad})"
            );
        }
    }
}

fn collect_keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.to_lowercase());
                collect_keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_keys(v, out)),
        _ => {}
    }
}

/// Version 1 batches still decode; what v1 did not record reads as unknown.
#[test]
fn stored_version_one_batches_still_decode() {
    let t = EventType::BatchSigned;
    let bytes = std::fs::read(fixtures().join(fixture_name(t, 1))).unwrap();
    match decode_payload(t, 1, &bytes).unwrap() {
        DomainEvent::BatchSigned(b) => {
            assert_eq!(b.through_position, u64::MAX);
            assert_eq!(b.padding_count, 0);
            assert_eq!(b.key_count, 1000);
            assert_eq!(b.files.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

/// The placeholder device events of version 1 (written before the device agent existed)
/// still decode, through their upcasters, into the current versions.
#[test]
fn stored_version_one_device_events_still_decode() {
    use hotaru_events::domain::{Day, DeviceId, GuidanceScreen};
    let device_id = DeviceId([0x33; 16]);
    let decode = |t: EventType| {
        let bytes = std::fs::read(fixtures().join(fixture_name(t, 1))).unwrap();
        decode_payload(t, 1, &bytes).unwrap()
    };
    match decode(EventType::TekRolled) {
        DomainEvent::TekRolled(e) => {
            assert_eq!(
                (e.device_id, e.rolling_start_interval),
                (device_id, 2_642_976)
            );
            assert_eq!(e.tek, None, "version 1 carried no key");
        }
        other => panic!("{other:?}"),
    }
    match decode(EventType::ProximityRecorded) {
        DomainEvent::ProximityRecorded(e) => {
            assert_eq!((e.day, e.scans, e.sightings), (Day(2_642_977 / 144), 1, 1));
        }
        other => panic!("{other:?}"),
    }
    match decode(EventType::ExposureChecked) {
        DomainEvent::ExposureChecked(e) => assert_eq!((e.files, e.keys), (1, 1000)),
        other => panic!("{other:?}"),
    }
    match decode(EventType::ExposureMatched) {
        DomainEvent::ExposureMatched(e) => {
            assert_eq!((e.day, e.scan_seconds, e.score), (Day(18_500), 960, 1500));
            assert!(e.windows.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match decode(EventType::GuidanceShown) {
        DomainEvent::GuidanceShown(e) => {
            assert_eq!(e.screen, GuidanceScreen::AskedSymptoms);
            assert_eq!((e.answer, e.prefecture), (None, None));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn device_events_are_the_device_context_s_alone() {
    for t in EventType::ALL {
        let device_word = matches!(
            t.name(),
            n if n.starts_with("Exposure") || n.starts_with("Consent") || n.starts_with("Tek")
        );
        if device_word {
            assert!(t.is_device(), "{}", t.name());
        }
    }
    assert!(!EventType::DiagnosisKeysUploaded.is_device());
    assert!(!EventType::OperationLogReceived.is_device());
    assert!(
        hotaru_events::Context::SERVER
            .iter()
            .all(|c| !c.is_device())
    );
}
