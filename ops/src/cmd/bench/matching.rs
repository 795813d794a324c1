//! `hotaru bench match`: diagnosis keys matched per second per core against the floor.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::*;

#[derive(Args, Debug)]
pub(crate) struct MatchBench {
    /// Diagnosis keys per measurement.
    #[arg(long, default_value_t = 200_000)]
    keys: usize,
    /// Observed RPIs on the device (14 days of scans).
    #[arg(long, default_value_t = 5_000)]
    observations: usize,
    /// Rounds (floor and matcher alternate; the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Also measure matching split over this many threads (figures per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub(super) fn match_bench(b: MatchBench) -> anyhow::Result<ExitCode> {
    use hotaru_protocol::matching::{Matcher, Observation, derivation_floor};
    use hotaru_protocol::{DiagnosisKey, EnIntervalNumber, Metadata, Tek};
    use rand::RngCore;

    let mut rng = rand::rng();
    let mut tek = || {
        let mut k = [0u8; 16];
        rng.fill_bytes(&mut k);
        Tek::from_bytes(k)
    };
    let today = EnIntervalNumber(2_900_000).day_start();
    let start = |n: usize| EnIntervalNumber(today.0 - 144 * (n % 14) as u32);
    // Observations: strangers' RPIs over 14 days, plus 10 contacts who are in the keys.
    let contacts: Vec<Tek> = (0..10).map(|_| tek()).collect();
    let mut obs = Vec::with_capacity(b.observations);
    for i in 0..b.observations {
        let (t, day) = match contacts.get(i) {
            Some(t) => (*t, start(i)),
            None => (tek(), start(i)),
        };
        let interval = EnIntervalNumber(day.0 + (i % 144) as u32);
        let rpi = t.rpik().rpi(interval);
        obs.push(Observation {
            rpi,
            aem: t.aemk().encrypt(&rpi, Metadata::v1_0(0)),
            at: interval.unix_seconds() + 60,
            rssi_dbm: -60,
            peak_rssi_dbm: -60,
            seconds_since_last_scan: 300,
        });
    }
    let mut keys: Vec<DiagnosisKey> = (0..b.keys)
        .map(|n| DiagnosisKey::daily(tek(), start(n)))
        .collect();
    for (i, c) in contacts.iter().enumerate().take(b.observations) {
        keys[i * (b.keys / 10).max(1) % b.keys.max(1)] = DiagnosisKey::daily(*c, start(i));
    }
    let matcher = Matcher::new(obs);
    let threads = b.threads.max(1);
    let (mut floor, mut ours, mut par) = (Vec::new(), Vec::new(), Vec::new());
    let mut found = 0;
    for round in 0..b.rounds.max(1) {
        let t = Instant::now();
        std::hint::black_box(derivation_floor(std::hint::black_box(&keys)));
        floor.push(keys.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        found = std::hint::black_box(matcher.match_keys(std::hint::black_box(&keys))).len();
        ours.push(keys.len() as f64 / t.elapsed().as_secs_f64());
        if threads > 1 {
            let t = Instant::now();
            std::hint::black_box(matcher.match_keys_parallel(&keys, threads));
            par.push(keys.len() as f64 / t.elapsed().as_secs_f64() / threads as f64);
        }
        eprintln!(
            "round {}: floor {:.0} keys/s, matcher {:.0} keys/s",
            round + 1,
            floor[round],
            ours[round]
        );
    }
    let (floor, ours) = (median(floor), median(ours));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "keys: {}, observed RPIs: {}, matches found: {found}, rounds: {} (median), one core",
        b.keys,
        b.observations,
        b.rounds.max(1)
    )?;
    writeln!(out, "{:<40} {:>14}", "measurement", "keys/s/core")?;
    writeln!(
        out,
        "{:<40} {:>14.0}",
        "floor (HKDF + 144 AES blocks per key)", floor
    )?;
    writeln!(out, "{:<40} {:>14.0}", "matcher", ours)?;
    if !par.is_empty() {
        writeln!(
            out,
            "{:<40} {:>14.0}",
            format!("matcher on {threads} threads, per core"),
            median(par)
        )?;
    }
    writeln!(out, "matcher cost / floor cost: {:.3}x", floor / ours)?;
    Ok(ExitCode::SUCCESS)
}
