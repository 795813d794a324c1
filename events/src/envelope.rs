//! The envelope: what every event carries besides its payload.

use serde::{Deserialize, Serialize};

use crate::domain::{DomainEvent, EventType};
use crate::ids::{EventId, StreamId};
use crate::time::UnixMillis;

/// W3C trace context (`traceparent`): the trace id, the parent span id and the flags.
/// `tracestate` is deliberately not carried: it is vendor free text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// `00-<trace id>-<parent id>-<flags>`.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }

    pub fn parse_traceparent(s: &str) -> Option<Self> {
        let mut parts = s.split('-');
        if parts.next()? != "00" {
            return None;
        }
        let mut trace_id = [0u8; 16];
        hex::decode_to_slice(parts.next()?, &mut trace_id).ok()?;
        let mut parent_id = [0u8; 8];
        hex::decode_to_slice(parts.next()?, &mut parent_id).ok()?;
        let mut flags = [0u8; 1];
        hex::decode_to_slice(parts.next()?, &mut flags).ok()?;
        if parts.next().is_some() || trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags: flags[0],
        })
    }
}

/// An event to append: the caller chooses the id (so a retry is idempotent) and the time
/// (from its injected clock). The log assigns stream version and global position.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: EventId,
    pub occurred_at: UnixMillis,
    pub causation_id: Option<EventId>,
    pub correlation_id: EventId,
    pub trace: Option<TraceContext>,
    pub event: DomainEvent,
}

impl NewEvent {
    /// A new event that starts its own correlation (no cause).
    pub fn new(event_id: EventId, occurred_at: UnixMillis, event: DomainEvent) -> Self {
        Self {
            event_id,
            occurred_at,
            causation_id: None,
            correlation_id: event_id,
            trace: None,
            event,
        }
    }

    /// An event caused by `cause`: it inherits the correlation and the trace.
    pub fn caused_by(
        event_id: EventId,
        occurred_at: UnixMillis,
        cause: &Envelope,
        event: DomainEvent,
    ) -> Self {
        Self {
            event_id,
            occurred_at,
            causation_id: Some(cause.event_id),
            correlation_id: cause.correlation_id,
            trace: cause.trace,
            event,
        }
    }
}

/// One stored event, decoded: metadata and payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub event_id: EventId,
    pub stream: StreamId,
    /// The event's version in its stream, from 1.
    pub version: u64,
    /// The global position of the commit that holds the event, in its context, from 1.
    pub position: u64,
    /// The event's index within its commit, from 0.
    pub index: u32,
    pub event_type: EventType,
    pub schema_version: u16,
    pub occurred_at: UnixMillis,
    pub causation_id: Option<EventId>,
    pub correlation_id: EventId,
    pub trace: Option<TraceContext>,
    pub event: DomainEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let t = TraceContext {
            trace_id: [0xab; 16],
            parent_id: [0xcd; 8],
            flags: 1,
        };
        let s = t.to_traceparent();
        assert_eq!(s, format!("00-{}-{}-01", "ab".repeat(16), "cd".repeat(8)));
        assert_eq!(TraceContext::parse_traceparent(&s), Some(t));
        for bad in ["", "01-aa-bb-01", &s[..s.len() - 1], &format!("{s}-x")] {
            assert_eq!(TraceContext::parse_traceparent(bad), None, "{bad}");
        }
    }
}
