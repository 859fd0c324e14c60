//! No single request can hide, forge or lose mail: marks never run ahead of
//! the stream, extremes get answers, typos are refused, every send answer
//! tells the truth, and the adapter repairs what was broken behind its back.

use std::time::Duration;

use async_nats::jetstream;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsServer, OneHost, Reply, eventually};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn jetstream_of(nats: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(nats.url()).await.expect("raw NATS client");
    jetstream::new(client)
}

/// Asserts an error answer: status, code, and a message for humans.
fn refused(answer: &clawbus_testkit::api::Answer, status: u16, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {:?}", answer.body);
    assert_eq!((&answer.body["ok"], &answer.body["error"]), (&json!(false), &json!(code)), "{what}");
    assert!(answer.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
}

#[tokio::test]
async fn an_ack_beyond_the_newest_id_never_makes_later_mail_born_read() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let first = api.send("alice", "bob", "before").await;
    for up_to in [json!(first + 1000), json!(u64::MAX)] {
        let acked = api.post("/api/ack", &json!({"agent": "bob", "up_to": up_to})).await;
        assert_eq!(acked.status, 200, "{:?}", acked.body);
        let later = api.send("alice", "bob", "after").await;
        let inbox = api.inbox("bob").await;
        assert_eq!(Api::ids(&inbox), [later], "a message stored after the ack is unread (up_to {up_to})");
        assert_eq!(inbox["unread"], 1);
        api.post("/api/ack", &json!({"agent": "bob", "ids": [later]})).await;
    }
}

#[tokio::test]
async fn a_read_mark_already_ahead_of_the_stream_is_repaired_when_read() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let kv = jetstream_of(&host.nats).await.get_key_value("CLAWBUS_STATE").await.unwrap();
    kv.put("read.bob", r#"{"floor":1000000,"acked":[1000005]}"#.into()).await.unwrap();
    let id = api.send("alice", "bob", "must be visible").await;
    let inbox = api.inbox("bob").await;
    assert_eq!((Api::ids(&inbox), &inbox["unread"]), (vec![id], &json!(1)));
    let agents = api.ok("/api/agents").await;
    let bob = agents["agents"].as_array().unwrap().iter().find(|a| a["name"] == "bob").unwrap().clone();
    assert_eq!(bob["unread"], 1, "{bob}");
    let stored: Value = serde_json::from_slice(&kv.get("read.bob").await.unwrap().unwrap()).unwrap();
    assert!(stored["floor"].as_u64().unwrap() < id, "the mark was cut back: {stored}");
}

/// Every endpoint, every extreme: a JSON answer, 2xx or 4xx, never a reset
/// or a panic.
#[tokio::test]
async fn extremes_in_every_parameter_get_an_answer() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let id = api.send("alice", "bob", "keep me").await;
    let max = u64::MAX.to_string();
    let gets = [
        format!("/api/inbox?agent=bob&after={max}"),
        "/api/inbox?agent=bob&after=0".into(),
        format!("/api/inbox?agent=bob&limit={max}"),
        "/api/inbox?agent=bob&limit=18446744073709551616".into(),
        "/api/inbox?agent=bob&after=-1".into(),
        format!("/api/history?agent=bob&after={max}"),
        "/api/history?agent=bob&until=9999-12-31T23:59:59Z".into(),
        "/api/history?agent=bob&since=0000-01-01T00:00:00Z".into(),
        "/api/history?agent=bob&since=9999-12-31T23:59:59Z".into(),
        "/api/history?agent=bob&until=0000-01-01T00:00:00Z".into(),
        "/api/history?agent=bob&since=-86400".into(),
        "/api/history?agent=bob&since=-99999999999999".into(),
        "/api/history?agent=bob&until=1e300".into(),
        "/api/history?agent=bob&since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z".into(),
        "/api/history?agent=bob&since=0&until=0".into(),
        format!("/api/stream?agent=bob&after={max}&unknown=1"),
    ];
    for path in &gets {
        let answer = api.get(path).await;
        assert!(answer.status == 200 || (400..500).contains(&answer.status), "{path}: {}", answer.status);
        assert!(answer.body.is_object(), "{path}: not JSON: {:?}", answer.body);
    }
    let expect = |path: &str, ids: &[u64]| {
        let api = api.clone();
        let (path, ids) = (path.to_owned(), ids.to_vec());
        async move { assert_eq!(Api::ids(&api.ok(&path).await), ids, "{path}") }
    };
    expect("/api/history?agent=bob&until=9999-12-31T23:59:59Z", &[id]).await;
    expect("/api/history?agent=bob&since=0000-01-01T00:00:00Z", &[id]).await;
    expect("/api/history?agent=bob&since=9999-12-31T23:59:59Z", &[]).await;
    expect("/api/history?agent=bob&until=0000-01-01T00:00:00Z", &[]).await;
    expect(&format!("/api/inbox?agent=bob&after={max}"), &[]).await;
    expect(&format!("/api/history?agent=bob&after={max}"), &[]).await;
    let bodies = [
        json!({"agent": "bob", "ids": [u64::MAX, 0]}),
        json!({"agent": "bob", "ids": [u64::MAX]}),
        json!({"agent": "bob", "ids": [-1]}),
        json!({"agent": "bob", "up_to": 18446744073709551615u64}),
        json!({"agent": "bob", "up_to": 1e300}),
        json!({"agent": "bob", "up_to": -5}),
        json!({"agent": "bob", "up_to": 0}),
    ];
    for body in &bodies {
        let answer = api.post("/api/ack", body).await;
        assert!(answer.status == 200 || answer.status == 400, "{body}: {:?}", answer.body);
    }
    let sends = [
        json!({"from": "alice", "to": "bob", "content": "x", "reply_to": u64::MAX}),
        json!({"from": "alice", "to": "bob", "content": "x", "reply_to": 1e300}),
        json!({"from": "alice", "to": "bob", "content": "x", "reply_to": -1}),
    ];
    for body in &sends {
        let answer = api.post("/api/send", body).await;
        assert!(answer.status == 200 || answer.status == 400, "{body}: {:?}", answer.body);
    }
    assert!(!host.adapter.log().contains("panicked"), "{}", host.adapter.log());
}

/// `Last-Event-ID: 2^64-1` must not wrap to 0 and replay the whole stream.
#[tokio::test]
async fn a_huge_last_event_id_does_not_replay_everything() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    api.send("alice", "bob", "old").await;
    let http = clawbus_testkit::http_client(Duration::from_secs(60));
    let mut stream = http
        .get(format!("{}/api/stream?agent=bob", api.base()))
        .header("Last-Event-ID", u64::MAX.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let fresh = api.send("alice", "bob", "new").await;
    let first = clawbus_testkit::api::read_events(&mut stream, 1).await;
    assert_eq!(first[0]["id"].as_u64(), Some(fresh), "the first event is the new message, not a replay");
}

#[tokio::test]
async fn a_misspelt_field_is_refused_not_sent_to_the_whole_fleet() {
    let host = OneHost::start(&["alice", "bob", "carol"]).await;
    let api = host.api();
    let typo = api.post("/api/send", &json!({"from": "alice", "too": "bob", "content": "hi"})).await;
    refused(&typo, 400, "invalid_request", "too");
    let message = typo.body["message"].as_str().unwrap();
    assert!(message.contains("\"too\"") && message.contains("to,"), "{message}");
    let priority =
        api.post("/api/send", &json!({"from": "alice", "to": "bob", "content": "hi", "priorty": "urgent"})).await;
    refused(&priority, 400, "invalid_request", "priorty");
    let ack = api.post("/api/ack", &json!({"agent": "bob", "all": true, "id": 3})).await;
    refused(&ack, 400, "invalid_request", "ack with id");
    refused(&api.get("/api/inbox?agent=bob&unred=false").await, 400, "invalid_request", "unred");
    for agent in ["bob", "carol"] {
        assert_eq!(api.inbox(agent).await["unread"], 0, "{agent} got nothing");
    }
    assert_eq!(api.ok("/api/stats").await["messages"], 0);
}

#[tokio::test]
async fn acks_name_at_most_10000_ids() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let id = api.send("alice", "bob", "one").await;
    let mut ids: Vec<u64> = (1_000_000..1_010_000).collect();
    ids[0] = id;
    let at_limit = api.post("/api/ack", &json!({"agent": "bob", "ids": ids})).await;
    assert_eq!((at_limit.status, &at_limit.body["acked"]), (200, &json!(1)), "{:?}", at_limit.body["message"]);
    assert_eq!(at_limit.body["ignored"].as_array().unwrap().len(), 9_999);
    let mut over: Vec<u64> = (1..=10_001).collect();
    over[0] = id;
    refused(&api.post("/api/ack", &json!({"agent": "bob", "ids": over})).await, 400, "invalid_request", "10,001 ids");
}

/// Out-of-order acknowledgements of messages that expired no longer count.
#[tokio::test]
async fn acknowledged_messages_that_expired_are_not_subtracted_from_unread() {
    let host = OneHost::start_with(&["alice", "bob"], |config, _| {
        config.nats("max_age = \"2s\"").nats("duplicate_window = \"1s\"")
    })
    .await;
    let api = host.api();
    let _first = api.send("alice", "bob", "one").await;
    let second = api.send("alice", "bob", "two").await;
    assert_eq!(api.post("/api/ack", &json!({"agent": "bob", "ids": [second]})).await.body["acked"], 1);
    eventually("the messages to expire", WAIT, || async {
        (api.ok("/api/stats").await["messages"] == 0).then_some(())
    })
    .await;
    let fresh = api.send("alice", "bob", "three").await;
    let inbox = api.inbox("bob").await;
    assert_eq!((Api::ids(&inbox), &inbox["unread"]), (vec![fresh], &json!(1)));
}

#[tokio::test]
async fn a_registry_record_that_does_not_parse_does_not_block_start_up() {
    let nats = NatsServer::start();
    let first = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"))).await;
    let kv = jetstream_of(&nats).await.get_key_value("CLAWBUS_STATE").await.unwrap();
    kv.put("agent.bob", "not json".into()).await.unwrap();
    let second = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::silent("bob"))).await;
    let id = first.api().send("alice", "bob", "reaches bob").await;
    assert_eq!(Api::ids(&second.api().inbox("bob").await), [id]);
    assert!(second.log().contains("does not parse"), "the repair is logged");
}

/// The stream or the bucket deleted behind the adapter's back: `/readyz`
/// says so, sends are refused rather than answered 200, and the adapter
/// re-creates both, continuing the ids so no old mark covers new mail.
#[tokio::test]
async fn a_deleted_stream_or_bucket_is_noticed_and_recreated() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let old = api.send("alice", "bob", "before").await;
    api.post("/api/ack", &json!({"agent": "bob", "ids": [old]})).await;
    let js = jetstream_of(&host.nats).await;
    js.delete_stream("CLAWBUS").await.unwrap();
    let not_ready = api.get("/readyz").await;
    refused(&not_ready, 503, "unavailable", "readyz without the stream");
    assert!(not_ready.body["message"].as_str().unwrap().contains("stream"), "{:?}", not_ready.body);
    let send = api.post("/api/send", &json!({"from": "alice", "to": "bob", "content": "lost?"})).await;
    assert_ne!(send.status, 200, "a send with no stream is not answered 200: {:?}", send.body);
    eventually("the stream to be re-created", WAIT, || async { api.is_ready().await.then_some(()) }).await;
    assert!(host.adapter.log().contains("re-creating it"), "logged as an error");
    let new = api.send("alice", "bob", "after").await;
    assert!(new > old, "ids continue: {new} after {old}");
    assert_eq!(Api::ids(&api.inbox("bob").await), [new], "new mail is unread");

    js.delete_key_value("CLAWBUS_STATE").await.unwrap();
    refused(&api.get("/readyz").await, 503, "unavailable", "readyz without the bucket");
    eventually("the bucket to be re-created", WAIT, || async { api.is_ready().await.then_some(()) }).await;
    let gateway = &host.gateway;
    let again = api.send("alice", "bob", "after the bucket").await;
    eventually("bob woken for it", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to >= Some(again)).then_some(())
    })
    .await;
}

/// `Retry-After: 0` (or a date in the past) is no licence to hammer.
#[tokio::test]
async fn a_zero_retry_after_still_backs_off() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let gateway = &host.gateway;
    gateway.script([Reply::RetryAfter(429, 0), Reply::RetryAfter(429, 0), Reply::RetryAfter(503, 0)]);
    let id = host.api().send("alice", "bob", "patience").await;
    eventually("the wake", WAIT, || async { gateway.wakes().iter().any(|w| w.up_to == Some(id)).then_some(()) }).await;
    let calls = gateway.calls();
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].arrived - w[0].arrived).collect();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(gaps.iter().all(|gap| *gap >= Duration::from_millis(100)), "retries back off: {gaps:?}");
}

/// A server whose payload limit is 16 KiB, one agent (bob) whose mail is
/// interleaved with another's, and `stuck`, a message of bob's that is never
/// acknowledged.
struct StuckFloor {
    nats: NatsServer,
    adapter: Adapter,
    api: Api,
    /// bob's messages, oldest first.
    ids: Vec<u64>,
    stuck: u64,
}

impl StuckFloor {
    async fn start(messages: usize) -> StuckFloor {
        let nats = NatsServer::start_with("max_payload: 16384");
        let config = AdapterConfig::new("hostA", nats.url())
            .agent(AgentSpec::silent("alice"))
            .agent(AgentSpec::silent("bob"))
            .agent(AgentSpec::silent("carol"));
        let adapter = Adapter::start_in_process(config).await;
        let api = adapter.api();
        let sends = stream::iter(0..messages).flat_map(|i| {
            stream::iter(["bob", "carol"].map(|to| {
                let api = api.clone();
                async move { (to, api.send("alice", to, &format!("note {i}")).await) }
            }))
        });
        let sent: Vec<(&str, u64)> = sends.buffer_unordered(16).collect().await;
        let mut ids: Vec<u64> = sent.into_iter().filter(|(to, _)| *to == "bob").map(|(_, id)| id).collect();
        ids.sort_unstable();
        let stuck = ids[1];
        StuckFloor { nats, adapter, api, ids, stuck }
    }

    /// Acknowledges `ids` one per call, four calls at a time; every call
    /// must be answered 200 and acknowledge its message.
    async fn ack_one_by_one(&self, ids: &[u64]) {
        let answers: Vec<(u64, u16, Value)> = stream::iter(ids.iter().copied())
            .map(|id| {
                let api = self.api.clone();
                async move {
                    let answer = api.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await;
                    (id, answer.status, answer.body)
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let failed: Vec<_> = answers.iter().filter(|(_, status, body)| *status != 200 || body["acked"] != 1).collect();
        assert!(failed.is_empty(), "{} of {} acks failed, e.g. {:?}", failed.len(), ids.len(), failed.first());
    }

    /// bob's unread inbox, every page of it, and its `unread` count.
    async fn unread(&self) -> (Vec<u64>, u64) {
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let page = self.api.ok(&format!("/api/inbox?agent=bob&limit=1000&after={after}")).await;
            let unread = page["unread"].as_u64().unwrap();
            let got = Api::ids(&page);
            let Some(&last) = got.last() else { return (ids, unread) };
            ids.extend(got);
            after = last;
        }
    }

    async fn record(&self) -> Vec<u8> {
        let kv = jetstream_of(&self.nats).await.get_key_value("CLAWBUS_STATE").await.unwrap();
        kv.get("read.bob").await.unwrap().unwrap().to_vec()
    }
}

/// One unacknowledged message keeps the floor below it; thousands of later
/// messages acknowledged one by one (their ids interleaved with another
/// agent's mail) collapse into one run, so every ack lands and the record
/// stays a few bytes.
#[tokio::test]
async fn thousands_of_acks_above_an_unacknowledged_message_keep_the_read_record_small() {
    let bed = StuckFloor::start(4000).await;
    let acked: Vec<u64> = bed.ids.iter().copied().filter(|id| *id != bed.stuck).collect();
    bed.ack_one_by_one(&acked).await;
    assert_eq!(bed.unread().await, (vec![bed.stuck], 1));
    let record = bed.record().await;
    assert!(record.len() < 100, "{}", String::from_utf8_lossy(&record));
}

/// Every other message acknowledged, so no two acknowledged ones can join:
/// past the record's bound the oldest unread messages are given up, each
/// named in the log, and every ack still lands.
#[tokio::test]
async fn past_the_read_record_bound_the_oldest_holes_are_given_up_and_named() {
    let bed = StuckFloor::start(4000).await;
    let (acked, holes): (Vec<u64>, Vec<u64>) =
        bed.ids.iter().partition(|id| bed.ids.binary_search(id).unwrap() % 2 == 0);
    assert!(holes.contains(&bed.stuck));
    bed.ack_one_by_one(&acked).await;
    let (unread, count) = bed.unread().await;
    assert_eq!(count, unread.len() as u64);
    assert!(holes.ends_with(&unread) && unread.len() < holes.len(), "{} unread of {} holes", unread.len(), holes.len());
    let given_up = &holes[..holes.len() - unread.len()];
    let log = bed.adapter.log();
    let named: Vec<&str> = log.lines().filter(|line| line.contains("treated as read")).collect();
    for id in given_up {
        assert!(named.iter().any(|line| line.contains(&format!("id={id} "))), "{id} given up silently");
    }
    assert!(bed.record().await.len() <= 8 * 1024);
}

/// The stream deleted while the adapter that serves bob is down, and
/// re-created by an adapter that had seen only the first id: the new
/// stream continues above every id the fleet's records mention (bob's read
/// mark, hostB's wake marks and last heartbeat), not above what the
/// re-creating adapter saw. So both adapters list the new mail unread and
/// bob is woken for it.
#[tokio::test]
async fn a_re_created_stream_continues_above_every_id_the_fleet_knows() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook-secret").await;
    let a = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"))).await;
    let mut b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("bob", &gateway))).await;
    let first = a.api().send("alice", "bob", "through A").await;
    let mut ids = vec![first];
    for i in 0..20 {
        ids.push(b.api().send("alice", "bob", &format!("through B {i}")).await);
    }
    let last = *ids.iter().max().unwrap();
    b.api().post("/api/ack", &json!({"agent": "bob", "up_to": last})).await;
    eventually("bob woken up to the last", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to == Some(last)).then_some(())
    })
    .await;
    b.terminate().await;

    jetstream_of(&nats).await.delete_stream("CLAWBUS").await.unwrap();
    eventually("A to re-create the stream", Duration::from_secs(60), || async {
        a.api().is_ready().await.then_some(())
    })
    .await;
    b.restart().await;
    let fresh: Vec<u64> = {
        let mut fresh = Vec::new();
        for i in 0..10 {
            fresh.push(a.api().send("alice", "bob", &format!("after {i}")).await);
        }
        fresh
    };
    assert!(fresh.iter().all(|id| *id > last), "new ids {fresh:?} continue above {last}");
    for api in [a.api(), b.api()] {
        assert_eq!(Api::ids(&api.inbox("bob").await), fresh, "the new mail is unread through {}", api.base());
    }
    let newest = *fresh.iter().max().unwrap();
    eventually("bob woken for the new mail", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to == Some(newest)).then_some(())
    })
    .await;
}

/// A stream that someone re-creates by hand numbers its messages from 1
/// again. The read and wake marks of the stream before speak of other
/// messages: they are not trusted, so the new mail shows unread (also after
/// a restart), bob is woken for it, and every answer names the new stream.
#[tokio::test]
async fn marks_of_a_stream_before_are_not_trusted_when_it_is_re_created_by_hand() {
    let mut host = OneHost::spawn_with(&["alice", "bob"], |config, _| config).await;
    let api = host.api();
    let old: Vec<u64> = vec![
        api.send("alice", "bob", "old one").await,
        api.send("alice", "bob", "old two").await,
        api.send("alice", "bob", "old three").await,
    ];
    api.post("/api/ack", &json!({"agent": "bob", "ids": old})).await;
    let gateway = &host.gateway;
    eventually("bob woken for the old mail", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to == Some(old[2])).then_some(())
    })
    .await;
    let before = stream_header(&api).await;

    let js = jetstream_of(&host.nats).await;
    let config = js.get_stream("CLAWBUS").await.unwrap().cached_info().config.clone();
    js.delete_stream("CLAWBUS").await.unwrap();
    js.create_stream(jetstream::stream::Config { first_sequence: None, ..config }).await.unwrap();
    let woken_before = gateway.wakes().len();
    let fresh = api.send("alice", "bob", "new one").await;
    assert!(fresh <= old[2], "the stream numbers afresh: {fresh}");
    eventually("the new mail unread: the old read mark does not hide it", WAIT, || async {
        (Api::ids(&api.inbox("bob").await) == [fresh]).then_some(())
    })
    .await;
    let after = stream_header(&api).await;
    assert!(after.is_some() && after != before, "answers name the new stream: {after:?} after {before:?}");
    eventually("bob woken for the new mail", WAIT, || async {
        gateway.wakes()[woken_before..].iter().any(|w| w.up_to >= Some(fresh)).then_some(())
    })
    .await;

    host.adapter.terminate().await;
    host.adapter.restart().await;
    assert_eq!(Api::ids(&host.api().inbox("bob").await), [fresh], "nor after a restart");
}

/// The stream incarnation an answer names (`Clawbus-Stream`).
async fn stream_header(api: &Api) -> Option<String> {
    let response = reqwest::get(format!("{}/api/inbox?agent=bob", api.base())).await.unwrap();
    response.headers().get("clawbus-stream").map(|v| v.to_str().unwrap().to_owned())
}
