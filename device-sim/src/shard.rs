//! A shard: an actix actor that owns many device agents (the device crate's own, on the
//! fleet's log and an in-memory encrypted store) and moves them through the phases of a
//! simulated day. Within a shard the phones run concurrently (so their appends share the
//! log's group commits); every phone's result depends only on its own seed and inputs,
//! so the figures are the same whatever the number of shards or threads.

use std::sync::Arc;

use actix::prelude::*;
use futures::StreamExt;
use hotaru_device::client::ExportSource;
use hotaru_device::{Agent, AgentConfig, AgentError, GatewayClient, Scan};
use hotaru_events::device::RegistrationOutcome;
use hotaru_events::domain::Day;
use hotaru_events::{ManualClock, UnixMillis};
use hotaru_log::{AnyLog, MemoryStore};
use hotaru_protocol::random::SeededRandom;
use tokio::sync::Mutex;

use crate::source::{FleetSource, HttpStats, TimedSource};

pub type Phone = Agent<AnyLog, MemoryStore>;

/// One phone to open: its index in the fleet, model, radio and seed.
#[derive(Clone, Copy, Debug)]
pub struct PhoneSpec {
    pub index: u32,
    pub model: u16,
    pub bluetooth_on: bool,
}

/// What one phone advertised over a span, compactly (a million phones hold one each for
/// the day): each rotation's start (unix seconds), RPI and AEM; a rotation lasts until the
/// next one starts, the last until `end`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    pub rotations: Vec<(u32, [u8; 16], [u8; 4])>,
    pub end: u32,
}

impl Schedule {
    /// The RPI and AEM on the air at `t` (unix seconds), if any.
    pub fn at(&self, t: u64) -> Option<([u8; 16], [u8; 4])> {
        let k = self.rotations.partition_point(|r| u64::from(r.0) <= t);
        let &(_, rpi, aem) = self.rotations.get(k.checked_sub(1)?)?;
        (t < u64::from(self.end)).then_some((rpi, aem))
    }

    /// The start and RPI of the first rotation.
    pub fn first(&self) -> Option<(u64, [u8; 16])> {
        self.rotations.first().map(|r| (u64::from(r.0), r.1))
    }
}

/// What the shard's phones did in a check.
#[derive(Clone, Debug, Default)]
pub struct CheckOutcome {
    /// (phone, days newly notified).
    pub notified: Vec<(u32, Vec<u32>)>,
    pub files: u64,
    pub refused_files: u64,
    pub crashed: Vec<(u32, String)>,
}

struct State {
    phones: Vec<Option<Phone>>,
    specs: Vec<PhoneSpec>,
    clock: ManualClock,
    crashed: Vec<(u32, String)>,
}

pub struct Shard {
    state: Arc<Mutex<State>>,
    log: AnyLog,
    store: MemoryStore,
    seed: u64,
    config: AgentConfig,
}

impl Shard {
    pub fn new(log: AnyLog, seed: u64, config: AgentConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                phones: Vec::new(),
                specs: Vec::new(),
                clock: ManualClock::at(UnixMillis(0)),
                crashed: Vec::new(),
            })),
            log,
            store: MemoryStore::default(),
            seed,
            config,
        }
    }
}

impl Shard {
    /// Runs `f` on the shard's state as the actor's one message in progress (the state's
    /// lock is held across the handler's awaits, so messages never interleave).
    fn atomic<T: 'static, F>(
        &self,
        f: impl FnOnce(Arc<Mutex<State>>) -> F,
    ) -> AtomicResponse<Self, T>
    where
        F: std::future::Future<Output = T> + 'static,
    {
        AtomicResponse::new(Box::pin(f(self.state.clone()).into_actor(self)))
    }
}

impl Actor for Shard {
    type Context = Context<Self>;
}

impl actix::Supervised for Shard {}

fn crash(state: &mut State, local: usize, e: &AgentError) {
    let index = state.specs[local].index;
    tracing::warn!(phone = index, error = %e, "a simulated phone failed");
    state.crashed.push((index, e.to_string()));
    state.phones[local] = None;
}

/// Opens the shard's phones; each consents at `at` with its model and radio.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Open {
    pub phones: Vec<PhoneSpec>,
    pub at: UnixMillis,
}

impl Handler<Open> for Shard {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, m: Open, _: &mut Context<Self>) -> Self::Result {
        let (log, store, seed, config) = (
            self.log.clone(),
            self.store.clone(),
            self.seed,
            self.config.clone(),
        );
        self.atomic(move |state| async move {
            let mut s = state.lock().await;
            s.clock.set(m.at);
            let clock = Arc::new(s.clock.clone());
            let opened = futures::future::join_all(m.phones.iter().map(|p| {
                let (log, store, config, clock) =
                    (log.clone(), store.clone(), config.clone(), clock.clone());
                async move {
                    let mut a = Agent::open(
                        log,
                        store,
                        &format!("p{}", p.index),
                        clock,
                        Box::new(SeededRandom::from_u64(seed, u64::from(p.index))),
                        config,
                    )
                    .await?;
                    if !a.state().consented() {
                        a.consent(p.model).await?;
                    }
                    if !p.bluetooth_on {
                        a.set_radio(false, true).await?;
                    }
                    Ok::<_, AgentError>(a)
                }
            }))
            .await;
            for (spec, r) in m.phones.into_iter().zip(opened) {
                s.specs.push(spec);
                match r {
                    Ok(a) => s.phones.push(Some(a)),
                    Err(e) => {
                        s.phones.push(None);
                        let local = s.phones.len() - 1;
                        crash(&mut s, local, &e);
                    }
                }
            }
        })
    }
}

/// Every phone's advertisements from `from` to `until` (within one day).
#[derive(Message)]
#[rtype(result = "Vec<(u32, Schedule)>")]
pub struct Advertise {
    pub from: UnixMillis,
    pub until: UnixMillis,
}

impl Handler<Advertise> for Shard {
    type Result = AtomicResponse<Self, Vec<(u32, Schedule)>>;

    fn handle(&mut self, m: Advertise, _: &mut Context<Self>) -> Self::Result {
        self.atomic(move |state| async move {
            let mut guard = state.lock().await;
            let s = &mut *guard;
            s.clock.set(m.from);
            let results = futures::future::join_all(s.phones.iter_mut().map(|p| async move {
                match p {
                    Some(p) => p.advertisements_until(m.until).await.map(Some),
                    None => Ok(None),
                }
            }))
            .await;
            let mut out = Vec::new();
            for (local, r) in results.into_iter().enumerate() {
                match r {
                    Ok(Some(list)) => {
                        let secs = |t: UnixMillis| u32::try_from(t.as_secs()).unwrap_or(u32::MAX);
                        out.push((
                            s.specs[local].index,
                            Schedule {
                                end: list.last().map_or(0, |l| secs(l.1)),
                                rotations: list
                                    .into_iter()
                                    .map(|(f, _, a)| (secs(f), a.rpi, a.aem))
                                    .collect(),
                            },
                        ))
                    }
                    Ok(None) => {}
                    Err(e) => crash(s, local, &e),
                }
            }
            out
        })
    }
}

/// Scans for the shard's phones, by local index, in time order.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Hear {
    pub scans: Vec<(usize, Vec<Scan>)>,
}

impl Handler<Hear> for Shard {
    type Result = AtomicResponse<Self, u64>;

    fn handle(&mut self, m: Hear, _: &mut Context<Self>) -> Self::Result {
        self.atomic(move |state| async move {
            let mut guard = state.lock().await;
            let s = &mut *guard;
            let mut by_local: Vec<Option<Vec<Scan>>> = vec![None; s.phones.len()];
            for (local, scans) in m.scans {
                by_local[local] = Some(scans);
            }
            let results = futures::future::join_all(s.phones.iter_mut().zip(by_local).map(
                |(p, scans)| async move {
                    match (p, scans) {
                        (Some(p), Some(scans)) => p.record_scans(&scans, None).await,
                        _ => Ok(0),
                    }
                },
            ))
            .await;
            let mut records = 0;
            for (local, r) in results.into_iter().enumerate() {
                match r {
                    Ok(n) => records += n as u64,
                    Err(e) => crash(s, local, &e),
                }
            }
            records
        })
    }
}

/// The daily check of every phone at `at`: from the fleet's cache, except phones for
/// which `direct` says they download themselves.
#[derive(Message)]
#[rtype(result = "CheckOutcome")]
pub struct Check {
    pub at: UnixMillis,
    pub day: u32,
    pub cached: Arc<FleetSource>,
    pub client: GatewayClient,
    pub stats: Arc<HttpStats>,
    /// Phones whose index hashes below this share download over HTTP themselves.
    pub direct_share: f64,
    /// How many of the shard's direct downloads run at once.
    pub concurrency: usize,
}

fn downloads_itself(index: u32, share: f64) -> bool {
    // A fixed spread of phones (a multiplicative hash), not a draw: the same every day.
    let h = index.wrapping_mul(2_654_435_761) as f64 / f64::from(u32::MAX);
    h < share
}

impl Handler<Check> for Shard {
    type Result = AtomicResponse<Self, CheckOutcome>;

    fn handle(&mut self, m: Check, _: &mut Context<Self>) -> Self::Result {
        self.atomic(move |state| async move {
            let mut guard = state.lock().await;
            let s = &mut *guard;
            s.clock.set(m.at);
            let specs = s.specs.clone();
            let m = &m;
            let mut results: Vec<(usize, PhoneCheck)> =
                futures::stream::iter(s.phones.iter_mut().enumerate())
                    .map(|(local, p)| {
                        let index = specs[local].index;
                        async move {
                            let Some(p) = p else { return (local, Ok(None)) };
                            let before = p.state().notified.clone();
                            let r = if downloads_itself(index, m.direct_share) {
                                let src = TimedSource {
                                    client: &m.client,
                                    stats: &m.stats,
                                    day: m.day,
                                };
                                check(p, &src).await
                            } else {
                                check(p, m.cached.as_ref()).await
                            };
                            let r = r.map(|(files, refused)| {
                                let new: Vec<u32> = p
                                    .state()
                                    .notified
                                    .iter()
                                    .filter(|d| !before.contains(d))
                                    .copied()
                                    .collect();
                                Some((new, files, refused))
                            });
                            (local, r)
                        }
                    })
                    .buffer_unordered(m.concurrency.max(1))
                    .collect()
                    .await;
            results.sort_by_key(|r| r.0);
            let mut out = CheckOutcome::default();
            for (local, r) in results {
                match r {
                    Ok(Some((new, files, refused))) => {
                        out.files += files as u64;
                        out.refused_files += refused as u64;
                        if !new.is_empty() {
                            out.notified.push((specs[local].index, new));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => crash(s, local, &e),
                }
            }
            out.crashed = std::mem::take(&mut s.crashed);
            out
        })
    }
}

/// Days newly notified, files checked and refused; `None` for a phone that is out.
type PhoneCheck = Result<Option<(Vec<u32>, usize, usize)>, AgentError>;

async fn check<C: ExportSource>(p: &mut Phone, src: &C) -> Result<(usize, usize), AgentError> {
    let r = p.check(src).await?;
    Ok((r.files, r.refused_files))
}

/// One phone registers with its number (at `at`).
#[derive(Message)]
#[rtype(result = "Option<RegistrationOutcome>")]
pub struct Register {
    pub local: usize,
    pub number: String,
    pub onset: Day,
    pub at: UnixMillis,
    pub day: u32,
    pub client: GatewayClient,
    pub stats: Arc<HttpStats>,
}

impl Handler<Register> for Shard {
    type Result = AtomicResponse<Self, Option<RegistrationOutcome>>;

    fn handle(&mut self, m: Register, _: &mut Context<Self>) -> Self::Result {
        self.atomic(move |state| async move {
            let mut guard = state.lock().await;
            let s = &mut *guard;
            s.clock.set(m.at);
            let p = s.phones.get_mut(m.local)?.as_mut()?;
            let r = m
                .stats
                .time(
                    "PUT /v3/diagnosis",
                    m.day,
                    p.register(&m.client, &m.number, m.onset),
                )
                .await;
            match r {
                Ok(o) => Some(o),
                Err(e) => {
                    crash(s, m.local, &e);
                    None
                }
            }
        })
    }
}

/// Phones that failed since the last check (they are out of the run).
#[derive(Message)]
#[rtype(result = "Vec<(u32, String)>")]
pub struct TakeCrashed;

impl Handler<TakeCrashed> for Shard {
    type Result = AtomicResponse<Self, Vec<(u32, String)>>;

    fn handle(&mut self, _: TakeCrashed, _: &mut Context<Self>) -> Self::Result {
        self.atomic(move |state| async move { std::mem::take(&mut state.lock().await.crashed) })
    }
}

/// The bytes the shard's encrypted stores hold.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct StoreBytes;

impl Handler<StoreBytes> for Shard {
    type Result = usize;

    fn handle(&mut self, _: StoreBytes, _: &mut Context<Self>) -> usize {
        self.store.bytes()
    }
}

/// The phones notified today open the exposure screen and walk the guidance flow, with
/// answers drawn from the seed (a third have symptoms, some were near a known case, some
/// want a test; the rest are told to watch their health); half use the prefecture
/// variant. Returns the screens shown.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Guide {
    pub phones: Vec<usize>,
    pub at: UnixMillis,
    pub seed: u64,
}

impl Handler<Guide> for Shard {
    type Result = AtomicResponse<Self, u64>;

    fn handle(&mut self, m: Guide, _: &mut Context<Self>) -> Self::Result {
        use hotaru_events::device::GuidanceAnswer::{No, Yes};
        use hotaru_protocol::random::Random;
        self.atomic(move |state| async move {
            let mut guard = state.lock().await;
            let s = &mut *guard;
            s.clock.set(m.at);
            let mut shown = 0;
            for local in m.phones {
                let index = s.specs[local].index;
                let Some(p) = s.phones.get_mut(local).and_then(Option::as_mut) else {
                    continue;
                };
                let mut r = SeededRandom::from_u64(m.seed ^ 0x6775_6964, u64::from(index));
                let answers = match r.below(6) {
                    0 | 1 => vec![Yes],
                    2 => vec![No, Yes],
                    3 => vec![No, No, Yes],
                    _ => vec![No, No, No],
                };
                let prefecture = (r.below(2) == 0).then(|| 1 + r.below(47) as u8);
                match p.guidance(&answers, prefecture).await {
                    Ok(screens) => shown += screens.len() as u64,
                    Err(e) => crash(s, local, &e),
                }
            }
            shown
        })
    }
}
