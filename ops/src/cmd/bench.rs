//! `hotaru bench`: figures against a baseline measured in the same run, as ratios, since
//! the machine is shared and noisy.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_events::{Context, NewEvent};
use hotaru_log::{EventLog, ExpectedVersion, NatsConfig, NatsLog, SledLog};
use hotaru_protocol::export::ExportFile;
use hotaru_protocol::random::OsRandom;

use crate::cmd::log::{demo, demo_stream};
use crate::progress::bar;

#[derive(Subcommand, Debug)]
pub(crate) enum BenchCommand {
    /// Event log appends/s against raw sled batch inserts and raw JetStream publishes of
    /// the same bytes.
    Log(LogBench),
    /// Diagnosis keys matched per second per core against a device's observations, and
    /// the bare floor (HKDF + the RPIs' AES blocks) in the same run.
    Match(MatchBench),
    /// Durable verified uploads per second through the actors, on each backend, against
    /// bare appends of the same commits; and the time to build and sign a 500,000-key
    /// export.
    Server(ServerBench),
    /// Verified uploads per second and p50/p99 latency through the HTTP gateway (loopback),
    /// and export downloads per second against nginx serving the same file.
    Gateway(GatewayBench),
    /// Chain verification per core against the bare SHA-256 links of the same records, and
    /// the time of a full audit of a store of N events.
    Audit(AuditBench),
    /// The node's start time over a log of N registration commits, against a full replay
    /// of them (what the registration's warm-up did before it started at its horizon).
    Start(StartBench),
}

#[derive(Args, Debug)]
pub(crate) struct StartBench {
    /// Registration commits in the log when the node starts (rejected guesses, 99 % of them
    /// older than the limiter's horizon).
    #[arg(long, default_value_t = 1_000_000)]
    registrations: u64,
    #[arg(long, value_enum, default_value = "sled")]
    backend: Which,
}

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

#[derive(Args, Debug)]
pub(crate) struct GatewayBench {
    /// Uploads per backend (each a fresh number with 14 keys).
    #[arg(long, default_value_t = 4_000)]
    uploads: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Downloads of the export file (for the gateway and for nginx each).
    #[arg(long, default_value_t = 2_000)]
    downloads: usize,
    #[arg(long, value_enum, default_value = "both")]
    backend: Which,
}

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

#[derive(Args, Debug)]
pub(crate) struct MatchBench {
    /// Diagnosis keys per measurement.
    #[arg(long, default_value_t = 200_000)]
    keys: usize,
    /// Observed RPIs on the device (14 days of scans).
    #[arg(long, default_value_t = 5_000)]
    observations: usize,
    /// Rounds (floor and matcher alternate; the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Also measure matching split over this many threads (figures per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Which {
    Sled,
    Nats,
    Both,
}

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

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Log(b) => log_bench(b).await,
        BenchCommand::Match(b) => match_bench(b),
        BenchCommand::Audit(b) => audit_bench(b).await,
        BenchCommand::Server(_) | BenchCommand::Gateway(_) | BenchCommand::Start(_) => {
            unreachable!("run in an actix System by main")
        }
    }
}

fn events(n: u64, filler: usize) -> Vec<NewEvent> {
    let (clock, ids) = (SystemClock, RandomIds::default());
    (0..n).map(|seq| demo(seq, filler, &clock, &ids)).collect()
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

/// Raw sled: the same frames keyed by position, one batch and one flush per
/// `concurrency` frames (the most our writer can group).
fn raw_sled(frames: &[Bytes], concurrency: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("raw")?;
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
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("raw")?;
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Row {
    name: &'static str,
    ours: f64,
    raw: f64,
}

async fn log_bench(b: LogBench) -> anyhow::Result<ExitCode> {
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

fn match_bench(b: MatchBench) -> anyhow::Result<ExitCode> {
    use hotaru_protocol::matching::{Matcher, Observation, derivation_floor};
    use hotaru_protocol::{DiagnosisKey, EnIntervalNumber, Metadata, Tek};
    use rand::RngCore;

    let mut rng = rand::rng();
    let mut tek = || {
        let mut k = [0u8; 16];
        rng.fill_bytes(&mut k);
        Tek::from_bytes(k)
    };
    let today = EnIntervalNumber(2_900_000).day_start();
    let start = |n: usize| EnIntervalNumber(today.0 - 144 * (n % 14) as u32);
    // Observations: strangers' RPIs over 14 days, plus 10 contacts who are in the keys.
    let contacts: Vec<Tek> = (0..10).map(|_| tek()).collect();
    let mut obs = Vec::with_capacity(b.observations);
    for i in 0..b.observations {
        let (t, day) = match contacts.get(i) {
            Some(t) => (*t, start(i)),
            None => (tek(), start(i)),
        };
        let interval = EnIntervalNumber(day.0 + (i % 144) as u32);
        let rpi = t.rpik().rpi(interval);
        obs.push(Observation {
            rpi,
            aem: t.aemk().encrypt(&rpi, Metadata::v1_0(0)),
            at: interval.unix_seconds() + 60,
            rssi_dbm: -60,
            peak_rssi_dbm: -60,
            seconds_since_last_scan: 300,
        });
    }
    let mut keys: Vec<DiagnosisKey> = (0..b.keys)
        .map(|n| DiagnosisKey::daily(tek(), start(n)))
        .collect();
    for (i, c) in contacts.iter().enumerate().take(b.observations) {
        keys[i * (b.keys / 10).max(1) % b.keys.max(1)] = DiagnosisKey::daily(*c, start(i));
    }
    let matcher = Matcher::new(obs);
    let threads = b.threads.max(1);
    let (mut floor, mut ours, mut par) = (Vec::new(), Vec::new(), Vec::new());
    let mut found = 0;
    for round in 0..b.rounds.max(1) {
        let t = Instant::now();
        std::hint::black_box(derivation_floor(std::hint::black_box(&keys)));
        floor.push(keys.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        found = std::hint::black_box(matcher.match_keys(std::hint::black_box(&keys))).len();
        ours.push(keys.len() as f64 / t.elapsed().as_secs_f64());
        if threads > 1 {
            let t = Instant::now();
            std::hint::black_box(matcher.match_keys_parallel(&keys, threads));
            par.push(keys.len() as f64 / t.elapsed().as_secs_f64() / threads as f64);
        }
        eprintln!(
            "round {}: floor {:.0} keys/s, matcher {:.0} keys/s",
            round + 1,
            floor[round],
            ours[round]
        );
    }
    let (floor, ours) = (median(floor), median(ours));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "keys: {}, observed RPIs: {}, matches found: {found}, rounds: {} (median), one core",
        b.keys,
        b.observations,
        b.rounds.max(1)
    )?;
    writeln!(out, "{:<40} {:>14}", "measurement", "keys/s/core")?;
    writeln!(
        out,
        "{:<40} {:>14.0}",
        "floor (HKDF + 144 AES blocks per key)", floor
    )?;
    writeln!(out, "{:<40} {:>14.0}", "matcher", ours)?;
    if !par.is_empty() {
        writeln!(
            out,
            "{:<40} {:>14.0}",
            format!("matcher on {threads} threads, per core"),
            median(par)
        )?;
    }
    writeln!(out, "matcher cost / floor cost: {:.3}x", floor / ours)?;
    Ok(ExitCode::SUCCESS)
}

/// `hotaru bench server`, inside an actix System.
pub(crate) async fn server_bench(b: ServerBench) -> anyhow::Result<ExitCode> {
    use hotaru_log::AnyLog;
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut ticks: Vec<(&str, (f64, f64))> = Vec::new();
    let mut out = std::io::stdout().lock();
    for nats in [false, true] {
        if (nats && b.backend == Which::Sled) || (!nats && b.backend == Which::Nats) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let server = nats.then(hotaru_test_support::NatsServer::start);
        let log = match &server {
            Some(s) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(s.url())).await?),
            None => AnyLog::Sled(SledLog::open(dir.path())?),
        };
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

/// Uploads/s through the registration actor, and appends/s of commits of the same size
/// written straight to the log (the floor the actor path is measured against).
/// The server a benchmark runs: no quota, and an attempt budget that covers the uploads
/// in flight (they hold tickets of it, ADR 0004; the excess would be refused with C).
fn bench_config(concurrency: usize) -> hotaru_server::ServerConfig {
    hotaru_server::ServerConfig {
        digest_secret: Some("ab".repeat(32)),
        registration: hotaru_domain::policy::RegistrationPolicy {
            daily_quota_per_centre: u32::MAX,
            ..Default::default()
        },
        limits: hotaru_domain::limiter::LimiterPolicy {
            global_failures: concurrency + 60,
            ..Default::default()
        },
        ..hotaru_server::ServerConfig::default()
    }
}

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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `hotaru bench gateway`, inside an actix System.
pub(crate) async fn gateway_bench(b: GatewayBench) -> anyhow::Result<ExitCode> {
    use hotaru_log::AnyLog;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "uploads: {} per backend (14 keys each, a fresh number each), {} in flight, over HTTP on loopback",
        b.uploads, b.concurrency
    )?;
    writeln!(
        out,
        "{:<12} {:>12} {:>10} {:>10}",
        "backend", "uploads/s", "p50 ms", "p99 ms"
    )?;
    let mut downloads = None;
    for nats in [false, true] {
        if (nats && b.backend == Which::Sled) || (!nats && b.backend == Which::Nats) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let server = nats.then(hotaru_test_support::NatsServer::start);
        let log = match &server {
            Some(s) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(s.url())).await?),
            None => AnyLog::Sled(SledLog::open(dir.path())?),
        };
        // Downloads once, on the first backend measured (they are served from memory).
        let r = gateway_round(&log, &b, downloads.is_none()).await?;
        writeln!(
            out,
            "{:<12} {:>12.0} {:>10.2} {:>10.2}",
            if nats { "jetstream" } else { "sled" },
            r.uploads_per_s,
            r.p50_ms,
            r.p99_ms
        )?;
        if r.downloads.is_some() {
            downloads = r.downloads;
        }
    }
    match downloads {
        Some((bytes, ours, Ok(theirs))) => writeln!(
            out,
            "export downloads ({bytes} bytes, medians of {DOWNLOAD_ROUNDS} alternating rounds): gateway {ours:.0}/s, nginx {theirs:.0}/s, ratio {:.2}",
            ours / theirs
        )?,
        Some((_, ours, Err(e))) => {
            writeln!(out, "export downloads: gateway {ours:.0}/s; nginx: {e}")?
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

struct GatewayRound {
    uploads_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Bytes of the file, the gateway's downloads/s, nginx's (or why not).
    downloads: Option<(usize, f64, Result<f64, String>)>,
}

/// Download rounds, alternating gateway and nginx, so that both see the same machine.
const DOWNLOAD_ROUNDS: usize = 3;

async fn gateway_round(
    log: &hotaru_log::AnyLog,
    b: &GatewayBench,
    with_downloads: bool,
) -> anyhow::Result<GatewayRound> {
    use base64::Engine as _;
    use hotaru_server::Node;
    let config = bench_config(b.concurrency);
    let arbiters = hotaru_actors::Arbiters::per_core();
    let clock: Arc<dyn hotaru_events::Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(RandomIds::default());
    let node = Node::start(log.clone(), &config, clock.clone(), ids.clone(), &arbiters).await?;
    let now = clock.now();
    hotaru_server::signing::add_signing_key(log, "440", 440, now, &*ids).await?;
    let (_, operator) = hotaru_server::credentials::add(
        log,
        hotaru_server::credentials::Role::Operator,
        "bench",
        &OsRandom::new(),
    )
    .await?;
    let today = now.day();
    let numbers = issue_numbers(&node, b.uploads, today).await?;
    let gateway = hotaru_edge_gateway::Gateway::for_node(
        &node,
        log.clone(),
        clock,
        ids,
        hotaru_edge_gateway::limits::EdgeLimits::new(u32::MAX / 2, u32::MAX / 2),
    );
    let (addr, handle) = hotaru_edge_gateway::serve_loopback(gateway)?;
    let base = format!("http://{addr}");
    let stop = handle.handle();
    actix_rt::spawn(handle);
    let http = reqwest::Client::new();
    let mut r = rand::rng();
    let bodies: Vec<String> = numbers
        .iter()
        .map(|n| {
            let keys: Vec<serde_json::Value> = (1..=14u32)
                .map(|d| {
                    let mut k = [0u8; 16];
                    rand::RngCore::fill_bytes(&mut r, &mut k);
                    serde_json::json!({
                        "keyData": base64::engine::general_purpose::STANDARD.encode(k),
                        "rollingStartNumber": (today - d) * 144,
                        "rollingPeriod": 144,
                    })
                })
                .collect();
            serde_json::json!({"keys": keys, "verificationPayload": n.as_str()}).to_string()
        })
        .collect();
    let started = Instant::now();
    let url = format!("{base}/v3/diagnosis");
    let mut lat: Vec<f64> = futures::stream::iter(bodies)
        .map(|body| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let t = Instant::now();
                let resp = http
                    .put(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status() == 200, "upload answered {}", resp.status());
                resp.bytes().await?;
                Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(b.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let uploads_per_s = lat.len() as f64 / started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    // Downloads: sign the batch, then fetch its zip as phones would.
    let signed: serde_json::Value = http
        .post(format!("{base}/v1/admin/batches"))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    let downloads = match signed["batches"][0]["files"][0].as_str() {
        Some(path) if with_downloads && b.downloads > 0 => {
            let url = format!("{base}/{path}");
            let zip = http.get(&url).send().await?.bytes().await?.to_vec();
            let nginx = Nginx::start(&zip).await;
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..DOWNLOAD_ROUNDS {
                ours.push(fetch_many(&http, &url, b.downloads, b.concurrency).await?);
                if let Ok(n) = &nginx {
                    theirs.push(fetch_many(&http, &n.url, b.downloads, b.concurrency).await?);
                }
            }
            let theirs = nginx.map(|_| median(theirs)).map_err(|e| format!("{e:#}"));
            Some((zip.len(), median(ours), theirs))
        }
        _ => None,
    };
    stop.stop(true).await;
    arbiters.stop();
    Ok(GatewayRound {
        uploads_per_s,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        downloads,
    })
}

async fn fetch_many(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|_| async {
            let r = http.get(url).send().await?;
            anyhow::ensure!(r.status() == 200, "download answered {}", r.status());
            r.bytes().await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// nginx (Debian's package) serving one file on a free loopback port; stopped on drop.
struct Nginx {
    url: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(zip: &[u8]) -> anyhow::Result<Self> {
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| anyhow::anyhow!("not installed (apt-get install nginx-light)"))?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("www/exports"))?;
        std::fs::write(dir.path().join("www/exports/batch.zip"), zip)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = format!(
            "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
            d = dir.path().display()
        );
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let child = tokio::process::Command::new(nginx)
            .args([
                "-c",
                &dir.path().join("nginx.conf").to_string_lossy(),
                "-p",
                &dir.path().to_string_lossy(),
            ])
            .kill_on_drop(true)
            .spawn()?;
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/exports/batch.zip");
        for _ in 0..100 {
            if http.get(&url).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            url,
            _child: child,
            _dir: dir,
        })
    }
}

/// Confirms `n` cases and issues their numbers (the setup of the upload benchmarks).
async fn issue_numbers(
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

/// Chain verification (ChainVerifier: split, decode, link, versions) per core against the
/// floor of the bare SHA-256 links over the same records; then a full `audit` of the store
/// (every check, the privacy scan of its files included), timed.
async fn audit_bench(b: AuditBench) -> anyhow::Result<ExitCode> {
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
            scan.push(hotaru_server::audit::ScanInput::file(
                p.display().to_string(),
                p.clone(),
            ));
        }
    }
    let source = hotaru_server::audit::LiveSource {
        log,
        kind: "embedded store",
    };
    let rules = hotaru_server::audit::AuditRules::at(hotaru_events::Clock::now(&SystemClock));
    let report =
        hotaru_server::audit::audit(&source, &rules, scan, &mut |_: &str, _, _| {}).await?;
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

/// `hotaru bench start`, inside an actix System.
pub(crate) async fn start_bench(b: StartBench) -> anyhow::Result<ExitCode> {
    use hotaru_actors::IdSource;
    use hotaru_events::domain::{ProcessingNumberRejected, RejectionReason};
    use hotaru_events::{Clock, DomainEvent, NumberDigest, StreamId, StreamKind, UnixMillis};
    use hotaru_log::AnyLog;
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
    for nats in [false, true] {
        if (nats && b.backend == Which::Sled) || (!nats && b.backend == Which::Nats) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let server = nats.then(hotaru_test_support::NatsServer::start);
        let log = match &server {
            Some(s) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(s.url())).await?),
            None => AnyLog::Sled(SledLog::open(dir.path())?),
        };
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
