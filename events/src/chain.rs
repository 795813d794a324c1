//! The hash chain: each stored commit carries SHA-256(previous hash ‖ its record bytes).
//! One chain per context, starting from [`ChainHash::GENESIS`].

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{Commit, DecodeError, Frame};
use crate::domain::EventType;
use crate::ids::{Context, StreamId};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The "previous hash" of a context's first commit.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    pub fn link(prev: &ChainHash, record: &[u8]) -> ChainHash {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&prev.0);
        ctx.update(record);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        ChainHash(out)
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", hex::encode(self.0))
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What is wrong with a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The stored hash is not SHA-256(previous hash ‖ record): the record or the hash
    /// was changed, or a commit before it was removed or reordered.
    HashMismatch,
    /// The store's position and the position recorded inside the commit disagree, or a
    /// position is missing (a deleted commit).
    PositionMismatch { expected: u64, found: u64 },
    /// The commit belongs to another context.
    WrongContext(Context),
    /// A stream's versions jump or repeat.
    VersionGap { expected: u64, found: u64 },
    /// The frame does not decode.
    Undecodable(DecodeError),
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::HashMismatch => f.write_str("hash mismatch"),
            Break::PositionMismatch { expected, found } => {
                write!(f, "expected position {expected}, found {found}")
            }
            Break::WrongContext(c) => write!(f, "commit of context {c}"),
            Break::VersionGap { expected, found } => {
                write!(f, "expected stream version {expected}, found {found}")
            }
            Break::Undecodable(e) => write!(f, "undecodable: {e}"),
        }
    }
}

/// The first broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain of {context} broken at position {position}{}{}: {kind}",
    stream.as_ref().map(|s| format!(" (stream {s}")).unwrap_or_default(),
    stream.as_ref().map(|_| format!("{})", event_types.iter().map(|t| format!(", {}", t.name())).collect::<String>())).unwrap_or_default())]
pub struct ChainError {
    pub context: Context,
    pub position: u64,
    /// The stream of the broken commit, when its record still decodes.
    pub stream: Option<StreamId>,
    /// The event types in the broken commit, when its record still decodes.
    pub event_types: Vec<EventType>,
    pub kind: Break,
}

/// Verifies a context's frames fed in position order and reports the first broken link.
pub struct ChainVerifier {
    context: Context,
    prev: ChainHash,
    next_position: u64,
    versions: HashMap<StreamId, u64>,
    commits: u64,
    events: u64,
}

impl ChainVerifier {
    pub fn new(context: Context) -> Self {
        Self {
            context,
            prev: ChainHash::GENESIS,
            next_position: 1,
            versions: HashMap::new(),
            commits: 0,
            events: 0,
        }
    }

    /// Checks the frame stored at `position`; returns the decoded commit.
    pub fn feed(&mut self, position: u64, frame: &[u8]) -> Result<Commit, ChainError> {
        let fail = |kind: Break, commit: Option<&Commit>| ChainError {
            context: self.context,
            position,
            stream: commit.map(|c| c.stream.clone()),
            event_types: commit
                .map(|c| c.events.iter().map(|e| e.event_type).collect())
                .unwrap_or_default(),
            kind,
        };
        let (stored, record) =
            Frame::split(frame).map_err(|e| fail(Break::Undecodable(e), None))?;
        let commit = Commit::decode(record);
        let decoded = commit.as_ref().ok();
        if position != self.next_position {
            return Err(fail(
                Break::PositionMismatch {
                    expected: self.next_position,
                    found: position,
                },
                decoded,
            ));
        }
        if ChainHash::link(&self.prev, record) != stored {
            return Err(fail(Break::HashMismatch, decoded));
        }
        let commit = commit.map_err(|e| fail(Break::Undecodable(e), None))?;
        if commit.position != position {
            return Err(fail(
                Break::PositionMismatch {
                    expected: position,
                    found: commit.position,
                },
                Some(&commit),
            ));
        }
        if commit.context != self.context {
            return Err(fail(Break::WrongContext(commit.context), Some(&commit)));
        }
        let expected = self.versions.get(&commit.stream).map_or(1, |v| v + 1);
        if commit.first_version != expected {
            return Err(fail(
                Break::VersionGap {
                    expected,
                    found: commit.first_version,
                },
                Some(&commit),
            ));
        }
        self.versions
            .insert(commit.stream.clone(), commit.last_version());
        self.prev = stored;
        self.next_position += 1;
        self.commits += 1;
        self.events += commit.events.len() as u64;
        Ok(commit)
    }

    /// The hash of the last verified commit.
    pub fn head(&self) -> ChainHash {
        self.prev
    }

    pub fn commits(&self) -> u64 {
        self.commits
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn streams(&self) -> usize {
        self.versions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CommitEvent;
    use crate::domain::{DemoRecorded, DomainEvent};
    use crate::envelope::NewEvent;
    use crate::ids::{EventId, StreamKind};
    use crate::time::UnixMillis;

    fn frames(n: u64) -> Vec<Vec<u8>> {
        let mut prev = ChainHash::GENESIS;
        let mut out = Vec::new();
        for i in 1..=n {
            let stream = StreamId::new(StreamKind::Demo, format!("s{}", i % 3)).unwrap();
            let ev = NewEvent::new(
                EventId::new(UnixMillis(i), [i as u8; 10]),
                UnixMillis(i),
                DomainEvent::DemoRecorded(DemoRecorded {
                    seq: i,
                    filler: vec![],
                }),
            );
            let commit = Commit {
                context: Context::Demo,
                position: i,
                stream,
                first_version: i.div_ceil(3),
                events: vec![CommitEvent::plain(&ev).unwrap()],
            };
            let (h, f) = Frame::encode(&prev, &commit).unwrap();
            prev = h;
            out.push(f);
        }
        out
    }

    fn verify(frames: &[(u64, Vec<u8>)]) -> Result<u64, ChainError> {
        let mut v = ChainVerifier::new(Context::Demo);
        for (p, f) in frames {
            v.feed(*p, f)?;
        }
        Ok(v.commits())
    }

    fn positioned(f: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        f.into_iter()
            .enumerate()
            .map(|(i, f)| (i as u64 + 1, f))
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&positioned(frames(30))), Ok(30));
    }

    #[test]
    fn every_flipped_byte_is_found_at_its_position() {
        let good = positioned(frames(6));
        for at in 0..good.len() {
            for byte in 0..good[at].1.len() {
                let mut bad = good.clone();
                bad[at].1[byte] ^= 0x01;
                let err = verify(&bad).unwrap_err();
                assert_eq!(err.position, at as u64 + 1, "byte {byte}");
            }
        }
    }

    #[test]
    fn a_deleted_commit_is_reported_where_it_is_missing() {
        let mut f = positioned(frames(10));
        f.remove(4);
        let err = verify(&f).unwrap_err();
        assert_eq!(err.position, 6);
        assert_eq!(
            err.kind,
            Break::PositionMismatch {
                expected: 5,
                found: 6
            }
        );
        assert_eq!(err.stream.unwrap().to_string(), "demo.s0");
    }

    #[test]
    fn swapped_commits_break_the_chain() {
        let mut f = frames(10);
        f.swap(3, 4);
        let err = verify(&positioned(f)).unwrap_err();
        assert_eq!(err.position, 4);
        assert_eq!(err.kind, Break::HashMismatch);
        assert!(err.to_string().contains("DemoRecorded"), "{err}");
    }
}
