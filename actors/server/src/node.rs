//! One server node: the services and their actors, started on the arbiters, over one log.

use std::sync::Arc;

use actix::Addr;
use hotaru_actors::{Arbiters, IdSource};
use hotaru_domain::limiter::LimiterPolicy;
use hotaru_domain::policy::RegistrationPolicy;
use hotaru_events::Clock;
use hotaru_log::{EventLog, LogError, SideStore};
use serde::{Deserialize, Serialize};

use crate::actors::{BatchSignerActor, RegistrationActor, RetentionActor};
use crate::batch::{BatchPolicy, Distribution};
use crate::commands::LocalActors;
use crate::daykeys::DayKeys;
use crate::registration::Registration;

/// The server's configuration (the TOML file of `hotaru serve --config`). Its `Debug`
/// shows no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The secret that keys number digests, hex, at least 32 bytes. Also
    /// `HOTARU_DIGEST_SECRET`.
    pub digest_secret: Option<String>,
    pub registration: RegistrationPolicy,
    pub limits: LimiterPolicy,
    pub batch: BatchPolicy,
    /// Days after which number digests and uploaded keys are shredded.
    pub retention_days: u32,
    /// The HTTP face (read by `hotaru serve`; the edge gateway knows HTTP).
    pub gateway: GatewayConfig,
}

/// How `hotaru serve` runs its HTTP gateway. Its `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The `healthAuthorityID` that Google's v1 publish API accepts.
    pub health_authority_id: String,
    /// PEM certificate chain and private key: with both, the gateway speaks TLS only.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Write requests per source and minute, and the burst allowed.
    pub writes_per_minute: u32,
    pub write_burst: u32,
    /// The secret the edge's source labels are keyed with, hex, at least 32 bytes: the
    /// same on every gateway, so that one client has one label at each. Also
    /// `HOTARU_SOURCE_SECRET`. When absent, derived from the digest secret (which every
    /// node of a deployment shares).
    pub source_secret: Option<String>,
    /// The prefix length that makes one IPv6 source: a /64 is one subscriber's network,
    /// inside which a client may draw a fresh address per request.
    pub ipv6_source_prefix: u8,
    /// The peers (addresses or networks, e.g. `10.0.0.0/8`) allowed to name the client in
    /// `X-Forwarded-For`: the load balancers in front of the gateways. Empty by default:
    /// the peer is the client, and the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field(
                "digest_secret",
                &self
                    .digest_secret
                    .as_ref()
                    .map(|s| crate::Redacted(s.len())),
            )
            .field("registration", &self.registration)
            .field("limits", &self.limits)
            .field("batch", &self.batch)
            .field("retention_days", &self.retention_days)
            .field("gateway", &self.gateway)
            .finish()
    }
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("health_authority_id", &self.health_authority_id)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("writes_per_minute", &self.writes_per_minute)
            .field("write_burst", &self.write_burst)
            .field(
                "source_secret",
                &self
                    .source_secret
                    .as_ref()
                    .map(|s| crate::Redacted(s.len())),
            )
            .field("ipv6_source_prefix", &self.ipv6_source_prefix)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl GatewayConfig {
    /// The source secret's bytes, when one is configured.
    pub fn source_secret(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(hex_secret) = self.source_secret.as_deref() else {
            return Ok(None);
        };
        let secret = hex::decode(hex_secret.trim())
            .map_err(|e| format!("gateway.source_secret is not hex: {e}"))?;
        if secret.len() < 32 {
            return Err("gateway.source_secret must be at least 32 bytes (64 hex digits)".into());
        }
        Ok(Some(secret))
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            health_authority_id: "hotaru".into(),
            tls_cert: None,
            tls_key: None,
            writes_per_minute: 60,
            write_burst: 20,
            source_secret: None,
            ipv6_source_prefix: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            digest_secret: None,
            registration: RegistrationPolicy::default(),
            limits: LimiterPolicy::default(),
            batch: BatchPolicy::default(),
            retention_days: 14,
            gateway: GatewayConfig::default(),
        }
    }
}

impl ServerConfig {
    pub fn secret(&self) -> Result<Vec<u8>, String> {
        let hex_secret = self
            .digest_secret
            .as_deref()
            .ok_or("no digest secret: set HOTARU_DIGEST_SECRET or digest_secret in the config")?;
        let secret = hex::decode(hex_secret.trim())
            .map_err(|e| format!("the digest secret is not hex: {e}"))?;
        if secret.len() < 32 {
            return Err("the digest secret must be at least 32 bytes (64 hex digits)".into());
        }
        Ok(secret)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.registration.validate()?;
        self.batch.validate()?;
        self.secret()?;
        if self.retention_days == 0 {
            return Err("retention_days must be at least 1".into());
        }
        if self.gateway.tls_cert.is_some() != self.gateway.tls_key.is_some() {
            return Err("give both gateway.tls_cert and gateway.tls_key, or neither".into());
        }
        if self.registration.max_keys_per_upload > crate::revision::MAX_TOKEN_KEYS {
            return Err(format!(
                "registration.max_keys_per_upload may be at most {} (what a revision token names)",
                crate::revision::MAX_TOKEN_KEYS
            ));
        }
        self.gateway.source_secret()?;
        if !(1..=128).contains(&self.gateway.ipv6_source_prefix) {
            return Err("gateway.ipv6_source_prefix must be 1 to 128".into());
        }
        if self.gateway.health_authority_id.is_empty() {
            return Err("gateway.health_authority_id must not be empty".into());
        }
        Ok(())
    }
}

/// The running node's services and actors.
pub struct Node<L: EventLog + SideStore + Unpin> {
    pub registration: Registration<L>,
    pub distribution: Distribution<L>,
    pub day_keys: DayKeys<L>,
    pub registration_actor: Addr<RegistrationActor<L>>,
    pub signer: Addr<BatchSignerActor<L>>,
    pub retention: Addr<RetentionActor<L>>,
    log: L,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
}

impl<L: EventLog + SideStore + Unpin> Node<L> {
    /// Builds the services and starts the actors on `arbiters`. Call inside a System.
    pub async fn start(
        log: L,
        config: &ServerConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        arbiters: &Arbiters,
    ) -> Result<Self, LogError> {
        let secret = config.secret().map_err(LogError::Backend)?;
        let day_keys =
            DayKeys::new(log.clone(), &secret, ids.random()).map_err(LogError::Backend)?;
        let registration = Registration::new(
            log.clone(),
            day_keys.clone(),
            clock.clone(),
            ids.clone(),
            config.registration.clone(),
            config.limits.clone(),
        );
        registration.warm_up().await?;
        if let Some(id) = registration.rotate_revision_key_if_due().await? {
            tracing::info!(key = id, "revision key rotated");
        }
        let distribution = Distribution::new(
            log.clone(),
            day_keys.clone(),
            clock.clone(),
            ids.clone(),
            config.batch.clone(),
            config.registration.transmission_risk,
        );
        // Zips a crash left unstored after their batch was recorded: rebuilt before the
        // gateway serves index.txt (docs/runtime-semantics.md, "Record, then act").
        match distribution.store_missing().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                files = n,
                "stored published files a crash had left unstored"
            ),
            Err(e) => tracing::error!(error = %e, "cannot check the published files"),
        }
        let (r, d) = (registration.clone(), distribution.clone());
        let registration_actor = arbiters.start(move |_| RegistrationActor::new(r));
        let signer = arbiters.start(move |_| BatchSignerActor::new(d));
        let (l, k, days) = (log.clone(), day_keys.clone(), config.retention_days);
        let (c, i) = (clock.clone(), ids.clone());
        let retention = arbiters.start(move |_| RetentionActor::new(l, k, c, i, days));
        Ok(Self {
            registration,
            distribution,
            day_keys,
            registration_actor,
            signer,
            retention,
            log,
            clock,
            ids,
        })
    }

    /// This node's actors as the executor of the edge's commands.
    pub fn actors(&self) -> LocalActors<L> {
        LocalActors {
            registration: self.registration_actor.clone(),
            signer: self.signer.clone(),
            log: self.log.clone(),
            clock: self.clock.clone(),
            ids: self.ids.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secret() -> ServerConfig {
        ServerConfig {
            digest_secret: Some("ab".repeat(32)),
            ..ServerConfig::default()
        }
    }

    /// Settings that would break a promise are refused at start, each with its reason.
    #[test]
    fn a_configuration_a_token_or_the_edge_cannot_honour_is_refused() {
        assert_eq!(with_secret().validate(), Ok(()));
        let mut c = with_secret();
        c.registration.max_keys_per_upload = crate::revision::MAX_TOKEN_KEYS + 1;
        assert!(c.validate().unwrap_err().contains("max_keys_per_upload"));
        let mut c = with_secret();
        c.gateway.ipv6_source_prefix = 0;
        assert!(c.validate().unwrap_err().contains("ipv6_source_prefix"));
        let mut c = with_secret();
        c.gateway.source_secret = Some("abcd".into());
        assert!(c.validate().unwrap_err().contains("source_secret"));
        c.gateway.source_secret = Some("cd".repeat(32));
        assert_eq!(c.validate(), Ok(()));
        // Neither secret shows in a Debug of the configuration.
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("abab") && !shown.contains("cdcd"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");
    }
}
