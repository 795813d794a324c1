//! `hotaru demo`, `hotaru keys` and `hotaru serve` as an operator runs them, on the
//! embedded store and on a real nats-server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{hotaru, run, stdout};
use hotaru_test_support::NatsServer;

fn check(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn demo_runs_on(store: &[&str]) {
    let out = run(&[&["demo", "--cases", "4"], store].concat());
    check(&out);
    let text = stdout(&out);
    assert!(
        text.contains("an upload with full-width digits: error A"),
        "{text}"
    );
    assert!(
        text.contains("an upload with a used number: error B"),
        "{text}"
    );
    assert!(text.contains("an upload with no keys: error G"), "{text}");
    assert!(text.contains("signature by key 440 v1 verifies"), "{text}");
    let verify = run(&[&["log", "verify"], store].concat());
    check(&verify);
    assert!(stdout(&verify).contains("chain ok"));
}

#[test]
fn demo_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    demo_runs_on(&["--data-dir", dir.path().to_str().unwrap()]);
}

#[test]
fn demo_on_nats() {
    let server = NatsServer::start();
    demo_runs_on(&["--nats", &server.url()]);
}

#[test]
fn signing_and_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["keys", "generate", "--data-dir", d]);
    check(&out);
    assert!(stdout(&out).starts_with("-----BEGIN PUBLIC KEY-----"));
    let again = run(&["keys", "generate", "--data-dir", d]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("hotaru keys rotate"));
    check(&run(&["keys", "rotate", "--data-dir", d]));
    let list = run(&["keys", "list", "--data-dir", d]);
    check(&list);
    let l = stdout(&list);
    assert!(l.contains("v1\t") && l.contains("v2\t"), "{l}");

    let out = run(&[
        "keys",
        "centre",
        "add",
        "Shinjuku health centre",
        "--data-dir",
        d,
    ]);
    check(&out);
    let text = stdout(&out);
    let key = text.split_whitespace().last().unwrap();
    assert!(key.starts_with("htr_c1_"), "{text}");
    let listed = stdout(&run(&["keys", "centre", "list", "--data-dir", d]));
    assert!(
        listed.contains("1\tactive\tShinjuku health centre"),
        "{listed}"
    );
    assert!(!listed.contains(key), "keys are never listed");
    check(&run(&["keys", "centre", "revoke", "1", "--data-dir", d]));
    assert!(stdout(&run(&["keys", "centre", "list", "--data-dir", d])).contains("revoked"));
    let op = stdout(&run(&[
        "keys",
        "operator",
        "add",
        "ops team",
        "--data-dir",
        d,
    ]));
    assert!(op.split_whitespace().last().unwrap().starts_with("htr_o1_"));
    // The store holds only digests.
    drop(run(&["log", "verify", "--data-dir", d]));
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "{entry:?}"
        );
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn serve_runs_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = hotaru()
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("HOTARU_LOG", "info")
        .env("HOTARU_DIGEST_SECRET", "ab".repeat(32))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("serve said nothing").unwrap();
        if line.contains("server running") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // It answers HTTP.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
