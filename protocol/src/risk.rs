//! The one risk rule, and COCOA's legacy v1 scoring.
//!
//! [`assess`] is the only function that decides whether a day was a high-risk exposure.
//! The notification ([`Assessment::notify`]) and the exposure list the user sees
//! ([`Assessment::exposures`]) are both read off its result, so they cannot disagree
//! (COCOA 1.1.4 shipped two rules that did).
//!
//! The rule, in GAEN's exposure-window form (v2):
//!
//! ```text
//! window score = Σ over its scans: seconds × weight(attenuation bucket)
//!                × weight(infectiousness) × weight(report type)
//! day          = high risk  ⇔  Σ window scores ≥ daily_score_threshold
//!                           ∧  Σ scan seconds   ≥ daily_seconds_threshold
//! ```
//!
//! Windows whose infectiousness is None, or whose key was revoked, count for nothing.
//! The configuration is data ([`RiskConfiguration`], JSON), served to devices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys::ReportType;

/// How infectious the key's owner was on the key's day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Infectiousness {
    None,
    Standard,
    High,
}

/// Days since symptom onset, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayRange {
    pub from: i32,
    pub to: i32,
}

impl DayRange {
    fn contains(self, d: i32) -> bool {
        (self.from..=self.to).contains(&d)
    }
}

/// Weights of the four attenuation buckets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketWeights {
    pub immediate: f64,
    pub near: f64,
    pub medium: f64,
    pub other: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InfectiousnessWeights {
    pub standard: f64,
    pub high: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportTypeWeights {
    pub confirmed_test: f64,
    pub confirmed_clinical_diagnosis: f64,
    pub self_report: f64,
    pub recursive: f64,
}

/// The risk configuration devices score with (GAEN v2 exposure windows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RiskConfiguration {
    /// Upper bounds (dB, included) of the immediate, near and medium buckets; above the
    /// last is "other".
    pub attenuation_bucket_thresholds_db: [u8; 3],
    pub attenuation_bucket_weights: BucketWeights,
    /// Days since onset that make a key's owner highly infectious ...
    pub high_infectiousness_days: DayRange,
    /// ... and standard (when not high); outside both: None, which counts for nothing.
    pub standard_infectiousness_days: Option<DayRange>,
    /// Infectiousness of a key whose days since onset are unknown.
    pub infectiousness_when_days_since_onset_missing: Infectiousness,
    pub infectiousness_weights: InfectiousnessWeights,
    pub report_type_weights: ReportTypeWeights,
    /// How a key with an unknown report type is scored.
    pub report_type_when_missing: ReportType,
    /// A day is high risk when its summed window scores reach this ...
    pub daily_score_threshold: f64,
    /// ... and its summed scan seconds reach this.
    pub daily_seconds_threshold: u32,
    /// Exposures older than this many days are forgotten (the list resets).
    pub lookback_days: u32,
}

impl Default for RiskConfiguration {
    /// COCOA's v2 exposure-window configuration.
    fn default() -> Self {
        Self {
            attenuation_bucket_thresholds_db: [46, 60, 65],
            attenuation_bucket_weights: BucketWeights {
                immediate: 1.0,
                near: 2.5,
                medium: 1.3,
                other: 0.01,
            },
            high_infectiousness_days: DayRange { from: -3, to: 10 },
            standard_infectiousness_days: None,
            infectiousness_when_days_since_onset_missing: Infectiousness::High,
            infectiousness_weights: InfectiousnessWeights {
                standard: 1.0,
                high: 1.0,
            },
            report_type_weights: ReportTypeWeights {
                confirmed_test: 1.0,
                confirmed_clinical_diagnosis: 1.0,
                self_report: 1.0,
                recursive: 1.0,
            },
            report_type_when_missing: ReportType::ConfirmedTest,
            daily_score_threshold: 1350.0,
            daily_seconds_threshold: 900,
            lookback_days: 14,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid risk configuration: {0}")]
pub struct ConfigError(pub String);

impl RiskConfiguration {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let [a, b, c] = self.attenuation_bucket_thresholds_db;
        if !(a <= b && b <= c) {
            return Err(ConfigError(
                "attenuation thresholds must not decrease".into(),
            ));
        }
        let w = self.attenuation_bucket_weights;
        let i = self.infectiousness_weights;
        let r = self.report_type_weights;
        for (name, v) in [
            ("immediate", w.immediate),
            ("near", w.near),
            ("medium", w.medium),
            ("other", w.other),
            ("standard infectiousness", i.standard),
            ("high infectiousness", i.high),
            ("confirmed test", r.confirmed_test),
            ("clinical diagnosis", r.confirmed_clinical_diagnosis),
            ("self report", r.self_report),
            ("recursive", r.recursive),
            ("daily score threshold", self.daily_score_threshold),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError(format!(
                    "{name} weight {v} must be finite and >= 0"
                )));
            }
        }
        if self.high_infectiousness_days.from > self.high_infectiousness_days.to {
            return Err(ConfigError("high infectiousness days: from > to".into()));
        }
        if self.lookback_days == 0 {
            return Err(ConfigError("lookback days must be at least 1".into()));
        }
        Ok(())
    }

    pub fn infectiousness(&self, days_since_onset: Option<i32>) -> Infectiousness {
        match days_since_onset {
            None => self.infectiousness_when_days_since_onset_missing,
            Some(d) if self.high_infectiousness_days.contains(d) => Infectiousness::High,
            Some(d)
                if self
                    .standard_infectiousness_days
                    .is_some_and(|r| r.contains(d)) =>
            {
                Infectiousness::Standard
            }
            Some(_) => Infectiousness::None,
        }
    }

    fn attenuation_weight(&self, db: u8) -> f64 {
        let [a, b, c] = self.attenuation_bucket_thresholds_db;
        let w = self.attenuation_bucket_weights;
        match db {
            d if d <= a => w.immediate,
            d if d <= b => w.near,
            d if d <= c => w.medium,
            _ => w.other,
        }
    }

    fn infectiousness_weight(&self, i: Infectiousness) -> f64 {
        match i {
            Infectiousness::None => 0.0,
            Infectiousness::Standard => self.infectiousness_weights.standard,
            Infectiousness::High => self.infectiousness_weights.high,
        }
    }

    fn report_type_weight(&self, rt: ReportType) -> f64 {
        let r = self.report_type_weights;
        match rt {
            ReportType::Unknown if self.report_type_when_missing == ReportType::Unknown => 0.0,
            ReportType::Unknown => self.report_type_weight(self.report_type_when_missing),
            ReportType::ConfirmedTest => r.confirmed_test,
            ReportType::ConfirmedClinicalDiagnosis => r.confirmed_clinical_diagnosis,
            ReportType::SelfReport => r.self_report,
            ReportType::Recursive => r.recursive,
            ReportType::Revoked => 0.0,
        }
    }
}

/// One Bluetooth scan that heard a matched RPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanInstance {
    /// Attenuation (transmit power minus RSSI), dB.
    pub typical_attenuation_db: u8,
    pub min_attenuation_db: u8,
    /// The time this scan stands for.
    pub seconds_since_last_scan: u32,
}

/// Up to 30 minutes of scans that heard one diagnosis key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposureWindow {
    /// Days since the Unix epoch (UTC) of the window's start.
    pub day: u32,
    pub report_type: ReportType,
    pub days_since_onset: Option<i32>,
    pub scans: Vec<ScanInstance>,
}

/// The verdict on one day.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayRisk {
    pub day: u32,
    pub score: f64,
    pub scan_seconds: u32,
    pub windows: u32,
    pub high_risk: bool,
}

/// The verdict on a device's exposure windows. Both what the notification says and
/// what the exposure screen lists are read from here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Every day with a window that counts, oldest first.
    pub days: Vec<DayRisk>,
}

impl Assessment {
    /// The high-risk days: the exposure list the user sees.
    pub fn exposures(&self) -> impl Iterator<Item = &DayRisk> {
        self.days.iter().filter(|d| d.high_risk)
    }

    /// Whether to notify: exactly when the exposure list is not empty.
    pub fn notify(&self) -> bool {
        self.exposures().next().is_some()
    }
}

/// Scores one window (0 when it counts for nothing).
pub fn window_score(config: &RiskConfiguration, w: &ExposureWindow) -> f64 {
    let base = config.infectiousness_weight(config.infectiousness(w.days_since_onset))
        * config.report_type_weight(w.report_type);
    w.scans
        .iter()
        .map(|s| {
            f64::from(s.seconds_since_last_scan)
                * config.attenuation_weight(s.typical_attenuation_db)
                * base
        })
        .sum()
}

fn counts(config: &RiskConfiguration, w: &ExposureWindow) -> bool {
    config.infectiousness(w.days_since_onset) != Infectiousness::None
        && config.report_type_weight(w.report_type) > 0.0
}

/// The one risk rule. `today` is days since the Unix epoch (from the caller's clock);
/// windows from `lookback_days` ago or earlier are forgotten.
pub fn assess(config: &RiskConfiguration, windows: &[ExposureWindow], today: u32) -> Assessment {
    let oldest = today.saturating_sub(config.lookback_days - 1);
    let mut days: BTreeMap<u32, DayRisk> = BTreeMap::new();
    for w in windows {
        if w.day < oldest || !counts(config, w) {
            continue;
        }
        let d = days.entry(w.day).or_insert(DayRisk {
            day: w.day,
            score: 0.0,
            scan_seconds: 0,
            windows: 0,
            high_risk: false,
        });
        d.score += window_score(config, w);
        d.scan_seconds = w.scans.iter().fold(d.scan_seconds, |s, x| {
            s.saturating_add(x.seconds_since_last_scan)
        });
        d.windows += 1;
    }
    let days = days
        .into_values()
        .map(|mut d| {
            d.high_risk = d.score >= config.daily_score_threshold
                && d.scan_seconds >= config.daily_seconds_threshold;
            d
        })
        .collect();
    Assessment { days }
}

/// What a phone scores its matches with: GAEN v2 exposure windows (Hotaru's rule, COCOA
/// v2's), or COCOA's 2020 v1 configuration on one platform, kept so that a simulated fleet
/// can reproduce the Android failure. As JSON either is accepted: a [`RiskConfiguration`],
/// or a [`legacy::LegacyScoring`] (it has `legacyConfiguration` and `platform`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scoring {
    Windows(RiskConfiguration),
    Legacy(legacy::LegacyScoring),
}

impl Default for Scoring {
    fn default() -> Self {
        Self::Windows(RiskConfiguration::default())
    }
}

impl Scoring {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Windows(c) => c.validate(),
            Self::Legacy(l) => l.validate(),
        }
    }

    pub fn lookback_days(&self) -> u32 {
        match self {
            Self::Windows(c) => c.lookback_days,
            Self::Legacy(_) => 14,
        }
    }
}

/// COCOA's legacy GAEN v1 configuration and scoring, kept to document (and test) the
/// trap that silenced COCOA on Android in 2020-21.
///
/// v1 risk score = attenuation score × days-since-exposure score × duration score ×
/// transmission risk score, each looked up in an 8-entry table; notify when the score
/// reaches `minimum_risk_score`. COCOA's tables give transmission risk 7 for every level,
/// so a 15+ minute exposure at ≤ 63 dB scores ≥ 3 × 1 × 1 × 7 = 21. But Android scores a
/// key whose transmission risk level is 0 ("unset") as 1, not as a table entry: the
/// highest possible score is then 8 × 1 × 1 × 1 = 8 < 21, and nobody is ever notified.
pub mod legacy {
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct LegacyConfiguration {
        pub minimum_risk_score: u32,
        pub attenuation_scores: [u8; 8],
        pub days_since_last_exposure_scores: [u8; 8],
        pub duration_scores: [u8; 8],
        pub transmission_risk_scores: [u8; 8],
        /// Only for the attenuation-duration report; not part of the score.
        pub duration_at_attenuation_thresholds_db: [u8; 2],
    }

    impl Default for LegacyConfiguration {
        /// COCOA's v1 configuration (2020).
        fn default() -> Self {
            Self {
                minimum_risk_score: 21,
                attenuation_scores: [1, 2, 3, 4, 5, 6, 7, 8],
                days_since_last_exposure_scores: [1; 8],
                duration_scores: [0, 0, 0, 0, 1, 1, 1, 1],
                transmission_risk_scores: [7; 8],
                duration_at_attenuation_thresholds_db: [50, 70],
            }
        }
    }

    /// How a platform turns a key's transmission risk level into a score.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub enum Platform {
        /// Levels 0..=7 index the table.
        Ios,
        /// Levels 1..=8 index the table; level 0 ("unset") scores 1.
        Android,
    }

    /// One v1 exposure summary.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LegacyExposure {
        pub attenuation_db: u8,
        pub duration_minutes: u32,
        pub days_since_last_exposure: u32,
        pub transmission_risk_level: u8,
    }

    fn attenuation_bucket(db: u8) -> usize {
        match db {
            74.. => 0,
            64..=73 => 1,
            52..=63 => 2,
            34..=51 => 3,
            28..=33 => 4,
            16..=27 => 5,
            11..=15 => 6,
            _ => 7,
        }
    }

    fn days_bucket(days: u32) -> usize {
        match days {
            14.. => 0,
            12..=13 => 1,
            10..=11 => 2,
            8..=9 => 3,
            6..=7 => 4,
            4..=5 => 5,
            2..=3 => 6,
            _ => 7,
        }
    }

    fn duration_bucket(minutes: u32) -> usize {
        match minutes {
            0 => 0,
            1..=5 => 1,
            6..=10 => 2,
            11..=15 => 3,
            16..=20 => 4,
            21..=25 => 5,
            26..=30 => 6,
            _ => 7,
        }
    }

    fn transmission_score(c: &LegacyConfiguration, level: u8, platform: Platform) -> u32 {
        let t = &c.transmission_risk_scores;
        u32::from(match (platform, level) {
            (Platform::Ios, l) => t[usize::from(l.min(7))],
            (Platform::Android, 0) => 1,
            (Platform::Android, l) => t[usize::from(l.min(8)) - 1],
        })
    }

    pub fn risk_score(c: &LegacyConfiguration, e: LegacyExposure, platform: Platform) -> u32 {
        u32::from(c.attenuation_scores[attenuation_bucket(e.attenuation_db)])
            * u32::from(c.days_since_last_exposure_scores[days_bucket(e.days_since_last_exposure)])
            * u32::from(c.duration_scores[duration_bucket(e.duration_minutes)])
            * transmission_score(c, e.transmission_risk_level, platform)
    }

    pub fn notifies(c: &LegacyConfiguration, e: LegacyExposure, platform: Platform) -> bool {
        let s = risk_score(c, e, platform);
        s > 0 && s >= c.minimum_risk_score
    }

    /// A phone scoring with the v1 API: the configuration, its platform, and the
    /// transmission risk level its exposure-notification service read on every key
    /// (`None`: the key's own). COCOA's 2020 keys reached Android phones at level 0.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct LegacyScoring {
        pub legacy_configuration: LegacyConfiguration,
        pub platform: Platform,
        #[serde(default)]
        pub transmission_risk_level: Option<u8>,
    }

    impl LegacyScoring {
        /// COCOA 1.1.4 to 1.2.1 on Android (28 Sep 2020 - 18 Feb 2021): minimum risk
        /// score 21, keys at transmission risk level 0, so every match scores at most 8.
        pub fn cocoa_2020_android() -> Self {
            Self {
                legacy_configuration: LegacyConfiguration::default(),
                platform: Platform::Android,
                transmission_risk_level: Some(0),
            }
        }

        pub fn validate(&self) -> Result<(), super::ConfigError> {
            match self.transmission_risk_level {
                Some(l) if l > 8 => Err(super::ConfigError(
                    "transmissionRiskLevel must be 0..=8".into(),
                )),
                _ => Ok(()),
            }
        }

        /// The v1 score of one matched key on one day.
        pub fn score(&self, exposure: LegacyExposure) -> u32 {
            let e = LegacyExposure {
                transmission_risk_level: self
                    .transmission_risk_level
                    .unwrap_or(exposure.transmission_risk_level),
                ..exposure
            };
            risk_score(&self.legacy_configuration, e, self.platform)
        }

        /// Whether a day whose best match scored `score` is high risk (v1: notify when
        /// the score reaches the minimum, and never at 0).
        pub fn high_risk(&self, score: u32) -> bool {
            score > 0 && score >= self.legacy_configuration.minimum_risk_score
        }
    }
}
