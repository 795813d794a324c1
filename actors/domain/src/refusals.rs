//! Refusals that evaluate nothing are counted, not recorded one by one.
//!
//! A malformed number (A), a guess refused by the attempt limit (C) and an upload with no
//! keys (G) look at no number and consume nothing: anyone can send them, as fast as the
//! edge lets them through. Recorded as one event each, they grew the immutable log without
//! bound and, on NATS, moved the registration context's head on every request, so real
//! redemptions lost their optimistic races under such a flood. A node counts them instead,
//! per interval of [`TALLY_MS`], and records one `RefusalsCounted` when the interval ends:
//! at most one append per node per interval, however many refusals it answered. Guesses
//! that were evaluated (B) stay one event each: the global failure window is built from
//! them, and the attempt limit bounds them.
//!
//! What a crash loses: the open interval's counts (at most [`TALLY_MS`] of them). No
//! refusal depends on the tally: it only feeds the audit's figures.

use hotaru_events::UnixMillis;
use hotaru_events::domain::RefusalsCounted;

/// The interval a node counts over before it records the count.
pub const TALLY_MS: u64 = 60_000;

/// A refusal that evaluated nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unevaluated {
    /// A: not a number of the right form.
    Format,
    /// C: refused by the attempt limit before the number was looked at.
    AttemptLimit,
    /// G: nothing to submit.
    NothingToSubmit,
}

/// One node's open interval of counted refusals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusalTally {
    open: Option<RefusalsCounted>,
}

fn interval(now: UnixMillis) -> (UnixMillis, UnixMillis) {
    let from = now.0 - now.0 % TALLY_MS;
    (UnixMillis(from), UnixMillis(from + TALLY_MS))
}

impl RefusalTally {
    /// Counts one refusal at `now`. Returns the tally of an interval that ended before
    /// `now`, to be recorded; the refusal opens the next interval.
    pub fn count(&mut self, now: UnixMillis, refusal: Unevaluated) -> Option<RefusalsCounted> {
        let closed = self.due(now, false);
        let open = self.open.get_or_insert_with(|| {
            let (from, until) = interval(now);
            RefusalsCounted {
                from,
                until,
                format: 0,
                attempt_limit: 0,
                nothing_to_submit: 0,
            }
        });
        let n = match refusal {
            Unevaluated::Format => &mut open.format,
            Unevaluated::AttemptLimit => &mut open.attempt_limit,
            Unevaluated::NothingToSubmit => &mut open.nothing_to_submit,
        };
        *n = n.saturating_add(1);
        closed
    }

    /// The open tally, taken out to be recorded, when its interval has ended by `now`,
    /// or whenever it holds a count with `force` (a node stopping).
    pub fn due(&mut self, now: UnixMillis, force: bool) -> Option<RefusalsCounted> {
        match &self.open {
            Some(t) if force || now >= t.until => self.open.take(),
            _ => None,
        }
    }

    /// A tally whose append failed, back in: its counts join the open interval's (which
    /// then spans both), so nothing is lost while the process lives.
    pub fn restore(&mut self, t: RefusalsCounted) {
        match &mut self.open {
            None => self.open = Some(t),
            Some(open) => {
                open.from = open.from.min(t.from);
                open.until = open.until.max(t.until);
                open.format = open.format.saturating_add(t.format);
                open.attempt_limit = open.attempt_limit.saturating_add(t.attempt_limit);
                open.nothing_to_submit = open.nothing_to_submit.saturating_add(t.nothing_to_submit);
            }
        }
    }

    /// Refusals counted and not yet taken out.
    pub fn pending(&self) -> u64 {
        self.open.as_ref().map_or(0, RefusalsCounted::total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % TALLY_MS;

    #[test]
    fn given_refusals_in_one_interval_when_it_ends_then_one_tally_holds_them_all() {
        let mut t = RefusalTally::default();
        for i in 0..1_000u64 {
            let r = [
                Unevaluated::Format,
                Unevaluated::AttemptLimit,
                Unevaluated::NothingToSubmit,
            ][(i % 3) as usize];
            assert_eq!(
                t.count(UnixMillis(T0 + i * 50), r),
                None,
                "within the interval"
            );
        }
        assert_eq!(t.pending(), 1_000);
        assert_eq!(t.due(UnixMillis(T0 + TALLY_MS - 1), false), None);
        let closed = t.due(UnixMillis(T0 + TALLY_MS), false).unwrap();
        assert_eq!(
            closed,
            RefusalsCounted {
                from: UnixMillis(T0),
                until: UnixMillis(T0 + TALLY_MS),
                format: 334,
                attempt_limit: 333,
                nothing_to_submit: 333,
            }
        );
        assert_eq!(t.pending(), 0);
        assert_eq!(t.due(UnixMillis(T0 + 10 * TALLY_MS), true), None, "empty");
    }

    #[test]
    fn given_an_ended_interval_when_a_refusal_comes_then_it_hands_over_the_old_and_opens_a_new() {
        let mut t = RefusalTally::default();
        t.count(UnixMillis(T0 + 5), Unevaluated::Format);
        let closed = t
            .count(
                UnixMillis(T0 + 3 * TALLY_MS + 7),
                Unevaluated::NothingToSubmit,
            )
            .unwrap();
        assert_eq!((closed.format, closed.nothing_to_submit), (1, 0));
        assert_eq!(closed.until, UnixMillis(T0 + TALLY_MS));
        let open = t.due(UnixMillis(T0), true).unwrap();
        assert_eq!(open.from, UnixMillis(T0 + 3 * TALLY_MS));
        assert_eq!((open.format, open.nothing_to_submit), (0, 1));
    }

    #[test]
    fn given_a_failed_append_when_restored_then_its_counts_join_the_open_interval() {
        let mut t = RefusalTally::default();
        t.count(UnixMillis(T0), Unevaluated::AttemptLimit);
        let closed = t
            .count(UnixMillis(T0 + TALLY_MS), Unevaluated::Format)
            .unwrap();
        t.restore(closed);
        let both = t.due(UnixMillis(T0), true).unwrap();
        assert_eq!((both.format, both.attempt_limit), (1, 1));
        assert_eq!(
            (both.from, both.until),
            (UnixMillis(T0), UnixMillis(T0 + 2 * TALLY_MS))
        );
        // Into an empty tally it is the tally.
        t.restore(both.clone());
        assert_eq!(t.due(UnixMillis(T0), true), Some(both));
    }
}
