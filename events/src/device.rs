//! The events a device agent records about itself, in its own log (the device context).
//!
//! **Invariant:** these events never reach the server's log. They are appended to the
//! device's own event log (a phone's embedded store, or a simulated fleet's log, kept apart
//! from the server's); `hotaru-log` refuses them in a server log and the committee's audit
//! fails when it finds one. What leaves a device is only what COCOA sends: diagnosis keys
//! with a processing number, chaff, and an operation log the user reviewed.
//!
//! Volume grows with days, not with sightings: scan records live in the device's encrypted
//! record store; the log holds one summary per day ([`ProximityRecorded`] version 2).

use serde::{Deserialize, Serialize};

use crate::domain::{Day, DeviceId, LogId, Sealed};

/// The user agreed to exposure logging (first start). Days of use count from the event's
/// time; a reinstall starts a new log and so a new count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentGiven {
    pub device_id: DeviceId,
    /// Index of the device model in the agent's model table (its transmit power).
    pub model: u16,
}

/// The user withdrew consent: every key and record of the device was destroyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentWithdrawn {
    pub device_id: DeviceId,
}

/// The OS's Bluetooth or exposure-logging switch changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadioSettingsChanged {
    pub device_id: DeviceId,
    pub bluetooth_on: bool,
    pub exposure_logging_on: bool,
}

/// `ProximityRecorded` version 2: the day's scan records were closed; how many scans and
/// sightings the encrypted store holds for the day. Version 1
/// ([`legacy::ProximityRecordedV1`]) was one event per sighting with the RPI and
/// attenuation in the clear; the records themselves now never enter the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProximityRecorded {
    pub device_id: DeviceId,
    pub day: Day,
    pub scans: u32,
    pub sightings: u32,
}

/// The TEK of a day and the records of that day were destroyed (14 days on): recorded
/// before the data key is deleted, so a crash in between is finished on restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsExpired {
    pub device_id: DeviceId,
    pub day: Day,
}

/// Why an export file was refused, or that it verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportVerdict {
    /// A signature by the health authority's key verifies; its keys were matched.
    Verified,
    /// The zip holds no signature by the health authority's key (unsigned, or signed by
    /// another key): nothing in it was read.
    BadSignature,
    /// The file is not a readable export (damaged, not a zip, over the size limits).
    Malformed,
}

/// One export file was downloaded and checked before any of its keys was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportVerified {
    pub device_id: DeviceId,
    /// SHA-256 of the file's path in index.txt: the device does not fetch it again.
    pub file: [u8; 32],
    pub verdict: ExportVerdict,
    /// Keys in the file (0 when refused).
    pub keys: u32,
}

/// One scan instance of a matched key (GAEN v2): attenuations and the time it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub typical_attenuation_db: u8,
    pub min_attenuation_db: u8,
    pub seconds_since_last_scan: u16,
}

/// Up to 30 minutes of scans that heard one matched key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedWindow {
    /// The key's report type (export format code).
    pub report_type: u8,
    pub days_since_onset: Option<i32>,
    pub scans: Vec<ScanRecord>,
}

/// The guidance flow's screens (DOMAIN.md, "After a notification").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuidanceScreen {
    /// The number of contacts and their dates.
    Contacts,
    /// 1. Symptoms?
    AskedSymptoms,
    /// 2. Anyone close to you positive or with suspected symptoms?
    AskedCloseContacts,
    /// 3. Do you want a test anyway?
    OfferedTest,
    /// Book the outpatient clinic promptly (after symptoms, a close contact or a wish).
    AdvisedBooking,
    /// Watch your health for 14 days; enter symptoms again if it changes.
    AdvisedWatchHealth,
    /// The proposed variant: phone your family doctor or a nearby clinic (symptoms).
    AdvisedFamilyDoctor,
    /// The proposed variant: the chosen prefecture's consultation centres.
    ConsultationCentres,
}

/// Which answer led to this screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuidanceAnswer {
    Yes,
    No,
}

/// A command of the registration attempt, with the seed's error screens A-G.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationOutcome {
    /// The server accepted keys: the only outcome shown as "completed" (COCOA 1.1.1).
    Completed { accepted: u16 },
    /// A: not 8 half-width digits (checked on the device; nothing was sent).
    FormatError,
    /// B: the server says the number is wrong (unknown, used or expired).
    WrongNumber,
    /// C: the attempt limit; the app closes.
    AttemptLimit,
    /// D: network or server failure after the retries; try again later.
    Unavailable,
    /// E: Bluetooth is off.
    BluetoothOff,
    /// F: exposure logging is disabled.
    ExposureLoggingOff,
    /// G: no keys to submit (e.g. just installed); nothing was sent.
    NothingToSubmit,
}

impl RegistrationOutcome {
    /// The seed's letter, or "completed".
    pub const fn code(self) -> &'static str {
        match self {
            RegistrationOutcome::Completed { .. } => "completed",
            RegistrationOutcome::FormatError => "A",
            RegistrationOutcome::WrongNumber => "B",
            RegistrationOutcome::AttemptLimit => "C",
            RegistrationOutcome::Unavailable => "D",
            RegistrationOutcome::BluetoothOff => "E",
            RegistrationOutcome::ExposureLoggingOff => "F",
            RegistrationOutcome::NothingToSubmit => "G",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationAttempted {
    pub device_id: DeviceId,
    pub outcome: RegistrationOutcome,
    /// Keys the device offered (0 when nothing was sent).
    pub keys: u16,
    /// The onset or test date the user entered.
    pub onset: Day,
}

/// The user reviewed and sent the operation log; support knows it by this id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLogSent {
    pub device_id: DeviceId,
    pub log_id: LogId,
}

/// `TekRolled` version 2: version 1 ([`legacy::TekRolledV1`]) carried no key, so a device
/// could not be rebuilt from its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TekRolled {
    pub device_id: DeviceId,
    pub rolling_start_interval: u32,
    /// The TEK, sealed under the device's data key of its day (destroyed 14 days on);
    /// `None` only for events upcast from version 1.
    pub tek: Option<Sealed>,
}

/// `ExposureChecked` version 2: one daily check of the published files. Version 1
/// ([`legacy::ExposureCheckedV1`]) named a batch, which a device never sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureChecked {
    pub device_id: DeviceId,
    /// Files downloaded and verified, and refused, in this check.
    pub files: u16,
    pub refused: u16,
    pub keys: u32,
    /// Scans of the device's records that matched a key.
    pub matches: u32,
    /// The exposure configuration the check scored with, as the server served it (JSON):
    /// the exposure screen is re-derived from it on replay. Empty when it is the one the
    /// previous check recorded (a fleet's phones then do not log the same kilobyte daily).
    pub risk_configuration: Vec<u8>,
}

/// `ExposureMatched` version 2: one matched key on one day, with the windows the risk
/// rule scores. Version 1 ([`legacy::ExposureMatchedV1`]) kept only two sums, which the
/// rule (`hotaru_protocol::risk::assess`) cannot be run on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureMatched {
    pub device_id: DeviceId,
    /// The day of the contact (days since the epoch, UTC).
    pub day: Day,
    pub windows: Vec<MatchedWindow>,
    /// Seconds of the scans that heard the key.
    pub scan_seconds: u32,
    /// The lowest attenuation heard, dB.
    pub min_attenuation_db: u8,
    /// The key's window score under the configuration of the check, rounded down.
    pub score: u32,
}

/// `GuidanceShown` version 2: the screen, the answer that led to it and the prefecture
/// chosen. Version 1 ([`legacy::GuidanceShownV1`]) recorded only a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuidanceShown {
    pub device_id: DeviceId,
    pub screen: GuidanceScreen,
    pub answer: Option<GuidanceAnswer>,
    /// JIS prefecture code (1-47) where the user is now, on the prefecture screens.
    pub prefecture: Option<u8>,
}

/// Earlier versions of the device events, kept so stored bytes stay decodable.
pub mod legacy {
    use serde::{Deserialize, Serialize};

    use crate::domain::{BatchId, Day, DeviceId, GuidanceStep};

    /// `TekRolled` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TekRolledV1 {
        pub device_id: DeviceId,
        pub rolling_start_interval: u32,
    }

    impl From<TekRolledV1> for super::TekRolled {
        /// Version 1 carried no key: the day's TEK is unknown to a replay.
        fn from(v1: TekRolledV1) -> Self {
            Self {
                device_id: v1.device_id,
                rolling_start_interval: v1.rolling_start_interval,
                tek: None,
            }
        }
    }

    /// `ProximityRecorded` version 1: one event per sighting, in the clear.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ProximityRecordedV1 {
        pub device_id: DeviceId,
        pub rpi: [u8; 16],
        pub aem: [u8; 4],
        pub interval: u32,
        pub attenuation_db: u8,
    }

    impl From<ProximityRecordedV1> for super::ProximityRecorded {
        /// One sighting in one scan on the interval's day (the RPI is not carried over).
        fn from(v1: ProximityRecordedV1) -> Self {
            Self {
                device_id: v1.device_id,
                day: Day(v1.interval / 144),
                scans: 1,
                sightings: 1,
            }
        }
    }

    /// `ExposureChecked` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ExposureCheckedV1 {
        pub device_id: DeviceId,
        pub batch_id: BatchId,
        pub keys_checked: u32,
    }

    impl From<ExposureCheckedV1> for super::ExposureChecked {
        /// One file; no configuration recorded (the replay keeps the previous one).
        fn from(v1: ExposureCheckedV1) -> Self {
            Self {
                device_id: v1.device_id,
                files: 1,
                refused: 0,
                keys: v1.keys_checked,
                matches: 0,
                risk_configuration: Vec::new(),
            }
        }
    }

    /// `ExposureMatched` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ExposureMatchedV1 {
        pub device_id: DeviceId,
        pub day: Day,
        pub weighted_seconds: u32,
        pub scan_seconds: u32,
    }

    impl From<ExposureMatchedV1> for super::ExposureMatched {
        /// No windows were recorded: the day is kept with its sums and scores nothing.
        fn from(v1: ExposureMatchedV1) -> Self {
            Self {
                device_id: v1.device_id,
                day: v1.day,
                windows: Vec::new(),
                scan_seconds: v1.scan_seconds,
                min_attenuation_db: u8::MAX,
                score: v1.weighted_seconds,
            }
        }
    }

    /// `GuidanceShown` version 1.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GuidanceShownV1 {
        pub device_id: DeviceId,
        pub step: GuidanceStep,
    }

    impl From<GuidanceShownV1> for super::GuidanceShown {
        fn from(v1: GuidanceShownV1) -> Self {
            let screen = match v1.step {
                GuidanceStep::AskedSymptoms => super::GuidanceScreen::AskedSymptoms,
                GuidanceStep::AskedCloseContacts => super::GuidanceScreen::AskedCloseContacts,
                GuidanceStep::OfferedTest => super::GuidanceScreen::OfferedTest,
                GuidanceStep::AdvisedBooking => super::GuidanceScreen::AdvisedBooking,
                GuidanceStep::AdvisedWatchHealth => super::GuidanceScreen::AdvisedWatchHealth,
            };
            Self {
                device_id: v1.device_id,
                screen,
                answer: None,
                prefecture: None,
            }
        }
    }
}
