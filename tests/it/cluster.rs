//! A 3-node JetStream cluster: the same API and guarantees, through adapters
//! connected to different nodes, while nodes die and come back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clawbus_testkit::api::Answer;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsCluster, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn config(host: &str, urls: String) -> AdapterConfig {
    AdapterConfig::new(host, urls).nats("replicas = 3")
}

/// The stream's placement as the adapter reports it (`Null` while the
/// stream has no leader).
async fn placement(api: &Api) -> Value {
    api.get("/api/stats").await.body["nats"]["stream"].clone()
}

#[tokio::test]
async fn the_api_works_through_adapters_on_different_nodes() {
    let cluster = NatsCluster::start(3);
    let (gateway_a, gateway_b) = (Gateway::start("a").await, Gateway::start("b").await);
    let a = Adapter::start(config("hostA", cluster.nodes[0].url()).agent(AgentSpec::new("alice", &gateway_a))).await;
    let b = Adapter::start(config("hostB", cluster.nodes[1].url()).agent(AgentSpec::new("bob", &gateway_b))).await;
    let (via_a, via_b) = (a.api(), b.api());
    assert_eq!(placement(&via_a).await["server"], "n1");
    assert_eq!(placement(&via_b).await["server"], "n2");
    assert_eq!(placement(&via_a).await["replicas"].as_array().unwrap().len(), 2, "three copies");

    let id = via_a.send("alice", "bob", "across the cluster").await;
    let wake = eventually("bob's wake", WAIT, || async { gateway_b.wakes().into_iter().next() }).await;
    assert_eq!(wake.up_to, Some(id));
    // Reads may be served by any caught-up replica: allow a moment to agree.
    eventually("both adapters to agree", WAIT, || async {
        let (one, two) = (via_a.inbox("bob").await, via_b.inbox("bob").await);
        (one == two && Api::ids(&one) == [id]).then_some(())
    })
    .await;
    let keyed = |api: &Api, key: &'static str| {
        let api = api.clone();
        async move { api.try_send("bob", "*", "to everyone", key).await.unwrap() }
    };
    let (first, again) = (keyed(&via_b, "k1").await, keyed(&via_a, "k1").await);
    assert_eq!(first.body["id"], again.body["id"], "dedup holds across nodes");
    assert_eq!(via_b.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await.body["acked"], 1);
    eventually("the ack seen through A", WAIT, || async { (via_a.inbox("bob").await["unread"] == 0).then_some(()) })
        .await;
    let history = via_a.ok("/api/history?agent=alice&with=bob").await;
    assert_eq!(Api::ids(&history).len(), 2);
    let agents = via_b.ok("/api/agents").await;
    assert_eq!(agents["agents"].as_array().unwrap().iter().filter(|r| r["online"] == true).count(), 2);
}

#[tokio::test]
async fn losing_the_stream_leader_mid_traffic_loses_nothing() {
    let mut cluster = NatsCluster::start(3);
    let gateway = Gateway::start("hook").await;
    let a = Adapter::start(config("hostA", cluster.urls()).agent(AgentSpec::silent("alice"))).await;
    let b = Adapter::start(config("hostB", cluster.urls()).agent(AgentSpec::new("bob", &gateway))).await;
    let api = a.api();
    let leader = placement(&api).await["leader"].as_str().unwrap().to_owned();

    // Steady traffic, each send with its own key; unanswered sends retried.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = tokio::spawn({
        let (api, stop, sent) = (api.clone(), stop.clone(), sent.clone());
        async move {
            let mut answers: Vec<(String, Answer)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, content) = (format!("k{i}"), format!("message {i}"));
                if let Some(answer) = api.try_send("alice", "bob", &content, &key).await {
                    answers.push((content, answer));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            answers
        }
    });
    eventually("traffic", WAIT, || async { (sent.load(Ordering::Relaxed) >= 100).then_some(()) }).await;
    let node = cluster.nodes.iter_mut().find(|n| n.name() == leader).unwrap();
    node.kill();
    let at_kill = sent.load(Ordering::Relaxed);
    eventually("a new leader", WAIT, || async {
        let now = placement(&api).await;
        now["leader"].as_str().filter(|l| *l != leader).map(String::from)
    })
    .await;
    eventually("sends to succeed again", WAIT, || async {
        (sent.load(Ordering::Relaxed) >= at_kill + 100).then_some(())
    })
    .await;
    node.start_again();
    eventually("the old leader to rejoin and catch up", WAIT, || async {
        let now = placement(&api).await;
        let replicas = now["replicas"].as_array()?.clone();
        (replicas.len() == 2 && replicas.iter().all(|r| r["current"] == true)).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();

    for (_, answer) in &answers {
        assert!(answer.status == 200 || answer.status == 503, "{:?}", answer.body);
        if answer.status == 503 {
            assert!(answer.retry_after.is_some(), "503 without Retry-After");
        }
    }
    let tail = &answers[answers.len().saturating_sub(20)..];
    assert!(tail.iter().all(|(_, a)| a.status == 200), "sends succeed after the election");
    let inbox = b.api().all_messages("bob").await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for message in &inbox {
        *copies.entry(message["content"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    for (content, answer) in &answers {
        let expected = usize::from(answer.status == 200);
        assert_eq!(copies.get(content).copied().unwrap_or(0), expected, "{content}: {:?}", answer.body);
    }
    let newest = inbox.iter().filter_map(|m| m["id"].as_u64()).max();
    eventually("a wake covering the newest message", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to >= newest).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_dead_adapter_shows_its_agents_offline_until_it_returns() {
    let cluster = NatsCluster::start(3);
    let gateway = Gateway::start("hook").await;
    let a = Adapter::start(config("hostA", cluster.urls()).agent(AgentSpec::silent("alice"))).await;
    let mut b = Adapter::start(config("hostB", cluster.urls()).agent(AgentSpec::new("bob", &gateway))).await;
    let api = a.api();
    let bob_online = || async {
        let agents = api.ok("/api/agents").await;
        agents["agents"].as_array().unwrap().iter().find(|r| r["name"] == "bob").map(|r| r["online"] == true)
    };
    assert_eq!(bob_online().await, Some(true));
    b.kill();
    eventually("bob offline", Duration::from_secs(40), || async { (bob_online().await == Some(false)).then_some(()) })
        .await;
    let id = api.send("alice", "bob", "while you were away").await;
    b.restart().await;
    eventually("bob online", WAIT, || async { (bob_online().await == Some(true)).then_some(()) }).await;
    let wake = eventually("bob's wake after restart", WAIT, || async { gateway.wakes().into_iter().next() }).await;
    assert_eq!(wake.up_to, Some(id));
}

#[tokio::test]
async fn an_adapter_moves_to_a_live_node_when_its_node_dies() {
    let mut cluster = NatsCluster::start(3);
    let gateway = Gateway::start("hook").await;
    let adapter = Adapter::start(
        config("hostA", cluster.urls()).agent(AgentSpec::silent("alice")).agent(AgentSpec::new("bob", &gateway)),
    )
    .await;
    let api = adapter.api();
    let first = api.send("alice", "bob", "before").await;
    let server = placement(&api).await["server"].as_str().unwrap().to_owned();
    cluster.nodes.iter_mut().find(|n| n.name() == server).unwrap().kill();
    let moved = eventually("a connection to another node", WAIT, || async {
        let now = placement(&api).await["server"].as_str().map(String::from)?;
        (now != server).then_some(now)
    })
    .await;
    let after = eventually("sends to work again", WAIT, || async {
        let answer = api.try_send("alice", "bob", "after", "after-1").await?;
        answer.body["id"].as_u64().filter(|_| answer.status == 200)
    })
    .await;
    eventually("the wake after the move", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to.is_some_and(|up_to| up_to >= after)).then_some(())
    })
    .await;
    // The state bucket's own leader may still be being elected: its reads
    // answer 503 meanwhile, which is the truth, not a failure.
    let inbox = eventually("bob's read mark readable", WAIT, || async {
        let answer = api.try_get("/api/inbox?agent=bob").await.ok()?;
        (answer.status == 200).then_some(answer.body)
    })
    .await;
    assert_eq!(Api::ids(&inbox), [first, after], "connected to {moved} now");
}
