//! The device's rules as plain functions: `decide_*` check a command against the state and
//! return the events to record; [`DeviceState::apply`] folds one recorded event. No I/O,
//! no clock, no randomness: the agent hands in the time and anything drawn or downloaded
//! (the "enrich" step), so replaying the device's log rebuilds the same state.

use std::collections::{BTreeMap, BTreeSet};

use hotaru_events::UnixMillis;
use hotaru_events::device::{
    ConsentGiven, ConsentWithdrawn, ExportVerdict, ExportVerified, ExposureChecked,
    ExposureMatched, GuidanceAnswer, GuidanceScreen, GuidanceShown, OperationLogSent,
    ProximityRecorded, RadioSettingsChanged, RecordsExpired, RegistrationAttempted,
    RegistrationOutcome, TekRolled,
};
use hotaru_events::domain::{Day, DeviceId, ExposureNotified, LogId, Sealed};
use hotaru_events::{DomainEvent, Envelope};
use hotaru_protocol::keys::ReportType;
use hotaru_protocol::risk::{Assessment, DayRisk, ExposureWindow, ScanInstance, Scoring, assess};

/// Days a TEK and the records of its day are kept (the OS maximum; DOMAIN.md).
pub const RETENTION_DAYS: u32 = 14;
/// Export files checked per day at most (Android's limit).
pub const MAX_FILES_PER_DAY: usize = 20;
/// Length of a processing number.
pub const NUMBER_DIGITS: usize = 8;

/// Why a command was refused before anything was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Nothing happens before consent: ask for it (`hotaru device init --consent`).
    #[error("the user has not consented to exposure logging")]
    NoConsent,
    /// Consent is given once per install.
    #[error("consent was already given")]
    AlreadyConsented,
    /// A day's TEK exists already.
    #[error("the key of day {0} exists already")]
    KeyExists(u32),
    /// The guidance flow follows a notification; there is none to guide about.
    #[error("there is no exposure to guide about")]
    NoExposure,
    /// The prefecture code is not 1-47.
    #[error("prefecture code {0} is not 1-47")]
    UnknownPrefecture(u8),
}

/// A device's state: the fold of its events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceState {
    /// Set by consent; cleared by withdrawal.
    pub device_id: Option<DeviceId>,
    pub consented_at: Option<UnixMillis>,
    pub model: u16,
    pub bluetooth_on: bool,
    pub exposure_logging_on: bool,
    /// TEKs by day: rolling start and the sealed key.
    pub teks: BTreeMap<u32, (u32, Option<Sealed>)>,
    /// Days whose key and records were destroyed.
    pub expired: BTreeSet<u32>,
    /// Days whose records were closed, with their scans and sightings.
    pub closed_days: BTreeMap<u32, (u32, u32)>,
    /// Export files already checked (SHA-256 of their paths), with the day checked.
    pub seen_files: BTreeMap<[u8; 32], u32>,
    pub refused_files: u32,
    /// Matched keys by contact day.
    pub matched: BTreeMap<u32, Vec<ExposureMatched>>,
    /// The exposure configuration of the last check (JSON as served).
    pub risk_configuration: Vec<u8>,
    pub notified: BTreeSet<u32>,
    pub checks: u32,
    pub registrations: Vec<(UnixMillis, RegistrationOutcome)>,
    pub guidance: Vec<GuidanceShown>,
    pub logs_sent: Vec<LogId>,
    /// The version of the device's stream (events applied).
    pub version: u64,
}

impl DeviceState {
    /// Folds one recorded event. No rule is checked here: the events are facts.
    pub fn apply(&mut self, env: &Envelope) {
        self.version = env.version;
        let at = env.occurred_at;
        match &env.event {
            DomainEvent::ConsentGiven(e) => {
                *self = DeviceState {
                    device_id: Some(e.device_id),
                    consented_at: Some(at),
                    model: e.model,
                    bluetooth_on: true,
                    exposure_logging_on: true,
                    version: self.version,
                    ..DeviceState::default()
                };
            }
            DomainEvent::ConsentWithdrawn(_) => {
                *self = DeviceState {
                    version: self.version,
                    ..DeviceState::default()
                };
            }
            DomainEvent::RadioSettingsChanged(e) => {
                self.bluetooth_on = e.bluetooth_on;
                self.exposure_logging_on = e.exposure_logging_on;
            }
            DomainEvent::TekRolled(e) => {
                self.teks.insert(
                    e.rolling_start_interval / 144,
                    (e.rolling_start_interval, e.tek.clone()),
                );
            }
            DomainEvent::ProximityRecorded(e) => {
                self.closed_days.insert(e.day.0, (e.scans, e.sightings));
            }
            DomainEvent::RecordsExpired(e) => {
                self.expired.insert(e.day.0);
                self.teks.remove(&e.day.0);
                self.closed_days.remove(&e.day.0);
                self.matched.remove(&e.day.0);
                self.notified.remove(&e.day.0);
            }
            DomainEvent::ExportVerified(e) => {
                self.seen_files.insert(e.file, at.day());
                if e.verdict != ExportVerdict::Verified {
                    self.refused_files += 1;
                }
            }
            DomainEvent::ExposureMatched(e) => {
                self.matched.entry(e.day.0).or_default().push(e.clone());
            }
            DomainEvent::ExposureChecked(e) => {
                self.checks += 1;
                if !e.risk_configuration.is_empty() {
                    self.risk_configuration = e.risk_configuration.clone();
                }
            }
            DomainEvent::ExposureNotified(e) => {
                self.notified.insert(e.day.0);
            }
            DomainEvent::RegistrationAttempted(e) => self.registrations.push((at, e.outcome)),
            DomainEvent::GuidanceShown(e) => self.guidance.push(e.clone()),
            DomainEvent::OperationLogSent(e) => self.logs_sent.push(e.log_id),
            _ => {}
        }
    }

    pub fn consented(&self) -> bool {
        self.device_id.is_some()
    }

    /// Advertising and recording happen only with consent, Bluetooth on and exposure
    /// logging enabled.
    pub fn logging(&self) -> bool {
        self.consented() && self.bluetooth_on && self.exposure_logging_on
    }

    /// Days of use, counted from consent (1 on the day of consent).
    pub fn days_of_use(&self, now: UnixMillis) -> u32 {
        self.consented_at
            .map_or(0, |c| now.day().saturating_sub(c.day()) + 1)
    }

    /// The configuration the last check scored with (COCOA's default before any check).
    pub fn configuration(&self) -> Scoring {
        serde_json::from_slice(&self.risk_configuration).unwrap_or_default()
    }

    /// The one risk rule over every matched window: the notification and the exposure
    /// screen are both read from this (COCOA 1.1.4 had two rules that disagreed).
    pub fn assessment(&self, now: UnixMillis) -> Assessment {
        assessment(&self.configuration(), self.matched.values().flatten(), now)
    }

    /// The exposure screen: high-risk days of the last 14 days, oldest first.
    pub fn exposure_screen(&self, now: UnixMillis) -> Vec<DayRisk> {
        self.assessment(now).exposures().copied().collect()
    }

    /// Whether registration completed once (the server accepted keys).
    pub fn registered(&self) -> bool {
        self.registrations
            .iter()
            .any(|(_, o)| matches!(o, RegistrationOutcome::Completed { .. }))
    }

    /// Files checked today (towards [`MAX_FILES_PER_DAY`]).
    pub fn files_checked_on(&self, day: u32) -> usize {
        self.seen_files.values().filter(|d| **d == day).count()
    }

    fn id(&self) -> Result<DeviceId, RuleError> {
        self.device_id.ok_or(RuleError::NoConsent)
    }
}

/// The windows of recorded matches as the protocol's risk rule takes them.
pub fn windows<'a>(matched: impl IntoIterator<Item = &'a ExposureMatched>) -> Vec<ExposureWindow> {
    matched
        .into_iter()
        .flat_map(|m| {
            m.windows.iter().map(move |w| ExposureWindow {
                day: m.day.0,
                report_type: ReportType::from_proto(i32::from(w.report_type))
                    .unwrap_or(ReportType::Unknown),
                days_since_onset: w.days_since_onset,
                scans: w
                    .scans
                    .iter()
                    .map(|s| ScanInstance {
                        typical_attenuation_db: s.typical_attenuation_db,
                        min_attenuation_db: s.min_attenuation_db,
                        seconds_since_last_scan: u32::from(s.seconds_since_last_scan),
                    })
                    .collect(),
            })
        })
        .collect()
}

fn assessment<'a>(
    scoring: &Scoring,
    matched: impl IntoIterator<Item = &'a ExposureMatched>,
    now: UnixMillis,
) -> Assessment {
    match scoring {
        Scoring::Windows(config) => assess(config, &windows(matched), now.day()),
        // v1: each matched key-day was scored when it matched; a day is high risk when
        // its best score reaches the minimum.
        Scoring::Legacy(legacy) => {
            let oldest = now.day().saturating_sub(scoring.lookback_days() - 1);
            let mut days: BTreeMap<u32, DayRisk> = BTreeMap::new();
            for m in matched.into_iter().filter(|m| m.day.0 >= oldest) {
                let d = days.entry(m.day.0).or_insert(DayRisk {
                    day: m.day.0,
                    score: 0.0,
                    scan_seconds: 0,
                    windows: 0,
                    high_risk: false,
                });
                d.score = d.score.max(f64::from(m.score));
                d.scan_seconds = d.scan_seconds.saturating_add(m.scan_seconds);
                d.windows += m.windows.len() as u32;
            }
            Assessment {
                days: days
                    .into_values()
                    .map(|mut d| {
                        d.high_risk = legacy.high_risk(d.score as u32);
                        d
                    })
                    .collect(),
            }
        }
    }
}

pub fn decide_consent(
    state: &DeviceState,
    device_id: DeviceId,
    model: u16,
) -> Result<Vec<DomainEvent>, RuleError> {
    if state.consented() {
        return Err(RuleError::AlreadyConsented);
    }
    Ok(vec![DomainEvent::ConsentGiven(ConsentGiven {
        device_id,
        model,
    })])
}

pub fn decide_withdraw(state: &DeviceState) -> Result<Vec<DomainEvent>, RuleError> {
    Ok(vec![DomainEvent::ConsentWithdrawn(ConsentWithdrawn {
        device_id: state.id()?,
    })])
}

pub fn decide_settings(
    state: &DeviceState,
    bluetooth_on: bool,
    exposure_logging_on: bool,
) -> Result<Vec<DomainEvent>, RuleError> {
    let device_id = state.id()?;
    if (state.bluetooth_on, state.exposure_logging_on) == (bluetooth_on, exposure_logging_on) {
        return Ok(Vec::new());
    }
    Ok(vec![DomainEvent::RadioSettingsChanged(
        RadioSettingsChanged {
            device_id,
            bluetooth_on,
            exposure_logging_on,
        },
    )])
}

/// A new day's TEK, drawn and sealed by the agent. Only while logging: a day on which
/// nothing was advertised has no key to share.
pub fn decide_roll(
    state: &DeviceState,
    rolling_start: u32,
    sealed: Sealed,
) -> Result<Vec<DomainEvent>, RuleError> {
    let device_id = state.id()?;
    let day = rolling_start / 144;
    if state.teks.contains_key(&day) {
        return Err(RuleError::KeyExists(day));
    }
    if !state.logging() {
        return Ok(Vec::new());
    }
    Ok(vec![DomainEvent::TekRolled(TekRolled {
        device_id,
        rolling_start_interval: rolling_start,
        tek: Some(sealed),
    })])
}

/// Days to close and to expire at `now`, given the days the record store holds.
/// Closing: every past day with records and no summary yet. Expiry: every day 14 days or
/// more before today that still has a key or records (recorded before deletion).
/// Whether housekeeping on `today` closes `day` (a past day within retention, not closed
/// yet): the only days whose records it needs to count.
pub fn closes(state: &DeviceState, today: u32, day: u32) -> bool {
    day < today
        && day >= today.saturating_sub(RETENTION_DAYS - 1)
        && !state.closed_days.contains_key(&day)
}

pub fn decide_housekeeping(
    state: &DeviceState,
    now: UnixMillis,
    stored: &BTreeMap<u32, (u32, u32)>,
) -> Result<Vec<DomainEvent>, RuleError> {
    let device_id = state.id()?;
    let today = now.day();
    let oldest_kept = today.saturating_sub(RETENTION_DAYS - 1);
    let mut out = Vec::new();
    for (&day, &(scans, sightings)) in stored {
        if closes(state, today, day) {
            out.push(DomainEvent::ProximityRecorded(ProximityRecorded {
                device_id,
                day: Day(day),
                scans,
                sightings,
            }));
        }
    }
    let held: BTreeSet<u32> = state
        .teks
        .keys()
        .chain(stored.keys())
        .chain(state.matched.keys())
        .copied()
        .filter(|d| *d < oldest_kept)
        .collect();
    out.extend(held.into_iter().map(|day| {
        DomainEvent::RecordsExpired(RecordsExpired {
            device_id,
            day: Day(day),
        })
    }));
    Ok(out)
}

/// What a check downloaded and matched (the enrich step's result).
#[derive(Clone, Debug, Default)]
pub struct CheckResult {
    /// Each file checked: its path digest, verdict and key count.
    pub files: Vec<([u8; 32], ExportVerdict, u32)>,
    pub matched: Vec<ExposureMatched>,
    pub matches: u32,
    /// The configuration served, as JSON.
    pub risk_configuration: Vec<u8>,
}

/// Records a check: the files, the matches and, from the one risk rule over every match
/// so far, a notification for each high-risk day not notified before.
pub fn decide_check(
    state: &DeviceState,
    now: UnixMillis,
    result: CheckResult,
) -> Result<Vec<DomainEvent>, RuleError> {
    let device_id = state.id()?;
    let mut out = Vec::new();
    let mut keys = 0;
    let mut refused = 0;
    for (file, verdict, n) in &result.files {
        keys += n;
        refused += u16::from(*verdict != ExportVerdict::Verified);
        out.push(DomainEvent::ExportVerified(ExportVerified {
            device_id,
            file: *file,
            verdict: *verdict,
            keys: *n,
        }));
    }
    let config: Scoring = serde_json::from_slice(&result.risk_configuration)
        .unwrap_or_else(|_| state.configuration());
    let verdict = assessment(
        &config,
        state.matched.values().flatten().chain(&result.matched),
        now,
    );
    out.extend(
        result
            .matched
            .iter()
            .cloned()
            .map(DomainEvent::ExposureMatched),
    );
    out.push(DomainEvent::ExposureChecked(ExposureChecked {
        device_id,
        files: result.files.len() as u16,
        refused,
        keys,
        matches: result.matches,
        // Recorded when it changed; replay keeps the last one recorded.
        risk_configuration: if result.risk_configuration == state.risk_configuration {
            Vec::new()
        } else {
            result.risk_configuration
        },
    }));
    for day in verdict.exposures() {
        if !state.notified.contains(&day.day) {
            out.push(DomainEvent::ExposureNotified(ExposureNotified {
                device_id,
                day: Day(day.day),
            }));
        }
    }
    Ok(out)
}

/// What the device can tell before any request (errors A, E, F, G), in the order the
/// user meets them: the radio first, then the number, then the keys.
pub fn precheck_registration(
    state: &DeviceState,
    number: &str,
    keys: usize,
) -> Result<Option<RegistrationOutcome>, RuleError> {
    state.id()?;
    Ok(if !state.bluetooth_on {
        Some(RegistrationOutcome::BluetoothOff)
    } else if !state.exposure_logging_on {
        Some(RegistrationOutcome::ExposureLoggingOff)
    } else if !number_format_ok(number) {
        Some(RegistrationOutcome::FormatError)
    } else if keys == 0 {
        Some(RegistrationOutcome::NothingToSubmit)
    } else {
        None
    })
}

/// A: exactly eight half-width (ASCII) digits. Full-width digits are refused, as COCOA did.
pub fn number_format_ok(number: &str) -> bool {
    number.len() == NUMBER_DIGITS && number.bytes().all(|b| b.is_ascii_digit())
}

pub fn decide_registration(
    state: &DeviceState,
    outcome: RegistrationOutcome,
    keys: u16,
    onset: Day,
) -> Result<Vec<DomainEvent>, RuleError> {
    Ok(vec![DomainEvent::RegistrationAttempted(
        RegistrationAttempted {
            device_id: state.id()?,
            outcome,
            keys,
            onset,
        },
    )])
}

pub fn decide_log_sent(state: &DeviceState, log_id: LogId) -> Result<Vec<DomainEvent>, RuleError> {
    Ok(vec![DomainEvent::OperationLogSent(OperationLogSent {
        device_id: state.id()?,
        log_id,
    })])
}

/// The guidance flow (DOMAIN.md): the screens shown for `answers`, in order, each a
/// `GuidanceShown`. Without a prefecture, the ministry's 2020 flow:
///
/// ```text
/// Contacts → symptoms? ─yes→ book
///                      └no→ close contact positive or suspected? ─yes→ book
///                                                                └no→ want a test? ─yes→ book
///                                                                                   └no→ watch 14 days
/// ```
/// With a prefecture (the proposed variant): symptoms → phone your family doctor or a
/// nearby clinic; no symptoms or unsure where to go → the prefecture's consultation
/// centres and the national COCOA line. Answers past the end are ignored; after "watch
/// 14 days", a later "yes" (new symptoms) restarts the flow at the symptoms question.
pub fn decide_guidance(
    state: &DeviceState,
    now: UnixMillis,
    answers: &[GuidanceAnswer],
    prefecture: Option<u8>,
) -> Result<Vec<DomainEvent>, RuleError> {
    let device_id = state.id()?;
    if let Some(p) = prefecture
        && !(1..=47).contains(&p)
    {
        return Err(RuleError::UnknownPrefecture(p));
    }
    let restarting = matches!(
        state.guidance.last().map(|g| g.screen),
        Some(GuidanceScreen::AdvisedWatchHealth)
    );
    if state.exposure_screen(now).is_empty() && !restarting {
        return Err(RuleError::NoExposure);
    }
    let shown = |screen, answer| {
        DomainEvent::GuidanceShown(GuidanceShown {
            device_id,
            screen,
            answer,
            prefecture: matches!(
                screen,
                GuidanceScreen::ConsultationCentres | GuidanceScreen::AdvisedFamilyDoctor
            )
            .then_some(prefecture)
            .flatten(),
        })
    };
    let mut out = Vec::new();
    if !restarting {
        out.push(shown(GuidanceScreen::Contacts, None));
    }
    out.push(shown(GuidanceScreen::AskedSymptoms, None));
    let booking = |out: &mut Vec<DomainEvent>, answer, symptoms: bool| {
        let screen = match (prefecture, symptoms) {
            (None, _) => GuidanceScreen::AdvisedBooking,
            (Some(_), true) => GuidanceScreen::AdvisedFamilyDoctor,
            (Some(_), false) => GuidanceScreen::ConsultationCentres,
        };
        out.push(shown(screen, Some(answer)));
    };
    let mut it = answers.iter().copied();
    let Some(symptoms) = it.next() else {
        return Ok(out);
    };
    if symptoms == GuidanceAnswer::Yes {
        booking(&mut out, symptoms, true);
        return Ok(out);
    }
    out.push(shown(GuidanceScreen::AskedCloseContacts, Some(symptoms)));
    let Some(close) = it.next() else {
        return Ok(out);
    };
    if close == GuidanceAnswer::Yes {
        booking(&mut out, close, false);
        return Ok(out);
    }
    out.push(shown(GuidanceScreen::OfferedTest, Some(close)));
    let Some(test) = it.next() else {
        return Ok(out);
    };
    if test == GuidanceAnswer::Yes {
        booking(&mut out, test, false);
    } else if prefecture.is_some() {
        // Unsure where to go: the prefecture's centres, then watch.
        out.push(shown(GuidanceScreen::ConsultationCentres, Some(test)));
        out.push(shown(GuidanceScreen::AdvisedWatchHealth, Some(test)));
    } else {
        out.push(shown(GuidanceScreen::AdvisedWatchHealth, Some(test)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Given/when/then over device events.

    use super::*;
    use hotaru_events::device::{MatchedWindow, ScanRecord};
    use hotaru_events::{EventId, StreamId, StreamKind};
    use hotaru_protocol::risk::RiskConfiguration;

    use hotaru_events::{DAY_MS, HOUR_MS};
    const T0: UnixMillis = UnixMillis(20_000 * DAY_MS + 9 * HOUR_MS);
    const DEV: DeviceId = DeviceId([7; 16]);

    fn given(events: Vec<DomainEvent>, at: UnixMillis) -> DeviceState {
        let mut s = DeviceState::default();
        fold(&mut s, events, at);
        s
    }

    fn fold(s: &mut DeviceState, events: Vec<DomainEvent>, at: UnixMillis) {
        for event in events {
            let env = Envelope {
                event_id: EventId::new(at, [0; 10]),
                stream: StreamId::new(StreamKind::Device, "d").unwrap(),
                version: s.version + 1,
                position: s.version + 1,
                index: 0,
                event_type: event.event_type(),
                schema_version: event.event_type().current_version(),
                occurred_at: at,
                causation_id: None,
                correlation_id: EventId::new(at, [0; 10]),
                trace: None,
                event,
            };
            s.apply(&env);
        }
    }

    fn consented() -> DeviceState {
        given(decide_consent(&DeviceState::default(), DEV, 0).unwrap(), T0)
    }

    fn near_match(day: u32, seconds: u16, attenuation: u8) -> ExposureMatched {
        let scans = (0..seconds / 240)
            .map(|_| ScanRecord {
                typical_attenuation_db: attenuation,
                min_attenuation_db: attenuation,
                seconds_since_last_scan: 240,
            })
            .collect::<Vec<_>>();
        ExposureMatched {
            device_id: DEV,
            day: Day(day),
            scan_seconds: scans.len() as u32 * 240,
            windows: vec![MatchedWindow {
                report_type: 1,
                days_since_onset: Some(0),
                scans,
            }],
            min_attenuation_db: attenuation,
            score: 0,
        }
    }

    #[test]
    fn nothing_happens_before_consent_and_consent_is_given_once() {
        let s = DeviceState::default();
        assert_eq!(decide_settings(&s, false, true), Err(RuleError::NoConsent));
        assert_eq!(decide_withdraw(&s), Err(RuleError::NoConsent));
        assert!(!s.logging());
        let s = consented();
        assert!(s.logging());
        assert_eq!(decide_consent(&s, DEV, 0), Err(RuleError::AlreadyConsented));
        assert_eq!(s.days_of_use(T0), 1);
        assert_eq!(s.days_of_use(T0.plus_millis(40 * DAY_MS)), 41);
    }

    #[test]
    fn no_key_is_rolled_while_bluetooth_is_off() {
        let mut s = consented();
        let ev = decide_settings(&s, false, true).unwrap();
        fold(&mut s, ev, T0);
        let sealed = Sealed {
            day: Day(T0.day()),
            nonce: [0; 12],
            ciphertext: vec![],
        };
        assert!(
            decide_roll(&s, T0.day() * 144, sealed.clone())
                .unwrap()
                .is_empty()
        );
        let ev = decide_settings(&s, true, true).unwrap();
        fold(&mut s, ev, T0);
        let ev = decide_roll(&s, T0.day() * 144, sealed.clone()).unwrap();
        fold(&mut s, ev, T0);
        assert_eq!(
            decide_roll(&s, T0.day() * 144, sealed),
            Err(RuleError::KeyExists(T0.day()))
        );
    }

    #[test]
    fn registration_errors_the_device_can_tell_come_before_any_request() {
        let mut s = consented();
        assert_eq!(
            precheck_registration(&s, "1234567", 3).unwrap(),
            Some(RegistrationOutcome::FormatError)
        );
        assert_eq!(
            precheck_registration(&s, "１２３４５６７８", 3).unwrap(),
            Some(RegistrationOutcome::FormatError)
        );
        assert_eq!(
            precheck_registration(&s, "12345678", 0).unwrap(),
            Some(RegistrationOutcome::NothingToSubmit)
        );
        assert_eq!(precheck_registration(&s, "12345678", 3).unwrap(), None);
        let ev = decide_settings(&s, true, false).unwrap();
        fold(&mut s, ev, T0);
        assert_eq!(
            precheck_registration(&s, "12345678", 3).unwrap(),
            Some(RegistrationOutcome::ExposureLoggingOff)
        );
        let ev = decide_settings(&s, false, false).unwrap();
        fold(&mut s, ev, T0);
        assert_eq!(
            precheck_registration(&s, "12345678", 3).unwrap(),
            Some(RegistrationOutcome::BluetoothOff)
        );
    }

    #[test]
    fn one_rule_gives_the_notification_and_the_screen_and_a_day_is_notified_once() {
        let s = consented();
        let day = T0.day() - 1;
        let result = CheckResult {
            matched: vec![near_match(day, 1200, 55)],
            ..CheckResult::default()
        };
        let ev = decide_check(&s, T0, result.clone()).unwrap();
        let notified = |ev: &[DomainEvent]| {
            ev.iter()
                .filter(|e| matches!(e, DomainEvent::ExposureNotified(_)))
                .count()
        };
        assert_eq!(notified(&ev), 1);
        let mut s2 = s.clone();
        fold(&mut s2, ev, T0);
        assert_eq!(s2.exposure_screen(T0).len(), 1);
        assert_eq!(s2.exposure_screen(T0)[0].day, day);
        // A second check with nothing new notifies nobody again.
        let again = decide_check(&s2, T0, CheckResult::default()).unwrap();
        assert_eq!(notified(&again), 0);
        // 3 minutes, or far away: neither notified nor listed.
        for m in [near_match(day, 180, 55), near_match(day, 1200, 75)] {
            let ev = decide_check(
                &s,
                T0,
                CheckResult {
                    matched: vec![m],
                    ..CheckResult::default()
                },
            )
            .unwrap();
            assert_eq!(notified(&ev), 0);
            let mut s3 = s.clone();
            fold(&mut s3, ev, T0);
            assert!(s3.exposure_screen(T0).is_empty());
        }
    }

    #[test]
    fn a_check_records_the_configuration_only_when_it_changed_and_replay_keeps_it() {
        let recorded = |ev: &[DomainEvent]| {
            ev.iter()
                .find_map(|e| match e {
                    DomainEvent::ExposureChecked(c) => Some(c.risk_configuration.clone()),
                    _ => None,
                })
                .expect("a check is recorded")
        };
        let strict = serde_json::to_vec(&Scoring::default()).unwrap();
        let loose = serde_json::to_vec(&Scoring::Windows(RiskConfiguration {
            daily_score_threshold: 900.0,
            ..RiskConfiguration::default()
        }))
        .unwrap();
        let check = |s: &DeviceState, json: &[u8]| {
            decide_check(
                s,
                T0,
                CheckResult {
                    risk_configuration: json.to_vec(),
                    ..CheckResult::default()
                },
            )
            .unwrap()
        };
        let mut s = consented();
        let first = check(&s, &strict);
        assert_eq!(recorded(&first), strict);
        fold(&mut s, first, T0);
        let same = check(&s, &strict);
        assert!(recorded(&same).is_empty(), "unchanged: not logged again");
        fold(&mut s, same, T0);
        assert_eq!(
            s.risk_configuration, strict,
            "replay keeps the last recorded"
        );
        assert_eq!(s.configuration(), Scoring::default());
        let changed = check(&s, &loose);
        assert_eq!(recorded(&changed), loose);
        fold(&mut s, changed, T0);
        assert_eq!(s.configuration(), serde_json::from_slice(&loose).unwrap());
    }

    #[test]
    fn the_screen_is_empty_14_days_after_the_contact_across_a_month_boundary() {
        // Contact on 2024-01-25; the screen lists it through 2024-02-07 and not on 02-08.
        let contact = 19_747; // 2024-01-25
        let at = |d: u32| UnixMillis(u64::from(d) * DAY_MS + 3_600_000);
        let mut s = given(
            decide_consent(&DeviceState::default(), DEV, 0).unwrap(),
            at(contact),
        );
        let ev = decide_check(
            &s,
            at(contact + 1),
            CheckResult {
                matched: vec![near_match(contact, 1200, 55)],
                ..CheckResult::default()
            },
        )
        .unwrap();
        fold(&mut s, ev, at(contact + 1));
        assert_eq!(s.exposure_screen(at(contact + 13)).len(), 1);
        assert!(s.exposure_screen(at(contact + 14)).is_empty());
        // Housekeeping on day 14 expires the day: its matches leave the state for good.
        let ev = decide_housekeeping(&s, at(contact + 14), &BTreeMap::new()).unwrap();
        assert!(
            ev.iter()
                .any(|e| matches!(e, DomainEvent::RecordsExpired(r) if r.day == Day(contact)))
        );
        fold(&mut s, ev, at(contact + 14));
        assert!(s.matched.is_empty());
        // A clock moved back does not bring it back.
        assert!(s.exposure_screen(at(contact + 1)).is_empty());
    }

    fn screens(ev: &[DomainEvent]) -> Vec<GuidanceScreen> {
        ev.iter()
            .filter_map(|e| match e {
                DomainEvent::GuidanceShown(g) => Some(g.screen),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_guidance_flow_walks_every_branch() {
        use GuidanceAnswer::{No, Yes};
        use GuidanceScreen::*;
        let mut s = consented();
        assert_eq!(
            decide_guidance(&s, T0, &[Yes], None),
            Err(RuleError::NoExposure)
        );
        let ev = decide_check(
            &s,
            T0,
            CheckResult {
                matched: vec![near_match(T0.day(), 1200, 55)],
                ..CheckResult::default()
            },
        )
        .unwrap();
        fold(&mut s, ev, T0);
        let flow = |a: &[GuidanceAnswer], p| screens(&decide_guidance(&s, T0, a, p).unwrap());
        assert_eq!(
            flow(&[Yes], None),
            [Contacts, AskedSymptoms, AdvisedBooking]
        );
        assert_eq!(
            flow(&[No, Yes], None),
            [Contacts, AskedSymptoms, AskedCloseContacts, AdvisedBooking]
        );
        assert_eq!(
            flow(&[No, No, Yes], None),
            [
                Contacts,
                AskedSymptoms,
                AskedCloseContacts,
                OfferedTest,
                AdvisedBooking
            ]
        );
        assert_eq!(
            flow(&[No, No, No], None),
            [
                Contacts,
                AskedSymptoms,
                AskedCloseContacts,
                OfferedTest,
                AdvisedWatchHealth
            ]
        );
        assert_eq!(
            flow(&[Yes], Some(13)),
            [Contacts, AskedSymptoms, AdvisedFamilyDoctor]
        );
        assert_eq!(
            flow(&[No, Yes], Some(13)),
            [
                Contacts,
                AskedSymptoms,
                AskedCloseContacts,
                ConsultationCentres
            ]
        );
        assert_eq!(
            flow(&[No, No, No], Some(47)),
            [
                Contacts,
                AskedSymptoms,
                AskedCloseContacts,
                OfferedTest,
                ConsultationCentres,
                AdvisedWatchHealth
            ]
        );
        assert_eq!(
            decide_guidance(&s, T0, &[No], Some(48)),
            Err(RuleError::UnknownPrefecture(48))
        );
        // Watching, then new symptoms: the flow restarts at the symptoms question, even
        // once the exposure itself has left the screen.
        let ev = decide_guidance(&s, T0, &[No, No, No], None).unwrap();
        fold(&mut s, ev, T0);
        let later = T0.plus_millis(20 * DAY_MS);
        assert_eq!(
            screens(&decide_guidance(&s, later, &[Yes], None).unwrap()),
            [AskedSymptoms, AdvisedBooking]
        );
    }
}
