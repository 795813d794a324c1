//! Matching diagnosis keys against a device's observations, through to the risk rule.

use hotaru_protocol::matching::{Matcher, Observation, derivation_floor};
use hotaru_protocol::risk::{RiskConfiguration, assess};
use hotaru_protocol::{DiagnosisKey, EnIntervalNumber, Metadata, Tek};

const DAY_START: u32 = 2_800_000 - 2_800_000 % 144; // an interval at 00:00 UTC

fn tek(n: u32) -> Tek {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_le_bytes());
    b[4..8].copy_from_slice(&(n.wrapping_mul(2_654_435_761)).to_le_bytes());
    Tek::from_bytes(b)
}

/// What a phone broadcasting `tek` sends during `interval`, heard at `at` with `rssi`.
fn heard(tek: Tek, interval: u32, at: u64, rssi: i8, tx: i8) -> Observation {
    let rpi = tek.rpik().rpi(EnIntervalNumber(interval));
    Observation {
        rpi,
        aem: tek.aemk().encrypt(&rpi, Metadata::v1_0(tx)),
        at,
        rssi_dbm: rssi,
        peak_rssi_dbm: rssi,
        seconds_since_last_scan: 300,
    }
}

fn at(interval: u32, plus: u64) -> u64 {
    u64::from(interval) * 600 + plus
}

/// 5,000 observations of 200 strangers' phones over 14 days.
fn noise() -> Vec<Observation> {
    (0..5_000u32)
        .map(|i| {
            let interval = DAY_START - 13 * 144 + (i * 7) % (14 * 144);
            heard(tek(1_000_000 + i % 200), interval, at(interval, 30), -70, 0)
        })
        .collect()
}

#[test]
fn finds_the_contact_among_strangers_and_scores_it() {
    let patient = tek(7);
    let mut obs = noise();
    // 20 minutes next to the patient: 4 scans, 5 minutes apart, at about 55 dB.
    let i0 = DAY_START + 60; // 10:00 UTC
    for s in 0..4u32 {
        let interval = i0 + s / 2;
        obs.push(heard(
            patient,
            interval,
            at(i0, u64::from(s) * 300),
            -60,
            -5,
        ));
    }
    let matcher = Matcher::new(obs);
    let mut keys: Vec<DiagnosisKey> = (0..500)
        .map(|n| DiagnosisKey::daily(tek(50_000 + n), EnIntervalNumber(DAY_START)))
        .collect();
    let mut k = DiagnosisKey::daily(patient, EnIntervalNumber(DAY_START));
    k.days_since_onset = Some(1);
    keys.insert(123, k);

    let matches = matcher.match_keys(&keys);
    assert_eq!(matches.len(), 4);
    for m in &matches {
        assert_eq!(m.key, 123);
        assert_eq!(m.metadata, Metadata::v1_0(-5));
        assert_eq!(m.attenuation_db, 55, "tx -5 dBm, rssi -60 dBm");
    }
    let windows = matcher.exposure_windows(&keys, &matches);
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].scans.len(), 4);
    assert_eq!(windows[0].day, DAY_START / 144);
    assert_eq!(windows[0].days_since_onset, Some(1));
    let a = assess(&RiskConfiguration::default(), &windows, DAY_START / 144);
    assert!(a.notify(), "{a:?}");
    assert_eq!(a.days[0].scan_seconds, 1200);
}

#[test]
fn an_rpi_heard_more_than_two_hours_off_its_interval_does_not_match() {
    let patient = tek(9);
    let interval = DAY_START + 30;
    let obs = vec![
        heard(patient, interval, at(interval + 12, 599), -60, 0), // +2 h, still inside
        heard(patient, interval, at(interval - 12, 0), -60, 0),   // -2 h, inside
        heard(patient, interval, at(interval + 13, 0), -60, 0),   // replayed 2h10 later
        heard(patient, interval, at(interval - 13, 599), -60, 0), // too early
    ];
    let matcher = Matcher::new(obs);
    let keys = [DiagnosisKey::daily(patient, EnIntervalNumber(DAY_START))];
    let got: Vec<usize> = matcher
        .match_keys(&keys)
        .iter()
        .map(|m| m.observation)
        .collect();
    assert_eq!(got, [0, 1]);
}

#[test]
fn only_the_keys_own_intervals_match() {
    let patient = tek(11);
    // Heard on the day after the key's day: the RPIs differ, nothing matches.
    let next_day = DAY_START + 144 + 5;
    let obs = vec![heard(patient, next_day, at(next_day, 0), -60, 0)];
    let matcher = Matcher::new(obs);
    assert!(
        matcher
            .match_keys(&[DiagnosisKey::daily(patient, EnIntervalNumber(DAY_START))])
            .is_empty()
    );
    // A key valid only for the first 10 intervals of its day does not cover interval 20.
    let obs = vec![heard(
        patient,
        DAY_START + 20,
        at(DAY_START + 20, 0),
        -60,
        0,
    )];
    let matcher = Matcher::new(obs);
    let mut short = DiagnosisKey::daily(patient, EnIntervalNumber(DAY_START));
    short.rolling_period = 10;
    assert!(matcher.match_keys(&[short]).is_empty());
    short.rolling_period = 21;
    assert_eq!(matcher.match_keys(&[short]).len(), 1);
}

#[test]
fn long_contacts_split_into_thirty_minute_windows() {
    let patient = tek(13);
    let i0 = DAY_START + 40;
    // 70 minutes of scans every 5 minutes: 14 scans -> windows of 6, 6, 2.
    let obs: Vec<_> = (0..14u32)
        .map(|s| heard(patient, i0 + s / 2, at(i0, u64::from(s) * 300), -50, 0))
        .collect();
    let matcher = Matcher::new(obs);
    let keys = [DiagnosisKey::daily(patient, EnIntervalNumber(DAY_START))];
    let windows = matcher.exposure_windows(&keys, &matcher.match_keys(&keys));
    assert_eq!(
        windows.iter().map(|w| w.scans.len()).collect::<Vec<_>>(),
        [6, 6, 2]
    );
}

#[test]
fn parallel_matching_gives_the_same_matches_in_the_same_order() {
    let mut obs = noise();
    let patients: Vec<Tek> = (0..40).map(|n| tek(300 + n)).collect();
    for (n, p) in patients.iter().enumerate() {
        let interval = DAY_START + n as u32;
        obs.push(heard(*p, interval, at(interval, 0), -55, 0));
    }
    let matcher = Matcher::new(obs);
    let mut keys: Vec<DiagnosisKey> = (0..3000)
        .map(|n| DiagnosisKey::daily(tek(80_000 + n), EnIntervalNumber(DAY_START)))
        .collect();
    for (n, p) in patients.iter().enumerate() {
        keys.insert(n * 70, DiagnosisKey::daily(*p, EnIntervalNumber(DAY_START)));
    }
    let one = matcher.match_keys(&keys);
    assert_eq!(one.len(), 40);
    for threads in [2, 3, 8] {
        assert_eq!(
            matcher.match_keys_parallel(&keys, threads),
            one,
            "{threads} threads"
        );
    }
    assert!(matcher.match_keys_parallel(&[], 4).is_empty());
}

#[test]
fn no_observations_no_matches_and_the_floor_runs() {
    let matcher = Matcher::new(Vec::new());
    let keys: Vec<_> = (0..10)
        .map(|n| DiagnosisKey::daily(tek(n), EnIntervalNumber(DAY_START)))
        .collect();
    assert!(matcher.match_keys(&keys).is_empty());
    assert_ne!(derivation_floor(&keys), derivation_floor(&keys[1..]));
}

/// The shared per-batch index gives exactly the per-device matches: the same key twice in
/// the batch, an observation heard in two intervals' tolerance, one heard too late, and
/// keys with short rolling periods.
#[test]
fn the_shared_key_index_matches_as_each_device_would() {
    let mut obs = noise();
    let patients: Vec<Tek> = (0..30).map(|n| tek(500 + n)).collect();
    for (n, p) in patients.iter().enumerate() {
        let interval = DAY_START + 3 * n as u32;
        obs.push(heard(*p, interval, at(interval, 0), -55, 0));
        obs.push(heard(*p, interval + 1, at(interval + 1, 10), -60, 4));
        // Heard 3 hours after its interval: outside the tolerance.
        obs.push(heard(*p, interval + 2, at(interval + 20, 0), -60, 4));
    }
    let mut keys: Vec<DiagnosisKey> = (0..2000)
        .map(|n| DiagnosisKey::daily(tek(90_000 + n), EnIntervalNumber(DAY_START)))
        .collect();
    for (n, p) in patients.iter().enumerate() {
        let mut k = DiagnosisKey::daily(*p, EnIntervalNumber(DAY_START));
        if n % 5 == 0 {
            k.rolling_period = 3 * n as u32 + 2;
        }
        keys.insert(n * 60, k);
    }
    keys.push(keys[60]);
    let index = hotaru_protocol::matching::KeyIndex::build(&keys);
    assert_eq!(index.keys(), keys.len());
    for sample in [obs.clone(), obs[4_990..].to_vec(), Vec::new()] {
        let matcher = Matcher::new(sample);
        let own = matcher.match_keys(&keys);
        assert_eq!(matcher.match_indexed(&keys, &index), own);
    }
    assert!(!Matcher::new(obs).match_keys(&keys).is_empty());
}
