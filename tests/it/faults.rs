//! Nothing lost, nothing stuck: the delivery guarantee of API.md under the
//! faults a fleet meets. After each fault, for every send answered 200, the
//! message is in its recipient's inbox exactly once and in its history, and a
//! wake reached the recipient's gateway after it was stored; no send answered
//! with an error was stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clawbus_testkit::api::Answer;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsServer, Reply, eventually};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// One send of a burst and how it ended.
#[derive(Clone, Debug)]
struct Send {
    key: String,
    content: String,
    /// `None`: no answer (the adapter died under it).
    answer: Option<Answer>,
}

impl Send {
    fn ok(&self) -> bool {
        self.answer.as_ref().is_some_and(|a| a.status == 200)
    }

    fn refused(&self) -> bool {
        self.answer.as_ref().is_some_and(|a| a.status != 200)
    }
}

/// Sends `count` messages `from` → `to` with `concurrency` in flight, each
/// with its own Idempotency-Key. `answered` counts answers as they come.
async fn burst(api: Api, tag: &str, from: &str, to: &str, count: usize, answered: Arc<AtomicUsize>) -> Vec<Send> {
    stream::iter(0..count)
        .map(|i| {
            let (api, answered) = (api.clone(), answered.clone());
            let (key, content) = (format!("{tag}-{i}"), format!("{tag} message {i}"));
            let (from, to) = (from.to_owned(), to.to_owned());
            async move {
                let answer = api.try_send(&from, &to, &content, &key).await;
                answered.fetch_add(1, Ordering::Relaxed);
                Send { key, content, answer }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Waits until `counter` reaches `target`.
async fn until_count(counter: &AtomicUsize, target: usize) {
    eventually("sends to be answered", WAIT, || async { (counter.load(Ordering::Relaxed) >= target).then_some(()) })
        .await;
}

/// Asserts the invariants for `recipient` and returns its inbox.
async fn check_delivery(api: &Api, gateway: &Gateway, recipient: &str, sends: &[Send]) -> Vec<Value> {
    let inbox = api.all_messages(recipient).await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for message in &inbox {
        *copies.entry(message["content"].as_str().unwrap()).or_default() += 1;
    }
    for send in sends {
        let found = copies.get(send.content.as_str()).copied().unwrap_or(0);
        if send.ok() {
            assert_eq!(found, 1, "{} answered 200 is stored {found} times", send.key);
        }
        if send.refused() {
            assert_eq!(found, 0, "{} answered {:?} was stored", send.key, send.answer);
        }
    }
    let history = api.ok(&format!("/api/history?agent={recipient}&limit=1000")).await;
    let in_history = history["messages"].as_array().unwrap().len();
    assert_eq!(in_history, inbox.len().min(1000), "history and inbox agree");
    if let Some(newest) = inbox.iter().filter_map(|m| m["id"].as_u64()).max() {
        eventually("a wake covering the newest message", WAIT, || async {
            gateway.wakes().iter().any(|w| w.up_to >= Some(newest)).then_some(())
        })
        .await;
    }
    inbox
}

/// One host with alice (silent) and bob (woken through `gateway`).
fn alice_and_bob(nats: &NatsServer, gateway: &Gateway) -> AdapterConfig {
    AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice")).agent(AgentSpec::new("bob", gateway))
}

/// Two hosts: alice on A (silent), bob on B (woken through `gateway`).
async fn two_hosts(nats: &NatsServer, gateway: &Gateway) -> (Adapter, Adapter) {
    let a = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"))).await;
    let b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("bob", gateway))).await;
    (a, b)
}

#[tokio::test]
async fn recipient_adapter_killed_mid_burst() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let (a, mut b) = two_hosts(&nats, &gateway).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let sending = tokio::spawn(burst(a.api(), "kill-b", "alice", "bob", 300, answered.clone()));
    until_count(&answered, 100).await;
    b.kill();
    until_count(&answered, 200).await;
    b.restart().await;
    let sends = sending.await.unwrap();
    assert!(sends.iter().all(Send::ok), "sends through A never depended on B");
    // The newest message was stored after B died, so the wake covering it,
    // which check_delivery waits for, came from the restarted B.
    let inbox = check_delivery(&a.api(), &gateway, "bob", &sends).await;
    assert_eq!(inbox.len(), 300);
}

#[tokio::test]
async fn sender_adapter_killed_mid_burst_and_client_retries() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let (mut a, b) = two_hosts(&nats, &gateway).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let sending = tokio::spawn(burst(a.api(), "kill-a", "alice", "bob", 300, answered.clone()));
    until_count(&answered, 100).await;
    a.kill();
    let mut sends = sending.await.unwrap();
    let unanswered = sends.iter().filter(|s| s.answer.is_none()).count();
    assert!(unanswered > 0, "the kill cut off some sends");
    a.restart().await;
    // The client retries what got no answer, with the same keys.
    let api = a.api();
    for send in sends.iter_mut().filter(|s| !s.ok()) {
        send.answer = api.try_send("alice", "bob", &send.content, &send.key).await;
        assert!(send.ok(), "retry of {}: {:?}", send.key, send.answer);
    }
    let inbox = check_delivery(&b.api(), &gateway, "bob", &sends).await;
    assert_eq!(inbox.len(), 300, "each key stored exactly once");
}

#[tokio::test]
async fn nats_restart_during_traffic() {
    let mut nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let (a, b) = two_hosts(&nats, &gateway).await;
    let api = a.api();
    let before = burst(api.clone(), "before", "alice", "bob", 50, Arc::default()).await;
    let mut first_ids: Vec<u64> = before.iter().filter_map(|s| s.answer.as_ref()?.body["id"].as_u64()).collect();
    first_ids.sort_unstable();
    let acked = api.post("/api/ack", &json!({"agent": "bob", "ids": &first_ids[..10]})).await;
    assert_eq!(acked.body["acked"], 10);

    // Traffic keeps flowing while the server goes away.
    let answered = Arc::new(AtomicUsize::new(0));
    let during = tokio::spawn(burst(api.clone(), "during", "alice", "bob", 400, answered.clone()));
    until_count(&answered, 50).await;
    nats.stop();
    let outage = Instant::now();
    let cpu_before = a.resources().unwrap().cpu + b.resources().unwrap().cpu;
    let refused = eventually("a send refused while NATS is down", WAIT, || async {
        let answer =
            api.try_send("alice", "bob", "while down", &format!("down-{}", outage.elapsed().as_nanos())).await?;
        (answer.status != 200).then_some(answer)
    })
    .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "unavailable");
    assert!(refused.retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(api.get("/readyz").await.status, 503);
    assert_eq!(api.get("/healthz").await.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = a.resources().unwrap().cpu + b.resources().unwrap().cpu - cpu_before;
    let wall = outage.elapsed();
    assert!(cpu < wall / 2, "adapters used {cpu:?} of CPU in {wall:?} of outage");

    nats.start_again();
    a.wait_ready().await;
    b.wait_ready().await;
    let mut sends = during.await.unwrap();
    let (ok, refused) = (sends.iter().filter(|s| s.ok()).count(), sends.iter().filter(|s| s.refused()).count());
    assert!(ok >= 50 && refused > 0, "{ok} stored, {refused} refused");
    assert!(sends.iter().filter_map(|s| s.answer.as_ref()).all(|a| a.status == 200 || a.status == 503));
    sends.extend(before);
    sends.extend(burst(api.clone(), "after", "alice", "bob", 20, Arc::default()).await);
    let inbox = check_delivery(&api, &gateway, "bob", &sends).await;
    let read: Vec<u64> = inbox.iter().filter(|m| m["read"] == true).map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(read, first_ids[..10], "read marks survived");
}

#[tokio::test]
async fn adapter_started_while_nats_is_unreachable() {
    let mut nats = NatsServer::start();
    nats.stop();
    let gateway = Gateway::start("hook").await;
    let config = alice_and_bob(&nats, &gateway);
    let adapter = Adapter::launch(config).await;
    let api = adapter.api();
    assert_eq!(api.get("/healthz").await.status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.get("/readyz").await.status, 503);
    let send = api.post("/api/send", &json!({"from": "alice", "to": "bob", "content": "too early"})).await;
    assert_eq!((send.status, send.retry_after.is_some()), (503, true));
    nats.start_again();
    adapter.wait_ready().await;
    api.send("alice", "bob", "now it works").await;
    eventually("the wake", WAIT, || async { (!gateway.wakes().is_empty()).then_some(()) }).await;
    assert_eq!(api.inbox("bob").await["unread"], 1, "the early send was not stored");
}

#[tokio::test]
async fn gateway_down_then_back_gets_one_wake_not_a_storm() {
    let nats = NatsServer::start();
    let mut gateway = Gateway::start("hook").await;
    let (a, _b) = two_hosts(&nats, &gateway).await;
    gateway.stop().await;
    let sends = burst(a.api(), "outage", "alice", "bob", 50, Arc::default()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    gateway.resume().await;
    check_delivery(&a.api(), &gateway, "bob", &sends).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every message was stored before the gateway came back, so the first
    // call after it covers them all, and no other call follows.
    let newest = sends.iter().filter_map(|s| s.answer.as_ref()?.body["id"].as_u64()).max();
    let calls = gateway.calls();
    assert_eq!(calls.len(), 1, "one wake for 50 waiting messages: {calls:?}");
    assert_eq!((calls[0].status, calls[0].up_to), (200, newest));
}

#[tokio::test]
async fn a_slow_gateway_does_not_delay_other_agents() {
    let nats = NatsServer::start();
    let (slow, fast) = (Gateway::start("hook").await, Gateway::start("hook").await);
    slow.set_delay(Duration::from_secs(5));
    let config = AdapterConfig::new("hostA", nats.url())
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("bob", &slow))
        .agent(AgentSpec::new("carol", &fast));
    let adapter = Adapter::start(config).await;
    let api = adapter.api();
    api.send("alice", "bob", "for the slow one").await;
    let bob_call = eventually("bob's call to arrive", WAIT, || async { slow.calls().first().cloned() }).await;
    api.send("alice", "carol", "for the fast one").await;
    let carol = eventually("carol's wake", WAIT, || async { fast.wakes().first().cloned() }).await;
    assert!(slow.wakes().is_empty(), "carol was woken while bob's call was still pending");
    assert!(carol.arrived < bob_call.arrived + Duration::from_secs(5));
    eventually("bob's slow wake", WAIT, || async { slow.wakes().first().cloned() }).await;
}

#[tokio::test]
async fn a_long_gateway_outage_keeps_memory_flat() {
    let nats = NatsServer::start();
    let mut gateway = Gateway::start("hook").await;
    let (a, b) = two_hosts(&nats, &gateway).await;
    gateway.stop().await;
    let filler = "x".repeat(4096);
    let send_many = |count: usize| {
        let api = a.api();
        let filler = filler.clone();
        async move {
            stream::iter(0..count)
                .map(|i| {
                    let (api, content) = (api.clone(), format!("{i} {filler}"));
                    async move { api.send("alice", "bob", &content).await }
                })
                .buffer_unordered(16)
                .count()
                .await
        }
    };
    send_many(500).await;
    let settled = eventually("the first messages dispatched", WAIT, || async { b.resources() }).await;
    send_many(5000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = b.resources().unwrap().rss.saturating_sub(settled.rss);
    // 5,000 messages of 4 KiB are 20 MiB: a queue of them would show.
    assert!(grown < 8 << 20, "bob's adapter grew by {} KiB during the outage", grown >> 10);
    gateway.resume().await;
    eventually("the wake after the outage", WAIT, || async { (!gateway.wakes().is_empty()).then_some(()) }).await;
}

#[tokio::test]
async fn sigterm_finishes_requests_and_wakes_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = alice_and_bob(&nats, &gateway);
    let mut adapter = Adapter::start(config).await;
    let api = adapter.api();

    // A wake in flight (the gateway takes 1 s) and a request half sent.
    gateway.script([Reply::Delay(Duration::from_secs(1))]);
    api.send("alice", "bob", "wake in flight").await;
    eventually("the wake call to start", WAIT, || async { (!gateway.calls().is_empty()).then_some(()) }).await;
    let mut socket = tokio::net::TcpStream::connect(adapter.base().trim_start_matches("http://")).await.unwrap();
    let body = json!({"from": "alice", "to": "bob", "content": "request in flight"}).to_string();
    let head = format!(
        "POST /api/send HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let finish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        socket.write_all(body.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, took) = adapter.terminate().await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    let answer = finish.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "the request in flight was answered: {answer}");
    assert_eq!(gateway.wakes().len(), 1, "the wake in flight finished");
    adapter.restart().await;
    let inbox = api.inbox("bob").await;
    assert_eq!(inbox["unread"], 2);
    // The second message was stored after the first wake: it gets its own.
    eventually("the wake for the request in flight", WAIT, || async { (gateway.wakes().len() >= 2).then_some(()) })
        .await;
}

#[tokio::test]
async fn sigterm_with_a_stuck_wake_exits_promptly_and_replays_it() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = alice_and_bob(&nats, &gateway);
    let mut adapter = Adapter::start(config).await;
    gateway.script([Reply::Delay(Duration::from_secs(20))]);
    adapter.api().send("alice", "bob", "stuck").await;
    eventually("the call to start", WAIT, || async { (!gateway.calls().is_empty()).then_some(()) }).await;
    let (status, took) = adapter.terminate().await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    adapter.restart().await;
    eventually("the replayed wake", WAIT, || async { (!gateway.wakes().is_empty()).then_some(()) }).await;
}

/// An adapter whose sends give up waiting after 500 ms, and a send from
/// alice to bob started into a frozen server: the publish goes out on the
/// open connection and no acknowledgement can come back.
async fn send_into_a_stall(
    nats: &NatsServer,
    gateway: &Gateway,
    content: &'static str,
    key: &'static str,
) -> (Adapter, tokio::task::JoinHandle<Option<Answer>>) {
    let adapter = Adapter::start(alice_and_bob(nats, gateway).nats("send_timeout = \"500ms\"")).await;
    nats.freeze();
    let api = adapter.api();
    let sending = tokio::spawn(async move { api.try_send("alice", "bob", content, key).await });
    (adapter, sending)
}

/// A send into a stall, whose server then dies with the publish unread in
/// its socket and comes back: the send is settled as not stored.
async fn send_lost_with_its_server(content: &'static str, key: &'static str) -> (NatsServer, Gateway, Adapter, Answer) {
    let mut nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let (adapter, sending) = send_into_a_stall(&nats, &gateway, content, key).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    nats.kill();
    nats.start_again();
    let answer = sending.await.unwrap().unwrap();
    (nats, gateway, adapter, answer)
}

#[tokio::test]
async fn a_late_acknowledgement_is_settled_before_the_answer() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let (adapter, sending) = send_into_a_stall(&nats, &gateway, "sent into the stall", "stall-1").await;
    let api = adapter.api();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!sending.is_finished(), "no answer while the outcome is unknown");
    nats.thaw();
    let answer = sending.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "the publish landed: {:?}", answer.body);
    let inbox = api.all_messages("bob").await;
    assert_eq!(Api::ids(&json!({ "messages": inbox })), [answer.body["id"].as_u64().unwrap()]);
}

#[tokio::test]
async fn a_publish_lost_with_its_server_is_answered_503_and_never_stored() {
    let (_nats, _gateway, adapter, answer) = send_lost_with_its_server("lost with the server", "lost-1").await;
    let api = adapter.api();
    assert_eq!((answer.status, answer.body["error"].as_str()), (503, Some("unavailable")), "{:?}", answer.body);
    assert!(answer.retry_after.is_some());
    assert!(api.all_messages("bob").await.is_empty(), "a send answered 503 is not stored");
    // The client's retry with the same key is a new send, stored once.
    let retry = api.try_send("alice", "bob", "lost with the server", "lost-1").await.unwrap();
    assert_eq!((retry.status, retry.body.get("duplicate")), (200, None), "{:?}", retry.body);
    let again = api.try_send("alice", "bob", "lost with the server", "lost-1").await.unwrap();
    assert_eq!((&again.body["id"], &again.body["duplicate"]), (&retry.body["id"], &json!(true)));
    assert_eq!(api.all_messages("bob").await.len(), 1);
}

/// Without a key, a send settled after a stall is this send: its marker
/// finds the send's own message (by its nonce), not "a duplicate".
#[tokio::test]
async fn a_keyless_send_settled_after_a_stall_is_not_called_a_duplicate() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let adapter = Adapter::start(alice_and_bob(&nats, &gateway).nats("send_timeout = \"500ms\"")).await;
    let api = adapter.api();
    nats.freeze();
    let sending = tokio::spawn({
        let api = api.clone();
        async move { api.post("/api/send", &json!({"from": "alice", "to": "bob", "content": "no key"})).await }
    });
    // Past the send deadline: the marker is queued behind the message.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.thaw();
    let answer = sending.await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body.get("duplicate"), None, "{:?}", answer.body);
    assert_eq!(Api::ids(&json!({"messages": api.all_messages("bob").await})), [answer.body["id"].as_u64().unwrap()]);
}

/// A client key may contain `#`: it never takes the id the adapter uses for
/// a retry after a settled 503, so neither send is mistaken for the other.
#[tokio::test]
async fn a_key_containing_a_hash_does_not_collide_with_a_retry() {
    let (_nats, _gateway, adapter, lost) = send_lost_with_its_server("settled as not stored", "x").await;
    let api = adapter.api();
    assert_eq!(lost.status, 503, "{:?}", lost.body);
    adapter.wait_ready().await;
    let hashed = api.try_send("alice", "bob", "a key with a hash", "x#1").await.unwrap();
    assert_eq!((hashed.status, hashed.body.get("duplicate")), (200, None), "{:?}", hashed.body);
    let retry = api.try_send("alice", "bob", "settled as not stored", "x").await.unwrap();
    assert_eq!((retry.status, retry.body.get("duplicate")), (200, None), "{:?}", retry.body);
    assert_ne!(retry.body["id"], hashed.body["id"]);
    let contents: Vec<Value> = api.all_messages("bob").await.iter().map(|m| m["content"].clone()).collect();
    assert_eq!(contents, [json!("a key with a hash"), json!("settled as not stored")]);
}

/// NATS gone for longer than the send and settle deadlines: 504, "outcome
/// unknown"; once it is back, a retry with the same key finds the one copy.
#[tokio::test]
async fn a_send_that_cannot_be_settled_is_answered_504_and_a_retry_resolves_it() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = alice_and_bob(&nats, &gateway).nats("send_timeout = \"500ms\"").nats("settle_timeout = \"1s\"");
    let adapter = Adapter::start(config).await;
    let api = adapter.api();
    nats.freeze();
    let answer = api.try_send("alice", "bob", "in limbo", "limbo-1").await.unwrap();
    assert_eq!((answer.status, answer.body["error"].as_str()), (504, Some("unavailable")), "{:?}", answer.body);
    assert!(answer.body["message"].as_str().unwrap().contains("Idempotency-Key"), "{:?}", answer.body);
    nats.thaw();
    adapter.wait_ready().await;
    let retry = eventually("the retry to be answered 200", WAIT, || async {
        api.try_send("alice", "bob", "in limbo", "limbo-1").await.filter(|a| a.status == 200)
    })
    .await;
    let inbox = api.all_messages("bob").await;
    assert_eq!(Api::ids(&json!({ "messages": inbox })), [retry.body["id"].as_u64().unwrap()], "stored once");
}

/// Past `nats.max_sends_in_flight` sends waiting for JetStream, a send is
/// refused at once instead of queueing towards its deadline.
#[tokio::test]
async fn sends_beyond_the_in_flight_cap_are_refused_at_once() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = alice_and_bob(&nats, &gateway).nats("max_sends_in_flight = 2").nats("send_timeout = \"3s\"");
    let adapter = Adapter::start(config).await;
    let api = adapter.api();
    nats.freeze();
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.try_send("alice", "bob", &format!("waiting {i}"), &format!("w{i}")).await })
        })
        .collect();
    // Loopback requests reach the adapter in well under a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = api.try_send("alice", "bob", "one too many", "over").await.unwrap();
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(refused.body["message"].as_str().unwrap().contains("too many sends"), "{:?}", refused.body);
    assert!(waiting.iter().all(|task| !task.is_finished()), "the two in flight are still waiting");
    nats.thaw();
    for task in waiting {
        assert_eq!(task.await.unwrap().unwrap().status, 200);
    }
    let contents: Vec<Value> = api.all_messages("bob").await.iter().map(|m| m["content"].clone()).collect();
    assert!(!contents.contains(&json!("one too many")), "the refused send stored nothing");
}
