//! Retention by crypto-shredding (docs/adr/0003-retention.md): when a day's retention is
//! over, RetentionExpired is recorded and then its day keys are destroyed. Number digests and
//! uploaded keys of that day become unreadable; the log's bytes, and so its hash chain,
//! stay exactly as they were.

use std::sync::Arc;

use hotaru_actors::{IdSource, crash_point};
use hotaru_events::domain::{Day, RetentionExpired};
use hotaru_events::{Clock, DomainEvent, NewEvent, StreamId, StreamKind};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};

use crate::daykeys::DayKeys;

/// The stream that records a day's expiry.
pub fn retention_stream(day: Day) -> StreamId {
    StreamId::new(StreamKind::RetentionDay, day.0.to_string()).expect("digits are a valid id")
}

/// Destroys every day key older than `retention_days`, and deletes the operation logs
/// received before then (OperationLogDeleted). Returns the days shredded now. Safe to run
/// on several nodes at once, and after a crash at any step.
///
/// Record, then act: RetentionExpired is appended first (fenced at version 0, so one
/// event per day whichever node gets there), and the keys are destroyed after it. A day
/// whose RetentionExpired is recorded while its keys still exist (a crash came between the
/// two) is finished on the next run, whatever `retention_days` says by then.
pub async fn expire<L: EventLog + SideStore>(
    log: &L,
    keys: &DayKeys<L>,
    clock: &Arc<dyn Clock>,
    ids: &Arc<dyn IdSource>,
    retention_days: u32,
) -> Result<Vec<Day>, LogError> {
    let now = clock.now();
    let today = now.day();
    let mut shredded = Vec::new();
    for day in keys.days().await? {
        let stream = retention_stream(day);
        let recorded = log.stream_version(&stream).await? > 0;
        if !recorded {
            if day.0 + retention_days > today {
                continue;
            }
            let ev = NewEvent::new(
                ids.next_id(now),
                now,
                DomainEvent::RetentionExpired(RetentionExpired { day }),
            );
            match log
                .append(stream, ExpectedVersion::Exact(0), vec![ev])
                .await
            {
                // Conflict: another node recorded it first; the event is there either way.
                Ok(_) | Err(LogError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        crash_point("retention.recorded");
        keys.destroy(day).await?;
        shredded.push(day);
    }
    keys.forget_cache();
    // Operation logs whose investigation never closed go too.
    let closed = crate::support::expire(log, clock, ids, retention_days).await?;
    if !closed.is_empty() {
        tracing::info!(logs = closed.len(), "operation logs past retention deleted");
    }
    Ok(shredded)
}
