//! Helpers for tests that run the `hotaru` binary.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::{Command, Output};

use hotaru_events::{Context, DomainEvent};
use hotaru_log::{EventLog, RecordedCommit};

pub(crate) fn hotaru() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hotaru"));
    c.env("HOTARU_LOG", "warn")
        .env_remove("HOTARU_DATA_DIR")
        .env_remove("HOTARU_NATS");
    c
}

pub(crate) fn run(args: &[&str]) -> Output {
    hotaru().args(args).output().expect("run hotaru")
}

/// Starts `hotaru serve` (the `cmd` given) with its diagnostics piped; the lines arrive on
/// the receiver, read by a thread that keeps draining them.
#[allow(dead_code)]
pub(crate) fn spawn_serve(
    mut cmd: Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd
        .env("HOTARU_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hotaru serve");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits (up to 30 s) for serve to say it is running: its listener is bound by then.
#[allow(dead_code)]
pub(crate) fn wait_until_serving(lines: &std::sync::mpsc::Receiver<String>) {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(l) if l.contains("server running") => return,
            Ok(l) => seen.push(l),
            Err(e) => panic!("serve did not start ({e}): {seen:?}"),
        }
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every demo sequence number stored in the log.
pub(crate) async fn stored_demo_seqs<L: EventLog>(log: &L) -> BTreeSet<u64> {
    let mut seqs = BTreeSet::new();
    let mut from = 1;
    loop {
        let batch: Vec<RecordedCommit> =
            log.read_all(Context::Demo, from, 8192).await.expect("read");
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for c in &batch {
            for e in c.commit.envelopes() {
                if let DomainEvent::DemoRecorded(d) = e.expect("decodes").event {
                    seqs.insert(d.seq);
                }
            }
        }
    }
    seqs
}

/// A small deterministic generator (xorshift64*), seeded from the environment or the time.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_env() -> Self {
        let seed = std::env::var("HOTARU_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("seed {seed} (rerun with HOTARU_TEST_SEED={seed})");
        Self(seed | 1)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The body of a GET that must succeed, as text.
#[allow(dead_code)]
pub(crate) async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let r = http.get(url).send().await.expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.text().await.expect("a text body")
}
