//! The one risk rule, and the legacy trap it replaced.

use hotaru_protocol::ReportType;
use hotaru_protocol::risk::legacy::{self, LegacyConfiguration, LegacyExposure, Platform};
use hotaru_protocol::risk::{
    Assessment, ExposureWindow, Infectiousness, RiskConfiguration, ScanInstance, assess,
};
use proptest::prelude::*;

const TODAY: u32 = 20_000;

/// `minutes` of 5-minute scans at `db`, on `day`.
fn window(day: u32, db: u8, minutes: u32) -> ExposureWindow {
    ExposureWindow {
        day,
        report_type: ReportType::ConfirmedTest,
        days_since_onset: Some(0),
        scans: (0..minutes / 5)
            .map(|_| ScanInstance {
                typical_attenuation_db: db,
                min_attenuation_db: db,
                seconds_since_last_scan: 300,
            })
            .collect(),
    }
}

#[test]
fn the_default_is_cocoas_v2_configuration() {
    let c = RiskConfiguration::default();
    assert_eq!(c.attenuation_bucket_thresholds_db, [46, 60, 65]);
    let w = c.attenuation_bucket_weights;
    assert_eq!(
        [w.immediate, w.near, w.medium, w.other],
        [1.0, 2.5, 1.3, 0.01]
    );
    assert_eq!(c.daily_score_threshold, 1350.0);
    assert_eq!(c.daily_seconds_threshold, 900);
    for d in -14..=14 {
        let expect = if (-3..=10).contains(&d) {
            Infectiousness::High
        } else {
            Infectiousness::None
        };
        assert_eq!(c.infectiousness(Some(d)), expect, "day {d}");
    }
    c.validate().unwrap();
}

#[test]
fn the_configuration_is_data() {
    let c = RiskConfiguration::default();
    let json = serde_json::to_string_pretty(&c).unwrap();
    assert!(json.contains("\"dailyScoreThreshold\": 1350.0"), "{json}");
    let back: RiskConfiguration = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    // A changed threshold changes the verdict without a code change.
    let mut strict: RiskConfiguration = serde_json::from_str(&json).unwrap();
    strict.daily_seconds_threshold = 1800;
    let w = [window(TODAY, 55, 20)];
    assert!(assess(&c, &w, TODAY).notify());
    assert!(!assess(&strict, &w, TODAY).notify());
    // Unknown fields are refused, not ignored (a typo must not silently change the rule).
    let typo = json.replace("dailyScoreThreshold", "dailyScoreTreshold");
    assert!(serde_json::from_str::<RiskConfiguration>(&typo).is_err());
    let mut bad = c.clone();
    bad.attenuation_bucket_weights.near = f64::NAN;
    assert!(bad.validate().is_err());
    bad = c.clone();
    bad.attenuation_bucket_thresholds_db = [60, 46, 65];
    assert!(bad.validate().is_err());
}

#[test]
fn fifteen_minutes_near_is_a_high_risk_day_and_ten_is_not() {
    let c = RiskConfiguration::default();
    // Near (47..=60 dB): 900 s x 2.5 = 2250 >= 1350, and 900 s >= 900.
    let a = assess(&c, &[window(TODAY, 55, 15)], TODAY);
    assert!(a.notify());
    assert_eq!(a.days[0].score, 2250.0);
    // 10 minutes: score 1500 passes, but 600 s < 900.
    let a = assess(&c, &[window(TODAY, 55, 10)], TODAY);
    assert!(!a.notify());
    assert_eq!(a.days[0].scan_seconds, 600);
    // Far away (other, > 65 dB) for an hour: 3600 s x 0.01 = 36 < 1350.
    assert!(!assess(&c, &[window(TODAY, 80, 60)], TODAY).notify());
    // Medium for 20 minutes: 1200 x 1.3 = 1560.
    assert!(assess(&c, &[window(TODAY, 63, 20)], TODAY).notify());
    // Two short windows on one day add up.
    let w = [window(TODAY, 55, 5), window(TODAY, 55, 10)];
    assert!(assess(&c, &w, TODAY).notify());
    // ... but not across days.
    let w = [window(TODAY - 1, 55, 5), window(TODAY, 55, 10)];
    assert!(!assess(&c, &w, TODAY).notify());
}

#[test]
fn keys_outside_the_infectious_period_or_revoked_count_for_nothing() {
    let c = RiskConfiguration::default();
    let mut w = window(TODAY, 55, 30);
    w.days_since_onset = Some(-4);
    assert_eq!(
        assess(&c, std::slice::from_ref(&w), TODAY),
        Assessment::default()
    );
    w.days_since_onset = Some(11);
    assert!(!assess(&c, std::slice::from_ref(&w), TODAY).notify());
    w.days_since_onset = Some(10);
    assert!(assess(&c, std::slice::from_ref(&w), TODAY).notify());
    w.report_type = ReportType::Revoked;
    assert!(!assess(&c, std::slice::from_ref(&w), TODAY).notify());
}

#[test]
fn the_exposure_list_forgets_after_fourteen_days() {
    // COCOA's "N contacts" screen did not reset 14 days after the contact.
    let c = RiskConfiguration::default();
    let w = [window(TODAY, 55, 30)];
    assert!(assess(&c, &w, TODAY + 13).notify());
    assert!(!assess(&c, &w, TODAY + 14).notify());
    assert!(assess(&c, &w, TODAY + 14).days.is_empty());
}

fn arb_window() -> impl Strategy<Value = ExposureWindow> {
    (
        TODAY - 20..=TODAY,
        prop_oneof![Just(None), (-14i32..=14).prop_map(Some)],
        prop::sample::select(vec![
            ReportType::Unknown,
            ReportType::ConfirmedTest,
            ReportType::SelfReport,
            ReportType::Revoked,
        ]),
        prop::collection::vec((0u8..=120, 0u32..=600), 0..8),
    )
        .prop_map(|(day, dso, rt, scans)| ExposureWindow {
            day,
            report_type: rt,
            days_since_onset: dso,
            scans: scans
                .into_iter()
                .map(|(db, s)| ScanInstance {
                    typical_attenuation_db: db,
                    min_attenuation_db: db,
                    seconds_since_last_scan: s,
                })
                .collect(),
        })
}

proptest! {
    /// COCOA 1.1.4 notified on one rule and listed exposures by another. Here both are
    /// read from the one assessment: the notification fires exactly when the list is
    /// not empty, and every listed day meets the rule.
    #[test]
    fn notification_and_exposure_list_cannot_disagree(
        windows in prop::collection::vec(arb_window(), 0..30)
    ) {
        let c = RiskConfiguration::default();
        let a = assess(&c, &windows, TODAY);
        let listed: Vec<_> = a.exposures().collect();
        prop_assert_eq!(a.notify(), !listed.is_empty());
        for d in &a.days {
            let meets = d.score >= c.daily_score_threshold
                && d.scan_seconds >= c.daily_seconds_threshold;
            prop_assert_eq!(d.high_risk, meets);
            prop_assert_eq!(listed.iter().any(|l| l.day == d.day), meets);
        }
        // The verdict does not depend on the order the windows came in.
        let mut rev = windows.clone();
        rev.reverse();
        let b = assess(&c, &rev, TODAY);
        prop_assert_eq!(
            a.exposures().map(|d| d.day).collect::<Vec<_>>(),
            b.exposures().map(|d| d.day).collect::<Vec<_>>()
        );
    }
}

#[test]
fn legacy_cocoa_configuration() {
    let c = LegacyConfiguration::default();
    assert_eq!(c.minimum_risk_score, 21);
    // 20 minutes at 50 dB from a key with transmission risk 4: 4 x 1 x 1 x 7 = 28.
    let e = LegacyExposure {
        attenuation_db: 50,
        duration_minutes: 20,
        days_since_last_exposure: 2,
        transmission_risk_level: 4,
    };
    assert_eq!(legacy::risk_score(&c, e, Platform::Android), 28);
    assert!(legacy::notifies(&c, e, Platform::Android));
    assert!(legacy::notifies(&c, e, Platform::Ios));
    // 15 minutes or less scores 0 on COCOA's duration table.
    let short = LegacyExposure {
        duration_minutes: 15,
        ..e
    };
    assert!(!legacy::notifies(&c, short, Platform::Ios));
}

/// COCOA's 2020 Android failure: keys uploaded with transmission risk level 0, scored
/// the Android way (level 0 counts as 1) against a minimum risk score of 21, can never
/// notify anyone, however close and long the contact. The same keys with any level
/// 1..=8 do notify, so the loop below is not vacuous. Hotaru's server never publishes
/// level 0 (the server domain enforces it).
#[test]
fn cocoa_android_trap_transmission_risk_zero_never_notifies() {
    let c = LegacyConfiguration::default();
    let mut notified_with_a_real_level = 0;
    for attenuation_db in 0..=255u8 {
        for duration_minutes in (0..=120).step_by(5) {
            for days_since_last_exposure in 0..=14 {
                let e = LegacyExposure {
                    attenuation_db,
                    duration_minutes,
                    days_since_last_exposure,
                    transmission_risk_level: 0,
                };
                assert!(
                    legacy::risk_score(&c, e, Platform::Android) <= 8,
                    "{e:?} scores above 8 on Android"
                );
                assert!(!legacy::notifies(&c, e, Platform::Android), "{e:?}");
                for level in 1..=8 {
                    let real = LegacyExposure {
                        transmission_risk_level: level,
                        ..e
                    };
                    if legacy::notifies(&c, real, Platform::Android) {
                        notified_with_a_real_level += 1;
                    }
                }
            }
        }
    }
    assert!(
        notified_with_a_real_level > 10_000,
        "{notified_with_a_real_level}"
    );
    // iOS indexed the table with level 0 and so did notify: the platforms disagreed.
    let e = LegacyExposure {
        attenuation_db: 30,
        duration_minutes: 30,
        days_since_last_exposure: 1,
        transmission_risk_level: 0,
    };
    assert!(legacy::notifies(&c, e, Platform::Ios));
    assert!(!legacy::notifies(&c, e, Platform::Android));
}

/// The two ways a phone can score, as JSON: a v2 configuration, or COCOA's 2020 v1 on
/// Android, whose keys at level 0 can never reach the minimum score of 21.
#[test]
fn scoring_is_a_v2_configuration_or_cocoas_v1_on_a_platform() {
    use hotaru_protocol::risk::Scoring;
    use hotaru_protocol::risk::legacy::{LegacyExposure, LegacyScoring};
    let v2 = serde_json::to_vec(&RiskConfiguration::default()).unwrap();
    assert_eq!(
        serde_json::from_slice::<Scoring>(&v2).unwrap(),
        Scoring::Windows(RiskConfiguration::default())
    );
    let android = LegacyScoring::cocoa_2020_android();
    let json = serde_json::to_vec(&android).unwrap();
    let back: Scoring = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, Scoring::Legacy(android.clone()));
    back.validate().unwrap();
    // 30 minutes at 50 dB, yesterday, published at level 4.
    let close = LegacyExposure {
        attenuation_db: 50,
        duration_minutes: 30,
        days_since_last_exposure: 1,
        transmission_risk_level: 4,
    };
    assert!(!android.high_risk(android.score(close)), "the 2020 trap");
    assert!(android.score(close) <= 8);
    let fixed = LegacyScoring {
        transmission_risk_level: None,
        ..android
    };
    assert!(
        fixed.high_risk(fixed.score(close)),
        "{}",
        fixed.score(close)
    );
    let bad = br#"{"legacyConfiguration": {"minimumRiskScore": 1, "attenuationScores": [1,1,1,1,1,1,1,1], "daysSinceLastExposureScores": [1,1,1,1,1,1,1,1], "durationScores": [1,1,1,1,1,1,1,1], "transmissionRiskScores": [1,1,1,1,1,1,1,1], "durationAtAttenuationThresholdsDb": [50, 70]}, "platform": "ios", "transmissionRiskLevel": 9}"#;
    let s: Scoring = serde_json::from_slice(bad).unwrap();
    assert!(s.validate().is_err());
    assert!(serde_json::from_slice::<Scoring>(b"{\"platform\": \"ios\"}").is_err());
}
