//! `GET /metrics` in Prometheus text format: requests by route and status, latency
//! histograms by route, uploads and redemptions by outcome, the age of the newest batch.
//! Counted in memory; no label ever holds a client address or anything a client chose
//! beyond the route pattern and the error code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    total: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    redemptions: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn observe(&self, route: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("not poisoned")
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let mut l = self.latency.lock().expect("not poisoned");
        let h = l.entry(route.to_owned()).or_default();
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.total += 1;
    }

    /// A redemption's outcome: `ok` or the error code.
    pub fn redemption(&self, outcome: &'static str) {
        *self
            .redemptions
            .lock()
            .expect("not poisoned")
            .entry(outcome)
            .or_default() += 1;
    }

    pub fn render(&self, newest_batch_age_s: Option<f64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP hotaru_http_requests_total HTTP requests by route and status.\n# TYPE hotaru_http_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().expect("not poisoned").iter() {
            let _ = writeln!(
                out,
                "hotaru_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP hotaru_http_request_duration_seconds Request latency by route.\n# TYPE hotaru_http_request_duration_seconds histogram\n");
        for (route, h) in self.latency.lock().expect("not poisoned").iter() {
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "hotaru_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "hotaru_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nhotaru_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\nhotaru_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.total, h.sum, h.total
            );
        }
        out.push_str("# HELP hotaru_redemptions_total Uploads with a processing number, by outcome.\n# TYPE hotaru_redemptions_total counter\n");
        let red = self.redemptions.lock().expect("not poisoned");
        let uploads: u64 = red.get("ok").copied().unwrap_or(0);
        for (outcome, n) in red.iter() {
            let _ = writeln!(out, "hotaru_redemptions_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP hotaru_uploads_total Accepted key uploads.\n# TYPE hotaru_uploads_total counter\nhotaru_uploads_total {uploads}"
        );
        if let Some(age) = newest_batch_age_s {
            let _ = writeln!(
                out,
                "# HELP hotaru_newest_batch_age_seconds Time since the newest batch was cut.\n# TYPE hotaru_newest_batch_age_seconds gauge\nhotaru_newest_batch_age_seconds {age}"
            );
        }
        out
    }
}
