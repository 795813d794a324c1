//! A seeded node writes byte-identical logs twice (issue 13): the clock, the event ids and
//! every random byte the server draws (case ids, numbers, day keys, sealing nonces, padding,
//! the signing key) come from what is injected, and export files are signed with
//! deterministic ECDSA. The same script, run twice from the same seed on a fresh store,
//! leaves the same frames in every context and the same published zips; another seed
//! leaves different ones. On the embedded store and on a real nats-server.

use std::sync::Arc;

use hotaru_actors::{Arbiters, IdSource, ManualClock, RandomIds};
use hotaru_domain::upload::SubmittedKey;
use hotaru_events::domain::{CaseBasis, CentreId, Day};
use hotaru_events::{Clock, Context, DomainEvent, UnixMillis};
use hotaru_log::{AnyLog, EventLog, NatsConfig, NatsLog, SideStore, SledLog};
use hotaru_protocol::random::{RandomSource, SeededSource};
use hotaru_server::actors::{ConfirmCase, IssueNumber, Redeem, SignNow};
use hotaru_server::signing::add_signing_key;
use hotaru_server::{Node, Redemption, ServerConfig};
use hotaru_test_support::NatsServer;

/// 2024-10-04, 09:00 UTC.
const START: u64 = 20_000 * 86_400_000 + 9 * 3_600_000;

/// Every frame of every context, in order, and every published zip.
type Dump = (Vec<(Context, u64, Vec<u8>)>, Vec<Vec<u8>>);

/// Runs the script on `log` with `seed` and dumps what it left.
async fn run(log: AnyLog, seed: u64) -> Dump {
    let clock = ManualClock::at(UnixMillis(START));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let random: Arc<dyn RandomSource> = Arc::new(SeededSource::from_u64(seed));
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds::new(random.clone()));
    let config = ServerConfig {
        digest_secret: Some("ab".repeat(32)),
        ..ServerConfig::default()
    };
    let now = clock.now();
    add_signing_key(&log, "440", 440, now, &*ids).await.unwrap();
    let arbiters = Arbiters::new(2);
    let node = Node::start(log.clone(), &config, shared, ids.clone(), &arbiters)
        .await
        .unwrap();
    let today = now.day();
    for i in 0..3u8 {
        let centre = CentreId(u32::from(i % 2) + 1);
        let case_id = node
            .registration_actor
            .send(ConfirmCase {
                centre,
                basis: CaseBasis::SymptomOnset(Day(today - 3)),
            })
            .await
            .unwrap()
            .unwrap();
        let issued = node
            .registration_actor
            .send(IssueNumber { centre, case_id })
            .await
            .unwrap()
            .unwrap();
        clock.advance_millis(60_000);
        // A wrong guess first (a ticket taken and kept), then the right number.
        let key = |d: u32| SubmittedKey {
            key_data: random.array::<16>().to_vec(),
            rolling_start: (today - d) * 144,
            rolling_period: 144,
            transmission_risk: None,
            report_type: None,
            days_since_onset: None,
        };
        let _ = node
            .registration_actor
            .send(Redeem(Redemption {
                number: "00000000".into(),
                keys: vec![key(1)],
                idempotency_key: None,
                source: None,
            }))
            .await
            .unwrap();
        node.registration_actor
            .send(Redeem(Redemption {
                number: issued.number.as_str().to_owned(),
                keys: (0..5).map(key).collect(),
                idempotency_key: None,
                source: None,
            }))
            .await
            .unwrap()
            .unwrap();
    }
    // Keys are released after their day is over.
    clock.advance_millis(2 * 86_400_000);
    node.signer.send(SignNow).await.unwrap().unwrap();
    hotaru_server::support::receive(&log, &node_clock(&clock), &ids, b"09:00 check ok")
        .await
        .unwrap();
    drop(node);
    drop(arbiters);
    dump(&log).await
}

fn node_clock(c: &ManualClock) -> Arc<dyn Clock> {
    Arc::new(c.clone())
}

async fn dump(log: &AnyLog) -> Dump {
    let mut frames = Vec::new();
    let mut zips = Vec::new();
    for ctx in Context::ALL {
        let mut from = 1;
        loop {
            let batch = log.read_all(ctx, from, 1024).await.unwrap();
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in batch {
                for env in c.commit.envelopes().flatten() {
                    if let DomainEvent::BatchPublished(p) = env.event {
                        for sha in p.blobs {
                            zips.push(log.blob_get(&hex::encode(sha)).await.unwrap().unwrap());
                        }
                    }
                }
                frames.push((ctx, c.position, c.frame.to_vec()));
            }
        }
    }
    (frames, zips)
}

fn assert_identical(a: &Dump, b: &Dump) {
    assert!(
        !a.0.is_empty() && !a.1.is_empty(),
        "the script wrote nothing"
    );
    assert_eq!(a.0.len(), b.0.len(), "as many commits");
    for (x, y) in a.0.iter().zip(&b.0) {
        assert_eq!(x, y, "commit {} of {:?} differs", x.1, x.0);
    }
    assert_eq!(a.1, b.1, "the published zips differ");
}

fn assert_differs(a: &Dump, b: &Dump) {
    assert_ne!(a.0, b.0, "another seed wrote the same log");
    assert_ne!(a.1, b.1, "another seed published the same zips");
}

async fn sled(seed: u64) -> Dump {
    let dir = tempfile::tempdir().unwrap();
    run(AnyLog::Sled(SledLog::open(dir.path()).unwrap()), seed).await
}

async fn nats(seed: u64) -> Dump {
    let server = NatsServer::start();
    let log = NatsLog::connect(&NatsConfig::new(server.url()))
        .await
        .unwrap();
    run(AnyLog::Nats(log), seed).await
}

#[actix_rt::test]
async fn a_seeded_node_writes_the_same_bytes_twice_embedded() {
    let (a, b) = (sled(7).await, sled(7).await);
    assert_identical(&a, &b);
    assert_differs(&a, &sled(8).await);
}

#[actix_rt::test]
async fn a_seeded_node_writes_the_same_bytes_twice_on_nats() {
    let (a, b) = (nats(7).await, nats(7).await);
    assert_identical(&a, &b);
    assert_differs(&a, &nats(8).await);
    // And both backends agree, byte for byte.
    assert_identical(&a, &sled(7).await);
}
