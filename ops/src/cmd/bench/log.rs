//! `hotaru bench log`: appends/s of the event log against raw sled and raw JetStream.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hotaru_events::{Context, NewEvent};
use hotaru_log::{EventLog, ExpectedVersion, NatsConfig, NatsLog, SledLog};

use super::*;
use crate::cmd::log::demo_stream;
use crate::progress::bar;

#[derive(Args, Debug)]
pub(crate) struct LogBench {
    /// Events per measurement.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Appends in flight (and the raw baselines' batch / window size).
    #[arg(long, default_value_t = 4096)]
    concurrency: usize,
    /// Rounds per backend (ours and the baseline alternate; the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, value_enum, default_value = "both")]
    backend: Which,
    /// A nats-server with JetStream to measure against; without it, one is started on a
    /// free loopback port in a temporary directory.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Bytes of filler per event.
    #[arg(long, default_value_t = 64)]
    filler: usize,
}

/// Appends every event as its own commit, `concurrency` in flight; returns events/s.
async fn ours<L: EventLog>(
    log: &L,
    evs: &[NewEvent],
    concurrency: usize,
    label: &str,
) -> anyhow::Result<f64> {
    let pb = bar(evs.len() as u64, label);
    let started = Instant::now();
    let mut s = futures::stream::iter(evs.iter().enumerate())
        .map(|(i, e)| {
            let log = log.clone();
            let e = e.clone();
            async move {
                log.append(demo_stream(i as u64, 1024), ExpectedVersion::Any, vec![e])
                    .await
            }
        })
        .buffer_unordered(concurrency);
    while let Some(r) = s.next().await {
        r?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(evs.len() as f64 / started.elapsed().as_secs_f64())
}

/// The frames a log stored, to replay the same bytes through the raw baselines.
async fn frames<L: EventLog>(log: &L, ctx: Context, n: usize) -> anyhow::Result<Vec<Bytes>> {
    let head = log.head(ctx).await?;
    let from = head.saturating_sub(n as u64) + 1;
    let mut out = Vec::with_capacity(n);
    let mut pos = from;
    while out.len() < n {
        let batch = log.read_all(ctx, pos, 8192).await?;
        let Some(last) = batch.last() else { break };
        pos = last.position + 1;
        out.extend(batch.into_iter().map(|c| c.frame));
    }
    Ok(out)
}

/// A fresh sled database flushed only when asked, and its tree of raw frames.
fn raw_tree() -> anyhow::Result<(tempfile::TempDir, sled::Db, sled::Tree)> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("raw")?;
    Ok((dir, db, tree))
}

/// Raw sled: the same frames keyed by position, one batch and one flush per
/// `concurrency` frames (the most our writer can group).
fn raw_sled(frames: &[Bytes], concurrency: usize) -> anyhow::Result<f64> {
    let (_dir, db, tree) = raw_tree()?;
    let started = Instant::now();
    for (chunk_no, chunk) in frames.chunks(concurrency.max(1)).enumerate() {
        let mut batch = sled::Batch::default();
        for (i, f) in chunk.iter().enumerate() {
            let pos = (chunk_no * concurrency + i) as u64;
            batch.insert(&pos.to_be_bytes(), f.as_ref());
        }
        tree.apply_batch(batch)?;
        db.flush()?;
    }
    Ok(frames.len() as f64 / started.elapsed().as_secs_f64())
}

/// Raw sled with Hotaru's layout: the same frames packed 1024 to a value, one batch and
/// one flush per `concurrency` frames. The stricter baseline: what is left is hashing,
/// encoding, version checks, de-duplication and the writer's hand-offs.
fn raw_sled_segments(frames: &[Bytes], concurrency: usize) -> anyhow::Result<f64> {
    let (_dir, db, tree) = raw_tree()?;
    let started = Instant::now();
    for (chunk_no, chunk) in frames.chunks(concurrency.max(1)).enumerate() {
        let mut batch = sled::Batch::default();
        for (seg_no, seg) in chunk.chunks(1024).enumerate() {
            let mut value = Vec::new();
            for f in seg {
                value.extend_from_slice(&(f.len() as u32).to_le_bytes());
                value.extend_from_slice(f);
            }
            let pos = (chunk_no * concurrency + seg_no * 1024) as u64;
            batch.insert(&pos.to_be_bytes(), value);
        }
        tree.apply_batch(batch)?;
        db.flush()?;
    }
    Ok(frames.len() as f64 / started.elapsed().as_secs_f64())
}

/// Raw JetStream: the same frames published to a plain stream, `window` acks in flight.
async fn raw_jetstream(
    js: &jetstream::Context,
    frames: &[Bytes],
    window: usize,
) -> anyhow::Result<f64> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for (i, f) in frames.iter().enumerate() {
        if acks.len() >= window {
            acks.next().await.expect("non-empty")?;
        }
        let fut = js
            .publish(format!("bench.raw.s{}", i % 1024), f.clone())
            .await?;
        acks.push(fut.into_future());
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    Ok(frames.len() as f64 / started.elapsed().as_secs_f64())
}

struct Row {
    name: &'static str,
    ours: f64,
    raw: f64,
}

pub(super) async fn log_bench(b: LogBench) -> anyhow::Result<ExitCode> {
    let rounds = b.rounds.max(1);
    let mut rows = Vec::new();
    if b.backend != Which::Nats {
        let (mut o, mut r, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let dir = tempfile::tempdir()?;
            let log = SledLog::open(dir.path())?;
            // Fresh event ids every round: re-appending ids would measure de-duplication.
            let evs = events(b.events, b.filler);
            o.push(ours(&log, &evs, b.concurrency, "sled").await?);
            let fr = frames(&log, Context::Demo, evs.len()).await?;
            drop(log);
            r.push(raw_sled(&fr, b.concurrency)?);
            g.push(raw_sled_segments(&fr, b.concurrency)?);
            eprintln!(
                "sled round {}: ours {:.0}/s, raw per-key {:.0}/s, raw segments {:.0}/s",
                round + 1,
                o[round],
                r[round],
                g[round]
            );
        }
        let ours_sled = median(o);
        rows.push(Row {
            name: "sled vs raw inserts, 1 key/frame",
            ours: ours_sled,
            raw: median(r),
        });
        rows.push(Row {
            name: "sled vs raw, same segments",
            ours: ours_sled,
            raw: median(g),
        });
    }
    if b.backend != Which::Sled {
        let server = match &b.nats {
            Some(_) => None,
            None => Some(hotaru_test_support::NatsServer::start()),
        };
        let url = b
            .nats
            .clone()
            .unwrap_or_else(|| server.as_ref().expect("started").url());
        let log = NatsLog::connect(&NatsConfig::new(&url)).await?;
        let js = log.jetstream().clone();
        let (mut o, mut r) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let evs = events(b.events, b.filler);
            o.push(ours(&log, &evs, b.concurrency, "jetstream").await?);
            let fr = frames(&log, Context::Demo, evs.len()).await?;
            r.push(raw_jetstream(&js, &fr, b.concurrency).await?);
            eprintln!(
                "jetstream round {}: ours {:.0}/s, raw {:.0}/s",
                round + 1,
                o[round],
                r[round]
            );
        }
        rows.push(Row {
            name: "jetstream vs raw publishes",
            ours: median(o),
            raw: median(r),
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "events per measurement: {}, in flight: {}, rounds: {rounds} (median)",
        b.events, b.concurrency
    )?;
    writeln!(
        out,
        "{:<36} {:>12} {:>12} {:>7}",
        "backend vs baseline", "hotaru ev/s", "raw ev/s", "ratio"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<36} {:>12.0} {:>12.0} {:>7.2}",
            r.name,
            r.ours,
            r.raw,
            r.ours / r.raw
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
