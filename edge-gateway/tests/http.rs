//! The gateway over real HTTP on 127.0.0.1, on the embedded store (commands to the
//! actors in process) and on a real nats-server (commands over NATS request/reply): the
//! whole flow with curl-like requests, every error code, chaff,
//! conditional downloads, the OpenAPI check, and malformed input that must only ever get
//! 4xx answers.

use hotaru_protocol::random::OsRandom;
use std::sync::Arc;
use std::time::Instant;

use hotaru_actors::{Arbiters, IdSource, RandomIds, SystemClock};
use hotaru_edge_gateway::limits::{EdgeLimits, SourceKeying};
use hotaru_edge_gateway::{Gateway, OPENAPI, ROUTES};
use hotaru_events::Clock;
use hotaru_log::{AnyLog, NatsConfig, NatsLog, SledLog};
use hotaru_protocol::export::{ReadLimits, read_zip};
use hotaru_server::credentials::{self, Role};
use hotaru_server::signing::{add_signing_key, verification_keys};
use hotaru_server::{Node, ServerConfig};
use serde_json::{Value, json};

/// Generous for the tests that send many requests from one address; the rate-limit test
/// builds its own.
const LIMIT_PER_MINUTE: u32 = 100_000;
const LIMIT_BURST: u32 = 10_000;

struct Env {
    base: String,
    centre: String,
    operator: String,
    http: reqwest::Client,
    _keep: Vec<Box<dyn std::any::Any>>,
    log: AnyLog,
    registration: hotaru_server::Registration<AnyLog>,
    distribution: hotaru_server::Distribution<AnyLog>,
    clock: hotaru_actors::ManualClock,
}

async fn env(nats: bool) -> Env {
    env_with(nats, EdgeLimits::new(LIMIT_PER_MINUTE, LIMIT_BURST)).await
}

async fn env_with(nats: bool, limits: Arc<EdgeLimits>) -> Env {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let log = if nats {
        let s = hotaru_test_support::NatsServer::start();
        let log = NatsLog::connect(&NatsConfig::new(s.url())).await.unwrap();
        keep.push(Box::new(s));
        AnyLog::Nats(log)
    } else {
        let d = tempfile::tempdir().unwrap();
        let log = SledLog::open(d.path()).unwrap();
        keep.push(Box::new(d));
        AnyLog::Sled(log)
    };
    let config = ServerConfig {
        digest_secret: Some("cd".repeat(32)),
        ..ServerConfig::default()
    };
    // The domain's clock: now, moved only by tests that need days to pass.
    let manual = hotaru_actors::ManualClock::at(SystemClock.now());
    let clock: Arc<dyn Clock> = Arc::new(manual.clone());
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    let arbiters = Arbiters::new(2);
    let node = Node::start(log.clone(), &config, clock.clone(), ids, &arbiters)
        .await
        .unwrap();
    let now = clock.now();
    add_signing_key(&log, "440", 440, now, &RandomIds::default())
        .await
        .unwrap();
    let (_, centre) = credentials::add(&log, Role::Centre, "test centre", &OsRandom::new())
        .await
        .unwrap();
    let (_, operator) = credentials::add(&log, Role::Operator, "ops", &OsRandom::new())
        .await
        .unwrap();
    let gateway = match &log {
        // On NATS every command crosses request/reply to the node's actors, as between
        // a cluster's gateways and actor nodes.
        AnyLog::Nats(n) => {
            let client = n.jetstream().client();
            let service = hotaru_server::commands::serve_nats(node.actors(), client.clone())
                .await
                .unwrap();
            keep.push(Box::new(service));
            Gateway::new(
                hotaru_server::commands::Commands::Nats(client),
                log.clone(),
                node.distribution.clone(),
                clock,
                Arc::new(RandomIds::default()),
                limits,
            )
        }
        AnyLog::Sled(_) => Gateway::for_node(
            &node,
            log.clone(),
            clock,
            Arc::new(RandomIds::default()),
            limits,
        ),
    };
    let (addr, server) = hotaru_edge_gateway::serve_loopback(gateway).unwrap();
    let port = addr.port();
    actix_rt::spawn(server);
    keep.push(Box::new(arbiters));
    let registration = node.registration.clone();
    let distribution = node.distribution.clone();
    keep.push(Box::new(node.registration));
    Env {
        registration,
        distribution,
        clock: manual,
        base: format!("http://127.0.0.1:{port}"),
        centre,
        operator,
        http: reqwest::Client::new(),
        _keep: keep,
        log,
    }
}

impl Env {
    /// The operator signs a batch now: the answer (200 asserted).
    async fn sign_now(&self) -> Value {
        let r = self
            .http
            .post(self.url("/v1/admin/batches"))
            .bearer_auth(&self.operator)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    async fn number(&self) -> String {
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let onset = today.checked_sub(jiff::Span::new().days(3)).unwrap();
        let r = self
            .http
            .post(self.url("/v1/cases"))
            .bearer_auth(&self.centre)
            .json(&json!({ "symptomOnsetDate": onset.to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let case: Value = r.json().await.unwrap();
        let r = self
            .http
            .post(self.url(&format!(
                "/v1/cases/{}/processing-number",
                case["caseId"].as_str().unwrap()
            )))
            .bearer_auth(&self.centre)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let n: Value = r.json().await.unwrap();
        assert!(
            n["expiresAt"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        n["processingNumber"].as_str().unwrap().to_owned()
    }

    async fn upload(&self, number: &str, keys: Value, chaff: bool) -> reqwest::Response {
        self.upload_from(number, keys, chaff, None).await
    }

    /// A `/v1/publish` of `keys` with the number `n` (chaff when asked).
    async fn publish_raw(&self, n: String, keys: Value, chaff: bool) -> reqwest::Response {
        let mut r = self.http.post(self.url("/v1/publish")).json(&json!({
            "temporaryExposureKeys": keys,
            "healthAuthorityID": "hotaru",
            "verificationPayload": n,
            "hmacKey": "c2FsdHNhbHRzYWx0c2FsdA==",
            "revisionToken": "",
        }));
        if chaff {
            r = r.header("X-Chaff", "1");
        }
        r.send().await.unwrap()
    }

    /// An upload whose request names a client in `X-Forwarded-For`.
    async fn upload_from(
        &self,
        number: &str,
        keys: Value,
        chaff: bool,
        forwarded_for: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.put(self.url("/v3/diagnosis")).json(&json!({
            "keys": keys,
            "hasSymptom": true,
            "onsetOfSymptomOrTestDate": "2026-11-19T00:00:00Z",
            "verificationPayload": number,
            "idempotency_key": format!("k-{number}"),
            "padding": "xyz",
            "regions": ["440"],
            "platform": "Android",
        }));
        if chaff {
            req = req.header("X-Chaff", "1");
        }
        if let Some(f) = forwarded_for {
            req = req.header("X-Forwarded-For", f);
        }
        req.send().await.unwrap()
    }
}

fn keys(seed: u8, n: u32) -> Value {
    use base64::Engine as _;
    let today = (SystemClock.now().0 / 86_400_000) as u32;
    Value::Array(
        (1..=n)
            .map(|d| {
                json!({
                    "keyData": base64::engine::general_purpose::STANDARD.encode([seed.wrapping_add(d as u8); 16]),
                    "rollingStartNumber": (today - d) * 144,
                    "rollingPeriod": 144,
                    "transmissionRisk": 0,
                    "reportType": 1,
                    "daysSinceOnsetOfSymptoms": 0,
                })
            })
            .collect(),
    )
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["code"].as_str().unwrap_or("").to_owned())
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sled { $(#[actix_rt::test] async fn $name() { super::$name(false).await } )* }
        mod nats { $(#[actix_rt::test] async fn $name() { super::$name(true).await } )* }
    };
}

on_both_backends!(
    a_health_centre_issues_a_device_uploads_a_phone_downloads,
    a_flood_of_index_and_unknown_paths_reads_the_log_at_most_once_a_second,
    chaff_follows_the_verdict_and_the_size_of_real_answers,
    a_revision_adds_up_to_no_more_than_one_upload_holds,
    metrics_are_the_operators_alone,
    only_a_trusted_proxy_names_the_client,
    every_error_code,
    chaff_is_indistinguishable,
    openapi_lists_exactly_the_routes,
    malformed_uploads_only_ever_get_4xx,
    operation_logs_with_consent_without_personal_data_until_closed,
    a_source_is_rate_limited,
    google_publish_with_revision_tokens,
);

/// `/metrics` counts real uploads and not chaff, so it answers the operator key alone: no
/// key, or a health centre's, gets 401 in the contract.
async fn metrics_are_the_operators_alone(nats: bool) {
    let e = env(nats).await;
    let get = |key: Option<&str>| {
        let mut r = e.http.get(e.url("/metrics"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(
        code(get(None).await.unwrap()).await,
        (401, "UNAUTHORIZED".into())
    );
    assert_eq!(
        code(get(Some(&e.centre)).await.unwrap()).await,
        (401, "UNAUTHORIZED".into())
    );
    let r = get(Some(&e.operator)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.unwrap().contains("hotaru_"),
        "Prometheus text"
    );
}

/// Behind a load balancer the trusted proxy's `X-Forwarded-For` names the client: six
/// clients through it are six sources. From any other peer the header is ignored: one
/// client naming six others is still one source, and is limited after its burst.
async fn only_a_trusted_proxy_names_the_client(nats: bool) {
    for trusted in [false, true] {
        let mut keying = SourceKeying::random();
        if trusted {
            keying.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        }
        let e = env_with(nats, EdgeLimits::with_keying(60, 3, keying)).await;
        let mut limited = 0;
        for i in 0..6 {
            let client = format!("203.0.113.{i}");
            let r = e
                .upload_from(
                    &format!("{:08}", 31_000_000 + i),
                    keys(1, 1),
                    false,
                    Some(&client),
                )
                .await;
            limited += usize::from(code(r).await.0 == 429);
        }
        assert_eq!(
            limited,
            if trusted { 0 } else { 3 },
            "trusted proxy: {trusted}"
        );
    }
}

async fn a_source_is_rate_limited(nats: bool) {
    let e = env_with(nats, EdgeLimits::new(60, 5)).await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let r = e
            .upload(&format!("{:08}", 30_000_000 + i), keys(1, 1), i % 2 == 0)
            .await;
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (s, c) = code(r).await;
        statuses.push(s);
        if s == 429 {
            assert_eq!(c, "RATE_LIMITED");
            assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
        }
    }
    // Chaff and real requests count alike (otherwise the limit would tell them apart).
    assert_eq!(
        statuses[..5].iter().filter(|s| **s == 429).count(),
        0,
        "{statuses:?}"
    );
    assert_eq!(statuses[5..], [429, 429], "{statuses:?}");
}

async fn operation_logs_with_consent_without_personal_data_until_closed(nats: bool) {
    let e = env(nats).await;
    let url = e.url("/v1/logs");
    let post = |body: Value| e.http.post(&url).json(&body).send();
    let r = post(json!({"consent": false, "log": "12:00 check ok"}))
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, "CONSENT_REQUIRED".into()));
    for (log, says) in [
        ("mail me at hanako@example.jp", "e-mail"),
        ("my number 080-1234-5678", "phone"),
        ("server 10.0.0.12 refused", "IPv4"),
        ("gps 35.6812,139.7671", "coordinates"),
        // As a Japanese user types them: full width, Japanese dashes, no separators.
        ("連絡先 ０８０－１２３４－５６７８", "phone"),
        ("自宅 0312345678", "phone"),
        ("ｈａｎａｋｏ＠ｅｘａｍｐｌｅ．ｊｐ", "e-mail"),
    ] {
        let r = post(json!({"consent": true, "log": log})).await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (status, v["code"].as_str().unwrap()),
            (400, "LOG_HAS_PERSONAL_DATA"),
            "{log}"
        );
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    let r =
        post(json!({"consent": true, "log": "12:00 exposure check ok; 12:05 download timeout"}))
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["logId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let close = e.url(&format!("/v1/admin/logs/{id}/close"));
    let r = e
        .http
        .post(&close)
        .bearer_auth(&e.centre)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, "UNAUTHORIZED".into()));
    let r = e
        .http
        .post(&close)
        .bearer_auth(&e.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id_bytes: [u8; 16] = hex::decode(&id).unwrap().try_into().unwrap();
    assert_eq!(
        hotaru_server::support::read(&e.log, hotaru_events::domain::LogId(id_bytes))
            .await
            .unwrap(),
        None,
        "deleted"
    );
    let r = e
        .http
        .post(&close)
        .bearer_auth(&e.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (404, "LOG_NOT_FOUND".into()));
}

/// index.txt, export paths and the newest batch's age come from the published view: a
/// batch signed through the gateway shows at once, and a flood of index requests and of
/// paths that do not exist reads the signer stream at most once per `VIEW_TTL`.
async fn a_flood_of_index_and_unknown_paths_reads_the_log_at_most_once_a_second(nats: bool) {
    let e = env(nats).await;
    let n = e.number().await;
    assert_eq!(e.upload(&n, keys(1, 3), false).await.status(), 200);
    let get = |path: String| e.http.get(e.url(&path)).send();
    assert_eq!(
        get("/exports/index.txt".into())
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        ""
    );
    let b = e.sign_now().await;
    let file = b["batches"][0]["files"][0].as_str().unwrap().to_owned();
    let index = get("/exports/index.txt".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        index.trim(),
        file,
        "signed through this gateway: shown at once"
    );
    let before = e.distribution.view_reads();
    let started = Instant::now();
    for i in 0..300u32 {
        let r = get(format!("/exports/440/{:08}-00001.zip", 1000 + i))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        if i % 3 == 0 {
            let r = get("/exports/index.txt".into()).await.unwrap();
            assert_eq!(r.text().await.unwrap().trim(), file);
        }
    }
    assert_eq!(get(format!("/{file}")).await.unwrap().status(), 200);
    let reads = e.distribution.view_reads() - before;
    let allowed = 1 + started.elapsed().as_secs();
    assert!(
        reads <= allowed,
        "{reads} reads of the signer stream for 401 requests in {:?}",
        started.elapsed()
    );
}

async fn a_health_centre_issues_a_device_uploads_a_phone_downloads(nats: bool) {
    let e = env(nats).await;
    let number = e.number().await;
    assert_eq!(number.len(), 8);
    let r = e.upload(&number, keys(1, 5), false).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 5, "{v}");
    // A retry with the same idempotency key gets the same answer.
    let again: Value = e
        .upload(&number, keys(1, 5), false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["accepted"], 5);
    // The operator signs a batch now.
    let b = e.sign_now().await;
    let file = b["batches"][0]["files"][0].as_str().unwrap().to_owned();
    let index = e
        .http
        .get(e.url("/exports/index.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    let etag = index.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "a strong ETag");
    assert_eq!(index.text().await.unwrap(), format!("{file}\n"));
    let r = e.http.get(e.url(&format!("/{file}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let zip_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let zip = r.bytes().await.unwrap();
    let export = read_zip(&zip, ReadLimits::default()).unwrap();
    export
        .verify(&verification_keys(&e.log, "440").await.unwrap())
        .unwrap();
    assert_eq!(export.file.keys.len(), 1000, "5 real keys, padded");
    // Conditional GET and HEAD.
    let r = e
        .http
        .get(e.url(&format!("/{file}")))
        .header("If-None-Match", &zip_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = e
        .http
        .head(e.url(&format!("/{file}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        zip.len().to_string()
    );
    let r = e
        .http
        .get(e.url("/exports/index.txt"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let cfg: Value = e
        .http
        .get(e.url("/v1/exposure-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["dailyScoreThreshold"], 1350.0);
    assert_eq!(
        e.http.get(e.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        e.http.get(e.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

async fn every_error_code(nats: bool) {
    let e = env(nats).await;
    let number = e.number().await;
    let cases = e.url("/v1/cases");
    // Authentication.
    let r = e
        .http
        .post(&cases)
        .json(&json!({"sampleDate": "2026-01-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, "UNAUTHORIZED".into()));
    let r = e
        .http
        .post(e.url("/v1/admin/batches"))
        .bearer_auth(&e.centre)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (401, "UNAUTHORIZED".into()),
        "a centre key is not an operator key"
    );
    // Health-centre input.
    for body in [
        json!({}),
        json!({"sampleDate": "2026-01-01", "symptomOnsetDate": "2026-01-01"}),
    ] {
        let r = e
            .http
            .post(&cases)
            .bearer_auth(&e.centre)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (400, "INVALID_CASE".into()));
    }
    let r = e
        .http
        .post(&cases)
        .bearer_auth(&e.centre)
        .json(&json!({"sampleDate": "2026-13-40"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, "INVALID_DATE".into()));
    let r = e
        .http
        .post(&cases)
        .bearer_auth(&e.centre)
        .json(&json!({"sampleDate": "1990-01-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, "INVALID_DATE".into()));
    let r = e
        .http
        .post(&cases)
        .bearer_auth(&e.centre)
        .json(&json!({"sampleDte": "2026-01-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (400, "INVALID_JSON".into()),
        "unknown fields are refused here"
    );
    let r = e
        .http
        .post(e.url("/v1/cases/00/processing-number"))
        .bearer_auth(&e.centre)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (404, "CASE_NOT_FOUND".into()));
    // The device's errors A, B, G.
    let r = e.upload("１２３４５６７８", keys(1, 2), false).await;
    assert_eq!(code(r).await, (400, "ERR_A_NUMBER_FORMAT".into()));
    let wrong = if number == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let r = e.upload(wrong, keys(1, 2), false).await;
    assert_eq!(code(r).await, (400, "ERR_B_NUMBER_WRONG".into()));
    let r = e.upload(&number, json!([]), false).await;
    assert_eq!(code(r).await, (400, "ERR_G_NOTHING_TO_SUBMIT".into()));
    let r = e
        .upload(
            &number,
            json!([{"keyData": "AAAA", "rollingStartNumber": 1, "rollingPeriod": 144}]),
            false,
        )
        .await;
    assert_eq!(code(r).await, (400, "ERR_G_NO_VALID_KEYS".into()));
    // Bodies.
    let r = e
        .http
        .put(e.url("/v3/diagnosis"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, "INVALID_JSON".into()));
    let r = e
        .http
        .put(e.url("/v3/diagnosis"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (415, "UNSUPPORTED_MEDIA_TYPE".into()));
    let big = format!(
        "{{\"verificationPayload\":\"12345678\",\"padding\":\"{}\"}}",
        "x".repeat(70_000)
    );
    let r = e
        .http
        .put(e.url("/v3/diagnosis"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (413, "BODY_TOO_LARGE".into()));
    let r = e.http.get(e.url("/no/such/path")).send().await.unwrap();
    assert_eq!(code(r).await, (404, "NO_ROUTE".into()));
    let r = e
        .http
        .get(e.url("/exports/440/nope.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (404, "NOT_FOUND".into()));
    // C: the 60th failure in an hour locks redemptions out, with Retry-After.
    let mut last = (0, String::new());
    let mut retry_after = None;
    for i in 0..70 {
        let r = e
            .upload(&format!("{:08}", 20_000_000 + i), keys(1, 1), false)
            .await;
        retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        last = code(r).await;
        if last.0 == 429 {
            break;
        }
    }
    assert_eq!(last, (429, "ERR_C_ATTEMPT_LIMIT".into()));
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 0);
}

/// What an onlooker of an answer sees: status, header names, body size (the content is
/// encrypted on the wire).
async fn seen(r: reqwest::Response) -> (u16, Vec<String>, usize, String) {
    let status = r.status().as_u16();
    let mut names: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
    names.sort();
    let body = r.bytes().await.unwrap();
    let code = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["code"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (status, names, body.len(), code)
}

/// Chaff looks like the real answer to the same request on both APIs: an upload that drops
/// keys answers in the size a chaff answer has (room for every key to be dropped), and
/// during a lockout chaff is refused (C, with Retry-After) as the real upload is.
async fn chaff_follows_the_verdict_and_the_size_of_real_answers(nats: bool) {
    let e = env(nats).await;
    // 20 keys, the six older than 14 days dropped (each listed in the real answer).
    let (real, chaff) = (
        e.upload(&e.number().await, keys(3, 20), false).await,
        e.upload(&e.number().await, keys(3, 20), true).await,
    );
    let (real, chaff) = (seen(real).await, seen(chaff).await);
    assert_eq!(real.0, 200);
    assert_eq!(real, chaff, "v3 with dropped keys");
    let gaen = gaen_keys(10, &[1, 2, 3, 20, 21]);
    let publish = |n: String, chaff: bool| e.publish_raw(n, gaen.clone(), chaff);
    let real = seen(publish(e.number().await, false).await).await;
    let chaff = seen(publish(e.number().await, true).await).await;
    assert_eq!(real.0, 200);
    assert_eq!(
        (real.0, &real.1, real.2),
        (chaff.0, &chaff.1, chaff.2),
        "v1 publish"
    );
    // Wrong guesses until the limit: then real and chaff alike are refused.
    for i in 0..70 {
        let r = e
            .upload(&format!("{:08}", 21_000_000 + i), keys(1, 1), false)
            .await;
        if r.status() == 429 {
            break;
        }
    }
    let n = e.number().await;
    let real = seen(e.upload(&n, keys(4, 3), false).await).await;
    let chaff = seen(e.upload(&n, keys(4, 3), true).await).await;
    assert_eq!(real.3, "ERR_C_ATTEMPT_LIMIT");
    assert_eq!(real, chaff, "v3 during a lockout");
    assert!(chaff.1.contains(&"retry-after".to_owned()));
    let real = seen(publish(n.clone(), false).await).await;
    let chaff = seen(publish(n, true).await).await;
    assert_eq!((real.0, real.3.as_str()), (429, "ERR_C_ATTEMPT_LIMIT"));
    assert_eq!(real, chaff, "v1 during a lockout");
}

/// The two-sample Kolmogorov-Smirnov statistic.
fn ks(mut a: Vec<f64>, mut b: Vec<f64>) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            i += 1;
        } else {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Real and chaff requests sent in pairs (each pair together, so both meet the same load):
/// statuses as expected, header names equal, one body size for both, and latencies of one
/// distribution. Bound: 100 + 100 samples after 20 of warm-up (the first real answers seed
/// the sampler); two samples of one distribution give a KS statistic above 0.23 with
/// probability 1%; we assert D < 0.35 to leave room for a noisy shared machine. Chaff
/// answered without waiting (Corona-Warn-App's bug #474) gives D close to 1.
async fn alike<F, Fut>(label: &str, status: u16, send: F)
where
    F: Fn(usize, bool) -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let timed = |i: usize, is_chaff: bool| {
        let r = send(i, is_chaff);
        async move {
            let t = Instant::now();
            let r = r.await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            (ms, seen(r).await)
        }
    };
    let (mut real, mut chaff) = (Vec::new(), Vec::new());
    for i in 0..120 {
        // Which of the two is polled first alternates: the first sent starts its clock
        // and its request ahead of the other, tens of microseconds that would otherwise
        // weigh on one side only when answers take less than a millisecond.
        let ((rm, rs), (cm, cs)) = if i % 2 == 0 {
            futures::join!(timed(i, false), timed(i, true))
        } else {
            let (c, r) = futures::join!(timed(i, true), timed(i, false));
            (r, c)
        };
        assert_eq!(rs.0, status, "{label}: real answer {rs:?}");
        assert_eq!(rs, cs, "{label}: status, header names, size and code");
        real.push(rm);
        chaff.push(cm);
    }
    let d = ks(real[20..].to_vec(), chaff[20..].to_vec());
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "{label}: KS statistic {d:.3}, mean real {:.2} ms, chaff {:.2} ms",
        mean(&real[20..]),
        mean(&chaff[20..])
    );
    assert!(
        d < 0.35,
        "{label}: KS statistic {d:.3}; real {:?} chaff {:?}",
        &real[20..],
        &chaff[20..]
    );
}

/// Chaff answers like a real upload on both APIs, admitted and during a lockout: the same
/// status, headers and size, and latencies drawn from the real answers of the same kind
/// (a success's or a refusal's).
async fn chaff_is_indistinguishable(nats: bool) {
    let e = env(nats).await;
    let mut numbers = Vec::new();
    for _ in 0..240 {
        numbers.push(e.number().await);
    }
    let e = &e;
    let numbers = &numbers;
    alike("v3, 3 keys accepted", 200, |i, chaff| {
        e.upload(&numbers[i], keys(i as u8, 3), chaff)
    })
    .await;
    let publish =
        |n: String, i: usize, chaff: bool| e.publish_raw(n, gaen_keys(i as u8, &[1, 2, 3]), chaff);
    alike("v1 publish, 3 keys", 200, |i, chaff| {
        publish(numbers[120 + i].clone(), i, chaff)
    })
    .await;
    // Wrong guesses until the limit: then real and chaff alike are refused, after a
    // latency drawn from the real refusals.
    for i in 0..70 {
        let r = e
            .upload(&format!("{:08}", 22_000_000 + i), keys(1, 1), false)
            .await;
        if r.status() == 429 {
            break;
        }
    }
    alike("v3 during a lockout", 429, |i, chaff| async move {
        e.upload(&format!("{:08}", 23_000_000 + i), keys(2, 3), chaff)
            .await
    })
    .await;
    alike("v1 publish during a lockout", 429, |i, chaff| {
        publish(format!("{:08}", 24_000_000 + i), i, chaff)
    })
    .await;
}

async fn openapi_lists_exactly_the_routes(nats: bool) {
    let e = env(nats).await;
    let served: Value = e
        .http
        .get(e.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(OPENAPI).unwrap());
    let mut documented: Vec<(String, String)> = served["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(
        documented, routes,
        "docs/openapi.json and the server's routes"
    );
    // Every route exists: none falls through to the default service.
    for (m, p) in ROUTES {
        let path = p
            .replace("{caseId}", "00")
            .replace("{region}", "440")
            .replace("{file}", "x.zip");
        let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let r = e.http.request(method, e.url(&path)).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(!body.contains("NO_ROUTE"), "{m} {p}: {status} {body}");
    }
}

async fn malformed_uploads_only_ever_get_4xx(nats: bool) {
    let e = env(nats).await;
    let number = e.number().await;
    let v3 = json!({"keys": keys(1, 2), "verificationPayload": number}).to_string();
    let other = e.number().await;
    let publish = json!({
        "temporaryExposureKeys": gaen_keys(1, &[1, 2]),
        "healthAuthorityID": "hotaru",
        "verificationPayload": other,
        "hmacKey": "c2FsdA==",
        "revisionToken": "",
    })
    .to_string();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (method, route, good) in [
        (reqwest::Method::PUT, "/v3/diagnosis", v3),
        (reqwest::Method::POST, "/v1/publish", publish),
    ] {
        let mut bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"{\"keys\": 5}".to_vec(),
            b"{\"keys\": [{}], \"verificationPayload\": \"1\"}".to_vec(),
            b"{\"verificationPayload\": 12345678}".to_vec(),
            b"{\"keys\": [{\"keyData\": \"@@@\", \"rollingStartNumber\": -1, \"rollingPeriod\": 1e99}], \"verificationPayload\": \"x\"}".to_vec(),
            b"{\"temporaryExposureKeys\": [{\"key\": 1}], \"healthAuthorityID\": \"hotaru\", \"verificationPayload\": \"1\", \"revisionToken\": \"%%%\"}".to_vec(),
            "{\"verificationPayload\": \"\u{0}\u{ffff}\"}".as_bytes().to_vec(),
            vec![b'['; 70_000],
        ];
        for _ in 0..120 {
            let mut b = good.clone().into_bytes();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[i] = (next() % 256) as u8,
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, b"{}[],:\"\\0e-"[(next() % 11) as usize]),
                }
            }
            bodies.push(b);
        }
        for body in bodies {
            for (header, value) in [
                ("content-type", "application/json"),
                ("x-chaff", "1"),
                ("content-type", "application/json; charset=\u{7f}"),
            ] {
                let r = e
                    .http
                    .request(method.clone(), e.url(route))
                    .header("content-type", "application/json")
                    .header(header, value)
                    .body(body.clone())
                    .send()
                    .await;
                let Ok(r) = r else { continue }; // the client refused to send the header
                let s = r.status().as_u16();
                assert!(
                    s < 500,
                    "{s} from {route} for {:?}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
}

fn gaen_keys(seed: u8, days_back: &[u32]) -> Value {
    use base64::Engine as _;
    let today = (SystemClock.now().0 / 86_400_000) as u32;
    Value::Array(
        days_back
            .iter()
            .map(|d| {
                json!({
                    "key": base64::engine::general_purpose::STANDARD.encode([seed.wrapping_add(*d as u8); 16]),
                    "rollingStartNumber": (today - d) * 144,
                    "rollingPeriod": 144,
                    "transmissionRisk": 3,
                })
            })
            .collect(),
    )
}

impl Env {
    async fn publish(&self, number: &str, keys: Value, token: Option<&str>) -> (u16, Value) {
        self.publish_body(json!({
            "temporaryExposureKeys": keys,
            "healthAuthorityID": "hotaru",
            "verificationPayload": number,
            "hmacKey": "c2FsdHNhbHRzYWx0c2FsdA==",
            "symptomOnsetInterval": 2_950_000,
            "traveler": false,
            "revisionToken": token.unwrap_or(""),
            "padding": "cGFkZGluZw==",
        }))
        .await
    }

    async fn publish_body(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/publish"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert!(v["padding"].as_str().is_some_and(|p| !p.is_empty()), "{v}");
        (status, v)
    }
}

/// A revision is judged with the keys uploaded before: a day that holds one key takes two
/// more, not three (three per rolling start), though the revision alone holds three.
async fn a_revision_adds_up_to_no_more_than_one_upload_holds(nats: bool) {
    let e = env(nats).await;
    let n = e.number().await;
    let (st, v) = e.publish(&n, gaen_keys(10, &[1, 2, 3]), None).await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(3)), "{v}");
    let token = v["revisionToken"].as_str().unwrap().to_owned();
    let mut yesterday = Vec::new();
    for seed in [40, 50, 60] {
        yesterday.extend(gaen_keys(seed, &[1]).as_array().unwrap().clone());
    }
    let (st, v) = e.publish(&n, Value::Array(yesterday), Some(&token)).await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(v["code"], "PARTIAL_FAILURE", "{v}");
    assert_eq!(v["warnings"], json!(["key 2: TooManySameStart"]), "{v}");
}

async fn google_publish_with_revision_tokens(nats: bool) {
    let e = env(nats).await;
    let n = e.number().await;
    // First upload: three keys saved, a token back.
    let (st, v) = e.publish(&n, gaen_keys(10, &[1, 2, 3]), None).await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(3)), "{v}");
    assert!(
        v.get("code").is_none() && v.get("warnings").is_none(),
        "{v}"
    );
    let t1 = v["revisionToken"].as_str().unwrap().to_owned();
    // The same request again (its reply was lost): the first answer, and a token that
    // names the keys stored, in whatever order the keys come.
    let (st, v) = e.publish(&n, gaen_keys(10, &[3, 1, 2]), None).await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(3)), "{v}");
    let retried = v["revisionToken"].as_str().unwrap().to_owned();
    // The number is used: other keys without a token are error B.
    let (st, v) = e.publish(&n, gaen_keys(10, &[1, 2, 3, 4]), None).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("ERR_B_NUMBER_WRONG")));
    // The retry's token names the three keys stored: a revision with them adds nothing
    // and is not refused (a token naming none would leave out keys uploaded before).
    let (st, v) = e
        .publish(&n, gaen_keys(10, &[1, 2, 3]), Some(&retried))
        .await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(0)), "{v}");
    // A revision adds today's key and an older one; the three named keys are not taken twice.
    let (st, v) = e
        .publish(&n, gaen_keys(10, &[0, 1, 2, 3, 4]), Some(&t1))
        .await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(2)), "{v}");
    let t2 = v["revisionToken"].as_str().unwrap().to_owned();
    assert_eq!(t1.len(), t2.len(), "tokens say nothing of their key count");
    // The same revision again: nothing new.
    let (st, v) = e
        .publish(&n, gaen_keys(10, &[0, 1, 2, 3, 4]), Some(&t2))
        .await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(0)), "{v}");
    // An old token that leaves out keys uploaded since is refused.
    let (st, v) = e.publish(&n, gaen_keys(10, &[0, 1, 5]), Some(&t1)).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("INVALID_REVISION_TOKEN"))
    );
    // A named key with other metadata is refused.
    let mut changed = gaen_keys(10, &[1]);
    changed[0]["rollingPeriod"] = json!(100);
    let (st, v) = e.publish(&n, changed, Some(&t2)).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("INVALID_REVISION_TOKEN"))
    );
    // A forged token, and a token used with another case's number.
    let mut forged = t2.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (st, v) = e.publish(&n, gaen_keys(10, &[5]), Some(&forged)).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("INVALID_REVISION_TOKEN"))
    );
    let other = e.number().await;
    let (st, v) = e.publish(&other, gaen_keys(10, &[5]), Some(&t2)).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("INVALID_REVISION_TOKEN"))
    );
    // Tokens survive a rotation of the revision key (another node would see it too).
    e.registration
        .revision_keys()
        .rotate(SystemClock.now(), 3 * 86_400_000)
        .await
        .unwrap();
    let (st, v) = e.publish(&n, gaen_keys(10, &[0, 5]), Some(&t2)).await;
    assert_eq!((st, v["insertedExposures"].as_u64()), (200, Some(1)), "{v}");
    // Partial failure: 200, the valid keys saved, a warning for the other.
    let (st, v) = e.publish(&other, gaen_keys(40, &[1, 2, 20]), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["insertedExposures"], 2);
    assert_eq!(v["code"], "PARTIAL_FAILURE");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
    // The request's own mistakes.
    let good = json!({
        "temporaryExposureKeys": gaen_keys(50, &[1]),
        "healthAuthorityID": "hotaru",
        "verificationPayload": "12345678",
    });
    for (field, value, status, code) in [
        (
            "healthAuthorityID",
            json!("elsewhere"),
            401,
            "UNKNOWN_HEALTH_AUTHORITY_ID",
        ),
        ("hmacKey", json!("not base64!"), 400, "INVALID_HMAC_KEY"),
        ("traveler", json!("yes"), 400, "INVALID_JSON"),
        (
            "verificationPayload",
            json!("1234"),
            400,
            "ERR_A_NUMBER_FORMAT",
        ),
        (
            "temporaryExposureKeys",
            json!([]),
            400,
            "ERR_G_NOTHING_TO_SUBMIT",
        ),
    ] {
        let mut b = good.clone();
        b[field] = value;
        let (st, v) = e.publish_body(b).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (status, Some(code)),
            "{field}: {v}"
        );
        assert_eq!(v["error"], v["message"]);
    }
    // Chaff looks like a first upload.
    let r = e
        .http
        .post(e.url("/v1/publish"))
        .header("X-Chaff", "1")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["revisionToken"].as_str().unwrap().len(), t1.len());
    // The batch holds each saved key once (days 1-5 of the first case, two of the other);
    // today's key is still held.
    let v = e.sign_now().await;
    assert_eq!(v["batches"][0]["keys"], 7, "{v}");
    // Two days after the number expired, the window is closed (this also moves the day).
    let later = e.number().await;
    let (st, v) = e.publish(&later, gaen_keys(60, &[1]), None).await;
    assert_eq!(st, 200, "{v}");
    let t = v["revisionToken"].as_str().unwrap().to_owned();
    e.clock.advance_millis(86_400_000 + 2 * 86_400_000 - 60_000);
    let (st, v) = e.publish(&later, gaen_keys(60, &[0]), Some(&t)).await;
    assert_eq!(st, 200, "still open a minute before: {v}");
    let t = v["revisionToken"].as_str().unwrap().to_owned();
    e.clock.advance_millis(60_000);
    let (st, v) = e.publish(&later, gaen_keys(60, &[0]), Some(&t)).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("REVISION_WINDOW_CLOSED"))
    );
    // The committee's audit of what all this left in the log: revisions trace to their
    // redemption, the batch rebuilds, nothing is out of place.
    let source = hotaru_audit::LiveSource {
        log: e.log.clone(),
        kind: "test",
    };
    let rules = hotaru_audit::AuditRules::at(e.clock.now());
    let report = hotaru_audit::audit(&source, &rules, vec![], &mut |_: &str, _, _| {})
        .await
        .unwrap();
    for c in &report.checks {
        assert!(c.passed, "{c:?}");
    }
}

/// An actor node that stops answers every command it took: commands in flight when it
/// drains get their answers, later ones are told at once that nobody answers; none is lost
/// to the timeout.
#[actix_rt::test]
async fn a_draining_actor_node_answers_what_it_took() {
    use futures::StreamExt as _;
    use hotaru_server::commands::{CommandError, Commands};
    let s = hotaru_test_support::NatsServer::start();
    let log = AnyLog::Nats(NatsLog::connect(&NatsConfig::new(s.url())).await.unwrap());
    let config = ServerConfig {
        digest_secret: Some("cd".repeat(32)),
        ..ServerConfig::default()
    };
    let arbiters = Arbiters::new(2);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let node = Node::start(
        log.clone(),
        &config,
        clock,
        Arc::new(RandomIds::default()),
        &arbiters,
    )
    .await
    .unwrap();
    let AnyLog::Nats(n) = &log else {
        unreachable!()
    };
    let service = hotaru_server::commands::serve_nats(node.actors(), n.jetstream().client())
        .await
        .unwrap();
    // The edge on a connection of its own.
    let edge = async_nats::connect(s.url()).await.unwrap();
    let commands: Commands<AnyLog> = Commands::Nats(edge);
    let today = hotaru_events::domain::Day((SystemClock.now().0 / 86_400_000) as u32);
    let wave = |n: usize| {
        let commands = commands.clone();
        async move {
            futures::future::join_all((0..n).map(|_| {
                commands.confirm_case(
                    hotaru_events::domain::CentreId(1),
                    hotaru_events::domain::CaseBasis::Sample(today),
                )
            }))
            .await
        }
    };
    // A wave in flight when the node is told to stop: every command it took is answered.
    // The stop comes as soon as the first answer is back (the node is serving the wave),
    // not after a guessed delay.
    let (answered, first_answer) = tokio::sync::oneshot::channel();
    let first = actix_rt::spawn({
        let commands = commands.clone();
        async move {
            let mut pending: futures::stream::FuturesUnordered<_> = (0..50)
                .map(|_| {
                    commands.confirm_case(
                        hotaru_events::domain::CentreId(1),
                        hotaru_events::domain::CaseBasis::Sample(today),
                    )
                })
                .collect();
            let mut results = vec![pending.next().await.expect("fifty requests")];
            let _ = answered.send(());
            while let Some(r) = pending.next().await {
                results.push(r);
            }
            results
        }
    });
    first_answer.await.unwrap();
    service.stop().await;
    let first = first.await.unwrap();
    for r in &first {
        if let Err(e) = r {
            // Sent after the drain began: nobody answers, and NATS says so at once.
            assert!(
                matches!(e, CommandError::Unavailable(m) if m.contains("no responders")),
                "{e}"
            );
        }
    }
    assert!(first.iter().any(|r| r.is_ok()), "the first wave was taken");
    // After the stop nobody answers, and the edge learns it at once.
    for r in wave(10).await {
        assert!(
            matches!(&r, Err(CommandError::Unavailable(m)) if m.contains("no responders")),
            "{r:?}"
        );
    }
    drop(arbiters);
}

/// Whether `r` is an answer of the contract: a JSON body `{code, message}` (docs/api-errors.md).
async fn in_contract(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let json = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = r.text().await.unwrap();
    assert!(json, "{status} answered without JSON: {body:?}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let code = v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {body}"));
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    (status, code.to_owned())
}

/// Every route of the OpenAPI document, tried with a wrong method, a body over every cap
/// and a wrong content type: each 4xx and 5xx answers `{code, message}`; the routes that take
/// a JSON body refuse the oversized one (413) and the `text/plain` one (415) before anything
/// else when they need no key (the device's), or ask for the key (401).
#[actix_rt::test]
async fn every_route_answers_its_errors_in_the_contract() {
    let e = env(false).await;
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let big = format!("{{\"padding\":\"{}\"}}", "x".repeat(300 * 1024));
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let url = e.url(
            &path
                .replace("{caseId}", &"0".repeat(32))
                .replace("{logId}", &"0".repeat(32))
                .replace("{region}", "440")
                .replace("{file}", "none.zip"),
        );
        for wrong in ["DELETE", "PATCH"] {
            let m = reqwest::Method::from_bytes(wrong.as_bytes()).unwrap();
            let r = e.http.request(m, &url).send().await.unwrap();
            let answer = in_contract(r).await;
            assert_eq!(answer, (405, "METHOD_NOT_ALLOWED".into()), "{wrong} {path}");
            tried += 1;
        }
        for (method, op) in ops.as_object().unwrap() {
            if method == "head" {
                continue; // no body to hold an answer
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let takes_body = op.get("requestBody").is_some();
            let keyed = op.get("security").is_some();
            let oversized = e
                .http
                .request(m.clone(), &url)
                .header("content-type", "application/json")
                .body(big.clone())
                .send()
                .await
                .unwrap();
            let status = oversized.status().as_u16();
            if status >= 400 {
                let (status, code) = in_contract(oversized).await;
                if takes_body {
                    let want = if keyed { [413, 401] } else { [413, 413] };
                    assert!(want.contains(&status), "{method} {path}: {status} {code}");
                }
            } else {
                assert!(!takes_body, "{method} {path} took a body over its cap");
            }
            if takes_body {
                let plain = e
                    .http
                    .request(m, &url)
                    .header("content-type", "text/plain")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let (status, code) = in_contract(plain).await;
                let want = if keyed { [415, 401] } else { [415, 415] };
                assert!(want.contains(&status), "{method} {path}: {status} {code}");
            }
            tried += 1;
        }
    }
    assert!(tried >= 40, "walked {tried} requests");
}
