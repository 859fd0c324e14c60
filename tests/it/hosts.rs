//! Adapters come and go: restarts keep everything, and several hosts share
//! one bus.

use std::collections::BTreeSet;
use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Call, Gateway, NatsServer, OneHost, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_killed_adapter_restarts_with_its_inbox_read_marks_and_pending_wakes() {
    let mut host = OneHost::spawn_with(&["bob"], |config, _| config.agent(AgentSpec::silent("alice"))).await;
    let api = host.api();
    host.gateway.stop().await;
    let ids = [
        api.send("alice", "bob", "one").await,
        api.send("alice", "bob", "two").await,
        api.send("alice", "bob", "three").await,
    ];
    assert_eq!(api.post("/api/ack", &json!({"agent": "bob", "ids": [ids[0]]})).await.body["acked"], 1);
    let before = api.ok("/api/inbox?agent=bob&unread=false").await;

    host.adapter.kill();
    host.gateway.resume().await;
    host.adapter.restart().await;

    let after = api.ok("/api/inbox?agent=bob&unread=false").await;
    assert_eq!(after["messages"], before["messages"], "inbox and read marks unchanged");
    assert_eq!(Api::ids(&api.inbox("bob").await), ids[1..]);
    let gateway = &host.gateway;
    // The gateway was down until the restart: a wake covering the newest
    // message came from the restarted adapter.
    let wake = eventually("the pending wake after restart", WAIT, || async {
        gateway.wakes().into_iter().find(|w| w.up_to >= Some(ids[2]))
    })
    .await;
    assert!(wake.text.contains("from \"alice\""), "{}", wake.text);
}

#[tokio::test]
async fn wakes_already_delivered_are_not_repeated_after_a_clean_restart() {
    let mut host = OneHost::spawn_with(&["alice", "bob"], |config, _| config).await;
    let api = host.api();
    api.send("alice", "bob", "seen").await;
    let gateway = &host.gateway;
    eventually("the wake", WAIT, || async { (!gateway.wakes().is_empty()).then_some(()) }).await;
    let (status, _) = host.adapter.terminate().await;
    assert!(status.success());
    host.adapter.restart().await;
    let fresh = api.send("alice", "bob", "new").await;
    let inbox = api.inbox("bob").await;
    let stored = inbox["messages"].as_array().unwrap().iter().find(|m| m["id"] == fresh).unwrap()["timestamp"].clone();
    eventually("the wake for the new message", WAIT, || async { (gateway.wakes().len() >= 2).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.calls().len(), 2, "no replay of the delivered wake (new one stored at {stored})");
}

#[tokio::test]
async fn two_hosts_exchange_messages_and_agree_on_read_state() {
    let nats = NatsServer::start();
    let (gateway_a, gateway_b) = (Gateway::start("token-a").await, Gateway::start("token-b").await);
    // One host on the default single thread, the other on several.
    let a = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::new("alice", &gateway_a))).await;
    let b = Adapter::start(AdapterConfig::new("hostB", nats.url()).threads(2).agent(AgentSpec::new("bob", &gateway_b)))
        .await;
    let (via_a, via_b) = (a.api(), b.api());

    let id = via_a.send("alice", "bob", "from host A").await;
    let wake = eventually("bob's wake at B's gateway", WAIT, || async { gateway_b.wakes().into_iter().next() }).await;
    assert_eq!((wake.agent_id.as_deref(), wake.token.as_deref()), (Some("bob"), Some("token-b")));
    assert!(wake.text.contains(&format!("{}/api/inbox?agent=bob", b.base())), "{}", wake.text);
    assert!(gateway_a.calls().is_empty(), "A's gateway hosts no bob");
    assert_eq!(via_a.inbox("bob").await, via_b.inbox("bob").await);
    assert_eq!(Api::ids(&via_b.inbox("bob").await), [id]);

    assert_eq!(via_a.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await.body["acked"], 1);
    assert_eq!(via_b.inbox("bob").await["unread"], 0, "an ack through A is seen through B");
    assert_eq!(via_b.post("/api/ack", &json!({"agent": "bob", "ids": [id]})).await.body["acked"], 0);

    let reply = via_b.send("bob", "alice", "got it").await;
    let back = eventually("alice's wake at A's gateway", WAIT, || async { gateway_a.wakes().into_iter().next() }).await;
    assert_eq!(back.agent_id.as_deref(), Some("alice"));
    assert_eq!(Api::ids(&via_a.inbox("alice").await), [reply]);
    for api in [&via_a, &via_b] {
        let agents = api.ok("/api/agents").await;
        let hosts: Vec<(String, String, bool)> = agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap().into(), r["host"].as_str().unwrap().into(), r["online"] == true))
            .collect();
        assert_eq!(hosts, [("alice".into(), "hostA".into(), true), ("bob".into(), "hostB".into(), true)]);
    }
}

/// Two adapters list bob. The newest claim wins: the second host wakes him
/// and the first stops; when the second stops cleanly, bob goes back to the
/// first at once (never shown offline), which wakes him again.
#[tokio::test]
async fn two_hosts_claiming_one_agent_never_wake_it_twice_or_hide_it() {
    let nats = NatsServer::start();
    let (a, gateway_a, gateway_b) = bob_on_host_a(&nats, "wake").await;
    let api = a.api();
    let first = api.send("alice", "bob", "to A's bob").await;
    eventually("A wakes bob", WAIT, || async {
        gateway_a.wakes().iter().any(|w| w.up_to == Some(first)).then_some(())
    })
    .await;

    let mut b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("bob", &gateway_b))).await;
    assert_eq!(host_of(&api, "bob").await, ("hostB".into(), true));
    // A notices at its next heartbeat; from then on only B wakes bob.
    eventually("A to stop waking bob", WAIT, || async { a.log().contains("another host serves it").then_some(()) })
        .await;
    let second = api.send("alice", "bob", "to B's bob").await;
    eventually("B wakes bob", WAIT, || async {
        gateway_b.wakes().iter().any(|w| w.up_to == Some(second)).then_some(())
    })
    .await;
    let third = api.send("alice", "bob", "still B").await;
    eventually("B wakes bob again", WAIT, || async {
        gateway_b.wakes().iter().any(|w| w.up_to >= Some(third)).then_some(())
    })
    .await;
    assert!(gateway_a.calls().iter().all(|c| c.up_to < Some(second)), "A woke bob while B served him");

    let (status, _) = b.terminate().await;
    assert!(status.success());
    // Handed back during B's shutdown: online, and A's, with no wait.
    assert_eq!(host_of(&api, "bob").await, ("hostA".into(), true));
    let fourth = api.send("alice", "bob", "back to A").await;
    eventually("A wakes bob again", WAIT, || async {
        gateway_a.wakes().iter().any(|w| w.up_to >= Some(fourth)).then_some(())
    })
    .await;
}

/// A host that crashed holding an agent is reclaimed once it is silent.
#[tokio::test]
async fn an_agent_of_a_crashed_host_is_reclaimed_by_the_host_that_still_lists_it() {
    let nats = NatsServer::start();
    let (a, gateway_a, gateway_b) = bob_on_host_a(&nats, "wake").await;
    let mut b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("bob", &gateway_b))).await;
    b.kill();
    // A sees B's claim while B's last heartbeat is fresh, and pauses.
    eventually("A to stop waking bob", WAIT, || async { a.log().contains("another host serves it").then_some(()) })
        .await;
    let api = a.api();
    let id = api.send("alice", "bob", "who wakes me?").await;
    // B's heartbeat expires after 20 s; A then takes bob back and wakes him.
    eventually("A to reclaim and wake bob", Duration::from_secs(60), || async {
        gateway_a.wakes().iter().any(|w| w.up_to >= Some(id)).then_some(())
    })
    .await;
    assert_eq!(host_of(&api, "bob").await, ("hostA".into(), true));
}

/// An agent moved the natural way: removed from host A's config, A
/// restarted without it, then added to host B's. A's wake record no longer
/// speaks for it, and B has handed it nothing: B hands over again every
/// message it has not acknowledged (at least once), and none it has.
#[tokio::test]
async fn an_agent_moved_to_another_host_is_handed_again_only_what_it_has_not_acknowledged() {
    let nats = NatsServer::start();
    let (mut a, gateway_a, gateway_b) = bob_on_host_a(&nats, "agent").await;
    let api = a.api();
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(api.send("alice", "bob", &format!("task {i}")).await);
    }
    eventually("A to hand bob every message", WAIT, || async {
        let handed = handed(&gateway_a, "bob");
        sent.iter().all(|id| handed.contains(id)).then_some(())
    })
    .await;
    let acknowledged = [sent[0], sent[1], sent[3], sent[4]];
    assert_eq!(api.post("/api/ack", &json!({"agent": "bob", "ids": acknowledged})).await.body["acked"], 4);

    let (status, _) = a.terminate().await;
    assert!(status.success());
    let without_bob = AdapterConfig::new("hostA", nats.url())
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("carol", &gateway_a));
    let a = Adapter::start(without_bob).await;
    // A writes its marks with its first wake: from then on they are those
    // of its new list, without bob.
    let id = a.api().send("alice", "carol", "hello").await;
    eventually("carol's wake", WAIT, || async {
        gateway_a.wakes_for("carol").into_iter().find(|w| w.up_to >= Some(id))
    })
    .await;
    let kv = state_bucket(&nats).await;
    eventually("A's marks of its list without bob", WAIT, || async {
        let marks: serde_json::Value = serde_json::from_slice(&kv.get("wakes.hostA").await.unwrap()?).unwrap();
        (marks["members"] == 2).then_some(())
    })
    .await;

    let b =
        Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::new("bob", &gateway_b).wake("agent")))
            .await;
    let after = b.api().send("alice", "bob", "after the move").await;
    let expected: BTreeSet<u64> = [sent[2], sent[5], after].into();
    // B hands over oldest first: once the newest message is handed, so is
    // everything older it would hand.
    let by_b = eventually("B to hand bob what he has not acknowledged", WAIT, || async {
        let by_b = handed(&gateway_b, "bob");
        by_b.is_superset(&expected).then_some(by_b)
    })
    .await;
    let again: Vec<u64> = acknowledged.into_iter().filter(|id| by_b.contains(id)).collect();
    assert!(again.is_empty(), "acknowledged messages handed again by B: {again:?} (B handed {by_b:?})");
}

#[tokio::test]
async fn a_clean_stop_shows_the_hosts_agents_offline_at_once() {
    let nats = NatsServer::start();
    let a = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"))).await;
    let mut b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(AgentSpec::silent("bob"))).await;
    assert_eq!(host_of(&a.api(), "bob").await, ("hostB".into(), true));
    let (status, _) = b.terminate().await;
    assert!(status.success());
    // No waiting for the 20 s silence: the stop itself says so (as soon as
    // a listing made after it is served, should listings be slow to make).
    eventually("bob offline", Duration::from_secs(10), || async {
        (host_of(&a.api(), "bob").await == ("hostB".into(), false)).then_some(())
    })
    .await;
    assert_eq!(host_of(&a.api(), "alice").await, ("hostA".into(), true));
}

/// Two boxes with the same short hostname: the second adapter must not
/// overwrite the first one's wake records, so it refuses to start, naming the
/// host and the setting that fixes it, while the first keeps serving and
/// waking.
#[tokio::test]
async fn a_second_adapter_with_the_same_host_is_refused_while_the_first_keeps_waking() {
    let nats = NatsServer::start();
    let (gateway_1, gateway_2) = (Gateway::start("token-1").await, Gateway::start("token-2").await);
    let first = Adapter::start(
        AdapterConfig::new("raspberrypi", nats.url())
            .agent(AgentSpec::silent("alice"))
            .agent(AgentSpec::new("bob", &gateway_1)),
    )
    .await;
    let mut second =
        Adapter::launch(AdapterConfig::new("raspberrypi", nats.url()).agent(AgentSpec::new("carol", &gateway_2))).await;
    let status = second.exited().await;
    assert!(!status.success(), "the second adapter exits with an error: {status:?}");
    let log = second.log();
    assert!(log.contains("another adapter is running as host \"raspberrypi\""), "{log}");
    assert!(log.contains("set `host`"), "{log}");

    let api = first.api();
    let id = api.send("alice", "bob", "still here").await;
    assert_eq!(Api::ids(&api.inbox("bob").await), [id]);
    eventually("the first adapter's wake", WAIT, || async {
        gateway_1.wakes().into_iter().find(|w| w.up_to >= Some(id))
    })
    .await;
    assert!(gateway_2.calls().is_empty(), "the refused adapter woke nobody");
    assert!(api.ok("/api/agents").await["agents"].as_array().unwrap().iter().all(|a| a["name"] != "carol"));
}

/// An adapter killed and restarted at once finds its own last heartbeat,
/// which still looks alive: it waits that out and comes back, and wakes for
/// what arrived meanwhile.
#[tokio::test]
async fn a_killed_adapter_restarted_at_once_is_not_refused_by_its_own_heartbeat() {
    let mut host = OneHost::spawn_with(&["bob"], |config, _| config.agent(AgentSpec::silent("alice"))).await;
    let api = host.api();
    let before = api.send("alice", "bob", "before").await;
    let gateway = &host.gateway;
    eventually("the first wake", WAIT, || async { gateway.wakes().into_iter().find(|w| w.up_to >= Some(before)) })
        .await;
    host.adapter.kill();
    host.adapter.restart().await;
    let after = api.send("alice", "bob", "after").await;
    eventually("the wake after the restart", WAIT, || async {
        gateway.wakes().into_iter().find(|w| w.up_to >= Some(after))
    })
    .await;
    assert!(!host.adapter.log().contains("another adapter is running"), "{}", host.adapter.log());
}

/// Another writer of this host's records (an adapter started with the same
/// host name that took the host over) is noticed: the adapter says so at
/// error level instead of overwriting what the other wrote.
#[tokio::test]
async fn an_adapter_whose_host_record_was_taken_over_says_so_and_stops_writing_wake_records() {
    let (mut host, _first, kv) = woken_once().await;
    let api = host.api();
    let other = json!({"running": true, "version": "0.0.0", "instance": "another-instance"});
    kv.put("host.hostA", other.to_string().into()).await.unwrap();
    let adapter = &host.adapter;
    eventually("the adapter to notice", WAIT, || async {
        adapter.log().lines().find(|l| l.contains("ERROR") && l.contains("another adapter took over host")).map(drop)
    })
    .await;
    let marks = kv.entry("wakes.hostA").await.unwrap().unwrap();
    api.send("alice", "bob", "two").await;
    // A clean stop would write the marks and a last heartbeat: neither
    // happens once the host is another adapter's.
    let (status, _) = host.adapter.terminate().await;
    assert!(status.success());
    assert_eq!(kv.entry("wakes.hostA").await.unwrap().unwrap().revision, marks.revision, "no wake marks written");
    let record: serde_json::Value = serde_json::from_slice(&kv.get("host.hostA").await.unwrap().unwrap()).unwrap();
    assert_eq!(record, other, "the other instance's host record is left alone");
}

/// A wake-record writer whose compare-and-set fails (another writer changed
/// `wakes.<host>`) says so instead of overwriting it.
#[tokio::test]
async fn a_wake_record_writer_that_lost_the_compare_and_set_says_so() {
    let (host, first, kv) = woken_once().await;
    let api = host.api();
    let gateway = &host.gateway;
    let foreign = json!({"members": 1, "up_to": [first], "writer": "another-instance"});
    kv.put("wakes.hostA", foreign.to_string().into()).await.unwrap();
    let second = api.send("alice", "bob", "two").await;
    eventually("the second wake", WAIT, || async { gateway.wakes().into_iter().find(|w| w.up_to >= Some(second)) })
        .await;
    let adapter = &host.adapter;
    eventually("the adapter to say the marks were written by another", WAIT, || async {
        adapter.log().lines().find(|l| l.contains("ERROR") && l.contains("written by another adapter")).map(drop)
    })
    .await;
    let stored: serde_json::Value = serde_json::from_slice(&kv.get("wakes.hostA").await.unwrap().unwrap()).unwrap();
    assert_eq!(stored, foreign, "the other writer's marks are not overwritten");
}

/// A start that ended between saving a new list of members and the marks
/// that refer to it leaves a generation behind. Generations are created,
/// never overwritten: the next start saves its own above the leftover, and
/// deletes it once its marks refer to the new one.
#[tokio::test]
async fn a_members_generation_left_by_an_interrupted_start_does_not_block_the_next() {
    let nats = NatsServer::start();
    let gateway = Gateway::start("hook-secret").await;
    let config = AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"));
    let mut first = Adapter::start(config.clone().agent(AgentSpec::new("bob", &gateway))).await;
    let id = first.api().send("alice", "bob", "hello").await;
    eventually("bob's wake", WAIT, || async { gateway.wakes().into_iter().find(|w| w.up_to >= Some(id)) }).await;
    let kv = state_bucket(&nats).await;
    eventually("the first wake marks", WAIT, || async { kv.entry("wakes.hostA").await.unwrap() }).await;
    let (status, _) = first.terminate().await;
    assert!(status.success());
    kv.put("members.hostA.2", json!([["someone-else"]]).to_string().into()).await.unwrap();

    let second =
        Adapter::start(config.agent(AgentSpec::new("bob", &gateway)).agent(AgentSpec::new("carol", &gateway))).await;
    let id = second.api().send("alice", "carol", "hello").await;
    eventually("carol's wake", WAIT, || async { gateway.wakes().into_iter().find(|w| w.up_to >= Some(id)) }).await;
    let marks = eventually("marks of the new generation", WAIT, || async {
        let entry = kv.entry("wakes.hostA").await.unwrap()?;
        let marks: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
        (marks["members"] == 3).then_some(marks)
    })
    .await;
    let members: serde_json::Value =
        serde_json::from_slice(&kv.get("members.hostA.3").await.unwrap().unwrap()).unwrap();
    assert_eq!(members, json!([["bob", "carol"]]), "{marks}");
    eventually("the leftover and the old generation deleted", WAIT, || async {
        (kv.get("members.hostA.2").await.unwrap().is_none() && kv.get("members.hostA.1").await.unwrap().is_none())
            .then_some(())
    })
    .await;
}

/// The adapters' state bucket, through a client of the test's own.
/// bob on hostA (the adapter a process), woken for alice's first message
/// (its id given), and the state bucket once bob's wake marks are in it.
async fn woken_once() -> (OneHost, u64, async_nats::jetstream::kv::Store) {
    let host = OneHost::spawn_with(&["bob"], |config, _| config.agent(AgentSpec::silent("alice"))).await;
    let first = host.api().send("alice", "bob", "one").await;
    let gateway = &host.gateway;
    eventually("the first wake", WAIT, || async { gateway.wakes().into_iter().find(|w| w.up_to >= Some(first)) }).await;
    let kv = state_bucket(&host.nats).await;
    eventually("the wake marks", WAIT, || async { kv.entry("wakes.hostA").await.unwrap() }).await;
    (host, first, kv)
}

async fn state_bucket(nats: &NatsServer) -> async_nats::jetstream::kv::Store {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.get_key_value("CLAWBUS_STATE").await.unwrap()
}

/// Host A with alice (silent) and bob (woken through the first gateway in
/// wake mode `mode`), and a second gateway for a host B that will list bob too.
async fn bob_on_host_a(nats: &NatsServer, mode: &str) -> (Adapter, Gateway, Gateway) {
    let (gateway_a, gateway_b) = (Gateway::start("token-a").await, Gateway::start("token-b").await);
    let config = AdapterConfig::new("hostA", nats.url())
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("bob", &gateway_a).wake(mode));
    (Adapter::start(config).await, gateway_a, gateway_b)
}

/// The ids of every message `gateway` took for `agent` in agent calls.
fn handed(gateway: &Gateway, agent: &str) -> BTreeSet<u64> {
    gateway.wakes_for(agent).iter().flat_map(Call::message_ids).collect()
}

/// `(host, online)` of `agent` in `/api/agents`.
async fn host_of(api: &Api, agent: &str) -> (String, bool) {
    let agents = api.ok("/api/agents").await;
    let row = agents["agents"].as_array().unwrap().iter().find(|a| a["name"] == agent).expect("listed").clone();
    (row["host"].as_str().unwrap().to_owned(), row["online"] == true)
}
