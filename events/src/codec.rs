//! How events are stored: commits, frames and the encoding-version byte.
//!
//! Every stored blob starts with an encoding byte ([`ENCODING_BINCODE2`] today), so the
//! encoding can change later without guessing (docs/adr/0001-bincode-encoding.md):
//!
//! ```text
//! frame   = chain hash (32 bytes) ‖ record
//! record  = encoding byte ‖ bincode(Commit)
//! payload = encoding byte ‖ bincode(event struct at its schema version)   (when plain)
//! ```
//!
//! The chain hash of a frame is SHA-256(previous frame's hash ‖ record) (see
//! [`crate::chain`]); sealed payloads are hashed as ciphertext, so destroying a day key
//! leaves the chain intact.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::chain::ChainHash;
use crate::device::legacy as device_legacy;
use crate::domain::{DomainEvent, EventType, legacy};
use crate::envelope::{Envelope, NewEvent, TraceContext};
use crate::ids::{Context, EventId, StreamId};
use crate::time::UnixMillis;

/// bincode 2.0 with its standard configuration (little endian, variable-length integers).
/// The format of 2.0.1 is fixed; the crate is pinned with `=`.
pub const ENCODING_BINCODE2: u8 = 1;

/// Decoding never allocates more than a record can hold, whatever a corrupted length says.
/// The limit does not change the encoded bytes.
pub(crate) const BINCODE: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 1 << 20 }>,
> = bincode::config::standard().with_limit::<{ 1 << 20 }>();

/// Largest record a commit may encode to. JetStream's default `max_payload` is 1 MiB; the
/// limit is the same on every backend so the backends behave alike.
pub const MAX_RECORD_BYTES: usize = 900 * 1024;

/// Why bytes could not be turned into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte names an encoding this build does not know (written by a newer
    /// Hotaru): upgrade the reader.
    #[error("unknown encoding byte {0}")]
    UnknownEncoding(u8),
    /// The bytes are empty or shorter than their fixed header: corruption or truncation.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// bincode refused the bytes: corruption.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// The event type tag is unknown (written by a newer Hotaru).
    #[error("unknown event type tag {0}")]
    UnknownEventType(u8),
    /// No upcaster exists for this schema version (newer than this build, or corrupt).
    #[error("no decoder for {event_type} schema version {version}")]
    UnknownSchemaVersion {
        event_type: &'static str,
        version: u16,
    },
    /// The payload is sealed under a day key; unseal it first (retention).
    #[error("payload sealed under the key of day {day}")]
    Sealed { day: u32 },
}

/// Why events could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The commit is larger than [`MAX_RECORD_BYTES`]: split it into several appends.
    #[error("commit of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A commit needs at least one event.
    #[error("a commit needs at least one event")]
    Empty,
    /// bincode failed (should not happen for Hotaru's types).
    #[error("encoding failed: {0}")]
    Bincode(String),
}

/// How a payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sealing {
    /// Plain: encoding byte ‖ bincode body.
    Plain,
    /// Encrypted under the data key of `day` (crypto-shredding; the retention issue).
    DayKey { day: u32, nonce: [u8; 12] },
}

/// One event inside a commit, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEvent {
    pub event_id: EventId,
    #[serde(with = "event_type_tag")]
    pub event_type: EventType,
    pub schema_version: u16,
    pub occurred_at: UnixMillis,
    pub causation_id: Option<EventId>,
    pub correlation_id: EventId,
    pub trace: Option<TraceContext>,
    pub sealing: Sealing,
    pub payload: Vec<u8>,
}

/// One atomic append: one or more events of one stream, at one position of its context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub context: Context,
    pub position: u64,
    pub stream: StreamId,
    /// The stream version of the first event; the others follow without gaps.
    pub first_version: u64,
    pub events: Vec<CommitEvent>,
}

/// What an index needs of a commit, decoded without its payloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitHead {
    pub context: Context,
    pub position: u64,
    pub stream: StreamId,
    pub first_version: u64,
    pub events: u64,
    pub first_event_id: EventId,
}

impl CommitHead {
    pub fn last_version(&self) -> u64 {
        self.first_version + self.events.saturating_sub(1)
    }
}

/// The leading fields of [`Commit`], in its field order: bincode decodes them as a prefix.
#[derive(Deserialize)]
struct CommitPrefix {
    context: Context,
    position: u64,
    stream: StreamId,
    first_version: u64,
}

/// A stored frame: its chain hash and its record bytes.
pub struct Frame;

impl CommitEvent {
    /// Encodes a new event with a plain payload at its type's current schema version.
    pub fn plain(new: &NewEvent) -> Result<Self, EncodeError> {
        let body = new
            .event
            .encode_body()
            .map_err(|e| EncodeError::Bincode(e.to_string()))?;
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(ENCODING_BINCODE2);
        payload.extend_from_slice(&body);
        let event_type = new.event.event_type();
        Ok(Self {
            event_id: new.event_id,
            event_type,
            schema_version: event_type.current_version(),
            occurred_at: new.occurred_at,
            causation_id: new.causation_id,
            correlation_id: new.correlation_id,
            trace: new.trace,
            sealing: Sealing::Plain,
            payload,
        })
    }

    /// Decodes the payload, through the upcasters, into the current version.
    pub fn decode(&self) -> Result<DomainEvent, DecodeError> {
        match self.sealing {
            Sealing::Plain => decode_payload(self.event_type, self.schema_version, &self.payload),
            Sealing::DayKey { day, .. } => Err(DecodeError::Sealed { day }),
        }
    }
}

/// Why a commit of `events` events from `first_version` cannot be one.
fn shape_fault(first_version: u64, events: u64) -> Option<&'static str> {
    if events == 0 {
        Some("no events")
    } else if first_version == 0 {
        Some("stream versions start at 1")
    } else if first_version.checked_add(events - 1).is_none() {
        Some("the last version overflows")
    } else {
        None
    }
}

impl Commit {
    /// The record bytes: encoding byte ‖ bincode(commit).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.events.is_empty() {
            return Err(EncodeError::Empty);
        }
        let mut out = vec![ENCODING_BINCODE2];
        bincode::serde::encode_into_std_write(self, &mut out, BINCODE)
            .map_err(|e| EncodeError::Bincode(e.to_string()))?;
        if out.len() > MAX_RECORD_BYTES {
            return Err(EncodeError::TooLarge {
                size: out.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        Ok(out)
    }

    pub fn decode(record: &[u8]) -> Result<Self, DecodeError> {
        match record.first() {
            None => Err(DecodeError::Truncated(0)),
            Some(&ENCODING_BINCODE2) => {
                let c: Self = decode_exact(&record[1..]).map_err(|e| DecodeError::Malformed {
                    what: "commit",
                    reason: e.to_string(),
                })?;
                // What `encode` never writes: a commit holds at least one event, and
                // versions start at 1 (`last_version` is computed from both).
                if let Some(reason) = shape_fault(c.first_version, c.events.len() as u64) {
                    return Err(DecodeError::Malformed {
                        what: "commit",
                        reason: reason.into(),
                    });
                }
                Ok(c)
            }
            Some(&other) => Err(DecodeError::UnknownEncoding(other)),
        }
    }

    /// Decodes only the head of a record (no payloads): for rebuilding indexes fast.
    pub fn decode_head(record: &[u8]) -> Result<CommitHead, DecodeError> {
        let malformed = |e: bincode::error::DecodeError| DecodeError::Malformed {
            what: "commit head",
            reason: e.to_string(),
        };
        let body = match record.first() {
            None => return Err(DecodeError::Truncated(0)),
            Some(&ENCODING_BINCODE2) => &record[1..],
            Some(&other) => return Err(DecodeError::UnknownEncoding(other)),
        };
        let (prefix, used): (CommitPrefix, usize) =
            bincode::serde::decode_from_slice(body, BINCODE).map_err(malformed)?;
        let (events, used2): (u64, usize) =
            bincode::decode_from_slice(&body[used..], BINCODE).map_err(malformed)?;
        if let Some(reason) = shape_fault(prefix.first_version, events) {
            return Err(DecodeError::Malformed {
                what: "commit head",
                reason: reason.into(),
            });
        }
        let id_at = used + used2;
        let id: [u8; 16] = body
            .get(id_at..id_at + 16)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::Truncated(record.len()))?;
        Ok(CommitHead {
            context: prefix.context,
            position: prefix.position,
            stream: prefix.stream,
            first_version: prefix.first_version,
            events,
            first_event_id: EventId(id),
        })
    }

    /// The version of the last event.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.events.len() as u64 - 1
    }

    /// The commit's events as envelopes, each decoded through the upcasters.
    pub fn envelopes(&self) -> impl Iterator<Item = Result<Envelope, DecodeError>> + '_ {
        self.events.iter().enumerate().map(move |(i, e)| {
            Ok(Envelope {
                event_id: e.event_id,
                stream: self.stream.clone(),
                version: self.first_version + i as u64,
                position: self.position,
                index: i as u32,
                event_type: e.event_type,
                schema_version: e.schema_version,
                occurred_at: e.occurred_at,
                causation_id: e.causation_id,
                correlation_id: e.correlation_id,
                trace: e.trace,
                event: e.decode()?,
            })
        })
    }
}

impl Frame {
    /// Encodes `commit` as a frame chained to `prev`; returns the frame's hash and bytes.
    pub fn encode(prev: &ChainHash, commit: &Commit) -> Result<(ChainHash, Vec<u8>), EncodeError> {
        let record = commit.encode()?;
        let hash = ChainHash::link(prev, &record);
        let mut frame = Vec::with_capacity(32 + record.len());
        frame.extend_from_slice(&hash.0);
        frame.extend_from_slice(&record);
        Ok((hash, frame))
    }

    /// Splits a frame into its stored hash and its record bytes.
    pub fn split(frame: &[u8]) -> Result<(ChainHash, &[u8]), DecodeError> {
        if frame.len() < 33 {
            return Err(DecodeError::Truncated(frame.len()));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&frame[..32]);
        Ok((ChainHash(hash), &frame[32..]))
    }

    /// Decodes a frame's commit without checking its hash (the chain verifier does).
    pub fn decode(frame: &[u8]) -> Result<(ChainHash, Commit), DecodeError> {
        let (hash, record) = Frame::split(frame)?;
        Ok((hash, Commit::decode(record)?))
    }
}

/// Decodes a plain payload (encoding byte ‖ body) of `event_type` at `schema_version` into
/// the current version, through the upcasters. Also used after unsealing.
pub fn decode_payload(
    event_type: EventType,
    schema_version: u16,
    payload: &[u8],
) -> Result<DomainEvent, DecodeError> {
    let body = match payload.first() {
        None => return Err(DecodeError::Truncated(0)),
        Some(&ENCODING_BINCODE2) => &payload[1..],
        Some(&other) => return Err(DecodeError::UnknownEncoding(other)),
    };
    let malformed = |e: bincode::error::DecodeError| DecodeError::Malformed {
        what: event_type.name(),
        reason: e.to_string(),
    };
    if schema_version == event_type.current_version() {
        return DomainEvent::decode_current(event_type, body).map_err(malformed);
    }
    // The upcasters: one arm per shipped old version, each converting to the current one.
    match (event_type, schema_version) {
        (EventType::ProcessingNumberRejected, 1) => {
            let v1: legacy::ProcessingNumberRejectedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::ProcessingNumberRejected(v1.into()))
        }
        (EventType::NumberAssigned, 1) => {
            let v1: legacy::NumberAssignedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::NumberAssigned(v1.into()))
        }
        (EventType::BatchSigned, 1) => {
            let v1: legacy::BatchSignedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::BatchSigned(v1.into()))
        }
        (EventType::DiagnosisKeysUploaded, 1) => {
            let v1: legacy::DiagnosisKeysUploadedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::DiagnosisKeysUploaded(v1.into()))
        }
        (EventType::TekRolled, 1) => {
            let v1: device_legacy::TekRolledV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::TekRolled(v1.into()))
        }
        (EventType::ProximityRecorded, 1) => {
            let v1: device_legacy::ProximityRecordedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::ProximityRecorded(v1.into()))
        }
        (EventType::ExposureChecked, 1) => {
            let v1: device_legacy::ExposureCheckedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::ExposureChecked(v1.into()))
        }
        (EventType::ExposureMatched, 1) => {
            let v1: device_legacy::ExposureMatchedV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::ExposureMatched(v1.into()))
        }
        (EventType::GuidanceShown, 1) => {
            let v1: device_legacy::GuidanceShownV1 = decode_exact(body).map_err(malformed)?;
            Ok(DomainEvent::GuidanceShown(v1.into()))
        }
        _ => Err(DecodeError::UnknownSchemaVersion {
            event_type: event_type.name(),
            version: schema_version,
        }),
    }
}

/// Decodes `bytes` as exactly one `T`: trailing bytes are corruption, not slack.
pub(crate) fn decode_exact<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, BINCODE)?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Encodes a body for tests and fixtures of an old version.
pub fn encode_legacy_payload<T: Serialize>(body: &T) -> Vec<u8> {
    let mut out = vec![ENCODING_BINCODE2];
    bincode::serde::encode_into_std_write(body, &mut out, BINCODE).expect("encode to a vec");
    out
}

mod event_type_tag {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::EventType;

    pub(super) fn serialize<S: Serializer>(t: &EventType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(t.tag())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EventType, D::Error> {
        let tag = u8::deserialize(d)?;
        EventType::from_tag(tag)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type tag {tag}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DemoRecorded, ProcessingNumberRejected, RejectionReason};
    use crate::ids::StreamKind;

    fn demo(seq: u64) -> NewEvent {
        NewEvent::new(
            EventId::new(UnixMillis(1_700_000_000_000 + seq), [seq as u8; 10]),
            UnixMillis(1_700_000_000_000),
            DomainEvent::DemoRecorded(DemoRecorded {
                seq,
                filler: vec![1, 2, 3],
            }),
        )
    }

    fn commit(events: Vec<NewEvent>) -> Commit {
        Commit {
            context: Context::Demo,
            position: 7,
            stream: StreamId::new(StreamKind::Demo, "s1").unwrap(),
            first_version: 3,
            events: events
                .iter()
                .map(|e| CommitEvent::plain(e).unwrap())
                .collect(),
        }
    }

    #[test]
    fn a_frame_round_trips_and_starts_with_the_encoding_byte() {
        let c = commit(vec![demo(1), demo(2)]);
        let (hash, frame) = Frame::encode(&ChainHash::GENESIS, &c).unwrap();
        assert_eq!(frame[32], ENCODING_BINCODE2);
        assert_eq!(c.events[0].payload[0], ENCODING_BINCODE2);
        let (h2, back) = Frame::decode(&frame).unwrap();
        assert_eq!(hash, h2);
        assert_eq!(back, c);
        let head = Commit::decode_head(&frame[32..]).unwrap();
        assert_eq!(
            (
                head.position,
                head.first_version,
                head.events,
                head.first_event_id,
                head.stream
            ),
            (7, 3, 2, c.events[0].event_id, c.stream.clone())
        );
        let envs: Vec<_> = back.envelopes().collect::<Result<_, _>>().unwrap();
        assert_eq!(envs[1].version, 4);
        assert_eq!(envs[1].index, 1);
        assert_eq!(envs[1].event, demo(2).event);
    }

    #[test]
    fn unknown_encodings_and_garbage_are_typed_errors() {
        assert_eq!(Commit::decode(&[]), Err(DecodeError::Truncated(0)));
        assert_eq!(
            Commit::decode(&[9, 1, 2]),
            Err(DecodeError::UnknownEncoding(9))
        );
        assert!(matches!(
            Commit::decode(&[1, 0xff, 0xff]),
            Err(DecodeError::Malformed { .. })
        ));
        let c = commit(vec![demo(1)]);
        let mut rec = c.encode().unwrap();
        rec.push(0);
        assert!(matches!(
            Commit::decode(&rec),
            Err(DecodeError::Malformed { .. })
        ));
    }

    /// Records `encode` would refuse to write (built by hand, as a corrupt or hostile store
    /// would hold them) are refused at decode, whole and head alike, instead of underflowing
    /// `last_version`.
    #[test]
    fn a_record_of_no_events_or_version_zero_is_refused_at_decode() {
        let raw = |c: &Commit| {
            let mut out = vec![ENCODING_BINCODE2];
            bincode::serde::encode_into_std_write(c, &mut out, BINCODE).unwrap();
            out
        };
        let mut version_zero = commit(vec![demo(1)]);
        version_zero.first_version = 0;
        let mut overflowing = commit(vec![demo(1), demo(2)]);
        overflowing.first_version = u64::MAX;
        for bad in [commit(vec![]), version_zero, overflowing] {
            let rec = raw(&bad);
            assert!(
                matches!(
                    Commit::decode(&rec),
                    Err(DecodeError::Malformed { what: "commit", .. })
                ),
                "{bad:?}"
            );
            assert!(matches!(
                Commit::decode_head(&rec),
                Err(DecodeError::Malformed {
                    what: "commit head",
                    ..
                })
            ));
        }
        let good = raw(&commit(vec![demo(1)]));
        assert_eq!(Commit::decode(&good).unwrap().last_version(), 3);
    }

    #[test]
    fn empty_and_oversized_commits_are_refused() {
        assert_eq!(commit(vec![]).encode(), Err(EncodeError::Empty));
        let mut big = demo(1);
        big.event = DomainEvent::DemoRecorded(DemoRecorded {
            seq: 1,
            filler: vec![0; MAX_RECORD_BYTES],
        });
        assert!(matches!(
            commit(vec![big]).encode(),
            Err(EncodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn version_one_rejections_are_upcast() {
        let v1 = legacy::ProcessingNumberRejectedV1 {
            reason: RejectionReason::Expired,
        };
        let bytes = encode_legacy_payload(&v1);
        let ev = decode_payload(EventType::ProcessingNumberRejected, 1, &bytes).unwrap();
        assert_eq!(
            ev,
            DomainEvent::ProcessingNumberRejected(ProcessingNumberRejected {
                digest: None,
                reason: RejectionReason::Expired
            })
        );
        assert!(matches!(
            decode_payload(EventType::ProcessingNumberRejected, 99, &bytes),
            Err(DecodeError::UnknownSchemaVersion { version: 99, .. })
        ));
    }

    #[test]
    fn sealed_payloads_say_so() {
        let mut c = commit(vec![demo(1)]);
        c.events[0].sealing = Sealing::DayKey {
            day: 20_000,
            nonce: [0; 12],
        };
        assert_eq!(
            c.events[0].decode(),
            Err(DecodeError::Sealed { day: 20_000 })
        );
    }
}
