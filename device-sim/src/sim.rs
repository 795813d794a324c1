//! The run: a population in a BLE world, its phones as device agents on shards, the
//! health centres and the operator over HTTP, day by day; then the figures against
//! ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use hotaru_actors::Arbiters;
use hotaru_device::{AgentConfig, GatewayClient, Scan, Sighting};
use hotaru_events::device::RegistrationOutcome;
use hotaru_events::domain::Day;
use hotaru_events::{Context, DomainEvent, ManualClock, UnixMillis};
use hotaru_log::{AnyLog, EventLog};
use hotaru_protocol::crypto::EnIntervalNumber;
use hotaru_protocol::export::{PublicKey, ReadLimits, read_zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::epidemic::{Epidemic, EpidemicConfig, Health};
use crate::figures::{Figures, GroundTruth, PairDay};
use crate::population::{Population, PopulationConfig};
use crate::shard::{self, PhoneSpec, Shard};
use crate::source::{Authority, FleetSource, HttpStats};
use crate::world;

const DAY_S: u64 = 86_400;

/// What a true close contact is: at most `metres` for at least `minutes` in a day.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct CloseContact {
    pub metres: f64,
    pub minutes: u32,
}

impl Default for CloseContact {
    fn default() -> Self {
        Self {
            metres: 1.0,
            minutes: 15,
        }
    }
}

/// Everything a run is drawn from. The same config and seed give the same figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimConfig {
    pub devices: u32,
    pub days: u32,
    pub seed: u64,
    /// The first simulated day (days since the epoch).
    pub start_day: u32,
    pub population: PopulationConfig,
    pub epidemic: EpidemicConfig,
    /// Share of confirmed app users who register their keys.
    pub registration_share: f64,
    pub close_contact: CloseContact,
    /// What the phones score with instead of the server's configuration (JSON).
    #[serde(skip)]
    pub scoring: Option<Vec<u8>>,
    /// The preset named on the command line, for the report.
    pub preset: Option<String>,
    /// Threads (arbiters) the shards run on.
    pub threads: usize,
    /// Phones per shard, at most.
    pub shard_size: usize,
    /// Share of phones that download the files over HTTP themselves each day (the rest
    /// read the fleet's one download, counted as cached).
    pub direct_share: f64,
    /// Share the per-batch key index between phones (no effect on the result).
    pub share_index: bool,
    /// Concurrent direct downloads per shard.
    pub concurrency: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            devices: 200,
            days: 14,
            seed: 1,
            start_day: 18_900, // 2021-09-30
            population: PopulationConfig::default(),
            epidemic: EpidemicConfig::default(),
            registration_share: 0.5,
            close_contact: CloseContact::default(),
            scoring: None,
            preset: None,
            threads: 1,
            shard_size: 5_000,
            direct_share: 0.0,
            share_index: true,
            concurrency: 32,
        }
    }
}

/// The server the fleet drives.
#[derive(Clone)]
pub struct Target {
    pub gateway: String,
    pub centre_key: String,
    pub operator_key: String,
    pub public_key: PublicKey,
    /// The in-process server's clock, moved with the simulation's; `None` for a running
    /// server, whose clock is its own (the simulated days then end yesterday).
    pub server_clock: Option<ManualClock>,
}

/// Where a run is.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// Days done, of `days`.
    pub day: u32,
    pub days: u32,
    pub phase: &'a str,
    /// Phones through today's check, of `phones`.
    pub phones_checked: u64,
    pub phones: u64,
}

/// Progress as the run goes.
pub type Progress<'a> = &'a mut dyn FnMut(Step<'_>);

/// The models a simulated phone can be (the spec-vector entry is not a phone).
fn phone_models() -> Vec<u16> {
    hotaru_device::reference::models()
        .iter()
        .enumerate()
        .filter(|(_, m)| m.name != "Spec vector phone")
        .map(|(i, _)| i as u16)
        .collect()
}

fn day_rng(seed: u64, what: u64, day: u32) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed ^ what.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (u64::from(day) << 32),
    )
}

fn date(day: u32) -> String {
    jiff::Timestamp::from_second(i64::from(day) * DAY_S as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Runs the fleet against `target`, its agents' events going to `fleet_log`.
pub async fn run(
    config: &SimConfig,
    target: &Target,
    fleet_log: AnyLog,
    progress: Progress<'_>,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let models = phone_models();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let people = ((f64::from(config.devices) / config.population.uptake.max(0.01)).round() as u32)
        .max(config.devices);
    let mut population =
        Population::generate(&mut rng, people, &config.population, models.len() as u16);
    for p in &mut population.people {
        p.model = models[usize::from(p.model) % models.len()];
    }
    let mut epidemic = Epidemic::new(
        &mut rng,
        population.people.len(),
        config.start_day,
        config.epidemic.clone(),
    );
    let phones = population.phones.len();

    // Shards on arbiters; phone i on shard i % shards.
    let shards_n = phones
        .div_ceil(config.shard_size.max(1))
        .max(config.threads)
        .max(1)
        .min(phones.max(1));
    let arbiters = Arbiters::new(config.threads.max(1));
    let agent_config = AgentConfig {
        public_key: Some(target.public_key.clone()),
        os: "simulated".into(),
        scoring: config.scoring.clone().map(Arc::from),
        retry: hotaru_device::Retry {
            attempts: 4,
            first_wait: Duration::from_millis(50),
        },
        ..AgentConfig::default()
    };
    let shards: Vec<Addr<Shard>> = (0..shards_n)
        .map(|_| {
            let (log, seed, c) = (fleet_log.clone(), config.seed, agent_config.clone());
            arbiters.start(move |_| Shard::new(log, seed, c))
        })
        .collect();
    let locate = |phone: u32| ((phone as usize) % shards_n, (phone as usize) / shards_n);
    let first = UnixMillis(u64::from(config.start_day) * DAY_S * 1000);
    futures::future::join_all(shards.iter().enumerate().map(|(s, addr)| {
        let specs: Vec<PhoneSpec> = (0..phones as u32)
            .filter(|i| locate(*i).0 == s)
            .map(|i| {
                let person = &population.people[population.phones[i as usize] as usize];
                PhoneSpec {
                    index: i,
                    model: person.model,
                    bluetooth_on: person.bluetooth_on,
                }
            })
            .collect();
        addr.send(shard::Open {
            phones: specs,
            at: first,
        })
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;

    let stats = Arc::new(HttpStats::default());
    let client = GatewayClient::new(&target.gateway)?;
    let authority = Authority::new(
        &target.gateway,
        &target.centre_key,
        &target.operator_key,
        stats.clone(),
    );
    let cache = Arc::new(FleetSource::new(
        client.clone(),
        stats.clone(),
        config.share_index,
    ));
    let mut truth = GroundTruth::new(config.close_contact);
    let mut figures = Figures::new(config, people, phones as u32);
    let mut busy: BTreeMap<&'static str, Duration> = BTreeMap::new();
    // The RPI of each phone's first interval of each day: traces a published key back.
    let mut first_rpis: HashMap<[u8; 16], (u32, u32)> = HashMap::new();
    let mut registered: BTreeMap<u32, u32> = BTreeMap::new();
    let mut crashed: BTreeMap<u32, String> = BTreeMap::new();
    let tx: Vec<i8> = (0..phones)
        .map(|i| {
            hotaru_device::reference::model(population.people[population.phones[i] as usize].model)
                .tx_power_dbm
        })
        .collect();
    let correction: Vec<i8> = (0..phones)
        .map(|i| {
            hotaru_device::reference::model(population.people[population.phones[i] as usize].model)
                .rssi_correction_db
        })
        .collect();

    let mut phases: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut lap = Instant::now();
    let mut time = |name: &'static str, lap: &mut Instant| {
        *phases.entry(name).or_default() += lap.elapsed().as_secs_f64();
        *lap = Instant::now();
    };
    time("open", &mut lap);
    for d in 0..config.days {
        let day = config.start_day + d;
        let t0 = u64::from(day) * DAY_S;
        let at = |hour: u64| UnixMillis((t0 + hour * 3600) * 1000);
        let set_server = |hour: u64| {
            if let Some(c) = &target.server_clock {
                c.set(at(hour));
            }
        };

        // 09:00: health centres confirm; some of the confirmed register from their phone.
        progress(Step {
            day: d,
            days: config.days,
            phase: "registrations",
            phones_checked: 0,
            phones: phones as u64,
        });
        set_server(9);
        let phase = Instant::now();
        let mut reg_rng = day_rng(config.seed, 1, day);
        for (person, onset, symptomatic) in epidemic.confirmed_on(day) {
            figures.confirmed += 1;
            let Some(phone) = population.people[person as usize].phone else {
                continue;
            };
            if !reg_rng.random_bool(config.registration_share) || crashed.contains_key(&phone) {
                continue;
            }
            let basis = if symptomatic { onset } else { day - 1 };
            let number = match authority.issue_number(&date(basis), symptomatic, d).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "the health centre could not issue a number");
                    figures.numbers_failed += 1;
                    continue;
                }
            };
            let (s, local) = locate(phone);
            let outcome = shards[s]
                .send(shard::Register {
                    local,
                    number,
                    onset: Day(basis),
                    at: at(9),
                    day: d,
                    client: client.clone(),
                    stats: stats.clone(),
                })
                .await?;
            if let Some(RegistrationOutcome::Completed { accepted }) = outcome {
                registered.entry(phone).or_insert(day);
                figures.keys_accepted += u64::from(accepted);
            }
        }
        *busy.entry("PUT /v3/diagnosis").or_default() += phase.elapsed();
        time("registrations", &mut lap);

        // The day's advertisements.
        progress(Step {
            day: d,
            days: config.days,
            phase: "advertising",
            phones_checked: 0,
            phones: phones as u64,
        });
        let schedules: Vec<(u32, shard::Schedule)> =
            futures::future::join_all(shards.iter().map(|a| {
                a.send(shard::Advertise {
                    from: at(0),
                    until: at(24),
                })
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut schedule: Vec<shard::Schedule> = vec![shard::Schedule::default(); phones];
        for (i, s) in schedules {
            if let Some((from, rpi)) = s.first()
                && from == t0
            {
                first_rpis.insert(rpi, (i, day));
            }
            schedule[i as usize] = s;
        }
        time("advertising", &mut lap);

        // Contacts: ground truth, infection, and what the radios heard.
        progress(Step {
            day: d,
            days: config.days,
            phase: "contacts",
            phones_checked: 0,
            phones: phones as u64,
        });
        let weekday = (day + 3) % 7 < 5;
        let mut contact_rng = day_rng(config.seed, 2, day);
        let contacts = population.contacts(&mut contact_rng, t0, weekday);
        figures.contacts += contacts.len() as u64;
        let mut radio_rng = day_rng(config.seed, 3, day);
        // Each listener's scan times today, in unix seconds (u32 halves what a million
        // phones hold for the day).
        let mut scan_times: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut heard: HashMap<u32, BTreeMap<u64, Vec<Sighting>>> = HashMap::new();
        for c in &contacts {
            let (pa, pb) = (
                &population.people[c.a as usize],
                &population.people[c.b as usize],
            );
            truth.all_contact(c, config.close_contact);
            let (Some(a), Some(b)) = (pa.phone, pb.phone) else {
                continue;
            };
            let radios_on = pa.bluetooth_on && pb.bluetooth_on;
            let infected = |p: u32| matches!(epidemic.health[p as usize], Health::Infected { infected, .. } if infected <= day);
            truth.phone_contact((a, b), day, c, radios_on, [infected(c.a), infected(c.b)]);
            if !radios_on {
                continue;
            }
            let loss = world::contact_loss(&mut radio_rng, c.metres, c.setting, pa.carry, pb.carry);
            let end = c.start + u64::from(c.minutes) * 60;
            for (listener, speaker) in [(a, b), (b, a)] {
                let times = scan_times.entry(listener).or_insert_with(|| {
                    let mut r = day_rng(config.seed, 4 + u64::from(listener), day);
                    world::scan_times(&mut r, t0, t0 + DAY_S)
                        .into_iter()
                        .map(|t| u32::try_from(t).expect("unix seconds before 2106"))
                        .collect()
                });
                let from = times.partition_point(|t| u64::from(*t) < c.start);
                for t in times[from..]
                    .iter()
                    .map(|t| u64::from(*t))
                    .take_while(|t| *t < end)
                {
                    let Some(att) = world::scan_attenuation(&mut radio_rng, loss) else {
                        continue;
                    };
                    let Some((rpi, aem)) = schedule[speaker as usize].at(t) else {
                        continue;
                    };
                    heard
                        .entry(listener)
                        .or_default()
                        .entry(t)
                        .or_default()
                        .push(Sighting {
                            rpi,
                            aem,
                            rssi_dbm: world::rssi(
                                att,
                                tx[speaker as usize],
                                correction[listener as usize],
                            ),
                        });
                }
            }
        }
        truth.end_day();
        figures
            .infections_by_day
            .push(epidemic.spread(&mut contact_rng, day, &contacts));
        let mut per_shard: Vec<Vec<(usize, Vec<Scan>)>> = vec![Vec::new(); shards_n];
        let mut listeners: Vec<u32> = heard.keys().copied().collect();
        listeners.sort_unstable();
        for l in listeners {
            let mut h = heard.remove(&l).unwrap_or_default();
            // The scans that heard something, each after the (empty) scan before it: the
            // agent counts the time since the last scan from them, as a phone does.
            let times = &scan_times[&l];
            let mut scans: Vec<Scan> = Vec::with_capacity(2 * h.len());
            for (i, t) in times.iter().map(|t| u64::from(*t)).enumerate() {
                let Some(sightings) = h.remove(&t) else {
                    continue;
                };
                if let Some(prev) = i.checked_sub(1).map(|p| u64::from(times[p]))
                    && scans.last().is_none_or(|s| s.at.as_secs() != prev)
                {
                    scans.push(Scan {
                        at: UnixMillis(prev * 1000),
                        sightings: Vec::new(),
                    });
                }
                scans.push(Scan {
                    at: UnixMillis(t * 1000),
                    sightings,
                });
            }
            figures.sightings += scans.iter().map(|s| s.sightings.len() as u64).sum::<u64>();
            let (s, local) = locate(l);
            per_shard[s].push((local, scans));
        }
        futures::future::join_all(
            shards
                .iter()
                .zip(per_shard)
                .map(|(a, scans)| a.send(shard::Hear { scans })),
        )
        .await;
        time("recording", &mut lap);

        // 20:00: the operator publishes; 21:00: every phone checks.
        progress(Step {
            day: d,
            days: config.days,
            phase: "batch",
            phones_checked: 0,
            phones: phones as u64,
        });
        set_server(20);
        match authority.publish(d).await {
            Ok((files, keys)) => {
                figures.files_by_day.push(files as u32);
                figures.keys_by_day.push(keys);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the batch could not be published");
                figures.files_by_day.push(0);
                figures.keys_by_day.push(0);
                figures.batches_failed += 1;
            }
        }
        time("batch", &mut lap);
        progress(Step {
            day: d,
            days: config.days,
            phase: "checks",
            phones_checked: 0,
            phones: phones as u64,
        });
        set_server(21);
        let phase = Instant::now();
        if let Err(e) = cache.refresh(d).await {
            tracing::warn!(error = %e, "the fleet could not download today's files");
            figures.downloads_failed += 1;
        }
        let mut pending: futures::stream::FuturesUnordered<_> = shards
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let sent = a.send(shard::Check {
                    at: at(21),
                    day: d,
                    cached: cache.clone(),
                    client: client.clone(),
                    stats: stats.clone(),
                    direct_share: config.direct_share,
                    concurrency: config.concurrency,
                });
                async move { (i, sent.await) }
            })
            .collect();
        let mut outcomes: Vec<Option<shard::CheckOutcome>> = vec![None; shards_n];
        let mut checked = 0u64;
        while let Some((i, r)) = futures::StreamExt::next(&mut pending).await {
            checked += ((phones + shards_n - 1 - i) / shards_n) as u64;
            progress(Step {
                day: d,
                days: config.days,
                phase: "checks",
                phones_checked: checked,
                phones: phones as u64,
            });
            outcomes[i] = Some(r?);
        }
        // In shard order, whichever finished first.
        let outcomes: Vec<shard::CheckOutcome> = outcomes.into_iter().flatten().collect();
        *busy.entry("GET /exports/<file>").or_default() += phase.elapsed();
        *busy.entry("GET /exports/index.txt").or_default() += phase.elapsed();
        *busy.entry("GET /v1/exposure-configuration").or_default() += phase.elapsed();
        time("checks", &mut lap);
        let mut notified_today = 0;
        let mut guide: Vec<Vec<usize>> = vec![Vec::new(); shards_n];
        for o in outcomes {
            notified_today += o.notified.len() as u32;
            for (phone, _) in &o.notified {
                let (s, local) = locate(*phone);
                guide[s].push(local);
            }
            for (phone, e) in o.crashed {
                crashed.entry(phone).or_insert(e);
            }
        }
        // 21:30: the notified open the app and walk the guidance.
        for (s, phones) in guide.into_iter().enumerate() {
            if !phones.is_empty() {
                figures.guidance_screens += shards[s]
                    .send(shard::Guide {
                        phones,
                        at: UnixMillis((t0 + 21 * 3600 + 1800) * 1000),
                        seed: config.seed,
                    })
                    .await?;
            }
        }
        figures.notifications_by_day.push(notified_today);
        figures
            .registrations_by_day
            .push(registered.values().filter(|r| **r == day).count() as u32);
        progress(Step {
            day: d + 1,
            days: config.days,
            phase: "day done",
            phones_checked: 0,
            phones: phones as u64,
        });
    }
    for a in &shards {
        for (phone, e) in a.send(shard::TakeCrashed).await? {
            crashed.entry(phone).or_insert(e);
        }
    }
    let store_bytes: usize =
        futures::future::join_all(shards.iter().map(|a| a.send(shard::StoreBytes)))
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .sum();
    drop(shards);
    arbiters.stop();

    // The published keys, traced back to the phones that uploaded them.
    let mut published: BTreeSet<(u32, u32)> = BTreeSet::new();
    for (path, zip) in cache.files() {
        match read_zip(&zip, ReadLimits::default()).and_then(|e| {
            e.verify_with(&target.public_key)?;
            Ok(e)
        }) {
            Ok(e) => {
                figures.keys_published += e.file.keys.len() as u64;
                for k in &e.file.keys {
                    let rpi = k.tek.rpik().rpi(EnIntervalNumber(k.rolling_start.0));
                    if let Some(&(phone, day)) = first_rpis.get(&rpi.0) {
                        published.insert((phone, day));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(file = %path, error = %e, "a published file does not verify");
                figures.exports_unverifiable += 1;
            }
        }
    }
    // The floor the checks are measured against, in this run: deriving the RPIs of every
    // published key once (what each phone matching on its own would pay, per phone).
    let mut all_keys = Vec::new();
    for (_, zip) in cache.files() {
        if let Ok(e) = read_zip(&zip, ReadLimits::default()) {
            all_keys.extend(e.file.keys);
        }
    }
    let floor = Instant::now();
    std::hint::black_box(hotaru_protocol::matching::derivation_floor(&all_keys));
    figures.floor_derivation_seconds = floor.elapsed().as_secs_f64();
    figures.floor_keys = all_keys.len() as u64;
    time("tracing keys", &mut lap);
    figures.fleet_keys_published = published.len() as u64;
    figures.uploads_lost = figures.keys_accepted.saturating_sub(published.len() as u64);
    figures.phones_crashed = crashed.len() as u32;
    figures.crashes = crashed
        .into_iter()
        .take(10)
        .map(|(p, e)| format!("phone {p}: {e}"))
        .collect();
    figures.infected = epidemic
        .health
        .iter()
        .filter(|h| matches!(h, Health::Infected { .. }))
        .count() as u32;
    figures.store_bytes = store_bytes as u64;

    // What the phones recorded, read back from the fleet's log.
    let device_view = fold_fleet_log(&fleet_log).await?;
    figures.from_fleet_log(&device_view, &truth, &registered, &published);
    // The NHS app's outcome measures: notifications per index case who shared keys, and
    // the share of notified people infected after their contact.
    if figures.registrations > 0 {
        figures.notified_phones_per_registration =
            figures.phones_notified as f64 / figures.registrations as f64;
    }
    let later_infected = device_view
        .notified
        .iter()
        .filter(|(phone, days)| {
            let first_contact = days.keys().next().copied().unwrap_or(u32::MAX);
            matches!(
                epidemic.health[population.phones[**phone as usize] as usize],
                Health::Infected { infected, .. } if infected >= first_contact
            )
        })
        .count();
    if figures.phones_notified > 0 {
        figures.notified_later_infected = later_infected as f64 / figures.phones_notified as f64;
    }
    time("fleet log", &mut lap);
    figures.phase_seconds = phases.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    figures.http = stats.figures(&busy);
    figures.wall_seconds = started.elapsed().as_secs_f64();
    Ok(figures)
}

/// What the fleet's log says each phone did: notified days, registration outcomes,
/// files refused.
#[derive(Default)]
pub struct DeviceView {
    /// phone → contact day → the day it was notified.
    pub notified: BTreeMap<u32, BTreeMap<u32, u32>>,
    pub registrations: BTreeMap<&'static str, u32>,
    pub exports_refused: u64,
    pub events: u64,
}

/// The fleet's projection: folds every device event of the fleet's log.
pub async fn fold_fleet_log(log: &AnyLog) -> anyhow::Result<DeviceView> {
    let mut v = DeviceView::default();
    let mut from = 1;
    loop {
        let batch = log.read_all(Context::Device, from, 4096).await?;
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for c in &batch {
            let name = c.commit.stream.to_string();
            let Some(phone) = name
                .strip_prefix("device.p")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            for env in c.commit.envelopes() {
                let env = env?;
                v.events += 1;
                match env.event {
                    DomainEvent::ExposureNotified(n) => {
                        v.notified
                            .entry(phone)
                            .or_default()
                            .insert(n.day.0, env.occurred_at.day());
                    }
                    DomainEvent::RegistrationAttempted(r) => {
                        *v.registrations.entry(r.outcome.code()).or_default() += 1;
                    }
                    DomainEvent::ExportVerified(e)
                        if e.verdict != hotaru_events::device::ExportVerdict::Verified =>
                    {
                        v.exports_refused += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(v)
}

impl PairDay {
    pub fn close(&self, cc: CloseContact) -> bool {
        self.close_minutes >= cc.minutes
    }
}
