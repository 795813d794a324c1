//! The actix face of the services: each step is a command message handled by an actor.
//!
//! - [`RegistrationActor`] handles ConfirmCase, IssueNumber and Redeem. It keeps no state
//!   of its own (the service reads the streams and appends with expected versions), so it
//!   runs commands concurrently and any number of them can run on any number of nodes.
//! - [`BatchSignerActor`] signs on a schedule (and on demand with [`SignNow`]), one batch at
//!   a time in this process; across nodes the signer stream's expected version fences it.
//! - [`RetentionActor`] shreds expired days once an hour.
//!
//! All three are `Supervised`: a panic restarts the actor with its mailbox.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hotaru_actors::IdSource;
use hotaru_domain::number::RedemptionAnswer;
use hotaru_domain::refusals::TALLY_MS;
use hotaru_events::Clock;
use hotaru_events::domain::{CaseBasis, CaseId, CentreId, Day};
use hotaru_log::{EventLog, LogError, SideStore};

use crate::batch::{BatchError, BatchOutcome, Distribution};
use crate::daykeys::DayKeys;
use crate::registration::{
    IssuedNumber, PublishAnswer, Redemption, Registration, RegistrationError,
};

/// A health centre confirms a case.
#[derive(Message)]
#[rtype(result = "Result<CaseId, RegistrationError>")]
pub struct ConfirmCase {
    pub centre: CentreId,
    pub basis: CaseBasis,
}

/// A health centre asks for the case's processing number.
#[derive(Message)]
#[rtype(result = "Result<IssuedNumber, RegistrationError>")]
pub struct IssueNumber {
    pub centre: CentreId,
    pub case_id: CaseId,
}

/// A device uploads its keys with a processing number.
#[derive(Message)]
#[rtype(result = "Result<RedemptionAnswer, RegistrationError>")]
pub struct Redeem(pub Redemption);

pub struct RegistrationActor<L: EventLog + SideStore> {
    service: Registration<L>,
}

impl<L: EventLog + SideStore + Unpin> RegistrationActor<L> {
    pub fn new(service: Registration<L>) -> Self {
        Self { service }
    }
}

impl<L: EventLog + SideStore + Unpin> Actor for RegistrationActor<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The revision-token key rotates on its schedule, checked hourly (and at start by
        // `Node::start`, before any command is taken: a seeded node draws in one order).
        let rotate = |act: &mut Self, ctx: &mut Context<Self>| {
            let s = act.service.clone();
            ctx.spawn(
                async move {
                    match s.rotate_revision_key_if_due().await {
                        Ok(Some(id)) => tracing::info!(key = id, "revision key rotated"),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "revision key rotation failed"),
                    }
                }
                .into_actor(act),
            );
        };
        ctx.run_interval(Duration::from_secs(3600), rotate);
        // The refusals counted in an interval that has ended are recorded (at most one
        // append per interval, however many refusals; `hotaru_domain::refusals`).
        let flush = |act: &mut Self, ctx: &mut Context<Self>| {
            let s = act.service.clone();
            ctx.spawn(async move { s.flush_refusals(false).await }.into_actor(act));
        };
        ctx.run_interval(Duration::from_millis(TALLY_MS), flush);
    }
}

impl<L: EventLog + SideStore + Unpin> Supervised for RegistrationActor<L> {}

impl<L: EventLog + SideStore + Unpin> Handler<ConfirmCase> for RegistrationActor<L> {
    type Result = ResponseFuture<Result<CaseId, RegistrationError>>;

    fn handle(&mut self, m: ConfirmCase, _: &mut Context<Self>) -> Self::Result {
        let s = self.service.clone();
        Box::pin(async move { s.confirm_case(m.centre, m.basis).await })
    }
}

impl<L: EventLog + SideStore + Unpin> Handler<IssueNumber> for RegistrationActor<L> {
    type Result = ResponseFuture<Result<IssuedNumber, RegistrationError>>;

    fn handle(&mut self, m: IssueNumber, _: &mut Context<Self>) -> Self::Result {
        let s = self.service.clone();
        Box::pin(async move { s.issue_number(m.centre, m.case_id).await })
    }
}

impl<L: EventLog + SideStore + Unpin> Handler<Redeem> for RegistrationActor<L> {
    type Result = ResponseFuture<Result<RedemptionAnswer, RegistrationError>>;

    fn handle(&mut self, m: Redeem, _: &mut Context<Self>) -> Self::Result {
        let s = self.service.clone();
        Box::pin(async move { s.redeem(m.0).await })
    }
}

/// What a redemption from this source would be told before its number is looked at (the
/// chaff's verdict; see `Registration::attempt_verdict`).
#[derive(Message)]
#[rtype(result = "Result<(), RegistrationError>")]
pub struct AttemptVerdict(pub Option<u64>);

impl<L: EventLog + SideStore + Unpin> Handler<AttemptVerdict> for RegistrationActor<L> {
    type Result = ResponseFuture<Result<(), RegistrationError>>;

    fn handle(&mut self, m: AttemptVerdict, _: &mut Context<Self>) -> Self::Result {
        let s = self.service.clone();
        Box::pin(async move { s.attempt_verdict(m.0).await })
    }
}

/// A device publishes keys through Google's v1 API (with a revision token to add keys).
#[derive(Message)]
#[rtype(result = "Result<PublishAnswer, RegistrationError>")]
pub struct Publish {
    pub redemption: Redemption,
    pub revision_token: Option<String>,
}

impl<L: EventLog + SideStore + Unpin> Handler<Publish> for RegistrationActor<L> {
    type Result = ResponseFuture<Result<PublishAnswer, RegistrationError>>;

    fn handle(&mut self, m: Publish, _: &mut Context<Self>) -> Self::Result {
        let s = self.service.clone();
        Box::pin(async move { s.publish(m.redemption, m.revision_token.as_deref()).await })
    }
}

/// Sign a batch now (the operator API's `POST /v1/admin/batches`).
#[derive(Message)]
#[rtype(result = "Result<Option<BatchOutcome>, BatchError>")]
pub struct SignNow;

pub struct BatchSignerActor<L: EventLog + SideStore> {
    dist: Distribution<L>,
}

impl<L: EventLog + SideStore + Unpin> BatchSignerActor<L> {
    pub fn new(dist: Distribution<L>) -> Self {
        Self { dist }
    }
}

impl<L: EventLog + SideStore + Unpin> Actor for BatchSignerActor<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = Duration::from_millis(self.dist.policy().interval_ms.max(1_000));
        ctx.run_interval(every, |act, ctx| {
            let dist = act.dist.clone();
            ctx.wait(async move { dist.sign_batch().await }.into_actor(act).map(
                |r, _, _| match r {
                    Ok(Some(b)) => tracing::info!(
                        batch = b.batch_id,
                        keys = b.key_count,
                        files = b.files.len(),
                        "batch published"
                    ),
                    Ok(None) => tracing::debug!("no keys to publish"),
                    Err(BatchError::Fenced) => {
                        tracing::info!("another node published this batch")
                    }
                    Err(e) => tracing::error!(error = %e, "batch signing failed"),
                },
            ));
        });
    }
}

impl<L: EventLog + SideStore + Unpin> Supervised for BatchSignerActor<L> {}

impl<L: EventLog + SideStore + Unpin> Handler<SignNow> for BatchSignerActor<L> {
    type Result = AtomicResponse<Self, Result<Option<BatchOutcome>, BatchError>>;

    fn handle(&mut self, _: SignNow, _: &mut Context<Self>) -> Self::Result {
        let dist = self.dist.clone();
        AtomicResponse::new(Box::pin(
            async move { dist.sign_batch().await }.into_actor(self),
        ))
    }
}

/// Run retention now.
#[derive(Message)]
#[rtype(result = "Result<Vec<Day>, LogError>")]
pub struct ExpireNow;

pub struct RetentionActor<L: EventLog + SideStore> {
    log: L,
    keys: DayKeys<L>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    retention_days: u32,
}

impl<L: EventLog + SideStore + Unpin> RetentionActor<L> {
    pub fn new(
        log: L,
        keys: DayKeys<L>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        retention_days: u32,
    ) -> Self {
        Self {
            log,
            keys,
            clock,
            ids,
            retention_days,
        }
    }

    fn run(&self) -> impl Future<Output = Result<Vec<Day>, LogError>> + 'static {
        let (log, keys, clock, ids, days) = (
            self.log.clone(),
            self.keys.clone(),
            self.clock.clone(),
            self.ids.clone(),
            self.retention_days,
        );
        async move { crate::retention::expire(&log, &keys, &clock, &ids, days).await }
    }
}

impl<L: EventLog + SideStore + Unpin> Actor for RetentionActor<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Once at start (finishing whatever a crash left recorded but not done), then
        // every hour.
        let tick = |act: &mut Self, ctx: &mut Context<Self>| {
            ctx.wait(act.run().into_actor(act).map(|r, _, _| match r {
                Ok(days) if !days.is_empty() => tracing::info!(?days, "days shredded"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention failed"),
            }));
        };
        tick(self, ctx);
        ctx.run_interval(Duration::from_secs(3600), tick);
    }
}

impl<L: EventLog + SideStore + Unpin> Supervised for RetentionActor<L> {}

impl<L: EventLog + SideStore + Unpin> Handler<ExpireNow> for RetentionActor<L> {
    type Result = ResponseFuture<Result<Vec<Day>, LogError>>;

    fn handle(&mut self, _: ExpireNow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.run())
    }
}
