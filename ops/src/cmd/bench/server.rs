//! `hotaru bench server`: uploads/s through the actors against bare appends, the signer's
//! checkpointed run, and the export of a large batch.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures::StreamExt;
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_events::{Context, NewEvent};
use hotaru_log::{EventLog, ExpectedVersion};
use hotaru_protocol::export::ExportFile;
use hotaru_protocol::random::OsRandom;

use super::*;
use crate::cmd::log::demo_stream;
use crate::progress::bar;

#[derive(Args, Debug)]
pub(crate) struct ServerBench {
    /// Uploads (each one redemption with 14 keys) per backend.
    #[arg(long, default_value_t = 2_000)]
    uploads: usize,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, value_enum, default_value = "both")]
    backend: Which,
    /// Keys in the export that is built and signed.
    #[arg(long, default_value_t = 500_000)]
    export_keys: usize,
}

/// `hotaru bench server`, inside an actix System.
pub(crate) async fn server_bench(b: ServerBench) -> anyhow::Result<ExitCode> {
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut ticks: Vec<(&str, (f64, f64))> = Vec::new();
    let mut out = std::io::stdout().lock();
    for nats in b.backend.backends() {
        let store = Store::fresh(nats).await?;
        let log = store.log.clone();
        let name = if nats { "jetstream" } else { "sled" };
        let (ours, bare, tick) = uploads_through_actors(&log, b.uploads, b.concurrency).await?;
        eprintln!("{name}: {ours:.0} uploads/s through the actors, {bare:.0} bare appends/s");
        rows.push((name.to_owned(), ours, bare));
        ticks.push((name, tick));
    }
    writeln!(
        out,
        "uploads: {} per backend (14 keys each), {} in flight",
        b.uploads, b.concurrency
    )?;
    writeln!(
        out,
        "{:<12} {:>16} {:>22} {:>7}",
        "backend", "uploads/s", "bare appends/s (same)", "ratio"
    )?;
    for (n, o, r) in &rows {
        writeln!(out, "{n:<12} {o:>16.0} {r:>22.0} {:>7.2}", o / r)?;
    }
    writeln!(
        out,
        "a signer run with nothing new, after the {} uploads were published:",
        b.uploads
    )?;
    writeln!(
        out,
        "{:<12} {:>22} {:>24} {:>7}",
        "backend", "from checkpoint (ms)", "from position 1 (ms)", "ratio"
    )?;
    for (n, (cp, full)) in &ticks {
        writeln!(out, "{n:<12} {cp:>22.1} {full:>24.1} {:>7.3}", cp / full)?;
    }
    let (total, parts) = export_bench(b.export_keys);
    writeln!(
        out,
        "export of {} keys: {:.3} s in all ({parts})",
        b.export_keys, total
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The server a benchmark runs: no quota, and an attempt budget that covers the uploads
/// in flight (they hold tickets of it, ADR 0004; the excess would be refused with C).
pub(super) fn bench_config(concurrency: usize) -> hotaru_server::ServerConfig {
    hotaru_server::ServerConfig {
        digest_secret: Some("ab".repeat(32)),
        registration: hotaru_domain::policy::RegistrationPolicy {
            daily_quota_per_centre: u32::MAX,
            ..Default::default()
        },
        limits: hotaru_domain::limiter::LimiterPolicy {
            global_failures: concurrency + 60,
            // Every upload of `bench gateway` comes from one loopback address, so from one
            // source, whose guesses in flight count against its allowance.
            source_failures: concurrency + 5,
            ..Default::default()
        },
        ..hotaru_server::ServerConfig::default()
    }
}

/// Uploads/s through the registration actor, and appends/s of commits of the same size
/// written straight to the log (the floor the actor path is measured against).
async fn uploads_through_actors(
    log: &hotaru_log::AnyLog,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, (f64, f64))> {
    use hotaru_domain::upload::SubmittedKey;
    use hotaru_server::actors::Redeem;
    use hotaru_server::{Node, Redemption};
    let config = bench_config(concurrency);
    let arbiters = hotaru_actors::Arbiters::per_core();
    let clock: Arc<dyn hotaru_events::Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(RandomIds::default());
    let node = Node::start(log.clone(), &config, clock.clone(), ids, &arbiters).await?;
    let today = clock.now().day();
    let numbers = issue_numbers(&node, n, today).await?;
    let mut rng_keys = rand::rng();
    let uploads: Vec<Redemption> = numbers
        .iter()
        .map(|num| Redemption {
            number: num.as_str().to_owned(),
            keys: (0..14)
                .map(|d| {
                    let mut k = vec![0u8; 16];
                    rand::RngCore::fill_bytes(&mut rng_keys, &mut k);
                    SubmittedKey {
                        key_data: k,
                        rolling_start: (today - 1 - d) * 144,
                        rolling_period: 144,
                        transmission_risk: None,
                        report_type: None,
                        days_since_onset: None,
                    }
                })
                .collect(),
            idempotency_key: None,
            source: None,
        })
        .collect();
    let started = Instant::now();
    let addr = node.registration_actor.clone();
    let mut s = futures::stream::iter(uploads)
        .map(|u| addr.send(Redeem(u)))
        .buffer_unordered(concurrency);
    while let Some(r) = s.next().await {
        r??;
    }
    let ours = n as f64 / started.elapsed().as_secs_f64();
    // A signer run after they are published, from its checkpoint and from position 1.
    let now = clock.now();
    hotaru_server::signing::add_signing_key(log, "440", 440, now, &RandomIds::default()).await?;
    node.distribution.sign_batch().await?;
    let t = Instant::now();
    anyhow::ensure!(
        node.distribution.sign_batch().await?.is_none(),
        "nothing new to sign"
    );
    let from_checkpoint = t.elapsed().as_secs_f64() * 1000.0;
    node.distribution.rescan_from_start().await?;
    let t = Instant::now();
    anyhow::ensure!(
        node.distribution.sign_batch().await?.is_none(),
        "nothing new to sign"
    );
    let from_start = t.elapsed().as_secs_f64() * 1000.0;
    // The floor: the same number of two-event commits of the same size, appended
    // straight to the log with the same concurrency.
    let sample = log
        .read_all(
            Context::Registration,
            log.head(Context::Registration).await?,
            1,
        )
        .await?;
    let size = sample.first().map_or(1_000, |c| c.frame.len());
    let evs = events(n as u64, size.saturating_sub(150));
    let bare = ours_append(log, &evs, concurrency).await?;
    arbiters.stop();
    Ok((ours, bare, (from_checkpoint, from_start)))
}

async fn ours_append<L: EventLog>(
    log: &L,
    evs: &[NewEvent],
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut s = futures::stream::iter(evs.iter().enumerate())
        .map(|(i, e)| {
            let stream = demo_stream(i as u64, 64);
            log.append(stream, ExpectedVersion::Any, vec![e.clone()])
        })
        .buffer_unordered(concurrency);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(evs.len() as f64 / started.elapsed().as_secs_f64())
}

/// Builds and signs one export of `n` random keys; returns seconds and the breakdown.
fn export_bench(n: usize) -> (f64, String) {
    use hotaru_protocol::export::{self, SignatureInfo, Signer};
    use hotaru_protocol::{DiagnosisKey, EnIntervalNumber, Tek};
    use rand::RngCore;
    let signer = Signer::from_pkcs8(
        SignatureInfo::new("440", "v1"),
        &Signer::generate_pkcs8(&mut OsRandom::new()),
    )
    .expect("a fresh key");
    let mut r = rand::rng();
    let keys: Vec<DiagnosisKey> = (0..n)
        .map(|i| {
            let mut k = [0u8; 16];
            r.fill_bytes(&mut k);
            DiagnosisKey::daily(
                Tek::from_bytes(k),
                EnIntervalNumber(2_900_000 - 144 * (i % 14) as u32),
            )
        })
        .collect();
    let t0 = Instant::now();
    let files = export::split_batch(
        0,
        3600,
        "440",
        std::slice::from_ref(&signer.info),
        keys,
        export::DEFAULT_MAX_KEYS_PER_FILE,
    );
    let t1 = Instant::now();
    let bins: Vec<Vec<u8>> = files.iter().map(ExportFile::encode).collect();
    let t2 = Instant::now();
    let sigs: Vec<Vec<u8>> = files
        .iter()
        .zip(&bins)
        .map(|(f, b)| export::sign_export(b, f.batch_num, f.batch_size, &[&signer]))
        .collect();
    let t3 = Instant::now();
    let zips: Vec<Vec<u8>> = bins
        .iter()
        .zip(&sigs)
        .map(|(b, s)| export::write_zip(b, s))
        .collect();
    let t4 = Instant::now();
    std::hint::black_box(&zips);
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
    (
        (t4 - t0).as_secs_f64(),
        format!(
            "sort+split {:.0} ms, protobuf {:.0} ms, ECDSA {:.1} ms, zip {:.0} ms, {} bytes zipped",
            ms(t0, t1),
            ms(t1, t2),
            ms(t2, t3),
            ms(t3, t4),
            zips.iter().map(Vec::len).sum::<usize>()
        ),
    )
}

/// Confirms `n` cases and issues their numbers (the setup of the upload benchmarks).
pub(super) async fn issue_numbers(
    node: &hotaru_server::Node<hotaru_log::AnyLog>,
    n: usize,
    today: u32,
) -> anyhow::Result<Vec<hotaru_domain::number::ProcessingNumber>> {
    use hotaru_events::domain::{CaseBasis, CentreId, Day};
    let pb = bar(n as u64, "issuing numbers (not timed)");
    let started = Instant::now();
    let mut numbers = Vec::with_capacity(n);
    for _ in 0..n {
        let case = node
            .registration
            .confirm_case(CentreId(1), CaseBasis::SymptomOnset(Day(today - 2)))
            .await?;
        numbers.push(
            node.registration
                .issue_number(CentreId(1), case)
                .await?
                .number,
        );
        pb.inc(1);
    }
    pb.finish_and_clear();
    tracing::info!(
        numbers = n,
        seconds = started.elapsed().as_secs_f64(),
        "numbers issued (the setup, not in the rates)"
    );
    Ok(numbers)
}
