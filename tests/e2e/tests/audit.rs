//! `hotaru audit` as the committee runs it: on logs built by the server actors (the demo)
//! on the embedded store, on a real nats-server and on exported archives every check
//! passes; each kind of tampering makes it fail with the right finding.

use hotaru_protocol::random::OsRandom;
use std::path::Path;

use hotaru_audit::archive::{Archive, ArchiveWriter};
use hotaru_events::domain::{
    CaseId, DiagnosisKey, DiagnosisKeysUploaded, UploadedKey, UploadedKeys,
};
use hotaru_events::{Clock, DomainEvent, NewEvent, NumberDigest, StreamId, StreamKind};
use hotaru_log::{EventLog, ExpectedVersion, SledLog};
use hotaru_test_support::NatsServer;
use hotaru_test_support::hotaru::{hotaru, run, stdout};
use serde_json::Value;

fn check(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hotaru audit ... --json`: the exit code and the report.
fn audit(args: &[&str]) -> (Option<i32>, Value) {
    let out = hotaru()
        .arg("audit")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn check_of<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn findings(r: &Value, name: &str) -> Vec<String> {
    check_of(r, name)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.to_string())
        .collect()
}

/// `hotaru audit` exits 1 and `check` has a finding holding every one of `needles`;
/// returns the check's findings and the report.
fn fails_with(args: &[&str], check: &str, needles: &[&str]) -> (Vec<String>, Value) {
    let (code, r) = audit(args);
    assert_eq!(code, Some(1), "{r}");
    let f = findings(&r, check);
    assert!(
        f.iter().any(|f| needles.iter().all(|n| f.contains(n))),
        "no {check} finding with {needles:?}: {f:?}"
    );
    (f, r)
}

fn all_pass(r: &Value) {
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["passed"], true, "{c}");
    }
    assert_eq!(r["passed"], true);
}

/// A log built by the server actors: the demo's cases, numbers, uploads (with mistakes),
/// a signed batch.
fn demo(store: &[&str]) {
    check(&run(&[&["demo", "--cases", "12"], store].concat()));
}

#[test]
fn every_check_passes_on_the_embedded_store_and_its_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    demo(&["--data-dir", d]);
    let report_file = dir.path().join("report.html");
    let (code, r) = audit(&["--data-dir", d, "--report", report_file.to_str().unwrap()]);
    all_pass(&r);
    assert_eq!(code, Some(0));
    assert!(
        check_of(&r, "batches")["evidence"][0]
            .as_str()
            .unwrap()
            .contains("1 rebuilt byte for byte")
    );
    assert_eq!(r["days"][0]["numbers_issued"], 12);
    assert_eq!(r["days"][0]["registrations"], 12);
    // The demo's three mistakes: B one event, A and G counted in the node's tally.
    assert_eq!(r["days"][0]["refusals"], 3);
    assert!(r["bytes_scanned"].as_u64().unwrap() > 10_000);
    // The HTML report: self-contained, every check with its result, plots without script.
    let html = std::fs::read_to_string(&report_file).unwrap();
    for needle in [
        "<!DOCTYPE html>",
        "Integrity of the log",
        "Every uploaded key traces to a redemption",
        "Every batch re-derives from the events",
        "No personal data anywhere",
        "Nothing past its retention is readable",
        "Figures by day",
        "<svg",
        "Keys published",
        "every check passed",
    ] {
        assert!(html.contains(needle), "{needle} missing from the report");
    }
    assert!(!html.contains("<script"), "no JavaScript");
    // The table on a terminal.
    let out = run(&["audit", "--data-dir", d]);
    check(&out);
    assert!(stdout(&out).contains("every check passed"));

    // The archive audits the same, offline.
    let archive = dir.path().join("log.hotaru");
    let out = run(&[
        "log",
        "export",
        "--data-dir",
        d,
        "--archive",
        archive.to_str().unwrap(),
    ]);
    check(&out);
    assert!(stdout(&out).contains("sha256"));
    let (code, ra) = audit(&["--archive", archive.to_str().unwrap()]);
    all_pass(&ra);
    assert_eq!(code, Some(0));
    assert_eq!(ra["contexts"], r["contexts"], "the same heads");
}

#[test]
fn every_check_passes_on_nats_and_its_archive() {
    let nats = NatsServer::start();
    let url = nats.url();
    demo(&["--nats", &url]);
    let (code, r) = audit(&["--nats", &url]);
    all_pass(&r);
    assert_eq!(code, Some(0));
    assert!(r["source"].as_str().unwrap().contains("JetStream"));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("log.hotaru");
    check(&run(&[
        "log",
        "export",
        "--nats",
        &url,
        "--archive",
        archive.to_str().unwrap(),
    ]));
    let (code, ra) = audit(&["--archive", archive.to_str().unwrap()]);
    all_pass(&ra);
    assert_eq!(code, Some(0));
    // The nats-server's own files, scanned too.
    let (code, r) = audit(&["--nats", &url, "--scan", nats.store_dir().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{r}");
    // An e-mail address in an API key's label is found through the server too.
    check(&run(&[
        "keys",
        "centre",
        "add",
        "Minato centre, write to minato@example.jp",
        "--nats",
        &url,
    ]));
    fails_with(
        &["--nats", &url],
        "privacy",
        &["side store centres", "an e-mail address"],
    );
}

/// Rewrites an archive with `change` applied to its registration frames, with a valid
/// trailer: only the chain can tell.
fn tampered(src: &Path, dst: &Path, change: impl FnOnce(&mut Vec<(u64, bytes::Bytes)>)) {
    let mut a = Archive::read_file(src).unwrap();
    let reg = hotaru_events::Context::Registration as u8;
    change(a.frames.get_mut(&reg).unwrap());
    write_archive(&a, dst);
}

fn write_archive(a: &Archive, dst: &Path) {
    let mut w = ArchiveWriter::new(std::fs::File::create(dst).unwrap()).unwrap();
    for (ctx, frames) in &a.frames {
        let ctx = hotaru_events::Context::ALL[usize::from(*ctx)];
        for (p, f) in frames {
            w.frame(ctx, *p, f).unwrap();
        }
    }
    for (ctx, head, hash) in &a.heads {
        w.head(*ctx, *head, *hash).unwrap();
    }
    for (d, k) in &a.day_keys {
        w.day_key(hotaru_events::domain::Day(*d), k).unwrap();
    }
    for (n, b) in &a.blobs {
        w.blob(n, b).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn tampering_with_an_archive_is_found_and_pinpointed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    demo(&["--data-dir", d]);
    let archive = dir.path().join("log.hotaru");
    check(&run(&[
        "log",
        "export",
        "--data-dir",
        d,
        "--archive",
        archive.to_str().unwrap(),
    ]));
    let bad = dir.path().join("bad.hotaru");
    let integrity = |what: &str| {
        let (code, r) = audit(&["--archive", bad.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{what}");
        let f = findings(&r, "integrity");
        assert!(!f.is_empty(), "{what}: no integrity finding");
        f
    };

    // One flipped byte in the middle of a commit: found at its position, with its stream
    // and event types.
    tampered(&archive, &bad, |frames| {
        let mut f = frames[5].1.to_vec();
        let mid = f.len() - 5;
        f[mid] ^= 0x01;
        frames[5].1 = f.into();
    });
    let f = integrity("flip");
    assert!(
        f[0].contains("hash mismatch") || f[0].contains("decode"),
        "{f:?}"
    );
    assert!(f[0].contains("\"position\":6"), "{f:?}");
    assert!(f[0].contains("\"stream\""), "{f:?}");
    assert!(f[0].contains("event_types"), "{f:?}");

    // A deleted commit.
    tampered(&archive, &bad, |frames| {
        frames.remove(7);
    });
    let f = integrity("delete");
    assert!(f[0].contains("expected position 8, found 9"), "{f:?}");

    // Two commits swapped.
    tampered(&archive, &bad, |frames| frames.swap(9, 10));
    let f = integrity("swap");
    assert!(f[0].contains("expected position 10, found 11"), "{f:?}");

    // The last commit cut off: the head says more.
    tampered(&archive, &bad, |frames| {
        frames.pop();
    });
    let f = integrity("truncate");
    assert!(f[0].contains("missing at the end"), "{f:?}");

    // A byte flipped in the archive's own framing (the first frame's length): reported,
    // with what could be read before it, not a crash.
    let mut raw = std::fs::read(&archive).unwrap();
    raw[29] ^= 0x04;
    std::fs::write(&bad, raw).unwrap();
    let f = integrity("framing");
    assert!(
        f.iter()
            .any(|f| f.contains("trailer") || f.contains("stop parsing")),
        "{f:?}"
    );

    // Any byte changed after export breaks the trailer too.
    let mut raw = std::fs::read(&archive).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x20;
    std::fs::write(&bad, raw).unwrap();
    let (code, _) = audit(&["--archive", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));

    // A batch re-signed with a key never rotated in (the zip replaced under its address).
    let mut a = Archive::read_file(&archive).unwrap();
    let (name, zip) = a
        .blobs
        .iter()
        .next()
        .map(|(n, z)| (n.clone(), z.clone()))
        .unwrap();
    let e = hotaru_protocol::export::read_zip(&zip, Default::default()).unwrap();
    let pkcs8 = hotaru_protocol::export::Signer::generate_pkcs8(&mut OsRandom::new());
    let foreign =
        hotaru_protocol::export::Signer::from_pkcs8(e.signatures[0].info.clone(), &pkcs8).unwrap();
    let sig = hotaru_protocol::export::sign_export(
        &e.export_bin,
        e.file.batch_num,
        e.file.batch_size,
        &[&foreign],
    );
    a.blobs.insert(
        name,
        hotaru_protocol::export::write_zip(&e.export_bin, &sig),
    );
    write_archive(&a, &bad);
    let (_, r) = fails_with(
        &["--archive", bad.to_str().unwrap()],
        "batches",
        &["no key recorded in SigningKeyRotated verifies"],
    );
    assert!(
        findings(&r, "integrity").is_empty(),
        "the log itself is intact"
    );

    // A batch that publishes a key still on hold (today's, released only 2 h after it
    // expires): the file's keys are judged, not only its hash.
    let mut a = Archive::read_file(&archive).unwrap();
    let held = held_key(&a);
    let (name, zip) = a
        .blobs
        .iter()
        .next()
        .map(|(n, z)| (n.clone(), z.clone()))
        .unwrap();
    let mut e = hotaru_protocol::export::read_zip(&zip, Default::default()).unwrap();
    e.file.keys.push(hotaru_protocol::DiagnosisKey {
        transmission_risk_level: 4,
        report_type: hotaru_protocol::ReportType::ConfirmedTest,
        days_since_onset: Some(0),
        ..held
    });
    let bin = e.file.encode();
    let sig = hotaru_protocol::export::sign_export(&bin, 1, 1, &[&foreign]);
    a.blobs
        .insert(name, hotaru_protocol::export::write_zip(&bin, &sig));
    write_archive(&a, &bad);
    fails_with(
        &["--archive", bad.to_str().unwrap()],
        "batches",
        &["published before its release time"],
    );
}

/// The uploaded key released last (today's key, held until 2 h after it expires), opened
/// with the archive's day keys as the committee can.
fn held_key(a: &Archive) -> DiagnosisKey {
    let reg = hotaru_events::Context::Registration as u8;
    let mut best: Option<UploadedKey> = None;
    for (_, frame) in &a.frames[&reg] {
        let (_, commit) = hotaru_events::Frame::decode(frame).unwrap();
        for env in commit.envelopes().flatten() {
            let DomainEvent::DiagnosisKeysUploaded(u) = env.event else {
                continue;
            };
            let UploadedKeys::Sealed(sealed) = u.keys else {
                continue;
            };
            let plain =
                hotaru_domain::sealing::open_with_stored(&a.day_keys[&sealed.day.0], &sealed)
                    .unwrap();
            let keys = hotaru_events::domain::decode_sealed_keys(&plain).unwrap();
            for k in keys {
                if best.is_none_or(|b| k.release_at > b.release_at) {
                    best = Some(k);
                }
            }
        }
    }
    best.unwrap().key
}

#[test]
fn tampering_with_a_live_store_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    demo(&["--data-dir", d]);

    // A key uploaded with no redemption: appended straight to the log (as an intruder with
    // write access would), chained like any commit.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = SledLog::open(&data).unwrap();
        let now = hotaru_actors::SystemClock.now();
        let digest = NumberDigest([7; 32]);
        let stream = StreamId::new(StreamKind::ProcessingNumber, hex::encode(digest.0)).unwrap();
        let ev = DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
            case_id: CaseId([9; 16]),
            digest,
            idempotency: None,
            keys: UploadedKeys::Plain(vec![UploadedKey {
                key: DiagnosisKey {
                    tek: hotaru_protocol::Tek::from_bytes([5; 16]),
                    rolling_start: hotaru_protocol::EnIntervalNumber((now.day() - 1) * 144),
                    rolling_period: 144,
                    transmission_risk_level: 4,
                    report_type: hotaru_protocol::ReportType::ConfirmedTest,
                    days_since_onset: Some(0),
                },
                release_at: now,
            }]),
            accepted: 1,
            dropped: vec![],
        });
        let id = hotaru_events::EventId::new(now, [3; 10]);
        log.append(
            stream,
            ExpectedVersion::Exact(0),
            vec![NewEvent::new(id, now, ev)],
        )
        .await
        .unwrap();
    });
    let (f, r) = fails_with(
        &["--data-dir", d],
        "authorisation",
        &["not authorised: no processing number was issued"],
    );
    assert!(f[0].contains("DiagnosisKeysUploaded"), "{f:?}");
    assert_eq!(check_of(&r, "integrity")["passed"], true);

    // An e-mail address in a free-text field (an API key's label) lands in the store.
    let clean = tempfile::tempdir().unwrap();
    let c = clean.path().join("data");
    let c = c.to_str().unwrap();
    demo(&["--data-dir", c]);
    check(&run(&[
        "keys",
        "centre",
        "add",
        "Chuo centre, contact chuo-hc@example.jp",
        "--data-dir",
        c,
    ]));
    fails_with(&["--data-dir", c], "privacy", &["an e-mail address"]);
    // A process's own log file that recorded a client's address.
    let logfile = clean.path().join("gateway.log");
    std::fs::write(&logfile, "12:00:01 request from 203.0.113.7 answered 200\n").unwrap();
    fails_with(
        &["--data-dir", c, "--scan", logfile.to_str().unwrap()],
        "privacy",
        &["gateway.log", "an IPv4 address"],
    );

    // Operation logs: one "deleted" by an event while its key stays readable, one left open.
    rt.block_on(async {
        use std::sync::Arc;
        let log = SledLog::open(std::path::Path::new(c)).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(hotaru_actors::SystemClock);
        let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(hotaru_actors::RandomIds::default());
        let kept = hotaru_server::support::receive(&log, &clock, &ids, b"09:00 check ok")
            .await
            .unwrap();
        hotaru_server::support::receive(&log, &clock, &ids, b"10:00 check ok")
            .await
            .unwrap();
        let now = clock.now();
        let ev = NewEvent::new(
            ids.next_id(now),
            now,
            DomainEvent::OperationLogDeleted(hotaru_events::domain::OperationLogDeleted {
                log_id: kept,
            }),
        );
        log.append(
            hotaru_server::support::oplog_stream(kept),
            ExpectedVersion::Exact(1),
            vec![ev],
        )
        .await
        .unwrap();
    });
    let (code, r) = audit(&["--data-dir", c]);
    assert_eq!(code, Some(1));
    let f = findings(&r, "retention");
    assert!(
        f.iter()
            .any(|f| f.contains("was deleted (OperationLogDeleted) but its key is still readable")),
        "{f:?}"
    );

    // An expired day left unshredded: audited 20 days later, nothing has destroyed it.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(20 * 24);
    let (f, _) = fails_with(
        &["--data-dir", c, "--at", &later.to_string()],
        "retention",
        &["keys of"],
    );
    assert!(
        f.iter()
            .any(|f| f.contains("is past its retention and not deleted")),
        "{f:?}"
    );
}

/// After retention has shredded the demo's day, its batch can no longer be rebuilt: the
/// audit checks it by its recorded hashes and signatures and says so; nothing past
/// retention is readable, and the chain still verifies.
#[test]
fn a_shredded_batch_is_checked_by_its_hashes_and_signatures() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    demo(&["--data-dir", d]);
    let later = hotaru_actors::SystemClock.now().0 + 20 * 86_400_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shredded = rt.block_on(async {
        use hotaru_log::SideStore;
        let log = SledLog::open(&data).unwrap();
        let secret = log
            .side_get("server", "digest-secret")
            .await
            .unwrap()
            .unwrap();
        let secret = hex::decode(secret).unwrap();
        let keys =
            hotaru_server::DayKeys::new(log.clone(), &secret, Arc::new(OsRandom::new())).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(hotaru_actors::ManualClock::at(
            hotaru_events::UnixMillis(later),
        ));
        let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(hotaru_actors::RandomIds::default());
        hotaru_server::retention::expire(&log, &keys, &clock, &ids, 14)
            .await
            .unwrap()
    });
    assert!(!shredded.is_empty());
    let at = jiff::Timestamp::from_millisecond(later as i64)
        .unwrap()
        .to_string();
    let (code, r) = audit(&["--data-dir", d, "--at", &at]);
    all_pass(&r);
    assert_eq!(code, Some(0));
    let batches = check_of(&r, "batches")["evidence"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        batches.contains("0 rebuilt byte for byte") && batches.contains("1 hold shredded keys"),
        "{batches}"
    );
    let retention = check_of(&r, "retention")["evidence"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(retention.contains("0 days' keys held"), "{retention}");
    assert!(
        retention.contains("days shredded (RetentionExpired)"),
        "{retention}"
    );
}
