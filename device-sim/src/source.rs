//! What the fleet fetches over HTTP, and how long it took: the health authority's files
//! (once a day for the phones that count as cached, or each phone itself), the health
//! centres' and the operator's calls, with latencies per route.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotaru_device::ClientError;
use hotaru_device::GatewayClient;
use hotaru_device::client::{ExportSource, Index};
use hotaru_events::device::ExportVerdict;
use hotaru_protocol::export::PublicKey;
use hotaru_protocol::keys::DiagnosisKey;
use hotaru_protocol::matching::KeyIndex;
use serde::Serialize;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Latencies and errors per route.
#[derive(Default)]
pub struct HttpStats {
    routes: Mutex<BTreeMap<&'static str, RouteStats>>,
}

#[derive(Default)]
struct RouteStats {
    micros: Vec<u32>,
    errors: u32,
    /// (simulated day, latency µs) of every request, for the latency-over-time plot.
    by_day: BTreeMap<u32, Vec<u32>>,
}

/// One route's figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RouteFigures {
    pub route: String,
    pub requests: u64,
    pub errors: u32,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests per second while the fleet was sending them.
    pub per_second: f64,
    /// (day, p99 ms) for the plot.
    pub p99_by_day: Vec<(u32, f64)>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

impl HttpStats {
    pub fn record(&self, route: &'static str, day: u32, took: Duration, ok: bool) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u32;
        let mut routes = lock(&self.routes);
        let r = routes.entry(route).or_default();
        r.micros.push(us);
        r.by_day.entry(day).or_default().push(us);
        if !ok {
            r.errors += 1;
        }
    }

    /// Times `f` as one request of `route`.
    pub async fn time<T, E>(
        &self,
        route: &'static str,
        day: u32,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let r = f.await;
        self.record(route, day, started.elapsed(), r.is_ok());
        r
    }

    /// The figures, with rates over `busy` (the wall time the fleet spent sending).
    pub fn figures(&self, busy: &BTreeMap<&'static str, Duration>) -> Vec<RouteFigures> {
        lock(&self.routes)
            .iter_mut()
            .map(|(route, r)| {
                r.micros.sort_unstable();
                let secs = busy.get(route).map_or(0.0, Duration::as_secs_f64);
                RouteFigures {
                    route: (*route).to_owned(),
                    requests: r.micros.len() as u64,
                    errors: r.errors,
                    p50_ms: percentile(&r.micros, 0.5),
                    p99_ms: percentile(&r.micros, 0.99),
                    per_second: if secs > 0.0 {
                        r.micros.len() as f64 / secs
                    } else {
                        0.0
                    },
                    p99_by_day: r
                        .by_day
                        .iter_mut()
                        .map(|(d, v)| {
                            v.sort_unstable();
                            (*d, percentile(v, 0.99))
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// A phone's own downloads through the gateway, timed.
pub struct TimedSource<'a> {
    pub client: &'a GatewayClient,
    pub stats: &'a HttpStats,
    pub day: u32,
}

impl ExportSource for TimedSource<'_> {
    async fn exposure_configuration(&self) -> Result<Vec<u8>, ClientError> {
        self.stats
            .time(
                "GET /v1/exposure-configuration",
                self.day,
                self.client.exposure_configuration(),
            )
            .await
    }

    async fn index(&self, etag: Option<&str>) -> Result<Option<Index>, ClientError> {
        self.stats
            .time("GET /exports/index.txt", self.day, self.client.index(etag))
            .await
    }

    async fn export_file(&self, path: &str) -> Result<Arc<Vec<u8>>, ClientError> {
        self.stats
            .time(
                "GET /exports/<file>",
                self.day,
                self.client.export_file(path),
            )
            .await
            .map(Arc::new)
    }
}

#[derive(Default)]
struct Cache {
    configuration: Vec<u8>,
    index: Option<Index>,
    files: HashMap<String, Arc<Vec<u8>>>,
}

/// The files of the day as the fleet fetched them once: the phones counted as cached
/// read them from here (each still verifies every signature), and share one key index
/// per set of files, built once.
pub struct FleetSource {
    client: GatewayClient,
    stats: Arc<HttpStats>,
    cache: Mutex<Cache>,
    indexes: Mutex<HashMap<Vec<[u8; 32]>, Arc<KeyIndex>>>,
    verified: Mutex<HashMap<String, Verified>>,
    share_index: bool,
}

/// A file's verdict and keys, established once for the exact bytes served.
type Verified = (ExportVerdict, Arc<Vec<DiagnosisKey>>);

impl FleetSource {
    pub fn new(client: GatewayClient, stats: Arc<HttpStats>, share_index: bool) -> Self {
        Self {
            client,
            stats,
            cache: Mutex::default(),
            indexes: Mutex::default(),
            verified: Mutex::default(),
            share_index,
        }
    }

    /// Fetches the configuration, index.txt and the files not fetched yet.
    pub async fn refresh(&self, day: u32) -> Result<(), ClientError> {
        let timed = TimedSource {
            client: &self.client,
            stats: &self.stats,
            day,
        };
        let configuration = timed.exposure_configuration().await?;
        let etag = lock(&self.cache).index.as_ref().and_then(|i| i.1.clone());
        let index = timed.index(etag.as_deref()).await?;
        if let Some((lines, _)) = &index {
            for path in lines {
                if !lock(&self.cache).files.contains_key(path) {
                    let bytes = timed.export_file(path).await?;
                    lock(&self.cache).files.insert(path.clone(), bytes);
                }
            }
        }
        let mut c = lock(&self.cache);
        c.configuration = configuration;
        if index.is_some() {
            c.index = index;
        }
        // Yesterday's indexes are not asked for again.
        lock(&self.indexes).clear();
        Ok(())
    }

    /// Every file fetched so far.
    pub fn files(&self) -> Vec<(String, Arc<Vec<u8>>)> {
        let mut v: Vec<_> = lock(&self.cache)
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl ExportSource for FleetSource {
    async fn exposure_configuration(&self) -> Result<Vec<u8>, ClientError> {
        Ok(lock(&self.cache).configuration.clone())
    }

    async fn index(&self, etag: Option<&str>) -> Result<Option<Index>, ClientError> {
        let c = lock(&self.cache);
        match &c.index {
            Some((_, Some(e))) if Some(e.as_str()) == etag => Ok(None),
            Some(i) => Ok(Some(i.clone())),
            None => Err(ClientError::Unavailable(
                "the fleet has no index yet".into(),
            )),
        }
    }

    async fn export_file(&self, path: &str) -> Result<Arc<Vec<u8>>, ClientError> {
        lock(&self.cache)
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| ClientError::Unavailable(format!("{path} is not cached")))
    }

    fn verified(&self, path: &str, zip: &[u8], public_key: &PublicKey) -> Option<Verified> {
        if !self.share_index {
            return None;
        }
        let mut v = lock(&self.verified);
        // Only for the bytes this cache served (a phone never gets others from here).
        let served = lock(&self.cache).files.get(path).cloned()?;
        if served.as_slice() != zip {
            return None;
        }
        Some(
            v.entry(path.to_owned())
                .or_insert_with(|| {
                    let (verdict, keys) = hotaru_device::agent::verify_export(zip, public_key);
                    (verdict, Arc::new(keys))
                })
                .clone(),
        )
    }

    fn key_index(&self, files: &[[u8; 32]], keys: &[DiagnosisKey]) -> Option<Arc<KeyIndex>> {
        if !self.share_index {
            return None;
        }
        let mut indexes = lock(&self.indexes);
        Some(
            indexes
                .entry(files.to_vec())
                .or_insert_with(|| Arc::new(KeyIndex::build(keys)))
                .clone(),
        )
    }
}

/// The health centres and the operator, over their HTTP APIs.
pub struct Authority {
    http: reqwest::Client,
    base: String,
    centre_key: String,
    operator_key: String,
    stats: Arc<HttpStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{route}: {status} {body}")]
    Refused {
        route: &'static str,
        status: u16,
        body: String,
    },
    #[error("{route}: {error}")]
    Network { route: &'static str, error: String },
}

impl Authority {
    pub fn new(base: &str, centre_key: &str, operator_key: &str, stats: Arc<HttpStats>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            base: base.trim_end_matches('/').to_owned(),
            centre_key: centre_key.to_owned(),
            operator_key: operator_key.to_owned(),
            stats,
        }
    }

    async fn post(
        &self,
        route: &'static str,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
        day: u32,
    ) -> Result<serde_json::Value, AuthorityError> {
        let started = Instant::now();
        // A pooled connection the server just closed fails before anything was sent:
        // one retry on a fresh request, as an HTTP client in a browser would.
        let mut r = Err(None);
        for _ in 0..2 {
            let mut req = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(key);
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Err(e) if e.is_connect() || e.is_request() => r = Err(Some(e)),
                other => {
                    r = other.map_err(Some);
                    break;
                }
            }
        }
        let r = r.map_err(|e| e.expect("an error was kept"));
        let result = match r {
            Err(e) => Err(AuthorityError::Network {
                route,
                error: e.without_url().to_string(),
            }),
            Ok(r) if !r.status().is_success() => Err(AuthorityError::Refused {
                route,
                status: r.status().as_u16(),
                body: r.text().await.unwrap_or_default(),
            }),
            Ok(r) => r.json().await.map_err(|e| AuthorityError::Network {
                route,
                error: e.without_url().to_string(),
            }),
        };
        self.stats
            .record(route, day, started.elapsed(), result.is_ok());
        result
    }

    /// A health centre confirms a case (symptom onset, or the sample date for those
    /// without symptoms) and issues its processing number.
    pub async fn issue_number(
        &self,
        date: &str,
        symptomatic: bool,
        day: u32,
    ) -> Result<String, AuthorityError> {
        let field = if symptomatic {
            "symptomOnsetDate"
        } else {
            "sampleDate"
        };
        let case = self
            .post(
                "POST /v1/cases",
                "/v1/cases",
                &self.centre_key,
                Some(serde_json::json!({ field: date })),
                day,
            )
            .await?;
        let id = case["caseId"].as_str().unwrap_or_default().to_owned();
        let n = self
            .post(
                "POST /v1/cases/<id>/processing-number",
                &format!("/v1/cases/{id}/processing-number"),
                &self.centre_key,
                None,
                day,
            )
            .await?;
        Ok(n["processingNumber"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The operator publishes a batch now: the files it wrote and the keys it holds
    /// (padding left out).
    pub async fn publish(&self, day: u32) -> Result<(usize, u64), AuthorityError> {
        let v = self
            .post(
                "POST /v1/admin/batches",
                "/v1/admin/batches",
                &self.operator_key,
                None,
                day,
            )
            .await?;
        let batches = v["batches"].as_array().cloned().unwrap_or_default();
        Ok((
            batches
                .iter()
                .map(|b| b["files"].as_array().map_or(0, Vec::len))
                .sum(),
            batches
                .iter()
                .map(|b| b["keys"].as_u64().unwrap_or(0))
                .sum(),
        ))
    }
}
