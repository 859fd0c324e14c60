//! The OpenClaw skill teaches agents the bus: every command in it runs as
//! written (with the agent's environment) against a real adapter, in the
//! order an agent meets them, and does what the skill says.

use std::process::Command;

use clawbus_testkit::{Api, OneHost};
use serde_json::{Value, json};

const SKILL: &str = include_str!("../../deploy/openclaw/skills/clawbus/SKILL.md");
/// The message id the skill's examples use.
const EXAMPLE_ID: &str = "1042";

/// The skill's shell commands, in order.
fn commands() -> Vec<String> {
    SKILL
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().expect("a closed block").trim().to_owned())
        .collect()
}

/// Runs `command` as bob would, with `id` for the example id; its output as JSON.
fn run(command: &str, api: &Api, id: u64) -> Value {
    let output = Command::new("bash")
        .arg("-c")
        .arg(command.replace(EXAMPLE_ID, &id.to_string()))
        .env("CLAWBUS_URL", api.base())
        .env("CLAWBUS_TOKEN", "bob-token")
        .env("CLAWBUS_AGENT", "bob")
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{command}: {:?}", output.stdout))
}

#[test]
fn the_skill_has_front_matter_openclaw_reads() {
    let front = SKILL.strip_prefix("---\n").and_then(|rest| rest.split("\n---\n").next()).expect("front matter");
    assert!(front.lines().any(|l| l == "name: clawbus"), "{front}");
    assert!(front.lines().any(|l| l.starts_with("description: ") && l.len() > 40), "{front}");
    let metadata = front.lines().find_map(|l| l.strip_prefix("metadata: ")).expect("one-line metadata");
    let metadata: Value = serde_json::from_str(metadata).expect("metadata is JSON");
    assert_eq!(metadata["openclaw"]["requires"]["bins"], json!(["curl"]));
}

#[tokio::test]
async fn every_command_of_the_skill_runs_and_does_what_it_says() {
    let host = OneHost::start_with(&["alice", "bob", "carol"], |config, _| {
        config.http("tokens = { alice = \"alice-token\", bob = \"bob-token\", carol = \"carol-token\" }")
    })
    .await;
    let api = host.api();
    let (alice, carol) = (api.with_token("alice-token"), api.with_token("carol-token"));
    let id = alice.send("alice", "bob", "please run the smoke tests").await;
    let [read, reply, ack, send, broadcast, history] = commands().try_into().expect("six commands, in this order");

    let inbox = run(&read, &api, id);
    assert_eq!((Api::ids(&inbox), &inbox["unread"]), (vec![id], &json!(1)), "read");

    let replied = run(&reply, &api, id);
    let answer = &alice.inbox("alice").await["messages"][0];
    assert_eq!((&answer["id"], &answer["from"], &answer["reply_to"]), (&replied["id"], &json!("bob"), &json!(id)));

    let acked = run(&ack, &api, id);
    assert_eq!(acked["acked"], 1, "ack");
    assert_eq!(api.with_token("bob-token").inbox("bob").await["unread"], 0);

    let sent = run(&send, &api, id);
    let high = alice.ok("/api/inbox?agent=alice&priority=high").await;
    assert_eq!(Api::ids(&high), [sent["id"].as_u64().unwrap()], "send with priority");

    let all = run(&broadcast, &api, id);
    for (who, client) in [("alice", &alice), ("carol", &carol)] {
        let inbox = client.inbox(who).await;
        let last = inbox["messages"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((&last["id"], &last["to"]), (&all["id"], &json!("*")), "{who} got the broadcast");
    }

    let looked_back = run(&history, &api, id);
    let conversation: Vec<u64> =
        vec![id, replied["id"].as_u64().unwrap(), sent["id"].as_u64().unwrap(), all["id"].as_u64().unwrap()];
    assert_eq!(Api::ids(&looked_back), conversation, "history with alice");
}
