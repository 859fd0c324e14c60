//! One adapter hosting 1,000 agents (the most one consumer filters by
//! name) and one hosting 1,001 (which follows every direct subject and
//! keeps its own): both start, and a message wakes exactly the agent it is
//! for. (Start-up time, memory and wake latency are measured by
//! `clawbus-scale`, see BENCHMARKS.md.)

use std::time::Duration;

use async_nats::jetstream;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer, eventually};
use futures_util::TryStreamExt;

#[tokio::test]
async fn an_adapter_with_1000_agents_wakes_the_right_one() {
    wakes_the_right_one(1000, "clawbus.msg.agent-0999.*").await;
}

#[tokio::test]
async fn an_adapter_with_1001_agents_follows_every_direct_subject_and_wakes_the_right_one() {
    wakes_the_right_one(1001, "clawbus.msg.*.*").await;
}

/// An adapter with `agents` agents; its wake consumer has `filter` among
/// its filter subjects.
async fn wakes_the_right_one(agents: usize, filter: &str) {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = (0..agents)
        .fold(AdapterConfig::new("big", nats.url()).agent(AgentSpec::silent("sender")), |config, i| {
            config.agent(AgentSpec::new(&format!("agent-{i:04}"), &gateway))
        });
    let adapter = Adapter::start(config).await;
    let api = adapter.api();
    for target in ["agent-0777", "agent-0001", "agent-0999"] {
        let id = api.send("sender", target, "for you").await;
        let wake = eventually("the wake", Duration::from_secs(30), || async {
            gateway.wakes().into_iter().find(|w| w.up_to == Some(id))
        })
        .await;
        assert_eq!(wake.agent_id.as_deref(), Some(target));
    }
    assert_eq!(gateway.calls().len(), 3, "nobody else was woken");
    assert_eq!(api.ok("/api/agents").await["agents"].as_array().unwrap().len(), agents + 1);
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream("CLAWBUS").await.unwrap();
    let filters: Vec<Vec<String>> =
        stream.consumers().map_ok(|info| info.config.filter_subjects).try_collect().await.unwrap();
    assert!(filters.iter().any(|f| f.iter().any(|s| s == filter)), "no consumer filters {filter}: {filters:?}");
}
