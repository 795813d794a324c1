//! The `hotaru log` commands as a user runs them, on both backends.

use hotaru_test_support::NatsServer;
use hotaru_test_support::hotaru::{run, stdout};

fn round_trip(store: &[&str]) {
    let out = run(&[
        &["log", "append-demo", "-n", "500", "--streams", "5"],
        store,
    ]
    .concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("appended 500 events"));

    let out = run(&[&["log", "verify"], store].concat());
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("chain ok"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("demo") && l.contains(" 500 ")),
        "{text}"
    );

    let out = run(&[
        &[
            "log",
            "tail",
            "--context",
            "demo",
            "--from",
            "499",
            "--json",
        ],
        store,
    ]
    .concat());
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["position"], 499);
    assert_eq!(lines[1]["type"], "DemoRecorded");
    assert!(lines[1]["event"]["DemoRecorded"]["seq"].is_u64());

    let out = run(&[&["log", "tail", "--limit", "3"], store].concat());
    assert_eq!(stdout(&out).lines().count(), 3);
}

#[test]
fn log_commands_work_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&["--data-dir", dir.path().to_str().unwrap()]);
}

#[test]
fn log_commands_work_on_jetstream() {
    let server = NatsServer::start();
    round_trip(&["--nats", &server.url()]);
}

/// `--nats` takes the servers of a cluster, comma-separated: the first listed is down
/// (nothing listens on port 1) and the client connects to the next.
#[test]
fn log_commands_take_a_list_of_nats_servers() {
    let server = NatsServer::start();
    round_trip(&["--nats", &format!("nats://127.0.0.1:1, {}", server.url())]);
    let out = run(&[
        "log",
        "verify",
        "--nats",
        "nats://127.0.0.1:4222,nats://x:port",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a NATS server URL") && err.contains("nats://x:port"),
        "{err}"
    );
}

#[test]
fn verify_names_the_first_broken_link_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let store = ["--data-dir", dir.path().to_str().unwrap()];
    assert!(
        run(&[
            &["log", "append-demo", "-n", "100", "--concurrency", "1"],
            &store[..]
        ]
        .concat())
        .status
        .success()
    );
    {
        // Flip the last byte of the segment holding position 50 of the demo context
        // (one append at a time: one commit per segment).
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("log").unwrap();
        let mut key = vec![b'G', hotaru_events::Context::Demo.tag()];
        key.extend_from_slice(&50u64.to_be_bytes());
        let mut frame = tree.get(&key).unwrap().unwrap().to_vec();
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        tree.insert(&key, frame).unwrap();
        db.flush().unwrap();
    }
    let out = run(&[&["log", "verify"], &store[..]].concat());
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("broken: chain of demo broken at position 50"),
        "{text}"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = run(&[
        "log",
        "tail",
        "--context",
        "nowhere",
        "--data-dir",
        "/tmp/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown context"));
    let out = run(&["log", "verify", "--nats", "nats://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "log",
        "verify",
        "--data-dir",
        "/tmp/x",
        "--nats",
        "nats://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["log", "--help"],
        vec!["log", "append-demo", "--help"],
        vec!["log", "tail", "--help"],
        vec!["log", "verify", "--help"],
        vec!["bench", "log", "--help"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage:"), "{args:?}");
    }
}
