//! Costs that must follow the work, not the fleet: a host with more agents
//! than one consumer filters follows only its own agents' mail, and a
//! broadcast costs a bounded number of state writes, however many agents it
//! wakes, without giving up "a crash repeats a wake, never loses one".
//! (Start-up time, memory and wake latency are measured by `clawbus-scale`,
//! see BENCHMARKS.md.)

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsServer, eventually};
use futures_util::TryStreamExt;

const WAIT: Duration = Duration::from_secs(60);

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:04}")).collect()
}

fn host(name: &str, nats: &NatsServer, agents: &[String], gateway: &Gateway) -> AdapterConfig {
    agents
        .iter()
        .fold(AdapterConfig::new(name, nats.url()), |config, agent| config.agent(AgentSpec::new(agent, gateway)))
}

/// Filter subjects and messages delivered of each consumer on the stream.
async fn consumers(nats: &NatsServer) -> Vec<(Vec<String>, u64)> {
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream("CLAWBUS").await.unwrap();
    stream
        .consumers()
        .map_ok(|info| {
            let mut filters = info.config.filter_subjects;
            if !info.config.filter_subject.is_empty() {
                filters.push(info.config.filter_subject);
            }
            (filters, info.delivered.consumer_sequence)
        })
        .try_collect()
        .await
        .unwrap()
}

/// Calls answered 200 for `agent` that cover message `id`.
fn wakes_covering(gateway: &Gateway, agent: &str, id: u64) -> usize {
    gateway.wakes_for(agent).iter().filter(|call| call.up_to.is_some_and(|up_to| up_to >= id)).count()
}

/// Whether `/api/agents` shows each of `agents` woken for `id` (or not).
async fn marked(api: &Api, agents: &[&String], id: u64, woken: bool) -> Option<()> {
    let listing = api.ok("/api/agents").await;
    let rows = listing["agents"].as_array().unwrap();
    let marks: HashMap<&str, Option<u64>> =
        rows.iter().map(|row| (row["name"].as_str().unwrap(), row["wakes"]["woken_up_to"].as_u64())).collect();
    agents.iter().all(|agent| marks[agent.as_str()].is_some_and(|up_to| (up_to >= id) == woken)).then_some(())
}

#[tokio::test]
async fn a_host_with_1500_agents_follows_only_its_own_agents_mail() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let big_agents = names("big", 1500);
    let small_agents = names("small", 20);
    let big = Adapter::start(host("big", &nats, &big_agents, &gateway)).await;
    let small = Adapter::start(host("small", &nats, &small_agents, &gateway).agent(AgentSpec::silent("sender"))).await;
    let api = small.api();

    let mut ids = Vec::new();
    for (i, agent) in small_agents.iter().cycle().take(60).enumerate() {
        ids.push((agent.clone(), api.send("sender", agent, &format!("small talk {i}")).await));
    }
    for agent in ["big-0000", "big-0999", "big-1000", "big-1499"] {
        ids.push((agent.into(), api.send("sender", agent, "for the big host").await));
    }
    for (agent, id) in &ids {
        eventually("every message woke its recipient", WAIT, || async {
            (wakes_covering(&gateway, agent, *id) > 0).then_some(())
        })
        .await;
    }
    let woken: BTreeSet<String> = gateway.wakes().into_iter().filter_map(|call| call.agent_id).collect();
    let expected: BTreeSet<String> = ids.iter().map(|(agent, _)| agent.clone()).collect();
    assert_eq!(woken, expected, "nobody else was woken");

    // The big host's consumers: groups of at most 1,000 names that together
    // name exactly its agents, and that were handed only their mail.
    let big_consumers: Vec<(Vec<String>, u64)> = consumers(&nats)
        .await
        .into_iter()
        .filter(|(filters, _)| filters.iter().any(|f| f.starts_with("clawbus.msg.big-")))
        .collect();
    assert_eq!(big_consumers.len(), 2, "{big_consumers:?}");
    let mut followed = BTreeSet::new();
    for (filters, _) in &big_consumers {
        assert!(filters.len() <= 1001, "{} filters", filters.len());
        followed.extend(filters.iter().cloned());
    }
    let mut expected: BTreeSet<String> = big_agents.iter().map(|agent| format!("clawbus.msg.{agent}.*")).collect();
    expected.insert("clawbus.all.*".into());
    assert_eq!(followed, expected, "the big host follows its own agents' subjects and broadcasts, nothing else");
    let delivered: u64 = big_consumers.iter().map(|(_, delivered)| delivered).sum();
    assert_eq!(delivered, 4, "the big host was handed its 4 messages and none of the 60 others");
    drop(big);
}

#[tokio::test]
async fn a_broadcast_to_1000_agents_on_two_hosts_costs_bounded_writes_and_a_crash_repeats_only_unmarked_wakes() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook").await;
    let a_agents = names("a", 500);
    let b_agents = names("b", 500);
    // Half of host A's agents are refused by the gateway for now.
    let (refused, accepted): (Vec<&String>, Vec<&String>) =
        a_agents.iter().partition(|agent| agent.ends_with(['1', '3', '5', '7', '9']));
    let allowed: Vec<&str> = accepted.iter().chain(&b_agents.iter().collect::<Vec<_>>()).map(|a| a.as_str()).collect();
    gateway.only_agents(&allowed);
    let mut a = Adapter::start(host("hostA", &nats, &a_agents, &gateway).agent(AgentSpec::silent("sender"))).await;
    let b = Adapter::start(host("hostB", &nats, &b_agents, &gateway)).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let writes =
        || async { js.get_stream("KV_CLAWBUS_STATE").await.unwrap().info().await.unwrap().state.last_sequence };
    let before = writes().await;

    let id = a.api().send("sender", "*", "all hands").await;
    let api = b.api();
    let reached: Vec<&String> = accepted.iter().copied().chain(&b_agents).collect();
    eventually("the accepted wakes marked", WAIT, || marked(&api, &reached, id, true)).await;
    eventually("the refused ones not", WAIT, || marked(&api, &refused, id, false)).await;
    let cost = writes().await - before;
    println!("a broadcast woke {} agents on two hosts for {cost} state writes", reached.len());
    assert!(cost <= 40, "{cost} state writes for one broadcast");
    for agent in &reached {
        assert_eq!(wakes_covering(&gateway, agent, id), 1, "{agent} woken once");
    }

    // Host A dies; when it is back, the gateway takes everyone.
    a.kill();
    gateway.only_agents(&a_agents.iter().chain(&b_agents).map(String::as_str).collect::<Vec<_>>());
    a.restart().await;
    for agent in &refused {
        eventually("the unmarked wakes repeated", WAIT, || async {
            (wakes_covering(&gateway, agent, id) > 0).then_some(())
        })
        .await;
    }
    let everyone: Vec<&String> = a_agents.iter().collect();
    eventually("and marked", WAIT, || marked(&api, &everyone, id, true)).await;
    for agent in a_agents.iter().chain(&b_agents) {
        assert_eq!(wakes_covering(&gateway, agent, id), 1, "{agent} woken exactly once in all");
    }
}

/// A server taking payloads of at most 16 KiB: a few hundred agents with
/// long names pass it as they would pass the default 1 MiB in the tens of
/// thousands.
fn small_payload_server() -> NatsServer {
    NatsServer::start_with("max_payload: 16384")
}

/// `count` names of 64 characters, the longest an agent may have.
fn long_names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:04}-{}", "x".repeat(58 - prefix.len()))).collect()
}

#[tokio::test]
async fn a_host_whose_members_pass_the_payload_limit_starts_wakes_and_resumes_without_repeats() {
    let nats = small_payload_server();
    let gateway = Gateway::start("hook").await;
    let agents = long_names("long", 300);
    let mut adapter = Adapter::start(host("wide", &nats, &agents, &gateway).agent(AgentSpec::silent("sender"))).await;
    let first = adapter.api().send("sender", "*", "before the restart").await;
    for agent in &agents {
        eventually("the broadcast woke everyone", WAIT, || async {
            (wakes_covering(&gateway, agent, first) > 0).then_some(())
        })
        .await;
    }
    let api = adapter.api();
    let everyone: Vec<&String> = agents.iter().collect();
    eventually("and marked it", WAIT, || marked(&api, &everyone, first, true)).await;

    // Started again, the host reads its members back from their parts.
    adapter.kill();
    adapter.restart().await;
    let second = adapter.api().send("sender", "*", "after the restart").await;
    for agent in &agents {
        eventually("the second broadcast woke everyone", WAIT, || async {
            (wakes_covering(&gateway, agent, second) > 0).then_some(())
        })
        .await;
    }
    for agent in &agents {
        let covering_first_only =
            gateway.wakes_for(agent).iter().filter(|call| call.up_to.is_some_and(|up_to| up_to < second)).count();
        assert_eq!(covering_first_only, 1, "{agent} woken once for the first broadcast, not again after the restart");
    }
}

#[tokio::test]
async fn a_host_with_more_agents_behind_than_its_marks_can_list_keeps_marking_the_others() {
    let nats = small_payload_server();
    let gateway = Gateway::start("hook").await;
    // Sorted, the refused agents come first: the first group holds them and
    // 750 others, the second group only agents the gateway takes.
    let refused = long_names("a", 250);
    let others = names("z", 800);
    let agents: Vec<String> = refused.iter().chain(&others).cloned().collect();
    let second_group: Vec<&String> = others[750..].iter().collect();
    gateway.only_agents(&others.iter().map(String::as_str).collect::<Vec<_>>());
    let mut adapter = Adapter::start(host("crowd", &nats, &agents, &gateway).agent(AgentSpec::silent("sender"))).await;
    let id = adapter.api().send("sender", "*", "all hands").await;
    let api = adapter.api();
    eventually("the second group's marks written", WAIT, || marked(&api, &second_group, id, true)).await;
    let held: Vec<&String> = refused.iter().collect();
    eventually("the refused agents not marked", WAIT, || marked(&api, &held, id, false)).await;
    eventually("the overflow logged as an error", WAIT, || async {
        let log = adapter.log();
        log.lines().find(|line| line.contains("ERROR") && line.contains("do not fit")).map(|line| line.to_owned())
    })
    .await;

    // Nothing was lost: back with a gateway that takes everyone, every
    // refused agent is woken for the broadcast.
    adapter.kill();
    gateway.only_agents(&agents.iter().map(String::as_str).collect::<Vec<_>>());
    adapter.restart().await;
    for agent in &refused {
        eventually("the refused agents woken after the restart", WAIT, || async {
            (wakes_covering(&gateway, agent, id) > 0).then_some(())
        })
        .await;
    }
    for agent in &second_group {
        assert_eq!(wakes_covering(&gateway, agent, id), 1, "{agent}'s mark was written: woken once");
    }
}
