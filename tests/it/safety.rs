//! Conversation safety, fleet-wide: threads, loop breaking, pair rates,
//! send budgets and contact policies, enforced the same through every
//! adapter.

use std::collections::HashMap;
use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsServer, OneHost, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn reply(from: &str, to: &str, reply_to: u64) -> Value {
    json!({"from": from, "to": to, "content": format!("re {reply_to}"), "reply_to": reply_to})
}

#[tokio::test]
async fn a_chain_of_replies_shares_a_thread_with_growing_hops() {
    let host = OneHost::start(&["alice", "bob", "carol"]).await;
    let api = host.api();
    let first = api.send("alice", "bob", "start").await;
    let second = api.post("/api/send", &reply("bob", "alice", first)).await.body["id"].as_u64().unwrap();
    let third = api.post("/api/send", &reply("alice", "bob", second)).await.body["id"].as_u64().unwrap();
    let other = api.send("carol", "bob", "unrelated").await;
    let thread = api.ok(&format!("/api/history?agent=bob&thread={first}")).await;
    assert_eq!(Api::ids(&thread), [first, second, third], "exactly the chain");
    let hops: Vec<(u64, u64)> = thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["thread"].as_u64().unwrap(), m["hops"].as_u64().unwrap()))
        .collect();
    assert_eq!(hops, [(first, 0), (first, 1), (first, 2)]);
    let lone =
        &api.inbox("bob").await["messages"].as_array().unwrap().iter().find(|m| m["id"] == other).unwrap().clone();
    assert_eq!(
        (lone["thread"].as_u64(), lone["hops"].as_u64()),
        (Some(other), Some(0)),
        "a new message starts a thread"
    );
}

/// Three agents on two hosts that answer every message they get, each
/// passing it on to the next: the bus stops the cycle after `max_hops`
/// replies, the operator sees the stopped thread, and a release lets
/// exactly another `max_hops` through.
#[tokio::test(flavor = "multi_thread")]
async fn a_cycle_of_agents_is_stopped_and_released_by_the_operator() {
    const MAX_HOPS: u64 = 5;
    let nats = NatsServer::start();
    let (gateway_a, gateway_b) = (Gateway::start("hook-a").await, Gateway::start("hook-b").await);
    let limits =
        |config: AdapterConfig| config.http("operator_token = \"op\"").limits(&format!("max_hops = {MAX_HOPS}"));
    let a = Adapter::start_in_process(limits(
        AdapterConfig::new("hostA", nats.url())
            .agent(AgentSpec::new("ann", &gateway_a))
            .agent(AgentSpec::new("cat", &gateway_a)),
    ))
    .await;
    let b = Adapter::start_in_process(limits(
        AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("ben", &gateway_b)),
    ))
    .await;
    let (via_a, via_b) = (a.api().with_token("op"), b.api().with_token("op"));
    // Who answers whom, through which adapter and gateway.
    let ring =
        [("ann", "ben", &via_a, &gateway_a), ("ben", "cat", &via_b, &gateway_b), ("cat", "ann", &via_a, &gateway_a)];
    let first = via_a.send("ann", "ben", "let us discuss, forever").await;

    let answer_until_refused = || async {
        let mut handled: HashMap<&str, usize> = HashMap::new();
        loop {
            for (agent, next, api, gateway) in &ring {
                let wakes = gateway.wakes_for(agent).len();
                if handled.get(agent).copied().unwrap_or(0) == wakes {
                    continue;
                }
                handled.insert(agent, wakes);
                let inbox = api.inbox(agent).await;
                for message in inbox["messages"].as_array().unwrap() {
                    let id = message["id"].as_u64().unwrap();
                    api.post("/api/ack", &json!({"agent": agent, "ids": [id]})).await;
                    let answer = api.post("/api/send", &reply(agent, next, id)).await;
                    if answer.status != 200 {
                        return (answer, agent.to_string(), next.to_string(), id);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (refused, from, to, parent) =
        tokio::time::timeout(WAIT, answer_until_refused()).await.expect("the cycle stops");
    assert_eq!((refused.status, &refused.body["error"]), (409, &json!("loop_detected")), "{:?}", refused.body);
    let message = refused.body["message"].as_str().unwrap();
    assert!(message.contains("agent loop") && message.contains("Do not reply"), "{message}");
    let hops = thread_hops(&via_a, first).await;
    assert_eq!(
        hops.values().copied().collect::<Vec<_>>(),
        (0..=MAX_HOPS).collect::<Vec<_>>(),
        "stopped after max_hops replies"
    );
    let stats = via_b.ok("/api/stats").await;
    let stopped = stats["threads"]["stopped"].as_array().unwrap();
    assert!(
        stopped.iter().any(|t| t["thread"] == first),
        "the operator sees the stopped thread through any adapter: {stats}"
    );

    // Released, the refused reply goes through, and exactly another
    // max_hops replies after it.
    let release = via_b.post(&format!("/api/threads/{first}/release"), &json!({})).await;
    assert_eq!((release.status, &release.body["releases"]), (200, &json!(1)), "{:?}", release.body);
    let not_operator = a.api().post(&format!("/api/threads/{first}/release"), &json!({})).await;
    assert_eq!(not_operator.status, 401);
    let api = if from == "ben" { &via_b } else { &via_a };
    assert_eq!(api.post("/api/send", &reply(&from, &to, parent)).await.status, 200);
    let (again, ..) = tokio::time::timeout(WAIT, answer_until_refused()).await.expect("the cycle stops again");
    assert_eq!(again.status, 409);
    let hops = thread_hops(&via_a, first).await;
    assert_eq!(hops.values().copied().collect::<Vec<_>>(), (0..=2 * MAX_HOPS).collect::<Vec<_>>(), "another max_hops");
    let metrics = a.api().get("/metrics").await.body.as_str().unwrap().to_owned()
        + b.api().get("/metrics").await.body.as_str().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("clawbus_refusals_total{") && l.contains("max_hops") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Every message of `thread` (id → hops), from the histories of the ring.
async fn thread_hops(api: &Api, thread: u64) -> std::collections::BTreeMap<u64, u64> {
    let mut hops = std::collections::BTreeMap::new();
    for agent in ["ann", "ben", "cat"] {
        let history = api.ok(&format!("/api/history?agent={agent}&thread={thread}")).await;
        for message in history["messages"].as_array().unwrap() {
            hops.insert(message["id"].as_u64().unwrap(), message["hops"].as_u64().unwrap());
        }
    }
    hops
}

#[tokio::test]
async fn two_agents_chatting_too_fast_are_stopped_until_the_rate_drops() {
    let host = OneHost::start_with(&["alice", "bob"], |config, _| config.limits("pair_per_minute = 4")).await;
    let api = host.api();
    for (from, to) in [("alice", "bob"), ("bob", "alice"), ("alice", "bob"), ("bob", "alice")] {
        api.send(from, to, "chat").await;
    }
    let refused = api.post("/api/send", &json!({"from": "alice", "to": "bob", "content": "and more"})).await;
    assert_eq!((refused.status, &refused.body["error"]), (409, &json!("loop_detected")), "{:?}", refused.body);
    let wait: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(api.inbox("bob").await["unread"], 2, "the refused send stored nothing");
}

/// alice may send 5 messages a minute, wherever she sends them from.
#[tokio::test]
async fn a_send_budget_holds_across_adapters_and_recovers_after_the_window() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let b = Adapter::start_in_process(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("carol", &gateway)))
        .await;
    // alice's own budget, published by her host for every adapter.
    let a = Adapter::start_in_process(
        AdapterConfig::new("hostA", nats.url())
            .agent(AgentSpec::silent("alice").budget(5))
            .agent(AgentSpec::silent("bob")),
    )
    .await;
    let (via_a, via_b) = (a.api(), b.api());
    for i in 0..5 {
        let api = if i % 2 == 0 { &via_a } else { &via_b };
        api.send("alice", "bob", &format!("within budget {i}")).await;
    }
    let mut waits = Vec::new();
    for api in [&via_a, &via_b] {
        let refused = api.post("/api/send", &json!({"from": "alice", "to": "carol", "content": "one too many"})).await;
        assert_eq!((refused.status, &refused.body["error"]), (429, &json!("rate_limited")), "{:?}", refused.body);
        waits.push(refused.retry_after.unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(via_b.inbox("carol").await["unread"], 0, "refused sends stored nothing");
    tokio::time::sleep(Duration::from_secs(waits.into_iter().max().unwrap())).await;
    let recovered = eventually("the budget to recover", WAIT, || async {
        let answer = via_b.post("/api/send", &json!({"from": "alice", "to": "carol", "content": "later"})).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert!(recovered.body["id"].as_u64().is_some());
}

#[tokio::test]
async fn accept_from_admits_listed_senders_and_refuses_strangers() {
    let host = OneHost::start_with(&["alice", "mallory"], |config, gateway| {
        config.agent(AgentSpec::new("bob", gateway).accept_from(&["alice", "ops-*"])).agent(AgentSpec::silent("ops-1"))
    })
    .await;
    let api = host.api();
    let refused = api.post("/api/send", &json!({"from": "mallory", "to": "bob", "content": "let me in"})).await;
    assert_eq!((refused.status, &refused.body["error"]), (403, &json!("not_allowed")), "{:?}", refused.body);
    let alice = api.send("alice", "bob", "hello").await;
    let ops = api.send("ops-1", "bob", "paging").await;
    assert_eq!(Api::ids(&api.inbox("bob").await), [alice, ops]);
    eventually("refusals in the stats", WAIT, || async {
        let stats = api.ok("/api/stats").await;
        (stats["refusals"]["accept_from"] == 1).then_some(())
    })
    .await;
}
