//! `hotaru bench`: figures against a baseline measured in the same run, as ratios, since
//! the machine is shared and noisy.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_events::NewEvent;

use crate::cmd::log::demo;

mod audit;
mod gateway;
mod log;
mod matching;
mod server;
mod start;

use audit::AuditBench;
use gateway::GatewayBench;
pub(crate) use gateway::gateway_bench;
use log::LogBench;
use matching::MatchBench;
use server::ServerBench;
pub(crate) use server::server_bench;
use start::StartBench;
pub(crate) use start::start_bench;

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

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Log(b) => log::log_bench(b).await,
        BenchCommand::Match(b) => matching::match_bench(b),
        BenchCommand::Audit(b) => audit::audit_bench(b).await,
        BenchCommand::Server(_) | BenchCommand::Gateway(_) | BenchCommand::Start(_) => {
            unreachable!("run in an actix System by main")
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub(super) enum Which {
    Sled,
    Nats,
    Both,
}

/// `n` demo events with `filler` bytes each.
pub(super) fn events(n: u64, filler: usize) -> Vec<NewEvent> {
    let (clock, ids) = (SystemClock, RandomIds::default());
    (0..n).map(|seq| demo(seq, filler, &clock, &ids)).collect()
}

impl Which {
    /// The backends to measure, embedded first: `false` for sled, `true` for JetStream.
    pub(super) fn backends(self) -> impl Iterator<Item = bool> {
        [false, true]
            .into_iter()
            .filter(move |&nats| !((nats && self == Which::Sled) || (!nats && self == Which::Nats)))
    }
}

/// A fresh, empty store of one backend for a benchmark round; its directory and its
/// nats-server live as long as it.
pub(super) struct Store {
    pub(super) log: hotaru_log::AnyLog,
    _dir: tempfile::TempDir,
    _server: Option<hotaru_test_support::NatsServer>,
}

impl Store {
    pub(super) async fn fresh(nats: bool) -> anyhow::Result<Self> {
        use hotaru_log::{AnyLog, NatsConfig, NatsLog, SledLog};
        let dir = tempfile::tempdir()?;
        let server = nats.then(hotaru_test_support::NatsServer::start);
        let log = match &server {
            Some(s) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(s.url())).await?),
            None => AnyLog::Sled(SledLog::open(dir.path())?),
        };
        Ok(Self {
            log,
            _dir: dir,
            _server: server,
        })
    }
}
