//! The attempt limit's per-source records (ADR 0004, "Per source, across nodes"), next to
//! the log on the same backend so that every node of a cluster reads and fences the same
//! record: a small value per opaque source label (a keyed hash the edge derives per day;
//! never an address), replaced only if nobody replaced it since it was read.
//!
//! - In process (sled, the fleet's memory store): a table in memory, shared by every
//!   clone of the log, in two generations of at most [`GENERATION`] labels each (the
//!   older dropped when the newer fills), so it stays bounded without a clock.
//! - JetStream: the stream `HOTARU_SOURCES`, **memory storage** (a record never reaches
//!   a disk, as when it lived in one process's memory), one message per label's subject,
//!   messages expiring after [`SOURCE_TTL`], replicated like the log; reads from the
//!   stream's leader, swaps fenced with `Nats-Expected-Last-Subject-Sequence`.

use std::collections::HashMap;
use std::time::Duration;

/// Labels per generation of the in-process table.
pub const GENERATION: usize = 100_000;
/// How long a record outlives its last change on JetStream: a day (the edge's labels are
/// derived per day, so a record is of no use after it).
pub const SOURCE_TTL: Duration = Duration::from_secs(24 * 3600);
pub(crate) const SOURCE_STREAM: &str = "HOTARU_SOURCES";
pub(crate) const SOURCE_SUBJECT: &str = "hotaru_source";

/// The record's subject on JetStream.
pub(crate) fn source_subject(label: u64) -> String {
    format!("{SOURCE_SUBJECT}.{label:016x}")
}

/// Records in process memory; revision 0 is "no record".
#[derive(Default)]
pub(crate) struct SourceTable {
    current: HashMap<u64, (u64, Vec<u8>)>,
    previous: HashMap<u64, (u64, Vec<u8>)>,
    revisions: u64,
}

impl SourceTable {
    pub(crate) fn get(&self, label: u64) -> (Option<Vec<u8>>, u64) {
        match self
            .current
            .get(&label)
            .or_else(|| self.previous.get(&label))
        {
            Some((rev, v)) => (Some(v.clone()), *rev),
            None => (None, 0),
        }
    }

    /// The record's new revision, or None when `revision` is no longer its revision.
    pub(crate) fn swap(&mut self, label: u64, revision: u64, value: &[u8]) -> Option<u64> {
        if self.get(label).1 != revision {
            return None;
        }
        self.previous.remove(&label);
        if self.current.len() >= GENERATION && !self.current.contains_key(&label) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.revisions += 1;
        self.current.insert(label, (self.revisions, value.to_vec()));
        Some(self.revisions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_lands_only_on_the_revision_it_read_and_the_table_stays_bounded() {
        let mut t = SourceTable::default();
        assert_eq!(t.get(7), (None, 0));
        let first = t.swap(7, 0, b"a").unwrap();
        let (v, rev) = t.get(7);
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        assert_eq!(rev, first, "a swap gives the revision a read sees");
        assert!(t.swap(7, 0, b"b").is_none(), "a stale read loses");
        let second = t.swap(7, rev, b"b").unwrap();
        assert_eq!(t.get(7).1, second);
        assert!(
            t.swap(7, rev, b"c").is_none(),
            "the same revision twice: the second loses"
        );
        for label in 100..100 + 2 * GENERATION as u64 + 5 {
            assert!(t.swap(label, 0, b"x").is_some());
        }
        assert!(t.current.len() + t.previous.len() <= 2 * GENERATION);
        // A label of the older generation is still found, and moves to the newer one.
        let old = 100 + GENERATION as u64 + 1;
        let (_, rev) = t.get(old);
        assert!(rev > 0);
        assert!(t.swap(old, rev, b"y").is_some());
        assert!(t.current.contains_key(&old) && !t.previous.contains_key(&old));
    }
}
