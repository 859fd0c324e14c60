//! Real network faults between NATS nodes and adapters, in network
//! namespaces: cut routes, partitions, flapping links, paused processes,
//! a node killed during a partition. Each NATS node and each adapter (with
//! its stand-in gateway) runs on a lab host of its own. Steady traffic runs
//! through both adapters meanwhile, and afterwards a checker verifies every
//! promise: nothing answered 200 lost or doubled, nothing refused stored,
//! every recipient woken for its newest message, nothing acknowledged shown
//! unread again.
//!
//! A fault lasts `CLAWBUS_FAULT_SECS` seconds (default 15; `scripts/chaos.sh`
//! runs a minute each) and, where `CLAWBUS_CHAOS_TABLE` names a file, each
//! test appends its row of the campaign's table to it.

use std::time::{Duration, Instant};

use clawbus_testkit::checker::{Acker, Acks, History, Outcome, Report, Sender, Traffic, by_agent};
use clawbus_testkit::nats::LAB_ROUTE_PORT;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, Host, Lab, NatsCluster, eventually};

const WAIT: Duration = Duration::from_secs(90);
/// Traffic before the fault, so that both adapters are seen serving.
const WARM_UP: Duration = Duration::from_secs(3);
/// Traffic after healing, so that recovery is part of the history.
const AFTER_HEAL: Duration = Duration::from_secs(8);
/// Sends per second through each adapter.
const RATE: u32 = 5;
/// How long after a fault the adapter on the minority side must answer
/// every send at once (503 with `Retry-After`): it has noticed by then.
const NOTICED: Duration = Duration::from_secs(10);

/// How long each fault lasts.
fn fault_time() -> Duration {
    let secs = std::env::var("CLAWBUS_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    Duration::from_secs(secs)
}

/// Three NATS nodes and two adapters, each on a lab host of its own.
/// Fields drop in order: processes first, the lab's namespaces last.
struct Fleet {
    a: Adapter,
    b: Adapter,
    gateway_a: Gateway,
    gateway_b: Gateway,
    cluster: NatsCluster,
    nodes: Vec<Host>,
    host_a: Host,
    host_b: Host,
    lab: Lab,
}

/// A run under way: traffic, ackers, and when things happened.
struct Run {
    traffic: Traffic,
    ackers: Vec<Acker>,
    fault: Instant,
}

impl Fleet {
    async fn start(test: &str) -> Option<Fleet> {
        Fleet::start_with(test, &[]).await
    }

    /// A fleet whose adapter A runs under `wrapper` (inside its host).
    async fn start_with(test: &str, wrapper: &[&str]) -> Option<Fleet> {
        let lab = Lab::start_or_skip(test)?;
        let nodes: Vec<Host> = (1..=3).map(|i| lab.host(&format!("n{i}"))).collect();
        let (host_a, host_b) = (lab.host("a"), lab.host("b"));
        let cluster = NatsCluster::start_on(&nodes.iter().collect::<Vec<_>>(), "");
        let gateway_a = Gateway::start_on(&host_a, "hook-a").await;
        let gateway_b = Gateway::start_on(&host_b, "hook-b").await;
        let config = |name: &str, host: &Host, agent: AgentSpec| {
            AdapterConfig::new(name, cluster.urls()).on(host).nats("replicas = 3").agent(agent)
        };
        let a = Adapter::start(config("host-a", &host_a, AgentSpec::new("alice", &gateway_a)).wrapped(wrapper)).await;
        let b = Adapter::start(config("host-b", &host_b, AgentSpec::new("bob", &gateway_b))).await;
        Some(Fleet { a, b, gateway_a, gateway_b, cluster, nodes, host_a, host_b, lab })
    }

    /// The node an adapter is connected to and JetStream answers through,
    /// once it is ready (asked of `/readyz`, each time briefly: an adapter
    /// on a paused node may take seconds to answer until it notices).
    async fn node_of(&self, adapter: &Adapter) -> usize {
        self.ready_on(adapter, None).await
    }

    /// [`Fleet::node_of`], once that is another node than `old`.
    async fn moved_from(&self, adapter: &Adapter, old: usize) -> usize {
        self.ready_on(adapter, Some(old)).await
    }

    async fn ready_on(&self, adapter: &Adapter, not: Option<usize>) -> usize {
        eventually("the adapter to be ready on a server", WAIT, || async {
            let answer = tokio::time::timeout(Duration::from_secs(1), adapter.api().try_get("/readyz")).await;
            let answer = answer.ok()?.ok().filter(|answer| answer.status == 200)?;
            let name = answer.body["server"].as_str()?;
            let node = name.trim_start_matches('n').parse::<usize>().expect("a node name") - 1;
            (Some(node) != not).then_some(node)
        })
        .await
    }

    /// Starts traffic both ways and an acker per recipient, and warms up.
    async fn begin(&self) -> Run {
        let traffic = Traffic::start(
            vec![
                Sender { label: "a".into(), api: self.a.api(), from: "alice".into(), to: "bob".into() },
                Sender { label: "b".into(), api: self.b.api(), from: "bob".into(), to: "alice".into() },
            ],
            RATE,
        );
        let every = Duration::from_millis(700);
        let ackers = vec![Acker::start(self.b.api(), "bob", every), Acker::start(self.a.api(), "alice", every)];
        tokio::time::sleep(WARM_UP).await;
        Run { traffic, ackers, fault: Instant::now() }
    }

    /// Lets traffic run after healing, stops it, and checks the history.
    async fn finish(&self, run: Run, fault: &str, healed: Instant) -> (History, Report) {
        tokio::time::sleep(AFTER_HEAL).await;
        let history = run.traffic.stop().await;
        let mut acks: Vec<Acks> = Vec::new();
        for acker in run.ackers {
            acks.push(acker.stop().await);
        }
        for adapter in [&self.a, &self.b] {
            adapter.wait_ready().await;
        }
        let gateways = by_agent(&[("alice", &self.gateway_a), ("bob", &self.gateway_b)]);
        // Wakes for the last messages may still be on their way.
        let mut report = history.check(&self.a.api(), &gateways, &acks).await;
        let deadline = Instant::now() + WAIT;
        while !report.unwoken.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            report = history.check(&self.a.api(), &gateways, &acks).await;
        }
        history.table_row(fault, &report, run.fault, healed);
        report.assert_clean(fault);
        (history, report)
    }
}

/// Whether the sender had a send answered 200 that started in the window.
fn served_within(history: &History, sender: usize, from: Instant, to: Instant) -> bool {
    history.ops.iter().any(|op| {
        op.sender == sender && op.started >= from && op.started < to && matches!(op.outcome, Outcome::Stored(_))
    })
}

/// A's node fails (`fail`, given the node's index) while the rest of the
/// cluster is fine: A must be ready on another node while the fault lasts,
/// and serve again before `restore` ends it; B serves throughout.
async fn a_moves_off_its_node(
    fleet: &mut Fleet,
    fault: &str,
    fail: fn(&mut Fleet, usize),
    restore: fn(&mut Fleet, usize),
) {
    let node = fleet.node_of(&fleet.a).await;
    let run = fleet.begin().await;
    let at = run.fault;
    fail(fleet, node);
    fleet.moved_from(&fleet.a, node).await;
    tokio::time::sleep(fault_time().saturating_sub(at.elapsed())).await;
    let healed = Instant::now();
    restore(fleet, node);
    let (history, _) = fleet.finish(run, fault, healed).await;
    assert!(served_within(&history, 0, at, healed), "adapter A served again while its old node was out");
    assert!(served_within(&history, 1, at, healed), "adapter B served during the fault");
}

#[tokio::test]
async fn an_adapter_whose_node_loses_its_cluster_routes_moves_to_a_healthy_node() {
    let Some(mut fleet) = Fleet::start("cut routes").await else { return };
    let cut = |fleet: &mut Fleet, node: usize| fleet.lab.block_port(&fleet.nodes[node], LAB_ROUTE_PORT);
    a_moves_off_its_node(&mut fleet, "a node's cluster routes cut", cut, |fleet, _| fleet.lab.heal()).await;
}

#[tokio::test]
async fn an_adapter_whose_node_is_paused_moves_to_a_healthy_node() {
    let Some(mut fleet) = Fleet::start("paused node").await else { return };
    let (freeze, thaw) = (
        |fleet: &mut Fleet, node: usize| fleet.cluster.nodes[node].freeze(),
        |fleet: &mut Fleet, node: usize| fleet.cluster.nodes[node].thaw(),
    );
    a_moves_off_its_node(&mut fleet, "A's node paused (SIGSTOP)", freeze, thaw).await;
}

#[tokio::test]
async fn killing_an_adapters_node_during_a_partition_loses_nothing() {
    let Some(mut fleet) = Fleet::start("node killed during a partition").await else { return };
    // B cannot reach A's node, and then A's node dies.
    let kill = |fleet: &mut Fleet, node: usize| {
        fleet.lab.cut(&fleet.host_b, &fleet.nodes[node]);
        fleet.cluster.nodes[node].kill();
    };
    let revive = |fleet: &mut Fleet, node: usize| {
        fleet.cluster.nodes[node].start_again();
        fleet.lab.heal();
    };
    a_moves_off_its_node(&mut fleet, "A's node killed (-9) while B is cut from it", kill, revive).await;
}

#[tokio::test]
async fn the_minority_side_refuses_at_once_and_the_majority_keeps_serving() {
    let Some(fleet) = Fleet::start("minority partition").await else { return };
    let node = fleet.node_of(&fleet.a).await;
    let others: Vec<&Host> = (0..3).filter(|n| *n != node).map(|n| &fleet.nodes[n]).collect();
    let run = fleet.begin().await;
    let fault = run.fault;
    fleet.lab.partition(&[&[&fleet.host_a, &fleet.nodes[node]], &[others[0], others[1], &fleet.host_b]]);
    tokio::time::sleep(fault_time()).await;
    let healed = Instant::now();
    fleet.lab.heal();
    let (history, _) =
        fleet.finish(run, "minority partition: A and its node cut off from two nodes and B", healed).await;
    assert!(served_within(&history, 1, fault, healed), "adapter B, on the majority side, served during the partition");
    let noticed: Vec<&Outcome> = history
        .ops
        .iter()
        .filter(|op| op.sender == 0 && op.started >= fault + NOTICED && op.ended < healed)
        .map(|op| &op.outcome)
        .collect();
    assert!(!noticed.is_empty(), "A was asked to send during the partition");
    for outcome in noticed {
        assert!(
            matches!(outcome, Outcome::Refused { status: 503, retry_after: Some(_), .. }),
            "on the minority side every send is refused with 503 and Retry-After, not {outcome:?}"
        );
    }
    assert!(history.served_again(0, healed).is_some(), "A serves again after healing");
}

#[tokio::test]
async fn a_bridge_partition_loses_nothing() {
    let Some(fleet) = Fleet::start("bridge partition").await else { return };
    let node = fleet.node_of(&fleet.a).await;
    // The node on neither side is the bridge: it sees both.
    let far = (node + 2) % 3;
    let run = fleet.begin().await;
    fleet.lab.partition(&[&[&fleet.host_a, &fleet.nodes[node]], &[&fleet.nodes[far], &fleet.host_b]]);
    tokio::time::sleep(fault_time()).await;
    let healed = Instant::now();
    fleet.lab.heal();
    let (history, _) = fleet.finish(run, "bridge partition (one node sees both sides)", healed).await;
    assert!(history.served_again(0, healed).is_some() && history.served_again(1, healed).is_some());
}

#[tokio::test]
async fn flapping_links_lose_nothing() {
    let Some(fleet) = Fleet::start("flapping links").await else { return };
    let node = fleet.node_of(&fleet.a).await;
    let run = fleet.begin().await;
    let end = run.fault + fault_time();
    let mut cut = false;
    while Instant::now() < end {
        cut = !cut;
        match cut {
            true => fleet.lab.block_port(&fleet.nodes[node], LAB_ROUTE_PORT),
            false => fleet.lab.heal(),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let healed = Instant::now();
    fleet.lab.heal();
    let (history, _) = fleet.finish(run, "flapping routes (3 s cut, 3 s up)", healed).await;
    assert!(history.served_again(0, healed).is_some() && history.served_again(1, healed).is_some());
}

#[tokio::test]
async fn a_paused_adapter_serves_again_when_it_resumes() {
    let Some(fleet) = Fleet::start("paused adapter").await else { return };
    let run = fleet.begin().await;
    let fault = run.fault;
    fleet.a.pause();
    tokio::time::sleep(fault_time()).await;
    let healed = Instant::now();
    fleet.a.resume();
    let (history, _) = fleet.finish(run, "adapter A paused (SIGSTOP)", healed).await;
    assert!(served_within(&history, 1, fault, healed), "adapter B served while A was paused");
    assert!(history.served_again(0, healed).is_some(), "A serves again after it resumes");
}

/// Adapter A's clock is `offset` off the whole time; B's is right.
async fn a_skewed_clock_loses_nothing(test: &str, offset: &str) {
    let Some(skewed) = clawbus_testkit::clock::skewed(offset) else {
        eprintln!("skipped {test}: libfaketime is not installed (scripts/ensure-faketime.sh installs it)");
        return;
    };
    let wrapper: Vec<&str> = skewed.iter().map(String::as_str).collect();
    let Some(fleet) = Fleet::start_with(test, &wrapper).await else { return };
    let run = fleet.begin().await;
    let fault = run.fault;
    tokio::time::sleep(fault_time()).await;
    // Each host sees the other's agent online, by the server's clock.
    for (api, other) in [(fleet.a.api(), "bob"), (fleet.b.api(), "alice")] {
        let agents = api.ok("/api/agents").await;
        let row = agents["agents"].as_array().expect("agents").iter().find(|row| row["name"] == other).cloned();
        assert_eq!(row.map(|row| row["online"].clone()), Some(true.into()), "{other} online through {}", api.base());
    }
    let healed = Instant::now();
    let (history, _) = fleet.finish(run, &format!("A's clock {offset} (libfaketime)"), healed).await;
    assert!(served_within(&history, 0, fault, healed) && served_within(&history, 1, fault, healed));
}

#[tokio::test]
async fn an_adapter_whose_clock_is_ten_minutes_ahead_loses_nothing() {
    a_skewed_clock_loses_nothing("clock ahead", "+10m").await;
}

#[tokio::test]
async fn an_adapter_whose_clock_is_ten_minutes_behind_loses_nothing() {
    a_skewed_clock_loses_nothing("clock behind", "-10m").await;
}
