//! The main job, end to end: a NATS JetStream server, two adapters on two
//! "hosts", a stand-in OpenClaw gateway for each; alice on host A sends to
//! bob on host B, and bob's gateway is woken. Prints what happens and the
//! measured send-to-wake times.
//!
//! `clawbus-demo --hold` keeps everything running afterwards, to try by hand.

use std::time::{Duration, Instant};

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsServer, eventually};
use serde_json::json;

const ROUND_TRIPS: usize = 50;

#[tokio::main]
async fn main() {
    let hold = std::env::args().any(|arg| arg == "--hold");
    println!("clawbus demo: two hosts, one NATS JetStream server\n");
    let nats = NatsServer::start();
    println!("  nats-server  {}  (JetStream, sync_interval: always, temporary store)", nats.url());
    let gateway_a = Gateway::start("hook-token-a").await;
    let gateway_b = Gateway::start("hook-token-b").await;
    let a = Adapter::start(AdapterConfig::new("host-a", nats.url()).agent(AgentSpec::new("alice", &gateway_a))).await;
    let b = Adapter::start(AdapterConfig::new("host-b", nats.url()).agent(AgentSpec::new("bob", &gateway_b))).await;
    println!("  host-a       adapter {}  agent alice, OpenClaw gateway {}", a.base(), gateway_a.url());
    println!("  host-b       adapter {}  agent bob,   OpenClaw gateway {}\n", b.base(), gateway_b.url());
    let (via_a, via_b) = (a.api(), b.api());

    let content = "Deploy finished, please run the smoke tests.";
    println!("alice (host-a) sends to bob: {content:?}");
    let (id, answered, woke) = send_and_wake(&via_a, &gateway_b, "alice", "bob", content).await;
    println!("  stored as message #{id}, answered in {}", ms(answered));
    let wake = gateway_b.wakes()[0].clone();
    println!("  bob's gateway woken {} after alice's send, with:", ms(woke));
    println!("    POST /hooks/wake {{\"agentId\": \"bob\", \"text\": {:?}}}\n", wake.text);

    let inbox = via_b.inbox("bob").await;
    println!("bob reads his inbox through host-b: {} unread", inbox["unread"]);
    let first = &inbox["messages"][0];
    println!("  #{} from {}: {}", first["id"], first["from"].as_str().unwrap_or_default(), first["content"]);
    via_b.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await;
    let seen_from_a = via_a.inbox("bob").await["unread"].clone();
    println!("bob acknowledges #{id} through host-b; host-a now reports bob's unread as {seen_from_a}\n");

    let (reply, _, woke) = send_and_wake(&via_b, &gateway_a, "bob", "alice", "Smoke tests green.").await;
    println!("bob replies (#{reply}); alice's gateway on host-a woken {} later\n", ms(woke));

    println!("{ROUND_TRIPS} more messages alice → bob, one at a time:");
    let mut latencies = Vec::new();
    for i in 0..ROUND_TRIPS {
        let (_, _, woke) = send_and_wake(&via_a, &gateway_b, "alice", "bob", &format!("ping {i}")).await;
        latencies.push(woke);
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "  send-to-wake  p50 {}  p90 {}  max {}  (HTTP send → JetStream → other host → gateway)",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(1.0))
    );
    println!("  before clawbus: up to 30 minutes (next heartbeat), or about 1 s with the SSE watcher\n");

    if hold {
        println!("Still running. Try, for example:");
        println!("  curl -s '{}/api/inbox?agent=bob&unread=false&limit=3'", b.base());
        println!(
            "  curl -s -H 'Content-Type: application/json' -d '{{\"from\":\"bob\",\"to\":\"alice\",\"content\":\"hi\"}}' {}/api/send",
            b.base()
        );
        println!("  curl -s {}/api/agents", a.base());
        println!("Ctrl-C stops everything.");
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Sends, then waits for the recipient's next wake. Returns the id, the
/// time until the send was answered, and the time until the wake arrived,
/// both from just before the send.
async fn send_and_wake(api: &Api, gateway: &Gateway, from: &str, to: &str, content: &str) -> (u64, Duration, Duration) {
    let count = gateway.wakes().len() + 1;
    let started = Instant::now();
    let id = api.send(from, to, content).await;
    let answered = started.elapsed();
    let wake =
        eventually("the wake", Duration::from_secs(30), || async { gateway.wakes().get(count - 1).cloned() }).await;
    (id, answered, wake.arrived.saturating_duration_since(started))
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}
