//! Record, then act (docs/runtime-semantics.md): a process is killed between recording an
//! intent and acting on it, and the next run finishes the job with the event present, once.
//! - `hotaru retention` between RetentionExpired / OperationLogDeleted and destroying the
//!   key;
//! - `hotaru demo` between a batch's BatchSigned + BatchPublished and storing its zips:
//!   `hotaru serve` rebuilds them at start and serves the exact files the batch recorded.
//!
//! On the embedded store and on a real nats-server.

mod common;

use std::sync::Arc;

use common::get_text;
use hotaru_actors::{IdSource, ManualClock, RandomIds};
use hotaru_domain::sealing::{DAY_KEYS, OPLOG_KEYS, day_key_name};
use hotaru_events::domain::{Day, LogId};
use hotaru_events::{Clock, DomainEvent, UnixMillis};
use hotaru_log::{EventLog, NatsConfig, NatsLog, SideStore, SledLog};
use hotaru_server::daykeys::DayKeys;
use hotaru_server::retention::retention_stream;
use hotaru_server::support;
use hotaru_test_support::NatsServer;
use hotaru_test_support::hotaru::{hotaru, spawn_serve, stdout, wait_until_serving};

const SECRET: &str = "7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
/// 2024-10-04: the day whose key and operation log are made.
const DAY: u32 = 20_000;
/// Twenty days later, past the 14 days of retention.
const LATER: &str = "2024-10-24T12:00:00Z";

async fn seed<L: EventLog + SideStore + Clone>(log: &L) -> LogId {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(UnixMillis(
        u64::from(DAY) * 86_400_000 + 3_600_000,
    )));
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    let keys = DayKeys::new(log.clone(), &hex::decode(SECRET).unwrap(), ids.random()).unwrap();
    keys.get_or_create(Day(DAY)).await.unwrap();
    support::receive(log, &clock, &ids, b"12:00 exposure check ok")
        .await
        .unwrap()
}

/// (RetentionExpired events of the day, day key still held, OperationLogDeleted events of
/// the log, the log's key still held)
async fn state<L: EventLog + SideStore>(log: &L, id: LogId) -> (usize, bool, usize, bool) {
    let count = |commits: Vec<hotaru_log::RecordedCommit>, f: fn(&DomainEvent) -> bool| {
        commits
            .iter()
            .flat_map(|c| c.commit.envelopes().flatten().collect::<Vec<_>>())
            .filter(|e| f(&e.event))
            .count()
    };
    let expired = count(
        log.read_stream(&retention_stream(Day(DAY))).await.unwrap(),
        |e| matches!(e, DomainEvent::RetentionExpired(_)),
    );
    let deleted = count(
        log.read_stream(&support::oplog_stream(id)).await.unwrap(),
        |e| matches!(e, DomainEvent::OperationLogDeleted(_)),
    );
    let day_key = log
        .side_get(DAY_KEYS, &day_key_name(Day(DAY)))
        .await
        .unwrap()
        .is_some();
    let log_key = log
        .side_get(OPLOG_KEYS, &hex::encode(id.0))
        .await
        .unwrap()
        .is_some();
    (expired, day_key, deleted, log_key)
}

/// Runs `hotaru retention` on `store`, crashing at `crash_at` if given; returns stdout.
fn retention(store: &[&str], crash_at: Option<&str>) -> String {
    let mut cmd = hotaru();
    cmd.args(["retention", "--at", LATER])
        .args(store)
        .env("HOTARU_DIGEST_SECRET", SECRET);
    if let Some(point) = crash_at {
        cmd.env("HOTARU_CRASH_AT", point);
    }
    let out = cmd.output().expect("run hotaru retention");
    let err = String::from_utf8_lossy(&out.stderr);
    match crash_at {
        Some(point) => {
            assert!(!out.status.success(), "did not crash at {point}: {err}");
            assert!(err.contains(&format!("HOTARU_CRASH_AT={point}")), "{err}");
        }
        None => assert!(out.status.success(), "retention failed: {err}"),
    }
    stdout(&out)
}

/// The three runs and what each leaves; `check` opens the store and reads its state.
async fn killed_between_record_and_act<F, Fut>(store: &[&str], check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (usize, bool, usize, bool)>,
{
    assert_eq!(check().await, (0, true, 0, true), "before");
    // Killed after RetentionExpired is recorded, before the day key is destroyed.
    retention(store, Some("retention.recorded"));
    assert_eq!(check().await, (1, true, 0, true), "after the first kill");
    // The next run finishes the day, then is killed after OperationLogDeleted is recorded.
    retention(store, Some("oplog.recorded"));
    assert_eq!(check().await, (1, false, 1, true), "after the second kill");
    // The last run finishes the log's deletion; no event is recorded twice.
    let out = retention(store, None);
    assert!(
        out.contains("retention 14 days: 0 day(s) shredded"),
        "{out}"
    );
    assert_eq!(check().await, (1, false, 1, false), "after the restart");
}

#[tokio::test]
async fn a_kill_between_intent_and_effect_is_finished_by_the_next_run_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let log = SledLog::open(dir.path()).unwrap();
        seed(&log).await
    };
    let path = dir.path().to_str().unwrap().to_owned();
    let check = || async {
        let log = SledLog::open(dir.path()).unwrap();
        state(&log, id).await
    };
    killed_between_record_and_act(&["--data-dir", &path], check).await;
}

#[tokio::test]
async fn a_kill_between_intent_and_effect_is_finished_by_the_next_run_on_nats() {
    let server = NatsServer::start();
    let url = server.url();
    let log = NatsLog::connect(&NatsConfig::new(&url)).await.unwrap();
    let id = seed(&log).await;
    let check = || state(&log, id);
    killed_between_record_and_act(&["--nats", &url], check).await;
}

/// (files the batch recorded, those of them stored)
async fn published<L: EventLog + SideStore>(log: &L) -> (Vec<[u8; 32]>, usize) {
    let (done, _) = hotaru_server::batch::batches(log, "440").await.unwrap();
    assert_eq!(done.len(), 1, "one batch recorded");
    let blobs = done[0].published.blobs.clone();
    let mut stored = 0;
    for b in &blobs {
        stored += usize::from(log.blob_exists(&hex::encode(b)).await.unwrap());
    }
    (blobs, stored)
}

/// Kills `hotaru demo --cases 3` after its batch is recorded; `hotaru serve` then stores
/// the zips and serves them byte for byte as recorded.
async fn a_batch_killed_before_its_zips_is_finished_by_serve<F, Fut>(store: &[&str], check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Vec<[u8; 32]>, usize)>,
{
    let out = hotaru()
        .args(["demo", "--cases", "3"])
        .args(store)
        .env("HOTARU_DIGEST_SECRET", SECRET)
        .env("HOTARU_CRASH_AT", "batch.recorded")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HOTARU_CRASH_AT=batch.recorded"),
        "{err}"
    );
    let (blobs, stored) = check().await;
    assert!(!blobs.is_empty());
    assert_eq!(stored, 0, "killed before any zip was stored");

    let port = hotaru_test_support::free_port();
    let mut cmd = hotaru();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(store)
        .env("HOTARU_DIGEST_SECRET", SECRET);
    let (mut child, lines) = spawn_serve(cmd);
    wait_until_serving(&lines);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let index = get_text(&http, &format!("{base}/exports/index.txt")).await;
    let paths: Vec<&str> = index.lines().collect();
    assert_eq!(paths.len(), blobs.len(), "{index}");
    for (path, sha) in paths.iter().zip(&blobs) {
        let r = http.get(format!("{base}/{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.bytes().await.unwrap();
        let got = ring::digest::digest(&ring::digest::SHA256, &body);
        assert_eq!(
            got.as_ref(),
            sha,
            "{path} is not the file the batch recorded"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let (_, stored) = check().await;
    assert_eq!(stored, blobs.len());
}

#[tokio::test]
async fn a_batch_killed_before_its_zips_is_finished_by_serve_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let check = || async {
        let log = SledLog::open(dir.path()).unwrap();
        published(&log).await
    };
    a_batch_killed_before_its_zips_is_finished_by_serve(&["--data-dir", &path], check).await;
}

#[tokio::test]
async fn a_batch_killed_before_its_zips_is_finished_by_serve_on_nats() {
    let server = NatsServer::start();
    let url = server.url();
    let log = NatsLog::connect(&NatsConfig::new(&url)).await.unwrap();
    let check = || published(&log);
    a_batch_killed_before_its_zips_is_finished_by_serve(&["--nats", &url], check).await;
}
