//! The committee's audit by replay (issue 6): everything is rebuilt and checked from the
//! stored events alone (and the day keys still held, to open sealed keys), never from a
//! projection. Six checks, each with figures and evidence:
//!
//! 1. integrity: the chain end to end, every event decodes (through its upcasters), no gap
//!    or duplicate in positions and stream versions, heads as claimed;
//! 2. authorisation: every upload traces to the redemption of a number issued for a
//!    confirmed case, unexpired when redeemed and redeemed once;
//! 3. batches: every BatchSigned is rebuilt byte for byte, its zips' signatures verify with
//!    the keys recorded in SigningKeyRotated, every released key is in exactly one batch,
//!    none before its release time or outside its case's infectious period;
//! 4. privacy: the schema has no field that can hold personal data, and a scan of the
//!    persisted bytes finds nothing shaped like it;
//! 5. retention: nothing past its retention is readable;
//! 6. figures by day.

pub mod archive;
pub mod report;
pub mod source;

use std::collections::{BTreeMap, HashMap};

use hotaru_events::chain::ChainVerifier;
use hotaru_events::domain::{
    BatchPublished, BatchSigned, CaseBasis, CaseId, Day, DiagnosisKey, DomainEvent, UploadedKey,
    UploadedKeys,
};
use hotaru_events::schema::{FORBIDDEN_FIELD_WORDS, fields};
use hotaru_events::{Context, EventType, NumberDigest, UnixMillis};
use hotaru_log::LogError;
use hotaru_protocol::export::{ReadLimits, VerificationKey, read_zip};
use serde::Serialize;

use hotaru_domain::export::{PositionedKey, build_files, export_info, in_batch, padding_keys};
use hotaru_domain::personal::PersonalKind;
pub use source::{AuditSource, LiveSource};

use hotaru_events::DAY_MS;

/// The rules the audit holds the log to (the server's defaults).
#[derive(Clone, Debug)]
pub struct AuditRules {
    /// The audit's "now", for retention.
    pub at: UnixMillis,
    pub retention_days: u32,
    pub infectious_days_before: u32,
    pub revision_window_ms: u64,
}

impl AuditRules {
    pub fn at(at: UnixMillis) -> Self {
        let p = hotaru_domain::policy::RegistrationPolicy::default();
        Self {
            at,
            retention_days: 14,
            infectious_days_before: p.infectious_days_before,
            revision_window_ms: p.revision_window_ms,
        }
    }
}

/// One thing found wrong, with where it is.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
}

impl Finding {
    fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            context: None,
            position: None,
            stream: None,
            event_types: Vec::new(),
        }
    }

    fn at(mut self, ctx: Context, position: u64) -> Self {
        self.context = Some(ctx.name().to_owned());
        self.position = Some(position);
        self
    }
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub title: &'static str,
    pub passed: bool,
    /// What was checked, with figures.
    pub evidence: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Check {
    fn new(name: &'static str, title: &'static str) -> Self {
        Self {
            name,
            title,
            passed: true,
            evidence: Vec::new(),
            findings: Vec::new(),
        }
    }

    fn fail(&mut self, f: Finding) {
        self.passed = false;
        // Thousands of findings help nobody: the first 100, and a count.
        if self.findings.len() < 100 {
            self.findings.push(f);
        } else if self.findings.len() == 100 {
            self.findings
                .push(Finding::new("more findings of this check were left out"));
        }
    }
}

/// The figures of one day (UTC).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DayFigures {
    pub date: String,
    pub numbers_issued: u64,
    pub registrations: u64,
    pub keys_published: u64,
    pub batches: u64,
    /// Redemptions refused, whichever way the log records them: evaluated guesses (B) one
    /// event each, the refusals that evaluated nothing (A, C, G) one event each in older
    /// logs and counted per node and interval (`RefusalsCounted`) since.
    pub refusals: u64,
}

/// One context as read.
#[derive(Clone, Debug, Serialize)]
pub struct ContextSummary {
    pub context: String,
    pub commits: u64,
    pub events: u64,
    pub streams: usize,
    pub head_hash: String,
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub source: String,
    pub at: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    pub contexts: Vec<ContextSummary>,
    pub days: Vec<DayFigures>,
    pub events: u64,
    pub bytes_scanned: u64,
}

/// What the privacy scan reads, with a name for the report: bytes in memory, or a file
/// read in windows (a store of millions of events is gigabytes).
pub struct ScanInput {
    pub name: String,
    pub data: ScanData,
}

pub enum ScanData {
    Bytes(Vec<u8>),
    File(std::path::PathBuf),
}

impl ScanInput {
    pub fn bytes(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            data: ScanData::Bytes(bytes),
        }
    }

    pub fn file(name: impl Into<String>, path: std::path::PathBuf) -> Self {
        Self {
            name: name.into(),
            data: ScanData::File(path),
        }
    }

    fn len(&self) -> u64 {
        match &self.data {
            ScanData::Bytes(b) => b.len() as u64,
            ScanData::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
        }
    }
}

/// A file is scanned in windows of this size, each read with this much context on both
/// sides, and a match counts in the window where it starts: no match is cut in two or
/// found twice (the longest shape is far shorter than the context).
const SCAN_WINDOW: u64 = 8 << 20;
const SCAN_CONTEXT: u64 = 4096;

/// Scans one input: every match (kind, offset) and the offsets of `needle`.
fn scan_input(
    input: &ScanInput,
    needle: &[u8],
) -> std::io::Result<(Vec<(PersonalKind, u64)>, bool)> {
    let one = |buf: &[u8], base: u64, region: std::ops::Range<u64>| {
        let found: Vec<(PersonalKind, u64)> = scan_bytes(buf)
            .into_iter()
            .map(|(k, at)| (k, base + at as u64))
            .filter(|(_, at)| region.contains(at))
            .collect();
        let host = !needle.is_empty()
            && buf
                .windows(needle.len())
                .enumerate()
                .any(|(i, w)| w == needle && region.contains(&(base + i as u64)));
        (found, host)
    };
    match &input.data {
        ScanData::Bytes(b) => Ok(one(b, 0, 0..b.len() as u64)),
        ScanData::File(path) => {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(path)?;
            let len = f.metadata()?.len();
            let (mut all, mut host) = (Vec::new(), false);
            let mut buf = Vec::new();
            let mut start = 0;
            while start < len {
                let end = (start + SCAN_WINDOW).min(len);
                let from = start.saturating_sub(SCAN_CONTEXT);
                let to = (end + SCAN_CONTEXT).min(len);
                buf.resize((to - from) as usize, 0);
                f.read_exact_at(&mut buf, from)?;
                let (found, h) = one(&buf, from, start..end);
                all.extend(found);
                host |= h;
                start = end;
            }
            Ok((all, host))
        }
    }
}

struct Upload {
    position: u64,
    at: UnixMillis,
    case_id: CaseId,
    digest: NumberDigest,
    keys: UploadedKeys,
    accepted: u16,
}

#[derive(Default)]
struct NumberLife {
    issued: Vec<(UnixMillis, CaseId, UnixMillis)>, // at, case, expires
    redeemed: Vec<(UnixMillis, CaseId, u64)>,      // at, case, position
}

struct SignedBatch {
    position: u64,
    signed: BatchSigned,
    published: Option<BatchPublished>,
}

/// What the replay gathers (small: no frames are kept).
#[derive(Default)]
struct Facts {
    cases: HashMap<CaseId, CaseBasis>,
    numbers: HashMap<NumberDigest, NumberLife>,
    uploads: Vec<Upload>,
    batches: BTreeMap<String, Vec<SignedBatch>>,
    signing_keys: BTreeMap<String, Vec<(u32, u32, Vec<u8>)>>, // region: (key_id, version, spki)
    expired_days: Vec<Day>,
    /// Operation logs: when received, and whether deleted.
    op_logs: BTreeMap<[u8; 16], (UnixMillis, bool)>,
    days: BTreeMap<u32, DayFigures>,
    event_types: BTreeMap<&'static str, u64>,
}

fn date(day: u32) -> String {
    jiff::Timestamp::from_second(i64::from(day) * 86_400)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        .unwrap_or_else(|_| format!("day {day}"))
}

impl Facts {
    fn day(&mut self, at: UnixMillis) -> &mut DayFigures {
        let d = at.day();
        self.days.entry(d).or_insert_with(|| DayFigures {
            date: date(d),
            ..Default::default()
        })
    }

    fn take(&mut self, env: hotaru_events::Envelope) {
        *self.event_types.entry(env.event_type.name()).or_default() += 1;
        let at = env.occurred_at;
        match env.event {
            DomainEvent::CaseConfirmed(e) => {
                self.cases.insert(e.case_id, e.basis);
            }
            DomainEvent::ProcessingNumberIssued(e) => {
                self.numbers.entry(e.digest).or_default().issued.push((
                    at,
                    e.case_id,
                    e.expires_at,
                ));
                self.day(at).numbers_issued += 1;
            }
            DomainEvent::ProcessingNumberRedeemed(e) => {
                self.numbers.entry(e.digest).or_default().redeemed.push((
                    at,
                    e.case_id,
                    env.position,
                ));
                self.day(at).registrations += 1;
            }
            DomainEvent::ProcessingNumberRejected(_) => self.day(at).refusals += 1,
            DomainEvent::RefusalsCounted(e) => self.day(e.from).refusals += e.total(),
            DomainEvent::DiagnosisKeysUploaded(e) => self.uploads.push(Upload {
                position: env.position,
                at,
                case_id: e.case_id,
                digest: e.digest,
                keys: e.keys,
                accepted: e.accepted,
            }),
            DomainEvent::BatchSigned(e) => {
                let region = String::from_utf8_lossy(&e.region.0).into_owned();
                self.day(at).batches += 1;
                self.day(at).keys_published += u64::from(e.key_count);
                self.batches.entry(region).or_default().push(SignedBatch {
                    position: env.position,
                    signed: e,
                    published: None,
                });
            }
            DomainEvent::BatchPublished(e) => {
                for list in self.batches.values_mut() {
                    if let Some(b) = list
                        .iter_mut()
                        .rev()
                        .find(|b| b.signed.batch_id == e.batch_id && b.published.is_none())
                    {
                        b.published = Some(e);
                        return;
                    }
                }
            }
            DomainEvent::SigningKeyRotated(e) => {
                self.signing_keys
                    .entry(env.stream.id().to_owned())
                    .or_default()
                    .push((e.info.key_id, e.info.key_version, e.public_key_spki));
            }
            DomainEvent::RetentionExpired(e) => self.expired_days.push(e.day),
            DomainEvent::OperationLogReceived(e) => {
                self.op_logs.entry(e.log_id.0).or_insert((at, false)).0 = at;
            }
            DomainEvent::OperationLogDeleted(e) => {
                self.op_logs.entry(e.log_id.0).or_insert((at, true)).1 = true;
            }
            _ => {}
        }
    }
}

/// Progress: (what, done, total): a context's name with commits read and claimed, then
/// "scan" with bytes scanned and to scan.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Runs every check over `source`. `scan` is the persisted bytes the privacy check reads
/// (the store's files, the processes' own log files).
pub async fn audit<S: AuditSource>(
    source: &S,
    rules: &AuditRules,
    scan: Vec<ScanInput>,
    progress: Progress<'_>,
) -> Result<Report, LogError> {
    let mut integrity = Check::new("integrity", "Integrity of the log");
    for f in source.container_findings() {
        integrity.fail(Finding::new(f));
    }
    let mut facts = Facts::default();
    // Device events found in the server's log (a device's records never belong here).
    let mut device_events: Vec<Finding> = Vec::new();
    let mut device_events_n = 0u64;
    let mut contexts = Vec::new();
    let mut events = 0;
    for (ctx, head) in source.heads().await? {
        let mut verifier = ChainVerifier::new(ctx);
        let mut cursor = 0;
        let mut broken = false;
        loop {
            let (frames, next) = match source.frames(ctx, cursor, 8192).await {
                Ok(r) => r,
                Err(LogError::Corrupt {
                    context,
                    position,
                    reason,
                }) => {
                    integrity.fail(
                        Finding::new(format!("the stored frame does not decode: {reason}"))
                            .at(context, position),
                    );
                    broken = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            if frames.is_empty() {
                break;
            }
            cursor = next;
            for (position, frame) in &frames {
                match verifier.feed(*position, frame) {
                    Ok(commit) => {
                        for env in commit.envelopes() {
                            match env {
                                Ok(env) if env.event_type.is_device() || ctx.is_device() => {
                                    device_events_n += 1;
                                    if device_events.len() < 20 {
                                        let mut f = Finding::new(format!(
                                            "a device's event is in the server's log: {}",
                                            env.event_type.name()
                                        ))
                                        .at(ctx, *position);
                                        f.stream = Some(commit.stream.to_string());
                                        f.event_types = vec![env.event_type.name().to_owned()];
                                        device_events.push(f);
                                    }
                                }
                                Ok(env) => facts.take(env),
                                Err(e) => {
                                    let mut f =
                                        Finding::new(format!("an event does not decode: {e}"))
                                            .at(ctx, *position);
                                    f.stream = Some(commit.stream.to_string());
                                    f.event_types = commit
                                        .events
                                        .iter()
                                        .map(|e| e.event_type.name().to_owned())
                                        .collect();
                                    integrity.fail(f);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let mut f = Finding::new(format!("broken chain: {}", e.kind));
                        f = f.at(ctx, e.position);
                        f.stream = e.stream.map(|s| s.to_string());
                        f.event_types = e.event_types.iter().map(|t| t.name().to_owned()).collect();
                        integrity.fail(f);
                        broken = true;
                        break;
                    }
                }
            }
            progress(ctx.name(), verifier.commits(), head);
            if broken {
                break;
            }
        }
        if !broken && verifier.commits() != head {
            integrity.fail(
                Finding::new(format!(
                    "the chain ends at position {} but the head is {head}: commits are missing at the end",
                    verifier.commits()
                ))
                .at(ctx, verifier.commits() + 1),
            );
        }
        events += verifier.events();
        contexts.push(ContextSummary {
            context: ctx.name().to_owned(),
            commits: verifier.commits(),
            events: verifier.events(),
            streams: verifier.streams(),
            head_hash: verifier.head().to_string(),
        });
    }
    let commits = contexts.iter().map(|c| c.commits).sum::<u64>();
    integrity.evidence.push(if integrity.passed {
        format!(
            "{events} events in {commits} commits verified link by link (SHA-256 chain per context), every event decoded through its upcasters, positions dense and stream versions without gaps"
        )
    } else {
        format!(
            "{events} events in {commits} commits verified before the breaks below; the checks that follow saw only those"
        )
    });
    if !facts.event_types.is_empty() {
        integrity.evidence.push(format!(
            "events by type: {}",
            facts
                .event_types
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for c in &contexts {
        if c.commits > 0 {
            integrity.evidence.push(format!(
                "{}: {} commits, {} events, {} streams, head {}",
                c.context,
                c.commits,
                c.events,
                c.streams,
                &c.head_hash[..16]
            ));
        }
    }

    let keys = open_uploads(source, &facts).await?;
    let authorised = check_authorisation(&facts, rules);
    let batches = check_batches(source, &facts, &keys, &authorised.1, rules).await?;
    let mut privacy = check_privacy(&scan, progress);
    if device_events_n == 0 {
        privacy.evidence.push(
            "no device event in the server's log: a device's records and events stay on the device"
                .into(),
        );
    } else {
        privacy.evidence.push(format!(
            "{device_events_n} device events found in the server's log (the first {} listed)",
            device_events.len()
        ));
        for f in device_events {
            privacy.fail(f);
        }
    }
    let retention = check_retention(source, &facts, rules).await?;

    let mut figures = Check::new("figures", "Figures by day");
    figures.evidence.push(format!(
        "{} numbers issued, {} registrations, {} refused, {} keys published in {} batches over {} days",
        facts.days.values().map(|d| d.numbers_issued).sum::<u64>(),
        facts.days.values().map(|d| d.registrations).sum::<u64>(),
        facts.days.values().map(|d| d.refusals).sum::<u64>(),
        facts.days.values().map(|d| d.keys_published).sum::<u64>(),
        facts.days.values().map(|d| d.batches).sum::<u64>(),
        facts.days.len()
    ));
    let checks = vec![
        integrity,
        authorised.0,
        batches,
        privacy,
        retention,
        figures,
    ];
    Ok(Report {
        source: source.describe(),
        at: jiff::Timestamp::from_millisecond(rules.at.0 as i64)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        contexts,
        days: facts.days.into_values().collect(),
        events,
        bytes_scanned: scan.iter().map(ScanInput::len).sum(),
    })
}

/// Uploaded keys opened with the day keys still held: by upload index, `None` when shredded.
async fn open_uploads<S: AuditSource>(
    source: &S,
    facts: &Facts,
) -> Result<Vec<Option<Vec<UploadedKey>>>, LogError> {
    let mut day_keys: HashMap<u32, Option<Vec<u8>>> = HashMap::new();
    let mut out = Vec::with_capacity(facts.uploads.len());
    for u in &facts.uploads {
        let keys = match &u.keys {
            UploadedKeys::Plain(k) => Some(k.clone()),
            UploadedKeys::Sealed(s) => {
                if let std::collections::hash_map::Entry::Vacant(e) = day_keys.entry(s.day.0) {
                    e.insert(source.day_key(s.day).await?);
                }
                day_keys[&s.day.0]
                    .as_deref()
                    .and_then(|k| hotaru_domain::sealing::open_with_stored(k, s))
                    .and_then(|plain| hotaru_events::domain::decode_sealed_keys(&plain).ok())
            }
        };
        out.push(keys);
    }
    Ok(out)
}

/// Check 2; also says which uploads are authorised (by index).
fn check_authorisation(facts: &Facts, rules: &AuditRules) -> (Check, Vec<bool>) {
    let mut c = Check::new("authorisation", "Every uploaded key traces to a redemption");
    let mut ok = Vec::with_capacity(facts.uploads.len());
    let mut keys = 0u64;
    for u in &facts.uploads {
        let life = facts.numbers.get(&u.digest);
        let why = match life {
            None => Some("no processing number was issued for it".to_owned()),
            Some(l) => {
                // The redemption this upload follows: the last one at or before it.
                match l.redeemed.iter().rev().find(|r| r.2 <= u.position) {
                    None => Some("its number was never redeemed".to_owned()),
                    Some((redeemed_at, case, _)) => {
                        let issue = l.issued.iter().rev().find(|i| i.0 <= *redeemed_at);
                        match issue {
                            None => Some("its number was redeemed before being issued".into()),
                            Some((_, issued_case, _))
                                if issued_case != case || *case != u.case_id =>
                            {
                                Some(
                                    "the redemption, the issue and the upload name different cases"
                                        .into(),
                                )
                            }
                            Some((_, _, expires)) if redeemed_at >= expires => {
                                Some("its number was redeemed after it expired".into())
                            }
                            Some(_) if !facts.cases.contains_key(case) => {
                                Some("its case was never confirmed".into())
                            }
                            Some((_, _, expires))
                                if u.at.0 >= expires.0.saturating_add(rules.revision_window_ms) =>
                            {
                                Some("it came after the revision window of its number".into())
                            }
                            Some(_) => None,
                        }
                    }
                }
            }
        };
        if let Some(why) = why {
            let mut f = Finding::new(format!(
                "an upload of {} keys is not authorised: {why}",
                u.accepted
            ))
            .at(Context::Registration, u.position);
            f.event_types = vec![EventType::DiagnosisKeysUploaded.name().to_owned()];
            c.fail(f);
            ok.push(false);
        } else {
            keys += u64::from(u.accepted);
            ok.push(true);
        }
    }
    // A number redeemed twice in one life.
    let mut twice = 0;
    for (digest, l) in &facts.numbers {
        for (i, (issued_at, _, expires)) in l.issued.iter().enumerate() {
            let next_issue = l.issued.get(i + 1).map_or(u64::MAX, |n| n.0.0);
            let n = l
                .redeemed
                .iter()
                .filter(|r| r.0 >= *issued_at && r.0.0 < next_issue && r.0 < *expires)
                .count();
            if n > 1 {
                twice += 1;
                c.fail(Finding::new(format!(
                    "number {}… was redeemed {n} times in one life",
                    &hex::encode(digest.0)[..12]
                )));
            }
        }
    }
    c.evidence.push(format!(
        "{} uploads ({keys} keys) traced to a redemption of an issued, unexpired number of a confirmed case; {} numbers issued, {} redeemed, {twice} redeemed more than once",
        ok.iter().filter(|o| **o).count(),
        facts.numbers.values().map(|l| l.issued.len()).sum::<usize>(),
        facts.numbers.values().map(|l| l.redeemed.len()).sum::<usize>(),
    ));
    (c, ok)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// Check 3.
async fn check_batches<S: AuditSource>(
    source: &S,
    facts: &Facts,
    opened: &[Option<Vec<UploadedKey>>],
    authorised: &[bool],
    rules: &AuditRules,
) -> Result<Check, LogError> {
    let mut c = Check::new("batches", "Every batch re-derives from the events");
    let (mut rebuilt, mut by_hash, mut files_checked) = (0, 0, 0);
    let mut published: HashMap<[u8; 16], u64> = HashMap::new();
    // Every readable uploaded key by its key bytes, to judge the keys the zips really hold.
    let mut uploaded: HashMap<[u8; 16], (usize, UploadedKey)> = HashMap::new();
    for (i, keys) in opened.iter().enumerate() {
        for k in keys.iter().flatten() {
            uploaded.insert(*k.key.tek.as_bytes(), (i, *k));
        }
    }
    for (region, list) in &facts.batches {
        let vkeys: Vec<VerificationKey> = facts
            .signing_keys
            .get(region)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|(id, version, spki)| {
                let info = export_info(&hotaru_events::domain::SignatureInfo {
                    key_id: *id,
                    key_version: *version,
                });
                Some(VerificationKey {
                    key_id: info.verification_key_id,
                    key_version: info.verification_key_version,
                    public_key: hotaru_protocol::export::PublicKey::from_spki_der(spki).ok()?,
                })
            })
            .collect();
        let mut prev = (0u64, UnixMillis(0));
        for b in list {
            let s = &b.signed;
            let id = s.batch_id.0;
            let finding = |what: String| {
                let mut f = Finding::new(format!("batch {id} of region {region}: {what}"))
                    .at(Context::Distribution, b.position);
                f.event_types = vec![EventType::BatchSigned.name().to_owned()];
                f
            };
            // The keys the batch must hold, from the uploads.
            let mut real = Vec::new();
            let mut shredded = 0u32;
            for (i, u) in facts.uploads.iter().enumerate() {
                match &opened[i] {
                    Some(keys) => {
                        for k in keys {
                            let pk = PositionedKey {
                                position: u.position,
                                key: *k,
                            };
                            if in_batch(&pk, prev, s.through_position, s.end) {
                                real.push((i, *k));
                            }
                        }
                    }
                    None if u.position <= s.through_position && u.position > prev.0 => {
                        shredded += u32::from(u.accepted);
                    }
                    None => {}
                }
            }
            let padding: std::collections::HashSet<[u8; 16]> =
                padding_keys(&s.padding_seed, s.padding_count as usize, s.end, 4)
                    .iter()
                    .map(|k| *k.tek.as_bytes())
                    .collect();
            let can_rebuild = shredded == 0 && real.len() as u32 == s.key_count;
            if shredded == 0 && real.len() as u32 != s.key_count {
                c.fail(finding(format!(
                    "it records {} keys but the uploads give {}",
                    s.key_count,
                    real.len()
                )));
            }
            if can_rebuild {
                let risk = real
                    .first()
                    .map_or(4, |(_, k)| k.key.transmission_risk_level);
                let mut all: Vec<DiagnosisKey> = real.iter().map(|(_, k)| k.key).collect();
                all.extend(padding_keys(
                    &s.padding_seed,
                    s.padding_count as usize,
                    s.end,
                    risk,
                ));
                let infos: Vec<_> = s.signature_infos.iter().map(export_info).collect();
                let per_file = if s.files.len() > 1 {
                    s.files[0].key_count as usize
                } else {
                    usize::MAX
                };
                let files = build_files(region, s.start, s.end, &infos, &all, per_file);
                let same = files.len() == s.files.len()
                    && files
                        .iter()
                        .zip(&s.files)
                        .all(|(f, d)| sha256(&f.encode()) == d.export_bin_sha256);
                if same {
                    rebuilt += 1;
                } else {
                    c.fail(finding(
                        "export.bin rebuilt from the events does not match the recorded SHA-256"
                            .into(),
                    ));
                }
            } else if shredded > 0 {
                by_hash += 1;
            }
            // The published zips: their address, their export.bin, their signatures.
            match &b.published {
                None => c.fail(finding("it was never published".into())),
                Some(p) => {
                    for (n, (addr, digest)) in p.blobs.iter().zip(&s.files).enumerate() {
                        files_checked += 1;
                        let Some(zip) = source.blob(&hex::encode(addr)).await? else {
                            c.fail(finding(format!("file {} is missing", n + 1)));
                            continue;
                        };
                        if sha256(&zip) != *addr {
                            c.fail(finding(format!(
                                "file {} does not hash to its recorded address",
                                n + 1
                            )));
                        }
                        match read_zip(&zip, ReadLimits::default()) {
                            Err(e) => c.fail(finding(format!("file {} does not read: {e}", n + 1))),
                            Ok(e) => {
                                if sha256(&e.export_bin) != digest.export_bin_sha256 {
                                    c.fail(finding(format!(
                                        "file {}'s export.bin is not the one recorded",
                                        n + 1
                                    )));
                                }
                                // The keys the file really holds: each from an authorised
                                // upload, released, inside its case's infectious period,
                                // in no other batch; or one of the recorded padding keys.
                                for key in &e.file.keys {
                                    let kd = *key.tek.as_bytes();
                                    if padding.contains(&kd) {
                                        continue;
                                    }
                                    let Some((i, k)) = uploaded.get(&kd) else {
                                        if shredded == 0 {
                                            c.fail(finding(format!(
                                                "file {} holds a key that no upload holds",
                                                n + 1
                                            )));
                                        }
                                        continue;
                                    };
                                    if let Some(other) = published.insert(kd, id)
                                        && other != id
                                    {
                                        c.fail(finding(format!("a key is also in batch {other}")));
                                    }
                                    if !authorised[*i] {
                                        c.fail(finding(
                                            "it publishes a key of an upload without authorisation"
                                                .into(),
                                        ));
                                    }
                                    if k.release_at > s.end {
                                        c.fail(finding(
                                            "a key was published before its release time (the hold after expiry)"
                                                .into(),
                                        ));
                                    }
                                    let case = facts.cases.get(&facts.uploads[*i].case_id);
                                    if let Some(CaseBasis::SymptomOnset(d) | CaseBasis::Sample(d)) =
                                        case
                                    {
                                        let first = u64::from(
                                            d.0.saturating_sub(rules.infectious_days_before),
                                        ) * DAY_MS;
                                        let key_end =
                                            u64::from(k.key.rolling_start.0 + k.key.rolling_period)
                                                * hotaru_events::INTERVAL_MS;
                                        if key_end <= first {
                                            c.fail(finding(
                                                "a key from before its case's infectious period was published"
                                                    .into(),
                                            ));
                                        }
                                    }
                                }
                                for sig in &e.signatures {
                                    let known = vkeys.iter().any(|k| {
                                        k.key_id == sig.info.verification_key_id
                                            && k.key_version == sig.info.verification_key_version
                                            && k.public_key.verify(&e.export_bin, &sig.signature)
                                    });
                                    if !known {
                                        c.fail(finding(format!(
                                            "file {} carries a signature (key {} {}) that no key recorded in SigningKeyRotated verifies",
                                            n + 1,
                                            sig.info.verification_key_id,
                                            sig.info.verification_key_version
                                        )));
                                    }
                                }
                                if e.verify(&vkeys).is_err() {
                                    c.fail(finding(format!(
                                        "file {} has no signature by a recorded key",
                                        n + 1
                                    )));
                                }
                            }
                        }
                    }
                }
            }
            prev = (s.through_position, s.end);
        }
    }
    // Every released key is in a batch: nothing released before the last batch is left out.
    let last_ends: HashMap<&str, (u64, UnixMillis)> = facts
        .batches
        .iter()
        .filter_map(|(r, l)| {
            l.last()
                .map(|b| (r.as_str(), (b.signed.through_position, b.signed.end)))
        })
        .collect();
    let mut left_out = 0;
    for (i, u) in facts.uploads.iter().enumerate() {
        let Some(keys) = &opened[i] else { continue };
        for k in keys {
            let released = last_ends
                .values()
                .any(|(through, end)| u.position <= *through && k.release_at <= *end);
            if released && authorised[i] && !published.contains_key(k.key.tek.as_bytes()) {
                left_out += 1;
            }
        }
    }
    if left_out > 0 {
        c.fail(Finding::new(format!(
            "{left_out} released keys are in no batch"
        )));
    }
    let total: usize = facts.batches.values().map(Vec::len).sum();
    c.evidence.push(format!(
        "{total} batches: {rebuilt} rebuilt byte for byte (export.bin SHA-256 equal), {by_hash} hold shredded keys and were checked by their recorded hashes and signatures only"
    ));
    c.evidence.push(format!(
        "{files_checked} published files: address, export.bin and every signature checked against the keys recorded in SigningKeyRotated ({} keys)",
        facts.signing_keys.values().map(Vec::len).sum::<usize>()
    ));
    c.evidence.push(format!(
        "{} distinct keys published, each in exactly one batch, none before its release time or outside its case's infectious period; {left_out} released keys left out",
        published.len()
    ));
    Ok(c)
}

/// Runs of 16 or more lowercase hex digits are identifiers and digests (stream ids, blob
/// names), not personal data: masked before the detectors run, so that a digit run inside
/// a digest is not taken for a phone number.
fn mask_hex_runs(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let is_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < b.len() {
        if is_hex(b[i]) {
            let start = i;
            while i < b.len() && is_hex(b[i]) {
                i += 1;
            }
            if i - start >= 16 {
                let o = out.get_or_insert_with(|| b.to_vec());
                o[start..i].fill(b'x');
            }
        } else {
            i += 1;
        }
    }
    match out {
        Some(o) => std::borrow::Cow::Owned(o),
        None => std::borrow::Cow::Borrowed(b),
    }
}

/// Every match of the strict detectors in `b` (after masking hex runs).
pub fn scan_bytes(b: &[u8]) -> Vec<(PersonalKind, usize)> {
    hotaru_domain::personal::scan_binary(&mask_hex_runs(b))
}

/// Check 4.
fn check_privacy(scan: &[ScanInput], progress: Progress<'_>) -> Check {
    let mut c = Check::new("privacy", "No personal data anywhere");
    let mut fields_n = 0;
    for t in EventType::ALL {
        for f in fields(*t) {
            fields_n += 1;
            if f.name
                .split('_')
                .any(|w| FORBIDDEN_FIELD_WORDS.contains(&w))
            {
                c.fail(Finding::new(format!(
                    "event type {} has a field named for personal data: {}",
                    t.name(),
                    f.name
                )));
            }
        }
    }
    c.evidence.push(format!(
        "schema: {} event types, {fields_n} fields, each of a closed kind (ids, digests, times, counts, codes, key material, measurements, sealed content); none can hold free text and none is named for personal data",
        EventType::ALL.len()
    ));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut total = 0u64;
    let to_scan: u64 = scan.iter().map(ScanInput::len).sum();
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let needle = if hostname.len() >= 4 {
        hostname.as_bytes()
    } else {
        &[][..]
    };
    for s in scan {
        progress("scan", total, to_scan);
        total += s.len();
        let (found, host) = match scan_input(s, needle) {
            Ok(r) => r,
            Err(e) => {
                c.fail(Finding::new(format!("{} could not be read: {e}", s.name)));
                continue;
            }
        };
        for (kind, at) in found {
            *by_kind.entry(kind.name()).or_default() += 1;
            c.fail(Finding::new(format!(
                "{} holds something shaped like {} at byte {at}",
                s.name,
                kind.name()
            )));
        }
        if host {
            *by_kind.entry("this machine's host name").or_default() += 1;
            c.fail(Finding::new(format!(
                "{} holds this machine's host name",
                s.name
            )));
        }
    }
    progress("scan", total, to_scan);
    c.evidence.push(format!(
        "scanned {total} bytes in {} places ({}) for e-mail addresses, phone numbers, IPv4/IPv6 and MAC addresses, coordinates and this machine's host name: {}",
        scan.len(),
        scan.iter()
            .map(|s| s.name.as_str())
            .take(8)
            .collect::<Vec<_>>()
            .join(", "),
        if by_kind.is_empty() {
            "nothing found".to_owned()
        } else {
            by_kind
                .iter()
                .map(|(k, n)| format!("{n} × {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    c
}

/// Check 5.
async fn check_retention<S: AuditSource>(
    source: &S,
    facts: &Facts,
    rules: &AuditRules,
) -> Result<Check, LogError> {
    let mut c = Check::new("retention", "Nothing past its retention is readable");
    let today = rules.at.day();
    let oldest_kept = today.saturating_sub(rules.retention_days);
    let held = source.day_key_days().await?;
    let mut expired_held = 0;
    for d in &held {
        if d.0 < oldest_kept {
            expired_held += 1;
            c.fail(Finding::new(format!(
                "the keys of {} are still readable, {} days after it (retention {} days)",
                date(d.0),
                today - d.0,
                rules.retention_days
            )));
        }
    }
    for d in &facts.expired_days {
        if held.contains(d) {
            c.fail(Finding::new(format!(
                "RetentionExpired was recorded for {} but its keys are still readable",
                date(d.0)
            )));
        }
    }
    // Operation logs: deleted ones unreadable, none kept past the retention.
    let (mut open, mut unknown) = (0, 0);
    for (id, (at, deleted)) in &facts.op_logs {
        let held = source
            .op_log_key_held(hotaru_events::domain::LogId(*id))
            .await?;
        if held.is_none() {
            unknown += 1;
        }
        let short = &hex::encode(id)[..8];
        if *deleted && held == Some(true) {
            c.fail(Finding::new(format!(
                "operation log {short}… was deleted (OperationLogDeleted) but its key is still readable"
            )));
        }
        if !*deleted {
            open += 1;
            if at.day() < oldest_kept {
                c.fail(Finding::new(format!(
                    "operation log {short}… received on {} is past its retention and not deleted",
                    date(at.day())
                )));
            }
        }
    }
    let op_logs = format!(
        "{} operation logs: {} deleted, {open} open{}",
        facts.op_logs.len(),
        facts.op_logs.len() - open,
        if unknown > 0 {
            format!(
                " ({unknown} keys not checkable from this source: an archive holds no log keys)"
            )
        } else {
            ", every deleted log's key gone".to_owned()
        }
    );
    let unreadable = facts
        .uploads
        .iter()
        .filter(|u| matches!(&u.keys, UploadedKeys::Sealed(s) if !held.contains(&s.day)))
        .count();
    c.evidence.push(format!(
        "as of {}: {} days' keys held (none may be older than {}), {} days shredded (RetentionExpired), {unreadable} uploads now unreadable; {expired_held} expired days still readable; the chain still verifies (integrity check)",
        date(today),
        held.len(),
        date(oldest_kept),
        facts.expired_days.len(),
    ));
    c.evidence.push(op_logs);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file is read in windows: a match across a window's edge is found once, at its
    /// offset; a hex run across an edge is still taken for an identifier.
    #[test]
    fn files_are_scanned_in_windows_without_losing_or_doubling_a_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut data = vec![0u8; (2 * SCAN_WINDOW + 1000) as usize];
        let edge = SCAN_WINDOW as usize;
        let mail = b" taro.yamada@example.co.jp ";
        data[edge - 10..edge - 10 + mail.len()].copy_from_slice(mail);
        data[5000..5000 + mail.len()].copy_from_slice(mail);
        // A hex digest across the second edge holds a phone-shaped digit run.
        let hex = b"abcdef09012345678abcdefabcdef0123";
        let second = 2 * edge;
        data[second - 16..second - 16 + hex.len()].copy_from_slice(hex);
        std::fs::write(&path, &data).unwrap();
        let (found, host) = scan_input(&ScanInput::file("store", path), b"").unwrap();
        assert!(!host);
        let mut at: Vec<u64> = found.iter().map(|(_, a)| *a).collect();
        at.sort();
        assert_eq!(at, vec![5001, (edge - 9) as u64], "{found:?}");
        assert!(found.iter().all(|(k, _)| *k == PersonalKind::Email));
        // The same bytes in memory give the same answer.
        let (mem, _) = scan_input(&ScanInput::bytes("mem", data), b"").unwrap();
        assert_eq!(mem.len(), 2);
    }
}
