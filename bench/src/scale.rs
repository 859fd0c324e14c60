//! Many agents per adapter, in a fleet of two: how long an adapter takes to
//! start (first start, when it registers every agent, and a restart, when
//! the records exist), how much memory it holds, how promptly it wakes the
//! right agent, what one broadcast to every agent of both hosts costs (time
//! to the last wake, and writes), how many consumers the server holds, and
//! how long `/api/agents` takes to list the fleet with unread counts.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::Serialize;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer, eventually};

use super::stats::{Summary, ms};

/// The silent agent every message is sent from.
const SENDER: &str = "sender";

#[derive(Clone, Debug, Serialize)]
pub struct ScaleStep {
    /// Agents on each of the two adapters.
    pub agents: usize,
    /// From process start to `/readyz` answering 200, first start (of the
    /// second adapter, with the first one running).
    pub first_start_ms: f64,
    /// The same for a restart with every agent already registered.
    pub restart_ms: f64,
    /// Resident memory right after the restart, and at the end.
    pub rss_mb_started: f64,
    pub rss_mb_after: f64,
    /// Send-to-wake latency of messages sent one at a time to random agents
    /// of both hosts.
    pub wake: Option<Summary>,
    /// One broadcast to every agent of both hosts: from the send to the
    /// last recipient's wake.
    pub broadcast_ms: f64,
    /// Writes it cost: messages in the stream, and state bucket writes
    /// (wake marks and counts, and the heartbeats meanwhile) until a second
    /// after the last wake.
    pub broadcast_stream_writes: u64,
    pub broadcast_state_writes: u64,
    /// Consumers on the server at the end, more than 30 s after the restart.
    pub consumers: usize,
    /// Time to answer `GET /api/agents` (every agent with its unread count):
    /// the first call, and the median of the next few.
    pub list_agents_first_ms: f64,
    pub list_agents_ms: f64,
    /// The same for `GET /api/stats`.
    pub stats_first_ms: f64,
    pub stats_ms: f64,
    /// CPU time of the measured adapter.
    pub cpu_s: f64,
}

fn host(name: &str, nats: &NatsServer, agents: &[String], gateway: &Gateway) -> AdapterConfig {
    agents
        .iter()
        .fold(AdapterConfig::new(name, nats.url()), |config, agent| config.agent(AgentSpec::new(agent, gateway)))
}

/// Last sequence of the stream `name`.
async fn last_sequence(js: &jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.expect("stream exists");
    stream.info().await.expect("stream info").state.last_sequence
}

/// Measures a fleet of two adapters hosting `agents` agents each, sending
/// `messages` one at a time to random agents, then one broadcast.
pub async fn measure(agents: usize, messages: usize) -> ScaleStep {
    let nats = NatsServer::start();
    let gateway = Gateway::start("scale-hook").await;
    let a_names: Vec<String> = (0..agents).map(|i| format!("a-{i:05}")).collect();
    let b_names: Vec<String> = (0..agents).map(|i| format!("b-{i:05}")).collect();
    let _other = Adapter::start(host("hostB", &nats, &b_names, &gateway)).await;
    let started = Instant::now();
    let mut adapter = Adapter::start(host("hostA", &nats, &a_names, &gateway).agent(AgentSpec::silent(SENDER))).await;
    let first_start = started.elapsed();
    adapter.terminate().await;
    let started = Instant::now();
    adapter.restart().await;
    let restart = started.elapsed();
    let rss_started = adapter.resources().map_or(0, |r| r.rss);

    let api = adapter.api();
    let everyone: Vec<&String> = a_names.iter().chain(&b_names).collect();
    let mut latencies = Vec::with_capacity(messages);
    for _ in 0..messages {
        let to = everyone[fastrand::usize(..everyone.len())];
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

    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connects to NATS"));
    let (stream_before, state_before) =
        (last_sequence(&js, "CLAWBUS").await, last_sequence(&js, "KV_CLAWBUS_STATE").await);
    let sent = Instant::now();
    let id = api.send(SENDER, "*", "all hands").await;
    let last_wake = eventually("every agent woken", Duration::from_secs(300), || async {
        let wakes: Vec<_> = gateway.wakes().into_iter().filter(|w| w.up_to.is_some_and(|up_to| up_to >= id)).collect();
        let woken: HashSet<&str> = wakes.iter().filter_map(|w| w.agent_id.as_deref()).collect();
        (woken.len() == everyone.len()).then(|| wakes.iter().map(|w| w.arrived).max().expect("some wake"))
    })
    .await;
    let broadcast = last_wake.saturating_duration_since(sent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stream_writes = last_sequence(&js, "CLAWBUS").await - stream_before;
    let state_writes = last_sequence(&js, "KV_CLAWBUS_STATE").await - state_before;

    let rows = api.ok("/api/agents").await["agents"].as_array().map_or(0, Vec::len);
    assert_eq!(rows, 2 * agents + 1, "every agent is listed");
    let (list_first, list_agents) = answer_times(&api, "/api/agents").await;
    let (stats_first, stats) = answer_times(&api, "/api/stats").await;
    // Counted last: the consumers of the first start, abandoned by the
    // restart, are gone once the server's inactivity threshold has passed.
    let consumers = {
        let mut stream = js.get_stream("CLAWBUS").await.expect("stream exists");
        stream.info().await.expect("stream info").state.consumer_count
    };
    let after = adapter.resources();
    ScaleStep {
        agents,
        first_start_ms: ms(first_start),
        restart_ms: ms(restart),
        rss_mb_started: rss_started as f64 / 1e6,
        rss_mb_after: after.map_or(0.0, |r| r.rss as f64 / 1e6),
        wake: Summary::of(latencies),
        broadcast_ms: ms(broadcast),
        broadcast_stream_writes: stream_writes,
        broadcast_state_writes: state_writes,
        consumers,
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
        "agents/host  first start ms  restart ms  RSS MB (started / after)  wake p50 ms  p99 ms  \
         broadcast ms  writes (stream / state)  consumers  /api/agents ms (first / then)  /api/stats ms (first / then)  CPU s\n",
    );
    for step in steps {
        let [p50, _, p99, _, _] = step.wake.as_ref().map_or([f64::NAN; 5], Summary::shown);
        out.push_str(&format!(
            "{:>11}  {:>14.0}  {:>10.0}  {:>12.1} / {:<10.1}  {:>11.2}  {:>6.2}  {:>12.0}  {:>14} / {:<6}  {:>9}  {:>13.1} / {:<9.1}  {:>12.1} / {:<9.1}  {:>5.2}\n",
            step.agents,
            step.first_start_ms,
            step.restart_ms,
            step.rss_mb_started,
            step.rss_mb_after,
            p50,
            p99,
            step.broadcast_ms,
            step.broadcast_stream_writes,
            step.broadcast_state_writes,
            step.consumers,
            step.list_agents_first_ms,
            step.list_agents_ms,
            step.stats_first_ms,
            step.stats_ms,
            step.cpu_s
        ));
    }
    out
}
