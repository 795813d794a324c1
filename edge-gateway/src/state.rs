//! What the handlers share: the gateway's state.

use std::sync::{Arc, Mutex};

use hotaru_events::Clock;
use hotaru_log::AnyLog;
use hotaru_protocol::random::RandomSource;
use hotaru_protocol::risk::RiskConfiguration;
use hotaru_server::Distribution;
use hotaru_server::commands::Commands;

use crate::chaff::ChaffTimer;
use crate::{limits, metrics};

/// What the handlers share.
#[derive(Clone)]
pub struct Gateway {
    pub log: AnyLog,
    /// Where commands go: this node's actors, or any actor node over NATS.
    pub commands: Commands<AnyLog>,
    pub distribution: Distribution<AnyLog>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn hotaru_actors::IdSource>,
    /// The node's random source (`ids.random()`): padding, chaff tokens and latencies.
    pub random: Arc<dyn RandomSource>,
    pub risk: RiskConfiguration,
    /// Latencies of real uploads answered with success: chaff admitted waits one.
    pub chaff: Arc<ChaffTimer>,
    /// Latencies of real uploads refused by the attempt limit (C): chaff refused by the
    /// limiter's verdict waits one, so a lockout shows no difference in timing either.
    pub chaff_refused: Arc<ChaffTimer>,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: Arc<limits::EdgeLimits>,
    /// Export zips already served (they never change), up to [`FILE_CACHE_BYTES`].
    pub files: FileCache,
    /// The `healthAuthorityID` that `POST /v1/publish` accepts.
    pub health_authority: String,
}

impl Gateway {
    /// The gateway in front of a node's actors, with default risk configuration, a fresh
    /// chaff timer, metrics and file cache, and these per-source limits.
    pub fn for_node(
        node: &hotaru_server::Node<AnyLog>,
        log: AnyLog,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn hotaru_actors::IdSource>,
        limits: Arc<limits::EdgeLimits>,
    ) -> Self {
        Self::new(
            Commands::Local(node.actors()),
            log,
            node.distribution.clone(),
            clock,
            ids,
            limits,
        )
    }

    /// A gateway whose commands go to `commands`; it reads exports and credentials from
    /// `log` itself.
    pub fn new(
        commands: Commands<AnyLog>,
        log: AnyLog,
        distribution: Distribution<AnyLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn hotaru_actors::IdSource>,
        limits: Arc<limits::EdgeLimits>,
    ) -> Self {
        let random = ids.random();
        Self {
            log,
            commands,
            distribution,
            clock,
            ids,
            chaff: Arc::new(ChaffTimer::new(random.clone())),
            chaff_refused: Arc::new(ChaffTimer::for_refusals(random.clone())),
            random,
            risk: RiskConfiguration::default(),
            metrics: Arc::default(),
            limits,
            files: Default::default(),
            health_authority: DEFAULT_HEALTH_AUTHORITY.to_owned(),
        }
    }
}

/// The `healthAuthorityID` accepted unless configured otherwise.
pub const DEFAULT_HEALTH_AUTHORITY: &str = "hotaru";

/// Served export files by path, with their SHA-256.
pub type FileCache =
    Arc<Mutex<std::collections::HashMap<String, (actix_web::web::Bytes, [u8; 32])>>>;

/// Memory for cached export files (a day of batches at COCOA scale fits many times).
pub const FILE_CACHE_BYTES: usize = 256 << 20;

impl Gateway {
    /// Now, by the node's clock, in Unix milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now().0
    }
}
