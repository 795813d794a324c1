//! Batches end to end on sled and on a real nats-server: confirm → issue → redeem → sign →
//! the export verifies with the logged public key and holds exactly the expected keys
//! (infectious-period filter and 2-hour hold applied), padding included; key rotation;
//! two signers at once publish every key exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use hotaru_actors::{ManualClock, RandomIds};
use hotaru_domain::limiter::LimiterPolicy;
use hotaru_domain::policy::{DAY_MS, RegistrationPolicy};
use hotaru_domain::upload::SubmittedKey;
use hotaru_events::domain::{CaseBasis, CentreId, Day};
use hotaru_events::{Clock, Context, UnixMillis};
use hotaru_log::{AnyLog, EventLog, NatsConfig, NatsLog, SledLog};
use hotaru_protocol::export::{ReadLimits, read_zip};
use hotaru_protocol::random::OsRandom;
use hotaru_server::batch::BatchPolicy;
use hotaru_server::signing::{add_signing_key, verification_keys};
use hotaru_server::{BatchError, DayKeys, Distribution, Redemption, Registration};
use hotaru_test_support::NatsServer;

const TODAY: u32 = 20_400;
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

struct Node {
    reg: Registration<AnyLog>,
    dist: Distribution<AnyLog>,
}

fn node(log: &AnyLog, clock: &ManualClock) -> Node {
    let keys = DayKeys::new(log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap();
    let ids = Arc::new(RandomIds::default());
    Node {
        reg: Registration::new(
            log.clone(),
            keys.clone(),
            Arc::new(clock.clone()),
            ids.clone(),
            RegistrationPolicy::default(),
            LimiterPolicy::default(),
        ),
        dist: Distribution::new(
            log.clone(),
            keys,
            Arc::new(clock.clone()),
            ids,
            BatchPolicy {
                min_keys: 50,
                ..BatchPolicy::default()
            },
            4,
        ),
    }
}

async fn open(nats: bool) -> (AnyLog, Box<dyn std::any::Any + Send>, Option<String>) {
    if nats {
        let server = NatsServer::start();
        let url = server.url();
        let log = NatsLog::connect(&NatsConfig::new(&url)).await.unwrap();
        (AnyLog::Nats(log), Box::new(server), Some(url))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        (AnyLog::Sled(log), Box::new(dir), None)
    }
}

fn key(seed: u8, day: u32) -> SubmittedKey {
    SubmittedKey {
        key_data: vec![seed; 16],
        rolling_start: day * 144,
        rolling_period: 144,
        transmission_risk: None,
        report_type: None,
        days_since_onset: None,
    }
}

async fn register(n: &Node, keys: Vec<SubmittedKey>) {
    let case = n
        .reg
        .confirm_case(CentreId(1), CaseBasis::SymptomOnset(Day(TODAY - 3)))
        .await
        .unwrap();
    let number = n.reg.issue_number(CentreId(1), case).await.unwrap().number;
    n.reg
        .redeem(Redemption {
            number: number.as_str().to_owned(),
            keys,
            ..Redemption::default()
        })
        .await
        .unwrap();
}

/// The keys of every file at `paths`, verified with the logged public keys.
async fn published(n: &Node, log: &AnyLog, paths: &[String]) -> Vec<[u8; 16]> {
    let vkeys = verification_keys(log, "440").await.unwrap();
    let mut out = Vec::new();
    for p in paths {
        let zip = n.dist.file(p).await.unwrap().expect("published file");
        let e = read_zip(&zip, ReadLimits::default()).unwrap();
        e.verify(&vkeys).expect("verifies with the logged key");
        assert!(e.file.keys_sorted());
        out.extend(e.file.keys.iter().map(|k| *k.tek.as_bytes()));
    }
    out
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sled { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(false).await } )* }
        mod nats { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(true).await } )* }
    };
}

on_both_backends!(
    batches_publish_exactly_the_releasable_keys,
    two_signers_publish_every_key_once,
    a_region_code_that_is_not_three_bytes_is_refused,
    the_signer_reads_the_uploads_from_its_checkpoint,
);

/// The positions of uploads the signer's checkpoint lists as not wholly published, and the
/// registration position it scanned through.
async fn signer_checkpoint(log: &AnyLog) -> (u64, Vec<u64>) {
    let cp = log
        .load_checkpoint("signer-440")
        .await
        .unwrap()
        .expect("a checkpoint");
    let (version, body) = hotaru_events::versioned::split(&cp.state);
    assert_eq!(version, 1);
    let (pending, _): (Vec<u64>, _) =
        bincode::serde::decode_from_slice(body, bincode::config::standard()).unwrap();
    (cp.position, pending)
}

/// The signer consumes uploads from its checkpoint: it keeps the positions of uploads
/// with keys still held, reads those and what came after, and publishes every key once,
/// also when the checkpoint lags behind (a crash, another node).
async fn the_signer_reads_the_uploads_from_its_checkpoint(nats: bool) {
    let (log, _keep, _) = open(nats).await;
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    let n = node(&log, &clock);
    add_signing_key(&log, "440", 440, clock.now(), &RandomIds::default())
        .await
        .unwrap();
    // A: yesterday's key, releasable now. B: today's, held until after today.
    register(&n, vec![key(1, TODAY - 1)]).await;
    register(&n, vec![key(2, TODAY)]).await;
    let b1 = n.dist.sign_batch().await.unwrap().unwrap();
    let keys = published(&n, &log, &b1.files).await;
    assert!(keys.contains(&[1; 16]) && !keys.contains(&[2; 16]));
    let (scanned, pending) = signer_checkpoint(&log).await;
    assert_eq!(scanned, log.head(Context::Registration).await.unwrap());
    assert_eq!(
        pending.len(),
        1,
        "only B's upload is still to publish: {pending:?}"
    );
    // A day later B is released, with a new upload C.
    clock.advance_millis(DAY_MS);
    register(&n, vec![key(3, TODAY)]).await;
    let b2 = n.dist.sign_batch().await.unwrap().unwrap();
    let keys = published(&n, &log, &b2.files).await;
    assert!(keys.contains(&[2; 16]) && keys.contains(&[3; 16]) && !keys.contains(&[1; 16]));
    assert!(signer_checkpoint(&log).await.1.is_empty());
    // A checkpoint that lags (from before any batch): still nothing published twice.
    log.save_checkpoint(
        "signer-440",
        &hotaru_log::Checkpoint {
            position: 0,
            state: hotaru_events::versioned::wrap(1, &[0]),
        },
    )
    .await
    .unwrap();
    clock.advance_millis(60_000);
    register(&n, vec![key(4, TODAY)]).await;
    let b3 = n.dist.sign_batch().await.unwrap().unwrap();
    let keys = published(&n, &log, &b3.files).await;
    assert!(keys.contains(&[4; 16]));
    assert!(![[1; 16], [2; 16], [3; 16]].iter().any(|k| keys.contains(k)));
}

/// A region that an export cannot hold is refused with its reason, before anything is
/// signed or stored (it used to become "440" silently).
async fn a_region_code_that_is_not_three_bytes_is_refused(nats: bool) {
    let (log, _keep, _) = open(nats).await;
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    for bad in ["4400", "44", "", "4 0"] {
        let policy = BatchPolicy {
            region: bad.into(),
            ..BatchPolicy::default()
        };
        let e = policy.validate().unwrap_err();
        assert!(e.contains("three"), "{e}");
        let dist = Distribution::new(
            log.clone(),
            DayKeys::new(log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap(),
            Arc::new(clock.clone()),
            Arc::new(RandomIds::default()),
            policy,
            4,
        );
        assert!(matches!(
            dist.sign_batch().await,
            Err(BatchError::InvalidPolicy(_))
        ));
    }
    assert!(BatchPolicy::default().validate().is_ok());
    let head = log
        .head(hotaru_events::Context::Distribution)
        .await
        .unwrap();
    assert_eq!(head, 0, "nothing was recorded");
}

async fn batches_publish_exactly_the_releasable_keys(nats: bool) {
    let (log, _keep, _) = open(nats).await;
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    let n = node(&log, &clock);
    assert_eq!(
        n.dist.sign_batch().await.unwrap(),
        None,
        "nothing to publish yet"
    );
    register(
        &n,
        vec![
            key(1, TODAY - 1),
            key(2, TODAY - 4),
            key(3, TODAY - 8),
            key(4, TODAY),
        ],
    )
    .await;
    // No signing key yet: a clear error.
    assert_eq!(
        n.dist.sign_batch().await.unwrap_err(),
        BatchError::NoSigningKey("440".into())
    );
    let now = clock.now();
    add_signing_key(&log, "440", 440, now, &RandomIds::default())
        .await
        .unwrap();

    let b1 = n.dist.sign_batch().await.unwrap().unwrap();
    assert_eq!((b1.batch_id, b1.key_count, b1.padding_count), (1, 2, 48));
    let keys = published(&n, &log, &b1.files).await;
    assert_eq!(keys.len(), 50, "padded to the minimum");
    assert!(keys.contains(&[1; 16]) && keys.contains(&[2; 16]));
    assert!(
        !keys.contains(&[3; 16]),
        "before the infectious period: never published"
    );
    assert!(!keys.contains(&[4; 16]), "today's key is held");
    assert_eq!(n.dist.sign_batch().await.unwrap(), None);

    // Two hours after today's key expired it is released, in the next batch, once.
    clock.set(UnixMillis(
        u64::from(TODAY + 1) * DAY_MS + 2 * 3_600_000 - 1,
    ));
    assert_eq!(
        n.dist.sign_batch().await.unwrap(),
        None,
        "not a millisecond early"
    );
    clock.advance_millis(1);
    // A rotation: the old key keeps signing beside the new one.
    let now = clock.now();
    add_signing_key(&log, "440", 440, now, &RandomIds::default())
        .await
        .unwrap();
    let b2 = n.dist.sign_batch().await.unwrap().unwrap();
    assert_eq!(b2.key_count, 1);
    let keys2 = published(&n, &log, &b2.files).await;
    assert!(keys2.contains(&[4; 16]));
    assert!(!keys2.contains(&[1; 16]), "never published twice");
    let zip = n.dist.file(&b2.files[0]).await.unwrap().unwrap();
    assert_eq!(
        read_zip(&zip, ReadLimits::default())
            .unwrap()
            .signatures
            .len(),
        2
    );
    assert_eq!(
        n.dist.index().await.unwrap(),
        [b1.files.clone(), b2.files.clone()].concat()
    );
}

async fn two_signers_publish_every_key_once(nats: bool) {
    let (log, _keep, url) = open(nats).await;
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    let a = node(&log, &clock);
    // On NATS the second signer is another client, as another node would be.
    let log_b = match &url {
        Some(u) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(u)).await.unwrap()),
        None => log.clone(),
    };
    let b = node(&log_b, &clock);
    let now = clock.now();
    add_signing_key(&log, "440", 440, now, &RandomIds::default())
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut seed = 1u8;
    for round in 0..4 {
        for _ in 0..3 {
            let ks: Vec<_> = (0..2)
                .map(|d| {
                    seed += 1;
                    key(seed, TODAY - 1 - d)
                })
                .collect();
            expected.extend(
                ks.iter()
                    .map(|k| <[u8; 16]>::try_from(&k.key_data[..]).unwrap()),
            );
            register(&a, ks).await;
        }
        clock.advance_millis(60_000);
        let (ra, rb) = tokio::join!(a.dist.sign_batch(), b.dist.sign_batch());
        let outcomes: Vec<_> = [ra, rb].into_iter().collect();
        let published_now = outcomes.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        assert!(published_now >= 1, "round {round}: {outcomes:?}");
        for r in &outcomes {
            assert!(matches!(r, Ok(_) | Err(BatchError::Fenced)), "{r:?}");
        }
    }
    let index = a.dist.index().await.unwrap();
    let keys = published(&a, &log, &index).await;
    let mut counts: HashMap<[u8; 16], usize> = HashMap::new();
    for k in keys {
        *counts.entry(k).or_default() += 1;
    }
    for k in &expected {
        assert_eq!(counts.get(k), Some(&1), "key {:?} published once", k[0]);
    }
}

macro_rules! on_both_backends_retention {
    ($($name:ident),*) => {
        mod retention_sled { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(false).await } )* }
        mod retention_nats { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(true).await } )* }
    };
}
on_both_backends_retention!(retention_shreds_old_days_and_the_chain_still_verifies);

async fn retention_shreds_old_days_and_the_chain_still_verifies(nats: bool) {
    use hotaru_events::{ChainVerifier, Context};
    use hotaru_log::EventLog;
    let (log, _keep, _) = open(nats).await;
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    let n = node(&log, &clock);
    register(&n, vec![key(1, TODAY - 1)]).await;
    let now = clock.now();
    add_signing_key(&log, "440", 440, now, &RandomIds::default())
        .await
        .unwrap();
    assert!(n.dist.sign_batch().await.unwrap().is_some());
    let keys = DayKeys::new(log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap();
    let clock_dyn: Arc<dyn hotaru_events::Clock> = Arc::new(clock.clone());
    let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(RandomIds::default());
    // Day 13 after: still kept.
    clock.advance_millis(13 * DAY_MS);
    let shredded = hotaru_server::retention::expire(&log, &keys, &clock_dyn, &ids, 14)
        .await
        .unwrap();
    assert!(shredded.is_empty());
    assert_eq!(
        hotaru_server::batch::uploaded_keys(&log, &keys, u64::MAX)
            .await
            .unwrap()
            .len(),
        1
    );
    // Day 14 after: the day's keys are destroyed.
    clock.advance_millis(DAY_MS);
    let shredded = hotaru_server::retention::expire(&log, &keys, &clock_dyn, &ids, 14)
        .await
        .unwrap();
    assert_eq!(shredded, [Day(TODAY)]);
    assert!(keys.get(Day(TODAY)).await.unwrap().is_none());
    // A fresh process (no cache) cannot read the uploaded keys any more ...
    let fresh = DayKeys::new(log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap();
    assert!(
        hotaru_server::batch::uploaded_keys(&log, &fresh, u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    // ... nor is anything published again ...
    assert_eq!(n.dist.sign_batch().await.unwrap(), None);
    // ... running it again records nothing new ...
    assert!(
        hotaru_server::retention::expire(&log, &keys, &clock_dyn, &ids, 14)
            .await
            .unwrap()
            .is_empty()
    );
    // ... and every context's hash chain still verifies.
    for ctx in Context::ALL {
        let mut v = ChainVerifier::new(ctx);
        for c in log.read_all(ctx, 1, 100_000).await.unwrap() {
            v.feed(c.position, &c.frame).unwrap();
        }
        assert_eq!(v.commits(), log.head(ctx).await.unwrap());
    }
}

mod support_logs {
    use super::*;
    use hotaru_server::support;

    async fn logs_are_unreadable_once_closed(nats: bool) {
        let (log, _keep, _) = open(nats).await;
        let clock: Arc<dyn hotaru_events::Clock> =
            Arc::new(ManualClock::at(UnixMillis(1_750_000_000_000)));
        let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(RandomIds::default());
        let content = b"12:00 exposure check ok; 12:05 download failed (timeout)";
        let id = support::receive(&log, &clock, &ids, content).await.unwrap();
        assert_eq!(
            support::read(&log, id).await.unwrap().as_deref(),
            Some(&content[..])
        );
        assert!(support::close(&log, &clock, &ids, id).await.unwrap());
        assert_eq!(support::read(&log, id).await.unwrap(), None);
        assert!(
            !support::close(&log, &clock, &ids, id).await.unwrap(),
            "closed once"
        );
        // The stored bytes never held the content in the clear.
        use hotaru_log::EventLog;
        for c in log.read_stream(&support::oplog_stream(id)).await.unwrap() {
            assert!(!c.frame.windows(14).any(|w| w == b"exposure check"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled() {
        logs_are_unreadable_once_closed(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats() {
        logs_are_unreadable_once_closed(true).await;
    }
}
