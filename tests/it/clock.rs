//! A host whose clock is ten minutes off, next to one whose clock is right,
//! on one bus: presence, the limits' windows and message timestamps go by
//! the NATS server's time, and the skew is reported at start-up and by
//! `clawbus doctor`. The skewed adapter runs under libfaketime (preloaded
//! through `env`, so that the adapter keeps the pid the test kills).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, NatsServer, eventually, program};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const WAIT: Duration = Duration::from_secs(30);
/// Presence's documented silence before a host counts as offline.
const OFFLINE_AFTER: time::Duration = time::Duration::seconds(20);
/// The limits' window.
const WINDOW: time::Duration = time::Duration::seconds(60);
/// How far the adapter's view of the server's clock may be from the test's
/// (the server's, on this machine): a round trip, generously.
const SLACK: time::Duration = time::Duration::seconds(1);
const PAIR_PER_MINUTE: usize = 4;
const DAVES_BUDGET: usize = 3;

fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap_or_else(|| panic!("a time: {value}")), &Rfc3339).expect("RFC 3339")
}

/// The agents of `/api/agents`, by name: (online, last_seen).
async fn presence(api: &Api) -> Vec<(String, bool, Option<OffsetDateTime>)> {
    let listing = api.ok("/api/agents").await;
    let agents = listing["agents"].as_array().expect("agents").iter();
    agents
        .map(|a| {
            let last_seen = (!a["last_seen"].is_null()).then(|| parse_time(&a["last_seen"]));
            (a["name"].as_str().expect("name").to_owned(), a["online"] == true, last_seen)
        })
        .collect()
}

/// Waits until every one of `agents` is listed online by `api`.
async fn all_online(api: &Api, agents: &[&str], whose: &str) {
    eventually(&format!("{agents:?} online in {whose}'s /api/agents"), WAIT, || async {
        let rows = presence(api).await;
        agents.iter().all(|agent| rows.iter().any(|(name, online, _)| name == agent && *online)).then_some(())
    })
    .await;
}

/// Waits until `agents` show offline through `api`, and checks that they
/// were not declared offline before their host's last heartbeat was
/// [`OFFLINE_AFTER`] old by the server's clock (the test's: same machine).
async fn offline_in_time(api: &Api, agents: &[&str], whose: &str) {
    let what = format!("{agents:?} offline in {whose}'s /api/agents");
    let (rows, seen_at) = eventually(&what, Duration::from_secs(90), || async {
        let rows = presence(api).await;
        let now = OffsetDateTime::now_utc();
        let gone = agents.iter().all(|agent| rows.iter().any(|(name, online, _)| name == agent && !*online));
        gone.then_some((rows, now))
    })
    .await;
    for (name, _, last_seen) in rows.iter().filter(|(name, _, _)| agents.contains(&name.as_str())) {
        let last_seen = last_seen.unwrap_or_else(|| panic!("{name} has a last_seen"));
        assert!(
            seen_at + SLACK >= last_seen + OFFLINE_AFTER,
            "{name} shown offline at {seen_at}, sooner than {OFFLINE_AFTER} after its host's last heartbeat \
             ({last_seen})"
        );
    }
}

/// A send through `api` answered 200, whose timestamp is the server's time
/// of the send.
async fn send_on_time(api: &Api, from: &str, to: &str) -> (u64, OffsetDateTime) {
    let before = OffsetDateTime::now_utc();
    let answer = api.post("/api/send", &json!({"from": from, "to": to, "content": "clocks"})).await;
    let after = OffsetDateTime::now_utc();
    assert_eq!(answer.status, 200, "{from} → {to}: {:?}", answer.body);
    let timestamp = parse_time(&answer.body["timestamp"]);
    assert!(
        before - SLACK <= timestamp && timestamp <= after + SLACK,
        "a message stamped {timestamp}, sent between {before} and {after}"
    );
    (answer.body["id"].as_u64().expect("id"), timestamp)
}

/// A refused send: (status, error code).
async fn refused(api: &Api, from: &str, to: &str) -> (u16, Value) {
    let answer = api.post("/api/send", &json!({"from": from, "to": to, "content": "one too many"})).await;
    (answer.status, answer.body["error"].clone())
}

/// `clawbus doctor`'s clock line for `config`, run under `wrapper`.
fn doctor_clock(dir: &Path, config: &AdapterConfig, wrapper: &[String]) -> String {
    let path = dir.join(format!("{}.toml", config.host));
    std::fs::write(&path, config.toml(0)).unwrap();
    let clawbus = program("CLAWBUS_BIN", "clawbus");
    let mut command = match wrapper.split_first() {
        Some((outer, args)) => {
            let mut command = Command::new(outer);
            command.args(args).arg(clawbus);
            command
        }
        None => Command::new(clawbus),
    };
    let output = command
        .args(["doctor", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run clawbus doctor (build it first, or set CLAWBUS_BIN)");
    let report = String::from_utf8(output.stdout).unwrap();
    let line = report.lines().find(|line| line.get(6..).is_some_and(|rest| rest.starts_with("clock")));
    line.unwrap_or_else(|| panic!("no clock line in:\n{report}")).to_owned()
}

async fn a_skewed_host_goes_by_the_servers_clock(offset: &str, way: &str) {
    let Some(wrapper) = clawbus_testkit::clock::skewed(offset) else {
        eprintln!("skipped: libfaketime is not installed (apt-get install libfaketime, or run scripts/test.sh)");
        return;
    };
    let nats = NatsServer::start();
    let pair = format!("pair_per_minute = {PAIR_PER_MINUTE}");
    let skewed_config = AdapterConfig::new("skewed", nats.url())
        .wrapped(&wrapper.iter().map(String::as_str).collect::<Vec<_>>())
        .limits(&pair)
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::silent("dave").budget(DAVES_BUDGET as u32));
    let right_config = AdapterConfig::new("right", nats.url())
        .limits(&pair)
        .agent(AgentSpec::silent("bob"))
        .agent(AgentSpec::silent("carol"));
    let mut skewed = Adapter::start(skewed_config.clone()).await;
    let mut right = Adapter::start(right_config.clone()).await;
    let (via_skewed, via_right) = (skewed.api(), right.api());

    // The skew is reported: at start-up, and by the doctor.
    eventually("the start-up warning of the skew", WAIT, || async {
        skewed
            .log()
            .lines()
            .any(|line| line.contains("WARN") && line.contains("10m") && line.contains(way))
            .then_some(())
    })
    .await;
    assert!(!right.log().contains("NATS server's"), "the right host warns of no skew:\n{}", right.log());
    let dir = tempfile::tempdir().unwrap();
    let line = doctor_clock(dir.path(), &skewed_config, &wrapper);
    assert!(line.starts_with("warn") && line.contains("10m") && line.contains(way), "{line}");
    let line = doctor_clock(dir.path(), &right_config, &[]);
    assert!(line.starts_with("ok") && line.contains("within"), "{line}");

    // Each host sees the other's agents online.
    let everyone = ["alice", "bob", "carol", "dave"];
    all_online(&via_skewed, &everyone, "the skewed host").await;
    all_online(&via_right, &everyone, "the right host").await;

    // The pair limit counts sends through both hosts: exactly the limit is
    // taken, then both refuse. Timestamps are the server's time.
    let mut chat = Vec::new();
    for i in 0..PAIR_PER_MINUTE {
        chat.push(match i % 2 {
            0 => send_on_time(&via_skewed, "alice", "bob").await,
            _ => send_on_time(&via_right, "bob", "alice").await,
        });
    }
    for (api, from, to) in [(&via_skewed, "alice", "bob"), (&via_right, "bob", "alice")] {
        assert_eq!(refused(api, from, to).await, (409, json!("loop_detected")), "{from} → {to} over the pair limit");
    }
    let stored = via_right.ok("/api/history?agent=alice&with=bob").await;
    assert_eq!(Api::ids(&stored), chat.iter().map(|(id, _)| *id).collect::<Vec<_>>(), "refused sends stored nothing");
    for (message, (_, timestamp)) in stored["messages"].as_array().unwrap().iter().zip(&chat) {
        assert_eq!(parse_time(&message["timestamp"]), *timestamp, "the stored timestamp is the one answered");
    }

    // dave's budget counts his sends through both hosts.
    for i in 0..DAVES_BUDGET {
        match i % 2 {
            0 => send_on_time(&via_right, "dave", "bob").await,
            _ => send_on_time(&via_skewed, "dave", "carol").await,
        };
    }
    for api in [&via_skewed, &via_right] {
        assert_eq!(refused(api, "dave", "carol").await, (429, json!("rate_limited")), "dave over his budget");
    }

    // The window moves with the server's clock: the skewed host admits the
    // pair again once the first of their messages is a minute old, and not
    // before.
    let first = chat[0].1;
    let reopened = eventually("the pair window to move on", Duration::from_secs(150), || async {
        let answer = via_skewed.post("/api/send", &json!({"from": "alice", "to": "bob", "content": "later"})).await;
        // The adapter decided before this moment.
        let answered = OffsetDateTime::now_utc();
        if answer.status == 200 {
            return Some(answered);
        }
        assert_eq!(answer.status, 409, "{:?}", answer.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
        None
    })
    .await;
    assert!(reopened + SLACK >= first + WINDOW, "the pair was admitted again at {reopened}, first message at {first}");

    // A host that stopped shows offline after the documented silence, seen
    // from either side.
    right.kill();
    offline_in_time(&via_skewed, &["bob", "carol"], "the skewed host").await;
    assert!(
        presence(&via_skewed).await.iter().any(|(name, online, _)| name == "alice" && *online),
        "the skewed host's own agents stay online"
    );
    right.restart().await;
    all_online(&via_right, &everyone, "the restarted right host").await;
    skewed.kill();
    offline_in_time(&via_right, &["alice", "dave"], "the right host").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_ten_minutes_ahead_goes_by_the_servers_clock() {
    a_skewed_host_goes_by_the_servers_clock("+10m", "ahead").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_ten_minutes_behind_goes_by_the_servers_clock() {
    a_skewed_host_goes_by_the_servers_clock("-10m", "behind").await;
}
