//! The actor runtime on both backends: checkpointed projections resume exactly, panics
//! restart actors without taking the process down, aggregates guard their streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use hotaru_actors::{
    AggregateActor, Arbiters, CommandMeta, Execute, ExecuteError, GetProjection, ManualClock,
    Projection, ProjectionActor, RandomIds,
};
use hotaru_domain::Aggregate;
use hotaru_domain::number::{NumberCommand, NumberError, NumberState, number_stream};
use hotaru_events::domain::{
    CaseId, CentreId, DiagnosisKey, RejectionReason, UploadedKey, UploadedKeys,
};
use hotaru_events::{Context as LogContext, DomainEvent, NumberDigest, UnixMillis};
use hotaru_log::conformance::{demo_event, demo_stream};
use hotaru_log::{AnyLog, Backend, EventLog, ExpectedVersion, NatsConfig, RecordedCommit};
use hotaru_test_support::NatsServer;
use serde::{Deserialize, Serialize};

/// Keeps whatever the backend needs alive (a temp dir or a nats-server).
enum Store {
    Sled(tempfile::TempDir),
    Nats(NatsServer),
}

impl Store {
    fn new(nats: bool) -> Self {
        if nats {
            Store::Nats(NatsServer::start())
        } else {
            Store::Sled(tempfile::tempdir().unwrap())
        }
    }

    fn backend(&self) -> Backend {
        match self {
            Store::Sled(d) => Backend::Embedded(d.path().to_owned()),
            Store::Nats(s) => Backend::Nats(NatsConfig::new(s.url())),
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Debug)]
struct Totals {
    count: u64,
    sum: u64,
}

/// Counts demo events and sums their sequence numbers; panics once at `panic_at`.
struct Counter {
    panic_at: Option<u64>,
    panicked: Arc<AtomicBool>,
}

impl Projection for Counter {
    type State = Totals;

    fn name(&self) -> &str {
        "counter"
    }

    fn context(&self) -> LogContext {
        LogContext::Demo
    }

    fn apply(&self, state: &mut Totals, commit: &RecordedCommit) {
        for e in commit.commit.envelopes() {
            if let DomainEvent::DemoRecorded(d) = e.unwrap().event {
                state.count += 1;
                state.sum += d.seq;
                if Some(d.seq) == self.panic_at && !self.panicked.swap(true, Ordering::SeqCst) {
                    panic!("injected failure at {}", d.seq);
                }
            }
        }
    }
}

async fn append_demo(log: &AnyLog, range: std::ops::Range<u64>) {
    for n in range {
        log.append(
            demo_stream(&format!("p{}", n % 3)),
            ExpectedVersion::Any,
            vec![demo_event(n)],
        )
        .await
        .unwrap();
    }
}

async fn wait_for(addr: &Addr<ProjectionActor<Counter, AnyLog>>, position: u64) -> Totals {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(snap) = addr.send(GetProjection::default()).await
            && snap.position >= position
        {
            assert_eq!(snap.position, position);
            return snap.state;
        }
        assert!(
            Instant::now() < deadline,
            "projection did not reach {position}"
        );
        actix::clock::sleep(Duration::from_millis(20)).await;
    }
}

fn totals(n: u64) -> Totals {
    Totals {
        count: n,
        sum: (0..n).sum(),
    }
}

fn projection_resumes_exactly(nats: bool) {
    let store = Store::new(nats);
    let backend = store.backend();
    let flag = Arc::new(AtomicBool::new(false));
    {
        let sys = System::new();
        let (b, f) = (backend.clone(), flag.clone());
        sys.block_on(async move {
            let log = b.open().await.unwrap();
            append_demo(&log, 0..500).await;
            let counter = Counter {
                panic_at: None,
                panicked: f,
            };
            let addr =
                Supervisor::start(move |_| ProjectionActor::new(counter, log).checkpoint_every(64));
            assert_eq!(wait_for(&addr, 500).await, totals(500));
        });
    }
    // A new process: the checkpoint may lag behind what was applied; what was applied
    // after it is re-applied exactly once, from the checkpointed state.
    let sys = System::new();
    sys.block_on(async move {
        let log = backend.open().await.unwrap();
        append_demo(&log, 500..600).await;
        let counter = Counter {
            panic_at: None,
            panicked: flag,
        };
        let for_actor = log.clone();
        let addr = Supervisor::start(move |_| {
            ProjectionActor::new(counter, for_actor).checkpoint_every(64)
        });
        assert_eq!(wait_for(&addr, 600).await, totals(600));
        append_demo(&log, 600..650).await;
        assert_eq!(wait_for(&addr, 650).await, totals(650));
    });
}

#[test]
fn sled_projection_resumes_from_its_checkpoint_exactly() {
    projection_resumes_exactly(false);
}

#[test]
fn nats_projection_resumes_from_its_checkpoint_exactly() {
    projection_resumes_exactly(true);
}

/// Runs `f` in a System on a fresh store that holds 300 demo events.
fn on_300_demo_events<Fut: std::future::Future<Output = ()>>(
    nats: bool,
    f: impl FnOnce(AnyLog) -> Fut,
) {
    let store = Store::new(nats);
    let backend = store.backend();
    System::new().block_on(async move {
        let log = backend.open().await.unwrap();
        append_demo(&log, 0..300).await;
        f(log).await;
    });
}

fn panicking_projection_restarts(nats: bool) {
    on_300_demo_events(nats, |log| async move {
        let panicked = Arc::new(AtomicBool::new(false));
        let counter = Counter {
            panic_at: Some(137),
            panicked: panicked.clone(),
        };
        let addr =
            Supervisor::start(move |_| ProjectionActor::new(counter, log).checkpoint_every(50));
        // The panic at 137 discards what was applied since the checkpoint at 100; the
        // restarted actor resumes from there and ends with exact totals.
        assert_eq!(wait_for(&addr, 300).await, totals(300));
        assert!(panicked.load(Ordering::SeqCst), "the failure was injected");
    });
}

#[test]
fn sled_a_panicking_projection_is_restarted_and_ends_exact() {
    panicking_projection_restarts(false);
}

#[test]
fn nats_a_panicking_projection_is_restarted_and_ends_exact() {
    panicking_projection_restarts(true);
}

fn key() -> DiagnosisKey {
    DiagnosisKey {
        tek: hotaru_protocol::Tek::from_bytes([4; 16]),
        rolling_start: hotaru_protocol::EnIntervalNumber(2_650_000),
        rolling_period: 144,
        transmission_risk_level: 4,
        report_type: hotaru_protocol::ReportType::ConfirmedTest,
        days_since_onset: Some(0),
    }
}

fn number_actors_guard_redemption(nats: bool) {
    let store = Store::new(nats);
    let backend = store.backend();
    let sys = System::new();
    sys.block_on(async move {
        let log = backend.open().await.unwrap();
        let clock = ManualClock::at(UnixMillis(1_000));
        let arbiters = Arbiters::new(2);
        let actors: Vec<_> = (0..2)
            .map(|_| {
                let (log, clock) = (log.clone(), clock.clone());
                arbiters.start(move |_| {
                    AggregateActor::<NumberState, _>::new(
                        log,
                        Arc::new(clock),
                        Arc::new(RandomIds::default()),
                    )
                })
            })
            .collect();
        let digest = NumberDigest([7; 32]);
        let stream = number_stream(&digest);
        let exec = |cmd: NumberCommand| Execute::<NumberState> {
            stream: stream.clone(),
            command: cmd,
            meta: CommandMeta::default(),
        };
        let issued = actors[0]
            .send(exec(NumberCommand::Issue {
                case_id: CaseId([1; 16]),
                centre_id: CentreId(1),
                digest,
                now: UnixMillis(1_000),
                expires_at: UnixMillis(10_000),
            }))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(issued.first_version, 1);
        // Ten redemptions race through two actors on two arbiters: exactly one wins.
        let mut replies = Vec::new();
        for i in 0..10 {
            replies.push(actors[i % 2].send(exec(NumberCommand::Redeem {
                digest,
                now: UnixMillis(2_000),
                idempotency: Some([i as u8; 32]),
                submitted: 1,
                keys: UploadedKeys::Plain(vec![UploadedKey {
                    key: key(),
                    release_at: UnixMillis(2_000),
                }]),
                accepted: 1,
                dropped: vec![],
            })));
        }
        let mut wins = 0;
        for r in replies {
            match r.await.unwrap() {
                Ok(a) => {
                    assert_eq!((a.first_version, a.last_version), (2, 3));
                    wins += 1;
                }
                Err(ExecuteError::Domain(NumberError::Rejected(RejectionReason::AlreadyUsed))) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins, 1);
        let events: Vec<_> = log
            .read_stream(&stream)
            .await
            .unwrap()
            .iter()
            .flat_map(|c| {
                c.commit
                    .envelopes()
                    .map(|e| e.unwrap().event_type.name())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            events,
            [
                "ProcessingNumberIssued",
                "ProcessingNumberRedeemed",
                "DiagnosisKeysUploaded"
            ]
        );
        drop(actors);
        arbiters.stop();
    });
}

#[test]
fn sled_number_redemption_is_single_use_across_actors() {
    number_actors_guard_redemption(false);
}

#[test]
fn nats_number_redemption_is_single_use_across_actors() {
    number_actors_guard_redemption(true);
}

/// An aggregate whose decide panics on command `true`.
#[derive(Clone, Default)]
struct Fragile;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Fragile {
    type Command = bool;
    type Error = Never;

    fn decide(&self, explode: &bool) -> Result<Vec<DomainEvent>, Never> {
        assert!(!explode, "injected failure");
        Ok(vec![demo_event(1).event])
    }

    fn apply(&mut self, _: &DomainEvent) {}
}

#[test]
fn a_panic_in_a_handler_answers_crashed_and_the_actor_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Embedded(dir.path().to_owned());
    let sys = System::new();
    sys.block_on(async move {
        let log = backend.open().await.unwrap();
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let addr = Supervisor::start(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            AggregateActor::<Fragile, _>::new(
                log,
                Arc::new(ManualClock::default()),
                Arc::new(RandomIds::default()),
            )
        });
        let exec = |explode| Execute::<Fragile> {
            stream: demo_stream("fragile"),
            command: explode,
            meta: CommandMeta::default(),
        };
        // Queue a good command behind the bad one: it survives the restart.
        let bad = addr.send(exec(true));
        let good = addr.send(exec(false));
        assert!(matches!(bad.await.unwrap(), Err(ExecuteError::Crashed(_))));
        assert_eq!(good.await.unwrap().unwrap().first_version, 1);
        assert_eq!(
            starts.load(Ordering::SeqCst),
            1,
            "the supervisor restarts the same actor in place"
        );
    });
}

struct WhereAmI;

impl Actor for WhereAmI {
    type Context = Context<Self>;
}

impl Supervised for WhereAmI {}

#[derive(Message)]
#[rtype(result = "std::thread::ThreadId")]
struct Thread;

impl Handler<Thread> for WhereAmI {
    type Result = MessageResult<Thread>;

    fn handle(&mut self, _: Thread, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::thread::current().id())
    }
}

#[test]
fn actors_are_spread_over_one_arbiter_per_core() {
    let sys = System::new();
    sys.block_on(async {
        let arbiters = Arbiters::new(2);
        let a = arbiters.start(|_| WhereAmI);
        let b = arbiters.start(|_| WhereAmI);
        let c = arbiters.start(|_| WhereAmI);
        let (ta, tb, tc) = (
            a.send(Thread).await.unwrap(),
            b.send(Thread).await.unwrap(),
            c.send(Thread).await.unwrap(),
        );
        assert_ne!(ta, tb);
        assert_eq!(ta, tc, "round robin");
        assert_ne!(ta, std::thread::current().id());
        arbiters.stop();
    });
}

/// A checkpoint of another state version is set aside: the projection rebuilds from the
/// start of its context instead of decoding bytes of another shape (ADR 0005).
fn a_checkpoint_of_another_state_version_is_rebuilt(nats: bool) {
    on_300_demo_events(nats, |log| async move {
        // Version 7 of a state this code does not know, claiming position 200.
        let stale = hotaru_log::Checkpoint {
            position: 200,
            state: hotaru_events::versioned::wrap(7, b"of another shape"),
        };
        log.save_checkpoint("counter", &stale).await.unwrap();
        let counter = Counter {
            panic_at: None,
            panicked: Arc::default(),
        };
        let for_actor = log.clone();
        let addr = Supervisor::start(move |_| ProjectionActor::new(counter, for_actor));
        // Every commit counted once: rebuilt from position 1, not resumed from 200.
        assert_eq!(wait_for(&addr, 300).await, totals(300));
    });
}

#[test]
fn sled_checkpoint_of_another_state_version_is_rebuilt() {
    a_checkpoint_of_another_state_version_is_rebuilt(false);
}

#[test]
fn nats_checkpoint_of_another_state_version_is_rebuilt() {
    a_checkpoint_of_another_state_version_is_rebuilt(true);
}

/// A quota take as another node would append it: its own event id.
fn taken(case: u64, n: u64) -> hotaru_events::NewEvent {
    use hotaru_events::domain::{Day, QuotaTaken};
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&n.to_be_bytes());
    hotaru_events::NewEvent::new(
        hotaru_events::EventId::new(UnixMillis(1_700_000_000_000 + n), random),
        UnixMillis(1_700_000_000_000 + n),
        DomainEvent::QuotaTaken(QuotaTaken {
            centre_id: CentreId(1),
            day: Day(20_000),
            case_id: CaseId([case as u8; 16]),
        }),
    )
}

/// A cached state is served without a read, and a stale one is never acted on: the
/// expected-version append refuses it and `is_current` sees it, after which the stream
/// is read afresh.
fn a_stale_cached_state_is_caught(nats: bool) {
    use hotaru_actors::StateCache;
    use hotaru_domain::case::{QuotaState, quota_stream};
    use hotaru_events::domain::Day;
    let store = Store::new(nats);
    let backend = store.backend();
    System::new().block_on(async move {
        let log = backend.open().await.unwrap();
        // Another node's handle (sled is one process's: there it is a clone).
        let other = if nats {
            backend.open().await.unwrap()
        } else {
            log.clone()
        };
        let stream = quota_stream(CentreId(1), Day(20_000));
        let cache = StateCache::<QuotaState>::new(4);
        let (state, version, cached) = cache.load(&log, &stream).await.unwrap();
        assert_eq!((state.taken.len(), version, cached), (0, 0, false));
        let a = log
            .append(stream.clone(), ExpectedVersion::Exact(0), vec![taken(1, 1)])
            .await
            .unwrap();
        let mut state = state;
        state.taken.insert(CaseId([1; 16]));
        cache.store(&stream, state, a.last_version);
        let (state, version, cached) = cache.load(&log, &stream).await.unwrap();
        assert_eq!((state.taken.len(), version, cached), (1, 1, true));
        assert!(cache.is_current(&log, &stream, version).await.unwrap());
        // Another node takes a slot: the cache does not know.
        other
            .append(stream.clone(), ExpectedVersion::Exact(1), vec![taken(2, 2)])
            .await
            .unwrap();
        let (_, version, cached) = cache.load(&log, &stream).await.unwrap();
        assert_eq!((version, cached), (1, true));
        assert!(matches!(
            log.append(
                stream.clone(),
                ExpectedVersion::Exact(version),
                vec![taken(3, 3)]
            )
            .await,
            Err(hotaru_log::LogError::Conflict { .. })
        ));
        assert!(!cache.is_current(&log, &stream, version).await.unwrap());
        let (state, version, cached) = cache.load(&log, &stream).await.unwrap();
        assert_eq!((state.taken.len(), version, cached), (2, 2, false));
        // An older state stored late does not replace a newer one.
        cache.store(&stream, QuotaState::default(), 1);
        assert_eq!(cache.load(&log, &stream).await.unwrap().1, 2);
    });
}

#[test]
fn sled_a_stale_cached_state_is_caught() {
    a_stale_cached_state_is_caught(false);
}

#[test]
fn nats_a_stale_cached_state_is_caught() {
    a_stale_cached_state_is_caught(true);
}
