//! Crash tests: appends are killed with SIGKILL at random moments, many times. After
//! each kill the chain verifies and every event whose append returned Ok is present.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use common::stored_demo_seqs;
use hotaru_log::{NatsConfig, NatsLog, SledLog};
use hotaru_test_support::NatsServer;
use hotaru_test_support::hotaru::{Rng, hotaru, run};

/// Starts `hotaru log append-demo --print-acks` and reads acks until `kill_after` have
/// arrived; then calls `kill` and returns every ack the child printed.
fn append_then_kill(
    store: &[&str],
    start: u64,
    kill_after: u64,
    kill: impl FnOnce(&mut Child),
) -> Vec<u64> {
    let mut child = hotaru()
        .args([
            "log",
            "append-demo",
            "-n",
            "10000000",
            "--streams",
            "16",
            "--concurrency",
            "64",
            "--print-acks",
        ])
        .args(["--start-seq", &start.to_string()])
        .args(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hotaru");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acks = Vec::new();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        acks.push(
            line.strip_prefix("ack ")
                .expect("ack line")
                .parse()
                .expect("number"),
        );
        if acks.len() as u64 >= kill_after {
            break;
        }
    }
    kill(&mut child);
    // The acks the child printed before it died sit in the pipe and still count; the
    // child itself has nothing more to say that we could trust.
    let _ = child.kill();
    for line in lines {
        match line {
            Ok(l) => match l.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                Some(n) => acks.push(n),
                None => break, // a line cut by the kill
            },
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    acks
}

fn assert_verifies(store: &[&str]) {
    let out = run(&[&["log", "verify"], store].concat());
    assert!(
        out.status.success(),
        "verify failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn assert_all_present(acked: &BTreeSet<u64>, stored: &BTreeSet<u64>) {
    let missing: Vec<_> = acked.difference(stored).take(10).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

#[test]
fn sled_loses_nothing_acknowledged_when_killed_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let store = ["--data-dir", path.as_str()];
    let mut rng = Rng::from_env();
    let mut acked = BTreeSet::new();
    let rounds = 25;
    for round in 0..rounds {
        let acks = append_then_kill(&store, round * 10_000_000, 1 + rng.below(3000), |c| {
            let _ = c.kill(); // SIGKILL
        });
        acked.extend(acks);
        assert_verifies(&store);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let stored = rt.block_on(async {
            let log = SledLog::open(dir.path()).unwrap();
            stored_demo_seqs(&log).await
        });
        assert_all_present(&acked, &stored);
    }
    assert!(
        acked.len() as u64 >= rounds,
        "every round acknowledged something"
    );
}

#[test]
fn jetstream_loses_nothing_acknowledged_when_nats_server_is_killed() {
    let mut server = NatsServer::start();
    let url = server.url();
    let store = ["--nats", url.as_str()];
    let mut rng = Rng::from_env();
    let mut acked = BTreeSet::new();
    let rounds = 10;
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..rounds {
        let acks = append_then_kill(&store, round * 10_000_000, 1 + rng.below(3000), |_| {
            server.kill()
        });
        acked.extend(acks);
        server.restart();
        assert_verifies(&store);
        let stored = rt.block_on(async {
            let log = NatsLog::connect(&NatsConfig::new(&url)).await.unwrap();
            stored_demo_seqs(&log).await
        });
        assert_all_present(&acked, &stored);
    }
    assert!(
        acked.len() as u64 >= rounds,
        "every round acknowledged something"
    );
}
