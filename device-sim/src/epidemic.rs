//! Who infects whom: an SEIR model whose transmission depends on each contact's distance
//! and duration, with symptom onset, and health centres confirming a share of the
//! infections after a delay (docs/SIMULATION.md).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::population::Contact;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpidemicConfig {
    /// Share of people infected at the start (at least one), infected up to 6 days before.
    pub initially_infected: f64,
    /// Hazard per minute at 1 m; at distance d it is scaled by 1 / max(d, 0.5)².
    pub beta_per_minute: f64,
    /// Share of infections with symptoms.
    pub symptomatic: f64,
    /// Share of symptomatic infections a health centre confirms (days after onset: 1-3).
    pub confirmed_symptomatic: f64,
    /// Share of asymptomatic infections confirmed (tested as contacts, 4-8 days after).
    pub confirmed_asymptomatic: f64,
}

impl Default for EpidemicConfig {
    fn default() -> Self {
        Self {
            initially_infected: 0.02,
            beta_per_minute: 0.0015,
            symptomatic: 0.7,
            confirmed_symptomatic: 0.6,
            confirmed_asymptomatic: 0.1,
        }
    }
}

/// One person's course, in days since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Susceptible,
    Infected {
        infected: u32,
        /// Symptom onset (for the asymptomatic, when they would have had them).
        onset: u32,
        symptomatic: bool,
        /// The day a health centre confirms it, if it does.
        confirmed: Option<u32>,
    },
}

impl Health {
    /// Infectious from two days before onset to seven after.
    pub fn infectious_on(self, day: u32) -> bool {
        match self {
            Health::Infected { onset, .. } => day + 2 >= onset && day <= onset + 7,
            Health::Susceptible => false,
        }
    }
}

pub struct Epidemic {
    pub config: EpidemicConfig,
    pub health: Vec<Health>,
    /// Infections per day (day index from the start).
    pub new_infections: Vec<u32>,
}

impl Epidemic {
    pub fn new(rng: &mut impl Rng, people: usize, first_day: u32, config: EpidemicConfig) -> Self {
        let mut e = Self {
            health: vec![Health::Susceptible; people],
            new_infections: Vec::new(),
            config,
        };
        let seeds = ((people as f64 * e.config.initially_infected).round() as usize).max(1);
        for _ in 0..seeds {
            let p = rng.random_range(0..people);
            let day = first_day - rng.random_range(0..=6);
            e.infect(rng, p, day);
        }
        e
    }

    fn infect(&mut self, rng: &mut impl Rng, person: usize, day: u32) {
        if self.health[person] != Health::Susceptible {
            return;
        }
        let onset = day + rng.random_range(3..=7);
        let symptomatic = rng.random_bool(self.config.symptomatic);
        let confirmed = if symptomatic {
            rng.random_bool(self.config.confirmed_symptomatic)
                .then(|| onset + rng.random_range(1..=3))
        } else {
            rng.random_bool(self.config.confirmed_asymptomatic)
                .then(|| day + rng.random_range(4..=8))
        };
        self.health[person] = Health::Infected {
            infected: day,
            onset,
            symptomatic,
            confirmed,
        };
    }

    /// The probability that one contact transmits.
    pub fn transmission(&self, c: &Contact) -> f64 {
        let d = c.metres.max(0.5);
        1.0 - (-self.config.beta_per_minute * f64::from(c.minutes) / (d * d)).exp()
    }

    /// Infections through the day's contacts; returns how many.
    pub fn spread(&mut self, rng: &mut impl Rng, day: u32, contacts: &[Contact]) -> u32 {
        let mut new = Vec::new();
        for c in contacts {
            for (from, to) in [(c.a, c.b), (c.b, c.a)] {
                if self.health[from as usize].infectious_on(day)
                    && self.health[to as usize] == Health::Susceptible
                    && rng.random_bool(self.transmission(c))
                {
                    new.push(to as usize);
                }
            }
        }
        let mut n = 0;
        for p in new {
            if self.health[p] == Health::Susceptible {
                self.infect(rng, p, day);
                n += 1;
            }
        }
        self.new_infections.push(n);
        n
    }

    /// People a health centre confirms on `day`, with their onset.
    pub fn confirmed_on(&self, day: u32) -> Vec<(u32, u32, bool)> {
        self.health
            .iter()
            .enumerate()
            .filter_map(|(p, h)| match *h {
                Health::Infected {
                    confirmed: Some(c),
                    onset,
                    symptomatic,
                    ..
                } if c == day => Some((p as u32, onset, symptomatic)),
                _ => None,
            })
            .collect()
    }
}
