//! The embedded backend: one sled tree in one directory.
//!
//! Keys:
//!
//! ```text
//! 'G' ctx first_pos(u64 BE) -> segment: ( len(u32 LE) ‖ frame )*, positions first_pos..
//! 'C' consumer name         -> checkpoint
//! ```
//!
//! One writer thread owns all appends. It drains every waiting append (group commit),
//! checks versions and ids, chains and encodes the frames, packs each context's frames into
//! segments, applies them in one atomic batch and flushes once; only then does it publish
//! the new durable heads, update the indexes and answer. Readers see nothing beyond the
//! durable head, so nothing read can vanish in a crash.
//!
//! The per-stream index lives in memory and is rebuilt from the segments' commit heads at
//! open (no payload is decoded). Per-commit index entries on disk were measured: sled
//! pays ~4x for random-key inserts, which capped appends at a third of raw sled
//! (docs/adr/0002-event-log-storage.md).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use hotaru_events::{ChainHash, Commit, CommitEvent, Context, EventId, Frame, NewEvent, StreamId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    Appended, Checkpoint, EventLog, ExpectedVersion, LogError, RecordedCommit, Subscription,
    check_consumer_name, decode_checkpoint, encode_checkpoint, recorded, same_ids,
};

/// Most appends one group commit takes.
const MAX_GROUP: usize = 8192;
/// A segment holds at most this many commits ...
const SEGMENT_COMMITS: usize = 1024;
/// ... and about this many bytes.
const SEGMENT_BYTES: usize = 1 << 20;
/// Commits a subscription reads per step while catching up.
const READ_CHUNK: usize = 512;
/// `Any` appends are de-duplicated against this many most recent commits (all contexts
/// together; JetStream's equivalent is its duplicate window). Appends with an expected
/// version are de-duplicated exactly, at any age.
pub const DEDUP_WINDOW: usize = 250_000;

/// The embedded event log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SledLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Taken on drop to stop the writer, which is then joined so the directory is free
    /// for the next open.
    tx: Option<mpsc::UnboundedSender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The durable head position of each context.
    heads: HashMap<Context, watch::Sender<u64>>,
    /// Durable commits of every stream, for `read_stream`.
    streams: Arc<RwLock<StreamIndex>>,
    /// Which appends this log takes (every context is still readable, so that the audit
    /// sees device frames that should not be there).
    scope: crate::LogScope,
    /// The attempt limit's per-source records, in memory only (`crate::sources`).
    sources: std::sync::Mutex<crate::sources::SourceTable>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Each stream's commits: (position, last version), oldest first.
type StreamIndex = HashMap<StreamId, Vec<(u64, u64)>>;

struct Request {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<CommitEvent>,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

fn segment_key(ctx: Context, first: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'G';
    k[1] = ctx.tag();
    k[2..].copy_from_slice(&first.to_be_bytes());
    k
}

fn checkpoint_key(name: &str) -> Vec<u8> {
    let mut k = vec![b'C'];
    k.extend_from_slice(name.as_bytes());
    k
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The frames of a segment, in order. A truncated tail ends the iteration.
fn frames(segment: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = segment;
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let frame = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(frame)
    })
}

/// Opens the database, waiting up to a second while its lock is held: the last handle of
/// a log closed a moment ago in this process may still be letting go of it (sled's
/// background threads release the directory just after the handle is dropped). Another
/// process holding it gets the same error after that second.
fn open_when_free(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match config.open() {
            // sled 0.34 words it so, wrapping the flock's WouldBlock in an Other.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The frame of the commit at `pos`: one lookup of the segment that begins at or before
/// it (segments are keyed by their first position), then a walk of its length prefixes.
fn frame_at(tree: &sled::Tree, ctx: Context, pos: u64) -> Result<Vec<u8>, LogError> {
    let missing = || LogError::Corrupt {
        context: ctx,
        position: pos,
        reason: "commit missing".into(),
    };
    let (k, seg) = tree
        .range(segment_key(ctx, 0)..=segment_key(ctx, pos))
        .next_back()
        .ok_or_else(missing)?
        .map_err(backend)?;
    let first = be_u64(&k[2..]);
    frames(&seg)
        .nth((pos - first) as usize)
        .map(<[u8]>::to_vec)
        .ok_or_else(missing)
}

/// The recent commits `Any` appends are de-duplicated against: first event id ->
/// (context, position).
#[derive(Default)]
struct RecentIds {
    map: HashMap<EventId, (Context, u64)>,
    order: VecDeque<EventId>,
}

impl RecentIds {
    fn insert(&mut self, id: EventId, at: (Context, u64)) {
        if self.map.insert(id, at).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

impl SledLog {
    /// The tree of a side-store namespace (see [`crate::SideStore`]).
    pub(crate) fn side_tree(&self, ns: &str) -> Result<sled::Tree, LogError> {
        self.inner
            .db
            .open_tree(format!("side:{ns}"))
            .map_err(|e| LogError::Backend(e.to_string()))
    }

    /// Opens (or creates) a server's log in `dir`, rebuilding the in-memory indexes.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        Self::open_scoped(dir, crate::LogScope::Server)
    }

    /// Opens (or creates) a log of `scope` in `dir` (a device's store: `LogScope::Device`).
    pub fn open_scoped(dir: &Path, scope: crate::LogScope) -> Result<Self, LogError> {
        let mut config = sled::Config::new().path(dir).flush_every_ms(None);
        if scope == crate::LogScope::Device {
            // A phone's log is small; a simulated fleet's is large but read once at the
            // end: sled's default 1 GiB page cache would only hold memory.
            config = config.cache_capacity(128 * 1024 * 1024);
        }
        let db = open_when_free(&config)
            .map_err(|e| LogError::Backend(format!("cannot open {}: {e}", dir.display())))?;
        let tree = db.open_tree("log").map_err(backend)?;
        let mut chain = HashMap::new();
        let mut index = StreamIndex::new();
        let mut recent = RecentIds::default();
        for ctx in Context::ALL {
            chain.insert(ctx, rebuild(&tree, ctx, &mut index, &mut recent)?);
        }
        let heads = Context::ALL
            .into_iter()
            .map(|c| (c, watch::channel(chain[&c].0).0))
            .collect();
        let versions = index
            .iter()
            .map(|(s, c)| (s.clone(), c.last().map_or(0, |l| l.1)))
            .collect();
        let streams = Arc::new(RwLock::new(index));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: db.clone(),
            tree: tree.clone(),
            chain,
            versions,
            recent,
            streams: streams.clone(),
        };
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let handle = std::thread::Builder::new()
                .name("hotaru-sled-writer".into())
                .spawn(move || writer.run(rx, weak));
            Inner {
                db,
                tree,
                tx: Some(tx),
                writer: handle.ok(),
                heads,
                streams,
                scope,
                sources: std::sync::Mutex::default(),
            }
        });
        if inner.writer.is_none() {
            return Err(LogError::Backend(
                "cannot start the sled writer thread".into(),
            ));
        }
        Ok(Self { inner })
    }

    pub(crate) fn sources(&self) -> std::sync::MutexGuard<'_, crate::sources::SourceTable> {
        self.inner.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn durable_head(&self, ctx: Context) -> u64 {
        *self.inner.heads[&ctx].borrow()
    }

    /// Up to `max` commits of `ctx` from `from`, never beyond the durable head.
    fn read_range(
        &self,
        ctx: Context,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedCommit>, LogError> {
        let head = self.durable_head(ctx);
        let from = from.max(1);
        let mut out = Vec::new();
        if from > head || max == 0 {
            return Ok(out);
        }
        // The segment holding `from`, then the ones after it.
        let start = match self
            .inner
            .tree
            .range(segment_key(ctx, 0)..=segment_key(ctx, from))
            .next_back()
        {
            Some(item) => be_u64(&item.map_err(backend)?.0[2..]),
            None => from,
        };
        'segments: for item in self
            .inner
            .tree
            .range(segment_key(ctx, start)..=segment_key(ctx, head))
        {
            let (k, seg) = item.map_err(backend)?;
            let first = be_u64(&k[2..]);
            for (i, frame) in frames(&seg).enumerate() {
                let pos = first + i as u64;
                if pos < from {
                    continue;
                }
                if pos > head || out.len() >= max {
                    break 'segments;
                }
                out.push(recorded(ctx, pos, Bytes::copy_from_slice(frame))?);
            }
        }
        Ok(out)
    }

    /// The commit at `pos`.
    fn read_one(&self, ctx: Context, pos: u64) -> Result<RecordedCommit, LogError> {
        if pos == 0 || pos > self.durable_head(ctx) {
            return Err(LogError::Corrupt {
                context: ctx,
                position: pos,
                reason: "indexed commit missing".into(),
            });
        }
        let frame = frame_at(&self.inner.tree, ctx, pos)?;
        recorded(ctx, pos, Bytes::from(frame))
    }
}

/// Rebuilds the stream index and recent ids of `ctx` from its segments; returns the head.
fn rebuild(
    tree: &sled::Tree,
    ctx: Context,
    index: &mut StreamIndex,
    recent: &mut RecentIds,
) -> Result<(u64, ChainHash), LogError> {
    let mut head = (0, ChainHash::GENESIS);
    for item in tree.scan_prefix([b'G', ctx.tag()]) {
        let (k, seg) = item.map_err(backend)?;
        let first = be_u64(&k[2..]);
        for (i, frame) in frames(&seg).enumerate() {
            let pos = first + i as u64;
            let (hash, record) = Frame::split(frame).map_err(|e| LogError::Corrupt {
                context: ctx,
                position: pos,
                reason: e.to_string(),
            })?;
            head = (pos, hash);
            // A damaged record is left for `hotaru log verify` to report; the log still
            // opens so that it can.
            match Commit::decode_head(record) {
                Ok(h) => {
                    index
                        .entry(h.stream.clone())
                        .or_default()
                        .push((pos, h.last_version()));
                    recent.insert(h.first_event_id, (ctx, pos));
                }
                Err(e) => {
                    tracing::warn!(context = %ctx, position = pos, error = %e, "undecodable commit")
                }
            }
        }
    }
    Ok(head)
}

/// The single writer: owns the chain heads, the stream versions and the recent ids.
struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    chain: HashMap<Context, (u64, ChainHash)>,
    versions: HashMap<StreamId, u64>,
    recent: RecentIds,
    streams: Arc<RwLock<StreamIndex>>,
}

/// Frames planned in the current group, per context, not yet written.
#[derive(Default)]
struct Group {
    frames: HashMap<Context, Vec<(u64, Vec<u8>)>>,
    /// The commits planned, for the indexes once they are durable.
    planned: Vec<(StreamId, EventId, Context, u64, u64)>,
    /// First event ids planned in this group, with their events' ids.
    ids: HashMap<EventId, (Appended, Vec<EventId>)>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>, inner: std::sync::Weak<Inner>) {
        while let Some(first) = rx.blocking_recv() {
            let mut requests = vec![first];
            while requests.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => requests.push(r),
                    Err(_) => break,
                }
            }
            let before = self.chain.clone();
            let mut group = Group::default();
            let mut results = Vec::with_capacity(requests.len());
            for req in requests {
                let r = self.plan(&req, &mut group);
                results.push((req.reply, r));
            }
            if !group.planned.is_empty() {
                match self.write(&group) {
                    Err(e) => {
                        tracing::error!(error = %e, "sled group commit failed");
                        // Nothing of this group is known to be durable: forget it.
                        self.chain = before;
                        for (stream, ..) in &group.planned {
                            self.versions.remove(stream);
                        }
                        let streams = self.streams.read().expect("index lock");
                        for (stream, ..) in &group.planned {
                            if let Some(v) = streams.get(stream).and_then(|c| c.last()) {
                                self.versions.insert(stream.clone(), v.1);
                            }
                        }
                        drop(streams);
                        for (_, r) in results.iter_mut() {
                            if matches!(r, Ok(a) if !a.duplicate) {
                                *r = Err(LogError::Backend(format!("group commit failed: {e}")));
                            }
                        }
                    }
                    Ok(()) => {
                        // Heads first, then the stream index: a reader that finds a
                        // position in the index must find the commit below the head
                        // (the other order let a concurrent read_stream see
                        // "indexed commit missing").
                        if let Some(inner) = inner.upgrade() {
                            for (ctx, (pos, _)) in &self.chain {
                                if before[ctx].0 != *pos {
                                    inner.heads[ctx].send_replace(*pos);
                                }
                            }
                        }
                        let mut streams = self.streams.write().expect("index lock");
                        for (stream, id, ctx, pos, last_version) in &group.planned {
                            streams
                                .entry(stream.clone())
                                .or_default()
                                .push((*pos, *last_version));
                            self.recent.insert(*id, (*ctx, *pos));
                        }
                    }
                }
            }
            for (reply, r) in results {
                let _ = reply.send(r);
            }
        }
    }

    /// Packs the group's frames into segments, applies them atomically and flushes.
    fn write(&self, group: &Group) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for (ctx, frames) in &group.frames {
            let mut segment = Vec::new();
            let mut first = 0;
            let mut count = 0;
            for (pos, frame) in frames {
                if count == 0 {
                    first = *pos;
                }
                segment.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                segment.extend_from_slice(frame);
                count += 1;
                if count >= SEGMENT_COMMITS || segment.len() >= SEGMENT_BYTES {
                    batch.insert(&segment_key(*ctx, first), std::mem::take(&mut segment));
                    count = 0;
                }
            }
            if count > 0 {
                batch.insert(&segment_key(*ctx, first), segment);
            }
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// An earlier commit of these events, if the append is a retry.
    fn find_duplicate(&self, req: &Request, group: &Group) -> Result<Option<Appended>, LogError> {
        let first = req.events[0].event_id;
        if let Some((appended, ids)) = group.ids.get(&first) {
            return if ids.iter().eq(req.events.iter().map(|e| &e.event_id)) {
                Ok(Some(Appended {
                    duplicate: true,
                    ..*appended
                }))
            } else {
                Err(LogError::IdReused {
                    event_id: first.to_string(),
                    context: req.stream.context(),
                    position: appended.position,
                })
            };
        }
        let Some(&(ctx, pos)) = self.recent.map.get(&first) else {
            return Ok(None);
        };
        self.same_commit(req, ctx, pos).map(Some)
    }

    /// The commit at `pos` if it holds exactly the request's events, else `IdReused`.
    fn same_commit(&self, req: &Request, ctx: Context, pos: u64) -> Result<Appended, LogError> {
        let frame = frame_at(&self.tree, ctx, pos)?;
        let commit = Frame::decode(&frame)
            .map_err(|e| LogError::Corrupt {
                context: ctx,
                position: pos,
                reason: e.to_string(),
            })?
            .1;
        if commit.stream == req.stream && same_ids(&commit, &req.events) {
            Ok(Appended {
                position: pos,
                first_version: commit.first_version,
                last_version: commit.last_version(),
                duplicate: true,
            })
        } else {
            Err(LogError::IdReused {
                event_id: req.events[0].event_id.to_string(),
                context: ctx,
                position: pos,
            })
        }
    }

    /// After a version conflict: is the append a retry of a commit already in the stream?
    fn find_in_stream(&self, req: &Request) -> Result<Option<Appended>, LogError> {
        let ctx = req.stream.context();
        let positions: Vec<u64> = self
            .streams
            .read()
            .expect("index lock")
            .get(&req.stream)
            .map(|c| c.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        for pos in positions {
            let frame = frame_at(&self.tree, ctx, pos)?;
            let head = Commit::decode_head(&frame[32..]).map_err(|e| LogError::Corrupt {
                context: ctx,
                position: pos,
                reason: e.to_string(),
            })?;
            if head.first_event_id == req.events[0].event_id {
                return self.same_commit(req, ctx, pos).map(Some);
            }
        }
        Ok(None)
    }

    fn plan(&mut self, req: &Request, group: &mut Group) -> Result<Appended, LogError> {
        if let Some(dup) = self.find_duplicate(req, group)? {
            return Ok(dup);
        }
        let version = self.versions.get(&req.stream).copied().unwrap_or(0);
        if let ExpectedVersion::Exact(v) = req.expected
            && v != version
        {
            return match self.find_in_stream(req)? {
                Some(dup) => Ok(dup),
                None => Err(LogError::Conflict {
                    stream: req.stream.clone(),
                    expected: req.expected,
                    actual: version,
                }),
            };
        }
        let ctx = req.stream.context();
        let (head, prev) = self.chain[&ctx];
        let commit = Commit {
            context: ctx,
            position: head + 1,
            stream: req.stream.clone(),
            first_version: version + 1,
            events: req.events.clone(),
        };
        let (hash, frame) = Frame::encode(&prev, &commit)?;
        let appended = Appended {
            position: commit.position,
            first_version: commit.first_version,
            last_version: commit.last_version(),
            duplicate: false,
        };
        group
            .frames
            .entry(ctx)
            .or_default()
            .push((commit.position, frame));
        let first_id = req.events[0].event_id;
        group.ids.insert(
            first_id,
            (appended, req.events.iter().map(|e| e.event_id).collect()),
        );
        group.planned.push((
            req.stream.clone(),
            first_id,
            ctx,
            commit.position,
            appended.last_version,
        ));
        self.chain.insert(ctx, (commit.position, hash));
        self.versions
            .insert(req.stream.clone(), appended.last_version);
        Ok(appended)
    }
}

impl EventLog for SledLog {
    async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, LogError> {
        if events.is_empty() {
            return Err(hotaru_events::EncodeError::Empty.into());
        }
        self.inner.scope.admit(&stream, &events)?;
        let events = events
            .iter()
            .map(CommitEvent::plain)
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, rx) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or(LogError::Closed)?;
        tx.send(Request {
            stream,
            expected,
            events,
            reply,
        })
        .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedCommit>, LogError> {
        let ctx = stream.context();
        let positions: Vec<u64> = self
            .inner
            .streams
            .read()
            .expect("index lock")
            .get(stream)
            .map(|c| c.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        positions
            .into_iter()
            .map(|pos| self.read_one(ctx, pos))
            .collect()
    }

    async fn last_commit(&self, stream: &StreamId) -> Result<Option<RecordedCommit>, LogError> {
        let last = self
            .inner
            .streams
            .read()
            .expect("index lock")
            .get(stream)
            .and_then(|c| c.last().map(|p| p.0));
        last.map(|pos| self.read_one(stream.context(), pos))
            .transpose()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError> {
        // The index holds each commit's last version beside its position: no read.
        Ok(self
            .inner
            .streams
            .read()
            .expect("index lock")
            .get(stream)
            .and_then(|c| c.last().map(|p| p.1))
            .unwrap_or(0))
    }

    async fn read_all(
        &self,
        context: Context,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedCommit>, LogError> {
        self.read_range(context, from, max)
    }

    async fn head(&self, context: Context) -> Result<u64, LogError> {
        Ok(self.durable_head(context))
    }

    async fn subscribe(
        &self,
        context: Context,
        from: u64,
        _durable: Option<&str>,
    ) -> Result<Subscription, LogError> {
        // Subscribe to the head before the first read: a commit made durable between the
        // read and the wait still wakes us, so there is no gap at the seam.
        let rx = self.inner.heads[&context].subscribe();
        let state = (self.clone(), rx, from.max(1), VecDeque::new());
        let stream =
            futures::stream::unfold(state, move |(log, mut rx, mut next, mut buf)| async move {
                loop {
                    if let Some(c) = buf.pop_front() {
                        return Some((Ok(c), (log, rx, next, buf)));
                    }
                    let head = *rx.borrow_and_update();
                    if head >= next {
                        match log.read_range(context, next, READ_CHUNK) {
                            Ok(commits) => {
                                next += commits.len() as u64;
                                buf.extend(commits);
                            }
                            Err(e) => return Some((Err(e), (log, rx, next, buf))),
                        }
                        continue;
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            });
        Ok(stream.boxed())
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, LogError> {
        check_consumer_name(consumer)?;
        match self
            .inner
            .tree
            .get(checkpoint_key(consumer))
            .map_err(backend)?
        {
            None => Ok(None),
            Some(v) => decode_checkpoint(&v).map(Some),
        }
    }

    async fn save_checkpoint(
        &self,
        consumer: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), LogError> {
        check_consumer_name(consumer)?;
        self.inner
            .tree
            .insert(checkpoint_key(consumer), encode_checkpoint(checkpoint))
            .map_err(backend)?;
        crate::side::durable(&self.inner.db).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log reopened just after its last handle is dropped (a device restarted in a test,
    /// a node's store reopened) waits for the lock instead of failing; one still open is
    /// refused with the lock in the message.
    #[test]
    fn a_log_reopened_as_its_last_handle_goes_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledLog::open(dir.path()).unwrap();
        let closing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(first);
        });
        let second = SledLog::open(dir.path()).expect("opened once the first let go");
        closing.join().unwrap();
        let held = SledLog::open(dir.path()).err().expect("refused while held");
        assert!(held.to_string().contains("lock"), "{held}");
        drop(second);
    }

    #[test]
    fn segments_split_into_their_frames_and_stop_at_a_torn_tail() {
        let mut seg = Vec::new();
        for f in [&b"abc"[..], b"", b"defg"] {
            seg.extend_from_slice(&(f.len() as u32).to_le_bytes());
            seg.extend_from_slice(f);
        }
        assert_eq!(
            frames(&seg).collect::<Vec<_>>(),
            vec![&b"abc"[..], b"", b"defg"]
        );
        seg.truncate(seg.len() - 1);
        assert_eq!(frames(&seg).count(), 2);
    }
}
