//! Chaff: requests marked `X-Chaff: 1` are parsed as real ones and answered as a success
//! would be, after a latency drawn from recent real uploads, with padding and tokens of
//! the real sizes, so that a watcher of the wire cannot tell them apart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use base64::Engine as _;
use hotaru_protocol::random::RandomSource;

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
    /// The latency drawn before any real one was recorded.
    first: Duration,
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
    /// A timer of successes' latencies drawing from `random` (15 ms until a real one).
    pub fn new(random: Arc<dyn RandomSource>) -> Self {
        Self {
            recent: Mutex::new(Vec::with_capacity(CHAFF_SAMPLES)),
            next: Default::default(),
            overshoot_us: Default::default(),
            random,
            first: Duration::from_millis(15),
        }
    }

    /// A timer of refusals' latencies (1 ms until a real one: a refusal evaluates nothing).
    pub fn for_refusals(random: Arc<dyn RandomSource>) -> Self {
        Self {
            first: Duration::from_millis(1),
            ..Self::new(random)
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

    /// A latency drawn from the recent real ones.
    pub fn sample(&self) -> Duration {
        let r = self.recent.lock().expect("not poisoned");
        if r.is_empty() {
            return self.first;
        }
        let b = self.random.array::<8>();
        r[(u64::from_le_bytes(b) % r.len() as u64) as usize]
    }
}

/// Feeds a real upload's latency to the timer of its kind of answer: a success's to the
/// successes', a refusal by the attempt limit (C) to the refusals'; other answers (B, A,
/// G...) are never imitated by chaff.
pub(crate) fn record_real<T>(
    g: &crate::Gateway,
    started: Instant,
    answer: &Result<T, hotaru_server::commands::CommandError>,
) {
    use hotaru_server::RegistrationError;
    use hotaru_server::commands::CommandError;
    match answer {
        Ok(_) => g.chaff.record(started.elapsed()),
        Err(CommandError::Registration(RegistrationError::AttemptLimit(_))) => {
            g.chaff_refused.record(started.elapsed());
        }
        Err(_) => {}
    }
}

/// The size every answer to an upload whose body is `request_bytes` long is padded to: a
/// key takes more bytes in a request than its entry in the answer's list of dropped keys
/// (at most 64), so the request's length plus room for a revision token and the fields,
/// rounded up to a KiB, holds any answer. It depends only on what the wire shows anyway
/// (the request's size, which the app pads to a class), so an answer's size says nothing
/// of how many keys were dropped, of how many were sent, or of whether it was chaff.
pub(crate) fn answer_size(request_bytes: usize) -> usize {
    (request_bytes.min(1 << 20) + 2560).div_ceil(1024) * 1024
}

/// The length of the request's body: its `Content-Length`, else an estimate from its keys.
pub(crate) fn request_bytes(req: &HttpRequest, keys: usize) -> usize {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 + keys * 128)
}

/// `answer` as a JSON body of exactly `size` bytes, its padding field (`set`) filled with
/// `=` (or, should the answer not fit, of the next KiB that holds it).
pub(crate) fn padded_json<T: serde::Serialize>(
    status: actix_web::http::StatusCode,
    size: usize,
    mut answer: T,
    set: impl Fn(&mut T, String),
) -> actix_web::HttpResponse {
    set(&mut answer, String::new());
    let base = serde_json::to_vec(&answer).map_or(0, |b| b.len());
    let mut target = size;
    while base + 16 > target {
        target += 1024;
    }
    set(&mut answer, "=".repeat(target - base));
    let body = serde_json::to_vec(&answer).expect("answers serialise");
    actix_web::HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
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

pub(crate) fn is_chaff(req: &HttpRequest) -> bool {
    req.headers()
        .get("X-Chaff")
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// A random token of a real token's length.
pub(crate) fn chaff_token(random: &dyn RandomSource) -> String {
    let mut b = vec![0u8; hotaru_server::revision::TOKEN_BYTES];
    random.draw(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotaru_protocol::random::SeededSource;

    /// Chaff tokens and chaff latencies come from the source handed in: a seeded
    /// one gives the same answers twice, another seed other ones.
    #[test]
    fn the_gateway_draws_from_the_injected_source() {
        let draws = |seed: u64| {
            let random: Arc<dyn RandomSource> = Arc::new(SeededSource::from_u64(seed));
            let chaff = ChaffTimer::new(random.clone());
            for ms in 1..=40 {
                chaff.record(Duration::from_millis(ms));
            }
            let tokens: Vec<String> = (0..4).map(|_| chaff_token(&*random)).collect();
            let latencies: Vec<Duration> = (0..8).map(|_| chaff.sample()).collect();
            (tokens, latencies)
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }
}
