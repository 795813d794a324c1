//! `hotaru bench audit`: chain verification per core against bare SHA-256 links, and a
//! full audit.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use futures::StreamExt;
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_log::{EventLog, ExpectedVersion};

use super::*;
use crate::cmd::log::demo;
use crate::progress::bar;

#[derive(Args, Debug)]
pub(crate) struct AuditBench {
    /// Demo events in the store (the bulk a long-running system's log would be).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rounds of the chain-verification measurement (medians).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keep the store here (reused when it already holds the events) instead of a
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

/// Chain verification (ChainVerifier: split, decode, link, versions) per core against the
/// floor of the bare SHA-256 links over the same records; then a full `audit` of the store
/// (every check, the privacy scan of its files included), timed.
pub(super) async fn audit_bench(b: AuditBench) -> anyhow::Result<ExitCode> {
    use hotaru_events::Context;
    use hotaru_log::{AnyLog, SledLog};
    let tmp = tempfile::tempdir()?;
    let dir = b
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("store"));
    let log = SledLog::open(&dir)?;
    let have = log.head(Context::Demo).await?;
    if have < b.events {
        let (clock, ids) = (SystemClock, RandomIds::default());
        let pb = bar(b.events - have, "append (not timed)");
        let mut appends = futures::stream::iter(have..b.events)
            .map(|seq| {
                let log = log.clone();
                let ev = demo(seq, 64, &clock, &ids);
                async move {
                    log.append(
                        crate::cmd::log::demo_stream(seq, 64),
                        ExpectedVersion::Any,
                        vec![ev],
                    )
                    .await
                }
            })
            .buffer_unordered(1024);
        while let Some(r) = appends.next().await {
            r?;
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    // The frames in memory, so that the chain measurement times the verifier alone.
    let mut frames = Vec::with_capacity(b.events as usize);
    let mut from = 1;
    loop {
        let batch = log.read_all(Context::Demo, from, 65_536).await?;
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        frames.extend(batch.into_iter().map(|c| (c.position, c.frame)));
    }
    let n = frames.len() as f64;
    let (mut chain, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..b.rounds.max(1) {
        let t = Instant::now();
        let mut v = hotaru_events::ChainVerifier::new(Context::Demo);
        for (p, f) in &frames {
            v.feed(*p, f)?;
        }
        chain.push(n / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut prev = hotaru_events::ChainHash::GENESIS;
        for (_, f) in &frames {
            let (_, record) = hotaru_events::Frame::split(f)?;
            prev = hotaru_events::ChainHash::link(&prev, record);
        }
        std::hint::black_box(prev);
        floor.push(n / t.elapsed().as_secs_f64());
    }
    drop(frames);
    let (chain, floor) = (median(chain), median(floor));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "chain verification of {} events on one core: {chain:.0} events/s; bare SHA-256 links {floor:.0}/s; ratio {:.2}",
        n as u64,
        chain / floor
    )?;
    // The full audit, as `hotaru audit --data-dir` runs it.
    let log = AnyLog::Sled(log);
    let started = Instant::now();
    let mut scan = Vec::new();
    let mut paths = vec![dir.clone()];
    while let Some(p) = paths.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p)? {
                paths.push(e?.path());
            }
        } else {
            scan.push(hotaru_audit::ScanInput::file(
                p.display().to_string(),
                p.clone(),
            ));
        }
    }
    let source = hotaru_audit::LiveSource {
        log,
        kind: "embedded store",
    };
    let rules = hotaru_audit::AuditRules::at(hotaru_events::Clock::now(&SystemClock));
    let report = hotaru_audit::audit(&source, &rules, scan, &mut |_: &str, _, _| {}).await?;
    let secs = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "full audit of {} events ({} bytes scanned): {secs:.1} s, {:.0} events/s, {}",
        report.events,
        report.bytes_scanned,
        report.events as f64 / secs,
        if report.passed {
            "every check passed"
        } else {
            "FAILED"
        }
    )?;
    Ok(ExitCode::SUCCESS)
}
