//! `hotaru bench gateway`: uploads through HTTP, and downloads against nginx.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures::StreamExt;
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_protocol::random::OsRandom;

use super::server::{bench_config, issue_numbers};
use hotaru_test_support::nginx::Nginx;

use super::*;

#[derive(Args, Debug)]
pub(crate) struct GatewayBench {
    /// Uploads per backend (each a fresh number with 14 keys).
    #[arg(long, default_value_t = 4_000)]
    uploads: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Downloads of the export file (for the gateway and for nginx each).
    #[arg(long, default_value_t = 2_000)]
    downloads: usize,
    #[arg(long, value_enum, default_value = "both")]
    backend: Which,
}

/// `hotaru bench gateway`, inside an actix System.
pub(crate) async fn gateway_bench(b: GatewayBench) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "uploads: {} per backend (14 keys each, a fresh number each), {} in flight, over HTTP on loopback",
        b.uploads, b.concurrency
    )?;
    writeln!(
        out,
        "{:<12} {:>12} {:>10} {:>10}",
        "backend", "uploads/s", "p50 ms", "p99 ms"
    )?;
    let mut downloads = None;
    for nats in b.backend.backends() {
        let store = Store::fresh(nats).await?;
        let log = store.log.clone();
        // Downloads once, on the first backend measured (they are served from memory).
        let r = gateway_round(&log, &b, downloads.is_none()).await?;
        writeln!(
            out,
            "{:<12} {:>12.0} {:>10.2} {:>10.2}",
            if nats { "jetstream" } else { "sled" },
            r.uploads_per_s,
            r.p50_ms,
            r.p99_ms
        )?;
        if r.downloads.is_some() {
            downloads = r.downloads;
        }
    }
    match downloads {
        Some((bytes, ours, Ok(theirs))) => writeln!(
            out,
            "export downloads ({bytes} bytes, medians of {DOWNLOAD_ROUNDS} alternating rounds): gateway {ours:.0}/s, nginx {theirs:.0}/s, ratio {:.2}",
            ours / theirs
        )?,
        Some((_, ours, Err(e))) => {
            writeln!(out, "export downloads: gateway {ours:.0}/s; nginx: {e}")?
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

struct GatewayRound {
    uploads_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Bytes of the file, the gateway's downloads/s, nginx's (or why not).
    downloads: Option<(usize, f64, Result<f64, String>)>,
}

/// Download rounds, alternating gateway and nginx, so that both see the same machine.
const DOWNLOAD_ROUNDS: usize = 3;

async fn gateway_round(
    log: &hotaru_log::AnyLog,
    b: &GatewayBench,
    with_downloads: bool,
) -> anyhow::Result<GatewayRound> {
    use base64::Engine as _;
    use hotaru_server::Node;
    let config = bench_config(b.concurrency);
    let arbiters = hotaru_actors::Arbiters::per_core();
    let clock: Arc<dyn hotaru_events::Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn hotaru_actors::IdSource> = Arc::new(RandomIds::default());
    let node = Node::start(log.clone(), &config, clock.clone(), ids.clone(), &arbiters).await?;
    let now = clock.now();
    hotaru_server::signing::add_signing_key(log, "440", 440, now, &*ids).await?;
    let (_, operator) = hotaru_server::credentials::add(
        log,
        hotaru_server::credentials::Role::Operator,
        "bench",
        &OsRandom::new(),
    )
    .await?;
    let today = now.day();
    let numbers = issue_numbers(&node, b.uploads, today).await?;
    let gateway = hotaru_edge_gateway::Gateway::for_node(
        &node,
        log.clone(),
        clock,
        ids,
        hotaru_edge_gateway::limits::EdgeLimits::new(u32::MAX / 2, u32::MAX / 2),
    );
    let (addr, handle) = hotaru_edge_gateway::serve_loopback(gateway)?;
    let base = format!("http://{addr}");
    let stop = handle.handle();
    actix_rt::spawn(handle);
    let http = reqwest::Client::new();
    let mut r = rand::rng();
    let bodies: Vec<String> = numbers
        .iter()
        .map(|n| {
            let keys: Vec<serde_json::Value> = (1..=14u32)
                .map(|d| {
                    let mut k = [0u8; 16];
                    rand::RngCore::fill_bytes(&mut r, &mut k);
                    serde_json::json!({
                        "keyData": base64::engine::general_purpose::STANDARD.encode(k),
                        "rollingStartNumber": (today - d) * 144,
                        "rollingPeriod": 144,
                    })
                })
                .collect();
            serde_json::json!({"keys": keys, "verificationPayload": n.as_str()}).to_string()
        })
        .collect();
    let started = Instant::now();
    let url = format!("{base}/v3/diagnosis");
    let mut lat: Vec<f64> = futures::stream::iter(bodies)
        .map(|body| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let t = Instant::now();
                let resp = http
                    .put(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status() == 200, "upload answered {}", resp.status());
                resp.bytes().await?;
                Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(b.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let uploads_per_s = lat.len() as f64 / started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    // Downloads: sign the batch, then fetch its zip as phones would.
    let signed: serde_json::Value = http
        .post(format!("{base}/v1/admin/batches"))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    let downloads = match signed["batches"][0]["files"][0].as_str() {
        Some(path) if with_downloads && b.downloads > 0 => {
            let url = format!("{base}/{path}");
            let zip = http.get(&url).send().await?.bytes().await?.to_vec();
            let nginx = Nginx::serve(&[("exports/batch.zip", &zip)]);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..DOWNLOAD_ROUNDS {
                ours.push(fetch_many(&http, &url, b.downloads, b.concurrency).await?);
                if let Ok(n) = &nginx {
                    let url = n.url("exports/batch.zip");
                    theirs.push(fetch_many(&http, &url, b.downloads, b.concurrency).await?);
                }
            }
            let theirs = nginx.map(|_| median(theirs));
            Some((zip.len(), median(ours), theirs))
        }
        _ => None,
    };
    stop.stop(true).await;
    arbiters.stop();
    Ok(GatewayRound {
        uploads_per_s,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        downloads,
    })
}

async fn fetch_many(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|_| async {
            let r = http.get(url).send().await?;
            anyhow::ensure!(r.status() == 200, "download answered {}", r.status());
            r.bytes().await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
