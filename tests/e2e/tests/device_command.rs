//! `hotaru device` as QA and support would use it: two phones in data directories, a real
//! `hotaru serve` on 127.0.0.1, the health centre's and operator's APIs over HTTP.

use std::io::{Read, Write};
use std::process::Stdio;

use hotaru_test_support::hotaru::{hotaru, run, spawn_serve, stdout, wait_until_serving};
use serde_json::Value;

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn device(args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["device"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = run(&all);
    (o.status.code(), json_of(&o))
}

/// One HTTP/1.1 request on a fresh connection; the body of the answer.
fn http(port: u16, method: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn at(day: u64, minute: u64) -> String {
    jiff::Timestamp::from_second((day * 86_400 + 9 * 3600 + minute * 60) as i64)
        .unwrap()
        .to_string()
}

#[test]
fn two_phones_on_the_command_line_against_hotaru_serve() {
    let server = tempfile::tempdir().unwrap();
    let phones = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        phones.path().join("a"),
        phones.path().join("b"),
        phones.path().join("c"),
    );
    let (a, b, c) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    );
    let sdir = server.path().to_str().unwrap();
    let pem = server.path().join("pub.pem");
    let o = run(&["keys", "generate", "--data-dir", sdir]);
    assert!(o.status.success());
    std::fs::write(&pem, stdout(&o)).unwrap();
    let last = |o: std::process::Output| stdout(&o).split_whitespace().last().unwrap().to_owned();
    let centre = last(run(&[
        "keys",
        "centre",
        "add",
        "centre",
        "--data-dir",
        sdir,
    ]));
    let operator = last(run(&["keys", "operator", "add", "ops", "--data-dir", sdir]));
    let port = hotaru_test_support::free_port();
    let mut cmd = hotaru();
    cmd.args([
        "serve",
        "--data-dir",
        sdir,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("HOTARU_DIGEST_SECRET", "ab".repeat(32));
    let (mut serve, serve_lines) = spawn_serve(cmd);
    let gateway = format!("http://127.0.0.1:{port}");
    let today = jiff::Timestamp::now().as_second() as u64 / 86_400;
    let yesterday = today - 1;

    // Nothing before consent; consent, days of use kept across restarts.
    let o = run(&["device", "advertise", "--data-dir", a]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--consent"));
    for p in [a, b, c] {
        let (code, v) = device(&[
            "init",
            "--data-dir",
            p,
            "--consent",
            "--at",
            &at(yesterday, 0),
        ]);
        assert_eq!(code, Some(0), "{v}");
    }
    let (_, v) = device(&["status", "--data-dir", b, "--at", &at(yesterday + 2, 0)]);
    assert_eq!(v["days_of_use"], 3, "{v}");

    // Yesterday, 20 minutes at about 1 m (attenuation 55 dB from the generic phone's -20 dBm).
    for m in (0..20).step_by(4) {
        let (_, adv) = device(&["advertise", "--data-dir", a, "--at", &at(yesterday, m)]);
        let (rpi, aem) = (adv["rpi"].as_str().unwrap(), adv["aem"].as_str().unwrap());
        for listener in [b, c] {
            let (code, v) = device(&[
                "hear",
                "--data-dir",
                listener,
                "--rpi",
                rpi,
                "--aem",
                aem,
                "--rssi",
                "-75",
                "--seconds",
                "240",
                "--at",
                &at(yesterday, m),
            ]);
            assert_eq!((code, v["recorded"].as_u64()), (Some(0), Some(1)));
        }
    }

    // The patient's number from the health centre; registration; a batch.
    wait_until_serving(&serve_lines);
    let onset = jiff::Timestamp::from_second(((today - 2) * 86_400) as i64)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    let (s, case) = http(
        port,
        "POST",
        "/v1/cases",
        &centre,
        &format!("{{\"symptomOnsetDate\":\"{onset}\"}}"),
    );
    assert_eq!(s, 201, "{case}");
    let case: Value = serde_json::from_str(&case).unwrap();
    let (s, n) = http(
        port,
        "POST",
        &format!(
            "/v1/cases/{}/processing-number",
            case["caseId"].as_str().unwrap()
        ),
        &centre,
        "",
    );
    assert_eq!(s, 201, "{n}");
    let number = serde_json::from_str::<Value>(&n).unwrap()["processingNumber"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, v) = device(&[
        "register",
        "--data-dir",
        a,
        "--gateway",
        &gateway,
        "--number",
        "12ab",
        "--onset",
        &onset,
    ]);
    assert_eq!((code, v["outcome"].as_str()), (Some(1), Some("A")), "{v}");
    let (code, v) = device(&[
        "register",
        "--data-dir",
        a,
        "--gateway",
        &gateway,
        "--number",
        &number,
        "--onset",
        &onset,
    ]);
    assert_eq!(
        (code, v["outcome"].as_str()),
        (Some(0), Some("completed")),
        "{v}"
    );
    let (s, batch) = http(port, "POST", "/v1/admin/batches", &operator, "");
    assert_eq!(s, 200, "{batch}");

    // b downloads, verifies, matches: notified, one contact yesterday.
    let pem = pem.to_str().unwrap();
    let (code, v) = device(&[
        "check",
        "--data-dir",
        b,
        "--gateway",
        &gateway,
        "--public-key",
        pem,
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["notified"], true, "{v}");
    assert_eq!(v["refused_files"], 0);
    let date = jiff::Timestamp::from_second((yesterday * 86_400) as i64)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    assert_eq!(v["exposures"].as_array().unwrap().len(), 1);
    assert_eq!(v["exposures"][0]["date"], date.as_str());
    let (_, v) = device(&[
        "check",
        "--data-dir",
        b,
        "--gateway",
        &gateway,
        "--public-key",
        pem,
    ]);
    assert_eq!(
        (v["notified"].as_bool(), v["notifications"].as_u64()),
        (Some(false), Some(1))
    );

    // c runs as a long-lived agent: it checks at start, is notified, and stops on SIGTERM.
    let mut agent = hotaru()
        .args([
            "device",
            "run",
            "--data-dir",
            c,
            "--gateway",
            &gateway,
            "--public-key",
            pem,
        ])
        .env("HOTARU_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let check = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains("exposure check") => break line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no exposure check from device run ({e}): {seen:?}"),
        }
    };
    assert!(
        check.contains("files=1") && check.contains("notified=true"),
        "{check}"
    );
    assert!(
        !check.contains("127.0.0.1"),
        "no address in a log line: {check}"
    );
    let o = std::process::Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(o.success());
    let status = agent.wait().unwrap();
    assert!(status.success(), "device run ended with {status}");
    let (_, v) = device(&["status", "--data-dir", c]);
    assert_eq!(v["notifications"], 1, "{v}");
    assert_eq!(v["exposures"].as_array().unwrap().len(), 1, "{v}");

    // Guidance, then the operation log sent with its ID.
    let (_, v) = device(&[
        "guidance",
        "--data-dir",
        b,
        "--answers",
        "no,no,no",
        "--prefecture",
        "13",
    ]);
    let screens: Vec<&str> = v["screens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["screen"].as_str().unwrap())
        .collect();
    assert_eq!(screens.last(), Some(&"AdvisedWatchHealth"), "{v}");
    assert!(screens.contains(&"ConsultationCentres"));
    let (code, v) = device(&["log", "--data-dir", b, "--send", "--gateway", &gateway]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["log_id"].as_str().unwrap().len(), 32);

    // Withdrawal erases the device.
    let (code, _) = device(&["withdraw", "--data-dir", b]);
    assert_eq!(code, Some(0));
    assert!(!std::path::Path::new(b).exists());
    // A reinstall starts again: day 1 of use, counted from the new consent.
    let (code, _) = device(&["init", "--data-dir", b, "--consent", "--at", &at(today, 0)]);
    assert_eq!(code, Some(0));
    let (_, v) = device(&["status", "--data-dir", b, "--at", &at(today, 60)]);
    assert_eq!(
        (v["days_of_use"].as_u64(), v["notifications"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    let _ = serve.kill();
    let _ = serve.wait();
}
