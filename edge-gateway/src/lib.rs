//! The edge gateway: the only crate that knows HTTP and JSON. It turns requests into
//! commands for the server's actors and answers with stable JSON (`{code, message}` for
//! every error, docs/api-errors.md).
//!
//! Unknown JSON fields: ignored on the device APIs (apps send more than Hotaru uses, e.g.
//! COCOA's `regions` and `platform`), refused on the health-centre and operator APIs (a
//! typo there must not pass silently).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use hotaru_domain::upload::SubmittedKey;
use hotaru_events::Clock;
use hotaru_events::domain::{CaseBasis, CaseId, CentreId, Day};
use hotaru_log::{AnyLog, EventLog};
use hotaru_protocol::random::RandomSource;
use hotaru_protocol::risk::RiskConfiguration;
use hotaru_server::commands::{CommandError, Commands};
use hotaru_server::credentials::{self, Role};
use hotaru_server::{Distribution, Redemption};
use serde::{Deserialize, Serialize};

pub mod error;
pub mod limits;
pub mod metrics;

pub use error::ApiError;

/// The largest upload body accepted (COCOA's and Google's servers use the same order).
pub const UPLOAD_BODY_LIMIT: usize = 64 * 1024;
/// The OpenAPI document, also at docs/openapi.json.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

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
    pub chaff: Arc<ChaffTimer>,
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

/// Recent latencies of real uploads (arrival to answer, queueing included). A chaff
/// request is answered after a latency drawn from them, so that under load its answers
/// slow down exactly as real ones do (Corona-Warn-App's bug #474).
pub struct ChaffTimer {
    recent: Mutex<Vec<Duration>>,
    next: std::sync::atomic::AtomicUsize,
    /// How late chaff has been waking up, in microseconds (a moving average): on a loaded
    /// machine a sleeping task wakes late, on top of the real latency it copies.
    overshoot_us: std::sync::atomic::AtomicU64,
    /// Where the drawn latencies come from (the node's injected source).
    random: Arc<dyn RandomSource>,
}

/// Few enough that the sample follows the load as it changes.
const CHAFF_SAMPLES: usize = 64;

impl Default for ChaffTimer {
    /// A timer drawing from the operating system's generator.
    fn default() -> Self {
        Self::new(Arc::new(hotaru_protocol::random::OsRandom::new()))
    }
}

impl ChaffTimer {
    /// A timer drawing its latencies from `random`.
    pub fn new(random: Arc<dyn RandomSource>) -> Self {
        Self {
            recent: Mutex::new(Vec::with_capacity(CHAFF_SAMPLES)),
            next: Default::default(),
            overshoot_us: Default::default(),
            random,
        }
    }

    pub fn record(&self, d: Duration) {
        let mut r = self.recent.lock().expect("not poisoned");
        if r.len() < CHAFF_SAMPLES {
            r.push(d);
        } else {
            let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % CHAFF_SAMPLES;
            r[i] = d;
        }
    }

    /// Waits, from `started`, for a latency drawn from the real ones, correcting for how
    /// late wake-ups have been.
    pub async fn wait(&self, started: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let target = started + self.sample();
        let early = Duration::from_micros(self.overshoot_us.load(Relaxed));
        wait_until(target.checked_sub(early).unwrap_or(target)).await;
        let late = Instant::now().saturating_duration_since(target).as_micros() as u64;
        let early_by = target.saturating_duration_since(Instant::now()).as_micros() as u64;
        let old = self.overshoot_us.load(Relaxed);
        // Moving average of the error, 1/8 per sample, never below zero.
        let new = (old * 7 + (old + late).saturating_sub(early_by)) / 8;
        self.overshoot_us.store(new, Relaxed);
    }

    /// A latency drawn from the recent real ones (15 ms until there are any).
    pub fn sample(&self) -> Duration {
        let r = self.recent.lock().expect("not poisoned");
        if r.is_empty() {
            return Duration::from_millis(15);
        }
        let b = self.random.array::<8>();
        r[(u64::from_le_bytes(b) % r.len() as u64) as usize]
    }
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let upload_json = web::JsonConfig::default()
        .limit(UPLOAD_BODY_LIMIT)
        .error_handler(json_error);
    let small_json = web::JsonConfig::default()
        .limit(4 * 1024)
        .error_handler(json_error);
    cfg.service(
        web::resource("/v3/diagnosis")
            .app_data(upload_json)
            .route(web::put().to(diagnosis_v3)),
    )
    .service(web::resource("/v1/publish").route(web::post().to(publish_v1)))
    .service(
        web::resource("/v1/cases")
            .app_data(small_json.clone())
            .route(web::post().to(confirm_case)),
    )
    .service(
        web::resource("/v1/cases/{case_id}/processing-number").route(web::post().to(issue_number)),
    )
    .service(web::resource("/v1/admin/batches").route(web::post().to(sign_batches)))
    .service(
        web::resource("/v1/logs")
            .app_data(
                web::JsonConfig::default()
                    .limit(UPLOAD_BODY_LIMIT)
                    .error_handler(json_error),
            )
            .route(web::post().to(upload_log)),
    )
    .service(web::resource("/v1/admin/logs/{log_id}/close").route(web::post().to(close_log)))
    .service(
        web::resource("/v1/exposure-configuration").route(web::get().to(exposure_configuration)),
    )
    .service(
        web::resource("/exports/index.txt")
            .route(web::get().to(index_txt))
            .route(web::head().to(index_txt)),
    )
    .service(
        web::resource("/exports/{region}/{file}")
            .route(web::get().to(export_file))
            .route(web::head().to(export_file)),
    )
    .service(web::resource("/healthz").route(web::get().to(healthz)))
    .service(web::resource("/readyz").route(web::get().to(readyz)))
    .service(web::resource("/openapi.json").route(web::get().to(openapi)))
    .service(web::resource("/metrics").route(web::get().to(metrics_text)))
    .default_service(web::to(not_found));
}

/// The routes as (method, path) pairs, as the OpenAPI test checks them.
pub const ROUTES: &[(&str, &str)] = &[
    ("put", "/v3/diagnosis"),
    ("post", "/v1/publish"),
    ("post", "/v1/cases"),
    ("post", "/v1/cases/{caseId}/processing-number"),
    ("post", "/v1/admin/batches"),
    ("post", "/v1/logs"),
    ("post", "/v1/admin/logs/{logId}/close"),
    ("get", "/v1/exposure-configuration"),
    ("get", "/exports/index.txt"),
    ("head", "/exports/index.txt"),
    ("get", "/exports/{region}/{file}"),
    ("head", "/exports/{region}/{file}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
];

fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let e = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::new(413, "BODY_TOO_LARGE", "the request body is too large")
        }
        E::ContentType => ApiError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        ),
        E::Deserialize(d) => ApiError::bad_request("INVALID_JSON", format!("invalid body: {d}")),
        _ => ApiError::bad_request("INVALID_JSON", "the body could not be read"),
    };
    e.into()
}

/// The answer for a path no route serves (distinct from a route's own NOT_FOUND).
async fn not_found() -> HttpResponse {
    ApiError::new(404, "NO_ROUTE", "no such path").error_response()
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn authorise(g: &Gateway, req: &HttpRequest, role: Role) -> Result<u32, ApiError> {
    let key = bearer(req).ok_or_else(ApiError::unauthorized)?;
    credentials::verify(&g.log, role, key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::unauthorized)
}

fn now_ms(g: &Gateway) -> u64 {
    g.clock.now().0
}

/// A command's failure as the client sees it.
fn command_error(g: &Gateway, e: CommandError) -> ApiError {
    match e {
        CommandError::Registration(e) => error::from_registration(e, now_ms(g)),
        CommandError::Batch(hotaru_server::BatchError::NoSigningKey(r)) => ApiError::new(
            409,
            "NO_SIGNING_KEY",
            format!("region {r} has no signing key: run `hotaru keys generate`"),
        ),
        CommandError::Log(_) | CommandError::Batch(_) | CommandError::Unavailable(_) => {
            tracing::error!(error = %e, "command failed");
            ApiError::new(
                503,
                "UNAVAILABLE",
                "the service is unavailable; try again later",
            )
        }
        CommandError::Malformed(_) => ApiError::internal(e),
    }
}

// ---- health-centre API ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseRequest {
    symptom_onset_date: Option<String>,
    sample_date: Option<String>,
}

fn parse_day(s: &str) -> Result<Day, ApiError> {
    let d: jiff::civil::Date = s
        .parse()
        .map_err(|_| ApiError::bad_request("INVALID_DATE", "dates are YYYY-MM-DD"))?;
    let secs = d
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|_| ApiError::bad_request("INVALID_DATE", "date out of range"))?
        .timestamp()
        .as_second();
    u32::try_from(secs / 86_400)
        .map(Day)
        .map_err(|_| ApiError::bad_request("INVALID_DATE", "date out of range"))
}

async fn confirm_case(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Json<CaseRequest>,
) -> Result<HttpResponse, ApiError> {
    let centre = authorise(&g, &req, Role::Centre).await?;
    let basis = match (&body.symptom_onset_date, &body.sample_date) {
        (Some(d), None) => CaseBasis::SymptomOnset(parse_day(d)?),
        (None, Some(d)) => CaseBasis::Sample(parse_day(d)?),
        _ => {
            return Err(ApiError::bad_request(
                "INVALID_CASE",
                "give exactly one of symptomOnsetDate and sampleDate",
            ));
        }
    };
    let case_id = g
        .commands
        .confirm_case(CentreId(centre), basis)
        .await
        .map_err(|e| command_error(&g, e))?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "caseId": hex::encode(case_id.0) })))
}

async fn issue_number(
    g: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let centre = authorise(&g, &req, Role::Centre).await?;
    let id: [u8; 16] = hex::decode(path.as_str())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ApiError::new(404, "CASE_NOT_FOUND", "no such case"))?;
    let issued = g
        .commands
        .issue_number(CentreId(centre), CaseId(id))
        .await
        .map_err(|e| command_error(&g, e))?;
    let expires = jiff::Timestamp::from_millisecond(issued.expires_at.0 as i64)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "processingNumber": issued.number.as_str(),
            "expiresAt": expires.to_string(),
        })))
}

// ---- device API ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V3Key {
    key_data: String,
    rolling_start_number: u32,
    rolling_period: u32,
    #[serde(default)]
    transmission_risk: Option<i32>,
    #[serde(default)]
    report_type: Option<i32>,
    #[serde(default)]
    days_since_onset_of_symptoms: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V3Diagnosis {
    #[serde(default)]
    keys: Vec<V3Key>,
    #[serde(default)]
    has_symptom: Option<bool>,
    #[serde(default)]
    onset_of_symptom_or_test_date: Option<String>,
    verification_payload: String,
    #[serde(default, rename = "idempotency_key")]
    idempotency_key: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    padding: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DroppedJson {
    index: u16,
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiagnosisAnswer {
    accepted: u16,
    dropped: Vec<DroppedJson>,
    /// Random-length padding, so that answers' sizes say nothing.
    padding: String,
}

fn padding(random: &dyn RandomSource) -> String {
    let [b] = random.array::<1>();
    "=".repeat(16 + usize::from(b % 64))
}

fn submitted(keys: &[V3Key]) -> Vec<SubmittedKey> {
    keys.iter()
        .map(|k| SubmittedKey {
            // Undecodable key data becomes an empty key, which validation drops (length).
            key_data: base64::engine::general_purpose::STANDARD
                .decode(k.key_data.as_bytes())
                .unwrap_or_default(),
            rolling_start: k.rolling_start_number,
            rolling_period: k.rolling_period,
            transmission_risk: k.transmission_risk,
            report_type: k.report_type,
            days_since_onset: k.days_since_onset_of_symptoms,
        })
        .collect()
}

/// Waits until `t` to within tens of microseconds: the timer wheel ticks in whole
/// milliseconds and would make chaff a millisecond slower than the real answers it copies.
async fn wait_until(t: Instant) {
    let now = Instant::now();
    if t > now + Duration::from_micros(1500) {
        tokio::time::sleep(t - now - Duration::from_millis(1)).await;
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}

fn is_chaff(req: &HttpRequest) -> bool {
    req.headers()
        .get("X-Chaff")
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// COCOA's v3 upload. The case's onset or sample date comes from the health centre; the
/// device's `hasSymptom` and `onsetOfSymptomOrTestDate` are checked for form only.
async fn diagnosis_v3(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Json<V3Diagnosis>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let source = g.limits.source(&req);
    g.limits.admit(source)?;
    let body = body.into_inner();
    if let Some(d) = &body.onset_of_symptom_or_test_date
        && d.parse::<jiff::Timestamp>().is_err()
    {
        return Err(ApiError::bad_request(
            "INVALID_DATE",
            "onsetOfSymptomOrTestDate must be an RFC 3339 time",
        ));
    }
    let _ = body.has_symptom;
    let keys = submitted(&body.keys);
    if is_chaff(&req) {
        // The same parsing as a real upload, the answer a success would get, after a
        // latency drawn from the real ones.
        g.chaff.wait(started).await;
        return Ok(HttpResponse::Ok().json(DiagnosisAnswer {
            accepted: keys.len().min(30) as u16,
            dropped: Vec::new(),
            padding: padding(&*g.random),
        }));
    }
    let answer = g
        .commands
        .redeem(Redemption {
            number: body.verification_payload,
            keys,
            idempotency_key: body.idempotency_key,
            source,
        })
        .await;
    g.chaff.record(started.elapsed());
    let answer = answer.map_err(|e| {
        let e = command_error(&g, e);
        g.metrics.redemption(e.code);
        e
    })?;
    g.metrics.redemption("ok");
    Ok(HttpResponse::Ok().json(DiagnosisAnswer {
        accepted: answer.accepted,
        dropped: answer
            .dropped
            .iter()
            .map(|d| DroppedJson {
                index: d.index,
                reason: format!("{:?}", d.reason),
            })
            .collect(),
        padding: padding(&*g.random),
    }))
}

// ---- Google's v1 publish API ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishKey {
    key: String,
    rolling_start_number: u32,
    rolling_period: u32,
    #[serde(default)]
    transmission_risk: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishRequest {
    #[serde(default)]
    temporary_exposure_keys: Vec<PublishKey>,
    #[serde(rename = "healthAuthorityID")]
    health_authority_id: String,
    verification_payload: String,
    #[serde(default)]
    hmac_key: Option<String>,
    #[serde(default)]
    symptom_onset_interval: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    traveler: Option<bool>,
    #[serde(default)]
    revision_token: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    padding: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct PublishResponse {
    #[serde(skip_serializing_if = "String::is_empty")]
    revision_token: String,
    inserted_exposures: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    code: String,
    /// The same text as `error`, for clients of Hotaru's `{code, message}` errors.
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    padding: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Errors of the publish API carry Google's fields (`error`, `code`) and Hotaru's
/// (`code`, `message`), padded like every answer.
fn publish_error(e: ApiError, random: &dyn RandomSource) -> HttpResponse {
    let mut r = HttpResponse::build(e.status_code());
    if let Some(s) = e.retry_after {
        r.insert_header(("Retry-After", s.to_string()));
    }
    r.json(PublishResponse {
        error: e.message.clone(),
        code: e.code.to_owned(),
        message: e.message,
        padding: padding(random),
        ..Default::default()
    })
}

fn parse_publish(body: &[u8], authority: &str) -> Result<PublishRequest, ApiError> {
    if body.len() > UPLOAD_BODY_LIMIT {
        return Err(ApiError::new(
            413,
            "BODY_TOO_LARGE",
            "the request body is too large",
        ));
    }
    let p: PublishRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("invalid body: {e}")))?;
    if p.health_authority_id != authority {
        return Err(ApiError::new(
            401,
            "UNKNOWN_HEALTH_AUTHORITY_ID",
            "healthAuthorityID names no health authority of this server",
        ));
    }
    if let Some(h) = &p.hmac_key
        && base64::engine::general_purpose::STANDARD
            .decode(h.as_bytes())
            .is_err()
    {
        return Err(ApiError::bad_request(
            "INVALID_HMAC_KEY",
            "hmacKey must be base64",
        ));
    }
    let _ = p.symptom_onset_interval;
    Ok(p)
}

/// Google's v1 publish (`POST /v1/publish`). The verification payload is the processing
/// number; a partial failure is answered 200 with the valid keys saved and a warning per
/// dropped key; with `revisionToken` the device adds keys to its earlier upload.
async fn publish_v1(g: web::Data<Gateway>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let started = Instant::now();
    let source = g.limits.source(&req);
    if let Err(e) = g.limits.admit(source) {
        return publish_error(e, &*g.random);
    }
    let p = match parse_publish(&body, &g.health_authority) {
        Ok(p) => p,
        Err(e) => return publish_error(e, &*g.random),
    };
    let keys: Vec<SubmittedKey> = p
        .temporary_exposure_keys
        .iter()
        .map(|k| SubmittedKey {
            key_data: base64::engine::general_purpose::STANDARD
                .decode(k.key.as_bytes())
                .unwrap_or_default(),
            rolling_start: k.rolling_start_number,
            rolling_period: k.rolling_period,
            transmission_risk: k.transmission_risk,
            report_type: None,
            days_since_onset: None,
        })
        .collect();
    if is_chaff(&req) {
        g.chaff.wait(started).await;
        return HttpResponse::Ok().json(PublishResponse {
            revision_token: chaff_token(&*g.random),
            inserted_exposures: keys.len().min(30) as u16,
            padding: padding(&*g.random),
            ..Default::default()
        });
    }
    let answer = g
        .commands
        .publish(
            Redemption {
                number: p.verification_payload,
                keys,
                idempotency_key: None,
                source,
            },
            p.revision_token.filter(|t| !t.is_empty()),
        )
        .await;
    g.chaff.record(started.elapsed());
    let answer = match answer {
        Err(e) => {
            let e = command_error(&g, e);
            g.metrics.redemption(e.code);
            return publish_error(e, &*g.random);
        }
        Ok(a) => a,
    };
    g.metrics.redemption("ok");
    let dropped = &answer.answer.dropped;
    let (code, error) = if dropped.is_empty() {
        (String::new(), String::new())
    } else {
        (
            "PARTIAL_FAILURE".to_owned(),
            format!("{} of the keys were not saved", dropped.len()),
        )
    };
    HttpResponse::Ok().json(PublishResponse {
        revision_token: answer.revision_token,
        inserted_exposures: answer.answer.accepted,
        message: error.clone(),
        error,
        code,
        padding: padding(&*g.random),
        warnings: dropped
            .iter()
            .map(|d| format!("key {}: {:?}", d.index, d.reason))
            .collect(),
    })
}

/// A random token of a real token's length.
fn chaff_token(random: &dyn RandomSource) -> String {
    let mut b = vec![0u8; hotaru_server::revision::TOKEN_BYTES];
    random.draw(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn exposure_configuration(g: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(&g.risk)
}

/// A cacheable answer with a strong ETag (the body's SHA-256, given or computed); 304 when
/// the client has it; no body for HEAD.
fn cacheable(
    req: &HttpRequest,
    body: impl Into<actix_web::web::Bytes> + AsRef<[u8]>,
    sha256: Option<[u8; 32]>,
    content_type: &str,
    cache: &str,
) -> HttpResponse {
    let sha = sha256.unwrap_or_else(|| {
        ring::digest::digest(&ring::digest::SHA256, body.as_ref())
            .as_ref()
            .try_into()
            .expect("32 bytes")
    });
    let etag = format!("\"{}\"", hex::encode(&sha[..16]));
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    r.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache));
    if matches {
        return r.finish();
    }
    // For HEAD, actix-web sends these headers (Content-Length included) without the body.
    r.content_type(content_type).body(body.into())
}

async fn index_txt(g: web::Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let lines = g.distribution.index().await.map_err(ApiError::internal)?;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(cacheable(
        &req,
        body.into_bytes(),
        None,
        "text/plain; charset=utf-8",
        "public, max-age=300",
    ))
}

async fn export_file(
    g: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (region, file) = path.into_inner();
    let name = format!("exports/{region}/{file}");
    let cached = g.files.lock().expect("not poisoned").get(&name).cloned();
    let (zip, sha) = match cached {
        Some(hit) => hit,
        None => {
            let (zip, sha) = g
                .distribution
                .file_with_digest(&name)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(ApiError::not_found)?;
            let zip = actix_web::web::Bytes::from(zip);
            let mut files = g.files.lock().expect("not poisoned");
            // Published files never change; keep the newest ones, up to a budget.
            let held: usize = files.values().map(|(z, _)| z.len()).sum();
            if held + zip.len() > FILE_CACHE_BYTES {
                files.clear();
            }
            files.insert(name, (zip.clone(), sha));
            (zip, sha)
        }
    };
    // A published file never changes: cache it for a year.
    Ok(cacheable(
        &req,
        zip,
        Some(sha),
        "application/zip",
        "public, max-age=31536000, immutable",
    ))
}

// ---- operator API ----

async fn sign_batches(g: web::Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorise(&g, &req, Role::Operator).await?;
    let batches = match g.commands.sign_now().await {
        Ok(Some(b)) => vec![serde_json::json!({
            "batchId": b.batch_id,
            "keys": b.key_count,
            "paddingKeys": b.padding_count,
            "files": b.files,
        })],
        Ok(None) | Err(CommandError::Batch(hotaru_server::BatchError::Fenced)) => vec![],
        Err(e) => return Err(command_error(&g, e)),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "batches": batches })))
}

// ---- operation logs ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogUpload {
    /// The user agreed to the stated purpose (DOMAIN.md, "Operation logs").
    consent: bool,
    /// The log as the user reviewed it.
    log: String,
}

/// A device sends its operation log, with the user's consent. Anything shaped like
/// personal data is refused with the reason, and nothing is stored.
async fn upload_log(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Json<LogUpload>,
) -> Result<HttpResponse, ApiError> {
    g.limits.admit(g.limits.source(&req))?;
    if !body.consent {
        return Err(ApiError::bad_request(
            "CONSENT_REQUIRED",
            "a log is accepted only with the user's consent",
        ));
    }
    if body.log.trim().is_empty() {
        return Err(ApiError::bad_request("EMPTY_LOG", "the log is empty"));
    }
    if let Some((kind, at)) = hotaru_server::personal::find_personal_data(body.log.as_bytes()) {
        return Err(ApiError::bad_request(
            "LOG_HAS_PERSONAL_DATA",
            format!(
                "the log contains something shaped like {} (near byte {at}); remove it and send again",
                kind.name()
            ),
        ));
    }
    let id = g
        .commands
        .receive_log(body.into_inner().log.into_bytes())
        .await
        .map_err(|e| command_error(&g, e))?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "logId": hex::encode(id.0) })))
}

/// Support closes the investigation: the log is deleted (OperationLogDeleted).
async fn close_log(
    g: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorise(&g, &req, Role::Operator).await?;
    let id: [u8; 16] = hex::decode(path.as_str())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ApiError::new(404, "LOG_NOT_FOUND", "no open log with this ID"))?;
    let closed = g
        .commands
        .close_log(hotaru_events::domain::LogId(id))
        .await
        .map_err(|e| command_error(&g, e))?;
    if !closed {
        return Err(ApiError::new(
            404,
            "LOG_NOT_FOUND",
            "no open log with this ID",
        ));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "logId": path.as_str(), "deleted": true })))
}

// ---- operations ----

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(g: web::Data<Gateway>) -> HttpResponse {
    match tokio::time::timeout(
        Duration::from_secs(2),
        g.log.head(hotaru_events::Context::Registration),
    )
    .await
    {
        Ok(Ok(_)) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        _ => ApiError::new(503, "UNAVAILABLE", "the event log is not reachable").error_response(),
    }
}

use actix_web::ResponseError as _;

async fn metrics_text(g: web::Data<Gateway>) -> HttpResponse {
    let (batches, _) = hotaru_server::batch::batches(&g.log, &g.distribution.policy().region)
        .await
        .unwrap_or_default();
    let age = batches
        .last()
        .map(|b| g.clock.now().0.saturating_sub(b.signed.end.0) as f64 / 1000.0);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(g.metrics.render(age))
}

/// Wrap the app with this to count requests by route pattern and status.
pub async fn observe(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<Gateway>>()
        .map(|g| g.metrics.clone());
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        m.observe(&route, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotaru_protocol::random::SeededSource;

    /// Padding, chaff tokens and chaff latencies come from the source handed in: a seeded
    /// one gives the same answers twice, another seed other ones.
    #[test]
    fn the_gateway_draws_from_the_injected_source() {
        let draws = |seed: u64| {
            let random: Arc<dyn RandomSource> = Arc::new(SeededSource::from_u64(seed));
            let chaff = ChaffTimer::new(random.clone());
            for ms in 1..=40 {
                chaff.record(Duration::from_millis(ms));
            }
            let pads: Vec<String> = (0..8).map(|_| padding(&*random)).collect();
            let tokens: Vec<String> = (0..4).map(|_| chaff_token(&*random)).collect();
            let latencies: Vec<Duration> = (0..8).map(|_| chaff.sample()).collect();
            (pads, tokens, latencies)
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let (pads, _, _) = draws(7);
        assert!(pads.iter().all(|p| (16..80).contains(&p.len())));
    }
}
