//! Helpers of the whole-system tests beyond the sandbox's (`hotaru_test_support`).

#![allow(dead_code)]

use std::collections::BTreeSet;

use hotaru_events::{Context, DomainEvent};
use hotaru_log::{EventLog, RecordedCommit};

/// Every demo sequence number stored in the log.
pub(crate) async fn stored_demo_seqs<L: EventLog>(log: &L) -> BTreeSet<u64> {
    let mut seqs = BTreeSet::new();
    let mut from = 1;
    loop {
        let batch: Vec<RecordedCommit> =
            log.read_all(Context::Demo, from, 8192).await.expect("read");
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for c in &batch {
            for e in c.commit.envelopes() {
                if let DomainEvent::DemoRecorded(d) = e.expect("decodes").event {
                    seqs.insert(d.seq);
                }
            }
        }
    }
    seqs
}

/// The body of a GET that must succeed, as text.
pub(crate) async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let r = http.get(url).send().await.expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.text().await.expect("a text body")
}
