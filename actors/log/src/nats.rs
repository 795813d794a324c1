//! The NATS JetStream backend.
//!
//! - One JetStream stream per [`Context`] (`HOTARU_REGISTRATION`, ...), file storage,
//!   subjects `hotaru.<context>.<kind>.<id>`: one subject per aggregate stream, so a
//!   stream reads back through one filter subject and its version is the last message on
//!   its subject. The event types travel inside the frame.
//! - Optimistic concurrency: the writer checks the expected version against the stream's
//!   version as the stream's leader has it (the head from the stream's info, the version
//!   from `STREAM.MSG.GET`, never from a direct get, which a lagging follower of a
//!   replicated stream may answer), and every publish pins the context's whole history with
//!   `Nats-Expected-Last-Sequence` (plus `Nats-Expected-Last-Msg-Id` when pipelined). That
//!   is strictly stronger than `Nats-Expected-Last-Subject-Sequence`: no write to *any*
//!   subject can slip in between the check and the publish. The per-subject header was
//!   measured, added nothing and cost ~5% of throughput on 2.9, so it is not sent
//!   (docs/adr/0002-event-log-storage.md).
//! - One commit = one message, so an append is atomic (JetStream before 2.12 has no
//!   multi-message atomic publish). Message id = the commit's first event id (JetStream
//!   de-duplication), and `Nats-Expected-Last-Sequence` = the chain head the frame was
//!   hashed against. A pipelined frame is hashed against our own frame before it, which
//!   the server may yet refuse; such a publish also carries `Nats-Expected-Last-Msg-Id` =
//!   that frame's message id, so it lands only on the very frame it was chained to. Two
//!   writers can therefore never fork a context's chain (the two-writer test shows it).
//! - One writer task per process pipelines appends as they arrive (at most [`WINDOW`]
//!   unacknowledged, below the ~5,000 that stall the client; one at a time on replicated
//!   streams, where nats-server 2.15 fails a stream on a pipelined frame's msg-id check:
//!   `Writer::window`) and answers each append
//!   only when its publish ack arrives. When another writer got in first, the
//!   server rejects the stale publishes; the writer re-reads the head and tries again.
//! - Checkpoints: a stream `HOTARU_CHECKPOINTS` with one message per consumer
//!   (`max_messages_per_subject = 1`); no KV API, which cannot create buckets on 2.9.
//! - Consumers have one filter subject each (2.9 silently ignores several).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use hotaru_events::{ChainHash, Commit, CommitEvent, Context, Frame, NewEvent, StreamId};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Appended, Checkpoint, EventLog, ExpectedVersion, LogError, RecordedCommit, Subscription,
    check_consumer_name, decode_checkpoint, encode_checkpoint, recorded, same_ids,
};

/// Most publishes awaiting their ack, well below the ~5,000 that stall the client.
const WINDOW: usize = 4096;
/// How often one append is retried after losing a race with another writer.
/// (Two writers at full speed on one context can make a commit lose many races in a row
/// on a loaded machine; after this many the caller gets `Contention` and may retry.)
const MAX_ATTEMPTS: u32 = 64;
/// How often (50 ms apart) a publish answered "no stream found" is tried again: a stream
/// just created can take a moment before it accepts publishes.
const STREAM_NOT_READY_RETRIES: u32 = 20;
/// A read that sees no message for this long gives up.
const READ_IDLE: Duration = Duration::from_secs(30);
const CHECKPOINT_STREAM: &str = "HOTARU_CHECKPOINTS";
const CHECKPOINT_SUBJECT: &str = "hotaru_checkpoint";

/// How to reach JetStream and how to lay out the streams.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222`, or several of a cluster separated by commas.
    pub url: String,
    /// Replicas of every stream: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// JetStream's de-duplication window for message ids (see `docs/adr/0002-event-log-storage.md`).
    pub duplicate_window: Duration,
    /// The server's log or a fleet's: which context streams are created, read and
    /// appended to. A server log never touches the device stream.
    pub scope: crate::LogScope,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            scope: crate::LogScope::Server,
        }
    }

    /// A simulated fleet's device log on the same servers (its own streams).
    pub fn devices(mut self) -> Self {
        self.scope = crate::LogScope::Device;
        self
    }
}

/// The JetStream event log. Cheap to clone; clones share one connection and one writer.
#[derive(Clone)]
pub struct NatsLog {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    streams: HashMap<Context, stream::Stream>,
    checkpoints: stream::Stream,
    replicas: usize,
    scope: crate::LogScope,
    tx: mpsc::UnboundedSender<Request>,
    /// The attempt limit's per-source records (`crate::sources`), created on first use.
    sources: tokio::sync::OnceCell<stream::Stream>,
    /// The side stores' streams by namespace, created on first use.
    side_streams: std::sync::Mutex<HashMap<String, stream::Stream>>,
}

struct Request {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<CommitEvent>,
    reply: oneshot::Sender<Result<Appended, LogError>>,
    attempts: u32,
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

/// The JetStream stream name of a context.
pub fn stream_name(ctx: Context) -> String {
    format!("HOTARU_{}", ctx.name().to_uppercase())
}

/// Commits of one stream read by direct gets before a consumer takes over.
const DIRECT_READS: usize = 8;

fn read_consumer_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("hotaru-read-{}-{t}-{n}", std::process::id())
}

fn subject(stream: &StreamId) -> String {
    format!(
        "hotaru.{}.{}.{}",
        stream.context().name(),
        stream.kind().name(),
        stream.id()
    )
}

/// How long a node keeps trying to create (or find) its streams at start while the
/// cluster is still forming.
const STREAM_CREATE_PATIENCE: Duration = Duration::from_secs(20);

/// Gets or creates a stream, again for a while when the cluster cannot place it yet (a
/// cluster that has elected its metadata leader but not yet heard from every server
/// answers "no suitable peers for placement"; a request may time out while it elects).
pub(crate) async fn create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, LogError> {
    let name = config.name.clone();
    let deadline = tokio::time::Instant::now() + STREAM_CREATE_PATIENCE;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                let text = e.to_string();
                // Two nodes creating one stream at once: on 2.9 the second create can be
                // told the subjects overlap with the stream the first has just made; the
                // next get finds that stream.
                let transient = text.contains("no suitable peers")
                    || text.contains("subjects overlap")
                    || text.contains("timed out")
                    || text.contains("insufficient resources")
                    || text.contains("no responders");
                if !transient || tokio::time::Instant::now() >= deadline {
                    return Err(LogError::Backend(format!(
                        "cannot create stream {name}: {e}"
                    )));
                }
                tracing::info!(stream = %name, error = %e, "the cluster cannot place the stream yet; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The servers of `urls`: one URL or several separated by commas (the members of a
/// cluster; the client moves to another when its server goes away, and learns the rest of
/// the cluster from the one it reaches).
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, LogError> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| LogError::Backend(format!("not a NATS server URL: {u:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(LogError::Backend("no NATS server URL given".into()));
    }
    Ok(servers)
}

impl NatsLog {
    /// Connects (to any of the comma-separated URLs) and creates the streams that do not
    /// exist yet.
    pub async fn connect(config: &NatsConfig) -> Result<Self, LogError> {
        let servers = server_addrs(&config.url)?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(servers.as_slice())
            .await
            .map_err(|e| LogError::Backend(format!("cannot connect to {}: {e}", config.url)))?;
        let js = jetstream::new(client);
        let mut streams = HashMap::new();
        for &ctx in config.scope.contexts() {
            let s = create_stream(
                &js,
                stream::Config {
                    name: stream_name(ctx),
                    subjects: vec![format!("hotaru.{}.>", ctx.name())],
                    storage: stream::StorageType::File,
                    num_replicas: config.replicas,
                    duplicate_window: config.duplicate_window,
                    deny_delete: true,
                    deny_purge: true,
                    allow_direct: true,
                    ..Default::default()
                },
            )
            .await?;
            streams.insert(ctx, s);
        }
        let checkpoints = create_stream(
            &js,
            stream::Config {
                name: CHECKPOINT_STREAM.into(),
                subjects: vec![format!("{CHECKPOINT_SUBJECT}.>")],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_messages_per_subject: 1,
                ..Default::default()
            },
        )
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            js: js.clone(),
            streams: streams.clone(),
            heads: HashMap::new(),
            versions: HashMap::new(),
            window: Writer::window(config.replicas),
        };
        tokio::spawn(writer.run(rx));
        Ok(Self {
            inner: Arc::new(Inner {
                js,
                streams,
                checkpoints,
                replicas: config.replicas,
                scope: config.scope,
                tx,
                sources: tokio::sync::OnceCell::new(),
                side_streams: Default::default(),
            }),
        })
    }

    pub(crate) fn sources_cell(&self) -> &tokio::sync::OnceCell<stream::Stream> {
        &self.inner.sources
    }

    pub(crate) fn side_streams(&self) -> &std::sync::Mutex<HashMap<String, stream::Stream>> {
        &self.inner.side_streams
    }

    /// The JetStream context, for tools and benchmarks that publish raw.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Replicas of the streams this log creates.
    pub fn replicas(&self) -> usize {
        self.inner.replicas
    }

    /// On replicated streams a stream's reads go to its leader (`STREAM.MSG.GET`): a direct
    /// get may be answered by a follower that has not yet stored what this node has just
    /// written (a case created, then "not found" a moment later on the same node; a number
    /// just issued refused as wrong, COCOA 1.1.2's bug). With one replica the only server
    /// answers either way, and direct gets are cheaper for it.
    fn leader_reads(&self) -> bool {
        self.inner.replicas > 1
    }

    /// The stream of `ctx`, when this log's scope has it.
    fn stream_of(&self, ctx: Context) -> Result<&stream::Stream, LogError> {
        self.inner.streams.get(&ctx).ok_or_else(|| {
            LogError::OutOfScope(format!(
                "a {} log has no {ctx} stream",
                self.inner.scope.name()
            ))
        })
    }

    async fn last_sequence(&self, ctx: Context) -> Result<u64, LogError> {
        // A context outside the scope has no stream here: it is empty in this log.
        let Some(s) = self.inner.streams.get(&ctx) else {
            return Ok(0);
        };
        let mut s = s.clone();
        Ok(s.info().await.map_err(backend)?.state.last_sequence)
    }

    /// Reads messages of `ctx` from `from` with an ordered consumer filtered on
    /// `filter` until sequence `end` (inclusive) or nothing is pending.
    async fn read_range(
        &self,
        ctx: Context,
        filter: Option<String>,
        from: u64,
        end: u64,
        max: usize,
    ) -> Result<Vec<RecordedCommit>, LogError> {
        let mut out = Vec::new();
        if from > end || max == 0 {
            return Ok(out);
        }
        // A named, ephemeral consumer, deleted as soon as the read is done: a consumer
        // left behind would make the server track every later publish for it.
        let name = read_consumer_name();
        let stream = self.stream_of(ctx)?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                name: Some(name.clone()),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                filter_subject: filter.unwrap_or_default(),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let result = async {
            let mut messages = consumer.messages().await.map_err(backend)?;
            while out.len() < max {
                let msg = match tokio::time::timeout(READ_IDLE, messages.next()).await {
                    Err(_) => return Err(LogError::Backend(format!("read of {ctx} stalled"))),
                    Ok(None) => break,
                    Ok(Some(m)) => m.map_err(backend)?,
                };
                let info = msg.info().map_err(backend)?;
                let (seq, pending) = (info.stream_sequence, info.pending);
                if seq > end {
                    break;
                }
                out.push(recorded(ctx, seq, msg.payload.clone())?);
                if seq >= end || pending == 0 {
                    break;
                }
            }
            Ok(())
        }
        .await;
        let _ = stream.delete_consumer(&name).await;
        result?;
        Ok(out)
    }
}

/// The writer task: owns the chain heads it believes in and a cache of stream versions;
/// both are dropped for a context as soon as the server disagrees.
struct Writer {
    js: jetstream::Context,
    streams: HashMap<Context, stream::Stream>,
    heads: HashMap<Context, Head>,
    /// Stream versions, valid while the head they were read or written under holds.
    versions: HashMap<StreamId, u64>,
    /// Unacknowledged publishes at most: [`WINDOW`] on one replica, 1 on several (see
    /// [`Writer::window`]).
    window: usize,
}

/// The chain head a writer appends to.
#[derive(Clone)]
struct Head {
    position: u64,
    hash: ChainHash,
    /// The message id of the head when it is our own frame whose ack has not come back
    /// (`None` when the head was read from the server).
    tentative_msg_id: Option<String>,
}

/// A frame ready to publish.
struct Planned {
    subject: String,
    frame: Vec<u8>,
    expect_seq: u64,
    expect_msg_id: Option<String>,
    appended: Appended,
    hash: ChainHash,
}

enum Plan {
    Done(Result<Appended, LogError>),
    Publish(Planned),
}

type AckFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Request,
                    Appended,
                    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
                ),
            > + Send,
    >,
>;

impl Writer {
    /// How many publishes may await their ack. On a replicated stream a pipelined frame's
    /// `Nats-Expected-Last-Msg-Id` is checked again when the replicas apply it, and
    /// nats-server 2.15 treats a mismatch there as a critical write error of the whole
    /// stream (`last msgid mismatch`; its API then timed out for seconds: seen on a
    /// three-server cluster at R3 by the concurrent-redemption test). So with several
    /// replicas a frame is published only once the one before it is acknowledged, with
    /// `Nats-Expected-Last-Sequence` alone; one replica pipelines.
    fn window(replicas: usize) -> usize {
        if replicas > 1 { 1 } else { WINDOW }
    }

    /// Publishes appends as they arrive, up to [`WINDOW`] unacknowledged, and settles
    /// each ack as it comes back (in publish order).
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut inflight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        let mut retry: VecDeque<Request> = VecDeque::new();
        let mut open = true;
        loop {
            if inflight.len() < self.window
                && let Some(req) = retry.pop_front()
            {
                if req.attempts >= 2 {
                    // Racing writers: back off a little, with jitter so that two writers
                    // do not keep colliding in step.
                    let ms = u64::from(req.attempts.min(16));
                    let jitter = rand::random::<u64>() % (ms + 1);
                    tokio::time::sleep(Duration::from_millis(ms + jitter)).await;
                }
                self.publish(req, &mut inflight).await;
                continue;
            }
            tokio::select! {
                biased;
                Some((req, appended, ack)) = inflight.next(), if !inflight.is_empty() => {
                    if let Some(again) = self.settle(req, appended, ack).await {
                        retry.push_back(again);
                    }
                }
                msg = rx.recv(), if open && inflight.len() < self.window => match msg {
                    Some(req) => self.publish(req, &mut inflight).await,
                    None => open = false,
                },
                else => break,
            }
        }
    }

    fn forget(&mut self, ctx: Context) {
        self.heads.remove(&ctx);
        self.versions.retain(|s, _| s.context() != ctx);
    }

    async fn head(&mut self, ctx: Context) -> Result<Head, LogError> {
        if let Some(h) = self.heads.get(&ctx) {
            return Ok(h.clone());
        }
        let mut s = self.streams[&ctx].clone();
        let last = s.info().await.map_err(backend)?.state.last_sequence;
        let head = if last == 0 {
            (0, ChainHash::GENESIS)
        } else {
            let msg = s.get_raw_message(last).await.map_err(backend)?;
            let (hash, _) = Frame::split(&msg.payload).map_err(|e| LogError::Corrupt {
                context: ctx,
                position: last,
                reason: e.to_string(),
            })?;
            (last, hash)
        };
        let head = Head {
            position: head.0,
            hash: head.1,
            tentative_msg_id: None,
        };
        self.heads.insert(ctx, head.clone());
        Ok(head)
    }

    async fn version(&mut self, stream: &StreamId) -> Result<u64, LogError> {
        if let Some(v) = self.versions.get(stream) {
            return Ok(*v);
        }
        let ctx = stream.context();
        // From the stream's leader (STREAM.MSG.GET), never a direct get: on a replicated
        // stream a direct get may be answered by a follower that has not yet stored the
        // last write, and a stale version under the leader's head would let a decision
        // taken on stale state (a number already redeemed) through the
        // `Nats-Expected-Last-Sequence` pin. The leader's answer is at least as new as
        // the head read before it, so the version is valid under that head.
        let v = match self.streams[&ctx]
            .get_last_raw_message_by_subject(&subject(stream))
            .await
        {
            Ok(msg) => {
                let (_, commit) = Frame::decode(&msg.payload).map_err(|e| LogError::Corrupt {
                    context: ctx,
                    position: msg.sequence,
                    reason: e.to_string(),
                })?;
                commit.last_version()
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => 0,
            Err(e) => return Err(backend(e)),
        };
        self.versions.insert(stream.clone(), v);
        Ok(v)
    }

    /// The stored commit of `stream` that holds exactly these events, if any.
    async fn find_in_stream(&self, req: &Request) -> Result<Option<Appended>, LogError> {
        let ctx = req.stream.context();
        let first = req.events[0].event_id;
        let s = &self.streams[&ctx];
        let mut seq = 1;
        loop {
            let msg = match s
                .get_first_raw_message_by_subject(subject(&req.stream), seq)
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Err(e) => return Err(backend(e)),
            };
            let (_, commit) = Frame::decode(&msg.payload).map_err(|e| LogError::Corrupt {
                context: ctx,
                position: msg.sequence,
                reason: e.to_string(),
            })?;
            if commit.events.iter().any(|e| e.event_id == first) {
                return if same_ids(&commit, &req.events) {
                    Ok(Some(Appended {
                        position: msg.sequence,
                        first_version: commit.first_version,
                        last_version: commit.last_version(),
                        duplicate: true,
                    }))
                } else {
                    Err(LogError::IdReused {
                        event_id: first.to_string(),
                        context: ctx,
                        position: msg.sequence,
                    })
                };
            }
            seq = msg.sequence + 1;
        }
    }

    async fn plan(&mut self, req: &Request) -> Result<Plan, LogError> {
        let ctx = req.stream.context();
        let mut head = self.head(ctx).await?;
        let mut version = self.version(&req.stream).await?;
        if let ExpectedVersion::Exact(v) = req.expected
            && v > version
        {
            // The caller read a version newer than the one held here: another writer
            // appended to the stream since, so what this writer holds of the context is
            // stale. Read both again (head first: a version is valid under its head).
            // Without this, a node that kept a stream's version would refuse every append
            // to a stream the other node wrote, however often the caller re-read it.
            self.forget(ctx);
            head = self.head(ctx).await?;
            version = self.version(&req.stream).await?;
        }
        if let ExpectedVersion::Exact(v) = req.expected
            && v != version
        {
            return Ok(Plan::Done(match self.find_in_stream(req).await? {
                Some(dup) => Ok(dup),
                None => Err(LogError::Conflict {
                    stream: req.stream.clone(),
                    expected: req.expected,
                    actual: version,
                }),
            }));
        }
        let commit = Commit {
            context: ctx,
            position: head.position + 1,
            stream: req.stream.clone(),
            first_version: version + 1,
            events: req.events.clone(),
        };
        let (hash, frame) = Frame::encode(&head.hash, &commit)?;
        Ok(Plan::Publish(Planned {
            subject: subject(&req.stream),
            frame,
            expect_seq: head.position,
            expect_msg_id: head.tentative_msg_id,
            appended: Appended {
                position: commit.position,
                first_version: commit.first_version,
                last_version: commit.last_version(),
                duplicate: false,
            },
            hash,
        }))
    }

    /// Plans one append and publishes it, or answers it at once (conflict, duplicate).
    async fn publish(&mut self, req: Request, inflight: &mut FuturesOrdered<AckFuture>) {
        let ctx = req.stream.context();
        let plan = match self.plan(&req).await {
            Err(e) => {
                if matches!(e, LogError::Backend(_)) {
                    self.forget(ctx);
                }
                let _ = req.reply.send(Err(e));
                return;
            }
            Ok(Plan::Done(r)) => {
                let _ = req.reply.send(r);
                return;
            }
            Ok(Plan::Publish(p)) => p,
        };
        let msg_id = req.events[0].event_id.to_string();
        let mut publish = PublishMessage::build()
            .payload(Bytes::from(plan.frame))
            .message_id(&msg_id)
            .expected_last_sequence(plan.expect_seq);
        if let Some(id) = plan.expect_msg_id
            && self.window > 1
        {
            publish = publish.expected_last_message_id(id);
        }
        match self.js.send_publish(plan.subject, publish).await {
            Ok(ack) => {
                let appended = plan.appended;
                let head = Head {
                    position: appended.position,
                    hash: plan.hash,
                    tentative_msg_id: Some(msg_id),
                };
                self.heads.insert(ctx, head);
                self.versions
                    .insert(req.stream.clone(), appended.last_version);
                inflight.push_back(Box::pin(async move { (req, appended, ack.await) }));
            }
            Err(e) => {
                self.forget(ctx);
                let _ = req.reply.send(Err(backend(e)));
            }
        }
    }

    /// Answers an append from its ack; returns it when it lost a race and must be
    /// planned again.
    async fn settle(
        &mut self,
        mut req: Request,
        appended: Appended,
        ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Option<Request> {
        let ctx = req.stream.context();
        match ack {
            Ok(ack) if !ack.duplicate && ack.sequence == appended.position => {
                let _ = req.reply.send(Ok(appended));
            }
            Ok(ack) if ack.duplicate => {
                // Stored before (within the de-duplication window): answer with the
                // first commit; the frames pipelined after this one were hashed
                // against a head that does not exist and will be refused.
                self.forget(ctx);
                let r = self.duplicate_at(&req, ack.sequence).await;
                let _ = req.reply.send(r);
            }
            Ok(ack) => {
                self.forget(ctx);
                let _ = req.reply.send(Err(LogError::Backend(format!(
                    "stored at sequence {} instead of {}",
                    ack.sequence, appended.position
                ))));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::PublishErrorKind::WrongLastSequence
                        | jetstream::context::PublishErrorKind::WrongLastMessageId
                ) =>
            {
                self.forget(ctx);
                req.attempts += 1;
                if req.attempts >= MAX_ATTEMPTS {
                    let _ = req.reply.send(Err(LogError::Contention(ctx)));
                } else {
                    return Some(req);
                }
            }
            // A stream created a moment ago may not take publishes yet (2.9 answers "no
            // stream found" until it has a leader): wait a little and try again, briefly.
            Err(e)
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                    && req.attempts < STREAM_NOT_READY_RETRIES =>
            {
                self.forget(ctx);
                req.attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some(req);
            }
            Err(e) => {
                self.forget(ctx);
                let _ = req.reply.send(Err(backend(e)));
            }
        }
        None
    }

    async fn duplicate_at(&self, req: &Request, seq: u64) -> Result<Appended, LogError> {
        let ctx = req.stream.context();
        let msg = self.streams[&ctx]
            .get_raw_message(seq)
            .await
            .map_err(backend)?;
        let (_, commit) = Frame::decode(&msg.payload).map_err(|e| LogError::Corrupt {
            context: ctx,
            position: seq,
            reason: e.to_string(),
        })?;
        if commit.stream == req.stream && same_ids(&commit, &req.events) {
            Ok(Appended {
                position: seq,
                first_version: commit.first_version,
                last_version: commit.last_version(),
                duplicate: true,
            })
        } else {
            Err(LogError::IdReused {
                event_id: req.events[0].event_id.to_string(),
                context: ctx,
                position: seq,
            })
        }
    }
}

impl EventLog for NatsLog {
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
        self.inner
            .tx
            .send(Request {
                stream,
                expected,
                events,
                reply,
                attempts: 0,
            })
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedCommit>, LogError> {
        // Most streams are short (a number, a case: one to three commits): single-message
        // gets (no consumer to create and delete; direct gets on one replica, the leader's
        // on several: `leader_reads`) read them. The last
        // commit comes first; when it is the stream's first (version 1) that is all, in
        // one round trip, and a stream of two commits takes two. A long stream continues
        // through a consumer.
        let ctx = stream.context();
        let s = self.stream_of(ctx)?;
        let subj = subject(stream);
        let Some(last) = self.last_commit(stream).await? else {
            return Ok(Vec::new());
        };
        if last.commit.first_version == 1 {
            return Ok(vec![last]);
        }
        let mut out = Vec::new();
        let mut from = 1;
        for _ in 0..DIRECT_READS {
            let m = if self.leader_reads() {
                s.get_first_raw_message_by_subject(&subj, from)
                    .await
                    .map_err(backend)?
            } else {
                s.direct_get_next_for_subject(subj.clone(), Some(from))
                    .await
                    .map_err(backend)?
            };
            if m.sequence >= last.position {
                out.push(last);
                return Ok(out);
            }
            from = m.sequence + 1;
            let commit = recorded(ctx, m.sequence, m.payload)?;
            // Versions are contiguous: the commit just before the last needs no more reads.
            let next_is_last = commit.commit.last_version() + 1 == last.commit.first_version;
            out.push(commit);
            if next_is_last {
                out.push(last);
                return Ok(out);
            }
        }
        let last = last.position;
        out.extend(
            self.read_range(ctx, Some(subj), from, last, usize::MAX)
                .await?,
        );
        Ok(out)
    }

    async fn last_commit(&self, stream: &StreamId) -> Result<Option<RecordedCommit>, LogError> {
        let ctx = stream.context();
        let s = self.stream_of(ctx)?;
        if self.leader_reads() {
            return match s.get_last_raw_message_by_subject(&subject(stream)).await {
                Ok(m) => recorded(ctx, m.sequence, m.payload).map(Some),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(backend(e)),
            };
        }
        match s.direct_get_last_for_subject(subject(stream)).await {
            Ok(m) => recorded(ctx, m.sequence, m.payload).map(Some),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError> {
        Ok(self
            .last_commit(stream)
            .await?
            .map_or(0, |c| c.commit.last_version()))
    }

    async fn read_all(
        &self,
        context: Context,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedCommit>, LogError> {
        let end = self.last_sequence(context).await?;
        self.read_range(context, None, from.max(1), end, max).await
    }

    async fn head(&self, context: Context) -> Result<u64, LogError> {
        self.last_sequence(context).await
    }

    async fn subscribe(
        &self,
        context: Context,
        from: u64,
        durable: Option<&str>,
    ) -> Result<Subscription, LogError> {
        let s = self.stream_of(context)?;
        let deliver_policy = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from.max(1),
        };
        let to_commit =
            move |m: Result<jetstream::Message, String>| -> Result<RecordedCommit, LogError> {
                let m = m.map_err(LogError::Backend)?;
                let seq = m.info().map_err(backend)?.stream_sequence;
                recorded(context, seq, m.payload.clone())
            };
        match durable {
            None => {
                let c = s
                    .create_consumer(consumer::pull::OrderedConfig {
                        deliver_policy,
                        ..Default::default()
                    })
                    .await
                    .map_err(backend)?;
                let msgs = c.messages().await.map_err(backend)?;
                Ok(msgs
                    .map(move |m| to_commit(m.map_err(|e| e.to_string())))
                    .boxed())
            }
            Some(name) => {
                check_consumer_name(name)?;
                // The checkpoint, not the server, knows where the consumer is: start the
                // durable consumer afresh at the position asked for.
                let name = format!("hotaru-{name}-{}", context.name());
                let _ = s.delete_consumer(&name).await;
                let c = s
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(name),
                        deliver_policy,
                        ack_policy: consumer::AckPolicy::Explicit,
                        max_ack_pending: 100_000,
                        ..Default::default()
                    })
                    .await
                    .map_err(backend)?;
                let msgs = c.messages().await.map_err(backend)?;
                Ok(msgs
                    .then(move |m| async move {
                        let m = m.map_err(|e| e.to_string())?;
                        // The checkpoint is the truth for resuming; ack at once so the
                        // server never redelivers behind our back.
                        m.ack().await.map_err(|e| e.to_string())?;
                        Ok(m)
                    })
                    .map(to_commit)
                    .boxed())
            }
        }
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, LogError> {
        check_consumer_name(consumer)?;
        match self
            .inner
            .checkpoints
            .get_last_raw_message_by_subject(&format!("{CHECKPOINT_SUBJECT}.{consumer}"))
            .await
        {
            Ok(m) => decode_checkpoint(&m.payload).map(Some),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn save_checkpoint(
        &self,
        consumer: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), LogError> {
        check_consumer_name(consumer)?;
        self.inner
            .js
            .publish(
                format!("{CHECKPOINT_SUBJECT}.{consumer}"),
                encode_checkpoint(checkpoint).into(),
            )
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::server_addrs;

    #[test]
    fn a_list_of_servers_is_taken_and_a_bad_one_is_named() {
        let s =
            server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].port(), 4223);
        assert_eq!(server_addrs("nats://127.0.0.1:4222").unwrap().len(), 1);
        let e = server_addrs("nats://127.0.0.1:4222,nats://x:port").unwrap_err();
        assert!(e.to_string().contains("nats://x:port"), "{e}");
        assert!(server_addrs(" , ").is_err());
    }
}
