//! One adapter hosting 1,000 agents: it starts, and a message wakes exactly
//! the agent it is for. (Start-up time, memory and wake latency at 10, 100
//! and 1,000 agents are measured by `clawbus-scale`, see BENCHMARKS.md.)

use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer, eventually};

#[tokio::test]
async fn an_adapter_with_1000_agents_wakes_the_right_one() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = (0..1000)
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
    assert_eq!(api.ok("/api/agents").await["agents"].as_array().unwrap().len(), 1001);
}
