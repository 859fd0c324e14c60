//! The HTTP API of API.md, endpoint by endpoint, against a real nats-server.

use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, OneHost, eventually};
use serde_json::{Value, json};

fn send_body(from: &str, to: &str, content: &str) -> Value {
    json!({"from": from, "to": to, "content": content})
}

#[tokio::test]
async fn send_inbox_ack_round_trip() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let first = api
        .post("/api/send", &json!({"from": "alice", "to": "bob", "content": "deploy done", "priority": "high"}))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["ok"], true);
    let id = first.body["id"].as_u64().unwrap();
    assert!(first.body["timestamp"].as_str().unwrap().ends_with('Z'));
    let reply =
        api.post("/api/send", &json!({"from": "bob", "to": "alice", "content": "running tests", "reply_to": id})).await;
    assert!(reply.body["id"].as_u64().unwrap() > id, "ids increase in send order");

    let inbox = api.inbox("bob").await;
    assert_eq!(inbox["agent"], "bob");
    assert_eq!(inbox["unread"], 1);
    let message = &inbox["messages"][0];
    assert_eq!(message["id"].as_u64(), Some(id));
    assert_eq!(
        (&message["from"], &message["to"], &message["content"], &message["priority"], &message["read"]),
        (&json!("alice"), &json!("bob"), &json!("deploy done"), &json!("high"), &json!(false))
    );
    assert_eq!(message["reply_to"], Value::Null);
    assert_eq!(message["timestamp"], first.body["timestamp"]);
    assert_eq!(api.inbox("alice").await["messages"][0]["reply_to"].as_u64(), Some(id));

    // Reading changes nothing; acknowledging does, once.
    assert_eq!(api.inbox("bob").await["unread"], 1);
    let acked = api.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await;
    assert_eq!(acked.body, json!({"ok": true, "acked": 1, "ignored": []}));
    let again = api.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await;
    assert_eq!(again.body, json!({"ok": true, "acked": 0, "ignored": []}));
    let inbox = api.inbox("bob").await;
    assert_eq!((inbox["unread"].as_u64(), Api::ids(&inbox).len()), (Some(0), 0));
    let all = api.ok("/api/inbox?agent=bob&unread=false").await;
    assert_eq!(all["messages"][0]["read"], true);
}

#[tokio::test]
async fn inbox_pages_filters_and_counts() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let mut ids = Vec::new();
    for i in 0..7 {
        let priority = if i % 3 == 0 { "urgent" } else { "normal" };
        let body = json!({"from": "alice", "to": "bob", "content": format!("m{i}"), "priority": priority});
        ids.push(api.post("/api/send", &body).await.body["id"].as_u64().unwrap());
    }
    let page = api.ok("/api/inbox?agent=bob&limit=3").await;
    assert_eq!(Api::ids(&page), ids[..3]);
    assert_eq!(page["unread"], 7, "unread counts all unread, not the page");
    let next = api.ok(&format!("/api/inbox?agent=bob&limit=3&after={}", ids[2])).await;
    assert_eq!(Api::ids(&next), ids[3..6]);
    let urgent = api.ok("/api/inbox?agent=bob&priority=urgent").await;
    assert_eq!(Api::ids(&urgent), [ids[0], ids[3], ids[6]]);

    // Out-of-order acks, ids outside the inbox, up_to, all.
    let acked = api.post("/api/ack", &json!({"agent": "bob", "ids": [ids[1], ids[4], 999_999, ids[4]]})).await;
    assert_eq!(acked.body, json!({"ok": true, "acked": 2, "ignored": [999_999]}));
    let unread = api.ok("/api/inbox?agent=bob").await;
    assert_eq!(Api::ids(&unread), [ids[0], ids[2], ids[3], ids[5], ids[6]]);
    assert_eq!(unread["unread"], 5);
    let everything = api.ok("/api/inbox?agent=bob&unread=false").await;
    let read: Vec<bool> = everything["messages"].as_array().unwrap().iter().map(|m| m["read"] == true).collect();
    assert_eq!(read, [false, true, false, false, true, false, false]);
    let up_to = api.post("/api/ack", &json!({"agent": "bob", "up_to": ids[3]})).await;
    assert_eq!(up_to.body["acked"], 3, "{:?}", up_to.body);
    assert_eq!(Api::ids(&api.inbox("bob").await), [ids[5], ids[6]]);
    let all = api.post("/api/ack", &json!({"agent": "bob", "all": true})).await;
    assert_eq!(all.body["acked"], 2);
    assert_eq!(api.inbox("bob").await["unread"], 0);
    // alice's own sends are not in her inbox.
    let not_hers = api.post("/api/ack", &json!({"agent": "alice", "ids": [ids[0]]})).await;
    assert_eq!(not_hers.body, json!({"ok": true, "acked": 0, "ignored": [ids[0]]}));
}

#[tokio::test]
async fn broadcasts_are_read_per_recipient_and_skip_later_agents() {
    let host = OneHost::start(&["alice", "bob", "carol"]).await;
    let api = host.api();
    let star = api.post("/api/send", &json!({"from": "alice", "to": "*", "content": "all hands"})).await;
    let omitted = api.post("/api/send", &json!({"from": "alice", "content": "to is optional"})).await;
    let null = api.post("/api/send", &json!({"from": "alice", "to": null, "content": "null too"})).await;
    let ids: Vec<u64> = [star, omitted, null].iter().map(|a| a.body["id"].as_u64().unwrap()).collect();
    for agent in ["bob", "carol"] {
        let inbox = api.inbox(agent).await;
        assert_eq!(Api::ids(&inbox), ids, "{agent}");
        assert_eq!(inbox["messages"][0]["to"], "*");
    }
    assert_eq!(api.inbox("alice").await["unread"], 0, "the sender does not get its own broadcast");
    api.post("/api/ack", &json!({"agent": "bob", "all": true})).await;
    assert_eq!(api.inbox("bob").await["unread"], 0);
    assert_eq!(api.inbox("carol").await["unread"], 3, "bob's ack is bob's alone");

    // An agent registered later does not find older broadcasts.
    let later = Adapter::start(AdapterConfig::new("hostB", host.nats.url()).agent(AgentSpec::silent("dave"))).await;
    let dave = later.api();
    assert_eq!(dave.inbox("dave").await["unread"], 0);
    let fresh = dave.send("alice", "*", "welcome").await;
    let own = dave.send("dave", "*", "hello all").await;
    let from_bob = api.send("bob", "*", "hi dave").await;
    assert_eq!(Api::ids(&dave.inbox("dave").await), [fresh, from_bob], "newer broadcasts but its own");
    assert_eq!(Api::ids(&api.inbox("bob").await), [fresh, own], "bob acked the older ones");
    assert_eq!(Api::ids(&api.inbox("carol").await), [ids[0], ids[1], ids[2], fresh, own, from_bob]);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_id_and_stores_once() {
    let host = OneHost::start(&["alice", "bob", "carol"]).await;
    let api = host.api();
    let send = |from: &'static str, key: &'static str| {
        let api = api.clone();
        async move {
            let body = send_body(from, "bob", "exactly once").to_string().into_bytes();
            api.post_raw("/api/send", Some("application/json"), body, &[("Idempotency-Key", key)]).await
        }
    };
    let first = send("alice", "retry-1").await;
    let second = send("alice", "retry-1").await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(first.body["timestamp"], second.body["timestamp"], "the original's timestamp");
    assert_eq!(second.body["duplicate"], true);
    // Keys belong to their sender.
    let other = send("carol", "retry-1").await;
    assert_ne!(other.body["id"], first.body["id"]);
    assert_eq!(api.inbox("bob").await["unread"], 2);
}

#[tokio::test]
async fn content_aliases_are_accepted_when_content_is_absent() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    for alias in ["message", "text", "body"] {
        let answer = api.post("/api/send", &json!({"from": "alice", "to": "bob", alias: alias})).await;
        assert_eq!(answer.status, 200, "{alias}: {:?}", answer.body);
    }
    let contents: Vec<Value> =
        api.inbox("bob").await["messages"].as_array().unwrap().iter().map(|m| m["content"].clone()).collect();
    assert_eq!(contents, [json!("message"), json!("text"), json!("body")]);
}

#[tokio::test]
async fn history_filters_by_peer_time_and_page() {
    let host = OneHost::start(&["alice", "bob", "carol"]).await;
    let api = host.api();
    let a1 = api.send("alice", "bob", "a1").await;
    let c1 = api.send("carol", "bob", "c1").await;
    let b1 = api.send("bob", "alice", "b1").await;
    let x = api.send("carol", "alice", "not bob's").await;
    let bc = api.send("carol", "*", "broadcast").await;
    let own = api.send("bob", "*", "bob to all").await;

    let history = api.ok("/api/history?agent=bob").await;
    assert_eq!(Api::ids(&history), [a1, c1, b1, bc, own]);
    let sent: Vec<bool> = history["messages"].as_array().unwrap().iter().map(|m| m["read"] == true).collect();
    assert_eq!(sent, [false, false, true, false, true], "own sends count as read");
    let with_alice = api.ok("/api/history?agent=bob&with=alice").await;
    assert_eq!(Api::ids(&with_alice), [a1, b1, own]);
    let with_carol = api.ok("/api/history?agent=bob&with=carol").await;
    assert_eq!(Api::ids(&with_carol), [c1, bc, own]);
    let page = api.ok(&format!("/api/history?agent=bob&limit=2&after={c1}")).await;
    assert_eq!(Api::ids(&page), [b1, bc]);
    assert!(!Api::ids(&api.ok("/api/history?agent=bob").await).contains(&x));

    // since/until take RFC 3339 and unix seconds.
    let stamp =
        |id| history["messages"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap()["timestamp"].clone();
    let since = stamp(b1).as_str().unwrap().to_owned();
    let window = api.ok(&format!("/api/history?agent=bob&since={since}")).await;
    assert_eq!(Api::ids(&window), [b1, bc, own]);
    let until = api.ok(&format!("/api/history?agent=bob&until={since}")).await;
    assert_eq!(Api::ids(&until), [a1, c1, b1]);
    let future = api.ok("/api/history?agent=bob&since=4102444800").await;
    assert_eq!(Api::ids(&future), Vec::<u64>::new());
    let past = api.ok("/api/history?agent=bob&since=0&limit=1").await;
    assert_eq!(Api::ids(&past), [a1]);
}

#[tokio::test]
async fn agents_and_stats_describe_the_fleet() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    api.send("alice", "bob", "one").await;
    api.send("alice", "bob", "two").await;
    let agents = api.ok("/api/agents").await;
    let rows = agents["agents"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let bob = rows.iter().find(|r| r["name"] == "bob").unwrap();
    assert_eq!((&bob["host"], &bob["online"], &bob["unread"]), (&json!("hostA"), &json!(true), &json!(2)));
    assert!(bob["last_seen"].as_str().unwrap().ends_with('Z'));

    let stats = eventually("both wakes counted", Duration::from_secs(10), || async {
        let stats = api.ok("/api/stats").await;
        (stats["wakes"]["sent"].as_u64() >= Some(1)).then_some(stats)
    })
    .await;
    assert_eq!(
        (stats["messages"].as_u64(), stats["agents"].as_u64(), stats["online"].as_u64()),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(stats["unread"], json!({"alice": 0, "bob": 2}));
    assert!(stats["wakes"]["latency_ms"]["p50"].as_f64().is_some(), "{stats}");
}

#[tokio::test]
async fn unprefixed_paths_serve_the_same_api() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let sent = api.post("/send", &send_body("alice", "bob", "old client")).await;
    assert_eq!(sent.status, 200);
    let id = sent.body["id"].as_u64().unwrap();
    assert_eq!(Api::ids(&api.ok("/inbox?agent=bob").await), [id]);
    assert_eq!(Api::ids(&api.ok("/history?agent=bob").await), [id]);
    assert_eq!(api.ok("/agents").await["agents"].as_array().unwrap().len(), 2);
    assert_eq!(api.ok("/stats").await["messages"], 1);
    assert_eq!(api.post("/ack", &json!({"agent": "bob", "all": true})).await.body["acked"], 1);
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_paths() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    assert_eq!(api.get("/healthz").await.status, 200);
    assert_eq!(api.get("/readyz").await.status, 200);
    api.send("alice", "bob", "counted").await;
    let refused = api.post_raw("/api/send", Some("text/plain"), b"{}".to_vec(), &[]).await;
    assert_eq!(refused.status, 415);
    let metrics = api.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("clawbus_sends_total{outcome=\"stored\"} 1"), "{text}");
    assert!(text.contains("clawbus_sends_total{outcome=\"rejected\"} 1"), "{text}");
    assert!(text.contains("clawbus_nats_connected 1"), "{text}");
    let missing = api.get("/api/nope").await;
    assert_eq!((missing.status, &missing.body["error"]), (404, &json!("not_found")));
    let wrong_method = api.get("/api/send").await;
    assert_eq!((wrong_method.status, wrong_method.body["ok"].clone()), (405, json!(false)));
}

#[tokio::test]
async fn stream_replays_from_last_event_id_then_goes_live() {
    let host = OneHost::start(&["alice", "bob", "carol"]).await;
    let api = host.api();
    let m1 = api.send("alice", "bob", "one").await;
    let m2 = api.send("alice", "bob", "two").await;
    api.send("alice", "carol", "not for bob").await;
    let m3 = api.send("carol", "*", "to all").await;
    let http = clawbus_testkit::http_client(Duration::from_secs(60));
    let mut stream = http
        .get(format!("{}/api/stream?agent=bob", api.base()))
        .header("Last-Event-ID", m1.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let replayed = clawbus_testkit::api::read_events(&mut stream, 2).await;
    assert_eq!(replayed.iter().map(|e| e["id"].as_u64().unwrap()).collect::<Vec<_>>(), [m2, m3]);
    let live = api.send("alice", "bob", "live").await;
    let event = clawbus_testkit::api::read_events(&mut stream, 1).await;
    assert_eq!((event[0]["id"].as_u64(), &event[0]["content"]), (Some(live), &json!("live")));

    // `?after=` works like Last-Event-ID; without either, only new messages come.
    let mut after = http.get(format!("{}/stream?agent=bob&after={m2}", api.base())).send().await.unwrap();
    assert_eq!(clawbus_testkit::api::read_events(&mut after, 1).await[0]["id"].as_u64(), Some(m3));
    let mut fleet = http.get(format!("{}/api/stream", api.base())).send().await.unwrap();
    let newest = api.send("bob", "carol", "fleet sees this").await;
    assert_eq!(clawbus_testkit::api::read_events(&mut fleet, 1).await[0]["id"].as_u64(), Some(newest));
}

/// What the OpenClaw channel plugin resumes by: a stream opened without an id
/// starts, once the adapter has answered, at the next message stored, so
/// opening it and then reading the unread inbox misses nothing.
#[tokio::test]
async fn a_stream_opened_before_reading_the_inbox_misses_nothing() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let before = api.send("alice", "bob", "stored before the stream").await;
    let http = clawbus_testkit::http_client(Duration::from_secs(60));
    let mut stream = http.get(format!("{}/api/stream?agent=bob", api.base())).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let after = api.send("alice", "bob", "stored after the stream answered").await;
    let inbox = api.inbox("bob").await;
    assert_eq!(Api::ids(&inbox), [before, after], "the unread inbox holds both");
    let live = clawbus_testkit::api::read_events(&mut stream, 1).await;
    assert_eq!(live[0]["id"].as_u64(), Some(after), "the stream starts after what was stored before it answered");
}

#[tokio::test]
async fn tokens_restrict_agents_to_themselves() {
    let host = OneHost::start_with(&["alice", "bob"], |config, _| {
        config.http("operator_token = \"op-token\"").http("tokens = { alice = \"alice-token\", bob = \"bob-token\" }")
    })
    .await;
    let open = host.api();
    let alice = open.with_token("alice-token");
    let bob = open.with_token("bob-token");
    let operator = open.with_token("op-token");

    let anonymous = open.post("/api/send", &send_body("alice", "bob", "x")).await;
    assert_eq!((anonymous.status, &anonymous.body["error"]), (401, &json!("unauthorized")));
    assert_eq!(open.with_token("wrong").get("/api/agents").await.status, 401);
    let spoof = alice.post("/api/send", &send_body("bob", "alice", "x")).await;
    assert_eq!((spoof.status, &spoof.body["error"]), (403, &json!("forbidden")));
    assert_eq!(alice.post("/api/send", &send_body("alice", "bob", "hi")).await.status, 200);
    assert_eq!(alice.get("/api/inbox?agent=bob").await.status, 403);
    assert_eq!(alice.get("/api/history?agent=bob").await.status, 403);
    assert_eq!(alice.post("/api/ack", &json!({"agent": "bob", "all": true})).await.status, 403);
    assert_eq!(alice.get("/api/stream?agent=bob").await.status, 403);
    assert_eq!(alice.get("/api/stream").await.status, 403, "the fleet stream is the operator's");
    assert_eq!(bob.ok("/api/inbox?agent=bob").await["unread"], 1);
    assert_eq!(alice.get("/api/agents").await.status, 200);
    assert_eq!(alice.get("/api/stats").await.status, 200);
    assert_eq!(operator.post("/api/send", &send_body("bob", "alice", "as bob")).await.status, 200);
    assert_eq!(operator.ok("/api/inbox?agent=alice").await["unread"], 1);
    for open_path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(open.get(open_path).await.status, 200, "{open_path}");
    }
}

/// An SSE response read event by event, by id.
struct Events {
    response: reqwest::Response,
    /// Received, not yet a whole event.
    buffer: String,
}

impl Events {
    async fn open(request: reqwest::RequestBuilder) -> Events {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Events { response, buffer: String::new() }
    }

    /// Ids of the events in what arrives next.
    async fn more(&mut self) -> Vec<u64> {
        let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
            .await
            .expect("an event in time")
            .expect("stream readable")
            .expect("stream open");
        self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        let mut ids = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            ids.extend(
                block.lines().find_map(|line| line.strip_prefix("id:")).map(|id| id.trim().parse::<u64>().unwrap()),
            );
        }
        ids
    }

    /// Ids of the events until one of at least `last`.
    async fn until(&mut self, last: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        while ids.last().is_none_or(|&id| id < last) {
            ids.extend(self.more().await);
        }
        ids
    }
}

/// Consumers the server holds on the message stream.
async fn consumers(nats: &clawbus_testkit::NatsServer) -> usize {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.get_stream("CLAWBUS").await.unwrap().info().await.unwrap().state.consumer_count
}

/// A sent message: id, sender, recipient (`*`: everyone).
type Sent = (u64, &'static str, &'static str);

/// What `agent`'s stream (`None`: the fleet's) shows after `after`.
fn shown(sent: &[Sent], agent: Option<&str>, after: u64) -> Vec<u64> {
    let mine = |&(_, from, to): &Sent| agent.is_none_or(|me| to == me || (to == "*" && from != me));
    sent.iter().filter(|m| m.0 > after && mine(m)).map(|m| m.0).collect()
}

/// 200 streams on one adapter, per agent and fleet-wide, replaying or not,
/// share one follower: the server's consumers do not grow with clients, and
/// each client gets exactly its messages.
#[tokio::test]
async fn two_hundred_streams_share_one_consumer() {
    const AGENTS: [&str; 10] = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"];
    let host = OneHost::start_with(&AGENTS, |config, _| {
        config.http("operator_token = \"op-token\"").http("max_streams = 256").http("max_streams_per_agent = 64")
    })
    .await;
    let api = host.api().with_token("op-token");
    let mut sent: Vec<Sent> = Vec::new();
    for (i, to) in AGENTS.iter().enumerate() {
        let from = AGENTS[(i + 1) % AGENTS.len()];
        sent.push((api.send(from, to, "before").await, from, to));
    }
    sent.push((api.send("a0", "*", "before, to all").await, "a0", "*"));
    let newest = sent.last().unwrap().0;
    let before = consumers(&host.nats).await;

    let http = clawbus_testkit::http_client(Duration::from_secs(60));
    let mut clients = Vec::new();
    for i in 0..200 {
        // A quarter follow the fleet; a third replay from some history.
        let agent = (i % 4 != 0).then(|| AGENTS[i % AGENTS.len()]);
        let after = (i % 3 == 0).then(|| sent[i % sent.len()].0 - 1);
        let query = agent.map(|agent| format!("?agent={agent}")).unwrap_or_default();
        let mut request = http.get(format!("{}/api/stream{query}", api.base())).bearer_auth("op-token");
        if let Some(after) = after {
            request = request.header("Last-Event-ID", after.to_string());
        }
        let events = Events::open(request).await;
        clients.push((agent, after.unwrap_or(newest), events));
    }
    let open = consumers(&host.nats).await;
    println!("consumers: {before} before the streams, {open} with 200 open");
    assert!(open <= before + 1, "{open} consumers with 200 streams open, {before} before");

    for (i, to) in AGENTS.iter().enumerate() {
        let from = AGENTS[(i + 3) % AGENTS.len()];
        sent.push((api.send(from, to, "live").await, from, to));
    }
    sent.push((api.send("a1", "*", "live, to all").await, "a1", "*"));
    let reads = clients.iter_mut().map(|(agent, after, events)| {
        let expected = shown(&sent, *agent, *after);
        async move {
            let ids = events.until(*expected.last().unwrap()).await;
            assert_eq!(ids, expected, "stream of {agent:?} after {after}");
        }
    });
    futures_util::future::join_all(reads).await;
    assert_eq!(consumers(&host.nats).await, open, "no consumer came with the traffic");
}

/// While messages keep coming, a client replaying from an old id and one
/// too slow to keep up with the adapter each get every message exactly once.
#[tokio::test]
async fn replaying_and_slow_streams_miss_and_repeat_nothing_while_traffic_flows() {
    use futures_util::StreamExt;
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let mut sent: Vec<Sent> = Vec::new();
    for _ in 0..100 {
        sent.push((api.send("alice", "bob", "old").await, "alice", "bob"));
    }
    let http = clawbus_testkit::http_client(Duration::from_secs(120));
    let stream = |query: &str| http.get(format!("{}/api/stream{query}", api.base()));
    // Not read until the traffic is over: it falls behind the adapter's
    // channel, whose capacity is 1,024 messages.
    let mut slow = Events::open(stream("")).await;
    let slow_after = sent.last().unwrap().0;

    // 2,000 messages of 16 KiB, to bob and to alice, 8 at a time.
    let content = "x".repeat(16 * 1024);
    let traffic = futures_util::stream::iter(0..2000)
        .map(|i| {
            let (api, content) = (api.clone(), content.clone());
            async move {
                let (from, to) = if i % 2 == 0 { ("alice", "bob") } else { ("bob", "alice") };
                (api.send(from, to, &content).await, from, to)
            }
        })
        .buffer_unordered(8);
    let (traffic, replay) = tokio::join!(traffic.collect::<Vec<Sent>>(), async {
        // Opened once the traffic is under way, from the first message.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut replay = Events::open(stream("?agent=bob").header("Last-Event-ID", sent[0].0 - 1)).await;
        let mut ids = Vec::new();
        while ids.len() < 600 {
            ids.extend(replay.more().await);
        }
        (replay, ids)
    });
    sent.extend(traffic);
    sent.sort_unstable();
    let end = api.send("alice", "bob", "end").await;
    sent.push((end, "alice", "bob"));

    let (mut replay, mut replayed) = replay;
    replayed.extend(replay.until(end).await);
    assert_eq!(replayed, shown(&sent, Some("bob"), sent[0].0 - 1), "the replaying stream");
    let slowly = slow.until(end).await;
    assert_eq!(slowly, shown(&sent, None, slow_after), "the slow stream");
    // Info lines reach the log within moments, not at once.
    eventually("the slow stream to fall behind the channel", Duration::from_secs(10), || async {
        host.adapter.log().contains("fell behind").then_some(())
    })
    .await;
}
