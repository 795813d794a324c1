//! The radio: what the agent advertises and what it hears.
//!
//! The agent does not own a radio; whoever runs it (the [`crate::DeviceActor`], the
//! `hotaru device run` loop, the fleet simulator) moves advertisements out and scans in.
//! [`ScriptedRadio`] is the radio of tests; the BlueZ radio is [`crate::ble`] (feature
//! `ble`); the fleet's BLE world is the simulator's.

use std::sync::{Arc, Mutex};

use hotaru_events::UnixMillis;

/// The 16-bit service UUID of exposure notification (GAEN Bluetooth specification).
pub const SERVICE_UUID16: u16 = 0xFD6F;
/// The full 128-bit form of [`SERVICE_UUID16`].
pub const SERVICE_UUID: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";

/// What a device advertises: service data RPI ‖ AEM from a random address that rotates
/// with the RPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub rpi: [u8; 16],
    pub aem: [u8; 4],
    /// A non-resolvable private address (the two top bits are 0).
    pub address: [u8; 6],
}

/// One advertisement heard in a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub rpi: [u8; 16],
    pub aem: [u8; 4],
    pub rssi_dbm: i8,
}

/// One scan (a few seconds of listening) and what it heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub at: UnixMillis,
    pub sightings: Vec<Sighting>,
}

/// A radio that advertises a payload and delivers scans.
pub trait Radio: Send + 'static {
    /// Advertise this from now on; `None` stops advertising.
    fn advertise(&mut self, adv: Option<Advertisement>);
    /// The scans completed since the last call.
    fn scans(&mut self) -> Vec<Scan>;
}

/// Why service data is not an exposure-notification payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Exposure notification service data is exactly 20 bytes (RPI 16 ‖ AEM 4).
    #[error("service data is {0} bytes, not 20")]
    Length(usize),
}

/// The 0xFD6F service data: RPI ‖ AEM.
pub fn encode_service_data(rpi: &[u8; 16], aem: &[u8; 4]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..16].copy_from_slice(rpi);
    out[16..].copy_from_slice(aem);
    out
}

pub fn parse_service_data(data: &[u8]) -> Result<([u8; 16], [u8; 4]), PayloadError> {
    if data.len() != 20 {
        return Err(PayloadError::Length(data.len()));
    }
    let mut rpi = [0u8; 16];
    let mut aem = [0u8; 4];
    rpi.copy_from_slice(&data[..16]);
    aem.copy_from_slice(&data[16..]);
    Ok((rpi, aem))
}

#[derive(Default)]
struct Script {
    advertising: Option<Advertisement>,
    pending: Vec<Scan>,
}

/// A radio driven by a test: the test reads what the device advertises and hands it the
/// scans it would have heard. Clones share one radio (the test keeps one, the agent's
/// runner the other).
#[derive(Clone, Default)]
pub struct ScriptedRadio(Arc<Mutex<Script>>);

impl ScriptedRadio {
    /// What the device advertises now.
    pub fn advertising(&self) -> Option<Advertisement> {
        self.0.lock().expect("not poisoned").advertising
    }

    /// A scan the device will take on its next poll.
    pub fn hear(&self, scan: Scan) {
        self.0.lock().expect("not poisoned").pending.push(scan);
    }
}

impl Radio for ScriptedRadio {
    fn advertise(&mut self, adv: Option<Advertisement>) {
        self.0.lock().expect("not poisoned").advertising = adv;
    }

    fn scans(&mut self) -> Vec<Scan> {
        std::mem::take(&mut self.0.lock().expect("not poisoned").pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_data_is_rpi_then_aem_and_nothing_else() {
        let rpi = [0x8b; 16];
        let aem = [1, 2, 3, 4];
        let d = encode_service_data(&rpi, &aem);
        assert_eq!(&d[..16], &rpi);
        assert_eq!(&d[16..], &aem);
        assert_eq!(parse_service_data(&d), Ok((rpi, aem)));
        assert_eq!(parse_service_data(&d[..19]), Err(PayloadError::Length(19)));
        assert_eq!(parse_service_data(&[0; 21]), Err(PayloadError::Length(21)));
        assert_eq!(parse_service_data(&[]), Err(PayloadError::Length(0)));
    }
}
