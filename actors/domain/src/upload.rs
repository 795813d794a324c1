//! Validation of uploaded keys: each bad key is dropped with a reason; the rest go on.

use std::collections::{HashMap, HashSet};

use hotaru_events::UnixMillis;
use hotaru_events::domain::{CaseBasis, DiagnosisKey, DroppedKey, KeyRejection, UploadedKey};
use hotaru_protocol::{EnIntervalNumber, ReportType, Tek};

use crate::policy::{DAY_MS, RegistrationPolicy};

/// Intervals per day, and milliseconds per interval.
const PERIOD: u32 = hotaru_events::INTERVALS_PER_DAY;
use hotaru_events::INTERVAL_MS;

/// A key as the device sent it, before any check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubmittedKey {
    pub key_data: Vec<u8>,
    pub rolling_start: u32,
    pub rolling_period: u32,
    pub transmission_risk: Option<i32>,
    pub report_type: Option<i32>,
    pub days_since_onset: Option<i32>,
}

/// The verdict on an upload's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatedKeys {
    pub accepted: Vec<UploadedKey>,
    pub dropped: Vec<DroppedKey>,
}

fn basis_day(basis: CaseBasis) -> u32 {
    match basis {
        CaseBasis::SymptomOnset(d) | CaseBasis::Sample(d) => d.0,
    }
}

/// Checks every key against the policy, the case and the time of upload. The server, not
/// the device, sets transmission risk, report type and days since onset.
pub fn validate_keys(
    policy: &RegistrationPolicy,
    basis: CaseBasis,
    now: UnixMillis,
    keys: &[SubmittedKey],
) -> ValidatedKeys {
    validate_keys_after(policy, basis, now, &[], keys)
}

/// [`validate_keys`] for keys that join an upload made before (a revision): the earlier
/// keys count against every rule as if they came first in the same request (the number of
/// keys, duplicates, keys per rolling start, overlapping periods), so revisions cannot add
/// up to more than one upload may hold. The earlier keys themselves are not judged again.
pub fn validate_keys_after(
    policy: &RegistrationPolicy,
    basis: CaseBasis,
    now: UnixMillis,
    earlier: &[DiagnosisKey],
    keys: &[SubmittedKey],
) -> ValidatedKeys {
    let now_interval = (now.0 / INTERVAL_MS) as u32;
    let oldest_start = (now_interval / PERIOD).saturating_sub(policy.max_key_age_days) * PERIOD;
    let infectious_from = basis_day(basis).saturating_sub(policy.infectious_days_before) * PERIOD;
    let mut out = ValidatedKeys::default();
    let mut seen = HashSet::new();
    let mut per_start: HashMap<u32, usize> = HashMap::new();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for k in earlier {
        let start = k.rolling_start.0;
        seen.insert(k.tek.as_bytes().to_vec());
        *per_start.entry(start).or_default() += 1;
        ranges.push((start, start.saturating_add(k.rolling_period)));
    }
    for (index, k) in keys.iter().enumerate() {
        let drop = |reason| DroppedKey {
            index: u16::try_from(index).unwrap_or(u16::MAX),
            reason,
        };
        let end = k.rolling_start.saturating_add(k.rolling_period);
        let verdict = if earlier.len() + index >= policy.max_keys_per_upload {
            Err(KeyRejection::TooManyKeys)
        } else if k.key_data.len() != 16 {
            Err(KeyRejection::KeyLength)
        } else if !(1..=PERIOD).contains(&k.rolling_period) {
            Err(KeyRejection::RollingPeriod)
        } else if k.rolling_start > now_interval {
            Err(KeyRejection::StartsInFuture)
        } else if k.rolling_start < oldest_start {
            Err(KeyRejection::TooOld)
        } else if k.transmission_risk.is_some_and(|t| !(0..=8).contains(&t))
            || k.report_type.is_some_and(|t| !(0..=5).contains(&t))
            || k.days_since_onset.is_some_and(|d| !(-14..=14).contains(&d))
        {
            Err(KeyRejection::OutOfRange)
        } else if seen.contains(&k.key_data) {
            Err(KeyRejection::Duplicate)
        } else if per_start.get(&k.rolling_start).copied().unwrap_or(0)
            >= policy.max_keys_same_start
        {
            Err(KeyRejection::TooManySameStart)
        } else if ranges
            .iter()
            .any(|&(s, e)| s != k.rolling_start && k.rolling_start < e && s < end)
        {
            Err(KeyRejection::Overlaps)
        } else if end <= infectious_from {
            Err(KeyRejection::BeforeInfectiousPeriod)
        } else {
            Ok(())
        };
        if let Err(reason) = verdict {
            out.dropped.push(drop(reason));
            continue;
        }
        seen.insert(k.key_data.clone());
        *per_start.entry(k.rolling_start).or_default() += 1;
        ranges.push((k.rolling_start, end));
        let key_day = k.rolling_start / PERIOD;
        let dso = i64::from(key_day) - i64::from(basis_day(basis));
        let end_ms = u64::from(end) * INTERVAL_MS;
        // Still valid at upload: hold it until well after it has expired, so that no one
        // can link the published key to RPIs broadcast after the upload.
        let release_at = if end_ms > now.0 {
            UnixMillis(end_ms + policy.hold_after_expiry_ms)
        } else {
            now
        };
        out.accepted.push(UploadedKey {
            key: DiagnosisKey {
                tek: Tek::from_bytes(k.key_data[..].try_into().expect("checked: 16 bytes")),
                rolling_start: EnIntervalNumber(k.rolling_start),
                rolling_period: k.rolling_period,
                transmission_risk_level: policy.transmission_risk,
                report_type: ReportType::ConfirmedTest,
                days_since_onset: Some(dso.clamp(-14, 14) as i32),
            },
            release_at,
        });
    }
    out
}

/// The first interval of `day`'s UTC day, for tests and tools.
pub fn day_start_interval(now: UnixMillis) -> u32 {
    ((now.0 / DAY_MS) as u32) * PERIOD
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotaru_events::domain::Day;

    const NOW_DAY: u32 = 20_000;
    /// 12:00 UTC on day 20,000.
    const NOW: UnixMillis = UnixMillis(NOW_DAY as u64 * DAY_MS + 12 * 3_600_000);

    fn key(seed: u8, day: u32) -> SubmittedKey {
        SubmittedKey {
            key_data: vec![seed; 16],
            rolling_start: day * PERIOD,
            rolling_period: PERIOD,
            transmission_risk: None,
            report_type: None,
            days_since_onset: None,
        }
    }

    fn run(keys: &[SubmittedKey]) -> ValidatedKeys {
        validate_keys(
            &RegistrationPolicy::default(),
            CaseBasis::SymptomOnset(Day(NOW_DAY - 3)),
            NOW,
            keys,
        )
    }

    fn reasons(v: &ValidatedKeys) -> Vec<(u16, KeyRejection)> {
        v.dropped.iter().map(|d| (d.index, d.reason)).collect()
    }

    #[test]
    fn good_keys_pass_and_get_the_servers_metadata() {
        let v = run(&[key(1, NOW_DAY - 1), key(2, NOW_DAY - 5)]);
        assert!(v.dropped.is_empty(), "{v:?}");
        let k = v.accepted[0].key;
        assert_eq!(k.transmission_risk_level, 4);
        assert_ne!(k.transmission_risk_level, 0, "never the Android trap");
        assert_eq!(k.report_type, ReportType::ConfirmedTest);
        assert_eq!(k.days_since_onset, Some(2));
        assert_eq!(v.accepted[1].key.days_since_onset, Some(-2));
        assert_eq!(
            v.accepted[0].release_at, NOW,
            "a past key is releasable at once"
        );
    }

    #[test]
    fn todays_key_is_held_until_two_hours_after_it_expires() {
        let v = run(&[key(1, NOW_DAY)]);
        let end = u64::from((NOW_DAY + 1) * PERIOD) * INTERVAL_MS;
        assert_eq!(v.accepted[0].release_at, UnixMillis(end + 2 * 3_600_000));
    }

    #[test]
    fn each_bad_key_is_dropped_with_its_reason() {
        let mut short = key(1, NOW_DAY - 1);
        short.key_data.pop();
        let mut period = key(2, NOW_DAY - 2);
        period.rolling_period = 145;
        let mut zero = key(3, NOW_DAY - 2);
        zero.rolling_period = 0;
        let future = SubmittedKey {
            rolling_start: NOW_DAY * PERIOD + 73,
            ..key(4, 0)
        };
        let old = key(5, NOW_DAY - 15);
        let mut risk = key(6, NOW_DAY - 3);
        risk.transmission_risk = Some(9);
        let mut rt = key(7, NOW_DAY - 3);
        rt.report_type = Some(6);
        let mut dso = key(8, NOW_DAY - 3);
        dso.days_since_onset = Some(15);
        let v = run(&[
            short,
            period,
            zero,
            future,
            old,
            risk,
            rt,
            dso,
            key(9, NOW_DAY - 4),
        ]);
        assert_eq!(
            reasons(&v),
            [
                (0, KeyRejection::KeyLength),
                (1, KeyRejection::RollingPeriod),
                (2, KeyRejection::RollingPeriod),
                (3, KeyRejection::StartsInFuture),
                (4, KeyRejection::TooOld),
                (5, KeyRejection::OutOfRange),
                (6, KeyRejection::OutOfRange),
                (7, KeyRejection::OutOfRange),
            ]
        );
        assert_eq!(v.accepted.len(), 1, "a partial success");
    }

    #[test]
    fn at_most_thirty_keys_and_three_per_start_and_no_overlaps_or_duplicates() {
        // 3 keys may share a start (e.g. after a key reset); a 4th may not.
        let same: Vec<_> = (0..4).map(|i| key(i, NOW_DAY - 1)).collect();
        assert_eq!(reasons(&run(&same)), [(3, KeyRejection::TooManySameStart)]);
        // A key starting mid-day overlaps the whole-day key of that day.
        let mut mid = key(20, NOW_DAY - 1);
        mid.rolling_start += 10;
        assert_eq!(
            reasons(&run(&[key(21, NOW_DAY - 1), mid])),
            [(1, KeyRejection::Overlaps)]
        );
        assert_eq!(
            reasons(&run(&[key(22, NOW_DAY - 1), key(22, NOW_DAY - 2)])),
            [(1, KeyRejection::Duplicate)]
        );
        let many: Vec<_> = (0..32u8)
            .map(|i| SubmittedKey {
                rolling_start: (NOW_DAY - 1) * PERIOD + u32::from(i) * 4,
                rolling_period: 4,
                ..key(100 + i, 0)
            })
            .collect();
        let v = run(&many);
        assert_eq!(v.accepted.len(), 30);
        assert_eq!(
            reasons(&v),
            [
                (30, KeyRejection::TooManyKeys),
                (31, KeyRejection::TooManyKeys)
            ]
        );
    }

    /// A revision's keys are judged together with the upload's earlier keys: revisions
    /// cannot add up to more keys, more keys per start, or overlapping periods, than one
    /// upload may hold.
    #[test]
    fn a_revision_counts_the_earlier_keys_against_every_rule() {
        let policy = RegistrationPolicy::default();
        let basis = CaseBasis::SymptomOnset(Day(NOW_DAY - 3));
        let after = |earlier: &[SubmittedKey], keys: &[SubmittedKey]| {
            let earlier: Vec<DiagnosisKey> = run(earlier).accepted.iter().map(|k| k.key).collect();
            validate_keys_after(&policy, basis, NOW, &earlier, keys)
        };
        // 30 short keys uploaded: not one more, however it is sent.
        let short = |i: u8| SubmittedKey {
            rolling_start: (NOW_DAY - 1) * PERIOD + u32::from(i) * 4,
            rolling_period: 4,
            ..key(100 + i, 0)
        };
        let thirty: Vec<_> = (0..30).map(short).collect();
        assert_eq!(run(&thirty).accepted.len(), 30);
        assert_eq!(
            reasons(&after(&thirty, &[key(1, NOW_DAY - 5)])),
            [(0, KeyRejection::TooManyKeys)]
        );
        // A day's fourth key, a key overlapping an earlier one, an earlier key again.
        let three: Vec<_> = (0..3).map(|i| key(i, NOW_DAY - 1)).collect();
        assert_eq!(
            reasons(&after(&three, &[key(9, NOW_DAY - 1)])),
            [(0, KeyRejection::TooManySameStart)]
        );
        let mut mid = key(20, NOW_DAY - 2);
        mid.rolling_start += 10;
        assert_eq!(
            reasons(&after(&[key(21, NOW_DAY - 2)], &[mid])),
            [(0, KeyRejection::Overlaps)]
        );
        assert_eq!(
            reasons(&after(&[key(22, NOW_DAY - 2)], &[key(22, NOW_DAY - 4)])),
            [(0, KeyRejection::Duplicate)]
        );
        // What fits is accepted, with the server's metadata.
        let v = after(&three, &[key(30, NOW_DAY - 2)]);
        assert!(v.dropped.is_empty(), "{v:?}");
        assert_eq!(v.accepted.len(), 1);
    }

    #[test]
    fn keys_before_the_infectious_period_are_not_published() {
        // Onset on day N-3: keys from day N-5 on count; N-6 and older do not.
        let v = run(&[
            key(1, NOW_DAY - 5),
            key(2, NOW_DAY - 6),
            key(3, NOW_DAY - 10),
        ]);
        assert_eq!(v.accepted.len(), 1);
        assert_eq!(
            reasons(&v),
            [
                (1, KeyRejection::BeforeInfectiousPeriod),
                (2, KeyRejection::BeforeInfectiousPeriod)
            ]
        );
        // Asymptomatic: the sample date counts the same way, and the days are configurable.
        let policy = RegistrationPolicy {
            infectious_days_before: 5,
            ..RegistrationPolicy::default()
        };
        let v = validate_keys(
            &policy,
            CaseBasis::Sample(Day(NOW_DAY - 3)),
            NOW,
            &[key(2, NOW_DAY - 6), key(3, NOW_DAY - 9)],
        );
        assert_eq!(v.accepted.len(), 1);
    }
}
