//! Where an audit reads from: a live log (sled directory or JetStream), or an archive.
//! Only stored bytes come through here: frames, the day keys still held, and the published
//! zips. Nothing is read from a projection.

use bytes::Bytes;
use hotaru_events::Context;
use hotaru_events::domain::{Day, LogId};
use hotaru_log::{EventLog, LogError, SideStore};

use super::archive::Archive;
use hotaru_domain::sealing::{DAY_KEYS, OPLOG_KEYS, day_key_name};

/// A source of stored bytes.
#[allow(async_fn_in_trait)]
pub trait AuditSource {
    /// What is audited, for the report (no host names: a kind and a count).
    fn describe(&self) -> String;
    /// The heads each context claims (the log's, or those recorded in the archive).
    async fn heads(&self) -> Result<Vec<(Context, u64)>, LogError>;
    /// Up to `max` frames of `ctx` from `cursor` (0 to start), as stored, with the cursor
    /// to continue from; none when done.
    async fn frames(
        &self,
        ctx: Context,
        cursor: u64,
        max: usize,
    ) -> Result<(Vec<(u64, Bytes)>, u64), LogError>;
    /// A day's stored key bytes, if still held.
    async fn day_key(&self, day: Day) -> Result<Option<Vec<u8>>, LogError>;
    /// The days whose keys are still held.
    async fn day_key_days(&self) -> Result<Vec<Day>, LogError>;
    /// A published zip by its blob name (hex SHA-256).
    async fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError>;
    /// Whether an operation log's key is still held; `None` when the source cannot tell
    /// (an archive carries no operation-log keys).
    async fn op_log_key_held(&self, id: LogId) -> Result<Option<bool>, LogError> {
        let _ = id;
        Ok(None)
    }
    /// Problems with the container itself (an archive's checksum), as findings.
    fn container_findings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A running system's log.
pub struct LiveSource<L> {
    pub log: L,
    pub kind: &'static str,
}

impl<L: EventLog + SideStore> AuditSource for LiveSource<L> {
    fn describe(&self) -> String {
        format!("the live log ({})", self.kind)
    }

    async fn heads(&self) -> Result<Vec<(Context, u64)>, LogError> {
        let mut out = Vec::new();
        for ctx in Context::ALL {
            out.push((ctx, self.log.head(ctx).await?));
        }
        Ok(out)
    }

    async fn frames(
        &self,
        ctx: Context,
        cursor: u64,
        max: usize,
    ) -> Result<(Vec<(u64, Bytes)>, u64), LogError> {
        let from = cursor.max(1);
        let batch = self.log.read_all(ctx, from, max).await?;
        let next = batch.last().map_or(from, |c| c.position + 1);
        Ok((
            batch.into_iter().map(|c| (c.position, c.frame)).collect(),
            next,
        ))
    }

    async fn day_key(&self, day: Day) -> Result<Option<Vec<u8>>, LogError> {
        self.log.side_get(DAY_KEYS, &day_key_name(day)).await
    }

    async fn day_key_days(&self) -> Result<Vec<Day>, LogError> {
        Ok(self
            .log
            .side_keys(DAY_KEYS)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix('d')?.parse().ok().map(Day))
            .collect())
    }

    async fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.log.blob_get(name).await
    }

    async fn op_log_key_held(&self, id: LogId) -> Result<Option<bool>, LogError> {
        Ok(Some(
            self.log
                .side_get(OPLOG_KEYS, &hex::encode(id.0))
                .await?
                .is_some(),
        ))
    }
}

impl AuditSource for Archive {
    fn describe(&self) -> String {
        format!("an archive of {} bytes", self.bytes)
    }

    async fn heads(&self) -> Result<Vec<(Context, u64)>, LogError> {
        Ok(self.heads.iter().map(|(c, h, _)| (*c, *h)).collect())
    }

    async fn frames(
        &self,
        ctx: Context,
        cursor: u64,
        max: usize,
    ) -> Result<(Vec<(u64, Bytes)>, u64), LogError> {
        let all = self.frames.get(&(ctx as u8)).map_or(&[][..], |v| &v[..]);
        let start = (cursor as usize).min(all.len());
        let end = start.saturating_add(max).min(all.len());
        Ok((all[start..end].to_vec(), end as u64))
    }

    async fn day_key(&self, day: Day) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.day_keys.get(&day.0).cloned())
    }

    async fn day_key_days(&self) -> Result<Vec<Day>, LogError> {
        Ok(self.day_keys.keys().map(|d| Day(*d)).collect())
    }

    async fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.blobs.get(name).cloned())
    }

    fn container_findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.damage {
            out.push(format!("the archive's records stop parsing: {d}"));
        }
        if !self.complete {
            out.push("the archive is cut short: its trailer is missing".to_owned());
        } else if !self.checksum_ok {
            out.push("the archive's SHA-256 trailer does not match its bytes: it was changed after export".to_owned());
        }
        out
    }
}
