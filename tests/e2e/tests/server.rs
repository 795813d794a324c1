//! `hotaru demo`, `hotaru keys` and `hotaru serve` as an operator runs them, on the
//! embedded store and on a real nats-server.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use hotaru_test_support::NatsServer;
use hotaru_test_support::hotaru::{hotaru, run, stdout};

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

/// One HTTP/1.1 exchange from the client address 127.0.0.2 (still loopback), so that the
/// scan below can tell the client's address from the server's own.
fn http(port: u16, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut stream = socket
                .connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        })
}

/// Starts `hotaru serve` on a free loopback port with a fresh data directory, its
/// diagnostics (at `level`) on a pipe.
fn spawn_serve(level: &str) -> (tempfile::TempDir, u16, std::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = hotaru()
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("HOTARU_LOG", level)
        .env("HOTARU_DIGEST_SECRET", "ab".repeat(32))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (dir, port, child)
}

/// `serve` answers HTTP, stops cleanly on SIGINT, and after real traffic neither its data
/// directory nor its own log lines (at debug level) hold the client's IP address
/// (127.0.0.2; the server's own listening address 127.0.0.1 is operator configuration).
#[test]
fn serve_runs_until_interrupted_and_stores_no_address() {
    let (dir, port, mut child) = spawn_serve("debug");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("server running") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("serve reports running");
    assert!(
        http(
            port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 200")
    );
    // Traffic that gets recorded: a wrong number (B), a bad format (A), an operation log.
    for body in [
        r#"{"keys":[{"keyData":"AAAAAAAAAAAAAAAAAAAAAA==","rollingStartNumber":1,"rollingPeriod":144}],"verificationPayload":"12345678"}"#,
        r#"{"keys":[],"verificationPayload":"12a"}"#,
    ] {
        let a = http(
            port,
            &format!(
                "PUT /v3/diagnosis HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    }
    let log = r#"{"consent":true,"log":"12:00 check ok"}"#;
    let a = http(
        port,
        &format!(
            "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{log}",
            log.len()
        ),
    );
    assert!(a.starts_with("HTTP/1.1 201"), "{a}");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let logged = reader.join().unwrap();
    assert!(logged.contains("server running"));
    let needle = b"127.0.0.2";
    assert!(
        !logged.contains("127.0.0.2"),
        "the client's address in the log lines:\n{logged}"
    );
    let mut scanned = 0;
    for f in walk(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        scanned += bytes.len();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "an address in {f:?}"
        );
    }
    assert!(scanned > 0);
}

/// SIGTERM while a request is half sent: the server stops accepting, but the request in
/// flight is finished and answered before the process exits 0. No sleeps: each step waits
/// for the condition it needs (the server's 100 Continue, the shutdown begun).
#[test]
fn shutdown_finishes_the_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, port, mut child) = spawn_serve("info");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let wait_for = |lines: &mut std::io::Lines<BufReader<std::process::ChildStderr>>,
                    what: &str| {
        while !lines
            .next()
            .expect("serve said nothing more")
            .unwrap()
            .contains(what)
        {}
    };
    wait_for(&mut lines, "server running");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A request in flight: its head is sent with `Expect: 100-continue`, and the server's
    // "100 Continue" proves it has read the head and is serving the request (an idle
    // keep-alive connection, or bytes the server has not read yet, are not in flight: at a
    // graceful shutdown those connections are closed, as nginx does).
    let body = r#"{"keys":[{"keyData":"AAAAAAAAAAAAAAAAAAAAAA==","rollingStartNumber":1,"rollingPeriod":144}],"verificationPayload":"12345678"}"#;
    let mut s = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!(
            "PUT /v3/diagnosis HTTP/1.1\r\nHost: x\r\nX-Chaff: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while !seen.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(
            seen.starts_with(b"HTTP/1.1 100 Continue"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
        s
    });
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    wait_for(&mut lines, "starting graceful shutdown");
    // Keep reading what it says while it shuts down.
    let drain = std::thread::spawn(move || lines.for_each(drop));
    let answer = rt.block_on(async {
        s.write_all(body.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = child.wait().unwrap();
    drain.join().unwrap();
    assert!(status.success(), "{status:?}");
}

/// When the reader of its diagnostics goes away (a log shipper restarting, `| head`), the
/// server keeps serving and still stops cleanly: a failed write to stderr is not a crash.
#[test]
fn serve_outlives_the_reader_of_its_stderr() {
    let (_dir, port, mut child) = spawn_serve("debug");
    {
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        while !lines
            .next()
            .expect("serve said nothing")
            .unwrap()
            .contains("server running")
        {}
    } // the read end is closed here
    for _ in 0..3 {
        let a = http(
            port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `hotaru demo` without --cases: the whole story on the embedded store (server, phones,
/// batches, notifications, guidance, audit), both reports written, the chain verifiable;
/// a second run on the same store says why it cannot.
#[test]
fn the_demo_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hotaru-data");
    let data = data.to_str().unwrap();
    let reports = dir.path().join("reports");
    let out = run(&[
        "demo",
        "--data-dir",
        data,
        "--devices",
        "400",
        "--reports",
        reports.to_str().unwrap(),
    ]);
    check(&out);
    let text = stdout(&out);
    for s in [
        "registrations completed",
        "the notified walked the guidance",
        "privacy      pass",
        "the story holds: every check passed",
    ] {
        assert!(text.contains(s), "{s}: {text}");
    }
    let sim = std::fs::read_to_string(reports.join("demo-simulation.html")).unwrap();
    assert!(
        sim.contains("<svg") && !sim.contains("<script"),
        "self-contained, no JS"
    );
    for plot in [
        "New infections per day",
        "Registrations per day",
        "Keys published per day",
        "Phones notified per day",
        "Notified share by distance",
        "Recall by setting",
    ] {
        assert!(sim.contains(plot), "{plot}");
    }
    let audit = std::fs::read_to_string(reports.join("demo-audit.html")).unwrap();
    assert!(audit.contains("every check passed"), "{audit}");
    check(&run(&["log", "verify", "--data-dir", data]));
    let again = run(&[
        "demo",
        "--data-dir",
        data,
        "--reports",
        reports.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a Hotaru log"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
