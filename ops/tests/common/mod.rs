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

/// Waits (up to 10 s) until something listens on 127.0.0.1:`port`.
#[allow(dead_code)]
pub(crate) fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
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
