//! The JSON bodies of every API, and the one conversion of a key as a client sends it
//! (base64 key data, rolling start and period) into the domain's [`SubmittedKey`].

use base64::Engine as _;
use hotaru_domain::upload::SubmittedKey;
use serde::{Deserialize, Serialize};

/// A key as it arrives, whichever API brought it: undecodable key data becomes an empty
/// key, which the domain's validation drops (wrong length) with its index.
pub(crate) fn submitted_key(
    key_data_b64: &str,
    rolling_start: u32,
    rolling_period: u32,
    transmission_risk: Option<i32>,
    report_type: Option<i32>,
    days_since_onset: Option<i32>,
) -> SubmittedKey {
    SubmittedKey {
        key_data: base64::engine::general_purpose::STANDARD
            .decode(key_data_b64.as_bytes())
            .unwrap_or_default(),
        rolling_start,
        rolling_period,
        transmission_risk,
        report_type,
        days_since_onset,
    }
}

/// A 16-byte ID as it appears in a path (32 hex digits), or `None`.
pub(crate) fn path_id(s: &str) -> Option<[u8; 16]> {
    hex::decode(s).ok()?.try_into().ok()
}

// ---- health-centre API ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CaseRequest {
    pub(crate) symptom_onset_date: Option<String>,
    pub(crate) sample_date: Option<String>,
}

// ---- COCOA's v3 upload ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V3Key {
    pub(crate) key_data: String,
    pub(crate) rolling_start_number: u32,
    pub(crate) rolling_period: u32,
    #[serde(default)]
    pub(crate) transmission_risk: Option<i32>,
    #[serde(default)]
    pub(crate) report_type: Option<i32>,
    #[serde(default)]
    pub(crate) days_since_onset_of_symptoms: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V3Diagnosis {
    #[serde(default)]
    pub(crate) keys: Vec<V3Key>,
    #[serde(default)]
    pub(crate) has_symptom: Option<bool>,
    #[serde(default)]
    pub(crate) onset_of_symptom_or_test_date: Option<String>,
    pub(crate) verification_payload: String,
    #[serde(default, rename = "idempotency_key")]
    pub(crate) idempotency_key: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) padding: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DroppedJson {
    pub(crate) index: u16,
    pub(crate) reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DiagnosisAnswer {
    pub(crate) accepted: u16,
    pub(crate) dropped: Vec<DroppedJson>,
    /// Padding to the answer's size class (`chaff::answer_size`), so that its size says
    /// nothing of its content.
    pub(crate) padding: String,
}

impl V3Key {
    pub(crate) fn submitted(&self) -> SubmittedKey {
        submitted_key(
            &self.key_data,
            self.rolling_start_number,
            self.rolling_period,
            self.transmission_risk,
            self.report_type,
            self.days_since_onset_of_symptoms,
        )
    }
}

// ---- Google's v1 publish ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublishKey {
    pub(crate) key: String,
    pub(crate) rolling_start_number: u32,
    pub(crate) rolling_period: u32,
    #[serde(default)]
    pub(crate) transmission_risk: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublishRequest {
    #[serde(default)]
    pub(crate) temporary_exposure_keys: Vec<PublishKey>,
    #[serde(rename = "healthAuthorityID")]
    pub(crate) health_authority_id: String,
    pub(crate) verification_payload: String,
    #[serde(default)]
    pub(crate) hmac_key: Option<String>,
    #[serde(default)]
    pub(crate) symptom_onset_interval: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) traveler: Option<bool>,
    #[serde(default)]
    pub(crate) revision_token: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) padding: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublishResponse {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) revision_token: String,
    pub(crate) inserted_exposures: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) code: String,
    /// The same text as `error`, for clients of Hotaru's `{code, message}` errors.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) message: String,
    pub(crate) padding: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) warnings: Vec<String>,
}

impl PublishKey {
    /// Google's v1 key carries no report type or days since onset.
    pub(crate) fn submitted(&self) -> SubmittedKey {
        submitted_key(
            &self.key,
            self.rolling_start_number,
            self.rolling_period,
            self.transmission_risk,
            None,
            None,
        )
    }
}

// ---- operation logs ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogUpload {
    /// The user agreed to the stated purpose (DOMAIN.md, "Operation logs").
    pub(crate) consent: bool,
    /// The log as the user reviewed it.
    pub(crate) log: String,
}
