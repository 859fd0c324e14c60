//! The command line against a running adapter: each client command, in
//! tables and JSON, and the exit codes scripts rely on.

use clawbus_testkit::OneHost;
use serde_json::Value;

use crate::command::run;

async fn host() -> OneHost {
    OneHost::start_with(&["alice", "bob"], |config, _| {
        config.http("operator_token = \"op-token\"").http("tokens = { alice = \"alice-token\" }")
    })
    .await
}

#[tokio::test]
async fn each_command_speaks_to_the_adapter_in_tables_and_json() {
    let host = host().await;
    let base = host.adapter.base();
    let as_op = |rest: &[&str]| -> Vec<String> {
        ["--url", base.as_str(), "--token", "op-token"].iter().chain(rest).map(|s| s.to_string()).collect()
    };

    let (code, out, err) =
        run(&as_op(&["send", "--from", "alice", "--to", "bob", "--priority", "high", "deploy done"]));
    assert_eq!(code, 0, "{err}");
    let id: u64 = out.trim().strip_prefix("sent ").and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("{out}"));
    let (code, out, _) = run(&as_op(&["--json", "send", "--from", "alice", "--to", "bob", "--key", "k1", "second"]));
    assert_eq!(code, 0);
    let second = serde_json::from_str::<Value>(&out).unwrap()["id"].as_u64().unwrap();

    let (code, out, _) = run(&as_op(&["inbox", "bob"]));
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("ID"), "a header: {out}");
    assert!(out.contains("deploy done") && out.contains("high") && out.contains("2 unread"), "{out}");
    let (_, out, _) = run(&as_op(&["inbox", "bob", "--json"]));
    let inbox: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inbox["unread"], 2);

    let (code, out, _) = run(&as_op(&["ack", "bob", "--ids", &id.to_string()]));
    assert_eq!((code, out.trim()), (0, "acknowledged 1"));
    let (_, out, _) = run(&as_op(&["--json", "history", "bob", "--with", "alice"]));
    let ids: Vec<u64> = serde_json::from_str::<Value>(&out).unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [id, second]);
    let (code, out, _) = run(&as_op(&["ack", "bob", "--all"]));
    assert_eq!((code, out.trim()), (0, "acknowledged 1"));

    let (code, out, _) = run(&as_op(&["agents"]));
    assert_eq!(code, 0);
    let bob = out.lines().find(|l| l.starts_with("bob")).unwrap_or_else(|| panic!("{out}"));
    assert!(bob.contains("hostA") && bob.contains("online") && bob.contains("wake"), "{bob}");

    // tail replays from an id, then follows; --count ends it.
    let (code, out, err) = run(&as_op(&["--json", "tail", "bob", "--after", &id.to_string(), "--count", "1"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["id"].as_u64(), Some(second));
}

#[tokio::test]
async fn exit_codes_tell_scripts_what_went_wrong() {
    let host = host().await;
    let base = host.adapter.base();
    let (code, _, err) = run(&["--url", &base, "--token", "op-token", "inbox", "nobody"]);
    assert_eq!(code, 4, "unknown agent: {err}");
    assert!(err.contains("unknown_agent"), "{err}");
    let (code, _, err) = run(&["--url", &base, "--token", "wrong", "agents"]);
    assert_eq!(code, 1, "bad token: {err}");
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = run(&["--url", &base, "--token", "alice-token", "inbox", "bob"]);
    assert_eq!(code, 1, "another agent's inbox: {err}");
    let (code, _, err) = run(&["--url", "http://127.0.0.1:1", "agents"]);
    assert_eq!(code, 3, "adapter down: {err}");
    assert!(err.contains("no adapter answered"), "{err}");
    let (code, _, _) = run(&["--url", &base, "ack", "bob"]);
    assert_eq!(code, 2, "ack needs ids, --all or --up-to");
    let (code, _, err) = run(&["--url", &base, "--token", "op-token", "send", "--from", "alice", "--to", "a.b", "x"]);
    assert_eq!(code, 1, "a bad name is refused: {err}");
}
