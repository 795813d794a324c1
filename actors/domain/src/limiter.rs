//! Error C: limits on failed redemptions, without identifying anyone.
//!
//! - Global: at most `global_failures` failed redemptions in any sliding `window`. When the
//!   budget is spent, every redemption is refused (C) for a lockout that doubles each
//!   time the budget is spent again (up to `lockout_max`), and resets after a quiet window.
//!   A refused attempt is never evaluated, so it can never hit.
//! - Per source: the edge passes an opaque [`SourceKey`] (a keyed hash of the connection it
//!   holds in memory only; never an IP). A source gets `source_failures` failures per
//!   window, then an exponential back-off.
//!
//! Both are in memory, per node. The global window is rebuilt at start from the day's
//! `ProcessingNumberRejected` events; the per-source state is lost on restart by design.
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

use std::collections::{HashMap, VecDeque};

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

/// An opaque, in-memory-only label of where requests come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey(pub u64);

/// Refused (C): try again after this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub UnixMillis);

#[derive(Default, Debug)]
struct SourceState {
    failures: VecDeque<UnixMillis>,
    blocked_until: UnixMillis,
    backoffs: u32,
}

/// The limiter's state.
#[derive(Debug)]
pub struct AttemptLimiter {
    policy: LimiterPolicy,
    failures: VecDeque<UnixMillis>,
    locked_until: UnixMillis,
    lockouts: u32,
    sources: HashMap<SourceKey, SourceState>,
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
            sources: HashMap::new(),
        }
    }

    fn prune(q: &mut VecDeque<UnixMillis>, now: UnixMillis, window: u64) {
        while q.front().is_some_and(|t| t.0 + window <= now.0) {
            q.pop_front();
        }
    }

    /// May a redemption be evaluated now?
    pub fn check(&mut self, now: UnixMillis, source: Option<SourceKey>) -> Result<(), RetryAfter> {
        if now < self.locked_until {
            return Err(RetryAfter(self.locked_until));
        }
        // A whole quiet window after the last lockout forgives the doubling.
        if self.lockouts > 0 && now.0 >= self.locked_until.0 + self.policy.window_ms {
            self.lockouts = 0;
        }
        if let Some(s) = source.and_then(|k| self.sources.get(&k))
            && now < s.blocked_until
        {
            return Err(RetryAfter(s.blocked_until));
        }
        Ok(())
    }

    /// A redemption was evaluated and failed (B).
    pub fn record_failure(&mut self, now: UnixMillis, source: Option<SourceKey>) {
        let p = &self.policy;
        Self::prune(&mut self.failures, now, p.window_ms);
        self.failures.push_back(now);
        if self.failures.len() >= p.global_failures {
            let d = doubled(p.lockout_base_ms, self.lockouts, p.lockout_max_ms);
            self.locked_until = now.plus_millis(d);
            self.lockouts += 1;
            self.failures.clear();
        }
        if let Some(k) = source {
            let s = self.sources.entry(k).or_default();
            Self::prune(&mut s.failures, now, p.window_ms);
            s.failures.push_back(now);
            if s.failures.len() >= p.source_failures {
                let d = doubled(p.source_backoff_base_ms, s.backoffs, p.lockout_max_ms);
                s.blocked_until = now.plus_millis(d);
                s.backoffs += 1;
                s.failures.clear();
            }
        }
        // Forget sources that have been quiet for a window (bounded memory).
        if self.sources.len() > 100_000 {
            let w = p.window_ms;
            self.sources.retain(|_, s| {
                s.blocked_until.0 + w > now.0 || s.failures.back().is_some_and(|t| t.0 + w > now.0)
            });
        }
    }

    /// A redemption succeeded: the source's record is cleared.
    pub fn record_success(&mut self, source: Option<SourceKey>) {
        if let Some(k) = source {
            self.sources.remove(&k);
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
            assert!(l.check(t, None).is_ok());
            l.record_failure(t, None);
        }
        assert!(l.check(t, None).is_ok());
        l.record_failure(t, None);
        assert_eq!(l.check(t, None), Err(RetryAfter(t.plus_millis(5 * MIN))));
        t = t.plus_millis(5 * MIN);
        assert!(l.check(t, None).is_ok());
        for _ in 0..60 {
            l.record_failure(t, None);
        }
        assert_eq!(l.check(t, None), Err(RetryAfter(t.plus_millis(10 * MIN))));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut l = AttemptLimiter::new(LimiterPolicy::default());
        for i in 0..200u64 {
            let t = UnixMillis(i * 62_000); // 58 in any hour: under the 60
            assert!(l.check(t, None).is_ok(), "attempt {i}");
            l.record_failure(t, None);
        }
    }

    #[test]
    fn one_source_backs_off_without_locking_out_the_others() {
        let mut l = AttemptLimiter::new(LimiterPolicy::default());
        let (a, b) = (Some(SourceKey(1)), Some(SourceKey(2)));
        let t = UnixMillis(10_000_000);
        for _ in 0..5 {
            l.record_failure(t, a);
        }
        assert_eq!(l.check(t, a), Err(RetryAfter(t.plus_millis(MIN))));
        assert!(l.check(t, b).is_ok());
        let t2 = t.plus_millis(MIN);
        for _ in 0..5 {
            l.record_failure(t2, a);
        }
        assert_eq!(l.check(t2, a), Err(RetryAfter(t2.plus_millis(2 * MIN))));
        l.record_success(a);
        assert!(l.check(t2, a).is_ok());
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
            match l.check(UnixMillis(t), None) {
                Ok(()) => {
                    evaluated += 1;
                    attempts += 1;
                    l.record_failure(UnixMillis(t), None);
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
}
