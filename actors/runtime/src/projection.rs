//! A projection: one context of the log folded into a state, checkpointed with it.
//!
//! Every read model of the server runs on these three steps: [`resume`] from the
//! checkpoint (position and state in one value), [`next_page`] (or [`catch_up`]) through
//! the commits after it, [`save`] the new position with the new state. A crash between a
//! page and its save reads the same commits again from the older checkpoint, and applies
//! each exactly once to the older state; so a restart neither skips nor re-applies one.

use hotaru_events::Context as LogContext;
use hotaru_log::{Checkpoint, EventLog, LogError, RecordedCommit};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Commits read per page.
pub const PAGE: usize = 4096;

/// A read model: how commits change a state. Pure; the steps around it do the I/O.
pub trait Projection {
    type State;

    /// The version of `State`'s encoding in the checkpoint (ADR 0005). Change it with the
    /// state's shape: a checkpoint of another version is set aside and the projection
    /// rebuilds from the start of its context. (Version 0, checkpoints of before, counts
    /// as version 1.)
    const STATE_VERSION: u8 = 1;

    /// The consumer name: the checkpoint's key (1-64 of `A-Za-z0-9_-`).
    fn name(&self) -> &str;

    fn context(&self) -> LogContext;

    fn apply(&self, state: &mut Self::State, commit: &RecordedCommit);
}

/// The state and the position it reflects.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ProjectionSnapshot<S> {
    pub position: u64,
    pub state: S,
}

/// The projection's checkpoint, or its default state at position 0 when it has none.
///
/// A checkpoint of another state version, or one that does not decode, is set aside (with
/// a warning) and the projection rebuilds from the start of its context: a checkpoint only
/// caches what the log says, so a rebuild answers the same.
pub async fn resume<P, L>(log: &L, projection: &P) -> Result<ProjectionSnapshot<P::State>, LogError>
where
    P: Projection,
    P::State: Default + DeserializeOwned,
    L: EventLog,
{
    let name = projection.name();
    let Some(cp) = log.load_checkpoint(name).await? else {
        return Ok(ProjectionSnapshot::default());
    };
    match hotaru_events::versioned::split(&cp.state) {
        (v, body) if v == P::STATE_VERSION || (v == 0 && P::STATE_VERSION == 1) => {
            match bincode::serde::decode_from_slice(body, bincode::config::standard()) {
                Ok((state, _)) => {
                    return Ok(ProjectionSnapshot {
                        position: cp.position,
                        state,
                    });
                }
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "checkpoint does not decode: rebuilding from the start");
                }
            }
        }
        (v, _) => {
            tracing::info!(
                projection = name,
                stored = v,
                current = P::STATE_VERSION,
                "checkpoint of another state version: rebuilding from the start"
            );
        }
    }
    Ok(ProjectionSnapshot::default())
}

/// Applies the next page of commits after `snapshot.position`, up to `through`, and
/// answers them (empty once the snapshot reached `through` or the context's end).
pub async fn next_page<P, L>(
    log: &L,
    projection: &P,
    snapshot: &mut ProjectionSnapshot<P::State>,
    through: u64,
) -> Result<Vec<RecordedCommit>, LogError>
where
    P: Projection,
    L: EventLog,
{
    if snapshot.position >= through {
        return Ok(Vec::new());
    }
    let mut page = log
        .read_all(projection.context(), snapshot.position + 1, PAGE)
        .await?;
    page.retain(|c| c.position <= through);
    for c in &page {
        projection.apply(&mut snapshot.state, c);
    }
    if let Some(last) = page.last() {
        snapshot.position = last.position;
    }
    Ok(page)
}

/// Applies every commit after `snapshot.position` up to `through`; answers how many.
pub async fn catch_up<P, L>(
    log: &L,
    projection: &P,
    snapshot: &mut ProjectionSnapshot<P::State>,
    through: u64,
) -> Result<usize, LogError>
where
    P: Projection,
    L: EventLog,
{
    let mut applied = 0;
    loop {
        let page = next_page(log, projection, snapshot, through).await?;
        if page.is_empty() {
            return Ok(applied);
        }
        applied += page.len();
    }
}

/// Saves the snapshot's position and state as one checkpoint value.
pub async fn save<P, L>(
    log: &L,
    projection: &P,
    snapshot: &ProjectionSnapshot<P::State>,
) -> Result<(), LogError>
where
    P: Projection,
    P::State: Serialize,
    L: EventLog,
{
    let body = bincode::serde::encode_to_vec(&snapshot.state, bincode::config::standard())
        .map_err(|e| {
            LogError::Backend(format!(
                "the state of {} does not encode: {e}",
                projection.name()
            ))
        })?;
    let cp = Checkpoint {
        position: snapshot.position,
        state: hotaru_events::versioned::wrap_vec(P::STATE_VERSION, body),
    };
    log.save_checkpoint(projection.name(), &cp).await
}
