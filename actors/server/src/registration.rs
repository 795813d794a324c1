//! The registration flow: confirm a case, issue its processing number, redeem the number
//! together with the case's keys (DOMAIN.md, "The registration flow").
//!
//! Every rule is decided by the pure aggregates of `hotaru-domain`; this shell loads
//! streams, draws randomness, reads the clock, seals keys and appends with the expected
//! version, retrying when another node got in first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hotaru_actors::IdSource;
use hotaru_domain::Aggregate;
use hotaru_domain::limiter::{AttemptLimiter, LimiterPolicy, RetryAfter, SourceKey};
use hotaru_domain::number::{
    NumberCommand, NumberError, NumberState, ProcessingNumber, RedemptionAnswer, RevisionRefusal,
    number_stream,
};
use hotaru_domain::policy::{DAY_MS, RegistrationPolicy};
use hotaru_domain::upload::{SubmittedKey, validate_keys};
use hotaru_events::domain::{
    CaseBasis, CaseConfirmed, CaseId, CentreId, Day, ProcessingNumberRejected, RejectionReason,
    UploadedKeys,
};
use hotaru_events::{
    Clock, DomainEvent, EventId, NewEvent, NumberDigest, StreamId, StreamKind, UnixMillis,
};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};
use ring::rand::{SecureRandom, SystemRandom};

use crate::batch::open_keys;
use crate::daykeys::DayKeys;
use crate::revision::{RevisableKey, RevisionKeys, TokenData};

/// How often a command is decided again after another node changed its stream.
const MAX_CONFLICTS: usize = 5;

/// Why a registration command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RegistrationError {
    /// The app's errors A, B, C and G. B covers unknown, used and expired alike.
    #[error("refused ({})", .0.letter())]
    Rejected(RejectionReason),
    /// C, with the time after which to try again.
    #[error("too many failed attempts; retry after {}", .0.0)]
    AttemptLimit(UnixMillis),
    #[error("no such case")]
    UnknownCase,
    #[error("the case belongs to another health centre")]
    NotYourCase,
    #[error("the daily quota of {0} processing numbers is used up")]
    QuotaExceeded(u32),
    #[error("this case already has its processing number")]
    AlreadyIssued,
    #[error("invalid date")]
    InvalidDate,
    /// A revision token that does not open, or does not belong to this number, or that
    /// leaves out a key the number already uploaded.
    #[error("the revision token is invalid")]
    InvalidRevisionToken,
    #[error("the time to revise this upload is over")]
    RevisionWindowClosed,
    #[error(transparent)]
    Log(
        #[from]
        #[serde(with = "crate::commands::log_error_text")]
        LogError,
    ),
}

impl RegistrationError {
    /// What the device is told: B never says which of unknown, used or expired.
    pub fn public_reason(&self) -> Option<RejectionReason> {
        match self {
            RegistrationError::Rejected(
                RejectionReason::Unknown | RejectionReason::AlreadyUsed | RejectionReason::Expired,
            ) => Some(RejectionReason::Unknown),
            RegistrationError::Rejected(r) => Some(*r),
            RegistrationError::AttemptLimit(_) => Some(RejectionReason::AttemptLimit),
            _ => None,
        }
    }
}

/// A number just issued: the only time it exists in the clear.
#[derive(Debug, Clone)]
pub struct IssuedNumber {
    pub number: ProcessingNumber,
    pub case_id: CaseId,
    pub expires_at: UnixMillis,
}

/// The answer of Google's v1 publish API: the redemption's answer (on a revision,
/// `accepted` counts the keys added) and the revision token for next time.
#[derive(Debug, Clone)]
pub struct PublishAnswer {
    pub answer: RedemptionAnswer,
    pub revision_token: String,
}

/// A device's upload.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Redemption {
    /// As typed by the user (checked for error A).
    pub number: String,
    pub keys: Vec<SubmittedKey>,
    pub idempotency_key: Option<String>,
    /// The edge's opaque label of the request's source (in memory only).
    pub source: Option<u64>,
}

struct Inner<L: SideStore> {
    log: L,
    keys: DayKeys<L>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    policy: RegistrationPolicy,
    limiter: Mutex<AttemptLimiter>,
    /// Numbers issued per (centre, day), counted in this process.
    issued: Mutex<HashMap<(CentreId, u32), u32>>,
    /// Cases that have their number (one per case).
    cases_with_number: Mutex<std::collections::HashSet<CaseId>>,
    random: SystemRandom,
    revision_keys: RevisionKeys<L>,
}

/// The registration service. Cheap to clone; safe to call concurrently.
#[derive(Clone)]
pub struct Registration<L: SideStore> {
    inner: Arc<Inner<L>>,
}

fn case_stream(id: CaseId) -> StreamId {
    StreamId::new(StreamKind::Case, hex::encode(id.0)).expect("hex is a valid id")
}

fn redemptions_stream(day: u32) -> StreamId {
    StreamId::new(StreamKind::Redemptions, day.to_string()).expect("digits are a valid id")
}

impl<L: EventLog + SideStore> Registration<L> {
    pub fn new(
        log: L,
        keys: DayKeys<L>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        policy: RegistrationPolicy,
        limits: LimiterPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                keys,
                clock,
                ids,
                policy,
                limiter: Mutex::new(AttemptLimiter::new(limits)),
                issued: Mutex::default(),
                cases_with_number: Mutex::default(),
                random: SystemRandom::new(),
                revision_keys: RevisionKeys::new(log.clone()),
                log,
            }),
        }
    }

    /// Rebuilds the in-memory counts (today's issuance per centre, the failure window)
    /// from the log. Call once at start.
    pub async fn warm_up(&self) -> Result<(), LogError> {
        let i = &self.inner;
        let today = i.clock.now().day();
        let mut from = 1;
        loop {
            let batch = i
                .log
                .read_all(hotaru_events::Context::Registration, from, 4096)
                .await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in &batch {
                for env in c.commit.envelopes().flatten() {
                    match &env.event {
                        DomainEvent::ProcessingNumberIssued(e) => {
                            i.cases_with_number
                                .lock()
                                .expect("not poisoned")
                                .insert(e.case_id);
                            if env.occurred_at.day() == today {
                                *i.issued
                                    .lock()
                                    .expect("not poisoned")
                                    .entry((e.centre_id, today))
                                    .or_default() += 1;
                            }
                        }
                        DomainEvent::ProcessingNumberRejected(e)
                            if matches!(
                                e.reason,
                                RejectionReason::Unknown
                                    | RejectionReason::AlreadyUsed
                                    | RejectionReason::Expired
                            ) =>
                        {
                            i.limiter
                                .lock()
                                .expect("not poisoned")
                                .record_failure(env.occurred_at, None);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn new_event(&self, now: UnixMillis, event: DomainEvent, cause: Option<EventId>) -> NewEvent {
        let id = self.inner.ids.next_id(now);
        NewEvent {
            event_id: id,
            occurred_at: now,
            causation_id: cause,
            correlation_id: cause.unwrap_or(id),
            trace: None,
            event,
        }
    }

    /// A health centre confirms a case: CaseConfirmed with a fresh random case id.
    pub async fn confirm_case(
        &self,
        centre: CentreId,
        basis: CaseBasis,
    ) -> Result<CaseId, RegistrationError> {
        let now = self.inner.clock.now();
        let day = match basis {
            CaseBasis::SymptomOnset(d) | CaseBasis::Sample(d) => d,
        };
        if day.0 > now.day() || day.0 + 60 < now.day() {
            return Err(RegistrationError::InvalidDate);
        }
        let mut id = [0u8; 16];
        self.inner
            .random
            .fill(&mut id)
            .map_err(|_| LogError::Backend("random source failed".into()))?;
        let case_id = CaseId(id);
        let ev = self.new_event(
            now,
            DomainEvent::CaseConfirmed(CaseConfirmed {
                case_id,
                centre_id: centre,
                basis,
            }),
            None,
        );
        self.inner
            .log
            .append(case_stream(case_id), ExpectedVersion::Exact(0), vec![ev])
            .await?;
        Ok(case_id)
    }

    async fn case(&self, case_id: CaseId) -> Result<Option<CaseConfirmed>, LogError> {
        let commits = self.inner.log.read_stream(&case_stream(case_id)).await?;
        Ok(commits
            .iter()
            .flat_map(|c| c.commit.envelopes())
            .filter_map(Result::ok)
            .find_map(|e| match e.event {
                DomainEvent::CaseConfirmed(c) => Some(c),
                _ => None,
            }))
    }

    async fn number_state(&self, digest: &NumberDigest) -> Result<(NumberState, u64), LogError> {
        self.number_history(digest)
            .await
            .map(|(state, version, _)| (state, version))
    }

    /// A number's state and stream version, folded from its stream, and its events with
    /// the positions of their commits.
    async fn number_history(
        &self,
        digest: &NumberDigest,
    ) -> Result<(NumberState, u64, Vec<(u64, hotaru_events::Envelope)>), LogError> {
        let commits = self.inner.log.read_stream(&number_stream(digest)).await?;
        let mut state = NumberState::default();
        let mut version = 0;
        let mut events = Vec::new();
        for c in &commits {
            for env in c.commit.envelopes() {
                let env = env.map_err(|e| LogError::Corrupt {
                    context: c.commit.context,
                    position: c.position,
                    reason: e.to_string(),
                })?;
                state.apply(&env.event);
                events.push((c.position, env));
            }
            version = c.commit.last_version();
        }
        Ok((state, version, events))
    }

    /// Days whose digest key may name a number still alive now, newest first.
    fn live_days(&self, now: UnixMillis) -> Vec<Day> {
        let back = self.inner.policy.number_validity_ms.div_ceil(DAY_MS) as u32;
        let today = now.day();
        (0..=back)
            .filter_map(|d| today.checked_sub(d))
            .map(Day)
            .collect()
    }

    fn draw_number(&self) -> Result<ProcessingNumber, LogError> {
        let len = self.inner.policy.number_length;
        let mut digits = String::with_capacity(len);
        let mut buf = [0u8; 32];
        while digits.len() < len {
            self.inner
                .random
                .fill(&mut buf)
                .map_err(|_| LogError::Backend("random source failed".into()))?;
            // Rejection sampling: bytes >= 250 would bias the digits.
            for b in buf.iter().filter(|b| **b < 250) {
                if digits.len() < len {
                    digits.push(char::from(b'0' + b % 10));
                }
            }
        }
        Ok(ProcessingNumber::from_digits(digits))
    }

    /// Issues a processing number for the centre's case (ProcessingNumberIssued).
    pub async fn issue_number(
        &self,
        centre: CentreId,
        case_id: CaseId,
    ) -> Result<IssuedNumber, RegistrationError> {
        let i = &self.inner;
        let case = self
            .case(case_id)
            .await?
            .ok_or(RegistrationError::UnknownCase)?;
        if case.centre_id != centre {
            return Err(RegistrationError::NotYourCase);
        }
        // One number per case: the number is shown once, to the centre that asked.
        if !i
            .cases_with_number
            .lock()
            .expect("not poisoned")
            .insert(case_id)
        {
            return Err(RegistrationError::AlreadyIssued);
        }
        let result = self.issue_counted(centre, case_id).await;
        if result.is_err() {
            i.cases_with_number
                .lock()
                .expect("not poisoned")
                .remove(&case_id);
        }
        result
    }

    async fn issue_counted(
        &self,
        centre: CentreId,
        case_id: CaseId,
    ) -> Result<IssuedNumber, RegistrationError> {
        let i = &self.inner;
        let now = i.clock.now();
        let today = now.day();
        {
            let mut issued = i.issued.lock().expect("not poisoned");
            let n = issued.entry((centre, today)).or_default();
            if *n >= i.policy.daily_quota_per_centre {
                return Err(RegistrationError::QuotaExceeded(
                    i.policy.daily_quota_per_centre,
                ));
            }
            *n += 1; // reserved; given back below if issuing fails
        }
        let result = self.issue_unique(centre, case_id, now).await;
        if result.is_err() {
            let mut issued = i.issued.lock().expect("not poisoned");
            if let Some(n) = issued.get_mut(&(centre, today)) {
                *n = n.saturating_sub(1);
            }
        }
        result
    }

    async fn issue_unique(
        &self,
        centre: CentreId,
        case_id: CaseId,
        now: UnixMillis,
    ) -> Result<IssuedNumber, RegistrationError> {
        let i = &self.inner;
        let expires_at = now.plus_millis(i.policy.number_validity_ms);
        let today_keys = i.keys.get_or_create(Day(now.day())).await?;
        'draw: for _ in 0..32 {
            let number = self.draw_number()?;
            // Unique among live numbers: no day that can still name a live number has it.
            for day in self.live_days(now).into_iter().skip(1) {
                if let Some(k) = i.keys.get(day).await? {
                    let (state, _) = self.number_state(&k.digest(number.as_str())).await?;
                    let cmd = issue_cmd(case_id, centre, NumberDigest([0; 32]), now, expires_at);
                    if state.decide(&cmd).is_err() {
                        continue 'draw;
                    }
                }
            }
            let digest = today_keys.digest(number.as_str());
            let (state, version) = self.number_state(&digest).await?;
            let events = match state.decide(&issue_cmd(case_id, centre, digest, now, expires_at)) {
                Ok(ev) => ev,
                Err(NumberError::AlreadyIssued) => continue 'draw,
                Err(NumberError::Rejected(r)) => return Err(RegistrationError::Rejected(r)),
                Err(NumberError::Revision(_)) => unreachable!("issuing never answers that"),
            };
            let evs = events
                .into_iter()
                .map(|e| self.new_event(now, e, None))
                .collect();
            match i
                .log
                .append(number_stream(&digest), ExpectedVersion::Exact(version), evs)
                .await
            {
                Ok(_) => {
                    return Ok(IssuedNumber {
                        number,
                        case_id,
                        expires_at,
                    });
                }
                Err(LogError::Conflict { .. }) => continue 'draw,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogError::Backend("could not draw an unused number in 32 tries".into()).into())
    }

    async fn record_rejection(
        &self,
        now: UnixMillis,
        digest: Option<NumberDigest>,
        reason: RejectionReason,
    ) -> Result<(), LogError> {
        let ev = self.new_event(
            now,
            DomainEvent::ProcessingNumberRejected(ProcessingNumberRejected { digest, reason }),
            None,
        );
        self.inner
            .log
            .append(
                redemptions_stream(now.day()),
                ExpectedVersion::Any,
                vec![ev],
            )
            .await?;
        Ok(())
    }

    async fn reject(
        &self,
        now: UnixMillis,
        digest: Option<NumberDigest>,
        reason: RejectionReason,
    ) -> RegistrationError {
        if let Err(e) = self.record_rejection(now, digest, reason).await {
            return e.into();
        }
        RegistrationError::Rejected(reason)
    }

    /// Redeems a number together with its keys, in one atomic append (errors A, B, C, G).
    pub async fn redeem(&self, r: Redemption) -> Result<RedemptionAnswer, RegistrationError> {
        self.redeem_keys(r).await.map(|(answer, _)| answer)
    }

    /// Google's v1 publish: a redemption answered with a revision token, or, with a
    /// token, a revision that adds the keys the token does not name.
    pub async fn publish(
        &self,
        r: Redemption,
        revision_token: Option<&str>,
    ) -> Result<PublishAnswer, RegistrationError> {
        let now = self.inner.clock.now();
        let (answer, token) = match revision_token {
            None => {
                let (answer, uploaded) = self.redeem_keys(r).await?;
                // A retried upload (same idempotency key) gets a token naming no keys.
                let (digest, keys) = uploaded.unwrap_or((NumberDigest([0; 32]), Vec::new()));
                let token = TokenData {
                    digest,
                    case_id: answer.case_id,
                    keys: keys.iter().map(revisable).collect(),
                };
                (answer, token)
            }
            Some(t) => self.revise(r, t, now).await?,
        };
        let revision_token = self.inner.revision_keys.seal(&token, now).await?;
        Ok(PublishAnswer {
            answer,
            revision_token,
        })
    }

    /// The revision keys (rotated by the retention actor, listed by `hotaru keys`).
    pub fn revision_keys(&self) -> &RevisionKeys<L> {
        &self.inner.revision_keys
    }

    /// Rotates the revision key when its time has come.
    pub async fn rotate_revision_key_if_due(&self) -> Result<Option<u32>, LogError> {
        let p = &self.inner.policy;
        self.inner
            .revision_keys
            .rotate_if_due(
                self.inner.clock.now(),
                p.revision_key_rotation_ms,
                p.revision_key_retirement_ms(),
            )
            .await
    }

    async fn revise(
        &self,
        r: Redemption,
        token: &str,
        now: UnixMillis,
    ) -> Result<(RedemptionAnswer, TokenData), RegistrationError> {
        let i = &self.inner;
        let token = i
            .revision_keys
            .open(token)
            .await?
            .ok_or(RegistrationError::InvalidRevisionToken)?;
        let Ok(number) = ProcessingNumber::parse(&r.number, i.policy.number_length) else {
            return Err(RegistrationError::Rejected(RejectionReason::Format));
        };
        if r.keys.is_empty() {
            return Err(RegistrationError::Rejected(
                RejectionReason::NothingToSubmit,
            ));
        }
        // The number must be the one the token was minted for (under the day key of the
        // day it was issued, which may be a few days back).
        let back = (i.policy.number_validity_ms + i.policy.revision_window_ms).div_ceil(DAY_MS);
        let mut matches = false;
        for d in 0..=back as u32 {
            if let Some(k) = i.keys.get(Day(now.day().saturating_sub(d))).await?
                && k.digest(number.as_str()) == token.digest
            {
                matches = true;
                break;
            }
        }
        if !matches {
            return Err(RegistrationError::InvalidRevisionToken);
        }
        let basis = self
            .case(token.case_id)
            .await?
            .map(|c| c.basis)
            .ok_or(RegistrationError::InvalidRevisionToken)?;
        let stream = number_stream(&token.digest);
        for _ in 0..MAX_CONFLICTS {
            let (state, version, events) = self.number_history(&token.digest).await?;
            // The keys this number uploaded before (the token must name them all).
            let mut before = std::collections::HashMap::new();
            for (position, env) in events {
                if let DomainEvent::DiagnosisKeysUploaded(u) = env.event
                    && let Some(keys) = open_keys(&i.keys, u.keys, position).await?
                {
                    for k in keys {
                        before.insert(k.key.key_data, revisable(&k));
                    }
                }
            }
            let validated = validate_keys(&i.policy, basis, now, &r.keys);
            let mut new = Vec::new();
            for k in &validated.accepted {
                let rk = revisable(k);
                match token.keys.iter().find(|t| t.key_data == rk.key_data) {
                    // Named by the token: already uploaded, unless its metadata changed.
                    Some(t) if *t == rk => {}
                    Some(_) => return Err(RegistrationError::InvalidRevisionToken),
                    // Uploaded before but not named: not this device's latest token.
                    None if before.contains_key(&rk.key_data) => {
                        return Err(RegistrationError::InvalidRevisionToken);
                    }
                    None => new.push(*k),
                }
            }
            let keys = if new.is_empty() {
                UploadedKeys::Plain(Vec::new())
            } else {
                let day_keys = i.keys.get_or_create(Day(now.day())).await?;
                let plain = bincode::serde::encode_to_vec(&new, bincode::config::standard())
                    .map_err(|e| LogError::Backend(e.to_string()))?;
                UploadedKeys::Sealed(day_keys.seal(&plain))
            };
            let accepted = u16::try_from(new.len()).unwrap_or(u16::MAX);
            let cmd = NumberCommand::Revise {
                digest: token.digest,
                case_id: token.case_id,
                now,
                window_ms: i.policy.revision_window_ms,
                keys,
                accepted,
                dropped: validated.dropped.clone(),
            };
            let events = match state.decide(&cmd) {
                Ok(ev) => ev,
                Err(NumberError::Revision(RevisionRefusal::WindowClosed)) => {
                    return Err(RegistrationError::RevisionWindowClosed);
                }
                Err(_) => return Err(RegistrationError::InvalidRevisionToken),
            };
            if !events.is_empty() {
                let evs = events
                    .into_iter()
                    .map(|e| self.new_event(now, e, None))
                    .collect();
                match i
                    .log
                    .append(stream.clone(), ExpectedVersion::Exact(version), evs)
                    .await
                {
                    Ok(_) => {}
                    Err(LogError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let mut named = token.keys.clone();
            named.extend(new.iter().map(revisable));
            let answer = RedemptionAnswer {
                case_id: token.case_id,
                accepted,
                dropped: validated.dropped,
            };
            return Ok((
                answer,
                TokenData {
                    keys: named,
                    ..token
                },
            ));
        }
        Err(LogError::Contention(hotaru_events::Context::Registration).into())
    }

    /// [`Self::redeem`], also giving the number's digest and the keys it accepted.
    async fn redeem_keys(
        &self,
        r: Redemption,
    ) -> Result<
        (
            RedemptionAnswer,
            Option<(NumberDigest, Vec<hotaru_events::domain::UploadedKey>)>,
        ),
        RegistrationError,
    > {
        let i = &self.inner;
        let now = i.clock.now();
        let source = r.source.map(SourceKey);
        // A: the format, before anything else.
        let Ok(number) = ProcessingNumber::parse(&r.number, i.policy.number_length) else {
            return Err(self.reject(now, None, RejectionReason::Format).await);
        };
        // C: refused without evaluating the number, so a refused guess can never hit.
        let allowed = i.limiter.lock().expect("not poisoned").check(now, source);
        if let Err(RetryAfter(t)) = allowed {
            self.record_rejection(now, None, RejectionReason::AttemptLimit)
                .await?;
            return Err(RegistrationError::AttemptLimit(t));
        }
        // G: nothing to submit; no number is looked at or consumed.
        if r.keys.is_empty() {
            return Err(self
                .reject(now, None, RejectionReason::NothingToSubmit)
                .await);
        }
        let idempotency = r
            .idempotency_key
            .as_deref()
            .map(|k| ring::digest::digest(&ring::digest::SHA256, k.as_bytes()))
            .map(|d| <[u8; 32]>::try_from(d.as_ref()).expect("32 bytes"));
        for _ in 0..MAX_CONFLICTS {
            // Find the number: the newest day whose digest names an issued number.
            let mut found = None;
            for day in self.live_days(now) {
                let Some(k) = i.keys.get(day).await? else {
                    continue;
                };
                let digest = k.digest(number.as_str());
                let (state, version) = self.number_state(&digest).await?;
                if state != NumberState::Unissued {
                    found = Some((digest, state, version));
                    break;
                }
            }
            let Some((digest, state, version)) = found else {
                i.limiter
                    .lock()
                    .expect("not poisoned")
                    .record_failure(now, source);
                let today = i.keys.get_or_create(Day(now.day())).await?;
                let digest = today.digest(number.as_str());
                return Err(self
                    .reject(now, Some(digest), RejectionReason::Unknown)
                    .await);
            };
            if let Some(answer) = state.replayed_answer(idempotency) {
                return Ok((answer.clone(), None));
            }
            let basis = match &state {
                NumberState::Issued { case_id, .. } | NumberState::Redeemed { case_id, .. } => {
                    self.case(*case_id).await?.map(|c| c.basis)
                }
                NumberState::Unissued => None,
            };
            let validated = match basis {
                Some(b) => validate_keys(&i.policy, b, now, &r.keys),
                None => Default::default(),
            };
            let keys = if validated.accepted.is_empty() {
                UploadedKeys::Plain(Vec::new())
            } else {
                let day_keys = i.keys.get_or_create(Day(now.day())).await?;
                let plain =
                    bincode::serde::encode_to_vec(&validated.accepted, bincode::config::standard())
                        .map_err(|e| LogError::Backend(e.to_string()))?;
                UploadedKeys::Sealed(day_keys.seal(&plain))
            };
            let cmd = NumberCommand::Redeem {
                digest,
                now,
                idempotency,
                submitted: r.keys.len(),
                keys,
                accepted: u16::try_from(validated.accepted.len()).unwrap_or(u16::MAX),
                dropped: validated.dropped.clone(),
            };
            let events = match state.decide(&cmd) {
                Ok(ev) => ev,
                Err(NumberError::Rejected(reason)) => {
                    if matches!(
                        reason,
                        RejectionReason::AlreadyUsed | RejectionReason::Expired
                    ) {
                        i.limiter
                            .lock()
                            .expect("not poisoned")
                            .record_failure(now, source);
                    }
                    return Err(self.reject(now, Some(digest), reason).await);
                }
                Err(NumberError::AlreadyIssued | NumberError::Revision(_)) => {
                    unreachable!("redeem never answers that")
                }
            };
            let first = self.new_event(now, events[0].clone(), None);
            let cause = Some(first.event_id);
            let evs: Vec<NewEvent> = std::iter::once(first)
                .chain(
                    events[1..]
                        .iter()
                        .map(|e| self.new_event(now, e.clone(), cause)),
                )
                .collect();
            match i
                .log
                .append(number_stream(&digest), ExpectedVersion::Exact(version), evs)
                .await
            {
                Ok(_) => {
                    i.limiter
                        .lock()
                        .expect("not poisoned")
                        .record_success(source);
                    let case_id = match state {
                        NumberState::Issued { case_id, .. } => case_id,
                        _ => unreachable!("decide accepted only an issued number"),
                    };
                    let answer = RedemptionAnswer {
                        case_id,
                        accepted: u16::try_from(validated.accepted.len()).unwrap_or(u16::MAX),
                        dropped: validated.dropped,
                    };
                    return Ok((answer, Some((digest, validated.accepted))));
                }
                // Someone else redeemed (or retried) meanwhile: decide again on the news.
                Err(LogError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogError::Contention(hotaru_events::Context::Registration).into())
    }
}

fn revisable(k: &hotaru_events::domain::UploadedKey) -> RevisableKey {
    RevisableKey {
        key_data: k.key.key_data,
        rolling_start: k.key.rolling_start_interval,
        rolling_period: k.key.rolling_period,
    }
}

fn issue_cmd(
    case_id: CaseId,
    centre_id: CentreId,
    digest: NumberDigest,
    now: UnixMillis,
    expires_at: UnixMillis,
) -> NumberCommand {
    NumberCommand::Issue {
        case_id,
        centre_id,
        digest,
        now,
        expires_at,
    }
}
