//! Diagnosis keys: a TEK with what the server publishes about it.

use serde::{Deserialize, Serialize};

use crate::crypto::{EnIntervalNumber, ROLLING_PERIOD, Tek};

/// How the diagnosis behind a key was made (the export format's `ReportType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportType {
    Unknown,
    ConfirmedTest,
    ConfirmedClinicalDiagnosis,
    SelfReport,
    Recursive,
    Revoked,
}

impl ReportType {
    pub fn to_proto(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::ConfirmedTest => 1,
            Self::ConfirmedClinicalDiagnosis => 2,
            Self::SelfReport => 3,
            Self::Recursive => 4,
            Self::Revoked => 5,
        }
    }

    pub fn from_proto(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Unknown,
            1 => Self::ConfirmedTest,
            2 => Self::ConfirmedClinicalDiagnosis,
            3 => Self::SelfReport,
            4 => Self::Recursive,
            5 => Self::Revoked,
            _ => return None,
        })
    }
}

/// A published TEK: the key, when it was valid, and what the server says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiagnosisKey {
    pub tek: Tek,
    pub rolling_start: EnIntervalNumber,
    /// Intervals the key was valid for, 1..=144.
    pub rolling_period: u32,
    /// 0..=8; 0 means "unset", which v1 Android scoring turns into a key that can never
    /// notify anyone (see `risk::legacy`). Hotaru's server never publishes 0.
    pub transmission_risk_level: u8,
    pub report_type: ReportType,
    /// Days from symptom onset (or test) to the key's day, -14..=14, when known.
    pub days_since_onset: Option<i32>,
}

impl DiagnosisKey {
    /// A confirmed-test key valid for a whole day.
    pub fn daily(tek: Tek, rolling_start: EnIntervalNumber) -> Self {
        Self {
            tek,
            rolling_start,
            rolling_period: ROLLING_PERIOD,
            transmission_risk_level: 4,
            report_type: ReportType::ConfirmedTest,
            days_since_onset: None,
        }
    }

    /// The first interval after the key's validity.
    pub fn end(&self) -> EnIntervalNumber {
        EnIntervalNumber(self.rolling_start.0.saturating_add(self.rolling_period))
    }
}
