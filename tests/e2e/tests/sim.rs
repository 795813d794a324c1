//! `hotaru sim` as a release engineer and a load tester use it: fixed-seed fleets in
//! process (the same figures twice, on one thread or two; the release check passes on
//! Hotaru's configuration and fails on COCOA's 2020 Android one), and a fleet driving a
//! real `hotaru serve` on a real nats-server over HTTP.

use hotaru_test_support::hotaru::{hotaru, run, spawn_serve, stdout, wait_until_serving};
use serde_json::Value;

fn sim(args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["sim", "--json"];
    all.extend_from_slice(args);
    let o = run(&all);
    let v = serde_json::from_str(stdout(&o).trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (
        o.status.code(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The figures that must repeat (timings and sizes left out).
fn outcome(v: &Value) -> Value {
    let mut v = v.clone();
    for k in hotaru_device_sim::figures::VOLATILE {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

const FLEET: [&str; 8] = [
    "--devices",
    "1000",
    "--days",
    "14",
    "--seed",
    "1",
    "--registration-share",
    "1",
];

#[test]
fn a_seeded_fleet_repeats_on_one_or_two_threads_and_passes_the_release_check() {
    let mut one = FLEET.to_vec();
    one.extend(["--threads", "1", "--check", "--min-recall", "0.6"]);
    let (code, a, err) = sim(&one);
    let mut two = FLEET.to_vec();
    two.extend(["--threads", "2"]);
    let (_, b, _) = sim(&two);
    assert_eq!(
        outcome(&a),
        outcome(&b),
        "the same seed, another thread count"
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("release check passed"), "{err}");
    // Enough to measure something, and what it measured.
    assert!(a["registrations"].as_u64().unwrap() >= 3, "{a}");
    assert!(a["true_contacts"].as_u64().unwrap() >= 20, "{a}");
    assert!(a["recall"].as_f64().unwrap() >= 0.6, "{a}");
    let far = &a["far_and_brief"];
    assert!(
        far["share"].as_f64().unwrap() <= 0.1,
        "far and brief contacts are rarely notified: {far}"
    );
    for k in ["uploads_lost", "exports_refused", "phones_crashed"] {
        assert_eq!(a[k], 0, "{k}: {a}");
    }
    assert_eq!(
        a["keys_accepted"], a["fleet_keys_published"],
        "every accepted key was published"
    );
}

#[test]
fn cocoas_2020_android_configuration_fails_the_release_check() {
    let mut args = FLEET.to_vec();
    args.extend(["--preset", "cocoa-2020-android", "--check"]);
    let (code, v, err) = sim(&args);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["recall"], 0.0, "{v}");
    assert_eq!(v["notified"], 0, "{v}");
    assert!(v["true_contacts"].as_u64().unwrap() > 0, "{v}");
    assert!(err.contains("recall 0.000 is below"), "{err}");
}

#[test]
fn the_shared_key_index_changes_no_result() {
    let args = [
        "--devices",
        "200",
        "--days",
        "10",
        "--seed",
        "3",
        "--registration-share",
        "1",
    ];
    let (_, shared, _) = sim(&args);
    let mut own = args.to_vec();
    own.push("--no-shared-index");
    let (_, alone, _) = sim(&own);
    assert!(shared["notified"].as_u64().unwrap() > 0, "{shared}");
    assert_eq!(outcome(&shared), outcome(&alone));
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let o = run(&["sim", "--uptake", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--uptake must be between 0 and 1"));
    let o = run(&["sim", "--preset", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["sim", "--gateway", "http://127.0.0.1:9"]);
    assert_eq!(o.status.code(), Some(2), "--gateway needs the keys");
    let _ = hotaru;
}

/// A load test: the fleet drives a real `hotaru serve` on a real nats-server over HTTP,
/// its phones' events in the device streams of the same server. Afterwards the server's
/// audit passes (so no device event is in its log), and the server redeemed exactly the
/// numbers the fleet's phones completed.
#[test]
fn a_fleet_drives_hotaru_serve_on_nats_and_the_servers_audit_passes() {
    let nats = hotaru_test_support::NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("pub.pem");
    let o = run(&["keys", "generate", "--nats", &url]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&pem, stdout(&o)).unwrap();
    let last = |o: std::process::Output| stdout(&o).split_whitespace().last().unwrap().to_owned();
    let centre = last(run(&["keys", "centre", "add", "centre", "--nats", &url]));
    let operator = last(run(&["keys", "operator", "add", "ops", "--nats", &url]));
    let config = dir.path().join("hotaru.toml");
    // The whole fleet is behind one address: the per-source limit is opened for it.
    std::fs::write(
        &config,
        "[gateway]\nwrites_per_minute = 100000\nwrite_burst = 10000\n",
    )
    .unwrap();
    let port = hotaru_test_support::free_port();
    let mut cmd = hotaru();
    cmd.args([
        "serve",
        "--nats",
        &url,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
        config.to_str().unwrap(),
    ])
    .env("HOTARU_DIGEST_SECRET", "cd".repeat(32));
    let (mut serve, lines) = spawn_serve(cmd);
    let gateway = format!("http://127.0.0.1:{port}");
    wait_until_serving(&lines);
    let (code, v, err) = sim(&[
        "--gateway",
        &gateway,
        "--centre-key",
        &centre,
        "--operator-key",
        &operator,
        "--public-key",
        pem.to_str().unwrap(),
        "--nats",
        &url,
        "--devices",
        "400",
        "--days",
        "14",
        "--seed",
        "5",
        "--registration-share",
        "1",
        "--download-share",
        "0.5",
    ]);
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(code, Some(0), "{err}");
    let registrations = v["registrations"].as_u64().unwrap();
    assert!(registrations >= 2, "{v}");
    assert_eq!(v["uploads_lost"], 0, "{v}");
    assert_eq!(v["exports_refused"], 0, "{v}");
    let routes: Vec<&str> = v["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    for r in [
        "PUT /v3/diagnosis",
        "GET /exports/index.txt",
        "POST /v1/cases",
    ] {
        assert!(routes.contains(&r), "{routes:?}");
    }
    let audit = run(&["audit", "--nats", &url, "--json"]);
    let report: Value = serde_json::from_str(stdout(&audit).trim())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&audit.stderr)));
    assert_eq!(audit.status.code(), Some(0), "{report}");
    let server_registrations: u64 = report["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["registrations"].as_u64().unwrap())
        .sum();
    assert_eq!(server_registrations, registrations, "{}", report["days"]);
}

/// `--risk-config FILE` is what the phones score with: a threshold no day can reach
/// notifies nobody; a file that is not a configuration is refused with the reason.
#[test]
fn a_risk_configuration_file_is_what_the_phones_score_with() {
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("strict.json");
    let config = hotaru_protocol::risk::RiskConfiguration {
        daily_score_threshold: 1e12,
        ..Default::default()
    };
    std::fs::write(&strict, serde_json::to_vec(&config).unwrap()).unwrap();
    let (code, v, err) = sim(&[
        "--devices",
        "300",
        "--days",
        "14",
        "--seed",
        "8",
        "--registration-share",
        "1",
        "--risk-config",
        strict.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(v["true_contacts"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["notified"], 0, "{v}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, br#"{"dailyScoreThreshold": "high"}"#).unwrap();
    let o = run(&["sim", "--risk-config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not a risk configuration"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
