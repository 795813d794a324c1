//! Either backend, chosen at run time (the command line's `--data-dir` or `--nats`).

use std::path::PathBuf;

use hotaru_events::{Context, NewEvent, StreamId};

use crate::{
    Appended, Checkpoint, EventLog, ExpectedVersion, LogError, NatsConfig, NatsLog, RecordedCommit,
    SledLog, Subscription,
};

/// Where the log lives.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded sled store in this directory.
    Embedded(PathBuf),
    /// NATS JetStream.
    Nats(NatsConfig),
}

impl Backend {
    pub async fn open(&self) -> Result<AnyLog, LogError> {
        Ok(match self {
            Backend::Embedded(dir) => AnyLog::Sled(SledLog::open(dir)?),
            Backend::Nats(cfg) => AnyLog::Nats(NatsLog::connect(cfg).await?),
        })
    }
}

/// An open log of either kind.
#[derive(Clone)]
pub enum AnyLog {
    Sled(SledLog),
    Nats(NatsLog),
}

macro_rules! both {
    ($self:ident, $log:ident => $e:expr) => {
        match $self {
            AnyLog::Sled($log) => $e,
            AnyLog::Nats($log) => $e,
        }
    };
}

impl EventLog for AnyLog {
    async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, LogError> {
        both!(self, l => l.append(stream, expected, events).await)
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedCommit>, LogError> {
        both!(self, l => l.read_stream(stream).await)
    }

    async fn last_commit(&self, stream: &StreamId) -> Result<Option<RecordedCommit>, LogError> {
        both!(self, l => l.last_commit(stream).await)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError> {
        both!(self, l => l.stream_version(stream).await)
    }

    async fn read_all(
        &self,
        context: Context,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedCommit>, LogError> {
        both!(self, l => l.read_all(context, from, max).await)
    }

    async fn head(&self, context: Context) -> Result<u64, LogError> {
        both!(self, l => l.head(context).await)
    }

    async fn subscribe(
        &self,
        context: Context,
        from: u64,
        durable: Option<&str>,
    ) -> Result<Subscription, LogError> {
        both!(self, l => l.subscribe(context, from, durable).await)
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, LogError> {
        both!(self, l => l.load_checkpoint(consumer).await)
    }

    async fn save_checkpoint(
        &self,
        consumer: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), LogError> {
        both!(self, l => l.save_checkpoint(consumer, checkpoint).await)
    }
}
