//! Reads whose replies outgrow the connection's buffer for them: the client
//! drops what does not fit, and a page answered 200 must still hold every
//! unread message.

use std::collections::BTreeSet;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, OneHost};
use futures_util::future::join_all;
use serde_json::json;

/// Messages in bob's inbox: more than one page.
const STORED: usize = 1200;
/// Inbox reads at once.
const READERS: usize = 160;

/// A buffer smaller than one page: a read can overflow it by itself (the
/// client drops replies), and must notice instead of answering a short page.
#[tokio::test]
async fn full_pages_through_a_buffer_smaller_than_a_page_are_complete_or_refused() {
    concurrent_full_pages_are_complete_or_refused(256).await;
}

/// A buffer that holds a few pages, not the replies of every read at once:
/// reads wait for room instead of overflowing it, and get answered.
#[tokio::test]
async fn full_pages_through_a_buffer_smaller_than_the_load_are_complete_or_refused() {
    let complete = concurrent_full_pages_are_complete_or_refused(4096).await;
    assert!(complete > 0, "some reads are answered");
}

/// Many concurrent reads of 1,000 messages each, through an adapter whose
/// buffer holds `reply_buffer` replies, either answer the complete page or
/// 503, never a page with messages missing. Returns how many answered 200.
async fn concurrent_full_pages_are_complete_or_refused(reply_buffer: usize) -> usize {
    let host =
        OneHost::start_with(&[], |config, _| config.agent(AgentSpec::silent("alice")).agent(AgentSpec::silent("bob")))
            .await;
    let api = host.api();
    let mut ids = Vec::new();
    for chunk in (0..STORED).collect::<Vec<_>>().chunks(50) {
        let sends = chunk.iter().map(|i| {
            let api = &api;
            async move { api.send("alice", if i % 10 == 0 { "*" } else { "bob" }, &format!("m{i}")).await }
        });
        ids.extend(join_all(sends).await);
    }
    ids.sort_unstable();
    // Some read, so that the page is a particular set of ids.
    let acked: Vec<u64> = ids.iter().copied().step_by(7).collect();
    let answer = api.post("/api/ack", &json!({"agent": "bob", "ids": acked})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let acked: BTreeSet<u64> = acked.into_iter().collect();
    let unread: Vec<u64> = ids.iter().copied().filter(|id| !acked.contains(id)).collect();
    let page: Vec<u64> = unread.iter().copied().take(1000).collect();

    let reader = Adapter::start_in_process(
        AdapterConfig::new("reader", host.nats.url())
            .agent(AgentSpec::silent("carol"))
            .nats(&format!("reply_buffer = {reply_buffer}")),
    )
    .await;
    let api = reader.api();
    let answers = join_all((0..READERS).map(|_| api.get("/api/inbox?agent=bob&limit=1000"))).await;
    let mut complete = 0;
    for answer in &answers {
        match answer.status {
            200 => {
                assert_eq!(Api::ids(&answer.body), page, "a page answered 200 holds exactly the unread ids");
                assert_eq!(answer.body["unread"], unread.len(), "and counts every unread message");
                complete += 1;
            }
            503 => assert_eq!(answer.body["error"], "unavailable", "{:?}", answer.body),
            other => panic!("answered {other}: {:?}", answer.body),
        }
    }
    let dropped = reader.log().matches("slow consumer").count();
    println!(
        "buffer {reply_buffer}: {complete} of {READERS} reads answered 200, the others 503; {dropped} drops logged"
    );
    complete
}
