//! The side stores behave alike on both backends: put, overwrite, get, large values,
//! list, delete (and a deleted value is gone after a reopen).

use hotaru_log::{MemoryStore, NatsConfig, NatsLog, SideStore, SledLog};
use hotaru_test_support::NatsServer;

async fn exercise<S: SideStore>(open: impl AsyncFn() -> S) {
    let s = open().await;
    assert_eq!(s.side_get("secrets", "day-1").await.unwrap(), None);
    s.side_put("secrets", "day-1", b"first").await.unwrap();
    s.side_put("secrets", "day-1", b"second").await.unwrap();
    s.side_put("secrets", "day-2", b"").await.unwrap();
    assert_eq!(
        s.side_get("secrets", "day-1").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(
        s.side_get("secrets", "day-2").await.unwrap().as_deref(),
        Some(&b""[..])
    );
    // Larger than one NATS message: chunked.
    let big: Vec<u8> = (0..(2 * 1024 * 1024 + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    s.side_put("blobs", "abc", &big).await.unwrap();
    assert_eq!(
        s.side_get("blobs", "abc").await.unwrap().as_deref(),
        Some(&big[..])
    );
    assert_eq!(s.side_keys("secrets").await.unwrap(), ["day-1", "day-2"]);
    s.side_put("secrets", "dax-1", b"x").await.unwrap();
    assert_eq!(
        s.side_keys_prefixed("secrets", "day-").await.unwrap(),
        ["day-1", "day-2"]
    );
    assert!(
        s.side_keys_prefixed("secrets", "none")
            .await
            .unwrap()
            .is_empty()
    );
    s.side_delete("secrets", "dax-1").await.unwrap();
    s.side_delete("secrets", "day-1").await.unwrap();
    assert_eq!(s.side_get("secrets", "day-1").await.unwrap(), None);
    assert!(
        s.side_put("secrets", "a.b", b"x").await.is_err(),
        "names are checked"
    );
    drop(s);
    let s = open().await;
    assert_eq!(s.side_get("secrets", "day-1").await.unwrap(), None);
    assert_eq!(s.side_keys("secrets").await.unwrap(), ["day-2"]);
    // Blobs: the object store on JetStream.
    assert_eq!(s.blob_get("0123abcd").await.unwrap(), None);
    s.blob_put("0123abcd", &big).await.unwrap();
    assert_eq!(
        s.blob_get("0123abcd").await.unwrap().as_deref(),
        Some(&big[..])
    );
    assert_eq!(
        s.side_get("blobs", "abc").await.unwrap().map(|v| v.len()),
        Some(big.len())
    );
    sources(&s, &s.clone(), 1 << 32).await;
}

/// The per-source records: a swap lands only on the revision it read, from either of two
/// handles (two nodes); 20 concurrent read-and-swap loops of increments from both lose
/// none.
async fn sources<S: SideStore>(a: &S, b: &S, label: u64) {
    assert_eq!(a.source_get(label).await.unwrap(), (None, 0));
    let first = a.source_swap(label, 0, b"one").await.unwrap().unwrap();
    let (v, rev) = b.source_get(label).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"one"[..]));
    assert_eq!(
        rev, first,
        "the revision a swap gives is the one a read sees"
    );
    assert!(
        a.source_swap(label, 0, b"stale").await.unwrap().is_none(),
        "created already"
    );
    assert!(b.source_swap(label, rev, b"two").await.unwrap().is_some());
    assert!(
        a.source_swap(label, rev, b"late").await.unwrap().is_none(),
        "b got in first"
    );
    let counter = label + 1;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                loop {
                    let (v, rev) = s.source_get(counter).await.unwrap();
                    let n = v.map_or(0, |v| u32::from_le_bytes(v.try_into().unwrap()));
                    if s.source_swap(counter, rev, &(n + 1).to_le_bytes())
                        .await
                        .unwrap()
                        .is_some()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (v, _) = a.source_get(counter).await.unwrap();
    assert_eq!(v.unwrap(), 20u32.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_side_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    exercise(async || SledLog::open(&path).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_side_store() {
    let server = NatsServer::start();
    let config = NatsConfig::new(server.url());
    exercise(async || NatsLog::connect(&config).await.unwrap()).await;
    // Two connections: two nodes.
    let (a, b) = (
        NatsLog::connect(&config).await.unwrap(),
        NatsLog::connect(&config).await.unwrap(),
    );
    sources(&a, &b, 2 << 32).await;
}

/// The fleet's in-memory store: the same answers while it lives (it is not persisted, so
/// the reopen gives the same instance back).
#[tokio::test]
async fn memory_side_store() {
    let store = MemoryStore::default();
    exercise(async || store.clone()).await;
    assert!(store.bytes() > 2 * 1024 * 1024);
}
