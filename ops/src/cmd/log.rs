//! `hotaru log`: append demo events, tail the log, verify its hash chain.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use futures::StreamExt;
use hotaru_actors::{IdSource, RandomIds, SystemClock};
use hotaru_events::domain::DemoRecorded;
use hotaru_events::{ChainVerifier, Clock, Context, DomainEvent, NewEvent, StreamId, StreamKind};
use hotaru_log::{EventLog, ExpectedVersion, RecordedCommit};

use crate::StoreArgs;
use crate::progress::bar;

#[derive(Subcommand, Debug)]
pub(crate) enum LogCommand {
    /// Append N synthetic events to the demo context, with a progress bar.
    AppendDemo(AppendDemo),
    /// Print stored events, oldest first (one line each, or JSON lines).
    Tail(Tail),
    /// Check the hash chain of every context; print the first broken link and exit 1.
    Verify(Verify),
    /// Write a portable archive of the log (every frame, chain included; the day keys still
    /// held; the published zips) for the committee to audit offline (`hotaru audit
    /// --archive`).
    Export(Export),
}

#[derive(Args, Debug)]
pub(crate) struct Export {
    #[command(flatten)]
    store: StoreArgs,
    /// The archive file to write (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    archive: std::path::PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct AppendDemo {
    #[command(flatten)]
    store: StoreArgs,
    /// How many events to append.
    #[arg(short = 'n', long = "events", default_value_t = 10_000)]
    events: u64,
    /// Spread the events over this many streams.
    #[arg(long, default_value_t = 64)]
    streams: u64,
    /// Appends in flight at once (they are group-committed).
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// Bytes of filler per event.
    #[arg(long, default_value_t = 64)]
    filler: usize,
    /// Print `ack <seq>` on stdout for each append acknowledged (for the crash tests).
    #[arg(long, hide = true)]
    print_acks: bool,
    /// The first sequence number (for the crash tests).
    #[arg(long, default_value_t = 0, hide = true)]
    start_seq: u64,
}

#[derive(Args, Debug)]
pub(crate) struct Tail {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this context (registration, distribution, support, retention, device, demo).
    #[arg(long, value_parser = parse_context)]
    context: Option<Context>,
    /// The first position to print (positions count per context, from 1).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Print at most this many commits per context.
    #[arg(long)]
    limit: Option<u64>,
    /// JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// Keep following new commits (needs --context).
    #[arg(long, requires = "context")]
    follow: bool,
}

#[derive(Args, Debug)]
pub(crate) struct Verify {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this context.
    #[arg(long, value_parser = parse_context)]
    context: Option<Context>,
}

fn parse_context(s: &str) -> Result<Context, String> {
    Context::parse(s).map_err(|e| e.to_string())
}

pub(crate) async fn run(cmd: LogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCommand::AppendDemo(a) => append_demo(a).await,
        LogCommand::Tail(t) => tail(t).await,
        LogCommand::Verify(v) => verify(v).await,
        LogCommand::Export(e) => export(e).await,
    }
}

/// The synthetic event number `seq`.
pub(crate) fn demo(seq: u64, filler: usize, clock: &dyn Clock, ids: &dyn IdSource) -> NewEvent {
    let now = clock.now();
    NewEvent::new(
        ids.next_id(now),
        now,
        DomainEvent::DemoRecorded(DemoRecorded {
            seq,
            filler: vec![(seq % 251) as u8; filler],
        }),
    )
}

pub(crate) fn demo_stream(seq: u64, streams: u64) -> StreamId {
    StreamId::new(StreamKind::Demo, format!("s{}", seq % streams.max(1))).expect("valid id")
}

async fn append_demo(a: AppendDemo) -> anyhow::Result<ExitCode> {
    let log = a.store.open().await?;
    let clock = Arc::new(SystemClock);
    let ids = Arc::new(RandomIds::default());
    let pb = bar(a.events, "append");
    let started = Instant::now();
    let mut acks = std::io::stdout().lock();
    let mut results = futures::stream::iter(a.start_seq..a.start_seq + a.events)
        .map(|seq| {
            let (log, clock, ids) = (log.clone(), clock.clone(), ids.clone());
            let event = demo(seq, a.filler, clock.as_ref(), ids.as_ref());
            async move {
                (
                    seq,
                    log.append(
                        demo_stream(seq, a.streams),
                        ExpectedVersion::Any,
                        vec![event],
                    )
                    .await,
                )
            }
        })
        .buffer_unordered(a.concurrency.max(1));
    while let Some((seq, r)) = results.next().await {
        r?;
        if a.print_acks {
            writeln!(acks, "ack {seq}")?;
            acks.flush()?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "appended {} events in {:.2} s ({:.0} events/s)",
        a.events,
        secs,
        a.events as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

async fn tail(t: Tail) -> anyhow::Result<ExitCode> {
    let log = t.store.open().await?;
    let contexts = t.context.map_or(Context::ALL.to_vec(), |c| vec![c]);
    let mut out = std::io::stdout().lock();
    for ctx in contexts {
        let mut printed = 0u64;
        let mut from = t.from.max(1);
        let limit = t.limit.unwrap_or(u64::MAX);
        while printed < limit {
            let batch = log
                .read_all(ctx, from, 1024.min((limit - printed) as usize))
                .await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in &batch {
                print_commit(&mut out, c, t.json)?;
            }
            printed += batch.len() as u64;
        }
        if t.follow {
            let mut sub = log.subscribe(ctx, from, None).await?;
            while let Some(c) = sub.next().await {
                print_commit(&mut out, &c?, t.json)?;
                out.flush()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_commit(out: &mut impl Write, c: &RecordedCommit, json: bool) -> anyhow::Result<()> {
    for (i, e) in c.commit.events.iter().enumerate() {
        let version = c.commit.first_version + i as u64;
        let event = e.decode();
        if json {
            let value = serde_json::json!({
                "context": c.commit.context.name(),
                "position": c.position,
                "index": i,
                "stream": c.commit.stream.to_string(),
                "version": version,
                "event_id": e.event_id.to_string(),
                "type": e.event_type.name(),
                "schema_version": e.schema_version,
                "occurred_at": rfc3339(e.occurred_at.0),
                "causation_id": e.causation_id.map(|id| id.to_string()),
                "correlation_id": e.correlation_id.to_string(),
                "traceparent": e.trace.map(|t| t.to_traceparent()),
                "event": match &event { Ok(ev) => serde_json::to_value(ev)?, Err(_) => serde_json::Value::Null },
                "error": event.as_ref().err().map(|err| err.to_string()),
            });
            writeln!(out, "{value}")?;
        } else {
            writeln!(
                out,
                "{} {}.{} {} v{} {} {} {}{}",
                c.commit.context,
                c.position,
                i,
                c.commit.stream,
                version,
                e.event_type.name(),
                rfc3339(e.occurred_at.0),
                e.event_id,
                event
                    .err()
                    .map(|err| format!(" ({err})"))
                    .unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-22T15:04:05.123Z`).
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

async fn verify(v: Verify) -> anyhow::Result<ExitCode> {
    let log = v.store.open().await?;
    let contexts = v.context.map_or(Context::ALL.to_vec(), |c| vec![c]);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<14} {:>10} {:>10} {:>8}  head",
        "context", "commits", "events", "streams"
    )?;
    for ctx in contexts {
        let head = log.head(ctx).await?;
        let pb = bar(head, ctx.name());
        let mut verifier = ChainVerifier::new(ctx);
        let mut from = 1;
        loop {
            let batch = log.read_all(ctx, from, 4096).await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in &batch {
                if let Err(e) = verifier.feed(c.position, &c.frame) {
                    pb.finish_and_clear();
                    writeln!(out, "broken: {e}")?;
                    return Ok(ExitCode::from(1));
                }
            }
            pb.inc(batch.len() as u64);
        }
        pb.finish_and_clear();
        if verifier.commits() != head {
            writeln!(
                out,
                "broken: chain of {ctx} ends at position {} but the log's head is {head}",
                verifier.commits()
            )?;
            return Ok(ExitCode::from(1));
        }
        writeln!(
            out,
            "{:<14} {:>10} {:>10} {:>8}  {}",
            ctx.name(),
            verifier.commits(),
            verifier.events(),
            verifier.streams(),
            if head == 0 {
                "-".to_owned()
            } else {
                verifier.head().to_string()[..16].to_owned()
            }
        )?;
    }
    writeln!(out, "chain ok")?;
    Ok(ExitCode::SUCCESS)
}

async fn export(e: Export) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use hotaru_audit::archive::ArchiveWriter;
    use hotaru_log::SideStore;
    let log = e.store.open().await?;
    // Written beside the target, renamed into place when complete.
    let tmp = e.archive.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = ArchiveWriter::new(std::io::BufWriter::new(file))?;
    let mut blobs = Vec::new();
    let mut frames = 0u64;
    for ctx in Context::ALL {
        // A snapshot: everything up to the head as it is now.
        let head = log.head(ctx).await?;
        let pb = bar(head, ctx.name());
        let mut from = 1;
        let mut hash = hotaru_events::ChainHash::GENESIS;
        while from <= head {
            let batch = log.read_all(ctx, from, 8192).await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in batch.iter().filter(|c| c.position <= head) {
                w.frame(ctx, c.position, &c.frame)?;
                hash = c.hash;
                frames += 1;
                for env in c.commit.envelopes().flatten() {
                    if let DomainEvent::BatchPublished(p) = env.event {
                        blobs.extend(p.blobs);
                    }
                }
            }
            pb.set_position(from.saturating_sub(1).min(head));
        }
        pb.finish_and_clear();
        w.head(ctx, head, hash)?;
    }
    let mut days = 0;
    for key in log.side_keys(hotaru_domain::sealing::DAY_KEYS).await? {
        let Some(day) = key.strip_prefix('d').and_then(|d| d.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(bytes) = log.side_get(hotaru_domain::sealing::DAY_KEYS, &key).await? {
            w.day_key(hotaru_events::domain::Day(day), &bytes)?;
            days += 1;
        }
    }
    let mut files = 0;
    for addr in &blobs {
        let name = hex::encode(addr);
        if let Some(zip) = log.blob_get(&name).await? {
            w.blob(&name, &zip)?;
            files += 1;
        }
    }
    let (bytes, sha) = w.finish()?;
    std::fs::rename(&tmp, &e.archive)
        .with_context(|| format!("cannot write {}", e.archive.display()))?;
    writeln!(
        std::io::stdout().lock(),
        "{}: {frames} commits, {days} day keys, {files} export files, {bytes} bytes, sha256 {}",
        e.archive.display(),
        hex::encode(sha)
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_585_785_600_000),
            "2020-04-02T00:00:00.000Z"
        );
        assert_eq!(super::rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
