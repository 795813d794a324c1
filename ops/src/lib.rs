//! The `hotaru` command line: log tools, GAEN tools and benchmarks (later: serve, node,
//! keys, audit, sim). One file per command under `cmd/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hotaru_log::{AnyLog, Backend, NatsConfig};

mod cmd;
mod progress;

/// Hotaru: an open exposure notification platform (COCOA-style, on GAEN).
#[derive(Parser, Debug)]
#[command(name = "hotaru", version, about, propagate_version = true)]
struct Cli {
    /// Log format of diagnostics on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HOTARU_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with the event log: append demo events, tail, verify the hash chain.
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Run the server node: registration, scheduled batch signing, retention.
    Serve(cmd::server::ServeArgs),
    /// Run the whole flow once, narrated: cases, numbers, uploads, a signed and verified batch.
    Demo(cmd::server::DemoArgs),
    /// Export signing keys and the API keys of health centres and operators.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// GAEN tools: derive RPIs and AEMs, inspect and verify export files.
    #[command(subcommand)]
    Gaen(cmd::gaen::GaenCommand),
    /// One device agent (a phone) in a data directory: consent, radio, checks, registration.
    #[command(subcommand)]
    Device(cmd::device::DeviceCommand),
    /// The committee's audit: replay a log or an archive, rebuild and check everything.
    Audit(cmd::audit::AuditArgs),
    /// Run retention once now, as the node does every hour: shred the day keys and delete
    /// the operation logs past their retention, and finish what a crash left half done.
    Retention(cmd::server::RetentionArgs),
    /// A simulated fleet in a BLE world: precision and recall against ground truth, the
    /// release check, or a load test against a running server.
    Sim(cmd::sim::SimArgs),
    /// Benchmarks that report their figures against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

/// Where the event log lives: the embedded store (default) or NATS JetStream.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory of the embedded store [default: $HOTARU_DATA_DIR, else
    /// $XDG_DATA_HOME/hotaru, else ~/.local/share/hotaru]
    #[arg(
        long,
        value_name = "DIR",
        env = "HOTARU_DATA_DIR",
        conflicts_with = "nats"
    )]
    data_dir: Option<PathBuf>,
    /// Use NATS JetStream at this URL instead of the embedded store; several servers of
    /// one cluster are separated by commas (the client moves to another when its server
    /// goes away).
    #[arg(long, value_name = "URL[,URL...]", env = "HOTARU_NATS")]
    nats: Option<String>,
    /// Replicas of each JetStream stream (1 on one server, 3 on a cluster).
    #[arg(long, default_value_t = 1, requires = "nats")]
    nats_replicas: usize,
}

impl StoreArgs {
    /// The backend, saying on stderr which one and where.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        if let Some(url) = &self.nats {
            hotaru_log::server_addrs(url).map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
            let mut cfg = NatsConfig::new(url);
            cfg.replicas = self.nats_replicas;
            tracing::info!(url = %url, replicas = cfg.replicas, "event log on nats jetstream");
            return Ok(Backend::Nats(cfg));
        }
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        tracing::info!(dir = %dir.display(), "event log in the embedded store");
        Ok(Backend::Embedded(dir))
    }

    /// The NATS URL, when that is the backend.
    pub fn nats(&self) -> Option<&str> {
        self.nats.as_deref()
    }

    /// The embedded store's directory, when that is the backend.
    pub fn data_dir(&self) -> Option<PathBuf> {
        if self.nats.is_some() {
            return None;
        }
        self.data_dir.clone().or_else(|| default_data_dir().ok())
    }

    pub async fn open(&self) -> anyhow::Result<AnyLog> {
        Ok(self.backend()?.open().await?)
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("hotaru"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow::anyhow!("no --data-dir given and HOME is not set"))?;
    Ok(PathBuf::from(home).join(".local/share/hotaru"))
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // actix-web's own start and stop lines repeat what `hotaru serve` says itself.
    let filter = EnvFilter::try_from_env("HOTARU_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours for a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // When stderr goes away (its reader exited), a server must keep serving: by
        // default the subscriber reports the failed write with eprintln!, which panics.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Exit status: 0 success, 1 a check failed (e.g. a broken chain), 2 an error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // The server's actors need an actix System (which is a tokio runtime of its own).
    let command = match cli.command {
        Command::Serve(a) => return finish(actix::System::new().block_on(cmd::server::serve(a))),
        Command::Demo(a) => return finish(actix::System::new().block_on(cmd::server::demo(a))),
        Command::Sim(a) => return finish(actix::System::new().block_on(cmd::sim::sim(a))),
        Command::Bench(cmd::bench::BenchCommand::Server(b)) => {
            return finish(actix::System::new().block_on(cmd::bench::server_bench(b)));
        }
        Command::Bench(cmd::bench::BenchCommand::Gateway(b)) => {
            return finish(actix::System::new().block_on(cmd::bench::gateway_bench(b)));
        }
        Command::Bench(cmd::bench::BenchCommand::Start(b)) => {
            return finish(actix::System::new().block_on(cmd::bench::start_bench(b)));
        }
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Log(c) => cmd::log::run(c).await,
            Command::Bench(c) => cmd::bench::run(c).await,
            Command::Gaen(c) => cmd::gaen::run(c),
            Command::Keys(c) => cmd::keys::run(c).await,
            Command::Audit(a) => cmd::audit::run(a).await,
            Command::Retention(a) => cmd::server::retention(a).await,
            Command::Device(c) => cmd::device::run(c).await,
            Command::Serve(_) | Command::Demo(_) | Command::Sim(_) => {
                unreachable!("run in an actix System above")
            }
        }
    });
    finish(result)
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
