//! Error C: limits on failed redemptions, without identifying anyone.
//!
//! - Global: at most `global_failures` failed redemptions in any sliding `window`. When the
//!   budget is spent, every redemption is refused (C) for a lockout that doubles each
//!   time the budget is spent again (up to `lockout_max`), and resets after a quiet window.
//!   A refused attempt is never evaluated, so it can never hit. [`AttemptLimiter`] holds a
//!   node's lockouts in memory; its window is rebuilt at start from the day's
//!   `ProcessingNumberRejected` events.
//! - Per source, across nodes ([`SourceRecord`]): the edge passes an opaque label of the
//!   client (a keyed hash of its address, never the address). A source's guesses get
//!   `source_failures` slots per fixed window, taken before a guess is evaluated and held
//!   until it is decided (failures and guesses in flight count), then an exponential
//!   back-off. The record lives in the backend's source records (in memory; on NATS a
//!   memory-storage stream every node reads and fences), never in the event log.
//!
//! Across nodes ([`ticket_verdict`]): before a guess is evaluated it holds a ticket of the
//! log's `guesses.<window>` stream (fixed windows of `window_ms`), and it is evaluated
//! only while the tickets not given back (at `guesses.<window>-back`) stay within
//! `global_failures`. A node leases a few tickets with one append ([`lease_size`]); a
//! success frees its ticket for the node's next guess, a failure uses it up, a lease's
//! tickets beyond the budget are given back at once. Failures, guesses still in flight and
//! tickets a node holds unused all count, so however many nodes evaluate at once, a window
//! never evaluates more than the budget of wrong guesses. The arithmetic is in
//! docs/adr/0004-redemption-limits.md.

use std::collections::VecDeque;

use hotaru_events::{StreamId, StreamKind, UnixMillis};
use serde::{Deserialize, Serialize};

/// The limits (`[limits]` in the server's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimiterPolicy {
    pub window_ms: u64,
    pub global_failures: usize,
    pub lockout_base_ms: u64,
    pub lockout_max_ms: u64,
    pub source_failures: usize,
    pub source_backoff_base_ms: u64,
}

impl Default for LimiterPolicy {
    fn default() -> Self {
        Self {
            window_ms: 3_600_000,
            global_failures: 60,
            lockout_base_ms: 5 * 60_000,
            lockout_max_ms: 6 * 3_600_000,
            source_failures: 5,
            source_backoff_base_ms: 60_000,
        }
    }
}

/// Refused (C): try again after this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub UnixMillis);

/// The limiter's state.
#[derive(Debug)]
pub struct AttemptLimiter {
    policy: LimiterPolicy,
    failures: VecDeque<UnixMillis>,
    locked_until: UnixMillis,
    lockouts: u32,
}

fn doubled(base: u64, times: u32, max: u64) -> u64 {
    base.saturating_mul(1u64 << times.min(40)).min(max)
}

impl AttemptLimiter {
    pub fn new(policy: LimiterPolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
            locked_until: UnixMillis(0),
            lockouts: 0,
        }
    }

    fn prune(q: &mut VecDeque<UnixMillis>, now: UnixMillis, window: u64) {
        while q.front().is_some_and(|t| t.0 + window <= now.0) {
            q.pop_front();
        }
    }

    /// May a redemption be evaluated now, as far as this node's lockouts go?
    pub fn check(&mut self, now: UnixMillis) -> Result<(), RetryAfter> {
        if now < self.locked_until {
            return Err(RetryAfter(self.locked_until));
        }
        // A whole quiet window after the last lockout forgives the doubling.
        if self.lockouts > 0 && now.0 >= self.locked_until.0 + self.policy.window_ms {
            self.lockouts = 0;
        }
        Ok(())
    }

    /// A redemption was evaluated and failed (B).
    pub fn record_failure(&mut self, now: UnixMillis) {
        let p = &self.policy;
        Self::prune(&mut self.failures, now, p.window_ms);
        self.failures.push_back(now);
        if self.failures.len() >= p.global_failures {
            let d = doubled(p.lockout_base_ms, self.lockouts, p.lockout_max_ms);
            self.locked_until = now.plus_millis(d);
            self.lockouts += 1;
            self.failures.clear();
        }
    }
}

/// The fixed window of the shared budget that `now` falls in.
pub fn guess_window(now: UnixMillis, p: &LimiterPolicy) -> u64 {
    now.0 / p.window_ms.max(1)
}

/// The window's tickets: `guesses.<window>`.
pub fn guesses_stream(window: u64) -> StreamId {
    StreamId::new(StreamKind::Guesses, window.to_string()).expect("digits are a valid id")
}

/// The window's tickets given back: `guesses.<window>-back`.
pub fn guesses_back_stream(window: u64) -> StreamId {
    StreamId::new(StreamKind::Guesses, format!("{window}-back")).expect("a valid id")
}

/// May the guess holding ticket `ticket` (the version its reservation got) be evaluated,
/// given `given_back` tickets of the window given back before the reservation? The ticket
/// counts every reservation before it on every node; those given back were decided as
/// successes or refused unevaluated; the rest are failures or in flight.
pub fn ticket_verdict(
    ticket: u64,
    given_back: u64,
    window: u64,
    p: &LimiterPolicy,
) -> Result<(), RetryAfter> {
    if ticket.saturating_sub(given_back) > p.global_failures as u64 {
        Err(window_end(window, p))
    } else {
        Ok(())
    }
}

/// The answer to a guess refused for the window's spent budget: retry when it ends.
pub fn window_end(window: u64, p: &LimiterPolicy) -> RetryAfter {
    RetryAfter(UnixMillis((window + 1).saturating_mul(p.window_ms)))
}

/// How many tickets a node takes with one append (a lease): an eighth of the budget, 1 to
/// 16. A node keeps the tickets its successes free and hands them to its next guesses, so a
/// node whose guesses succeed appends nothing more; the tickets it holds unused are at most
/// two leases, and they only make the others refuse earlier, never evaluate more.
pub fn lease_size(p: &LimiterPolicy) -> u64 {
    (p.global_failures as u64 / 8).clamp(1, 16)
}

/// How many tickets to lease, given the window's tickets `taken` and `given_back` as last
/// read: the lease size or the room left, 0 when the budget is spent (then the guess is
/// refused without appending anything).
pub fn lease_request(taken: u64, given_back: u64, p: &LimiterPolicy) -> u64 {
    (p.global_failures as u64 + given_back)
        .saturating_sub(taken)
        .min(lease_size(p))
}

/// Of the tickets `first..=last` one lease got (the versions of its commit), how many may
/// be evaluated, the lowest first ([`ticket_verdict`] of each), at least one; the rest are
/// given back. None usable: refused until the window ends.
pub fn lease_verdict(
    first: u64,
    last: u64,
    given_back: u64,
    window: u64,
    p: &LimiterPolicy,
) -> Result<u64, RetryAfter> {
    let usable = (first..=last)
        .take_while(|t| ticket_verdict(*t, given_back, window, p).is_ok())
        .count() as u64;
    if usable == 0 {
        Err(window_end(window, p))
    } else {
        Ok(usable)
    }
}

/// One source's record, shared by every node (ADR 0004, "Per source, across nodes"):
/// what the source's guesses hold of its allowance in the current fixed window, and its
/// back-off. Kept by the backend's source records (`SideStore::source_get`/`source_swap`:
/// in memory; on NATS a memory-storage stream with an expiry), never in the event log,
/// under the edge's opaque label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRecord {
    /// The fixed window the counts are of ([`guess_window`]).
    pub window: u64,
    /// Guesses of the window evaluated and failed (B).
    pub failures: u32,
    /// Guesses holding a slot while they are decided, on any node.
    pub in_flight: u32,
    /// Refused (C) until then.
    pub blocked_until: UnixMillis,
    /// Back-offs in a row (each doubles the next), forgiven after a quiet window.
    pub backoffs: u32,
}

/// How a guess that held a source's slot was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceOutcome {
    /// The number was right: the source's failures and back-offs are forgiven.
    Success,
    /// Evaluated and wrong (B): the slot stays used; the allowance spent starts a back-off.
    Failure,
    /// Refused after all, unevaluated (the shared budget was spent): the slot comes back.
    Unevaluated,
}

const SOURCE_RECORD_VERSION: u8 = 1;

impl SourceRecord {
    /// Bytes as stored: a version byte, then the fields little-endian (29 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(29);
        b.push(SOURCE_RECORD_VERSION);
        b.extend_from_slice(&self.window.to_le_bytes());
        b.extend_from_slice(&self.failures.to_le_bytes());
        b.extend_from_slice(&self.in_flight.to_le_bytes());
        b.extend_from_slice(&self.blocked_until.0.to_le_bytes());
        b.extend_from_slice(&self.backoffs.to_le_bytes());
        b
    }

    /// The record `encode` wrote; `None` for bytes of another shape or version (the
    /// record is then treated as new: a source's allowance errs towards the user).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let (&[SOURCE_RECORD_VERSION], rest) = b.split_at_checked(1)? else {
            return None;
        };
        if rest.len() != 28 {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(rest[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        Some(Self {
            window: u64_at(0),
            failures: u32_at(8),
            in_flight: u32_at(12),
            blocked_until: UnixMillis(u64_at(16)),
            backoffs: u32_at(24),
        })
    }

    /// This record as of `now`'s window: a new window starts with no failures and nothing
    /// in flight (slots a crashed node held end with their window), and a whole quiet
    /// window after the last back-off forgives the doubling.
    fn current(mut self, now: UnixMillis, p: &LimiterPolicy) -> Self {
        let window = guess_window(now, p);
        if self.window != window {
            self.window = window;
            self.failures = 0;
            self.in_flight = 0;
        }
        if self.backoffs > 0 && now.0 >= self.blocked_until.0.saturating_add(p.window_ms) {
            self.backoffs = 0;
        }
        self
    }

    /// Would a guess from this source be evaluated now? (The chaff's verdict: reserves
    /// nothing.)
    pub fn verdict(self, now: UnixMillis, p: &LimiterPolicy) -> Result<(), RetryAfter> {
        let r = self.current(now, p);
        if now < r.blocked_until {
            return Err(RetryAfter(r.blocked_until));
        }
        if (r.failures as usize).saturating_add(r.in_flight as usize) >= p.source_failures {
            return Err(window_end(r.window, p));
        }
        Ok(())
    }

    /// A guess from this source takes a slot, or is refused (C): while backed off, and
    /// when the window's failures and the guesses in flight already fill the allowance.
    pub fn reserve(self, now: UnixMillis, p: &LimiterPolicy) -> Result<Self, RetryAfter> {
        self.verdict(now, p)?;
        let mut r = self.current(now, p);
        r.in_flight += 1;
        Ok(r)
    }

    /// The guess that took a slot in `window` was decided at `now`.
    pub fn settle(
        self,
        window: u64,
        outcome: SourceOutcome,
        now: UnixMillis,
        p: &LimiterPolicy,
    ) -> Self {
        let mut r = self.current(now, p);
        let same_window = r.window == window;
        if same_window {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
        match outcome {
            SourceOutcome::Unevaluated => {}
            SourceOutcome::Success => {
                r.failures = 0;
                r.backoffs = 0;
            }
            SourceOutcome::Failure => {
                r.failures += 1;
                if r.failures as usize >= p.source_failures {
                    let d = doubled(p.source_backoff_base_ms, r.backoffs, p.lockout_max_ms);
                    r.blocked_until = now.plus_millis(d);
                    r.backoffs += 1;
                    r.failures = 0;
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn a_window_evaluates_no_more_than_the_budget_of_tickets_held() {
        let p = LimiterPolicy::default(); // 60 an hour
        let w = guess_window(UnixMillis(5 * 3_600_000 + 17), &p);
        assert_eq!(w, 5);
        // 60 tickets in flight or failed: the 60th is evaluated, the 61st is not.
        assert!(ticket_verdict(60, 0, w, &p).is_ok());
        assert_eq!(
            ticket_verdict(61, 0, w, &p),
            Err(RetryAfter(UnixMillis(6 * 3_600_000)))
        );
        // Tickets given back (successes, refusals) free their slots.
        assert!(ticket_verdict(61, 1, w, &p).is_ok());
        assert!(ticket_verdict(1_000, 940, w, &p).is_ok());
        assert!(ticket_verdict(1_000, 939, w, &p).is_err());
        assert_eq!(guesses_stream(5).to_string(), "guesses.5");
        assert_eq!(guesses_back_stream(5).to_string(), "guesses.5-back");
    }

    #[test]
    fn a_lease_takes_a_share_of_the_room_left_and_evaluates_only_within_the_budget() {
        let p = LimiterPolicy::default(); // 60 an hour: leases of 7
        assert_eq!(lease_size(&p), 7);
        let small = LimiterPolicy {
            global_failures: 3,
            ..p.clone()
        };
        assert_eq!(lease_size(&small), 1);
        let big = LimiterPolicy {
            global_failures: 10_000,
            ..p.clone()
        };
        assert_eq!(lease_size(&big), 16);
        assert_eq!(lease_request(0, 0, &p), 7);
        assert_eq!(lease_request(56, 0, &p), 4, "the room left");
        assert_eq!(
            lease_request(60, 0, &p),
            0,
            "spent: refuse without appending"
        );
        assert_eq!(lease_request(60, 5, &p), 5);
        // Another node leased in between: of tickets 57..=63 the first four are usable.
        assert_eq!(lease_verdict(57, 63, 0, 5, &p), Ok(4));
        assert_eq!(lease_verdict(1, 7, 0, 5, &p), Ok(7));
        assert_eq!(
            lease_verdict(61, 67, 0, 5, &p),
            Err(RetryAfter(UnixMillis(6 * 3_600_000)))
        );
        assert_eq!(lease_verdict(61, 67, 2, 5, &p), Ok(2));
    }

    #[test]
    fn the_global_budget_locks_everyone_out_with_doubling_lockouts() {
        let p = LimiterPolicy::default();
        let mut l = AttemptLimiter::new(p.clone());
        let mut t = UnixMillis(1_000_000);
        for _ in 0..59 {
            assert!(l.check(t).is_ok());
            l.record_failure(t);
        }
        assert!(l.check(t).is_ok());
        l.record_failure(t);
        assert_eq!(l.check(t), Err(RetryAfter(t.plus_millis(5 * MIN))));
        t = t.plus_millis(5 * MIN);
        assert!(l.check(t).is_ok());
        for _ in 0..60 {
            l.record_failure(t);
        }
        assert_eq!(l.check(t), Err(RetryAfter(t.plus_millis(10 * MIN))));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut l = AttemptLimiter::new(LimiterPolicy::default());
        for i in 0..200u64 {
            let t = UnixMillis(i * 62_000); // 58 in any hour: under the 60
            assert!(l.check(t).is_ok(), "attempt {i}");
            l.record_failure(t);
        }
    }

    #[test]
    fn one_source_backs_off_without_locking_out_the_others() {
        let p = LimiterPolicy::default();
        let t = UnixMillis(10_000_000);
        let (mut a, b) = (SourceRecord::default(), SourceRecord::default());
        for _ in 0..5 {
            a = a.reserve(t, &p).unwrap();
            a = a.settle(guess_window(t, &p), SourceOutcome::Failure, t, &p);
        }
        assert_eq!(a.reserve(t, &p), Err(RetryAfter(t.plus_millis(MIN))));
        assert!(b.reserve(t, &p).is_ok());
        let t2 = t.plus_millis(MIN);
        for _ in 0..5 {
            a = a.reserve(t2, &p).unwrap();
            a = a.settle(guess_window(t2, &p), SourceOutcome::Failure, t2, &p);
        }
        assert_eq!(a.reserve(t2, &p), Err(RetryAfter(t2.plus_millis(2 * MIN))));
    }

    /// The arithmetic of docs/adr/0004-redemption-limits.md, simulated: an attacker who
    /// sends 10 guesses a second for 30 days, from as many sources as it likes, against
    /// 50,000 live 8-digit numbers. Only evaluated guesses can hit.
    #[test]
    fn a_brute_forcer_needs_more_than_a_million_guesses_per_hit() {
        const RATE_PER_S: u64 = 10;
        const LIVE: f64 = 50_000.0;
        const SPACE: f64 = 100_000_000.0;
        let mut l = AttemptLimiter::new(LimiterPolicy::default());
        let end = 30 * 24 * 3_600_000u64;
        let (mut t, mut attempts, mut evaluated) = (0u64, 0u64, 0u64);
        while t < end {
            match l.check(UnixMillis(t)) {
                Ok(()) => {
                    evaluated += 1;
                    attempts += 1;
                    l.record_failure(UnixMillis(t));
                    t += 1000 / RATE_PER_S;
                }
                Err(RetryAfter(until)) => {
                    // Every guess until then is refused unevaluated.
                    let until = until.0.min(end);
                    attempts += (until - t) * RATE_PER_S / 1000;
                    t = until;
                }
            }
        }
        let hits = evaluated as f64 * LIVE / SPACE;
        let per_hit = attempts as f64 / hits;
        assert!(
            per_hit >= 1e6,
            "{attempts} guesses, {evaluated} evaluated, {per_hit:.0} per hit"
        );
        // The patient attacker, who stays just under the budget, is bounded by it:
        // 59 evaluated guesses an hour is 0.71 expected hits a day at this load.
        let patient_hits_per_day = 59.0 * 24.0 * LIVE / SPACE;
        assert!(patient_hits_per_day < 1.0);
        // The figures the ADR quotes.
        assert_eq!(evaluated, 7_560);
        assert_eq!(attempts, 25_920_000);
    }

    #[test]
    fn given_a_source_when_its_guesses_fill_the_allowance_in_flight_then_the_next_is_refused() {
        let p = LimiterPolicy::default();
        let now = UnixMillis(10 * 3_600_000 + 5);
        let mut r = SourceRecord::default();
        for _ in 0..5 {
            r = r.reserve(now, &p).unwrap();
        }
        assert_eq!(r.in_flight, 5);
        // Five guesses in flight on any nodes: a sixth is refused before any is decided.
        assert_eq!(
            r.reserve(now, &p),
            Err(RetryAfter(UnixMillis(11 * 3_600_000)))
        );
        // One succeeds: its slot comes back, and the source's failures are forgiven.
        let w = r.window;
        r = r.settle(w, SourceOutcome::Success, now, &p);
        assert_eq!((r.in_flight, r.failures), (4, 0));
        r = r.reserve(now, &p).unwrap();
        // Five fail: the allowance is spent, a back-off of a minute starts.
        for _ in 0..5 {
            r = r.settle(w, SourceOutcome::Failure, now, &p);
        }
        assert_eq!(r.blocked_until, now.plus_millis(60_000));
        assert_eq!((r.failures, r.in_flight, r.backoffs), (0, 0, 1));
        assert_eq!(r.reserve(now, &p), Err(RetryAfter(now.plus_millis(60_000))));
        // After it, five more failures double it.
        let later = now.plus_millis(60_000);
        for _ in 0..5 {
            r = r.reserve(later, &p).unwrap();
            r = r.settle(w, SourceOutcome::Failure, later, &p);
        }
        assert_eq!(r.blocked_until, later.plus_millis(120_000));
        // A refused-after-all guess gives its slot back and counts nothing.
        let free = later.plus_millis(120_000);
        let before = r.reserve(free, &p).unwrap();
        let after = before.settle(w, SourceOutcome::Unevaluated, free, &p);
        assert_eq!((after.in_flight, after.failures), (0, 0));
    }

    #[test]
    fn given_a_new_window_then_slots_held_by_a_crashed_node_and_old_failures_end() {
        let p = LimiterPolicy::default();
        let now = UnixMillis(10 * 3_600_000);
        let mut r = SourceRecord::default();
        for _ in 0..5 {
            r = r.reserve(now, &p).unwrap(); // never settled: the node crashed
        }
        assert!(r.reserve(now, &p).is_err());
        let next = UnixMillis(11 * 3_600_000);
        let r2 = r.reserve(next, &p).unwrap();
        assert_eq!((r2.window, r2.in_flight, r2.failures), (11, 1, 0));
        // A guess of the old window settled in the new one takes no slot of it.
        let r3 = r2.settle(10, SourceOutcome::Unevaluated, next, &p);
        assert_eq!(r3.in_flight, 1);
        // A quiet window after a back-off forgives the doubling.
        let backed = SourceRecord {
            blocked_until: now,
            backoffs: 3,
            ..SourceRecord::default()
        };
        assert_eq!(backed.reserve(next, &p).unwrap().backoffs, 0);
    }

    #[test]
    fn a_source_record_round_trips_and_unknown_bytes_are_refused() {
        let r = SourceRecord {
            window: 1 << 40,
            failures: 3,
            in_flight: 2,
            blocked_until: UnixMillis(1_700_000_000_123),
            backoffs: 4,
        };
        let b = r.encode();
        assert_eq!(b.len(), 29);
        assert_eq!(SourceRecord::decode(&b), Some(r));
        assert_eq!(SourceRecord::decode(&b[..28]), None);
        let mut other = b.clone();
        other[0] = 2;
        assert_eq!(SourceRecord::decode(&other), None);
        assert_eq!(SourceRecord::decode(&[]), None);
    }
}
