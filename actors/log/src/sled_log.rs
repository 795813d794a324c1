//! The embedded backend: one sled tree in one directory.
//!
//! Keys (one tree, so a group commit is one atomic `apply_batch`):
//!
//! ```text
//! 'L' ctx pos(u64 BE)                  -> frame (chain hash ‖ record)
//! 'S' "kind.id" 0x00 first_version(BE) -> pos(BE) ‖ last_version(BE)
//! 'I' event id (16 bytes)              -> ctx ‖ pos(BE)
//! 'C' consumer name                    -> checkpoint
//! ```
//!
//! One writer thread owns all appends: it drains every waiting append (group commit),
//! checks versions and ids, chains and encodes the frames, applies them in one batch and
//! flushes once; only then does it publish the new durable heads and answer. Readers see
//! nothing beyond the durable head, so nothing read can vanish in a crash.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

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
/// Commits a subscription reads per step while catching up.
const READ_CHUNK: usize = 512;
/// The stream-version cache is dropped when it grows past this many streams.
const MAX_CACHED_STREAMS: usize = 1 << 20;

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
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

struct Request {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<CommitEvent>,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

fn log_key(ctx: Context, pos: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'L';
    k[1] = ctx.tag();
    k[2..].copy_from_slice(&pos.to_be_bytes());
    k
}

fn stream_prefix(stream: &StreamId) -> Vec<u8> {
    let s = stream.to_string();
    let mut k = Vec::with_capacity(s.len() + 10);
    k.push(b'S');
    k.extend_from_slice(s.as_bytes());
    k.push(0);
    k
}

fn id_key(id: &EventId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'I';
    k[1..].copy_from_slice(&id.0);
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

impl SledLog {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .map_err(|e| LogError::Backend(format!("cannot open {}: {e}", dir.display())))?;
        let tree = db.open_tree("log").map_err(backend)?;
        let chain = load_heads(&tree)?;
        let heads = Context::ALL
            .into_iter()
            .map(|c| (c, watch::channel(chain[&c].0).0))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: db.clone(),
            tree: tree.clone(),
            chain,
            versions: HashMap::new(),
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
            }
        });
        if inner.writer.is_none() {
            return Err(LogError::Backend(
                "cannot start the sled writer thread".into(),
            ));
        }
        Ok(Self { inner })
    }

    fn durable_head(&self, ctx: Context) -> u64 {
        *self.inner.heads[&ctx].borrow()
    }

    fn read_range(
        &self,
        ctx: Context,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedCommit>, LogError> {
        let head = self.durable_head(ctx);
        if from > head || max == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self
            .inner
            .tree
            .range(log_key(ctx, from.max(1))..=log_key(ctx, head))
            .take(max)
        {
            let (k, v) = item.map_err(backend)?;
            out.push(recorded(ctx, be_u64(&k[2..]), Bytes::from(v.to_vec()))?);
        }
        Ok(out)
    }
}

fn load_heads(tree: &sled::Tree) -> Result<HashMap<Context, (u64, ChainHash)>, LogError> {
    let mut heads = HashMap::new();
    for ctx in Context::ALL {
        let head = match tree.scan_prefix([b'L', ctx.tag()]).next_back() {
            None => (0, ChainHash::GENESIS),
            Some(item) => {
                let (k, v) = item.map_err(backend)?;
                let (hash, _) = Frame::split(&v).map_err(|e| LogError::Corrupt {
                    context: ctx,
                    position: be_u64(&k[2..]),
                    reason: e.to_string(),
                })?;
                (be_u64(&k[2..]), hash)
            }
        };
        heads.insert(ctx, head);
    }
    Ok(heads)
}

/// The single writer: owns the chain heads and a cache of stream versions.
struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    chain: HashMap<Context, (u64, ChainHash)>,
    versions: HashMap<StreamId, u64>,
}

/// Events of commits planned in the current group, not yet applied.
#[derive(Default)]
struct Pending {
    by_first_id: HashMap<EventId, (Appended, Vec<EventId>)>,
    ids: HashSet<EventId>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>, inner: std::sync::Weak<Inner>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let before = self.chain.clone();
            let mut batch = sled::Batch::default();
            let mut pending = Pending::default();
            let mut results = Vec::with_capacity(group.len());
            for req in group {
                let r = self.plan(&req, &mut batch, &mut pending);
                results.push((req.reply, r));
            }
            if self.chain != before {
                let written = self
                    .tree
                    .apply_batch(batch)
                    .and_then(|()| self.db.flush().map(|_| ()));
                if let Err(e) = written {
                    tracing::error!(error = %e, "sled group commit failed");
                    self.chain = load_heads(&self.tree).unwrap_or(before);
                    self.versions.clear();
                    for (_, r) in results.iter_mut() {
                        if r.is_ok() {
                            *r = Err(LogError::Backend(format!("group commit failed: {e}")));
                        }
                    }
                } else if let Some(inner) = inner.upgrade() {
                    for (ctx, (pos, _)) in &self.chain {
                        if before[ctx].0 != *pos {
                            inner.heads[ctx].send_replace(*pos);
                        }
                    }
                }
            }
            for (reply, r) in results {
                let _ = reply.send(r);
            }
        }
    }

    fn stream_version(&mut self, stream: &StreamId) -> Result<u64, LogError> {
        if let Some(v) = self.versions.get(stream) {
            return Ok(*v);
        }
        let v = match self.tree.scan_prefix(stream_prefix(stream)).next_back() {
            None => 0,
            Some(item) => be_u64(&item.map_err(backend)?.1[8..]),
        };
        if self.versions.len() >= MAX_CACHED_STREAMS {
            self.versions.clear();
        }
        self.versions.insert(stream.clone(), v);
        Ok(v)
    }

    /// An earlier commit of these events, if the append is a retry.
    fn find_duplicate(
        &self,
        req: &Request,
        pending: &Pending,
    ) -> Result<Option<Appended>, LogError> {
        let first = req.events[0].event_id;
        if let Some((appended, ids)) = pending.by_first_id.get(&first) {
            if ids.iter().eq(req.events.iter().map(|e| &e.event_id)) {
                return Ok(Some(Appended {
                    duplicate: true,
                    ..*appended
                }));
            }
        }
        for e in &req.events {
            if pending.ids.contains(&e.event_id) {
                return Err(LogError::IdReused {
                    event_id: e.event_id.to_string(),
                    context: req.stream.context(),
                    position: 0,
                });
            }
            let Some(loc) = self.tree.get(id_key(&e.event_id)).map_err(backend)? else {
                continue;
            };
            let ctx = Context::from_tag(loc[0]).ok_or_else(|| backend("bad id index entry"))?;
            let pos = be_u64(&loc[1..]);
            let frame = self
                .tree
                .get(log_key(ctx, pos))
                .map_err(backend)?
                .ok_or_else(|| LogError::Corrupt {
                    context: ctx,
                    position: pos,
                    reason: "indexed commit missing".into(),
                })?;
            let commit = Frame::decode(&frame)
                .map_err(|err| LogError::Corrupt {
                    context: ctx,
                    position: pos,
                    reason: err.to_string(),
                })?
                .1;
            if commit.stream == req.stream && same_ids(&commit, &req.events) {
                return Ok(Some(Appended {
                    position: pos,
                    first_version: commit.first_version,
                    last_version: commit.last_version(),
                    duplicate: true,
                }));
            }
            return Err(LogError::IdReused {
                event_id: e.event_id.to_string(),
                context: ctx,
                position: pos,
            });
        }
        Ok(None)
    }

    fn plan(
        &mut self,
        req: &Request,
        batch: &mut sled::Batch,
        pending: &mut Pending,
    ) -> Result<Appended, LogError> {
        if let Some(dup) = self.find_duplicate(req, pending)? {
            return Ok(dup);
        }
        let version = self.stream_version(&req.stream)?;
        if let ExpectedVersion::Exact(v) = req.expected {
            if v != version {
                return Err(LogError::Conflict {
                    stream: req.stream.clone(),
                    expected: req.expected,
                    actual: version,
                });
            }
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
        batch.insert(&log_key(ctx, commit.position), frame);
        let mut skey = stream_prefix(&req.stream);
        skey.extend_from_slice(&commit.first_version.to_be_bytes());
        let mut sval = commit.position.to_be_bytes().to_vec();
        sval.extend_from_slice(&appended.last_version.to_be_bytes());
        batch.insert(skey, sval);
        let mut loc = [0u8; 9];
        loc[0] = ctx.tag();
        loc[1..].copy_from_slice(&commit.position.to_be_bytes());
        for e in &req.events {
            batch.insert(&id_key(&e.event_id), &loc);
            pending.ids.insert(e.event_id);
        }
        pending.by_first_id.insert(
            req.events[0].event_id,
            (appended, req.events.iter().map(|e| e.event_id).collect()),
        );
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
        let head = self.durable_head(ctx);
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(stream_prefix(stream)) {
            let (_, v) = item.map_err(backend)?;
            let pos = be_u64(&v);
            if pos > head {
                break;
            }
            let frame = self
                .inner
                .tree
                .get(log_key(ctx, pos))
                .map_err(backend)?
                .ok_or_else(|| LogError::Corrupt {
                    context: ctx,
                    position: pos,
                    reason: "indexed commit missing".into(),
                })?;
            out.push(recorded(ctx, pos, Bytes::from(frame.to_vec()))?);
        }
        Ok(out)
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
        let state = (
            self.clone(),
            rx,
            from.max(1),
            std::collections::VecDeque::new(),
        );
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
        self.inner.db.flush_async().await.map_err(backend)?;
        Ok(())
    }
}
