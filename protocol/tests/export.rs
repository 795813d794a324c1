//! Export files round-trip, and no corrupted or hostile input is accepted or panics.

use std::io::{Cursor, Write};

use hotaru_protocol::export::{
    self, EXPORT_HEADER, ExportError, ExportFile, PublicKey, ReadLimits, SignatureInfo, Signer,
    VerificationKey, build_zip, read_zip, split_batch, write_zip,
};
use hotaru_protocol::random::OsRandom;
use hotaru_protocol::{DiagnosisKey, EnIntervalNumber, ReportType, Tek};
use proptest::prelude::*;

fn signer(id: &str, version: &str) -> Signer {
    let pkcs8 = Signer::generate_pkcs8(&mut OsRandom::new());
    Signer::from_pkcs8(SignatureInfo::new(id, version), &pkcs8).unwrap()
}

fn vkey(s: &Signer) -> VerificationKey {
    VerificationKey {
        key_id: s.info.verification_key_id.clone(),
        key_version: s.info.verification_key_version.clone(),
        public_key: s.public_key(),
    }
}

fn key(seed: u8, start: u32) -> DiagnosisKey {
    DiagnosisKey {
        tek: Tek::from_bytes([seed.wrapping_mul(37).wrapping_add(11); 16]),
        rolling_start: EnIntervalNumber(start),
        rolling_period: 144,
        transmission_risk_level: 4,
        report_type: ReportType::ConfirmedTest,
        days_since_onset: Some(i32::from(seed % 10) - 3),
    }
}

fn file(keys: Vec<DiagnosisKey>, s: &Signer) -> ExportFile {
    split_batch(
        1_700_000_000,
        1_700_003_600,
        "440",
        std::slice::from_ref(&s.info),
        keys,
        500_000,
    )
    .pop()
    .unwrap()
}

fn arb_key() -> impl Strategy<Value = DiagnosisKey> {
    (
        any::<[u8; 16]>(),
        2_600_000u32..2_900_000,
        1u32..=144,
        0u8..=8,
        0usize..6,
        proptest::option::of(-14i32..=14),
    )
        .prop_map(|(tek, start, period, trl, rt, dso)| DiagnosisKey {
            tek: Tek::from_bytes(tek),
            rolling_start: EnIntervalNumber(start),
            rolling_period: period,
            transmission_risk_level: trl,
            report_type: [
                ReportType::Unknown,
                ReportType::ConfirmedTest,
                ReportType::ConfirmedClinicalDiagnosis,
                ReportType::SelfReport,
                ReportType::Recursive,
                ReportType::Revoked,
            ][rt],
            days_since_onset: dso,
        })
}

fn sorted(mut keys: Vec<DiagnosisKey>) -> Vec<DiagnosisKey> {
    keys.sort_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
    keys
}

#[test]
fn header_is_sixteen_bytes_padded_with_spaces() {
    assert_eq!(EXPORT_HEADER.len(), 16);
    assert_eq!(&EXPORT_HEADER[..12], b"EK Export v1");
    assert!(EXPORT_HEADER[12..].iter().all(|b| *b == b' '));
}

#[test]
fn a_signed_zip_round_trips_and_verifies() {
    let s = signer("440", "v1");
    let keys: Vec<_> = (0..50)
        .map(|i| key(i, 2_800_000 + u32::from(i) * 144))
        .collect();
    let f = file(keys.clone(), &s);
    let zip = build_zip(&f, &[&s]);
    let got = read_zip(&zip, ReadLimits::default()).unwrap();
    assert_eq!(
        got.file,
        ExportFile {
            keys: sorted(keys),
            ..f.clone()
        }
    );
    assert!(got.file.keys_sorted());
    assert_eq!(got.export_bin, f.encode());
    assert_eq!(got.verify(&[vkey(&s)]).unwrap(), vec![s.info.clone()]);
    assert_eq!(got.verify_with(&s.public_key()).unwrap(), s.info);
}

#[test]
fn encoding_is_deterministic_and_independent_of_arrival_order() {
    let s = signer("440", "v1");
    let keys: Vec<_> = (0..20).map(|i| key(i, 2_800_000)).collect();
    let mut reversed = keys.clone();
    reversed.reverse();
    assert_eq!(file(keys, &s).encode(), file(reversed, &s).encode());
}

#[test]
fn several_signatures_during_a_key_rotation() {
    let old = signer("440", "v1");
    let new = signer("440", "v2");
    let f = file(vec![key(1, 2_800_000)], &old);
    let zip = build_zip(&f, &[&old, &new]);
    let got = read_zip(&zip, ReadLimits::default()).unwrap();
    assert_eq!(got.signatures.len(), 2);
    // A phone that knows only the old key, or only the new one, accepts the file.
    assert_eq!(got.verify(&[vkey(&old)]).unwrap(), vec![old.info.clone()]);
    assert_eq!(got.verify(&[vkey(&new)]).unwrap(), vec![new.info.clone()]);
    assert_eq!(got.verify(&[vkey(&old), vkey(&new)]).unwrap().len(), 2);
}

#[test]
fn a_wrong_key_or_a_relabelled_key_does_not_verify() {
    let s = signer("440", "v1");
    let other = signer("440", "v1");
    let zip = build_zip(&file(vec![key(1, 2_800_000)], &s), &[&s]);
    let got = read_zip(&zip, ReadLimits::default()).unwrap();
    assert_eq!(got.verify(&[vkey(&other)]), Err(ExportError::BadSignature));
    // The right key under another version is not the key the phone was told about.
    let mut wrong_version = vkey(&s);
    wrong_version.key_version = "v2".into();
    assert_eq!(got.verify(&[wrong_version]), Err(ExportError::BadSignature));
}

#[test]
fn a_missing_signature_is_refused() {
    let s = signer("440", "v1");
    let bin = file(vec![key(1, 2_800_000)], &s).encode();
    let empty_sig = export::sign_export(&bin, 1, 1, &[]);
    let got = read_zip(&write_zip(&bin, &empty_sig), ReadLimits::default()).unwrap();
    assert_eq!(got.verify(&[vkey(&s)]), Err(ExportError::NoSignature));
    // And an archive without export.sig at all.
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    z.start_file("export.bin", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(&bin).unwrap();
    let only_bin = z.finish().unwrap().into_inner();
    assert_eq!(
        read_zip(&only_bin, ReadLimits::default()).unwrap_err(),
        ExportError::MissingEntry("export.sig")
    );
}

#[test]
fn a_signature_for_another_batch_position_is_refused() {
    let s = signer("440", "v1");
    let f = file(vec![key(1, 2_800_000)], &s);
    let bin = f.encode();
    let sig = export::sign_export(&bin, 2, 3, &[&s]);
    let got = read_zip(&write_zip(&bin, &sig), ReadLimits::default()).unwrap();
    assert_eq!(got.verify(&[vkey(&s)]), Err(ExportError::BadSignature));
}

#[test]
fn a_wrong_header_is_refused() {
    let s = signer("440", "v1");
    let mut bin = file(vec![key(1, 2_800_000)], &s).encode();
    bin[11] = b'2';
    let sig = export::sign_export(&bin, 1, 1, &[&s]);
    assert_eq!(
        read_zip(&write_zip(&bin, &sig), ReadLimits::default()).unwrap_err(),
        ExportError::BadHeader
    );
}

#[test]
fn bad_protobuf_and_bad_keys_are_refused() {
    let s = signer("440", "v1");
    let mut bin = EXPORT_HEADER.to_vec();
    bin.extend_from_slice(&[0x3a, 0xff, 0xff]); // field 7, length that runs off the end
    let sig = export::sign_export(&bin, 1, 1, &[&s]);
    assert!(matches!(
        read_zip(&write_zip(&bin, &sig), ReadLimits::default()),
        Err(ExportError::BadProtobuf {
            file: "export.bin",
            ..
        })
    ));

    // A key of 15 bytes.
    use prost::Message;
    let msg = export::pb::TemporaryExposureKeyExport {
        keys: vec![export::pb::TemporaryExposureKey {
            key_data: Some(vec![1; 15]),
            rolling_start_interval_number: Some(2_800_000),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut bin = EXPORT_HEADER.to_vec();
    bin.extend(msg.encode_to_vec());
    let sig = export::sign_export(&bin, 1, 1, &[&s]);
    assert!(matches!(
        read_zip(&write_zip(&bin, &sig), ReadLimits::default()),
        Err(ExportError::BadKey { index: 0, .. })
    ));

    let bad_sig = write_zip(&file(vec![], &s).encode(), &[0x0a, 0x05, 0x01]);
    assert!(matches!(
        read_zip(&bad_sig, ReadLimits::default()),
        Err(ExportError::BadProtobuf {
            file: "export.sig",
            ..
        })
    ));
}

#[test]
fn oversized_input_and_zip_bombs_are_refused() {
    let s = signer("440", "v1");
    let f = file((0..100).map(|i| key(i, 2_800_000)).collect(), &s);
    let zip = build_zip(&f, &[&s]);
    let small = ReadLimits {
        max_zip_bytes: zip.len() as u64 - 1,
        ..ReadLimits::default()
    };
    assert!(matches!(
        read_zip(&zip, small),
        Err(ExportError::TooLarge {
            what: "the archive",
            ..
        })
    ));

    // 64 MiB of zeros deflate to about 64 KiB: a bomb against the 32 MiB default.
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    z.start_file("export.bin", opts).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        z.write_all(&zeros).unwrap();
    }
    z.start_file("export.sig", opts).unwrap();
    let bomb = z.finish().unwrap().into_inner();
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    assert!(matches!(
        read_zip(&bomb, ReadLimits::default()),
        Err(ExportError::TooLarge {
            what: "export.bin",
            ..
        })
    ));

    // A lying central directory: patch the declared uncompressed size of export.bin
    // down to 100 bytes; the reader still stops at its limit.
    let mut lying = bomb.clone();
    let declared = (64u32 << 20).to_le_bytes();
    let mut patched = 0;
    for i in 0..lying.len().saturating_sub(4) {
        if lying[i..i + 4] == declared {
            lying[i..i + 4].copy_from_slice(&100u32.to_le_bytes());
            patched += 1;
        }
    }
    assert!(patched >= 1);
    let limits = ReadLimits {
        max_bin_bytes: 1 << 20,
        ..ReadLimits::default()
    };
    assert!(read_zip(&lying, limits).is_err());

    let too_many = ReadLimits {
        max_keys: 99,
        ..ReadLimits::default()
    };
    assert_eq!(
        read_zip(&zip, too_many).unwrap_err(),
        ExportError::TooManyKeys(100)
    );
}

#[test]
fn files_split_at_the_maximum_and_number_themselves() {
    let s = signer("440", "v1");
    let keys: Vec<_> = (0..=250u8).map(|i| key(i, 2_800_000)).collect();
    let files = split_batch(
        1,
        2,
        "440",
        std::slice::from_ref(&s.info),
        keys.clone(),
        100,
    );
    assert_eq!(
        files.iter().map(|f| f.keys.len()).collect::<Vec<_>>(),
        [100, 100, 51]
    );
    for (i, f) in files.iter().enumerate() {
        assert_eq!((f.batch_num, f.batch_size), (i as u32 + 1, 3));
        assert!(f.keys_sorted());
    }
    let all: Vec<_> = files.iter().flat_map(|f| f.keys.clone()).collect();
    assert_eq!(all, sorted(keys));
    assert_eq!(export::DEFAULT_MAX_KEYS_PER_FILE, 500_000);
    // An empty batch is one empty file (phones still see the batch was published).
    assert_eq!(split_batch(1, 2, "440", &[], vec![], 100).len(), 1);
}

#[test]
fn public_keys_read_from_pem() {
    let s = signer("440", "v1");
    let pem = s.public_key().to_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(PublicKey::from_pem(&pem).unwrap(), s.public_key());
    assert!(
        PublicKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
    assert!(PublicKey::from_pem("not pem").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_file_round_trips(keys in proptest::collection::vec(arb_key(), 0..40),
                            revised in proptest::collection::vec(arb_key(), 0..5),
                            start in any::<u64>(), len in any::<u32>(), region in "[0-9A-Z]{0,8}") {
        let f = ExportFile {
            start_timestamp: start,
            end_timestamp: start.saturating_add(u64::from(len)),
            region,
            batch_num: 1,
            batch_size: 1,
            signature_infos: vec![SignatureInfo::new("440", "v1")],
            keys: keys.clone(),
            revised_keys: revised.clone(),
        };
        let back = ExportFile::decode(&f.encode()).unwrap();
        prop_assert_eq!(back, ExportFile { keys: sorted(keys), revised_keys: sorted(revised), ..f });
    }

    /// Flip any byte of a signed zip: it is refused, or what verifies is the original
    /// export.bin (the byte was in zip metadata that carries no content).
    #[test]
    fn no_flipped_byte_is_accepted_as_other_content(pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let s = signer("440", "v1");
        let f = file((0..5).map(|i| key(i, 2_800_000)).collect(), &s);
        let zip = build_zip(&f, &[&s]);
        let mut bad = zip.clone();
        let i = pos.index(bad.len());
        bad[i] ^= mask;
        if let Ok(got) = read_zip(&bad, ReadLimits::default())
            && got.verify(&[vkey(&s)]).is_ok()
        {
            prop_assert_eq!(got.export_bin, f.encode());
        }
    }

    /// Truncated archives are refused.
    #[test]
    fn truncations_are_refused(cut in any::<prop::sample::Index>()) {
        let s = signer("440", "v1");
        let zip = build_zip(&file(vec![key(1, 2_800_000)], &s), &[&s]);
        let n = cut.index(zip.len());
        prop_assert!(read_zip(&zip[..n], ReadLimits::default()).is_err());
    }

    /// Arbitrary bytes never panic the reader, as a zip or as export.bin/export.sig.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_zip(&bytes, ReadLimits::default());
        let _ = ExportFile::decode(&bytes);
        let mut with_header = EXPORT_HEADER.to_vec();
        with_header.extend(&bytes);
        let _ = ExportFile::decode(&with_header);
        let _ = export::decode_signatures(&bytes);
        let _ = read_zip(&write_zip(&with_header, &bytes), ReadLimits::default());
    }
}

/// The streaming key encoder writes exactly what prost writes for the whole message.
#[test]
fn export_bin_is_the_plain_protobuf_encoding() {
    use prost::Message;
    let keys: Vec<_> = (0..300u32)
        .map(|i| key(i as u8, 2_800_000 + i % 7))
        .collect();
    let f = ExportFile {
        start_timestamp: 1,
        end_timestamp: 2,
        region: "440".into(),
        batch_num: 1,
        batch_size: 1,
        signature_infos: vec![SignatureInfo::new("440", "v1")],
        keys: keys.clone(),
        revised_keys: keys[..3].to_vec(),
    };
    let bin = f.encode();
    let msg = export::pb::TemporaryExposureKeyExport::decode(&bin[16..]).unwrap();
    let mut again = EXPORT_HEADER.to_vec();
    msg.encode(&mut again).unwrap();
    assert_eq!(bin, again);
}

#[test]
fn signatures_are_deterministic_and_keys_made_by_ring_still_sign() {
    // RFC 6979: the same key and file give the same signature, hence the same zip.
    let s = signer("440", "v1");
    let f = file(vec![key(1, 2_800_000), key(2, 2_800_144)], &s);
    let zip = build_zip(&f, &[&s]);
    assert_eq!(zip, build_zip(&f, &[&s]));
    // Another key signs differently, and a seeded generator makes the same key twice.
    let seeded = |seed| {
        let pkcs8 = Signer::generate_pkcs8(&mut hotaru_protocol::random::SeededRandom::from_u64(
            seed, 0,
        ));
        Signer::from_pkcs8(SignatureInfo::new("440", "v1"), &pkcs8).unwrap()
    };
    assert_eq!(seeded(1).public_key(), seeded(1).public_key());
    assert_ne!(seeded(1).public_key(), seeded(2).public_key());
    assert_ne!(build_zip(&f, &[&seeded(1)]), build_zip(&f, &[&seeded(2)]));
    // Keys stored before (ring wrote their PKCS#8) load, sign, and ring verifies them.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let ring_key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let old = Signer::from_pkcs8(SignatureInfo::new("440", "v0"), pkcs8.as_ref()).unwrap();
    use ring::signature::KeyPair;
    assert_eq!(
        old.public_key().to_spki_der()[26..],
        *ring_key.public_key().as_ref()
    );
    let got = read_zip(
        &build_zip(&file(vec![key(3, 2_800_000)], &old), &[&old]),
        ReadLimits::default(),
    )
    .unwrap();
    assert_eq!(got.verify(&[vkey(&old)]).unwrap(), vec![old.info.clone()]);
}
