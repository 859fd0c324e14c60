//! One-process mode: the adapter runs its own nats-server, restarts it when
//! it dies (nothing answered 200 is lost), and leaves no process behind.

use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, alive, eventually, free_port, kill};

const WAIT: Duration = Duration::from_secs(30);

/// The pids of the nats-servers the adapter started, in order.
fn servers(log: &str) -> Vec<u32> {
    log.lines()
        .filter(|l| l.contains("embedded nats-server started"))
        .filter_map(|l| l.split("pid=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_adapter_runs_supervises_and_stops_its_own_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start("hook").await;
    let server_bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    let config = AdapterConfig::new("solo", format!("nats://127.0.0.1:{}", free_port()))
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("bob", &gateway))
        .nats("embedded = true")
        .nats(&format!("data_dir = {:?}", dir.path().join("data")))
        .nats(&format!("server_bin = {server_bin:?}"));
    let mut adapter = Adapter::start(config).await;
    let api = adapter.api();
    let before = api.send("alice", "bob", "before the crash").await;
    // Info lines reach the log within moments, not at once.
    let first = eventually("the server's start logged", WAIT, || async {
        let started = servers(&adapter.log());
        (!started.is_empty()).then_some(started)
    })
    .await;
    assert_eq!(first.len(), 1, "{}", adapter.log());

    kill(first[0]);
    let restarted =
        eventually("the server restarted", WAIT, || async { servers(&adapter.log()).get(1).copied() }).await;
    adapter.wait_ready().await;
    let after = eventually("a send through the restarted server", WAIT, || async {
        let answer = api.try_send("alice", "bob", "after the crash", "after-1").await?;
        (answer.status == 200).then(|| answer.body["id"].as_u64()).flatten()
    })
    .await;
    assert_eq!(Api::ids(&api.inbox("bob").await), [before, after], "nothing answered 200 was lost");
    eventually("bob woken for the new one", WAIT, || async {
        gateway.wakes().iter().any(|w| w.up_to == Some(after)).then_some(())
    })
    .await;

    let (status, _) = adapter.terminate().await;
    assert!(status.success(), "{status}");
    assert!(!alive(restarted) && !alive(first[0]), "a nats-server outlived its adapter");

    // Killed outright, the adapter takes its server along.
    adapter.restart().await;
    let third =
        eventually("the third server's start logged", WAIT, || async { servers(&adapter.log()).get(2).copied() }).await;
    assert!(alive(third));
    assert_eq!(Api::ids(&api.inbox("bob").await), [before, after], "the store survived the restart");
    adapter.kill();
    eventually("the server to die with its adapter", WAIT, || async { (!alive(third)).then_some(()) }).await;
}
