//! Operation logs sent on request (DOMAIN.md, "Operation logs"): stored sealed under a key
//! of their own, which is destroyed when support closes the investigation (or when the
//! retention runs out first). The gateway checks consent and content before calling this.

use std::sync::Arc;

use hotaru_actors::projection::{self, Projection};
use hotaru_actors::{IdSource, crash_point};
use hotaru_events::domain::{Day, LogId, OperationLogDeleted, OperationLogReceived, Sealed};
use hotaru_events::{Clock, DomainEvent, NewEvent, StreamId, StreamKind};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// The side-store namespace of the operation logs' keys.
use hotaru_domain::sealing::OPLOG_KEYS as NS;

/// The version of OperationLogReceived's content (ADR 0005): 1 is
/// `versioned::wrap(1, bincode(Sealed))`; 0, the bincode alone, was written before.
pub const CONTENT_VERSION: u8 = 1;

/// The sealed log in an OperationLogReceived's content, of any version written.
pub fn decode_content(content: &[u8]) -> Result<Sealed, LogError> {
    match hotaru_events::versioned::split(content) {
        (0 | 1, body) => bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map(|(s, _)| s)
            .map_err(backend),
        (v, _) => Err(backend(format!(
            "operation log content of unknown version {v}"
        ))),
    }
}

pub fn oplog_stream(id: LogId) -> StreamId {
    StreamId::new(StreamKind::OperationLog, hex::encode(id.0)).expect("hex is a valid id")
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

fn key(bytes: &[u8]) -> Result<LessSafeKey, LogError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| backend("bad log key"))?,
    ))
}

/// Stores an operation log; returns the random log ID the user may quote to support.
pub async fn receive<L: EventLog + SideStore>(
    log: &L,
    clock: &Arc<dyn Clock>,
    ids: &Arc<dyn IdSource>,
    content: &[u8],
) -> Result<LogId, LogError> {
    let random = ids.random();
    let (id, k, nonce): ([u8; 16], [u8; 32], [u8; 12]) =
        (random.array(), random.array(), random.array());
    let log_id = LogId(id);
    let now = clock.now();
    log.side_put(NS, &hex::encode(id), &k).await?;
    let mut buf = content.to_vec();
    key(&k)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id), &mut buf)
        .map_err(|_| backend("sealing failed"))?;
    let sealed = Sealed {
        day: Day(now.day()),
        nonce,
        ciphertext: buf,
    };
    let bytes = hotaru_events::versioned::wrap_vec(
        CONTENT_VERSION,
        bincode::serde::encode_to_vec(&sealed, bincode::config::standard()).map_err(backend)?,
    );
    let ev = NewEvent::new(
        ids.next_id(now),
        now,
        DomainEvent::OperationLogReceived(OperationLogReceived {
            log_id,
            content: bytes,
        }),
    );
    log.append(oplog_stream(log_id), ExpectedVersion::Exact(0), vec![ev])
        .await?;
    Ok(log_id)
}

/// The log's content, while its investigation is open.
pub async fn read<L: EventLog + SideStore>(
    log: &L,
    id: LogId,
) -> Result<Option<Vec<u8>>, LogError> {
    let Some(k) = log.side_get(NS, &hex::encode(id.0)).await? else {
        return Ok(None);
    };
    for c in log.read_stream(&oplog_stream(id)).await? {
        for env in c.commit.envelopes().flatten() {
            if let DomainEvent::OperationLogReceived(r) = env.event {
                let sealed = decode_content(&r.content)?;
                let mut buf = sealed.ciphertext;
                let plain = key(&k)?
                    .open_in_place(
                        Nonce::assume_unique_for_key(sealed.nonce),
                        Aad::from(id.0),
                        &mut buf,
                    )
                    .map_err(|_| backend("the log does not open"))?;
                return Ok(Some(plain.to_vec()));
            }
        }
    }
    Ok(None)
}

/// Support closed the investigation: the log's key is destroyed (OperationLogDeleted).
/// Returns false when there is no such open log.
///
/// Record, then act: OperationLogDeleted is appended first (fenced on the log's stream),
/// then the key is destroyed. A log whose deletion is recorded while its key still exists
/// (a crash came between the two) is finished by the next call, or by [`expire`].
pub async fn close<L: EventLog + SideStore>(
    log: &L,
    clock: &Arc<dyn Clock>,
    ids: &Arc<dyn IdSource>,
    id: LogId,
) -> Result<bool, LogError> {
    let stream = oplog_stream(id);
    let commits = log.read_stream(&stream).await?;
    if commits.is_empty() || log.side_get(NS, &hex::encode(id.0)).await?.is_none() {
        return Ok(false);
    }
    let recorded = commits.iter().any(|c| {
        c.commit
            .envelopes()
            .flatten()
            .any(|e| matches!(e.event, DomainEvent::OperationLogDeleted(_)))
    });
    if !recorded {
        let now = clock.now();
        let ev = NewEvent::new(
            ids.next_id(now),
            now,
            DomainEvent::OperationLogDeleted(OperationLogDeleted { log_id: id }),
        );
        let version = commits.last().map_or(0, |c| c.commit.last_version());
        match log
            .append(stream, ExpectedVersion::Exact(version), vec![ev])
            .await
        {
            // Conflict: only a deletion follows a receipt; another node recorded it.
            Ok(_) | Err(LogError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    crash_point("oplog.recorded");
    log.side_delete(NS, &hex::encode(id.0)).await?;
    Ok(true)
}

/// The name of the retention's checkpoint over the support context.
pub const EXPIRY_CHECKPOINT: &str = "support-expiry";

/// The retention's read model of the support context, checkpointed as `support-expiry`.
struct ExpiryModel;

impl Projection for ExpiryModel {
    type State = Expiry;

    /// ADR 0005: another version is rebuilt from the start of the context, once.
    const STATE_VERSION: u8 = 1;

    fn name(&self) -> &str {
        EXPIRY_CHECKPOINT
    }

    fn context(&self) -> hotaru_events::Context {
        hotaru_events::Context::Support
    }

    fn apply(&self, state: &mut Expiry, commit: &hotaru_log::RecordedCommit) {
        for env in commit.commit.envelopes().flatten() {
            match env.event {
                DomainEvent::OperationLogReceived(r) => {
                    state.open.insert(r.log_id, env.occurred_at.0);
                }
                DomainEvent::OperationLogDeleted(d) => {
                    state.open.remove(&d.log_id);
                    state.deleted.insert(d.log_id);
                }
                _ => {}
            }
        }
    }
}

/// What the retention knows of the support context up to its checkpoint: the logs received
/// and not deleted, with the time each arrived, and the deletions recorded whose key may
/// still be held (a crash between the two steps of `close`). Ids and times only: a log's
/// content stays sealed in the log.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Expiry {
    open: std::collections::BTreeMap<LogId, u64>,
    deleted: std::collections::BTreeSet<LogId>,
}

/// Closes every operation log received more than `retention_days` ago whose investigation
/// is still open, and finishes every deletion recorded whose key survived a crash: nothing
/// is kept past its retention. Returns the logs closed now.
///
/// Reads the support context from its checkpoint (`support-expiry`), not from position 1,
/// and checkpoints after acting: a crash before that reads the same commits again, and
/// closing is idempotent.
pub async fn expire<L: EventLog + SideStore>(
    log: &L,
    clock: &Arc<dyn Clock>,
    ids: &Arc<dyn IdSource>,
    retention_days: u32,
) -> Result<Vec<LogId>, LogError> {
    let cutoff = clock
        .now()
        .0
        .saturating_sub(u64::from(retention_days) * hotaru_events::DAY_MS);
    let mut snap = projection::resume(log, &ExpiryModel).await?;
    let head = log.head(hotaru_events::Context::Support).await?;
    projection::catch_up(log, &ExpiryModel, &mut snap, head).await?;
    let state = &mut snap.state;
    // Keys still held: an open log, or a deletion recorded and not yet done.
    let held: std::collections::HashSet<String> = log.side_keys(NS).await?.into_iter().collect();
    state.deleted.retain(|id| held.contains(&hex::encode(id.0)));
    let due: Vec<LogId> = state
        .open
        .iter()
        .filter(|(_, at)| **at < cutoff)
        .map(|(id, _)| *id)
        .collect();
    let mut closed = Vec::new();
    for id in state.deleted.iter().copied().chain(due).collect::<Vec<_>>() {
        if close(log, clock, ids, id).await? {
            closed.push(id);
        }
        // Done either way: closed now, or by someone else meanwhile.
        state.open.remove(&id);
        state.deleted.remove(&id);
    }
    projection::save(log, &ExpiryModel, &snap).await?;
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use hotaru_actors::{ManualClock, RandomIds};
    use hotaru_events::UnixMillis;
    use hotaru_log::SledLog;

    use super::*;

    #[tokio::test]
    async fn logs_past_their_retention_are_closed_and_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        let manual = ManualClock::at(UnixMillis(100 * 86_400_000));
        let clock: Arc<dyn Clock> = Arc::new(manual.clone());
        let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
        let old = receive(&log, &clock, &ids, b"12:00 check ok")
            .await
            .unwrap();
        manual.advance_millis(10 * 86_400_000);
        let young = receive(&log, &clock, &ids, b"13:00 check ok")
            .await
            .unwrap();
        manual.advance_millis(5 * 86_400_000);
        // 15 days for the old one, 5 for the young one.
        assert_eq!(expire(&log, &clock, &ids, 14).await.unwrap(), vec![old]);
        assert_eq!(read(&log, old).await.unwrap(), None);
        assert!(read(&log, young).await.unwrap().is_some());
        // Nothing more to do the second time.
        assert_eq!(expire(&log, &clock, &ids, 14).await.unwrap(), vec![]);
        // The run read from its checkpoint, which now stands at the head and still knows
        // the young log, received before it: closed when its time comes.
        let cp = log
            .load_checkpoint(EXPIRY_CHECKPOINT)
            .await
            .unwrap()
            .unwrap();
        let head = log.head(hotaru_events::Context::Support).await.unwrap();
        assert_eq!(cp.position, head);
        manual.advance_millis(10 * 86_400_000);
        assert_eq!(expire(&log, &clock, &ids, 14).await.unwrap(), vec![young]);
        assert_eq!(read(&log, young).await.unwrap(), None);
        // A checkpoint of another version is rebuilt from the start: a log it held is not
        // lost though the position stands past its arrival.
        let third = receive(&log, &clock, &ids, b"14:00 check ok")
            .await
            .unwrap();
        assert_eq!(expire(&log, &clock, &ids, 14).await.unwrap(), vec![]);
        let head = log.head(hotaru_events::Context::Support).await.unwrap();
        let other = hotaru_log::Checkpoint {
            position: head,
            state: hotaru_events::versioned::wrap(9, b"?"),
        };
        log.save_checkpoint(EXPIRY_CHECKPOINT, &other)
            .await
            .unwrap();
        manual.advance_millis(15 * 86_400_000);
        assert_eq!(expire(&log, &clock, &ids, 14).await.unwrap(), vec![third]);
    }

    #[test]
    fn log_contents_carry_their_version_and_those_of_before_still_read() {
        let sealed = Sealed {
            day: Day(20_000),
            nonce: [3; 12],
            ciphertext: vec![1, 2, 3],
        };
        let body = bincode::serde::encode_to_vec(&sealed, bincode::config::standard()).unwrap();
        let now = hotaru_events::versioned::wrap(CONTENT_VERSION, &body);
        assert_eq!(decode_content(&now).unwrap(), sealed);
        assert_eq!(decode_content(&body).unwrap(), sealed);
        assert!(decode_content(&hotaru_events::versioned::wrap(4, &body)).is_err());
    }
}
