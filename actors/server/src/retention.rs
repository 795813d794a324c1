//! Retention by crypto-shredding (docs/adr/0003-retention.md): when a day's retention is
//! over, its day keys are destroyed and RetentionExpired is recorded. Number digests and
//! uploaded keys of that day become unreadable; the log's bytes, and so its hash chain,
//! stay exactly as they were.

use std::sync::Arc;

use hotaru_actors::IdSource;
use hotaru_events::domain::{Day, RetentionExpired};
use hotaru_events::{Clock, DomainEvent, NewEvent, StreamId, StreamKind};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};

use crate::daykeys::DayKeys;

/// The stream that records a day's expiry.
pub fn retention_stream(day: Day) -> StreamId {
    StreamId::new(StreamKind::RetentionDay, day.0.to_string()).expect("digits are a valid id")
}

/// Destroys every day key older than `retention_days` and records it, and deletes the
/// operation logs received before then (OperationLogDeleted). Returns the days shredded
/// now. Safe to run on several nodes at once.
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
        if day.0 + retention_days > today {
            continue;
        }
        keys.destroy(day).await?;
        let ev = NewEvent::new(
            ids.next_id(now),
            now,
            DomainEvent::RetentionExpired(RetentionExpired { day }),
        );
        match log
            .append(retention_stream(day), ExpectedVersion::Exact(0), vec![ev])
            .await
        {
            Ok(_) | Err(LogError::Conflict { .. }) => shredded.push(day),
            Err(e) => return Err(e),
        }
    }
    keys.forget_cache();
    // Operation logs whose investigation never closed go too.
    let closed = crate::support::expire(log, clock, ids, retention_days).await?;
    if !closed.is_empty() {
        tracing::info!(logs = closed.len(), "operation logs past retention deleted");
    }
    Ok(shredded)
}
