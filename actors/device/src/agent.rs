//! The agent: the device's rules with their I/O. It loads its state by replaying its own
//! log, draws keys from the injected RNG, reads the time from the injected clock, keeps
//! records in its vault, and talks to the server only through [`GatewayClient`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hotaru_events::device::{
    ExportVerdict, ExposureMatched, GuidanceAnswer, GuidanceShown, MatchedWindow,
    RegistrationOutcome, ScanRecord,
};
use hotaru_events::domain::{Day, DeviceId, LogId};
use hotaru_events::{
    Clock, DAY_MS, DomainEvent, EventId, NewEvent, StreamId, StreamKind, UnixMillis,
};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};
use hotaru_protocol::crypto::{EnIntervalNumber, Metadata, Tek};
use hotaru_protocol::export::{PublicKey, ReadLimits, read_zip};
use hotaru_protocol::keys::DiagnosisKey;
use hotaru_protocol::matching::{Matcher, Observation};
use hotaru_protocol::random::Random;
use hotaru_protocol::risk::legacy::LegacyExposure;
use hotaru_protocol::risk::{DayRisk, Scoring, window_score};

use crate::client::{ClientError, ExportSource, GatewayClient, UploadKey, chaff_body, upload_body};
use crate::radio::{Advertisement, Scan};
use crate::reference;
use crate::rules::{self, CheckResult, DeviceState, RETENTION_DAYS, RuleError};
use crate::vault::{StoredScan, Vault, VaultError};

/// Reads an export file and verifies its signature against the health authority's key
/// before any key is read: the keys only when it verifies.
pub fn verify_export(zip: &[u8], public_key: &PublicKey) -> (ExportVerdict, Vec<DiagnosisKey>) {
    match read_zip(zip, ReadLimits::default()) {
        Err(_) => (ExportVerdict::Malformed, Vec::new()),
        Ok(signed) => match signed.verify_with(public_key) {
            Ok(_) => (ExportVerdict::Verified, signed.file.keys),
            Err(_) => (ExportVerdict::BadSignature, Vec::new()),
        },
    }
}

/// The app version in operation logs.
pub const APP_VERSION: &str = concat!("hotaru-device ", env!("CARGO_PKG_VERSION"));

/// Why the agent could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// A rule refused the command; nothing was recorded.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The device's log failed: retry; nothing half-done is kept.
    #[error("the device's log: {0}")]
    Log(#[from] LogError),
    /// The encrypted store failed or is damaged.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The server could not be reached (or refused in a way the app does not expect).
    #[error(transparent)]
    Server(#[from] ClientError),
    /// The exposure configuration served is unusable: nothing was scored with it.
    #[error("the exposure configuration is unusable: {0}")]
    Configuration(String),
}

/// How the agent retries a request that failed at the network or with a 5xx.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    /// The first wait; each next one doubles, with up to 50 % jitter from the RNG.
    pub first_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_wait: Duration::from_millis(500),
        }
    }
}

/// The agent's configuration (mutable state lives in its state, not here).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The health authority's public key: export files are verified against it before
    /// any key is read.
    pub public_key: Option<PublicKey>,
    pub retry: Retry,
    /// Export files checked per day at most.
    pub max_files_per_day: usize,
    /// The OS named in operation logs.
    pub os: String,
    /// Score with this (JSON: a [`hotaru_protocol::risk::Scoring`]) instead of the
    /// configuration the server serves: a simulated fleet's `--risk-config` or preset.
    pub scoring: Option<Arc<[u8]>>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            public_key: None,
            retry: Retry::default(),
            max_files_per_day: rules::MAX_FILES_PER_DAY,
            os: std::env::consts::OS.to_owned(),
            scoring: None,
        }
    }
}

/// What one check found.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    pub files: usize,
    pub refused_files: usize,
    pub keys: u32,
    pub matches: u32,
    /// A notification was raised by this check.
    pub notified: bool,
    /// The exposure screen after the check.
    pub exposures: Vec<DayRisk>,
}

/// The status screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub consented: bool,
    pub started: Option<Day>,
    pub days_of_use: u32,
    pub bluetooth_on: bool,
    pub exposure_logging_on: bool,
    pub exposures: Vec<DayRisk>,
    pub notifications: usize,
    pub registered: bool,
    pub keys_held: usize,
}

/// The advertisement in use and when it rotates.
#[derive(Clone, Copy, Debug)]
struct Rotation {
    adv: Advertisement,
    until: UnixMillis,
    day: u32,
}

/// One device agent over its own log `L` and store `S`.
pub struct Agent<L, S> {
    log: L,
    store: S,
    stream: StreamId,
    state: DeviceState,
    vault: Option<Vault<S>>,
    clock: Arc<dyn Clock>,
    random: Box<dyn Random>,
    config: AgentConfig,
    rotation: Option<Rotation>,
    last_scan: Option<u64>,
    next_chaff: Option<UnixMillis>,
    /// The day housekeeping last ran.
    housekept: Option<u32>,
    /// Today's RPIK and AEMK (derived from the sealed TEK once a day).
    day_keys: Option<(
        u32,
        hotaru_protocol::crypto::Rpik,
        hotaru_protocol::crypto::Aemk,
    )>,
}

impl<L: EventLog, S: SideStore> Agent<L, S> {
    /// Opens the agent of stream `device.<name>` by replaying its log, and finishes any
    /// expiry a crash interrupted (the event is recorded before the key is destroyed).
    pub async fn open(
        log: L,
        store: S,
        name: &str,
        clock: Arc<dyn Clock>,
        random: Box<dyn Random>,
        config: AgentConfig,
    ) -> Result<Self, AgentError> {
        let stream = StreamId::new(StreamKind::Device, name)
            .map_err(|e| AgentError::Log(LogError::Backend(e.to_string())))?;
        let mut state = DeviceState::default();
        for c in log.read_stream(&stream).await? {
            for env in c.commit.envelopes() {
                let env = env.map_err(|e| LogError::Corrupt {
                    context: stream.context(),
                    position: c.position,
                    reason: e.to_string(),
                })?;
                state.apply(&env);
            }
        }
        let vault = state.device_id.map(|id| Vault::new(store.clone(), id));
        let agent = Self {
            log,
            store,
            stream,
            state,
            vault,
            clock,
            random,
            config,
            rotation: None,
            last_scan: None,
            next_chaff: None,
            housekept: None,
            day_keys: None,
        };
        if let Some(v) = &agent.vault {
            for day in &agent.state.expired {
                v.destroy_day(*day).await?;
            }
        }
        Ok(agent)
    }

    /// Days whose records the encrypted store holds: (scans, sightings) of each.
    pub async fn stored_days(&mut self) -> Result<BTreeMap<u32, (u32, u32)>, AgentError> {
        let vault = self.vault()?.clone();
        Ok(vault.stored_days(&mut *self.random).await?)
    }

    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Appends the decided events as one commit and applies them.
    async fn record(&mut self, events: Vec<DomainEvent>) -> Result<(), AgentError> {
        if events.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let correlation = EventId::new(now, self.random.array());
        let new: Vec<NewEvent> = events
            .into_iter()
            .map(|e| {
                let mut n = NewEvent::new(EventId::new(now, self.random.array()), now, e);
                n.correlation_id = correlation;
                n
            })
            .collect();
        let appended = self
            .log
            .append(
                self.stream.clone(),
                ExpectedVersion::Exact(self.state.version),
                new.clone(),
            )
            .await?;
        for (i, n) in new.into_iter().enumerate() {
            let env = hotaru_events::Envelope {
                event_id: n.event_id,
                stream: self.stream.clone(),
                version: appended.first_version + i as u64,
                position: appended.position,
                index: i as u32,
                event_type: n.event.event_type(),
                schema_version: n.event.event_type().current_version(),
                occurred_at: n.occurred_at,
                causation_id: n.causation_id,
                correlation_id: n.correlation_id,
                trace: n.trace,
                event: n.event,
            };
            self.state.apply(&env);
        }
        Ok(())
    }

    fn vault(&self) -> Result<&Vault<S>, AgentError> {
        self.vault
            .as_ref()
            .ok_or(AgentError::Rule(RuleError::NoConsent))
    }

    /// First start: the user consents. Nothing is advertised, scanned or stored before.
    pub async fn consent(&mut self, model: u16) -> Result<DeviceId, AgentError> {
        let id = DeviceId(self.random.array());
        let events = rules::decide_consent(&self.state, id, model)?;
        self.record(events).await?;
        self.vault = Some(Vault::new(self.store.clone(), id));
        self.housekeeping().await?;
        Ok(id)
    }

    /// The OS's Bluetooth and exposure-logging switches.
    pub async fn set_radio(
        &mut self,
        bluetooth_on: bool,
        exposure_logging_on: bool,
    ) -> Result<(), AgentError> {
        let events = rules::decide_settings(&self.state, bluetooth_on, exposure_logging_on)?;
        self.record(events).await?;
        if !self.state.logging() {
            self.rotation = None;
        }
        Ok(())
    }

    /// Withdrawal: recorded, then every key and record destroyed; the state is empty.
    pub async fn withdraw(&mut self) -> Result<(), AgentError> {
        let events = rules::decide_withdraw(&self.state)?;
        let vault = self.vault()?.clone();
        self.record(events).await?;
        vault.destroy_all().await?;
        self.vault = None;
        self.rotation = None;
        self.day_keys = None;
        Ok(())
    }

    /// Today's TEK, rolled when missing (while logging); closes past days' records and
    /// expires what is 14 days old (event first, then deletion).
    pub async fn housekeeping(&mut self) -> Result<(), AgentError> {
        if !self.state.consented() {
            return Ok(());
        }
        let now = self.clock.now();
        let today = now.day();
        // Once a day is enough: closing and expiry change only when the day does.
        if self.housekept == Some(today)
            && (!self.state.logging() || self.state.teks.contains_key(&today))
        {
            return Ok(());
        }
        if self.state.logging() && !self.state.teks.contains_key(&today) {
            let tek = Tek::generate(&mut *self.random);
            let vault = self.vault()?.clone();
            let sealed = vault
                .seal_tek(today, tek.as_bytes(), &mut *self.random)
                .await?;
            let events = rules::decide_roll(&self.state, today * 144, sealed)?;
            self.record(events).await?;
        }
        let vault = self.vault()?.clone();
        // Only the days housekeeping closes are opened and counted.
        let state = &self.state;
        let stored = vault
            .stored_days_counting(|d| rules::closes(state, today, d), &mut *self.random)
            .await?;
        let events = rules::decide_housekeeping(&self.state, now, &stored)?;
        let expired: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                DomainEvent::RecordsExpired(r) => Some(r.day.0),
                _ => None,
            })
            .collect();
        self.record(events).await?;
        for day in expired {
            vault.destroy_day(day).await?;
        }
        self.housekept = Some(today);
        Ok(())
    }

    async fn tek_of(&mut self, day: u32) -> Result<Option<Tek>, AgentError> {
        let Some((_, Some(sealed))) = self.state.teks.get(&day).cloned() else {
            return Ok(None);
        };
        let vault = self.vault()?.clone();
        Ok(vault
            .open_tek(&sealed, &mut *self.random)
            .await?
            .map(Tek::from_bytes))
    }

    /// What to advertise now (`None` while not logging). The RPI is the one of the
    /// interval the rotation began in; it rotates, with the address, every 10-20 minutes.
    pub async fn advertisement(&mut self) -> Result<Option<Advertisement>, AgentError> {
        let now = self.clock.now();
        self.advertisement_at(now).await
    }

    /// Everything advertised from the clock's now until `until` or the end of today,
    /// whichever comes first: each advertisement with when it starts and ends. The same
    /// rotations, keys and draws as asking [`Self::advertisement`] all along; a simulated
    /// radio asks for a day at once.
    pub async fn advertisements_until(
        &mut self,
        until: UnixMillis,
    ) -> Result<Vec<(UnixMillis, UnixMillis, Advertisement)>, AgentError> {
        let mut t = self.clock.now();
        let midnight = UnixMillis::start_of_day(t.day() + 1);
        let until = until.min(midnight);
        // Rotations last at least 10 minutes.
        let span = until.0.saturating_sub(t.0) / hotaru_events::INTERVAL_MS + 1;
        let mut out = Vec::with_capacity(usize::try_from(span).unwrap_or(0));
        while t < until {
            let Some(adv) = self.advertisement_at(t).await? else {
                break;
            };
            let end = self.rotation.map_or(until, |r| r.until.min(until));
            out.push((t, end, adv));
            t = end;
        }
        if t >= midnight {
            // The day's rotations are all out: its keys are no longer in use (a fleet's
            // million phones would otherwise hold two expanded AES keys each overnight).
            self.day_keys = None;
        }
        Ok(out)
    }

    async fn advertisement_at(
        &mut self,
        now: UnixMillis,
    ) -> Result<Option<Advertisement>, AgentError> {
        if !self.state.logging() {
            self.rotation = None;
            return Ok(None);
        }
        if let Some(r) = self.rotation
            && now < r.until
            && r.day == now.day()
        {
            return Ok(Some(r.adv));
        }
        self.housekeeping().await?;
        let day = now.day();
        if self.day_keys.as_ref().is_none_or(|(d, _, _)| *d != day) {
            let Some(tek) = self.tek_of(day).await? else {
                return Ok(None);
            };
            // Today's keys stay in memory while in use, as the OS keeps them.
            self.day_keys = Some((day, tek.rpik(), tek.aemk()));
        }
        let (_, rpik, aemk) = self.day_keys.as_ref().expect("set above");
        let interval = EnIntervalNumber::from_unix_seconds(now.as_secs());
        let rpi = rpik.rpi(interval);
        let tx = reference::model(self.state.model).tx_power_dbm;
        let aem = aemk.encrypt(&rpi, Metadata::v1_0(tx));
        let mut address: [u8; 6] = self.random.array();
        address[0] &= 0x3f; // non-resolvable private address
        let minutes = 10 + self.random.below(11);
        let adv = Advertisement {
            rpi: rpi.0,
            aem: aem.0,
            address,
        };
        self.rotation = Some(Rotation {
            adv,
            until: now.plus_millis(minutes * 60_000),
            day: now.day(),
        });
        Ok(Some(adv))
    }

    /// Records scans as the radio delivered them (nothing while not logging): one record
    /// per scan and RPI, with the mean and peak RSSI corrected for this model, and the
    /// time since the previous scan (at most 300 s, GAEN's cap). `seconds` overrides it.
    pub async fn record_scans(
        &mut self,
        scans: &[Scan],
        seconds: Option<u16>,
    ) -> Result<usize, AgentError> {
        if !self.state.logging() {
            return Ok(0);
        }
        let correction = i16::from(reference::model(self.state.model).rssi_correction_db);
        let mut out = Vec::new();
        for scan in scans {
            let at = scan.at.as_secs();
            let since = match (seconds, self.last_scan) {
                (Some(s), _) => s,
                (None, Some(last)) if at > last => (at - last).min(300) as u16,
                _ => 300,
            };
            self.last_scan = Some(at);
            let mut by_rpi: BTreeMap<[u8; 16], ([u8; 4], Vec<i16>)> = BTreeMap::new();
            for s in &scan.sightings {
                by_rpi
                    .entry(s.rpi)
                    .or_insert((s.aem, Vec::new()))
                    .1
                    .push(i16::from(s.rssi_dbm) + correction);
            }
            for (rpi, (aem, rssi)) in by_rpi {
                let mean = rssi.iter().sum::<i16>() / rssi.len() as i16;
                let peak = *rssi.iter().max().expect("non-empty");
                out.push(StoredScan {
                    at,
                    rpi,
                    aem,
                    rssi_dbm: mean.clamp(-128, 127) as i8,
                    peak_rssi_dbm: peak.clamp(-128, 127) as i8,
                    seconds_since_last_scan: since,
                });
            }
        }
        let vault = self.vault()?.clone();
        vault.add_records(&out, &mut *self.random).await?;
        Ok(out.len())
    }

    async fn retrying<T, F, Fut>(&mut self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut wait = self.config.retry.first_wait;
        let mut attempt = 1;
        loop {
            match f().await {
                Err(ClientError::Unavailable(e)) if attempt < self.config.retry.attempts => {
                    let jitter = self.random.below(wait.as_millis() as u64 / 2 + 1);
                    tracing::debug!(attempt, error = %e, "request failed; retrying");
                    tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The daily check: the configuration, index.txt and the files not seen yet (at most
    /// 20 a day), each verified against the health authority's key before a key is read;
    /// matched against the records of the last 14 days and scored by the one risk rule.
    pub async fn check<C: ExportSource>(&mut self, client: &C) -> Result<CheckReport, AgentError> {
        self.housekeeping().await?;
        let vault = self.vault()?.clone();
        let public_key =
            self.config.public_key.clone().ok_or_else(|| {
                AgentError::Configuration("no health-authority public key".into())
            })?;
        let config_json = match &self.config.scoring {
            Some(json) => json.to_vec(),
            None => self.retrying(|| client.exposure_configuration()).await?,
        };
        let config: Scoring = serde_json::from_slice(&config_json)
            .map_err(|e| AgentError::Configuration(e.to_string()))?;
        config
            .validate()
            .map_err(|e| AgentError::Configuration(e.to_string()))?;
        let etag = vault
            .meta("index-etag")
            .await?
            .and_then(|b| String::from_utf8(b).ok());
        let etag_ref = etag.clone();
        let index = self.retrying(|| client.index(etag_ref.as_deref())).await?;
        let now = self.clock.now();
        let today = now.day();
        let mut budget = self
            .config
            .max_files_per_day
            .saturating_sub(self.state.files_checked_on(today));
        let mut result = CheckResult {
            risk_configuration: config_json,
            ..CheckResult::default()
        };
        // The keys of each new file, shared with the source where it holds them already
        // (a fleet's phones then do not copy a batch's keys each).
        let mut parts: Vec<Arc<Vec<DiagnosisKey>>> = Vec::new();
        let mut complete = true;
        if let Some((lines, new_etag)) = index {
            for path in lines {
                let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, path.as_bytes())
                    .as_ref()
                    .try_into()
                    .expect("32 bytes");
                if self.state.seen_files.contains_key(&digest) {
                    continue;
                }
                if budget == 0 {
                    complete = false;
                    break;
                }
                budget -= 1;
                let zip = self.retrying(|| client.export_file(&path)).await?;
                let (verdict, n) = match client.verified(&path, &zip, &public_key) {
                    Some((verdict, file_keys)) => {
                        let n = file_keys.len();
                        parts.push(file_keys);
                        (verdict, n)
                    }
                    None => {
                        let (verdict, file_keys) = verify_export(&zip, &public_key);
                        let n = file_keys.len();
                        parts.push(Arc::new(file_keys));
                        (verdict, n)
                    }
                };
                if verdict != ExportVerdict::Verified {
                    tracing::warn!(verdict = ?verdict, "export file refused");
                }
                result.files.push((digest, verdict, n as u32));
            }
            // Only a complete pass makes the index "seen": the rest is fetched tomorrow.
            if complete && let Some(e) = new_etag {
                vault.set_meta("index-etag", e.as_bytes()).await?;
            }
        }
        parts.retain(|p| !p.is_empty());
        let keys: Arc<Vec<DiagnosisKey>> = match parts.len() {
            0 => Arc::default(),
            1 => parts.pop().expect("one"),
            _ => Arc::new(parts.iter().flat_map(|p| p.iter().cloned()).collect()),
        };
        if !keys.is_empty() {
            let verified: Vec<[u8; 32]> = result
                .files
                .iter()
                .filter(|f| f.1 == ExportVerdict::Verified)
                .map(|f| f.0)
                .collect();
            let index = client.key_index(&verified, &keys);
            let (matched, matches) = self
                .match_keys(&keys, index.as_deref(), &config, today)
                .await?;
            result.matched = matched;
            result.matches = matches;
        }
        let refused = result
            .files
            .iter()
            .filter(|f| f.1 != ExportVerdict::Verified)
            .count();
        let files = result.files.len();
        let keys_n = result.files.iter().map(|f| f.2).sum();
        let matches = result.matches;
        let before = self.state.notified.len();
        let events = rules::decide_check(&self.state, now, result)?;
        self.record(events).await?;
        Ok(CheckReport {
            files,
            refused_files: refused,
            keys: keys_n,
            matches,
            notified: self.state.notified.len() > before,
            exposures: self.state.exposure_screen(now),
        })
    }

    /// Matches `keys` against the records of the last 14 days: one [`ExposureMatched`] per
    /// matched key and contact day.
    async fn match_keys(
        &mut self,
        keys: &[DiagnosisKey],
        index: Option<&hotaru_protocol::matching::KeyIndex>,
        config: &Scoring,
        today: u32,
    ) -> Result<(Vec<ExposureMatched>, u32), AgentError> {
        let vault = self.vault()?.clone();
        let device_id = self.state.device_id.ok_or(RuleError::NoConsent)?;
        let mut observations = Vec::new();
        for day in today.saturating_sub(RETENTION_DAYS - 1)..=today {
            for r in vault.records(day, &mut *self.random).await? {
                // What is not in the index cannot match; leaving it out changes no match
                // (the matcher keeps the observations' order).
                if index.is_some_and(|ix| !ix.contains(&r.rpi)) {
                    continue;
                }
                observations.push(Observation {
                    rpi: hotaru_protocol::Rpi(r.rpi),
                    aem: hotaru_protocol::Aem(r.aem),
                    at: r.at,
                    rssi_dbm: r.rssi_dbm,
                    peak_rssi_dbm: r.peak_rssi_dbm,
                    seconds_since_last_scan: r.seconds_since_last_scan,
                });
            }
        }
        if observations.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let matcher = Matcher::new(observations);
        let matches = match index {
            Some(index) => matcher.match_indexed(keys, index),
            None => matcher.match_keys(keys),
        };
        // Windows per key, then grouped per key and day.
        let mut by_key: BTreeMap<usize, Vec<hotaru_protocol::matching::Match>> = BTreeMap::new();
        for m in &matches {
            by_key.entry(m.key).or_default().push(*m);
        }
        let mut out = Vec::new();
        for (k, ms) in by_key {
            let windows = matcher.exposure_windows(keys, &ms);
            let mut per_day: BTreeMap<u32, Vec<hotaru_protocol::risk::ExposureWindow>> =
                BTreeMap::new();
            for w in windows {
                per_day.entry(w.day).or_default().push(w);
            }
            for (day, ws) in per_day {
                let scans: Vec<_> = ws.iter().flat_map(|w| w.scans.iter()).collect();
                let score: f64 = match config {
                    Scoring::Windows(c) => ws.iter().map(|w| window_score(c, w)).sum(),
                    Scoring::Legacy(l) => {
                        let seconds: u32 = scans.iter().map(|s| s.seconds_since_last_scan).sum();
                        let weighted: u64 = scans
                            .iter()
                            .map(|s| {
                                u64::from(s.typical_attenuation_db)
                                    * u64::from(s.seconds_since_last_scan)
                            })
                            .sum();
                        f64::from(l.score(LegacyExposure {
                            attenuation_db: (weighted / u64::from(seconds.max(1))) as u8,
                            duration_minutes: seconds / 60,
                            days_since_last_exposure: today.saturating_sub(day),
                            transmission_risk_level: keys[k].transmission_risk_level,
                        }))
                    }
                };
                out.push(ExposureMatched {
                    device_id,
                    day: Day(day),
                    scan_seconds: scans.iter().map(|s| s.seconds_since_last_scan).sum(),
                    min_attenuation_db: scans
                        .iter()
                        .map(|s| s.min_attenuation_db)
                        .min()
                        .unwrap_or(u8::MAX),
                    score: score.max(0.0).min(f64::from(u32::MAX)) as u32,
                    windows: ws
                        .iter()
                        .map(|w| MatchedWindow {
                            report_type: w.report_type.to_proto() as u8,
                            days_since_onset: w.days_since_onset,
                            scans: w
                                .scans
                                .iter()
                                .map(|s| ScanRecord {
                                    typical_attenuation_db: s.typical_attenuation_db,
                                    min_attenuation_db: s.min_attenuation_db,
                                    seconds_since_last_scan: s
                                        .seconds_since_last_scan
                                        .min(u32::from(u16::MAX))
                                        as u16,
                                })
                                .collect(),
                        })
                        .collect(),
                });
            }
        }
        Ok((out, matches.len() as u32))
    }

    /// The keys the device submits: each held TEK of the last 14 days before today. As
    /// GAEN does, today's key is not shared while it is still in use, so a device
    /// installed today has nothing to submit (G).
    async fn keys_to_submit(&mut self, onset: Day) -> Result<Vec<UploadKey>, AgentError> {
        let today = self.clock.now().day();
        let days: Vec<u32> = self
            .state
            .teks
            .keys()
            .copied()
            .filter(|d| *d < today)
            .collect();
        let mut out = Vec::new();
        for day in days {
            if let Some(tek) = self.tek_of(day).await? {
                out.push(UploadKey {
                    key_data: *tek.as_bytes(),
                    rolling_start: day * 144,
                    rolling_period: 144,
                    days_since_onset: day as i32 - onset.0 as i32,
                });
            }
        }
        Ok(out)
    }

    /// Registration with a processing number and the onset (or test) date. The outcome
    /// is one of the seed's screens; "completed" only once the server accepted keys.
    pub async fn register(
        &mut self,
        client: &GatewayClient,
        number: &str,
        onset: Day,
    ) -> Result<RegistrationOutcome, AgentError> {
        self.housekeeping().await?;
        let keys = if self.state.consented() {
            self.keys_to_submit(onset).await?
        } else {
            Vec::new()
        };
        if let Some(outcome) = rules::precheck_registration(&self.state, number, keys.len())? {
            let events = rules::decide_registration(&self.state, outcome, 0, onset)?;
            self.record(events).await?;
            return Ok(outcome);
        }
        let onset_text = jiff::Timestamp::from_second(i64::from(onset.0) * 86_400)
            .map(|t| t.strftime("%Y-%m-%dT00:00:00Z").to_string())
            .unwrap_or_default();
        // One idempotency key for every retry of this attempt: a retry after a lost answer
        // gets the first answer again instead of "number already used".
        let idempotency = hex::encode(self.random.array::<16>());
        let body = upload_body(&keys, number, &onset_text, &idempotency);
        let answer = self.retrying(|| client.upload(body.clone(), false)).await;
        let outcome = match answer {
            Ok(a) if a.accepted > 0 => RegistrationOutcome::Completed {
                accepted: a.accepted,
            },
            Ok(_) => RegistrationOutcome::NothingToSubmit,
            Err(ClientError::Refused { code, .. }) => match code.as_str() {
                "ERR_A_NUMBER_FORMAT" => RegistrationOutcome::FormatError,
                "ERR_B_NUMBER_WRONG" => RegistrationOutcome::WrongNumber,
                "ERR_C_ATTEMPT_LIMIT" => RegistrationOutcome::AttemptLimit,
                c if c.starts_with("ERR_G_") => RegistrationOutcome::NothingToSubmit,
                _ => RegistrationOutcome::Unavailable,
            },
            Err(_) => RegistrationOutcome::Unavailable,
        };
        let events = rules::decide_registration(&self.state, outcome, keys.len() as u16, onset)?;
        self.record(events).await?;
        Ok(outcome)
    }

    /// Sends a chaff upload when one is due (drawn from the RNG: on average one every
    /// `mean_days`); returns whether one was sent. Chaff is not recorded.
    pub async fn maybe_chaff(
        &mut self,
        client: &GatewayClient,
        mean_days: u64,
    ) -> Result<bool, AgentError> {
        let now = self.clock.now();
        let due = *self.next_chaff.get_or_insert_with(|| {
            now.plus_millis(self.random.below(2 * mean_days.max(1) * DAY_MS))
        });
        if now < due {
            return Ok(false);
        }
        let interval = now.interval();
        let body = chaff_body(&mut *self.random, interval);
        self.next_chaff =
            Some(now.plus_millis(self.random.below(2 * mean_days.max(1) * DAY_MS) + 1));
        client.upload(body, true).await?;
        Ok(true)
    }

    /// The guidance flow for these answers; each screen shown is recorded.
    pub async fn guidance(
        &mut self,
        answers: &[GuidanceAnswer],
        prefecture: Option<u8>,
    ) -> Result<Vec<GuidanceShown>, AgentError> {
        let events = rules::decide_guidance(&self.state, self.clock.now(), answers, prefecture)?;
        let shown = events
            .iter()
            .filter_map(|e| match e {
                DomainEvent::GuidanceShown(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        self.record(events).await?;
        Ok(shown)
    }

    pub fn status(&self) -> Status {
        let now = self.clock.now();
        Status {
            consented: self.state.consented(),
            started: self.state.consented_at.map(|c| Day(c.day())),
            days_of_use: self.state.days_of_use(now),
            bluetooth_on: self.state.bluetooth_on,
            exposure_logging_on: self.state.exposure_logging_on,
            exposures: self.state.exposure_screen(now),
            notifications: self.state.notified.len(),
            registered: self.state.registered(),
            keys_held: self.state.teks.len(),
        }
    }

    /// The operation log the user reviews before sending: what the agent did and when,
    /// and whether it worked; app version, OS and model only. No key, RPI or record.
    pub async fn operation_log(&self) -> Result<String, AgentError> {
        let model = &reference::model(self.state.model).name;
        let mut out = format!(
            "app: {APP_VERSION}\nos: {}\nmodel: {model}\n",
            self.config.os
        );
        for c in self.log.read_stream(&self.stream).await? {
            for env in c.commit.envelopes().flatten() {
                let line = describe(&env.event);
                if line.is_empty() {
                    continue;
                }
                let at = jiff::Timestamp::from_millisecond(env.occurred_at.0 as i64)
                    .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                out.push_str(&format!("{at}  {line}\n"));
            }
        }
        Ok(out)
    }

    /// Sends the reviewed log with the user's consent; returns the log ID to show.
    pub async fn send_log(
        &mut self,
        client: &GatewayClient,
        reviewed: &str,
    ) -> Result<LogId, AgentError> {
        let reviewed = reviewed.to_owned();
        let id = self.retrying(|| client.send_log(&reviewed)).await?;
        let events = rules::decide_log_sent(&self.state, LogId(id))?;
        self.record(events).await?;
        Ok(LogId(id))
    }
}

/// One line of the operation log for an event (empty for nothing worth a line).
fn describe(e: &DomainEvent) -> String {
    match e {
        DomainEvent::ConsentGiven(_) => "consent given: ok".into(),
        DomainEvent::ConsentWithdrawn(_) => "consent withdrawn: ok".into(),
        DomainEvent::RadioSettingsChanged(r) => format!(
            "settings: bluetooth {}, exposure logging {}",
            if r.bluetooth_on { "on" } else { "off" },
            if r.exposure_logging_on { "on" } else { "off" }
        ),
        DomainEvent::TekRolled(_) => "daily key created: ok".into(),
        DomainEvent::ProximityRecorded(p) => format!("day closed: {} scans recorded", p.scans),
        DomainEvent::RecordsExpired(_) => "records older than 14 days deleted: ok".into(),
        DomainEvent::ExportVerified(v) => match v.verdict {
            ExportVerdict::Verified => format!("export file verified: ok ({} keys)", v.keys),
            ExportVerdict::BadSignature => "export file refused: signature does not verify".into(),
            ExportVerdict::Malformed => "export file refused: unreadable".into(),
        },
        DomainEvent::ExposureChecked(c) => format!(
            "exposure check: ok ({} files, {} refused, {} matches)",
            c.files, c.refused, c.matches
        ),
        DomainEvent::ExposureNotified(_) => "exposure notification shown".into(),
        DomainEvent::RegistrationAttempted(r) => match r.outcome {
            RegistrationOutcome::Completed { accepted } => {
                format!("registration: completed ({accepted} keys accepted)")
            }
            o => format!("registration: failed (error {})", o.code()),
        },
        DomainEvent::GuidanceShown(g) => format!("guidance screen shown: {:?}", g.screen),
        DomainEvent::OperationLogSent(_) => "operation log sent: ok".into(),
        _ => String::new(),
    }
}
