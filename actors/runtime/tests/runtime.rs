//! The runtime on both backends: checkpointed projections resume exactly, the command shell
//! guards its streams, survives a panicking decision and bounds its retries.

use std::sync::Arc;

use actix::prelude::*;
use hotaru_actors::{
    Arbiters, CommandMeta, MAX_CONFLICT_RETRIES, ManualClock, Projection, ProjectionSnapshot,
    RandomIds, Shell, ShellError, Start, projection,
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

/// Counts demo events and sums their sequence numbers.
struct Counter;

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

fn totals(n: u64) -> Totals {
    Totals {
        count: n,
        sum: (0..n).sum(),
    }
}

/// A projection saved partway resumes from that checkpoint in a new process: the commits
/// after it are applied exactly once to the checkpointed state, and pages stop at the
/// position asked for.
fn projection_resumes_exactly(nats: bool) {
    let store = Store::new(nats);
    let backend = store.backend();
    {
        let b = backend.clone();
        System::new().block_on(async move {
            let log = b.open().await.unwrap();
            append_demo(&log, 0..500).await;
            let c = Counter;
            let mut snap = projection::resume(&log, &c).await.unwrap();
            assert_eq!(snap, ProjectionSnapshot::default(), "no checkpoint yet");
            assert_eq!(
                projection::catch_up(&log, &c, &mut snap, 321)
                    .await
                    .unwrap(),
                321
            );
            assert_eq!((snap.position, &snap.state), (321, &totals(321)));
            projection::save(&log, &c, &snap).await.unwrap();
            // Applied after the checkpoint and lost with the process.
            projection::catch_up(&log, &c, &mut snap, 500)
                .await
                .unwrap();
            assert_eq!(snap.state, totals(500));
        });
    }
    System::new().block_on(async move {
        let log = backend.open().await.unwrap();
        append_demo(&log, 500..600).await;
        let c = Counter;
        let mut snap = projection::resume(&log, &c).await.unwrap();
        assert_eq!((snap.position, &snap.state), (321, &totals(321)));
        let head = log.head(LogContext::Demo).await.unwrap();
        assert_eq!(
            projection::catch_up(&log, &c, &mut snap, head)
                .await
                .unwrap(),
            279
        );
        assert_eq!((snap.position, &snap.state), (600, &totals(600)));
        assert!(
            projection::next_page(&log, &c, &mut snap, head)
                .await
                .unwrap()
                .is_empty(),
            "caught up"
        );
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

/// Ten redemptions of one number race through two shells (two nodes' handles on the log):
/// exactly one wins, the others are decided again on the winner's news and refused.
fn shells_guard_redemption(nats: bool) {
    let store = Store::new(nats);
    let backend = store.backend();
    System::new().block_on(async move {
        let clock = Arc::new(ManualClock::at(UnixMillis(1_000)));
        // Two nodes' handles on NATS; sled is one process's, so there a clone.
        let first = backend.open().await.unwrap();
        let second = if nats {
            backend.open().await.unwrap()
        } else {
            first.clone()
        };
        let shells: Vec<_> = [first, second]
            .into_iter()
            .map(|log| Shell::new(log, clock.clone(), Arc::new(RandomIds::default())))
            .collect();
        let digest = NumberDigest([7; 32]);
        let stream = number_stream(&digest);
        let issued = shells[0]
            .execute::<NumberState>(
                &stream,
                Start::Read,
                CommandMeta::default(),
                NumberCommand::Issue {
                    case_id: CaseId([1; 16]),
                    centre_id: CentreId(1),
                    digest,
                    now: UnixMillis(1_000),
                    expires_at: UnixMillis(10_000),
                },
            )
            .await
            .unwrap();
        assert_eq!(issued.version, 1);
        let redeem = |i: usize| NumberCommand::Redeem {
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
        };
        let meta = CommandMeta {
            chained: true,
            ..CommandMeta::default()
        };
        // All ten decide on version 1 (the issue they were told of), so nine lose the race.
        let replies = futures::future::join_all((0..10).map(|i| {
            let state = issued.state.clone();
            shells[i % 2].execute::<NumberState>(&stream, Start::Known(state, 1), meta, redeem(i))
        }))
        .await;
        let mut wins = 0;
        for r in replies {
            match r {
                Ok(done) => {
                    let a = done.appended.unwrap();
                    assert_eq!((a.first_version, a.last_version), (2, 3));
                    // The keys' upload is caused by the redemption.
                    assert_eq!(done.events[1].causation_id, Some(done.events[0].event_id));
                    assert_eq!(done.events[1].correlation_id, done.events[0].event_id);
                    wins += 1;
                }
                Err(ShellError::Domain(NumberError::Rejected(RejectionReason::AlreadyUsed))) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins, 1);
        let log = shells[0].log();
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
    });
}

#[test]
fn sled_number_redemption_is_single_use_across_shells() {
    shells_guard_redemption(false);
}

#[test]
fn nats_number_redemption_is_single_use_across_shells() {
    shells_guard_redemption(true);
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

/// Runs `f` in a System with a shell on a fresh embedded log.
fn on_an_embedded_shell<Fut: std::future::Future<Output = ()>>(
    f: impl FnOnce(AnyLog, Shell<AnyLog>) -> Fut,
) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Embedded(dir.path().to_owned());
    System::new().block_on(async move {
        let log = backend.open().await.unwrap();
        let clock = Arc::new(ManualClock::default());
        let shell = Shell::new(log.clone(), clock, Arc::new(RandomIds::default()));
        f(log, shell).await;
    });
}

#[test]
fn a_panic_in_decide_answers_crashed_appends_nothing_and_the_shell_carries_on() {
    on_an_embedded_shell(|log, shell| async move {
        let stream = demo_stream("fragile");
        let bad = shell
            .execute::<Fragile>(&stream, Start::Read, CommandMeta::default(), true)
            .await;
        assert!(matches!(bad, Err(ShellError::Crashed(_))));
        assert_eq!(log.stream_version(&stream).await.unwrap(), 0);
        let good = shell
            .execute::<Fragile>(&stream, Start::Read, CommandMeta::default(), false)
            .await
            .unwrap();
        assert_eq!(good.appended.unwrap().first_version, 1);
    });
}

/// A command that keeps losing its stream to another writer gives up with
/// `LogError::Contention` after the one retry bound, instead of looping for ever; the
/// enrich step runs once per decision.
#[test]
fn a_command_that_always_loses_the_race_gives_up_after_the_bound() {
    on_an_embedded_shell(|log, shell| async move {
        let stream = demo_stream("hot");
        let runs = std::cell::Cell::new(0usize);
        let r = shell
            .execute_with::<Fragile, (), (), _, _>(
                &stream,
                Start::Read,
                CommandMeta::default(),
                |_, v| {
                    runs.set(runs.get() + 1);
                    let (log, stream) = (log.clone(), stream.clone());
                    async move {
                        // Another writer appends between this decision's read and its append.
                        log.append(stream, ExpectedVersion::Exact(v), vec![demo_event(v)])
                            .await
                            .unwrap();
                        Ok((false, ()))
                    }
                },
            )
            .await;
        assert!(matches!(
            r,
            Err(ShellError::Log(hotaru_log::LogError::Contention(
                LogContext::Demo
            )))
        ));
        assert_eq!(runs.get(), MAX_CONFLICT_RETRIES + 1);
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

/// A checkpoint of another state version, or one that does not decode, is set aside: the
/// projection rebuilds from the start of its context instead of decoding bytes of another
/// shape (ADR 0005), and counts every commit once.
fn a_checkpoint_of_another_state_version_is_rebuilt(nats: bool) {
    on_300_demo_events(nats, |log| async move {
        for state in [
            // Version 7 of a state this code does not know.
            hotaru_events::versioned::wrap(7, b"of another shape"),
            // This version, but bytes that do not decode as its state.
            hotaru_events::versioned::wrap(Counter::STATE_VERSION, &[0xff; 3]),
        ] {
            let stale = hotaru_log::Checkpoint {
                position: 200,
                state,
            };
            log.save_checkpoint("counter", &stale).await.unwrap();
            let mut snap = projection::resume(&log, &Counter).await.unwrap();
            assert_eq!(snap.position, 0, "not resumed from 200");
            projection::catch_up(&log, &Counter, &mut snap, 300)
                .await
                .unwrap();
            assert_eq!(snap.state, totals(300));
        }
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
