//! `hotaru device`: one device agent in a data directory, for QA, support and our own
//! checks. Every subcommand takes `--at TIME` (the device's clock) and `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hotaru_device::agent::APP_VERSION;
use hotaru_device::reference;
use hotaru_device::{Agent, AgentConfig, GatewayClient, Scan, Sighting};
use hotaru_events::device::{GuidanceAnswer, GuidanceScreen, RegistrationOutcome};
use hotaru_events::domain::Day;
use hotaru_events::{Clock, ManualClock, SystemClock, UnixMillis};
use hotaru_log::{LogScope, SledLog};
use hotaru_protocol::export::PublicKey;
use hotaru_protocol::random::OsRandom;
use hotaru_protocol::risk::DayRisk;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub(crate) enum DeviceCommand {
    /// First start: the user's consent (nothing is advertised, scanned or stored before).
    Init(InitArgs),
    /// Print what the device advertises at that time: {"rpi": HEX, "aem": HEX}.
    Advertise(Common),
    /// Record a sighting as the radio would.
    Hear(HearArgs),
    /// The OS's switches: Bluetooth and exposure logging.
    Settings(SettingsArgs),
    /// Download index.txt and new exports, verify, match, score; print the exposure screen.
    Check(CheckArgs),
    /// Register with a processing number and the onset (or test) date.
    Register(RegisterArgs),
    /// Consent, days of use, the exposure screen.
    Status(Common),
    /// The guidance flow for the answers given (the screens shown, in order).
    Guidance(GuidanceArgs),
    /// Print the operation log for review; with --send and --gateway, send it.
    Log(LogArgs),
    /// Withdraw consent: every key, record and event of the device is erased.
    Withdraw(Common),
    /// Run the agent as a long-lived process (checks daily; BlueZ radio with --ble).
    Run(RunArgs),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// The device's directory (its own log and encrypted store).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The device's clock, RFC 3339 [default: now].
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    c: Common,
    /// The user agrees to exposure logging (required).
    #[arg(long)]
    consent: bool,
    /// The device model (its transmit power): one of the model table's names.
    #[arg(long, value_name = "NAME", default_value = "Generic phone")]
    model: String,
}

#[derive(Args, Debug)]
pub(crate) struct HearArgs {
    #[command(flatten)]
    c: Common,
    #[arg(long, value_name = "HEX")]
    rpi: String,
    #[arg(long, value_name = "HEX")]
    aem: String,
    /// Received signal strength, dBm.
    #[arg(long, value_name = "DBM", allow_hyphen_values = true)]
    rssi: i8,
    /// The time this scan stands for [default: since the last scan, at most 300].
    #[arg(long, value_name = "S")]
    seconds: Option<u16>,
}

#[derive(Args, Debug)]
pub(crate) struct SettingsArgs {
    #[command(flatten)]
    c: Common,
    #[arg(long, value_name = "on|off")]
    bluetooth: Option<OnOff>,
    #[arg(long, value_name = "on|off")]
    exposure_logging: Option<OnOff>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct GatewayArgs {
    /// The gateway's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// Attempts of a request that fails at the network or with a 5xx (error D after).
    #[arg(long, default_value_t = 4)]
    attempts: u32,
    /// The first wait between attempts, milliseconds (doubling).
    #[arg(long, default_value_t = 500)]
    retry_ms: u64,
}

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    g: GatewayArgs,
    /// The health authority's public key (PEM): files are verified against it.
    #[arg(long, value_name = "PEM")]
    public_key: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    g: GatewayArgs,
    /// The processing number from the health centre (8 half-width digits).
    #[arg(long)]
    number: String,
    /// Symptom onset (or test) date, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    onset: String,
}

#[derive(Args, Debug)]
pub(crate) struct GuidanceArgs {
    #[command(flatten)]
    c: Common,
    /// Answers in order: yes/no to symptoms, close contacts, wanting a test.
    #[arg(long, value_delimiter = ',', value_name = "yes,no,...")]
    answers: Vec<String>,
    /// Where the user is now (JIS code 1-47): the proposed prefecture variant.
    #[arg(long, value_name = "CODE")]
    prefecture: Option<u8>,
}

#[derive(Args, Debug)]
pub(crate) struct LogArgs {
    #[command(flatten)]
    c: Common,
    /// Send the log (the user reviewed it and consents to the stated purpose).
    #[arg(long, requires = "gateway")]
    send: bool,
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    g: GatewayArgs,
    #[arg(long, value_name = "PEM")]
    public_key: PathBuf,
    /// Use the adapter's Bluetooth radio (BlueZ; needs the `ble` build feature).
    #[arg(long)]
    ble: bool,
    /// Hours between exposure checks.
    #[arg(long, default_value_t = 24)]
    check_every_hours: u64,
}

type DeviceAgent = Agent<SledLog, SledLog>;

fn clock(at: &Option<String>) -> anyhow::Result<Arc<dyn Clock>> {
    Ok(match at {
        None => Arc::new(SystemClock),
        Some(t) => {
            let ts: jiff::Timestamp = t
                .parse()
                .with_context(|| format!("--at {t:?} is not an RFC 3339 time"))?;
            let ms = u64::try_from(ts.as_millisecond()).context("--at is before 1970")?;
            Arc::new(ManualClock::at(UnixMillis(ms)))
        }
    })
}

async fn open(c: &Common, config: AgentConfig) -> anyhow::Result<DeviceAgent> {
    std::fs::create_dir_all(&c.data_dir)
        .with_context(|| format!("cannot create {}", c.data_dir.display()))?;
    let log = SledLog::open_scoped(&c.data_dir, LogScope::Device)?;
    Ok(Agent::open(
        log.clone(),
        log,
        "self",
        clock(&c.at)?,
        Box::new(OsRandom::new()),
        config,
    )
    .await?)
}

async fn open_consented(c: &Common, config: AgentConfig) -> anyhow::Result<DeviceAgent> {
    let agent = open(c, config).await?;
    if !agent.state().consented() {
        anyhow::bail!(
            "no consent on this device: run `hotaru device init --data-dir {} --consent` first",
            c.data_dir.display()
        );
    }
    Ok(agent)
}

fn with_gateway(
    g: &GatewayArgs,
    public_key: Option<&Path>,
) -> anyhow::Result<(GatewayClient, AgentConfig)> {
    let mut config = AgentConfig::default();
    config.retry.attempts = g.attempts.max(1);
    config.retry.first_wait = Duration::from_millis(g.retry_ms);
    if let Some(p) = public_key {
        let pem =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        config.public_key = Some(
            PublicKey::from_pem(&pem)
                .with_context(|| format!("{} is not a public key", p.display()))?,
        );
    }
    Ok((GatewayClient::new(&g.gateway)?, config))
}

fn date(day: u32) -> String {
    jiff::Timestamp::from_second(i64::from(day) * 86_400)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn exposures_json(days: &[DayRisk]) -> Value {
    Value::Array(
        days.iter()
            .map(|d| {
                json!({
                    "date": date(d.day),
                    "score": d.score.floor(),
                    "scan_seconds": d.scan_seconds,
                    "windows": d.windows,
                })
            })
            .collect(),
    )
}

#[allow(clippy::print_stdout)]
fn print(json_out: bool, v: Value, text: impl FnOnce(&Value) -> String) {
    if json_out {
        println!("{v}");
    } else {
        println!("{}", text(&v));
    }
}

fn parse_onset(s: &str) -> anyhow::Result<Day> {
    let d: jiff::civil::Date = s
        .parse()
        .with_context(|| format!("--onset {s:?} is not YYYY-MM-DD"))?;
    let secs = d.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second();
    Ok(Day(
        u32::try_from(secs / 86_400).context("--onset is before 1970")?
    ))
}

fn outcome_message(o: RegistrationOutcome) -> &'static str {
    match o {
        RegistrationOutcome::Completed { .. } => {
            "registration completed: thank you; phones that were near you will be notified"
        }
        RegistrationOutcome::FormatError => {
            "registration error: the processing number's format does not match (8 half-width digits)"
        }
        RegistrationOutcome::WrongNumber => "the processing number entered in the app is wrong",
        RegistrationOutcome::AttemptLimit => {
            "registration error: the attempt limit was reached; the app will close"
        }
        RegistrationOutcome::Unavailable => {
            "failed: try again later (do not uninstall the app: that erases your contact records)"
        }
        RegistrationOutcome::BluetoothOff => {
            "Bluetooth is off: nothing can be recorded or registered"
        }
        RegistrationOutcome::ExposureLoggingOff => {
            "exposure logging is disabled in the OS settings"
        }
        RegistrationOutcome::NothingToSubmit => {
            "there are no contact records to submit; submission is not needed"
        }
    }
}

fn screen_text(s: GuidanceScreen, prefecture: Option<u8>) -> String {
    match s {
        GuidanceScreen::Contacts => "contacts with positive users: see the count and dates".into(),
        GuidanceScreen::AskedSymptoms => "do you have symptoms (fever, cough, breathing difficulty, strong fatigue)?".into(),
        GuidanceScreen::AskedCloseContacts => "in the last two weeks, did anyone close to you test positive or have suspected symptoms?".into(),
        GuidanceScreen::OfferedTest => "do you want to be tested anyway?".into(),
        GuidanceScreen::AdvisedBooking => "book the returnee/contact outpatient clinic promptly and wear a mask".into(),
        GuidanceScreen::AdvisedWatchHealth => "watch your health for 14 days; if it changes, enter your symptoms again".into(),
        GuidanceScreen::AdvisedFamilyDoctor => "phone your family doctor or a nearby clinic".into(),
        GuidanceScreen::ConsultationCentres => {
            let national = &reference::prefectures().national_line;
            let p = prefecture.and_then(reference::prefecture);
            let centres = p
                .map(|p| p.centres.iter().map(|c| c.name_en.clone()).collect::<Vec<_>>().join("; "))
                .unwrap_or_default();
            format!("consultation: {centres}; {} {}", national.name_en, national.phone)
        }
    }
}

pub(crate) async fn run(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCommand::Init(a) => {
            if !a.consent {
                anyhow::bail!("the device starts only with the user's consent: pass --consent");
            }
            let model = reference::model_index(&a.model).with_context(|| {
                let names: Vec<_> = reference::models()
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                format!("unknown model {:?}; known: {}", a.model, names.join(", "))
            })?;
            let mut agent = open(&a.c, AgentConfig::default()).await?;
            if agent.state().consented() {
                anyhow::bail!(
                    "this device has consented already (started {})",
                    date(agent.status().started.map_or(0, |d| d.0))
                );
            }
            agent.consent(model).await?;
            let s = agent.status();
            print(
                a.c.json,
                json!({"consented": true, "started": date(s.started.map_or(0, |d| d.0)), "model": reference::model(model).name}),
                |v| {
                    format!(
                        "consent given; exposure logging started on {}",
                        v["started"].as_str().unwrap_or("")
                    )
                },
            );
        }
        DeviceCommand::Advertise(c) => {
            let mut agent = open_consented(&c, AgentConfig::default()).await?;
            match agent.advertisement().await? {
                Some(adv) => print(
                    c.json,
                    json!({"rpi": hex::encode(adv.rpi), "aem": hex::encode(adv.aem)}),
                    |v| {
                        format!(
                            "rpi {} aem {}",
                            v["rpi"].as_str().unwrap_or(""),
                            v["aem"].as_str().unwrap_or("")
                        )
                    },
                ),
                None => print(
                    c.json,
                    json!({"rpi": null, "aem": null, "reason": "not logging (Bluetooth or exposure logging off)"}),
                    |_| "nothing is advertised: Bluetooth or exposure logging is off".into(),
                ),
            }
        }
        DeviceCommand::Hear(a) => {
            let rpi: [u8; 16] = hex::decode(&a.rpi)
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("--rpi is 16 bytes of hex")?;
            let aem: [u8; 4] = hex::decode(&a.aem)
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("--aem is 4 bytes of hex")?;
            let mut agent = open_consented(&a.c, AgentConfig::default()).await?;
            agent.housekeeping().await?;
            let scan = Scan {
                at: agent.now(),
                sightings: vec![Sighting {
                    rpi,
                    aem,
                    rssi_dbm: a.rssi,
                }],
            };
            let n = agent.record_scans(&[scan], a.seconds).await?;
            print(a.c.json, json!({"recorded": n}), |v| {
                if v["recorded"] == 0 {
                    "not recorded: Bluetooth or exposure logging is off".into()
                } else {
                    "recorded".into()
                }
            });
        }
        DeviceCommand::Settings(a) => {
            let mut agent = open_consented(&a.c, AgentConfig::default()).await?;
            let s = agent.status();
            let bt = a
                .bluetooth
                .map_or(s.bluetooth_on, |v| matches!(v, OnOff::On));
            let logging = a
                .exposure_logging
                .map_or(s.exposure_logging_on, |v| matches!(v, OnOff::On));
            agent.set_radio(bt, logging).await?;
            print(
                a.c.json,
                json!({"bluetooth": bt, "exposure_logging": logging}),
                |v| v.to_string(),
            );
        }
        DeviceCommand::Check(a) => {
            let (client, config) = with_gateway(&a.g, Some(&a.public_key))?;
            let mut agent = open_consented(&a.c, config).await?;
            let r = agent.check(&client).await?;
            let v = json!({
                "notified": r.notified,
                "notifications": agent.status().notifications,
                "exposures": exposures_json(&r.exposures),
                "files": r.files,
                "refused_files": r.refused_files,
                "keys": r.keys,
                "matches": r.matches,
            });
            print(a.c.json, v, |v| {
                format!(
                    "{} files checked ({} refused), {} keys; contacts with positive users: {}{}",
                    v["files"],
                    v["refused_files"],
                    v["keys"],
                    r.exposures.len(),
                    if r.notified { " (notified)" } else { "" }
                )
            });
        }
        DeviceCommand::Register(a) => {
            let onset = parse_onset(&a.onset)?;
            let (client, config) = with_gateway(&a.g, None)?;
            let mut agent = open_consented(&a.c, config).await?;
            let o = agent.register(&client, &a.number, onset).await?;
            let mut v = json!({"outcome": o.code(), "message": outcome_message(o)});
            if let RegistrationOutcome::Completed { accepted } = o {
                v["accepted"] = json!(accepted);
            }
            print(a.c.json, v, |v| {
                v["message"].as_str().unwrap_or("").to_owned()
            });
            return Ok(if matches!(o, RegistrationOutcome::Completed { .. }) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        DeviceCommand::Status(c) => {
            let agent = open(&c, AgentConfig::default()).await?;
            let s = agent.status();
            let v = json!({
                "consented": s.consented,
                "started": s.started.map(|d| date(d.0)),
                "days_of_use": s.days_of_use,
                "bluetooth": s.bluetooth_on,
                "exposure_logging": s.exposure_logging_on,
                "exposures": exposures_json(&s.exposures),
                "notifications": s.notifications,
                "registered": s.registered,
                "keys_held": s.keys_held,
            });
            print(c.json, v, |v| {
                format!(
                    "consent: {}; using since {} ({} days); contacts with positive users: {}",
                    v["consented"],
                    v["started"],
                    v["days_of_use"],
                    s.exposures.len()
                )
            });
        }
        DeviceCommand::Guidance(a) => {
            let answers = a
                .answers
                .iter()
                .map(|s| match s.trim() {
                    "yes" | "y" => Ok(GuidanceAnswer::Yes),
                    "no" | "n" => Ok(GuidanceAnswer::No),
                    other => Err(anyhow::anyhow!("answer {other:?} is not yes or no")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut agent = open_consented(&a.c, AgentConfig::default()).await?;
            let shown = agent.guidance(&answers, a.prefecture).await?;
            let screens: Vec<Value> = shown
                .iter()
                .map(|g| json!({"screen": format!("{:?}", g.screen), "text": screen_text(g.screen, g.prefecture), "prefecture": g.prefecture}))
                .collect();
            print(a.c.json, json!({"screens": screens}), |v| {
                v["screens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| s["text"].as_str().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        DeviceCommand::Log(a) => {
            let gateway = a.gateway.clone();
            let mut agent = open_consented(&a.c, AgentConfig::default()).await?;
            let text = agent.operation_log().await?;
            if a.send {
                let client = GatewayClient::new(gateway.as_deref().unwrap_or_default())?;
                let id = agent.send_log(&client, &text).await?;
                print(
                    a.c.json,
                    json!({"log_id": hex::encode(id.0), "log": text}),
                    |v| {
                        format!(
                            "sent; your log ID (quote it to support): {}",
                            v["log_id"].as_str().unwrap_or("")
                        )
                    },
                );
            } else {
                print(a.c.json, json!({"log": text}), |_| text.clone());
            }
        }
        DeviceCommand::Withdraw(c) => {
            {
                let mut agent = open_consented(&c, AgentConfig::default()).await?;
                agent.withdraw().await?;
            }
            // Uninstall semantics: the device's directory (log and store) goes entirely.
            std::fs::remove_dir_all(&c.data_dir)
                .with_context(|| format!("cannot erase {}", c.data_dir.display()))?;
            print(c.json, json!({"erased": true}), |_| {
                "consent withdrawn; everything on this device was erased".into()
            });
        }
        DeviceCommand::Run(a) => return run_agent(a).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_agent(a: RunArgs) -> anyhow::Result<ExitCode> {
    let (client, config) = with_gateway(&a.g, Some(&a.public_key))?;
    let mut agent = open_consented(&a.c, config).await?;
    let mut radio: Box<dyn hotaru_device::Radio> = if a.ble {
        ble_radio(clock(&a.c.at)?).await?
    } else {
        Box::new(hotaru_device::ScriptedRadio::default())
    };
    tracing::info!(app = APP_VERSION, ble = a.ble, "device agent running");
    let mut last_check: Option<UnixMillis> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let adv = agent.advertisement().await?;
        radio.advertise(adv);
        let scans = radio.scans();
        agent.record_scans(&scans, None).await?;
        let now = agent.now();
        if last_check.is_none_or(|l| now.0 >= l.0 + a.check_every_hours * 3_600_000) {
            match agent.check(&client).await {
                Ok(r) => tracing::info!(
                    files = r.files,
                    refused = r.refused_files,
                    exposures = r.exposures.len(),
                    notified = r.notified,
                    "exposure check"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "exposure check failed; next try at the next interval")
                }
            }
            last_check = Some(now);
        }
        if let Err(e) = agent.maybe_chaff(&client, 3).await {
            tracing::debug!(error = %e, "chaff upload failed");
        }
    }
    radio.advertise(None);
    tracing::info!("device agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(feature = "ble")]
async fn ble_radio(clock: Arc<dyn Clock>) -> anyhow::Result<Box<dyn hotaru_device::Radio>> {
    Ok(Box::new(
        hotaru_device::ble::BlueZRadio::open(clock, Duration::from_secs(240))
            .await
            .context("cannot open the Bluetooth adapter")?,
    ))
}

#[cfg(not(feature = "ble"))]
async fn ble_radio(_: Arc<dyn Clock>) -> anyhow::Result<Box<dyn hotaru_device::Radio>> {
    anyhow::bail!("this hotaru was built without Bluetooth: build with `--features ble`")
}
