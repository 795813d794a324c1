//! The conformance suite, run against both backends: the embedded sled log and NATS
//! JetStream on a real nats-server started for each test.

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        mod sled {
            use hotaru_log::SledLog;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().to_owned();
                    hotaru_log::conformance::$name(async || SledLog::open(&path).unwrap()).await;
                }
            )*
        }
        mod nats {
            use hotaru_log::{NatsConfig, NatsLog};
            use hotaru_test_support::NatsServer;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = NatsServer::start();
                    let config = NatsConfig::new(server.url());
                    hotaru_log::conformance::$name(async || NatsLog::connect(&config).await.unwrap()).await;
                }
            )*
        }
    };
}

conformance_tests!(
    ordering,
    atomic_commits,
    streams_of_every_length,
    concurrency_conflicts,
    reads_during_appends,
    idempotency,
    subscription_catch_up_then_live,
    checkpoint_resume_after_restart,
    large_batches,
    device_events_stay_out_of_the_server_log,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_device_logs_hold_device_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    hotaru_log::conformance::server_events_stay_out_of_a_device_log(async || {
        hotaru_log::SledLog::open_scoped(&path, hotaru_log::LogScope::Device).unwrap()
    })
    .await;
}

/// A fleet's device log and the server's log on one nats-server: separate streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_device_logs_hold_device_events_only_in_their_own_streams() {
    use hotaru_log::{EventLog, NatsConfig, NatsLog};
    let server = hotaru_test_support::NatsServer::start();
    let config = NatsConfig::new(server.url()).devices();
    hotaru_log::conformance::server_events_stay_out_of_a_device_log(async || {
        NatsLog::connect(&config).await.unwrap()
    })
    .await;
    let server_log = NatsLog::connect(&NatsConfig::new(server.url()))
        .await
        .unwrap();
    assert_eq!(
        server_log
            .head(hotaru_events::Context::Device)
            .await
            .unwrap(),
        0
    );
    assert!(
        server_log
            .read_all(hotaru_events::Context::Device, 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Two writers (two connections, as two nodes would have) race on one context: every
/// append lands exactly once and the chain does not fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_writers_share_one_chain() {
    use futures::StreamExt;
    use hotaru_log::conformance::{demo_event, demo_stream, verify_chain};
    use hotaru_log::{EventLog, ExpectedVersion, NatsConfig, NatsLog};

    let server = hotaru_test_support::NatsServer::start();
    let config = NatsConfig::new(server.url());
    let a = NatsLog::connect(&config).await.unwrap();
    let b = NatsLog::connect(&config).await.unwrap();
    let n = 3000u64;
    let results = futures::stream::iter(0..n)
        .map(|i| {
            let log = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move {
                log.append(
                    demo_stream(&format!("w{}", i % 5)),
                    ExpectedVersion::Any,
                    vec![demo_event(i)],
                )
                .await
            }
        })
        .buffer_unordered(512)
        .collect::<Vec<_>>()
        .await;
    let mut positions: Vec<u64> = results.into_iter().map(|r| r.unwrap().position).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=n).collect::<Vec<_>>());
    assert_eq!(verify_chain(&a, hotaru_events::Context::Demo).await, n);
    // Versions per stream stay dense although two writers interleave.
    for s in 0..5 {
        let commits = a.read_stream(&demo_stream(&format!("w{s}"))).await.unwrap();
        let versions: Vec<u64> = commits.iter().map(|c| c.commit.first_version).collect();
        assert_eq!(versions, (1..=commits.len() as u64).collect::<Vec<_>>());
    }
}

/// Two writers take turns on one stream, each appending at the version it just read: every
/// append lands at once. (A writer that trusted the version it remembered from its own
/// last append refused the other's successors with a conflict forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_writer_follows_a_stream_the_other_writer_appended_to() {
    use hotaru_log::conformance::{demo_event, demo_stream};
    use hotaru_log::{EventLog, ExpectedVersion, NatsConfig, NatsLog};

    let server = hotaru_test_support::NatsServer::start();
    let config = NatsConfig::new(server.url());
    let writers = [
        NatsLog::connect(&config).await.unwrap(),
        NatsLog::connect(&config).await.unwrap(),
    ];
    let s = demo_stream("turns");
    for i in 0..10u64 {
        let log = &writers[i as usize % 2];
        let version = log.stream_version(&s).await.unwrap();
        assert_eq!(version, i);
        let a = log
            .append(
                s.clone(),
                ExpectedVersion::Exact(version),
                vec![demo_event(i)],
            )
            .await
            .unwrap_or_else(|e| panic!("append {i} at version {version}: {e}"));
        assert_eq!(a.first_version, i + 1);
    }
}
