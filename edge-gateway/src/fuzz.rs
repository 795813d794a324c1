//! Fuzzing on the stable toolchain (issue 14): every parser that reads bytes from outside
//! gets random and mutated inputs through bolero's test engine, and must answer (accept or
//! refuse) without a panic. `HOTARU_FUZZ_ITERATIONS` sets the inputs per target (10,000 by
//! default, the short run of every test run); docs/RELIABILITY.md has the long runs.
//!
//! An input is a valid sample with edits: bytes overwritten, the sample cut short, bytes
//! appended, or (when the sample is left empty) random bytes alone. The samples take the
//! parsers past their first checks, where random bytes alone would stop.

use hotaru_events::codec::Commit;
use hotaru_protocol::export::{ReadLimits, read_zip};

/// Edits applied to a sample: (position, byte) overwrites, an optional cut, bytes appended,
/// and whether to drop the sample and take the appended bytes alone.
type Edits = (Vec<(u16, u8)>, Option<u16>, Vec<u8>, bool);

fn mutate(sample: &[u8], (overwrites, cut, tail, raw): &Edits) -> Vec<u8> {
    if *raw {
        return tail.clone();
    }
    let mut b = sample.to_vec();
    for (pos, byte) in overwrites {
        if !b.is_empty() {
            let i = usize::from(*pos) % b.len();
            b[i] = *byte;
        }
    }
    if let Some(c) = cut
        && !b.is_empty()
    {
        b.truncate(usize::from(*c) % b.len());
    }
    b.extend_from_slice(tail);
    b
}

fn iterations() -> usize {
    std::env::var("HOTARU_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Runs `target` on `iterations()` mutations of `sample`.
fn fuzz(sample: Vec<u8>, target: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    bolero::check!()
        .with_type::<Edits>()
        .with_iterations(iterations())
        .for_each(|edits| target(&mutate(&sample, edits)));
}

fn v3_sample() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "keys": [{"keyData": "AAECAwQFBgcICQoLDA0ODw==", "rollingStartNumber": 2_950_000,
                  "rollingPeriod": 144, "transmissionRisk": 4, "reportType": 1,
                  "daysSinceOnsetOfSymptoms": 0}],
        "hasSymptom": true, "onsetOfSymptomOrTestDate": "2026-11-19T00:00:00Z",
        "verificationPayload": "12345678", "idempotency_key": "k", "padding": "==",
    }))
    .unwrap()
}

#[test]
fn fuzz_the_v3_upload_parser() {
    fuzz(v3_sample(), |b| {
        if let Ok(d) = serde_json::from_slice::<crate::wire::V3Diagnosis>(b) {
            let _ = d.keys.iter().map(crate::wire::V3Key::submitted).count();
        }
    });
}

#[test]
fn fuzz_the_v1_publish_parser() {
    let sample = serde_json::to_vec(&serde_json::json!({
        "temporaryExposureKeys": [{"key": "AAECAwQFBgcICQoLDA0ODw==",
                                   "rollingStartNumber": 2_950_000, "rollingPeriod": 144,
                                   "transmissionRisk": 3}],
        "healthAuthorityID": "hotaru", "verificationPayload": "12345678",
        "hmacKey": "c2FsdA==", "symptomOnsetInterval": 2_950_000, "traveler": false,
        "revisionToken": "", "padding": "cGFk",
    }))
    .unwrap();
    fuzz(sample, |b| {
        if let Ok(p) = crate::api::publish::parse_publish(b, "hotaru") {
            let _ = p
                .temporary_exposure_keys
                .iter()
                .map(crate::wire::PublishKey::submitted)
                .count();
        }
    });
}

#[test]
fn fuzz_the_export_reader() {
    let file = hotaru_protocol::export::ExportFile {
        start_timestamp: 1,
        end_timestamp: 2,
        region: "440".into(),
        batch_num: 1,
        batch_size: 1,
        signature_infos: vec![hotaru_protocol::export::SignatureInfo::new("440", "v1")],
        keys: Vec::new(),
        revised_keys: Vec::new(),
    };
    let sample = hotaru_protocol::export::write_zip(&file.encode(), b"\x0a\x02\x08\x01");
    fuzz(sample, |b| {
        let _ = read_zip(b, ReadLimits::default());
    });
}

#[test]
fn fuzz_event_and_commit_decoding() {
    use hotaru_events::codec::CommitEvent;
    use hotaru_events::domain::DemoRecorded;
    use hotaru_events::{DomainEvent, EventId, NewEvent, StreamId, StreamKind, UnixMillis};
    let event = NewEvent::new(
        EventId::new(UnixMillis(1_700_000_000_000), [7; 10]),
        UnixMillis(1_700_000_000_000),
        DomainEvent::DemoRecorded(DemoRecorded {
            seq: 1,
            filler: vec![1, 2, 3],
        }),
    );
    let commit = Commit {
        context: hotaru_events::Context::Demo,
        position: 7,
        stream: StreamId::new(StreamKind::Demo, "s1").unwrap(),
        first_version: 3,
        events: vec![CommitEvent::plain(&event).unwrap(); 2],
    };
    fuzz(commit.encode().unwrap(), |b| {
        let _ = Commit::decode_head(b);
        if let Ok(c) = Commit::decode(b) {
            let _ = c.last_version();
            for e in c.envelopes() {
                let _ = e;
            }
        }
    });
}

#[test]
fn fuzz_the_archive_reader() {
    use hotaru_audit::archive::{Archive, ArchiveWriter};
    let mut sample = Vec::new();
    {
        let mut w = ArchiveWriter::new(&mut sample).unwrap();
        w.head(
            hotaru_events::Context::Demo,
            1,
            hotaru_events::chain::ChainHash::GENESIS,
        )
        .unwrap();
        w.frame(hotaru_events::Context::Demo, 1, b"frame").unwrap();
        w.blob("b", b"blob").unwrap();
        w.finish().unwrap();
    }
    fuzz(sample, |b| {
        let _ = Archive::parse(actix_web::web::Bytes::copy_from_slice(b));
    });
}

/// The harness runs as many inputs as asked, and a target that panics on some of them
/// fails the run (so a target that passes did run and did not panic).
#[test]
fn the_harness_runs_every_input_and_catches_a_panic() {
    let n = std::sync::atomic::AtomicUsize::new(0);
    fuzz(b"abc".to_vec(), |_| {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(n.into_inner(), iterations());
    let caught = std::panic::catch_unwind(|| {
        fuzz(b"abc".to_vec(), |b| assert!(b.len() < 40, "a long input"));
    });
    assert!(caught.is_err(), "a panicking target passed");
}
