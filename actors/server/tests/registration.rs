//! The registration flow end to end through the service, on sled and on a real
//! nats-server: confirm → issue → redeem with keys, errors A, B, C and G, COCOA 1.1.1 and
//! 1.1.2, idempotent retries, one winner among concurrent redemptions, the quota.

use hotaru_protocol::random::OsRandom;
use std::sync::Arc;

use hotaru_actors::{ManualClock, RandomIds};
use hotaru_domain::limiter::LimiterPolicy;
use hotaru_domain::number::RedemptionAnswer;
use hotaru_domain::policy::{DAY_MS, RegistrationPolicy};
use hotaru_domain::upload::SubmittedKey;
use hotaru_events::domain::{CaseBasis, CentreId, Day, RejectionReason};
use hotaru_events::{Context, DomainEvent, EventType, UnixMillis};
use hotaru_log::{AnyLog, EventLog, NatsConfig, NatsLog, SideStore, SledLog};
use hotaru_server::{DayKeys, Redemption, Registration, RegistrationError};
use hotaru_test_support::{NatsCluster, NatsServer};

const TODAY: u32 = 20_400;
const CENTRE: CentreId = CentreId(7);
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

struct World {
    reg: Registration<AnyLog>,
    log: AnyLog,
    /// The log as a second node sees it: its own connection on NATS; on sled, which one
    /// process owns, the same log (a second service on it is a second node's state).
    second: AnyLog,
    clock: ManualClock,
    _keep: Box<dyn std::any::Any + Send>,
}

fn service(log: AnyLog, clock: &ManualClock, policy: RegistrationPolicy) -> Registration<AnyLog> {
    limited(&log, clock, LimiterPolicy::default()).with_policy(policy)
}

/// A node on `log` with these limits (and the default registration policy).
fn limited(log: &AnyLog, clock: &ManualClock, limits: LimiterPolicy) -> Node {
    Node {
        log: log.clone(),
        clock: clock.clone(),
        limits,
    }
}

struct Node {
    log: AnyLog,
    clock: ManualClock,
    limits: LimiterPolicy,
}

impl Node {
    fn with_policy(self, policy: RegistrationPolicy) -> Registration<AnyLog> {
        Registration::new(
            self.log.clone(),
            DayKeys::new(self.log, SECRET, Arc::new(OsRandom::new())).unwrap(),
            Arc::new(self.clock),
            Arc::new(RandomIds::default()),
            policy,
            self.limits,
        )
    }

    fn start(self) -> Registration<AnyLog> {
        self.with_policy(RegistrationPolicy::default())
    }
}

async fn world(nats: bool, policy: RegistrationPolicy) -> World {
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    let (log, second, keep): (AnyLog, AnyLog, Box<dyn std::any::Any + Send>) = if nats {
        let server = NatsServer::start();
        let log = NatsLog::connect(&NatsConfig::new(server.url()))
            .await
            .unwrap();
        let second = NatsLog::connect(&NatsConfig::new(server.url()))
            .await
            .unwrap();
        (AnyLog::Nats(log), AnyLog::Nats(second), Box::new(server))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        (AnyLog::Sled(log.clone()), AnyLog::Sled(log), Box::new(dir))
    };
    World {
        reg: service(log.clone(), &clock, policy),
        log,
        second,
        clock,
        _keep: keep,
    }
}

fn key(seed: u8, day: u32) -> SubmittedKey {
    SubmittedKey {
        key_data: vec![seed; 16],
        rolling_start: day * 144,
        rolling_period: 144,
        transmission_risk: Some(0),
        report_type: None,
        days_since_onset: None,
    }
}

fn upload(number: &str, keys: Vec<SubmittedKey>) -> Redemption {
    Redemption {
        number: number.to_owned(),
        keys,
        idempotency_key: None,
        source: None,
    }
}

async fn issued(w: &World) -> String {
    let case = w
        .reg
        .confirm_case(CENTRE, CaseBasis::SymptomOnset(Day(TODAY - 2)))
        .await
        .unwrap();
    w.reg
        .issue_number(CENTRE, case)
        .await
        .unwrap()
        .number
        .as_str()
        .to_owned()
}

async fn events(log: &AnyLog) -> Vec<DomainEvent> {
    let commits = log
        .read_all(Context::Registration, 1, 100_000)
        .await
        .unwrap();
    commits
        .iter()
        .flat_map(|c| c.commit.envelopes())
        .map(|e| e.unwrap().event)
        .collect()
}

async fn rejections(log: &AnyLog) -> Vec<RejectionReason> {
    events(log)
        .await
        .into_iter()
        .filter_map(|e| match e {
            DomainEvent::ProcessingNumberRejected(r) => Some(r.reason),
            _ => None,
        })
        .collect()
}

/// Wrong guesses, each with its source, sent at once through two nodes in turn: how many
/// were evaluated (B) and how many refused unevaluated (C).
async fn wrong_guesses_at_once(
    nodes: &[Registration<AnyLog>; 2],
    guesses: impl Iterator<Item = (String, Option<u64>)>,
) -> (usize, usize) {
    let tasks: Vec<_> = guesses
        .enumerate()
        .map(|(i, (guess, source))| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                let mut r = upload(&guess, vec![key(1, TODAY - 1)]);
                r.source = source;
                node.redeem(r).await
            })
        })
        .collect();
    let (mut evaluated, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Err(RegistrationError::AttemptLimit(_)) => refused += 1,
            Err(e) => {
                assert_eq!(e.public_reason(), Some(RejectionReason::Unknown), "{e:?}");
                evaluated += 1;
            }
            Ok(_) => panic!("a guess hit"),
        }
    }
    (evaluated, refused)
}

/// How many of these redemptions of one number succeeded; every other is told B.
async fn winners(
    tasks: Vec<tokio::task::JoinHandle<Result<RedemptionAnswer, RegistrationError>>>,
) -> usize {
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.public_reason(), Some(RejectionReason::Unknown), "{e:?}"),
        }
    }
    ok
}

/// A well-formed number that is not `n`.
fn other_than(n: &str) -> &'static str {
    if n == "00000000" {
        "00000001"
    } else {
        "00000000"
    }
}

/// The keys' uploads the log holds.
async fn uploads(log: &AnyLog) -> usize {
    events(log)
        .await
        .into_iter()
        .filter(|e| e.event_type() == EventType::DiagnosisKeysUploaded)
        .count()
}

/// The refusals the log's tallies count: (A, C, G).
async fn counted(log: &AnyLog) -> (u64, u64, u64) {
    events(log)
        .await
        .into_iter()
        .fold((0, 0, 0), |(a, c, g), e| match e {
            DomainEvent::RefusalsCounted(t) => (
                a + u64::from(t.format),
                c + u64::from(t.attempt_limit),
                g + u64::from(t.nothing_to_submit),
            ),
            _ => (a, c, g),
        })
}

async fn commits(log: &AnyLog) -> usize {
    log.read_all(Context::Registration, 1, 100_000)
        .await
        .unwrap()
        .len()
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sled { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(false).await } )* }
        mod nats { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(true).await } )* }
    };
}

on_both_backends!(
    confirm_issue_redeem,
    error_a_format,
    error_b_unknown_used_expired_look_alike,
    error_c_attempt_limit,
    error_g_nothing_to_submit,
    cocoa_1_1_1_and_1_1_2,
    idempotent_retry,
    concurrent_redemptions_have_one_winner,
    daily_quota,
    two_nodes_issue_one_number_per_case_and_hold_the_quota,
    a_burst_of_wrong_guesses_through_two_nodes_evaluates_no_more_than_the_budget,
    a_nodes_lease_of_tickets_serves_its_next_guesses,
    a_flood_of_refusals_that_evaluate_nothing_appends_one_tally_an_interval,
    one_sources_guesses_through_two_nodes_get_its_allowance_once,
    sixty_four_uploads_in_flight_from_one_source_through_two_nodes_all_land,
);

async fn confirm_issue_redeem(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let number = issued(&w).await;
    // One number per case, shown once; a restarted process remembers.
    let case = w
        .reg
        .confirm_case(CENTRE, CaseBasis::Sample(Day(TODAY)))
        .await
        .unwrap();
    w.reg.issue_number(CENTRE, case).await.unwrap();
    assert_eq!(
        w.reg.issue_number(CENTRE, case).await.unwrap_err(),
        RegistrationError::AlreadyIssued
    );
    let restarted = service(w.log.clone(), &w.clock, RegistrationPolicy::default());
    restarted.warm_up().await.unwrap();
    assert_eq!(
        restarted.issue_number(CENTRE, case).await.unwrap_err(),
        RegistrationError::AlreadyIssued
    );
    assert_eq!(number.len(), 8);
    assert!(number.bytes().all(|b| b.is_ascii_digit()));
    let answer = w
        .reg
        .redeem(upload(
            &number,
            vec![key(1, TODAY - 1), key(2, TODAY - 9), key(3, TODAY)],
        ))
        .await
        .unwrap();
    assert_eq!(answer.accepted, 2, "{answer:?}");
    assert_eq!(
        answer.dropped.len(),
        1,
        "the key before the infectious period"
    );
    let evs = events(&w.log).await;
    let types: Vec<EventType> = evs.iter().map(DomainEvent::event_type).collect();
    let issue = [
        EventType::CaseConfirmed,
        EventType::QuotaTaken,
        EventType::ProcessingNumberIssued,
        EventType::NumberAssigned,
    ];
    // The node's lease of the shared attempt budget (7 of the 60 tickets, one append); the
    // success keeps its ticket for the node's next guess, so nothing is given back.
    let lease = std::iter::repeat_n(EventType::GuessReserved, 7);
    let redeem = [
        EventType::ProcessingNumberRedeemed,
        EventType::DiagnosisKeysUploaded,
    ];
    let expected: Vec<EventType> = issue
        .iter()
        .chain(&issue)
        .copied()
        .chain(lease)
        .chain(redeem)
        .collect();
    assert_eq!(types, expected);
    // Redeemed and uploaded are one commit: one atomic append.
    let commits = w.log.read_all(Context::Registration, 1, 100).await.unwrap();
    let redeemed = commits
        .iter()
        .find(|c| {
            c.commit
                .envelopes()
                .any(|e| e.unwrap().event.event_type() == EventType::ProcessingNumberRedeemed)
        })
        .unwrap();
    assert_eq!(redeemed.commit.events.len(), 2);
    // The number never appears anywhere in the log's bytes.
    for c in &commits {
        assert!(!c.frame.windows(8).any(|w| w == number.as_bytes()));
    }
}

async fn error_a_format(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    for bad in [
        "1234567",
        "123456789",
        "1234 678",
        "１２３４５６７８",
        "abcdefgh",
        "",
    ] {
        let e = w
            .reg
            .redeem(upload(bad, vec![key(1, TODAY - 1)]))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            RegistrationError::Rejected(RejectionReason::Format),
            "{bad:?}"
        );
    }
    // Counted, not recorded one by one: nothing in the log until the node's tally is.
    assert_eq!(rejections(&w.log).await.len(), 0);
    w.reg.flush_refusals(true).await;
    assert_eq!(counted(&w.log).await, (6, 0, 0));
}

/// 300 refusals that look at no number (A, C, G) from anonymous clients, in one interval:
/// the log does not grow by one commit, and the registration context's head does not move,
/// while they come; when the interval has ended the next refusal records one tally that
/// counts all 300 (and the node's tick or its stop records the rest).
async fn a_flood_of_refusals_that_evaluate_nothing_appends_one_tally_an_interval(nats: bool) {
    let limits = LimiterPolicy {
        global_failures: 1,
        ..LimiterPolicy::default()
    };
    let w = world(nats, RegistrationPolicy::default()).await;
    let reg = Registration::new(
        w.log.clone(),
        DayKeys::new(w.log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap(),
        Arc::new(w.clock.clone()),
        Arc::new(RandomIds::default()),
        RegistrationPolicy::default(),
        limits,
    );
    let good = issued(&w).await;
    // One wrong guess spends the budget of 1: from here on guesses are refused (C).
    let wrong = other_than(&good);
    let e = reg
        .redeem(upload(wrong, vec![key(1, TODAY - 1)]))
        .await
        .unwrap_err();
    assert_eq!(e.public_reason(), Some(RejectionReason::Unknown));
    let before = commits(&w.log).await;
    // A and G through one node, C through the other (locked out by its spent budget).
    for i in 0..100u32 {
        let a = w.reg.redeem(upload("12-34", vec![key(1, TODAY - 1)])).await;
        assert_eq!(
            a.unwrap_err(),
            RegistrationError::Rejected(RejectionReason::Format)
        );
        let g = w.reg.redeem(upload(&good, vec![])).await;
        assert_eq!(
            g.unwrap_err(),
            RegistrationError::Rejected(RejectionReason::NothingToSubmit)
        );
        let c = reg
            .redeem(upload(
                &format!("{:08}", 40_000_000 + i),
                vec![key(1, TODAY - 1)],
            ))
            .await;
        assert!(
            matches!(c, Err(RegistrationError::AttemptLimit(_))),
            "{c:?}"
        );
        w.clock.advance_millis(100);
    }
    assert_eq!(
        commits(&w.log).await,
        before,
        "300 refusals, not one commit while the interval lasts"
    );
    assert_eq!(counted(&w.log).await, (0, 0, 0));
    // The interval ends; the next refusal on each node records its tally and opens the
    // next interval.
    w.clock.advance_millis(60_000);
    let _ = w.reg.redeem(upload("x", vec![key(1, TODAY - 1)])).await;
    assert_eq!(commits(&w.log).await, before + 1, "one tally");
    assert_eq!(counted(&w.log).await, (100, 0, 100));
    let c = reg
        .redeem(upload("49999999", vec![key(1, TODAY - 1)]))
        .await;
    assert!(
        matches!(c, Err(RegistrationError::AttemptLimit(_))),
        "{c:?}"
    );
    assert_eq!(commits(&w.log).await, before + 2, "one tally a node");
    assert_eq!(counted(&w.log).await, (100, 100, 100));
    // The tick records an ended interval; a stopping node what it holds.
    for n in [&w.reg, &reg] {
        n.flush_refusals(false).await;
    }
    assert_eq!(commits(&w.log).await, before + 2, "the open intervals wait");
    for n in [&w.reg, &reg] {
        n.flush_refusals(true).await;
        n.flush_refusals(true).await;
    }
    assert_eq!(counted(&w.log).await, (101, 101, 100));
    assert_eq!(commits(&w.log).await, before + 4, "nothing more to record");
    // The evaluated guess stays one event of its own.
    assert_eq!(rejections(&w.log).await, [RejectionReason::Unknown]);
}

async fn error_b_unknown_used_expired_look_alike(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let used = issued(&w).await;
    w.reg
        .redeem(upload(&used, vec![key(1, TODAY - 1)]))
        .await
        .unwrap();
    let expired = issued(&w).await;
    let unknown = other_than(&used);
    let e1 = w
        .reg
        .redeem(upload(unknown, vec![key(2, TODAY - 1)]))
        .await
        .unwrap_err();
    let e2 = w
        .reg
        .redeem(upload(&used, vec![key(3, TODAY - 1)]))
        .await
        .unwrap_err();
    w.clock.advance_millis(DAY_MS);
    let e3 = w
        .reg
        .redeem(upload(&expired, vec![key(4, TODAY - 1)]))
        .await
        .unwrap_err();
    // One answer for all three ...
    for e in [&e1, &e2, &e3] {
        assert_eq!(e.public_reason(), Some(RejectionReason::Unknown), "{e:?}");
    }
    // ... while the events record which it was.
    assert_eq!(
        rejections(&w.log).await,
        [
            RejectionReason::Unknown,
            RejectionReason::AlreadyUsed,
            RejectionReason::Expired
        ]
    );
}

async fn error_c_attempt_limit(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let good = issued(&w).await;
    let mut refused_at = None;
    for i in 0..70u32 {
        let guess = format!("{:08}", 10_000_000 + i);
        if guess == good {
            continue;
        }
        match w.reg.redeem(upload(&guess, vec![key(1, TODAY - 1)])).await {
            Err(RegistrationError::AttemptLimit(_)) => {
                refused_at = Some(i);
                break;
            }
            Err(e) => assert_eq!(e.public_reason(), Some(RejectionReason::Unknown)),
            Ok(_) => panic!("a guess hit"),
        }
    }
    assert_eq!(
        refused_at,
        Some(60),
        "the 61st failure in an hour is refused"
    );
    // While locked out even the right number is refused, unevaluated: nothing consumed.
    // The node's lockout ends after 5 minutes, but the window's shared budget (every
    // node's) is spent until the window ends: the right number waits for the next hour.
    for wait in [0, 5 * 60_000] {
        w.clock.advance_millis(wait);
        let e = w
            .reg
            .redeem(upload(&good, vec![key(1, TODAY - 1)]))
            .await
            .unwrap_err();
        assert!(matches!(e, RegistrationError::AttemptLimit(_)), "{e:?}");
    }
    w.clock.advance_millis(55 * 60_000);
    assert!(
        w.reg
            .redeem(upload(&good, vec![key(1, TODAY - 1)]))
            .await
            .is_ok()
    );
    // A fresh process rebuilds the failure window from the log.
    let again = service(w.log.clone(), &w.clock, RegistrationPolicy::default());
    again.warm_up().await.unwrap();
}

async fn error_g_nothing_to_submit(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let number = issued(&w).await;
    let e = w.reg.redeem(upload(&number, vec![])).await.unwrap_err();
    assert_eq!(
        e,
        RegistrationError::Rejected(RejectionReason::NothingToSubmit)
    );
    // Only invalid keys: refused, nothing consumed either.
    let e = w
        .reg
        .redeem(upload(&number, vec![key(1, TODAY + 3)]))
        .await
        .unwrap_err();
    assert_eq!(e, RegistrationError::Rejected(RejectionReason::NoValidKeys));
    // The number still works.
    assert_eq!(
        w.reg
            .redeem(upload(&number, vec![key(2, TODAY - 1)]))
            .await
            .unwrap()
            .accepted,
        1
    );
}

/// 1.1.1 accepted any number; 1.1.2 refused a correct one. Here: 200 random guesses are
/// all refused, and 20 issued numbers are all accepted.
async fn cocoa_1_1_1_and_1_1_2(nats: bool) {
    let policy = RegistrationPolicy::default();
    let w = world(nats, policy).await;
    let mut numbers = Vec::new();
    for _ in 0..20 {
        numbers.push(issued(&w).await);
    }
    let w2 = World {
        reg: {
            let keys = DayKeys::new(w.log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap();
            Registration::new(
                w.log.clone(),
                keys,
                Arc::new(w.clock.clone()),
                Arc::new(RandomIds::default()),
                RegistrationPolicy::default(),
                LimiterPolicy {
                    global_failures: 10_000,
                    ..LimiterPolicy::default()
                },
            )
        },
        log: w.log.clone(),
        second: w.second.clone(),
        clock: w.clock.clone(),
        _keep: Box::new(()),
    };
    for i in 0..200u32 {
        let guess = format!("{:08}", (i * 499_979 + 12_345) % 100_000_000);
        if numbers.contains(&guess) {
            continue;
        }
        let e = w2
            .reg
            .redeem(upload(&guess, vec![key(1, TODAY - 1)]))
            .await
            .unwrap_err();
        assert_eq!(e.public_reason(), Some(RejectionReason::Unknown));
    }
    for (i, n) in numbers.iter().enumerate() {
        let a = w2
            .reg
            .redeem(upload(n, vec![key(i as u8 + 1, TODAY - 1)]))
            .await;
        assert_eq!(a.unwrap().accepted, 1, "number {i} refused");
    }
}

/// The registration events, without the attempt budget's tickets.
async fn recorded(log: &AnyLog) -> Vec<DomainEvent> {
    events(log)
        .await
        .into_iter()
        .filter(|e| {
            !matches!(
                e.event_type(),
                EventType::GuessReserved | EventType::GuessReleased
            )
        })
        .collect()
}

async fn idempotent_retry(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let number = issued(&w).await;
    let mut req = upload(&number, vec![key(1, TODAY - 1), key(2, TODAY - 20)]);
    req.idempotency_key = Some("retry-123".into());
    let first = w.reg.redeem(req.clone()).await.unwrap();
    let count = recorded(&w.log).await.len();
    let again = w.reg.redeem(req.clone()).await.unwrap();
    assert_eq!(again, first, "the first answer");
    assert_eq!(
        recorded(&w.log).await.len(),
        count,
        "nothing more recorded or consumed"
    );
    // Another idempotency key is another upload: the number is used.
    req.idempotency_key = Some("other".into());
    let e = w.reg.redeem(req).await.unwrap_err();
    assert_eq!(e.public_reason(), Some(RejectionReason::Unknown));
}

async fn concurrent_redemptions_have_one_winner(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let number = issued(&w).await;
    let tasks: Vec<_> = (0..6u8)
        .map(|i| {
            let reg = w.reg.clone();
            let n = number.clone();
            tokio::spawn(async move { reg.redeem(upload(&n, vec![key(i + 1, TODAY - 1)])).await })
        })
        .collect();
    assert_eq!(winners(tasks).await, 1);
    assert_eq!(uploads(&w.log).await, 1);
}

async fn daily_quota(nats: bool) {
    let policy = RegistrationPolicy {
        daily_quota_per_centre: 3,
        ..RegistrationPolicy::default()
    };
    let w = world(nats, policy.clone()).await;
    for _ in 0..3 {
        issued(&w).await;
    }
    let case = w
        .reg
        .confirm_case(CENTRE, CaseBasis::Sample(Day(TODAY)))
        .await
        .unwrap();
    assert_eq!(
        w.reg.issue_number(CENTRE, case).await.unwrap_err(),
        RegistrationError::QuotaExceeded(3)
    );
    // Another centre is not affected; the next day the quota is back; a restarted
    // process remembers today's count.
    let other = w
        .reg
        .confirm_case(CentreId(8), CaseBasis::Sample(Day(TODAY)))
        .await
        .unwrap();
    assert!(w.reg.issue_number(CentreId(8), other).await.is_ok());
    assert_eq!(
        w.reg.issue_number(CentreId(9), other).await.unwrap_err(),
        RegistrationError::NotYourCase
    );
    let restarted = service(w.log.clone(), &w.clock, policy);
    restarted.warm_up().await.unwrap();
    assert_eq!(
        restarted.issue_number(CENTRE, case).await.unwrap_err(),
        RegistrationError::QuotaExceeded(3)
    );
    w.clock.advance_millis(DAY_MS);
    assert!(w.reg.issue_number(CENTRE, case).await.is_ok());
}

/// Two nodes (two services, each with its own memory; on NATS each with its own
/// connection) race: 8 issues for one case give one number, and it is the one that
/// redeems; 12 issues of distinct cases against a quota of 5 give exactly 5.
async fn two_nodes_issue_one_number_per_case_and_hold_the_quota(nats: bool) {
    let policy = RegistrationPolicy {
        daily_quota_per_centre: 5,
        ..RegistrationPolicy::default()
    };
    let w = world(nats, policy.clone()).await;
    let nodes = [
        w.reg.clone(),
        service(w.second.clone(), &w.clock, policy.clone()),
    ];
    let case = w
        .reg
        .confirm_case(CENTRE, CaseBasis::SymptomOnset(Day(TODAY - 2)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move { node.issue_number(CENTRE, case).await })
        })
        .collect();
    let mut shown = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => shown.push(n.number.as_str().to_owned()),
            Err(e) => assert_eq!(e, RegistrationError::AlreadyIssued),
        }
    }
    assert_eq!(
        shown.len(),
        1,
        "one number for the case, whichever node won"
    );
    let assigned = events(&w.log)
        .await
        .into_iter()
        .filter(|e| e.event_type() == EventType::NumberAssigned)
        .count();
    assert_eq!(assigned, 1);
    // The number shown redeems; the case names no other.
    nodes[1]
        .redeem(upload(&shown[0], vec![key(1, TODAY - 1)]))
        .await
        .unwrap();

    // The quota: 12 cases of another centre, issued at once through both nodes.
    let centre = CentreId(21);
    let mut cases = Vec::new();
    for _ in 0..12 {
        cases.push(
            w.reg
                .confirm_case(centre, CaseBasis::Sample(Day(TODAY)))
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let node = nodes[i % 2].clone();
            let case = *case;
            tokio::spawn(async move { node.issue_number(centre, case).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e, RegistrationError::QuotaExceeded(5)),
        }
    }
    assert_eq!(ok, 5, "the centre's quota holds across nodes");
}

/// 40 wrong guesses at once, from 40 sources, through two nodes, against a global budget
/// of 10: exactly 10 are evaluated (B), the rest refused unevaluated (C). Each node's own
/// limiter would have let 10 through on each.
async fn a_burst_of_wrong_guesses_through_two_nodes_evaluates_no_more_than_the_budget(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let good = issued(&w).await;
    let limits = LimiterPolicy {
        global_failures: 10,
        ..LimiterPolicy::default()
    };
    let node = |log: &AnyLog| limited(log, &w.clock, limits.clone()).start();
    let nodes = [node(&w.log), node(&w.second)];
    let guesses = (0..40u32).map(|i| {
        let mut guess = format!("{:08}", 20_000_000 + i);
        if guess == good {
            guess = format!("{:08}", 30_000_000 + i);
        }
        (guess, Some(u64::from(i)))
    });
    let (evaluated, refused) = wrong_guesses_at_once(&nodes, guesses).await;
    assert_eq!(
        evaluated, 10,
        "the budget is the cluster's, not each node's"
    );
    assert_eq!(refused, 30);
    let b = rejections(&w.log)
        .await
        .into_iter()
        .filter(|r| *r == RejectionReason::Unknown)
        .count();
    assert_eq!(b, 10, "the log shows 10 evaluated failures");
}

/// 30 uploads at once on a node with no tickets, then 30 more, against the default budget
/// of 60: every one is accepted (leases are taken one at a time, so a burst does not ask
/// the budget for more than it holds), and successes keep their tickets for the next
/// guesses: the 60 uploads lease no more than the 30 in flight at once needed, and what a
/// node keeps unused beyond two leases goes back to the budget.
async fn a_nodes_lease_of_tickets_serves_its_next_guesses(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    for round in 0..2u8 {
        let mut numbers = Vec::new();
        for _ in 0..30 {
            numbers.push(issued(&w).await);
        }
        let tasks: Vec<_> = numbers
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let node = w.reg.clone();
                let seed = round * 30 + i as u8 + 1;
                tokio::spawn(
                    async move { node.redeem(upload(&n, vec![key(seed, TODAY - 1)])).await },
                )
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().accepted, 1);
        }
    }
    let evs = events(&w.log).await;
    let count = |t: EventType| evs.iter().filter(|e| e.event_type() == t).count();
    let (reserved, released) = (
        count(EventType::GuessReserved),
        count(EventType::GuessReleased),
    );
    assert!(
        reserved - released <= 14,
        "the node keeps at most two leases unused: {reserved} reserved, {released} back"
    );
    // The appends of tickets: a ticket taken and one given back per upload before.
    let commits = w
        .log
        .read_all(Context::Registration, 1, 10_000)
        .await
        .unwrap();
    let ticket_commits = commits
        .iter()
        .filter(|c| {
            c.commit.envelopes().any(|e| {
                matches!(
                    e.unwrap().event.event_type(),
                    EventType::GuessReserved | EventType::GuessReleased
                )
            })
        })
        .count();
    assert!(
        ticket_commits <= 20,
        "{ticket_commits} appends of tickets for 60 uploads"
    );
}

/// On a three-server cluster with every stream at three replicas, two nodes connected to
/// two different servers redeem one number at once, six uploads each round, for 20
/// numbers: every number has exactly one winner and the log holds 20 uploads. A node's
/// writer reads a stream's version from the stream's leader: a direct get may be answered
/// by a follower that has not stored the winning redemption yet, and a stale version
/// under the leader's head would let a second redemption of the same number through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_through_two_nodes_on_a_three_server_r3_cluster_have_one_winner() {
    let cluster = NatsCluster::start(3);
    let clock = ManualClock::at(UnixMillis(u64::from(TODAY) * DAY_MS + 10 * 3_600_000));
    let connect = |url: String| async move {
        let mut config = NatsConfig::new(url);
        config.replicas = 3;
        AnyLog::Nats(NatsLog::connect(&config).await.unwrap())
    };
    let (a, b) = (
        connect(cluster.servers[0].url()).await,
        connect(cluster.servers[2].url()).await,
    );
    // Losers are wrong guesses (B); a budget that 100 of them do not exhaust keeps every
    // loser a B, so the test sees the fence, not the limiter.
    let node = |log: &AnyLog| {
        Registration::new(
            log.clone(),
            DayKeys::new(log.clone(), SECRET, Arc::new(OsRandom::new())).unwrap(),
            Arc::new(clock.clone()),
            Arc::new(RandomIds::default()),
            RegistrationPolicy::default(),
            LimiterPolicy {
                global_failures: 10_000,
                source_failures: 10_000,
                ..LimiterPolicy::default()
            },
        )
    };
    let nodes = [node(&a), node(&b)];
    for round in 0..20u8 {
        let case = nodes[usize::from(round % 2)]
            .confirm_case(CENTRE, CaseBasis::SymptomOnset(Day(TODAY - 2)))
            .await
            .unwrap_or_else(|e| panic!("round {round}: confirm: {e:?}"));
        let number = nodes[usize::from(round % 2)]
            .issue_number(CENTRE, case)
            .await
            .unwrap_or_else(|e| panic!("round {round}: issue: {e:?}"))
            .number
            .as_str()
            .to_owned();
        let tasks: Vec<_> = (0..6u8)
            .map(|i| {
                let node = nodes[usize::from(i % 2)].clone();
                let n = number.clone();
                tokio::spawn(async move {
                    node.redeem(upload(&n, vec![key(round * 6 + i + 1, TODAY - 1)]))
                        .await
                })
            })
            .collect();
        assert_eq!(
            winners(tasks).await,
            1,
            "round {round}: one number, one upload"
        );
    }
    assert_eq!(uploads(&a).await, 20);
}

/// One source (one label from the edge) guessing through two nodes: its allowance of 5
/// failures an hour is the cluster's, not each node's. 20 wrong guesses at once evaluate
/// exactly 5 (each holds its slot while it is decided), the rest are refused unevaluated
/// (C); then the source is backed off on both nodes while another source is not; one
/// success of the source forgives its failures. With each node's own count, 20 at once
/// were all evaluated and the source had 5 on each node.
async fn one_sources_guesses_through_two_nodes_get_its_allowance_once(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let good = issued(&w).await;
    let node = |log: &AnyLog| service(log.clone(), &w.clock, RegistrationPolicy::default());
    let nodes = [node(&w.log), node(&w.second)];
    let source = Some(0xabcd_ef01_2345_6789);
    let guess = |i: u32| {
        let g = format!("{:08}", 50_000_000 + i);
        if g == good {
            format!("{:08}", 60_000_000 + i)
        } else {
            g
        }
    };
    let guesses = (0..20u32).map(|i| (guess(i), source));
    let (evaluated, refused) = wrong_guesses_at_once(&nodes, guesses).await;
    assert_eq!(evaluated, 5, "the source's allowance is the cluster's");
    assert_eq!(refused, 15);
    // Backed off on both nodes, the right number included; another source is not.
    for n in &nodes {
        let mut r = upload(&good, vec![key(2, TODAY - 1)]);
        r.source = source;
        assert!(matches!(
            n.redeem(r).await,
            Err(RegistrationError::AttemptLimit(_))
        ));
        assert!(matches!(
            n.attempt_verdict(source).await,
            Err(RegistrationError::AttemptLimit(_))
        ));
    }
    assert_eq!(nodes[1].attempt_verdict(Some(1)).await, Ok(()));
    // After the back-off (a minute), the right number through the other node succeeds,
    // and forgives: five more failures are evaluated before the next back-off.
    w.clock.advance_millis(60_000);
    let mut r = upload(&good, vec![key(2, TODAY - 1)]);
    r.source = source;
    assert_eq!(nodes[1].redeem(r).await.unwrap().accepted, 1);
    for i in 0..6u32 {
        let mut r = upload(&guess(100 + i), vec![key(1, TODAY - 1)]);
        r.source = source;
        let e = nodes[(i % 2) as usize].redeem(r).await.unwrap_err();
        if i < 5 {
            assert_eq!(
                e.public_reason(),
                Some(RejectionReason::Unknown),
                "{i}: {e:?}"
            );
        } else {
            assert!(matches!(e, RegistrationError::AttemptLimit(_)), "{e:?}");
        }
    }
}

/// 64 uploads at once from one source (a load test behind one address) through two
/// nodes, with an allowance that holds them: every one is accepted (each node writes the
/// changes of one source that arrive together in one swap; one swap per change lost its
/// race 32 times in a row on NATS and answered 503), and the source's record ends with
/// nothing in flight and no failure.
async fn sixty_four_uploads_in_flight_from_one_source_through_two_nodes_all_land(nats: bool) {
    let w = world(nats, RegistrationPolicy::default()).await;
    let limits = LimiterPolicy {
        global_failures: 1_000,
        source_failures: 1_000,
        ..LimiterPolicy::default()
    };
    let node = |log: &AnyLog| limited(log, &w.clock, limits.clone()).start();
    let nodes = [node(&w.log), node(&w.second)];
    let mut numbers = Vec::new();
    for _ in 0..64 {
        numbers.push(issued(&w).await);
    }
    let label = 0x0102_0304_0506_0708;
    let tasks: Vec<_> = numbers
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                let mut r = upload(&n, vec![key(i as u8 + 1, TODAY - 1)]);
                r.source = Some(label);
                node.redeem(r).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().accepted, 1);
    }
    let (bytes, _) = w.log.source_get(label).await.unwrap();
    let record = hotaru_domain::limiter::SourceRecord::decode(&bytes.unwrap()).unwrap();
    assert_eq!((record.in_flight, record.failures), (0, 0), "{record:?}");
}
