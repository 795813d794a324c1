//! A real Linux Bluetooth radio through BlueZ (`bluer`), behind the cargo feature `ble`.
//!
//! It advertises the 0xFD6F service data (RPI ‖ AEM, 20 bytes) as a non-connectable
//! broadcast and scans for it, with the RSSI the adapter reports. A scan is a few seconds
//! of discovery; [`BlueZRadio::scans`] hands back what each completed scan heard. The
//! payload itself is [`crate::radio::encode_service_data`] / `parse_service_data`, which
//! the tests check without an adapter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluer::adv::{Advertisement as LeAdvertisement, AdvertisementHandle, Type};
use bluer::{AdapterEvent, DiscoveryFilter, DiscoveryTransport, Uuid};
use futures::StreamExt;
use hotaru_events::Clock;

use crate::radio::{
    Advertisement, Radio, SERVICE_UUID, Scan, Sighting, encode_service_data, parse_service_data,
};

/// Seconds of listening per scan (GAEN scans for about 4 s every 3.5-5 minutes).
pub const SCAN_SECONDS: u64 = 4;

fn service_uuid() -> Uuid {
    SERVICE_UUID.parse().expect("valid uuid")
}

/// The adapter's radio. Advertising and scanning run on the tokio runtime it was
/// opened on.
pub struct BlueZRadio {
    adapter: bluer::Adapter,
    handle: Option<AdvertisementHandle>,
    done: Arc<Mutex<Vec<Scan>>>,
    runtime: tokio::runtime::Handle,
}

impl BlueZRadio {
    /// Opens the default adapter, powers it and starts the scan loop (every
    /// `scan_every`, [`SCAN_SECONDS`] of discovery).
    pub async fn open(clock: Arc<dyn Clock>, scan_every: Duration) -> bluer::Result<Self> {
        let session = bluer::Session::new().await?;
        let adapter = session.default_adapter().await?;
        adapter.set_powered(true).await?;
        let done = Arc::new(Mutex::new(Vec::new()));
        let scanner = adapter.clone();
        let out = done.clone();
        tokio::spawn(async move {
            loop {
                match scan_once(&scanner, clock.as_ref()).await {
                    Ok(scan) => out.lock().expect("not poisoned").push(scan),
                    Err(e) => tracing::warn!(error = %e, "bluetooth scan failed"),
                }
                tokio::time::sleep(scan_every).await;
            }
        });
        Ok(Self {
            adapter,
            handle: None,
            done,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

async fn scan_once(adapter: &bluer::Adapter, clock: &dyn Clock) -> bluer::Result<Scan> {
    adapter
        .set_discovery_filter(DiscoveryFilter {
            transport: DiscoveryTransport::Le,
            uuids: std::collections::HashSet::from([service_uuid()]),
            duplicate_data: true,
            ..Default::default()
        })
        .await?;
    let at = clock.now();
    let events = adapter.discover_devices_with_changes().await?;
    let mut heard: HashMap<[u8; 16], Sighting> = HashMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs(SCAN_SECONDS));
    tokio::pin!(events, deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let addr = match ev {
                    AdapterEvent::DeviceAdded(a) => a,
                    AdapterEvent::PropertyChanged(_) => continue,
                    _ => continue,
                };
                let Ok(device) = adapter.device(addr) else { continue };
                let data = device.service_data().await.ok().flatten();
                let rssi = device.rssi().await.ok().flatten();
                if let (Some(data), Some(rssi)) = (data, rssi)
                    && let Some(bytes) = data.get(&service_uuid())
                    && let Ok((rpi, aem)) = parse_service_data(bytes)
                {
                    heard.insert(rpi, Sighting { rpi, aem, rssi_dbm: rssi.clamp(-128, 127) as i8 });
                }
            }
        }
    }
    Ok(Scan {
        at,
        sightings: heard.into_values().collect(),
    })
}

impl Radio for BlueZRadio {
    fn advertise(&mut self, adv: Option<Advertisement>) {
        self.handle = None; // dropping the handle stops the previous advertisement
        let Some(adv) = adv else { return };
        let le = LeAdvertisement {
            advertisement_type: Type::Broadcast,
            service_uuids: BTreeSet::from([service_uuid()]),
            service_data: BTreeMap::from([(
                service_uuid(),
                encode_service_data(&adv.rpi, &adv.aem).to_vec(),
            )]),
            discoverable: Some(false),
            ..Default::default()
        };
        let adapter = self.adapter.clone();
        match tokio::task::block_in_place(|| self.runtime.block_on(adapter.advertise(le))) {
            Ok(h) => self.handle = Some(h),
            Err(e) => tracing::warn!(error = %e, "bluetooth advertising failed"),
        }
    }

    fn scans(&mut self) -> Vec<Scan> {
        std::mem::take(&mut *self.done.lock().expect("not poisoned"))
    }
}
