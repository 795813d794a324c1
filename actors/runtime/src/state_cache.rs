//! The last folded state of a few long, hot streams, so that a command on one of them
//! does not read the whole stream again (a centre's daily quota holds one event per
//! number it issued that day).

use std::collections::HashMap;
use std::sync::Mutex;

use hotaru_domain::Aggregate;
use hotaru_events::StreamId;
use hotaru_log::{EventLog, LogError, RecordedCommit};

/// States of streams and the versions they were folded to.
///
/// A cached state may be stale: another node (or another process on the same store) may
/// have appended since. It is still safe to decide on, because the caller appends with
/// `ExpectedVersion::Exact(version)`: a stale decision fails with a conflict, and the
/// caller [`forget`](Self::forget)s the entry and loads afresh. An outcome that appends
/// nothing (a refusal, an idempotent no-op) is checked with [`is_current`](Self::is_current)
/// before it is answered.
pub struct StateCache<A> {
    entries: Mutex<HashMap<StreamId, (A, u64)>>,
    capacity: usize,
}

impl<A: Aggregate> StateCache<A> {
    /// A cache of at most `capacity` streams (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The state of `stream` and its version, and whether it came from the cache. A miss
    /// reads and folds the stream.
    pub async fn load<L: EventLog>(
        &self,
        log: &L,
        stream: &StreamId,
    ) -> Result<(A, u64, bool), LogError> {
        if let Some((state, version)) = self.lock().get(stream).cloned() {
            return Ok((state, version, true));
        }
        let (state, version) = fold::<A>(&log.read_stream(stream).await?, |_, _| {})?;
        self.store(stream, state.clone(), version);
        Ok((state, version, false))
    }

    /// Whether a state folded to `version` is the stream's latest: one read of its last
    /// commit. Forgets the entry when it is not.
    pub async fn is_current<L: EventLog>(
        &self,
        log: &L,
        stream: &StreamId,
        version: u64,
    ) -> Result<bool, LogError> {
        let current = log.stream_version(stream).await? == version;
        if !current {
            self.forget(stream);
        }
        Ok(current)
    }

    /// Records the state of `stream` at `version` (after an append of the caller's).
    pub fn store(&self, stream: &StreamId, state: A, version: u64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(stream) {
            // A full cache starts over: the streams it serves are a centre's day, so the
            // hot ones come back at their next command.
            entries.clear();
        }
        match entries.get_mut(stream) {
            Some(e) if e.1 > version => {} // a later state is there already
            Some(e) => *e = (state, version),
            None => {
                entries.insert(stream.clone(), (state, version));
            }
        }
    }

    /// Drops the entry of `stream` (after a conflict showed it stale).
    pub fn forget(&self, stream: &StreamId) {
        self.lock().remove(stream);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, (A, u64)>> {
        // A panic while holding the lock leaves at worst a stale entry, which the
        // expected-version append catches.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An aggregate's state and its stream's version from one read of the stream's last
/// commit when that is enough (the stream's only commit, or a last event that repeats the
/// whole state, [`Aggregate::restore`]), else folded from the whole stream (at once for an
/// aggregate that never restores, `Aggregate::RESTORES`).
pub async fn load_latest<A: Aggregate, L: EventLog>(
    log: &L,
    stream: &StreamId,
) -> Result<(A, u64), LogError> {
    if !A::RESTORES {
        return fold(&log.read_stream(stream).await?, |_, _| {});
    }
    let Some(last) = log.last_commit(stream).await? else {
        return Ok((A::default(), 0));
    };
    if last.commit.first_version == 1 {
        return fold(std::slice::from_ref(&last), |_, _| {});
    }
    let restored = match last.commit.envelopes().last() {
        Some(Ok(env)) => A::restore(&env.event),
        Some(Err(e)) => {
            return Err(LogError::Corrupt {
                context: last.commit.context,
                position: last.position,
                reason: e.to_string(),
            });
        }
        None => None,
    };
    match restored {
        Some(state) => Ok((state, last.commit.last_version())),
        None => fold(&log.read_stream(stream).await?, |_, _| {}),
    }
}

/// The state of an aggregate folded from its stream's commits, and the stream's version;
/// `each` sees every event with the position of its commit.
pub fn fold<A: Aggregate>(
    commits: &[RecordedCommit],
    mut each: impl FnMut(u64, hotaru_events::Envelope),
) -> Result<(A, u64), LogError> {
    let mut state = A::default();
    let mut version = 0;
    for c in commits {
        for env in c.commit.envelopes() {
            let env = env.map_err(|e| LogError::Corrupt {
                context: c.commit.context,
                position: c.position,
                reason: e.to_string(),
            })?;
            state.apply(&env.event);
            each(c.position, env);
        }
        version = c.commit.last_version();
    }
    Ok((state, version))
}
