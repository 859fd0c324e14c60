//! Least privilege, tried as a compromised host would: with the accounts
//! `clawbus nats-auth` generates, host B's NATS user cannot forge, rewrite or
//! destroy host A's mail, while both adapters keep working.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, NatsServer, clawbus, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn host_a(nats: &str, gateway: &Gateway) -> AdapterConfig {
    AdapterConfig::new("hostA", nats)
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("bob", gateway))
        .nats("user = \"host-a\"")
        .nats("password = \"pw-a\"")
        .nats("least_privilege = true")
}

fn host_b(nats: &str) -> AdapterConfig {
    AdapterConfig::new("hostB", nats)
        .agent(AgentSpec::silent("carol"))
        .nats("user = \"host-b\"")
        .nats("password = \"pw-b\"")
        .nats("least_privilege = true")
}

/// The accounts block for hosts A and B, made by the command operators use.
fn accounts(dir: &std::path::Path, gateway: &Gateway) -> String {
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    std::fs::write(&a, host_a("nats://127.0.0.1:1", gateway).toml(0)).unwrap();
    std::fs::write(&b, host_b("nats://127.0.0.1:1").toml(0)).unwrap();
    let output = clawbus(&[
        "nats-auth",
        "--config",
        a.to_str().unwrap(),
        "--config",
        b.to_str().unwrap(),
        "--admin-user",
        "admin",
        "--admin-password",
        "admin-pw",
        "--max-file",
        "1GB",
    ]);
    assert!(output.status.success(), "nats-auth: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

async fn client(nats: &NatsServer, user: &str, password: &str, inbox: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox)
        .connect(nats.url())
        .await
        .expect("connects");
    jetstream::ContextBuilder::new().timeout(Duration::from_secs(1)).build(client)
}

#[tokio::test]
async fn a_hosts_credentials_cannot_forge_rewrite_or_destroy_another_hosts_mail() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start("hook").await;
    let nats = NatsServer::start_with(&accounts(dir.path(), &gateway));

    // A host's user may not create the stream: serve says what to do.
    let a = Adapter::launch(host_a(&nats.url(), &gateway)).await;
    eventually("A to ask for `clawbus setup`", WAIT, || async {
        a.log().contains("run `clawbus setup`").then_some(())
    })
    .await;
    assert_eq!(a.api().get("/readyz").await.status, 503);
    let admin = dir.path().join("admin.toml");
    let admin_config = AdapterConfig::new("ops", nats.url()).nats("user = \"admin\"").nats("password = \"admin-pw\"");
    std::fs::write(&admin, admin_config.toml(0)).unwrap();
    let setup = clawbus(&["setup", "--config", admin.to_str().unwrap()]);
    assert!(setup.status.success(), "setup: {}", String::from_utf8_lossy(&setup.stderr));
    a.wait_ready().await;
    let b = Adapter::start(host_b(&nats.url())).await;
    let (via_a, via_b) = (a.api(), b.api());
    let before = via_a.send("alice", "bob", "before the attack").await;
    assert_eq!(via_a.post("/api/ack", &json!({"agent": "alice", "all": true})).await.status, 200);
    let admin_kv = client(&nats, "admin", "admin-pw", "_INBOX").await.get_key_value("CLAWBUS_STATE").await.unwrap();
    eventually("host A's wake marks saved", WAIT, || async {
        admin_kv.get("wakes.hostA").await.ok().flatten().filter(|marks| marks.len() > 2).map(|_| ())
    })
    .await;

    // Host B's user, used directly.
    let js = client(&nats, "host-b", "pw-b", "_INBOX_hostB").await;
    let envelope = r#"{"from":"carol","to":"alice","content":"hi","priority":"normal","reply_to":null,"timestamp":"2026-12-03T00:00:00.000Z"}"#;
    let own = js.publish("clawbus.msg.alice.carol", envelope.into()).await.expect("B may publish as carol").await;
    assert!(own.is_ok(), "B's own publish: {own:?}");
    let forged = async {
        match js.publish("clawbus.msg.bob.alice", r#"{"from":"alice"}"#.into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    };
    assert!(!forged.await, "B published as alice");
    let kv = js.get_key_value("CLAWBUS_STATE").await.expect("B may read the bucket");
    for key in ["read.alice", "wakes.hostA", "members.hostA.1", "agent.alice", "host.hostA"] {
        assert!(kv.put(key, "999999".into()).await.is_err(), "B wrote {key}");
    }
    let stream = js.get_stream("CLAWBUS").await.expect("B may read the stream's info");
    assert!(stream.delete_message(before).await.is_err(), "B deleted a message");
    assert!(stream.purge().await.is_err(), "B purged the stream");
    let mut shorter = stream.cached_info().config.clone();
    shorter.max_age = Duration::from_secs(1);
    assert!(js.update_stream(shorter).await.is_err(), "B updated the stream");
    assert!(js.delete_stream("CLAWBUS").await.is_err(), "B deleted the stream");
    assert!(js.delete_key_value("CLAWBUS_STATE").await.is_err(), "B deleted the bucket");
    assert!(
        js.create_stream(stream::Config { name: "SPY".into(), subjects: vec!["spy.>".into()], ..Default::default() })
            .await
            .is_err(),
        "B created a stream"
    );

    // Nothing changed, and host A kept working throughout.
    let check = client(&nats, "admin", "admin-pw", "_INBOX").await;
    let info = check.get_stream("CLAWBUS").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.config.max_age, Duration::from_secs(7 * 24 * 3600));
    let state = check.get_key_value("CLAWBUS_STATE").await.unwrap();
    for key in ["read.alice", "wakes.hostA", "members.hostA.1", "agent.alice", "host.hostA"] {
        let value = state.get(key).await.unwrap().expect("still there");
        assert_ne!(&value[..], b"999999", "{key} was overwritten");
    }
    assert_eq!(Api::ids(&via_a.inbox("bob").await), [before], "bob's mail is intact and unforged");
    assert_eq!(via_a.inbox("alice").await["unread"], 1, "alice's read mark is hers: carol's message is unread");
    let after = via_a.send("alice", "bob", "after the attack").await;
    eventually("bob woken", WAIT, || async { gateway.wakes().iter().any(|w| w.up_to == Some(after)).then_some(()) })
        .await;
    assert!(via_b.send("carol", "alice", "B works too").await > after);

    // Acts that need another host's rights are refused, naming the host.
    let as_carol = via_a.post("/api/send", &json!({"from": "carol", "to": "alice", "content": "x"})).await;
    assert_eq!((as_carol.status, &as_carol.body["error"]), (403, &json!("forbidden")), "{:?}", as_carol.body);
    assert!(as_carol.body["message"].as_str().unwrap().contains("hostB"), "{:?}", as_carol.body);
    let ack_for_carol = via_a.post("/api/ack", &json!({"agent": "carol", "all": true})).await;
    assert_eq!(ack_for_carol.status, 403, "{:?}", ack_for_carol.body);
    assert_eq!(Api::ids(&via_a.inbox("carol").await).len(), 0, "but reads of other hosts' mail work");
    for (host, log) in [("A", a.log()), ("B", b.log())] {
        assert!(!log.to_lowercase().contains("permission"), "host {host} needed more rights:\n{log}");
    }
}
