//! Side stores: the few mutable things that live next to the immutable log, on the same
//! backend. Day keys and API-key digests (which retention must be able to destroy), and
//! blobs (the published export zips, content-addressed).
//!
//! - sled: one tree per namespace (`side:<ns>`), flushed on every write.
//! - JetStream: one stream per namespace (`HOTARU_SIDE_<NS>`, subjects
//!   `hotaru_side.<ns>.<key>` and `hotaru_side.<ns>.<key>.<chunk>`), one message per
//!   subject, deletes allowed. Values larger than a message are chunked (512 KiB), with a
//!   small manifest message written last, so a reader never sees half a value. Not the KV
//!   API: async-nats cannot create KV buckets on nats-server 2.9, and create-if-absent
//!   needs the expected-subject-sequence header anyway.
//! - Blobs (`blob_put`/`blob_get`): on JetStream the object store (bucket
//!   `hotaru-exports`, which async-nats creates fine on 2.9); on sled the `blobs` tree.

use async_nats::jetstream::stream;
use bytes::Bytes;

use crate::{AnyLog, LogError, NatsLog, SledLog};

const CHUNK: usize = 512 * 1024;

/// A mutable namespace of values next to the log.
pub trait SideStore: Clone + Send + Sync + 'static {
    fn side_put(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<(), LogError>> + Send;
    fn side_get(
        &self,
        ns: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, LogError>> + Send;
    /// Stores `value` only if the key has none yet (at most 512 KiB); returns whether it
    /// was stored. Two nodes racing to create the same key agree on one value.
    fn side_create(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, LogError>> + Send;
    /// Removes the value; on JetStream the messages are purged from the stream.
    fn side_delete(&self, ns: &str, key: &str)
    -> impl Future<Output = Result<(), LogError>> + Send;
    fn side_keys(&self, ns: &str) -> impl Future<Output = Result<Vec<String>, LogError>> + Send;
    /// The keys of `ns` that start with `prefix` (one device's, in a fleet's store).
    fn side_keys_prefixed(
        &self,
        ns: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, LogError>> + Send {
        async move {
            Ok(self
                .side_keys(ns)
                .await?
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .collect())
        }
    }
    /// The attempt limit's record of one source label and its revision (0: none), as the
    /// backend's leader has it (`crate::sources`).
    fn source_get(
        &self,
        label: u64,
    ) -> impl Future<Output = Result<(Option<Vec<u8>>, u64), LogError>> + Send;
    /// Replaces the record of `label` if its revision is still `revision` (0: there was
    /// none), giving its new revision; None when another writer replaced it first (read
    /// it again).
    fn source_swap(
        &self,
        label: u64,
        revision: u64,
        value: &[u8],
    ) -> impl Future<Output = Result<Option<u64>, LogError>> + Send;
    /// Stores a published file under `name` (content-addressed by the caller).
    fn blob_put(
        &self,
        name: &str,
        data: &[u8],
    ) -> impl Future<Output = Result<(), LogError>> + Send;
    fn blob_get(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, LogError>> + Send;
    /// Whether a file is stored under `name` (without reading it, where the backend can).
    fn blob_exists(&self, name: &str) -> impl Future<Output = Result<bool, LogError>> + Send {
        async move { Ok(self.blob_get(name).await?.is_some()) }
    }
}

const BLOB_NS: &str = "blobs";
const BUCKET: &str = "hotaru-exports";

fn check(ns: &str, key: &str) -> Result<(), LogError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 80
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if ok(ns) && ok(key) {
        Ok(())
    } else {
        Err(LogError::Backend(format!(
            "invalid side-store name {ns:?}/{key:?}"
        )))
    }
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

/// Makes the tree's writes durable. Not sled's `flush_async`: its flush runs on sled's own
/// thread pool and waits there for a buffer write that is queued on the same pool, so a
/// few concurrent flushes occupy every pool thread and wait for each other forever (sled
/// 0.34, spacejam/sled#1241; seen here as a hang of two nodes issuing at once). A blocking
/// flush on tokio's blocking pool leaves sled's pool free to write.
pub(crate) async fn durable(tree: &sled::Tree) -> Result<(), LogError> {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || tree.flush())
        .await
        .map_err(backend)?
        .map_err(backend)?;
    Ok(())
}

impl SideStore for SledLog {
    async fn source_get(&self, label: u64) -> Result<(Option<Vec<u8>>, u64), LogError> {
        Ok(self.sources().get(label))
    }

    async fn source_swap(
        &self,
        label: u64,
        revision: u64,
        value: &[u8],
    ) -> Result<Option<u64>, LogError> {
        Ok(self.sources().swap(label, revision, value))
    }

    async fn side_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), LogError> {
        check(ns, key)?;
        let tree = self.side_tree(ns)?;
        tree.insert(key, value).map_err(backend)?;
        durable(&tree).await?;
        Ok(())
    }

    async fn side_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        check(ns, key)?;
        Ok(self
            .side_tree(ns)?
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    async fn side_create(&self, ns: &str, key: &str, value: &[u8]) -> Result<bool, LogError> {
        check(ns, key)?;
        let tree = self.side_tree(ns)?;
        let created = tree
            .compare_and_swap(key, None::<&[u8]>, Some(value))
            .map_err(backend)?
            .is_ok();
        durable(&tree).await?;
        Ok(created)
    }

    async fn side_delete(&self, ns: &str, key: &str) -> Result<(), LogError> {
        check(ns, key)?;
        let tree = self.side_tree(ns)?;
        tree.remove(key).map_err(backend)?;
        durable(&tree).await?;
        Ok(())
    }

    async fn blob_put(&self, name: &str, data: &[u8]) -> Result<(), LogError> {
        self.side_put(BLOB_NS, name, data).await
    }

    async fn blob_get(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.side_get(BLOB_NS, name).await
    }

    async fn side_keys_prefixed(&self, ns: &str, prefix: &str) -> Result<Vec<String>, LogError> {
        self.side_tree(ns)?
            .scan_prefix(prefix)
            .keys()
            .map(|k| {
                k.map_err(backend)
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
            })
            .collect()
    }

    async fn side_keys(&self, ns: &str) -> Result<Vec<String>, LogError> {
        self.side_tree(ns)?
            .iter()
            .keys()
            .map(|k| {
                k.map_err(backend)
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
            })
            .collect()
    }
}

impl NatsLog {
    /// `HOTARU_SOURCES`, created on first use and then held (`crate::sources`).
    async fn sources_stream(&self) -> Result<stream::Stream, LogError> {
        self.sources_cell()
            .get_or_try_init(|| {
                crate::nats::create_stream(
                    self.jetstream(),
                    stream::Config {
                        name: crate::sources::SOURCE_STREAM.into(),
                        subjects: vec![format!("{}.*", crate::sources::SOURCE_SUBJECT)],
                        storage: stream::StorageType::Memory,
                        num_replicas: self.replicas(),
                        max_messages_per_subject: 1,
                        max_age: crate::sources::SOURCE_TTL,
                        ..Default::default()
                    },
                )
            })
            .await
            .cloned()
    }

    /// The namespace's stream, created on first use and then held: not a JetStream API
    /// request per read (an API-key check on every request timed out with the server
    /// leading the side stream, and answered 500 rather than 503).
    async fn side_stream(&self, ns: &str) -> Result<stream::Stream, LogError> {
        if let Some(s) = self.side_streams().lock().expect("not poisoned").get(ns) {
            return Ok(s.clone());
        }
        let s = self.create_side_stream(ns).await?;
        self.side_streams()
            .lock()
            .expect("not poisoned")
            .insert(ns.to_owned(), s.clone());
        Ok(s)
    }

    async fn create_side_stream(&self, ns: &str) -> Result<stream::Stream, LogError> {
        crate::nats::create_stream(
            self.jetstream(),
            stream::Config {
                name: format!("HOTARU_SIDE_{}", ns.to_ascii_uppercase()),
                subjects: vec![format!("hotaru_side.{ns}.>")],
                storage: stream::StorageType::File,
                num_replicas: self.replicas(),
                max_messages_per_subject: 1,
                ..Default::default()
            },
        )
        .await
    }

    async fn object_store(
        &self,
    ) -> Result<async_nats::jetstream::object_store::ObjectStore, LogError> {
        let js = self.jetstream();
        match js.get_object_store(BUCKET).await {
            Ok(s) => Ok(s),
            Err(_) => js
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: BUCKET.into(),
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas(),
                    ..Default::default()
                })
                .await
                .map_err(|e| backend(format!("cannot create the object store {BUCKET}: {e}"))),
        }
    }

    /// Publishes only if the subject's last message is still at `sequence` (0: none),
    /// giving the new message's sequence; None when another writer got in first.
    async fn publish_if_last(
        &self,
        subject: String,
        payload: Bytes,
        sequence: u64,
    ) -> Result<Option<u64>, LogError> {
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload)
            .expected_last_subject_sequence(sequence);
        let ack = self
            .jetstream()
            .send_publish(subject, msg)
            .await
            .map_err(backend)?
            .await;
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
            {
                Ok(None)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn publish_acked(&self, subject: String, payload: Bytes) -> Result<(), LogError> {
        self.jetstream()
            .publish(subject, payload)
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        Ok(())
    }
}

async fn last(s: &stream::Stream, subject: &str) -> Result<Option<Bytes>, LogError> {
    match s.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(m.payload)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

/// The first byte of the message on a key's own subject.
const INLINE: u8 = 0;
const MANIFEST: u8 = 1;

impl SideStore for NatsLog {
    async fn source_get(&self, label: u64) -> Result<(Option<Vec<u8>>, u64), LogError> {
        let s = self.sources_stream().await?;
        match s
            .get_last_raw_message_by_subject(&crate::sources::source_subject(label))
            .await
        {
            Ok(m) => Ok((Some(m.payload.to_vec()), m.sequence)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok((None, 0)),
            Err(e) => Err(backend(e)),
        }
    }

    async fn source_swap(
        &self,
        label: u64,
        revision: u64,
        value: &[u8],
    ) -> Result<Option<u64>, LogError> {
        self.sources_stream().await?;
        self.publish_if_last(
            crate::sources::source_subject(label),
            Bytes::copy_from_slice(value),
            revision,
        )
        .await
    }

    async fn side_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), LogError> {
        check(ns, key)?;
        self.side_stream(ns).await?;
        let base = format!("hotaru_side.{ns}.{key}");
        if value.len() <= CHUNK {
            let payload = [&[INLINE][..], value].concat();
            return self.publish_acked(base, payload.into()).await;
        }
        let chunks: Vec<&[u8]> = value.chunks(CHUNK).collect();
        for (i, c) in chunks.iter().enumerate() {
            self.publish_acked(format!("{base}.{i}"), Bytes::copy_from_slice(c))
                .await?;
        }
        // The manifest last: a reader that sees it sees every chunk.
        let mut manifest = vec![MANIFEST];
        manifest.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
        self.publish_acked(base, manifest.into()).await
    }

    async fn side_create(&self, ns: &str, key: &str, value: &[u8]) -> Result<bool, LogError> {
        check(ns, key)?;
        if value.len() > CHUNK {
            return Err(backend("side_create takes values of at most 512 KiB"));
        }
        self.side_stream(ns).await?;
        let payload = [&[INLINE][..], value].concat();
        Ok(self
            .publish_if_last(format!("hotaru_side.{ns}.{key}"), payload.into(), 0)
            .await?
            .is_some())
    }

    async fn side_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        check(ns, key)?;
        let s = self.side_stream(ns).await?;
        let base = format!("hotaru_side.{ns}.{key}");
        let Some(head) = last(&s, &base).await? else {
            return Ok(None);
        };
        match head.first() {
            Some(&INLINE) => return Ok(Some(head[1..].to_vec())),
            Some(&MANIFEST) if head.len() == 5 => {}
            _ => return Err(backend(format!("malformed side value {ns}/{key}"))),
        }
        let n = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
        let mut out = Vec::new();
        for i in 0..n {
            let c = last(&s, &format!("{base}.{i}"))
                .await?
                .ok_or_else(|| backend(format!("chunk {i} of {ns}/{key} is missing")))?;
            out.extend_from_slice(&c);
        }
        Ok(Some(out))
    }

    async fn side_delete(&self, ns: &str, key: &str) -> Result<(), LogError> {
        check(ns, key)?;
        let s = self.side_stream(ns).await?;
        let base = format!("hotaru_side.{ns}.{key}");
        // The manifest first: from then on the value is gone for readers.
        s.purge().filter(base.clone()).await.map_err(backend)?;
        s.purge()
            .filter(format!("{base}.>"))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn blob_put(&self, name: &str, data: &[u8]) -> Result<(), LogError> {
        check(BLOB_NS, name)?;
        let store = self.object_store().await?;
        let mut reader = data;
        store.put(name, &mut reader).await.map_err(backend)?;
        Ok(())
    }

    async fn blob_get(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        check(BLOB_NS, name)?;
        let store = self.object_store().await?;
        let mut object = match store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(backend(e)),
        };
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut object, &mut out)
            .await
            .map_err(backend)?;
        Ok(Some(out))
    }

    async fn blob_exists(&self, name: &str) -> Result<bool, LogError> {
        check(BLOB_NS, name)?;
        let store = self.object_store().await?;
        match store.info(name).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn side_keys(&self, ns: &str) -> Result<Vec<String>, LogError> {
        let s = self.side_stream(ns).await?;
        let prefix = format!("hotaru_side.{ns}.");
        let info = s
            .info_with_subjects(format!("{prefix}*"))
            .await
            .map_err(backend)?;
        use futures::TryStreamExt;
        let subjects: Vec<(String, usize)> = info.try_collect().await.map_err(backend)?;
        let mut keys: Vec<String> = subjects
            .into_iter()
            .filter_map(|(subj, _)| subj.strip_prefix(&prefix).map(str::to_owned))
            .filter(|k| !k.contains('.'))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

impl SideStore for AnyLog {
    async fn source_get(&self, label: u64) -> Result<(Option<Vec<u8>>, u64), LogError> {
        match self {
            AnyLog::Sled(l) => l.source_get(label).await,
            AnyLog::Nats(l) => l.source_get(label).await,
        }
    }

    async fn source_swap(
        &self,
        label: u64,
        revision: u64,
        value: &[u8],
    ) -> Result<Option<u64>, LogError> {
        match self {
            AnyLog::Sled(l) => l.source_swap(label, revision, value).await,
            AnyLog::Nats(l) => l.source_swap(label, revision, value).await,
        }
    }

    async fn side_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), LogError> {
        match self {
            AnyLog::Sled(l) => l.side_put(ns, key, value).await,
            AnyLog::Nats(l) => l.side_put(ns, key, value).await,
        }
    }

    async fn side_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        match self {
            AnyLog::Sled(l) => l.side_get(ns, key).await,
            AnyLog::Nats(l) => l.side_get(ns, key).await,
        }
    }

    async fn side_create(&self, ns: &str, key: &str, value: &[u8]) -> Result<bool, LogError> {
        match self {
            AnyLog::Sled(l) => l.side_create(ns, key, value).await,
            AnyLog::Nats(l) => l.side_create(ns, key, value).await,
        }
    }

    async fn side_delete(&self, ns: &str, key: &str) -> Result<(), LogError> {
        match self {
            AnyLog::Sled(l) => l.side_delete(ns, key).await,
            AnyLog::Nats(l) => l.side_delete(ns, key).await,
        }
    }

    async fn blob_put(&self, name: &str, data: &[u8]) -> Result<(), LogError> {
        match self {
            AnyLog::Sled(l) => l.blob_put(name, data).await,
            AnyLog::Nats(l) => l.blob_put(name, data).await,
        }
    }

    async fn blob_exists(&self, name: &str) -> Result<bool, LogError> {
        match self {
            AnyLog::Sled(l) => l.blob_exists(name).await,
            AnyLog::Nats(l) => l.blob_exists(name).await,
        }
    }

    async fn blob_get(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        match self {
            AnyLog::Sled(l) => l.blob_get(name).await,
            AnyLog::Nats(l) => l.blob_get(name).await,
        }
    }

    async fn side_keys(&self, ns: &str) -> Result<Vec<String>, LogError> {
        match self {
            AnyLog::Sled(l) => l.side_keys(ns).await,
            AnyLog::Nats(l) => l.side_keys(ns).await,
        }
    }

    async fn side_keys_prefixed(&self, ns: &str, prefix: &str) -> Result<Vec<String>, LogError> {
        match self {
            AnyLog::Sled(l) => l.side_keys_prefixed(ns, prefix).await,
            AnyLog::Nats(l) => l.side_keys_prefixed(ns, prefix).await,
        }
    }
}

/// A side store in memory: a simulated fleet's phones keep their encrypted records in
/// the fleet process (one per shard, so shards on other threads never wait for it).
/// Nothing is persisted.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: std::sync::Arc<std::sync::Mutex<Namespaces>>,
    sources: std::sync::Arc<std::sync::Mutex<crate::sources::SourceTable>>,
}

type Namespaces = std::collections::HashMap<String, std::collections::BTreeMap<String, Vec<u8>>>;

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Namespaces) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Bytes held (keys and values), for the fleet's memory figures.
    pub fn bytes(&self) -> usize {
        self.with(|m| {
            m.values()
                .flat_map(|t| t.iter())
                .map(|(k, v)| k.len() + v.len())
                .sum()
        })
    }
}

impl SideStore for MemoryStore {
    async fn source_get(&self, label: u64) -> Result<(Option<Vec<u8>>, u64), LogError> {
        Ok(self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(label))
    }

    async fn source_swap(
        &self,
        label: u64,
        revision: u64,
        value: &[u8],
    ) -> Result<Option<u64>, LogError> {
        Ok(self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .swap(label, revision, value))
    }

    async fn side_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), LogError> {
        check(ns, key)?;
        self.with(|m| {
            m.entry(ns.to_owned())
                .or_default()
                .insert(key.to_owned(), value.to_vec())
        });
        Ok(())
    }

    async fn side_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        check(ns, key)?;
        Ok(self.with(|m| m.get(ns).and_then(|t| t.get(key)).cloned()))
    }

    async fn side_create(&self, ns: &str, key: &str, value: &[u8]) -> Result<bool, LogError> {
        check(ns, key)?;
        Ok(self.with(|m| {
            let t = m.entry(ns.to_owned()).or_default();
            if t.contains_key(key) {
                false
            } else {
                t.insert(key.to_owned(), value.to_vec());
                true
            }
        }))
    }

    async fn side_delete(&self, ns: &str, key: &str) -> Result<(), LogError> {
        check(ns, key)?;
        self.with(|m| m.get_mut(ns).map(|t| t.remove(key)));
        Ok(())
    }

    async fn side_keys(&self, ns: &str) -> Result<Vec<String>, LogError> {
        Ok(self.with(|m| {
            m.get(ns)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn side_keys_prefixed(&self, ns: &str, prefix: &str) -> Result<Vec<String>, LogError> {
        Ok(self.with(|m| {
            m.get(ns)
                .map(|t| {
                    t.range(prefix.to_owned()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn blob_put(&self, name: &str, data: &[u8]) -> Result<(), LogError> {
        self.side_put(BLOB_NS, name, data).await
    }

    async fn blob_get(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.side_get(BLOB_NS, name).await
    }
}
