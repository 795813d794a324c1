//! Device agents against the real gateway over HTTP on 127.0.0.1, on the embedded store
//! and on a real nats-server: two phones near each other for 20 minutes at about 1 m, one
//! registers with a real number, after a batch the other is notified once with one contact
//! on the right date and walks the guidance; at 5 m or for 3 minutes nothing is notified; a
//! file signed by another key is refused; every registration error A-G; 14 days on, the
//! screen and the records are empty; the server's log holds no device event and its audit
//! passes; the device's log replays to the same state.

use hotaru_protocol::random::OsRandom;
use std::sync::Arc;
use std::time::Duration;

use hotaru_actors::{Arbiters, IdSource, RandomIds};
use hotaru_device::{Agent, AgentConfig, GatewayClient, Scan, Sighting};
use hotaru_events::device::{GuidanceAnswer, GuidanceScreen, RegistrationOutcome};
use hotaru_events::domain::Day;
use hotaru_events::{Clock, Context, ManualClock, UnixMillis};
use hotaru_log::{AnyLog, EventLog, LogScope, NatsConfig, NatsLog, SledLog};
use hotaru_protocol::export::PublicKey;
use hotaru_protocol::random::SeededRandom;
use hotaru_server::credentials::{self, Role};
use hotaru_server::signing::add_signing_key;
use hotaru_server::{Node, ServerConfig};
use serde_json::{Value, json};

use hotaru_events::DAY_MS;
const MINUTE_MS: u64 = 60_000;

struct Server {
    base: String,
    centre: String,
    operator: String,
    log: AnyLog,
    public_key: PublicKey,
    http: reqwest::Client,
    _keep: Vec<Box<dyn std::any::Any>>,
}

async fn server(nats: Option<&hotaru_test_support::NatsServer>, clock: Arc<dyn Clock>) -> Server {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let log = match nats {
        Some(s) => AnyLog::Nats(NatsLog::connect(&NatsConfig::new(s.url())).await.unwrap()),
        None => {
            let d = tempfile::tempdir().unwrap();
            let log = SledLog::open(d.path()).unwrap();
            keep.push(Box::new(d));
            AnyLog::Sled(log)
        }
    };
    let config = ServerConfig {
        digest_secret: Some("ab".repeat(32)),
        ..ServerConfig::default()
    };
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    let arbiters = Arbiters::new(2);
    let node = Node::start(log.clone(), &config, clock.clone(), ids, &arbiters)
        .await
        .unwrap();
    let now = clock.now();
    let public_key = add_signing_key(&log, "440", 440, now, &RandomIds::default())
        .await
        .unwrap();
    let (_, centre) = credentials::add(&log, Role::Centre, "centre", &OsRandom::new())
        .await
        .unwrap();
    let (_, operator) = credentials::add(&log, Role::Operator, "ops", &OsRandom::new())
        .await
        .unwrap();
    let limits = hotaru_edge_gateway::limits::EdgeLimits::new(100_000, 10_000);
    let gateway = match &log {
        AnyLog::Nats(n) => {
            let client = n.jetstream().client();
            let service = hotaru_server::commands::serve_nats(node.actors(), client.clone())
                .await
                .unwrap();
            keep.push(Box::new(service));
            hotaru_edge_gateway::Gateway::new(
                hotaru_server::commands::Commands::Nats(client),
                log.clone(),
                node.distribution.clone(),
                clock,
                Arc::new(RandomIds::default()),
                limits,
            )
        }
        AnyLog::Sled(_) => hotaru_edge_gateway::Gateway::for_node(
            &node,
            log.clone(),
            clock,
            Arc::new(RandomIds::default()),
            limits,
        ),
    };
    let (addr, server) = hotaru_edge_gateway::serve_loopback(gateway).unwrap();
    let port = addr.port();
    actix_rt::spawn(server);
    keep.push(Box::new(arbiters));
    keep.push(Box::new(node.registration));
    Server {
        base: format!("http://127.0.0.1:{port}"),
        centre,
        operator,
        log,
        public_key,
        http: reqwest::Client::new(),
        _keep: keep,
    }
}

impl Server {
    /// A health centre confirms a case with this onset date and issues its number.
    async fn number(&self, onset: u32) -> String {
        let date = jiff::Timestamp::from_second(i64::from(onset) * 86_400)
            .unwrap()
            .strftime("%Y-%m-%d")
            .to_string();
        let r = self
            .http
            .post(format!("{}/v1/cases", self.base))
            .bearer_auth(&self.centre)
            .json(&json!({ "symptomOnsetDate": date }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let case: Value = r.json().await.unwrap();
        let r = self
            .http
            .post(format!(
                "{}/v1/cases/{}/processing-number",
                self.base,
                case["caseId"].as_str().unwrap()
            ))
            .bearer_auth(&self.centre)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let n: Value = r.json().await.unwrap();
        n["processingNumber"].as_str().unwrap().to_owned()
    }

    async fn publish_batch(&self) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/admin/batches", self.base))
            .bearer_auth(&self.operator)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// Where each device keeps its own log and store: its own sled directory, or (the NATS
/// run) one fleet log on the same nats-server, in the device streams apart from the
/// server's.
enum DeviceStore {
    Sled(tempfile::TempDir),
    Fleet(NatsLog),
}

type Phone = Agent<AnyLog, AnyLog>;

async fn phone(
    store: &DeviceStore,
    name: &str,
    seed: u64,
    clock: &ManualClock,
    public_key: Option<PublicKey>,
) -> Phone {
    let log = match store {
        DeviceStore::Sled(dir) => {
            let path = dir.path().join(name);
            AnyLog::Sled(SledLog::open_scoped(&path, LogScope::Device).unwrap())
        }
        DeviceStore::Fleet(n) => AnyLog::Nats(n.clone()),
    };
    let config = AgentConfig {
        public_key,
        retry: hotaru_device::Retry {
            attempts: 2,
            first_wait: Duration::from_millis(10),
        },
        ..AgentConfig::default()
    };
    Agent::open(
        log.clone(),
        log,
        name,
        Arc::new(clock.clone()),
        Box::new(SeededRandom::from_u64(seed, 0)),
        config,
    )
    .await
    .unwrap()
}

/// GAEN attenuation of a phone `metres` away (log-distance, 55 dB at 1 m).
fn rssi_at(metres: f64, tx_power: i8) -> i8 {
    let attenuation = 55.0 + 20.0 * metres.log10();
    (f64::from(tx_power) - attenuation).round() as i8
}

/// `listener` hears `speaker` every 4 minutes for `minutes`, from the clock's now.
async fn near(
    clock: &ManualClock,
    speaker: &mut Phone,
    listener: &mut Phone,
    metres: f64,
    minutes: u64,
) {
    let start = clock.now();
    let tx = hotaru_device::reference::model(speaker.state().model).tx_power_dbm;
    let mut t = 0;
    while t < minutes {
        clock.set(start.plus_millis(t * MINUTE_MS));
        let adv = speaker.advertisement().await.unwrap().expect("advertising");
        let scan = Scan {
            at: clock.now(),
            sightings: vec![Sighting {
                rpi: adv.rpi,
                aem: adv.aem,
                rssi_dbm: rssi_at(metres, tx),
            }],
        };
        let seconds = (minutes - t).min(4) as u16 * 60;
        listener.record_scans(&[scan], Some(seconds)).await.unwrap();
        t += 4;
    }
    clock.set(start.plus_millis(minutes * MINUTE_MS));
}

async fn no_device_event_in(log: &AnyLog) {
    assert_eq!(log.head(Context::Device).await.unwrap(), 0);
    for ctx in Context::SERVER {
        let mut from = 1;
        loop {
            let batch = log.read_all(ctx, from, 4096).await.unwrap();
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in &batch {
                for e in &c.commit.events {
                    assert!(
                        !e.event_type.is_device(),
                        "{} in {ctx}",
                        e.event_type.name()
                    );
                }
            }
        }
    }
}

async fn audit_passes(log: &AnyLog, at: UnixMillis) {
    let source = hotaru_audit::LiveSource {
        log: log.clone(),
        kind: "test",
    };
    let rules = hotaru_audit::AuditRules::at(at);
    let report = hotaru_audit::audit(&source, &rules, Vec::new(), &mut |_, _, _| {})
        .await
        .unwrap();
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {:?}", c.name, c.findings))
        .collect();
    assert!(report.passed, "{failed:?}");
}

async fn story(nats: bool) {
    let nats_server = nats.then(hotaru_test_support::NatsServer::start);
    // One clock for the server and the phones, at 09:00 UTC of a recent day.
    let real_today = hotaru_events::SystemClock.now().day();
    let contact_day = real_today - 3;
    let clock = ManualClock::at(UnixMillis(u64::from(contact_day) * DAY_MS + 9 * 3_600_000));
    let srv = server(nats_server.as_ref(), Arc::new(clock.clone())).await;
    let client = GatewayClient::new(&srv.base).unwrap();
    let store = match &nats_server {
        Some(s) => DeviceStore::Fleet(
            NatsLog::connect(&NatsConfig::new(s.url()).devices())
                .await
                .unwrap(),
        ),
        None => DeviceStore::Sled(tempfile::tempdir().unwrap()),
    };
    let key = Some(srv.public_key.clone());
    let mut a = phone(&store, "a", 1, &clock, key.clone()).await;
    let mut b = phone(&store, "b", 2, &clock, key.clone()).await;
    let mut far = phone(&store, "far", 3, &clock, key.clone()).await;
    let mut brief = phone(&store, "brief", 4, &clock, key.clone()).await;
    // The wrong key: a file it cannot verify is refused and nothing in it is read.
    let other = PublicKey::from_pem(
        &hotaru_protocol::export::Signer::from_pkcs8(
            hotaru_protocol::export::SignatureInfo::new("x", "v1"),
            &hotaru_protocol::export::Signer::generate_pkcs8(&mut OsRandom::new()),
        )
        .unwrap()
        .public_key()
        .to_pem(),
    )
    .unwrap();
    let mut wrong_key = phone(&store, "wrongkey", 5, &clock, Some(other)).await;
    for p in [&mut a, &mut b, &mut far, &mut brief, &mut wrong_key] {
        p.consent(0).await.unwrap();
    }
    assert_eq!(b.status().days_of_use, 1);

    // Day D: b and wrongkey 20 minutes at 1 m from a; far at 5 m; brief 3 minutes.
    near(&clock, &mut a, &mut b, 1.0, 20).await;
    clock.set(UnixMillis(u64::from(contact_day) * DAY_MS + 11 * 3_600_000));
    near(&clock, &mut a, &mut wrong_key, 1.0, 20).await;
    clock.set(UnixMillis(u64::from(contact_day) * DAY_MS + 13 * 3_600_000));
    near(&clock, &mut a, &mut far, 5.0, 20).await;
    clock.set(UnixMillis(u64::from(contact_day) * DAY_MS + 15 * 3_600_000));
    near(&clock, &mut a, &mut brief, 1.0, 3).await;

    // Day D+1: a's case is confirmed (onset D-1) and a registers with its number.
    clock.set(UnixMillis(
        u64::from(contact_day + 1) * DAY_MS + 10 * 3_600_000,
    ));
    let number = srv.number(contact_day - 1).await;
    let outcome = a
        .register(&client, &number, Day(contact_day - 1))
        .await
        .unwrap();
    assert!(
        matches!(outcome, RegistrationOutcome::Completed { accepted } if accepted >= 1),
        "{outcome:?}"
    );
    let batch = srv.publish_batch().await;
    assert_eq!(batch["batches"].as_array().unwrap().len(), 1, "{batch}");

    // b is notified once, with one contact on day D.
    let r = b.check(&client).await.unwrap();
    assert!(r.notified, "{r:?}");
    // Day D was closed with what b recorded on it: 20 minutes, a scan every 4, one RPI.
    assert_eq!(b.state().closed_days.get(&contact_day), Some(&(5, 5)));
    assert_eq!(r.refused_files, 0);
    assert_eq!(r.exposures.len(), 1);
    assert_eq!(r.exposures[0].day, contact_day);
    let again = b.check(&client).await.unwrap();
    assert!(!again.notified);
    assert_eq!(
        again.files, 0,
        "files already checked are not fetched again"
    );
    assert_eq!(b.status().notifications, 1);
    // At 5 m, or for 3 minutes: matched, but nothing notified or listed.
    for p in [&mut far, &mut brief] {
        let r = p.check(&client).await.unwrap();
        assert!(r.matches > 0, "{r:?}");
        assert!(!r.notified && r.exposures.is_empty(), "{r:?}");
    }
    // Signed by another key: refused, nothing matched.
    let r = wrong_key.check(&client).await.unwrap();
    assert_eq!((r.files, r.refused_files, r.matches), (1, 1, 0), "{r:?}");
    assert!(!r.notified);

    // The guidance flow, both variants, from b's exposure.
    use GuidanceAnswer::{No, Yes};
    let screens = |s: Vec<hotaru_events::device::GuidanceShown>| {
        s.into_iter().map(|g| g.screen).collect::<Vec<_>>()
    };
    assert_eq!(
        screens(b.guidance(&[No, No, Yes], None).await.unwrap()),
        [
            GuidanceScreen::Contacts,
            GuidanceScreen::AskedSymptoms,
            GuidanceScreen::AskedCloseContacts,
            GuidanceScreen::OfferedTest,
            GuidanceScreen::AdvisedBooking
        ]
    );
    assert_eq!(
        screens(b.guidance(&[Yes], None).await.unwrap()).last(),
        Some(&GuidanceScreen::AdvisedBooking)
    );
    assert_eq!(
        screens(b.guidance(&[No, Yes], None).await.unwrap()).last(),
        Some(&GuidanceScreen::AdvisedBooking)
    );
    let shown = b.guidance(&[No, No, No], Some(13)).await.unwrap();
    assert!(
        shown
            .iter()
            .any(|g| g.screen == GuidanceScreen::ConsultationCentres && g.prefecture == Some(13))
    );
    assert_eq!(
        shown.last().unwrap().screen,
        GuidanceScreen::AdvisedWatchHealth
    );

    // The operation log: reviewed, sent, its ID shown; the server accepts it as clean.
    let text = b.operation_log().await.unwrap();
    assert!(
        text.contains("exposure check: ok") && text.contains("model: "),
        "{text}"
    );
    let log_id = b.send_log(&client, &text).await.unwrap();
    assert_eq!(b.state().logs_sent, vec![log_id]);

    // Errors A-G, through the real gateway where the server decides.
    let mut fresh = phone(&store, "fresh", 6, &clock, None).await;
    fresh.consent(0).await.unwrap();
    assert_eq!(
        fresh
            .register(&client, &number, Day(contact_day))
            .await
            .unwrap(),
        RegistrationOutcome::NothingToSubmit,
        "G"
    );
    assert_eq!(
        b.register(&client, "1234567", Day(contact_day))
            .await
            .unwrap(),
        RegistrationOutcome::FormatError,
        "A"
    );
    assert_eq!(
        b.register(&client, "１２３４５６７８", Day(contact_day))
            .await
            .unwrap(),
        RegistrationOutcome::FormatError,
        "A"
    );
    let dead = GatewayClient::new(&format!(
        "http://127.0.0.1:{}",
        hotaru_test_support::free_port()
    ))
    .unwrap();
    assert_eq!(
        b.register(&dead, "12345678", Day(contact_day))
            .await
            .unwrap(),
        RegistrationOutcome::Unavailable,
        "D"
    );
    b.set_radio(false, true).await.unwrap();
    assert_eq!(
        b.register(&client, "12345678", Day(contact_day))
            .await
            .unwrap(),
        RegistrationOutcome::BluetoothOff,
        "E"
    );
    assert!(
        b.advertisement().await.unwrap().is_none(),
        "nothing advertised with Bluetooth off"
    );
    b.set_radio(true, false).await.unwrap();
    assert_eq!(
        b.register(&client, "12345678", Day(contact_day))
            .await
            .unwrap(),
        RegistrationOutcome::ExposureLoggingOff,
        "F"
    );
    b.set_radio(true, true).await.unwrap();
    // The number a used is spent: B. Wrong guesses from one source reach the limit: C.
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(
            b.register(&client, &number, Day(contact_day))
                .await
                .unwrap(),
        );
    }
    assert_eq!(seen[0], RegistrationOutcome::WrongNumber, "B: {seen:?}");
    assert_eq!(
        *seen.last().unwrap(),
        RegistrationOutcome::AttemptLimit,
        "C: {seen:?}"
    );
    assert!(
        !b.state().registered(),
        "no failure was ever shown as completed"
    );

    // The device's log replays to the same state.
    let before = b.state().clone();
    drop(b);
    let mut b = phone(&store, "b", 99, &clock, key.clone()).await;
    assert_eq!(b.state(), &before);

    // 14 days after the contact: the screen and the records are empty.
    clock.set(UnixMillis(
        u64::from(contact_day + 13) * DAY_MS + 23 * 3_600_000,
    ));
    assert_eq!(b.status().exposures.len(), 1, "still listed on day 13");
    clock.set(UnixMillis(u64::from(contact_day + 14) * DAY_MS + 3_600_000));
    b.housekeeping().await.unwrap();
    assert!(b.status().exposures.is_empty());
    assert!(
        !b.state().teks.contains_key(&contact_day) && !b.state().matched.contains_key(&contact_day)
    );
    let stored = b.stored_days().await.unwrap();
    assert!(
        !stored.contains_key(&contact_day),
        "records of day D destroyed: {stored:?}"
    );
    assert!(stored.keys().all(|d| *d > contact_day));

    // The server's log holds no device event, and the committee's audit passes.
    no_device_event_in(&srv.log).await;
    audit_passes(&srv.log, clock.now()).await;
}

#[actix_rt::test]
async fn the_story_on_the_embedded_store() {
    story(false).await;
}

#[actix_rt::test]
async fn the_story_on_nats() {
    story(true).await;
}

/// What the agent advertises equals the GAEN cryptography specification's vectors: the
/// spec's TEK (drawn from a source that yields it) at 2020-04-02, transmit power 8 dBm.
#[tokio::test]
async fn advertisements_equal_the_spec_vectors() {
    struct SpecTek;
    impl hotaru_protocol::random::Random for SpecTek {
        fn fill(&mut self, dest: &mut [u8]) {
            let tek = hex::decode("75c734c6dd1a782de7a965da5eb93125").unwrap();
            for (i, b) in dest.iter_mut().enumerate() {
                *b = tek[i % 16];
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open_scoped(dir.path(), LogScope::Device).unwrap();
    let start = 2_642_976u64;
    let clock = ManualClock::at(UnixMillis::from_secs(start * 600));
    let model = hotaru_device::reference::model_index("Spec vector phone").unwrap();
    {
        let mut agent = Agent::open(
            log.clone(),
            log.clone(),
            "spec",
            Arc::new(clock.clone()),
            Box::new(SpecTek),
            AgentConfig::default(),
        )
        .await
        .unwrap();
        agent.consent(model).await.unwrap();
    }
    for (i, rpi, aem) in [
        (0, "8be6cd371c5c891604bfbe49df845096", "72033874"),
        (1, "3c9a1de5dd6b02afa7fded7b570b3e56", "c29211b1"),
        (2, "243ffe9a3b08bded3094bac8630bb8ad", "6adfad03"),
        (143, "f431b62ecf443102ce4ed0407de54bd4", "1215e57e"),
    ] {
        clock.set(UnixMillis::from_secs((start + i) * 600 + 30));
        // A fresh start at each interval begins a new rotation there.
        let mut agent = Agent::open(
            log.clone(),
            log.clone(),
            "spec",
            Arc::new(clock.clone()),
            Box::new(SpecTek),
            AgentConfig::default(),
        )
        .await
        .unwrap();
        let adv = agent.advertisement().await.unwrap().unwrap();
        assert_eq!(hex::encode(adv.rpi), rpi, "RPI of interval {i}");
        assert_eq!(hex::encode(adv.aem), aem, "AEM of interval {i}");
        assert_eq!(adv.address[0] & 0xc0, 0, "a non-resolvable private address");
    }
}

/// A fleet pointed at the server's store by mistake: the audit finds the device event.
#[tokio::test]
async fn the_audit_fails_when_the_server_log_holds_a_device_event() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(UnixMillis(1_790_000_000_000));
    {
        let server_log = AnyLog::Sled(SledLog::open(dir.path()).unwrap());
        audit_passes(&server_log, clock.now()).await;
    }
    {
        let wrong = SledLog::open_scoped(dir.path(), LogScope::Device).unwrap();
        let mut agent = Agent::open(
            wrong.clone(),
            wrong,
            "stray",
            Arc::new(clock.clone()),
            Box::new(SeededRandom::from_u64(1, 1)),
            AgentConfig::default(),
        )
        .await
        .unwrap();
        agent.consent(0).await.unwrap();
    }
    let server_log = AnyLog::Sled(SledLog::open(dir.path()).unwrap());
    let report = hotaru_audit::audit(
        &hotaru_audit::LiveSource {
            log: server_log,
            kind: "sled",
        },
        &hotaru_audit::AuditRules::at(clock.now()),
        Vec::new(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(!report.passed);
    let privacy = report.checks.iter().find(|c| c.name == "privacy").unwrap();
    assert!(!privacy.passed);
    let text = format!("{:?}", privacy.findings);
    assert!(
        text.contains("a device's event is in the server's log: ConsentGiven"),
        "{text}"
    );
}

/// Android's limit: at most 20 export files checked a day. With 21 files published, the
/// first check reads 20, a second check the same day reads none, and the next day reads
/// the last one; the index is "seen" (its ETag kept) only after a complete pass.
#[actix_rt::test]
async fn at_most_twenty_files_are_checked_a_day() {
    let real_today = hotaru_events::SystemClock.now().day();
    let day = real_today - 2;
    let clock = ManualClock::at(UnixMillis(u64::from(day) * DAY_MS + 9 * 3_600_000));
    let srv = server(None, Arc::new(clock.clone())).await;
    let client = GatewayClient::new(&srv.base).unwrap();
    for i in 0..21u8 {
        let number = srv.number(day - 2).await;
        let keys = [hotaru_device::client::UploadKey {
            key_data: [i + 1; 16],
            rolling_start: (day - 1) * 144,
            rolling_period: 144,
            days_since_onset: 1,
        }];
        let body = hotaru_device::client::upload_body(
            &keys,
            &number,
            &jiff::Timestamp::from_second(i64::from(day - 2) * 86_400)
                .unwrap()
                .to_string(),
            &format!("{i:032}"),
        );
        assert_eq!(client.upload(body, false).await.unwrap().accepted, 1);
        let batch = srv.publish_batch().await;
        assert_eq!(batch["batches"].as_array().unwrap().len(), 1, "{batch}");
    }
    let store = DeviceStore::Sled(tempfile::tempdir().unwrap());
    let mut p = phone(&store, "p", 7, &clock, Some(srv.public_key.clone())).await;
    assert_eq!(AgentConfig::default().max_files_per_day, 20);
    p.consent(0).await.unwrap();
    let first = p.check(&client).await.unwrap();
    assert_eq!(first.files, 20, "{first:?}");
    let again = p.check(&client).await.unwrap();
    assert_eq!(again.files, 0, "the day's budget is spent: {again:?}");
    clock.set(UnixMillis(u64::from(day + 1) * DAY_MS + 9 * 3_600_000));
    let next = p.check(&client).await.unwrap();
    assert_eq!(next.files, 1, "{next:?}");
    assert_eq!(next.keys * 20, first.keys, "one more file of the same size");
    let done = p.check(&client).await.unwrap();
    assert_eq!(done.files, 0, "{done:?}");
}

/// What an observer of the wire sees of a registration and of a chaff upload: the same
/// request (line, header names and sizes, body size) and the same answer (status, header
/// names, the same fields), through a byte-counting proxy between the phone and the gateway.
#[actix_rt::test]
async fn chaff_and_a_real_registration_look_the_same_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let real_today = hotaru_events::SystemClock.now().day();
    let day = real_today - 2;
    let clock = ManualClock::at(UnixMillis(u64::from(day) * DAY_MS + 9 * 3_600_000));
    let srv = server(None, Arc::new(clock.clone())).await;
    // The proxy: one connection per upload; what went each way, per connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let upstream = srv.base.trim_start_matches("http://").to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, Vec<u8>)>();
    tokio::spawn(async move {
        loop {
            let (mut down, _) = listener.accept().await.unwrap();
            let mut up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let (mut sent, mut got) = (Vec::new(), Vec::new());
                let mut b1 = [0u8; 16384];
                let mut b2 = [0u8; 16384];
                loop {
                    tokio::select! {
                        n = dr.read(&mut b1) => {
                            let n = n.unwrap_or(0);
                            if n == 0 { break; }
                            sent.extend_from_slice(&b1[..n]);
                            uw.write_all(&b1[..n]).await.unwrap();
                        }
                        n = ur.read(&mut b2) => {
                            let n = n.unwrap_or(0);
                            if n == 0 { break; }
                            got.extend_from_slice(&b2[..n]);
                            dw.write_all(&b2[..n]).await.unwrap();
                        }
                    }
                }
                let _ = tx.send((sent, got));
            });
        }
    });
    let store = DeviceStore::Sled(tempfile::tempdir().unwrap());
    let mut a = phone(&store, "a", 8, &clock, None).await;
    a.consent(0).await.unwrap();
    clock.set(UnixMillis(u64::from(day + 1) * DAY_MS + 10 * 3_600_000));
    let number = srv.number(day).await;
    // A fresh client for each upload, so that each is one connection of the proxy.
    let outcome = a
        .register(&GatewayClient::new(&proxy).unwrap(), &number, Day(day))
        .await
        .unwrap();
    assert!(matches!(outcome, RegistrationOutcome::Completed { .. }));
    let real = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the connection ended")
        .unwrap();
    let mut chaff = Vec::new();
    // The first call draws when chaff is due (within two days at one a day on average).
    assert!(
        !a.maybe_chaff(&GatewayClient::new(&proxy).unwrap(), 1)
            .await
            .unwrap()
    );
    for _ in 0..3 {
        clock.set(clock.now().plus_millis(3 * DAY_MS));
        let c = GatewayClient::new(&proxy).unwrap();
        assert!(a.maybe_chaff(&c, 1).await.unwrap(), "chaff is due");
        drop(c);
        chaff.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the connection ended")
                .unwrap(),
        );
    }

    /// The request line or status line, and each header's name with its value's length.
    fn shape(raw: &[u8]) -> (String, Vec<(String, usize)>, usize) {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap().to_owned();
        let mut headers: Vec<(String, usize)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_ascii_lowercase(), v.trim().len())
            })
            .collect();
        headers.sort();
        (first, headers, body.len())
    }
    fn fields(raw: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(raw);
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let v: Value = serde_json::from_str(body).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }
    let (real_req, real_resp) = shape_pair(&real, shape);
    for c in &chaff {
        let (req, resp) = shape_pair(c, shape);
        assert_eq!(req, real_req, "the requests differ");
        assert_eq!(resp.0, real_resp.0, "the status differs");
        let names = |h: &[(String, usize)]| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&resp.1),
            names(&real_resp.1),
            "the answers' headers differ"
        );
        assert_eq!(fields(&c.1), fields(&real.1), "the answers' fields differ");
        // Both padded to the size class of the request, which the app pads to one.
        assert_eq!(resp.2, real_resp.2, "the answers' sizes differ");
    }
    // The server stored the real keys only: chaff is never a registration.
    let batch = srv.publish_batch().await;
    assert_eq!(batch["batches"][0]["keys"], 1, "{batch}");
}

type Shape = (String, Vec<(String, usize)>, usize);

fn shape_pair(c: &(Vec<u8>, Vec<u8>), shape: fn(&[u8]) -> Shape) -> (Shape, Shape) {
    (shape(&c.0), shape(&c.1))
}
