//! Ground truth and the figures of a run: notification precision and recall against
//! every true close contact, by distance band and setting; days from registration to
//! notification; what was lost or refused on the way.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::population::Contact;
use crate::sim::{CloseContact, DeviceView, SimConfig};
use crate::source::RouteFigures;
use crate::world::Setting;

/// What one phone's owner spent near another's on one day.
#[derive(Clone, Copy, Debug)]
pub struct PairDay {
    /// Minutes within the close-contact distance.
    pub close_minutes: u32,
    pub minutes: u32,
    pub min_metres: f64,
    /// The setting of the closest contact.
    pub setting: Setting,
    /// Both phones had Bluetooth on.
    pub radios_on: bool,
}

/// Every contact, whether or not a phone saw it.
pub struct GroundTruth {
    close: CloseContact,
    /// (listener phone, speaker phone, day) → what they spent near each other.
    pub phone_pairs: HashMap<(u32, u32, u32), PairDay>,
    today: HashMap<(u32, u32), u32>,
    /// Close contacts among everyone (person pairs and days), app or not.
    pub close_contacts_everyone: u64,
}

impl GroundTruth {
    pub fn new(close: CloseContact) -> Self {
        Self {
            close,
            phone_pairs: HashMap::new(),
            today: HashMap::new(),
            close_contacts_everyone: 0,
        }
    }

    pub fn all_contact(&mut self, c: &Contact, close: CloseContact) {
        if c.metres <= close.metres {
            *self.today.entry((c.a.min(c.b), c.a.max(c.b))).or_default() += c.minutes;
        }
    }

    pub fn end_day(&mut self) {
        let m = self.close.minutes;
        self.close_contacts_everyone += self.today.values().filter(|v| **v >= m).count() as u64;
        self.today.clear();
    }

    /// A contact between two phones' owners; kept for each direction whose speaker was
    /// infected by then (a registered case's published keys are all of such days).
    pub fn phone_contact(
        &mut self,
        (a, b): (u32, u32),
        day: u32,
        c: &Contact,
        radios_on: bool,
        speaker_infected: [bool; 2],
    ) {
        for (key, infected) in [
            ((a, b, day), speaker_infected[1]),
            ((b, a, day), speaker_infected[0]),
        ] {
            if !infected {
                continue;
            }
            let e = self.phone_pairs.entry(key).or_insert(PairDay {
                close_minutes: 0,
                minutes: 0,
                min_metres: f64::MAX,
                setting: c.setting,
                radios_on,
            });
            e.minutes += c.minutes;
            if c.metres <= self.close.metres {
                e.close_minutes += c.minutes;
            }
            if c.metres < e.min_metres {
                e.min_metres = c.metres;
                e.setting = c.setting;
            }
        }
    }
}

/// Contacts in one class and how many of them were notified.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Rate {
    pub class: String,
    /// Listener-days (a phone, a day) in the class.
    pub contacts: u64,
    pub notified: u64,
    pub share: f64,
}

impl Rate {
    fn finish(mut self) -> Self {
        self.share = if self.contacts == 0 {
            0.0
        } else {
            self.notified as f64 / self.contacts as f64
        };
        self
    }
}

/// The figures that are timings or sizes: they differ between runs of the same seed.
pub const VOLATILE: [&str; 5] = [
    "http",
    "wall_seconds",
    "store_bytes",
    "phase_seconds",
    "floor_derivation_seconds",
];

/// Distance bands of the closest contact of a listener-day.
pub const BANDS: [(f64, &str); 5] = [
    (1.0, "0-1 m"),
    (2.0, "1-2 m"),
    (3.0, "2-3 m"),
    (5.0, "3-5 m"),
    (f64::MAX, "5 m and more"),
];

fn band(m: f64) -> &'static str {
    BANDS
        .iter()
        .find(|(b, _)| m <= *b)
        .map_or("5 m and more", |b| b.1)
}

/// The result of a run. `precision`, `recall`, `true_contacts`, `notified`,
/// `registrations`, `uploads_lost` and `exports_refused` are the release check's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub seed: u64,
    pub devices: u32,
    pub people: u32,
    pub days: u32,
    pub preset: Option<String>,
    /// Notified listener-days that were a true close contact of a registered case.
    pub precision: f64,
    /// True close contacts notified.
    pub recall: f64,
    /// Listener-days of app users (both radios on) within the close-contact distance and
    /// time of someone who registered, on a day whose key was published.
    pub true_contacts: u64,
    pub true_contacts_notified: u64,
    /// Notified listener-days.
    pub notified: u64,
    pub false_notifications: u64,
    /// Phones notified at least once.
    pub phones_notified: u64,
    /// Completed registrations (from the fleet's log).
    pub registrations: u64,
    pub registration_outcomes: BTreeMap<String, u32>,
    pub keys_accepted: u64,
    pub keys_published: u64,
    /// Keys of the fleet's phones found in the published files.
    pub fleet_keys_published: u64,
    /// Keys the server accepted that no published file holds.
    pub uploads_lost: u64,
    /// Files a phone refused (bad signature or unreadable), from the fleet's log.
    pub exports_refused: u64,
    /// Published files the fleet itself could not verify.
    pub exports_unverifiable: u64,
    pub phones_crashed: u32,
    pub crashes: Vec<String>,
    pub numbers_failed: u32,
    pub batches_failed: u32,
    pub downloads_failed: u32,
    pub infected: u32,
    pub confirmed: u32,
    pub contacts: u64,
    pub sightings: u64,
    /// Close contacts among everyone, with or without the app.
    pub close_contacts_everyone: u64,
    pub by_distance: Vec<Rate>,
    pub by_setting: Vec<Rate>,
    /// Closest at 4 m or more, 10 minutes or less in the day.
    pub far_and_brief: Rate,
    /// Phones notified per completed registration (the NHS app: 4.2 per index case).
    pub notified_phones_per_registration: f64,
    /// Share of notified phones whose owner was infected on or after the contact (the
    /// NHS app: 6 % of notified people later tested positive).
    pub notified_later_infected: f64,
    pub days_to_notification_mean: f64,
    pub days_to_notification_max: u32,
    pub infections_by_day: Vec<u32>,
    pub registrations_by_day: Vec<u32>,
    pub files_by_day: Vec<u32>,
    /// Keys published per day (without padding).
    pub keys_by_day: Vec<u64>,
    pub notifications_by_day: Vec<u32>,
    /// Guidance screens the notified phones showed.
    pub guidance_screens: u64,
    pub fleet_events: u64,
    pub store_bytes: u64,
    pub http: Vec<RouteFigures>,
    /// Deriving every published key's RPIs once, seconds (the per-phone floor of
    /// matching without the shared index), and how many keys that was.
    pub floor_derivation_seconds: f64,
    pub floor_keys: u64,
    /// Wall time by phase of the day, summed over the days.
    pub phase_seconds: BTreeMap<String, f64>,
    pub wall_seconds: f64,
}

impl Figures {
    pub fn new(config: &SimConfig, people: u32, devices: u32) -> Self {
        Self {
            seed: config.seed,
            devices,
            people,
            days: config.days,
            preset: config.preset.clone(),
            ..Self::default()
        }
    }

    /// Precision and recall from what the phones recorded (the fleet's log) against the
    /// ground truth.
    pub fn from_fleet_log(
        &mut self,
        view: &DeviceView,
        truth: &GroundTruth,
        registered: &BTreeMap<u32, u32>,
        published: &BTreeSet<(u32, u32)>,
    ) {
        self.fleet_events = view.events;
        self.exports_refused = view.exports_refused;
        self.registration_outcomes = view
            .registrations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        self.registrations = u64::from(view.registrations.get("completed").copied().unwrap_or(0));
        self.close_contacts_everyone = truth.close_contacts_everyone;
        // Per listener-day, over the registered speakers whose key of that day was published.
        #[derive(Default)]
        struct Ld {
            close: bool,
            minutes: u32,
            min_metres: f64,
            setting: Option<Setting>,
            registered_on: u32,
        }
        let mut lds: BTreeMap<(u32, u32), Ld> = BTreeMap::new();
        for (&(listener, speaker, day), p) in &truth.phone_pairs {
            let Some(&reg) = registered.get(&speaker) else {
                continue;
            };
            if !p.radios_on || !published.contains(&(speaker, day)) {
                continue;
            }
            let e = lds.entry((listener, day)).or_insert(Ld {
                min_metres: f64::MAX,
                registered_on: u32::MAX,
                ..Ld::default()
            });
            e.close |= p.close_minutes >= truth.close.minutes;
            e.minutes += p.minutes;
            if p.min_metres < e.min_metres || e.setting.is_none() {
                e.min_metres = p.min_metres;
                e.setting = Some(p.setting);
            }
            e.registered_on = e.registered_on.min(reg);
        }
        let notified = |l: u32, d: u32| view.notified.get(&l).and_then(|m| m.get(&d)).copied();
        let mut bands: BTreeMap<&str, Rate> = BTreeMap::new();
        let mut settings: BTreeMap<Setting, Rate> = BTreeMap::new();
        let mut far = Rate {
            class: "at 4 m or more, 10 min or less".into(),
            ..Rate::default()
        };
        let mut delays = Vec::new();
        for (&(l, d), e) in &lds {
            let n = notified(l, d);
            let b = bands.entry(band(e.min_metres)).or_insert_with(|| Rate {
                class: band(e.min_metres).into(),
                ..Rate::default()
            });
            b.contacts += 1;
            b.notified += u64::from(n.is_some());
            if e.close {
                let s = settings
                    .entry(e.setting.unwrap_or(Setting::Home))
                    .or_insert_with(|| Rate {
                        class: e.setting.unwrap_or(Setting::Home).name().into(),
                        ..Rate::default()
                    });
                s.contacts += 1;
                s.notified += u64::from(n.is_some());
                self.true_contacts += 1;
                if let Some(at) = n {
                    self.true_contacts_notified += 1;
                    delays.push(at.saturating_sub(e.registered_on));
                }
            }
            if e.min_metres >= 4.0 && e.minutes <= 10 {
                far.contacts += 1;
                far.notified += u64::from(n.is_some());
            }
        }
        self.notified = view.notified.values().map(|m| m.len() as u64).sum();
        self.phones_notified = view.notified.values().filter(|m| !m.is_empty()).count() as u64;
        self.false_notifications = self.notified - self.true_contacts_notified.min(self.notified);
        self.precision = if self.notified == 0 {
            0.0
        } else {
            self.true_contacts_notified as f64 / self.notified as f64
        };
        self.recall = if self.true_contacts == 0 {
            0.0
        } else {
            self.true_contacts_notified as f64 / self.true_contacts as f64
        };
        self.by_distance = BANDS
            .iter()
            .map(|(_, name)| {
                bands.remove(name).unwrap_or(Rate {
                    class: (*name).into(),
                    ..Rate::default()
                })
            })
            .map(Rate::finish)
            .collect();
        self.by_setting = settings.into_values().map(Rate::finish).collect();
        self.far_and_brief = far.finish();
        if !delays.is_empty() {
            self.days_to_notification_mean =
                delays.iter().map(|d| f64::from(*d)).sum::<f64>() / delays.len() as f64;
            self.days_to_notification_max = delays.iter().copied().max().unwrap_or(0);
        }
    }

    /// The final table, for a terminal.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} phones among {} people, {} days, seed {}{}",
            self.devices,
            self.people,
            self.days,
            self.seed,
            self.preset
                .as_deref()
                .map(|p| format!(", preset {p}"))
                .unwrap_or_default()
        );
        let rows: [(&str, String); 12] = [
            ("infected (in all)", self.infected.to_string()),
            ("confirmed by health centres", self.confirmed.to_string()),
            ("registrations completed", self.registrations.to_string()),
            (
                "keys accepted / published",
                format!("{} / {}", self.keys_accepted, self.fleet_keys_published),
            ),
            ("uploads lost", self.uploads_lost.to_string()),
            ("exports refused", self.exports_refused.to_string()),
            ("true close contacts", self.true_contacts.to_string()),
            ("notified (phone-days)", self.notified.to_string()),
            ("recall", format!("{:.3}", self.recall)),
            ("precision", format!("{:.3}", self.precision)),
            (
                "far and brief notified",
                format!(
                    "{} of {}",
                    self.far_and_brief.notified, self.far_and_brief.contacts
                ),
            ),
            ("phones crashed", self.phones_crashed.to_string()),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<30} {v}");
        }
        let rates = |s: &mut String, title: &str, rows: &[Rate]| {
            let _ = writeln!(s, "  {title}:");
            for r in rows {
                let _ = writeln!(
                    s,
                    "    {:<14} {:>6} notified {:>6}  {:>5.1} %",
                    r.class,
                    r.contacts,
                    r.notified,
                    100.0 * r.share
                );
            }
        };
        rates(
            &mut s,
            "by distance (closest contact of a phone-day with a registered case)",
            &self.by_distance,
        );
        rates(&mut s, "recall by setting", &self.by_setting);
        if !self.http.is_empty() {
            let _ = writeln!(s, "  HTTP by route: requests, errors, p50, p99, per second");
            for r in &self.http {
                let _ = writeln!(
                    s,
                    "    {:<40} {:>7} {:>4} {:>8.2} ms {:>8.2} ms {:>8.1}/s",
                    r.route, r.requests, r.errors, r.p50_ms, r.p99_ms, r.per_second
                );
            }
        }
        let _ = writeln!(s, "  wall time {:.1} s", self.wall_seconds);
        s
    }

    /// The figures that must repeat for a seed (not timings).
    pub fn outcome(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("serialises");
        if let Some(o) = v.as_object_mut() {
            for k in VOLATILE {
                o.remove(k);
            }
        }
        v
    }
}
