//! People, where they meet, and the day's contacts: households, workplaces and schools,
//! commuter trains, shops and outdoors. Each contact has a setting, a start, a duration
//! and a distance drawn per setting (docs/SIMULATION.md).

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::world::{Carry, Setting};

/// One person. `phone` is the index of their phone in the fleet, when they carry one.
#[derive(Clone, Debug)]
pub struct Person {
    pub household: u32,
    /// Index into [`Population::workplaces`] (offices and schools).
    pub work: Option<u32>,
    /// Index into [`Population::lines`]: the commuter line they ride on weekdays.
    pub line: Option<u32>,
    pub carry: Carry,
    pub phone: Option<u32>,
    pub bluetooth_on: bool,
    /// Index into the device models.
    pub model: u16,
}

#[derive(Clone, Debug)]
pub struct Workplace {
    pub setting: Setting,
    pub members: Vec<u32>,
}

/// What the population is drawn from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PopulationConfig {
    /// Share of people who carry the app (COCOA reached about 20-30 %).
    pub uptake: f64,
    /// Share of app users whose Bluetooth is off.
    pub bluetooth_off: f64,
    /// Share of adults who work in an office (the rest of the workers are elsewhere).
    pub office_workers: f64,
    /// Share of people at school.
    pub pupils: f64,
    /// Share of workers and pupils who commute by train.
    pub commuters: f64,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        Self {
            uptake: 0.25,
            bluetooth_off: 0.1,
            office_workers: 0.45,
            pupils: 0.15,
            commuters: 0.4,
        }
    }
}

pub struct Population {
    pub people: Vec<Person>,
    pub households: Vec<std::ops::Range<u32>>,
    pub workplaces: Vec<Workplace>,
    pub lines: Vec<Vec<u32>>,
    /// Person of each phone.
    pub phones: Vec<u32>,
}

/// One contact between two people.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Contact {
    pub a: u32,
    pub b: u32,
    pub setting: Setting,
    /// Unix seconds.
    pub start: u64,
    pub minutes: u32,
    pub metres: f64,
}

/// Household sizes in Japan (2020 census, rounded): 38 % one, 28 % two, 17 % three,
/// 12 % four, 5 % five or more.
const HOUSEHOLD_SIZES: [(u32, u32); 5] = [(1, 38), (2, 28), (3, 17), (4, 12), (5, 5)];

impl Population {
    /// About `people` people, `phones` of whom carry the app (the uptake share).
    pub fn generate(
        rng: &mut impl Rng,
        people: u32,
        config: &PopulationConfig,
        models: u16,
    ) -> Self {
        let mut out = Population {
            people: Vec::with_capacity(people as usize),
            households: Vec::new(),
            workplaces: Vec::new(),
            lines: Vec::new(),
            phones: Vec::new(),
        };
        while (out.people.len() as u32) < people {
            let mut r = rng.random_range(0..100);
            let mut size = 5;
            for (s, share) in HOUSEHOLD_SIZES {
                if r < share {
                    size = s;
                    break;
                }
                r -= share;
            }
            let first = out.people.len() as u32;
            let size = size.min(people - first);
            let h = out.households.len() as u32;
            for _ in 0..size {
                out.people.push(Person {
                    household: h,
                    work: None,
                    line: None,
                    carry: Carry::draw(rng),
                    phone: None,
                    bluetooth_on: true,
                    model: 0,
                });
            }
            out.households.push(first..first + size);
        }
        // Offices of 5-30 and schools of 30 (classes), filled in order of drawing.
        let n = out.people.len() as u32;
        let mut office: Vec<u32> = Vec::new();
        let mut school: Vec<u32> = Vec::new();
        for p in 0..n {
            let r: f64 = rng.random();
            if r < config.office_workers {
                office.push(p);
            } else if r < config.office_workers + config.pupils {
                school.push(p);
            }
        }
        for (members, setting) in [(office, Setting::Office), (school, Setting::School)] {
            let mut rest = &members[..];
            while !rest.is_empty() {
                let size = match setting {
                    Setting::School => 30,
                    _ => rng.random_range(5..=30),
                }
                .min(rest.len());
                let w = out.workplaces.len() as u32;
                for &p in &rest[..size] {
                    out.people[p as usize].work = Some(w);
                }
                out.workplaces.push(Workplace {
                    setting,
                    members: rest[..size].to_vec(),
                });
                rest = &rest[size..];
            }
        }
        // Commuter lines of about 200 riders.
        let riders: Vec<u32> = (0..n)
            .filter(|p| out.people[*p as usize].work.is_some() && rng.random_bool(config.commuters))
            .collect();
        let lines = (riders.len() as u32).div_ceil(200).max(1);
        out.lines = vec![Vec::new(); lines as usize];
        for p in riders {
            let l = rng.random_range(0..lines);
            out.people[p as usize].line = Some(l);
            out.lines[l as usize].push(p);
        }
        // The app, and Bluetooth on or off.
        for p in 0..n {
            if rng.random_bool(config.uptake) {
                let person = &mut out.people[p as usize];
                person.phone = Some(out.phones.len() as u32);
                person.bluetooth_on = !rng.random_bool(config.bluetooth_off);
                person.model = rng.random_range(0..models.max(1));
                out.phones.push(p);
            }
        }
        out
    }

    /// The contacts of one day (`day_start` at 00:00, unix seconds; weekday or not).
    pub fn contacts(&self, rng: &mut impl Rng, day_start: u64, weekday: bool) -> Vec<Contact> {
        let mut out = Vec::new();
        let at = |rng: &mut dyn rand::RngCore, from_h: f64, to_h: f64| {
            day_start + (rng.random_range(from_h..to_h) * 3600.0) as u64
        };
        // Households: every pair, in the evening, an hour or more at 0.5-3 m.
        let home_distance = LogNormal::new(0.3f64, 0.5).expect("valid");
        for h in &self.households {
            for a in h.clone() {
                for b in a + 1..h.end {
                    out.push(Contact {
                        a,
                        b,
                        setting: Setting::Home,
                        start: at(rng, 18.0, 21.0),
                        minutes: rng.random_range(30..=180),
                        metres: home_distance.sample(rng).clamp(0.3, 6.0),
                    });
                }
            }
        }
        if weekday {
            // Work and school: each meets up to 4 of their own, 10-120 min at 0.7-4 m.
            for w in &self.workplaces {
                for &a in &w.members {
                    for &b in w.members.choose_multiple(rng, 4) {
                        if b > a {
                            out.push(Contact {
                                a,
                                b,
                                setting: w.setting,
                                start: at(rng, 9.0, 16.0),
                                minutes: rng.random_range(10..=120),
                                metres: rng.random_range(0.7..4.0),
                            });
                        }
                    }
                }
            }
            // Trains, both ways: near two other riders of the line, 10-40 min at 0.3-2.5 m.
            for line in &self.lines {
                for (from, to) in [(7.5, 9.0), (17.5, 19.5)] {
                    for &a in line {
                        for &b in line.choose_multiple(rng, 2) {
                            if b != a {
                                out.push(Contact {
                                    a,
                                    b,
                                    setting: Setting::Train,
                                    start: at(rng, from, to),
                                    minutes: rng.random_range(10..=40),
                                    metres: rng.random_range(0.3..2.5),
                                });
                            }
                        }
                    }
                }
            }
        }
        // Shops and outdoors: strangers, briefly, further.
        let n = self.people.len() as u32;
        for a in 0..n {
            if rng.random_bool(0.5) {
                for _ in 0..2 {
                    let b = rng.random_range(0..n);
                    if b != a {
                        out.push(Contact {
                            a,
                            b,
                            setting: Setting::Shop,
                            start: at(rng, 10.0, 20.0),
                            minutes: rng.random_range(2..=15),
                            metres: rng.random_range(1.0..5.0),
                        });
                    }
                }
            }
            if rng.random_bool(0.3) {
                let b = rng.random_range(0..n);
                if b != a {
                    out.push(Contact {
                        a,
                        b,
                        setting: Setting::Outdoors,
                        start: at(rng, 8.0, 20.0),
                        minutes: rng.random_range(3..=30),
                        metres: rng.random_range(1.0..8.0),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_population_has_households_work_lines_and_the_uptake_share() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let p = Population::generate(&mut rng, 10_000, &PopulationConfig::default(), 4);
        assert_eq!(p.people.len(), 10_000);
        let share = p.phones.len() as f64 / 10_000.0;
        assert!((0.23..0.27).contains(&share), "{share}");
        let mean_household = 10_000.0 / p.households.len() as f64;
        assert!((2.0..2.5).contains(&mean_household), "{mean_household}");
        assert!(p.workplaces.iter().all(|w| !w.members.is_empty()));
        let c = p.contacts(&mut rng, 0, true);
        let per_person = 2.0 * c.len() as f64 / 10_000.0;
        assert!((5.0..25.0).contains(&per_person), "{per_person}");
        assert!(c.iter().all(|c| c.a != c.b && c.minutes > 0));
    }
}
