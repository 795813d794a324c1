//! `hotaru sim`: a simulated fleet in a BLE world, against the server in this process
//! (the embedded store, as `hotaru demo`) or a running Hotaru over HTTP (a load test).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use hotaru_actors::{Arbiters, IdSource, RandomIds};
use hotaru_device_sim::{Figures, SimConfig, Target};
use hotaru_events::{Clock, ManualClock, UnixMillis};
use hotaru_log::{AnyLog, LogScope, NatsConfig, NatsLog, SledLog};
use hotaru_protocol::export::PublicKey;
use hotaru_protocol::risk::Scoring;
use hotaru_protocol::risk::legacy::LegacyScoring;
use hotaru_server::credentials::{self, Role};
use hotaru_server::signing::add_signing_key;
use hotaru_server::{Node, ServerConfig};

#[derive(Args, Debug)]
pub(crate) struct SimArgs {
    /// Where the run keeps its logs: DIR/fleet (the phones' log) and DIR/server (the
    /// in-process server's store). Default: a temporary directory, removed afterwards.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The phones' log (and the in-process server's) on NATS JetStream at this URL, in
    /// the device streams apart from the server's.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Phones in the fleet (people = phones / uptake).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    devices: u32,
    /// Simulated days.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=60))]
    days: u32,
    /// The seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Drive a running Hotaru at this URL instead of the server in this process.
    #[arg(long, value_name = "URL", requires_all = ["centre_key", "operator_key", "public_key"])]
    gateway: Option<String>,
    /// A health centre's API key (with --gateway).
    #[arg(long, value_name = "KEY", env = "HOTARU_CENTRE_KEY")]
    centre_key: Option<String>,
    /// An operator's API key (with --gateway).
    #[arg(long, value_name = "KEY", env = "HOTARU_OPERATOR_KEY")]
    operator_key: Option<String>,
    /// The health authority's export public key, PEM (with --gateway): what the phones
    /// verify every file against.
    #[arg(long, value_name = "PEM")]
    public_key: Option<PathBuf>,
    /// Score with this configuration (JSON: a v2 risk configuration, or a v1 legacy
    /// scoring) instead of the one the server serves.
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    risk_config: Option<PathBuf>,
    /// A named configuration: `cocoa-2020-android` (COCOA 1.1.4-1.2.1 on Android: keys at
    /// transmission risk 0 against a v1 minimum risk score of 21).
    #[arg(long, value_name = "NAME", value_parser = ["cocoa-2020-android"])]
    preset: Option<String>,
    /// Share of people who carry the app.
    #[arg(long, default_value_t = 0.25)]
    uptake: f64,
    /// Share of confirmed app users who register.
    #[arg(long, default_value_t = 0.5)]
    registration_share: f64,
    /// Share of phones that download the files themselves each day; the rest count as
    /// cached and read the fleet's one download [default: 1 with --gateway, else 0].
    #[arg(long, value_name = "SHARE")]
    download_share: Option<f64>,
    /// Each phone derives every key's RPIs itself instead of sharing one key index per
    /// batch: the same result, slower (for tests and benchmarks).
    #[arg(long)]
    no_shared_index: bool,
    /// Threads the phones' shards run on [default: the cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write an HTML report (self-contained, no JavaScript).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// The release check: exit 1 when recall is below --min-recall, or a phone crashed, an
    /// export failed to verify, or an upload was lost.
    #[arg(long)]
    check: bool,
    /// The recall the release check requires.
    #[arg(long, default_value_t = 0.5, requires = "check")]
    min_recall: f64,
}

fn share(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "{name} must be between 0 and 1, not {v}"
    );
    Ok(v)
}

pub(crate) async fn sim(a: SimArgs) -> anyhow::Result<ExitCode> {
    let scoring = match (&a.risk_config, a.preset.as_deref()) {
        (Some(f), _) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let s: Scoring = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a risk configuration", f.display()))?;
            s.validate()?;
            Some(serde_json::to_vec(&s)?)
        }
        (None, Some("cocoa-2020-android")) => Some(serde_json::to_vec(&Scoring::Legacy(
            LegacyScoring::cocoa_2020_android(),
        ))?),
        (None, Some(other)) => anyhow::bail!("unknown preset {other:?}"),
        (None, None) => None,
    };
    let today = hotaru_events::SystemClock.now().day();
    let mut config = SimConfig {
        devices: a.devices,
        days: a.days,
        seed: a.seed,
        registration_share: share("--registration-share", a.registration_share)?,
        scoring,
        preset: a.preset.clone(),
        share_index: !a.no_shared_index,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        direct_share: share(
            "--download-share",
            a.download_share
                .unwrap_or(if a.gateway.is_some() { 1.0 } else { 0.0 }),
        )?,
        ..SimConfig::default()
    };
    config.population.uptake = share("--uptake", a.uptake)?;
    anyhow::ensure!(config.population.uptake > 0.0, "--uptake must be above 0");
    let temp = match &a.data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary directory")?),
    };
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("created").path().to_owned());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let fleet_log = match &a.nats {
        Some(url) => AnyLog::Nats(
            NatsLog::connect(&NatsConfig::new(url).devices())
                .await
                .with_context(|| format!("cannot reach NATS at {url}"))?,
        ),
        None => AnyLog::Sled(
            SledLog::open_scoped(&dir.join("fleet"), LogScope::Device)
                .with_context(|| format!("cannot open the fleet's log in {}", dir.display()))?,
        ),
    };
    anyhow::ensure!(
        hotaru_log::EventLog::head(&fleet_log, hotaru_events::Context::Device).await? == 0,
        "the fleet's log already holds phones (an earlier run): remove it or give another --data-dir"
    );
    let mut server = None;
    let target = match &a.gateway {
        Some(url) => {
            // A running server keeps its own clock: the simulated days end yesterday.
            config.start_day = today - config.days;
            let pem = a.public_key.as_ref().expect("required by clap");
            let text = std::fs::read_to_string(pem)
                .with_context(|| format!("cannot read {}", pem.display()))?;
            Target {
                gateway: url.clone(),
                centre_key: a.centre_key.clone().expect("required by clap"),
                operator_key: a.operator_key.clone().expect("required by clap"),
                public_key: PublicKey::from_pem(&text)
                    .with_context(|| format!("{} is not a public key", pem.display()))?,
                server_clock: None,
            }
        }
        None => {
            let s =
                InProcess::open(&dir.join("server"), a.nats.as_deref(), config.start_day).await?;
            let t = s.target.clone();
            server = Some(s);
            t
        }
    };
    if a.check && config.devices < 20 {
        tracing::warn!("a release check on fewer than 20 phones says little");
    }
    let bars = Bars::new(
        config.days,
        config.devices,
        !a.json && std::io::stderr().is_terminal(),
    );
    let mut progress = |step: hotaru_device_sim::sim::Step<'_>| bars.update(step);
    let figures = hotaru_device_sim::run(&config, &target, fleet_log, &mut progress).await?;
    bars.finish();
    if let Some(s) = server {
        s.stop();
    }
    if let Some(path) = &a.report {
        std::fs::write(path, hotaru_device_sim::report::html(&figures, &config))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&figures)?)?;
        } else {
            write!(out, "{}", figures.table())?;
        }
    }
    if a.check {
        let failures = release_check(&figures, a.min_recall);
        for f in &failures {
            eprintln!("release check failed: {f}");
        }
        if !failures.is_empty() {
            return Ok(ExitCode::from(1));
        }
        eprintln!(
            "release check passed: recall {:.3} >= {}",
            figures.recall, a.min_recall
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the release check fails, if it does.
pub(crate) fn release_check(f: &Figures, min_recall: f64) -> Vec<String> {
    let mut out = Vec::new();
    if f.true_contacts == 0 {
        out.push("no true close contact of a registered case: nothing was tested".into());
    }
    if f.recall < min_recall {
        out.push(format!(
            "recall {:.3} is below {min_recall} ({} of {} true close contacts notified)",
            f.recall, f.true_contacts_notified, f.true_contacts
        ));
    }
    if f.phones_crashed > 0 {
        out.push(format!(
            "{} phones crashed: {:?}",
            f.phones_crashed, f.crashes
        ));
    }
    if f.exports_refused > 0 || f.exports_unverifiable > 0 {
        out.push(format!(
            "{} export files refused by phones, {} unverifiable",
            f.exports_refused, f.exports_unverifiable
        ));
    }
    if f.uploads_lost > 0 {
        out.push(format!(
            "{} accepted keys were never published",
            f.uploads_lost
        ));
    }
    out
}

/// Progress bars on a terminal: the days (with the phase of the day), and the phones
/// through the day's check.
pub(crate) struct Bars {
    bars: Option<(
        indicatif::MultiProgress,
        indicatif::ProgressBar,
        indicatif::ProgressBar,
    )>,
}

impl Bars {
    pub(crate) fn new(days: u32, phones: u32, show: bool) -> Self {
        let bars = show.then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = |t: &str| {
                indicatif::ProgressStyle::with_template(t)
                    .expect("a valid template")
                    .progress_chars("=> ")
            };
            let days_bar = multi.add(indicatif::ProgressBar::new(u64::from(days)));
            days_bar.set_style(style(
                "day    {pos:>7}/{len:7} [{bar:30}] {elapsed_precise} {msg}",
            ));
            let phones_bar = multi.add(indicatif::ProgressBar::new(u64::from(phones)));
            phones_bar.set_style(style("phones {pos:>7}/{len:7} [{bar:30}] checked today"));
            (multi, days_bar, phones_bar)
        });
        Self { bars }
    }

    pub(crate) fn update(&self, step: hotaru_device_sim::sim::Step<'_>) {
        if let Some((_, days, phones)) = &self.bars {
            days.set_position(u64::from(step.day));
            days.set_message(step.phase.to_owned());
            phones.set_length(step.phones);
            phones.set_position(step.phones_checked);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some((multi, days, phones)) = &self.bars {
            days.finish_and_clear();
            phones.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

/// The server in this process, on a clock the simulation moves: the embedded store in
/// `dir` (or NATS), a signing key, a health centre and an operator, the gateway on a free
/// loopback port with limits wide enough for a fleet behind one address.
pub(crate) struct InProcess {
    pub(crate) target: Target,
    /// The server's log, for the audit at the end of a demo.
    #[allow(dead_code)]
    pub(crate) log: AnyLog,
    pub(crate) arbiters: Arbiters,
    pub(crate) http: actix_web::dev::ServerHandle,
    _node: Box<dyn std::any::Any>,
}

impl InProcess {
    /// Opens the server's log in `dir` (or on NATS) and starts the server on it.
    pub(crate) async fn open(
        dir: &std::path::Path,
        nats: Option<&str>,
        start_day: u32,
    ) -> anyhow::Result<Self> {
        let log = match nats {
            Some(url) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(url)).await?),
            None => AnyLog::Sled(
                SledLog::open(dir).with_context(|| format!("cannot open {}", dir.display()))?,
            ),
        };
        Self::start(log, start_day).await
    }

    /// Starts the server on `log`, which must be empty: the simulated days start at
    /// `start_day` and a log with events has days of its own.
    pub(crate) async fn start(log: AnyLog, start_day: u32) -> anyhow::Result<Self> {
        for ctx in hotaru_events::Context::SERVER {
            anyhow::ensure!(
                hotaru_log::EventLog::head(&log, ctx).await? == 0,
                "the store already holds a Hotaru log (an earlier run): a simulation needs an \
                 empty one; remove it or give another --data-dir"
            );
        }
        let clock = ManualClock::at(UnixMillis::start_of_day(start_day));
        let config = ServerConfig {
            digest_secret: Some(hex_secret()),
            // The whole fleet reaches this server from one loopback address, one source:
            // its allowance of failures and guesses in flight is the fleet's.
            limits: hotaru_domain::limiter::LimiterPolicy {
                source_failures: 1_000_000,
                ..Default::default()
            },
            ..ServerConfig::default()
        };
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
        let arbiters = Arbiters::new(2);
        let node =
            Node::start(log.clone(), &config, shared.clone(), ids.clone(), &arbiters).await?;
        let now = clock.now();
        let public_key = add_signing_key(
            &log,
            &config.batch.region,
            config.batch.region.parse().unwrap_or(440),
            now,
            &*ids,
        )
        .await?;
        let (_, centre) = credentials::add(
            &log,
            Role::Centre,
            "simulated health centre",
            &*ids.random(),
        )
        .await?;
        let (_, operator) =
            credentials::add(&log, Role::Operator, "simulation", &*ids.random()).await?;
        let limits = hotaru_edge_gateway::limits::EdgeLimits::new(10_000_000, 1_000_000);
        let gateway =
            hotaru_edge_gateway::Gateway::for_node(&node, log.clone(), shared, ids, limits);
        let (addr, server) =
            hotaru_edge_gateway::serve_loopback(gateway).context("cannot serve on 127.0.0.1")?;
        let port = addr.port();
        let http = server.handle();
        actix_rt::spawn(server);
        Ok(Self {
            target: Target {
                gateway: format!("http://127.0.0.1:{port}"),
                centre_key: centre,
                operator_key: operator,
                public_key,
                server_clock: Some(clock),
            },
            log,
            arbiters,
            http,
            _node: Box::new(node),
        })
    }

    pub(crate) fn stop(self) {
        drop(self.http.stop(true));
        self.arbiters.stop();
    }
}

/// A fresh digest secret for the in-process server (its numbers never outlive the run).
fn hex_secret() -> String {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("random");
    hex::encode(b)
}

/// `hotaru demo`: the whole story in one command on the store of `store`. The server
/// runs in this process on a clock the simulation moves. A fleet of phones lives through
/// the days that end yesterday: they meet, health centres confirm cases, patients register
/// from their phones, batches are signed, phones download, verify, match and are notified,
/// and the notified walk the guidance. Then the committee's audit replays the server's log.
/// Both reports are written.
pub(crate) async fn whole_story(
    store: crate::StoreArgs,
    devices: u32,
    days: u32,
    seed: u64,
    reports: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let log = store.open().await?;
    let fleet_log = match (store.nats(), store.data_dir()) {
        (Some(url), _) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(url).devices()).await?),
        (None, Some(dir)) => {
            let mut name = dir.file_name().unwrap_or_default().to_owned();
            name.push(".fleet");
            let fleet = dir.with_file_name(name);
            // The phones are the demo's own: a new run starts them afresh.
            if fleet.exists() {
                std::fs::remove_dir_all(&fleet)
                    .with_context(|| format!("cannot remove {}", fleet.display()))?;
            }
            AnyLog::Sled(SledLog::open_scoped(&fleet, LogScope::Device)?)
        }
        (None, None) => anyhow::bail!("no --data-dir and no default data directory"),
    };
    anyhow::ensure!(
        hotaru_log::EventLog::head(&fleet_log, hotaru_events::Context::Device).await? == 0,
        "the phones' streams on NATS already hold a fleet (an earlier demo): use a fresh server"
    );
    let today = hotaru_events::SystemClock.now().day();
    let config = SimConfig {
        devices,
        days,
        seed,
        start_day: today - days,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..SimConfig::default()
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Hotaru demo: a health authority's server and {devices} phones, {days} simulated days ending yesterday"
    )?;
    let server = InProcess::start(log.clone(), config.start_day).await?;
    let target = server.target.clone();
    let bars = Bars::new(config.days, config.devices, std::io::stderr().is_terminal());
    let mut progress = |step: hotaru_device_sim::sim::Step<'_>| bars.update(step);
    let figures = hotaru_device_sim::run(&config, &target, fleet_log, &mut progress).await?;
    bars.finish();
    write!(out, "{}", figures.table())?;
    writeln!(
        out,
        "  the notified walked the guidance: {} screens shown",
        figures.guidance_screens
    )?;
    // The committee's audit of the server's log, as of the simulation's last evening.
    let at = target
        .server_clock
        .as_ref()
        .map_or_else(|| hotaru_events::SystemClock.now(), Clock::now);
    let source = hotaru_audit::LiveSource {
        log: log.clone(),
        kind: if store.nats().is_some() {
            "nats"
        } else {
            "sled"
        },
    };
    let report = hotaru_audit::audit(
        &source,
        &hotaru_audit::AuditRules::at(at),
        Vec::new(),
        &mut |_, _, _| {},
    )
    .await?;
    server.stop();
    writeln!(out, "the committee's audit of the server's log:")?;
    for c in &report.checks {
        writeln!(
            out,
            "  {:<12} {}",
            c.name,
            if c.passed { "pass" } else { "FAIL" }
        )?;
    }
    std::fs::create_dir_all(reports)
        .with_context(|| format!("cannot create {}", reports.display()))?;
    let sim_path = reports.join("demo-simulation.html");
    let audit_path = reports.join("demo-audit.html");
    std::fs::write(
        &sim_path,
        hotaru_device_sim::report::html(&figures, &config),
    )
    .with_context(|| format!("cannot write {}", sim_path.display()))?;
    std::fs::write(&audit_path, hotaru_audit::report::html(&report))
        .with_context(|| format!("cannot write {}", audit_path.display()))?;
    writeln!(
        out,
        "reports: {} and {}",
        sim_path.display(),
        audit_path.display()
    )?;
    let ok = report.passed && figures.phones_crashed == 0 && figures.uploads_lost == 0;
    writeln!(
        out,
        "{}",
        if ok {
            "the story holds: every check passed"
        } else {
            "something failed: see above"
        }
    )?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
