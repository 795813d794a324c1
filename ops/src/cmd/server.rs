//! `hotaru serve` and `hotaru demo`: the server node, and a guided run of the whole flow.

use hotaru_protocol::random::OsRandom;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use hotaru_actors::{Arbiters, IdSource, RandomIds, SystemClock};
use hotaru_domain::upload::SubmittedKey;
use hotaru_events::Clock;
use hotaru_events::domain::{CaseBasis, CentreId, Day};
use hotaru_log::{AnyLog, SideStore};
use hotaru_protocol::export::{ReadLimits, read_zip};
use hotaru_server::actors::{ConfirmCase, IssueNumber, Redeem, SignNow};
use hotaru_server::signing::{add_signing_key, published_keys, verification_keys};
use hotaru_server::{Node, Redemption, ServerConfig};
use ring::rand::SecureRandom;

use crate::StoreArgs;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A TOML configuration file (see docs/configuration.md); HOTARU_* variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the HTTP gateway listens.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "HOTARU_LISTEN"
    )]
    listen: std::net::SocketAddr,
    /// What this process runs: `all` (actors and gateway, the default), `actors` (no
    /// HTTP; answers the gateways' commands over NATS), or `gateway` (HTTP only; sends
    /// commands to the actor nodes over NATS). The last two need --nats.
    #[arg(long, value_enum, default_value_t = Role::All, env = "HOTARU_ROLE")]
    role: Role,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    All,
    Actors,
    Gateway,
}

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only the server's half, narrated: this many health-centre cases upload through the
    /// actors directly (with the mistakes users make), one batch, no phones.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    cases: Option<u32>,
    /// Phones in the demo's fleet.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(20..=100_000))]
    devices: u32,
    /// Simulated days (they end yesterday).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(3..=30))]
    days: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the two reports go: demo-simulation.html and demo-audit.html.
    #[arg(long, value_name = "DIR", default_value = ".")]
    reports: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RetentionArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A TOML configuration file (see docs/configuration.md); HOTARU_* variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Days of retention [default: the configuration's retention_days, 14].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
    retention_days: Option<u32>,
    /// Run as if it were this time (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME")]
    at: Option<jiff::Timestamp>,
}

/// `hotaru retention`: one run of what the node's retention actor does every hour.
pub(crate) async fn retention(a: RetentionArgs) -> anyhow::Result<ExitCode> {
    let log = a.store.open().await?;
    let mut config = load_config(a.config.as_ref(), &log).await?;
    if let Some(d) = a.retention_days {
        config.retention_days = d;
    }
    let clock: Arc<dyn Clock> = match a.at {
        Some(t) => {
            let ms = u64::try_from(t.as_millisecond())
                .map_err(|_| anyhow::anyhow!("--at must be after 1970"))?;
            Arc::new(hotaru_actors::ManualClock::at(hotaru_events::UnixMillis(
                ms,
            )))
        }
        None => Arc::new(SystemClock),
    };
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    let keys = hotaru_server::daykeys::DayKeys::new(
        log.clone(),
        &config.secret().map_err(anyhow::Error::msg)?,
        ids.random(),
    )
    .map_err(anyhow::Error::msg)?;
    let days =
        hotaru_server::retention::expire(&log, &keys, &clock, &ids, config.retention_days).await?;
    let shown: Vec<String> = days
        .iter()
        .map(|d| {
            crate::cmd::log::rfc3339(hotaru_events::UnixMillis::start_of_day(d.0).0)[..10]
                .to_owned()
        })
        .collect();
    writeln!(
        std::io::stdout().lock(),
        "retention {} days: {} day(s) shredded{}{}",
        config.retention_days,
        days.len(),
        if shown.is_empty() { "" } else { ": " },
        shown.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How the edge labels sources: the configured source secret, or one derived from the
/// digest secret, so that every gateway of the deployment gives a client the same label.
fn source_keying(
    config: &ServerConfig,
) -> Result<hotaru_edge_gateway::limits::SourceKeying, String> {
    use hotaru_edge_gateway::limits::SourceKeying;
    let secret = match config.gateway.source_secret()? {
        Some(s) => s,
        None => SourceKeying::derived_secret(&config.secret()?),
    };
    Ok(SourceKeying {
        secret,
        ipv6_prefix: config.gateway.ipv6_source_prefix,
        trusted_proxies: config.gateway.trusted_proxies.clone(),
    })
}

/// The configuration: the file if given, then HOTARU_* overrides, then the digest secret
/// (from the configuration, or kept in the side store beside the data when none is given).
pub(crate) async fn load_config(
    file: Option<&PathBuf>,
    log: &AnyLog,
) -> anyhow::Result<ServerConfig> {
    let mut config: ServerConfig = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the configuration {}", f.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid configuration", f.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Ok(s) = std::env::var("HOTARU_DIGEST_SECRET") {
        config.digest_secret = Some(s);
    }
    if let Ok(s) = std::env::var("HOTARU_SOURCE_SECRET") {
        config.gateway.source_secret = Some(s);
    }
    if let Ok(s) = std::env::var("HOTARU_BATCH_INTERVAL_SECS") {
        config.batch.interval_ms = s.parse::<u64>().context("HOTARU_BATCH_INTERVAL_SECS")? * 1000;
    }
    if let Ok(s) = std::env::var("HOTARU_RETENTION_DAYS") {
        config.retention_days = s.parse().context("HOTARU_RETENTION_DAYS")?;
    }
    if config.digest_secret.is_none() {
        let stored = log.side_get("server", "digest-secret").await?;
        let secret = match stored {
            Some(s) => s,
            None => {
                let mut s = [0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut s)
                    .map_err(|_| anyhow::anyhow!("random source failed"))?;
                let hex_secret = hex::encode(s).into_bytes();
                log.side_create("server", "digest-secret", &hex_secret)
                    .await?;
                log.side_get("server", "digest-secret")
                    .await?
                    .unwrap_or(hex_secret)
            }
        };
        tracing::warn!(
            "no digest secret configured: using one kept beside the data (set HOTARU_DIGEST_SECRET in production)"
        );
        config.digest_secret = Some(String::from_utf8_lossy(&secret).into_owned());
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(config)
}

async fn start(log: &AnyLog, config: &ServerConfig) -> anyhow::Result<(Node<AnyLog>, Arbiters)> {
    let arbiters = Arbiters::per_core();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    let node = Node::start(log.clone(), config, clock, ids, &arbiters).await?;
    Ok((node, arbiters))
}

pub(crate) async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let log = a.store.open().await?;
    let nats = match &log {
        AnyLog::Nats(n) => Some(n.jetstream().client()),
        AnyLog::Sled(_) => None,
    };
    if a.role != Role::All && nats.is_none() {
        anyhow::bail!(
            "--role {:?} needs --nats: gateways and actor nodes meet on NATS",
            a.role
        );
    }
    let config = load_config(a.config.as_ref(), &log).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    // The actors, unless this is a gateway only.
    let node = if a.role == Role::Gateway {
        None
    } else {
        if published_keys(&log, &config.batch.region).await?.is_empty() {
            tracing::warn!(region = %config.batch.region, "no signing key yet: batches wait for `hotaru keys generate`");
        }
        let (node, arbiters) = start(&log, &config).await?;
        let service = match &nats {
            Some(client) => {
                let s = hotaru_server::commands::serve_nats(node.actors(), client.clone()).await?;
                tracing::info!(
                    queue = hotaru_server::commands::QUEUE,
                    "answering commands from gateways over NATS"
                );
                Some(s)
            }
            None => None,
        };
        Some((node, arbiters, service))
    };
    if a.role == Role::Actors {
        tracing::info!(
            batch_every_s = config.batch.interval_ms / 1000,
            retention_days = config.retention_days,
            "actor node running; Ctrl-C or SIGTERM stops it"
        );
        stop_signal().await?;
        tracing::info!("stopping");
        stop_node(node).await;
        return Ok(ExitCode::SUCCESS);
    }
    let limits = hotaru_edge_gateway::limits::EdgeLimits::with_keying(
        config.gateway.writes_per_minute,
        config.gateway.write_burst,
        source_keying(&config).map_err(anyhow::Error::msg)?,
    );
    let mut gateway = match (&node, &nats) {
        (Some((node, _, _)), _) => hotaru_edge_gateway::Gateway::for_node(
            node,
            log.clone(),
            clock.clone(),
            ids.clone(),
            limits,
        ),
        (None, Some(client)) => {
            // Reads (exports, index, credentials) come straight from the log; commands
            // go to the actor nodes.
            let secret = config.secret().map_err(anyhow::Error::msg)?;
            let day_keys =
                hotaru_server::DayKeys::new(log.clone(), &secret, Arc::new(OsRandom::new()))
                    .map_err(anyhow::Error::msg)?;
            let distribution = hotaru_server::Distribution::new(
                log.clone(),
                day_keys,
                clock.clone(),
                ids.clone(),
                config.batch.clone(),
                config.registration.transmission_risk,
            );
            hotaru_edge_gateway::Gateway::new(
                hotaru_server::commands::Commands::Nats(client.clone()),
                log.clone(),
                distribution,
                clock.clone(),
                ids.clone(),
                limits,
            )
        }
        (None, None) => unreachable!("checked above"),
    };
    gateway.health_authority = config.gateway.health_authority_id.clone();
    let tls = match (&config.gateway.tls_cert, &config.gateway.tls_key) {
        (Some(cert), Some(key)) => Some(hotaru_edge_gateway::tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = std::net::TcpListener::bind(a.listen)
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    // SIGINT/SIGTERM: stop accepting, let in-flight requests finish (up to 30 s).
    let server = hotaru_edge_gateway::serve(
        listener,
        gateway,
        hotaru_edge_gateway::ServeOptions {
            tls,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot serve on {}", a.listen))?;
    tracing::info!(
        listen = %a.listen,
        scheme,
        role = ?a.role,
        batch_every_s = config.batch.interval_ms / 1000,
        retention_days = config.retention_days,
        "server running; Ctrl-C or SIGTERM stops it"
    );
    server.await?;
    tracing::info!("stopping");
    stop_node(node).await;
    Ok(ExitCode::SUCCESS)
}

/// Stops taking commands from NATS (answering those taken), then the actors.
async fn stop_node(
    node: Option<(
        Node<AnyLog>,
        Arbiters,
        Option<hotaru_server::commands::CommandService>,
    )>,
) {
    if let Some((node, arbiters, service)) = node {
        if let Some(s) = service {
            s.stop().await;
        }
        // What this node counted of its refusals (A, C, G) since its last tally.
        node.registration.flush_refusals(true).await;
        arbiters.stop();
    }
}

/// Waits for SIGINT or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn random_key(day: u32) -> SubmittedKey {
    let mut k = vec![0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .expect("random source");
    SubmittedKey {
        key_data: k,
        rolling_start: day * 144,
        rolling_period: 144,
        transmission_risk: None,
        report_type: None,
        days_since_onset: None,
    }
}

/// The whole flow, in process, narrated: cases, numbers, uploads (with mistakes), a signed
/// batch, and its verification as a phone would do it.
pub(crate) async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    match a.cases {
        Some(cases) => server_demo(a.store, cases).await,
        None => crate::cmd::sim::whole_story(a.store, a.devices, a.days, a.seed, &a.reports).await,
    }
}

/// The server's half, narrated: cases, numbers, uploads (with mistakes), a signed batch,
/// and its verification as a phone would do it.
async fn server_demo(store: StoreArgs, cases: u32) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let log = store.open().await?;
    let config = load_config(None, &log).await?;
    let region = config.batch.region.clone();
    if published_keys(&log, &region).await?.is_empty() {
        let now = SystemClock.now();
        let ids = RandomIds::default();
        add_signing_key(&log, &region, region.parse().unwrap_or(440), now, &ids).await?;
        writeln!(out, "created the export signing key of region {region}")?;
    }
    let (node, arbiters) = start(&log, &config).await?;
    let today = SystemClock.now().day();
    let centre = CentreId(1);
    let (mut accepted, mut dropped, mut numbers) = (0u32, 0usize, Vec::new());
    writeln!(
        out,
        "{cases} health-centre cases confirmed and given processing numbers ..."
    )?;
    for i in 0..cases {
        let basis = if i % 3 == 0 {
            CaseBasis::Sample(Day(today - 1))
        } else {
            CaseBasis::SymptomOnset(Day(today - 4))
        };
        let case_id = node
            .registration_actor
            .send(ConfirmCase { centre, basis })
            .await??;
        let issued = node
            .registration_actor
            .send(IssueNumber { centre, case_id })
            .await??;
        numbers.push(issued.number);
    }
    writeln!(out, "their phones upload 14 days of keys each ...")?;
    for n in &numbers {
        let keys = (0..14).map(|d| random_key(today - d)).collect();
        let answer = node
            .registration_actor
            .send(Redeem(Redemption {
                number: n.as_str().to_owned(),
                keys,
                idempotency_key: None,
                source: None,
            }))
            .await??;
        accepted += u32::from(answer.accepted);
        dropped += answer.dropped.len();
    }
    writeln!(
        out,
        "  {accepted} keys accepted, {dropped} dropped (before the infectious period)"
    )?;
    // Mistakes users make: a full-width number (A), a wrong number (B), no keys (G).
    for (what, number, keys) in [
        (
            "full-width digits",
            "１２３４５６７８".to_owned(),
            vec![random_key(today - 1)],
        ),
        (
            "a used number",
            numbers[0].as_str().to_owned(),
            vec![random_key(today - 1)],
        ),
        ("no keys", "12345678".to_owned(), vec![]),
    ] {
        let r = node
            .registration_actor
            .send(Redeem(Redemption {
                number,
                keys,
                idempotency_key: None,
                source: None,
            }))
            .await?;
        let letter = match r {
            Err(e) => e
                .public_reason()
                .map_or_else(|| e.to_string(), |r| format!("error {}", r.letter())),
            Ok(_) => "accepted?!".into(),
        };
        writeln!(out, "  an upload with {what}: {letter}")?;
    }
    let batch = node.signer.send(SignNow).await??;
    let vkeys = verification_keys(&log, &region).await?;
    match batch {
        Some(b) => {
            writeln!(
                out,
                "batch {} signed: {} keys (+{} padding) in {} file(s); today's keys are held until 2 h after they expire",
                b.batch_id,
                b.key_count,
                b.padding_count,
                b.files.len()
            )?;
            for f in &b.files {
                let zip = node.distribution.file(f).await?.context("published file")?;
                let e = read_zip(&zip, ReadLimits::default())?;
                let by = e.verify(&vkeys)?;
                writeln!(
                    out,
                    "  {f}: {} bytes, {} keys, signature by key {} {} verifies",
                    zip.len(),
                    e.file.keys.len(),
                    by[0].verification_key_id,
                    by[0].verification_key_version
                )?;
            }
        }
        None => writeln!(
            out,
            "nothing new to publish (keys were published by an earlier run)"
        )?,
    }
    writeln!(
        out,
        "index.txt has {} file(s); `hotaru log verify` checks the chain",
        node.distribution.index().await?.len()
    )?;
    node.registration.flush_refusals(true).await;
    arbiters.stop();
    Ok(ExitCode::SUCCESS)
}
