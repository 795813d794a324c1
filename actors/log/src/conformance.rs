//! The conformance suite: written once, run against every backend by
//! `actors/log/tests/conformance.rs`. Each check takes `open`, which opens the log on the
//! same storage each time it is called (a restart).

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use hotaru_events::domain::DemoRecorded;
use hotaru_events::{
    ChainVerifier, Context, DomainEvent, EventId, NewEvent, StreamId, StreamKind, UnixMillis,
};

use crate::{Appended, Checkpoint, EventLog, ExpectedVersion, LogError};

/// A demo event with a unique id derived from `n`.
pub fn demo_event(n: u64) -> NewEvent {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&n.to_be_bytes());
    random[8] = 0x5a;
    NewEvent::new(
        EventId::new(UnixMillis(1_700_000_000_000 + n), random),
        UnixMillis(1_700_000_000_000 + n),
        DomainEvent::DemoRecorded(DemoRecorded {
            seq: n,
            filler: vec![(n % 251) as u8; 32],
        }),
    )
}

pub fn demo_stream(name: &str) -> StreamId {
    StreamId::new(StreamKind::Demo, name).expect("valid demo stream id")
}

fn seq_of(c: &crate::RecordedCommit, i: usize) -> u64 {
    match c.commit.events[i].decode().expect("decodes") {
        DomainEvent::DemoRecorded(d) => d.seq,
        other => panic!("unexpected event {other:?}"),
    }
}

/// Verifies the chain of `ctx` from the start; returns the number of commits.
pub async fn verify_chain<L: EventLog>(log: &L, ctx: Context) -> u64 {
    let mut v = ChainVerifier::new(ctx);
    let mut from = 1;
    loop {
        let batch = log.read_all(ctx, from, 1000).await.expect("read_all");
        if batch.is_empty() {
            break;
        }
        for c in &batch {
            v.feed(c.position, &c.frame)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        from = batch.last().expect("non-empty").position + 1;
    }
    assert_eq!(v.commits(), log.head(ctx).await.expect("head"));
    v.commits()
}

/// Positions are dense and ordered per context; streams read back in version order.
pub async fn ordering<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in 0..60u64 {
        let name = format!("s{}", n % 4);
        let a = log
            .append(
                demo_stream(&name),
                ExpectedVersion::Any,
                vec![demo_event(n)],
            )
            .await
            .unwrap();
        assert_eq!(a.position, n + 1);
        assert!(!a.duplicate);
        expected.entry(name).or_default().push(n);
    }
    let all = log.read_all(Context::Demo, 1, usize::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.position).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter().map(|c| seq_of(c, 0)).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    for (name, seqs) in expected {
        let commits = log.read_stream(&demo_stream(&name)).await.unwrap();
        assert_eq!(
            commits.iter().map(|c| seq_of(c, 0)).collect::<Vec<_>>(),
            seqs
        );
        let versions: Vec<u64> = commits.iter().map(|c| c.commit.first_version).collect();
        assert_eq!(versions, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }
    let part = log.read_all(Context::Demo, 11, 5).await.unwrap();
    assert_eq!(
        part.iter().map(|c| c.position).collect::<Vec<_>>(),
        vec![11, 12, 13, 14, 15]
    );
    assert!(
        log.read_all(Context::Demo, 61, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        log.read_stream(&demo_stream("never"))
            .await
            .unwrap()
            .is_empty()
    );
    // Contexts are separate partitions with their own positions.
    assert_eq!(log.head(Context::Registration).await.unwrap(), 0);
    let other = StreamId::new(StreamKind::OperationLog, "d1").unwrap();
    assert_eq!(
        log.append(other, ExpectedVersion::Any, vec![demo_event(1000)])
            .await
            .unwrap()
            .position,
        1
    );
}

/// A commit of several events is one position with consecutive versions.
pub async fn atomic_commits<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let s = demo_stream("multi");
    let a = log
        .append(
            s.clone(),
            ExpectedVersion::Exact(0),
            (0..5).map(demo_event).collect(),
        )
        .await
        .unwrap();
    assert_eq!(
        a,
        Appended {
            position: 1,
            first_version: 1,
            last_version: 5,
            duplicate: false
        }
    );
    let b = log
        .append(s.clone(), ExpectedVersion::Exact(5), vec![demo_event(5)])
        .await
        .unwrap();
    assert_eq!((b.position, b.first_version, b.last_version), (2, 6, 6));
    let commits = log.read_stream(&s).await.unwrap();
    let envelopes: Vec<_> = commits
        .iter()
        .flat_map(|c| c.commit.envelopes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        envelopes.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(envelopes[3].position, 1);
    assert_eq!(envelopes[3].index, 3);
    assert!(matches!(
        log.append(s.clone(), ExpectedVersion::Any, vec![]).await,
        Err(LogError::Encode(hotaru_events::EncodeError::Empty))
    ));
    let mut huge = demo_event(99);
    huge.event = DomainEvent::DemoRecorded(DemoRecorded {
        seq: 99,
        filler: vec![7; 1024 * 1024],
    });
    assert!(matches!(
        log.append(s, ExpectedVersion::Any, vec![huge]).await,
        Err(LogError::Encode(
            hotaru_events::EncodeError::TooLarge { .. }
        ))
    ));
    assert_eq!(
        log.head(Context::Demo).await.unwrap(),
        2,
        "refused appends store nothing"
    );
}

/// Streams of every short length (and past the direct reads NATS makes before it turns
/// to a consumer), their commits interleaved with other streams', read back whole and in
/// order; the last commit and the version of each are one read.
pub async fn streams_of_every_length<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    assert!(
        log.last_commit(&demo_stream("len0"))
            .await
            .unwrap()
            .is_none()
    );
    let lengths = 1..=12u64;
    for round in 0..*lengths.end() {
        for len in lengths.clone().filter(|&len| round < len) {
            // Two events in every third commit: versions and commits are not the same count.
            let n = if round % 3 == 2 { 2 } else { 1 };
            let s = demo_stream(&format!("len{len}"));
            let version = log.stream_version(&s).await.unwrap();
            log.append(
                s,
                ExpectedVersion::Exact(version),
                (0..n)
                    .map(|i| demo_event(len * 100 + round * 2 + i))
                    .collect(),
            )
            .await
            .unwrap();
        }
    }
    for len in lengths {
        let s = demo_stream(&format!("len{len}"));
        let commits = log.read_stream(&s).await.unwrap();
        assert_eq!(commits.len() as u64, len, "stream len{len}");
        let mut version = 0;
        for c in &commits {
            assert_eq!(c.commit.first_version, version + 1, "len{len}: contiguous");
            version = c.commit.last_version();
        }
        let last = log.last_commit(&s).await.unwrap().expect("a last commit");
        assert_eq!(last.position, commits.last().unwrap().position);
        assert_eq!(log.stream_version(&s).await.unwrap(), version);
    }
}

/// Expected versions are enforced, and of many racing writers exactly one wins.
pub async fn concurrency_conflicts<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let s = demo_stream("agg");
    log.append(s.clone(), ExpectedVersion::Exact(0), vec![demo_event(1)])
        .await
        .unwrap();
    match log
        .append(s.clone(), ExpectedVersion::Exact(0), vec![demo_event(2)])
        .await
    {
        Err(LogError::Conflict {
            actual: 1,
            expected: ExpectedVersion::Exact(0),
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        log.append(s.clone(), ExpectedVersion::Exact(7), vec![demo_event(3)])
            .await,
        Err(LogError::Conflict { actual: 1, .. })
    ));
    // Twenty writers race for version 2; each uses its own event ids.
    let mut tasks = Vec::new();
    for w in 0..20u64 {
        let log = log.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            log.append(s, ExpectedVersion::Exact(1), vec![demo_event(100 + w)])
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                assert_eq!(a.first_version, 2);
                wins += 1;
            }
            Err(LogError::Conflict { actual: 2, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(log.read_stream(&s).await.unwrap().len(), 2);
    assert_eq!(log.stream_version(&s).await.unwrap(), 2);
    assert_eq!(log.stream_version(&demo_stream("none")).await.unwrap(), 0);
    verify_chain(&log, Context::Demo).await;
}

/// Reads of a stream while it is appended to never fail and never go back: every
/// position a reader is shown can be read (sled once indexed a commit before its head
/// moved, and a concurrent read_stream failed with "indexed commit missing").
pub async fn reads_during_appends<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let s = demo_stream("busy");
    let writer = {
        let (log, s) = (log.clone(), s.clone());
        tokio::spawn(async move {
            for n in 0..300u64 {
                log.append(s.clone(), ExpectedVersion::Exact(n), vec![demo_event(n)])
                    .await
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (log, s) = (log.clone(), s.clone());
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < 300 {
                    let version = log.stream_version(&s).await.expect("stream_version");
                    let commits = log.read_stream(&s).await.expect("read_stream");
                    assert!(version >= seen && commits.len() as u64 >= seen, "went back");
                    seen = version.max(seen);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for r in readers {
        r.await.expect("a reader failed");
    }
    writer.await.unwrap();
    assert_eq!(log.read_stream(&s).await.unwrap().len(), 300);
}

/// The same commit appended twice is stored once, also after other appends.
pub async fn idempotency<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let s = demo_stream("idem");
    let first = log
        .append(
            s.clone(),
            ExpectedVersion::Exact(0),
            vec![demo_event(1), demo_event(2)],
        )
        .await
        .unwrap();
    let again = log
        .append(
            s.clone(),
            ExpectedVersion::Exact(0),
            vec![demo_event(1), demo_event(2)],
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        Appended {
            duplicate: true,
            ..first
        }
    );
    let any = log
        .append(
            s.clone(),
            ExpectedVersion::Any,
            vec![demo_event(1), demo_event(2)],
        )
        .await
        .unwrap();
    assert_eq!(
        any,
        Appended {
            duplicate: true,
            ..first
        }
    );
    // The stream moves on; a late retry of the first commit still finds it.
    log.append(s.clone(), ExpectedVersion::Exact(2), vec![demo_event(3)])
        .await
        .unwrap();
    let late = log
        .append(
            s.clone(),
            ExpectedVersion::Exact(0),
            vec![demo_event(1), demo_event(2)],
        )
        .await
        .unwrap();
    assert_eq!(
        late,
        Appended {
            duplicate: true,
            ..first
        }
    );
    // Concurrent retries of one commit: one stored, all answered with its position.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let log = log.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            log.append(s, ExpectedVersion::Any, vec![demo_event(50)])
                .await
        }));
    }
    let mut positions = HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        positions.insert(a.position);
        fresh += usize::from(!a.duplicate);
    }
    assert_eq!((positions.len(), fresh), (1, 1));
    // An id reused for other content is refused.
    assert!(matches!(
        log.append(
            demo_stream("other"),
            ExpectedVersion::Any,
            vec![demo_event(3)]
        )
        .await,
        Err(LogError::IdReused { .. })
    ));
    assert_eq!(log.head(Context::Demo).await.unwrap(), 3);
    assert_eq!(log.read_stream(&s).await.unwrap().len(), 3);
    verify_chain(&log, Context::Demo).await;
}

/// A subscription catches up and then follows live appends, with no gap and no
/// duplicate at the seam, from any starting position.
pub async fn subscription_catch_up_then_live<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    for n in 0..300u64 {
        log.append(
            demo_stream(&format!("s{}", n % 7)),
            ExpectedVersion::Any,
            vec![demo_event(n)],
        )
        .await
        .unwrap();
    }
    for (from, durable) in [(1u64, None), (150, Some("sub-a"))] {
        let before = log.head(Context::Demo).await.unwrap();
        let mut sub = log.subscribe(Context::Demo, from, durable).await.unwrap();
        // Appends race with the catch-up.
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..300u64 {
                    let k = n + 1000 * from;
                    log.append(
                        demo_stream("live"),
                        ExpectedVersion::Any,
                        vec![demo_event(k)],
                    )
                    .await
                    .unwrap();
                }
            })
        };
        let total = before - (from - 1) + 300;
        let mut positions = Vec::new();
        while (positions.len() as u64) < total {
            let c = tokio::time::timeout(std::time::Duration::from_secs(20), sub.next())
                .await
                .expect("subscription stalled")
                .expect("subscription ended")
                .unwrap();
            positions.push(c.position);
        }
        writer.await.unwrap();
        assert_eq!(positions, (from..from + total).collect::<Vec<_>>());
        // Nothing more is delivered than was appended.
        let extra = tokio::time::timeout(std::time::Duration::from_millis(300), sub.next()).await;
        assert!(extra.is_err(), "delivered a commit that was never appended");
        assert_eq!(log.head(Context::Demo).await.unwrap(), before + 300);
    }
}

/// Checkpoints survive a restart of the log and hold position and state together.
pub async fn checkpoint_resume_after_restart<L: EventLog>(open: impl AsyncFn() -> L) {
    {
        let log = open().await;
        assert_eq!(log.load_checkpoint("counter").await.unwrap(), None);
        for n in 0..40u64 {
            log.append(demo_stream("cp"), ExpectedVersion::Any, vec![demo_event(n)])
                .await
                .unwrap();
        }
        // A consumer applies 25 commits, then checkpoints its state with the position.
        let mut sub = log
            .subscribe(Context::Demo, 1, Some("counter"))
            .await
            .unwrap();
        let mut sum = 0u64;
        let mut last = 0;
        for _ in 0..25 {
            let c = sub.next().await.unwrap().unwrap();
            sum += seq_of(&c, 0);
            last = c.position;
        }
        log.save_checkpoint(
            "counter",
            &Checkpoint {
                position: last,
                state: sum.to_be_bytes().to_vec(),
            },
        )
        .await
        .unwrap();
        assert!(
            log.save_checkpoint(
                "bad name",
                &Checkpoint {
                    position: 1,
                    state: vec![]
                }
            )
            .await
            .is_err()
        );
    }
    let log = open().await;
    let cp = log
        .load_checkpoint("counter")
        .await
        .unwrap()
        .expect("checkpoint survives");
    assert_eq!(cp.position, 25);
    let mut sum = u64::from_be_bytes(cp.state.try_into().unwrap());
    assert_eq!(sum, (0..25).sum::<u64>());
    let mut sub = log
        .subscribe(Context::Demo, cp.position + 1, Some("counter"))
        .await
        .unwrap();
    for _ in 25..40 {
        sum += seq_of(&sub.next().await.unwrap().unwrap(), 0);
    }
    assert_eq!(
        sum,
        (0..40).sum::<u64>(),
        "nothing skipped, nothing applied twice"
    );
    let appended = log
        .append(
            demo_stream("cp"),
            ExpectedVersion::Exact(40),
            vec![demo_event(40)],
        )
        .await
        .unwrap();
    assert_eq!(appended.position, 41, "the chain head survives the restart");
    assert_eq!(verify_chain(&log, Context::Demo).await, 41);
}

/// Many concurrent appends (group commit) and large commits; the chain verifies.
pub async fn large_batches<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let n = 20_000u64;
    let results = futures::stream::iter(0..n)
        .map(|i| {
            let log = log.clone();
            async move {
                log.append(
                    demo_stream(&format!("b{}", i % 101)),
                    ExpectedVersion::Any,
                    vec![demo_event(i)],
                )
                .await
            }
        })
        .buffer_unordered(4096)
        .collect::<Vec<_>>()
        .await;
    let mut positions: Vec<u64> = results.into_iter().map(|r| r.unwrap().position).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=n).collect::<Vec<_>>());
    let big: Vec<NewEvent> = (n..n + 2000).map(demo_event).collect();
    let a = log
        .append(demo_stream("big"), ExpectedVersion::Exact(0), big)
        .await
        .unwrap();
    assert_eq!((a.position, a.last_version), (n + 1, 2000));
    assert_eq!(verify_chain(&log, Context::Demo).await, n + 1);
    let per_stream: usize = log.read_stream(&demo_stream("b7")).await.unwrap().len();
    assert_eq!(
        per_stream as u64,
        (0..n).filter(|i| i % 101 == 7).count() as u64
    );
}

/// A device event of the device's own stream, for the scope checks.
pub fn device_event(n: u64) -> NewEvent {
    let mut e = demo_event(n);
    e.event = DomainEvent::ConsentWithdrawn(hotaru_events::domain::ConsentWithdrawn {
        device_id: hotaru_events::domain::DeviceId([n as u8; 16]),
    });
    e
}

/// A server's log refuses device events, in the device context or in its own, and stores
/// nothing; a device's log refuses the server's events.
pub async fn device_events_stay_out_of_the_server_log<L: EventLog>(open: impl AsyncFn() -> L) {
    let log = open().await;
    let dev = StreamId::new(StreamKind::Device, "d1").unwrap();
    for (stream, event) in [
        (dev.clone(), device_event(1)),
        (dev, demo_event(2)),
        (demo_stream("s"), device_event(3)),
    ] {
        let r = log.append(stream, ExpectedVersion::Any, vec![event]).await;
        assert!(matches!(r, Err(LogError::OutOfScope(_))), "{r:?}");
    }
    assert_eq!(log.head(Context::Device).await.unwrap(), 0);
    assert_eq!(log.head(Context::Demo).await.unwrap(), 0);
    assert!(
        log.read_all(Context::Device, 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The same, seen from a device's log (opened by `open_device`).
pub async fn server_events_stay_out_of_a_device_log<L: EventLog>(open_device: impl AsyncFn() -> L) {
    let log = open_device().await;
    let dev = StreamId::new(StreamKind::Device, "d1").unwrap();
    let r = log
        .append(dev.clone(), ExpectedVersion::Any, vec![demo_event(1)])
        .await;
    assert!(matches!(r, Err(LogError::OutOfScope(_))), "{r:?}");
    let r = log
        .append(
            demo_stream("s"),
            ExpectedVersion::Any,
            vec![device_event(2)],
        )
        .await;
    assert!(matches!(r, Err(LogError::OutOfScope(_))), "{r:?}");
    let a = log
        .append(
            dev.clone(),
            ExpectedVersion::Exact(0),
            vec![device_event(3)],
        )
        .await
        .unwrap();
    assert_eq!((a.position, a.first_version), (1, 1));
    assert_eq!(log.read_stream(&dev).await.unwrap().len(), 1);
    assert_eq!(verify_chain(&log, Context::Device).await, 1);
}
