//! `hotaru bench start`: the node's start time over a log of registrations.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures::StreamExt;
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_events::{Context, NewEvent};
use hotaru_log::{EventLog, ExpectedVersion};

use super::server::bench_config;
use super::*;
use crate::progress::bar;

#[derive(Args, Debug)]
pub(crate) struct StartBench {
    /// Registration commits in the log when the node starts (rejected guesses, 99 % of them
    /// older than the limiter's horizon).
    #[arg(long, default_value_t = 1_000_000)]
    registrations: u64,
    #[arg(long, value_enum, default_value = "sled")]
    backend: Which,
}

/// `hotaru bench start`, inside an actix System.
pub(crate) async fn start_bench(b: StartBench) -> anyhow::Result<ExitCode> {
    use hotaru_actors::IdSource;
    use hotaru_events::domain::{ProcessingNumberRejected, RejectionReason};
    use hotaru_events::{Clock, DomainEvent, NumberDigest, StreamId, StreamKind, UnixMillis};

    use hotaru_server::Node;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "node start over {} registration commits (rejected guesses; 1 % within the last hour)",
        b.registrations
    )?;
    writeln!(
        out,
        "{:<12} {:>14} {:>26} {:>7}",
        "backend", "start (s)", "full replay, before (s)", "ratio"
    )?;
    for nats in b.backend.backends() {
        let store = Store::fresh(nats).await?;
        let log = store.log.clone();
        let now = SystemClock.now();
        let ids = RandomIds::default();
        let n = b.registrations;
        let recent = n / 100;
        let progress = bar(n, "registration commits");
        let mut s = futures::stream::iter(0..n)
            .map(|i| {
                // 30 days before the last hour, evenly; then the last hour.
                let at = if i < n - recent {
                    UnixMillis(now.0 - 31 * 86_400_000 + i * (30 * 86_400_000 / n.max(1)))
                } else {
                    UnixMillis(now.0 - 3_600_000 + (i - (n - recent)) * (3_600_000 / recent.max(1)))
                };
                let ev = NewEvent::new(
                    ids.next_id(at),
                    at,
                    DomainEvent::ProcessingNumberRejected(ProcessingNumberRejected {
                        digest: Some(NumberDigest(ids.random().array())),
                        reason: RejectionReason::Unknown,
                    }),
                );
                let stream =
                    StreamId::new(StreamKind::Redemptions, at.day().to_string()).expect("digits");
                log.append(stream, ExpectedVersion::Any, vec![ev])
            })
            .buffered(256);
        while let Some(r) = s.next().await {
            r?;
            progress.inc(1);
        }
        drop(s);
        progress.finish_and_clear();
        // Before: the warm-up read and decoded the whole context.
        let t = Instant::now();
        let mut from = 1;
        let mut seen = 0u64;
        loop {
            let batch = log.read_all(Context::Registration, from, 4096).await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in &batch {
                seen += c.commit.envelopes().flatten().count() as u64;
            }
        }
        let full = t.elapsed().as_secs_f64();
        anyhow::ensure!(seen == n, "replayed {seen} of {n}");
        let config = bench_config(64);
        let arbiters = hotaru_actors::Arbiters::per_core();
        let clock: Arc<dyn hotaru_events::Clock> = Arc::new(SystemClock);
        let t = Instant::now();
        let node = Node::start(log.clone(), &config, clock, Arc::new(ids), &arbiters).await?;
        let start = t.elapsed().as_secs_f64();
        drop(node);
        arbiters.stop();
        let name = if nats { "jetstream" } else { "sled" };
        writeln!(
            out,
            "{name:<12} {start:>14.3} {full:>26.3} {:>7.3}",
            start / full
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
