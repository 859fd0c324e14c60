//! What operators watch: metrics present from start-up that move with the
//! traffic, fleet-wide stats that agree across adapters and survive
//! restarts, and logs that follow one message by id.

use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer, OneHost, Reply, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The value of the series `name` (with its labels) in a metrics text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_exist_from_start_up_and_move_with_traffic_and_failures() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let metrics = || async { api.get("/metrics").await.body.as_str().unwrap().to_owned() };
    let start = metrics().await;
    for name in [
        r#"clawbus_build_info{version="0.1.0"}"#,
        r#"clawbus_sends_total{outcome="stored"}"#,
        r#"clawbus_wakes_total{outcome="queued"}"#,
        r#"clawbus_wakes_total{outcome="retryable"}"#,
        r#"clawbus_agent_unread{agent="bob"}"#,
        r#"clawbus_agent_wake_failures_total{agent="bob"}"#,
        "clawbus_nats_connected",
        "clawbus_nats_reconnects_total",
        "clawbus_send_latency_seconds_count",
        "clawbus_wake_latency_seconds_count",
    ] {
        assert!(series(&start, name).is_some(), "{name} missing at start-up:\n{start}");
    }
    assert_eq!(series(&start, r#"clawbus_build_info{version="0.1.0"}"#), Some(1.0));
    assert_eq!(series(&start, r#"clawbus_agent_wake_failures_total{agent="bob"}"#), Some(0.0));

    let gateway = &host.gateway;
    let first = api.send("alice", "bob", "one").await;
    eventually("bob woken", WAIT, || async { gateway.wakes().iter().any(|w| w.up_to == Some(first)).then_some(()) })
        .await;
    gateway.script([Reply::Status(503), Reply::Status(503)]);
    let second = api.send("alice", "bob", "two").await;
    eventually("bob woken again", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to == Some(second)).then_some(())
    })
    .await;
    let after = metrics().await;
    assert_eq!(series(&after, r#"clawbus_sends_total{outcome="stored"}"#), Some(2.0), "{after}");
    assert_eq!(series(&after, "clawbus_send_latency_seconds_count"), Some(2.0));
    assert!(series(&after, r#"clawbus_wakes_total{outcome="queued"}"#) >= Some(1.0));
    assert_eq!(series(&after, r#"clawbus_agent_wake_failures_total{agent="bob"}"#), Some(2.0));
    assert_eq!(series(&after, r#"clawbus_wakes_total{outcome="retryable"}"#), Some(2.0));
    assert_eq!(series(&after, r#"clawbus_agent_unread{agent="bob"}"#), Some(2.0), "{after}");
    assert!(series(&after, r#"clawbus_http_requests_total{route="/send",status="200"}"#) >= Some(2.0), "{after}");
    assert!(after.contains("clawbus_http_request_duration_seconds_bucket{"), "{after}");

    // Every series the shipped dashboard charts exists.
    let dashboard = include_str!("../../deploy/grafana-dashboard.json");
    for name in
        dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("clawbus_"))
    {
        assert!(after.lines().any(|l| l.starts_with(name)), "the dashboard charts {name}, which /metrics lacks");
    }
}

#[tokio::test]
async fn stats_come_from_jetstream_the_same_through_every_adapter_and_after_restarts() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let a = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"))).await;
    let mut b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("bob", &gateway))).await;
    let id = a.api().send("alice", "bob", "counted").await;
    let stats = |adapter: &Adapter| {
        let api = adapter.api();
        async move { api.ok("/api/stats").await }
    };
    let through_a = eventually("bob's wake counted", WAIT, || async {
        let stats = stats(&a).await;
        (stats["wakes"]["sent"] == 1).then_some(stats)
    })
    .await;
    let through_b = stats(&b).await;
    for key in ["messages", "agents", "online", "unread"] {
        assert_eq!(through_a[key], through_b[key], "{key}");
    }
    assert_eq!(through_b["wakes"]["sent"], 1, "B's own wake, seen through A and B alike");
    let bob = a.api().ok("/api/agents").await["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(
        (&bob["wakes"]["host"], &bob["wakes"]["woken_up_to"], &bob["wakes"]["sent"]),
        (&json!("hostB"), &json!(id), &json!(1))
    );

    let (status, _) = b.terminate().await;
    assert!(status.success());
    b.restart().await;
    let next = a.api().send("alice", "bob", "counted too").await;
    let after = eventually("the second wake counted on top", WAIT, || async {
        let stats = stats(&b).await;
        (stats["wakes"]["sent"] == 2).then_some(stats)
    })
    .await;
    assert_eq!((after["messages"].as_u64(), &after["unread"]["bob"]), (Some(2), &json!(2)), "{after}");
    assert!(gateway.wakes().iter().any(|w| w.up_to == Some(next)));
}

#[tokio::test]
async fn json_logs_follow_one_message_by_id_and_an_outage_takes_one_line_each_way() {
    let mut nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let config = AdapterConfig::new("hostA", nats.url())
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("bob", &gateway))
        .log("format = \"json\"");
    let adapter = Adapter::start(config).await;
    let api = adapter.api();
    let id = api.send("alice", "bob", "follow me").await;
    eventually("bob woken", WAIT, || async { gateway.wakes().iter().any(|w| w.up_to == Some(id)).then_some(()) }).await;
    api.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await;
    let events = eventually("the lifecycle of the message", WAIT, || async {
        let lines: Vec<Value> = adapter.log().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let about: Vec<String> = lines
            .iter()
            .filter(|l| l["id"] == json!(id))
            .filter_map(|l| l["message"].as_str().map(String::from))
            .collect();
        (about.len() >= 3).then_some(about)
    })
    .await;
    // The wake may be logged before the send's own line: no order assumed.
    assert!(events.iter().any(|e| e == "stored"), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("woke")), "{events:?}");
    assert!(events.iter().any(|e| e == "acknowledged"), "{events:?}");

    nats.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    nats.start_again();
    adapter.wait_ready().await;
    let log = adapter.log();
    let lost: Vec<&str> = log.lines().filter(|l| l.contains("lost the connection to NATS")).collect();
    assert_eq!(lost.len(), 1, "one line for the outage:\n{log}");
    assert!(lost[0].contains("127.0.0.1"), "it names the server: {}", lost[0]);
    let warnings = log.lines().filter(|l| l.contains("\"level\":\"WARN\"")).count();
    assert!(warnings <= 4, "{warnings} warnings for one 4 s outage:\n{log}");
}
