//! The BLE world: how much signal a phone at a given distance loses in each setting, how
//! it is carried, how often a phone scans and how often a scan misses. The figures and
//! their sources are in docs/SIMULATION.md.
//!
//! GAEN's attenuation is `advertised TX power − (RSSI + the receiver's correction)`; a
//! model's TX power and correction come from Google's calibration table, so that the
//! attenuation a phone computes is the path loss plus what the model's calibration gets
//! wrong. The world draws the path loss; [`rssi`] turns it into the raw RSSI the
//! receiver's chip reports, which the agent corrects exactly as a phone does.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Where a contact happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    Home,
    Office,
    School,
    Train,
    Shop,
    Outdoors,
}

impl Setting {
    pub const ALL: [Setting; 6] = [
        Setting::Home,
        Setting::Office,
        Setting::School,
        Setting::Train,
        Setting::Shop,
        Setting::Outdoors,
    ];

    /// Log-distance path loss: exponent n and shadowing σ (dB).
    pub fn propagation(self) -> Propagation {
        let (exponent, shadowing_db) = match self {
            // Indoors with furniture and walls; reflections.
            Setting::Home => (2.2, 4.0),
            Setting::Office => (2.4, 5.0),
            Setting::School => (2.4, 5.0),
            // A metal carriage is a waveguide: attenuation barely rises with distance
            // (Leith & Farrell's bus and tram measurements), with large spread.
            Setting::Train => (0.9, 6.0),
            Setting::Shop => (2.0, 5.0),
            // Free space, nothing to reflect.
            Setting::Outdoors => (2.0, 3.0),
        };
        Propagation {
            exponent,
            shadowing_db,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Setting::Home => "home",
            Setting::Office => "office",
            Setting::School => "school",
            Setting::Train => "train",
            Setting::Shop => "shop",
            Setting::Outdoors => "outdoors",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Propagation {
    pub exponent: f64,
    pub shadowing_db: f64,
}

/// Path loss at 1 m between two phones held in the open (dB): the calibration's
/// reference, where Google's table puts a 1 m line-of-sight attenuation.
pub const LOSS_AT_1M_DB: f64 = 47.0;
/// Fast fading from one scan to the next (dB, σ).
pub const FADING_DB: f64 = 3.0;
/// Beyond this attenuation nothing is received.
pub const SENSITIVITY_DB: f64 = 100.0;
/// A scan that should have heard an advertiser misses it this often.
pub const SCAN_MISS: f64 = 0.1;
/// Scans every 210-300 s (GAEN's published duty cycle: about every 4-5 minutes).
pub const SCAN_EVERY_S: (u64, u64) = (210, 300);

/// How a phone is carried, and the loss it adds (dB): held in the hand, in a trouser
/// pocket (the body in between), in a bag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carry {
    Hand,
    Pocket,
    Bag,
}

impl Carry {
    pub fn loss_db(self) -> f64 {
        match self {
            Carry::Hand => 0.0,
            Carry::Pocket => 6.0,
            Carry::Bag => 12.0,
        }
    }

    pub fn draw(rng: &mut impl Rng) -> Self {
        match rng.random_range(0..10) {
            0..=2 => Carry::Hand,
            3..=7 => Carry::Pocket,
            _ => Carry::Bag,
        }
    }
}

/// The loss of one contact (dB, before fast fading): distance, setting, how both phones
/// are carried, and the contact's own shadowing draw.
pub fn contact_loss(
    rng: &mut impl Rng,
    metres: f64,
    setting: Setting,
    speaker: Carry,
    listener: Carry,
) -> f64 {
    let p = setting.propagation();
    let shadow = Normal::new(0.0, p.shadowing_db).expect("σ > 0").sample(rng);
    LOSS_AT_1M_DB
        + 10.0 * p.exponent * metres.max(0.1).log10()
        + speaker.loss_db()
        + listener.loss_db()
        + shadow
}

/// One scan's attenuation (the contact's loss with fast fading), `None` when the scan
/// missed or the signal is below sensitivity.
pub fn scan_attenuation(rng: &mut impl Rng, contact_loss_db: f64) -> Option<f64> {
    let fading = Normal::new(0.0, FADING_DB).expect("σ > 0").sample(rng);
    let a = (contact_loss_db + fading).max(0.0);
    (a < SENSITIVITY_DB && !rng.random_bool(SCAN_MISS)).then_some(a)
}

/// The raw RSSI the listener's chip reports for `attenuation_db`: the speaker's
/// advertised TX power minus the attenuation, minus the listener's correction (which the
/// agent adds back).
pub fn rssi(attenuation_db: f64, speaker_tx_dbm: i8, listener_correction_db: i8) -> i8 {
    (f64::from(speaker_tx_dbm) - attenuation_db - f64::from(listener_correction_db))
        .round()
        .clamp(-127.0, 20.0) as i8
}

/// A phone's scan times in `[from, until)` (unix seconds), from its phase.
pub fn scan_times(rng: &mut impl Rng, from: u64, until: u64) -> Vec<u64> {
    let mut t = from + rng.random_range(0..SCAN_EVERY_S.1);
    let mut out = Vec::new();
    while t < until {
        out.push(t);
        t += rng.random_range(SCAN_EVERY_S.0..=SCAN_EVERY_S.1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn mean_loss(metres: f64, setting: Setting) -> f64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = 4000;
        (0..n)
            .map(|_| contact_loss(&mut rng, metres, setting, Carry::Hand, Carry::Hand))
            .sum::<f64>()
            / f64::from(n)
    }

    #[test]
    fn loss_rises_with_distance_and_barely_in_a_train() {
        let office = mean_loss(4.0, Setting::Office) - mean_loss(1.0, Setting::Office);
        let train = mean_loss(4.0, Setting::Train) - mean_loss(1.0, Setting::Train);
        assert!((13.0..16.0).contains(&office), "{office}");
        assert!(train < 7.0, "{train}");
        let at_1m = mean_loss(1.0, Setting::Outdoors);
        assert!((LOSS_AT_1M_DB - 0.5..LOSS_AT_1M_DB + 0.5).contains(&at_1m));
    }

    #[test]
    fn the_agent_recovers_the_attenuation_from_the_raw_rssi() {
        // tx -24, listener correction 5: the agent computes tx - (rssi + 5).
        let raw = rssi(55.0, -24, 5);
        assert_eq!(-24 - (i16::from(raw) + 5), 55);
    }

    #[test]
    fn scans_come_every_four_to_five_minutes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let t = scan_times(&mut rng, 0, 86_400);
        assert!((288..=412).contains(&t.len()), "{}", t.len());
        assert!(t.windows(2).all(|w| (210..=300).contains(&(w[1] - w[0]))));
    }
}
