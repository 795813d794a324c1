//! The command wire over NATS request/reply is versioned (ADR 0005): an actor node reads
//! the unmarked bincode of before (version 0) and version 1, answers in the version it was
//! asked in, and refuses an unknown version with a clear error instead of guessing. Real
//! nats-server, real node.

use std::sync::Arc;

use hotaru_actors::{Arbiters, IdSource, ManualClock, RandomIds};
use hotaru_events::{Clock, UnixMillis};
use hotaru_log::{AnyLog, NatsConfig, NatsLog};
use hotaru_server::commands::{Command, CommandError, Reply, SUBJECT, WIRE_VERSION, serve_nats};
use hotaru_server::{Node, ServerConfig};
use hotaru_test_support::NatsServer;

fn bincode_of<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
}

fn reply_of(b: &[u8]) -> Result<Reply, CommandError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .unwrap()
        .0
}

#[actix_rt::test]
async fn a_node_answers_each_wire_version_in_kind_and_refuses_an_unknown_one() {
    let server = NatsServer::start();
    let log = NatsLog::connect(&NatsConfig::new(server.url()))
        .await
        .unwrap();
    let client = log.jetstream().client();
    let log = AnyLog::Nats(log);
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(UnixMillis(20_000 * 86_400_000)));
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::default());
    let config = ServerConfig {
        digest_secret: Some("cd".repeat(32)),
        ..ServerConfig::default()
    };
    let arbiters = Arbiters::new(1);
    let node = Node::start(log, &config, clock, ids, &arbiters)
        .await
        .unwrap();
    let _service = serve_nats(node.actors(), client.clone()).await.unwrap();
    let ask = |payload: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .request(SUBJECT, payload.into())
                .await
                .unwrap()
                .payload
                .to_vec()
        }
    };
    // Nothing to sign: every version that is understood gets Signed(None).
    let cmd = bincode_of(&Command::SignNow);
    // Version 0: the unmarked bincode of before, answered the same way.
    let v0 = ask(cmd.clone()).await;
    assert_ne!(v0[0], hotaru_events::versioned::MARKER);
    assert!(matches!(reply_of(&v0), Ok(Reply::Signed(None))), "{v0:?}");
    // Version 1: marked, answered marked.
    let v1 = ask(hotaru_events::versioned::wrap(WIRE_VERSION, &cmd)).await;
    assert_eq!(v1[..2], [hotaru_events::versioned::MARKER, WIRE_VERSION]);
    assert!(matches!(reply_of(&v1[2..]), Ok(Reply::Signed(None))));
    // A version this node does not know: refused, in words.
    let v9 = ask(hotaru_events::versioned::wrap(9, &cmd)).await;
    match reply_of(&v9[2..]) {
        Err(CommandError::Malformed(m)) => assert!(m.contains("version 9"), "{m}"),
        other => panic!("{other:?}"),
    }
}
