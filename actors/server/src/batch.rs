//! Batch signing and distribution.
//!
//! A batch holds every uploaded key that became releasable since the previous batch:
//! keys of registration commits up to the position read now (`through_position`) whose
//! release time has come, minus those an earlier batch held. Both bounds only grow, so a
//! key is never published twice and never skipped, even when an upload commits while a
//! batch is being cut (it lands after `through_position` and goes into the next batch).
//!
//! One signer at a time per region, on any number of nodes: BatchSigned is appended to
//! `signer.<region>` with the version read at the start. A second signer racing it gets a
//! conflict and publishes nothing.

use std::sync::Arc;

use hotaru_actors::projection::{self, Projection, ProjectionSnapshot};
use hotaru_actors::{IdSource, crash_point};
use hotaru_domain::export::{PositionedKey, build_files, export_info, in_batch, padding_keys};
use hotaru_events::domain::{
    BatchId, BatchPublished, BatchSigned, DiagnosisKey, ExportFileDigest, RegionCode, UploadedKey,
    UploadedKeys,
};
use hotaru_events::{Clock, Context, DomainEvent, NewEvent, StreamId, StreamKind, UnixMillis};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};
use hotaru_protocol::export;
use serde::{Deserialize, Serialize};

use crate::daykeys::DayKeys;
use crate::signing::active_signers;

/// Batching (`[batch]` in the server's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchPolicy {
    /// Region code in the exports (Japan's MCC).
    pub region: String,
    /// The signature infos' key id.
    pub region_id: u32,
    /// How often the scheduled signer cuts a batch.
    pub interval_ms: u64,
    /// Batches are padded with random keys up to this many.
    pub min_keys: usize,
    pub max_keys_per_file: usize,
    /// How long a replaced signing key keeps signing beside the new one.
    pub key_overlap_ms: u64,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            region: "440".into(),
            region_id: 440,
            interval_ms: 4 * 3_600_000,
            min_keys: 1_000,
            max_keys_per_file: export::DEFAULT_MAX_KEYS_PER_FILE,
            key_overlap_ms: 7 * 24 * 3_600_000,
        }
    }
}

impl BatchPolicy {
    /// The region must be what an export file holds: exactly three bytes (an MCC such as
    /// "440"). Refused here rather than replaced when the batch is cut.
    pub fn validate(&self) -> Result<(), String> {
        if self.region.len() != 3 || !self.region.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "batch.region must be three ASCII letters or digits (Japan's is \"440\"), not {:?}",
                self.region
            ));
        }
        if self.max_keys_per_file == 0 {
            return Err("batch.max_keys_per_file must be at least 1".into());
        }
        Ok(())
    }

    fn region_code(&self) -> Result<RegionCode, BatchError> {
        self.validate().map_err(BatchError::InvalidPolicy)?;
        Ok(RegionCode(
            self.region.as_bytes().try_into().expect("validated"),
        ))
    }
}

/// What a batch published.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    pub batch_id: u64,
    pub key_count: u32,
    pub padding_count: u32,
    /// index.txt paths of the new files.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum BatchError {
    #[error("no signing key for region {0}: run `hotaru keys generate`")]
    NoSigningKey(String),
    #[error("another signer published this batch first")]
    Fenced,
    #[error("{0}")]
    InvalidPolicy(String),
    #[error(transparent)]
    Log(
        #[from]
        #[serde(with = "crate::commands::log_error_text")]
        LogError,
    ),
}

/// The signer's read model of the registration context: the positions of the uploads not
/// yet known to be wholly published, checkpointed as `signer-<region>`. A commit with an
/// upload is pending until a batch holds its keys; only positions are kept, so the keys
/// stay sealed under their day key and shredding still makes them unreadable.
struct Unpublished {
    name: String,
}

impl Projection for Unpublished {
    type State = Vec<u64>;

    fn name(&self) -> &str {
        &self.name
    }

    fn context(&self) -> Context {
        Context::Registration
    }

    fn apply(&self, pending: &mut Vec<u64>, commit: &hotaru_log::RecordedCommit) {
        let upload = commit
            .commit
            .envelopes()
            .flatten()
            .any(|e| matches!(e.event, DomainEvent::DiagnosisKeysUploaded(_)));
        if upload {
            pending.push(commit.position);
        }
    }
}

/// The signer's stream for a region.
pub fn signer_stream(region: &str) -> StreamId {
    StreamId::new(StreamKind::Signer, region).expect("a region code is a valid id")
}

/// The index.txt path of a batch's file.
pub fn file_path(region: &str, batch_id: u64, batch_num: u32) -> String {
    format!("exports/{region}/{batch_id:08}-{batch_num:05}.zip")
}

/// A batch as recorded (the events of one signer commit).
#[derive(Clone, Debug)]
pub struct RecordedBatch {
    pub signed: BatchSigned,
    pub published: BatchPublished,
}

/// Every batch of `region`, oldest first, and the signer stream's version.
pub async fn batches<L: EventLog>(
    log: &L,
    region: &str,
) -> Result<(Vec<RecordedBatch>, u64), LogError> {
    let commits = log.read_stream(&signer_stream(region)).await?;
    let version = commits.last().map_or(0, |c| c.commit.last_version());
    let mut out = Vec::new();
    for c in commits {
        let mut signed = None;
        for env in c.commit.envelopes().flatten() {
            match env.event {
                DomainEvent::BatchSigned(s) => signed = Some(s),
                DomainEvent::BatchPublished(p) => {
                    if let Some(s) = signed.take() {
                        out.push(RecordedBatch {
                            signed: s,
                            published: p,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok((out, version))
}

/// Every uploaded key still readable, from the registration context up to `through`.
pub async fn uploaded_keys<L: EventLog + SideStore>(
    log: &L,
    day_keys: &DayKeys<L>,
    through: u64,
) -> Result<Vec<PositionedKey>, LogError> {
    let mut out = Vec::new();
    let mut from = 1;
    while from <= through {
        let commits = log.read_all(Context::Registration, from, 4096).await?;
        let Some(last) = commits.last() else { break };
        from = last.position + 1;
        for c in commits.iter().filter(|c| c.position <= through) {
            for env in c.commit.envelopes().flatten() {
                let DomainEvent::DiagnosisKeysUploaded(u) = env.event else {
                    continue;
                };
                let Some(keys) = open_keys(day_keys, u.keys, c.position).await? else {
                    continue; // shredded: past retention, never published again
                };
                out.extend(keys.into_iter().map(|key| PositionedKey {
                    position: c.position,
                    key,
                }));
            }
        }
    }
    Ok(out)
}

/// The keys of one upload, unsealed; `None` when their day key is shredded.
pub async fn open_keys<L: SideStore>(
    day_keys: &DayKeys<L>,
    keys: UploadedKeys,
    position: u64,
) -> Result<Option<Vec<UploadedKey>>, LogError> {
    let s = match keys {
        UploadedKeys::Plain(k) => return Ok(Some(k)),
        UploadedKeys::Sealed(s) => s,
    };
    let Some(m) = day_keys.get(s.day).await? else {
        return Ok(None);
    };
    let corrupt = |reason: String| LogError::Corrupt {
        context: Context::Registration,
        position,
        reason,
    };
    let plain = m
        .open(&s)
        .ok_or_else(|| corrupt("sealed keys do not open".into()))?;
    hotaru_events::domain::decode_sealed_keys(&plain)
        .map(Some)
        .map_err(corrupt)
}

/// How long the published view is served before the signer stream is read again. A batch
/// this process signs replaces it at once; another node's shows within this time.
pub const VIEW_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The published files as the signer stream last said (a read model of it, in memory).
#[derive(Clone)]
pub struct PublishedView {
    /// When it was read (monotonic: a cache's age, not domain time).
    read_at: std::time::Instant,
    /// index.txt's lines, oldest first.
    pub index: Arc<Vec<String>>,
    /// Each path's zip address (its SHA-256).
    pub addresses: Arc<std::collections::HashMap<String, [u8; 32]>>,
    /// The end of the newest batch, if any.
    pub newest_end: Option<UnixMillis>,
}

/// The distribution service: cuts, signs and publishes batches; serves what it published.
#[derive(Clone)]
pub struct Distribution<L: SideStore> {
    log: L,
    day_keys: DayKeys<L>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    policy: BatchPolicy,
    transmission_risk: u8,
    /// What index.txt, the export paths and the newest batch's age are served from.
    view: Arc<std::sync::Mutex<Option<PublishedView>>>,
    /// One refresh of the view at a time; the others wait for its result.
    refreshing: Arc<tokio::sync::Mutex<()>>,
    /// Reads of the signer stream made for the view.
    view_reads: Arc<std::sync::atomic::AtomicU64>,
    /// How many recorded batches are known to have every zip stored.
    stored: Arc<std::sync::atomic::AtomicUsize>,
}

impl<L: EventLog + SideStore> Distribution<L> {
    pub fn new(
        log: L,
        day_keys: DayKeys<L>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        policy: BatchPolicy,
        transmission_risk: u8,
    ) -> Self {
        Self {
            log,
            day_keys,
            clock,
            ids,
            policy,
            transmission_risk,
            view: Arc::default(),
            refreshing: Arc::default(),
            view_reads: Arc::default(),
            stored: Arc::default(),
        }
    }

    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// The zips of one batch, each with its digest and address: its keys and `padding`
    /// keys from `seed`, signed by `signers`. The same input gives the same bytes (the
    /// signatures are deterministic), which is what lets [`Self::store_missing`] rebuild.
    fn build_zips(
        &self,
        start: UnixMillis,
        end: UnixMillis,
        fresh: &[DiagnosisKey],
        padding: usize,
        seed: &[u8; 32],
        signers: &[(hotaru_events::domain::SignatureInfo, export::Signer)],
    ) -> Vec<(ExportFileDigest, [u8; 32], Vec<u8>)> {
        let p = &self.policy;
        let mut all = fresh.to_vec();
        all.extend(padding_keys(seed, padding, end, self.transmission_risk));
        let infos: Vec<export::SignatureInfo> =
            signers.iter().map(|(i, _)| export_info(i)).collect();
        let signer_refs: Vec<&export::Signer> = signers.iter().map(|(_, s)| s).collect();
        build_files(&p.region, start, end, &infos, &all, p.max_keys_per_file)
            .iter()
            .map(|f| {
                let bin = f.encode();
                let sig = export::sign_export(&bin, f.batch_num, f.batch_size, &signer_refs);
                let zip = export::write_zip(&bin, &sig);
                let digest = ExportFileDigest {
                    batch_num: f.batch_num,
                    key_count: f.keys.len() as u32,
                    export_bin_sha256: sha256(&bin),
                };
                (digest, sha256(&zip), zip)
            })
            .collect()
    }

    /// Cuts a batch now. `Ok(None)`: nothing became releasable since the last batch.
    ///
    /// Record, then act: BatchSigned and BatchPublished are appended (fenced on the
    /// signer's stream) before the zips are stored, so a signer that loses the race stores
    /// nothing, and a crash between the two leaves a recorded batch whose zips
    /// [`Self::store_missing`] rebuilds from the log (at node start and before each batch).
    pub async fn sign_batch(&self) -> Result<Option<BatchOutcome>, BatchError> {
        let p = &self.policy;
        // Before anything is read or named after it: refused, never replaced.
        let region = p.region_code()?;
        let now = self.clock.now();
        let (done, version) = batches(&self.log, &p.region).await?;
        self.store_missing_of(&done).await?;
        let prev = done.last().map_or((0, UnixMillis(0)), |b| {
            (b.signed.through_position, b.signed.end)
        });
        let through = self.log.head(Context::Registration).await?;
        // Only the uploads not yet wholly published, and those after the checkpoint.
        let candidates = self.unpublished(through).await?;
        let fresh: Vec<DiagnosisKey> = candidates
            .iter()
            .filter(|k| in_batch(k, prev, through, now))
            .map(|k| k.key.key)
            .collect();
        if fresh.is_empty() {
            self.save_unpublished(through, &candidates, prev).await?;
            return Ok(None);
        }
        let signers = active_signers(&self.log, &p.region, now, p.key_overlap_ms).await?;
        if signers.is_empty() {
            return Err(BatchError::NoSigningKey(p.region.clone()));
        }
        let seed: [u8; 32] = self.ids.random().array();
        let padding = p.min_keys.saturating_sub(fresh.len());
        let built = self.build_zips(prev.1, now, &fresh, padding, &seed, &signers);
        let batch_id = done.last().map_or(1, |b| b.signed.batch_id.0 + 1);
        let paths = built
            .iter()
            .map(|(d, _, _)| file_path(&p.region, batch_id, d.batch_num))
            .collect();
        let signed = BatchSigned {
            batch_id: BatchId(batch_id),
            region,
            start: prev.1,
            end: now,
            through_position: through,
            key_count: fresh.len() as u32,
            padding_count: padding as u32,
            files: built.iter().map(|(d, _, _)| d.clone()).collect(),
            signature_infos: signers.iter().map(|(i, _)| i.clone()).collect(),
            padding_seed: seed,
        };
        let id = self.ids.next_id(now);
        let events = vec![
            NewEvent::new(id, now, DomainEvent::BatchSigned(signed)),
            NewEvent {
                causation_id: Some(id),
                correlation_id: id,
                ..NewEvent::new(
                    self.ids.next_id(now),
                    now,
                    DomainEvent::BatchPublished(BatchPublished {
                        batch_id: BatchId(batch_id),
                        blobs: built.iter().map(|(_, sha, _)| *sha).collect(),
                    }),
                )
            },
        ];
        match self
            .log
            .append(
                signer_stream(&p.region),
                ExpectedVersion::Exact(version),
                events,
            )
            .await
        {
            Ok(_) => {}
            Err(LogError::Conflict { .. }) => return Err(BatchError::Fenced),
            Err(e) => return Err(e.into()),
        }
        crash_point("batch.recorded");
        // Read your writes: the next request of this process sees the batch.
        self.invalidate_view();
        for (_, sha, zip) in &built {
            self.log.blob_put(&hex::encode(sha), zip).await?;
        }
        self.save_unpublished(through, &candidates, (through, now))
            .await?;
        Ok(Some(BatchOutcome {
            batch_id,
            key_count: fresh.len() as u32,
            padding_count: padding as u32,
            files: paths,
        }))
    }

    /// The keys of every upload up to `through` that the signer's checkpoint does not know
    /// to be wholly published: those it lists as pending (read one by one), then those of
    /// the commits after the position it reached (read page by page). Reads and unseals
    /// only these, not the whole upload history.
    async fn unpublished(&self, through: u64) -> Result<Vec<PositionedKey>, LogError> {
        let model = self.unpublished_model();
        let mut snap = projection::resume(&self.log, &model).await?;
        let mut out = Vec::new();
        let known = snap.position.min(through);
        for pos in snap.state.iter().copied().filter(|p| *p <= known) {
            for c in self.log.read_all(Context::Registration, pos, 1).await? {
                if c.position == pos {
                    self.keys_of(&c, &mut out).await?;
                }
            }
        }
        loop {
            let page = projection::next_page(&self.log, &model, &mut snap, through).await?;
            if page.is_empty() {
                return Ok(out);
            }
            for c in &page {
                self.keys_of(c, &mut out).await?;
            }
        }
    }

    /// Appends the readable keys of `c`'s uploads to `out`.
    async fn keys_of(
        &self,
        c: &hotaru_log::RecordedCommit,
        out: &mut Vec<PositionedKey>,
    ) -> Result<(), LogError> {
        for env in c.commit.envelopes().flatten() {
            let DomainEvent::DiagnosisKeysUploaded(u) = env.event else {
                continue;
            };
            // Shredded: past retention, never published again (and dropped from the list).
            if let Some(keys) = open_keys(&self.day_keys, u.keys, c.position).await? {
                out.extend(keys.into_iter().map(|key| PositionedKey {
                    position: c.position,
                    key,
                }));
            }
        }
        Ok(())
    }

    /// Checkpoints the signer's read: scanned through `through`, and the positions of the
    /// uploads with a key that the last recorded batch (`published`: its through position
    /// and end) did not hold. A checkpoint that lags (a crash, or another node's) lists more
    /// uploads than needed, never fewer: a key is dropped only once a recorded batch holds
    /// it, and `in_batch` decides from the recorded batches.
    async fn save_unpublished(
        &self,
        through: u64,
        keys: &[PositionedKey],
        published: (u64, UnixMillis),
    ) -> Result<(), LogError> {
        let (bt, be) = published;
        let mut pending: Vec<u64> = keys
            .iter()
            .filter(|k| !(k.position <= bt && k.key.release_at <= be))
            .map(|k| k.position)
            .collect();
        pending.dedup();
        let snap = ProjectionSnapshot {
            position: through,
            state: pending,
        };
        projection::save(&self.log, &self.unpublished_model(), &snap).await
    }

    /// Forgets the signer's checkpoint: the next batch reads every upload from position 1
    /// (what it did before it had one; for a restored store, and for the benchmark).
    pub async fn rescan_from_start(&self) -> Result<(), LogError> {
        let start = ProjectionSnapshot::default();
        projection::save(&self.log, &self.unpublished_model(), &start).await
    }

    fn unpublished_model(&self) -> Unpublished {
        Unpublished {
            name: self.checkpoint_name(),
        }
    }

    fn checkpoint_name(&self) -> String {
        format!("signer-{}", self.policy.region)
    }

    /// Stores every recorded batch's zips that are missing (a crash came between a batch's
    /// append and its zips' store), rebuilt from the log; each must hash to the address the
    /// batch recorded. Returns how many zips were stored. Batches found complete are not
    /// checked again by this process.
    pub async fn store_missing(&self) -> Result<usize, BatchError> {
        let (done, _) = batches(&self.log, &self.policy.region).await?;
        self.store_missing_of(&done).await
    }

    async fn store_missing_of(&self, done: &[RecordedBatch]) -> Result<usize, BatchError> {
        use std::sync::atomic::Ordering;
        let p = &self.policy;
        let mut uploads: Option<Vec<PositionedKey>> = None;
        let mut stored = 0;
        for (i, b) in done
            .iter()
            .enumerate()
            .skip(self.stored.load(Ordering::Acquire))
        {
            let mut missing = Vec::new();
            for sha in &b.published.blobs {
                if !self.log.blob_exists(&hex::encode(sha)).await? {
                    missing.push(*sha);
                }
            }
            if !missing.is_empty() {
                let s = &b.signed;
                let prev = i.checked_sub(1).map_or((0, UnixMillis(0)), |j| {
                    (done[j].signed.through_position, done[j].signed.end)
                });
                if uploads.is_none() {
                    uploads = Some(uploaded_keys(&self.log, &self.day_keys, u64::MAX).await?);
                }
                let fresh: Vec<DiagnosisKey> = uploads
                    .iter()
                    .flatten()
                    .filter(|k| in_batch(k, prev, s.through_position, s.end))
                    .map(|k| k.key.key)
                    .collect();
                let signers = active_signers(&self.log, &p.region, s.end, p.key_overlap_ms).await?;
                let built = self.build_zips(
                    s.start,
                    s.end,
                    &fresh,
                    s.padding_count as usize,
                    &s.padding_seed,
                    &signers,
                );
                for (_, sha, zip) in built {
                    if !missing.contains(&sha) {
                        continue;
                    }
                    self.log.blob_put(&hex::encode(sha), &zip).await?;
                    stored += 1;
                    missing.retain(|m| *m != sha);
                }
                if !missing.is_empty() {
                    // Keys shredded since, or a policy changed: the files cannot be made
                    // again. Said loudly; the batch stays recorded, the audit reports it.
                    tracing::error!(
                        batch = s.batch_id.0,
                        files = missing.len(),
                        "published files are missing and do not rebuild to their recorded address"
                    );
                    return Ok(stored);
                }
                tracing::warn!(
                    batch = s.batch_id.0,
                    "stored the zips a crash left unstored"
                );
            }
            self.stored.store(i + 1, Ordering::Release);
        }
        Ok(stored)
    }

    /// index.txt: every published file, oldest first, one path per line.
    pub async fn index(&self) -> Result<Vec<String>, LogError> {
        Ok(self.published().await?.index.to_vec())
    }

    /// The zip at an index.txt path.
    pub async fn file(&self, path: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.file_with_digest(path).await?.map(|(zip, _)| zip))
    }

    /// The published files, from the view when it is younger than [`VIEW_TTL`], else read
    /// from the signer stream once (concurrent callers wait for that one read). A flood of
    /// index.txt requests or of unknown paths reads the log at most once per `VIEW_TTL`.
    pub async fn published(&self) -> Result<PublishedView, LogError> {
        let fresh = |v: &Option<PublishedView>| {
            v.as_ref()
                .filter(|v| v.read_at.elapsed() < VIEW_TTL)
                .cloned()
        };
        if let Some(v) = fresh(&self.view.lock().expect("not poisoned")) {
            return Ok(v);
        }
        let _one = self.refreshing.lock().await;
        if let Some(v) = fresh(&self.view.lock().expect("not poisoned")) {
            return Ok(v);
        }
        self.view_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let read_at = std::time::Instant::now();
        let (done, _) = batches(&self.log, &self.policy.region).await?;
        let mut index = Vec::new();
        let mut addresses = std::collections::HashMap::new();
        for b in &done {
            for (f, sha) in b.signed.files.iter().zip(&b.published.blobs) {
                let p = file_path(&self.policy.region, b.signed.batch_id.0, f.batch_num);
                addresses.insert(p.clone(), *sha);
                index.push(p);
            }
        }
        let view = PublishedView {
            read_at,
            index: Arc::new(index),
            addresses: Arc::new(addresses),
            newest_end: done.last().map(|b| b.signed.end),
        };
        *self.view.lock().expect("not poisoned") = Some(view.clone());
        Ok(view)
    }

    /// Drops the view: the next request reads the signer stream (after a batch was signed
    /// here, or through this gateway by another node).
    pub fn invalidate_view(&self) {
        *self.view.lock().expect("not poisoned") = None;
    }

    /// How many times the view was read from the log (for tests and metrics).
    pub fn view_reads(&self) -> u64 {
        self.view_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The zip at an index.txt path and its SHA-256 (its address in the blob store, and a
    /// ready-made strong ETag), from the published view: an unknown path reads nothing.
    pub async fn file_with_digest(
        &self,
        path: &str,
    ) -> Result<Option<(Vec<u8>, [u8; 32])>, LogError> {
        let Some(sha) = self.published().await?.addresses.get(path).copied() else {
            return Ok(None);
        };
        Ok(self
            .log
            .blob_get(&hex::encode(sha))
            .await?
            .map(|zip| (zip, sha)))
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}
