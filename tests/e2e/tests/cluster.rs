//! `hotaru serve` as separate processes: gateways and actor nodes meeting on a real
//! nats-server (commands over request/reply with a queue group), and the gateway over TLS.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::get_text;
use hotaru_test_support::hotaru::{hotaru, run, stdout};
use hotaru_test_support::{NatsServer, free_port};
use serde_json::{Value, json};

const SECRET: &str = "ef";

/// A `hotaru serve` process, killed when dropped.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut c = hotaru();
        c.arg("serve")
            .args(args)
            .env("HOTARU_LOG", "info")
            .env("HOTARU_DIGEST_SECRET", SECRET.repeat(32))
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let s = Self { child, lines };
        s.wait_for("running");
        s
    }

    fn wait_for(&self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return,
                Ok(_) => {}
                Err(e) => panic!("serve never said {what:?}: {e}"),
            }
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the process said after starting: shown with a failing test's output.
        for line in self.lines.try_iter() {
            eprintln!("[serve {}] {line}", self.child.id());
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn key_of(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    stdout(out).split_whitespace().last().unwrap().to_owned()
}

struct Client {
    http: reqwest::Client,
    base: String,
    centre: String,
}

impl Client {
    async fn number(&self) -> String {
        let onset = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .checked_sub(jiff::Span::new().days(2))
            .unwrap();
        let r = self
            .http
            .post(format!("{}/v1/cases", self.base))
            .bearer_auth(&self.centre)
            .json(&json!({ "symptomOnsetDate": onset.to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let case: Value = r.json().await.unwrap();
        let r = self
            .http
            .post(format!(
                "{}/v1/cases/{}/processing-number",
                self.base,
                case["caseId"].as_str().unwrap()
            ))
            .bearer_auth(&self.centre)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        v["processingNumber"].as_str().unwrap().to_owned()
    }

    async fn upload(&self, number: &str, seed: u8) -> (u16, Value) {
        use base64::Engine as _;
        let day = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 86_400) as u32;
        let r = self
            .http
            .put(format!("{}/v3/diagnosis", self.base))
            .json(&json!({
                "keys": [{
                    "keyData": base64::engine::general_purpose::STANDARD.encode([seed; 16]),
                    "rollingStartNumber": (day - 1) * 144,
                    "rollingPeriod": 144,
                }],
                "verificationPayload": number,
            }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

/// Two actor nodes and one gateway, each its own process, on one nats-server: every
/// command the gateway takes is answered by an actor node; when one node stops the other
/// answers; with none left the gateway answers 503, not a hang or a 500.
#[test]
fn gateways_and_actor_nodes_scale_separately_over_nats() {
    let nats = NatsServer::start();
    let url = nats.url();
    let store = ["--nats", url.as_str()];
    let centre = key_of(&run(&[
        "keys",
        "centre",
        "add",
        "Chuo centre",
        "--nats",
        &url,
    ]));
    let operator = key_of(&run(&["keys", "operator", "add", "ops", "--nats", &url]));
    assert!(run(&["keys", "generate", "--nats", &url]).status.success());

    let a = Serve::start(&[&store[..], &["--role", "actors"]].concat(), &[]);
    let b = Serve::start(&[&store[..], &["--role", "actors"]].concat(), &[]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Serve::start(
        &[&store[..], &["--role", "gateway", "--listen", &listen]].concat(),
        &[],
    );
    block_on(async {
        let c = Client {
            http: reqwest::Client::new(),
            base: format!("http://{listen}"),
            centre,
        };
        // Several uploads: the queue group spreads them over both nodes.
        for seed in 1..=6u8 {
            let n = c.number().await;
            let (st, v) = c.upload(&n, seed).await;
            assert_eq!((st, v["accepted"].as_u64()), (200, Some(1)), "{v}");
            // Errors cross the wire with their codes (twice only: five failures from one
            // source on one node would start its back-off, error C).
            if seed <= 2 {
                let (st, v) = c.upload(&n, seed).await;
                assert_eq!((st, v["code"].as_str()), (400, Some("ERR_B_NUMBER_WRONG")));
            }
        }
        let r = c
            .http
            .post(format!("{}/v1/admin/batches", c.base))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["batches"][0]["keys"], 6, "{v}");
        // The gateway reads the published files itself.
        let index = get_text(&c.http, &format!("{}/exports/index.txt", c.base)).await;
        let file = index.lines().next().unwrap();
        let r = c
            .http
            .get(format!("{}/{file}", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().starts_with(b"PK"));

        // One node stops: the other answers everything.
        assert!(a.stop().success());
        for seed in 10..=12u8 {
            let n = c.number().await;
            let (st, _) = c.upload(&n, seed).await;
            assert_eq!(st, 200);
        }
        // None left: 503, quickly (NATS says nobody is listening).
        assert!(b.stop().success());
        let started = std::time::Instant::now();
        let r = c
            .http
            .post(format!("{}/v1/cases", c.base))
            .bearer_auth(&c.centre)
            .json(&json!({ "sampleDate": "2026-01-01" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "UNAVAILABLE");
        assert!(started.elapsed() < Duration::from_secs(10));
    });
    assert!(gateway.stop().success());
}

#[test]
fn split_roles_need_nats() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["actors", "gateway"] {
        let out = run(&[
            "serve",
            "--role",
            role,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("needs --nats"),
            "{out:?}"
        );
    }
}

/// With a certificate configured the gateway speaks HTTPS (rustls) and nothing else.
#[test]
fn the_gateway_speaks_tls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let config = dir.path().join("hotaru.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert_file.to_str().unwrap(),
            key_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let serve = Serve::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    block_on(async {
        let trusting = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let r = trusting
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok\n");
        // A client that does not trust the certificate is refused; plain HTTP gets nothing.
        assert!(
            reqwest::Client::builder()
                .use_rustls_tls()
                .build()
                .unwrap()
                .get(format!("https://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .is_err()
        );
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await;
        assert!(plain.is_err() || plain.unwrap().status() != 200);
    });
    assert!(serve.stop().success());
    // Half a TLS configuration is refused at start with the reason.
    std::fs::write(&config, "[gateway]\ntls_cert = \"/nonexistent.pem\"\n").unwrap();
    let out = run(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls_cert and gateway.tls_key"),
        "{out:?}"
    );
}
