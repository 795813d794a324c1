//! The registration flow: confirm a case, issue its processing number, redeem the number
//! together with the case's keys (DOMAIN.md, "The registration flow").
//!
//! Every rule is decided by the pure aggregates of `hotaru-domain`, and every command on
//! an aggregate runs through the runtime's one [`Shell`] (load, enrich, decide, append
//! with the expected version, decide again when another node got in first). This service
//! is the enrich step: it draws randomness, reads the clock, finds numbers under their day
//! keys and seals keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hotaru_actors::projection::{self, Projection, ProjectionSnapshot};
use hotaru_actors::{CommandMeta, IdSource, Shell, ShellError, Start, fold, load_latest};
use hotaru_domain::Aggregate;
use hotaru_domain::case::{
    CaseCommand, CaseError, CaseState, QuotaExceeded, QuotaState, TakeQuota, case_stream,
    quota_stream,
};
use hotaru_domain::limiter::{
    AttemptLimiter, LimiterPolicy, RetryAfter, SourceOutcome, SourceRecord, guess_window,
    guesses_back_stream, guesses_stream, lease_request, lease_size, lease_verdict, window_end,
};
use hotaru_domain::number::{
    NumberCommand, NumberError, NumberState, ProcessingNumber, RedemptionAnswer, RevisionRefusal,
    number_stream,
};
use hotaru_domain::policy::{DAY_MS, RegistrationPolicy};
use hotaru_domain::refusals::{RefusalTally, Unevaluated};
use hotaru_domain::upload::{SubmittedKey, validate_keys, validate_keys_after};
use hotaru_events::domain::{
    CaseBasis, CaseId, CentreId, Day, GuessReleased, GuessReserved, ProcessingNumberRejected,
    RefusalsCounted, RejectionReason, UploadedKeys, encode_sealed_keys,
};
use hotaru_events::{Clock, DomainEvent, NewEvent, NumberDigest, StreamId, StreamKind, UnixMillis};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};
use hotaru_protocol::random::RandomSource;

use crate::batch::open_keys;
use crate::daykeys::DayKeys;
use crate::revision::{RevisableKey, RevisionKeys, TokenData};

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

impl From<CaseError> for RegistrationError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::Unknown => RegistrationError::UnknownCase,
            CaseError::NotYourCase => RegistrationError::NotYourCase,
            CaseError::AlreadyIssued => RegistrationError::AlreadyIssued,
            // A fresh random id that exists already: only a broken random source does that.
            CaseError::AlreadyConfirmed => {
                LogError::Backend("a fresh case id is in use".into()).into()
            }
        }
    }
}

impl From<QuotaExceeded> for RegistrationError {
    fn from(QuotaExceeded(n): QuotaExceeded) -> Self {
        RegistrationError::QuotaExceeded(n)
    }
}

impl From<NumberError> for RegistrationError {
    fn from(e: NumberError) -> Self {
        match e {
            NumberError::Rejected(r) => RegistrationError::Rejected(r),
            NumberError::AlreadyIssued => RegistrationError::AlreadyIssued,
            NumberError::Revision(RevisionRefusal::WindowClosed) => {
                RegistrationError::RevisionWindowClosed
            }
            NumberError::Revision(RevisionRefusal::InvalidToken) => {
                RegistrationError::InvalidRevisionToken
            }
        }
    }
}

impl From<std::convert::Infallible> for RegistrationError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl<D: Into<RegistrationError>, E: Into<RegistrationError>> From<ShellError<D, E>>
    for RegistrationError
{
    fn from(e: ShellError<D, E>) -> Self {
        match e {
            ShellError::Domain(d) => d.into(),
            ShellError::Enrich(e) => e.into(),
            ShellError::Log(e) => e.into(),
            ShellError::Crashed(c) => LogError::Backend(c.to_string()).into(),
        }
    }
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
#[derive(Clone)]
pub struct PublishAnswer {
    pub answer: RedemptionAnswer,
    pub revision_token: String,
}

/// Never the token: it lets its holder add keys to the upload.
impl std::fmt::Debug for PublishAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishAnswer")
            .field("answer", &self.answer)
            .field(
                "revision_token",
                &crate::Redacted(self.revision_token.len()),
            )
            .finish()
    }
}

/// A device's upload.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Redemption {
    /// As typed by the user (checked for error A).
    pub number: String,
    pub keys: Vec<SubmittedKey>,
    pub idempotency_key: Option<String>,
    /// The edge's opaque label of the request's source (a keyed hash, never an address):
    /// the per-source allowance's record is kept under it (ADR 0004).
    pub source: Option<u64>,
}

/// Never the number as typed (it may be a live one), the keys, the idempotency key or the
/// source: what a log line of a failed upload may say.
impl std::fmt::Debug for Redemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redemption")
            .field("number", &crate::Redacted(self.number.len()))
            .field("keys", &self.keys.len())
            .field(
                "idempotency_key",
                &self
                    .idempotency_key
                    .as_ref()
                    .map(|k| crate::Redacted(k.len())),
            )
            .field("source", &self.source.map(|_| crate::Redacted(8)))
            .finish()
    }
}

struct Inner<L: SideStore> {
    log: L,
    /// Runs every command on an aggregate (the case, the quota, the number).
    shell: Shell<L>,
    keys: DayKeys<L>,
    clock: Arc<dyn Clock>,
    policy: RegistrationPolicy,
    limiter: Mutex<AttemptLimiter>,
    limits: LimiterPolicy,
    random: Arc<dyn RandomSource>,
    revision_keys: RevisionKeys<L>,
    /// Tickets of the shared attempt budget this node leased and holds unused.
    tickets: Mutex<TicketPool>,
    leasing: tokio::sync::Mutex<()>,
    /// The centres' daily quota states of the days in use.
    quotas: hotaru_actors::StateCache<QuotaState>,
    /// Refusals that evaluated nothing (A, C, G), counted per interval
    /// (`hotaru_domain::refusals`).
    refusals: Mutex<RefusalTally>,
    /// Changes of sources' records waiting to be written, by label (`source_op`).
    source_queues: Mutex<HashMap<u64, SourceQueue>>,
}

/// A source's changes waiting, whether someone is writing them, and the record with the
/// revision this node last wrote (the next write tries it before reading again).
#[derive(Default)]
struct SourceQueue {
    ops: Vec<PendingSourceOp>,
    writing: bool,
    known: Option<(SourceRecord, u64)>,
}

/// What a queued change of a source's record is told: its result, or to lead the next
/// write itself.
enum SourceReply {
    Done(Result<Result<u64, RetryAfter>, LogError>),
    Lead,
}

/// A change of a source's record.
#[derive(Clone, Copy)]
enum SourceOp {
    Reserve,
    Settle { window: u64, outcome: SourceOutcome },
}

struct PendingSourceOp {
    op: SourceOp,
    now: UnixMillis,
    reply: Reply,
}

/// Who waits for a queued change's result.
enum Reply {
    /// A caller, told its result or to lead.
    Waiting(tokio::sync::oneshot::Sender<SourceReply>),
    /// The leader of the write, which takes its result itself.
    Leader,
    /// Nobody any more (the caller went away); the change is written all the same.
    Gone,
}

/// The tickets of the current window's attempt budget that this node leased and no guess
/// holds (ADR 0004). A restart forgets them: they stay counted, as failures would.
#[derive(Default)]
struct TicketPool {
    window: u64,
    free: u64,
}

impl TicketPool {
    /// Takes one of `window`'s tickets, if the node holds one.
    fn take(&mut self, window: u64) -> bool {
        if self.window != window {
            *self = Self { window, free: 0 };
        }
        let some = self.free > 0;
        self.free -= u64::from(some);
        some
    }

    /// Whether the node holds one of `window`'s tickets (without taking it).
    fn holds(&self, window: u64) -> bool {
        self.window == window && self.free > 0
    }

    fn add(&mut self, window: u64, n: u64) {
        if self.window == window {
            self.free += n;
        } else if self.window < window {
            *self = Self { window, free: n };
        }
    }

    /// A ticket freed by a success; answers the surplus to give back (above two leases,
    /// down to one).
    fn free(&mut self, window: u64, lease: u64) -> u64 {
        if self.window != window {
            return 0; // an older window's: it no longer matters
        }
        self.free += 1;
        if self.free > 2 * lease {
            let surplus = self.free - lease;
            self.free = lease;
            surplus
        } else {
            0
        }
    }
}

/// A redemption's answer, with the number's digest and the keys it accepted (none on a
/// retry that got the first answer again).
type Redeemed = (
    RedemptionAnswer,
    Option<(NumberDigest, Vec<hotaru_events::domain::UploadedKey>)>,
);

/// The attempt limiter's read model: the failed guesses the registration context records.
/// Not checkpointed: it starts at its horizon (`Registration::warm_up`).
struct RecentFailures;

impl Projection for RecentFailures {
    type State = AttemptLimiter;

    fn name(&self) -> &str {
        "recent-failures"
    }

    fn context(&self) -> hotaru_events::Context {
        hotaru_events::Context::Registration
    }

    fn apply(&self, limiter: &mut AttemptLimiter, commit: &hotaru_log::RecordedCommit) {
        for env in commit.commit.envelopes().flatten() {
            if let DomainEvent::ProcessingNumberRejected(e) = &env.event
                && matches!(
                    e.reason,
                    RejectionReason::Unknown
                        | RejectionReason::AlreadyUsed
                        | RejectionReason::Expired
                )
            {
                limiter.record_failure(env.occurred_at);
            }
        }
    }
}

/// The registration service. Cheap to clone; safe to call concurrently.
#[derive(Clone)]
pub struct Registration<L: SideStore> {
    inner: Arc<Inner<L>>,
}

/// How often a source's record is read and swapped again when another node changed it in
/// between (within a node, a source's changes are written together: `source_op`).
const SOURCE_SWAP_TRIES: usize = 32;

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
        let random = ids.random();
        Self {
            inner: Arc::new(Inner {
                keys,
                clock: clock.clone(),
                policy,
                limiter: Mutex::new(AttemptLimiter::new(limits.clone())),
                limits,
                revision_keys: RevisionKeys::new(log.clone(), random.clone()),
                shell: Shell::new(log.clone(), clock.clone(), ids.clone()),
                quotas: hotaru_actors::StateCache::new(1024),
                tickets: Mutex::default(),
                leasing: tokio::sync::Mutex::default(),
                refusals: Mutex::default(),
                source_queues: Mutex::default(),
                random,
                log,
            }),
        }
    }

    /// Rebuilds the attempt limiter's failure window from the log. Call once at start.
    /// (One number per case and the centres' quotas are fenced in the log itself.)
    ///
    /// Only the failures of a recent horizon can still count (the window, a lockout of the
    /// longest length after it, and an hour for clocks that disagree), so the replay starts
    /// at the first registration commit of that horizon, found by bisecting positions
    /// (about log2(head) one-commit reads): the start time does not grow with the history.
    /// A chain of doubled lockouts older than the horizon is forgotten; the shared attempt
    /// budget in the log (`guesses.<window>`) still holds across the restart.
    pub async fn warm_up(&self) -> Result<(), LogError> {
        let i = &self.inner;
        let p = &i.limits;
        let horizon = p
            .window_ms
            .saturating_add(p.lockout_max_ms.saturating_mul(2))
            .saturating_add(3_600_000);
        let since = UnixMillis(i.clock.now().0.saturating_sub(horizon));
        let from = self.first_position_since(since).await?;
        let mut failures = ProjectionSnapshot {
            position: from - 1,
            state: AttemptLimiter::new(i.limits.clone()),
        };
        let head = i.log.head(hotaru_events::Context::Registration).await?;
        projection::catch_up(&i.log, &RecentFailures, &mut failures, head).await?;
        *i.limiter.lock().expect("not poisoned") = failures.state;
        Ok(())
    }

    /// The first registration position whose commit occurred at or after `since` (the
    /// head + 1 when none did), by bisection: commits are appended in time order, give or
    /// take the clocks of several nodes (the caller's horizon has slack for that).
    async fn first_position_since(&self, since: UnixMillis) -> Result<u64, LogError> {
        let log = &self.inner.log;
        let ctx = hotaru_events::Context::Registration;
        let (mut lo, mut hi) = (1, log.head(ctx).await? + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = log
                .read_all(ctx, mid, 1)
                .await?
                .first()
                .and_then(|c| c.commit.envelopes().flatten().next())
                .map_or(since, |e| e.occurred_at);
            if at >= since {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// Events decided together at `now`, stamped as the shell stamps a command's events.
    fn new_events(&self, now: UnixMillis, events: Vec<DomainEvent>) -> Vec<NewEvent> {
        self.inner.shell.stamp(at(now), events)
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
        let case_id = CaseId(self.inner.random.array());
        let confirm = CaseCommand::Confirm {
            case_id,
            centre_id: centre,
            basis,
        };
        // A fresh random id: a new stream, decided without a read.
        self.inner
            .shell
            .execute::<CaseState>(&case_stream(case_id), Start::New, at(now), confirm)
            .await?;
        Ok(case_id)
    }

    /// A case from its last commit alone when that is its number's assignment (which
    /// repeats the confirmation), else from its stream.
    async fn case(&self, case_id: CaseId) -> Result<(CaseState, u64), LogError> {
        load_latest(&self.inner.log, &case_stream(case_id)).await
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
        let mut events = Vec::new();
        let (state, version) = fold(&commits, |position, env| events.push((position, env)))?;
        Ok((state, version, events))
    }

    /// Every key the number's uploads stored that can still be opened (a redemption's and
    /// its revisions').
    async fn uploaded_keys(
        &self,
        digest: &NumberDigest,
    ) -> Result<Vec<hotaru_events::domain::UploadedKey>, LogError> {
        let (_, _, events) = self.number_history(digest).await?;
        let mut keys = Vec::new();
        for (position, env) in events {
            if let DomainEvent::DiagnosisKeysUploaded(u) = env.event
                && let Some(k) = open_keys(&self.inner.keys, u.keys, position).await?
            {
                keys.extend(k);
            }
        }
        Ok(keys)
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
            self.inner.random.draw(&mut buf);
            // Rejection sampling: bytes >= 250 would bias the digits.
            for b in buf.iter().filter(|b| **b < 250) {
                if digits.len() < len {
                    digits.push(char::from(b'0' + b % 10));
                }
            }
        }
        Ok(ProcessingNumber::from_digits(digits))
    }

    /// Issues a processing number for the centre's case: one of the centre's numbers for
    /// the day is taken, the number is issued on its own stream, and the case records it,
    /// each append fenced on the version its decision read (see `hotaru_domain::case`).
    pub async fn issue_number(
        &self,
        centre: CentreId,
        case_id: CaseId,
    ) -> Result<IssuedNumber, RegistrationError> {
        let i = &self.inner;
        let (case, case_version) = self.case(case_id).await?;
        case.may_issue(centre)?;
        let now = i.clock.now();
        self.take_quota(centre, Day(now.day()), case_id, now)
            .await?;
        let (issued, digest) = self.issue_unique(centre, case_id, now).await?;
        let assign = CaseCommand::AssignNumber {
            case_id,
            centre_id: centre,
            digest,
        };
        // Another node that assigned the case its number first makes this one decide
        // again and be refused (AlreadyIssued): ours is never shown, and cannot be redeemed
        // since the case names the other.
        i.shell
            .execute(
                &case_stream(case_id),
                Start::Known(case, case_version),
                at(now),
                assign,
            )
            .await?;
        Ok(issued)
    }

    /// Takes one of the centre's numbers for `day`, or refuses when they are used up.
    async fn take_quota(
        &self,
        centre: CentreId,
        day: Day,
        case_id: CaseId,
        now: UnixMillis,
    ) -> Result<(), RegistrationError> {
        let i = &self.inner;
        let take = TakeQuota {
            centre_id: centre,
            day,
            case_id,
            quota: i.policy.daily_quota_per_centre,
        };
        // The quota stream holds one event per number the centre issued that day: its
        // state is cached (a stale one fails the expected-version append; a refusal, or
        // the case's slot taken by an earlier try, is answered from the latest state).
        i.shell
            .execute(
                &quota_stream(centre, day),
                Start::Cached(&i.quotas),
                at(now),
                take,
            )
            .await?;
        Ok(())
    }

    async fn issue_unique(
        &self,
        centre: CentreId,
        case_id: CaseId,
        now: UnixMillis,
    ) -> Result<(IssuedNumber, NumberDigest), RegistrationError> {
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
            let issue = issue_cmd(case_id, centre, digest, now, expires_at);
            // Another node that issued the same number meanwhile makes this draw decide
            // again, and draw anew.
            match i
                .shell
                .execute::<NumberState>(&number_stream(&digest), Start::Read, at(now), issue)
                .await
            {
                Ok(_) => {
                    let issued = IssuedNumber {
                        number,
                        case_id,
                        expires_at,
                    };
                    return Ok((issued, digest));
                }
                Err(ShellError::Domain(NumberError::AlreadyIssued)) => continue 'draw,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogError::Backend("could not draw an unused number in 32 tries".into()).into())
    }

    /// Records an evaluated guess that failed (B: unknown, used or expired), one event
    /// each: the global failure window is built from them.
    async fn record_rejection(
        &self,
        now: UnixMillis,
        digest: NumberDigest,
        reason: RejectionReason,
    ) -> Result<(), LogError> {
        let evs = self.new_events(
            now,
            vec![DomainEvent::ProcessingNumberRejected(
                ProcessingNumberRejected {
                    digest: Some(digest),
                    reason,
                },
            )],
        );
        self.inner
            .log
            .append(redemptions_stream(now.day()), ExpectedVersion::Any, evs)
            .await?;
        Ok(())
    }

    async fn reject(
        &self,
        now: UnixMillis,
        digest: NumberDigest,
        reason: RejectionReason,
    ) -> RegistrationError {
        if let Err(e) = self.record_rejection(now, digest, reason).await {
            return e.into();
        }
        RegistrationError::Rejected(reason)
    }

    /// Counts a refusal that evaluated nothing (A, C, G) in this node's tally, and
    /// records the tally of an interval that has ended. The refusal stands whatever the
    /// log answers: a tally whose append fails goes back in, to be recorded later.
    async fn count_refusal(&self, now: UnixMillis, refusal: Unevaluated) {
        let closed = self
            .inner
            .refusals
            .lock()
            .expect("not poisoned")
            .count(now, refusal);
        if let Some(t) = closed {
            self.record_tally(t).await;
        }
    }

    async fn record_tally(&self, t: RefusalsCounted) {
        let evs = self.new_events(t.until, vec![DomainEvent::RefusalsCounted(t.clone())]);
        let appended = self
            .inner
            .log
            .append(redemptions_stream(t.from.day()), ExpectedVersion::Any, evs)
            .await;
        if let Err(e) = appended {
            tracing::warn!(error = %e, refusals = t.total(), "cannot record the refusals counted; kept for the next try");
            self.inner.refusals.lock().expect("not poisoned").restore(t);
        }
    }

    /// Records this node's count of refusals when its interval has ended (the actor's
    /// tick), or whatever it holds with `force` (the node stopping).
    pub async fn flush_refusals(&self, force: bool) {
        let now = self.inner.clock.now();
        let due = self
            .inner
            .refusals
            .lock()
            .expect("not poisoned")
            .due(now, force);
        if let Some(t) = due {
            self.record_tally(t).await;
        }
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
            .0
            .basis()
            .ok_or(RegistrationError::InvalidRevisionToken)?;
        // Enrich: the keys this number uploaded before (the token must name them all) and
        // the new ones, sealed; read again on every decision.
        let token = &token;
        let r = &r;
        let enrich = |_: &NumberState, _| async move {
            let earlier = self.uploaded_keys(&token.digest).await?;
            let before: std::collections::HashSet<[u8; 16]> =
                earlier.iter().map(|k| *k.key.tek.as_bytes()).collect();
            // The request's keys the token does not name, with their places in the request.
            let (mut fresh, mut places) = (Vec::new(), Vec::new());
            for (index, k) in r.keys.iter().enumerate() {
                if let Ok(key_data) = <[u8; 16]>::try_from(&k.key_data[..]) {
                    let rk = RevisableKey {
                        key_data,
                        rolling_start: k.rolling_start,
                        rolling_period: k.rolling_period,
                    };
                    match token.keys.iter().find(|t| t.key_data == key_data) {
                        // Named by the token: already uploaded, unless its metadata changed.
                        Some(t) if *t == rk => continue,
                        Some(_) => return Err(RegistrationError::InvalidRevisionToken),
                        // Uploaded before but not named: not this device's latest token.
                        None if before.contains(&key_data) => {
                            return Err(RegistrationError::InvalidRevisionToken);
                        }
                        None => {}
                    }
                }
                fresh.push(k.clone());
                places.push(u16::try_from(index).unwrap_or(u16::MAX));
            }
            // Judged together with the keys uploaded before: revisions add up to no more
            // than one upload may hold (and so, with `max_keys_per_upload` at most
            // `MAX_TOKEN_KEYS`, to no more than a token names).
            let earlier: Vec<_> = earlier.iter().map(|k| k.key).collect();
            let mut validated = validate_keys_after(&i.policy, basis, now, &earlier, &fresh);
            for d in &mut validated.dropped {
                d.index = places[usize::from(d.index)];
            }
            let new = validated.accepted;
            let keys = if new.is_empty() {
                UploadedKeys::Plain(Vec::new())
            } else {
                let day_keys = i.keys.get_or_create(Day(now.day())).await?;
                UploadedKeys::Sealed(day_keys.seal(&encode_sealed_keys(&new)))
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
            Ok((cmd, (new, accepted, validated.dropped)))
        };
        let (new, accepted, dropped) = match i
            .shell
            .execute_with(&number_stream(&token.digest), Start::Read, at(now), enrich)
            .await
        {
            Ok(done) => done.extra,
            Err(ShellError::Domain(NumberError::Revision(RevisionRefusal::WindowClosed))) => {
                return Err(RegistrationError::RevisionWindowClosed);
            }
            Err(ShellError::Domain(_)) => return Err(RegistrationError::InvalidRevisionToken),
            Err(e) => return Err(e.into()),
        };
        let mut named = token.keys.clone();
        named.extend(new.iter().map(revisable));
        let answer = RedemptionAnswer {
            case_id: token.case_id,
            accepted,
            dropped,
        };
        Ok((
            answer,
            TokenData {
                keys: named,
                ..token.clone()
            },
        ))
    }

    /// [`Self::redeem`], also giving the number's digest and the keys it accepted.
    async fn redeem_keys(&self, r: Redemption) -> Result<Redeemed, RegistrationError> {
        let i = &self.inner;
        let now = i.clock.now();
        let source = r.source;
        // A: the format, before anything else.
        let Ok(number) = ProcessingNumber::parse(&r.number, i.policy.number_length) else {
            self.count_refusal(now, Unevaluated::Format).await;
            return Err(RegistrationError::Rejected(RejectionReason::Format));
        };
        // C: refused without evaluating the number, so a refused guess can never hit.
        let allowed = i.limiter.lock().expect("not poisoned").check(now);
        if let Err(RetryAfter(t)) = allowed {
            self.count_refusal(now, Unevaluated::AttemptLimit).await;
            return Err(RegistrationError::AttemptLimit(t));
        }
        // G: nothing to submit; no number is looked at or consumed.
        if r.keys.is_empty() {
            self.count_refusal(now, Unevaluated::NothingToSubmit).await;
            return Err(RegistrationError::Rejected(
                RejectionReason::NothingToSubmit,
            ));
        }
        // C per source, across nodes: a slot of the source's allowance, held until decided.
        let slot = match source {
            None => None,
            Some(label) => match self.reserve_source(label, now).await {
                Ok(window) => Some((label, window)),
                Err(e) => {
                    if matches!(e, RegistrationError::AttemptLimit(_)) {
                        self.count_refusal(now, Unevaluated::AttemptLimit).await;
                    }
                    return Err(e);
                }
            },
        };
        // C across nodes: a ticket of the window's shared budget, held until decided.
        let window = match self.take_ticket(now).await {
            Ok(w) => w,
            Err(e) => {
                if let Some((label, w)) = slot {
                    self.settle_source(label, w, SourceOutcome::Unevaluated, now)
                        .await;
                }
                return Err(e);
            }
        };
        let result = self.evaluate(&number, &r, now).await;
        if result.is_ok() {
            // A success frees its ticket for this node's next guess; any other outcome
            // uses it up: the budget errs on the side of fewer evaluations.
            self.free_ticket(window, now).await;
        }
        if let Some((label, w)) = slot {
            let outcome = match &result {
                Ok(_) => SourceOutcome::Success,
                Err(RegistrationError::Rejected(
                    RejectionReason::Unknown
                    | RejectionReason::AlreadyUsed
                    | RejectionReason::Expired,
                )) => SourceOutcome::Failure,
                Err(_) => SourceOutcome::Unevaluated,
            };
            self.settle_source(label, w, outcome, now).await;
        }
        result
    }

    /// The source's record, as every node sees it (`hotaru_domain::limiter::SourceRecord`).
    async fn source_record(&self, label: u64) -> Result<(SourceRecord, u64), LogError> {
        let (bytes, revision) = self.inner.log.source_get(label).await?;
        let record = bytes
            .as_deref()
            .and_then(SourceRecord::decode)
            .unwrap_or_default();
        Ok((record, revision))
    }

    /// Takes a slot of the source's allowance, or refuses (C). Returns the window the slot
    /// is of.
    async fn reserve_source(&self, label: u64, now: UnixMillis) -> Result<u64, RegistrationError> {
        match self.source_op(label, SourceOp::Reserve, now).await? {
            Ok(window) => Ok(window),
            Err(RetryAfter(t)) => Err(RegistrationError::AttemptLimit(t)),
        }
    }

    /// Records how the guess holding a slot of the source's allowance was decided. The
    /// answer stands whatever happens here: a record that cannot be written keeps the
    /// slot held until its window ends (fewer evaluations, never more).
    async fn settle_source(
        &self,
        label: u64,
        window: u64,
        outcome: SourceOutcome,
        now: UnixMillis,
    ) {
        if let Err(e) = self
            .source_op(label, SourceOp::Settle { window, outcome }, now)
            .await
        {
            tracing::warn!(error = %e, "cannot write a source's record; its slot stays held");
        }
    }

    /// One change of a source's record. A node applies the changes of one source that
    /// arrive together in one read and one fenced swap (group commit): the guesses of one
    /// source race with each other, and one record swapped once per guess by 64 guesses
    /// in flight lost its race more often than it won it. Whoever finds no write under
    /// way leads: it writes the queued changes (its own among them) and hands the lead to
    /// the first change queued meanwhile, so that no task is spawned and no caller waits
    /// for more than the batch before its own.
    async fn source_op(
        &self,
        label: u64,
        op: SourceOp,
        now: UnixMillis,
    ) -> Result<Result<u64, RetryAfter>, LogError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queues = self.inner.source_queues.lock().expect("not poisoned");
            let queue = queues.entry(label).or_default();
            let lead = !std::mem::replace(&mut queue.writing, true);
            queue.ops.push(PendingSourceOp {
                op,
                now,
                reply: if lead {
                    Reply::Leader
                } else {
                    Reply::Waiting(reply)
                },
            });
            lead
        };
        if lead {
            return self.lead_source(label).await;
        }
        match answer.await {
            Ok(SourceReply::Done(r)) => r,
            Ok(SourceReply::Lead) => self.lead_source(label).await,
            Err(_) => Err(LogError::Backend(
                "a source's record was not written".into(),
            )),
        }
    }

    /// Writes the queued changes of `label`, the caller's own among them (the one with no
    /// reply), answers the others, and hands the lead on. A leader that goes away half-way
    /// (its caller dropped) hands it on as well, to a task.
    async fn lead_source(&self, label: u64) -> Result<Result<u64, RetryAfter>, LogError> {
        struct HandOver<'a, L: EventLog + SideStore> {
            reg: &'a Registration<L>,
            label: u64,
        }
        impl<L: EventLog + SideStore> Drop for HandOver<'_, L> {
            fn drop(&mut self) {
                self.reg.hand_over_source(self.label);
            }
        }
        let _hand_over = HandOver { reg: self, label };
        let (batch, known) = {
            let mut queues = self.inner.source_queues.lock().expect("not poisoned");
            let queue = queues.entry(label).or_default();
            (std::mem::take(&mut queue.ops), queue.known.take())
        };
        let (results, written) = self.apply_source_ops(label, &batch, known).await;
        if let Some(queue) = self
            .inner
            .source_queues
            .lock()
            .expect("not poisoned")
            .get_mut(&label)
        {
            queue.known = written;
        }
        let mut own = None;
        for (p, r) in batch.into_iter().zip(results) {
            match p.reply {
                Reply::Waiting(tx) => {
                    let _ = tx.send(SourceReply::Done(r));
                }
                Reply::Leader => own = Some(r),
                Reply::Gone => {}
            }
        }
        own.unwrap_or_else(|| Err(LogError::Backend("a source's change was lost".into())))
    }

    /// The lead of `label`'s queue passes to its first change waiting (or, when every
    /// caller waiting is gone, to a task that writes their changes); with nothing queued
    /// the queue closes.
    fn hand_over_source(&self, label: u64) {
        let mut queues = self.inner.source_queues.lock().expect("not poisoned");
        let Some(queue) = queues.get_mut(&label) else {
            return;
        };
        if queue.ops.is_empty() {
            queues.remove(&label);
            return;
        }
        for p in &mut queue.ops {
            if let Reply::Waiting(tx) = std::mem::replace(&mut p.reply, Reply::Leader) {
                match tx.send(SourceReply::Lead) {
                    Ok(()) => return,
                    // That caller is gone; its change is still written.
                    Err(_) => p.reply = Reply::Gone,
                }
            } else {
                p.reply = Reply::Gone;
            }
        }
        drop(queues);
        // Outside a runtime (a leader dropped while the process shuts down) nothing can
        // write them any more: they were in memory only, like slots a crash leaves held.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let this = self.clone();
            runtime.spawn(async move {
                let _ = this.lead_source(label).await;
            });
        }
    }

    /// Applies the changes in order to the record as last written here (`known`, while
    /// this node keeps writing the source's changes: no read) or as read, and swaps the
    /// result in fenced on that revision; again from a fresh read when another node got in
    /// first. Also gives the record as written, with its revision.
    async fn apply_source_ops(
        &self,
        label: u64,
        batch: &[PendingSourceOp],
        mut known: Option<(SourceRecord, u64)>,
    ) -> (
        Vec<Result<Result<u64, RetryAfter>, LogError>>,
        Option<(SourceRecord, u64)>,
    ) {
        let limits = &self.inner.limits;
        let all = |e: LogError| (batch.iter().map(|_| Err(e.clone())).collect(), None);
        for _ in 0..SOURCE_SWAP_TRIES {
            let (mut record, revision) = match known.take() {
                Some(k) => k,
                None => match self.source_record(label).await {
                    Ok(r) => r,
                    Err(e) => return all(e),
                },
            };
            let results: Vec<_> = batch
                .iter()
                .map(|p| match p.op {
                    SourceOp::Reserve => match record.reserve(p.now, limits) {
                        Ok(next) => {
                            record = next;
                            Ok(Ok(next.window))
                        }
                        Err(refused) => Ok(Err(refused)),
                    },
                    SourceOp::Settle { window, outcome } => {
                        record = record.settle(window, outcome, p.now, limits);
                        Ok(Ok(window))
                    }
                })
                .collect();
            match self
                .inner
                .log
                .source_swap(label, revision, &record.encode())
                .await
            {
                Ok(Some(new_revision)) => return (results, Some((record, new_revision))),
                Ok(None) => continue,
                Err(e) => return all(e),
            }
        }
        all(LogError::Backend(format!(
            "a source's record changed {SOURCE_SWAP_TRIES} times while it was read"
        )))
    }

    /// What a redemption from `source` would be told before its number is looked at:
    /// refused (C, until when) by this node's limiter or the spent shared budget, or
    /// admitted. Appends nothing and takes no ticket: chaff asks this so that it is refused
    /// exactly when a real upload would be.
    pub async fn attempt_verdict(&self, source: Option<u64>) -> Result<(), RegistrationError> {
        let i = &self.inner;
        let now = i.clock.now();
        if let Err(RetryAfter(t)) = i.limiter.lock().expect("not poisoned").check(now) {
            return Err(RegistrationError::AttemptLimit(t));
        }
        if let Some(label) = source {
            let (record, _) = self.source_record(label).await?;
            if let Err(RetryAfter(t)) = record.verdict(now, &i.limits) {
                return Err(RegistrationError::AttemptLimit(t));
            }
        }
        let window = guess_window(now, &i.limits);
        if i.tickets.lock().expect("not poisoned").holds(window) {
            return Ok(());
        }
        let given_back = i.log.stream_version(&guesses_back_stream(window)).await?;
        let taken = i.log.stream_version(&guesses_stream(window)).await?;
        if lease_request(taken, given_back, &i.limits) == 0 {
            let RetryAfter(t) = window_end(window, &i.limits);
            return Err(RegistrationError::AttemptLimit(t));
        }
        Ok(())
    }

    /// Takes a ticket of the shared budget's window from this node's lease, leasing more
    /// when it has none, or refuses (C) without evaluating (see
    /// `hotaru_domain::limiter::{lease_request, lease_verdict}`).
    async fn take_ticket(&self, now: UnixMillis) -> Result<u64, RegistrationError> {
        let i = &self.inner;
        let window = guess_window(now, &i.limits);
        if i.tickets.lock().expect("not poisoned").take(window) {
            return Ok(window);
        }
        // One lease at a time: the guesses waiting for it take its tickets, rather than
        // each leasing its own and asking the budget for more than they need.
        let leasing = i.leasing.lock().await;
        if i.tickets.lock().expect("not poisoned").take(window) {
            return Ok(window);
        }
        // Read before the lease: every ticket given back by then is one before ours.
        let given_back = i.log.stream_version(&guesses_back_stream(window)).await?;
        let taken = i.log.stream_version(&guesses_stream(window)).await?;
        let want = lease_request(taken, given_back, &i.limits);
        let verdict = if want == 0 {
            Err(window_end(window, &i.limits)) // spent: refused without appending
        } else {
            let evs = self.ticket_events(now, want, || {
                DomainEvent::GuessReserved(GuessReserved { window })
            });
            let lease = i
                .log
                .append(guesses_stream(window), ExpectedVersion::Any, evs)
                .await?;
            let verdict = lease_verdict(
                lease.first_version,
                lease.last_version,
                given_back,
                window,
                &i.limits,
            );
            // The tickets beyond the budget (another node leased in between) go back.
            let usable = *verdict.as_ref().unwrap_or(&0);
            if usable < want {
                self.give_back(window, now, want - usable).await?;
            }
            verdict
        };
        match verdict {
            Ok(usable) => {
                // One for this guess, the rest for the node's next ones.
                i.tickets
                    .lock()
                    .expect("not poisoned")
                    .add(window, usable - 1);
                Ok(window)
            }
            Err(RetryAfter(t)) => {
                // The next guess may lease (or be refused) while this refusal is recorded.
                drop(leasing);
                self.count_refusal(now, Unevaluated::AttemptLimit).await;
                Err(RegistrationError::AttemptLimit(t))
            }
        }
    }

    /// A success's ticket back to this node's lease; beyond two leases' worth, the surplus
    /// goes back to the window's budget for the other nodes.
    async fn free_ticket(&self, window: u64, now: UnixMillis) {
        let i = &self.inner;
        let surplus = i
            .tickets
            .lock()
            .expect("not poisoned")
            .free(window, lease_size(&i.limits));
        if surplus > 0
            && let Err(e) = self.give_back(window, now, surplus).await
        {
            // Kept by no one: counted as failures, so fewer evaluations, never more.
            tracing::warn!(error = %e, "tickets of the attempt budget were not given back");
        }
    }

    /// `n` events of tickets taken or given back, for one commit.
    fn ticket_events(
        &self,
        now: UnixMillis,
        n: u64,
        event: impl Fn() -> DomainEvent,
    ) -> Vec<NewEvent> {
        self.new_events(now, (0..n).map(|_| event()).collect())
    }

    async fn give_back(&self, window: u64, now: UnixMillis, n: u64) -> Result<(), LogError> {
        let evs = self.ticket_events(now, n, || {
            DomainEvent::GuessReleased(GuessReleased { window })
        });
        self.inner
            .log
            .append(guesses_back_stream(window), ExpectedVersion::Any, evs)
            .await
            .map(|_| ())
    }

    /// Evaluates a well-formed number with keys (B, or the upload), holding a ticket.
    async fn evaluate(
        &self,
        number: &ProcessingNumber,
        r: &Redemption,
        now: UnixMillis,
    ) -> Result<Redeemed, RegistrationError> {
        let i = &self.inner;
        let idempotency = r
            .idempotency_key
            .as_deref()
            .map(|k| ring::digest::digest(&ring::digest::SHA256, k.as_bytes()))
            .map(|d| <[u8; 32]>::try_from(d.as_ref()).expect("32 bytes"));
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
            self.record_failure(now);
            let today = i.keys.get_or_create(Day(now.day())).await?;
            let digest = today.digest(number.as_str());
            return Err(self.reject(now, digest, RejectionReason::Unknown).await);
        };
        // Enrich, on the number's state (again after a conflict, on the winner's): a
        // retried upload gets its first answer; the case says which number it admits and
        // when the keys' days start; the accepted keys are sealed under today's day key.
        let enrich = |state: &NumberState, _| {
            let state = state.clone();
            async move {
                if let Some(answer) = state.replayed_answer(idempotency) {
                    return Err(BeforeRedeeming::Replayed(answer.clone()));
                }
                let case_id = match &state {
                    NumberState::Issued { case_id, .. } | NumberState::Redeemed { case_id, .. } => {
                        Some(*case_id)
                    }
                    NumberState::Unissued => None,
                };
                let case = match case_id {
                    Some(id) => self.case(id).await?.0,
                    None => CaseState::Unconfirmed,
                };
                // A number its case does not name (a lost race's, or one a crash left
                // behind before the case recorded another) is no number at all.
                if matches!(state, NumberState::Issued { .. }) && !case.admits(&digest) {
                    return Err(BeforeRedeeming::NotNamed);
                }
                let validated = match case.basis() {
                    Some(b) => validate_keys(&i.policy, b, now, &r.keys),
                    None => Default::default(),
                };
                let keys = if validated.accepted.is_empty() {
                    UploadedKeys::Plain(Vec::new())
                } else {
                    let day_keys = i.keys.get_or_create(Day(now.day())).await?;
                    UploadedKeys::Sealed(day_keys.seal(&encode_sealed_keys(&validated.accepted)))
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
                Ok((cmd, (case_id, validated)))
            }
        };
        let meta = CommandMeta {
            chained: true, // the keys' upload is caused by the redemption
            ..at(now)
        };
        let outcome = i
            .shell
            .execute_with(
                &number_stream(&digest),
                Start::Known(state, version),
                meta,
                enrich,
            )
            .await;
        match outcome {
            Ok(done) => {
                let (case_id, validated) = done.extra;
                let case_id = case_id.ok_or_else(|| {
                    LogError::Backend("a redemption was accepted for no case".into())
                })?;
                let answer = RedemptionAnswer {
                    case_id,
                    accepted: u16::try_from(validated.accepted.len()).unwrap_or(u16::MAX),
                    dropped: validated.dropped,
                };
                Ok((answer, Some((digest, validated.accepted))))
            }
            // A retry gets the first answer, with the keys that upload stored (a v1
            // publish's new revision token names them).
            Err(ShellError::Enrich(BeforeRedeeming::Replayed(answer))) => {
                let stored = self.uploaded_keys(&digest).await?;
                Ok((answer, Some((digest, stored))))
            }
            Err(ShellError::Enrich(BeforeRedeeming::NotNamed)) => {
                self.record_failure(now);
                Err(self.reject(now, digest, RejectionReason::Unknown).await)
            }
            Err(ShellError::Enrich(BeforeRedeeming::Failed(e))) => Err(e),
            Err(ShellError::Domain(NumberError::Rejected(reason))) => {
                if matches!(
                    reason,
                    RejectionReason::AlreadyUsed | RejectionReason::Expired
                ) {
                    self.record_failure(now);
                }
                Err(self.reject(now, digest, reason).await)
            }
            Err(ShellError::Domain(e)) => Err(e.into()),
            Err(ShellError::Log(e)) => Err(e.into()),
            Err(ShellError::Crashed(c)) => Err(LogError::Backend(c.to_string()).into()),
        }
    }

    /// A failed guess, for this node's lockouts.
    fn record_failure(&self, now: UnixMillis) {
        self.inner
            .limiter
            .lock()
            .expect("not poisoned")
            .record_failure(now);
    }
}

/// What the redemption's enrich step answers instead of a command.
enum BeforeRedeeming {
    /// The upload was retried (its idempotency key): its first answer.
    Replayed(RedemptionAnswer),
    /// The number is issued but its case names another: B.
    NotNamed,
    Failed(RegistrationError),
}

impl From<LogError> for BeforeRedeeming {
    fn from(e: LogError) -> Self {
        BeforeRedeeming::Failed(e.into())
    }
}

/// The meta of a command this service decided at `now` (caused by no other event).
fn at(now: UnixMillis) -> CommandMeta {
    CommandMeta {
        at: Some(now),
        ..CommandMeta::default()
    }
}

fn revisable(k: &hotaru_events::domain::UploadedKey) -> RevisableKey {
    RevisableKey {
        key_data: *k.key.tek.as_bytes(),
        rolling_start: k.key.rolling_start.0,
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

#[cfg(test)]
mod tests {
    use hotaru_actors::{ManualClock, RandomIds};
    use hotaru_log::SledLog;
    use hotaru_protocol::random::OsRandom;

    use super::*;

    #[tokio::test]
    async fn the_warm_up_starts_at_the_first_commit_of_its_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        let clock = ManualClock::at(UnixMillis(100 * 86_400_000));
        let keys = DayKeys::new(log.clone(), &[7; 32], Arc::new(OsRandom::new())).unwrap();
        let reg = Registration::new(
            log.clone(),
            keys,
            Arc::new(clock.clone()),
            Arc::new(RandomIds::default()),
            RegistrationPolicy::default(),
            LimiterPolicy::default(),
        );
        let t = |n: u64| UnixMillis(100 * 86_400_000 + n * 60_000);
        assert_eq!(
            reg.first_position_since(t(0)).await.unwrap(),
            1,
            "empty log"
        );
        // 50 rejections a minute apart, from t(0) to t(49).
        for n in 0..50 {
            clock.set(t(n));
            reg.record_rejection(t(n), NumberDigest([1; 32]), RejectionReason::Unknown)
                .await
                .unwrap();
        }
        assert_eq!(reg.first_position_since(t(0)).await.unwrap(), 1);
        assert_eq!(reg.first_position_since(t(17)).await.unwrap(), 18);
        assert_eq!(reg.first_position_since(t(49)).await.unwrap(), 50);
        assert_eq!(
            reg.first_position_since(t(50)).await.unwrap(),
            51,
            "all older"
        );
        assert_eq!(reg.first_position_since(UnixMillis(0)).await.unwrap(), 1);
    }
}
