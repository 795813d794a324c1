//! `hotaru gaen`: the specification's vectors from the command line, and export files
//! inspected and verified as a person debugging would.

use hotaru_protocol::export::{SignatureInfo, Signer, build_zip, split_batch};
use hotaru_protocol::random::OsRandom;
use hotaru_protocol::{DiagnosisKey, EnIntervalNumber, Tek};
use hotaru_test_support::hotaru::{run, stdout};

#[test]
fn rpi_prints_the_specification_vectors() {
    let out = run(&[
        "gaen",
        "rpi",
        "--tek",
        "75c734c6dd1a782de7a965da5eb93125",
        "--interval",
        "2642976",
        "--count",
        "144",
        "--metadata",
        "40080000",
    ]);
    assert!(out.status.success());
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 144);
    assert_eq!(
        lines[0],
        "2642976 8be6cd371c5c891604bfbe49df845096 72033874"
    );
    assert_eq!(
        lines[1],
        "2642977 3c9a1de5dd6b02afa7fded7b570b3e56 c29211b1"
    );
    assert_eq!(
        lines[2],
        "2642978 243ffe9a3b08bded3094bac8630bb8ad 6adfad03"
    );
    assert_eq!(
        lines[143],
        "2643119 f431b62ecf443102ce4ed0407de54bd4 1215e57e"
    );
}

#[test]
fn rpi_refuses_bad_input_with_a_reason() {
    for (args, says) in [
        (vec!["--tek", "75c7", "--interval", "1"], "16 bytes"),
        (vec!["--tek", "zz", "--interval", "1"], "not hex"),
        (
            vec![
                "--tek",
                "75c734c6dd1a782de7a965da5eb93125",
                "--interval",
                "1",
                "--count",
                "0",
            ],
            "count",
        ),
        (
            vec![
                "--tek",
                "75c734c6dd1a782de7a965da5eb93125",
                "--interval",
                "1",
                "--metadata",
                "40",
            ],
            "4 bytes",
        ),
    ] {
        let mut all = vec!["gaen", "rpi"];
        all.extend(args);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{all:?}: {err}");
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    zip: String,
    pem: String,
    other_pem: String,
    corrupt: String,
}

fn fixture() -> Fixture {
    let signer = |v: &str| {
        Signer::from_pkcs8(
            SignatureInfo::new("440", v),
            &Signer::generate_pkcs8(&mut OsRandom::new()),
        )
        .unwrap()
    };
    let (s, other) = (signer("v1"), signer("v2"));
    let keys = (0..30u8)
        .map(|i| {
            DiagnosisKey::daily(
                Tek::from_bytes([i.wrapping_mul(97); 16]),
                EnIntervalNumber(2_900_016),
            )
        })
        .collect();
    let file = split_batch(
        1_740_000_000,
        1_740_003_600,
        "440",
        std::slice::from_ref(&s.info),
        keys,
        500_000,
    )
    .pop()
    .unwrap();
    let zip = build_zip(&file, &[&s]);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("export.zip"), &zip).unwrap();
    std::fs::write(p("key.pem"), s.public_key().to_pem()).unwrap();
    std::fs::write(p("other.pem"), other.public_key().to_pem()).unwrap();
    let mut bad = zip.clone();
    let n = bad.len();
    bad.truncate(n - 30);
    std::fs::write(p("corrupt.zip"), &bad).unwrap();
    Fixture {
        zip: p("export.zip"),
        pem: p("key.pem"),
        other_pem: p("other.pem"),
        corrupt: p("corrupt.zip"),
        _dir: dir,
    }
}

#[test]
fn export_inspect_text_and_json() {
    let f = fixture();
    let out = run(&["gaen", "export", "inspect", &f.zip]);
    assert!(out.status.success());
    let text = stdout(&out);
    for want in [
        "\"EK Export v1    \"",
        "region:       440",
        "2025-02-19T21:20:00Z .. 2025-02-19T22:20:00Z",
        "batch:        1 of 1",
        "keys:         30",
        "sorted:       yes",
        "key id \"440\", version \"v1\", algorithm 1.2.840.10045.4.3.2",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let out = run(&["gaen", "export", "inspect", "--json", &f.zip]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["keys"], 30);
    assert_eq!(v["keysSorted"], true);
    assert_eq!(v["region"], "440");
    assert_eq!(v["startTimestamp"], 1_740_000_000u64);
    assert_eq!(v["signatures"][0]["verificationKeyVersion"], "v1");
    assert_eq!(v["signatures"][0]["batchNum"], 1);
}

#[test]
fn export_verify_exits_zero_only_when_a_signature_verifies() {
    let f = fixture();
    let ok = run(&["gaen", "export", "verify", &f.zip, "--public-key", &f.pem]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout(&ok).starts_with("ok: "));

    let wrong = run(&[
        "gaen",
        "export",
        "verify",
        &f.zip,
        "--public-key",
        &f.other_pem,
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stdout(&wrong).contains("no signature verifies"));

    let corrupt = run(&[
        "gaen",
        "export",
        "verify",
        &f.corrupt,
        "--public-key",
        &f.pem,
    ]);
    assert_eq!(corrupt.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&corrupt.stderr).contains("not a valid export file"));

    let not_a_key = run(&["gaen", "export", "verify", &f.zip, "--public-key", &f.zip]);
    assert_eq!(not_a_key.status.code(), Some(2));
    let missing = run(&["gaen", "export", "inspect", "/nonexistent/export.zip"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}
