//! The DeviceActor shell: messages reach the agent one at a time, the radio is moved by
//! the actor (advertisement out, scans in), and nothing is advertised with Bluetooth off.

use std::sync::Arc;

use hotaru_device::actor::{Consent, GetStatus, RadioTick, SetRadio};
use hotaru_device::{
    Agent, AgentConfig, DeviceActor, GatewayClient, Scan, ScriptedRadio, Sighting,
};
use hotaru_events::{Clock, ManualClock, UnixMillis};
use hotaru_log::{LogScope, SledLog};
use hotaru_protocol::random::SeededRandom;

#[actix::test]
async fn two_actors_on_scripted_radios() {
    use actix::Actor as _;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(UnixMillis(1_790_000_000_000));
    let mut radios = Vec::new();
    let mut actors = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let log = SledLog::open_scoped(&dir.path().join(name), LogScope::Device).unwrap();
        let agent = Agent::open(
            log.clone(),
            log,
            name,
            Arc::new(clock.clone()),
            Box::new(SeededRandom::from_u64(9, i as u64)),
            AgentConfig::default(),
        )
        .await
        .unwrap();
        let radio = ScriptedRadio::default();
        radios.push(radio.clone());
        let client = GatewayClient::new("http://127.0.0.1:9").unwrap();
        actors.push(DeviceActor::new(agent, Box::new(radio), client).start());
    }
    for a in &actors {
        a.send(Consent(0)).await.unwrap().unwrap();
        a.send(RadioTick).await.unwrap().unwrap();
    }
    let adv = radios[0].advertising().expect("a advertises after consent");
    radios[1].hear(Scan {
        at: clock.now(),
        sightings: vec![Sighting {
            rpi: adv.rpi,
            aem: adv.aem,
            rssi_dbm: -70,
        }],
    });
    assert_eq!(
        actors[1].send(RadioTick).await.unwrap().unwrap(),
        1,
        "b recorded the sighting"
    );
    actors[0]
        .send(SetRadio {
            bluetooth_on: false,
            exposure_logging_on: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        radios[0].advertising(),
        None,
        "nothing advertised with Bluetooth off"
    );
    let status = actors[0].send(GetStatus).await.unwrap().unwrap();
    assert!(status.consented && !status.bluetooth_on);
    assert_eq!(status.days_of_use, 1);
}

/// A simulated radio asks for a day of advertisements at once: the same RPIs, AEMs and
/// rotations as a radio asking every minute, from an agent on the same seed.
#[tokio::test]
async fn a_days_schedule_equals_asking_every_minute() {
    let dir = tempfile::tempdir().unwrap();
    let day_start = UnixMillis(20_400 * 86_400_000);
    let mut agents = Vec::new();
    let mut clocks = Vec::new();
    for name in ["minute", "day"] {
        let clock = ManualClock::at(day_start.plus_millis(3_600_000));
        let log = SledLog::open_scoped(&dir.path().join(name), LogScope::Device).unwrap();
        let mut agent = Agent::open(
            log.clone(),
            log,
            name,
            Arc::new(clock.clone()),
            Box::new(SeededRandom::from_u64(4, 4)),
            AgentConfig::default(),
        )
        .await
        .unwrap();
        agent.consent(0).await.unwrap();
        agents.push(agent);
        clocks.push(clock);
    }
    let end = day_start.plus_millis(86_400_000);
    let schedule = agents[1]
        .advertisements_until(end.plus_millis(3_600_000))
        .await
        .unwrap();
    assert!(schedule.len() > 60, "{} rotations", schedule.len());
    assert_eq!(schedule.last().unwrap().1, end, "ends at midnight");
    let mut t = clocks[0].now();
    let mut checked = 0;
    while t < end {
        clocks[0].set(t);
        let adv = agents[0].advertisement().await.unwrap().unwrap();
        let (_, _, scheduled) = schedule
            .iter()
            .find(|(from, until, _)| *from <= t && t < *until)
            .unwrap();
        assert_eq!(adv, *scheduled, "at {t:?}");
        t = t.plus_millis(60_000);
        checked += 1;
    }
    assert_eq!(checked, 23 * 60);
}
