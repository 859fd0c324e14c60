//! Many agents on one adapter: how long the adapter takes to start (first
//! start, when it registers every agent, and a restart, when the records
//! exist), how much memory it holds, how promptly it wakes the right agent,
//! and how long `/api/agents` takes to list the fleet with unread counts.

use std::time::{Duration, Instant};

use serde::Serialize;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer, eventually};

use super::stats::{Summary, ms};

/// The silent agent every message is sent from.
const SENDER: &str = "sender";

#[derive(Clone, Debug, Serialize)]
pub struct ScaleStep {
    pub agents: usize,
    /// From process start to `/readyz` answering 200, first start.
    pub first_start_ms: f64,
    /// The same for a restart with every agent already registered.
    pub restart_ms: f64,
    /// Resident memory right after the restart, and at the end.
    pub rss_mb_started: f64,
    pub rss_mb_after: f64,
    /// Send-to-wake latency of messages sent one at a time to random agents.
    pub wake: Option<Summary>,
    /// Time to answer `GET /api/agents` (every agent with its unread count):
    /// the first call, and the median of the next few.
    pub list_agents_first_ms: f64,
    pub list_agents_ms: f64,
    /// The same for `GET /api/stats`.
    pub stats_first_ms: f64,
    pub stats_ms: f64,
    pub cpu_s: f64,
}

/// Measures one adapter hosting `agents` agents, sending `messages` one
/// at a time to random agents.
pub async fn measure(agents: usize, messages: usize) -> ScaleStep {
    let nats = NatsServer::start();
    let gateway = Gateway::start("scale-hook").await;
    let names: Vec<String> = (0..agents).map(|i| format!("agent-{i:05}")).collect();
    let config =
        names.iter().fold(AdapterConfig::new("big", nats.url()).agent(AgentSpec::silent(SENDER)), |config, name| {
            config.agent(AgentSpec::new(name, &gateway))
        });
    let started = Instant::now();
    let mut adapter = Adapter::start(config).await;
    let first_start = started.elapsed();
    adapter.terminate().await;
    let started = Instant::now();
    adapter.restart().await;
    let restart = started.elapsed();
    let rss_started = adapter.resources().map_or(0, |r| r.rss);

    let api = adapter.api();
    let mut latencies = Vec::with_capacity(messages);
    for _ in 0..messages {
        let to = &names[fastrand::usize(..names.len())];
        let sent = Instant::now();
        let id = api.send(SENDER, to, "scale check").await;
        let wake = eventually("the wake", Duration::from_secs(30), || async {
            gateway
                .wakes()
                .into_iter()
                .find(|w| w.up_to.is_some_and(|up_to| up_to >= id) && w.agent_id.as_ref() == Some(to))
        })
        .await;
        latencies.push(wake.arrived.saturating_duration_since(sent));
    }
    let rows = api.ok("/api/agents").await["agents"].as_array().map_or(0, Vec::len);
    assert_eq!(rows, agents + 1, "every agent is listed");
    let (list_first, list_agents) = answer_times(&api, "/api/agents").await;
    let (stats_first, stats) = answer_times(&api, "/api/stats").await;
    let after = adapter.resources();
    ScaleStep {
        agents,
        first_start_ms: ms(first_start),
        restart_ms: ms(restart),
        rss_mb_started: rss_started as f64 / 1e6,
        rss_mb_after: after.map_or(0.0, |r| r.rss as f64 / 1e6),
        wake: Summary::of(latencies),
        list_agents_first_ms: ms(list_first),
        list_agents_ms: ms(list_agents),
        stats_first_ms: ms(stats_first),
        stats_ms: ms(stats),
        cpu_s: after.map_or(0.0, |r| r.cpu.as_secs_f64()),
    }
}

/// How long `path` takes to answer: a first call after a pause longer than
/// a listing is kept, and the median of the five calls after it.
async fn answer_times(api: &clawbus_testkit::Api, path: &str) -> (Duration, Duration) {
    tokio::time::sleep(Duration::from_secs(16)).await;
    let timed = || async {
        let asked = Instant::now();
        api.ok(path).await;
        asked.elapsed()
    };
    let first = timed().await;
    let mut next = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        next.push(timed().await);
    }
    next.sort();
    (first, next[2])
}

/// The table `clawbus-scale` prints.
pub fn table(steps: &[ScaleStep]) -> String {
    let mut out = String::from(
        "agents  first start ms  restart ms  RSS MB (started / after)  wake p50 ms  p99 ms  max ms  \
         /api/agents ms (first / then)  /api/stats ms (first / then)  CPU s\n",
    );
    for step in steps {
        let [p50, _, p99, _, max] = step.wake.as_ref().map_or([f64::NAN; 5], Summary::shown);
        out.push_str(&format!(
            "{:>6}  {:>14.0}  {:>10.0}  {:>12.1} / {:<10.1}  {:>11.2}  {:>6.2}  {:>6.2}  {:>13.1} / {:<9.1}  {:>12.1} / {:<9.1}  {:>5.2}\n",
            step.agents,
            step.first_start_ms,
            step.restart_ms,
            step.rss_mb_started,
            step.rss_mb_after,
            p50,
            p99,
            max,
            step.list_agents_first_ms,
            step.list_agents_ms,
            step.stats_first_ms,
            step.stats_ms,
            step.cpu_s
        ));
    }
    out
}
