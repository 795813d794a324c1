//! The gateway's public HTTP API, as a phone calls it: index.txt and export zips (with
//! ETags), the exposure configuration, `PUT /v3/diagnosis` and `POST /v1/logs`. Nothing
//! else of the server is reachable from a device.

use std::time::Duration;

use base64::Engine as _;
use hotaru_protocol::random::Random;
use serde::Serialize;

/// Requests that fail at the network or with a 5xx: the agent retries them (error D).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No answer (refused, reset, timed out) or a 5xx: try again later.
    #[error("the server cannot be reached: {0}")]
    Unavailable(String),
    /// A 4xx with the server's `{code, message}`.
    #[error("refused with {status} {code}")]
    Refused { status: u16, code: String },
    /// The answer is not what the API promises (an old app against a newer server?).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// The upload bodies of real and chaff uploads are padded to the same size class, and both
/// carry the same headers (`X-Chaff: 0` or `1`, equal in length), so that on the wire
/// (under TLS) a chaff upload looks like a real one.
pub const UPLOAD_BODY_CLASS: usize = 6 * 1024;

#[derive(Clone)]
pub struct GatewayClient {
    base: String,
    http: reqwest::Client,
}

/// One key of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadKey {
    pub key_data: [u8; 16],
    pub rolling_start: u32,
    pub rolling_period: u32,
    pub days_since_onset: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V3Key {
    key_data: String,
    rolling_start_number: u32,
    rolling_period: u32,
    transmission_risk: i32,
    report_type: i32,
    days_since_onset_of_symptoms: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V3Body<'a> {
    keys: Vec<V3Key>,
    has_symptom: bool,
    onset_of_symptom_or_test_date: String,
    verification_payload: &'a str,
    #[serde(rename = "idempotency_key")]
    idempotency_key: &'a str,
    padding: String,
}

/// A `PUT /v3/diagnosis` body padded to the size class. `onset` is an RFC 3339 time.
pub fn upload_body(
    keys: &[UploadKey],
    number: &str,
    onset: &str,
    idempotency_key: &str,
) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = V3Body {
        keys: keys
            .iter()
            .map(|k| V3Key {
                key_data: b64.encode(k.key_data),
                rolling_start_number: k.rolling_start,
                rolling_period: k.rolling_period,
                transmission_risk: 4,
                report_type: 1,
                days_since_onset_of_symptoms: k.days_since_onset,
            })
            .collect(),
        has_symptom: true,
        onset_of_symptom_or_test_date: onset.to_owned(),
        verification_payload: number,
        idempotency_key,
        padding: String::new(),
    };
    let bare = serde_json::to_vec(&body).expect("serialises").len();
    let target = bare.div_ceil(UPLOAD_BODY_CLASS).max(1) * UPLOAD_BODY_CLASS;
    body.padding = "=".repeat(target - bare);
    serde_json::to_vec(&body).expect("serialises")
}

/// A chaff upload: random keys and a random number, shaped and padded as a real one.
pub fn chaff_body(random: &mut dyn Random, now_interval: u32) -> Vec<u8> {
    let n = 1 + random.below(14) as usize;
    let day = now_interval / 144 * 144;
    let keys: Vec<UploadKey> = (0..n)
        .map(|i| {
            let mut key_data = [0u8; 16];
            random.fill(&mut key_data);
            UploadKey {
                key_data,
                rolling_start: day - 144 * i as u32,
                rolling_period: 144,
                days_since_onset: 2 - i as i32,
            }
        })
        .collect();
    let number: String = (0..8)
        .map(|_| char::from(b'0' + random.below(10) as u8))
        .collect();
    let mut id = [0u8; 16];
    random.fill(&mut id);
    let onset = jiff::Timestamp::from_second(i64::from(day - 2 * 144) * 600)
        .map(|t| t.strftime("%Y-%m-%dT00:00:00Z").to_string())
        .unwrap_or_default();
    upload_body(&keys, &number, &onset, &hex::encode(id))
}

/// The server's answer to an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadAnswer {
    pub accepted: u16,
}

impl GatewayClient {
    /// A client of the gateway at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let r = req
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(e.without_url().to_string()))?;
        if r.status().is_server_error() {
            return Err(ClientError::Unavailable(format!("status {}", r.status())));
        }
        Ok(r)
    }

    /// A success answer's JSON body, or why there is none.
    async fn json_answer(r: reqwest::Response) -> Result<serde_json::Value, ClientError> {
        if !r.status().is_success() {
            return Err(Self::refused(r).await);
        }
        r.json()
            .await
            .map_err(|e| ClientError::Unexpected(e.without_url().to_string()))
    }

    async fn refused(r: reqwest::Response) -> ClientError {
        let status = r.status().as_u16();
        let code = r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default();
        ClientError::Refused { status, code }
    }

    /// The exposure configuration, as served (JSON bytes).
    pub async fn exposure_configuration(&self) -> Result<Vec<u8>, ClientError> {
        let r = self
            .send(self.http.get(self.url("/v1/exposure-configuration")))
            .await?;
        if !r.status().is_success() {
            return Err(Self::refused(r).await);
        }
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Unavailable(e.without_url().to_string()))
    }

    /// index.txt: `None` when it did not change since `etag` (304), else its lines and
    /// new ETag.
    pub async fn index(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(Vec<String>, Option<String>)>, ClientError> {
        let mut req = self.http.get(self.url("/exports/index.txt"));
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        let r = self.send(req).await?;
        if r.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(Self::refused(r).await);
        }
        let etag = r
            .headers()
            .get("ETag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r
            .text()
            .await
            .map_err(|e| ClientError::Unavailable(e.without_url().to_string()))?;
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Some((lines, etag)))
    }

    /// One export file, by its path in index.txt.
    pub async fn export_file(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        if path.contains("..") || path.contains("://") {
            return Err(ClientError::Unexpected(format!("index.txt names {path:?}")));
        }
        let r = self.send(self.http.get(self.url(path))).await?;
        if !r.status().is_success() {
            return Err(Self::refused(r).await);
        }
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Unavailable(e.without_url().to_string()))
    }

    /// `PUT /v3/diagnosis` with a body from [`upload_body`] or [`chaff_body`].
    pub async fn upload(&self, body: Vec<u8>, chaff: bool) -> Result<UploadAnswer, ClientError> {
        let r = self
            .send(
                self.http
                    .put(self.url("/v3/diagnosis"))
                    .header("Content-Type", "application/json")
                    .header("X-Chaff", if chaff { "1" } else { "0" })
                    .body(body),
            )
            .await?;
        let v = Self::json_answer(r).await?;
        let accepted = v
            .get("accepted")
            .and_then(|a| a.as_u64())
            .ok_or_else(|| ClientError::Unexpected("no accepted count".into()))?;
        Ok(UploadAnswer {
            accepted: accepted.min(u64::from(u16::MAX)) as u16,
        })
    }

    /// `POST /v1/logs`: the log the user reviewed, with their consent; the log ID.
    pub async fn send_log(&self, log: &str) -> Result<[u8; 16], ClientError> {
        let r = self
            .send(
                self.http
                    .post(self.url("/v1/logs"))
                    .header("Content-Type", "application/json")
                    .json(&serde_json::json!({ "consent": true, "log": log })),
            )
            .await?;
        let v = Self::json_answer(r).await?;
        v.get("logId")
            .and_then(|s| s.as_str())
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ClientError::Unexpected("no log id".into()))
    }
}

/// index.txt's lines and its ETag.
pub type Index = (Vec<String>, Option<String>);

/// Where the daily check reads the health authority's files: the gateway, as a phone
/// does, or a simulated fleet's cache of the same bytes (with a key index shared by its
/// phones). The agent verifies every file it is given either way.
pub trait ExportSource: Sync {
    fn exposure_configuration(&self) -> impl Future<Output = Result<Vec<u8>, ClientError>> + Send;
    /// index.txt: `None` when unchanged since `etag`, else its lines and new ETag.
    fn index(
        &self,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Option<Index>, ClientError>> + Send;
    /// One export file's bytes (shared: a fleet hands the same bytes to every phone).
    fn export_file(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<std::sync::Arc<Vec<u8>>, ClientError>> + Send;
    /// The verdict on a file and its keys, when the source has already established them
    /// for these exact bytes against `public_key` (a fleet shares that work between its
    /// phones); `None`: the phone verifies and reads it itself.
    fn verified(
        &self,
        _path: &str,
        _zip: &[u8],
        _public_key: &hotaru_protocol::export::PublicKey,
    ) -> Option<(
        hotaru_events::device::ExportVerdict,
        std::sync::Arc<Vec<hotaru_protocol::keys::DiagnosisKey>>,
    )> {
        None
    }
    /// A key index built once from these verified files' keys, when the source shares one.
    fn key_index(
        &self,
        _files: &[[u8; 32]],
        _keys: &[hotaru_protocol::keys::DiagnosisKey],
    ) -> Option<std::sync::Arc<hotaru_protocol::matching::KeyIndex>> {
        None
    }
}

impl ExportSource for GatewayClient {
    async fn exposure_configuration(&self) -> Result<Vec<u8>, ClientError> {
        GatewayClient::exposure_configuration(self).await
    }

    async fn index(&self, etag: Option<&str>) -> Result<Option<Index>, ClientError> {
        GatewayClient::index(self, etag).await
    }

    async fn export_file(&self, path: &str) -> Result<std::sync::Arc<Vec<u8>>, ClientError> {
        GatewayClient::export_file(self, path)
            .await
            .map(std::sync::Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotaru_protocol::random::SeededRandom;

    /// A failed request's error names no address (it reaches log lines and the screen).
    #[tokio::test]
    async fn errors_name_no_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = GatewayClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = c.index(None).await.unwrap_err();
        assert!(matches!(e, ClientError::Unavailable(_)), "{e:?}");
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains(&port.to_string()),
            "{text}"
        );
    }

    #[test]
    fn real_and_chaff_bodies_have_the_same_size_whatever_they_hold() {
        let mut r = SeededRandom::from_u64(3, 0);
        let key = |i: u32| UploadKey {
            key_data: [i as u8; 16],
            rolling_start: 2_900_000 + i * 144,
            rolling_period: 144,
            days_since_onset: i as i32,
        };
        let one = upload_body(&[key(0)], "12345678", "2026-11-30T00:00:00Z", "a");
        let many: Vec<UploadKey> = (0..15).map(key).collect();
        let fifteen = upload_body(&many, "12345678", "2026-11-30T00:00:00Z", &"f".repeat(32));
        let chaff: Vec<usize> = (0..50)
            .map(|_| chaff_body(&mut r, 2_900_000).len())
            .collect();
        assert_eq!(one.len(), UPLOAD_BODY_CLASS);
        assert_eq!(fifteen.len(), UPLOAD_BODY_CLASS);
        assert!(chaff.iter().all(|n| *n == UPLOAD_BODY_CLASS), "{chaff:?}");
        let v: serde_json::Value = serde_json::from_slice(&chaff_body(&mut r, 2_900_000)).unwrap();
        assert_eq!(v["verificationPayload"].as_str().unwrap().len(), 8);
    }
}
