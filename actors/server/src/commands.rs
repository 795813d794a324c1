//! The commands the edge sends to the actors: in process on one node, or over NATS
//! request/reply with a queue group, so that gateways and actor nodes scale separately
//! (any actor node answers any command: the actors keep no state that another node lacks;
//! streams' expected versions order what they write).
//!
//! One enum of commands and one of replies, encoded with bincode behind a version on the
//! wire (ADR 0005); the same
//! [`LocalActors::run`] executes them for both transports, so the two cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::StreamExt as _;
use hotaru_actors::IdSource;
use hotaru_domain::number::{ProcessingNumber, RedemptionAnswer};
use hotaru_events::domain::{CaseBasis, CaseId, CentreId, LogId};
use hotaru_events::{Clock, UnixMillis};
use hotaru_log::{EventLog, LogError, SideStore};
use serde::{Deserialize, Serialize};

use crate::actors::{
    AttemptVerdict, BatchSignerActor, ConfirmCase, IssueNumber, Publish, Redeem, RegistrationActor,
    SignNow,
};
use crate::batch::{BatchError, BatchOutcome};
use crate::registration::{IssuedNumber, PublishAnswer, Redemption, RegistrationError};

/// The subject the actor nodes answer on.
pub const SUBJECT: &str = "hotaru-cmd.v1";
/// Their queue group: each command goes to one of them.
pub const QUEUE: &str = "hotaru-actors";
/// How long the edge waits for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A command from the edge. Its `Debug` shows no secret (see [`crate::Redacted`]).
#[derive(Clone, Serialize, Deserialize)]
pub enum Command {
    ConfirmCase {
        centre: CentreId,
        basis: CaseBasis,
    },
    IssueNumber {
        centre: CentreId,
        case_id: CaseId,
    },
    Redeem(Redemption),
    Publish {
        redemption: Redemption,
        revision_token: Option<String>,
    },
    SignNow,
    ReceiveLog(Vec<u8>),
    CloseLog(LogId),
    /// What a redemption from this source would be told before evaluation (for chaff).
    /// Last, so that the variants before keep their wire numbers.
    AttemptVerdict {
        source: Option<u64>,
    },
}

/// What a command answered. Its `Debug` shows no secret (see [`crate::Redacted`]).
#[derive(Clone, Serialize, Deserialize)]
pub enum Reply {
    CaseConfirmed(CaseId),
    NumberIssued {
        number: String,
        case_id: CaseId,
        expires_at: UnixMillis,
    },
    Redeemed(RedemptionAnswer),
    Published {
        answer: RedemptionAnswer,
        revision_token: String,
    },
    Signed(Option<BatchOutcome>),
    LogReceived(LogId),
    LogClosed(bool),
    /// A redemption would be admitted (a refusal is `RegistrationError::AttemptLimit`).
    MayAttempt,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::Redacted;
        match self {
            Command::ConfirmCase { centre, basis } => f
                .debug_struct("ConfirmCase")
                .field("centre", centre)
                .field("basis", basis)
                .finish(),
            Command::IssueNumber { centre, case_id } => f
                .debug_struct("IssueNumber")
                .field("centre", centre)
                .field("case_id", case_id)
                .finish(),
            Command::Redeem(r) => f.debug_tuple("Redeem").field(r).finish(),
            Command::Publish {
                redemption,
                revision_token,
            } => f
                .debug_struct("Publish")
                .field("redemption", redemption)
                .field(
                    "revision_token",
                    &revision_token.as_ref().map(|t| Redacted(t.len())),
                )
                .finish(),
            Command::SignNow => f.write_str("SignNow"),
            Command::ReceiveLog(log) => f
                .debug_tuple("ReceiveLog")
                .field(&Redacted(log.len()))
                .finish(),
            Command::CloseLog(id) => f.debug_tuple("CloseLog").field(id).finish(),
            Command::AttemptVerdict { source } => f
                .debug_struct("AttemptVerdict")
                .field("source", &source.map(|_| Redacted(8)))
                .finish(),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::Redacted;
        match self {
            Reply::CaseConfirmed(id) => f.debug_tuple("CaseConfirmed").field(id).finish(),
            Reply::NumberIssued {
                number,
                case_id,
                expires_at,
            } => f
                .debug_struct("NumberIssued")
                .field("number", &Redacted(number.len()))
                .field("case_id", case_id)
                .field("expires_at", expires_at)
                .finish(),
            Reply::Redeemed(a) => f.debug_tuple("Redeemed").field(a).finish(),
            Reply::Published {
                answer,
                revision_token,
            } => f
                .debug_struct("Published")
                .field("answer", answer)
                .field("revision_token", &Redacted(revision_token.len()))
                .finish(),
            Reply::Signed(o) => f.debug_tuple("Signed").field(o).finish(),
            Reply::LogReceived(id) => f.debug_tuple("LogReceived").field(id).finish(),
            Reply::LogClosed(b) => f.debug_tuple("LogClosed").field(b).finish(),
            Reply::MayAttempt => f.write_str("MayAttempt"),
        }
    }
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Log(
        #[from]
        #[serde(with = "log_error_text")]
        LogError,
    ),
    /// No actor node answered in time (or none is running).
    #[error("no actor node answered: {0}")]
    Unavailable(String),
    /// The two sides do not speak the same version.
    #[error("malformed command or reply: {0}")]
    Malformed(String),
}

/// A [`LogError`] crosses the wire as its text (the receiving side cannot act on its
/// details, only report them).
pub mod log_error_text {
    use hotaru_log::LogError;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &LogError, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogError, D::Error> {
        String::deserialize(d).map(LogError::Backend)
    }
}

/// The version of the command wire this node writes (ADR 0005). Version 0 is the
/// unmarked bincode of before; a node reads both and answers in the version it was asked
/// in, so gateways and nodes of two releases work together during a rolling upgrade.
pub const WIRE_VERSION: u8 = 1;

fn encode<T: Serialize>(v: &T, version: u8) -> Vec<u8> {
    let body = bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("commands and replies always encode");
    match version {
        0 => body,
        v => hotaru_events::versioned::wrap_vec(v, body),
    }
}

/// The value and the version it came in.
fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<(T, u8), CommandError> {
    match hotaru_events::versioned::split(b) {
        (version @ (0 | WIRE_VERSION), body) => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(v, _)| (v, version))
                .map_err(|e| CommandError::Malformed(e.to_string()))
        }
        (v, _) => Err(CommandError::Malformed(format!(
            "command wire version {v}; this node reads versions 0 to {WIRE_VERSION}"
        ))),
    }
}

/// The actors of one node, as the command executor.
pub struct LocalActors<L: EventLog + SideStore + Unpin> {
    pub registration: Addr<RegistrationActor<L>>,
    pub signer: Addr<BatchSignerActor<L>>,
    pub log: L,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
}

impl<L: EventLog + SideStore + Unpin> Clone for LocalActors<L> {
    fn clone(&self) -> Self {
        Self {
            registration: self.registration.clone(),
            signer: self.signer.clone(),
            log: self.log.clone(),
            clock: self.clock.clone(),
            ids: self.ids.clone(),
        }
    }
}

fn mailbox(e: actix::MailboxError) -> CommandError {
    CommandError::Unavailable(format!("actor mailbox: {e}"))
}

impl<L: EventLog + SideStore + Unpin> LocalActors<L> {
    /// Executes a command on this node's actors.
    pub async fn run(&self, cmd: Command) -> Result<Reply, CommandError> {
        Ok(match cmd {
            Command::ConfirmCase { centre, basis } => Reply::CaseConfirmed(
                self.registration
                    .send(ConfirmCase { centre, basis })
                    .await
                    .map_err(mailbox)??,
            ),
            Command::IssueNumber { centre, case_id } => {
                let i = self
                    .registration
                    .send(IssueNumber { centre, case_id })
                    .await
                    .map_err(mailbox)??;
                Reply::NumberIssued {
                    number: i.number.as_str().to_owned(),
                    case_id: i.case_id,
                    expires_at: i.expires_at,
                }
            }
            Command::Redeem(r) => {
                Reply::Redeemed(self.registration.send(Redeem(r)).await.map_err(mailbox)??)
            }
            Command::Publish {
                redemption,
                revision_token,
            } => {
                let a = self
                    .registration
                    .send(Publish {
                        redemption,
                        revision_token,
                    })
                    .await
                    .map_err(mailbox)??;
                Reply::Published {
                    answer: a.answer,
                    revision_token: a.revision_token,
                }
            }
            Command::SignNow => Reply::Signed(self.signer.send(SignNow).await.map_err(mailbox)??),
            Command::ReceiveLog(content) => Reply::LogReceived(
                crate::support::receive(&self.log, &self.clock, &self.ids, &content).await?,
            ),
            Command::CloseLog(id) => Reply::LogClosed(
                crate::support::close(&self.log, &self.clock, &self.ids, id).await?,
            ),
            Command::AttemptVerdict { source } => {
                self.registration
                    .send(AttemptVerdict(source))
                    .await
                    .map_err(mailbox)??;
                Reply::MayAttempt
            }
        })
    }
}

/// A node answering commands over NATS; [`CommandService::stop`] drains it.
pub struct CommandService {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl CommandService {
    /// Stops taking commands (the queue group sends new ones to the other nodes at once),
    /// answers the ones already taken, and returns when they are answered (at most
    /// `TIMEOUT`).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = tokio::time::timeout(TIMEOUT, d).await;
        }
    }
}

/// Starts answering commands from NATS on the current actix arbiter: each command goes
/// to one node of the queue group; the node runs the commands it takes concurrently.
pub async fn serve_nats<L: EventLog + SideStore + Unpin + 'static>(
    actors: LocalActors<L>,
    client: async_nats::Client,
) -> Result<CommandService, LogError> {
    let mut sub = client
        .queue_subscribe(SUBJECT, QUEUE.into())
        .await
        .map_err(|e| LogError::Backend(format!("cannot subscribe to {SUBJECT}: {e}")))?;
    // Make sure the server has the subscription before anyone is told we are up.
    client
        .flush()
        .await
        .map_err(|e| LogError::Backend(e.to_string()))?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    actix::spawn(async move {
        let mut inflight = futures::stream::FuturesUnordered::new();
        let mut draining = false;
        loop {
            tokio::select! {
                _ = &mut stop_rx, if !draining => {
                    draining = true;
                    // Unsubscribe; messages already delivered still come out of `sub`.
                    if let Err(e) = sub.drain().await {
                        tracing::warn!(error = %e, "draining the command subscription failed");
                        break;
                    }
                }
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    let Some(reply_to) = msg.reply.clone() else { continue };
                    let (actors, client) = (actors.clone(), client.clone());
                    inflight.push(async move {
                        let (out, version) = match decode::<Command>(&msg.payload) {
                            Ok((cmd, version)) => (actors.run(cmd).await, version),
                            Err(e) => (Err(e), WIRE_VERSION),
                        };
                        let answer = encode(&out, version);
                        if let Err(e) = client.publish(reply_to, answer.into()).await {
                            tracing::warn!(error = %e, "a command's answer could not be sent");
                        }
                    });
                }
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
            }
        }
        while inflight.next().await.is_some() {}
        let _ = client.flush().await;
        let _ = done_tx.send(());
    });
    Ok(CommandService {
        stop: Some(stop_tx),
        done: Some(done_rx),
    })
}

/// Where the edge sends its commands.
pub enum Commands<L: EventLog + SideStore + Unpin> {
    /// This process's actors (the embedded default, and a node that is both).
    Local(LocalActors<L>),
    /// Any actor node of the cluster, over NATS request/reply.
    Nats(async_nats::Client),
}

impl<L: EventLog + SideStore + Unpin> Clone for Commands<L> {
    fn clone(&self) -> Self {
        match self {
            Commands::Local(a) => Commands::Local(a.clone()),
            Commands::Nats(c) => Commands::Nats(c.clone()),
        }
    }
}

fn unexpected(r: Reply) -> CommandError {
    CommandError::Malformed(format!("unexpected reply {r:?}"))
}

impl<L: EventLog + SideStore + Unpin> Commands<L> {
    pub async fn run(&self, cmd: Command) -> Result<Reply, CommandError> {
        match self {
            Commands::Local(a) => a.run(cmd).await,
            Commands::Nats(client) => {
                let request = async_nats::Request::new()
                    .payload(encode(&cmd, WIRE_VERSION).into())
                    .timeout(Some(TIMEOUT));
                let msg = client
                    .send_request(SUBJECT, request)
                    .await
                    .map_err(|e| CommandError::Unavailable(e.to_string()))?;
                decode::<Result<Reply, CommandError>>(&msg.payload)?.0
            }
        }
    }

    pub async fn confirm_case(
        &self,
        centre: CentreId,
        basis: CaseBasis,
    ) -> Result<CaseId, CommandError> {
        match self.run(Command::ConfirmCase { centre, basis }).await? {
            Reply::CaseConfirmed(id) => Ok(id),
            r => Err(unexpected(r)),
        }
    }

    pub async fn issue_number(
        &self,
        centre: CentreId,
        case_id: CaseId,
    ) -> Result<IssuedNumber, CommandError> {
        match self.run(Command::IssueNumber { centre, case_id }).await? {
            Reply::NumberIssued {
                number,
                case_id,
                expires_at,
            } => Ok(IssuedNumber {
                number: ProcessingNumber::from_digits(number),
                case_id,
                expires_at,
            }),
            r => Err(unexpected(r)),
        }
    }

    /// What a redemption from `source` would be told before evaluation: `Ok` or
    /// `RegistrationError::AttemptLimit` (for chaff, which must be refused exactly when a
    /// real upload would be).
    pub async fn attempt_verdict(&self, source: Option<u64>) -> Result<(), CommandError> {
        match self.run(Command::AttemptVerdict { source }).await? {
            Reply::MayAttempt => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    pub async fn redeem(&self, r: Redemption) -> Result<RedemptionAnswer, CommandError> {
        match self.run(Command::Redeem(r)).await? {
            Reply::Redeemed(a) => Ok(a),
            r => Err(unexpected(r)),
        }
    }

    pub async fn publish(
        &self,
        redemption: Redemption,
        revision_token: Option<String>,
    ) -> Result<PublishAnswer, CommandError> {
        match self
            .run(Command::Publish {
                redemption,
                revision_token,
            })
            .await?
        {
            Reply::Published {
                answer,
                revision_token,
            } => Ok(PublishAnswer {
                answer,
                revision_token,
            }),
            r => Err(unexpected(r)),
        }
    }

    pub async fn sign_now(&self) -> Result<Option<BatchOutcome>, CommandError> {
        match self.run(Command::SignNow).await? {
            Reply::Signed(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    pub async fn receive_log(&self, content: Vec<u8>) -> Result<LogId, CommandError> {
        match self.run(Command::ReceiveLog(content)).await? {
            Reply::LogReceived(id) => Ok(id),
            r => Err(unexpected(r)),
        }
    }

    pub async fn close_log(&self, id: LogId) -> Result<bool, CommandError> {
        match self.run(Command::CloseLog(id)).await? {
            Reply::LogClosed(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use hotaru_domain::number::ProcessingNumber;
    use hotaru_events::domain::{CaseId, Day};

    use super::*;

    /// A reply or command formatted with `{:?}` (into an error, a log line) shows no
    /// processing number, revision token, idempotency key, source or log content.
    #[test]
    fn no_debug_of_a_command_or_reply_shows_a_secret() {
        let (number, token, idem, log) = ("31415926", "TOKEN-sealed", "IDEM-key", "LOG-text");
        let redemption = Redemption {
            number: number.into(),
            keys: Vec::new(),
            idempotency_key: Some(idem.into()),
            source: Some(0x5eed_5eed),
        };
        let answer = RedemptionAnswer {
            case_id: CaseId([1; 16]),
            accepted: 1,
            dropped: Vec::new(),
        };
        let shown = [
            format!("{:?}", Command::Redeem(redemption.clone())),
            format!(
                "{:#?}",
                Command::Publish {
                    redemption: redemption.clone(),
                    revision_token: Some(token.into()),
                }
            ),
            format!("{:?}", Command::ReceiveLog(log.as_bytes().to_vec())),
            format!(
                "{:?}",
                Reply::NumberIssued {
                    number: number.into(),
                    case_id: CaseId([1; 16]),
                    expires_at: UnixMillis(Day(20_000).0 as u64),
                }
            ),
            format!(
                "{:?}",
                Reply::Published {
                    answer: answer.clone(),
                    revision_token: token.into(),
                }
            ),
            format!(
                "{:?}",
                PublishAnswer {
                    answer,
                    revision_token: token.into(),
                }
            ),
            format!(
                "{:?}",
                IssuedNumber {
                    number: ProcessingNumber::parse(number, 8).unwrap(),
                    case_id: CaseId([1; 16]),
                    expires_at: UnixMillis(0),
                }
            ),
            unexpected(Reply::NumberIssued {
                number: number.into(),
                case_id: CaseId([1; 16]),
                expires_at: UnixMillis(0),
            })
            .to_string(),
        ];
        for s in &shown {
            let source = 0x5eed_5eed_u64.to_string();
            for secret in [number, token, idem, log, &source] {
                assert!(
                    !s.to_lowercase().contains(&secret.to_lowercase()),
                    "{secret} in {s}"
                );
            }
            assert!(
                s.contains("redacted") || s.contains("ProcessingNumber(..)"),
                "{s}"
            );
        }
    }
}
